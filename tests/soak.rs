//! Soak: `record --prometheus` with no `--duration` under connection churn
//! (pre-forked workers recycled like a load-tested service's, some closing
//! late) and a steady leak, for longer than two minutes. The tracer's RSS,
//! sampled all along, must not grow past a bound after warm-up; stopped
//! with SIGINT, its summary counts what happened.

use std::time::{Duration, Instant};

use close_wait_tests::*;

/// How long the churn and the leak run.
const SOAK: Duration = Duration::from_secs(150);
/// RSS samples before this are warm-up (caches, first reports, the
/// allocator's arenas).
const WARM_UP: Duration = Duration::from_secs(40);
/// Growth of RSS allowed after warm-up. The leak's stuck sockets (one a
/// second, ~110 more after warm-up) are real state that the report holds;
/// everything else is capped. Measured: see the test's output. Besides
/// that, a one-time step of ~15 MiB at a random moment was seen in one CI run
/// of four (51 -> 66 MiB at 64 s, flat after: a new malloc arena of the
/// investigation thread, most likely), so the bound allows one such step;
/// growth with time would pass it within the soak.
const RSS_GROWTH_BOUND_KB: u64 = 20 * 1024;
/// Connections a second of the churn client.
const RATE: u32 = 40;

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn churn(role: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        &format!("churn {role} {args:?}"),
        std::process::Command::new("python3")
            .arg(helper("churn.py"))
            .arg(role)
            .args(args),
    )
}

