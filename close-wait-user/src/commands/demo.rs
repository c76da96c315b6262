//! `close-wait demo`: what close-wait finds, on this machine, in a few
//! seconds. It starts three small leaky programs on loopback, shaped like
//! real post-mortems (a client that never closes, a server whose workers
//! stop reading, a listener that never accepts), plus a well-behaved one;
//! records for a few seconds with a 1 s threshold; prints the report and two
//! lines on what each finding means; then kills every process it started,
//! by pid, and checks that no process and no CLOSE_WAIT socket of its ports
//! is left. Its files live in a temp dir it removes.
//!
//! The programs are this binary re-executed with the hidden `demo-child`
//! subcommand (see [`roles`]): the installed binary is all it needs.

pub mod roles;

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitCode, Stdio},
    sync::mpsc::{channel, Receiver},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::{
    cli::{DemoArgs, DemoChildArgs},
    loader, sockets,
};
use roles::Role;

/// Stuck means longer than this in CLOSE_WAIT.
const THRESHOLD: &str = "1s";
const POOL_CONNECTIONS: u32 = 3;
const GOOD_REQUESTS: u32 = 5;
const STALLED_REQUESTS: u32 = 3;
const BACKLOG_REQUESTS: u32 = 2;
const BACKLOG: i32 = 4;
/// How long a child gets to print its first line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A process the demo started, with its stdout read line by line.
struct Started {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

fn lines_of<R: Read + Send + 'static>(r: R) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Started {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line starting with `prefix`, within `timeout`.
    fn expect(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => bail!(
                    "demo program {} (pid {}) did not say '{prefix}' within {timeout:?}",
                    self.name,
                    self.pid()
                ),
            }
        }
    }

    fn go(&mut self) -> anyhow::Result<()> {
        let mut stdin = self.stdin.take().context("go sent twice")?;
        writeln!(stdin, "go").with_context(|| format!("starting {}", self.name))?;
        Ok(())
    }
}

/// Everything the demo started; killed by pid when dropped (also on an
/// error or a panic). The programs also die with the demo itself
/// (PR_SET_PDEATHSIG), should the demo be killed.
#[derive(Default)]
struct Processes {
    list: Vec<Started>,
}

/// Makes the child die when the demo does, and restores SIGINT's default
/// disposition (the demo ignores it while the tracer runs).
fn die_with_parent(cmd: &mut Command, signal: i32) {
    // SAFETY: prctl and signal are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
}

impl Processes {
    fn spawn_role(&mut self, exe: &Path, role: &Role) -> anyhow::Result<usize> {
        let mut cmd = Command::new(exe);
        cmd.arg("demo-child")
            .args(role.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd, libc::SIGKILL);
        self.push(role.comm(), &mut cmd)
    }

