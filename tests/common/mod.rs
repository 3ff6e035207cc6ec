//! Helpers shared by the tests that run the real process or node under
//! load: a free port, traders submitting until a deadline, and what the
//! journal published.

#![allow(dead_code, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use rand_core::OsRng;
use sealbatch::cli::connect::target_batch;
use sealbatch::client::cluster::ClusterClient;
use sealbatch::client::{Client, ClientError};
use sealbatch::envelope::{BatchPublicKey, Commitment, Receipt, SignedSeal, seal_bundle};
use sealbatch::journal::{Journal, JournalConfig};
use sealbatch::net::parse_fingerprint;
use sealbatch::node::now_ms;
use sealbatch::order::OrderSpec;
use sealbatch::sequencer::{BatchOutcome, ResultAssembler, SequencerRecord};
use sealbatch::types::BatchId;
use sealbatch::types::{MarketId, Side};
use sealbatch::wire::Schedule;

/// A UDP socket on a loopback port the kernel picked, and the port. A test
/// that must know a process's address before it starts (a replica's is in
/// the cluster's membership) keeps the socket and hands it down at every
/// start (`sealbatch::net::inherit::spawn_with`): no port is guessed, and
/// none is taken by another test while the process is down.
pub fn loopback_udp() -> (UdpSocket, u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    let port = socket.local_addr().expect("its address").port();
    (socket, port)
}

/// A listening TCP socket on a loopback port the kernel picked, and the
/// port (see [`loopback_udp`]).
pub fn loopback_tcp() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let port = listener.local_addr().expect("its address").port();
    (listener, port)
}

