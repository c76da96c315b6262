//! Follows each socket through CLOSE_WAIT from the decoded events and turns
//! its stay into an [`Episode`] with an [`Ending`]. Pure: no I/O, no aya.
//!
//! Endings, from the transitions measured on this kernel:
//! - `graceful`: CLOSE_WAIT -> LAST_ACK, the application called close() or
//!   shutdown(SHUT_WR) (process context: the task on CPU is the closer);
//! - `abort`: CLOSE_WAIT -> CLOSE without a reset received first and
//!   without a timer's error: close() with unread data or SO_LINGER 0 (the
//!   kernel sends a reset right after; not traced, it adds nothing);
//! - `peer_reset`: tcp_receive_reset then CLOSE_WAIT -> CLOSE (softirq: the
//!   task on CPU is not the owner, so no closer is recorded);
//! - `timeout`: CLOSE_WAIT -> CLOSE with no reset received, no tcp_close()
//!   seen, and the kernel's timer error on the socket (the kernel side's
//!   `TIMED_OUT` flag): retransmission / TCP_USER_TIMEOUT or keepalive gave
//!   up on the peer, in timer (softirq) context, so no closer is recorded;
//! - `open`: still in CLOSE_WAIT.
//!
//! With tcp_close() hooked (fentry or kprobe, [`Tracker::set_close_hooked`])
//! its event comes before the exit it causes, so each episode also says
//! what ended it ([`ClosedBy`]): close() or shutdown(SHUT_WR). A socket shut
//! down is followed until its tcp_close() or destruction: while neither
//! comes its descriptor is open ([`Tracker::shut_down`]).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    net::SocketAddr,
};

use close_wait_common::tcp_state::{CLOSE, CLOSE_WAIT, LAST_ACK};
use serde::Serialize;

use crate::events::{Comm, Kind, Record};
pub use crate::model::{ClosedBy, Ending};
use crate::model::{FinishedEpisode, Task};

/// The task that ended an episode (process context: the closer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closer {
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
}

impl Closer {
    pub fn task(&self) -> Task {
        Task {
            pid: self.pid,
            tid: self.tid,
            comm: self.comm.to_string(),
        }
    }
}

/// What one event did to the tracker's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A socket entered CLOSE_WAIT.
    Entered,
    /// A socket left CLOSE_WAIT: its episode.
    Ended(Episode),
    /// Anything else: a reset marked, a socket destroyed, a state change
    /// outside CLOSE_WAIT.
    Nothing,
}

impl Transition {
    /// The episode that ended, if one did.
    pub fn episode(self) -> Option<Episode> {
        match self {
            Transition::Ended(ep) => Some(ep),
            Transition::Entered | Transition::Nothing => None,
        }
    }
}

/// One stay of one socket in CLOSE_WAIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    pub skaddr: u64,
    /// Network namespace inode (0 unknown): the 4-tuple alone is ambiguous.
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Monotonic entry time; None when the socket entered before the tracer
    /// attached (or the entry was lost), so no duration is known.
    pub entered_ns: Option<u64>,
    pub ended_ns: Option<u64>,
    pub ending: Ending,
    pub closer: Option<Closer>,
    pub closed_by: ClosedBy,
    /// Monotonic time of tcp_close(), when hooked and before the exit.
    pub close_ns: Option<u64>,
}

/// A socket that left CLOSE_WAIT through shutdown() (tcp_close hooked) and
/// whose tcp_close() has not come yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutSocket {
    pub skaddr: u64,
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub shutdown_ns: u64,
    /// The task that called shutdown().
    pub task: Closer,
}

impl Episode {
    /// Time spent in CLOSE_WAIT, when both ends are known.
    pub fn duration_ns(&self) -> Option<u64> {
        Some(self.ended_ns?.saturating_sub(self.entered_ns?))
    }

    /// The episode as the report has it.
    pub fn finished(&self) -> FinishedEpisode {
        FinishedEpisode {
            local: self.local,
            remote: self.remote,
            netns: self.netns,
            ending: self.ending,
            duration_ms: self.duration_ns().map(|d| d as f64 / 1e6),
            since_attach: self.entered_ns.is_none(),
            closer: self.closer.map(|c| c.task()),
            closed_by: Some(self.closed_by),
            closed_at: self.close_ns.map(|t| {
                humantime::format_rfc3339_nanos(crate::clock::WallClock::now().wall(t)).to_string()
            }),
        }
    }
}

