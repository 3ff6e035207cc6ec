//! Seeded simulation of the sequencer core over a simulated disk: random
//! traders, bad envelopes, deposits, and crashes at random write points.
//!
//! After every run: no acknowledged envelope is lost (each is in a sealed and
//! cleared batch), no batch is settled twice, `verify` re-derives every batch
//! byte for byte, and a sequencer recovered from the final journal holds the
//! same ledger as the one that ran. A failure prints its seed; rerun one
//! seed with `SEALBATCH_SIM_SEED=<seed> cargo test --test logic -- sequencer_sim::`.
//!
//! Beside two ordinary markets the deployment has two extreme ones (a lot of
//! 10^18 units; tick and lot sizes near `u64::MAX` with the highest fee),
//! whose traders hold balances near the supply limit and send quantities up
//! to `u64::MAX`, bundles of up to 256 orders and the bundle that once
//! halted the sequencer. No batch may ever be voided.

use sealbatch::codec::{Decode, Encode};
use sealbatch::signed::Statement as _;
use sealbatch::types::Lsn;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sealbatch::envelope::{
    BatchSchedule, Commitment, EmbeddedCustodian, KeyCustodian, MasterSecret, SealStatement,
    SequencerKey, seal_bundle,
};
use sealbatch::journal::{
    CheckpointProblem, FoundCheckpoint, Journal, JournalConfig, SimStorage, StoredCheckpoint,
    read_checkpoints,
};
use sealbatch::keyper::{
    Committee, CommitteeCustodian, Generation, KeyperIndex, Member, Release, ReleaseGuard, Window,
    WindowCertificate, WindowKeys,
};
use sealbatch::market::{AccountId, AssetId, MarketConfig};
use sealbatch::node::UnusableCheckpoint;
use sealbatch::order::OrderSpec;
use sealbatch::sequencer::{
    BatchOutcome, Checkpoint, EnvelopeStatus, Event, Genesis, Journaled, Limits, OpToken,
    ResultAssembler, Sequencer, SequencerRecord, SubmitError, SubmitToken, Transcript,
    TranscriptError, UnusableState, export_transcripts, verify_journal, verify_journal_with,
    verify_transcript,
};
use sealbatch::types::{BatchId, MarketId, Side, Tick};

use crate::common;
use common::seeds;

const USD: AssetId = AssetId(0);
const BTC: AssetId = AssetId(1);
const ETH: AssetId = AssetId(2);
/// An 18-decimal asset: one lot of market 4 is 10^18 of its units.
const WEI: AssetId = AssetId(3);
/// The base and quote of market 5, whose units are near `u64::MAX`.
const HUGE_BASE: AssetId = AssetId(4);
const HUGE_QUOTE: AssetId = AssetId(5);
const ASSETS: [AssetId; 6] = [USD, BTC, ETH, WEI, HUGE_BASE, HUGE_QUOTE];
/// The band top of market 5; its tick is as large as the band allows.
const HUGE_BAND_MAX: u64 = (1 << 20) - 1;
const GENESIS_MS: u64 = 1_700_000_000_000;
/// Small segments, so that runs roll over many and pruning has work.
const SIM_JOURNAL: JournalConfig = JournalConfig {
    segment_bytes_max: 32 << 10,
};

/// When the simulated node checkpoints.
#[derive(Clone, Copy, Debug)]
struct Checkpointing {
    /// Cleared batches between checkpoints (0: never).
    every: u64,
    /// Remove segments below the kept checkpoints.
    prune: bool,
}

/// Every run checkpoints often, and each boot checks the recovery from the
/// checkpoint against a full replay.
const CHECKPOINT_OFTEN: Checkpointing = Checkpointing {
    every: 3,
    prune: false,
};

fn genesis(sequencer: &SequencerKey) -> Genesis {
    let market = |id, base, initial_price| MarketConfig {
        id: MarketId(id),
        base,
        quote: USD,
        tick_size: 1,
        lot_size: 10,
        band_min: Tick(50),
        band_max: Tick(150),
        initial_price,
        fee_bps: 5,
    };
    Genesis {
        sequencer: sequencer.public_key(),
        schedule: BatchSchedule {
            genesis_ms: GENESIS_MS,
            batch_length_ms: 100,
        },
        fee_account: AccountId([0xfe; 32]),
        orders_per_account_per_batch_max:
            sealbatch::sequencer::ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT,
        markets: vec![
            market(1, BTC, Tick(100)),
            market(2, ETH, Tick(90)),
            // How an asset with 18 decimals is usually configured.
            MarketConfig {
                id: MarketId(4),
                base: WEI,
                quote: USD,
                tick_size: 1,
                lot_size: 1_000_000_000_000_000_000,
                band_min: Tick(1),
                band_max: Tick(1000),
                initial_price: Tick(500),
                fee_bps: 5,
            },
            // Every unit as large as the configuration rules allow.
            MarketConfig {
                id: MarketId(5),
                base: HUGE_BASE,
                quote: HUGE_QUOTE,
                tick_size: u64::MAX / HUGE_BAND_MAX,
                lot_size: u64::MAX / 16,
                band_min: Tick(1),
                band_max: Tick(HUGE_BAND_MAX),
                initial_price: Tick(7),
                fee_bps: sealbatch::market::FEE_BPS_MAX,
            },
        ],
    }
}

struct World {
    rng: ChaCha20Rng,
    disk: SimStorage,
    journal: Option<Journal<SimStorage>>,
    sequencer: Option<Sequencer>,
    now: u64,
    master: [u8; 32],
    key_seed: [u8; 32],
    traders: Vec<SigningKey>,
    nonce: u64,
    next_token: u64,
    /// Submissions whose receipt was delivered: token -> (batch, commitment).
    pending: BTreeMap<u64, (BatchId, Commitment)>,
    acked: BTreeSet<(BatchId, Commitment)>,
    cleared: BTreeMap<BatchId, Arc<BatchOutcome>>,
    crashes: usize,
    checkpointing: Checkpointing,
    cleared_since_checkpoint: u64,
    /// Boots that started from a checkpoint.
    checkpoint_boots: usize,
    /// The keyper committee holding the batch keys (`None`: the embedded
    /// custodian).
    committee: Option<SimCommittee>,
}

/// A keyper committee of five (threshold 3) in the simulation: keyper 5
/// always releases a wrong share, and keypers go down and come back.
struct SimCommittee {
    committee: Committee,
    certificate: WindowCertificate,
    observer: WindowKeys,
    keypers: Vec<SimKeyper>,
    /// Key requests answered, shares released, shares refused as wrong.
    requests: usize,
    released: usize,
    refused: usize,
}

struct SimKeyper {
    index: KeyperIndex,
    keys: WindowKeys,
    /// Its signing key: it attests the seal it releases for.
    signing: ed25519_dalek::SigningKey,
    /// The keyper's memory of its releases: its own journal, which
    /// survives the sequencer's crashes.
    guard: ReleaseGuard,
    down: bool,
    faulty: bool,
}

/// The sequencer key of the worlds with a committee: the committee is
/// bound to one deployment (this key and the batch clock), and its
/// generation is made once for all seeds.
const SIM_COMMITTEE_SEQUENCER: [u8; 32] = [0x5e; 32];

/// The window the simulation's committee deals: every batch a run reaches.
const SIM_WINDOW: Window = Window {
    id: 1,
    first_batch: BatchId::ZERO,
    batches: 256,
};

