//! Python stacks in the report, for every CPython on the machine (Debian's
//! python3 always; pyenv builds of 3.11, 3.12, 3.13 where the machine has
//! them, each named in one line when it does not): what the threads of a
//! Python holder run now (tests/helpers/pystacks.py `parked`: workers
//! blocked in `worker_parked_on_gate`), checked against the lines of the
//! helper's source.

use std::{path::PathBuf, process::Command, time::Duration};

use close_wait_tests::*;
use serde_json::Value;

const THRESHOLD_MS: u64 = 1000;
const SECS10: Duration = Duration::from_secs(10);

/// The CPythons of this machine (same rule as the unit tests of
/// close-wait-user's python module).
fn interpreters() -> Vec<String> {
    let mut v = vec!["/usr/bin/python3".to_string()];
    for minor in [11, 12, 13] {
        let found = std::fs::read_dir("/root/.pyenv/versions")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("3.{minor}.")))
            })
            .map(|p| p.join(format!("bin/python3.{minor}")))
            .find(|p| p.exists());
        match found {
            Some(p) => v.push(p.display().to_string()),
            None => eprintln!(
                "CPython 3.{minor}: not on this machine (no pyenv build; Debian bookworm has only 3.11): not tested"
            ),
        }
    }
    v
}

fn pystacks(python: &str, cmd: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        &format!("{python} pystacks.py {cmd} {args:?}"),
        Command::new(python)
            .arg(helper("pystacks.py"))
            .arg(cmd)
            .args(args),
    )
}

/// pystacks.py's source line marked `# LINE:name`.
fn line_of(name: &str) -> u32 {
    line_in("pystacks.py", name)
}

fn frame(function: &str, line: &str) -> String {
    format!(
        "{function} ({}:{})",
        helper("pystacks.py").display(),
        line_of(line)
    )
}

/// A server whose workers block, and a client that hangs up on it.
struct Parked {
    python: String,
    server: Proc,
    _client: Proc,
}

fn parked(python: &str) -> Parked {
    let server = pystacks(python, "parked", &["--workers", "3", "--hold", "60"]);
    let l = server.expect("listening ", SECS10);
    let port: u16 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
    let client = pystacks(
        "/usr/bin/python3",
        "hangup",
        &["--connect", &v4(port), "--count", "3"],
    );
    server.expect("parked 3", SECS10);
    Parked {
        python: python.to_string(),
        server,
        _client: client,
    }
}

