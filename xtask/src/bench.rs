//! `cargo xtask bench`: what close-wait costs against no tracer and against
//! the bpftrace script a user would write instead, side by side in one run.
//! Figures are printed, never asserted.
//!
//! Workloads:
//! - nginx (`return 200`, its own config on a free loopback port) driven by
//!   `wrk -t1 -c32 -d6s -H "Connection: close"`: nginx closes first, so every
//!   client socket passes through CLOSE_WAIT. Configurations alternate round
//!   by round, the order rotated each round, and medians are compared: the
//!   machine this is written for has 2 shared cores, so absolute figures drift
//!   with whatever else runs.
//! - The Rust churn (connect, shutdown, reset), untraced against close-wait.
//! - The userspace pipeline microbenchmark (no privileges).
//!
//! Per-program cost comes from the kernel's own statistics
//! (`kernel.bpf_stats_enabled`, turned on for the run and restored after):
//! run_time_ns / run_cnt of every program the tracer or bpftrace holds,
//! found through its /proc/PID/fdinfo and named by `bpftool`.

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead as _, BufReader, Read},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Rounds of each configuration (`CLOSE_WAIT_BENCH_ROUNDS` overrides it for
/// a quick look at the output; figures are compared at 6 or more).
const ROUNDS: usize = 6;

fn rounds() -> usize {
    std::env::var("CLOSE_WAIT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS)
}
const WRK_SECS: u32 = 6;
const CHURN_CONNS: usize = 10_000;
/// `newstate` offset compiled into close-wait-ebpf's `filter_only_tp`
/// (filter_only.rs `TP_NEWSTATE_OFFSET`); that program is attached only when
/// the running kernel's tracefs format says the same.
const FILTER_TP_NEWSTATE_OFFSET: u32 = 20;
/// What a user would write instead: CLOSE_WAIT entry times keyed by socket,
/// a duration histogram on exit.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->newstate == 8/ {
  @entered[args->skaddr] = nsecs;
}
tracepoint:sock:inet_sock_set_state /args->oldstate == 8/ {
  $t = @entered[args->skaddr];
  if ($t) {
    @close_wait_us = hist((nsecs - $t) / 1000);
    delete(@entered[args->skaddr]);
  }
}
BEGIN { printf("ready\n"); }
"#;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Config {
    Untraced,
    Default,
    StacksNone,
    AcceptStacks,
    Bpftrace,
    FilterTp,
    FilterRawTp,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Default => "close-wait (--json --hlog)",
            Config::StacksNone => "close-wait --stacks none",
            Config::AcceptStacks => "close-wait --accept-stacks",
            Config::Bpftrace => "bpftrace script",
            Config::FilterTp => "filter-only, tracepoint",
            Config::FilterRawTp => "filter-only, raw_tp",
        }
    }

    fn tracer_args(self) -> Option<&'static [&'static str]> {
        match self {
            Config::Default => Some(&[]),
            Config::StacksNone => Some(&["--stacks", "none"]),
            Config::AcceptStacks => Some(&["--accept-stacks"]),
            _ => None,
        }
    }
}

/// One BPF program's figures at the end of a round (cumulative since it
/// was loaded, which was at the start of that round).
#[derive(Clone, Debug, Default)]
struct ProgSample {
    name: String,
    kind: String,
    id: u32,
    run_time_ns: u64,
    run_cnt: u64,
    recursion_misses: u64,
    xlated_insns: u64,
    jited_bytes: u64,
}

#[derive(Clone, Debug, Default)]
struct TracerSample {
    cpu_s: f64,
    /// User and system CPU over the same window, seconds.
    threads: BTreeMap<String, f64>,
    max_rss_kib: u64,
    episodes: u64,
    lost_events: u64,
    hooks: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct Sample {
    conns: u64,
    rate: f64,
    cpu_us: f64,
    progs: Vec<ProgSample>,
    map_bytes: u64,
    /// (name, memlock bytes) of each map, largest first.
    maps: Vec<(String, u64)>,
    /// CPU of the processes doing the work (nginx, wrk, the tracer or
    /// bpftrace) per connection, us.
    proc_cpu_us: f64,
    tracer: Option<TracerSample>,
    wrk_errors: String,
    foreign_progs: usize,
}

// ---------------------------------------------------------------- helpers

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

/// `kernel.bpf_stats_enabled` on for the run, the previous value restored.
struct BpfStats(String);
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
impl BpfStats {
    fn enable() -> Result<Self> {
        let old = std::fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(BPF_STATS, "1").context("setting kernel.bpf_stats_enabled=1 (root)")?;
        Ok(Self(old.trim().to_string()))
    }
}
impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.0);
    }
}

/// CPU time spent by all CPUs (USER_HZ ticks): user, system, irq and
/// softirq (the eBPF programs run in the last three). Niced time is left
/// out when this process is not niced: the other work on a shared machine
/// (builds at nice 10) lands there. Idle, iowait and steal never count.
fn cpu_busy_ticks(count_nice: bool) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    g(0) + if count_nice { g(1) } else { 0 } + g(2) + g(5) + g(6)
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of every thread of `pid`, seconds.
fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (num(11) + num(12)) / ticks_per_s()
}

/// CPU of `pid` split into user and system time (seconds): system time
/// is the ring buffer reads, wake-ups and file writes; user time the
/// decoding and bookkeeping.
fn cpu_split_s(pid: u32) -> BTreeMap<String, f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    [
        ("user".to_string(), num(11) / ticks_per_s()),
        ("system".to_string(), num(12) / ticks_per_s()),
    ]
    .into()
}

