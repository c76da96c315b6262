//! `close-wait demo` run for real: it must find and explain its three leaks
//! and leave nothing behind.

use std::{collections::HashSet, path::Path, process::Command};

use close_wait_tests::*;

/// The numbers after each `[` of `line` up to `]`: pids of `name[pid]`.
fn bracketed(line: &str) -> Vec<u32> {
    line.split('[')
        .skip(1)
        .filter_map(|s| s.split(']').next()?.parse().ok())
        .collect()
}

#[test]
fn demo_finds_explains_and_cleans_up() {
    if !privileged("demo_finds_explains_and_cleans_up") {
        return;
    }
    let out = Command::new(bin())
        .args(["demo", "--duration", "4s"])
        .output()
        .expect("run close-wait demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}): {stderr}\n{stdout}",
        out.status
    );

    // Who it started: name[pid] (what it is, :port).
    let started = stderr
        .lines()
        .find(|l| l.starts_with("demo: started "))
        .unwrap_or_else(|| panic!("no 'demo: started' line: {stderr}"));
    let pid_of = |name: &str| -> u32 {
        let at = started
            .find(&format!("{name}["))
            .unwrap_or_else(|| panic!("{name} not started: {started}"));
        bracketed(&started[at..])[0]
    };
    let (pool, uploads, backlog, api) = (
        pid_of("demo-pool"),
        pid_of("demo-uploads"),
        pid_of("demo-backlog"),
        pid_of("demo-api"),
    );
    let ports: HashSet<u16> = started
        .split(":")
        .skip(1)
        .filter_map(|s| s.split(')').next()?.parse().ok())
        .collect();
    assert_eq!(ports.len(), 3, "three servers' ports in {started}");

    // Each leak is named with its diagnosis and its process, and explained.
    for (head, pid, count) in [
        ("READ-NOT-CLOSED", pool, 3),
        ("NEVER-READ", uploads, 3),
        ("UNACCEPTED", backlog, 2),
    ] {
        let name = match head {
            "READ-NOT-CLOSED" => "demo-pool",
            "NEVER-READ" => "demo-uploads",
            _ => "demo-backlog",
        };
        let group = format!("\n{head} x{count}  {name}[{pid}] <- peer 127.0.0.1");
        assert!(stdout.contains(&group), "no {group:?} in:\n{stdout}");
        let explained = stdout
            .split("What the demo's findings mean:")
            .nth(1)
            .unwrap_or_else(|| panic!("no explanations:\n{stdout}"));
        let at = explained
            .find(&format!("\n{head} x{count}  {name}[{pid}]\n"))
            .unwrap_or_else(|| panic!("{head} of {name} not explained:\n{explained}"));
        let lines: Vec<&str> = explained[at..].lines().skip(2).take(2).collect();
        assert!(
            lines[0].starts_with(&format!("  {name}[{pid}] is the ")) && lines[1].len() > 20,
            "two lines expected: {lines:?}"
        );
    }
    // The never-read workers are shown blocked in write() on the full pipe.
    assert!(
        stdout.contains("via write(2) on fd 4 -> pipe:[")
            && stdout.contains(&format!("whose read end is held by pid {uploads} fd 3")),
        "{stdout}"
    );
    // The pool's connected sockets hold local ports toward the server.
    assert!(
        stdout.contains("  ports: 3 of ")
            && stdout.contains("(net.ipv4.ip_local_port_range) held toward 127.0.0.1:"),
        "{stdout}"
    );
    // The well-behaved server has no stuck group.
    assert!(
        !stdout.contains(&format!("  demo-api[{api}] <- ")),
        "{stdout}"
    );
    assert!(
        !stdout
            .lines()
            .any(|l| l.contains(&format!("demo-api[{api}]")) && l.contains(" x")),
        "{stdout}"
    );

    // Nothing left behind: every pid it started (the tracer too) is gone,
    // no CLOSE_WAIT socket on its ports, its temp dir removed.
    let last = stdout
        .lines()
        .find(|l| l.starts_with("demo: stopped pids "))
        .unwrap_or_else(|| panic!("no cleanup line:\n{stdout}"));
    let pids: Vec<u32> = last["demo: stopped pids ".len()..]
        .split(';')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 6, "five programs and the tracer: {last}");
    for p in [pool, uploads, backlog, api] {
        assert!(pids.contains(&p), "{p} not stopped: {last}");
    }
    for p in &pids {
        // A pid reused by another process would not run the demo.
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains("demo-child") && !cmdline.contains("record"),
            "pid {p} still alive: {cmdline}"
        );
    }
    let ss = Command::new("ss")
        .args(["-tanH", "state", "close-wait"])
        .output()
        .expect("ss (iproute2)");
    let ss = String::from_utf8_lossy(&ss.stdout);
    for l in ss.lines() {
        for p in &ports {
            assert!(
                !l.contains(&format!(":{p} ")),
                "CLOSE_WAIT socket left on port {p}: {l}"
            );
        }
    }
    let dir = last.rsplit("removed ").next().unwrap().trim();
    assert!(
        dir.starts_with(&std::env::temp_dir().display().to_string()),
        "{last}"
    );
    assert!(!Path::new(dir).exists(), "{dir} left behind");
}
