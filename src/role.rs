//! A replica's role, sans-IO (`spec/replication.md`): what one replica of a
//! replicated sequencer does with its sequencer as entries commit and
//! leadership changes, with time an argument and every effect an
//! [`Action`] for the shell to carry out.
//!
//! A follower applies every committed entry to a warm sequencer. A replica
//! the log elects leads only once every entry committed before its
//! election is applied (openraft's blank entry of its term among them,
//! [`Role::Elected`]); it then resumes the sequencer — sealing batches no
//! seal was committed for and opening sealed batches again — and proposes
//! each turn's journal records as [`Proposal`]s, at most
//! `entries_in_flight` of them uncommitted. Its records count as durable
//! once their entry is committed. Deposed, it drops what it had in flight
//! and asks for its sequencer to be rebuilt from its local journal, which
//! holds committed records only.
//!
//! The node's driver plays this machine over openraft
//! (`node::driver::replica`); the seeded replica simulation
//! (`tests/logic/replica_sim.rs`) plays the same machine over a model of
//! the Raft log, with crashes, partitions and elections while a leader is
//! healthy.
//!
//! ```text
//!             elected(term, until)          every entry up to `until` applied
//!  Follower ───────────────────────▶ Elected ─────────────────────────────▶ Leader
//!     ▲   ◀── deadline passed / demote ──┘                                   │
//!     └────────── demote, another term's entry, a snapshot installed ────────┘
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::codec::{Decode, DecodeError, Reader, Writer};
use crate::sequencer::{JournalWrite, RecordKind, Sequencer, SequencerError};
use crate::types::{Lsn, RECORD_KIND_MAX, RECORD_PAYLOAD_BYTES_MAX};

/// A replica's id in the cluster (never 0).
pub type ReplicaId = u64;

/// Most records one proposal carries.
pub const PROPOSAL_RECORDS_MAX: usize = 1 << 16;

/// Most bytes one encoded proposal takes (a single record may take up to
/// [`RECORD_PAYLOAD_BYTES_MAX`]).
pub const PROPOSAL_BYTES_MAX: usize = 32 << 20;

const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX + 64 <= PROPOSAL_BYTES_MAX);

/// Bytes of a proposal's header: the record count (u32) and the first LSN
/// (u64).
const PROPOSAL_HEADER_LEN: usize = 12;

/// Bytes a record adds to a proposal besides its payload: its kind (u8)
/// and its payload's length (u32).
const PROPOSAL_RECORD_OVERHEAD: usize = 5;

/// How long an elected replica waits for the committed entries it has not
/// applied yet before it gives up leading for now, in milliseconds.
pub const CATCH_UP_MAX_MS: u64 = 5_000;

/// A group of journal records with consecutive LSNs: the application data
/// of one Raft entry (`spec/replication.md`, "Proposals"). Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Proposal {
    bytes: Arc<[u8]>,
    first_lsn: Lsn,
    count: u32,
}

/// Why records cannot form a proposal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// No records.
    #[error("a proposal holds at least one record")]
    Empty,
    /// More records than [`PROPOSAL_RECORDS_MAX`] or bytes than
    /// [`PROPOSAL_BYTES_MAX`].
    #[error(
        "a proposal holds at most {PROPOSAL_RECORDS_MAX} records and {PROPOSAL_BYTES_MAX} bytes"
    )]
    TooLarge,
    /// The records' LSNs do not follow one another.
    #[error("record LSN {got} follows LSN {previous}")]
    Gap {
        /// The LSN before.
        previous: Lsn,
        /// The LSN that should have been one more.
        got: Lsn,
    },
    /// A record's payload is larger than a journal record may be.
    #[error("a record payload of {len} bytes")]
    RecordTooLarge {
        /// Its length.
        len: usize,
    },
}

