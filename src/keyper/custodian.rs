//! The sequencer's custodian when a keyper committee holds the keys: it
//! announces only certified batch keys (no certificate, no key, no batch),
//! asks the keypers for a durable seal's shares, and combines any `t` valid
//! ones into the key that opens the batch (`spec/keyper.md` §10).

use std::collections::BTreeMap;

use curve25519_dalek::scalar::Scalar;

use super::attestation::verify_attestation;
use super::combine::Combiner;
use super::committee::Committee;
use super::generation::WindowKeys;
use super::log::{WindowCertificate, commitments_digest};
use super::sharing::KeyperIndex;
use crate::envelope::custodian::check_seal;
use crate::envelope::keys::BatchSecret;
use crate::envelope::{
    BatchPublicKey, BatchSchedule, CustodianError, KeyCustodian, ReleaseAttestation,
    ReleasedBatchKey, SealStatement, SequencerPublicKey, SignedSeal,
};
use crate::types::BatchId;

/// Most windows a custodian keeps (older ones are dropped as new ones
/// come). Its sequencer prunes the windows no batch needs
/// ([`CommitteeCustodian::prune`]) and its log keeper holds at most
/// [`WINDOWS_AHEAD_MAX`](super::log_keeper::WINDOWS_AHEAD_MAX) windows beyond the
/// first batch it needs, so this
/// bound is never what drops a window.
pub const WINDOWS_KEPT_MAX: usize = 64;

/// Why a window's keys are not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The certificate does not carry `t` valid approvals for this
    /// committee.
    #[error("the certificate of window {0} does not verify")]
    Certificate(u64),
    /// The keys are not the certified ones.
    #[error("the keys of window {0} are not the certified ones")]
    Mismatch(u64),
}

struct CertifiedWindow {
    keys: WindowKeys,
    certificate: WindowCertificate,
}

/// A [`KeyCustodian`] over a keyper committee's certified windows.
pub struct CommitteeCustodian {
    committee: Committee,
    sequencer: SequencerPublicKey,
    schedule: BatchSchedule,
    /// By first batch.
    windows: BTreeMap<BatchId, CertifiedWindow>,
    /// The seal asked for, the shares so far and the attestations of the
    /// keypers whose shares counted, per batch.
    requests: BTreeMap<BatchId, Request>,
}

struct Request {
    seal: SealStatement,
    combiner: Combiner,
    attestations: BTreeMap<KeyperIndex, [u8; 64]>,
}

