//! The TCP socket table and who holds each socket, as `ss -tanp` shows it.
//!
//! The table comes from NETLINK_SOCK_DIAG (which also gives `tcp_info` and,
//! for listeners, the backlog limit) and falls back to `/proc/net/tcp{,6}`
//! when netlink is unavailable. Holders come from one pass over `/proc/*/fd`.
//!
//! Two facts about the numbers, measured on this kernel:
//! - `rx_queue` of a connected socket is `rcv_nxt - copied_seq`, and a FIN
//!   takes one sequence number: a CLOSE_WAIT socket whose owner has not yet
//!   read EOF shows one more than its unread data bytes (see
//!   [`TcpSocket::unread_data_bytes`]).
//! - a CLOSE_WAIT socket with inode 0 still sits in its listener's accept
//!   queue: it was never accepted, so no process holds it.
//!
//! Parsing is pure ([`parse_diag_messages`], [`parse_proc_net_tcp`]); the I/O
//! around it is thin.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::addr::unmap;

/// Kernel TCP state number of CLOSE_WAIT.
pub const TCP_CLOSE_WAIT: u8 = 8;
/// Kernel TCP state number of LISTEN.
pub const TCP_LISTEN: u8 = 10;

/// One TCP socket, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state (8 = CLOSE_WAIT, 10 = LISTEN).
    pub state: u8,
    /// Socket inode; 0 for a socket no file refers to (not yet accepted, orphaned).
    pub inode: u64,
    /// Connected: `rcv_nxt - copied_seq` (unread bytes, plus one for an
    /// unread FIN). LISTEN: current accept-queue length.
    pub rx_queue: u32,
    /// Connected: unacknowledged bytes sent. LISTEN via sock_diag: the
    /// backlog limit (0 when read from /proc/net/tcp, which does not show it).
    pub tx_queue: u32,
    pub uid: u32,
    /// Milliseconds since data was last received (sock_diag only).
    pub last_data_recv_ms: Option<u32>,
    /// Milliseconds since an ACK was last received (sock_diag only).
    pub last_ack_recv_ms: Option<u32>,
    /// Inode of the network namespace the socket lives in (0: unknown).
    /// The same 4-tuple can exist in two namespaces.
    pub netns: u32,
}

impl TcpSocket {
    /// Data bytes received and never read by the owner. In CLOSE_WAIT the
    /// FIN is counted in `rx_queue` until the owner reads EOF, so a CLOSE_WAIT
    /// socket with `rx_queue == 1` has had everything but the EOF read, and
    /// `rx_queue == 0` means the owner saw EOF and still did not close.
    /// `None` for states where the queue means something else (LISTEN) or the
    /// FIN accounting is not known (anything but ESTABLISHED and CLOSE_WAIT).
    pub fn unread_data_bytes(&self) -> Option<u32> {
        match self.state {
            1 => Some(self.rx_queue),
            TCP_CLOSE_WAIT => Some(self.rx_queue.saturating_sub(1)),
            _ => None,
        }
    }

    /// True when a CLOSE_WAIT socket's owner has not read the EOF yet.
    pub fn eof_unread(&self) -> bool {
        self.state == TCP_CLOSE_WAIT && self.rx_queue > 0
    }
}

/// Why the socket table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    #[error("netlink sock_diag {op} failed")]
    NetlinkIo {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "the kernel refused the sock_diag dump: {} (is the tcp_diag module available?)",
        io::Error::from_raw_os_error(*errno)
    )]
    NetlinkRefused { errno: i32 },
    #[error(
        "sock_diag reply truncated: {what} at offset {offset} needs {need} bytes, {have} left"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("sock_diag reply malformed at offset {offset}: {what}")]
    Malformed { what: &'static str, offset: usize },
    #[error("cannot read {path}")]
    ProcRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{file} line {line}: cannot parse {field} from {value:?}")]
    ProcParse {
        file: &'static str,
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("cannot list TCP sockets: sock_diag failed ({netlink}) and so did /proc ({proc})")]
    Unavailable {
        netlink: Box<SocketsError>,
        proc: Box<SocketsError>,
    },
}

/// Lists TCP sockets (IPv4 and IPv6) whose state is in `states` (an empty
/// slice means every state) in every network namespace of the host, each
/// tagged with its namespace's inode. Our own namespace failing is an
/// error; another one that cannot be read is skipped (logged).
pub fn list_tcp(states: &[u8]) -> Result<Vec<TcpSocket>, SocketsError> {
    let here = crate::netns::current().unwrap_or(0);
    let mut out = list_tcp_here(states)?;
    tag(&mut out, here);
    let others: Vec<crate::netns::Netns> = crate::netns::list()
        .into_iter()
        .filter(|n| n.inode != here)
        .collect();
    if !others.is_empty() {
        out.extend(list_tcp_in(others, states));
    }
    Ok(out)
}

fn tag(socks: &mut [TcpSocket], netns: u32) {
    for s in socks {
        s.netns = netns;
    }
}

/// The sockets of other namespaces, read from one helper thread that
/// enters each in turn (setns changes only that thread's namespace) and
/// dumps it with sock_diag; when entering fails, the namespace's
/// `/proc/PID/net/tcp{,6}` of a process inside it is read instead.
pub fn list_tcp_in(namespaces: Vec<crate::netns::Netns>, states: &[u8]) -> Vec<TcpSocket> {
    let states = states.to_vec();
    let worker = std::thread::Builder::new()
        .name("netns-dump".into())
        .spawn(move || {
            let mut out = Vec::new();
            for ns in &namespaces {
                let got = match crate::netns::enter(&ns.path) {
                    Ok(()) => list_tcp_here(&states),
                    Err(e) => match ns.pid {
                        Some(pid) => {
                            log::debug!(
                                "setns {}: {e}; reading /proc/{pid}/net",
                                ns.path.display()
                            );
                            list_tcp_proc_at(
                                &Path::new("/proc").join(pid.to_string()).join("net"),
                                &states,
                            )
                        }
                        None => Err(SocketsError::ProcRead {
                            path: ns.path.clone(),
                            source: e,
                        }),
                    },
                };
                match got {
                    Ok(mut v) => {
                        tag(&mut v, ns.inode);
                        out.extend(v);
                    }
                    Err(e) => log::debug!("network namespace {} skipped: {e}", ns.inode),
                }
            }
            out
        });
    match worker.map(|h| h.join()) {
        Ok(Ok(v)) => v,
        _ => {
            log::warn!("the socket tables of other network namespaces could not be read");
            Vec::new()
        }
    }
}

