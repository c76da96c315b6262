//! Monotonic clock (the one bpf_ktime_get_ns reads) and its conversion to wall
//! time, computed once.

use std::time::{Duration, SystemTime};

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Maps monotonic timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    wall: SystemTime,
    mono_ns: u64,
}

impl WallClock {
    pub fn now() -> Self {
        WallClock {
            wall: SystemTime::now(),
            mono_ns: monotonic_ns(),
        }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        if mono_ns >= self.mono_ns {
            self.wall + Duration::from_nanos(mono_ns - self.mono_ns)
        } else {
            self.wall - Duration::from_nanos(self.mono_ns - mono_ns)
        }
    }

    /// `HH:MM:SS.mmm` (UTC) of a monotonic timestamp.
    pub fn hms(&self, mono_ns: u64) -> String {
        let t = self.wall(mono_ns);
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let s = d.as_secs() % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            d.subsec_millis()
        )
    }
}

/// RFC 3339 with seconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
    }

    #[test]
    fn wall_mapping() {
        let c = WallClock {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(3600 + 61),
            mono_ns: 1_000_000_000,
        };
        assert_eq!(c.hms(1_500_000_000), "01:01:01.500");
        assert_eq!(c.hms(0), "01:01:00.000");
        assert_eq!(rfc3339(c.wall(1_000_000_000)), "1970-01-01T01:01:01Z");
    }
}
