//! Recovery: building the [`Sequencer`] from its journal (every record, or
//! a [`Checkpoint`] and the records after it), and taking checkpoints.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::envelope::{KeyCustodian, MerkleTree, SequencerKey, ShapedEnvelope};
use crate::ledger::Ledger;
use crate::types::{BatchId, Lsn};

use super::batch::apply_outcome;
use super::funds::Funds;
use super::walk::{Books, Step, WalkError, step};
use super::{
    Batch, Checkpoint, Genesis, Journaled, Limits, RecordKind, ResultAssembler, Sequencer,
    SequencerError, SequencerRecord,
};

impl Sequencer {
    /// Builds the sequencer from the journal's records (empty for a new
    /// deployment, which then journals its genesis first).
    ///
    /// Replays every record: envelopes rejoin their batches, deposits,
    /// withdrawals and results are applied once each, in journal order. A
    /// batch sealed but not cleared is released and handed out again as an
    /// [`OpenJob`](super::OpenJob) (same seal, same key, same result); a batch still open
    /// is sealed by the next [`handle_timeout`](Sequencer::handle_timeout)
    /// that finds it closed, with exactly the envelopes the journal kept.
    ///
    /// With a [`Checkpoint`], starts from its state instead: records below
    /// its `replay_from` are not needed, those below its `lsn` only give back
    /// the envelopes and seals of its unfinished batches, and the rest replay
    /// as above. The result is the state a full replay gives.
    ///
    /// # Errors
    ///
    /// [`SequencerError`] for an invalid configuration, a journal of another
    /// deployment, or a record that does not decode or fit (naming its LSN).
    pub fn recover(
        genesis: Genesis,
        limits: Limits,
        key: SequencerKey,
        custodian: Box<dyn KeyCustodian + Send>,
        journaled: Journaled<impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>>,
        now_ms: u64,
    ) -> Result<Sequencer, SequencerError> {
        let mut sequencer = Sequencer::rebuild(genesis, limits, key, custodian, journaled, now_ms)?;
        sequencer.resume(now_ms);
        Ok(sequencer)
    }

    /// Builds a replica's sequencer from its local journal, which holds
    /// only committed records (`spec/replication.md`): as
    /// [`recover`](Self::recover), but it neither journals a genesis record
    /// (the first leader's comes through the log) nor releases sealed
    /// batches (the leader opens them). Committed records then follow
    /// through [`apply_committed`](Self::apply_committed); a replica that
    /// becomes the leader calls [`resume`](Self::resume) first.
    ///
    /// # Errors
    ///
    /// As [`recover`](Self::recover).
    pub fn recover_replica(
        genesis: Genesis,
        limits: Limits,
        key: SequencerKey,
        custodian: Box<dyn KeyCustodian + Send>,
        journaled: Journaled<impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>>,
        now_ms: u64,
    ) -> Result<Sequencer, SequencerError> {
        Sequencer::rebuild(genesis, limits, key, custodian, journaled, now_ms)
    }

    /// Takes up the work a recovered journal leaves: journals the genesis
    /// record of an empty journal, and releases every batch sealed but not
    /// cleared again (same seal, same key, same result). A replica calls it
    /// when it becomes the leader, with every committed record applied. A
    /// batch whose key the custodian cannot take yet waits, sealed
    /// ([`Event::KeyUnavailable`](super::Event::KeyUnavailable)), and is asked for again at the timeouts.
    pub fn resume(&mut self, now_ms: u64) {
        self.resumed_ms = self.observe(now_ms);
        if self.next_lsn == Lsn::FIRST {
            let record = SequencerRecord::Genesis(self.genesis.clone());
            self.push_journal(&record);
        }
        let sealed: Vec<BatchId> = self
            .batches
            .iter()
            .filter(|(_, b)| matches!(b, Batch::Sealing { .. }))
            .map(|(&e, _)| e)
            .collect();
        for e in sealed {
            self.release(e);
        }
    }

