//! The committee's log of one generation, replayed: signed keyper messages
//! and the log keeper's phase ends, in one order every reader sees, give
//! every reader the same result — the window's keys, which `t` keypers then
//! approve into a certificate that traders check before they seal
//! (`spec/keyper.md` §11–§12).
//!
//! A message counts only in its phase: dealings before the dealing phase
//! ends, accusations before the accusation phase ends, apologies before the
//! apology phase ends, approvals after the result. Anything else — a bad
//! signature, another window, a late message — is ignored with its reason,
//! so a hostile or confused sender cannot stall the log.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::RistrettoPoint;

use super::committee::{Committee, Window};
use super::dealing::{CheckedDealing, DealingError};
use super::generation::{Accusation, Apology, Generation, GenerationError, WindowKeys};
use super::message::{
    Body, KeyperMessage, MessageError, SignedKeyperMessage, put_window, read_window,
};
use super::sharing::KeyperIndex;
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::types::BatchId;

/// BLAKE3 derive-key context of a window result's digest.
pub const DOMAIN_WINDOW_RESULT: &str = "sealbatch v1 keyper window result";

/// BLAKE3 derive-key context of a window's commitments digest (its own, so
/// no commitments digest can be taken for a result digest).
pub const DOMAIN_WINDOW_COMMITMENTS: &str = "sealbatch v1 keyper window commitments";

/// A generation's phases, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Phase {
    /// Dealers post dealings.
    Deal = 1,
    /// Keypers post accusations.
    Accuse = 2,
    /// Accused dealers post apologies; its end finalizes the keys.
    Apologize = 3,
    /// Keypers post approvals of the result.
    Approve = 4,
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry {
    /// The log keeper opens a generation: dealers deal for `window` now.
    Open {
        /// The generation.
        window: Window,
    },
    /// A keyper's signed message.
    Message(SignedKeyperMessage),
    /// The log keeper ends `phase` of `window`: later messages of that
    /// phase do not count.
    PhaseEnd {
        /// The generation.
        window: Window,
        /// The phase ended.
        phase: Phase,
    },
}

impl LogEntry {
    /// The generation it belongs to.
    #[must_use]
    pub fn window(&self) -> Window {
        match self {
            LogEntry::Open { window } | LogEntry::PhaseEnd { window, .. } => *window,
            LogEntry::Message(signed) => signed.message.window,
        }
    }
}

impl Decode for LogEntry {
    /// Reads [`encode_into`](Encode::encode_into) from `r` (signatures are checked when
    /// the entry is applied, not here).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<LogEntry, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8("log entry tag")? {
            1 => LogEntry::Open {
                window: read_window(r)?,
            },
            2 => LogEntry::Message(SignedKeyperMessage::decode_from(r)?),
            3 => {
                let window = read_window(r)?;
                let offset = r.offset();
                let phase = match r.u8("phase")? {
                    1 => Phase::Deal,
                    2 => Phase::Accuse,
                    3 => Phase::Apologize,
                    _ => return Err(r.invalid("phase", offset)),
                };
                LogEntry::PhaseEnd { window, phase }
            }
            _ => return Err(r.invalid("log entry tag", offset)),
        })
    }
}

impl Encode for LogEntry {
    /// `u8(1) ‖ window` (open), `u8(2) ‖ signed message` (§11), or
    /// `u8(3) ‖ window ‖ u8(phase)` (phase end), where `window` is
    /// `u64le(id) ‖ u64le(first_batch) ‖ u32le(W)`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            LogEntry::Open { window } => {
                out.put_u8(1);
                put_window(out, window);
            }
            LogEntry::Message(signed) => {
                out.put_u8(2);
                out.extend_from_slice(&signed.to_bytes());
            }
            LogEntry::PhaseEnd { window, phase } => {
                out.put_u8(3);
                put_window(out, window);
                out.put_u8(*phase as u8);
            }
        }
    }
}

/// A keyper's message whose costly public checks (a dealing's commitments
/// and proofs) were made ahead, off the log keeper's thread; only
/// [`Prechecked::check`] makes one, so the result cannot be forged.
#[derive(Clone, Debug)]
pub struct Prechecked {
    message: SignedKeyperMessage,
    dealing: Option<Result<CheckedDealing, DealingError>>,
}

