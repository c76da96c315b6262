//! Kernel side of close-wait, built around the socket (its kernel address),
//! not the file descriptor.
//!
//! Every program is a classic tracepoint (kprobes and fentry are not available
//! on every kernel close-wait runs on). No `syscalls:*` tracepoint is attached
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

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::TracePointContext,
    Global,
};
use close_wait_common::{
    counter, flags, kind, origin, stack_mode, tcp_state, Event, FdOffsets, NetnsOffsets,
    OtherOffsets, SockOrigin, StateOffsets, AF_INET, IPPROTO_TCP,
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
    send_reset_skaddr: 0,
    receive_reset_skaddr: 0,
    destroy_skaddr: 0,
    connect_fd: 0,
    accept4_ret: 0,
    accept_ret: 0,
    close_fd: 0,
    fork_child_pid: 0,
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
/// Sockets seen entering CLOSE_WAIT -> entry time; removed on tcp_destroy_sock.
/// A plain hash, allocated as used (only CLOSE_WAIT sockets enter it): it
/// never drops an entry behind our back, so inserted - removed is exactly
/// its size, and an insert refused when full is counted as an eviction.
#[map]
static SOCKS: HashMap<u64, u64> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);
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

#[repr(C)]
#[derive(Clone, Copy)]
struct ResetMark {
    skaddr: u64,
    ts_ns: u64,
}

/// Stack id stored when `--stacks` said not to take one (-ENOENT).
const NOT_TAKEN: i32 = -2;

/// A reset mark older than this belongs to another call chain.
const RESET_MARK_MAX_AGE_NS: u64 = 1_000_000;

const BPF_F_USER_STACK: u64 = 1 << 8;
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_F_NO_COMMON_LRU: u32 = 2;
const BPF_NOEXIST: u64 = 1;
const E2BIG: i32 = 7;
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
fn read<T>(ctx: &TracePointContext, off: u32) -> Result<T, i64> {
    unsafe { ctx.read_at::<T>(off as usize) }.map_err(|_| {
        count(counter::READ_FAILED);
        0
    })
}

