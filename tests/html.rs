//! The HTML report opened in a real headless Chromium through chromedriver
//! (WebDriver over HTTP on 127.0.0.1): no console error, no network
//! request, the charts' SVG with one element per expected series, the stuck
//! groups' text, a light and a dark theme, screenshots kept under
//! target/test-artifacts/.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use close_wait_tests::*;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One HTTP/1.1 request to chromedriver; returns the JSON body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // chromedriver keeps the connection open: read the head, then exactly
    // Content-Length bytes.
    let mut resp = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).expect("chromedriver response");
        assert!(n > 0, "chromedriver closed the connection: {resp:?}");
        resp.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&resp[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    while resp.len() < head_end + len {
        let n = s.read(&mut buf).expect("chromedriver response body");
        assert!(n > 0, "chromedriver response cut short");
        resp.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&resp[head_end..head_end + len]).into_owned();
    let body = body.as_str();
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{method} {path}: {head}\n{}",
        pretty(&v)
    );
    v["value"].clone()
}

/// `close-wait report INPUTS --html PAGE`, which must succeed.
fn report_html(inputs: &[&Path], page: &Path) {
    let rep = Command::new(bin())
        .arg("report")
        .args(inputs)
        .arg("--html")
        .arg(page)
        .output()
        .unwrap();
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
}

/// Standard base64 (the screenshot).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// chromedriver and one browser session; both ended when dropped.
struct Browser {
    driver: Proc,
    port: u16,
    session: String,
    _profile: TempDir,
}

impl Browser {
    fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} missing: `cargo xtask setup` installs chromium and chromium-driver"
            );
        }
        let port = free_loopback_port();
        let driver = Proc::spawn(
            "chromedriver",
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stderr(Stdio::null()),
        );
        driver.expect("ChromeDriver was started", Duration::from_secs(30));
        let profile = tempdir("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1100,2400",
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }}});
        let v = http(port, "POST", "/session", Some(&caps));
        let session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {}", pretty(&v)))
            .to_string();
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
    }

    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn log(&self, kind: &str) -> Vec<Value> {
        self.call("POST", "/se/log", Some(json!({ "type": kind })))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("screenshot"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        let dir = workspace().join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, &png).unwrap();
        p
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; chromedriver itself is killed by its Proc.
        let _ = TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
            s.write_all(
                format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session
                )
                .as_bytes(),
            )?;
            let mut sink = Vec::new();
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            // The head of the answer is enough: the session is gone.
            let mut buf = [0u8; 4096];
            while !sink.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                sink.extend_from_slice(&buf[..n]);
            }
            Ok(())
        });
        let _ = &self.driver;
    }
}

/// Records closed episodes (one server) and stuck sockets (another) with
/// --html and --hlog; returns the page, the finished tracer and the stuck
/// server's pid.
fn record_a_page(dir: &Path) -> (PathBuf, Finished, u32) {
    let (closing, closing_port) = server(&[
        "--mode",
        "close-after-eof",
        "--delay-ms",
        "20",
        "--count",
        "4",
    ]);
    let (holding, holding_port) = server(&["--mode", "read-hold", "--count", "2", "--hold", "60"]);
    let page = dir.join("report.html");
    let tracer = Tracer::start(&[
        "-L",
        &closing_port.to_string(),
        "-L",
        &holding_port.to_string(),
        "--threshold",
        "1s",
        "--interval",
        "1s",
        "--html",
        page.to_str().unwrap(),
        "--hlog",
        dir.join("report.hlog").to_str().unwrap(),
    ]);
    let a = peer("client", &["--connect", &v4(closing_port), "--count", "4"]);
    let b = peer("client", &["--connect", &v4(holding_port), "--count", "2"]);
    a.expect("done", Duration::from_secs(10));
    b.expect("done", Duration::from_secs(10));
    closing.expect("done", Duration::from_secs(10));
    let start = Instant::now();
    // Two checkpoints at least, and the held sockets past the threshold.
    tracer.wait_stderr("close-wait: ", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(start.elapsed()));
    let out = stop_ok(tracer);
    let pid = holding.pid();
    drop(holding);
    (page, out, pid)
}

/// Loads `page` and returns what the checks need from it.
fn inspect(b: &Browser, page: &Path) -> Value {
    b.call(
        "POST",
        "/url",
        Some(json!({"url": format!("file://{}", page.display())})),
    );
    b.eval(
        "const n = s => document.querySelectorAll(s).length; \
         const labels = s => [...document.querySelectorAll(s)].map(e => e.getAttribute('data-label')); \
         return { percentiles: n('svg#percentiles .series'), \
                  labels: labels('svg#percentiles .series'), \
                  closed: n('svg#timeline-closed .series'), bars: n('svg#timeline-closed rect'), \
                  p99: n('svg#timeline-p99 .series'), sockets: labels('svg#timeline-sockets .series'), \
                  groups: n('section.group'), rows: n('section.group tr.socket'), \
                  text: document.body.innerText, \
                  bg: getComputedStyle(document.body).backgroundColor, \
                  resources: performance.getEntriesByType('resource').length };",
    )
}