    /// A committed record from the replicated log, applied to a replica
    /// that is not the leader, exactly as recovery replays it. Returns
    /// `false` for a record the sequencer already holds (LSN below its
    /// next), which is skipped.
    ///
    /// # Errors
    ///
    /// [`SequencerError`] for a gap in LSNs, a record that does not decode
    /// or fit, or a genesis record other than this deployment's.
    pub fn apply_committed(
        &mut self,
        lsn: Lsn,
        kind: u8,
        payload: &[u8],
    ) -> Result<bool, SequencerError> {
        if lsn < self.next_lsn {
            return Ok(false);
        }
        if lsn > self.next_lsn {
            return Err(SequencerError::Replay {
                lsn,
                reason: format!(
                    "a committed record at LSN {lsn}, expected LSN {}",
                    self.next_lsn
                ),
            });
        }
        let record = SequencerRecord::decode(kind, payload)
            .map_err(|source| SequencerError::Record { lsn, source })?;
        match (lsn, record) {
            (Lsn::FIRST, SequencerRecord::Genesis(found)) if found == self.genesis => {}
            (Lsn::FIRST, SequencerRecord::Genesis(_)) => {
                return Err(SequencerError::GenesisMismatch);
            }
            (Lsn::FIRST, _) => return Err(SequencerError::NoGenesis(lsn)),
            (_, record) => self.replay(lsn, record)?,
        }
        self.next_lsn = lsn + 1;
        self.durable_lsn = lsn;
        if RecordKind::Result.is(kind) {
            self.prune_committee();
        }
        Ok(true)
    }

    fn rebuild(
        genesis: Genesis,
        limits: Limits,
        key: SequencerKey,
        custodian: Box<dyn KeyCustodian + Send>,
        journaled: Journaled<impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>>,
        now_ms: u64,
    ) -> Result<Sequencer, SequencerError> {
        let Journaled {
            checkpoint,
            records,
            next_lsn,
        } = journaled;
        genesis.validate()?;
        limits.validate()?;
        if key.public_key() != genesis.sequencer {
            return Err(SequencerError::Protocol(
                "the signing key does not match the genesis sequencer key".into(),
            ));
        }
        let markets = genesis.market_map();
        let references = markets.values().map(|m| (m.id, m.initial_price)).collect();
        let mut sequencer = Sequencer {
            ledger: Ledger::new(genesis.fee_account),
            markets,
            references,
            funds: Funds::default(),
            limits,
            key,
            custodian,
            batches: BTreeMap::new(),
            closed_below: BatchId::ZERO,
            announced_below: BatchId::ZERO,
            now_ms,
            resumed_ms: 0,
            next_lsn,
            durable_lsn: next_lsn.saturating_sub(1),
            journal: VecDeque::new(),
            events: VecDeque::new(),
            receipts: VecDeque::new(),
            operations: VecDeque::new(),
            jobs: VecDeque::new(),
            opening: BTreeMap::new(),
            assembler: ResultAssembler::default(),
            first_lsn: BTreeMap::new(),
            committee: None,
            genesis,
        };
        match checkpoint {
            None => sequencer.replay_all(records)?,
            Some(checkpoint) => sequencer.replay_from_checkpoint(checkpoint, records)?,
        }
        Ok(sequencer)
    }

    /// Replays a whole journal, which starts with the genesis record.
    fn replay_all(
        &mut self,
        records: impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>,
    ) -> Result<(), SequencerError> {
        let sequencer = self;
        let mut records = records.into_iter();
        match records.next() {
            // An empty journal: [`resume`](Sequencer::resume) journals the
            // genesis record.
            None => {}
            Some((lsn, kind, payload)) => {
                let record = SequencerRecord::decode(kind, &payload)
                    .map_err(|source| SequencerError::Record { lsn, source })?;
                match record {
                    SequencerRecord::Genesis(found) if found == sequencer.genesis => {}
                    SequencerRecord::Genesis(_) => return Err(SequencerError::GenesisMismatch),
                    _ => return Err(SequencerError::NoGenesis(lsn)),
                }
            }
        }
        for (lsn, kind, payload) in records {
            let record = SequencerRecord::decode(kind, &payload)
                .map_err(|source| SequencerError::Record { lsn, source })?;
            sequencer.replay(lsn, record)?;
        }
        Ok(())
    }

