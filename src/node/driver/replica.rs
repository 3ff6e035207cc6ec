//! The driver as one replica of a replicated sequencer
//! (`spec/replication.md`): a follower applies every committed entry to a
//! warm sequencer and sends clients to the leader; the leader drives the
//! sequencer as a single node does, proposing each turn's journal records
//! as one entry, and treats a record as durable once its entry is
//! committed — so receipts, seal key requests and published results wait
//! for a majority of replicas.
//!
//! A replica becomes the leader only with every committed entry applied
//! (openraft's blank entry of its term among them), and resumes what the
//! log leaves: it seals batches no seal was committed for, with exactly
//! their committed envelopes, and opens sealed batches again. Deposed, it
//! answers whatever waited for a commit with `NotLeader` and rebuilds its
//! sequencer from its local journal, which holds committed records only.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use openraft::{CommittedLeaderId, LogId};

use crate::replica::machine::{CheckpointJob, Committed};
use crate::replica::{Proposal, ReplicaId, ReplicaNode};
use crate::sequencer::{JournalWrite, RecordKind, Sequencer, SequencerError};
use crate::types::Lsn;
use crate::wire::{ReasonCode, ReplicaInfo, ServerMessage};

use super::super::handle::{Request, RequestBody};
use super::super::now_ms;
use super::{Driver, DriverError};

/// Who leads the cluster, as this replica last learnt it: for the
/// redirects it answers clients with.
pub type LeaderHint = Arc<RwLock<Option<(ReplicaId, ReplicaNode)>>>;

/// The voting members of the cluster's current membership, in ascending
/// id: the replicas the schedule lists.
pub type Members = Arc<RwLock<Vec<(ReplicaId, ReplicaNode)>>>;

/// Builds the sequencer again from the local journal, once it holds at
/// least the given LSN (a deposed leader, a snapshot installed).
pub type Rebuild = Box<dyn FnMut(Lsn) -> Result<Sequencer, String> + Send>;

/// Writes what a new deployment starts with (the committee, demo funds)
/// into the sequencer of the first leader of an empty log.
pub type FirstLeader = Box<dyn FnMut(&mut Sequencer) -> Result<(), String> + Send>;

/// How long a replica promoted to leader waits for the committed entries
/// it has not applied yet before it gives up the promotion.
const CATCH_UP_MAX: Duration = Duration::from_secs(5);

/// What connects the driver to the replicated log.
pub struct ReplicaLink {
    /// This replica's id.
    pub id: ReplicaId,
    /// Where proposals go, in order, to be appended to the log.
    pub proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
    /// Every committed entry, in log order, from the state machine.
    pub committed: Receiver<Committed>,
    /// Checkpoints, to the state machine's journal writer.
    pub checkpoints: Sender<CheckpointJob>,
    /// Rebuilds the sequencer from the local journal.
    pub rebuild: Rebuild,
    /// Sets up a new deployment's first leader.
    pub first_leader: FirstLeader,
    /// Who leads, for redirects.
    pub leader: LeaderHint,
    /// The voting members, for the schedule.
    pub members: Members,
    /// Seals whose keys the leader wants: to the certifier, which gathers
    /// their commit certificates and asks the keypers.
    pub certify: tokio::sync::mpsc::UnboundedSender<crate::envelope::SignedSeal>,
    /// Most entries the leader keeps uncommitted; the records it makes
    /// meanwhile wait and go out together (`[cluster] entries_in_flight`).
    pub entries_in_flight: usize,
}

impl std::fmt::Debug for ReplicaLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaLink")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A replica's role, as its driver plays it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Applies committed entries; sends clients to the leader.
    Follower,
    /// Drives the sequencer; its entries carry this term.
    Leader {
        /// The term it leads in.
        term: u64,
    },
}

