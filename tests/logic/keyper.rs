// A test reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

//! The keyper committee's cryptography end to end, in one process: a
//! window's key generation with honest and faulty dealers, the release rule,
//! and combining shares with a faulty keyper (`spec/keyper.md`).

use crate::common;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sealbatch::codec::{Decode, Encode};
use sealbatch::envelope::{BatchSchedule, MerkleTree, SequencerKey};
use sealbatch::keyper::sharing::{interpolate_at_zero, random_scalar};
use sealbatch::keyper::{
    Apology, Combiner, Committee, DealerSecrets, Dealing, DealingError, Generation,
    GenerationError, KeyperIndex, Member, Polynomial, Release, ReleaseGuard, ReleaseRefusal,
    ShareError, Window, WindowKeys, deal,
};
use sealbatch::types::BatchId;

struct Keyper {
    index: KeyperIndex,
    decryption: Scalar,
}

/// A committee of `n` with threshold `t`, and each member's decryption key.
fn committee(rng: &mut ChaCha20Rng, n: usize, t: usize) -> (Committee, Vec<Keyper>) {
    let mut members = Vec::new();
    let mut secrets = Vec::new();
    for _ in 0..n {
        let signing = sealbatch::envelope::generate_account_key(rng);
        let decryption = random_scalar(rng);
        let member = Member {
            signing_key: signing.verifying_key().to_bytes(),
            encryption_key: RistrettoPoint::mul_base(&decryption).compress().to_bytes(),
        };
        members.push(member);
        secrets.push((member.signing_key, decryption));
    }
    let committee = Committee::new(t, members, TEST_DEPLOYMENT).expect("a committee");
    let keypers = secrets
        .into_iter()
        .map(|(key, decryption)| Keyper {
            index: committee.index_of(&key).expect("a member"),
            decryption,
        })
        .collect();
    (committee, keypers)
}

/// A committee of `n` (threshold `t`) with each member's signing and
/// decryption keys, in index order.
fn signed_committee(
    rng: &mut ChaCha20Rng,
    n: usize,
    t: usize,
    deployment: sealbatch::envelope::DeploymentId,
) -> (Committee, Vec<(ed25519_dalek::SigningKey, Scalar)>) {
    let mut members = Vec::new();
    let mut secrets = Vec::new();
    for _ in 0..n {
        let signing = sealbatch::envelope::generate_account_key(rng);
        let decryption = random_scalar(rng);
        members.push(Member {
            signing_key: signing.verifying_key().to_bytes(),
            encryption_key: RistrettoPoint::mul_base(&decryption).compress().to_bytes(),
        });
        secrets.push((signing, decryption));
    }
    let committee = Committee::new(t, members, deployment).expect("a committee");
    secrets.sort_by_key(|(s, _)| committee.index_of(&s.verifying_key().to_bytes()));
    (committee, secrets)
}

/// The deployment of the tests that run no keyper node.
const TEST_DEPLOYMENT: sealbatch::envelope::DeploymentId =
    sealbatch::envelope::DeploymentId([0x7d; 32]);

/// The deployment of `sequencer`'s seed and a schedule from genesis 0 with
/// 100 ms batches.
fn deployment_of(seed: u8) -> sealbatch::envelope::DeploymentId {
    sealbatch::envelope::DeploymentId::of(
        &SequencerKey::from_seed(&[seed; 32]).public_key(),
        &BatchSchedule {
            genesis_ms: 0,
            batch_length_ms: 100,
        },
    )
}

const WINDOW: Window = Window {
    id: 1,
    first_batch: BatchId(100),
    batches: 4,
};

/// Every keyper's and an observer's finished view, given everyone's
/// dealings (`None`: that dealer stays silent), with the accusation and
/// apology phases run as the protocol says. `apologize` decides a dealer's
/// answer to an accusation.
fn run_generation(
    committee: &Committee,
    keypers: &[Keyper],
    dealings: &[Option<Dealing>],
    apologize: impl Fn(KeyperIndex, KeyperIndex, &DealerSecrets) -> Option<Vec<Scalar>>,
    secrets: &[DealerSecrets],
) -> (
    Vec<Result<WindowKeys, GenerationError>>,
    Result<WindowKeys, GenerationError>,
) {
    let mut views: Vec<Generation> = keypers
        .iter()
        .map(|k| Generation::keyper(committee.clone(), WINDOW, k.index, k.decryption))
        .collect();
    let mut observer = Generation::observer(committee.clone(), WINDOW);
    for dealing in dealings.iter().flatten() {
        for v in views.iter_mut().chain(std::iter::once(&mut observer)) {
            let _ = v.handle_dealing(dealing);
        }
    }
    let accusations: Vec<_> = views.iter().flat_map(Generation::own_accusations).collect();
    for a in &accusations {
        for v in views.iter_mut().chain(std::iter::once(&mut observer)) {
            v.handle_accusation(*a);
        }
    }
    for a in &accusations {
        let dealer_secrets = &secrets[usize::from(a.dealer) - 1];
        if let Some(shares) = apologize(a.dealer, a.accuser, dealer_secrets) {
            let apology = Apology {
                dealer: a.dealer,
                accuser: a.accuser,
                shares,
            };
            for v in views.iter_mut().chain(std::iter::once(&mut observer)) {
                v.handle_apology(&apology);
            }
        }
    }
    (
        views.iter().map(Generation::finalize).collect(),
        observer.finalize(),
    )
}

/// Dealings by index order (dealer `i` at position `i − 1`).
fn deal_all(
    rng: &mut ChaCha20Rng,
    committee: &Committee,
) -> (Vec<Option<Dealing>>, Vec<DealerSecrets>) {
    committee
        .indices()
        .map(|i| {
            let (dealing, secrets) = deal(rng, committee, &WINDOW, i);
            (Some(dealing), secrets)
        })
        .unzip()
}

/// Checks that every keyper's view agrees with the observer's and that any
/// `t` keypers' shares give each batch's secret, which matches `S_e`.
fn check_keys(
    committee: &Committee,
    views: &[Result<WindowKeys, GenerationError>],
    observer: &WindowKeys,
) {
    for view in views {
        let view = view.as_ref().expect("finished");
        assert_eq!(view.commitments, observer.commitments);
        assert_eq!(view.qualified, observer.qualified);
    }
    let t = committee.threshold();
    for e in WINDOW.batches() {
        let shares: Vec<(KeyperIndex, Scalar)> = views
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let v = v.as_ref().expect("finished");
                let j = i as KeyperIndex + 1;
                (j, v.share(e).expect("a share"))
            })
            .collect();
        let public = observer.public_key(e).expect("a key");
        for start in 0..=shares.len() - t {
            let secret = interpolate_at_zero(&shares[start..start + t]).expect("combines");
            assert_eq!(RistrettoPoint::mul_base(&secret), public, "batch {e}");
        }
        let fewer = interpolate_at_zero(&shares[..t - 1]).expect("interpolates");
        assert_ne!(RistrettoPoint::mul_base(&fewer), public);
    }
}

#[test]
fn honest_committees_of_five_and_seven_agree_on_every_key() {
    for (n, t) in [(5, 3), (7, 4)] {
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
        let (committee, mut keypers) = committee(&mut rng, n, t);
        keypers.sort_by_key(|k| k.index);
        let (dealings, secrets) = deal_all(&mut rng, &committee);
        let (views, observer) =
            run_generation(&committee, &keypers, &dealings, |_, _, _| None, &secrets);
        let observer = observer.expect("finished");
        assert_eq!(observer.qualified.len(), n);
        check_keys(&committee, &views, &observer);
        // Keys of different batches are independent.
        let keys: std::collections::BTreeSet<_> = WINDOW
            .batches()
            .map(|e| observer.public_key(e).expect("a key").compress().to_bytes())
            .collect();
        assert_eq!(keys.len(), WINDOW.batches as usize);
    }
}

#[test]
fn a_silent_dealer_is_left_out_and_the_rest_finish() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (committee, mut keypers) = committee(&mut rng, 5, 3);
    keypers.sort_by_key(|k| k.index);
    let (mut dealings, secrets) = deal_all(&mut rng, &committee);
    dealings[1] = None;
    let (views, observer) =
        run_generation(&committee, &keypers, &dealings, |_, _, _| None, &secrets);
    let observer = observer.expect("finished with four");
    assert_eq!(observer.qualified, vec![1, 3, 4, 5]);
    check_keys(&committee, &views, &observer);
    // With three silent, too few remain: a retry without them is needed.
    dealings[2] = None;
    dealings[3] = None;
    let (_, observer) = run_generation(&committee, &keypers, &dealings, |_, _, _| None, &secrets);
    assert_eq!(
        observer,
        Err(GenerationError::TooFewQualified {
            qualified: 2,
            threshold: 3
        })
    );
}

/// Dealer 2 seals garbage to keyper 4: keyper 4 accuses; an apology with
/// the right shares keeps dealer 2 in (and keyper 4 uses them), a wrong or
/// missing one puts it out; the key comes from the others either way.
#[test]
fn an_accused_dealer_stays_only_with_a_valid_apology() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let (committee, mut keypers) = committee(&mut rng, 5, 3);
    keypers.sort_by_key(|k| k.index);
    let (mut dealings, secrets) = deal_all(&mut rng, &committee);
    if let Some(d) = dealings[1].as_mut() {
        d.shares[3].ciphertext[0] ^= 1;
    }
    let honest =
        |_: KeyperIndex, accuser: KeyperIndex, s: &DealerSecrets| Some(s.shares_for(accuser));
    let (views, observer) = run_generation(&committee, &keypers, &dealings, honest, &secrets);
    let observer = observer.expect("finished");
    assert_eq!(observer.qualified, vec![1, 2, 3, 4, 5]);
    check_keys(&committee, &views, &observer);

    let lying = |_: KeyperIndex, accuser: KeyperIndex, s: &DealerSecrets| {
        let mut shares = s.shares_for(accuser);
        shares[0] += Scalar::ONE;
        Some(shares)
    };
    let (views, observer) = run_generation(&committee, &keypers, &dealings, lying, &secrets);
    let observer = observer.expect("finished");
    assert_eq!(observer.qualified, vec![1, 3, 4, 5]);
    check_keys(&committee, &views, &observer);

    let (_, silent) = run_generation(&committee, &keypers, &dealings, |_, _, _| None, &secrets);
    assert_eq!(silent.expect("finished").qualified, vec![1, 3, 4, 5]);
}

