//! `cargo xtask bench`: overhead of the attached tracer on a loopback
//! connection-churn workload, and the tracer's own CPU and memory. Figures
//! are printed, never asserted.
//!
//! Workload: a server thread accepts, reads to EOF, closes; the client side
//! connects, closes, repeats. Every connection passes through CLOSE_WAIT on
//! the server side, so every one of them produces tracer events.

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

const CONNS: usize = 20_000;
const ROUNDS: usize = 3;

/// Connections per second over `n` connect/close cycles.
fn churn(n: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
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
        // A normal close: the server's socket goes through CLOSE_WAIT.
        drop(TcpStream::connect(addr)?);
    }
    server.join().ok();
    Ok(n as f64 / start.elapsed().as_secs_f64())
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

pub fn run(root: &Path) -> Result<()> {
    println!("userspace pipeline (decode + tracker + histograms), no privileges:");
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
    println!("workload: {CONNS} loopback connect/close cycles, median of {ROUNDS} rounds");
    let base = median((0..ROUNDS).map(|_| churn(CONNS)).collect::<Result<_>>()?);
    println!("  no tracer:       {base:>10.0} conn/s");

    let json = std::env::temp_dir().join("close-wait-bench.json");
    let mut child = Command::new(&bin)
        .args(["record", "--interval", "1h", "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting close-wait (run as root)")?;
    let mut err = child.stderr.take().unwrap();
    let tracer = Tracer(child);
    // Wait for "tracing" on stderr.
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
    let pid = tracer.0.id();
    let (cpu0, _) = proc_stat(pid);
    let t0 = Instant::now();
    let traced = median((0..ROUNDS).map(|_| churn(CONNS)).collect::<Result<_>>()?);
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let (cpu1, hwm_kib) = proc_stat(pid);
    let episodes = (CONNS * ROUNDS) as f64;
    println!(
        "  tracer attached: {traced:>10.0} conn/s ({:+.1}%)",
        (traced / base - 1.0) * 100.0
    );
    println!(
        "  tracer CPU:      {:.3} s for {episodes} episodes = {:.2} us/episode ({:.1}% of one core)",
        cpu1 - cpu0,
        (cpu1 - cpu0) / episodes * 1e6,
        (cpu1 - cpu0) / wall * 100.0
    );
    println!("  tracer peak RSS: {:.1} MiB", hwm_kib as f64 / 1024.0);
    // SAFETY: signalling our own child.
    unsafe { kill(pid as i32, 2) };
    let mut tracer = tracer;
    tracer.0.wait()?;
    let report: String = std::fs::read_to_string(&json).unwrap_or_default();
    let field = |name: &str| -> String {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{name}\"")))
            .map(|l| l.trim().trim_end_matches(',').to_string())
            .unwrap_or_else(|| format!("\"{name}\": ?"))
    };
    println!(
        "  recorded: {}, {}, {}",
        field("close_wait_entered"),
        field("closed_abort"),
        field("lost_events")
    );
    Ok(())
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
