//! Commit certificates (`spec/replication.md` §12): each replica of a
//! replicated sequencer signs, with its own commit key, the seals it
//! applied from the committed log; a seal with the signatures of a majority
//! of the replicas a keyper was configured with is one the cluster
//! committed. Keypers release a batch's share only for such a seal, so a
//! deposed leader — which still holds the sequencer key and can sign any
//! seal — cannot obtain a release for a root the cluster did not commit:
//! two majorities share a replica, and an honest replica signs only the one
//! seal of a batch its committed log holds.
//!
//! The committee's key-generation log is certified the same way
//! (`spec/keyper.md` §13): a replica signs a run of log entries — each by
//! its position and hash — only if its committed log holds exactly those
//! entries at those positions, and a keyper of a replicated sequencer takes
//! an entry only under a majority's signatures. A replica that was
//! compromised (or a deposed leader) can then serve keypers no entry the
//! cluster did not commit: no window of its own, no phase ended early.
//!
//! Pure: the keys, the signed statements, a certificate's bytes and the
//! majority check. Which seals and entries a replica attests — those its
//! committed log holds — is the replica's (`replica::certificate`).

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::envelope::receipt::decode_ed25519_public;
use crate::envelope::{MerkleRoot, SignedSeal};
use crate::types::BatchId;

/// The domain of a replica's attestation (`DOM`, `spec/envelope.md` §2).
pub const DOMAIN_COMMITTED_SEAL: &str = "sealbatch v1 committed seal";

/// The domain of a replica's attestation of committee log entries.
pub const DOMAIN_COMMITTED_LOG: &str = "sealbatch v1 committed keyper log";

/// The domain of a log entry's hash in that statement.
pub const DOMAIN_LOG_ENTRY: &str = "sealbatch v1 keyper log entry";

/// Most entries one log attestation covers (as many as one read of the
/// log returns).
pub const LOG_ATTESTED_MAX: usize = 64;

/// Most attestations one certificate carries (as many replicas as a
/// schedule lists).
pub const CERTIFICATE_SIGNERS_MAX: usize = 64;

/// Bytes of one attestation: the replica's commit key and its signature.
pub const ATTESTATION_LEN: usize = 32 + 64;

/// What a replica signs for a committed seal of the sequencer with key
/// `sequencer`: `DOM ‖ sequencer ‖ u64le(e) ‖ u32le(count) ‖ root`.
#[must_use]
pub fn committed_seal_message(
    sequencer: &[u8; 32],
    e: BatchId,
    count: u32,
    root: &MerkleRoot,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(1 + DOMAIN_COMMITTED_SEAL.len() + 32 + 44);
    m.push(DOMAIN_COMMITTED_SEAL.len() as u8);
    m.extend_from_slice(DOMAIN_COMMITTED_SEAL.as_bytes());
    m.extend_from_slice(sequencer);
    m.extend_from_slice(&e.to_le_bytes());
    m.extend_from_slice(&count.to_le_bytes());
    m.extend_from_slice(&root.0);
    m
}

/// A committee log entry's hash: `BLAKE3(u8(len) ‖ "sealbatch v1 keyper
/// log entry" ‖ entry)`, over the entry's encoding (`spec/keyper.md` §11).
#[must_use]
pub fn log_entry_hash(entry: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[DOMAIN_LOG_ENTRY.len() as u8]);
    hasher.update(DOMAIN_LOG_ENTRY.as_bytes());
    hasher.update(entry);
    *hasher.finalize().as_bytes()
}