/// The driver's replica state.
pub(super) struct ReplicaState {
    pub(super) link: ReplicaLink,
    pub(super) role: Role,
    /// The last entry applied to the sequencer (or, as a leader, seen
    /// committed).
    last_applied: Option<LogId<ReplicaId>>,
    /// The last LSN committed and applied.
    pub(super) committed_lsn: Lsn,
    /// Seals applied since the last checkpoint, as a follower.
    seals_since_checkpoint: u64,
    /// As the leader: its entries not yet seen committed, and the records
    /// waiting for one of them to commit.
    in_flight: InFlight,
}

impl ReplicaState {
    pub(super) fn new(link: ReplicaLink, committed_lsn: Lsn) -> ReplicaState {
        ReplicaState {
            role: Role::Follower,
            last_applied: None,
            committed_lsn,
            seals_since_checkpoint: 0,
            in_flight: InFlight::new(link.entries_in_flight),
            link,
        }
    }
}

/// The leader's entries not yet seen committed, at most `limit` of them,
/// and the records made while there were that many: they wait, and go out
/// together once one commits (`spec/replication.md`, "Proposals"). Under
/// load an entry carries more records instead of more entries piling up
/// in the log, the transport and every replica's fsyncs.
#[derive(Debug)]
struct InFlight {
    limit: usize,
    /// The last LSN of each entry proposed, and when.
    entries: VecDeque<(Lsn, Instant)>,
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

    /// An entry ending at LSN `last` was proposed at `at`.
    fn proposed(&mut self, last: Lsn, at: Instant) {
        self.entries.push_back((last, at));
    }

    /// The entries up to LSN `lsn` committed: when each was proposed.
    fn committed(&mut self, lsn: Lsn) -> Vec<Instant> {
        let mut done = Vec::new();
        while let Some(&(last, at)) = self.entries.front()
            && last <= lsn
        {
            self.entries.pop_front();
            done.push(at);
        }
        done
    }

    /// Not leading any more: nothing is in flight, nothing held.
    fn clear(&mut self) {
        self.entries.clear();
        self.held.clear();
    }
}

