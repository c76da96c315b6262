//! The HTML report (`record --html`): one
//! self-contained page, no script, no request at view time (its CSP is
//! `default-src 'none'`), charts as inline SVG ([`super::svg`]), a light and
//! a dark theme (`prefers-color-scheme`).
//!
//! It shows the summary counters; per tag, the CLOSE_WAIT duration
//! percentile curve on HdrHistogram's log 1/(1-p) axis; a timeline from the
//! interval histograms (episodes closed and p99 per interval) and the
//! checkpoints (sockets in CLOSE_WAIT and stuck); and the stuck-socket
//! groups with their diagnosis, holders, creating stack and threads, as the
//! text report has them.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::{
    hgrm::TICKS_PER_HALF_DISTANCE,
    hlog::HlogInterval,
    svg::{self, escape, Axis, Chart, Scale, Series, Style},
};
use crate::{
    histograms::{HistSummary, TAG_ALL, TAG_OPEN},
    model::Report,
    report::{self, fmt_ms},
};

/// Percentile curves drawn (the biggest tags; `all` first).
pub const MAX_CURVES: usize = 8;
/// Sockets listed per group on the page (the JSON has them all).
pub const SOCKETS_PER_GROUP: usize = 100;

/// One interval of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePoint {
    /// Seconds since the start of the recording.
    pub start_s: f64,
    pub len_s: f64,
    /// Episodes closed in the interval.
    pub closed: u64,
    /// p99 of their durations (us), when any closed.
    pub p99_us: Option<u64>,
    /// Sockets in CLOSE_WAIT and stuck at the checkpoint ending the
    /// interval (unknown when read from an interval log alone).
    pub in_close_wait: Option<u64>,
    pub stuck: Option<u64>,
}

impl TimelinePoint {
    /// The interval as the histogram of its closed episodes says.
    pub fn of_interval(start_s: f64, len_s: f64, closed: &Histogram<u64>) -> TimelinePoint {
        TimelinePoint {
            start_s,
            len_s,
            closed: closed.len(),
            p99_us: (!closed.is_empty()).then(|| closed.value_at_quantile(0.99)),
            in_close_wait: None,
            stuck: None,
        }
    }
}

/// The timeline of an interval log: its `all` lines, in time order.
pub fn timeline_of_log(intervals: &[HlogInterval]) -> Vec<TimelinePoint> {
    let mut v: Vec<TimelinePoint> = intervals
        .iter()
        .filter(|i| i.tag.as_deref().unwrap_or(TAG_ALL) == TAG_ALL)
        .map(|i| TimelinePoint::of_interval(i.start_s, i.dur_s, &i.hist))
        .collect();
    v.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    if let Some(first) = v.first().map(|p| p.start_s) {
        for p in &mut v {
            p.start_s -= first;
        }
    }
    v
}

/// A tag's percentile curve: (percentile 0..1, duration us) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub tag: String,
    pub count: u64,
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    /// The curve of a histogram, at the percentiles the `.hgrm` has.
    pub fn of(tag: &str, h: &Histogram<u64>) -> Curve {
        let points = if h.is_empty() {
            Vec::new()
        } else {
            h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
                .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64))
                .collect()
        };
        Curve {
            tag: tag.to_owned(),
            count: h.len(),
            points,
        }
    }

    /// A coarse curve from a summary (a JSON report has only these).
    pub fn of_summary(s: &HistSummary) -> Curve {
        let points = if s.count == 0 {
            Vec::new()
        } else {
            vec![
                (0.0, s.min_us as f64),
                (0.5, s.p50_us as f64),
                (0.9, s.p90_us as f64),
                (0.99, s.p99_us as f64),
                (0.999, s.p999_us as f64),
                (1.0, s.max_us as f64),
            ]
        };
        Curve {
            tag: s.tag.clone(),
            count: s.count,
            points,
        }
    }
}

/// Everything one page shows.
#[derive(Debug, Default)]
pub struct Page<'a> {
    /// The run's report (counters, groups); None when only logs were read.
    pub report: Option<&'a Report>,
    pub curves: Vec<Curve>,
    pub timeline: Vec<TimelinePoint>,
    /// The files the page was made from (for `report`).
    pub sources: Vec<String>,
}

