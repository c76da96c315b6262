//! HdrHistogram interval logs (`.hlog`): one line per interval and tag,
//! readable by HistogramLogProcessor, the `hdrhistogram` package on PyPI and
//! [`read_hlog`].
//!
//! ```text
//! #[Logged with close-wait 0.1.0]
//! #[Histogram log format version 1.3]
//! #[StartTime: 1700000000.123 (seconds since epoch), 2023-11-14T22:13:20.123Z]
//! #[BaseTime: 1700000000.123 (seconds since epoch)]
//! #[Values are CLOSE_WAIT durations in microseconds; Interval_Max is in milliseconds]
//! "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
//! Tag=all,0.000,10.000,1.234,HISTFAAAA...
//! ```
//!
//! Timestamps are seconds since BaseTime (= StartTime, the start of
//! tracing). Histogram values are microseconds; the `Interval_Max` column is
//! divided by 1000 (milliseconds), as HdrHistogram logs usually carry
//! milliseconds there. Every line is tagged, including the overall one
//! (`Tag=all`): HistogramLogProcessor needs `-tag all` to select it.
//!
//! Payloads are "V2 compressed" histograms from the crate's
//! `V2DeflateSerializer`. Lines are formatted here rather than with the
//! crate's `IntervalLogWriter`, which borrows its output for its whole life
//! and can only write a milliseconds max by repeating a `MaxValueDivisor`
//! comment; its parser reads them back.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry, Tag};
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::output::{OutputError, OutputFile};

/// Errors while writing or reading an interval log. Each names the file,
/// and the line where the input is broken. A cause is the error's
/// `source()`, not repeated in its message.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{path}: cannot encode histogram '{tag}'")]
    Encode {
        path: PathBuf,
        tag: String,
        #[source]
        source: hdrhistogram::serialization::V2DeflateSerializeError,
    },
    #[error(
        "{path}: '{tag}' cannot be used as an interval log tag (no ',', spaces or line breaks)"
    )]
    BadTag { path: PathBuf, tag: String },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not an interval log line (expected a comment or Tag=..,start,length,max,payload)")]
    Syntax { path: PathBuf, line: usize },
    #[error(
        "{path}:{line}: truncated line (was the writer killed? every line before it is complete)"
    )]
    Truncated { path: PathBuf, line: usize },
    #[error("{path}:{line}: histogram payload is not base64")]
    Base64 {
        path: PathBuf,
        line: usize,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{path}:{line}: histogram payload cannot be decoded")]
    Payload {
        path: PathBuf,
        line: usize,
        #[source]
        source: hdrhistogram::serialization::DeserializeError,
    },
}

/// Interval log format version written in the header.
pub const LOG_FORMAT_VERSION: &str = "1.3";
/// Histogram values (microseconds) per unit of the `Interval_Max` column
/// (milliseconds).
pub const MAX_VALUE_DIVISOR: f64 = 1000.0;
const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";

/// `secs` since the epoch as an ISO 8601 UTC date with milliseconds.
fn iso8601_utc(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian), by
    // 400-year eras of 146097 days starting on March 1st.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// Writes an interval log as tracing goes. Each call to
/// [`write_interval`](Self::write_interval) writes all its lines at once and
/// flushes, so a `kill -9` loses at most the interval being written.
pub struct HlogWriter<W: Write = File> {
    out: W,
    path: PathBuf,
    serializer: V2DeflateSerializer,
    payload: Vec<u8>,
    text: String,
    /// The claim on the path (its lock), for as long as the log is written.
    claim: Option<OutputFile>,
}

impl HlogWriter<File> {
    /// Puts a fresh log with its header (`start` as StartTime and BaseTime)
    /// at the claimed path; lines are appended to that file from then on.
    pub fn create(mut out: OutputFile, start: SystemTime) -> Result<Self, HlogError> {
        let path = out.path().to_path_buf();
        let file = out.stream(header(start).as_bytes())?;
        let mut w = HlogWriter::with_parts(file, path);
        w.claim = Some(out);
        Ok(w)
    }
}

