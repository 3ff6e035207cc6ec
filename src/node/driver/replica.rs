//! The driver as one replica of a replicated sequencer
//! (`spec/replication.md`): the shell around [`crate::role::ReplicaRole`],
//! which decides what a replica does with its sequencer as entries commit
//! and leadership changes. This file carries out its actions — proposals
//! to openraft, rebuilding the sequencer from the local journal, answering
//! what waited on a deposed leader, metrics — and redirects a follower's
//! clients to the leader. Requests that reach a replica elected but not
//! yet caught up wait for it to lead (or are redirected if it gives up).

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use openraft::{CommittedLeaderId, LogId};

use crate::replica::machine::{CheckpointJob, Committed};
use crate::replica::{Proposal, ReplicaId, ReplicaNode};
use crate::role::{Action, EntryId, ReplicaRole, Role};
use crate::sequencer::{JournalWrite, Sequencer, SequencerError};
use crate::types::{BatchId, Lsn};
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

/// Most requests an elected replica holds while it catches up; more are
/// redirected at once.
const HELD_REQUESTS_MAX: usize = 4096;

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

/// The driver's replica state.
pub(super) struct ReplicaState {
    pub(super) link: ReplicaLink,
    /// The role machine.
    pub(super) role: ReplicaRole,
    /// When each entry in flight was proposed (its last LSN), for the
    /// commit latency metric.
    proposed_at: VecDeque<(Lsn, Instant)>,
    /// Requests that reached it while elected and catching up.
    held: Vec<Request>,
}

impl ReplicaState {
    pub(super) fn new(
        link: ReplicaLink,
        committed_lsn: Lsn,
        checkpoint_every: u64,
    ) -> ReplicaState {
        ReplicaState {
            role: ReplicaRole::new(committed_lsn, link.entries_in_flight, checkpoint_every),
            proposed_at: VecDeque::new(),
            held: Vec::new(),
            link,
        }
    }
}