/// One curve per tag, labelled with it.
fn check_curves(facts: &Value, tags: &[&str]) {
    assert_eq!(
        facts["percentiles"],
        tags.len(),
        "{}",
        pretty(&facts["labels"])
    );
    for t in tags {
        let want = if *t == "open" { "open: ages now" } else { t };
        assert!(
            facts["labels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l.as_str().unwrap().starts_with(&format!("{want} (n="))),
            "no curve for {t}: {}",
            facts["labels"]
        );
    }
}

/// No console message of level SEVERE (a CSP violation, a failed load, a
/// script error would be one), and no request but `page` itself.
fn check_quiet(b: &Browser, pages: &[&Path]) {
    let console = b.log("browser");
    let severe: Vec<&Value> = console.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    // (The browser's own start page makes chrome:// requests before ours
    // loads: only requests made for the reports' documents count, and no
    // request of any page may leave the machine.)
    let sent: Vec<Value> = b
        .log("performance")
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
        .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
        .map(|m| m["message"]["params"].clone())
        .collect();
    for page in pages {
        let url = format!("file://{}", page.display());
        let ours: Vec<&str> = sent
            .iter()
            .filter(|p| p["documentURL"] == url.as_str())
            .map(|p| p["request"]["url"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(ours, vec![url.as_str()], "requests made by the page");
    }
    let outside: Vec<&str> = sent
        .iter()
        .map(|p| p["request"]["url"].as_str().unwrap_or(""))
        .filter(|u| u.starts_with("http") || u.starts_with("ws"))
        .collect();
    assert!(outside.is_empty(), "network requests: {outside:?}");
}

fn check_screenshot(p: &Path) {
    let size = std::fs::metadata(p).unwrap().len();
    assert!(size > 30_000, "{} is only {size} bytes", p.display());
}

#[test]
fn html_report_in_headless_chromium() {
    if !privileged("html_report_in_headless_chromium") {
        return;
    }
    let dir = tempdir("html");
    let (page, out, holder) = record_a_page(&dir);
    let html = std::fs::read_to_string(&page).expect("the HTML page");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "no script in the page");

    let groups = out.json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{}", pretty(&out.json["groups"]));
    assert_eq!(groups[0]["diagnosis"], "read-not-closed");
    assert_eq!(groups[0]["count"], 2);
    // One curve per non-empty histogram: all, comm:python3, port:P, open.
    let tags: Vec<&str> = out.json["histograms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["count"].as_u64() > Some(0))
        .map(|h| h["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags.len(), 4, "{tags:?}");

    let b = Browser::start();
    let facts = inspect(&b, &page);
    check_curves(&facts, &tags);
    assert_eq!(facts["closed"], 1);
    assert!(facts["bars"].as_u64().unwrap() >= 2, "{}", facts["bars"]);
    assert_eq!(facts["p99"], 1);
    assert_eq!(facts["sockets"], json!(["in CLOSE_WAIT", "stuck"]));
    assert_eq!(facts["groups"], 1);
    assert_eq!(facts["rows"], 2);
    let text = facts["text"].as_str().unwrap();
    let comm = groups[0]["comm"].as_str().unwrap();
    for needle in [
        format!("READ-NOT-CLOSED ×2 — {comm}[{holder}] ← peer 127.0.0.1 · oldest "),
        format!("why\n{}", groups[0]["evidence"].as_str().unwrap()),
        "threads\n".to_string(),
        format!("{comm}[{holder}] fd "),
        format!(
            "{}\nentered CLOSE_WAIT",
            out.json["counters"]["close_wait_entered"]
        ),
    ] {
        assert!(text.contains(&needle), "no {needle:?} in the page:\n{text}");
    }
    assert_eq!(facts["resources"], 0, "the page loaded resources");
    assert_eq!(facts["bg"], "rgb(255, 255, 255)", "light theme by default");
    let light = b.screenshot("html-report-light.png");

    // The dark theme, as a browser set to dark shows it.
    b.call(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {
            "features": [{"name": "prefers-color-scheme", "value": "dark"}]}})),
    );
    let dark_bg = b.eval("return getComputedStyle(document.body).backgroundColor;");
    assert_eq!(dark_bg, "rgb(21, 24, 28)");
    let dark = b.screenshot("html-report-dark.png");
    for p in [&light, &dark] {
        check_screenshot(p);
    }
    assert_ne!(
        std::fs::read(&light).unwrap(),
        std::fs::read(&dark).unwrap()
    );

    // The same run read back offline: `report FILE.hlog --html`.
    let offline = dir.join("offline.html");
    let hlog = dir.join("report.hlog");
    report_html(&[&hlog], &offline);
    let facts = inspect(&b, &offline);
    check_curves(&facts, &tags);
    assert_eq!(facts["closed"], 1);
    assert_eq!(facts["p99"], 1);
    assert_eq!(facts["resources"], 0, "the page loaded resources");
    assert!(
        facts["text"]
            .as_str()
            .unwrap()
            .contains(&format!("from {}", hlog.display())),
        "{}",
        facts["text"]
    );
    check_screenshot(&b.screenshot("html-report-offline.png"));

    // With the JSON report too, the offline page has the run's counters and
    // groups, read back from that report.
    let offline_json = dir.join("offline-json.html");
    report_html(&[&out.json_path, &hlog], &offline_json);
    let facts = inspect(&b, &offline_json);
    check_curves(&facts, &tags);
    assert_eq!(facts["groups"], 1);
    assert_eq!(facts["rows"], 2);
    let text = facts["text"].as_str().unwrap();
    for needle in [
        format!("READ-NOT-CLOSED ×2 — {comm}[{holder}] ← peer 127.0.0.1 · oldest "),
        format!("why\n{}", groups[0]["evidence"].as_str().unwrap()),
        format!(
            "{}\nentered CLOSE_WAIT",
            out.json["counters"]["close_wait_entered"]
        ),
    ] {
        assert!(
            text.contains(&needle),
            "no {needle:?} in the offline page:\n{text}"
        );
    }

    check_quiet(&b, &[&page, &offline, &offline_json]);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
