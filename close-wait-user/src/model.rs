//! The report model: what `record` and `snapshot` found, typed, and
//! serialized by serde as the JSON report (schema [`SCHEMA`], documented in
//! the README). `record`, `snapshot`, `report` and the exporters all read
//! and write these types; text is made only at the edges (`report::render`,
//! the JSON file, the offline summary).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use crate::diagnosis::Diagnosis;
use crate::{histograms::HistSummary, sockets::Holder, threads::ThreadSummary};

/// Schema name written into, and required of, every JSON report.
pub const SCHEMA: &str = "close-wait.report.v1";

/// How a CLOSE_WAIT episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// CLOSE_WAIT -> LAST_ACK: the application called close() or
    /// shutdown(SHUT_WR).
    Graceful,
    /// CLOSE_WAIT -> CLOSE without a reset received first: close() with
    /// unread data, or SO_LINGER 0.
    Abort,
    /// The peer's reset ended it.
    PeerReset,
    /// CLOSE_WAIT -> CLOSE by a kernel timer, without a reset received and
    /// without close(): retransmissions or TCP_USER_TIMEOUT or keepalive gave
    /// up on a peer that no longer answers.
    Timeout,
    /// Still in CLOSE_WAIT.
    Open,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Graceful => "graceful",
            Ending::Abort => "abort",
            Ending::PeerReset => "peer_reset",
            Ending::Timeout => "timeout",
            Ending::Open => "open",
        }
    }
}

/// What ended a CLOSE_WAIT episode, as the hooks attached could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// tcp_close() ran (close() of the last descriptor, or exit) before the
    /// socket left CLOSE_WAIT.
    Close,
    /// It left CLOSE_WAIT for LAST_ACK without tcp_close(): shutdown(SHUT_WR),
    /// and the descriptor stayed open.
    Shutdown,
    /// The peer's reset.
    Reset,
    /// A kernel timer (retransmission / user timeout, keepalive) gave up on
    /// the peer: the socket carries the timer's error, no reset came.
    Timeout,
    /// Left for LAST_ACK with tcp_close() not hooked (tracepoints only):
    /// close() and shutdown() look the same.
    CloseOrShutdown,
    /// Left for CLOSE without a reset, without a timer's error and without
    /// tcp_close() although it is hooked: a lost event (or a timer, on a
    /// kernel without BTF, where the timer's error cannot be read).
    Unknown,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Close => "close",
            ClosedBy::Shutdown => "shutdown",
            ClosedBy::Reset => "reset",
            ClosedBy::Timeout => "timeout",
            ClosedBy::CloseOrShutdown => "close_or_shutdown",
            ClosedBy::Unknown => "unknown",
        }
    }
}

/// How a `record` run hooked tcp_close() (`--hooks`): the path that
/// attached, or none (tracepoints only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPath {
    Fentry,
    Kprobe,
    /// tcp_close() not hooked: close() and shutdown() are not told apart.
    Tracepoint,
}

impl HookPath {
    pub fn as_str(self) -> &'static str {
        match self {
            HookPath::Fentry => "fentry",
            HookPath::Kprobe => "kprobe",
            HookPath::Tracepoint => "tracepoint",
        }
    }

    /// Do tcp_close() events come on this path?
    pub fn hooks_close(self) -> bool {
        self != HookPath::Tracepoint
    }
}

/// A socket that left CLOSE_WAIT through shutdown() and whose tcp_close()
/// has not come past the threshold: its descriptor is still open (leaked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownLeak {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: u32,
    /// When shutdown() took it out of CLOSE_WAIT (RFC 3339).
    pub shutdown_at: String,
    /// How long ago, at the report.
    pub open_since_shutdown_ms: f64,
    /// The task that called shutdown().
    pub shutdown_by: Task,
}