    /// Restores `checkpoint`'s state, then replays the records it does not
    /// cover (`spec/sequencer.md`, "Checkpoints").
    fn replay_from_checkpoint(
        &mut self,
        checkpoint: Checkpoint,
        records: impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>,
    ) -> Result<(), SequencerError> {
        if checkpoint.genesis != self.genesis {
            return Err(SequencerError::GenesisMismatch);
        }
        let fail = |reason: String| SequencerError::Replay {
            lsn: checkpoint.lsn,
            reason,
        };
        if checkpoint.lsn > self.next_lsn {
            return Err(fail(format!(
                "a checkpoint at LSN {} but the journal ends before LSN {}",
                checkpoint.lsn, self.next_lsn
            )));
        }
        if !checkpoint
            .references
            .iter()
            .map(|(m, _)| m)
            .eq(self.markets.keys())
        {
            return Err(fail(
                "the checkpoint's reference prices are not those of the configured markets".into(),
            ));
        }
        self.references = checkpoint.references.iter().copied().collect();
        for &(account, asset, amount) in &checkpoint.balances {
            self.ledger.deposit(account, asset, amount)?;
        }
        self.funds = checkpoint.funds.clone();
        if let Some(state) = &checkpoint.committee {
            self.restore_committee(state).map_err(fail)?;
        }
        let mut next_expected = Some(checkpoint.replay_from);
        let mut crossed = false;
        for (lsn, kind, payload) in records {
            if lsn < checkpoint.replay_from {
                continue;
            }
            if let Some(expected) = next_expected.take()
                && lsn != expected
            {
                return Err(fail(format!(
                    "recovery needs the records from LSN {expected}, the journal has them from LSN {lsn}"
                )));
            }
            let wanted =
                lsn >= checkpoint.lsn || RecordKind::Envelope.is(kind) || RecordKind::Seal.is(kind);
            if !wanted {
                continue;
            }
            let record = SequencerRecord::decode(kind, &payload)
                .map_err(|source| SequencerError::Record { lsn, source })?;
            if lsn < checkpoint.lsn {
                let e = match &record {
                    SequencerRecord::Envelope { e, .. } => *e,
                    SequencerRecord::Seal(seal) => seal.e,
                    _ => continue,
                };
                if checkpoint.unfinished.binary_search(&e).is_ok() {
                    self.replay(lsn, record)?;
                }
                continue;
            }
            if !crossed {
                self.closed_below = self.closed_below.max(checkpoint.closed_below);
                crossed = true;
            }
            self.replay(lsn, record)?;
        }
        if let Some(expected) = next_expected
            && expected < self.next_lsn
        {
            return Err(fail(format!(
                "recovery needs the records from LSN {expected}, the journal has none"
            )));
        }
        self.closed_below = self.closed_below.max(checkpoint.closed_below);
        Ok(())
    }

    /// The state after every record journaled so far, for a checkpoint
    /// (written once those records are durable).
    #[must_use]
    pub fn checkpoint(&self) -> Checkpoint {
        let unfinished: Vec<BatchId> = self
            .batches
            .iter()
            .filter(|(e, b)| {
                !matches!(b, Batch::Publishing { .. }) && self.first_lsn.contains_key(e)
            })
            .map(|(&e, _)| e)
            .collect();
        let replay_from = unfinished
            .iter()
            .filter_map(|e| self.first_lsn.get(e).copied())
            .min()
            .unwrap_or(self.next_lsn);
        Checkpoint {
            genesis: self.genesis.clone(),
            lsn: self.next_lsn,
            replay_from,
            closed_below: self.closed_below,
            unfinished,
            references: self.references.iter().map(|(&m, &p)| (m, p)).collect(),
            balances: self.ledger.iter().collect(),
            funds: self.funds.clone(),
            committee: self.committee_state(),
        }
    }

