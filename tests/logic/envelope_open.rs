//! Envelope round trips, batch rules, custodian rules and every bad input of
//! issue 3: each gets its typed error, never a panic.

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sealbatch::envelope::layout::{self, Malformed, bundle_signature_message, encode_body};
use sealbatch::envelope::*;
use sealbatch::order::OrderSpec;
use sealbatch::types::BatchId;
use sealbatch::types::{BUNDLE_ORDERS_MAX, MarketId, Side, Tick};

const SCHEDULE: BatchSchedule = BatchSchedule {
    genesis_ms: 1_700_000_000_000,
    batch_length_ms: 100,
};

struct World {
    rng: ChaCha20Rng,
    sequencer: SequencerKey,
    master: MasterSecret,
    custodian: EmbeddedCustodian,
}

fn world(seed: u64) -> World {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let sequencer = SequencerKey::generate(&mut rng);
    let master = MasterSecret::generate(&mut rng);
    let custodian = EmbeddedCustodian::new(master.clone(), sequencer.public_key(), SCHEDULE);
    World {
        rng,
        sequencer,
        master,
        custodian,
    }
}

fn order(i: u64) -> OrderSpec {
    OrderSpec {
        market: MarketId((i % 3) as u32),
        side: if i.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        },
        limit: if i.is_multiple_of(5) {
            None
        } else {
            Some(Tick(1000) + i)
        },
        qty: 1 + i,
        client_order_id: i * 7,
    }
}

fn orders(n: usize) -> Vec<OrderSpec> {
    (0..n as u64).map(order).collect()
}

fn close(e: BatchId) -> u64 {
    SCHEDULE.close_ms(e).unwrap()
}

impl World {
    /// The deployment the world's sequencer runs: bundles are signed for it.
    fn deployment(&self) -> DeploymentId {
        DeploymentId::of(&self.sequencer.public_key(), &SCHEDULE)
    }

    fn account(&mut self) -> SigningKey {
        sealbatch::envelope::generate_account_key(&mut self.rng)
    }

    fn seal_one(&mut self, account: &SigningKey, e: BatchId, nonce: u64, n: usize) -> Envelope {
        let pk = self.custodian.public_key(e).unwrap();
        let deployment = self.deployment();
        seal_bundle(
            &mut self.rng,
            account,
            &deployment,
            e,
            &pk,
            nonce,
            &orders(n),
        )
        .unwrap()
    }

    /// Seals the batch over `envs` and releases its key (from a fresh
    /// custodian over the same master secret, so tests may seal one batch
    /// several times without tripping the equivocation check).
    fn release(&mut self, e: BatchId, envs: &[Vec<u8>]) -> ReleasedBatchKey {
        let tree =
            MerkleTree::from_commitments(envs.iter().map(|b| Commitment::of(b)).collect()).unwrap();
        let seal = self.sequencer.sign_seal(e, &tree);
        let mut custodian =
            EmbeddedCustodian::new(self.master.clone(), self.sequencer.public_key(), SCHEDULE);
        custodian.release(&seal, close(e)).unwrap()
    }

    fn random_r(&mut self) -> [u8; 32] {
        let mut wide = [0u8; 64];
        self.rng.fill_bytes(&mut wide);
        curve25519_dalek::Scalar::from_bytes_mod_order_wide(&wide).to_bytes()
    }
}

fn open_one(w: &mut World, e: BatchId, env: &[u8]) -> Result<VerifiedBundle, Rejection> {
    let key = w.release(e, &[env.to_vec()]);
    key.open(env)
}

#[test]
fn round_trip_for_each_size_class() {
    let mut w = world(1);
    let account = w.account();
    for n in [1, 5, 6, 30, 31, 64, 65, 255, BUNDLE_ORDERS_MAX] {
        let env = w.seal_one(&account, BatchId(9), n as u64, n);
        assert_eq!(
            env.as_bytes().len(),
            layout::HEADER_LEN + layout::padded_len(n).unwrap() + layout::TAG_LEN
        );
        let key = w.release(BatchId(9), &[env.as_bytes().to_vec()]);
        let b = key.open(env.as_bytes()).unwrap();
        assert_eq!(b.orders, orders(n));
        assert_eq!(b.nonce, n as u64);
        assert_eq!(b.account, AccountId(account.verifying_key().to_bytes()));
    }
}

