//! Kernel side of close-wait, built around the socket (its kernel address),
//! not the file descriptor.
//!
//! The state hook is one of three programs, the first that loads and
//! attaches (userspace probes them): a raw tracepoint on inet_sock_set_state
//! (states from its arguments, the sock's fields at BTF offsets read only on
//! the rare paths), the classic tracepoint read with direct context loads
//! (record layout as compiled in), or read with helpers at the offsets of
//! the running kernel's `format`. The other hooks are classic tracepoints,
//! and tcp_close() through fentry or kprobe where the kernel allows it
//! (close_hook.rs). No socket destroy is hooked: a socket's kernel-side
//! entry ends at CLOSE. No `syscalls:*` tracepoint is attached
//! by default (enabling any sends every syscall of every task through the
//! slow path): the origin of a connected socket is taken where it goes
//! CLOSE -> SYN_SENT, inside connect() in the caller's context; accept()
//! stacks are opt-in (`--accept-stacks`). Tracepoint record offsets are never
//! hard-coded: userspace reads them from tracefs `format` files and passes them
//! in as globals. Every failure to record (ring buffer full, map insert failed,
//! stack not taken) is counted in `COUNTERS`, which userspace reports.
#![no_std]
#![no_main]

mod close_hook;
mod filter_only;
mod pystack;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext, Global,
};
use close_wait_common::{
    counter, flags, kind, origin, stack_mode, tcp_state, Event, FdOffsets, NetnsOffsets,
    OtherOffsets, SockOffsets, SockOrigin, StateOffsets, AF_INET, IPPROTO_TCP, STATE_LAYOUT,
};

#[unsafe(no_mangle)]
static STATE_OFF: Global<StateOffsets> = Global::new(StateOffsets {
    skaddr: 0,
    oldstate: 0,
    newstate: 0,
    sport: 0,
    dport: 0,
    family: 0,
    protocol: 0,
    saddr: 0,
    daddr: 0,
    saddr_v6: 0,
    daddr_v6: 0,
    _pad: 0,
});
#[unsafe(no_mangle)]
static OTHER_OFF: Global<OtherOffsets> = Global::new(OtherOffsets {
    receive_reset_skaddr: 0,
    accept4_ret: 0,
    accept_ret: 0,
    _pad: 0,
});
/// Offsets into `struct sock` from BTF, for the raw tracepoint (and
/// `sk_err` for the classic one too); zeros without BTF.
#[unsafe(no_mangle)]
static SOCK_OFF: Global<SockOffsets> = Global::new(SockOffsets {
    protocol: 0,
    family: 0,
    sport: 0,
    dport: 0,
    saddr: 0,
    daddr: 0,
    v6_rcv_saddr: 0,
    v6_daddr: 0,
    err: 0,
    valid: 0,
});
/// Where a sock's network namespace inode is (from BTF); zero when unknown.
#[unsafe(no_mangle)]
static NETNS_OFF: Global<NetnsOffsets> = Global::new(NetnsOffsets {
    skc_net: 0,
    net_ns_inum: 0,
});
/// From a file descriptor to its sock (BTF; `--accept-stacks` only).
#[unsafe(no_mangle)]
static FD_OFF: Global<FdOffsets> = Global::new(FdOffsets {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
});
/// 1 when `LPORTS` holds the only local ports to keep.
#[unsafe(no_mangle)]
static FILTER_LPORT: Global<u8> = Global::new(0);
/// 1 when `DPORTS` holds the only remote ports to keep.
#[unsafe(no_mangle)]
static FILTER_DPORT: Global<u8> = Global::new(0);
/// Which stacks to take at connect/accept (`stack_mode`).
#[unsafe(no_mangle)]
static STACK_MODE: Global<u8> = Global::new(stack_mode::USER);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);
/// Sockets seen entering CLOSE_WAIT -> entry time; removed when the socket
/// reaches CLOSE (with tcp_close() hooked: at the later of CLOSE and
/// tcp_close(), so the close() after a shutdown() is seen). A plain hash, allocated as used (only CLOSE_WAIT sockets enter it): it
/// never drops an entry behind our back, so inserted - removed is exactly
/// its size, and an insert refused when full is counted as an eviction.
#[map]
pub(crate) static SOCKS: HashMap<u64, SockEntry> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);
/// Socket kernel address -> the connect() (or, with `--accept-stacks`, the
/// accept()) that made it. Filled on CLOSE -> SYN_SENT, emptied when the
/// socket reaches CLOSE: only live connections are in it, so its size is the
/// number of connections open at once, not the connection rate. Per-CPU LRU
/// lists (no common LRU lock under churn); sized by userspace.
#[map]
static ORIGINS: LruHashMap<u64, SockOrigin> =
    LruHashMap::with_max_entries(65536, BPF_F_NO_COMMON_LRU);