/// CPU of the children this process has waited for (seconds).
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tempdir(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("close-wait-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// Waits for a child and returns its peak RSS (KiB) from wait4's rusage.
fn reap(child: &mut Child, within: Duration) -> Result<u64> {
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + within;
    loop {
        let mut status = 0;
        // SAFETY: rusage is written by the kernel; pid is our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            return Ok(ru.ru_maxrss as u64);
        }
        if r < 0 {
            bail!("wait4({pid}): {}", std::io::Error::last_os_error());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            // SAFETY: as above; blocks until the killed child is reaped.
            unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            bail!("pid {pid} did not exit within {within:?} of SIGINT (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a child this process started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Reads a child's output pipe to the end on a thread (so it never fills),
/// keeping the last few KiB for error messages.
fn drain<R: Read + Send + 'static>(r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut tail = String::new();
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            tail.push_str(&line);
            tail.push('\n');
            if tail.len() > 8192 {
                tail.drain(..tail.len() - 4096);
            }
        }
        tail
    })
}

// ---------------------------------------------------------------- nginx + wrk

struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start() -> Result<Self> {
        let dir = tempdir("nginx")?;
        let port = free_port()?;
        let d = dir.display();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
            ),
        )?;
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting nginx (Debian's nginx-light; cargo xtask setup installs it)")?;
        let nginx = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on 127.0.0.1:{port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

impl Nginx {
    /// CPU of the master and its workers (seconds).
    fn cpu_s(&self) -> f64 {
        let m = self.child.id();
        let kids =
            std::fs::read_to_string(format!("/proc/{m}/task/{m}/children")).unwrap_or_default();
        process_cpu_s(m)
            + kids
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(process_cpu_s)
                .sum::<f64>()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its worker on SIGTERM; the whole group to be sure.
        // SAFETY: the process group this bench started.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One wrk run: connections completed and the "Socket errors" line, if any.
fn wrk(port: u16) -> Result<(u64, f64, String)> {
    let t0 = Instant::now();
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{WRK_SECS}s"),
            "-H",
            "Connection: close",
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk (Debian's wrk; cargo xtask setup installs it)")?;
    let wall = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    // "  123456 requests in 6.00s, 9.87MB read"
    let (n, secs) = text
        .lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(" requests in ")?;
            let secs = rest.split(['s', ',']).next()?;
            Some((n.parse::<u64>().ok()?, secs.parse::<f64>().ok()?))
        })
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((n, if secs > 0.0 { secs } else { wall }, errors))
}

// ---------------------------------------------------------------- BPF objects

/// Programs and maps a process holds: ids from its /proc/PID/fdinfo.
fn held_bpf_ids(pid: u32) -> (Vec<u32>, Vec<u32>) {
    let (mut progs, mut maps) = (HashSet::new(), HashSet::new());
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (vec![], vec![]);
    };
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("prog_id:") {
                progs.extend(v.trim().parse::<u32>().ok());
            } else if let Some(v) = line.strip_prefix("map_id:") {
                maps.extend(v.trim().parse::<u32>().ok());
            }
        }
    }
    let mut p: Vec<u32> = progs.into_iter().collect();
    let mut m: Vec<u32> = maps.into_iter().collect();
    p.sort();
    m.sort();
    (p, m)
}

fn bpftool_json(what: &str) -> Vec<serde_json::Value> {
    let out = Command::new("bpftool")
        .args(["-j", what, "show"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    match serde_json::from_slice::<serde_json::Value>(&out) {
        Ok(serde_json::Value::Array(v)) => v,
        _ => Vec::new(),
    }
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// Every loaded program, by id, as bpftool shows it.
fn all_programs() -> BTreeMap<u32, ProgSample> {
    bpftool_json("prog")
        .iter()
        .map(|p| {
            let id = u(p, "id") as u32;
            (
                id,
                ProgSample {
                    name: p
                        .get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("?")
                        .to_string(),
                    kind: p
                        .get("type")
                        .and_then(|n| n.as_str())
                        .unwrap_or("?")
                        .to_string(),
                    id,
                    run_time_ns: u(p, "run_time_ns"),
                    run_cnt: u(p, "run_cnt"),
                    recursion_misses: u(p, "recursion_misses"),
                    xlated_insns: u(p, "bytes_xlated") / 8,
                    jited_bytes: u(p, "bytes_jited"),
                },
            )
        })
        .collect()
}

/// Programs held by `pid` and the kernel memory (memlock) of its maps; also
/// how many programs other processes have loaded (other tracers running on
/// a shared machine distort the figures: said in the output).
fn bpf_sample(pid: u32) -> (Vec<ProgSample>, Vec<(String, u64)>, usize) {
    let (pids, mids) = held_bpf_ids(pid);
    let all = all_programs();
    let progs = pids.iter().filter_map(|id| all.get(id).cloned()).collect();
    let foreign = all
        .values()
        .filter(|p| !pids.contains(&p.id) && p.kind != "cgroup_skb" && p.kind != "cgroup_device")
        .count();
    let mut maps: Vec<(String, u64)> = bpftool_json("map")
        .iter()
        .filter(|m| mids.contains(&(u(m, "id") as u32)))
        .map(|m| {
            let name = m.get("name").and_then(|n| n.as_str()).unwrap_or("?");
            (name.to_string(), u(m, "bytes_memlock"))
        })
        .collect();
    maps.sort_by_key(|m| std::cmp::Reverse(m.1));
    (progs, maps, foreign)
}

fn object_path(root: &Path) -> Result<PathBuf> {
    let build = root.join("target/release/build");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&build)
        .with_context(|| format!("reading {}", build.display()))?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("close-wait-user-")
        })
        .map(|e| e.path().join("out/close-wait"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .context("no built eBPF object (target/release/build/close-wait-user-*/out/close-wait)")
}

/// `newstate`'s offset in this kernel's sock:inet_sock_set_state record.
fn tracefs_newstate_offset() -> Option<u32> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|t| {
            std::fs::read_to_string(format!("{t}/events/sock/inet_sock_set_state/format")).ok()
        })?
        .lines()
        .find(|l| l.contains(" newstate;"))?
        .split(';')
        .find_map(|f| f.trim().strip_prefix("offset:")?.parse().ok())
}

// ---------------------------------------------------------------- configurations

