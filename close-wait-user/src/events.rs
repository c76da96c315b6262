//! Decoding of ring buffer records into [`Record`]s (length-checked, no
//! transmutes), and the async drain of the ring buffer.

use std::net::SocketAddr;

use close_wait_common::{flags, kind, Event, EVENT_SIZE};

use crate::addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record is {0} bytes, expected {EVENT_SIZE}")]
    Size(usize),
    #[error("unknown event kind {0}")]
    Kind(u32),
}

/// What happened, decoded from `Event::kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    State,
    RecvReset,
    Destroy,
    /// A process exec'd (sched:sched_process_exec): `pid_tgid` is its.
    Exec,
    /// tcp_close() (fentry or kprobe): the application gave the socket up.
    Close,
}

impl TryFrom<u32> for Kind {
    type Error = DecodeError;
    fn try_from(v: u32) -> Result<Self, DecodeError> {
        match v {
            kind::STATE => Ok(Kind::State),
            kind::RECV_RESET => Ok(Kind::RecvReset),
            kind::DESTROY => Ok(Kind::Destroy),
            kind::EXEC => Ok(Kind::Exec),
            kind::CLOSE => Ok(Kind::Close),
            other => Err(DecodeError::Kind(other)),
        }
    }
}

/// A task's name as the kernel keeps it: up to 16 bytes, NUL-padded.
/// Copied, never allocated, on the event path; made text at the edges.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm([u8; 16]);

impl Comm {
    pub fn from_raw(raw: [u8; 16]) -> Comm {
        Comm(raw)
    }

    /// The name's bytes, without the NUL padding.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        &self.0[..end]
    }

    /// The name as text (borrowed unless it is not UTF-8).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl From<&str> for Comm {
    /// The first 16 bytes of `s` (tests and fixtures).
    fn from(s: &str) -> Comm {
        let mut raw = [0u8; 16];
        let n = s.len().min(16);
        raw[..n].copy_from_slice(&s.as_bytes()[..n]);
        Comm(raw)
    }
}

impl AsRef<[u8]> for Comm {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One decoded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub ts_ns: u64,
    pub skaddr: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    /// Entry time into CLOSE_WAIT as the kernel map held it.
    pub entered_ns: Option<u64>,
    /// CLOSE_WAIT -> CLOSE right after a reset from the peer (the kernel saw
    /// tcp_receive_reset for this socket just before, on the same CPU).
    pub reset_received: bool,
    /// CLOSE_WAIT -> CLOSE with no reset received and the socket carrying a
    /// timer's error (`sk_err`): retransmission / user timeout or keepalive
    /// gave up on the peer (needs BTF on the kernel side).
    pub timed_out: bool,
    pub oldstate: u8,
    pub newstate: u8,
    /// Local and remote address (state events only).
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// Network namespace inode of the socket; 0 when unknown (no BTF).
    pub netns: u32,
}

/// The kernel's name of a TCP state number.
pub fn state_name(s: u8) -> &'static str {
    use close_wait_common::tcp_state::*;
    match s {
        ESTABLISHED => "ESTABLISHED",
        SYN_SENT => "SYN_SENT",
        SYN_RECV => "SYN_RECV",
        FIN_WAIT1 => "FIN_WAIT1",
        FIN_WAIT2 => "FIN_WAIT2",
        TIME_WAIT => "TIME_WAIT",
        CLOSE => "CLOSE",
        CLOSE_WAIT => "CLOSE_WAIT",
        LAST_ACK => "LAST_ACK",
        LISTEN => "LISTEN",
        CLOSING => "CLOSING",
        NEW_SYN_RECV => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// The `--events` line of a state change (`None` for other events):
/// `HH:MM:SS.mmm who local -> remote OLD -> NEW [time in CLOSE_WAIT]`, `at`
/// being the event's wall-clock time.
pub fn event_line(r: &Record, at: &str) -> Option<String> {
    if r.kind != Kind::State {
        return None;
    }
    let (l, rem) = (r.local?, r.remote?);
    let entering = r.newstate == close_wait_common::tcp_state::CLOSE_WAIT;
    // At entry, and at an exit caused by the peer's reset, the task on CPU
    // is the peer's or softirq's, never the owner, and at an exit by a
    // kernel timer it is whatever ran on the CPU: it is not printed as if
    // it were.
    let who = if entering || r.reset_received || r.timed_out {
        "-".to_string()
    } else {
        format!("{}/{}", r.pid, r.comm)
    };
    let waited = match (entering, r.entered_ns) {
        (false, Some(e)) => format!(
            "  in CLOSE_WAIT {}",
            crate::report::fmt_ms(r.ts_ns.saturating_sub(e) as f64 / 1e6)
        ),
        (false, None) => "  in CLOSE_WAIT since before attach".to_string(),
        _ => String::new(),
    };
    Some(format!(
        "{at} {who:<22} {l} -> {rem} {} -> {}{waited}",
        state_name(r.oldstate),
        state_name(r.newstate),
    ))
}

/// Turns a NUL-padded comm into a string.
pub fn comm_str(raw: &[u8; 16]) -> String {
    Comm(*raw).as_str().into_owned()
}

/// Decodes one ring buffer record. The size must be exact.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() != EVENT_SIZE {
        return Err(DecodeError::Size(bytes.len()));
    }
    // SAFETY: the length is checked above; Event is repr(C), made only of
    // integers and byte arrays, so every bit pattern is valid, and
    // read_unaligned copes with any alignment of the ring buffer slice.
    let ev: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    let kind = Kind::try_from(ev.kind)?;
    let (local, remote) = if kind == Kind::State {
        (
            Some(addr::from_raw(ev.family, &ev.saddr, ev.sport)),
            Some(addr::from_raw(ev.family, &ev.daddr, ev.dport)),
        )
    } else {
        (None, None)
    };
    Ok(Record {
        kind,
        ts_ns: ev.ts_ns,
        skaddr: ev.skaddr,
        pid: (ev.pid_tgid >> 32) as u32,
        tid: ev.pid_tgid as u32,
        comm: Comm(ev.comm),
        entered_ns: (ev.entered_ns != 0).then_some(ev.entered_ns),
        reset_received: ev.flags & flags::RESET_RECEIVED != 0,
        timed_out: ev.flags & flags::TIMED_OUT != 0,
        oldstate: ev.oldstate,
        newstate: ev.newstate,
        local,
        remote,
        netns: ev.netns,
    })
}

