//! The sequencer's side of the keyper link (`spec/keyper.md` §17): a keyper
//! connects with ALPN [`KEYPER_ALPN`], proves on its one stream that it is
//! a member of the journal's committee (a hello signed over the
//! connection's channel binding), and from then on the sequencer pushes it
//! the committee's durable log from the position it asked for and every
//! seal whose key it wants, while the keyper posts its messages for the log
//! and its shares.
//!
//! The driver thread owns the log; a link reads it through
//! [`Control::KeyperRead`] and learns of new entries and seals through the
//! [`KeyperHub`]'s watch and broadcast channels. A link that falls behind on
//! seals (the broadcast overflows) loses the oldest: the sequencer asks
//! again every 500 ms until it has `t` shares.

use crate::codec::Encode;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::Signature;
use tokio::sync::{broadcast, oneshot, watch};

use crate::envelope::SignedSeal;
use crate::envelope::receipt::decode_ed25519_public;
use crate::keyper::{Committee, KeyperIndex, LogEntry};
use crate::replica::certificate::CommitCertificate;
use crate::signed::ChannelBinding;
use crate::wire::keyper::{KEYPER_ALPN, KeyperDown, KeyperUp, hello_signing_message};
use crate::wire::{FrameDecoder, encode};

use super::handle::Control;

/// Seals a link may lag behind before it loses the oldest.
const SEALS_QUEUED_MAX: usize = 256;
/// A hello frame's bytes: length prefix, type, key, position, signature.
const HELLO_FRAME_LEN: usize = 4 + 1 + 32 + 8 + 64;
/// How long a keyper has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Posts and shares one keyper link may send per second (on average and in
/// a burst); beyond, the link is closed.
pub const KEYPER_FRAMES_PER_SECOND_MAX: u32 = 2_000;
pub use super::close::{CLOSE_NO_COMMITTEE, CLOSE_NOT_A_MEMBER, CLOSE_NOT_LEADER, CLOSE_TOO_MANY};

/// How soon a keyper link asks again for the certificate of log entries
/// the replicas did not attest yet.
const LOG_CERTIFY_RETRY: Duration = Duration::from_millis(100);

/// A keyper link's request for the certificate of a run of log entries
/// (a replicated sequencer's leader sends none uncertified).
#[derive(Debug)]
pub struct LogCertify {
    /// The committee's id.
    pub committee: [u8; 32],
    /// Position and entry hash each, ascending.
    pub entries: Vec<(u64, [u8; 32])>,
    /// The certificate, or `None` if no majority attested the run.
    pub reply: oneshot::Sender<Option<CommitCertificate>>,
}

/// What the driver shares with the keyper links.
#[derive(Debug)]
pub struct KeyperHub {
    committee: watch::Sender<Option<Committee>>,
    log_durable: watch::Sender<u64>,
    seals: broadcast::Sender<(SignedSeal, Option<CommitCertificate>)>,
    /// Whether this sequencer leads (always for a single node; a replica
    /// only while it leads): keypers are served only then.
    leading: watch::Sender<bool>,
    /// Links connected, by keyper index.
    connected: Mutex<BTreeMap<KeyperIndex, u64>>,
    next_link: AtomicU64,
    /// Links a replica that does not lead holds, waiting to lead.
    standing_by: AtomicU64,
    sequencer: [u8; 32],
    /// A replicated sequencer's certifier of log entries (`None`: a single
    /// node, whose entries go uncertified).
    log_certifier: Mutex<Option<tokio::sync::mpsc::UnboundedSender<LogCertify>>>,
}

impl KeyperHub {
    /// A hub for the sequencer with public key `sequencer`.
    #[must_use]
    pub fn new(sequencer: [u8; 32]) -> KeyperHub {
        KeyperHub {
            committee: watch::Sender::new(None),
            log_durable: watch::Sender::new(0),
            seals: broadcast::Sender::new(SEALS_QUEUED_MAX),
            leading: watch::Sender::new(true),
            connected: Mutex::new(BTreeMap::new()),
            next_link: AtomicU64::new(1),
            standing_by: AtomicU64::new(0),
            sequencer,
            log_certifier: Mutex::new(None),
        }
    }

    /// Log entries go to keypers only with a certificate from `certifier`
    /// (a replicated sequencer's).
    pub fn set_log_certifier(&self, certifier: tokio::sync::mpsc::UnboundedSender<LogCertify>) {
        *self.log_certifier.lock().unwrap_or_else(|p| p.into_inner()) = Some(certifier);
    }