/// The curves drawn: non-empty ones, `all` first, then the biggest tags,
/// `open` (ages of sockets still in CLOSE_WAIT) last; at most
/// [`MAX_CURVES`]. Returns them and how many were left out.
pub fn pick_curves(mut curves: Vec<Curve>) -> (Vec<Curve>, usize) {
    curves.retain(|c| !c.points.is_empty());
    let rank = |c: &Curve| match c.tag.as_str() {
        TAG_ALL => 0,
        TAG_OPEN => 2,
        _ => 1,
    };
    curves.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.count.cmp(&a.count)));
    let open = curves
        .iter()
        .position(|c| c.tag == TAG_OPEN)
        .map(|i| curves.remove(i));
    let room = MAX_CURVES - usize::from(open.is_some());
    let left_out = curves.len().saturating_sub(room);
    curves.truncate(room);
    curves.extend(open);
    (curves, left_out)
}

fn fmt_us_tick(us: f64) -> String {
    if us >= 3_600_000_000.0 {
        format!("{}h", us / 3_600_000_000.0)
    } else if us >= 60_000_000.0 {
        format!("{}m", us / 60_000_000.0)
    } else if us >= 1_000_000.0 {
        format!("{}s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{}ms", us / 1000.0)
    } else {
        format!("{us}us")
    }
}

fn fmt_percentile(p: f64) -> String {
    let s = format!("{:.6}", p * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn fmt_count(v: f64) -> String {
    report::thousands(v.round() as u64)
}

fn fmt_seconds(v: f64) -> String {
    format!("{v}s")
}

/// Log axis bounds (us) that hold every y value, whole decades.
fn duration_axis(label: &str, values: impl Iterator<Item = f64>) -> Axis {
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| {
        (lo.min(v.max(1.0)), hi.max(v))
    });
    let (lo, hi) = if hi <= 0.0 { (1.0, 1000.0) } else { (lo, hi) };
    let min = 10f64.powf(lo.log10().floor());
    let mut max = 10f64.powf(hi.log10().ceil());
    if max <= min {
        max = min * 10.0;
    }
    Axis {
        label: label.to_owned(),
        scale: Scale::Log10,
        min,
        max,
        format: fmt_us_tick,
        min_step: 0.0,
    }
}

pub fn percentile_chart(curves: &[Curve]) -> Chart {
    let x = Axis {
        label: "percentile (log scale of 1/(1-p))".into(),
        scale: Scale::Percentile,
        min: 0.0,
        max: svg::percentile_max(curves.iter().flat_map(|c| c.points.iter().map(|p| p.0))),
        format: fmt_percentile,
        min_step: 0.0,
    };
    let y = duration_axis(
        "time in CLOSE_WAIT",
        curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)),
    );
    let series = curves
        .iter()
        .map(|c| Series {
            label: format!(
                "{} (n={})",
                if c.tag == TAG_OPEN {
                    "open: ages now"
                } else {
                    &c.tag
                },
                report::thousands(c.count)
            ),
            style: if c.tag == TAG_OPEN {
                Style::Dashed
            } else {
                Style::Line
            },
            points: c.points.iter().map(|&(q, v)| (q, v.max(1.0))).collect(),
        })
        .collect();
    Chart {
        id: "percentiles".into(),
        title: "CLOSE_WAIT duration by percentile, per tag".into(),
        x,
        y,
        series,
    }
}

fn time_axis(timeline: &[TimelinePoint]) -> Axis {
    let end = timeline
        .iter()
        .map(|p| p.start_s + p.len_s)
        .fold(0.0, f64::max);
    Axis {
        label: "seconds since the start".into(),
        scale: Scale::Linear,
        min: 0.0,
        max: svg::nice_max(end),
        format: fmt_seconds,
        min_step: 0.0,
    }
}

