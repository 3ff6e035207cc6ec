//! Envelope benchmarks: sealing, opening one envelope, opening a batch of
//! 10^4 envelopes (1 and 2 threads), the Merkle root over 10^5 commitments,
//! and the primitive baselines the per-envelope target is measured against.
//!
//! `cargo bench --bench envelope` (all, ~4 minutes on 2 idle cores), or filter,
//! e.g. `cargo bench --bench envelope -- open_one`.
//! `RUSTFLAGS="-C target-cpu=native"` enables AVX2 at compile time for the
//! AEAD (use a separate target dir so the normal build stays warm).

use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use curve25519_dalek::{RistrettoPoint, Scalar};
use ed25519_dalek::Signer;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;
use sealbatch::envelope::layout::{self, padded_len};
use sealbatch::envelope::*;
use sealbatch::order::OrderSpec;
use sealbatch::types::{BatchId, MarketId, Side, Tick};

const SCHEDULE: BatchSchedule = BatchSchedule {
    genesis_ms: 0,
    batch_length_ms: 100,
};
const BATCH_ENVELOPES: usize = 10_000;

fn orders(n: usize) -> Vec<OrderSpec> {
    (0..n as u64)
        .map(|i| OrderSpec {
            market: MarketId((i % 8) as u32),
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            limit: Some(Tick(10_000 + i)),
            qty: 1 + i,
            client_order_id: i,
        })
        .collect()
}

struct Setup {
    deployment: DeploymentId,
    sequencer: SequencerKey,
    master: MasterSecret,
    batch_key: BatchPublicKey,
}

fn setup() -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sequencer = SequencerKey::generate(&mut rng);
    let master = MasterSecret::generate(&mut rng);
    let c = EmbeddedCustodian::new(master.clone(), sequencer.public_key(), SCHEDULE);
    let batch_key = c.public_key(BatchId(0)).unwrap();
    Setup {
        deployment: DeploymentId::of(&sequencer.public_key(), &SCHEDULE),
        sequencer,
        master,
        batch_key,
    }
}

/// `count` envelopes of `n` orders from distinct accounts, sealed in parallel.
fn envelopes(s: &Setup, count: usize, n: usize) -> Vec<Vec<u8>> {
    envelopes_from(s, count, n, count)
}

/// `count` envelopes of `n` orders, envelope `i` signed by account
/// `i % accounts` with nonce `i`, sealed in parallel.
fn envelopes_from(s: &Setup, count: usize, n: usize, accounts: usize) -> Vec<Vec<u8>> {
    let o = orders(n);
    (0..count)
        .into_par_iter()
        .map(|i| {
            let mut key_rng = ChaCha20Rng::seed_from_u64((i % accounts) as u64);
            let account = sealbatch::envelope::generate_account_key(&mut key_rng);
            let mut rng = ChaCha20Rng::seed_from_u64((1 << 32) + i as u64);
            seal_bundle(
                &mut rng,
                &account,
                &s.deployment,
                BatchId(0),
                &s.batch_key,
                i as u64,
                &o,
            )
            .unwrap()
            .into_bytes()
        })
        .collect()
}

fn release(s: &Setup, envs: &[Vec<u8>]) -> ReleasedBatchKey {
    let tree =
        MerkleTree::from_commitments(envs.iter().map(|b| Commitment::of(b)).collect()).unwrap();
    let seal = s.sequencer.sign_seal(BatchId(0), &tree);
    EmbeddedCustodian::new(s.master.clone(), s.sequencer.public_key(), SCHEDULE)
        .release(&seal, SCHEDULE.close_ms(BatchId(0)).unwrap())
        .unwrap()
}

