//! The human report printed at the end of `record` and by `snapshot`,
//! rendered from the [`Report`] model.

use std::fmt::Write as _;

use crate::{
    model::{LocalPorts, Report, StuckGroup, StuckSocket},
    sockets::Holder,
};

impl LocalPorts {
    /// `18,998 of 28,232 local ports (net.ipv4.ip_local_port_range) held toward 127.0.0.1:23006`
    pub fn text(&self) -> String {
        format!(
            "{} of {} local ports (net.ipv4.ip_local_port_range) held toward {}",
            thousands(self.held as u64),
            thousands(u64::from(self.range_size())),
            self.peer
        )
    }
}

/// `28232` -> `28,232`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Sockets listed per group unless `--all` is given: the oldest ones.
pub const SHOWN_PER_GROUP: usize = 5;

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 3_600_000.0 {
        format!("{:.1}h", ms / 3_600_000.0)
    } else if ms >= 60_000.0 {
        format!("{:.1}m", ms / 60_000.0)
    } else if ms >= 1000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}

/// A duration in microseconds with about 3 significant digits and a unit
/// (the percentile tables).
pub fn fmt_us(us: u64) -> String {
    let f = us as f64;
    let sig3 = |v: f64, unit: &str| {
        if v < 10.0 {
            format!("{v:.2}{unit}")
        } else if v < 100.0 {
            format!("{v:.1}{unit}")
        } else {
            format!("{v:.0}{unit}")
        }
    };
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        sig3(f / 1e3, "ms")
    } else if us < 60_000_000 {
        sig3(f / 1e6, "s")
    } else if us < 3_600_000_000 {
        let s = (us + 500_000) / 1_000_000;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (us + 30_000_000) / 60_000_000;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// Holders listed by name; past this many, counted.
pub const HOLDERS_SHOWN: usize = 8;

pub fn holders_text(h: &[Holder]) -> String {
    if h.is_empty() {
        return "no process".to_string();
    }
    let mut t = h
        .iter()
        .take(HOLDERS_SHOWN)
        .map(|h| format!("{}[{}] fd {}", h.comm, h.pid, h.fd))
        .collect::<Vec<_>>()
        .join(", ");
    if h.len() > HOLDERS_SHOWN {
        let _ = write!(t, " and {} more", h.len() - HOLDERS_SHOWN);
    }
    t
}

pub fn socket_notes(s: &StuckSocket) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(l) = &s.listener {
        notes.push(format!(
            "listener {} held by {}: accept queue {}/{}",
            l.local,
            holders_text(&l.holders),
            l.accept_queue,
            l.backlog
        ));
    }
    if let Some(n) = &s.stack_note {
        notes.push(format!("stack: {n}"));
    }
    notes
}

/// Where a stuck socket lives: `netns 4026532301  container docker
/// 4f9c2b7d1e3a pod 1b2c...` (the container part only when there is one).
pub fn place_text(s: &StuckSocket) -> String {
    let mut t = format!("netns {}", s.netns);
    if let Some(c) = &s.container {
        let _ = write!(t, "  container {} {}", c.runtime, c.short_id());
        if let Some(p) = &c.pod_uid {
            let _ = write!(t, " pod {p}");
        }
    }
    t
}

/// One stuck socket, then its notes that are not already the group's.
fn render_socket(out: &mut String, s: &StuckSocket, folded: &[String]) {
    let age = if s.since_attach {
        format!(">={}", fmt_ms(s.age_ms as f64))
    } else {
        fmt_ms(s.age_ms as f64)
    };
    let _ = writeln!(
        out,
        "  {} <- {}  age {}  unread {} B  {}  held by {}",
        s.local,
        s.remote,
        age,
        s.unread_bytes,
        s.diagnosis,
        holders_text(&s.holders)
    );
    let _ = writeln!(out, "    {}", place_text(s));
    for n in socket_notes(s).into_iter().filter(|n| !folded.contains(n)) {
        let _ = writeln!(out, "    {n}");
    }
}

/// The members of group `gi`, oldest first.
pub fn members(r: &Report, gi: usize) -> Vec<&StuckSocket> {
    let mut m: Vec<&StuckSocket> = r.stuck.iter().filter(|s| s.group == gi).collect();
    m.sort_by_key(|s| std::cmp::Reverse(s.age_ms));
    m
}

