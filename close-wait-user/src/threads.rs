//! What the threads of a process are doing right now, from
//! /proc/PID/task/TID/{stat,wchan,syscall,stack}, and what the file
//! descriptor they block on leads to (workers asleep in `pipe_write` on
//! stderr are explained by who holds the pipe's read end and never reads).
//!
//! Every file may be unreadable (`syscall` and `stack` need ptrace access,
//! `stack` needs root): a thread keeps whatever could be read. Parsers are
//! pure and unit-tested; [`summarize_with`] takes the fd lookup as a closure.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The syscall a thread is blocked in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyscallInfo {
    pub nr: i64,
    /// Name from the table for this architecture, or `syscall_<nr>`.
    pub name: String,
    pub args: [u64; 6],
}

/// One thread's state as read from /proc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadState {
    pub tid: u32,
    pub comm: String,
    /// R, S, D, T, t, Z, X, I, ... from stat.
    pub state: char,
    /// Kernel function the thread sleeps in; empty when running or hidden.
    pub wchan: String,
    /// `None` when running, not in a syscall, or unreadable.
    pub syscall: Option<SyscallInfo>,
    /// Kernel stack function names, innermost first (needs root).
    pub kernel_stack: Vec<String>,
    /// The descriptors a wait on many watches (poll/ppoll's pollfd array,
    /// select/pselect6's fd sets, epoll_wait's interest list), sorted;
    /// empty for other calls or when they could not be read.
    pub waits_on: Vec<u32>,
}

/// Malformed /proc thread files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThreadsError {
    #[error("stat line has no '(comm)' field: {line:?}")]
    StatNoComm { line: String },
    #[error("stat line: cannot parse {field} from {value:?}")]
    StatField { field: &'static str, value: String },
    #[error("syscall line: cannot parse {field} from {value:?}")]
    SyscallField { field: &'static str, value: String },
}

/// The leading fields of /proc/PID/stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
}

/// Parses /proc/PID/stat (or task/TID/stat). The comm may hold spaces and
/// parentheses, so it runs from the first `(` to the *last* `)`.
pub fn parse_stat(text: &str) -> Result<StatFields, ThreadsError> {
    let no_comm = || ThreadsError::StatNoComm {
        line: text.trim_end().to_owned(),
    };
    let open = text.find('(').ok_or_else(no_comm)?;
    let close = text.rfind(')').filter(|c| *c > open).ok_or_else(no_comm)?;
    let pid_s = text[..open].trim();
    let pid = pid_s.parse().map_err(|_| ThreadsError::StatField {
        field: "pid",
        value: pid_s.to_owned(),
    })?;
    let comm = text[open + 1..close].to_owned();
    let mut rest = text[close + 1..].split_whitespace();
    let state_s = rest.next().unwrap_or("");
    let mut chars = state_s.chars();
    let state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => {
            return Err(ThreadsError::StatField {
                field: "state",
                value: state_s.to_owned(),
            })
        }
    };
    let ppid_s = rest.next().unwrap_or("");
    let ppid = ppid_s.parse().map_err(|_| ThreadsError::StatField {
        field: "ppid",
        value: ppid_s.to_owned(),
    })?;
    Ok(StatFields {
        pid,
        comm,
        state,
        ppid,
    })
}

/// What /proc/PID/task/TID/syscall says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyscallLine {
    /// `running`: on a CPU, nothing to report.
    Running,
    /// `-1 SP PC`: blocked, but not in a syscall (e.g. a page fault).
    NotInSyscall,
    /// `NR ARG1..ARG6 SP PC`.
    InSyscall(SyscallInfo),
}

/// Parses /proc/PID/task/TID/syscall.
pub fn parse_syscall(text: &str) -> Result<SyscallLine, ThreadsError> {
    let mut f = text.split_whitespace();
    let first = f.next().unwrap_or("");
    if first == "running" {
        return Ok(SyscallLine::Running);
    }
    let nr: i64 = first.parse().map_err(|_| ThreadsError::SyscallField {
        field: "number",
        value: first.to_owned(),
    })?;
    if nr < 0 {
        return Ok(SyscallLine::NotInSyscall);
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        let s = f.next().ok_or_else(|| ThreadsError::SyscallField {
            field: "argument",
            value: text.trim_end().to_owned(),
        })?;
        *a = s
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or_else(|| ThreadsError::SyscallField {
                field: "argument",
                value: s.to_owned(),
            })?;
    }
    Ok(SyscallLine::InSyscall(SyscallInfo {
        nr,
        name: syscall_name(nr)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("syscall_{nr}")),
        args,
    }))
}

/// `[<0>] pipe_write+0x1b6/0x4a0` lines -> `pipe_write`.
pub fn parse_stack(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = match l.find("] ") {
                Some(i) if l.starts_with("[<") => &l[i + 2..],
                _ => l,
            };
            let name = l.split(['+', ' ']).next().unwrap_or("");
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// `flags:\t0100001` in /proc/PID/fdinfo/FD (octal).
pub fn parse_fdinfo_flags(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// Name of a syscall number on this architecture, for the blocking calls
/// (and a few others worth naming in a report).
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    SYSCALLS.iter().find(|(n, _)| *n == nr).map(|(_, s)| *s)
}

#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(i64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (3, "close"),
    (7, "poll"),
    (16, "ioctl"),
    (17, "pread64"),
    (18, "pwrite64"),
    (19, "readv"),
    (20, "writev"),
    (23, "select"),
    (24, "sched_yield"),
    (34, "pause"),
    (35, "nanosleep"),
    (40, "sendfile"),
    (42, "connect"),
    (43, "accept"),
    (44, "sendto"),
    (45, "recvfrom"),
    (46, "sendmsg"),
    (47, "recvmsg"),
    (48, "shutdown"),
    (61, "wait4"),
    (65, "semop"),
    (70, "msgrcv"),
    (72, "fcntl"),
    (73, "flock"),
    (74, "fsync"),
    (75, "fdatasync"),
    (128, "rt_sigtimedwait"),
    (130, "rt_sigsuspend"),
    (202, "futex"),
    (208, "io_getevents"),
    (230, "clock_nanosleep"),
    (231, "exit_group"),
    (232, "epoll_wait"),
    (243, "mq_timedreceive"),
    (247, "waitid"),
    (257, "openat"),
    (270, "pselect6"),
    (271, "ppoll"),
    (275, "splice"),
    (276, "tee"),
    (278, "vmsplice"),
    (281, "epoll_pwait"),
    (288, "accept4"),
    (295, "preadv"),
    (296, "pwritev"),
    (299, "recvmmsg"),
    (307, "sendmmsg"),
    (326, "copy_file_range"),
    (426, "io_uring_enter"),
    (441, "epoll_pwait2"),
];