impl Proposal {
    /// The proposal of `writes`, whose LSNs must follow one another.
    ///
    /// # Errors
    ///
    /// [`ProposalError`] for no records, a gap, or too many bytes.
    pub fn new(writes: &[JournalWrite]) -> Result<Proposal, ProposalError> {
        let first = writes.first().ok_or(ProposalError::Empty)?;
        if writes.len() > PROPOSAL_RECORDS_MAX {
            return Err(ProposalError::TooLarge);
        }
        let mut bytes = Vec::with_capacity(
            PROPOSAL_HEADER_LEN
                + writes
                    .iter()
                    .map(|w| PROPOSAL_RECORD_OVERHEAD + w.payload.len())
                    .sum::<usize>(),
        );
        // At most PROPOSAL_RECORDS_MAX (2^16), checked above.
        bytes.put_u32(writes.len() as u32);
        bytes.put_u64(first.lsn.get());
        let mut previous = None;
        for write in writes {
            if let Some(previous) = previous
                && Some(write.lsn) != Lsn::checked_add(previous, 1)
            {
                return Err(ProposalError::Gap {
                    previous,
                    got: write.lsn,
                });
            }
            previous = Some(write.lsn);
            if write.payload.len() > RECORD_PAYLOAD_BYTES_MAX {
                return Err(ProposalError::RecordTooLarge {
                    len: write.payload.len(),
                });
            }
            bytes.put_u8(write.kind.to_byte());
            bytes.put_blob(&write.payload);
            if bytes.len() > PROPOSAL_BYTES_MAX {
                return Err(ProposalError::TooLarge);
            }
        }
        Ok(Proposal {
            bytes: bytes.into(),
            first_lsn: first.lsn,
            count: writes.len() as u32,
        })
    }

    /// The encoded proposal.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The first record's LSN.
    #[must_use]
    pub fn first_lsn(&self) -> Lsn {
        self.first_lsn
    }

    /// The last record's LSN.
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        // `new` and `decode` checked that first + count does not overflow.
        self.first_lsn + u64::from(self.count) - 1
    }

    /// How many records it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Never true: a proposal holds at least one record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Its records: LSN, kind byte, payload.
    pub fn records(&self) -> impl Iterator<Item = (Lsn, u8, &[u8])> + '_ {
        let mut r = Reader::new(&self.bytes[PROPOSAL_HEADER_LEN..]);
        (0..u64::from(self.count)).map_while(move |i| {
            // Checked when the proposal was made or decoded.
            let kind = r.u8("record kind").ok()?;
            let payload = r.blob("record payload", RECORD_PAYLOAD_BYTES_MAX).ok()?;
            Some((self.first_lsn + i, kind, payload))
        })
    }
}

impl Decode for Proposal {
    /// A whole proposal is its container (a file, a frame, a blob): it
    /// takes the rest of `r`.
    fn decode_from(r: &mut Reader<'_>) -> Result<Proposal, DecodeError> {
        let rest = r.bytes(r.remaining(), "proposal")?;
        Self::from_bytes(rest)
    }

    /// Decodes and checks an encoded proposal.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for bytes that are not one proposal.
    fn from_bytes(bytes: &[u8]) -> Result<Proposal, DecodeError> {
        if bytes.len() > PROPOSAL_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                field: "proposal",
                offset: 0,
                value: bytes.len() as u64,
                max: PROPOSAL_BYTES_MAX as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let count = r.count("proposal record count", PROPOSAL_RECORDS_MAX)?;
        if count == 0 {
            return Err(r.invalid("proposal record count", 0));
        }
        let first_lsn = Lsn(r.u64("proposal first LSN")?);
        if first_lsn == Lsn::NONE || first_lsn.checked_add(count as u64).is_none() {
            return Err(r.invalid("proposal first LSN", 4));
        }
        for _ in 0..count {
            let at = r.offset();
            let kind = r.u8("record kind")?;
            if !(1..=RECORD_KIND_MAX).contains(&kind) {
                return Err(r.invalid("record kind", at));
            }
            r.blob("record payload", RECORD_PAYLOAD_BYTES_MAX)?;
        }
        r.finish()?;
        Ok(Proposal {
            bytes: bytes.into(),
            first_lsn,
            count: count as u32,
        })
    }
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Proposal(LSN {}..={}, {} bytes)",
            self.first_lsn,
            self.last_lsn(),
            self.bytes.len()
        )
    }
}

