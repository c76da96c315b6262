//! Diagnosis: every verdict close-wait can give, each made for real on
//! loopback, checked with its evidence for the exact 4-tuple: the stack of
//! the connect() that leaked a socket (tests/helpers/leaky.c), the listener
//! of never-accepted connections, unread bytes, fork inheritance, late
//! closes, and what the owner's threads are doing (seed 002: workers asleep
//! writing to a full stderr pipe).

use std::{
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use close_wait_tests::*;
use serde_json::Value;

/// Every tracer here reports sockets stuck longer than this.
const THRESHOLD_MS: u64 = 1000;
const SECS10: Duration = Duration::from_secs(10);

/// leaky.c built once per test binary, as its header says.
fn leaky_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = build_dir("leaky").join("leaky");
        let out = Command::new("gcc")
            .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&exe)
            .arg(helper("leaky.c"))
            .output()
            .expect("gcc is needed to build tests/helpers/leaky.c");
        assert!(
            out.status.success(),
            "gcc leaky.c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    })
    .clone()
}

/// Starts leaky against 127.0.0.1:port; returns it with its fd and local
/// address ("connected fd=3 local=127.0.0.1:50850 pid=30833").
fn leaky(port: u16) -> (Proc, u32, String) {
    let p = Proc::spawn(
        "leaky",
        Command::new(leaky_bin())
            .args(["127.0.0.1", &port.to_string(), "--hold", "30"])
            .stderr(Stdio::null()),
    );
    let line = p.expect("connected ", SECS10);
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            .to_string()
    };
    assert_eq!(field("pid="), p.pid().to_string(), "{line}");
    (p, field("fd=").parse().unwrap(), field("local="))
}

