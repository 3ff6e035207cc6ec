//! One key generation (one window), as one participant sees it: the
//! dealings, accusations and apologies every keyper reads from the same log,
//! in the order deal → accuse → apologize → finalize. A participant is a
//! keyper (with its decryption key, so it learns its own shares) or an
//! observer (the sequencer, `verify`), which derives the same public result.
//!
//! Sans-IO: the caller moves messages in and decides when each phase ends
//! (by its clock); nothing here blocks. A dealer that deals nothing, deals
//! something invalid, or leaves an accusation unanswered (or answers it
//! with shares that do not match its commitments) is disqualified; the
//! generation finishes with the others if at least `t` remain.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use zeroize::Zeroizing;

use super::committee::{Committee, Window};
use super::dealing::{CheckedDealing, Dealing, DealingError};
use super::sharing::{Commitments, KeyperIndex};
use crate::types::BatchId;

/// An accusation: `accuser`'s shares from `dealer` do not decrypt or do not
/// match the dealer's commitments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Accusation {
    /// The keyper accusing.
    pub accuser: KeyperIndex,
    /// The dealer accused.
    pub dealer: KeyperIndex,
}

/// A dealer's answer to an accusation: the accuser's shares, in clear, one
/// per batch of the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Apology {
    /// The dealer.
    pub dealer: KeyperIndex,
    /// The keyper that accused it.
    pub accuser: KeyperIndex,
    /// The accuser's shares.
    pub shares: Vec<Scalar>,
}

/// Why a generation cannot finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenerationError {
    /// Fewer than `t` dealers qualified: retry under a new window id
    /// without the disqualified ones.
    #[error("only {qualified} dealers qualified, {threshold} are needed")]
    TooFewQualified {
        /// Dealers that qualified.
        qualified: usize,
        /// The threshold.
        threshold: usize,
    },
    /// This keyper's summed share of a batch does not match the public
    /// commitments: it did not post an accusation it should have.
    #[error("this keyper's share of batch {0} does not match the commitments")]
    OwnShareMismatch(BatchId),
}

/// What a finished generation gives: the public keys of the window's
/// batches, what checks each keyper's release, and (for a keyper) its
/// shares (zeroized on drop, never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct WindowKeys {
    /// The window.
    pub window: Window,
    /// The qualified dealers, ascending.
    pub qualified: Vec<KeyperIndex>,
    /// Per batch, the commitments to the sum of the qualified dealers'
    /// polynomials: `C_0 = S_e` and `Σ_k j^k·C_k = s_{e,j}·G` for keyper `j`.
    pub commitments: Vec<Commitments>,
    /// This keyper's share `s_{e,j}` per batch (`None` for an observer).
    pub shares: Option<Zeroizing<Vec<Scalar>>>,
}

impl std::fmt::Debug for WindowKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowKeys")
            .field("window", &self.window)
            .field("qualified", &self.qualified)
            .field("shares", &self.shares.as_ref().map(|s| s.len()))
            .finish_non_exhaustive()
    }
}

impl WindowKeys {
    /// The public key `S_e` of batch `e` of the window.
    #[must_use]
    pub fn public_key(&self, e: BatchId) -> Option<RistrettoPoint> {
        self.batch_commitments(e).map(Commitments::secret_image)
    }

    /// The public image `s_{e,j}·G` of keyper `j`'s share for batch `e`.
    #[must_use]
    pub fn share_image(&self, e: BatchId, j: KeyperIndex) -> Option<RistrettoPoint> {
        self.batch_commitments(e).map(|c| c.share_image(j))
    }

    /// This keyper's share of batch `e`.
    #[must_use]
    pub fn share(&self, e: BatchId) -> Option<Scalar> {
        let i = self.position(e)?;
        self.shares.as_ref()?.get(i).copied()
    }

    /// The window's commitments for batch `e`.
    #[must_use]
    pub fn batch_commitments(&self, e: BatchId) -> Option<&Commitments> {
        self.commitments.get(self.position(e)?)
    }

    fn position(&self, e: BatchId) -> Option<usize> {
        self.window
            .contains(e)
            .then(|| (e - self.window.first_batch) as usize)
    }
}

