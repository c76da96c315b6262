//! The five seed post-mortems (/work/shared/seeds), each replayed on
//! loopback with the programs of its story (tests/helpers/seeds.py, every
//! one its own process), checked against what close-wait hands the
//! investigator: the diagnosis, the true owner (pid, fd) and never the peer,
//! the evidence (unread bytes, accept queue and backlog, what the threads
//! are doing, whether the peer is gone) and the creating stack.

use std::{
    collections::{HashMap, HashSet},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use close_wait_tests::*;
use serde_json::Value;

/// Every tracer here reports sockets stuck longer than this.
const THRESHOLD_MS: u64 = 1000;
const SECS10: Duration = Duration::from_secs(10);

/// The read-not-closed evidence of a socket whose owner read everything but
/// the EOF and whose peer is still up.
const FORGOT_CLOSE: &str = "nothing unread but the EOF, yet the descriptor is still open: \
     a forgotten close() or a pool keeping dead connections";
const PEER_GONE: &str = "no live connection to that peer remains";

/// `python3 seeds.py CMD ARGS` (tests/helpers/seeds.py).
fn seeds(cmd: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        &format!("seeds.py {cmd} {args:?}"),
        Command::new("python3")
            .arg(helper("seeds.py"))
            .arg(cmd)
            .args(args),
    )
}

/// Word `i` of a line (panics with the line).
fn word(line: &str, i: usize) -> String {
    line.split_whitespace()
        .nth(i)
        .unwrap_or_else(|| panic!("no word {i} in {line:?}"))
        .to_string()
}

fn num<T: std::str::FromStr>(line: &str, i: usize) -> T {
    word(line, i)
        .parse()
        .unwrap_or_else(|_| panic!("word {i} of {line:?} is not a number"))
}

/// "listening PORT pid PID ..." -> port.
fn listening(p: &Proc) -> (u16, String) {
    let l = p.expect("listening ", SECS10);
    assert_eq!(num::<u32>(&l, 3), p.pid(), "{l}");
    (num(&l, 1), l)
}

/// The socket inode behind /proc/PID/fd/FD.
fn inode_of(pid: u32, fd: u32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .unwrap_or_else(|e| panic!("fd {fd} of {pid}: {e}"));
    let l = link.to_string_lossy();
    l.strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("fd {fd} of {pid} is not a socket: {l}"))
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
}

/// The groups with this diagnosis and pid.
fn groups_of<'a>(json: &'a Value, diagnosis: &str, pid: u32) -> Vec<&'a Value> {
    json["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["diagnosis"] == diagnosis && g["pid"] == pid)
        .collect()
}

/// The one group with this diagnosis, pid and peer.
fn group<'a>(json: &'a Value, diagnosis: &str, pid: u32, peer: &str) -> &'a Value {
    let g: Vec<&Value> = groups_of(json, diagnosis, pid)
        .into_iter()
        .filter(|g| g["peer"] == peer)
        .collect();
    assert_eq!(
        g.len(),
        1,
        "expected one {diagnosis} group for pid {pid} <- peer {peer}: {}",
        pretty(&json["groups"])
    );
    g[0]
}

fn stuck(json: &Value) -> &Vec<Value> {
    json["stuck"].as_array().expect("stuck")
}

/// A connect()-created socket's stack: the Python frames first when the
/// creator was walked as a CPython, then the native ones, the innermost of
/// which is connect(). With `python_fn`, the Python frames include that
/// function of seeds.py (the application code that connected).
fn assert_connect_stack(e: &Value, python_fn: Option<&str>) {
    let frames: Vec<&str> = e["stack"]
        .as_array()
        .unwrap_or_else(|| panic!("no stack: {}", pretty(e)))
        .iter()
        .map(|f| f.as_str().unwrap_or_default())
        .collect();
    // Native frames are symbol+offset; Python frames are qualname (file:line).
    let native = frames
        .iter()
        .position(|f| f.contains("+0x"))
        .unwrap_or_else(|| panic!("no native frame: {}", pretty(e)));
    assert!(
        frames[native].contains("connect"),
        "innermost native frame is not connect(): {}",
        pretty(e)
    );
    if let Some(f) = python_fn {
        let head = format!("{f} (");
        assert!(
            frames[..native]
                .iter()
                .any(|p| p.starts_with(&head) && p.contains("seeds.py:")),
            "no Python frame of {f} in seeds.py before the native stack: {}",
            pretty(e)
        );
    }
}

