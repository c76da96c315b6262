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
            cancel: None,
        }
    }

    /// Work stops once `flag` is set.
    pub fn cancellable(flag: Arc<AtomicBool>) -> Budget {
        Budget {
            deadline: None,
            cancel: Some(flag),
        }
    }

    pub fn spent(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
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
    }
}
