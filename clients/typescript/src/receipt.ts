/**
 * The sequencer's signed statements about envelopes (spec/envelope.md §12–§13):
 * receipts (a promise of inclusion in batch `e`) and seals (a batch's count and
 * Merkle root), and the trader's after-the-batch check that ties a receipt to
 * its seal through an inclusion proof.
 */
import { Reader, Writer, bytesEqual, concat, dom, expectLen, toHex, u32le, u64le } from './codec.js';
import { kdf, sign, verifyStrict } from './crypto.js';
import { SealbatchError } from './errors.js';
import { decodeProof, encodeProof, levelsOver, proofIn, verifyProof, verifyProofFromLeaf, type InclusionProof } from './merkle.js';

/** Most receipts in one group (one signature). */
export const RECEIPT_GROUP_MAX = 4096;
/** Most siblings in a receipt's path: `log2(RECEIPT_GROUP_MAX)`. */
export const RECEIPT_PROOF_DEPTH_MAX = 12;
/** Bytes of a receipt with an empty path (a group of one). */
export const RECEIPT_LEN_MIN = 8 + 32 + 4 + 32 + 64 + 4 + 1;
/** Bytes of the longest receipt. */
export const RECEIPT_LEN_MAX = RECEIPT_LEN_MIN + 32 * RECEIPT_PROOF_DEPTH_MAX;
/** Bytes of an encoded seal. */
export const SEAL_LEN = 108;

/**
 * A receipt (§12): the promise that `commitment` is in batch `e`, one leaf of
 * a receipt group the sequencer signed at once. The signature covers the
 * group's `count` and `root`; `proof` leads from this receipt's leaf to the
 * root. Together they verify against the sequencer key alone.
 */
export interface Receipt {
  /** The batch the envelope is promised into. */
  e: bigint;
  /** The envelope's commitment. */
  commitment: Uint8Array;
  /** How many receipts the group holds (1 to 4096). */
  count: number;
  /** The group's Merkle root. */
  root: Uint8Array;
  /** The sequencer's Ed25519 signature over {@link receiptGroupMessage}. */
  signature: Uint8Array;
  /** The path of this receipt's leaf (index and siblings, at most 12). */
  proof: InclusionProof;
}

/** A signed seal: batch, count of distinct commitments, Merkle root, signature. */
export interface Seal {
  /** The batch. */
  e: bigint;
  /** Number of distinct commitments (u32). */
  count: number;
  /** Merkle root of the sorted commitments. */
  root: Uint8Array;
  /** The sequencer's Ed25519 signature over {@link sealMessage}. */
  signature: Uint8Array;
}

/** `leaf(e, commitment) = KDF("sealbatch v1 receipt leaf", u64le(e) ‖ commitment)`. */
export function receiptLeaf(e: bigint, commitment: Uint8Array): Uint8Array {
  return kdf('sealbatch v1 receipt leaf', concat(u64le(e), expectLen(commitment, 32, 'commitment')));
}

/** `DOM("sealbatch v1 receipt group") ‖ u32le(count) ‖ root`: what a group's signature covers. */
export function receiptGroupMessage(count: number, root: Uint8Array): Uint8Array {
  return concat(dom('sealbatch v1 receipt group'), u32le(count), expectLen(root, 32, 'root'));
}

/** `DOM("sealbatch v1 seal") ‖ u64le(e) ‖ u32le(count) ‖ root`. */
export function sealMessage(e: bigint, count: number, root: Uint8Array): Uint8Array {
  return concat(dom('sealbatch v1 seal'), u64le(e), u32le(count), expectLen(root, 32, 'root'));
}

/**
 * Encodes a receipt: `u64le(e) ‖ commitment ‖ u32le(count) ‖ root ‖ signature ‖
 * u32le(i) ‖ u8(k) ‖ k × sibling` (145 + 32k bytes).
 */
export function encodeReceipt(r: Receipt): Uint8Array {
  if (r.proof.siblings.length > RECEIPT_PROOF_DEPTH_MAX) throw new SealbatchError('Unencodable', 'receipt path deeper than 12');
  return new Writer()
    .u64(r.e)
    .fixed(r.commitment, 32, 'commitment')
    .u32(r.count)
    .fixed(r.root, 32, 'root')
    .fixed(r.signature, 64, 'signature')
    .bytes(encodeProof(r.proof))
    .finish();
}

/**
 * The length of the receipt that starts `b`, from its sibling count (byte
 * 144): `Truncated` if `b` is too short to say, `TooLarge` past 12 siblings.
 */
export function receiptLength(b: Uint8Array): number {
  if (b.length < RECEIPT_LEN_MIN) throw new SealbatchError('Truncated', `a receipt is at least ${RECEIPT_LEN_MIN} bytes`);
  const k = b[RECEIPT_LEN_MIN - 1] as number;
  if (k > RECEIPT_PROOF_DEPTH_MAX) throw new SealbatchError('TooLarge', `receipt path of ${k} siblings; at most ${RECEIPT_PROOF_DEPTH_MAX}`);
  return RECEIPT_LEN_MIN + 32 * k;
}

/** Decodes a receipt of exactly `145 + 32k` bytes, `k ≤ 12` (`Truncated`/`Trailing`/`TooLarge` otherwise). Does not verify it. */
export function decodeReceipt(b: Uint8Array): Receipt {
  receiptLength(b);
  const r = new Reader(b);
  const e = r.u64('e');
  const commitment = r.take(32, 'commitment');
  const count = r.u32('count');
  const root = r.take(32, 'root');
  const signature = r.take(64, 'signature');
  const proof = decodeProof(r.take(r.remaining, 'proof'));
  return { e, commitment, count, root, signature, proof };
}

