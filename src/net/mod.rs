//! QUIC endpoints over quinn and rustls: the server's self-signed certificate,
//! kept in the data directory, and the clients' pinning of its SHA-256
//! fingerprint (no CA, no trust on first use).
//!
//! The transport settings that bound what one peer can make the server hold
//! (streams, windows, idle time) are in [`ServerTransport`]. A socket handed
//! down by the process that started this one (`--inherit-fd`, [`inherit`])
//! is served instead of binding its address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::wire::ALPN;

pub mod inherit;

/// The certificate file in the TLS directory (DER).
pub const CERT_FILE: &str = "cert.der";
/// The private key file in the TLS directory (PKCS#8 DER, mode 0600).
pub const KEY_FILE: &str = "key.der";
/// The fingerprint file in the TLS directory (hex SHA-256 of the certificate).
pub const FINGERPRINT_FILE: &str = "fingerprint";

/// A failure to set up an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The private key file could not be read or created.
    #[error("{0}")]
    SecretFile(#[from] crate::secret_file::SecretFileError),
    /// The certificate could not be generated.
    #[error("generating the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// quinn refused the crypto configuration.
    #[error("QUIC crypto configuration: {0}")]
    Crypto(String),
    /// The endpoint could not bind.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A fingerprint is not 64 hex digits.
    #[error("a certificate fingerprint is 64 hex digits (SHA-256), got {0:?}")]
    BadFingerprint(String),
    /// The connection failed.
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// The server's certificate and key, and the fingerprint clients pin.
pub struct Identity {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    /// SHA-256 of the certificate's DER.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &hex::encode(self.fingerprint))
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a certificate's DER: what clients pin.
#[must_use]
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// Parses a hex fingerprint (64 digits; `:` separators allowed).
///
/// # Errors
///
/// [`NetError::BadFingerprint`].
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], NetError> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out).map_err(|_| NetError::BadFingerprint(text.into()))?;
    Ok(out)
}

/// Largest TLS private key file read (a PKCS#8 DER key is a few hundred
/// bytes).
const TLS_KEY_BYTES_MAX: usize = 16 << 10;

impl Identity {
    /// The key its QUIC connection ids are made and checked with, the
    /// same after a restart (see [`ResetKey`]).
    #[must_use]
    pub fn cid_key(&self) -> u64 {
        let key = blake3::derive_key(
            "sealbatch v1 quic connection id key",
            self.key.secret_pkcs8_der(),
        );
        u64::from_le_bytes([
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
        ])
    }

    /// Its QUIC stateless-reset key ([`ResetKey`]).
    #[must_use]
    pub fn reset_key(&self) -> ResetKey {
        ResetKey(blake3::derive_key(
            "sealbatch v1 quic stateless reset key",
            self.key.secret_pkcs8_der(),
        ))
    }