/// Lists the TCP sockets of the calling thread's network namespace only,
/// untagged (netns 0). Uses sock_diag, falls back to /proc/net/tcp{,6}.
pub fn list_tcp_here(states: &[u8]) -> Result<Vec<TcpSocket>, SocketsError> {
    match list_tcp_diag(states) {
        Ok(v) => Ok(v),
        Err(netlink) => {
            log::debug!("sock_diag unavailable, reading /proc/net/tcp instead: {netlink}");
            list_tcp_proc(states).map_err(|proc| SocketsError::Unavailable {
                netlink: Box::new(netlink),
                proc: Box::new(proc),
            })
        }
    }
}

fn state_wanted(states: &[u8], state: u8) -> bool {
    states.is_empty() || states.contains(&state)
}

// ---------------------------------------------------------------------------
// sock_diag

const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x100 | 0x200; // NLM_F_ROOT | NLM_F_MATCH
const INET_DIAG_INFO: u16 = 2;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states, sockid (48).
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// struct inet_diag_msg: 4 bytes, sockid (48), five u32.
const INET_DIAG_MSG_LEN: usize = 72;
/// Offsets in struct tcp_info (stable uapi).
const TCPI_LAST_DATA_RECV: usize = 52;
const TCPI_LAST_ACK_RECV: usize = 56;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bitmask of TCP states for `idiag_states`; empty means all.
fn states_mask(states: &[u8]) -> u32 {
    if states.is_empty() {
        return u32::MAX;
    }
    states
        .iter()
        .filter(|s| **s < 32)
        .fold(0u32, |m, s| m | (1u32 << s))
}

/// Builds the NETLINK_SOCK_DIAG dump request for one address family,
/// asking for `tcp_info` (INET_DIAG_INFO).
fn build_diag_request(
    family: u8,
    states: u32,
    seq: u32,
) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    let mut b = [0u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN];
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel assigns our port id.
    let r = &mut b[NLMSG_HDRLEN..];
    r[0] = family;
    r[1] = libc::IPPROTO_TCP as u8;
    r[2] = 1 << (INET_DIAG_INFO - 1);
    r[4..8].copy_from_slice(&states.to_ne_bytes());
    // The socket id stays zero: a dump matches every socket.
    b
}

/// Reads `N` bytes at `off` of `buf`, after checking they are there.
fn take<const N: usize>(
    buf: &[u8],
    off: usize,
    what: &'static str,
    base: usize,
) -> Result<[u8; N], SocketsError> {
    buf.get(off..off + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(SocketsError::Truncated {
            what,
            offset: base + off,
            need: N,
            have: buf.len().saturating_sub(off),
        })
}

/// Whether a batch of netlink messages ended the dump.
#[derive(Debug, PartialEq, Eq)]
enum Batch {
    More,
    Done,
}

/// Parses the sock_diag reply messages in `buf` (one or more netlink
/// messages, as a `recv` returns them). Stops at NLMSG_DONE; an NLMSG_ERROR
/// carrying an error becomes [`SocketsError::NetlinkRefused`]. Every length is
/// checked before it is used.
pub fn parse_diag_messages(buf: &[u8]) -> Result<Vec<TcpSocket>, SocketsError> {
    let mut out = Vec::new();
    parse_diag_batch(buf, &mut out)?;
    Ok(out)
}

fn parse_diag_batch(buf: &[u8], out: &mut Vec<TcpSocket>) -> Result<Batch, SocketsError> {
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        let hdr = take::<NLMSG_HDRLEN>(rest, 0, "netlink header", off)?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        if len < NLMSG_HDRLEN {
            return Err(SocketsError::Malformed {
                what: "nlmsg_len shorter than the netlink header",
                offset: off,
            });
        }
        if len > rest.len() {
            return Err(SocketsError::Truncated {
                what: "netlink message",
                offset: off,
                need: len,
                have: rest.len(),
            });
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        let poff = off + NLMSG_HDRLEN;
        match ty {
            NLMSG_DONE => {
                // A dump may end with a negative errno in the DONE payload.
                if payload.len() >= 4 {
                    let code = i32::from_ne_bytes(take::<4>(payload, 0, "NLMSG_DONE code", poff)?);
                    if code < 0 {
                        return Err(SocketsError::NetlinkRefused { errno: -code });
                    }
                }
                return Ok(Batch::Done);
            }
            NLMSG_ERROR => {
                let code = i32::from_ne_bytes(take::<4>(payload, 0, "NLMSG_ERROR code", poff)?);
                if code != 0 {
                    return Err(SocketsError::NetlinkRefused {
                        errno: code.saturating_neg(),
                    });
                }
                // code 0 is an acknowledgement: nothing to report.
            }
            NLMSG_OVERRUN => {
                return Err(SocketsError::Malformed {
                    what: "netlink overrun: the kernel dropped part of the reply",
                    offset: off,
                })
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(s) = parse_diag_msg(payload, poff)? {
                    out.push(s);
                }
            }
            NLMSG_NOOP => {}
            _ => {} // Unknown message types carry nothing we use.
        }
        off += align4(len);
    }
    Ok(Batch::More)
}

/// Parses one struct inet_diag_msg and its attributes. Returns `None` for
/// an address family other than AF_INET / AF_INET6.
fn parse_diag_msg(p: &[u8], base: usize) -> Result<Option<TcpSocket>, SocketsError> {
    let head = take::<INET_DIAG_MSG_LEN>(p, 0, "inet_diag_msg", base)?;
    let family = head[0];
    let state = head[1];
    let sport = u16::from_be_bytes([head[4], head[5]]);
    let dport = u16::from_be_bytes([head[6], head[7]]);
    let ip = |at: usize| -> Option<IpAddr> {
        match family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                head[at],
                head[at + 1],
                head[at + 2],
                head[at + 3],
            ))),
            AF_INET6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&head[at..at + 16]);
                Some(unmap(IpAddr::V6(Ipv6Addr::from(o))))
            }
            _ => None,
        }
    };
    let (Some(src), Some(dst)) = (ip(8), ip(24)) else {
        return Ok(None);
    };
    let u32_at =
        |at: usize| u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let mut sock = TcpSocket {
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        state,
        rx_queue: u32_at(56),
        tx_queue: u32_at(60),
        uid: u32_at(64),
        inode: u64::from(u32_at(68)),
        last_data_recv_ms: None,
        last_ack_recv_ms: None,
        netns: 0,
    };

    let mut off = align4(INET_DIAG_MSG_LEN);
    while off < p.len() {
        let rta_len = u16::from_ne_bytes(take::<2>(p, off, "rtattr header", base)?) as usize;
        let rta_type = u16::from_ne_bytes(take::<2>(p, off + 2, "rtattr header", base)?) & 0x3fff;
        if rta_len < 4 {
            return Err(SocketsError::Malformed {
                what: "rta_len shorter than the attribute header",
                offset: base + off,
            });
        }
        if off + rta_len > p.len() {
            return Err(SocketsError::Truncated {
                what: "rtattr",
                offset: base + off,
                need: rta_len,
                have: p.len() - off,
            });
        }
        let data = &p[off + 4..off + rta_len];
        // Listeners get a tcp_info whose times are zero: leave them None.
        if rta_type == INET_DIAG_INFO && state != TCP_LISTEN {
            let field = |at: usize| {
                data.get(at..at + 4)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            };
            sock.last_data_recv_ms = field(TCPI_LAST_DATA_RECV);
            sock.last_ack_recv_ms = field(TCPI_LAST_ACK_RECV);
        }
        off += align4(rta_len);
    }
    Ok(Some(sock))
}

