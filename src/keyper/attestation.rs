//! Release attestations (`spec/keyper.md` §9): with its share of batch
//! `e`'s key, a keyper sends its Ed25519 signature over the seal it
//! released for,
//!
//! ```text
//! release_msg = DOM("sealbatch v1 keyper release") ‖ committee id (32)
//!             ‖ u64le(e) ‖ u32le(count) ‖ root (32)
//! ```
//!
//! and a batch's result carries `t` of them. The committee id binds the
//! deployment, so an attestation counts for one sequencer's batch only.
//! Whoever checks a result — a trader's client, `verify`, a transcript, the
//! explorer — refuses one whose `(e, count, root)` no `t` keypers attested:
//! a sequencer that obtained `s_e` for one seal cannot publish it with
//! another (a "last look" at the orders).

use ed25519_dalek::{Signature, Signer as _, SigningKey};

use super::committee::{COMMITTEE_MAX, Committee};
use crate::codec::{DecodeError, Reader, Writer};
use crate::envelope::receipt::decode_ed25519_public;
use crate::envelope::{ReleaseAttestation, SealStatement};

/// Domain string of a keyper's release attestation.
pub const DOMAIN_KEYPER_RELEASE: &str = "sealbatch v1 keyper release";

/// Bytes of one encoded attestation: `u16le(keyper) ‖ signature (64)`.
pub const ATTESTATION_LEN: usize = 66;

/// Why a result's attestations do not prove its release.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// Fewer attestations than the threshold.
    #[error("{have} keyper release attestations, the committee's threshold is {need}")]
    TooFew {
        /// How many the result carries.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// Keypers not in strictly ascending order (or one twice).
    #[error("release attestations are not in strictly ascending keyper order")]
    Order,
    /// An index that is no member's.
    #[error("no keyper {0} in the committee")]
    UnknownKeyper(u16),
    /// A signature that does not verify over this seal: the keyper did not
    /// release for it.
    #[error("keyper {0} did not attest this seal")]
    BadSignature(u16),
}

/// The message a keyper signs when it releases its share for `seal`.
#[must_use]
pub fn release_message(committee: &Committee, seal: &SealStatement) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + DOMAIN_KEYPER_RELEASE.len() + 76);
    out.put_u8(DOMAIN_KEYPER_RELEASE.len() as u8);
    out.extend_from_slice(DOMAIN_KEYPER_RELEASE.as_bytes());
    out.extend_from_slice(&committee.id());
    out.put_u64(seal.e.get());
    out.put_u32(seal.count);
    out.extend_from_slice(&seal.root.0);
    out
}

/// A keyper's attestation of `seal` with its signing key.
#[must_use]
pub fn attest(signing: &SigningKey, committee: &Committee, seal: &SealStatement) -> [u8; 64] {
    signing.sign(&release_message(committee, seal)).to_bytes()
}

/// Whether keyper `keyper` signed `signature` over `seal` (strict
/// Ed25519).
#[must_use]
pub fn verify_attestation(
    committee: &Committee,
    seal: &SealStatement,
    keyper: u16,
    signature: &[u8; 64],
) -> bool {
    let Some(member) = committee.member(keyper) else {
        return false;
    };
    let Ok(key) = decode_ed25519_public(&member.signing_key) else {
        return false;
    };
    key.verify_strict(
        &release_message(committee, seal),
        &Signature::from_bytes(signature),
    )
    .is_ok()
}

/// Checks that `attestations` prove `seal`'s release: at least `t`, in
/// strictly ascending keyper order, every one a member's valid signature
/// over this seal.
///
/// # Errors
///
/// [`AttestationError`] for the first problem found.
pub fn check_attestations(
    committee: &Committee,
    seal: &SealStatement,
    attestations: &[ReleaseAttestation],
) -> Result<(), AttestationError> {
    if attestations.len() < committee.threshold() {
        return Err(AttestationError::TooFew {
            have: attestations.len(),
            need: committee.threshold(),
        });
    }
    if !attestations.is_sorted_by(|a, b| a.keyper < b.keyper) {
        return Err(AttestationError::Order);
    }
    let message = release_message(committee, seal);
    for a in attestations {
        let member = committee
            .member(a.keyper)
            .ok_or(AttestationError::UnknownKeyper(a.keyper))?;
        let key = decode_ed25519_public(&member.signing_key)
            .map_err(|_| AttestationError::BadSignature(a.keyper))?;
        key.verify_strict(&message, &Signature::from_bytes(&a.signature))
            .map_err(|_| AttestationError::BadSignature(a.keyper))?;
    }
    Ok(())
}