/// Sized by userspace to `--stacks` (one entry when none are taken).
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static LPORTS: HashMap<u16, u8> = HashMap::with_max_entries(64, 0);
#[map]
static DPORTS: HashMap<u16, u8> = HashMap::with_max_entries(64, 0);
/// The last tcp_receive_reset on this CPU, for any socket: tcp_reset() fires
/// it right before tcp_done() moves the socket to CLOSE on the same CPU, so
/// a CLOSE_WAIT -> CLOSE of that socket just after is a peer reset, even for
/// a socket not tracked in `SOCKS` (entered before attach, or evicted).
#[map]
static RESET_MARK: PerCpuArray<ResetMark> = PerCpuArray::with_max_entries(1, 0);

/// Entry 0 is 1 when a tcp_close() program is attached (written by
/// userspace after attaching it).
#[map]
static CLOSE_HOOKED: Array<u32> = Array::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct ResetMark {
    skaddr: u64,
    ts_ns: u64,
}

/// A `SOCKS` value.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SockEntry {
    /// Monotonic time of the CLOSE_WAIT entry.
    pub(crate) entered_ns: u64,
    /// `SEEN_CLOSE` | `SEEN_DONE`.
    pub(crate) seen: u64,
    /// What was read of the socket at its entry: its exit sends these
    /// again without reading the socket.
    pub(crate) fields: SockFields,
    pub(crate) _pad: u32,
}

/// A socket's family, ports, addresses and network namespace, as its
/// CLOSE_WAIT entry event carries them.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SockFields {
    pub(crate) saddr: [u8; 16],
    pub(crate) daddr: [u8; 16],
    pub(crate) netns: u32,
    pub(crate) family: u16,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) _pad: u16,
}

impl SockFields {
    #[inline(always)]
    fn read<S: StateSource>(src: &S, skaddr: u64, sport: u16, dport: u16) -> Result<Self, i64> {
        let family = src.family()?;
        let (saddr, daddr) = src.addrs(family)?;
        Ok(SockFields {
            saddr,
            daddr,
            netns: netns_of(skaddr),
            family,
            sport,
            dport,
            _pad: 0,
        })
    }
}

/// tcp_close() came (hooked).
pub(crate) const SEEN_CLOSE: u64 = 1;
/// The socket reached CLOSE.
pub(crate) const SEEN_DONE: u64 = 2;

/// Stack id stored when `--stacks` said not to take one (-ENOENT).
const NOT_TAKEN: i32 = -2;

/// A reset mark is consumed by its socket's CLOSE_WAIT -> CLOSE or cleared
/// at its socket's own move to CLOSE from any other state, so a later
/// socket at the same address never finds it. This bound is a second
/// guard only: wide enough for a guest whose vCPU is preempted between
/// tcp_reset()'s tracepoint and its tcp_done() (1 ms was missed under
/// emulation).
const RESET_MARK_MAX_AGE_NS: u64 = 1_000_000_000;

const BPF_F_USER_STACK: u64 = 1 << 8;
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_F_NO_COMMON_LRU: u32 = 2;
const BPF_NOEXIST: u64 = 1;
const E2BIG: i32 = 7;
const EPIPE: i32 = 32;
const ECONNRESET: i32 = 104;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Bytes waiting in the ring buffer before userspace is woken (about 300
/// events; the buffer holds 1 MiB).
const WAKEUP_BYTES: u64 = 32 * 1024;

#[inline(always)]
fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn count_removed() {
    count(counter::SOCK_REMOVED);
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: u32) -> Result<T, i64> {
    unsafe { ctx.read_at::<T>(off as usize) }.map_err(|_| {
        count(counter::READ_FAILED);
        0
    })
}

/// Network namespace inode of the socket at `skaddr`, 0 when unknown.
/// Two kernel reads; only on CLOSE_WAIT events, never per state change.
#[inline(always)]
pub(crate) fn netns_of(skaddr: u64) -> u32 {
    let off = NETNS_OFF.load();
    // skaddr 0: an event about a process, not a socket.
    if off.skc_net == 0 || skaddr == 0 {
        return 0;
    }
    let net = unsafe { bpf_probe_read_kernel((skaddr + off.skc_net as u64) as *const u64) };
    let Ok(net) = net else {
        count(counter::READ_FAILED);
        return 0;
    };
    if net == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel((net + off.net_ns_inum as u64) as *const u32) }.unwrap_or_else(
        |_| {
            count(counter::READ_FAILED);
            0
        },
    )
}