    /// The committee the journal names (set by the driver).
    pub fn set_committee(&self, committee: Option<Committee>) {
        self.committee.send_replace(committee);
    }

    /// The log is durable below `below`.
    pub fn log_durable(&self, below: u64) {
        self.log_durable.send_replace(below);
    }

    /// A seal whose key is wanted: to every connected keyper. Returns how
    /// many links it went to.
    pub fn request_key(&self, seal: SignedSeal, certificate: Option<CommitCertificate>) -> usize {
        self.seals.send((seal, certificate)).unwrap_or(0)
    }

    /// Whether this sequencer leads: a replica that stops leading closes
    /// its keyper links (code [`CLOSE_NOT_LEADER`]); one that does not lead
    /// holds new links, silent, and welcomes them once it leads.
    pub fn set_leading(&self, leading: bool) {
        self.leading.send_replace(leading);
    }

    /// Keyper links held while this replica does not lead.
    #[must_use]
    pub fn standing_by(&self) -> u64 {
        self.standing_by.load(Ordering::Relaxed)
    }

    /// The keypers connected now, by index.
    #[must_use]
    pub fn connected(&self) -> Vec<KeyperIndex> {
        self.connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

/// Whether a connection negotiated the keyper ALPN.
#[must_use]
pub fn is_keyper_connection(connection: &quinn::Connection) -> bool {
    connection
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == KEYPER_ALPN)
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("framing: {0}")]
    Frame(#[from] crate::wire::FrameError),
    #[error("encoding: {0}")]
    Encode(#[from] crate::wire::EncodeError),
    #[error("{1}")]
    Close(u32, String),
    #[error("the driver is gone")]
    DriverGone,
}

/// Serves one keyper connection until it ends.
pub async fn serve_keyper(
    connection: quinn::Connection,
    hub: std::sync::Arc<KeyperHub>,
    control: crossbeam_channel::Sender<Control>,
    channel: Option<ChannelBinding>,
    mut shutdown: watch::Receiver<bool>,
) {
    let remote = connection.remote_address();
    let stream = tokio::select! {
        stream = connection.accept_bi() => stream,
        _ = shutdown.changed() => return,
    };
    let Ok((send, recv)) = stream else {
        return;
    };
    let link = hub.next_link.fetch_add(1, Ordering::Relaxed);
    let mut index = None;
    let result = link_task(send, recv, &hub, &control, channel, &mut index, link).await;
    if let Some(j) = index {
        let mut connected = hub.connected.lock().unwrap_or_else(|p| p.into_inner());
        if connected.get(&j) == Some(&link) {
            connected.remove(&j);
        }
    }
    match result {
        Err(LinkError::Close(CLOSE_NOT_LEADER, reason)) => {
            tracing::debug!(%remote, %reason, "keyper sent to the leader");
            connection.close(CLOSE_NOT_LEADER.into(), reason.as_bytes());
        }
        Err(LinkError::Close(code, reason)) => {
            tracing::warn!(%remote, keyper = ?index, %reason, "keyper link closed");
            connection.close(code.into(), reason.as_bytes());
        }
        Err(error) => tracing::info!(%remote, keyper = ?index, %error, "keyper link ended"),
        Ok(()) => {}
    }
}

/// Most keyper links a replica that does not lead holds at once (two per
/// member of the largest committee); beyond, a link is closed
/// [`CLOSE_NOT_LEADER`].
pub const STANDING_BY_MAX: u64 = 2 * crate::keyper::COMMITTEE_MAX as u64;

/// Holds a keyper's link, after its hello, while this replica does not
/// lead (`spec/keyper.md` §17): returns once it leads, so that the link is
/// welcomed then without the keyper dialling again. The keyper sends
/// nothing meanwhile; anything it sends, or its closing the link, ends it.
async fn stand_by(recv: &mut quinn::RecvStream, hub: &KeyperHub) -> Result<(), LinkError> {
    struct Held<'a>(&'a AtomicU64);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if hub.standing_by.fetch_add(1, Ordering::Relaxed) >= STANDING_BY_MAX {
        hub.standing_by.fetch_sub(1, Ordering::Relaxed);
        return Err(LinkError::Close(
            CLOSE_NOT_LEADER,
            "this replica does not lead, and holds as many links as it may".into(),
        ));
    }
    let _held = Held(&hub.standing_by);
    let mut leading = hub.leading.subscribe();
    let mut byte = [0u8; 1];
    loop {
        if *leading.borrow_and_update() {
            return Ok(());
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() {
                return Err(LinkError::DriverGone);
            },
            read = recv.read(&mut byte) => {
                return Err(match read? {
                    None => LinkError::Close(super::close::CLOSE_PROTOCOL_ERROR, "the link closed while standing by".into()),
                    Some(_) => LinkError::Close(super::close::CLOSE_PROTOCOL_ERROR, "a frame before the welcome".into()),
                });
            }
        }
    }
}

async fn link_task(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    hub: &KeyperHub,
    control: &crossbeam_channel::Sender<Control>,
    channel: Option<ChannelBinding>,
    index: &mut Option<KeyperIndex>,
    link: u64,
) -> Result<(), LinkError> {
    let mut decoder = FrameDecoder::<KeyperUp>::new();
    let mut buf = vec![0u8; 64 << 10];
    // The hello.
    // The hello is read as exactly its own bytes: before the peer proved
    // it is a member it can make the sequencer buffer no more than that.
    let mut frame = [0u8; HELLO_FRAME_LEN];
    tokio::time::timeout(HELLO_TIMEOUT, recv.read_exact(&mut frame))
        .await
        .map_err(|_| LinkError::Close(super::close::CLOSE_PROTOCOL_ERROR, "no hello".into()))?
        .map_err(|error| {
            LinkError::Close(
                super::close::CLOSE_PROTOCOL_ERROR,
                format!("no hello: {error}"),
            )
        })?;
    let hello = crate::wire::parse::<KeyperUp>(&frame).ok();
    let Some(KeyperUp::Hello {
        keyper,
        from,
        signature,
    }) = hello
    else {
        return Err(LinkError::Close(
            super::close::CLOSE_PROTOCOL_ERROR,
            "the first frame must be a hello".into(),
        ));
    };
    if !*hub.leading.borrow() {
        stand_by(&mut recv, hub).await?;
    }
    let committee = hub.committee.borrow().clone().ok_or(LinkError::Close(
        CLOSE_NO_COMMITTEE,
        "this sequencer has no keyper committee".into(),
    ))?;
    let j = check_hello(
        &committee,
        &hub.sequencer,
        channel.as_ref(),
        &keyper,
        &signature,
    )
    .ok_or(LinkError::Close(
        CLOSE_NOT_A_MEMBER,
        "the hello is not signed by a member for this connection".into(),
    ))?;
    *index = Some(j);
    hub.connected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(j, link);
    tracing::info!(keyper = j, from, "keyper connected");
    let mut out = Vec::new();
    encode(
        &KeyperDown::Welcome {
            index: j,
            log_end: *hub.log_durable.borrow(),
        },
        &mut out,
    )?;
    send.write_all(&out).await?;

    let mut next = from;
    let mut durable = hub.log_durable.subscribe();
    let mut seals = hub.seals.subscribe();
    let mut leading = hub.leading.subscribe();
    let mut budget =
        super::schedule::RequestBudget::new(KEYPER_FRAMES_PER_SECOND_MAX, Instant::now());
    // Send what is durable already.
    // When to ask again for the certificate of entries the replicas had not
    // all applied yet: a deadline, not a sleep begun anew on every frame
    // (seals and posts would keep putting it off).
    let retry =
        |certified: bool| (!certified).then(|| tokio::time::Instant::now() + LOG_CERTIFY_RETRY);
    let certified;
    (next, certified) = push_log(&mut send, control, hub, &committee, next).await?;
    let mut retry_at = retry(certified);
    loop {
        // Frames already buffered first.
        while let Some(message) = decoder.next_message()? {
            if !budget.take(Instant::now()) {
                return Err(LinkError::Close(
                    CLOSE_TOO_MANY,
                    "more posts and shares than allowed".into(),
                ));
            }
            match message {
                KeyperUp::Hello { .. } => {
                    return Err(LinkError::Close(
                        super::close::CLOSE_PROTOCOL_ERROR,
                        "a second hello".into(),
                    ));
                }
                KeyperUp::Post(message) => {
                    if message.message.sender != j {
                        return Err(LinkError::Close(
                            super::close::CLOSE_PROTOCOL_ERROR,
                            "a post from another keyper".into(),
                        ));
                    }
                    // A dealing's commitments and proofs are checked here,
                    // on a blocking thread, not on the driver's.
                    let committee = committee.clone();
                    let prechecked = tokio::task::spawn_blocking(move || {
                        crate::keyper::Prechecked::check(message, &committee)
                    })
                    .await
                    .map_err(|_| LinkError::DriverGone)?;
                    control
                        .send(Control::KeyperPost(Box::new(prechecked)))
                        .map_err(|_| LinkError::DriverGone)?;
                }
                KeyperUp::Share {
                    e,
                    share,
                    attestation,
                } => control
                    .send(Control::KeyperShare {
                        keyper: j,
                        e,
                        share,
                        attestation,
                    })
                    .map_err(|_| LinkError::DriverGone)?,
            }
        }
        tokio::select! {
            read = recv.read(&mut buf) => match read? {
                Some(n) => decoder.extend(&buf[..n]),
                None => {
                    let _ = send.finish();
                    return Ok(());
                }
            },
            changed = durable.changed() => {
                if changed.is_err() {
                    return Err(LinkError::DriverGone);
                }
                let certified;
                (next, certified) = push_log(&mut send, control, hub, &committee, next).await?;
                // An earlier deadline stands.
                retry_at = if certified { None } else { retry_at.or(retry(false)) };
            }
            // Entries the replicas had not all applied yet: asked again.
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                let certified;
                (next, certified) = push_log(&mut send, control, hub, &committee, next).await?;
                retry_at = retry(certified);
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    return Err(LinkError::DriverGone);
                }
                if !*leading.borrow_and_update() {
                    return Err(LinkError::Close(CLOSE_NOT_LEADER, "this replica no longer leads".into()));
                }
            }
            seal = seals.recv() => match seal {
                Ok((seal, certificate)) => {
                    let mut out = Vec::new();
                    encode(&KeyperDown::Seal { seal, certificate }, &mut out)?;
                    send.write_all(&out).await?;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(keyper = j, missed, "keyper link lagged on seals; they are asked again");
                }
                Err(broadcast::error::RecvError::Closed) => return Err(LinkError::DriverGone),
            },
        }
    }
}