/// One generation for all seeds (it is the costly part): the committee,
/// each keyper's keys, the observer's keys and the certificate, from a
/// generation replayed through its log.
#[allow(clippy::type_complexity)]
fn sim_generation() -> &'static (
    Committee,
    Vec<(WindowKeys, ed25519_dalek::SigningKey)>,
    WindowKeys,
    WindowCertificate,
) {
    use sealbatch::keyper::{Body, KeyperMessage, LogEntry, Phase, WindowLog, deal};
    #[allow(clippy::type_complexity)]
    static GENERATION: std::sync::OnceLock<(
        Committee,
        Vec<(WindowKeys, ed25519_dalek::SigningKey)>,
        WindowKeys,
        WindowCertificate,
    )> = std::sync::OnceLock::new();
    GENERATION.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(0x6b65_7970);
        let mut members = Vec::new();
        let mut secrets = Vec::new();
        for _ in 0..5 {
            let signing = sealbatch::envelope::generate_account_key(&mut rng);
            let decryption = sealbatch::keyper::sharing::random_scalar(&mut rng);
            members.push(Member {
                signing_key: signing.verifying_key().to_bytes(),
                encryption_key: curve25519_dalek::ristretto::RistrettoPoint::mul_base(&decryption)
                    .compress()
                    .to_bytes(),
            });
            secrets.push((signing, decryption));
        }
        let deployment = genesis(&SequencerKey::from_seed(&SIM_COMMITTEE_SEQUENCER)).deployment();
        let committee = Committee::new(3, members, deployment).expect("a committee");
        secrets.sort_by_key(|(s, _)| committee.index_of(&s.verifying_key().to_bytes()));
        let mut logs: Vec<WindowLog> = committee
            .indices()
            .map(|j| {
                let decryption = secrets[usize::from(j) - 1].1;
                WindowLog::new(
                    committee.clone(),
                    Generation::keyper(committee.clone(), SIM_WINDOW, j, decryption),
                )
            })
            .collect();
        logs.push(WindowLog::new(
            committee.clone(),
            Generation::observer(committee.clone(), SIM_WINDOW),
        ));
        fn apply(logs: &mut [WindowLog], entry: LogEntry) {
            for log in logs {
                log.apply(&entry).expect("counts");
            }
        }
        for j in committee.indices() {
            let (dealing, _) = deal(&mut rng, &committee, &SIM_WINDOW, j);
            let message = KeyperMessage {
                window: SIM_WINDOW,
                sender: j,
                body: Body::Dealing(dealing),
            };
            apply(
                &mut logs,
                LogEntry::Message(message.sign(&secrets[usize::from(j) - 1].0, &committee)),
            );
        }
        for phase in [Phase::Deal, Phase::Accuse, Phase::Apologize] {
            apply(
                &mut logs,
                LogEntry::PhaseEnd {
                    window: SIM_WINDOW,
                    phase,
                },
            );
        }
        let digest = logs[5]
            .outcome()
            .expect("finished")
            .as_ref()
            .expect("keys")
            .digest;
        for j in committee.indices() {
            let message = KeyperMessage {
                window: SIM_WINDOW,
                sender: j,
                body: Body::Approval { digest },
            };
            apply(
                &mut logs,
                LogEntry::Message(message.sign(&secrets[usize::from(j) - 1].0, &committee)),
            );
        }
        let keys = |log: &WindowLog| {
            log.outcome()
                .expect("finished")
                .as_ref()
                .expect("keys")
                .keys
                .clone()
        };
        let certificate = logs[5].certificate().expect("certified");
        (
            committee.clone(),
            logs[..5]
                .iter()
                .zip(&secrets)
                .map(|(log, (signing, _))| (keys(log), signing.clone()))
                .collect(),
            keys(&logs[5]),
            certificate,
        )
    })
}

impl SimCommittee {
    fn new() -> SimCommittee {
        let (committee, keyper_keys, observer, certificate) = sim_generation().clone();
        SimCommittee {
            keypers: keyper_keys
                .into_iter()
                .enumerate()
                .map(|(i, (keys, signing))| SimKeyper {
                    index: i as KeyperIndex + 1,
                    keys,
                    signing,
                    guard: ReleaseGuard::default(),
                    down: false,
                    faulty: i == 4,
                })
                .collect(),
            committee,
            certificate,
            observer,
            requests: 0,
            released: 0,
            refused: 0,
        }
    }
}

/// The newest checkpoint on `disk` that reads back and decodes.
fn newest_checkpoint(disk: &SimStorage) -> Option<Checkpoint> {
    read_checkpoints(&mut disk.clone())
        .expect("checkpoints read")
        .into_iter()
        .find_map(|found| Checkpoint::try_from(found).ok())
}

impl World {
    fn new(seed: u64, checkpointing: Checkpointing) -> World {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut master = [0; 32];
        rng.fill_bytes(&mut master);
        let mut key_seed = [0; 32];
        rng.fill_bytes(&mut key_seed);
        let traders = (0..6)
            .map(|_| sealbatch::envelope::generate_account_key(&mut rng))
            .collect();
        World {
            disk: SimStorage::new(rng.next_u64()),
            rng,
            journal: None,
            sequencer: None,
            now: GENESIS_MS,
            master,
            key_seed,
            traders,
            nonce: 0,
            next_token: 0,
            pending: BTreeMap::new(),
            acked: BTreeSet::new(),
            cleared: BTreeMap::new(),
            crashes: 0,
            checkpointing,
            cleared_since_checkpoint: 0,
            checkpoint_boots: 0,
            committee: None,
        }
    }

    fn key(&self) -> SequencerKey {
        SequencerKey::from_seed(&self.key_seed)
    }

    /// A sequencer of this world recovered from `journaled` at `now`.
    fn recover(
        &self,
        limits: Limits,
        journaled: Journaled<Vec<(Lsn, u8, Vec<u8>)>>,
        now: u64,
    ) -> Result<Sequencer, sealbatch::sequencer::SequencerError> {
        let key = self.key();
        let genesis = genesis(&key);
        let custodian: Box<dyn KeyCustodian + Send> = match &self.committee {
            None => Box::new(EmbeddedCustodian::new(
                MasterSecret::from_bytes(self.master),
                key.public_key(),
                genesis.schedule,
            )),
            Some(c) => {
                let mut custodian = CommitteeCustodian::new(
                    c.committee.clone(),
                    key.public_key(),
                    genesis.schedule,
                );
                custodian
                    .add_window(&c.certificate, c.observer.clone())
                    .expect("the certified window");
                Box::new(custodian)
            }
        };
        Sequencer::recover(genesis, limits, key, custodian, journaled, now)
    }

    fn boot(&mut self) {
        let (journal, recovery) = loop {
            match Journal::open(self.disk.clone(), SIM_JOURNAL) {
                Ok(opened) => break opened,
                // The disk stopped during recovery itself: crash again.
                Err(_) if self.disk.ops() > 0 => {
                    self.disk.crash();
                    self.crashes += 1;
                }
                Err(error) => panic!("journal does not recover: {error}"),
            }
        };
        let records: Vec<(Lsn, u8, Vec<u8>)> = recovery
            .records
            .into_iter()
            .map(|r| (r.lsn, r.kind, r.payload))
            .collect();
        let whole = records.first().is_none_or(|r| r.0 == 1);
        // A result can reach the disk without its sync succeeding: the batch
        // is then settled on replay but was never published before the
        // crash. Count it as published from the journal.
        let mut assembler = ResultAssembler::default();
        for (_, kind, payload) in &records {
            if let Ok(SequencerRecord::ResultPart(part)) = SequencerRecord::decode(*kind, payload)
                && let Ok(Some(outcome)) = assembler.push(part)
            {
                self.cleared
                    .entry(outcome.e)
                    .or_insert_with(|| Arc::new(outcome));
            }
        }
        let checkpoint = newest_checkpoint(&self.disk);
        if checkpoint.is_some() {
            self.checkpoint_boots += 1;
        }
        let recover = |checkpoint: Option<Checkpoint>, records| {
            // Small result parts: most results span several records, so
            // crashes land between the parts of one result too.
            let limits = Limits {
                result_part_bytes: 512,
                ..Limits::default()
            };
            let journaled = Journaled {
                checkpoint,
                records,
                next_lsn: journal.next_lsn(),
            };
            self.recover(limits, journaled, self.now)
                .expect("sequencer recovers")
        };
        let sequencer = recover(checkpoint.clone(), records.clone());
        if let Some(checkpoint) = &checkpoint
            && whole
        {
            let replayed = recover(None, records);
            // A full replay knows only the batches that were sealed; the
            // checkpoint also remembers the empty ones closed since.
            let (from_checkpoint, replayed_state) = (sequencer.checkpoint(), replayed.checkpoint());
            assert!(from_checkpoint.closed_below >= replayed_state.closed_below);
            assert_eq!(
                Checkpoint {
                    closed_below: BatchId::ZERO,
                    ..from_checkpoint
                },
                Checkpoint {
                    closed_below: BatchId::ZERO,
                    ..replayed_state
                },
                "recovering from the checkpoint at LSN {} differs from a full replay",
                checkpoint.lsn
            );
            assert_eq!(sequencer.batches_pending(), replayed.batches_pending());
        }
        self.journal = Some(journal);
        self.sequencer = Some(sequencer);
        // Receipts that were never delivered are lost with the process.
        self.pending.clear();
    }