#[test]
fn soak_memory_stays_bounded_under_churn_and_a_leak() {
    if !privileged("soak_memory_stays_bounded_under_churn_and_a_leak") {
        return;
    }
    let secs = (SOAK.as_secs() + 5).to_string();
    let srv = churn(
        "server",
        &[
            "--duration",
            &secs,
            "--per-worker",
            "40",
            "--slow-every",
            "8",
            "--slow-ms",
            "60",
        ],
    );
    let l = srv.expect("listening ", Duration::from_secs(10));
    let port: u16 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
    let leaks = SOAK.as_secs() as usize - 5;
    let leak_count = leaks.to_string();
    let hold = (SOAK.as_secs() + 60).to_string();
    let (leak_srv, leak_port) = server(&[
        "--mode",
        "never-read",
        "--count",
        &leak_count,
        "--hold",
        &hold,
    ]);
    let metrics = format!("127.0.0.1:{}", free_loopback_port());
    let tracer = Tracer::start(&[
        "-L",
        &port.to_string(),
        "-L",
        &leak_port.to_string(),
        "--prometheus",
        &metrics,
        "--threshold",
        "50ms",
        "--interval",
        "1s",
    ]);
    let start = Instant::now();
    let soak_s = SOAK.as_secs().to_string();
    let rate = RATE.to_string();
    let cli = churn(
        "client",
        &[
            "--connect",
            &v4(port),
            "--rate",
            &rate,
            "--duration",
            &soak_s,
        ],
    );
    // One leaked connection a second: each stays in CLOSE_WAIT, unread.
    // The client half-closes and keeps its descriptors: a client that
    // close()s leaves orphans in FIN_WAIT2 and then TIME_WAIT, and one run
    // saw 2 of 145 leaks reset by their peer (counted by the tracer as
    // peer resets; the likely cause, an orphan's FIN_WAIT2 timer ending in
    // a reset, was not reproduced). Kept descriptors leave no orphan.
    let leak_cli = peer(
        "client",
        &[
            "--connect",
            &v4(leak_port),
            "--count",
            &leak_count,
            "--gap-ms",
            "1000",
            "--send",
            "3",
            "--mode",
            "half-close",
            "--hold",
            &hold,
        ],
    );

    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut scrapes = 0;
    while start.elapsed() < SOAK {
        std::thread::sleep(Duration::from_secs(2));
        let rss = rss_kb(tracer.pid()).expect("the tracer is running");
        samples.push((start.elapsed(), rss));
        // Scraped like Prometheus would.
        let (code, body) = http_get_plain(&metrics, "/metrics").expect("/metrics answers");
        assert_eq!(code, 200, "{body}");
        scrapes += 1;
    }
    let made: u64 = cli
        .expect("client done ", Duration::from_secs(30))
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    leak_cli.expect("done", Duration::from_secs(30));
    // The workers close the last churn connections: only the leaks stay
    // (the counts below say what did not, if this times out).
    let end = Instant::now() + Duration::from_secs(30);
    let mut in_cw = None;
    while Instant::now() < end {
        if let Ok((_, b)) = http_get_plain(&metrics, "/metrics") {
            in_cw = metric_sample(&b, "close_wait_sockets", &[]);
            if in_cw == Some(leaks as f64) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("close_wait_sockets at the end: {in_cw:?} (leaks {leaks})");
    let (_, body) = http_get_plain(&metrics, "/metrics").unwrap();
    let fin = stop_ok(tracer);

    let series: Vec<String> = samples
        .iter()
        .map(|(t, kb)| format!("{}s:{}", t.as_secs(), kb / 1024))
        .collect();
    eprintln!("tracer RSS (MiB) over the soak: {}", series.join(" "));
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= WARM_UP)
        .expect("samples after warm-up")
        .1;
    let (max_t, max_after) = samples
        .iter()
        .filter(|(t, _)| *t >= WARM_UP)
        .map(|(t, kb)| (*t, *kb))
        .max_by_key(|s| s.1)
        .unwrap();
    eprintln!(
        "RSS at warm-up end {warm} kB, max after {max_after} kB at {}s (growth {} kB, bound {RSS_GROWTH_BOUND_KB} kB); {made} churn connections, {leaks} leaks, {scrapes} scrapes",
        max_t.as_secs(),
        max_after.saturating_sub(warm)
    );
    assert!(
        max_after <= warm + RSS_GROWTH_BOUND_KB,
        "tracer RSS grew from {warm} kB to {max_after} kB after warm-up: {}",
        series.join(" ")
    );

    // The summary counts what happened.
    let c = &fin.json["counters"];
    let made_total = made + leaks as u64;
    let entered = c["close_wait_entered"].as_u64().unwrap();
    assert!(
        entered >= made_total && entered <= made_total + 5,
        "entered {entered}, connections made {made_total}: {}",
        pretty(c)
    );
    // The kernel side holds every leak in CLOSE_WAIT; the report shows each
    // as stuck, or counts it as not investigated: after SIGINT the final
    // look is bounded (400 ms, so the run ends within a second) and says
    // how many sockets it had no time for.
    assert_eq!(c["close_wait_now"], leaks as u64, "{}", pretty(c));
    assert_eq!(
        c["stuck"].as_u64().unwrap() + c["uninvestigated"].as_u64().unwrap(),
        leaks as u64,
        "every leak is stuck or counted as not investigated: {}",
        pretty(c)
    );
    // lost_events counts the whole host's misses (other programs' sockets
    // too, and recursion misses of the fork/exec hooks on a busy machine);
    // the exact counts of this test's sockets above and below are what
    // shows nothing of ours was lost.
    eprintln!("lost_events {} (whole host)", c["lost_events"]);
    assert_eq!(
        c["closed_graceful"].as_u64().unwrap(),
        made,
        "every churn connection was closed by its worker: {}",
        pretty(c)
    );
    // Workers were recycled past the closed_late bound: it stayed bounded.
    let late = fin.json["closed_late"].as_array().unwrap();
    assert!(late.len() <= 257, "{} closed_late entries", late.len());
    assert!(
        late.len() >= 100,
        "slow closes by many workers: {}",
        late.len()
    );
    let late_total: u64 = late.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert!(
        late_total >= made / 8 - 5,
        "about one close in eight is late: {late_total} of {made}"
    );
    // The summary says every leak is in CLOSE_WAIT, and shows as stuck the
    // ones the SIGINT-bounded final look reached (the rest are counted as
    // not investigated, with a warning, as asserted above).
    assert!(
        fin.stdout.contains(&format!(
            "in CLOSE_WAIT now {leaks}, stuck (> 50.0ms) {}",
            c["stuck"]
        )),
        "summary: {}",
        fin.stdout
    );
    if c["uninvestigated"].as_u64().unwrap() > 0 {
        assert!(
            fin.stdout.contains("were not investigated"),
            "{}",
            fin.stdout
        );
    }
    assert_eq!(
        metric_sample(&body, "close_wait_stuck_sockets", &[]),
        Some(leaks as f64),
        "{body}"
    );
    drop((srv, leak_srv));
}
