//! kill -9 at any moment loses no acknowledged envelope: start the real
//! binary, submit under load, SIGKILL it, restart it, stop it gracefully, and
//! check that every receipt's envelope is in a sealed, cleared batch that
//! `verify` re-derives.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use sealbatch::cli::connect::target_batch;
use sealbatch::client::Client;
use sealbatch::envelope::{BatchPublicKey, Commitment, seal_bundle};
use sealbatch::journal::{FsStorage, Journal, JournalConfig, read_checkpoints};
use sealbatch::net::parse_fingerprint;
use sealbatch::node::core::now_ms;
use sealbatch::order::OrderSpec;
use sealbatch::sequencer::{ResultAssembler, SequencerRecord, verify_journal};
use sealbatch::types::{MarketId, Side};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `sealbatch run` on `dir`, checkpointing every 5 batches.
fn spawn(dir: &Path, port: u16) -> Child {
    let config = dir.with_extension("toml");
    std::fs::write(&config, "checkpoint_every_batches = 5\n").expect("config written");
    Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(["run", "--no-metrics", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

async fn connect(dir: &Path, addr: SocketAddr) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("tls/fingerprint"))
            && let Ok(fingerprint) = parse_fingerprint(&text)
            && let Ok(client) = Client::connect(addr, fingerprint).await
            && client.schedule().await.is_ok()
        {
            return client;
        }
        assert!(Instant::now() < deadline, "the sequencer did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits from several tasks until `until`; returns every receipt.
async fn load(client: Arc<Client>, until: Instant) -> Vec<(u64, Commitment)> {
    let schedule = client.schedule().await.expect("schedule");
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let client = Arc::clone(&client);
        let schedule = schedule.clone();
        tasks.push(tokio::spawn(async move {
            let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
            let mut receipts = Vec::new();
            let mut nonce = worker << 32;
            while Instant::now() < until {
                let e = target_batch(&schedule, now_ms(), 30);
                let Some(key) = schedule
                    .batch_keys
                    .iter()
                    .find(|(b, _)| *b == e)
                    .and_then(|(_, k)| BatchPublicKey::from_bytes(k).ok())
                else {
                    break;
                };
                nonce += 1;
                let orders = [OrderSpec {
                    market: MarketId(1 + (nonce % 3) as u32),
                    side: if nonce % 2 == 0 {
                        Side::Buy
                    } else {
                        Side::Sell
                    },
                    limit: None,
                    qty: 1,
                    client_order_id: nonce,
                }];
                let envelope =
                    seal_bundle(&mut OsRng, &trader, e, &key, nonce, &orders).expect("seals");
                match client.submit(envelope.into_bytes()).await {
                    Ok(receipt) => receipts.push((receipt.e, receipt.commitment)),
                    // The process died under us: stop.
                    Err(sealbatch::client::ClientError::Connection(_)) => break,
                    Err(_) => {}
                }
            }
            receipts
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("worker"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_envelope() {
    let dir = std::env::temp_dir().join(format!("sealbatch-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let mut child = spawn(&dir, port);
    let client = Arc::new(connect(&dir, addr).await);
    let loader = tokio::spawn(load(
        Arc::clone(&client),
        Instant::now() + Duration::from_secs(5),
    ));
    // Kill it mid-flight, with submissions in every stage.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let receipts = loader.await.expect("loader");
    assert!(
        receipts.len() > 50,
        "only {} receipts before the kill",
        receipts.len()
    );
    // It checkpointed while running: the restart starts from a checkpoint.
    let checkpoints = |dir: &Path| {
        read_checkpoints(&mut FsStorage::new(dir.join("journal")).expect("dir"))
            .expect("checkpoints read")
            .into_iter()
            .filter_map(|found| found.checkpoint.ok())
            .collect::<Vec<_>>()
    };
    assert!(
        !checkpoints(&dir).is_empty(),
        "no checkpoint before the kill"
    );

    // Restart: recovery seals and clears what was acknowledged.
    let mut child = spawn(&dir, port);
    let client = connect(&dir, addr).await;
    // A receipt after the restart works too.
    let after = load(
        Arc::new(client),
        Instant::now() + Duration::from_millis(500),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");

    let (_, recovery) =
        Journal::open_dir(dir.join("journal"), JournalConfig::default()).expect("journal");
    let records: Vec<_> = recovery
        .records
        .into_iter()
        .map(|r| (r.lsn, r.kind, r.payload))
        .collect();
    // The graceful shutdown checkpointed everything it journaled.
    let last = records.last().map(|r| r.0).expect("records");
    assert_eq!(
        checkpoints(&dir).first().map(|c| c.lsn),
        Some(last + 1),
        "the shutdown checkpoint covers the whole journal"
    );
    let mut envelopes: BTreeMap<u64, BTreeSet<Commitment>> = BTreeMap::new();
    let mut sealed = BTreeSet::new();
    let mut cleared = BTreeSet::new();
    let mut assembler = ResultAssembler::default();
    for (_, kind, payload) in &records {
        match SequencerRecord::decode(*kind, payload).expect("decodes") {
            SequencerRecord::Envelope { e, bytes } => {
                envelopes
                    .entry(e)
                    .or_default()
                    .insert(Commitment::of(&bytes));
            }
            SequencerRecord::Seal(seal) => {
                sealed.insert(seal.e);
            }
            SequencerRecord::ResultPart(part) => {
                let Some(outcome) = assembler.push(part).expect("result parts join") else {
                    continue;
                };
                assert!(
                    cleared.insert(outcome.e),
                    "batch {} cleared twice",
                    outcome.e
                );
            }
            _ => {}
        }
    }
    for (e, commitment) in receipts.iter().chain(&after) {
        assert!(
            envelopes.get(e).is_some_and(|set| set.contains(commitment)),
            "an acknowledged envelope of batch {e} is missing"
        );
        assert!(
            sealed.contains(e) && cleared.contains(e),
            "batch {e} not sealed and cleared"
        );
    }
    let report = verify_journal(records).expect("verify reads it");
    assert!(
        report.all_ok(),
        "{:?}",
        report.batches.iter().find(|b| b.verdict.is_err())
    );

    // The commands: `verify` on the journal, `export` of the first cleared
    // batch and `verify --transcript` of the file.
    let e = cleared.first().copied().expect("a cleared batch");
    let sealbatch = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "sealbatch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let data = dir.to_string_lossy().into_owned();
    assert!(sealbatch(&["verify", "--data-dir", &data]).contains("0 mismatched"));
    let out_dir = dir.join("transcripts");
    sealbatch(&[
        "export",
        "--data-dir",
        &data,
        "--batch",
        &e.to_string(),
        "--out",
        &out_dir.to_string_lossy(),
    ]);
    let file = out_dir.join(format!("batch-{e}.sbt"));
    assert!(sealbatch(&["verify", "--transcript", &file.to_string_lossy()]).contains("OK"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}

/// SIGTERM under load: the process stops taking envelopes, finishes every
/// batch in flight, exits 0 within 10 s, and every receipt it gave is in
/// its batch's journaled outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("sealbatch-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = spawn(&dir, port);
    let client = Arc::new(connect(&dir, addr).await);
    let loader = tokio::spawn(load(
        Arc::clone(&client),
        Instant::now() + Duration::from_secs(4),
    ));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let signalled = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("waits") {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "SIGTERM under load exits 0, got {exit:?}");
    let receipts = loader.await.expect("loader");
    assert!(receipts.len() > 50, "only {} receipts", receipts.len());
    eprintln!(
        "exited {} ms after SIGTERM with {} receipts given",
        signalled.elapsed().as_millis(),
        receipts.len()
    );
    let (_, recovery) =
        Journal::open_dir(dir.join("journal"), JournalConfig::default()).expect("journal");
    let mut published: BTreeMap<u64, BTreeSet<Commitment>> = BTreeMap::new();
    let mut assembler = ResultAssembler::default();
    for record in recovery.records {
        if let Ok(SequencerRecord::ResultPart(part)) =
            SequencerRecord::decode(record.kind, &record.payload)
            && let Some(outcome) = assembler.push(part).expect("parts join")
        {
            published.insert(
                outcome.e,
                outcome.envelopes.iter().map(|o| o.commitment).collect(),
            );
        }
    }
    for (e, commitment) in &receipts {
        assert!(
            published.get(e).is_some_and(|set| set.contains(commitment)),
            "an acknowledged envelope of batch {e} is not in its outcome"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}
