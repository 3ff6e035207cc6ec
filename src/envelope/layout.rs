//! Byte layouts: domain strings, the envelope header, the bundle plaintext,
//! orders and padding classes. Pure functions over byte slices; the normative
//! description is `spec/envelope.md`.

use crate::order::OrderSpec;
use crate::types::{BUNDLE_ORDERS_MAX, BatchId, MarketId, Side, Tick};

/// The envelope format version this code writes and reads.
pub const VERSION: u8 = 1;

/// blake3 `derive_key` context: batch secret `s_e` from the master secret.
pub const DOMAIN_BATCH_KEY: &str = "sealbatch v1 batch key derivation";
/// blake3 `derive_key` context: the envelope's AEAD key from the KEM.
pub const DOMAIN_KEM_KEY: &str = "sealbatch v1 kem key";
/// blake3 `derive_key` context: an envelope's commitment.
pub const DOMAIN_COMMITMENT: &str = "sealbatch v1 envelope commitment";
/// blake3 `derive_key` context: a Merkle leaf (over one commitment).
pub const DOMAIN_MERKLE_LEAF: &str = "sealbatch v1 merkle leaf";
/// blake3 `derive_key` context: a Merkle inner node (over two children).
pub const DOMAIN_MERKLE_NODE: &str = "sealbatch v1 merkle node";
/// blake3 `derive_key` context: the root of a tree with no leaves.
pub const DOMAIN_MERKLE_EMPTY: &str = "sealbatch v1 merkle empty";
/// Ed25519 message domain: a trader's signature over its bundle.
pub const DOMAIN_BUNDLE_SIGNATURE: &str = "sealbatch v1 bundle signature";
/// Ed25519 message domain: the sequencer's signature over a receipt
/// group's root (`spec/envelope.md` §12).
pub const DOMAIN_RECEIPT_GROUP: &str = "sealbatch v1 receipt group";
/// blake3 `derive_key` context: a receipt group's leaf, `u64le(e) ‖
/// commitment`.
pub const DOMAIN_RECEIPT_LEAF: &str = "sealbatch v1 receipt leaf";
/// Ed25519 message domain: the sequencer's batch seal.
pub const DOMAIN_SEAL: &str = "sealbatch v1 seal";
/// BLAKE3 derive-key context of a deployment's id
/// ([`DeploymentId`](super::DeploymentId)).
pub const DOMAIN_DEPLOYMENT: &str = "sealbatch v1 deployment";

/// Envelope header: version (1) ‖ `e` (8, LE) ‖ `R` (32). It is also the AEAD
/// associated data.
pub const HEADER_LEN: usize = 1 + 8 + 32;
/// ChaCha20-Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// One encoded order: market (4) ‖ side (1) ‖ limit kind (1) ‖ limit (8) ‖
/// qty (8) ‖ client order id (8).
pub const ORDER_LEN: usize = 4 + 1 + 1 + 8 + 8 + 8;
/// Plaintext bytes before the orders: account key (32) ‖ nonce (8) ‖ count (2).
pub const BODY_FIXED_LEN: usize = 32 + 8 + 2;
/// An Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// The padded plaintext sizes; a bundle uses the smallest one that fits.
pub const PLAINTEXT_CLASSES: [usize; 4] = [256, 1024, 2048, 8192];
/// The largest padded plaintext.
pub const PLAINTEXT_LEN_MAX: usize = PLAINTEXT_CLASSES[PLAINTEXT_CLASSES.len() - 1];
/// The smallest valid envelope.
pub const ENVELOPE_LEN_MIN: usize = HEADER_LEN + PLAINTEXT_CLASSES[0] + TAG_LEN;
/// The largest valid envelope (8249 bytes).
pub const ENVELOPE_LEN_MAX: usize = HEADER_LEN + PLAINTEXT_LEN_MAX + TAG_LEN;

const _: () = assert!(BUNDLE_ORDERS_MAX >= 1 && BUNDLE_ORDERS_MAX <= u16::MAX as usize);
const _: () = assert!(signed_len(BUNDLE_ORDERS_MAX) <= PLAINTEXT_LEN_MAX);
const _: () = assert!(signed_len(1) <= PLAINTEXT_CLASSES[0]);
const _: () = assert!(ENVELOPE_LEN_MAX == 8249);

/// Length of the signed body plus signature for a bundle of `orders` orders.
#[must_use]
pub const fn signed_len(orders: usize) -> usize {
    BODY_FIXED_LEN + orders * ORDER_LEN + SIGNATURE_LEN
}

/// The padded plaintext length for a bundle of `orders` orders: the smallest
/// class that holds it; `None` beyond [`BUNDLE_ORDERS_MAX`].
#[must_use]
pub fn padded_len(orders: usize) -> Option<usize> {
    if orders > BUNDLE_ORDERS_MAX {
        return None;
    }
    let need = signed_len(orders);
    PLAINTEXT_CLASSES.iter().copied().find(|&c| c >= need)
}

