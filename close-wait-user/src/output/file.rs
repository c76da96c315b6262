//! Output files that cannot hurt the host.
//!
//! close-wait runs as root and is often pointed at shared directories such
//! as /tmp, so an output path is claimed before anything is attached
//! ([`OutputFile::claim`]) and then only ever replaced, never written in
//! place:
//!
//! * an existing path that is not a regular file (device node, FIFO,
//!   socket, directory, symlink) is refused; the existing file is never
//!   opened, and the temp files are created exclusively without following
//!   symlinks, so no open can block on a FIFO or reach a device;
//! * every write goes to a fresh temp file in the same directory
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`), which is renamed over the path: hard
//!   links and other names of the old file keep their content, readers see
//!   the old file or the new one;
//! * files are created with mode 0600 (reports carry command lines and
//!   stacks), or `--mode`, or the mode of the existing file when this user
//!   owns it; the mode is set with `fchmod`, so the umask does not change it;
//! * the path is locked for as long as the run lasts, so a second instance
//!   on the same path is refused. The lock is an abstract Unix socket named
//!   after the directory (device, inode) and the file name: the kernel drops
//!   it when the process dies, however it dies, and nothing is created on
//!   disk (no placeholder, no lock file). Its scope is the network
//!   namespace.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of created files unless asked otherwise.
pub const DEFAULT_MODE: u32 = 0o600;

/// Errors while claiming and writing an output file. A cause (an I/O error,
/// say) is the error's `source()`, not repeated in its message: print the
/// chain (anyhow's `{:#}`) to see both.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output {path}: directory {dir} does not exist")]
    MissingDir { path: PathBuf, dir: PathBuf },
    #[error("output {path}: {dir} is not a directory")]
    ParentNotDir { path: PathBuf, dir: PathBuf },
    #[error("output {path}: cannot create files in {dir}")]
    DirNotWritable {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("output {path} is a directory; give a file name")]
    IsDirectory { path: PathBuf },
    #[error("refusing to write {path}: it is a symbolic link (remove it or pick another path)")]
    Symlink { path: PathBuf },
    #[error("refusing to write {path}: it is {kind}, not a regular file (remove it or pick another path)")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("refusing to write {path}: another close-wait is writing it")]
    Locked { path: PathBuf },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The directory a file at `path` lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A fresh name next to `path`, unique within this process.
fn temp_path(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.{what}.{}.{seq}", std::process::id()))
}

/// What a non-regular file is, for an error message (also the reader's of
/// `close-wait report`).
pub(crate) fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn create_exclusive(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The umask may have removed bits the user asked for.
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

/// FNV-1a, 64 bits: a stable hash of a file name for the lock's name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Takes the lock of output `name` in directory `dir`; `None` when another
/// process holds it.
fn lock(dir: &fs::Metadata, name: &std::ffi::OsStr) -> io::Result<Option<UnixListener>> {
    use std::os::linux::net::SocketAddrExt as _;
    let key = format!(
        "close-wait/output/{:x}/{:x}/{:016x}",
        dir.dev(),
        dir.ino(),
        fnv1a(name.as_encoded_bytes())
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(key.as_bytes())?;
    match UnixListener::bind_addr(&addr) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(e),
    }
}

/// An output path claimed for this run: checked, locked, and written only
/// by replacing it.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    mode: u32,
    _lock: UnixListener,
}

impl OutputFile {
    /// Checks and locks `path` for writing, before anything is attached.
    /// Nothing is written (and nothing opened) until the first
    /// [`replace`](Self::replace) or [`stream`](Self::stream).
    ///
    /// `mode` is `--mode`; without it, a file this user owns keeps its mode
    /// and anything else is written 0600. Refused with one line: a missing
    /// or unwritable directory, a path that is a directory, a symlink, a
    /// device, FIFO or socket, and a path another close-wait has claimed.
    pub fn claim(path: &Path, mode: Option<u32>) -> Result<OutputFile, OutputError> {
        let dir = parent_dir(path);
        let dir_meta = check_dir(path, &dir)?;
        let existing = match fs::symlink_metadata(path) {
            Ok(m) => {
                refuse_non_regular(path, &m)?;
                Some(m)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(OutputError::Io {
                    action: "inspect",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let Some(name) = path.file_name() else {
            return Err(OutputError::IsDirectory {
                path: path.to_path_buf(),
            });
        };
        let lock = lock(&dir_meta, name)
            .map_err(|source| OutputError::Io {
                action: "lock",
                path: path.to_path_buf(),
                source,
            })?
            .ok_or_else(|| OutputError::Locked {
                path: path.to_path_buf(),
            })?;
        let mode = match (mode, &existing) {
            (Some(m), _) => m,
            (None, Some(m)) if m.uid() == euid() => m.mode() & 0o777,
            _ => DEFAULT_MODE,
        };
        let out = OutputFile {
            path: path.to_path_buf(),
            mode,
            _lock: lock,
        };
        out.probe(&dir)?;
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Mode of the files written.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// Creates and removes a temp file: exact where permission bits are not
    /// (read-only mounts, root, ACLs).
    fn probe(&self, dir: &Path) -> Result<(), OutputError> {
        let probe = temp_path(&self.path, "probe");
        match create_exclusive(&probe, self.mode) {
            Ok(_) => {
                if let Err(e) = fs::remove_file(&probe) {
                    log::info!("cannot remove the probe file {}: {e}", probe.display());
                }
                Ok(())
            }
            Err(source) => Err(OutputError::DirNotWritable {
                path: self.path.clone(),
                dir: dir.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes `bytes` as the new content: readers see the old file or the
    /// new one, never a partial one. The temp file is fsynced, locked and
    /// renamed over the path; the directory is fsynced last. On failure the
    /// old file is left as it was.
    pub fn replace(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.install(bytes).map(drop)
    }

    /// Puts a fresh file with `bytes` at the path and returns it, open for
    /// writing more (an interval log grows this way).
    pub fn stream(&mut self, bytes: &[u8]) -> Result<File, OutputError> {
        self.install(bytes)
    }

    fn install(&mut self, bytes: &[u8]) -> Result<File, OutputError> {
        let tmp = temp_path(&self.path, "tmp");
        let io_err = |action: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| OutputError::Io {
                action,
                path: p,
                source,
            }
        };
        // Errors name the output, not the temp file the user never asked for.
        let mut f = create_exclusive(&tmp, self.mode).map_err(io_err("write", &self.path))?;
        let written = f
            .write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(io_err("write", &self.path))
            .and_then(|()| fs::rename(&tmp, &self.path).map_err(io_err("replace", &self.path)));
        if let Err(e) = written {
            if let Err(rm) = fs::remove_file(&tmp) {
                log::info!("cannot remove the temp file {}: {rm}", tmp.display());
            }
            return Err(e);
        }
        // Make the rename itself durable. Failure here does not undo the write.
        let dir = parent_dir(&self.path);
        if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
            log::info!("cannot sync the directory {}: {e}", dir.display());
        }
        Ok(f)
    }
}

fn refuse_non_regular(path: &Path, m: &fs::Metadata) -> Result<(), OutputError> {
    let ft = m.file_type();
    if ft.is_file() {
        Ok(())
    } else if ft.is_dir() {
        Err(OutputError::IsDirectory {
            path: path.to_path_buf(),
        })
    } else if ft.is_symlink() {
        Err(OutputError::Symlink {
            path: path.to_path_buf(),
        })
    } else {
        Err(OutputError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(ft),
        })
    }
}

fn check_dir(path: &Path, dir: &Path) -> Result<fs::Metadata, OutputError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(m),
        Ok(_) => Err(OutputError::ParentNotDir {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OutputError::MissingDir {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        }),
        Err(source) => Err(OutputError::DirNotWritable {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

/// Parses `--mode`: octal permission bits, `600`, `0640` or `0o644`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => Err(format!(
            "invalid mode '{s}': expected octal permission bits 000-777, e.g. 0600 or 0640"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_file_is_0600_whatever_the_umask_and_a_claim_writes_nothing() {
        let d = TempDir::new("out-new");
        let p = d.0.join("r.json");
        {
            let _claimed = OutputFile::claim(&p, None).unwrap();
            assert!(entries(&d.0).is_empty());
        }
        let mut o = OutputFile::claim(&p, None).unwrap();
        o.replace(b"one").unwrap();
        o.replace(b"two").unwrap();
        drop(o);
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(&d.0), ["r.json"]);
        assert_eq!(mode_of(&p), 0o600);
    }

    #[test]
    fn explicit_mode_and_own_files_mode() {
        let d = TempDir::new("out-mode");
        let p = d.0.join("r.json");
        let mut o = OutputFile::claim(&p, Some(0o644)).unwrap();
        o.replace(b"x").unwrap();
        drop(o);
        assert_eq!(mode_of(&p), 0o644);
        // our own existing file keeps its mode
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let mut o = OutputFile::claim(&p, None).unwrap();
        o.replace(b"y").unwrap();
        drop(o);
        assert_eq!(mode_of(&p), 0o640);
        // setuid bits are never carried over
        fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).unwrap();
        let mut o = OutputFile::claim(&p, None).unwrap();
        o.replace(b"z").unwrap();
        drop(o);
        assert_eq!(mode_of(&p), 0o755);
    }

    #[test]
    fn hard_links_keep_their_content() {
        let d = TempDir::new("out-link");
        let other = d.0.join("precious");
        fs::write(&other, b"keep me").unwrap();
        let p = d.0.join("out.hlog");
        fs::hard_link(&other, &p).unwrap();
        let mut o = OutputFile::claim(&p, None).unwrap();
        let mut f = o.stream(b"head\n").unwrap();
        f.write_all(b"more\n").unwrap();
        drop(f);
        assert_eq!(fs::read(&other).unwrap(), b"keep me");
        assert_eq!(fs::read(&p).unwrap(), b"head\nmore\n");
        assert_eq!(fs::metadata(&other).unwrap().nlink(), 1);
    }

    #[test]
    fn a_second_claim_is_refused_while_the_first_lives() {
        let d = TempDir::new("out-lock");
        let p = d.0.join("r.hlog");
        let first = OutputFile::claim(&p, None).unwrap();
        let e = OutputFile::claim(&p, None).unwrap_err();
        assert!(matches!(e, OutputError::Locked { .. }), "{e:?}");
        assert!(e.to_string().contains("r.hlog"), "{e}");
        // the same path spelled another way is the same output
        let e = OutputFile::claim(&d.0.join(".").join("r.hlog"), None).unwrap_err();
        assert!(matches!(e, OutputError::Locked { .. }), "{e:?}");
        // another name in the same directory is not
        let _other = OutputFile::claim(&d.0.join("r.json"), None).unwrap();
        drop(first);
        OutputFile::claim(&p, None).unwrap();
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let d = TempDir::new("out-kinds");
        let fifo = d.0.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = OutputFile::claim(&fifo, None).unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        let e = OutputFile::claim(&d.0, None).unwrap_err();
        assert!(matches!(e, OutputError::IsDirectory { .. }), "{e:?}");
        let link = d.0.join("link");
        symlink(d.0.join("elsewhere"), &link).unwrap();
        let e = OutputFile::claim(&link, None).unwrap_err();
        assert!(matches!(e, OutputError::Symlink { .. }), "{e:?}");
        let sock = d.0.join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = OutputFile::claim(&sock, None).unwrap_err();
        assert!(e.to_string().contains("is a socket"), "{e}");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn refuses_missing_or_unwritable_dirs() {
        let d = TempDir::new("out-dirs");
        let e = OutputFile::claim(&d.0.join("nope/out.json"), None).unwrap_err();
        assert!(matches!(e, OutputError::MissingDir { .. }), "{e:?}");
        let f = d.0.join("file");
        fs::write(&f, b"x").unwrap();
        let e = OutputFile::claim(&f.join("out"), None).unwrap_err();
        assert!(matches!(e, OutputError::ParentNotDir { .. }), "{e:?}");
        // procfs refuses new files even to root, unlike mode bits.
        let e = OutputFile::claim(Path::new("/proc/close-wait-test-out.json"), None).unwrap_err();
        assert!(matches!(e, OutputError::DirNotWritable { .. }), "{e:?}");
    }

    #[test]
    fn replacing_a_symlink_target_never_happens() {
        let d = TempDir::new("out-symlink");
        let victim = d.0.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = d.0.join("out.json");
        let mut o = OutputFile::claim(&p, None).unwrap();
        // planted after the claim: replaced as a name, not followed
        drop(fs::remove_file(&p));
        symlink(&victim, &p).unwrap();
        o.replace(b"report").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("600").unwrap(), 0o600);
        assert_eq!(parse_mode("0640").unwrap(), 0o640);
        assert_eq!(parse_mode("0o644").unwrap(), 0o644);
        for bad in ["", "8", "1777", "rw", "0o"] {
            assert!(parse_mode(bad).is_err(), "{bad} accepted");
        }
    }
}
