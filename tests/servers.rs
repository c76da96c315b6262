//! Real servers from Debian's packages (nginx, Apache prefork) and real
//! worker pools, each started here with its own config on a loopback port,
//! never as a system service (issue 10). Each test asserts the group count,
//! the diagnosis, what the threads wait on (fd, peer) and that
//! `report FILE.json` prints the same groups as the live run.

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use close_wait_tests::*;
use serde_json::Value;

const SECS10: Duration = Duration::from_secs(10);
const THRESHOLD_MS: u64 = 1000;

/// `python3 servers.py CMD ARGS` (tests/helpers/servers.py).
fn app(cmd: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        &format!("servers.py {cmd} {args:?}"),
        Command::new("python3")
            .arg(helper("servers.py"))
            .arg(cmd)
            .args(args),
    )
}

fn num<T: std::str::FromStr>(line: &str, i: usize) -> T {
    line.split_whitespace()
        .nth(i)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number at word {i} of {line:?}"))
}

fn word(line: &str, i: usize) -> String {
    line.split_whitespace()
        .nth(i)
        .unwrap_or_else(|| panic!("no word {i} in {line:?}"))
        .to_string()
}

/// The program, or None (and why) when it is not installed.
fn program(path: &str, test: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if p.exists() {
        return Some(p.to_path_buf());
    }
    assert!(
        !in_ci(),
        "{test}: {path} is missing (run `cargo xtask setup`)"
    );
    eprintln!("skipping test - {path} is not installed");
    None
}