/// Sealing to a batch key's multiplication table gives, for the same random
/// bytes, the very envelope sealing to the key gives: it opens the same.
#[test]
fn a_sealing_key_seals_the_same_envelopes() {
    let mut w = world(3);
    let account = w.account();
    let e = BatchId(12);
    let key = w.custodian.public_key(e).unwrap();
    let sealing = SealingKey::new(key);
    assert_eq!(sealing.key(), &key);
    let deployment = w.deployment();
    let mut envelopes = Vec::new();
    for (i, n) in [1, 16, 64, BUNDLE_ORDERS_MAX].into_iter().enumerate() {
        let seed = w.rng.next_u64();
        let plain = seal_bundle(
            &mut ChaCha20Rng::seed_from_u64(seed),
            &account,
            &deployment,
            e,
            &key,
            i as u64,
            &orders(n),
        )
        .unwrap();
        let tabled = seal_bundle_with(
            &mut ChaCha20Rng::seed_from_u64(seed),
            &account,
            &deployment,
            e,
            &sealing,
            i as u64,
            &orders(n),
        )
        .unwrap();
        assert_eq!(plain, tabled, "{n} orders");
        envelopes.push(tabled.into_bytes());
    }
    let released = w.release(e, &envelopes);
    for (i, envelope) in envelopes.iter().enumerate() {
        assert_eq!(released.open(envelope).unwrap().nonce, i as u64);
    }
}

#[test]
fn sealing_refuses_bad_bundles() {
    let mut w = world(2);
    let account = w.account();
    let pk = w.custodian.public_key(BatchId(0)).unwrap();
    let d = w.deployment();
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    assert_eq!(
        seal_bundle(&mut rng, &account, &d, BatchId(0), &pk, 0, &[]),
        Err(BundleError::Empty)
    );
    assert_eq!(
        seal_bundle(
            &mut rng,
            &account,
            &d,
            BatchId(0),
            &pk,
            0,
            &orders(BUNDLE_ORDERS_MAX + 1)
        ),
        Err(BundleError::TooManyOrders {
            orders: BUNDLE_ORDERS_MAX + 1
        })
    );
    let mut zero = orders(3);
    zero[2].qty = 0;
    assert_eq!(
        seal_bundle(&mut rng, &account, &d, BatchId(0), &pk, 0, &zero),
        Err(BundleError::ZeroQuantity { index: 2 })
    );
    assert_eq!(
        seal_bundle_with_ephemeral(&[0u8; 32], &account, &d, BatchId(0), &pk, 0, &orders(1)),
        Err(BundleError::BadEphemeral)
    );
    assert_eq!(
        seal_bundle_with_ephemeral(&[0xff; 32], &account, &d, BatchId(0), &pk, 0, &orders(1)),
        Err(BundleError::BadEphemeral)
    );
}

#[test]
fn shape_rejections() {
    let mut w = world(3);
    let account = w.account();
    let env = w.seal_one(&account, BatchId(5), 0, 1).into_bytes();
    assert!(check_shape(&env, BatchId(5)).is_ok());
    assert_eq!(
        check_shape(&env[..100], BatchId(5)),
        Err(Rejection::Truncated { len: 100 })
    );
    assert_eq!(
        check_shape(&[], BatchId(5)),
        Err(Rejection::Truncated { len: 0 })
    );
    let big = vec![1u8; ENVELOPE_LEN_MAX + 1];
    assert_eq!(
        check_shape(&big, BatchId(5)),
        Err(Rejection::Oversized {
            len: ENVELOPE_LEN_MAX + 1
        })
    );
    let mut odd = env.clone();
    odd.push(0);
    assert_eq!(
        check_shape(&odd, BatchId(5)),
        Err(Rejection::BadLength { len: odd.len() })
    );
    let mut v2 = env.clone();
    v2[0] = 2;
    assert_eq!(
        check_shape(&v2, BatchId(5)),
        Err(Rejection::UnknownVersion(2))
    );
    assert_eq!(
        check_shape(&env, BatchId(6)),
        Err(Rejection::WrongBatch {
            envelope: BatchId(5),
            expected: BatchId(6)
        })
    );
    // R that does not decode (non-canonical field element) and the identity.
    let mut bad_r = env.clone();
    bad_r[9..41].copy_from_slice(&[0xff; 32]);
    assert_eq!(
        check_shape(&bad_r, BatchId(5)),
        Err(Rejection::BadEphemeral)
    );
    let mut id_r = env.clone();
    id_r[9..41].copy_from_slice(&[0u8; 32]);
    assert_eq!(check_shape(&id_r, BatchId(5)), Err(Rejection::BadEphemeral));
    // Negative field element encoding (low bit set) is non-canonical.
    let mut neg_r = env.clone();
    neg_r[9..41].copy_from_slice(&[1u8; 32]);
    assert_eq!(
        check_shape(&neg_r, BatchId(5)),
        Err(Rejection::BadEphemeral)
    );
}

#[test]
fn tampering_fails_the_aead() {
    let mut w = world(4);
    let account = w.account();
    let env = w.seal_one(&account, BatchId(2), 0, 3).into_bytes();
    let key = w.release(BatchId(2), std::slice::from_ref(&env));
    assert!(key.open(&env).is_ok());
    for at in [50, env.len() - 17, env.len() - 1] {
        let mut t = env.clone();
        t[at] ^= 1;
        assert_eq!(key.open(&t), Err(Rejection::AeadFailure), "byte {at}");
    }
    // Another valid R: a different key and different associated data.
    let mut other_r = env.clone();
    let r2 = curve25519_dalek::RistrettoPoint::mul_base(&curve25519_dalek::Scalar::from(5u8));
    other_r[9..41].copy_from_slice(&r2.compress().to_bytes());
    assert_eq!(key.open(&other_r), Err(Rejection::AeadFailure));
    // Changing e in the header to the opened batch: fails the AEAD.
    let other = w.seal_one(&account, BatchId(3), 0, 1).into_bytes();
    let mut relabelled = other.clone();
    relabelled[1..9].copy_from_slice(&2u64.to_le_bytes());
    assert_eq!(key.open(&relabelled), Err(Rejection::AeadFailure));
    // An envelope of another batch is WrongBatch.
    assert_eq!(
        key.open(&other),
        Err(Rejection::WrongBatch {
            envelope: BatchId(3),
            expected: BatchId(2)
        })
    );
}