fn stack_text(entry: &Value) -> String {
    entry["stack"]
        .as_array()
        .unwrap_or_else(|| panic!("stack is not an array: {entry}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Age of a stuck socket: past the threshold, no older than the test step.
fn assert_age(entry: &Value, at_most: Duration) {
    let age = entry["age_ms"].as_u64().expect("age_ms");
    assert!(
        (THRESHOLD_MS..=at_most.as_millis() as u64).contains(&age),
        "age {age} ms outside [{THRESHOLD_MS}, {at_most:?}]: {}",
        pretty(entry)
    );
    assert_eq!(entry["since_attach"], false, "{}", pretty(entry));
    assert_eq!(entry["age_estimated"], false, "{}", pretty(entry));
}

/// The group of `pid` with this diagnosis (one is expected).
fn group_of<'a>(json: &'a Value, diagnosis: &str, pid: u32) -> &'a Value {
    let g: Vec<&Value> = json["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["diagnosis"] == diagnosis && g["pid"] == pid)
        .collect();
    assert_eq!(
        g.len(),
        1,
        "expected one {diagnosis} group for pid {pid}: {}",
        pretty(&json["groups"])
    );
    g[0]
}

/// A server that accepts and closes at once, then exits: the leaky client's
/// socket goes to CLOSE_WAIT and no connection to the peer remains.
fn leaky_scenario(tracer_args: &[&str]) -> (Finished, u32, u32, String, String) {
    let (mut srv, port) = server(&["--mode", "close-now", "--linger", "0"]);
    let dport = port.to_string();
    let mut args = vec!["-D", &dport, "--threshold", "1s"];
    args.extend_from_slice(tracer_args);
    // Attached before leaky connects: its connect() is traced.
    let tracer = Tracer::start(&args);
    let t0 = Instant::now();
    let (lk, fd, local) = leaky(port);
    let remote = format!("127.0.0.1:{port}");
    let (_, s_local, s_remote) = parse_accepted(&srv.expect("accepted", SECS10));
    assert_eq!(
        (s_local.as_str(), s_remote.as_str()),
        (remote.as_str(), local.as_str())
    );
    assert!(srv.wait(SECS10).success(), "server failed");
    settle_stuck(&[(local.clone(), remote.clone())], THRESHOLD_MS);
    let out = stop_ok(tracer);
    let e = one(&out.json, "stuck", &local, &remote);
    assert_age(e, t0.elapsed());
    let pid = lk.pid();
    drop(lk);
    (out, pid, fd, local, remote)
}

#[test]
fn leaked_connect_names_its_stack() {
    if !privileged("leaked_connect_names_its_stack") {
        return;
    }
    let (out, pid, fd, local, remote) = leaky_scenario(&[]);
    let e = one(&out.json, "stuck", &local, &remote);
    let ctx = pretty(e);
    assert_eq!(e["origin"], "connect", "{ctx}");
    assert_eq!(e["origin_task"]["pid"], pid, "{ctx}");
    assert_eq!(e["origin_task"]["tid"], pid, "single-threaded: {ctx}");
    assert_eq!(e["origin_task"]["comm"], "leaky", "{ctx}");
    assert_eq!(
        holders(&e["holders"]),
        vec![(pid as u64, fd as u64)],
        "{ctx}"
    );
    // leaky read nothing, not even the EOF, and never closed.
    assert_eq!(e["unread_bytes"], 0, "{ctx}");
    assert_eq!(e["eof_unread"], true, "{ctx}");
    assert_eq!(e["diagnosis"], "read-not-closed", "{ctx}");
    let why = e["evidence"].as_str().unwrap();
    assert!(
        why.contains("nothing unread but the EOF") && why.contains("no live connection"),
        "the server exited: {why}"
    );

    // main -> serve_requests -> open_leaky_connection -> connect(), with
    // leaky.c lines, in that order (innermost first).
    let stack = stack_text(e);
    let at = |f: &str| {
        stack
            .lines()
            .position(|l| l.starts_with(&format!("{f}+")) || l.starts_with(&format!("{f} ")))
            .unwrap_or_else(|| panic!("no {f} frame in the stack:\n{stack}"))
    };
    let (open, serve, main) = (
        at("open_leaky_connection"),
        at("serve_requests"),
        at("main"),
    );
    assert!(
        open < serve && serve < main,
        "frames out of order:\n{stack}"
    );
    for i in [open, serve, main] {
        let l = stack.lines().nth(i).unwrap();
        assert!(l.contains("leaky.c:"), "no leaky.c:LINE in {l:?}");
    }
    assert!(
        stack.lines().next().unwrap().contains("connect"),
        "innermost frame is not connect():\n{stack}"
    );
    assert_eq!(e["stack_note"], Value::Null, "{ctx}");
    assert_eq!(
        e["kernel_stack"],
        serde_json::json!([]),
        "not asked for: {ctx}"
    );

    let g = group_of(&out.json, "read-not-closed", pid);
    assert_eq!(g["count"], 1);
    assert_eq!(g["comm"], "leaky");
    assert_eq!(g["peer"], remote.as_str());
    assert_eq!(g["stack"], e["stack"]);
    // leaky sleeps in nanosleep() with its socket open.
    let threads = g["threads"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no threads: {}", pretty(g)));
    assert!(
        threads.starts_with("1 of 1 thread asleep") && threads.contains("nanosleep"),
        "{threads}"
    );

    // The human report: the diagnosis, why, who, and where it was created.
    let text = &out.stdout;
    assert!(
        text.contains(&format!(
            "READ-NOT-CLOSED x1  leaky[{pid}] <- peer {remote}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("  why: {why}")), "{text}");
    assert!(text.contains(&format!("  threads: {threads}")), "{text}");
    let created = text
        .split("  created at:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no 'created at' in the report:\n{text}"));
    for f in ["open_leaky_connection", "serve_requests", "main+"] {
        assert!(
            created.contains(&format!("    {f}")),
            "{f} missing:\n{text}"
        );
    }
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("  {local} <- {remote}  age ")))
        .unwrap_or_else(|| panic!("no stuck line for {local}:\n{text}"));
    assert!(
        line.ends_with(&format!("read-not-closed  held by leaky[{pid}] fd {fd}")),
        "{line}"
    );
    // `report FILE.json` prints the same report: group, why, threads,
    // the creating stack.
    let offline = out.assert_report_reads_back();
    assert!(offline.contains("\n  created at:\n"), "{offline}");
}

#[test]
fn kernel_stacks_show_the_connect_path() {
    if !privileged("kernel_stacks_show_the_connect_path") {
        return;
    }
    let (out, pid, _, local, remote) = leaky_scenario(&["--kernel-stacks"]);
    let e = one(&out.json, "stuck", &local, &remote);
    assert_eq!(e["origin"], "connect");
    assert_eq!(e["origin_task"]["pid"], pid);
    let k: Vec<&str> = e["kernel_stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(!k.is_empty(), "no kernel stack: {}", pretty(e));
    assert!(
        k.iter()
            .all(|f| f.ends_with("[kernel]") && !f.starts_with("0x")),
        "unsymbolized kernel frames: {k:#?}"
    );
    // The connect() path itself, not only the syscall entry plumbing.
    assert!(
        k.iter().any(|f| f.starts_with("tcp_v4_connect+")
            || f.starts_with("__inet_stream_connect+")
            || f.starts_with("__sys_connect+")),
        "no connect frame in the kernel stack: {k:#?}"
    );
    // The user stack is still there.
    assert!(stack_text(e).contains("serve_requests"), "{}", pretty(e));
}

#[test]
fn unaccepted_names_the_listener() {
    if !privileged("unaccepted_names_the_listener") {
        return;
    }
    const BACKLOG: u64 = 4;
    const COUNT: usize = 3;
    let (srv, port) = server(&["--mode", "no-accept", "--backlog", "4"]);
    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "1s"]);
    let t0 = Instant::now();
    let cli = peer(
        "client",
        &["--connect", &format!("127.0.0.1:{port}"), "--count", "3"],
    );
    let local = format!("127.0.0.1:{port}");
    let remotes: Vec<String> = (0..COUNT)
        .map(|_| {
            cli.expect("client local ", SECS10)
                .split_whitespace()
                .nth(2)
                .unwrap()
                .to_string()
        })
        .collect();
    cli.expect("done", SECS10);
    let tuples: Vec<(String, String)> =
        remotes.iter().map(|r| (local.clone(), r.clone())).collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    let spid = srv.pid() as u64;
    for r in &remotes {
        let e = one(&out.json, "stuck", &local, r);
        let ctx = pretty(e);
        assert_age(e, t0.elapsed());
        assert_eq!(e["diagnosis"], "unaccepted", "{ctx}");
        assert_eq!(e["inode"], 0, "{ctx}");
        assert_eq!(e["holders"], serde_json::json!([]), "{ctx}");
        assert_eq!(e["origin"], "accept", "{ctx}");
        assert_eq!(e["origin_task"], Value::Null, "never accepted: {ctx}");
        assert!(
            e["stack_note"]
                .as_str()
                .is_some_and(|n| n.contains("never accepted")),
            "{ctx}"
        );
        let l = &e["listener"];
        assert_eq!(l["local"], local.as_str(), "{ctx}");
        let lh = holders(&l["holders"]);
        assert!(
            !lh.is_empty() && lh.iter().all(|(p, _)| *p == spid),
            "listener holders are not the server {spid}: {ctx}"
        );
        assert_eq!(l["accept_queue"], COUNT as u64, "{ctx}");
        assert_eq!(l["backlog"], BACKLOG, "{ctx}");
        assert!(
            e["evidence"]
                .as_str()
                .unwrap()
                .contains("never called accept()"),
            "{ctx}"
        );
    }
    let g = group_of(&out.json, "unaccepted", srv.pid());
    assert_eq!(g["count"], COUNT as u64, "{}", pretty(g));
    let why = g["evidence"].as_str().unwrap();
    assert!(
        why.starts_with("3 sockets, 0 unread bytes in all; first: ")
            && why.ends_with(&format!("listener {local} accept queue 3/4")),
        "{why}"
    );
    assert!(out.stdout.contains("UNACCEPTED x3  "), "{}", out.stdout);
    assert!(out.stdout.contains(": accept queue 3/4"), "{}", out.stdout);
}

/// One server in `mode`, one client (sending `send` bytes, then closing);
/// returns the report, the server, and the accepted (fd, local, remote).
fn one_connection(
    mode: &str,
    send: usize,
    tracer_args: &[&str],
) -> (Finished, Proc, (u32, String, String), Duration) {
    let (srv, port) = server(&["--mode", mode]);
    let lport = port.to_string();
    let mut args = vec!["-L", &lport, "--threshold", "1s"];
    args.extend_from_slice(tracer_args);
    let tracer = Tracer::start(&args);
    let t0 = Instant::now();
    let send = send.to_string();
    let cli = peer(
        "client",
        &["--connect", &format!("127.0.0.1:{port}"), "--send", &send],
    );
    let acc = parse_accepted(&srv.expect("accepted", SECS10));
    let cl = cli.expect("client local ", SECS10);
    assert!(cl.ends_with(&format!(" {}", acc.2)), "{cl} vs {acc:?}");
    cli.expect("done", SECS10);
    (
        tracer_stop_after(tracer, &srv, &acc, mode),
        srv,
        acc,
        t0.elapsed(),
    )
}

fn tracer_stop_after(
    tracer: Tracer,
    srv: &Proc,
    acc: &(u32, String, String),
    mode: &str,
) -> Finished {
    match mode {
        "fork-hold" => {
            srv.expect("parent closed fd", SECS10);
        }
        "close-after-eof" => {
            srv.expect("done", SECS10);
            std::thread::sleep(Duration::from_millis(300));
            return stop_ok(tracer);
        }
        _ => {}
    }
    settle_stuck(&[(acc.1.clone(), acc.2.clone())], THRESHOLD_MS);
    stop_ok(tracer)
}

/// The checks every accepted, still held socket passes.
fn accepted_entry<'a>(
    out: &'a Finished,
    srv: &Proc,
    acc: &(u32, String, String),
    took: Duration,
) -> &'a Value {
    let e = one(&out.json, "stuck", &acc.1, &acc.2);
    let ctx = pretty(e);
    assert_age(e, took);
    assert_eq!(e["origin"], "accept", "{ctx}");
    assert_eq!(e["origin_task"]["pid"], srv.pid(), "{ctx}");
    assert_ne!(e["inode"], 0, "{ctx}");
    assert_eq!(e["listener"], Value::Null, "{ctx}");
    e
}

