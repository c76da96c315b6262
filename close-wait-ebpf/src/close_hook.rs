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
//! from its entry into CLOSE_WAIT until the later of CLOSE and this call,
//! so the close after a shutdown is seen too. The only field read is the
//! `struct sock *` argument itself: no offset into it.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use close_wait_common::{flags, kind};

use crate::{count_removed, emit, new_event, SEEN_CLOSE, SEEN_DONE, SOCKS};

#[inline(always)]
fn on_tcp_close(skaddr: u64) {
    let Some(e) = SOCKS.get_ptr_mut(&skaddr) else {
        return;
    };
    let e = unsafe { &mut *e };
    let now = unsafe { bpf_ktime_get_ns() };
    emit(&new_event(
        kind::CLOSE,
        skaddr,
        now,
        e.entered_ns,
        flags::TRACKED,
    ));
    if e.seen & SEEN_DONE != 0 {
        // Already in CLOSE (shut down, then the peer's last ACK).
        if SOCKS.remove(&skaddr).is_ok() {
            count_removed();
        }
    } else {
        e.seen |= SEEN_CLOSE;
    }
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
