//! A keyper's state machine: it reads the committee's log (from the start
//! after a restart: the log is the catch-up), posts what the protocol asks
//! of it — its dealing when a generation opens, its accusations when the
//! dealing phase ends, its apologies when the accusation phase ends, its
//! approval of the result — and answers seals with its share under the
//! release rule.
//!
//! What it posts is decided from the log it has read, not from what it
//! remembers posting: a message of its own already in the log is not posted
//! again, and one lost in transit is posted again on the next read. Sans-IO:
//! the caller moves the log in and messages out, and journals (fsynced) what
//! [`KeyperNode::poll_record`] hands it — a dealing is posted only once its
//! record is durable — and each first release before the share leaves.
//!
//! The log is input from a log keeper the keyper does not trust
//! (`spec/keyper.md` §13): positions are checked, a generation is taken only
//! for a window that opens within [`OPEN_AHEAD_MS_MAX`] of the keyper's own
//! clock, generations and windows expire by that clock (never by a count a
//! log can inflate), a window is dealt for at most once per generation id,
//! and overlapping windows are refused — so no sequence of entries can crash
//! a keyper, evict the keys in use, or make it deal twice for one window.

use crate::codec::Encode;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::attestation::attest;
use super::committee::{Committee, Window};
use super::dealing::{DealerSecrets, Dealing, deal};
use super::generation::{Generation, WindowKeys};
use super::log::{LogEntry, Phase, WindowLog};
use super::message::{Body, KeyperMessage, SignedKeyperMessage};
use super::record::KeyperRecord;
use super::release::{Evidence, Release, ReleaseGuard, ReleaseRefusal};
use super::sharing::KeyperIndex;
use crate::commit::{CertificateError, CommitCertificate, ReplicaSet, log_entry_hash};
use crate::envelope::{BatchSchedule, SealStatement, SequencerPublicKey, SignedSeal};
use crate::types::BatchId;

/// Windows whose keys a keyper keeps at most. Past it, the window that
/// starts earliest goes (its shares erased, its releases forgotten): the
/// one in use and the next ones are kept. Windows also expire by the clock
/// ([`WINDOW_KEPT_AFTER_MS`]).
pub const KEYPER_WINDOWS_KEPT_MAX: usize = 64;

/// Of those, windows that open after the keyper's clock at most; past it,
/// the window that starts latest is dropped: a log opening windows far
/// ahead evicts nothing in use.
pub const KEYPER_WINDOWS_AHEAD_MAX: usize = 16;

/// How far ahead of the keyper's clock a window may open and still be
/// dealt for: a log that opens windows further ahead is ignored.
pub const OPEN_AHEAD_MS_MAX: u64 = 10 * 60 * 1000;

/// How long after a window's last batch closes its shares are kept (a
/// sequencer that stalled may still ask for a batch's key); then they are
/// erased and its releases forgotten.
pub const WINDOW_KEPT_AFTER_MS: u64 = 30 * 60 * 1000;

/// Generations a keyper takes part in at once; further openings are
/// ignored until one ends.
pub const GENERATIONS_RUNNING_MAX: usize = 8;

/// Attempts at one window's keys a keyper deals for; a log that opens more
/// gets no further dealing from it.
pub const ATTEMPTS_PER_WINDOW_MAX: u32 = 32;

/// The keyper's identity and the deployment it serves.
pub struct KeyperIdentity {
    /// The committee (bound to the deployment: `committee.deployment()`).
    pub committee: Committee,
    /// This keyper's signing key (its public half is a member's).
    pub signing: SigningKey,
    /// This keyper's decryption key (its image must be the member's
    /// encryption key). Zeroized on drop.
    pub decryption: Zeroizing<Scalar>,
    /// The sequencer whose seals it answers.
    pub sequencer: SequencerPublicKey,
    /// The batch clock.
    pub schedule: BatchSchedule,
    /// How far past a batch's close its clock must be before it releases.
    pub skew_ms: u64,
    /// For a replicated sequencer, the replicas' commit keys: a seal then
    /// needs a certificate of a majority of them.
    pub replicas: Option<ReplicaSet>,
}

