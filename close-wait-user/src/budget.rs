//! A time bound and a cancel flag for slow work (the report-time
//! investigation) that must not hold up the end of a run.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

/// Until when work may go on, and a flag that stops it at once. Work that
/// finds its budget [`spent`](Budget::spent) stops and says how much it
/// left undone.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    deadline: Option<Instant>,
    /// An earlier bound for the slow, optional part of the work (stacks,
    /// threads), so that the rest of it still gets done by `deadline`.
    deep_deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Budget {
    /// No bound.
    pub fn unlimited() -> Budget {
        Budget::default()
    }

    /// Work may go on until `deadline`.
    pub fn until(deadline: Instant) -> Budget {
        Budget {
            deadline: Some(deadline),
            ..Budget::default()
        }
    }

    /// The optional, slow part of the work stops at `deep` (or the
    /// deadline, whichever comes first).
    pub fn deep_until(self, deep: Instant) -> Budget {
        Budget {
            deep_deadline: Some(deep),
            ..self
        }
    }

    /// Work stops once `flag` is set.
    pub fn cancellable(flag: Arc<AtomicBool>) -> Budget {
        Budget {
            cancel: Some(flag),
            ..Budget::default()
        }
    }

    pub fn spent(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// No time left for the optional, slow part.
    pub fn deep_spent(&self) -> bool {
        self.spent() || self.deep_deadline.is_some_and(|d| Instant::now() >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spent_by_deadline_or_flag() {
        assert!(!Budget::unlimited().spent());
        assert!(Budget::until(Instant::now()).spent());
        assert!(!Budget::until(Instant::now() + Duration::from_secs(60)).spent());
        let flag = Arc::new(AtomicBool::new(false));
        let b = Budget::cancellable(flag.clone());
        assert!(!b.spent());
        flag.store(true, Ordering::Relaxed);
        assert!(b.spent());
        assert!(b.deep_spent());
    }

    #[test]
    fn deep_part_stops_first() {
        let now = Instant::now();
        let b = Budget::until(now + Duration::from_secs(60)).deep_until(now);
        assert!(b.deep_spent());
        assert!(!b.spent());
        let b = Budget::until(now + Duration::from_secs(60));
        assert!(!b.deep_spent());
        let b = Budget::until(now).deep_until(now + Duration::from_secs(60));
        assert!(b.deep_spent() && b.spent());
    }
}