    fn replay(&mut self, lsn: Lsn, record: SequencerRecord) -> Result<(), SequencerError> {
        let fail = |reason: String| SequencerError::Replay { lsn, reason };
        let books = Books {
            genesis: &self.genesis,
            ledger: &mut self.ledger,
            funds: &mut self.funds,
            assembler: &mut self.assembler,
        };
        let step = step(books, record).map_err(|error| match error {
            WalkError::Part { reason, .. } | WalkError::Books(reason) => fail(reason),
        })?;
        match step {
            Step::Applied => {}
            Step::Envelope { e, bytes } => {
                if e < self.closed_below {
                    return Err(fail(format!("envelope for batch {e}, already sealed")));
                }
                let len = bytes.len();
                // Most replayed batches were cleared long ago: the shape
                // check waits until a batch is actually opened again.
                let shaped = ShapedEnvelope::unchecked(bytes, e);
                let batch = self.batches.entry(e).or_insert_with(|| Batch::Collecting {
                    envelopes: BTreeMap::new(),
                    bytes: 0,
                });
                let Batch::Collecting {
                    envelopes,
                    bytes: total,
                } = batch
                else {
                    return Err(fail(format!("envelope for batch {e}, already sealed")));
                };
                *total += len;
                envelopes.insert(shaped.commitment(), shaped);
                self.first_lsn.entry(e).or_insert(lsn);
            }
            Step::Seal(seal) => {
                let e = seal.e;
                let Some(Batch::Collecting { envelopes, .. }) = self.batches.remove(&e) else {
                    return Err(fail(format!("seal of batch {e}, which has no envelopes")));
                };
                let tree = MerkleTree::from_commitments(envelopes.keys().copied().collect())?;
                if tree.root() != seal.root
                    || tree.count() != seal.count
                    || seal.verify(&self.genesis.sequencer).is_err()
                {
                    return Err(fail(format!(
                        "seal of batch {e} does not match its journaled envelopes"
                    )));
                }
                // Seals are journaled in batch order, so nothing below is
                // still collecting.
                if let Some((&early, _)) = self
                    .batches
                    .range(..e)
                    .find(|(_, b)| matches!(b, Batch::Collecting { .. }))
                {
                    return Err(fail(format!(
                        "seal of batch {e} before the seal of batch {early}"
                    )));
                }
                self.closed_below = self.closed_below.max(e + 1);
                self.batches.insert(
                    e,
                    Batch::Sealing {
                        seal,
                        tree: Arc::new(tree),
                        envelopes: envelopes.into_values().collect(),
                        seal_lsn: lsn,
                        refused: false,
                    },
                );
            }
            Step::Outcome(outcome) => {
                let e = outcome.e;
                match self.batches.remove(&e) {
                    Some(Batch::Sealing { seal, .. }) if seal.root == outcome.root => {}
                    _ => return Err(fail(format!("result of batch {e}, which is not sealed"))),
                }
                if self.batches.range(..e).next().is_some() {
                    return Err(fail(format!("result of batch {e} before an earlier batch")));
                }
                self.first_lsn.remove(&e);
                apply_outcome(
                    &outcome,
                    &mut self.ledger,
                    &self.markets,
                    &mut self.references,
                )?;
            }
            Step::Committee {
                committee,
                params,
                first_batch,
            } => self
                .replay_committee(committee, params, first_batch)
                .map_err(fail)?,
            Step::KeyperLog { position, entry } => {
                self.replay_keyper_log(position, entry).map_err(fail)?;
            }
        }
        Ok(())
    }
}
