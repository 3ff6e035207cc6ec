//! `verify`: re-derive every batch of a journal without trusting the
//! sequencer.
//!
//! For every batch: the seal's signature and its Merkle root over the
//! journaled envelopes; the published `s_e` (it must be a valid scalar);
//! re-opening every envelope with it; re-running funding, clearing and
//! settlement against the ledger replayed so far; and the byte-for-byte
//! equality of the re-derived outcome with the journaled one.
//!
//! Given checkpoints, each one the records reach is compared with the state
//! replayed to its LSN. A pruned journal (one that no longer starts with its
//! genesis record) is verified from its oldest usable checkpoint on, whose
//! state is then taken as given.

use std::collections::{BTreeMap, BTreeSet};

use crate::envelope::SignedSeal;
use crate::types::Lsn;

use super::RecordKind;
use crate::keyper::{LogKeeper, WindowCertificate};
use crate::ledger::Ledger;
use crate::types::{BatchId, MarketId, Tick};

use super::batch::{BatchOutcome, apply_outcome};
use super::checkpoint::Checkpoint;
use super::config::Genesis;
use super::funds::Funds;
use super::record::{RecordError, ResultAssembler, SequencerRecord};
use super::rederive::{check_committee_key, check_released, check_seal, compare, rederive};
use super::transcript::{Transcript, transcript_of};
use super::walk::{Books, Step, WalkError, step};
use crate::market::MarketConfig;

/// What `verify` concluded about one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchVerdict {
    /// The batch.
    pub e: BatchId,
    /// Envelopes journaled for it.
    pub envelopes: usize,
    /// Orders filled, as re-derived.
    pub fills: usize,
    /// `Ok` or the first mismatch found.
    pub verdict: Result<(), String>,
    /// Sealed, but its result is not in the journal yet (a live journal, or
    /// a crash before the result): re-derived once a restart clears it.
    pub pending: bool,
}

/// The whole journal's verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read.
    pub records: usize,
    /// One verdict per sealed batch, in journal order.
    pub batches: Vec<BatchVerdict>,
    /// The checkpoint a pruned journal was verified from (its state taken
    /// as given): its LSN.
    pub from_checkpoint: Option<Lsn>,
    /// One verdict per checkpoint compared with the replayed state.
    pub checkpoints: Vec<CheckpointVerdict>,
    /// Under a keyper committee: the windows its log certified (each
    /// certificate checked against the committee), and the batches whose
    /// published secret `s_e` was checked against the certified `S_e`.
    pub committee: Option<CommitteeVerdict>,
}

/// What `verify` found of a keyper committee's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitteeVerdict {
    /// Windows certified in the log read (or the checkpoint it started
    /// from).
    pub windows: usize,
    /// Batches whose published secret matched their certified key and
    /// whose result carries `t` keypers' attestations of its seal.
    pub keys_checked: usize,
}

/// What `verify` found for one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointVerdict {
    /// Its LSN.
    pub lsn: Lsn,
    /// `Ok`, or how its state differs from the replayed one.
    pub verdict: Result<(), String>,
}

impl VerifyReport {
    /// Whether every batch verified and none is pending, and every checkpoint
    /// compared equal.
    #[must_use]
    pub fn all_ok(&self) -> bool {
        self.batches.iter().all(|b| b.verdict.is_ok() && !b.pending)
            && self.checkpoints.iter().all(|c| c.verdict.is_ok())
    }
}

/// A journal `verify` cannot read at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The first record is not a genesis record, and no checkpoint starts
    /// within the journal.
    #[error(
        "the journal does not start with a genesis record, and no checkpoint's records are all in it"
    )]
    NoGenesis,
    /// A record does not decode.
    #[error("record {lsn}: {source}")]
    Record {
        /// Its LSN.
        lsn: Lsn,
        /// What is wrong.
        source: RecordError,
    },
    /// The genesis configuration is invalid.
    #[error("genesis: {0}")]
    Config(#[from] super::config::ConfigError),
    /// A deposit or withdrawal does not apply.
    #[error("record {lsn}: {reason}")]
    Ledger {
        /// Its LSN.
        lsn: Lsn,
        /// What failed.
        reason: String,
    },
}

struct Sealed {
    seal: SignedSeal,
    envelopes: Vec<Vec<u8>>,
    verdict: usize,
}

