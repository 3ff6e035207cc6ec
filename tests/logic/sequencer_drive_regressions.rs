//! Replays every crash reproduction of the `sequencer_drive` fuzz target
//! (`fuzz/regressions/sequencer_drive/`) through its checks
//! (`fuzz/sequencer_drive.rs`): each was a bug once, and must stay fixed.

// A test reads files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

#[path = "../../fuzz/sequencer_drive.rs"]
mod drive;

#[test]
fn sequencer_drive_reproductions_hold() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/sequencer_drive"
    );
    let mut inputs: Vec<_> = std::fs::read_dir(dir)
        .expect("the reproductions")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 4, "{} inputs in {dir}", inputs.len());
    for path in inputs {
        eprintln!("{}", path.display());
        drive::check(&std::fs::read(&path).expect("an input"));
    }
}
