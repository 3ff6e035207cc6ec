//! Shamir sharing over the ristretto255 scalar field with Feldman
//! commitments: a dealer's secret polynomial, its public commitments, share
//! checks against them, and Lagrange interpolation at 0.
//!
//! A polynomial of degree `t − 1`, `f(x) = a_0 + a_1·x + … + a_{t−1}·x^{t−1}`,
//! shares its secret `a_0` among keypers `1..=n` as `f(j)`; its commitments
//! are `C_k = a_k·G`, so anyone checks a share with
//! `f(j)·G = Σ_k j^k·C_k` without learning it. Any `t` shares give `a_0` back;
//! `t − 1` say nothing about it.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity, VartimeMultiscalarMul};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A keyper's index in its committee: `1..=n` (never 0: `f(0)` is the
/// secret).
pub type KeyperIndex = u16;

/// Why shares cannot be combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// Index 0 is the secret's, never a share's.
    #[error("share index 0")]
    ZeroIndex,
    /// Two shares with one index.
    #[error("two shares with index {0}")]
    DuplicateIndex(KeyperIndex),
    /// No shares.
    #[error("no shares to combine")]
    Empty,
}

/// A uniformly random scalar: 64 bytes from `rng` reduced modulo the group
/// order.
pub fn random_scalar<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Scalar {
    let mut wide = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(wide.as_mut());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// A dealer's secret polynomial (its coefficients, `a_0` the secret).
/// Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Polynomial(Vec<Scalar>);

impl std::fmt::Debug for Polynomial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Polynomial(degree {})", self.0.len().saturating_sub(1))
    }
}

impl Polynomial {
    /// A polynomial of `threshold` random coefficients (degree
    /// `threshold − 1`; at least one coefficient).
    pub fn random<R: CryptoRngCore + ?Sized>(rng: &mut R, threshold: usize) -> Polynomial {
        Polynomial((0..threshold.max(1)).map(|_| random_scalar(rng)).collect())
    }

    /// The polynomial with these coefficients (`a_0` first; at least one).
    #[must_use]
    pub fn from_coefficients(coefficients: Vec<Scalar>) -> Polynomial {
        if coefficients.is_empty() {
            Polynomial(vec![Scalar::ZERO])
        } else {
            Polynomial(coefficients)
        }
    }

    /// The coefficients, `a_0` first (secret: for the keyper's own
    /// journal only).
    #[must_use]
    pub fn coefficients(&self) -> &[Scalar] {
        &self.0
    }

    /// The secret `a_0 = f(0)`.
    #[must_use]
    pub fn secret(&self) -> Scalar {
        self.0.first().copied().unwrap_or(Scalar::ZERO)
    }

    /// `f(j)`: keyper `j`'s share.
    #[must_use]
    pub fn share(&self, j: KeyperIndex) -> Scalar {
        let x = Scalar::from(u64::from(j));
        self.0
            .iter()
            .rev()
            .fold(Scalar::ZERO, |acc, coefficient| acc * x + coefficient)
    }

    /// The Feldman commitments `C_k = a_k·G`.
    #[must_use]
    pub fn commitments(&self) -> Commitments {
        Commitments(self.0.iter().map(RistrettoPoint::mul_base).collect())
    }
}

/// Feldman commitments to a polynomial: `C_k = a_k·G`, `C_0` committing to
/// the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitments(pub Vec<RistrettoPoint>);

impl Commitments {
    /// `Σ_k j^k·C_k = f(j)·G`: the public image of keyper `j`'s share.
    #[must_use]
    pub fn share_image(&self, j: KeyperIndex) -> RistrettoPoint {
        // Public data only: a variable-time multiscalar multiplication.
        let x = Scalar::from(u64::from(j));
        // (As many powers as points, collected: the multiplication checks
        // the two lengths from their size hints.)
        let powers: Vec<Scalar> = std::iter::successors(Some(Scalar::ONE), |p| Some(p * x))
            .take(self.0.len())
            .collect();
        RistrettoPoint::vartime_multiscalar_mul(&powers, &self.0)
    }

    /// Whether `share` is keyper `j`'s share of the committed polynomial.
    #[must_use]
    pub fn verify_share(&self, j: KeyperIndex, share: &Scalar) -> bool {
        j != 0 && RistrettoPoint::mul_base(share) == self.share_image(j)
    }

