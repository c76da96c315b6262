//! The kernel's half of Python creation stacks: which processes the eBPF
//! side walks (`PY_PROCS`), and turning its walks (`PY_STACKS`: code object
//! and instruction pointer per frame) into `qualname (file:line)`.
//!
//! Registration: every CPython process running at attach (a scan of /proc
//! before the tracer reports itself attached); a process that exec'd as
//! soon as the kernel reports it (`sched:sched_process_exec`, looked at
//! again every [`EXEC_RETRY_EVERY`] while a python's libpython is not mapped
//! yet), so that it is registered before its first connect(); and a rescan
//! every [`RESCAN_EVERY`] for what that missed (an embedded interpreter
//! loaded later), looking only at processes it has not seen yet (one
//! `readlink` of /proc/PID/exe per process, `/proc/PID/maps` once per new
//! process or exec).
//!
//! Resolution reads the live process (`process_vm_readv`) when a stuck
//! socket is reported, cached per (process, walk).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use close_wait_common::{py_note, PyOffsets, PyStack, PY_MAX_FRAMES, PY_MAX_THREADS, PY_SLOTS};

use super::{PyFrame, PyProcess};

/// How often new processes are looked for.
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// After an exec, a python whose interpreter is not mapped yet (the dynamic
/// loader has not mapped libpython) is looked at again this often ...
pub const EXEC_RETRY_EVERY: Duration = Duration::from_millis(2);
/// ... this many times (40 ms: CPython takes longer than that to start).
pub const EXEC_RETRIES: u8 = 20;
/// Times a process whose executable is named python is retried when its
/// interpreter is not mapped yet (a rescan caught it inside the loader).
const RETRIES: u8 = 5;

/// The offsets the kernel walk needs for `p`.
pub fn offsets_for(p: &PyProcess) -> PyOffsets {
    let l = &p.layout;
    PyOffsets {
        interp_head: p.interp_head_addr(),
        interp_threads_head: l.interp_threads_head,
        tstate_next: l.tstate_next,
        tstate_native_thread_id: l.tstate_native_thread_id,
        tstate_frame: l.tstate_frame,
        cframe_current_frame: l.cframe_current_frame.unwrap_or(u64::MAX),
        frame_previous: l.frame_previous,
        frame_code: l.frame_code,
        frame_instr: l.frame_instr,
        frame_owner: l.frame_owner,
        owner_cstack: l.owner_cstack.map(u32::from).unwrap_or(0xff),
        _pad: 0,
    }
}

/// Why a kernel walk is incomplete, for `stack_note`.
pub fn note_of(note: u32) -> Option<String> {
    match note {
        py_note::COMPLETE => None,
        py_note::CUT_DEPTH => Some(format!(
            "Python stack cut at {PY_MAX_FRAMES} frames (the kernel walk's bound): outer frames missing"
        )),
        py_note::NO_THREAD => Some(format!(
            "no Python stack: the connecting thread is not among the first {PY_MAX_THREADS} thread states of the main interpreter"
        )),
        py_note::READ_FAILED => {
            Some("Python stack cut short: the interpreter's memory could not be read at connect()".into())
        }
        n => Some(format!("Python stack: unknown walk note {n}")),
    }
}

/// A resolved kernel walk: innermost frame first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub frames: Vec<PyFrame>,
    pub note: Option<String>,
}

/// Resolves `st` (taken in process `p`) to frames: C-stack shim slots
/// (code 0) left out, at most [`PY_MAX_FRAMES`].
pub fn resolve(p: &PyProcess, st: &PyStack) -> Resolved {
    let n = (st.n as usize).min(PY_SLOTS);
    let mut frames = Vec::with_capacity(n.min(PY_MAX_FRAMES));
    let mut note = note_of(st.note);
    for i in (0..n).filter(|&i| st.code[i] != 0) {
        if frames.len() == PY_MAX_FRAMES {
            note = note_of(py_note::CUT_DEPTH);
            break;
        }
        match p.frame(st.code[i], st.instr[i]) {
            Some(f) => frames.push(f),
            None => {
                note = Some(format!(
                    "Python stack cut at frame {i}: {:#x} is not a code object of pid {} (any more)",
                    st.code[i], p.pid
                ));
                break;
            }
        }
    }
    Resolved { frames, note }
}

