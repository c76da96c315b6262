//! Python stacks of a live CPython 3.11-3.13 process, read from outside.
//!
//! [`PyProcess::attach`] finds the interpreter a process runs (`elf`), its
//! version (`Py_Version`, or the file name) and the layout of that version
//! (`offsets`); [`PyProcess::threads`] walks interpreters -> thread states
//! -> frames, every walk bounded; [`PyProcess::frame`] turns a code object
//! and an instruction pointer into `qualname (file:line)` (`linetable`).
//! Everything is read with `process_vm_readv` while the process runs, so a
//! walk can race with the interpreter: every pointer is checked (code
//! objects by their type) and a walk that goes wrong stops with a note
//! rather than guessing.

pub mod elf;
pub mod kernel;
pub mod linetable;
pub mod mem;
pub mod offsets;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use mem::{Memory, ProcMem};
pub use offsets::Layout;

#[derive(Debug, thiserror::Error)]
pub enum PyError {
    #[error("cannot read /proc/PID/{what}: {source}")]
    Proc {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("not a CPython process (no mapped file defines _PyRuntime)")]
    NotPython,
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("_PyRuntime does not start with _Py_DebugOffsets")]
    NoDebugOffsets,
    #[error("cannot read process memory at {addr:#x}: {source}")]
    Read { addr: u64, source: std::io::Error },
}

/// Frames walked per thread at most (userspace; the kernel has its own).
pub const MAX_FRAMES: usize = 128;
/// Thread states walked per interpreter at most.
pub const MAX_THREADS: usize = 4096;
/// Interpreters walked at most (subinterpreters are rare).
pub const MAX_INTERPRETERS: usize = 16;
/// Longest string (qualname, file name) read, in characters.
const MAX_STR: u64 = 1024;
/// Largest line table read, in bytes.
const MAX_LINETABLE: u64 = 1 << 20;

/// One Python frame: `qualname (file:line)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PyFrame {
    pub function: String,
    pub file: String,
    pub line: Option<u32>,
}

impl fmt::Display for PyFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{} ({}:{l})", self.function, self.file),
            None => write!(f, "{} ({})", self.function, self.file),
        }
    }
}

/// The Python stack of one OS thread, innermost frame first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyThread {
    pub tid: u32,
    pub frames: Vec<PyFrame>,
    /// Why the walk stopped early, if it did.
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
struct CodeInfo {
    qualname: String,
    filename: String,
    firstlineno: i32,
    linetable: Vec<u8>,
}

/// A CPython process, ready to be walked.
pub struct PyProcess<M: Memory = ProcMem> {
    pub pid: u32,
    /// (major, minor, micro).
    pub version: (u8, u8, u8),
    /// The binary or libpython that holds the interpreter.
    pub path: String,
    /// Address of `_PyRuntime`.
    pub runtime: u64,
    /// Address of `PyCode_Type`, when the symbol was found.
    pub code_type: Option<u64>,
    pub layout: Layout,
    mem: M,
    codes: RefCell<HashMap<u64, Option<CodeInfo>>>,
}

impl<M: Memory> fmt::Debug for PyProcess<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PyProcess")
            .field("pid", &self.pid)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PyProcess<ProcMem> {
    /// Finds the interpreter of `pid` and its layout.
    pub fn attach(pid: u32) -> Result<Self, PyError> {
        let found = elf::find(pid)?;
        let mem = ProcMem { pid };
        let hex = found.py_version.and_then(|a| mem.u64(a).ok());
        Self::with_memory(pid, found, hex, mem)
    }
}

