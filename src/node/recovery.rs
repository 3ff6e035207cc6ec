//! Start-up from the data directory: open the journal, find the newest
//! usable checkpoint, settle the genesis (the journal's, or this
//! configuration's for a fresh journal), and replay into a [`Sequencer`].

use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::envelope::{BatchSchedule, EmbeddedCustodian, MasterSecret, SequencerKey};
use crate::journal::{
    Faults, FaultyStorage, FsStorage, Journal, JournalConfig, JournalError, Storage,
    read_checkpoints,
};
use crate::market::AccountId;
use crate::sequencer::{
    Checkpoint, Genesis, Journaled, OpToken, Sequencer, SequencerError, SequencerRecord,
};

use crate::secret_file::load_or_create_key32;

use super::keys::demo_accounts;
use super::{CUSTODIAN_KEY_FILE, JOURNAL_DIR, NodeConfig, NodeError, NodeStorage, io, now_ms};

/// Units of every configured asset each demo account starts with.
const DEMO_BALANCE: u64 = 1_000_000_000_000;

/// A sequencer recovered from its journal, with the journal, ready to run.
pub(super) struct Recovered {
    pub(super) journal: Journal<NodeStorage>,
    pub(super) sequencer: Sequencer,
}

/// Opens the journal in the data directory and replays it (from the newest
/// usable checkpoint) into a sequencer; a fresh journal starts from this
/// configuration's genesis and, in demo mode, funds the demo accounts.
///
/// # Errors
///
/// [`NodeError`]: the journal cannot be read or is damaged, the configuration
/// contradicts the journal's genesis, or the sequencer refuses the journal.
pub(super) fn recover(
    config: &NodeConfig,
    key_seed: &[u8; 32],
    faults: Option<Arc<Faults>>,
) -> Result<Recovered, NodeError> {
    let data = &config.data_dir;
    let key = SequencerKey::from_seed(key_seed);
    // The journal is replayed as it is read, one segment at a time.
    let replay_started = Instant::now();
    let journal_dir = data.join(JOURNAL_DIR);
    let storage = FsStorage::new(&journal_dir).map_err(io(&journal_dir))?;
    let (journal, recovery) = Journal::open_streaming(
        FaultyStorage::new(storage, faults),
        JournalConfig::default(),
    )?;
    if let Some(cut) = &recovery.truncation {
        tracing::warn!(
            path = %cut.path.display(),
            offset = cut.offset,
            bytes = cut.bytes_cut,
            "journal: cut a torn tail"
        );
    }
    let segment_count = recovery.segments;
    let checkpoint = latest_checkpoint(&mut journal.storage().clone())?;
    let mut records = match &checkpoint {
        Some(checkpoint) => recovery.records.skip_below(checkpoint.replay_from),
        None => recovery.records,
    }
    .until_damage();
    // Without a checkpoint the genesis is the journal's first record.
    let first = if checkpoint.is_none() {
        records.next()
    } else {
        None
    };
    if let Some(damage) = records.take_damage() {
        return Err(damage.into());
    }

    let recorded = match (&checkpoint, &first) {
        (Some(checkpoint), _) => Some(checkpoint.genesis.clone()),
        (None, Some((lsn, kind, payload))) => match SequencerRecord::decode(*kind, payload) {
            Ok(SequencerRecord::Genesis(g)) => Some(g),
            Ok(_) => return Err(SequencerError::NoGenesis(*lsn).into()),
            Err(source) => return Err(SequencerError::Record { lsn: *lsn, source }.into()),
        },
        (None, None) => None,
    };
    let fresh = recorded.is_none();
    let genesis = settle_genesis(config, &key, recorded)?;

    // Under a keyper committee no operator secret exists: the node starts
    // with no key at all, and the journal's committee record (replayed, or
    // written below for a fresh journal) brings the committee's custodian.
    // A journal that names a committee keeps it even when the configuration
    // no longer does.
    let committee = config
        .committee
        .as_ref()
        .map(super::config::CommitteeConfig::committee)
        .transpose()?;
    let custodian: Box<dyn crate::envelope::KeyCustodian + Send> = if committee.is_some() {
        Box::new(crate::keyper::NoKeyCustodian)
    } else {
        let master = load_or_create_key32(&data.join(CUSTODIAN_KEY_FILE), || {
            Zeroizing::new(*MasterSecret::generate(&mut rand_core::OsRng).as_bytes())
        })?;
        Box::new(EmbeddedCustodian::new(
            MasterSecret::from_bytes(*master),
            key.public_key(),
            genesis.schedule,
        ))
    };
    let checkpoint_lsn = checkpoint.as_ref().map(|c| c.lsn);
    let sequencer = Sequencer::recover(
        genesis,
        config.sequencer_limits(),
        key,
        custodian,
        Journaled {
            checkpoint,
            records: first.into_iter().chain(&mut records),
            next_lsn: journal.next_lsn(),
        },
        now_ms(),
    );
    // Damage met while replaying stops the process like damage found when
    // opening: it is reported before anything the replay built is used.
    if let Some(damage) = records.take_damage() {
        return Err(damage.into());
    }
    let mut sequencer = sequencer?;
    if let Some((committee, params)) = committee {
        sequencer.start_committee(committee, params)?;
    }
    match sequencer.committee() {
        Some(committee) => tracing::info!(
            committee = %hex::encode(committee.id()),
            keypers = committee.size(),
            threshold = committee.threshold(),
            "batch keys held by a keyper committee"
        ),
        None => tracing::warn!(
            "trusted-operator mode: batch keys come from custodian.key in the data directory, which whoever runs this node can read; configure a [committee] of keypers to remove that trust"
        ),
    }
    tracing::info!(
        records = records.records_read(),
        segments = segment_count,
        checkpoint = checkpoint_lsn.unwrap_or(0),
        ms = replay_started.elapsed().as_millis() as u64,
        "journal replayed"
    );
    if fresh && config.demo {
        fund_demo_accounts(config, &mut sequencer)?;
    }
    Ok(Recovered { journal, sequencer })
}

