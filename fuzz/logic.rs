//! The fuzz property, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/envelope_open.rs`) and the regression test
//! (`tests/logic/envelope_fuzz_regressions.rs`), which replays every file in
//! `fuzz/regressions/`.
//!
//! Two paths per input:
//! 1. the bytes as an envelope of batch `E`: the shape check, opening one,
//!    opening a batch of one, and the receipt/seal/proof decoders;
//! 2. the bytes as a bundle plaintext, encrypted properly to batch `E`, so
//!    the plaintext decoder and signature checks see arbitrary input behind
//!    a valid AEAD.

use std::sync::OnceLock;

use sealbatch::envelope::layout::decode_plaintext;
use sealbatch::envelope::*;

const E: sealbatch::types::BatchId = sealbatch::types::BatchId(5);
const SCHEDULE: BatchSchedule = BatchSchedule {
    genesis_ms: 0,
    batch_length_ms: 100,
};

struct Fixture {
    sequencer: SequencerKey,
    master: MasterSecret,
    batch_key: BatchPublicKey,
    any_key: ReleasedBatchKey,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let sequencer = SequencerKey::from_seed(&[1u8; 32]);
        let master = MasterSecret::from_bytes([2u8; 32]);
        let mut custodian =
            EmbeddedCustodian::new(master.clone(), sequencer.public_key(), SCHEDULE);
        let batch_key = custodian.public_key(E).unwrap();
        let empty = MerkleTree::from_commitments(Vec::new()).unwrap();
        let seal = sequencer.sign_seal(E, &empty);
        let any_key = custodian
            .release(&seal, SCHEDULE.close_ms(E).unwrap())
            .unwrap();
        Fixture {
            sequencer,
            master,
            batch_key,
            any_key,
        }
    })
}

/// Panics only if a property fails.
pub fn check(data: &[u8]) {
    let f = fixture();

    // 1. As an envelope.
    let shape = check_shape(data, E);
    let opened = f.any_key.open(data);
    if let Err(rejection) = shape {
        assert_eq!(opened, Err(rejection), "open must fail as the shape check");
    }
    if data.len() <= ENVELOPE_LEN_MAX {
        let tree = MerkleTree::from_commitments(vec![Commitment::of(data)]).unwrap();
        let seal = f.sequencer.sign_seal(E, &tree);
        let mut custodian =
            EmbeddedCustodian::new(f.master.clone(), f.sequencer.public_key(), SCHEDULE);
        let key = custodian
            .release(&seal, SCHEDULE.close_ms(E).unwrap())
            .unwrap();
        let batch = open_batch(&key, &[data, data]).unwrap();
        assert_eq!(batch.envelopes.len(), 2);
        assert_eq!(batch.envelopes[0].outcome, opened);
        assert_eq!(
            batch.envelopes[1].outcome,
            Err(Rejection::DuplicateEnvelope)
        );
    }
    let _ = Receipt::from_bytes(data);
    let _ = SignedSeal::from_bytes(data);
    if let Ok(proof) = InclusionProof::from_bytes(data) {
        assert_eq!(proof.to_bytes(), data);
        let _ = proof.verify(&Commitment([0; 32]), 1 << 20, &MerkleRoot([0; 32]));
    }

    // 2. As a plaintext behind a valid AEAD.
    let plaintext = &data[..data.len().min(ENVELOPE_LEN_MAX)];
    let envelope = seal_raw_plaintext(&[9u8; 32], E, &f.batch_key, plaintext)
        .unwrap()
        .into_bytes();
    let decoded = decode_plaintext(plaintext);
    match f.any_key.open(&envelope) {
        Ok(bundle) => {
            let d = decoded.expect("opened, so the plaintext decodes");
            assert_eq!(bundle.orders, d.orders);
            assert_eq!(bundle.nonce, d.nonce);
        }
        Err(Rejection::Malformed(_) | Rejection::BundleTooLarge { .. }) => {
            assert!(decoded.is_err());
        }
        Err(Rejection::BadAccountKey | Rejection::BadSignature) => assert!(decoded.is_ok()),
        Err(
            Rejection::Truncated { .. } | Rejection::Oversized { .. } | Rejection::BadLength { .. },
        ) => assert!(decoded.is_err()),
        Err(other) => panic!("unexpected rejection {other:?} for a well-sealed envelope"),
    }
}
