//! Exports checked end to end against CLOSE_WAIT episodes made for real:
//! the HdrHistogram interval log (.hlog, also decoded by the independent
//! Python `hdrh` package), the JSON report's histograms, the .hgrm
//! percentile text, Prometheus /metrics (scraped by a real Prometheus
//! server), checkpoints that survive `kill -9`, the final flush on SIGTERM,
//! `close-wait report`, and the output path checks.
//!
//! Every episode has a known span: the server closes each connection a
//! planned delay after reading its EOF, and both ends print CLOCK_MONOTONIC
//! times (the kernel side's clock), so the kernel-measured CLOSE_WAIT time
//! of episode i lies in [held_i, closed_i - client_closing_i] (see `Span`),
//! and the k-th smallest duration between the k-th smallest lower and upper
//! bounds. No slack is guessed: a late wake-up (python threads under
//! emulation woke 500 ms late) widens the span it happened in.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use close_wait_tests::*;
use serde_json::Value;

/// Relative error of a value reported by a 3-significant-digit
/// HdrHistogram (lowest/highest equivalent value): at most 1/1024.
const PRECISION: f64 = 0.001;

/// The standard first line of an .hgrm percentile distribution.
const HGRM_HEADER: &str = "       Value     Percentile TotalCount 1/(1-Percentile)";

// ---------------------------------------------------------------- helpers

fn ms(d: &[u64]) -> String {
    d.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// A server that closes connection i `delays[i]` ms after reading its EOF.
fn delayed_server(delays: &[u64]) -> (Proc, u16) {
    server(&[
        "--mode",
        "close-after-eof",
        "--count",
        &delays.len().to_string(),
        "--delays",
        &ms(delays),
        "--linger",
        "60",
    ])
}

/// Where an episode's true CLOSE_WAIT time lies (ms): from what the server
/// held after reading its EOF (the entry came before that read returned,
/// the move to LAST_ACK after the hold) to the span from the client's
/// close() call (the FIN leaves after it) to the server's close() return.
/// Both ends read CLOCK_MONOTONIC, the clock the kernel side stamps with.
type Span = (f64, f64);

/// Connects `n` times from a separate client process and waits until the
/// server has closed them all. Returns (local, remote) of each accepted
/// connection, in accept order (= the order of the server's delays), and
/// the span of each episode.
fn make_episodes(srv: &Proc, port: u16, n: usize) -> (Vec<(String, String)>, Vec<Span>) {
    let cli = peer(
        "client",
        &[
            "--connect",
            &format!("127.0.0.1:{port}"),
            "--count",
            &n.to_string(),
        ],
    );
    let tuples: Vec<(String, String)> = (0..n)
        .map(|_| {
            let (_, local, remote) =
                parse_accepted(&srv.expect("accepted", Duration::from_secs(10)));
            (local, remote)
        })
        .collect();
    cli.expect("done", Duration::from_secs(10));
    srv.expect("done", Duration::from_secs(20));
    // "closing local ADDR at T" (client), "held I ms H closed at T"
    // (server, every handler before its "done").
    let words = |l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let closing: std::collections::HashMap<String, f64> = cli
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(words)
        .filter(|w| w.len() == 5 && w[0] == "closing")
        .map(|w| (w[2].clone(), w[4].parse().unwrap()))
        .collect();
    let mut spans = vec![(f64::NAN, f64::NAN); n];
    for w in srv.seen.lock().unwrap().iter().map(words) {
        if w.len() == 7 && w[0] == "held" {
            let i: usize = w[1].parse().unwrap();
            let closed: f64 = w[6].parse().unwrap();
            let cli_closing = closing
                .get(&tuples[i].1)
                .unwrap_or_else(|| panic!("no client close of {}: {closing:?}", tuples[i].1));
            spans[i] = (w[3].parse().unwrap(), (closed - cli_closing) * 1000.0);
        }
    }
    assert!(
        spans.iter().all(|(lo, hi)| lo.is_finite() && hi >= lo),
        "spans: {spans:?}"
    );
    // Let the last events reach the ring buffer.
    std::thread::sleep(Duration::from_millis(300));
    (tuples, spans)
}

/// Asserts `got_us` lies in [lo_ms, hi_ms] widened by HdrHistogram's
/// precision.
fn within(what: &str, got_us: f64, lo_ms: f64, hi_ms: f64) {
    let lo = lo_ms * 1000.0 * (1.0 - PRECISION);
    let hi = hi_ms * 1000.0 * (1.0 + PRECISION);
    assert!(
        (lo..=hi).contains(&got_us),
        "{what} = {got_us} us, expected within [{lo}, {hi}] us"
    );
}

/// Bounds (ms) of the k-th smallest (1-based) duration: when each value
/// lies in its span, the k-th smallest lies between the k-th smallest
/// lower and the k-th smallest upper bound.
fn rank(spans: &[Span], k: usize) -> Span {
    let mut lo: Vec<f64> = spans.iter().map(|s| s.0).collect();
    let mut hi: Vec<f64> = spans.iter().map(|s| s.1).collect();
    lo.sort_unstable_by(f64::total_cmp);
    hi.sort_unstable_by(f64::total_cmp);
    (lo[k - 1], hi[k - 1])
}

/// Rank of HdrHistogram's value at quantile q among n values.
fn rank_of(q: f64, n: usize) -> usize {
    ((q * n as f64).ceil() as usize).max(1)
}

/// Checks count, min, max, p50 and p90 of a histogram of episodes with
/// these spans.
fn check_summary(what: &str, spans: &[Span], count: u64, min: f64, max: f64, p50: f64, p90: f64) {
    let n = spans.len();
    assert_eq!(count, n as u64, "{what}: count");
    let (lo, hi) = rank(spans, 1);
    within(&format!("{what} min"), min, lo, hi);
    let (lo, hi) = rank(spans, n);
    within(&format!("{what} max"), max, lo, hi);
    let (lo, hi) = rank(spans, rank_of(0.5, n));
    within(&format!("{what} p50"), p50, lo, hi);
    let (lo, hi) = rank(spans, rank_of(0.9, n));
    within(&format!("{what} p90"), p90, lo, hi);
}

/// The JSON report's histogram summary of `tag`.
fn json_hist<'a>(json: &'a Value, tag: &str) -> &'a Value {
    json["histograms"]
        .as_array()
        .unwrap_or_else(|| panic!("report has no histograms: {json}"))
        .iter()
        .find(|h| h["tag"] == tag)
        .unwrap_or_else(|| panic!("no histogram '{tag}' in {}", json["histograms"]))
}

