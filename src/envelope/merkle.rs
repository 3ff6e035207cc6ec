//! Commitments and the Merkle tree over a batch's sorted commitments, with
//! inclusion proofs.
//!
//! Leaves are the distinct commitments sorted ascending (as byte strings).
//! `leaf = H_leaf(commitment)`, `node = H_node(left ‖ right)`; an odd node at
//! the end of a level is promoted to the next level unchanged (never
//! duplicated, so no two leaf sets share a root). The empty tree's root is
//! `H_empty("")`. Each `H_x` is blake3 `derive_key` with its own context.

use std::sync::LazyLock;

use rayon::prelude::*;

use super::layout::{
    DOMAIN_COMMITMENT, DOMAIN_MERKLE_EMPTY, DOMAIN_MERKLE_LEAF, DOMAIN_MERKLE_NODE,
};

/// Most distinct envelopes one batch may seal (the Merkle leaf count bound).
pub const ENVELOPES_PER_BATCH_MAX: usize = 1 << 24;
/// Most siblings in an inclusion proof: `ceil(log2(ENVELOPES_PER_BATCH_MAX))`.
pub const PROOF_DEPTH_MAX: usize = 24;

const _: () = assert!(ENVELOPES_PER_BATCH_MAX <= u32::MAX as usize);
const _: () = assert!(1usize << PROOF_DEPTH_MAX >= ENVELOPES_PER_BATCH_MAX);

static LEAF_HASHER: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(DOMAIN_MERKLE_LEAF));
static NODE_HASHER: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(DOMAIN_MERKLE_NODE));
static COMMITMENT_HASHER: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(DOMAIN_COMMITMENT));

/// An envelope's commitment: `blake3_derive_key(DOMAIN_COMMITMENT, envelope)`.
///
/// Ordered as a byte string; a batch's Merkle leaves are its commitments in
/// this order. Printed (`{}` and `{:?}`) as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Commitment(pub [u8; 32]);

impl std::fmt::Display for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Commitment({self})")
    }
}

impl Commitment {
    /// The commitment to an envelope's exact bytes.
    #[must_use]
    pub fn of(envelope: &[u8]) -> Self {
        let mut h = COMMITMENT_HASHER.clone();
        h.update(envelope);
        Commitment(*h.finalize().as_bytes())
    }
}

/// A Merkle root over a batch's sorted commitments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MerkleRoot(pub [u8; 32]);

fn leaf_hash(c: &Commitment) -> [u8; 32] {
    let mut h = LEAF_HASHER.clone();
    h.update(&c.0);
    *h.finalize().as_bytes()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = NODE_HASHER.clone();
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

fn empty_root() -> MerkleRoot {
    MerkleRoot(blake3::derive_key(DOMAIN_MERKLE_EMPTY, b""))
}

/// Levels wider than this are hashed in parallel (rayon); the result is the
/// same bytes either way. A receipt group (at most this many leaves) is
/// therefore hashed on the thread that signs it, never entering rayon's
/// pool from a connection's task.
pub(crate) const PARALLEL_LEVEL_MIN: usize = 1 << 12;

fn pair_hash(pair: &[[u8; 32]]) -> [u8; 32] {
    match pair {
        [l, r] => node_hash(l, r),
        [only] => *only,
        _ => [0u8; 32], // chunks(2) never yields an empty slice
    }
}

fn leaf_level(sorted: &[Commitment]) -> Vec<[u8; 32]> {
    if sorted.len() > PARALLEL_LEVEL_MIN {
        sorted.par_iter().map(leaf_hash).collect()
    } else {
        sorted.iter().map(leaf_hash).collect()
    }
}

fn next_level(level: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if level.len() > PARALLEL_LEVEL_MIN {
        level.par_chunks(2).map(pair_hash).collect()
    } else {
        level.chunks(2).map(pair_hash).collect()
    }
}

/// Why a tree cannot be built or a proof does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MerkleError {
    /// More than [`ENVELOPES_PER_BATCH_MAX`] leaves.
    #[error("{0} leaves; at most {ENVELOPES_PER_BATCH_MAX}")]
    TooManyLeaves(usize),
    /// The proof's index is not below the leaf count.
    #[error("leaf index {index} out of range for {count} leaves")]
    IndexOutOfRange {
        /// The proof's index.
        index: u32,
        /// The tree's leaf count.
        count: u32,
    },
    /// The proof has the wrong number of siblings for its position.
    #[error("proof has the wrong number of siblings")]
    ProofLength,
    /// The recomputed root differs.
    #[error("inclusion proof does not lead to the root")]
    RootMismatch,
    /// The proof bytes do not decode.
    #[error("inclusion proof bytes do not decode")]
    Encoding,
}