/// What a replica signs for a run of entries its committed log holds:
/// `u8(len) ‖ "sealbatch v1 committed keyper log" ‖ sequencer ‖ committee
/// id ‖ u32le(count) ‖ count × (u64le(position) ‖ entry hash)`, the
/// entries by ascending position ([`log_entry_hash`]).
#[must_use]
pub fn committed_log_message(
    sequencer: &[u8; 32],
    committee: &[u8; 32],
    entries: &[(u64, [u8; 32])],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(1 + DOMAIN_COMMITTED_LOG.len() + 68 + entries.len() * 40);
    m.push(DOMAIN_COMMITTED_LOG.len() as u8);
    m.extend_from_slice(DOMAIN_COMMITTED_LOG.as_bytes());
    m.extend_from_slice(sequencer);
    m.extend_from_slice(committee);
    // A run is at most LOG_ATTESTED_MAX entries (checked where one is
    // asked for); the count is written as it is.
    m.extend_from_slice(
        &u32::try_from(entries.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (position, hash) in entries {
        m.extend_from_slice(&position.to_le_bytes());
        m.extend_from_slice(hash);
    }
    m
}

/// One replica's signature over a committed seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The replica's commit key (Ed25519, public).
    pub replica: [u8; 32],
    /// Its signature over [`committed_seal_message`].
    pub signature: [u8; 64],
}

impl Attestation {
    /// The 96 bytes: key ‖ signature.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; ATTESTATION_LEN] {
        let mut out = [0u8; ATTESTATION_LEN];
        out[..32].copy_from_slice(&self.replica);
        out[32..].copy_from_slice(&self.signature);
        out
    }

    /// From its 96 bytes.
    #[must_use]
    pub fn from_bytes(bytes: &[u8; ATTESTATION_LEN]) -> Attestation {
        let mut replica = [0u8; 32];
        let mut signature = [0u8; 64];
        replica.copy_from_slice(&bytes[..32]);
        signature.copy_from_slice(&bytes[32..]);
        Attestation { replica, signature }
    }

    /// Whether it is a strict, valid signature by its key over `seal`.
    #[must_use]
    pub fn verifies(&self, sequencer: &[u8; 32], seal: &SignedSeal) -> bool {
        self.verifies_message(&committed_seal_message(
            sequencer, seal.e, seal.count, &seal.root,
        ))
    }

    /// Whether it is a strict, valid signature by its key over `message`
    /// (a [`committed_seal_message`] or a [`committed_log_message`]).
    #[must_use]
    pub fn verifies_message(&self, message: &[u8]) -> bool {
        let Ok(key) = decode_ed25519_public(&self.replica) else {
            return false;
        };
        key.verify_strict(message, &Signature::from_bytes(&self.signature))
            .is_ok()
    }
}

/// A replica's commit key: it signs only seals its committed log holds.
pub struct CommitKey(SigningKey);

impl std::fmt::Debug for CommitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CommitKey")
            .field(&hex::encode(self.public()))
            .finish()
    }
}

impl CommitKey {
    /// The key with this 32-byte seed.
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> CommitKey {
        CommitKey(SigningKey::from_bytes(seed))
    }

    /// Its public half, as keypers are configured with it.
    #[must_use]
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Its attestation of `(e, count, root)` for the sequencer `sequencer`.
    #[must_use]
    pub fn attest(
        &self,
        sequencer: &[u8; 32],
        e: BatchId,
        count: u32,
        root: &MerkleRoot,
    ) -> Attestation {
        Attestation {
            replica: self.public(),
            signature: self
                .0
                .sign(&committed_seal_message(sequencer, e, count, root))
                .to_bytes(),
        }
    }

    /// Its attestation of a run of committee log entries
    /// ([`committed_log_message`]).
    #[must_use]
    pub fn attest_log(
        &self,
        sequencer: &[u8; 32],
        committee: &[u8; 32],
        entries: &[(u64, [u8; 32])],
    ) -> Attestation {
        Attestation {
            replica: self.public(),
            signature: self
                .0
                .sign(&committed_log_message(sequencer, committee, entries))
                .to_bytes(),
        }
    }
}

