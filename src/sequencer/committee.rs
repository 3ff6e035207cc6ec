//! The sequencer under a keyper committee: it keeps the committee's key
//! generation log ([`LogKeeper`]) in its own journal — every entry is a
//! [`SequencerRecord::KeyperLog`] record, served to keypers only once
//! durable — and its custodian holds the windows the log certified
//! (`spec/keyper.md` §13–§14).
//!
//! A committee takes over a journal that has sealed no batch yet
//! ([`Sequencer::start_committee`]); from its record on, batch keys come
//! only from certified windows, and the journal alone (with no secret of the
//! operator's) rebuilds everything after a restart.

use std::collections::VecDeque;

use crate::envelope::{BatchSchedule, KeyCustodian, SequencerPublicKey};
use crate::keyper::{
    Committee, CommitteeCustodian, GenerationParams, Ignored, KeeperSnapshot, LogEntry, LogKeeper,
    Prechecked, SignedKeyperMessage, WindowCertificate,
};
use crate::types::{BatchId, Lsn};

use super::record::SequencerRecord;
use super::{Event, Sequencer, SequencerError};

/// Most log entries handed to one reader at a time.
pub const COMMITTEE_LOG_READ_MAX: usize = 64;

/// What a checkpoint keeps of the committee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitteeState {
    /// The committee.
    pub committee: Committee,
    /// Its generations' parameters.
    pub params: GenerationParams,
    /// The log keeper's retained entries and counters.
    pub snapshot: KeeperSnapshot,
}

pub(super) struct CommitteeRun {
    keeper: LogKeeper,
    custodian: CommitteeCustodian,
    /// Entries journaled, not yet durable: (position, LSN).
    undurable: VecDeque<(u64, Lsn)>,
    /// Every entry below this position is durable.
    durable_below: u64,
}

impl CommitteeRun {
    fn new(
        keeper: LogKeeper,
        sequencer: SequencerPublicKey,
        schedule: BatchSchedule,
    ) -> CommitteeRun {
        let custodian = CommitteeCustodian::new(keeper.committee().clone(), sequencer, schedule);
        let durable_below = keeper.next_position();
        let mut run = CommitteeRun {
            keeper,
            custodian,
            undurable: VecDeque::new(),
            durable_below,
        };
        run.take_certified();
        run
    }

    /// Hands the custodian every window the log certified. The keeper's
    /// observer derived the keys from the same log the certificate
    /// approves, so a refusal means a bug; the window is then simply not
    /// used (fail closed).
    fn take_certified(&mut self) {
        while let Some((certificate, keys)) = self.keeper.poll_certified() {
            let _ = self.custodian.add_window(&certificate, keys);
        }
    }

    pub(super) fn custodian(&self) -> &CommitteeCustodian {
        &self.custodian
    }

    pub(super) fn custodian_mut(&mut self) -> &mut CommitteeCustodian {
        &mut self.custodian
    }

    pub(super) fn state(&self) -> CommitteeState {
        CommitteeState {
            committee: self.keeper.committee().clone(),
            params: *self.keeper.params(),
            snapshot: self.keeper.snapshot(),
        }
    }
}

impl Sequencer {
    /// Puts batch keys in the hands of `committee` from now on: journals
    /// the committee, and from then on announces only batches whose keys
    /// the committee certified. Starting the same committee again is a
    /// no-op.
    ///
    /// # Errors
    ///
    /// [`SequencerError::Protocol`]: another committee holds the keys
    /// already, or the journal has sealed or collected batches under the
    /// embedded custodian (a committee takes over a fresh journal only).
    pub fn start_committee(
        &mut self,
        committee: Committee,
        params: GenerationParams,
    ) -> Result<(), SequencerError> {
        if *committee.deployment() != self.deployment() {
            return Err(SequencerError::Protocol(format!(
                "the keyper committee is bound to deployment {}, this sequencer's is {}",
                committee.deployment(),
                self.deployment()
            )));
        }
        if let Some(run) = &self.committee {
            if *run.keeper.committee() == committee && *run.keeper.params() == params {
                return Ok(());
            }
            return Err(SequencerError::Protocol(
                "the journal names another keyper committee (changing committees is not supported)"
                    .into(),
            ));
        }
        if self.closed_below > 0 || !self.batches.is_empty() {
            return Err(SequencerError::Protocol(
                "this journal already holds batches keyed by the embedded custodian; a keyper committee takes over a new journal only".into(),
            ));
        }
        let first_batch = self.open_batch_at(self.now_ms);
        self.push_journal(&SequencerRecord::Committee {
            committee: committee.clone(),
            params,
            first_batch,
        });
        self.install_committee(LogKeeper::new(committee, params, first_batch));
        Ok(())
    }