/// The call that created a socket's descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Accept,
    Connect,
    /// Not traced, and no listener on the local port.
    Unknown,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Accept => "accept",
            Origin::Connect => "connect",
            Origin::Unknown => "unknown",
        }
    }
}

/// The other end of a group of stuck sockets: the peer host for accepted
/// sockets (clients come from many ports), the peer endpoint otherwise.
/// Serialized as its text (`10.0.0.7` or `10.0.0.7:5432`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Peer {
    Endpoint(SocketAddr),
    Host(IpAddr),
}

impl Peer {
    pub fn of(origin: Origin, remote: SocketAddr) -> Peer {
        match origin {
            Origin::Accept => Peer::Host(remote.ip()),
            Origin::Connect | Origin::Unknown => Peer::Endpoint(remote),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Endpoint(a) => a.fmt(f),
            Peer::Host(ip) => ip.fmt(f),
        }
    }
}

/// A task (process and thread) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub close_wait_entered: u64,
    pub closed_graceful: u64,
    pub closed_abort: u64,
    pub peer_reset: u64,
    /// CLOSE_WAIT -> CLOSE by a kernel timer (reports of older versions:
    /// absent, 0).
    #[serde(default)]
    pub closed_timeout: u64,
    /// Events lost: the sum of the three causes below.
    pub lost_events: u64,
    /// ... because the kernel's ring buffer was full.
    #[serde(default)]
    pub lost_ringbuf_full: u64,
    /// ... because the kernel skipped a run of one of our programs while
    /// another BPF program ran on that CPU (prog info `recursion_misses`),
    /// with the programs that missed runs.
    #[serde(default)]
    pub lost_skipped_runs: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_runs_by_program: Vec<SkippedRuns>,
    /// ... because a record could not be decoded.
    #[serde(default)]
    pub lost_malformed: u64,
    /// Sockets pushed out of the kernel's CLOSE_WAIT map (--max-sockets).
    pub map_evictions: u64,
    pub map_insert_failed: u64,
    pub fd_map_insert_failed: u64,
    pub stacks_failed: u64,
    /// Exits from CLOSE_WAIT of sockets that entered before the tracer.
    pub exits_without_entry: u64,
    /// Sockets in CLOSE_WAIT at the end.
    pub close_wait_now: u64,
    pub stuck: u64,
    /// Episodes left out of `episodes` (only the last ones are kept).
    pub episodes_dropped: u64,
    /// Sockets in CLOSE_WAIT that were not investigated: the final look
    /// was cut short (SIGINT, SIGTERM) at its time bound.
    #[serde(default)]
    pub uninvestigated: u64,
    /// Stuck sockets reported without their creation stack or their
    /// holders' threads: the final look's time for them ran out.
    #[serde(default)]
    pub stacks_not_read: u64,
}

impl Counters {
    /// Why events were lost, in words, one clause per cause present (empty
    /// when none were).
    pub fn lost_causes(&self) -> String {
        let mut parts = Vec::new();
        if self.lost_ringbuf_full > 0 {
            parts.push(format!(
                "{} because the ring buffer was full (raise --ringbuf-bytes)",
                self.lost_ringbuf_full
            ));
        }
        if self.lost_skipped_runs > 0 {
            let progs: Vec<String> = self
                .skipped_runs_by_program
                .iter()
                .map(|s| format!("{} x{}", s.program, s.runs))
                .collect();
            parts.push(format!(
                "{} because the kernel skipped runs of {} while another BPF program ran on the same CPU",
                self.lost_skipped_runs,
                if progs.is_empty() {
                    "our programs".to_string()
                } else {
                    progs.join(", ")
                }
            ));
        }
        if self.lost_malformed > 0 {
            parts.push(format!(
                "{} because the record could not be decoded",
                self.lost_malformed
            ));
        }
        parts.join("; ")
    }
}

/// Runs of one of our programs the kernel skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRuns {
    pub program: String,
    pub runs: u64,
}