/// Why a certificate is not one the cluster committed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Its bytes are not a certificate.
    #[error("malformed commit certificate: {0}")]
    Malformed(&'static str),
    /// Fewer valid signatures of configured replicas than a majority.
    #[error(
        "commit certificate of batch {e}: {valid} valid signatures of configured replicas, {needed} needed"
    )]
    TooFew {
        /// The batch.
        e: BatchId,
        /// Valid signatures by configured replicas.
        valid: usize,
        /// A majority of the configured replicas.
        needed: usize,
    },
    /// A run of log entries with fewer valid signatures of configured
    /// replicas than a majority.
    #[error(
        "commit certificate of {count} log entries from position {first}: {valid} valid signatures of configured replicas, {needed} needed"
    )]
    LogTooFew {
        /// The first entry's position.
        first: u64,
        /// How many entries.
        count: usize,
        /// Valid signatures by configured replicas.
        valid: usize,
        /// A majority of the configured replicas.
        needed: usize,
    },
}

/// A seal's commit certificate: attestations by distinct replicas, in
/// ascending order of their keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitCertificate {
    attestations: Vec<Attestation>,
}

impl CommitCertificate {
    /// A certificate of `attestations` (sorted, one per key, at most
    /// [`CERTIFICATE_SIGNERS_MAX`]: the first per key is kept, the rest
    /// dropped).
    #[must_use]
    pub fn new(attestations: impl IntoIterator<Item = Attestation>) -> CommitCertificate {
        let mut by_key: BTreeMap<[u8; 32], Attestation> = BTreeMap::new();
        for a in attestations {
            by_key.entry(a.replica).or_insert(a);
        }
        CommitCertificate {
            attestations: by_key.into_values().take(CERTIFICATE_SIGNERS_MAX).collect(),
        }
    }

    /// Its attestations, ascending by key.
    #[must_use]
    pub fn attestations(&self) -> &[Attestation] {
        &self.attestations
    }

    /// `u8(count) ‖ count × (key ‖ signature)`.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.attestations.len() * ATTESTATION_LEN);
        // At most CERTIFICATE_SIGNERS_MAX (64) by construction.
        out.push(self.attestations.len() as u8);
        for a in &self.attestations {
            out.extend_from_slice(&a.to_bytes());
        }
        out
    }

    /// From its bytes: a count of 1 ..= 64, keys strictly ascending, no
    /// trailing bytes.
    ///
    /// # Errors
    ///
    /// [`CertificateError::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<CommitCertificate, CertificateError> {
        let (&count, rest) = bytes
            .split_first()
            .ok_or(CertificateError::Malformed("empty"))?;
        let count = usize::from(count);
        if count == 0 || count > CERTIFICATE_SIGNERS_MAX {
            return Err(CertificateError::Malformed("count outside 1..=64"));
        }
        if rest.len() != count * ATTESTATION_LEN {
            return Err(CertificateError::Malformed("length is not the count's"));
        }
        let attestations: Vec<Attestation> = rest
            .chunks_exact(ATTESTATION_LEN)
            .filter_map(|chunk| <&[u8; ATTESTATION_LEN]>::try_from(chunk).ok())
            .map(Attestation::from_bytes)
            .collect();
        if attestations
            .windows(2)
            .any(|w| w[0].replica >= w[1].replica)
        {
            return Err(CertificateError::Malformed("keys not strictly ascending"));
        }
        Ok(CommitCertificate { attestations })
    }
}

/// The replicas a keyper was configured with: a seal needs valid
/// attestations by more than half of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSet {
    keys: BTreeSet<[u8; 32]>,
}

impl ReplicaSet {
    /// The set of these commit keys (duplicates count once); `None` if it
    /// is empty, larger than [`CERTIFICATE_SIGNERS_MAX`], or a key is not a
    /// strict Ed25519 key.
    #[must_use]
    pub fn new(keys: impl IntoIterator<Item = [u8; 32]>) -> Option<ReplicaSet> {
        let keys: BTreeSet<[u8; 32]> = keys.into_iter().collect();
        let valid = keys.iter().all(|k| decode_ed25519_public(k).is_ok());
        (valid && !keys.is_empty() && keys.len() <= CERTIFICATE_SIGNERS_MAX)
            .then_some(ReplicaSet { keys })
    }

    /// How many valid attestations a certificate needs: ⌊n/2⌋ + 1.
    #[must_use]
    pub fn majority(&self) -> usize {
        self.keys.len() / 2 + 1
    }