    pub(super) fn install_committee(&mut self, keeper: LogKeeper) {
        self.committee = Some(Box::new(CommitteeRun::new(
            keeper,
            self.genesis.sequencer,
            self.genesis.schedule,
        )));
    }

    /// The committee holding the batch keys, if any.
    #[must_use]
    pub fn committee(&self) -> Option<&Committee> {
        self.committee.as_ref().map(|run| run.keeper.committee())
    }

    /// The custodian in use: the committee's, or the embedded one.
    pub(super) fn custodian(&self) -> &dyn KeyCustodian {
        match &self.committee {
            Some(run) => run.custodian(),
            None => self.custodian.as_ref(),
        }
    }

    pub(super) fn custodian_mut(&mut self) -> &mut dyn KeyCustodian {
        match &mut self.committee {
            Some(run) => run.custodian_mut(),
            None => self.custodian.as_mut(),
        }
    }

    /// A keyper's message for the committee's log: journaled if it counts
    /// now (readers see it once it is durable).
    ///
    /// # Errors
    ///
    /// [`Ignored`] with the reason (nothing is journaled), also
    /// [`Ignored::OtherWindow`] when no committee holds the keys.
    pub fn handle_keyper_message(
        &mut self,
        now_ms: u64,
        message: SignedKeyperMessage,
    ) -> Result<(), Ignored> {
        let committee = self.committee().ok_or(Ignored::OtherWindow)?;
        let prechecked = Prechecked::check(message, committee);
        self.handle_keyper_prechecked(now_ms, prechecked)
    }

    /// [`handle_keyper_message`](Self::handle_keyper_message) for a message
    /// whose dealing was checked ahead, off the caller's thread
    /// ([`Prechecked`]): the costly part of a dealing (a few ms per hundred
    /// keys) stays off the thread that issues receipts.
    ///
    /// # Errors
    ///
    /// As [`handle_keyper_message`](Self::handle_keyper_message).
    pub fn handle_keyper_prechecked(
        &mut self,
        now_ms: u64,
        prechecked: Prechecked,
    ) -> Result<(), Ignored> {
        self.observe(now_ms);
        let run = self.committee.as_mut().ok_or(Ignored::OtherWindow)?;
        run.keeper.handle_prechecked(prechecked)?;
        self.journal_keyper_entries();
        Ok(())
    }

    /// The durable entries of the committee's log from position `from` on,
    /// at most [`COMMITTEE_LOG_READ_MAX`]; empty without a committee.
    #[must_use]
    pub fn committee_log(&self, from: u64) -> Vec<(u64, LogEntry)> {
        let Some(run) = &self.committee else {
            return Vec::new();
        };
        run.keeper
            .entries(from, run.durable_below, COMMITTEE_LOG_READ_MAX)
            .map(|(p, e)| (p, e.clone()))
            .collect()
    }

    /// The certificates of the committee's windows holding any batch of
    /// `from..=to` (none without a committee).
    #[must_use]
    pub fn key_certificates(&self, from: BatchId, to: BatchId) -> Vec<WindowCertificate> {
        self.committee.as_ref().map_or_else(Vec::new, |run| {
            run.custodian.certificates(from, to).cloned().collect()
        })
    }

    /// How many keypers are linked to this sequencer now (the node counts
    /// its keyper links): the committee's next window opens only while at
    /// least `t` are, so that no generation is opened to fail. Without a
    /// call, windows open by the clock alone.
    ///
    /// When more are linked than before, every key awaited is asked for
    /// again at the next timeout rather than up to
    /// [`KEY_REQUEST_RESEND_MS`](super::KEY_REQUEST_RESEND_MS) later: keypers
    /// that just linked (to a new leader, after a restart) have not seen
    /// the requests sent while they were away.
    pub fn set_keypers_linked(&mut self, linked: usize) {
        let Some(run) = self.committee.as_mut() else {
            return;
        };
        let before = run.keeper.linked().unwrap_or(0);
        run.keeper.set_linked(linked);
        if linked > before {
            for batch in self.batches.values_mut() {
                if let super::Batch::AwaitingKey { requested_ms, .. } = batch {
                    *requested_ms = 0;
                }
            }
        }
    }