/// The genesis to run with: the journal's (`recorded`) if it has one, which
/// this configuration must agree with except for the genesis time; else
/// this configuration's, starting at the current batch boundary.
fn settle_genesis(
    config: &NodeConfig,
    key: &SequencerKey,
    recorded: Option<Genesis>,
) -> Result<Genesis, NodeError> {
    let mut markets = config.markets.clone();
    markets.sort_by_key(|m| m.id);
    let configured = Genesis {
        sequencer: key.public_key(),
        schedule: BatchSchedule {
            genesis_ms: now_ms() / config.batch_length_ms * config.batch_length_ms,
            batch_length_ms: config.batch_length_ms,
        },
        fee_account: AccountId([0; 32]),
        orders_per_account_per_batch_max: config.orders_per_account_per_batch_max,
        markets,
    };
    let Some(recorded) = recorded else {
        return Ok(configured);
    };
    if recorded.markets != configured.markets {
        return Err(NodeError::GenesisChanged("markets"));
    }
    if recorded.schedule.batch_length_ms != configured.schedule.batch_length_ms {
        return Err(NodeError::GenesisChanged("batch_length_ms"));
    }
    if recorded.orders_per_account_per_batch_max != configured.orders_per_account_per_batch_max {
        return Err(NodeError::GenesisChanged(
            "orders_per_account_per_batch_max",
        ));
    }
    Ok(recorded)
}

/// Credits every demo account with [`DEMO_BALANCE`] of every asset (a fresh
/// journal in demo mode).
fn fund_demo_accounts(config: &NodeConfig, sequencer: &mut Sequencer) -> Result<(), NodeError> {
    for account in demo_accounts(&config.data_dir)? {
        let account = AccountId(account.verifying_key().to_bytes());
        for asset in &config.assets {
            // Token 0: the driver numbers its own operations from 1, so the
            // completion of these deposits is never taken for a client's.
            sequencer.handle_deposit(OpToken(0), account, asset.id, DEMO_BALANCE)?;
        }
    }
    Ok(())
}

/// The newest checkpoint in the journal directory that reads back and
/// decodes; damaged ones are skipped with a warning (an older one, or the
/// whole journal, is replayed instead).
///
/// # Errors
///
/// [`JournalError::Io`] reading the directory or a file.
fn latest_checkpoint(storage: &mut impl Storage) -> Result<Option<Checkpoint>, JournalError> {
    for found in read_checkpoints(storage)? {
        let name = found.name.clone();
        match Checkpoint::try_from(found) {
            Ok(checkpoint) => return Ok(Some(checkpoint)),
            Err(problem) => {
                tracing::warn!(file = %name, %problem, "checkpoint unusable, skipped");
            }
        }
    }
    Ok(None)
}
