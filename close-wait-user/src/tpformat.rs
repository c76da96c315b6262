//! Parser for tracefs `events/<category>/<name>/format` files.
//!
//! Offsets of tracepoint record fields change between kernels; close-wait
//! reads them at start-up and hands them to the eBPF program as globals.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use close_wait_common::{OtherOffsets, StateOffsets};

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("tracefs is not mounted (looked in {0}); mount it with: mount -t tracefs nodev /sys/kernel/tracing")]
    NoTracefs(String),
    #[error("tracefs is mounted at {path} but this process cannot read it ({why}): run as root, or add CAP_DAC_READ_SEARCH")]
    NotReadable { path: PathBuf, why: String },
    #[error("tracefs is not mounted here (looked in {looked}): this process runs in network namespace {here} ({name}), as under `ip netns exec`, which remounts /sys and hides tracefs; close-wait sees every namespace from the host: run it there (with --netns {here} to keep only this one), or enter only the network namespace: nsenter --net={name} close-wait ...")]
    NoTracefsInNetns {
        looked: String,
        here: u32,
        name: String,
    },
    #[error("tracepoint {0} is missing from this kernel ({1} not found)")]
    MissingTracepoint(String, PathBuf),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field '{field}' in its format")]
    MissingField { tracepoint: String, field: String },
    #[error("tracepoint {tracepoint} field '{field}' is {found} bytes, expected {expected}")]
    FieldSize {
        tracepoint: String,
        field: String,
        found: u32,
        expected: u32,
    },
    #[error("malformed format line in {tracepoint}: {line}")]
    Malformed { tracepoint: String, line: String },
}

/// One `field:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// The fields of one tracepoint, by name.
#[derive(Debug, Clone, Default)]
pub struct Format {
    pub tracepoint: String,
    pub fields: HashMap<String, Field>,
}

impl Format {
    /// Parses the text of a `format` file.
    pub fn parse(tracepoint: &str, text: &str) -> Result<Format, FormatError> {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let malformed = || FormatError::Malformed {
                tracepoint: tracepoint.to_string(),
                line: line.to_string(),
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for (i, part) in rest.split(';').enumerate() {
                let part = part.trim();
                if i == 0 {
                    decl = Some(part);
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = Some(v.trim().parse::<u32>().map_err(|_| malformed())?);
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = Some(v.trim().parse::<u32>().map_err(|_| malformed())?);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(malformed());
            };
            let name = field_name(decl).ok_or_else(malformed)?;
            fields.insert(name.clone(), Field { name, offset, size });
        }
        Ok(Format {
            tracepoint: tracepoint.to_string(),
            fields,
        })
    }

    /// Offset of `name`, checking its size.
    pub fn offset(&self, name: &str, size: u32) -> Result<u32, FormatError> {
        let f = self
            .fields
            .get(name)
            .ok_or_else(|| FormatError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: name.to_string(),
            })?;
        if f.size != size {
            return Err(FormatError::FieldSize {
                tracepoint: self.tracepoint.clone(),
                field: name.to_string(),
                found: f.size,
                expected: size,
            });
        }
        Ok(f.offset)
    }
}

/// `const void * skaddr` -> `skaddr`; `__u8 saddr[4]` -> `saddr`.
fn field_name(decl: &str) -> Option<String> {
    let last = decl.split_whitespace().last()?;
    let last = last.trim_start_matches('*');
    let name = last.split('[').next()?;
    if name.is_empty() {
        None
    } else {
        Some(name.to_string())
    }
}

/// `f_type` of a tracefs mount (statfs).
const TRACEFS_MAGIC: i64 = 0x7472_6163;