/// Lists TCP sockets through NETLINK_SOCK_DIAG only (no fallback).
pub fn list_tcp_diag(states: &[u8]) -> Result<Vec<TcpSocket>, SocketsError> {
    let sock = netlink_socket()?;
    let mask = states_mask(states);
    let mut out = Vec::new();
    for (seq, family) in [(1u32, AF_INET), (2u32, AF_INET6)] {
        diag_dump(&sock, &build_diag_request(family, mask, seq), &mut out)?;
    }
    // The mask already filtered; states >= 32 cannot be in it, drop them too.
    out.retain(|s| state_wanted(states, s.state));
    Ok(out)
}

fn netlink_socket() -> Result<OwnedFd, SocketsError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(SocketsError::NetlinkIo {
            op: "socket",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // A dump normally answers at once; do not hang forever if it does not.
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: tv is a valid timeval and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(SocketsError::NetlinkIo {
            op: "setsockopt(SO_RCVTIMEO)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(sock)
}

fn diag_dump(sock: &OwnedFd, req: &[u8], out: &mut Vec<TcpSocket>) -> Result<(), SocketsError> {
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut dst: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    dst.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: req and dst are valid for the lengths passed.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&dst as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(SocketsError::NetlinkIo {
            op: "sendto",
            source: io::Error::last_os_error(),
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // MSG_TRUNC makes recv return the datagram's full length, so a reply
        // larger than the buffer is detected instead of silently cut.
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SocketsError::NetlinkIo {
                op: "recv",
                source: e,
            });
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(SocketsError::Truncated {
                what: "netlink datagram larger than the receive buffer",
                offset: 0,
                need: n,
                have: buf.len(),
            });
        }
        if n == 0 {
            return Err(SocketsError::Malformed {
                what: "empty netlink datagram before NLMSG_DONE",
                offset: 0,
            });
        }
        if parse_diag_batch(&buf[..n], out)? == Batch::Done {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// /proc/net/tcp{,6}

/// Lists TCP sockets from /proc/net/tcp and /proc/net/tcp6 (no `tcp_info`;
/// a listener's backlog limit is not shown there, so its `tx_queue` is 0).
pub fn list_tcp_proc(states: &[u8]) -> Result<Vec<TcpSocket>, SocketsError> {
    // thread-self: the namespace of this thread (it may have entered one).
    list_tcp_proc_at(Path::new("/proc/thread-self/net"), states)
}

/// [`list_tcp_proc`] from `dir`/tcp and `dir`/tcp6 (e.g. `/proc/PID/net`,
/// which shows the namespace of process PID).
pub fn list_tcp_proc_at(dir: &Path, states: &[u8]) -> Result<Vec<TcpSocket>, SocketsError> {
    let mut out = Vec::new();
    for (name, v6) in [("tcp", false), ("tcp6", true)] {
        let path = dir.join(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            // A kernel without IPv6 has no tcp6 file: that is not an error.
            Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(SocketsError::ProcRead { path, source }),
        };
        out.extend(
            parse_proc_net_tcp(&text, v6)?
                .into_iter()
                .filter(|s| state_wanted(states, s.state)),
        );
    }
    Ok(out)
}

/// Parses the text of /proc/net/tcp (`v6 == false`) or /proc/net/tcp6.
/// Addresses are the kernel's hex dump of the in-memory (network order)
/// words printed as host-order integers, so this is correct for the
/// machine it runs on.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Result<Vec<TcpSocket>, SocketsError> {
    let file = if v6 {
        "/proc/net/tcp6"
    } else {
        "/proc/net/tcp"
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0] == "sl" {
            continue;
        }
        let bad = |field: &'static str, value: &str| SocketsError::ProcParse {
            file,
            line: line_no,
            field,
            value: value.to_owned(),
        };
        if f.len() < 10 {
            return Err(bad("the 10 leading columns", line));
        }
        let local = parse_hex_sockaddr(f[1], v6).ok_or_else(|| bad("local_address", f[1]))?;
        let remote = parse_hex_sockaddr(f[2], v6).ok_or_else(|| bad("rem_address", f[2]))?;
        let state = u8::from_str_radix(f[3], 16).map_err(|_| bad("st", f[3]))?;
        let (tx, rx) = f[4]
            .split_once(':')
            .ok_or_else(|| bad("tx_queue:rx_queue", f[4]))?;
        let tx_queue = u32::from_str_radix(tx, 16).map_err(|_| bad("tx_queue", tx))?;
        let rx_queue = u32::from_str_radix(rx, 16).map_err(|_| bad("rx_queue", rx))?;
        let uid = f[7].parse().map_err(|_| bad("uid", f[7]))?;
        let inode = f[9].parse().map_err(|_| bad("inode", f[9]))?;
        out.push(TcpSocket {
            local,
            remote,
            state,
            inode,
            rx_queue,
            tx_queue,
            uid,
            last_data_recv_ms: None,
            last_ack_recv_ms: None,
            netns: 0,
        });
    }
    Ok(out)
}

/// `0100007F:1F90` -> 127.0.0.1:8080; 32 hex digits for IPv6.
fn parse_hex_sockaddr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = |n: usize| -> Option<Vec<u8>> {
        if addr.len() != n * 8 || !addr.is_ascii() {
            return None;
        }
        let mut bytes = Vec::with_capacity(n * 4);
        for i in 0..n {
            let w = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
            bytes.extend_from_slice(&w.to_ne_bytes());
        }
        Some(bytes)
    };
    let ip = if v6 {
        let b: [u8; 16] = words(4)?.try_into().ok()?;
        unmap(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        let b: [u8; 4] = words(1)?.try_into().ok()?;
        IpAddr::V4(Ipv4Addr::from(b))
    };
    Some(SocketAddr::new(ip, port))
}

// ---------------------------------------------------------------------------
// Holders

/// A process holding a socket through a file descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub fd: u32,
    pub comm: String,
    pub cmdline: String,
}

/// Who holds each of `inodes`, from one pass over /proc/*/fd. Processes that
/// exit during the scan or cannot be read are skipped. Holders are sorted by
/// (pid, fd); inodes nobody holds are absent from the map.
pub fn socket_holders(inodes: &HashSet<u64>) -> HashMap<u64, Vec<Holder>> {
    socket_holders_in(Path::new("/proc"), inodes)
}

/// [`socket_holders`] within `budget`: None when it ran out before every
/// process was looked at (a partial answer would name wrong holders).
pub fn socket_holders_within(
    inodes: &HashSet<u64>,
    budget: &crate::budget::Budget,
) -> Option<HashMap<u64, Vec<Holder>>> {
    holders_under(Path::new("/proc"), inodes, budget)
}

/// [`socket_holders`] over a proc tree mounted at `proc_root`.
pub fn socket_holders_in(proc_root: &Path, inodes: &HashSet<u64>) -> HashMap<u64, Vec<Holder>> {
    holders_under(proc_root, inodes, &crate::budget::Budget::unlimited()).unwrap_or_default()
}

fn holders_under(
    proc_root: &Path,
    inodes: &HashSet<u64>,
    budget: &crate::budget::Budget,
) -> Option<HashMap<u64, Vec<Holder>>> {
    let mut found: HashMap<u64, Vec<Holder>> = HashMap::new();
    if inodes.is_empty() {
        return Some(found);
    }
    let mut last_pid = 0;
    for (pid, fd, target) in fd_links(proc_root) {
        if pid != last_pid {
            last_pid = pid;
            if budget.spent() {
                return None;
            }
        }
        let Some(inode) = parse_socket_link(&target) else {
            continue;
        };
        if !inodes.contains(&inode) {
            continue;
        }
        let pdir = proc_root.join(pid.to_string());
        found.entry(inode).or_default().push(Holder {
            pid,
            fd,
            comm: read_comm(&pdir),
            cmdline: read_cmdline(&pdir),
        });
    }
    for v in found.values_mut() {
        v.sort_by_key(|h| (h.pid, h.fd));
    }
    Some(found)
}

/// Every (pid, fd, link target) under `proc_root`, skipping what cannot be
/// read. Shared with the thread module's pipe-reader search.
pub(crate) fn fd_links(proc_root: &Path) -> impl Iterator<Item = (u32, u32, String)> + '_ {
    let pids = fs::read_dir(proc_root).into_iter().flatten().flatten();
    pids.filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(move |pid| {
            let fd_dir = proc_root.join(pid.to_string()).join("fd");
            fs::read_dir(&fd_dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(move |e| {
                    let fd = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let target = fs::read_link(e.path()).ok()?;
                    Some((pid, fd, target.to_string_lossy().into_owned()))
                })
                .collect::<Vec<_>>()
        })
}

/// `socket:[12345]` -> 12345.
pub fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn read_comm(pdir: &Path) -> String {
    fs::read_to_string(pdir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default()
}

fn read_cmdline(pdir: &Path) -> String {
    fs::read(pdir.join("cmdline"))
        .map(|b| parse_cmdline(&b))
        .unwrap_or_default()
}

/// NUL-separated arguments -> one line, arguments joined by spaces.
pub fn parse_cmdline(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the report says about a holding process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// Arguments joined by spaces (empty for kernel threads).
    pub cmdline: String,
    /// cgroup v2 path (`/system.slice/x.service`); empty without cgroup v2.
    pub cgroup: String,
}

/// Facts about a live process; `None` when it is gone or unreadable.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    process_info_in(Path::new("/proc"), pid)
}

/// [`process_info`] over a proc tree mounted at `proc_root`.
pub fn process_info_in(proc_root: &Path, pid: u32) -> Option<ProcessInfo> {
    let pdir = proc_root.join(pid.to_string());
    let path = pdir.join("stat");
    let text = crate::logged::read_to_string(&path)?;
    let stat = crate::logged::ok(crate::threads::parse_stat(&text), || {
        path.display().to_string()
    })?;
    let cgroup = fs::read_to_string(pdir.join("cgroup"))
        .ok()
        .and_then(|t| parse_cgroup_v2(&t))
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        ppid: stat.ppid,
        comm: stat.comm,
        cmdline: read_cmdline(&pdir),
        cgroup,
    })
}