fn check_json_summary(json: &Value, tag: &str, spans: &[Span]) {
    let h = json_hist(json, tag);
    let f = |k: &str| {
        h[k].as_f64()
            .unwrap_or_else(|| panic!("{tag}: no {k} in {h}"))
    };
    check_summary(
        &format!("JSON {tag}"),
        spans,
        h["count"].as_u64().unwrap(),
        f("min_us"),
        f("max_us"),
        f("p50_us"),
        f("p90_us"),
    );
}

/// The per-tag figures the Python `hdrh` package (PyPI `hdrhistogram`)
/// decodes from `hlog`, intervals added up (tests/helpers/hdrh_decode.py):
/// tag -> {lines, count, min, max, p50, p90} in microseconds. None (skip)
/// outside CI when python3 or hdrh is missing.
fn hdrh_decode(hlog: &Path) -> Option<Value> {
    let skip = |why: String| {
        assert!(
            !in_ci(),
            "CI=true and {why}: install it with `pip install hdrhistogram`"
        );
        eprintln!("skipping the hdrh checks: {why} (pip install hdrhistogram)");
        None
    };
    let out = match Command::new("python3")
        .arg(helper("hdrh_decode.py"))
        .arg(hlog)
        .output()
    {
        Ok(o) => o,
        Err(e) => return skip(format!("cannot run python3: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(3) {
        return skip(format!("python3 cannot import hdrh: {}", stdout.trim()));
    }
    assert!(
        out.status.success(),
        "hdrh could not decode {}: {stdout}{}",
        hlog.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}")))
}

fn check_hdrh_summary(py: &Value, tag: &str, spans: &[Span]) {
    let h = &py[tag];
    let f = |k: &str| {
        h[k].as_f64()
            .unwrap_or_else(|| panic!("hdrh {tag}: no {k} in {py}"))
    };
    check_summary(
        &format!("hdrh {tag}"),
        spans,
        h["count"].as_u64().unwrap(),
        f("min"),
        f("max"),
        f("p50"),
        f("p90"),
    );
}

/// Interval lines of `tag` in an .hlog file.
fn hlog_lines(hlog: &Path, tag: &str) -> Vec<String> {
    fs::read_to_string(hlog)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("Tag={tag},")))
        .map(str::to_owned)
        .collect()
}

/// `close-wait report ARGS`.
fn report(args: &[&Path], merge: bool) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("report").args(args);
    if merge {
        cmd.arg("--merge");
    }
    cmd.output().expect("run close-wait report")
}