    /// The committed secret's image `C_0 = a_0·G`.
    #[must_use]
    pub fn secret_image(&self) -> RistrettoPoint {
        self.0
            .first()
            .copied()
            .unwrap_or_else(RistrettoPoint::identity)
    }

    /// The commitments to the sum of the committed polynomials (all of one
    /// degree): `Σ_i C_{i,k}` for each `k`.
    #[must_use]
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Commitments>) -> Commitments {
        let mut total: Vec<RistrettoPoint> = Vec::new();
        for c in all {
            if total.len() < c.0.len() {
                total.resize(c.0.len(), RistrettoPoint::identity());
            }
            for (t, p) in total.iter_mut().zip(&c.0) {
                *t += p;
            }
        }
        Commitments(total)
    }
}

/// The Lagrange coefficients at 0 for the indices given (distinct,
/// non-zero): `λ_j = Π_{m≠j} m / (m − j)`, with one batched inversion.
///
/// # Errors
///
/// [`ShareError`] for no index, index 0 or a repeated index.
pub fn lagrange_at_zero(indices: &[KeyperIndex]) -> Result<Vec<Scalar>, ShareError> {
    if indices.is_empty() {
        return Err(ShareError::Empty);
    }
    let mut seen = std::collections::BTreeSet::new();
    for &j in indices {
        if j == 0 {
            return Err(ShareError::ZeroIndex);
        }
        if !seen.insert(j) {
            return Err(ShareError::DuplicateIndex(j));
        }
    }
    let xs: Vec<Scalar> = indices
        .iter()
        .map(|&j| Scalar::from(u64::from(j)))
        .collect();
    let mut numerators = Vec::with_capacity(xs.len());
    let mut denominators = Vec::with_capacity(xs.len());
    for (a, xa) in xs.iter().enumerate() {
        let mut num = Scalar::ONE;
        let mut den = Scalar::ONE;
        for (b, xb) in xs.iter().enumerate() {
            if a != b {
                num *= xb;
                den *= xb - xa;
            }
        }
        numerators.push(num);
        denominators.push(den);
    }
    // Distinct non-zero indices below the group order: no denominator is 0.
    Scalar::invert_batch_alloc(&mut denominators);
    Ok(numerators
        .into_iter()
        .zip(denominators)
        .map(|(n, d)| n * d)
        .collect())
}

/// `f(0)` from shares `(j, f(j))` of a polynomial of degree below their
/// number.
///
/// # Errors
///
/// [`ShareError`] for no share, index 0 or a repeated index.
pub fn interpolate_at_zero(shares: &[(KeyperIndex, Scalar)]) -> Result<Scalar, ShareError> {
    let indices: Vec<KeyperIndex> = shares.iter().map(|(j, _)| *j).collect();
    let lambdas = lagrange_at_zero(&indices)?;
    Ok(shares
        .iter()
        .zip(lambdas)
        .map(|((_, share), lambda)| share * lambda)
        .sum())
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn any_threshold_of_shares_gives_the_secret_and_fewer_do_not() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let f = Polynomial::random(&mut rng, 3);
        let commitments = f.commitments();
        let shares: Vec<(KeyperIndex, Scalar)> = (1..=5).map(|j| (j, f.share(j))).collect();
        for (j, s) in &shares {
            assert!(commitments.verify_share(*j, s));
            assert!(!commitments.verify_share(*j, &(s + Scalar::ONE)));
        }
        assert!(!commitments.verify_share(0, &f.secret()));
        for pick in [[0, 1, 2], [0, 2, 4], [2, 3, 4], [4, 1, 3]] {
            let some: Vec<_> = pick.iter().map(|&i| shares[i]).collect();
            assert_eq!(interpolate_at_zero(&some), Ok(f.secret()));
        }
        let two = [shares[0], shares[3]];
        assert_ne!(interpolate_at_zero(&two), Ok(f.secret()));
        assert_eq!(
            interpolate_at_zero(&[shares[0], shares[0]]),
            Err(ShareError::DuplicateIndex(1))
        );
        assert_eq!(
            interpolate_at_zero(&[(0, Scalar::ONE)]),
            Err(ShareError::ZeroIndex)
        );
        assert_eq!(
            commitments.secret_image(),
            RistrettoPoint::mul_base(&f.secret())
        );
    }
}
