//! Foundation: the tracer attaches for real and reports a real CLOSE_WAIT
//! made on loopback by a server and a client in separate processes.

use std::time::Duration;

use close_wait_tests::*;

const DELAY_MS: f64 = 300.0;

#[test]
fn reports_close_wait_transitions_and_time() {
    if !privileged("reports_close_wait_transitions_and_time") {
        return;
    }
    let (srv, port) = server(&["--mode", "close-after-eof", "--delay-ms", "300"]);
    let tracer = Tracer::start(&["--events", "-L", &port.to_string(), "--threshold", "5s"]);
    let cli = peer("client", &["--connect", &format!("127.0.0.1:{port}")]);
    let (_, local, remote) = parse_accepted(&srv.expect("accepted", Duration::from_secs(10)));
    cli.expect("done", Duration::from_secs(10));
    srv.expect("done", Duration::from_secs(10));
    // Let the last events reach the ring buffer.
    std::thread::sleep(Duration::from_millis(300));
    let out = stop_ok(tracer);

    // One line per transition, for exactly this port pair.
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(&format!(" {local} -> {remote} ")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ESTABLISHED -> CLOSE_WAIT")),
        "no ESTABLISHED -> CLOSE_WAIT for {local} <- {remote}: {}",
        out.stdout
    );
    let exit = lines
        .iter()
        .find(|l| l.contains("CLOSE_WAIT -> LAST_ACK"))
        .unwrap_or_else(|| panic!("no CLOSE_WAIT -> LAST_ACK line: {}", out.stdout));
    // The closer printed is the server process, not the client.
    assert!(
        exit.contains(&format!(" {}/", srv.pid())),
        "closer is not the server (pid {}): {exit}",
        srv.pid()
    );

    let ep = one(&out.json, "episodes", &local, &remote);
    assert_eq!(ep["ending"], "graceful");
    let ms = ep["duration_ms"].as_f64().expect("duration_ms");
    assert!(
        (DELAY_MS..DELAY_MS + 700.0).contains(&ms),
        "CLOSE_WAIT lasted {ms} ms, server closed after {DELAY_MS} ms"
    );
    assert_eq!(ep["closer"]["pid"], srv.pid());
    assert!(out.json["counters"]["close_wait_entered"].as_u64().unwrap() >= 1);
    assert_eq!(out.json["counters"]["lost_events"], 0);
}

#[test]
fn bad_input_fails_before_attaching() {
    // No privileges needed: these must fail on parsing, with one line.
    for (args, needle) in [
        (vec!["--duration", "5"], "invalid duration"),
        (vec!["--bogus-flag"], "--bogus-flag"),
        (vec!["--threshold", "1x"], "unknown unit"),
        (
            vec!["--json", "/nonexistent-dir/x.json"],
            "/nonexistent-dir",
        ),
    ] {
        let out = std::process::Command::new(bin())
            .arg("record")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks '{needle}': {err}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
    }
}

#[test]
fn missing_privileges_are_named() {
    if !is_root() {
        eprintln!("skipping missing_privileges_are_named: needs root to drop privileges");
        if in_ci() {
            panic!("CI=true: this test must run as root");
        }
        return;
    }
    // Run as nobody: no root, no CAP_BPF/CAP_PERFMON.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(bin())
        .args(["record", "--duration", "1s"])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("root or CAP_BPF + CAP_PERFMON") && err.contains("CAP_BPF"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "more than one line: {err}");
}

#[test]
fn missing_tracefs_is_named_before_attaching() {
    if !privileged("missing_tracefs_is_named_before_attaching") {
        return;
    }
    // A private mount namespace without tracefs (the host keeps its own).
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         umount /sys/kernel/debug 2>/dev/null; exec {} record --duration 1s",
        bin().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tracefs is not mounted"), "{err}");
    assert!(err.contains("mount -t tracefs"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "more than one line: {err}");
}
