//! Every number on the command line checked before anything is attached:
//! bounded durations (the range is in the error), pids within the kernel's
//! `pid_max`, byte sizes, file modes. These are clap value parsers: a bad
//! value is a usage error (one line, exit status 2).

use std::time::Duration;

use crate::duration;

/// The longest `--duration` and `--threshold`: a year.
pub const MAX_DURATION: Duration = Duration::from_secs(8760 * 3600);
/// The shortest `--interval`: each checkpoint scans the socket table and
/// /proc, so a shorter one only burns CPU.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest `--interval`.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The kernel's upper limit for `pid_max` (PID_MAX_LIMIT on 64-bit).
const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;

fn fmt(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        "0s".into()
    } else if us.is_multiple_of(3_600_000_000) {
        format!("{}h", us / 3_600_000_000)
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// A duration within `min..=max`.
pub fn duration_in(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = duration::parse(s)?;
    if d < min || d > max {
        return Err(format!(
            "duration '{s}' out of range: must be between {} and {}",
            fmt(min),
            fmt(max)
        ));
    }
    Ok(d)
}

/// `--duration`: more than zero, at most [`MAX_DURATION`].
pub fn run_duration(s: &str) -> Result<Duration, String> {
    duration_in(s, Duration::from_micros(1), MAX_DURATION)
}

/// `--threshold`: zero to [`MAX_DURATION`].
pub fn threshold(s: &str) -> Result<Duration, String> {
    duration_in(s, Duration::ZERO, MAX_DURATION)
}

/// `--interval`: [`MIN_INTERVAL`] to [`MAX_INTERVAL`].
pub fn interval(s: &str) -> Result<Duration, String> {
    duration_in(s, MIN_INTERVAL, MAX_INTERVAL)
}

/// The kernel's `pid_max` (the largest pid is one less).
pub fn pid_max() -> u32 {
    crate::logged::read_to_string(std::path::Path::new("/proc/sys/kernel/pid_max"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(PID_MAX_LIMIT)
}

/// A pid in `1..pid_max`.
pub fn pid_below(s: &str, pid_max: u32) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if p > 0 && p < pid_max => Ok(p),
        _ => Err(format!(
            "invalid pid '{s}': must be between 1 and {} (pid_max is {pid_max})",
            pid_max - 1
        )),
    }
}

/// `-p`: a pid below this kernel's `pid_max`.
pub fn pid(s: &str) -> Result<u32, String> {
    pid_below(s, pid_max())
}

/// A byte count: an integer with an optional binary suffix K, M or G
/// (`4096`, `64K`, `1M`, `2G`).
pub fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size '{s}': expected bytes, or a number with K, M or G"))
}

/// The page size of this machine.
pub fn page_size() -> u64 {
    // SAFETY: no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// `--ringbuf-bytes`: a power of two, at least a page, at most 1G (what
/// the kernel accepts for a BPF ring buffer).
pub fn ringbuf_bytes(s: &str) -> Result<u32, String> {
    let n = bytes(s)?;
    let page = page_size();
    if n < page || n > 1 << 30 || !n.is_power_of_two() {
        return Err(format!(
            "invalid ring buffer size '{s}': must be a power of two between {}K and 1G",
            page / 1024
        ));
    }
    Ok(n as u32)
}

/// `report --max-bytes`: at least one byte.
pub fn max_bytes(s: &str) -> Result<u64, String> {
    match bytes(s)? {
        0 => Err(format!("invalid size '{s}': must be more than 0")),
        n => Ok(n),
    }
}

/// `--mode`: octal permission bits.
pub fn mode(s: &str) -> Result<u32, String> {
    crate::output::file::parse_mode(s)
}

/// Checks that every pid of `-p` names a live process (a pid is never
/// predictable: one that does not exist now is a mistake).
pub fn pids_exist(pids: &[u32]) -> Result<(), String> {
    for p in pids {
        if !std::path::Path::new(&format!("/proc/{p}")).exists() {
            return Err(format!("-p {p}: no such process"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded_and_the_range_is_said() {
        let e = run_duration("18446744073709551615s").unwrap_err();
        assert!(e.contains("between 1us and 8760h"), "{e}");
        assert!(run_duration("0s").is_err());
        assert_eq!(run_duration("8760h").unwrap(), MAX_DURATION);
        let e = interval("1us").unwrap_err();
        assert!(e.contains("between 100ms and 24h"), "{e}");
        assert!(interval("25h").is_err());
        assert_eq!(interval("100ms").unwrap(), MIN_INTERVAL);
        assert_eq!(threshold("0s").unwrap(), Duration::ZERO);
        assert!(threshold("9000h").is_err());
        assert!(run_duration("5").unwrap_err().contains("add a unit"));
    }

    #[test]
    fn pids_below_pid_max() {
        assert_eq!(pid_below("1", 32768).unwrap(), 1);
        assert_eq!(pid_below("32767", 32768).unwrap(), 32767);
        let e = pid_below("4000000", 32768).unwrap_err();
        assert!(e.contains("between 1 and 32767 (pid_max is 32768)"), "{e}");
        assert!(pid_below("0", 32768).is_err());
        assert!(pid_below("-1", 32768).is_err());
        assert!(pid_max() > 300);
        assert!(pids_exist(&[std::process::id()]).is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes("4096").unwrap(), 4096);
        assert_eq!(bytes("64K").unwrap(), 65536);
        assert_eq!(bytes("1M").unwrap(), 1 << 20);
        assert_eq!(bytes("2G").unwrap(), 2 << 30);
        for bad in ["", "K", "1.5M", "-1", "99999999999G"] {
            assert!(bytes(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(ringbuf_bytes("1M").unwrap(), 1 << 20);
        assert!(ringbuf_bytes("3000").is_err());
        assert!(ringbuf_bytes("2G").is_err());
        assert!(ringbuf_bytes("1000000").is_err());
        assert!(max_bytes("0").is_err());
    }
}
