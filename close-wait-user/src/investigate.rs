//! Report-time investigation of sockets still in CLOSE_WAIT: age, holders,
//! the call that created them (and its stack), the listener of unaccepted
//! ones, what the owning threads do, and a diagnosis per group.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    time::Duration,
};

use close_wait_common::{origin, tcp_state, SockOrigin};

use crate::{
    addr,
    budget::Budget,
    cli::Filters,
    diagnosis::{self, Diagnosis, Evidence},
    events::comm_str,
    model::{Listener, LocalPorts, Origin, Peer, Pool, PoolMember, StuckGroup, StuckSocket, Task},
    sockets::{self, Holder, TcpSocket},
    stacks::{self, Symbolizer},
    threads,
};

/// Lookups into what the kernel side recorded at connect() (and, with
/// `--accept-stacks`, accept()), keyed by the socket's kernel address.
pub trait Origins {
    fn sock_origin(&self, skaddr: u64) -> Option<SockOrigin>;
    fn stack(&self, id: i32) -> Vec<u64>;
    /// The Python stack the kernel took with an origin (its `py_stack`).
    fn python_stack(&self, _pid: u32, _id: u64) -> Option<crate::python::kernel::Resolved> {
        None
    }
    /// Monotonic time of the newest traced connect() of process `pid` to
    /// remote port `dport` whose socket is still open.
    fn connect_ts(&self, _pid: u32, _dport: u16) -> Option<u64> {
        None
    }
}

/// For `snapshot`: nothing was traced.
pub struct NoOrigins;

impl Origins for NoOrigins {
    fn sock_origin(&self, _: u64) -> Option<SockOrigin> {
        None
    }
    fn stack(&self, _: i32) -> Vec<u64> {
        Vec::new()
    }
}

/// (network namespace inode, local, remote): the 4-tuple alone is
/// ambiguous, two namespaces can hold the very same one.
pub type Tuple = (u32, SocketAddr, SocketAddr);

/// The CLOSE_WAIT entries tracing has seen: when each socket entered, which
/// were there before attach, and each one's kernel address.
#[derive(Debug, Default)]
pub struct CloseWaitEntries {
    /// (netns, local, remote) -> monotonic CLOSE_WAIT entry time. netns 0
    /// (events without BTF) matches a socket of any namespace.
    pub entered: HashMap<Tuple, u64>,
    /// Sockets already in CLOSE_WAIT when the tracer attached.
    pub preexisting: HashSet<Tuple>,
    /// (netns, local, remote) -> the socket's kernel address, as its
    /// CLOSE_WAIT entry event gave it: the key of its origin.
    pub skaddr: HashMap<Tuple, u64>,
    /// Monotonic time of attach (None for a snapshot).
    pub attach_ns: Option<u64>,
    pub now_ns: u64,
}

pub struct Options<'a> {
    pub threshold: Duration,
    pub filters: &'a Filters,
    pub kernel_stacks: bool,
    /// False with `--stacks none`: no user stack was taken.
    pub user_stacks: bool,
    /// Sockets left when it is spent are counted, not investigated.
    pub budget: &'a Budget,
}

pub struct Findings {
    pub stuck: Vec<StuckSocket>,
    pub groups: Vec<StuckGroup>,
    /// Sockets in CLOSE_WAIT now that pass the filters.
    pub close_wait_now: u64,
    /// Ages (us) of every socket in CLOSE_WAIT now, for the "open" histogram.
    pub open_ages_us: Vec<u64>,
    /// Sockets in CLOSE_WAIT not investigated: the budget ran out.
    pub uninvestigated: u64,
    /// Stuck sockets reported without their creation stack or their
    /// holders' threads: the budget's deep part ran out.
    pub stacks_not_read: u64,
}

pub fn tuple(s: &TcpSocket) -> Tuple {
    (s.netns, addr::normalize(s.local), addr::normalize(s.remote))
}

/// Does a socket of namespace `netns` pass `--netns`?
pub fn netns_kept(f: &Filters, netns: u32) -> bool {
    f.netns.is_none_or(|n| n == netns)
}

/// Is `pid` in cgroup `want` (a path as `cgroup::resolve` returns it) or
/// below it?
pub fn in_cgroup(pid: u32, want: &Path) -> bool {
    sockets::process_info(pid).is_some_and(|info| crate::cgroup::contains(want, &info.cgroup))
}

/// Does a process pass the -p / --cgroup filters?
pub fn pid_kept(f: &Filters, pid: u32) -> bool {
    (f.pids.is_empty() || f.pids.contains(&pid))
        && f.cgroup.as_deref().is_none_or(|c| in_cgroup(pid, c))
}

pub fn ports_kept(f: &Filters, local: SocketAddr, remote: SocketAddr) -> bool {
    (f.lports.is_empty() || f.lports.contains(&local.port()))
        && (f.dports.is_empty() || f.dports.contains(&remote.port()))
}

/// The listener of `local` in namespace `netns`.
fn listener_for(table: &[TcpSocket], netns: u32, local: SocketAddr) -> Option<&TcpSocket> {
    let ip = addr::unmap(local.ip());
    table
        .iter()
        .filter(|l| {
            l.state == tcp_state::LISTEN && l.netns == netns && l.local.port() == local.port()
        })
        .find(|l| {
            let lip = addr::unmap(l.local.ip());
            lip == ip || lip.is_unspecified()
        })
}

struct Creator {
    pid: u32,
    tid: u32,
    comm: String,
    kind: u32,
    user_stack: i32,
    kernel_stack: i32,
    py_stack: u64,
    creator_holds: bool,
    /// No call was traced: an accepted socket's creator taken from the
    /// listener's holders (no stack exists).
    from_listener: bool,
}

/// Monotonic nanoseconds at which process `pid` started, from
/// /proc/PID/stat (clock ticks since boot).
fn process_start_ns(pid: u32) -> Option<u64> {
    let text = crate::logged::read_to_string(Path::new(&format!("/proc/{pid}/stat")))?;
    let rest = &text[text.rfind(')')? + 1..];
    // Fields from the 3rd (state) on; starttime is the 22nd.
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(ticks.saturating_mul(1_000_000_000) / hz)
}

/// The thread of `pid` blocked in accept()/accept4() on `fd` now, if any.
fn accepting_thread(pid: u32, fd: u32) -> Option<u32> {
    threads::threads_of(pid)
        .into_iter()
        .find(|t| {
            t.syscall.as_ref().is_some_and(|sc| {
                (sc.name == "accept" || sc.name == "accept4") && threads::syscall_fd(sc) == Some(fd)
            })
        })
        .map(|t| t.tid)
}

/// The fds `pid` watches with epoll (`tfd:` lines of its eventpoll fds'
/// fdinfo).
fn epoll_watched(pid: u32) -> HashSet<u32> {
    let mut out = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let is_epoll = std::fs::read_link(e.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:[eventpoll]");
        if !is_epoll {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
        let text = std::fs::read_to_string(info).unwrap_or_default();
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("tfd:") {
                if let Some(Ok(fd)) = v.split_whitespace().next().map(str::parse) {
                    out.insert(fd);
                }
            }
        }
    }
    out
}

