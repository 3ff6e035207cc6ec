//! `sealbatch verify`: re-derive every batch of a journal, or one exported
//! batch transcript, without trusting the sequencer; `sealbatch export`:
//! write batch transcripts from a journal.
//!
//! The journal is opened read-only ([`Journal::open_dir_read_only`]): a torn
//! tail is read up to and left in place, so a live sequencer's journal can be
//! verified where it lies. Every failure is a [`Failure`]: a
//! [`Failure::Mismatch`] (exit status 1) when what was read does not
//! re-derive, a [`Failure::Unreadable`] (exit status 2) when it could not be
//! read.

use crate::codec::{Decode, Encode};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{CommandResult, Failure};
use crate::envelope::Receipt;
use crate::journal::{Journal, JournalConfig, ReadOnlyFsStorage, UntilDamage, read_checkpoints};
use crate::node::JOURNAL_DIR;
use crate::sequencer::{
    Checkpoint, Transcript, TranscriptError, TranscriptSummary, VerifyError, export_transcripts,
    verify_journal_with, verify_transcript,
};
use crate::types::BatchId;

/// Where to find a journal.
#[derive(Debug, Args)]
pub struct JournalArgs {
    /// The sequencer's data directory (its `journal/` is read).
    #[arg(long, value_name = "DIR", default_value = "./sealbatch-data")]
    pub data_dir: PathBuf,
    /// A journal directory to read instead.
    #[arg(long, value_name = "DIR")]
    pub journal: Option<PathBuf>,
}

/// Arguments of `sealbatch verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The journal to verify.
    #[command(flatten)]
    pub source: JournalArgs,
    /// Verify this exported batch transcript instead of a journal.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["data_dir", "journal"])]
    pub transcript: Option<PathBuf>,
    /// Print every batch, not only mismatches and the summary.
    #[arg(long)]
    pub verbose: bool,
    /// Also hold the journal to these receipts (one hex-encoded receipt per
    /// line, as `loadgen --receipts` writes): each must carry the
    /// sequencer's signature and its envelope must be in its batch's
    /// journaled outcome.
    #[arg(long, value_name = "FILE", conflicts_with = "transcript")]
    pub receipts: Option<PathBuf>,
    /// With `--transcript`: require the batch's key to come from the keyper
    /// committee with this id (64 hex digits, as the sequencer logs it and
    /// `KeyCertificates` names it): a transcript of the embedded custodian
    /// or of another committee is refused.
    #[arg(long, value_name = "HEX", requires = "transcript")]
    pub committee: Option<String>,
}

/// Arguments of `sealbatch export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The journal to read.
    #[command(flatten)]
    pub source: JournalArgs,
    /// The batch to export (repeat for several).
    #[arg(long = "batch", value_name = "E", required = true)]
    pub batches: Vec<BatchId>,
    /// Directory for the transcript files (`batch-<E>.sbt`).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// The checkpoints in a journal directory that read back and decode; the
/// others are reported on stderr and left out.
pub(super) fn checkpoints(dir: &Path) -> Result<Vec<Checkpoint>, Failure> {
    let unreadable =
        |e: &dyn std::fmt::Display| Failure::Unreadable(format!("{}: {e}", dir.display()));
    let mut storage = ReadOnlyFsStorage::new(dir).map_err(|error| unreadable(&error))?;
    let found = read_checkpoints(&mut storage).map_err(|error| unreadable(&error))?;
    Ok(found
        .into_iter()
        .filter_map(|found| {
            let name = found.name.clone();
            Checkpoint::try_from(found)
                .map_err(|problem| eprintln!("checkpoint {name}: unusable: {problem}"))
                .ok()
        })
        .collect())
}