impl<M: Memory> PyProcess<M> {
    /// `hex` is `PY_VERSION_HEX` when it could be read (3.11+ export it as
    /// `Py_Version`); without it the version comes from the file name.
    pub fn with_memory(
        pid: u32,
        found: elf::Found,
        hex: Option<u64>,
        mem: M,
    ) -> Result<Self, PyError> {
        let from_name = elf::version_from_name(&found.path);
        let mut version = match (hex, from_name) {
            (Some(h), _) if h >> 24 == 3 => ((h >> 24) as u8, (h >> 16) as u8, (h >> 8) as u8),
            (_, Some((a, b))) => (a, b, 0),
            _ => {
                return Err(PyError::Unsupported(format!(
                    "CPython of unknown version ({})",
                    found.path
                )))
            }
        };
        let layout = if version.0 == 3 && version.1 >= 13 {
            let raw = mem.bytes(found.runtime, offsets::DEBUG_OFFSETS_LEN)?;
            let (layout, hex) = offsets::from_debug_offsets(&raw)?;
            version = ((hex >> 24) as u8, (hex >> 16) as u8, (hex >> 8) as u8);
            layout
        } else if version.0 == 3 {
            offsets::table(version.1).ok_or_else(|| {
                PyError::Unsupported(format!("CPython {}.{}", version.0, version.1))
            })?
        } else {
            return Err(PyError::Unsupported(format!("Python {}", version.0)));
        };
        Ok(Self {
            pid,
            version,
            path: found.path,
            runtime: found.runtime,
            code_type: found.code_type,
            layout,
            mem,
            codes: RefCell::new(HashMap::new()),
        })
    }

    pub fn version_text(&self) -> String {
        format!("{}.{}.{}", self.version.0, self.version.1, self.version.2)
    }

    /// Address of `_PyRuntime.interpreters.head`.
    pub fn interp_head_addr(&self) -> u64 {
        self.runtime + self.layout.runtime_interp_head
    }

    /// Every thread state of every interpreter, with its Python stack.
    pub fn threads(&self) -> Result<Vec<PyThread>, PyError> {
        let l = &self.layout;
        let mut out = Vec::new();
        let mut interp = self.mem.u64(self.interp_head_addr())?;
        let mut interps = 0;
        while interp != 0 && interps < MAX_INTERPRETERS {
            interps += 1;
            let mut ts = self.mem.u64(interp + l.interp_threads_head)?;
            let mut n = 0;
            while ts != 0 && n < MAX_THREADS {
                n += 1;
                let tid = self.mem.u64(ts + l.tstate_native_thread_id)? as u32;
                let (frames, note) = match self.current_frame(ts) {
                    Ok(f) => self.walk(f),
                    Err(e) => (Vec::new(), Some(format!("thread state unreadable: {e}"))),
                };
                out.push(PyThread { tid, frames, note });
                ts = self.mem.u64(ts + l.tstate_next)?;
            }
            interp = self.mem.u64(interp + l.interp_next)?;
        }
        Ok(out)
    }

    fn current_frame(&self, tstate: u64) -> Result<u64, PyError> {
        let p = self.mem.u64(tstate + self.layout.tstate_frame)?;
        match self.layout.cframe_current_frame {
            Some(off) if p != 0 => self.mem.u64(p + off),
            _ => Ok(p),
        }
    }

    /// The frames from `frame` outwards, innermost first, and why the walk
    /// stopped early (unreadable memory, not a code object, too deep).
    pub fn walk(&self, mut frame: u64) -> (Vec<PyFrame>, Option<String>) {
        let l = &self.layout;
        let mut frames = Vec::new();
        for _ in 0..MAX_FRAMES {
            if frame == 0 {
                return (frames, None);
            }
            let read = (|| -> Result<(u64, u64, u8, u64), PyError> {
                let code = self.mem.u64(frame + l.frame_code)?;
                let instr = self.mem.u64(frame + l.frame_instr)?;
                let mut owner = [0u8];
                self.mem.read(frame + l.frame_owner, &mut owner)?;
                let prev = self.mem.u64(frame + l.frame_previous)?;
                Ok((code, instr, owner[0], prev))
            })();
            let (code, instr, owner, prev) = match read {
                Ok(v) => v,
                Err(e) => return (frames, Some(format!("frame unreadable: {e}"))),
            };
            frame = prev;
            if Some(owner) == l.owner_cstack {
                continue;
            }
            match self.frame(code, instr) {
                Some(f) => frames.push(f),
                None if frames.is_empty() && prev == 0 => {
                    return (frames, Some("frame holds no code object".into()))
                }
                None => {
                    return (
                        frames,
                        Some(format!(
                            "walk stopped at a frame without a code object ({code:#x})"
                        )),
                    )
                }
            }
        }
        let note = (frame != 0).then(|| format!("walk cut at {MAX_FRAMES} frames"));
        (frames, note)
    }

