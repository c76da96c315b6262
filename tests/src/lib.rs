//! Harness for the real-kernel tests: the tracer binary, the python peers
//! (client and server always in separate processes), temp dirs, and JSON
//! lookups. Tests panic with context; they skip only outside CI without root.

use std::{
    io::{BufRead, BufReader},
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc::{channel, Receiver},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when a privileged test can run. Without root it skips with a
/// printed reason, except under CI=true where that is a failure.
pub fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs root (or CAP_BPF + CAP_PERFMON) and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: needs root (or CAP_BPF + CAP_PERFMON)");
    false
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The close-wait binary under test (CLOSE_WAIT_BIN, set by `cargo xtask test`).
pub fn bin() -> PathBuf {
    let p = std::env::var_os("CLOSE_WAIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release/close-wait"));
    assert!(
        p.exists(),
        "{} missing: run the tests with `cargo xtask test`",
        p.display()
    );
    p
}

pub fn helper(name: &str) -> PathBuf {
    workspace().join("tests/helpers").join(name)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh empty directory under the system temp dir, removed (with what
/// is in it) when dropped, pass or fail. Derefs to its path.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("cannot remove {}: {e}", self.0.display());
            }
        }
    }
}

/// A fresh directory under the system temp dir (see [`TempDir`]).
pub fn tempdir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "close-wait-test-{}-{}-{}",
        tag,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// A directory under `target/test-helpers` for helpers a test binary builds
/// once and shares between its tests (kept, like any build output); under
/// the temp dir when `target` is read-only (`cargo xtask vm-test` shares
/// the tree read-only with its guests).
pub fn build_dir(name: &str) -> PathBuf {
    let d = workspace().join("target/test-helpers").join(name);
    if std::fs::create_dir_all(&d).is_ok() {
        return d;
    }
    let d = std::env::temp_dir()
        .join("close-wait-test-helpers")
        .join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    d
}

/// Kills processes a test made but does not own as children (forked
/// workers, grandchildren) when dropped, pass or fail.
pub struct KillPids(pub Vec<u32>);

impl Drop for KillPids {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: signalling processes this test made, which are alive
            // or already gone.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// A child process whose stdout lines are read in the background. Killed
/// when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Arc<Mutex<Vec<String>>>,
}

fn reader<R: std::io::Read + Send + 'static>(r: R) -> (Receiver<String>, Arc<Mutex<Vec<String>>>) {
    let (tx, rx) = channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            s2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (rx, seen)
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (lines, seen) = reader(child.stdout.take().unwrap());
        Proc {
            name: name.to_string(),
            child,
            lines,
            seen,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next line starting with `prefix` (bounded).
    pub fn expect(&self, prefix: &str, timeout: Duration) -> String {
        let timeout = slow(timeout);
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => panic!(
                    "{}: no line starting with '{prefix}' within {timeout:?}; got {:?}",
                    self.name,
                    self.seen.lock().unwrap()
                ),
            }
        }
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let timeout = slow(timeout);
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A python peer: `server` or `client` of tests/helpers/peer.py.
pub fn peer(role: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        &format!("peer {role} {args:?}"),
        Command::new("python3")
            .arg(helper("peer.py"))
            .arg(role)
            .args(args),
    )
}

/// A python client making `count` connections to 127.0.0.1:`port`, each
/// closed `close_delay_ms` after the server's EOF; `extra` is appended.
pub fn closing_client(port: u16, count: usize, close_delay_ms: u64, extra: &[&str]) -> Proc {
    let (addr, count, delay) = (v4(port), count.to_string(), close_delay_ms.to_string());
    let mut args = vec![
        "--connect",
        &addr,
        "--count",
        &count,
        "--mode",
        "close-on-eof",
        "--close-delay-ms",
        &delay,
    ];
    args.extend_from_slice(extra);
    peer("client", &args)
}

/// A python client making `count` connections to 127.0.0.1:`port` and
/// holding each open for `hold_secs` seconds.
pub fn holding_client(port: u16, count: usize, hold_secs: u64) -> Proc {
    let (addr, count, hold) = (v4(port), count.to_string(), hold_secs.to_string());
    peer(
        "client",
        &[
            "--connect",
            &addr,
            "--mode",
            "hold",
            "--count",
            &count,
            "--hold",
            &hold,
        ],
    )
}

/// A python client sending `data` on each of `count` connections to
/// `srv` on 127.0.0.1:`port`; waits until `srv` accepted them all and the
/// client is done. Returns the client and the accepted (fd, local, remote).
pub fn requests(
    srv: &Proc,
    port: u16,
    count: usize,
    data: &str,
) -> (Proc, Vec<(u32, String, String)>) {
    let (addr, n) = (v4(port), count.to_string());
    let cli = peer(
        "client",
        &["--connect", &addr, "--count", &n, "--data", data],
    );
    let accepted = (0..count)
        .map(|_| parse_accepted(&srv.expect("accepted", Duration::from_secs(10))))
        .collect();
    cli.expect("done", Duration::from_secs(10));
    (cli, accepted)
}