/// The generic table (asm-generic/unistd.h) used by arm64 and riscv64.
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
const SYSCALLS: &[(i64, &str)] = &[
    (4, "io_getevents"),
    (22, "epoll_pwait"),
    (25, "fcntl"),
    (29, "ioctl"),
    (32, "flock"),
    (56, "openat"),
    (57, "close"),
    (63, "read"),
    (64, "write"),
    (65, "readv"),
    (66, "writev"),
    (67, "pread64"),
    (68, "pwrite64"),
    (69, "preadv"),
    (70, "pwritev"),
    (71, "sendfile"),
    (72, "pselect6"),
    (73, "ppoll"),
    (76, "splice"),
    (77, "tee"),
    (82, "fsync"),
    (83, "fdatasync"),
    (94, "exit_group"),
    (95, "waitid"),
    (98, "futex"),
    (101, "nanosleep"),
    (115, "clock_nanosleep"),
    (124, "sched_yield"),
    (133, "rt_sigsuspend"),
    (137, "rt_sigtimedwait"),
    (202, "accept"),
    (203, "connect"),
    (206, "sendto"),
    (207, "recvfrom"),
    (210, "shutdown"),
    (211, "sendmsg"),
    (212, "recvmsg"),
    (242, "accept4"),
    (243, "recvmmsg"),
    (260, "wait4"),
    (269, "sendmmsg"),
    (285, "copy_file_range"),
    (426, "io_uring_enter"),
    (441, "epoll_pwait2"),
];

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
const SYSCALLS: &[(i64, &str)] = &[];

/// Syscalls whose first argument is the file descriptor they block on.
const FD_SYSCALLS: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "accept",
    "accept4",
    "connect",
    "fsync",
    "fdatasync",
    "flock",
];

/// The fd a syscall blocks on, for syscalls whose arg0 is one.
pub fn syscall_fd(sc: &SyscallInfo) -> Option<u32> {
    if FD_SYSCALLS.contains(&sc.name.as_str()) {
        u32::try_from(sc.args[0]).ok()
    } else {
        None
    }
}

/// At most this many descriptors of one wait are read (a pollfd array or
/// an epoll interest list of a busy event loop can be long).
pub const MAX_WAITED: usize = 4096;

/// The kind of wait on many descriptors a syscall is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiWait {
    /// poll/ppoll: arg0 the pollfd array, arg1 its length.
    Poll,
    /// select/pselect6: arg0 nfds, arg1..3 the read, write and except sets.
    Select,
    /// epoll_wait/epoll_pwait/epoll_pwait2: arg0 the epoll descriptor.
    Epoll,
}

pub fn multi_wait(name: &str) -> Option<MultiWait> {
    match name {
        "poll" | "ppoll" => Some(MultiWait::Poll),
        "select" | "pselect6" => Some(MultiWait::Select),
        "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => Some(MultiWait::Epoll),
        _ => None,
    }
}

/// The fds of a `struct pollfd` array (int fd; short events, revents);
/// negative fds are ignored by poll(2) and skipped.
pub fn parse_pollfds(bytes: &[u8]) -> Vec<u32> {
    let mut fds: Vec<u32> = bytes
        .chunks_exact(8)
        .filter_map(|c| u32::try_from(i32::from_ne_bytes([c[0], c[1], c[2], c[3]])).ok())
        .collect();
    fds.sort_unstable();
    fds.dedup();
    fds
}

/// The fds set in an `fd_set` bitmap (longs of bits, bit i of long j is fd
/// 64 * j + i on a 64-bit target), below `nfds`.
pub fn parse_fd_set(bytes: &[u8], nfds: usize) -> Vec<u32> {
    let mut fds = Vec::new();
    for (j, word) in bytes.chunks_exact(8).enumerate() {
        let w = u64::from_ne_bytes(word.try_into().unwrap_or([0; 8]));
        for i in 0..64 {
            let fd = j * 64 + i;
            if fd >= nfds {
                return fds;
            }
            if w & (1 << i) != 0 {
                fds.push(fd as u32);
            }
        }
    }
    fds
}

/// The watched fds of /proc/PID/fdinfo/EPFD (`tfd:        5 events: ...`).
pub fn parse_epoll_tfds(text: &str) -> Vec<u32> {
    let mut fds: Vec<u32> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds.dedup();
    fds
}

/// The fds a wait on many descriptors watches. `read_mem(addr, len)` reads
/// the caller's memory, `epoll_info(epfd)` its fdinfo text.
pub fn waited_fds_with(
    sc: &SyscallInfo,
    mut read_mem: impl FnMut(u64, usize) -> Option<Vec<u8>>,
    epoll_info: impl FnOnce(u32) -> Option<String>,
) -> Vec<u32> {
    match multi_wait(&sc.name) {
        Some(MultiWait::Poll) => {
            let n = (sc.args[1] as usize).min(MAX_WAITED);
            if sc.args[0] == 0 || n == 0 {
                return Vec::new();
            }
            read_mem(sc.args[0], n * 8)
                .map(|b| parse_pollfds(&b))
                .unwrap_or_default()
        }
        Some(MultiWait::Select) => {
            let nfds = (sc.args[0] as usize).min(MAX_WAITED);
            let len = nfds.div_ceil(64) * 8;
            let mut fds: Vec<u32> = sc.args[1..4]
                .iter()
                .filter(|&&a| a != 0 && len > 0)
                .filter_map(|&a| read_mem(a, len))
                .flat_map(|b| parse_fd_set(&b, nfds))
                .collect();
            fds.sort_unstable();
            fds.dedup();
            fds
        }
        Some(MultiWait::Epoll) => u32::try_from(sc.args[0])
            .ok()
            .and_then(epoll_info)
            .map(|t| {
                let mut v = parse_epoll_tfds(&t);
                v.truncate(MAX_WAITED);
                v
            })
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// The threads of `pid`, sorted by tid; empty when the process is gone.
pub fn threads_of(pid: u32) -> Vec<ThreadState> {
    threads_of_in(Path::new("/proc"), pid)
}

/// [`threads_of`] over a proc tree mounted at `proc_root`.
pub fn threads_of_in(proc_root: &Path, pid: u32) -> Vec<ThreadState> {
    let task = proc_root.join(pid.to_string()).join("task");
    let mut out: Vec<ThreadState> = fs::read_dir(task)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let dir = e.path();
            // No stat: the thread is gone.
            let path = dir.join("stat");
            let text = crate::logged::read_to_string(&path)?;
            let stat = crate::logged::ok(parse_stat(&text), || path.display().to_string())?;
            let wchan = fs::read_to_string(dir.join("wchan"))
                .map(|w| normalize_wchan(&w))
                .unwrap_or_default();
            let syscall = match fs::read_to_string(dir.join("syscall")).map(|s| parse_syscall(&s)) {
                Ok(Ok(SyscallLine::InSyscall(sc))) => Some(sc),
                _ => None,
            };
            let kernel_stack = fs::read_to_string(dir.join("stack"))
                .map(|s| parse_stack(&s))
                .unwrap_or_default();
            let waits_on = syscall
                .as_ref()
                .map(|sc| waited_fds_of(proc_root, pid, &dir, sc))
                .unwrap_or_default();
            Some(ThreadState {
                tid,
                comm: stat.comm,
                state: stat.state,
                wchan,
                syscall,
                kernel_stack,
                waits_on,
            })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

/// The fds thread `dir` of `pid` waits on in `sc`. The pollfd array and fd
/// sets are read from the process's memory (only under the real /proc:
/// a fake tree has no process behind it), then the syscall line is read
/// again: if it changed, the thread left the call and what was read may be
/// another call's, so nothing is kept.
fn waited_fds_of(proc_root: &Path, pid: u32, dir: &Path, sc: &SyscallInfo) -> Vec<u32> {
    if multi_wait(&sc.name).is_none() {
        return Vec::new();
    }
    let live = proc_root == Path::new("/proc");
    let mem = crate::python::mem::ProcMem { pid };
    let fds = waited_fds_with(
        sc,
        |addr, len| {
            use crate::python::mem::Memory;
            live.then(|| mem.bytes(addr, len).ok()).flatten()
        },
        |epfd| {
            crate::logged::read_to_string(
                &proc_root
                    .join(pid.to_string())
                    .join("fdinfo")
                    .join(epfd.to_string()),
            )
        },
    );
    let again = fs::read_to_string(dir.join("syscall")).map(|s| parse_syscall(&s));
    match again {
        Ok(Ok(SyscallLine::InSyscall(now))) if now == *sc => fds,
        _ => Vec::new(),
    }
}

/// The kernel prints `0` when the thread runs or wchan is hidden.
fn normalize_wchan(w: &str) -> String {
    let w = w.trim();
    if w == "0" {
        String::new()
    } else {
        w.to_owned()
    }
}

/// What a file descriptor refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FdTarget {
    /// An anonymous pipe, with every (pid, fd) on the machine that holds it
    /// open for reading, sorted.
    Pipe {
        inode: u64,
        readers: Vec<(u32, u32)>,
        /// The command of each of the first readers shown (`cmdline`, or
        /// `[comm]` without one), parallel to `readers`; may be shorter.
        reader_commands: Vec<String>,
        /// Bytes queued in the pipe and its capacity, when measured.
        fill: Option<(u32, u32)>,
    },
    /// A socket, and the TCP connection it is when the caller looked it up
    /// (see [`FdTarget::with_connection`]).
    Socket {
        inode: u64,
        connection: Option<Connection>,
    },
    /// A path (regular file, device, named pipe).
    File(String),
    /// Anything else: `anon_inode:[eventfd]`, ...
    Other(String),
}

impl fmt::Display for FdTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdTarget::Pipe {
                inode,
                readers,
                fill,
                ..
            } if readers.is_empty() => {
                write!(f, "pipe:[{inode}]")?;
                write_fill(f, *fill)?;
                write!(f, " with no reader")
            }
            FdTarget::Pipe {
                inode,
                readers,
                reader_commands,
                fill,
            } => {
                write!(f, "pipe:[{inode}]")?;
                write_fill(f, *fill)?;
                f.write_str(" whose read end is held by ")?;
                for (i, (pid, fd)) in readers.iter().take(PIPE_READERS_SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "pid {pid} fd {fd}")?;
                    if let Some(c) = reader_commands.get(i) {
                        write!(f, " ({c})")?;
                    }
                }
                const SHOWN: usize = PIPE_READERS_SHOWN;
                if readers.len() > SHOWN {
                    write!(f, " and {} more", readers.len() - SHOWN)?;
                }
                Ok(())
            }
            FdTarget::Socket {
                inode,
                connection: None,
            } => write!(f, "socket:[{inode}]"),
            FdTarget::Socket {
                inode,
                connection: Some(c),
            } => write!(f, "socket:[{inode}] ({c})"),
            FdTarget::File(p) | FdTarget::Other(p) => f.write_str(p),
        }
    }
}

