//! Byte layouts of the Raft log's entries and of the messages replicas
//! send each other (`spec/replication.md`, "Entries" and "Transport").
//! Every integer is little-endian; an `Option` is a presence byte (0 or 1)
//! and, when 1, the value.

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::MerkleRoot;
use crate::types::BatchId;

use super::{ADDR_LEN_MAX, PROPOSAL_BYTES_MAX, Proposal, ReplicaId, ReplicaNode, Replication};

/// Most replicas a membership names.
pub const MEMBERS_MAX: usize = 64;
/// Most entries one append request carries.
pub const APPEND_ENTRIES_MAX: usize = 4096;
/// Longest snapshot id, in bytes.
pub const SNAPSHOT_ID_LEN_MAX: usize = 128;
/// Most bytes of one snapshot chunk.
pub const SNAPSHOT_CHUNK_MAX: usize = 8 << 20;

/// Appends a log id: term (8) ‖ leader (8) ‖ index (8).
pub fn put_log_id(out: &mut Vec<u8>, id: &LogId<ReplicaId>) {
    out.put_u64(id.leader_id.term);
    out.put_u64(id.leader_id.node_id);
    out.put_u64(id.index);
}

/// Reads a log id.
///
/// # Errors
///
/// [`DecodeError::Truncated`].
pub fn get_log_id(r: &mut Reader<'_>) -> Result<LogId<ReplicaId>, DecodeError> {
    let term = r.u64("log id term")?;
    let node = r.u64("log id leader")?;
    let index = r.u64("log id index")?;
    Ok(LogId::new(CommittedLeaderId::new(term, node), index))
}

/// Appends an optional log id.
pub fn put_opt_log_id(out: &mut Vec<u8>, id: Option<&LogId<ReplicaId>>) {
    match id {
        None => out.put_u8(0),
        Some(id) => {
            out.put_u8(1);
            put_log_id(out, id);
        }
    }
}

/// Reads an optional log id.
///
/// # Errors
///
/// [`DecodeError`] for a presence byte other than 0 or 1, or truncation.
pub fn get_opt_log_id(r: &mut Reader<'_>) -> Result<Option<LogId<ReplicaId>>, DecodeError> {
    match presence(r, "log id presence")? {
        false => Ok(None),
        true => get_log_id(r).map(Some),
    }
}

fn presence(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    let at = r.offset();
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(r.invalid(field, at)),
    }
}

/// Appends a vote: term (8) ‖ candidate (8) ‖ committed (1).
pub fn put_vote(out: &mut Vec<u8>, vote: &Vote<ReplicaId>) {
    out.put_u64(vote.leader_id.term);
    out.put_u64(vote.leader_id.node_id);
    out.put_u8(u8::from(vote.committed));
}

/// Reads a vote.
///
/// # Errors
///
/// [`DecodeError`] for a committed byte other than 0 or 1, or truncation.
pub fn get_vote(r: &mut Reader<'_>) -> Result<Vote<ReplicaId>, DecodeError> {
    let term = r.u64("vote term")?;
    let node = r.u64("vote candidate")?;
    let committed = presence(r, "vote committed")?;
    Ok(if committed {
        Vote::new_committed(term, node)
    } else {
        Vote::new(term, node)
    })
}

fn put_addr(out: &mut Vec<u8>, addr: &str) {
    // Checked where nodes are made (configuration, `cluster add`).
    let addr = &addr.as_bytes()[..addr.len().min(ADDR_LEN_MAX)];
    out.put_u8(addr.len() as u8);
    out.extend_from_slice(addr);
}

fn get_addr(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let len = r.u8(field)?;
    let at = r.offset();
    let addr = r.bytes(usize::from(len), field)?;
    let addr = std::str::from_utf8(addr).map_err(|_| r.invalid(field, at))?;
    Ok(addr.to_owned())
}

/// Appends a replica: its transport address and its clients' address
/// (each a length byte and UTF-8), then its certificate's fingerprint.
pub fn put_node(out: &mut Vec<u8>, node: &ReplicaNode) {
    put_addr(out, &node.addr);
    put_addr(out, &node.client_addr);
    out.extend_from_slice(&node.fingerprint);
}

/// Reads a replica.
///
/// # Errors
///
/// [`DecodeError`] for an address that is not UTF-8, or truncation.
pub fn get_node(r: &mut Reader<'_>) -> Result<ReplicaNode, DecodeError> {
    let addr = get_addr(r, "replica address")?;
    let client_addr = get_addr(r, "replica client address")?;
    let fingerprint = r.array("replica fingerprint")?;
    Ok(ReplicaNode {
        addr,
        client_addr,
        fingerprint,
    })
}

