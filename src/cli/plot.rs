//! `sealbatch plot`: a cleared batch's demand and supply step curves as
//! SVG (`sealbatch::curves`), from the journal or from an exported
//! transcript. The batch is re-derived first (as `verify` does): only a
//! batch that verifies is drawn, from its published data alone.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;

use super::verify::{JournalArgs, journal_transcripts, verified_transcript};
use super::{CommandResult, Failure};
use crate::curves::{batch_curves, batch_svg};
use crate::sequencer::{Transcript, transcript_clearing_input};
use crate::types::{BatchId, MarketId};

/// Arguments of `sealbatch plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The batch to draw.
    #[arg(long = "batch", value_name = "E")]
    pub batch: BatchId,
    /// One market only (default: every market with orders, one panel each).
    #[arg(long, value_name = "M")]
    pub market: Option<u32>,
    /// Read the batch from this transcript (`sealbatch export`) instead of
    /// the journal.
    #[arg(long, value_name = "FILE")]
    pub transcript: Option<PathBuf>,
    /// The journal to read the batch from.
    #[command(flatten)]
    pub source: JournalArgs,
    /// Where to write the SVG (`-`: standard output).
    #[arg(long, value_name = "FILE", default_value = "curves.svg")]
    pub out: PathBuf,
}

/// Draws the batch's curves into `--out`.
///
/// # Errors
///
/// As `verify` and `export`: [`Failure::Unreadable`] for an input that
/// cannot be read, a batch not in the journal or a market the batch has no
/// orders in; [`Failure::Mismatch`] for a batch that does not verify.
pub fn run(args: &PlotArgs) -> CommandResult {
    Ok(plot(args)?)
}

fn plot(args: &PlotArgs) -> Result<(), Failure> {
    let transcript = match &args.transcript {
        Some(path) => {
            let (transcript, _) = verified_transcript(path)?;
            if transcript.batch() != args.batch {
                return Err(Failure::Unreadable(format!(
                    "{} holds batch {}, not batch {}",
                    path.display(),
                    transcript.batch(),
                    args.batch
                )));
            }
            transcript
        }
        None => journal_transcripts(&args.source, &BTreeSet::from([args.batch]))?
            .pop()
            .ok_or_else(|| Failure::Unreadable(format!("batch {}: not exported", args.batch)))?,
    };
    let svg = svg_of(&transcript, args.market.map(MarketId))?;
    let unwritable =
        |e: std::io::Error| Failure::Unreadable(format!("{}: {e}", args.out.display()));
    if args.out.as_os_str() == "-" {
        std::io::stdout()
            .write_all(svg.as_bytes())
            .map_err(unwritable)?;
    } else {
        std::fs::write(&args.out, &svg).map_err(unwritable)?;
        println!("batch {}: curves -> {}", args.batch, args.out.display());
    }
    Ok(())
}

/// The SVG of a verified transcript's batch, of one market or all.
fn svg_of(transcript: &Transcript, market: Option<MarketId>) -> Result<String, Failure> {
    let (inputs, _) = transcript_clearing_input(transcript)
        .map_err(|error| Failure::Mismatch(error.to_string()))?;
    let mut curves = batch_curves(&inputs, &transcript.outcome);
    if let Some(market) = market {
        curves.retain(|c| c.market == market);
        if curves.is_empty() {
            return Err(Failure::Unreadable(format!(
                "batch {}: no orders in market {}",
                transcript.batch(),
                market.0
            )));
        }
    }
    Ok(batch_svg(transcript.batch(), &curves))
}
