//! Endings by a kernel timer: a peer that vanishes without a reset, and a
//! socket in CLOSE_WAIT whose data the kernel retransmits into the void
//! until TCP_USER_TIMEOUT gives up (CLOSE_WAIT -> CLOSE in timer context).
//! Server and client live in two network namespaces the test makes, joined
//! by a veth pair; the client's side of the link is taken down.

use std::{process::Command, time::Duration};

use close_wait_tests::*;

const SERVER_ADDR: &str = "10.251.7.1";
const CLIENT_ADDR: &str = "10.251.7.2";
const USER_TIMEOUT_MS: u64 = 1000;

/// tests/helpers/timeout_peer.py ROLE ARGS inside namespace `ns`.
fn peer_in(ns: &TestNetns, role: &str, args: &[&str]) -> Proc {
    ns.python_helper("timeout_peer.py", role, args)
}

/// A server in `ns` on SERVER_ADDR: (server, port).
fn server_in(ns: &TestNetns, args: &[&str]) -> (Proc, u16) {
    let mut a = vec!["--host", SERVER_ADDR];
    a.extend_from_slice(args);
    let p = peer_in(ns, "server", &a);
    let l = p.expect("listening ", Duration::from_secs(10));
    let port = l.split_whitespace().nth(1).unwrap().parse().unwrap();
    (p, port)
}

