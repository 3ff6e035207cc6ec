/**
 * Envelopes, format v1 (spec/envelope.md): the batch schedule and deployment id
 * (§4), batch keys (§5), orders and the signed bundle plaintext (§6), sealing
 * (§7), commitments (§8), the shape check (§9) and opening (§10).
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import {
  Reader,
  Writer,
  bytesEqual,
  compareBytes,
  concat,
  dom,
  expectLen,
  leToBigint,
  toHex,
  u64le,
  u16le,
} from './codec.js';
import {
  GROUP_ORDER,
  decodeEdwardsStrict,
  decodePoint,
  kdf,
  mulBase,
  mulPublic,
  randomScalar,
  scalarFromBytes,
  scalarToBytes,
  sign,
  publicKeyOf,
  verifyCofactored,
  type RistrettoPoint,
} from './crypto.js';
import { EnvelopeRejectedError, Rejection, SealbatchError, type RejectionCode } from './errors.js';
import { merkleRoot } from './merkle.js';
import type { Seal } from './receipt.js';

/** Envelope format version byte. */
export const VERSION = 1;
/** Orders per bundle, at most. */
export const BUNDLE_ORDERS_MAX = 256;
/** Bytes of one encoded order. */
export const ORDER_LEN = 30;
/** The padded plaintext sizes, ascending. */
export const PLAINTEXT_CLASSES: readonly number[] = [256, 1024, 2048, 8192];
/** Bytes of an envelope header: version, batch, `R`. */
export const HEADER_LEN = 41;
/** Bytes of the Poly1305 tag. */
export const TAG_LEN = 16;
/** Shortest valid envelope (313 bytes). */
export const ENVELOPE_LEN_MIN = HEADER_LEN + 256 + TAG_LEN;
/** Longest valid envelope (8249 bytes). */
export const ENVELOPE_LEN_MAX = HEADER_LEN + 8192 + TAG_LEN;
/** Distinct envelopes (Merkle leaves) per batch, at most. */
export const ENVELOPES_PER_BATCH_MAX = 1 << 24;

/** Domain strings of spec/envelope.md §2. */
export const Domain = {
  batchKey: 'sealbatch v1 batch key derivation',
  kemKey: 'sealbatch v1 kem key',
  commitment: 'sealbatch v1 envelope commitment',
  merkleLeaf: 'sealbatch v1 merkle leaf',
  merkleNode: 'sealbatch v1 merkle node',
  merkleEmpty: 'sealbatch v1 merkle empty',
  bundleSignature: 'sealbatch v1 bundle signature',
  receiptLeaf: 'sealbatch v1 receipt leaf',
  receiptGroup: 'sealbatch v1 receipt group',
  seal: 'sealbatch v1 seal',
  deployment: 'sealbatch v1 deployment',
} as const;

// ---------------------------------------------------------------------------
// §4 Schedule and deployment

/** `close_ms(e) = genesis_ms + (e + 1)·len`, or `null` when that overflows u64 (the batch never closes). */
export function closeMs(genesisMs: bigint, batchLengthMs: bigint, e: bigint): bigint | null {
  if (batchLengthMs === 0n) throw new SealbatchError('Invalid', 'batch length 0');
  const v = genesisMs + (e + 1n) * batchLengthMs;
  return v > (1n << 64n) - 1n ? null : v;
}

/** The batch open at `nowMs`: `⌊(now − genesis) / len⌋`, 0 before genesis (spec/sequencer.md "Schedule"). */
export function openBatchAt(genesisMs: bigint, batchLengthMs: bigint, nowMs: bigint): bigint {
  if (batchLengthMs === 0n) throw new SealbatchError('Invalid', 'batch length 0');
  return nowMs <= genesisMs ? 0n : (nowMs - genesisMs) / batchLengthMs;
}

/** `deployment_id = KDF("sealbatch v1 deployment", sequencer_key ‖ u64le(genesis_ms) ‖ u64le(batch_length_ms))`. */
export function deploymentId(sequencerKey: Uint8Array, genesisMs: bigint, batchLengthMs: bigint): Uint8Array {
  return kdf(Domain.deployment, concat(expectLen(sequencerKey, 32, 'sequencer key'), u64le(genesisMs), u64le(batchLengthMs)));
}

// ---------------------------------------------------------------------------
// §5 Batch keys

/**
 * `s_e` derived from a custodian's 32-byte master secret (the embedded
 * custodian's rule; a trader needs it only to check test vectors).
 * Throws `ZeroScalar` in the 2^-252 case `s_e = 0`.
 */
