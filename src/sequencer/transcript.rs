//! Batch transcripts: one batch, self-contained, checkable without the
//! journal (`spec/sequencer.md`, "Batch transcript").
//!
//! A transcript holds the deployment's genesis, the batch's envelopes, its
//! signed seal, the published outcome (with `s_e`), and the state the batch
//! was processed against: every market's reference price and every balance
//! of the accounts whose bundles opened, plus the fee account.
//! [`verify_transcript`] checks the seal, re-opens every envelope with the
//! published key, re-runs funding, clearing and settlement from that state
//! and compares the outcome byte for byte.
//!
//! What it cannot check alone is the starting state, which the sequencer
//! states: [`verify_journal`](super::verify_journal) derives it from genesis.
//! A transcript that leaves out a balance cannot make a batch verify that
//! would not: funding would then reject the bundle and the outcome differ.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::{
    Commitment, ENVELOPE_LEN_MAX, ENVELOPES_PER_BATCH_MAX, SEAL_LEN, SignedSeal,
};
use crate::ledger::Ledger;
use crate::market::{AccountId, AssetId};
use crate::types::{BatchId, MarketId, Tick};

use super::batch::{BatchOutcome, apply_outcome};
use super::config::Genesis;
use super::record::{
    decode_balances, decode_genesis_blob, decode_references, encode_balances, encode_genesis_blob,
    encode_references,
};
use super::rederive::{check_seal, compare, rederive};
use crate::keyper::{Committee, WindowCertificate};

/// Layout tag at the start of a transcript file.
pub const TRANSCRIPT_TAG: [u8; 8] = *b"SBTRSCR2";

/// The tag of a transcript written before transcripts carried the keyper
/// committee (read as one of the embedded custodian's batches).
pub const TRANSCRIPT_TAG_V1: [u8; 8] = *b"SBTRSCR1";

/// Balances a transcript may list: enough for every account of a full batch
/// in every asset of the largest configuration.
const BALANCES_MAX: usize = 1 << 28;

/// Everything needed to re-derive one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The deployment's fixed parameters.
    pub genesis: Genesis,
    /// Every market's reference price before the batch, ascending by market.
    pub references: Vec<(MarketId, Tick)>,
    /// Before the batch: every non-zero balance of the accounts whose bundles
    /// opened and of the fee account, ascending by (account, asset).
    pub balances: Vec<(AccountId, AssetId, u64)>,
    /// The batch's envelopes, ascending by commitment.
    pub envelopes: Vec<Vec<u8>>,
    /// The signed seal.
    pub seal: SignedSeal,
    /// The published outcome, with the released batch secret (and, under
    /// a committee, the keypers' release attestations).
    pub outcome: BatchOutcome,
    /// Under a keyper committee: the committee and the certificate of the
    /// window holding the batch, so `s_e` is checked against its certified
    /// key and the attestations against the members. `None`: the embedded
    /// custodian (trusted-operator mode).
    pub committee: Option<(Committee, WindowCertificate)>,
}

/// Why a transcript does not verify, or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// The bytes do not follow the layout.
    #[error("transcript: {0}")]
    Decode(#[from] DecodeError),
    /// The batch does not re-derive to the stated outcome.
    #[error("batch {e}: {reason}")]
    Mismatch {
        /// The batch.
        e: BatchId,
        /// The first mismatch.
        reason: String,
    },
}

impl Transcript {
    /// The batch.
    #[must_use]
    pub fn batch(&self) -> BatchId {
        self.seal.e
    }
}

impl Decode for Transcript {
    /// A whole transcript is its container (a file, a frame, a blob): it
    /// takes the rest of `r`.
    fn decode_from(r: &mut Reader<'_>) -> Result<Transcript, DecodeError> {
        let rest = r.bytes(r.remaining(), "transcript")?;
        Self::from_bytes(rest)
    }

    /// Decodes [`encode_into`](Encode::encode_into).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field and offset.
    fn from_bytes(bytes: &[u8]) -> Result<Transcript, DecodeError> {
        let mut r = Reader::new(bytes);
        let offset = r.offset();
        let tag = r.array::<8>("tag")?;
        if tag != TRANSCRIPT_TAG && tag != TRANSCRIPT_TAG_V1 {
            return Err(r.invalid("tag", offset));
        }
        let genesis = decode_genesis_blob(&mut r)?;
        let references = decode_references(&mut r)?;
        let balances = decode_balances(&mut r, BALANCES_MAX)?;
        let count = r.count("envelope count", ENVELOPES_PER_BATCH_MAX)?;
        let envelopes = (0..count)
            .map(|_| Ok(r.blob("envelope", ENVELOPE_LEN_MAX)?.to_vec()))
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let offset = r.offset();
        let seal = SignedSeal::from_bytes(r.bytes(SEAL_LEN, "seal")?)
            .map_err(|_| r.invalid("seal", offset))?;
        let outcome = BatchOutcome::decode_from(&mut r)?;
        let committee = if tag == TRANSCRIPT_TAG_V1 {
            None
        } else {
            let offset = r.offset();
            match r.u8("committee flag")? {
                0 => None,
                1 => Some((
                    Committee::decode_from(&mut r)?,
                    WindowCertificate::decode_from(&mut r)?,
                )),
                _ => return Err(r.invalid("committee flag", offset)),
            }
        };
        r.finish()?;
        Ok(Transcript {
            genesis,
            references,
            balances,
            envelopes,
            seal,
            outcome,
            committee,
        })
    }
}

