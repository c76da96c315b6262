//! Network namespaces on the host: which exist (one representative
//! process per namespace from `/proc/*/ns/net`, plus the ones bound under
//! `/run/netns`), entering one on the current thread (`setns`), and the
//! `--netns PATH|INODE` argument.
//!
//! sock_diag and `/proc/net/tcp` show only the reader's own namespace, so
//! the socket tables are dumped once per namespace, from a helper thread
//! that enters each in turn (see `sockets::list_tcp`).

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A network namespace and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// Inode number of the namespace (`net:[INODE]`).
    pub inode: u32,
    /// A file that refers to it, for `setns`: `/proc/PID/ns/net` of a
    /// process inside it, or a bind mount under `/run/netns`.
    pub path: PathBuf,
    /// A process inside it, when one was found (its `/proc/PID/net/tcp`
    /// is the fallback way to read the namespace's sockets).
    pub pid: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetnsError {
    #[error("--netns {0}: not a network namespace inode number nor a namespace file (/proc/PID/ns/net, /run/netns/NAME)")]
    Bad(String),
}

/// `net:[4026531840]` -> 4026531840.
pub fn parse_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Inode of a namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
pub fn inode_of(path: &Path) -> Option<u32> {
    let md = fs::metadata(path).ok()?;
    u32::try_from(md.ino()).ok()
}

/// The calling thread's network namespace.
pub fn current() -> Option<u32> {
    crate::logged::read_link(Path::new("/proc/thread-self/ns/net"))
        .and_then(|t| parse_link(&t.to_string_lossy()))
}

/// Every network namespace on the host, sorted by inode.
pub fn list() -> Vec<Netns> {
    list_in(Path::new("/proc"), Path::new("/run/netns"))
}

/// [`list`] over a proc tree and a netns bind-mount directory.
pub fn list_in(proc_root: &Path, run_netns: &Path) -> Vec<Netns> {
    let mut found: std::collections::BTreeMap<u32, Netns> = Default::default();
    let pids = fs::read_dir(proc_root).into_iter().flatten().flatten();
    for pid in pids.filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
        let path = proc_root.join(pid.to_string()).join("ns/net");
        // Kernel thread, gone, or not ours to read: routine, said at -vv.
        let Some(inode) =
            crate::logged::routine(fs::read_link(&path), || path.display().to_string())
                .and_then(|t| parse_link(&t.to_string_lossy()))
        else {
            continue;
        };
        found.entry(inode).or_insert(Netns {
            inode,
            path,
            pid: Some(pid),
        });
    }
    let bound = fs::read_dir(run_netns).into_iter().flatten().flatten();
    for e in bound {
        let path = e.path();
        if let Some(inode) = inode_of(&path) {
            found.entry(inode).or_insert(Netns {
                inode,
                path,
                pid: None,
            });
        }
    }
    found.into_values().collect()
}

/// Moves the calling thread into the namespace of `path` (needs
/// CAP_SYS_ADMIN). Only the calling thread changes namespace.
pub fn enter(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path)?;
    // SAFETY: plain setns(2) on a descriptor we own.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `--netns PATH|INODE`: a namespace inode number, or a file referring to
/// a namespace (`/proc/PID/ns/net`, `/run/netns/NAME`, or a NAME under
/// /run/netns as `ip netns` names them).
pub fn resolve(arg: &str) -> Result<u32, NetnsError> {
    if let Ok(n) = arg.parse::<u32>() {
        return Ok(n);
    }
    if let Some(n) = parse_link(arg) {
        return Ok(n);
    }
    let p = Path::new(arg);
    let named = Path::new("/run/netns").join(arg);
    let candidates: &[&Path] = if p.components().count() == 1 && !p.is_absolute() {
        &[named.as_path(), p]
    } else {
        &[p]
    };
    for c in candidates {
        // A namespace file is on nsfs; /proc/PID/ns/net reads as a link.
        if let Some(n) = fs::read_link(c)
            .ok()
            .and_then(|t| parse_link(&t.to_string_lossy()))
        {
            return Ok(n);
        }
        if is_nsfs(c) {
            if let Some(n) = inode_of(c) {
                return Ok(n);
            }
        }
    }
    Err(NetnsError::Bad(arg.to_owned()))
}

const NSFS_MAGIC: i64 = 0x6e73_6673;

fn is_nsfs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct, path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn links() {
        assert_eq!(parse_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_link("mnt:[4026531840]"), None);
        assert_eq!(parse_link("net:[x]"), None);
    }

    #[test]
    fn one_entry_per_namespace_lowest_pid_first_seen() {
        let t = TempDir::new("netns");
        t.link("1/ns/net", "net:[100]");
        t.link("20/ns/net", "net:[200]");
        t.link("7/ns/net", "net:[100]");
        t.link("30/ns/net", "garbage");
        t.file("self/ns/x", b"");
        let got = list_in(t.path(), &t.path().join("no-run-netns"));
        let got: Vec<(u32, Option<u32>)> = got.iter().map(|n| (n.inode, n.pid)).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, 100);
        assert!(matches!(got[0].1, Some(1) | Some(7)));
        assert_eq!(got[1], (200, Some(20)));
    }

    #[test]
    fn running_host() {
        let own = current().expect("/proc/thread-self/ns/net");
        assert_eq!(inode_of(Path::new("/proc/self/ns/net")), Some(own));
        assert!(list().iter().any(|n| n.inode == own));
        assert_eq!(resolve("/proc/self/ns/net"), Ok(own));
        assert_eq!(resolve(&own.to_string()), Ok(own));
        assert_eq!(resolve(&format!("net:[{own}]")), Ok(own));
        assert!(resolve("/etc/passwd").is_err());
        assert!(resolve("no-such-namespace-name").is_err());
    }
}