/// Is `exe` (a /proc/PID/exe target) named like a python? Such a process
/// is looked at again while its interpreter is not mapped yet.
fn named_python(exe: &str) -> bool {
    exe.rsplit('/').next().is_some_and(|n| n.contains("python"))
}

/// Processes seen by the registry: (pid -> exe link when last looked).
#[derive(Default)]
pub struct Registry {
    seen: HashMap<u32, (String, u8)>,
    /// Registered processes, by pid.
    pub procs: HashMap<u32, PyProcess>,
}

/// What one scan changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<(u32, PyOffsets, String)>,
    pub removed: Vec<u32>,
}

impl Registry {
    /// Looks at process `pid`, which just exec'd (its old program, if it
    /// was registered, is gone). True when that is settled: registered, not
    /// a python, or gone; false for a python whose interpreter is not
    /// mapped yet.
    pub fn exec(&mut self, pid: u32) -> (bool, Changes) {
        let mut ch = Changes::default();
        if pid == std::process::id() {
            return (true, ch);
        }
        if self.procs.remove(&pid).is_some() {
            ch.removed.push(pid);
        }
        // A fork reported for a new thread names a thread, not a process:
        // the entry the kernel side gave it goes.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let tgid = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if tgid != Some(pid) {
            if tgid.is_some() {
                ch.removed.push(pid);
            }
            return (true, ch);
        }
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            // Gone already: so is any entry the kernel side gave a fork.
            self.seen.remove(&pid);
            ch.removed.push(pid);
            return (true, ch);
        };
        let exe = exe.to_string_lossy().into_owned();
        match PyProcess::attach(pid) {
            Ok(p) => {
                ch.added.push((pid, offsets_for(&p), p.version_text()));
                self.procs.insert(pid, p);
                self.seen.insert(pid, (exe, 0));
                (true, ch)
            }
            Err(_) => {
                let named = named_python(&exe);
                // A python not ready by the last quick look is left to the
                // rescan's own retries.
                self.seen
                    .insert(pid, (exe, if named { RETRIES } else { 0 }));
                (!named, ch)
            }
        }
    }

    /// Looks at every process of /proc not seen yet (or exec'd since).
    pub fn scan(&mut self) -> Changes {
        let mut ch = Changes::default();
        let mut alive = HashSet::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return ch;
        };
        let me = std::process::id();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            alive.insert(pid);
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let retry = match self.seen.get(&pid) {
                Some((old, tries)) if *old == exe => {
                    if *tries == 0 {
                        continue;
                    }
                    true
                }
                _ => false,
            };
            if self.procs.remove(&pid).is_some() {
                ch.removed.push(pid);
            }
            match PyProcess::attach(pid) {
                Ok(p) => {
                    ch.added.push((pid, offsets_for(&p), p.version_text()));
                    self.procs.insert(pid, p);
                    self.seen.insert(pid, (exe, 0));
                }
                Err(_) => {
                    let named = named_python(&exe);
                    let tries = match (retry, self.seen.get(&pid)) {
                        (true, Some((_, t))) => t.saturating_sub(1),
                        _ if named => RETRIES,
                        _ => 0,
                    };
                    self.seen.insert(pid, (exe, tries));
                }
            }
        }
        self.seen.retain(|pid, _| alive.contains(pid));
        let gone: Vec<u32> = self
            .procs
            .keys()
            .copied()
            .filter(|p| !alive.contains(p))
            .collect();
        for pid in gone {
            self.procs.remove(&pid);
            ch.removed.push(pid);
        }
        ch
    }
}