/// Starts `sealbatch run` on `dir` with the TOML `config` (written beside
/// the directory), listening on a port of its own choosing (port 0): the
/// node writes the address it got to `dir/address` ([`address`]).
pub fn spawn(dir: &Path, config: &str) -> Child {
    // An address file left by an earlier run must not be taken for this
    // one's.
    let _ = std::fs::remove_file(dir.join(sealbatch::node::ADDRESS_FILE));
    let file = dir.with_extension("toml");
    std::fs::write(&file, config).expect("config written");
    Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(["run", "--no-metrics", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

/// The address the node started on `dir` listens on, once it wrote it.
pub fn address(dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(dir.join(sealbatch::node::ADDRESS_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A client of the sequencer started on `dir`, once it answers (at most
/// 20 s), at the address it wrote; fails at once if `child` exits first.
pub async fn connect(dir: &Path, child: &mut Child) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(addr) = address(dir)
            && let Ok(text) = std::fs::read_to_string(dir.join("tls/fingerprint"))
            && let Ok(fingerprint) = parse_fingerprint(&text)
            && let Ok(client) = Client::connect(addr, fingerprint).await
            && client.schedule().await.is_ok()
        {
            return client;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the sequencer exited with {status}");
        }
        assert!(Instant::now() < deadline, "the sequencer did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `child` SIGTERM.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

/// SIGTERM, then the process must exit 0.
pub fn stop_gracefully(mut child: Child) {
    terminate(&child);
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
}

/// Where the test traders submit: one sequencer's client, or a cluster
/// client that follows the leader.
pub trait Venue: Send + Sync + 'static {
    /// The schedule now.
    fn schedule(&self) -> impl Future<Output = Result<Schedule, ClientError>> + Send;
    /// Submits one envelope.
    fn submit(
        &self,
        envelope: Vec<u8>,
    ) -> impl Future<Output = Result<Receipt, ClientError>> + Send;
    /// Whether `error` means this venue is gone for good (a client whose
    /// sequencer stopped under it); a cluster client fails over instead.
    fn gone(&self, error: &ClientError) -> bool;
}

impl Venue for Client {
    fn schedule(&self) -> impl Future<Output = Result<Schedule, ClientError>> + Send {
        Client::schedule(self)
    }
    fn submit(
        &self,
        envelope: Vec<u8>,
    ) -> impl Future<Output = Result<Receipt, ClientError>> + Send {
        Client::submit(self, envelope)
    }
    fn gone(&self, error: &ClientError) -> bool {
        matches!(error, ClientError::Connection(_))
    }
}

impl Venue for ClusterClient {
    fn schedule(&self) -> impl Future<Output = Result<Schedule, ClientError>> + Send {
        ClusterClient::schedule(self)
    }
    fn submit(
        &self,
        envelope: Vec<u8>,
    ) -> impl Future<Output = Result<Receipt, ClientError>> + Send {
        ClusterClient::submit(self, envelope)
    }
    fn gone(&self, _: &ClientError) -> bool {
        false
    }
}

/// The test traders: `workers` tasks submit one-order bundles
/// ([`one_order`]) to `venue` until `until` or until it is gone, each
/// keeping its envelope across a failover (a cluster client submits it
/// again to the next leader). Returns every receipt as `(batch,
/// commitment)` and the longest time one submission took.
pub async fn load<V: Venue>(
    venue: Arc<V>,
    workers: u64,
    until: Instant,
) -> (Vec<(BatchId, Commitment)>, Duration) {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let venue = Arc::clone(&venue);
        tasks.push(tokio::spawn(async move {
            let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
            let mut receipts = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut nonce = worker << 32;
            let mut schedule: Option<Schedule> = None;
            while Instant::now() < until {
                let fetched = match schedule.take() {
                    Some(cached) => Ok(cached),
                    None => venue.schedule().await,
                };
                let known = match fetched {
                    Ok(known) => known,
                    Err(error) if venue.gone(&error) => break,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let e = target_batch(&known, now_ms(), 30);
                let key = known
                    .batch_keys
                    .iter()
                    .find(|(b, _)| *b == e)
                    .and_then(|(_, k)| BatchPublicKey::from_bytes(k).ok());
                let Some(key) = key else {
                    // The schedule is asked again: its keys ran out.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                nonce += 1;
                let envelope = one_order(&trader, &known, e, &key, nonce);
                schedule = Some(known);
                let started = Instant::now();
                match venue.submit(envelope).await {
                    Ok(receipt) => {
                        slowest = slowest.max(started.elapsed());
                        receipts.push((receipt.e, receipt.commitment));
                    }
                    Err(error) if venue.gone(&error) => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            (receipts, slowest)
        }));
    }
    let mut all = Vec::new();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (receipts, slow) = task.await.expect("worker");
        all.extend(receipts);
        slowest = slowest.max(slow);
    }
    (all, slowest)
}

/// The test traders' envelope: one market order of one lot (market 1, 2
/// or 3, buy or sell by `nonce`), sealed to batch `e`'s `key`.
pub fn one_order(
    trader: &ed25519_dalek::SigningKey,
    schedule: &sealbatch::wire::Schedule,
    e: BatchId,
    key: &BatchPublicKey,
    nonce: u64,
) -> Vec<u8> {
    let orders = [OrderSpec {
        market: MarketId(1 + (nonce % 3) as u32),
        side: if nonce.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        },
        limit: None,
        qty: 1,
        client_order_id: nonce,
    }];
    seal_bundle(
        &mut OsRng,
        trader,
        &schedule.deployment(),
        e,
        key,
        nonce,
        &orders,
    )
    .expect("seals")
    .into_bytes()
}

/// Each batch's published envelopes, from the journal in `dir`; every
/// outcome appears once (a second is a batch settled twice).
pub fn published(dir: &Path) -> BTreeMap<BatchId, BTreeSet<Commitment>> {
    let (_, recovery) = Journal::open_dir(dir, JournalConfig::default()).expect("journal");
    let mut published = BTreeMap::new();
    let mut assembler = ResultAssembler::default();
    for record in recovery.records {
        if let Ok(SequencerRecord::ResultPart(part)) =
            SequencerRecord::decode(record.kind, &record.payload)
            && let Some(outcome) = assembler.push(part).expect("result parts join")
        {
            let envelopes = outcome.envelopes.iter().map(|o| o.commitment).collect();
            assert!(
                published.insert(outcome.e, envelopes).is_none(),
                "batch {} cleared twice",
                outcome.e
            );
        }
    }
    published
}

/// What a journal holds, batch by batch. Built by [`JournalSummary::of`],
/// which fails on a batch sealed or settled twice.
pub struct JournalSummary {
    /// The envelopes journaled for each batch.
    pub envelopes: BTreeMap<BatchId, BTreeSet<Commitment>>,
    /// Each batch's seal.
    pub seals: BTreeMap<BatchId, SignedSeal>,
    /// Each batch's result.
    pub results: BTreeMap<BatchId, BatchOutcome>,
}

impl JournalSummary {
    /// Summarises `records` (LSN, kind, payload), in journal order.
    pub fn of<'a>(
        records: impl IntoIterator<Item = &'a (sealbatch::journal::Lsn, u8, Vec<u8>)>,
    ) -> JournalSummary {
        let mut summary = JournalSummary {
            envelopes: BTreeMap::new(),
            seals: BTreeMap::new(),
            results: BTreeMap::new(),
        };
        let mut assembler = ResultAssembler::default();
        for (lsn, kind, payload) in records {
            match SequencerRecord::decode(*kind, payload).expect("decodes") {
                SequencerRecord::Envelope { e, bytes } => {
                    summary
                        .envelopes
                        .entry(e)
                        .or_default()
                        .insert(Commitment::of(&bytes));
                }
                SequencerRecord::Seal(seal) => {
                    let e = seal.e;
                    assert!(
                        summary.seals.insert(e, seal).is_none(),
                        "batch {e} sealed twice (LSN {lsn})"
                    );
                }
                SequencerRecord::ResultPart(part) => {
                    if let Some(outcome) = assembler.push(part).expect("result parts join") {
                        let e = outcome.e;
                        assert!(
                            summary.results.insert(e, outcome).is_none(),
                            "batch {e} settled twice (LSN {lsn})"
                        );
                    }
                }
                _ => {}
            }
        }
        summary
    }

    /// Each acknowledged envelope is journaled in its batch, which was
    /// sealed and cleared with it in the result exactly once.
    pub fn holds_acknowledged<'a>(
        &self,
        receipts: impl IntoIterator<Item = &'a (BatchId, Commitment)>,
    ) {
        for (e, commitment) in receipts {
            assert!(
                self.envelopes
                    .get(e)
                    .is_some_and(|set| set.contains(commitment)),
                "an acknowledged envelope of batch {e} is not journaled"
            );
            assert!(self.seals.contains_key(e), "batch {e} was not sealed");
            let result = self
                .results
                .get(e)
                .unwrap_or_else(|| panic!("batch {e} was not cleared"));
            assert_eq!(
                result
                    .envelopes
                    .iter()
                    .filter(|o| o.commitment == *commitment)
                    .count(),
                1,
                "an acknowledged envelope of batch {e} is not in its result exactly once"
            );
        }
    }
}

/// The seeds a simulation runs: `default`, or the one
/// `SEALBATCH_SIM_SEED` names.
pub fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("SEALBATCH_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SEALBATCH_SIM_SEED is a number")],
        Err(_) => default.collect(),
    }
}

/// Whether the slow tier runs: `SEALBATCH_TEST_TIER=slow`
/// (`docs/development.md`, "Tests"). The slow tier runs every seed, case and
/// write point at full scale, and the tests marked `#[ignore]`.
pub fn slow_tier() -> bool {
    std::env::var("SEALBATCH_TEST_TIER").is_ok_and(|tier| tier == "slow")
}

/// `range` in the slow tier; its first quarter (at least one) in the fast
/// tier.
pub fn tier_share(range: std::ops::Range<u64>) -> Vec<u64> {
    if slow_tier() {
        range.collect()
    } else {
        let quarter = ((range.end.saturating_sub(range.start)) / 4).max(1);
        (range.start..range.end.min(range.start + quarter)).collect()
    }
}

/// A property test's case count: `PROPTEST_CASES` if set, else `fast` in
/// the fast tier and `slow` in the slow one.
pub fn cases(fast: u32, slow: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if slow_tier() { slow } else { fast })
}

/// Every receipt's envelope is in its batch's published outcome.
pub fn all_published(dir: &Path, receipts: &[(BatchId, Commitment)]) {
    let published = published(dir);
    for (e, commitment) in receipts {
        assert!(
            published.get(e).is_some_and(|set| set.contains(commitment)),
            "an acknowledged envelope of batch {e} is not in its published outcome"
        );
    }
}

/// One `GET path` over a fresh connection: the status line, the headers
/// (lower-cased names) and the body.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
) -> (String, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines.next().expect("a status line").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Debian's Chromium, if it is installed (`apt-get install chromium`;
/// `.ci/run` installs it).
pub fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// No browser here: a failure where one is required
/// (`SEALBATCH_REQUIRE_BROWSER`, as CI sets it), else a note that the
/// browser checks did not run.
pub fn no_browser() {
    assert!(
        std::env::var_os("SEALBATCH_REQUIRE_BROWSER").is_none(),
        "SEALBATCH_REQUIRE_BROWSER is set, but chromium is not installed"
    );
    eprintln!(
        "chromium is not installed: the browser checks did not run (apt-get install chromium)"
    );
}

/// The DOM headless Chromium renders for `url` once it has loaded (a
/// fresh profile; no network beyond the page's own server).
pub fn dump_dom(browser: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--timeout=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium on {url}: {}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `GET /json/list` of Chromium's DevTools HTTP server, which keeps the
/// connection open: the body by its `Content-Length`.
async fn devtools_list(devtools: std::net::SocketAddr) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(devtools).await else {
        return String::new();
    };
    let request = "GET /json/list HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                return body.to_string();
            }
        }
        match tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut chunk)).await
        {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            _ => return String::new(),
        }
    }
}