/// Re-derives every batch of a journal: seal signatures and Merkle roots,
/// decryption with the published `s_e`, funding, clearing and settlement,
/// compared byte for byte with the journaled results.
///
/// # Errors
///
/// [`VerifyError`] only when the journal cannot be read as a sequencer
/// journal at all; every batch-level problem is a verdict.
pub fn verify_journal(
    records: impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>,
) -> Result<VerifyReport, VerifyError> {
    walk(records, &[], &BTreeSet::new(), &mut Vec::new())
}

/// [`verify_journal`] that also compares each of `checkpoints` the records
/// reach with the replayed state, and verifies a pruned journal from its
/// oldest usable checkpoint on.
///
/// # Errors
///
/// As [`verify_journal`]; [`VerifyError::NoGenesis`] for a pruned journal
/// that no checkpoint covers.
pub fn verify_journal_with(
    records: impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>,
    checkpoints: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    walk(records, checkpoints, &BTreeSet::new(), &mut Vec::new())
}

/// Verifies a journal as [`verify_journal`] does and returns, with the
/// report, the [`Transcript`]s of the cleared batches in `batches` that
/// verify.
///
/// # Errors
///
/// As [`verify_journal`].
pub fn export_transcripts(
    records: impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>,
    checkpoints: &[Checkpoint],
    batches: &BTreeSet<BatchId>,
) -> Result<(VerifyReport, Vec<Transcript>), VerifyError> {
    let mut transcripts = Vec::new();
    let report = walk(records, checkpoints, batches, &mut transcripts)?;
    Ok((report, transcripts))
}

/// `verify`'s state as it walks a journal: the books (through the one
/// walk recovery uses too), the batches in flight, the committee's log and
/// certified windows, the report and the transcripts asked for.
struct Verifier<'x> {
    genesis: Genesis,
    markets: BTreeMap<MarketId, MarketConfig>,
    references: BTreeMap<MarketId, Tick>,
    ledger: Ledger,
    /// Deposits, withdrawals and payouts.
    funds: Funds,
    assembler: ResultAssembler,
    /// First record of each batch without a result yet.
    first_lsn: BTreeMap<BatchId, Lsn>,
    /// Envelopes journaled for each batch not sealed yet.
    collecting: BTreeMap<BatchId, Vec<Vec<u8>>>,
    sealed: BTreeMap<BatchId, Sealed>,
    committee: Option<(LogKeeper, BTreeMap<BatchId, WindowCertificate>)>,
    report: VerifyReport,
    export: &'x BTreeSet<BatchId>,
    transcripts: &'x mut Vec<Transcript>,
}