/// Seed 000 (Tornado behind OpenResty): the only thread of the event loop
/// blocks in a synchronous third-party call; the proxy's requests time out
/// and are closed while they still wait in the accept queue, which fills
/// up until the service takes no new connection.
#[test]
fn seed000_blocked_event_loop_strands_requests_in_the_accept_queue() {
    if !privileged("seed000_blocked_event_loop_strands_requests_in_the_accept_queue") {
        return;
    }
    const BACKLOG: u64 = 8;
    // One request accepted, then backlog + 1 queued: Linux admits
    // connections until the queue is *longer* than the backlog.
    const QUEUED: u64 = BACKLOG + 1;
    const REQUEST: &str = "GET /pay HTTP/1.1\r\nHost: app\r\n\r\n";
    // The third party: accepts and never answers.
    let (upstream, up_port) = server(&["--mode", "hold", "--count", "1"]);
    let app = seeds(
        "tornado",
        &[
            "--backlog",
            &BACKLOG.to_string(),
            "--upstream",
            &v4(up_port),
            "--hold",
            "20",
        ],
    );
    let (port, l) = listening(&app);
    let lfd: u64 = num(&l, 5);
    let addr = v4(port);
    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "1s"]);
    let t0 = Instant::now();
    let count = (1 + QUEUED).to_string();
    let proxy = seeds(
        "burst",
        &[
            "--connect",
            &addr,
            "--count",
            &count,
            "--first-gap-ms",
            "300",
            "--request",
            REQUEST,
            "--timeout-ms",
            "300",
            "--probe",
            "--hold",
            "20",
        ],
    );
    let clients: Vec<String> = (0..=QUEUED)
        .map(|_| word(&proxy.expect("client local ", SECS10), 2))
        .collect();
    assert_eq!(proxy.expect("answered ", SECS10), "answered 0");
    // The service stopped taking connections: the queue is full.
    assert_eq!(
        proxy.expect("probe ", SECS10),
        "probe timed out",
        "the accept queue should be full"
    );
    let (afd, a_local, a_remote) = parse_accepted(&app.expect("accepted ", SECS10));
    assert_eq!(
        (a_local.as_str(), a_remote.as_str()),
        (addr.as_str(), clients[0].as_str())
    );
    let up = app.expect("upstream ", SECS10);
    let (ufd, u_local, u_remote): (u32, String, String) = (num(&up, 2), word(&up, 4), word(&up, 6));
    assert_eq!(u_remote, v4(up_port));
    let (_, _, seen_by_upstream) = parse_accepted(&upstream.expect("accepted ", SECS10));
    assert_eq!(seen_by_upstream, u_local);
    let tuples: Vec<(String, String)> = clients.iter().map(|c| (addr.clone(), c.clone())).collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    // The one thread is still in the upstream call, on this socket.
    let up_inode = inode_of(app.pid(), ufd);
    assert_eq!(socket_state(&u_local, &u_remote).as_deref(), Some("ESTAB"));
    let out = stop_ok(tracer);
    let took = t0.elapsed();
    let pid = app.pid();
    let j = &out.json;

    // The request the loop took: read, then stuck inside the handler (not
    // a forgotten close: the one thread is blocked on the upstream).
    let e = one(j, "stuck", &addr, &clients[0]);
    let ctx = pretty(e);
    assert_age(e, took);
    assert_eq!(e["diagnosis"], "handler-blocked", "{ctx}");
    assert_eq!(
        holders(&e["holders"]),
        vec![(pid as u64, afd as u64)],
        "{ctx}"
    );
    assert_eq!(
        (e["unread_bytes"].as_u64(), &e["eof_unread"]),
        (Some(0), &Value::Bool(true)),
        "{ctx}"
    );
    assert_eq!(e["origin"], "accept", "{ctx}");
    assert_eq!(e["origin_task"]["pid"], pid, "{ctx}");
    assert_eq!(e["origin_task"]["tid"], pid, "single-threaded: {ctx}");

    // The others never left the accept queue, each with its request unread.
    for c in &clients[1..] {
        let e = one(j, "stuck", &addr, c);
        let ctx = pretty(e);
        assert_age(e, took);
        assert_eq!(e["diagnosis"], "unaccepted", "{ctx}");
        assert_eq!(
            (e["inode"].as_u64(), holders(&e["holders"])),
            (Some(0), vec![]),
            "{ctx}"
        );
        assert_eq!(e["unread_bytes"], REQUEST.len() as u64, "{ctx}");
        assert_eq!(e["eof_unread"], true, "{ctx}");
        assert_eq!(e["origin"], "accept", "{ctx}");
        assert_eq!(e["origin_task"], Value::Null, "never accepted: {ctx}");
        let l = &e["listener"];
        assert_eq!(l["local"], addr.as_str(), "{ctx}");
        assert_eq!(holders(&l["holders"]), vec![(pid as u64, lfd)], "{ctx}");
        assert_eq!(
            (l["accept_queue"].as_u64(), l["backlog"].as_u64()),
            (Some(QUEUED), Some(BACKLOG)),
            "{ctx}"
        );
    }
    // Nothing else: neither the proxy nor the third party holds any of them.
    assert_eq!(stuck(j).len(), clients.len(), "{}", pretty(&j["stuck"]));
    assert_eq!(j["counters"]["close_wait_entered"], clients.len() as u64);

    let g = group(j, "unaccepted", pid, "127.0.0.1");
    let gctx = pretty(g);
    assert_eq!(g["count"], QUEUED, "{gctx}");
    assert_eq!(g["unread_bytes"], QUEUED * REQUEST.len() as u64, "{gctx}");
    assert_eq!(g["comm"], comm_of(pid).as_str(), "{gctx}");
    let why = g["evidence"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "{QUEUED} sockets, {} unread bytes in all; first: peer closed while the connection waited in the listener's accept queue",
            QUEUED * REQUEST.len() as u64
        )) && why.ends_with(&format!("listener {addr} accept queue {QUEUED}/{BACKLOG}")),
        "{why}"
    );
    // Why nobody accepts: the only thread sleeps in recvfrom() on the
    // upstream connection.
    let t = &g["threads"];
    assert_eq!(t["total"], 1, "{gctx}");
    let tg = &t["groups"][0];
    assert_eq!(
        (tg["count"].as_u64(), tg["state"].as_str()),
        (Some(1), Some("S")),
        "{gctx}"
    );
    assert_eq!(tg["syscall"], "recvfrom", "{gctx}");
    assert_eq!(tg["fd"], ufd, "{gctx}");
    // Named with its connection: the upstream that never answers.
    let target = format!("socket:[{up_inode}] ({u_local} -> {u_remote} ESTABLISHED)");
    assert_eq!(tg["fd_target"], target.as_str(), "{gctx}");
    let threads = t["text"].as_str().unwrap();
    assert!(
        threads.starts_with("1 of 1 thread asleep in ")
            && threads.ends_with(&format!(" via recvfrom(2) on fd {ufd} -> {target}")),
        "{threads}"
    );
    // The taken request's group says the same about the thread, and its
    // why names the call and the upstream.
    let taken = group(j, "handler-blocked", pid, "127.0.0.1");
    assert_eq!(taken["count"], 1);
    assert_eq!(taken["threads"]["text"], threads);
    let why = taken["evidence"].as_str().unwrap();
    assert!(
        why.starts_with(
            "the request was read, nothing unread but the EOF, but the handler has not finished: "
        ) && why.contains(&format!("{}[{pid}]: {threads}; ", comm_of(pid)))
            && !why.contains("forgotten close"),
        "{why}"
    );

    let text = &out.stdout;
    let comm = comm_of(pid);
    for needle in [
        format!("UNACCEPTED x{QUEUED}  {comm}[{pid}] <- peer 127.0.0.1  "),
        format!("  threads: {threads}"),
        format!(
            "    listener {addr} held by {comm}[{pid}] fd {lfd}: accept queue {QUEUED}/{BACKLOG}"
        ),
        format!("HANDLER-BLOCKED x1  {comm}[{pid}] <- peer 127.0.0.1  "),
    ] {
        assert!(text.contains(&needle), "no {needle:?} in:\n{text}");
    }
    // Read back offline, the JSON gives the same report: groups, why,
    // threads and the listener line.
    let offline = out.assert_report_reads_back();
    assert!(
        offline.contains(&format!("  threads: {threads}")),
        "{offline}"
    );
}

