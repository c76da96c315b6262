//! Finding a process's CPython: the mapped python binary or libpython that
//! defines `_PyRuntime`, and where its symbols are in the process.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSegment, ObjectSymbol};

use super::PyError;

/// One mapping line of `/proc/PID/maps` that names a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

/// Parses `/proc/PID/maps` text, keeping file-backed mappings.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let range = it.next()?;
            let _perms = it.next()?;
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let _inode = it.next()?;
            let path: String = it.collect::<Vec<_>>().join(" ");
            if !path.starts_with('/') {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                offset,
                path,
            })
        })
        .collect()
}

/// `python3.12` / `libpython3.12.so.1.0` / `libpython3.13t.so` -> (3, 12).
pub fn version_from_name(path: &str) -> Option<(u8, u8)> {
    let name = Path::new(path).file_name()?.to_str()?;
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"))?;
    let mut parts = rest.splitn(2, '.');
    let major: u8 = parts.next()?.parse().ok()?;
    let minor_digits: String = parts
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some((major, minor_digits.parse().ok()?))
}

/// Could this mapped file be CPython? (A cheap filter before reading ELF.)
fn may_be_python(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("python") || n.starts_with("libpython"))
}

/// The CPython of a process: its file and the run-time addresses of the
/// symbols a walk needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The binary or shared library, as the process maps it.
    pub path: String,
    /// `_PyRuntime`.
    pub runtime: u64,
    /// `Py_Version` (3.11+: `PY_VERSION_HEX` as an unsigned long).
    pub py_version: Option<u64>,
    /// `PyCode_Type`, to check that a pointer is a code object.
    pub code_type: Option<u64>,
}

/// Finds the CPython mapped by `pid` (through `/proc/PID/root`, so a
/// process in another mount namespace works too).
pub fn find(pid: u32) -> Result<Found, PyError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| PyError::Proc {
        what: "maps",
        source: e,
    })?;
    let maps = parse_maps(&maps);
    let mut seen: Vec<&str> = Vec::new();
    for m in &maps {
        if !may_be_python(&m.path) || seen.contains(&m.path.as_str()) {
            continue;
        }
        seen.push(&m.path);
        let mut file = PathBuf::from(format!("/proc/{pid}/root{}", m.path));
        let md = match std::fs::metadata(&file) {
            Ok(md) => md,
            Err(_) => {
                file = PathBuf::from(&m.path);
                match std::fs::metadata(&file) {
                    Ok(md) => md,
                    Err(_) => continue,
                }
            }
        };
        let Some(syms) = link_symbols(&file, &md) else {
            continue;
        };
        if let Some(found) = place(&syms, &m.path, &maps) {
            return Ok(found);
        }
    }
    Err(PyError::NotPython)
}

/// The link-time addresses a walk needs, from one CPython file.
#[derive(Debug, Clone, Copy)]
struct LinkSymbols {
    runtime: u64,
    py_version: Option<u64>,
    code_type: Option<u64>,
    /// Lowest address of a loadable segment.
    first_vaddr: u64,
}

/// A file's identity: device, inode, size, modification time.
type FileKey = (u64, u64, u64, i64);

/// Files already read, by identity: every process of one CPython shares
/// its binary or libpython, which is read and parsed once (reading a 25 MB
/// libpython at every new process was the registry's main cost).
static PARSED: std::sync::Mutex<Option<HashMap<FileKey, Option<LinkSymbols>>>> =
    std::sync::Mutex::new(None);
/// Files kept in [`PARSED`] at most (it is emptied when full).
const PARSED_MAX: usize = 256;

fn link_symbols(file: &Path, md: &std::fs::Metadata) -> Option<LinkSymbols> {
    use std::os::unix::fs::MetadataExt as _;
    let key = (md.dev(), md.ino(), md.size(), md.mtime());
    if let Ok(mut g) = PARSED.lock() {
        let cache = g.get_or_insert_with(HashMap::new);
        if let Some(s) = cache.get(&key) {
            return *s;
        }
        let parsed = std::fs::read(file).ok().and_then(|data| symbols_in(&data));
        if cache.len() >= PARSED_MAX {
            cache.clear();
        }
        cache.insert(key, parsed);
        return parsed;
    }
    symbols_in(&std::fs::read(file).ok()?)
}

/// Looks `_PyRuntime` and friends up in ELF `data`.
fn symbols_in(data: &[u8]) -> Option<LinkSymbols> {
    let elf = object::File::parse(data).ok()?;
    let mut runtime = None;
    let mut py_version = None;
    let mut code_type = None;
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        match sym.name() {
            Ok("_PyRuntime") => runtime = Some(sym.address()),
            Ok("Py_Version") => py_version = Some(sym.address()),
            Ok("PyCode_Type") => code_type = Some(sym.address()),
            _ => continue,
        }
        if runtime.is_some() && py_version.is_some() && code_type.is_some() {
            break;
        }
    }
    Some(LinkSymbols {
        runtime: runtime?,
        py_version,
        code_type,
        first_vaddr: elf.segments().map(|s| s.address()).min()?,
    })
}

/// `syms` at their run-time addresses in a process that maps the file as
/// `path` (`maps`): the mapping of file offset 0 holds the first loadable
/// segment, rounded down to its page.
fn place(syms: &LinkSymbols, path: &str, maps: &[Mapping]) -> Option<Found> {
    let start = maps
        .iter()
        .filter(|m| m.path == path && m.offset == 0)
        .map(|m| m.start)
        .min()?;
    let bias = start.wrapping_sub(syms.first_vaddr & !0xfff);
    Some(Found {
        path: path.to_string(),
        runtime: syms.runtime.wrapping_add(bias),
        py_version: syms.py_version.map(|a| a.wrapping_add(bias)),
        code_type: syms.code_type.map(|a| a.wrapping_add(bias)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let text = "\
00400000-0041f000 r--p 00000000 08:01 1234 /usr/bin/python3.11
7f00aa000000-7f00aa100000 r-xp 00020000 08:01 99 /root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0
7f00ab000000-7f00ab001000 rw-p 00000000 00:00 0 
7ffd000000-7ffd100000 rw-p 00000000 00:00 0 [stack]
7f00ac000000-7f00ac001000 r--p 00000000 08:01 7 /tmp/with space/lib.so
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            Mapping {
                start: 0x400000,
                end: 0x41f000,
                offset: 0,
                path: "/usr/bin/python3.11".into()
            }
        );
        assert_eq!(m[1].offset, 0x20000);
        assert_eq!(m[2].path, "/tmp/with space/lib.so");
    }

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_from_name("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(
            version_from_name("/x/lib/libpython3.12.so.1.0"),
            Some((3, 12))
        );
        assert_eq!(version_from_name("/x/libpython3.13t.so"), Some((3, 13)));
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert_eq!(version_from_name("/usr/lib/libc.so.6"), None);
    }

    /// The machine's own python3: `_PyRuntime` found and placed where the
    /// process has it (the interpreter reports its address through ctypes).
    #[test]
    fn finds_pyruntime_of_a_live_python() {
        let out = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import ctypes,sys; print(ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, '_PyRuntime'))); sys.stdout.flush(); sys.stdin.read()",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = out else {
            eprintln!("skipping: no python3");
            return;
        };
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let want: u64 = line.trim().parse().unwrap();
        let found = find(child.id());
        drop(child.stdin.take());
        let _ = child.wait();
        let found = found.expect("python3 found");
        assert_eq!(found.runtime, want, "{found:?}");
        assert!(found.py_version.is_some() && found.code_type.is_some());
    }
}