/// Dealings that anyone can see are bad disqualify their dealer at once: a
/// proof from another window, an identity or non-canonical commitment, the
/// wrong number of commitments.
#[test]
fn invalid_dealings_are_refused_with_their_reason() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let (committee, _) = committee(&mut rng, 5, 3);
    let (good, _) = deal(&mut rng, &committee, &WINDOW, 2);
    let other_window = Window { id: 2, ..WINDOW };
    let (elsewhere, _) = deal(&mut rng, &committee, &other_window, 2);

    let mut replayed = good.clone();
    replayed.batches[1].proof = elsewhere.batches[1].proof;
    replayed.batches[1].commitments = elsewhere.batches[1].commitments.clone();
    let mut identity = good.clone();
    identity.batches[0].commitments[1] = [0; 32];
    let mut non_canonical = good.clone();
    non_canonical.batches[2].commitments[0] = [0xff; 32];
    let mut short = good.clone();
    short.batches[3].commitments.pop();
    let cases = [
        (replayed, DealingError::BadProof(BatchId(101))),
        (identity, DealingError::BadCommitment(BatchId(100))),
        (non_canonical, DealingError::BadCommitment(BatchId(102))),
        (short, DealingError::Shape),
        (elsewhere, DealingError::Foreign),
    ];
    for (dealing, want) in cases {
        let mut g = Generation::observer(committee.clone(), WINDOW);
        assert_eq!(g.handle_dealing(&dealing), Err(want));
        assert!(g.qualified().is_empty());
    }
    let mut g = Generation::observer(committee, WINDOW);
    assert_eq!(g.handle_dealing(&good), Ok(()));
    assert_eq!(g.qualified(), vec![2]);
}

/// A keyper releasing a wrong share is named and ignored; the key comes
/// from the others and matches `S_e`.
#[test]
fn a_wrong_share_is_caught_and_the_key_comes_from_the_others() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let (committee, mut keypers) = committee(&mut rng, 5, 3);
    keypers.sort_by_key(|k| k.index);
    let (dealings, secrets) = deal_all(&mut rng, &committee);
    let (views, observer) =
        run_generation(&committee, &keypers, &dealings, |_, _, _| None, &secrets);
    let observer = observer.expect("finished");
    let e = BatchId(102);
    let mut combiner = Combiner::new(&observer, e, 3, 5).expect("a combiner");
    let share = |j: usize| {
        views[j - 1]
            .as_ref()
            .expect("finished")
            .share(e)
            .expect("a share")
            .to_bytes()
    };
    let mut wrong = share(1);
    wrong[0] ^= 1;
    assert!(combiner.add(1, &wrong).is_err());
    assert!(combiner.add(2, &[0xff; 32]).is_err());
    assert_eq!(combiner.add(3, &share(3)), Ok(None));
    assert_eq!(combiner.add(4, &share(4)), Ok(None));
    let secret = combiner
        .add(5, &share(5))
        .expect("valid")
        .expect("three valid shares");
    let scalar = Option::<Scalar>::from(Scalar::from_canonical_bytes(*secret)).expect("canonical");
    assert_eq!(
        RistrettoPoint::mul_base(&scalar),
        observer.public_key(e).expect("a key")
    );
    assert_eq!(
        combiner.faulty().keys().copied().collect::<Vec<_>>(),
        vec![1, 2]
    );
}

/// The release tests' sequencer key and batch clock.
fn release_setup() -> (SequencerKey, BatchSchedule) {
    let schedule = BatchSchedule {
        genesis_ms: 1_000,
        batch_length_ms: 100,
    };
    (SequencerKey::from_seed(&[3; 32]), schedule)
}

/// The Merkle tree of one commitment of bytes `c`.
fn tree(c: u8) -> MerkleTree {
    MerkleTree::from_commitments(vec![sealbatch::envelope::Commitment([c; 32])]).expect("tree")
}

#[test]
fn a_keyper_releases_only_after_close_and_only_for_one_root() {
    let (key, schedule) = release_setup();
    let seal = key.sign_seal(BatchId(5), &tree(1));
    let other = key.sign_seal(BatchId(5), &tree(2));
    let forged = SequencerKey::from_seed(&[4; 32]).sign_seal(BatchId(5), &tree(1));
    let close = schedule.close_ms(BatchId(5)).expect("closes");
    let mut guard = ReleaseGuard::default();
    let public = key.public_key();
    assert!(matches!(
        guard.decide(&seal, None, &public, &schedule, 50, close + 49),
        Err(ReleaseRefusal::TooEarly { .. })
    ));
    assert_eq!(
        guard.decide(&forged, None, &public, &schedule, 50, close + 50),
        Err(ReleaseRefusal::BadSeal(BatchId(5)))
    );
    assert_eq!(
        guard.decide(&seal, None, &public, &schedule, 50, close + 50),
        Ok(Release::First)
    );
    guard.record(seal);
    assert_eq!(
        guard.decide(&seal, None, &public, &schedule, 50, close + 60),
        Ok(Release::Again)
    );
    assert_eq!(
        guard.decide(&other, None, &public, &schedule, 50, close + 60),
        Err(ReleaseRefusal::Equivocation(BatchId(5)))
    );
    assert_eq!(
        guard.evidence(),
        &[sealbatch::keyper::Evidence {
            first: seal,
            second: other
        }]
    );
}

/// A keyper of a replicated sequencer releases only for a seal a majority
/// of its configured replicas attested: not for a seal alone (a deposed
/// leader can sign any), nor with a minority, strangers' or another root's
/// attestations; and a certified seal is answered again.
#[test]
fn a_keyper_of_a_cluster_releases_only_for_a_certified_seal() {
    use sealbatch::commit::{CommitCertificate, CommitKey, ReplicaSet};

    let (key, schedule) = release_setup();
    let seal = key.sign_seal(BatchId(5), &tree(1));
    let deposed = key.sign_seal(BatchId(5), &tree(2));
    let replicas: Vec<CommitKey> = (1..=3).map(|i| CommitKey::from_seed(&[i; 32])).collect();
    let stranger = CommitKey::from_seed(&[40; 32]);
    let set = ReplicaSet::new(replicas.iter().map(CommitKey::public)).expect("a set");
    let sequencer = key.public_key().to_bytes();
    let attest = |k: &CommitKey, s: &sealbatch::envelope::SignedSeal| {
        k.attest(&sequencer, s.e, s.count, &s.root)
    };
    let certified = CommitCertificate::new(replicas[1..].iter().map(|k| attest(k, &seal)));
    let minority = CommitCertificate::new([attest(&replicas[0], &deposed)]);
    let with_stranger =
        CommitCertificate::new([attest(&replicas[0], &deposed), attest(&stranger, &deposed)]);
    let other_root = CommitCertificate::new(replicas.iter().map(|k| attest(k, &seal)));
    let close = schedule.close_ms(BatchId(5)).expect("closes");
    let public = key.public_key();
    let mut guard = ReleaseGuard::new(Some(set));
    let now = close + 50;
    for (s, certificate) in [
        (&deposed, None),
        (&deposed, Some(&minority)),
        (&deposed, Some(&with_stranger)),
        (&deposed, Some(&other_root)),
        (&seal, None),
    ] {
        assert!(
            matches!(
                guard.decide(s, certificate, &public, &schedule, 50, now),
                Err(ReleaseRefusal::Uncertified { e: BatchId(5), .. })
            ),
            "{certificate:?}"
        );
    }
    assert_eq!(
        guard.decide(&seal, Some(&certified), &public, &schedule, 50, now),
        Ok(Release::First)
    );
    guard.record(seal);
    assert_eq!(
        guard.decide(&seal, Some(&other_root), &public, &schedule, 50, now + 10),
        Ok(Release::Again)
    );
    // Nothing the deposed leader signs is even kept as evidence without a
    // certificate: it never reached the release rule.
    assert!(guard.evidence().is_empty());
}

