//! Percentile distribution text (`.hgrm`), in the layout of HdrHistogram's
//! `outputPercentileDistribution`, which HdrHistogram's plotter and other
//! tools read.
//!
//! Units: close-wait records microseconds and writes `.hgrm` files in
//! **milliseconds**, i.e. with `unit_ratio` [`US_PER_MS`] (1000). Values
//! then keep three decimals, so microsecond resolution is not lost, and the
//! numbers read the same as those of HdrHistogram tools, whose logs are
//! usually in milliseconds.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

/// Unit ratio that turns recorded microseconds into milliseconds.
pub const US_PER_MS: f64 = 1000.0;
/// Percentile ticks per half distance to 100%, as HdrHistogram tools use.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The `--hgrm-per-tag` file of `tag` next to `base`: `BASE.TAG.hgrm`,
/// with every character but ASCII letters, digits and `-` made `_`
/// (`cw.hgrm` + `comm:nginx` -> `cw.hgrm.comm_nginx.hgrm`).
pub fn per_tag_path(base: &Path, tag: &str) -> PathBuf {
    let safe: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{safe}.hgrm"));
    PathBuf::from(name)
}

/// Sub-bucket count for a histogram with `sigfig` significant digits and a
/// lowest discernible value of 1: the power of two that holds
/// `2 * 10^sigfig` distinct values.
fn sub_bucket_count(sigfig: u8) -> u64 {
    let single_unit = 2 * 10u64.pow(u32::from(sigfig));
    single_unit.next_power_of_two()
}

/// Renders `hist` as a percentile distribution, dividing values by
/// `unit_ratio` (use [`US_PER_MS`] for milliseconds). Rows are printed with
/// as many decimals as the histogram has significant digits, 5 ticks per
/// half distance to 100%, the 100% row without the `1/(1-Percentile)`
/// column, then the Mean/StdDeviation, Max/Total count and
/// Buckets/SubBuckets footer. An empty histogram has no rows and zeros in
/// the footer.
pub fn render_hgrm(hist: &Histogram<u64>, unit_ratio: f64) -> String {
    let digits = usize::from(hist.sigfig());
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored below.
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !hist.is_empty() {
        let mut total = 0u64;
        for v in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / unit_ratio;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.digits$} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev, max) = if hist.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            hist.mean() / unit_ratio,
            hist.stdev() / unit_ratio,
            hist.max() as f64 / unit_ratio,
        )
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.digits$}, StdDeviation   = {stdev:>12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.digits$}, Total count    = {:>12}]",
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        hist.buckets(),
        sub_bucket_count(hist.sigfig())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histograms::new_histogram;

    fn one_to_thousand() -> Histogram<u64> {
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn layout_of_one_to_thousand_in_ms() {
        let text = render_hgrm(&one_to_thousand(), US_PER_MS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        assert_eq!(
            lines[3],
            "       0.100 0.100000000000        100           1.11"
        );
        assert_eq!(
            lines[4],
            "       0.200 0.200000000000        200           1.25"
        );
        assert!(
            lines.contains(&"       0.500 0.500000000000        500           2.00"),
            "{text}"
        );
        assert!(
            lines.contains(&"       0.901 0.900000000000        901          10.00"),
            "{text}"
        );
        // (0.9 * 1000 lands a float ulp above 900, so the 90% tick is the
        // first value above it, as in HdrHistogram's own output)
        // every row has the same column layout
        let rows: Vec<&str> = lines[2..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .copied()
            .collect();
        let last = rows.last().unwrap();
        assert_eq!(*last, "       1.000 1.000000000000       1000");
        for r in &rows[..rows.len() - 1] {
            assert_eq!(r.len(), 12 + 1 + 14 + 1 + 10 + 1 + 14, "{r:?}");
        }
        // percentiles and counts never go down
        let mut prev = (0.0f64, 0u64);
        for r in &rows {
            let f: Vec<&str> = r.split_whitespace().collect();
            let p: f64 = f[1].parse().unwrap();
            let c: u64 = f[2].parse().unwrap();
            assert!(p >= prev.0 && c >= prev.1, "{r}");
            prev = (p, c);
        }
        let n = lines.len();
        assert_eq!(
            lines[n - 3],
            "#[Mean    =        0.500, StdDeviation   =        0.289]"
        );
        assert_eq!(
            lines[n - 2],
            "#[Max     =        1.000, Total count    =         1000]"
        );
        assert_eq!(
            lines[n - 1],
            "#[Buckets =            1, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn ticks_halve_towards_100() {
        let text = render_hgrm(&one_to_thousand(), 1.0);
        // 5 ticks per half distance: 0.5 .. 0.75 in steps of 0.05, then 0.025
        for p in [
            "0.550000000000",
            "0.600000000000",
            "0.750000000000",
            "0.775000000000",
        ] {
            assert!(text.contains(p), "missing {p}:\n{text}");
        }
        assert!(!text.contains("0.525000000000"), "{text}");
        // unit ratio 1 prints raw microseconds
        assert!(
            text.contains("    1000.000 1.000000000000       1000\n"),
            "{text}"
        );
    }

    #[test]
    fn empty_histogram_has_footer_only() {
        let text = render_hgrm(&new_histogram(), US_PER_MS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[3].starts_with("#[Max     =        0.000, Total count    =            0]"));
    }

    #[test]
    fn sub_buckets_match_sigfig() {
        assert_eq!(sub_bucket_count(3), 2048);
        assert_eq!(sub_bucket_count(2), 256);
        assert_eq!(sub_bucket_count(1), 32);
    }
}