impl Prechecked {
    /// Checks `message`'s dealing (if it is one) for `committee` and the
    /// message's own window: the work a generation would do on taking it.
    #[must_use]
    pub fn check(message: SignedKeyperMessage, committee: &Committee) -> Prechecked {
        let dealing = match &message.message.body {
            Body::Dealing(dealing) => Some(dealing.check(committee, &message.message.window)),
            _ => None,
        };
        Prechecked { message, dealing }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &SignedKeyperMessage {
        &self.message
    }

    pub(crate) fn into_parts(
        self,
    ) -> (
        SignedKeyperMessage,
        Option<Result<CheckedDealing, DealingError>>,
    ) {
        (self.message, self.dealing)
    }
}

/// Why an entry did not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// Not for this generation.
    #[error("for another window")]
    OtherWindow,
    /// Its signature or sender is wrong.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// It belongs to a phase that is not open.
    #[error("a {kind} in phase {phase:?}")]
    OutOfPhase {
        /// What it was.
        kind: &'static str,
        /// The phase open when it came.
        phase: Phase,
    },
    /// A second message of a kind a sender posts once per generation (a
    /// dealing, an approval) or per target (an accusation, an apology).
    #[error("a repeated {0}")]
    Repeated(&'static str),
    /// An approval of another result, or a refused dealing or apology.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The public outcome of a generation: who qualified, the commitments and
/// the batch keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowResult {
    /// The keys (and, for a keyper, its shares).
    pub keys: WindowKeys,
    /// The digest the keypers approve.
    pub digest: [u8; 32],
}

/// The committee's certificate over a window's batch keys: `t` or more
/// approvals of one result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCertificate {
    /// The generation.
    pub window: Window,
    /// The qualified dealers, ascending.
    pub qualified: Vec<KeyperIndex>,
    /// BLAKE3 of the window's commitments (every batch's `C_{e,k}`).
    pub commitments_digest: [u8; 32],
    /// `S_e` for every batch of the window, in order.
    pub keys: Vec<[u8; 32]>,
    /// `(keyper, signature of its approval)`, ascending by keyper.
    pub approvals: Vec<(KeyperIndex, [u8; 64])>,
}

/// The digest keypers approve: `H("sealbatch v1 keyper window result",
/// context ‖ u16le(q) ‖ q × u16le(dealer) ‖ commitments digest (32) ‖
/// u32le(W) ‖ W × S_e)`.
#[must_use]
pub fn result_digest(
    committee: &Committee,
    window: &Window,
    qualified: &[KeyperIndex],
    commitments_digest: &[u8; 32],
    keys: &[[u8; 32]],
) -> [u8; 32] {
    let mut bytes = window.context(committee);
    // Both bounded by COMMITTEE_MAX and WINDOW_BATCHES_MAX.
    bytes.put_u16(qualified.len() as u16);
    for q in qualified {
        bytes.put_u16(*q);
    }
    bytes.extend_from_slice(commitments_digest);
    bytes.put_u32(keys.len() as u32);
    for k in keys {
        bytes.extend_from_slice(k);
    }
    let mut h = blake3::Hasher::new_derive_key(DOMAIN_WINDOW_RESULT);
    h.update(&bytes);
    *h.finalize().as_bytes()
}

/// `H("sealbatch v1 keyper window commitments", window ‖ per batch
/// u16le(t) ‖ t × C_{e,k})` — the commitments every share check uses.
#[must_use]
pub fn commitments_digest(keys: &WindowKeys) -> [u8; 32] {
    let mut bytes = Vec::new();
    put_window(&mut bytes, &keys.window);
    for c in &keys.commitments {
        bytes.put_u16(c.0.len() as u16);
        for p in &c.0 {
            bytes.extend_from_slice(p.compress().as_bytes());
        }
    }
    let mut h = blake3::Hasher::new_derive_key(DOMAIN_WINDOW_COMMITMENTS);
    h.update(&bytes);
    *h.finalize().as_bytes()
}

impl WindowCertificate {
    /// The batch key `S_e`, if `e` is in the window.
    #[must_use]
    pub fn key(&self, e: BatchId) -> Option<[u8; 32]> {
        if !self.window.contains(e) {
            return None;
        }
        self.keys
            .get((e - self.window.first_batch) as usize)
            .copied()
    }

    /// Whether at least `t` distinct members signed approvals of this
    /// result for `committee`, and there is one key per batch.
    #[must_use]
    pub fn verify(&self, committee: &Committee) -> bool {
        if self.keys.len() != self.window.batches as usize || self.window.check().is_err() {
            return false;
        }
        let digest = result_digest(
            committee,
            &self.window,
            &self.qualified,
            &self.commitments_digest,
            &self.keys,
        );
        let mut signers = BTreeSet::new();
        for (j, signature) in &self.approvals {
            let approval = SignedKeyperMessage {
                message: KeyperMessage {
                    window: self.window,
                    sender: *j,
                    body: Body::Approval { digest },
                },
                signature: *signature,
            };
            if approval.verify(committee).is_ok() {
                signers.insert(*j);
            }
        }
        signers.len() >= committee.threshold()
    }
}

