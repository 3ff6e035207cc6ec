/**
 * The primitives of spec/envelope.md §1–§2 and §11 on top of the audited noble
 * libraries: BLAKE3 `derive_key` (the spec's `KDF`), ristretto255 scalars and
 * points (RFC 9496), and Ed25519 with the strict decoding rules of §11,
 * cofactorless (receipts, seals, every sequencer/keyper/replica signature) and
 * cofactored (bundle signatures).
 */
import { ed25519, ristretto255 } from '@noble/curves/ed25519.js';
import { blake3 } from '@noble/hashes/blake3.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { bigintToLe, concat, leToBigint, utf8, bytesEqual } from './codec.js';
import { SealbatchError } from './errors.js';

/** The prime order `l` (ℓ) of ristretto255 and of Ed25519's prime-order subgroup. */
export const GROUP_ORDER: bigint = ristretto255.Point.Fn.ORDER;

/** A ristretto255 point (noble's type). */
export type RistrettoPoint = InstanceType<typeof ristretto255.Point>;
/** An Ed25519 (Edwards) point (noble's type). */
export type EdwardsPoint = InstanceType<typeof ed25519.Point>;

/** `KDF(ctx, m)`: BLAKE3 `derive_key(context = ctx, key_material = m)`, `len` bytes of XOF output (32 by default). */
export function kdf(context: string, material: Uint8Array, len = 32): Uint8Array {
  return blake3(material, { context: utf8(context), dkLen: len });
}

/** Plain BLAKE3 hash of `m` (`len` bytes of XOF output, 32 by default). */
export function blake3Hash(m: Uint8Array, len = 32): Uint8Array {
  return blake3(m, { dkLen: len });
}

/** BLAKE3 keyed hash (32-byte key). */
export function blake3Keyed(key: Uint8Array, m: Uint8Array): Uint8Array {
  return blake3(m, { key });
}

/** `wide_reduce(b)`: 64 bytes read as a little-endian integer, reduced modulo `l`. */
export function wideReduce(b: Uint8Array): bigint {
  if (b.length !== 64) throw new SealbatchError('BadScalar', 'wide reduction needs 64 bytes');
  return leToBigint(b) % GROUP_ORDER;
}

/** The 32-byte little-endian encoding of a scalar `< l`. */
export function scalarToBytes(s: bigint): Uint8Array {
  if (s < 0n || s >= GROUP_ORDER) throw new SealbatchError('BadScalar', 'scalar not reduced');
  return bigintToLe(s, 32);
}

/** Decodes a canonical scalar (32 bytes, `< l`); `BadScalar` otherwise. */
export function scalarFromBytes(b: Uint8Array): bigint {
  if (b.length !== 32) throw new SealbatchError('BadScalar', 'a scalar is 32 bytes');
  const s = leToBigint(b);
  if (s >= GROUP_ORDER) throw new SealbatchError('BadScalar', 'scalar not canonical (not below l)');
  return s;
}

/** A uniformly random non-zero scalar (64 random bytes, wide-reduced). */
export function randomScalar(): bigint {
  for (;;) {
    const s = wideReduce(randomBytes(64));
    if (s !== 0n) return s;
  }
}

/** The ristretto255 generator `G`. */
export const G: RistrettoPoint = ristretto255.Point.BASE;

/** `enc(s·G)` for a scalar `s` in `1..l`. */
export function mulBase(s: bigint): RistrettoPoint {
  return G.multiply(s);
}

/**
 * `dec(b)` of RFC 9496 for a point received from someone else: it must be a
 * canonical encoding and not the identity (spec/envelope.md §5, spec/keyper.md §1).
 */
export function decodePoint(b: Uint8Array): RistrettoPoint {
  if (b.length !== 32) throw new SealbatchError('BadPoint', 'a point is 32 bytes');
  let p: RistrettoPoint;
  try {
    p = ristretto255.Point.fromBytes(b);
  } catch {
    throw new SealbatchError('BadPoint', 'not a canonical ristretto255 encoding');
  }
  if (p.is0()) throw new SealbatchError('BadPoint', 'the identity');
  return p;
}

/** Ristretto point multiplication by any scalar in `0..l` (variable time: public data only). */
export function mulPublic(p: RistrettoPoint, s: bigint): RistrettoPoint {
  return p.multiplyUnsafe(s);
}

/** `wide_reduce(BLAKE3_XOF(label)[0..64])`: the test vectors' way of fixing a scalar from a label. */
export function scalarFromLabel(label: string): bigint {
  return wideReduce(blake3Hash(utf8(label), 64));
}