/// Waits until something listens on 127.0.0.1:`port`.
fn wait_listening(port: u16, what: &str) {
    wait_for(&format!("{what} listening on {port}"), SECS10, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

/// Sends an HTTP/1.1 request on `s`, returns the status line of the answer.
fn http_get(s: &mut TcpStream, path: &str) -> String {
    s.set_read_timeout(Some(SECS10)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn groups(j: &Value) -> &Vec<Value> {
    j["groups"].as_array().unwrap()
}

/// The group headers of a human report (lines naming a diagnosis in capitals).
fn headers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let first = l.split_whitespace().next().unwrap_or("");
            !l.starts_with(' ')
                && first.len() > 3
                && first.chars().all(|c| c.is_ascii_uppercase() || c == '-')
                && l.contains(" x")
        })
        .map(str::to_owned)
        .collect()
}

/// The live run's groups, and the same groups from `report FILE.json`.
fn assert_same_groups_offline(out: &Finished) {
    let offline = out.assert_report_reads_back();
    let live = headers(&out.stdout);
    assert!(!live.is_empty(), "{}", out.stdout);
    assert_eq!(headers(&offline), live, "{offline}");
}

/// A server whose master forks workers (nginx, apache2): stopped with
/// SIGTERM, on which the master stops its workers and exits; workers still
/// there after 5 s are killed by pid. (Killing only the master would leave
/// its workers running.)
struct Master(Proc);

impl Drop for Master {
    fn drop(&mut self) {
        let pid = self.0.pid();
        let kids = children_of(pid);
        // SAFETY: kill has no memory preconditions; pid is our child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let gone = |p: u32| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && !kids.iter().all(|&k| gone(k)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in kids.into_iter().filter(|&k| !gone(k)) {
            // SAFETY: as above; k is a worker this test's server forked.
            unsafe { libc::kill(k as libc::pid_t, libc::SIGKILL) };
        }
        // Then the master (a zombie once it exited): Proc's drop reaps it.
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && !gone(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// nginx proxies to a threaded Python app whose handlers wait (poll with a
/// timeout) on a third party that never answers; nginx gives up after 1 s
/// and closes, leaving the app's sockets in CLOSE_WAIT while every handler
/// still waits: one handler-blocked group, each thread named with the
/// upstream connection it waits on.
#[test]
fn nginx_in_front_of_handlers_blocked_on_a_slow_upstream() {
    const TEST: &str = "nginx_in_front_of_handlers_blocked_on_a_slow_upstream";
    if !privileged(TEST) {
        return;
    }
    let Some(nginx) = program("/usr/sbin/nginx", TEST) else {
        return;
    };
    const N: usize = 3;
    let (third, third_port) = server(&["--mode", "hold", "--count", &N.to_string()]);
    let third_addr = v4(third_port);
    let slow = app("slowapp", &["--upstream", &third_addr, "--hold", "20"]);
    let l = slow.expect("listening ", SECS10);
    let app_port: u16 = num(&l, 1);
    let dir = tempdir("nginx");
    let nport = free_loopback_port();
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 127.0.0.1:{nport};\n\
                 location / {{ proxy_pass http://127.0.0.1:{app_port}; proxy_read_timeout 1s; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let proxy = Master(Proc::spawn(
        "nginx",
        Command::new(&nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .stderr(Stdio::null())
            .process_group(0),
    ));
    wait_listening(nport, "nginx");
    let tracer = Tracer::start(&["-L", &app_port.to_string(), "--threshold", "1s"]);
    let t0 = Instant::now();
    let mut clients: Vec<TcpStream> = Vec::new();
    let mut status = Vec::new();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", nport)).unwrap();
                let st = http_get(&mut s, &format!("/pay/{i}"));
                (s, st)
            })
        })
        .collect();
    // (fd, local, remote) of the app's accepted sockets, and its upstream
    // connections (fd, local).
    // (The lines interleave: each is taken in turn, whichever it is.)
    let mut accepted: Vec<(u32, String, String)> = Vec::new();
    let mut ups: Vec<(u32, String)> = Vec::new();
    while accepted.len() < N || ups.len() < N {
        let l = slow.expect("", SECS10);
        if l.starts_with("accepted ") {
            accepted.push(parse_accepted(&l));
        } else if l.starts_with("upstream ") {
            assert_eq!(word(&l, 6), third_addr, "{l}");
            ups.push((num(&l, 2), word(&l, 4)));
        }
    }
    for h in handles {
        let (s, st) = h.join().unwrap();
        clients.push(s);
        status.push(st);
    }
    // nginx gave up on the app: 504 to its clients, FIN to the app.
    assert!(status.iter().all(|s| s.contains(" 504 ")), "{status:?}");
    let tuples: Vec<(String, String)> = accepted
        .iter()
        .map(|a| (a.1.clone(), a.2.clone()))
        .collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    let took = t0.elapsed();
    let pid = slow.pid();
    let j = &out.json;
    assert!(took < Duration::from_secs(30));

    for (fd, local, remote) in &accepted {
        let e = one(j, "stuck", local, remote);
        let ctx = pretty(e);
        assert_eq!(e["diagnosis"], "handler-blocked", "{ctx}");
        assert_eq!(
            holders(&e["holders"]),
            vec![(pid as u64, *fd as u64)],
            "{ctx}"
        );
        assert_eq!(e["unread_bytes"], 0, "the request was read: {ctx}");
        assert!(
            !e["evidence"].as_str().unwrap().contains("forgotten close"),
            "{ctx}"
        );
    }
    assert_eq!(
        j["stuck"].as_array().unwrap().len(),
        N,
        "nginx holds none: {}",
        pretty(&j["stuck"])
    );
    let gs = groups(j);
    assert_eq!(gs.len(), 1, "{}", pretty(&j["groups"]));
    let g = &gs[0];
    let gctx = pretty(g);
    assert_eq!(
        (
            g["diagnosis"].as_str(),
            g["pid"].as_u64(),
            g["count"].as_u64()
        ),
        (Some("handler-blocked"), Some(pid as u64), Some(N as u64)),
        "{gctx}"
    );
    // Every handler thread waits in poll(2) (or ppoll) on its upstream
    // connection, named with the third party's address.
    let tgroups = g["threads"]["groups"].as_array().unwrap();
    for (ufd, ulocal) in &ups {
        let tg = tgroups
            .iter()
            .find(|tg| {
                tg["waits_on"]
                    .as_array()
                    .is_some_and(|w| w.iter().any(|w| w["fd"] == *ufd))
            })
            .unwrap_or_else(|| panic!("no thread waits on upstream fd {ufd}: {gctx}"));
        assert!(
            matches!(tg["syscall"].as_str(), Some("poll" | "ppoll")),
            "{gctx}"
        );
        let w = &tg["waits_on"][0];
        assert_eq!(w["connection"]["remote"], third_addr.as_str(), "{gctx}");
        assert_eq!(w["connection"]["local"], ulocal.as_str(), "{gctx}");
    }
    let why = g["evidence"].as_str().unwrap();
    assert!(
        why.contains("the handler has not finished: ")
            && why.contains(&format!(" -> {third_addr} ESTABLISHED)")),
        "{why}"
    );
    let head = format!(
        "HANDLER-BLOCKED x{N}  {}[{pid}] <- peer 127.0.0.1  ",
        comm_of(pid)
    );
    assert!(
        out.stdout.contains(&head),
        "no {head:?} in:\n{}",
        out.stdout
    );
    assert_same_groups_offline(&out);
    drop(clients);
    drop(proxy);
    drop(third);
}