/// Opens `url` in headless Chromium (QUIC allowed, for WebTransport) and
/// drives it over the DevTools protocol: waits until the JavaScript
/// expression `ready` is true (polled; at most `within`), then answers the
/// value of `read` (a JSON value).
pub async fn run_page(
    browser: &Path,
    url: &str,
    ready: &str,
    read: &str,
    within: std::time::Duration,
) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let profile = tempfile::tempdir().expect("a profile directory");
    let mut child = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let deadline = tokio::time::Instant::now() + within;
    // Chromium writes the port it took to its profile.
    let active = profile.path().join("DevToolsActivePort");
    let port: u16 = loop {
        if let Some(port) = std::fs::read_to_string(&active)
            .ok()
            .and_then(|text| text.lines().next().and_then(|l| l.parse().ok()))
        {
            break port;
        }
        assert!(tokio::time::Instant::now() < deadline, "no DevTools port");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let socket = loop {
        let body = devtools_list(devtools).await;
        let pages: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(socket) = pages.as_array().and_then(|pages| {
            pages
                .iter()
                .find(|p| {
                    p["type"] == "page" && p["url"].as_str().is_some_and(|u| u.starts_with(url))
                })
                .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_string))
        }) {
            break socket;
        }
        assert!(tokio::time::Instant::now() < deadline, "no page for {url}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // Its address as given may name `localhost`, which may resolve to [::1].
    let path = socket
        .split_once("/devtools/")
        .map_or(String::new(), |(_, path)| path.to_string());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{devtools}/devtools/{path}"))
        .await
        .expect("DevTools connects");
    let mut id = 0u64;
    let mut evaluate = async |expression: &str| -> serde_json::Value {
        id += 1;
        let request = serde_json::json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true},
        });
        ws.send(Message::text(request.to_string()))
            .await
            .expect("sent");
        while let Some(message) = ws.next().await {
            let Ok(Message::Text(text)) = message else {
                continue;
            };
            let reply: serde_json::Value = serde_json::from_str(&text).expect("json");
            if reply["id"] == id {
                return reply["result"]["result"]["value"].clone();
            }
        }
        panic!("DevTools closed");
    };
    while evaluate(ready).await != serde_json::Value::Bool(true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url}: not ready in {within:?}; the page: {}",
            evaluate("document.body.innerText").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let value = evaluate(read).await;
    let _ = child.kill().await;
    value
}