impl Decode for WindowCertificate {
    /// Reads [`encode_into`](Encode::encode_into): at most 64 dealers and approvals,
    /// exactly one key per batch of the window. Whether it verifies is
    /// [`verify`](Self::verify)'s to say.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<WindowCertificate, DecodeError> {
        let max = super::committee::COMMITTEE_MAX;
        let window = read_window(r)?;
        let offset = r.offset();
        let q = usize::from(r.u16("qualified")?);
        if q > max {
            return Err(r.invalid("qualified", offset));
        }
        let qualified = (0..q)
            .map(|_| r.u16("dealer"))
            .collect::<Result<Vec<_>, _>>()?;
        let commitments_digest = r.array("commitments digest")?;
        let offset = r.offset();
        let w = r.count("keys", super::committee::WINDOW_BATCHES_MAX as usize)?;
        if w != window.batches as usize {
            return Err(r.invalid("keys", offset));
        }
        let keys = (0..w)
            .map(|_| r.array("key"))
            .collect::<Result<Vec<_>, _>>()?;
        let offset = r.offset();
        let a = usize::from(r.u16("approvals")?);
        if a > max {
            return Err(r.invalid("approvals", offset));
        }
        let approvals = (0..a)
            .map(|_| Ok((r.u16("keyper")?, r.array("signature")?)))
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(WindowCertificate {
            window,
            qualified,
            commitments_digest,
            keys,
            approvals,
        })
    }
}

impl Encode for WindowCertificate {
    /// `window (u64le id ‖ u64le first_batch ‖ u32le W) ‖ u16le(q) ‖ q ×
    /// u16le(dealer) ‖ commitments digest (32) ‖ u32le(W) ‖ W × S_e (32) ‖
    /// u16le(a) ‖ a × (u16le(keyper) ‖ signature (64))`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        put_window(out, &self.window);
        // Bounded by COMMITTEE_MAX and WINDOW_BATCHES_MAX.
        out.put_u16(self.qualified.len() as u16);
        for q in &self.qualified {
            out.put_u16(*q);
        }
        out.extend_from_slice(&self.commitments_digest);
        out.put_u32(self.keys.len() as u32);
        for k in &self.keys {
            out.extend_from_slice(k);
        }
        out.put_u16(self.approvals.len() as u16);
        for (j, signature) in &self.approvals {
            out.put_u16(*j);
            out.extend_from_slice(signature);
        }
    }
}

/// One reader's replay of one generation's log.
#[derive(Debug)]
pub struct WindowLog {
    committee: Committee,
    generation: Generation,
    phase: Phase,
    accused: BTreeSet<(KeyperIndex, KeyperIndex)>,
    apologized: BTreeSet<(KeyperIndex, KeyperIndex)>,
    outcome: Option<Result<WindowResult, GenerationError>>,
    approvals: BTreeMap<KeyperIndex, [u8; 64]>,
}

impl WindowLog {
    /// A replay into `generation` (a keyper's or an observer's view).
    #[must_use]
    pub fn new(committee: Committee, generation: Generation) -> WindowLog {
        WindowLog {
            committee,
            generation,
            phase: Phase::Deal,
            accused: BTreeSet::new(),
            apologized: BTreeSet::new(),
            outcome: None,
            approvals: BTreeMap::new(),
        }
    }

    /// The phase open now.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The generation being replayed (its accusations to post, the
    /// accusations against a dealer).
    #[must_use]
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// The result once the apology phase ended: the keys, or why there are
    /// none (retry under a new window id).
    #[must_use]
    pub fn outcome(&self) -> Option<&Result<WindowResult, GenerationError>> {
        self.outcome.as_ref()
    }

    /// Applies the next entry of the log.
    ///
    /// # Errors
    ///
    /// [`Ignored`]: the entry did not count (nothing changed).
    pub fn apply(&mut self, entry: &LogEntry) -> Result<(), Ignored> {
        let window = *self.generation.window();
        match entry {
            LogEntry::Open { window: w } => {
                if *w == window {
                    Ok(())
                } else {
                    Err(Ignored::OtherWindow)
                }
            }
            LogEntry::PhaseEnd { window: w, phase } => {
                if *w != window {
                    return Err(Ignored::OtherWindow);
                }
                if *phase != self.phase || *phase == Phase::Approve {
                    return Err(Ignored::OutOfPhase {
                        kind: "phase end",
                        phase: self.phase,
                    });
                }
                self.phase = match phase {
                    Phase::Deal => Phase::Accuse,
                    Phase::Accuse => Phase::Apologize,
                    Phase::Apologize | Phase::Approve => {
                        self.outcome = Some(self.finalize());
                        Phase::Approve
                    }
                };
                Ok(())
            }
            LogEntry::Message(signed) => {
                if signed.message.window != window {
                    return Err(Ignored::OtherWindow);
                }
                signed.verify(&self.committee)?;
                self.apply_message(signed)
            }
        }
    }