/// A prefork pool whose workers each read a request and then block writing
/// their log line to a stderr pipe nobody reads: one handler-blocked group
/// for the pool (not one per worker), each worker waiting in write(2) on
/// fd 2, the pipe's reader named.
#[test]
fn prefork_pool_blocked_on_a_full_stderr_pipe() {
    const TEST: &str = "prefork_pool_blocked_on_a_full_stderr_pipe";
    if !privileged(TEST) {
        return;
    }
    const WORKERS: usize = 4;
    let (rd, wr) = pipe_cloexec();
    let pool = Proc::spawn(
        "servers.py prefork-pipe",
        Command::new("python3")
            .arg(helper("servers.py"))
            .args([
                "prefork-pipe",
                "--workers",
                &WORKERS.to_string(),
                "--hold",
                "20",
            ])
            .stderr(Stdio::from(wr)),
    );
    let port: u16 = num(&pool.expect("listening ", SECS10), 1);
    let workers: Vec<u32> = (0..WORKERS)
        .map(|_| num(&pool.expect("worker ", SECS10), 1))
        .collect();
    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "1s"]);
    let mut clients = Vec::new();
    for _ in 0..WORKERS {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"POST /heartbeat HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        clients.push(s);
    }
    let accepted: Vec<(u32, String, String, u32)> = (0..WORKERS)
        .map(|_| {
            let l = pool.expect("accepted ", SECS10);
            let (fd, local, remote) = parse_accepted(&l);
            (fd, local, remote, num(&l, 8))
        })
        .collect();
    // The clients give up and close.
    drop(clients);
    let tuples: Vec<(String, String)> = accepted
        .iter()
        .map(|a| (a.1.clone(), a.2.clone()))
        .collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    let j = &out.json;
    let parent = pool.pid();

    for (fd, local, remote, wpid) in &accepted {
        let e = one(j, "stuck", local, remote);
        let ctx = pretty(e);
        assert!(workers.contains(wpid), "{ctx}");
        assert_eq!(e["diagnosis"], "handler-blocked", "{ctx}");
        assert_eq!(
            holders(&e["holders"]),
            vec![(*wpid as u64, *fd as u64)],
            "{ctx}"
        );
    }
    let gs = groups(j);
    assert_eq!(
        gs.len(),
        1,
        "one group for the pool: {}",
        pretty(&j["groups"])
    );
    let g = &gs[0];
    let gctx = pretty(g);
    assert_eq!(g["diagnosis"], "handler-blocked", "{gctx}");
    assert_eq!(g["count"], WORKERS as u64, "{gctx}");
    assert_eq!(g["pool"]["parent"], parent, "{gctx}");
    let mut members: Vec<u64> = g["pool"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["count"], 1, "{gctx}");
            // Each worker waits in write(2) on fd 2, a pipe read by us.
            let t = m["threads"].as_str().unwrap();
            assert!(
                t.contains("pipe_write via write(2) on fd 2 -> pipe:[")
                    && t.contains(" bytes queued: full) whose read end is held by ")
                    && t.contains(&format!(
                        "whose read end is held by pid {} fd {} ({}",
                        std::process::id(),
                        rd.as_raw_fd(),
                        std::env::args().next().unwrap()
                    )),
                "{t}"
            );
            m["pid"].as_u64().unwrap()
        })
        .collect();
    members.sort_unstable();
    let mut want: Vec<u64> = workers.iter().map(|&p| p as u64).collect();
    want.sort_unstable();
    assert_eq!(members, want, "{gctx}");
    let tg = &g["threads"]["groups"][0];
    assert_eq!(
        (tg["syscall"].as_str(), tg["fd"].as_u64()),
        (Some("write"), Some(2)),
        "{gctx}"
    );
    let head = format!(
        "HANDLER-BLOCKED x{WORKERS}  {WORKERS} {} workers, children of {parent} <- peer 127.0.0.1  ",
        comm_of(workers[0])
    );
    assert!(
        out.stdout.contains(&head),
        "no {head:?} in:\n{}",
        out.stdout
    );
    assert_same_groups_offline(&out);
    drop(rd);
}