/// The cgroup v2 path from /proc/PID/cgroup (the `0::/path` line).
pub fn parse_cgroup_v2(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::io::Read as _;
    use std::net::TcpListener;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    // ---- hand-built sock_diag replies ----

    fn nlmsg(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + payload.len()) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    struct Msg {
        family: u8,
        state: u8,
        src: [u8; 16],
        dst: [u8; 16],
        sport: u16,
        dport: u16,
        rq: u32,
        wq: u32,
        uid: u32,
        inode: u32,
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&a);
        o
    }

    fn diag_msg(m: &Msg, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut p = vec![m.family, m.state, 0, 0];
        p.extend_from_slice(&m.sport.to_be_bytes());
        p.extend_from_slice(&m.dport.to_be_bytes());
        p.extend_from_slice(&m.src);
        p.extend_from_slice(&m.dst);
        p.extend_from_slice(&[0u8; 12]); // if + cookie
        for v in [0, m.rq, m.wq, m.uid, m.inode] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(p.len(), INET_DIAG_MSG_LEN);
        for (ty, data) in attrs {
            let len = (4 + data.len()) as u16;
            p.extend_from_slice(&len.to_ne_bytes());
            p.extend_from_slice(&ty.to_ne_bytes());
            p.extend_from_slice(data);
            while p.len() % 4 != 0 {
                p.push(0);
            }
        }
        p
    }

    fn tcp_info(last_data_recv: u32, last_ack_recv: u32) -> Vec<u8> {
        let mut t = vec![0u8; 232];
        t[TCPI_LAST_DATA_RECV..TCPI_LAST_DATA_RECV + 4]
            .copy_from_slice(&last_data_recv.to_ne_bytes());
        t[TCPI_LAST_ACK_RECV..TCPI_LAST_ACK_RECV + 4].copy_from_slice(&last_ack_recv.to_ne_bytes());
        t
    }

    fn close_wait_v4() -> Msg {
        Msg {
            family: AF_INET,
            state: 8,
            src: v4([127, 0, 0, 1]),
            dst: v4([127, 0, 0, 2]),
            sport: 8080,
            dport: 40000,
            rq: 19,
            wq: 0,
            uid: 1000,
            inode: 4242,
        }
    }

    fn done() -> Vec<u8> {
        nlmsg(NLMSG_DONE, &0i32.to_ne_bytes())
    }

    #[test]
    fn diag_v4_close_wait_with_tcp_info() {
        let mut buf = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(
                &close_wait_v4(),
                &[(1, vec![0; 16]), (INET_DIAG_INFO, tcp_info(1500, 1400))],
            ),
        );
        buf.extend(done());
        let mut out = Vec::new();
        assert_eq!(parse_diag_batch(&buf, &mut out).unwrap(), Batch::Done);
        assert_eq!(
            out,
            vec![TcpSocket {
                local: "127.0.0.1:8080".parse().unwrap(),
                remote: "127.0.0.2:40000".parse().unwrap(),
                state: 8,
                inode: 4242,
                rx_queue: 19,
                tx_queue: 0,
                uid: 1000,
                last_data_recv_ms: Some(1500),
                last_ack_recv_ms: Some(1400),
                netns: 0,
            }]
        );
        assert_eq!(out[0].unread_data_bytes(), Some(18));
        assert!(out[0].eof_unread());
    }

    #[test]
    fn diag_v6_mapped_is_unmapped_and_listener_has_no_times() {
        let mapped = Ipv4Addr::new(10, 0, 0, 5).to_ipv6_mapped().octets();
        let m = Msg {
            family: AF_INET6,
            state: TCP_LISTEN,
            src: mapped,
            dst: [0; 16],
            sport: 443,
            dport: 0,
            rq: 3,
            wq: 4096,
            uid: 0,
            inode: 77,
        };
        let m6 = Msg {
            state: 1,
            src: Ipv6Addr::LOCALHOST.octets(),
            dst: Ipv6Addr::LOCALHOST.octets(),
            dport: 5000,
            rq: 0,
            wq: 0,
            inode: 78,
            ..m
        };
        let mut buf = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(&m, &[(INET_DIAG_INFO, tcp_info(9, 9))]),
        );
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(&m6, &[])));
        let out = parse_diag_messages(&buf).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].local.to_string(), "10.0.0.5:443");
        assert_eq!(out[0].rx_queue, 3, "accept queue length");
        assert_eq!(out[0].tx_queue, 4096, "backlog limit");
        assert_eq!(out[0].last_data_recv_ms, None);
        assert_eq!(out[0].unread_data_bytes(), None);
        assert_eq!(out[1].local.to_string(), "[::1]:443");
        assert_eq!(out[1].remote.to_string(), "[::1]:5000");
        assert_eq!(out[1].last_ack_recv_ms, None, "no INET_DIAG_INFO sent");
    }

    #[test]
    fn diag_short_tcp_info_leaves_times_unknown() {
        let buf = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(&close_wait_v4(), &[(INET_DIAG_INFO, vec![0; 40])]),
        );
        let out = parse_diag_messages(&buf).unwrap();
        assert_eq!(out[0].last_data_recv_ms, None);
    }

    #[test]
    fn diag_stops_at_done() {
        let mut buf = done();
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(&close_wait_v4(), &[])));
        let mut out = Vec::new();
        assert_eq!(parse_diag_batch(&buf, &mut out).unwrap(), Batch::Done);
        assert!(out.is_empty());
    }

    #[test]
    fn diag_batch_without_done_asks_for_more() {
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(&close_wait_v4(), &[]));
        let mut out = Vec::new();
        assert_eq!(parse_diag_batch(&buf, &mut out).unwrap(), Batch::More);
        assert_eq!(out.len(), 1);
        assert_eq!(parse_diag_batch(&[], &mut out).unwrap(), Batch::More);
    }

    #[test]
    fn diag_error_message_is_refusal() {
        let mut payload = (-libc::ENOENT).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 16]);
        let err = parse_diag_messages(&nlmsg(NLMSG_ERROR, &payload)).unwrap_err();
        assert!(
            matches!(err, SocketsError::NetlinkRefused { errno } if errno == libc::ENOENT),
            "{err:?}"
        );
        assert!(err.to_string().contains("tcp_diag"), "{err}");
        // An ack (error 0) is not an error.
        let ack = nlmsg(NLMSG_ERROR, &[0u8; 20]);
        assert!(parse_diag_messages(&ack).unwrap().is_empty());
        // A DONE carrying a negative errno ends the dump in error.
        let bad_done = nlmsg(NLMSG_DONE, &(-libc::EINTR).to_ne_bytes());
        assert!(matches!(
            parse_diag_messages(&bad_done),
            Err(SocketsError::NetlinkRefused { errno }) if errno == libc::EINTR
        ));
        // An error message too short for its code.
        assert!(matches!(
            parse_diag_messages(&nlmsg(NLMSG_ERROR, &[0u8; 2])),
            Err(SocketsError::Truncated { .. })
        ));
    }

    #[test]
    fn diag_truncated_everywhere_is_an_error_not_a_panic() {
        let mut full = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(&close_wait_v4(), &[(INET_DIAG_INFO, tcp_info(1, 2))]),
        );
        full.extend(done());
        let first_len = full.len() - done().len();
        for cut in 1..first_len {
            let r = parse_diag_messages(&full[..cut]);
            assert!(
                matches!(r, Err(SocketsError::Truncated { .. })),
                "cut at {cut}: {r:?}"
            );
        }
        assert_eq!(parse_diag_messages(&full).unwrap().len(), 1);
    }

    #[test]
    fn diag_length_lies_are_caught() {
        // nlmsg_len says 8: shorter than its own header.
        let mut m = nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(&close_wait_v4(), &[]));
        m[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(
            parse_diag_messages(&m),
            Err(SocketsError::Malformed { offset: 0, .. })
        ));
        // nlmsg_len claims more than the buffer holds.
        let mut m = nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(&close_wait_v4(), &[]));
        let big = (m.len() + 100) as u32;
        m[0..4].copy_from_slice(&big.to_ne_bytes());
        assert!(matches!(
            parse_diag_messages(&m),
            Err(SocketsError::Truncated { .. })
        ));
        // Payload too short for inet_diag_msg although the header is consistent.
        let m = nlmsg(SOCK_DIAG_BY_FAMILY, &[0u8; 40]);
        assert!(matches!(
            parse_diag_messages(&m),
            Err(SocketsError::Truncated {
                what: "inet_diag_msg",
                need: 72,
                have: 40,
                ..
            })
        ));
        // rta_len of 2 (< header) and rta_len past the end.
        for rta_len in [2u16, 200] {
            let mut p = diag_msg(&close_wait_v4(), &[(INET_DIAG_INFO, vec![0; 8])]);
            p[72..74].copy_from_slice(&rta_len.to_ne_bytes());
            let r = parse_diag_messages(&nlmsg(SOCK_DIAG_BY_FAMILY, &p));
            assert!(r.is_err(), "rta_len {rta_len}: {r:?}");
        }
        // Overrun.
        assert!(parse_diag_messages(&nlmsg(NLMSG_OVERRUN, &[])).is_err());
    }

    #[test]
    fn diag_unknown_family_and_message_types_are_skipped() {
        let m = Msg {
            family: 1, // AF_UNIX
            ..close_wait_v4()
        };
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(&m, &[]));
        buf.extend(nlmsg(NLMSG_NOOP, &[]));
        buf.extend(nlmsg(99, &[1, 2, 3]));
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(&close_wait_v4(), &[])));
        let out = parse_diag_messages(&buf).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].inode, 4242);
    }

    #[test]
    fn diag_request_layout() {
        let r = build_diag_request(AF_INET6, states_mask(&[8, 10]), 9);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(r[6..8].try_into().unwrap()), 0x301);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 9);
        assert_eq!(&r[16..20], &[10, 6, 2, 0]);
        assert_eq!(
            u32::from_ne_bytes(r[20..24].try_into().unwrap()),
            (1 << 8) | (1 << 10)
        );
        assert!(r[24..].iter().all(|b| *b == 0));
        assert_eq!(states_mask(&[]), u32::MAX);
        assert_eq!(states_mask(&[40]), 0, "out-of-range state ignored");
    }

    // ---- /proc/net/tcp fixtures (copied from this machine) ----

    const PROC_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1603 1 00000000ffd41b9f 100 0 0 10 0                      
   1: 0100007F:AFF5 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 9455 2 00000000b6072e02 100 0 0 10 0                      
   2: 0100007F:AFF5 0100007F:D794 08 00000000:00000001 00:00000000 00000000     0        0 0 1 00000000fee6ff66 20 4 0 10 -1                         
   3: 0100007F:D786 0100007F:AFF5 05 00000000:00000000 03:00001756 00000000     0        0 0 3 00000000ae589626                                      
   6: 0100007F:AFF5 0100007F:D786 08 00000000:00000013 00:00000000 00000000     0        0 9457 1 000000009aac47d2 20 4 28 10 -1                     
