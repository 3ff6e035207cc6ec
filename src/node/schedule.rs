//! The signed schedule, made once and served many times.
//!
//! A schedule holds the open batch, the next batches' public keys and each
//! market's reference price, signed by the sequencer (~250 µs of the core
//! thread's time to derive the keys and sign). It only changes when a new
//! batch opens or a batch clears, so the core rebuilds it then
//! ([`ScheduleCache::is_current`]), and each connection's task answers
//! `GetSchedule` from the cache with the request's id filled in (the id is
//! not signed): a client asking a thousand times a second costs the core
//! nothing. Requests other than submissions are further bounded per stream
//! by a [`RequestBudget`].

use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::keyper::{Committee, WindowCertificate};
use crate::types::BatchId;
use crate::wire::{Schedule, ServerMessage};

/// The last schedule the core signed, shared with the connections.
#[derive(Debug, Default)]
pub struct ScheduleCache {
    current: RwLock<Option<Cached>>,
    /// The committee and its certificates over the cached schedule's keys.
    certificates: RwLock<Option<Arc<KeyCertificates>>>,
}

/// The committee holding the batch keys and its certificates.
#[derive(Debug, Default)]
pub struct KeyCertificates {
    /// `None`: trusted-operator mode.
    pub committee: Option<Committee>,
    /// The certificates of the windows of the schedule's batches.
    pub certificates: Vec<WindowCertificate>,
}

#[derive(Debug)]
struct Cached {
    schedule: Arc<Schedule>,
    /// Batches cleared when it was made (reference prices change then).
    cleared: u64,
}

impl ScheduleCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Arc<ScheduleCache> {
        Arc::new(ScheduleCache::default())
    }

    /// The cached schedule answering `request_id`, if there is one.
    #[must_use]
    pub fn answer(&self, request_id: u64) -> Option<Schedule> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|c| Schedule {
            request_id,
            ..Schedule::clone(&c.schedule)
        })
    }

    /// Whether the cached schedule is the one for `open` after `cleared`
    /// cleared batches.
    #[must_use]
    pub fn is_current(&self, open: BatchId, cleared: u64) -> bool {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .is_some_and(|c| c.schedule.open_batch == open && c.cleared == cleared)
    }

    /// The batch open at `now_ms` by the cached schedule's clock (0 before
    /// the first schedule is made, or before genesis).
    #[must_use]
    pub fn open_batch_at(&self, now_ms: u64) -> BatchId {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .and_then(|c| c.schedule.clock().batch_at(now_ms))
            .unwrap_or(BatchId::ZERO)
    }

    /// The cached certificates answering `request_id`.
    #[must_use]
    pub fn answer_certificates(&self, request_id: u64) -> Option<ServerMessage> {
        let current = self
            .certificates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        Some(ServerMessage::KeyCertificates {
            request_id,
            committee: current.committee.clone(),
            certificates: current.certificates.clone(),
        })
    }

    /// Forgets the cached schedule and certificates (a replica that stops
    /// leading: its requests go to the driver, which redirects them).
    pub fn forget(&self) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = None;
        *self.certificates.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Replaces the cached certificates.
    pub fn store_certificates(&self, certificates: KeyCertificates) {
        *self.certificates.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(certificates));
    }

    /// Replaces the cached schedule.
    pub fn store(&self, schedule: Schedule, cleared: u64) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Some(Cached {
            schedule: Arc::new(schedule),
            cleared,
        });
    }
}

/// A token bucket bounding one stream's requests other than submissions
/// (schedule, account, subscribe, deposits): `per_second` on average, up to
/// `per_second` at once.
#[derive(Debug)]
pub struct RequestBudget {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl RequestBudget {
    /// A full bucket.
    #[must_use]
    pub fn new(per_second: u32, now: Instant) -> RequestBudget {
        RequestBudget {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            refilled: now,
        }
    }

    /// Whether the bucket is full at `now` (its owner has been idle long
    /// enough to be forgotten).
    #[must_use]
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.per_second
    }

    /// Takes one request's token at `now`; `false` if the stream is over
    /// its budget.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_budget_allows_its_rate_and_a_burst_of_it() {
        let start = Instant::now();
        let mut budget = RequestBudget::new(10, start);
        assert_eq!((0..15).filter(|_| budget.take(start)).count(), 10);
        let later = start + Duration::from_millis(500);
        assert_eq!((0..15).filter(|_| budget.take(later)).count(), 5);
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..15).filter(|_| budget.take(much_later)).count(), 10);
    }
}
