//! The connected streams: their outbound queues, what each submitted (for
//! its subscription and the quotas), and broadcasting to subscribers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::envelope::Commitment;
use crate::types::BatchId;
use crate::wire::{ReasonCode, ServerMessage};

use super::super::handle::{ConnId, Outbound, SessionId};
use super::Driver;

/// Batches whose per-connection submission counts are remembered.
const QUOTA_BATCHES_KEPT: u64 = 64;

/// One stream of one connection.
pub(super) struct Session {
    pub(super) conn: ConnId,
    pub(super) ip: IpAddr,
    out: mpsc::Sender<Outbound>,
    pub(super) subscribed: bool,
    /// Commitments this session submitted, per batch, ascending (kept for
    /// subscribers until the batch is published; pushed in this order).
    pub(super) own: BTreeMap<BatchId, BTreeSet<Commitment>>,
    /// Requests of this session the driver has taken from its queue.
    handled: u64,
    /// Its requests waiting for the journal (receipts, acknowledgements).
    waiting: u64,
    /// Set when the client finished its side: how many requests it queued
    /// before. The session is dropped once all are handled and answered.
    ended_after: Option<u64>,
}

/// A request waiting for its journal write to be durable.
pub(super) struct Pending {
    pub(super) session: SessionId,
    pub(super) request_id: u64,
    pub(super) received: Instant,
    /// The answer once durable, when it is known before (a query's, a
    /// withdrawal's); `Ack` otherwise.
    pub(super) reply: Option<ServerMessage>,
}

/// A quota a submission is over.
pub(super) enum OverQuota {
    /// The connection's, with what it submitted.
    Connection(u32),
    /// The IP address's, with what its connections submitted.
    Address(u32),
}

impl Driver {
    pub(super) fn open_session(
        &mut self,
        session: SessionId,
        conn: ConnId,
        ip: IpAddr,
        out: mpsc::Sender<Outbound>,
    ) {
        self.sessions.insert(
            session,
            Session {
                conn,
                ip,
                out,
                subscribed: false,
                own: BTreeMap::new(),
                handled: 0,
                waiting: 0,
                ended_after: None,
            },
        );
    }

    /// The session's stream ended (`spec/wire.md` §2, half-close): with
    /// `after`, once its requests are all answered; else at once.
    pub(super) fn end_session(&mut self, session: SessionId, after: Option<u64>) {
        match (after, self.sessions.get_mut(&session)) {
            (Some(queued), Some(s)) => {
                s.ended_after = Some(queued);
                self.drop_if_done(session);
            }
            _ => {
                self.sessions.remove(&session);
            }
        }
    }

    /// Counts a request of `session` taken from the queue.
    pub(super) fn handled(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.handled += 1;
        }
    }

    /// A request of `session` now waits for the journal (`+1`) or was
    /// answered after it (`-1`).
    pub(super) fn waiting(&mut self, session: SessionId, more: bool) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.waiting = if more {
                s.waiting + 1
            } else {
                s.waiting.saturating_sub(1)
            };
        }
    }

    /// Drops a session whose client finished its side once every request it
    /// sent before is answered; its stream's writer then finishes the stream.
    pub(super) fn drop_if_done(&mut self, session: SessionId) {
        if self.sessions.get(&session).is_some_and(|s| {
            s.ended_after
                .is_some_and(|queued| s.handled >= queued && s.waiting == 0)
        }) {
            self.sessions.remove(&session);
        }
    }

    pub(super) fn send(&mut self, session: SessionId, message: ServerMessage) {
        self.send_outbound(session, Outbound::Message(message));
    }

    pub(super) fn send_outbound(&mut self, session: SessionId, outbound: Outbound) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        if s.out.try_send(outbound).is_err() {
            // The client does not read fast enough (or is gone): drop the
            // session; its connection task closes the stream.
            tracing::warn!(session, "outbound queue full; closing the session");
            self.sessions.remove(&session);
        }
    }

    /// Answers a request with `Rejected`, counted by reason.
    pub(super) fn refuse(
        &mut self,
        session: SessionId,
        request_id: u64,
        (code, next_open, retry_after_ms): (ReasonCode, BatchId, u32),
        message: String,
    ) {
        self.metrics.reject(code.to_byte());
        self.send(
            session,
            ServerMessage::Rejected {
                request_id,
                code,
                next_open,
                retry_after_ms,
                message,
            },
        );
    }

    /// Whether a submission to batch `e` from `conn` at `ip` is over its
    /// connection's or its address's quota.
    pub(super) fn over_quota(&self, e: BatchId, conn: ConnId, ip: IpAddr) -> Option<OverQuota> {
        let used = self.submitted.get(&(e, conn)).copied().unwrap_or(0);
        if used >= self.quota {
            return Some(OverQuota::Connection(used));
        }
        let from_ip = self.submitted_by_ip.get(&(e, ip)).copied().unwrap_or(0);
        (from_ip >= self.ip_quota).then_some(OverQuota::Address(from_ip))
    }

    /// Counts an accepted submission against its quotas (if `new`: not one
    /// the batch held already) and, for a subscriber, remembers its
    /// commitment.
    pub(super) fn count_submission(
        &mut self,
        session: SessionId,
        e: BatchId,
        commitment: Commitment,
        new: bool,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if new {
            *self.submitted.entry((e, s.conn)).or_insert(0) += 1;
            *self.submitted_by_ip.entry((e, s.ip)).or_insert(0) += 1;
        }
        if s.subscribed {
            s.own.entry(e).or_default().insert(commitment);
        }
    }

    /// Forgets what was submitted to batches up to `e` once it is published.
    pub(super) fn forget_batch(&mut self, e: BatchId) {
        for session in self.sessions.values_mut() {
            session.own.remove(&e);
        }
        let kept_from = e.saturating_sub(QUOTA_BATCHES_KEPT);
        self.submitted = self.submitted.split_off(&(kept_from, 0));
        self.submitted_by_ip.retain(|&(b, _), _| b >= kept_from);
    }

    /// Sends each subscribed session what `make` returns for it.
    pub(super) fn broadcast(&mut self, mut make: impl FnMut(&Session) -> Option<ServerMessage>) {
        let mut slow = Vec::new();
        for (&id, session) in &self.sessions {
            if !session.subscribed {
                continue;
            }
            if let Some(message) = make(session)
                && session.out.try_send(Outbound::Message(message)).is_err()
            {
                slow.push(id);
            }
        }
        for id in slow {
            tracing::warn!(session = id, "subscriber too slow; closing the session");
            self.sessions.remove(&id);
        }
    }
}
