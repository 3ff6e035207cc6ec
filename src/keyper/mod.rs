//! The keyper committee's cryptography: a `t`-of-`n` committee deals an
//! independent key for every batch of a window ahead of time, so that no one
//! — not the sequencer's operator — holds a batch secret `s_e` before `t`
//! keypers release their shares for a validly signed seal of the closed
//! batch (`spec/keyper.md`).
//!
//! Pure and deterministic (randomness is an argument); the keyper process
//! and the sequencer's side of the release move the messages.
//!
//! - [`sharing`]: Shamir shares with Feldman commitments, Lagrange at 0.
//! - [`proof`]: Schnorr proofs of knowledge bound to a context.
//! - [`committee`]: members, indices, the committee id, windows.
//! - [`config`]: the `[committee]` configuration section.
//! - [`dealing`]: a dealer's dealing for a window, shares sealed to each
//!   keyper.
//! - [`generation`]: one window's generation: deal → accuse → apologize →
//!   finalize, with disqualification.
//! - [`message`]: signed keyper messages (dealing, accusation, apology,
//!   approval) and their bytes.
//! - [`log`]: replaying a generation's log, phase by phase, into its
//!   result, and the committee's certificate over a window's keys.
//! - [`log_keeper`]: the log keeper (the sequencer's part): opens generations,
//!   takes messages that count, ends phases by its clock, retries.
//! - [`node`]: a keyper's state machine: reads the log, posts what its
//!   phase asks, answers seals.
//! - [`record`]: what a keyper journals: its releases and its dealings
//!   with their secrets.
//! - [`release`]: the release rule a keyper keeps (first seal, after close
//!   plus skew, evidence of two roots).
//! - [`custodian`]: the sequencer's custodian over a committee's certified
//!   windows: announces only certified keys, combines released shares.
//! - [`combine`]: checking released shares and combining any `t` into `s_e`.
//! - [`attestation`]: a keyper's signed statement of the seal it released
//!   for, `t` of which every published result carries.

pub mod attestation;
pub mod combine;
pub mod committee;
pub mod config;
pub mod custodian;
pub mod dealing;
pub mod generation;
pub mod log;
pub mod log_keeper;
pub mod message;
pub mod node;
pub mod proof;
pub mod record;
pub mod release;
pub mod sharing;

pub use attestation::{AttestationError, check_attestations};
pub use combine::{CombineError, Combiner};
pub use committee::{COMMITTEE_MAX, Committee, CommitteeError, Member, WINDOW_BATCHES_MAX, Window};
pub use custodian::{CommitteeCustodian, NoKeyCustodian, WindowError};
pub use dealing::{BatchDeal, DealerSecrets, Dealing, DealingError, SealedShares, deal};
pub use generation::{Accusation, Apology, Generation, GenerationError, WindowKeys};
pub use log::{Ignored, LogEntry, Phase, Prechecked, WindowCertificate, WindowLog, WindowResult};
pub use log_keeper::{GenerationParams, KeeperSnapshot, LogKeeper, ReplayError};
pub use message::{Body, KeyperMessage, MessageError, SignedKeyperMessage};
pub use node::{Answer, KeyperError, KeyperFault, KeyperIdentity, KeyperNode};
pub use proof::Proof;
pub use record::KeyperRecord;
pub use release::{Evidence, Release, ReleaseGuard, ReleaseRefusal};
pub use sharing::{Commitments, KeyperIndex, Polynomial, ShareError};