proptest! {
    /// Any `t` of `n` shares give the secret; a changed share or a changed
    /// commitment fails the check; index 0 and repeated indices are refused.
    #[test]
    fn shamir_sharing_with_feldman_commitments(
        seed in any::<u64>(),
        n in 1usize..12,
        t_fraction in 0.0f64..1.0,
        pick in any::<u64>(),
    ) {
        let t = 1 + ((n - 1) as f64 * t_fraction) as usize;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let f = Polynomial::random(&mut rng, t);
        let commitments = f.commitments();
        let all: Vec<(KeyperIndex, Scalar)> = (1..=n as KeyperIndex).map(|j| (j, f.share(j))).collect();
        let mut chosen = all.clone();
        // A seeded choice of t of them, in any order.
        let mut state = pick;
        for i in (1..chosen.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            chosen.swap(i, (state >> 33) as usize % (i + 1));
        }
        chosen.truncate(t);
        prop_assert_eq!(interpolate_at_zero(&chosen), Ok(f.secret()));
        for (j, s) in &all {
            prop_assert!(commitments.verify_share(*j, s));
            prop_assert!(!commitments.verify_share(*j, &(s + Scalar::ONE)));
        }
        let mut tampered = commitments.clone();
        tampered.0[0] += RistrettoPoint::mul_base(&Scalar::ONE);
        prop_assert!(!tampered.verify_share(all[0].0, &all[0].1));
        let mut repeated = chosen.clone();
        repeated.push(chosen[0]);
        prop_assert_eq!(interpolate_at_zero(&repeated), Err(ShareError::DuplicateIndex(chosen[0].0)));
        let mut zero = chosen.clone();
        zero[0].0 = 0;
        prop_assert_eq!(interpolate_at_zero(&zero), Err(ShareError::ZeroIndex));
        if t > 1 && t < n {
            // t − 1 shares are consistent with any secret at all: the
            // polynomial g of degree t − 1 through (0, other) and those
            // shares gives a t-th share that, with them, interpolates to
            // `other`. So the t − 1 shares rule out no secret.
            let other = random_scalar(&mut rng);
            let known = &chosen[..t - 1];
            let x = (1..=n as KeyperIndex)
                .find(|j| known.iter().all(|(k, _)| k != j))
                .expect("an index outside the t - 1");
            let mut points: Vec<(Scalar, Scalar)> = vec![(Scalar::ZERO, other)];
            points.extend(known.iter().map(|(j, s)| (Scalar::from(u64::from(*j)), *s)));
            let xs = Scalar::from(u64::from(x));
            let gx: Scalar = points
                .iter()
                .enumerate()
                .map(|(a, (pa, ya))| {
                    let basis: Scalar = points
                        .iter()
                        .enumerate()
                        .filter(|(b, _)| *b != a)
                        .map(|(_, (pb, _))| (xs - pb) * (pa - pb).invert())
                        .product();
                    ya * basis
                })
                .sum();
            let mut completed = known.to_vec();
            completed.push((x, gx));
            prop_assert_eq!(interpolate_at_zero(&completed), Ok(other));
        }
    }
}

/// The generation as it runs for real: signed messages through their bytes
/// on one log, with the log keeper's phase ends. Every keyper and an
/// observer replay the same log to the same result; a late dealing, a forged
/// message and a repeated one are ignored; `t` approvals make a certificate
/// that verifies for this committee only, and whose keys are what the
/// keypers' shares combine to.
#[test]
fn a_log_replayed_by_every_reader_gives_one_certified_result() {
    use sealbatch::keyper::{Body, KeyperMessage, LogEntry, Phase, SignedKeyperMessage, WindowLog};

    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let n = 5;
    let mut members = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..n {
        let signing = sealbatch::envelope::generate_account_key(&mut rng);
        let decryption = random_scalar(&mut rng);
        members.push(Member {
            signing_key: signing.verifying_key().to_bytes(),
            encryption_key: RistrettoPoint::mul_base(&decryption).compress().to_bytes(),
        });
        keys.push((signing, decryption));
    }
    let committee = Committee::new(3, members, TEST_DEPLOYMENT).expect("a committee");
    keys.sort_by_key(|(s, _)| committee.index_of(&s.verifying_key().to_bytes()));
    let post = |j: KeyperIndex, body: Body| {
        let signed = KeyperMessage {
            window: WINDOW,
            sender: j,
            body,
        }
        .sign(&keys[usize::from(j) - 1].0, &committee);
        // Through its bytes, as the log stores it.
        let bytes = signed.to_bytes();
        let mut r = sealbatch::codec::Reader::new(&bytes);
        LogEntry::Message(SignedKeyperMessage::decode_from(&mut r).expect("decodes"))
    };
    let mut readers: Vec<WindowLog> = (1..=n as KeyperIndex)
        .map(|j| {
            WindowLog::new(
                committee.clone(),
                Generation::keyper(committee.clone(), WINDOW, j, keys[usize::from(j) - 1].1),
            )
        })
        .collect();
    readers.push(WindowLog::new(
        committee.clone(),
        Generation::observer(committee.clone(), WINDOW),
    ));
    let apply = |readers: &mut Vec<WindowLog>, entry: &LogEntry| -> Vec<bool> {
        readers.iter_mut().map(|r| r.apply(entry).is_ok()).collect()
    };

    let mut secrets = Vec::new();
    for j in 1..=4 {
        let (mut dealing, s) = deal(&mut rng, &committee, &WINDOW, j);
        if j == 2 {
            dealing.shares[3].ciphertext[5] ^= 0x40;
        }
        secrets.push(s);
        let entry = post(j, Body::Dealing(dealing));
        assert!(apply(&mut readers, &entry).iter().all(|ok| *ok));
        // The same dealing again does not count twice.
        assert!(apply(&mut readers, &entry).iter().all(|ok| !ok));
    }
    // A forged dealing: keyper 5's dealing signed by keyper 1.
    let (late, _) = deal(&mut rng, &committee, &WINDOW, 5);
    let mut forged = match post(5, Body::Dealing(late.clone())) {
        LogEntry::Message(m) => m,
        _ => unreachable!(),
    };
    forged.signature = KeyperMessage {
        window: WINDOW,
        sender: 5,
        body: Body::Dealing(late.clone()),
    }
    .sign(&keys[0].0, &committee)
    .signature;
    assert!(
        apply(&mut readers, &LogEntry::Message(forged))
            .iter()
            .all(|ok| !ok)
    );
    let end = |phase| LogEntry::PhaseEnd {
        window: WINDOW,
        phase,
    };
    apply(&mut readers, &end(Phase::Deal));
    // Keyper 5's dealing, too late.
    assert!(
        apply(&mut readers, &post(5, Body::Dealing(late)))
            .iter()
            .all(|ok| !ok)
    );

    let accusations: Vec<_> = readers
        .iter()
        .flat_map(|r| r.generation().own_accusations())
        .collect();
    assert_eq!(accusations.len(), 1);
    assert_eq!((accusations[0].accuser, accusations[0].dealer), (4, 2));
    apply(&mut readers, &post(4, Body::Accusation { dealer: 2 }));
    apply(&mut readers, &end(Phase::Accuse));
    apply(
        &mut readers,
        &post(
            2,
            Body::Apology {
                accuser: 4,
                shares: secrets[1].shares_for(4),
            },
        ),
    );
    apply(&mut readers, &end(Phase::Apologize));

    let digests: Vec<[u8; 32]> = readers
        .iter()
        .map(|r| {
            r.outcome()
                .expect("finished")
                .as_ref()
                .expect("keys")
                .digest
        })
        .collect();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "one result for all"
    );
    let result = readers[5]
        .outcome()
        .expect("finished")
        .as_ref()
        .expect("keys")
        .clone();
    assert_eq!(result.keys.qualified, vec![1, 2, 3, 4]);
    // Approvals: two are not enough, three make the certificate; one of
    // another result does not count.
    for j in 1..=2 {
        apply(
            &mut readers,
            &post(j, Body::Approval { digest: digests[0] }),
        );
    }
    assert!(readers[5].certificate().is_none());
    assert!(
        apply(&mut readers, &post(3, Body::Approval { digest: [7; 32] }))
            .iter()
            .all(|ok| !ok)
    );
    apply(
        &mut readers,
        &post(4, Body::Approval { digest: digests[0] }),
    );
    let certificate = readers[5].certificate().expect("certified");
    assert!(certificate.verify(&committee));
    for e in WINDOW.batches() {
        assert_eq!(
            certificate.key(e),
            Some(
                result
                    .keys
                    .public_key(e)
                    .expect("key")
                    .compress()
                    .to_bytes()
            )
        );
        // The keypers' shares (keyper 4's with the apology's) give s_e.
        let shares: Vec<(KeyperIndex, Scalar)> = (0..3)
            .map(|i| {
                let r = readers[i + 2]
                    .outcome()
                    .expect("done")
                    .as_ref()
                    .expect("keys");
                (i as KeyperIndex + 3, r.keys.share(e).expect("a share"))
            })
            .collect();
        let secret = interpolate_at_zero(&shares).expect("combines");
        assert_eq!(
            RistrettoPoint::mul_base(&secret).compress().to_bytes(),
            certificate.key(e).expect("in the window")
        );
    }
    let mut altered = certificate.clone();
    altered.keys[0] = altered.keys[1];
    assert!(!altered.verify(&committee));
    let mut fewer = certificate.clone();
    fewer.approvals.truncate(2);
    assert!(!fewer.verify(&committee));
    let mut doubled = fewer.clone();
    doubled.approvals.push(doubled.approvals[0]);
    assert!(!doubled.verify(&committee));
    let (other, _) = committee_for_test(&mut rng);
    assert!(!certificate.verify(&other));
}

fn committee_for_test(rng: &mut ChaCha20Rng) -> (Committee, Vec<Keyper>) {
    committee(rng, 5, 3)
}