/// One participant's view of one generation.
pub struct Generation {
    committee: Committee,
    window: Window,
    /// This keyper's index and decryption key (`None`: an observer).
    me: Option<(KeyperIndex, Zeroizing<Scalar>)>,
    /// Valid dealings, by dealer.
    dealings: BTreeMap<KeyperIndex, CheckedDealing>,
    /// This keyper's shares from each valid dealing (`None`: bad, accuse).
    own: BTreeMap<KeyperIndex, Option<Zeroizing<Vec<Scalar>>>>,
    /// Dealers whose dealing was invalid, with why.
    refused: BTreeMap<KeyperIndex, DealingError>,
    accusations: BTreeSet<Accusation>,
    /// Accusations answered with shares that match, with those shares.
    answered: BTreeMap<Accusation, Vec<Scalar>>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("window", &self.window)
            .field("me", &self.me.as_ref().map(|(j, _)| j))
            .field("dealings", &self.dealings.keys().collect::<Vec<_>>())
            .field("refused", &self.refused)
            .field("accusations", &self.accusations)
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// A keyper's view: it opens its own shares with `decryption_key`.
    #[must_use]
    pub fn keyper(
        committee: Committee,
        window: Window,
        me: KeyperIndex,
        decryption_key: Scalar,
    ) -> Generation {
        let mut g = Generation::observer(committee, window);
        g.me = Some((me, Zeroizing::new(decryption_key)));
        g
    }

    /// An observer's view: public results only.
    #[must_use]
    pub fn observer(committee: Committee, window: Window) -> Generation {
        Generation {
            committee,
            window,
            me: None,
            dealings: BTreeMap::new(),
            own: BTreeMap::new(),
            refused: BTreeMap::new(),
            accusations: BTreeSet::new(),
            answered: BTreeMap::new(),
        }
    }

    /// The window.
    #[must_use]
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// A dealing read from the log (signed by `dealing.dealer`, which the
    /// caller checked). The first one from a dealer counts; an invalid one
    /// disqualifies its dealer.
    ///
    /// # Errors
    ///
    /// The [`DealingError`] that disqualified it (already recorded).
    pub fn handle_dealing(&mut self, dealing: &Dealing) -> Result<(), DealingError> {
        if self.dealings.contains_key(&dealing.dealer) || self.refused.contains_key(&dealing.dealer)
        {
            return Ok(());
        }
        let checked = dealing.check(&self.committee, &self.window);
        self.take_checked(dealing, checked)
    }

    /// [`handle_dealing`](Self::handle_dealing) with the public checks
    /// already made ([`Prechecked`](super::log::Prechecked), off the
    /// caller's thread) for this committee and the dealing's own window.
    pub(crate) fn handle_checked_dealing(
        &mut self,
        dealing: &Dealing,
        checked: Result<CheckedDealing, DealingError>,
    ) -> Result<(), DealingError> {
        if self.dealings.contains_key(&dealing.dealer) || self.refused.contains_key(&dealing.dealer)
        {
            return Ok(());
        }
        if dealing.window != self.window {
            return Err(DealingError::Foreign);
        }
        self.take_checked(dealing, checked)
    }

    fn take_checked(
        &mut self,
        dealing: &Dealing,
        checked: Result<CheckedDealing, DealingError>,
    ) -> Result<(), DealingError> {
        match checked {
            Ok(checked) => {
                if let Some((me, key)) = &self.me {
                    let shares = dealing.open_shares(&self.committee, &checked, *me, key);
                    self.own.insert(dealing.dealer, shares.map(Zeroizing::new));
                }
                self.dealings.insert(dealing.dealer, checked);
                Ok(())
            }
            Err(DealingError::Foreign) => Err(DealingError::Foreign),
            Err(error) => {
                self.refused.insert(dealing.dealer, error.clone());
                Err(error)
            }
        }
    }

    /// The accusations this keyper must post when the dealing phase ends:
    /// one per valid dealing whose shares to it are bad.
    #[must_use]
    pub fn own_accusations(&self) -> Vec<Accusation> {
        let Some((me, _)) = &self.me else {
            return Vec::new();
        };
        self.own
            .iter()
            .filter(|(_, shares)| shares.is_none())
            .map(|(&dealer, _)| Accusation {
                accuser: *me,
                dealer,
            })
            .collect()
    }

