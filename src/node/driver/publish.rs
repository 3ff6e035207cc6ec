//! The sequencer's events as wire messages: receipts, batch pushes to
//! subscribers (with each one's proofs and outcomes), the signed schedule,
//! and the wire code of a refused submission.

use std::collections::BTreeSet;

use std::sync::Arc;

use crate::envelope::{Commitment, RECEIPT_GROUP_MAX};
use crate::sequencer::{BatchOutcome, EnvelopeStatus, Event, SubmitError};
use crate::types::BatchId;
use crate::wire::{
    self, BatchCleared, BatchSealed, MarketInfo, MarketLine, OwnEnvelope, ReasonCode, Schedule,
    ServerMessage,
};

use super::super::handle::{DurableGroup, Outbound};
use super::Driver;

impl Driver {
    /// The signed schedule as of `now`.
    pub(super) fn schedule(
        &self,
        request_id: u64,
        now: u64,
    ) -> Result<Schedule, crate::sequencer::SequencerError> {
        let genesis = self.sequencer.genesis();
        let open = self.sequencer.open_batch_at(now);
        let ahead = self
            .sequencer
            .limits()
            .announce_ahead
            .min(wire::SCHEDULE_BATCH_KEYS_MAX as u64 - 1);
        let mut batch_keys = Vec::new();
        for e in open.through(open + ahead) {
            // Under a keyper committee only certified keys exist: the
            // schedule lists batches up to the first without one.
            let Ok(key) = self.sequencer.batch_public_key(e) else {
                break;
            };
            batch_keys.push((e, key.to_bytes()));
        }
        let markets = genesis
            .markets
            .iter()
            .map(|m| MarketInfo {
                id: m.id.0,
                base_asset: m.base.0,
                quote_asset: m.quote.0,
                tick_size: m.tick_size,
                lot_size: m.lot_size,
                band_min: m.band_min,
                band_max: m.band_max,
                reference_price: self
                    .sequencer
                    .references()
                    .get(&m.id)
                    .copied()
                    .unwrap_or(m.initial_price),
                fee_bps: m.fee_bps,
            })
            .collect();
        let mut schedule = Schedule {
            request_id,
            genesis_ms: genesis.schedule.genesis_ms,
            batch_length_ms: genesis.schedule.batch_length_ms,
            open_batch: open,
            sequencer_key: genesis.sequencer.to_bytes(),
            batch_keys,
            markets,
            replicas: self.schedule_replicas(),
            signature: [0; 64],
        };
        schedule.signature = self
            .key
            .sign_message(&wire::schedule_signing_message(&schedule));
        Ok(schedule)
    }

    /// Sends the sequencer's events: the receipts among them in groups,
    /// each group of envelopes made durable together signed once
    /// (`spec/envelope.md` §12), in their place among the other events.
    pub(super) fn deliver_all(&mut self, events: Vec<Event>) {
        let mut durable = Vec::new();
        for event in events {
            match event {
                Event::Receipt {
                    token,
                    e,
                    commitment,
                } => durable.push((token, e, commitment)),
                other => {
                    self.deliver_receipts(std::mem::take(&mut durable));
                    self.deliver(other);
                }
            }
        }
        self.deliver_receipts(durable);
    }

    /// Sends the receipts of envelopes made durable together, in groups of
    /// at most [`RECEIPT_GROUP_MAX`].
    fn deliver_receipts(
        &mut self,
        durable: Vec<(crate::sequencer::SubmitToken, BatchId, Commitment)>,
    ) {
        // Only the receipts still awaited (a session may have gone).
        let awaited: Vec<_> = durable
            .into_iter()
            .filter_map(|(token, e, commitment)| {
                let p = self.pending.remove(&token.0)?;
                Some((p, e, commitment))
            })
            .collect();
        for chunk in awaited.chunks(RECEIPT_GROUP_MAX) {
            let group = Arc::new(DurableGroup::new(
                chunk.iter().map(|(_, e, c)| (*e, *c)).collect(),
            ));
            self.metrics.receipt_group_size.observe(chunk.len() as f64);
            for (index, (p, _, _)) in (0u32..).zip(chunk) {
                self.metrics.envelopes_accepted.inc();
                self.metrics
                    .receipt_seconds
                    .observe_duration(p.received.elapsed());
                self.send_outbound(
                    p.session,
                    Outbound::Receipt {
                        request_id: p.request_id,
                        group: Arc::clone(&group),
                        index,
                    },
                );
                self.waiting(p.session, false);
                self.drop_if_done(p.session);
            }
        }
    }