/// A keyper message decodes only from its exact bytes: every truncation and
/// any trailing byte is a typed error, never a panic.
#[test]
fn keyper_messages_refuse_truncation_and_trailing_bytes() {
    use sealbatch::keyper::{Body, KeyperMessage};

    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let (committee, _) = committee(&mut rng, 4, 3);
    let (dealing, secrets) = deal(&mut rng, &committee, &WINDOW, 1);
    for body in [
        Body::Dealing(dealing),
        Body::Accusation { dealer: 3 },
        Body::Apology {
            accuser: 2,
            shares: secrets.shares_for(2),
        },
        Body::Approval { digest: [9; 32] },
    ] {
        let message = KeyperMessage {
            window: WINDOW,
            sender: 1,
            body,
        };
        let bytes = message.to_bytes();
        assert_eq!(KeyperMessage::from_bytes(&bytes), Ok(message));
        for cut in 0..bytes.len() {
            assert!(KeyperMessage::from_bytes(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(KeyperMessage::from_bytes(&longer).is_err());
    }
}

/// An honest generation through its log: the committee, the observer's
/// keys and the certificate.
fn certified(
    rng: &mut ChaCha20Rng,
    window: Window,
) -> (Committee, WindowKeys, sealbatch::keyper::WindowCertificate) {
    use sealbatch::keyper::{Body, KeyperMessage, LogEntry, Phase, WindowLog};
    let mut members = Vec::new();
    let mut signers = Vec::new();
    for _ in 0..4 {
        let signing = sealbatch::envelope::generate_account_key(rng);
        let decryption = random_scalar(rng);
        members.push(Member {
            signing_key: signing.verifying_key().to_bytes(),
            encryption_key: RistrettoPoint::mul_base(&decryption).compress().to_bytes(),
        });
        signers.push(signing);
    }
    let committee = Committee::new(3, members, TEST_DEPLOYMENT).expect("a committee");
    signers.sort_by_key(|s| committee.index_of(&s.verifying_key().to_bytes()));
    let mut log = WindowLog::new(
        committee.clone(),
        Generation::observer(committee.clone(), window),
    );
    let sign = |j: KeyperIndex, body: Body| {
        LogEntry::Message(
            KeyperMessage {
                window,
                sender: j,
                body,
            }
            .sign(&signers[usize::from(j) - 1], &committee),
        )
    };
    for j in committee.indices() {
        let (dealing, _) = deal(rng, &committee, &window, j);
        log.apply(&sign(j, Body::Dealing(dealing))).expect("counts");
    }
    for phase in [Phase::Deal, Phase::Accuse, Phase::Apologize] {
        log.apply(&LogEntry::PhaseEnd { window, phase })
            .expect("counts");
    }
    let result = log.outcome().expect("done").as_ref().expect("keys").clone();
    for j in committee.indices() {
        log.apply(&sign(
            j,
            Body::Approval {
                digest: result.digest,
            },
        ))
        .expect("counts");
    }
    let certificate = log.certificate().expect("certified");
    (committee, result.keys, certificate)
}

/// The sequencer's committee custodian takes only certified keys, holds no
/// key for a batch outside its windows (so the sequencer announces nothing
/// and takes no envelope there), and refuses a seal before close and a
/// second root.
#[test]
fn the_committee_custodian_holds_only_certified_keys_and_fails_closed() {
    use sealbatch::envelope::{CustodianError, KeyCustodian};
    use sealbatch::keyper::{CommitteeCustodian, WindowError};

    let mut rng = ChaCha20Rng::seed_from_u64(31);
    let (committee, keys, certificate) = certified(&mut rng, WINDOW);
    let sequencer = SequencerKey::from_seed(&[5; 32]);
    let schedule = BatchSchedule {
        genesis_ms: 0,
        batch_length_ms: 100,
    };
    let mut custodian =
        CommitteeCustodian::new(committee.clone(), sequencer.public_key(), schedule);
    assert!(!custodian.has_key(BatchId(100)));
    assert!(matches!(
        custodian.public_key(BatchId(100)),
        Err(CustodianError::UnknownBatch { e: BatchId(100) })
    ));
    let mut forged = certificate.clone();
    forged.keys[2] = forged.keys[3];
    assert_eq!(
        custodian.add_window(&forged, keys.clone()),
        Err(WindowError::Certificate(1))
    );
    let (_, other_keys, _) = certified(&mut rng, WINDOW);
    assert_eq!(
        custodian.add_window(&certificate, other_keys),
        Err(WindowError::Mismatch(1))
    );
    custodian
        .add_window(&certificate, keys.clone())
        .expect("certified");
    assert!(custodian.has_key(BatchId(100)) && custodian.has_key(BatchId(103)));
    assert!(!custodian.has_key(BatchId(99)) && !custodian.has_key(BatchId(104)));
    assert_eq!(
        custodian
            .public_key(BatchId(101))
            .expect("a key")
            .to_bytes(),
        certificate.key(BatchId(101)).expect("in the window")
    );
    let tree = |c: u8| {
        MerkleTree::from_commitments(vec![sealbatch::envelope::Commitment([c; 32])]).expect("tree")
    };
    let seal = sequencer.sign_seal(BatchId(101), &tree(1));
    let close = schedule.close_ms(BatchId(101)).expect("closes");
    assert!(matches!(
        custodian.request(&seal, close - 1),
        Err(CustodianError::NotClosed { .. })
    ));
    assert!(matches!(custodian.request(&seal, close), Ok(None)));
    assert!(matches!(custodian.request(&seal, close + 9), Ok(None)));
    assert!(matches!(
        custodian.request(&sequencer.sign_seal(BatchId(101), &tree(2)), close),
        Err(CustodianError::Equivocation { .. })
    ));
}

/// The committee in one process: a log keeper and five keyper state
/// machines over simulated time, messages lost on the way (posted again
/// after a reconnect), a keyper that restarts and catches up from the log,
/// and three keypers down during one generation (it fails and is opened
/// again under a new id). Every window gets certified; the sequencer's
/// committee custodian then opens batches with keys combined from the
/// keypers' shares, and no share leaves before its batch closed.
#[test]
fn keypers_and_the_log_keeper_certify_every_window_and_release_after_close() {
    use rand_core::RngCore;
    use sealbatch::envelope::{Commitment, KeyCustodian};
    use sealbatch::keyper::{
        CommitteeCustodian, GenerationParams, KeyperIdentity, KeyperNode, KeyperRecord, LogKeeper,
        Release,
    };

    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let (committee, secrets) = signed_committee(&mut rng, 5, 3, deployment_of(6));
    let sequencer = SequencerKey::from_seed(&[6; 32]);
    let schedule = BatchSchedule {
        genesis_ms: 0,
        batch_length_ms: 100,
    };
    // Each keyper's journal, as bytes: what survives its restart.
    let mut disks: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 5];
    let node = |j: usize, disk: &[Vec<u8>]| {
        KeyperNode::new(
            KeyperIdentity {
                committee: committee.clone(),
                signing: secrets[j].0.clone(),
                decryption: zeroize::Zeroizing::new(secrets[j].1),
                sequencer: sequencer.public_key(),
                schedule,
                skew_ms: 20,
                replicas: None,
            },
            disk.iter()
                .map(|bytes| KeyperRecord::decode(bytes).expect("a record")),
        )
        .expect("a member")
    };
    let mut nodes: Vec<KeyperNode> = (0..5).map(|j| node(j, &[])).collect();
    let params = GenerationParams {
        window_batches: 16,
        lead_batches: 8,
        phase_ms: [200, 100, 100, 300],
    };
    let mut keeper = LogKeeper::new(committee.clone(), params, BatchId(0));
    let mut certified = Vec::new();
    let mut journaled: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut down = [false; 5];
    for now in (0..6_000u64).step_by(10) {
        // Keypers 1, 2 and 3 (indices 0..3) down from 2.0 s to 2.6 s: the
        // generation under way then fails and is opened again.
        for (i, d) in down.iter_mut().enumerate() {
            *d = i < 3 && (2_000..2_600).contains(&now);
        }
        // Keyper 4 restarts at 0.85 s, in the middle of the second window's
        // dealing phase: it reads the log again from the start, and posts
        // (if at all) the dealing its journal kept, never a second one.
        if now == 850 {
            nodes[3] = node(3, &disks[3]);
        }
        keeper.handle_timeout(now, schedule.batch_at(now).unwrap_or(BatchId::ZERO));
        for (i, n) in nodes.iter_mut().enumerate() {
            if down[i] {
                continue;
            }
            n.handle_log(
                &mut rng,
                now,
                keeper.entries(n.read(), u64::MAX, usize::MAX),
            );
            // The keyper's journal: written and fsynced, then its dealing
            // may leave.
            while let Some((number, record)) = n.poll_record() {
                disks[i].push(record.encode().to_vec());
                n.handle_durable(number);
            }
            while let Some(message) = n.poll_message() {
                // One message in ten is lost on the way.
                if rng.next_u32() % 10 != 0 {
                    let _ = keeper.handle_message(message);
                }
            }
            // A reconnect every 300 ms: what was lost is posted again.
            if now % 300 == 0 {
                n.reset_outbox();
            }
        }
        while let Some(c) = keeper.poll_certified() {
            common::canonical(&c.0);
            certified.push(c);
        }
        // What the sequencer journals: every new entry, with its position.
        while let Some((position, entry)) = keeper.poll_entry() {
            common::canonical(&entry);
            if let sealbatch::keyper::LogEntry::Message(signed) = &entry {
                common::canonical(signed);
                common::canonical(&signed.message);
            }
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&entry.to_bytes());
            journaled.push((position, bytes));
        }
    }
    // The journal replays into the same log and the same certified windows.
    let mut again = LogKeeper::new(committee.clone(), params, BatchId(0));
    for (position, bytes) in &journaled {
        let mut r = sealbatch::codec::Reader::new(bytes);
        let entry = sealbatch::keyper::LogEntry::decode_from(&mut r).expect("an entry");
        r.finish().expect("nothing left");
        again.replay(*position, entry, 0).expect("replays");
    }
    let replayed: Vec<_> = std::iter::from_fn(|| again.poll_certified()).collect();
    assert_eq!(replayed, certified);
    assert_eq!(again.snapshot(), keeper.snapshot());
    // A position that does not grow is refused.
    let (last, bytes) = journaled.last().expect("entries");
    let entry = sealbatch::keyper::LogEntry::decode_from(&mut sealbatch::codec::Reader::new(bytes))
        .expect("an entry");
    assert!(again.replay(*last, entry, 0).is_err());
    // Pruned below batch 48: the first three windows' entries are gone, the
    // positions of the rest unchanged; a snapshot restores the same keeper,
    // and a keyper that lost everything but its keys rebuilds its shares of
    // the windows still in use from what is left.
    let before = keeper.len();
    keeper.prune(BatchId(48));
    assert!(keeper.len() < before);
    assert!(
        keeper
            .entries(0, u64::MAX, usize::MAX)
            .all(|(_, e)| e.window().first_batch >= 48)
    );
    let snapshot = keeper.snapshot();
    common::canonical(&snapshot);
    common::canonical(&params);
    common::canonical(&committee);
    let mut bytes = Vec::new();
    snapshot.encode_into(&mut bytes);
    let decoded =
        sealbatch::keyper::KeeperSnapshot::decode_from(&mut sealbatch::codec::Reader::new(&bytes))
            .expect("a snapshot");
    assert_eq!(decoded, snapshot);
    let restored = LogKeeper::restore(committee.clone(), params, &decoded, 0).expect("restores");
    assert_eq!(restored.snapshot(), snapshot);
    let mut fresh = node(0, &[]);
    fresh.handle_log(&mut rng, 6_000, keeper.entries(0, u64::MAX, usize::MAX));
    assert!(fresh.holds(BatchId(50)) && !fresh.holds(BatchId(40)));
    // Windows of 16 batches from batch 0, each certified once, in order.
    let firsts: Vec<BatchId> = certified
        .iter()
        .map(|(c, _)| c.window.first_batch)
        .collect();
    let expected: Vec<BatchId> = (0..firsts.len() as u64).map(|w| BatchId(w * 16)).collect();
    assert_eq!(firsts, expected);
    assert!(certified.len() >= 4, "{} windows", certified.len());
    assert!(
        certified[1].0.qualified.contains(&4),
        "the restarted keyper's dealing counts: {:?}",
        certified[1].0.qualified
    );
    let ids: Vec<u64> = certified.iter().map(|(c, _)| c.window.id).collect();
    assert!(
        ids.windows(2).any(|w| w[1] > w[0] + 1),
        "a generation failed and was opened again: {ids:?}"
    );

    let mut custodian =
        CommitteeCustodian::new(committee.clone(), sequencer.public_key(), schedule);
    for (certificate, keys) in &certified {
        assert!(certificate.verify(&committee));
        custodian
            .add_window(certificate, keys.clone())
            .expect("certified");
    }
    let tree = |c: u8| MerkleTree::from_commitments(vec![Commitment([c; 32])]).expect("tree");
    for e in [3u64, 17, 40, 63] {
        let seal = sequencer.sign_seal(BatchId(e), &tree(e as u8));
        let close = schedule.close_ms(BatchId(e)).expect("closes");
        for n in &mut nodes {
            assert!(matches!(
                n.handle_seal(&seal, None, close + 19),
                Err(sealbatch::keyper::ReleaseRefusal::TooEarly { .. })
            ));
        }
        assert!(matches!(custodian.request(&seal, close), Ok(None)));
        let mut key = None;
        for n in &mut nodes {
            let answer = n.handle_seal(&seal, None, close + 20).expect("releases");
            assert_eq!(answer.release, Release::First);
            n.record_release(seal);
            if let Some(k) = custodian
                .add_share(&seal, n.index(), &answer.share, &answer.attestation)
                .expect("a valid share")
            {
                key = Some(k);
                break;
            }
        }
        let key = key.expect("three shares give the key");
        assert_eq!(
            key.public_key().to_bytes(),
            custodian.public_key(BatchId(e)).expect("a key").to_bytes()
        );
        // Another root for the same batch: refused, kept as evidence.
        let other = sequencer.sign_seal(BatchId(e), &tree(200));
        assert!(nodes[0].handle_seal(&other, None, close + 30).is_err());
    }
    assert_eq!(nodes[0].evidence().len(), 4);
    // Every keyper journaled one dealing per generation it dealt in, and
    // the restarted one dealt no generation twice.
    for disk in &disks {
        let windows: Vec<u64> = disk
            .iter()
            .filter_map(|b| KeyperRecord::decode(b).expect("a record").window())
            .map(|w| w.id)
            .collect();
        let mut unique = windows.clone();
        unique.dedup();
        assert_eq!(windows, unique);
        assert!(windows.len() >= certified.len());
    }
}

/// A keyper's journal records read back exactly: a release, and a dealing
/// with the polynomials behind it (which still answer an accusation).
#[test]
fn keyper_records_round_trip_and_refuse_damage() {
    use sealbatch::keyper::KeyperRecord;

    let mut rng = ChaCha20Rng::seed_from_u64(51);
    let (committee, _) = committee(&mut rng, 4, 3);
    let (dealing, secrets) = deal(&mut rng, &committee, &WINDOW, 2);
    let want = secrets.shares_for(3);
    let record = KeyperRecord::Dealt {
        dealing: dealing.clone(),
        secrets,
    };
    let bytes = record.encode();
    match KeyperRecord::decode(&bytes).expect("decodes") {
        KeyperRecord::Dealt {
            dealing: d,
            secrets,
        } => {
            assert_eq!(d, dealing);
            assert_eq!(secrets.shares_for(3), want);
        }
        other => panic!("a dealing record, not {other:?}"),
    }
    match KeyperRecord::decode(&KeyperRecord::Forgotten { below: BatchId(77) }.encode()) {
        Ok(KeyperRecord::Forgotten { below: BatchId(77) }) => {}
        other => panic!("{other:?}"),
    }
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(KeyperRecord::decode(&bytes[..cut]).is_err());
    }
    let mut unreduced = bytes.clone();
    let last = unreduced.len() - 1;
    unreduced[last] = 0xff;
    assert!(KeyperRecord::decode(&unreduced).is_err());
    let seal = SequencerKey::from_seed(&[2; 32]).sign_seal(
        BatchId(9),
        &MerkleTree::from_commitments(vec![sealbatch::envelope::Commitment([4; 32])])
            .expect("tree"),
    );
    match KeyperRecord::decode(&KeyperRecord::Released(seal).encode()) {
        Ok(KeyperRecord::Released(back)) => assert_eq!(back, seal),
        other => panic!("{other:?}"),
    }
}