/// What this keyper has posted to one generation: `seen` in the log, or
/// `posted` (sent or queued; a superset of `seen`).
#[derive(Clone, Default)]
struct Posted {
    dealing: bool,
    accused: BTreeSet<KeyperIndex>,
    apologized: BTreeSet<KeyperIndex>,
    approved: bool,
}

struct Own {
    log: WindowLog,
    /// Its dealing and the secrets behind it: the same dealing is posted
    /// again if it was lost, never a new one.
    dealing: Option<(Dealing, DealerSecrets)>,
    /// The journal record that holds the dealing (0: durable before this
    /// process started).
    dealing_record: u64,
    seen: Posted,
    posted: Posted,
}

/// A keyper.
pub struct KeyperNode {
    id: KeyperIdentity,
    me: KeyperIndex,
    /// The position of the next log entry to read.
    read: u64,
    generations: BTreeMap<u64, Own>,
    /// Finished windows' keys (with this keyper's shares), by first batch.
    keys: BTreeMap<BatchId, WindowKeys>,
    guard: ReleaseGuard,
    outbox: VecDeque<SignedKeyperMessage>,
    /// Dealings from the journal, by generation id, for when its log opens
    /// the generation.
    stored: BTreeMap<u64, (Dealing, DealerSecrets)>,
    /// Generation ids this keyper dealt for, with their windows (from its
    /// journal and since): it never deals twice for one id. Pruned as
    /// windows expire.
    dealt: BTreeMap<u64, Window>,
    /// The keyper's clock as last given.
    now_ms: u64,
    /// Why the keyper must stop, once it found out.
    fault: Option<KeyperFault>,
    /// Records to journal, numbered from 1.
    journal: VecDeque<(u64, KeyperRecord)>,
    next_record: u64,
    /// Every record up to this one is durable.
    durable: u64,
    /// Messages waiting for the record they depend on to be durable.
    held: VecDeque<(u64, SignedKeyperMessage)>,
    /// Releases below this batch are forgotten, and no window below it is
    /// taken again (so no share below it can ever leave again).
    forgotten_below: BatchId,
    /// Generations opened per window (by first batch), recent windows only.
    attempts: BTreeMap<BatchId, u32>,
}

impl std::fmt::Debug for KeyperNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyperNode")
            .field("me", &self.me)
            .field("read", &self.read)
            .field("generations", &self.generations.keys().collect::<Vec<_>>())
            .field("windows", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a keyper cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyperError {
    /// Its signing key is not a member's.
    #[error("the signing key is not a member of the committee")]
    NotAMember,
    /// Its decryption key's image is not its member entry's encryption
    /// key: it could read no share dealt to it, and would accuse every
    /// honest dealer into publishing its shares.
    #[error(
        "the decryption key does not match this member's encryption key in the committee ({configured}); use the key `keyper init` made for this entry"
    )]
    WrongDecryptionKey {
        /// The committee's encryption key for this member (hex).
        configured: String,
    },
    /// The committee is bound to another deployment than the sequencer key
    /// and batch clock this keyper serves.
    #[error(
        "the committee is bound to deployment {committee}, the sequencer key and batch clock make {configured}"
    )]
    WrongDeployment {
        /// The committee's deployment (hex).
        committee: String,
        /// This keyper's (hex).
        configured: String,
    },
    /// The journal belongs to another committee or deployment (or predates
    /// the binding of key generation to a deployment).
    #[error(
        "the journal belongs to committee {journal}, not {configured} (another deployment or committee): give this keyper a new data directory"
    )]
    OtherCommittee {
        /// What the journal names (hex; "none" for a journal without the
        /// record).
        journal: String,
        /// The configured committee's id (hex).
        configured: String,
    },
}

/// Why a running keyper stopped taking part: its own state is wrong, and
/// going on would hurt the committee. The process stops (and says why)
/// instead of posting accusations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyperFault {
    /// The keyper could not read the shares of as many dealers as the
    /// committee tolerates faulty, or not even those of its own dealing:
    /// its decryption key (or its committee entry) is wrong. Accusing them
    /// would make honest dealers publish its shares in clear.
    #[error(
        "generation {window}: this keyper cannot read its shares from {failed} of {dealings} dealings{own}: its decryption key or committee entry is wrong; stopping instead of accusing"
    )]
    CannotReadShares {
        /// The generation id.
        window: u64,
        /// Dealings whose shares to it failed.
        failed: usize,
        /// Valid dealings read.
        dealings: usize,
        /// ", its own among them" when its own dealing failed.
        own: &'static str,
    },
}