    pub(super) fn deliver(&mut self, event: Event) {
        match event {
            Event::Receipt { .. } => self.deliver_all(vec![event]),
            Event::BatchVoided { e, reason } => {
                self.metrics.batches_voided.inc();
                tracing::error!(
                    batch = e.get(),
                    %reason,
                    "batch could not be processed and is voided: nothing in it trades (a bug; please report it)"
                );
            }
            Event::KeyUnavailable { e, reason } => {
                self.metrics.keys_unavailable.inc();
                tracing::warn!(
                    batch = e.get(),
                    %reason,
                    "the key of a sealed batch cannot be asked for yet; it waits, and the batches after it"
                );
            }
            Event::KeyRequested { seal } => {
                self.metrics.key_requests.inc();
                self.key_asked
                    .entry(seal.e)
                    .or_insert_with(std::time::Instant::now);
                // Batches whose key never came (cleared otherwise) are not
                // remembered for long.
                while self.key_asked.len() > 1024 {
                    self.key_asked.pop_first();
                }
                if let Some(replica) = &self.replica {
                    // The certifier asks the keypers once a majority of
                    // the replicas attested the seal.
                    let _ = replica.link.certify.send(seal);
                } else if self.keypers.request_key(seal, None) == 0 {
                    tracing::warn!(
                        batch = seal.e.get(),
                        "a batch key is wanted but no keyper is connected"
                    );
                }
            }
            Event::CommitteeLog { below } => self.keypers.log_durable(below),
            Event::OperationDurable { token } => {
                if let Some(p) = self.pending.remove(&token.0) {
                    let reply = p.reply.unwrap_or(ServerMessage::Ack {
                        request_id: p.request_id,
                    });
                    self.send(p.session, reply);
                    self.waiting(p.session, false);
                    self.drop_if_done(p.session);
                }
            }
            Event::BatchOpened {
                e,
                public_key,
                close_ms,
            } => {
                let message = ServerMessage::BatchOpened {
                    e,
                    public_key: public_key.to_bytes(),
                    close_ms,
                };
                self.broadcast(|_| Some(message.clone()));
            }
            Event::BatchSealed { seal, tree } => {
                let e = seal.e;
                if let Some(explorer) = &self.explorer {
                    explorer.sealed(seal);
                }
                let bytes = seal.to_bytes();
                self.broadcast(|session| {
                    let proofs = session
                        .own
                        .get(&e)
                        .map(|own| {
                            own.iter()
                                .take(wire::SUBSCRIBER_ENVELOPES_MAX)
                                .filter_map(|c| {
                                    let index = tree.position(c)?;
                                    Some((c.0, tree.proof(index)?.to_bytes()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(ServerMessage::BatchSealed(BatchSealed {
                        seal: bytes,
                        proofs,
                    }))
                });
            }
            Event::BatchCleared { outcome, input } => {
                self.cleared_since_checkpoint += 1;
                let e = outcome.e;
                self.account_batch(&outcome);
                if let Some(explorer) = &self.explorer {
                    let close_ms = self
                        .sequencer
                        .genesis()
                        .schedule
                        .close_ms(e)
                        .unwrap_or(u64::MAX);
                    explorer.record(
                        &outcome,
                        input.as_deref().map(Vec::as_slice),
                        super::super::now_ms().saturating_sub(close_ms),
                        self.sequencer.committee(),
                    );
                }
                let markets: Vec<MarketLine> = outcome
                    .markets
                    .iter()
                    .map(|m| MarketLine {
                        market: m.market.0,
                        price: m.price,
                        volume: m.volume,
                        imbalance: m.imbalance,
                    })
                    .collect();
                let accepted = outcome
                    .envelopes
                    .iter()
                    .filter(|o| matches!(o.status, EnvelopeStatus::Accepted { .. }))
                    .count() as u32;
                self.broadcast(|session| {
                    let own = session
                        .own
                        .get(&e)
                        .map(|own| own_outcomes(&outcome, own))
                        .unwrap_or_default();
                    Some(ServerMessage::BatchCleared(BatchCleared {
                        e,
                        root: outcome.root.0,
                        batch_secret: outcome.batch_secret,
                        release: outcome.release.clone(),
                        envelopes: outcome.envelopes.len() as u32,
                        accepted,
                        markets: markets.clone(),
                        own,
                    }))
                });
                self.forget_batch(e);
            }
        }
    }

    fn account_batch(&mut self, outcome: &BatchOutcome) {
        self.metrics.batches_cleared.inc();
        self.metrics
            .orders_filled
            .inc_by(outcome.fills.len() as u64);
        let invalid = outcome
            .envelopes
            .iter()
            .filter(|o| matches!(o.status, EnvelopeStatus::Rejected { .. }))
            .count();
        self.metrics.envelopes_invalid.inc_by(invalid as u64);
        if let Some(sealed) = self.sealed_at.remove(&outcome.e) {
            self.metrics
                .seal_to_result_seconds
                .observe_duration(sealed.elapsed());
        }
        tracing::debug!(
            e = outcome.e.get(),
            envelopes = outcome.envelopes.len(),
            fills = outcome.fills.len(),
            "batch cleared"
        );
    }
}

/// The outcome lines of the commitments in `own`.
fn own_outcomes(outcome: &BatchOutcome, own: &BTreeSet<Commitment>) -> Vec<OwnEnvelope> {
    own.iter()
        .take(wire::SUBSCRIBER_ENVELOPES_MAX)
        .filter_map(|c| {
            let index = outcome
                .envelopes
                .binary_search_by(|o| o.commitment.cmp(c))
                .ok()?;
            let line = outcome.envelopes.get(index)?;
            let (status, detail) = match line.status {
                EnvelopeStatus::Accepted { .. } => (0, 0),
                EnvelopeStatus::Rejected { code, detail } => (code, detail),
            };
            let start = outcome
                .fills
                .partition_point(|f| (f.envelope as usize) < index);
            let fills = outcome.fills[start..]
                .iter()
                .take_while(|f| f.envelope as usize == index)
                .take(wire::FILLS_MAX)
                .map(|f| (f.index, f.filled))
                .collect();
            Some(OwnEnvelope {
                commitment: c.0,
                status,
                detail,
                fills,
            })
        })
        .collect()
}

/// The wire's code, `next_open` and retry-after for a refused submission.
pub(super) fn submit_code(error: &SubmitError, open: BatchId) -> (ReasonCode, BatchId, u32) {
    match error {
        SubmitError::Malformed(_) => (ReasonCode::Malformed, open, 0),
        SubmitError::BatchClosed { next_open, .. } => (ReasonCode::BatchClosed, *next_open, 0),
        SubmitError::NotAnnounced { next_open, .. } => (ReasonCode::NotAnnounced, *next_open, 0),
        SubmitError::BatchFull { next_open, .. } => (ReasonCode::BatchFull, *next_open, 0),
        SubmitError::Busy { retry_after_ms } => (
            ReasonCode::Busy,
            open,
            u32::try_from(*retry_after_ms).unwrap_or(u32::MAX),
        ),
    }
}