/// A message whose dealing was checked ahead, off the log keeper's thread
/// (`Prechecked`), is taken or refused exactly as the keeper itself would:
/// the same log, the same refusals — a forged proof, a dealing for another
/// window, a second dealing.
#[test]
fn a_prechecked_dealing_counts_exactly_as_a_checked_one() {
    use sealbatch::keyper::{
        Body, GenerationParams, KeyperMessage, LogEntry, LogKeeper, Prechecked,
    };

    let mut rng = ChaCha20Rng::seed_from_u64(61);
    let (committee, secrets) = signed_committee(&mut rng, 4, 3, TEST_DEPLOYMENT);
    let signing: Vec<_> = secrets.into_iter().map(|(key, _)| key).collect();
    let params = GenerationParams {
        window_batches: 4,
        lead_batches: 0,
        phase_ms: [100, 100, 100, 100],
    };
    let mut direct = LogKeeper::new(committee.clone(), params, BatchId(0));
    let mut ahead = LogKeeper::new(committee.clone(), params, BatchId(0));
    direct.handle_timeout(0, BatchId(0));
    ahead.handle_timeout(0, BatchId(0));
    let Some((_, LogEntry::Open { window })) = direct.poll_entry() else {
        panic!("a generation opens");
    };
    let message = |dealer: u16, dealing, window| {
        KeyperMessage {
            window,
            sender: dealer,
            body: Body::Dealing(dealing),
        }
        .sign(&signing[usize::from(dealer) - 1], &committee)
    };
    let mut messages = Vec::new();
    // Good dealings from 1 and 2; 2 again (a repeat).
    for dealer in [1u16, 2] {
        messages.push(message(
            dealer,
            deal(&mut rng, &committee, &window, dealer).0,
            window,
        ));
    }
    messages.push(message(2, deal(&mut rng, &committee, &window, 2).0, window));
    // 3's proof of knowledge forged.
    let (mut forged, _) = deal(&mut rng, &committee, &window, 3);
    forged.batches[1].proof = deal(&mut rng, &committee, &window, 3).0.batches[1].proof;
    messages.push(message(3, forged, window));
    // 4's dealing for another window, in a message for this one.
    let other = Window { id: 9, ..window };
    messages.push(message(4, deal(&mut rng, &committee, &other, 4).0, window));
    for m in messages {
        let a = direct.handle_message(m.clone());
        let b = ahead.handle_prechecked(Prechecked::check(m, &committee));
        assert_eq!(a, b);
    }
    assert_eq!(direct.snapshot(), ahead.snapshot());
    // The opening and the two good dealings: nothing refused is logged.
    assert_eq!(direct.len(), 1 + 2);
}