    /// How many valid dealings were read.
    #[must_use]
    pub fn dealings(&self) -> usize {
        self.dealings.len()
    }

    /// An accusation read from the log (signed by its accuser). One against
    /// a dealer without a valid dealing changes nothing (it is out anyway).
    pub fn handle_accusation(&mut self, accusation: Accusation) {
        if self.dealings.contains_key(&accusation.dealer)
            && self.committee.member(accusation.accuser).is_some()
            && accusation.accuser != accusation.dealer
        {
            self.accusations.insert(accusation);
        }
    }

    /// The accusations against `dealer` so far, which it must answer.
    pub fn accusations_against(&self, dealer: KeyperIndex) -> impl Iterator<Item = &Accusation> {
        self.accusations.iter().filter(move |a| a.dealer == dealer)
    }

    /// An apology read from the log (signed by its dealer): kept if it
    /// answers an accusation with shares that match the commitments; the
    /// accuser then uses them.
    ///
    /// Returns whether it was accepted.
    pub fn handle_apology(&mut self, apology: &Apology) -> bool {
        let accusation = Accusation {
            accuser: apology.accuser,
            dealer: apology.dealer,
        };
        if !self.accusations.contains(&accusation) || self.answered.contains_key(&accusation) {
            return false;
        }
        let Some(checked) = self.dealings.get(&apology.dealer) else {
            return false;
        };
        let valid = apology.shares.len() == checked.commitments.len()
            && apology
                .shares
                .iter()
                .zip(&checked.commitments)
                .all(|(s, c)| c.verify_share(apology.accuser, s));
        if !valid {
            return false;
        }
        if self
            .me
            .as_ref()
            .is_some_and(|(me, _)| *me == apology.accuser)
        {
            self.own
                .insert(apology.dealer, Some(Zeroizing::new(apology.shares.clone())));
        }
        self.answered.insert(accusation, apology.shares.clone());
        true
    }

    /// The dealers that qualify now: a valid dealing and every accusation
    /// against them answered.
    #[must_use]
    pub fn qualified(&self) -> Vec<KeyperIndex> {
        self.dealings
            .keys()
            .copied()
            .filter(|&d| {
                self.accusations_against(d)
                    .all(|a| self.answered.contains_key(a))
            })
            .collect()
    }

    /// Dealers refused so far, with why (evidence for a retry without
    /// them).
    #[must_use]
    pub fn refused(&self) -> &BTreeMap<KeyperIndex, DealingError> {
        &self.refused
    }

    /// Ends the generation: the qualified dealers' keys summed per batch.
    ///
    /// # Errors
    ///
    /// [`GenerationError::TooFewQualified`].
    pub fn finalize(&self) -> Result<WindowKeys, GenerationError> {
        let qualified = self.qualified();
        if qualified.len() < self.committee.threshold() {
            return Err(GenerationError::TooFewQualified {
                qualified: qualified.len(),
                threshold: self.committee.threshold(),
            });
        }
        let batches = self.window.batches as usize;
        let commitments: Vec<Commitments> = (0..batches)
            .map(|b| Commitments::sum(qualified.iter().map(|d| &self.dealings[d].commitments[b])))
            .collect();
        let shares = match &self.me {
            None => None,
            Some(_) => {
                let mut sum = Zeroizing::new(vec![Scalar::ZERO; batches]);
                for d in &qualified {
                    // Qualified: its shares to this keyper are good or were
                    // published in an accepted apology.
                    if let Some(Some(own)) = self.own.get(d) {
                        for (s, x) in sum.iter_mut().zip(own.iter()) {
                            *s += x;
                        }
                    }
                }
                if let Some((me, _)) = &self.me
                    && let Some(b) =
                        (0..batches).find(|&b| !commitments[b].verify_share(*me, &sum[b]))
                {
                    return Err(GenerationError::OwnShareMismatch(
                        self.window.first_batch + b as u64,
                    ));
                }
                Some(sum)
            }
        };
        Ok(WindowKeys {
            window: self.window,
            qualified,
            commitments,
            shares,
        })
    }
}
