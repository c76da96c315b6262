//! Safe file output: checks before attaching, atomic replacement of whole
//! files, and no-follow creation of streamed files.
//!
//! close-wait runs as root and often writes into shared directories such as
//! /tmp, so it never follows a symlink planted at an output path: whole
//! files are written to a fresh temp file (`O_CREAT|O_EXCL|O_NOFOLLOW`) and
//! renamed over the path (rename replaces a symlink instead of following
//! it); streamed files are opened with `O_NOFOLLOW`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ExportError;

/// Mode of created files (before umask).
const FILE_MODE: u32 = 0o644;

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

fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Checks that `path` can be written: its directory exists and accepts new
/// files, and `path` is neither a directory nor a symlink (a streamed file
/// would refuse it later, and replacing one is rarely what was meant). Call
/// it before attaching anything, so that a typo fails in a second rather
/// than after a long trace.
///
/// The check creates and removes a probe file, which is exact where
/// permission bits are not (read-only mounts, root, ACLs).
pub fn check_output_path(path: &Path) -> Result<(), ExportError> {
    let dir = parent_dir(path);
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ExportError::ParentNotDir {
                path: path.to_path_buf(),
                dir,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ExportError::MissingDir {
                path: path.to_path_buf(),
                dir,
            })
        }
        Err(source) => {
            return Err(ExportError::DirNotWritable {
                path: path.to_path_buf(),
                dir,
                source,
            })
        }
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(ExportError::IsDirectory {
                path: path.to_path_buf(),
            })
        }
        Ok(m) if m.file_type().is_symlink() => {
            return Err(ExportError::Symlink {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ExportError::Io {
                action: "inspect",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let probe = temp_path(path, "probe");
    match create_exclusive(&probe) {
        Ok(_) => {
            // Best effort: a leftover probe is harmless and visibly named.
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(ExportError::DirNotWritable {
            path: path.to_path_buf(),
            dir,
            source,
        }),
    }
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new
/// one, never a partial one. The data goes to a temp file in the same
/// directory (created exclusively, mode 0644, not following symlinks), is
/// fsynced, then renamed over `path`; the directory is fsynced last.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(ExportError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let tmp = temp_path(path, "tmp");
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ExportError::Io {
            action,
            path: p,
            source,
        }
    };
    let mut f = create_exclusive(&tmp).map_err(io_err("create", &tmp))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("replace", path)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable. Failure here does not undo the write.
    if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates (or truncates) `path` for a file written as it goes, such as an
/// interval log. Refuses a symlink at `path` instead of following it.
pub fn create_nofollow(path: &Path) -> Result<File, ExportError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                ExportError::Symlink {
                    path: path.to_path_buf(),
                }
            } else if source.raw_os_error() == Some(libc::EISDIR) {
                ExportError::IsDirectory {
                    path: path.to_path_buf(),
                }
            } else {
                ExportError::Io {
                    action: "create",
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A fresh empty directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!(
                "close-wait-test-{name}-{}-{seq}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn check_accepts_writable_dir_and_leaves_nothing() {
        let d = TempDir::new("check-ok");
        check_output_path(&d.0.join("out.json")).unwrap();
        assert!(entries(&d.0).is_empty());
    }

    #[test]
    fn check_rejects_missing_dir_and_names_path() {
        let d = TempDir::new("check-missing");
        let p = d.0.join("nope").join("out.json");
        let e = check_output_path(&p).unwrap_err();
        assert!(matches!(e, ExportError::MissingDir { .. }), "{e:?}");
        assert!(e.to_string().contains("nope/out.json"), "{e}");
    }

    #[test]
    fn check_rejects_directory_and_file_parent() {
        let d = TempDir::new("check-dir");
        let e = check_output_path(&d.0).unwrap_err();
        assert!(matches!(e, ExportError::IsDirectory { .. }), "{e:?}");
        let f = d.0.join("file");
        fs::write(&f, b"x").unwrap();
        let e = check_output_path(&f.join("out")).unwrap_err();
        assert!(matches!(e, ExportError::ParentNotDir { .. }), "{e:?}");
    }

    #[test]
    fn check_rejects_unwritable_dir() {
        // procfs refuses new files even to root, unlike mode bits.
        let p = Path::new("/proc/close-wait-test-out.json");
        let e = check_output_path(p).unwrap_err();
        assert!(matches!(e, ExportError::DirNotWritable { .. }), "{e:?}");
        assert!(e.to_string().contains("close-wait-test-out.json"), "{e}");
    }

    #[test]
    fn check_rejects_symlink() {
        let d = TempDir::new("check-link");
        let p = d.0.join("out.hlog");
        symlink(d.0.join("elsewhere"), &p).unwrap();
        let e = check_output_path(&p).unwrap_err();
        assert!(matches!(e, ExportError::Symlink { .. }), "{e:?}");
        assert!(e.to_string().contains("out.hlog"), "{e}");
        // an existing regular file is fine: it will be replaced
        let f = d.0.join("old.json");
        fs::write(&f, b"{}").unwrap();
        check_output_path(&f).unwrap();
    }

    #[test]
    fn write_atomic_writes_and_replaces() {
        let d = TempDir::new("atomic");
        let p = d.0.join("r.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(&d.0), ["r.json"]);
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600);
        assert_eq!(mode & 0o022, 0);
    }

    #[test]
    fn write_atomic_replaces_symlink_instead_of_following() {
        let d = TempDir::new("atomic-link");
        let victim = d.0.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = d.0.join("out.json");
        symlink(&victim, &p).unwrap();
        write_atomic(&p, b"report").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&p).unwrap(), b"report");
    }

    #[test]
    fn write_atomic_refuses_directory() {
        let d = TempDir::new("atomic-dir");
        let e = write_atomic(&d.0, b"x").unwrap_err();
        assert!(matches!(e, ExportError::IsDirectory { .. }), "{e:?}");
    }

    #[test]
    fn create_nofollow_refuses_symlink() {
        let d = TempDir::new("nofollow");
        let victim = d.0.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = d.0.join("log.hlog");
        symlink(&victim, &p).unwrap();
        let e = create_nofollow(&p).unwrap_err();
        assert!(matches!(e, ExportError::Symlink { .. }), "{e:?}");
        assert!(e.to_string().contains("log.hlog"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn create_nofollow_truncates_regular_file() {
        let d = TempDir::new("nofollow-trunc");
        let p = d.0.join("log.hlog");
        fs::write(&p, b"old old old").unwrap();
        let mut f = create_nofollow(&p).unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }
}
