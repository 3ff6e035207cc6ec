//! The client library: one QUIC connection to a sequencer, pinned to its
//! certificate fingerprint, with one long-lived stream carrying pipelined
//! requests (each with its own id) and, after [`Client::subscribe`], the
//! batch events. Signed requests (balances, withdrawals, the operator's
//! deposits and payouts) are signed here with the caller's key.
//!
//! Under a keyper committee, [`Client::schedule`] keeps only batch keys
//! the committee certified (at least `t` keypers' approvals, checked here):
//! an uncertified key never reaches the caller, so the client never seals
//! to it. [`KeyTrust::Committee`] pins the committee by its id; by default
//! ([`KeyTrust::Named`]) the committee the sequencer names is checked for
//! consistency, and a sequencer in trusted-operator mode is accepted.
//!
//! Every pushed batch event is checked before the caller sees it
//! ([`check::ResultCheck`]): a seal's signature, and a result's root, its
//! `s_e` against the batch's certified key and, under a committee, `t`
//! keypers' attestations that they released their shares for exactly that
//! seal. A result that fails is never delivered as `BatchCleared`: the
//! subscriber gets an `Error` (request id 0, code `Protocol`) naming the
//! batch and why, and [`Client::results_refused`] counts it. So a sequencer
//! that obtained a batch key for one seal cannot show its traders another.
//!
//! A replicated sequencer's clients use [`cluster::ClusterClient`], which
//! follows the leader across failovers.
//!
//! Layout: this file is one connection ([`Client`]); [`check`] what pushed
//! events are checked against; [`cluster`] the client of a cluster of
//! replicas.
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr, fingerprint: [u8; 32]) -> Result<(), sealbatch::client::ClientError> {
//! use sealbatch::client::Client;
//! let client = Client::connect(addr, fingerprint).await?;
//! let schedule = client.schedule().await?;
//! println!("batch {} is open", schedule.open_batch);
//! # Ok(()) }
//! ```

pub mod check;
pub mod cluster;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot};

use crate::envelope::{Commitment, Receipt, ReceiptChecker, SequencerPublicKey, header_batch};
use crate::market::{AccountId, AssetId};
use crate::net::{NetError, client_endpoint};
use crate::signed::{
    CHANNEL_BINDING_LABEL, ChannelBinding, DepositStatement, PayoutStatement, Query,
    SignedWithdrawal, Statement, Withdrawal, WithdrawalStatement,
};
use crate::types::BatchId;
use crate::wire::{
    self, ClientMessage, FrameDecoder, ReasonCode, Schedule, ServerMessage,
    schedule_signing_message,
};

/// Pushed events buffered for a subscriber before the oldest are dropped.
pub const EVENTS_BUFFER: usize = 4096;
/// Frames queued for writing before `request` waits.
const OUTBOUND_BUFFER: usize = 65_536;
/// How long a request waits for its reply. A receipt waits for an fsync and a
/// batch event for a batch, so this is generous.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What went wrong talking to the sequencer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint or connection could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Connection(String),
    /// No reply within [`REQUEST_TIMEOUT`].
    #[error("no reply within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    /// The sequencer refused an envelope.
    #[error("rejected ({code}): {message} (open batch {next_open})")]
    Rejected {
        /// Why.
        code: ReasonCode,
        /// The batch open at the time.
        next_open: BatchId,
        /// For [`ReasonCode::Busy`]: wait this long before submitting again.
        retry_after: std::time::Duration,
        /// The sequencer's detail.
        message: String,
    },
    /// The sequencer refused a request.
    #[error("refused ({code}): {message}")]
    Refused {
        /// Why.
        code: ReasonCode,
        /// The sequencer's detail.
        message: String,
    },
    /// A reply does not fit the request, or a signature does not verify.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The batch keys are not certified by the committee this client
    /// trusts ([`KeyTrust`]).
    #[error("uncertified batch keys: {0}")]
    Uncertified(String),
}

/// Which batch keys a client seals to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyTrust {
    /// Keys certified by the committee the sequencer names; in
    /// trusted-operator mode (no committee), the sequencer's own keys.
    #[default]
    Named,
    /// Only keys certified by the committee with this id: a sequencer
    /// without a committee, or naming another, is refused.
    Committee([u8; 32]),
}