/// Seed 001 (python httplib, never closed): every request leaves the
/// client's connection in CLOSE_WAIT once the server's keep-alive times out;
/// the pile grows by one per request, held by the client, while the server
/// is alive and listening.
#[test]
fn seed001_client_that_never_closes_piles_up_one_per_request() {
    if !privileged("seed001_client_that_never_closes_piles_up_one_per_request") {
        return;
    }
    const FIRST: usize = 5;
    const SECOND: usize = 7;
    let srv = seeds("keepalive", &["--idle-ms", "500", "--hold", "20"]);
    let (port, _) = listening(&srv);
    let addr = v4(port);
    let tracer = Tracer::start(&[
        "-D",
        &port.to_string(),
        "--threshold",
        "1s",
        "--interval",
        "1s",
    ]);
    let t0 = Instant::now();
    let cli = seeds(
        "httplib",
        &[
            "--connect",
            &addr,
            "--batches",
            &format!("{FIRST},{SECOND}"),
            "--hold",
            "20",
        ],
    );
    // "request N fd FD local L status S"
    let requests = |n: usize| -> Vec<(u32, String)> {
        (0..n)
            .map(|_| {
                let l = cli.expect("request ", SECS10);
                assert_eq!(word(&l, 7), "200", "{l}");
                (num(&l, 3), word(&l, 5))
            })
            .collect()
    };
    let mut conns = requests(FIRST);
    assert_eq!(
        cli.expect("batch done", SECS10),
        format!("batch done {FIRST}")
    );
    let tuples = |c: &[(u32, String)]| -> Vec<(String, String)> {
        c.iter().map(|(_, l)| (l.clone(), addr.clone())).collect()
    };
    settle_stuck(&tuples(&conns), THRESHOLD_MS);
    // The checkpointed report (every --interval) already shows the pile.
    let mid = wait_for("a checkpoint with the first batch stuck", SECS10, || {
        let j: Value = serde_json::from_str(&std::fs::read_to_string(&tracer.json).ok()?).ok()?;
        (stuck(&j).len() == FIRST).then_some(j)
    });
    for (fd, local) in &conns {
        let e = one(&mid, "stuck", local, &addr);
        assert_eq!(
            holders(&e["holders"]),
            vec![(cli.pid() as u64, *fd as u64)],
            "{}",
            pretty(e)
        );
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(cli.pid() as i32, libc::SIGUSR1) };
    conns.extend(requests(SECOND));
    assert_eq!(
        cli.expect("batch done", SECS10),
        format!("batch done {}", FIRST + SECOND)
    );
    settle_stuck(&tuples(&conns[FIRST..]), THRESHOLD_MS);
    let out = stop_ok(tracer);
    let took = t0.elapsed();
    let j = &out.json;
    let pid = cli.pid();
    let comm = comm_of(pid);
    let fds: HashSet<u32> = conns.iter().map(|c| c.0).collect();
    assert_eq!(
        fds.len(),
        FIRST + SECOND,
        "one descriptor per request: {conns:?}"
    );

    for (fd, local) in &conns {
        let e = one(j, "stuck", local, &addr);
        let ctx = pretty(e);
        assert_age(e, took);
        assert_eq!(
            holders(&e["holders"]),
            vec![(pid as u64, *fd as u64)],
            "{ctx}"
        );
        assert_eq!(e["origin"], "connect", "{ctx}");
        assert_eq!(e["origin_task"]["pid"], pid, "{ctx}");
        assert_eq!(e["origin_task"]["comm"], comm.as_str(), "{ctx}");
        // The response was read (Content-Length), the server's FIN was not.
        assert_eq!(e["unread_bytes"], 0, "{ctx}");
        assert_eq!(e["eof_unread"], true, "{ctx}");
        assert_eq!(e["diagnosis"], "read-not-closed", "{ctx}");
        // The server still listens: nothing claims it is gone.
        assert_eq!(e["evidence"], FORGOT_CLOSE, "{ctx}");
        // The client started after the tracer: registered at its exec.
        assert_connect_stack(e, Some("httplib"));
    }
    // Only the client's sockets: the server closed first, it has none.
    assert_eq!(stuck(j).len(), FIRST + SECOND, "{}", pretty(&j["stuck"]));
    assert!(stuck(j).iter().all(|e| e["remote"] == addr.as_str()));
    assert_eq!(j["counters"]["close_wait_entered"], (FIRST + SECOND) as u64);

    let g = group(j, "read-not-closed", pid, &addr);
    assert_eq!(g["count"], FIRST + SECOND, "{}", pretty(g));
    assert_eq!(
        g["evidence"],
        format!(
            "{} sockets, 0 unread bytes in all; first: {FORGOT_CLOSE}",
            FIRST + SECOND
        )
    );
    assert_eq!(
        j["groups"].as_array().unwrap().len(),
        1,
        "{}",
        pretty(&j["groups"])
    );
    let text = &out.stdout;
    let head = format!(
        "READ-NOT-CLOSED x{}  {comm}[{pid}] <- peer {addr}  ",
        FIRST + SECOND
    );
    assert!(text.contains(&head), "no {head:?} in:\n{text}");
    drop(srv);
}