export function deriveBatchSecret(master: Uint8Array, e: bigint): bigint {
  const wide = kdf(Domain.batchKey, concat(expectLen(master, 32, 'master secret'), u64le(e)), 64);
  const s = leToBigint(wide) % GROUP_ORDER;
  if (s === 0n) throw new SealbatchError('ZeroScalar', `batch ${e} has no key`);
  return s;
}

/** `S_e = enc(s_e·G)` for a non-zero scalar. */
export function batchPublicKey(secret: bigint): Uint8Array {
  if (secret === 0n) throw new SealbatchError('ZeroScalar', 'zero batch secret');
  return mulBase(secret).toBytes();
}

/**
 * Decodes an announced batch key `S_e`: a canonical ristretto255 encoding other
 * than the identity; `BadPoint` otherwise.
 */
export function decodeBatchKey(S: Uint8Array): RistrettoPoint {
  return decodePoint(S);
}

/**
 * Decodes a published batch secret and checks it against the announced key:
 * 32 bytes, canonical (`< l`), non-zero, and `enc(s_e·G) = S_e`.
 */
export function checkBatchSecret(sE: Uint8Array, S: Uint8Array): bigint {
  const s = scalarFromBytes(sE);
  if (s === 0n) throw new SealbatchError('ZeroScalar', 'batch secret is zero');
  decodePoint(S);
  if (!bytesEqual(mulBase(s).toBytes(), S)) {
    throw new SealbatchError('Mismatch', 'batch secret does not match the batch public key');
  }
  return s;
}

// ---------------------------------------------------------------------------
// §6 Orders and bundles

/** A side of an order. */
export type Side = 'buy' | 'sell';

/** One order of a bundle. `limit` is `null` for a market order. */
export interface Order {
  /** Market id (u32). */
  market: number;
  /** Buy or sell. */
  side: Side;
  /** Limit price in ticks, or `null` for a market order. */
  limit: bigint | null;
  /** Quantity in lots, non-zero. */
  qty: bigint;
  /** The trader's own id for the order (u64). */
  clientOrderId: bigint;
}

/** A bundle's signed content: account key, nonce and orders. */
export interface Bundle {
  /** The trader's Ed25519 public key (32 bytes). */
  account: Uint8Array;
  /** Per-account nonce (u64). */
  nonce: bigint;
  /** 1..=256 orders, in the trader's order. */
  orders: Order[];
}

/** A bundle with its Ed25519 signature. */
export interface SignedBundle extends Bundle {
  /** The 64-byte signature over {@link bundleSigningMessage}. */
  signature: Uint8Array;
}

/** Encodes one order (30 bytes); throws `Unencodable` on a rule of §6 broken. */
export function encodeOrder(o: Order): Uint8Array {
  if (o.qty === 0n) throw new SealbatchError('Unencodable', 'order quantity must be non-zero');
  const w = new Writer().u32(o.market);
  if (o.side !== 'buy' && o.side !== 'sell') throw new SealbatchError('Unencodable', 'bad side');
  w.u8(o.side === 'buy' ? 0 : 1);
  if (o.limit === null) w.u8(0).u64(0n);
  else w.u8(1).u64(o.limit);
  return w.u64(o.qty).u64(o.clientOrderId).finish();
}

/** The signed body: `account ‖ u64le(nonce) ‖ u16le(n) ‖ orders` (`42 + 30n` bytes). */
export function encodeBundleBody(b: Bundle): Uint8Array {
  const n = b.orders.length;
  if (n < 1 || n > BUNDLE_ORDERS_MAX) throw new SealbatchError('Unencodable', `a bundle has 1..=${BUNDLE_ORDERS_MAX} orders`);
  return concat(expectLen(b.account, 32, 'account'), u64le(b.nonce), u16le(n), ...b.orders.map(encodeOrder));
}

/** `DOM("sealbatch v1 bundle signature") ‖ deployment_id ‖ u64le(e) ‖ body`. */
export function bundleSigningMessage(deployment: Uint8Array, e: bigint, body: Uint8Array): Uint8Array {
  return concat(dom(Domain.bundleSignature), expectLen(deployment, 32, 'deployment id'), u64le(e), body);
}

/**
 * Builds and signs a bundle for batch `e` of a deployment with the account's
 * 32-byte Ed25519 seed; the account key is the seed's public key.
 */