impl<'x> Verifier<'x> {
    /// The state at the journal's start: the genesis's, or `start`'s (a
    /// pruned journal's checkpoint, taken as given).
    fn new(
        genesis: Genesis,
        start: Option<&Checkpoint>,
        report: VerifyReport,
        export: &'x BTreeSet<BatchId>,
        transcripts: &'x mut Vec<Transcript>,
    ) -> Result<Verifier<'x>, VerifyError> {
        genesis.validate()?;
        let markets = genesis.market_map();
        let mut verifier = Verifier {
            references: markets.values().map(|m| (m.id, m.initial_price)).collect(),
            ledger: Ledger::new(genesis.fee_account),
            markets,
            genesis,
            funds: Funds::default(),
            assembler: ResultAssembler::default(),
            first_lsn: BTreeMap::new(),
            collecting: BTreeMap::new(),
            sealed: BTreeMap::new(),
            committee: None,
            report,
            export,
            transcripts,
        };
        let Some(checkpoint) = start else {
            return Ok(verifier);
        };
        let refused = |reason: String| VerifyError::Ledger {
            lsn: checkpoint.lsn,
            reason,
        };
        verifier.report.from_checkpoint = Some(checkpoint.lsn);
        verifier.funds = checkpoint.funds.clone();
        verifier.references = checkpoint.references.iter().copied().collect();
        if !verifier.references.keys().eq(verifier.markets.keys()) {
            return Err(refused(
                "the checkpoint's reference prices are not the markets'".into(),
            ));
        }
        for &(account, asset, amount) in &checkpoint.balances {
            verifier
                .ledger
                .deposit(account, asset, amount)
                .map_err(|error| refused(error.to_string()))?;
        }
        if let Some(state) = &checkpoint.committee {
            let keeper =
                LogKeeper::restore(state.committee.clone(), state.params, &state.snapshot, 0)
                    .map_err(|error| refused(format!("the checkpoint's committee log: {error}")))?;
            verifier.committee = Some((keeper, BTreeMap::new()));
        }
        Ok(verifier)
    }

    /// How `checkpoint` differs from this state at its LSN, if it does.
    fn compare(&self, checkpoint: &Checkpoint) -> Result<(), String> {
        if checkpoint.genesis != self.genesis {
            return Err("its genesis is not the journal's".into());
        }
        if !checkpoint.balances.iter().copied().eq(self.ledger.iter()) {
            return Err("its balances differ from the replayed ledger".into());
        }
        if !checkpoint
            .references
            .iter()
            .copied()
            .eq(self.references.iter().map(|(&m, &p)| (m, p)))
        {
            return Err("its reference prices differ".into());
        }
        if checkpoint.funds != self.funds {
            return Err("its deposits, withdrawals or payouts differ from the journal's".into());
        }
        if !checkpoint.unfinished.iter().eq(self.first_lsn.keys()) {
            return Err(format!(
                "it lists unfinished batches {:?}, the journal {:?}",
                checkpoint.unfinished,
                self.first_lsn.keys().collect::<Vec<_>>()
            ));
        }
        let replay_from = self
            .first_lsn
            .values()
            .min()
            .copied()
            .unwrap_or(checkpoint.lsn);
        if checkpoint.replay_from != replay_from {
            return Err(format!(
                "it replays from LSN {}, the first unfinished record is {replay_from}",
                checkpoint.replay_from
            ));
        }
        Ok(())
    }

    /// Walks one record: the books through the shared walk, the batch and
    /// the committee here.
    fn record(&mut self, lsn: Lsn, record: SequencerRecord) -> Result<(), VerifyError> {
        let books = Books {
            genesis: &self.genesis,
            ledger: &mut self.ledger,
            funds: &mut self.funds,
            assembler: &mut self.assembler,
        };
        let step = match step(books, record) {
            Ok(step) => step,
            Err(WalkError::Books(reason)) => return Err(VerifyError::Ledger { lsn, reason }),
            Err(WalkError::Part { e, reason }) => {
                let verdict = Err(format!("record {lsn}: {reason}"));
                match self.sealed.get(&e) {
                    Some(batch) => self.report.batches[batch.verdict].verdict = verdict,
                    None => self.report.batches.push(BatchVerdict {
                        e,
                        envelopes: 0,
                        fills: 0,
                        verdict,
                        pending: false,
                    }),
                }
                return Ok(());
            }
        };
        match step {
            Step::Applied => {}
            Step::Envelope { e, bytes } => {
                self.collecting.entry(e).or_default().push(bytes);
                self.first_lsn.entry(e).or_insert(lsn);
            }
            Step::Seal(seal) => self.seal(lsn, seal),
            Step::Outcome(outcome) => self.outcome(lsn, &outcome),
            Step::Committee {
                committee,
                params,
                first_batch,
            } => {
                if self.committee.is_some() {
                    return Err(VerifyError::Ledger {
                        lsn,
                        reason: "a second committee record".into(),
                    });
                }
                self.committee = Some((
                    LogKeeper::new(committee, params, first_batch),
                    BTreeMap::new(),
                ));
                self.report.committee.get_or_insert_default();
            }
            Step::KeyperLog { position, entry } => {
                let Some((keeper, certified)) = self.committee.as_mut() else {
                    return Err(VerifyError::Ledger {
                        lsn,
                        reason: "a keyper log entry before the committee record".into(),
                    });
                };
                keeper
                    .replay(position, entry, 0)
                    .map_err(|error| VerifyError::Ledger {
                        lsn,
                        reason: error.to_string(),
                    })?;
                take_certified(
                    keeper,
                    certified,
                    self.report.committee.get_or_insert_default(),
                );
            }
        }
        Ok(())
    }

    /// A seal: its batch's envelopes checked against it; a batch below it
    /// still collecting is reported.
    fn seal(&mut self, lsn: Lsn, seal: SignedSeal) {
        // Seals are journaled in batch order: a batch below this one
        // whose envelopes are journaled and that is not sealed yet
        // never will be (the sequencer's own replay refuses this).
        let skipped: Vec<BatchId> = self.collecting.range(..seal.e).map(|(e, _)| *e).collect();
        for early in skipped {
            let envelopes = self.collecting.remove(&early).map_or(0, |v| v.len());
            self.report.batches.push(BatchVerdict {
                e: early,
                envelopes,
                fills: 0,
                verdict: Err(format!(
                    "record {lsn}: batch {} sealed before this batch, whose envelopes are journaled",
                    seal.e
                )),
                pending: false,
            });
        }
        let envelopes = self.collecting.remove(&seal.e).unwrap_or_default();
        let verdict = check_seal(&self.genesis, &seal, &envelopes);
        self.report.batches.push(BatchVerdict {
            e: seal.e,
            envelopes: envelopes.len(),
            fills: 0,
            verdict,
            pending: true,
        });
        self.sealed.insert(
            seal.e,
            Sealed {
                seal,
                envelopes,
                verdict: self.report.batches.len() - 1,
            },
        );
    }

    /// A whole result: re-derived from its sealed batch, its key checked
    /// against the committee's, exported if asked, then settled.
    fn outcome(&mut self, lsn: Lsn, outcome: &BatchOutcome) {
        self.first_lsn.remove(&outcome.e);
        let Some(batch) = self.sealed.remove(&outcome.e) else {
            self.report.batches.push(BatchVerdict {
                e: outcome.e,
                envelopes: 0,
                fills: outcome.fills.len(),
                verdict: Err(format!("record {lsn}: result without a seal")),
                pending: false,
            });
            return;
        };
        let rederived = rederive(
            &self.genesis,
            &batch.seal,
            &batch.envelopes,
            outcome,
            &self.ledger,
            &self.markets,
            &self.references,
        );
        let slot = &mut self.report.batches[batch.verdict];
        if let Some((keeper, certified)) = self.committee.as_mut() {
            take_certified(
                keeper,
                certified,
                self.report.committee.get_or_insert_default(),
            );
            let checked = check_committee_key(certified, outcome.e, &outcome.batch_secret)
                .and_then(|()| check_released(keeper.committee(), &batch.seal, outcome));
            if checked.is_ok()
                && let Some(c) = self.report.committee.as_mut()
            {
                c.keys_checked += 1;
            }
            if slot.verdict.is_ok() {
                slot.verdict = checked;
            }
        }
        let slot = &mut self.report.batches[batch.verdict];
        slot.fills = outcome.fills.len();
        slot.pending = false;
        let mut accounts = None;
        if slot.verdict.is_ok() {
            slot.verdict = rederived.and_then(|(again, opened)| {
                accounts = Some(opened);
                compare(outcome, &again)
            });
        }
        // Only a batch that verifies is exported, with the state it
        // was processed against (before settling it).
        if let (true, Ok(()), Some(accounts)) =
            (self.export.contains(&outcome.e), &slot.verdict, accounts)
        {
            let committee = self.committee.as_ref().and_then(|(keeper, certified)| {
                certified
                    .range(..=outcome.e)
                    .next_back()
                    .filter(|(_, c)| c.window.contains(outcome.e))
                    .map(|(_, c)| (keeper.committee().clone(), c.clone()))
            });
            self.transcripts.push(transcript_of(
                &self.genesis,
                &self.ledger,
                &self.references,
                batch.seal,
                &batch.envelopes,
                outcome,
                accounts,
                committee,
            ));
        }
        if let Err(error) = apply_outcome(
            outcome,
            &mut self.ledger,
            &self.markets,
            &mut self.references,
        ) {
            slot.verdict = Err(format!("settlement: {error}"));
        }
    }
}