    /// Checks that a majority of the set signed `seal` (of the sequencer
    /// with key `sequencer`). Attestations by other keys, and invalid ones,
    /// count for nothing.
    ///
    /// # Errors
    ///
    /// [`CertificateError::TooFew`].
    pub fn check(
        &self,
        sequencer: &[u8; 32],
        seal: &SignedSeal,
        certificate: &CommitCertificate,
    ) -> Result<(), CertificateError> {
        let message = committed_seal_message(sequencer, seal.e, seal.count, &seal.root);
        let (valid, needed) = self.count(&message, certificate);
        if valid >= needed {
            return Ok(());
        }
        Err(CertificateError::TooFew {
            e: seal.e,
            valid,
            needed,
        })
    }

    /// Checks that a majority of the set signed the run of committee log
    /// `entries` (position and hash each, ascending) of the sequencer
    /// `sequencer` and the committee `committee`.
    ///
    /// # Errors
    ///
    /// [`CertificateError::LogTooFew`].
    pub fn check_log(
        &self,
        sequencer: &[u8; 32],
        committee: &[u8; 32],
        entries: &[(u64, [u8; 32])],
        certificate: &CommitCertificate,
    ) -> Result<(), CertificateError> {
        let message = committed_log_message(sequencer, committee, entries);
        let (valid, needed) = self.count(&message, certificate);
        if valid >= needed {
            return Ok(());
        }
        Err(CertificateError::LogTooFew {
            first: entries.first().map_or(0, |(p, _)| *p),
            count: entries.len(),
            valid,
            needed,
        })
    }

