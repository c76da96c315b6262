//! Containers: processes the test moves into cgroups whose paths look like a
//! docker container and a Kubernetes (containerd) pod, made under the
//! cgroup2 mount, are reported with that container id, runtime and pod uid
//! (JSON of `record` and `snapshot`, the short form in the human report),
//! and carry a `container` label on the Prometheus series.

use std::path::{Path, PathBuf};
use std::time::Duration;

use close_wait_tests::*;
use serde_json::Value;

const DOCKER_ID: &str = "d0c4e2f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5d7";
const K8S_ID: &str = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
const POD_UID: &str = "1b2c3d4e-5f60-4a1b-9c2d-3e4f5a6b7c8d";

/// The cgroup2 mount point (`/sys/fs/cgroup` or, on hybrid systems,
/// `/sys/fs/cgroup/unified`).
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

/// A tree of cgroups made for a test under `<cgroup2>/cw-test-PID-N/`,
/// removed when dropped (its processes moved back to the root first).
struct TestCgroups {
    mount: PathBuf,
    base: PathBuf,
    made: Vec<PathBuf>,
}

impl TestCgroups {
    fn new() -> TestCgroups {
        let mount = cgroup2_mount();
        let base = mount.join(format!("cw-test-{}", std::process::id()));
        TestCgroups {
            mount,
            base,
            made: Vec::new(),
        }
    }

    /// Makes `rel` (and its parents) under the base; returns the path as
    /// `/proc/PID/cgroup` shows it.
    fn make(&mut self, rel: &str) -> String {
        let mut p = self.base.clone();
        for seg in std::iter::once("").chain(rel.split('/')) {
            if !seg.is_empty() {
                p.push(seg);
            }
            if !p.exists() {
                std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                self.made.push(p.clone());
            }
        }
        format!("/{}", p.strip_prefix(&self.mount).unwrap().display())
    }

    /// Moves process `pid` into `cgroup` (a path [`make`](Self::make) gave).
    fn enter(&self, cgroup: &str, pid: u32) {
        let procs = self
            .mount
            .join(cgroup.trim_start_matches('/'))
            .join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("{pid} -> {}: {e}", procs.display()));
        let now = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            now.lines().any(|l| l == format!("0::{cgroup}")),
            "{pid} is not in {cgroup}: {now}"
        );
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        let root = self.mount.join("cgroup.procs");
        for dir in self.made.iter().rev() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = std::fs::write(&root, pid);
                }
            }
            // A process just killed can linger a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn check_container(s: &Value, id: &str, runtime: &str, pod: Option<&str>) {
    let c = &s["container"];
    assert_eq!(c["id"], id, "{}", pretty(s));
    assert_eq!(c["runtime"], runtime, "{}", pretty(s));
    match pod {
        Some(p) => assert_eq!(c["pod_uid"], p, "{}", pretty(s)),
        None => assert!(c["pod_uid"].is_null(), "{}", pretty(s)),
    }
}

/// A server that never reads, moved into `cgroup`, and a client sending
/// `bytes` then closing: the server's socket stays in CLOSE_WAIT.
/// Returns (server, port, local, remote).
fn leak_in(cg: &TestCgroups, cgroup: &str, port: u16, bytes: usize) -> (Proc, String, String) {
    let port_s = port.to_string();
    let (srv, port) = server(&["--port", &port_s, "--mode", "never-read", "--hold", "60"]);
    cg.enter(cgroup, srv.pid());
    let (local, remote) = send_and_close(&srv, port, bytes);
    (srv, local, remote)
}

/// A client that sends `bytes` to `srv` on `port` and closes: the
/// server's (local, remote).
fn send_and_close(srv: &Proc, port: u16, bytes: usize) -> (String, String) {
    let send = bytes.to_string();
    let cli = peer(
        "client",
        &["--connect", &v4(port), "--send", &send, "--mode", "close"],
    );
    let (_, local, remote) = parse_accepted(&srv.expect("accepted", Duration::from_secs(10)));
    cli.expect("done", Duration::from_secs(10));
    (local, remote)
}