/// A socket in CLOSE_WAIT whose peer disappeared (its link down, no reset
/// ever sent) ends when TCP_USER_TIMEOUT gives up on the data written to
/// it: ending `timeout`, no closer, closed_by `timeout`, counted as such;
/// an abort by close() with unread data over the same link still reads
/// `abort` with its server as the closer.
#[test]
fn user_timeout_in_close_wait_is_a_timeout_without_closer() {
    if !privileged("user_timeout_in_close_wait_is_a_timeout_without_closer") {
        return;
    }
    // Declared before the processes in them, so those are killed first.
    let srv_ns = TestNetns::new("tmo-s");
    let cli_ns = TestNetns::new("tmo-c");
    ip(&[
        "-n",
        &srv_ns.name,
        "link",
        "add",
        "cwt-s",
        "type",
        "veth",
        "peer",
        "name",
        "cwt-c",
        "netns",
        &cli_ns.name,
    ]);
    ip(&[
        "-n",
        &srv_ns.name,
        "addr",
        "add",
        &format!("{SERVER_ADDR}/30"),
        "dev",
        "cwt-s",
    ]);
    ip(&[
        "-n",
        &cli_ns.name,
        "addr",
        "add",
        &format!("{CLIENT_ADDR}/30"),
        "dev",
        "cwt-c",
    ]);
    ip(&["-n", &srv_ns.name, "link", "set", "cwt-s", "up"]);
    ip(&["-n", &cli_ns.name, "link", "set", "cwt-c", "up"]);
    // The client's MAC as a permanent neighbour: taking the link down then
    // flushes no ARP entry, so no ARP failure (EHOSTUNREACH) can race the
    // user timeout; only the retransmission timer ends the socket.
    let out = Command::new("ip")
        .args(["-n", &cli_ns.name, "-br", "link", "show", "cwt-c"])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in {text:?}"))
        .to_string();
    ip(&[
        "-n",
        &srv_ns.name,
        "neigh",
        "replace",
        CLIENT_ADDR,
        "lladdr",
        &mac,
        "dev",
        "cwt-s",
        "nud",
        "permanent",
    ]);

    let dir = tempdir("timeout");
    let go = dir.join("go");
    let go_s = go.to_str().unwrap();
    let ut = USER_TIMEOUT_MS.to_string();
    let (tmo_srv, tmo_port) = server_in(
        &srv_ns,
        &[
            "--mode",
            "user-timeout",
            "--go",
            go_s,
            "--user-timeout-ms",
            &ut,
        ],
    );
    let (abort_srv, abort_port) = server_in(&srv_ns, &["--mode", "close-unread"]);
    let tracer = Tracer::start(&[
        "-L",
        &tmo_port.to_string(),
        "-L",
        &abort_port.to_string(),
        "--threshold",
        "60s",
    ]);

    // The abort: 100 bytes the server never reads, then close() on EOF.
    let abort_cli = peer_in(
        &cli_ns,
        "client",
        &[
            "--connect",
            &format!("{SERVER_ADDR}:{abort_port}"),
            "--send",
            "100",
        ],
    );
    let (_, abort_local, abort_remote) =
        parse_accepted(&abort_srv.expect("accepted", Duration::from_secs(10)));
    abort_cli.expect("done", Duration::from_secs(10));
    abort_srv.expect("closed", Duration::from_secs(10));

    // The timeout: the client closes, the server sits in CLOSE_WAIT.
    let tmo_cli = peer_in(
        &cli_ns,
        "client",
        &["--connect", &format!("{SERVER_ADDR}:{tmo_port}")],
    );
    let (_, tmo_local, tmo_remote) =
        parse_accepted(&tmo_srv.expect("accepted", Duration::from_secs(10)));
    tmo_cli.expect("done", Duration::from_secs(10));
    tmo_srv.expect("close-wait", Duration::from_secs(10));
    // The client vanishes without a reset: its side of the link goes down,
    // then the server writes, and every (re)transmission is dropped.
    ip(&["-n", &cli_ns.name, "link", "set", "cwt-c", "down"]);
    std::fs::write(&go, b"").unwrap();
    let gave_up = tmo_srv.expect("gave up", Duration::from_secs(20));
    assert_eq!(
        gave_up, "gave up ETIMEDOUT",
        "the kernel's timer should have ended the socket"
    );
    // The exit event is in the ring buffer by now; give the drain a moment.
    std::thread::sleep(Duration::from_millis(300));
    let out = stop_ok(tracer);
    let j = &out.json;

    let e = one(j, "episodes", &tmo_local, &tmo_remote);
    assert_eq!(e["ending"], "timeout", "{}", pretty(e));
    assert!(
        e["closer"].is_null(),
        "a timeout has a closer: {}",
        pretty(e)
    );
    assert_eq!(e["closed_by"], "timeout", "{}", pretty(e));
    assert_eq!(e["since_attach"], false, "{}", pretty(e));
    assert_eq!(e["netns"], srv_ns.inode(), "{}", pretty(e));
    // It stayed in CLOSE_WAIT at least the user timeout (causal bound).
    let d = e["duration_ms"].as_f64().expect("duration_ms");
    assert!(d >= USER_TIMEOUT_MS as f64, "lasted {d} ms: {}", pretty(e));

    let e = one(j, "episodes", &abort_local, &abort_remote);
    assert_eq!(e["ending"], "abort", "{}", pretty(e));
    assert_eq!(e["closer"]["pid"], abort_srv.pid(), "{}", pretty(e));

    // Neither is left in CLOSE_WAIT; the ports filtered in the kernel make
    // the counters ours alone.
    for (l, r) in [(&tmo_local, &tmo_remote), (&abort_local, &abort_remote)] {
        assert!(find(j, "stuck", l, r).is_empty(), "{}", pretty(&j["stuck"]));
    }
    let c = &j["counters"];
    assert_eq!(c["close_wait_entered"], 2, "{c}");
    assert_eq!(c["closed_timeout"], 1, "{c}");
    assert_eq!(c["closed_abort"], 1, "{c}");
    assert_eq!(c["closed_graceful"], 0, "{c}");
    assert_eq!(c["peer_reset"], 0, "{c}");
    assert_eq!(c["close_wait_now"], 0, "{c}");
    assert_eq!(c["lost_events"], 0, "{c}");
    assert!(
        out.stdout
            .contains("closed: graceful 0 abort 1 peer_reset 0 timeout 1;"),
        "human report: {}",
        out.stdout
    );
    out.assert_report_reads_back();
}