/// Pipe readers named in a description; the rest are counted.
const PIPE_READERS_SHOWN: usize = 3;

/// ` (64512 of 65536 bytes queued: full)`. A pipe is full when all its
/// page-sized buffers are in use: the last one may be partly filled.
fn write_fill(f: &mut fmt::Formatter<'_>, fill: Option<(u32, u32)>) -> fmt::Result {
    match fill {
        Some((q, cap)) if cap > 0 => write!(
            f,
            " ({q} of {cap} bytes queued{})",
            if pipe_full(q, cap) { ": full" } else { "" }
        ),
        _ => Ok(()),
    }
}

/// Less than a page of room left: a writer of more than that blocks.
pub fn pipe_full(queued: u32, capacity: u32) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    capacity.saturating_sub(queued) < page
}

/// Bytes queued in the pipe behind fd `fd` of `pid`, and the pipe's
/// capacity: the descriptor is duplicated with pidfd_getfd(2) (Linux 5.6,
/// needs ptrace access), asked FIONREAD and F_GETPIPE_SZ, and closed. No
/// procfs file says how full a pipe is.
pub fn pipe_fill(pid: u32, fd: u32) -> Option<(u32, u32)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: pidfd_open returned a descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, a target fd and flags; it returns
    // a new fd (close-on-exec) or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd as i32, 0) };
    if dup < 0 {
        return None;
    }
    // SAFETY: pidfd_getfd returned a descriptor nothing else owns.
    let dup = unsafe { OwnedFd::from_raw_fd(dup as i32) };
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    let r = unsafe { libc::ioctl(dup.as_raw_fd(), libc::FIONREAD, &mut queued) };
    // SAFETY: F_GETPIPE_SZ takes no argument and returns the capacity or -1.
    let cap = unsafe { libc::fcntl(dup.as_raw_fd(), libc::F_GETPIPE_SZ) };
    (r == 0 && cap > 0).then(|| (queued.max(0) as u32, cap as u32))
}

/// What a pipe reader runs: its command line (cut to 80 characters), or
/// `[comm]` when it has none.
fn reader_command(proc_root: &Path, pid: u32) -> Option<String> {
    let info = crate::sockets::process_info_in(proc_root, pid)?;
    let mut c = if info.cmdline.is_empty() {
        format!("[{}]", info.comm)
    } else {
        info.cmdline
    };
    if c.chars().count() > 80 {
        c = c.chars().take(77).collect::<String>() + "...";
    }
    Some(c)
}

/// The TCP connection behind a socket descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state.
    pub state: u8,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = crate::events::state_name(self.state);
        if self.state == close_wait_common::tcp_state::LISTEN {
            write!(f, "{} {state}", self.local)
        } else {
            write!(f, "{} -> {} {state}", self.local, self.remote)
        }
    }
}

impl FdTarget {
    /// A socket target with its connection looked up by inode; any other
    /// target unchanged.
    pub fn with_connection(self, lookup: impl FnOnce(u64) -> Option<Connection>) -> FdTarget {
        match self {
            FdTarget::Socket {
                inode,
                connection: None,
            } => FdTarget::Socket {
                inode,
                connection: lookup(inode),
            },
            other => other,
        }
    }
}

/// Classifies a /proc/PID/fd link target; pipe readers are left empty.
pub fn classify_link(target: &str) -> FdTarget {
    let bracketed = |prefix: &str| -> Option<u64> {
        target.strip_prefix(prefix)?.strip_suffix(']')?.parse().ok()
    };
    if let Some(inode) = bracketed("pipe:[") {
        FdTarget::Pipe {
            inode,
            readers: Vec::new(),
            reader_commands: Vec::new(),
            fill: None,
        }
    } else if let Some(inode) = bracketed("socket:[") {
        FdTarget::Socket {
            inode,
            connection: None,
        }
    } else if target.starts_with('/') {
        FdTarget::File(target.to_owned())
    } else {
        FdTarget::Other(target.to_owned())
    }
}

