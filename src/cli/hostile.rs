//! `loadgen --hostile KIND`: one misbehaving client beside the honest
//! traders, bounded in time, on loopback, to measure what it costs them.
//!
//! Every kind runs at `--hostile-rate` (what the rate counts is named per
//! kind) for the run's duration and reports what it attempted and what the
//! sequencer answered. The honest traders' figures are compared with a run
//! of the same load without it (see `loadgen --help`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use tokio::sync::Mutex;

use crate::client::{Client, ClientError};
use crate::envelope::layout::{bundle_signature_message, encode_body, padded_len};
use crate::envelope::{BatchPublicKey, generate_account_key, seal_bundle, seal_raw_plaintext};
use crate::node::now_ms;
use crate::order::OrderSpec;
use crate::types::{MarketId, Side};
use crate::wire::{self, ClientMessage, Schedule};

use super::connect::target_batch;

/// What the hostile client does. The rate (`--hostile-rate`) counts what
/// each kind's description names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HostileKind {
    /// New QUIC connections per second from one address, each completing
    /// its handshake, asking for the schedule and closing.
    ConnectFlood,
    /// Real client Initial packets per second, each from a fresh port, never
    /// answered: handshakes the server starts and nobody finishes.
    HandshakeFlood,
    /// Connections held open (the rate is how many), each with a stream
    /// trickling one byte of a frame per second.
    Slowloris,
    /// Connections per second sending garbage (an unknown message type) or
    /// an oversized frame.
    Garbage,
    /// Envelopes per second from one trader on one connection: far beyond
    /// its per-connection quota.
    Quota,
    /// Submissions per second of envelopes already submitted.
    Replay,
    /// `GetSchedule` requests per second on one stream.
    ScheduleFlood,
    /// Envelopes per second that open but carry a bad signature (from
    /// random, unfunded keys): the cost is paid at opening, after the seal.
    Forged,
}

impl HostileKind {
    /// Its name on the command line.
    #[must_use]
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_string())
    }
}

/// What the hostile client did and how it was answered.
#[derive(Debug, Default)]
pub struct HostileReport {
    /// Actions attempted.
    pub attempts: u64,
    /// Answers, by kind of answer.
    pub outcomes: BTreeMap<String, u64>,
}

impl HostileReport {
    /// Two lines for the loadgen report.
    #[must_use]
    pub fn render(&self, kind: HostileKind, rate: u64) -> String {
        let name = kind.name();
        let mut out = format!(
            "hostile client       {name} at {rate}/s: {} attempts\n",
            self.attempts
        );
        for (outcome, count) in &self.outcomes {
            out.push_str(&format!("  answered           {count:>12}  {outcome}\n"));
        }
        out
    }
}

#[derive(Default)]
struct Tally {
    attempts: AtomicU64,
    outcomes: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    fn answer(&self, outcome: impl Into<String>) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        *outcomes.entry(outcome.into()).or_default() += 1;
    }

    fn error(&self, error: &ClientError) {
        match error {
            ClientError::Rejected { code, .. } | ClientError::Refused { code, .. } => {
                self.answer(format!("refused: {code}"));
            }
            ClientError::Connection(_) => self.answer("connection closed"),
            ClientError::Timeout => self.answer("no reply"),
            other => self.answer(format!("error: {other}")),
        }
    }
}