    fn crash(&mut self) {
        self.sequencer = None;
        self.journal = None;
        self.disk.crash();
        self.crashes += 1;
        self.boot();
    }

    fn seq(&mut self) -> &mut Sequencer {
        self.sequencer.as_mut().expect("booted")
    }

    /// Moves everything the sequencer asks for until it is idle. Returns
    /// false if the disk failed (the caller crashes the world).
    fn pump(&mut self) -> bool {
        let now = self.now;
        self.seq().handle_timeout(now).expect("timeout");
        loop {
            let mut progress = false;
            while let Some(write) = self.seq().poll_journal() {
                progress = true;
                let journal = self.journal.as_mut().expect("booted");
                match journal.append(write.kind.to_byte(), &write.payload) {
                    Ok(lsn) => assert_eq!(lsn, write.lsn, "journal and core agree on LSNs"),
                    Err(_) => return false,
                }
            }
            let journal = self.journal.as_mut().expect("booted");
            if journal.has_unsynced() {
                progress = true;
                match journal.sync() {
                    Ok(durable) => self
                        .seq()
                        .handle_journal_durable(now, durable)
                        .expect("durable"),
                    Err(_) => return false,
                }
            }
            while let Some(job) = self.seq().poll_job() {
                progress = true;
                let opened = job.run();
                self.seq()
                    .handle_opened(now, opened)
                    .expect("batch processes");
            }
            while let Some(event) = self.seq().poll_event() {
                progress = true;
                match event {
                    Event::Receipt {
                        token,
                        e,
                        commitment,
                    } => {
                        let submitted = self.pending.remove(&token.0).expect("known token");
                        assert_eq!((e, commitment), submitted);
                        // The shell signs the receipt the core released.
                        let receipt = self.key().sign_receipt(e, &commitment);
                        receipt
                            .verify(&self.key().public_key())
                            .expect("receipt verifies");
                        self.acked.insert((e, commitment));
                    }
                    Event::BatchCleared { outcome, .. } => {
                        self.cleared_since_checkpoint += 1;
                        let previous = self.cleared.insert(outcome.e, Arc::clone(&outcome));
                        if let Some(previous) = previous {
                            assert_eq!(
                                previous.to_bytes(),
                                outcome.to_bytes(),
                                "a batch re-published differently"
                            );
                        }
                    }
                    Event::BatchSealed { seal, tree } => {
                        assert_eq!(seal.root, tree.root());
                        seal.verify(&self.key().public_key())
                            .expect("seal verifies");
                    }
                    Event::BatchVoided { e, reason } => {
                        panic!("batch {e} was voided: {reason}")
                    }
                    Event::KeyRequested { seal } => self.release_shares(seal),
                    // One clock that never goes back, windows kept while
                    // needed: a custodian never refuses a durable seal.
                    Event::KeyUnavailable { e, reason } => {
                        panic!("batch {e}: the custodian refused its key: {reason}")
                    }
                    Event::CommitteeLog { .. } => {}
                    Event::BatchOpened { .. } | Event::OperationDurable { .. } => {}
                }
            }
            if !progress {
                return self.checkpoint_if_due();
            }
        }
    }

    /// Writes a checkpoint when enough batches cleared since the last one (the
    /// sequencer is idle: everything it journaled is durable). Returns false
    /// if the disk failed.
    fn checkpoint_if_due(&mut self) -> bool {
        let Checkpointing { every, prune } = self.checkpointing;
        if every == 0 || self.cleared_since_checkpoint < every {
            return true;
        }
        self.cleared_since_checkpoint = 0;
        let checkpoint = self.seq().checkpoint();
        let journal = self.journal.as_mut().expect("booted");
        journal
            .write_checkpoint(
                checkpoint.lsn,
                checkpoint.replay_from,
                &checkpoint.to_bytes(),
                prune,
            )
            .is_ok()
    }

    /// The keypers answer a key request, in a random order: each live one
    /// checks the seal by its own rule and releases its share (keyper 5 a
    /// wrong one), until the sequencer has the key.
    fn release_shares(&mut self, seal: sealbatch::envelope::SignedSeal) {
        let now = self.now;
        let sequencer = self.key().public_key();
        let schedule = genesis(&self.key()).schedule;
        let start = self.rng.next_u32() as usize;
        let Some(committee) = self.committee.as_mut() else {
            panic!("a key request without a committee");
        };
        committee.requests += 1;
        let n = committee.keypers.len();
        let mut shares = Vec::new();
        for k in 0..n {
            let keyper = &mut committee.keypers[(start + k) % n];
            if keyper.down {
                continue;
            }
            match keyper
                .guard
                .decide(&seal, None, &sequencer, &schedule, 0, now)
            {
                Ok(release) => {
                    // Never a share before the batch closed.
                    assert!(now >= schedule.close_ms(seal.e).expect("closes"));
                    if release == Release::First {
                        keyper.guard.record(seal);
                    }
                }
                Err(refusal) => panic!("keyper {} refused: {refusal}", keyper.index),
            }
            let mut share = keyper.keys.share(seal.e).expect("a share").to_bytes();
            if keyper.faulty {
                share[0] ^= 1;
            }
            let attestation = sealbatch::keyper::attestation::attest(
                &keyper.signing,
                &committee.committee,
                &SealStatement {
                    e: seal.e,
                    count: seal.count,
                    root: seal.root,
                },
            );
            shares.push((keyper.index, keyper.faulty, share, attestation));
        }
        for (index, faulty, share, attestation) in shares {
            let outcome = self
                .seq()
                .handle_key_share(now, seal.e, index, &share, &attestation);
            let committee = self.committee.as_mut().expect("a committee");
            match outcome {
                Ok(done) => {
                    assert!(!faulty, "a wrong share counted");
                    committee.released += 1;
                    if done {
                        break;
                    }
                }
                Err(_) if faulty => committee.refused += 1,
                Err(error) => panic!("keyper {index}'s share refused: {error}"),
            }
        }
    }

    /// Keypers go down and come back: at most three at once, so the
    /// committee sometimes stalls (three down of five, threshold three:
    /// keyper 5's shares are wrong) and then catches up.
    fn keyper_faults(&mut self) {
        let roll = self.rng.next_u32();
        let Some(committee) = self.committee.as_mut() else {
            return;
        };
        if !roll.is_multiple_of(8) {
            return;
        }
        let k = (roll / 8) as usize % committee.keypers.len();
        let down = committee.keypers.iter().filter(|k| k.down).count();
        let keyper = &mut committee.keypers[k];
        if keyper.down || down < 3 {
            keyper.down = !keyper.down;
        }
    }

    /// Every keyper up again, and time for the sequencer to ask again.
    fn all_keypers_up(&mut self) {
        if let Some(committee) = self.committee.as_mut() {
            for k in &mut committee.keypers {
                k.down = false;
            }
            self.now += sealbatch::sequencer::KEY_REQUEST_RESEND_MS;
        }
    }

    /// Pumps; if the disk stops, crashes the machine, restarts and pumps again.
    fn pump_through_crashes(&mut self) {
        if !self.pump() {
            self.crash();
            assert!(self.pump(), "no failure scheduled after a crash");
        }
    }

    fn random_orders(&mut self) -> Vec<OrderSpec> {
        match self.rng.next_u32() % 32 {
            0..8 => return self.extreme_orders(),
            8 => return poison_bundle(),
            _ => {}
        }
        let count = 1 + self.rng.next_u32() % 4;
        (0..count)
            .map(|i| {
                let roll = self.rng.next_u32();
                OrderSpec {
                    // Market 3 is unknown: a funding rejection.
                    market: MarketId(1 + roll % 2 + u32::from(roll.is_multiple_of(97))),
                    side: if roll & 4 == 0 { Side::Buy } else { Side::Sell },
                    limit: if roll.is_multiple_of(5) {
                        None
                    } else {
                        Some(Tick(80) + u64::from(self.rng.next_u32() % 40))
                    },
                    // Occasionally far more than anyone holds.
                    qty: if roll.is_multiple_of(53) {
                        1_000_000
                    } else {
                        1 + u64::from(self.rng.next_u32() % 20)
                    },
                    client_order_id: u64::from(i),
                }
            })
            .collect()
    }

