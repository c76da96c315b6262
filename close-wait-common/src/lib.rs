//! Wire format shared by the eBPF program and the userspace loader.
//!
//! Everything here is `#[repr(C)]`, made of fixed-width integers with explicit
//! padding, alignment <= 8, and its size asserted at compile time. Userspace
//! decodes events with a length check and `TryFrom` for the kind field; it
//! never transmutes bytes into enums.
#![no_std]

use core::mem::size_of;

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// `Event::kind` values.
pub mod kind {
    /// sock:inet_sock_set_state into or out of CLOSE_WAIT.
    pub const STATE: u32 = 1;
    // 2 was tcp:tcp_send_reset after an abort: no longer sent (the abort
    // is known from its CLOSE_WAIT -> CLOSE alone); never reused.
    /// tcp:tcp_receive_reset on a socket that was tracked in CLOSE_WAIT.
    pub const RECV_RESET: u32 = 3;
    /// tcp:tcp_destroy_sock on a socket that was tracked in CLOSE_WAIT (no
    /// longer sent: the kernel side ends its view of a socket at CLOSE, or
    /// at tcp_close() after it when tcp_close() is hooked; kept so the
    /// number is never reused).
    pub const DESTROY: u32 = 4;
    /// tcp_close() (fentry or kprobe) on a socket tracked in CLOSE_WAIT or
    /// past it: the application gave the socket up.
    pub const CLOSE: u32 = 5;
    /// sched:sched_process_exec (with Python walks on): a process started
    /// a new program, to be looked at for a CPython to register at once;
    /// also a new process forked by a registered CPython
    /// (raw_tp/sched_process_fork). The pid to look at is in `pid_tgid`.
    pub const EXEC: u32 = 6;
}

/// `Event::flags` bits.
pub mod flags {
    /// The kernel-side CLOSE_WAIT map held this socket when the event fired
    /// (false for sockets that entered CLOSE_WAIT before the tracer attached,
    /// or whose entry was evicted from the bounded map).
    pub const TRACKED: u32 = 1;
    /// On CLOSE_WAIT -> CLOSE: tcp:tcp_receive_reset fired for this socket
    /// just before, on the same CPU (tcp_reset -> tcp_done), so the peer
    /// reset it. Set for untracked sockets too, whose reset event is not sent.
    pub const RESET_RECEIVED: u32 = 2;
    /// On CLOSE_WAIT -> CLOSE: no reset was received and the socket carries
    /// an error other than a reset's (`sk_err`, ETIMEDOUT or an ICMP soft
    /// error): a timer (retransmission / user timeout, keepalive) gave up on
    /// the peer. Needs BTF (the offset of `sk_err`).
    pub const TIMED_OUT: u32 = 4;
}

/// One event sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// bpf_ktime_get_ns(): CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock` (identity while the socket lives).
    pub skaddr: u64,
    /// bpf_get_current_pid_tgid(): tgid << 32 | tid of the task on CPU.
    pub pid_tgid: u64,
    /// Monotonic time the socket entered CLOSE_WAIT as the kernel map saw it
    /// (0 when not tracked).
    pub entered_ns: u64,
    pub kind: u32,
    pub flags: u32,
    pub oldstate: u8,
    pub newstate: u8,
    pub family: u16,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    pub _pad0: u16,
    /// Local address; IPv4 uses the first four bytes.
    pub saddr: [u8; 16],
    /// Remote address; IPv4 uses the first four bytes.
    pub daddr: [u8; 16],
    /// Comm of the task on CPU.
    pub comm: [u8; 16],
    pub _pad1: u16,
    /// Inode number of the socket's network namespace (as /proc/PID/ns/net
    /// shows it), read from the sock at BTF offsets; 0 when unknown (no BTF).
    pub netns: u32,
}
pub const EVENT_SIZE: usize = 104;
const _: () = assert!(size_of::<Event>() == EVENT_SIZE);

pub mod origin {
    pub const CONNECT: u32 = 1;
    pub const ACCEPT: u32 = 2;
}

