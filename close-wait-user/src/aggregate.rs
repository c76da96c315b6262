//! What `record` keeps of the tracker's transitions: duration histograms,
//! the closed-late table, the last finished episodes and the Prometheus
//! counters. Pure but for the listener refresh of [`ServicePorts`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::Arc,
};

use close_wait_common::tcp_state;

use crate::{
    cli::Filters,
    clock,
    events::Comm,
    export::prometheus::Metrics,
    histograms::Histograms,
    investigate,
    model::{ClosedLate, FinishedEpisode},
    sockets,
    tracker::{Episode, Transition},
};

/// Finished episodes kept for the JSON report (the last ones).
pub const MAX_EPISODES: usize = 1000;
/// Examples kept per closed-late closer.
pub const CLOSED_LATE_EXAMPLES: usize = 5;
/// Processes with their own `closed_late` entry; later ones are added up
/// in one entry of pid 0, comm [`CLOSED_LATE_OTHERS`].
pub const MAX_CLOSED_LATE: usize = 256;
/// Comm of the `closed_late` entry beyond [`MAX_CLOSED_LATE`] processes.
pub const CLOSED_LATE_OTHERS: &str = "(other processes)";

/// Local ports with a listener in `table`.
pub fn listening_ports(table: &[sockets::TcpSocket]) -> HashSet<u16> {
    table
        .iter()
        .filter(|s| s.state == tcp_state::LISTEN)
        .map(|s| s.local.port())
        .collect()
}

/// The ports that listen on this host, to tell an accepted socket (service
/// port = local) from a connected one (remote).
#[derive(Debug, Default)]
pub struct ServicePorts {
    listening: PortSet,
    refreshed_ns: u64,
}

/// A set of ports as 65,536 bits (8 KiB): a look-up per episode is one
/// index, no hashing.
#[derive(Debug, Default)]
struct PortSet(Vec<u64>);

impl PortSet {
    fn of(ports: &HashSet<u16>) -> PortSet {
        let mut bits = vec![0u64; 1024];
        for &p in ports {
            bits[usize::from(p >> 6)] |= 1 << (p & 63);
        }
        PortSet(bits)
    }

    fn contains(&self, p: u16) -> bool {
        self.0
            .get(usize::from(p >> 6))
            .is_some_and(|w| w & (1 << (p & 63)) != 0)
    }
}

impl ServicePorts {
    pub fn new(listening: HashSet<u16>, now_ns: u64) -> ServicePorts {
        ServicePorts {
            listening: PortSet::of(&listening),
            refreshed_ns: now_ns,
        }
    }

    /// Takes the listeners of a fresh socket table.
    pub fn update(&mut self, listening: HashSet<u16>, now_ns: u64) {
        self.listening = PortSet::of(&listening);
        self.refreshed_ns = now_ns;
    }

    /// Service port of an episode: the listening port for accepted
    /// sockets, the remote port for connected ones. A local port not known
    /// to listen refreshes the listener set, at most once a second: a
    /// listener opened after the last refresh is then found. `now_ns`: the
    /// monotonic time of the episode's end (no clock read per episode).
    pub fn of(&mut self, local: SocketAddr, remote: SocketAddr, now_ns: u64) -> u16 {
        if !self.listening.contains(local.port())
            && now_ns.saturating_sub(self.refreshed_ns) > 1_000_000_000
        {
            self.refreshed_ns = now_ns;
            match sockets::list_tcp(&[tcp_state::LISTEN]) {
                Ok(t) => self.listening = PortSet::of(&listening_ports(&t)),
                Err(e) => log::info!("cannot refresh the listening ports: {e}"),
            }
        }
        if self.listening.contains(local.port()) {
            local.port()
        } else {
            remote.port()
        }
    }
}

/// Closed episodes slower than the threshold, per closer (pid, comm):
/// each process its own entry while fewer than [`MAX_CLOSED_LATE`] have
/// one, the later ones added up in one shared entry (a load test recycling
/// workers must not grow the table forever).
#[derive(Debug, Default)]
pub struct ClosedLateTable {
    by_closer: HashMap<(u32, Comm), ClosedLate>,
    others: Option<ClosedLate>,
}

impl ClosedLateTable {
    /// Counts `ep`, closed by `pid`/`comm` after `dur_ns` in CLOSE_WAIT.
    pub fn add(&mut self, pid: u32, comm: Comm, dur_ns: u64, ep: &Episode) {
        let new = |pid, comm: String| ClosedLate {
            pid,
            comm,
            count: 0,
            max_ms: 0.0,
            examples: Vec::new(),
        };
        let key = (pid, comm);
        let e = if self.by_closer.contains_key(&key) || self.by_closer.len() < MAX_CLOSED_LATE {
            self.by_closer
                .entry(key)
                .or_insert_with(|| new(pid, comm.to_string()))
        } else {
            self.others
                .get_or_insert_with(|| new(0, CLOSED_LATE_OTHERS.to_owned()))
        };
        e.count += 1;
        e.max_ms = e.max_ms.max(dur_ns as f64 / 1e6);
        if e.examples.len() < CLOSED_LATE_EXAMPLES {
            e.examples.push(ep.finished());
        }
    }

