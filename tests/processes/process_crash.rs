//! kill -9 at any moment loses no acknowledged envelope: start the real
//! binary, submit under load, SIGKILL it, restart it, stop it gracefully, and
//! check that every receipt's envelope is in a sealed, cleared batch that
//! `verify` re-derives.

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use sealbatch::signed::Statement as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealbatch::journal::{FsStorage, Journal, JournalConfig, read_checkpoints};
use sealbatch::sequencer::verify_journal;

use crate::common;
use common::{connect, load, spawn};

/// Checkpoints every 5 batches, so that a restart starts from one.
const CONFIG: &str = "checkpoint_every_batches = 5\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_envelope() {
    // The data directory and its config file beside it, removed on drop.
    let work = tempfile::Builder::new()
        .prefix("sealbatch-kill9-")
        .tempdir()
        .expect("a temporary directory");
    let dir = work.path().join("data");

    let mut child = spawn(&dir, CONFIG);
    let client = Arc::new(connect(&dir, &mut child).await);
    let loader = tokio::spawn(load(
        Arc::clone(&client),
        8,
        Instant::now() + Duration::from_secs(5),
    ));
    // Kill it mid-flight, with submissions in every stage.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (receipts, _) = loader.await.expect("loader");
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
    let mut child = spawn(&dir, CONFIG);
    let client = connect(&dir, &mut child).await;
    // A receipt after the restart works too.
    let after = load(
        Arc::new(client),
        8,
        Instant::now() + Duration::from_millis(500),
    )
    .await
    .0;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    common::stop_gracefully(child);

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
    let summary = common::JournalSummary::of(&records);
    summary.holds_acknowledged(receipts.iter().chain(&after));
    let report = verify_journal(records).expect("verify reads it");
    assert!(
        report.all_ok(),
        "{:?}",
        report.batches.iter().find(|b| b.verdict.is_err())
    );

    // The commands: `verify` on the journal, `export` of the first cleared
    // batch and `verify --transcript` of the file.
    let e = *summary.results.keys().next().expect("a cleared batch");
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
}

/// SIGTERM under load: the process stops taking envelopes, finishes every
/// batch in flight, exits 0 within 10 s, and every receipt it gave is in
/// its batch's journaled outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_nothing() {
    let work = tempfile::Builder::new()
        .prefix("sealbatch-sigterm-")
        .tempdir()
        .expect("a temporary directory");
    let dir = work.path().join("data");
    let mut child = spawn(&dir, CONFIG);
    let client = Arc::new(connect(&dir, &mut child).await);
    let loader = tokio::spawn(load(
        Arc::clone(&client),
        8,
        Instant::now() + Duration::from_secs(4),
    ));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let signalled = Instant::now();
    common::terminate(&child);
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
    let (receipts, _) = loader.await.expect("loader");
    assert!(receipts.len() > 50, "only {} receipts", receipts.len());
    eprintln!(
        "exited {} ms after SIGTERM with {} receipts given",
        signalled.elapsed().as_millis(),
        receipts.len()
    );
    common::all_published(&dir.join("journal"), &receipts);
}

