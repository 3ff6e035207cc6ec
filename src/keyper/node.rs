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

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::committee::{Committee, Window};
use super::dealing::{DealerSecrets, Dealing, deal};
use super::generation::{Generation, WindowKeys};
use super::log::{LogEntry, Phase, WindowLog};
use super::message::{Body, KeyperMessage, SignedKeyperMessage};
use super::record::KeyperRecord;
use super::release::{Release, ReleaseGuard, ReleaseRefusal};
use super::sharing::KeyperIndex;
use crate::envelope::{BatchSchedule, SequencerPublicKey, SignedSeal};
use crate::replica::certificate::{CommitCertificate, ReplicaSet};
use crate::types::BatchId;

/// Windows whose keys a keyper keeps (older ones are erased).
pub const KEYPER_WINDOWS_KEPT_MAX: usize = 64;

/// Generations a keyper takes part in at once; further openings are
/// ignored until one ends.
pub const GENERATIONS_RUNNING_MAX: usize = 8;

/// Attempts at one window's keys a keyper deals for; a log that opens more
/// gets no further dealing from it.
pub const ATTEMPTS_PER_WINDOW_MAX: u32 = 32;

/// The keyper's identity and the deployment it serves.
pub struct KeyperIdentity {
    /// The committee.
    pub committee: Committee,
    /// This keyper's signing key (its public half is a member's).
    pub signing: SigningKey,
    /// This keyper's decryption key (its image is the member's encryption
    /// key).
    pub decryption: Scalar,
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
}