/// A uniformly random ristretto point and scalar.
fn point_and_scalar(rng: &mut ChaCha20Rng) -> (RistrettoPoint, Scalar) {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    let p = RistrettoPoint::from_uniform_bytes(&wide);
    rng.fill_bytes(&mut wide);
    (p, Scalar::from_bytes_mod_order_wide(&wide))
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (p, x) = point_and_scalar(&mut rng);
    g.bench_function("ristretto_varbase_mul", |b| {
        b.iter(|| black_box(x * black_box(p)))
    });
    // The sequencer's per-envelope signature: one receipt.
    let sequencer = SequencerKey::generate(&mut rng);
    let commitment = Commitment::of(b"an envelope");
    g.bench_function("sign_receipt", |b| {
        b.iter(|| sequencer.sign_receipt(black_box(BatchId(7)), black_box(&commitment)))
    });
    let receipt = sequencer.sign_receipt(BatchId(7), &commitment);
    let public = sequencer.public_key();
    g.bench_function("verify_receipt", |b| {
        b.iter(|| receipt.verify(black_box(&public)).unwrap())
    });
    // Group receipts (`spec/envelope.md` §12): a group commit's receipts
    // under one signature; per receipt, the group's signing shared out, and
    // a client's check of a receipt whose group it verified already.
    for n in [16usize, 64] {
        let entries: Vec<_> = (0..n as u64)
            .map(|i| (BatchId(7), Commitment::of(&i.to_le_bytes())))
            .collect();
        g.bench_with_input(BenchmarkId::new("sign_receipt_group", n), &n, |b, _| {
            b.iter(|| {
                let group = sequencer.sign_receipts(black_box(&entries)).unwrap();
                (0..n as u32)
                    .filter_map(|i| group.receipt(i))
                    .map(|r| r.to_bytes().len())
                    .sum::<usize>()
            })
        });
        let group = sequencer.sign_receipts(&entries).unwrap();
        let last = group.receipt(n as u32 - 1).unwrap();
        let mut checker = sealbatch::envelope::ReceiptChecker::new(public);
        checker.check(&last).unwrap();
        g.bench_with_input(
            BenchmarkId::new("check_receipt_in_verified_group", n),
            &n,
            |b, _| b.iter(|| checker.check(black_box(&last)).unwrap()),
        );
    }
    for n in [1usize, 16, 64, 256] {
        let signer = sealbatch::envelope::generate_account_key(&mut rng);
        let vk = signer.verifying_key();
        let msg = vec![7u8; 42 + 30 * n + 30];
        let sig = signer.sign(&msg);
        g.bench_with_input(BenchmarkId::new("ed25519_verify_strict", n), &n, |b, _| {
            b.iter(|| vk.verify_strict(black_box(&msg), &sig).unwrap())
        });
        let len = padded_len(n).unwrap();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&[3u8; 32]));
        let mut buf = vec![0u8; len];
        g.bench_with_input(BenchmarkId::new("chacha20poly1305", len), &len, |b, _| {
            b.iter(|| {
                cipher
                    .encrypt_in_place_detached(Nonce::from_slice(&[0u8; 12]), &[1u8; 41], &mut buf)
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// This thread's CPU time in ns (`CLOCK_THREAD_CPUTIME_ID`): unlike wall
/// time it does not grow when other processes share the cores.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Per-call CPU time of `f`, for the cost ratio of opening against its
/// primitives (robust to other builds on the same cores).
fn cpu_time<F: FnMut()>(b: &mut criterion::Bencher, mut f: F) {
    b.iter_custom(|iters| {
        let t0 = thread_cpu_ns();
        for _ in 0..iters {
            f();
        }
        Duration::from_nanos(thread_cpu_ns().saturating_sub(t0))
    })
}

/// The 1.3× target on CPU time: open one envelope vs. one variable-base
/// ristretto multiplication + one strict Ed25519 verification of the same
/// message size + ChaCha20-Poly1305 over the same plaintext class.
fn cpu_ratio(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("cpu");
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let (p, x) = point_and_scalar(&mut rng);
    g.bench_function("ristretto_varbase_mul", |b| {
        cpu_time(b, || {
            black_box(black_box(x) * black_box(p));
        })
    });
    for n in [1usize, 16, 64, 256] {
        let o = orders(n);
        let account = sealbatch::envelope::generate_account_key(&mut rng);
        let env = seal_bundle(
            &mut rng,
            &account,
            &s.deployment,
            BatchId(0),
            &s.batch_key,
            0,
            &o,
        )
        .unwrap()
        .into_bytes();
        let key = release(&s, std::slice::from_ref(&env));
        g.bench_with_input(BenchmarkId::new("open_one", n), &n, |b, _| {
            cpu_time(b, || {
                black_box(key.open(black_box(&env)).unwrap());
            })
        });
        let vk = account.verifying_key();
        let msg = vec![7u8; 1 + 29 + 8 + 42 + 30 * n];
        let sig = account.sign(&msg);
        g.bench_with_input(BenchmarkId::new("ed25519_verify_strict", n), &n, |b, _| {
            cpu_time(b, || vk.verify_strict(black_box(&msg), &sig).unwrap())
        });
        let len = padded_len(n).unwrap();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&[3u8; 32]));
        let mut buf = vec![0u8; len];
        g.bench_with_input(BenchmarkId::new("chacha20poly1305", n), &n, |b, _| {
            cpu_time(b, || {
                cipher
                    .encrypt_in_place_detached(Nonce::from_slice(&[0u8; 12]), &[1u8; 41], &mut buf)
                    .unwrap();
            })
        });
    }
    // open_batch on one thread, CPU time per envelope (batch of 256).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for n in [1usize, 16, 64, 256] {
        let envs = envelopes(&s, 256, n);
        let key = release(&s, &envs);
        g.throughput(Throughput::Elements(envs.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("open_batch_per_envelope", n),
            &n,
            |b, _| {
                b.iter_custom(|iters| {
                    pool.install(|| {
                        let t0 = thread_cpu_ns();
                        for _ in 0..iters {
                            black_box(open_batch(&key, &envs).unwrap());
                        }
                        Duration::from_nanos(thread_cpu_ns().saturating_sub(t0))
                    })
                })
            },
        );
    }
    g.finish();
}

fn single(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("envelope");
    for n in [1usize, 16, 64, 256] {
        let o = orders(n);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let account = sealbatch::envelope::generate_account_key(&mut rng);
        g.bench_with_input(BenchmarkId::new("seal", n), &n, |b, _| {
            b.iter(|| {
                seal_bundle(
                    &mut rng,
                    &account,
                    &s.deployment,
                    BatchId(0),
                    &s.batch_key,
                    0,
                    &o,
                )
                .unwrap()
            })
        });
        // The same sealing to the key's multiplication table (built once
        // per batch key: `sealing_key_table` below).
        let sealing = SealingKey::new(s.batch_key);
        g.bench_with_input(BenchmarkId::new("seal_with_table", n), &n, |b, _| {
            b.iter(|| {
                seal_bundle_with(
                    &mut rng,
                    &account,
                    &s.deployment,
                    BatchId(0),
                    &sealing,
                    0,
                    &o,
                )
                .unwrap()
            })
        });
        let env = seal_bundle(
            &mut rng,
            &account,
            &s.deployment,
            BatchId(0),
            &s.batch_key,
            0,
            &o,
        )
        .unwrap()
        .into_bytes();
        let key = release(&s, std::slice::from_ref(&env));
        g.bench_with_input(BenchmarkId::new("open_one", n), &n, |b, _| {
            b.iter(|| key.open(black_box(&env)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("check_shape", n), &n, |b, _| {
            b.iter(|| check_shape(black_box(&env), BatchId(0)).unwrap())
        });
    }
    g.bench_function("sealing_key_table", |b| {
        b.iter(|| SealingKey::new(black_box(s.batch_key)))
    });
    g.finish();
}

fn batch(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("open_batch_10k");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(8));
    for n in [1usize, 16, 64, 256] {
        let envs = envelopes(&s, BATCH_ENVELOPES, n);
        let key = release(&s, &envs);
        g.throughput(Throughput::Elements((BATCH_ENVELOPES * n) as u64));
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("orders{n}"), format!("{threads}threads")),
                &threads,
                |b, _| {
                    b.iter(|| {
                        let opened = pool.install(|| open_batch(&key, &envs)).unwrap();
                        assert_eq!(opened.accepted().count(), BATCH_ENVELOPES);
                    })
                },
            );
        }
    }
    g.finish();
}

/// The close-to-result case of `sealbatch loadgen`: a batch of 4,800
/// envelopes of 16 orders from 8 traders, shape-checked on arrival as the
/// sequencer does, opened on 1 and 2 threads.
fn batch_5k(c: &mut Criterion) {
    const ENVELOPES: usize = 4_800;
    let s = setup();
    let envs = envelopes_from(&s, ENVELOPES, 16, 8);
    let key = release(&s, &envs);
    let shaped: Vec<ShapedEnvelope> = envs
        .iter()
        .map(|b| ShapedEnvelope::new(b.clone(), BatchId(0)).unwrap())
        .collect();
    let mut g = c.benchmark_group("open_shaped_4800x16_8accounts");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(ENVELOPES as u64));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{threads}threads")),
            &threads,
            |b, _| {
                b.iter(|| {
                    let opened = pool.install(|| open_shaped_batch(&key, &shaped)).unwrap();
                    assert_eq!(opened.accepted().count(), ENVELOPES);
                })
            },
        );
    }
    g.finish();
}