export function signBundle(
  accountSeed: Uint8Array,
  deployment: Uint8Array,
  e: bigint,
  nonce: bigint,
  orders: Order[],
): SignedBundle {
  const account = publicKeyOf(accountSeed);
  const body = encodeBundleBody({ account, nonce, orders });
  const signature = sign(accountSeed, bundleSigningMessage(deployment, e, body));
  return { account, nonce, orders, signature };
}

/** The smallest plaintext class holding `106 + 30n` bytes. */
export function plaintextClass(orders: number): number {
  const need = 106 + ORDER_LEN * orders;
  for (const c of PLAINTEXT_CLASSES) if (need <= c) return c;
  throw new SealbatchError('Unencodable', 'bundle too large for any class');
}

/** The padded plaintext `body ‖ signature ‖ zeros` of a signed bundle. */
export function encodePlaintext(b: SignedBundle): Uint8Array {
  const body = encodeBundleBody(b);
  const c = plaintextClass(b.orders.length);
  const out = new Uint8Array(c);
  out.set(body, 0);
  out.set(expectLen(b.signature, 64, 'signature'), body.length);
  return out;
}

function malformed(detail: string): never {
  throw new EnvelopeRejectedError(Rejection.Malformed, detail);
}

/**
 * Decodes a bundle plaintext by §6 and §10 step 6: count 0 → `Malformed`;
 * over 256 → `BundleTooLarge`; wrong class, non-zero padding, bad side, bad
 * limit encoding or zero quantity → `Malformed`. (Keys and signature are not
 * checked here.)
 */
export function decodePlaintext(pt: Uint8Array): SignedBundle {
  if (pt.length < 42) malformed('plaintext shorter than a bundle header');
  const n = (pt[40] as number) | ((pt[41] as number) << 8);
  if (n === 0) malformed('no orders');
  if (n > BUNDLE_ORDERS_MAX) throw new EnvelopeRejectedError(Rejection.BundleTooLarge, `${n} orders`);
  const need = 106 + ORDER_LEN * n;
  const cls = PLAINTEXT_CLASSES.find((c) => need <= c);
  if (cls === undefined || cls !== pt.length) malformed(`wrong class: ${n} orders in ${pt.length} bytes`);
  for (let i = need; i < pt.length; i++) if (pt[i] !== 0) malformed('padding');
  const r = new Reader(pt);
  const account = r.take(32, 'account');
  const nonce = r.u64('nonce');
  r.u16('count');
  const orders: Order[] = [];
  for (let i = 0; i < n; i++) {
    const market = r.u32('market');
    const side = r.u8('side');
    const kind = r.u8('limit kind');
    const limit = r.u64('limit');
    const qty = r.u64('qty');
    const clientOrderId = r.u64('client order id');
    if (side > 1) malformed(`order ${i}: side ${side}`);
    if (kind > 1 || (kind === 0 && limit !== 0n)) malformed(`order ${i}: limit encoding`);
    if (qty === 0n) malformed(`order ${i}: zero quantity`);
    orders.push({ market, side: side === 0 ? 'buy' : 'sell', limit: kind === 1 ? limit : null, qty, clientOrderId });
  }
  const signature = r.take(64, 'signature');
  return { account, nonce, orders, signature };
}

// ---------------------------------------------------------------------------
// §7, §8 Sealing and commitments

/** The intermediate values of one sealing, for tests and audits. */
export interface Sealed {
  /** The envelope bytes. */
  envelope: Uint8Array;
  /** Its commitment (§8). */
  commitment: Uint8Array;
  /** `enc(r·G)`. */
  R: Uint8Array;
  /** `enc(r·S_e)`. */
  shared: Uint8Array;
  /** The AEAD key. */
  kemKey: Uint8Array;
}

/** `k = KDF("sealbatch v1 kem key", shared ‖ R ‖ S_e ‖ u64le(e))`. */
export function kemKey(shared: Uint8Array, R: Uint8Array, S: Uint8Array, e: bigint): Uint8Array {
  return kdf(Domain.kemKey, concat(shared, R, S, u64le(e)));
}

/** `header = u8(1) ‖ u64le(e) ‖ R`. */
export function envelopeHeader(e: bigint, R: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(VERSION), u64le(e), expectLen(R, 32, 'R'));
}

/**
 * Seals a padded plaintext to batch `e` under its announced key `S_e`
 * (ristretto255 hashed ElGamal + ChaCha20-Poly1305, §7). `r` is drawn at random
 * unless given (tests only: never reuse an `r`).
 */
