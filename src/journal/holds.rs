//! Holds on the journal's files ([`FileHolds`]): a reader in the same
//! process that lists the checkpoint files and segments and opens them
//! afterwards (a replica building a snapshot) holds them first, so that the
//! journal's writer and its pruning thread, which remove superseded
//! checkpoints and the segments no kept checkpoint needs, leave every file
//! in place until the reader is done.
//!
//! Removal is only deferred: the next checkpoint written after the last
//! hold is released removes what this one kept. A hold never stops the
//! writer from appending or writing checkpoints; files only accumulate
//! while it lasts.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The holds on one journal's files, shared (by cloning) between the
/// journal, its writer's pruning thread and the readers that take holds.
///
/// Each kind of removal runs with its own lock held ([`Journal::write_checkpoint`]'s
/// removal of checkpoint files, and the pruning of segments), and a hold is
/// taken under both: once [`FileHolds::hold`] returns, no removal is under
/// way and none starts until the hold is dropped. The writer and the pruning
/// thread never wait for each other, only for a hold being taken or
/// released (a counter changed under the lock).
///
/// [`Journal::write_checkpoint`]: super::Journal::write_checkpoint
#[derive(Clone, Debug, Default)]
pub struct FileHolds {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Holds that keep the checkpoint files; locked while they are removed.
    checkpoints: Mutex<usize>,
    /// Holds that keep the segments; locked while they are pruned.
    segments: Mutex<usize>,
}

fn lock(mutex: &Mutex<usize>) -> MutexGuard<'_, usize> {
    // A counter is never left half-changed: a panic elsewhere while the
    // lock was held does not make it wrong.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FileHolds {
    /// No holds yet.
    #[must_use]
    pub fn new() -> FileHolds {
        FileHolds::default()
    }

    /// Holds every checkpoint file and every segment now in the directory
    /// until the returned [`FileHold`] is dropped. Waits for a removal under
    /// way to finish first (one pass of checkpoint removal or of pruning),
    /// so that what is listed after this returns stays.
    #[must_use]
    pub fn hold(&self) -> FileHold {
        *lock(&self.inner.checkpoints) += 1;
        *lock(&self.inner.segments) += 1;
        FileHold {
            holds: self.clone(),
        }
    }

    /// Whether a hold is in place.
    #[must_use]
    pub fn held(&self) -> bool {
        *lock(&self.inner.checkpoints) > 0 || *lock(&self.inner.segments) > 0
    }

    /// Runs `remove`, which removes checkpoint files, with no hold able to
    /// start meanwhile; it is told whether one is in place (then it must
    /// remove none).
    pub(super) fn removing_checkpoints<T>(&self, remove: impl FnOnce(bool) -> T) -> T {
        let holds = lock(&self.inner.checkpoints);
        remove(*holds > 0)
    }

    /// Runs `prune`, which removes segments, with no hold able to start
    /// meanwhile; it is told whether one is in place (then it must remove
    /// none).
    pub(super) fn removing_segments<T>(&self, prune: impl FnOnce(bool) -> T) -> T {
        let holds = lock(&self.inner.segments);
        prune(*holds > 0)
    }
}

/// A hold on a journal's files ([`FileHolds::hold`]): while it lives, no
/// checkpoint file or segment is removed. Dropping it releases it.
#[derive(Debug)]
pub struct FileHold {
    holds: FileHolds,
}

impl Drop for FileHold {
    fn drop(&mut self) {
        let mut checkpoints = lock(&self.holds.inner.checkpoints);
        *checkpoints = checkpoints.saturating_sub(1);
        drop(checkpoints);
        let mut segments = lock(&self.holds.inner.segments);
        *segments = segments.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_is_refused_while_a_hold_lives_and_allowed_after() {
        let holds = FileHolds::new();
        assert!(!holds.held());
        assert!(!holds.removing_checkpoints(|held| held));
        let first = holds.hold();
        let second = holds.clone().hold();
        assert!(holds.removing_checkpoints(|held| held));
        assert!(holds.removing_segments(|held| held));
        drop(first);
        assert!(holds.held(), "the second hold is still in place");
        drop(second);
        assert!(!holds.held());
        assert!(!holds.removing_segments(|held| held));
    }
}
