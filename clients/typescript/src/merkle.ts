/**
 * The Merkle tree over a batch's sorted distinct commitments and its inclusion
 * proofs (spec/envelope.md §14).
 */
import { Reader, Writer, bytesEqual, concat, expectLen } from './codec.js';
import { kdf } from './crypto.js';
import { SealbatchError } from './errors.js';

/** Siblings in an inclusion proof, at most. */
export const PROOF_DEPTH_MAX = 24;
/** Bytes of the longest encoded proof: `4 + 1 + 24·32`. */
export const PROOF_LEN_MAX = 4 + 1 + PROOF_DEPTH_MAX * 32;

/** `leaf(c) = KDF("sealbatch v1 merkle leaf", c)`. */
export function merkleLeaf(c: Uint8Array): Uint8Array {
  return kdf('sealbatch v1 merkle leaf', expectLen(c, 32, 'commitment'));
}

/** `node(a, b) = KDF("sealbatch v1 merkle node", a ‖ b)`. */
export function merkleNode(a: Uint8Array, b: Uint8Array): Uint8Array {
  return kdf('sealbatch v1 merkle node', concat(a, b));
}

/** `root(empty) = KDF("sealbatch v1 merkle empty", "")`. */
export function merkleEmptyRoot(): Uint8Array {
  return kdf('sealbatch v1 merkle empty', new Uint8Array(0));
}

function levels(sorted: Uint8Array[]): Uint8Array[][] {
  return levelsOver(sorted.map(merkleLeaf));
}

/**
 * Every level of §14's tree over leaf hashes given in order (the first level
 * is `leaves`, the last holds the root): the same node function and promotion
 * for any leaves, as a receipt group's (§12).
 */
export function levelsOver(leaves: Uint8Array[]): Uint8Array[][] {
  const out: Uint8Array[][] = [leaves];
  for (;;) {
    const cur = out[out.length - 1] as Uint8Array[];
    if (cur.length <= 1) return out;
    const next: Uint8Array[] = [];
    for (let i = 0; i < cur.length; i += 2) {
      next.push(i + 1 < cur.length ? merkleNode(cur[i] as Uint8Array, cur[i + 1] as Uint8Array) : (cur[i] as Uint8Array));
    }
    out.push(next);
  }
}

/**
 * The root over leaves `c_0 < … < c_{n−1}` (the caller passes them sorted and
 * distinct; an odd last node is promoted unchanged).
 */
export function merkleRoot(sorted: Uint8Array[]): Uint8Array {
  if (sorted.length === 0) return merkleEmptyRoot();
  const ls = levels(sorted);
  return (ls[ls.length - 1] as Uint8Array[])[0] as Uint8Array;
}

/** An inclusion proof: the leaf index and the siblings met on the way up, bottom-up. */
export interface InclusionProof {
  /** The leaf's index `i` among the sorted commitments. */
  index: number;
  /** The siblings (32 bytes each), at most 24. */
  siblings: Uint8Array[];
}

/** The inclusion proof of leaf `index` over sorted distinct commitments. */
export function merkleProof(sorted: Uint8Array[], index: number): InclusionProof {
  if (index < 0 || index >= sorted.length) throw new SealbatchError('Invalid', 'leaf index out of range');
  return proofIn(levels(sorted), index);
}

/** The proof of leaf `index` in the tree of `ls` ({@link levelsOver}). */
export function proofIn(ls: Uint8Array[][], index: number): InclusionProof {
  const siblings: Uint8Array[] = [];
  let idx = index;
  for (const level of ls) {
    if (level.length <= 1) break;
    if (idx % 2 === 0) {
      if (idx + 1 < level.length) siblings.push(level[idx + 1] as Uint8Array);
    } else siblings.push(level[idx - 1] as Uint8Array);
    idx = Math.floor(idx / 2);
  }
  return { index, siblings };
}

/** Encodes a proof: `u32le(i) ‖ u8(k) ‖ k × sibling`. */
export function encodeProof(p: InclusionProof): Uint8Array {
  if (p.siblings.length > PROOF_DEPTH_MAX) throw new SealbatchError('Unencodable', 'proof deeper than 24');
  const w = new Writer().u32(p.index).u8(p.siblings.length);
  for (const s of p.siblings) w.fixed(s, 32, 'sibling');
  return w.finish();
}

/** Decodes a proof: exactly `5 + 32k` bytes with `k ≤ 24`. */
export function decodeProof(b: Uint8Array): InclusionProof {
  const r = new Reader(b);
  const index = r.u32('index');
  const at = r.offset;
  const k = r.u8('depth');
  if (k > PROOF_DEPTH_MAX) r.fail('TooLarge', 'depth', `proof depth ${k} over ${PROOF_DEPTH_MAX}`, at);
  const siblings: Uint8Array[] = [];
  for (let j = 0; j < k; j++) siblings.push(r.take(32, 'sibling'));
  r.end('proof');
  return { index, siblings };
}

/**
 * Verifies that commitment `c` is leaf `p.index` of the tree with `count`
 * leaves and root `root` (§14): `i < count`, every sibling consumed, the
 * recomputed root equal. Returns a boolean; never throws on bad data.
 */
export function verifyProof(c: Uint8Array, p: InclusionProof, count: number, root: Uint8Array): boolean {
  if (c.length !== 32) return false;
  return verifyProofFromLeaf(merkleLeaf(c), p, count, root);
}

/** {@link verifyProof} from the leaf's hash (a receipt group's leaf, §12). */
export function verifyProofFromLeaf(leaf: Uint8Array, p: InclusionProof, count: number, root: Uint8Array): boolean {
  if (leaf.length !== 32 || root.length !== 32) return false;
  if (!(p.index < count)) return false;
  let h = leaf;
  let idx = p.index;
  let len = count;
  let used = 0;
  while (len > 1) {
    if (idx % 2 === 0 && idx === len - 1) {
      // promoted: no sibling at this level
    } else {
      const s = p.siblings[used++];
      if (s === undefined || s.length !== 32) return false;
      h = idx % 2 === 0 ? merkleNode(h, s) : merkleNode(s, h);
    }
    idx = Math.floor(idx / 2);
    len = Math.ceil(len / 2);
  }
  return used === p.siblings.length && bytesEqual(h, root);
}