/// An envelope that opens but whose signature is by another key than the
/// account it names: it reaches the signature check and fails it.
fn forged(s: &Setup, i: u64, n: usize) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64((1 << 40) + i);
    let named = sealbatch::envelope::generate_account_key(&mut rng);
    let signer = sealbatch::envelope::generate_account_key(&mut rng);
    let body = layout::encode_body(&named.verifying_key().to_bytes(), i, &orders(n)).unwrap();
    let mut plaintext = body.clone();
    plaintext.extend_from_slice(
        &signer
            .sign(&layout::bundle_signature_message(
                &s.deployment,
                BatchId(0),
                &body,
            ))
            .to_bytes(),
    );
    plaintext.resize(padded_len(n).unwrap(), 0);
    let mut r = [0u8; 32];
    r.copy_from_slice(Scalar::from(1_000_003u64 + i).as_bytes());
    seal_raw_plaintext(&r, BatchId(0), &s.batch_key, &plaintext)
        .unwrap()
        .into_bytes()
}

/// The same 4,800-envelope batch with 3 % of its envelopes replaced by
/// forged signatures from random keys (the cheap attack on batched
/// verification): each failing run is bisected, not checked one by one.
fn batch_5k_forged(c: &mut Criterion) {
    const ENVELOPES: usize = 4_800;
    const FORGED: usize = 144;
    let s = setup();
    let mut envs = envelopes_from(&s, ENVELOPES - FORGED, 16, 8);
    envs.extend((0..FORGED as u64).map(|i| forged(&s, i, 16)));
    let key = release(&s, &envs);
    let shaped: Vec<ShapedEnvelope> = envs
        .iter()
        .map(|b| ShapedEnvelope::new(b.clone(), BatchId(0)).unwrap())
        .collect();
    let mut g = c.benchmark_group("open_shaped_4800x16_3pct_forged");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(ENVELOPES as u64));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    g.bench_function("1threads", |b| {
        b.iter(|| {
            let opened = pool.install(|| open_shaped_batch(&key, &shaped)).unwrap();
            assert_eq!(opened.accepted().count(), ENVELOPES - FORGED);
        })
    });
    g.finish();
}

fn merkle(c: &mut Criterion) {
    let commitments: Vec<Commitment> = (0u64..100_000)
        .map(|i| Commitment::of(&i.to_le_bytes()))
        .collect();
    let mut g = c.benchmark_group("merkle");
    g.sample_size(20);
    g.bench_function("tree_100k", |b| {
        b.iter(|| {
            MerkleTree::from_commitments(commitments.clone())
                .unwrap()
                .root()
        })
    });
    let mut sorted = commitments.clone();
    sorted.sort_unstable();
    g.bench_function("root_100k_sorted", |b| {
        b.iter(|| merkle_root(&sorted).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = primitives, cpu_ratio, single, batch, batch_5k, batch_5k_forged, merkle
}
criterion_main!(benches);
