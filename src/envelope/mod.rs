//! Sealed order envelopes: batch keys, sealing and opening bundles,
//! commitments, receipts, seals and inclusion proofs.
//!
//! The byte layouts and rules are normative in `spec/envelope.md`, with test
//! vectors in `spec/test-vectors/`. In short:
//!
//! - **Batch keys** ([`keys`]): batch `e` has a secret scalar `s_e` and a
//!   public ristretto255 point `S_e = s_e·G`, derived from a custodian master
//!   secret. [`KeyCustodian::public_key`] announces `S_e`;
//!   [`KeyCustodian::release`] hands out a [`ReleasedBatchKey`] only for a
//!   valid, signed [`SignedSeal`] of a closed batch. That is the only way to
//!   get one, and opening needs one.
//! - **Envelope** ([`seal_bundle`]): a hashed-ElGamal KEM on ristretto255
//!   (`R = r·G`, shared `r·S_e`), a blake3 KDF, ChaCha20-Poly1305 over a
//!   padded plaintext holding the account's Ed25519 key, a nonce, the orders
//!   and the account's signature over all of it and `e`.
//! - **Commitment, receipt, seal** ([`Commitment`], [`Receipt`],
//!   [`SignedSeal`]): the sequencer ([`SequencerKey`]) signs the receipts
//!   of one group commit at once ([`ReceiptGroup`]: one signature over the
//!   root of their leaves, a path each; [`ReceiptChecker`] checks a group's
//!   signature once) and a seal per batch over the [`MerkleTree`] of the
//!   sorted commitments; traders check [`InclusionProof`]s against the seal.
//! - **Opening** ([`open_batch`]): after release, every envelope opens in
//!   parallel to a [`VerifiedBundle`] or a typed [`Rejection`].
//!
//! The module is pure: time (`now_ms`, unix milliseconds) and randomness
//! (`rand_core::CryptoRngCore`) are arguments, so the same inputs give the
//! same bytes. It does no I/O: the node keeps the master secret in a
//! [`secret_file`](crate::secret_file).
//!
//! # Example: seal → receipt → seal → release → open
//!
//! ```
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//! use sealbatch::envelope::*;
//! use sealbatch::order::OrderSpec;
//! use sealbatch::types::{BatchId, MarketId, Side, Tick};
//!
//! let mut rng = ChaCha20Rng::seed_from_u64(7);
//! let sequencer = SequencerKey::generate(&mut rng);
//! let schedule = BatchSchedule { genesis_ms: 1_000, batch_length_ms: 100 };
//! let mut custodian = EmbeddedCustodian::new(
//!     MasterSecret::generate(&mut rng),
//!     sequencer.public_key(),
//!     schedule,
//! );
//!
//! // A trader seals a bundle to batch 3's announced key, signed for this
//! // deployment (the sequencer's key and batch clock).
//! let deployment = DeploymentId::of(&sequencer.public_key(), &schedule);
//! let e = BatchId(3);
//! let batch_key = custodian.public_key(e)?;
//! let account = generate_account_key(&mut rng);
//! let orders = [OrderSpec {
//!     market: MarketId(1),
//!     side: Side::Buy,
//!     limit: Some(Tick(101)),
//!     qty: 5,
//!     client_order_id: 42,
//! }];
//! let envelope = seal_bundle(&mut rng, &account, &deployment, e, &batch_key, 0, &orders)?;
//!
//! // The sequencer checks its shape, journals it, and signs its receipt (here
//! // alone: a group of one; `sign_receipts` signs a group commit's at once).
//! let commitment = check_shape(envelope.as_bytes(), e)?;
//! let receipt = sequencer.sign_receipt(e, &commitment);
//! receipt.verify(&sequencer.public_key())?;
//!
//! // At close: the seal over the sorted commitments.
//! let tree = MerkleTree::from_commitments(vec![commitment])?;
//! let seal = sequencer.sign_seal(e, &tree);
//!
//! // Too early: the custodian refuses. After close it releases the key.
//! let close_ms = schedule.close_ms(e).unwrap();
//! assert!(custodian.release(&seal, close_ms - 1).is_err());
//! let key = custodian.release(&seal, close_ms)?;
//!
//! // Open the whole batch.
//! let opened = open_batch(&key, &[envelope])?;
//! let bundle = opened.envelopes[0].outcome.as_ref().unwrap();
//! assert_eq!(bundle.orders, orders);
//! assert_eq!(bundle.account, AccountId(account.verifying_key().to_bytes()));
//!
//! // The trader checks inclusion against the seal.
//! let proof = tree.proof(tree.position(&commitment).unwrap()).unwrap();
//! seal.verify_inclusion(&sequencer.public_key(), &receipt, &proof)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bundle;
mod cofactored;
pub mod custodian;
pub mod keys;
pub mod layout;
pub mod merkle;
pub mod receipt;

pub use bundle::{
    AccountId, Envelope, OpenError, OpenedBatch, OpenedEnvelope, Rejection, ShapedEnvelope,
    VerifiedBundle, check_shape, header_batch, kem_key, open_batch, open_shaped_batch, seal_bundle,
    seal_bundle_with, seal_bundle_with_ephemeral, seal_raw_plaintext,
};
pub use custodian::{
    BatchSchedule, CustodianError, DeploymentId, EmbeddedCustodian, KeyCustodian,
    PublishedKeyCustodian, RELEASED_REMEMBERED_MAX,
};
pub use keys::{
    BatchPublicKey, KeyError, MasterSecret, ReleaseAttestation, ReleasedBatchKey, SealStatement,
    SealingKey,
};
pub use layout::{BundleError, ENVELOPE_LEN_MAX, ENVELOPE_LEN_MIN, Malformed, VERSION};
pub use merkle::{
    Commitment, ENVELOPES_PER_BATCH_MAX, InclusionProof, MerkleError, MerkleRoot, MerkleTree,
    PROOF_DEPTH_MAX, merkle_root,
};
pub use receipt::{
    ProofError, RECEIPT_GROUP_MAX, RECEIPT_LEN_MAX, RECEIPT_LEN_MIN, RECEIPT_PROOF_DEPTH_MAX,
    Receipt, ReceiptChecker, ReceiptGroup, SEAL_LEN, SequencerKey, SequencerPublicKey, SignedSeal,
    generate_account_key,
};