/// A keyper forgets its releases below a watermark once their windows
/// expire — its memory stays bounded — and can never release below it
/// again: the shares are erased, a window below it is not taken again from
/// the log, and a restart from its journal (with the watermark) forgets
/// them too.
#[test]
fn a_keyper_forgets_expired_releases_and_never_releases_below_them() {
    use sealbatch::keyper::{
        GenerationParams, KeyperIdentity, KeyperNode, KeyperRecord, LogKeeper, ReleaseRefusal,
    };

    let mut rng = ChaCha20Rng::seed_from_u64(71);
    let (committee, secrets) = signed_committee(&mut rng, 3, 2, deployment_of(8));
    let sequencer = SequencerKey::from_seed(&[8; 32]);
    let schedule = BatchSchedule {
        genesis_ms: 0,
        batch_length_ms: 100,
    };
    let node = |j: usize, journal: Vec<KeyperRecord>| {
        KeyperNode::new(
            KeyperIdentity {
                committee: committee.clone(),
                signing: secrets[j].0.clone(),
                decryption: zeroize::Zeroizing::new(secrets[j].1),
                sequencer: sequencer.public_key(),
                schedule,
                skew_ms: 0,
                replicas: None,
            },
            journal,
        )
        .expect("a member")
    };
    let mut nodes: Vec<KeyperNode> = (0..3).map(|j| node(j, Vec::new())).collect();
    let params = GenerationParams {
        window_batches: 8,
        lead_batches: 20,
        phase_ms: [10, 10, 10, 10],
    };
    let mut keeper = LogKeeper::new(committee.clone(), params, BatchId(0));
    let mut journal: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
    for now in (0..400u64).step_by(10) {
        keeper.handle_timeout(now, BatchId(0));
        for (j, n) in nodes.iter_mut().enumerate() {
            n.handle_log(
                &mut rng,
                now,
                keeper.entries(n.read(), u64::MAX, usize::MAX),
            );
            while let Some((number, record)) = n.poll_record() {
                journal[j].push(record.encode().to_vec());
                n.handle_durable(number);
            }
            while let Some(message) = n.poll_message() {
                let _ = keeper.handle_message(message);
            }
        }
    }
    assert!(
        nodes[0].holds(BatchId(3)) && nodes[0].holds(BatchId(12)),
        "two windows held"
    );
    let tree = |c: u8| {
        MerkleTree::from_commitments(vec![sealbatch::envelope::Commitment([c; 32])]).expect("tree")
    };
    let seal = sequencer.sign_seal(BatchId(3), &tree(1));
    let after = schedule.close_ms(BatchId(3)).expect("closes");
    nodes[0].handle_seal(&seal, None, after).expect("releases");
    nodes[0].record_release(seal);
    journal[0].push(KeyperRecord::Released(seal).encode().to_vec());

    // Batches below 8 expire.
    nodes[0].forget_below(BatchId(8));
    while let Some((number, record)) = nodes[0].poll_record() {
        journal[0].push(record.encode().to_vec());
        nodes[0].handle_durable(number);
    }
    let other = sequencer.sign_seal(BatchId(3), &tree(2));
    assert_eq!(
        nodes[0].handle_seal(&other, None, after).map(|_| ()),
        Err(ReleaseRefusal::UnknownBatch(BatchId(3))),
        "no share below the watermark, for any root"
    );
    assert!(!nodes[0].holds(BatchId(3)) && nodes[0].holds(BatchId(12)));
    // Restarted from its journal: the watermark holds, even though the log
    // still has the window of batch 3.
    let records = journal[0]
        .iter()
        .map(|b| KeyperRecord::decode(b).expect("a record"))
        .collect();
    let mut again = node(0, records);
    again.handle_log(&mut rng, 400, keeper.entries(0, u64::MAX, usize::MAX));
    assert!(!again.holds(BatchId(3)) && again.holds(BatchId(12)));
    assert_eq!(
        again.handle_seal(&other, None, after).map(|_| ()),
        Err(ReleaseRefusal::UnknownBatch(BatchId(3)))
    );
}

/// A log that opens generations without end (a hostile log keeper) gets a
/// bounded amount of work from a keyper: at most 32 dealings for one
/// window's batches, and at most 8 generations under way.
#[test]
fn a_keyper_deals_a_bounded_amount_for_a_flood_of_openings() {
    use sealbatch::keyper::{KeyperIdentity, KeyperNode, KeyperRecord, LogEntry};

    let mut rng = ChaCha20Rng::seed_from_u64(81);
    let (committee, secrets) = signed_committee(&mut rng, 3, 2, deployment_of(9));
    let mut node = KeyperNode::new(
        KeyperIdentity {
            committee: committee.clone(),
            signing: secrets[0].0.clone(),
            decryption: zeroize::Zeroizing::new(secrets[0].1),
            sequencer: SequencerKey::from_seed(&[9; 32]).public_key(),
            schedule: BatchSchedule {
                genesis_ms: 0,
                batch_length_ms: 100,
            },
            skew_ms: 0,
            replicas: None,
        },
        Vec::new(),
    )
    .expect("a member");
    let dealings = |node: &mut KeyperNode| {
        std::iter::from_fn(|| node.poll_record())
            .filter(|(_, r)| matches!(r, KeyperRecord::Dealt { .. }))
            .count()
    };
    // The same batches opened again and again.
    let same: Vec<(u64, LogEntry)> = (0..100u64)
        .map(|i| {
            (
                i,
                LogEntry::Open {
                    window: Window {
                        id: i + 1,
                        first_batch: BatchId::ZERO,
                        batches: 2,
                    },
                },
            )
        })
        .collect();
    // One at a time: each opening asks for a dealing.
    for (p, e) in &same {
        node.handle_log(&mut rng, 0, std::iter::once((*p, e)));
    }
    assert_eq!(dealings(&mut node), 32);
    // Ever more batches, none of them finishing.
    let more: Vec<(u64, LogEntry)> = (0..100u64)
        .map(|i| {
            (
                100 + i,
                LogEntry::Open {
                    window: Window {
                        id: 1000 + i,
                        first_batch: BatchId(10) + 2 * i,
                        batches: 2,
                    },
                },
            )
        })
        .collect();
    for (p, e) in &more {
        node.handle_log(&mut rng, 0, std::iter::once((*p, e)));
    }
    assert_eq!(dealings(&mut node), 8);
}

/// Keypers of a 2-of-3 committee bound to the deployment of sequencer seed
/// `seed` (genesis 0, 100 ms batches), each with its own journal.
fn three_nodes(
    rng: &mut ChaCha20Rng,
    seed: u8,
) -> (
    Committee,
    Vec<(ed25519_dalek::SigningKey, Scalar)>,
    Vec<sealbatch::keyper::KeyperNode>,
) {
    three_nodes_of(rng, seed, None)
}

/// [`three_nodes`], of a replicated sequencer with these `replicas` (or a
/// single node: `None`).
fn three_nodes_of(
    rng: &mut ChaCha20Rng,
    seed: u8,
    replicas: Option<sealbatch::commit::ReplicaSet>,
) -> (
    Committee,
    Vec<(ed25519_dalek::SigningKey, Scalar)>,
    Vec<sealbatch::keyper::KeyperNode>,
) {
    use sealbatch::keyper::{KeyperIdentity, KeyperNode};
    let (committee, secrets) = signed_committee(rng, 3, 2, deployment_of(seed));
    let nodes = secrets
        .iter()
        .map(|(signing, decryption)| {
            KeyperNode::new(
                KeyperIdentity {
                    committee: committee.clone(),
                    signing: signing.clone(),
                    decryption: zeroize::Zeroizing::new(*decryption),
                    sequencer: SequencerKey::from_seed(&[seed; 32]).public_key(),
                    schedule: BatchSchedule {
                        genesis_ms: 0,
                        batch_length_ms: 100,
                    },
                    skew_ms: 0,
                    replicas: replicas.clone(),
                },
                Vec::new(),
            )
            .expect("a member")
        })
        .collect();
    (committee, secrets, nodes)
}

/// Runs `keeper` and `nodes` from `from` to `to` ms in 10 ms steps (the
/// open batch from the clock), every message delivered.
fn run_log(
    rng: &mut ChaCha20Rng,
    keeper: &mut sealbatch::keyper::LogKeeper,
    nodes: &mut [sealbatch::keyper::KeyperNode],
    from: u64,
    to: u64,
) {
    for now in (from..to).step_by(10) {
        keeper.handle_timeout(now, BatchId(now / 100));
        for n in nodes.iter_mut() {
            n.handle_log(rng, now, keeper.entries(n.read(), u64::MAX, usize::MAX));
            while let Some((number, _)) = n.poll_record() {
                n.handle_durable(number);
            }
            while let Some(message) = n.poll_message() {
                let _ = keeper.handle_message(message);
            }
        }
    }
}

