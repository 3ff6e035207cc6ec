//! Seeded simulation of the replicated sequencer (`spec/replication.md`):
//! three replicas, each running the real core and the real role machine
//! ([`sealbatch::role::ReplicaRole`], which the node's replica driver
//! plays over openraft) over a model of the Raft log — terms and votes
//! with the election restriction, a leader's blank entry, commit by a
//! majority of the current term's entries only, divergent uncommitted
//! suffixes truncated by the next leader — with replicas crashing and
//! restarting, partitions cutting one replica off, and elections started
//! while a leader is healthy. Each run draws how many entries a leader
//! keeps in flight (1 to 4). Clients talk to whichever replica believes it leads (a cut-off
//! leader included) and submit the same envelope again when theirs was
//! never acknowledged.
//!
//! After every run: every acknowledged envelope is in its batch, which the
//! committed log sealed exactly once and cleared exactly once; every seal
//! and result any leader published is the committed one; every replica's
//! journal is the committed log and its ledger the same; `verify`
//! re-derives every batch. A failure prints its seed; rerun one seed with
//! `SEALBATCH_SIM_SEED=<seed> cargo test --test logic -- replica_sim::`.

#![allow(clippy::disallowed_methods)]

use crate::common;
use sealbatch::codec::Encode;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sealbatch::envelope::{
    BatchSchedule, Commitment, EmbeddedCustodian, MasterSecret, SequencerKey, seal_bundle,
};
use sealbatch::market::{AccountId, AssetId, MarketConfig};
use sealbatch::order::OrderSpec;
use sealbatch::role::{Action, EntryId, Proposal, ReplicaRole, Role};
use sealbatch::sequencer::{
    BatchOutcome, Event, Genesis, Journaled, Limits, OpToken, Sequencer, SubmitError, SubmitToken,
    verify_journal,
};
use sealbatch::types::{BatchId, Lsn, MarketId, Side, Tick};

use common::{JournalSummary, seeds};

const REPLICAS: usize = 3;
const MAJORITY: usize = REPLICAS / 2 + 1;
const USD: AssetId = AssetId(0);
const BTC: AssetId = AssetId(1);
const GENESIS_MS: u64 = 1_700_000_000_000;
const BATCH_MS: u64 = 100;
/// A follower's role machine asks for a checkpoint every this many seals.
const CHECKPOINT_EVERY: u64 = 4;

type Record = (Lsn, u8, Vec<u8>);

/// One entry of the Raft log: a leader's proposal, or (`None`) the blank
/// entry a new leader commits first.
#[derive(Debug)]
struct Entry {
    term: u64,
    proposal: Option<Proposal>,
}

impl Entry {
    fn records(&self) -> Vec<Record> {
        self.proposal.as_ref().map_or_else(Vec::new, |p| {
            p.records()
                .map(|(lsn, kind, payload)| (lsn, kind, payload.to_vec()))
                .collect()
        })
    }
}

struct Replica {
    up: bool,
    // Durable (fsynced before it counts): the vote, the log, what is
    // known committed, and the journal of applied records.
    term: u64,
    voted: Option<usize>,
    log: Vec<Arc<Entry>>,
    commit: usize,
    applied: usize,
    journal: Vec<Record>,
    // Lost in a crash.
    /// The Raft model's leader of this term (its role machine may still be
    /// catching up, or have given up).
    raft_leader: Option<u64>,
    /// The real role machine.
    role: ReplicaRole,
    /// As a leader: how much of each replica's log matches its own.
    matched: [usize; REPLICAS],
    sequencer: Option<Sequencer>,
}

impl Replica {
    fn last_term(&self) -> u64 {
        self.log.last().map_or(0, |e| e.term)
    }

    /// The term it leads in the Raft model.
    fn leads(&self) -> Option<u64> {
        self.raft_leader
    }

    /// Whether its role machine leads (its sequencer runs).
    fn serves(&self) -> bool {
        self.role.leads().is_some()
    }

    fn seq(&mut self) -> &mut Sequencer {
        self.sequencer
            .as_mut()
            .expect("an up replica has a sequencer")
    }
}