/// The header lines of a log that starts at `start`.
fn header(start: SystemTime) -> String {
    let since = start.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs_f64();
    format!(
        "#[Logged with close-wait {}]\n\
         #[Histogram log format version {LOG_FORMAT_VERSION}]\n\
         #[StartTime: {secs:.3} (seconds since epoch), {}]\n\
         #[BaseTime: {secs:.3} (seconds since epoch)]\n\
         #[Values are CLOSE_WAIT durations in microseconds; Interval_Max is in milliseconds]\n\
         {LEGEND}\n",
        env!("CARGO_PKG_VERSION"),
        iso8601_utc(since),
    )
}

impl<W: Write> HlogWriter<W> {
    fn with_parts(out: W, path: PathBuf) -> Self {
        HlogWriter {
            out,
            path,
            serializer: V2DeflateSerializer::new(),
            payload: Vec::new(),
            text: String::new(),
            claim: None,
        }
    }

    /// Writes the header to `out`. `path` only names the output in errors.
    pub fn new(out: W, path: &Path, start: SystemTime) -> Result<Self, HlogError> {
        let mut w = HlogWriter::with_parts(out, path.to_path_buf());
        w.emit(header(start).as_bytes())?;
        Ok(w)
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), HlogError> {
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.flush())
            .map_err(|source| {
                HlogError::Output(OutputError::Io {
                    action: "write",
                    path: self.path.clone(),
                    source,
                })
            })
    }

    /// Writes one line per `(tag, histogram)` for the interval that started
    /// `start` after StartTime and lasted `length`, then flushes.
    pub fn write_interval(
        &mut self,
        start: Duration,
        length: Duration,
        hists: &[(String, Histogram<u64>)],
    ) -> Result<(), HlogError> {
        self.text.clear();
        for (tag, h) in hists {
            if Tag::new(tag).is_none() || tag.is_empty() {
                return Err(HlogError::BadTag {
                    path: self.path.clone(),
                    tag: tag.clone(),
                });
            }
            self.payload.clear();
            self.serializer
                .serialize(h, &mut self.payload)
                .map_err(|source| HlogError::Encode {
                    path: self.path.clone(),
                    tag: tag.clone(),
                    source,
                })?;
            let max = h.max() as f64 / MAX_VALUE_DIVISOR;
            self.text.push_str(&format!(
                "Tag={tag},{:.3},{:.3},{max:.3},",
                start.as_secs_f64(),
                length.as_secs_f64()
            ));
            base64::engine::general_purpose::STANDARD.encode_string(&self.payload, &mut self.text);
            self.text.push('\n');
        }
        let text = std::mem::take(&mut self.text);
        let r = self.emit(text.as_bytes());
        self.text = text;
        r
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Gives back the underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One interval histogram read back from a log.
#[derive(Debug, Clone)]
pub struct HlogInterval {
    pub tag: Option<String>,
    /// Start, in seconds since BaseTime (or the epoch when the log has none).
    pub start_s: f64,
    pub dur_s: f64,
    pub hist: Histogram<u64>,
}

/// Reads every interval of the log at `path`. Corrupt or truncated input is
/// an error naming the file and the line.
pub fn read_hlog(path: &Path) -> Result<Vec<HlogInterval>, HlogError> {
    let file = File::open(path).map_err(|source| HlogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_hlog_from(path, std::io::BufReader::new(file))
}

/// Parses interval log text; `path` only names the input in errors.
pub fn parse_hlog(path: &Path, bytes: &[u8]) -> Result<Vec<HlogInterval>, HlogError> {
    parse_hlog_from(path, bytes)
}

/// Parses an interval log line by line from `input`, holding one line at a
/// time.
pub fn parse_hlog_from<R: std::io::BufRead>(
    path: &Path,
    mut input: R,
) -> Result<Vec<HlogInterval>, HlogError> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut idx = 0;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| HlogError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        idx += 1;
        let line = &line[..];
        let lineno = idx;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !line.ends_with(b"\n") {
            return Err(HlogError::Truncated {
                path: path.to_path_buf(),
                line: lineno,
            });
        }
        let syntax = || HlogError::Syntax {
            path: path.to_path_buf(),
            line: lineno,
        };
        let entry = match IntervalLogIterator::new(line).next() {
            None => continue, // comment or legend
            Some(Err(_)) => return Err(syntax()),
            Some(Ok(entry)) => entry,
        };
        let LogEntry::Interval(ilh) = entry else {
            continue; // StartTime / BaseTime: timestamps are kept as written
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(ilh.encoded_histogram().trim_end())
            .map_err(|source| HlogError::Base64 {
                path: path.to_path_buf(),
                line: lineno,
                source,
            })?;
        let hist: Histogram<u64> =
            Deserializer::new()
                .deserialize(&mut &raw[..])
                .map_err(|source| HlogError::Payload {
                    path: path.to_path_buf(),
                    line: lineno,
                    source,
                })?;
        out.push(HlogInterval {
            tag: ilh.tag().map(|t| t.as_str().to_owned()),
            start_s: ilh.start_timestamp().as_secs_f64(),
            dur_s: ilh.duration().as_secs_f64(),
            hist,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histograms::{new_histogram, Histograms};
    use crate::testutil::TempDir;

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
    }

    fn sample_log() -> Vec<u8> {
        let mut hs = Histograms::new();
        let mut w = HlogWriter::new(Vec::new(), Path::new("mem.hlog"), start()).unwrap();
        for v in 1..=100 {
            hs.record_closed("nginx", 8080, v * 1000);
        }
        w.write_interval(Duration::ZERO, Duration::from_secs(10), &hs.take_interval())
            .unwrap();
        // an empty interval, then one with a large value and open sockets
        w.write_interval(
            Duration::from_secs(10),
            Duration::from_secs(10),
            &hs.take_interval(),
        )
        .unwrap();
        hs.record_closed("redis-server", 6379, 3_600_000_000);
        hs.set_open_ages(&[5_000_000, 7_000_000]);
        w.write_interval(
            Duration::from_secs(20),
            Duration::from_millis(2500),
            &hs.take_interval(),
        )
        .unwrap();
        w.into_inner()
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601_utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso8601_utc(Duration::from_millis(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            iso8601_utc(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn header_and_line_layout() {
        let log = String::from_utf8(sample_log()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines[0].starts_with("#[Logged with close-wait "), "{log}");
        assert_eq!(lines[1], "#[Histogram log format version 1.3]");
        assert_eq!(
            lines[2],
            "#[StartTime: 1700000000.123 (seconds since epoch), 2023-11-14T22:13:20.123Z]"
        );
        assert_eq!(
            lines[3],
            "#[BaseTime: 1700000000.123 (seconds since epoch)]"
        );
        assert_eq!(lines[5], LEGEND);
        let first = lines[6];
        assert!(
            first.starts_with("Tag=all,0.000,10.000,100.031,HISTFAA"),
            "{first}"
        );
        assert!(lines
            .iter()
            .any(|l| l.starts_with("Tag=comm:nginx,0.000,10.000,100.031,HISTFAA")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("Tag=all,10.000,10.000,0.000,HISTFAA")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("Tag=open,20.000,2.500,")));
        assert!(log.ends_with('\n'));
    }

    #[test]
    fn round_trip_through_reader() {
        let log = sample_log();
        let iv = parse_hlog(Path::new("mem.hlog"), &log).unwrap();
        let tags: Vec<&str> = iv.iter().map(|i| i.tag.as_deref().unwrap()).collect();
        assert_eq!(
            tags,
            [
                "all",
                "comm:nginx",
                "port:8080",
                "all",
                "all",
                "comm:redis-server",
                "port:6379",
                "open"
            ]
        );
        assert_eq!(iv[0].hist.len(), 100);
        assert_eq!(iv[0].hist.value_at_quantile(0.5), 50_015);
        assert_eq!(iv[0].dur_s, 10.0);
        assert_eq!(iv[3].hist.len(), 0);
        assert_eq!(iv[4].start_s, 20.0);
        assert_eq!(iv[4].dur_s, 2.5);
        assert!(iv[4].hist.equivalent(iv[4].hist.max(), 3_600_000_000));
        assert_eq!(iv[7].hist.len(), 2);
    }

    #[test]
    fn truncated_last_line_names_line() {
        let log = sample_log();
        let cut = &log[..log.len() - 7];
        let lines = cut.iter().filter(|&&b| b == b'\n').count() + 1;
        let e = parse_hlog(Path::new("cut.hlog"), cut).unwrap_err();
        assert!(
            matches!(e, HlogError::Truncated { line, .. } if line == lines),
            "{e:?}"
        );
        assert!(e.to_string().contains(&format!("cut.hlog:{lines}")), "{e}");
    }

    #[test]
    fn corrupt_lines_name_line() {
        let good = String::from_utf8(sample_log()).unwrap();
        let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
        lines[7] = "this is not a log line".to_owned();
        let e = parse_hlog(Path::new("x.hlog"), (lines.join("\n") + "\n").as_bytes()).unwrap_err();
        assert!(matches!(e, HlogError::Syntax { line: 8, .. }), "{e:?}");

        let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
        lines[6] = "Tag=all,0.000,10.000,1.0,HISTFAAA!!!!".to_owned();
        let e = parse_hlog(Path::new("x.hlog"), (lines.join("\n") + "\n").as_bytes()).unwrap_err();
        assert!(matches!(e, HlogError::Base64 { line: 7, .. }), "{e:?}");

        let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
        lines[6] = "Tag=all,0.000,10.000,1.0,SElTVEZBQUFBRVY0".to_owned();
        let e = parse_hlog(Path::new("x.hlog"), (lines.join("\n") + "\n").as_bytes()).unwrap_err();
        assert!(matches!(e, HlogError::Payload { line: 7, .. }), "{e:?}");
        assert!(e.to_string().starts_with("x.hlog:7: "), "{e}");
    }

    #[test]
    fn rejects_bad_tag() {
        let mut w = HlogWriter::new(Vec::new(), Path::new("m"), start()).unwrap();
        let e = w
            .write_interval(
                Duration::ZERO,
                Duration::from_secs(1),
                &[("a b".to_owned(), new_histogram())],
            )
            .unwrap_err();
        assert!(matches!(e, HlogError::BadTag { .. }), "{e:?}");
    }

    #[test]
    fn file_writer_flushes_each_interval() {
        let d = TempDir::new("hlog");
        let p = d.0.join("cw.hlog");
        let mut w =
            HlogWriter::create(crate::output::OutputFile::claim(&p, None).unwrap(), start())
                .unwrap();
        let mut h = new_histogram();
        h.record(42).unwrap();
        w.write_interval(
            Duration::ZERO,
            Duration::from_secs(1),
            &[("all".to_owned(), h)],
        )
        .unwrap();
        // still open: what is on disk must already be complete
        let iv = read_hlog(&p).unwrap();
        assert_eq!(iv.len(), 1);
        assert_eq!(iv[0].hist.max(), 42);
        drop(w);
    }

    /// Decodes a log written by `HlogWriter` with the `hdrhistogram` package
    /// from PyPI (module `hdrh`), an implementation independent of ours.
    #[test]
    fn python_hdrh_decodes_our_log() {
        // The same decoder the integration tests use.
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/helpers/hdrh_decode.py");
        let d = TempDir::new("hlog-py");
        let p = d.0.join("cw.hlog");
        std::fs::write(&p, sample_log()).unwrap();
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let skip = |why: String| {
            assert!(
                !ci,
                "CI=true and {why}; install it with: pip install hdrhistogram"
            );
            eprintln!("skipping: {why} (pip install hdrhistogram)");
        };
        let run = std::process::Command::new("python3")
            .arg(&script)
            .arg(&p)
            .output();
        let out = match run {
            Ok(o) => o,
            Err(e) => return skip(format!("cannot run python3: {e}")),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.code() == Some(3) {
            return skip(format!("python3 cannot import hdrh: {}", stdout.trim()));
        }
        assert!(
            out.status.success(),
            "python3 failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let ours = parse_hlog(&p, &std::fs::read(&p).unwrap()).unwrap();
        let tags = [
            "all",
            "comm:nginx",
            "port:8080",
            "comm:redis-server",
            "port:6379",
            "open",
        ];
        for tag in tags {
            let mine: Vec<&HlogInterval> = ours
                .iter()
                .filter(|i| i.tag.as_deref() == Some(tag))
                .collect();
            let count: u64 = mine.iter().map(|i| i.hist.len()).sum();
            let max = mine.iter().map(|i| i.hist.max()).max().unwrap();
            assert_eq!(got[tag]["lines"], mine.len(), "{tag}: {got}");
            assert_eq!(got[tag]["count"], count, "{tag}: {got}");
            assert_eq!(got[tag]["max"], max, "{tag}: {got}");
        }
        assert_eq!(got["all"]["count"], 101);
        assert_eq!(got["all"]["lines"], 3);
        assert_eq!(got.as_object().unwrap().len(), tags.len(), "{got}");
    }
}