// ---------------------------------------------------------------------------
// Ed25519

const ED_P: bigint = ed25519.Point.Fp.ORDER;

/**
 * Decodes an Ed25519 point strictly (spec/envelope.md §11): a canonical
 * encoding (`y < 2^255 − 19`), that decodes, and not of small order
 * (`8·A ≠ identity`). Returns `null` when any rule fails.
 */
export function decodeEdwardsStrict(b: Uint8Array): EdwardsPoint | null {
  if (b.length !== 32) return null;
  const y = leToBigint(b) & ((1n << 255n) - 1n);
  if (y >= ED_P) return null; // non-canonical y: checked before any decoding
  let p: EdwardsPoint;
  try {
    p = ed25519.Point.fromBytes(b, false);
  } catch {
    return null;
  }
  if (p.isSmallOrder()) return null;
  return p;
}

/** Whether `b` is a strict Ed25519 public key (canonical, decodes, not of small order). */
export function isStrictPublicKey(b: Uint8Array): boolean {
  return decodeEdwardsStrict(b) !== null;
}

interface ParsedSignature {
  A: EdwardsPoint;
  R: EdwardsPoint;
  S: bigint;
  k: bigint;
}

// Verification keys seen more than once (a sequencer's, a keyper's) are kept
// decoded, with window tables, so each later check costs a fraction of the
// first. Public data only; bounded.
const KEY_CACHE_MAX = 64;
const keyCache = new Map<string, { point: EdwardsPoint; uses: number }>();

function verificationKey(publicKey: Uint8Array): EdwardsPoint | null {
  let h = '';
  for (const b of publicKey) h += b.toString(16).padStart(2, '0');
  const hit = keyCache.get(h);
  if (hit !== undefined) {
    if (++hit.uses === 2) hit.point.precompute(8, false);
    return hit.point;
  }
  const A = decodeEdwardsStrict(publicKey);
  if (A === null) return null;
  if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value as string);
  keyCache.set(h, { point: A, uses: 1 });
  return A;
}

function parseStrict(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): ParsedSignature | null {
  if (signature.length !== 64 || publicKey.length !== 32) return null;
  const A = verificationKey(publicKey);
  if (A === null) return null;
  const rBytes = signature.subarray(0, 32);
  const S = leToBigint(signature.subarray(32, 64));
  if (S >= GROUP_ORDER) return null;
  const R = decodeEdwardsStrict(rBytes);
  if (R === null) return null;
  const k = leToBigint(sha512(concat(rBytes, publicKey, message))) % GROUP_ORDER;
  return { A, R, S, k };
}

/**
 * Strict cofactorless Ed25519 verification (`verify_strict`): the §11 decoding
 * rules for `A`, `S` and `R`, then `enc([S]B − [k]A) = R`. Used for receipts,
 * seals, schedules, attestations, certificates and every signed request.
 */
export function verifyStrict(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  const p = parseStrict(signature, message, publicKey);
  if (p === null) return false;
  const check = ed25519.Point.BASE.multiplyUnsafe(p.S).subtract(p.A.multiplyUnsafe(p.k));
  return bytesEqual(check.toBytes(), signature.subarray(0, 32));
}

/**
 * Strict cofactored Ed25519 verification, for bundle signatures
 * (spec/envelope.md §11): the same decoding rules, then
 * `[8]([S]B − R − [k]A) = identity`.
 */
export function verifyCofactored(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  const p = parseStrict(signature, message, publicKey);
  if (p === null) return false;
  const v = ed25519.Point.BASE.multiplyUnsafe(p.S).subtract(p.R).subtract(p.A.multiplyUnsafe(p.k));
  return v.clearCofactor().is0();
}

/** The Ed25519 public key of a 32-byte seed (RFC 8032). */
export function publicKeyOf(seed: Uint8Array): Uint8Array {
  if (seed.length !== 32) throw new SealbatchError('BadKey', 'an Ed25519 seed is 32 bytes');
  return ed25519.getPublicKey(seed);
}

/** The deterministic RFC 8032 Ed25519 signature of `message` by the key of `seed`. */
export function sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  if (seed.length !== 32) throw new SealbatchError('BadKey', 'an Ed25519 seed is 32 bytes');
  return ed25519.sign(message, seed);
}

/** A fresh random 32-byte Ed25519 seed. */
export function randomSeed(): Uint8Array {
  return randomBytes(32);
}