/// Who holds the batch keys, as the last schedule showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCustody {
    /// The sequencer's embedded custodian (trusted-operator mode).
    Operator,
    /// The keyper committee with this id; every key the schedule kept is
    /// certified by it.
    Committee {
        /// The committee id.
        id: [u8; 32],
        /// Its threshold.
        threshold: usize,
        /// Its size.
        keypers: usize,
    },
}

/// An account as its owner (or an operator) reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    /// The sequence number the account's next withdrawal must carry.
    pub next_withdrawal: u64,
    /// `(asset, units)` for each asset held, ascending.
    pub balances: Vec<(u32, u64)>,
}

/// Requests waiting for their reply; `None` once the stream has ended, so
/// that a request made after that fails at once instead of timing out.
type Waiters = Arc<Mutex<Option<BTreeMap<u64, oneshot::Sender<ServerMessage>>>>>;

/// A connection to a sequencer; cheap to share behind an `Arc`.
pub struct Client {
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    outbound: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    events: Mutex<Option<mpsc::Receiver<ServerMessage>>>,
    next_id: AtomicU64,
    sequencer: Mutex<Option<SequencerPublicKey>>,
    /// Checks receipts against the sequencer key once it is known, each
    /// receipt group's signature once.
    receipts: Mutex<Option<ReceiptChecker>>,
    trust: Mutex<KeyTrust>,
    custody: Mutex<Option<KeyCustody>>,
    /// The batch keys verified certificates hold, by batch (from the open
    /// batch on).
    certified: Mutex<BTreeMap<BatchId, [u8; 32]>>,
    /// What pushed events are checked against, shared with the reader.
    check: Arc<Mutex<check::ResultCheck>>,
    /// Results refused by the check.
    refused: Arc<AtomicU64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.connection.remote_address())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr`, trusting only the certificate whose SHA-256 is
    /// `fingerprint`, and opens the request stream.
    ///
    /// # Errors
    ///
    /// [`ClientError::Net`] or [`ClientError::Connection`].
    pub async fn connect(addr: SocketAddr, fingerprint: [u8; 32]) -> Result<Client, ClientError> {
        let endpoint = client_endpoint(addr, fingerprint)?;
        let connecting = endpoint
            .connect(addr, "localhost")
            .map_err(|error| ClientError::Connection(error.to_string()))?;
        let connection = connecting
            .await
            .map_err(|error| ClientError::Connection(error.to_string()))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|error| ClientError::Connection(error.to_string()))?;
        let waiters: Waiters = Arc::new(Mutex::new(Some(BTreeMap::new())));
        let (events_tx, events_rx) = mpsc::channel(EVENTS_BUFFER);
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_BUFFER);
        tokio::spawn(write_frames(send, outbound_rx));
        let check = Arc::new(Mutex::new(check::ResultCheck::default()));
        let refused = Arc::new(AtomicU64::new(0));
        tokio::spawn(read_frames(
            recv,
            Arc::clone(&waiters),
            events_tx,
            Arc::clone(&check),
            Arc::clone(&refused),
        ));
        Ok(Client {
            connection,
            _endpoint: endpoint,
            outbound,
            waiters,
            events: Mutex::new(Some(events_rx)),
            next_id: AtomicU64::new(1),
            sequencer: Mutex::new(None),
            receipts: Mutex::new(None),
            trust: Mutex::new(KeyTrust::default()),
            custody: Mutex::new(None),
            certified: Mutex::new(BTreeMap::new()),
            check,
            refused,
        })
    }

    /// Pushed events refused by the check ([`check::ResultCheck`]): seals
    /// that do not verify, results without their evidence.
    #[must_use]
    pub fn results_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn check(&self) -> std::sync::MutexGuard<'_, check::ResultCheck> {
        self.check.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Which batch keys [`schedule`](Self::schedule) keeps from now on.
    pub fn set_trust(&self, trust: KeyTrust) {
        *self.trust.lock().unwrap_or_else(|p| p.into_inner()) = trust;
    }

    /// Who held the batch keys at the last [`schedule`](Self::schedule).
    #[must_use]
    pub fn custody(&self) -> Option<KeyCustody> {
        *self.custody.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The underlying QUIC connection.
    #[must_use]
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `message` (its request id is replaced) and waits for the reply.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connection`] if the connection closes first,
    /// [`ClientError::Timeout`] after [`REQUEST_TIMEOUT`].
    pub async fn request(
        &self,
        build: impl FnOnce(u64) -> ClientMessage,
    ) -> Result<ServerMessage, ClientError> {
        let id = self.next_request_id();
        let message = build(id);
        let mut frame = Vec::new();
        wire::encode(&message, &mut frame)
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        let (tx, rx) = oneshot::channel();
        match self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            Some(waiters) => {
                waiters.insert(id, tx);
            }
            None => {
                let reason = self
                    .connection
                    .close_reason()
                    .map_or_else(|| "the stream closed".to_string(), |r| r.to_string());
                return Err(ClientError::Connection(reason));
            }
        }
        if self.outbound.send(frame).await.is_err() {
            return Err(ClientError::Connection("the connection is closed".into()));
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => {
                let reason = self
                    .connection
                    .close_reason()
                    .map_or_else(|| "the stream closed".to_string(), |r| r.to_string());
                Err(ClientError::Connection(reason))
            }
            Err(_) => {
                if let Some(waiters) = self
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                {
                    waiters.remove(&id);
                }
                Err(ClientError::Timeout)
            }
        }
    }

    /// Fetches the schedule and checks its signature. The first schedule's
    /// sequencer key is remembered and later receipts are checked against it.
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] if the signature does not verify.
    pub async fn schedule(&self) -> Result<Schedule, ClientError> {
        match self
            .request(|request_id| ClientMessage::GetSchedule { request_id })
            .await?
        {
            ServerMessage::Schedule(schedule) => {
                let key = SequencerPublicKey::from_bytes(&schedule.sequencer_key)
                    .map_err(|error| ClientError::Protocol(format!("sequencer key: {error}")))?;
                key.verify_message(&schedule_signing_message(&schedule), &schedule.signature)
                    .map_err(|error| {
                        ClientError::Protocol(format!("schedule signature: {error}"))
                    })?;
                {
                    let mut known = self.sequencer.lock().unwrap_or_else(|p| p.into_inner());
                    match *known {
                        Some(k) if k != key => {
                            return Err(ClientError::Protocol("the sequencer key changed".into()));
                        }
                        _ => *known = Some(key),
                    }
                }
                self.receipts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| ReceiptChecker::new(key));
                self.check().set_sequencer(key);
                self.certified(schedule).await
            }
            other => Err(unexpected(other)),
        }
    }

    /// `schedule` with only the batch keys the trusted committee certified
    /// (all of them in trusted-operator mode, if trusted). Certificates are
    /// asked for only when the schedule holds a key not certified before
    /// on this connection (once per window), and each is verified once.
    async fn certified(&self, mut schedule: Schedule) -> Result<Schedule, ClientError> {
        let trust = *self.trust.lock().unwrap_or_else(|p| p.into_inner());
        let custody = *self.custody.lock().unwrap_or_else(|p| p.into_inner());
        let known = {
            let mut certified = self.certified.lock().unwrap_or_else(|p| p.into_inner());
            // Keys of batches past are not needed again.
            certified.retain(|&e, _| e >= schedule.open_batch);
            schedule
                .batch_keys
                .iter()
                .all(|(e, key)| certified.get(e) == Some(key))
        };
        match (custody, trust) {
            (Some(KeyCustody::Operator), KeyTrust::Named) => {
                let mut check = self.check();
                for (e, key) in &schedule.batch_keys {
                    check.add_key(*e, *key);
                }
                return Ok(schedule);
            }
            (Some(KeyCustody::Committee { id, .. }), _) if known => {
                check_committee(trust, id)?;
                return Ok(self.keep_certified(schedule));
            }
            _ => {}
        }
        let reply = self
            .request(|request_id| ClientMessage::GetKeyCertificates { request_id })
            .await?;
        let ServerMessage::KeyCertificates {
            committee,
            certificates,
            ..
        } = reply
        else {
            return Err(unexpected(reply));
        };
        let Some(committee) = committee else {
            *self.custody.lock().unwrap_or_else(|p| p.into_inner()) = Some(KeyCustody::Operator);
            if let KeyTrust::Committee(id) = trust {
                return Err(ClientError::Uncertified(format!(
                    "the sequencer runs in trusted-operator mode, not under committee {}",
                    hex::encode(id)
                )));
            }
            let mut check = self.check();
            check.set_operator();
            for (e, key) in &schedule.batch_keys {
                check.add_key(*e, *key);
            }
            return Ok(schedule);
        };
        // The committee must be bound to this deployment: keys certified
        // for another (a relaunch, another venue) are not this one's.
        if *committee.deployment() != schedule.deployment() {
            return Err(ClientError::Uncertified(format!(
                "the committee is bound to deployment {}, the schedule's is {}",
                committee.deployment(),
                schedule.deployment()
            )));
        }
        *self.custody.lock().unwrap_or_else(|p| p.into_inner()) = Some(KeyCustody::Committee {
            id: committee.id(),
            threshold: committee.threshold(),
            keypers: committee.size(),
        });
        check_committee(trust, committee.id())?;
        {
            let mut certified = self.certified.lock().unwrap_or_else(|p| p.into_inner());
            let mut check = self.check();
            for certificate in &certificates {
                if certificate.verify(&committee) {
                    for e in certificate.window.batches() {
                        if let (Some(key), true) = (certificate.key(e), e >= schedule.open_batch) {
                            certified.insert(e, key);
                            check.add_key(e, key);
                        }
                    }
                }
            }
            check.set_committee(committee);
        }
        schedule = self.keep_certified(schedule);
        Ok(schedule)
    }

    /// `schedule` without the keys no verified certificate holds: a key the
    /// committee did not certify is never handed out.
    fn keep_certified(&self, mut schedule: Schedule) -> Schedule {
        let certified = self.certified.lock().unwrap_or_else(|p| p.into_inner());
        schedule
            .batch_keys
            .retain(|(e, key)| certified.get(e) == Some(key));
        schedule
    }

    /// Submits a sealed envelope and waits for its receipt, which is checked
    /// against the sequencer key of [`Client::schedule`] (call it first).
    ///
    /// # Errors
    ///
    /// [`ClientError::Rejected`] with the reason and the open batch.
    pub async fn submit(&self, envelope: Vec<u8>) -> Result<Receipt, ClientError> {
        let statement = (header_batch(&envelope), Commitment::of(&envelope));
        let reply = self
            .request(|request_id| ClientMessage::Submit {
                request_id,
                envelope,
            })
            .await?;
        match reply {
            ServerMessage::Receipt { receipt, .. } => {
                let receipt = Receipt::from_bytes(&receipt)
                    .map_err(|error| ClientError::Protocol(format!("receipt: {error}")))?;
                let mut checker = self.receipts.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(checker) = checker.as_mut() {
                    checker
                        .check(&receipt)
                        .map_err(|error| ClientError::Protocol(format!("receipt: {error}")))?;
                }
                receipt_is_for(&receipt, statement)?;
                Ok(receipt)
            }
            ServerMessage::Rejected {
                code,
                next_open,
                retry_after_ms,
                message,
                ..
            } => Err(ClientError::Rejected {
                code,
                next_open,
                retry_after: std::time::Duration::from_millis(u64::from(retry_after_ms)),
                message,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes this connection to batch events; returns their receiver
    /// (once per client).
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] if called twice.
    pub async fn subscribe(&self) -> Result<mpsc::Receiver<ServerMessage>, ClientError> {
        // Results are checked against the committee (or its absence): know
        // which before the first one comes.
        if self.custody().is_none() {
            self.schedule().await?;
        }
        let events = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| ClientError::Protocol("already subscribed".into()))?;
        match self
            .request(|request_id| ClientMessage::Subscribe { request_id })
            .await?
        {
            ServerMessage::Ack { .. } => Ok(events),
            other => Err(unexpected(other)),
        }
    }

    /// An account's balances and next withdrawal sequence number, asked
    /// with `key`: the account's own key or an operator's. The query is
    /// signed for this connection only.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with [`ReasonCode::Unauthorized`] for a key
    /// that is neither.
    pub async fn account(
        &self,
        key: &SigningKey,
        account: [u8; 32],
    ) -> Result<AccountState, ClientError> {
        let signed = Query::Account(AccountId(account)).sign(
            key,
            &self.sequencer_key().await?,
            &self.channel_binding()?,
        );
        match self
            .request(|request_id| ClientMessage::GetAccount {
                request_id,
                account,
                requester: signed.requester,
                signature: signed.signature,
            })
            .await?
        {
            ServerMessage::Account {
                next_withdrawal,
                balances,
                ..
            } => Ok(AccountState {
                next_withdrawal,
                balances,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Credits an account (demo mode), waiting until it is durable.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] outside demo mode.
    pub async fn deposit(
        &self,
        account: [u8; 32],
        asset: u32,
        amount: u64,
    ) -> Result<(), ClientError> {
        self.operation(|request_id| ClientMessage::Deposit {
            request_id,
            account,
            asset,
            amount,
        })
        .await
    }

    /// Withdraws `amount` units of `asset` from the account of `key`, to be
    /// paid out to `destination`, as the account's withdrawal number
    /// `sequence` (`None`: the next, read with [`Client::account`]).
    /// Returns the withdrawal's id once it is durable.
    ///
    /// A withdrawal whose answer was lost is not sent again: the account's
    /// next sequence number says whether it was taken.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with [`ReasonCode::Replayed`] for a
    /// sequence number that is not the account's next,
    /// [`ReasonCode::InvalidRequest`] for more than the balance (nothing
    /// changes then), [`ReasonCode::Busy`] past the sequencer's rate.
    pub async fn withdraw(
        &self,
        key: &SigningKey,
        asset: u32,
        amount: u64,
        destination: &[u8],
        sequence: Option<u64>,
    ) -> Result<u64, ClientError> {
        let account = key.verifying_key().to_bytes();
        let sequence = match sequence {
            Some(sequence) => sequence,
            None => self.account(key, account).await?.next_withdrawal,
        };
        let withdrawal = WithdrawalStatement {
            account: AccountId(account),
            asset: AssetId(asset),
            amount,
            sequence,
            destination: destination.to_vec(),
        }
        .sign(key, &self.sequencer_key().await?)
        .map_err(|error| ClientError::Protocol(error.to_string()))?;
        self.send_withdrawal(withdrawal).await
    }

    /// Sends a withdrawal signed already (with [`Statement::sign`]); returns its id once durable.
    ///
    /// # Errors
    ///
    /// As [`Client::withdraw`].
    pub async fn send_withdrawal(&self, withdrawal: SignedWithdrawal) -> Result<u64, ClientError> {
        match self
            .request(|request_id| ClientMessage::Withdraw {
                request_id,
                withdrawal,
            })
            .await?
        {
            ServerMessage::Withdrawn { id, .. } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Withdrawals awaiting payout with an id above `after`, asked with an
    /// operator's `key`: at most [`wire::PAYOUTS_MAX`], and whether more
    /// follow. Every withdrawal returned is durable and its trader's
    /// signature verified here.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with [`ReasonCode::Unauthorized`] for a key
    /// the sequencer does not list; [`ClientError::Protocol`] if a
    /// withdrawal's signature does not verify.
    pub async fn payouts(
        &self,
        key: &SigningKey,
        after: u64,
    ) -> Result<(Vec<Withdrawal>, bool), ClientError> {
        let sequencer = self.sequencer_key().await?;
        let signed = Query::Payouts { after }.sign(key, &sequencer, &self.channel_binding()?);
        match self
            .request(|request_id| ClientMessage::GetPayouts {
                request_id,
                after,
                requester: signed.requester,
                signature: signed.signature,
            })
            .await?
        {
            ServerMessage::Payouts {
                withdrawals, more, ..
            } => {
                for w in &withdrawals {
                    w.signed.verify(&sequencer).map_err(|error| {
                        ClientError::Protocol(format!("withdrawal {}: {error}", w.id))
                    })?;
                }
                Ok((withdrawals, more))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Acknowledges, with an operator's `key`, that withdrawal `id` was paid
    /// out as `reference` (a chain transaction id, a transfer id), waiting
    /// until it is durable. The same acknowledgement again is answered as
    /// the first: retrying is safe.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with [`ReasonCode::Unauthorized`] for a key
    /// the sequencer does not list, [`ReasonCode::InvalidRequest`] for no
    /// such withdrawal or one paid out with another reference.
    pub async fn acknowledge_payout(
        &self,
        key: &SigningKey,
        id: u64,
        reference: &[u8],
    ) -> Result<(), ClientError> {
        let payout = PayoutStatement {
            operator: [0; 32],
            withdrawal: id,
            reference: reference.to_vec(),
        }
        .sign(key, &self.sequencer_key().await?)
        .map_err(|error| ClientError::Protocol(error.to_string()))?;
        self.operation(|request_id| ClientMessage::AcknowledgePayout { request_id, payout })
            .await
    }

    /// The sequencer's key: the one [`Client::schedule`] verified, fetched
    /// now if none was.
    async fn sequencer_key(&self) -> Result<SequencerPublicKey, ClientError> {
        let known = *self.sequencer.lock().unwrap_or_else(|p| p.into_inner());
        match known {
            Some(key) => Ok(key),
            None => SequencerPublicKey::from_bytes(&self.schedule().await?.sequencer_key)
                .map_err(|error| ClientError::Protocol(format!("sequencer key: {error}"))),
        }
    }

    /// This connection's [`ChannelBinding`], which signed queries are bound
    /// to.
    fn channel_binding(&self) -> Result<ChannelBinding, ClientError> {
        let mut binding = [0u8; 32];
        self.connection
            .export_keying_material(&mut binding, CHANNEL_BINDING_LABEL, b"")
            .map_err(|_| {
                ClientError::Protocol("the TLS session exports no keying material".into())
            })?;
        Ok(ChannelBinding(binding))
    }

    /// A request answered by `Ack` once durable.
    /// Credits `account` with a deposit signed by the operator `key`,
    /// known outside the venue by `reference` (a chain transaction id, a
    /// transfer id), waiting until it is durable. The same reference again
    /// credits nothing and is acknowledged again: retrying is safe. The
    /// signature binds the deposit to this sequencer's key (fetched with
    /// [`Client::schedule`] if not known yet).
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with [`ReasonCode::Unauthorized`] for a key
    /// the sequencer does not list, [`ReasonCode::InvalidRequest`] for a
    /// reference credited before with another statement, an amount over
    /// the sequencer's bound or a reference of more than 64 bytes.
    pub async fn operator_deposit(
        &self,
        key: &SigningKey,
        account: [u8; 32],
        asset: u32,
        amount: u64,
        reference: &[u8],
    ) -> Result<(), ClientError> {
        let sequencer = self.sequencer_key().await?;
        let deposit = DepositStatement {
            operator: [0; 32],
            account: AccountId(account),
            asset: AssetId(asset),
            amount,
            reference: reference.to_vec(),
        }
        .sign(key, &sequencer)
        .map_err(|error| ClientError::Protocol(error.to_string()))?;
        self.operation(|request_id| ClientMessage::OperatorDeposit {
            request_id,
            deposit,
        })
        .await
    }

    async fn operation(
        &self,
        message: impl FnOnce(u64) -> ClientMessage,
    ) -> Result<(), ClientError> {
        match self.request(message).await? {
            ServerMessage::Ack { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.connection.close(0u32.into(), b"bye");
    }
}

/// The batch a trader should seal to at `now_ms`: the one that will still
/// be open `margin_ms` from now (the time the envelope needs to arrive), by
/// the schedule's batch clock (0 before genesis).
#[must_use]
pub fn target_batch(schedule: &Schedule, now_ms: u64, margin_ms: u64) -> BatchId {
    schedule
        .clock()
        .batch_at(now_ms.saturating_add(margin_ms))
        .unwrap_or(BatchId::ZERO)
}

/// Whether committee `id` is one `trust` accepts.
fn check_committee(trust: KeyTrust, id: [u8; 32]) -> Result<(), ClientError> {
    match trust {
        KeyTrust::Committee(want) if want != id => Err(ClientError::Uncertified(format!(
            "the sequencer names committee {}, not {}",
            hex::encode(id),
            hex::encode(want)
        ))),
        _ => Ok(()),
    }
}

/// A pushed event, checked ([`check::ResultCheck`]): a seal or result that
/// fails becomes an `Error` (request id 0, code `Protocol`) naming why.
fn checked(
    check: &Mutex<check::ResultCheck>,
    refused: &AtomicU64,
    message: ServerMessage,
) -> ServerMessage {
    let mut check = check.lock().unwrap_or_else(|p| p.into_inner());
    let verdict = match &message {
        ServerMessage::BatchOpened { e, public_key, .. } => {
            if !check.is_committee() {
                check.add_key(*e, *public_key);
            }
            Ok(())
        }
        ServerMessage::BatchSealed(sealed) => check.sealed(sealed),
        ServerMessage::BatchCleared(cleared) => check.cleared(cleared),
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => message,
        Err(error) => {
            refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "a batch event from the sequencer refused");
            ServerMessage::Error {
                request_id: 0,
                code: ReasonCode::Protocol,
                message: format!("refused: {error}"),
            }
        }
    }
}

fn unexpected(message: ServerMessage) -> ClientError {
    match message {
        ServerMessage::Error { code, message, .. } => ClientError::Refused { code, message },
        ServerMessage::Rejected { code, message, .. } => ClientError::Refused { code, message },
        other => ClientError::Protocol(format!("unexpected reply {other:?}")),
    }
}

async fn write_frames(mut send: quinn::SendStream, mut frames: mpsc::Receiver<Vec<u8>>) {
    let mut buf = Vec::new();
    while let Some(frame) = frames.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame);
        while buf.len() < (256 << 10) {
            match frames.try_recv() {
                Ok(frame) => buf.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if send.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    waiters: Waiters,
    events: mpsc::Sender<ServerMessage>,
    check: Arc<Mutex<check::ResultCheck>>,
    refused: Arc<AtomicU64>,
) {
    let mut decoder: FrameDecoder<ServerMessage> = FrameDecoder::new();
    let mut chunk = vec![0u8; 64 << 10];
    'stream: loop {
        let n = match recv.read(&mut chunk).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => break,
        };
        decoder.extend(&chunk[..n]);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => match message.request_id() {
                    Some(id) => {
                        let waiter = waiters
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .as_mut()
                            .and_then(|w| w.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(message);
                        }
                    }
                    None => {
                        let message = checked(&check, &refused, message);
                        // A slow subscriber loses events rather than stall replies.
                        let _ = events.try_send(message);
                    }
                },
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "bad frame from the sequencer");
                    break 'stream;
                }
            }
        }
    }
    // Fail every outstanding request, and every later one at once.
    *waiters.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Whether `receipt` promises the envelope that was sent: its batch (from
/// the envelope's header) and its commitment. A receipt is a signed leaf of
/// a group the sequencer shares out; one for another envelope is refused.
fn receipt_is_for(
    receipt: &Receipt,
    (e, commitment): (Option<crate::types::BatchId>, Commitment),
) -> Result<(), ClientError> {
    if e != Some(receipt.e) || receipt.commitment != commitment {
        return Err(ClientError::Protocol(format!(
            "a receipt for another envelope (batch {}, commitment {})",
            receipt.e, receipt.commitment
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receipt, even a valid one, for another envelope (another
    /// commitment or another batch) is refused.
    #[test]
    fn a_receipt_for_another_envelope_is_refused() {
        let key = crate::envelope::SequencerKey::from_seed(&[3; 32]);
        let mine = Commitment([1; 32]);
        let group = key
            .sign_receipts(&[
                (BatchId(7), mine),
                (BatchId(7), Commitment([2; 32])),
                (BatchId(8), mine),
            ])
            .expect("signed");
        let [ours, theirs, other_batch] =
            [0, 1, 2].map(|i| group.receipt(i).expect("in the group"));
        assert!(receipt_is_for(&ours, (Some(BatchId(7)), mine)).is_ok());
        for wrong in [&theirs, &other_batch] {
            assert!(matches!(
                receipt_is_for(wrong, (Some(BatchId(7)), mine)),
                Err(ClientError::Protocol(_))
            ));
        }
        assert!(receipt_is_for(&ours, (None, mine)).is_err());
    }
}