/// Appends a membership: configurations (none before the cluster is
/// initialised, 2 while a change is joint, else 1),
/// each a sorted list of voter ids, then every node with its id.
pub fn put_membership(out: &mut Vec<u8>, membership: &Membership<ReplicaId, ReplicaNode>) {
    let configs = membership.get_joint_config();
    out.put_u8(configs.len() as u8);
    for config in configs {
        out.put_u16(config.len() as u16);
        for id in config {
            out.put_u64(*id);
        }
    }
    let nodes: Vec<_> = membership.nodes().collect();
    out.put_u16(nodes.len() as u16);
    for (id, node) in nodes {
        out.put_u64(*id);
        put_node(out, node);
    }
}

/// Reads a membership.
///
/// # Errors
///
/// [`DecodeError`] for more than two configurations, more than
/// [`MEMBERS_MAX`] ids, ids out of order, a voter without its node, or
/// truncation.
pub fn get_membership(
    r: &mut Reader<'_>,
) -> Result<Membership<ReplicaId, ReplicaNode>, DecodeError> {
    let at = r.offset();
    let count = r.u8("membership configurations")?;
    if count > 2 {
        return Err(r.invalid("membership configurations", at));
    }
    let mut configs = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let at = r.offset();
        let len = usize::from(r.u16("configuration size")?);
        if len > MEMBERS_MAX {
            return Err(r.invalid("configuration size", at));
        }
        let mut config = BTreeSet::new();
        let mut previous = None;
        for _ in 0..len {
            let at = r.offset();
            let id = r.u64("voter id")?;
            if previous.is_some_and(|p| p >= id) {
                return Err(r.invalid("voter id", at));
            }
            previous = Some(id);
            config.insert(id);
        }
        configs.push(config);
    }
    let at = r.offset();
    let len = usize::from(r.u16("membership nodes")?);
    if len > MEMBERS_MAX {
        return Err(r.invalid("membership nodes", at));
    }
    let mut nodes = BTreeMap::new();
    let mut previous = None;
    for _ in 0..len {
        let at = r.offset();
        let id = r.u64("node id")?;
        if previous.is_some_and(|p| p >= id) {
            return Err(r.invalid("node id", at));
        }
        previous = Some(id);
        nodes.insert(id, get_node(r)?);
    }
    if configs.iter().flatten().any(|id| !nodes.contains_key(id)) {
        return Err(r.invalid("membership nodes", at));
    }
    Ok(Membership::new(configs, nodes))
}

/// Appends a stored membership: the log id it was decided at, then it.
pub fn put_stored_membership(out: &mut Vec<u8>, stored: &StoredMembership<ReplicaId, ReplicaNode>) {
    put_opt_log_id(out, stored.log_id().as_ref());
    put_membership(out, stored.membership());
}

/// Reads a stored membership.
///
/// # Errors
///
/// As [`get_membership`].
pub fn get_stored_membership(
    r: &mut Reader<'_>,
) -> Result<StoredMembership<ReplicaId, ReplicaNode>, DecodeError> {
    let log_id = get_opt_log_id(r)?;
    let membership = get_membership(r)?;
    Ok(StoredMembership::new(log_id, membership))
}

/// Appends an entry: its log id, then a payload tag — 0 blank, 1 a
/// proposal (length-prefixed), 2 a membership.
pub fn put_entry(out: &mut Vec<u8>, entry: &Entry<Replication>) {
    put_log_id(out, &entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => out.put_u8(0),
        EntryPayload::Normal(proposal) => {
            out.put_u8(1);
            out.put_blob(proposal.bytes());
        }
        EntryPayload::Membership(membership) => {
            out.put_u8(2);
            put_membership(out, membership);
        }
    }
}

/// Reads an entry.
///
/// # Errors
///
/// [`DecodeError`] for an unknown payload tag, a bad proposal or
/// membership, or truncation.
pub fn get_entry(r: &mut Reader<'_>) -> Result<Entry<Replication>, DecodeError> {
    let log_id = get_log_id(r)?;
    let at = r.offset();
    let payload = match r.u8("entry payload")? {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Normal(Proposal::from_bytes(
            r.blob("proposal", PROPOSAL_BYTES_MAX)?,
        )?),
        2 => EntryPayload::Membership(get_membership(r)?),
        _ => return Err(r.invalid("entry payload", at)),
    };
    Ok(Entry { log_id, payload })
}

