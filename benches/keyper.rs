//! Keyper benchmarks: a window's key generation per key (per batch) and per
//! keyper — dealing, checking and opening every dealing received, summing —
//! for committees of 5, 7 and 16; the sequencer's check of one dealing;
//! combining `t` released shares into `s_e` with every share checked; and
//! what release attestations cost a client per batch result — checking `t`
//! keypers' attestations of its seal (`spec/keyper.md` §9) — for
//! committees of 5, 16 and 64 (their bytes are printed once).
//!
//! `cargo bench --bench keyper` (~1 minute on 2 idle cores), or filter, e.g.
//! `cargo bench --bench keyper -- n7`. Throughput is in keys (batches): a
//! 100 ms batch length needs 10 keys per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sealbatch::keyper::sharing::random_scalar;
use sealbatch::keyper::{Combiner, Committee, Generation, Member, Window, deal};
use sealbatch::types::BatchId;

/// Batches per window in the benchmark.
const BATCHES: u32 = 16;

fn committee(n: usize) -> (Committee, Vec<Scalar>) {
    let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
    let mut members = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..n {
        let signing = sealbatch::envelope::generate_account_key(&mut rng);
        let decryption = random_scalar(&mut rng);
        members.push(Member {
            signing_key: signing.verifying_key().to_bytes(),
            encryption_key: RistrettoPoint::mul_base(&decryption).compress().to_bytes(),
        });
        keys.push((signing.verifying_key().to_bytes(), decryption));
    }
    let committee = Committee::new(
        Committee::default_threshold(n),
        members,
        sealbatch::envelope::DeploymentId([1; 32]),
    )
    .unwrap();
    keys.sort_by_key(|(k, _)| committee.index_of(k).unwrap());
    (committee, keys.into_iter().map(|(_, d)| d).collect())
}

fn generation(c: &mut Criterion) {
    let window = Window {
        id: 1,
        first_batch: BatchId(0),
        batches: BATCHES,
    };
    let mut g = c.benchmark_group("keyper_generation");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(BATCHES)));
    for n in [5usize, 7, 16] {
        let (committee, decryption) = committee(n);
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        g.bench_function(BenchmarkId::new("deal", format!("n{n}")), |b| {
            b.iter(|| deal(&mut rng, &committee, &window, 1))
        });
        let dealings: Vec<_> = committee
            .indices()
            .map(|i| deal(&mut rng, &committee, &window, i).0)
            .collect();
        // What one keyper does with every dealing of the window.
        g.bench_function(BenchmarkId::new("receive_all", format!("n{n}")), |b| {
            b.iter(|| {
                let mut view = Generation::keyper(committee.clone(), window, 1, decryption[0]);
                for d in &dealings {
                    view.handle_dealing(d).unwrap();
                }
                black_box(view.finalize().unwrap())
            })
        });
        // What the sequencer's log keeper does with one dealing (an
        // observer checks its commitments and proofs; it opens no share):
        // work on the driver thread, once per dealer and window.
        g.bench_function(BenchmarkId::new("observe_one", format!("n{n}")), |b| {
            b.iter(|| {
                let mut view = Generation::observer(committee.clone(), window);
                view.handle_dealing(&dealings[0]).unwrap();
                black_box(view)
            })
        });
        let bytes: usize = dealings[0]
            .batches
            .iter()
            .map(|b| b.commitments.len() * 32 + 64)
            .sum::<usize>()
            + dealings[0]
                .shares
                .iter()
                .map(|s| 32 + s.ciphertext.len())
                .sum::<usize>();
        eprintln!(
            "n = {n}: one dealing of {BATCHES} keys is {bytes} bytes, {} bytes per key",
            bytes / BATCHES as usize
        );
    }
    g.finish();
}

fn combine(c: &mut Criterion) {
    let window = Window {
        id: 1,
        first_batch: BatchId(0),
        batches: 1,
    };
    let mut g = c.benchmark_group("keyper_combine");
    for n in [5usize, 7, 16] {
        let (committee, decryption) = committee(n);
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let dealings: Vec<_> = committee
            .indices()
            .map(|i| deal(&mut rng, &committee, &window, i).0)
            .collect();
        let keys: Vec<_> = committee
            .indices()
            .map(|j| {
                let mut view = Generation::keyper(
                    committee.clone(),
                    window,
                    j,
                    decryption[usize::from(j) - 1],
                );
                for d in &dealings {
                    view.handle_dealing(d).unwrap();
                }
                view.finalize().unwrap()
            })
            .collect();
        let t = committee.threshold();
        let shares: Vec<[u8; 32]> = keys
            .iter()
            .map(|k| k.share(BatchId(0)).unwrap().to_bytes())
            .collect();
        g.bench_function(BenchmarkId::new("t_shares", format!("n{n}")), |b| {
            b.iter(|| {
                let mut combiner = Combiner::new(&keys[0], BatchId(0), t, n).unwrap();
                let mut secret = None;
                for (i, share) in shares.iter().enumerate().take(t) {
                    secret = combiner.add(i as u16 + 1, share).unwrap();
                }
                black_box(secret.unwrap())
            })
        });
    }
    g.finish();
}

/// A client's check of a result's release attestations: `t` strict
/// Ed25519 verifications over the seal's release message, per batch.
fn attestations(c: &mut Criterion) {
    use sealbatch::envelope::{MerkleRoot, ReleaseAttestation, SealStatement};
    use sealbatch::keyper::attestation::{ATTESTATION_LEN, attest};

    let mut g = c.benchmark_group("keyper_attestations");
    for n in [5usize, 16, 64] {
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
        let signers: Vec<_> = (0..n)
            .map(|_| sealbatch::envelope::generate_account_key(&mut rng))
            .collect();
        let members = signers
            .iter()
            .map(|k| Member {
                signing_key: k.verifying_key().to_bytes(),
                encryption_key: RistrettoPoint::mul_base(&random_scalar(&mut rng))
                    .compress()
                    .to_bytes(),
            })
            .collect();
        let committee = Committee::new(
            Committee::default_threshold(n),
            members,
            sealbatch::envelope::DeploymentId([1; 32]),
        )
        .unwrap();
        let seal = SealStatement {
            e: BatchId(42),
            count: 1_000,
            root: MerkleRoot([9; 32]),
        };
        let t = committee.threshold();
        let mut release: Vec<ReleaseAttestation> = signers
            .iter()
            .map(|k| {
                let keyper = committee.index_of(&k.verifying_key().to_bytes()).unwrap();
                ReleaseAttestation {
                    keyper,
                    signature: attest(k, &committee, &seal),
                }
            })
            .collect();
        release.sort_unstable();
        release.truncate(t);
        eprintln!(
            "n = {n}, t = {t}: {} bytes of attestations per batch result",
            2 + ATTESTATION_LEN * t
        );
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("check_t", format!("n{n}")), |b| {
            b.iter(|| {
                sealbatch::keyper::check_attestations(&committee, &seal, black_box(&release))
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = generation, combine, attestations
}
criterion_main!(benches);
