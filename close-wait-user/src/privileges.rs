//! What each part of close-wait needs from the kernel's permission rules,
//! and what this process lacks.
//!
//! * Loading and attaching the tracer (Linux >= 5.8): `bpf_capable()`
//!   (CAP_BPF, or CAP_SYS_ADMIN) for the programs and maps, and
//!   `perfmon_capable()` (CAP_PERFMON, or CAP_SYS_ADMIN) for tracing
//!   programs and tracepoint perf events. CAP_SYS_ADMIN alone suffices.
//! * Reading tracefs (formats and tracepoint ids): tracefs is mode 0700 for
//!   root on recent kernels, so a non-root user needs CAP_DAC_READ_SEARCH.
//! * Holders of a socket, from another user's `/proc/PID/fd`: listing the
//!   directory needs CAP_DAC_READ_SEARCH (or CAP_DAC_OVERRIDE), reading its
//!   links needs ptrace access (CAP_SYS_PTRACE).

use std::path::Path;

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// A set of capabilities (a `CapEff:` mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps(pub u64);

impl Caps {
    /// This process's effective capabilities.
    pub fn current() -> Caps {
        Caps::from_status(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
    }

    /// From the text of `/proc/PID/status` (`CapEff:`); none when absent.
    pub fn from_status(status: &str) -> Caps {
        Caps(
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0),
        )
    }

    pub fn of(caps: &[u32]) -> Caps {
        Caps(caps.iter().fold(0, |m, c| m | 1u64 << c))
    }

    pub fn has(self, cap: u32) -> bool {
        self.0 & (1u64 << cap) != 0
    }

    /// The capabilities missing to load and attach the tracer, empty when
    /// none is.
    pub fn tracer_missing(self) -> Vec<&'static str> {
        let admin = self.has(CAP_SYS_ADMIN);
        let mut missing = Vec::new();
        if !(admin || self.has(CAP_BPF)) {
            missing.push("CAP_BPF");
        }
        if !(admin || self.has(CAP_PERFMON)) {
            missing.push("CAP_PERFMON");
        }
        missing
    }

    /// Whether every process's `/proc/PID/fd` can be read.
    pub fn sees_all_holders(self) -> bool {
        (self.has(CAP_DAC_READ_SEARCH) || self.has(CAP_DAC_OVERRIDE)) && self.has(CAP_SYS_PTRACE)
    }
}

/// Processes whose descriptors cannot be read under `proc_root` (their
/// sockets' holders are invisible to this process).
pub fn unreadable_fd_dirs(proc_root: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let fd = e.path().join("fd");
        let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
        match std::fs::read_dir(&fd) {
            Err(e) if denied(&e) => out.push(pid),
            Err(_) => {}
            Ok(mut entries) => {
                // Listing may be allowed where reading the links is not.
                if let Some(Ok(first)) = entries.next() {
                    if std::fs::read_link(first.path()).is_err_and(|e| denied(&e)) {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// The note a report carries when some holders could not be looked for;
/// `None` when every process could be read.
pub fn holders_note(caps: Caps, proc_root: &Path) -> Option<String> {
    if caps.sees_all_holders() {
        return None;
    }
    let blind = unreadable_fd_dirs(proc_root);
    if blind.is_empty() {
        return None;
    }
    let mut need = Vec::new();
    if !caps.has(CAP_SYS_PTRACE) {
        need.push("CAP_SYS_PTRACE");
    }
    if !(caps.has(CAP_DAC_READ_SEARCH) || caps.has(CAP_DAC_OVERRIDE)) {
        need.push("CAP_DAC_READ_SEARCH");
    }
    Some(format!(
        "could not look into the file descriptors of {} processes (needs root or {}): a socket \
         shown as held by no process may be held by one of them",
        blind.len(),
        need.join(" + ")
    ))
}

/// The notes of a report with `close_wait_now` sockets in CLOSE_WAIT, by
/// this process: what of their holders it could not see.
pub fn report_notes(close_wait_now: u64) -> Vec<String> {
    if close_wait_now == 0 {
        return Vec::new();
    }
    holders_note(Caps::current(), "/proc".as_ref())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracer_needs_follow_the_kernel_rules() {
        let root = Caps::from_status("Name:\tx\nCapEff:\t000001ffffffffff\n");
        assert!(root.tracer_missing().is_empty());
        assert!(root.sees_all_holders());
        let none = Caps::from_status("CapEff:\t0000000000000000\n");
        assert_eq!(none.tracer_missing(), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(
            Caps::from_status("").tracer_missing(),
            vec!["CAP_BPF", "CAP_PERFMON"]
        );
        assert_eq!(Caps::of(&[CAP_BPF]).tracer_missing(), vec!["CAP_PERFMON"]);
        assert_eq!(Caps::of(&[CAP_PERFMON]).tracer_missing(), vec!["CAP_BPF"]);
        assert!(Caps::of(&[CAP_BPF, CAP_PERFMON])
            .tracer_missing()
            .is_empty());
        // CAP_SYS_ADMIN passes both bpf_capable() and perfmon_capable().
        assert!(Caps::of(&[CAP_SYS_ADMIN]).tracer_missing().is_empty());
        assert!(!Caps::of(&[CAP_BPF, CAP_PERFMON]).sees_all_holders());
        assert!(Caps::of(&[CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]).sees_all_holders());
    }

    #[test]
    fn nothing_to_say_when_everything_is_visible() {
        assert_eq!(holders_note(Caps(u64::MAX), Path::new("/proc")), None);
        // our own process is always readable
        let me = unreadable_fd_dirs(Path::new("/proc"));
        assert!(!me.contains(&std::process::id()));
    }
}