enum Attached {
    None,
    Tracer {
        child: Child,
        json: PathBuf,
        dir: PathBuf,
        err: Option<std::thread::JoinHandle<String>>,
    },
    Bpftrace {
        child: Child,
        out: Option<std::thread::JoinHandle<String>>,
    },
    Filter(Box<aya::Ebpf>),
}

impl Attached {
    fn pid(&self) -> u32 {
        match self {
            Attached::Tracer { child, .. } | Attached::Bpftrace { child, .. } => child.id(),
            _ => std::process::id(),
        }
    }
}

fn attach(cfg: Config, bin: &Path, object: &Path, round: usize) -> Result<Attached> {
    if let Some(extra) = cfg.tracer_args() {
        let dir = tempdir(&format!("tracer-{round}"))?;
        let json = dir.join("cw.json");
        let mut child = Command::new(bin)
            .arg("record")
            .arg("--json")
            .arg(&json)
            .arg("--hlog")
            .arg(dir.join("cw.hlog"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting close-wait")?;
        let mut err = BufReader::new(child.stderr.take().expect("piped"));
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line)? == 0 {
                let _ = child.wait();
                bail!("close-wait exited before tracing: {seen}");
            }
            seen.push_str(&line);
            if line.contains("tracing") {
                break;
            }
        }
        return Ok(Attached::Tracer {
            child,
            json,
            dir,
            err: Some(drain(err.into_inner())),
        });
    }
    match cfg {
        Config::Bpftrace => {
            let mut child = Command::new("bpftrace")
                .args(["-B", "line", "-e", BPFTRACE_SCRIPT])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace (Debian's bpftrace; cargo xtask setup installs it)")?;
            let mut out = BufReader::new(child.stdout.take().expect("piped"));
            let mut seen = String::new();
            // BEGIN runs once every probe is attached.
            loop {
                let mut line = String::new();
                if out.read_line(&mut line)? == 0 {
                    let _ = child.wait();
                    bail!("bpftrace exited before attaching: {seen}");
                }
                seen.push_str(&line);
                if line.trim() == "ready" {
                    break;
                }
            }
            Ok(Attached::Bpftrace {
                child,
                out: Some(drain(out.into_inner())),
            })
        }
        Config::FilterTp | Config::FilterRawTp => {
            let mut ebpf = aya::EbpfLoader::new()
                .load_file(object)
                .with_context(|| format!("loading {}", object.display()))?;
            if cfg == Config::FilterTp {
                let p: &mut aya::programs::TracePoint = ebpf
                    .program_mut("filter_only_tp")
                    .context("filter_only_tp missing from the eBPF object")?
                    .try_into()?;
                p.load().context("loading filter_only_tp")?;
                p.attach("sock", "inet_sock_set_state")
                    .context("attaching filter_only_tp")?;
            } else {
                let p: &mut aya::programs::RawTracePoint = ebpf
                    .program_mut("filter_only_raw_tp")
                    .context("filter_only_raw_tp missing from the eBPF object")?
                    .try_into()?;
                p.load().context("loading filter_only_raw_tp")?;
                p.attach("inet_sock_set_state")
                    .context("attaching filter_only_raw_tp")?;
            }
            Ok(Attached::Filter(Box::new(ebpf)))
        }
        _ => Ok(Attached::None),
    }
}

/// Counters of a close-wait JSON report.
fn json_counters(path: &Path) -> (u64, u64, Vec<String>) {
    let v: serde_json::Value = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let c = &v["counters"];
    let hooks = v["hooks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (u(c, "close_wait_entered"), u(c, "lost_events"), hooks)
}

fn round(cfg: Config, nginx: &Nginx, bin: &Path, object: &Path, r: usize) -> Result<Sample> {
    let mut att = attach(cfg, bin, object, r)?;
    let pid = att.pid();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: getpriority has no preconditions.
    let niced = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } > 0;
    let traced = matches!(att, Attached::Tracer { .. } | Attached::Bpftrace { .. });
    let tcpu0 = if traced { process_cpu_s(pid) } else { 0.0 };
    let threads0 = cpu_split_s(pid);
    let ncpu0 = nginx.cpu_s();
    let wcpu0 = children_cpu_s();
    let b0 = cpu_busy_ticks(niced);
    let (conns, secs, wrk_errors) = wrk(nginx.port)?;
    let b1 = cpu_busy_ticks(niced);
    // wrk has been reaped: its CPU is in the children's rusage now.
    let wcpu1 = children_cpu_s();
    let ncpu1 = nginx.cpu_s();
    // Let the tracer drain what is left before reading its CPU time.
    std::thread::sleep(Duration::from_millis(300));
    let tcpu1 = if traced { process_cpu_s(pid) } else { 0.0 };
    let mut threads = cpu_split_s(pid);
    for (k, v) in threads.iter_mut() {
        *v -= threads0.get(k).copied().unwrap_or(0.0);
    }
    let (progs, maps, foreign_progs) = if matches!(att, Attached::None) {
        (Vec::new(), Vec::new(), bpf_sample(pid).2)
    } else {
        bpf_sample(pid)
    };
    let per_conn = |x: f64| x / conns.max(1) as f64 * 1e6;
    let mut s = Sample {
        conns,
        rate: conns as f64 / secs,
        cpu_us: per_conn((b1 - b0) as f64 / ticks_per_s()),
        proc_cpu_us: per_conn((tcpu1 - tcpu0) + (ncpu1 - ncpu0) + (wcpu1 - wcpu0)),
        progs,
        map_bytes: maps.iter().map(|m| m.1).sum(),
        maps,
        tracer: None,
        wrk_errors,
        foreign_progs,
    };
    match &mut att {
        Attached::Tracer {
            child,
            json,
            dir,
            err,
        } => {
            signal(child.id(), libc::SIGINT);
            let rss = reap(child, Duration::from_secs(30));
            let tail = err.take().map(|h| h.join().unwrap_or_default());
            let max_rss_kib =
                rss.with_context(|| format!("close-wait: {}", tail.unwrap_or_default()))?;
            let (episodes, lost_events, hooks) = json_counters(json);
            s.tracer = Some(TracerSample {
                cpu_s: tcpu1 - tcpu0,
                threads,
                max_rss_kib,
                episodes,
                lost_events,
                hooks,
            });
            let _ = std::fs::remove_dir_all(&*dir);
        }
        Attached::Bpftrace { child, out } => {
            signal(child.id(), libc::SIGINT);
            // Its figures were read above: a slow exit only costs time.
            if let Err(e) = reap(child, Duration::from_secs(15)) {
                eprintln!("  round {}: bpftrace: {e}", r + 1);
            }
            out.take().map(|h| h.join());
        }
        _ => {}
    }
    drop(att);
    Ok(s)
}

// ---------------------------------------------------------------- report

/// One program's medians over a configuration's rounds.
struct ProgRow {
    name: String,
    kind: String,
    ns_per_hit: f64,
    hits_per_conn: f64,
    recursion_misses: u64,
    insns: u64,
    jited_bytes: u64,
}

/// Per program (by name; programs of one name told apart by load order, as
/// bpftrace names both of its programs after the tracepoint): median ns per
/// hit and median hits per connection.
fn prog_table(samples: &[Sample]) -> Vec<ProgRow> {
    let mut by: BTreeMap<String, Vec<(&ProgSample, u64)>> = BTreeMap::new();
    for s in samples {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &s.progs {
            let k = seen.entry(&p.name).or_default();
            *k += 1;
            let key = if *k == 1 {
                p.name.clone()
            } else {
                format!("{}#{k}", p.name)
            };
            by.entry(key).or_default().push((p, s.conns));
        }
    }
    by.into_iter()
        .map(|(name, v)| {
            let ns: Vec<f64> = v
                .iter()
                .filter(|(p, _)| p.run_cnt > 0)
                .map(|(p, _)| p.run_time_ns as f64 / p.run_cnt as f64)
                .collect();
            let hits: Vec<f64> = v
                .iter()
                .map(|(p, c)| p.run_cnt as f64 / (*c).max(1) as f64)
                .collect();
            ProgRow {
                name,
                kind: v[0].0.kind.clone(),
                ns_per_hit: median(&ns),
                hits_per_conn: median(&hits),
                recursion_misses: v.iter().map(|(p, _)| p.recursion_misses).sum(),
                insns: v[0].0.xlated_insns,
                jited_bytes: v[0].0.jited_bytes,
            }
        })
        .collect()
}

/// The program on the state hook: the one named for it, else the one run
/// most often.
fn state_prog(samples: &[Sample]) -> Option<ProgRow> {
    let mut t = prog_table(samples);
    let i = t
        .iter()
        .position(|p| p.name.contains("set_s") || p.name.contains("state"))
        .or_else(|| {
            (0..t.len()).max_by(|&a, &b| t[a].hits_per_conn.total_cmp(&t[b].hits_per_conn))
        })?;
    Some(t.swap_remove(i))
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// `bpftool prog dump jited` of a program into `dir`, for a missed target;
/// where bpftool has no disassembler (Debian's is built without libbfd),
/// `dump xlated` (the program as the verifier left it). Prints the file and
/// the helper calls in it (each `bpf_probe_read_kernel` is a call the
/// filter-only programs do not make).
fn dump_prog(dir: &Path, p: &ProgSample) {
    let id = p.id.to_string();
    let mut how = "jited";
    let mut out = Command::new("bpftool")
        .args(["prog", "dump", "jited", "id", &id])
        .output();
    let why_not = match &out {
        Ok(o) if o.status.success() => String::new(),
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    if !why_not.is_empty() {
        how = "xlated";
        out = Command::new("bpftool")
            .args(["prog", "dump", "xlated", "id", &id])
            .output();
    }
    let Ok(out) = out.map(|o| o.stdout) else {
        return;
    };
    let text = String::from_utf8_lossy(&out);
    let mut calls: BTreeMap<&str, usize> = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.split(") call ").nth(1) {
            let callee = rest.split('#').next().unwrap_or(rest);
            let callee = if callee.starts_with("pc") {
                "bpf-to-bpf"
            } else {
                callee
            };
            *calls.entry(callee).or_default() += 1;
        }
    }
    let path = dir.join(format!("{}.{how}.txt", p.name));
    if std::fs::write(&path, &out).is_err() {
        return;
    }
    let calls: Vec<String> = calls.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    println!(
        "  bpftool prog dump {how} {} ({}, {} insns{}): {}\n    helper calls: {}",
        p.name,
        p.kind,
        p.xlated_insns,
        if why_not.is_empty() {
            String::new()
        } else {
            format!("; jited: {why_not}")
        },
        path.display(),
        if calls.is_empty() {
            "none".to_string()
        } else {
            calls.join(", ")
        }
    );
}

// ---------------------------------------------------------------- Rust churn

/// `n` connect/shutdown/reset cycles on loopback; conn/s and this
/// process's CPU (user + system, the eBPF programs run on its behalf
/// included) per connection.
fn churn(n: usize) -> Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let cpu0 = self_cpu_s();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc = accepted.clone();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            acc.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
        }
    });
    let start = Instant::now();
    for i in 0..n {
        // At most 64 connections ahead of the server: a full accept queue
        // drops SYNs, and a client waiting out the 1 s SYN retransmission
        // measures the timer, not the connections (seen: 480 conn/s).
        while i - accepted.load(std::sync::atomic::Ordering::Relaxed).min(i) > 64 {
            std::thread::yield_now();
        }
        // FIN first (the server's socket enters CLOSE_WAIT at once: loopback
        // processes it in this thread), then a reset, so the client leaves
        // no TIME_WAIT behind and round after round stays comparable.
        let s = TcpStream::connect(addr)?;
        s.shutdown(std::net::Shutdown::Write)?;
        set_linger_zero(&s);
        drop(s);
    }
    server.join().ok();
    let wall = start.elapsed().as_secs_f64();
    Ok((n as f64 / wall, (self_cpu_s() - cpu0) / n as f64 * 1e6))
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// SO_LINGER {on, 0}: close() sends a reset.
fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Stops a tracer a section started (SIGINT, as a user would) and removes
/// its files.
fn stop_tracer(att: &mut Attached) -> Result<()> {
    if let Attached::Tracer {
        child, dir, err, ..
    } = att
    {
        signal(child.id(), libc::SIGINT);
        reap(child, Duration::from_secs(30))?;
        err.take().map(|h| h.join());
        if let Err(e) = std::fs::remove_dir_all(&*dir) {
            eprintln!("  {}: {e}", dir.display());
        }
    }
    Ok(())
}