    /// Orders in the extreme markets: quantities up to `u64::MAX`, limits
    /// anywhere in the band, up to 256 orders.
    fn extreme_orders(&mut self) -> Vec<OrderSpec> {
        let count = if self.rng.next_u32().is_multiple_of(8) {
            sealbatch::types::BUNDLE_ORDERS_MAX as u32
        } else {
            1 + self.rng.next_u32() % 3
        };
        (0..count)
            .map(|i| {
                let roll = self.rng.next_u32();
                let market = if roll & 1 == 0 { 4 } else { 5 };
                let band_max = if market == 4 { 1000 } else { HUGE_BAND_MAX };
                OrderSpec {
                    market: MarketId(market),
                    side: if roll & 2 == 0 { Side::Buy } else { Side::Sell },
                    limit: match roll >> 2 & 3 {
                        0 => None,
                        1 => Some(Tick(band_max)),
                        2 => Some(Tick(1) + self.rng.next_u64() % band_max),
                        // Near the initial prices, where these markets cross.
                        _ => Some(Tick(1) + self.rng.next_u64() % 16),
                    },
                    // Mostly what some account can cover, so that these
                    // markets trade; the rest far beyond any balance.
                    qty: match roll >> 4 & 7 {
                        0 => u64::MAX,
                        1 => self.rng.next_u64().max(1),
                        2 | 3 => 1 + self.rng.next_u64() % 1_000,
                        _ => 1 + u64::from(self.rng.next_u32() % 4),
                    },
                    client_order_id: u64::from(i),
                }
            })
            .collect()
    }