/// Where a socket came from, keyed by its kernel address in `ORIGINS`:
/// taken as it goes CLOSE -> SYN_SENT inside connect() (the caller's
/// context), or with `--accept-stacks` at the exit of accept()/accept4().
/// It leaves the map when the socket reaches CLOSE, so a later socket at
/// the same address never inherits it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOrigin {
    /// Monotonic time of the call.
    pub ts_ns: u64,
    /// tgid << 32 | tid of the caller.
    pub pid_tgid: u64,
    /// `origin::CONNECT` or `origin::ACCEPT`.
    pub kind: u32,
    /// Stack map id of the user stack, negative when none was taken.
    pub user_stack: i32,
    /// Stack map id of the kernel stack, negative when not asked for.
    pub kernel_stack: i32,
    /// Remote port (host order) of a connect(); 0 for accept().
    pub dport: u16,
    pub _pad: u16,
    pub comm: [u8; 16],
    /// Key of the Python stack taken with it in `PY_STACKS`; 0 when the
    /// caller is not a registered Python process.
    pub py_stack: u64,
}
const _: () = assert!(size_of::<SockOrigin>() == 56);

/// Python frames reported per origin at most.
pub const PY_MAX_FRAMES: usize = 32;
/// Interpreter frames the kernel walk looks at per origin at most: the
/// reported ones and the C-stack shim frames between them (3.12+ push one
/// per call from C into Python).
pub const PY_SLOTS: usize = PY_MAX_FRAMES + 16;
/// Thread states searched for the caller's at most.
pub const PY_MAX_THREADS: usize = 64;

/// Why a kernel Python walk stopped (`PyStack::note`).
pub mod py_note {
    /// The walk reached the outermost frame.
    pub const COMPLETE: u32 = 0;
    /// More than `PY_MAX_FRAMES` frames: the outermost ones are missing.
    pub const CUT_DEPTH: u32 = 1;
    /// No thread state of the main interpreter has the caller's thread id
    /// among the first `PY_MAX_THREADS` (a thread of a subinterpreter, one
    /// not yet registered, or a longer thread list).
    pub const NO_THREAD: u32 = 2;
    /// Reading the interpreter's memory failed (paged out, or the runtime
    /// moved: the process exec'd something else).
    pub const READ_FAILED: u32 = 3;
}

/// `struct task_struct` offsets (BTF) for the fork hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
}

/// Where the kernel walk finds things in one registered CPython process
/// (`PY_PROCS`, keyed by tgid): absolute address of
/// `_PyRuntime.interpreters.head`, then byte offsets within their structs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyOffsets {
    pub interp_head: u64,
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    pub tstate_native_thread_id: u64,
    pub tstate_frame: u64,
    /// 3.11/3.12 `_PyCFrame.current_frame`; `u64::MAX` when `tstate_frame`
    /// is the frame itself (3.13).
    pub cframe_current_frame: u64,
    pub frame_previous: u64,
    pub frame_code: u64,
    pub frame_instr: u64,
    pub frame_owner: u64,
    /// `owner` of C-stack shim frames (skipped); 0xff when none (3.11).
    pub owner_cstack: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<PyOffsets>() == 88);

/// One kernel Python walk (`PY_STACKS`): innermost frame first, one slot
/// per interpreter frame looked at, each with its code object address and
/// instruction pointer. A C-stack shim frame keeps its slot with code 0
/// (the walk writes every slot it reaches at a fixed index, with no branch
/// that the verifier would have to follow both ways).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyStack {
    /// Slots filled.
    pub n: u32,
    /// A `py_note` value.
    pub note: u32,
    pub code: [u64; PY_SLOTS],
    pub instr: [u64; PY_SLOTS],
}
const _: () = assert!(size_of::<PyStack>() == 8 + 16 * PY_SLOTS);

/// Per-CPU counters (`COUNTERS` map index).
pub mod counter {
    /// Ring buffer reservation failed: an event was lost.
    pub const RINGBUF_LOST: u32 = 0;
    /// Insert into the CLOSE_WAIT socket map failed.
    pub const SOCK_INSERT_FAILED: u32 = 1;
    /// New sockets inserted into the CLOSE_WAIT socket map.
    pub const SOCK_INSERTED: u32 = 2;
    /// Insert into the socket origin map failed.
    pub const FD_INSERT_FAILED: u32 = 3;
    /// bpf_get_stackid failed (stack map full or collision).
    pub const STACK_FAILED: u32 = 4;
    /// Tracepoint record could not be read.
    pub const READ_FAILED: u32 = 5;
    /// Sockets removed from the CLOSE_WAIT map (at CLOSE, or with tcp_close()
    /// hooked at the later of CLOSE and tcp_close()).
    /// Entries in the map = inserted - removed, exactly: the map is a plain
    /// hash that never drops an entry by itself.
    pub const SOCK_REMOVED: u32 = 6;
    /// CLOSE_WAIT entries the map could not take because it was full
    /// (`--max-sockets`): counted as evictions; the socket is still followed
    /// from its events, without a kernel-side entry time.
    pub const SOCK_EVICTED: u32 = 7;
    pub const COUNT: u32 = 8;
}