#[test]
fn sockets_of_containers_name_their_container_and_pod() {
    if !privileged("sockets_of_containers_name_their_container_and_pod") {
        return;
    }
    let mut cg = TestCgroups::new();
    let docker = cg.make(&format!("system.slice/docker-{DOCKER_ID}.scope"));
    let pod_slice = POD_UID.replace('-', "_");
    let k8s = cg.make(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_slice}.slice/cri-containerd-{K8S_ID}.scope"
    ));
    let metrics = format!("127.0.0.1:{}", free_loopback_port());
    let late_port = free_loopback_port();
    // A closer in the docker container: its episode's duration series has
    // the container label.
    let (closer, closer_port) = server(&["--mode", "close-after-eof", "--delay-ms", "100"]);
    cg.enter(&docker, closer.pid());
    let (d_srv, d_port) = server(&["--mode", "never-read", "--hold", "60"]);
    let (k_srv, k_port) = server(&["--mode", "never-read", "--hold", "60"]);
    cg.enter(&docker, d_srv.pid());
    cg.enter(&k8s, k_srv.pid());
    let tracer = Tracer::start(&[
        "-L",
        &d_port.to_string(),
        "-L",
        &k_port.to_string(),
        "-L",
        &closer_port.to_string(),
        "-L",
        &late_port.to_string(),
        "--threshold",
        "1s",
        "--interval",
        "1s",
        "--prometheus",
        &metrics,
    ]);
    let mut tuples = Vec::new();
    for (srv, port, bytes) in [(&d_srv, d_port, 11), (&k_srv, k_port, 23)] {
        tuples.push(send_and_close(srv, port, bytes));
    }
    let cli = peer("client", &["--connect", &v4(closer_port)]);
    closer.expect("done", Duration::from_secs(10));
    cli.expect("done", Duration::from_secs(10));
    // And one more leak made by a server that entered its container late
    // (after the tracer): the holder's cgroup is read at report time.
    let (late, l_local, l_remote) = leak_in(&cg, &k8s, late_port, 5);
    tuples.push((l_local.clone(), l_remote.clone()));
    settle_stuck(&tuples, 1000);

    // Prometheus: the stuck sockets by holder and container, and the
    // closed episode's duration with the container label.
    let (d_short, k_short) = (&DOCKER_ID[..12], &K8S_ID[..12]);
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Ok((_, body)) = http_get_plain(&metrics, "/metrics") {
            if metric_sample(
                &body,
                "close_wait_holder_stuck_sockets",
                &[("comm", "python3"), ("container", k_short)],
            ) == Some(2.0)
            {
                break body;
            }
            last = body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 2 stuck sockets of the pod's container in /metrics within 10 s:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric_sample(
            &body,
            "close_wait_holder_stuck_sockets",
            &[("comm", "python3"), ("container", d_short)]
        ),
        Some(1.0),
        "{body}"
    );
    let closer_port_s = closer_port.to_string();
    assert_eq!(
        metric_sample(
            &body,
            "close_wait_duration_seconds_count",
            &[
                ("comm", "python3"),
                ("container", d_short),
                ("port", &closer_port_s)
            ]
        ),
        Some(1.0),
        "{body}"
    );

    // snapshot, while the tracer still runs
    let dir = tempdir("containers-snap");
    let file = dir.join("s.json");
    let snap = std::process::Command::new(bin())
        .args([
            "snapshot",
            "-L",
            &d_port.to_string(),
            "-L",
            &k_port.to_string(),
            "-L",
            &late_port.to_string(),
        ])
        .arg("--json")
        .arg(&file)
        .output()
        .unwrap();
    assert!(snap.status.success(), "snapshot: {snap:?}");
    let snap_json: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let snap_text = String::from_utf8_lossy(&snap.stdout).into_owned();

    let out = stop_ok(tracer);
    for (json, what) in [(&out.json, "record"), (&snap_json, "snapshot")] {
        let d = one(json, "stuck", &tuples[0].0, &tuples[0].1);
        check_container(d, DOCKER_ID, "docker", None);
        assert_eq!(
            holders(&d["holders"])[0].0,
            u64::from(d_srv.pid()),
            "{what}"
        );
        assert_eq!(d["unread_bytes"], 11, "{what}: {}", pretty(d));
        let k = one(json, "stuck", &tuples[1].0, &tuples[1].1);
        check_container(k, K8S_ID, "containerd", Some(POD_UID));
        assert_eq!(k["unread_bytes"], 23, "{what}: {}", pretty(k));
        let l = one(json, "stuck", &l_local, &l_remote);
        check_container(l, K8S_ID, "containerd", Some(POD_UID));
        assert_eq!(holders(&l["holders"])[0].0, u64::from(late.pid()), "{what}");
    }
    // The closer's episode ended; it is no stuck socket.
    assert_eq!(
        out.json["counters"]["closed_graceful"],
        1,
        "{}",
        pretty(&out.json["counters"])
    );
    for (text, what) in [(&out.stdout, "record"), (&snap_text, "snapshot")] {
        assert!(
            text.contains(&format!("container docker {d_short}")),
            "{what} human report lacks the docker container:\n{text}"
        );
        assert!(
            text.contains(&format!("container containerd {k_short} pod {POD_UID}")),
            "{what} human report lacks the pod:\n{text}"
        );
        assert!(
            !text.contains(DOCKER_ID) && !text.contains(K8S_ID),
            "{what}: the human report shows the short ids only:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    drop((closer, d_srv, k_srv, late));
    drop(cg);
    assert!(
        !Path::new(&cgroup2_mount())
            .join(format!("cw-test-{}", std::process::id()))
            .exists(),
        "test cgroups left behind"
    );
}
