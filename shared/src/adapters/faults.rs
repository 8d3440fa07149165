//! Crash injection for tests of the worker's recovery: a [`FaultPlan`] names the points of a run
//! (after the part write, after the shard record, in the middle of finalize) where the next run
//! fails as if its process had died there, leaving exactly the state written so far. The
//! redelivered message must then finish the job with the same result.
//!
//! Arming a plan needs the `fault-injection` feature, which only the tests enable; without it a
//! plan is an empty value and every check compiles to nothing.

use crate::ports::StoreError;

/// Where a run can be made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// The shard's part is in the result store; the shard is not recorded on the job.
    AfterPartWrite,
    /// The shard is recorded; a finalize it would start has not begun.
    AfterShardRecord,
    /// Finalize has written some result objects but not completed the job.
    MidFinalize,
}

/// The crashes armed for the coming runs. Clones share the plan.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    #[cfg(feature = "fault-injection")]
    armed: std::sync::Arc<std::sync::Mutex<Vec<CrashPoint>>>,
}

impl FaultPlan {
    /// Fails with a transient error if a crash is armed at `point` (consuming it).
    #[inline]
    pub fn check(&self, point: CrashPoint) -> Result<(), StoreError> {
        #[cfg(feature = "fault-injection")]
        {
            let mut armed = self.armed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(i) = armed.iter().position(|p| *p == point) {
                armed.remove(i);
                return Err(StoreError::unavailable(format!("injected crash {point:?}"), "the process died"));
            }
        }
        let _ = point;
        Ok(())
    }

    /// Arms one crash at `point`: the next run that reaches it fails there.
    #[cfg(feature = "fault-injection")]
    pub fn crash_once(&self, point: CrashPoint) {
        self.armed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(point);
    }

    /// Whether every armed crash has happened.
    #[cfg(feature = "fault-injection")]
    pub fn all_fired(&self) -> bool {
        self.armed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }
}
