//! What one client stream may ask, decided without I/O: the per-stream
//! request rate, the per-batch submission quota, the signatures checked off
//! the core, and the schedule answered from its cache. The connection's
//! task ([`super::server`]) only moves bytes: it decodes a frame, asks
//! [`StreamAdmission::admit`] at the time it read it, and sends the reply
//! or forwards the request to the driver. Time is an argument, so the
//! rules are tested without a clock or a socket.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::envelope::{SequencerPublicKey, ShapedEnvelope, header_batch};
use crate::signed::{ChannelBinding, SignedError};
use crate::types::BatchId;
use crate::wire::{ClientMessage, ReasonCode, ServerMessage};

use super::handle::RequestBody;
use super::schedule::{RequestBudget, ScheduleCache};

/// Batches whose submission attempts one stream remembers.
pub const ATTEMPTS_BATCHES_KEPT: usize = 64;

/// The decision on one request.
#[derive(Debug)]
pub enum Admitted {
    /// Answered on the stream at once; the driver never sees it.
    Reply(ServerMessage),
    /// For the driver (a submission shape-checked, a signed query
    /// verified).
    Forward(RequestBody),
}

/// One stream's admission state.
#[derive(Debug)]
pub struct StreamAdmission {
    sequencer: SequencerPublicKey,
    channel: Option<ChannelBinding>,
    requests_per_second: u32,
    budget: RequestBudget,
    /// Submissions this stream made per batch (named in each envelope's
    /// header): past `attempts_max` they are refused here, before the
    /// shape check and the core's queue. The core keeps the exact count of
    /// the envelopes it takes.
    attempts: BTreeMap<BatchId, u32>,
    attempts_max: u32,
}

impl StreamAdmission {
    /// A stream of a connection whose channel binding is `channel`, to
    /// the sequencer `sequencer`: at most `requests_per_second` requests
    /// other than submissions a second, and `attempts_max` submissions to
    /// one batch, from `now` on.
    #[must_use]
    pub fn new(
        sequencer: SequencerPublicKey,
        channel: Option<ChannelBinding>,
        requests_per_second: u32,
        attempts_max: u32,
        now: Instant,
    ) -> StreamAdmission {
        StreamAdmission {
            sequencer,
            channel,
            requests_per_second,
            budget: RequestBudget::new(requests_per_second, now),
            attempts: BTreeMap::new(),
            attempts_max,
        }
    }

    /// Decides on `message`, received at `received` (`now_ms` on the
    /// batch clock), with the schedule cache `schedules`.
    pub fn admit(
        &mut self,
        message: ClientMessage,
        received: Instant,
        now_ms: u64,
        schedules: &ScheduleCache,
    ) -> Admitted {
        let request_id = message.request_id();
        if let ClientMessage::Submit {
            request_id,
            envelope,
        } = message
        {
            if let Some(e) = header_batch(&envelope) {
                let made = self.attempts.entry(e).or_insert(0);
                *made = made.saturating_add(1);
                if *made > self.attempts_max {
                    let made = *made;
                    return Admitted::Reply(ServerMessage::Rejected {
                        request_id,
                        code: ReasonCode::ConnectionQuota,
                        next_open: schedules.open_batch_at(now_ms),
                        retry_after_ms: 0,
                        message: format!("this stream made {made} submissions to batch {e}"),
                    });
                }
                if self.attempts.len() > ATTEMPTS_BATCHES_KEPT {
                    self.attempts.pop_first();
                }
            }
            // The shape check (a point decoding) runs on the caller's
            // task, not on the core thread.
            return Admitted::Forward(RequestBody::Submit {
                request_id,
                envelope: ShapedEnvelope::for_header_batch(envelope),
            });
        }
        // Everything but submissions is bounded per stream, and the
        // schedule is answered here, off the core.
        if !self.budget.take(received) {
            return Admitted::Reply(ServerMessage::Error {
                request_id,
                code: ReasonCode::Busy,
                message: format!(
                    "more than {} requests per second on this stream",
                    self.requests_per_second
                ),
            });
        }
        if matches!(message, ClientMessage::GetSchedule { .. })
            && let Some(schedule) = schedules.answer(request_id)
        {
            return Admitted::Reply(ServerMessage::Schedule(schedule));
        }
        // None cached (a follower, or before the first schedule): the
        // driver answers.
        if matches!(message, ClientMessage::GetKeyCertificates { .. })
            && let Some(reply) = schedules.answer_certificates(request_id)
        {
            return Admitted::Reply(reply);
        }
        // Signatures are checked here, off the core, so that forged
        // requests cost it nothing. A field out of its bounds is a bad
        // request (10), not a key problem (12).
        if let Err(error) = verify_signed(&message, &self.sequencer, self.channel) {
            let code = match error {
                SignedError::Length { .. } => ReasonCode::InvalidRequest,
                SignedError::BadKey | SignedError::BadSignature => ReasonCode::Unauthorized,
            };
            return Admitted::Reply(ServerMessage::Error {
                request_id,
                code,
                message: error.to_string(),
            });
        }
        Admitted::Forward(match message.signed_query() {
            Some(query) => RequestBody::Query { request_id, query },
            None => RequestBody::Message(message),
        })
    }
}

