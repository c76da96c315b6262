//! Filter-only programs on the state hook, for `cargo xtask bench` only:
//! what a program costs that does nothing but decide whether a state
//! change is a CLOSE_WAIT transition. The bench loads the object itself and
//! attaches one of these for a round; the tracer attaches programs by name
//! and never these.
//!
//! On a match (rare: about one state change in ten under churn) each counts
//! into `FILTER_HITS`, so the comparison is kept by the compiler.

use aya_ebpf::{
    macros::{map, raw_tracepoint, tracepoint},
    maps::PerCpuArray,
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext as _,
};
use close_wait_common::tcp_state;

/// Offset of `newstate` in the sock:inet_sock_set_state record of the
/// kernels close-wait knows (the bench checks the running kernel's tracefs
/// `format` says the same before attaching `filter_only_tp`). A direct
/// context load needs the offset as a compile-time constant.
pub const TP_NEWSTATE_OFFSET: usize = 20;

#[map]
static FILTER_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn hit(newstate: i32) {
    if newstate == tcp_state::CLOSE_WAIT as i32 {
        if let Some(p) = FILTER_HITS.get_ptr_mut(0) {
            unsafe { *p += 1 };
        }
    }
}

/// Classic tracepoint sock:inet_sock_set_state: `newstate` read with one
/// direct load from the record (no helper call).
#[tracepoint]
pub fn filter_only_tp(ctx: TracePointContext) -> u32 {
    let rec = ctx.as_ptr() as *const u8;
    hit(unsafe { rec.add(TP_NEWSTATE_OFFSET).cast::<i32>().read() });
    0
}

/// raw_tp inet_sock_set_state(sk, oldstate, newstate): `newstate` is the
/// third argument.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn filter_only_raw_tp(ctx: RawTracePointContext) -> i32 {
    hit(ctx.arg::<u64>(2) as i32);
    0
}