/// Builds a plaintext by hand: body, signature by `signer`, zero padding.
fn plaintext(
    deployment: &DeploymentId,
    e: BatchId,
    account_pk: &[u8; 32],
    signer: &SigningKey,
    n: usize,
    pad_to: usize,
) -> Vec<u8> {
    let body = encode_body(account_pk, 0, &orders(n)).unwrap();
    let sig = signer.sign(&bundle_signature_message(deployment, e, &body));
    let mut pt = body;
    pt.extend_from_slice(&sig.to_bytes());
    pt.resize(pad_to, 0);
    pt
}

#[test]
fn bad_plaintexts_get_typed_rejections() {
    let mut w = world(5);
    let e = BatchId(8);
    let account = w.account();
    let other = w.account();
    let pk_e = w.custodian.public_key(e).unwrap();
    let apk = account.verifying_key().to_bytes();
    let d = w.deployment();
    let sequencer_public = w.sequencer.public_key();
    // A valid hand-made plaintext opens (sanity check of the helper).
    {
        let pt = plaintext(&d, e, &apk, &account, 2, 256);
        let r = w.random_r();
        let env = seal_raw_plaintext(&r, e, &pk_e, &pt).unwrap().into_bytes();
        assert!(open_one(&mut w, e, &env).is_ok());
    }
    let mut check = |pt: Vec<u8>, want: Rejection| {
        let r = w.random_r();
        let env = seal_raw_plaintext(&r, e, &pk_e, &pt).unwrap().into_bytes();
        assert_eq!(open_one(&mut w, e, &env), Err(want));
    };
    // Signed by another key.
    check(
        plaintext(&d, e, &apk, &other, 2, 256),
        Rejection::BadSignature,
    );
    // Signed for another batch.
    {
        let body = encode_body(&apk, 0, &orders(1)).unwrap();
        let mut pt = body.clone();
        pt.extend_from_slice(
            &account
                .sign(&bundle_signature_message(&d, e + 1, &body))
                .to_bytes(),
        );
        pt.resize(256, 0);
        check(pt, Rejection::BadSignature);
    }
    // Signed for another venue's batch `e` (the same account key there): a
    // bundle opened at one deployment cannot be replayed into another.
    for other in [
        DeploymentId::of(
            &SequencerKey::from_seed(&[0x77; 32]).public_key(),
            &SCHEDULE,
        ),
        DeploymentId::of(
            &sequencer_public,
            &BatchSchedule {
                genesis_ms: SCHEDULE.genesis_ms + 1,
                ..SCHEDULE
            },
        ),
    ] {
        check(
            plaintext(&other, e, &apk, &account, 2, 256),
            Rejection::BadSignature,
        );
    }
    // Bundle over the maximum: count 257 in the largest class.
    let mut pt = plaintext(&d, e, &apk, &account, 1, 8192);
    pt[40..42].copy_from_slice(&257u16.to_le_bytes());
    check(pt, Rejection::BundleTooLarge { orders: 257 });
    // Empty bundle.
    let mut pt = plaintext(&d, e, &apk, &account, 1, 256);
    pt[40..42].copy_from_slice(&0u16.to_le_bytes());
    check(pt, Rejection::Malformed(Malformed::EmptyBundle));
    // Not the smallest class.
    check(
        plaintext(&d, e, &apk, &account, 1, 1024),
        Rejection::Malformed(Malformed::WrongClass {
            orders: 1,
            class: 1024,
        }),
    );
    // Non-zero padding.
    let mut pt = plaintext(&d, e, &apk, &account, 1, 256);
    pt[255] = 1;
    check(pt, Rejection::Malformed(Malformed::Padding));
    // Bad side, bad limit kind, market order with a price, zero quantity.
    for (at, byte, want) in [
        (
            42 + 4,
            7u8,
            Rejection::Malformed(Malformed::Side { index: 0, byte: 7 }),
        ),
        (
            42 + 5,
            2u8,
            Rejection::Malformed(Malformed::Limit { index: 0 }),
        ),
    ] {
        let mut pt = plaintext(&d, e, &apk, &account, 1, 256);
        pt[at] = byte;
        check(pt, want);
    }
    let mut pt = plaintext(&d, e, &apk, &account, 1, 256); // order 0 is a market order
    pt[42 + 6] = 1;
    check(pt, Rejection::Malformed(Malformed::Limit { index: 0 }));
    let mut pt = plaintext(&d, e, &apk, &account, 1, 256);
    pt[42 + 14..42 + 22].copy_from_slice(&0u64.to_le_bytes());
    check(
        pt,
        Rejection::Malformed(Malformed::ZeroQuantity { index: 0 }),
    );
    // Account keys: small order (identity), non-canonical y, not on the curve.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    check(
        plaintext(&d, e, &identity, &account, 1, 256),
        Rejection::BadAccountKey,
    );
    let mut noncanon = [0xffu8; 32];
    noncanon[0] = 0xee; // y = p + 1 ≡ 1, sign bit clear
    noncanon[31] = 0x7f;
    check(
        plaintext(&d, e, &noncanon, &account, 1, 256),
        Rejection::BadAccountKey,
    );
    // A non-canonical encoding of a *valid* point: y + p for small y.
    // (y = 2^255 - 19 + 9 would need y < 19; find one that decompresses.)
    for small_y in 0u8..19 {
        let mut enc = [0xffu8; 32];
        enc[0] = 0xed + small_y;
        enc[31] = 0x7f;
        let canonical = {
            let mut c = [0u8; 32];
            c[0] = small_y;
            c
        };
        if ed25519_dalek::VerifyingKey::from_bytes(&canonical).is_ok_and(|k| !k.is_weak()) {
            check(
                plaintext(&d, e, &enc, &account, 1, 256),
                Rejection::BadAccountKey,
            );
        }
    }
}