/// A keyper's answer to a seal it releases for: its share and its
/// signed attestation of the seal (`spec/keyper.md` §9).
#[derive(Debug)]
pub struct Answer {
    /// Whether this is the batch's first release (journal first) or a
    /// repeat.
    pub release: Release,
    /// The share `s_{e,j}` (zeroized on drop).
    pub share: Zeroizing<[u8; 32]>,
    /// The keyper's signature over the release message of the seal.
    pub attestation: [u8; 64],
}

impl KeyperNode {
    /// A keyper that has read nothing of the log yet, with its journal's
    /// records: the committee it belongs to (its first record; written now
    /// for an empty journal), the seals it released for (so a restart never
    /// releases for a second root), its dealings (so it posts the same ones
    /// again and can answer accusations) and its evidence.
    ///
    /// # Errors
    ///
    /// [`KeyperError::NotAMember`], [`KeyperError::WrongDecryptionKey`]
    /// (checked against the committee before anything else), and
    /// [`KeyperError::OtherCommittee`] for a journal of another committee
    /// or deployment.
    pub fn new(
        id: KeyperIdentity,
        journal: impl IntoIterator<Item = KeyperRecord>,
    ) -> Result<KeyperNode, KeyperError> {
        let me = id
            .committee
            .index_of(&id.signing.verifying_key().to_bytes())
            .ok_or(KeyperError::NotAMember)?;
        let configured = id
            .committee
            .member(me)
            .map(|m| m.encryption_key)
            .unwrap_or_default();
        if curve25519_dalek::RistrettoPoint::mul_base(&id.decryption)
            .compress()
            .to_bytes()
            != configured
        {
            return Err(KeyperError::WrongDecryptionKey {
                configured: hex::encode(configured),
            });
        }
        let deployment = crate::envelope::DeploymentId::of(&id.sequencer, &id.schedule);
        if *id.committee.deployment() != deployment {
            return Err(KeyperError::WrongDeployment {
                committee: id.committee.deployment().to_string(),
                configured: deployment.to_string(),
            });
        }
        let committee_id = id.committee.id();
        let mut guard = ReleaseGuard::new(id.replicas.clone());
        let mut stored = BTreeMap::new();
        let mut dealt = BTreeMap::new();
        let mut forgotten_below = BatchId::ZERO;
        let mut records = 0u64;
        for record in journal {
            if records == 0 {
                let journal = match &record {
                    KeyperRecord::Committee { id } => *id,
                    _ => [0; 32],
                };
                if journal != committee_id {
                    return Err(KeyperError::OtherCommittee {
                        journal: if journal == [0; 32] {
                            "none".into()
                        } else {
                            hex::encode(journal)
                        },
                        configured: hex::encode(committee_id),
                    });
                }
            }
            records += 1;
            match record {
                KeyperRecord::Released(seal) if seal.e >= forgotten_below => guard.record(seal),
                KeyperRecord::Released(_) | KeyperRecord::Committee { .. } => {}
                KeyperRecord::Dealt { dealing, secrets } => {
                    dealt.insert(dealing.window.id, dealing.window);
                    stored.insert(dealing.window.id, (dealing, secrets));
                }
                KeyperRecord::Forgotten { below } => {
                    forgotten_below = forgotten_below.max(below);
                    guard.forget_below(forgotten_below);
                }
                KeyperRecord::Evidence(evidence) => guard.restore_evidence(evidence),
            }
        }
        let mut node = KeyperNode {
            id,
            me,
            read: 0,
            generations: BTreeMap::new(),
            keys: BTreeMap::new(),
            guard,
            outbox: VecDeque::new(),
            stored,
            dealt,
            now_ms: 0,
            fault: None,
            journal: VecDeque::new(),
            next_record: 0,
            durable: 0,
            held: VecDeque::new(),
            forgotten_below,
            attempts: BTreeMap::new(),
        };
        if records == 0 {
            node.push_record(KeyperRecord::Committee { id: committee_id });
        }
        Ok(node)
    }

