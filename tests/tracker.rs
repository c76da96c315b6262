//! Episode endings, owners, filters and bounds, checked against the JSON
//! report of `close-wait record` on real CLOSE_WAIT sockets made on loopback
//! by servers and clients in separate processes.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use close_wait_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// The server side of one accepted connection, as the server printed it.
struct Conn {
    fd: u32,
    local: String,
    remote: String,
}

fn accepted(srv: &Proc) -> Conn {
    let (fd, local, remote) = parse_accepted(&srv.expect("accepted", T));
    Conn { fd, local, remote }
}

fn client(addr: &str, args: &[&str]) -> Proc {
    let mut a = vec!["--connect", addr];
    a.extend_from_slice(args);
    peer("client", &a)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Waits until the server's socket of `c` has left CLOSE_WAIT.
fn wait_left_close_wait(c: &Conn) {
    wait_for(
        &format!("{} <- {} to leave CLOSE_WAIT", c.local, c.remote),
        T,
        || (socket_state(&c.local, &c.remote).as_deref() != Some("CLOSE-WAIT")).then_some(()),
    );
}

/// Waits until the server's socket of `c` is in CLOSE_WAIT.
fn wait_close_wait(c: &Conn) {
    wait_for(
        &format!("{} <- {} in CLOSE_WAIT", c.local, c.remote),
        T,
        || (socket_state(&c.local, &c.remote).as_deref() == Some("CLOSE-WAIT")).then_some(()),
    );
}

fn ms(e: &Value, key: &str) -> f64 {
    e[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number '{key}' in {e}"))
}

#[test]
fn every_ending_reported_for_its_own_tuple() {
    if !privileged("every_ending_reported_for_its_own_tuple") {
        return;
    }
    let (s_close, p_close) = server(&["--mode", "close-after-eof", "--delay-ms", "200"]);
    let (s_shut, p_shut) = server(&["--mode", "shutdown-after-eof", "--delay-ms", "200"]);
    let (s_abort, p_abort) = server(&["--mode", "close-unread", "--delay-ms", "200"]);
    let (s_rst, p_rst) = server(&["--mode", "hold"]);
    let (s_hold, p_hold) = server(&["--mode", "hold"]);
    let ports = [p_close, p_shut, p_abort, p_rst, p_hold].map(|p| p.to_string());
    let mut args = vec!["--threshold", "200ms"];
    for p in &ports {
        args.extend(["-L", p.as_str()]);
    }
    let tracer = Tracer::start(&args);

    let c_close = client(&v4(p_close), &[]);
    let c_shut = client(&v4(p_shut), &[]);
    let c_abort = client(&v4(p_abort), &["--send", "100"]);
    let c_rst = client(&v4(p_rst), &["--mode", "rst", "--rst-after-ms", "300"]);
    let hold_started = Instant::now();
    let c_hold = client(&v4(p_hold), &[]);
    let graceful = accepted(&s_close);
    let shut = accepted(&s_shut);
    let abort = accepted(&s_abort);
    let reset = accepted(&s_rst);
    let stuck = accepted(&s_hold);
    c_hold.expect("done", T);
    let hold_done = Instant::now();
    for c in [&c_close, &c_shut, &c_abort, &c_rst] {
        c.expect("done", T);
    }
    for c in [&graceful, &shut, &abort, &reset] {
        wait_left_close_wait(c);
    }
    assert_eq!(
        socket_state(&stuck.local, &stuck.remote).as_deref(),
        Some("CLOSE-WAIT")
    );
    // The held socket must be older than the threshold when reported.
    std::thread::sleep(Duration::from_millis(
        400u64.saturating_sub(hold_done.elapsed().as_millis() as u64),
    ));
    let before_stop = Instant::now();
    let out = stop_ok(tracer);
    let stopped = Instant::now();
    let j = &out.json;

    // close() after EOF: graceful, closed by the server after its delay.
    let e = one(j, "episodes", &graceful.local, &graceful.remote);
    assert_eq!(e["ending"], "graceful", "{e}");
    assert_eq!(e["closer"]["pid"], s_close.pid(), "{e}");
    assert_eq!(e["since_attach"], false, "{e}");
    let d = ms(e, "duration_ms");
    assert!(
        (200.0..900.0).contains(&d),
        "graceful close lasted {d} ms: {e}"
    );

    // shutdown(SHUT_WR) after EOF: graceful too, by the server.
    let e = one(j, "episodes", &shut.local, &shut.remote);
    assert_eq!(e["ending"], "graceful", "{e}");
    assert_eq!(e["closer"]["pid"], s_shut.pid(), "{e}");
    let d = ms(e, "duration_ms");
    assert!((200.0..900.0).contains(&d), "shutdown lasted {d} ms: {e}");

    // close() with 100 unread bytes: abort, by the server.
    let e = one(j, "episodes", &abort.local, &abort.remote);
    assert_eq!(e["ending"], "abort", "{e}");
    assert_eq!(e["closer"]["pid"], s_abort.pid(), "{e}");
    let d = ms(e, "duration_ms");
    assert!((200.0..900.0).contains(&d), "abort came after {d} ms: {e}");

    // Peer RST 300 ms after its FIN: peer_reset, no closer (softirq / the
    // peer's context is not the owner).
    let e = one(j, "episodes", &reset.local, &reset.remote);
    assert_eq!(e["ending"], "peer_reset", "{e}");
    assert!(e["closer"].is_null(), "peer_reset has a closer: {e}");
    let d = ms(e, "duration_ms");
    assert!((300.0..1000.0).contains(&d), "reset came after {d} ms: {e}");

    // Never closed: stuck, not an episode, aged since the client's FIN.
    assert!(
        find(j, "episodes", &stuck.local, &stuck.remote).is_empty(),
        "held socket reported as an episode: {}",
        pretty(&j["episodes"])
    );
    let s = one(j, "stuck", &stuck.local, &stuck.remote);
    let age = s["age_ms"].as_u64().expect("age_ms");
    let lo = before_stop.duration_since(hold_done).as_millis() as u64;
    let hi = stopped.duration_since(hold_started).as_millis() as u64;
    assert!(
        (lo.saturating_sub(5)..=hi + 5).contains(&age),
        "age {age} ms outside [{lo}, {hi}]: {s}"
    );
    assert_eq!(s["since_attach"], false, "{s}");
    assert_eq!(s["age_estimated"], false, "{s}");
    assert_eq!(
        holders(&s["holders"]),
        vec![(s_hold.pid() as u64, stuck.fd as u64)]
    );
    // The other four are not stuck.
    for c in [&graceful, &shut, &abort, &reset] {
        assert!(
            find(j, "stuck", &c.local, &c.remote).is_empty(),
            "{}",
            pretty(&j["stuck"])
        );
    }

    // The kernel filtered on our five ports: the counters are ours alone.
    let c = &j["counters"];
    assert_eq!(c["close_wait_entered"], 5, "{c}");
    assert_eq!(c["closed_graceful"], 2, "{c}");
    assert_eq!(c["closed_abort"], 1, "{c}");
    assert_eq!(c["peer_reset"], 1, "{c}");
    assert_eq!(c["close_wait_now"], 1, "{c}");
    assert_eq!(c["stuck"], 1, "{c}");
    assert_eq!(c["lost_events"], 0, "{c}");
    assert_eq!(
        j["episodes"].as_array().unwrap().len(),
        4,
        "{}",
        pretty(&j["episodes"])
    );
    // Every closed episode is in the duration histograms, the peer reset
    // (no closer) under `comm:?`; the held socket only under `open`.
    let hist = |tag: &str| -> u64 {
        j["histograms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["tag"] == tag)
            .map(|h| h["count"].as_u64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(hist("all"), 4, "{}", pretty(&j["histograms"]));
    assert_eq!(hist("comm:?"), 1, "{}", pretty(&j["histograms"]));
    assert_eq!(hist("open"), 1, "{}", pretty(&j["histograms"]));
}

#[test]
fn owner_is_the_accepting_server_not_the_peer() {
    if !privileged("owner_is_the_accepting_server_not_the_peer") {
        return;
    }
    let (srv, port) = server(&["--mode", "hold"]);
    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "200ms"]);
    // The client sends its FIN (the CLOSE_WAIT entry runs in its context)
    // and stays alive holding its own end while the report is made.
    let cli = client(&v4(port), &["--mode", "rst", "--rst-after-ms", "20000"]);
    cli.expect("client local", T);
    let conn = accepted(&srv);
    wait_close_wait(&conn);
    std::thread::sleep(Duration::from_millis(400));
    // The client is alive and still holds its end of the connection.
    assert_eq!(
        socket_state(&conn.remote, &conn.local).as_deref(),
        Some("FIN-WAIT-2")
    );
    let mut cli = cli;
    assert!(
        cli.child.try_wait().unwrap().is_none(),
        "client exited early"
    );
    let out = stop_ok(tracer);

    let s = one(&out.json, "stuck", &conn.local, &conn.remote);
    assert_eq!(
        holders(&s["holders"]),
        vec![(srv.pid() as u64, conn.fd as u64)],
        "holder is not the server (client pid {}): {s}",
        cli.pid()
    );
    assert_eq!(s["origin"], "accept", "{s}");
    assert_eq!(s["origin_task"]["pid"], srv.pid(), "{s}");
    assert_ne!(s["origin_task"]["pid"], cli.pid(), "{s}");
    // Nothing was sent, the EOF was never read.
    assert_eq!(s["unread_bytes"], 0, "{s}");
    assert_eq!(s["eof_unread"], true, "{s}");
    assert_eq!(s["diagnosis"], "read-not-closed", "{s}");
}

#[test]
fn fork_inherited_socket_is_held_by_the_child() {
    if !privileged("fork_inherited_socket_is_held_by_the_child") {
        return;
    }
    let (srv, port) = server(&["--mode", "fork-hold", "--hold", "20"]);
    // Which process accepted it is an accept-side fact, traced only with
    // --accept-stacks: from /proc alone the child (forked after accept(),
    // keeping the listener) looks like a prefork worker that accepted it.
    let tracer = Tracer::start(&[
        "-L",
        &port.to_string(),
        "--threshold",
        "200ms",
        "--accept-stacks",
    ]);
    let cli = client(&v4(port), &[]);
    let conn = accepted(&srv);
    // The child and the parent print in either order.
    let line = wait_for("the forked child's line", T, || {
        let seen = srv.seen.lock().unwrap();
        seen.iter().find(|l| l.starts_with("child pid")).cloned()
    });
    // "child pid N holds fd F"
    let w: Vec<&str> = line.split_whitespace().collect();
    let (child, child_fd): (u32, u32) = (w[2].parse().unwrap(), w[5].parse().unwrap());
    let _kill = KillPids(vec![child]);
    wait_for("the parent to close its copy", T, || {
        let seen = srv.seen.lock().unwrap();
        seen.iter().any(|l| l == "parent closed fd").then_some(())
    });
    cli.expect("done", T);
    wait_close_wait(&conn);
    std::thread::sleep(Duration::from_millis(400));
    let out = stop_ok(tracer);

    let s = one(&out.json, "stuck", &conn.local, &conn.remote);
    assert_ne!(child, srv.pid());
    assert_eq!(child_fd, conn.fd, "a forked child keeps the fd number");
    assert_eq!(
        holders(&s["holders"]),
        vec![(child as u64, child_fd as u64)],
        "server {} closed its copy; only child {child} holds it: {s}",
        srv.pid()
    );
    assert_eq!(s["diagnosis"], "held-elsewhere", "{s}");
    assert_eq!(s["origin"], "accept", "{s}");
    assert_eq!(
        s["origin_task"]["pid"],
        srv.pid(),
        "the parent accepted it: {s}"
    );
}

#[test]
fn socket_in_close_wait_before_attach_is_stuck_since_attach() {
    if !privileged("socket_in_close_wait_before_attach_is_stuck_since_attach") {
        return;
    }
    let (srv, port) = server(&["--mode", "hold"]);
    let made = Instant::now();
    let cli = client(&v4(port), &[]);
    let conn = accepted(&srv);
    cli.expect("done", T);
    wait_close_wait(&conn);

    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "200ms"]);
    let attached = Instant::now();
    let line = tracer.stderr_seen.lock().unwrap().join("\n");
    let already: u64 = line
        .split_once("tracing CLOSE_WAIT (")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of sockets already in CLOSE_WAIT: {line}"));
    assert!(already >= 1, "{line}");
    std::thread::sleep(Duration::from_millis(400));
    let before_stop = Instant::now();
    let out = stop_ok(tracer);
    let stopped = Instant::now();

    let j = &out.json;
    let s = one(j, "stuck", &conn.local, &conn.remote);
    assert_eq!(s["since_attach"], true, "{s}");
    assert_eq!(
        holders(&s["holders"]),
        vec![(srv.pid() as u64, conn.fd as u64)],
        "{s}"
    );
    // Accepted before the tracer: no accept() was traced.
    assert!(s["origin_task"].is_null(), "{s}");
    let age = s["age_ms"].as_u64().unwrap();
    let lo = before_stop.duration_since(attached).as_millis() as u64;
    let hi = stopped.duration_since(made).as_millis() as u64;
    assert!(
        (lo..=hi + 5).contains(&age),
        "age {age} outside [{lo}, {hi}]: {s}"
    );
    assert!(find(j, "episodes", &conn.local, &conn.remote).is_empty());
    assert_eq!(j["counters"]["close_wait_entered"], 0, "{}", j["counters"]);
}

#[test]
fn socket_in_close_wait_before_attach_reset_by_peer_has_no_closer() {
    if !privileged("socket_in_close_wait_before_attach_reset_by_peer_has_no_closer") {
        return;
    }
    let (srv, port) = server(&["--mode", "hold"]);
    // FIN now, RST 2.5 s later: after the tracer attached.
    let cli = client(&v4(port), &["--mode", "rst", "--rst-after-ms", "2500"]);
    let conn = accepted(&srv);
    wait_close_wait(&conn);
    let tracer = Tracer::start(&["-L", &port.to_string(), "--events"]);
    assert_eq!(
        socket_state(&conn.local, &conn.remote).as_deref(),
        Some("CLOSE-WAIT"),
        "the peer reset before the tracer attached: attaching took too long"
    );
    cli.expect("done", T);
    wait_left_close_wait(&conn);
    std::thread::sleep(Duration::from_millis(100));
    let out = stop_ok(tracer);

    // The CLOSE_WAIT -> CLOSE ran in the client's context (loopback), and
    // the tracker never saw the entry nor the reset event: the kernel's flag
    // must still make it a peer reset, not the client "closing" it.
    let j = &out.json;
    let e = one(j, "episodes", &conn.local, &conn.remote);
    assert_eq!(e["ending"], "peer_reset", "{e}");
    assert!(
        e["closer"].is_null(),
        "client {} taken for the closer: {e}",
        cli.pid()
    );
    assert_eq!(e["since_attach"], true, "{e}");
    assert!(e["duration_ms"].is_null(), "{e}");
    let c = &j["counters"];
    assert_eq!(c["peer_reset"], 1, "{c}");
    assert_eq!(c["closed_abort"], 0, "{c}");
    assert_eq!(c["exits_without_entry"], 1, "{c}");
    let line = out
        .stdout
        .lines()
        .find(|l| {
            l.contains(&format!(
                " {} -> {} CLOSE_WAIT -> CLOSE",
                conn.local, conn.remote
            ))
        })
        .unwrap_or_else(|| panic!("no event line: {}", out.stdout));
    assert!(
        !line.contains(&format!(" {}/", cli.pid())) && line.contains(" - "),
        "event line names the peer as the closer: {line}"
    );
}

#[test]
fn ipv6_loopback_is_reported_in_brackets() {
    if !privileged("ipv6_loopback_is_reported_in_brackets") {
        return;
    }
    let (s_close, p_close) = server(&[
        "--family",
        "6",
        "--mode",
        "close-after-eof",
        "--delay-ms",
        "100",
    ]);
    let (s_hold, p_hold) = server(&["--family", "6", "--mode", "hold"]);
    let tracer = Tracer::start(&[
        "-L",
        &p_close.to_string(),
        "-L",
        &p_hold.to_string(),
        "--threshold",
        "200ms",
    ]);
    let c1 = client(&format!("[::1]:{p_close}"), &[]);
    let c2 = client(&format!("[::1]:{p_hold}"), &[]);
    let closed = accepted(&s_close);
    let held = accepted(&s_hold);
    c1.expect("done", T);
    c2.expect("done", T);
    wait_left_close_wait(&closed);
    std::thread::sleep(Duration::from_millis(400));
    let out = stop_ok(tracer);
    let j = &out.json;

    assert_eq!(closed.local, format!("[::1]:{p_close}"));
    assert!(closed.remote.starts_with("[::1]:"), "{}", closed.remote);
    let e = one(j, "episodes", &closed.local, &closed.remote);
    assert_eq!(e["ending"], "graceful", "{e}");
    assert_eq!(e["closer"]["pid"], s_close.pid(), "{e}");
    let d = ms(e, "duration_ms");
    assert!((100.0..800.0).contains(&d), "{d} ms: {e}");

    assert_eq!(held.local, format!("[::1]:{p_hold}"));
    let s = one(j, "stuck", &held.local, &held.remote);
    assert_eq!(
        holders(&s["holders"]),
        vec![(s_hold.pid() as u64, held.fd as u64)],
        "{s}"
    );
    assert_eq!(s["origin_task"]["pid"], s_hold.pid(), "{s}");
}

/// A server whose first connection closes after 200 ms (an episode) and
/// whose second is never closed (stuck), per client run of two connections.
fn leaky_server() -> (Proc, u16) {
    server(&[
        "--mode",
        "close-after-eof",
        "--count",
        "4",
        "--delays",
        "200,60000,200,60000",
        "--hold",
        "60",
    ])
}

/// Two connections to one leaky server: the one it closes, the one it
/// holds, and their client.
struct Pair {
    closed: Conn,
    held: Conn,
    _cli: Proc,
}

/// Two connections to `port`.
fn two_connections(srv: &Proc, port: u16) -> Pair {
    let cli = client(&v4(port), &["--count", "2"]);
    let closed = accepted(srv);
    let held = accepted(srv);
    cli.expect("done", T);
    Pair {
        closed,
        held,
        _cli: cli,
    }
}

/// A tracer run with `args` over two connections to each of the leaky
/// servers `a` and `b`, stopped once both closed ones left CLOSE_WAIT.
fn filtered_run(args: &[&str], a: (&Proc, u16), b: (&Proc, u16)) -> (Finished, Pair, Pair) {
    let tracer = Tracer::start(args);
    let pa = two_connections(a.0, a.1);
    let pb = two_connections(b.0, b.1);
    wait_left_close_wait(&pa.closed);
    wait_left_close_wait(&pb.closed);
    std::thread::sleep(Duration::from_millis(300));
    (stop_ok(tracer), pa, pb)
}

/// `j` has `kept`'s episode (closed by `srv`) and stuck socket (held by
/// `srv` alone), and neither of `dropped`'s.
fn assert_kept_only(j: &Value, srv: &Proc, kept: &Pair, dropped: &Pair) {
    let e = one(j, "episodes", &kept.closed.local, &kept.closed.remote);
    assert_eq!(e["closer"]["pid"], srv.pid(), "{e}");
    let s = one(j, "stuck", &kept.held.local, &kept.held.remote);
    assert_eq!(
        holders(&s["holders"]),
        vec![(srv.pid() as u64, kept.held.fd as u64)]
    );
    let (closed, held) = (&dropped.closed, &dropped.held);
    assert!(find(j, "episodes", &closed.local, &closed.remote).is_empty());
    assert!(
        find(j, "stuck", &held.local, &held.remote).is_empty(),
        "{}",
        pretty(&j["stuck"])
    );
}

fn assert_all(j: &Value, key: &str, what: &str, ok: impl Fn(&Value) -> bool) {
    for e in j[key].as_array().unwrap() {
        assert!(ok(e), "{key} entry not {what}: {e}");
    }
}

#[test]
fn port_and_pid_filters_keep_only_their_sockets() {
    if !privileged("port_and_pid_filters_keep_only_their_sockets") {
        return;
    }
    let (sa, pa) = leaky_server();
    let (sb, pb) = leaky_server();

    // Run 1: -L A.
    let args = ["-L", &pa.to_string(), "--threshold", "200ms"];
    let (out, a1, b1) = filtered_run(&args, (&sa, pa), (&sb, pb));
    let j = &out.json;
    assert_kept_only(j, &sa, &a1, &b1);
    assert_all(j, "episodes", "on port A", |e| {
        port_of(e["local"].as_str().unwrap()) == pa
    });
    assert_all(j, "stuck", "on port A", |e| {
        port_of(e["local"].as_str().unwrap()) == pa
    });
    assert_eq!(j["counters"]["close_wait_entered"], 2, "{}", j["counters"]);

    // Run 2: -p B. The sockets of run 1 are still in CLOSE_WAIT: B's is
    // kept (since attach), A's is not.
    let args = ["-p", &sb.pid().to_string(), "--threshold", "200ms"];
    let (out, a2, b2) = filtered_run(&args, (&sa, pa), (&sb, pb));
    let j = &out.json;
    assert_kept_only(j, &sb, &b2, &a2);
    let s = one(j, "stuck", &b2.held.local, &b2.held.remote);
    assert_eq!(s["since_attach"], false, "{s}");
    let s = one(j, "stuck", &b1.held.local, &b1.held.remote);
    assert_eq!(
        holders(&s["holders"]),
        vec![(sb.pid() as u64, b1.held.fd as u64)]
    );
    assert_eq!(s["since_attach"], true, "{s}");
    assert!(
        find(j, "stuck", &a1.held.local, &a1.held.remote).is_empty(),
        "{}",
        pretty(&j["stuck"])
    );
    let b = sb.pid() as u64;
    assert_all(j, "episodes", "closed by B", |e| e["closer"]["pid"] == b);
    assert_all(j, "stuck", "held by B", |e| {
        holders(&e["holders"]).iter().any(|h| h.0 == b)
    });
    assert_eq!(j["counters"]["stuck"], 2, "{}", j["counters"]);
}

#[test]
fn map_bound_counts_evictions_and_still_finds_every_socket() {
    if !privileged("map_bound_counts_evictions_and_still_finds_every_socket") {
        return;
    }
    let (srv, port) = server(&["--mode", "hold", "--count", "40"]);
    let tracer = Tracer::start(&[
        "-L",
        &port.to_string(),
        "--max-sockets",
        "8",
        "--threshold",
        "200ms",
        "--interval",
        "300ms",
    ]);
    let cli = client(&v4(port), &["--count", "40"]);
    let conns: Vec<Conn> = (0..40).map(|_| accepted(&srv)).collect();
    cli.expect("done", T);
    for c in &conns {
        wait_close_wait(c);
    }
    // The status line names the evictions once the interval has passed.
    let end = Instant::now() + T;
    let evicted = loop {
        let l = tracer.wait_stderr("evicted", T);
        let n: u64 = l.rsplit("evicted ").next().unwrap().trim().parse().unwrap();
        if n >= 32 || Instant::now() > end {
            break n;
        }
    };
    assert!(
        (32..=40).contains(&evicted),
        "status line: {evicted} evicted"
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = stop_ok(tracer);
    let j = &out.json;
    let c = &j["counters"];
    let ev = c["map_evictions"].as_u64().unwrap();
    assert!((32..=40).contains(&ev), "map_evictions {ev}: {c}");
    assert_eq!(c["close_wait_entered"], 40, "{c}");
    assert_eq!(c["close_wait_now"], 40, "{c}");
    assert_eq!(c["stuck"], 40, "{c}");
    for conn in &conns {
        let s = one(j, "stuck", &conn.local, &conn.remote);
        assert_eq!(
            holders(&s["holders"]),
            vec![(srv.pid() as u64, conn.fd as u64)],
            "{s}"
        );
        assert!(s["age_ms"].as_u64().unwrap() >= 200, "{s}");
    }
    // Userspace keeps the same bound: the 8 newest have a traced entry time,
    // the others' age comes from tcp_info.
    let estimated = conns
        .iter()
        .filter(|c| one(j, "stuck", &c.local, &c.remote)["age_estimated"] == true)
        .count();
    assert_eq!(estimated, 32, "{}", pretty(&j["stuck"]));
    for c in &conns[32..] {
        assert_eq!(one(j, "stuck", &c.local, &c.remote)["age_estimated"], false);
    }
}

#[test]
fn fail_on_stuck_sets_the_exit_status() {
    if !privileged("fail_on_stuck_sets_the_exit_status") {
        return;
    }
    // Stuck: status 3.
    let (srv, port) = server(&["--mode", "hold"]);
    let tracer = Tracer::start(&[
        "-L",
        &port.to_string(),
        "--threshold",
        "200ms",
        "--fail-on-stuck",
    ]);
    let cli = client(&v4(port), &[]);
    let conn = accepted(&srv);
    cli.expect("done", T);
    wait_close_wait(&conn);
    std::thread::sleep(Duration::from_millis(400));
    let out = tracer.stop();
    assert_eq!(out.status.code(), Some(3), "stderr: {}", out.stderr);
    one(&out.json, "stuck", &conn.local, &conn.remote);
    assert_eq!(out.json["counters"]["stuck"], 1);

    // Closed in time: status 0.
    let (srv, port) = server(&["--mode", "close-after-eof", "--delay-ms", "50"]);
    let tracer = Tracer::start(&[
        "-L",
        &port.to_string(),
        "--threshold",
        "200ms",
        "--fail-on-stuck",
    ]);
    let cli = client(&v4(port), &[]);
    let conn = accepted(&srv);
    cli.expect("done", T);
    wait_left_close_wait(&conn);
    std::thread::sleep(Duration::from_millis(400));
    let out = stop_ok(tracer);
    assert_eq!(
        one(&out.json, "episodes", &conn.local, &conn.remote)["ending"],
        "graceful"
    );
    assert_eq!(out.json["counters"]["stuck"], 0, "{}", out.json["counters"]);
}

#[test]
fn snapshot_lists_close_wait_with_holder_and_unread_bytes() {
    if !privileged("snapshot_lists_close_wait_with_holder_and_unread_bytes") {
        return;
    }
    let (srv, port) = server(&["--mode", "hold"]);
    let cli = client(&v4(port), &["--send", "100"]);
    let conn = accepted(&srv);
    cli.expect("done", T);
    wait_close_wait(&conn);
    let dir = tempdir("snapshot");
    let json = dir.join("snap.json");
    let out = Command::new(bin())
        .args(["snapshot", "-L", &port.to_string(), "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["schema"], "close-wait.report.v1");
    let s = one(&j, "stuck", &conn.local, &conn.remote);
    assert_eq!(
        holders(&s["holders"]),
        vec![(srv.pid() as u64, conn.fd as u64)],
        "{s}"
    );
    assert_eq!(s["unread_bytes"], 100, "{s}");
    assert_eq!(s["eof_unread"], true, "{s}");
    assert_eq!(s["diagnosis"], "never-read", "{s}");
    assert_eq!(j["counters"]["close_wait_now"], 1, "{}", j["counters"]);
    assert_eq!(j["stuck"].as_array().unwrap().len(), 1);
    assert!(
        stdout.contains(&conn.local) && stdout.contains(&format!("fd {}", conn.fd)),
        "{stdout}"
    );
}

/// A cgroup v2 made for one test, removed (after its processes) on drop.
struct TestCgroup {
    dir: std::path::PathBuf,
}

impl TestCgroup {
    fn new(tag: &str) -> TestCgroup {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = info
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
            })
            .expect("a cgroup v2 hierarchy must be mounted for --cgroup");
        let dir = std::path::Path::new(&mount)
            .join(format!("close-wait-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup { dir }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The processes were killed before (declared after this guard);
        // rmdir succeeds once the kernel has reaped them.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn cgroup_filter_keeps_only_processes_inside() {
    if !privileged("cgroup_filter_keeps_only_processes_inside") {
        return;
    }
    let cg = TestCgroup::new("filter");
    let (sa, pa) = leaky_server();
    let (sb, pb) = leaky_server();
    cg.add(sa.pid());
    let path = cg.dir.to_string_lossy().into_owned();
    let args = ["--cgroup", &path, "--threshold", "200ms"];
    let (out, a1, b1) = filtered_run(&args, (&sa, pa), (&sb, pb));
    let j = &out.json;
    // A, inside the cgroup: its episode (by closer) and its stuck socket
    // (by holder) are kept; B, outside, is not.
    assert_kept_only(j, &sa, &a1, &b1);
    let a = sa.pid() as u64;
    assert_all(j, "episodes", "closed by A", |e| e["closer"]["pid"] == a);
    assert_all(j, "stuck", "held by A", |e| {
        e["holders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["pid"] == a)
    });
    drop((sa, sb));
}

#[test]
fn service_port_of_a_connected_socket_is_the_remote_port() {
    if !privileged("service_port_of_a_connected_socket_is_the_remote_port") {
        return;
    }
    // The server closes first: the *client's* socket goes to CLOSE_WAIT,
    // and the client closes it 300 ms later. Its service port is the
    // server's (remote) port, not its ephemeral local port.
    let (srv, port) = server(&["--mode", "close-now", "--count", "1", "--hold", "10"]);
    let tracer = Tracer::start(&["-D", &port.to_string(), "--threshold", "5s"]);
    let cli = client(
        &v4(port),
        &["--mode", "close-on-eof", "--close-delay-ms", "300"],
    );
    let local = cli.expect("client local", T);
    let local = local.split_whitespace().nth(2).unwrap().to_string();
    cli.expect("done", T);
    std::thread::sleep(Duration::from_millis(300));
    let out = stop_ok(tracer);
    let e = one(&out.json, "episodes", &local, &v4(port));
    assert_eq!(e["ending"], "graceful", "{e}");
    assert_eq!(e["closer"]["pid"], cli.pid(), "{e}");
    let tags: Vec<&str> = out.json["histograms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["tag"].as_str().unwrap())
        .collect();
    assert!(tags.contains(&format!("port:{port}").as_str()), "{tags:?}");
    assert!(
        !tags.contains(&format!("port:{}", port_of(&local)).as_str()),
        "{tags:?}"
    );
    drop(srv);
}

/// A peer pinned to CPU 0 (taskset execs it: same pid).
fn pinned_peer(role: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        &format!("pinned peer {role} {args:?}"),
        Command::new("taskset")
            .args(["-c", "0", "python3"])
            .arg(helper("peer.py"))
            .arg(role)
            .args(args),
    )
}

/// Socket addresses are reused by the kernel's allocator: thousands of
/// connect()ed sockets are made and freed on CPU 0, then sockets accepted on
/// CPU 0 (most land at addresses just freed) go to CLOSE_WAIT. None may carry
/// the origin of an earlier socket at its address: the origin leaves the map
/// when its socket reaches CLOSE.
#[test]
fn reused_socket_addresses_never_inherit_an_origin() {
    if !privileged("reused_socket_addresses_never_inherit_an_origin") {
        return;
    }
    const CHURN: usize = 3000;
    const HELD: usize = 20;
    let srv = pinned_peer("server", &["--mode", "hold", "--count", &HELD.to_string()]);
    let port: u16 = srv
        .expect("listening ", T)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let tracer = Tracer::start(&["--threshold", "200ms", "--interval", "300ms"]);
    let churn = Proc::spawn(
        "churn",
        Command::new("taskset")
            .args(["-c", "0", "python3"])
            .arg(helper("addr_churn.py"))
            .arg(CHURN.to_string()),
    );
    let done = churn.expect("churned ", Duration::from_secs(60));
    let churner: u64 = done.split_whitespace().nth(3).unwrap().parse().unwrap();
    let cli = pinned_peer(
        "client",
        &["--connect", &v4(port), "--count", &HELD.to_string()],
    );
    let conns: Vec<Conn> = (0..HELD).map(|_| accepted(&srv)).collect();
    cli.expect("done", T);
    for c in &conns {
        wait_close_wait(c);
    }
    std::thread::sleep(Duration::from_millis(400));
    let out = stop_ok(tracer);
    let j = &out.json;
    for c in &conns {
        let e = one(j, "stuck", &c.local, &c.remote);
        let ctx = pretty(e);
        assert_eq!(e["origin"], "accept", "{ctx}");
        assert_eq!(e["origin_task"]["pid"], srv.pid(), "{ctx}");
        assert_ne!(e["origin_task"]["pid"], churner, "a stale origin: {ctx}");
        assert_eq!(e["stack"], serde_json::json!([]), "{ctx}");
    }
    // The churner's own sockets were followed through and closed.
    assert_eq!(j["counters"]["lost_events"], 0, "{}", j["counters"]);
}