#[test]
fn batch_rules_duplicates_and_order_independence() {
    let mut w = world(6);
    let e = BatchId(11);
    let a = w.account();
    let b = w.account();
    let c = w.account();
    let a0 = w.seal_one(&a, e, 0, 2).into_bytes();
    let a0_again = w.seal_one(&a, e, 0, 3).into_bytes(); // same nonce, other envelope
    let b0 = w.seal_one(&b, e, 0, 1).into_bytes();
    let b1 = w.seal_one(&b, e, 1, 1).into_bytes();
    let c_wrong = w.seal_one(&c, e + 1, 0, 1).into_bytes();
    let mut garbage = b1.clone();
    garbage[60] ^= 0x80;
    let envs = vec![
        a0.clone(),
        b0.clone(),
        a0_again.clone(),
        b1.clone(),
        b1.clone(),
        c_wrong.clone(),
        garbage.clone(),
    ];
    let key = w.release(e, &envs);
    let opened = open_batch(&key, &envs).unwrap();
    assert_eq!(opened.envelopes.len(), envs.len());
    assert!(
        opened
            .envelopes
            .windows(2)
            .all(|p| (p[0].commitment, p[0].input_index) < (p[1].commitment, p[1].input_index))
    );
    let outcome = |bytes: &[u8]| -> Vec<Result<VerifiedBundle, Rejection>> {
        let c = Commitment::of(bytes);
        opened
            .envelopes
            .iter()
            .filter(|o| o.commitment == c)
            .map(|o| o.outcome.clone())
            .collect()
    };
    assert_eq!(outcome(&a0), vec![Err(Rejection::DuplicateNonce)]);
    assert_eq!(outcome(&a0_again), vec![Err(Rejection::DuplicateNonce)]);
    assert!(outcome(&b0)[0].is_ok());
    let b1s = outcome(&b1);
    assert!(b1s[0].is_ok());
    assert_eq!(b1s[1], Err(Rejection::DuplicateEnvelope));
    assert_eq!(
        outcome(&c_wrong),
        vec![Err(Rejection::WrongBatch {
            envelope: e + 1,
            expected: e
        })]
    );
    assert_eq!(outcome(&garbage), vec![Err(Rejection::AeadFailure)]);
    assert_eq!(opened.accepted().count(), 2);

    // Any permutation gives the same outcomes in the same order; a single
    // thread gives the same result as the pool.
    let mut reversed = envs.clone();
    reversed.reverse();
    let again = open_batch(&key, &reversed).unwrap();
    let strip = |b: &OpenedBatch| -> Vec<_> {
        b.envelopes
            .iter()
            .map(|o| (o.commitment, o.outcome.clone()))
            .collect()
    };
    assert_eq!(strip(&opened), strip(&again));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let single = pool.install(|| open_batch(&key, &envs)).unwrap();
    assert_eq!(single, opened);

    // A set that differs from the seal is refused whole.
    assert!(matches!(
        open_batch(&key, &envs[..3]),
        Err(OpenError::SealMismatch { .. })
    ));
    let mut extra = envs.clone();
    extra.push(w.seal_one(&c, e, 5, 1).into_bytes());
    assert!(matches!(
        open_batch(&key, &extra),
        Err(OpenError::SealMismatch { .. })
    ));
}