/// The row of `tag` in `close-wait report` output: tag count min p50 p90
/// p99 p99.9 max mean.
fn report_row(text: &str, tag: &str) -> Vec<String> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(tag))
        .unwrap_or_else(|| panic!("no row '{tag}' in:\n{text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A duration as `close-wait report` prints it ("527ms", "1.04s", "999us")
/// in microseconds.
fn parse_fmt_us(s: &str) -> f64 {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        panic!("not a duration: {s}")
    };
    num.parse::<f64>()
        .unwrap_or_else(|e| panic!("not a duration: {s}: {e}"))
        * mult
}

/// Checks the report row of `tag`: exact count, and p50 and max within the
/// bounds (the table has 3 significant digits: 0.5% more slack).
fn check_report_row(text: &str, tag: &str, spans: &[Span]) {
    let row = report_row(text, tag);
    assert_eq!(row[1], spans.len().to_string(), "count of {tag}:\n{text}");
    let n = spans.len();
    for (i, what, k) in [(3, "p50", rank_of(0.5, n)), (7, "max", n)] {
        let (lo, hi) = rank(spans, k);
        within(
            &format!("report {tag} {what}"),
            parse_fmt_us(&row[i]),
            lo * 0.995,
            hi * 1.005,
        );
    }
}

fn stderr_one_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    err
}

