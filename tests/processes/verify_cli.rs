//! `sealbatch verify` as a user runs it, on a journal the real binary
//! wrote: it reads a journal with a torn tail without changing a byte, and
//! its exit status tells "verified, and something does not match" (1) from
//! "could not read it, or bad usage" (2).

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealbatch::journal::format::{SEGMENT_HEADER_LEN, encode_frame};
use sealbatch::sequencer::RecordKind;
use sealbatch::types::{BatchId, Lsn};

use crate::common;
use common::{connect, load, spawn, stop_gracefully};

fn sealbatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn describe(out: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file of `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("a directory")
        .map(|entry| {
            let entry = entry.expect("an entry");
            let bytes = fs::read(entry.path()).expect("readable");
            (entry.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_a_torn_journal_read_only_and_exits_by_what_it_found() {
    let work = tempfile::Builder::new()
        .prefix("sealbatch-verify-cli-")
        .tempdir()
        .expect("a temporary directory");
    let data = work.path().join("data");
    let mut child = spawn(&data, "");
    let client = Arc::new(connect(&data, &mut child).await);
    let (receipts, _) = load(client, 2, Instant::now() + Duration::from_millis(800)).await;
    assert!(!receipts.is_empty(), "no receipt");
    stop_gracefully(child);

    let data_arg = data.to_string_lossy().into_owned();
    let out = sealbatch(&["verify", "--data-dir", &data_arg]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" 0 mismatched"),
        "{}",
        describe(&out)
    );

    // A torn tail: half a frame at the end of the last segment. `verify`
    // reads up to it and leaves every file as it was.
    let journal = data.join("journal");
    let last = files(&journal)
        .into_keys()
        .filter(|name| name.ends_with(".sbj"))
        .max()
        .expect("a segment");
    let mut frame = Vec::new();
    encode_frame(
        &mut frame,
        Lsn(1 << 40),
        RecordKind::Envelope.to_byte(),
        &[7; 300],
    );
    let mut file = OpenOptions::new()
        .append(true)
        .open(journal.join(&last))
        .expect("the last segment opens");
    file.write_all(&frame[..frame.len() / 2])
        .expect("torn tail written");
    drop(file);
    let before = files(&journal);
    let out = sealbatch(&["verify", "--data-dir", &data_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(files(&journal), before, "verify changed the journal");

    // A receipt not signed by this sequencer: verified, does not match.
    let forged = work.path().join("forged-receipts");
    let stranger = sealbatch::envelope::SequencerKey::from_seed(&[0x11; 32])
        .sign_receipt(BatchId(1), &sealbatch::envelope::Commitment([0x11; 32]));
    fs::write(&forged, format!("{}\n", hex::encode(stranger.to_bytes()))).expect("written");
    let forged_arg = forged.to_string_lossy().into_owned();
    let out = sealbatch(&["verify", "--data-dir", &data_arg, "--receipts", &forged_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not signed by this sequencer"));
    assert_eq!(files(&journal), before);

    // `plot`: a cleared batch's curves, the same bytes from the journal and
    // from the batch's exported transcript; a market without orders and a
    // batch the journal does not hold are refused. (The demo's test plots
    // batches that traded.)
    let e = receipts[0].0.to_string();
    let from_journal = work.path().join("journal.svg");
    let out = sealbatch(&[
        "plot",
        "--batch",
        &e,
        "--data-dir",
        &data_arg,
        "--out",
        &from_journal.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let svg = fs::read_to_string(&from_journal).expect("the SVG");
    // These traders are unfunded: every envelope was rejected at funding.
    assert!(
        svg.starts_with("<svg ") && svg.contains("no orders took part"),
        "{svg}"
    );
    let exported = work.path().join("exported");
    let out = sealbatch(&[
        "export",
        "--data-dir",
        &data_arg,
        "--batch",
        &e,
        "--out",
        &exported.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let transcript = exported.join(format!("batch-{e}.sbt"));
    let out = sealbatch(&[
        "plot",
        "--batch",
        &e,
        "--transcript",
        &transcript.to_string_lossy(),
        "--out",
        "-",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), svg);
    for args in [
        vec![
            "plot",
            "--batch",
            &e,
            "--data-dir",
            &data_arg,
            "--market",
            "4000",
            "--out",
            "-",
        ],
        vec![
            "plot",
            "--batch",
            "999999999",
            "--data-dir",
            &data_arg,
            "--out",
            "-",
        ],
    ] {
        let out = sealbatch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    assert_eq!(files(&journal), before);

    // Could not read: no journal, an undecodable receipts file or
    // transcript, a damaged journal; and bad usage.
    let missing = work.path().join("missing").to_string_lossy().into_owned();
    let garbage = work.path().join("garbage");
    fs::write(&garbage, b"not hex\n").expect("written");
    let garbage_arg = garbage.to_string_lossy().into_owned();
    for args in [
        vec!["verify", "--data-dir", &missing],
        vec![
            "verify",
            "--data-dir",
            &data_arg,
            "--receipts",
            &garbage_arg,
        ],
        vec!["verify", "--data-dir", &data_arg, "--receipts", &missing],
        vec!["verify", "--transcript", &garbage_arg],
        vec!["verify", "--transcript", &missing],
        vec!["verify", "--no-such-flag"],
        vec!["export", "--data-dir", &missing, "--batch", "1"],
    ] {
        let out = sealbatch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    let first = files(&journal)
        .into_keys()
        .filter(|name| name.ends_with(".sbj"))
        .min()
        .expect("a segment");
    let mut damaged = before[&first].clone();
    assert!(
        damaged.len() > SEGMENT_HEADER_LEN + 40,
        "the first segment holds records"
    );
    damaged[SEGMENT_HEADER_LEN + 20] ^= 1;
    fs::write(journal.join(&first), &damaged).expect("written");
    let out = sealbatch(&["verify", "--data-dir", &data_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    // `verify --help` documents them.
    let help = String::from_utf8_lossy(&sealbatch(&["verify", "--help"]).stdout).into_owned();
    assert!(
        help.contains("Exit status:") && help.contains("  1  ") && help.contains("  2  "),
        "{help}"
    );
}