/// Runs `read` over the records of the journal, opened read-only and
/// streamed one segment at a time, and its usable checkpoints; damage
/// anywhere in the records (a torn tail aside, which is read up to and left
/// in place) is an error.
///
/// Checkpoints are read first: a live sequencer writes one only after the
/// records it covers are durable, so the segments read after it hold them
/// all.
fn with_journal<T>(
    args: &JournalArgs,
    read: impl FnOnce(&mut UntilDamage<ReadOnlyFsStorage>, &[Checkpoint]) -> T,
) -> Result<T, Failure> {
    let dir = args
        .journal
        .clone()
        .unwrap_or_else(|| args.data_dir.join(JOURNAL_DIR));
    if !dir.is_dir() {
        return Err(Failure::Unreadable(format!(
            "{} is not a journal directory",
            dir.display()
        )));
    }
    let checkpoints = checkpoints(&dir)?;
    let recovery = Journal::open_dir_read_only(&dir, JournalConfig::default())
        .map_err(|error| Failure::Unreadable(format!("{}: {error}", dir.display())))?;
    let mut records = recovery.records.until_damage();
    let out = read(&mut records, &checkpoints);
    match records.take_damage() {
        Some(damage) => Err(Failure::Unreadable(format!("{}: {damage}", dir.display()))),
        None => Ok(out),
    }
}

/// A journal `verify` could not replay: one that does not decode as a
/// sequencer journal cannot be read; one whose deposits or withdrawals do
/// not apply was read and does not add up.
fn replay_failure(error: VerifyError) -> Failure {
    match error {
        VerifyError::Ledger { .. } => Failure::Mismatch(error.to_string()),
        VerifyError::NoGenesis | VerifyError::Record { .. } | VerifyError::Config(_) => {
            Failure::Unreadable(error.to_string())
        }
    }
}

/// Verifies the journal (or a transcript); prints `OK` or the first mismatch
/// per batch.
///
/// # Errors
///
/// A [`Failure::Unreadable`] for a journal, transcript or receipts file that
/// cannot be read; a [`Failure::Mismatch`] for any batch, checkpoint or
/// receipt that does not verify.
pub fn run(args: &VerifyArgs) -> CommandResult {
    Ok(verify(args)?)
}

/// Reads the transcript file at `path` and verifies it.
pub(super) fn verified_transcript(path: &Path) -> Result<(Transcript, TranscriptSummary), Failure> {
    let unreadable =
        |e: &dyn std::fmt::Display| Failure::Unreadable(format!("{}: {e}", path.display()));
    let bytes = std::fs::read(path).map_err(|error| unreadable(&error))?;
    let transcript = Transcript::from_bytes(&bytes).map_err(|error| unreadable(&error))?;
    let summary = verify_transcript(&transcript).map_err(|error| match error {
        TranscriptError::Decode(_) => unreadable(&error),
        TranscriptError::Mismatch { .. } => Failure::Mismatch(error.to_string()),
    })?;
    Ok((transcript, summary))
}

fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    if let Some(path) = &args.transcript {
        let (_, summary) = verified_transcript(path)?;
        let pinned = match &args.committee {
            None => None,
            Some(text) => {
                let mut id = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut id).map_err(|_| {
                    Failure::Unreadable(format!("--committee {text:?} is not 64 hex digits"))
                })?;
                Some(id)
            }
        };
        let custody = match (&summary.released_by, pinned) {
            (None, Some(id)) => {
                return Err(Failure::Mismatch(format!(
                    "batch {}: its key came from the sequencer's own custodian, not from committee {}",
                    summary.e,
                    hex::encode(id)
                )));
            }
            (Some((committee, _, _)), Some(id)) if *committee != id => {
                return Err(Failure::Mismatch(format!(
                    "batch {}: its key came from committee {}, not {}",
                    summary.e,
                    hex::encode(committee),
                    hex::encode(id)
                )));
            }
            (None, None) => "key from the sequencer's own custodian (trusted-operator mode)".into(),
            (Some((committee, t, keypers)), _) => format!(
                "key released for this seal by keypers {} of committee {} (t = {t})",
                keypers
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                &hex::encode(committee)[..16]
            ),
        };
        println!(
            "batch {:>10}: {:>6} envelopes {:>8} fills  OK (from the {} balances the transcript states; {custody})",
            summary.e, summary.envelopes, summary.fills, summary.balances
        );
        return Ok(());
    }
    let report = with_journal(&args.source, |records, checkpoints| {
        verify_journal_with(records, checkpoints)
    })?
    .map_err(replay_failure)?;
    if let Some(lsn) = report.from_checkpoint {
        let before = with_journal(&args.source, |_, checkpoints| {
            checkpoints
                .iter()
                .find(|c| c.lsn == lsn)
                .map(|c| c.closed_below)
        })?
        .unwrap_or(BatchId::ZERO);
        println!(
            "journal pruned (or a replica's snapshot installed): verified from the checkpoint at LSN {lsn}, its state taken as given; batches before {before} were cleared before this journal's first record and are not re-derived here"
        );
    }
    for checkpoint in &report.checkpoints {
        match &checkpoint.verdict {
            Ok(()) if args.verbose => {
                println!("checkpoint at LSN {}: OK", checkpoint.lsn);
            }
            Ok(()) => {}
            Err(reason) => println!("checkpoint at LSN {}: MISMATCH: {reason}", checkpoint.lsn),
        }
    }
    let mut bad = 0;
    let mut pending = 0;
    for batch in &report.batches {
        match &batch.verdict {
            Ok(()) if batch.pending => {
                pending += 1;
                println!("batch {:>10}: sealed, result not journaled yet", batch.e);
            }
            Ok(()) if args.verbose => println!(
                "batch {:>10}: {:>6} envelopes {:>8} fills  OK",
                batch.e, batch.envelopes, batch.fills
            ),
            Ok(()) => {}
            Err(reason) => {
                bad += 1;
                println!("batch {:>10}: MISMATCH: {reason}", batch.e);
            }
        }
    }
    let bad_checkpoints = report
        .checkpoints
        .iter()
        .filter(|c| c.verdict.is_err())
        .count();
    println!(
        "{} records, {} batches: {} OK, {} mismatched, {} pending; {} checkpoints: {} OK",
        report.records,
        report.batches.len(),
        report.batches.len() - bad - pending,
        bad,
        pending,
        report.checkpoints.len(),
        report.checkpoints.len() - bad_checkpoints,
    );
    match &report.committee {
        Some(committee) => println!(
            "keyper committee: {} windows certified (each certificate checked); {} batch secrets match their certified keys, each released for its seal (t keypers' attestations checked)",
            committee.windows, committee.keys_checked
        ),
        None => println!("trusted-operator mode: batch keys from the embedded custodian"),
    }
    if bad > 0 || bad_checkpoints > 0 {
        return Err(Failure::Mismatch(format!(
            "{bad} batches and {bad_checkpoints} checkpoints do not verify"
        )));
    }
    if let Some(path) = &args.receipts {
        check_receipts(&args.source, path)?;
    }
    Ok(())
}