    /// Loads the identity from `dir`, or creates it there on first start: a
    /// self-signed certificate for `localhost`, its key (mode 0600), and the
    /// fingerprint file; the directory is fsynced after creation.
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] or [`NetError::Certificate`].
    pub fn load_or_create(dir: &Path) -> Result<Identity, NetError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NetError::Io { path, source }
        };
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = crate::secret_file::read(&key_path, TLS_KEY_BYTES_MAX)?;
            return Ok(Identity {
                fingerprint: fingerprint(&cert),
                cert: CertificateDer::from(cert),
                key: PrivatePkcs8KeyDer::from(key.to_vec()),
            });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let cert = generated.cert.der().to_vec();
        let key = generated.key_pair.serialize_der();
        crate::secret_file::create(&key_path, &key)?;
        write_file(&cert_path, &cert).map_err(io(&cert_path))?;
        let fp = fingerprint(&cert);
        let fp_path = dir.join(FINGERPRINT_FILE);
        write_file(&fp_path, format!("{}\n", hex::encode(fp)).as_bytes()).map_err(io(&fp_path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(Identity {
            fingerprint: fp,
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(key),
        })
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The transport bounds the server gives each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTransport {
    /// Concurrent bidirectional streams a client may open.
    pub streams_per_connection_max: u32,
    /// Bytes a client may have in flight on one stream.
    pub stream_receive_window: u32,
    /// Bytes a client may have in flight on the connection.
    pub connection_receive_window: u32,
    /// Bytes the server may have in flight towards a client.
    pub send_window: u64,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Incoming connection attempts held at once before new ones are refused.
    pub incoming_max: usize,
}

/// Builds the quinn server configuration: TLS 1.3 with `identity`, ALPN
/// `sealbatch/1`, no migration, the given bounds, no unidirectional streams.
///
/// # Errors
///
/// [`NetError::Tls`] or [`NetError::Crypto`].
pub fn server_config(
    identity: &Identity,
    transport: &ServerTransport,
) -> Result<quinn::ServerConfig, NetError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec(), crate::wire::keyper::KEYPER_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|error| NetError::Crypto(error.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(transport.streams_per_connection_max.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(transport.stream_receive_window.into())
        .receive_window(transport.connection_receive_window.into())
        .send_window(transport.send_window)
        .max_idle_timeout(quinn::IdleTimeout::try_from(transport.idle_timeout).ok());
    config
        .transport_config(Arc::new(t))
        .migration(false)
        .max_incoming(transport.incoming_max);
    Ok(config)
}

/// A server endpoint on `addr`: the socket handed down for it
/// ([`inherit`]), else one bound now.
///
/// # Errors
///
/// [`NetError::Bind`].
pub fn server_endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    identity: &Identity,
) -> Result<quinn::Endpoint, NetError> {
    let socket = inherit::udp_socket(addr).map_err(|source| NetError::Bind { addr, source })?;
    server_endpoint_on(socket, config, identity)
}

/// A server endpoint on a socket already bound (one a test keeps across
/// restarts of what it serves, say).
///
/// # Errors
///
/// [`NetError::Bind`].
pub fn server_endpoint_on(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    identity: &Identity,
) -> Result<quinn::Endpoint, NetError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let bind = |source| NetError::Bind { addr, source };
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(identity.reset_key()));
    // Connection ids this process issues check against a key that, like
    // the reset key, survives a restart: the restarted process recognises
    // a packet of a connection it had and answers it with a reset (a
    // random key would make it drop the packet as invalid).
    let cid_key = identity.cid_key();
    endpoint.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    quinn::Endpoint::new(
        endpoint,
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind)
}

/// The key of a process's QUIC stateless resets (RFC 9000 §10.3), derived
/// from its identity's private key: the same after a restart. A peer
/// still holding a connection to the process before the restart gets a
/// reset it recognises for its first packet and drops the connection at
/// once, instead of waiting for the idle timeout — a replica restarted on
/// its address is reachable again at once (`spec/replication.md` §8).
pub struct ResetKey([u8; 32]);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mac = blake3::keyed_hash(&self.0, data);
        let n = signature_out.len().min(blake3::OUT_LEN);
        signature_out[..n].copy_from_slice(&mac.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        blake3::OUT_LEN
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let Ok(signature) = <[u8; blake3::OUT_LEN]>::try_from(signature) else {
            return Err(quinn::crypto::CryptoError);
        };
        // `blake3::Hash` compares in constant time.
        if blake3::keyed_hash(&self.0, data) == blake3::Hash::from_bytes(signature) {
            Ok(())
        } else {
            Err(quinn::crypto::CryptoError)
        }
    }
}

impl Drop for ResetKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The handshake signature checks both pinning verifiers make: with the
/// provider's algorithms, as rustls's own verifiers do (the pin replaces
/// only the certificate's chain, not the proof of its key).
#[derive(Debug)]
struct Signatures(Arc<CryptoProvider>);