fn walk(
    records: impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>,
    checkpoints: &[Checkpoint],
    export: &BTreeSet<BatchId>,
    transcripts: &mut Vec<Transcript>,
) -> Result<VerifyReport, VerifyError> {
    let mut records = records.into_iter().peekable();
    let mut checkpoints: Vec<&Checkpoint> = checkpoints.iter().collect();
    checkpoints.sort_by_key(|c| c.lsn);
    let mut report = VerifyReport::default();
    // A whole journal starts with its genesis; a pruned one from its oldest
    // checkpoint whose records are all still there.
    let start: Option<&Checkpoint> = match records.peek() {
        Some((_, kind, _)) if RecordKind::Config.is(*kind) => None,
        Some(&(first, _, _)) => Some(
            checkpoints
                .iter()
                .copied()
                .find(|c| c.replay_from >= first)
                .ok_or(VerifyError::NoGenesis)?,
        ),
        None => return Err(VerifyError::NoGenesis),
    };
    // The last LSN read: the genesis record's, if it is read here.
    let mut last_lsn = Lsn::NONE;
    let genesis = match start {
        Some(checkpoint) => checkpoint.genesis.clone(),
        None => match records.next() {
            Some((lsn, kind, payload)) => match SequencerRecord::decode(kind, &payload) {
                Ok(SequencerRecord::Genesis(genesis)) => {
                    report.records += 1;
                    last_lsn = lsn;
                    genesis
                }
                Ok(_) => return Err(VerifyError::NoGenesis),
                Err(source) => return Err(VerifyError::Record { lsn, source }),
            },
            None => return Err(VerifyError::NoGenesis),
        },
    };
    let mut verifier = Verifier::new(genesis, start, report, export, transcripts)?;
    // Checkpoints to compare: those after the starting one.
    let mut due = checkpoints
        .into_iter()
        .filter(|c| start.is_none_or(|s| c.lsn > s.lsn))
        .peekable();
    for (lsn, kind, payload) in records {
        last_lsn = lsn;
        if let Some(start) = start
            && lsn < start.lsn
            && (lsn < start.replay_from
                || !(RecordKind::Envelope.is(kind) || RecordKind::Seal.is(kind)))
        {
            continue;
        }
        while let Some(checkpoint) = due.next_if(|c| c.lsn <= lsn) {
            let verdict = verifier.compare(checkpoint);
            verifier.report.checkpoints.push(CheckpointVerdict {
                lsn: checkpoint.lsn,
                verdict,
            });
        }
        let record = SequencerRecord::decode(kind, &payload)
            .map_err(|source| VerifyError::Record { lsn, source })?;
        if let Some(start) = start
            && lsn < start.lsn
        {
            let e = match &record {
                SequencerRecord::Envelope { e, .. } => *e,
                SequencerRecord::Seal(seal) => seal.e,
                _ => continue,
            };
            if start.unfinished.binary_search(&e).is_err() {
                continue;
            }
        }
        verifier.report.records += 1;
        verifier.record(lsn, record)?;
    }
    if let Some(start) = start
        && last_lsn + 1 < start.lsn
    {
        return Err(VerifyError::Ledger {
            lsn: start.lsn,
            reason: format!(
                "the checkpoint covers records up to LSN {}, the journal ends at {last_lsn}",
                start.lsn - 1
            ),
        });
    }
    for checkpoint in due {
        let verdict = if checkpoint.lsn == last_lsn + 1 {
            verifier.compare(checkpoint)
        } else {
            Err(format!(
                "it covers records up to LSN {}, the journal ends at {last_lsn}",
                checkpoint.lsn - 1
            ))
        };
        verifier.report.checkpoints.push(CheckpointVerdict {
            lsn: checkpoint.lsn,
            verdict,
        });
    }
    Ok(verifier.report)
}

