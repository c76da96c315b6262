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