impl Encode for Transcript {
    /// The canonical encoding.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&TRANSCRIPT_TAG);
        encode_genesis_blob(&self.genesis, out);
        encode_references(&self.references, out);
        encode_balances(&self.balances, out);
        // At most ENVELOPES_PER_BATCH_MAX, far below u32::MAX.
        out.put_u32(self.envelopes.len() as u32);
        for envelope in &self.envelopes {
            out.put_blob(envelope);
        }
        out.extend_from_slice(&self.seal.to_bytes());
        self.outcome.encode_into(out);
        match &self.committee {
            None => out.put_u8(0),
            Some((committee, certificate)) => {
                out.put_u8(1);
                out.extend_from_slice(&committee.to_bytes());
                certificate.encode_into(out);
            }
        }
    }
}

/// Builds the transcript of a batch from the state it was processed against
/// (`ledger`, `references`) and its records. Re-opens the envelopes with the
/// published key to find the accounts whose balances it must carry.
///
/// # Errors
///
/// The first problem, as [`verify_transcript`] would report it.
pub fn build_transcript(
    genesis: &Genesis,
    ledger: &Ledger,
    references: &BTreeMap<MarketId, Tick>,
    seal: SignedSeal,
    envelopes: &[Vec<u8>],
    outcome: &BatchOutcome,
    committee: Option<(Committee, WindowCertificate)>,
) -> Result<Transcript, TranscriptError> {
    let e = seal.e;
    let mismatch = |reason: String| TranscriptError::Mismatch { e, reason };
    let (_, accounts) = rederive(
        genesis,
        &seal,
        envelopes,
        outcome,
        ledger,
        &genesis.market_map(),
        references,
    )
    .map_err(mismatch)?;
    Ok(transcript_of(
        genesis, ledger, references, seal, envelopes, outcome, accounts, committee,
    ))
}

/// The transcript, given the accounts whose bundles opened.
#[allow(clippy::too_many_arguments)]
pub(super) fn transcript_of(
    genesis: &Genesis,
    ledger: &Ledger,
    references: &BTreeMap<MarketId, Tick>,
    seal: SignedSeal,
    envelopes: &[Vec<u8>],
    outcome: &BatchOutcome,
    mut accounts: BTreeSet<AccountId>,
    committee: Option<(Committee, WindowCertificate)>,
) -> Transcript {
    accounts.insert(genesis.fee_account);
    let balances = accounts
        .iter()
        .flat_map(|account| {
            ledger
                .balances_of(account)
                .into_iter()
                .map(move |(asset, amount)| (*account, asset, amount))
        })
        .collect();
    let mut sorted: Vec<(Commitment, Vec<u8>)> = envelopes
        .iter()
        .map(|bytes| (Commitment::of(bytes), bytes.clone()))
        .collect();
    sorted.sort();
    Transcript {
        genesis: genesis.clone(),
        references: references.iter().map(|(&m, &p)| (m, p)).collect(),
        balances,
        envelopes: sorted.into_iter().map(|(_, bytes)| bytes).collect(),
        seal,
        outcome: outcome.clone(),
        committee,
    }
}

/// The clearing input of a transcript's batch, as the sequencer built it
/// (opened with the published secret, funded against the transcript's
/// starting balances), and its tie-break seed: what `bench clearing
/// --input` replays. The transcript is not verified here (see
/// [`verify_transcript`]).
///
/// # Errors
///
/// [`TranscriptError::Mismatch`] if its envelopes do not open, or its
/// balances or genesis are not usable.
pub fn transcript_clearing_input(
    t: &Transcript,
) -> Result<(Vec<crate::clearing::MarketInput>, [u8; 32]), TranscriptError> {
    let e = t.batch();
    let mismatch = |reason: String| TranscriptError::Mismatch { e, reason };
    t.genesis
        .validate()
        .map_err(|err| mismatch(format!("genesis: {err}")))?;
    let markets = t.genesis.market_map();
    let references: BTreeMap<MarketId, Tick> = t.references.iter().copied().collect();
    let mut ledger = Ledger::new(t.genesis.fee_account);
    for &(account, asset, amount) in &t.balances {
        ledger
            .deposit(account, asset, amount)
            .map_err(|err| mismatch(format!("balance: {err}")))?;
    }
    let opened =
        super::rederive::open_published(&t.genesis, &t.seal, &t.envelopes, &t.outcome.batch_secret)
            .map_err(mismatch)?;
    Ok(super::batch::clearing_input(
        &opened,
        &ledger,
        &markets,
        &references,
        t.genesis.orders_per_account_per_batch_max,
    ))
}