/// A client's submission: the replica it went to, and the envelope.
#[derive(Clone)]
struct Submission {
    replica: usize,
    e: BatchId,
    commitment: Commitment,
    bytes: Vec<u8>,
    /// Steps since it was sent.
    age: u32,
}

#[derive(Default, Debug)]
struct Stats {
    crashes: usize,
    partitions: usize,
    elections: usize,
    promotions: usize,
    /// Leaders that learnt of a newer term and stepped down.
    deposed: usize,
    /// Uncommitted entries a newer leader's log replaced.
    truncated: usize,
    /// Envelopes sent again after a failover, and of them receipted.
    resubmitted: usize,
    receipts: usize,
    /// Follower checkpoints the role machine asked for.
    checkpoints: usize,
    /// Elected replicas that gave up waiting for their log.
    gave_up: usize,
    /// Submissions a leader took that were never acknowledged by it.
    unacknowledged: usize,
    batches: usize,
}

struct Cluster {
    seed: u64,
    rng: ChaCha20Rng,
    now: u64,
    master: [u8; 32],
    key_seed: [u8; 32],
    key: SequencerKey,
    replicas: Vec<Replica>,
    /// Replicas talk only within the same side of a partition.
    side: [u8; REPLICAS],
    traders: Vec<SigningKey>,
    nonce: u64,
    next_token: u64,
    inflight: BTreeMap<u64, Submission>,
    retry: Vec<Submission>,
    acked: BTreeSet<(BatchId, Commitment)>,
    /// Every result and seal any leader published.
    cleared: BTreeMap<BatchId, Arc<BatchOutcome>>,
    sealed: BTreeMap<BatchId, [u8; 32]>,
    funded: bool,
    /// Whether clients send new envelopes.
    clients: bool,
    /// Most entries a leader keeps uncommitted.
    in_flight: usize,
    stats: Stats,
}

fn genesis(key: &SequencerKey) -> Genesis {
    Genesis {
        sequencer: key.public_key(),
        schedule: BatchSchedule {
            genesis_ms: GENESIS_MS,
            batch_length_ms: BATCH_MS,
        },
        fee_account: AccountId([0xfe; 32]),
        orders_per_account_per_batch_max:
            sealbatch::sequencer::ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT,
        markets: vec![MarketConfig {
            id: MarketId(1),
            base: BTC,
            quote: USD,
            tick_size: 1,
            lot_size: 10,
            band_min: Tick(50),
            band_max: Tick(150),
            initial_price: Tick(100),
            fee_bps: 5,
        }],
    }
}