/// What a hostile log keeper (a compromised replica, or a single node's
/// operator) can send a keyper, sent: an entry at the last position, a
/// position far ahead, windows far in the future, generations that never
/// end, a repeated `Open` of a window under way, and a flood of tiny
/// windows certified ahead. The keyper neither panics nor deals twice for
/// one generation, never drops the window in use or forgets its releases,
/// and, back on the honest log, keeps releasing for real batches.
#[test]
fn a_hostile_log_keeper_cannot_crash_brick_or_confuse_a_keyper() {
    use sealbatch::keyper::{
        GenerationParams, KeyperRecord, LogEntry, LogKeeper, Phase, ReleaseRefusal,
    };

    let mut rng = ChaCha20Rng::seed_from_u64(97);
    let (committee, _, mut nodes) = three_nodes(&mut rng, 11);
    let sequencer = SequencerKey::from_seed(&[11; 32]);
    let schedule = BatchSchedule {
        genesis_ms: 0,
        batch_length_ms: 100,
    };
    let honest = GenerationParams {
        window_batches: 64,
        lead_batches: 32,
        phase_ms: [20, 20, 20, 20],
    };
    let mut keeper = LogKeeper::new(committee.clone(), honest, BatchId(0));
    run_log(&mut rng, &mut keeper, &mut nodes, 0, 500);
    assert!(
        nodes.iter().all(|n| n.holds(BatchId(3))),
        "the first window is in use"
    );
    let node = &mut nodes[0];
    let dealt = |node: &mut sealbatch::keyper::KeyperNode| {
        std::iter::from_fn(|| node.poll_record())
            .filter(|(_, r)| matches!(r, KeyperRecord::Dealt { .. }))
            .count()
    };
    let _ = dealt(node);
    let read = node.read();

    // 1. An entry at position 2^64 − 1: ignored, no overflow.
    let far = Window {
        id: 900,
        first_batch: BatchId(10),
        batches: 4,
    };
    node.handle_log(&mut rng, 500, [(u64::MAX, &LogEntry::Open { window: far })]);
    assert_eq!(node.read(), read, "no position after the last exists");

    // 2. Windows opening beyond the keyper's clock plus 10 minutes (batch
    // 6 010 opens at 601 s; the clock is at 0.5 s), or past the last batch
    // number: not taken, nothing dealt.
    for (i, first_batch) in [1_000_000u64, u64::MAX - 3, 6_010].into_iter().enumerate() {
        let window = Window {
            id: 1_000 + i as u64,
            first_batch: BatchId(first_batch),
            batches: 2,
        };
        node.handle_log(
            &mut rng,
            500,
            [(read + i as u64, &LogEntry::Open { window })],
        );
    }
    assert_eq!(dealt(node), 0, "no dealing for a window out of the horizon");

    // 3. Eight generations that never end, then a real one for earlier
    // batches: the real one still gets a dealing (the latest yields).
    let mut position = read + 10;
    for i in 0..8u64 {
        let window = Window {
            id: 2_000 + i,
            first_batch: BatchId(200) + 10 * i,
            batches: 4,
        };
        node.handle_log(&mut rng, 500, [(position, &LogEntry::Open { window })]);
        position += 1;
    }
    assert_eq!(dealt(node), 8);
    let real = Window {
        id: 3_000,
        first_batch: BatchId(100),
        batches: 4,
    };
    node.handle_log(
        &mut rng,
        500,
        [(position, &LogEntry::Open { window: real })],
    );
    position += 1;
    assert_eq!(dealt(node), 1, "the earlier window is dealt for");

    // 4. The same `Open` again while it runs: the dealing under way is
    // kept (posted again, never a new one).
    node.handle_log(
        &mut rng,
        500,
        [(position, &LogEntry::Open { window: real })],
    );
    position += 1;
    assert_eq!(dealt(node), 0, "no second dealing for one generation");
    node.handle_log(
        &mut rng,
        500,
        [(
            position,
            &LogEntry::PhaseEnd {
                window: real,
                phase: Phase::Deal,
            },
        )],
    );
    position += 1;
    assert!(node.fault().is_none());

    // 5. A position far ahead: the keyper has read entries no honest log
    // has. The honest log ends before it; the keyper reads it again from
    // its start and carries on, still holding the window in use.
    node.handle_log(
        &mut rng,
        500,
        [(
            u64::MAX / 2,
            &LogEntry::Open {
                window: Window {
                    id: 4_000,
                    first_batch: BatchId(300),
                    batches: 1,
                },
            },
        )],
    );
    assert!(node.read() > keeper.next_position());
    node.rewind();
    assert_eq!(node.read(), 0);
    let _ = position;
    run_log(&mut rng, &mut keeper, &mut nodes, 500, 900);
    assert!(nodes.iter().all(|n| n.holds(BatchId(5))));

    // 6. A flood of tiny windows certified ahead (a log keeper opening
    // windows of one batch as far as the horizon allows): past 64 windows
    // held, the latest ones are dropped — never the one in use, and no
    // release is forgotten.
    let flood = GenerationParams {
        window_batches: 1,
        lead_batches: 200,
        phase_ms: [10, 10, 10, 10],
    };
    let mut hostile = LogKeeper::new(committee.clone(), flood, BatchId(64));
    for n in &mut nodes {
        n.rewind();
    }
    run_log(&mut rng, &mut hostile, &mut nodes, 900, 6_000);
    let certified = std::iter::from_fn(|| hostile.poll_certified()).count();
    assert!(certified > 64, "{certified} tiny windows certified");
    for n in &nodes {
        assert!(n.holds(BatchId(10)), "the window in use is kept");
    }
    // The keypers still release for a real batch of the window in use.
    let tree =
        MerkleTree::from_commitments(vec![sealbatch::envelope::Commitment([1; 32])]).expect("tree");
    let seal = sequencer.sign_seal(BatchId(10), &tree);
    let close = schedule.close_ms(BatchId(10)).expect("closes");
    for k in &mut nodes {
        let answer = k
            .handle_seal(&seal, None, close.max(6_000))
            .expect("releases");
        assert_eq!(answer.release, sealbatch::keyper::Release::First);
    }
    let other = sequencer.sign_seal(
        BatchId(10),
        &MerkleTree::from_commitments(vec![]).expect("tree"),
    );
    for k in &mut nodes {
        k.record_release(seal);
        assert_eq!(
            k.handle_seal(&other, None, 6_000).map(|_| ()),
            Err(ReleaseRefusal::Equivocation(BatchId(10)))
        );
    }
}

/// A committed log record at the last position (a leader that lies): a
/// replica's log keeper refuses to replay it, with an error, where it
/// overflowed the next position and panicked.
#[test]
fn a_log_entry_at_the_last_position_is_refused_on_replay() {
    use sealbatch::keyper::{GenerationParams, LogEntry, LogKeeper, ReplayError};

    let mut rng = ChaCha20Rng::seed_from_u64(100);
    let (committee, _, _) = three_nodes(&mut rng, 13);
    let mut keeper = LogKeeper::new(committee, GenerationParams::default(), BatchId(0));
    let open = LogEntry::Open {
        window: Window {
            id: 1,
            first_batch: BatchId::ZERO,
            batches: 4,
        },
    };
    assert!(matches!(
        keeper.replay(u64::MAX, open.clone(), 0),
        Err(ReplayError::Position { .. })
    ));
    assert!(keeper.replay(0, open, 0).is_ok(), "nothing was taken");
}

/// A keyper of a replicated sequencer takes log entries only under a
/// majority of the replicas' signatures over exactly those entries at
/// those positions (`spec/keyper.md` §13). Before, it took whatever the
/// replica that welcomed it served: one compromised replica could open
/// windows of its own, end phases early, and have keypers refuse the
/// honest log's windows for the same batches.
#[test]
fn a_replicated_keyper_takes_only_log_entries_a_majority_certified() {
    use sealbatch::commit::{CommitCertificate, CommitKey, ReplicaSet, log_entry_hash};
    use sealbatch::keyper::{GenerationParams, LogEntry, LogKeeper};

    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let sequencer = SequencerKey::from_seed(&[12; 32]).public_key();
    let replicas: Vec<CommitKey> = (1..=3u8).map(|i| CommitKey::from_seed(&[i; 32])).collect();
    let set = ReplicaSet::new(replicas.iter().map(CommitKey::public)).expect("a set");
    let (committee, _, mut nodes) = three_nodes_of(&mut rng, 12, Some(set));
    let params = GenerationParams {
        window_batches: 8,
        lead_batches: 4,
        phase_ms: [20, 20, 20, 20],
    };
    let mut keeper = LogKeeper::new(committee.clone(), params, BatchId(0));
    let certify = |signers: &[&CommitKey], run: &[(u64, LogEntry)]| {
        let hashes: Vec<(u64, [u8; 32])> = run
            .iter()
            .map(|(p, e)| (*p, log_entry_hash(&e.to_bytes())))
            .collect();
        CommitCertificate::new(
            signers
                .iter()
                .map(|k| k.attest_log(&sequencer.to_bytes(), &committee.id(), &hashes)),
        )
    };
    keeper.handle_timeout(0, BatchId(0));
    let run: Vec<(u64, LogEntry)> = keeper
        .entries(0, u64::MAX, 64)
        .map(|(p, e)| (p, e.clone()))
        .collect();
    assert!(!run.is_empty(), "the first window opens");
    let node = &mut nodes[0];
    // Uncertified, or certified by one replica of three: nothing taken.
    node.handle_log(&mut rng, 0, run.iter().map(|(p, e)| (*p, e)));
    assert_eq!(node.read(), 0);
    assert!(
        node.handle_certified_log(&mut rng, 0, &run, &certify(&[&replicas[2]], &run))
            .is_err()
    );
    assert_eq!(node.read(), 0);
    // A compromised replica's own window, signed by itself and certified
    // by nobody else: refused, even with a majority's certificate of the
    // honest run beside it.
    let forged = vec![(
        run[0].0,
        LogEntry::Open {
            window: Window {
                id: 77,
                first_batch: BatchId::ZERO,
                batches: 1,
            },
        },
    )];
    let honest = certify(&[&replicas[0], &replicas[1]], &run);
    assert!(
        node.handle_certified_log(&mut rng, 0, &forged, &honest)
            .is_err()
    );
    assert!(
        node.handle_certified_log(&mut rng, 0, &forged, &certify(&[&replicas[2]], &forged))
            .is_err()
    );
    assert_eq!(node.read(), 0);

    // The honest log, each run certified by two replicas of three: every
    // keyper takes it and the window is keyed.
    for now in (0..1_000u64).step_by(10) {
        keeper.handle_timeout(now, BatchId(now / 100));
        for n in &mut nodes {
            let run: Vec<(u64, LogEntry)> = keeper
                .entries(n.read(), u64::MAX, 64)
                .map(|(p, e)| (p, e.clone()))
                .collect();
            if !run.is_empty() {
                let certificate = certify(&[&replicas[0], &replicas[2]], &run);
                n.handle_certified_log(&mut rng, now, &run, &certificate)
                    .expect("certified");
            }
            while let Some((number, _)) = n.poll_record() {
                n.handle_durable(number);
            }
            while let Some(message) = n.poll_message() {
                let _ = keeper.handle_message(message);
            }
        }
    }
    for n in &nodes {
        assert!(n.holds(BatchId(3)), "the certified window is keyed");
    }
}

/// An honest log over a long run: windows of two batches, 100 of them in
/// 20 s, well within the 30 minutes a keyper keeps a window after its last
/// batch closed. Before, a keyper held at most 64 windows and, past that,
/// dropped the one that starts latest: from the 65th window on it dropped
/// each window as it was certified — the one about to be in use — and
/// refused every seal ("no share of batch 3221": a committee's cluster
/// stalled for good 64 windows into a fault campaign). Now the earliest
/// window goes, with its releases.
#[test]
fn keypers_keep_the_window_in_use_past_64_windows() {
    use sealbatch::keyper::{GenerationParams, LogKeeper, Release};

    let mut rng = ChaCha20Rng::seed_from_u64(98);
    let (committee, _, mut nodes) = three_nodes(&mut rng, 11);
    let sequencer = SequencerKey::from_seed(&[11; 32]);
    let schedule = BatchSchedule {
        genesis_ms: 0,
        batch_length_ms: 100,
    };
    let params = GenerationParams {
        window_batches: 2,
        lead_batches: 4,
        phase_ms: [20, 20, 20, 20],
    };
    let mut keeper = LogKeeper::new(committee, params, BatchId(0));
    let tree =
        MerkleTree::from_commitments(vec![sealbatch::envelope::Commitment([7; 32])]).expect("tree");
    for second in 0..20u64 {
        let from = second * 1_000;
        run_log(&mut rng, &mut keeper, &mut nodes, from, from + 1_000);
        // The sequencer prunes what it cleared.
        let current = (from + 990) / 100;
        keeper.prune(BatchId(current));
        for k in &mut nodes {
            assert!(
                k.holds(BatchId(current)),
                "batch {current}: its window is held"
            );
            assert!(k.holds(BatchId(current) + 1), "batch {}: held", current + 1);
        }
        // The batch that just closed is released for.
        let e = current - 1;
        let seal = sequencer.sign_seal(BatchId(e), &tree);
        let close = schedule.close_ms(BatchId(e)).expect("closes");
        for k in &mut nodes {
            let answer = k.handle_seal(&seal, None, close).expect("releases");
            assert_eq!(answer.release, Release::First, "batch {e}");
            k.record_release(seal);
        }
    }
    // The earliest windows went (past 64 held), with their releases: a
    // seal of batch 0 finds no share to release.
    let seal = sequencer.sign_seal(BatchId(0), &tree);
    for k in &mut nodes {
        assert!(!k.holds(BatchId(0)));
        assert!(k.handle_seal(&seal, None, 20_000).is_err());
    }
}