    fn submit_one(&mut self) {
        let now = self.now;
        let ahead = u64::from(self.rng.next_u32().is_multiple_of(3));
        let e = self.seq().open_batch_at(now) + ahead;
        let public = self.seq().batch_public_key(e).expect("announced key");
        let deployment = self.seq().deployment();
        let trader = self.traders[self.rng.next_u32() as usize % self.traders.len()].clone();
        let orders = self.random_orders();
        self.nonce += 1;
        let envelope = seal_bundle(
            &mut self.rng,
            &trader,
            &deployment,
            e,
            &public,
            self.nonce,
            &orders,
        )
        .expect("seals");
        let mut bytes = envelope.into_bytes();
        match self.rng.next_u32() % 40 {
            // Tampered ciphertext: accepted (shape is fine), rejected at opening.
            0 => {
                let at = bytes.len() - 20;
                bytes[at] ^= 1;
            }
            // Garbage: refused at submission.
            1 => bytes.truncate(10),
            _ => {}
        }
        self.next_token += 1;
        let token = self.next_token;
        match self
            .seq()
            .handle_submit(now, SubmitToken(token), bytes.clone())
        {
            Ok(commitment) => {
                self.pending.insert(token, (e, commitment));
            }
            Err(SubmitError::Malformed(_)) => assert!(bytes.len() == 10),
            // While a committee's release stalls, sealed batches pile up and
            // admission control refuses.
            Err(SubmitError::Busy { .. }) if self.committee.is_some() => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }

    /// A trader's signed withdrawal: usually the account's next sequence
    /// number within its balance (taken, debited at once), sometimes a
    /// replay of a number taken before or more than the balance (refused,
    /// nothing changes) — across crashes, the journal check below holds
    /// each account's numbers to 1, 2, 3, … and each id to one record.
    fn withdraw_some(&mut self) {
        let trader = self.traders[self.rng.next_u32() as usize % self.traders.len()].clone();
        let account = AccountId(trader.verifying_key().to_bytes());
        let before = self.seq().ledger().balance(&account, USD);
        let next = self.seq().funds().next_sequence(&account);
        let roll = self.rng.next_u32() % 8;
        let (sequence, amount) = match roll {
            0 if next > 1 => (next - 1 - u64::from(self.rng.next_u32()) % (next - 1), 1),
            1 => (next, before.saturating_add(1)),
            _ => (
                next,
                1 + u64::from(self.rng.next_u32() % 50_000).min(before),
            ),
        };
        let sequencer = SequencerKey::from_seed(&self.key_seed).public_key();
        let signed = sealbatch::signed::WithdrawalStatement {
            account,
            asset: USD,
            amount,
            sequence,
            destination: b"sim:dest".to_vec(),
        }
        .sign(&trader, &sequencer)
        .expect("signs");
        let id = self.seq().funds().next_withdrawal_id();
        match self.seq().handle_withdrawal(OpToken(0), signed) {
            Ok(taken) => {
                assert_eq!(taken, id);
                assert!(sequence == next && amount <= before);
                assert_eq!(self.seq().ledger().balance(&account, USD), before - amount);
                assert_eq!(self.seq().funds().next_sequence(&account), next + 1);
            }
            Err(error) => {
                assert!(
                    sequence != next || amount > before || amount == 0,
                    "a valid withdrawal was refused: {error}"
                );
                assert_eq!(self.seq().ledger().balance(&account, USD), before);
                assert_eq!(self.seq().funds().next_sequence(&account), next);
                assert_eq!(self.seq().funds().next_withdrawal_id(), id);
            }
        }
    }

    /// The operator's payout process: acknowledges the oldest pending
    /// withdrawal (its reference derived from its id, so a repeat is the
    /// same statement), or repeats an acknowledgement, sometimes with
    /// another reference (refused).
    fn pay_out(&mut self) {
        let operator = SigningKey::from_bytes(&[0x0d; 32]);
        let sequencer = SequencerKey::from_seed(&self.key_seed).public_key();
        let pending = self.seq().funds().pending_after(0).next().map(|w| w.id);
        let taken = self.seq().funds().next_withdrawal_id() - 1;
        let roll = self.rng.next_u32() % 4;
        let id = match pending {
            Some(id) if roll < 3 => id,
            _ if taken > 0 => 1 + u64::from(self.rng.next_u32()) % taken,
            _ => return,
        };
        let was_pending = self
            .seq()
            .funds()
            .pending_after(id - 1)
            .next()
            .map(|w| w.id)
            == Some(id);
        // A pending withdrawal is always paid as `payout-{id}`; a paid one is
        // acknowledged again as that (answered as the first) or as another
        // (refused).
        let reference = if was_pending || roll < 3 {
            format!("payout-{id}")
        } else {
            format!("payout-{id}-other")
        };
        let signed = sealbatch::signed::PayoutStatement {
            operator: [0; 32],
            withdrawal: id,
            reference: reference.clone().into_bytes(),
        }
        .sign(&operator, &sequencer)
        .expect("signs");
        let before = self.seq().ledger().clone();
        match self.seq().handle_payout(OpToken(0), signed) {
            Ok(()) => assert!(!reference.ends_with("-other")),
            Err(error) => assert!(reference.ends_with("-other"), "a payout refused: {error}"),
        }
        assert_eq!(self.seq().ledger(), &before, "a payout moves no balance");
        assert!(
            self.seq()
                .funds()
                .pending_after(id - 1)
                .next()
                .map(|w| w.id)
                != Some(id)
        );
    }

    /// An operator deposit under one of a few references, so that
    /// references repeat, sometimes with another statement: a new reference
    /// credits its amount, a repeat of the same statement credits nothing,
    /// another statement under a used reference is refused — across
    /// crashes and checkpoints (the journal check below holds each
    /// reference to one record).
    fn operator_deposit(&mut self) {
        let operator = SigningKey::from_bytes(&[0x0d; 32]);
        let n = self.rng.next_u32() % 8;
        let trader = &self.traders[n as usize % self.traders.len()];
        let account = AccountId(trader.verifying_key().to_bytes());
        let other = self.rng.next_u32().is_multiple_of(8);
        let amount = 1_000 + u64::from(n) + u64::from(other);
        let sequencer = SequencerKey::from_seed(&self.key_seed).public_key();
        let signed = sealbatch::signed::DepositStatement {
            operator: [0; 32],
            account,
            asset: USD,
            amount,
            reference: format!("transfer-{n}").into_bytes(),
        }
        .sign(&operator, &sequencer)
        .expect("signs");
        let before = self.seq().ledger().balance(&account, USD);
        match self.seq().handle_operator_deposit(OpToken(0), signed) {
            Ok(()) => {
                let after = self.seq().ledger().balance(&account, USD);
                assert!(
                    after == before + amount || after == before,
                    "an operator deposit credited {} instead of {amount} or nothing",
                    after.wrapping_sub(before)
                );
            }
            Err(sealbatch::sequencer::SequencerError::Funds(
                sealbatch::sequencer::FundsError::ReferenceReused(_),
            )) => {
                assert_eq!(self.seq().ledger().balance(&account, USD), before);
            }
            Err(error) => panic!("operator deposit refused: {error}"),
        }
    }

    fn fund(&mut self) {
        let accounts: Vec<AccountId> = self
            .traders
            .iter()
            .map(|t| AccountId(t.verifying_key().to_bytes()))
            .collect();
        for (i, account) in accounts.iter().enumerate() {
            for (asset, amount) in [(USD, 2_000_000), (BTC, 5_000), (ETH, 5_000)] {
                self.seq()
                    .handle_deposit(OpToken(i as u64), *account, asset, amount)
                    .expect("deposit");
            }
        }
        // The extreme assets: an eighth of the supply limit each, then one
        // account is topped up to exactly the limit, which refuses any more.
        for asset in [WEI, HUGE_BASE, HUGE_QUOTE] {
            for account in &accounts {
                self.seq()
                    .handle_deposit(OpToken(0), *account, asset, u64::MAX / 8)
                    .expect("within the supply limit");
            }
            let lucky = accounts[self.rng.next_u32() as usize % accounts.len()];
            let rest = u64::MAX - u64::try_from(self.seq().ledger().total(asset)).expect("fits");
            self.seq()
                .handle_deposit(OpToken(0), lucky, asset, rest)
                .expect("up to the supply limit");
            for amount in [1, u64::MAX] {
                assert!(
                    self.seq()
                        .handle_deposit(OpToken(0), lucky, asset, amount)
                        .is_err(),
                    "a deposit past the supply limit was taken"
                );
            }
        }
    }
}

/// The bundle that once halted the sequencer for good: 19 market sells of
/// market 4 adding up to ⌈2^128 / 10^18⌉ lots, whose base requirement
/// wrapped past 2^128 to less than the seller's balance.
fn poison_bundle() -> Vec<OrderSpec> {
    (0..19u64)
        .map(|i| OrderSpec {
            market: MarketId(4),
            side: Side::Sell,
            limit: None,
            qty: if i < 18 {
                u64::MAX
            } else {
                8_240_973_594_166_534_394
            },
            client_order_id: i,
        })
        .collect()
}

fn records(disk: &SimStorage) -> Vec<(Lsn, u8, Vec<u8>)> {
    let (_, recovery) = Journal::open(disk.clone(), SIM_JOURNAL).expect("reopens");
    recovery
        .records
        .into_iter()
        .map(|r| (r.lsn, r.kind, r.payload))
        .collect()
}

/// Where the disk stops during a run.
#[derive(Clone, Copy, Debug)]
enum Crashes {
    /// Never.
    None,
    /// About once in this many steps, at a random upcoming write point.
    Random(u32),
    /// Once, at this mutating disk operation.
    AtOp(u64),
}

/// What a run did, for the callers' own checks.
struct Stats {
    crashes: usize,
    /// With a committee: key requests (first and repeated), shares that
    /// counted, wrong shares refused.
    key_requests: usize,
    shares_released: usize,
    shares_refused: usize,
    /// Withdrawals taken, and of them paid out (as the final state says).
    withdrawals: u64,
    paid_out: u64,
    batches: usize,
    acked: usize,
    ops: u64,
    /// Results journaled in more than one part.
    split_results: usize,
    /// Boots that started from a checkpoint.
    checkpoint_boots: usize,
    /// Whether the journal no longer starts at its first record.
    pruned: bool,
    /// Orders filled in the extreme markets (4 and 5).
    extreme_fills: usize,
}

fn run(seed: u64, steps: usize, crashes: Crashes) -> Stats {
    run_with(seed, steps, crashes, CHECKPOINT_OFTEN)
}

fn run_with(seed: u64, steps: usize, crashes: Crashes, checkpointing: Checkpointing) -> Stats {
    run_world(World::new(seed, checkpointing), seed, steps, crashes)
}

fn run_world(mut world: World, seed: u64, steps: usize, crashes: Crashes) -> Stats {
    let checkpointing = world.checkpointing;
    if let Crashes::AtOp(op) = crashes {
        world.disk.crash_at_op(op);
    }
    world.boot();
    world.fund();
    world.pump_through_crashes();
    for _ in 0..steps {
        world.now += u64::from(world.rng.next_u32() % 40);
        for _ in 0..world.rng.next_u32() % 4 {
            world.submit_one();
        }
        if world.rng.next_u32().is_multiple_of(20) {
            world.withdraw_some();
        }
        if world.rng.next_u32().is_multiple_of(10) {
            world.operator_deposit();
        }
        if world.rng.next_u32().is_multiple_of(15) {
            world.pay_out();
        }
        world.keyper_faults();
        if let Crashes::Random(one_in) = crashes
            && world.rng.next_u32().is_multiple_of(one_in)
        {
            // Stop the disk at a random upcoming write point.
            let at = world.disk.ops() + u64::from(world.rng.next_u32() % 6);
            world.disk.crash_at_op(at);
        }
        world.pump_through_crashes();
    }
    // Let every batch close and clear.
    world.now += 1_000;
    world.all_keypers_up();
    world.pump_through_crashes();
    // A crash scheduled past the run's last write never happens.
    world.disk.restart();

    // No acknowledged envelope lost: each is in an outcome its batch
    // published.
    for (e, commitment) in &world.acked {
        assert!(
            world
                .cleared
                .get(e)
                .is_some_and(|o| o.envelopes.iter().any(|x| x.commitment == *commitment)),
            "seed {seed}: acknowledged envelope of batch {e} not in its published outcome"
        );
    }
    let records = records(&world.disk);
    // A pruned journal no longer holds its first records: what the checks
    // below count from the journal is then checked by the ledger alone.
    let whole = records.first().is_some_and(|r| r.0 == 1);
    if !whole {
        assert!(
            checkpointing.prune,
            "seed {seed}: the journal lost its start"
        );
    }
    let mut deposited: BTreeMap<AssetId, u128> = BTreeMap::new();
    let mut split_results = 0;
    if whole {
        split_results = check_journal(seed, &world, &records, &mut deposited);
    }
    // verify re-derives every batch the journal still holds, and finds each
    // checkpoint on disk equal to the state it replays to that LSN.
    let checkpoints: Vec<Checkpoint> = read_checkpoints(&mut world.disk.clone())
        .expect("checkpoints read")
        .into_iter()
        .filter_map(|found| Checkpoint::try_from(found).ok())
        .collect();
    for checkpoint in &checkpoints {
        common::canonical(checkpoint);
    }
    let report =
        verify_journal_with(records.iter().cloned(), &checkpoints).expect("verify reads it");
    assert!(
        report.all_ok(),
        "seed {seed}: verify fails: {:?} {:?}",
        report
            .batches
            .iter()
            .find(|b| b.verdict.is_err() || b.pending),
        report.checkpoints.iter().find(|c| c.verdict.is_err())
    );
    assert_eq!(report.from_checkpoint.is_some(), !whole);
    assert_eq!(
        report.checkpoints.len() + usize::from(!whole),
        checkpoints.len(),
        "seed {seed}: every checkpoint compared"
    );
    // A sequencer recovered from the journal holds the same ledger.
    let live = world.seq().ledger().clone();
    world.sequencer = None;
    world.journal = None;
    world.boot();
    assert_eq!(
        world.seq().ledger(),
        &live,
        "seed {seed}: replayed ledger differs"
    );
    // Conservation: every asset's total is what the journal says was
    // deposited less withdrawn (an operation lost before it was durable was
    // never acknowledged), and the balances add up to it.
    for asset in ASSETS {
        let summed: u128 = live
            .iter()
            .filter(|b| b.1 == asset)
            .map(|b| u128::from(b.2))
            .sum();
        assert_eq!(
            summed,
            live.total(asset),
            "seed {seed}: balances of {asset} do not add up"
        );
        if whole {
            let expected = deposited.get(&asset).copied().unwrap_or(0);
            assert_eq!(
                live.total(asset),
                expected,
                "seed {seed}: asset {asset} not conserved"
            );
        }
    }
    // Something actually happened.
    let accepted: usize = world
        .cleared
        .values()
        .flat_map(|o| &o.envelopes)
        .filter(|e| matches!(e.status, EnvelopeStatus::Accepted { .. }))
        .count();
    assert!(
        accepted > 0 || steps < 10,
        "seed {seed}: nothing was accepted"
    );
    let funds = world.seq().funds();
    let withdrawals = funds.next_withdrawal_id() - 1;
    let paid_out = withdrawals - funds.pending_after(0).count() as u64;
    let (key_requests, shares_released, shares_refused) = world
        .committee
        .as_ref()
        .map_or((0, 0, 0), |c| (c.requests, c.released, c.refused));
    Stats {
        key_requests,
        shares_released,
        shares_refused,
        withdrawals,
        paid_out,
        crashes: world.crashes,
        batches: world.cleared.len(),
        acked: world.acked.len(),
        ops: world.disk.ops(),
        split_results,
        checkpoint_boots: world.checkpoint_boots,
        pruned: !whole,
        extreme_fills: world
            .cleared
            .values()
            .flat_map(|o| &o.fills)
            .filter(|f| f.market.0 >= 4)
            .count(),
    }
}

/// The checks that read the whole journal: each acknowledged envelope is
/// journaled in its batch, each batch settles exactly once, and `verify`
/// re-derives every batch. Fills `deposited` (net per asset) and returns how
/// many results took several records.
fn check_journal(
    seed: u64,
    world: &World,
    records: &[(Lsn, u8, Vec<u8>)],
    deposited: &mut BTreeMap<AssetId, u128>,
) -> usize {
    // No acknowledged envelope lost: each is in its batch, which was cleared.
    let mut envelopes: BTreeMap<BatchId, BTreeSet<Commitment>> = BTreeMap::new();
    let mut results: BTreeMap<BatchId, usize> = BTreeMap::new();
    let mut assembler = ResultAssembler::default();
    let mut split_results = 0;
    let mut references = BTreeSet::new();
    let mut withdrawals: BTreeMap<u64, u64> = BTreeMap::new();
    let mut sequences: BTreeMap<AccountId, u64> = BTreeMap::new();
    let mut paid: BTreeSet<u64> = BTreeSet::new();
    for (_, kind, payload) in records {
        match SequencerRecord::decode(*kind, payload).expect("decodes") {
            SequencerRecord::Envelope { e, bytes } => {
                envelopes
                    .entry(e)
                    .or_default()
                    .insert(Commitment::of(&bytes));
            }
            SequencerRecord::ResultPart(part) => {
                if part.index == 1 {
                    split_results += 1;
                }
                if let Some(outcome) = assembler.push(part).expect("result parts join") {
                    common::canonical(&outcome);
                    *results.entry(outcome.e).or_default() += 1;
                }
            }
            SequencerRecord::Deposit(t) => {
                *deposited.entry(t.asset).or_default() += u128::from(t.amount);
            }
            SequencerRecord::UnsignedWithdrawal(t) => {
                *deposited.entry(t.asset).or_default() -= u128::from(t.amount);
            }
            SequencerRecord::Withdrawal(w) => {
                common::canonical(&w.signed);
                let s = &w.signed.statement;
                *deposited.entry(s.asset).or_default() -= u128::from(s.amount);
                assert_eq!(
                    w.id,
                    withdrawals.len() as u64 + 1,
                    "seed {seed}: withdrawal ids run 1, 2, 3, …"
                );
                let last = sequences.insert(s.account, s.sequence).unwrap_or(0);
                assert_eq!(
                    s.sequence,
                    last + 1,
                    "seed {seed}: an account's withdrawals run 1, 2, 3, …"
                );
                withdrawals.insert(w.id, s.amount);
            }
            SequencerRecord::Payout(p) => {
                common::canonical(&p);
                let id = p.statement.withdrawal;
                assert!(
                    withdrawals.contains_key(&id) && paid.insert(id),
                    "seed {seed}: withdrawal {id} paid out twice or before it was taken"
                );
            }
            SequencerRecord::OperatorDeposit(d) => {
                let s = d.statement;
                assert!(
                    references.insert(s.reference.clone()),
                    "seed {seed}: reference {:?} credited twice",
                    String::from_utf8_lossy(&s.reference)
                );
                *deposited.entry(s.asset).or_default() += u128::from(s.amount);
            }
            SequencerRecord::Genesis(genesis) => common::canonical(&genesis),
            _ => {}
        }
    }
    // Money leaves exactly once: each withdrawal taken is either paid out
    // (acknowledged once) or still pending, never both.
    let pending: BTreeSet<u64> = world
        .sequencer
        .as_ref()
        .expect("booted")
        .funds()
        .pending_after(0)
        .map(|w| w.id)
        .collect();
    let unpaid: BTreeSet<u64> = withdrawals
        .keys()
        .copied()
        .filter(|id| !paid.contains(id))
        .collect();
    assert_eq!(
        pending, unpaid,
        "seed {seed}: pending withdrawals differ from the journal's"
    );
    for (e, commitment) in &world.acked {
        assert!(
            envelopes.get(e).is_some_and(|set| set.contains(commitment)),
            "seed {seed}: acknowledged envelope of batch {e} lost"
        );
        assert_eq!(
            results.get(e),
            Some(&1),
            "seed {seed}: batch {e} not cleared exactly once"
        );
    }
    for (e, count) in &results {
        assert_eq!(*count, 1, "seed {seed}: batch {e} settled {count} times");
    }

    // verify re-derives every batch.
    let report = verify_journal(records.iter().cloned()).expect("verify reads the journal");
    for verdict in &report.batches {
        assert_eq!(
            verdict.verdict,
            Ok(()),
            "seed {seed}: batch {} fails verify",
            verdict.e
        );
    }
    assert_eq!(report.batches.len(), results.len());

    split_results
}

#[test]
fn uninterrupted_runs_verify() {
    for seed in seeds(0..4) {
        let stats = run(seed, 400, Crashes::None);
        assert_eq!(stats.crashes, 0);
        assert!(
            stats.batches > 20,
            "seed {seed}: only {} batches",
            stats.batches
        );
    }
}

#[test]
fn random_crashes_lose_no_acknowledged_envelope_and_apply_no_fill_twice() {
    let (mut crashes, mut batches, mut acked, mut split, mut from_checkpoint) = (0, 0, 0, 0, 0);
    let (mut extreme_fills, mut withdrawals, mut paid_out) = (0, 0, 0);
    // 40 seeds in the slow tier, 10 in the fast one; what the runs must
    // have gone through scales with them.
    let runs = match std::env::var("SEALBATCH_SIM_SEED") {
        Ok(_) => seeds(100..140),
        Err(_) => common::tier_share(100..140),
    };
    let share = runs.len();
    for seed in runs {
        let result = std::panic::catch_unwind(|| run(seed, 300, Crashes::Random(12)));
        match result {
            Ok(stats) => {
                extreme_fills += stats.extreme_fills;
                withdrawals += stats.withdrawals;
                paid_out += stats.paid_out;
                crashes += stats.crashes;
                batches += stats.batches;
                acked += stats.acked;
                split += stats.split_results;
                from_checkpoint += stats.checkpoint_boots;
            }
            Err(panic) => {
                eprintln!("simulation failed with seed {seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "{crashes} crashes, {batches} batches ({split} results in several parts), \
         {acked} acknowledged envelopes, {from_checkpoint} boots from a checkpoint \
         (each checked against a full replay), {extreme_fills} fills in the extreme markets, \
         {withdrawals} withdrawals ({paid_out} paid out)"
    );
    let at_least = |of_40: usize| of_40 * share / 40;
    assert!(
        crashes > at_least(100)
            && batches > at_least(1_000)
            && split > at_least(100)
            && from_checkpoint > at_least(100)
            && extreme_fills > at_least(50)
            && withdrawals > at_least(100) as u64
            && paid_out > at_least(50) as u64,
        "the simulation exercised too little"
    );
}

/// The batch keys held by a keyper committee of five (threshold 3) instead
/// of the embedded custodian: every batch is opened with a key combined
/// from keypers' shares, through random crashes of the sequencer, keypers
/// going down (at times three at once, which stalls the release until they
/// return) and keyper 5 releasing wrong shares; no share leaves before its
/// batch closed, and every check of the other runs holds.
#[test]
fn a_keyper_committee_releases_every_key_through_crashes_faults_and_stalls() {
    let (mut requests, mut released, mut refused, mut batches, mut crashes) = (0, 0, 0, 0, 0);
    for seed in seeds(300..306) {
        let mut world = World::new(seed, CHECKPOINT_OFTEN);
        world.key_seed = SIM_COMMITTEE_SEQUENCER;
        world.committee = Some(SimCommittee::new());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_world(world, seed, 300, Crashes::Random(12))
        }));
        match result {
            Ok(stats) => {
                requests += stats.key_requests;
                released += stats.shares_released;
                refused += stats.shares_refused;
                batches += stats.batches;
                crashes += stats.crashes;
            }
            Err(panic) => {
                eprintln!("simulation failed with seed {seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "{batches} batches, {crashes} crashes, {requests} key requests, \
         {released} shares counted, {refused} wrong shares refused"
    );
    assert!(
        batches > 100 && crashes > 10 && requests > batches && refused > 10,
        "the committee was exercised too little"
    );
}

#[test]
fn pruned_journals_recover_from_checkpoints_through_crashes() {
    let (mut crashes, mut from_checkpoint, mut batches, mut pruned) = (0, 0, 0, 0);
    for seed in seeds(200..212) {
        let disk_seed = seed;
        let result = std::panic::catch_unwind(|| {
            run_with(
                disk_seed,
                300,
                Crashes::Random(12),
                Checkpointing {
                    every: 4,
                    prune: true,
                },
            )
        });
        match result {
            Ok(stats) => {
                crashes += stats.crashes;
                from_checkpoint += stats.checkpoint_boots;
                batches += stats.batches;
                pruned += usize::from(stats.pruned);
            }
            Err(panic) => {
                eprintln!("simulation failed with seed {seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "{crashes} crashes, {from_checkpoint} boots from a checkpoint, {batches} batches, \
         {pruned} journals pruned"
    );
    assert!(
        crashes > 20 && from_checkpoint > 20 && pruned > 6,
        "the simulation exercised too little"
    );
}

#[test]
fn a_crash_at_every_write_point_recovers() {
    let seed = 7;
    let total = run(seed, 60, Crashes::None).ops;
    assert!(total > 50, "only {total} disk operations");
    // Every write point in the slow tier; every fourth in the fast one.
    let step = if common::slow_tier() { 1 } else { 4 };
    for op in (0..total).step_by(step) {
        let result = std::panic::catch_unwind(|| run(seed, 60, Crashes::AtOp(op)));
        if let Err(panic) = result {
            eprintln!("simulation failed with seed {seed}, crash at op {op}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// Every cleared batch exports to a transcript that verifies on its own and
/// round-trips byte for byte; a transcript with changed balances, envelopes,
/// key or outcome does not verify, and no truncation panics.
#[test]
fn exported_transcripts_verify_alone_and_tampering_is_caught() {
    let mut world = World::new(21, CHECKPOINT_OFTEN);
    world.boot();
    world.fund();
    world.pump_through_crashes();
    for _ in 0..150 {
        world.now += u64::from(world.rng.next_u32() % 40);
        for _ in 0..world.rng.next_u32() % 4 {
            world.submit_one();
        }
        world.pump_through_crashes();
    }
    world.now += 1_000;
    world.pump_through_crashes();
    let records = records(&world.disk);
    let report = verify_journal(records.iter().cloned()).expect("verifies");
    assert!(report.all_ok());
    let all: BTreeSet<BatchId> = report.batches.iter().map(|b| b.e).collect();
    assert!(all.len() > 10, "only {} batches", all.len());
    let (_, transcripts) = export_transcripts(records.iter().cloned(), &[], &all).expect("exports");
    assert_eq!(transcripts.len(), all.len());
    for t in &transcripts {
        common::canonical(t);
        let bytes = t.to_bytes();
        assert_eq!(Transcript::from_bytes(&bytes).as_ref(), Ok(t));
        let summary = verify_transcript(t).expect("a transcript verifies alone");
        assert_eq!(summary.fills, t.outcome.fills.len());
        // `bench clearing --input` replays exactly the batch that cleared:
        // its orders are the accepted bundles' orders, and clearing them
        // with the seal's root gives the published prices and volumes.
        let (inputs, seed) =
            sealbatch::sequencer::transcript_clearing_input(t).expect("the clearing input");
        assert_eq!(seed, t.seal.root.0);
        let accepted: usize = t
            .outcome
            .envelopes
            .iter()
            .map(|e| match e.status {
                EnvelopeStatus::Accepted { orders, .. } => usize::from(orders),
                _ => 0,
            })
            .sum();
        assert_eq!(
            inputs.iter().map(|m| m.orders.len()).sum::<usize>(),
            accepted
        );
        let cleared = sealbatch::clearing::clear_batch(&inputs, &seed).expect("clears");
        for (m, published) in cleared.markets.iter().zip(&t.outcome.markets) {
            assert_eq!(
                (m.market, m.price, m.volume),
                (published.market, published.price, published.volume)
            );
        }
    }

    let t = transcripts
        .iter()
        .max_by_key(|t| t.outcome.fills.len())
        .expect("transcripts");
    assert!(!t.outcome.fills.is_empty(), "no batch filled anything");
    let fails =
        |t: &Transcript| matches!(verify_transcript(t), Err(TranscriptError::Mismatch { .. }));
    let mut poor = t.clone();
    poor.balances.clear();
    assert!(fails(&poor), "accepted bundles without their balances");
    let mut forged = t.clone();
    forged.outcome.fills[0].filled += 1;
    assert!(fails(&forged), "a changed fill");
    let mut swapped = t.clone();
    swapped.envelopes[0][100] ^= 1;
    assert!(fails(&swapped), "a changed envelope");
    let mut wrong_key = t.clone();
    wrong_key.outcome.batch_secret[0] ^= 1;
    assert!(fails(&wrong_key), "another batch secret");
    let mut unsorted = t.clone();
    unsorted.balances.reverse();
    assert!(unsorted.balances.len() < 2 || fails(&unsorted));
    let mut zero = t.clone();
    zero.balances[0].2 = 0;
    assert!(fails(&zero), "a zero balance");
    let mut shuffled = t.clone();
    shuffled.envelopes.reverse();
    assert!(
        shuffled.envelopes.len() < 2 || fails(&shuffled),
        "envelopes out of commitment order"
    );

    let bytes = t.to_bytes();
    for cut in (0..bytes.len()).step_by(7) {
        assert!(
            Transcript::from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Transcript::from_bytes(&longer).is_err());
}

/// A journal in which a batch's envelopes are followed by a later batch's
/// seal but never by their own — what a replica that lost a seal would
/// hold — fails verify for that batch (the sequencer's replay refuses it).
#[test]
fn a_batch_left_unsealed_below_a_sealed_one_fails_verify() {
    let mut world = World::new(22, CHECKPOINT_OFTEN);
    world.boot();
    world.fund();
    world.pump_through_crashes();
    for _ in 0..60 {
        world.now += u64::from(world.rng.next_u32() % 40);
        for _ in 0..1 + world.rng.next_u32() % 3 {
            world.submit_one();
        }
        world.pump_through_crashes();
    }
    world.now += 1_000;
    world.pump_through_crashes();
    let records = records(&world.disk);
    assert!(
        verify_journal(records.iter().cloned())
            .expect("verifies")
            .all_ok()
    );
    // The first batch with envelopes that a later seal follows loses its
    // seal and its result.
    let decoded: Vec<SequencerRecord> = records
        .iter()
        .map(|(_, kind, payload)| SequencerRecord::decode(*kind, payload).expect("decodes"))
        .collect();
    let seals: Vec<BatchId> = decoded
        .iter()
        .filter_map(|r| match r {
            SequencerRecord::Seal(seal) => Some(seal.e),
            _ => None,
        })
        .collect();
    assert!(seals.len() > 3, "only {} seals", seals.len());
    let lost = seals[1];
    let mut lsn = Lsn::NONE;
    let cut: Vec<(Lsn, u8, Vec<u8>)> = records
        .iter()
        .zip(&decoded)
        .filter(|(_, record)| match record {
            SequencerRecord::Seal(seal) => seal.e != lost,
            SequencerRecord::ResultPart(part) => part.e != lost,
            _ => true,
        })
        .map(|((_, kind, payload), _)| {
            lsn += 1;
            (lsn, *kind, payload.clone())
        })
        .collect();
    let report = verify_journal(cut).expect("verify reads it");
    let verdict = report
        .batches
        .iter()
        .find(|b| b.e == lost)
        .expect("the unsealed batch is reported");
    let reason = verdict.verdict.as_ref().expect_err("it fails");
    assert!(
        reason.contains(&format!("batch {} sealed before this batch", seals[2])),
        "{reason}"
    );
    assert!(!report.all_ok());
    // Every batch before it still verifies (later ones were cleared
    // against balances its result had settled).
    assert!(
        report
            .batches
            .iter()
            .filter(|b| b.e < lost)
            .all(|b| b.verdict.is_ok())
    );
}

/// A checkpoint that does not fit its journal is refused by recovery and
/// reported by verify; its encoding round-trips and rejects disorder.
#[test]
fn checkpoints_that_do_not_fit_the_journal_are_refused() {
    let mut world = World::new(33, CHECKPOINT_OFTEN);
    world.boot();
    world.fund();
    world.pump_through_crashes();
    for _ in 0..120 {
        world.now += u64::from(world.rng.next_u32() % 40);
        for _ in 0..world.rng.next_u32() % 4 {
            world.submit_one();
        }
        world.pump_through_crashes();
    }
    // A checkpoint with unfinished batches, taken mid-run.
    world.submit_one();
    world.pump_through_crashes();
    let checkpoint = world.seq().checkpoint();
    assert!(!checkpoint.unfinished.is_empty(), "nothing unfinished");
    assert!(checkpoint.replay_from < checkpoint.lsn);
    assert_eq!(
        Checkpoint::from_bytes(&checkpoint.to_bytes()),
        Ok(checkpoint.clone())
    );
    let records = records(&world.disk);
    let next_lsn = records.last().map_or(Lsn::FIRST, |r| r.0 + 1);

    let recover = |checkpoint: Checkpoint, records| {
        let journaled = Journaled {
            checkpoint: Some(checkpoint),
            records,
            next_lsn,
        };
        world
            .recover(Limits::default(), journaled, world.now)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(recover(checkpoint.clone(), records.clone()), Ok(()));
    // The records it needs are gone.
    let late: Vec<_> = records
        .iter()
        .filter(|r| r.0 > checkpoint.replay_from)
        .cloned()
        .collect();
    let refused = recover(checkpoint.clone(), late).expect_err("records missing");
    assert!(refused.contains("needs the records from LSN"), "{refused}");
    // It claims more than the journal holds.
    let beyond = Checkpoint {
        lsn: next_lsn + 1,
        ..checkpoint.clone()
    };
    let refused = recover(beyond, records.clone()).expect_err("beyond the journal");
    assert!(refused.contains("journal ends"), "{refused}");
    // Another deployment's.
    let mut other = checkpoint.clone();
    other.genesis.schedule.batch_length_ms += 1;
    let refused = recover(other, records.clone()).expect_err("another genesis");
    assert!(refused.contains("genesis"), "{refused}");

    // verify compares it with the replayed state: a changed balance shows.
    let report = verify_journal_with(records.iter().cloned(), std::slice::from_ref(&checkpoint))
        .expect("verifies");
    assert_eq!(report.checkpoints.len(), 1);
    assert_eq!(report.checkpoints[0].verdict, Ok(()));
    let mut richer = checkpoint.clone();
    richer.balances[0].2 += 1;
    let report = verify_journal_with(records.iter().cloned(), &[richer]).expect("verifies");
    assert!(!report.all_ok(), "a changed balance passed");
    let mut finished = checkpoint.clone();
    finished.unfinished.clear();
    finished.replay_from = finished.lsn;
    let report = verify_journal_with(records.iter().cloned(), &[finished]).expect("verifies");
    assert!(!report.all_ok(), "a forgotten unfinished batch passed");

    // Read back from a directory: a sound file whose state disagrees with
    // it, or is no state, or a damaged file, is unusable, each for its reason.
    let found = |lsn, replay_from, payload: Vec<u8>| FoundCheckpoint {
        name: "checkpoint".into(),
        checkpoint: Ok(StoredCheckpoint {
            lsn,
            replay_from,
            payload,
        }),
    };
    let (lsn, from) = (checkpoint.lsn, checkpoint.replay_from);
    assert_eq!(
        Checkpoint::try_from(found(lsn, from, checkpoint.to_bytes())).as_ref(),
        Ok(&checkpoint)
    );
    assert!(matches!(
        Checkpoint::try_from(found(lsn + 1, from, checkpoint.to_bytes())),
        Err(UnusableCheckpoint::State(UnusableState::LsnMismatch { .. }))
    ));
    assert!(matches!(
        Checkpoint::try_from(found(lsn, from, b"not a state".to_vec())),
        Err(UnusableCheckpoint::State(UnusableState::Decode(_)))
    ));
    let damaged = FoundCheckpoint {
        name: "checkpoint".into(),
        checkpoint: Err(CheckpointProblem::Checksum),
    };
    assert!(matches!(
        Checkpoint::try_from(damaged),
        Err(UnusableCheckpoint::File(CheckpointProblem::Checksum))
    ));

    // Disorder in the encoding is refused.
    let mut unsorted = checkpoint.clone();
    unsorted.balances.reverse();
    assert!(Checkpoint::from_bytes(&unsorted.to_bytes()).is_err());
    let mut zero = checkpoint.clone();
    zero.balances[0].2 = 0;
    assert!(Checkpoint::from_bytes(&zero.to_bytes()).is_err());
    let mut inverted = checkpoint.clone();
    inverted.replay_from = inverted.lsn + 1;
    assert!(Checkpoint::from_bytes(&inverted.to_bytes()).is_err());
    let bytes = checkpoint.to_bytes();
    for cut in 0..bytes.len() {
        assert!(
            Checkpoint::from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

/// A submission refused for room never leaves an empty batch behind (which
/// would then be sealed with nothing in it).
#[test]
fn a_refused_submission_leaves_no_empty_batch() {
    let world = World::new(5, CHECKPOINT_OFTEN);
    let limits = Limits {
        bytes_per_batch_max: 64,
        ..Limits::default()
    };
    let journaled = Journaled {
        checkpoint: None,
        records: Vec::new(),
        next_lsn: Lsn(1),
    };
    let mut sequencer = world
        .recover(limits, journaled, GENESIS_MS)
        .expect("recovers");
    sequencer.handle_timeout(GENESIS_MS).expect("timeout");
    while sequencer.poll_journal().is_some() {}
    let public = sequencer.batch_public_key(BatchId(0)).expect("key");
    let orders = vec![OrderSpec {
        market: MarketId(1),
        side: Side::Buy,
        limit: Some(Tick(100)),
        qty: 10,
        client_order_id: 1,
    }];
    let envelope = seal_bundle(
        &mut ChaCha20Rng::seed_from_u64(1),
        &world.traders[0],
        &sequencer.deployment(),
        BatchId(0),
        &public,
        1,
        &orders,
    )
    .expect("seals");
    let refused = sequencer.handle_submit(GENESIS_MS, SubmitToken(1), envelope.into_bytes());
    assert!(matches!(refused, Err(SubmitError::BatchFull { .. })));
    assert_eq!(sequencer.batches_pending(), 0);
    sequencer
        .handle_timeout(GENESIS_MS + 1_000)
        .expect("closes");
    assert!(sequencer.poll_journal().is_none(), "nothing to seal");
}