#[inline(always)]
fn port_kept(map: &HashMap<u16, u8>, enabled: u8, port: u16) -> bool {
    enabled == 0 || unsafe { map.get(&port) }.is_some()
}

#[inline(always)]
fn comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or([0u8; 16])
}

#[inline(always)]
pub(crate) fn emit(ev: &Event) {
    // Wake userspace only once a batch is waiting: one wake-up per event
    // costs more than the event itself under connection churn. Userspace
    // also drains on a short timer, so a lone event waits at most that long.
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<Event>(ev, flags).is_err() {
        count(counter::RINGBUF_LOST);
    }
}

/// [`emit`] for a rare event userspace must see at once (a new process to
/// look at for a CPython): wakes it now instead of at its next drain.
#[inline(always)]
pub(crate) fn emit_now(ev: &Event) {
    if EVENTS.output::<Event>(ev, BPF_RB_FORCE_WAKEUP).is_err() {
        count(counter::RINGBUF_LOST);
    }
}

/// What the state handler needs from the hook it runs under: the classic
/// tracepoint's record or, for the raw tracepoint, the sock itself at BTF
/// offsets. Only the states are read on every hit; the rest on the rare
/// paths (CLOSE_WAIT entry and exit, CLOSE -> SYN_SENT).
trait StateSource {
    fn skaddr(&self) -> Result<u64, i64>;
    /// The record's protocol filter, for the raw tracepoint a sock read.
    fn is_tcp(&self) -> Result<bool, i64>;
    /// (local, remote) ports, host order.
    fn ports(&self) -> Result<(u16, u16), i64>;
    /// Remote port, host order.
    fn dport(&self) -> Result<u16, i64>;
    fn family(&self) -> Result<u16, i64>;
    /// (local, remote) addresses; IPv4 in the first four bytes.
    fn addrs(&self, family: u16) -> Result<([u8; 16], [u8; 16]), i64>;
}

/// Classic tracepoint, fields read with helpers at the offsets from the
/// running kernel's tracefs `format`.
struct TpHelper<'a>(&'a TracePointContext);

impl StateSource for TpHelper<'_> {
    #[inline(always)]
    fn skaddr(&self) -> Result<u64, i64> {
        read(self.0, STATE_OFF.load().skaddr)
    }
    #[inline(always)]
    fn is_tcp(&self) -> Result<bool, i64> {
        Ok(read::<u16>(self.0, STATE_OFF.load().protocol)? == IPPROTO_TCP)
    }
    #[inline(always)]
    fn ports(&self) -> Result<(u16, u16), i64> {
        let off = STATE_OFF.load();
        Ok((read(self.0, off.sport)?, read(self.0, off.dport)?))
    }
    #[inline(always)]
    fn dport(&self) -> Result<u16, i64> {
        read(self.0, STATE_OFF.load().dport)
    }
    #[inline(always)]
    fn family(&self) -> Result<u16, i64> {
        read(self.0, STATE_OFF.load().family)
    }
    #[inline(always)]
    fn addrs(&self, family: u16) -> Result<([u8; 16], [u8; 16]), i64> {
        let off = STATE_OFF.load();
        let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
        if family == AF_INET {
            s[..4].copy_from_slice(&read::<[u8; 4]>(self.0, off.saddr)?);
            d[..4].copy_from_slice(&read::<[u8; 4]>(self.0, off.daddr)?);
        } else {
            s = read(self.0, off.saddr_v6)?;
            d = read(self.0, off.daddr_v6)?;
        }
        Ok((s, d))
    }
}

/// Classic tracepoint whose record has the layout compiled in
/// (`STATE_LAYOUT`): direct context loads, no helper call.
struct TpDirect<'a>(&'a TracePointContext);

