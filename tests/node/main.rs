//! The node in this process over real loopback sockets: the QUIC server and its clients, the storage-fault policy, the metrics server, a keyper committee of in-process keyper tasks, and three replicas in one process.
//!
//! One test binary per kind of test, each a module per subject, so the
//! dependencies are linked three times rather than once per file. The fast
//! tier is `cargo test`; the slow tier (`#[ignore]`d here) runs with
//! `SEALBATCH_TEST_TIER=slow cargo test -- --include-ignored`
//! (`docs/development.md`, "Tests").

#[path = "../common/mod.rs"]
mod common;

mod committee;
mod metrics_http;
mod node;
mod node_storage;
mod replica_cluster;