export function sealPlaintext(pt: Uint8Array, e: bigint, S: Uint8Array, r: bigint = randomScalar()): Sealed {
  if (!PLAINTEXT_CLASSES.includes(pt.length)) throw new SealbatchError('Unencodable', 'plaintext is not of a class size');
  if (r <= 0n || r >= GROUP_ORDER) throw new SealbatchError('BadScalar', 'ephemeral scalar must be in 1..l');
  const Sp = decodeBatchKey(S);
  const R = mulBase(r).toBytes();
  const shared = Sp.multiply(r).toBytes();
  const key = kemKey(shared, R, S, e);
  const header = envelopeHeader(e, R);
  const ct = chacha(key).encrypt(pt, header);
  const envelope = concat(header, ct);
  return { envelope, commitment: commitment(envelope), R, shared, kemKey: key };
}

/** Seals a signed bundle to batch `e` (encodes and pads its plaintext first). */
export function sealBundle(b: SignedBundle, e: bigint, S: Uint8Array, r?: bigint): Sealed {
  return sealPlaintext(encodePlaintext(b), e, S, r);
}

/** `commitment = KDF("sealbatch v1 envelope commitment", envelope)`. */
export function commitment(envelope: Uint8Array): Uint8Array {
  return kdf(Domain.commitment, envelope);
}

// ChaCha20-Poly1305 with the all-zero nonce (each key seals one message).
function chacha(key: Uint8Array) {
  const nonce = new Uint8Array(12);
  return {
    encrypt: (pt: Uint8Array, aad: Uint8Array) => chacha20poly1305(key, nonce, aad).encrypt(pt),
    decrypt: (ct: Uint8Array, aad: Uint8Array) => chacha20poly1305(key, nonce, aad).decrypt(ct),
  };
}

// ---------------------------------------------------------------------------
// §9 Shape check, §10 opening

/** What the shape check learned: the envelope's batch and its decoded `R`. */
export interface Shape {
  /** The batch named in the header. */
  e: bigint;
  /** The decoded ephemeral point. */
  R: RistrettoPoint;
}

/**
 * The sequencer's shape check (§9) for batch `e`, in order: length
 * (`Truncated`, `Oversized`, `BadLength`), version (`UnknownVersion`), batch
 * (`WrongBatch`), ephemeral point (`BadEphemeral`). Throws
 * {@link EnvelopeRejectedError}.
 */
export function checkShape(envelope: Uint8Array, e: bigint): Shape {
  const len = envelope.length;
  if (len < ENVELOPE_LEN_MIN) throw new EnvelopeRejectedError(Rejection.Truncated, `len ${len}`);
  if (len > ENVELOPE_LEN_MAX) throw new EnvelopeRejectedError(Rejection.Oversized, `len ${len}`);
  if (!PLAINTEXT_CLASSES.includes(len - HEADER_LEN - TAG_LEN)) throw new EnvelopeRejectedError(Rejection.BadLength, `len ${len}`);
  if (envelope[0] !== VERSION) throw new EnvelopeRejectedError(Rejection.UnknownVersion, `version ${envelope[0]}`);
  const eh = leToBigint(envelope.subarray(1, 9));
  if (eh !== e) throw new EnvelopeRejectedError(Rejection.WrongBatch, `envelope ${eh}, expected ${e}`);
  let R: RistrettoPoint;
  try {
    R = decodePoint(envelope.subarray(9, 41));
  } catch {
    throw new EnvelopeRejectedError(Rejection.BadEphemeral, '');
  }
  return { e: eh, R };
}

/**
 * Opens one envelope of batch `e` with the released batch secret (§10 steps
 * 1–8) and returns the verified bundle, or throws
 * {@link EnvelopeRejectedError} with the first failing step's code.
 * `deployment` is the deployment id the bundle signature binds (§4, §6);
 * `S` the batch public key `S_e` (recomputed from `sE` when omitted).
 */
export function openEnvelope(envelope: Uint8Array, e: bigint, sE: bigint, deployment: Uint8Array, S?: Uint8Array): SignedBundle {
  const { R } = checkShape(envelope, e);
  const Sb = S ?? mulBase(sE).toBytes();
  const shared = mulPublic(R, sE).toBytes();
  const key = kemKey(shared, envelope.subarray(9, 41), Sb, e);
  let pt: Uint8Array;
  try {
    pt = chacha(key).decrypt(envelope.subarray(HEADER_LEN), envelope.subarray(0, HEADER_LEN));
  } catch {
    throw new EnvelopeRejectedError(Rejection.AeadFailure, '');
  }
  const b = decodePlaintext(pt);
  if (decodeEdwardsStrict(b.account) === null) throw new EnvelopeRejectedError(Rejection.BadAccountKey, toHex(b.account));
  const msg = bundleSigningMessage(deployment, e, encodeBundleBody(b));
  if (!verifyCofactored(b.signature, msg, b.account)) throw new EnvelopeRejectedError(Rejection.BadSignature, '');
  return b;
}