/// A load from the tracepoint record at a constant offset (the verifier
/// takes only constant offsets from the context pointer).
macro_rules! ctx_load {
    ($ctx:expr, $t:ty, $field:ident) => {
        ctx_load!($ctx, $t, $field + 0)
    };
    ($ctx:expr, $t:ty, $field:ident + $past:expr) => {
        unsafe {
            core::ptr::read_volatile(
                ($ctx.as_ptr() as *const u8).add(STATE_LAYOUT.$field as usize + $past) as *const $t,
            )
        }
    };
}

impl StateSource for TpDirect<'_> {
    #[inline(always)]
    fn skaddr(&self) -> Result<u64, i64> {
        Ok(ctx_load!(self.0, u64, skaddr))
    }
    #[inline(always)]
    fn is_tcp(&self) -> Result<bool, i64> {
        Ok(ctx_load!(self.0, u16, protocol) == IPPROTO_TCP)
    }
    #[inline(always)]
    fn ports(&self) -> Result<(u16, u16), i64> {
        Ok((ctx_load!(self.0, u16, sport), ctx_load!(self.0, u16, dport)))
    }
    #[inline(always)]
    fn dport(&self) -> Result<u16, i64> {
        Ok(ctx_load!(self.0, u16, dport))
    }
    #[inline(always)]
    fn family(&self) -> Result<u16, i64> {
        Ok(ctx_load!(self.0, u16, family))
    }
    #[inline(always)]
    fn addrs(&self, family: u16) -> Result<([u8; 16], [u8; 16]), i64> {
        let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
        if family == AF_INET {
            s[..4].copy_from_slice(&ctx_load!(self.0, u32, saddr).to_ne_bytes());
            d[..4].copy_from_slice(&ctx_load!(self.0, u32, daddr).to_ne_bytes());
        } else {
            let s0: u64 = ctx_load!(self.0, u64, saddr_v6 + 0);
            let s1: u64 = ctx_load!(self.0, u64, saddr_v6 + 8);
            let d0: u64 = ctx_load!(self.0, u64, daddr_v6 + 0);
            let d1: u64 = ctx_load!(self.0, u64, daddr_v6 + 8);
            s[..8].copy_from_slice(&s0.to_ne_bytes());
            s[8..].copy_from_slice(&s1.to_ne_bytes());
            d[..8].copy_from_slice(&d0.to_ne_bytes());
            d[8..].copy_from_slice(&d1.to_ne_bytes());
        }
        Ok((s, d))
    }
}

/// Raw tracepoint: the sock from the arguments, its fields read at the
/// running kernel's BTF offsets (`SOCK_OFF`).
struct RawSock(u64);

impl RawSock {
    #[inline(always)]
    fn field<T>(&self, off: u32) -> Result<T, i64> {
        unsafe { bpf_probe_read_kernel((self.0 + off as u64) as *const T) }.map_err(|e| {
            count(counter::READ_FAILED);
            e as i64
        })
    }
}

impl StateSource for RawSock {
    #[inline(always)]
    fn skaddr(&self) -> Result<u64, i64> {
        Ok(self.0)
    }
    #[inline(always)]
    fn is_tcp(&self) -> Result<bool, i64> {
        Ok(self.field::<u16>(SOCK_OFF.load().protocol)? == IPPROTO_TCP)
    }
    #[inline(always)]
    fn ports(&self) -> Result<(u16, u16), i64> {
        let off = SOCK_OFF.load();
        Ok((
            u16::from_be(self.field(off.sport)?),
            u16::from_be(self.field(off.dport)?),
        ))
    }
    #[inline(always)]
    fn dport(&self) -> Result<u16, i64> {
        Ok(u16::from_be(self.field(SOCK_OFF.load().dport)?))
    }
    #[inline(always)]
    fn family(&self) -> Result<u16, i64> {
        self.field(SOCK_OFF.load().family)
    }
    #[inline(always)]
    fn addrs(&self, family: u16) -> Result<([u8; 16], [u8; 16]), i64> {
        let off = SOCK_OFF.load();
        let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
        if family == AF_INET {
            s[..4].copy_from_slice(&self.field::<[u8; 4]>(off.saddr)?);
            d[..4].copy_from_slice(&self.field::<[u8; 4]>(off.daddr)?);
        } else {
            s = self.field(off.v6_rcv_saddr)?;
            d = self.field(off.v6_daddr)?;
        }
        Ok((s, d))
    }
}

