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
use crate::types::Lsn;

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
    let deployment = crate::envelope::DeploymentId::of(&genesis.sequencer, &genesis.schedule);
    let committee = config
        .committee
        .as_ref()
        .map(|c| c.committee(deployment))
        .transpose()
        .map_err(super::config::ConfigFileError::from)?;
    let custodian = custodian(config, &key, &genesis)?;
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
        checkpoint = checkpoint_lsn.unwrap_or(Lsn::NONE).get(),
        ms = replay_started.elapsed().as_millis() as u64,
        "journal replayed"
    );
    if fresh && config.demo {
        fund_demo_accounts(config, &mut sequencer)?;
    }
    Ok(Recovered { journal, sequencer })
}

/// Builds a replica's sequencer from its local journal, read-only (the
/// state machine writes it): the newest checkpoint and the records after
/// it, at least up to LSN `at_least` — waiting up to five seconds for the
/// journal's writer to put them in the files.
///
/// # Errors
///
/// [`NodeError`] as [`recover`], or a journal that does not reach
/// `at_least` in time.
pub(super) fn recover_replica(
    config: &NodeConfig,
    key_seed: &[u8; 32],
    at_least: crate::types::Lsn,
) -> Result<Sequencer, NodeError> {
    let journal_dir = config.data_dir.join(JOURNAL_DIR);
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (sequencer, next_lsn) = replica_from_journal(config, key_seed, &journal_dir)?;
        if next_lsn > at_least {
            return Ok(sequencer);
        }
        if Instant::now() > deadline {
            return Err(NodeError::Io {
                path: journal_dir,
                source: std::io::Error::other(format!(
                    "the journal ends before LSN {at_least}, which was committed"
                )),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn replica_from_journal(
    config: &NodeConfig,
    key_seed: &[u8; 32],
    journal_dir: &std::path::Path,
) -> Result<(Sequencer, crate::types::Lsn), NodeError> {
    let key = SequencerKey::from_seed(key_seed);
    let mut storage =
        crate::journal::ReadOnlyFsStorage::new(journal_dir).map_err(io(journal_dir))?;
    let checkpoint = latest_checkpoint(&mut storage)?;
    let recovery = Journal::open_read_only(storage, JournalConfig::default())?;
    let mut records = match &checkpoint {
        Some(checkpoint) => recovery.records.skip_below(checkpoint.replay_from),
        None => recovery.records,
    }
    .until_damage();
    let first = if checkpoint.is_none() {
        records.next()
    } else {
        None
    };
    let recorded = match (&checkpoint, &first) {
        (Some(checkpoint), _) => Some(checkpoint.genesis.clone()),
        (None, Some((lsn, kind, payload))) => match SequencerRecord::decode(*kind, payload) {
            Ok(SequencerRecord::Genesis(g)) => Some(g),
            Ok(_) => return Err(SequencerError::NoGenesis(*lsn).into()),
            Err(source) => return Err(SequencerError::Record { lsn: *lsn, source }.into()),
        },
        (None, None) => None,
    };
    let genesis = settle_genesis(config, &key, recorded)?;
    let custodian = custodian(config, &key, &genesis)?;
    // Records read up to a torn tail the writer is still writing: the
    // journal's next LSN here is one past the last whole record.
    let mut last = checkpoint
        .as_ref()
        .map_or(Lsn::NONE, |c| c.lsn.saturating_sub(1));
    let mut collected = Vec::new();
    collected.extend(first);
    for record in &mut records {
        collected.push(record);
    }
    // A torn tail of the last segment (the writer at work) is left out of
    // the stream by a read-only open, not reported as damage: damage here
    // is in a closed segment, and refused like any recovery's.
    if let Some(damage) = records.take_damage() {
        return Err(damage.into());
    }
    if let Some((lsn, _, _)) = collected.last() {
        last = last.max(*lsn);
    }
    let next_lsn = last + 1;
    let sequencer = Sequencer::recover_replica(
        genesis,
        config.sequencer_limits(),
        key,
        custodian,
        Journaled {
            checkpoint,
            records: collected,
            next_lsn,
        },
        now_ms(),
    )?;
    Ok((sequencer, next_lsn))
}

/// The key custodian a configuration runs with: none under a keyper
/// committee (the journal's committee record brings the committee's), else
/// the embedded one over `custodian.key`.
fn custodian(
    config: &NodeConfig,
    key: &SequencerKey,
    genesis: &Genesis,
) -> Result<Box<dyn crate::envelope::KeyCustodian + Send>, NodeError> {
    if config.committee.is_some() {
        return Ok(Box::new(crate::keyper::NoKeyCustodian));
    }
    let master = load_or_create_key32(&config.data_dir.join(CUSTODIAN_KEY_FILE), || {
        Zeroizing::new(*MasterSecret::generate(&mut rand_core::OsRng).as_bytes())
    })?;
    Ok(Box::new(EmbeddedCustodian::new(
        MasterSecret::from_bytes(*master),
        key.public_key(),
        genesis.schedule,
    )))
}

/// What the first leader of a new replicated deployment journals after the
/// genesis record: the committee, and in demo mode the demo funds.
pub(super) fn first_leader(
    config: &NodeConfig,
    sequencer: &mut Sequencer,
) -> Result<(), NodeError> {
    if let Some(committee) = &config.committee {
        let (committee, params) = committee
            .committee(sequencer.deployment())
            .map_err(super::config::ConfigFileError::from)?;
        sequencer.start_committee(committee, params)?;
    }
    if config.demo {
        fund_demo_accounts(config, sequencer)?;
    }
    Ok(())
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
