//! Symbolization of the stacks captured when a socket was created.
//!
//! The eBPF side records a user stack (and, on request, a kernel stack) at
//! `connect()`/`accept()`; for a socket that is still stuck we get the owning
//! pid and the instruction addresses, innermost first. This module turns them
//! into [`Frame`]s with blazesym: ELF symbols and DWARF line info for user
//! code, perf maps (`/tmp/perf-PID.map`) for JIT runtimes, kallsyms for the
//! kernel. Symbolization is best effort and never fails: an address that
//! cannot be resolved (process gone, stripped binary, anonymous memory)
//! becomes an unsymbolized frame.

use std::fmt;
use std::path::Path;

use blazesym::symbolize::source::{Kernel, Process, Source};
use blazesym::symbolize::{Input, Reason, Sym, Symbolized};
use blazesym::Pid;
use serde::Serialize;

/// One symbolized (or not) stack frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frame {
    /// The address as captured.
    pub addr: u64,
    /// The function containing the address (demangled).
    pub function: Option<String>,
    /// Byte offset of `addr` from the start of `function`.
    pub offset: Option<u64>,
    /// Source file, when debug info is available.
    pub file: Option<String>,
    /// Source line, when debug info is available.
    pub line: Option<u32>,
    /// The binary or shared object (full path), or `kernel`.
    pub module: Option<String>,
    /// Not captured but deduced from the call instruction of the next frame
    /// (see [`Symbolizer::user`]): `function`, `file` and `line` name the
    /// callee's entry, not where it was when the stack was taken.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

impl Frame {
    /// A frame for an address that could not be symbolized.
    fn unknown(addr: u64, module: Option<String>) -> Self {
        Self {
            addr,
            function: None,
            offset: None,
            file: None,
            line: None,
            module,
            inferred: false,
        }
    }
}

impl fmt::Display for Frame {
    /// `function+0xoff (file:line)` with line info, `function+0xoff [module]`
    /// without it, `0xaddr [module]` or `0xaddr [unknown]` when unsymbolized.
    /// Modules are shown by file name (`libc.so.6`), not full path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let module = self.module.as_deref().map(|m| {
            Path::new(m)
                .file_name()
                .map_or(m.into(), |name| name.to_string_lossy())
        });
        let Some(function) = &self.function else {
            return write!(
                f,
                "{:#x} [{}]",
                self.addr,
                module.as_deref().unwrap_or("unknown")
            );
        };
        f.write_str(function)?;
        if let Some(offset) = self.offset {
            write!(f, "+{offset:#x}")?;
        }
        match (&self.file, self.line, module) {
            (Some(file), Some(line), _) => write!(f, " ({file}:{line})")?,
            (Some(file), None, _) => write!(f, " ({file})")?,
            (None, _, Some(module)) => write!(f, " [{module}]")?,
            (None, _, None) => {}
        }
        if self.inferred {
            f.write_str(" [inferred from the call site below]")?;
        }
        Ok(())
    }
}

/// Processes whose files a [`Symbolizer`] keeps cached; at the next new one
/// the caches are dropped (blazesym keys them by `/proc/PID/...` paths, so a
/// tracer that runs for days among recycled workers would grow them forever).
pub const MAX_CACHED_PIDS: usize = 64;

/// A caching symbolizer; create one and reuse it for every stack.
///
/// Not `Send` (blazesym keeps its caches in `Rc`s): keep it on one thread.
pub struct Symbolizer {
    inner: blazesym::symbolize::Symbolizer,
    /// Processes symbolized since the caches were last dropped.
    pids: std::collections::HashSet<u32>,
    /// `.gopclntab` tables of stripped Go executables, by path.
    go_tables: std::collections::HashMap<String, Option<crate::gopclntab::GoTable>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbolizer").finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// A symbolizer with file/line info and demangling. Inlined functions are
    /// not expanded: a frame names the function the code was compiled into,
    /// its line is the one of the instruction.
    pub fn new() -> Self {
        Self {
            inner: Self::build(),
            pids: Default::default(),
            go_tables: Default::default(),
        }
    }

    fn build() -> blazesym::symbolize::Symbolizer {
        blazesym::symbolize::Symbolizer::builder()
            .enable_auto_reload(true)
            .enable_code_info(true)
            .enable_inlined_fns(false)
            .enable_demangling(true)
            .build()
    }

    /// Notes `pid` as symbolized; past [`MAX_CACHED_PIDS`] processes the
    /// caches start again empty.
    fn note_pid(&mut self, pid: u32) {
        if self.pids.insert(pid) && self.pids.len() > MAX_CACHED_PIDS {
            self.inner = Self::build();
            self.pids.clear();
            self.go_tables.clear();
            self.pids.insert(pid);
        }
    }