/// Seed 002 in full (CherryPy behind nginx): ten workers log to stderr, a
/// pipe nobody reads, and all sleep in write(2) before reading their
/// request; the main thread keeps accepting, so later requests pile up
/// accepted but never read. (diagnosis.rs checks the core with 4 workers;
/// this adds the seed's scale, the accepting main thread the authors saw in
/// their stack dump, and requests queued behind the blocked workers.)
#[test]
fn seed002_ten_workers_blocked_on_stderr_while_main_thread_accepts() {
    if !privileged("seed002_ten_workers_blocked_on_stderr_while_main_thread_accepts") {
        return;
    }
    const WORKERS: usize = 10;
    const EXTRA: usize = 3;
    const REQUEST: &str = "POST /heartbeat HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    let (rd, wr) = pipe_cloexec();
    let app = Proc::spawn(
        "seeds.py cherrypy",
        Command::new("python3")
            .arg(helper("seeds.py"))
            .args([
                "cherrypy",
                "--workers",
                &WORKERS.to_string(),
                "--hold",
                "20",
            ])
            .stderr(Stdio::from(wr)),
    );
    let (port, l) = listening(&app);
    let lfd: u32 = num(&l, 5);
    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "1s"]);
    let t0 = Instant::now();
    let n = WORKERS + EXTRA;
    let (_cli, accepted) = requests(&app, port, n, REQUEST);
    let pid = app.pid();
    let wchans = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("wchan")).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_for("ten workers blocked in pipe_write", SECS10, || {
        (wchans().iter().filter(|w| w.contains("pipe_write")).count() == WORKERS).then_some(())
    });
    let tuples: Vec<(String, String)> = accepted
        .iter()
        .map(|a| (a.1.clone(), a.2.clone()))
        .collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    let lsock_inode = inode_of(pid, lfd);
    let out = stop_ok(tracer);
    let took = t0.elapsed();
    let j = &out.json;

    for (fd, local, remote) in &accepted {
        let e = one(j, "stuck", local, remote);
        let ctx = pretty(e);
        assert_age(e, took);
        assert_eq!(e["diagnosis"], "never-read", "{ctx}");
        // Recv-Q: exactly one HTTP request, as the authors measured.
        assert_eq!(e["unread_bytes"], REQUEST.len() as u64, "{ctx}");
        assert_eq!(
            holders(&e["holders"]),
            vec![(pid as u64, *fd as u64)],
            "{ctx}"
        );
        assert_eq!(e["origin"], "accept", "{ctx}");
        // Accepted by the main thread, never by a worker.
        assert_eq!(e["origin_task"]["tid"], pid, "{ctx}");
    }
    assert_eq!(stuck(j).len(), n, "{}", pretty(&j["stuck"]));
    let g = group(j, "never-read", pid, "127.0.0.1");
    let gctx = pretty(g);
    assert_eq!(g["count"], n as u64, "{gctx}");
    assert_eq!(g["unread_bytes"], (n * REQUEST.len()) as u64, "{gctx}");
    let t = &g["threads"];
    assert_eq!(t["total"], WORKERS as u64 + 1, "{gctx}");
    let (top, main) = (&t["groups"][0], &t["groups"][1]);
    assert_eq!(top["count"], WORKERS as u64, "{gctx}");
    assert_eq!(
        (
            top["state"].as_str(),
            top["syscall"].as_str(),
            top["fd"].as_u64()
        ),
        (Some("S"), Some("write"), Some(2)),
        "{gctx}"
    );
    let held = format!(
        "whose read end is held by pid {} fd {}",
        std::process::id(),
        rd.as_raw_fd()
    );
    assert!(
        top["wchan"].as_str().unwrap().ends_with("pipe_write")
            && top["fd_target"].as_str().unwrap().starts_with("pipe:[")
            && top["fd_target"].as_str().unwrap().contains(&held)
            // Full, and its reader named by its command (issue 10).
            && top["fd_target"].as_str().unwrap().contains(" bytes queued: full) whose read end")
            && top["fd_target"].as_str().unwrap().contains(&format!("{held} (")),
        "{gctx}"
    );
    // The main thread is fine: it sleeps in accept4(2) on the listener.
    assert_eq!(main["count"], 1, "{gctx}");
    assert_eq!(
        (main["syscall"].as_str(), main["fd"].as_u64()),
        (Some("accept4"), Some(lfd as u64)),
        "{gctx}"
    );
    let listen_addr = &accepted[0].1;
    let listener = format!("socket:[{lsock_inode}] ({listen_addr} LISTEN)");
    assert_eq!(main["fd_target"], listener.as_str(), "{gctx}");
    let text = t["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("{WORKERS} of {} threads asleep in ", WORKERS + 1))
            && text.contains(" via write(2) on fd 2 -> pipe:[")
            && text.contains(&format!("{held} ("))
            && text.contains(&format!("); 1 of {} asleep in ", WORKERS + 1))
            && text.ends_with(&format!(" via accept4(2) on fd {lfd} -> {listener}")),
        "{text}"
    );
    let comm = comm_of(pid);
    for needle in [
        format!("NEVER-READ x{n}  {comm}[{pid}] <- peer 127.0.0.1  "),
        format!("unread {} B", n * REQUEST.len()),
        format!("  threads: {text}"),
    ] {
        assert!(
            out.stdout.contains(&needle),
            "no {needle:?} in:\n{}",
            out.stdout
        );
    }
    drop(rd);
}