/// An openraft log id as the role machine's entry id.
fn entry_id(log_id: LogId<ReplicaId>) -> EntryId {
    EntryId {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

impl Driver {
    /// Whether this driver is one replica of a replicated sequencer.
    pub(super) fn is_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Whether this driver is a replica that does not lead (a replica
    /// elected and catching up does not lead yet).
    pub(super) fn is_follower(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|r| r.role.leads().is_none())
    }

    /// Whether this driver is a replica elected and catching up.
    pub(super) fn is_elected(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|r| matches!(r.role.role(), Role::Elected { .. }))
    }

    /// When the role machine wants its timeout handled.
    pub(super) fn role_timeout(&self) -> Option<u64> {
        self.replica.as_ref().and_then(|r| r.role.poll_timeout())
    }

    /// The role machine's timeout: an elected replica that waited too long
    /// gives up.
    pub(super) fn role_tick(&mut self, now: u64) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        let actions = replica.role.handle_timeout(now);
        self.act(actions);
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
        let actions = match committed {
            Committed::Entry { log_id, proposal } => {
                let step = replica.role.committed(
                    &mut self.sequencer,
                    now_ms(),
                    entry_id(log_id),
                    proposal.as_ref(),
                );
                let committed_lsn = replica.role.committed_lsn();
                self.metrics
                    .replica_committed_lsn
                    .set(i64::try_from(committed_lsn.get()).unwrap_or(i64::MAX));
                match step {
                    Ok(actions) => actions,
                    Err(error) => {
                        tracing::error!(%error, "a committed entry does not fit the sequencer; stopping");
                        self.fail(DriverError::Sequencer(SequencerError::Protocol(
                            error.to_string(),
                        )));
                        return;
                    }
                }
            }
            Committed::Installed { last_log_id } => {
                tracing::info!(
                    ?last_log_id,
                    "a snapshot replaced the journal; rebuilding the sequencer"
                );
                replica.role.installed(last_log_id.map(entry_id))
            }
        };
        self.act(actions);
    }

    /// Carries out the role machine's actions, in order.
    fn act(&mut self, actions: Vec<Action>) {
        for action in actions {
            if self.failed.is_some() {
                return;
            }
            match action {
                Action::Propose(proposal) => self.send_proposal(proposal),
                Action::Durable(lsn) => self.durable(lsn),
                Action::Promoted { term, fresh } => self.promoted(term, fresh),
                Action::GaveUp { term } => {
                    tracing::warn!(
                        term,
                        "committed entries did not arrive in time; not leading"
                    );
                }
                Action::Demoted => self.demoted(),
                Action::Rebuild(lsn) => self.rebuild(lsn),
                Action::Checkpoint => {
                    if let Err(error) = self.checkpoint() {
                        tracing::warn!(%error, "a follower's checkpoint was not taken");
                    }
                }
            }
        }
        self.release_held();
    }

    /// The leader's records up to `lsn` are committed.
    fn durable(&mut self, lsn: Lsn) {
        self.durable_lsn = lsn;
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        while let Some(&(last, at)) = replica.proposed_at.front()
            && last <= lsn
        {
            replica.proposed_at.pop_front();
            self.metrics
                .replica_commit_seconds
                .observe_duration(at.elapsed());
        }
    }

    fn send_proposal(&mut self, proposal: Proposal) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        let last = proposal.last_lsn();
        let records = proposal.len();
        if replica.link.proposals.send(proposal).is_err() {
            self.fail(DriverError::WriterGone);
            return;
        }
        replica.proposed_at.push_back((last, Instant::now()));
        self.metrics.replica_entry_records.observe(records as f64);
    }

    /// This replica leads in `term`, with every entry up to `applied`
    /// committed: it leads once it has applied them.
    pub(super) fn promote(&mut self, term: u64, applied: Option<LogId<ReplicaId>>) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        let step = replica
            .role
            .elected(&mut self.sequencer, now_ms(), term, applied.map(entry_id));
        match step {
            Ok(actions) => self.act(actions),
            Err(error) => self.fail(DriverError::Sequencer(SequencerError::Protocol(
                error.to_string(),
            ))),
        }
    }

    /// The sequencer resumed: this replica serves as the leader of `term`.
    fn promoted(&mut self, term: u64, fresh: bool) {
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
        self.metrics.replica_promotions.inc();
        self.metrics.replica_leading.set(1);
        self.metrics
            .replica_term
            .set(i64::try_from(term).unwrap_or(i64::MAX));
        tracing::info!(
            term,
            next_lsn = self.sequencer.next_lsn().get(),
            "this replica leads"
        );
    }

    /// This replica does not lead (any more).
    pub(super) fn demote(&mut self) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        let actions = replica.role.demote();
        self.act(actions);
    }

    /// It led and does not any more: whatever waited for a commit is
    /// answered `NotLeader`.
    fn demoted(&mut self) {
        self.keypers.set_leading(false);
        // No schedule or certificates answered off the driver any more:
        // every request reaches it and is redirected (code 14).
        self.schedules.forget();
        self.epoch += 1;
        self.metrics.replica_demotions.inc();
        self.metrics.replica_leading.set(0);
        if let Some(replica) = self.replica.as_mut() {
            replica.proposed_at.clear();
        }
        tracing::warn!("this replica no longer leads; rebuilding from the committed log");
        let redirect = self.redirect_text();
        for (_, pending) in std::mem::take(&mut self.pending) {
            self.refuse(
                pending.session,
                pending.request_id,
                (ReasonCode::NotLeader, BatchId::ZERO, 0),
                redirect.clone(),
            );
            self.waiting(pending.session, false);
            self.drop_if_done(pending.session);
        }
        self.sealed_at.clear();
        self.key_asked.clear();
    }

    /// Builds the sequencer again from the local journal (holding at least
    /// LSN `at_least`).
    fn rebuild(&mut self, at_least: Lsn) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        match (replica.link.rebuild)(at_least) {
            Ok(sequencer) => {
                self.sequencer = sequencer;
                self.durable_lsn = self.sequencer.next_lsn() - 1;
                self.sent_lsn = self.durable_lsn;
                match replica.role.rebuilt(&mut self.sequencer, now_ms()) {
                    Ok(actions) => self.act(actions),
                    Err(error) => self.fail(DriverError::Sequencer(SequencerError::Protocol(
                        error.to_string(),
                    ))),
                }
            }
            Err(reason) => {
                tracing::error!(%reason, "the sequencer could not be rebuilt from the journal; stopping");
                self.fail(DriverError::Sequencer(SequencerError::Protocol(reason)));
            }
        }
    }

    /// A request to a replica that does not lead: held while it is
    /// elected and catching up, else redirected.
    pub(super) fn not_leading(&mut self, request: Request) {
        if self.is_elected()
            && let Some(replica) = self.replica.as_mut()
            && replica.held.len() < HELD_REQUESTS_MAX
        {
            replica.held.push(request);
            return;
        }
        self.redirect(request);
    }

    /// Requests held while elected: served once it leads, redirected once
    /// it does not wait any more.
    fn release_held(&mut self) {
        if self.is_elected() {
            return;
        }
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        for request in std::mem::take(&mut replica.held) {
            if self.is_follower() {
                self.redirect(request);
            } else {
                self.request(request);
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
        let actions = replica
            .role
            .propose(writes)
            .map_err(|error| DriverError::Sequencer(SequencerError::Protocol(error.to_string())))?;
        self.act(actions);
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
        let proposer = replica
            .role
            .leads()
            .map(|term| CommittedLeaderId::new(term, replica.link.id));
        Some(CheckpointJob {
            lsn,
            replay_from,
            payload,
            proposer,
        })
    }
}