/// Is `pid` accepting on its listener descriptor `fd` (a thread blocked in
/// accept() on it, or the fd watched by one of its epolls)? Cached per
/// investigation: one process may hold thousands of stuck sockets.
#[derive(Default)]
pub(crate) struct Acceptors {
    watched: HashMap<u32, HashSet<u32>>,
}

impl Acceptors {
    fn accepts(&mut self, pid: u32, fd: u32) -> bool {
        self.watched
            .entry(pid)
            .or_insert_with(|| epoll_watched(pid))
            .contains(&fd)
            || accepting_thread(pid, fd).is_some()
    }
}

/// The call that created a socket: the traced connect() (or accept() with
/// `--accept-stacks`) keyed by its kernel address; for an accepted socket
/// that entered CLOSE_WAIT while tracing and has no traced accept(), the
/// listener's holders found now. Whether the creator still holds it is read
/// from the holders (/proc), never from close() events:
/// - a traced creator holds it when it is among the holders;
/// - an accepted socket was created by a holder that accepts on the
///   listener (blocked in accept() on it, or watching it with epoll);
///   else, when a holder started after the socket entered CLOSE_WAIT, it
///   was inherited across fork and the nearest ancestor holding the
///   listener accepted it; else by a holder of the listener; else (the
///   holders do not have the listener) by their nearest ancestor that does.
fn find_creator(
    traced: Option<SockOrigin>,
    entered_ns: Option<u64>,
    holders: &[Holder],
    listener: Option<&[Holder]>,
    acceptors: &mut Acceptors,
) -> Option<Creator> {
    if let Some(o) = traced {
        let pid = (o.pid_tgid >> 32) as u32;
        return Some(Creator {
            pid,
            tid: o.pid_tgid as u32,
            comm: comm_str(&o.comm),
            kind: o.kind,
            user_stack: o.user_stack,
            kernel_stack: o.kernel_stack,
            py_stack: o.py_stack,
            creator_holds: holders.iter().any(|h| h.pid == pid),
            from_listener: false,
        });
    }
    let lholders = listener?;
    // Accepted before the tracer attached: nothing was seen of it.
    let entered_ns = entered_ns?;
    let holds_listener = |pid: u32| lholders.iter().find(|l| l.pid == pid);
    let accepted_by = |l: &Holder, holds: bool| Creator {
        pid: l.pid,
        tid: accepting_thread(l.pid, l.fd).unwrap_or(l.pid),
        comm: l.comm.clone(),
        kind: origin::ACCEPT,
        user_stack: -1,
        kernel_stack: -1,
        py_stack: 0,
        creator_holds: holds,
        from_listener: true,
    };
    for h in holders {
        if let Some(l) = holds_listener(h.pid) {
            if acceptors.accepts(l.pid, l.fd) {
                return Some(accepted_by(l, true));
            }
        }
    }
    // The nearest ancestor of `pid` that holds the listener.
    let ancestor = |pid: u32| {
        let mut pid = pid;
        for _ in 0..4 {
            let ppid = sockets::process_info(pid).map(|i| i.ppid)?;
            if ppid <= 1 {
                return None;
            }
            if let Some(l) = holds_listener(ppid) {
                return Some(l);
            }
            pid = ppid;
        }
        None
    };
    let accepted_by_checking_holds =
        |l: &Holder| accepted_by(l, holders.iter().any(|x| x.pid == l.pid));
    // 20 ms: two clock ticks of /proc's start time.
    let inherited = |pid: u32| {
        process_start_ns(pid).is_some_and(|start| start > entered_ns.saturating_add(20_000_000))
    };
    // Proven inherited: started after the socket entered CLOSE_WAIT.
    if let Some(l) = holders
        .iter()
        .filter(|h| inherited(h.pid))
        .find_map(|h| ancestor(h.pid))
    {
        return Some(accepted_by_checking_holds(l));
    }
    // A holder of the listener: a prefork worker looks like a child forked
    // after accept() that kept the listener; without a traced accept() the
    // holder is taken for the acceptor (no held-elsewhere without proof).
    if let Some(l) = holders.iter().find_map(|h| holds_listener(h.pid)) {
        return Some(accepted_by(l, true));
    }
    // Holders without the listener: it was accepted by an ancestor that has
    // it (a fork-per-connection server whose child closed its copy).
    holders
        .iter()
        .find_map(|h| ancestor(h.pid))
        .map(accepted_by_checking_holds)
}

/// Established connections to the peer's address and port, plus, for a
/// connected socket whose peer is on this host, the peer's listener: a peer
/// that still listens is not gone (a server that closes idle keep-alive
/// connections lives on). The caller asks only for connected sockets: an
/// accepted socket's peer is a client's ephemeral port, which says nothing
/// about whether the client (a proxy that timed out and moved on) is alive.
fn live_to_peer(table: &[TcpSocket], netns: u32, origin: Origin, remote: SocketAddr) -> usize {
    table
        .iter()
        .filter(|s| s.netns == netns)
        .filter(|s| {
            if s.state == tcp_state::LISTEN {
                origin != Origin::Accept && listens_on(s, remote)
            } else {
                s.state == tcp_state::ESTABLISHED
            }
        })
        .filter(|s| {
            let r = addr::normalize(s.remote);
            if s.state == tcp_state::LISTEN {
                true
            } else {
                r == remote
            }
        })
        .count()
}

/// Does listener `l` of this host serve `remote`? Its own address, or a
/// wildcard listener when `remote` is a loopback address.
fn listens_on(l: &TcpSocket, remote: SocketAddr) -> bool {
    let lip = addr::unmap(l.local.ip());
    let rip = addr::unmap(remote.ip());
    l.local.port() == remote.port() && (lip == rip || (lip.is_unspecified() && rip.is_loopback()))
}

