//! Cofactored Ed25519 verification of bundle signatures, one at a time or a
//! run at once (`spec/envelope.md` §11).
//!
//! A signature `(R, S)` by key `A` over `msg` is valid when the encodings are
//! strict (canonical `A` and `R`, neither of small order, `S < ℓ`) and
//!
//! ```text
//! [8]([S]B − R − [k]A) = 𝒪,    k = SHA-512(R ‖ A ‖ msg) mod ℓ.
//! ```
//!
//! Because the cofactor clears every torsion component, this single check and
//! the random linear combination of many,
//!
//! ```text
//! [8]([−Σ zᵢSᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢkᵢ]Aᵢ) = 𝒪,
//! ```
//!
//! agree except with probability about 2⁻¹²⁸ per run: a run that passes has
//! (overwhelmingly) only valid signatures, and one that fails is bisected
//! ([`verify_each`]) down to the signatures that fail alone, so a bad
//! signature never changes another's verdict and costs its run about
//! `log₂(run)` half-size checks rather than one single check per member. The `zᵢ` are
//! 128-bit values derived with blake3 from everything the run checks, so the
//! verdicts are a function of the input bytes alone.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};

use super::receipt::ed25519_y_is_canonical;

/// blake3 `derive_key` context for the batch coefficients.
const DOMAIN_COEFFICIENTS: &str = "sealbatch v1 ed25519 batch coefficients";

/// One signature, decoded and hashed, waiting to be checked.
#[derive(Clone, Debug)]
pub(crate) struct PendingSignature {
    a: EdwardsPoint,
    a_bytes: [u8; 32],
    r: EdwardsPoint,
    r_bytes: [u8; 32],
    s: Scalar,
    k: Scalar,
}

impl PendingSignature {
    /// Decodes `signature` by `key` over `message`: `None` when `R` is not a
    /// canonical encoding of a point outside the small-order subgroup, or `S`
    /// is not below `ℓ`. `key` must come from
    /// [`decode_ed25519_public`](super::receipt::decode_ed25519_public),
    /// which applies the same rules to `A`.
    pub(crate) fn new(
        key: &VerifyingKey,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Option<PendingSignature> {
        let mut r_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&signature[..32]);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&signature[32..]);
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        if !ed25519_y_is_canonical(&r_bytes) {
            return None;
        }
        let r = CompressedEdwardsY(r_bytes).decompress()?;
        if r.is_small_order() {
            return None;
        }
        let a_bytes = key.to_bytes();
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(a_bytes);
        h.update(message);
        let digest: [u8; 64] = h.finalize().into();
        Some(PendingSignature {
            a: key.to_edwards(),
            a_bytes,
            r,
            r_bytes,
            s,
            k: Scalar::from_bytes_mod_order_wide(&digest),
        })
    }

    /// The single cofactored check.
    pub(crate) fn verify(&self) -> bool {
        let sb_minus_ka =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-self.a, &self.s);
        (sb_minus_ka - self.r).mul_by_cofactor().is_identity()
    }
}

/// The verdict of each signature of `run`, equal to its single check
/// ([`PendingSignature::verify`]): the run is checked as one combination
/// and, if it fails, bisected. A half that passes clears its members; when
/// the left half passes, the right one must hold an invalid signature (else
/// the whole would have passed) and is split without being checked; a lone
/// signature is decided by its single check.
pub(crate) fn verify_each(run: &[PendingSignature]) -> Vec<bool> {
    let mut verdicts = vec![true; run.len()];
    if !verify_run(run) {
        bisect(run, &mut verdicts);
    }
    verdicts
}

/// Bisects `run`, known to fail as a whole, writing the verdicts of its
/// members into `verdicts` (all `true` on entry).
fn bisect(run: &[PendingSignature], verdicts: &mut [bool]) {
    if let [one] = run {
        verdicts[0] = one.verify();
        return;
    }
    let mid = run.len() / 2;
    let (left, right) = run.split_at(mid);
    let (left_verdicts, right_verdicts) = verdicts.split_at_mut(mid);
    if verify_run(left) {
        bisect(right, right_verdicts);
    } else {
        bisect(left, left_verdicts);
        if !verify_run(right) {
            bisect(right, right_verdicts);
        }
    }
}