fn churn_section(bin: &Path, object: &Path) -> Result<()> {
    println!(
        "\nRust churn: {CHURN_CONNS} loopback connect/shutdown/reset cycles per round, {} rounds each, \
         alternating; this process's CPU (eBPF run on its behalf included):",
        rounds()
    );
    churn(CHURN_CONNS / 4)?; // warm-up
    let (mut base, mut traced) = (Vec::new(), Vec::new());
    for r in 0..rounds() {
        for cfg in if r % 2 == 0 {
            [Config::Untraced, Config::Default]
        } else {
            [Config::Default, Config::Untraced]
        } {
            if cfg == Config::Untraced {
                base.push(churn(CHURN_CONNS)?);
                continue;
            }
            let mut att = attach(cfg, bin, object, 100 + r)?;
            std::thread::sleep(Duration::from_millis(200));
            traced.push(churn(CHURN_CONNS)?);
            stop_tracer(&mut att)?;
        }
    }
    for (label, v) in [("untraced", &base), ("close-wait", &traced)] {
        let rates: Vec<f64> = v.iter().map(|x| x.0).collect();
        let cpu: Vec<f64> = v.iter().map(|x| x.1).collect();
        let (rl, rh) = min_max(&rates);
        let (cl, ch) = min_max(&cpu);
        println!(
            "  {label:<11} {:>8.0} conn/s [{rl:.0}-{rh:.0}]  {:>6.1} us CPU/conn [{cl:.1}-{ch:.1}]",
            median(&rates),
            median(&cpu)
        );
    }
    let cb: Vec<f64> = base.iter().map(|x| x.1).collect();
    let ct: Vec<f64> = traced.iter().map(|x| x.1).collect();
    let rb: Vec<f64> = base.iter().map(|x| x.0).collect();
    let rt: Vec<f64> = traced.iter().map(|x| x.0).collect();
    println!(
        "  close-wait adds {:+.1} us CPU per connection, throughput ratio {:.3}",
        median(&ct) - median(&cb),
        median(&rt) / median(&rb)
    );
    Ok(())
}

