//! Python creation stacks, taken in the kernel inside connect() (and
//! accept() with `--accept-stacks`), in the caller's context.
//!
//! Userspace registers each CPython process it finds in `PY_PROCS` (tgid ->
//! where that version keeps its interpreter, thread and frame fields). For
//! any other task the cost is the one hash lookup. For a registered one the
//! walk goes `_PyRuntime.interpreters.head` -> its thread states, matching
//! `native_thread_id` against the current thread id (at most
//! `PY_MAX_THREADS`), -> the thread's current `_PyInterpreterFrame` ->
//! `previous` ..., recording per frame the code object address and the
//! instruction pointer (at most `PY_SLOTS` frames, C-stack shim frames kept
//! with code 0; userspace reports at most `PY_MAX_FRAMES`). Every read is `bpf_probe_read_user` of the current process and
//! every loop is bounded by a constant; the names are resolved later by
//! userspace from the live process. The walk is stored in `PY_STACKS` under
//! a hash of its contents, which the origin keeps: identical stacks (one
//! call site leaking again and again) share one entry, which each new
//! connect() from there keeps fresh in the LRU, so a leak's stack outlives
//! any number of other connections.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};

use close_wait_common::{py_note, PyOffsets, PyStack, PY_MAX_THREADS, PY_SLOTS};

/// Registered CPython processes: tgid -> offsets.
#[map]
static PY_PROCS: HashMap<u32, PyOffsets> = HashMap::with_max_entries(1024, 0);
/// Kernel Python walks by the hash of their contents: one entry per
/// distinct stack; the least recently taken go first when full.
#[map]
static PY_STACKS: LruHashMap<u64, PyStack> = LruHashMap::with_max_entries(1024, 0);
/// A walk is built here (it is larger than the 512-byte BPF stack).
#[map]
static PY_SCRATCH: PerCpuArray<PyStack> = PerCpuArray::with_max_entries(1, 0);

const NO_CFRAME: u64 = u64::MAX;

#[inline(always)]
fn rd(addr: u64) -> Result<u64, ()> {
    if addr == 0 {
        return Err(());
    }
    unsafe { bpf_probe_read_user(addr as *const u64) }.map_err(|_| ())
}

/// Walks the current thread's Python stack when its process is registered;
/// returns the key of the walk in `PY_STACKS`, 0 when none was taken.
#[inline(always)]
pub fn take<C: EbpfContext>(_ctx: &C) -> u64 {
    if crate::STACK_MODE.load() == close_wait_common::stack_mode::NONE {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(off) = (unsafe { PY_PROCS.get(&((pid_tgid >> 32) as u32)) }) else {
        return 0;
    };
    let Some(st) = PY_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let st = unsafe { &mut *st };
    st.n = 0;
    st.note = walk(off, pid_tgid as u32, st);
    let key = hash(st);
    match PY_STACKS.insert(&key, st, 0) {
        Ok(()) => key,
        Err(_) => 0,
    }
}

/// `sched:sched_process_exec`: a process runs a new program. Userspace
/// looks at it at once (woken now, not at its next drain) for a CPython to
/// register before the program's first connect(); without this a process
/// started after attach waits for the once-a-second rescan. Attached only
/// with Python walks on (`--stacks` other than none).
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let ev = crate::new_event(close_wait_common::kind::EXEC, 0, now, 0, 0);
    crate::emit_now(&ev);
    0
}

/// Where `struct task_struct` keeps `pid` and `tgid` (from the running
/// kernel's BTF; set by userspace before loading, zeros without BTF, when
/// the fork hook is not attached).
#[unsafe(no_mangle)]
static TASK_OFF: crate::Global<close_wait_common::TaskOffsets> =
    crate::Global::new(close_wait_common::TaskOffsets { pid: 0, tgid: 0 });