/// What fd `fd` of process `pid` refers to; for a pipe, who can read it.
pub fn describe_fd(pid: u32, fd: u32) -> Option<FdTarget> {
    describe_fd_in(Path::new("/proc"), pid, fd)
}

/// [`describe_fd`] over a proc tree mounted at `proc_root`.
pub fn describe_fd_in(proc_root: &Path, pid: u32, fd: u32) -> Option<FdTarget> {
    let link = crate::logged::read_link(
        &proc_root
            .join(pid.to_string())
            .join("fd")
            .join(fd.to_string()),
    )?;
    match classify_link(&link.to_string_lossy()) {
        FdTarget::Pipe { inode, .. } => {
            let readers = pipe_readers_in(proc_root, inode);
            let reader_commands = readers
                .iter()
                .take(PIPE_READERS_SHOWN)
                .map_while(|(p, _)| reader_command(proc_root, *p))
                .collect();
            let fill = (proc_root == Path::new("/proc"))
                .then(|| pipe_fill(pid, fd))
                .flatten();
            Some(FdTarget::Pipe {
                inode,
                readers,
                reader_commands,
                fill,
            })
        }
        other => Some(other),
    }
}

/// Every (pid, fd) holding pipe `inode` open for reading. The two ends of a
/// pipe are distinct fds with the same inode; the access mode in fdinfo
/// tells them apart (O_RDONLY, or O_RDWR for a reopened /proc/PID/fd/N).
pub fn pipe_readers_in(proc_root: &Path, inode: u64) -> Vec<(u32, u32)> {
    let want = format!("pipe:[{inode}]");
    let mut readers: Vec<(u32, u32)> = crate::sockets::fd_links(proc_root)
        .filter(|(_, _, target)| *target == want)
        .filter(|(pid, fd, _)| {
            let info = proc_root
                .join(pid.to_string())
                .join("fdinfo")
                .join(fd.to_string());
            crate::logged::read_to_string(&info)
                .and_then(|t| parse_fdinfo_flags(&t))
                .is_some_and(|fl| {
                    let mode = fl & libc::O_ACCMODE as u32;
                    mode == libc::O_RDONLY as u32 || mode == libc::O_RDWR as u32
                })
        })
        .map(|(pid, fd, _)| (pid, fd))
        .collect();
    readers.sort_unstable();
    readers
}

/// Threads sharing the same state, wait channel, syscall and fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadGroup {
    pub count: usize,
    pub state: char,
    pub wchan: String,
    pub syscall: Option<String>,
    pub fd: Option<u32>,
    /// Human text for the fd, e.g. `pipe:[1234] with no reader`.
    pub fd_target: Option<String>,
    /// The TCP connection (or listener) behind `fd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// For poll, select and epoll_wait: the descriptors watched (the
    /// first [`DESCRIBED`] of them described).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_on: Vec<WaitedFd>,
    /// Watched descriptors beyond those in `waits_on`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waits_on_more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Watched descriptors described per thread group; the rest are counted.
pub const DESCRIBED: usize = 8;

/// One descriptor a wait on many watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitedFd {
    pub fd: u32,
    /// Human text, as for `fd_target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The TCP connection (or listener) behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
}

impl ThreadGroup {
    /// Every TCP connection the group's threads wait on: the fd of a
    /// read/write-like call, or those of a wait on many.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.connection
            .iter()
            .chain(self.waits_on.iter().filter_map(|w| w.connection.as_ref()))
    }

    /// Is this group blocked in a call on a piece of work, not idle? In a
    /// call (asleep or in D state) on a TCP connection that is not a
    /// listener, or on a pipe or a file; never in accept() or an event
    /// loop's epoll_wait (waiting for work is idle), and not on `except`
    /// (the stuck connection itself, as (local, remote)).
    pub fn blocked_on_work(&self, except: Option<(SocketAddr, SocketAddr)>) -> bool {
        let Some(sc) = self.syscall.as_deref() else {
            return false;
        };
        if !matches!(self.state, 'S' | 'D')
            || matches!(sc, "accept" | "accept4")
            || multi_wait(sc) == Some(MultiWait::Epoll)
        {
            return false;
        }
        let conn = self.connections().any(|c| {
            c.state != close_wait_common::tcp_state::LISTEN && except != Some((c.local, c.remote))
        });
        let targets = self
            .fd_target
            .iter()
            .chain(self.waits_on.iter().filter_map(|w| w.target.as_ref()));
        let pipe_or_file = targets
            .clone()
            .any(|t| t.starts_with("pipe:[") || t.starts_with('/'));
        conn || pipe_or_file
    }
}

/// What a process's threads are doing, grouped, biggest group first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadSummary {
    pub total: usize,
    pub groups: Vec<ThreadGroup>,
    pub text: String,
    /// A CPython process: what its threads run in Python (`python` module).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<crate::python::PyThreads>,
    /// `go` for a Go program: its OS threads carry goroutines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// Groups the threads of `pid` and describes the fds they block on.
pub fn summarize(pid: u32, threads: &[ThreadState]) -> ThreadSummary {
    summarize_with(threads, |fd| describe_fd(pid, fd))
}

/// [`summarize`] with the fd lookup supplied by the caller (called once per
/// group that blocks on an fd, and for the first [`DESCRIBED`] descriptors
/// of a wait on many).
pub fn summarize_with(
    threads: &[ThreadState],
    mut describe: impl FnMut(u32) -> Option<FdTarget>,
) -> ThreadSummary {
    type Key = (char, String, Option<String>, Option<u32>, Vec<u32>);
    let mut counts: HashMap<Key, usize> = HashMap::new();
    for t in threads {
        let name = t.syscall.as_ref().map(|s| s.name.clone());
        let fd = t.syscall.as_ref().and_then(syscall_fd);
        *counts
            .entry((t.state, t.wchan.clone(), name, fd, t.waits_on.clone()))
            .or_default() += 1;
    }
    let mut keyed: Vec<(Key, usize)> = counts.into_iter().collect();
    keyed.sort_by(|(ka, ca), (kb, cb)| cb.cmp(ca).then_with(|| ka.cmp(kb)));
    let groups: Vec<ThreadGroup> = keyed
        .into_iter()
        .map(|((state, wchan, syscall, fd, waited), count)| {
            let waits_on = waited
                .iter()
                .take(DESCRIBED)
                .map(|&wfd| {
                    let t = describe(wfd);
                    WaitedFd {
                        fd: wfd,
                        connection: match &t {
                            Some(FdTarget::Socket { connection, .. }) => connection.clone(),
                            _ => None,
                        },
                        target: t.map(|t| t.to_string()),
                    }
                })
                .collect();
            let mut conn = None;
            let mut g = ThreadGroup {
                count,
                state,
                wchan,
                syscall,
                fd,
                connection: None,
                fd_target: fd.and_then(&mut describe).map(|t| {
                    if let FdTarget::Socket {
                        connection: Some(c),
                        ..
                    } = &t
                    {
                        conn = Some(c.clone());
                    }
                    t.to_string()
                }),
                waits_on_more: waited.len().saturating_sub(DESCRIBED),
                waits_on,
            };
            g.connection = conn;
            g
        })
        .collect();
    let total = threads.len();
    let text = if groups.is_empty() {
        "no thread could be read".to_owned()
    } else {
        groups
            .iter()
            .enumerate()
            .map(|(i, g)| group_text(g, total, i == 0))
            .collect::<Vec<_>>()
            .join("; ")
    };
    ThreadSummary {
        total,
        groups,
        text,
        python: None,
        runtime: None,
    }
}

