//! `sealbatch verify`: re-derive every batch of a journal, or one exported
//! batch transcript, without trusting the sequencer; `sealbatch export`:
//! write batch transcripts from a journal.
//!
//! The journal is opened read-only ([`Journal::open_dir_read_only`]): a torn
//! tail is read up to and left in place, so a live sequencer's journal can be
//! verified where it lies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Args;

use super::CommandResult;
use crate::envelope::{Commitment, Receipt};
use crate::journal::{Journal, JournalConfig, ReadOnlyFsStorage, UntilDamage, read_checkpoints};
use crate::node::JOURNAL_DIR;
use crate::sequencer::{
    Checkpoint, ResultAssembler, SequencerRecord, Transcript, export_transcripts,
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
fn checkpoints(dir: &Path) -> Result<Vec<Checkpoint>, String> {
    let mut storage = ReadOnlyFsStorage::new(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let found = read_checkpoints(&mut storage).map_err(|e| e.to_string())?;
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
) -> Result<T, String> {
    let dir = args
        .journal
        .clone()
        .unwrap_or_else(|| args.data_dir.join(JOURNAL_DIR));
    if !dir.is_dir() {
        return Err(format!("{} is not a journal directory", dir.display()));
    }
    let checkpoints = checkpoints(&dir)?;
    let recovery = Journal::open_dir_read_only(&dir, JournalConfig::default())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut records = recovery.records.until_damage();
    let out = read(&mut records, &checkpoints);
    match records.take_damage() {
        Some(damage) => Err(format!("{}: {damage}", dir.display())),
        None => Ok(out),
    }
}

/// Verifies the journal (or a transcript); prints `OK` or the first mismatch
/// per batch.
///
/// # Errors
///
/// An unreadable journal, or any batch that does not verify.
pub fn run(args: &VerifyArgs) -> CommandResult {
    if let Some(path) = &args.transcript {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let transcript =
            Transcript::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let summary = verify_transcript(&transcript)?;
        println!(
            "batch {:>10}: {:>6} envelopes {:>8} fills  OK (from the {} balances the transcript states)",
            summary.e, summary.envelopes, summary.fills, summary.balances
        );
        return Ok(());
    }
    let report = with_journal(&args.source, |records, checkpoints| {
        verify_journal_with(records, checkpoints)
    })??;
    if let Some(lsn) = report.from_checkpoint {
        println!(
            "journal pruned: verified from the checkpoint at LSN {lsn} (its state taken as given)"
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
    if bad > 0 || bad_checkpoints > 0 {
        return Err(
            format!("{bad} batches and {bad_checkpoints} checkpoints do not verify").into(),
        );
    }
    if let Some(path) = &args.receipts {
        check_receipts(&args.source, path)?;
    }
    Ok(())
}

/// Holds the journal to every receipt in `path`: signed by the journal's
/// sequencer, and its envelope in its batch's journaled outcome.
fn check_receipts(source: &JournalArgs, path: &Path) -> CommandResult {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut receipts = Vec::new();
    for (line, hex_text) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bytes = hex::decode(hex_text.trim())
            .map_err(|e| format!("{}:{}: {e}", path.display(), line + 1))?;
        let receipt = Receipt::from_bytes(&bytes)
            .map_err(|e| format!("{}:{}: {e}", path.display(), line + 1))?;
        receipts.push(receipt);
    }
    let (sequencer, published) = with_journal(source, |records, _| {
        let mut sequencer = None;
        let mut published: BTreeMap<BatchId, BTreeSet<Commitment>> = BTreeMap::new();
        let mut assembler = ResultAssembler::default();
        for (_, kind, payload) in records {
            match SequencerRecord::decode(kind, &payload) {
                Ok(SequencerRecord::Genesis(genesis)) => sequencer = Some(genesis.sequencer),
                Ok(SequencerRecord::ResultPart(part)) => {
                    if let Ok(Some(outcome)) = assembler.push(part) {
                        published.insert(
                            outcome.e,
                            outcome.envelopes.iter().map(|o| o.commitment).collect(),
                        );
                    }
                }
                _ => {}
            }
        }
        (sequencer, published)
    })?;
    let sequencer = sequencer.ok_or("the journal no longer holds its genesis record")?;
    let mut missing = 0usize;
    let mut forged = 0usize;
    for receipt in &receipts {
        if receipt.verify(&sequencer).is_err() {
            forged += 1;
            println!(
                "receipt for batch {}: not signed by this sequencer",
                receipt.e
            );
        } else if !published
            .get(&receipt.e)
            .is_some_and(|set| set.contains(&receipt.commitment))
        {
            missing += 1;
            println!(
                "receipt for batch {}: envelope {} MISSING from its outcome",
                receipt.e,
                hex::encode(receipt.commitment.0)
            );
        }
    }
    println!(
        "{} receipts: {} in their batch's outcome, {missing} missing, {forged} not signed by this sequencer",
        receipts.len(),
        receipts.len() - missing - forged
    );
    if missing > 0 || forged > 0 {
        return Err(format!("{missing} acknowledged envelopes missing").into());
    }
    Ok(())
}

/// Writes the transcript of each requested batch.
///
/// # Errors
///
/// An unreadable journal, a batch that is not cleared in it, or one that does
/// not verify (nothing is written for it).
pub fn export(args: &ExportArgs) -> CommandResult {
    let wanted: BTreeSet<BatchId> = args.batches.iter().copied().collect();
    let (report, transcripts) = with_journal(&args.source, |records, checkpoints| {
        export_transcripts(records, checkpoints, &wanted)
    })??;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    for transcript in &transcripts {
        let path = args.out.join(format!("batch-{}.sbt", transcript.batch()));
        std::fs::write(&path, transcript.encode())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "batch {:>10}: {:>6} envelopes -> {}",
            transcript.batch(),
            transcript.envelopes.len(),
            path.display()
        );
    }
    let written: BTreeSet<BatchId> = transcripts.iter().map(Transcript::batch).collect();
    let missing: Vec<String> = wanted
        .difference(&written)
        .map(|e| match report.batches.iter().find(|b| b.e == *e) {
            Some(b) if b.pending => format!("batch {e}: sealed, not cleared yet"),
            Some(b) => match &b.verdict {
                Err(reason) => format!("batch {e}: does not verify: {reason}"),
                Ok(()) => format!("batch {e}: not exported"),
            },
            None => format!("batch {e}: not in the journal (empty batches leave no record)"),
        })
        .collect();
    if !missing.is_empty() {
        return Err(missing.join("; ").into());
    }
    Ok(())
}