/// The root over `sorted`, which must be strictly ascending (distinct).
///
/// # Errors
/// [`MerkleError::TooManyLeaves`].
pub fn merkle_root(sorted: &[Commitment]) -> Result<MerkleRoot, MerkleError> {
    if sorted.len() > ENVELOPES_PER_BATCH_MAX {
        return Err(MerkleError::TooManyLeaves(sorted.len()));
    }
    debug_assert!(sorted.windows(2).all(|w| w[0] < w[1]));
    if sorted.is_empty() {
        return Ok(empty_root());
    }
    let mut level = leaf_level(sorted);
    while level.len() > 1 {
        level = next_level(&level);
    }
    Ok(MerkleRoot(level[0]))
}

/// A Merkle tree over a batch's distinct commitments, sorted ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    leaves: Vec<Commitment>,
    /// `levels[0]` are the leaf hashes, the last level is the root.
    levels: Vec<Vec<[u8; 32]>>,
}

impl MerkleTree {
    /// Sorts and de-duplicates `commitments` and builds the tree.
    ///
    /// # Errors
    /// [`MerkleError::TooManyLeaves`] beyond [`ENVELOPES_PER_BATCH_MAX`]
    /// distinct commitments.
    pub fn from_commitments(mut commitments: Vec<Commitment>) -> Result<Self, MerkleError> {
        commitments.par_sort_unstable();
        commitments.dedup();
        if commitments.len() > ENVELOPES_PER_BATCH_MAX {
            return Err(MerkleError::TooManyLeaves(commitments.len()));
        }
        let levels = levels_over(leaf_level(&commitments));
        Ok(MerkleTree {
            leaves: commitments,
            levels,
        })
    }

    /// The number of leaves (distinct commitments).
    #[must_use]
    pub fn count(&self) -> u32 {
        // Bounded by ENVELOPES_PER_BATCH_MAX <= u32::MAX at construction.
        u32::try_from(self.leaves.len()).unwrap_or(u32::MAX)
    }

    /// The sorted, distinct commitments.
    #[must_use]
    pub fn leaves(&self) -> &[Commitment] {
        &self.leaves
    }

    /// The root.
    #[must_use]
    pub fn root(&self) -> MerkleRoot {
        match self.levels.last().and_then(|l| l.first()) {
            Some(root) => MerkleRoot(*root),
            None => empty_root(),
        }
    }

    /// The leaf index of `commitment`, if it is in the tree.
    #[must_use]
    pub fn position(&self, commitment: &Commitment) -> Option<u32> {
        let i = self.leaves.binary_search(commitment).ok()?;
        u32::try_from(i).ok()
    }

    /// The inclusion proof for leaf `index`; `None` out of range.
    #[must_use]
    pub fn proof(&self, index: u32) -> Option<InclusionProof> {
        proof_in(&self.levels, index)
    }
}

/// Every level of the tree over `leaves` (leaf hashes, in order): the
/// first is `leaves`, the last holds the root; none for no leaves.
pub(crate) fn levels_over(leaves: Vec<[u8; 32]>) -> Vec<Vec<[u8; 32]>> {
    let mut levels = Vec::new();
    if leaves.is_empty() {
        return levels;
    }
    let mut level = leaves;
    while level.len() > 1 {
        let next = next_level(&level);
        levels.push(level);
        level = next;
    }
    levels.push(level);
    levels
}

