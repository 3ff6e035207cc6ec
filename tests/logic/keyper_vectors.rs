//! The test vectors of `spec/keyper.md` §18, recomputed: the deployment id
//! a committee is bound to, a committee's id, a signed accusation's bytes, a
//! proof of knowledge that verifies for its context (and not for another
//! batch), the keyper link's hello signing message, and a release
//! attestation's message and signature. The spec must hold each value as a
//! whole hex block (not merely inside a longer one).

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sealbatch::codec::Encode;
use sealbatch::keyper::dealing::proof_context;
use sealbatch::keyper::{Body, Committee, KeyperMessage, Member, Proof, Window};
use sealbatch::types::BatchId;

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
    let committee = Committee::new(2, members, deployment()).expect("a committee");
    let mut keys = keys;
    keys.sort_by_key(|k| committee.index_of(&k.verifying_key().to_bytes()));
    (committee, keys)
}

/// The deployment of sequencer key `[0x11; 32]` with genesis
/// 1 700 000 000 000 ms and 100 ms batches.
fn deployment() -> sealbatch::envelope::DeploymentId {
    sealbatch::envelope::DeploymentId::new(
        &[0x11; 32],
        &sealbatch::envelope::BatchSchedule {
            genesis_ms: 1_700_000_000_000,
            batch_length_ms: 100,
        },
    )
}

const WINDOW: Window = Window {
    id: 1,
    first_batch: BatchId::ZERO,
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
    let context = proof_context(&committee, &WINDOW, BatchId(0), 1);
    let proof = Proof::prove(&mut ChaCha20Rng::seed_from_u64(1), &secret, &context);
    assert!(proof.verify(&RistrettoPoint::mul_base(&secret), &context));
    assert!(!proof.verify(
        &RistrettoPoint::mul_base(&secret),
        &proof_context(&committee, &WINDOW, BatchId(1), 1)
    ));
    let binding = sealbatch::signed::ChannelBinding([0x42; 32]);
    let seal = sealbatch::envelope::SealStatement {
        e: BatchId(7),
        count: 3,
        root: sealbatch::envelope::MerkleRoot([0x55; 32]),
    };
    let release = sealbatch::keyper::attestation::release_message(&committee, &seal);
    let attestation = sealbatch::keyper::attestation::attest(&keys[0], &committee, &seal);
    assert!(sealbatch::keyper::attestation::verify_attestation(
        &committee,
        &seal,
        1,
        &attestation
    ));
    vec![
        ("deployment id", hex::encode(deployment().0)),
        ("committee id", hex::encode(committee.id())),
        ("signed accusation", hex::encode(accusation.to_bytes())),
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
        ("release message", hex::encode(&release)),
        ("release attestation of keyper 1", hex::encode(attestation)),
    ]
}

/// The hex blocks of a spec: runs of indented lines of hex digits only,
/// joined (a blank or other line ends a block).
fn hex_blocks(spec: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut block = String::new();
    for line in spec.lines() {
        let text = line.trim();
        if line.starts_with("    ")
            && !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            block.push_str(text);
        } else if !block.is_empty() {
            blocks.push(std::mem::take(&mut block));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

#[test]
fn spec_holds_the_keyper_vectors() {
    let blocks = hex_blocks(include_str!("../../spec/keyper.md"));
    let vectors = vectors();
    let missing: Vec<String> = vectors
        .iter()
        .filter(|(_, value)| !blocks.contains(value))
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    assert!(
        missing.is_empty(),
        "spec/keyper.md lacks, each as a block of its own:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_hello_vector_is_the_formula() {
    // `u8(25) ‖ "sealbatch v1 keyper hello" ‖ committee id ‖ sequencer key
    // ‖ channel binding`: 1 + 25 + 3 × 32 = 122 bytes.
    let (committee, _) = committee();
    let message = sealbatch::wire::keyper::hello_signing_message(
        &committee,
        &[0x11; 32],
        &sealbatch::signed::ChannelBinding([0x42; 32]),
    );
    let mut expected = vec![25u8];
    expected.extend_from_slice(b"sealbatch v1 keyper hello");
    expected.extend_from_slice(&committee.id());
    expected.extend_from_slice(&[0x11; 32]);
    expected.extend_from_slice(&[0x42; 32]);
    assert_eq!(message.len(), 122);
    assert_eq!(message, expected);
}

/// The vectors' keypers are indexed by ascending signing key, as §18
/// states: the member of seed `[2; 32]` is keyper 1, of seed `[1; 32]`
/// keyper 2, of seed `[3; 32]` keyper 3.
#[test]
fn the_vectors_keypers_are_indexed_by_ascending_signing_key() {
    let (committee, _) = committee();
    let index = |seed: u8| {
        committee.index_of(
            &ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
        )
    };
    assert_eq!((index(2), index(1), index(3)), (Some(1), Some(2), Some(3)));
}
