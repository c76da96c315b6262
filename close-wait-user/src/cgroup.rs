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

/// The container a process runs in, read from its cgroup v2 path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    /// Full container id (hex), as the runtime names it.
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`, or `unknown` (an id
    /// under a Kubernetes pod with the cgroupfs driver, runtime unnamed).
    pub runtime: std::borrow::Cow<'static, str>,
    /// The Kubernetes pod uid (with dashes), when under a kubepods slice.
    pub pod_uid: Option<String>,
}

impl Container {
    /// The 12-character id `docker ps` and `crictl ps` show.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

fn is_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container of cgroup path `path` (as `/proc/PID/cgroup` shows it):
/// - docker: `.../docker-<id>.scope` (systemd driver), `/docker/<id>`;
/// - containerd: `.../cri-containerd-<id>.scope`;
/// - CRI-O: `.../crio-<id>.scope` (not its `crio-conmon-` monitor);
/// - podman: `.../libpod-<id>.scope`;
/// - Kubernetes: a `kubepods...pod<uid>.slice` (systemd, uid with `_`) or
///   `/kubepods/<qos>/pod<uid>/<id>` (cgroupfs) ancestor gives the pod uid.
///
/// `None` when no container id is found.
pub fn container_of(path: &str) -> Option<Container> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let pod_uid = segs.iter().find_map(|s| {
        let s = s.strip_suffix(".slice").unwrap_or(s);
        if !path.contains("kubepods") {
            return None;
        }
        let uid = s
            .rsplit_once("-pod")
            .map(|(_, u)| u)
            .or_else(|| s.strip_prefix("pod"))?;
        let uid = uid.replace('_', "-");
        (uid.len() >= 32 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
    });
    for (i, seg) in segs.iter().enumerate().rev() {
        let s = seg.strip_suffix(".scope").unwrap_or(seg);
        let prefixed = [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ]
        .iter()
        .find_map(|(p, rt)| Some((s.strip_prefix(p)?, *rt)));
        if let Some((id, runtime)) = prefixed {
            if is_id(id) {
                return Some(Container {
                    id: id.to_owned(),
                    runtime: runtime.into(),
                    pod_uid,
                });
            }
        }
        if is_id(s) && i > 0 {
            let runtime = match segs[i - 1] {
                "docker" => "docker",
                _ if pod_uid.is_some() => "unknown",
                _ => continue,
            };
            return Some(Container {
                id: s.to_owned(),
                runtime: runtime.into(),
                pod_uid,
            });
        }
    }
    None
}

/// Processes a [`ContainerCache`] remembers; at the next one it starts
/// again empty (worker pids recycled for days never grow it).
pub const MAX_CACHED_PROCESSES: usize = 4096;
/// How long a cached answer is trusted (a pid can be reused).
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The short container id of processes, read from `/proc/PID/cgroup` once
/// per process and [`CACHE_TTL`], for labels on per-episode metrics.
#[derive(Debug)]
pub struct ContainerCache {
    proc_root: PathBuf,
    map: std::collections::HashMap<u32, (std::time::Instant, String)>,
}

impl Default for ContainerCache {
    fn default() -> Self {
        Self::new(Path::new("/proc"))
    }
}

impl ContainerCache {
    /// A cache over the proc tree at `proc_root`.
    pub fn new(proc_root: &Path) -> Self {
        Self {
            proc_root: proc_root.to_owned(),
            map: Default::default(),
        }
    }

    /// The 12-character id of `pid`'s container; empty outside containers
    /// or when the process is gone.
    pub fn short_id(&mut self, pid: u32) -> String {
        let now = std::time::Instant::now();
        if let Some((at, id)) = self.map.get(&pid) {
            if now.duration_since(*at) < CACHE_TTL {
                return id.clone();
            }
        }
        let id =
            crate::logged::read_to_string(&self.proc_root.join(pid.to_string()).join("cgroup"))
                .and_then(|t| crate::sockets::parse_cgroup_v2(&t))
                .and_then(|p| container_of(&p))
                .map(|c| c.short_id().to_owned())
                .unwrap_or_default();
        if self.map.len() >= MAX_CACHED_PROCESSES && !self.map.contains_key(&pid) {
            self.map.clear();
        }
        self.map.insert(pid, (now, id.clone()));
        id
    }

    /// Processes cached now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_cache_reads_proc_and_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("cw-cgcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |pid: u32, path: &str| {
            std::fs::create_dir_all(dir.join(pid.to_string())).unwrap();
            std::fs::write(
                dir.join(pid.to_string()).join("cgroup"),
                format!("0::{path}\n"),
            )
            .unwrap();
        };
        write(7, &format!("/system.slice/docker-{ID}.scope"));
        write(8, "/user.slice/user-0.slice/session-1.scope");
        let mut c = ContainerCache::new(&dir);
        assert_eq!(c.short_id(7), "4f9c2b7d1e3a");
        assert_eq!(c.short_id(8), "");
        assert_eq!(c.short_id(9), "", "a process that is gone");
        // cached: a changed file is not read again within the TTL
        write(8, &format!("/docker/{ID}"));
        assert_eq!(c.short_id(8), "");
        for pid in 100..(100 + MAX_CACHED_PROCESSES as u32 + 5) {
            c.short_id(pid);
            assert!(c.len() <= MAX_CACHED_PROCESSES);
        }
        // dropped with the rest: read again
        assert_eq!(c.short_id(8), "4f9c2b7d1e3a");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const ID: &str = "4f9c2b7d1e3a5c6b8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";

    #[test]
    fn container_ids_of_the_usual_runtimes() {
        let c = container_of(&format!("/system.slice/docker-{ID}.scope")).unwrap();
        assert_eq!(
            (c.id.as_str(), c.runtime.as_ref(), &c.pod_uid),
            (ID, "docker", &None)
        );
        assert_eq!(c.short_id(), "4f9c2b7d1e3a");
        let c = container_of(&format!("/docker/{ID}")).unwrap();
        assert_eq!((c.id.as_str(), c.runtime.as_ref()), (ID, "docker"));
        let k8s = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_4a1b_9c2d_3e4f5a6b7c8d.slice/cri-containerd-{ID}.scope"
        );
        let c = container_of(&k8s).unwrap();
        assert_eq!(c.runtime, "containerd");
        assert_eq!(c.id, ID);
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("1b2c3d4e-5f60-4a1b-9c2d-3e4f5a6b7c8d")
        );
        let crio = format!("/kubepods.slice/kubepods-pod1b2c3d4e_5f60_4a1b_9c2d_3e4f5a6b7c8d.slice/crio-{ID}.scope");
        let c = container_of(&crio).unwrap();
        assert_eq!((c.runtime.as_ref(), c.pod_uid.is_some()), ("cri-o", true));
        let cgroupfs = format!("/kubepods/besteffort/pod1b2c3d4e-5f60-4a1b-9c2d-3e4f5a6b7c8d/{ID}");
        let c = container_of(&cgroupfs).unwrap();
        assert_eq!(c.runtime, "unknown");
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("1b2c3d4e-5f60-4a1b-9c2d-3e4f5a6b7c8d")
        );
        let podman = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        );
        assert_eq!(container_of(&podman).unwrap().runtime, "podman");
    }

    #[test]
    fn no_container() {
        for p in [
            "/",
            "/system.slice/ssh.service",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/docker.service",
            "/kubepods.slice/kubepods-burstable.slice",
            "/system.slice/docker-notanid.scope",
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            "/app/0123456789abcdef",
        ] {
            assert_eq!(container_of(p), None, "{p}");
        }
    }

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