/// Notes every member of a group of several sockets shares: said once.
pub fn shared_notes(members: &[&StuckSocket]) -> Vec<String> {
    let Some((first, rest)) = members.split_first() else {
        return Vec::new();
    };
    if rest.is_empty() {
        return Vec::new();
    }
    socket_notes(first)
        .into_iter()
        .filter(|n| rest.iter().all(|s| socket_notes(s).contains(n)))
        .collect()
}

fn render_group(out: &mut String, r: &Report, gi: usize, g: &StuckGroup, all: bool) {
    let who = match (&g.pool, g.pid) {
        (Some(pool), _) => pool.text(&g.comm),
        (None, Some(p)) => format!("{}[{}]", g.comm, p),
        (None, None) => "no process".to_string(),
    };
    let _ = writeln!(
        out,
        "\n{} x{}  {} <- peer {}  oldest {}  unread {} B",
        g.diagnosis.as_str().to_uppercase(),
        g.count,
        who,
        g.peer,
        fmt_ms(g.oldest_age_ms as f64),
        g.unread_bytes
    );
    if !g.cmdline.is_empty() {
        let _ = writeln!(out, "  command: {}", g.cmdline);
    }
    let _ = writeln!(out, "  why: {}", g.evidence);
    if let Some(a) = &g.accepting {
        let _ = writeln!(out, "  accepting: {a}");
    }
    if let Some(pool) = &g.pool {
        const SHOWN: usize = 8;
        let mut list: Vec<String> = pool
            .processes
            .iter()
            .take(SHOWN)
            .map(|m| format!("{}[{}] x{}", m.comm, m.pid, m.count))
            .collect();
        if pool.processes.len() > SHOWN {
            list.push(format!("and {} more", pool.processes.len() - SHOWN));
        }
        let _ = writeln!(out, "  processes: {}", list.join(", "));
    }
    if let Some(t) = &g.threads {
        let label = match (&g.pool, g.pid) {
            (Some(_), Some(p)) => format!("threads of {}[{p}]", g.comm),
            _ => "threads".to_owned(),
        };
        let _ = writeln!(out, "  {label}: {}", t.text);
        if let Some(py) = &t.python {
            let _ = writeln!(out, "  python {}: {}", py.version, py.text);
        }
    }
    if let Some(p) = &g.local_ports {
        let _ = writeln!(out, "  ports: {}", p.text());
    }
    if !g.stack.is_empty() {
        let _ = writeln!(out, "  created at:");
        let py = crate::fold::python_prefix(&g.stack);
        let python = crate::fold::python(&g.stack[..py]);
        for f in python
            .into_iter()
            .chain(crate::fold::native(&g.stack[py..]))
        {
            let _ = writeln!(out, "    {f}");
        }
    }
    let members = members(r, gi);
    let folded = shared_notes(&members);
    if !folded.is_empty() {
        let _ = writeln!(out, "  all {} sockets:", thousands(members.len() as u64));
        for n in &folded {
            let _ = writeln!(out, "    {n}");
        }
    }
    let shown = if all {
        members.len()
    } else {
        members.len().min(SHOWN_PER_GROUP)
    };
    for s in &members[..shown] {
        render_socket(out, s, &folded);
    }
    if shown < members.len() {
        let _ = writeln!(
            out,
            "  ... and {} more (--all lists every one; the JSON report has them all)",
            thousands((members.len() - shown) as u64)
        );
    }
}