    /// The frame of code object `code` at instruction pointer `instr`
    /// (3.11/3.12 `prev_instr`, 3.13 `instr_ptr`): None when `code` is not
    /// a readable code object.
    pub fn frame(&self, code: u64, instr: u64) -> Option<PyFrame> {
        let info = self.code(code)?;
        let start = code + self.layout.code_adaptive;
        let line = instr
            .checked_sub(start)
            .and_then(|b| u32::try_from(b / 2).ok())
            .and_then(|unit| linetable::line_at(&info.linetable, info.firstlineno, unit));
        Some(PyFrame {
            function: info.qualname,
            file: info.filename,
            line,
        })
    }

    fn code(&self, code: u64) -> Option<CodeInfo> {
        if code == 0 {
            return None;
        }
        if let Some(c) = self.codes.borrow().get(&code) {
            return c.clone();
        }
        let info = self.read_code(code).ok().flatten();
        self.codes.borrow_mut().insert(code, info.clone());
        info
    }

    fn read_code(&self, code: u64) -> Result<Option<CodeInfo>, PyError> {
        let l = &self.layout;
        if let Some(t) = self.code_type {
            if self.mem.u64(code + l.ob_type)? != t {
                return Ok(None);
            }
        }
        let mut first = [0u8; 4];
        self.mem.read(code + l.code_firstlineno, &mut first)?;
        let qualname = self.string(self.mem.u64(code + l.code_qualname)?)?;
        let filename = self.string(self.mem.u64(code + l.code_filename)?)?;
        let lt = self.mem.u64(code + l.code_linetable)?;
        let len = self.mem.u64(lt + l.bytes_size)?;
        let linetable = if len <= MAX_LINETABLE {
            self.mem.bytes(lt + l.bytes_sval, len as usize)?
        } else {
            Vec::new()
        };
        Ok(Some(CodeInfo {
            qualname,
            filename,
            firstlineno: i32::from_ne_bytes(first),
            linetable,
        }))
    }

    /// A `str` object's text (compact strings only: every identifier and
    /// file name the compiler makes is one).
    fn string(&self, obj: u64) -> Result<String, PyError> {
        let l = &self.layout;
        let len = self.mem.u64(obj + l.unicode_length)?.min(MAX_STR);
        let mut state = [0u8; 4];
        self.mem.read(obj + l.unicode_state, &mut state)?;
        let state = u32::from_ne_bytes(state);
        let kind = (state >> 2) & 7;
        let compact = state & (1 << 5) != 0;
        let ascii = state & (1 << 6) != 0;
        if !compact {
            return Ok("?".into());
        }
        if ascii {
            let b = self.mem.bytes(obj + l.unicode_ascii_size, len as usize)?;
            return Ok(String::from_utf8_lossy(&b).into_owned());
        }
        let data = obj + l.unicode_compact_size;
        let width = u64::from(kind.clamp(1, 4));
        let b = self.mem.bytes(data, (len * width) as usize)?;
        let chars: String = match kind {
            1 => b.iter().map(|&c| char::from(c)).collect(),
            2 => b
                .chunks_exact(2)
                .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                .map(|u| char::from_u32(u32::from(u)).unwrap_or('?'))
                .collect(),
            _ => b
                .chunks_exact(4)
                .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .map(|u| char::from_u32(u).unwrap_or('?'))
                .collect(),
        };
        Ok(chars)
    }
}

