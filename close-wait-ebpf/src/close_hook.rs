//! `tcp_close()`, hooked by fentry or kprobe where the kernel allows it
//! (userspace probes both by loading them and attaches at most one).
//!
//! tcp_close() is where the application gives the socket up: the last
//! reference to its file went away (close(), exit, or the last holder of a
//! descriptor inherited across fork). It runs in the closing task's context
//! and before the state change it causes, so its event reaches userspace
//! ahead of the CLOSE_WAIT exit of the same call, on the same CPU. That tells
//! close() from shutdown(SHUT_WR) (which leaves CLOSE_WAIT without it), and
//! a socket shut down whose tcp_close() never comes still has an open
//! descriptor somewhere.
//!
//! Only sockets the CLOSE_WAIT map holds are reported: it keeps a socket
//! from its entry into CLOSE_WAIT until tcp_destroy_sock, so the close after
//! a shutdown is seen too. The only field read is the `struct sock *`
//! argument itself: no offset into it.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use close_wait_common::{flags, kind, Event};

use crate::{comm, emit, netns_of, SOCKS};

#[inline(always)]
fn on_tcp_close(skaddr: u64) {
    let entered_ns = match unsafe { SOCKS.get(&skaddr) } {
        Some(t) => *t,
        None => return,
    };
    let ev = Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr,
        pid_tgid: bpf_get_current_pid_tgid(),
        entered_ns,
        kind: kind::CLOSE,
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
}

/// `void tcp_close(struct sock *sk, long timeout)`, BTF-typed entry.
#[fentry(function = "tcp_close")]
pub fn tcp_close_fentry(ctx: FEntryContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    on_tcp_close(sk as u64);
    0
}

/// The same through a kprobe, where fentry does not load.
#[kprobe]
pub fn tcp_close_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        on_tcp_close(sk);
    }
    0
}