fn state_words(state: char) -> String {
    match state {
        'R' => "running".into(),
        'S' => "asleep".into(),
        'D' => "in uninterruptible sleep".into(),
        'T' => "stopped".into(),
        't' => "stopped by a tracer".into(),
        'Z' => "zombie".into(),
        'X' => "dead".into(),
        'I' => "idle".into(),
        'P' => "parked".into(),
        other => format!("in state {other}"),
    }
}

/// `10 of 11 threads asleep in pipe_write via write(2) on fd 2 -> pipe:[..] ...`
pub fn group_text(g: &ThreadGroup, total: usize, first: bool) -> String {
    let mut s = format!("{} of {total}", g.count);
    if first {
        s.push_str(if total == 1 { " thread" } else { " threads" });
    }
    s.push(' ');
    s.push_str(&state_words(g.state));
    if !g.wchan.is_empty() {
        s.push_str(" in ");
        s.push_str(&g.wchan);
    }
    if let Some(sc) = &g.syscall {
        s.push_str(&format!(" via {sc}(2)"));
    }
    if let Some(fd) = g.fd {
        s.push_str(&format!(" on fd {fd}"));
        if let Some(t) = &g.fd_target {
            s.push_str(" -> ");
            s.push_str(t);
        }
    }
    s.push_str(&waits_text(g));
    s
}

