//! The sequencer's checkpoint: its state after the journal records below one
//! LSN, so that recovery replays only what follows. Layout and recovery
//! rules: `spec/sequencer.md`, "Checkpoints". The journal stores it in a
//! checkpoint file; the shell reads the file and hands the payload to
//! [`Checkpoint::from_stored`].

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::keyper::{Committee, GenerationParams, KeeperSnapshot};
use crate::market::{AccountId, AssetId};
use crate::types::{BatchId, Lsn, MarketId, Tick};

use super::committee::CommitteeState;
use super::config::Genesis;
use super::funds::Funds;
use super::record::{
    decode_balances, decode_genesis_blob, decode_references, encode_balances, encode_genesis_blob,
    encode_references,
};

/// First bytes of a checkpoint payload.
pub const CHECKPOINT_TAG: [u8; 8] = *b"SBSTATE4";

/// First bytes of a checkpoint payload of the third layout, without a
/// keyper committee (still read: it has none).
pub const CHECKPOINT_TAG_V3: [u8; 8] = *b"SBSTATE3";

/// First bytes of a checkpoint payload of the second layout, with operator
/// deposits but no withdrawals (still read: it has none).
pub const CHECKPOINT_TAG_V2: [u8; 8] = *b"SBSTATE2";

/// First bytes of a checkpoint payload of the first layout, without
/// operator deposits or withdrawals (still read: it has none).
pub const CHECKPOINT_TAG_V1: [u8; 8] = *b"SBSTATE1";

/// Most balances a checkpoint may hold (about 11 GiB encoded).
pub const CHECKPOINT_BALANCES_MAX: usize = 1 << 28;

/// Most unfinished batches a checkpoint may list.
pub const CHECKPOINT_UNFINISHED_MAX: usize = 1 << 20;

/// Why a stored checkpoint's payload is not a usable state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnusableState {
    /// The payload is not a sequencer state.
    #[error("state: {0}")]
    Decode(#[from] DecodeError),
    /// The state's LSNs are not those its file states.
    #[error(
        "the state says LSN {state_lsn} (replay from {state_replay_from}), the file {file_lsn} ({file_replay_from})"
    )]
    LsnMismatch {
        /// The state's `lsn`.
        state_lsn: Lsn,
        /// The state's `replay_from`.
        state_replay_from: Lsn,
        /// The file header's `lsn`.
        file_lsn: Lsn,
        /// The file header's `replay_from`.
        file_replay_from: Lsn,
    },
}

/// The state after every journal record below [`Checkpoint::lsn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The deployment (a pruned journal no longer holds its genesis record).
    pub genesis: Genesis,
    /// The state covers the records below this LSN, none from it on.
    pub lsn: Lsn,
    /// The first record of the earliest unfinished batch, or `lsn` if none.
    pub replay_from: Lsn,
    /// Every batch below this was closed.
    pub closed_below: BatchId,
    /// Batches holding envelopes whose result is not journaled below `lsn`,
    /// ascending: recovery re-reads their envelope and seal records.
    pub unfinished: Vec<BatchId>,
    /// Each market's reference price, ascending by market.
    pub references: Vec<(MarketId, Tick)>,
    /// Every non-zero balance, strictly ascending by (account, asset).
    pub balances: Vec<(AccountId, AssetId, u64)>,
    /// Deposits credited (a reference is credited once, across restarts and
    /// pruning), withdrawal sequences, withdrawals awaiting payout and
    /// payouts acknowledged.
    pub funds: Funds,
    /// The keyper committee holding the batch keys, with its log's retained
    /// entries (`None`: the embedded custodian).
    pub committee: Option<CommitteeState>,
}

impl Checkpoint {
    /// Whether [`from_bytes`](Decode::from_bytes) can read this state back: at
    /// most [`CHECKPOINT_BALANCES_MAX`] balances and
    /// [`CHECKPOINT_UNFINISHED_MAX`] unfinished batches. A state beyond them
    /// must not be written (pruning would trust a file no restart can use).
    #[must_use]
    pub fn fits(&self) -> bool {
        self.balances.len() <= CHECKPOINT_BALANCES_MAX
            && self.unfinished.len() <= CHECKPOINT_UNFINISHED_MAX
            && self.funds.fits()
    }