    fn push(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<usize> {
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start demo program {name}"))?;
        let lines = lines_of(child.stdout.take().context("stdout")?);
        let stdin = child.stdin.take();
        self.list.push(Started {
            name: name.to_string(),
            child,
            stdin,
            lines,
        });
        Ok(self.list.len() - 1)
    }

    fn pids(&self) -> Vec<u32> {
        self.list.iter().map(Started::pid).collect()
    }

    /// SIGKILL to every pid still running, then reap them all. Returns the
    /// pids stopped.
    fn stop_all(&mut self) -> Vec<u32> {
        let mut pids = Vec::new();
        for p in &mut self.list {
            pids.push(p.pid());
            if matches!(p.child.try_wait(), Ok(None)) {
                // Child::kill signals exactly this pid (ours, not yet reaped).
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
        self.list.clear();
        pids
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A directory of our own under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let template = std::env::temp_dir().join("close-wait-demo-XXXXXX");
        let mut bytes = template.into_os_string().into_encoded_bytes();
        bytes.push(0);
        // SAFETY: a NUL-terminated template that mkdtemp fills in place.
        let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if p.is_null() {
            return Err(std::io::Error::last_os_error()).context("creating the demo's temp dir");
        }
        bytes.pop();
        // SAFETY: the bytes came from an OsString and mkdtemp only replaced
        // ASCII X's by ASCII characters.
        let s = unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(bytes) };
        Ok(TempDir(PathBuf::from(s)))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn port_of(line: &str) -> anyhow::Result<u16> {
    line.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in '{line}'"))
}

/// What each demo program is, in the words of the findings.
struct Cast {
    good: u32,
    pool: u32,
    stalled: u32,
    backlog: u32,
}

/// The two lines that say what a finding of the demo means, or None for a
/// group that is not one of the demo's leaks.
pub fn explain(diagnosis: &str, who: &str) -> Option<[String; 2]> {
    let lines = match diagnosis {
        "read-not-closed" => [
            format!("{who} is the client that never closes: it kept in its pool the connections the server had closed."),
            "Each holds a descriptor and a local port until the process exits: look for a close() missing on EOF.".to_string(),
        ],
        "never-read" => [
            format!("{who} is the server whose workers stopped reading: they block writing to a full log pipe."),
            "The requests sit unread and EOF is never seen: look at what the threads wait on, not at the sockets.".to_string(),
        ],
        "unaccepted" => [
            format!("{who} is the listener that never accepts: clients connected, sent, and left from its accept queue."),
            "No descriptor exists, so no process holds them: look for an accept loop that died or never started.".to_string(),
        ],
        "held-elsewhere" => [
            format!("{who} let go of the socket, but another process (a forked child) still holds it open."),
            "Look for descriptors inherited across fork(): set close-on-exec or close them in the child.".to_string(),
        ],
        _ => return None,
    };
    Some(lines)
}

/// Prints the explanations of the report's groups and returns what the
/// report should have said and did not (a leak not found, a stuck socket
/// of the well-behaved server).
fn explain_findings(report: &Value, cast: &Cast) -> Vec<String> {
    let groups = report["groups"].as_array().cloned().unwrap_or_default();
    println!("\nWhat the demo's findings mean:");
    let expected = [
        ("read-not-closed", cast.pool, roles::POOL_CLIENT),
        ("never-read", cast.stalled, roles::STALLED_SERVER),
        ("unaccepted", cast.backlog, roles::BACKLOG_SERVER),
    ];
    for g in &groups {
        let d = g["diagnosis"].as_str().unwrap_or("");
        let pid = g["pid"].as_u64().map(|p| p as u32);
        let who = format!(
            "{}[{}]",
            g["comm"].as_str().unwrap_or("?"),
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
        );
        if let Some([a, b]) = explain(d, &who) {
            println!("\n{} x{}  {who}", d.to_uppercase(), g["count"]);
            println!("  {a}");
            println!("  {b}");
        }
    }
    let closed = report["episodes"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| {
                    e["ending"] == "graceful"
                        && e["closer"]["pid"].as_u64() == Some(u64::from(cast.good))
                })
                .count()
        })
        .unwrap_or(0);
    println!(
        "\n{}[{}] is the well-behaved server: it closed every connection its clients left ({closed} graceful closes).",
        roles::GOOD_SERVER,
        cast.good
    );
    let mut wrong: Vec<String> = groups
        .iter()
        .filter(|g| g["pid"].as_u64() == Some(u64::from(cast.good)))
        .map(|g| {
            format!("no stuck socket of {}[{}]", roles::GOOD_SERVER, cast.good)
                + &format!(" (found {})", g["diagnosis"])
        })
        .collect();
    if closed == 0 {
        wrong.push(format!(
            "graceful closes by {}[{}]",
            roles::GOOD_SERVER,
            cast.good
        ));
    }
    expected
        .iter()
        .filter(|(d, pid, _)| {
            !groups
                .iter()
                .any(|g| g["diagnosis"] == *d && g["pid"].as_u64() == Some(u64::from(*pid)))
        })
        .map(|(d, pid, name)| format!("{d} of {name}[{pid}]"))
        .chain(wrong)
        .collect()
}

/// CLOSE_WAIT sockets with a local or remote port among `ports`.
fn close_wait_on(ports: &HashSet<u16>) -> Vec<String> {
    sockets::list_tcp(&[close_wait_common::tcp_state::CLOSE_WAIT])
        .unwrap_or_default()
        .iter()
        .filter(|s| ports.contains(&s.local.port()) || ports.contains(&s.remote.port()))
        .map(|s| format!("{} <- {}", s.local, s.remote))
        .collect()
}

/// Ignores SIGINT in the demo while the tracer runs: Ctrl-C reaches the
/// whole foreground process group, the tracer ends early with its report
/// and the demo still cleans up.
struct IgnoreSigint(libc::sighandler_t);

impl IgnoreSigint {
    fn new() -> IgnoreSigint {
        // SAFETY: changing this process's SIGINT disposition.
        IgnoreSigint(unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) })
    }
}