/// Seed 003 (a Go pool keyed by peer address): peers scaled away after the
/// pool connected leave its idle connections in CLOSE_WAIT, one group per
/// peer, each saying that no live connection to that peer remains; a peer
/// that stays up and closes one idle connection is not called gone.
#[test]
fn seed003_pool_keeps_dead_connections_of_scaled_away_peers() {
    if !privileged("seed003_pool_keeps_dead_connections_of_scaled_away_peers") {
        return;
    }
    const PER: usize = 2;
    let mut gone1 = seeds("backend", &["--hold", "20"]);
    let mut gone2 = seeds("backend", &["--hold", "20"]);
    // Stays up; closes the first pooled connection after 300 ms idle.
    let alive = seeds(
        "backend",
        &["--idle-close", "1", "--idle-ms", "300", "--hold", "20"],
    );
    let ports: Vec<u16> = [&gone1, &gone2, &alive]
        .iter()
        .map(|p| listening(p).0)
        .collect();
    let addrs: Vec<String> = ports.iter().map(|&p| v4(p)).collect();
    let mut args = vec!["--threshold".to_string(), "1s".to_string()];
    for p in &ports {
        args.extend(["-D".to_string(), p.to_string()]);
    }
    let tracer = Tracer::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let t0 = Instant::now();
    let pool = seeds(
        "pool",
        &[
            "--peers",
            &addrs.join(","),
            "--per",
            &PER.to_string(),
            "--hold",
            "20",
        ],
    );
    // peer address -> [(fd, local)] in connect order
    let mut conns: HashMap<String, Vec<(u32, String)>> = HashMap::new();
    for _ in 0..3 * PER {
        let l = pool.expect("conn peer ", SECS10);
        conns
            .entry(word(&l, 2))
            .or_default()
            .push((num(&l, 4), word(&l, 6)));
    }
    pool.expect("pooled", SECS10);
    for (srv, a) in [
        (&gone1, &addrs[0]),
        (&gone2, &addrs[1]),
        (&alive, &addrs[2]),
    ] {
        for (_, local) in &conns[a] {
            let (_, l, r) = parse_accepted(&srv.expect("accepted ", SECS10));
            assert_eq!((&l, &r), (a, local));
        }
    }
    // Scaled away.
    for p in [&mut gone1, &mut gone2] {
        p.child.kill().unwrap();
        p.wait(SECS10);
    }
    let idle_closed = conns[&addrs[2]][0].clone();
    let still_live = conns[&addrs[2]][1].clone();
    let mut tuples: Vec<(String, String)> = addrs[..2]
        .iter()
        .flat_map(|a| conns[a].iter().map(move |(_, l)| (l.clone(), a.clone())))
        .collect();
    tuples.push((idle_closed.1.clone(), addrs[2].clone()));
    settle_stuck(&tuples, THRESHOLD_MS);
    assert_eq!(
        socket_state(&still_live.1, &addrs[2]).as_deref(),
        Some("ESTAB")
    );
    let out = stop_ok(tracer);
    let took = t0.elapsed();
    let j = &out.json;
    let pid = pool.pid();
    let comm = comm_of(pid);

    for a in &addrs[..2] {
        for (fd, local) in &conns[a] {
            let e = one(j, "stuck", local, a);
            let ctx = pretty(e);
            assert_age(e, took);
            assert_eq!(
                holders(&e["holders"]),
                vec![(pid as u64, *fd as u64)],
                "{ctx}"
            );
            assert_eq!(e["origin"], "connect", "{ctx}");
            assert_eq!(e["origin_task"]["pid"], pid, "{ctx}");
            assert_eq!(
                (e["unread_bytes"].as_u64(), &e["eof_unread"]),
                (Some(0), &Value::Bool(true)),
                "{ctx}"
            );
            assert_eq!(e["diagnosis"], "read-not-closed", "{ctx}");
            assert_eq!(
                e["evidence"],
                format!("{FORGOT_CLOSE}; {PEER_GONE} (peer gone or scaled away?)"),
                "{ctx}"
            );
            assert_connect_stack(e, Some("pool"));
        }
        let g = group(j, "read-not-closed", pid, a);
        assert_eq!(g["count"], PER as u64, "{}", pretty(g));
        assert!(
            g["evidence"].as_str().unwrap().contains(PEER_GONE),
            "{}",
            pretty(g)
        );
        let head = format!("READ-NOT-CLOSED x{PER}  {comm}[{pid}] <- peer {a}  ");
        assert!(
            out.stdout.contains(&head),
            "no {head:?} in:\n{}",
            out.stdout
        );
    }
    // The peer that is up: its idle-closed connection is a pool leak too,
    // but nothing says the peer is gone; its live connection is not stuck.
    let e = one(j, "stuck", &idle_closed.1, &addrs[2]);
    assert_eq!(
        holders(&e["holders"]),
        vec![(pid as u64, idle_closed.0 as u64)],
        "{}",
        pretty(e)
    );
    assert_eq!(e["diagnosis"], "read-not-closed", "{}", pretty(e));
    assert_eq!(e["evidence"], FORGOT_CLOSE, "{}", pretty(e));
    let g = group(j, "read-not-closed", pid, &addrs[2]);
    assert_eq!(g["count"], 1);
    assert!(
        !g["evidence"].as_str().unwrap().contains(PEER_GONE),
        "{}",
        pretty(g)
    );
    assert!(find(j, "stuck", &still_live.1, &addrs[2]).is_empty());
    // Nothing held by a peer; the three groups are the pool's.
    assert_eq!(stuck(j).len(), 2 * PER + 1, "{}", pretty(&j["stuck"]));
    assert!(stuck(j)
        .iter()
        .all(|e| holders(&e["holders"]).iter().all(|h| h.0 == pid as u64)));
    assert_eq!(
        groups_of(j, "read-not-closed", pid).len(),
        3,
        "{}",
        pretty(&j["groups"])
    );
    assert_eq!(j["counters"]["close_wait_entered"], (2 * PER + 1) as u64);
    drop(alive);
}