/// Splits `writes` (consecutive LSNs) into proposals of at most
/// [`PROPOSAL_RECORDS_MAX`] records and [`PROPOSAL_BYTES_MAX`] bytes, in
/// order; a record too large for any proposal is an error.
///
/// # Errors
///
/// [`ProposalError`] as [`Proposal::new`].
pub fn proposals(writes: &[JournalWrite]) -> Result<Vec<Proposal>, ProposalError> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < writes.len() {
        let mut end = start;
        let mut bytes = PROPOSAL_HEADER_LEN;
        while let Some(write) = writes.get(end)
            && end - start < PROPOSAL_RECORDS_MAX
        {
            let grown = bytes.saturating_add(PROPOSAL_RECORD_OVERHEAD + write.payload.len());
            // The first record always goes in: Proposal::new refuses it if
            // it is too large for any proposal.
            if end > start && grown > PROPOSAL_BYTES_MAX {
                break;
            }
            bytes = grown;
            end += 1;
        }
        out.push(Proposal::new(&writes[start..end])?);
        start = end;
    }
    Ok(out)
}

/// An entry's place in the replicated log: the term it was proposed in and
/// its index. Entries are ordered as the log orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// The term of the leader that proposed it.
    pub term: u64,
    /// Its index in the log (from 1).
    pub index: u64,
}

/// A replica's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Applies committed entries; sends clients to the leader.
    Follower,
    /// The log elected it for `term`; it leads once every entry up to
    /// `until` is applied, or gives up at `deadline_ms`.
    Elected {
        /// The term it was elected for.
        term: u64,
        /// The last entry it must apply before it leads (`None`: none).
        until: Option<EntryId>,
        /// When it stops waiting.
        deadline_ms: u64,
    },
    /// Drives the sequencer; its entries carry this term.
    Leader {
        /// The term it leads in.
        term: u64,
    },
}

/// What the shell must do after a step of the role machine, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Append this proposal to the replicated log (as the leader), after
    /// the ones before it.
    Propose(Proposal),
    /// The leader's records up to this LSN are committed: the sequencer was
    /// told they are durable, and its events may go out.
    Durable(Lsn),
    /// This replica leads `term` now; its sequencer resumed. `fresh`: the
    /// log was empty, and the shell writes what a new deployment starts
    /// with (the committee, demo funds) before anything else.
    Promoted {
        /// The term it leads.
        term: u64,
        /// Whether this is a new deployment's first leader.
        fresh: bool,
    },
    /// Elected for `term`, but the entries committed before did not arrive
    /// by the deadline: it does not lead (the log elects again).
    GaveUp {
        /// The term it was elected for.
        term: u64,
    },
    /// It led and does not any more: whatever waited for a commit is
    /// answered `NotLeader`. A [`Action::Rebuild`] follows.
    Demoted,
    /// Build the sequencer again from the local journal, once it holds at
    /// least this LSN, then call [`ReplicaRole::rebuilt`] (a step that asks
    /// for it asks nothing after it).
    Rebuild(Lsn),
    /// A follower's checkpoint is due (every `checkpoint_every` seals
    /// applied).
    Checkpoint,
}