/// Looks at every CLOSE_WAIT socket of `table` (which should also hold the
/// LISTEN and ESTABLISHED sockets) and returns the stuck ones, grouped.
pub fn investigate(
    table: &[TcpSocket],
    entries: &CloseWaitEntries,
    opts: &Options<'_>,
    origins: &dyn Origins,
    symbolizer: &mut Symbolizer,
) -> Findings {
    let cw: Vec<&TcpSocket> = table
        .iter()
        .filter(|s| s.state == tcp_state::CLOSE_WAIT)
        .filter(|s| ports_kept(opts.filters, s.local, s.remote))
        .filter(|s| netns_kept(opts.filters, s.netns))
        .collect();
    let mut inodes: HashSet<u64> = cw.iter().map(|s| s.inode).filter(|&i| i != 0).collect();
    // Every listener of a CLOSE_WAIT socket: never-accepted sockets are
    // reported with theirs, accepted ones get their creator from it.
    let listeners: Vec<&TcpSocket> = cw
        .iter()
        .filter_map(|s| listener_for(table, s.netns, s.local))
        .collect();
    inodes.extend(listeners.iter().map(|l| l.inode).filter(|&i| i != 0));
    let Some(holders) = sockets::socket_holders_within(&inodes, opts.budget) else {
        return Findings {
            stuck: Vec::new(),
            groups: Vec::new(),
            close_wait_now: cw.len() as u64,
            open_ages_us: Vec::new(),
            uninvestigated: cw.len() as u64,
            stacks_not_read: 0,
        };
    };
    let no_holders = Vec::new();
    // What each holder's threads do, read once per process.
    let mut summaries: HashMap<u32, Option<threads::ThreadSummary>> = HashMap::new();
    let mut acceptors = Acceptors::default();

    let mut stuck = Vec::new();
    let mut open_ages_us = Vec::new();
    let mut close_wait_now = 0;
    let mut uninvestigated = 0;
    let mut stacks_not_read = 0;
    for s in cw {
        if opts.budget.spent() {
            close_wait_now += 1;
            uninvestigated += 1;
            continue;
        }
        // Breadth first: every socket gets its age, holders and diagnosis;
        // stacks and threads, the slow part, while the deep budget lasts.
        let deep = !opts.budget.deep_spent();
        let t = tuple(s);
        let (_, local, remote) = t;
        let local_listener = listener_for(table, s.netns, s.local);
        // Only a socket never accepted is reported with its listener.
        let listener = local_listener.filter(|_| s.inode == 0);
        let sock_holders = holders.get(&s.inode).unwrap_or(&no_holders);
        let listener_holders = listener
            .and_then(|l| holders.get(&l.inode))
            .unwrap_or(&no_holders);
        let owners = if s.inode == 0 {
            listener_holders
        } else {
            sock_holders
        };
        let filtered = !opts.filters.pids.is_empty() || opts.filters.cgroup.is_some();
        if filtered && !owners.iter().any(|h| pid_kept(opts.filters, h.pid)) {
            continue;
        }
        close_wait_now += 1;
        let estimated_ms = s.last_ack_recv_ms.map(u64::from);
        let (age_ms, since_attach, age_estimated) = if let Some(&e) = entries
            .entered
            .get(&t)
            .or_else(|| entries.entered.get(&(0, local, remote)))
        {
            (entries.now_ns.saturating_sub(e) / 1_000_000, false, false)
        } else if entries.preexisting.contains(&t) {
            let attached = entries
                .attach_ns
                .map(|a| entries.now_ns.saturating_sub(a) / 1_000_000)
                .unwrap_or(0);
            (attached.max(estimated_ms.unwrap_or(0)), true, false)
        } else {
            (estimated_ms.unwrap_or(0), entries.attach_ns.is_none(), true)
        };
        open_ages_us.push(age_ms.saturating_mul(1000));
        if age_ms < opts.threshold.as_millis() as u64 {
            continue;
        }
        let traced = entries
            .skaddr
            .get(&t)
            .or_else(|| entries.skaddr.get(&(0, local, remote)))
            .and_then(|&sk| origins.sock_origin(sk));
        let entered_ns = entries
            .entered
            .get(&t)
            .or_else(|| entries.entered.get(&(0, local, remote)))
            .copied();
        let created = find_creator(
            traced,
            entered_ns,
            sock_holders,
            local_listener
                .filter(|_| s.inode != 0)
                .and_then(|l| holders.get(&l.inode))
                .map(Vec::as_slice),
            &mut acceptors,
        );
        // Untraced descriptors: a listener on the local port means the
        // socket was accepted; otherwise nothing is claimed.
        let origin_kind = match &created {
            Some(c) if c.kind == origin::ACCEPT => Origin::Accept,
            Some(c) if c.kind == origin::CONNECT => Origin::Connect,
            _ if s.inode == 0 || local_listener.is_some() => Origin::Accept,
            _ => Origin::Unknown,
        };
        let unread = u64::from(s.unread_data_bytes().unwrap_or(0));
        let evidence = Evidence {
            unaccepted: s.inode == 0,
            unread_bytes: unread,
            eof_unread: s.eof_unread(),
            creator_let_go: created.as_ref().is_some_and(|c| !c.creator_holds),
            holders: sock_holders.len(),
            peer_live_connections: (origin_kind != Origin::Accept)
                .then(|| live_to_peer(table, s.netns, origin_kind, remote)),
            blocked: if deep && origin_kind == Origin::Accept && s.inode != 0 {
                blocked_holders(sock_holders, (local, remote), table, &mut summaries)
            } else {
                None
            },
            // Known for the group only, once its listener's story is told.
            listener_holders_busy: false,
        };
        let d = diagnosis::diagnose(&evidence);
        let (stack, stack_note, kernel_stack) = match &created {
            Some(c) if c.from_listener => (
                Vec::new(),
                Some(
                    "accepted: creator from the listener's holders, no accept() stack taken (--accept-stacks takes one)"
                        .to_string(),
                ),
                Vec::new(),
            ),
            Some(_) if !deep => {
                stacks_not_read += 1;
                (
                    Vec::new(),
                    Some("stack not read: the look had no time left for it (the run was ending)".to_string()),
                    Vec::new(),
                )
            }
            Some(c) => {
                let addrs = origins.stack(c.user_stack);
                // The creator may be gone (fork inheritance): its children
                // map the same binary.
                let sym_pid = if sockets::process_info(c.pid).is_some() {
                    c.pid
                } else {
                    sock_holders.first().map(|h| h.pid).unwrap_or(c.pid)
                };
                let mut frames = symbolizer.user(sym_pid, &addrs);
                let mut note = if !opts.user_stacks {
                    Some("no stack taken (--stacks none)".to_string())
                } else if c.user_stack < 0 {
                    Some(format!(
                        "user stack not captured (bpf_get_stackid error {})",
                        c.user_stack
                    ))
                } else {
                    stacks::stack_note(&frames)
                };
                let outside = stacks::outside_code(sym_pid, &frames);
                stacks::drop_outside_code(&mut frames, &outside, &mut note);
                let kframes = if opts.kernel_stacks {
                    symbolizer
                        .kernel(&origins.stack(c.kernel_stack))
                        .iter()
                        .map(|f| f.to_string())
                        .collect()
                } else {
                    Vec::new()
                };
                // Python frames first (innermost first, as the native
                // frames read), then the native stack.
                let mut shown: Vec<String> = Vec::new();
                if let Some(py) = origins.python_stack(c.pid, c.py_stack) {
                    shown.extend(py.frames.iter().map(|f| f.to_string()));
                    // With Python frames the caller is named: a native walk
                    // cut short by the interpreter's missing frame pointers
                    // is no longer news.
                    if !py.frames.is_empty()
                        && note.as_deref().is_some_and(|n| n.contains("frame pointers"))
                    {
                        note = None;
                    }
                    if let Some(n) = py.note {
                        note = Some(match note {
                            Some(old) => format!("{n}; {old}"),
                            None => n,
                        });
                    }
                }
                shown.extend(frames.iter().map(|f| f.to_string()));
                (shown, note, kframes)
            }
            None => (
                Vec::new(),
                Some(if s.inode == 0 {
                    "never accepted: no accept() stack exists".to_string()
                } else {
                    "no stack: the socket was created before close-wait attached, or not by connect()".to_string()
                }),
                Vec::new(),
            ),
        };
        let container = owners
            .first()
            .and_then(|h| sockets::process_info(h.pid))
            .and_then(|i| crate::cgroup::container_of(&i.cgroup));
        stuck.push(StuckSocket {
            local,
            remote,
            netns: s.netns,
            container,
            age_ms,
            since_attach,
            age_estimated,
            unread_bytes: unread,
            eof_unread: s.eof_unread(),
            inode: s.inode,
            holders: sock_holders.clone(),
            origin: origin_kind,
            origin_task: created.as_ref().map(|c| Task {
                pid: c.pid,
                tid: c.tid,
                comm: c.comm.clone(),
            }),
            stack,
            stack_note,
            kernel_stack,
            listener: listener.map(|l| Listener {
                local: addr::normalize(l.local),
                holders: listener_holders.clone(),
                accept_queue: l.rx_queue,
                backlog: l.tx_queue,
            }),
            diagnosis: d,
            evidence: diagnosis::explain(d, &evidence),
            group: 0,
        });
    }
    // How long ago a traced connect()/accept() made fd `fd` of `pid`.
    // Matched by process and remote port: origins are keyed by socket, and
    // the descriptor leads to the socket's remote end through its inode.
    let age_ms = |pid: u32, fd: u32| {
        let link = crate::logged::read_link(Path::new(&format!("/proc/{pid}/fd/{fd}")))?;
        let inode: u64 = link
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        let sock = table.iter().find(|s| s.inode == inode)?;
        origins
            .connect_ts(pid, sock.remote.port())
            .map(|ts| entries.now_ns.saturating_sub(ts) / 1_000_000)
    };
    let groups = group(&mut stuck, table, &mut summaries, opts.budget, &age_ms);
    Findings {
        stuck,
        groups,
        close_wait_now,
        open_ages_us,
        uninvestigated,
        stacks_not_read,
    }
}