/// `raw_tp/inet_sock_set_state(const struct sock *sk, int oldstate, int
/// newstate)`: the states straight from the arguments, no record filled.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let oldstate: u64 = ctx.arg(1);
    let newstate: u64 = ctx.arg(2);
    let _ = on_state(&ctx, &RawSock(sk), oldstate as i32, newstate as i32);
    0
}

/// Classic tracepoint with the record layout compiled in.
#[tracepoint]
pub fn inet_sock_set_state_direct(ctx: TracePointContext) -> u32 {
    let src = TpDirect(&ctx);
    if let Ok(true) = src.is_tcp() {
        let oldstate = ctx_load!(ctx, i32, oldstate);
        let newstate = ctx_load!(ctx, i32, newstate);
        let _ = on_state(&ctx, &src, oldstate, newstate);
    }
    0
}

/// Classic tracepoint, any record layout (helper reads).
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let src = TpHelper(&ctx);
    let off = STATE_OFF.load();
    if let (Ok(true), Ok(oldstate), Ok(newstate)) = (
        src.is_tcp(),
        read::<i32>(&ctx, off.oldstate),
        read::<i32>(&ctx, off.newstate),
    ) {
        let _ = on_state(&ctx, &src, oldstate, newstate);
    }
    0
}

/// The classic programs filter the protocol from the record before this
/// (a load); the raw tracepoint only on the rare paths (a sock read).
#[inline(always)]
fn on_state<C: EbpfContext, S: StateSource>(
    ctx: &C,
    src: &S,
    oldstate: i32,
    newstate: i32,
) -> Result<(), i64> {
    let cw = tcp_state::CLOSE_WAIT as i32;
    let close = tcp_state::CLOSE as i32;
    if oldstate != cw && newstate != cw {
        if newstate == tcp_state::SYN_SENT as i32 && oldstate == close {
            if src.is_tcp()? {
                // The remote port is set by now (the local one is not, yet).
                on_connect(ctx, src.skaddr()?, src.dport()?);
            }
        } else if newstate == close {
            // The socket is done: its address may be reused by the next
            // socket allocated, which must not inherit this origin.
            let skaddr = src.skaddr()?;
            forget_origin(skaddr);
            clear_reset_mark(skaddr);
            if oldstate == tcp_state::LAST_ACK as i32 {
                // Only a socket that was in CLOSE_WAIT gets here.
                sock_done(skaddr);
            }
        }
        return Ok(());
    }
    if !src.is_tcp()? {
        return Ok(());
    }
    let skaddr = src.skaddr()?;
    let now = unsafe { bpf_ktime_get_ns() };
    // CLOSE_WAIT -> CLOSE: taken before any filter returns, so no mark
    // outlives its socket.
    let mut reset_received = false;
    if newstate == close {
        forget_origin(skaddr);
        reset_received = take_reset_mark(skaddr, now);
    }
    let mut ev_flags = 0u32;
    let mut entered_ns = 0u64;
    let fields;
    if newstate == cw {
        let (sport, dport) = src.ports()?;
        if !port_kept(&LPORTS, FILTER_LPORT.load(), sport)
            || !port_kept(&DPORTS, FILTER_DPORT.load(), dport)
        {
            return Ok(());
        }
        fields = SockFields::read(src, skaddr, sport, dport)?;
        let entry = SockEntry {
            entered_ns: now,
            seen: 0,
            fields,
            _pad: 0,
        };
        match SOCKS.insert(&skaddr, &entry, BPF_NOEXIST) {
            Ok(()) => {
                ev_flags |= flags::TRACKED;
                entered_ns = now;
                count(counter::SOCK_INSERTED);
            }
            Err(e) if e == -E2BIG => count(counter::SOCK_EVICTED),
            Err(_) => {
                // Already there (a second entry into CLOSE_WAIT is not
                // possible; keep the first time) or no memory.
                if let Some(t) = unsafe { SOCKS.get(&skaddr) } {
                    ev_flags |= flags::TRACKED;
                    entered_ns = t.entered_ns;
                } else {
                    count(counter::SOCK_INSERT_FAILED);
                }
            }
        }
    } else if let Some(t) = unsafe { SOCKS.get(&skaddr) } {
        // Its exit: the fields read at entry, no read of the socket.
        ev_flags |= flags::TRACKED;
        entered_ns = t.entered_ns;
        fields = t.fields;
    } else {
        let (sport, dport) = src.ports()?;
        if !port_kept(&LPORTS, FILTER_LPORT.load(), sport)
            || !port_kept(&DPORTS, FILTER_DPORT.load(), dport)
        {
            // Filtered out at entry (or entered before attach): only keep
            // it when its ports pass.
            return Ok(());
        }
        fields = SockFields::read(src, skaddr, sport, dport)?;
    }
    if oldstate == cw && newstate == close {
        if reset_received {
            ev_flags |= flags::RESET_RECEIVED;
        } else if timed_out(skaddr) {
            ev_flags |= flags::TIMED_OUT;
        }
        sock_done(skaddr);
    }
    let mut ev = event_in(kind::STATE, skaddr, now, entered_ns, ev_flags, fields.netns);
    ev.oldstate = oldstate as u8;
    ev.newstate = newstate as u8;
    ev.family = fields.family;
    ev.sport = fields.sport;
    ev.dport = fields.dport;
    ev.saddr = fields.saddr;
    ev.daddr = fields.daddr;
    emit(&ev);
    Ok(())
}

