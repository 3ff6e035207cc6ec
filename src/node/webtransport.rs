//! WebTransport ingest (`spec/wire.md` §9): browsers speak QUIC to a server
//! through WebTransport over HTTP/3, so the node serves it beside its native
//! QUIC listener. A session's bidirectional streams carry the same frames as
//! native streams, under the same admission, quotas and limits
//! ([`super::server`]); the one difference is that a browser cannot export
//! TLS keying material, so nothing on a WebTransport stream is channel-bound
//! and signed queries are refused there (envelopes, receipts and the public
//! queries need no binding).
//!
//! A browser accepts a self-signed certificate only by its SHA-256 hash
//! (`serverCertificateHashes`) and only if it is ECDSA P-256 and valid for
//! at most 14 days. The node makes two such identities at start, the
//! current one and the next; every [`ROTATE_EVERY`] the next becomes
//! current (existing sessions go on) and a new next is made. It publishes
//! both hashes ([`Published`]) on its HTTP listener at `GET /webtransport`,
//! so a page that fetched them up to one rotation ago still connects after
//! the switch.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::{Endpoint, Identity, ServerConfig};

use super::config::LimitsConfig;
use super::handle::DriverHandle;
use super::metrics::Metrics;
use super::server::{Admission, ClientStream, Counters, open_session};

/// Keep-alives every this long (the idle timeout is 30 s).
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The path a session must ask for.
pub const WEBTRANSPORT_PATH: &str = "/sealbatch";

/// How long an identity is valid: the most a browser accepts by hash.
pub const IDENTITY_VALIDITY_DAYS: u32 = 14;

/// How often the next identity becomes current: an identity is made one
/// rotation before it is used and used for one rotation, 12 of its 14
/// days.
pub const ROTATE_EVERY: Duration = Duration::from_secs(6 * 24 * 3600);

/// Why WebTransport could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebTransportError {
    /// The self-signed identity could not be made.
    #[error("webtransport identity: {0}")]
    Identity(String),
    /// The UDP socket could not be bound.
    #[error("webtransport listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What `GET /webtransport` answers: where to connect and which
/// certificates to accept.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Published {
    /// The session URL, `https://ADDRESS/sealbatch`.
    pub url: String,
    /// The SHA-256 hashes (hex) of the current certificate, then of the
    /// next: a browser passes each as `{algorithm: "sha-256", value}`.
    pub certificate_hashes: Vec<String>,
    /// The sequencer's Ed25519 key (hex), as this node states it.
    pub sequencer_key: String,
}

/// The WebTransport listener: its endpoint and what it publishes.
pub struct WebTransport {
    endpoint: Endpoint<Server>,
    published: Arc<RwLock<Published>>,
    addr: SocketAddr,
    limits: LimitsConfig,
    /// The identity that becomes current at the next rotation.
    next: Identity,
}

/// The QUIC settings of a WebTransport session: the configured bounds of a
/// native connection (streams, windows, idle time), one bidirectional
/// stream more for HTTP/3's extended CONNECT and HTTP/3's three
/// unidirectional control streams.
fn transport(limits: &LimitsConfig) -> quinn::TransportConfig {
    let bounds = limits.transport();
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams((bounds.streams_per_connection_max.saturating_add(1)).into())
        .max_concurrent_uni_streams(3u32.into())
        .stream_receive_window(bounds.stream_receive_window.into())
        .receive_window(bounds.connection_receive_window.into())
        .send_window(bounds.send_window)
        .max_idle_timeout(quinn::IdleTimeout::try_from(bounds.idle_timeout).ok())
        .keep_alive_interval(Some(KEEP_ALIVE));
    t
}

/// A server configuration presenting `identity` under `limits`.
fn config(
    bind: wtransport::config::ServerConfigBuilder<wtransport::config::states::WantsIdentity>,
    identity: &Identity,
    limits: &LimitsConfig,
) -> ServerConfig {
    let mut config = bind
        .with_custom_transport(identity.clone_identity(), transport(limits))
        .build();
    config
        .quic_config_mut()
        .max_incoming(limits.transport().incoming_max);
    config
}

fn identity() -> Result<Identity, WebTransportError> {
    Identity::self_signed_builder()
        .subject_alt_names(["localhost", "127.0.0.1", "::1"])
        .from_now_utc()
        .validity_days(IDENTITY_VALIDITY_DAYS)
        .build()
        .map_err(|error| WebTransportError::Identity(error.to_string()))
}