/// Starts a server and returns it with its port.
pub fn server(args: &[&str]) -> (Proc, u16) {
    let p = peer("server", args);
    let l = p.expect("listening ", Duration::from_secs(10));
    let port = l.split_whitespace().nth(1).unwrap().parse().unwrap();
    (p, port)
}

/// "accepted fd FD local L remote R" -> (fd, local, remote)
pub fn parse_accepted(line: &str) -> (u32, String, String) {
    let w: Vec<&str> = line.split_whitespace().collect();
    (w[2].parse().unwrap(), w[4].to_string(), w[6].to_string())
}

/// The close-wait tracer, attached.
pub struct Tracer {
    pub proc: Proc,
    stderr: Receiver<String>,
    pub stderr_seen: Arc<Mutex<Vec<String>>>,
    dir: TempDir,
    pub json: PathBuf,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub json: Value,
    /// The `--json` file the run wrote.
    pub json_path: PathBuf,
    /// The run's directory, removed with this.
    _dir: TempDir,
}

impl Finished {
    /// Reads the run's JSON report back with `close-wait report` and checks
    /// that it prints the human report the run printed, line for line (the
    /// header, counters, groups with why, threads, stacks and listener
    /// lines, sockets, closed-late), up to the run's closing notes.
    /// Returns the offline text.
    pub fn assert_report_reads_back(&self) -> String {
        let out = Command::new(bin())
            .arg("report")
            .arg(&self.json_path)
            .output()
            .expect("run close-wait report");
        let offline = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "report {}: {}",
            self.json_path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let live: Vec<&str> = self
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("close-wait report "))
            .take_while(|l| !l.starts_with("note: "))
            .collect();
        assert!(
            !live.is_empty(),
            "no report in the run's stdout: {}",
            self.stdout
        );
        let live = live.join("\n");
        let live = live.trim_end();
        assert!(
            offline.contains(live),
            "report FILE.json differs from the live report\n--- live:\n{live}\n--- offline:\n{offline}"
        );
        offline
    }
}

impl Tracer {
    /// Starts `close-wait record ARGS --json DIR/report.json` and waits until
    /// it is attached.
    pub fn start(args: &[&str]) -> Tracer {
        let dir = tempdir("tracer");
        let json = dir.join("report.json");
        let mut cmd = Command::new(bin());
        cmd.arg("record").args(args);
        // `cargo xtask vm-test` runs the tests once per hook path.
        if let Some(h) = std::env::var_os("CLOSE_WAIT_HOOKS") {
            cmd.arg("--hooks").arg(h);
        }
        cmd.arg("--json").arg(&json).stderr(Stdio::piped());
        let mut proc = Proc::spawn("close-wait", &mut cmd);
        let (stderr, stderr_seen) = reader(proc.child.stderr.take().unwrap());
        let t = Tracer {
            proc,
            stderr,
            stderr_seen,
            dir,
            json,
        };
        t.wait_stderr("close-wait: tracing", Duration::from_secs(60));
        t
    }

    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> String {
        let timeout = slow(timeout);
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => continue,
                Err(_) => panic!(
                    "close-wait: no '{needle}' on stderr within {timeout:?}; stderr: {:?}; stdout: {:?}",
                    self.stderr_seen.lock().unwrap(),
                    self.proc.seen.lock().unwrap()
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGINT, wait, and read what it reported.
    pub fn stop(mut self) -> Finished {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.proc.pid() as i32, libc::SIGINT) };
        let status = self.proc.wait(Duration::from_secs(60));
        self.finish(status)
    }

    /// What a tracer that exited with `status` reported.
    pub fn finish(self, status: ExitStatus) -> Finished {
        std::thread::sleep(Duration::from_millis(50));
        let stdout = self.proc.seen.lock().unwrap().join("\n");
        let stderr = self.stderr_seen.lock().unwrap().join("\n");
        let text = std::fs::read_to_string(&self.json).unwrap_or_else(|e| {
            panic!(
                "no JSON report at {}: {e}; stderr: {stderr}",
                self.json.display()
            )
        });
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("report is not JSON: {e}: {text}"));
        assert_eq!(json["schema"], "close-wait.report.v1");
        Finished {
            status,
            stdout,
            stderr,
            json,
            json_path: self.json.clone(),
            _dir: self.dir,
        }
    }
}

/// Entries of `json[key]` whose local and remote are these.
pub fn find<'a>(json: &'a Value, key: &str, local: &str, remote: &str) -> Vec<&'a Value> {
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("report has no '{key}' array: {json}"))
        .iter()
        .filter(|e| e["local"] == local && e["remote"] == remote)
        .collect()
}

/// The one entry of `json[key]` for this 4-tuple.
pub fn one<'a>(json: &'a Value, key: &str, local: &str, remote: &str) -> &'a Value {
    let v = find(json, key, local, remote);
    assert_eq!(
        v.len(),
        1,
        "expected one '{key}' entry for {local} <- {remote}, found {}: {}",
        v.len(),
        serde_json::to_string_pretty(&json[key]).unwrap()
    );
    v[0]
}