fn the_group(json: &Value, pid: u32) -> &Value {
    let g: Vec<&Value> = json["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["pid"] == pid)
        .collect();
    assert_eq!(
        g.len(),
        1,
        "one group for pid {pid}: {}\ncounters: {}",
        pretty(&json["groups"]),
        pretty(&json["counters"])
    );
    g[0]
}

#[test]
fn python_threads_of_holders_on_every_cpython() {
    if !privileged("python_threads_of_holders_on_every_cpython") {
        return;
    }
    let tracer = Tracer::start(&["--threshold", "1s", "-v"]);
    let runs: Vec<Parked> = interpreters().iter().map(|py| parked(py)).collect();
    std::thread::sleep(Duration::from_millis(THRESHOLD_MS + 500));
    let out = stop_ok(tracer);
    for l in out.stderr.lines().filter(|l| l.contains("final look")) {
        eprintln!("{l}");
    }
    let parked_at = frame("worker_parked_on_gate", "parked");
    let serve_at = frame("serve_one", "serve");
    for r in &runs {
        let g = the_group(&out.json, r.server.pid());
        assert_eq!(
            g["count"],
            3,
            "{}: {}\ncounters: {}\nstderr: {}",
            r.python,
            pretty(g),
            pretty(&out.json["counters"]),
            out.stderr
        );
        let py = &g["threads"]["python"];
        let groups = py["groups"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no python threads: {}", r.python, pretty(g)));
        // The three workers, one stack, innermost first.
        let workers = &groups[0];
        assert_eq!(workers["count"], 3, "{}: {}", r.python, pretty(py));
        assert_eq!(
            workers["stack"][0],
            parked_at.as_str(),
            "{}: {}",
            r.python,
            pretty(py)
        );
        assert_eq!(
            workers["stack"][1],
            serve_at.as_str(),
            "{}: {}",
            r.python,
            pretty(py)
        );
        assert!(
            workers["stack"][2]
                .as_str()
                .unwrap()
                .starts_with("Thread.run ("),
            "{}: {}",
            r.python,
            pretty(py)
        );
        // The main thread sleeps in `parked`.
        assert_eq!(groups.len(), 2, "{}: {}", r.python, pretty(py));
        assert!(
            groups[1]["stack"][0]
                .as_str()
                .unwrap()
                .starts_with("parked ("),
            "{}: {}",
            r.python,
            pretty(py)
        );
        let version = py["version"].as_str().unwrap();
        let want = format!("python {version}: 3 of 4 threads in {parked_at} <- {serve_at} <- ");
        assert!(
            out.stdout.contains(&want),
            "{}: human report lacks {want:?}:\n{}",
            r.python,
            out.stdout
        );
    }
    // Every version asked for was walked, each under its own version.
    let mut versions: Vec<String> = runs
        .iter()
        .map(|r| {
            the_group(&out.json, r.server.pid())["threads"]["python"]["version"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    versions.dedup();
    eprintln!("python versions walked: {versions:?}");
}

/// The helper's line marked `# LINE:name` in `file`.
fn line_in(file: &str, name: &str) -> u32 {
    let path: PathBuf = helper(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("# LINE:{name}");
    text.lines()
        .position(|l| l.trim_end().ends_with(&marker))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("no {marker} in {}", path.display()))
}

/// One client of tests/helpers/pyhttpleak.py. It connects once its `go`
/// file exists.
struct HttpLeak {
    python: String,
    client: Proc,
    go: PathBuf,
}

/// When the clients start, against the tracer's attach: before the tracer (registered by the scan at
/// attach) or after it says it is tracing (registered when the kernel
/// reports their exec, before their first connect()).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Clients {
    StartedBefore,
    StartedAfter,
    /// Started before the tracer, forks after it: the child (which never
    /// execs) connects at once, registered when the kernel reports the
    /// fork of a registered CPython.
    ForkedAfter,
}

#[test]
fn python_creation_stacks_on_every_cpython() {
    if !privileged("python_creation_stacks_on_every_cpython") {
        return;
    }
    creation_stacks(Clients::StartedBefore);
}

#[test]
fn python_creation_stacks_of_workers_forked_after_attach() {
    if !privileged("python_creation_stacks_of_workers_forked_after_attach") {
        return;
    }
    creation_stacks(Clients::ForkedAfter);
}

#[test]
fn python_creation_stacks_of_processes_started_after_attach() {
    if !privileged("python_creation_stacks_of_processes_started_after_attach") {
        return;
    }
    creation_stacks(Clients::StartedAfter);
}

/// Every CPython here leaks N HTTP connections from fetch_quote(); each
/// group's creation stack names the three application frames, innermost
/// first, after the stdlib's.
fn creation_stacks(started: Clients) {
    const N: usize = 3;
    let (_server, port) = server(&["--mode", "close-now", "--count", "100", "--hold", "60"]);
    let dir = tempdir("pyhttpleak");
    let mut tracer = None;
    if started == Clients::StartedAfter {
        tracer = Some(Tracer::start(&["--threshold", "1s"]));
    }
    let leaks: Vec<HttpLeak> = interpreters()
        .iter()
        .enumerate()
        .map(|(i, py)| {
            let go = dir.path().join(format!("go{i}"));
            if started == Clients::StartedAfter {
                // Connect at once: no time for a rescan to find it.
                std::fs::write(&go, b"go").unwrap();
            }
            let mut cmd = Command::new(py);
            cmd.arg(helper("pyhttpleak.py"))
                .arg(port.to_string())
                .arg(N.to_string())
                .arg("60")
                .arg(&go);
            if started == Clients::ForkedAfter {
                cmd.arg("fork");
            }
            let client = Proc::spawn(&format!("{py} pyhttpleak.py"), &mut cmd);
            client.expect("ready ", SECS10);
            HttpLeak {
                python: py.clone(),
                client,
                go,
            }
        })
        .collect();
    let tracer = tracer.unwrap_or_else(|| Tracer::start(&["--threshold", "1s"]));
    let mut tuples = Vec::new();
    // The process that leaked: the client, or its forked child.
    let mut leaker = Vec::new();
    for l in &leaks {
        std::fs::write(&l.go, b"go").unwrap();
        for _ in 0..N {
            let line = l.client.expect("connected local ", SECS10);
            tuples.push((
                line.split_whitespace().nth(2).unwrap().to_string(),
                v4(port),
            ));
        }
        // "leaked N pid PID"
        let line = l.client.expect(&format!("leaked {N}"), SECS10);
        let pid: u32 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert_eq!(
            pid == l.client.pid(),
            started != Clients::ForkedAfter,
            "{line}"
        );
        leaker.push(pid);
    }
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    let file = helper("pyhttpleak.py").display().to_string();
    let want = [
        format!("fetch_quote ({file}:{})", line_in("pyhttpleak.py", "fetch")),
        format!(
            "handle_order ({file}:{})",
            line_in("pyhttpleak.py", "order")
        ),
        format!("<module> ({file}:{})", line_in("pyhttpleak.py", "module")),
    ];
    for (l, &pid) in leaks.iter().zip(&leaker) {
        let g = the_group(&out.json, pid);
        assert_eq!(g["count"], N, "{}: {}", l.python, pretty(g));
        let stack: Vec<&str> = g["stack"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no stack: {}", l.python, pretty(g)))
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        // Python frames first, innermost first: the stdlib's connect path,
        // then the three application frames, then the native stack.
        let at = stack
            .iter()
            .position(|f| f.starts_with("fetch_quote ("))
            .unwrap_or_else(|| panic!("{}: no fetch_quote in {}", l.python, pretty(g)));
        assert_eq!(
            &stack[at..at + 3],
            &want.iter().map(String::as_str).collect::<Vec<_>>()[..],
            "{}: {}",
            l.python,
            pretty(g)
        );
        assert!(
            stack[..at]
                .iter()
                .all(|f| f.contains("/lib/python3.") && f.contains(".py:")),
            "{}: frames inside fetch_quote are not the stdlib's: {}",
            l.python,
            pretty(g)
        );
        assert!(
            stack[..at]
                .iter()
                .any(|f| f.starts_with("HTTPConnection.connect (")),
            "{}: no HTTPConnection.connect inside fetch_quote: {}",
            l.python,
            pretty(g)
        );
        // The human report folds the stdlib frames and names the three.
        for w in &want {
            assert!(
                out.stdout.contains(w.as_str()),
                "{}: human report lacks {w}:\n{}",
                l.python,
                out.stdout
            );
        }
    }
}