/// What the threads of `pid` are doing, read once and kept in `cache`.
fn summary_of<'a>(
    cache: &'a mut HashMap<u32, Option<threads::ThreadSummary>>,
    table: &[TcpSocket],
    pid: u32,
) -> Option<&'a threads::ThreadSummary> {
    cache
        .entry(pid)
        .or_insert_with(|| {
            let t = threads::threads_of(pid);
            (!t.is_empty()).then(|| {
                threads::summarize_with(&t, |fd| {
                    threads::describe_fd(pid, fd)
                        .map(|t| t.with_connection(|inode| connection_of(table, inode)))
                })
            })
        })
        .as_ref()
}

/// Holders shown when saying what blocked handlers do.
const BLOCKED_SHOWN: usize = 3;

/// What the holders of an accepted socket are blocked in, when some of
/// their threads are blocked in a call on other work
/// ([`threads::ThreadGroup::blocked_on_work`]): `python3[123]: 1 of 4
/// threads asleep in ... via poll(2) on fd 5 -> socket:[..] (..)`.
fn blocked_holders(
    holders: &[Holder],
    conn: (SocketAddr, SocketAddr),
    table: &[TcpSocket],
    cache: &mut HashMap<u32, Option<threads::ThreadSummary>>,
) -> Option<String> {
    let mut pids: Vec<(u32, &str)> = holders.iter().map(|h| (h.pid, h.comm.as_str())).collect();
    pids.dedup_by_key(|p| p.0);
    let mut parts = Vec::new();
    for (pid, comm) in pids {
        let Some(sum) = summary_of(cache, table, pid) else {
            continue;
        };
        let busy: Vec<String> = sum
            .groups
            .iter()
            .filter(|g| g.blocked_on_work(Some(conn)))
            .map(|g| threads::group_text(g, sum.total, true))
            .collect();
        if !busy.is_empty() {
            parts.push(format!("{comm}[{pid}]: {}", busy.join("; ")));
        }
    }
    if parts.is_empty() {
        return None;
    }
    let more = parts.len().saturating_sub(BLOCKED_SHOWN);
    parts.truncate(BLOCKED_SHOWN);
    let mut text = parts.join(" | ");
    if more > 0 {
        text.push_str(&format!(" | and {more} more holders"));
    }
    Some(text)
}

/// What the processes holding a listener are doing, for its unaccepted
/// sockets.
struct Accepting {
    /// `parent python3[1201] idle: ...; 6 of 6 workers busy: each ...`.
    text: String,
    /// Some holder is busy on other work (not idle in accept()).
    holders_busy: bool,
}