/// One accepted connection the server keeps open, as server mode `mode`
/// leaves it after the client sent `send` bytes and closed: what its stuck
/// entry must say.
struct HeldCase {
    mode: &'static str,
    send: usize,
    diagnosis: &'static str,
    unread: u64,
    eof_unread: bool,
    /// How the evidence starts.
    why: &'static str,
}

/// Runs `c`: the entry has its diagnosis, unread bytes and EOF, is held by
/// the server alone, its evidence starts as said, and it has its group.
/// Returns the report and the server for the checks of one case.
fn held_by_server(c: &HeldCase) -> (Finished, Proc) {
    let (out, srv, acc, took) = one_connection(c.mode, c.send, &[]);
    {
        let e = accepted_entry(&out, &srv, &acc, took);
        let ctx = pretty(e);
        assert_eq!(e["diagnosis"], c.diagnosis, "{ctx}");
        assert_eq!(e["unread_bytes"], c.unread, "{ctx}");
        assert_eq!(e["eof_unread"], c.eof_unread, "{ctx}");
        assert_eq!(
            holders(&e["holders"]),
            vec![(srv.pid() as u64, acc.0 as u64)],
            "{ctx}"
        );
        let why = e["evidence"].as_str().unwrap();
        assert!(why.starts_with(c.why), "{ctx}");
    }
    group_of(&out.json, c.diagnosis, srv.pid());
    (out, srv)
}