/// The hex SHA-256 of an identity's certificate (a self-signed identity
/// has one).
fn certificate_hash(identity: &Identity) -> String {
    identity
        .certificate_chain()
        .as_slice()
        .first()
        .map(|certificate| hex::encode(certificate.hash().as_ref()))
        .unwrap_or_default()
}

impl WebTransport {
    /// Binds `addr` (a socket handed down for it if there is one) with a
    /// fresh identity.
    ///
    /// # Errors
    ///
    /// [`WebTransportError`].
    pub fn bind(
        addr: SocketAddr,
        sequencer_key: &[u8; 32],
        limits: &LimitsConfig,
    ) -> Result<WebTransport, WebTransportError> {
        let bind = |source| WebTransportError::Bind { addr, source };
        let socket = crate::net::inherit::udp_socket(addr).map_err(bind)?;
        let (current, next) = (identity()?, identity()?);
        let endpoint = Endpoint::server(config(
            ServerConfig::builder().with_bind_socket(socket),
            &current,
            limits,
        ))
        .map_err(bind)?;
        let addr = endpoint.local_addr().map_err(bind)?;
        let published = Published {
            url: format!("https://{addr}{WEBTRANSPORT_PATH}"),
            certificate_hashes: vec![certificate_hash(&current), certificate_hash(&next)],
            sequencer_key: hex::encode(sequencer_key),
        };
        Ok(WebTransport {
            endpoint,
            published: Arc::new(RwLock::new(published)),
            addr,
            limits: *limits,
            next,
        })
    }

    /// The address it listens on (the port is real even if 0 was asked).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it publishes, as it changes.
    #[must_use]
    pub fn published(&self) -> Arc<RwLock<Published>> {
        Arc::clone(&self.published)
    }

    /// Accepts sessions until `shutdown` turns true, rotating the identity
    /// every [`ROTATE_EVERY`]; the sessions open then go on until `close`
    /// says with which code to close the endpoint (when the node closes its
    /// native one: after the batches in flight, or at once on a failure).
    pub(crate) async fn serve(
        mut self,
        core: DriverHandle,
        metrics: Arc<Metrics>,
        counters: Arc<Counters>,
        mut shutdown: watch::Receiver<bool>,
        mut close: watch::Receiver<Option<u32>>,
    ) {
        let limits = self.limits;
        let mut rotate =
            tokio::time::interval_at(tokio::time::Instant::now() + ROTATE_EVERY, ROTATE_EVERY);
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                _ = rotate.tick() => {
                    self.rotate();
                    continue;
                }
                _ = shutdown.changed() => break,
                _ = close.changed() => break,
            };
            let ip = incoming.remote_address().ip();
            let slot =
                match counters.admit(ip, incoming.remote_address_validated(), &limits, &metrics) {
                    Admission::Refuse => {
                        incoming.refuse();
                        continue;
                    }
                    Admission::Retry => {
                        incoming.retry();
                        continue;
                    }
                    Admission::Accept(slot) => slot,
                };
            let conn = counters.next_conn();
            let (core, metrics, counters) =
                (core.clone(), Arc::clone(&metrics), Arc::clone(&counters));
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let handshaking = counters.handshake();
                let timeout = Duration::from_millis(limits.handshake_timeout_ms);
                let connection = match tokio::time::timeout(timeout, async {
                    let request = incoming.await.map_err(|error| error.to_string())?;
                    if request.path() != WEBTRANSPORT_PATH {
                        request.not_found().await;
                        return Err("a session for another path".to_string());
                    }
                    request.accept().await.map_err(|error| error.to_string())
                })
                .await
                {
                    Ok(Ok(connection)) => connection,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "webtransport session not opened");
                        return;
                    }
                    Err(_) => {
                        metrics.handshakes_timed_out.inc();
                        return;
                    }
                };
                drop(handshaking);
                tracing::debug!(conn, remote = %connection.remote_address(), "webtransport session");
                let ip = connection.remote_address().ip().to_canonical();
                loop {
                    let (send, recv) = tokio::select! {
                        stream = connection.accept_bi() => match stream {
                            Ok(stream) => stream,
                            Err(_) => return,
                        },
                        _ = shutdown.changed() => return,
                    };
                    let stream = ClientStream {
                        send,
                        recv,
                        connection: connection.clone(),
                    };
                    // No channel binding: a browser cannot export keying
                    // material, so signed queries do not verify here.
                    if !open_session(stream, conn, ip, &core, limits, &counters, None) {
                        return;
                    }
                }
            });
        }
        let code = loop {
            if let Some(code) = *close.borrow_and_update() {
                break code;
            }
            if close.changed().await.is_err() {
                break super::server::CLOSE_SHUTDOWN;
            }
        };
        self.endpoint
            .close(wtransport::VarInt::from_u32(code), b"shutting down");
    }

    /// The next identity becomes current for new sessions, and a new next
    /// is made; both hashes are published.
    fn rotate(&mut self) {
        let next = match identity() {
            Ok(identity) => identity,
            Err(error) => {
                tracing::warn!(%error, "webtransport identity not rotated");
                return;
            }
        };
        // Not rebound: the same socket goes on serving (the address given
        // here is not used).
        let reloaded = config(
            ServerConfig::builder().with_bind_address(self.addr),
            &self.next,
            &self.limits,
        );
        if let Err(error) = self.endpoint.reload_config(reloaded, false) {
            tracing::warn!(%error, "webtransport identity not rotated");
            return;
        }
        let current = std::mem::replace(&mut self.next, next);
        let hashes = vec![certificate_hash(&current), certificate_hash(&self.next)];
        self.published
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .certificate_hashes = hashes;
        tracing::info!("webtransport identity rotated");
    }
}