#[test]
fn custodian_release_rules() {
    let mut w = world(7);
    let e = BatchId(4);
    let a = w.account();
    let env = w.seal_one(&a, e, 0, 1).into_bytes();
    let tree = MerkleTree::from_commitments(vec![Commitment::of(&env)]).unwrap();
    let seal = w.sequencer.sign_seal(e, &tree);
    // Open batch: refused.
    assert!(matches!(
        w.custodian.release(&seal, close(e) - 1),
        Err(CustodianError::NotClosed { e: BatchId(4), .. })
    ));
    // Forged: signed by another key; unsigned (zero signature); altered root.
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let forger = SequencerKey::generate(&mut rng);
    let forged = forger.sign_seal(e, &tree);
    assert!(matches!(
        w.custodian.release(&forged, close(e)),
        Err(CustodianError::BadSeal { .. })
    ));
    let mut unsigned = seal;
    unsigned.signature = [0u8; 64];
    assert!(matches!(
        w.custodian.release(&unsigned, close(e)),
        Err(CustodianError::BadSeal { .. })
    ));
    let mut altered = seal;
    altered.root.0[0] ^= 1;
    assert!(matches!(
        w.custodian.release(&altered, close(e)),
        Err(CustodianError::BadSeal { .. })
    ));
    // Valid: released; again: same key; another root: equivocation.
    let k1 = w.custodian.release(&seal, close(e)).unwrap();
    let k2 = w.custodian.release(&seal, close(e) + 5).unwrap();
    assert_eq!(*k1.secret_bytes(), *k2.secret_bytes());
    let other_tree = MerkleTree::from_commitments(vec![Commitment([7; 32])]).unwrap();
    let second = w.sequencer.sign_seal(e, &other_tree);
    assert!(matches!(
        w.custodian.release(&second, close(e)),
        Err(CustodianError::Equivocation { e: BatchId(4), .. })
    ));
    assert_eq!(k1.public_key(), &w.custodian.public_key(e).unwrap());

    // A verifier re-opens from the published secret.
    let mut published = PublishedKeyCustodian::new(
        e,
        &k1.secret_bytes(),
        &w.custodian.public_key(e).unwrap(),
        w.sequencer.public_key(),
        SCHEDULE,
    )
    .unwrap();
    let k3 = published.release(&seal, close(e)).unwrap();
    assert!(
        open_batch(&k3, std::slice::from_ref(&env))
            .unwrap()
            .envelopes[0]
            .outcome
            .is_ok()
    );
    assert!(matches!(
        published.release(&second, close(e)),
        Err(CustodianError::Equivocation { .. })
    ));
    assert!(matches!(
        PublishedKeyCustodian::new(
            e,
            &[0u8; 32],
            &w.custodian.public_key(e).unwrap(),
            w.sequencer.public_key(),
            SCHEDULE
        ),
        Err(CustodianError::Key {
            source: KeyError::ZeroScalar,
            ..
        })
    ));
    assert!(matches!(
        PublishedKeyCustodian::new(
            e + 1,
            &k1.secret_bytes(),
            &w.custodian.public_key(e + 1).unwrap(),
            w.sequencer.public_key(),
            SCHEDULE
        ),
        Err(CustodianError::Key {
            source: KeyError::Mismatch,
            ..
        })
    ));
}

#[test]
fn batch_public_key_decoding() {
    assert_eq!(
        BatchPublicKey::from_bytes(&[0u8; 32]),
        Err(KeyError::IdentityPoint)
    );
    assert_eq!(
        BatchPublicKey::from_bytes(&[0xff; 32]),
        Err(KeyError::NonCanonicalPoint)
    );
    let w = world(8);
    let pk = w.custodian.public_key(BatchId(1)).unwrap();
    assert_eq!(BatchPublicKey::from_bytes(&pk.to_bytes()), Ok(pk));
    assert_ne!(pk, w.custodian.public_key(BatchId(2)).unwrap());
}