/// Polls `f` until it returns Some, at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let timeout = slow(timeout);
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// State of a TCP socket by 4-tuple from `ss` (e.g. "CLOSE-WAIT").
pub fn socket_state(local: &str, remote: &str) -> Option<String> {
    let out = Command::new("ss")
        .args(["-tanH"])
        .output()
        .expect("ss (iproute2) is needed");
    let text = String::from_utf8_lossy(&out.stdout);
    let norm = |s: &str| s.replace("[::ffff:", "").replace(['[', ']'], "");
    text.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() >= 5 && norm(w[3]) == norm(local) && norm(w[4]) == norm(remote))
            .then(|| w[0].to_string())
    })
}

/// `127.0.0.1:PORT`.
pub fn v4(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// (pid, fd) of every holder in a `holders` array.
pub fn holders(v: &Value) -> Vec<(u64, u64)> {
    v.as_array()
        .unwrap_or_else(|| panic!("holders is not an array: {v}"))
        .iter()
        .map(|h| (h["pid"].as_u64().unwrap(), h["fd"].as_u64().unwrap()))
        .collect()
}

/// /proc/PID/comm.
pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_else(|e| panic!("comm of {pid}: {e}"))
        .trim()
        .to_string()
}

/// Stops the tracer and checks it exited 0.
pub fn stop_ok(tracer: Tracer) -> Finished {
    let out = tracer.stop();
    assert!(out.status.success(), "close-wait failed: {}", out.stderr);
    out
}

/// Waits (10 s at most each) until every 4-tuple is in CLOSE_WAIT, then
/// until the last one has been there longer than `threshold_ms`.
pub fn settle_stuck(tuples: &[(String, String)], threshold_ms: u64) {
    for (l, r) in tuples {
        wait_for(
            &format!("{l} <- {r} in CLOSE-WAIT"),
            Duration::from_secs(10),
            || (socket_state(l, r).as_deref() == Some("CLOSE-WAIT")).then_some(()),
        );
    }
    std::thread::sleep(Duration::from_millis(threshold_ms + 300));
}

/// A pipe (read end, write end), close-on-exec so no child holds the read
/// end unless given it.
pub fn pipe_cloexec() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned here only.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A network namespace made for a test (`ip netns add`, loopback up),
/// deleted when dropped, pass or fail. Declare it before the processes
/// that run inside it, so they are killed first.
pub struct TestNetns {
    pub name: String,
}

/// `ip ARGS` (iproute2), which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) is needed");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        let name = format!(
            "cw-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = TestNetns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Inode number of the namespace (what close-wait reports as `netns`).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("{}: {e}", self.path().display()))
            .ino()
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A python peer (see [`peer`]) running inside this namespace.
    pub fn peer(&self, role: &str, args: &[&str]) -> Proc {
        self.python_helper("peer.py", role, args)
    }

    /// tests/helpers/SCRIPT ROLE ARGS run by python3 inside this namespace.
    pub fn python_helper(&self, script: &str, role: &str, args: &[&str]) -> Proc {
        Proc::spawn(
            &format!("{script} {role} in {} {args:?}", self.name),
            Command::new("ip")
                .args(["netns", "exec", &self.name, "python3"])
                .arg(helper(script))
                .arg(role)
                .args(args),
        )
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Sends `sig` to `pid` (a process this test made).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a process the test made; at worst it is gone.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Inode of our own network namespace.
pub fn own_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").unwrap().ino()
}

/// A loopback port free right now.
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `http://addr/path` over HTTP/1.0 (the connection closes after the
/// response): (status, body).
pub fn http_get_plain(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Value of the sample `name{labels}` in Prometheus exposition text, the
/// labels in any order (the sample must have exactly these labels).
pub fn metric_sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, mut have) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.trim_end_matches('}')
                    .split(',')
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
            None => (series, Vec::new()),
        };
        have.sort();
        (n == name && have == want).then(|| value.parse().ok())?
    })
}

/// Metric family names (`# TYPE` lines) of exposition text, with the
/// sample names a histogram or counter family adds (`_bucket`, `_sum`,
/// `_count`, `_total`).
pub fn metric_names(body: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            let (Some(name), Some(kind)) = (w.next(), w.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            match kind {
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                _ => {}
            }
        } else if !l.starts_with('#') {
            if let Some(n) = l.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                names.insert(n.to_owned());
            }
        }
    }
    names
}

/// True in a guest under software emulation (`cargo xtask vm-test` sets
/// CLOSE_WAIT_TIME_SCALE there).
pub fn emulated() -> bool {
    std::env::var("CLOSE_WAIT_TIME_SCALE").is_ok_and(|v| v.parse::<u32>().is_ok_and(|k| k > 1))
}

/// A bound on waiting, stretched by CLOSE_WAIT_TIME_SCALE (an integer, set
/// by `cargo xtask vm-test` in guests under software emulation, where a
/// python start or an attach takes several times longer). Only the limits
/// of the harness's waits are stretched, never a measured duration.
pub fn slow(d: Duration) -> Duration {
    let k = std::env::var("CLOSE_WAIT_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d * k
}