/// The encoded size of `entry`, without encoding its proposal.
#[must_use]
pub fn entry_len(entry: &Entry<Replication>) -> usize {
    match &entry.payload {
        EntryPayload::Blank => 25,
        EntryPayload::Normal(proposal) => 29 + proposal.bytes().len(),
        EntryPayload::Membership(_) => 25 + 1 + 3 + MEMBERS_MAX * (8 + 2 * (1 + ADDR_LEN_MAX) + 32),
    }
}

fn put_snapshot_meta(out: &mut Vec<u8>, meta: &SnapshotMeta<ReplicaId, ReplicaNode>) {
    put_opt_log_id(out, meta.last_log_id.as_ref());
    put_stored_membership(out, &meta.last_membership);
    let id = &meta.snapshot_id.as_bytes()[..meta.snapshot_id.len().min(SNAPSHOT_ID_LEN_MAX)];
    out.put_blob(id);
}

fn get_snapshot_meta(
    r: &mut Reader<'_>,
) -> Result<SnapshotMeta<ReplicaId, ReplicaNode>, DecodeError> {
    let last_log_id = get_opt_log_id(r)?;
    let last_membership = get_stored_membership(r)?;
    let at = r.offset();
    let id = r.blob("snapshot id", SNAPSHOT_ID_LEN_MAX)?;
    let snapshot_id = std::str::from_utf8(id)
        .map_err(|_| r.invalid("snapshot id", at))?
        .to_owned();
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    })
}

/// A request one replica sends another, or the operator's `sealbatch
/// cluster` sends a replica (with a member's certificate).
#[derive(Debug)]
pub enum RaftRequest {
    /// Append entries (and heartbeat).
    Append(AppendEntriesRequest<Replication>),
    /// Ask for a vote.
    Vote(VoteRequest<ReplicaId>),
    /// One chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<Replication>),
    /// The replica's view of the cluster ([`ReplicaStatus`]).
    Status,
    /// Add a learner (the leader only): it catches up, then the answer.
    AddLearner {
        /// Its id.
        id: ReplicaId,
        /// Where it is.
        node: ReplicaNode,
    },
    /// Make these the voters (the leader only; joint consensus).
    ChangeVoters(BTreeSet<ReplicaId>),
    /// Would the replica vote for a candidate of `term` whose log ends at
    /// `last_log_id` (`spec/replication.md` §7.1, "Pre-vote")? Changes
    /// nothing on the replica; the answer is one byte, 1 if it would.
    PreVote {
        /// The term the candidate would stand for.
        term: u64,
        /// The candidate's last log id.
        last_log_id: Option<LogId<ReplicaId>>,
    },
    /// Sign the seal of batch `e` if the replica's committed log holds it
    /// (`spec/replication.md` §10): the answer is its attestation.
    Attest {
        /// The batch.
        e: BatchId,
        /// The seal's count.
        count: u32,
        /// The seal's root.
        root: MerkleRoot,
    },
    /// Sign a run of the committee's log entries if the replica's
    /// committed log holds each at its position (`spec/keyper.md` §13):
    /// the answer is its attestation.
    AttestLog {
        /// The committee's id.
        committee: [u8; 32],
        /// Position and entry hash each, positions strictly ascending, 1
        /// to [`LOG_ATTESTED_MAX`](crate::commit::LOG_ATTESTED_MAX).
        entries: Vec<(u64, [u8; 32])>,
    },
}

/// The request tags of the transport.
const TAG_APPEND: u8 = 1;
const TAG_VOTE: u8 = 2;
const TAG_SNAPSHOT: u8 = 3;
const TAG_STATUS: u8 = 4;
const TAG_ADD_LEARNER: u8 = 5;
const TAG_CHANGE_VOTERS: u8 = 6;
const TAG_ATTEST: u8 = 7;
const TAG_PRE_VOTE: u8 = 8;
const TAG_ATTEST_LOG: u8 = 9;

/// A replica's view of the cluster, as `sealbatch cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The replica's id.
    pub id: ReplicaId,
    /// Its term.
    pub term: u64,
    /// 0 follower, 1 candidate, 2 leader, 3 learner, 4 shut down.
    pub state: u8,
    /// The leader it knows of.
    pub leader: Option<ReplicaId>,
    /// Its last log index.
    pub last_log: Option<u64>,
    /// Its last applied index.
    pub applied: Option<u64>,
    /// Its snapshot's last index.
    pub snapshot: Option<u64>,
    /// The membership it follows.
    pub membership: Membership<ReplicaId, ReplicaNode>,
}