/// Small result parts, so that results span several records and entries.
fn limits() -> Limits {
    Limits {
        result_part_bytes: 512,
        ..Limits::default()
    }
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut master = [0; 32];
        rng.fill_bytes(&mut master);
        let mut key_seed = [0; 32];
        rng.fill_bytes(&mut key_seed);
        let traders = (0..5)
            .map(|_| sealbatch::envelope::generate_account_key(&mut rng))
            .collect();
        let in_flight = 1 + rng.next_u32() as usize % 4;
        let mut cluster = Cluster {
            seed,
            rng,
            now: GENESIS_MS,
            master,
            key_seed,
            key: SequencerKey::from_seed(&key_seed),
            replicas: Vec::new(),
            side: [0; REPLICAS],
            traders,
            nonce: 0,
            next_token: 0,
            inflight: BTreeMap::new(),
            retry: Vec::new(),
            acked: BTreeSet::new(),
            cleared: BTreeMap::new(),
            sealed: BTreeMap::new(),
            funded: false,
            clients: true,
            in_flight,
            stats: Stats::default(),
        };
        for _ in 0..REPLICAS {
            let sequencer = cluster.rebuild(&[]);
            cluster.replicas.push(Replica {
                up: true,
                term: 0,
                voted: None,
                log: Vec::new(),
                commit: 0,
                applied: 0,
                journal: Vec::new(),
                raft_leader: None,
                role: cluster.role(Lsn::NONE),
                matched: [0; REPLICAS],
                sequencer: Some(sequencer),
            });
        }
        cluster
    }

    /// A replica's sequencer built from its journal of committed records,
    /// as the node's `recover_replica` builds it.
    fn rebuild(&self, journal: &[Record]) -> Sequencer {
        let genesis = genesis(&self.key);
        let custodian = Box::new(EmbeddedCustodian::new(
            MasterSecret::from_bytes(self.master),
            self.key.public_key(),
            genesis.schedule,
        ));
        let journaled = Journaled {
            checkpoint: None,
            records: journal.to_vec(),
            next_lsn: Lsn(journal.len() as u64 + 1),
        };
        Sequencer::recover_replica(
            genesis,
            limits(),
            SequencerKey::from_seed(&self.key_seed),
            custodian,
            journaled,
            self.now,
        )
        .unwrap_or_else(|error| panic!("seed {}: a replica does not rebuild: {error}", self.seed))
    }

    /// A fresh role machine over a journal of `committed_lsn` records, as
    /// the node's replica driver starts one.
    fn role(&self, committed_lsn: Lsn) -> ReplicaRole {
        ReplicaRole::new(committed_lsn, self.in_flight, CHECKPOINT_EVERY)
    }

    /// Carries out replica `r`'s role actions as the node's replica driver
    /// does (`node::driver::replica`).
    fn act(&mut self, r: usize, actions: Vec<Action>) {
        let seed = self.seed;
        for action in actions {
            match action {
                Action::Propose(proposal) => {
                    let term = self.replicas[r].leads().unwrap_or_else(|| {
                        panic!("seed {seed}: a replica proposes but does not lead")
                    });
                    self.replicas[r].log.push(Arc::new(Entry {
                        term,
                        proposal: Some(proposal),
                    }));
                }
                Action::Durable(_) => {}
                Action::Promoted { fresh, .. } => {
                    self.stats.promotions += 1;
                    if fresh {
                        self.fund(r);
                    }
                }
                Action::GaveUp { .. } => self.stats.gave_up += 1,
                Action::Demoted => {
                    self.stats.deposed += 1;
                    self.orphan(r);
                }
                Action::Rebuild(lsn) => {
                    assert!(
                        Lsn(self.replicas[r].journal.len() as u64) >= lsn,
                        "seed {seed}: a rebuild asks for records the journal does not hold"
                    );
                    self.replicas[r].sequencer = Some(self.rebuild(&self.replicas[r].journal));
                    let now = self.now;
                    let replica = &mut self.replicas[r];
                    let sequencer = replica.sequencer.as_mut().expect("rebuilt");
                    let actions = replica
                        .role
                        .rebuilt(sequencer, now)
                        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    self.act(r, actions);
                }
                Action::Checkpoint => self.stats.checkpoints += 1,
            }
        }
    }

    fn talk(&self, a: usize, b: usize) -> bool {
        self.replicas[a].up && self.replicas[b].up && self.side[a] == self.side[b]
    }

    /// Replica `r` stops leading in the Raft model: its role machine is
    /// demoted (what waited on it is answered `NotLeader`, its clients try
    /// again elsewhere, and its sequencer is rebuilt from its journal).
    fn step_down(&mut self, r: usize) {
        self.replicas[r].raft_leader = None;
        let actions = self.replicas[r].role.demote();
        self.act(r, actions);
    }

    /// Submissions waiting on replica `r` will not be answered by it.
    fn orphan(&mut self, r: usize) {
        let lost: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, s)| s.replica == r)
            .map(|(&t, _)| t)
            .collect();
        for token in lost {
            let submission = self.inflight.remove(&token).expect("listed");
            self.stats.unacknowledged += 1;
            self.retry.push(submission);
        }
    }

    /// `r` learns of `term`: a newer term makes it a follower.
    fn hear_term(&mut self, r: usize, term: u64) {
        if term > self.replicas[r].term {
            self.replicas[r].term = term;
            self.replicas[r].voted = None;
            self.step_down(r);
        }
    }

    fn crash(&mut self, r: usize) {
        let role = self.role(Lsn::NONE);
        let replica = &mut self.replicas[r];
        replica.up = false;
        // Lost: a restart makes a new one over the journal.
        replica.role = role;
        replica.sequencer = None;
        replica.raft_leader = None;
        replica.matched = [0; REPLICAS];
        self.stats.crashes += 1;
        self.orphan(r);
    }

    fn restart(&mut self, r: usize) {
        self.replicas[r].sequencer = Some(self.rebuild(&self.replicas[r].journal));
        self.replicas[r].role = self.role(Lsn(self.replicas[r].journal.len() as u64));
        self.replicas[r].up = true;
    }

    /// Replica `c` stands for the next term; voters grant only a log at
    /// least as up to date as theirs (last term, then length).
    fn election(&mut self, c: usize) {
        self.stats.elections += 1;
        let term = self.replicas[c].term + 1;
        self.hear_term(c, term);
        self.replicas[c].voted = Some(c);
        let mut votes = 1;
        for v in 0..REPLICAS {
            if v == c || !self.talk(c, v) {
                continue;
            }
            if self.replicas[v].term > term {
                let newer = self.replicas[v].term;
                self.hear_term(c, newer);
                return;
            }
            self.hear_term(v, term);
            let (candidate, voter) = (&self.replicas[c], &self.replicas[v]);
            let up_to_date = (candidate.last_term(), candidate.log.len())
                >= (voter.last_term(), voter.log.len());
            if voter.voted.is_none() && up_to_date {
                self.replicas[v].voted = Some(c);
                votes += 1;
            }
        }
        if votes >= MAJORITY {
            let now = self.now;
            let seed = self.seed;
            let replica = &mut self.replicas[c];
            replica.log.push(Arc::new(Entry {
                term,
                proposal: None,
            }));
            replica.raft_leader = Some(term);
            replica.matched = [0; REPLICAS];
            replica.matched[c] = replica.log.len();
            // It leads once its blank entry is applied.
            let blank = EntryId {
                term,
                index: replica.log.len() as u64,
            };
            let sequencer = replica.sequencer.as_mut().expect("up");
            let actions = replica
                .role
                .elected(sequencer, now, term, Some(blank))
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            self.act(c, actions);
        }
    }

    /// Leader `l` sends its log to the replicas it reaches: a follower's
    /// divergent suffix is truncated (never a committed entry), some or
    /// all of the rest appended, and the commit index passed on.
    fn replicate(&mut self, l: usize, all: bool) {
        let Some(term) = self.replicas[l].leads() else {
            return;
        };
        for f in 0..REPLICAS {
            if f == l || !self.talk(l, f) {
                continue;
            }
            if self.replicas[f].term > term {
                let newer = self.replicas[f].term;
                self.hear_term(l, newer);
                return;
            }
            self.hear_term(f, term);
            let leader_log = self.replicas[l].log.clone();
            let leader_commit = self.replicas[l].commit;
            let follower = &mut self.replicas[f];
            let common = leader_log
                .iter()
                .zip(&follower.log)
                .take_while(|(a, b)| a.term == b.term)
                .count();
            for (a, b) in leader_log.iter().zip(&follower.log).take(common) {
                assert!(Arc::ptr_eq(a, b), "log matching: same index and term");
            }
            assert!(
                common >= follower.commit,
                "seed {}: a committed entry would be truncated",
                self.seed
            );
            self.stats.truncated += follower.log.len() - common;
            follower.log.truncate(common);
            let missing = leader_log.len() - common;
            let sent = if all || missing == 0 {
                missing
            } else {
                self.rng.next_u32() as usize % (missing + 1)
            };
            follower
                .log
                .extend(leader_log[common..common + sent].iter().cloned());
            let matched = common + sent;
            follower.commit = follower.commit.max(leader_commit.min(matched));
            self.replicas[l].matched[f] = matched;
        }
        // Commit the newest entry of this term a majority holds (entries of
        // earlier terms commit only beneath it).
        let leader = &mut self.replicas[l];
        leader.matched[l] = leader.log.len();
        for n in (leader.commit + 1..=leader.log.len()).rev() {
            let holders = leader.matched.iter().filter(|&&m| m >= n).count();
            if leader.log[n - 1].term == term && holders >= MAJORITY {
                leader.commit = n;
                break;
            }
        }
    }

    /// Replica `r` applies its committed entries: records to its journal
    /// (as the node's state machine does), then the entry to its role
    /// machine — durable for a leader's own entries, applied to the
    /// sequencer for a follower's; an elected replica leads once its blank
    /// entry is applied.
    fn apply(&mut self, r: usize) {
        let seed = self.seed;
        while self.replicas[r].up && self.replicas[r].applied < self.replicas[r].commit {
            let now = self.now;
            let replica = &mut self.replicas[r];
            let entry = Arc::clone(&replica.log[replica.applied]);
            replica.applied += 1;
            let id = EntryId {
                term: entry.term,
                index: replica.applied as u64,
            };
            if let Some(proposal) = &entry.proposal {
                assert_eq!(
                    proposal.first_lsn(),
                    replica.journal.len() as u64 + 1,
                    "seed {seed}: committed records follow the journal"
                );
                replica.journal.extend(entry.records());
            }
            let sequencer = replica.sequencer.as_mut().expect("up");
            let actions = replica
                .role
                .committed(sequencer, now, id, entry.proposal.as_ref())
                .unwrap_or_else(|error| {
                    panic!("seed {seed}: entry {id:?} does not apply: {error}")
                });
            self.act(r, actions);
        }
    }

    fn fund(&mut self, r: usize) {
        let accounts: Vec<AccountId> = self
            .traders
            .iter()
            .map(|t| AccountId(t.verifying_key().to_bytes()))
            .collect();
        for (i, account) in accounts.into_iter().enumerate() {
            for (asset, amount) in [(USD, 5_000_000), (BTC, 50_000)] {
                self.replicas[r]
                    .seq()
                    .handle_deposit(OpToken(i as u64), account, asset, amount)
                    .expect("deposit");
            }
        }
    }

    /// A leader's turn: timeouts, its journal records proposed as one
    /// entry, opening jobs run, events handled.
    fn turn(&mut self, l: usize) {
        let now = self.now;
        let actions = self.replicas[l].role.handle_timeout(now);
        self.act(l, actions);
        if !self.replicas[l].serves() {
            return;
        }
        self.replicas[l].seq().handle_timeout(now).expect("timeout");
        loop {
            let mut progress = false;
            let writes: Vec<_> =
                std::iter::from_fn(|| self.replicas[l].seq().poll_journal()).collect();
            if !writes.is_empty() {
                progress = true;
                let actions = self.replicas[l]
                    .role
                    .propose(writes)
                    .unwrap_or_else(|e| panic!("seed {}: {e}", self.seed));
                self.act(l, actions);
            }
            while let Some(job) = self.replicas[l].seq().poll_job() {
                progress = true;
                let opened = job.run();
                self.replicas[l]
                    .seq()
                    .handle_opened(now, opened)
                    .expect("a batch processes");
            }
            while let Some(event) = self.replicas[l].seq().poll_event() {
                progress = true;
                self.event(event);
            }
            if !progress {
                return;
            }
        }
    }

    fn event(&mut self, event: Event) {
        let seed = self.seed;
        match event {
            Event::Receipt {
                token,
                e,
                commitment,
            } => {
                let submission = self
                    .inflight
                    .remove(&token.0)
                    .expect("a receipt for a submission waiting on this leader");
                assert_eq!((submission.e, submission.commitment), (e, commitment));
                self.stats.receipts += 1;
                self.acked.insert((e, commitment));
            }
            Event::BatchSealed { seal, .. } => {
                let root = *self.sealed.entry(seal.e).or_insert(seal.root.0);
                assert_eq!(
                    root, seal.root.0,
                    "seed {seed}: batch {} published with two seals",
                    seal.e
                );
            }
            Event::BatchCleared { outcome, .. } => {
                let known = self
                    .cleared
                    .entry(outcome.e)
                    .or_insert_with(|| Arc::clone(&outcome));
                assert_eq!(
                    known.to_bytes(),
                    outcome.to_bytes(),
                    "seed {seed}: batch {} published with two results",
                    outcome.e
                );
            }
            Event::BatchVoided { e, reason } => panic!("seed {seed}: batch {e} voided: {reason}"),
            Event::KeyRequested { .. } => panic!("the embedded custodian asks no keyper"),
            // The replicas share one clock: a leader resumes only after the
            // close of every batch it finds sealed.
            Event::KeyUnavailable { e, reason } => {
                panic!("seed {seed}: batch {e}: the custodian refused its key: {reason}")
            }
            Event::BatchOpened { .. } | Event::OperationDurable { .. } => {}
            Event::CommitteeLog { .. } => {}
        }
    }

    /// A replica that believes it leads, as a client finds one (a cut-off
    /// leader included).
    fn some_leader(&mut self) -> Option<usize> {
        let leaders: Vec<usize> = (0..REPLICAS)
            .filter(|&r| self.replicas[r].up && self.replicas[r].serves())
            .collect();
        if leaders.is_empty() {
            return None;
        }
        Some(leaders[self.rng.next_u32() as usize % leaders.len()])
    }

    fn send(&mut self, mut submission: Submission, l: usize) -> bool {
        let now = self.now;
        self.next_token += 1;
        let token = self.next_token;
        match self.replicas[l].seq().handle_submit(
            now,
            SubmitToken(token),
            submission.bytes.clone(),
        ) {
            Ok(commitment) => {
                assert_eq!(commitment, submission.commitment);
                submission.replica = l;
                submission.age = 0;
                self.inflight.insert(token, submission);
                true
            }
            // Too late, or a leader whose seals do not commit (cut off)
            // refusing more: the client gives up on this envelope.
            Err(
                SubmitError::BatchClosed { .. }
                | SubmitError::NotAnnounced { .. }
                | SubmitError::Busy { .. }
                | SubmitError::BatchFull { .. },
            ) => false,
            Err(other) => panic!("seed {}: unexpected refusal: {other}", self.seed),
        }
    }

    fn submit(&mut self) {
        let Some(l) = self.some_leader() else {
            return;
        };
        let now = self.now;
        let e = self.replicas[l].seq().open_batch_at(now)
            + u64::from(self.rng.next_u32().is_multiple_of(3));
        let public = self.replicas[l]
            .seq()
            .batch_public_key(e)
            .expect("an announced key");
        let deployment = self.replicas[l].seq().deployment();
        let trader = self.traders[self.rng.next_u32() as usize % self.traders.len()].clone();
        let orders: Vec<OrderSpec> = (0..1 + self.rng.next_u32() % 3)
            .map(|i| {
                let roll = self.rng.next_u32();
                OrderSpec {
                    market: MarketId(1),
                    side: if roll & 1 == 0 { Side::Buy } else { Side::Sell },
                    limit: (!roll.is_multiple_of(5)).then(|| Tick(85 + u64::from(roll >> 8) % 30)),
                    qty: 1 + u64::from(roll >> 16) % 20,
                    client_order_id: u64::from(i),
                }
            })
            .collect();
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
        .expect("seals")
        .into_bytes();
        let submission = Submission {
            replica: l,
            e,
            commitment: Commitment::of(&envelope),
            bytes: envelope,
            age: 0,
        };
        self.send(submission, l);
    }

    /// Clients whose leader went away, or stayed silent too long, send the
    /// same envelope to a leader again.
    fn resubmit(&mut self) {
        for submission in self.inflight.values_mut() {
            submission.age += 1;
        }
        let silent: Vec<Submission> = self
            .inflight
            .values()
            .filter(|s| s.age == 5)
            .cloned()
            .collect();
        self.retry.extend(silent);
        for submission in std::mem::take(&mut self.retry) {
            if let Some(l) = self.some_leader()
                && self.send(submission, l)
            {
                self.stats.resubmitted += 1;
            }
        }
    }

    /// A replica that hears from no leader of its term (or, rarely, any
    /// replica: a delayed heartbeat) starts an election.
    fn elections(&mut self, spurious: bool) {
        for r in 0..REPLICAS {
            if !self.replicas[r].up || self.replicas[r].leads().is_some() {
                continue;
            }
            let term = self.replicas[r].term;
            let led = (0..REPLICAS).any(|l| {
                l != r && self.talk(l, r) && self.replicas[l].leads().is_some_and(|t| t >= term)
            });
            let roll = self.rng.next_u32();
            if (!led && roll.is_multiple_of(3)) || (spurious && roll.is_multiple_of(200)) {
                self.election(r);
            }
        }
    }

    fn faults(&mut self) {
        let roll = self.rng.next_u32();
        let r = (roll >> 8) as usize % REPLICAS;
        match roll % 64 {
            0 | 1 if self.replicas[r].up => self.crash(r),
            2..=5 if !self.replicas[r].up => self.restart(r),
            6 => {
                // Cut replica r off from the other two.
                self.side = [0; REPLICAS];
                self.side[r] = 1;
                self.stats.partitions += 1;
            }
            7..=9 => self.side = [0; REPLICAS],
            _ => {}
        }
    }

    /// One step of the cluster: time passes, clients submit, leaders work,
    /// logs replicate and apply.
    fn step(&mut self, faults: bool) {
        self.now += u64::from(self.rng.next_u32() % 40);
        if faults && self.funded {
            self.faults();
        }
        self.elections(faults);
        for _ in 0..self.rng.next_u32() % 4 {
            if self.clients {
                self.submit();
            }
        }
        self.resubmit();
        for r in 0..REPLICAS {
            if self.replicas[r].up {
                self.turn(r);
            }
        }
        for r in 0..REPLICAS {
            if self.replicas[r].up {
                self.replicate(r, !faults);
            }
        }
        for r in 0..REPLICAS {
            if self.replicas[r].up {
                self.apply(r);
                self.turn(r);
            }
        }
        self.funded |= self.replicas.iter().any(|r| r.journal.len() > 10);
    }

    /// Every replica up and reachable; steps until a leader has applied
    /// every batch's result and every replica holds the whole log.
    fn settle(&mut self) {
        self.side = [0; REPLICAS];
        for r in 0..REPLICAS {
            if !self.replicas[r].up {
                self.restart(r);
            }
        }
        let end = self.now + 20 * BATCH_MS;
        for step in 0..2_000 {
            // Clients send what was never acknowledged again, then stop.
            self.clients = step < 20;
            self.step(false);
            self.now += BATCH_MS / 2;
            let leader = (0..REPLICAS).find(|&r| self.replicas[r].serves());
            if let Some(l) = leader
                && self.now > end
                && self.replicas[l].seq().batches_pending() == 0
                && !self.replicas[l].role.holds_records()
                && self.replicas[l].log.len() == self.replicas[l].commit
                && self
                    .replicas
                    .iter()
                    .all(|r| r.applied == self.replicas[l].log.len())
            {
                return;
            }
        }
        panic!("seed {}: the cluster does not settle", self.seed);
    }
}