/// `raw_tp/sched_process_fork(struct task_struct *parent, struct
/// task_struct *child)` in a registered CPython process: a forked worker
/// runs the same interpreter at the same addresses, so a child that is a
/// new process (not a new thread: its pid is its tgid) is registered here
/// with its parent's offsets, before it can connect() (a prefork pool's
/// workers never exec, and connect at once), and userspace is told, to
/// follow it as its own process. A new thread costs the look-up and two
/// reads; any other fork the one look-up.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(off) = (unsafe { PY_PROCS.get(&tgid) }) else {
        return 0;
    };
    let off = *off;
    let child: u64 = ctx.arg(1);
    let task = TASK_OFF.load();
    let read = |at: u32| unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel((child + u64::from(at)) as *const i32)
    };
    let (Ok(pid), Ok(child_tgid)) = (read(task.pid), read(task.tgid)) else {
        return 0;
    };
    if pid != child_tgid || pid <= 0 {
        return 0;
    }
    let child = pid as u32;
    if PY_PROCS.insert(&child, &off, 0).is_err() {
        return 0;
    }
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let mut ev = crate::new_event(close_wait_common::kind::EXEC, 0, now, 0, 0);
    ev.pid_tgid = (u64::from(child) << 32) | u64::from(child);
    crate::emit_now(&ev);
    0
}

/// FNV-1a over the walk's note and filled slots, never 0 (0 means none).
#[inline(always)]
fn hash(st: &PyStack) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(st.note);
    let n = st.n as usize;
    for j in 0..PY_SLOTS {
        if j >= n {
            break;
        }
        h = (h ^ st.code[j]).wrapping_mul(PRIME);
        h = (h ^ st.instr[j]).wrapping_mul(PRIME);
    }
    h | 1
}

#[inline(always)]
fn walk(off: &PyOffsets, tid: u32, st: &mut PyStack) -> u32 {
    let Ok(interp) = rd(off.interp_head) else {
        return py_note::READ_FAILED;
    };
    let Ok(mut ts) = rd(interp.wrapping_add(off.interp_threads_head)) else {
        return py_note::READ_FAILED;
    };
    let mut found = false;
    for _ in 0..PY_MAX_THREADS {
        if ts == 0 {
            break;
        }
        let Ok(native) = rd(ts.wrapping_add(off.tstate_native_thread_id)) else {
            return py_note::READ_FAILED;
        };
        if native as u32 == tid {
            found = true;
            break;
        }
        let Ok(next) = rd(ts.wrapping_add(off.tstate_next)) else {
            return py_note::READ_FAILED;
        };
        ts = next;
    }
    if !found {
        return py_note::NO_THREAD;
    }
    let Ok(mut frame) = rd(ts.wrapping_add(off.tstate_frame)) else {
        return py_note::READ_FAILED;
    };
    if off.cframe_current_frame != NO_CFRAME && frame != 0 {
        let Ok(f) = rd(frame.wrapping_add(off.cframe_current_frame)) else {
            return py_note::READ_FAILED;
        };
        frame = f;
    }
    // One slot per frame at the loop's own index: no data-dependent index
    // and no branch that goes on both ways, so the verifier's cost is one
    // pass per slot.
    for j in 0..PY_SLOTS {
        if frame == 0 {
            st.n = j as u32;
            return py_note::COMPLETE;
        }
        let (Ok(code), Ok(instr), Ok(prev)) = (
            rd(frame.wrapping_add(off.frame_code)),
            rd(frame.wrapping_add(off.frame_instr)),
            rd(frame.wrapping_add(off.frame_previous)),
        ) else {
            st.n = j as u32;
            return py_note::READ_FAILED;
        };
        let owner =
            unsafe { bpf_probe_read_user(frame.wrapping_add(off.frame_owner) as *const u8) }
                .map(u32::from)
                .unwrap_or(0xff);
        let shim = (owner == off.owner_cstack) as u64;
        // code, or 0 for a shim, without a branch.
        st.code[j] = code & shim.wrapping_sub(1);
        st.instr[j] = instr;
        frame = prev;
    }
    st.n = PY_SLOTS as u32;
    if frame == 0 {
        py_note::COMPLETE
    } else {
        py_note::CUT_DEPTH
    }
}
