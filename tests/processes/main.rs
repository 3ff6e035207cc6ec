//! The real `sealbatch` binary as users run it: commands end to end, kill -9 and restarts, replicas and keypers as separate processes.
//!
//! One test binary per kind of test, each a module per subject, so the
//! dependencies are linked three times rather than once per file. The fast
//! tier is `cargo test`; the slow tier (`#[ignore]`d here) runs with
//! `SEALBATCH_TEST_TIER=slow cargo test -- --include-ignored`
//! (`docs/development.md`, "Tests").

#[path = "../common/mod.rs"]
mod common;

mod bench_tool;
mod clearing_cli;
mod cluster_processes;
mod committee_processes;
mod poison_pill;
mod process_crash;
mod verify_cli;
mod wan;