/// Keeps the windows the log certified: each certificate verified against
/// the committee (the log keeper's observer derived the keys from the same
/// log, so a certificate that does not verify is a forged log).
fn take_certified(
    keeper: &mut LogKeeper,
    certified: &mut BTreeMap<BatchId, WindowCertificate>,
    verdict: &mut CommitteeVerdict,
) {
    while let Some((certificate, _)) = keeper.poll_certified() {
        if certificate.verify(keeper.committee()) {
            verdict.windows += 1;
            certified.insert(certificate.window.first_batch, certificate);
        }
    }
}

/// What [`check_receipts`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiptReport {
    /// Receipts whose envelope is in its batch's journaled outcome.
    pub held: usize,
    /// Receipts signed by the sequencer whose envelope is missing from a
    /// batch the journal holds the result of, or that the journal should
    /// hold and does not: a broken promise. Each with its batch.
    pub missing: Vec<(BatchId, crate::envelope::Commitment)>,
    /// Receipts not signed by the journal's sequencer.
    pub forged: Vec<BatchId>,
    /// Receipts for batches after the last one the journal holds a result
    /// of, whose envelope the journal holds: durable, their result not
    /// journaled yet (a journal read while its sequencer runs, or one that
    /// stopped before clearing them).
    pub not_cleared: usize,
    /// Receipts for batches cleared before the journal's first record (a
    /// pruned journal, or a replica that installed a snapshot): their
    /// results are in the checkpoint's state only, so they cannot be
    /// checked from this journal.
    pub before_journal: usize,
    /// The first batch whose result this journal can hold: the oldest
    /// checkpoint's `closed_below` for a journal without its genesis
    /// record, else 0.
    pub checkable_from: BatchId,
}