    /// The state a checkpoint file holds (`payload`, stored with `lsn` and
    /// `replay_from` in its header), if it decodes and agrees with the
    /// header on the LSNs. Reading the file is the shell's part.
    ///
    /// # Errors
    ///
    /// [`UnusableState`].
    pub fn from_stored(
        lsn: Lsn,
        replay_from: Lsn,
        payload: &[u8],
    ) -> Result<Checkpoint, UnusableState> {
        let checkpoint = Checkpoint::from_bytes(payload)?;
        if (checkpoint.lsn, checkpoint.replay_from) != (lsn, replay_from) {
            return Err(UnusableState::LsnMismatch {
                state_lsn: checkpoint.lsn,
                state_replay_from: checkpoint.replay_from,
                file_lsn: lsn,
                file_replay_from: replay_from,
            });
        }
        Ok(checkpoint)
    }
}

impl Decode for Checkpoint {
    /// A whole checkpoint is its container (a file, a frame, a blob): it
    /// takes the rest of `r`.
    fn decode_from(r: &mut Reader<'_>) -> Result<Checkpoint, DecodeError> {
        let rest = r.bytes(r.remaining(), "checkpoint")?;
        Self::from_bytes(rest)
    }

    /// Decodes [`encode_into`](Encode::encode_into) and checks its orderings: unfinished
    /// batches and markets strictly ascending, balances non-zero and strictly
    /// ascending, `replay_from <= lsn`.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field and offset.
    fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
        let mut r = Reader::new(bytes);
        let offset = r.offset();
        let tag = r.array::<8>("tag")?;
        if ![
            CHECKPOINT_TAG,
            CHECKPOINT_TAG_V3,
            CHECKPOINT_TAG_V2,
            CHECKPOINT_TAG_V1,
        ]
        .contains(&tag)
        {
            return Err(r.invalid("tag", offset));
        }
        let genesis = decode_genesis_blob(&mut r)?;
        let lsn = Lsn(r.u64("lsn")?);
        let offset = r.offset();
        let replay_from = Lsn(r.u64("replay from")?);
        if replay_from == Lsn::NONE || replay_from > lsn {
            return Err(r.invalid("replay from", offset));
        }
        let closed_below = BatchId(r.u64("closed below")?);
        let offset = r.offset();
        let count = r.count("unfinished count", CHECKPOINT_UNFINISHED_MAX)?;
        let unfinished = (0..count)
            .map(|_| r.u64("unfinished batch").map(BatchId))
            .collect::<Result<Vec<_>, DecodeError>>()?;
        if !unfinished.is_sorted_by(|a, b| a < b) {
            return Err(r.invalid("unfinished batches", offset));
        }
        let offset = r.offset();
        let references = decode_references(&mut r)?;
        if !references.is_sorted_by(|a, b| a.0 < b.0) {
            return Err(r.invalid("references", offset));
        }
        let offset = r.offset();
        let balances = decode_balances(&mut r, CHECKPOINT_BALANCES_MAX)?;
        if !balances.is_sorted_by(|a, b| (a.0, a.1) < (b.0, b.1))
            || balances.iter().any(|b| b.2 == 0)
        {
            return Err(r.invalid("balances", offset));
        }
        let funds = Funds::decode(
            &mut r,
            tag != CHECKPOINT_TAG_V1,
            [CHECKPOINT_TAG, CHECKPOINT_TAG_V3].contains(&tag),
        )?;
        let committee = if tag == CHECKPOINT_TAG {
            let offset = r.offset();
            match r.u8("committee flag")? {
                0 => None,
                1 => Some(CommitteeState {
                    committee: Committee::decode_from(&mut r)?,
                    params: GenerationParams::decode_from(&mut r)?,
                    snapshot: KeeperSnapshot::decode_from(&mut r)?,
                }),
                _ => return Err(r.invalid("committee flag", offset)),
            }
        } else {
            None
        };
        r.finish()?;
        Ok(Checkpoint {
            genesis,
            lsn,
            replay_from,
            closed_below,
            unfinished,
            references,
            balances,
            funds,
            committee,
        })
    }
}

impl Encode for Checkpoint {
    /// The canonical encoding.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(64 + 44 * self.balances.len());
        out.extend_from_slice(&CHECKPOINT_TAG);
        encode_genesis_blob(&self.genesis, out);
        out.put_u64(self.lsn.get());
        out.put_u64(self.replay_from.get());
        out.put_u64(self.closed_below.get());
        // Counts are bounded by the decoder's maxima, all below u32::MAX.
        out.put_u32(self.unfinished.len() as u32);
        for e in &self.unfinished {
            out.put_u64(e.get());
        }
        encode_references(&self.references, out);
        encode_balances(&self.balances, out);
        self.funds.encode_deposits(out);
        self.funds.encode_withdrawals(out);
        match &self.committee {
            None => out.put_u8(0),
            Some(state) => {
                out.put_u8(1);
                out.extend_from_slice(&state.committee.to_bytes());
                state.params.encode_into(out);
                state.snapshot.encode_into(out);
            }
        }
    }
}