/// Is `file` part of Python's standard library or its runtime (frozen
/// modules)? Third-party packages (site-packages) count as application code.
pub fn is_stdlib(file: &str) -> bool {
    if file.starts_with("<frozen ") {
        return true;
    }
    stdlib_relative(file).is_some()
}

/// `/usr/lib/python3.11/logging/__init__.py` -> `logging/__init__.py`.
pub fn stdlib_relative(file: &str) -> Option<&str> {
    if file.contains("/site-packages/") || file.contains("/dist-packages/") {
        return None;
    }
    let i = file.find("/lib/python3.")?;
    let rest = &file[i + "/lib/python3.".len()..];
    let slash = rest.find('/')?;
    rest[..slash]
        .trim_end_matches(['t', 'd'])
        .chars()
        .all(|c| c.is_ascii_digit())
        .then(|| &rest[slash + 1..])
}

/// A frame as the human report shows it: standard-library files relative
/// to the library (`logging/__init__.py`), others as the code names them.
pub fn short(f: &PyFrame) -> String {
    let file = stdlib_relative(&f.file).unwrap_or(&f.file);
    match f.line {
        Some(l) => format!("{} ({file}:{l})", f.function),
        None => format!("{} ({file})", f.function),
    }
}

/// Threads with the same Python stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyStackGroup {
    pub count: usize,
    /// Thread ids, ascending.
    pub tids: Vec<u32>,
    /// Innermost first, `qualname (file:line)`.
    pub stack: Vec<String>,
    /// `emit (logging/__init__.py:1113) <- do_GET (server.py:20)`.
    pub text: String,
}

/// What the Python threads of a process run now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyThreads {
    /// `3.11.2`.
    pub version: String,
    pub groups: Vec<PyStackGroup>,
    /// `7 of 8 threads in emit (...) <- do_GET (...); 1 of 8 in ...`.
    pub text: String,
}

/// Groups threads with identical stacks, biggest group first. Threads
/// without any Python frame (they hold no frame right now) are grouped too.
pub fn group_threads(version: String, threads: &[PyThread]) -> PyThreads {
    let mut by: HashMap<Vec<PyFrame>, Vec<u32>> = HashMap::new();
    for t in threads {
        by.entry(t.frames.clone()).or_default().push(t.tid);
    }
    let mut groups: Vec<PyStackGroup> = by
        .into_iter()
        .map(|(frames, mut tids)| {
            tids.sort_unstable();
            PyStackGroup {
                count: tids.len(),
                tids,
                stack: frames.iter().map(|f| f.to_string()).collect(),
                text: one_line(&frames),
            }
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.tids.cmp(&b.tids)));
    let total = threads.len();
    let text = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let noun = match (i, total) {
                (0, 1) => " thread",
                (0, _) => " threads",
                _ => "",
            };
            format!("{} of {total}{noun} in {}", g.count, g.text)
        })
        .collect::<Vec<_>>()
        .join("; ");
    PyThreads {
        version,
        groups,
        text,
    }
}

/// A stack on one line, innermost first, standard-library frames between
/// application frames folded: `emit (logging/__init__.py:1113) <- 4 stdlib
/// frames <- do_GET (server.py:20) <- 6 stdlib frames`.
pub fn one_line(frames: &[PyFrame]) -> String {
    if frames.is_empty() {
        return "no Python frame (idle or in C code)".into();
    }
    let shown: Vec<String> = crate::fold::fold(
        frames,
        |f| is_stdlib(&f.file),
        short,
        |run| {
            let n = run.len();
            format!("{n} stdlib frame{}", if n == 1 { "" } else { "s" })
        },
    );
    shown.join(" <- ")
}

#[cfg(test)]
mod tests;
