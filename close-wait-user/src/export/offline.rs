//! `close-wait report FILE... [--merge]`: a human summary of recorded
//! outputs, without tracing anything.
//!
//! Inputs are JSON reports (read back into the one [`Report`] model by
//! [`super::json`]) and interval logs (`.hlog`, read by [`super::hlog`]). A
//! JSON report prints its per-tag percentiles, then the same human report
//! `record` printed ([`crate::report::render`]: counters, groups, why,
//! threads, stacks, listener lines); an interval log gives per-tag
//! histograms, merged here over its intervals. With `--merge`, the
//! histograms of every interval log are added up per tag (exact:
//! HdrHistograms add). JSON reports only hold percentiles, which cannot be
//! combined exactly, so they stay listed per file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use super::hlog::{parse_hlog_from, HlogError, HlogInterval};
use super::json::JsonError;
use crate::histograms::{new_histogram, tag_order, HistSummary, TAG_OPEN};
use crate::model::{Report, SCHEMA};
use crate::report::fmt_us;

/// Errors while reading recorded outputs. Each names the file, and the line
/// where the input is broken.
/// A cause (a JSON or I/O error) is the error's `source()`, not repeated in
/// its message: print the chain (anyhow's `{:#}`) to see both.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("no input files: give one or more JSON reports or .hlog interval logs")]
    NoInput,
    #[error("refusing to read {path}: it is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("refusing to read {path}: it is {size} bytes, over the limit of {max} bytes (raise it with --max-bytes)")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error(transparent)]
    Hlog(#[from] HlogError),
    #[error("{path}: cannot add up histograms of tag '{tag}'")]
    Merge {
        path: PathBuf,
        tag: String,
        #[source]
        source: hdrhistogram::AdditionError,
    },
}

/// Whether `path` holds a JSON report (by extension, else by a leading `{`
/// in its first bytes).
fn is_json(path: &Path, bytes: &[u8]) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("hlog") => false,
        _ => bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{'),
    }
}