/** Encodes a seal: `u64le(e) ‖ u32le(count) ‖ root ‖ signature` (108 bytes). */
export function encodeSeal(s: Seal): Uint8Array {
  return new Writer().u64(s.e).u32(s.count).fixed(s.root, 32, 'root').fixed(s.signature, 64, 'signature').finish();
}

/** Decodes a seal of exactly 108 bytes. Does not verify it. */
export function decodeSeal(b: Uint8Array): Seal {
  const r = new Reader(b);
  const out = { e: r.u64('e'), count: r.u32('count'), root: r.take(32, 'root'), signature: r.take(64, 'signature') };
  r.end('seal');
  return out;
}

/** Whether the receipt's path leads from its leaf to its group's root (the signature not checked). */
export function verifyReceiptPath(r: Receipt): boolean {
  if (!(r.count >= 1 && r.count <= RECEIPT_GROUP_MAX)) return false;
  if (r.proof.siblings.length > RECEIPT_PROOF_DEPTH_MAX) return false;
  return verifyProofFromLeaf(receiptLeaf(r.e, r.commitment), r.proof, r.count, r.root);
}

/** Whether the receipt's group signature verifies strictly under the sequencer key (the path not checked). */
export function verifyReceiptGroup(r: Receipt, sequencerKey: Uint8Array): boolean {
  return verifyStrict(r.signature, receiptGroupMessage(r.count, r.root), sequencerKey);
}

/** Whether the receipt verifies alone: its path, then its group's signature. */
export function verifyReceipt(r: Receipt, sequencerKey: Uint8Array): boolean {
  return verifyReceiptPath(r) && verifyReceiptGroup(r, sequencerKey);
}

/**
 * Checks receipts against one sequencer key, each group's signature once: a
 * receipt whose `count`, `root` and `signature` equal a group verified before
 * needs only its path walked. Remembers the last 64 groups.
 */
export class ReceiptChecker {
  private readonly verified: string[] = [];
  /** A checker for receipts signed by `sequencerKey`. */
  constructor(readonly sequencerKey: Uint8Array) {}
  /** Whether `r` verifies (as {@link verifyReceipt}). */
  check(r: Receipt): boolean {
    if (!verifyReceiptPath(r)) return false;
    const id = `${r.count}:${toHex(r.root)}:${toHex(r.signature)}`;
    if (this.verified.includes(id)) return true;
    if (!verifyReceiptGroup(r, this.sequencerKey)) return false;
    if (this.verified.length === 64) this.verified.shift();
    this.verified.push(id);
    return true;
  }
}

/** Whether the seal's signature verifies strictly under the sequencer key. */
export function verifySeal(s: Seal, sequencerKey: Uint8Array): boolean {
  return verifyStrict(s.signature, sealMessage(s.e, s.count, s.root), sequencerKey);
}

/** Signs `entries` as one receipt group and returns each one's receipt (what a sequencer does; for tests and tools). */
export function signReceipts(seed: Uint8Array, entries: { e: bigint; commitment: Uint8Array }[]): Receipt[] {
  if (entries.length < 1 || entries.length > RECEIPT_GROUP_MAX) throw new SealbatchError('Invalid', `a receipt group holds 1 to ${RECEIPT_GROUP_MAX}`);
  const ls = levelsOver(entries.map((x) => receiptLeaf(x.e, x.commitment)));
  const root = (ls[ls.length - 1] as Uint8Array[])[0] as Uint8Array;
  const count = entries.length;
  const signature = sign(seed, receiptGroupMessage(count, root));
  return entries.map((x, i) => ({ e: x.e, commitment: x.commitment, count, root, signature, proof: proofIn(ls, i) }));
}

/** Signs one receipt alone: a group of one (for tests and tools). */
export function signReceipt(seed: Uint8Array, e: bigint, commitment: Uint8Array): Receipt {
  return signReceipts(seed, [{ e, commitment }])[0] as Receipt;
}

/** Signs a seal (what a sequencer does; for tests and tools). */
export function signSeal(seed: Uint8Array, e: bigint, count: number, root: Uint8Array): Seal {
  return { e, count, root, signature: sign(seed, sealMessage(e, count, root)) };
}

/**
 * The trader's check after the batch (§13): the seal and the receipt verify
 * under the sequencer key, both name the same batch, and the proof leads from
 * the receipt's commitment to the seal's root for the seal's count. Throws
 * `BadSignature`, `Mismatch` or `BadProof`; `proof` may be given encoded.
 */
export function verifyInclusion(receipt: Receipt, seal: Seal, proof: InclusionProof | Uint8Array, sequencerKey: Uint8Array): void {
  if (!verifySeal(seal, sequencerKey)) throw new SealbatchError('BadSignature', `seal of batch ${seal.e} does not verify`);
  if (!verifyReceipt(receipt, sequencerKey)) throw new SealbatchError('BadSignature', `receipt for batch ${receipt.e} does not verify`);
  if (receipt.e !== seal.e) throw new SealbatchError('Mismatch', `receipt for batch ${receipt.e}, seal of batch ${seal.e}`);
  const p = proof instanceof Uint8Array ? decodeProof(proof) : proof;
  if (!verifyProof(receipt.commitment, p, seal.count, seal.root)) {
    throw new SealbatchError('BadProof', `commitment is not leaf ${p.index} of the seal of batch ${seal.e}`);
  }
}

/** Whether two seals state the same `(e, count, root)`. */
export function sameSeal(a: Pick<Seal, 'e' | 'count' | 'root'>, b: Pick<Seal, 'e' | 'count' | 'root'>): boolean {
  return a.e === b.e && a.count === b.count && bytesEqual(a.root, b.root);
}