impl std::fmt::Debug for CommitteeCustodian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitteeCustodian")
            .field("windows", &self.windows.keys().collect::<Vec<_>>())
            .field("requests", &self.requests.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CommitteeCustodian {
    /// A custodian for `committee`, releasing for seals by `sequencer` of
    /// batches closed on `schedule`. It holds no key until
    /// [`add_window`](Self::add_window).
    #[must_use]
    pub fn new(
        committee: Committee,
        sequencer: SequencerPublicKey,
        schedule: BatchSchedule,
    ) -> CommitteeCustodian {
        CommitteeCustodian {
            committee,
            sequencer,
            schedule,
            windows: BTreeMap::new(),
            requests: BTreeMap::new(),
        }
    }

    /// Takes a window's keys (as an observer of its log derived them) with
    /// the committee's certificate over them.
    ///
    /// # Errors
    ///
    /// [`WindowError`]; nothing changes then.
    pub fn add_window(
        &mut self,
        certificate: &WindowCertificate,
        keys: WindowKeys,
    ) -> Result<(), WindowError> {
        let id = certificate.window.id;
        if !certificate.verify(&self.committee) {
            return Err(WindowError::Certificate(id));
        }
        let certified = keys.window == certificate.window
            && keys.qualified == certificate.qualified
            && commitments_digest(&keys) == certificate.commitments_digest
            && certificate
                .window
                .batches()
                .all(|e| keys.public_key(e).map(|p| p.compress().to_bytes()) == certificate.key(e));
        if !certified {
            return Err(WindowError::Mismatch(id));
        }
        self.windows.insert(
            certificate.window.first_batch,
            CertifiedWindow {
                keys,
                certificate: certificate.clone(),
            },
        );
        while self.windows.len() > WINDOWS_KEPT_MAX {
            self.windows.pop_first();
        }
        Ok(())
    }

    /// The certificates of the windows holding any batch of `from..=to`,
    /// in order.
    pub fn certificates(
        &self,
        from: BatchId,
        to: BatchId,
    ) -> impl Iterator<Item = &WindowCertificate> {
        let start = self
            .windows
            .range(..=from)
            .next_back()
            .map_or(from, |(&first, _)| first);
        self.windows
            .range(start..=to.max(start))
            .map(|(_, w)| &w.certificate)
            .filter(move |c| {
                c.window
                    .first_batch
                    .saturating_add(u64::from(c.window.batches))
                    > from
            })
    }

    /// The committee.
    #[must_use]
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// Drops the windows that end at or below batch `below` (no batch of
    /// theirs will be asked for again) and the requests below it.
    pub fn prune(&mut self, below: BatchId) {
        while let Some(entry) = self.windows.first_entry() {
            let window = &entry.get().certificate.window;
            if window.first_batch.saturating_add(u64::from(window.batches)) > below {
                break;
            }
            entry.remove();
        }
        self.requests = self.requests.split_off(&below);
    }

    fn window_of(&self, e: BatchId) -> Option<&WindowKeys> {
        self.windows
            .range(..=e)
            .next_back()
            .map(|(_, w)| &w.keys)
            .filter(|k| k.window.contains(e))
    }

    /// Keypers whose share of batch `e` did not count.
    #[must_use]
    pub fn faulty(&self, e: BatchId) -> Vec<KeyperIndex> {
        self.requests
            .get(&e)
            .map(|r| r.combiner.faulty().keys().copied().collect())
            .unwrap_or_default()
    }
}

impl KeyCustodian for CommitteeCustodian {
    fn public_key(&self, e: BatchId) -> Result<BatchPublicKey, CustodianError> {
        let point = self
            .window_of(e)
            .and_then(|w| w.public_key(e))
            .ok_or(CustodianError::UnknownBatch { e })?;
        BatchPublicKey::from_bytes(&point.compress().to_bytes())
            .map_err(|source| CustodianError::Key { e, source })
    }

    fn release(
        &mut self,
        seal: &SignedSeal,
        _now_ms: u64,
    ) -> Result<ReleasedBatchKey, CustodianError> {
        Err(CustodianError::SharesNeeded { e: seal.e })
    }

    fn request(
        &mut self,
        seal: &SignedSeal,
        now_ms: u64,
    ) -> Result<Option<ReleasedBatchKey>, CustodianError> {
        check_seal(seal, &self.sequencer, &self.schedule, now_ms)?;
        let e = seal.e;
        let statement = SealStatement {
            e,
            count: seal.count,
            root: seal.root,
        };
        if let Some(request) = self.requests.get(&e) {
            if request.seal != statement {
                return Err(CustodianError::Equivocation {
                    e,
                    first: request.seal,
                });
            }
            return Ok(None);
        }
        let keys = self
            .window_of(e)
            .ok_or(CustodianError::UnknownBatch { e })?;
        let combiner = Combiner::new(keys, e, self.committee.threshold(), self.committee.size())
            .map_err(|_| CustodianError::UnknownBatch { e })?;
        self.requests.insert(
            e,
            Request {
                seal: statement,
                combiner,
                attestations: BTreeMap::new(),
            },
        );
        // Only batches still in a kept window can be asked for; bound the
        // memory all the same.
        while self.requests.len() > WINDOWS_KEPT_MAX * crate::keyper::WINDOW_BATCHES_MAX as usize {
            self.requests.pop_first();
        }
        Ok(None)
    }

    fn add_share(
        &mut self,
        seal: &SignedSeal,
        keyper: u16,
        share: &[u8; 32],
        attestation: &[u8; 64],
    ) -> Result<Option<ReleasedBatchKey>, CustodianError> {
        let e = seal.e;
        let public = self.public_key(e)?;
        let deployment = *self.committee.deployment();
        let Some(request) = self.requests.get_mut(&e) else {
            return Err(CustodianError::Share {
                e,
                reason: "no request for this batch".into(),
            });
        };
        if (request.seal.count, request.seal.root) != (seal.count, seal.root) {
            return Err(CustodianError::Equivocation {
                e,
                first: request.seal,
            });
        }
        // A share counts only with its keyper's attestation of this very
        // seal: the result publishes them, so the key cannot be shown
        // with another seal (`spec/keyper.md` §9).
        if !verify_attestation(&self.committee, &request.seal, keyper, attestation) {
            return Err(CustodianError::Share {
                e,
                reason: format!("keyper {keyper}'s release attestation does not verify"),
            });
        }
        let secret =
            request
                .combiner
                .add(keyper, share)
                .map_err(|error| CustodianError::Share {
                    e,
                    reason: error.to_string(),
                })?;
        request.attestations.insert(keyper, *attestation);
        let Some(secret) = secret else {
            return Ok(None);
        };
        let attestations = request
            .combiner
            .valid()
            .filter_map(|j| {
                request
                    .attestations
                    .get(&j)
                    .map(|signature| ReleaseAttestation {
                        keyper: j,
                        signature: *signature,
                    })
            })
            .collect();
        let scalar = Option::<Scalar>::from(Scalar::from_canonical_bytes(*secret)).ok_or(
            CustodianError::Share {
                e,
                reason: "the combined secret is not canonical".into(),
            },
        )?;
        ReleasedBatchKey::new(BatchSecret(scalar), &public, seal, deployment)
            .map(|key| Some(key.with_attestations(attestations)))
            .map_err(|source| CustodianError::Key { e, source })
    }

    fn has_key(&self, e: BatchId) -> bool {
        self.window_of(e).is_some()
    }
}

/// The custodian a node under a keyper committee starts with, before its
/// journal's committee record is replayed or written: it holds no key at
/// all (fail closed), and no operator secret exists to hold one.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKeyCustodian;

impl KeyCustodian for NoKeyCustodian {
    fn public_key(&self, e: BatchId) -> Result<BatchPublicKey, CustodianError> {
        Err(CustodianError::UnknownBatch { e })
    }

    fn release(
        &mut self,
        seal: &SignedSeal,
        _now_ms: u64,
    ) -> Result<ReleasedBatchKey, CustodianError> {
        Err(CustodianError::UnknownBatch { e: seal.e })
    }

    fn has_key(&self, _e: BatchId) -> bool {
        false
    }
}