/// Seed 004 (apache prefork + php + curl): a parent forks workers sharing
/// the listener; each worker's curl-like client leaks the upstream
/// connection once the upstream closes it. The holders are the workers,
/// grouped per worker, never the parent or the upstream; a worker that
/// exits after forking a background job leaves its sockets held elsewhere.
#[test]
fn seed004_prefork_workers_hold_leaked_upstream_connections() {
    if !privileged("seed004_prefork_workers_hold_leaked_upstream_connections") {
        return;
    }
    const WORKERS: usize = 3;
    const PER: usize = 2;
    const ORPHAN: usize = 2;
    let upstream = seeds("backend", &["--after", "close", "--hold", "20"]);
    let (up_port, _) = listening(&upstream);
    let up = v4(up_port);
    let apache = seeds(
        "prefork",
        &[
            "--workers",
            &WORKERS.to_string(),
            "--requests",
            &PER.to_string(),
            "--upstream",
            &up,
            "--orphan",
            &ORPHAN.to_string(),
            "--hold",
            "20",
        ],
    );
    let (port, _) = listening(&apache);
    // worker index -> pid
    let mut workers: HashMap<usize, u32> = HashMap::new();
    for _ in 0..WORKERS {
        let l = apache.expect("worker ", SECS10);
        assert!(l.ends_with(" ready"), "{l}");
        workers.insert(num(&l, 1), num(&l, 3));
    }
    let mut kill = KillPids(workers.values().copied().collect());
    let tracer = Tracer::start(&["-D", &up_port.to_string(), "--threshold", "1s"]);
    let t0 = Instant::now();
    let cli = seeds(
        "get",
        &[
            "--connect",
            &v4(port),
            "--count",
            &(WORKERS * PER).to_string(),
        ],
    );
    cli.expect("done", SECS10);
    // (local, worker index, worker pid, fd) of every upstream connection.
    let mut leaked = Vec::new();
    let mut child = None;
    let mut exited = false;
    while leaked.len() < WORKERS * PER || child.is_none() || !exited {
        let l = apache.expect("worker ", SECS10);
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.get(4).copied() {
            Some("upstream") => {
                assert_eq!(w[10], up, "{l}");
                leaked.push((
                    w[8].to_string(),
                    num::<usize>(&l, 1),
                    num::<u32>(&l, 3),
                    num::<u32>(&l, 6),
                ));
            }
            Some("child") => {
                let c: u32 = num(&l, 5);
                kill.0.push(c);
                child = Some(c);
            }
            _ if l == format!("worker {ORPHAN} exited") => exited = true,
            _ => {}
        }
    }
    let child = child.unwrap();
    let orphan_pid = workers[&ORPHAN];
    // The worker is gone for good; its child was reparented away.
    wait_for("the orphaned worker to vanish", SECS10, || {
        (!std::path::Path::new(&format!("/proc/{orphan_pid}")).exists()).then_some(())
    });
    let tuples: Vec<(String, String)> = leaked.iter().map(|x| (x.0.clone(), up.clone())).collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    let took = t0.elapsed();
    let j = &out.json;
    let parent = apache.pid() as u64;

    for (local, i, wpid, fd) in &leaked {
        let e = one(j, "stuck", local, &up);
        let ctx = pretty(e);
        assert_age(e, took);
        let h = holders(&e["holders"]);
        assert!(
            h.iter()
                .all(|&(p, _)| p != parent && p != upstream.pid() as u64),
            "{ctx}"
        );
        assert_eq!(e["origin"], "connect", "{ctx}");
        assert_eq!(
            e["origin_task"]["pid"], *wpid,
            "the worker connected: {ctx}"
        );
        assert_eq!(e["unread_bytes"], 0, "{ctx}");
        // The workers' Python frames, read from the live worker; the
        // orphan's creator exited before the report, so its walk cannot be
        // resolved: native frames only.
        assert_connect_stack(e, (*i != ORPHAN).then_some("CurlHandle.__init__"));
        if *i == ORPHAN {
            // Only the background job holds it; its creator exited.
            assert_eq!(h, vec![(child as u64, *fd as u64)], "{ctx}");
            assert_eq!(e["diagnosis"], "held-elsewhere", "{ctx}");
            assert!(
                e["evidence"]
                    .as_str()
                    .unwrap()
                    .contains("1 other process(es) still hold"),
                "{ctx}"
            );
        } else {
            assert_eq!(h, vec![(*wpid as u64, *fd as u64)], "{ctx}");
            assert_eq!(e["diagnosis"], "read-not-closed", "{ctx}");
            // Whether the upstream's FIN was consumed with the response
            // depends on timing (the kernel merges a FIN into the unread
            // data before it); both are a forgotten close().
            let why = e["evidence"].as_str().unwrap();
            assert!(
                why == FORGOT_CLOSE || why.ends_with("yet the descriptor is still open: a forgotten close() or a pool keeping dead connections"),
                "{ctx}"
            );
            assert!(
                !why.contains(PEER_GONE),
                "the upstream still listens: {ctx}"
            );
        }
    }
    assert_eq!(stuck(j).len(), WORKERS * PER, "{}", pretty(&j["stuck"]));
    // The workers that still hold their sockets are one pool (same
    // executable, parent and command line): one group, with each worker's
    // share (issue 10: one group per cause, not per process). The orphan's
    // sockets, held by its child, are their own group.
    let live: Vec<u32> = workers
        .iter()
        .filter(|(&i, _)| i != ORPHAN)
        .map(|(_, &p)| p)
        .collect();
    let pooled: Vec<&Value> = j["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["diagnosis"] == "read-not-closed")
        .collect();
    assert_eq!(pooled.len(), 1, "{}", pretty(&j["groups"]));
    let g = pooled[0];
    let gctx = pretty(g);
    assert_eq!(g["count"], (live.len() * PER) as u64, "{gctx}");
    assert_eq!(g["peer"], up.as_str(), "{gctx}");
    assert_eq!(g["pool"]["parent"], parent, "{gctx}");
    let mut members: Vec<(u64, u64)> = g["pool"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["pid"].as_u64().unwrap(), m["count"].as_u64().unwrap()))
        .collect();
    members.sort_unstable();
    let mut want: Vec<(u64, u64)> = live.iter().map(|&p| (p as u64, PER as u64)).collect();
    want.sort_unstable();
    assert_eq!(members, want, "{gctx}");
    assert_eq!(g["pid"], want[0].0, "named by its lowest pid: {gctx}");
    for &wpid in &live {
        let mine = leaked.iter().filter(|x| x.2 == wpid).count();
        assert_eq!(mine, PER, "worker {wpid} served {mine} requests");
    }
    let orphan = group(j, "held-elsewhere", orphan_pid, &up);
    assert_eq!(orphan["count"], PER as u64, "{}", pretty(orphan));
    let head = format!(
        "READ-NOT-CLOSED x{}  {} {} workers, children of {parent} <- peer {up}  ",
        live.len() * PER,
        live.len(),
        comm_of(live[0])
    );
    assert!(
        out.stdout.contains(&head),
        "no {head:?} in:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\n  command: ") && out.stdout.contains("/seeds.py prefork --workers "),
        "{}",
        out.stdout
    );
    assert_eq!(
        j["groups"].as_array().unwrap().len(),
        2,
        "{}",
        pretty(&j["groups"])
    );
    let offline = out.assert_report_reads_back();
    assert!(offline.contains(&head), "{offline}");
    for (local, i, _, fd) in leaked.iter().filter(|x| x.1 == ORPHAN) {
        let line = format!("  {local} <- {up}  age ");
        let l = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&line))
            .unwrap_or_else(|| panic!("no stuck line for {local} (worker {i}):\n{}", out.stdout));
        assert!(
            l.ends_with(&format!(
                "held-elsewhere  held by {}[{child}] fd {fd}",
                comm_of(child)
            )),
            "{l}"
        );
    }
}