/// Where tracefs is mounted, if anywhere; a tracefs this process may not
/// read (mode 0700 for root since Linux 6.x) is named as such, not as
/// missing.
pub fn find_tracefs() -> Result<PathBuf, FormatError> {
    use std::os::unix::fs::MetadataExt as _;
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    for c in candidates {
        if Path::new(c).join("events").is_dir() {
            return Ok(PathBuf::from(c));
        }
    }
    for c in candidates {
        let path = std::ffi::CString::new(c).expect("no NUL");
        // SAFETY: statfs fills the zeroed struct; the path is a C string.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statfs(path.as_ptr(), &mut st) };
        let err = std::io::Error::last_os_error();
        let why = if r == 0 && st.f_type as i64 == TRACEFS_MAGIC {
            match std::fs::metadata(c) {
                Ok(m) => format!(
                    "mode {:04o}, owner uid {}, and this process is uid {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    // SAFETY: no preconditions.
                    unsafe { libc::geteuid() }
                ),
                Err(e) => e.to_string(),
            }
        } else if r != 0 && err.raw_os_error() == Some(libc::EACCES) {
            err.to_string()
        } else {
            continue;
        };
        return Err(FormatError::NotReadable {
            path: PathBuf::from(c),
            why,
        });
    }
    let looked = candidates.join(", ");
    // In a namespace bound under /run/netns (`ip netns exec`), or in one
    // that is not pid 1's, when pid 1's can be read.
    let Some(here) = crate::netns::current() else {
        return Err(FormatError::NoTracefs(looked));
    };
    let named = crate::netns::list_in(Path::new("/nonexistent"), Path::new("/run/netns"))
        .into_iter()
        .find(|n| n.inode == here)
        .map(|n| n.path.display().to_string());
    let host = crate::netns::inode_of(Path::new("/proc/1/ns/net"));
    match (named, host) {
        (Some(name), _) => Err(FormatError::NoTracefsInNetns { looked, here, name }),
        (None, Some(host)) if host != here => Err(FormatError::NoTracefsInNetns {
            looked,
            here,
            name: format!("/proc/{}/ns/net", std::process::id()),
        }),
        _ => Err(FormatError::NoTracefs(looked)),
    }
}

/// Reads the format of `category/name` under `tracefs`.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<Format, FormatError> {
    let tp = format!("{category}:{name}");
    let dir = tracefs.join("events").join(category).join(name);
    if !dir.is_dir() {
        return Err(FormatError::MissingTracepoint(tp, dir));
    }
    let path = dir.join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| FormatError::Read {
        path: path.clone(),
        source,
    })?;
    Format::parse(&tp, &text)
}

/// sock:inet_sock_set_state offsets.
pub fn state_offsets(f: &Format) -> Result<StateOffsets, FormatError> {
    Ok(StateOffsets {
        skaddr: f.offset("skaddr", 8)?,
        oldstate: f.offset("oldstate", 4)?,
        newstate: f.offset("newstate", 4)?,
        sport: f.offset("sport", 2)?,
        dport: f.offset("dport", 2)?,
        family: f.offset("family", 2)?,
        protocol: f.offset("protocol", 2)?,
        saddr: f.offset("saddr", 4)?,
        daddr: f.offset("daddr", 4)?,
        saddr_v6: f.offset("saddr_v6", 16)?,
        daddr_v6: f.offset("daddr_v6", 16)?,
        _pad: 0,
    })
}

/// The formats the other programs need, in the order of `OtherOffsets`.
pub const OTHER_TRACEPOINTS: [(&str, &str, &str, u32); 3] = [
    ("tcp", "tcp_receive_reset", "skaddr", 8),
    ("syscalls", "sys_exit_accept4", "ret", 8),
    ("syscalls", "sys_exit_accept", "ret", 8),
];

/// Reads every offset the programs need from `tracefs`.
pub fn read_all(tracefs: &Path) -> Result<(StateOffsets, OtherOffsets), FormatError> {
    let state = state_offsets(&read_format(tracefs, "sock", "inet_sock_set_state")?)?;
    let mut o = [0u32; 3];
    for (slot, (cat, name, field, size)) in o.iter_mut().zip(OTHER_TRACEPOINTS) {
        *slot = read_format(tracefs, cat, name)?.offset(field, size)?;
    }
    let other = OtherOffsets {
        receive_reset_skaddr: o[0],
        accept4_ret: o[1],
        accept_ret: o[2],
        _pad: 0,
    };
    Ok((state, other))
}

#[cfg(test)]
mod tests {
    use super::*;

    const THIS_KERNEL: &str = include_str!("../tests/fixtures/inet_sock_set_state.format");