/// Checks the signature a request carries, if any: a query's for this
/// connection (`channel`), a deposit's, withdrawal's or payout's for this
/// deployment. Who may sign what is the driver's to check.
fn verify_signed(
    message: &ClientMessage,
    sequencer: &SequencerPublicKey,
    channel: Option<ChannelBinding>,
) -> Result<(), SignedError> {
    if let Some(query) = message.signed_query() {
        return match channel {
            Some(channel) => query.verify(sequencer, &channel),
            None => Err(SignedError::BadSignature),
        };
    }
    match message {
        ClientMessage::OperatorDeposit { deposit, .. } => deposit.verify(sequencer),
        ClientMessage::Withdraw { withdrawal, .. } => withdrawal.verify(sequencer),
        ClientMessage::AcknowledgePayout { payout, .. } => payout.verify(sequencer),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::SequencerKey;
    use crate::signed::{Query, SignedQuery};

    fn admission(now: Instant) -> StreamAdmission {
        StreamAdmission::new(
            SequencerKey::from_seed(&[7; 32]).public_key(),
            Some(ChannelBinding([3; 32])),
            2,
            2,
            now,
        )
    }

    fn submit(request_id: u64, e: BatchId) -> ClientMessage {
        let mut envelope = vec![1u8];
        envelope.extend_from_slice(&e.to_le_bytes());
        envelope.resize(200, 0);
        ClientMessage::Submit {
            request_id,
            envelope,
        }
    }

    #[test]
    fn a_stream_submits_to_one_batch_at_most_its_quota() {
        let now = Instant::now();
        let schedules = ScheduleCache::new();
        let mut a = admission(now);
        for id in 0..2 {
            assert!(matches!(
                a.admit(submit(id, BatchId(5)), now, 0, &schedules),
                Admitted::Forward(RequestBody::Submit { .. })
            ));
        }
        let Admitted::Reply(ServerMessage::Rejected { code, .. }) =
            a.admit(submit(2, BatchId(5)), now, 0, &schedules)
        else {
            panic!("the third submission to batch 5 is not refused");
        };
        assert_eq!(code, ReasonCode::ConnectionQuota);
        // Another batch, or bytes too short to name one (the driver
        // refuses their shape): forwarded. Submissions take no request
        // budget.
        assert!(matches!(
            a.admit(submit(3, BatchId(6)), now, 0, &schedules),
            Admitted::Forward(_)
        ));
        let short = ClientMessage::Submit {
            request_id: 4,
            envelope: vec![1, 2],
        };
        assert!(matches!(
            a.admit(short, now, 0, &schedules),
            Admitted::Forward(RequestBody::Submit {
                envelope: Err(_),
                ..
            })
        ));
        // The batches remembered stay bounded.
        for e in 100..100 + 2 * ATTEMPTS_BATCHES_KEPT as u64 {
            let _ = a.admit(submit(e, BatchId(e)), now, 0, &schedules);
        }
        assert!(a.attempts.len() <= ATTEMPTS_BATCHES_KEPT);
    }

    #[test]
    fn other_requests_are_bounded_per_second_and_refill_with_time() {
        let now = Instant::now();
        let schedules = ScheduleCache::new();
        let mut a = admission(now);
        let ask = |id| ClientMessage::GetSchedule { request_id: id };
        // Nothing cached: the driver answers.
        assert!(matches!(
            a.admit(ask(1), now, 0, &schedules),
            Admitted::Forward(RequestBody::Message(_))
        ));
        assert!(matches!(
            a.admit(ask(2), now, 0, &schedules),
            Admitted::Forward(_)
        ));
        let Admitted::Reply(ServerMessage::Error { code, .. }) =
            a.admit(ask(3), now, 0, &schedules)
        else {
            panic!("a third request in the same instant is not refused");
        };
        assert_eq!(code, ReasonCode::Busy);
        let later = now + Duration::from_millis(500);
        assert!(matches!(
            a.admit(ask(4), later, 0, &schedules),
            Admitted::Forward(_)
        ));
    }

    #[test]
    fn a_signed_query_is_checked_for_this_connection() {
        let now = Instant::now();
        let schedules = ScheduleCache::new();
        let sequencer = SequencerKey::from_seed(&[7; 32]).public_key();
        let account = crate::envelope::generate_account_key(&mut rand_core::OsRng);
        let query = Query::Account(crate::market::AccountId(account.verifying_key().to_bytes()));
        let ask = |signed: SignedQuery| ClientMessage::GetAccount {
            request_id: 9,
            account: account.verifying_key().to_bytes(),
            requester: signed.requester,
            signature: signed.signature,
        };
        // Signed for this connection: verified here, forwarded as a query.
        let signed = query.sign(&account, &sequencer, &ChannelBinding([3; 32]));
        assert!(matches!(
            admission(now).admit(ask(signed), now, 0, &schedules),
            Admitted::Forward(RequestBody::Query { .. })
        ));
        // Signed for another connection (a replayed query): refused, 12.
        let replayed = query.sign(&account, &sequencer, &ChannelBinding([4; 32]));
        let Admitted::Reply(ServerMessage::Error { code, .. }) =
            admission(now).admit(ask(replayed), now, 0, &schedules)
        else {
            panic!("a query signed for another connection is not refused");
        };
        assert_eq!(code, ReasonCode::Unauthorized);
    }
}
