//! The replicated sequencer: the journal's records as the entries of a Raft
//! log, kept by an embedded [openraft](https://docs.rs/openraft) on three or
//! more replicas (`spec/replication.md`).
//!
//! The leader's sequencer proposes each group of journal records it would
//! have written (a [`Proposal`]); an entry counts once a majority of
//! replicas has made it durable (committed), and only then does the leader
//! act on it — a receipt, a seal's key request, a published result — exactly
//! as a single node acts once its own journal is durable. Every replica
//! applies the committed entries, in order, to its local journal, which is
//! then byte for byte the journal a single node would have written: the
//! same LSNs, checkpoints, `verify` and transcripts.
//!
//! ```text
//!  leader driver ──Proposal──▶ openraft ──AppendEntries (QUIC)──▶ followers
//!        ▲                        │ committed                        │
//!        └── durable LSN ◀── state machine ──▶ local journal ◀───────┘
//! ```
//!
//! Layout: [`certificate`] the replicas' signatures over committed seals
//! that keypers require; [`codec`] the byte layouts of entries and Raft messages;
//! [`election`] when a replica stands for election;
//! [`log_store`] the Raft log on disk ([`LogStore`]); [`machine`] the state
//! machine over the local journal ([`StateMachine`]); [`network`] the
//! replica-to-replica QUIC transport, mutually authenticated by pinned
//! certificates.

pub mod certificate;
pub mod codec;
pub mod election;
pub mod log_store;
pub mod machine;
pub mod network;

use std::fmt;
use std::sync::Arc;

use crate::codec::{DecodeError, Reader, Writer};
use crate::journal::{RECORD_KIND_MAX, RECORD_PAYLOAD_BYTES_MAX};
use crate::sequencer::JournalWrite;
use crate::types::Lsn;

pub use log_store::LogStore;
pub use machine::StateMachine;

openraft::declare_raft_types!(
    /// The Raft types of the replicated sequencer: entries carry
    /// [`Proposal`]s, apply answers [`Applied`], members are
    /// [`ReplicaNode`]s, snapshots travel as bytes.
    pub Replication:
        D = Proposal,
        R = Applied,
        Node = ReplicaNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A replica's id in the cluster (never 0).
pub type ReplicaId = u64;

/// Most records one proposal carries.
pub const PROPOSAL_RECORDS_MAX: usize = 1 << 16;

/// Most bytes one encoded proposal takes (a single record may take up to
/// [`RECORD_PAYLOAD_BYTES_MAX`]).
pub const PROPOSAL_BYTES_MAX: usize = 32 << 20;

const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX + 64 <= PROPOSAL_BYTES_MAX);

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
        let mut bytes =
            Vec::with_capacity(12 + writes.iter().map(|w| 5 + w.payload.len()).sum::<usize>());
        bytes.put_u32(writes.len() as u32);
        bytes.put_u64(first.lsn);
        let mut previous = None;
        for write in writes {
            if let Some(previous) = previous
                && write.lsn != previous + 1
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

    /// Decodes and checks an encoded proposal.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for bytes that are not one proposal.
    pub fn decode(bytes: &[u8]) -> Result<Proposal, DecodeError> {
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
        let first_lsn = r.u64("proposal first LSN")?;
        if first_lsn == 0 || first_lsn.checked_add(count as u64).is_none() {
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
        let mut r = Reader::new(&self.bytes[12..]);
        (0..u64::from(self.count)).map_while(move |i| {
            // Checked when the proposal was made or decoded.
            let kind = r.u8("record kind").ok()?;
            let payload = r.blob("record payload", RECORD_PAYLOAD_BYTES_MAX).ok()?;
            Some((self.first_lsn + i, kind, payload))
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

/// What applying an entry gave: the last LSN it journaled (`None` for an
/// entry without records: a leader's blank entry, a membership change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The last LSN journaled.
    pub last_lsn: Option<Lsn>,
}

/// A replica as the cluster knows it: where its replica transport and its
/// clients' QUIC listen, and the SHA-256 fingerprint of its certificate
/// (the same on both), which the other replicas pin both ways and clients
/// pin when redirected to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaNode {
    /// Its replica transport's address (`host:port`).
    pub addr: String,
    /// Where its clients connect (`host:port`).
    pub client_addr: String,
    /// Its certificate's fingerprint.
    pub fingerprint: [u8; 32],
}

/// Longest [`ReplicaNode::addr`], in bytes.
pub const ADDR_LEN_MAX: usize = 255;

impl fmt::Display for ReplicaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, hex::encode(&self.fingerprint[..8]))
    }
}