#[test]
fn never_read_counts_the_unread_bytes() {
    if !privileged("never_read_counts_the_unread_bytes") {
        return;
    }
    let (out, srv) = held_by_server(&HeldCase {
        mode: "hold",
        send: 78,
        diagnosis: "never-read",
        unread: 78,
        eof_unread: true,
        why: "78 bytes arrived and were never read",
    });
    let g = group_of(&out.json, "never-read", srv.pid());
    assert_eq!(
        (g["count"].as_u64(), g["unread_bytes"].as_u64()),
        (Some(1), Some(78))
    );
    assert_eq!(g["comm"], comm_of(srv.pid()).as_str());
    // An accepted socket groups by peer IP.
    assert_eq!(g["peer"], "127.0.0.1");
    assert!(
        out.stdout.contains(&format!(
            "NEVER-READ x1  {}[{}] <- peer 127.0.0.1",
            comm_of(srv.pid()),
            srv.pid()
        )) && out.stdout.contains("unread 78 B"),
        "{}",
        out.stdout
    );
}

#[test]
fn read_not_closed_has_nothing_unread() {
    if !privileged("read_not_closed_has_nothing_unread") {
        return;
    }
    // The server read up to the EOF: nothing unread, EOF included.
    // (Whether a live connection to the peer remains is not checked here:
    // on loopback every local client has the peer's IP. The leaky test
    // checks it for a connect()ed socket, by IP and port.)
    held_by_server(&HeldCase {
        mode: "read-hold",
        send: 0,
        diagnosis: "read-not-closed",
        unread: 0,
        eof_unread: false,
        why: "the application read everything including EOF",
    });
}