/// A CLOSE_WAIT -> CLOSE without a reset received: a timer gave up when
/// the socket carries an error (tcp_write_err() sets `sk_err` to ETIMEDOUT
/// or the soft error before tcp_done()); close() and a reset leave none
/// or theirs (EPIPE, ECONNRESET). False when BTF is missing.
#[inline(always)]
fn timed_out(skaddr: u64) -> bool {
    let off = SOCK_OFF.load();
    if off.err == 0 {
        return false;
    }
    match unsafe { bpf_probe_read_kernel((skaddr + off.err as u64) as *const i32) } {
        Ok(e) => e != 0 && e != EPIPE && e != ECONNRESET,
        Err(_) => {
            count(counter::READ_FAILED);
            false
        }
    }
}

/// The socket reached CLOSE (from CLOSE_WAIT or LAST_ACK): its CLOSE_WAIT
/// map entry goes, unless tcp_close() is hooked and has not come yet (a
/// socket shut down and closed later): then tcp_close() removes it.
#[inline(always)]
fn sock_done(skaddr: u64) {
    let Some(e) = SOCKS.get_ptr_mut(&skaddr) else {
        return;
    };
    let e = unsafe { &mut *e };
    let hooked = CLOSE_HOOKED.get(0).is_some_and(|h| *h != 0);
    if hooked && e.seen & SEEN_CLOSE == 0 {
        e.seen |= SEEN_DONE;
    } else if SOCKS.remove(&skaddr).is_ok() {
        count(counter::SOCK_REMOVED);
    }
}

/// An event of `kind` about `skaddr` by the task on CPU, without states,
/// ports or addresses (the state path fills those).
#[inline(always)]
pub(crate) fn new_event(kind: u32, skaddr: u64, now: u64, entered_ns: u64, flags: u32) -> Event {
    event_in(kind, skaddr, now, entered_ns, flags, netns_of(skaddr))
}

/// [`new_event`] with the socket's network namespace already known.
#[inline(always)]
fn event_in(kind: u32, skaddr: u64, now: u64, entered_ns: u64, flags: u32, netns: u32) -> Event {
    Event {
        ts_ns: now,
        skaddr,
        pid_tgid: bpf_get_current_pid_tgid(),
        entered_ns,
        kind,
        flags,
        oldstate: 0,
        newstate: 0,
        family: 0,
        sport: 0,
        dport: 0,
        _pad0: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        comm: comm(),
        _pad1: 0,
        netns,
    }
}

/// Marks the reset for the CLOSE_WAIT -> CLOSE that follows on this CPU
/// (tcp_reset -> tcp_done), which carries it as `RESET_RECEIVED`.
#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let off = OTHER_OFF.load().receive_reset_skaddr;
    if let (Ok(skaddr), Some(m)) = (read::<u64>(&ctx, off), RESET_MARK.get_ptr_mut(0)) {
        unsafe {
            *m = ResetMark {
                skaddr,
                ts_ns: bpf_ktime_get_ns(),
            }
        };
    }
    0
}

/// A reset on a socket outside CLOSE_WAIT ends it here: its mark goes.
#[inline(always)]
fn clear_reset_mark(skaddr: u64) {
    let _ = take_reset_mark(skaddr, 0);
}