// ------------------------------------------------------------ python

/// Connections per round of the Python client.
const PY_CONNS: usize = 4000;

/// A CPython client that, for each count read on stdin, makes that many
/// loopback connections (connect, shutdown, reset: no TIME_WAIT left) from
/// a few frames deep and prints its own CPU seconds and wall seconds for
/// them. Its connect() runs the tracer's origin path, the Python walk
/// included, in this process's context, so its CPU holds their cost.
const PY_CLIENT: &str = r#"
import resource, socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])
LINGER0 = struct.pack("ii", 1, 0)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def open_one():
    s = socket.create_connection((host, port))
    s.shutdown(socket.SHUT_WR)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    s.close()
def handle(n):
    for _ in range(n):
        open_one()
print("ready", flush=True)
for line in sys.stdin:
    c0, t0 = cpu(), time.monotonic()
    handle(int(line))
    print(f"{cpu() - c0} {time.monotonic() - t0}", flush=True)
"#;

/// Entries of the PY_STACKS map of the running tracer (bpftool).
fn python_walks_kept() -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "name", "PY_STACKS"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    match serde_json::from_slice::<serde_json::Value>(&out) {
        Ok(serde_json::Value::Array(v)) => v.len(),
        _ => 0,
    }
}

/// Python stacks on (close-wait's default) and off (`--stacks none`)
/// against untraced, for a CPython client: its CPU per connection.
fn python_section(bin: &Path, object: &Path) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for mut s in listener.incoming().flatten() {
            while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
        }
    });
    // Started before any tracer: every tracer registers it at attach.
    let mut py = Command::new("python3")
        .args(["-c", PY_CLIENT, "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting python3")?;
    let mut to_py = py.stdin.take().expect("piped");
    let mut from_py = BufReader::new(py.stdout.take().expect("piped"));
    let mut line = String::new();
    from_py.read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ready", "python client: {line:?}");
    let mut batch = |n: usize| -> Result<(f64, f64)> {
        use std::io::Write as _;
        writeln!(to_py, "{n}")?;
        let mut l = String::new();
        from_py.read_line(&mut l)?;
        let mut w = l.split_whitespace().map(|x| x.parse::<f64>());
        match (w.next(), w.next()) {
            (Some(Ok(cpu)), Some(Ok(wall))) => Ok((n as f64 / wall, cpu / n as f64 * 1e6)),
            _ => bail!("python client: {l:?}"),
        }
    };
    println!(
        "\nPython client ({} as python3 on PATH, {PY_CONNS} loopback connect/shutdown/reset from 3 Python frames \
         per round, {} rounds, alternating, the order rotated): the client's own CPU (the eBPF \
         programs run in its connect() included):",
        String::from_utf8_lossy(&Command::new("python3").arg("--version").output()?.stdout).trim(),
        rounds()
    );
    batch(PY_CONNS / 4)?; // warm-up
    let configs = [Config::Untraced, Config::Default, Config::StacksNone];
    let mut got: BTreeMap<Config, Vec<(f64, f64)>> = BTreeMap::new();
    let mut walked = Vec::new();
    for r in 0..rounds() {
        for i in 0..configs.len() {
            let cfg = configs[(i + r) % configs.len()];
            if cfg == Config::Untraced {
                got.entry(cfg).or_default().push(batch(PY_CONNS)?);
                continue;
            }
            let mut att = attach(cfg, bin, object, 200 + r)?;
            std::thread::sleep(Duration::from_millis(200));
            got.entry(cfg).or_default().push(batch(PY_CONNS)?);
            if cfg == Config::Default {
                walked.push(python_walks_kept());
            }
            stop_tracer(&mut att)?;
        }
    }
    let cpu = |c: Config| -> Vec<f64> { got[&c].iter().map(|x| x.1).collect() };
    for c in configs {
        let rates: Vec<f64> = got[&c].iter().map(|x| x.0).collect();
        let (rl, rh) = min_max(&rates);
        let (cl, ch) = min_max(&cpu(c));
        let label = match c {
            Config::Default => "close-wait (Python stacks on)",
            Config::StacksNone => "close-wait --stacks none (off)",
            _ => "untraced",
        };
        println!(
            "  {label:<31} {:>7.0} conn/s [{rl:.0}-{rh:.0}]  {:>6.1} us CPU/conn [{cl:.1}-{ch:.1}]",
            median(&rates),
            median(&cpu(c))
        );
    }
    println!(
        "  Python walks kept by the tracer after each round with stacks on (PY_STACKS entries; 0 would mean the client was not walked): {walked:?}"
    );
    let base = median(&cpu(Config::Untraced));
    println!(
        "  added per connection: {:+.1} us with Python stacks, {:+.1} us without; the Python walk: {:+.1} us",
        median(&cpu(Config::Default)) - base,
        median(&cpu(Config::StacksNone)) - base,
        median(&cpu(Config::Default)) - median(&cpu(Config::StacksNone)),
    );
    drop(to_py);
    if let Err(e) = py.kill() {
        eprintln!("  python client: {e}");
    }
    reap(&mut py, Duration::from_secs(5))?;
    Ok(())
}