    /// Processes whose files are cached now.
    pub fn cached_pids(&self) -> usize {
        self.pids.len()
    }

    /// Symbolize user-space `addrs` (innermost first) of process `pid`.
    ///
    /// Uses the binaries mapped by the process (ELF symbols, DWARF when
    /// present, split debug info in /usr/lib/debug) and its perf map for JIT
    /// code. The process must still be alive; if it is not, or `pid` is 0,
    /// the frames come back unsymbolized.
    ///
    /// A frame-pointer walk started inside a function that keeps no frame
    /// (libc's syscall wrappers: `connect`, `accept4`) misses that
    /// function's caller: its return address sits on the stack, not in the
    /// frame chain. When the second address returns from a direct call to
    /// another function than the first frame's, that callee is the missing
    /// frame; it is put back, marked [`Frame::inferred`].
    pub fn user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let mut frames = self.user_frames(pid, addrs);
        if let Some(f) = self.missing_caller(pid, &frames) {
            frames.insert(1, f);
        }
        frames
    }

    /// The frame lost between `frames[0]` and `frames[1]`, if any (see
    /// [`Self::user`]).
    fn missing_caller(&self, pid: u32, frames: &[Frame]) -> Option<Frame> {
        let [first, second, ..] = frames else {
            return None;
        };
        // Both symbolized: real code, and a start address for the first.
        first.function.as_ref()?;
        second.function.as_ref()?;
        let offset = first.offset?;
        let ret = second.addr;
        let call = read_mem(pid, ret.checked_sub(CALL_LEN)?, CALL_LEN as usize)?;
        let target = direct_call_target(&call, ret)?;
        if target == first.addr.checked_sub(offset)? {
            // The first frame's function was called from there: no gap.
            return None;
        }
        if is_plt_stub(&read_mem(pid, target, 12)?) {
            return None;
        }
        let syms = self.symbolize(&process_source(pid, false), &[target]);
        match syms.into_iter().next()? {
            // Exactly a function's entry: the decoded call is a real one.
            Symbolized::Sym(sym) if sym.offset == 0 && !sym.name.ends_with("@plt") => {
                let mut f = frame_from_sym(target, sym, None);
                f.offset = None;
                f.inferred = true;
                Some(f)
            }
            _ => None,
        }
    }

    fn user_frames(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        // blazesym reads pid 0 as "this process": never symbolize against us.
        if addrs.is_empty() || pid == 0 {
            return addrs.iter().map(|&a| Frame::unknown(a, None)).collect();
        }
        self.note_pid(pid);
        let lookup = lookup_addrs(addrs);
        let source = |map_files: bool| process_source(pid, map_files);
        let mut syms = self.symbolize(&source(true), &lookup);
        if syms
            .iter()
            .any(|s| matches!(s, Symbolized::Unknown(Reason::IgnoredError)))
        {
            let retry = self.symbolize(&source(false), &lookup);
            for (sym, again) in syms.iter_mut().zip(retry) {
                if matches!(sym, Symbolized::Unknown(Reason::IgnoredError)) {
                    *sym = again;
                }
            }
        }
        // Name the mapping of the addresses blazesym could not resolve.
        let maps = if syms.iter().any(|s| !s.as_sym().is_some_and(plausible)) {
            crate::logged::read_to_string(Path::new(&format!("/proc/{pid}/maps")))
        } else {
            None
        };
        addrs
            .iter()
            .zip(syms)
            .map(|(&addr, sym)| match sym {
                Symbolized::Sym(sym) if plausible(&sym) => frame_from_sym(addr, sym, None),
                _ => {
                    let module = maps.as_deref().and_then(|m| mapping_name(m, addr));
                    // A stripped Go executable still has its .gopclntab.
                    let go = module
                        .as_deref()
                        .filter(|m| m.starts_with('/'))
                        .and_then(|m| {
                            self.go_tables
                                .entry(m.to_owned())
                                .or_insert_with(|| crate::gopclntab::GoTable::load(m))
                                .as_ref()?
                                .lookup(addr.saturating_sub(1))
                        });
                    match go {
                        Some((name, off)) => Frame {
                            function: Some(name),
                            offset: Some(off + 1),
                            ..Frame::unknown(addr, module)
                        },
                        None => Frame::unknown(addr, module),
                    }
                }
            })
            .collect()
    }

    /// Symbolize kernel `addrs` (innermost first) with kallsyms (or a
    /// vmlinux with debug info, when one is installed). Reading kernel
    /// addresses from kallsyms needs root; without it frames stay
    /// unsymbolized.
    pub fn kernel(&mut self, addrs: &[u64]) -> Vec<Frame> {
        if addrs.is_empty() {
            return Vec::new();
        }
        let lookup = lookup_addrs(addrs);
        let syms = self.symbolize(&Source::Kernel(Kernel::default()), &lookup);
        addrs
            .iter()
            .zip(syms)
            .map(|(&addr, sym)| match sym {
                Symbolized::Sym(sym) if plausible(&sym) => {
                    frame_from_sym(addr, sym, Some("kernel"))
                }
                _ => Frame::unknown(addr, Some("kernel".to_owned())),
            })
            .collect()
    }

    /// One blazesym call; an error for the whole batch makes every address
    /// unknown. Always returns `lookup.len()` results.
    fn symbolize(&self, source: &Source<'_>, lookup: &[u64]) -> Vec<Symbolized<'static>> {
        match self.inner.symbolize(source, Input::AbsAddr(lookup)) {
            Ok(syms) if syms.len() == lookup.len() => syms
                .into_iter()
                .map(|s| match s {
                    Symbolized::Sym(sym) => Symbolized::Sym(sym.into_owned()),
                    Symbolized::Unknown(reason) => Symbolized::Unknown(reason),
                })
                .collect(),
            Ok(syms) => {
                log::debug!(
                    "symbolizing {source:?}: {} results for {} addresses",
                    syms.len(),
                    lookup.len()
                );
                vec![Symbolized::Unknown(Reason::IgnoredError); lookup.len()]
            }
            Err(err) => {
                log::debug!("symbolizing {source:?}: {err}");
                vec![Symbolized::Unknown(Reason::IgnoredError); lookup.len()]
            }
        }
    }
}