fn put_opt_u64(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        None => out.put_u8(0),
        Some(v) => {
            out.put_u8(1);
            out.put_u64(v);
        }
    }
}

fn get_opt_u64(r: &mut Reader<'_>, field: &'static str) -> Result<Option<u64>, DecodeError> {
    match presence(r, field)? {
        false => Ok(None),
        true => r.u64(field).map(Some),
    }
}

impl ReplicaStatus {
    /// The state's name.
    #[must_use]
    pub fn state_name(&self) -> &'static str {
        match self.state {
            0 => "follower",
            1 => "candidate",
            2 => "leader",
            3 => "learner",
            _ => "shut down",
        }
    }
}

impl Decode for ReplicaStatus {
    /// A whole replica status is its container (a file, a frame, a blob): it
    /// takes the rest of `r`.
    fn decode_from(r: &mut Reader<'_>) -> Result<ReplicaStatus, DecodeError> {
        let rest = r.bytes(r.remaining(), "replica status")?;
        Self::from_bytes(rest)
    }

    /// Decodes it.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for anything but exactly one status.
    fn from_bytes(bytes: &[u8]) -> Result<ReplicaStatus, DecodeError> {
        let mut r = Reader::new(bytes);
        let status = ReplicaStatus {
            id: r.u64("replica id")?,
            term: r.u64("term")?,
            state: r.u8("state")?,
            leader: get_opt_u64(&mut r, "leader")?,
            last_log: get_opt_u64(&mut r, "last log index")?,
            applied: get_opt_u64(&mut r, "applied index")?,
            snapshot: get_opt_u64(&mut r, "snapshot index")?,
            membership: get_membership(&mut r)?,
        };
        r.finish()?;
        Ok(status)
    }
}

impl Encode for ReplicaStatus {
    /// Encodes it: id ‖ term ‖ state (1) ‖ opt leader ‖ opt last log ‖ opt
    /// applied ‖ opt snapshot ‖ membership.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u64(self.id);
        out.put_u64(self.term);
        out.put_u8(self.state);
        put_opt_u64(out, self.leader);
        put_opt_u64(out, self.last_log);
        put_opt_u64(out, self.applied);
        put_opt_u64(out, self.snapshot);
        put_membership(out, &self.membership);
    }
}

impl Decode for RaftRequest {
    /// A whole raft request is its container (a file, a frame, a blob): it
    /// takes the rest of `r`.
    fn decode_from(r: &mut Reader<'_>) -> Result<RaftRequest, DecodeError> {
        let rest = r.bytes(r.remaining(), "raft request")?;
        Self::from_bytes(rest)
    }