// ---------------------------------------------------------------- main

/// Where the tracer's own CPU goes: one more round of the default
/// configuration with `perf record -e cpu-clock` (a software clock: works
/// without hardware counters) on the tracer process, its hottest symbols
/// printed. Not one of the measured rounds: sampling costs a little.
fn tracer_profile(dir: &Path, nginx: &Nginx, bin: &Path, object: &Path) -> Result<()> {
    let works = Command::new("perf")
        .args(["stat", "-e", "cpu-clock", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    anyhow::ensure!(works, "`perf stat -e cpu-clock true` fails here");
    let mut att = attach(Config::Default, bin, object, 998)?;
    anyhow::ensure!(
        matches!(att, Attached::Tracer { .. }),
        "the default configuration did not start a tracer"
    );
    let data = dir.join("tracer.perf.data");
    let perf = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "1999", "-p"])
        .arg(att.pid().to_string())
        .arg("-o")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let load = wrk(nginx.port);
    if let Ok(mut perf) = perf {
        signal(perf.id(), libc::SIGINT);
        let _ = reap(&mut perf, Duration::from_secs(30));
    }
    if let Err(e) = stop_tracer(&mut att) {
        eprintln!("  tracer profile: stopping the tracer: {e:#}");
    }
    let (conns, _, _) = load?;
    let out = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(&data)
        .args([
            "--stdio",
            "--no-children",
            "--sort",
            "dso,sym",
            "--percent-limit",
            "1.5",
        ])
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "  tracer profile (perf cpu-clock on the tracer, {conns} connections, {}; symbols over 1.5%):",
        data.display()
    );
    for l in text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .take(20)
    {
        println!("    {}", l.trim());
    }
    Ok(())
}