/// The human report printed at the end of `record` (and by `snapshot`):
/// per group of stuck sockets only the oldest [`SHOWN_PER_GROUP`] sockets,
/// unless `all`.
pub fn render(r: &Report, all: bool) -> String {
    let mut out = String::new();
    let c = &r.counters;
    if r.hooks.is_empty() {
        // A snapshot: nothing was traced, only the socket table was read.
        let _ = writeln!(
            out,
            "close-wait snapshot {} (kernel {}): in CLOSE_WAIT now {}",
            r.ended_at, r.kernel, c.close_wait_now
        );
    } else {
        let _ = writeln!(
            out,
            "close-wait report {} .. {} (kernel {})",
            r.started_at, r.ended_at, r.kernel
        );
        let _ = writeln!(
            out,
            "CLOSE_WAIT entered {}, closed: graceful {} abort {} peer_reset {} timeout {}; in CLOSE_WAIT now {}, stuck (> {}) {}",
            c.close_wait_entered,
            c.closed_graceful,
            c.closed_abort,
            c.peer_reset,
            c.closed_timeout,
            c.close_wait_now,
            fmt_ms(r.threshold_ms as f64),
            c.stuck
        );
    }
    if c.lost_events > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} events lost: {}",
            c.lost_events,
            c.lost_causes()
        );
    }
    if c.uninvestigated > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} sockets in CLOSE_WAIT were not investigated: the last look was cut short to end the run in time (the previous --interval checkpoint's files had a complete one)",
            c.uninvestigated
        );
    }
    if c.stacks_not_read > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} stuck sockets are reported without their stack or threads: the last look was cut short to end the run in time",
            c.stacks_not_read
        );
    }
    if c.map_evictions + c.map_insert_failed > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} sockets evicted from the kernel's CLOSE_WAIT map, {} inserts failed: raise --max-sockets",
            c.map_evictions, c.map_insert_failed
        );
    }
    for h in r
        .histograms
        .iter()
        .filter(|h| h.tag == "all" && h.count > 0)
    {
        let _ = writeln!(
            out,
            "time in CLOSE_WAIT before close: n={} p50 {} p90 {} p99 {} max {}",
            h.count,
            fmt_ms(h.p50_us as f64 / 1000.0),
            fmt_ms(h.p90_us as f64 / 1000.0),
            fmt_ms(h.p99_us as f64 / 1000.0),
            fmt_ms(h.max_us as f64 / 1000.0)
        );
    }
    if r.groups.is_empty() {
        let _ = writeln!(out, "\nNo socket stuck in CLOSE_WAIT.");
    }
    for (gi, g) in r.groups.iter().enumerate() {
        render_group(&mut out, r, gi, g, all);
    }
    // Sockets of no group (a report written by another version).
    let orphans: Vec<&StuckSocket> = r
        .stuck
        .iter()
        .filter(|s| s.group >= r.groups.len())
        .collect();
    if !orphans.is_empty() {
        let _ = writeln!(out, "\nStuck sockets:");
        for s in orphans {
            render_socket(&mut out, s, &[]);
        }
    }
    for cl in &r.closed_late {
        let _ = writeln!(
            out,
            "\nCLOSED-LATE x{}  {}[{}] closed sockets up to {} after the peer left",
            cl.count,
            cl.comm,
            cl.pid,
            fmt_ms(cl.max_ms)
        );
    }
    for l in &r.leaked_after_shutdown {
        let _ = writeln!(
            out,
            "\nLEAKED-AFTER-SHUTDOWN  {}[{}] shut down {} <- {} {} ago (at {}) and never closed it: the descriptor is still open",
            l.shutdown_by.comm,
            l.shutdown_by.pid,
            l.local,
            l.remote,
            fmt_ms(l.open_since_shutdown_ms),
            l.shutdown_at
        );
    }
    for n in &r.notes {
        let _ = writeln!(out, "\nnote: {n}");
    }
    out
}

