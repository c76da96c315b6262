//! The event loop of `record` under load: the look at the stuck sockets at
//! each checkpoint runs beside the drain of the ring buffer, never in its
//! way, and SIGINT ends a run within a second even with many sockets stuck.

use std::{
    net::{Shutdown, TcpStream},
    time::{Duration, Instant},
};

use close_wait_tests::*;

/// Sockets left in CLOSE_WAIT by a client that never closes them.
const STUCK: usize = 2000;
/// Connections made while the tracer runs, each through CLOSE_WAIT.
const CHURN: usize = 1500;

/// "checkpoint: looked at the sockets in CLOSE_WAIT in MS ms; N events
/// drained meanwhile" -> (MS, N).
fn look_line(l: &str) -> Option<(u64, u64)> {
    let rest = l
        .split("checkpoint: looked at the sockets in CLOSE_WAIT in ")
        .nth(1)?;
    let (ms, rest) = rest.split_once(" ms; ")?;
    let n = rest.split_whitespace().next()?;
    Some((ms.parse().ok()?, n.parse().ok()?))
}

#[test]
fn sigint_during_checkpoints_ends_the_run_within_a_second() {
    if !privileged("sigint_during_checkpoints_ends_the_run_within_a_second") {
        return;
    }
    // STUCK sockets in CLOSE_WAIT, held by the client, before attaching.
    let count = STUCK.to_string();
    let (srv, port) = server(&["--mode", "close-now", "--count", &count, "--linger", "120"]);
    let holder = holding_client(port, STUCK, 120);
    holder.expect("done", Duration::from_secs(60));
    // The churn's server: reads to EOF, then closes (graceful endings).
    let churn_count = CHURN.to_string();
    let (churn_srv, churn_port) = server(&[
        "--mode",
        "close-after-eof",
        "--delay-ms",
        "0",
        "--count",
        &churn_count,
        "--linger",
        "30",
    ]);

    let tracer = Tracer::start(&["-vv", "--interval", "100ms", "--threshold", "1s"]);
    // Connections through CLOSE_WAIT while the checkpoints look at the
    // stuck sockets, paced over about two seconds.
    let t0 = Instant::now();
    for i in 0..CHURN {
        let s = TcpStream::connect(("127.0.0.1", churn_port)).expect("connect");
        s.shutdown(Shutdown::Write).unwrap();
        drop(s);
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let churn_took = t0.elapsed();
    // Let a few more checkpoints run, then stop in the middle of one.
    tracer.wait_stderr("checkpoint: looked at", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(150));
    let looks: Vec<(u64, u64)> = tracer
        .stderr_seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| look_line(l))
        .collect();
    let sent = Instant::now();
    let mut tracer = tracer;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGINT) };
    let status = tracer.proc.wait(Duration::from_secs(60));
    let took = sent.elapsed();
    let out = tracer.finish(status);
    let abandoned = out
        .stderr
        .contains("abandoning the checkpoint's look in progress");
    eprintln!(
        "{STUCK} stuck, {CHURN} connections in {churn_took:?}; looks (ms, events drained meanwhile): {looks:?}; \
         SIGINT to exit: {took:?} (a look in progress abandoned: {abandoned}); uninvestigated {}",
        out.json["counters"]["uninvestigated"]
    );
    for l in out.stderr.lines().filter(|l| {
        ["drained at", "final look", "final outputs", "abandoning"]
            .iter()
            .any(|k| l.contains(k))
    }) {
        eprintln!("  {l}");
    }
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        took < Duration::from_secs(1),
        "SIGINT took {took:?} to end the run"
    );
    // Events were drained while the looks ran: every connection was seen.
    assert!(
        looks.iter().any(|&(_, n)| n > 0),
        "no events drained during a look: {looks:?}"
    );
    let c = &out.json["counters"];
    // Not asserted zero: lost_events includes the kernel's recursion misses
    // of the classic tracepoint programs (a state change in a softirq that
    // interrupts another of our programs on that CPU), host-wide and
    // load-dependent (measured here: 0 to ~300 per run, with every one of
    // this test's connections still counted below). The drain keeping up is
    // what the exact counts below show.
    eprintln!(
        "lost_events (ring buffer + recursion misses): {}",
        c["lost_events"]
    );
    assert!(
        c["close_wait_entered"].as_u64().unwrap() >= CHURN as u64,
        "{}",
        pretty(c)
    );
    assert!(
        c["closed_graceful"].as_u64().unwrap() >= CHURN as u64,
        "{}",
        pretty(c)
    );
    // The stuck sockets are the report's (or counted as not investigated,
    // when the final look was cut short).
    let stuck = out.json["stuck"].as_array().unwrap().len() as u64;
    assert!(
        stuck + c["uninvestigated"].as_u64().unwrap() >= STUCK as u64,
        "{}",
        pretty(c)
    );
    drop(churn_srv);
    drop(holder);
    drop(srv);
}