    /// Every closer, the slowest first.
    pub fn sorted(&self) -> Vec<ClosedLate> {
        let mut v: Vec<ClosedLate> = self
            .by_closer
            .values()
            .chain(&self.others)
            .cloned()
            .collect();
        v.sort_by(|a, b| b.max_ms.total_cmp(&a.max_ms));
        v
    }
}

/// Consumes the tracker's transitions.
pub struct Aggregator {
    filters: Filters,
    threshold_ns: u64,
    pub hist: Histograms,
    closed_late: ClosedLateTable,
    episodes: VecDeque<Episode>,
    episodes_dropped: u64,
    pub ports: ServicePorts,
    metrics: Option<Arc<Metrics>>,
}

impl Aggregator {
    pub fn new(
        filters: Filters,
        threshold_ns: u64,
        ports: ServicePorts,
        metrics: Option<Arc<Metrics>>,
    ) -> Aggregator {
        Aggregator {
            filters,
            threshold_ns,
            hist: Histograms::new(),
            closed_late: ClosedLateTable::default(),
            episodes: VecDeque::with_capacity(MAX_EPISODES),
            episodes_dropped: 0,
            ports,
            metrics,
        }
    }

    /// Whether a finished episode passes the userspace filters (the kernel
    /// applied the port filters to the sockets it saw entering).
    fn kept(&self, ep: &Episode) -> bool {
        let f = &self.filters;
        if !investigate::ports_kept(f, ep.local, ep.remote)
            || (ep.netns != 0 && !investigate::netns_kept(f, ep.netns))
        {
            return false;
        }
        if f.pids.is_empty() && f.cgroup.is_none() {
            return true;
        }
        ep.closer
            .as_ref()
            .is_some_and(|t| investigate::pid_kept(f, t.pid))
    }

    pub fn on_transition(&mut self, t: Transition) {
        match t {
            Transition::Entered => {
                if let Some(m) = &self.metrics {
                    m.inc_entered();
                }
            }
            Transition::Ended(ep) => self.on_episode(&ep),
            Transition::Nothing => {}
        }
    }

    fn on_episode(&mut self, ep: &Episode) {
        if !self.kept(ep) {
            return;
        }
        let port = self.ports.of(
            ep.local,
            ep.remote,
            ep.ended_ns.unwrap_or_else(clock::monotonic_ns),
        );
        let dur = ep.duration_ns();
        // Every closed episode with a known duration is recorded; a peer
        // reset or a timeout has no closer, its comm tag is `comm:?`.
        let comm = ep.closer.map(|c| c.comm).unwrap_or_default();
        if let Some(d) = dur {
            self.hist.record_closed(comm, port, d / 1000);
        }
        if let (Some(d), Some(c)) = (dur, &ep.closer) {
            if d >= self.threshold_ns {
                self.closed_late.add(c.pid, c.comm, d, ep);
            }
        }
        if let Some(m) = &self.metrics {
            let secs = dur.map(|d| d as f64 / 1e9);
            let container = m.container_of(ep.closer.map_or(0, |c| c.pid));
            m.observe_closed(&comm.as_str(), &container, port, secs, ep.ending.as_str());
        }
        if self.episodes.len() >= MAX_EPISODES {
            self.episodes.pop_front();
            self.episodes_dropped += 1;
        }
        self.episodes.push_back(*ep);
    }

    /// The closed-late closers, slowest first.
    pub fn closed_late(&self) -> Vec<ClosedLate> {
        self.closed_late.sorted()
    }

    /// The last [`MAX_EPISODES`] finished episodes, oldest first.
    pub fn episodes(&self) -> Vec<FinishedEpisode> {
        self.episodes.iter().map(Episode::finished).collect()
    }

