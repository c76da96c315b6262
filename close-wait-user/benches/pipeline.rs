//! Userspace cost per CLOSE_WAIT episode, as `record` pays it: decode two
//! ring buffer records, run them through the tracker, and the aggregator
//! (service port, duration histograms, closed-late table, last episodes).
//! Prints figures; asserts nothing.

use std::{hint::black_box, time::Instant};

use close_wait::{
    aggregate::{Aggregator, ServicePorts},
    cli::Filters,
    clock, events,
    tracker::Tracker,
};
use close_wait_common::{flags, kind, tcp_state, Event, AF_INET};

fn event(ts: u64, sk: u64, old: u8, new: u8) -> Vec<u8> {
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let mut comm = [0u8; 16];
    comm[..6].copy_from_slice(b"server");
    events::encode(&Event {
        ts_ns: ts,
        skaddr: sk,
        pid_tgid: (100 << 32) | 101,
        entered_ns: 0,
        kind: kind::STATE,
        flags: flags::TRACKED,
        oldstate: old,
        newstate: new,
        family: AF_INET,
        sport: 8080,
        dport: (sk % 60000) as u16,
        _pad0: 0,
        saddr,
        daddr: saddr,
        comm,
        _pad1: 0,
        netns: 4026531840,
    })
}

fn main() {
    const N: u64 = 500_000;
    let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..N)
        .map(|i| {
            let sk = 0xffff_0000_0000 + i * 64;
            (
                event(i * 1000, sk, tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT),
                event(
                    i * 1000 + 300_000 + i % 1000 * 1000,
                    sk,
                    tcp_state::CLOSE_WAIT,
                    tcp_state::LAST_ACK,
                ),
            )
        })
        .collect();
    let mut tracker = Tracker::new(65536);
    let ports = ServicePorts::new([8080].into_iter().collect(), clock::monotonic_ns());
    // A 5 s threshold: no episode here is closed late.
    let mut agg = Aggregator::new(Filters::default(), 5_000_000_000, ports, None);
    let start = Instant::now();
    for (a, b) in &recs {
        for bytes in [a, b] {
            let r = events::decode(bytes).unwrap();
            agg.on_transition(tracker.on_record(&r));
        }
    }
    let el = start.elapsed();
    let hist = &agg.hist;
    black_box(hist);
    let per = el.as_nanos() as f64 / N as f64;
    println!(
        "  {N} episodes in {:.3} s: {per:.0} ns/episode, {:.2} M episodes/s on one core",
        el.as_secs_f64(),
        1e3 / per
    );
    let s = hist.summaries();
    println!("  check: histogram 'all' holds {} episodes", s[0].count);
    tracker_at_its_bound();
}

/// New sockets entering CLOSE_WAIT while the tracker is full (leaks beyond
/// --max-sockets): each one evicts the oldest.
fn tracker_at_its_bound() {
    const BOUND: u64 = 65_536;
    let enter = |sk: u64| {
        events::decode(&event(
            sk,
            sk,
            tcp_state::ESTABLISHED,
            tcp_state::CLOSE_WAIT,
        ))
        .unwrap()
    };
    let recs: Vec<_> = (0..2 * BOUND)
        .map(|i| enter(0xffff_0000_0000 + i * 64))
        .collect();
    let mut tracker = Tracker::new(BOUND as usize);
    for r in &recs[..BOUND as usize] {
        tracker.on_record(r);
    }
    let start = Instant::now();
    for r in &recs[BOUND as usize..] {
        tracker.on_record(r);
    }
    let el = start.elapsed();
    black_box(&tracker);
    println!(
        "  tracker full ({BOUND} open): {:.0} ns per new socket (evicts the oldest; {} evicted)",
        el.as_nanos() as f64 / BOUND as f64,
        tracker.counters.tracker_dropped
    );
}