/// What the processes holding a listener are doing, for its unaccepted
/// sockets: `parent python3[1201] idle: ...; 6 of 6 workers busy: each ...`.
/// A holder whose parent also holds the listener is a worker; the others
/// (the parent of a prefork pool, or a lone server) are listed by name.
fn accepting_story(
    holders: &[Holder],
    table: &[TcpSocket],
    cache: &mut HashMap<u32, Option<threads::ThreadSummary>>,
    age_ms: &dyn Fn(u32, u32) -> Option<u64>,
) -> Option<Accepting> {
    let mut pids: Vec<(u32, String)> = holders.iter().map(|h| (h.pid, h.comm.clone())).collect();
    pids.sort_unstable();
    pids.dedup_by_key(|p| p.0);
    if pids.is_empty() {
        return None;
    }
    let held: HashSet<u32> = pids.iter().map(|p| p.0).collect();
    let ppid: HashMap<u32, u32> = pids
        .iter()
        .filter_map(|(p, _)| Some((*p, sockets::process_info(*p)?.ppid)))
        .collect();
    let is_worker = |p: u32| ppid.get(&p).is_some_and(|pp| held.contains(pp));
    // Per holder: pid, comm, worker?, what it is busy with (None: idle),
    // its thread summary.
    type Doing = (
        u32,
        String,
        bool,
        Option<Vec<(String, Option<u64>)>>,
        String,
    );
    let mut doing: Vec<Doing> = Vec::new();
    for (pid, comm) in &pids {
        let Some(sum) = summary_of(cache, table, *pid) else {
            continue;
        };
        let busy: Vec<(String, Option<u64>)> = sum
            .groups
            .iter()
            .filter(|g| g.blocked_on_work(None))
            .map(|g| (busy_text(g), busy_fd(g).and_then(|fd| age_ms(*pid, fd))))
            .collect();
        doing.push((
            *pid,
            comm.clone(),
            is_worker(*pid),
            (!busy.is_empty()).then_some(busy),
            sum.text.clone(),
        ));
    }
    let mut parts = Vec::new();
    for (pid, comm, _, busy, text) in doing.iter().filter(|d| !d.2) {
        let role = if doing.iter().any(|d| d.2 && ppid.get(&d.0) == Some(pid)) {
            "parent "
        } else {
            ""
        };
        match busy {
            Some(b) => parts.push(format!(
                "{role}{comm}[{pid}] busy: {}",
                b.iter()
                    .map(|(t, age)| format!("{t}{}", opened(age.iter().copied())))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            None => parts.push(format!("{role}{comm}[{pid}] idle: {text}")),
        }
    }
    let workers: Vec<_> = doing.iter().filter(|d| d.2).collect();
    if !workers.is_empty() {
        let busy: Vec<_> = workers.iter().filter(|d| d.3.is_some()).collect();
        let mut t = format!("{} of {} workers busy", busy.len(), workers.len());
        // What they wait in and on, same text counted once.
        let mut seen: Vec<(String, usize, Vec<u64>)> = Vec::new();
        for w in &busy {
            for (b, age) in w.3.iter().flatten() {
                match seen.iter_mut().find(|(s, _, _)| s == b) {
                    Some(e) => {
                        e.1 += 1;
                        e.2.extend(age);
                    }
                    None => seen.push((b.clone(), 1, age.iter().copied().collect())),
                }
            }
        }
        seen.sort_by_key(|e| std::cmp::Reverse(e.1));
        if !seen.is_empty() {
            t.push_str(": ");
            let shown: Vec<String> = seen
                .iter()
                .take(3)
                .map(|(s, n, ages)| {
                    let s = format!("{s}{}", opened(ages.iter().copied()));
                    if *n == busy.len() && busy.len() > 1 {
                        format!("each {s}")
                    } else if busy.len() > 1 {
                        format!("{n} {s}")
                    } else {
                        s
                    }
                })
                .collect();
            t.push_str(&shown.join("; "));
        }
        parts.push(t);
    }
    let holders_busy = doing.iter().any(|d| d.3.is_some());
    (!parts.is_empty()).then(|| Accepting {
        text: parts.join("; "),
        holders_busy,
    })
}

/// ` opened 31.0s ago`, ` opened 1.2s-3.4s ago` for several; empty for
/// none (the connect() was not traced).
fn opened(ages: impl Iterator<Item = u64>) -> String {
    let ages: Vec<u64> = ages.collect();
    match (ages.iter().min(), ages.iter().max()) {
        (Some(&a), Some(&b))
            if a == b || crate::report::fmt_ms(a as f64) == crate::report::fmt_ms(b as f64) =>
        {
            format!(" opened {} ago", crate::report::fmt_ms(b as f64))
        }
        (Some(&a), Some(&b)) => format!(
            " opened {}-{} ago",
            crate::report::fmt_ms(a as f64),
            crate::report::fmt_ms(b as f64)
        ),
        _ => String::new(),
    }
}

/// The fd of the first non-listening connection a busy group waits on.
fn busy_fd(g: &threads::ThreadGroup) -> Option<u32> {
    let live = |c: &threads::Connection| c.state != tcp_state::LISTEN;
    if g.connection.as_ref().is_some_and(live) {
        return g.fd;
    }
    g.waits_on
        .iter()
        .find(|w| w.connection.as_ref().is_some_and(live))
        .map(|w| w.fd)
}

/// What a busy thread group waits in and on, without fd numbers or inodes
/// (they differ between the processes of a pool): `waiting in poll(2) on a
/// connection to 127.0.0.1:9000`, `waiting in write(2) on a pipe`.
fn busy_text(g: &threads::ThreadGroup) -> String {
    let call = g.syscall.as_deref().unwrap_or("?");
    let mut peers: Vec<String> = g
        .connections()
        .filter(|c| c.state != tcp_state::LISTEN)
        .map(|c| c.remote.to_string())
        .collect();
    peers.sort();
    peers.dedup();
    let on = if !peers.is_empty() {
        format!(" on a connection to {}", peers.join(", "))
    } else if g
        .fd_target
        .iter()
        .chain(g.waits_on.iter().filter_map(|w| w.target.as_ref()))
        .any(|t| t.starts_with("pipe:["))
    {
        " on a pipe".to_owned()
    } else {
        g.fd_target
            .as_ref()
            .map(|t| format!(" on {t}"))
            .unwrap_or_default()
    };
    format!("waiting in {call}(2){on}")
}

/// The connection behind socket `inode` in `table`, e.g.
/// `127.0.0.1:41000 -> 10.0.0.7:80 ESTABLISHED`: a thread blocked on it is
/// then named with the upstream it waits for.
fn connection_of(table: &[TcpSocket], inode: u64) -> Option<threads::Connection> {
    table
        .iter()
        .find(|s| s.inode == inode && inode != 0)
        .map(|s| {
            let (_, local, remote) = tuple(s);
            threads::Connection {
                local,
                remote,
                state: s.state,
            }
        })
}

/// The process a stuck socket is reported under: the creator when traced,
/// else its first holder, else (never accepted) the listener's first holder.
fn owner(s: &StuckSocket) -> Option<(u32, &str)> {
    s.origin_task
        .as_ref()
        .map(|t| (t.pid, t.comm.as_str()))
        .or_else(|| s.holders.first().map(|h| (h.pid, h.comm.as_str())))
        .or_else(|| {
            s.listener
                .as_ref()
                .and_then(|l| l.holders.first())
                .map(|h| (h.pid, h.comm.as_str()))
        })
}

/// The functions of a stack, without offsets or lines: one call path may
/// stop at different offsets (a syscall wrapper's fast and slow paths).
/// A run of unsymbolized frames counts as one: a frame-pointer walk that
/// strays into data returns a varying number of them for one call path.
fn stack_key(stack: &[String]) -> String {
    let mut names: Vec<&str> = stack
        .iter()
        .map(|f| {
            let name = f.split([' ', '+']).next().unwrap_or("");
            if name.starts_with("0x") {
                "?"
            } else {
                name
            }
        })
        .collect();
    names.dedup_by(|a, b| *a == "?" && *b == "?");
    names.join(";")
}

/// The ephemeral port range (`net.ipv4.ip_local_port_range`, "first last").
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut w = text.split_whitespace().map(str::parse::<u16>);
    match (w.next(), w.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a <= b => Some((a, b)),
        _ => None,
    }
}

fn local_port_range() -> Option<(u16, u16)> {
    parse_port_range(&crate::logged::read_to_string(Path::new(
        "/proc/sys/net/ipv4/ip_local_port_range",
    ))?)
}

/// Local ports from the ephemeral range that the connected sockets of a
/// group hold toward their peer (a local port can be reused toward another
/// peer, so the range is what is left toward this one).
fn ports_held(
    members: &[&StuckSocket],
    peer: Peer,
    range: Option<(u16, u16)>,
) -> Option<LocalPorts> {
    let (first, last) = range?;
    if members.iter().any(|s| s.origin == Origin::Accept) {
        return None;
    }
    let held: HashSet<u16> = members
        .iter()
        .map(|s| s.local.port())
        .filter(|p| (first..=last).contains(p))
        .collect();
    (!held.is_empty()).then_some(LocalPorts {
        held: held.len(),
        range_first: first,
        range_last: last,
        peer,
    })
}

/// What a process pool is known by: executable, parent, command line.
type PoolId = (String, u32, String);

/// The pool of a live process (None when it is gone or init's child:
/// unrelated daemons share init as parent).
fn pool_id(pid: u32) -> Option<PoolId> {
    let info = sockets::process_info(pid)?;
    if info.ppid <= 1 {
        return None;
    }
    let exe = crate::logged::read_link(Path::new(&format!("/proc/{pid}/exe")))?
        .to_string_lossy()
        .into_owned();
    Some((exe, info.ppid, info.cmdline))
}

/// A group's owner: one process, or a pool of several.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OwnerKey {
    Process(Option<u32>),
    Pool(PoolId),
}