    fn push_record(&mut self, record: KeyperRecord) -> u64 {
        self.next_record += 1;
        self.journal.push_back((self.next_record, record));
        self.next_record
    }

    /// Why this keyper must stop, if it found out: the caller stops the
    /// process (nothing more is posted once a fault is set).
    #[must_use]
    pub fn fault(&self) -> Option<&KeyperFault> {
        self.fault.as_ref()
    }

    /// The next record to journal (fsynced before
    /// [`handle_durable`](Self::handle_durable) is called with its number).
    pub fn poll_record(&mut self) -> Option<(u64, KeyperRecord)> {
        self.journal.pop_front()
    }

    /// Every record up to `record` is durable: the messages that waited for
    /// them may be posted.
    pub fn handle_durable(&mut self, record: u64) {
        self.durable = self.durable.max(record);
        while let Some((at, _)) = self.held.front() {
            if *at > self.durable {
                break;
            }
            if let Some((_, message)) = self.held.pop_front() {
                self.outbox.push_back(message);
            }
        }
    }

    /// This keyper's index.
    #[must_use]
    pub fn index(&self) -> KeyperIndex {
        self.me
    }

    /// The position of the next log entry to read (where the next read
    /// starts).
    #[must_use]
    pub fn read(&self) -> u64 {
        self.read
    }

    /// The next log entries, with their positions (from
    /// [`read`](Self::read) on, ascending; an entry below it was read
    /// already and is skipped), read at `now_ms` on the keyper's clock;
    /// then expires what the clock says is over and posts what the entries
    /// call for.
    ///
    /// A keyper of a replicated sequencer (configured with its replicas)
    /// takes no entry this way: only certified ones
    /// ([`handle_certified_log`](Self::handle_certified_log)).
    pub fn handle_log<'a, R: CryptoRngCore + ?Sized>(
        &mut self,
        rng: &mut R,
        now_ms: u64,
        entries: impl IntoIterator<Item = (u64, &'a LogEntry)>,
    ) {
        if self.id.replicas.is_some() {
            self.now_ms = self.now_ms.max(now_ms);
            self.expire();
            return;
        }
        self.apply_log(rng, now_ms, entries);
    }

    /// The next log entries of a replicated sequencer with the replicas'
    /// certificate of them (`spec/keyper.md` §13): taken, as
    /// [`handle_log`](Self::handle_log) takes entries, only if a majority
    /// of the configured replicas signed exactly these entries at these
    /// positions — a replica that was compromised, or a deposed leader,
    /// serves no entry the cluster did not commit. Without configured
    /// replicas (a single node) the certificate is not needed.
    ///
    /// # Errors
    ///
    /// [`CertificateError`] for a certificate that does not cover the
    /// entries with a majority; nothing is taken then.
    pub fn handle_certified_log<R: CryptoRngCore + ?Sized>(
        &mut self,
        rng: &mut R,
        now_ms: u64,
        entries: &[(u64, LogEntry)],
        certificate: &CommitCertificate,
    ) -> Result<(), CertificateError> {
        if let Some(replicas) = &self.id.replicas {
            let hashes: Vec<(u64, [u8; 32])> = entries
                .iter()
                .map(|(position, entry)| (*position, log_entry_hash(&entry.to_bytes())))
                .collect();
            replicas.check_log(
                &self.id.sequencer.to_bytes(),
                &self.id.committee.id(),
                &hashes,
                certificate,
            )?;
        }
        self.apply_log(rng, now_ms, entries.iter().map(|(p, e)| (*p, e)));
        Ok(())
    }

