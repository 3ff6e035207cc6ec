//! The storage-fault policy, in the node on the real file system with faults
//! injected into the journal's storage: a full disk, `EIO` on write, `EIO`
//! on `fsync` and an `fsync` that hangs past `journal_stall_max_ms` each
//! stop the node at once with exit status 74 (fail-stop: no half-alive
//! process, nothing acknowledged that is not durable, a failed `fsync` never
//! retried). A restart on the same data directory, storage healthy again,
//! seals and clears every acknowledged envelope and `verify` re-derives
//! every batch. A short stall only delays receipts.

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealbatch::client::Client;
use sealbatch::envelope::Commitment;
use sealbatch::journal::{Fault, Faults, Journal, JournalConfig};
use sealbatch::node::{self, EXIT_STORAGE, NodeConfig, NodeError, NodeInfo};
use sealbatch::sequencer::verify_journal;
use sealbatch::types::BatchId;
use tokio::sync::{oneshot, watch};

use crate::common;
use common::load;

type NodeTask = tokio::task::JoinHandle<Result<(), NodeError>>;

/// A fresh data directory with an unpredictable name, removed on drop.
fn dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sealbatch-storage-{tag}-"))
        .tempdir()
        .expect("a temporary directory")
}

async fn start(
    dir: &Path,
    faults: Option<Arc<Faults>>,
    stall_max_ms: u64,
) -> (NodeInfo, watch::Sender<bool>, NodeTask) {
    let config = NodeConfig {
        data_dir: dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: None,
        journal_stall_max_ms: stall_max_ms,
        ..NodeConfig::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(node::run_with_faults(config, shutdown, Some(tx), faults));
    let info = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("starts in time")
        .expect("starts");
    (info, stop, task)
}

/// Every receipt's envelope is journaled in its batch, which is sealed and
/// cleared exactly once, and `verify` re-derives every batch.
fn check_journal(dir: &Path, receipts: &[(BatchId, Commitment)]) {
    common::all_published(&dir.join("journal"), receipts);
    let (_, recovery) =
        Journal::open_dir(dir.join("journal"), JournalConfig::default()).expect("journal");
    let records: Vec<_> = recovery
        .records
        .into_iter()
        .map(|r| (r.lsn, r.kind, r.payload))
        .collect();
    let report = verify_journal(records).expect("verify reads it");
    assert!(
        report.all_ok(),
        "{:?}",
        report.batches.iter().find(|b| b.verdict.is_err())
    );
}

/// Load, then `fault`: the node must stop by itself with exit status 74,
/// and a healthy restart must keep every receipt.
async fn fail_stop(tag: &str, fault: Fault, stall_max_ms: u64) {
    let temp = dir(tag);
    let dir = temp.path();
    let faults = Faults::new();
    let (info, _stop, task) = start(dir, Some(Arc::clone(&faults)), stall_max_ms).await;
    let client = Arc::new(
        Client::connect(info.listen, info.fingerprint)
            .await
            .expect("connects"),
    );
    let loader = tokio::spawn(load(
        Arc::clone(&client),
        4,
        Instant::now() + Duration::from_secs(8),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let armed = Instant::now();
    faults.arm(fault);
    // No signal is sent: the node stops on its own, at once.
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the node stops by itself")
        .expect("joins");
    let error = result.expect_err("a storage failure is an error");
    assert_eq!(error.exit_code(), EXIT_STORAGE, "{error}");
    let stopped_after = armed.elapsed();
    let (receipts, _) = loader.await.expect("loader");
    assert!(receipts.len() > 20, "only {} receipts", receipts.len());
    eprintln!(
        "{tag}: stopped {} ms after the fault ({error}); {} receipts before",
        stopped_after.as_millis(),
        receipts.len()
    );

    // The storage works again: restart, let every batch clear, stop.
    faults.clear();
    let (info, stop, task) = start(dir, None, stall_max_ms).await;
    let client = Client::connect(info.listen, info.fingerprint)
        .await
        .expect("reconnects");
    client.schedule().await.expect("serves again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("joins")
        .expect("stops cleanly");
    check_journal(dir, &receipts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_node_at_once_and_loses_no_receipt() {
    fail_stop("enospc", Fault::NoSpace, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_error_stops_the_node_at_once_and_loses_no_receipt() {
    fail_stop("eio-write", Fault::WriteError, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_node_at_once_and_is_never_retried() {
    fail_stop("eio-fsync", Fault::SyncError, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fsync_hanging_past_the_limit_stops_the_node() {
    fail_stop("stall", Fault::SyncStall(Duration::from_secs(3)), 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_stall_only_delays_receipts() {
    let temp = dir("short-stall");
    let dir = temp.path();
    let faults = Faults::new();
    let (info, stop, task) = start(dir, Some(Arc::clone(&faults)), 5_000).await;
    let client = Arc::new(
        Client::connect(info.listen, info.fingerprint)
            .await
            .expect("connects"),
    );
    let loader = tokio::spawn(load(
        Arc::clone(&client),
        4,
        Instant::now() + Duration::from_secs(3),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    faults.arm(Fault::SyncStall(Duration::from_millis(300)));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    faults.clear();
    let (receipts, _) = loader.await.expect("loader");
    assert!(!task.is_finished(), "a short stall does not stop the node");
    assert!(receipts.len() > 20, "only {} receipts", receipts.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("joins")
        .expect("stops cleanly");
    check_journal(dir, &receipts);
}