/// Groups the stuck sockets (same diagnosis, stack functions and peer, and
/// the same process or process pool), biggest first, and sets each
/// socket's `group` index. Processes are pooled when several owners share
/// executable, parent and command line (prefork workers).
fn group(
    stuck: &mut [StuckSocket],
    table: &[TcpSocket],
    summaries: &mut HashMap<u32, Option<threads::ThreadSummary>>,
    budget: &Budget,
    age_ms: &dyn Fn(u32, u32) -> Option<u64>,
) -> Vec<StuckGroup> {
    let owner_pids: HashSet<u32> = stuck.iter().filter_map(|s| owner(s).map(|o| o.0)).collect();
    let pools: HashMap<u32, PoolId> = owner_pids
        .iter()
        .filter_map(|&p| Some((p, pool_id(p)?)))
        .collect();
    let mut pool_size: HashMap<&PoolId, usize> = HashMap::new();
    for id in pools.values() {
        *pool_size.entry(id).or_default() += 1;
    }
    let key_of = |pid: Option<u32>| -> OwnerKey {
        match pid.and_then(|p| pools.get(&p)) {
            Some(id) if pool_size.get(id).copied().unwrap_or(0) > 1 => OwnerKey::Pool(id.clone()),
            _ => OwnerKey::Process(pid),
        }
    };
    let mut groups: Vec<StuckGroup> = Vec::new();
    // Per group: pid -> (comm, count, oldest, unread).
    let mut per_pid: Vec<std::collections::BTreeMap<u32, (String, usize, u64, u64)>> = Vec::new();
    let mut index: HashMap<(Diagnosis, OwnerKey, String, Peer), usize> = HashMap::new();
    let mut member_of = Vec::with_capacity(stuck.len());
    for s in stuck.iter() {
        let owner = owner(s);
        let pid = owner.map(|(pid, _)| pid);
        let peer = Peer::of(s.origin, s.remote);
        let key = (s.diagnosis, key_of(pid), stack_key(&s.stack), peer);
        let gi = *index.get(&key).unwrap_or(&groups.len());
        member_of.push(gi);
        if gi == groups.len() {
            index.insert(key, gi);
            groups.push(StuckGroup {
                diagnosis: s.diagnosis,
                count: 0,
                pid,
                comm: owner.map(|(_, c)| c.to_owned()).unwrap_or_default(),
                peer,
                oldest_age_ms: 0,
                unread_bytes: 0,
                stack: s.stack.clone(),
                threads: None,
                evidence: s.evidence.clone(),
                local_ports: None,
                cmdline: String::new(),
                pool: None,
                accepting: None,
            });
            per_pid.push(Default::default());
        }
        let g = &mut groups[gi];
        g.count += 1;
        g.oldest_age_ms = g.oldest_age_ms.max(s.age_ms);
        g.unread_bytes += s.unread_bytes;
        if let Some((p, comm)) = owner {
            let m = per_pid[gi]
                .entry(p)
                .or_insert_with(|| (comm.to_owned(), 0, 0, 0));
            m.1 += 1;
            m.2 = m.2.max(s.age_ms);
            m.3 += s.unread_bytes;
        }
    }
    for (gi, g) in groups.iter_mut().enumerate() {
        if per_pid[gi].len() > 1 {
            // The pool is named by its lowest pid.
            let first = per_pid[gi].keys().next().copied();
            if let Some((first, id)) = first.and_then(|p| Some((p, pools.get(&p)?))) {
                g.pid = Some(first);
                g.comm = per_pid[gi][&first].0.clone();
                g.pool = Some(Pool {
                    exe: id.0.clone(),
                    parent: id.1,
                    processes: per_pid[gi]
                        .iter()
                        .map(|(&pid, (comm, count, oldest, unread))| PoolMember {
                            pid,
                            comm: comm.clone(),
                            count: *count,
                            oldest_age_ms: *oldest,
                            unread_bytes: *unread,
                            threads: (!budget.deep_spent())
                                .then(|| summary_of(summaries, table, pid).map(|t| t.text.clone()))
                                .flatten(),
                        })
                        .collect(),
                });
            }
        }
        if let Some(pid) = g.pid {
            g.cmdline = sockets::process_info(pid)
                .map(|i| i.cmdline)
                .unwrap_or_default();
        }
        // Out of budget, groups go without their threads.
        if let Some(pid) = g.pid.filter(|_| !budget.deep_spent()) {
            if let Some(summary) = summary_of(summaries, table, pid) {
                let mut summary = summary.clone();
                crate::runtimes::annotate(pid, &mut summary);
                g.threads = Some(summary);
            }
        }
        if g.diagnosis == Diagnosis::Unaccepted {
            let mut members = stuck.iter().zip(&member_of).filter(|(_, &m)| m == gi);
            let first_unread = members.clone().next().map_or(0, |(s, _)| s.unread_bytes);
            if let Some(l) = members.find_map(|(s, _)| s.listener.as_ref()) {
                if !budget.deep_spent() {
                    if let Some(a) = accepting_story(&l.holders, table, summaries, age_ms) {
                        if a.holders_busy {
                            // The first socket's explanation, told with the story.
                            g.evidence = diagnosis::explain(
                                Diagnosis::Unaccepted,
                                &Evidence {
                                    unaccepted: true,
                                    unread_bytes: first_unread,
                                    listener_holders_busy: true,
                                    ..Evidence::default()
                                },
                            );
                        }
                        g.accepting = Some(a.text);
                    }
                }
                g.evidence = format!(
                    "{}; listener {} accept queue {}/{}",
                    g.evidence, l.local, l.accept_queue, l.backlog
                );
            }
        }
        if g.count > 1 {
            g.evidence = format!(
                "{} sockets, {} unread bytes in all; first: {}",
                g.count, g.unread_bytes, g.evidence
            );
        }
    }
    let range = local_port_range();
    for (gi, g) in groups.iter_mut().enumerate() {
        let members: Vec<&StuckSocket> = stuck
            .iter()
            .zip(&member_of)
            .filter(|(_, &m)| m == gi)
            .map(|(s, _)| s)
            .collect();
        g.local_ports = ports_held(&members, g.peer, range);
    }
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&groups[a], &groups[b]);
        b.count
            .cmp(&a.count)
            .then(b.oldest_age_ms.cmp(&a.oldest_age_ms))
    });
    let mut rank = vec![0; groups.len()];
    for (new, &old) in order.iter().enumerate() {
        rank[old] = new;
    }
    for (s, &m) in stuck.iter_mut().zip(&member_of) {
        s.group = rank[m];
    }
    let mut slots: Vec<Option<StuckGroup>> = groups.into_iter().map(Some).collect();
    order.iter().filter_map(|&old| slots[old].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_threads_wait_on_are_named() {
        let sock = |inode, state, l: &str, r: &str| TcpSocket {
            inode,
            ..sock(l, r, state)
        };
        let table = [
            sock(
                12,
                tcp_state::ESTABLISHED,
                "127.0.0.1:41000",
                "127.0.0.1:9000",
            ),
            sock(123, tcp_state::LISTEN, "0.0.0.0:8080", "0.0.0.0:0"),
        ];
        let thread = |tid, fd| threads::ThreadState {
            tid,
            comm: "srv".into(),
            state: 'S',
            wchan: "x".into(),
            syscall: Some(threads::SyscallInfo {
                nr: 45,
                name: "recvfrom".into(),
                args: [fd, 0, 0, 0, 0, 0],
            }),
            kernel_stack: Vec::new(),
            waits_on: Vec::new(),
        };
        let targets: HashMap<u32, threads::FdTarget> = [
            (5, "socket:[12]"),
            (6, "socket:[12]"),
            (3, "socket:[123]"),
            (2, "pipe:[7]"),
        ]
        .into_iter()
        .map(|(fd, link)| (fd, threads::classify_link(link)))
        .collect();
        let s = threads::summarize_with(
            &[thread(1, 5), thread(2, 6), thread(3, 3), thread(4, 2)],
            |fd| {
                targets
                    .get(&fd)
                    .cloned()
                    .map(|t| t.with_connection(|inode| connection_of(&table, inode)))
            },
        );
        let target = |fd| {
            s.groups
                .iter()
                .find(|g| g.fd == Some(fd))
                .and_then(|g| g.fd_target.clone())
        };
        let up = "socket:[12] (127.0.0.1:41000 -> 127.0.0.1:9000 ESTABLISHED)";
        assert_eq!(target(5).as_deref(), Some(up));
        assert_eq!(target(6).as_deref(), Some(up));
        assert_eq!(
            target(3).as_deref(),
            Some("socket:[123] (0.0.0.0:8080 LISTEN)")
        );
        assert_eq!(target(2).as_deref(), Some("pipe:[7] with no reader"));
        assert!(s.text.contains(&format!("on fd 5 -> {up}")), "{}", s.text);
        assert!(s.text.contains(&format!("on fd 6 -> {up}")), "{}", s.text);
        assert!(
            s.text
                .contains("on fd 3 -> socket:[123] (0.0.0.0:8080 LISTEN)"),
            "{}",
            s.text
        );
    }

    #[test]
    fn port_range_and_ports_held() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("x"), None);
        let mut a = crate::report::tests_support::stuck("127.0.0.1:40000", Origin::Connect);
        let b = crate::report::tests_support::stuck("127.0.0.1:40001", Origin::Unknown);
        // Outside the range: not an ephemeral port.
        let c = crate::report::tests_support::stuck("127.0.0.1:8080", Origin::Connect);
        let p = ports_held(
            &[&a, &b, &c],
            Peer::Endpoint("127.0.0.1:23006".parse().unwrap()),
            Some((32768, 60999)),
        )
        .unwrap();
        assert_eq!(p.held, 2);
        assert_eq!(p.range_size(), 28232);
        assert_eq!(
            p.text(),
            "2 of 28,232 local ports (net.ipv4.ip_local_port_range) held toward 127.0.0.1:23006"
        );
        // Accepted sockets use the listener's port: nothing to say.
        a.origin = Origin::Accept;
        let host = Peer::Host("127.0.0.1".parse().unwrap());
        assert!(ports_held(&[&a, &b], host, Some((32768, 60999))).is_none());
        assert!(ports_held(&[&b], host, None).is_none());
    }

    #[test]
    fn stack_key_ignores_offsets_and_lines() {
        let a = vec![
            "accept4+0x58 (accept4.c:31)".to_string(),
            "0x556a53a73850 [[heap]]".to_string(),
        ];
        let b = vec![
            "accept4+0x13 (accept4.c:31)".to_string(),
            "0x556a53a79999 [[heap]]".to_string(),
        ];
        assert_eq!(stack_key(&a), stack_key(&b));
        assert_eq!(stack_key(&a), "accept4;?");
        // However many frames a walk into data returns.
        let mut d = b.clone();
        d.push("0x1 [unknown]".to_string());
        assert_eq!(stack_key(&d), stack_key(&a));
        let c = vec![
            "connect+0x10".to_string(),
            "open_leaky_connection (leaky.c:58)".to_string(),
        ];
        assert_eq!(stack_key(&c), "connect;open_leaky_connection");
        assert_ne!(stack_key(&a), stack_key(&c));
    }

    fn holder(pid: u32, fd: u32) -> Holder {
        Holder {
            pid,
            fd,
            comm: "job".into(),
            cmdline: String::new(),
        }
    }

    /// A worker (pid 4_200_001, gone: above PID_MAX_LIMIT, so never in
    /// /proc) connected the socket; only another process holds it now.
    #[test]
    fn traced_creator_that_let_go_is_named_from_the_holders() {
        let o = SockOrigin {
            ts_ns: 1,
            pid_tgid: (4_200_001u64 << 32) | 4_200_003,
            kind: origin::CONNECT,
            user_stack: -1,
            kernel_stack: -1,
            dport: 80,
            _pad: 0,
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
            py_stack: 0,
        };
        let child = holder(4_200_002, 5);
        let acc = &mut Acceptors::default();
        let c =
            find_creator(Some(o), None, std::slice::from_ref(&child), None, acc).expect("creator");
        assert_eq!(
            (c.pid, c.tid, c.comm.as_str()),
            (4_200_001, 4_200_003, "worker")
        );
        assert!(!c.creator_holds, "the worker holds nothing any more");
        // The creator among the holders: it still holds it.
        let both = [holder(4_200_001, 5), child.clone()];
        assert!(
            find_creator(Some(o), None, &both, None, acc)
                .unwrap()
                .creator_holds
        );
        // Nothing traced, no listener: nothing is claimed.
        assert!(find_creator(None, Some(1), &[child], None, acc).is_none());
    }

    /// An accepted socket without a traced accept(), whose holder holds the
    /// listener but does not accept on it (no thread in accept(), no epoll):
    /// the holder created it (an ancestor would be named instead, had the
    /// holder started after the socket entered CLOSE_WAIT).
    #[test]
    fn accepted_creator_comes_from_the_listener() {
        let me = std::process::id();
        let sock_holder = holder(me, 7);
        let listener = [holder(me, 3)];
        let acc = &mut Acceptors::default();
        let one = std::slice::from_ref(&sock_holder);
        let c = find_creator(None, Some(u64::MAX / 2), one, Some(&listener), acc).expect("creator");
        assert_eq!(c.pid, me);
        assert!(c.creator_holds && c.from_listener);
        assert_eq!(c.kind, origin::ACCEPT);
        // We started long after "time 1" (inherited), but no ancestor holds
        // the listener: the holder of the listener is still named, holding.
        let c = find_creator(None, Some(1), one, Some(&listener), acc).expect("creator");
        assert!(c.pid == me && c.creator_holds);
        // Accepted before attach (no entry seen): nothing is claimed.
        assert!(find_creator(None, None, one, Some(&listener), acc).is_none());
    }

    fn sock(local: &str, remote: &str, state: u8) -> TcpSocket {
        TcpSocket {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            inode: 1,
            rx_queue: 0,
            tx_queue: 0,
            uid: 0,
            last_data_recv_ms: None,
            last_ack_recv_ms: None,
            netns: 0,
        }
    }

    #[test]
    fn listeners_and_peers_are_looked_up_in_the_socket_namespace() {
        let in_ns = |netns, inode, l: &str, r: &str, state| TcpSocket {
            netns,
            inode,
            ..sock(l, r, state)
        };
        let table = [
            in_ns(11, 100, "0.0.0.0:9099", "0.0.0.0:0", tcp_state::LISTEN),
            in_ns(12, 200, "127.0.0.1:9099", "0.0.0.0:0", tcp_state::LISTEN),
            in_ns(
                12,
                201,
                "127.0.0.1:45123",
                "127.0.0.1:9099",
                tcp_state::ESTABLISHED,
            ),
        ];
        let local = "127.0.0.1:9099".parse().unwrap();
        assert_eq!(listener_for(&table, 11, local).map(|l| l.inode), Some(100));
        assert_eq!(listener_for(&table, 12, local).map(|l| l.inode), Some(200));
        assert!(listener_for(&table, 13, local).is_none());
        let server: SocketAddr = "127.0.0.1:9099".parse().unwrap();
        // Namespace 12 has a live connection and a listener for the peer, 11 none of its own.
        assert_eq!(live_to_peer(&table, 12, Origin::Connect, server), 2);
        assert_eq!(live_to_peer(&table, 11, Origin::Connect, server), 1);
        assert_eq!(live_to_peer(&table, 13, Origin::Connect, server), 0);
        let t = tuple(&table[2]);
        assert_eq!(t.0, 12);
    }

    #[test]
    fn a_local_peer_that_still_listens_is_live() {
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let leaked = sock("127.0.0.1:50000", "127.0.0.1:8080", tcp_state::CLOSE_WAIT);
        assert_eq!(
            live_to_peer(std::slice::from_ref(&leaked), 0, Origin::Connect, server),
            0
        );
        for l in ["127.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"] {
            let table = [leaked.clone(), sock(l, "0.0.0.0:0", tcp_state::LISTEN)];
            assert_eq!(live_to_peer(&table, 0, Origin::Connect, server), 1, "{l}");
        }
        // Another port, or a wildcard listener for a peer on another host,
        // is not that peer.
        let other = [sock("127.0.0.1:8081", "0.0.0.0:0", tcp_state::LISTEN)];
        assert_eq!(live_to_peer(&other, 0, Origin::Connect, server), 0);
        let remote: SocketAddr = "10.1.6.104:8080".parse().unwrap();
        let wildcard = [sock("0.0.0.0:8080", "0.0.0.0:0", tcp_state::LISTEN)];
        assert_eq!(live_to_peer(&wildcard, 0, Origin::Connect, remote), 0);
        // An accepted socket's peer is a client: our listener says nothing.
        assert_eq!(live_to_peer(&wildcard, 0, Origin::Accept, server), 0);
        let est = [sock(
            "127.0.0.1:50001",
            "127.0.0.1:8080",
            tcp_state::ESTABLISHED,
        )];
        assert_eq!(live_to_peer(&est, 0, Origin::Connect, server), 1);
    }

    /// Out of the deep budget, a stuck socket is still reported with its
    /// age, holders and diagnosis; only its stack is left unread, and
    /// counted. A real socket held by this process makes the holder scan
    /// find it.
    #[test]
    fn sockets_past_the_deep_budget_are_reported_without_their_stack() {
        use std::{
            net::{TcpListener, TcpStream},
            os::fd::AsRawFd,
            time::Instant,
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (held, _) = l.accept().unwrap();
        drop(c);
        let link = std::fs::read_link(format!("/proc/self/fd/{}", held.as_raw_fd())).unwrap();
        let inode: u64 = link.to_str().unwrap()[8..]
            .trim_end_matches(']')
            .parse()
            .unwrap();
        let cw = TcpSocket {
            inode,
            ..sock(
                &held.local_addr().unwrap().to_string(),
                &held.peer_addr().unwrap().to_string(),
                tcp_state::CLOSE_WAIT,
            )
        };
        let skaddr = 0xffff_8880_1234_5678;
        let mut entries = CloseWaitEntries {
            now_ns: 20_000_000_000,
            ..Default::default()
        };
        entries.entered.insert(tuple(&cw), 10_000_000_000);
        entries.skaddr.insert(tuple(&cw), skaddr);
        let pid = std::process::id();
        struct Traced(SockOrigin, u64);
        impl Origins for Traced {
            fn sock_origin(&self, sk: u64) -> Option<SockOrigin> {
                (sk == self.1).then_some(self.0)
            }
            fn stack(&self, _: i32) -> Vec<u64> {
                Vec::new()
            }
        }
        let origins = Traced(
            SockOrigin {
                ts_ns: 9_000_000_000,
                pid_tgid: (u64::from(pid) << 32) | u64::from(pid),
                kind: origin::CONNECT,
                user_stack: 7,
                kernel_stack: -1,
                dport: 0,
                _pad: 0,
                comm: [0; 16],
                py_stack: 0,
            },
            skaddr,
        );
        let filters = Filters::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        for (budget, read) in [
            (Budget::until(later), true),
            (Budget::until(later).deep_until(now), false),
        ] {
            let opts = Options {
                threshold: Duration::from_secs(1),
                filters: &filters,
                kernel_stacks: false,
                user_stacks: true,
                budget: &budget,
            };
            let f = investigate(
                std::slice::from_ref(&cw),
                &entries,
                &opts,
                &origins,
                &mut Symbolizer::new(),
            );
            assert_eq!((f.stuck.len(), f.uninvestigated), (1, 0), "read {read}");
            assert_eq!(f.stacks_not_read, u64::from(!read));
            let s = &f.stuck[0];
            assert_eq!(s.age_ms, 10_000);
            assert_eq!(s.holders.iter().map(|h| h.pid).collect::<Vec<_>>(), [pid]);
            assert_eq!(s.origin, Origin::Connect);
            let not_read = s
                .stack_note
                .as_deref()
                .is_some_and(|n| n.starts_with("stack not read"));
            assert_eq!(not_read, !read, "{:?}", s.stack_note);
            assert_eq!(f.groups.len(), 1);
        }
    }
}