/// Network namespace inode of the socket at `skaddr`, 0 when unknown.
/// Two kernel reads; only on CLOSE_WAIT events, never per state change.
#[inline(always)]
fn netns_of(skaddr: u64) -> u32 {
    let off = NETNS_OFF.load();
    if off.skc_net == 0 {
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
fn emit(ev: &Event) {
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

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let off = STATE_OFF.load();
    let protocol: u16 = read(ctx, off.protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let oldstate: i32 = read(ctx, off.oldstate)?;
    let newstate: i32 = read(ctx, off.newstate)?;
    let cw = tcp_state::CLOSE_WAIT as i32;
    if oldstate != cw && newstate != cw {
        if newstate == tcp_state::SYN_SENT as i32 && oldstate == tcp_state::CLOSE as i32 {
            let skaddr: u64 = read(ctx, off.skaddr)?;
            on_connect(ctx, skaddr);
        } else if newstate == tcp_state::CLOSE as i32 {
            // The socket is done: its address may be reused by the next
            // socket allocated, which must not inherit this origin.
            let skaddr: u64 = read(ctx, off.skaddr)?;
            forget_origin(skaddr);
        }
        return Ok(());
    }
    let skaddr: u64 = read(ctx, off.skaddr)?;
    if newstate == tcp_state::CLOSE as i32 {
        forget_origin(skaddr);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let mut ev_flags = 0u32;
    let mut entered_ns = 0u64;
    if newstate == cw {
        let sport: u16 = read(ctx, off.sport)?;
        let dport: u16 = read(ctx, off.dport)?;
        if !port_kept(&LPORTS, FILTER_LPORT.load(), sport)
            || !port_kept(&DPORTS, FILTER_DPORT.load(), dport)
        {
            return Ok(());
        }
        match SOCKS.insert(&skaddr, &now, BPF_NOEXIST) {
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
                    entered_ns = *t;
                } else {
                    count(counter::SOCK_INSERT_FAILED);
                }
            }
        }
    } else if let Some(t) = unsafe { SOCKS.get(&skaddr) } {
        ev_flags |= flags::TRACKED;
        entered_ns = *t;
    } else if FILTER_LPORT.load() != 0 || FILTER_DPORT.load() != 0 {
        // Filtered out at entry (or entered before attach): only keep it
        // when its ports pass.
        let sport: u16 = read(ctx, off.sport)?;
        let dport: u16 = read(ctx, off.dport)?;
        if !port_kept(&LPORTS, FILTER_LPORT.load(), sport)
            || !port_kept(&DPORTS, FILTER_DPORT.load(), dport)
        {
            return Ok(());
        }
    }
    if oldstate == cw && newstate == tcp_state::CLOSE as i32 {
        if let Some(m) = RESET_MARK.get_ptr_mut(0) {
            let m = unsafe { &mut *m };
            if m.skaddr == skaddr && now.wrapping_sub(m.ts_ns) < RESET_MARK_MAX_AGE_NS {
                ev_flags |= flags::RESET_RECEIVED;
                m.skaddr = 0;
            }
        }
    }
    let family: u16 = read(ctx, off.family)?;
    let mut ev = Event {
        ts_ns: now,
        skaddr,
        pid_tgid: bpf_get_current_pid_tgid(),
        entered_ns,
        kind: kind::STATE,
        flags: ev_flags,
        oldstate: oldstate as u8,
        newstate: newstate as u8,
        family,
        sport: read(ctx, off.sport)?,
        dport: read(ctx, off.dport)?,
        _pad0: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        comm: comm(),
        _pad1: 0,
        netns: netns_of(skaddr),
    };
    if family == AF_INET {
        let s: [u8; 4] = read(ctx, off.saddr)?;
        let d: [u8; 4] = read(ctx, off.daddr)?;
        ev.saddr[..4].copy_from_slice(&s);
        ev.daddr[..4].copy_from_slice(&d);
    } else {
        ev.saddr = read(ctx, off.saddr_v6)?;
        ev.daddr = read(ctx, off.daddr_v6)?;
    }
    emit(&ev);
    Ok(())
}

/// Reset and destroy events matter only for sockets tracked in CLOSE_WAIT.
fn sock_event(ctx: &TracePointContext, skaddr_off: u32, ev_kind: u32) -> Result<(), i64> {
    let skaddr: u64 = read(ctx, skaddr_off)?;
    let entered_ns = match unsafe { SOCKS.get(&skaddr) } {
        Some(t) => *t,
        None => return Ok(()),
    };
    if ev_kind == kind::DESTROY && SOCKS.remove(&skaddr).is_ok() {
        count(counter::SOCK_REMOVED);
    }
    let ev = Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr,
        pid_tgid: bpf_get_current_pid_tgid(),
        entered_ns,
        kind: ev_kind,
        flags: flags::TRACKED,
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
        netns: netns_of(skaddr),
    };
    emit(&ev);
    Ok(())
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = sock_event(&ctx, OTHER_OFF.load().send_reset_skaddr, kind::SEND_RESET);
    0
}

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
    let _ = sock_event(&ctx, off, kind::RECV_RESET);
    0
}

#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    let _ = sock_event(&ctx, OTHER_OFF.load().destroy_skaddr, kind::DESTROY);
    0
}

#[inline(always)]
fn forget_origin(skaddr: u64) {
    let _ = ORIGINS.remove(&skaddr);
}

/// The stacks `--stacks` asks for, in the current task's context.
#[inline(always)]
fn take_stacks<C: aya_ebpf::EbpfContext>(ctx: &C) -> (i32, i32) {
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
fn record_origin<C: aya_ebpf::EbpfContext>(ctx: &C, skaddr: u64, how: u32, dport: u16) {
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
    };
    if ORIGINS.insert(&skaddr, &value, 0).is_err() {
        count(counter::FD_INSERT_FAILED);
    }
}

/// CLOSE -> SYN_SENT: inside connect() (tcp_v4_connect / tcp_v6_connect),
/// in the caller's context, so the current task, its user stack and the
/// kernel stack of the connect path are the socket's origin.
///
/// Further per-connect work keyed by the socket (the Python frame walk of
/// python.rs) is called from here.
#[inline(always)]
fn on_connect(ctx: &TracePointContext, skaddr: u64) {
    // The remote port is set by now (the local one is not, yet).
    let Ok(dport) = read::<u16>(ctx, STATE_OFF.load().dport) else {
        return;
    };
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