/// Why the role machine stopped: the sequencer and the committed log
/// disagree, or records cannot be proposed. The replica stops (a bug, or a
/// journal that is not this deployment's).
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The sequencer refused a committed record or a resume.
    #[error(transparent)]
    Sequencer(#[from] SequencerError),
    /// A turn's records do not form proposals.
    #[error("records do not form a proposal: {0}")]
    Proposal(#[from] ProposalError),
    /// A follower's sequencer wrote to the journal: only a leader proposes.
    #[error("a follower's sequencer wrote to the journal")]
    FollowerWrote,
}

/// The leader's entries not yet seen committed, at most `limit` of them,
/// and the records made while there were that many: they wait, and go out
/// together once one commits (`spec/replication.md`, "Proposals"). Under
/// load an entry carries more records instead of more entries piling up
/// in the log, the transport and every replica's fsyncs.
#[derive(Debug)]
struct InFlight {
    limit: usize,
    /// The last LSN of each entry proposed.
    entries: VecDeque<Lsn>,
    /// Records not proposed yet, in LSN order.
    held: Vec<JournalWrite>,
}

impl InFlight {
    fn new(limit: usize) -> InFlight {
        InFlight {
            limit: limit.max(1),
            entries: VecDeque::new(),
            held: Vec::new(),
        }
    }

    /// Takes `writes` after those held: all of them to propose now, or
    /// none while `limit` entries are uncommitted.
    fn offer(&mut self, writes: Vec<JournalWrite>) -> Vec<JournalWrite> {
        self.held.extend(writes);
        if self.entries.len() >= self.limit {
            return Vec::new();
        }
        std::mem::take(&mut self.held)
    }

    /// An entry ending at LSN `last` was proposed.
    fn proposed(&mut self, last: Lsn) {
        self.entries.push_back(last);
    }

    /// The entries up to LSN `lsn` committed: how many.
    fn committed(&mut self, lsn: Lsn) -> usize {
        let mut done = 0;
        while self.entries.front().is_some_and(|&last| last <= lsn) {
            self.entries.pop_front();
            done += 1;
        }
        done
    }

    /// Not leading any more: nothing is in flight, nothing held.
    fn clear(&mut self) {
        self.entries.clear();
        self.held.clear();
    }
}

/// One replica's role machine over its sequencer (which the shell owns and
/// lends to each step, as it rebuilds it).
#[derive(Debug)]
pub struct ReplicaRole {
    role: Role,
    /// The last entry applied to the sequencer (or, as a leader, seen
    /// committed).
    last_applied: Option<EntryId>,
    /// The last LSN committed and applied.
    committed_lsn: Lsn,
    /// Seals applied since the last checkpoint, as a follower.
    seals_since_checkpoint: u64,
    /// A follower checkpoints every this many seals applied (0: never).
    checkpoint_every: u64,
    /// As the leader: its entries not yet seen committed, and the records
    /// waiting for one of them to commit.
    in_flight: InFlight,
    /// What the shell is to do after the step under way.
    actions: Vec<Action>,
}

impl ReplicaRole {
    /// A follower whose sequencer holds every record up to `committed_lsn`
    /// (its local journal); a leader keeps at most `entries_in_flight`
    /// entries uncommitted; a follower asks for a checkpoint every
    /// `checkpoint_every` seals (0: never).
    #[must_use]
    pub fn new(committed_lsn: Lsn, entries_in_flight: usize, checkpoint_every: u64) -> ReplicaRole {
        ReplicaRole {
            role: Role::Follower,
            last_applied: None,
            committed_lsn,
            seals_since_checkpoint: 0,
            checkpoint_every,
            in_flight: InFlight::new(entries_in_flight),
            actions: Vec::new(),
        }
    }

    /// Its role now.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The term it leads, if it leads.
    #[must_use]
    pub fn leads(&self) -> Option<u64> {
        match self.role {
            Role::Leader { term } => Some(term),
            Role::Follower | Role::Elected { .. } => None,
        }
    }

    /// Whether it neither leads nor waits to.
    #[must_use]
    pub fn is_follower(&self) -> bool {
        self.role == Role::Follower
    }

    /// The last LSN committed and applied (as a leader: seen committed).
    #[must_use]
    pub fn committed_lsn(&self) -> Lsn {
        self.committed_lsn
    }

    /// The last entry applied.
    #[must_use]
    pub fn last_applied(&self) -> Option<EntryId> {
        self.last_applied
    }

    /// How many of its entries a leader has proposed and not seen committed.
    #[must_use]
    pub fn entries_in_flight(&self) -> usize {
        self.in_flight.entries.len()
    }

    /// Whether a leader holds records back for a free slot.
    #[must_use]
    pub fn holds_records(&self) -> bool {
        !self.in_flight.held.is_empty()
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// The step's actions, or its error (and none of its actions: the
    /// replica stops).
    fn finish(&mut self, step: Result<(), RoleError>) -> Result<Vec<Action>, RoleError> {
        let actions = self.take();
        step.map(|()| actions)
    }

    /// The log elected this replica for `term`, with every entry up to
    /// `until` committed: it leads once it has applied them (at once if it
    /// has), or gives up at `now_ms` + [`CATCH_UP_MAX_MS`].
    ///
    /// # Errors
    ///
    /// [`RoleError`] if the sequencer does not resume (the replica stops).
    pub fn elected(
        &mut self,
        sequencer: &mut Sequencer,
        now_ms: u64,
        term: u64,
        until: Option<EntryId>,
    ) -> Result<Vec<Action>, RoleError> {
        match self.role {
            Role::Leader { term: leading } if leading == term => return Ok(Vec::new()),
            Role::Leader { .. } => self.step_down(),
            Role::Follower | Role::Elected { .. } => {}
        }
        self.role = Role::Elected {
            term,
            until,
            deadline_ms: now_ms.saturating_add(CATCH_UP_MAX_MS),
        };
        let step = self.promote_if_caught_up(sequencer, now_ms);
        self.finish(step)
    }

    /// It does not lead (any more): a leader drops what it had in flight,
    /// and its sequencer is rebuilt from the committed journal; an elected
    /// replica stops waiting.
    #[must_use]
    pub fn demote(&mut self) -> Vec<Action> {
        match self.role {
            Role::Follower => {}
            Role::Elected { .. } => self.role = Role::Follower,
            Role::Leader { .. } => self.step_down(),
        }
        self.take()
    }

    fn step_down(&mut self) {
        self.role = Role::Follower;
        self.in_flight.clear();
        self.actions.push(Action::Demoted);
        self.actions.push(Action::Rebuild(self.committed_lsn));
    }

    /// When it next wants [`handle_timeout`](Self::handle_timeout): an
    /// elected replica's deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.role {
            Role::Elected { deadline_ms, .. } => Some(deadline_ms),
            Role::Follower | Role::Leader { .. } => None,
        }
    }

    /// Time passed: an elected replica whose committed entries did not
    /// arrive by its deadline gives up.
    #[must_use]
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<Action> {
        if let Role::Elected {
            term, deadline_ms, ..
        } = self.role
            && now_ms >= deadline_ms
        {
            self.role = Role::Follower;
            self.actions.push(Action::GaveUp { term });
        }
        self.take()
    }

    /// A committed entry, in log order: `proposal` its records (`None` for
    /// a blank entry or a membership change).
    ///
    /// # Errors
    ///
    /// [`RoleError`] if the sequencer refuses it (the replica stops).
    pub fn committed(
        &mut self,
        sequencer: &mut Sequencer,
        now_ms: u64,
        entry: EntryId,
        proposal: Option<&Proposal>,
    ) -> Result<Vec<Action>, RoleError> {
        self.last_applied = Some(entry);
        let step = self.commit(sequencer, now_ms, entry, proposal);
        self.finish(step)
    }

    fn commit(
        &mut self,
        sequencer: &mut Sequencer,
        now_ms: u64,
        entry: EntryId,
        proposal: Option<&Proposal>,
    ) -> Result<(), RoleError> {
        if let Some(proposal) = proposal {
            self.committed_lsn = self.committed_lsn.max(proposal.last_lsn());
            match self.role {
                Role::Leader { term } if entry.term == term => {
                    // Its own proposal: the sequencer holds its records;
                    // now they count as durable, and what waited for a
                    // free slot goes out.
                    let lsn = proposal.last_lsn();
                    self.in_flight.committed(lsn);
                    self.actions.push(Action::Durable(lsn));
                    self.offer(Vec::new())?;
                    sequencer.handle_journal_durable(now_ms, lsn)?;
                }
                Role::Leader { .. } => {
                    // Another leader's entry committed while it leads: it
                    // does not lead any more. The rebuild reads the
                    // journal, which holds this entry's records.
                    self.step_down();
                }
                Role::Follower | Role::Elected { .. } => self.apply(sequencer, proposal)?,
            }
        }
        self.promote_if_caught_up(sequencer, now_ms)
    }

    /// A snapshot replaced the local journal, up to `last`, and the
    /// shell's sequencer was not built from it: a leader steps down, and
    /// the sequencer is rebuilt (an elected replica goes on waiting).
    #[must_use]
    pub fn installed(&mut self, last: Option<EntryId>) -> Vec<Action> {
        self.last_applied = last;
        if let Role::Leader { .. } = self.role {
            self.step_down();
        } else {
            self.actions.push(Action::Rebuild(self.committed_lsn));
        }
        self.take()
    }

    /// A leader's turn made these journal records: proposals to append now
    /// (after those held), or none while `entries_in_flight` entries are
    /// uncommitted. A follower's sequencer makes none.
    ///
    /// # Errors
    ///
    /// [`RoleError::FollowerWrote`] for records of a replica that does not
    /// lead; [`RoleError::Proposal`] for records that do not form one.
    pub fn propose(&mut self, writes: Vec<JournalWrite>) -> Result<Vec<Action>, RoleError> {
        if self.leads().is_none() {
            if writes.is_empty() {
                return Ok(Vec::new());
            }
            return Err(RoleError::FollowerWrote);
        }
        let step = self.offer(writes);
        self.finish(step)
    }

    fn offer(&mut self, writes: Vec<JournalWrite>) -> Result<(), RoleError> {
        let writes = self.in_flight.offer(writes);
        for proposal in proposals(&writes)? {
            self.in_flight.proposed(proposal.last_lsn());
            self.actions.push(Action::Propose(proposal));
        }
        Ok(())
    }

    /// Applies a committed proposal's records to a follower's sequencer.
    fn apply(&mut self, sequencer: &mut Sequencer, proposal: &Proposal) -> Result<(), RoleError> {
        if proposal.first_lsn() == Lsn::FIRST {
            // The genesis record: the deployment's parameters (its time
            // among them) are the first leader's, and the custodian is
            // made for them; build the sequencer from the journal again.
            self.actions.push(Action::Rebuild(proposal.last_lsn()));
            return Ok(());
        }
        let mut seals = 0;
        for (lsn, kind, payload) in proposal.records() {
            if RecordKind::Seal.is(kind) {
                seals += 1;
            }
            sequencer.apply_committed(lsn, kind, payload)?;
        }
        self.seals_since_checkpoint += seals;
        if self.checkpoint_every > 0 && self.seals_since_checkpoint >= self.checkpoint_every {
            self.seals_since_checkpoint = 0;
            self.actions.push(Action::Checkpoint);
        }
        Ok(())
    }

    /// An elected replica with every entry up to its election applied (and
    /// no rebuild pending) resumes its sequencer and leads.
    fn promote_if_caught_up(
        &mut self,
        sequencer: &mut Sequencer,
        now_ms: u64,
    ) -> Result<(), RoleError> {
        let Role::Elected { term, until, .. } = self.role else {
            return Ok(());
        };
        if self.last_applied < until || self.actions.iter().any(|a| matches!(a, Action::Rebuild(_)))
        {
            return Ok(());
        }
        let fresh = sequencer.next_lsn() == Lsn::FIRST;
        sequencer.resume(now_ms);
        self.role = Role::Leader { term };
        self.actions.push(Action::Promoted { term, fresh });
        Ok(())
    }

    /// The shell rebuilt the sequencer from its journal after an
    /// [`Action::Rebuild`]: it holds every committed record applied so
    /// far, and an elected replica that has caught up leads now.
    ///
    /// # Errors
    ///
    /// [`RoleError`] if the sequencer does not resume.
    pub fn rebuilt(
        &mut self,
        sequencer: &mut Sequencer,
        now_ms: u64,
    ) -> Result<Vec<Action>, RoleError> {
        self.committed_lsn = sequencer.next_lsn().saturating_sub(1);
        let step = self.promote_if_caught_up(sequencer, now_ms);
        self.finish(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(lsns: std::ops::RangeInclusive<u64>) -> Vec<JournalWrite> {
        lsns.map(|lsn| JournalWrite {
            lsn: Lsn(lsn),
            kind: RecordKind::Envelope,
            payload: vec![lsn as u8],
        })
        .collect()
    }

    fn lsns(writes: &[JournalWrite]) -> Vec<u64> {
        writes.iter().map(|w| w.lsn.get()).collect()
    }

    #[test]
    fn records_made_while_an_entry_is_in_flight_go_out_together_when_it_commits() {
        let mut in_flight = InFlight::new(1);
        assert_eq!(lsns(&in_flight.offer(writes(1..=2))), [1, 2]);
        in_flight.proposed(Lsn(2));
        // One entry uncommitted: the next turns' records wait.
        assert!(in_flight.offer(writes(3..=3)).is_empty());
        assert!(in_flight.offer(writes(4..=6)).is_empty());
        assert!(in_flight.offer(Vec::new()).is_empty());
        // An older commit frees nothing.
        assert_eq!(in_flight.committed(Lsn(1)), 0);
        assert!(in_flight.offer(Vec::new()).is_empty());
        assert_eq!(in_flight.committed(Lsn(2)), 1);
        assert_eq!(lsns(&in_flight.offer(Vec::new())), [3, 4, 5, 6]);
        in_flight.proposed(Lsn(6));
        assert!(in_flight.offer(writes(7..=7)).is_empty());
        // Deposed: what waited is dropped with what was in flight.
        in_flight.clear();
        assert_eq!(lsns(&in_flight.offer(writes(9..=9))), [9]);
    }

    #[test]
    fn up_to_the_limit_entries_are_proposed_at_once() {
        let mut in_flight = InFlight::new(3);
        for lsn in 1..=3 {
            assert_eq!(lsns(&in_flight.offer(writes(lsn..=lsn))), [lsn]);
            in_flight.proposed(Lsn(lsn));
        }
        assert!(in_flight.offer(writes(4..=4)).is_empty());
        // A commit covering two entries frees two slots.
        assert_eq!(in_flight.committed(Lsn(2)), 2);
        assert_eq!(lsns(&in_flight.offer(writes(5..=5))), [4, 5]);
        // A limit of 0 would never propose: it is taken as 1.
        let mut zero = InFlight::new(0);
        assert_eq!(lsns(&zero.offer(writes(1..=1))), [1]);
        zero.proposed(Lsn(1));
        assert!(zero.offer(writes(2..=2)).is_empty());
    }

    #[test]
    fn records_are_split_into_proposals_by_count_and_bytes() {
        let many = writes(1..=(PROPOSAL_RECORDS_MAX as u64 + 3));
        let split = proposals(&many).expect("splits");
        assert_eq!(split.len(), 2);
        assert_eq!(split[0].len(), PROPOSAL_RECORDS_MAX);
        assert_eq!(split[1].first_lsn(), PROPOSAL_RECORDS_MAX as u64 + 1);
        let big = |lsn| JournalWrite {
            lsn,
            kind: RecordKind::Result,
            payload: vec![0; RECORD_PAYLOAD_BYTES_MAX],
        };
        let split = proposals(&[big(Lsn(1)), big(Lsn(2)), big(Lsn(3))]).expect("splits");
        // Two records of 16 MiB and their framing exceed 32 MiB.
        assert_eq!(
            split.iter().map(Proposal::len).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        assert!(proposals(&[]).expect("nothing").is_empty());
        let too_big = JournalWrite {
            lsn: Lsn::FIRST,
            kind: RecordKind::Result,
            payload: vec![0; RECORD_PAYLOAD_BYTES_MAX + 1],
        };
        assert!(matches!(
            proposals(&[too_big]),
            Err(ProposalError::RecordTooLarge { .. })
        ));
    }
}
