//! Test vectors (`spec/test-vectors/envelope-v1.json`): generated from fixed
//! seeds, reproduced byte for byte, and read back the way another
//! implementation would use them.
//!
//! Regenerate (only when the format changes on purpose):
//! `SEALBATCH_WRITE_VECTORS=1 cargo test --test logic -- envelope_vectors::`

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signer, SigningKey};
use sealbatch::envelope::layout::{bundle_signature_message, encode_body, padded_len};
use sealbatch::envelope::receipt::{receipt_group_message, receipt_leaf, seal_message};
use sealbatch::envelope::*;
use sealbatch::order::OrderSpec;
use sealbatch::types::BatchId;
use sealbatch::types::{MarketId, Side, Tick};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/spec/test-vectors/envelope-v1.json"
);

const SCHEDULE: BatchSchedule = BatchSchedule {
    genesis_ms: 1_767_225_600_000,
    batch_length_ms: 100,
};

/// `seed(label) = blake3(label)`: every secret in the vectors comes from one.
fn seed(label: &str) -> [u8; 32] {
    *blake3::hash(label.as_bytes()).as_bytes()
}

/// An ephemeral scalar: 64 bytes of blake3 XOF over the label, reduced mod l.
fn scalar(label: &str) -> [u8; 32] {
    let mut wide = [0u8; 64];
    blake3::Hasher::new()
        .update(label.as_bytes())
        .finalize_xof()
        .fill(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide).to_bytes()
}

fn orders(n: usize, salt: u64) -> Vec<OrderSpec> {
    (0..n as u64)
        .map(|i| OrderSpec {
            market: MarketId((i % 4) as u32 + salt as u32),
            side: if (i + salt).is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            limit: if i % 3 == 2 {
                None
            } else {
                Some(Tick(10_000) + 25 * i)
            },
            qty: 1 + i * 3 + salt,
            client_order_id: (salt << 32) | i,
        })
        .collect()
}

