//! cgroup v2 paths for `--cgroup`: where the unified hierarchy is mounted
//! (`/sys/fs/cgroup` on pure v2 systems, `/sys/fs/cgroup/unified` on hybrid
//! ones) and the path of a cgroup inside it, as `/proc/PID/cgroup` shows it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CgroupError {
    #[error(
        "--cgroup: no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mountinfo)"
    )]
    NoCgroup2,
    #[error("--cgroup: {0} is not a cgroup v2 directory")]
    NotFound(PathBuf),
    #[error("--cgroup: {arg} resolves to {resolved}, outside the cgroup2 mount {mount}")]
    Outside {
        arg: PathBuf,
        resolved: PathBuf,
        mount: PathBuf,
    },
}

/// Mount point of the first cgroup2 filesystem in a mountinfo text.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // ... mount_point ... - fstype source options
        let (left, right) = l.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup path (`/a/b`, as in `/proc/PID/cgroup`) for a `--cgroup`
/// argument: absolute under the cgroup2 mount, or relative to it.
pub fn relative(mount: &Path, arg: &Path) -> PathBuf {
    let rel = if arg.is_absolute() {
        arg.strip_prefix(mount).unwrap_or(arg)
    } else {
        arg
    };
    Path::new("/").join(rel)
}

/// Resolves a `--cgroup` argument on this machine: symlinks and `..` are
/// resolved, and the result must be a cgroup directory inside the cgroup2
/// mount (`../cpu` on a hybrid hierarchy is a v1 controller: refused).
pub fn resolve(arg: &Path) -> Result<PathBuf, CgroupError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = cgroup2_mount_in(&info).ok_or(CgroupError::NoCgroup2)?;
    let mount = std::fs::canonicalize(&mount).unwrap_or(mount);
    let rel = relative(&mount, arg);
    let dir = mount.join(rel.strip_prefix("/").unwrap_or(&rel));
    let resolved = std::fs::canonicalize(&dir).map_err(|_| CgroupError::NotFound(dir.clone()))?;
    let inside = resolved
        .strip_prefix(&mount)
        .map_err(|_| CgroupError::Outside {
            arg: arg.to_path_buf(),
            resolved: resolved.clone(),
            mount: mount.clone(),
        })?
        .to_path_buf();
    if !resolved.join("cgroup.procs").is_file() {
        return Err(CgroupError::NotFound(resolved));
    }
    Ok(Path::new("/").join(inside))
}

/// Is cgroup path `have` (from /proc/PID/cgroup) `want` or below it?
pub fn contains(want: &Path, have: &str) -> bool {
    let want = want.to_string_lossy();
    let want = want.trim_end_matches('/');
    let have = have.trim_end_matches('/');
    want.is_empty() || have == want || have.starts_with(&format!("{want}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
";

    #[test]
    fn finds_the_unified_mount() {
        assert_eq!(
            cgroup2_mount_in(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount_in(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in("37 35 0:32 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn relative_paths() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            relative(m, Path::new("/sys/fs/cgroup/unified/app.slice")),
            PathBuf::from("/app.slice")
        );
        assert_eq!(
            relative(m, Path::new("app.slice/web")),
            PathBuf::from("/app.slice/web")
        );
    }

    #[test]
    fn containment() {
        let want = Path::new("/app.slice");
        assert!(contains(want, "/app.slice"));
        assert!(contains(want, "/app.slice/web.service"));
        assert!(!contains(want, "/app.slice2"));
        assert!(!contains(want, "/"));
        assert!(contains(Path::new("/"), "/anything"));
    }
}