    /// Decodes a request.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for anything but exactly one request.
    fn from_bytes(bytes: &[u8]) -> Result<RaftRequest, DecodeError> {
        let mut r = Reader::new(bytes);
        let request = match r.u8("request tag")? {
            TAG_APPEND => {
                let vote = get_vote(&mut r)?;
                let prev_log_id = get_opt_log_id(&mut r)?;
                let leader_commit = get_opt_log_id(&mut r)?;
                let count = r.count("entries", APPEND_ENTRIES_MAX)?;
                let mut entries = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    entries.push(get_entry(&mut r)?);
                }
                RaftRequest::Append(AppendEntriesRequest {
                    vote,
                    prev_log_id,
                    entries,
                    leader_commit,
                })
            }
            TAG_VOTE => {
                let vote = get_vote(&mut r)?;
                let last_log_id = get_opt_log_id(&mut r)?;
                RaftRequest::Vote(VoteRequest { vote, last_log_id })
            }
            TAG_SNAPSHOT => {
                let vote = get_vote(&mut r)?;
                let meta = get_snapshot_meta(&mut r)?;
                let offset = r.u64("snapshot offset")?;
                let done = presence(&mut r, "snapshot done")?;
                let data = r.blob("snapshot chunk", SNAPSHOT_CHUNK_MAX)?.to_vec();
                RaftRequest::Snapshot(InstallSnapshotRequest {
                    vote,
                    meta,
                    offset,
                    data,
                    done,
                })
            }
            TAG_PRE_VOTE => RaftRequest::PreVote {
                term: r.u64("term")?,
                last_log_id: get_opt_log_id(&mut r)?,
            },
            TAG_STATUS => RaftRequest::Status,
            TAG_ATTEST => RaftRequest::Attest {
                e: BatchId(r.u64("batch")?),
                count: r.u32("count")?,
                root: MerkleRoot(r.array("root")?),
            },
            TAG_ATTEST_LOG => {
                let committee = r.array("committee id")?;
                let at = r.offset();
                let count = usize::from(r.u16("entries")?);
                if count == 0 || count > crate::commit::LOG_ATTESTED_MAX {
                    return Err(r.invalid("entries", at));
                }
                let mut entries: Vec<(u64, [u8; 32])> = Vec::with_capacity(count);
                for _ in 0..count {
                    let at = r.offset();
                    let position = r.u64("position")?;
                    if entries.last().is_some_and(|&(last, _)| last >= position) {
                        return Err(r.invalid("position", at));
                    }
                    entries.push((position, r.array("entry hash")?));
                }
                RaftRequest::AttestLog { committee, entries }
            }
            TAG_ADD_LEARNER => {
                let id = r.u64("learner id")?;
                RaftRequest::AddLearner {
                    id,
                    node: get_node(&mut r)?,
                }
            }
            TAG_CHANGE_VOTERS => {
                let at = r.offset();
                let count = usize::from(r.u16("voters")?);
                if count == 0 || count > MEMBERS_MAX {
                    return Err(r.invalid("voters", at));
                }
                let mut voters = BTreeSet::new();
                for _ in 0..count {
                    let at = r.offset();
                    let id = r.u64("voter id")?;
                    // Strictly ascending: one encoding per set.
                    if voters.last().is_some_and(|&last| last >= id) {
                        return Err(r.invalid("voter id", at));
                    }
                    voters.insert(id);
                }
                RaftRequest::ChangeVoters(voters)
            }
            _ => return Err(r.invalid("request tag", 0)),
        };
        r.finish()?;
        Ok(request)
    }
}

impl Encode for RaftRequest {
    /// Encodes the request: tag (1) ‖ body.
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            RaftRequest::Append(rpc) => {
                out.put_u8(TAG_APPEND);
                put_vote(out, &rpc.vote);
                put_opt_log_id(out, rpc.prev_log_id.as_ref());
                put_opt_log_id(out, rpc.leader_commit.as_ref());
                out.put_u32(rpc.entries.len() as u32);
                for entry in &rpc.entries {
                    put_entry(out, entry);
                }
            }
            RaftRequest::Vote(rpc) => {
                out.put_u8(TAG_VOTE);
                put_vote(out, &rpc.vote);
                put_opt_log_id(out, rpc.last_log_id.as_ref());
            }
            RaftRequest::PreVote { term, last_log_id } => {
                out.put_u8(TAG_PRE_VOTE);
                out.put_u64(*term);
                put_opt_log_id(out, last_log_id.as_ref());
            }
            RaftRequest::Status => out.put_u8(TAG_STATUS),
            RaftRequest::Attest { e, count, root } => {
                out.put_u8(TAG_ATTEST);
                out.put_u64(e.get());
                out.put_u32(*count);
                out.extend_from_slice(&root.0);
            }
            RaftRequest::AttestLog { committee, entries } => {
                out.put_u8(TAG_ATTEST_LOG);
                out.extend_from_slice(committee);
                // At most LOG_ATTESTED_MAX (64), as the decoder requires.
                out.put_u16(entries.len() as u16);
                for (position, hash) in entries {
                    out.put_u64(*position);
                    out.extend_from_slice(hash);
                }
            }
            RaftRequest::AddLearner { id, node } => {
                out.put_u8(TAG_ADD_LEARNER);
                out.put_u64(*id);
                put_node(out, node);
            }
            RaftRequest::ChangeVoters(voters) => {
                out.put_u8(TAG_CHANGE_VOTERS);
                out.put_u16(voters.len() as u16);
                for id in voters {
                    out.put_u64(*id);
                }
            }
            RaftRequest::Snapshot(rpc) => {
                out.put_u8(TAG_SNAPSHOT);
                put_vote(out, &rpc.vote);
                put_snapshot_meta(out, &rpc.meta);
                out.put_u64(rpc.offset);
                out.put_u8(u8::from(rpc.done));
                out.put_blob(&rpc.data);
            }
        }
    }
}