/// The inclusion proof of leaf `index` in the tree of `levels`
/// ([`levels_over`]); `None` out of range.
pub(crate) fn proof_in(levels: &[Vec<[u8; 32]>], index: u32) -> Option<InclusionProof> {
    let mut idx = usize::try_from(index).ok()?;
    let (_, below_root) = levels.split_last()?;
    if idx >= levels.first().map_or(0, Vec::len) {
        return None;
    }
    let mut siblings = Vec::new();
    for level in below_root {
        if let Some(s) = level.get(idx ^ 1) {
            siblings.push(*s);
        }
        idx >>= 1;
    }
    Some(InclusionProof { index, siblings })
}

/// A proof that a commitment is leaf `index` of a tree of a given size.
///
/// Encoding: `index (4, LE) ‖ k (1) ‖ k × sibling (32)`, bottom-up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InclusionProof {
    /// The leaf's position in the sorted commitments.
    pub index: u32,
    /// Sibling hashes from the leaf level upwards; levels where the node was
    /// promoted (odd last node) contribute none.
    pub siblings: Vec<[u8; 32]>,
}

impl InclusionProof {
    /// Checks that `commitment` is leaf `index` of the `count`-leaf tree with
    /// `root`. The sibling count must be exactly what the position needs.
    ///
    /// # Errors
    /// [`MerkleError::IndexOutOfRange`], [`MerkleError::ProofLength`] or
    /// [`MerkleError::RootMismatch`].
    pub fn verify(
        &self,
        commitment: &Commitment,
        count: u32,
        root: &MerkleRoot,
    ) -> Result<(), MerkleError> {
        self.verify_leaf(leaf_hash(commitment), count, root)
    }

    /// [`verify`](Self::verify) from the leaf's hash: the same walk for a
    /// tree whose leaves are hashed another way (a receipt group's,
    /// `spec/envelope.md` §12).
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub fn verify_leaf(
        &self,
        leaf: [u8; 32],
        count: u32,
        root: &MerkleRoot,
    ) -> Result<(), MerkleError> {
        if self.index >= count {
            return Err(MerkleError::IndexOutOfRange {
                index: self.index,
                count,
            });
        }
        let mut idx = self.index;
        let mut len = count;
        let mut hash = leaf;
        let mut siblings = self.siblings.iter();
        while len > 1 {
            let promoted = idx.is_multiple_of(2) && idx + 1 == len;
            if !promoted {
                let s = siblings.next().ok_or(MerkleError::ProofLength)?;
                hash = if idx.is_multiple_of(2) {
                    node_hash(&hash, s)
                } else {
                    node_hash(s, &hash)
                };
            }
            idx /= 2;
            len = len.div_ceil(2);
        }
        if siblings.next().is_some() {
            return Err(MerkleError::ProofLength);
        }
        if hash != root.0 {
            return Err(MerkleError::RootMismatch);
        }
        Ok(())
    }

    /// The encoding above.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 32 * self.siblings.len());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.push(u8::try_from(self.siblings.len()).unwrap_or(u8::MAX));
        for s in &self.siblings {
            out.extend_from_slice(s);
        }
        out
    }

    /// Decodes [`InclusionProof::to_bytes`].
    ///
    /// # Errors
    /// [`MerkleError::Encoding`] for a wrong length or more than
    /// [`PROOF_DEPTH_MAX`] siblings.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MerkleError> {
        let (head, rest) = bytes.split_at_checked(5).ok_or(MerkleError::Encoding)?;
        let index = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let k = usize::from(head[4]);
        if k > PROOF_DEPTH_MAX || rest.len() != 32 * k {
            return Err(MerkleError::Encoding);
        }
        let siblings = rest
            .chunks_exact(32)
            .map(|c| {
                let mut s = [0u8; 32];
                s.copy_from_slice(c);
                s
            })
            .collect();
        Ok(InclusionProof { index, siblings })
    }
}