    fn apply_log<'a, R: CryptoRngCore + ?Sized>(
        &mut self,
        rng: &mut R,
        now_ms: u64,
        entries: impl IntoIterator<Item = (u64, &'a LogEntry)>,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        for (position, entry) in entries {
            if position < self.read {
                continue;
            }
            // The last position cannot be followed by another: an entry
            // there is refused rather than overflow the next position.
            let Some(next) = position.checked_add(1) else {
                continue;
            };
            self.read = next;
            self.apply(entry);
        }
        self.expire();
        if self.fault.is_none() {
            self.post(rng);
        }
    }

    /// Whether it serves a replicated sequencer (it was configured with
    /// the replicas): then it takes only certified log entries.
    #[must_use]
    pub fn replicated(&self) -> bool {
        self.id.replicas.is_some()
    }

    /// Starts reading the log again from its beginning, as a restarted
    /// keyper does, keeping its windows, releases and dealings: for a log
    /// keeper whose log ends before the position this keyper reached (it
    /// read entries from a log keeper that served positions no honest log
    /// has).
    pub fn rewind(&mut self) {
        self.read = 0;
        for (id, own) in std::mem::take(&mut self.generations) {
            if let Some(dealing) = own.dealing {
                self.stored.insert(id, dealing);
            }
        }
        self.outbox.clear();
        self.held.clear();
        self.attempts.clear();
    }

    /// Whether `window` may be taken now: it opens within
    /// [`OPEN_AHEAD_MS_MAX`] of the keyper's clock and has not expired.
    fn in_horizon(&self, window: &Window) -> bool {
        let schedule = &self.id.schedule;
        let last = window
            .first_batch
            .saturating_add(u64::from(window.batches).saturating_sub(1));
        match (
            schedule.open_ms(window.first_batch),
            schedule.close_ms(last),
        ) {
            (Some(opens), Some(closes)) => {
                opens <= self.now_ms.saturating_add(OPEN_AHEAD_MS_MAX)
                    && closes.saturating_add(WINDOW_KEPT_AFTER_MS) > self.now_ms
            }
            _ => false,
        }
    }

    /// Whether `window` is over by the keyper's clock: its last batch
    /// closed more than [`WINDOW_KEPT_AFTER_MS`] ago.
    fn expired(&self, window: &Window) -> bool {
        let last = window
            .first_batch
            .saturating_add(u64::from(window.batches).saturating_sub(1));
        self.id
            .schedule
            .close_ms(last)
            .is_some_and(|closes| closes.saturating_add(WINDOW_KEPT_AFTER_MS) <= self.now_ms)
    }

    /// Drops, by the clock, generations and windows that are over, and
    /// forgets the releases below the windows that expired.
    fn expire(&mut self) {
        let now = self.now_ms;
        let schedule = self.id.schedule;
        let over = |w: &Window| {
            let last = w
                .first_batch
                .saturating_add(u64::from(w.batches).saturating_sub(1));
            schedule
                .close_ms(last)
                .is_some_and(|closes| closes.saturating_add(WINDOW_KEPT_AFTER_MS) <= now)
        };
        self.generations
            .retain(|_, g| !over(g.log.generation().window()));
        self.stored.retain(|_, (d, _)| !over(&d.window));
        self.dealt.retain(|_, w| !over(w));
        let below = self
            .keys
            .values()
            .filter(|k| over(&k.window))
            .map(|k| k.window.first_batch + u64::from(k.window.batches))
            .max();
        if let Some(below) = below {
            self.forget_below(below);
        }
    }

    fn apply(&mut self, entry: &LogEntry) {
        match entry {
            LogEntry::Open { window } => {
                // Ignored: a window not valid, outside the keyper's horizon,
                // below what it forgot, overlapping a window it holds, an
                // id already under way (a repeated `Open` must not end the
                // dealing it started), or overlapping another window under
                // way that is not an attempt at the same batches.
                if window.check().is_err()
                    || !self.in_horizon(window)
                    || window.first_batch < self.forgotten_below
                    || self.generations.contains_key(&window.id)
                    || self.keys.values().any(|k| overlap(&k.window, window))
                    || self.generations.values().any(|g| {
                        let w = g.log.generation().window();
                        overlap(w, window)
                            && (w.first_batch, w.batches) != (window.first_batch, window.batches)
                    })
                {
                    return;
                }
                // A new attempt at the same batches ends the earlier ones
                // (as the log keeper ends them); their dealings are kept,
                // so an `Open` of an earlier id again posts the same one.
                let ended: Vec<u64> = self
                    .generations
                    .iter()
                    .filter(|(_, g)| g.log.generation().window().first_batch == window.first_batch)
                    .map(|(&id, _)| id)
                    .collect();
                for id in ended {
                    self.end_generation(id);
                }
                let attempts = self.attempts.entry(window.first_batch).or_insert(0);
                *attempts = attempts.saturating_add(1);
                let exhausted = *attempts > ATTEMPTS_PER_WINDOW_MAX;
                while self.attempts.len() > KEYPER_WINDOWS_KEPT_MAX {
                    self.attempts.pop_first();
                }
                if exhausted {
                    return;
                }
                // At most GENERATIONS_RUNNING_MAX under way: the one that
                // starts latest yields to an earlier window (the one needed
                // sooner), else the new one is ignored.
                if self.generations.len() >= GENERATIONS_RUNNING_MAX {
                    let latest = self
                        .generations
                        .iter()
                        .map(|(&id, g)| (g.log.generation().window().first_batch, id))
                        .max();
                    match latest {
                        Some((first, id)) if first > window.first_batch => self.end_generation(id),
                        _ => return,
                    }
                }
                let log = WindowLog::new(
                    self.id.committee.clone(),
                    Generation::keyper(
                        self.id.committee.clone(),
                        *window,
                        self.me,
                        *self.id.decryption,
                    ),
                );
                // A dealing journaled for this id but another window
                // (a log keeper that lost its log) is not this one's.
                let dealing = self
                    .stored
                    .remove(&window.id)
                    .filter(|(d, _)| d.window == *window);
                // Dealt for this id before and the secrets are gone: take
                // part without dealing (never a second dealing for an id).
                let dealt_before = self.dealt.get(&window.id) == Some(window) && dealing.is_none();
                self.generations.insert(
                    window.id,
                    Own {
                        log,
                        dealing,
                        dealing_record: 0,
                        seen: Posted {
                            dealing: dealt_before,
                            ..Posted::default()
                        },
                        posted: Posted {
                            dealing: dealt_before,
                            ..Posted::default()
                        },
                    },
                );
            }
            LogEntry::PhaseEnd { window, .. } => {
                if let Some(own) = self.generations.get_mut(&window.id) {
                    let _ = own.log.apply(entry);
                }
                self.collect(window.id);
            }
            LogEntry::Message(signed) => {
                let Some(own) = self.generations.get_mut(&signed.message.window.id) else {
                    return;
                };
                if own.log.apply(entry).is_ok() && signed.message.sender == self.me {
                    for p in [&mut own.seen, &mut own.posted] {
                        match &signed.message.body {
                            Body::Dealing(_) => p.dealing = true,
                            Body::Accusation { dealer } => {
                                p.accused.insert(*dealer);
                            }
                            Body::Apology { accuser, .. } => {
                                p.apologized.insert(*accuser);
                            }
                            Body::Approval { .. } => p.approved = true,
                        }
                    }
                }
                self.collect(signed.message.window.id);
            }
        }
    }

    /// Keeps a generation's keys once it is certified (its approvals are in
    /// the log), and forgets it.
    fn collect(&mut self, id: u64) {
        let Some(own) = self.generations.get(&id) else {
            return;
        };
        if own.log.certificate().is_none() {
            return;
        }
        if let Some(Ok(result)) = own.log.outcome()
            && result.keys.window.first_batch >= self.forgotten_below
            && !self.expired(&result.keys.window)
            && !self
                .keys
                .values()
                .any(|k| overlap(&k.window, &result.keys.window))
        {
            self.keys
                .insert(result.keys.window.first_batch, result.keys.clone());
            self.bound_keys();
        }
        self.generations.remove(&id);
        // Generations of the same batches under older ids are over too.
        let held: Vec<Window> = self.keys.values().map(|k| k.window).collect();
        let over: Vec<u64> = self
            .generations
            .iter()
            .filter(|(_, g)| held.iter().any(|w| overlap(w, g.log.generation().window())))
            .map(|(&id, _)| id)
            .collect();
        for id in over {
            self.end_generation(id);
        }
    }

    /// Keeps at most [`KEYPER_WINDOWS_AHEAD_MAX`] windows ahead of the
    /// clock (dropping the latest) and [`KEYPER_WINDOWS_KEPT_MAX`] in all
    /// (forgetting the earliest, with its releases). Before, only the
    /// latest went: with windows shorter than
    /// [`WINDOW_KEPT_AFTER_MS`] / 64, every window past the 64th was
    /// dropped as soon as it was certified — the one about to be in use —
    /// and every seal refused from then on.
    fn bound_keys(&mut self) {
        let now = self.now_ms;
        let schedule = self.id.schedule;
        let ahead = |w: &Window| {
            schedule
                .open_ms(w.first_batch)
                .is_none_or(|opens| opens > now)
        };
        while self.keys.values().filter(|k| ahead(&k.window)).count() > KEYPER_WINDOWS_AHEAD_MAX {
            self.keys.pop_last();
        }
        while self.keys.len() > KEYPER_WINDOWS_KEPT_MAX {
            let Some(below) = self.keys.values().next().map(|k| {
                k.window
                    .first_batch
                    .saturating_add(u64::from(k.window.batches))
            }) else {
                break;
            };
            self.forget_below(below);
        }
    }

    /// Ends generation `id`, keeping its dealing (if any) so the same one
    /// is posted should the log open that id again.
    fn end_generation(&mut self, id: u64) {
        if let Some(own) = self.generations.remove(&id)
            && let Some(dealing) = own.dealing
        {
            self.stored.insert(id, dealing);
        }
    }

    /// Posts, for every generation under way, what its phase asks of this
    /// keyper and the log does not hold yet.
    fn post<R: CryptoRngCore + ?Sized>(&mut self, rng: &mut R) {
        let committee = &self.id.committee;
        let threshold = committee.threshold();
        for own in self.generations.values_mut() {
            let window: Window = *own.log.generation().window();
            let mut bodies = Vec::new();
            // The journal record a message must wait for (0: none).
            let mut after = 0;
            match own.log.phase() {
                Phase::Deal if !own.posted.dealing => {
                    if own.dealing.is_none() {
                        let (dealing, secrets) = deal(rng, committee, &window, self.me);
                        self.dealt.insert(window.id, window);
                        self.next_record += 1;
                        self.journal.push_back((
                            self.next_record,
                            KeyperRecord::Dealt {
                                dealing: dealing.clone(),
                                secrets: DealerSecrets::from_polynomials(
                                    secrets.polynomials().to_vec(),
                                ),
                            },
                        ));
                        own.dealing = Some((dealing, secrets));
                        own.dealing_record = self.next_record;
                    }
                    if let Some((dealing, _)) = &own.dealing {
                        own.posted.dealing = true;
                        after = own.dealing_record;
                        bodies.push(Body::Dealing(dealing.clone()));
                    }
                }
                Phase::Accuse => {
                    let accusations = own.log.generation().own_accusations();
                    let own_failed = accusations.iter().any(|a| a.dealer == self.me);
                    // More failures than the committee tolerates faulty
                    // dealers (t − 1), or its own dealing: the fault is this
                    // keyper's. It stops instead of making honest dealers
                    // publish its shares.
                    if own_failed || accusations.len() >= threshold.max(2) {
                        self.fault = Some(KeyperFault::CannotReadShares {
                            window: window.id,
                            failed: accusations.len(),
                            dealings: own.log.generation().dealings(),
                            own: if own_failed {
                                ", its own among them"
                            } else {
                                ""
                            },
                        });
                        self.outbox.clear();
                        self.held.clear();
                        return;
                    }
                    for a in accusations {
                        if own.posted.accused.insert(a.dealer) {
                            bodies.push(Body::Accusation { dealer: a.dealer });
                        }
                    }
                }
                Phase::Apologize => {
                    // Without the secrets (lost in a restart) there is no
                    // answer: this dealer is left out of the window.
                    if let Some((_, secrets)) = &own.dealing {
                        let accusers: Vec<KeyperIndex> = own
                            .log
                            .generation()
                            .accusations_against(self.me)
                            .map(|a| a.accuser)
                            .collect();
                        for accuser in accusers {
                            if own.posted.apologized.insert(accuser) {
                                bodies.push(Body::Apology {
                                    accuser,
                                    shares: secrets.shares_for(accuser),
                                });
                            }
                        }
                    }
                }
                Phase::Approve if !own.posted.approved => {
                    if let Some(Ok(result)) = own.log.outcome() {
                        own.posted.approved = true;
                        bodies.push(Body::Approval {
                            digest: result.digest,
                        });
                    }
                }
                _ => {}
            }
            for body in bodies {
                let message = KeyperMessage {
                    window,
                    sender: self.me,
                    body,
                }
                .sign(&self.id.signing, committee);
                if after > self.durable {
                    self.held.push_back((after, message));
                } else {
                    self.outbox.push_back(message);
                }
            }
        }
    }

    /// The next message to post to the log.
    pub fn poll_message(&mut self) -> Option<SignedKeyperMessage> {
        self.outbox.pop_front()
    }

    /// Forgets messages not yet sent (the connection to the log keeper was
    /// lost): the next read of the log posts again whatever it lacks.
    pub fn reset_outbox(&mut self) {
        self.outbox.clear();
        for own in self.generations.values_mut() {
            own.posted = own.seen.clone();
        }
    }

    /// A seal to answer at `now_ms`: the release decision, this keyper's
    /// share and its attestation of the seal. On [`Release::First`] the
    /// caller journals the seal (fsync) and calls
    /// [`record_release`](Self::record_release) before the share leaves. A
    /// second seal of a released batch is refused and, the first time, an
    /// evidence record is queued ([`poll_record`](Self::poll_record)).
    ///
    /// # Errors
    ///
    /// [`ReleaseRefusal`], also [`ReleaseRefusal::UnknownBatch`] for a
    /// batch outside every finished window.
    pub fn handle_seal(
        &mut self,
        seal: &SignedSeal,
        certificate: Option<&CommitCertificate>,
        now_ms: u64,
    ) -> Result<Answer, ReleaseRefusal> {
        self.now_ms = self.now_ms.max(now_ms);
        if seal.e < self.forgotten_below {
            return Err(ReleaseRefusal::UnknownBatch(seal.e));
        }
        let share = self
            .keys
            .range(..=seal.e)
            .next_back()
            .and_then(|(_, k)| k.share(seal.e))
            .ok_or(ReleaseRefusal::UnknownBatch(seal.e))?;
        let decided = self.guard.decide(
            seal,
            certificate,
            &self.id.sequencer,
            &self.id.schedule,
            self.id.skew_ms,
            now_ms,
        );
        if let Some(evidence) = self.guard.take_new_evidence() {
            self.push_record(KeyperRecord::Evidence(evidence));
        }
        let release = decided?;
        let attestation = attest(
            &self.id.signing,
            &self.id.committee,
            &SealStatement {
                e: seal.e,
                count: seal.count,
                root: seal.root,
            },
        );
        Ok(Answer {
            release,
            share: Zeroizing::new(share.to_bytes()),
            attestation,
        })
    }

    /// Forgets its releases below batch `below` and every window below it
    /// (erasing those shares), and never takes a window below it again: no
    /// share of such a batch can leave again, so the memory of what it
    /// released for them is not needed. Journals the watermark (a restart
    /// then drops those releases too). Called when windows expire, and
    /// when more than [`KEYPER_WINDOWS_KEPT_MAX`] are held.
    pub fn forget_below(&mut self, below: BatchId) {
        if below <= self.forgotten_below {
            return;
        }
        self.forgotten_below = below;
        self.guard.forget_below(below);
        self.keys
            .retain(|_, w| w.window.first_batch + u64::from(w.window.batches) > below);
        self.push_record(KeyperRecord::Forgotten { below });
    }

    /// Records a first release (journaled already).
    pub fn record_release(&mut self, seal: SignedSeal) {
        self.guard.record(seal);
    }

    /// Evidence of the sequencer signing two seals for one batch (at most
    /// [`EVIDENCE_MAX`](super::release::EVIDENCE_MAX) pairs; each is
    /// journaled).
    #[must_use]
    pub fn evidence(&self) -> &[Evidence] {
        self.guard.evidence()
    }

    /// Whether this keyper holds a share of batch `e`.
    #[must_use]
    pub fn holds(&self, e: BatchId) -> bool {
        self.keys
            .range(..=e)
            .next_back()
            .is_some_and(|(_, k)| k.window.contains(e))
    }
}

/// Whether two windows share a batch.
fn overlap(a: &Window, b: &Window) -> bool {
    let end = |w: &Window| w.first_batch.saturating_add(u64::from(w.batches));
    a.first_batch < end(b) && b.first_batch < end(a)
}