    /// The position below which the committee's log is durable (0 without
    /// a committee).
    #[must_use]
    pub fn committee_log_durable(&self) -> u64 {
        self.committee.as_ref().map_or(0, |run| run.durable_below)
    }

    /// Runs the committee's clock: opens generations, ends phases, prunes
    /// windows no batch needs any more.
    pub(super) fn committee_timeout(&mut self, open: BatchId) {
        let now = self.now_ms;
        if self.committee.is_none() {
            return;
        }
        // Pruned first: the keeper deals no further ahead of the first
        // batch needed than it may (right after a restart too).
        self.prune_committee();
        if let Some(run) = self.committee.as_mut() {
            run.keeper.handle_timeout(now, open);
        }
        self.journal_keyper_entries();
    }

    /// Forgets the windows no batch needs any more: those ending at or
    /// below the first batch not cleared (sealed, being opened, or not yet
    /// closed). The leader prunes at each timeout, a replica that follows
    /// at each committed record (else its log and custodian grow while
    /// others lead); neither the log nor the keys change, only what is
    /// kept, so a window a sealed batch still needs is never dropped.
    pub(super) fn prune_committee(&mut self) {
        let needed = self
            .batches
            .keys()
            .next()
            .copied()
            .into_iter()
            .chain(self.opening.keys().next().copied())
            .fold(self.closed_below, BatchId::min);
        let Some(run) = self.committee.as_mut() else {
            return;
        };
        run.keeper.prune(needed);
        run.custodian.prune(needed);
    }

    /// Journals the keeper's new entries and gives the custodian the
    /// windows they certified.
    fn journal_keyper_entries(&mut self) {
        let mut entries = Vec::new();
        if let Some(run) = self.committee.as_mut() {
            while let Some(entry) = run.keeper.poll_entry() {
                entries.push(entry);
            }
            run.take_certified();
        }
        for (position, entry) in entries {
            let lsn = self.push_journal(&SequencerRecord::KeyperLog { position, entry });
            if let Some(run) = self.committee.as_mut() {
                run.undurable.push_back((position, lsn));
            }
        }
    }

    /// The journal made every write up to `lsn` durable: so are the log
    /// entries journaled up to it.
    pub(super) fn committee_durable(&mut self, lsn: Lsn) {
        let Some(run) = self.committee.as_mut() else {
            return;
        };
        let before = run.durable_below;
        while let Some(&(position, at)) = run.undurable.front() {
            if at > lsn {
                break;
            }
            run.undurable.pop_front();
            run.durable_below = run.durable_below.max(position + 1);
        }
        if run.durable_below > before {
            self.events.push_back(Event::CommitteeLog {
                below: run.durable_below,
            });
        }
    }

    /// Installs the committee of a journal's committee record (its
    /// deployment checked by the walk).
    pub(super) fn replay_committee(
        &mut self,
        committee: Committee,
        params: GenerationParams,
        first_batch: BatchId,
    ) -> Result<(), String> {
        if self.committee.is_some() {
            return Err("a second committee record".into());
        }
        self.install_committee(LogKeeper::new(committee, params, first_batch));
        Ok(())
    }

    /// Replays an entry of the committee's log.
    pub(super) fn replay_keyper_log(
        &mut self,
        position: u64,
        entry: LogEntry,
    ) -> Result<(), String> {
        let now = self.now_ms;
        let run = self
            .committee
            .as_mut()
            .ok_or("a keyper log entry before the committee record")?;
        run.keeper
            .replay(position, entry, now)
            .map_err(|error| error.to_string())?;
        run.durable_below = run.keeper.next_position();
        run.take_certified();
        Ok(())
    }

    /// Restores the committee a checkpoint kept.
    pub(super) fn restore_committee(&mut self, state: &CommitteeState) -> Result<(), String> {
        if *state.committee.deployment() != self.deployment() {
            return Err(format!(
                "the checkpoint's committee is bound to deployment {}, the genesis makes {}",
                state.committee.deployment(),
                self.deployment()
            ));
        }
        let keeper = LogKeeper::restore(
            state.committee.clone(),
            state.params,
            &state.snapshot,
            self.now_ms,
        )
        .map_err(|error| error.to_string())?;
        self.install_committee(keeper);
        Ok(())
    }

    pub(super) fn committee_state(&self) -> Option<CommitteeState> {
        self.committee.as_ref().map(|run| run.state())
    }
}