    #[test]
    fn parses_this_kernels_format() {
        let f = Format::parse("sock:inet_sock_set_state", THIS_KERNEL).unwrap();
        let o = state_offsets(&f).unwrap();
        assert_eq!(o.skaddr, 8);
        assert_eq!(o.oldstate, 16);
        assert_eq!(o.newstate, 20);
        assert_eq!(o.sport, 24);
        assert_eq!(o.dport, 26);
        assert_eq!(o.family, 28);
        assert_eq!(o.protocol, 30);
        assert_eq!(o.saddr, 32);
        assert_eq!(o.daddr, 36);
        assert_eq!(o.saddr_v6, 40);
        assert_eq!(o.daddr_v6, 56);
        assert_eq!(f.fields["common_pid"].offset, 4);
        // The layout the direct-load program is compiled with.
        assert_eq!(o, close_wait_common::STATE_LAYOUT);
    }

    #[test]
    fn follows_shifted_offsets() {
        // A made-up kernel that put a new 8-byte field before skaddr.
        let shifted = "name: inet_sock_set_state\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:u64 new_thing;\toffset:8;\tsize:8;\tsigned:0;\n\
            \tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:int oldstate;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:int newstate;\toffset:28;\tsize:4;\tsigned:1;\n\
            \tfield:__u16 sport;\toffset:32;\tsize:2;\tsigned:0;\n\
            \tfield:__u16 dport;\toffset:34;\tsize:2;\tsigned:0;\n\
            \tfield:__u16 family;\toffset:36;\tsize:2;\tsigned:0;\n\
            \tfield:__u16 protocol;\toffset:38;\tsize:2;\tsigned:0;\n\
            \tfield:__u8 saddr[4];\toffset:40;\tsize:4;\tsigned:0;\n\
            \tfield:__u8 daddr[4];\toffset:44;\tsize:4;\tsigned:0;\n\
            \tfield:__u8 saddr_v6[16];\toffset:48;\tsize:16;\tsigned:0;\n\
            \tfield:__u8 daddr_v6[16];\toffset:64;\tsize:16;\tsigned:0;\n\
            \nprint fmt: \"x\"\n";
        let o = state_offsets(&Format::parse("t", shifted).unwrap()).unwrap();
        assert_eq!(o.skaddr, 16);
        assert_eq!(o.protocol, 38);
        assert_eq!(o.daddr_v6, 64);
    }

    #[test]
    fn missing_field_is_named() {
        let text = "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n";
        let err = state_offsets(&Format::parse("sock:x", text).unwrap()).unwrap_err();
        assert!(err.to_string().contains("'oldstate'"), "{err}");
    }

    #[test]
    fn wrong_size_is_refused() {
        let text = THIS_KERNEL.replace("offset:24;\tsize:2;", "offset:24;\tsize:4;");
        let err = state_offsets(&Format::parse("sock:x", &text).unwrap()).unwrap_err();
        assert!(matches!(err, FormatError::FieldSize { .. }), "{err}");
    }

    #[test]
    fn missing_tracepoint_is_named() {
        // A tracefs that has sock:inet_sock_set_state but no tcp events.
        let root = std::env::temp_dir().join(format!("cw-tracefs-{}", std::process::id()));
        let dir = root.join("events/sock/inet_sock_set_state");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("format"), THIS_KERNEL).unwrap();
        let err = read_all(&root).unwrap_err();
        let _ = std::fs::remove_dir_all(&root);
        assert!(matches!(err, FormatError::MissingTracepoint(..)), "{err}");
        assert!(err.to_string().contains("tcp:tcp_receive_reset"), "{err}");
        assert!(
            err.to_string().contains("missing from this kernel"),
            "{err}"
        );
    }

    #[test]
    fn no_tracefs_says_how_to_mount_it() {
        let err = FormatError::NoTracefs("/x".into()).to_string();
        assert!(
            err.contains("mount -t tracefs nodev /sys/kernel/tracing"),
            "{err}"
        );
    }

    #[test]
    fn malformed_line_is_an_error() {
        let text = "\tfield:int x;\toffset:abc;\tsize:4;\n";
        assert!(Format::parse("t", text).is_err());
    }
}