fn process_source(pid: u32, map_files: bool) -> Source<'static> {
    let mut process = Process::new(Pid::from(pid));
    process.debug_syms = true;
    process.perf_map = true;
    process.vdso = true;
    // /proc/PID/map_files survives deleted or namespaced binaries but
    // needs CAP_SYS_ADMIN; the symbolic paths in maps are the fallback.
    process.map_files = map_files;
    Source::Process(process)
}

/// `len` bytes of process `pid` at `addr` (needs ptrace access: root).
fn read_mem(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let path = format!("/proc/{pid}/mem");
    let mem = crate::logged::io(std::fs::File::open(&path), || path.clone())?;
    let mut buf = vec![0; len];
    crate::logged::io(mem.read_exact_at(&mut buf, addr), || {
        format!("{path}: {len} bytes at {addr:#x}")
    })?;
    Some(buf)
}

/// Length of a direct call instruction (x86-64 `call rel32`, arm64 `bl`).
#[cfg(target_arch = "x86_64")]
const CALL_LEN: u64 = 5;
#[cfg(not(target_arch = "x86_64"))]
const CALL_LEN: u64 = 4;

/// The callee of the direct call `code` that ends at `ret` (the return
/// address); `None` for any other instruction.
fn direct_call_target(code: &[u8], ret: u64) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // e8 rel32: relative to the end of the instruction.
        let [0xe8, a, b, c, d] = *code else {
            return None;
        };
        Some(ret.wrapping_add_signed(i64::from(i32::from_le_bytes([a, b, c, d]))))
    }
    #[cfg(target_arch = "aarch64")]
    {
        // bl imm26: relative to the instruction, in words.
        let w = u32::from_le_bytes(code.try_into().ok()?);
        if w >> 26 != 0b100101 {
            return None;
        }
        let imm = (((w & 0x03ff_ffff) << 6) as i32 >> 6) as i64 * 4;
        Some(ret.checked_sub(4)?.wrapping_add_signed(imm))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (code, ret);
        None
    }
}

/// Whether `code` starts a PLT entry (an indirect jump through the GOT):
/// the call went to a stub, whose real target is not known here.
fn is_plt_stub(code: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Optional endbr64, optional bnd prefix, then jmp *disp32(%rip).
        let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]).unwrap_or(code);
        let code = code.strip_prefix(&[0xf2]).unwrap_or(code);
        code.starts_with(&[0xff, 0x25])
    }
    #[cfg(target_arch = "aarch64")]
    {
        // Optional bti c, then adrp x16, ...
        let words: Vec<u32> = code
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let first = match words.as_slice() {
            [0xd503_245f, next, ..] => *next,
            [w, ..] => *w,
            [] => return false,
        };
        first & 0x9f00_001f == 0x9000_0010
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = code;
        false
    }
}