/// Why a plaintext (after a successful AEAD open) does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed {
    /// The plaintext length is not a padding class.
    #[error("plaintext length {0} is not a padding class")]
    PlaintextLength(usize),
    /// The bundle holds no order.
    #[error("bundle holds no order")]
    EmptyBundle,
    /// The padding class is not the smallest one for the order count.
    #[error("bundle of {orders} orders in a {class}-byte plaintext (expected the smallest class)")]
    WrongClass {
        /// The declared order count.
        orders: usize,
        /// The plaintext length received.
        class: usize,
    },
    /// The padding bytes are not all zero.
    #[error("padding is not all zero")]
    Padding,
    /// Order `index` has a side byte other than 0 or 1.
    #[error("order {index}: side byte {byte:#04x}")]
    Side {
        /// Position in the bundle.
        index: usize,
        /// The byte found.
        byte: u8,
    },
    /// Order `index` has a limit-kind byte other than 0 or 1, or a market
    /// order carries a non-zero limit.
    #[error("order {index}: bad limit encoding")]
    Limit {
        /// Position in the bundle.
        index: usize,
    },
    /// Order `index` has quantity zero.
    #[error("order {index}: zero quantity")]
    ZeroQuantity {
        /// Position in the bundle.
        index: usize,
    },
}

/// Why a bundle cannot be sealed (client side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BundleError {
    /// A bundle needs at least one order.
    #[error("a bundle needs at least one order")]
    Empty,
    /// More than [`BUNDLE_ORDERS_MAX`] orders.
    #[error("{orders} orders in one bundle; at most {BUNDLE_ORDERS_MAX}")]
    TooManyOrders {
        /// The count given.
        orders: usize,
    },
    /// Order `index` has quantity zero.
    #[error("order {index}: zero quantity")]
    ZeroQuantity {
        /// Position in the bundle.
        index: usize,
    },
    /// The ephemeral scalar given is zero or not canonical.
    #[error("ephemeral scalar is zero or not canonical")]
    BadEphemeral,
    /// The random generator produced a zero scalar repeatedly.
    #[error("random generator produced only zero scalars")]
    Rng,
}

