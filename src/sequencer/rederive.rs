//! Re-deriving one batch from what was published: its seal against its
//! envelopes, its envelopes opened with the published key, funding,
//! clearing and settlement run again, the outcome compared byte for byte,
//! and under a committee the key against its certificate and the release
//! attestations against the seal. `verify` runs it over a journal, a
//! transcript's check over one batch.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;

use crate::envelope::keys::decode_secret_scalar;
use crate::envelope::{
    BatchPublicKey, Commitment, KeyCustodian, MerkleTree, PublishedKeyCustodian, SignedSeal,
    open_batch,
};
use crate::keyper::WindowCertificate;
use crate::ledger::Ledger;
use crate::market::AccountId;
use crate::types::BatchId;

use super::batch::{BatchOutcome, apply_outcome, process_batch, void_outcome};
use super::config::Genesis;

pub(super) fn check_seal(
    genesis: &Genesis,
    seal: &SignedSeal,
    envelopes: &[Vec<u8>],
) -> Result<(), String> {
    seal.verify(&genesis.sequencer)
        .map_err(|error| format!("seal signature: {error}"))?;
    let commitments: Vec<Commitment> = envelopes.iter().map(|b| Commitment::of(b)).collect();
    let tree =
        MerkleTree::from_commitments(commitments).map_err(|error| format!("merkle: {error}"))?;
    if tree.count() != seal.count || tree.root() != seal.root {
        return Err(format!(
            "seal says {} envelopes with root {}, the journal holds {} with root {}",
            seal.count,
            hex::encode(seal.root.0),
            tree.count(),
            hex::encode(tree.root().0)
        ));
    }
    Ok(())
}

/// Re-opens `envelopes` with the outcome's published key and re-runs
/// funding and clearing: the re-derived outcome, and the accounts whose
/// bundles opened.
///
/// A journaled void outcome is re-derived as void exactly when opening,
/// processing or settling the batch fails here too (`spec/sequencer.md`,
/// "Void batches"); otherwise the normal outcome comes back and differs.
/// Opens a sealed batch's envelopes with its published secret, released
/// for its seal as any custodian would (signature, close time).
pub(super) fn open_published(
    genesis: &Genesis,
    seal: &SignedSeal,
    envelopes: &[Vec<u8>],
    batch_secret: &[u8; 32],
) -> Result<crate::envelope::OpenedBatch, String> {
    let e = seal.e;
    let scalar = decode_secret_scalar(batch_secret)
        .map_err(|err| format!("published batch secret: {err}"))?;
    let public_bytes = (&scalar * RISTRETTO_BASEPOINT_TABLE).compress().to_bytes();
    let public = BatchPublicKey::from_bytes(&public_bytes)
        .map_err(|err| format!("batch public key: {err}"))?;
    let mut custodian = PublishedKeyCustodian::new(
        e,
        batch_secret,
        &public,
        genesis.sequencer,
        genesis.schedule,
    )
    .map_err(|err| format!("published batch secret: {err}"))?;
    let close_ms = genesis.schedule.close_ms(e).unwrap_or(u64::MAX);
    let key = custodian
        .release(seal, close_ms)
        .map_err(|err| format!("release: {err}"))?;
    open_batch(&key, envelopes).map_err(|err| format!("opening: {err}"))
}