/// Stack addresses are return addresses: the instruction after a call. Look
/// each up one byte earlier so that it lands in the call itself, which gives
/// the caller's line and stays inside functions that end with a call.
fn lookup_addrs(addrs: &[u64]) -> Vec<u64> {
    addrs.iter().map(|a| a.saturating_sub(1)).collect()
}

/// Functions larger than this are not believed when the symbol has no size.
const MAX_UNSIZED_OFFSET: usize = 64 * 1024;

/// Whether a symbol plausibly contains the address looked up. kallsyms has
/// no sizes, so an address past the last kernel symbol (module space, for
/// one) resolves to that symbol at an offset of gigabytes; DWARF without
/// function ranges can do the same. Such answers would mislead: drop them.
fn plausible(sym: &Sym<'_>) -> bool {
    match sym.size {
        Some(size) => sym.offset < size,
        None => sym.offset <= MAX_UNSIZED_OFFSET,
    }
}

/// Build a frame from a blazesym symbol found for `addr - 1`.
fn frame_from_sym(addr: u64, sym: Sym<'_>, module: Option<&str>) -> Frame {
    let code = sym.code_info.as_deref();
    let offset = u64::try_from(sym.offset).ok().map(|off| off + 1);
    Frame {
        addr,
        function: Some(sym.name.into_owned()),
        offset,
        file: code.map(|c| c.to_path().display().to_string()),
        line: code.and_then(|c| c.line),
        module: module
            .map(str::to_owned)
            .or_else(|| sym.module.map(|m| m.to_string_lossy().into_owned())),
        inferred: false,
    }
}

/// The path or name (`[heap]`, `[vdso]`) of the mapping holding `addr` in a
/// `/proc/PID/maps` text; `None` for anonymous or unmapped memory.
fn mapping_name(maps: &str, addr: u64) -> Option<String> {
    maps.lines().find_map(|line| {
        let (range, rest) = line.split_once(' ')?;
        let (start, end) = range.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        if !(start..end).contains(&addr) {
            return None;
        }
        // perms, offset, dev, inode, then the (space-padded) name.
        let mut rest = rest;
        for _ in 0..4 {
            rest = rest.trim_start();
            rest = rest.split_once(' ').map_or("", |(_, tail)| tail);
        }
        let name = rest.trim();
        (!name.is_empty()).then(|| name.to_owned())
    })
}

/// Is `addr` inside a mapping with execute permission (`r-xp`) of a
/// `/proc/PID/maps` text?
fn in_executable_mapping(maps: &str, addr: u64) -> bool {
    maps.lines().any(|line| {
        let mut w = line.split_whitespace();
        let (Some(range), Some(perms)) = (w.next(), w.next()) else {
            return false;
        };
        let Some((start, end)) = range.split_once('-') else {
            return false;
        };
        match (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) {
            (Ok(a), Ok(b)) => (a..b).contains(&addr) && perms.as_bytes().get(2) == Some(&b'x'),
            _ => false,
        }
    })
}

/// Which of `frames` of process `pid` are outside code: unsymbolized, at
/// an address in no executable mapping (heap, stack, data, or nothing), so
/// not a return address but a frame-pointer walk that strayed into data.
/// All false when the maps cannot be read (the process is gone).
pub fn outside_code(pid: u32, frames: &[Frame]) -> Vec<bool> {
    let maps = frames
        .iter()
        .any(|f| f.function.is_none())
        .then(|| crate::logged::read_to_string(Path::new(&format!("/proc/{pid}/maps"))))
        .flatten();
    outside_code_in(maps.as_deref(), frames)
}

fn outside_code_in(maps: Option<&str>, frames: &[Frame]) -> Vec<bool> {
    frames
        .iter()
        .map(|f| f.function.is_none() && maps.is_some_and(|m| !in_executable_mapping(m, f.addr)))
        .collect()
}

/// Drops the frames after the first that are outside code (`outside`, from
/// [`outside_code`]) and says how many went in `note`.
pub fn drop_outside_code(frames: &mut Vec<Frame>, outside: &[bool], note: &mut Option<String>) {
    let before = frames.len();
    let mut i = 0;
    frames.retain(|_| {
        i += 1;
        i == 1 || !outside.get(i - 1).copied().unwrap_or(false)
    });
    let dropped = before - frames.len();
    if dropped > 0 {
        let said = format!(
            "{dropped} frame{} outside executable mappings (heap, stack, data) not shown",
            if dropped == 1 { "" } else { "s" }
        );
        *note = Some(match note.take() {
            Some(n) => format!("{n}; {said}"),
            None => said,
        });
    }
}

