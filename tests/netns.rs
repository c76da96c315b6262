//! Network namespaces: sockets in namespaces the test makes (`ip netns
//! add`) are traced, named by namespace, and never mixed up with sockets of
//! the same 4-tuple in another namespace.

use std::time::Duration;

use close_wait_tests::*;

/// The kernel side reads each socket's namespace (BTF offsets): an episode
/// in a namespace made here carries that namespace's inode, one on the
/// host's loopback carries ours.
#[test]
fn netns_episodes_carry_their_namespace() {
    if !privileged("netns_episodes_carry_their_namespace") {
        return;
    }
    let ns = TestNetns::new("ep");
    let (srv, port) = {
        let p = ns.peer(
            "server",
            &["--mode", "close-after-eof", "--delay-ms", "200"],
        );
        let l = p.expect("listening ", Duration::from_secs(10));
        let port: u16 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
        (p, port)
    };
    let (host_srv, host_port) = server(&["--mode", "close-after-eof", "--delay-ms", "200"]);
    let tracer = Tracer::start(&[
        "-L",
        &port.to_string(),
        "-L",
        &host_port.to_string(),
        "--threshold",
        "5s",
    ]);
    let cli = ns.peer("client", &["--connect", &v4(port)]);
    let host_cli = peer("client", &["--connect", &v4(host_port)]);
    let (_, local, remote) = parse_accepted(&srv.expect("accepted", Duration::from_secs(10)));
    let (_, hlocal, hremote) =
        parse_accepted(&host_srv.expect("accepted", Duration::from_secs(10)));
    for p in [&cli, &srv, &host_cli, &host_srv] {
        p.expect("done", Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = stop_ok(tracer);
    let ep = one(&out.json, "episodes", &local, &remote);
    assert_eq!(ep["ending"], "graceful", "{}", pretty(ep));
    assert_eq!(
        ep["netns"],
        ns.inode(),
        "episode in {}: {}",
        ns.name,
        pretty(ep)
    );
    // `ip netns exec` execs python: the server's pid is the closer.
    assert_eq!(ep["closer"]["pid"], srv.pid(), "{}", pretty(ep));
    let hep = one(&out.json, "episodes", &hlocal, &hremote);
    assert_eq!(hep["netns"], own_netns(), "host episode: {}", pretty(hep));
    assert_ne!(ns.inode(), own_netns());
}

/// A server in `ns` (host when None) that never reads, and a client that
/// sends `bytes` and closes: the server's socket stays in CLOSE_WAIT with
/// `bytes` unread. Returns (server, client, server port, accepted fd).
fn leak(ns: Option<&TestNetns>, port: u16, bind_port: u16, bytes: usize) -> (Proc, Proc, u16, u64) {
    let port_s = port.to_string();
    let srv_args = ["--port", &port_s, "--mode", "never-read", "--hold", "60"];
    let srv = match ns {
        Some(n) => n.peer("server", &srv_args),
        None => peer("server", &srv_args),
    };
    let l = srv.expect("listening ", Duration::from_secs(10));
    let port: u16 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (target, bind, send) = (v4(port), bind_port.to_string(), bytes.to_string());
    let mut cli_args = vec!["--connect", &target, "--send", &send, "--mode", "close"];
    if bind_port != 0 {
        cli_args.extend(["--bind-port", &bind]);
    }
    let cli = match ns {
        Some(n) => n.peer("client", &cli_args),
        None => peer("client", &cli_args),
    };
    let (fd, _, _) = parse_accepted(&srv.expect("accepted", Duration::from_secs(10)));
    cli.expect("done", Duration::from_secs(10));
    (srv, cli, port, u64::from(fd))
}

const PORT: u16 = 9099;
const CLIENT_PORT: u16 = 45123;

/// The stuck sockets of `json` with this 4-tuple, by netns.
fn by_netns<'a>(
    json: &'a serde_json::Value,
    local: &str,
    remote: &str,
) -> Vec<(u64, &'a serde_json::Value)> {
    let mut v: Vec<(u64, &serde_json::Value)> = find(json, "stuck", local, remote)
        .into_iter()
        .map(|s| (s["netns"].as_u64().expect("netns"), s))
        .collect();
    v.sort_by_key(|(n, _)| *n);
    v
}

fn check_leak(s: &serde_json::Value, srv: &Proc, fd: u64, unread: u64) {
    assert_eq!(s["unread_bytes"], unread, "{}", pretty(s));
    assert_eq!(
        holders(&s["holders"]),
        vec![(u64::from(srv.pid()), fd)],
        "holder: {}",
        pretty(s)
    );
    assert_eq!(s["diagnosis"], "never-read", "{}", pretty(s));
}

/// Two namespaces hold the very same 4-tuple (127.0.0.1:9099 <-
/// 127.0.0.1:45123) in CLOSE_WAIT with different unread bytes and
/// holders, a third leak sits in the host namespace: `record` (one of
/// them there before it started) and `snapshot` report all three, each
/// with its own holder, unread bytes and netns; `--netns` keeps one.
#[test]
fn same_four_tuple_in_two_namespaces_is_two_sockets() {
    if !privileged("same_four_tuple_in_two_namespaces_is_two_sockets") {
        return;
    }
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    // Before the tracer: found at start-up in its namespace.
    let (srv_a, _cli_a, _, fd_a) = leak(Some(&a), PORT, CLIENT_PORT, 11);
    let host_srv = peer("server", &["--mode", "never-read", "--hold", "60"]);
    let hl = host_srv.expect("listening ", Duration::from_secs(10));
    let host_port: u16 = hl.split_whitespace().nth(1).unwrap().parse().unwrap();
    let tracer = Tracer::start(&[
        "-L",
        &PORT.to_string(),
        "-L",
        &host_port.to_string(),
        "--threshold",
        "1s",
    ]);
    let (srv_b, _cli_b, _, fd_b) = leak(Some(&b), PORT, CLIENT_PORT, 23);
    let host_cli = peer(
        "client",
        &[
            "--connect",
            &v4(host_port),
            "--send",
            "5",
            "--mode",
            "close",
        ],
    );
    let (host_fd, host_local, host_remote) =
        parse_accepted(&host_srv.expect("accepted", Duration::from_secs(10)));
    host_cli.expect("done", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1600));
    let out = stop_ok(tracer);
    let (local, remote) = (v4(PORT), v4(CLIENT_PORT));

    let check_all = |json: &serde_json::Value, what: &str| {
        let mut want = vec![(a.inode(), &srv_a, fd_a, 11), (b.inode(), &srv_b, fd_b, 23)];
        want.sort_by_key(|w| w.0);
        let got = by_netns(json, &local, &remote);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            want.iter().map(|w| w.0).collect::<Vec<_>>(),
            "{what}: one stuck socket per namespace: {}",
            pretty(&json["stuck"])
        );
        for ((_, s), (_, srv, fd, unread)) in got.iter().zip(&want) {
            check_leak(s, srv, *fd, *unread);
        }
        let host = one(json, "stuck", &host_local, &host_remote);
        assert_eq!(host["netns"], own_netns(), "{what}: {}", pretty(host));
        check_leak(host, &host_srv, u64::from(host_fd), 5);
    };
    check_all(&out.json, "record");
    let got = by_netns(&out.json, &local, &remote);
    let pre = got.iter().find(|g| g.0 == a.inode()).unwrap().1;
    assert_eq!(
        pre["since_attach"],
        true,
        "pre-existing in a: {}",
        pretty(pre)
    );
    let traced = got.iter().find(|g| g.0 == b.inode()).unwrap().1;
    assert_eq!(
        traced["since_attach"],
        false,
        "traced in b: {}",
        pretty(traced)
    );
    // The human report names the namespace of each.
    for ns in [&a, &b] {
        assert!(
            out.stdout.contains(&format!("netns {}", ns.inode())),
            "human report lacks netns {}: {}",
            ns.inode(),
            out.stdout
        );
    }

    let snap = |extra: &[&str]| -> serde_json::Value {
        let dir = tempdir("snap");
        let file = dir.join("s.json");
        let st = std::process::Command::new(bin())
            .args([
                "snapshot",
                "-L",
                &PORT.to_string(),
                "-L",
                &host_port.to_string(),
            ])
            .args(extra)
            .arg("--json")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "snapshot: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let v = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        v
    };
    check_all(&snap(&[]), "snapshot");
    // --netns by path, by `ip netns` name and by inode: only that one.
    for arg in [
        a.path().display().to_string(),
        a.name.clone(),
        a.inode().to_string(),
    ] {
        let only_a = snap(&["--netns", &arg]);
        let stuck = only_a["stuck"].as_array().unwrap();
        assert_eq!(
            stuck.len(),
            1,
            "--netns {arg}: {}",
            pretty(&only_a["stuck"])
        );
        assert_eq!(stuck[0]["netns"], a.inode());
        check_leak(&stuck[0], &srv_a, fd_a, 11);
    }
}

/// `ip netns exec NS close-wait` (which remounts /sys and hides tracefs)
/// fails with one line that says why and how to run it instead.
#[test]
fn ip_netns_exec_says_how_to_run_it() {
    if !privileged("ip_netns_exec_says_how_to_run_it") {
        return;
    }
    let ns = TestNetns::new("exec");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin())
        .args(["record", "--duration", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tracefs is not mounted"), "{err}");
    assert!(
        err.contains(&format!("network namespace {}", ns.inode())),
        "{err}"
    );
    assert!(err.contains("ip netns exec"), "{err}");
    assert!(
        err.contains(&format!("nsenter --net={} close-wait", ns.path().display())),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "more than one line: {err}");
}