fn run(seed: u64, steps: usize) -> Cluster {
    let mut cluster = Cluster::new(seed);
    for _ in 0..steps {
        cluster.step(true);
    }
    cluster.settle();
    check(&cluster);
    cluster.stats.batches = cluster.cleared.len();
    cluster
}

/// The checks every run ends with.
fn check(cluster: &Cluster) {
    let seed = cluster.seed;
    let leader = cluster
        .replicas
        .iter()
        .find(|r| r.serves())
        .expect("a leader");
    let committed: Vec<Record> = leader.log[..leader.commit]
        .iter()
        .flat_map(|e| e.records())
        .collect();
    for (i, (lsn, ..)) in committed.iter().enumerate() {
        assert_eq!(
            *lsn,
            i as u64 + 1,
            "seed {seed}: committed LSNs run 1, 2, 3, …"
        );
    }
    // Every replica's journal is the committed log, and its state the same.
    for (r, replica) in cluster.replicas.iter().enumerate() {
        assert!(
            replica.journal == committed,
            "seed {seed}: replica {r}'s journal differs from the committed log"
        );
        assert_eq!(
            replica.sequencer.as_ref().expect("up").ledger(),
            leader.sequencer.as_ref().expect("up").ledger(),
            "seed {seed}: replica {r}'s ledger differs"
        );
    }
    // Each batch sealed once and settled once in the committed log, every
    // acknowledged envelope in it; every seal and result any leader
    // published is the committed one. (A result a deposed leader proposed
    // may be committed by the next one, which applies it while catching up
    // and does not publish it again — as a single node's result durable
    // just before a crash: clients read it from the log.)
    let summary = JournalSummary::of(&committed);
    summary.holds_acknowledged(&cluster.acked);
    for (e, root) in &cluster.sealed {
        assert_eq!(
            summary.seals.get(e).map(|s| s.root.0),
            Some(*root),
            "seed {seed}: batch {e}'s published seal is not the committed one"
        );
    }
    assert_eq!(
        summary.seals.keys().collect::<Vec<_>>(),
        summary.results.keys().collect::<Vec<_>>(),
        "seed {seed}: every committed seal has its result"
    );
    for (e, outcome) in &cluster.cleared {
        assert_eq!(
            summary.results.get(e).map(BatchOutcome::to_bytes),
            Some(outcome.to_bytes()),
            "seed {seed}: batch {e}'s published result is not the committed one"
        );
    }
    let report = verify_journal(committed.iter().cloned()).expect("verify reads the log");
    assert!(
        report.all_ok(),
        "seed {seed}: verify fails: {:?}",
        report
            .batches
            .iter()
            .find(|b| b.verdict.is_err() || b.pending)
    );
    assert_eq!(report.batches.len(), summary.results.len());
}

