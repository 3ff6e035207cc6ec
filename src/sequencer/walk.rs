//! One walk over a journal's records for the two readers that take it
//! whole: recovery (the sequencer rebuilding its state, `replay.rs`) and
//! `verify` (an auditor re-deriving every batch, `verify.rs`).
//!
//! The records that only change the books — operator deposits, signed
//! withdrawals and payouts, the demo's unsigned ones, the committee and its
//! log's entries — are checked and applied here, the same way for both;
//! the parts of a result are joined here. What is left is the batch life
//! cycle (an envelope, a seal, a whole result) and the committee's log,
//! which each reader keeps in its own form: those are handed back as a
//! [`Step`].

use crate::keyper::{Committee, GenerationParams, LogEntry};
use crate::ledger::Ledger;
use crate::types::BatchId;

use super::batch::BatchOutcome;
use super::config::Genesis;
use super::funds::{Funds, replay_funds};
use super::record::{ResultAssembler, SequencerRecord};
use crate::envelope::SignedSeal;

/// The books a walk applies records to, borrowed from its reader.
pub(crate) struct Books<'a> {
    /// The journal's genesis.
    pub genesis: &'a Genesis,
    /// Balances.
    pub ledger: &'a mut Ledger,
    /// Deposits, withdrawals and payouts.
    pub funds: &'a mut Funds,
    /// The result parts read so far.
    pub assembler: &'a mut ResultAssembler,
}

/// What a record leaves to its reader.
pub(crate) enum Step {
    /// Applied to the books: nothing left.
    Applied,
    /// An envelope accepted into batch `e`.
    Envelope {
        /// The batch.
        e: BatchId,
        /// The envelope, as received.
        bytes: Vec<u8>,
    },
    /// A batch's seal.
    Seal(SignedSeal),
    /// A result whose parts are all read, not settled yet.
    Outcome(BatchOutcome),
    /// The committee record, bound to this deployment (checked).
    Committee {
        /// The committee.
        committee: Committee,
        /// Its key generation's parameters.
        params: GenerationParams,
        /// The first batch it keys.
        first_batch: BatchId,
    },
    /// An entry of the committee's log.
    KeyperLog {
        /// Its position in the log.
        position: u64,
        /// The entry.
        entry: LogEntry,
    },
}

/// Why a walk refuses a record.
pub(crate) enum WalkError {
    /// A result part that does not join the parts before it: batch `e`'s
    /// result cannot be read (`verify` reports the batch and goes on).
    Part {
        /// The batch of the part.
        e: BatchId,
        /// Why.
        reason: String,
    },
    /// A record the books refuse: the journal cannot be read past it.
    Books(String),
}

/// Walks one record: see the module's documentation.
pub(crate) fn step(books: Books<'_>, record: SequencerRecord) -> Result<Step, WalkError> {
    let refused = WalkError::Books;
    match record {
        SequencerRecord::Genesis(_) => Err(refused("a second genesis record".into())),
        SequencerRecord::Envelope { e, bytes } => Ok(Step::Envelope { e, bytes }),
        SequencerRecord::Seal(seal) => Ok(Step::Seal(seal)),
        SequencerRecord::ResultPart(part) => {
            let e = part.e;
            match books.assembler.push(part) {
                Ok(Some(outcome)) => Ok(Step::Outcome(outcome)),
                Ok(None) => Ok(Step::Applied),
                Err(error) => Err(WalkError::Part {
                    e,
                    reason: error.to_string(),
                }),
            }
        }
        SequencerRecord::Deposit(t) => books
            .ledger
            .deposit(t.account, t.asset, t.amount)
            .map(|()| Step::Applied)
            .map_err(|error| refused(error.to_string())),
        SequencerRecord::UnsignedWithdrawal(t) => books
            .ledger
            .withdraw(t.account, t.asset, t.amount)
            .map(|()| Step::Applied)
            .map_err(|error| refused(error.to_string())),
        // Every signature (operator's or account's) for this deployment,
        // each reference credited once, each account's sequence numbers in
        // order, each payout for a pending withdrawal.
        SequencerRecord::OperatorDeposit(_)
        | SequencerRecord::Withdrawal(_)
        | SequencerRecord::Payout(_) => {
            replay_funds(books.funds, books.ledger, &books.genesis.sequencer, &record)
                .map(|()| Step::Applied)
                .map_err(refused)
        }
        SequencerRecord::Committee {
            committee,
            params,
            first_batch,
        } => {
            let deployment = books.genesis.deployment();
            if *committee.deployment() != deployment {
                return Err(refused(format!(
                    "the committee record is bound to deployment {}, the genesis makes {deployment}",
                    committee.deployment(),
                )));
            }
            Ok(Step::Committee {
                committee,
                params,
                first_batch,
            })
        }
        SequencerRecord::KeyperLog { position, entry } => Ok(Step::KeyperLog { position, entry }),
    }
}