/// Tracepoint field offsets, read from tracefs `format` files by userspace and
/// handed to the program as globals. Names match the `format` fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateOffsets {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<StateOffsets>() == 48);

/// Offsets for the other tracepoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtherOffsets {
    /// tcp:tcp_receive_reset `skaddr`.
    pub receive_reset_skaddr: u32,
    /// syscalls:sys_exit_accept4 `ret`.
    pub accept4_ret: u32,
    /// syscalls:sys_exit_accept `ret`.
    pub accept_ret: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<OtherOffsets>() == 16);

/// The sock:inet_sock_set_state record layout compiled into the classic
/// program that reads it with direct context loads (a load's offset must be
/// a compile-time constant). Userspace attaches that program only when the
/// running kernel's tracefs `format` gives exactly these offsets; otherwise
/// the program reading through helpers at the offsets passed in.
pub const STATE_LAYOUT: StateOffsets = StateOffsets {
    skaddr: 8,
    oldstate: 16,
    newstate: 20,
    sport: 24,
    dport: 26,
    family: 28,
    protocol: 30,
    saddr: 32,
    daddr: 36,
    saddr_v6: 40,
    daddr_v6: 56,
    _pad: 0,
};

/// Offsets (bytes) into `struct sock` (and the `struct inet_sock` that
/// begins with it) from the running kernel's BTF, for
/// the raw tracepoint on inet_sock_set_state (its arguments are the sock
/// and the two states; the other fields are read from the sock, on the rare
/// paths only). `valid == 0`: no BTF, the raw tracepoint is not used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `sk_protocol` (u16).
    pub protocol: u32,
    /// `__sk_common.skc_family` (u16).
    pub family: u32,
    /// `inet_sock.inet_sport`: local port, network order (u16). Not
    /// `skc_num`: tcp_set_state() releases the port (num = 0) before the
    /// tracepoint on a move to CLOSE; the classic record reads this too.
    pub sport: u32,
    /// `__sk_common.skc_dport`: remote port, network order (u16).
    pub dport: u32,
    /// `inet_sock.inet_saddr` (IPv4 local, as the classic record has it).
    pub saddr: u32,
    /// `__sk_common.skc_daddr` (IPv4 remote).
    pub daddr: u32,
    /// `__sk_common.skc_v6_rcv_saddr`.
    pub v6_rcv_saddr: u32,
    /// `__sk_common.skc_v6_daddr`.
    pub v6_daddr: u32,
    /// `sk_err` (int): set to the error before a timer's tcp_done().
    pub err: u32,
    pub valid: u32,
}
const _: () = assert!(size_of::<SockOffsets>() == 40);

/// `STACK_MODE` global values (`--stacks`).
pub mod stack_mode {
    pub const NONE: u8 = 0;
    pub const USER: u8 = 1;
    pub const USER_KERNEL: u8 = 2;
}

/// Offsets (bytes) from the running kernel's BTF to go from a file
/// descriptor of the current task to its `struct sock` (for
/// `--accept-stacks`): task_struct.files -> files_struct.fdt -> fdtable.fd[fd]
/// -> file.private_data (a `struct socket`) -> socket.sk. `task_files == 0`
/// means unknown (no BTF): accept stacks are then not available.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
}
const _: () = assert!(size_of::<FdOffsets>() == 24);

/// Offsets (bytes) to a socket's network namespace inode, from BTF:
/// `((struct sock *)sk)->__sk_common.skc_net` is the `struct net *`, and
/// `net->ns.inum` its inode number. `skc_net == 0` means unknown (no BTF):
/// events then carry netns 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsOffsets {
    pub skc_net: u32,
    pub net_ns_inum: u32,
}
const _: () = assert!(size_of::<NetnsOffsets>() == 8);

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::NetnsOffsets {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::SockOrigin {}
    unsafe impl aya::Pod for super::FdOffsets {}
    unsafe impl aya::Pod for super::StateOffsets {}
    unsafe impl aya::Pod for super::OtherOffsets {}
    unsafe impl aya::Pod for super::SockOffsets {}
    unsafe impl aya::Pod for super::PyOffsets {}
    unsafe impl aya::Pod for super::TaskOffsets {}
    unsafe impl aya::Pod for super::PyStack {}
}