/// ` on fd 3 -> socket:[..] (..)`, ` on 3 fds: fd 3 -> .., fd 5 -> ..`;
/// for epoll ` on epoll fd 4 watching ...`. Empty when nothing is known.
pub fn waits_text(g: &ThreadGroup) -> String {
    let n = g.waits_on.len() + g.waits_on_more;
    if n == 0 {
        return String::new();
    }
    let mut s = String::new();
    let epoll = g
        .syscall
        .as_deref()
        .and_then(multi_wait)
        .is_some_and(|m| m == MultiWait::Epoll);
    s.push_str(if epoll { " watching" } else { " on" });
    if n > 1 {
        s.push_str(&format!(" {n} fds:"));
    }
    for (i, w) in g.waits_on.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(" fd {}", w.fd));
        if let Some(t) = &w.target {
            s.push_str(" -> ");
            s.push_str(t);
        }
    }
    if g.waits_on_more > 0 {
        s.push_str(&format!(" and {} more", g.waits_on_more));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = parse_stat("1234 (a (b) c) S 1 1234 1234 0 -1 4194560 0 0\n").unwrap();
        assert_eq!(
            s,
            StatFields {
                pid: 1234,
                comm: "a (b) c".into(),
                state: 'S',
                ppid: 1
            }
        );
        let s = parse_stat("7 ()) D 0 0").unwrap();
        assert_eq!((s.comm.as_str(), s.state, s.ppid), (")", 'D', 0));
        // Real line from this machine.
        let real =
            "10351 (sleep) S 10349 10349 3682 0 -1 4194304 132 0 0 0 0 0 0 0 20 0 1 0 177305";
        assert_eq!(parse_stat(real).unwrap().ppid, 10349);
    }

    #[test]
    fn stat_errors() {
        assert!(matches!(
            parse_stat("12 sleep S 1"),
            Err(ThreadsError::StatNoComm { .. })
        ));
        assert!(matches!(
            parse_stat(") 12 (x S 1"),
            Err(ThreadsError::StatNoComm { .. })
        ));
        assert!(matches!(
            parse_stat("x (a) S 1"),
            Err(ThreadsError::StatField { field: "pid", .. })
        ));
        assert!(matches!(
            parse_stat("1 (a) SS 1"),
            Err(ThreadsError::StatField { field: "state", .. })
        ));
        assert!(matches!(
            parse_stat("1 (a)"),
            Err(ThreadsError::StatField { field: "state", .. })
        ));
        assert!(matches!(
            parse_stat("1 (a) S"),
            Err(ThreadsError::StatField { field: "ppid", .. })
        ));
    }

    #[test]
    fn syscall_lines() {
        assert_eq!(parse_syscall("running\n").unwrap(), SyscallLine::Running);
        assert_eq!(
            parse_syscall("-1 0x7ffd1234 0x7f001234\n").unwrap(),
            SyscallLine::NotInSyscall
        );
        // Real line from this machine (a sleeping `sleep`).
        let real =
            "230 0x0 0x0 0x7ffea1117330 0x7ffea1117370 0x0 0x0 0x7ffea1117318 0x7fb83a4e3503\n";
        let SyscallLine::InSyscall(sc) = parse_syscall(real).unwrap() else {
            panic!("not in syscall");
        };
        assert_eq!(sc.nr, 230);
        assert_eq!(sc.args[2], 0x7ffea1117330);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(sc.name, "clock_nanosleep");
        let SyscallLine::InSyscall(sc) =
            parse_syscall("1 0x2 0x7f00 0x100000 0x0 0x0 0x0 0x1 0x2").unwrap()
        else {
            panic!("not in syscall");
        };
        assert_eq!(sc.args[..3], [2, 0x7f00, 0x100000]);
        assert_eq!(
            parse_syscall("99999 0x0 0x0 0x0 0x0 0x0 0x0 0x0 0x0").map(|l| match l {
                SyscallLine::InSyscall(sc) => sc.name,
                _ => String::new(),
            }),
            Ok("syscall_99999".to_owned())
        );
        assert!(matches!(
            parse_syscall("1 0x2 0x3"),
            Err(ThreadsError::SyscallField {
                field: "argument",
                ..
            })
        ));
        assert!(matches!(
            parse_syscall("1 2 3 4 5 6 7 8 9"),
            Err(ThreadsError::SyscallField {
                field: "argument",
                ..
            })
        ));
        assert!(parse_syscall("").is_err());
        assert!(parse_syscall("abc").is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_names() {
        for (nr, name) in [
            (0, "read"),
            (1, "write"),
            (7, "poll"),
            (202, "futex"),
            (232, "epoll_wait"),
            (281, "epoll_pwait"),
            (441, "epoll_pwait2"),
            (288, "accept4"),
            (275, "splice"),
            (40, "sendfile"),
            (73, "flock"),
        ] {
            assert_eq!(syscall_name(nr), Some(name), "nr {nr}");
        }
        assert_eq!(syscall_name(-1), None);
    }

    #[test]
    fn stack_and_fdinfo() {
        let stack = "[<0>] pipe_write+0x1b6/0x4a0\n[<0>] vfs_write+0x2a9/0x3c0\n[<0>] ksys_write+0x6f/0xf0\n[<0>] do_syscall_64+0x71/0x280\n";
        assert_eq!(
            parse_stack(stack),
            vec!["pipe_write", "vfs_write", "ksys_write", "do_syscall_64"]
        );
        assert!(parse_stack("").is_empty());
        assert_eq!(
            parse_fdinfo_flags("pos:\t586\nflags:\t0100001\nmnt_id:\t27\n"),
            Some(0o100001)
        );
        assert_eq!(parse_fdinfo_flags("pos:\t0\n"), None);
        assert_eq!(parse_fdinfo_flags("flags:\t9\n"), None, "not octal");
    }

    #[test]
    fn fake_proc_threads_and_pipe_readers() {
        let t = TempDir::new("threads");
        t.file("50/task/50/stat", b"50 (srv main) S 1 50 50 0 -1 0\n");
        t.file("50/task/50/wchan", b"do_epoll_wait");
        t.file(
            "50/task/50/syscall",
            b"232 0x4 0x7f 0x80 0xffffffff 0x0 0x0 0x7ffc 0x7f01\n",
        );
        t.file("50/task/51/stat", b"51 (worker) S 1 50 50 0 -1 0\n");
        t.file("50/task/51/wchan", b"pipe_write");
        t.file(
            "50/task/51/syscall",
            b"1 0x2 0x7f 0x100000 0x0 0x0 0x0 0x1 0x2\n",
        );
        t.file(
            "50/task/51/stack",
            b"[<0>] pipe_write+0x1b6/0x4a0\n[<0>] vfs_write+0x2a9/0x3c0\n",
        );
        // Thread 52 has no syscall/wchan access; 53 vanished (no stat).
        t.file("50/task/52/stat", b"52 (worker) R 1 50 50 0 -1 0\n");
        t.file("50/task/53/wchan", b"0");

        let th = threads_of_in(t.path(), 50);
        assert_eq!(
            th.iter().map(|t| t.tid).collect::<Vec<_>>(),
            vec![50, 51, 52]
        );
        assert_eq!(th[0].comm, "srv main");
        assert_eq!(th[1].wchan, "pipe_write");
        assert_eq!(th[1].kernel_stack, vec!["pipe_write", "vfs_write"]);
        assert_eq!(th[2].syscall, None);
        assert_eq!(th[2].wchan, "");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(th[1].syscall.as_ref().unwrap().name, "write");
        assert!(threads_of_in(t.path(), 99).is_empty());

        // Pipe 900: 50 writes on fd 2; 60 holds the read end (O_RDONLY),
        // 61 another write end, 62 a read-write reopen.
        t.link("50/fd/2", "pipe:[900]");
        t.file("50/fdinfo/2", b"pos:\t0\nflags:\t01\n");
        t.link("60/fd/5", "pipe:[900]");
        t.file("60/stat", b"60 (tail) S 1 60 60 0 -1 0\n");
        t.file("60/cmdline", b"tail\0-f\0/var/log/x\0");
        t.file("60/fdinfo/5", b"pos:\t0\nflags:\t02000000\n");
        t.link("61/fd/1", "pipe:[900]");
        t.file("61/fdinfo/1", b"flags:\t0100001\n");
        t.link("62/fd/9", "pipe:[900]");
        t.file("62/fdinfo/9", b"flags:\t02\n");
        t.link("63/fd/3", "pipe:[901]");
        t.file("63/fdinfo/3", b"flags:\t00\n");
        t.link("50/fd/3", "socket:[77]");
        t.link("50/fd/4", "/var/log/x.log");
        t.link("50/fd/5", "anon_inode:[eventfd]");

        assert_eq!(
            describe_fd_in(t.path(), 50, 2),
            Some(FdTarget::Pipe {
                inode: 900,
                readers: vec![(60, 5), (62, 9)],
                // 60 is named; 62 has no stat (gone), so naming stops.
                reader_commands: vec!["tail -f /var/log/x".into()],
                fill: None,
            })
        );
        assert_eq!(
            describe_fd_in(t.path(), 50, 2).unwrap().to_string(),
            "pipe:[900] whose read end is held by pid 60 fd 5 (tail -f /var/log/x), pid 62 fd 9"
        );
        assert_eq!(
            describe_fd_in(t.path(), 50, 3),
            Some(FdTarget::Socket {
                inode: 77,
                connection: None
            })
        );
        assert_eq!(
            describe_fd_in(t.path(), 50, 4),
            Some(FdTarget::File("/var/log/x.log".into()))
        );
        assert_eq!(
            describe_fd_in(t.path(), 50, 5),
            Some(FdTarget::Other("anon_inode:[eventfd]".into()))
        );
        assert_eq!(describe_fd_in(t.path(), 50, 6), None);
        assert_eq!(pipe_readers_in(t.path(), 902), vec![]);
    }

    fn thread(tid: u32, state: char, wchan: &str, sc: Option<(i64, &str, u64)>) -> ThreadState {
        ThreadState {
            tid,
            comm: "w".into(),
            state,
            wchan: wchan.into(),
            syscall: sc.map(|(nr, name, a0)| SyscallInfo {
                nr,
                name: name.into(),
                args: [a0, 0, 0, 0, 0, 0],
            }),
            kernel_stack: vec![],
            waits_on: vec![],
        }
    }

    #[test]
    fn summary_of_seed_002_shape() {
        let mut th: Vec<ThreadState> = (1..=10)
            .map(|i| thread(i, 'S', "pipe_write", Some((1, "write", 2))))
            .collect();
        th.push(thread(
            11,
            'S',
            "do_epoll_wait",
            Some((232, "epoll_wait", 4)),
        ));
        let mut asked = Vec::new();
        let s = summarize_with(&th, |fd| {
            asked.push(fd);
            Some(FdTarget::Pipe {
                inode: 1234,
                readers: vec![],
                reader_commands: vec![],
                fill: None,
            })
        });
        assert_eq!(asked, vec![2], "epoll_wait's arg0 is not looked up");
        assert_eq!(s.total, 11);
        assert_eq!(s.groups.len(), 2);
        assert_eq!(
            s.groups[0],
            ThreadGroup {
                count: 10,
                state: 'S',
                wchan: "pipe_write".into(),
                syscall: Some("write".into()),
                fd: Some(2),
                fd_target: Some("pipe:[1234] with no reader".into()),
                connection: None,
                waits_on: vec![],
                waits_on_more: 0,
            }
        );
        assert_eq!(
            s.text,
            "10 of 11 threads asleep in pipe_write via write(2) on fd 2 -> pipe:[1234] with no reader; \
             1 of 11 asleep in do_epoll_wait via epoll_wait(2)"
        );
    }

    #[test]
    fn summary_splits_by_fd_and_state() {
        let th = vec![
            thread(1, 'S', "pipe_write", Some((1, "write", 2))),
            thread(2, 'S', "pipe_write", Some((1, "write", 1))),
            thread(3, 'S', "pipe_write", Some((1, "write", 2))),
            thread(4, 'R', "", None),
            thread(5, 'D', "folio_wait_bit", Some((0, "read", 7))),
        ];
        let s = summarize_with(&th, |fd| {
            (fd == 1).then(|| FdTarget::Pipe {
                inode: 5,
                readers: vec![(10, 3), (11, 3), (12, 3), (13, 4)],
                reader_commands: vec![],
                fill: None,
            })
        });
        let counts: Vec<(usize, char, Option<u32>)> =
            s.groups.iter().map(|g| (g.count, g.state, g.fd)).collect();
        assert_eq!(
            counts,
            vec![
                (2, 'S', Some(2)),
                (1, 'D', Some(7)),
                (1, 'R', None),
                (1, 'S', Some(1))
            ]
        );
        assert!(s.text.contains("1 of 5 running"), "{}", s.text);
        assert!(
            s.text
                .contains("1 of 5 in uninterruptible sleep in folio_wait_bit via read(2) on fd 7;"),
            "{}",
            s.text
        );
        assert!(
            s.text.ends_with(
                "on fd 1 -> pipe:[5] whose read end is held by pid 10 fd 3, pid 11 fd 3, pid 12 fd 3 and 1 more"
            ),
            "{}",
            s.text
        );
        let one = summarize_with(&th[3..4], |_| None);
        assert_eq!(one.text, "1 of 1 thread running");
        let none = summarize_with(&[], |_| None);
        assert_eq!((none.total, none.groups.len()), (0, 0));
    }

    use crate::testutil::KillOnDrop;

    #[test]
    fn pollfds_fd_sets_and_epoll_interest_lists() {
        let mut pfds = Vec::new();
        for (fd, ev) in [(7i32, 1i16), (-1, 1), (3, 4), (7, 4)] {
            pfds.extend_from_slice(&fd.to_ne_bytes());
            pfds.extend_from_slice(&ev.to_ne_bytes());
            pfds.extend_from_slice(&0i16.to_ne_bytes());
        }
        assert_eq!(
            parse_pollfds(&pfds),
            vec![3, 7],
            "negative skipped, deduped"
        );
        assert!(
            parse_pollfds(&pfds[..5]).is_empty(),
            "a partial entry is no entry"
        );
        let mut set = [0u8; 16];
        set[0] = 0b1010_0000; // fds 5 and 7
        set[8] = 0b1; // fd 64
        assert_eq!(parse_fd_set(&set, 65), vec![5, 7, 64]);
        assert_eq!(
            parse_fd_set(&set, 64),
            vec![5, 7],
            "fd 64 is not below nfds"
        );
        assert_eq!(parse_fd_set(&set, 6), vec![5]);
        // Real fdinfo of an epoll descriptor (6.x).
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\n\
            tfd:        5 events:       19 data:                5  pos:0 ino:3a2b sdev:8\n\
            tfd:        3 events:       19 data:                3  pos:0 ino:3a2a sdev:8\n";
        assert_eq!(parse_epoll_tfds(info), vec![3, 5]);
        assert!(parse_epoll_tfds("pos:\t0\n").is_empty());

        let sc = |name: &str, args: [u64; 6]| SyscallInfo {
            nr: 0,
            name: name.into(),
            args,
        };
        let mut asked = Vec::new();
        let fds = waited_fds_with(
            &sc("ppoll", [0x1000, 4, 0, 0, 8, 0]),
            |a, l| {
                asked.push((a, l));
                Some(pfds.clone())
            },
            |_| None,
        );
        assert_eq!((fds, asked), (vec![3, 7], vec![(0x1000, 32)]));
        // pselect6: read and write sets, no except set (NULL).
        let mut asked = Vec::new();
        let fds = waited_fds_with(
            &sc("pselect6", [65, 0x2000, 0x3000, 0, 0, 0]),
            |a, l| {
                asked.push((a, l));
                let mut b = vec![0u8; l];
                b[0] = if a == 0x2000 { 0b1000 } else { 0b1_0000 };
                Some(b)
            },
            |_| None,
        );
        assert_eq!((fds, asked), (vec![3, 4], vec![(0x2000, 16), (0x3000, 16)]));
        let fds = waited_fds_with(
            &sc("epoll_wait", [9, 0x10, 64, 0, 0, 0]),
            |_, _| panic!("epoll needs no memory"),
            |epfd| (epfd == 9).then(|| info.to_owned()),
        );
        assert_eq!(fds, vec![3, 5]);
        assert!(waited_fds_with(&sc("read", [3, 0, 0, 0, 0, 0]), |_, _| None, |_| None).is_empty());
        assert!(
            waited_fds_with(&sc("poll", [0x1000, 1, 0, 0, 0, 0]), |_, _| None, |_| None).is_empty()
        );
    }

    #[test]
    fn waits_on_many_are_grouped_and_named() {
        let mut th = vec![
            thread(1, 'S', "poll_schedule_timeout", Some((7, "poll", 0x1000))),
            thread(2, 'S', "poll_schedule_timeout", Some((7, "poll", 0x2000))),
            thread(3, 'S', "do_epoll_wait", Some((232, "epoll_wait", 4))),
        ];
        th[0].waits_on = vec![5];
        th[1].waits_on = vec![5];
        th[2].waits_on = (10..30).collect();
        let up = Connection {
            local: "127.0.0.1:41000".parse().unwrap(),
            remote: "127.0.0.1:9000".parse().unwrap(),
            state: close_wait_common::tcp_state::ESTABLISHED,
        };
        let mut asked = Vec::new();
        let s = summarize_with(&th, |fd| {
            asked.push(fd);
            Some(FdTarget::Socket {
                inode: 77,
                connection: (fd == 5).then(|| up.clone()),
            })
        });
        assert_eq!(s.groups.len(), 2, "{:?}", s.groups);
        assert_eq!(s.groups[0].count, 2);
        assert_eq!(s.groups[0].connections().collect::<Vec<_>>(), vec![&up]);
        assert_eq!(s.groups[1].waits_on.len(), DESCRIBED);
        assert_eq!(s.groups[1].waits_on_more, 20 - DESCRIBED);
        assert_eq!(
            asked.len(),
            1 + DESCRIBED,
            "only the described fds are looked up"
        );
        assert_eq!(
            s.text,
            format!(
                "2 of 3 threads asleep in poll_schedule_timeout via poll(2) on fd 5 -> \
                 socket:[77] (127.0.0.1:41000 -> 127.0.0.1:9000 ESTABLISHED); \
                 1 of 3 asleep in do_epoll_wait via epoll_wait(2) watching 20 fds: fd 10 -> socket:[77], \
                 fd 11 -> socket:[77], fd 12 -> socket:[77], fd 13 -> socket:[77], fd 14 -> socket:[77], \
                 fd 15 -> socket:[77], fd 16 -> socket:[77], fd 17 -> socket:[77] and {} more",
                20 - DESCRIBED
            )
        );
        // The JSON reads back.
        let back: ThreadSummary =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.groups, s.groups);
    }

    #[test]
    fn blocked_on_work_versus_idle() {
        let up = Connection {
            local: "127.0.0.1:41000".parse().unwrap(),
            remote: "127.0.0.1:9000".parse().unwrap(),
            state: close_wait_common::tcp_state::ESTABLISHED,
        };
        let listen = Connection {
            local: "0.0.0.0:8080".parse().unwrap(),
            remote: "0.0.0.0:0".parse().unwrap(),
            state: close_wait_common::tcp_state::LISTEN,
        };
        let g =
            |state: char, sc: &str, target: Option<&str>, conn: Option<&Connection>| ThreadGroup {
                count: 1,
                state,
                wchan: String::new(),
                syscall: Some(sc.into()),
                fd: Some(5),
                fd_target: target.map(str::to_owned),
                connection: conn.cloned(),
                waits_on: vec![],
                waits_on_more: 0,
            };
        let sock = Some("socket:[1] (..)");
        assert!(g('S', "recvfrom", sock, Some(&up)).blocked_on_work(None));
        assert!(g('D', "read", Some("/var/lib/x"), None).blocked_on_work(None));
        assert!(g('S', "write", Some("pipe:[9] with no reader"), None).blocked_on_work(None));
        // On the stuck connection itself, a listener, or nothing: idle.
        assert!(!g('S', "recvfrom", sock, Some(&up)).blocked_on_work(Some((up.local, up.remote))));
        assert!(!g('S', "accept4", sock, Some(&listen)).blocked_on_work(None));
        assert!(!g('S', "read", Some("anon_inode:[eventfd]"), None).blocked_on_work(None));
        assert!(!g('R', "recvfrom", sock, Some(&up)).blocked_on_work(None));
        let mut idle = g('S', "clock_nanosleep", None, None);
        idle.fd = None;
        assert!(!idle.blocked_on_work(None));
        // A wait on many: poll on an upstream is work, an event loop's
        // epoll_wait is not, whatever it watches.
        let mut poll = g('S', "poll", None, None);
        poll.fd = None;
        poll.waits_on = vec![WaitedFd {
            fd: 5,
            target: sock.map(str::to_owned),
            connection: Some(up.clone()),
        }];
        assert!(poll.blocked_on_work(None));
        poll.syscall = Some("epoll_wait".into());
        assert!(!poll.blocked_on_work(None));
    }

    /// A python3 child that connects to `port` and blocks in `call` (with a
    /// timeout) on that socket; returns it once its main thread waits on a
    /// socket fd.
    fn python_waiting(port: u16, call: &str) -> Option<(KillOnDrop, ThreadState)> {
        if Command::new("python3").arg("-c").arg("").status().is_err() {
            eprintln!("skipping test - python3 is not available");
            return None;
        }
        let script = format!(
            "import socket,select,sys\n\
             s=socket.create_connection(('127.0.0.1',{port}))\n\
             p,w=__import__('os').pipe()\n\
             {call}\n"
        );
        let child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let guard = KillOnDrop(child);
        let pid = guard.0.id();
        let start = Instant::now();
        loop {
            let th = threads_of(pid);
            if let Some(t) = th.into_iter().find(|t| !t.waits_on.is_empty()) {
                return Some((guard, t));
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{call}: never seen waiting: {:#?}",
                threads_of(pid)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket_fds(pid: u32) -> Vec<u32> {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter(|e| {
                fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }

    #[test]
    fn real_poll_select_and_epoll_waits_name_their_socket() {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = upstream.local_addr().unwrap().port();
        for (call, syscalls) in [
            // socket.recv with a timeout waits in poll(2) (ppoll on some builds).
            ("s.settimeout(30); s.recv(1)", &["poll", "ppoll"][..]),
            (
                "select.select([s, p], [], [], 30)",
                &["select", "pselect6"][..],
            ),
            (
                "e=select.epoll(); e.register(s.fileno(), select.EPOLLIN); e.poll(30)",
                &["epoll_wait", "epoll_pwait", "epoll_pwait2"][..],
            ),
        ] {
            let Some((guard, t)) = python_waiting(port, call) else {
                return;
            };
            let pid = guard.0.id();
            let (_conn, _) = upstream.accept().unwrap();
            let sc = t.syscall.as_ref().expect("in a syscall");
            assert!(syscalls.contains(&sc.name.as_str()), "{call}: {sc:?}");
            let socks = socket_fds(pid);
            let sock: Vec<u32> = t
                .waits_on
                .iter()
                .copied()
                .filter(|f| socks.contains(f))
                .collect();
            assert_eq!(
                sock.len(),
                1,
                "{call}: waits on {:?}, sockets {socks:?}",
                t.waits_on
            );
            let summary = summarize(pid, std::slice::from_ref(&t));
            let g = &summary.groups[0];
            let w = g.waits_on.iter().find(|w| w.fd == sock[0]).unwrap();
            assert!(
                w.target
                    .as_deref()
                    .is_some_and(|t| t.starts_with("socket:[")),
                "{call}: {}",
                summary.text
            );
            assert!(
                summary
                    .text
                    .contains(&format!("fd {} -> socket:[", sock[0])),
                "{}",
                summary.text
            );
            if call.starts_with("select") {
                assert_eq!(
                    t.waits_on.len(),
                    2,
                    "the socket and the pipe: {:?}",
                    t.waits_on
                );
                assert!(summary.text.contains("-> pipe:["), "{}", summary.text);
            }
            drop(guard);
        }
    }

    #[test]
    fn real_writers_blocked_on_unread_stderr_pipe() {
        if Command::new("python3").arg("-c").arg("").status().is_err() {
            eprintln!("skipping test - python3 is not available");
            return;
        }
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors. O_CLOEXEC keeps other
        // tests' children from inheriting either end.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 just returned these descriptors; nothing else owns them.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let script = "import os,threading\n\
            def w():\n    b=b'x'*(1<<20)\n    while True: os.write(2,b)\n\
            ts=[threading.Thread(target=w) for _ in range(3)]\n\
            [t.start() for t in ts]\n\
            [t.join() for t in ts]\n";
        let child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(write_end))
            .spawn()
            .unwrap();
        let guard = KillOnDrop(child);
        let pid = guard.0.id();

        // The test holds the read end and never reads: the writers block.
        let start = Instant::now();
        let summary = loop {
            let th = threads_of(pid);
            let s = summarize(pid, &th);
            if s.groups.first().is_some_and(|g| {
                g.count == 3
                    && g.state == 'S'
                    && (g.wchan.contains("pipe_write")
                        || (g.syscall.as_deref() == Some("write") && g.fd == Some(2)))
            }) {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "writers never blocked: {th:#?}\n{}",
                s.text
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            summary.total, 4,
            "3 writers + the main thread: {}",
            summary.text
        );
        let g = &summary.groups[0];
        assert_eq!(g.syscall.as_deref(), Some("write"), "{}", summary.text);
        assert_eq!(g.fd, Some(2));
        let me = std::process::id();
        let rfd = u32::try_from(read_end.as_raw_fd()).unwrap();
        assert!(
            g.fd_target
                .as_deref()
                .is_some_and(|t| t.contains(&format!("pid {me} fd {rfd}"))),
            "{}",
            summary.text
        );
        // 6.18 names the wait channel anon_pipe_write; older kernels pipe_write.
        assert!(
            summary.text.starts_with("3 of 4 threads asleep in ")
                && summary
                    .text
                    .contains("pipe_write via write(2) on fd 2 -> pipe:["),
            "{}",
            summary.text
        );
        match describe_fd(pid, 2) {
            Some(FdTarget::Pipe { readers, fill, .. }) => {
                // The writers filled it: everything queued, nothing read.
                let (queued, cap) = fill.expect("pipe fill measured");
                assert!(cap >= 4096 && pipe_full(queued, cap), "{queued} of {cap}");
                assert!(!pipe_full(0, cap) && !pipe_full(cap - 8192, cap));
                assert!(readers.contains(&(me, rfd)), "{readers:?}");
                assert!(
                    !readers.iter().any(|(p, _)| *p == pid),
                    "the child only holds the write end: {readers:?}"
                );
            }
            other => panic!("fd 2 of the child is not a pipe: {other:?}"),
        }
        drop(guard);
        drop(read_end);
    }
}