pub(super) fn rederive(
    genesis: &Genesis,
    seal: &SignedSeal,
    envelopes: &[Vec<u8>],
    outcome: &BatchOutcome,
    ledger: &Ledger,
    markets: &BTreeMap<crate::types::MarketId, crate::market::MarketConfig>,
    references: &BTreeMap<crate::types::MarketId, crate::types::Tick>,
) -> Result<(BatchOutcome, BTreeSet<AccountId>), String> {
    let e = seal.e;
    let attempt =
        open_published(genesis, seal, envelopes, &outcome.batch_secret).and_then(|opened| {
            let mut again = process_batch(
                &opened,
                outcome.batch_secret,
                ledger,
                markets,
                references,
                genesis.orders_per_account_per_batch_max,
            )
            .map_err(|err| err.to_string())?;
            // The attestations are published as journaled (checked by
            // `check_released` against the committee).
            again.release.clone_from(&outcome.release);
            if outcome.is_void() {
                // Would it have settled? Only asked of a void batch, so the
                // copy of the ledger costs nothing in the usual case.
                apply_outcome(
                    &again,
                    &mut ledger.clone(),
                    markets,
                    &mut references.clone(),
                )
                .map_err(|err| format!("settlement: {err}"))?;
            }
            let accounts = opened.accepted().map(|(_, b)| b.account).collect();
            Ok((again, accounts))
        });
    match attempt {
        Err(_) if outcome.is_void() => {
            let mut sorted: Vec<Commitment> = envelopes.iter().map(|b| Commitment::of(b)).collect();
            sorted.sort_unstable();
            sorted.dedup();
            let mut void = void_outcome(e, seal.root, outcome.batch_secret, &sorted, markets);
            void.release.clone_from(&outcome.release);
            Ok((void, BTreeSet::new()))
        }
        attempt => attempt,
    }
}

/// Whether `secret` is the secret of batch `e`'s certified key.
pub(super) fn check_committee_key(
    certified: &BTreeMap<BatchId, WindowCertificate>,
    e: BatchId,
    secret: &[u8; 32],
) -> Result<(), String> {
    let certified_key = certified
        .range(..=e)
        .next_back()
        .and_then(|(_, c)| c.key(e))
        .ok_or_else(|| format!("batch {e} has no key certified by the committee"))?;
    let scalar = decode_secret_scalar(secret).map_err(|err| format!("batch secret: {err}"))?;
    let public = (&scalar * RISTRETTO_BASEPOINT_TABLE).compress().to_bytes();
    if public == certified_key {
        Ok(())
    } else {
        Err(format!(
            "the published secret of batch {e} is not the secret of its certified key {}",
            hex::encode(certified_key)
        ))
    }
}

/// Whether `outcome` carries `t` keypers' attestations that they released
/// their shares for `seal` (`spec/keyper.md` §9): without them the key may
/// have been obtained for another seal.
pub(super) fn check_released(
    committee: &crate::keyper::Committee,
    seal: &SignedSeal,
    outcome: &BatchOutcome,
) -> Result<(), String> {
    let statement = crate::envelope::SealStatement {
        e: seal.e,
        count: seal.count,
        root: seal.root,
    };
    crate::keyper::check_attestations(committee, &statement, &outcome.release).map_err(|error| {
        format!(
            "batch {}: the committee did not release its key for this seal: {error}",
            seal.e
        )
    })
}

pub(super) fn compare(recorded: &BatchOutcome, again: &BatchOutcome) -> Result<(), String> {
    if recorded == again {
        return Ok(());
    }
    if recorded.root != again.root {
        return Err("result root differs from the seal".into());
    }
    for (i, (a, b)) in recorded.envelopes.iter().zip(&again.envelopes).enumerate() {
        if a != b {
            return Err(format!(
                "envelope {i} ({}): journaled {:?}, re-derived {:?}",
                hex::encode(a.commitment.0),
                a.status,
                b.status
            ));
        }
    }
    if recorded.envelopes.len() != again.envelopes.len() {
        return Err(format!(
            "journaled {} envelope outcomes, re-derived {}",
            recorded.envelopes.len(),
            again.envelopes.len()
        ));
    }
    for (a, b) in recorded.markets.iter().zip(&again.markets) {
        if a != b {
            return Err(format!(
                "market {}: journaled {a:?}, re-derived {b:?}",
                a.market
            ));
        }
    }
    for (a, b) in recorded.fills.iter().zip(&again.fills) {
        if a != b {
            return Err(format!("fill: journaled {a:?}, re-derived {b:?}"));
        }
    }
    Err("markets or fills differ in number".into())
}