    /// Valid signatures over `message` by distinct replicas of the set
    /// (counted up to the majority), and the majority.
    fn count(&self, message: &[u8], certificate: &CommitCertificate) -> (usize, usize) {
        let needed = self.majority();
        // Each replica counts once, whatever the certificate's constructor
        // did: a repeated signer is not a second replica.
        let mut signers: Vec<&[u8; 32]> = Vec::new();
        for a in &certificate.attestations {
            if self.keys.contains(&a.replica)
                && !signers.contains(&&a.replica)
                && a.verifies_message(message)
            {
                signers.push(&a.replica);
                if signers.len() >= needed {
                    break;
                }
            }
        }
        (signers.len(), needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQUENCER: [u8; 32] = [9; 32];

    fn seal(e: BatchId, root: u8) -> SignedSeal {
        SignedSeal {
            e,
            count: 3,
            root: MerkleRoot([root; 32]),
            signature: [0; 64],
        }
    }

    fn keys(n: u8) -> Vec<CommitKey> {
        (1..=n).map(|i| CommitKey::from_seed(&[i; 32])).collect()
    }

    fn attest(key: &CommitKey, s: &SignedSeal) -> Attestation {
        key.attest(&SEQUENCER, s.e, s.count, &s.root)
    }

    #[test]
    fn a_replica_signing_twice_counts_once() {
        let replicas = keys(3);
        let set = ReplicaSet::new(replicas.iter().map(CommitKey::public)).unwrap();
        let s = seal(BatchId(7), 1);
        // Built past the constructors (which drop repeats): the check
        // itself counts each replica once.
        let twice = CommitCertificate {
            attestations: vec![attest(&replicas[0], &s), attest(&replicas[0], &s)],
        };
        assert_eq!(
            set.check(&SEQUENCER, &s, &twice),
            Err(CertificateError::TooFew {
                e: BatchId(7),
                valid: 1,
                needed: 2
            })
        );
    }

    #[test]
    fn a_majority_of_the_configured_replicas_certifies_a_seal() {
        let replicas = keys(3);
        let set = ReplicaSet::new(replicas.iter().map(CommitKey::public)).unwrap();
        assert_eq!(set.majority(), 2);
        let s = seal(BatchId(7), 1);
        let two = CommitCertificate::new(replicas[..2].iter().map(|k| attest(k, &s)));
        assert_eq!(set.check(&SEQUENCER, &s, &two), Ok(()));
        let one = CommitCertificate::new([attest(&replicas[2], &s)]);
        let too_few = Err(CertificateError::TooFew {
            e: BatchId(7),
            valid: 1,
            needed: 2,
        });
        assert_eq!(set.check(&SEQUENCER, &s, &one), too_few);
        // A stranger's signature, the same replica twice, a signature over
        // another root or batch or for another sequencer: none counts.
        let stranger = CommitKey::from_seed(&[99; 32]);
        let with_stranger =
            CommitCertificate::new([attest(&replicas[2], &s), attest(&stranger, &s)]);
        assert_eq!(set.check(&SEQUENCER, &s, &with_stranger), too_few);
        let twice = CommitCertificate::new([attest(&replicas[2], &s), attest(&replicas[2], &s)]);
        assert_eq!(twice.attestations().len(), 1);
        let other_root = CommitCertificate::new([
            attest(&replicas[2], &s),
            attest(&replicas[0], &seal(BatchId(7), 2)),
        ]);
        assert_eq!(set.check(&SEQUENCER, &s, &other_root), too_few);
        let other_batch = CommitCertificate::new([
            attest(&replicas[2], &s),
            attest(&replicas[0], &seal(BatchId(8), 1)),
        ]);
        assert_eq!(set.check(&SEQUENCER, &s, &other_batch), too_few);
        let other_sequencer = CommitCertificate::new([
            attest(&replicas[2], &s),
            replicas[0].attest(&[8; 32], s.e, s.count, &s.root),
        ]);
        assert_eq!(set.check(&SEQUENCER, &s, &other_sequencer), too_few);
        // A signature with a bit flipped.
        let mut forged = attest(&replicas[0], &s);
        forged.signature[5] ^= 1;
        let forged = CommitCertificate::new([attest(&replicas[2], &s), forged]);
        assert_eq!(set.check(&SEQUENCER, &s, &forged), too_few);
        // The same signatures do not certify another root of the batch.
        assert!(set.check(&SEQUENCER, &seal(BatchId(7), 2), &two).is_err());
    }

    #[test]
    fn majorities_of_even_and_odd_sets() {
        for (n, majority) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (64, 33)] {
            let set = ReplicaSet::new(keys(n).iter().map(CommitKey::public)).unwrap();
            assert_eq!(set.majority(), majority, "{n}");
        }
        assert!(ReplicaSet::new([]).is_none());
        assert!(ReplicaSet::new(keys(65).iter().map(CommitKey::public)).is_none());
        // The identity point is not a strict key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(ReplicaSet::new([identity]).is_none());
    }

    #[test]
    fn certificate_bytes_round_trip_and_malformed_ones_are_refused() {
        let replicas = keys(3);
        let s = seal(BatchId(1), 1);
        let cert = CommitCertificate::new(replicas.iter().map(|k| attest(k, &s)));
        let bytes = cert.to_bytes();
        assert_eq!(bytes.len(), 1 + 3 * ATTESTATION_LEN);
        assert_eq!(CommitCertificate::from_bytes(&bytes), Ok(cert.clone()));
        let malformed = |b: &[u8]| {
            matches!(
                CommitCertificate::from_bytes(b),
                Err(CertificateError::Malformed(_))
            )
        };
        assert!(malformed(&[]));
        assert!(malformed(&[0]));
        assert!(malformed(&[65]));
        assert!(malformed(&bytes[..bytes.len() - 1]));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(malformed(&trailing));
        // The same attestation twice, or out of order.
        let mut twice = vec![2];
        twice.extend_from_slice(&bytes[1..1 + ATTESTATION_LEN]);
        twice.extend_from_slice(&bytes[1..1 + ATTESTATION_LEN]);
        assert!(malformed(&twice));
        let mut swapped = vec![2];
        swapped.extend_from_slice(&bytes[1 + ATTESTATION_LEN..1 + 2 * ATTESTATION_LEN]);
        swapped.extend_from_slice(&bytes[1..1 + ATTESTATION_LEN]);
        assert!(malformed(&swapped));
    }

    /// The test vector of `spec/replication.md` §12.
    #[test]
    fn the_spec_vector() {
        let sequencer = [9u8; 32];
        let root = MerkleRoot([0xab; 32]);
        assert_eq!(
            hex::encode(committed_seal_message(&sequencer, BatchId(5), 3, &root)),
            "1b7365616c626174636820763120636f6d6d6974746564207365616c\
             0909090909090909090909090909090909090909090909090909090909090909\
             0500000000000000\
             03000000\
             abababababababababababababababababababababababababababababababab"
        );
        let certificate = CommitCertificate::new(
            [1u8, 2]
                .map(|i| CommitKey::from_seed(&[i; 32]).attest(&sequencer, BatchId(5), 3, &root)),
        );
        let expected = "02\
            8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394\
            29c89fa12308034a5dd53cb5a35f5c4924a584816fbfc8fa70a9cb37fde2250e\
            bcbba1ec59e898769a2a9d6a514dad70685811f83402377c4bc5c3604dfada00\
            8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\
            057c98022e7a52008ccd60b225245780b19050af6ddefb019273f3b48f6160ee\
            2995ea7758a76e032747fa74bdc3e999e2e688083b673c73cd45ae9f3cd8c20a";
        assert_eq!(hex::encode(certificate.to_bytes()), expected);
        let seal = SignedSeal {
            e: BatchId(5),
            count: 3,
            root,
            signature: [0; 64],
        };
        let set =
            ReplicaSet::new([1u8, 2, 3].map(|i| CommitKey::from_seed(&[i; 32]).public())).unwrap();
        assert_eq!(set.check(&sequencer, &seal, &certificate), Ok(()));
    }

    #[test]
    fn the_log_spec_vector() {
        let sequencer = [9u8; 32];
        let committee = [0x0c; 32];
        let hash = log_entry_hash(&[0, 1, 2]);
        assert_eq!(
            hex::encode(hash),
            "329c397496c88012d48eaac3d85c3384d7030e6f5a923548e2f68d52a32e6fce"
        );
        let entries = [(7u64, hash), (9, log_entry_hash(&[3]))];
        let message = committed_log_message(&sequencer, &committee, &entries);
        assert_eq!(
            hex::encode(&message),
            "217365616c626174636820763120636f6d6d6974746564206b6579706572206c6f67\
             0909090909090909090909090909090909090909090909090909090909090909\
             0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c\
             02000000\
             0700000000000000\
             329c397496c88012d48eaac3d85c3384d7030e6f5a923548e2f68d52a32e6fce\
             0900000000000000\
             e2e6425eff2c4671d35d9a75569d52a44a83ad284528f1c6b467f99ff32012b7"
        );
        let certificate =
            CommitCertificate::new([1u8, 2].map(|i| {
                CommitKey::from_seed(&[i; 32]).attest_log(&sequencer, &committee, &entries)
            }));
        assert_eq!(
            hex::encode(certificate.to_bytes()),
            "02\
             8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394\
             766573e0baa759ad2c0441e1a63731cabe63ce6fc409706b3f01a3dccf390d82\
             49f10b338382531b290f239861780dbce55d1c12e0880b509c4cd0f1cf99dd0c\
             8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\
             6ee1277e625c733dc8569a714878872e8bc4ea6a000427986b23a163388c73c2\
             4d6c0c2c0dd11a33a9842fd83a2202eb43504cefd8b1a7efe38a0e0e59d58900"
        );
        let set =
            ReplicaSet::new([1u8, 2, 3].map(|i| CommitKey::from_seed(&[i; 32]).public())).unwrap();
        assert_eq!(
            set.check_log(&sequencer, &committee, &entries, &certificate),
            Ok(())
        );
        // One entry fewer, or another committee: not certified.
        assert!(
            set.check_log(&sequencer, &committee, &entries[..1], &certificate)
                .is_err()
        );
        assert!(
            set.check_log(&sequencer, &[0x0d; 32], &entries, &certificate)
                .is_err()
        );
    }
}