/// A keyper's keys and journal must be its own and its deployment's: a
/// decryption key that is not its committee entry's, a committee bound to
/// another sequencer key or batch clock, a journal of another deployment
/// (a relaunch with kept keyper directories) or from before the binding —
/// each refused before the keyper takes part. And the relaunch's keys are
/// new: no batch key of the first deployment is certified again.
#[test]
fn a_keyper_refuses_keys_and_journals_that_are_not_its_own_and_a_relaunch_repeats_no_key() {
    use sealbatch::envelope::DeploymentId;
    use sealbatch::keyper::{
        GenerationParams, KeyperError, KeyperIdentity, KeyperNode, KeyperRecord, LogKeeper,
    };

    let mut rng = ChaCha20Rng::seed_from_u64(101);
    let first = BatchSchedule {
        genesis_ms: 0,
        batch_length_ms: 100,
    };
    // The relaunch: the same sequencer key and keypers, a new batch clock.
    let relaunch = BatchSchedule {
        genesis_ms: 3_600_000,
        batch_length_ms: 100,
    };
    let sequencer = SequencerKey::from_seed(&[13; 32]);
    let deployment = |schedule: &BatchSchedule| DeploymentId::of(&sequencer.public_key(), schedule);
    let (committee_a, secrets) = signed_committee(&mut rng, 3, 2, deployment(&first));
    let members: Vec<_> = committee_a
        .indices()
        .filter_map(|j| committee_a.member(j).copied())
        .collect();
    let committee_b = Committee::new(2, members, deployment(&relaunch)).expect("a committee");
    assert_ne!(committee_a.id(), committee_b.id());
    let identity = |committee: &Committee, schedule: BatchSchedule, j: usize| KeyperIdentity {
        committee: committee.clone(),
        signing: secrets[j].0.clone(),
        decryption: zeroize::Zeroizing::new(secrets[j].1),
        sequencer: sequencer.public_key(),
        schedule,
        skew_ms: 0,
        replicas: None,
    };
    // A key made afresh (a lost key file recreated) is not the entry's.
    let mut fresh = identity(&committee_a, first, 0);
    fresh.decryption = zeroize::Zeroizing::new(random_scalar(&mut rng));
    assert!(matches!(
        KeyperNode::new(fresh, Vec::new()),
        Err(KeyperError::WrongDecryptionKey { .. })
    ));
    // A committee of another deployment than the clock configured.
    assert!(matches!(
        KeyperNode::new(identity(&committee_a, relaunch, 0), Vec::new()),
        Err(KeyperError::WrongDeployment { .. })
    ));

    // The first deployment: a window certified, each keyper journaling.
    let params = GenerationParams {
        window_batches: 8,
        lead_batches: 4,
        phase_ms: [20, 20, 20, 20],
    };
    let run = |committee: &Committee,
               schedule: BatchSchedule,
               journals: &mut Vec<Vec<KeyperRecord>>,
               rng: &mut ChaCha20Rng| {
        let mut nodes: Vec<KeyperNode> = (0..3)
            .map(|j| KeyperNode::new(identity(committee, schedule, j), Vec::new()).expect("own"))
            .collect();
        let mut keeper = LogKeeper::new(committee.clone(), params, BatchId(0));
        for now in (schedule.genesis_ms..schedule.genesis_ms + 400).step_by(10) {
            keeper.handle_timeout(now, schedule.batch_at(now).unwrap_or(BatchId::ZERO));
            for (j, n) in nodes.iter_mut().enumerate() {
                n.handle_log(rng, now, keeper.entries(n.read(), u64::MAX, usize::MAX));
                while let Some((number, record)) = n.poll_record() {
                    journals[j].push(KeyperRecord::decode(&record.encode()).expect("decodes"));
                    n.handle_durable(number);
                }
                while let Some(message) = n.poll_message() {
                    let _ = keeper.handle_message(message);
                }
            }
        }
        std::iter::from_fn(|| keeper.poll_certified())
            .map(|(certificate, _)| certificate)
            .collect::<Vec<_>>()
    };
    let mut journals_a: Vec<Vec<KeyperRecord>> = (0..3).map(|_| Vec::new()).collect();
    let certified_a = run(&committee_a, first, &mut journals_a, &mut rng);
    assert!(!certified_a.is_empty());
    assert!(matches!(
        journals_a[0].first(),
        Some(KeyperRecord::Committee { id }) if *id == committee_a.id()
    ));
    // Relaunched with the keyper directories kept: refused (the journal is
    // the first deployment's), and a journal without the committee record
    // (from before deployments were bound) too.
    let kept: Vec<KeyperRecord> = journals_a[0]
        .iter()
        .map(|r| KeyperRecord::decode(&r.encode()).expect("decodes"))
        .collect();
    assert!(matches!(
        KeyperNode::new(identity(&committee_b, relaunch, 0), kept),
        Err(KeyperError::OtherCommittee { .. })
    ));
    let unbound: Vec<KeyperRecord> = journals_a[0]
        .iter()
        .skip(1)
        .map(|r| KeyperRecord::decode(&r.encode()).expect("decodes"))
        .collect();
    assert!(matches!(
        KeyperNode::new(identity(&committee_a, first, 0), unbound),
        Err(KeyperError::OtherCommittee { journal, .. }) if journal == "none"
    ));
    // With new directories the relaunch deals anew: the same windows (by
    // id and batches), and not one batch key of the first deployment.
    let mut journals_b: Vec<Vec<KeyperRecord>> = (0..3).map(|_| Vec::new()).collect();
    let certified_b = run(&committee_b, relaunch, &mut journals_b, &mut rng);
    assert!(!certified_b.is_empty());
    let keys = |certified: &[sealbatch::keyper::WindowCertificate]| {
        certified
            .iter()
            .flat_map(|c| c.keys.clone())
            .collect::<std::collections::BTreeSet<[u8; 32]>>()
    };
    assert_eq!(certified_a[0].window, certified_b[0].window);
    assert!(keys(&certified_a).is_disjoint(&keys(&certified_b)));
    // And a certificate of the first deployment verifies for its committee
    // only: never for the relaunch's.
    assert!(certified_a[0].verify(&committee_a));
    assert!(!certified_a[0].verify(&committee_b));
}

/// A keyper that cannot read its shares from as many dealers as the
/// committee tolerates faulty (here `t` = 2 of 3) concludes that the fault
/// is its own and stops instead of accusing: accusing would make the
/// honest dealers publish its shares in clear. One bad dealer alone is
/// accused as usual.
#[test]
fn a_keyper_that_cannot_read_its_shares_stops_instead_of_accusing() {
    use sealbatch::keyper::{Body, KeyperFault, KeyperMessage, LogEntry, Phase};

    for bad_dealers in [1usize, 2] {
        let mut rng = ChaCha20Rng::seed_from_u64(103);
        let (committee, secrets, mut nodes) = three_nodes(&mut rng, 17);
        let window = Window {
            id: 1,
            first_batch: BatchId(10),
            batches: 2,
        };
        let node = &mut nodes[0];
        let mut entries = vec![LogEntry::Open { window }];
        node.handle_log(&mut rng, 0, [(0, &entries[0])]);
        while let Some((n, _)) = node.poll_record() {
            node.handle_durable(n);
        }
        let own = node.poll_message().expect("its dealing");
        entries.push(LogEntry::Message(own));
        for dealer in 2..=3u16 {
            let (mut dealing, _) = deal(&mut rng, &committee, &window, dealer);
            if usize::from(dealer) - 1 <= bad_dealers {
                // Keyper 1's shares replaced: they do not decrypt.
                dealing.shares[0]
                    .ciphertext
                    .iter_mut()
                    .for_each(|b| *b ^= 0x5a);
            }
            let signed = KeyperMessage {
                window,
                sender: dealer,
                body: Body::Dealing(dealing),
            }
            .sign(&secrets[usize::from(dealer) - 1].0, &committee);
            entries.push(LogEntry::Message(signed));
        }
        entries.push(LogEntry::PhaseEnd {
            window,
            phase: Phase::Deal,
        });
        node.handle_log(
            &mut rng,
            0,
            entries
                .iter()
                .enumerate()
                .skip(1)
                .map(|(p, e)| (p as u64, e)),
        );
        let accusations: Vec<u16> = std::iter::from_fn(|| node.poll_message())
            .filter_map(|m| match m.message.body {
                Body::Accusation { dealer } => Some(dealer),
                _ => None,
            })
            .collect();
        if bad_dealers == 1 {
            assert_eq!(accusations, vec![2]);
            assert!(node.fault().is_none());
        } else {
            assert!(accusations.is_empty(), "{accusations:?}");
            assert!(matches!(
                node.fault(),
                Some(KeyperFault::CannotReadShares { failed: 2, .. })
            ));
        }
    }
}
