//! Replays every input in `fuzz/regressions/` (crashes the fuzzer found,
//! and seeds) through the fuzz property in `fuzz/logic.rs`.

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

#[path = "../../fuzz/logic.rs"]
mod logic;

#[test]
fn fuzz_regressions_hold() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            logic::check(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no inputs in {dir}");
}