impl KeyperNode {
    /// A keyper that has read nothing of the log yet, with its journal's
    /// records: the seals it released for (so a restart never releases for
    /// a second root) and its dealings (so it posts the same ones again
    /// and can answer accusations).
    ///
    /// # Errors
    ///
    /// [`KeyperError::NotAMember`].
    pub fn new(
        id: KeyperIdentity,
        journal: impl IntoIterator<Item = KeyperRecord>,
    ) -> Result<KeyperNode, KeyperError> {
        let me = id
            .committee
            .index_of(&id.signing.verifying_key().to_bytes())
            .ok_or(KeyperError::NotAMember)?;
        let mut guard = ReleaseGuard::new(id.replicas.clone());
        let mut stored = BTreeMap::new();
        let mut forgotten_below = 0;
        for record in journal {
            match record {
                KeyperRecord::Released(seal) if seal.e >= forgotten_below => guard.record(seal),
                KeyperRecord::Released(_) => {}
                KeyperRecord::Dealt { dealing, secrets } => {
                    stored.insert(dealing.window.id, (dealing, secrets));
                }
                KeyperRecord::Forgotten { below } => {
                    forgotten_below = forgotten_below.max(below);
                    guard.forget_below(forgotten_below);
                }
            }
        }
        Ok(KeyperNode {
            id,
            me,
            read: 0,
            generations: BTreeMap::new(),
            keys: BTreeMap::new(),
            guard,
            outbox: VecDeque::new(),
            stored,
            journal: VecDeque::new(),
            next_record: 0,
            durable: 0,
            held: VecDeque::new(),
            forgotten_below,
            attempts: BTreeMap::new(),
        })
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
    /// already and is skipped); then posts what they call for.
    pub fn handle_log<'a, R: CryptoRngCore + ?Sized>(
        &mut self,
        rng: &mut R,
        entries: impl IntoIterator<Item = (u64, &'a LogEntry)>,
    ) {
        for (position, entry) in entries {
            if position < self.read {
                continue;
            }
            self.read = position + 1;
            self.apply(entry);
        }
        self.post(rng);
    }

    fn apply(&mut self, entry: &LogEntry) {
        match entry {
            LogEntry::Open { window } => {
                // A new attempt at the same batches ends the earlier ones
                // (as the log keeper ends them).
                self.generations
                    .retain(|_, g| g.log.generation().window().first_batch != window.first_batch);
                let attempts = self.attempts.entry(window.first_batch).or_insert(0);
                *attempts = attempts.saturating_add(1);
                let exhausted = *attempts > ATTEMPTS_PER_WINDOW_MAX;
                while self.attempts.len() > KEYPER_WINDOWS_KEPT_MAX {
                    self.attempts.pop_first();
                }
                // A log that opens generations without end (a hostile log
                // keeper) gets a bounded amount of work: generations under
                // way, attempts per window, nothing for windows held or
                // forgotten.
                if exhausted
                    || self.generations.len() >= GENERATIONS_RUNNING_MAX
                    || window.first_batch < self.forgotten_below
                    || self.keys.contains_key(&window.first_batch)
                {
                    return;
                }
                let log = WindowLog::new(
                    self.id.committee.clone(),
                    Generation::keyper(
                        self.id.committee.clone(),
                        *window,
                        self.me,
                        self.id.decryption,
                    ),
                );
                // A dealing journaled for this id but another window
                // (a log keeper that lost its log) is not this one's.
                let dealing = self
                    .stored
                    .remove(&window.id)
                    .filter(|(d, _)| d.window == *window);
                self.generations.entry(window.id).or_insert(Own {
                    log,
                    dealing,
                    dealing_record: 0,
                    seen: Posted::default(),
                    posted: Posted::default(),
                });
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
        {
            self.keys
                .insert(result.keys.window.first_batch, result.keys.clone());
            let mut below = None;
            while self.keys.len() > KEYPER_WINDOWS_KEPT_MAX {
                if let Some((_, old)) = self.keys.pop_first() {
                    below = Some(old.window.first_batch + u64::from(old.window.batches));
                }
            }
            if let Some(below) = below {
                self.forget_below(below);
            }
        }
        self.generations.remove(&id);
        // Generations of the same batches under older ids are over too.
        let first = self.keys.keys().next_back().copied();
        self.generations
            .retain(|_, g| Some(g.log.generation().window().first_batch) != first);
    }

    /// Posts, for every generation under way, what its phase asks of this
    /// keyper and the log does not hold yet.
    fn post<R: CryptoRngCore + ?Sized>(&mut self, rng: &mut R) {
        let committee = &self.id.committee;
        for own in self.generations.values_mut() {
            let window: Window = *own.log.generation().window();
            let mut bodies = Vec::new();
            // The journal record a message must wait for (0: none).
            let mut after = 0;
            match own.log.phase() {
                Phase::Deal if !own.posted.dealing => {
                    if own.dealing.is_none() {
                        let (dealing, secrets) = deal(rng, committee, &window, self.me);
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
                    for a in own.log.generation().own_accusations() {
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

    /// A seal to answer at `now_ms`: the release decision and this keyper's
    /// share. On [`Release::First`] the caller journals the seal (fsync)
    /// and calls [`record_release`](Self::record_release) before the share
    /// leaves.
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
    ) -> Result<(Release, Zeroizing<[u8; 32]>), ReleaseRefusal> {
        if seal.e < self.forgotten_below {
            return Err(ReleaseRefusal::UnknownBatch(seal.e));
        }
        let share = self
            .keys
            .range(..=seal.e)
            .next_back()
            .and_then(|(_, k)| k.share(seal.e))
            .ok_or(ReleaseRefusal::UnknownBatch(seal.e))?;
        let release = self.guard.decide(
            seal,
            certificate,
            &self.id.sequencer,
            &self.id.schedule,
            self.id.skew_ms,
            now_ms,
        )?;
        Ok((release, Zeroizing::new(share.to_bytes())))
    }

    /// Forgets its releases below batch `below` and every window below it
    /// (erasing those shares), and never takes a window below it again: no
    /// share of such a batch can leave again, so the memory of what it
    /// released for them is not needed. Journals the watermark (a restart
    /// then drops those releases too). Called when windows expire.
    pub fn forget_below(&mut self, below: BatchId) {
        if below <= self.forgotten_below {
            return;
        }
        self.forgotten_below = below;
        self.guard.forget_below(below);
        self.keys
            .retain(|_, w| w.window.first_batch + u64::from(w.window.batches) > below);
        self.next_record += 1;
        self.journal
            .push_back((self.next_record, KeyperRecord::Forgotten { below }));
    }

    /// Records a first release (journaled already).
    pub fn record_release(&mut self, seal: SignedSeal) {
        self.guard.record(seal);
    }

    /// Evidence of the sequencer signing two seals for one batch.
    #[must_use]
    pub fn evidence(&self) -> &[(SignedSeal, SignedSeal)] {
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