/// Episodes closed per interval (bars) and their p99 (line).
pub fn timeline_charts(timeline: &[TimelinePoint]) -> Vec<Chart> {
    let mut charts = Vec::new();
    let x = time_axis(timeline);
    let max_closed = timeline.iter().map(|p| p.closed).max().unwrap_or(0) as f64;
    charts.push(Chart {
        id: "timeline-closed".into(),
        title: "Episodes closed per interval".into(),
        x: x.clone(),
        y: Axis {
            label: "episodes".into(),
            scale: Scale::Linear,
            min: 0.0,
            max: svg::nice_max(max_closed),
            format: fmt_count,
            min_step: 1.0,
        },
        series: vec![Series {
            label: "closed".into(),
            style: Style::Bars {
                width_milli: (timeline.first().map(|p| p.len_s).unwrap_or(1.0) * 1000.0) as u32,
            },
            points: timeline
                .iter()
                .map(|p| (p.start_s, p.closed as f64))
                .collect(),
        }],
    });
    let p99: Vec<(f64, f64)> = timeline
        .iter()
        .filter_map(|p| Some((p.start_s + p.len_s, p.p99_us? as f64)))
        .collect();
    charts.push(Chart {
        id: "timeline-p99".into(),
        title: "p99 of the episodes closed in each interval".into(),
        x: x.clone(),
        y: duration_axis("p99 time in CLOSE_WAIT", p99.iter().map(|p| p.1)),
        series: vec![Series {
            label: "p99".into(),
            style: Style::Line,
            points: p99,
        }],
    });
    let gauge = |f: fn(&TimelinePoint) -> Option<u64>| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter_map(|p| Some((p.start_s + p.len_s, f(p)? as f64)))
            .collect()
    };
    let now = gauge(|p| p.in_close_wait);
    let stuck = gauge(|p| p.stuck);
    if !now.is_empty() {
        let max = now.iter().chain(&stuck).map(|p| p.1).fold(0.0, f64::max);
        charts.push(Chart {
            id: "timeline-sockets".into(),
            title: "Sockets in CLOSE_WAIT and stuck, at each checkpoint".into(),
            x,
            y: Axis {
                label: "sockets".into(),
                scale: Scale::Linear,
                min: 0.0,
                max: svg::nice_max(max),
                format: fmt_count,
                min_step: 1.0,
            },
            series: vec![
                Series {
                    label: "in CLOSE_WAIT".into(),
                    style: Style::Line,
                    points: now,
                },
                Series {
                    label: "stuck".into(),
                    style: Style::Dashed,
                    points: stuck,
                },
            ],
        });
    }
    charts
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1d2125; --muted: #5c6670; --card: #f3f5f7;
  --grid: #d9dee3; --warn: #b3261e;
  --s0: #0a60c2; --s1: #c24e00; --s2: #1a7f37; --s3: #8250df; --s4: #bf3989; --s5: #0f7b8a; --s6: #7a5a00; --s7: #57606a; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #15181c; --fg: #e6e8eb; --muted: #9aa4ae; --card: #22272e; --grid: #353c45; --warn: #ff7b72;
    --s0: #6cb6ff; --s1: #ffa657; --s2: #7ee787; --s3: #d2a8ff; --s4: #ff9bce; --s5: #56d4dd; --s6: #e3b341; --s7: #adbac7; }
}
body { background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1000px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; } h3 { font-size: 15px; margin: 0 0 6px; }
.muted { color: var(--muted); } .warn { color: var(--warn); font-weight: 600; }
.counters { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
.counter { background: var(--card); border-radius: 6px; padding: 8px 10px; }
.counter b { display: block; font-size: 20px; }
table { border-collapse: collapse; margin: 6px 0; } td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.group { background: var(--card); border-radius: 6px; padding: 12px 14px; margin: 12px 0; }
.group dl { display: grid; grid-template-columns: 110px 1fr; gap: 2px 10px; margin: 6px 0; } .group dt { color: var(--muted); }
.group dd { margin: 0; } pre { margin: 0; white-space: pre-wrap; font: 12px/1.4 ui-monospace, monospace; }
.mono { font: 12px/1.4 ui-monospace, monospace; }
svg.chart { max-width: 100%; height: auto; display: block; margin: 8px 0; }
svg .title { fill: var(--fg); font-size: 14px; font-weight: 600; } svg .tick { fill: var(--muted); font-size: 11px; }
svg .label { fill: var(--muted); font-size: 12px; } svg .grid { stroke: var(--grid); stroke-width: 1; }
svg .axis { stroke: var(--muted); fill: none; } svg .stroke { fill: none; stroke-width: 2; }
svg .fill { stroke: none; }
"#;

fn palette_css() -> String {
    let mut css = String::new();
    for i in 0..svg::PALETTE {
        let _ = writeln!(
            css,
            "svg .s{i}.stroke {{ stroke: var(--s{i}); }} svg .s{i}.fill {{ fill: var(--s{i}); }}"
        );
    }
    css
}

fn counter(o: &mut String, label: &str, v: u64, id: &str) {
    let _ = write!(
        o,
        r#"<div class="counter" id="{id}"><b>{}</b>{}</div>"#,
        report::thousands(v),
        escape(label)
    );
}

fn summary_html(o: &mut String, r: &Report) {
    let c = &r.counters;
    o.push_str(r#"<h2>Summary</h2><div class="counters">"#);
    counter(o, "entered CLOSE_WAIT", c.close_wait_entered, "c-entered");
    counter(o, "closed gracefully", c.closed_graceful, "c-graceful");
    counter(o, "closed by abort", c.closed_abort, "c-abort");
    counter(o, "ended by peer reset", c.peer_reset, "c-peer-reset");
    counter(o, "ended by a timer", c.closed_timeout, "c-timeout");
    counter(o, "in CLOSE_WAIT now", c.close_wait_now, "c-now");
    counter(
        o,
        &format!("stuck (> {})", fmt_ms(r.threshold_ms as f64)),
        c.stuck,
        "c-stuck",
    );
    counter(o, "lost events", c.lost_events, "c-lost");
    counter(o, "map evictions", c.map_evictions, "c-evicted");
    o.push_str("</div>");
    if c.lost_events + c.map_evictions + c.map_insert_failed > 0 {
        let _ = write!(
            o,
            r#"<p class="warn">Lost events {}, map evictions {}, map insert failures {}: some episodes are missing. {}</p>"#,
            c.lost_events,
            c.map_evictions,
            c.map_insert_failed,
            escape(&c.lost_causes())
        );
    }
}

fn histogram_table(o: &mut String, rows: &[HistSummary]) {
    if rows.is_empty() {
        return;
    }
    o.push_str(
        "<table><tr><th>tag</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>",
    );
    let us = |v: u64| escape(&report::fmt_us(v));
    for h in rows {
        let _ = write!(
            o,
            r#"<tr><td class="mono">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            escape(&h.tag),
            report::thousands(h.count),
            us(h.p50_us),
            us(h.p90_us),
            us(h.p99_us),
            us(h.p999_us),
            us(h.max_us)
        );
    }
    o.push_str("</table>");
}

fn groups_html(o: &mut String, r: &Report) {
    let _ = write!(
        o,
        r#"<h2>Stuck sockets ({} in {} group{})</h2>"#,
        report::thousands(r.stuck.len() as u64),
        r.groups.len(),
        if r.groups.len() == 1 { "" } else { "s" }
    );
    if r.groups.is_empty() {
        o.push_str(r#"<p id="no-stuck">No socket stuck in CLOSE_WAIT.</p>"#);
        return;
    }
    for (gi, g) in r.groups.iter().enumerate() {
        let who = match (&g.pool, g.pid) {
            (Some(pool), _) => pool.text(&g.comm),
            (None, Some(p)) => format!("{}[{p}]", g.comm),
            (None, None) => "no process".to_owned(),
        };
        let _ = write!(
            o,
            r#"<section class="group" id="group-{gi}"><h3><span class="diagnosis">{}</span> &times;{} &mdash; {} &larr; peer {} <span class="muted">&middot; oldest {}, unread {} B</span></h3><dl>"#,
            escape(&g.diagnosis.as_str().to_uppercase()),
            report::thousands(g.count as u64),
            escape(&who),
            escape(&g.peer.to_string()),
            escape(&fmt_ms(g.oldest_age_ms as f64)),
            report::thousands(g.unread_bytes)
        );
        if !g.cmdline.is_empty() {
            let _ = write!(
                o,
                r#"<dt>command</dt><dd class="mono">{}</dd>"#,
                escape(&g.cmdline)
            );
        }
        let _ = write!(o, "<dt>why</dt><dd>{}</dd>", escape(&g.evidence));
        if let Some(a) = &g.accepting {
            let _ = write!(o, "<dt>accepting</dt><dd>{}</dd>", escape(a));
        }
        if let Some(pool) = &g.pool {
            let list: Vec<String> = pool
                .processes
                .iter()
                .map(|m| format!("{}[{}] ×{}", m.comm, m.pid, m.count))
                .collect();
            let _ = write!(o, "<dt>processes</dt><dd>{}</dd>", escape(&list.join(", ")));
        }
        if let Some(t) = &g.threads {
            let _ = write!(o, "<dt>threads</dt><dd>{}", escape(&t.text));
            o.push_str("<table><tr><th>threads</th><th>state</th><th>waiting in</th><th>syscall</th><th>on</th></tr>");
            for tg in &t.groups {
                let _ = write!(
                    o,
                    r#"<tr><td class="n">{}</td><td>{}</td><td class="mono">{}</td><td class="mono">{}</td><td class="mono">{}</td></tr>"#,
                    tg.count,
                    escape(&tg.state.to_string()),
                    escape(&tg.wchan),
                    escape(tg.syscall.as_deref().unwrap_or("")),
                    escape(
                        tg.fd_target
                            .clone()
                            .unwrap_or_else(|| crate::threads::waits_text(tg).trim().to_owned())
                            .as_str()
                    )
                );
            }
            o.push_str("</table></dd>");
        }
        if let Some(p) = &g.local_ports {
            let _ = write!(o, "<dt>ports</dt><dd>{}</dd>", escape(&p.text()));
        }
        if !g.stack.is_empty() {
            let _ = write!(
                o,
                "<dt>created at</dt><dd><pre>{}</pre></dd>",
                escape(&g.stack.join("\n"))
            );
        }
        let members = report::members(r, gi);
        let folded = report::shared_notes(&members);
        for n in &folded {
            let _ = write!(
                o,
                "<dt>all {}</dt><dd>{}</dd>",
                report::thousands(members.len() as u64),
                escape(n)
            );
        }
        o.push_str("</dl><table><tr><th>local</th><th>remote</th><th>age</th><th>unread</th><th>held by</th><th>notes</th></tr>");
        for s in members.iter().take(SOCKETS_PER_GROUP) {
            let age = if s.since_attach {
                format!(">={}", fmt_ms(s.age_ms as f64))
            } else {
                fmt_ms(s.age_ms as f64)
            };
            let notes: Vec<String> = report::socket_notes(s)
                .into_iter()
                .filter(|n| !folded.contains(n))
                .collect();
            let _ = write!(
                o,
                r#"<tr class="socket"><td class="mono">{}</td><td class="mono">{}</td><td class="n">{}</td><td class="n">{} B</td><td class="mono">{}</td><td>{}</td></tr>"#,
                escape(&s.local.to_string()),
                escape(&s.remote.to_string()),
                escape(&age),
                s.unread_bytes,
                escape(&report::holders_text(&s.holders)),
                escape(&notes.join("; "))
            );
        }
        o.push_str("</table>");
        if members.len() > SOCKETS_PER_GROUP {
            let _ = write!(
                o,
                r#"<p class="muted">... and {} more (the JSON report has them all)</p>"#,
                report::thousands((members.len() - SOCKETS_PER_GROUP) as u64)
            );
        }
        o.push_str("</section>");
    }
}

/// The page.
pub fn render(page: &Page<'_>) -> String {
    let mut o = String::with_capacity(64 * 1024);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    // Nothing may be fetched: no script, no font, no image, no request.
    o.push_str(r#"<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">"#);
    o.push_str(r#"<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark">"#);
    let title = match page.report {
        Some(r) if r.hooks.is_empty() => format!("close-wait snapshot {}", r.ended_at),
        Some(r) => format!("close-wait report {} .. {}", r.started_at, r.ended_at),
        None => "close-wait report".to_owned(),
    };
    let _ = write!(
        o,
        "<title>{}</title><style>{STYLE}{}</style></head><body>",
        escape(&title),
        palette_css()
    );
    let _ = write!(o, "<h1>{}</h1>", escape(&title));
    if let Some(r) = page.report {
        let _ = write!(
            o,
            r#"<p class="muted">kernel {} &middot; stuck means longer than {} in CLOSE_WAIT &middot; hooks: {}</p>"#,
            escape(&r.kernel),
            escape(&fmt_ms(r.threshold_ms as f64)),
            escape(&r.hooks.join(", "))
        );
    }
    if !page.sources.is_empty() {
        let _ = write!(
            o,
            r#"<p class="muted">from {}</p>"#,
            escape(&page.sources.join(", "))
        );
    }
    if let Some(r) = page.report {
        summary_html(&mut o, r);
    }
    o.push_str("<h2>Time in CLOSE_WAIT</h2>");
    let (curves, left_out) = pick_curves(page.curves.clone());
    if curves.is_empty() {
        o.push_str(r#"<p class="muted">No episode closed, no socket open: nothing to plot.</p>"#);
    } else {
        o.push_str(&percentile_chart(&curves).render());
        o.push_str(r#"<p class="muted">Solid lines: how long closed sockets had been in CLOSE_WAIT before close(); dashed: the ages of the sockets still in CLOSE_WAIT at the end. The axis spreads the tail: 90%, 99%, 99.9% ... are evenly spaced."#);
        if left_out > 0 {
            let _ = write!(o, " {left_out} smaller tags are not drawn (see the table).");
        }
        o.push_str("</p>");
    }
    if let Some(r) = page.report {
        histogram_table(&mut o, &r.histograms);
    } else {
        let rows: Vec<HistSummary> = page
            .curves
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| HistSummary {
                tag: c.tag.clone(),
                count: c.count,
                min_us: quantile(c, 0.0),
                p50_us: quantile(c, 0.5),
                p90_us: quantile(c, 0.9),
                p99_us: quantile(c, 0.99),
                p999_us: quantile(c, 0.999),
                max_us: quantile(c, 1.0),
                mean_us: 0.0,
            })
            .collect();
        histogram_table(&mut o, &rows);
    }
    if !page.timeline.is_empty() {
        o.push_str("<h2>Timeline</h2>");
        for c in timeline_charts(&page.timeline) {
            o.push_str(&c.render());
        }
    }
    if let Some(r) = page.report {
        groups_html(&mut o, r);
        if !r.closed_late.is_empty() {
            o.push_str("<h2>Closed late</h2><table><tr><th>process</th><th>sockets</th><th>slowest</th></tr>");
            for c in &r.closed_late {
                let _ = write!(
                    o,
                    r#"<tr><td class="mono">{}[{}]</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
                    escape(&c.comm),
                    c.pid,
                    c.count,
                    escape(&fmt_ms(c.max_ms))
                );
            }
            o.push_str("</table>");
        }
    }
    let _ = write!(
        o,
        r#"<p class="muted">close-wait {}: one self-contained page, no script, nothing fetched.</p></body></html>"#,
        env!("CARGO_PKG_VERSION")
    );
    o.push('\n');
    o
}

/// The value of a curve at percentile `q` (its first point at or above).
fn quantile(c: &Curve, q: f64) -> u64 {
    c.points
        .iter()
        .find(|p| p.0 >= q)
        .or(c.points.last())
        .map(|p| p.1 as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histograms::new_histogram;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn curves_follow_the_hgrm_percentiles() {
        let h = hist(&(1..=1000).collect::<Vec<_>>());
        let c = Curve::of("all", &h);
        assert_eq!(c.count, 1000);
        assert_eq!(c.points.first().unwrap().0, 0.0);
        assert_eq!(c.points.last().unwrap().0, 1.0);
        assert!(c
            .points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!(Curve::of("x", &new_histogram()).points.is_empty());
    }

    #[test]
    fn picked_curves_put_all_first_and_open_last() {
        let mk = |tag: &str, n: u64| Curve {
            tag: tag.into(),
            count: n,
            points: vec![(0.0, 1.0), (1.0, 2.0)],
        };
        let mut v = vec![mk(TAG_OPEN, 3), mk("comm:a", 5), mk(TAG_ALL, 20)];
        for i in 0..10 {
            v.push(mk(&format!("port:{i}"), i));
        }
        v.push(Curve {
            tag: "comm:empty".into(),
            count: 0,
            points: Vec::new(),
        });
        let (picked, left) = pick_curves(v);
        assert_eq!(picked.len(), MAX_CURVES);
        assert_eq!(picked[0].tag, TAG_ALL);
        assert_eq!(picked[1].tag, "port:9");
        assert_eq!(picked.last().unwrap().tag, TAG_OPEN);
        assert_eq!(left, 12 - (MAX_CURVES - 1));
    }

    #[test]
    fn timeline_of_a_log_starts_at_zero() {
        let iv = |tag: &str, start: f64, values: &[u64]| HlogInterval {
            tag: Some(tag.into()),
            start_s: start,
            dur_s: 1.0,
            hist: hist(values),
        };
        let t = timeline_of_log(&[
            iv("all", 11.0, &[5, 6]),
            iv("comm:x", 10.0, &[5]),
            iv("all", 10.0, &[]),
        ]);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].start_s, 0.0);
        assert_eq!(t[0].closed, 0);
        assert_eq!(t[0].p99_us, None);
        assert_eq!(t[1].start_s, 1.0);
        assert_eq!(t[1].closed, 2);
        assert_eq!(t[1].p99_us, Some(6));
    }

    #[test]
    fn page_without_a_report_is_self_contained() {
        let page = Page {
            report: None,
            curves: vec![Curve::of("all", &hist(&[10, 20, 3000]))],
            timeline: vec![TimelinePoint::of_interval(0.0, 1.0, &hist(&[10]))],
            sources: vec!["a<b>.hlog".into()],
        };
        let html = render(&page);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("default-src 'none'"));
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("http://")
                || !html
                    .replace("http://www.w3.org/2000/svg", "")
                    .contains("http://")
        );
        assert!(!html.contains("https://"));
        assert!(html.contains("a&lt;b&gt;.hlog"));
        assert_eq!(html.matches(r#"<svg id="percentiles""#).count(), 1);
        assert_eq!(html.matches(r#"<svg id="timeline-closed""#).count(), 1);
        assert_eq!(html.matches(r#"<svg id="timeline-p99""#).count(), 1);
        // Gauges come from checkpoints, which an interval log lacks.
        assert_eq!(html.matches(r#"<svg id="timeline-sockets""#).count(), 0);
        assert!(html.contains("prefers-color-scheme: dark"));
    }

    #[test]
    fn pool_groups_show_the_pool_command_and_accepting() {
        let mut r = crate::model::tests::sample();
        let g = &mut r.groups[0];
        g.cmdline = "/usr/sbin/apache2 -k <start>".into();
        g.accepting = Some("3 of 3 workers busy".into());
        g.pool = Some(crate::model::Pool {
            exe: "/usr/sbin/apache2".into(),
            parent: 1201,
            processes: [1202, 1203]
                .map(|pid| crate::model::PoolMember {
                    pid,
                    comm: "apache2".into(),
                    count: 1,
                    oldest_age_ms: 5,
                    unread_bytes: 0,
                    threads: None,
                })
                .to_vec(),
        });
        let page = Page {
            report: Some(&r),
            curves: Vec::new(),
            timeline: Vec::new(),
            sources: Vec::new(),
        };
        let html = render(&page);
        assert!(
            html.contains("2 server workers, children of 1201"),
            "{html}"
        );
        assert!(html.contains("/usr/sbin/apache2 -k &lt;start&gt;"));
        assert!(html.contains("<dt>accepting</dt><dd>3 of 3 workers busy</dd>"));
        assert!(html.contains("apache2[1202] ×1, apache2[1203] ×1"));
    }
}