/// The member index whose hello this is, if it verifies.
fn check_hello(
    committee: &Committee,
    sequencer: &[u8; 32],
    channel: Option<&ChannelBinding>,
    keyper: &[u8; 32],
    signature: &[u8; 64],
) -> Option<KeyperIndex> {
    let channel = channel?;
    let j = committee.index_of(keyper)?;
    let key = decode_ed25519_public(keyper).ok()?;
    key.verify_strict(
        &hello_signing_message(committee, sequencer, channel),
        &Signature::from_bytes(signature),
    )
    .ok()?;
    Some(j)
}

/// Sends every durable entry from `next` on — a replicated sequencer's
/// each run followed by its certificate (`KeyperDown::Certified`), and
/// none before a majority of the replicas attested it; returns the
/// position after the last sent, and `false` if a run waits for its
/// certificate (asked again after [`LOG_CERTIFY_RETRY`]).
async fn push_log(
    send: &mut quinn::SendStream,
    control: &crossbeam_channel::Sender<Control>,
    hub: &KeyperHub,
    committee: &Committee,
    mut next: u64,
) -> Result<(u64, bool), LinkError> {
    let certifier = hub
        .log_certifier
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    loop {
        let (reply, entries) = oneshot::channel::<Vec<(u64, LogEntry)>>();
        control
            .send(Control::KeyperRead { from: next, reply })
            .map_err(|_| LinkError::DriverGone)?;
        let entries = entries.await.map_err(|_| LinkError::DriverGone)?;
        if entries.is_empty() {
            return Ok((next, true));
        }
        let mut out = Vec::new();
        let mut hashes = Vec::with_capacity(entries.len());
        let mut after = next;
        for (position, entry) in entries {
            after = position + 1;
            let bytes = entry.to_bytes();
            hashes.push((position, crate::commit::log_entry_hash(&bytes)));
            encode(&KeyperDown::Entry { position, entry }, &mut out)?;
        }
        if let Some(certifier) = &certifier {
            let (reply, certificate) = oneshot::channel();
            certifier
                .send(LogCertify {
                    committee: committee.id(),
                    entries: hashes,
                    reply,
                })
                .map_err(|_| LinkError::DriverGone)?;
            match certificate.await.map_err(|_| LinkError::DriverGone)? {
                Some(certificate) => encode(&KeyperDown::Certified { certificate }, &mut out)?,
                None => return Ok((next, false)),
            }
        }
        next = after;
        send.write_all(&out).await?;
    }
}