/// Appends `u16le(a) ‖ a × (u16le(keyper) ‖ signature (64))`.
pub fn encode_attestations(out: &mut Vec<u8>, attestations: &[ReleaseAttestation]) {
    // At most COMMITTEE_MAX: the decoder and every producer bound it.
    out.put_u16(attestations.len().min(usize::from(u16::MAX)) as u16);
    for a in attestations {
        out.put_u16(a.keyper);
        out.extend_from_slice(&a.signature);
    }
}

/// Reads [`encode_attestations`]: at most [`COMMITTEE_MAX`], keypers
/// non-zero and strictly ascending (signatures are checked by
/// [`check_attestations`], against a committee).
///
/// # Errors
///
/// [`DecodeError`] naming the field.
pub fn decode_attestations(r: &mut Reader<'_>) -> Result<Vec<ReleaseAttestation>, DecodeError> {
    let offset = r.offset();
    let count = usize::from(r.u16("attestation count")?);
    if count > COMMITTEE_MAX {
        return Err(r.invalid("attestation count", offset));
    }
    let mut out: Vec<ReleaseAttestation> = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = r.offset();
        let keyper = r.u16("attesting keyper")?;
        if keyper == 0 || out.last().is_some_and(|last| last.keyper >= keyper) {
            return Err(r.invalid("attesting keyper", offset));
        }
        out.push(ReleaseAttestation {
            keyper,
            signature: r.array("attestation signature")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{BatchSchedule, DeploymentId, MerkleRoot};
    use crate::keyper::Member;
    use crate::types::BatchId;

    fn committee(n: u8, t: usize) -> (Committee, Vec<SigningKey>) {
        let keys: Vec<SigningKey> = (1..=n).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let members = keys
            .iter()
            .map(|k| Member {
                signing_key: k.verifying_key().to_bytes(),
                encryption_key: curve25519_dalek::RistrettoPoint::mul_base(
                    &curve25519_dalek::Scalar::from(7u8),
                )
                .compress()
                .to_bytes(),
            })
            .collect();
        let deployment = DeploymentId::new(
            &[0x11; 32],
            &BatchSchedule {
                genesis_ms: 1,
                batch_length_ms: 100,
            },
        );
        let committee = Committee::new(t, members, deployment).unwrap();
        let mut keys = keys;
        keys.sort_by_key(|k| committee.index_of(&k.verifying_key().to_bytes()));
        (committee, keys)
    }

    #[test]
    fn t_attestations_of_one_seal_check_and_nothing_else_does() {
        let (committee, keys) = committee(5, 3);
        let seal = SealStatement {
            e: BatchId(7),
            count: 3,
            root: MerkleRoot([9; 32]),
        };
        let other = SealStatement {
            root: MerkleRoot([8; 32]),
            ..seal
        };
        let att = |j: u16, s: &SealStatement| ReleaseAttestation {
            keyper: j,
            signature: attest(&keys[usize::from(j) - 1], &committee, s),
        };
        let good: Vec<_> = [1, 3, 5].iter().map(|&j| att(j, &seal)).collect();
        assert_eq!(check_attestations(&committee, &seal, &good), Ok(()));
        // The same attestations do not prove another root.
        assert_eq!(
            check_attestations(&committee, &other, &good),
            Err(AttestationError::BadSignature(1))
        );
        // Too few, out of order, a repeat, a keyper's signature under
        // another's index.
        assert!(matches!(
            check_attestations(&committee, &seal, &good[..2]),
            Err(AttestationError::TooFew { have: 2, need: 3 })
        ));
        let reversed: Vec<_> = good.iter().rev().copied().collect();
        assert_eq!(
            check_attestations(&committee, &seal, &reversed),
            Err(AttestationError::Order)
        );
        let repeated = vec![good[0], good[0], good[1]];
        assert_eq!(
            check_attestations(&committee, &seal, &repeated),
            Err(AttestationError::Order)
        );
        let mut swapped = good.clone();
        swapped[1].signature = good[2].signature;
        assert_eq!(
            check_attestations(&committee, &seal, &swapped),
            Err(AttestationError::BadSignature(3))
        );
        let mut unknown = good.clone();
        unknown[2].keyper = 6;
        assert_eq!(
            check_attestations(&committee, &seal, &unknown),
            Err(AttestationError::UnknownKeyper(6))
        );
        // The encoding round-trips and refuses disorder.
        let mut bytes = Vec::new();
        encode_attestations(&mut bytes, &good);
        assert_eq!(bytes.len(), 2 + 3 * ATTESTATION_LEN);
        let mut r = Reader::new(&bytes);
        assert_eq!(decode_attestations(&mut r).unwrap(), good);
        let mut bytes = Vec::new();
        encode_attestations(&mut bytes, &reversed);
        assert!(decode_attestations(&mut Reader::new(&bytes)).is_err());
    }
}