impl Driver {
    /// Whether this driver is one replica of a replicated sequencer.
    pub(super) fn is_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Whether this driver is a replica that does not lead.
    pub(super) fn is_follower(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|r| r.role == Role::Follower)
    }

    /// The committed entries' receiver, if this is a replica.
    pub(super) fn committed_receiver(&self) -> Receiver<Committed> {
        self.replica
            .as_ref()
            .map_or_else(crossbeam_channel::never, |r| r.link.committed.clone())
    }

    /// A committed entry from the state machine.
    pub(super) fn committed(&mut self, committed: Committed) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        match committed {
            Committed::Entry { log_id, proposal } => {
                replica.last_applied = Some(log_id);
                let Some(proposal) = proposal else {
                    return;
                };
                replica.committed_lsn = replica.committed_lsn.max(proposal.last_lsn());
                self.metrics
                    .replica_committed_lsn
                    .set(i64::try_from(replica.committed_lsn).unwrap_or(i64::MAX));
                match replica.role {
                    Role::Leader { term }
                        if log_id.leader_id == CommittedLeaderId::new(term, replica.link.id) =>
                    {
                        // Our own proposal: the sequencer holds its records;
                        // now they count as durable.
                        let lsn = proposal.last_lsn();
                        for at in replica.in_flight.committed(lsn) {
                            self.metrics
                                .replica_commit_seconds
                                .observe_duration(at.elapsed());
                        }
                        self.durable_lsn = lsn;
                        // What waited for a free slot goes out now.
                        if let Err(error) = self.propose(Vec::new()) {
                            self.fail(error);
                            return;
                        }
                        if let Err(error) = self.sequencer.handle_journal_durable(now_ms(), lsn) {
                            tracing::error!(%error, "a committed entry does not fit the sequencer; stopping");
                            self.fail(error.into());
                        }
                    }
                    Role::Leader { .. } => {
                        // Another leader's entry committed while we lead:
                        // we are not the leader any more.
                        tracing::warn!(%log_id, "another leader's entry was committed; stepping down");
                        self.demote();
                        self.apply_records(&proposal);
                    }
                    Role::Follower => self.apply_records(&proposal),
                }
            }
            Committed::Installed { last_log_id } => {
                replica.last_applied = last_log_id;
                tracing::info!(
                    ?last_log_id,
                    "a snapshot replaced the journal; rebuilding the sequencer"
                );
                if !self.is_follower() {
                    self.demote();
                }
                self.rebuild();
            }
        }
    }

    /// Applies a committed proposal's records to the follower's sequencer.
    fn apply_records(&mut self, proposal: &Proposal) {
        if proposal.first_lsn() == 1 {
            // The genesis record: the deployment's parameters (its time
            // among them) are the first leader's, and the custodian is
            // made for them; build the sequencer from the journal again.
            self.rebuild();
            return;
        }
        let mut seals = 0;
        for (lsn, kind, payload) in proposal.records() {
            if RecordKind::Seal.is(kind) {
                seals += 1;
            }
            if let Err(error) = self.sequencer.apply_committed(lsn, kind, payload) {
                tracing::error!(%error, lsn, "a committed record does not fit the sequencer; stopping");
                self.fail(error.into());
                return;
            }
        }
        self.durable_lsn = self.sequencer.next_lsn() - 1;
        self.sent_lsn = self.durable_lsn;
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        replica.seals_since_checkpoint += seals;
        if self.checkpoint_every > 0 && replica.seals_since_checkpoint >= self.checkpoint_every {
            replica.seals_since_checkpoint = 0;
            if let Err(error) = self.checkpoint() {
                tracing::warn!(%error, "a follower's checkpoint was not taken");
            }
        }
    }

    /// This replica now leads in `term`, with every entry up to `applied`
    /// committed: it catches up, resumes the sequencer and serves.
    pub(super) fn promote(&mut self, term: u64, applied: Option<LogId<ReplicaId>>) {
        let Some(replica) = self.replica.as_ref() else {
            return;
        };
        if replica.role == (Role::Leader { term }) {
            return;
        }
        if !self.is_follower() {
            self.demote();
        }
        let deadline = Instant::now() + CATCH_UP_MAX;
        let committed = self.committed_receiver();
        while self
            .replica
            .as_ref()
            .is_some_and(|r| r.last_applied < applied)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match committed.recv_timeout(left) {
                Ok(entry) => self.committed(entry),
                Err(_) => {
                    tracing::warn!(
                        term,
                        "committed entries did not arrive in time; not leading"
                    );
                    return;
                }
            }
        }
        if self.failed.is_some() {
            return;
        }
        let fresh = self.sequencer.next_lsn() == 1;
        if let Err(error) = self.sequencer.resume(now_ms()) {
            self.fail(error.into());
            return;
        }
        if fresh
            && let Some(replica) = self.replica.as_mut()
            && let Err(reason) = (replica.link.first_leader)(&mut self.sequencer)
        {
            self.fail(DriverError::Sequencer(SequencerError::Protocol(reason)));
            return;
        }
        self.keypers
            .set_committee(self.sequencer.committee().cloned());
        self.keypers
            .log_durable(self.sequencer.committee_log_durable());
        self.keypers.set_leading(true);
        self.epoch += 1;
        if let Some(replica) = self.replica.as_mut() {
            replica.role = Role::Leader { term };
        }
        self.metrics.replica_promotions.inc();
        self.metrics.replica_leading.set(1);
        self.metrics
            .replica_term
            .set(i64::try_from(term).unwrap_or(i64::MAX));
        tracing::info!(
            term,
            next_lsn = self.sequencer.next_lsn(),
            "this replica leads"
        );
    }

    /// This replica does not lead any more: whatever waited for a commit is
    /// answered `NotLeader`, and the sequencer is rebuilt from the
    /// committed journal.
    pub(super) fn demote(&mut self) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        if replica.role == Role::Follower {
            return;
        }
        replica.role = Role::Follower;
        replica.in_flight.clear();
        self.keypers.set_leading(false);
        // No schedule or certificates answered off the driver any more:
        // every request reaches it and is redirected (code 14).
        self.schedules.forget();
        self.epoch += 1;
        self.metrics.replica_demotions.inc();
        self.metrics.replica_leading.set(0);
        tracing::warn!("this replica no longer leads; rebuilding from the committed log");
        let redirect = self.redirect_text();
        for (_, pending) in std::mem::take(&mut self.pending) {
            self.refuse(
                pending.session,
                pending.request_id,
                (ReasonCode::NotLeader, 0, 0),
                redirect.clone(),
            );
            self.waiting(pending.session, false);
            self.drop_if_done(pending.session);
        }
        self.sealed_at.clear();
        self.key_asked.clear();
        self.rebuild();
    }

    fn rebuild(&mut self) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        match (replica.link.rebuild)(replica.committed_lsn) {
            Ok(sequencer) => {
                self.sequencer = sequencer;
                self.durable_lsn = self.sequencer.next_lsn() - 1;
                self.sent_lsn = self.durable_lsn;
                replica.committed_lsn = self.durable_lsn;
            }
            Err(reason) => {
                tracing::error!(%reason, "the sequencer could not be rebuilt from the journal; stopping");
                self.fail(DriverError::Sequencer(SequencerError::Protocol(reason)));
            }
        }
    }

    /// The replicas the schedule lists (`spec/wire.md`, "Schedule"): the
    /// voting members; none for a single node.
    pub(super) fn schedule_replicas(&self) -> Vec<ReplicaInfo> {
        let Some(replica) = self.replica.as_ref() else {
            return Vec::new();
        };
        let members = replica
            .link
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner());
        members
            .iter()
            .take(crate::wire::SCHEDULE_REPLICAS_MAX)
            .map(|(id, node)| ReplicaInfo {
                id: *id,
                address: node.client_addr.clone(),
                fingerprint: node.fingerprint,
            })
            .collect()
    }

    /// What a follower tells a client: who leads, where, and its
    /// certificate (`spec/replication.md`, "Clients").
    pub(super) fn redirect_text(&self) -> String {
        let leader = self
            .replica
            .as_ref()
            .and_then(|r| r.link.leader.read().ok().and_then(|l| l.clone()));
        match leader {
            Some((id, node)) => format!(
                "not the leader; leader {id} {} {}",
                node.client_addr,
                hex::encode(node.fingerprint)
            ),
            None => "not the leader; leader unknown".into(),
        }
    }

    /// A follower's answer to a request: the leader's address.
    pub(super) fn redirect(&mut self, request: Request) {
        let session = request.session;
        self.handled(session);
        let message = self.redirect_text();
        self.metrics.reject(ReasonCode::NotLeader.to_byte());
        // A submission is answered `Rejected` (as every refused `Submit`,
        // `spec/wire.md` §5), any other request `Error`.
        let reply = match &request.body {
            RequestBody::Submit { request_id, .. } => ServerMessage::Rejected {
                request_id: *request_id,
                code: ReasonCode::NotLeader,
                next_open: self.sequencer.open_batch_at(super::super::now_ms()),
                retry_after_ms: 0,
                message,
            },
            RequestBody::Query { request_id, .. } => ServerMessage::Error {
                request_id: *request_id,
                code: ReasonCode::NotLeader,
                message,
            },
            RequestBody::Message(m) => ServerMessage::Error {
                request_id: m.request_id(),
                code: ReasonCode::NotLeader,
                message,
            },
        };
        self.send(session, reply);
        self.drop_if_done(session);
    }

    /// Proposes a turn's journal records (as a leader), after those held,
    /// in entries of at most a proposal's size — or holds them while
    /// `entries_in_flight` entries are uncommitted.
    pub(super) fn propose(&mut self, writes: Vec<JournalWrite>) -> Result<(), DriverError> {
        let Some(replica) = self.replica.as_mut() else {
            return Ok(());
        };
        let writes = replica.in_flight.offer(writes);
        let mut start = 0;
        while start < writes.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < writes.len()
                && end - start < crate::replica::PROPOSAL_RECORDS_MAX
                && (end == start
                    || bytes + writes[end].payload.len() + 5
                        <= crate::replica::PROPOSAL_BYTES_MAX - 12)
            {
                bytes += writes[end].payload.len() + 5;
                end += 1;
            }
            let proposal = Proposal::new(&writes[start..end])
                .map_err(|e| DriverError::Sequencer(SequencerError::Protocol(e.to_string())))?;
            let last = proposal.last_lsn();
            replica
                .link
                .proposals
                .send(proposal)
                .map_err(|_| DriverError::WriterGone)?;
            replica.in_flight.proposed(last, Instant::now());
            self.metrics
                .replica_entry_records
                .observe((end - start) as f64);
            start = end;
        }
        Ok(())
    }

    /// The checkpoint job of the sequencer's state now.
    pub(super) fn checkpoint_job(
        &self,
        lsn: Lsn,
        replay_from: Lsn,
        payload: Vec<u8>,
    ) -> Option<CheckpointJob> {
        let replica = self.replica.as_ref()?;
        let proposer = match replica.role {
            Role::Follower => None,
            Role::Leader { term } => Some(CommittedLeaderId::new(term, replica.link.id)),
        };
        Some(CheckpointJob {
            lsn,
            replay_from,
            payload,
            proposer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(lsns: std::ops::RangeInclusive<Lsn>) -> Vec<JournalWrite> {
        lsns.map(|lsn| JournalWrite {
            lsn,
            kind: RecordKind::Envelope,
            payload: vec![lsn as u8],
        })
        .collect()
    }

    fn lsns(writes: &[JournalWrite]) -> Vec<Lsn> {
        writes.iter().map(|w| w.lsn).collect()
    }

    #[test]
    fn records_made_while_an_entry_is_in_flight_go_out_together_when_it_commits() {
        let mut in_flight = InFlight::new(1);
        let now = Instant::now();
        assert_eq!(lsns(&in_flight.offer(writes(1..=2))), [1, 2]);
        in_flight.proposed(2, now);
        // One entry uncommitted: the next turns' records wait.
        assert!(in_flight.offer(writes(3..=3)).is_empty());
        assert!(in_flight.offer(writes(4..=6)).is_empty());
        assert!(in_flight.offer(Vec::new()).is_empty());
        // An older commit frees nothing.
        assert!(in_flight.committed(1).is_empty());
        assert!(in_flight.offer(Vec::new()).is_empty());
        assert_eq!(in_flight.committed(2), [now]);
        assert_eq!(lsns(&in_flight.offer(Vec::new())), [3, 4, 5, 6]);
        in_flight.proposed(6, now);
        assert!(in_flight.offer(writes(7..=7)).is_empty());
        // Deposed: what waited is dropped with what was in flight.
        in_flight.clear();
        assert_eq!(lsns(&in_flight.offer(writes(9..=9))), [9]);
    }

    #[test]
    fn up_to_the_limit_entries_are_proposed_at_once() {
        let mut in_flight = InFlight::new(3);
        let now = Instant::now();
        for lsn in 1..=3 {
            assert_eq!(lsns(&in_flight.offer(writes(lsn..=lsn))), [lsn]);
            in_flight.proposed(lsn, now);
        }
        assert!(in_flight.offer(writes(4..=4)).is_empty());
        // A commit covering two entries frees two slots.
        assert_eq!(in_flight.committed(2).len(), 2);
        assert_eq!(lsns(&in_flight.offer(writes(5..=5))), [4, 5]);
        // A limit of 0 would never propose: it is taken as 1.
        let mut zero = InFlight::new(0);
        assert_eq!(lsns(&zero.offer(writes(1..=1))), [1]);
        zero.proposed(1, now);
        assert!(zero.offer(writes(2..=2)).is_empty());
    }
}
