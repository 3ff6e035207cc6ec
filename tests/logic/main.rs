//! Deterministic tests of the core and its storage: the clearing rule and its properties, envelopes and their vectors, the journal on a simulated and a real disk, keypers, the ledger, the wire codec, record layouts, configuration checks, and the seeded simulations of the sequencer and of the replicated sequencer. No network, no process.
//!
//! One test binary per kind of test, each a module per subject, so the
//! dependencies are linked three times rather than once per file. The fast
//! tier is `cargo test`; the slow tier (`#[ignore]`d here) runs with
//! `SEALBATCH_TEST_TIER=slow cargo test -- --include-ignored`
//! (`docs/development.md`, "Tests").

#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod clearing_examples;
mod clearing_props;
mod curves;
mod envelope_fuzz_regressions;
mod envelope_open;
mod envelope_vectors;
mod journal_fs;
mod journal_sim;
mod keyper;
mod keyper_vectors;
mod ledger;
mod node_config;
mod replica_sim;
mod replica_storage;
mod sequencer_drive_regressions;
mod sequencer_records;
mod sequencer_sim;
mod wire_codec;