/// A tracer on `port` writing `cw.hlog` and `cw.hgrm` into a temp dir of
/// its own (returned first) every `interval`, with `extra` flags.
fn tracer_with_files(
    tag: &str,
    port: u16,
    interval: &str,
    extra: &[&str],
) -> (TempDir, PathBuf, PathBuf, Tracer) {
    let out = tempdir(tag);
    let hlog = out.join("cw.hlog");
    let hgrm = out.join("cw.hgrm");
    let port = port.to_string();
    let mut args = vec![
        "-L",
        &port,
        "--hlog",
        hlog.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend(["--interval", interval]);
    let tracer = Tracer::start(&args);
    (out, hlog, hgrm, tracer)
}

/// The JSON report at `path` (`what` says where it should come from).
fn json_on_disk(path: &Path, what: &str) -> Value {
    let text = fs::read_to_string(path).expect(what);
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(json["schema"], "close-wait.report.v1");
    json
}

/// Checks an .hgrm file: the standard header, rows, and the footer's count.
fn check_hgrm(path: &Path, count: usize, max_bounds_ms: (f64, f64)) {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("no .hgrm at {}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], HGRM_HEADER, "{text}");
    assert_eq!(lines[1], "", "{text}");
    let total = lines
        .iter()
        .find_map(|l| l.strip_prefix("#[Max     ="))
        .unwrap_or_else(|| panic!("no Max footer: {text}"));
    // "#[Max     =     1035.263, Total count    =           20]"
    let (max, rest) = total.split_once(',').unwrap();
    let n: usize = rest
        .trim_end_matches(']')
        .rsplit('=')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, count, "{text}");
    let max_ms: f64 = max.trim().parse().unwrap();
    within(
        "hgrm max",
        max_ms * 1000.0,
        max_bounds_ms.0,
        max_bounds_ms.1,
    );
    if count == 0 {
        assert_eq!(lines.len(), 5, "an empty histogram has no rows: {text}");
        return;
    }
    // the last row is the 100% row holding every value
    let last = lines
        .iter()
        .rev()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(last[1], "1.000000000000", "{text}");
    assert_eq!(last[2], count.to_string(), "{text}");
    assert!(lines.last().unwrap().starts_with("#[Buckets ="), "{text}");
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ------------------------------------------------------------------ tests

/// Requirements 1 and 2: 20 episodes of known durations (50..1000 ms) in
/// the .hlog (decoded by hdrh and by `close-wait report`), the JSON
/// histograms and episodes, and the .hgrm.
#[test]
fn histograms_hold_the_known_close_delays() {
    if !privileged("histograms_hold_the_known_close_delays") {
        return;
    }
    let delays: Vec<u64> = (1..=20).map(|i| i * 50).collect();
    // The kernel skips a program's run nested in itself on one CPU (a
    // softirq's state change arriving while the program runs, seen under
    // emulation), counted by the tool as lost_skipped_runs. Those events
    // never reached the tool; a run that lost only them is made again, at
    // most twice. Any other loss fails at once.
    let mut attempt = 1;
    let (srv, port, out, hlog, hgrm, json_path, (tuples, spans), fin) = loop {
        let (srv, port) = delayed_server(&delays);
        let (out, hlog, hgrm, tracer) =
            tracer_with_files("exports-e2e", port, "1s", &["--hgrm-per-tag"]);
        let json_path = tracer.json.clone();
        let episodes = make_episodes(&srv, port, delays.len());
        let fin = stop_ok(tracer);
        let c = &fin.json["counters"];
        let lost = c["lost_events"].as_u64().unwrap_or(0);
        if attempt < 3 && lost > 0 && c["lost_skipped_runs"].as_u64() == Some(lost) {
            eprintln!("attempt {attempt}: the kernel skipped {lost} runs, made again: {c}");
            attempt += 1;
            continue;
        }
        break (srv, port, out, hlog, hgrm, json_path, episodes, fin);
    };
    let json = &fin.json;

    // Each episode, by its exact 4-tuple, lies in its span, and the server
    // held it at least its delay.
    for (((local, remote), &(lo, hi)), d) in tuples.iter().zip(&spans).zip(&delays) {
        assert!(lo >= *d as f64 - 1.0, "held {lo} ms, delay {d} ms");
        let ep = one(json, "episodes", local, remote);
        assert_eq!(ep["ending"], "graceful", "{ep}");
        assert_eq!(ep["closer"]["pid"], srv.pid(), "{ep}");
        let got = ep["duration_ms"].as_f64().unwrap();
        within(
            &format!("episode {local} <- {remote}"),
            got * 1000.0,
            lo,
            hi,
        );
    }
    assert_eq!(
        json["counters"]["close_wait_entered"], 20,
        "{}",
        json["counters"]
    );
    assert_eq!(
        json["counters"]["closed_graceful"], 20,
        "{}",
        json["counters"]
    );
    assert_eq!(json["counters"]["lost_events"], 0, "{}", json["counters"]);

    // JSON histograms: all, per comm, per port.
    let port_tag = format!("port:{port}");
    for tag in ["all", "comm:python3", port_tag.as_str()] {
        check_json_summary(json, tag, &spans);
    }
    let all = json_hist(json, "all");
    eprintln!(
        "JSON all: count {} min {} p50 {} p90 {} max {} us (delays 50..1000 ms)",
        all["count"], all["min_us"], all["p50_us"], all["p90_us"], all["max_us"]
    );

    // The .hlog: one complete line per tag and interval (1 s apart).
    let all_lines = hlog_lines(&hlog, "all");
    assert!(all_lines.len() >= 2, "intervals: {all_lines:?}");
    if let Some(py) = hdrh_decode(&hlog) {
        eprintln!("hdrh: {py}");
        assert_eq!(py["all"]["lines"], all_lines.len(), "{py}");
        for tag in ["all", "comm:python3", port_tag.as_str()] {
            check_hdrh_summary(&py, tag, &spans);
        }
        // open ages never mix with closed durations
        let tags: Vec<&String> = py.as_object().unwrap().keys().collect();
        assert!(
            tags.iter()
                .all(|t| ["all", "comm:python3", &port_tag, "open"].contains(&t.as_str())),
            "unexpected tags: {tags:?}"
        );
    }

    // close-wait report reads the .hlog and the JSON back.
    let rep = report(&[&hlog, &json_path], false);
    let text = String::from_utf8_lossy(&rep.stdout);
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let (hlog_part, json_part) = text
        .split_once("(JSON report")
        .unwrap_or_else(|| panic!("no JSON part: {text}"));
    for part in [hlog_part, json_part] {
        for tag in ["all", "comm:python3", port_tag.as_str()] {
            check_report_row(part, tag, &spans);
        }
    }

    // The .hgrm of all episodes.
    check_hgrm(&hgrm, 20, rank(&spans, 20));
    // --hgrm-per-tag: one file per tag next to it, same episodes.
    for tag in ["comm_python3".to_string(), format!("port_{port}")] {
        let per = out.join(format!("cw.hgrm.{tag}.hgrm"));
        check_hgrm(&per, 20, rank(&spans, 20));
    }
}

/// A Prometheus server on a loopback port scraping `target` every second,
/// with its data in a temp dir. Killed on drop (Proc).
struct PromServer {
    _proc: Proc,
    addr: String,
    log: PathBuf,
    /// Its config, data and log; removed after the server is killed.
    _dir: TempDir,
}

impl PromServer {
    /// None (skip) outside CI when the prometheus binary is missing.
    fn start(target: &str) -> Option<PromServer> {
        let exe = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(exe) = exe else {
            assert!(
                !in_ci(),
                "CI=true and no prometheus binary: install it with `apt-get install prometheus`"
            );
            eprintln!("skipping the Prometheus server checks: apt-get install prometheus");
            return None;
        };
        let dir = tempdir("prometheus");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: close-wait\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_loopback_port());
        let log = dir.join("prometheus.log");
        let proc = Proc::spawn(
            "prometheus",
            Command::new(exe)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stderr(fs::File::create(&log).unwrap()),
        );
        Some(PromServer {
            _proc: proc,
            addr,
            _dir: dir,
            log,
        })
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the query API until `query` returns one series with value
    /// `want` (bounded).
    fn wait_value(&self, query: &str, want: f64, timeout: Duration) -> Value {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let end = Instant::now() + timeout;
        let mut last: String;
        loop {
            match http_get_plain(&self.addr, &path) {
                Ok((200, body)) => {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let result = &v["data"]["result"];
                    if result.as_array().is_some_and(|r| r.len() == 1)
                        && result[0]["value"][1]
                            .as_str()
                            .and_then(|s| s.parse::<f64>().ok())
                            == Some(want)
                    {
                        return result[0].clone();
                    }
                    last = body;
                }
                Ok((code, body)) => last = format!("HTTP {code}: {body}"),
                Err(e) => last = e,
            }
            if Instant::now() > end {
                panic!(
                    "Prometheus: '{query}' did not return {want} within {timeout:?}; last answer: {last}\nprometheus log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Requirement 3: /metrics shows the counts the test caused, and a real
/// Prometheus server scrapes them.
#[test]
fn prometheus_metrics_count_what_happened() {
    if !privileged("prometheus_metrics_count_what_happened") {
        return;
    }
    let metrics_addr = format!("127.0.0.1:{}", free_loopback_port());
    // Prometheus takes a moment to start: do it first.
    let prom = PromServer::start(&metrics_addr);

    // Five episodes that close (20..80 ms and 600 ms) and one socket spans.
    let delays = [20, 40, 60, 80, 600];
    let (srv, port) = delayed_server(&delays);
    let (held_srv, held_port) = server(&["--mode", "hold", "--hold", "60"]);
    let hlog_dir = tempdir("exports-prom");
    let hlog = hlog_dir.join("cw.hlog");
    let tracer = Tracer::start(&[
        "-L",
        &port.to_string(),
        "-L",
        &held_port.to_string(),
        "--prometheus",
        &metrics_addr,
        "--interval",
        "1s",
        "--hlog",
        hlog.to_str().unwrap(),
    ]);
    let (_, spans) = make_episodes(&srv, port, delays.len());
    let held_cli = peer("client", &["--connect", &format!("127.0.0.1:{held_port}")]);
    let (_, held_local, held_remote) =
        parse_accepted(&held_srv.expect("accepted", Duration::from_secs(10)));
    held_cli.expect("done", Duration::from_secs(10));
    wait_for(
        "the spans socket in CLOSE-WAIT",
        Duration::from_secs(5),
        || (socket_state(&held_local, &held_remote).as_deref() == Some("CLOSE-WAIT")).then_some(()),
    );

    // The gauge is refreshed at each checkpoint (1 s).
    let port_s = port.to_string();
    let dur_labels = [("comm", "python3"), ("port", port_s.as_str())];
    let body = wait_for(
        "/metrics with the spans socket",
        Duration::from_secs(10),
        || {
            let (code, body) = http_get_plain(&metrics_addr, "/metrics").ok()?;
            assert_eq!(code, 200, "{body}");
            (metric_sample(&body, "close_wait_sockets", &[]) == Some(1.0)).then_some(body)
        },
    );
    let get = |name: &str, labels: &[(&str, &str)]| {
        metric_sample(&body, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in /metrics:\n{body}"))
    };
    assert_eq!(get("close_wait_entered_total", &[]), 6.0, "{body}");
    assert_eq!(get("close_wait_closed_total", &[("how", "graceful")]), 5.0);
    assert_eq!(get("close_wait_closed_total", &[("how", "abort")]), 0.0);
    assert_eq!(
        get("close_wait_closed_total", &[("how", "peer_reset")]),
        0.0
    );
    assert_eq!(get("close_wait_duration_seconds_count", &dur_labels), 5.0);
    let sum = get("close_wait_duration_seconds_sum", &dur_labels);
    let (lo, hi) = spans
        .iter()
        .fold((0.0, 0.0), |(l, h), s| (l + s.0 / 1000.0, h + s.1 / 1000.0));
    assert!(
        (lo * (1.0 - PRECISION)..=hi * (1.0 + PRECISION)).contains(&sum),
        "sum {sum} s, spans add up to [{lo}, {hi}] s"
    );
    // Bucket placement: at least the spans that end under a bound, at most
    // those that start under it.
    for le in ["0.01", "0.5", "1.0", "+Inf"] {
        let bound = le.parse::<f64>().unwrap_or(f64::INFINITY) * 1000.0;
        let surely = spans.iter().filter(|s| s.1 <= bound).count() as f64;
        let maybe = spans.iter().filter(|s| s.0 <= bound).count() as f64;
        let mut l = dur_labels.to_vec();
        l.push(("le", le));
        let n = get("close_wait_duration_seconds_bucket", &l);
        assert!(
            (surely..=maybe).contains(&n),
            "le={le}: {n}, spans {spans:?}"
        );
    }
    assert_eq!(get("close_wait_lost_events_total", &[]), 0.0);
    eprintln!(
        "/metrics: entered 6, graceful 5, duration sum {sum:.3} s (spans [{lo:.3}, {hi:.3}] s)"
    );

    // A real Prometheus server scraped the same figures.
    if let Some(prom) = prom {
        let q = format!("close_wait_entered_total{{instance=\"{metrics_addr}\"}}");
        let r = prom.wait_value(&q, 6.0, Duration::from_secs(40));
        assert_eq!(r["metric"]["job"], "close-wait", "{r}");
        eprintln!("Prometheus {}: {r}", prom.addr);
        let q = format!(
            "close_wait_duration_seconds_count{{instance=\"{metrics_addr}\",comm=\"python3\",port=\"{port}\"}}"
        );
        prom.wait_value(&q, 5.0, Duration::from_secs(10));
        let q = format!("close_wait_sockets{{instance=\"{metrics_addr}\"}}");
        prom.wait_value(&q, 1.0, Duration::from_secs(10));
    }
    let _fin = stop_ok(tracer);

    // `open` is a snapshot, not events: only the final interval carries it
    // (so summing intervals never counts a socket twice), with the spans
    // socket in it; the offline report counts it once.
    let all_lines = hlog_lines(&hlog, "all");
    let open_lines = hlog_lines(&hlog, "open");
    assert_eq!(open_lines.len(), 1, "{open_lines:?}");
    assert!(
        all_lines.len() >= 2,
        "expected several intervals: {all_lines:?}"
    );
    let last_all_start = all_lines.last().unwrap().split(',').nth(1).unwrap();
    assert_eq!(
        open_lines[0].split(',').nth(1).unwrap(),
        last_all_start,
        "open is not in the final interval: {open_lines:?} vs {all_lines:?}"
    );
    assert_ne!(
        open_lines[0].split(',').nth(3),
        Some("0.000"),
        "{open_lines:?}"
    );
    let rep = report(&[&hlog], false);
    let text = String::from_utf8_lossy(&rep.stdout);
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    assert_eq!(report_row(&text, "open")[1], "1", "{text}");
    check_report_row(&text, "all", &spans);
}

/// Checks the interval lines of `tag`: contiguous (each starts where the
/// previous ended) from 0. Returns (number of lines, end of the last one in
/// seconds since the start).
fn check_contiguous(hlog: &Path, tag: &str) -> (usize, f64) {
    let lines = hlog_lines(hlog, tag);
    let mut end = 0.0f64;
    for l in &lines {
        let f: Vec<&str> = l.split(',').collect();
        let start: f64 = f[1].parse().unwrap();
        let len: f64 = f[2].parse().unwrap();
        assert!(
            (start - end).abs() <= 0.002,
            "interval starts at {start}, previous ended at {end}: {lines:?}"
        );
        end = start + len;
    }
    (lines.len(), end)
}

/// Requirement 4: with --interval 1s, what is on disk when the tracer is
/// killed with SIGKILL parses and holds every interval before the kill.
#[test]
fn checkpoints_survive_kill_9() {
    if !privileged("checkpoints_survive_kill_9") {
        return;
    }
    let delays = [100, 200, 300];
    let (srv, port) = delayed_server(&delays);
    let (_out, hlog, hgrm, mut tracer) = tracer_with_files("exports-kill", port, "1s", &[]);
    let started = Instant::now();
    let (tuples, spans) = make_episodes(&srv, port, delays.len());
    // More than two checkpoints after the last episode.
    std::thread::sleep(Duration::from_millis(2500));
    let ran = started.elapsed().as_secs_f64();
    signal(tracer.pid(), libc::SIGKILL);
    let status = tracer.proc.wait(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    // The JSON of the last checkpoint.
    let json = json_on_disk(&tracer.json, "JSON checkpoint on disk");
    assert_eq!(
        json["counters"]["close_wait_entered"], 3,
        "{}",
        json["counters"]
    );
    assert_eq!(
        json["counters"]["closed_graceful"], 3,
        "{}",
        json["counters"]
    );
    for (local, remote) in &tuples {
        assert_eq!(one(&json, "episodes", local, remote)["ending"], "graceful");
    }
    check_json_summary(&json, "all", &spans);

    // The .hlog: every interval up to the kill, contiguous, complete.
    let (n, end) = check_contiguous(&hlog, "all");
    assert!(
        n as f64 >= ran.floor() - 1.0 && (n as f64) <= ran.ceil() + 1.0,
        "{n} intervals of 1 s in a {ran:.1} s run"
    );
    assert!(
        end >= ran - 1.5 && end <= ran + 1.0,
        "log ends at {end} s, killed at {ran:.1} s"
    );
    assert!(fs::read(&hlog).unwrap().ends_with(b"\n"));
    if let Some(py) = hdrh_decode(&hlog) {
        assert_eq!(py["all"]["lines"], n, "{py}");
        check_hdrh_summary(&py, "all", &spans);
    }
    let rep = report(&[&hlog], false);
    let text = String::from_utf8_lossy(&rep.stdout);
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    check_report_row(&text, "all", &spans);
    check_report_row(&text, &format!("port:{port}"), &spans);

    // The .hgrm of the last checkpoint.
    check_hgrm(&hgrm, 3, rank(&spans, 3));
    eprintln!("kill -9 after {ran:.1} s: {n} intervals on disk, ending at {end:.3} s");
}

/// Requirement 5: SIGTERM writes the last interval and every file, and
/// exits 0. With --interval 60s no checkpoint ran before, so everything
/// comes from the final flush.
#[test]
fn sigterm_flushes_every_output() {
    if !privileged("sigterm_flushes_every_output") {
        return;
    }
    let delays = [100, 200, 300, 400];
    let (srv, port) = delayed_server(&delays);
    let (_out, hlog, hgrm, mut tracer) = tracer_with_files("exports-term", port, "60s", &[]);
    let started = Instant::now();
    let (_, spans) = make_episodes(&srv, port, delays.len());
    // Nothing flushed yet: header only, no JSON, no hgrm.
    assert!(hlog_lines(&hlog, "all").is_empty());
    assert!(!tracer.json.exists() && !hgrm.exists());

    signal(tracer.pid(), libc::SIGTERM);
    let status = tracer.proc.wait(Duration::from_secs(30));
    let ran = started.elapsed().as_secs_f64();
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {:?}",
        tracer.stderr_seen.lock().unwrap()
    );
    std::thread::sleep(Duration::from_millis(50));
    let stdout = tracer.proc.seen.lock().unwrap().join("\n");
    assert!(!stdout.is_empty(), "no human report on stdout");

    let json = json_on_disk(&tracer.json, "JSON written on SIGTERM");
    assert_eq!(
        json["counters"]["closed_graceful"], 4,
        "{}",
        json["counters"]
    );
    check_json_summary(&json, "all", &spans);

    // One interval, from the start to the signal.
    let (n, end) = check_contiguous(&hlog, "all");
    assert_eq!(n, 1, "{:?}", hlog_lines(&hlog, "all"));
    assert!(
        end >= ran - 1.0 && end <= ran + 1.0,
        "interval ends at {end} s, run {ran:.1} s"
    );
    if let Some(py) = hdrh_decode(&hlog) {
        check_hdrh_summary(&py, "all", &spans);
        check_hdrh_summary(&py, "comm:python3", &spans);
    }
    check_hgrm(&hgrm, 4, rank(&spans, 4));
}

/// Requirement 6: `close-wait report` on real outputs: per-tag percentiles,
/// --merge of two logs adds counts per tag, and broken files fail with one
/// line naming the file and line.
#[test]
fn report_reads_merges_and_rejects_broken_files() {
    if !privileged("report_reads_merges_and_rejects_broken_files") {
        return;
    }
    // Two tracers at once, each on its own server.
    let (da, db) = ([100, 200, 300], [400, 500, 600, 700]);
    let (srv_a, port_a) = delayed_server(&da);
    let (srv_b, port_b) = delayed_server(&db);
    let out = tempdir("exports-report");
    let (hlog_a, hlog_b) = (out.join("a.hlog"), out.join("b.hlog"));
    let start = |port: u16, hlog: &Path| {
        Tracer::start(&[
            "-L",
            &port.to_string(),
            "--hlog",
            hlog.to_str().unwrap(),
            "--interval",
            "1s",
        ])
    };
    let (ta, tb) = (start(port_a, &hlog_a), start(port_b, &hlog_b));
    let json_a = ta.json.clone();
    let (_, ha) = make_episodes(&srv_a, port_a, da.len());
    let (_, hb) = make_episodes(&srv_b, port_b, db.len());
    // Kept until the end: each run's directory holds its JSON report.
    let _finished: Vec<Finished> = [ta, tb].into_iter().map(stop_ok).collect();

    // Good files: per-tag percentiles.
    let rep = report(&[&hlog_a, &json_a], false);
    let text = String::from_utf8_lossy(&rep.stdout).into_owned();
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let (log_part, json_part) = text.split_once("(JSON report").unwrap();
    assert!(
        log_part.starts_with(&format!("{} (", hlog_a.display())),
        "{text}"
    );
    for part in [log_part, json_part] {
        check_report_row(part, "all", &ha);
        check_report_row(part, "comm:python3", &ha);
        check_report_row(part, &format!("port:{port_a}"), &ha);
        assert!(!part.contains(&format!("port:{port_b}")), "{text}");
    }

    // --merge adds the two logs per tag.
    let rep = report(&[&hlog_a, &hlog_b], true);
    let text = String::from_utf8_lossy(&rep.stdout).into_owned();
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    assert!(text.starts_with("merged 2 interval logs: "), "{text}");
    let both: Vec<Span> = ha.iter().chain(&hb).copied().collect();
    check_report_row(&text, "all", &both);
    check_report_row(&text, "comm:python3", &both);
    check_report_row(&text, &format!("port:{port_a}"), &ha);
    check_report_row(&text, &format!("port:{port_b}"), &hb);
    eprintln!("report --merge:\n{text}");

    // A log cut in the middle of its last line.
    let full = fs::read(&hlog_a).unwrap();
    let cut_at = full.len() - 10;
    let cut = out.join("cut.hlog");
    fs::write(&cut, &full[..cut_at]).unwrap();
    let line = full[..cut_at].iter().filter(|&&b| b == b'\n').count() + 1;
    let rep = report(&[&cut], false);
    assert_eq!(rep.status.code(), Some(1));
    let err = stderr_one_line(&rep);
    assert!(
        err.contains(&format!("{}:{line}: truncated", cut.display())),
        "{err}"
    );
    assert!(rep.stdout.is_empty());

    // A real JSON report with garbage on its line 3.
    let good = fs::read_to_string(&json_a).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines[2] = "  \"counters\": {oops";
    let bad = out.join("bad.json");
    fs::write(&bad, lines.join("\n")).unwrap();
    let rep = report(&[&bad], false);
    assert_eq!(rep.status.code(), Some(1));
    let err = stderr_one_line(&rep);
    assert!(
        err.contains(&format!("{}:3:", bad.display())) && err.contains("invalid JSON report"),
        "{err}"
    );
    // A JSON report cut in half.
    let half = out.join("half.json");
    fs::write(&half, &good[..good.len() / 2]).unwrap();
    let rep = report(&[&half], false);
    assert_eq!(rep.status.code(), Some(1));
    let err = stderr_one_line(&rep);
    assert!(
        err.contains(&half.display().to_string()) && err.contains("truncated JSON report"),
        "{err}"
    );
    // The cause is said once.
    assert_eq!(err.matches("EOF while parsing").count(), 1, "{err}");
    // One bad file among good ones still fails.
    let rep = report(&[&hlog_a, &cut], true);
    assert_eq!(rep.status.code(), Some(1));
    assert!(stderr_one_line(&rep).contains("cut.hlog"));
}

/// Requirement 7: output paths are checked before attaching, and a symlink
/// at an output path is never followed.
#[test]
fn output_paths_are_checked_and_symlinks_not_followed() {
    if !privileged("output_paths_are_checked_and_symlinks_not_followed") {
        return;
    }
    // A missing directory: one line naming the path, before the privilege
    // check (as nobody, the path is what is reported) and before attaching.
    let started = Instant::now();
    let out = Command::new(bin())
        .args([
            "record",
            "--hlog",
            "/nonexistent/x.hlog",
            "--duration",
            "5s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_one_line(&out);
    assert!(
        err.contains("/nonexistent/x.hlog") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("tracing"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(bin())
        .args(["record", "--hlog", "/nonexistent/x.hlog"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_one_line(&out);
    assert!(err.contains("/nonexistent/x.hlog"), "{err}");

    // A symlink planted at an output path before the run is refused.
    let dir = tempdir("exports-links");
    let victim = dir.join("victim");
    fs::write(&victim, b"precious\n").unwrap();
    for flag in ["--json", "--hlog", "--hgrm"] {
        let link = dir.join(format!("link{flag}"));
        symlink(&victim, &link).unwrap();
        let out = Command::new(bin())
            .args(["record", "--duration", "2s", flag])
            .arg(&link)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag} accepted a symlink");
        let err = stderr_one_line(&out);
        assert!(
            err.contains(&link.display().to_string()) && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    }

    // A symlink planted during the run (between checkpoints) is replaced,
    // not followed.
    let hgrm = dir.join("cw.hgrm");
    let tracer = Tracer::start(&[
        "-L",
        "1",
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--interval",
        "1s",
    ]);
    for path in [&tracer.json, &hgrm] {
        wait_for("the first checkpoint", Duration::from_secs(5), || {
            path.exists().then_some(())
        });
        wait_for("planting the link", Duration::from_secs(5), || {
            let _ = fs::remove_file(path);
            symlink(&victim, path).ok()
        });
    }
    for path in [&tracer.json, &hgrm] {
        wait_for("a checkpoint over the link", Duration::from_secs(5), || {
            let target = fs::read(&victim).unwrap();
            assert_eq!(target, b"precious\n", "the link target was written");
            fs::symlink_metadata(path)
                .is_ok_and(|m| m.file_type().is_file())
                .then_some(())
        });
    }
    let _fin = stop_ok(tracer);
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious\n",
        "the link target was written"
    );
    assert!(fs::symlink_metadata(&hgrm).unwrap().file_type().is_file());
    check_hgrm(&hgrm, 0, (0.0, 0.0));
}