/// Holds a journal to receipts: each must carry the signature of the
/// journal's sequencer (from its genesis record, or for a pruned journal
/// from its oldest checkpoint's genesis), and its envelope must be in its
/// batch's journaled outcome. A receipt for a batch cleared before the
/// journal's first record is counted apart, not as missing; one for a batch
/// not cleared yet in the journal is missing.
///
/// # Errors
///
/// [`VerifyError::NoGenesis`] for a journal without its genesis record and
/// without a checkpoint; [`VerifyError::Record`] for a record that does not
/// decode.
pub fn check_receipts(
    records: impl IntoIterator<Item = (Lsn, u8, Vec<u8>)>,
    checkpoints: &[Checkpoint],
    receipts: &[crate::envelope::Receipt],
) -> Result<ReceiptReport, VerifyError> {
    let mut genesis = None;
    let mut first_lsn = None;
    let mut published: BTreeMap<BatchId, BTreeSet<crate::envelope::Commitment>> = BTreeMap::new();
    let mut assembler = ResultAssembler::default();
    let mut journaled: BTreeSet<(BatchId, crate::envelope::Commitment)> = BTreeSet::new();
    for (lsn, kind, payload) in records {
        first_lsn.get_or_insert(lsn);
        let record = SequencerRecord::decode(kind, &payload)
            .map_err(|source| VerifyError::Record { lsn, source })?;
        match record {
            SequencerRecord::Genesis(g) => genesis = Some(g),
            SequencerRecord::Envelope { e, bytes } => {
                journaled.insert((e, crate::envelope::Commitment::of(&bytes)));
            }
            SequencerRecord::ResultPart(part) => {
                if let Ok(Some(outcome)) = assembler.push(part) {
                    published.insert(
                        outcome.e,
                        outcome.envelopes.iter().map(|o| o.commitment).collect(),
                    );
                }
            }
            _ => {}
        }
    }
    // A pruned journal: its oldest checkpoint whose records it holds says
    // which deployment it is and which batches were cleared before it.
    let (sequencer, checkable_from) = match genesis {
        Some(genesis) => (genesis.sequencer, BatchId::ZERO),
        None => {
            let first = first_lsn.unwrap_or(Lsn::MAX);
            let checkpoint = checkpoints
                .iter()
                .filter(|c| c.replay_from >= first)
                .min_by_key(|c| c.lsn)
                .ok_or(VerifyError::NoGenesis)?;
            (checkpoint.genesis.sequencer, checkpoint.closed_below)
        }
    };
    let mut report = ReceiptReport {
        checkable_from,
        ..ReceiptReport::default()
    };
    let last_cleared = published.keys().next_back().copied();
    // Each receipt group's signature is checked once.
    let mut checker = crate::envelope::ReceiptChecker::new(sequencer);
    for receipt in receipts {
        if checker.check(receipt).is_err() {
            report.forged.push(receipt.e);
        } else if published
            .get(&receipt.e)
            .is_some_and(|set| set.contains(&receipt.commitment))
        {
            report.held += 1;
        } else if receipt.e < checkable_from {
            report.before_journal += 1;
        } else if last_cleared.is_none_or(|last| receipt.e > last)
            && journaled.contains(&(receipt.e, receipt.commitment))
        {
            report.not_cleared += 1;
        } else {
            report.missing.push((receipt.e, receipt.commitment));
        }
    }
    Ok(report)
}