/// A plain-words warning when a user stack is too short to be useful.
pub fn stack_note(frames: &[Frame]) -> Option<String> {
    match frames {
        [] => Some(
            "no stack was captured: the socket may predate tracing, or the stack map was full"
                .to_owned(),
        ),
        [_] => Some(
            "only 1 frame: the program was likely built without frame pointers; \
             rebuild with -fno-omit-frame-pointer for full stacks"
                .to_owned(),
        ),
        _ if frames.iter().all(|f| f.function.is_none()) => Some(format!(
            "none of the {} frames could be symbolized: the process may have exited, \
             or its binaries are stripped (JIT runtimes need a /tmp/perf-PID.map)",
            frames.len()
        )),
        _ => {
            // A frame-pointer walk through code built without frame pointers
            // lands on data: heap, stack or anonymous memory, unsymbolized.
            let bogus = frames
                .iter()
                .skip(1)
                .position(|f| f.function.is_none() && lands_in_data(f.module.as_deref()))?;
            Some(format!(
                "frames after #{} point into data, not code: the walk left code built \
                 without frame pointers (rebuild with -fno-omit-frame-pointer for full stacks)",
                bogus + 1
            ))
        }
    }
}

/// Mappings that hold data, never code a stack could return into.
fn lands_in_data(module: Option<&str>) -> bool {
    matches!(module, Some("[heap]" | "[stack]") | None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    #[inline(never)]
    fn stacks_test_marker(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(31).rotate_left(7)
    }

    fn frame(function: Option<&str>, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            addr: 0x7f00_1234_5678,
            function: function.map(str::to_owned),
            offset: function.map(|_| 0x2a),
            file: file.map(str::to_owned),
            line,
            module: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned()),
            inferred: false,
        }
    }

    #[inline(never)]
    fn stacks_test_callee(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_add(3)
    }

    #[inline(never)]
    fn stacks_test_caller(x: u64) -> u64 {
        stacks_test_callee(std::hint::black_box(x)).wrapping_mul(5)
    }

    /// The return address of the direct call from `stacks_test_caller` to
    /// `stacks_test_callee`, found in this process's code.
    #[cfg(target_arch = "x86_64")]
    fn return_into_caller() -> u64 {
        assert_eq!(stacks_test_caller(1), 20);
        let caller = stacks_test_caller as fn(u64) -> u64 as usize as u64;
        let callee = stacks_test_callee as fn(u64) -> u64 as usize as u64;
        let code = read_mem(std::process::id(), caller, 256).expect("own code");
        (0..code.len() - 5)
            .map(|i| caller + i as u64 + 5)
            .find(|&ret| {
                let at = (ret - 5 - caller) as usize;
                direct_call_target(&code[at..at + 5], ret) == Some(callee)
            })
            .expect("a direct call to the callee")
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn puts_back_the_caller_a_frameless_function_hides() {
        let ret = return_into_caller();
        let marker = stacks_test_marker as fn(u64) -> u64 as usize as u64;
        let mut symbolizer = Symbolizer::new();
        // The stack was taken in `stacks_test_marker` (as if frameless),
        // and the frame chain went on in the caller of the callee.
        let frames = symbolizer.user(std::process::id(), &[marker + 4, ret]);
        assert_eq!(frames.len(), 3, "{frames:#?}");
        let lost = &frames[1];
        assert!(lost.inferred, "{lost:?}");
        assert!(
            lost.function
                .as_deref()
                .is_some_and(|f| f.contains("stacks_test_callee")),
            "{lost:?}"
        );
        assert_eq!(lost.offset, None);
        assert!(lost
            .to_string()
            .ends_with(" [inferred from the call site below]"));
        assert!(!frames[0].inferred && !frames[2].inferred);
        assert_eq!(frames[2].addr, ret);

        // Taken in the callee itself: nothing is missing.
        let callee = stacks_test_callee as fn(u64) -> u64 as usize as u64;
        let frames = symbolizer.user(std::process::id(), &[callee + 4, ret]);
        assert_eq!(frames.len(), 2, "{frames:#?}");
        assert!(frames.iter().all(|f| !f.inferred));
        // A return address after no direct call: nothing is made up.
        let frames = symbolizer.user(std::process::id(), &[marker + 4, callee + 1]);
        assert_eq!(frames.len(), 2, "{frames:#?}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn decodes_direct_calls_and_plt_stubs() {
        // leaky's serve_requests: call -0x27e ending at 0x1618 -> 0x139a.
        assert_eq!(
            direct_call_target(&[0xe8, 0x82, 0xfd, 0xff, 0xff], 0x1618),
            Some(0x139a)
        );
        assert_eq!(
            direct_call_target(&[0xe8, 0x10, 0, 0, 0], 0x1000),
            Some(0x1010)
        );
        // call *%rax (ff d0) preceded by other bytes.
        assert_eq!(direct_call_target(&[0x48, 0x89, 0xc7, 0xff, 0xd0], 9), None);
        assert_eq!(direct_call_target(&[0xe8, 0, 0], 9), None);
        assert!(is_plt_stub(&[0xff, 0x25, 0x12, 0x34, 0, 0]));
        assert!(is_plt_stub(&[
            0xf3, 0x0f, 0x1e, 0xfa, 0xf2, 0xff, 0x25, 0, 0
        ]));
        // push %rbp; mov %rsp,%rbp: a function.
        assert!(!is_plt_stub(&[0x55, 0x48, 0x89, 0xe5]));
        assert!(!is_plt_stub(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]));
        assert!(!is_plt_stub(&[]));
    }

    #[test]
    fn symbolizes_a_function_of_this_process() {
        assert_eq!(stacks_test_marker(1), 1u64.wrapping_mul(31).rotate_left(7));
        let addr = stacks_test_marker as fn(u64) -> u64 as usize as u64;
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.user(std::process::id(), &[addr + 4]);
        assert_eq!(frames.len(), 1);
        let f = &frames[0];
        assert_eq!(f.addr, addr + 4);
        let function = f.function.as_deref().expect("marker fn symbolized");
        assert!(function.contains("stacks_test_marker"), "got {function}");
        assert_eq!(f.offset, Some(4));
        // cargo test builds with debug info: the line table points here.
        let file = f.file.as_deref().expect("debug build has line info");
        assert!(file.ends_with("stacks.rs"), "got {file}");
        assert!(f.line.is_some());
        let exe = std::env::current_exe().unwrap();
        let exe_name = exe.file_name().unwrap().to_string_lossy();
        assert!(f.module.as_deref().unwrap().ends_with(&*exe_name), "{f:?}");
        // The cache is reused: a second call gives the same answer.
        assert_eq!(symbolizer.user(std::process::id(), &[addr + 4]), frames);
        assert_eq!(symbolizer.cached_pids(), 1);
    }

    #[test]
    fn symbolizer_caches_are_bounded_by_processes() {
        let addr = stacks_test_marker as fn(u64) -> u64 as usize as u64;
        let mut symbolizer = Symbolizer::new();
        // pids that do not exist: each is noted, none is resolved
        for pid in 0..(MAX_CACHED_PIDS as u32 + 10) {
            symbolizer.user(4_000_000 + pid, &[addr]);
            assert!(symbolizer.cached_pids() <= MAX_CACHED_PIDS);
        }
        assert_eq!(symbolizer.cached_pids(), 10);
        // after the caches were dropped, symbolizing still works
        let frames = symbolizer.user(std::process::id(), &[addr + 4]);
        assert!(frames[0]
            .function
            .as_deref()
            .unwrap()
            .contains("stacks_test_marker"));
    }

    #[test]
    fn unknown_addresses_stay_unsymbolized() {
        let mut symbolizer = Symbolizer::new();
        // The first page is never mapped.
        let frames = symbolizer.user(std::process::id(), &[0x10]);
        assert_eq!(frames, vec![Frame::unknown(0x10, None)]);
        assert_eq!(frames[0].to_string(), "0x10 [unknown]");
        // pid 0 must not be read as "this process".
        let addr = stacks_test_marker as fn(u64) -> u64 as usize as u64;
        assert_eq!(symbolizer.user(0, &[addr + 4])[0].function, None);
        assert!(symbolizer.user(std::process::id(), &[]).is_empty());
    }

    #[test]
    fn exited_process_gives_unsymbolized_frames() {
        let mut child = Command::new("true").spawn().expect("run true");
        let pid = child.id();
        child.wait().unwrap();
        let frames = Symbolizer::new().user(pid, &[0x5555_5555_1000, 0x7f00_0000_2000]);
        assert_eq!(frames.len(), 2);
        assert!(frames
            .iter()
            .all(|f| f.function.is_none() && f.module.is_none()));
    }

    #[test]
    fn anonymous_memory_uses_the_perf_map() {
        const LEN: usize = 4096;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as u64;
        let path = PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
        struct Cleanup(PathBuf, u64);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
                // SAFETY: unmaps the mapping made above, nothing points into it.
                unsafe { libc::munmap(self.1 as *mut libc::c_void, LEN) };
            }
        }
        let _cleanup = Cleanup(path.clone(), base);
        std::fs::write(&path, format!("{base:x} 100 LJIT:handle_request\n")).unwrap();

        let frames = Symbolizer::new().user(std::process::id(), &[base + 0x10, base + 0x200]);
        assert_eq!(frames[0].function.as_deref(), Some("LJIT:handle_request"));
        assert_eq!(frames[0].offset, Some(0x10));
        // Past the perf-map entry: anonymous memory, no module name.
        assert_eq!(frames[1], Frame::unknown(base + 0x200, None));
    }

    #[test]
    fn kernel_frames_never_panic() {
        let mut symbolizer = Symbolizer::new();
        assert!(symbolizer.kernel(&[]).is_empty());
        let frames = symbolizer.kernel(&[0xffff_ffff_ffff_fff0, 0x10]);
        assert_eq!(frames.len(), 2);
        // Past every kernel symbol: kallsyms would name the last one at an
        // offset of gigabytes, which must not be believed.
        assert_eq!(frames[0].function, None, "{:?}", frames[0]);
        assert_eq!(frames[1].function, None);
        assert_eq!(frames[1].to_string(), "0x10 [kernel]");
    }

    #[test]
    fn kernel_symbols_from_kallsyms() {
        // Find a text symbol with a real address (needs root for non-zero ones).
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let found = kallsyms.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let kind = it.next()?;
            let name = it.next()?;
            (addr != 0 && kind == "T" && name == "tcp_close").then_some(addr)
        });
        let Some(addr) = found else {
            eprintln!("skipping test - /proc/kallsyms shows no address for tcp_close (not root?)");
            return;
        };
        let frames = Symbolizer::new().kernel(&[addr + 8]);
        assert_eq!(
            frames[0].function.as_deref(),
            Some("tcp_close"),
            "{frames:?}"
        );
        assert_eq!(frames[0].offset, Some(8));
        assert_eq!(frames[0].module.as_deref(), Some("kernel"));
    }

    #[test]
    fn display_formats() {
        let with_line = frame(Some("serve"), Some("/src/leaky.c"), Some(42));
        assert_eq!(with_line.to_string(), "serve+0x2a (/src/leaky.c:42)");
        let no_line = frame(Some("__libc_connect"), None, None);
        assert_eq!(no_line.to_string(), "__libc_connect+0x2a [libc.so.6]");
        let unsymbolized = frame(None, None, None);
        assert_eq!(unsymbolized.to_string(), "0x7f0012345678 [libc.so.6]");
        let unknown = Frame::unknown(0xdead, None);
        assert_eq!(unknown.to_string(), "0xdead [unknown]");
        let bare = Frame {
            module: None,
            ..frame(Some("f"), None, None)
        };
        assert_eq!(bare.to_string(), "f+0x2a");
    }

    #[test]
    fn frames_outside_code_are_dropped_and_counted() {
        let maps = "\
55d0c0a00000-55d0c0a21000 r-xp 00001000 fd:01 1234 /usr/bin/srv\n\
55d0c0c00000-55d0c0c21000 rw-p 00000000 00:00 0 [heap]\n";
        assert!(in_executable_mapping(maps, 0x55d0_c0a0_0010));
        assert!(!in_executable_mapping(maps, 0x55d0_c0c0_0010), "heap");
        assert!(
            !in_executable_mapping(maps, 0x8415_fe8f_f1a4_cf00),
            "unmapped"
        );
        let out = |addr| Frame::unknown(addr, None);
        let mut frames = vec![
            frame(Some("accept4"), None, None),
            out(0x55d0_c0c0_0010),
            frame(Some("main"), None, None),
            out(0x8415_fe8f_f1a4_cf00),
            out(0x55d0_c0a0_0020),
        ];
        let flags = outside_code_in(Some(maps), &frames);
        assert_eq!(flags, vec![false, true, false, true, false]);
        assert_eq!(outside_code_in(None, &frames), vec![false; 5]);
        let mut note = Some("frames after #1 point into data".to_owned());
        drop_outside_code(&mut frames, &flags, &mut note);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            note.as_deref(),
            Some("frames after #1 point into data; 2 frames outside executable mappings (heap, stack, data) not shown")
        );
        // The innermost frame is always kept; nothing dropped, nothing said.
        let mut one = vec![out(0x3)];
        let mut none = None;
        drop_outside_code(&mut one, &[true], &mut none);
        assert_eq!((one.len(), none), (1, None));
    }

    #[test]
    fn serializes_all_fields() {
        let json = serde_json::to_value(frame(Some("f"), Some("a.c"), Some(3))).unwrap();
        assert_eq!(json["addr"], 0x7f00_1234_5678u64);
        assert_eq!(json["function"], "f");
        assert_eq!(json["offset"], 0x2a);
        assert_eq!(json["file"], "a.c");
        assert_eq!(json["line"], 3);
        assert_eq!(json["module"], "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert!(
            json.get("inferred").is_none(),
            "only inferred frames say so"
        );
    }

    #[test]
    fn mapping_names_from_proc_maps() {
        let maps = "\
55d0c0a00000-55d0c0a21000 r-xp 00001000 fd:01 1234                       /usr/bin/my server\n\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
7ffd10000000-7ffd10021000 rw-p 00000000 00:00 0                          [stack]\n\
7f1000000000-7f1000002000 r-xp 00000000 fd:01 99                         /opt/app/libx.so (deleted)\n";
        assert_eq!(
            mapping_name(maps, 0x55d0_c0a0_0010).as_deref(),
            Some("/usr/bin/my server")
        );
        assert_eq!(mapping_name(maps, 0x7f00_0000_0800), None);
        assert_eq!(
            mapping_name(maps, 0x7ffd_1000_0000).as_deref(),
            Some("[stack]")
        );
        assert_eq!(
            mapping_name(maps, 0x7f10_0000_1fff).as_deref(),
            Some("/opt/app/libx.so (deleted)")
        );
        assert_eq!(mapping_name(maps, 0x7f10_0000_2000), None);
        assert_eq!(mapping_name("garbage\n\nzz-yy r-xp", 0x10), None);
    }

    #[test]
    fn stack_notes() {
        let note = stack_note(&[]).unwrap();
        assert!(note.contains("no stack"), "{note}");
        let one = stack_note(&[frame(Some("connect"), None, None)]).unwrap();
        assert!(one.starts_with("only 1 frame"), "{one}");
        assert!(one.contains("-fno-omit-frame-pointer"), "{one}");
        let lost = stack_note(&[Frame::unknown(1, None), Frame::unknown(2, None)]).unwrap();
        assert!(lost.contains("none of the 2 frames"), "{lost}");
        // An unsymbolized frame inside a code mapping is fine...
        let good = [
            frame(Some("a"), None, None),
            Frame::unknown(2, Some("/usr/lib/libfoo.so".to_owned())),
        ];
        assert_eq!(stack_note(&good), None);
        // ...one in the heap (or in no mapping at all) is a walk gone astray.
        for module in [Some("[heap]".to_owned()), None] {
            let astray = [
                frame(Some("accept4"), None, None),
                Frame::unknown(0x55d0_0000_1000, module),
            ];
            let note = stack_note(&astray).unwrap();
            assert!(note.contains("after #1 point into data"), "{note}");
        }
    }

    use crate::testutil::KillOnDrop;

    #[test]
    fn symbolizes_the_leaky_helper() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/helpers/leaky.c");
        let dir = std::env::temp_dir().join(format!("close-wait-stacks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("leaky");
        let status = Command::new("gcc")
            .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("run gcc");
        assert!(status.success(), "gcc failed on {}", src.display());

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let child = Command::new(&exe)
            .args(["127.0.0.1", &port, "--hold", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run leaky");
        let mut child = KillOnDrop(child);
        let pid = child.0.id();

        // stderr: "leaky: pid=<pid> open_leaky_connection=0x..."
        let mut line = String::new();
        BufReader::new(child.0.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit_once("open_leaky_connection=0x")
            .and_then(|(_, hex)| u64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("no address in leaky's stderr: {line:?}"));
        assert!(line.contains(&format!("pid={pid} ")), "{line:?}");
        // stdout: the connection is made and leaky now sleeps.
        let mut connected = String::new();
        BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut connected)
            .unwrap();
        assert!(connected.starts_with("connected fd="), "{connected:?}");
        assert!(
            connected.trim_end().ends_with(&format!("pid={pid}")),
            "{connected:?}"
        );

        let frames = Symbolizer::new().user(pid, &[addr + 4]);
        let f = &frames[0];
        assert_eq!(
            f.function.as_deref(),
            Some("open_leaky_connection"),
            "{f:?}"
        );
        assert_eq!(f.offset, Some(4));
        assert!(
            f.file.as_deref().is_some_and(|p| p.ends_with("leaky.c")),
            "{f:?}"
        );
        assert!(f.line.is_some_and(|l| l > 0), "{f:?}");
        assert_eq!(
            f.module.as_deref().map(Path::new),
            Some(exe.as_path()),
            "{f:?}"
        );
        assert!(
            f.to_string().starts_with("open_leaky_connection+0x4 ("),
            "{f}"
        );

        drop(child);
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
