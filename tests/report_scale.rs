//! The text report at the scale of an outage: a few hundred CLOSE_WAIT
//! sockets of one process toward one peer read as one group, its oldest
//! sockets, how many more there are, and the ephemeral ports they hold.

use std::{collections::HashSet, process::Command, time::Duration};

use close_wait_tests::*;

const SOCKETS: usize = 300;

/// `ss`'s CLOSE-WAIT sockets toward `port` whose local port is in `locals`.
fn close_waits_toward(port: u16, locals: &HashSet<u16>) -> usize {
    let out = Command::new("ss")
        .args(["-tanH", "state", "close-wait"])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let port_of = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            w.len() >= 4
                && port_of(w[3]) == Some(port)
                && port_of(w[2]).is_some_and(|p| locals.contains(&p))
        })
        .count()
}

fn snapshot(args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("snapshot")
        .args(args)
        .output()
        .expect("close-wait snapshot");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "snapshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn hundreds_of_sockets_read_as_one_group() {
    if !privileged("hundreds_of_sockets_read_as_one_group") {
        return;
    }
    // The server closes each connection at once; the client keeps them all.
    let (srv, port) = server(&[
        "--mode",
        "close-now",
        "--count",
        &SOCKETS.to_string(),
        "--linger",
        "60",
    ]);
    let cli = holding_client(port, SOCKETS, 60);
    cli.expect("done", Duration::from_secs(30));
    let locals: HashSet<u16> = cli
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("client local 127.0.0.1:")?.parse().ok())
        .collect();
    assert_eq!(locals.len(), SOCKETS);
    wait_for(
        &format!("{SOCKETS} sockets in CLOSE-WAIT"),
        Duration::from_secs(20),
        || (close_waits_toward(port, &locals) == SOCKETS).then_some(()),
    );
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let (first, last) = {
        let w: Vec<u32> = range
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        (w[0], w[1])
    };
    let in_range = locals
        .iter()
        .filter(|&&p| (first..=last).contains(&u32::from(p)))
        .count();
    let with_commas = |n: u64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };

    let dir = tempdir("scale");
    let json = dir.join("snapshot.json");
    let pid = cli.pid().to_string();
    let text = snapshot(&["-p", &pid, "--json", json.to_str().unwrap()]);
    let peer = v4(port);
    let comm = comm_of(cli.pid());
    let head = format!("READ-NOT-CLOSED x{SOCKETS}  {comm}[{pid}] <- peer {peer}  ");
    assert!(text.contains(&head), "no {head:?} in:\n{text}");
    let ports = format!(
        "\n  ports: {} of {} local ports (net.ipv4.ip_local_port_range) held toward {peer}\n",
        with_commas(in_range as u64),
        with_commas(u64::from(last - first + 1))
    );
    assert!(text.contains(&ports), "no {ports:?} in:\n{text}");
    // The oldest five of the test's sockets, then the count of the others.
    let listed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  127.0.0.1:") && l.contains(&format!(" <- {peer}  age ")))
        .collect();
    assert_eq!(listed.len(), 5, "{text}");
    for l in &listed {
        let local: u16 = l["  127.0.0.1:".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(locals.contains(&local), "{l} is not the test's");
        assert!(
            l.contains(&format!("  read-not-closed  held by {comm}[{pid}] fd ")),
            "{l}"
        );
    }
    let more = format!(
        "\n  ... and {} more (--all lists every one; the JSON report has them all)\n",
        SOCKETS - 5
    );
    assert!(text.contains(&more), "no {more:?} in:\n{text}");
    // The note every socket shares is said once, for the group.
    assert_eq!(text.matches("    stack: no stack").count(), 1, "{text}");
    assert!(
        text.contains(&format!("\n  all {SOCKETS} sockets:\n    stack: no stack")),
        "{text}"
    );
    assert!(
        text.lines().count() < 40,
        "{} lines:\n{text}",
        text.lines().count()
    );

    // The JSON keeps every socket, each with its group.
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let stuck = j["stuck"].as_array().unwrap();
    assert_eq!(stuck.len(), SOCKETS, "{}", pretty(&j["groups"]));
    assert!(stuck.iter().all(|s| s["group"] == 0));
    assert_eq!(j["groups"][0]["count"], SOCKETS);
    assert_eq!(j["groups"][0]["local_ports"]["held"], in_range);
    assert_eq!(j["groups"][0]["local_ports"]["range_first"], first);
    assert_eq!(j["groups"][0]["local_ports"]["range_last"], last);

    // --all lists every one.
    let all = snapshot(&["-p", &pid, "--all"]);
    let listed: HashSet<u16> = all
        .lines()
        .filter(|l| l.starts_with("  127.0.0.1:") && l.contains(&format!(" <- {peer}  age ")))
        .map(|l| {
            l["  127.0.0.1:".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(listed, locals);
    assert!(!all.contains(" more (--all"), "{all}");

    // `report` of the JSON prints the snapshot's report: the same group,
    // its oldest five and a count (`--all`: every one).
    let offline = |extra: &[&str]| {
        let out = Command::new(bin())
            .arg("report")
            .arg(&json)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rep = offline(&[]);
    let live = text.split("\nnote: ").next().unwrap().trim_end();
    assert!(
        rep.contains(live),
        "--- snapshot:\n{live}\n--- report:\n{rep}"
    );
    assert!(rep.contains(&more), "{rep}");
    let rep_all = offline(&["--all"]);
    assert_eq!(
        rep_all
            .lines()
            .filter(|l| l.starts_with("  127.0.0.1:") && l.contains(&format!(" <- {peer}  age ")))
            .count(),
        SOCKETS,
        "{rep_all}"
    );
    drop(cli);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