/// Report parts for other modules' unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::model::{Diagnosis, Origin, StuckSocket};

    /// A stuck connected socket `local <- 127.0.0.1:23006`.
    pub fn stuck(local: &str, origin: Origin) -> StuckSocket {
        StuckSocket {
            local: local.parse().unwrap(),
            remote: "127.0.0.1:23006".parse().unwrap(),
            netns: 4026531840,
            container: None,
            age_ms: 5000,
            since_attach: false,
            age_estimated: false,
            unread_bytes: 0,
            eof_unread: false,
            inode: 1,
            holders: Vec::new(),
            origin,
            origin_task: None,
            stack: Vec::new(),
            stack_note: None,
            kernel_stack: Vec::new(),
            listener: None,
            diagnosis: Diagnosis::ReadNotClosed,
            evidence: "e".into(),
            group: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counters, Diagnosis, Origin, Peer};

    fn empty(hooks: Vec<String>) -> Report {
        Report {
            kernel: "6.18".into(),
            hooks,
            threshold_ms: 5000,
            counters: Counters {
                close_wait_entered: 3,
                closed_graceful: 2,
                close_wait_now: 1,
                ..Default::default()
            },
            ..Report::new("t0".into(), "t1".into())
        }
    }

    #[test]
    fn record_and_snapshot_headers() {
        let rec = render(&empty(vec!["sock:inet_sock_set_state".into()]), false);
        assert!(
            rec.starts_with("close-wait report t0 .. t1 (kernel 6.18)\n"),
            "{rec}"
        );
        assert!(
            rec.contains("CLOSE_WAIT entered 3, closed: graceful 2 abort 0"),
            "{rec}"
        );
        assert!(rec.contains("stuck (> 5.0s) 0"), "{rec}");
        let snap = render(&empty(Vec::new()), false);
        assert!(
            snap.starts_with("close-wait snapshot t1 (kernel 6.18): in CLOSE_WAIT now 1\n"),
            "{snap}"
        );
        assert!(!snap.contains("entered"), "{snap}");
    }

    fn stuck(port: u16, age_ms: u64, note: &str) -> StuckSocket {
        let mut s = tests_support::stuck(&format!("127.0.0.1:{port}"), Origin::Connect);
        s.age_ms = age_ms;
        s.stack_note = Some(note.into());
        s
    }

    #[test]
    fn big_groups_show_their_oldest_sockets_and_a_count() {
        let mut r = empty(vec!["sock:inet_sock_set_state".into()]);
        // 1200 sockets, ages 1..=1200 s; one with a note of its own.
        r.stuck = (1..=1200u16)
            .map(|i| stuck(40000 + i, u64::from(i) * 1000, "no stack"))
            .collect();
        r.stuck[1199].stack_note = Some("other".into());
        r.groups = vec![StuckGroup {
            diagnosis: Diagnosis::ReadNotClosed,
            count: 1200,
            pid: Some(7),
            comm: "pool".into(),
            peer: Peer::Endpoint("127.0.0.1:23006".parse().unwrap()),
            oldest_age_ms: 1_200_000,
            unread_bytes: 0,
            stack: Vec::new(),
            threads: None,
            evidence: "e".into(),
            local_ports: Some(LocalPorts {
                held: 1200,
                range_first: 32768,
                range_last: 60999,
                peer: Peer::Endpoint("127.0.0.1:23006".parse().unwrap()),
            }),
            cmdline: String::new(),
            pool: None,
            accepting: None,
        }];
        let text = render(&r, false);
        assert!(
            text.contains("\n  ports: 1,200 of 28,232 local ports (net.ipv4.ip_local_port_range) held toward 127.0.0.1:23006\n"),
            "{text}"
        );
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  127.0.0.1:"))
            .collect();
        assert_eq!(lines.len(), SHOWN_PER_GROUP, "{text}");
        // Oldest first.
        assert!(lines[0].starts_with("  127.0.0.1:41200 <- "), "{text}");
        assert!(lines[4].starts_with("  127.0.0.1:41196 <- "), "{text}");
        assert!(
            text.contains(
                "\n  ... and 1,195 more (--all lists every one; the JSON report has them all)\n"
            ),
            "{text}"
        );
        // The oldest has a note of its own; the common one is not shared by all.
        assert_eq!(text.matches("stack: no stack").count(), 4, "{text}");
        assert!(text.contains("    stack: other\n"), "{text}");
        // Once every socket shares it, the note is said once, for the group.
        r.stuck[1199].stack_note = Some("no stack".into());
        let text = render(&r, false);
        assert_eq!(text.matches("stack: no stack").count(), 1, "{text}");
        assert!(
            text.contains("\n  all 1,200 sockets:\n    stack: no stack\n"),
            "{text}"
        );
        let all = render(&r, true);
        assert_eq!(
            all.lines()
                .filter(|l| l.starts_with("  127.0.0.1:"))
                .count(),
            1200
        );
        assert!(!all.contains(" more (--all"), "{all}");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(18998), "18,998");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_ms(12.34), "12.3ms");
        assert_eq!(fmt_ms(1500.0), "1.5s");
        assert_eq!(fmt_ms(90_000.0), "1.5m");
        assert_eq!(fmt_ms(5_400_000.0), "1.5h");
    }
}