/// A verified transcript's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptSummary {
    /// The batch.
    pub e: BatchId,
    /// Its envelopes.
    pub envelopes: usize,
    /// Orders filled.
    pub fills: usize,
    /// Balances the transcript started from.
    pub balances: usize,
    /// Under a keyper committee: its id, its threshold and the keypers
    /// whose attestations of the seal the result carries (all checked).
    /// `None`: the embedded custodian.
    pub released_by: Option<([u8; 32], usize, Vec<u16>)>,
}

/// Checks a transcript without trusting the sequencer: the genesis
/// configuration, the seal's signature and Merkle root, the published key,
/// the opening of every envelope, funding, clearing and settlement from the
/// stated starting state, and the outcome's bytes.
///
/// # Errors
///
/// [`TranscriptError::Mismatch`] with the first problem found.
pub fn verify_transcript(t: &Transcript) -> Result<TranscriptSummary, TranscriptError> {
    let e = t.batch();
    let mismatch = |reason: String| TranscriptError::Mismatch { e, reason };
    t.genesis
        .validate()
        .map_err(|err| mismatch(format!("genesis: {err}")))?;
    let markets = t.genesis.market_map();
    if t.outcome.e != e {
        return Err(mismatch(format!("the outcome is of batch {}", t.outcome.e)));
    }
    let references: BTreeMap<MarketId, Tick> = t.references.iter().copied().collect();
    if references.len() != t.references.len()
        || references.keys().ne(markets.keys())
        || !t.references.is_sorted_by_key(|&(m, _)| m)
    {
        return Err(mismatch(
            "reference prices must list every configured market once, ascending".into(),
        ));
    }
    let commitments: Vec<Commitment> = t.envelopes.iter().map(|b| Commitment::of(b)).collect();
    if !commitments.windows(2).all(|w| w[0] < w[1]) {
        return Err(mismatch(
            "envelopes must be strictly ascending by commitment".into(),
        ));
    }
    let mut ledger = Ledger::new(t.genesis.fee_account);
    let mut previous: Option<(AccountId, AssetId)> = None;
    for &(account, asset, amount) in &t.balances {
        if previous.is_some_and(|p| p >= (account, asset)) || amount == 0 {
            return Err(mismatch(
                "balances must be non-zero and strictly ascending by (account, asset)".into(),
            ));
        }
        previous = Some((account, asset));
        ledger
            .deposit(account, asset, amount)
            .map_err(|err| mismatch(format!("balance: {err}")))?;
    }
    check_seal(&t.genesis, &t.seal, &t.envelopes).map_err(mismatch)?;
    let released_by = match &t.committee {
        None => None,
        Some((committee, certificate)) => {
            if *committee.deployment() != t.genesis.deployment() {
                return Err(mismatch(format!(
                    "the committee is bound to deployment {}, the genesis makes {}",
                    committee.deployment(),
                    t.genesis.deployment()
                )));
            }
            if !certificate.verify(committee) {
                return Err(mismatch(
                    "the window certificate does not verify for the committee".into(),
                ));
            }
            if !certificate.window.contains(e) {
                return Err(mismatch(
                    "the certificate's window does not hold the batch".into(),
                ));
            }
            let mut certified_map = BTreeMap::new();
            certified_map.insert(certificate.window.first_batch, certificate.clone());
            super::rederive::check_committee_key(&certified_map, e, &t.outcome.batch_secret)
                .map_err(mismatch)?;
            super::rederive::check_released(committee, &t.seal, &t.outcome).map_err(mismatch)?;
            Some((
                committee.id(),
                committee.threshold(),
                t.outcome.release.iter().map(|a| a.keyper).collect(),
            ))
        }
    };
    let (again, _) = rederive(
        &t.genesis,
        &t.seal,
        &t.envelopes,
        &t.outcome,
        &ledger,
        &markets,
        &references,
    )
    .map_err(mismatch)?;
    compare(&t.outcome, &again).map_err(mismatch)?;
    let mut references = references;
    apply_outcome(&t.outcome, &mut ledger, &markets, &mut references)
        .map_err(|err| mismatch(format!("settlement: {err}")))?;
    Ok(TranscriptSummary {
        e,
        envelopes: t.envelopes.len(),
        fills: t.outcome.fills.len(),
        balances: t.balances.len(),
        released_by,
    })
}