/// kill -9 around an operator deposit (its request sent, its answer not
/// awaited: before, during or after its journal write), then a restart and
/// the same deposit again: it is credited exactly once, whether or not the
/// first reached the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow tier: SEALBATCH_TEST_TIER=slow cargo test -- --include-ignored"]
async fn sigkill_around_an_operator_deposit_credits_it_exactly_once() {
    const AMOUNT: u64 = 1_000;
    let work = tempfile::Builder::new()
        .prefix("sealbatch-kill9-deposit-")
        .tempdir()
        .expect("a temporary directory");
    let dir = work.path().join("data");
    let operator = ed25519_dalek::SigningKey::from_bytes(&[0x0d; 32]);
    let config = format!(
        "demo = false\n[operator]\nkeys = [\"{}\"]\n",
        hex::encode(operator.verifying_key().to_bytes())
    );
    let account = [5; 32];
    let balance = |balances: Vec<(u32, u64)>| {
        balances
            .iter()
            .find(|(asset, _)| *asset == 0)
            .map_or(0, |&(_, amount)| amount)
    };
    let mut child = spawn(&dir, &config);
    for round in 0..4u64 {
        let client = Arc::new(connect(&dir, &mut child).await);
        let reference = format!("transfer-{round}");
        let deposit = {
            let (client, operator, reference) =
                (Arc::clone(&client), operator.clone(), reference.clone());
            tokio::spawn(async move {
                client
                    .operator_deposit(&operator, account, 0, AMOUNT, reference.as_bytes())
                    .await
            })
        };
        // From killing before the request is read to after it is durable.
        tokio::time::sleep(Duration::from_micros(round * 1_500)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let _ = deposit.await;

        child = spawn(&dir, &config);
        let client = connect(&dir, &mut child).await;
        client
            .operator_deposit(&operator, account, 0, AMOUNT, reference.as_bytes())
            .await
            .expect("the deposit, again");
        assert_eq!(
            balance(
                client
                    .account(&operator, account)
                    .await
                    .expect("balances")
                    .balances
            ),
            (round + 1) * AMOUNT,
            "round {round}: credited exactly once"
        );
    }
    common::stop_gracefully(child);
}

/// kill -9 around a trader's withdrawal, then around the operator's payout
/// acknowledgement, with each request sent and its answer not awaited:
/// after the restart the trader reads its next withdrawal number to learn
/// whether the withdrawal was taken and sends the same signed request again
/// only if it was not; the operator acknowledges again. Each withdrawal is
/// debited exactly once and paid out exactly once, whatever reached the
/// disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow tier: SEALBATCH_TEST_TIER=slow cargo test -- --include-ignored"]
async fn sigkill_around_a_withdrawal_and_its_payout_moves_money_exactly_once() {
    use sealbatch::market::{AccountId, AssetId};
    use sealbatch::signed::WithdrawalStatement;

    const DEPOSIT: u64 = 10_000;
    const AMOUNT: u64 = 100;
    let work = tempfile::Builder::new()
        .prefix("sealbatch-kill9-withdraw-")
        .tempdir()
        .expect("a temporary directory");
    let dir = work.path().join("data");
    let operator = ed25519_dalek::SigningKey::from_bytes(&[0x0d; 32]);
    let trader = ed25519_dalek::SigningKey::from_bytes(&[0x0e; 32]);
    let account = trader.verifying_key().to_bytes();
    let config = format!(
        "demo = false\n[operator]\nkeys = [\"{}\"]\n",
        hex::encode(operator.verifying_key().to_bytes())
    );
    let mut child = spawn(&dir, &config);
    let client = connect(&dir, &mut child).await;
    client
        .operator_deposit(&operator, account, 0, DEPOSIT, b"funding")
        .await
        .expect("credited");
    let sequencer = sealbatch::envelope::SequencerPublicKey::from_bytes(
        &client.schedule().await.expect("schedule").sequencer_key,
    )
    .expect("sequencer key");
    for round in 0..4u64 {
        let sequence = round + 1;
        let signed = WithdrawalStatement {
            account: AccountId(account),
            asset: AssetId(0),
            amount: AMOUNT,
            sequence,
            destination: b"dest".to_vec(),
        }
        .sign(&trader, &sequencer)
        .expect("signs");
        let client = Arc::new(connect(&dir, &mut child).await);
        let request = {
            let (client, signed) = (Arc::clone(&client), signed.clone());
            tokio::spawn(async move { client.send_withdrawal(signed).await })
        };
        tokio::time::sleep(Duration::from_micros(round * 1_500)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let _ = request.await;

        child = spawn(&dir, &config);
        let client = connect(&dir, &mut child).await;
        let state = client.account(&trader, account).await.expect("own");
        if state.next_withdrawal == sequence {
            // Not taken before the kill: the same request, again.
            client.send_withdrawal(signed).await.expect("taken now");
        } else {
            assert_eq!(state.next_withdrawal, sequence + 1, "round {round}");
        }
        let state = client.account(&trader, account).await.expect("own");
        assert_eq!(state.next_withdrawal, sequence + 1);
        assert_eq!(
            state.balances,
            vec![(0, DEPOSIT - sequence * AMOUNT)],
            "round {round}: debited exactly once"
        );

        // The payout of this round's withdrawal, killed around its
        // acknowledgement, then acknowledged again.
        let (pending, _) = client.payouts(&operator, 0).await.expect("payouts");
        assert_eq!(pending.len(), 1, "round {round}: {pending:?}");
        let id = pending[0].id;
        assert_eq!(id, sequence);
        let client = Arc::new(client);
        let ack = {
            let (client, operator) = (Arc::clone(&client), operator.clone());
            tokio::spawn(async move {
                client
                    .acknowledge_payout(&operator, id, format!("payout-{id}").as_bytes())
                    .await
            })
        };
        tokio::time::sleep(Duration::from_micros(round * 1_500)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let _ = ack.await;
        child = spawn(&dir, &config);
        let client = connect(&dir, &mut child).await;
        client
            .acknowledge_payout(&operator, id, format!("payout-{id}").as_bytes())
            .await
            .expect("acknowledged (again)");
        let (pending, _) = client.payouts(&operator, 0).await.expect("payouts");
        assert!(pending.is_empty(), "round {round}: paid out once");
    }
    common::stop_gracefully(child);
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .arg("verify")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("runs verify");
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// A sequencer handed its socket (`--inherit-fd`) serves on it and is
/// handed the same one after a kill -9; a descriptor that is not a socket
/// stops it with the configuration's status, 78.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_handed_down_is_served_across_a_restart_and_a_file_is_refused() {
    use std::os::fd::AsFd;
    let work = tempfile::Builder::new()
        .prefix("sealbatch-inherit-")
        .tempdir()
        .expect("a temporary directory");
    let dir = work.path().join("node");
    let refused = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(["run", "--no-metrics", "--inherit-fd", "1", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{text}");
    assert!(
        text.contains("--inherit-fd") && text.contains("standard stream"),
        "{text}"
    );
    assert!(!dir.exists(), "nothing was created before the refusal");

    let (socket, port) = common::loopback_udp();
    for _ in 0..2 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sealbatch"));
        command
            .args(["run", "--no-metrics", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = sealbatch::net::inherit::spawn_with(command, &[socket.as_fd()])
            .expect("the binary starts");
        let client = connect(&dir, &mut child).await;
        assert_eq!(common::address(&dir).map(|a| a.port()), Some(port));
        assert!(client.schedule().await.is_ok());
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let _ = std::fs::remove_file(dir.join(sealbatch::node::ADDRESS_FILE));
    }
}