/// A socket the tracker believes is in CLOSE_WAIT now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSocket {
    pub skaddr: u64,
    /// Network namespace inode (0 unknown).
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub entered_ns: u64,
    reset_received: bool,
    /// tcp_close() seen while in CLOSE_WAIT: its time.
    close_ns: Option<u64>,
    /// Its node in the entry order.
    node: u32,
}

/// Hashes a socket's kernel address (a pointer: its low bits are
/// alignment, its high bits constant) by one multiplication, much cheaper
/// than SipHash; the addresses come from the kernel, not from an attacker
/// who could choose them to collide.
#[derive(Default)]
pub struct SkHasher(u64);

impl Hasher for SkHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing; the high bits (which hashbrown uses for its
        // control bytes) depend on every bit of the address.
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SkMap<V> = HashMap<u64, V, BuildHasherDefault<SkHasher>>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub close_wait_entered: u64,
    pub closed_graceful: u64,
    pub closed_abort: u64,
    pub peer_reset: u64,
    pub closed_timeout: u64,
    /// Exits from CLOSE_WAIT of sockets whose entry was not seen (they entered
    /// before the tracer attached, or the entry event was lost).
    pub exits_without_entry: u64,
    /// Sockets destroyed while the tracker still had them in CLOSE_WAIT (an
    /// exit event was lost).
    pub destroyed_while_open: u64,
    /// Open sockets dropped because the tracker reached its bound.
    pub tracker_dropped: u64,
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    sk: u64,
    prev: u32,
    next: u32,
}

/// The open sockets in entry order, oldest first: a doubly linked list
/// whose nodes live in a slab (freed nodes are reused), so that adding,
/// unlinking and finding the oldest are O(1) without hashing.
#[derive(Debug)]
struct EntryOrder {
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
}