/// True when this CPU's reset mark is this socket's (and fresh); the mark
/// is cleared either way once it names this socket.
#[inline(always)]
fn take_reset_mark(skaddr: u64, now: u64) -> bool {
    if let Some(m) = RESET_MARK.get_ptr_mut(0) {
        let m = unsafe { &mut *m };
        if m.skaddr == skaddr {
            m.skaddr = 0;
            return now.wrapping_sub(m.ts_ns) < RESET_MARK_MAX_AGE_NS;
        }
    }
    false
}

#[inline(always)]
fn forget_origin(skaddr: u64) {
    let _ = ORIGINS.remove(&skaddr);
}

/// The stacks `--stacks` asks for, in the current task's context.
#[inline(always)]
fn take_stacks<C: EbpfContext>(ctx: &C) -> (i32, i32) {
    let mode = STACK_MODE.load();
    if mode == stack_mode::NONE {
        return (NOT_TAKEN, NOT_TAKEN);
    }
    let take = |flags: u64| match unsafe {
        aya_ebpf::helpers::bpf_get_stackid(
            ctx.as_ptr(),
            &STACKS as *const StackTrace as *mut core::ffi::c_void,
            flags,
        )
    } {
        id if id >= 0 => id as i32,
        e => {
            count(counter::STACK_FAILED);
            e as i32
        }
    };
    let user = take(BPF_F_USER_STACK);
    let kernel = if mode == stack_mode::USER_KERNEL {
        take(0)
    } else {
        NOT_TAKEN
    };
    (user, kernel)
}

#[inline(always)]
fn record_origin<C: EbpfContext>(ctx: &C, skaddr: u64, how: u32, dport: u16) {
    let (user_stack, kernel_stack) = take_stacks(ctx);
    let value = SockOrigin {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid: bpf_get_current_pid_tgid(),
        kind: how,
        user_stack,
        kernel_stack,
        dport,
        _pad: 0,
        comm: comm(),
        py_stack: pystack::take(ctx),
    };
    if ORIGINS.insert(&skaddr, &value, 0).is_err() {
        count(counter::FD_INSERT_FAILED);
    }
}

/// CLOSE -> SYN_SENT: inside connect() (tcp_v4_connect / tcp_v6_connect),
/// in the caller's context, so the current task, its user stack and the
/// kernel stack of the connect path are the socket's origin. Generic over
/// the hook's context (classic or raw tracepoint).
///
/// Further per-connect work keyed by the socket (the Python frame walk of
/// python.rs) is called from here.
#[inline(always)]
fn on_connect<C: EbpfContext>(ctx: &C, skaddr: u64, dport: u16) {
    if FILTER_DPORT.load() != 0 && unsafe { DPORTS.get(&dport) }.is_none() {
        return;
    }
    record_origin(ctx, skaddr, origin::CONNECT, dport);
}

/// The `struct sock *` behind the current task's descriptor `fd`, 0 when
/// it cannot be found (BTF offsets unknown, fd out of range).
#[inline(always)]
fn sock_of_fd(fd: i64) -> u64 {
    let off = FD_OFF.load();
    if off.task_files == 0 || !(0..=i32::MAX as i64).contains(&fd) {
        return 0;
    }
    let rd = |addr: u64| -> u64 {
        if addr == 0 {
            return 0;
        }
        unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
    };
    let task = unsafe { bpf_get_current_task() };
    let files = rd(task + off.task_files as u64);
    let fdt = rd(files + off.files_fdt as u64);
    if fdt == 0 {
        return 0;
    }
    let max =
        unsafe { bpf_probe_read_kernel((fdt + off.fdt_max_fds as u64) as *const u32) }.unwrap_or(0);
    if fd as u64 >= max as u64 {
        return 0;
    }
    let arr = rd(fdt + off.fdt_fd as u64);
    let file = rd(arr + fd as u64 * 8);
    let socket = rd(file + off.file_private_data as u64);
    rd(socket + off.socket_sk as u64)
}

/// `--accept-stacks` only: the accept() that returned `fd` is the origin of
/// its socket (accepted sockets otherwise get theirs from the listener).
fn accept_origin(ctx: &TracePointContext, ret_off: u32) {
    let Ok(fd) = read::<i64>(ctx, ret_off) else {
        return;
    };
    let sk = sock_of_fd(fd);
    if sk == 0 {
        return;
    }
    record_origin(ctx, sk, origin::ACCEPT, 0);
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    accept_origin(&ctx, OTHER_OFF.load().accept4_ret);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    accept_origin(&ctx, OTHER_OFF.load().accept_ret);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
