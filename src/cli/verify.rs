//! `sealbatch verify`: re-derive every batch of a journal without trusting the
//! sequencer.

use std::path::{Path, PathBuf};

use clap::Args;

use super::CommandResult;
use crate::journal::{Journal, JournalConfig};
use crate::node::JOURNAL_DIR;
use crate::sequencer::verify_journal;

/// Arguments of `sealbatch verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The sequencer's data directory (its `journal/` is read).
    #[arg(long, value_name = "DIR", default_value = "./sealbatch-data")]
    pub data_dir: PathBuf,
    /// A journal directory to read instead.
    #[arg(long, value_name = "DIR")]
    pub journal: Option<PathBuf>,
    /// Print every batch, not only mismatches and the summary.
    #[arg(long)]
    pub verbose: bool,
}

/// Copies the segment files of `from` into a fresh temporary directory, so
/// that reading never cuts the tail of a journal a live sequencer writes.
fn snapshot(from: &Path) -> std::io::Result<PathBuf> {
    let to = std::env::temp_dir().join(format!(
        "sealbatch-verify-{}-{}",
        std::process::id(),
        crate::node::core::now_ms()
    ));
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(to)
}

/// Verifies the journal; prints `OK` or the first mismatch per batch.
///
/// # Errors
///
/// An unreadable journal, or any batch that does not verify.
pub fn run(args: &VerifyArgs) -> CommandResult {
    let dir = args
        .journal
        .clone()
        .unwrap_or_else(|| args.data_dir.join(JOURNAL_DIR));
    if !dir.is_dir() {
        return Err(format!("{} is not a journal directory", dir.display()).into());
    }
    let copy = snapshot(&dir).map_err(|e| format!("copying {}: {e}", dir.display()))?;
    let opened = Journal::open_dir(&copy, JournalConfig::default());
    let _ = std::fs::remove_dir_all(&copy);
    let (_, recovery) = opened?;
    let records = recovery
        .records
        .into_iter()
        .map(|r| (r.lsn, r.kind, r.payload));
    let report = verify_journal(records)?;
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
    println!(
        "{} records, {} batches: {} OK, {} mismatched, {} pending",
        report.records,
        report.batches.len(),
        report.batches.len() - bad - pending,
        bad,
        pending
    );
    if bad > 0 {
        return Err(format!("{bad} batches do not verify").into());
    }
    Ok(())
}