impl EntryOrder {
    fn new() -> EntryOrder {
        EntryOrder {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// Links `sk` as the newest; returns its node.
    fn push(&mut self, sk: u64) -> u32 {
        let node = Node {
            sk,
            prev: self.tail,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        match self.tail {
            NIL => self.head = i,
            t => self.nodes[t as usize].next = i,
        }
        self.tail = i;
        i
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
        self.free.push(i);
    }

    fn oldest(&self) -> Option<u64> {
        (self.head != NIL).then(|| self.nodes[self.head as usize].sk)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

/// Per-socket CLOSE_WAIT state machine.
///
/// At most `max_open` sockets are followed; at the bound the one that
/// entered first is dropped, in O(1): `order` links the open sockets in
/// entry order, and a socket that leaves is unlinked at once (no stale
/// entries, nothing to compact).
#[derive(Debug)]
pub struct Tracker {
    open: SkMap<OpenSocket>,
    order: EntryOrder,
    max_open: usize,
    /// tcp_close() is hooked: its absence before an exit means shutdown().
    close_hooked: bool,
    /// Shut down, not yet closed (bounded like `open`).
    shut: SkMap<ShutSocket>,
    pub counters: Counters,
}

impl Tracker {
    /// `max_open` bounds the memory userspace spends on open sockets.
    pub fn new(max_open: usize) -> Self {
        Tracker {
            open: SkMap::default(),
            order: EntryOrder::new(),
            max_open: max_open.max(1),
            close_hooked: false,
            shut: SkMap::default(),
            counters: Counters::default(),
        }
    }

    /// Says tcp_close() events will come (fentry or kprobe attached).
    pub fn set_close_hooked(&mut self, hooked: bool) {
        self.close_hooked = hooked;
    }

    /// Sockets shut down whose tcp_close() has not come: descriptor open.
    pub fn shut_down(&self) -> impl Iterator<Item = &ShutSocket> {
        self.shut.values()
    }

    /// Drops the socket that entered first (its report still finds it
    /// through the socket table; only its exact entry time is lost).
    fn evict_oldest(&mut self) {
        if let Some(sk) = self.order.oldest() {
            self.remove(sk);
            self.counters.tracker_dropped += 1;
        }
    }

    fn remove(&mut self, sk: u64) -> Option<OpenSocket> {
        let s = self.open.remove(&sk)?;
        self.order.unlink(s.node);
        Some(s)
    }

    /// Feeds one event; returns what it did.
    pub fn on_record(&mut self, r: &Record) -> Transition {
        match r.kind {
            Kind::State if r.newstate == CLOSE_WAIT => self.enter(r),
            Kind::State if r.oldstate == CLOSE_WAIT => Transition::Ended(self.exit(r)),
            Kind::State => Transition::Nothing,
            Kind::RecvReset => {
                if let Some(s) = self.open.get_mut(&r.skaddr) {
                    s.reset_received = true;
                }
                Transition::Nothing
            }
            Kind::Close => {
                if let Some(s) = self.open.get_mut(&r.skaddr) {
                    s.close_ns = Some(r.ts_ns);
                } else {
                    self.shut.remove(&r.skaddr);
                }
                Transition::Nothing
            }
            Kind::Exec => Transition::Nothing,
            Kind::Destroy => {
                self.shut.remove(&r.skaddr);
                if self.remove(r.skaddr).is_some() {
                    self.counters.destroyed_while_open += 1;
                }
                Transition::Nothing
            }
        }
    }

    fn enter(&mut self, r: &Record) -> Transition {
        let (Some(local), Some(remote)) = (r.local, r.remote) else {
            return Transition::Nothing;
        };
        self.counters.close_wait_entered += 1;
        if self.open.len() >= self.max_open && !self.open.contains_key(&r.skaddr) {
            self.evict_oldest();
        }
        // A second entry of the same socket (its exit was lost) moves it to
        // the newest end.
        if let Some(old) = self.open.get(&r.skaddr) {
            self.order.unlink(old.node);
        }
        let node = self.order.push(r.skaddr);
        self.open.insert(
            r.skaddr,
            OpenSocket {
                skaddr: r.skaddr,
                netns: r.netns,
                local,
                remote,
                entered_ns: r.ts_ns,
                reset_received: false,
                close_ns: None,
                node,
            },
        );
        Transition::Entered
    }

    fn exit(&mut self, r: &Record) -> Episode {
        let prev = self.remove(r.skaddr);
        // The kernel flags a reset it saw just before this exit even when
        // the socket is untracked (entered before attach, evicted), whose
        // reset event never reaches us.
        let reset_received = r.reset_received || prev.as_ref().is_some_and(|s| s.reset_received);
        let entered_ns = match &prev {
            Some(s) => Some(s.entered_ns),
            None => {
                self.counters.exits_without_entry += 1;
                r.entered_ns
            }
        };
        let close_ns = prev.as_ref().and_then(|s| s.close_ns);
        let ending = if r.newstate == LAST_ACK {
            Ending::Graceful
        } else if r.newstate == CLOSE && reset_received {
            Ending::PeerReset
        } else if r.newstate == CLOSE && r.timed_out && close_ns.is_none() {
            // A tcp_close() seen before the exit means the owner aborted
            // (close() with unread data), whatever error the socket held.
            Ending::Timeout
        } else {
            Ending::Abort
        };
        // The kernel sends tcp_close() only for sockets its map holds
        // (tracked): for the others its absence says nothing.
        let hooked = self.close_hooked && r.entered_ns.is_some() && prev.is_some();
        let closed_by = if ending == Ending::PeerReset {
            ClosedBy::Reset
        } else if ending == Ending::Timeout {
            ClosedBy::Timeout
        } else if close_ns.is_some() {
            ClosedBy::Close
        } else if !hooked {
            if r.newstate == LAST_ACK {
                ClosedBy::CloseOrShutdown
            } else {
                ClosedBy::Close
            }
        } else if r.newstate == LAST_ACK {
            ClosedBy::Shutdown
        } else {
            ClosedBy::Unknown
        };
        match ending {
            Ending::Graceful => self.counters.closed_graceful += 1,
            Ending::Abort => self.counters.closed_abort += 1,
            Ending::PeerReset => self.counters.peer_reset += 1,
            Ending::Timeout => self.counters.closed_timeout += 1,
            Ending::Open => {}
        }
        // After a reset or a timer the task on CPU is not the owner.
        let owner_on_cpu = !matches!(ending, Ending::PeerReset | Ending::Timeout);
        let closer = owner_on_cpu.then_some(Closer {
            pid: r.pid,
            tid: r.tid,
            comm: r.comm,
        });
        let fallback = || SocketAddr::from(([0, 0, 0, 0], 0));
        let ep = Episode {
            skaddr: r.skaddr,
            netns: if r.netns != 0 {
                r.netns
            } else {
                prev.as_ref().map_or(0, |s| s.netns)
            },
            local: r
                .local
                .or(prev.as_ref().map(|s| s.local))
                .unwrap_or_else(fallback),
            remote: r
                .remote
                .or(prev.as_ref().map(|s| s.remote))
                .unwrap_or_else(fallback),
            entered_ns,
            ended_ns: Some(r.ts_ns),
            ending,
            closer,
            closed_by,
            close_ns,
        };
        if let (ClosedBy::Shutdown, Some(task)) = (closed_by, closer) {
            if self.shut.len() >= self.max_open {
                // At the bound (rare): forget the one shut down first.
                if let Some(k) = self
                    .shut
                    .values()
                    .min_by_key(|s| s.shutdown_ns)
                    .map(|s| s.skaddr)
                {
                    self.shut.remove(&k);
                }
            }
            self.shut.insert(
                ep.skaddr,
                ShutSocket {
                    skaddr: ep.skaddr,
                    netns: ep.netns,
                    local: ep.local,
                    remote: ep.remote,
                    shutdown_ns: r.ts_ns,
                    task,
                },
            );
        }
        ep
    }

    /// Sockets believed to be in CLOSE_WAIT now.
    pub fn open_sockets(&self) -> impl Iterator<Item = &OpenSocket> {
        self.open.values()
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use close_wait_common::tcp_state::ESTABLISHED;

    fn state(ts: u64, sk: u64, old: u8, new: u8, pid: u32) -> Record {
        Record {
            kind: Kind::State,
            ts_ns: ts,
            skaddr: sk,
            pid,
            tid: pid,
            comm: Comm::from(format!("p{pid}").as_str()),
            entered_ns: None,
            reset_received: false,
            timed_out: false,
            oldstate: old,
            newstate: new,
            local: Some("127.0.0.1:8080".parse().unwrap()),
            remote: Some("127.0.0.1:40000".parse().unwrap()),
            netns: 4026531840,
        }
    }

    fn other(kind: Kind, ts: u64, sk: u64) -> Record {
        Record {
            kind,
            local: None,
            remote: None,
            oldstate: 0,
            newstate: 0,
            ..state(ts, sk, 0, 0, 0)
        }
    }

    #[test]
    fn same_four_tuple_in_two_namespaces_stays_two_sockets() {
        let mut t = Tracker::new(16);
        let in_ns = |ts, sk, old, new, ns| Record {
            netns: ns,
            ..state(ts, sk, old, new, 1)
        };
        t.on_record(&in_ns(1_000, 7, ESTABLISHED, CLOSE_WAIT, 11));
        t.on_record(&in_ns(2_000, 8, ESTABLISHED, CLOSE_WAIT, 12));
        let mut open: Vec<(u64, u32)> = t.open_sockets().map(|s| (s.skaddr, s.netns)).collect();
        open.sort();
        assert_eq!(open, vec![(7, 11), (8, 12)]);
        let ep = t
            .on_record(&in_ns(5_000, 8, CLOSE_WAIT, LAST_ACK, 12))
            .episode()
            .unwrap();
        assert_eq!(
            (ep.skaddr, ep.netns, ep.duration_ns()),
            (8, 12, Some(3_000))
        );
        let left: Vec<u32> = t.open_sockets().map(|s| s.netns).collect();
        assert_eq!(left, vec![11]);
    }

    #[test]
    fn graceful_close_records_closer_and_duration() {
        let mut t = Tracker::new(16);
        // Entry seen in the client's context (the loopback trap): pid 1.
        assert!(t
            .on_record(&state(1_000, 7, ESTABLISHED, CLOSE_WAIT, 1))
            .episode()
            .is_none());
        assert_eq!(t.open_count(), 1);
        let ep = t
            .on_record(&state(301_000, 7, CLOSE_WAIT, LAST_ACK, 2))
            .episode()
            .unwrap();
        assert_eq!(ep.ending, Ending::Graceful);
        assert_eq!(ep.duration_ns(), Some(300_000));
        assert_eq!(ep.closer.unwrap().pid, 2);
        assert_eq!(t.counters.closed_graceful, 1);
        assert_eq!(t.open_count(), 0);
    }

    #[test]
    fn close_with_unread_data_is_abort() {
        let mut t = Tracker::new(16);
        t.on_record(&state(10, 7, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&state(20, 7, CLOSE_WAIT, CLOSE, 2))
            .episode()
            .unwrap();
        assert!(t
            .on_record(&other(Kind::Destroy, 22, 7))
            .episode()
            .is_none());
        assert_eq!(ep.ending, Ending::Abort);
        assert_eq!(ep.closer.unwrap().pid, 2);
        assert_eq!(t.counters.closed_abort, 1);
        assert_eq!(t.counters.destroyed_while_open, 0);
    }

    #[test]
    fn reset_received_first_is_peer_reset_without_closer() {
        let mut t = Tracker::new(16);
        t.on_record(&state(10, 7, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&other(Kind::RecvReset, 15, 7));
        let ep = t
            .on_record(&state(16, 7, CLOSE_WAIT, CLOSE, 0))
            .episode()
            .unwrap();
        assert_eq!(ep.ending, Ending::PeerReset);
        assert!(ep.closer.is_none());
        assert_eq!(t.counters.peer_reset, 1);
    }

    #[test]
    fn never_closed_stays_open() {
        let mut t = Tracker::new(16);
        t.on_record(&state(10, 7, ESTABLISHED, CLOSE_WAIT, 1));
        let open: Vec<_> = t.open_sockets().collect();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].entered_ns, 10);
        assert_eq!(t.counters.close_wait_entered, 1);
    }

    #[test]
    fn exit_without_entry_has_no_duration_unless_kernel_knew() {
        let mut t = Tracker::new(16);
        let ep = t
            .on_record(&state(50, 9, CLOSE_WAIT, LAST_ACK, 3))
            .episode()
            .unwrap();
        assert_eq!(ep.entered_ns, None);
        assert_eq!(ep.duration_ns(), None);
        assert_eq!(t.counters.exits_without_entry, 1);
        // Entry event lost but the kernel map had it.
        let mut r = state(80, 10, CLOSE_WAIT, LAST_ACK, 3);
        r.entered_ns = Some(30);
        assert_eq!(t.on_record(&r).episode().unwrap().duration_ns(), Some(50));
    }

    #[test]
    fn destroy_without_entry_is_ignored_and_destroy_while_open_counted() {
        let mut t = Tracker::new(16);
        assert!(t.on_record(&other(Kind::Destroy, 5, 1)).episode().is_none());
        assert_eq!(t.counters.destroyed_while_open, 0);
        t.on_record(&state(10, 2, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&other(Kind::Destroy, 11, 2));
        assert_eq!(t.counters.destroyed_while_open, 1);
        assert_eq!(t.open_count(), 0);
    }

    #[test]
    fn reset_for_unknown_socket_then_exit_is_abort() {
        // A reset for a socket never seen entering does not invent an entry.
        let mut t = Tracker::new(16);
        t.on_record(&other(Kind::RecvReset, 1, 4));
        assert_eq!(t.open_count(), 0);
        // Nor is it remembered: only the kernel's flag on the exit counts.
        let ep = t
            .on_record(&state(2, 4, CLOSE_WAIT, CLOSE, 5))
            .episode()
            .unwrap();
        assert_eq!(ep.ending, Ending::Abort);
        assert_eq!(ep.closer.unwrap().pid, 5);
    }

    #[test]
    fn timer_flag_makes_an_exit_a_timeout_without_closer() {
        // The user timeout fired: CLOSE_WAIT -> CLOSE in timer context, the
        // task on CPU (here pid 7) is not the owner.
        let mut t = Tracker::new(16);
        t.on_record(&state(10, 1, ESTABLISHED, CLOSE_WAIT, 1));
        let mut r = state(1_010, 1, CLOSE_WAIT, CLOSE, 7);
        r.timed_out = true;
        let ep = t.on_record(&r).episode().unwrap();
        assert_eq!(ep.ending, Ending::Timeout);
        assert_eq!(ep.ending.as_str(), "timeout");
        assert!(ep.closer.is_none(), "{ep:?}");
        assert_eq!(ep.closed_by, ClosedBy::Timeout);
        assert_eq!(ep.duration_ns(), Some(1_000));
        assert_eq!(t.counters.closed_timeout, 1);
        assert_eq!(t.counters.closed_abort, 0);
        // Untracked (entered before attach): the flag alone suffices.
        let mut r = state(2_000, 2, CLOSE_WAIT, CLOSE, 7);
        r.timed_out = true;
        let ep = t.on_record(&r).episode().unwrap();
        assert_eq!((ep.ending, ep.closer), (Ending::Timeout, None));
        assert_eq!(t.counters.closed_timeout, 2);
        // Without the flag the same exit is still an abort by the task.
        t.on_record(&state(3_000, 3, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&state(3_010, 3, CLOSE_WAIT, CLOSE, 7))
            .episode()
            .unwrap();
        assert_eq!(ep.ending, Ending::Abort);
        assert_eq!(ep.closer.unwrap().pid, 7);
        assert_eq!(t.counters.closed_abort, 1);
    }

    #[test]
    fn a_reset_or_a_close_first_wins_over_the_timer_flag() {
        let mut t = Tracker::new(16);
        t.set_close_hooked(true);
        // The peer's reset came first: peer_reset.
        let mut r = state(10, 1, CLOSE_WAIT, CLOSE, 7);
        (r.reset_received, r.timed_out) = (true, true);
        let ep = t.on_record(&r).episode().unwrap();
        assert_eq!(
            (ep.ending, ep.closed_by),
            (Ending::PeerReset, ClosedBy::Reset)
        );
        // tcp_close() ran before the exit (close() with unread data on a
        // socket that held an ICMP error): the owner aborted it.
        t.on_record(&state(20, 2, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&other(Kind::Close, 30, 2));
        let mut r = tracked_exit(31, 2, CLOSE, 5, 20);
        r.timed_out = true;
        let ep = t.on_record(&r).episode().unwrap();
        assert_eq!((ep.ending, ep.closed_by), (Ending::Abort, ClosedBy::Close));
        assert_eq!(ep.closer.unwrap().pid, 5);
        assert_eq!(t.counters.closed_timeout, 0);
    }

    #[test]
    fn kernel_reset_flag_makes_an_untracked_exit_a_peer_reset() {
        // Entered before attach (or evicted): no reset event came, the kernel
        // flagged the exit. The task on CPU is the peer's, not a closer.
        let mut t = Tracker::new(16);
        let mut r = state(50, 9, CLOSE_WAIT, CLOSE, 1);
        r.reset_received = true;
        let ep = t.on_record(&r).episode().unwrap();
        assert_eq!(ep.ending, Ending::PeerReset);
        assert!(ep.closer.is_none());
        assert_eq!(ep.entered_ns, None);
        assert_eq!(t.counters.peer_reset, 1);
        assert_eq!(t.counters.exits_without_entry, 1);
        // A tracked socket whose reset event was lost: the flag suffices.
        t.on_record(&state(60, 10, ESTABLISHED, CLOSE_WAIT, 1));
        let mut r = state(70, 10, CLOSE_WAIT, CLOSE, 1);
        r.reset_received = true;
        let ep = t.on_record(&r).episode().unwrap();
        assert_eq!(ep.ending, Ending::PeerReset);
        assert_eq!(ep.duration_ns(), Some(10));
        assert_eq!(t.counters.peer_reset, 2);
    }

    #[test]
    fn reset_does_not_carry_into_the_next_episode() {
        let mut t = Tracker::new(16);
        t.on_record(&state(10, 7, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&other(Kind::RecvReset, 11, 7));
        // Its exit was lost; destroyed, and the address reused.
        t.on_record(&other(Kind::Destroy, 12, 7));
        t.on_record(&state(20, 7, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&state(30, 7, CLOSE_WAIT, CLOSE, 2))
            .episode()
            .unwrap();
        assert_eq!(ep.ending, Ending::Abort);
        assert_eq!(ep.duration_ns(), Some(10));
        // Exit and destroy both lost: a second entry starts clean too.
        t.on_record(&state(40, 8, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&other(Kind::RecvReset, 41, 8));
        t.on_record(&state(50, 8, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&state(60, 8, CLOSE_WAIT, CLOSE, 2))
            .episode()
            .unwrap();
        assert_eq!(ep.ending, Ending::Abort);
        assert_eq!(ep.duration_ns(), Some(10));
        assert_eq!(t.open_count(), 0);
    }

    #[test]
    fn socket_dropped_by_the_bound_keeps_the_kernel_entry_time() {
        let mut t = Tracker::new(1);
        t.on_record(&state(10, 1, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&state(20, 2, ESTABLISHED, CLOSE_WAIT, 1));
        assert_eq!(t.counters.tracker_dropped, 1);
        let mut r = state(50, 1, CLOSE_WAIT, LAST_ACK, 3);
        r.entered_ns = Some(10);
        let ep = t.on_record(&r).episode().unwrap();
        assert_eq!(ep.ending, Ending::Graceful);
        assert_eq!(ep.duration_ns(), Some(40));
        assert_eq!(t.counters.exits_without_entry, 1);
        // The one still tracked is unaffected.
        let ep = t
            .on_record(&state(70, 2, CLOSE_WAIT, LAST_ACK, 3))
            .episode()
            .unwrap();
        assert_eq!(ep.duration_ns(), Some(50));
        assert_eq!(t.open_count(), 0);
    }

    #[test]
    fn address_reuse_after_destroy_starts_a_new_episode() {
        let mut t = Tracker::new(16);
        t.on_record(&state(10, 7, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&state(20, 7, CLOSE_WAIT, LAST_ACK, 2));
        t.on_record(&other(Kind::Destroy, 30, 7));
        t.on_record(&state(40, 7, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&state(100, 7, CLOSE_WAIT, LAST_ACK, 2))
            .episode()
            .unwrap();
        assert_eq!(ep.duration_ns(), Some(60));
        assert_eq!(t.counters.close_wait_entered, 2);
    }

    #[test]
    fn entry_order_unlinks_anywhere_and_reuses_nodes() {
        let mut o = EntryOrder::new();
        let n: Vec<u32> = (1..=4).map(|sk| o.push(sk)).collect();
        o.unlink(n[1]); // middle
        assert_eq!(o.oldest(), Some(1));
        o.unlink(n[0]); // head
        assert_eq!(o.oldest(), Some(3));
        o.unlink(n[3]); // tail
        let again = o.push(5);
        assert!(n.contains(&again), "node reused");
        assert_eq!(o.len(), 2);
        o.unlink(n[2]);
        assert_eq!(o.oldest(), Some(5));
        o.unlink(again);
        assert_eq!((o.oldest(), o.len()), (None, 0));
        o.push(6);
        assert_eq!(o.oldest(), Some(6));
        assert_eq!(o.nodes.len(), 4);
    }

    #[test]
    fn eviction_follows_entry_order_across_exits_and_reentries() {
        let mut t = Tracker::new(3);
        for sk in 1..=3 {
            t.on_record(&state(sk * 10, sk, ESTABLISHED, CLOSE_WAIT, 1));
        }
        // 1 leaves, 2 enters again (now the newest): 3 is the oldest.
        t.on_record(&state(40, 1, CLOSE_WAIT, LAST_ACK, 1));
        t.on_record(&other(Kind::Destroy, 41, 2));
        t.on_record(&state(50, 2, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&state(60, 4, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&state(70, 5, ESTABLISHED, CLOSE_WAIT, 1));
        let mut open: Vec<u64> = t.open_sockets().map(|s| s.skaddr).collect();
        open.sort();
        assert_eq!(open, [2, 4, 5]);
        assert_eq!(t.counters.tracker_dropped, 1);
        // Churn below the bound leaves no pile of stale queue entries.
        t.on_record(&state(80, 5, CLOSE_WAIT, LAST_ACK, 1));
        for i in 0..10_000u64 {
            t.on_record(&state(100 + i, 1000 + i, ESTABLISHED, CLOSE_WAIT, 1));
            t.on_record(&state(100 + i, 1000 + i, CLOSE_WAIT, LAST_ACK, 1));
        }
        assert_eq!(t.order.len(), t.open_count());
        assert!(t.order.nodes.len() <= 4, "{}", t.order.nodes.len());
        assert_eq!(t.counters.tracker_dropped, 1);
    }

    /// At its bound every new socket evicts one: that costs O(1), not a
    /// scan of the open sockets (65,536 of them: 177 us per new socket
    /// with a scan, 11.6 s for this loop in a release build).
    #[test]
    fn eviction_at_the_bound_is_constant_time() {
        const BOUND: u64 = 65_536;
        let mut t = Tracker::new(BOUND as usize);
        for sk in 0..BOUND {
            t.on_record(&state(sk, sk, ESTABLISHED, CLOSE_WAIT, 1));
        }
        let start = std::time::Instant::now();
        for sk in BOUND..2 * BOUND {
            t.on_record(&state(sk, sk, ESTABLISHED, CLOSE_WAIT, 1));
        }
        let took = start.elapsed();
        eprintln!(
            "{BOUND} evictions at the bound: {took:?}, {:.0} ns per new socket",
            took.as_nanos() as f64 / BOUND as f64
        );
        assert_eq!(t.counters.tracker_dropped, BOUND);
        assert!(t.open_sockets().all(|s| s.skaddr >= BOUND));
        // Unoptimized test build on a shared machine: a wide margin, still
        // far below the scan's 11.6 s (optimized).
        assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    }

    /// An exit the kernel map knew (tracked): entered at `entered`.
    fn tracked_exit(ts: u64, sk: u64, new: u8, pid: u32, entered: u64) -> Record {
        Record {
            entered_ns: Some(entered),
            ..state(ts, sk, CLOSE_WAIT, new, pid)
        }
    }

    #[test]
    fn close_hook_tells_close_from_shutdown_and_follows_the_shut_socket() {
        let mut t = Tracker::new(16);
        t.set_close_hooked(true);
        // close(): tcp_close() comes before the exit it causes.
        t.on_record(&state(10, 1, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&Record {
            pid: 2,
            tid: 3,
            ..other(Kind::Close, 19, 1)
        });
        let ep = t
            .on_record(&tracked_exit(20, 1, LAST_ACK, 2, 10))
            .episode()
            .unwrap();
        assert_eq!((ep.closed_by, ep.close_ns), (ClosedBy::Close, Some(19)));
        assert!(ep.finished().closed_at.unwrap().ends_with('Z'));
        // shutdown(): the exit without tcp_close(); followed until it comes.
        t.on_record(&state(30, 2, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&tracked_exit(40, 2, LAST_ACK, 4, 30))
            .episode()
            .unwrap();
        assert_eq!((ep.closed_by, ep.close_ns), (ClosedBy::Shutdown, None));
        assert_eq!(ep.finished().closed_at, None);
        let shut: Vec<_> = t
            .shut_down()
            .map(|s| (s.skaddr, s.shutdown_ns, s.task.pid))
            .collect();
        assert_eq!(shut, vec![(2, 40, 4)]);
        t.on_record(&other(Kind::Close, 90, 2));
        assert_eq!(t.shut_down().count(), 0);
        // A shut socket destroyed (its close event lost) is forgotten too.
        t.on_record(&state(100, 3, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&tracked_exit(110, 3, LAST_ACK, 4, 100));
        t.on_record(&other(Kind::Destroy, 120, 3));
        assert_eq!(t.shut_down().count(), 0);
        // Abort inside close(), and a peer reset.
        t.on_record(&state(200, 4, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&other(Kind::Close, 210, 4));
        let ep = t
            .on_record(&tracked_exit(211, 4, CLOSE, 2, 200))
            .episode()
            .unwrap();
        assert_eq!((ep.ending, ep.closed_by), (Ending::Abort, ClosedBy::Close));
        t.on_record(&state(300, 5, ESTABLISHED, CLOSE_WAIT, 1));
        t.on_record(&other(Kind::RecvReset, 310, 5));
        let ep = t
            .on_record(&tracked_exit(311, 5, CLOSE, 0, 300))
            .episode()
            .unwrap();
        assert_eq!(ep.closed_by, ClosedBy::Reset);
        // An exit to CLOSE with neither: the kernel's doing (or a lost event).
        t.on_record(&state(400, 6, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&tracked_exit(410, 6, CLOSE, 0, 400))
            .episode()
            .unwrap();
        assert_eq!(ep.closed_by, ClosedBy::Unknown);
        assert_eq!(t.shut_down().count(), 0);
    }

    #[test]
    fn without_the_close_hook_or_tracking_nothing_is_claimed() {
        let mut t = Tracker::new(16);
        t.on_record(&state(10, 1, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&tracked_exit(20, 1, LAST_ACK, 2, 10))
            .episode()
            .unwrap();
        assert_eq!(ep.closed_by, ClosedBy::CloseOrShutdown);
        t.on_record(&state(30, 2, ESTABLISHED, CLOSE_WAIT, 1));
        let ep = t
            .on_record(&tracked_exit(40, 2, CLOSE, 2, 30))
            .episode()
            .unwrap();
        assert_eq!(ep.closed_by, ClosedBy::Close);
        assert_eq!(t.shut_down().count(), 0);
        // Hooked, but a socket the kernel map did not hold (entered before
        // attach): no tcp_close() event could come for it.
        t.set_close_hooked(true);
        let ep = t
            .on_record(&state(50, 3, CLOSE_WAIT, LAST_ACK, 2))
            .episode()
            .unwrap();
        assert_eq!(ep.closed_by, ClosedBy::CloseOrShutdown);
        assert_eq!(t.shut_down().count(), 0);
    }

    #[test]
    fn bound_drops_oldest() {
        let mut t = Tracker::new(2);
        for sk in 1..=3 {
            t.on_record(&state(sk * 10, sk, ESTABLISHED, CLOSE_WAIT, 1));
        }
        assert_eq!(t.open_count(), 2);
        assert_eq!(t.counters.tracker_dropped, 1);
        assert!(t.open_sockets().all(|s| s.skaddr != 1));
    }
}