#[test]
fn crashes_partitions_and_elections_lose_no_acknowledged_envelope_and_seal_once() {
    let mut total = Stats::default();
    for seed in seeds(0..8) {
        eprintln!("seed {seed}");
        let stats = run(seed, 400).stats;
        assert!(
            stats.promotions >= 1 && stats.receipts > 0,
            "seed {seed}: {stats:?}"
        );
        total.crashes += stats.crashes;
        total.elections += stats.elections;
        total.partitions += stats.partitions;
        total.promotions += stats.promotions;
        total.deposed += stats.deposed;
        total.truncated += stats.truncated;
        total.resubmitted += stats.resubmitted;
        total.checkpoints += stats.checkpoints;
        total.gave_up += stats.gave_up;
        total.receipts += stats.receipts;
        total.unacknowledged += stats.unacknowledged;
        total.batches += stats.batches;
    }
    eprintln!("{total:?}");
    if std::env::var("SEALBATCH_SIM_SEED").is_err() {
        // The runs went through what they are meant to.
        assert!(total.crashes >= 8, "{total:?}");
        assert!(total.partitions >= 8, "{total:?}");
        assert!(total.elections >= total.promotions, "{total:?}");
        assert!(total.promotions >= 16, "{total:?}");
        assert!(total.deposed >= 4, "{total:?}");
        assert!(total.truncated >= 1, "{total:?}");
        assert!(total.resubmitted >= 10, "{total:?}");
        assert!(total.checkpoints >= 8, "{total:?}");
        assert!(total.batches >= 100, "{total:?}");
    }
}