/// Runs `kind` at `rate` against `server` for `duration`.
///
/// # Errors
///
/// Only if the hostile client cannot start at all (no schedule, no socket).
pub async fn run(
    kind: HostileKind,
    rate: u64,
    server: SocketAddr,
    fingerprint: [u8; 32],
    duration: Duration,
) -> Result<HostileReport, ClientError> {
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + duration;
    match kind {
        HostileKind::ConnectFlood => {
            let endpoint = crate::net::client_endpoint(server, fingerprint)?;
            paced(rate, until, |_| {
                let endpoint = endpoint.clone();
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    tally.attempt();
                    let connecting = match endpoint.connect(server, "localhost") {
                        Ok(connecting) => connecting,
                        Err(error) => return tally.answer(format!("connect: {error}")),
                    };
                    match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                        Ok(Ok(connection)) => {
                            tally.answer("handshake done");
                            connection.close(0u32.into(), b"flood");
                        }
                        Ok(Err(error)) => tally.answer(format!("refused: {error}")),
                        Err(_) => tally.answer("handshake timed out"),
                    }
                });
            })
            .await;
        }
        HostileKind::HandshakeFlood => {
            // Paced with sleeps on a thread of its own, off the runtime.
            let tally = Arc::clone(&tally);
            tokio::task::spawn_blocking(move || {
                handshake_flood(rate, server, fingerprint, until, &tally)
            })
            .await
            .map_err(|error| ClientError::Connection(error.to_string()))??;
        }
        HostileKind::Slowloris => {
            let mut held = Vec::new();
            for _ in 0..rate {
                tally.attempt();
                let endpoint = crate::net::client_endpoint(server, fingerprint)?;
                match endpoint.connect(server, "localhost") {
                    Ok(connecting) => match connecting.await {
                        Ok(connection) => {
                            tally.answer("held open");
                            held.push(tokio::spawn(trickle(connection, until, Arc::clone(&tally))));
                        }
                        Err(error) => tally.answer(format!("refused: {error}")),
                    },
                    Err(error) => tally.answer(format!("connect: {error}")),
                }
            }
            for task in held {
                let _ = task.await;
            }
        }
        HostileKind::Garbage => {
            let endpoint = crate::net::client_endpoint(server, fingerprint)?;
            paced(rate, until, |i| {
                let endpoint = endpoint.clone();
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    tally.attempt();
                    garbage(&endpoint, server, i, &tally).await;
                });
            })
            .await;
        }
        HostileKind::Quota | HostileKind::Replay | HostileKind::Forged => {
            let client = Arc::new(Client::connect(server, fingerprint).await?);
            let schedule = client.schedule().await?;
            let sender = Arc::new(Mutex::new(Sender::new(kind, schedule)));
            paced(rate, until, |_| {
                let client = Arc::clone(&client);
                let sender = Arc::clone(&sender);
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    let envelope = sender.lock().await.next();
                    let envelope = match envelope {
                        Some(envelope) => envelope,
                        None => {
                            // The batch to seal to is past the schedule's
                            // announced keys: fetch a newer one.
                            if let Ok(schedule) = client.schedule().await {
                                sender.lock().await.schedule = schedule;
                            }
                            return;
                        }
                    };
                    tally.attempt();
                    match client.submit(envelope.clone()).await {
                        Ok(_) => {
                            tally.answer("receipted");
                            sender.lock().await.sent.push(envelope);
                        }
                        Err(error) => tally.error(&error),
                    }
                });
            })
            .await;
        }
        HostileKind::ScheduleFlood => {
            let client = Arc::new(Client::connect(server, fingerprint).await?);
            paced(rate, until, |_| {
                let client = Arc::clone(&client);
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    tally.attempt();
                    match client
                        .request(|request_id| ClientMessage::GetSchedule { request_id })
                        .await
                    {
                        Ok(wire::ServerMessage::Schedule(_)) => tally.answer("schedule"),
                        Ok(wire::ServerMessage::Error { code, .. }) => {
                            tally.answer(format!("refused: {code}"));
                        }
                        Ok(_) => tally.answer("other"),
                        Err(error) => tally.error(&error),
                    }
                });
            })
            .await;
        }
    }
    // Let the last answers arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcomes = tally
        .outcomes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(HostileReport {
        attempts: tally.attempts.load(Ordering::Relaxed),
        outcomes,
    })
}

/// Calls `act(i)` `rate` times per second, evenly, until `until`.
async fn paced(rate: u64, until: Instant, mut act: impl FnMut(u64)) {
    let tick = Duration::from_millis(10);
    let per_tick = rate as f64 * tick.as_secs_f64();
    let mut ticker = tokio::time::interval(tick);
    let mut due = 0.0f64;
    let mut i = 0u64;
    while Instant::now() < until {
        ticker.tick().await;
        due += per_tick;
        while due >= 1.0 {
            due -= 1.0;
            act(i);
            i += 1;
        }
    }
}

