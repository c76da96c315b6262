//! Inline SVG charts for the HTML report, written by hand: a few axes
//! (linear, log10, and HdrHistogram's percentile axis, log of 1/(1-p)),
//! lines and bars. Colours come from the page's CSS classes (`s0`..`s7`,
//! `axis`, `grid`), so the charts follow its light and dark theme.
//!
//! A hand-written module is smaller than a plotting crate for these three
//! kinds of chart, and needs nothing at view time.

use std::fmt::Write as _;

/// How values map onto an axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    /// log10; values below `min` are drawn at `min`.
    Log10,
    /// Percentile p in [0, 1] at log10(1 / (1 - p)): 0%, 90%, 99%, 99.9% ...
    /// evenly spaced, as HdrHistogram's plotter draws them.
    Percentile,
}

#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    pub min: f64,
    pub max: f64,
    /// Tick label of a value.
    pub format: fn(f64) -> String,
    /// Smallest distance between linear ticks (1 for counts).
    pub min_step: f64,
}

impl Axis {
    /// Position of `v` between 0 (min) and 1 (max).
    fn pos(&self, v: f64) -> f64 {
        let (a, b, x) = match self.scale {
            Scale::Linear => (self.min, self.max, v),
            Scale::Log10 => (self.min.log10(), self.max.log10(), v.max(self.min).log10()),
            Scale::Percentile => (0.0, tail(self.max), tail(v.min(self.max))),
        };
        if b > a {
            ((x - a) / (b - a)).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Linear => linear_ticks(self.min, self.max, self.min_step),
            Scale::Log10 => {
                let mut v = Vec::new();
                let mut t = 10f64.powf(self.min.log10().ceil());
                while t <= self.max * 1.0001 {
                    v.push(t);
                    t *= 10.0;
                }
                v
            }
            Scale::Percentile => {
                let decades = tail(self.max).round() as i32;
                (0..=decades).map(|d| 1.0 - 10f64.powi(-d)).collect()
            }
        }
    }
}

/// log10(1 / (1 - p)), capped for p = 1.
pub fn tail(p: f64) -> f64 {
    let rest = (1.0 - p).max(1e-9);
    (1.0 / rest).log10()
}

/// The percentile axis' upper end: whole decades of 1/(1-p), at least 99%,
/// enough for the highest percentile below 100% among `qs`.
pub fn percentile_max(qs: impl Iterator<Item = f64>) -> f64 {
    let t = qs
        .filter(|&q| q < 1.0)
        .map(tail)
        .fold(2.0f64, f64::max)
        .ceil()
        .min(9.0);
    1.0 - 10f64.powf(-t)
}