/// Encodes an append response: tag 0 success, 1 partial success (the last
/// log id taken), 2 conflict, 3 a higher vote.
#[must_use]
pub fn encode_append_response(response: &AppendEntriesResponse<ReplicaId>) -> Vec<u8> {
    let mut out = Vec::new();
    match response {
        AppendEntriesResponse::Success => out.put_u8(0),
        AppendEntriesResponse::PartialSuccess(id) => {
            out.put_u8(1);
            put_opt_log_id(&mut out, id.as_ref());
        }
        AppendEntriesResponse::Conflict => out.put_u8(2),
        AppendEntriesResponse::HigherVote(vote) => {
            out.put_u8(3);
            put_vote(&mut out, vote);
        }
    }
    out
}

/// Decodes an append response.
///
/// # Errors
///
/// [`DecodeError`] for anything but exactly one response.
pub fn decode_append_response(
    bytes: &[u8],
) -> Result<AppendEntriesResponse<ReplicaId>, DecodeError> {
    let mut r = Reader::new(bytes);
    let response = match r.u8("append response")? {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(get_opt_log_id(&mut r)?),
        2 => AppendEntriesResponse::Conflict,
        3 => AppendEntriesResponse::HigherVote(get_vote(&mut r)?),
        _ => return Err(r.invalid("append response", 0)),
    };
    r.finish()?;
    Ok(response)
}

/// Encodes a vote response: vote ‖ granted (1) ‖ the voter's last log id.
#[must_use]
pub fn encode_vote_response(response: &VoteResponse<ReplicaId>) -> Vec<u8> {
    let mut out = Vec::new();
    put_vote(&mut out, &response.vote);
    out.put_u8(u8::from(response.vote_granted));
    put_opt_log_id(&mut out, response.last_log_id.as_ref());
    out
}

/// Decodes a vote response.
///
/// # Errors
///
/// [`DecodeError`] for anything but exactly one response.
pub fn decode_vote_response(bytes: &[u8]) -> Result<VoteResponse<ReplicaId>, DecodeError> {
    let mut r = Reader::new(bytes);
    let vote = get_vote(&mut r)?;
    let vote_granted = presence(&mut r, "vote granted")?;
    let last_log_id = get_opt_log_id(&mut r)?;
    r.finish()?;
    Ok(VoteResponse {
        vote,
        vote_granted,
        last_log_id,
    })
}

/// Encodes a snapshot chunk's response: the receiver's vote.
#[must_use]
pub fn encode_snapshot_response(response: &InstallSnapshotResponse<ReplicaId>) -> Vec<u8> {
    let mut out = Vec::new();
    put_vote(&mut out, &response.vote);
    out
}

/// Decodes a snapshot chunk's response.
///
/// # Errors
///
/// [`DecodeError`] for anything but exactly one response.
pub fn decode_snapshot_response(
    bytes: &[u8],
) -> Result<InstallSnapshotResponse<ReplicaId>, DecodeError> {
    let mut r = Reader::new(bytes);
    let vote = get_vote(&mut r)?;
    r.finish()?;
    Ok(InstallSnapshotResponse { vote })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_attestation_request_round_trips_and_refuses_what_it_must() {
        let request = RaftRequest::AttestLog {
            committee: [3; 32],
            entries: vec![(4, [5; 32]), (9, [6; 32])],
        };
        let bytes = request.to_bytes();
        assert_eq!(bytes.len(), 1 + 32 + 2 + 2 * 40);
        let Ok(RaftRequest::AttestLog { committee, entries }) = RaftRequest::from_bytes(&bytes)
        else {
            panic!("does not decode as sent");
        };
        assert_eq!(committee, [3; 32]);
        assert_eq!(entries, [(4, [5; 32]), (9, [6; 32])]);
        // Positions not strictly ascending, no entry, or more than a run
        // holds: refused.
        let mut descending = RaftRequest::AttestLog {
            committee: [3; 32],
            entries: vec![(9, [5; 32]), (9, [6; 32])],
        }
        .to_bytes();
        assert!(RaftRequest::from_bytes(&descending).is_err());
        descending.truncate(1 + 32);
        descending.extend_from_slice(&0u16.to_le_bytes());
        assert!(RaftRequest::from_bytes(&descending).is_err());
        let long = RaftRequest::AttestLog {
            committee: [3; 32],
            entries: (0..65).map(|p| (p, [1; 32])).collect(),
        }
        .to_bytes();
        assert!(RaftRequest::from_bytes(&long).is_err());
    }
}