/// Appends the 30-byte encoding of `order` to `out`.
pub fn encode_order(order: &OrderSpec, out: &mut Vec<u8>) {
    out.extend_from_slice(&order.market.0.to_le_bytes());
    out.push(order.side.to_byte());
    match order.limit {
        None => {
            out.push(0);
            out.extend_from_slice(&0u64.to_le_bytes());
        }
        Some(limit) => {
            out.push(1);
            out.extend_from_slice(&limit.to_le_bytes());
        }
    }
    out.extend_from_slice(&order.qty.to_le_bytes());
    out.extend_from_slice(&order.client_order_id.to_le_bytes());
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

/// Decodes one 30-byte order; `index` only labels errors.
///
/// # Errors
/// [`Malformed::Side`], [`Malformed::Limit`] or [`Malformed::ZeroQuantity`]
/// for a non-canonical or invalid encoding.
pub fn decode_order(bytes: &[u8; ORDER_LEN], index: usize) -> Result<OrderSpec, Malformed> {
    let market = MarketId(le_u32(bytes, 0));
    let side = Side::from_byte(bytes[4]).ok_or(Malformed::Side {
        index,
        byte: bytes[4],
    })?;
    let limit_raw = le_u64(bytes, 6);
    let limit = match bytes[5] {
        0 if limit_raw == 0 => None,
        1 => Some(Tick(limit_raw)),
        _ => return Err(Malformed::Limit { index }),
    };
    let qty = le_u64(bytes, 14);
    if qty == 0 {
        return Err(Malformed::ZeroQuantity { index });
    }
    let client_order_id = le_u64(bytes, 22);
    Ok(OrderSpec {
        market,
        side,
        limit,
        qty,
        client_order_id,
    })
}

/// Writes the signed body: account key ‖ nonce ‖ count ‖ orders.
///
/// # Errors
/// [`BundleError`] for an empty or oversized bundle or a zero quantity.
pub fn encode_body(
    account: &[u8; 32],
    nonce: u64,
    orders: &[OrderSpec],
) -> Result<Vec<u8>, BundleError> {
    if orders.is_empty() {
        return Err(BundleError::Empty);
    }
    if orders.len() > BUNDLE_ORDERS_MAX {
        return Err(BundleError::TooManyOrders {
            orders: orders.len(),
        });
    }
    if let Some(index) = orders.iter().position(|o| o.qty == 0) {
        return Err(BundleError::ZeroQuantity { index });
    }
    let count = u16::try_from(orders.len()).map_err(|_| BundleError::TooManyOrders {
        orders: orders.len(),
    })?;
    let mut out = Vec::with_capacity(padded_len(orders.len()).unwrap_or(PLAINTEXT_LEN_MAX));
    out.extend_from_slice(account);
    out.extend_from_slice(&nonce.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for order in orders {
        encode_order(order, &mut out);
    }
    Ok(out)
}

/// The message a trader signs: `len(domain) (1) ‖ domain ‖ deployment (32)
/// ‖ e (8, LE) ‖ body`. The deployment id binds the bundle to one venue
/// (its sequencer key and batch clock), so a signed bundle opened at one
/// venue cannot be replayed into another's batch `e`.
#[must_use]
pub fn bundle_signature_message(
    deployment: &super::DeploymentId,
    e: BatchId,
    body: &[u8],
) -> Vec<u8> {
    let mut msg = Vec::with_capacity(1 + DOMAIN_BUNDLE_SIGNATURE.len() + 40 + body.len());
    push_domain(&mut msg, DOMAIN_BUNDLE_SIGNATURE);
    msg.extend_from_slice(&deployment.0);
    msg.extend_from_slice(&e.to_le_bytes());
    msg.extend_from_slice(body);
    msg
}

/// Appends `len(domain)` as one byte and then the domain string.
pub(crate) fn push_domain(out: &mut Vec<u8>, domain: &str) {
    debug_assert!(domain.len() <= usize::from(u8::MAX));
    out.push(domain.len() as u8);
    out.extend_from_slice(domain.as_bytes());
}

/// A decoded plaintext: borrowed parts of the bytes the AEAD opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedPlaintext<'a> {
    /// The account's Ed25519 public key, as encoded.
    pub account: [u8; 32],
    /// The per-account nonce.
    pub nonce: u64,
    /// The orders, in bundle order.
    pub orders: Vec<OrderSpec>,
    /// The signed body (`account ‖ nonce ‖ count ‖ orders`).
    pub body: &'a [u8],
    /// The signature over [`bundle_signature_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

/// The result of [`decode_plaintext`]: either the decoded bundle, or a bundle
/// declaring more than [`BUNDLE_ORDERS_MAX`] orders, or a malformed one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaintextError {
    /// The declared order count exceeds [`BUNDLE_ORDERS_MAX`].
    TooManyOrders(usize),
    /// Any other decoding failure.
    Malformed(Malformed),
}

impl From<Malformed> for PlaintextError {
    fn from(m: Malformed) -> Self {
        PlaintextError::Malformed(m)
    }
}

/// Decodes a padded plaintext. Every byte is checked: the class is the
/// smallest for the count, the orders are canonical, the padding is zero.
///
/// # Errors
/// [`PlaintextError`] naming the first problem found.
pub fn decode_plaintext(pt: &[u8]) -> Result<DecodedPlaintext<'_>, PlaintextError> {
    if !PLAINTEXT_CLASSES.contains(&pt.len()) {
        return Err(Malformed::PlaintextLength(pt.len()).into());
    }
    let mut account = [0u8; 32];
    account.copy_from_slice(&pt[..32]);
    let nonce = le_u64(pt, 32);
    let count = usize::from(u16::from_le_bytes([pt[40], pt[41]]));
    if count == 0 {
        return Err(Malformed::EmptyBundle.into());
    }
    if count > BUNDLE_ORDERS_MAX {
        return Err(PlaintextError::TooManyOrders(count));
    }
    if padded_len(count) != Some(pt.len()) {
        return Err(Malformed::WrongClass {
            orders: count,
            class: pt.len(),
        }
        .into());
    }
    let body_len = BODY_FIXED_LEN + count * ORDER_LEN;
    let signed = signed_len(count);
    if pt[signed..].iter().any(|&b| b != 0) {
        return Err(Malformed::Padding.into());
    }
    let mut orders = Vec::with_capacity(count);
    for (index, chunk) in pt[BODY_FIXED_LEN..body_len]
        .chunks_exact(ORDER_LEN)
        .enumerate()
    {
        let mut raw = [0u8; ORDER_LEN];
        raw.copy_from_slice(chunk);
        orders.push(decode_order(&raw, index)?);
    }
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(&pt[body_len..signed]);
    Ok(DecodedPlaintext {
        account,
        nonce,
        orders,
        body: &pt[..body_len],
        signature,
    })
}

/// The parsed fixed header of an envelope (no cryptographic check yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The format version byte.
    pub version: u8,
    /// The batch the envelope is sealed to.
    pub batch: BatchId,
    /// The ephemeral public point `R`, as encoded.
    pub ephemeral: [u8; 32],
}

/// Splits `header` off an envelope of at least [`HEADER_LEN`] bytes.
#[must_use]
pub fn parse_header(envelope: &[u8]) -> Option<Header> {
    let head = envelope.get(..HEADER_LEN)?;
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&head[9..HEADER_LEN]);
    Some(Header {
        version: head[0],
        batch: BatchId(le_u64(head, 1)),
        ephemeral,
    })
}
