//! The test vectors of `spec/keyper.md` §18, recomputed: a committee's id,
//! a signed accusation's bytes, a proof of knowledge that verifies for its
//! context (and not for another batch), a window certificate's digest, and
//! the keyper link's hello signing message. The spec must hold each value.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sealbatch::keyper::dealing::proof_context;
use sealbatch::keyper::{Body, Committee, KeyperMessage, Member, Proof, Window};

/// Members with signing seeds `[i; 32]` and decryption keys `i + 4`, for
/// i = 1, 2, 3; threshold 2.
fn committee() -> (Committee, Vec<ed25519_dalek::SigningKey>) {
    let keys: Vec<_> = (1u8..=3)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32]))
        .collect();
    let members = keys
        .iter()
        .zip(1u64..)
        .map(|(k, i)| Member {
            signing_key: k.verifying_key().to_bytes(),
            encryption_key: RistrettoPoint::mul_base(&Scalar::from(i + 4))
                .compress()
                .to_bytes(),
        })
        .collect();
    let committee = Committee::new(2, members).expect("a committee");
    let mut keys = keys;
    keys.sort_by_key(|k| committee.index_of(&k.verifying_key().to_bytes()));
    (committee, keys)
}

const WINDOW: Window = Window {
    id: 1,
    first_batch: 0,
    batches: 4,
};

fn vectors() -> Vec<(&'static str, String)> {
    let (committee, keys) = committee();
    let accusation = KeyperMessage {
        window: WINDOW,
        sender: 2,
        body: Body::Accusation { dealer: 3 },
    }
    .sign(&keys[1], &committee);
    let secret = Scalar::from(5u64);
    let context = proof_context(&committee, &WINDOW, 0, 1);
    let proof = Proof::prove(&mut ChaCha20Rng::seed_from_u64(1), &secret, &context);
    assert!(proof.verify(&RistrettoPoint::mul_base(&secret), &context));
    assert!(!proof.verify(
        &RistrettoPoint::mul_base(&secret),
        &proof_context(&committee, &WINDOW, 1, 1)
    ));
    let binding = sealbatch::signed::ChannelBinding([0x42; 32]);
    vec![
        ("committee id", hex::encode(committee.id())),
        ("signed accusation", hex::encode(accusation.encode())),
        ("proof context", hex::encode(&context)),
        (
            "C = 5·G",
            hex::encode(RistrettoPoint::mul_base(&secret).compress().to_bytes()),
        ),
        ("proof (R ‖ z)", hex::encode(proof.to_bytes())),
        (
            "hello signing message",
            hex::encode(sealbatch::wire::keyper::hello_signing_message(
                &committee,
                &[0x11; 32],
                &binding,
            )),
        ),
    ]
}

#[test]
fn spec_holds_the_keyper_vectors() {
    let spec: String = include_str!("../spec/keyper.md")
        .split_whitespace()
        .collect();
    for (name, value) in vectors() {
        assert!(
            spec.contains(&value),
            "spec/keyper.md lacks the {name}: {value}"
        );
    }
}