";

    const PROC_TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:9731 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9459 1 00000000eee89f5b 100 0 0 10 0
   1: 00000000000000000000000001000000:9731 00000000000000000000000001000000:BB6E 08 00000000:00000001 00:00000000 00000000     0        0 9461 1 00000000ad996f09 20 4 0 10 -1
   2: 0000000000000000FFFF00000100007F:9731 0000000000000000FFFF00000100007F:9F90 01 00000000:00000000 00:00000000 00000000     0        0 9463 1 00000000d1c22deb 20 0 0 10 -1
";

    #[cfg(target_endian = "little")]
    #[test]
    fn proc_tcp_v4_fixture() {
        let v = parse_proc_net_tcp(PROC_TCP, false).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v[0].local.to_string(), "0.0.0.0:2024");
        assert_eq!(v[0].state, TCP_LISTEN);
        assert_eq!(v[1].rx_queue, 1, "listener with one connection waiting");
        // CLOSE_WAIT never accepted: inode 0, only the FIN queued.
        assert_eq!(v[2].state, TCP_CLOSE_WAIT);
        assert_eq!(v[2].inode, 0);
        assert_eq!(v[2].remote.to_string(), "127.0.0.1:55188");
        assert_eq!(v[2].unread_data_bytes(), Some(0));
        assert!(v[2].eof_unread());
        // CLOSE_WAIT held by a process, 18 request bytes + FIN unread.
        assert_eq!(
            v[4],
            TcpSocket {
                local: "127.0.0.1:45045".parse().unwrap(),
                remote: "127.0.0.1:55174".parse().unwrap(),
                state: 8,
                inode: 9457,
                rx_queue: 0x13,
                tx_queue: 0,
                uid: 0,
                last_data_recv_ms: None,
                last_ack_recv_ms: None,
                netns: 0,
            }
        );
        assert_eq!(v[4].unread_data_bytes(), Some(18));
        assert_eq!(v[3].state, 5);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn proc_tcp6_fixture_unmaps_v4() {
        let v = parse_proc_net_tcp(PROC_TCP6, true).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].local.to_string(), "[::]:38705");
        assert_eq!(v[1].local.to_string(), "[::1]:38705");
        assert_eq!(v[1].remote.to_string(), "[::1]:47982");
        assert_eq!((v[1].state, v[1].inode), (8, 9461));
        assert_eq!(v[2].local.to_string(), "127.0.0.1:38705");
        assert_eq!(v[2].remote.to_string(), "127.0.0.1:40848");
    }

    #[test]
    fn proc_tcp_rejects_bad_lines() {
        let short = "  sl local\n   0: 0100007F:AFF5 0100007F:D794 08\n";
        let e = parse_proc_net_tcp(short, false).unwrap_err();
        assert!(
            matches!(e, SocketsError::ProcParse { line: 2, .. }),
            "{e:?}"
        );
        // A v6-length address in the v4 file.
        assert!(matches!(
            parse_proc_net_tcp(PROC_TCP6, false),
            Err(SocketsError::ProcParse {
                field: "local_address",
                ..
            })
        ));
        let bad_state = PROC_TCP.replace(" 0A ", " ZZ ");
        assert!(matches!(
            parse_proc_net_tcp(&bad_state, false),
            Err(SocketsError::ProcParse { field: "st", .. })
        ));
        assert!(parse_proc_net_tcp("", false).unwrap().is_empty());
    }

    // ---- holders on a fake /proc ----

    #[test]
    fn holders_from_fake_proc() {
        let t = TempDir::new("proc");
        t.file("100/comm", b"nginx\n");
        t.file("100/cmdline", b"nginx: worker\0-g\0daemon off;\0");
        t.link("100/fd/0", "/dev/null");
        t.link("100/fd/7", "socket:[555]");
        t.link("100/fd/3", "socket:[555]");
        t.link("100/fd/4", "socket:[999]");
        t.file("42/comm", b"init\n");
        t.link("42/fd/12", "socket:[555]");
        t.link("42/fd/13", "pipe:[555]");
        t.link("self", "42");
        t.file("net/tcp", b"");
        std::fs::create_dir_all(t.path().join("300")).unwrap(); // vanished: no fd dir
        t.link("400/fd/notanumber", "socket:[555]");

        let want: HashSet<u64> = [555, 1].into();
        let h = socket_holders_in(t.path(), &want);
        assert_eq!(h.len(), 1, "{h:?}");
        let v = &h[&555];
        let ids: Vec<(u32, u32)> = v.iter().map(|h| (h.pid, h.fd)).collect();
        assert_eq!(ids, vec![(42, 12), (100, 3), (100, 7)]);
        assert_eq!(v[1].comm, "nginx");
        assert_eq!(v[1].cmdline, "nginx: worker -g daemon off;");
        assert_eq!(v[0].cmdline, "", "no cmdline file");
        assert!(socket_holders_in(t.path(), &HashSet::new()).is_empty());
        assert!(socket_holders_in(&t.path().join("missing"), &want).is_empty());
    }

    #[test]
    fn process_info_from_fake_proc() {
        let t = TempDir::new("pinfo");
        t.file(
            "77/stat",
            b"77 (my (odd) app) S 1 77 77 0 -1 4194560 0 0 0 0\n",
        );
        t.file("77/cmdline", b"/usr/bin/app\0--flag\0");
        t.file("77/cgroup", b"4:memory:/x\n0::/system.slice/app.service\n");
        assert_eq!(
            process_info_in(t.path(), 77),
            Some(ProcessInfo {
                pid: 77,
                ppid: 1,
                comm: "my (odd) app".into(),
                cmdline: "/usr/bin/app --flag".into(),
                cgroup: "/system.slice/app.service".into(),
            })
        );
        assert_eq!(process_info_in(t.path(), 78), None);
        assert_eq!(parse_cgroup_v2("1:cpu:/\n"), None);
        assert_eq!(parse_socket_link("socket:[12]"), Some(12));
        assert_eq!(parse_socket_link("pipe:[12]"), None);
        assert_eq!(parse_socket_link("socket:[x]"), None);
    }

    #[test]
    fn process_info_of_self() {
        let me = process_info(std::process::id()).expect("own /proc entry");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(!me.cmdline.is_empty());
        assert!(me.cgroup.starts_with('/'), "{me:?}");
    }

    // ---- the real thing on loopback ----

    fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("client process did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn find(list: &[TcpSocket], local: SocketAddr, remote: SocketAddr) -> Option<TcpSocket> {
        list.iter()
            .find(|s| s.local == local && s.remote == remote)
            .cloned()
    }

    /// Polls `list` (up to 2 s) until the socket local->remote shows up.
    fn poll_for(
        list: impl Fn() -> Vec<TcpSocket>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> TcpSocket {
        let start = Instant::now();
        loop {
            if let Some(s) = find(&list(), local, remote) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{local} <- {remote} never listed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn real_close_wait_socket_is_listed_with_its_holder() {
        if Command::new("python3").arg("-c").arg("").status().is_err() {
            eprintln!("skipping test - python3 is not available");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let laddr = listener.local_addr().unwrap();
        // The client lives in another process (the loopback trap): it sends
        // 5 bytes and closes, then opens a second connection that the test
        // never accepts, and closes that too.
        let script = "import socket,sys\n\
            a=('127.0.0.1',int(sys.argv[1]))\n\
            c=socket.create_connection(a); c.sendall(b'hello'); p1=c.getsockname()[1]; c.close()\n\
            d=socket.create_connection(a); p2=d.getsockname()[1]; d.close()\n\
            print(p1,p2)\n";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(laddr.port().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(wait_child(&mut child, Duration::from_secs(5)).success());
        let mut ports = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut ports)
            .unwrap();
        let ports: Vec<u16> = ports
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let (r1, r2): (SocketAddr, SocketAddr) = (
            (Ipv4Addr::LOCALHOST, ports[0]).into(),
            (Ipv4Addr::LOCALHOST, ports[1]).into(),
        );

        let (accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, r1, "the accept queue is FIFO");

        let diag = || list_tcp_diag(&[TCP_CLOSE_WAIT]).expect("sock_diag dump");
        let s = poll_for(diag, laddr, r1);
        assert_eq!(s.state, TCP_CLOSE_WAIT);
        assert_ne!(s.inode, 0);
        assert!(s.rx_queue > 0, "5 unread bytes: {s:?}");
        assert_eq!(s.rx_queue, 6, "5 unread bytes + the unread FIN");
        assert_eq!(s.unread_data_bytes(), Some(5));
        assert!(
            s.last_data_recv_ms.is_some_and(|ms| ms < 10_000),
            "tcp_info times from sock_diag: {s:?}"
        );
        assert_eq!(s.uid, unsafe { libc::geteuid() });

        // Never accepted: inode 0, only the FIN queued.
        let waiting = poll_for(diag, laddr, r2);
        assert_eq!((waiting.inode, waiting.rx_queue), (0, 1), "{waiting:?}");

        // The public entry point and the /proc fallback agree.
        let via_list = poll_for(|| list_tcp(&[8]).unwrap(), laddr, r1);
        assert_eq!(via_list.inode, s.inode);
        let via_proc = poll_for(|| list_tcp_proc(&[8]).unwrap(), laddr, r1);
        assert_eq!((via_proc.inode, via_proc.rx_queue), (s.inode, 6));
        assert_eq!(via_proc.last_data_recv_ms, None);
        assert!(
            find(&list_tcp(&[1]).unwrap(), laddr, r1).is_none(),
            "state filter"
        );

        // The listener: one connection still waiting in its accept queue.
        let unspecified: SocketAddr = (Ipv4Addr::UNSPECIFIED, 0).into();
        let l = poll_for(|| list_tcp(&[TCP_LISTEN]).unwrap(), laddr, unspecified);
        assert_eq!(l.rx_queue, 1, "accept queue length: {l:?}");
        assert!(l.tx_queue > 0, "backlog limit from sock_diag: {l:?}");

        let holders = socket_holders(&[s.inode, waiting.inode].into());
        let me = std::process::id();
        let fd = u32::try_from(accepted.as_raw_fd()).unwrap();
        let mine = holders.get(&s.inode).expect("accepted socket has a holder");
        assert!(
            mine.iter().any(|h| h.pid == me && h.fd == fd),
            "want pid {me} fd {fd} in {mine:?}"
        );
        assert!(
            !holders.contains_key(&0),
            "nobody holds an unaccepted socket"
        );
        drop(accepted);
    }
}