/// A committee of five keypers, any three releasing, with short phases (a
/// window certified within seconds); each keyper's keys are made in
/// `root/keyper-{k}`.
pub fn five_keypers(root: &Path) -> sealbatch::node::config::CommitteeConfig {
    let members = (0..5)
        .map(|k| {
            let public =
                sealbatch::keyper_process::init(&root.join(format!("keyper-{k}"))).expect("keys");
            sealbatch::node::config::CommitteeMember {
                signing: hex::encode(public.signing),
                encryption: hex::encode(public.encryption),
            }
        })
        .collect();
    sealbatch::node::config::CommitteeConfig {
        threshold: Some(3),
        window_batches: 40,
        lead_batches: 25,
        phase_ms: [500, 250, 250, 500],
        members,
    }
}

/// The property every layout of `spec/` holds (`sealbatch::codec::Encode`
/// and `Decode`), checked on whatever values a test or simulation makes:
/// a value's encoding decodes to one that encodes to the same bytes, no
/// strict prefix of it decodes (all cuts below 64 bytes and 64 more spread
/// over the rest), and a byte more is refused.
pub fn canonical<T: sealbatch::codec::Encode + sealbatch::codec::Decode + std::fmt::Debug>(
    value: &T,
) {
    let bytes = value.to_bytes();
    let again = T::from_bytes(&bytes).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    assert_eq!(again.to_bytes(), bytes, "{value:?} re-encodes otherwise");
    let len = bytes.len();
    let spread = (64..len).step_by((len / 64).max(1));
    for cut in (0..len.min(64)).chain(spread) {
        assert!(
            T::from_bytes(&bytes[..cut]).is_err(),
            "{cut} of the {len} bytes of {value:?} decode"
        );
    }
    let mut longer = bytes;
    longer.push(0);
    assert!(
        T::from_bytes(&longer).is_err(),
        "{value:?} decodes with a byte more"
    );
}