/// Round ticks (1, 2 or 5 times a power of ten apart, at least `min_step`)
/// from min to max.
pub fn linear_ticks(min: f64, max: f64, min_step: f64) -> Vec<f64> {
    if max <= min {
        return vec![min];
    }
    let raw = ((max - min) / 5.0).max(min_step);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = Vec::new();
    let mut t = (min / step).ceil() * step;
    while t <= max + step * 1e-6 {
        v.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    v
}

/// A linear axis' upper end: `max` rounded up to a tick, at least 1.
pub fn nice_max(max: f64) -> f64 {
    let max = max.max(1.0);
    let ticks = linear_ticks(0.0, max, 1.0);
    let step = if ticks.len() > 1 {
        ticks[1] - ticks[0]
    } else {
        1.0
    };
    (max / step).ceil() * step
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Dashed,
    /// Steps holding each value until the next point.
    Steps,
    /// One bar per point, `width` in x units to its right.
    Bars {
        width_milli: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// Element id of the `<svg>`.
    pub id: String,
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

pub const WIDTH: f64 = 760.0;
pub const HEIGHT: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 48.0;
/// Line series with at most this many points get a marker per point.
const MARKED_POINTS: usize = 40;
/// Series colour classes the page's CSS defines.
pub const PALETTE: usize = 8;

/// Text for SVG and HTML: `&`, `<`, `>`, quotes escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Chart {
    fn px(&self, x: f64) -> f64 {
        LEFT + self.x.pos(x) * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - self.y.pos(y) * (HEIGHT - TOP - BOTTOM)
    }

    /// The chart as an `<svg>` element. Every series is one element of
    /// class `series` (a `<path>`, or a `<g>` of bars) with its label in
    /// `data-label`; the legend lists them in the same order.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = write!(
            o,
            r#"<svg id="{}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
            escape(&self.id),
            escape(&self.title)
        );
        let _ = write!(
            o,
            r#"<text class="title" x="{LEFT}" y="20">{}</text>"#,
            escape(&self.title)
        );
        let (x0, x1) = (LEFT, WIDTH - RIGHT);
        let (y0, y1) = (HEIGHT - BOTTOM, TOP);
        for t in self.x.ticks() {
            let x = self.px(t);
            let _ = write!(
                o,
                r#"<line class="grid" x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                y0 + 16.0,
                escape(&(self.x.format)(t))
            );
        }
        for t in self.y.ticks() {
            let y = self.py(t);
            let _ = write!(
                o,
                r#"<line class="grid" x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                x0 - 6.0,
                y + 4.0,
                escape(&(self.y.format)(t))
            );
        }
        let _ = write!(
            o,
            r#"<path class="axis" d="M{x0},{y1} V{y0} H{x1}"/><text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="label" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            HEIGHT - 8.0,
            escape(&self.x.label),
            (y0 + y1) / 2.0,
            escape(&self.y.label)
        );
        for (i, s) in self.series.iter().enumerate() {
            self.render_series(&mut o, i, s);
        }
        // Legend, top right, one row per series.
        for (i, s) in self.series.iter().enumerate() {
            let y = TOP + 6.0 + 16.0 * i as f64;
            let x = WIDTH - RIGHT - 190.0;
            let dash = if s.style == Style::Dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                o,
                r#"<g class="legend"><line class="s{} stroke" x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"{dash}/><text class="tick" x="{:.1}" y="{:.1}">{}</text></g>"#,
                i % PALETTE,
                x + 18.0,
                x + 24.0,
                y + 4.0,
                escape(&s.label)
            );
        }
        o.push_str("</svg>");
        o
    }

    fn render_series(&self, o: &mut String, i: usize, s: &Series) {
        let class = format!("series s{}", i % PALETTE);
        let label = escape(&s.label);
        match s.style {
            Style::Bars { width_milli } => {
                let _ = write!(o, r#"<g class="{class} fill" data-label="{label}">"#);
                let base = self.py(self.y.min);
                for &(x, y) in &s.points {
                    let left = self.px(x);
                    let right = self.px(x + f64::from(width_milli) / 1000.0);
                    let top = self.py(y);
                    let w = (right - left - 1.0).max(1.0);
                    let _ = write!(
                        o,
                        r#"<rect x="{left:.1}" y="{top:.1}" width="{w:.1}" height="{:.1}"><title>{}</title></rect>"#,
                        (base - top).max(0.0),
                        escape(&format!("{}: {}", (self.x.format)(x), (self.y.format)(y)))
                    );
                }
                o.push_str("</g>");
            }
            Style::Line | Style::Dashed | Style::Steps => {
                let mut d = String::new();
                let mut last: Option<f64> = None;
                for &(x, y) in &s.points {
                    let (px, py) = (self.px(x), self.py(y));
                    match last {
                        None => {
                            let _ = write!(d, "M{px:.1},{py:.1}");
                        }
                        Some(_) if s.style == Style::Steps => {
                            let _ = write!(d, " H{px:.1} V{py:.1}");
                        }
                        Some(_) => {
                            let _ = write!(d, " L{px:.1},{py:.1}");
                        }
                    }
                    last = Some(py);
                }
                let dash = if s.style == Style::Dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                };
                let _ = write!(
                    o,
                    r#"<path class="{class} stroke" data-label="{label}" d="{d}"{dash}><title>{label}</title></path>"#
                );
                // Few points: mark them, so that a lone point shows.
                if s.points.len() <= MARKED_POINTS {
                    for &(x, y) in &s.points {
                        let _ = write!(
                            o,
                            r#"<circle class="marker s{} fill" cx="{:.1}" cy="{:.1}" r="3"><title>{}</title></circle>"#,
                            i % PALETTE,
                            self.px(x),
                            self.py(y),
                            escape(&format!("{}: {}", (self.x.format)(x), (self.y.format)(y)))
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(scale: Scale, min: f64, max: f64) -> Axis {
        Axis {
            label: "x".into(),
            scale,
            min,
            max,
            format: |v| format!("{v}"),
            min_step: 0.0,
        }
    }

    #[test]
    fn percentile_axis_spaces_nines_evenly() {
        let a = axis(Scale::Percentile, 0.0, 0.999);
        assert_eq!(a.pos(0.0), 0.0);
        assert!((a.pos(0.9) - 1.0 / 3.0).abs() < 1e-9);
        assert!((a.pos(0.99) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(a.pos(1.0), 1.0);
        let t = a.ticks();
        assert_eq!(t.len(), 4);
        assert!((t[3] - 0.999).abs() < 1e-12);
        assert!((percentile_max([0.5, 0.995, 1.0].into_iter()) - 0.999).abs() < 1e-12);
        assert!((percentile_max([0.5].into_iter()) - 0.99).abs() < 1e-12);
    }

    #[test]
    fn log_and_linear_ticks() {
        let a = axis(Scale::Log10, 1.0, 1e6);
        assert_eq!(a.ticks().len(), 7);
        assert!((a.pos(1000.0) - 0.5).abs() < 1e-9);
        assert_eq!(a.pos(0.0), 0.0, "below min is drawn at min");
        assert_eq!(
            linear_ticks(0.0, 10.0, 0.0),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(linear_ticks(0.0, 7.0, 0.0), vec![0.0, 2.0, 4.0, 6.0]);
        assert_eq!(linear_ticks(0.0, 2.0, 0.0), vec![0.0, 0.5, 1.0, 1.5, 2.0]);
        assert_eq!(linear_ticks(0.0, 2.0, 1.0), vec![0.0, 1.0, 2.0]);
        assert_eq!(nice_max(7.0), 8.0);
        assert_eq!(nice_max(0.0), 1.0);
    }

    #[test]
    fn one_element_per_series_and_escaped_text() {
        let c = Chart {
            id: "c".into(),
            title: "a <b> & 'c'".into(),
            x: axis(Scale::Linear, 0.0, 10.0),
            y: axis(Scale::Linear, 0.0, 10.0),
            series: vec![
                Series {
                    label: "line".into(),
                    style: Style::Line,
                    points: vec![(0.0, 0.0), (5.0, 5.0)],
                },
                Series {
                    label: "bars".into(),
                    style: Style::Bars { width_milli: 1000 },
                    points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)],
                },
                Series {
                    label: "steps <x>".into(),
                    style: Style::Steps,
                    points: vec![(0.0, 1.0), (3.0, 2.0)],
                },
            ],
        };
        let svg = c.render();
        assert!(svg.starts_with(r#"<svg id="c" class="chart""#), "{svg}");
        assert_eq!(svg.matches(r#"class="series "#).count(), 3);
        assert_eq!(svg.matches("<rect ").count(), 3);
        assert!(svg.contains("a &lt;b&gt; &amp; &#39;c&#39;"));
        assert!(svg.contains(r#"data-label="steps &lt;x&gt;""#));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains(" H"), "steps: {svg}");
        assert!(svg.ends_with("</svg>"));
    }
}