    /// Applies a message whose dealing was checked ahead ([`Prechecked`]):
    /// the same outcome as [`apply`](Self::apply) of the message's entry.
    ///
    /// # Errors
    ///
    /// [`Ignored`]: the entry did not count (nothing changed).
    pub fn apply_prechecked(
        &mut self,
        signed: &SignedKeyperMessage,
        checked: Option<Result<CheckedDealing, DealingError>>,
    ) -> Result<(), Ignored> {
        if signed.message.window != *self.generation.window() {
            return Err(Ignored::OtherWindow);
        }
        signed.verify(&self.committee)?;
        match (&signed.message.body, checked) {
            (Body::Dealing(dealing), Some(checked)) => {
                if self.phase != Phase::Deal {
                    return Err(Ignored::OutOfPhase {
                        kind: "dealing",
                        phase: self.phase,
                    });
                }
                let sender = signed.message.sender;
                if self.generation.qualified().contains(&sender)
                    || self.generation.refused().contains_key(&sender)
                {
                    return Err(Ignored::Repeated("dealing"));
                }
                self.generation
                    .handle_checked_dealing(dealing, checked)
                    .map_err(|error| Ignored::Invalid(error.to_string()))
            }
            _ => self.apply_message(signed),
        }
    }

    fn apply_message(&mut self, signed: &SignedKeyperMessage) -> Result<(), Ignored> {
        let sender = signed.message.sender;
        let in_phase = |want: Phase, kind: &'static str| {
            if self.phase == want {
                Ok(())
            } else {
                Err(Ignored::OutOfPhase {
                    kind,
                    phase: self.phase,
                })
            }
        };
        match &signed.message.body {
            Body::Dealing(dealing) => {
                in_phase(Phase::Deal, "dealing")?;
                if self.generation.qualified().contains(&sender)
                    || self.generation.refused().contains_key(&sender)
                {
                    return Err(Ignored::Repeated("dealing"));
                }
                self.generation
                    .handle_dealing(dealing)
                    .map_err(|error| Ignored::Invalid(error.to_string()))
            }
            Body::Accusation { dealer } => {
                in_phase(Phase::Accuse, "accusation")?;
                if !self.accused.insert((sender, *dealer)) {
                    return Err(Ignored::Repeated("accusation"));
                }
                self.generation.handle_accusation(Accusation {
                    accuser: sender,
                    dealer: *dealer,
                });
                Ok(())
            }
            Body::Apology { accuser, shares } => {
                in_phase(Phase::Apologize, "apology")?;
                if !self.apologized.insert((sender, *accuser)) {
                    return Err(Ignored::Repeated("apology"));
                }
                let accepted = self.generation.handle_apology(&Apology {
                    dealer: sender,
                    accuser: *accuser,
                    shares: shares.clone(),
                });
                if accepted {
                    Ok(())
                } else {
                    Err(Ignored::Invalid(format!(
                        "dealer {sender}'s apology to keyper {accuser} does not answer an accusation with matching shares"
                    )))
                }
            }
            Body::Approval { digest } => {
                in_phase(Phase::Approve, "approval")?;
                let Some(Ok(result)) = &self.outcome else {
                    return Err(Ignored::Invalid("no result to approve".into()));
                };
                if *digest != result.digest {
                    return Err(Ignored::Invalid(format!(
                        "keyper {sender} approved another result"
                    )));
                }
                if self.approvals.contains_key(&sender) {
                    return Err(Ignored::Repeated("approval"));
                }
                self.approvals.insert(sender, signed.signature);
                Ok(())
            }
        }
    }

    fn finalize(&self) -> Result<WindowResult, GenerationError> {
        let keys = self.generation.finalize()?;
        let digest = result_digest(
            &self.committee,
            &keys.window,
            &keys.qualified,
            &commitments_digest(&keys),
            &batch_keys(&keys),
        );
        Ok(WindowResult { keys, digest })
    }

    /// The certificate, once `t` keypers approved the result.
    #[must_use]
    pub fn certificate(&self) -> Option<WindowCertificate> {
        let Some(Ok(result)) = &self.outcome else {
            return None;
        };
        if self.approvals.len() < self.committee.threshold() {
            return None;
        }
        Some(WindowCertificate {
            window: result.keys.window,
            qualified: result.keys.qualified.clone(),
            commitments_digest: commitments_digest(&result.keys),
            keys: batch_keys(&result.keys),
            approvals: self.approvals.iter().map(|(&j, &s)| (j, s)).collect(),
        })
    }
}

/// `S_e` of every batch of the window, compressed.
fn batch_keys(keys: &WindowKeys) -> Vec<[u8; 32]> {
    keys.commitments
        .iter()
        .map(|c| {
            let s: RistrettoPoint = c.secret_image();
            s.compress().to_bytes()
        })
        .collect()
}