/// A finished CLOSE_WAIT episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedEpisode {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Inode of the socket's network namespace (0: unknown, no BTF).
    pub netns: u32,
    pub ending: Ending,
    /// Null when the socket entered CLOSE_WAIT before the tracer attached.
    pub duration_ms: Option<f64>,
    pub since_attach: bool,
    /// The task that closed it (null for peer_reset and timeout: softirq
    /// or timer context, never the owner).
    pub closer: Option<Task>,
    /// What ended it (reports of older versions: absent).
    #[serde(default)]
    pub closed_by: Option<ClosedBy>,
    /// When tcp_close() ran (RFC 3339, nanoseconds), with tcp_close hooked
    /// and the close before the exit; null otherwise.
    #[serde(default)]
    pub closed_at: Option<String>,
}

/// The listener of a socket that was never accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub local: SocketAddr,
    pub holders: Vec<Holder>,
    pub accept_queue: u32,
    pub backlog: u32,
}

/// A socket still in CLOSE_WAIT longer than the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Inode of the network namespace the socket lives in.
    pub netns: u32,
    /// The container of the holder (of the listener, for a socket never
    /// accepted), from its cgroup path; null outside containers.
    pub container: Option<crate::cgroup::Container>,
    pub age_ms: u64,
    /// True when it was already in CLOSE_WAIT when the tracer attached
    /// (`age_ms` is then a lower bound).
    pub since_attach: bool,
    /// True when the age comes from the kernel's tcp_info (time since the
    /// last ACK received), not from a traced transition.
    pub age_estimated: bool,
    pub unread_bytes: u64,
    /// The application has not read the EOF either.
    pub eof_unread: bool,
    pub inode: u64,
    pub holders: Vec<Holder>,
    pub origin: Origin,
    /// The task whose accept()/connect() created the descriptor, when traced.
    pub origin_task: Option<Task>,
    pub stack: Vec<String>,
    pub stack_note: Option<String>,
    pub kernel_stack: Vec<String>,
    pub listener: Option<Listener>,
    pub diagnosis: Diagnosis,
    pub evidence: String,
    /// Index of its group in `groups`.
    pub group: usize,
}

/// Local ports of the ephemeral range held by a group of connected sockets
/// toward their peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPorts {
    /// Distinct local ports of the group inside the range.
    pub held: usize,
    /// `net.ipv4.ip_local_port_range`.
    pub range_first: u16,
    pub range_last: u16,
    pub peer: Peer,
}

impl LocalPorts {
    pub fn range_size(&self) -> u32 {
        u32::from(self.range_last) - u32::from(self.range_first) + 1
    }
}

/// Stuck sockets with the same diagnosis, process, creating stack and peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckGroup {
    pub diagnosis: Diagnosis,
    pub count: usize,
    pub pid: Option<u32>,
    pub comm: String,
    pub peer: Peer,
    pub oldest_age_ms: u64,
    pub unread_bytes: u64,
    pub stack: Vec<String>,
    pub threads: Option<ThreadSummary>,
    pub evidence: String,
    /// Connected sockets only: the ephemeral ports they hold.
    pub local_ports: Option<LocalPorts>,
    /// The command line of `pid`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
    /// When the group spans a process pool (same executable, parent and
    /// command line): every process of it, with its share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Pool>,
    /// Unaccepted sockets: what the processes that hold the listener (and
    /// could accept) are doing now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepting: Option<String>,
}

/// Processes with the same executable, parent and command line (prefork
/// workers) whose sockets have the same diagnosis, stack and peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub exe: String,
    pub parent: u32,
    /// Per process, by pid.
    pub processes: Vec<PoolMember>,
}

/// One process of a [`Pool`] and its sockets of the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolMember {
    pub pid: u32,
    pub comm: String,
    pub count: usize,
    pub oldest_age_ms: u64,
    pub unread_bytes: u64,
    /// What its threads are doing (the text of its thread summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<String>,
}