/// Serialises an event the way the kernel lays it out (tests and fixtures).
pub fn encode(ev: &Event) -> Vec<u8> {
    // SAFETY: Event is repr(C) plain data with explicit padding fields.
    let bytes =
        unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), EVENT_SIZE) };
    bytes.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use close_wait_common::{tcp_state, AF_INET, AF_INET6};

    fn sample() -> Event {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"python");
        Event {
            ts_ns: 123,
            skaddr: 0xffff_8880_1234_5678,
            pid_tgid: (42u64 << 32) | 43,
            entered_ns: 100,
            kind: kind::STATE,
            flags: flags::TRACKED,
            oldstate: tcp_state::CLOSE_WAIT,
            newstate: tcp_state::LAST_ACK,
            family: AF_INET,
            sport: 8080,
            dport: 40000,
            _pad0: 0,
            saddr,
            daddr,
            comm,
            _pad1: 0,
            netns: 4026531840,
        }
    }

    #[test]
    fn round_trip() {
        let r = decode(&encode(&sample())).unwrap();
        assert_eq!(r.kind, Kind::State);
        assert_eq!((r.pid, r.tid), (42, 43));
        assert_eq!(r.comm.as_str(), "python");
        assert_eq!(r.local.unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(r.remote.unwrap().to_string(), "127.0.0.2:40000");
        assert_eq!(r.entered_ns, Some(100));
        assert!(!r.reset_received);
        assert_eq!((r.oldstate, r.newstate), (8, 9));
        assert_eq!(r.netns, 4026531840);
    }

    #[test]
    fn ipv6() {
        let mut ev = sample();
        ev.family = AF_INET6;
        ev.saddr = std::net::Ipv6Addr::LOCALHOST.octets();
        let r = decode(&encode(&ev)).unwrap();
        assert_eq!(r.local.unwrap().to_string(), "[::1]:8080");
    }

    #[test]
    fn empty_truncated_oversized() {
        let good = encode(&sample());
        assert_eq!(decode(&[]), Err(DecodeError::Size(0)));
        assert_eq!(
            decode(&good[..EVENT_SIZE - 1]),
            Err(DecodeError::Size(EVENT_SIZE - 1))
        );
        let mut big = good.clone();
        big.push(0);
        assert_eq!(decode(&big), Err(DecodeError::Size(EVENT_SIZE + 1)));
    }

    #[test]
    fn reset_received_flag() {
        let mut ev = sample();
        ev.flags = flags::RESET_RECEIVED;
        let r = decode(&encode(&ev)).unwrap();
        assert!(r.reset_received);
    }

    #[test]
    fn timed_out_flag() {
        let mut ev = sample();
        let r = decode(&encode(&ev)).unwrap();
        assert!(!r.timed_out);
        ev.flags = flags::TRACKED | flags::TIMED_OUT;
        let r = decode(&encode(&ev)).unwrap();
        assert!(r.timed_out && !r.reset_received);
    }

    #[test]
    fn unknown_kind() {
        let mut ev = sample();
        ev.kind = 99;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::Kind(99)));
    }

    #[test]
    fn non_state_events_have_no_addresses() {
        let mut ev = sample();
        ev.kind = kind::DESTROY;
        let r = decode(&encode(&ev)).unwrap();
        assert_eq!(r.kind, Kind::Destroy);
        assert!(r.local.is_none() && r.remote.is_none());
    }
}