fn render_table(out: &mut String, rows: &[HistSummary]) {
    let w = rows.iter().map(|r| r.tag.len()).max().unwrap_or(0).max(3);
    let _ = writeln!(
        out,
        "    {:<w$} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "tag", "count", "min", "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    for r in rows {
        if r.count == 0 {
            let _ = writeln!(out, "    {:<w$} {:>9}", r.tag, 0);
            continue;
        }
        let _ = writeln!(
            out,
            "    {:<w$} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.tag,
            r.count,
            fmt_us(r.min_us),
            fmt_us(r.p50_us),
            fmt_us(r.p90_us),
            fmt_us(r.p99_us),
            fmt_us(r.p999_us),
            fmt_us(r.max_us),
            fmt_us(r.mean_us.round() as u64),
        );
    }
}

const TABLE_NOTE: &str =
    "CLOSE_WAIT durations of closed sockets; 'open' = ages of sockets still in CLOSE_WAIT";

/// A JSON report: its per-tag percentiles, then the human report as
/// `record` printed it.
fn render_json(out: &mut String, path: &Path, r: &Report, all: bool) {
    let _ = writeln!(out, "{} (JSON report, {SCHEMA})", path.display());
    if r.histograms.is_empty() {
        let _ = writeln!(out, "  histograms: none");
    } else {
        let _ = writeln!(out, "  histograms ({TABLE_NOTE}):");
        let mut rows = r.histograms.clone();
        rows.sort_by(|a, b| tag_order(&a.tag).cmp(&tag_order(&b.tag)));
        render_table(out, &rows);
    }
    out.push('\n');
    out.push_str(&crate::report::render(r, all));
}

/// Adds the intervals of one log into `merged`, per tag (untagged lines
/// under `(untagged)`).
///
/// The `open` lines are snapshots (the ages of the sockets still in
/// CLOSE_WAIT at each checkpoint), not what happened during their interval:
/// only the log's last one is taken, or a socket held for ten intervals
/// would be counted ten times.
fn merge_intervals(
    path: &Path,
    intervals: &[HlogInterval],
    merged: &mut BTreeMap<String, Histogram<u64>>,
) -> Result<(), OfflineError> {
    let last_open = intervals
        .iter()
        .filter(|i| i.tag.as_deref() == Some(TAG_OPEN))
        .map(|i| i.start_s)
        .reduce(f64::max);
    for i in intervals {
        let tag = i.tag.as_deref().unwrap_or("(untagged)");
        if tag == TAG_OPEN && Some(i.start_s) != last_open {
            continue;
        }
        let h = merged.entry(tag.to_owned()).or_insert_with(new_histogram);
        h.add(&i.hist).map_err(|source| OfflineError::Merge {
            path: path.to_path_buf(),
            tag: tag.to_owned(),
            source,
        })?;
    }
    Ok(())
}

fn summaries(merged: &BTreeMap<String, Histogram<u64>>) -> Vec<HistSummary> {
    let mut rows: Vec<HistSummary> = merged
        .iter()
        .map(|(t, h)| HistSummary::from_histogram(t, h))
        .collect();
    rows.sort_by(|a, b| tag_order(&a.tag).cmp(&tag_order(&b.tag)));
    rows
}

/// Number of distinct interval start times and the time they span.
fn span(intervals: &[HlogInterval]) -> (usize, f64) {
    let mut starts: Vec<f64> = intervals.iter().map(|i| i.start_s).collect();
    starts.sort_by(f64::total_cmp);
    starts.dedup();
    let first = starts.first().copied().unwrap_or(0.0);
    let end = intervals
        .iter()
        .map(|i| i.start_s + i.dur_s)
        .fold(first, f64::max);
    (starts.len(), end - first)
}

fn render_hlog(out: &mut String, title: &str, intervals: &[HlogInterval], rows: &[HistSummary]) {
    let (n, secs) = span(intervals);
    let _ = writeln!(out, "{title} ({n} intervals over {secs:.1} s)");
    if rows.is_empty() {
        let _ = writeln!(out, "  histograms: none");
    } else {
        let _ = writeln!(out, "  histograms, all intervals added ({TABLE_NOTE}):");
        render_table(out, rows);
    }
}

enum Input {
    Json(Box<Report>),
    Hlog(Vec<HlogInterval>),
}

/// Opens `path` for reading without blocking (a FIFO cannot hang the
/// open), refusing what is not a regular file or is larger than `max`.
pub fn open_bounded(path: &Path, max: u64) -> Result<std::fs::File, OfflineError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let read_err = |source| OfflineError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(read_err)?;
    let m = file.metadata().map_err(read_err)?;
    let ft = m.file_type();
    if !ft.is_file() {
        return Err(OfflineError::NotRegular {
            path: path.to_path_buf(),
            kind: crate::output::file::kind_of(ft),
        });
    }
    if m.len() > max {
        return Err(OfflineError::TooLarge {
            path: path.to_path_buf(),
            size: m.len(),
            max,
        });
    }
    Ok(file)
}