/// Holds the journal to every receipt in `path`: signed by the journal's
/// sequencer, and its envelope in its batch's journaled outcome.
fn check_receipts(source: &JournalArgs, path: &Path) -> Result<(), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| Failure::Unreadable(format!("{}: {error}", path.display())))?;
    let mut receipts = Vec::new();
    for (line, hex_text) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let unreadable = |e: &dyn std::fmt::Display| {
            Failure::Unreadable(format!("{}:{}: {e}", path.display(), line + 1))
        };
        let bytes = hex::decode(hex_text.trim()).map_err(|error| unreadable(&error))?;
        let receipt = Receipt::from_bytes(&bytes).map_err(|error| unreadable(&error))?;
        receipts.push(receipt);
    }
    let report = with_journal(source, |records, checkpoints| {
        crate::sequencer::check_receipts(records, checkpoints, &receipts)
    })?
    .map_err(replay_failure)?;
    for e in &report.forged {
        println!("receipt for batch {e}: not signed by this sequencer");
    }
    for (e, commitment) in &report.missing {
        println!(
            "receipt for batch {e}: envelope {} MISSING from its outcome",
            hex::encode(commitment.0)
        );
    }
    let (missing, forged) = (report.missing.len(), report.forged.len());
    println!(
        "{} receipts: {} in their batch's outcome, {missing} missing, {forged} not signed by this sequencer",
        receipts.len(),
        report.held
    );
    if report.not_cleared > 0 {
        println!(
            "{} receipts are for batches after the last one this journal holds a result of: their envelopes are journaled, their results not yet",
            report.not_cleared
        );
    }
    if report.before_journal > 0 {
        println!(
            "{} receipts are for batches before {}, cleared before this journal's first record: their results are in its checkpoint's state only, so they are not checked here (check them against a whole journal, or the published results)",
            report.before_journal, report.checkable_from
        );
    }
    if missing > 0 || forged > 0 {
        return Err(Failure::Mismatch(format!(
            "{missing} acknowledged envelopes missing, {forged} receipts not signed by this sequencer"
        )));
    }
    Ok(())
}

/// Writes the transcript of each requested batch.
///
/// # Errors
///
/// A [`Failure::Mismatch`] for a requested batch that does not verify
/// (nothing is written for it); a [`Failure::Unreadable`] for an unreadable
/// journal, a batch that is not cleared in it, or a file that cannot be
/// written.
pub fn export(args: &ExportArgs) -> CommandResult {
    Ok(export_batches(args)?)
}

fn export_batches(args: &ExportArgs) -> Result<(), Failure> {
    let wanted: BTreeSet<BatchId> = args.batches.iter().copied().collect();
    let transcripts = journal_transcripts(&args.source, &wanted)?;
    let unwritable =
        |path: &Path, e: std::io::Error| Failure::Unreadable(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(&args.out).map_err(|error| unwritable(&args.out, error))?;
    for transcript in &transcripts {
        let path = args.out.join(format!("batch-{}.sbt", transcript.batch()));
        std::fs::write(&path, transcript.to_bytes()).map_err(|error| unwritable(&path, error))?;
        println!(
            "batch {:>10}: {:>6} envelopes -> {}",
            transcript.batch(),
            transcript.envelopes.len(),
            path.display()
        );
    }
    Ok(())
}

/// The transcripts of the `wanted` batches, each re-derived from the
/// journal on the way; a batch that is not there (not cleared yet, empty,
/// pruned) or does not verify is a failure naming why.
pub(super) fn journal_transcripts(
    source: &JournalArgs,
    wanted: &BTreeSet<BatchId>,
) -> Result<Vec<Transcript>, Failure> {
    let (report, transcripts) = with_journal(source, |records, checkpoints| {
        export_transcripts(records, checkpoints, wanted)
    })?
    .map_err(replay_failure)?;
    let written: BTreeSet<BatchId> = transcripts.iter().map(Transcript::batch).collect();
    let mut mismatched = false;
    let missing: Vec<String> = wanted
        .difference(&written)
        .map(|e| match report.batches.iter().find(|b| b.e == *e) {
            Some(b) if b.pending => format!("batch {e}: sealed, not cleared yet"),
            Some(b) => match &b.verdict {
                Err(reason) => {
                    mismatched = true;
                    format!("batch {e}: does not verify: {reason}")
                }
                Ok(()) => format!("batch {e}: not exported"),
            },
            None => format!("batch {e}: not in the journal (empty batches leave no record)"),
        })
        .collect();
    match (missing.is_empty(), mismatched) {
        (true, _) => Ok(transcripts),
        (false, true) => Err(Failure::Mismatch(missing.join("; "))),
        (false, false) => Err(Failure::Unreadable(missing.join("; "))),
    }
}