impl Drop for IgnoreSigint {
    fn drop(&mut self) {
        // SAFETY: restoring the disposition saved in new().
        unsafe { libc::signal(libc::SIGINT, self.0) };
    }
}

/// `close-wait demo-child ROLE ...`: one of the demo's programs.
pub fn run_child(args: DemoChildArgs) -> anyhow::Result<ExitCode> {
    let role = Role::parse(&args.role).map_err(anyhow::Error::msg)?;
    roles::run(&role).with_context(|| format!("demo program {}", role.comm()))?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Refuse early, before any program is started.
    if let Some(p) = &args.html {
        // Checked now; the lock is the tracer's, which claims it again.
        drop(crate::output::OutputFile::claim(p, None)?);
    }
    loader::preflight()?;
    let exe = std::env::current_exe().context("finding this program's path")?;
    let dir = TempDir::new()?;
    let mut procs = Processes::default();

    let good = procs.spawn_role(&exe, &Role::GoodServer)?;
    let stalled = procs.spawn_role(&exe, &Role::StalledServer)?;
    let backlog = procs.spawn_role(&exe, &Role::BacklogServer { backlog: BACKLOG })?;
    let mut ports = HashSet::new();
    let mut port = |i: usize| -> anyhow::Result<u16> {
        let p = port_of(&procs.list[i].expect("listening ", START_TIMEOUT)?)?;
        ports.insert(p);
        Ok(p)
    };
    let (good_port, stalled_port, backlog_port) = (port(good)?, port(stalled)?, port(backlog)?);
    let pool = procs.spawn_role(
        &exe,
        &Role::PoolClient {
            port: good_port,
            connections: POOL_CONNECTIONS,
        },
    )?;
    let load = procs.spawn_role(
        &exe,
        &Role::Load {
            good: good_port,
            stalled: stalled_port,
            backlog: backlog_port,
            good_requests: GOOD_REQUESTS,
            stalled_requests: STALLED_REQUESTS,
            backlog_requests: BACKLOG_REQUESTS,
        },
    )?;
    let cast = Cast {
        good: procs.list[good].pid(),
        pool: procs.list[pool].pid(),
        stalled: procs.list[stalled].pid(),
        backlog: procs.list[backlog].pid(),
    };
    eprintln!(
        "demo: started {}[{}] (well-behaved server, :{good_port}), {}[{}] (client that never closes), \
         {}[{}] (server whose workers stop reading, :{stalled_port}), {}[{}] (listener that never accepts, :{backlog_port}), \
         {}[{}] (their clients)",
        roles::GOOD_SERVER,
        cast.good,
        roles::POOL_CLIENT,
        cast.pool,
        roles::STALLED_SERVER,
        cast.stalled,
        roles::BACKLOG_SERVER,
        cast.backlog,
        roles::LOAD,
        procs.list[load].pid()
    );

    // The tracer: `record` of this binary, only for the demo's processes.
    let json = dir.0.join("report.json");
    let mut cmd = Command::new(&exe);
    cmd.arg("record")
        .args(["--threshold", THRESHOLD, "--interval", "1s", "--duration"])
        .arg(format!("{}ms", args.duration.as_millis()))
        .arg("--json")
        .arg(&json);
    for pid in procs.pids() {
        cmd.arg("-p").arg(pid.to_string());
    }
    if let Some(h) = &args.html {
        cmd.arg("--html").arg(h);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd, libc::SIGTERM);
    let _sigint = IgnoreSigint::new();
    let tracer = procs.push("close-wait record", &mut cmd)?;
    let tracer_err = lines_of(
        procs.list[tracer]
            .child
            .stderr
            .take()
            .context("tracer stderr")?,
    );
    let attached = Instant::now() + Duration::from_secs(60);
    let mut stderr_seen = Vec::new();
    loop {
        match tracer_err.recv_timeout(attached.saturating_duration_since(Instant::now())) {
            Ok(l) if l.starts_with("close-wait: tracing") => break,
            Ok(l) => stderr_seen.push(l),
            Err(_) => bail!(
                "the tracer did not attach: {}",
                stderr_seen.join(" / ").trim()
            ),
        }
    }
    eprintln!(
        "demo: tracer attached (pid {}); recording {:?} with a {THRESHOLD} threshold",
        procs.list[tracer].pid(),
        args.duration
    );
    procs.list[pool].go()?;
    procs.list[load].go()?;
    procs.list[pool].expect("holding", START_TIMEOUT)?;
    procs.list[load].expect("done", START_TIMEOUT)?;

    let end = Instant::now() + args.duration + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = procs.list[tracer].child.try_wait()? {
            break s;
        }
        if Instant::now() > end {
            bail!(
                "the tracer did not end within {:?}",
                args.duration + Duration::from_secs(60)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let report_text: Vec<String> = procs.list[tracer].lines.try_iter().collect();
    stderr_seen.extend(tracer_err.try_iter());
    if !status.success() {
        bail!(
            "the tracer failed ({status}): {}",
            stderr_seen.join(" / ").trim()
        );
    }
    for l in &report_text {
        println!("{l}");
    }
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("reading the tracer's report {}", json.display()))?;
    let report: Value = serde_json::from_str(&text).context("the tracer's JSON report")?;
    let missing = explain_findings(&report, &cast);

    // Leave nothing behind.
    let stopped = procs.stop_all();
    let alive: Vec<u32> = stopped
        .iter()
        .copied()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = close_wait_on(&ports);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = close_wait_on(&ports);
    }
    let dir_path = dir.0.clone();
    drop(dir);
    if !alive.is_empty() || !left.is_empty() || dir_path.exists() {
        bail!(
            "left behind: processes {alive:?}, CLOSE_WAIT sockets {left:?}, dir exists: {}",
            dir_path.exists()
        );
    }
    let mut sorted: Vec<u16> = ports.into_iter().collect();
    sorted.sort_unstable();
    let list = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(" ");
    println!(
        "\ndemo: stopped pids {}; no process of them alive, no CLOSE_WAIT socket left on ports {}; removed {}",
        list(&mut stopped.iter().map(u32::to_string)),
        list(&mut sorted.iter().map(u16::to_string)),
        dir_path.display()
    );
    if !missing.is_empty() {
        bail!(
            "the report does not show what the demo made: expected {}",
            missing.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_leak_has_two_lines() {
        for d in [
            "read-not-closed",
            "never-read",
            "unaccepted",
            "held-elsewhere",
        ] {
            let [a, b] = explain(d, "x[1]").expect(d);
            assert!(a.starts_with("x[1] "), "{a}");
            assert!(!b.is_empty());
        }
        assert!(explain("closed-late", "x[1]").is_none());
    }

    #[test]
    fn temp_dir_is_removed() {
        let d = TempDir::new().unwrap();
        let p = d.0.clone();
        std::fs::write(p.join("f"), "x").unwrap();
        assert!(p.is_dir());
        drop(d);
        assert!(!p.exists());
    }
}