#[test]
fn receipts_seals_and_proofs() {
    let mut w = world(9);
    let seq_pk = w.sequencer.public_key();
    assert_eq!(
        SequencerKey::from_seed(&w.sequencer.seed_bytes()).public_key(),
        seq_pk
    );
    for n in 0..=17u32 {
        let commitments: Vec<Commitment> =
            (0..n).map(|i| Commitment::of(&i.to_le_bytes())).collect();
        let tree = MerkleTree::from_commitments(commitments.clone()).unwrap();
        assert_eq!(tree.count(), n);
        assert_eq!(merkle_root(tree.leaves()).unwrap(), tree.root());
        let seal = w.sequencer.sign_seal(BatchId(3), &tree);
        assert_eq!(SignedSeal::from_bytes(&seal.to_bytes()).unwrap(), seal);
        seal.verify(&seq_pk).unwrap();
        for c in &commitments {
            let receipt = w.sequencer.sign_receipt(BatchId(3), c);
            assert_eq!(Receipt::from_bytes(&receipt.to_bytes()).unwrap(), receipt);
            let idx = tree.position(c).unwrap();
            let proof = tree.proof(idx).unwrap();
            assert_eq!(
                InclusionProof::from_bytes(&proof.to_bytes()).unwrap(),
                proof
            );
            seal.verify_inclusion(&seq_pk, &receipt, &proof).unwrap();
            // Index beyond the count, wrong index, wrong commitment: refused.
            // (The count itself is bound by the seal's signature, not the
            // proof: a proof may also fit a tree of another size.)
            assert!(matches!(
                proof.verify(c, idx, &seal.root),
                Err(MerkleError::IndexOutOfRange { .. })
            ));
            if n > 1 {
                let mut p = proof.clone();
                p.index = (idx + 1) % n;
                assert!(p.verify(c, n, &seal.root).is_err());
            }
            assert!(
                proof
                    .verify(&Commitment([0xab; 32]), n, &seal.root)
                    .is_err()
            );
            let other_batch = w.sequencer.sign_receipt(BatchId(4), c);
            assert!(matches!(
                seal.verify_inclusion(&seq_pk, &other_batch, &proof),
                Err(ProofError::BatchMismatch { .. })
            ));
        }
        assert!(tree.proof(n).is_none());
    }
    // Duplicates collapse; order does not matter.
    let a = Commitment([1; 32]);
    let b = Commitment([2; 32]);
    let t1 = MerkleTree::from_commitments(vec![b, a, b]).unwrap();
    let t2 = MerkleTree::from_commitments(vec![a, b]).unwrap();
    assert_eq!(t1, t2);
    // Bad encodings.
    assert!(Receipt::from_bytes(&[0u8; 10]).is_err());
    assert!(SignedSeal::from_bytes(&[0u8; 200]).is_err());
    assert!(InclusionProof::from_bytes(&[0u8; 4]).is_err());
    assert!(InclusionProof::from_bytes(&[0, 0, 0, 0, 1]).is_err());
    assert!(InclusionProof::from_bytes(&[0, 0, 0, 0, 200]).is_err());
    let mut bad = w.sequencer.sign_receipt(BatchId(1), &a);
    bad.signature[63] ^= 0x40;
    assert_eq!(bad.verify(&seq_pk), Err(ProofError::BadSignature));
    assert!(
        SequencerPublicKey::from_bytes(&{
            let mut id = [0u8; 32];
            id[0] = 1;
            id
        })
        .is_err()
    );
    let _ = &mut w;
}