fn order_json(o: &OrderSpec) -> Value {
    json!({
        "market": o.market.0,
        "side": o.side.to_string(),
        "limit": o.limit,
        "qty": o.qty,
        "client_order_id": o.client_order_id,
    })
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn un(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn arr32(v: &Value) -> [u8; 32] {
    un(v).try_into().unwrap()
}

struct Ctx {
    deployment: DeploymentId,
    custodian: EmbeddedCustodian,
    sequencer: SequencerKey,
}

/// One sealed envelope with every intermediate value.
fn envelope_vector(
    ctx: &Ctx,
    label: &str,
    e: BatchId,
    nonce: u64,
    orders: &[OrderSpec],
) -> (Value, Vec<u8>) {
    let account = SigningKey::from_bytes(&seed(&format!("{label} account")));
    let r = scalar(&format!("{label} r"));
    let batch_key = ctx.custodian.public_key(e).unwrap();
    let env =
        seal_bundle_with_ephemeral(&r, &account, &ctx.deployment, e, &batch_key, nonce, orders)
            .unwrap()
            .into_bytes();

    let r_scalar = Scalar::from_canonical_bytes(r).unwrap();
    let big_r = curve25519_dalek::RistrettoPoint::mul_base(&r_scalar);
    let s_point = CompressedRistretto(batch_key.to_bytes())
        .decompress()
        .unwrap();
    let shared = (r_scalar * s_point).compress().to_bytes();
    let key = kem_key(
        &shared,
        &big_r.compress().to_bytes(),
        &batch_key.to_bytes(),
        e,
    );
    let body = encode_body(account.verifying_key().as_bytes(), nonce, orders).unwrap();
    let msg = bundle_signature_message(&ctx.deployment, e, &body);
    let signature = account.sign(&msg).to_bytes();
    let mut plaintext = body.clone();
    plaintext.extend_from_slice(&signature);
    plaintext.resize(padded_len(orders.len()).unwrap(), 0);
    let commitment = Commitment::of(&env);
    let receipt = ctx.sequencer.sign_receipt(e, &commitment);
    let v = json!({
        "label": label,
        "e": e,
        "account_seed": h(&seed(&format!("{label} account"))),
        "account_public_key": h(account.verifying_key().as_bytes()),
        "nonce": nonce,
        "orders": orders.iter().map(order_json).collect::<Vec<_>>(),
        "r": h(&r),
        "R": h(&big_r.compress().to_bytes()),
        "shared": h(&shared),
        "kem_key": h(key.as_ref()),
        "body": h(&body),
        "signature_message": h(&msg),
        "signature": h(&signature),
        "plaintext": h(&plaintext),
        "envelope": h(&env),
        "commitment": h(&commitment.0),
        "receipt_leaf": h(&receipt_leaf(e, &commitment)),
        "receipt_group_message": h(&receipt_group_message(1, &receipt.root)),
        "receipt": h(&receipt.to_bytes()),
    });
    (v, env)
}

fn generate() -> String {
    let master = seed("sealbatch test vector master secret");
    let sequencer_seed = seed("sealbatch test vector sequencer");
    let sequencer = SequencerKey::from_seed(&sequencer_seed);
    let custodian = EmbeddedCustodian::new(
        MasterSecret::from_bytes(master),
        sequencer.public_key(),
        SCHEDULE,
    );
    let ctx = Ctx {
        deployment: DeploymentId::of(&sequencer.public_key(), &SCHEDULE),
        custodian,
        sequencer,
    };

    // Batch keys: s_e is only obtainable by release, so release each one over
    // an empty seal (a fresh custodian per batch).
    let mut batch_keys = Vec::new();
    for e in [0u64, 1, 42, 1 << 40] {
        let mut c = EmbeddedCustodian::new(
            MasterSecret::from_bytes(master),
            ctx.sequencer.public_key(),
            SCHEDULE,
        );
        let seal = ctx
            .sequencer
            .sign_seal(BatchId(e), &MerkleTree::from_commitments(vec![]).unwrap());
        let key = c
            .release(&seal, SCHEDULE.close_ms(BatchId(e)).unwrap())
            .unwrap();
        batch_keys.push(json!({
            "e": e,
            "s_e": h(key.secret_bytes().as_ref()),
            "S_e": h(&key.public_key().to_bytes()),
        }));
    }

    // A sealed batch of three envelopes (1, 16 and 64 orders).
    let e = 42u64;
    let mut envs = Vec::new();
    let mut env_bytes = Vec::new();
    for (label, nonce, n, salt) in [
        ("alice", 0u64, 1usize, 0u64),
        ("bob", 7, 16, 1),
        ("carol", u64::MAX, 64, 2),
    ] {
        let (v, b) = envelope_vector(&ctx, label, BatchId(e), nonce, &orders(n, salt));
        envs.push(v);
        env_bytes.push(b);
    }
    let tree = MerkleTree::from_commitments(env_bytes.iter().map(|b| Commitment::of(b)).collect())
        .unwrap();
    let seal = ctx.sequencer.sign_seal(BatchId(e), &tree);
    let proofs: Vec<Value> = tree
        .leaves()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = tree.proof(i as u32).unwrap();
            json!({ "commitment": h(&c.0), "index": i, "proof": h(&p.to_bytes()) })
        })
        .collect();

    // Merkle roots for 0..=7 leaves, leaf i = [i; 32].
    let merkle: Vec<Value> = (0u8..=7)
        .map(|n| {
            let leaves: Vec<Commitment> = (0..n).map(|i| Commitment([i; 32])).collect();
            let t = MerkleTree::from_commitments(leaves.clone()).unwrap();
            json!({
                "leaves": leaves.iter().map(|c| h(&c.0)).collect::<Vec<_>>(),
                "root": h(&t.root().0),
                "proofs": (0..u32::from(n)).map(|i| h(&t.proof(i).unwrap().to_bytes())).collect::<Vec<_>>(),
            })
        })
        .collect();

    // Negative vectors, each opened alone with batch 42's key.
    let good = &env_bytes[0];
    let batch_key = ctx.custodian.public_key(BatchId(e)).unwrap();
    let alice = SigningKey::from_bytes(&seed("alice account"));
    let mallory = SigningKey::from_bytes(&seed("mallory account"));
    let raw = |label: &str,
               signer: &SigningKey,
               count: Option<u16>,
               pad: usize,
               tweak: Option<(usize, u8)>| {
        let body = encode_body(alice.verifying_key().as_bytes(), 1, &orders(1, 0)).unwrap();
        let mut pt = body.clone();
        pt.extend_from_slice(
            &signer
                .sign(&bundle_signature_message(
                    &ctx.deployment,
                    BatchId(e),
                    &body,
                ))
                .to_bytes(),
        );
        pt.resize(pad, 0);
        if let Some(c) = count {
            pt[40..42].copy_from_slice(&c.to_le_bytes());
        }
        if let Some((at, b)) = tweak {
            pt[at] = b;
        }
        seal_raw_plaintext(&scalar(label), BatchId(e), &batch_key, &pt)
            .unwrap()
            .into_bytes()
    };
    let mut negatives: Vec<(&str, Vec<u8>)> = Vec::new();
    negatives.push(("truncated", good[..good.len() - 1].to_vec()));
    let mut v = good.clone();
    v[0] = 2;
    negatives.push(("unknown version", v));
    let (_, other_batch) = envelope_vector(&ctx, "dave", BatchId(43), 0, &orders(1, 0));
    negatives.push(("wrong batch", other_batch));
    let mut v = good.clone();
    v[9..41].copy_from_slice(&[0u8; 32]);
    negatives.push(("identity R", v));
    let mut v = good.clone();
    v[9..41].copy_from_slice(&[0xff; 32]);
    negatives.push(("non-canonical R", v));
    let mut v = good.clone();
    let last = v.len() - 1;
    v[last] ^= 1;
    negatives.push(("tampered tag", v));
    let mut v = good.clone();
    v[41] ^= 1;
    negatives.push(("tampered ciphertext", v));
    negatives.push((
        "signature by another key",
        raw("neg sig", &mallory, None, 256, None),
    ));
    negatives.push((
        "nonzero padding",
        raw("neg pad", &alice, None, 256, Some((255, 1))),
    ));
    negatives.push((
        "bundle over the maximum",
        raw("neg max", &alice, Some(257), 8192, None),
    ));
    negatives.push((
        "wrong padding class",
        raw("neg class", &alice, None, 1024, None),
    ));
    let mut negative = Vec::new();
    for (name, bytes) in negatives {
        let mut c = EmbeddedCustodian::new(
            MasterSecret::from_bytes(master),
            ctx.sequencer.public_key(),
            SCHEDULE,
        );
        let t = MerkleTree::from_commitments(vec![Commitment::of(&bytes)]).unwrap();
        let key = c
            .release(
                &ctx.sequencer.sign_seal(BatchId(e), &t),
                SCHEDULE.close_ms(BatchId(e)).unwrap(),
            )
            .unwrap();
        let rejection = key.open(&bytes).unwrap_err();
        negative.push(json!({
            "name": name,
            "envelope": h(&bytes),
            "rejection_code": rejection.code(),
            "rejection": format!("{rejection:?}"),
        }));
    }

    // Batch rules (batch 1): a replayed envelope and two distinct envelopes
    // with one (account, nonce); outcomes in sorted-commitment order.
    let rules_e = 1u64;
    let (_, x0) = envelope_vector(&ctx, "erin", BatchId(rules_e), 3, &orders(2, 5));
    let erin = SigningKey::from_bytes(&seed("erin account"));
    let x1 = seal_bundle_with_ephemeral(
        &scalar("erin second r"),
        &erin,
        &ctx.deployment,
        BatchId(rules_e),
        &ctx.custodian.public_key(BatchId(rules_e)).unwrap(),
        3,
        &orders(1, 6),
    )
    .unwrap()
    .into_bytes();
    let (_, y0) = envelope_vector(&ctx, "frank", BatchId(rules_e), 0, &orders(3, 7));
    let rules_input = vec![y0.clone(), x0.clone(), y0.clone(), x1.clone()];
    let rules_tree =
        MerkleTree::from_commitments(rules_input.iter().map(|b| Commitment::of(b)).collect())
            .unwrap();
    let rules_seal = ctx.sequencer.sign_seal(BatchId(rules_e), &rules_tree);
    let rules_key = EmbeddedCustodian::new(
        MasterSecret::from_bytes(master),
        ctx.sequencer.public_key(),
        SCHEDULE,
    )
    .release(&rules_seal, SCHEDULE.close_ms(BatchId(rules_e)).unwrap())
    .unwrap();
    let rules_opened = open_batch(&rules_key, &rules_input).unwrap();
    let batch_rules = json!({
        "e": rules_e,
        "input": rules_input.iter().map(|b| h(b)).collect::<Vec<_>>(),
        "seal": h(&rules_seal.to_bytes()),
        "outcomes": rules_opened.envelopes.iter().map(|o| json!({
            "commitment": h(&o.commitment.0),
            "input_index": o.input_index,
            "rejection_code": o.outcome.as_ref().err().map(|r| r.code()),
            "nonce": o.outcome.as_ref().ok().map(|b| b.nonce),
        })).collect::<Vec<_>>(),
    });

    // The batch's envelopes receipted together: one group, one signature,
    // a path each (in the order the sequencer receipted them: here the
    // envelopes' order in the file).
    let entries: Vec<_> = envs
        .iter()
        .map(|v| (BatchId(e), Commitment(arr32(&v["commitment"]))))
        .collect();
    let group = ctx.sequencer.sign_receipts(&entries).unwrap();
    let first = group.receipt(0).unwrap();
    let receipt_group = json!({
        "entries": entries.iter().map(|(e, c)| json!({"e": e, "commitment": h(&c.0)})).collect::<Vec<_>>(),
        "leaves": entries.iter().map(|(e, c)| h(&receipt_leaf(*e, c))).collect::<Vec<_>>(),
        "count": first.count,
        "root": h(&first.root.0),
        "group_message": h(&receipt_group_message(first.count, &first.root)),
        "receipts": (0..group.len() as u32).map(|i| h(&group.receipt(i).unwrap().to_bytes())).collect::<Vec<_>>(),
    });

    let doc = json!({
        "batch_rules": batch_rules,
        "about": "sealbatch envelope format v1 test vectors; see spec/envelope.md. All hex is lowercase; integers are JSON numbers. Secrets come from seed(label) = blake3(label) and ephemeral scalars from wide_reduce(blake3_xof(label)[..64]); regenerate with SEALBATCH_WRITE_VECTORS=1 cargo test --test logic -- envelope_vectors::.",
        "schedule": { "genesis_ms": SCHEDULE.genesis_ms, "batch_length_ms": SCHEDULE.batch_length_ms },
        "deployment_id": h(&ctx.deployment.0),
        "master_secret": h(&master),
        "batch_keys": batch_keys,
        "sequencer": {
            "seed": h(&sequencer_seed),
            "public_key": h(&ctx.sequencer.public_key().to_bytes()),
        },
        "envelopes": envs,
        "seal": {
            "e": e,
            "count": tree.count(),
            "sorted_commitments": tree.leaves().iter().map(|c| h(&c.0)).collect::<Vec<_>>(),
            "root": h(&tree.root().0),
            "seal_message": h(&seal_message(BatchId(e), tree.count(), &tree.root())),
            "seal": h(&seal.to_bytes()),
            "proofs": proofs,
        },
        "receipt_group": receipt_group,
        "merkle": merkle,
        "negative": negative,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap();
    s.push('\n');
    s
}

#[test]
fn vectors_reproduce_byte_for_byte() {
    let generated = generate();
    if std::env::var_os("SEALBATCH_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(PATH).parent().unwrap()).unwrap();
        std::fs::write(PATH, &generated).unwrap();
    }
    let stored = std::fs::read_to_string(PATH).expect("spec/test-vectors/envelope-v1.json");
    assert!(stored == generated, "code no longer reproduces {PATH}");
}

/// Uses the stored file as another implementation would: published keys,
/// the seal, the envelopes and the rejections.
#[test]
fn vectors_open_as_published() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let sequencer =
        SequencerPublicKey::from_bytes(&arr32(&doc["sequencer"]["public_key"])).unwrap();
    // The deployment id every bundle signature binds, recomputed from the
    // sequencer key and the schedule.
    assert_eq!(
        h(&DeploymentId::of(&sequencer, &SCHEDULE).0),
        doc["deployment_id"].as_str().unwrap()
    );
    let seal = SignedSeal::from_bytes(&un(&doc["seal"]["seal"])).unwrap();
    seal.verify(&sequencer).unwrap();
    let e = seal.e;
    // The group receipts: one signature over the root, a path each; the
    // group's signature is checked once.
    let group = &doc["receipt_group"];
    let mut checker = ReceiptChecker::new(sequencer);
    for (i, bytes) in group["receipts"].as_array().unwrap().iter().enumerate() {
        let bytes = un(bytes);
        let receipt = Receipt::from_bytes(&bytes).unwrap();
        assert_eq!(receipt.proof.index as usize, i);
        assert_eq!(h(&receipt.root.0), group["root"].as_str().unwrap());
        assert_eq!(u64::from(receipt.count), group["count"].as_u64().unwrap());
        let entry = &group["entries"][i];
        assert_eq!(receipt.e, entry["e"].as_u64().unwrap());
        assert_eq!(
            h(&receipt.commitment.0),
            entry["commitment"].as_str().unwrap()
        );
        checker.check(&receipt).unwrap();
        receipt.verify(&sequencer).unwrap();
        // Any byte of the path or the statement changed: refused.
        for at in [0, 8, 40, 44, 76, 140, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            let refused = Receipt::from_bytes(&bad).map_or(true, |r| r.verify(&sequencer).is_err());
            assert!(refused, "receipt {i} with byte {at} flipped");
        }
    }
    let bk = doc["batch_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["e"] == e.get())
        .unwrap();
    let public = BatchPublicKey::from_bytes(&arr32(&bk["S_e"])).unwrap();
    let mut custodian =
        PublishedKeyCustodian::new(e, &arr32(&bk["s_e"]), &public, sequencer, SCHEDULE).unwrap();
    let key = custodian
        .release(&seal, SCHEDULE.close_ms(e).unwrap())
        .unwrap();
    let envs: Vec<Vec<u8>> = doc["envelopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| un(&v["envelope"]))
        .collect();
    let opened = open_batch(&key, &envs).unwrap();
    for v in doc["envelopes"].as_array().unwrap() {
        let c = Commitment(arr32(&v["commitment"]));
        assert_eq!(check_shape(&un(&v["envelope"]), e), Ok(c));
        let receipt = Receipt::from_bytes(&un(&v["receipt"])).unwrap();
        receipt.verify(&sequencer).unwrap();
        assert_eq!(
            receipt.root.0,
            arr32(&v["receipt_leaf"]),
            "a group of one: its root is its leaf"
        );
        let o = opened.envelopes.iter().find(|o| o.commitment == c).unwrap();
        let b = o.outcome.as_ref().unwrap();
        assert_eq!(b.nonce, v["nonce"].as_u64().unwrap());
        assert_eq!(b.orders.len(), v["orders"].as_array().unwrap().len());
        for p in doc["seal"]["proofs"].as_array().unwrap() {
            if p["commitment"] == v["commitment"] {
                let proof = InclusionProof::from_bytes(&un(&p["proof"])).unwrap();
                seal.verify_inclusion(&sequencer, &receipt, &proof).unwrap();
            }
        }
    }
    // Batch rules: same outcomes from the published key of batch 1.
    let rules = &doc["batch_rules"];
    let re = rules["e"].as_u64().unwrap();
    let rbk = doc["batch_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["e"] == re)
        .unwrap();
    let rseal = SignedSeal::from_bytes(&un(&rules["seal"])).unwrap();
    let rkey = PublishedKeyCustodian::new(
        BatchId(re),
        &arr32(&rbk["s_e"]),
        &BatchPublicKey::from_bytes(&arr32(&rbk["S_e"])).unwrap(),
        sequencer,
        SCHEDULE,
    )
    .unwrap()
    .release(&rseal, SCHEDULE.close_ms(BatchId(re)).unwrap())
    .unwrap();
    let rinput: Vec<Vec<u8>> = rules["input"].as_array().unwrap().iter().map(un).collect();
    let ropened = open_batch(&rkey, &rinput).unwrap();
    let want = rules["outcomes"].as_array().unwrap();
    assert_eq!(ropened.envelopes.len(), want.len());
    for (o, w) in ropened.envelopes.iter().zip(want) {
        assert_eq!(h(&o.commitment.0), w["commitment"].as_str().unwrap());
        assert_eq!(o.input_index as u64, w["input_index"].as_u64().unwrap());
        match &o.outcome {
            Ok(b) => assert_eq!(Some(b.nonce), w["nonce"].as_u64()),
            Err(r) => assert_eq!(Some(u64::from(r.code())), w["rejection_code"].as_u64()),
        }
    }

    for n in doc["negative"].as_array().unwrap() {
        let bytes = un(&n["envelope"]);
        let r = key.open(&bytes).unwrap_err();
        assert_eq!(u64::from(r.code()), n["rejection_code"].as_u64().unwrap());
    }
}