    /// Episodes no longer in [`episodes`](Self::episodes).
    pub fn episodes_dropped(&self) -> u64 {
        self.episodes_dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ending;
    use crate::tracker::Closer;

    #[test]
    fn service_ports_from_the_listening_set() {
        let listen: HashSet<u16> = [0, 63, 64, 8080, 65535].into_iter().collect();
        let now = clock::monotonic_ns();
        let mut sp = ServicePorts::new(listen.clone(), now);
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        for p in 0..=u16::MAX {
            assert_eq!(sp.listening.contains(p), listen.contains(&p), "port {p}");
        }
        assert_eq!(sp.of(a(8080), a(41000), now), 8080);
        assert_eq!(sp.of(a(65535), a(41000), now), 65535);
        assert_eq!(sp.of(a(41000), a(5432), now), 5432);
    }

    #[test]
    fn service_port_is_the_listening_or_the_remote_port() {
        let listen: HashSet<u16> = [8080].into_iter().collect();
        let now = clock::monotonic_ns();
        let mut sp = ServicePorts::new(listen, now);
        let accepted = (
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
        );
        assert_eq!(sp.of(accepted.0, accepted.1, now), 8080);
        let connected = (
            "127.0.0.1:40001".parse().unwrap(),
            "10.0.0.1:5432".parse().unwrap(),
        );
        assert_eq!(sp.of(connected.0, connected.1, now), 5432);
    }

    fn episode(i: u64, dur_ns: u64, closer: Option<Closer>) -> Episode {
        Episode {
            skaddr: i,
            netns: 1,
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
            entered_ns: Some(1_000),
            ended_ns: Some(1_000 + dur_ns),
            ending: if closer.is_some() {
                Ending::Graceful
            } else {
                Ending::PeerReset
            },
            closer,
            closed_by: if closer.is_some() {
                crate::model::ClosedBy::CloseOrShutdown
            } else {
                crate::model::ClosedBy::Reset
            },
            close_ns: None,
        }
    }

    #[test]
    fn episodes_feed_histograms_closed_late_and_the_last_episodes() {
        let ports = ServicePorts::new([8080].into_iter().collect(), clock::monotonic_ns());
        let mut a = Aggregator::new(Filters::default(), 5_000_000_000, ports, None);
        let srv = Closer {
            pid: 42,
            tid: 43,
            comm: Comm::from("srv"),
        };
        a.on_transition(Transition::Entered);
        a.on_transition(Transition::Ended(episode(1, 1_000_000, Some(srv))));
        a.on_transition(Transition::Ended(episode(2, 6_000_000_000, Some(srv))));
        a.on_transition(Transition::Ended(episode(3, 2_000_000, None)));
        a.on_transition(Transition::Nothing);
        assert_eq!(a.hist.get("all").unwrap().len(), 3);
        assert_eq!(a.hist.get("comm:srv").unwrap().len(), 2);
        assert_eq!(a.hist.get("comm:?").unwrap().len(), 1);
        assert_eq!(a.hist.get("port:8080").unwrap().len(), 3);
        let late = a.closed_late();
        assert_eq!(late.len(), 1);
        assert_eq!((late[0].pid, late[0].comm.as_str()), (42, "srv"));
        assert_eq!(late[0].count, 1);
        assert_eq!(late[0].examples[0].closer.as_ref().unwrap().tid, 43);
        for i in 0..MAX_EPISODES as u64 {
            a.on_transition(Transition::Ended(episode(10 + i, 1_000, Some(srv))));
        }
        let eps = a.episodes();
        assert_eq!(eps.len(), MAX_EPISODES);
        assert_eq!(a.episodes_dropped(), 3);
        assert_eq!(eps[0].duration_ms, Some(0.001));
    }

    #[test]
    fn closed_late_is_bounded_and_keeps_every_count() {
        let mut t = ClosedLateTable::default();
        let ep = episode(1, 1, None);
        let worker = Comm::from("worker");
        for pid in 1..=(MAX_CLOSED_LATE as u32 + 100) {
            t.add(pid, worker, 1, &ep);
        }
        // a process that has its own entry keeps it after the bound
        t.add(1, worker, 1, &ep);
        let v = t.sorted();
        assert_eq!(v.len(), MAX_CLOSED_LATE + 1);
        let one = v.iter().find(|e| e.pid == 1).unwrap();
        assert_eq!((one.comm.as_str(), one.count), ("worker", 2));
        let others = v.iter().find(|e| e.comm == CLOSED_LATE_OTHERS).unwrap();
        assert_eq!((others.pid, others.count), (0, 100));
        let total: u64 = v.iter().map(|e| e.count).sum();
        assert_eq!(total, MAX_CLOSED_LATE as u64 + 101);
    }

    #[test]
    fn filtered_out_episodes_are_not_counted() {
        let filters = Filters {
            dports: vec![9999],
            ..Filters::default()
        };
        let mut a = Aggregator::new(filters, 1, ServicePorts::default(), None);
        a.on_transition(Transition::Ended(episode(1, 1_000_000, None)));
        assert_eq!(a.hist.get("all").unwrap().len(), 0);
        assert!(a.episodes().is_empty());
    }
}