/// Group receipts (`spec/envelope.md` §12): one signature per group, a
/// path per receipt; every receipt of every group size verifies alone,
/// nothing else does, and a checker checks each group's signature once.
#[test]
fn group_receipts_verify_alone_and_refuse_what_they_do_not_say() {
    let w = world(10);
    let key = w.sequencer.public_key();
    for n in [1usize, 2, 3, 5, 8, 13, 64, 100, 257] {
        let entries: Vec<(BatchId, Commitment)> = (0..n)
            .map(|i| {
                (
                    BatchId(7 + (i % 3) as u64),
                    Commitment::of(&(i as u64 * 31 + n as u64).to_le_bytes()),
                )
            })
            .collect();
        let group = w.sequencer.sign_receipts(&entries).unwrap();
        assert_eq!(group.len(), n);
        assert!(group.receipt(n as u32).is_none());
        let mut checker = ReceiptChecker::new(key);
        for (i, (e, c)) in entries.iter().enumerate() {
            let receipt = group.receipt(i as u32).unwrap();
            assert_eq!(
                (receipt.e, receipt.commitment, receipt.count),
                (*e, *c, n as u32)
            );
            let bytes = receipt.to_bytes();
            assert_eq!(Receipt::encoded_len(&bytes), Ok(bytes.len()));
            assert_eq!(Receipt::from_bytes(&bytes).unwrap(), receipt);
            receipt.verify(&key).unwrap();
            checker.check(&receipt).unwrap();
            // Another batch, another commitment, another place: refused.
            let mut other = receipt.clone();
            other.e += 1;
            assert!(other.verify(&key).is_err() && checker.check(&other).is_err());
            let mut other = receipt.clone();
            other.commitment.0[0] ^= 1;
            assert!(other.verify(&key).is_err() && checker.check(&other).is_err());
            if n > 1 {
                let mut other = receipt.clone();
                other.proof.index = (other.proof.index + 1) % n as u32;
                assert!(other.verify(&key).is_err() && checker.check(&other).is_err());
                // The same path under a group size the signature does not say.
                let mut other = receipt.clone();
                other.count += 1;
                assert!(other.verify(&key).is_err() && checker.check(&other).is_err());
            }
            // A forged signature over a root the checker verified before.
            let mut other = receipt.clone();
            other.signature[5] ^= 1;
            assert_eq!(checker.check(&other), Err(ProofError::BadSignature));
            // A byte more or less.
            assert!(Receipt::from_bytes(&bytes[..bytes.len() - 1]).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Receipt::from_bytes(&longer).is_err());
        }
    }
    // Groups the key will not sign as one.
    assert_eq!(
        w.sequencer.sign_receipts(&[]).err(),
        Some(ProofError::GroupSize(0))
    );
    let too_many = vec![(BatchId(1), Commitment([1; 32])); RECEIPT_GROUP_MAX + 1];
    assert_eq!(
        w.sequencer.sign_receipts(&too_many).err(),
        Some(ProofError::GroupSize(RECEIPT_GROUP_MAX + 1))
    );
    let full = w.sequencer.sign_receipts(&too_many[1..]).unwrap();
    let last = full.receipt(RECEIPT_GROUP_MAX as u32 - 1).unwrap();
    assert_eq!(last.to_bytes().len(), RECEIPT_LEN_MAX);
    last.verify(&key).unwrap();
    // A sibling count above the bound is refused before any length.
    let mut deep = last.to_bytes();
    deep[144] = RECEIPT_PROOF_DEPTH_MAX as u8 + 1;
    assert!(Receipt::encoded_len(&deep).is_err());
    assert!(Receipt::from_bytes(&deep).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(24, 24), ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(
        seed in any::<u64>(),
        e in any::<u64>(),
        nonce in any::<u64>(),
        specs in prop::collection::vec(
            (any::<u32>(), any::<bool>(), prop::option::of(any::<u64>()), 1u64.., any::<u64>()),
            1..40,
        ),
    ) {
        let mut w = world(seed);
        let account = w.account();
        let orders: Vec<OrderSpec> = specs
            .into_iter()
            .map(|(m, buy, limit, qty, id)| OrderSpec {
                market: MarketId(m),
                side: if buy { Side::Buy } else { Side::Sell },
                limit: limit.map(Tick),
                qty,
                client_order_id: id,
            })
            .collect();
        let pk = w.custodian.public_key(BatchId(e)).unwrap();
        let d = w.deployment();
        let env = seal_bundle(&mut w.rng, &account, &d, BatchId(e), &pk, nonce, &orders).unwrap();
        prop_assert_eq!(check_shape(env.as_bytes(), BatchId(e)), Ok(env.commitment()));
        let tree = MerkleTree::from_commitments(vec![env.commitment()]).unwrap();
        let seal = w.sequencer.sign_seal(BatchId(e), &tree);
        let close_ms = SCHEDULE.close_ms(BatchId(e)).unwrap_or(u64::MAX);
        match w.custodian.release(&seal, close_ms) {
            Ok(key) => {
                let b = key.open(env.as_bytes()).unwrap();
                prop_assert_eq!(b.orders, orders);
                prop_assert_eq!(b.nonce, nonce);
            }
            Err(CustodianError::NotClosed { .. }) => prop_assert_eq!(close_ms, u64::MAX),
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    #[test]
    fn prop_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..9000), e in 0u64..3) {
        let mut w = world(1234);
        let key = w.release(BatchId(1), std::slice::from_ref(&bytes));
        let shape = check_shape(&bytes, BatchId(e));
        let opened = key.open(&bytes);
        prop_assert!(opened.is_err());
        if shape.is_err() && e == 1 {
            prop_assert_eq!(opened.err(), shape.err());
        }
        let batch = open_batch(&key, &[bytes]).unwrap();
        prop_assert!(batch.envelopes[0].outcome.is_err());
    }
}

/// The batched KEM path (shared inversion per run of envelopes) gives the
/// same outcome as opening each envelope alone, across run boundaries and
/// with rejections interleaved.
#[test]
fn batched_open_matches_single_open() {
    let mut w = world(11);
    let e = BatchId(21);
    let mut envs = Vec::new();
    let pk_e = w.custodian.public_key(e).unwrap();
    let forger = w.account();
    for i in 0..100u64 {
        let account = w.account();
        let mut env = w
            .seal_one(&account, e, i, 1 + (i as usize % 7))
            .into_bytes();
        if i % 9 == 3 {
            // A signature by another key, among valid ones: the run's
            // combined check fails and only this envelope is rejected.
            let pt = plaintext(
                &w.deployment(),
                e,
                &account.verifying_key().to_bytes(),
                &forger,
                2,
                256,
            );
            let r = w.random_r();
            env = seal_raw_plaintext(&r, e, &pk_e, &pt).unwrap().into_bytes();
        }
        match i % 9 {
            0 => env[70] ^= 1,                                      // AEAD failure
            1 => env[9..41].copy_from_slice(&[0xff; 32]),           // bad R
            2 => env[1..9].copy_from_slice(&(e + 1).to_le_bytes()), // wrong batch
            _ => {}
        }
        envs.push(env);
    }
    envs.push(envs[5].clone());
    let key = w.release(e, &envs);
    let opened = open_batch(&key, &envs).unwrap();
    // Envelopes read back from a journal, bad ones included, open the same.
    let unchecked: Vec<ShapedEnvelope> = envs
        .iter()
        .map(|b| ShapedEnvelope::unchecked(b.clone(), e))
        .collect();
    assert_eq!(open_shaped_batch(&key, &unchecked).unwrap(), opened);
    let mut seen = std::collections::BTreeSet::new();
    for o in &opened.envelopes {
        let single = key.open(&envs[o.input_index]);
        if seen.insert(o.commitment) {
            assert_eq!(o.outcome, single, "input {}", o.input_index);
        } else {
            assert_eq!(o.outcome, Err(Rejection::DuplicateEnvelope));
        }
    }
    assert_eq!(
        opened.accepted().count(),
        (0..100).filter(|i| i % 9 > 3).count()
    );
    let bad_signatures = opened
        .envelopes
        .iter()
        .filter(|o| o.outcome == Err(Rejection::BadSignature))
        .count();
    assert_eq!(bad_signatures, (0..100).filter(|i| i % 9 == 3).count());

    // The sequencer's path: envelopes shape-checked on arrival open to the
    // same outcomes.
    let shaped: Vec<ShapedEnvelope> = envs
        .iter()
        .filter_map(|env| ShapedEnvelope::new(env.clone(), e).ok())
        .collect();
    let plain: Vec<Vec<u8>> = shaped.iter().map(|s| s.bytes().to_vec()).collect();
    let key = w.release(e, &plain);
    let by_shape = open_shaped_batch(&key, &shaped).unwrap();
    assert_eq!(by_shape, open_batch(&key, &plain).unwrap());
    assert_eq!(by_shape.envelopes.len(), shaped.len());
    // Read back from a journal: the same, with the header checked at opening.
    let replayed: Vec<ShapedEnvelope> = plain
        .iter()
        .map(|b| ShapedEnvelope::unchecked(b.clone(), e))
        .collect();
    assert_eq!(open_shaped_batch(&key, &replayed).unwrap(), by_shape);
}

/// Wide trees take the parallel hashing path; proofs and the root-only
/// function still agree with the tree.
#[test]
fn wide_merkle_tree_is_consistent() {
    let commitments: Vec<Commitment> = (0u32..9_001)
        .map(|i| Commitment::of(&i.to_le_bytes()))
        .collect();
    let tree = MerkleTree::from_commitments(commitments).unwrap();
    assert_eq!(merkle_root(tree.leaves()).unwrap(), tree.root());
    for i in [0u32, 1, 4095, 4096, 8191, 8192, 9_000] {
        let proof = tree.proof(i).unwrap();
        let c = tree.leaves()[i as usize];
        proof.verify(&c, tree.count(), &tree.root()).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(32, 64), ..ProptestConfig::default() })]

    #[test]
    fn prop_every_proof_verifies(n in 0usize..300, salt in any::<u64>()) {
        let commitments: Vec<Commitment> = (0..n as u64)
            .map(|i| Commitment::of(&(i ^ salt).to_le_bytes()))
            .collect();
        let tree = MerkleTree::from_commitments(commitments).unwrap();
        prop_assert_eq!(merkle_root(tree.leaves()).unwrap(), tree.root());
        for i in 0..tree.count() {
            let proof = tree.proof(i).unwrap();
            prop_assert!(proof.siblings.len() <= PROOF_DEPTH_MAX);
            prop_assert!(proof.verify(&tree.leaves()[i as usize], tree.count(), &tree.root()).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(24, 48), ..ProptestConfig::default() })]

    /// Batched signature checks never change a verdict: whatever mix of
    /// accounts (repeated keys share one term) and forged signatures a
    /// batch holds, every envelope's outcome in `open_batch` is the one
    /// `open` gives it alone.
    #[test]
    fn prop_batched_signature_checks_match_single_opening(
        seed in any::<u64>(),
        n in 1usize..90,
        accounts in 1usize..6,
        forged in any::<u128>(),
    ) {
        let mut w = world(seed);
        let e = BatchId(5);
        let pk_e = w.custodian.public_key(e).unwrap();
        let keys: Vec<SigningKey> = (0..accounts).map(|_| w.account()).collect();
        let forger = w.account();
        let envs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let key = &keys[i % accounts];
                if forged >> (i % 128) & 1 == 1 {
                    // Signed by another key than the one it names.
                    let pt = plaintext(&w.deployment(), e, &key.verifying_key().to_bytes(), &forger, 1 + i % 3, 256);
                    let r = w.random_r();
                    seal_raw_plaintext(&r, e, &pk_e, &pt).unwrap().into_bytes()
                } else {
                    w.seal_one(key, e, i as u64, 1 + i % 3).into_bytes()
                }
            })
            .collect();
        let key = w.release(e, &envs);
        let opened = open_batch(&key, &envs).unwrap();
        for o in &opened.envelopes {
            prop_assert_eq!(&o.outcome, &key.open(&envs[o.input_index]));
        }
        let bad = (0..n).filter(|i| forged >> (i % 128) & 1 == 1).count();
        prop_assert_eq!(
            opened.envelopes.iter().filter(|o| o.outcome == Err(Rejection::BadSignature)).count(),
            bad
        );
    }
}

/// Commitments print as hex, in messages and debug output alike.
#[test]
fn commitments_print_as_hex() {
    let c = Commitment([0xab; 32]);
    assert_eq!(c.to_string(), "ab".repeat(32));
    assert_eq!(format!("{c:?}"), format!("Commitment({})", "ab".repeat(32)));
}