/// Apache prefork (Debian's apache2, its own config on a loopback port, 3
/// workers), proxying to `upstream` with mod_proxy_http. Returns the
/// running server (its pid is the parent's) and its port.
fn apache(test: &str, upstream: &str, extra: &str) -> Option<(Master, u16)> {
    let bin = program("/usr/sbin/apache2", test)?;
    let dir = tempdir("apache");
    let port = free_loopback_port();
    let d = dir.display();
    let m = "/usr/lib/apache2/modules";
    let conf = dir.join("httpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ServerRoot \"{d}\"\nServerName localhost\nListen 127.0.0.1:{port}\n\
             PidFile {d}/apache.pid\nErrorLog {d}/error.log\nLogLevel warn\nMutex file:{d} default\n\
             LoadModule mpm_prefork_module {m}/mod_mpm_prefork.so\n\
             LoadModule authz_core_module {m}/mod_authz_core.so\n\
             LoadModule proxy_module {m}/mod_proxy.so\n\
             LoadModule proxy_http_module {m}/mod_proxy_http.so\n\
             User www-data\nGroup www-data\n\
             StartServers 3\nMinSpareServers 3\nMaxSpareServers 3\nServerLimit 3\nMaxRequestWorkers 3\n\
             ListenBacklog 4\n{extra}\n\
             ProxyPass \"/\" \"http://{upstream}/\"\n"
        ),
    )
    .unwrap();
    let p = Master(Proc::spawn(
        "apache2",
        Command::new(&bin)
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .stderr(Stdio::null())
            // Its own process group: on SIGTERM apache2 signals its whole
            // group, which would otherwise include this test.
            .process_group(0),
    ));
    // Ready when the 3 workers sleep in accept.
    let parent = p.0.pid();
    wait_for("3 apache2 workers", SECS10, || {
        (children_of(parent).len() == 3).then_some(())
    });
    wait_listening(port, "apache2");
    Some((p, port))
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect();
    v.sort_unstable();
    v
}

/// Apache prefork whose 3 workers all wait (poll with ProxyTimeout) on an
/// upstream that never answers: the clients give up, so the workers' own
/// client sockets are one handler-blocked pool group, and the connections
/// that queued behind them are one unaccepted group whose story is told
/// from the listener's holders: the idle parent, and 3 of 3 workers busy
/// waiting on the upstream (not "the application never called accept()").
#[test]
fn apache_prefork_workers_busy_on_a_slow_upstream() {
    const TEST: &str = "apache_prefork_workers_busy_on_a_slow_upstream";
    if !privileged(TEST) {
        return;
    }
    const WORKERS: usize = 3;
    const QUEUED: usize = 3;
    let (third, third_port) = server(&["--mode", "hold", "--count", &WORKERS.to_string()]);
    let up = v4(third_port);
    let Some((srv, port)) = apache(TEST, &up, "ProxyTimeout 30\nKeepAlive Off") else {
        return;
    };
    let parent = srv.0.pid();
    let workers = children_of(parent);
    let tracer = Tracer::start(&["-L", &port.to_string(), "--threshold", "1s"]);
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for i in 0..WORKERS + QUEUED {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /slow/{i} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        clients.push(s);
        if i < WORKERS {
            // One worker takes it and connects upstream.
            third.expect("accepted", SECS10);
        }
    }
    let locals: Vec<String> = clients
        .iter()
        .map(|c| c.local_addr().unwrap().to_string())
        .collect();
    // The clients give up.
    drop(clients);
    let addr = v4(port);
    let tuples: Vec<(String, String)> = locals.iter().map(|l| (addr.clone(), l.clone())).collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    let j = &out.json;
    assert!(t0.elapsed() < Duration::from_secs(30));

    let gs = groups(j);
    assert_eq!(gs.len(), 2, "{}", pretty(&j["groups"]));
    let busy = gs
        .iter()
        .find(|g| g["diagnosis"] == "handler-blocked")
        .unwrap_or_else(|| panic!("no handler-blocked group: {}", pretty(&j["groups"])));
    let bctx = pretty(busy);
    assert_eq!(busy["count"], WORKERS as u64, "{bctx}");
    assert_eq!(busy["pool"]["parent"], parent, "{bctx}");
    let mut members: Vec<u32> = busy["pool"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let t = m["threads"].as_str().unwrap();
            // Each worker waits in poll(2) on its upstream connection.
            assert!(
                t.contains(" via poll(2) on fd ") && t.contains(&format!(" -> {up} ESTABLISHED)")),
                "{t}"
            );
            m["pid"].as_u64().unwrap() as u32
        })
        .collect();
    members.sort_unstable();
    assert_eq!(members, workers, "{bctx}");
    let tg = &busy["threads"]["groups"][0];
    assert_eq!(tg["syscall"], "poll", "{bctx}");
    assert_eq!(
        tg["waits_on"][0]["connection"]["remote"],
        up.as_str(),
        "{bctx}"
    );

    let queued = gs
        .iter()
        .find(|g| g["diagnosis"] == "unaccepted")
        .unwrap_or_else(|| panic!("no unaccepted group: {}", pretty(&j["groups"])));
    let qctx = pretty(queued);
    assert_eq!(queued["count"], QUEUED as u64, "{qctx}");
    let accepting = queued["accepting"].as_str().unwrap();
    assert!(
        accepting.contains(&format!("parent apache2[{parent}] idle: "))
            && accepting.contains(&format!(
                "; {WORKERS} of {WORKERS} workers busy: each waiting in poll(2) on a connection to {up} opened "
            ))
            && accepting.ends_with(" ago"),
        "{accepting}"
    );
    // Not "the application never called accept()": its holders are busy.
    let why = queued["evidence"].as_str().unwrap();
    assert!(
        why.contains("no holder of the listener accepted it in time (see accepting)")
            && !why.contains("never called accept()"),
        "{why}"
    );
    // The listener's holders are listed once, for the whole group.
    let listener_lines = out
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("listener {addr} held by ")))
        .count();
    assert_eq!(listener_lines, 1, "{}", out.stdout);
    for needle in [
        format!(
            "HANDLER-BLOCKED x{WORKERS}  {WORKERS} apache2 workers, children of {parent} <- peer 127.0.0.1  "
        ),
        format!("UNACCEPTED x{QUEUED}  apache2[{parent}] <- peer 127.0.0.1  "),
        format!("  accepting: {accepting}"),
    ] {
        assert!(out.stdout.contains(&needle), "no {needle:?} in:\n{}", out.stdout);
    }
    assert_same_groups_offline(&out);
    drop(srv);
}