#[test]
fn a_cut_off_leader_issues_no_receipt_and_its_clients_move_on() {
    let mut cluster = Cluster::new(99);
    for _ in 0..40 {
        cluster.step(false);
    }
    let old = (0..REPLICAS)
        .find(|&r| cluster.replicas[r].serves())
        .expect("a leader");
    cluster.side[old] = 1;
    let receipts = cluster.stats.receipts;
    let committed = cluster.replicas[old].commit;
    // Clients still reach the cut-off leader and it takes submissions, but
    // nothing it proposes commits.
    for _ in 0..60 {
        cluster.step(false);
        assert_eq!(cluster.replicas[old].commit, committed);
    }
    assert!(
        cluster.inflight.values().any(|s| s.replica == old) || cluster.stats.resubmitted > 0,
        "the cut-off leader was sent nothing"
    );
    let new = (0..REPLICAS)
        .find(|&r| r != old && cluster.replicas[r].serves())
        .expect("the other two elected a leader");
    assert!(cluster.replicas[new].commit > committed);
    assert!(cluster.stats.receipts > receipts, "the new leader receipts");
    // Healed, the old leader learns of the newer term, steps down, and its
    // uncommitted entries are replaced.
    cluster.settle();
    assert_eq!(cluster.replicas[old].role.role(), Role::Follower);
    assert!(cluster.stats.deposed >= 1 && cluster.stats.truncated >= 1);
    check(&cluster);
}

#[test]
fn the_same_seed_gives_the_same_log() {
    let log = |seed| {
        let cluster = run(seed, 150);
        let leader = cluster
            .replicas
            .iter()
            .find(|r| r.serves())
            .expect("a leader");
        let mut hasher = blake3::Hasher::new();
        for (lsn, kind, payload) in &leader.journal {
            hasher.update(&lsn.to_le_bytes());
            hasher.update(&[*kind]);
            hasher.update(payload);
        }
        (hasher.finalize(), format!("{:?}", cluster.stats))
    };
    assert_eq!(log(5), log(5));
}
