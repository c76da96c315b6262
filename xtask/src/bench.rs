//! `cargo xtask bench`: overhead of the attached tracer on a loopback
//! connection-churn workload, and the tracer's own CPU and memory. Figures
//! are printed, never asserted.
//!
//! Workload: a server thread accepts, reads until EOF or reset, closes; the
//! client connects, shuts down its write side (the server's socket enters
//! CLOSE_WAIT), then resets. Every connection passes through CLOSE_WAIT on
//! the server side (ending peer_reset or abort), so every one of them
//! produces tracer events, and no TIME_WAIT piles up between rounds.

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

const CONNS: usize = 20_000;
const ROUNDS: usize = 5;

/// One round: connections per second and CPU (user + system, which
/// includes the eBPF programs run on this process's behalf) per connection.
struct Round {
    rate: f64,
    cpu_us: f64,
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// `n` connect/close cycles on loopback.
fn churn(n: usize) -> Result<Round> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let cpu0 = self_cpu_s();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
        }
    });
    let start = Instant::now();
    for _ in 0..n {
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
    Ok(Round {
        rate: n as f64 / wall,
        cpu_us: (self_cpu_s() - cpu0) / n as f64 * 1e6,
    })
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn proc_stat(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0;
    let cpu = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu / tick, hwm)
}

struct Tracer(Child);
impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tracer(bin: &Path, json: &Path) -> Result<Tracer> {
    let mut child = Command::new(bin)
        .args(["record", "--interval", "1h", "--json"])
        .arg(json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting close-wait (run as root)")?;
    let mut err = child.stderr.take().unwrap();
    let tracer = Tracer(child);
    let mut buf = [0u8; 256];
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("tracing") && Instant::now() < deadline {
        let k = err.read(&mut buf)?;
        if k == 0 {
            anyhow::bail!("close-wait exited: {seen}");
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..k]));
    }
    Ok(tracer)
}

fn stop_tracer(mut t: Tracer) -> Result<()> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(t.0.id() as i32, libc::SIGINT) };
    t.0.wait()?;
    Ok(())
}

pub fn run(root: &Path) -> Result<()> {
    println!("userspace pipeline (decode + tracker + aggregator: histograms, closed-late, episodes), no privileges:");
    let status = Command::new("cargo")
        .current_dir(root)
        .args([
            "bench",
            "-q",
            "-p",
            "close-wait-user",
            "--bench",
            "pipeline",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "pipeline bench failed");
    let bin = root.join("target/release/close-wait");
    println!(
        "workload: {CONNS} loopback connect/close cycles per round, {ROUNDS} rounds, \
         tracer attached in every other one; medians"
    );
    churn(CONNS)?; // warm-up
    let json = std::env::temp_dir().join("close-wait-bench.json");
    let (mut base, mut traced) = (Vec::new(), Vec::new());
    let (mut tracer_cpu, mut tracer_wall, mut hwm_kib) = (0.0, 0.0, 0u64);
    for _ in 0..ROUNDS {
        base.push(churn(CONNS)?);
        let tracer = start_tracer(&bin, &json)?;
        let pid = tracer.0.id();
        let (c0, _) = proc_stat(pid);
        let t0 = Instant::now();
        traced.push(churn(CONNS)?);
        // Let the tracer drain what is left before reading its CPU time.
        std::thread::sleep(Duration::from_millis(300));
        tracer_wall += t0.elapsed().as_secs_f64();
        let (c1, hwm) = proc_stat(pid);
        tracer_cpu += c1 - c0;
        hwm_kib = hwm_kib.max(hwm);
        stop_tracer(tracer)?;
    }
    let med = |v: &[Round], f: fn(&Round) -> f64| median(v.iter().map(f).collect());
    let (b_rate, t_rate) = (med(&base, |r| r.rate), med(&traced, |r| r.rate));
    let (b_cpu, t_cpu) = (med(&base, |r| r.cpu_us), med(&traced, |r| r.cpu_us));
    println!("  no tracer:       {b_rate:>8.0} conn/s, {b_cpu:>6.1} us CPU per connection");
    println!(
        "  tracer attached: {t_rate:>8.0} conn/s, {t_cpu:>6.1} us CPU per connection ({:+.1} us, eBPF programs included)",
        t_cpu - b_cpu
    );
    let episodes = (CONNS * ROUNDS) as f64;
    println!(
        "  tracer process:  {:.2} us CPU per episode ({:.1}% of one core), peak RSS {:.1} MiB",
        tracer_cpu / episodes * 1e6,
        tracer_cpu / tracer_wall * 100.0,
        hwm_kib as f64 / 1024.0
    );
    let report: String = std::fs::read_to_string(&json).unwrap_or_default();
    let field = |name: &str| -> String {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{name}\"")))
            .map(|l| l.trim().trim_end_matches(',').to_string())
            .unwrap_or_else(|| format!("\"{name}\": ?"))
    };
    println!(
        "  recorded: {}, {}, {}, {}",
        field("close_wait_entered"),
        field("peer_reset"),
        field("closed_abort"),
        field("lost_events")
    );
    Ok(())
}