/// Whether every signature of `run` verifies, checked as one random linear
/// combination; signatures under the same key share one term. An empty run
/// verifies.
pub(crate) fn verify_run(run: &[PendingSignature]) -> bool {
    match run {
        [] => return true,
        [one] => return one.verify(),
        _ => {}
    }
    let mut transcript = blake3::Hasher::new_derive_key(DOMAIN_COEFFICIENTS);
    transcript.update(&(run.len() as u64).to_le_bytes());
    for sig in run {
        transcript.update(&sig.r_bytes);
        transcript.update(&sig.a_bytes);
        transcript.update(sig.s.as_bytes());
        transcript.update(sig.k.as_bytes());
    }
    let mut coefficients = transcript.finalize_xof();

    let mut b_coefficient = Scalar::ZERO;
    let mut scalars: Vec<Scalar> = Vec::with_capacity(2 * run.len() + 1);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(2 * run.len() + 1);
    // Keys in first-seen order, with the index of their term.
    let mut keys: Vec<([u8; 32], usize)> = Vec::new();
    for sig in run {
        let mut z = [0u8; 16];
        coefficients.fill(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        b_coefficient -= z * sig.s;
        scalars.push(z);
        points.push(sig.r);
        let zk = z * sig.k;
        match keys.iter().find(|(bytes, _)| *bytes == sig.a_bytes) {
            Some(&(_, term)) => scalars[term] += zk,
            None => {
                keys.push((sig.a_bytes, scalars.len()));
                scalars.push(zk);
                points.push(sig.a);
            }
        }
    }
    scalars.push(b_coefficient);
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::traits::Identity;
    use ed25519_dalek::{Signer, SigningKey};

    fn pending(key: &SigningKey, msg: &[u8], sig: &[u8; 64]) -> Option<PendingSignature> {
        PendingSignature::new(&key.verifying_key(), msg, sig)
    }

    fn keys(n: u8) -> Vec<SigningKey> {
        (0..n)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect()
    }

    #[test]
    fn valid_signatures_verify_alone_and_in_runs() {
        let keys = keys(5);
        let run: Vec<PendingSignature> = (0..12u8)
            .map(|i| {
                let key = &keys[usize::from(i) % keys.len()];
                let msg = [i; 40];
                pending(key, &msg, &key.sign(&msg).to_bytes()).unwrap()
            })
            .collect();
        assert!(run.iter().all(PendingSignature::verify));
        assert!(verify_run(&run));
        assert!(verify_run(&run[..1]));
        assert!(verify_run(&[]));
    }

    #[test]
    fn one_bad_signature_fails_the_run_and_only_itself() {
        let keys = keys(3);
        let mut run: Vec<PendingSignature> = (0..8u8)
            .map(|i| {
                let key = &keys[usize::from(i) % keys.len()];
                let msg = [i; 16];
                pending(key, &msg, &key.sign(&msg).to_bytes()).unwrap()
            })
            .collect();
        // Signature 5 over a message it did not sign.
        let key = &keys[5 % keys.len()];
        let sig = key.sign(b"something else").to_bytes();
        run[5] = pending(key, &[5; 16], &sig).unwrap();
        assert!(!verify_run(&run));
        let verdicts: Vec<bool> = run.iter().map(PendingSignature::verify).collect();
        assert_eq!(verdicts.iter().filter(|ok| !**ok).count(), 1);
        assert!(!verdicts[5]);
    }

    #[test]
    fn bisection_gives_every_signature_its_single_verdict() {
        let keys = keys(4);
        // Every pattern of bad signatures over runs of 1 to 33, by a seeded
        // choice: none, one, a few, all.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in 1..=33usize {
            for density in [0u64, 1, 4, 16, 64] {
                let run: Vec<PendingSignature> = (0..len)
                    .map(|i| {
                        let key = &keys[i % keys.len()];
                        let msg = [i as u8; 24];
                        let bad = density == 64 || next() % 64 < density;
                        let signed: &[u8] = if bad { b"another message" } else { &msg };
                        pending(key, &msg, &key.sign(signed).to_bytes()).unwrap()
                    })
                    .collect();
                let single: Vec<bool> = run.iter().map(PendingSignature::verify).collect();
                assert_eq!(verify_each(&run), single, "run of {len}, density {density}");
            }
        }
        assert!(verify_each(&[]).is_empty());
    }

    #[test]
    fn bad_encodings_are_refused_before_checking() {
        let key = &keys(1)[0];
        let msg = b"m";
        let good = key.sign(msg).to_bytes();
        // S = ℓ (not canonical).
        let mut high_s = good;
        high_s[32..].copy_from_slice(&[
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ]);
        assert!(pending(key, msg, &high_s).is_none());
        // R = the identity (small order).
        let mut small_r = good;
        small_r[..32].copy_from_slice(&EdwardsPoint::identity().compress().to_bytes());
        assert!(pending(key, msg, &small_r).is_none());
        // R with y = p (non-canonical encoding of y = 0).
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let mut noncanonical_r = good;
        noncanonical_r[..32].copy_from_slice(&p);
        assert!(pending(key, msg, &noncanonical_r).is_none());
    }

    #[test]
    fn the_cofactored_check_accepts_what_verify_strict_accepts() {
        for (i, key) in keys(20).iter().enumerate() {
            let msg = vec![i as u8; i * 7];
            let sig = key.sign(&msg);
            assert!(key.verifying_key().verify_strict(&msg, &sig).is_ok());
            assert!(pending(key, &msg, &sig.to_bytes()).unwrap().verify());
        }
    }

    /// A signature whose `R` carries an order-8 component: the cofactored
    /// rule accepts it (alone and in a run, the same verdict), while
    /// `verify_strict`'s cofactorless equation refuses it.
    #[test]
    fn a_torsion_component_in_r_gets_the_same_verdict_alone_and_in_a_run() {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
        let a = Scalar::from(0x1234_5678_9abc_u64);
        let key = VerifyingKey::from_bytes(&(a * B).compress().to_bytes()).unwrap();
        let msg = b"torsion";
        let r = Scalar::from(0x0fed_cba9_u64);
        let r_point = r * B + EIGHT_TORSION[1];
        let r_bytes = r_point.compress().to_bytes();
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(key.to_bytes());
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());

        assert!(
            key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
                .is_err()
        );
        let torsioned = PendingSignature::new(&key, msg, &sig).unwrap();
        assert!(torsioned.verify());
        let honest_key = &keys(1)[0];
        let honest = pending(honest_key, b"x", &honest_key.sign(b"x").to_bytes()).unwrap();
        assert!(verify_run(&[honest, torsioned]));
    }
}