/** The outcome of one envelope of an opened batch. */
export interface OpenedEnvelope {
  /** Its commitment. */
  commitment: Uint8Array;
  /** Its position in the input. */
  inputIndex: number;
  /** The verified bundle, or `null` when rejected. */
  bundle: SignedBundle | null;
  /** The rejection code, or `null` when the bundle verified. */
  rejection: RejectionCode | null;
}

/**
 * Opens a published batch (§10 "Opening a batch") with its released secret
 * `s_e` (32 bytes, checked against `S_e`) and the batch's seal: the distinct
 * sorted commitments must have the seal's count and root (else `SealMismatch`,
 * nothing opened); outcomes come in `(commitment, input position)` order,
 * replays are `DuplicateEnvelope`, and every envelope of an `(account, nonce)`
 * that opened more than once is `DuplicateNonce`.
 */
export function openBatch(
  secret: Uint8Array,
  S: Uint8Array,
  seal: Pick<Seal, 'e' | 'count' | 'root'>,
  deployment: Uint8Array,
  envelopes: Uint8Array[],
): OpenedEnvelope[] {
  const sE = checkBatchSecret(secret, S);
  const items = envelopes.map((env, i) => ({ env, i, c: commitment(env) }));
  const distinct: Uint8Array[] = [];
  const sortedC = items.map((x) => x.c).sort(compareBytes);
  for (const c of sortedC) if (distinct.length === 0 || !bytesEqual(distinct[distinct.length - 1] as Uint8Array, c)) distinct.push(c);
  if (distinct.length !== seal.count || !bytesEqual(merkleRoot(distinct), seal.root)) {
    throw new SealbatchError('SealMismatch', `the envelopes do not make the seal of batch ${seal.e}`);
  }
  items.sort((a, b) => compareBytes(a.c, b.c) || a.i - b.i);
  const out: OpenedEnvelope[] = [];
  let prev: Uint8Array | null = null;
  for (const it of items) {
    let bundle: SignedBundle | null = null;
    let rejection: RejectionCode | null = null;
    if (prev !== null && bytesEqual(prev, it.c)) rejection = Rejection.DuplicateEnvelope;
    else {
      try {
        bundle = openEnvelope(it.env, seal.e, sE, deployment, S);
      } catch (err) {
        if (err instanceof EnvelopeRejectedError) rejection = err.rejection;
        else throw err;
      }
    }
    prev = it.c;
    out.push({ commitment: it.c, inputIndex: it.i, bundle, rejection });
  }
  const seen = new Map<string, number>();
  for (const o of out) {
    if (o.bundle === null) continue;
    const k = toHex(o.bundle.account) + ':' + o.bundle.nonce.toString();
    seen.set(k, (seen.get(k) ?? 0) + 1);
  }
  for (const o of out) {
    if (o.bundle === null) continue;
    const k = toHex(o.bundle.account) + ':' + o.bundle.nonce.toString();
    if ((seen.get(k) ?? 0) > 1) {
      o.bundle = null;
      o.rejection = Rejection.DuplicateNonce;
    }
  }
  return out;
}

/** The scalar `s_e` as its canonical 32 bytes. */
export function batchSecretBytes(sE: bigint): Uint8Array {
  return scalarToBytes(sE);
}

/**
 * Decrypts an envelope of batch `e` with its secret and returns the raw
 * padded plaintext, checking only the shape (§9) and the AEAD (§10 step 5):
 * for audits that must look at a bundle that does not decode.
 */
export function decryptEnvelope(envelope: Uint8Array, e: bigint, sE: bigint, S?: Uint8Array): Uint8Array {
  const { R } = checkShape(envelope, e);
  const Sb = S ?? mulBase(sE).toBytes();
  const key = kemKey(mulPublic(R, sE).toBytes(), envelope.subarray(9, 41), Sb, e);
  try {
    return chacha(key).decrypt(envelope.subarray(HEADER_LEN), envelope.subarray(0, HEADER_LEN));
  } catch {
    throw new EnvelopeRejectedError(Rejection.AeadFailure, '');
  }
}
