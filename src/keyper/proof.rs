//! Schnorr proofs of knowledge of a discrete logarithm, bound to a context:
//! a dealer proves it knows the secret `a_0` behind its commitment
//! `C_0 = a_0·G` for exactly one (committee, window, batch, dealer), so a
//! commitment copied from another dealer, batch or window does not verify.
//!
//! `R = k·G`, `c = H(context ‖ A ‖ R)`, `z = k + c·a`; valid iff
//! `z·G = R + c·A`. `H` is BLAKE3 in derive-key mode
//! ([`DOMAIN_PROOF`]), 64 bytes reduced modulo the group order.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::sharing::random_scalar;

/// BLAKE3 derive-key context of a proof's challenge.
pub const DOMAIN_PROOF: &str = "sealbatch v1 keyper proof of knowledge";

/// Bytes of an encoded [`Proof`]: `R (32) ‖ z (32)`.
pub const PROOF_LEN: usize = 64;

/// A Schnorr proof of knowledge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The commitment `R = k·G`, compressed.
    pub r: [u8; 32],
    /// The response `z = k + c·a`, canonical.
    pub z: [u8; 32],
}

fn challenge(context: &[u8], public: &RistrettoPoint, r: &[u8; 32]) -> Scalar {
    let mut h = blake3::Hasher::new_derive_key(DOMAIN_PROOF);
    h.update(&(context.len() as u64).to_le_bytes());
    h.update(context);
    h.update(public.compress().as_bytes());
    h.update(r);
    let mut wide = [0u8; 64];
    h.finalize_xof().fill(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

impl Proof {
    /// Proves knowledge of `secret` (whose image is `secret·G`) for
    /// `context`.
    pub fn prove<R: CryptoRngCore + ?Sized>(rng: &mut R, secret: &Scalar, context: &[u8]) -> Proof {
        let k = Zeroizing::new(random_scalar(rng));
        let r = RistrettoPoint::mul_base(&k).compress().to_bytes();
        let c = challenge(context, &RistrettoPoint::mul_base(secret), &r);
        let z = *k + c * secret;
        Proof { r, z: z.to_bytes() }
    }

    /// Whether this proves knowledge of the logarithm of `public` for
    /// `context` (a non-canonical `R` or `z` never verifies).
    #[must_use]
    pub fn verify(&self, public: &RistrettoPoint, context: &[u8]) -> bool {
        let Some(r) = CompressedRistretto(self.r).decompress() else {
            return false;
        };
        let Some(z) = Option::<Scalar>::from(Scalar::from_canonical_bytes(self.z)) else {
            return false;
        };
        let c = challenge(context, public, &self.r);
        RistrettoPoint::mul_base(&z) == r + c * public
    }

    /// `R ‖ z`.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; PROOF_LEN] {
        let mut out = [0u8; PROOF_LEN];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.z);
        out
    }

    /// Splits `R ‖ z` (checked only by [`verify`](Self::verify)).
    #[must_use]
    pub fn from_bytes(bytes: &[u8; PROOF_LEN]) -> Proof {
        let mut r = [0u8; 32];
        let mut z = [0u8; 32];
        r.copy_from_slice(&bytes[..32]);
        z.copy_from_slice(&bytes[32..]);
        Proof { r, z }
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn a_proof_verifies_only_for_its_key_and_context() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let a = crate::keyper::sharing::random_scalar(&mut rng);
        let public = RistrettoPoint::mul_base(&a);
        let proof = Proof::prove(&mut rng, &a, b"window 1 batch 7 dealer 2");
        assert!(proof.verify(&public, b"window 1 batch 7 dealer 2"));
        assert!(!proof.verify(&public, b"window 2 batch 7 dealer 2"));
        assert!(!proof.verify(&(public + public), b"window 1 batch 7 dealer 2"));
        let mut unreduced = proof;
        unreduced.z = [0xff; 32];
        assert!(!unreduced.verify(&public, b"window 1 batch 7 dealer 2"));
        assert_eq!(Proof::from_bytes(&proof.to_bytes()), proof);
    }
}