/// A stream trickling one byte of a valid `GetSchedule` frame per second,
/// over and over, until `until`.
async fn trickle(connection: quinn::Connection, until: Instant, tally: Arc<Tally>) {
    let Ok((mut send, _recv)) = connection.open_bi().await else {
        return tally.answer("stream refused");
    };
    let mut frame = Vec::new();
    if wire::encode(&ClientMessage::GetSchedule { request_id: 1 }, &mut frame).is_err() {
        return;
    }
    let mut bytes = frame.iter().cycle();
    while Instant::now() < until {
        let Some(&byte) = bytes.next() else { break };
        if send.write_all(&[byte]).await.is_err() {
            return tally.answer("closed by the server");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    connection.close(0u32.into(), b"done");
}

/// One connection that sends garbage (even `i`) or an oversized frame (odd
/// `i`) and waits to be closed.
async fn garbage(endpoint: &quinn::Endpoint, server: SocketAddr, i: u64, tally: &Tally) {
    let connection = match endpoint.connect(server, "localhost") {
        Ok(connecting) => match connecting.await {
            Ok(connection) => connection,
            Err(error) => return tally.answer(format!("refused: {error}")),
        },
        Err(error) => return tally.answer(format!("connect: {error}")),
    };
    let Ok((mut send, _recv)) = connection.open_bi().await else {
        return tally.answer("stream refused");
    };
    let sent = if i.is_multiple_of(2) {
        send.write_all(&[5, 0, 0, 0, 0x7f, 1, 2, 3, 4]).await
    } else {
        let mut oversized = (1u32 << 20).to_le_bytes().to_vec();
        oversized.extend_from_slice(&[0x02; 64]);
        send.write_all(&oversized).await
    };
    if sent.is_err() {
        return tally.answer("closed before writing");
    }
    match tokio::time::timeout(Duration::from_secs(5), connection.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            tally.answer(format!("closed with code {}", close.error_code));
        }
        Ok(other) => tally.answer(format!("closed: {other}")),
        Err(_) => tally.answer("not closed within 5 s"),
    }
}

/// Real client Initials (quinn-proto's own) sent from fresh ports and never
/// followed up: each makes the server start a handshake.
fn handshake_flood(
    rate: u64,
    server: SocketAddr,
    fingerprint: [u8; 32],
    until: Instant,
    tally: &Tally,
) -> Result<(), ClientError> {
    let config = crate::net::client_config(fingerprint)?;
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut next = Instant::now();
    let mut buf = Vec::with_capacity(1500);
    while Instant::now() < until {
        tally.attempt();
        let now = Instant::now();
        let sent = endpoint
            .connect(now, config.clone(), server, "localhost")
            .ok()
            .and_then(|(_, mut connection)| {
                buf.clear();
                let transmit = connection.poll_transmit(now, 1, &mut buf)?;
                let socket = UdpSocket::bind(("127.0.0.1", 0)).ok()?;
                socket.send_to(&buf[..transmit.size], server).ok()
            });
        tally.answer(if sent.is_some() {
            "Initial sent, never answered"
        } else {
            "not sent"
        });
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

/// Envelopes for the submitting kinds.
struct Sender {
    kind: HostileKind,
    schedule: Schedule,
    rng: ChaCha20Rng,
    trader: ed25519_dalek::SigningKey,
    nonce: u64,
    /// Envelopes receipted, to replay.
    sent: Vec<Vec<u8>>,
    replayed: usize,
}

impl Sender {
    fn new(kind: HostileKind, schedule: Schedule) -> Sender {
        let mut rng = ChaCha20Rng::seed_from_u64(OsRng.next_u64());
        let trader = generate_account_key(&mut rng);
        Sender {
            kind,
            schedule,
            rng,
            trader,
            nonce: 0,
            sent: Vec::new(),
            replayed: 0,
        }
    }

    fn next(&mut self) -> Option<Vec<u8>> {
        // Replay: every fourth submission is fresh (to have something to
        // replay), the rest repeat earlier ones.
        if self.kind == HostileKind::Replay
            && !self.sent.is_empty()
            && !self.nonce.is_multiple_of(4)
        {
            self.nonce += 1;
            self.replayed += 1;
            return self.sent.get(self.replayed % self.sent.len()).cloned();
        }
        let e = target_batch(&self.schedule, now_ms(), 20);
        let key = self
            .schedule
            .batch_keys
            .iter()
            .find(|(b, _)| *b == e)
            .and_then(|(_, k)| BatchPublicKey::from_bytes(k).ok())?;
        self.nonce += 1;
        let market = self.schedule.markets.first()?;
        let orders = [OrderSpec {
            market: MarketId(market.id),
            side: Side::Buy,
            limit: Some(market.band_min),
            qty: 1,
            client_order_id: self.nonce,
        }];
        if self.kind != HostileKind::Forged {
            return seal_bundle(
                &mut self.rng,
                &self.trader,
                &self.schedule.deployment(),
                e,
                &key,
                self.nonce,
                &orders,
            )
            .ok()
            .map(|envelope| envelope.into_bytes());
        }
        // A bundle naming a random account, signed by another random key.
        let named = generate_account_key(&mut self.rng);
        let signer = generate_account_key(&mut self.rng);
        let body = encode_body(&named.verifying_key().to_bytes(), self.nonce, &orders).ok()?;
        let mut plaintext = body.clone();
        let signature = ed25519_dalek::Signer::sign(
            &signer,
            &bundle_signature_message(&self.schedule.deployment(), e, &body),
        );
        plaintext.extend_from_slice(&signature.to_bytes());
        plaintext.resize(padded_len(orders.len())?, 0);
        let mut r = [0u8; 32];
        self.rng.fill_bytes(&mut r);
        let r = curve25519_dalek::Scalar::from_bytes_mod_order(r).to_bytes();
        seal_raw_plaintext(&r, e, &key, &plaintext)
            .ok()
            .map(|envelope| envelope.into_bytes())
    }
}