impl Signatures {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Accepts exactly the server certificate whose SHA-256 is pinned.
#[derive(Debug)]
struct PinnedCert {
    fingerprint: [u8; 32],
    signatures: Signatures,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// A client endpoint on an ephemeral loopback port that trusts only the
/// certificate with `pinned` fingerprint.
///
/// # Errors
///
/// [`NetError`] if the endpoint cannot be built or bound.
pub fn client_endpoint(server: SocketAddr, pinned: [u8; 32]) -> Result<quinn::Endpoint, NetError> {
    let config = client_config(pinned)?;
    let bind: SocketAddr = if server.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([127, 0, 0, 1], 0))
    };
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|source| NetError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The client configuration of [`client_endpoint`]: TLS 1.3 trusting only
/// the certificate with `pinned` fingerprint, the sealbatch ALPN.
///
/// # Errors
///
/// [`NetError::Crypto`] if the TLS configuration cannot be built.
pub fn client_config(pinned: [u8; 32]) -> Result<quinn::ClientConfig, NetError> {
    client_config_for(pinned, ALPN)
}

/// [`client_config`] for another ALPN (the keyper link's,
/// [`KEYPER_ALPN`](crate::wire::keyper::KEYPER_ALPN)).
///
/// # Errors
///
/// [`NetError::Crypto`] if the TLS configuration cannot be built.
pub fn client_config_for(pinned: [u8; 32], alpn: &[u8]) -> Result<quinn::ClientConfig, NetError> {
    let provider = provider();
    let verifier = PinnedCert {
        fingerprint: pinned,
        signatures: Signatures(Arc::clone(&provider)),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|error| NetError::Crypto(error.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    config.transport_config(Arc::new(t));
    Ok(config)
}

/// The replica transport's ALPN (`spec/replication.md`, "Transport").
pub const REPLICA_ALPN: &[u8] = b"sealbatch-raft/1";

/// Accepts exactly the client certificates whose fingerprints are in the
/// shared set (the cluster's members, updated as membership changes).
#[derive(Debug)]
struct PinnedClients {
    allowed: Arc<std::sync::RwLock<std::collections::BTreeSet<[u8; 32]>>>,
    signatures: Signatures,
}

impl rustls::server::danger::ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let fingerprint = fingerprint(end_entity.as_ref());
        let allowed = self
            .allowed
            .read()
            .map(|set| set.contains(&fingerprint))
            .unwrap_or(false);
        if allowed {
            Ok(rustls::server::danger::ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// The replica transport's server configuration: TLS 1.3 with `identity`,
/// ALPN [`REPLICA_ALPN`], and a client certificate required whose
/// fingerprint is in `allowed` (mutual pinning: only members connect).
///
/// # Errors
///
/// [`NetError::Tls`] or [`NetError::Crypto`].
pub fn replica_server_config(
    identity: &Identity,
    allowed: Arc<std::sync::RwLock<std::collections::BTreeSet<[u8; 32]>>>,
) -> Result<quinn::ServerConfig, NetError> {
    let provider = provider();
    let verifier = PinnedClients {
        allowed,
        signatures: Signatures(Arc::clone(&provider)),
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    tls.alpn_protocols = vec![REPLICA_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|error| NetError::Crypto(error.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = replica_transport();
    t.max_concurrent_bidi_streams(256u32.into())
        .max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(t)).migration(false);
    Ok(config)
}

/// How much of one stream a replica takes in before the sender waits for
/// credit: several appends' budget (2 MiB each), so that an append travels
/// in one round trip and not one per window.
pub const REPLICA_STREAM_WINDOW: u32 = 16 << 20;

/// How much of all its streams a replica takes in, and sends unacknowledged.
pub const REPLICA_CONNECTION_WINDOW: u32 = 64 << 20;

/// The replica transport's QUIC settings, the same both ways: keep-alives
/// every second and a 10 s idle timeout; windows for appends of 2 MiB
/// ([`REPLICA_STREAM_WINDOW`]); and BBR congestion control, which paces to
/// the measured bottleneck and round trip instead of halving at every
/// loss: with 1 % random loss on an 80 ms path a loss-based controller
/// stays near 1200 B / RTT × 1.22 / √p ≈ 180 KB/s (Mathis et al.), below
/// one follower's share of 10,000 orders/s (`BENCHMARKS.md`, "Across a
/// simulated WAN").
fn replica_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(10)).ok())
        .stream_receive_window(REPLICA_STREAM_WINDOW.into())
        .receive_window(REPLICA_CONNECTION_WINDOW.into())
        .send_window(u64::from(REPLICA_CONNECTION_WINDOW))
        .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    t
}

/// The replica transport's client configuration: TLS 1.3 trusting only the
/// certificate with `pinned` fingerprint and presenting `identity`'s.
///
/// # Errors
///
/// [`NetError::Tls`] or [`NetError::Crypto`].
pub fn replica_client_config(
    identity: &Identity,
    pinned: [u8; 32],
) -> Result<quinn::ClientConfig, NetError> {
    let provider = provider();
    let verifier = PinnedCert {
        fingerprint: pinned,
        signatures: Signatures(Arc::clone(&provider)),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    tls.alpn_protocols = vec![REPLICA_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|error| NetError::Crypto(error.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(replica_transport()));
    Ok(config)
}