fn load(path: &Path, max: u64) -> Result<Input, OfflineError> {
    use std::io::{BufRead as _, BufReader, Read as _};
    let mut file = open_bounded(path, max)?;
    let json = {
        let mut r = BufReader::with_capacity(4096, (&file).take(max));
        let head = r.fill_buf().map_err(|source| OfflineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        is_json(path, head)
    };
    use std::io::Seek as _;
    file.rewind().map_err(|source| OfflineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if json {
        Ok(Input::Json(Box::new(super::json::read(
            path, &mut file, max,
        )?)))
    } else {
        Ok(Input::Hlog(parse_hlog_from(
            path,
            BufReader::new(file.take(max)),
        )?))
    }
}

/// Reads every file in `paths` (JSON reports and interval logs) and returns
/// a printable summary. With `merge`, interval logs are added up per tag
/// into one table; JSON reports are always listed per file. Each file is
/// streamed, and refused when it is not a regular file or is larger than
/// `max_bytes`.
pub fn report(paths: &[PathBuf], merge: bool, max_bytes: u64) -> Result<String, OfflineError> {
    report_listing(paths, merge, false, max_bytes)
}

/// [`report`], listing every stuck socket of the JSON reports when `all`
/// (else per group the oldest [`crate::report::SHOWN_PER_GROUP`] and a
/// count).
pub fn report_listing(
    paths: &[PathBuf],
    merge: bool,
    all: bool,
    max_bytes: u64,
) -> Result<String, OfflineError> {
    if paths.is_empty() {
        return Err(OfflineError::NoInput);
    }
    let mut inputs = Vec::with_capacity(paths.len());
    for p in paths {
        inputs.push((p.as_path(), load(p, max_bytes)?));
    }
    let mut out = String::new();
    if merge {
        let logs: Vec<(&Path, &Vec<HlogInterval>)> = inputs
            .iter()
            .filter_map(|(p, i)| match i {
                Input::Hlog(iv) => Some((*p, iv)),
                Input::Json(_) => None,
            })
            .collect();
        if !logs.is_empty() {
            let mut merged = BTreeMap::new();
            let mut all = Vec::new();
            for (p, iv) in &logs {
                merge_intervals(p, iv, &mut merged)?;
                all.extend(iv.iter().cloned());
            }
            let names: Vec<String> = logs.iter().map(|(p, _)| p.display().to_string()).collect();
            let title = format!("merged {} interval logs: {}", logs.len(), names.join(", "));
            render_hlog(&mut out, &title, &all, &summaries(&merged));
        }
        if inputs.iter().any(|(_, i)| matches!(i, Input::Json(_))) {
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(
                out,
                "note: JSON reports hold percentiles, which cannot be merged exactly; listed per file"
            );
        }
    }
    for (p, input) in &inputs {
        match input {
            Input::Json(r) => {
                if !out.is_empty() {
                    out.push('\n');
                }
                render_json(&mut out, p, r, all);
            }
            Input::Hlog(iv) if !merge => {
                if !out.is_empty() {
                    out.push('\n');
                }
                let mut merged = BTreeMap::new();
                merge_intervals(p, iv, &mut merged)?;
                render_hlog(&mut out, &p.display().to_string(), iv, &summaries(&merged));
            }
            Input::Hlog(_) => {}
        }
    }
    Ok(out)
}

/// The HTML page of recorded files (`report FILE... --html`): the
/// percentile curves of every tag, exact from the interval logs (added up
/// across them) or, without one, from the JSON reports' percentiles; the
/// timeline of the first interval log; the counters and stuck groups of the
/// first JSON report.
pub fn html_page(paths: &[PathBuf], max_bytes: u64) -> Result<String, OfflineError> {
    use super::html::{self, Curve, Page};
    if paths.is_empty() {
        return Err(OfflineError::NoInput);
    }
    let mut merged = BTreeMap::new();
    let mut timeline = None;
    let mut first_report: Option<Box<Report>> = None;
    for p in paths {
        match load(p, max_bytes)? {
            Input::Hlog(iv) => {
                merge_intervals(p, &iv, &mut merged)?;
                timeline.get_or_insert_with(|| html::timeline_of_log(&iv));
            }
            Input::Json(r) => {
                first_report.get_or_insert(r);
            }
        }
    }
    let curves = if merged.is_empty() {
        first_report
            .iter()
            .flat_map(|r| &r.histograms)
            .map(Curve::of_summary)
            .collect()
    } else {
        merged.iter().map(|(t, h)| Curve::of(t, h)).collect()
    };
    let page = Page {
        report: first_report.as_deref(),
        curves,
        timeline: timeline.unwrap_or_default(),
        sources: paths.iter().map(|p| p.display().to_string()).collect(),
    };
    Ok(html::render(&page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::hlog::HlogWriter;
    use crate::histograms::Histograms;
    use crate::testutil::TempDir;
    use std::time::{Duration, UNIX_EPOCH};

    fn write_log(path: &Path, comm: &str, values_us: &[u64]) {
        let mut hs = Histograms::new();
        let mut w = HlogWriter::create(
            crate::output::OutputFile::claim(path, None).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        let (a, b) = values_us.split_at(values_us.len() / 2);
        for v in a {
            hs.record_closed(comm, 8080, *v);
        }
        w.write_interval(Duration::ZERO, Duration::from_secs(5), &hs.take_interval())
            .unwrap();
        for v in b {
            hs.record_closed(comm, 8080, *v);
        }
        hs.set_open_ages(&[90_000_000]);
        w.write_interval(
            Duration::from_secs(5),
            Duration::from_secs(5),
            &hs.take_interval(),
        )
        .unwrap();
    }

    fn row<'a>(text: &'a str, tag: &str) -> Vec<&'a str> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(tag))
            .unwrap_or_else(|| panic!("no row {tag} in:\n{text}"))
            .split_whitespace()
            .collect()
    }

    #[test]
    fn formats_durations() {
        use crate::report::fmt_us;
        assert_eq!(fmt_us(0), "0us");
        assert_eq!(fmt_us(999), "999us");
        assert_eq!(fmt_us(1_234), "1.23ms");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(123_456), "123ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
        assert_eq!(fmt_us(125_000_000), "2m05s");
        assert_eq!(fmt_us(89_980_000), "1m30s");
        assert_eq!(fmt_us(3_720_000_000), "1h02m");
    }

    #[test]
    fn hlog_round_trip_counts_and_percentiles() {
        let d = TempDir::new("offline-rt");
        let p = d.0.join("a.hlog");
        let values: Vec<u64> = (1..=1000).collect();
        write_log(&p, "nginx", &values);
        let text = report(std::slice::from_ref(&p), false, 1 << 30).unwrap();
        assert!(
            text.starts_with(&format!("{} (2 intervals over 10.0 s)", p.display())),
            "{text}"
        );
        // tag count min p50 p90 p99 p99.9 max mean
        assert_eq!(
            row(&text, "all"),
            ["all", "1000", "1us", "500us", "900us", "990us", "999us", "1.00ms", "501us"]
        );
        assert_eq!(row(&text, "comm:nginx")[1], "1000");
        assert_eq!(row(&text, "port:8080")[1], "1000");
        assert_eq!(row(&text, "open")[1..3], ["1", "1m30s"]);
        // open comes last
        let last = text.lines().last().unwrap();
        assert!(last.trim_start().starts_with("open"), "{text}");
    }

    #[test]
    fn merge_adds_logs_per_tag() {
        let d = TempDir::new("offline-merge");
        let a = d.0.join("a.hlog");
        let b = d.0.join("b.hlog");
        write_log(&a, "nginx", &[1_000, 2_000]);
        write_log(&b, "redis", &[3_000_000, 4_000_000, 5_000_000, 6_000_000]);
        let text = report(&[a.clone(), b.clone()], true, 1 << 30).unwrap();
        assert!(text.starts_with("merged 2 interval logs: "), "{text}");
        assert_eq!(row(&text, "all")[1], "6");
        assert_eq!(row(&text, "all")[7], "6.00s");
        assert_eq!(row(&text, "comm:nginx")[1], "2");
        assert_eq!(row(&text, "comm:redis")[1], "4");
        assert_eq!(row(&text, "open")[1], "2");
        assert!(!text.contains("JSON"), "{text}");

        // without --merge each log has its own table
        let text = report(&[a, b], false, 1 << 30).unwrap();
        assert_eq!(
            text.matches("(2 intervals over 10.0 s)").count(),
            2,
            "{text}"
        );
    }

    /// One socket held in CLOSE_WAIT over three checkpoints: the log has
    /// three `open` snapshots of the same socket, aged 1, 2 and 3 s.
    fn write_held_log(path: &Path) {
        let mut hs = Histograms::new();
        let mut w = HlogWriter::create(
            crate::output::OutputFile::claim(path, None).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        hs.record_closed("srv", 80, 5_000);
        for k in 0..3u64 {
            hs.set_open_ages(&[(k + 1) * 1_000_000]);
            w.write_interval(
                Duration::from_secs(k),
                Duration::from_secs(1),
                &hs.take_interval(),
            )
            .unwrap();
        }
    }

    #[test]
    fn open_snapshots_are_not_added_across_intervals() {
        let d = TempDir::new("offline-open");
        let a = d.0.join("a.hlog");
        let b = d.0.join("b.hlog");
        write_held_log(&a);
        write_held_log(&b);
        let text = report(std::slice::from_ref(&a), false, 1 << 30).unwrap();
        // the last snapshot: one socket, 3 s old (not 3 sockets)
        assert_eq!(row(&text, "open")[1..3], ["1", "3.00s"], "{text}");
        assert_eq!(row(&text, "all")[1], "1", "{text}");
        // merged logs add their last snapshots
        let text = report(&[a, b], true, 1 << 30).unwrap();
        assert_eq!(row(&text, "open")[1..3], ["2", "3.00s"], "{text}");
        assert_eq!(row(&text, "all")[1], "2", "{text}");
    }

    /// A report as `record` writes it, with a field of a later version.
    fn sample_json() -> String {
        let mut v = serde_json::to_value(crate::model::tests::sample()).unwrap();
        v["future_field"] = true.into();
        v.to_string()
    }

    #[test]
    fn json_report_summary_is_the_live_report() {
        let d = TempDir::new("offline-json");
        let p = d.0.join("r.json");
        std::fs::write(&p, sample_json()).unwrap();
        let text = report(&[p], false, 1 << 30).unwrap();
        assert!(
            text.contains("(JSON report, close-wait.report.v1)"),
            "{text}"
        );
        assert_eq!(
            row(&text, "all"),
            ["all", "2", "5us", "5us", "9us", "9us", "9us", "9us", "7us"]
        );
        // all sorts before port:80 although it came second
        assert!(text.find("    all").unwrap() < text.find("    port:80").unwrap());
        // Then the human report, exactly as the live run rendered it:
        // counters, groups with why and stack, sockets, closed-late.
        let live = crate::report::render(&crate::model::tests::sample(), false);
        assert!(text.ends_with(&live), "{text}\n--- live:\n{live}");
        for needle in [
            "CLOSE_WAIT entered 7,",
            "\nNEVER-READ x1  server[42] <- peer 127.0.0.1  oldest 1.0m",
            "\n  why: 17 bytes arrived that were never read\n",
            "\n  created at:\n    accept4\n",
            "held by server[42] fd 7",
            "\nCLOSED-LATE x1  server[42]",
        ] {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn merge_with_json_says_it_cannot() {
        let d = TempDir::new("offline-mixed");
        let j = d.0.join("r.json");
        std::fs::write(&j, sample_json()).unwrap();
        let h = d.0.join("a.hlog");
        write_log(&h, "x", &[10, 20]);
        let text = report(&[j, h], true, 1 << 30).unwrap();
        assert!(text.contains("cannot be merged exactly"), "{text}");
        assert!(text.contains("merged 1 interval logs"), "{text}");
        assert!(text.contains("(JSON report"), "{text}");
    }

    #[test]
    fn garbage_json_names_file_line_and_column() {
        let d = TempDir::new("offline-garbage");
        let p = d.0.join("bad.json");
        std::fs::write(
            &p,
            "{\n  \"schema\": \"close-wait.report.v1\",\n  \"stuck\": [oops]\n}\n",
        )
        .unwrap();
        let e = report(&[p], false, 1 << 30).unwrap_err();
        assert!(
            matches!(
                e,
                OfflineError::Json(JsonError::Syntax {
                    line: 3,
                    column: 13,
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("bad.json:3:13: invalid JSON report"),
            "{e}"
        );
    }

    #[test]
    fn truncated_json_is_reported_as_truncated() {
        let d = TempDir::new("offline-trunc-json");
        let p = d.0.join("cut.json");
        let full = sample_json();
        // cut after a comma near the middle: a file cut short while being
        // written (a cut inside a number, "1.", is a syntax error instead)
        let cut = full[..full.len() / 2].rfind(',').unwrap() + 1;
        std::fs::write(&p, &full[..cut]).unwrap();
        let e = report(&[p], false, 1 << 30).unwrap_err();
        assert!(
            matches!(e, OfflineError::Json(JsonError::Syntax { line: 1, .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("cut.json:1:"), "{e}");
        assert!(e.to_string().contains("truncated JSON report"), "{e}");
        // the cause is printed once, by the error chain
        assert!(!e.to_string().contains("EOF while parsing"), "{e}");
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chain.matches("EOF while parsing").count(), 1, "{chain}");
    }

    #[test]
    fn wrong_types_and_schema_are_errors() {
        let d = TempDir::new("offline-schema");
        let p = d.0.join("other.json");
        std::fs::write(&p, r#"{"schema": "something.else"}"#).unwrap();
        let e = report(std::slice::from_ref(&p), false, 1 << 30).unwrap_err();
        assert!(
            matches!(e, OfflineError::Json(JsonError::Schema { ref found, .. }) if found == "something.else")
        );
        std::fs::write(&p, r#"{"stuck": []}"#).unwrap();
        let e = report(std::slice::from_ref(&p), false, 1 << 30).unwrap_err();
        assert!(
            matches!(e, OfflineError::Json(JsonError::Schema { ref found, .. }) if found == "(missing)")
        );
        std::fs::write(
            &p,
            "{\"schema\": \"close-wait.report.v1\",\n\"counters\": {\"x\": -1}}",
        )
        .unwrap();
        let e = report(&[p], false, 1 << 30).unwrap_err();
        assert!(
            matches!(e, OfflineError::Json(JsonError::Syntax { line: 2, .. })),
            "{e:?}"
        );
    }

    #[test]
    fn truncated_hlog_names_file_and_line() {
        let d = TempDir::new("offline-trunc-hlog");
        let p = d.0.join("t.hlog");
        write_log(&p, "x", &[10, 20, 30, 40]);
        let full = std::fs::read(&p).unwrap();
        let cut = &full[..full.len() - 10];
        std::fs::write(&p, cut).unwrap();
        let line = cut.iter().filter(|&&b| b == b'\n').count() + 1;
        let e = report(&[p], false, 1 << 30).unwrap_err();
        assert!(
            matches!(e, OfflineError::Hlog(HlogError::Truncated { line: l, .. }) if l == line),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(&format!("t.hlog:{line}: truncated")),
            "{e}"
        );
    }

    #[test]
    fn sniffs_kind_without_extension_and_reports_missing_files() {
        let d = TempDir::new("offline-sniff");
        let j = d.0.join("report");
        std::fs::write(&j, format!("  {}", sample_json())).unwrap();
        assert!(report(&[j], false, 1 << 30)
            .unwrap()
            .contains("(JSON report"));
        let h = d.0.join("log");
        write_log(&h, "x", &[10, 20]);
        assert!(report(&[h], false, 1 << 30)
            .unwrap()
            .contains("(2 intervals"));
        let missing = d.0.join("missing.hlog");
        let e = report(&[missing], false, 1 << 30).unwrap_err();
        assert!(matches!(e, OfflineError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("missing.hlog"), "{e}");
        assert!(matches!(
            report(&[], false, 1 << 30),
            Err(OfflineError::NoInput)
        ));
    }

    #[test]
    fn refuses_non_regular_and_oversized_inputs_without_reading_them() {
        let d = TempDir::new("offline-bounded");
        let fifo = d.0.join("fifo.hlog");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would hang here.
        let e = report(&[fifo], false, 1 << 30).unwrap_err();
        assert!(
            e.to_string().contains("it is a FIFO, not a regular file"),
            "{e}"
        );
        let e = report(std::slice::from_ref(&d.0), false, 1 << 30).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        // A sparse 2 GiB file costs nothing to make and is refused by size.
        let big = d.0.join("big.json");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        let e = report(&[big], false, 256 << 20).unwrap_err();
        assert!(
            e.to_string().contains(
                "2147483648 bytes, over the limit of 268435456 bytes (raise it with --max-bytes)"
            ),
            "{e}"
        );
        // Within the limit, both kinds are read as before.
        let j = d.0.join("r.json");
        std::fs::write(&j, sample_json()).unwrap();
        let limit = std::fs::metadata(&j).unwrap().len();
        assert!(report(std::slice::from_ref(&j), false, limit).is_ok());
        assert!(matches!(
            report(&[j], false, limit - 1),
            Err(OfflineError::TooLarge { .. })
        ));
    }
}