impl Pool {
    /// `6 apache2 workers, children of 1201`.
    pub fn text(&self, comm: &str) -> String {
        format!(
            "{} {comm} workers, children of {}",
            self.processes.len(),
            self.parent
        )
    }
}

/// Closed episodes slower than the threshold, by closer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedLate {
    pub comm: String,
    pub pid: u32,
    pub count: u64,
    pub max_ms: f64,
    pub examples: Vec<FinishedEpisode>,
}

/// One run of `record` or `snapshot`. A snapshot has no `hooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub started_at: String,
    pub ended_at: String,
    pub kernel: String,
    pub hooks: Vec<String>,
    /// How tcp_close() was hooked; absent from a snapshot (nothing was
    /// traced) and from files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_path: Option<HookPath>,
    pub threshold_ms: u64,
    pub counters: Counters,
    pub stuck: Vec<StuckSocket>,
    pub groups: Vec<StuckGroup>,
    pub closed_late: Vec<ClosedLate>,
    pub histograms: Vec<HistSummary>,
    pub episodes: Vec<FinishedEpisode>,
    /// Sockets shut down whose descriptor is still open past the threshold
    /// (only with tcp_close hooked).
    #[serde(default)]
    pub leaked_after_shutdown: Vec<ShutdownLeak>,
    /// What this report could not see (processes whose descriptors could
    /// not be read, so a socket shown without holder may have one). Absent
    /// from files written before it existed, and when there is nothing to say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report of this schema, `started_at` .. `ended_at`, on the
    /// running kernel.
    pub fn new(started_at: String, ended_at: String) -> Report {
        Report {
            schema: SCHEMA.to_owned(),
            started_at,
            ended_at,
            kernel: kernel_release(),
            hooks: Vec::new(),
            hook_path: None,
            threshold_ms: 0,
            counters: Counters::default(),
            stuck: Vec::new(),
            groups: Vec::new(),
            closed_late: Vec::new(),
            histograms: Vec::new(),
            episodes: Vec::new(),
            leaked_after_shutdown: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report with two stuck sockets (one held, one unaccepted), one
    /// group, one closed-late closer and two histograms.
    pub(crate) fn sample() -> Report {
        let holder = Holder {
            pid: 42,
            fd: 7,
            comm: "server".into(),
            cmdline: "server --port 8080".into(),
        };
        let stuck = |remote: &str, age_ms, holders: Vec<Holder>, d| StuckSocket {
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: remote.parse().unwrap(),
            netns: 4026531840,
            container: None,
            age_ms,
            since_attach: false,
            age_estimated: false,
            unread_bytes: 17,
            eof_unread: true,
            inode: if holders.is_empty() { 0 } else { 991 },
            holders,
            origin: Origin::Accept,
            origin_task: None,
            stack: vec!["accept4".into(), "main".into()],
            stack_note: None,
            kernel_stack: Vec::new(),
            listener: None,
            diagnosis: d,
            evidence: "17 bytes arrived that were never read".into(),
            group: 0,
        };
        let episode = FinishedEpisode {
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "[::1]:40010".parse().unwrap(),
            netns: 4026531840,
            ending: Ending::Graceful,
            duration_ms: Some(6000.5),
            since_attach: false,
            closer: Some(Task {
                pid: 42,
                tid: 43,
                comm: "server".into(),
            }),
            closed_by: Some(ClosedBy::Close),
            closed_at: Some("2026-01-01T00:00:06.000000500Z".into()),
        };
        let hist = |tag: &str| HistSummary {
            tag: tag.into(),
            count: 2,
            min_us: 5,
            p50_us: 5,
            p90_us: 9,
            p99_us: 9,
            p999_us: 9,
            max_us: 9,
            mean_us: 7.0,
        };
        Report {
            hooks: vec!["sock:inet_sock_set_state".into()],
            hook_path: Some(HookPath::Tracepoint),
            threshold_ms: 5000,
            counters: Counters {
                close_wait_entered: 7,
                stuck: 2,
                ..Counters::default()
            },
            stuck: vec![
                stuck(
                    "127.0.0.1:40000",
                    61_000,
                    vec![holder],
                    Diagnosis::NeverRead,
                ),
                stuck("127.0.0.1:40002", 5_000, Vec::new(), Diagnosis::Unaccepted),
            ],
            groups: vec![StuckGroup {
                diagnosis: Diagnosis::NeverRead,
                count: 1,
                pid: Some(42),
                comm: "server".into(),
                peer: Peer::Host("127.0.0.1".parse().unwrap()),
                oldest_age_ms: 61_000,
                unread_bytes: 17,
                stack: vec!["accept4".into()],
                threads: None,
                evidence: "17 bytes arrived that were never read".into(),
                local_ports: None,
                cmdline: String::new(),
                pool: None,
                accepting: None,
            }],
            closed_late: vec![ClosedLate {
                comm: "server".into(),
                pid: 42,
                count: 1,
                max_ms: 6000.5,
                examples: vec![episode.clone()],
            }],
            histograms: vec![hist("port:80"), hist("all")],
            episodes: vec![episode],
            ..Report::new("t0".into(), "t1".into())
        }
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = sample();
        let text = serde_json::to_string_pretty(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn enums_and_addresses_serialize_as_their_text() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["stuck"][0]["origin"], "accept");
        assert_eq!(v["stuck"][0]["diagnosis"], "never-read");
        assert_eq!(v["stuck"][1]["diagnosis"], "unaccepted");
        assert_eq!(v["stuck"][0]["remote"], "127.0.0.1:40000");
        assert_eq!(v["episodes"][0]["ending"], "graceful");
        assert_eq!(v["episodes"][0]["remote"], "[::1]:40010");
        assert_eq!(v["groups"][0]["peer"], "127.0.0.1");
        let endpoint = Peer::of(Origin::Connect, "10.0.0.7:5432".parse().unwrap());
        assert_eq!(serde_json::to_value(endpoint).unwrap(), "10.0.0.7:5432");
        let back: Peer = serde_json::from_str("\"10.0.0.7:5432\"").unwrap();
        assert_eq!(back, endpoint);
        let host: Peer = serde_json::from_str("\"::1\"").unwrap();
        assert_eq!(host, Peer::Host("::1".parse().unwrap()));
    }

    #[test]
    fn lost_events_name_their_causes() {
        let mut c = Counters::default();
        assert_eq!(c.lost_causes(), "");
        c.lost_skipped_runs = 2;
        c.skipped_runs_by_program = vec![SkippedRuns {
            program: "inet_sock_set_state_raw".into(),
            runs: 2,
        }];
        let t = c.lost_causes();
        assert!(
            t.contains("2 because the kernel skipped runs of inet_sock_set_state_raw x2"),
            "{t}"
        );
        assert!(!t.contains("--ringbuf-bytes"), "{t}");
        c.lost_ringbuf_full = 5;
        let t = c.lost_causes();
        assert!(
            t.starts_with("5 because the ring buffer was full (raise --ringbuf-bytes); 2 because"),
            "{t}"
        );
        // absent in reports of older versions
        let old: Counters = serde_json::from_value(serde_json::json!({
            "close_wait_entered": 1, "closed_graceful": 1, "closed_abort": 0, "peer_reset": 0,
            "lost_events": 0, "map_evictions": 0, "map_insert_failed": 0, "fd_map_insert_failed": 0,
            "stacks_failed": 0, "exits_without_entry": 0, "close_wait_now": 0, "stuck": 0,
            "episodes_dropped": 0
        }))
        .unwrap();
        assert!(old.skipped_runs_by_program.is_empty() && old.lost_skipped_runs == 0);
    }
}