/// The session URL for a page fetched from `host` (a `Host` header):
/// `url` itself unless it names an unspecified address (a listener on
/// every address), whose host is replaced by the one the page used.
fn session_url(url: &str, host: Option<&str>) -> String {
    let Some(rest) = url.strip_prefix("https://") else {
        return url.to_string();
    };
    let Some((authority, path)) = rest.split_once('/') else {
        return url.to_string();
    };
    let Ok(addr) = authority.parse::<SocketAddr>() else {
        return url.to_string();
    };
    if !addr.ip().is_unspecified() {
        return url.to_string();
    }
    // The host without its port: a bracketed IPv6 address, or up to ':'.
    let name = host.and_then(|host| match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(ip, _)| format!("[{ip}]")),
        None => host.split(':').next().map(str::to_string),
    });
    match name.filter(|n| !n.is_empty()) {
        Some(name) => format!("https://{name}:{}/{path}", addr.port()),
        None => url.to_string(),
    }
}

/// The trade page (`spec/explorer.md` §8) and its script.
const TRADE_HTML: &str = include_str!("assets/trade.html");
const TRADE_JS: &str = include_str!("assets/trade.js");
/// The TypeScript SDK (`clients/typescript`) bundled for browsers by its
/// `npm run bundle`; CI checks that it is the bundle of the SDK's sources.
const SDK_JS: &str = include_str!("assets/sealbatch-sdk.js");

/// `GET /webtransport`: the session URL and the certificate hashes, as JSON
/// (`Cache-Control: no-store`: they change at every rotation); and the
/// trade page that uses them, `GET /trade`, with its scripts.
pub fn router(published: Arc<RwLock<Published>>) -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    let script = "text/javascript; charset=utf-8";
    axum::Router::new()
        .route("/webtransport", axum::routing::get(publish))
        .route(
            "/trade",
            axum::routing::get(|| async {
                ([(CONTENT_TYPE, "text/html; charset=utf-8")], TRADE_HTML)
            }),
        )
        .route(
            "/trade.js",
            axum::routing::get(move || async move { ([(CONTENT_TYPE, script)], TRADE_JS) }),
        )
        .route(
            "/sealbatch-sdk.js",
            axum::routing::get(move || async move { ([(CONTENT_TYPE, script)], SDK_JS) }),
        )
        .with_state(published)
}

async fn publish(
    axum::extract::State(published): axum::extract::State<Arc<RwLock<Published>>>,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let mut answer = published
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // Listening on every address (0.0.0.0 or [::]): the session is at the
    // host the page was fetched from.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    answer.url = session_url(&answer.url, host);
    let body = serde_json::to_string(&answer).unwrap_or_default();
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::session_url;

    #[test]
    fn a_listener_on_every_address_is_reached_at_the_pages_host() {
        let any = "https://0.0.0.0:4434/sealbatch";
        assert_eq!(
            session_url(any, Some("trade.example:9433")),
            "https://trade.example:4434/sealbatch"
        );
        assert_eq!(
            session_url(any, Some("[2001:db8::1]:9433")),
            "https://[2001:db8::1]:4434/sealbatch"
        );
        assert_eq!(
            session_url("https://[::]:4434/sealbatch", Some("10.0.0.7")),
            "https://10.0.0.7:4434/sealbatch"
        );
        // No host: as it is.
        assert_eq!(session_url(any, None), any);
        // A listener on one address keeps it, whatever the page's host.
        let one = "https://127.0.0.1:4434/sealbatch";
        assert_eq!(session_url(one, Some("evil.example")), one);
    }
}