#[test]
fn held_elsewhere_names_the_forked_child() {
    if !privileged("held_elsewhere_names_the_forked_child") {
        return;
    }
    // The accept() stack is asserted below: accept-side stacks are opt-in.
    // (Without them the creator of an accepted socket comes from the
    // listener's holders, and a child forked before the peer's FIN, which
    // holds the listener too, cannot be told from a prefork worker.)
    let (out, srv, acc, took) = one_connection("fork-hold", 0, &["--accept-stacks"]);
    let child_line = wait_for("the child's line", SECS10, || {
        let seen = srv.seen.lock().unwrap();
        seen.iter().find(|l| l.starts_with("child pid ")).cloned()
    });
    // "child pid C holds fd F"
    let w: Vec<&str> = child_line.split_whitespace().collect();
    let (child, cfd): (u64, u64) = (w[2].parse().unwrap(), w[5].parse().unwrap());
    assert_eq!(cfd, acc.0 as u64, "a fork keeps fd numbers");
    let e = accepted_entry(&out, &srv, &acc, took);
    let ctx = pretty(e);
    assert_eq!(e["diagnosis"], "held-elsewhere", "{ctx}");
    // Only the child holds it; the server (which accepted it) closed its fd.
    assert_eq!(holders(&e["holders"]), vec![(child, cfd)], "{ctx}");
    assert!(
        e["evidence"]
            .as_str()
            .unwrap()
            .contains("but 1 other process(es) still hold"),
        "{ctx}"
    );
    // The accept() stack is resolved although the holder never called it.
    assert!(!stack_text(e).is_empty(), "{ctx}");
    group_of(&out.json, "held-elsewhere", srv.pid());
}

#[test]
fn closed_late_names_the_closer() {
    if !privileged("closed_late_names_the_closer") {
        return;
    }
    let (srv, port) = server(&["--mode", "close-after-eof", "--delay-ms", "1500"]);
    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "1s"]);
    let cli = peer("client", &["--connect", &format!("127.0.0.1:{port}")]);
    let (_, local, remote) = parse_accepted(&srv.expect("accepted", SECS10));
    cli.expect("done", SECS10);
    srv.expect("done", SECS10);
    std::thread::sleep(Duration::from_millis(300));
    let out = stop_ok(tracer);
    assert!(find(&out.json, "stuck", &local, &remote).is_empty());
    let ep = one(&out.json, "episodes", &local, &remote);
    let ms = ep["duration_ms"].as_f64().unwrap();
    assert!((1500.0..2500.0).contains(&ms), "{}", pretty(ep));
    let late = out.json["closed_late"].as_array().unwrap();
    assert_eq!(late.len(), 1, "{}", pretty(&out.json["closed_late"]));
    let cl = &late[0];
    assert_eq!(cl["pid"], srv.pid());
    assert_eq!(cl["comm"], comm_of(srv.pid()).as_str());
    assert_eq!(cl["count"], 1);
    assert_eq!(cl["max_ms"].as_f64(), Some(ms), "{}", pretty(cl));
    assert_eq!(cl["examples"][0]["local"], local.as_str());
    assert_eq!(cl["examples"][0]["remote"], remote.as_str());
    assert!(
        out.stdout.contains(&format!(
            "CLOSED-LATE x1  {}[{}] closed sockets up to ",
            comm_of(srv.pid()),
            srv.pid()
        )),
        "{}",
        out.stdout
    );
}