/// Apache prefork's workers keep their upstream connections (mod_proxy's
/// per-worker pool); the upstream dies: every worker holds a dead
/// connection. One read-not-closed pool group, the peer called gone, each
/// worker idle in accept(2) on the listener.
#[test]
fn apache_prefork_workers_hold_dead_upstream_connections() {
    const TEST: &str = "apache_prefork_workers_hold_dead_upstream_connections";
    if !privileged(TEST) {
        return;
    }
    const WORKERS: usize = 3;
    let backend = Proc::spawn(
        "seeds.py backend",
        Command::new("python3")
            .arg(helper("seeds.py"))
            .args(["backend", "--after", "keep", "--hold", "20"]),
    );
    let up_port: u16 = num(&backend.expect("listening ", SECS10), 1);
    let up = v4(up_port);
    let Some((srv, port)) = apache(TEST, &up, "KeepAlive On\nKeepAliveTimeout 10") else {
        return;
    };
    let parent = srv.0.pid();
    let workers = children_of(parent);
    let tracer = Tracer::start(&["-D", &up_port.to_string(), "--threshold", "1s"]);
    // Keep-alive clients: each keeps its worker, so the next goes to another.
    let mut clients = Vec::new();
    let mut locals = Vec::new();
    for i in 0..WORKERS {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let st = http_get(&mut s, &format!("/order/{i}"));
        assert!(st.contains(" 200 "), "{st}");
        let (_, _, remote) = parse_accepted(&backend.expect("accepted ", SECS10));
        locals.push(remote);
        clients.push(s);
    }
    drop(clients);
    // The upstream dies; its kernel closes every connection.
    drop(backend);
    let tuples: Vec<(String, String)> = locals.iter().map(|l| (l.clone(), up.clone())).collect();
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    let j = &out.json;
    let gs = groups(j);
    assert_eq!(gs.len(), 1, "{}", pretty(&j["groups"]));
    let g = &gs[0];
    let gctx = pretty(g);
    assert_eq!(g["diagnosis"], "read-not-closed", "{gctx}");
    assert_eq!(g["count"], WORKERS as u64, "{gctx}");
    assert_eq!(g["peer"], up.as_str(), "{gctx}");
    assert_eq!(g["pool"]["parent"], parent, "{gctx}");
    assert!(
        g["evidence"]
            .as_str()
            .unwrap()
            .contains("no live connection to that peer remains"),
        "{gctx}"
    );
    let mut members: Vec<u32> = g["pool"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["count"], 1, "{gctx}");
            let t = m["threads"].as_str().unwrap();
            assert!(
                t.contains(" via accept4(2) on fd ")
                    && t.contains(&format!("127.0.0.1:{port} LISTEN)")),
                "{t}"
            );
            m["pid"].as_u64().unwrap() as u32
        })
        .collect();
    members.sort_unstable();
    assert_eq!(members, workers, "{gctx}");
    let head = format!(
        "READ-NOT-CLOSED x{WORKERS}  {WORKERS} apache2 workers, children of {parent} <- peer {up}  "
    );
    assert!(
        out.stdout.contains(&head),
        "no {head:?} in:\n{}",
        out.stdout
    );
    assert_same_groups_offline(&out);
    drop(srv);
}