pub fn run(root: &Path) -> Result<()> {
    let t_start = Instant::now();
    if std::env::var("CLOSE_WAIT_BENCH_ONLY").as_deref() == Ok("python") {
        // One section alone, for a quick look at it.
        return python_section(&root.join("target/release/close-wait"), &object_path(root)?);
    }
    println!("userspace pipeline (decode + tracker + aggregator: histograms, closed-late, episodes), no privileges:");
    let out = Command::new("cargo")
        .current_dir(root)
        .args([
            "bench",
            "-q",
            "-p",
            "close-wait-user",
            "--bench",
            "pipeline",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    anyhow::ensure!(out.status.success(), "pipeline bench failed");
    // "... ns/episode, 6.61 M episodes/s on one core"
    let pipeline_meps = text.lines().find_map(|l| {
        let (head, _) = l.split_once(" M episodes/s")?;
        head.rsplit(' ').next()?.parse::<f64>().ok()
    });

    let bin = root.join("target/release/close-wait");
    let object = object_path(root)?;
    let _stats = BpfStats::enable()?;
    let mut configs = vec![
        Config::Untraced,
        Config::Default,
        Config::StacksNone,
        Config::AcceptStacks,
        Config::Bpftrace,
        Config::FilterRawTp,
    ];
    match tracefs_newstate_offset() {
        Some(FILTER_TP_NEWSTATE_OFFSET) => configs.push(Config::FilterTp),
        other => println!(
            "note: this kernel's sock:inet_sock_set_state has newstate at {other:?}, not at {FILTER_TP_NEWSTATE_OFFSET}: \
             the tracepoint filter-only program (a direct load at a compiled-in offset) is not run"
        ),
    }
    configs.sort();
    let nginx = Nginx::start()?;
    println!(
        "\nnginx (return 200, 1 worker) on 127.0.0.1:{} + wrk -t1 -c32 -d{WRK_SECS}s -H \"Connection: close\" \
         (every client socket passes through CLOSE_WAIT); {} rounds of {} configurations, \
         alternating, order rotated each round; medians [min-max]",
        nginx.port,
        rounds(),
        configs.len()
    );
    // Warm-up: nginx, the page cache, the connection tables.
    wrk(nginx.port)?;
    let mut samples: BTreeMap<Config, Vec<Sample>> = BTreeMap::new();
    let mut foreign_max = 0;
    let mut failed = Vec::new();
    for r in 0..rounds() {
        let n = configs.len();
        for i in 0..n {
            let cfg = configs[(i + r) % n];
            let s = match round(cfg, &nginx, &bin, &object, r) {
                Ok(s) => s,
                Err(e) => {
                    // One bad round (a stop that hung on a loaded machine)
                    // must not throw away the others: said, and left out.
                    eprintln!("  round {} of {} left out: {e:#}", r + 1, cfg.label());
                    failed.push(format!("round {} of {}: {e:#}", r + 1, cfg.label()));
                    continue;
                }
            };
            if !s.wrk_errors.is_empty() {
                eprintln!("  round {} {}: wrk: {}", r + 1, cfg.label(), s.wrk_errors);
            }
            foreign_max = foreign_max.max(s.foreign_progs);
            samples.entry(cfg).or_default().push(s);
        }
        eprintln!(
            "  round {}/{} done ({:.0} s)",
            r + 1,
            rounds(),
            t_start.elapsed().as_secs_f64()
        );
    }
    let bench_dir = root.join("target/bench");
    let _ = std::fs::create_dir_all(&bench_dir);
    if let Err(e) = tracer_profile(&bench_dir, &nginx, &bin, &object) {
        println!("  tracer profile: not taken: {e:#}");
    }
    drop(nginx);

    let get = |c: Config, f: fn(&Sample) -> f64| -> Vec<f64> {
        samples
            .get(&c)
            .map(|v| v.iter().map(f).collect())
            .unwrap_or_default()
    };
    let base_rate = median(&get(Config::Untraced, |s| s.rate));
    let base_cpu = median(&get(Config::Untraced, |s| s.cpu_us));
    println!(
        "\n| configuration | conn/s median [min-max] | ratio to untraced | CPU per connection median [min-max] | added | workload processes' CPU per connection |"
    );
    println!("|---|---|---|---|---|---|");
    for &c in &configs {
        let rates = get(c, |s| s.rate);
        let cpu = get(c, |s| s.cpu_us);
        let (rl, rh) = min_max(&rates);
        let (cl, ch) = min_max(&cpu);
        let added = if c == Config::Untraced {
            String::new()
        } else {
            format!("{:+.1} us", median(&cpu) - base_cpu)
        };
        println!(
            "| {} | {:.0} [{rl:.0}-{rh:.0}] | {:.3} | {:.1} us [{cl:.1}-{ch:.1}] | {added} | {:.1} us |",
            c.label(),
            median(&rates),
            median(&rates) / base_rate,
            median(&cpu),
            median(&get(c, |s| s.proc_cpu_us)),
        );
    }
    println!(
        "CPU per connection: /proc/stat user+system+irq+softirq of all CPUs over the wrk run / connections \
         (nginx, wrk, the tracer and the eBPF programs; niced time left out: other builds on a shared machine run there). \
         Workload processes' CPU: utime + stime of nginx, wrk and the tracer or bpftrace only (a cross-check that other \
         work on the machine does not reach; softirq time the kernel accounts apart is not in it)."
    );

    println!("\nper program (bpf_stats: run_time_ns / run_cnt, medians over the rounds):");
    for &c in &configs {
        if c == Config::Untraced {
            continue;
        }
        let Some(v) = samples.get(&c) else { continue };
        println!("  {}:", c.label());
        for p in prog_table(v) {
            let (cost, per_conn) = if p.ns_per_hit.is_nan() {
                ("      - ns/hit".to_string(), 0.0)
            } else {
                (
                    format!("{:>7.0} ns/hit", p.ns_per_hit),
                    p.ns_per_hit * p.hits_per_conn,
                )
            };
            println!(
                "    {:<20} {:<15} {cost}  {:>6.2} hits/conn  {per_conn:>6.0} ns/conn  recursion misses {}  ({} insns, {} B jited)",
                p.name, p.kind, p.hits_per_conn, p.recursion_misses, p.insns, p.jited_bytes
            );
        }
    }

    println!(
        "\ntracer process (CPU over the wrk run + 0.3 s drain, per CLOSE_WAIT episode recorded):"
    );
    let mut tracer_rows = BTreeMap::new();
    for &c in &configs {
        let Some(v) = samples.get(&c) else { continue };
        let ts: Vec<&TracerSample> = v.iter().filter_map(|s| s.tracer.as_ref()).collect();
        if ts.is_empty() {
            continue;
        }
        let per_ep: Vec<f64> = ts
            .iter()
            .map(|t| t.cpu_s / t.episodes.max(1) as f64 * 1e6)
            .collect();
        let rss = ts.iter().map(|t| t.max_rss_kib).max().unwrap_or(0);
        let lost: u64 = ts.iter().map(|t| t.lost_events).sum();
        let eps: u64 = ts.iter().map(|t| t.episodes).sum();
        let conns: u64 = v.iter().map(|s| s.conns).sum();
        let mem: Vec<f64> = v.iter().map(|s| s.map_bytes as f64).collect();
        let (el, eh) = min_max(&per_ep);
        println!(
            "  {:<28} {:.2} us CPU/episode [{el:.2}-{eh:.2}], peak RSS {:.1} MiB, kernel map memory {:.2} MiB, \
             episodes {eps} (wrk connections {conns}), lost events {lost}",
            c.label(),
            median(&per_ep),
            rss as f64 / 1024.0,
            median(&mem) / (1 << 20) as f64,
        );
        if let Some(h) = ts.last().map(|t| t.hooks.join(", ")) {
            println!("  {:<28} hooks: {h}", "");
        }
        // Where the tracer's CPU goes (user or system), and its kernel
        // memory, by map.
        let mut threads: BTreeMap<&str, f64> = BTreeMap::new();
        for t in &ts {
            for (k, v) in &t.threads {
                *threads.entry(k).or_default() += v;
            }
        }
        let eps_f = eps.max(1) as f64;
        let split: Vec<String> = threads
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, v)| format!("{k} {:.2}", v / eps_f * 1e6))
            .collect();
        println!("  {:<28} us CPU/episode: {}", "", split.join(", "));
        if let Some(last) = v.last() {
            let maps: Vec<String> = last
                .maps
                .iter()
                .take(6)
                .map(|(n, b)| format!("{n} {:.2}", *b as f64 / (1 << 20) as f64))
                .collect();
            println!("  {:<28} MiB by map: {}", "", maps.join(", "));
        }
        tracer_rows.insert(c, (median(&per_ep), lost, median(&mem)));
    }
    let bt_mem: Vec<f64> = get(Config::Bpftrace, |s| s.map_bytes as f64);
    println!(
        "  {:<28} kernel map memory {:.2} MiB",
        Config::Bpftrace.label(),
        median(&bt_mem) / (1 << 20) as f64
    );
    for f in &failed {
        println!("note: left out: {f}");
    }
    if foreign_max > 0 {
        println!(
            "note: up to {foreign_max} BPF programs of other processes were loaded during rounds \
             (other tracers on a shared machine run on this workload's sockets too)"
        );
    }

    churn_section(&bin, &object)?;
    python_section(&bin, &object)?;

    // ------------------------------------------------------------ targets
    println!("\ntargets (issue 14):");
    let added = |c| median(&get(c, |s| s.cpu_us)) - base_cpu;
    let ratio = |c| median(&get(c, |s| s.rate)) / base_rate;
    let bt = added(Config::Bpftrace);
    let mut missed = Vec::new();
    let mut check = |ok: bool, what: String| {
        println!("  [{}] {what}", met(ok));
        if !ok {
            missed.push(what);
        }
    };
    check(
        added(Config::Default) <= bt,
        format!(
            "close-wait default adds no more CPU per connection than bpftrace: {:+.1} us vs {bt:+.1} us",
            added(Config::Default)
        ),
    );
    check(
        ratio(Config::Default) >= 0.95,
        format!(
            "close-wait default throughput >= 0.95 of untraced: {:.3}",
            ratio(Config::Default)
        ),
    );
    check(
        added(Config::StacksNone) <= bt / 2.0,
        format!(
            "--stacks none adds at most half of bpftrace: {:+.1} us vs {:+.1} us",
            added(Config::StacksNone),
            bt / 2.0
        ),
    );
    check(
        ratio(Config::StacksNone) >= 0.97,
        format!(
            "--stacks none throughput >= 0.97 of untraced: {:.3}",
            ratio(Config::StacksNone)
        ),
    );
    let state = samples.get(&Config::Default).and_then(|v| state_prog(v));
    let filter_cfg = match state.as_ref().map(|s| s.kind.as_str()) {
        Some("tracepoint") => Config::FilterTp,
        _ => Config::FilterRawTp,
    };
    let filter = samples
        .get(&filter_cfg)
        .and_then(|v| prog_table(v).into_iter().next());
    match (&state, &filter) {
        (Some(st), Some(f)) => check(
            st.ns_per_hit <= 1.5 * f.ns_per_hit,
            format!(
                "state program <= 1.5x filter-only on the same hook: {} ({}) {:.0} ns/hit vs {} ({}) {:.0} ns/hit = {:.2}x",
                st.name,
                st.kind,
                st.ns_per_hit,
                f.name,
                f.kind,
                f.ns_per_hit,
                st.ns_per_hit / f.ns_per_hit
            ),
        ),
        _ => check(false, "state program vs filter-only: not measured".into()),
    }
    let (tr_cpu, _, tr_mem) =
        tracer_rows
            .get(&Config::Default)
            .copied()
            .unwrap_or((f64::NAN, 0, f64::NAN));
    check(
        tr_cpu <= 0.5,
        format!("tracer <= 0.5 us CPU per episode: {tr_cpu:.2} us"),
    );
    match pipeline_meps {
        Some(m) => check(m >= 3.0, format!("pipeline >= 3M episodes/s: {m:.2}M")),
        None => check(false, "pipeline: no figure in its output".into()),
    }
    let lost: u64 = tracer_rows.values().map(|r| r.1).sum();
    check(
        lost == 0,
        format!("zero lost events (every close-wait round): {lost}"),
    );
    check(
        tr_mem <= 12.0 * (1 << 20) as f64,
        format!(
            "kernel map memory <= 12 MiB at default sizes: {:.2} MiB",
            tr_mem / (1 << 20) as f64
        ),
    );
    if !missed.is_empty() {
        // The profile that says why: bpf_stats above; perf where the CPU
        // counters are there; the JIT's output of the programs compared.
        let perf_ok = Command::new("perf")
            .args(["stat", "-e", "instructions", "-x,", "true"])
            .output()
            .map(|o| {
                o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("not supported")
            })
            .unwrap_or(false);
        println!(
            "  profile: bpf_stats per program above; perf: {}",
            if perf_ok {
                "instructions counted here (perf record the workload to see where the time goes)"
            } else {
                "no hardware counters here (`perf stat -e instructions true`: not supported)"
            }
        );
        let dir = root.join("target/bench");
        let _ = std::fs::create_dir_all(&dir);
        // Load the tracer once more to dump its programs as the JIT made them.
        if let Ok(Attached::Tracer {
            mut child,
            dir: tdir,
            err,
            ..
        }) = attach(Config::Default, &bin, &object, 999)
        {
            let (progs, _, _) = bpf_sample(child.id());
            for p in &progs {
                dump_prog(&dir, p);
            }
            signal(child.id(), libc::SIGINT);
            let _ = reap(&mut child, Duration::from_secs(30));
            drop(err.map(|h| h.join()));
            let _ = std::fs::remove_dir_all(tdir);
        }
        if let Ok(Attached::Filter(ebpf)) = attach(filter_cfg, &bin, &object, 999) {
            let mut all = all_programs();
            let held = held_bpf_ids(std::process::id()).0;
            for p in held.iter().filter_map(|id| all.remove(id)) {
                dump_prog(&dir, &p);
            }
            drop(ebpf);
        }
    }
    println!("\nbench took {:.0} s", t_start.elapsed().as_secs_f64());
    Ok(())
}