/// Seed 002: workers that accepted a request and then block logging to a
/// stderr pipe nobody reads. The group says where they sleep and who holds
/// the other end of the pipe.
#[test]
fn blocked_workers_are_shown_asleep_in_pipe_write() {
    if !privileged("blocked_workers_are_shown_asleep_in_pipe_write") {
        return;
    }
    const WORKERS: usize = 4;
    const REQUEST: &str = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let (rd, wr) = pipe_cloexec();
    let srv = Proc::spawn(
        "blocked_workers",
        Command::new("python3")
            .arg(helper("blocked_workers.py"))
            .args(["--workers", &WORKERS.to_string()])
            .stderr(Stdio::from(wr)),
    );
    let port: u16 = srv
        .expect("listening ", SECS10)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "1s"]);
    let t0 = Instant::now();
    let (_cli, accepted) = requests(&srv, port, WORKERS, REQUEST);
    // Every worker asleep writing to the full pipe.
    let pid = srv.pid();
    wait_for("workers blocked in pipe_write", SECS10, || {
        let n = std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("wchan"))
                    .is_ok_and(|w| w.contains("pipe_write"))
            })
            .count();
        (n == WORKERS).then_some(())
    });
    let tuples: Vec<(String, String)> = accepted
        .iter()
        .map(|a| (a.1.clone(), a.2.clone()))
        .collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    for (fd, local, remote) in &accepted {
        let e = one(&out.json, "stuck", local, remote);
        let ctx = pretty(e);
        assert_age(e, t0.elapsed());
        assert_eq!(e["diagnosis"], "never-read", "{ctx}");
        assert_eq!(e["unread_bytes"], REQUEST.len() as u64, "{ctx}");
        assert_eq!(
            holders(&e["holders"]),
            vec![(pid as u64, *fd as u64)],
            "{ctx}"
        );
        assert_eq!(e["origin"], "accept", "{ctx}");
        assert_eq!(e["origin_task"]["pid"], pid, "{ctx}");
    }
    let g = group_of(&out.json, "never-read", pid);
    let gctx = pretty(g);
    assert_eq!(g["count"], WORKERS as u64, "{gctx}");
    assert_eq!(
        g["unread_bytes"],
        (WORKERS * REQUEST.len()) as u64,
        "{gctx}"
    );
    let t = &g["threads"];
    // The workers plus the main thread.
    let total = t["total"].as_u64().unwrap();
    assert_eq!(total, WORKERS as u64 + 1, "{gctx}");
    let top = &t["groups"][0];
    assert_eq!(top["count"], WORKERS as u64, "{gctx}");
    assert_eq!(top["state"], "S", "{gctx}");
    assert_eq!(top["syscall"], "write", "{gctx}");
    assert_eq!(top["fd"], 2, "{gctx}");
    let wchan = top["wchan"].as_str().unwrap();
    assert!(wchan.ends_with("pipe_write"), "{gctx}");
    let held = format!(
        "whose read end is held by pid {} fd {}",
        std::process::id(),
        rd.as_raw_fd()
    );
    let text = t["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "{WORKERS} of {total} threads asleep in {wchan} via write(2) on fd 2 -> pipe:["
        )) && text.contains(&held),
        "{text}"
    );
    assert!(
        out.stdout.contains(&format!("  threads: {text}")),
        "{}",
        out.stdout
    );
    drop(rd);
}

/// `--stacks none` keeps who created the socket but takes no stack;
/// `--stacks user+kernel` is `--kernel-stacks`.
#[test]
fn stacks_choice_none_and_user_kernel() {
    if !privileged("stacks_choice_none_and_user_kernel") {
        return;
    }
    let (out, pid, fd, local, remote) = leaky_scenario(&["--stacks", "none"]);
    let e = one(&out.json, "stuck", &local, &remote);
    let ctx = pretty(e);
    assert_eq!(e["origin"], "connect", "{ctx}");
    assert_eq!(e["origin_task"]["pid"], pid, "{ctx}");
    assert_eq!(e["origin_task"]["comm"], "leaky", "{ctx}");
    assert_eq!(
        holders(&e["holders"]),
        vec![(pid as u64, fd as u64)],
        "{ctx}"
    );
    assert_eq!(e["stack"], serde_json::json!([]), "{ctx}");
    assert_eq!(e["kernel_stack"], serde_json::json!([]), "{ctx}");
    assert_eq!(e["stack_note"], "no stack taken (--stacks none)", "{ctx}");
    assert_eq!(out.json["counters"]["stacks_failed"], 0, "{ctx}");

    let (out, _, _, local, remote) = leaky_scenario(&["--stacks", "user+kernel"]);
    let e = one(&out.json, "stuck", &local, &remote);
    assert!(stack_text(e).contains("serve_requests"), "{}", pretty(e));
    assert!(
        e["kernel_stack"].as_array().unwrap().iter().any(|f| f
            .as_str()
            .unwrap()
            .starts_with("tcp_v4_connect+")
            || f.as_str().unwrap().starts_with("__sys_connect+")),
        "{}",
        pretty(e)
    );
}
