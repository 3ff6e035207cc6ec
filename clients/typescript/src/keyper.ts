/**
 * What a trader needs of the keyper committee (spec/keyper.md): the committee
 * and its id (§2), window contexts (§3), proofs of knowledge (§5), signed
 * keyper messages (§11), window certificates (§12), release attestations (§9)
 * and the keyper link's hello message (§17).
 *
 * A client keeps a batch key only if a certificate that verifies for its
 * (pinned) committee lists it: see {@link certifiedKeys}.
 */
import { Reader, Writer, bytesEqual, compareBytes, concat, dom, expectLen, leToBigint, toHex, u16le, u32le, u64le } from './codec.js';
import {
  G,
  GROUP_ORDER,
  decodeEdwardsStrict,
  decodePoint,
  kdf,
  mulPublic,
  scalarFromBytes,
  sign,
  verifyStrict,
} from './crypto.js';
import { SealbatchError } from './errors.js';
import { deploymentId as computeDeploymentId } from './envelope.js';

/** Members of a committee, at most. */
export const COMMITTEE_MAX = 64;
/** Batches in one window, at most. */
export const WINDOW_BATCHES_MAX = 1024;

/** One committee member: its Ed25519 signing key and ristretto255 encryption key. */
export interface Member {
  /** Strict Ed25519 public key (32 bytes). */
  signing: Uint8Array;
  /** Ristretto255 point `P_j` (32 bytes). */
  encryption: Uint8Array;
}

/** A keyper committee bound to one deployment; members in index order (ascending signing keys). */
export interface Committee {
  /** The deployment it serves (spec/envelope.md §4). */
  deploymentId: Uint8Array;
  /** The threshold `t`, `1 ≤ t ≤ n`. */
  t: number;
  /** Members `1..=n` in ascending order of signing key. */
  members: Member[];
}

/**
 * Builds a committee: sorts the members by signing key (their indices are
 * `1..=n` in that order), refuses duplicates, bad keys and `t` outside `1..=n`.
 */
export function makeCommittee(deploymentId: Uint8Array, t: number, members: Member[]): Committee {
  const sorted = [...members].sort((a, b) => compareBytes(a.signing, b.signing));
  const c = { deploymentId, t, members: sorted };
  checkCommittee(c);
  return c;
}

function checkCommittee(c: Committee): void {
  const n = c.members.length;
  expectLen(c.deploymentId, 32, 'deployment id');
  if (n < 1 || n > COMMITTEE_MAX || c.t < 1 || c.t > n) throw new SealbatchError('Invalid', `committee of ${n} with threshold ${c.t}`);
  for (let i = 0; i < n; i++) {
    const m = c.members[i] as Member;
    if (i > 0 && compareBytes((c.members[i - 1] as Member).signing, m.signing) >= 0) {
      throw new SealbatchError('Invalid', 'members not strictly ascending by signing key');
    }
    if (decodeEdwardsStrict(m.signing) === null) throw new SealbatchError('BadKey', `member ${i + 1}: signing key not strict`);
    decodePoint(m.encryption);
  }
}

/** `deployment_id ‖ u16le(t) ‖ u16le(n) ‖ n × (signing ‖ encryption)`. */
export function encodeCommittee(c: Committee): Uint8Array {
  const w = new Writer().fixed(c.deploymentId, 32, 'deployment id').u16(c.t).u16(c.members.length);
  for (const m of c.members) w.fixed(m.signing, 32, 'signing key').fixed(m.encryption, 32, 'encryption key');
  return w.finish();
}

/**
 * Reads a committee from `r`: at most 64 members, strictly ascending signing
 * keys, strict signing keys and valid encryption keys, `1 ≤ t ≤ n` (each
 * failure `Invalid`, naming the field).
 */
export function readCommittee(r: Reader): Committee {
  const at = r.offset;
  const deploymentId = r.take(32, 'deployment');
  const t = r.u16('threshold');
  const nAt = r.offset;
  const n = r.u16('members');
  if (n > COMMITTEE_MAX) r.fail('Invalid', 'members', `${n} members over ${COMMITTEE_MAX}`, nAt);
  const members: Member[] = [];
  for (let i = 0; i < n; i++) members.push({ signing: r.take(32, 'signing key'), encryption: r.take(32, 'encryption key') });
  for (let i = 1; i < n; i++) {
    if (compareBytes((members[i - 1] as Member).signing, (members[i] as Member).signing) >= 0) {
      r.fail('Invalid', 'members', 'members not strictly ascending by signing key', at);
    }
  }
  const c = { deploymentId, t, members };
  try {
    checkCommittee(c);
  } catch (err) {
    r.fail('Invalid', 'committee', err instanceof Error ? err.message : 'bad committee', at);
  }
  return c;
}

/** `committee_id = H("sealbatch v1 keyper committee", encoding)`. */
export function committeeId(c: Committee): Uint8Array {
  return kdf('sealbatch v1 keyper committee', encodeCommittee(c));
}

/** The 1-based index of the member with this signing key, or 0 if none. */
export function indexOf(c: Committee, signing: Uint8Array): number {
  const i = c.members.findIndex((m) => bytesEqual(m.signing, signing));
  return i + 1;
}

/** Whether the committee serves the deployment of this sequencer key and batch clock. */
export function servesDeployment(c: Committee, sequencerKey: Uint8Array, genesisMs: bigint, batchLengthMs: bigint): boolean {
  return bytesEqual(c.deploymentId, computeDeploymentId(sequencerKey, genesisMs, batchLengthMs));
}

/** A key generation's window: `W` batches from `firstBatch`, under generation `id`. */
export interface Window {
  /** Generation id (u64). */
  id: bigint;
  /** First batch (u64). */
  firstBatch: bigint;
  /** Number of batches `W`, `1..=1024`. */
  batches: number;
}

/** `context = committee_id ‖ u64le(id) ‖ u64le(first_batch) ‖ u32le(W)`. */
export function windowContext(committee: Uint8Array, w: Window): Uint8Array {
  return concat(expectLen(committee, 32, 'committee id'), u64le(w.id), u64le(w.firstBatch), u32le(w.batches));
}

function readWindow(r: Reader): Window {
  const at = r.offset;
  const w = { id: r.u64('window id'), firstBatch: r.u64('first batch'), batches: r.u32('batches') };
  if (w.batches < 1 || w.batches > WINDOW_BATCHES_MAX || w.firstBatch + BigInt(w.batches) > (1n << 64n) - 1n) {
    r.fail('Invalid', 'window', `window of ${w.batches} batches from ${w.firstBatch}`, at);
  }
  return w;
}

// ---------------------------------------------------------------------------
// §5 Proof of knowledge

/** `proof_context = context ‖ u64le(e) ‖ u16le(i)`. */
export function proofContext(context: Uint8Array, e: bigint, dealer: number): Uint8Array {
  return concat(context, u64le(e), u16le(dealer));
}

/**
 * Verifies a Schnorr proof `(R ‖ z)` (64 bytes) of knowledge of the logarithm
 * of commitment `C` under `proofContext`: `R` decodes, `z` is canonical and
 * `z·G = R + c·C` with `c` the 64-byte challenge reduced mod `l`.
 */
export function verifyProofOfKnowledge(proofCtx: Uint8Array, C: Uint8Array, proof: Uint8Array): boolean {
  if (proof.length !== 64) return false;
  try {
    const Cp = decodePoint(C);
    const Rb = proof.subarray(0, 32);
    const Rp = decodePoint(Rb);
    const z = scalarFromBytes(proof.subarray(32, 64));
    const wide = kdf('sealbatch v1 keyper proof of knowledge', concat(u64le(BigInt(proofCtx.length)), proofCtx, C, Rb), 64);
    const c = leToBigint(wide) % GROUP_ORDER;
    return mulPublic(G, z).equals(Rp.add(mulPublic(Cp, c)));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// §11 Messages

/** Tags of keyper message bodies. */
export const KeyperTag = { Dealing: 1, Accusation: 2, Apology: 3, Approval: 4 } as const;

/** A keyper message with its body kept as bytes (accusations and approvals are also parsed). */
export interface KeyperMessage {
  /** The generation's window. */
  window: Window;
  /** The sending keyper's index. */
  sender: number;
  /** The body's tag (1–4). */
  tag: number;
  /** The body's bytes. */
  body: Uint8Array;
}

/** `u64le(id) ‖ u64le(first_batch) ‖ u32le(W) ‖ u16le(sender) ‖ u8(tag) ‖ body`. */
export function encodeKeyperMessage(m: KeyperMessage): Uint8Array {
  return new Writer().u64(m.window.id).u64(m.window.firstBatch).u32(m.window.batches).u16(m.sender).u8(m.tag).bytes(m.body).finish();
}

/** An accusation by `sender` against `dealer`. */
export function accusation(window: Window, accuser: number, dealer: number): KeyperMessage {
  return { window, sender: accuser, tag: KeyperTag.Accusation, body: u16le(dealer) };
}

/** An approval by `sender` of a window result's digest. */
export function approval(window: Window, keyper: number, digest: Uint8Array): KeyperMessage {
  return { window, sender: keyper, tag: KeyperTag.Approval, body: expectLen(digest, 32, 'digest') };
}

/** `keyper_msg = DOM("sealbatch v1 keyper message") ‖ committee_id ‖ message`. */
export function keyperSigningMessage(committee: Uint8Array, message: Uint8Array): Uint8Array {
  return concat(dom('sealbatch v1 keyper message'), expectLen(committee, 32, 'committee id'), message);
}

/** Signs a keyper message and returns its stored form `u32le(len) ‖ message ‖ signature`. */
export function signKeyperMessage(seed: Uint8Array, committee: Uint8Array, m: KeyperMessage): Uint8Array {
  const msg = encodeKeyperMessage(m);
  return concat(u32le(msg.length), msg, sign(seed, keyperSigningMessage(committee, msg)));
}

// ---------------------------------------------------------------------------
// §12 Certificates

/** A window certificate. */
export interface WindowCertificate {
  /** The window. */
  window: Window;
  /** Qualified dealers (at most 64). */
  dealers: number[];
  /** The window's commitments digest. */
  commitmentsDigest: Uint8Array;
  /** `S_e` for each batch of the window, in order (exactly `W`). */
  keys: Uint8Array[];
  /** Approvals: keyper index and its signature (at most 64). */
  approvals: { keyper: number; signature: Uint8Array }[];
}

/** Encodes a certificate (spec/keyper.md §12). */
export function encodeCertificate(c: WindowCertificate): Uint8Array {
  if (c.dealers.length > COMMITTEE_MAX || c.approvals.length > COMMITTEE_MAX || c.keys.length !== c.window.batches) {
    throw new SealbatchError('Unencodable', 'certificate over its bounds');
  }
  const w = new Writer().u64(c.window.id).u64(c.window.firstBatch).u32(c.window.batches).u16(c.dealers.length);
  for (const d of c.dealers) w.u16(d);
  w.fixed(c.commitmentsDigest, 32, 'commitments digest').u32(c.keys.length);
  for (const k of c.keys) w.fixed(k, 32, 'key');
  w.u16(c.approvals.length);
  for (const a of c.approvals) w.u16(a.keyper).fixed(a.signature, 64, 'signature');
  return w.finish();
}

/**
 * Reads a certificate from `r`: a valid window, at most 64 dealers and
 * approvals (`Invalid` beyond), exactly `W` keys (the key count over 1024 is
 * `TooLarge`, any other count than `W` is `Invalid`). It does not verify it.
 */
export function readCertificate(r: Reader): WindowCertificate {
  const window = readWindow(r);
  let at = r.offset;
  const q = r.u16('qualified');
  if (q > COMMITTEE_MAX) r.fail('Invalid', 'qualified', `${q} dealers`, at);
  const dealers: number[] = [];
  for (let i = 0; i < q; i++) dealers.push(r.u16('dealer'));
  const commitmentsDigest = r.take(32, 'commitments digest');
  at = r.offset;
  const w = r.count(WINDOW_BATCHES_MAX, 'keys');
  if (w !== window.batches) r.fail('Invalid', 'keys', `${w} keys for a window of ${window.batches}`, at);
  const keys: Uint8Array[] = [];
  for (let i = 0; i < w; i++) keys.push(r.take(32, 'key'));
  at = r.offset;
  const a = r.u16('approvals');
  if (a > COMMITTEE_MAX) r.fail('Invalid', 'approvals', `${a} approvals`, at);
  const approvals: { keyper: number; signature: Uint8Array }[] = [];
  for (let i = 0; i < a; i++) approvals.push({ keyper: r.u16('keyper'), signature: r.take(64, 'signature') });
  return { window, dealers, commitmentsDigest, keys, approvals };
}

/** Decodes exactly one certificate (no trailing bytes). */
export function decodeCertificate(b: Uint8Array): WindowCertificate {
  const r = new Reader(b);
  const c = readCertificate(r);
  r.end('certificate');
  return c;
}

/** `digest = H("sealbatch v1 keyper window result", context ‖ u16le(q) ‖ dealers ‖ commitments_digest ‖ u32le(W) ‖ keys)`. */
export function certificateDigest(committee: Uint8Array, c: WindowCertificate): Uint8Array {
  const w = new Writer().bytes(windowContext(committee, c.window)).u16(c.dealers.length);
  for (const d of c.dealers) w.u16(d);
  w.fixed(c.commitmentsDigest, 32, 'commitments digest').u32(c.keys.length);
  for (const k of c.keys) w.fixed(k, 32, 'key');
  return kdf('sealbatch v1 keyper window result', w.finish());
}

/**
 * `commitments_digest = H("sealbatch v1 keyper window commitments", u64le(id)
 * ‖ u64le(first_batch) ‖ u32le(W) ‖ for each batch: u16le(t) ‖ t × C)`.
 */
export function commitmentsDigest(w: Window, commitments: Uint8Array[][]): Uint8Array {
  const wr = new Writer().u64(w.id).u64(w.firstBatch).u32(w.batches);
  for (const cs of commitments) {
    wr.u16(cs.length);
    for (const c of cs) wr.fixed(c, 32, 'commitment');
  }
  return kdf('sealbatch v1 keyper window commitments', wr.finish());
}

/**
 * Whether the certificate is valid for the committee: at least `t` distinct
 * members' approval signatures verify over the digest recomputed from its
 * fields (each approval checked as the member's signed `Approval` message).
 */
export function verifyCertificate(committee: Committee, c: WindowCertificate): boolean {
  const id = committeeId(committee);
  const digest = certificateDigest(id, c);
  const signers = new Set<number>();
  for (const a of c.approvals) {
    const m = committee.members[a.keyper - 1];
    if (a.keyper < 1 || m === undefined) continue;
    const msg = keyperSigningMessage(id, encodeKeyperMessage(approval(c.window, a.keyper, digest)));
    if (verifyStrict(a.signature, msg, m.signing)) signers.add(a.keyper);
  }
  return signers.size >= committee.t;
}

/**
 * The batch keys the certificates certify for the committee: for each batch
 * number, every key a certificate valid for the committee lists for it
 * (normally one). Certificates that do not verify are ignored, and so are keys
 * that do not decode.
 */
export function certifiedKeys(committee: Committee, certificates: WindowCertificate[]): Map<bigint, Uint8Array[]> {
  const out = new Map<bigint, Uint8Array[]>();
  for (const c of certificates) {
    if (!verifyCertificate(committee, c)) continue;
    c.keys.forEach((k, i) => {
      try {
        decodePoint(k);
      } catch {
        return; // an undecodable key is never kept
      }
      const e = c.window.firstBatch + BigInt(i);
      const list = out.get(e) ?? [];
      if (!list.some((x) => bytesEqual(x, k))) list.push(k);
      out.set(e, list);
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// §9 Release attestations

/** One keyper's release attestation. */
export interface ReleaseAttestation {
  /** The keyper's index (non-zero). */
  keyper: number;
  /** Its Ed25519 signature over {@link releaseMessage}. */
  signature: Uint8Array;
}

/** `release_msg = DOM("sealbatch v1 keyper release") ‖ committee_id ‖ u64le(e) ‖ u32le(count) ‖ root`. */
export function releaseMessage(committee: Uint8Array, e: bigint, count: number, root: Uint8Array): Uint8Array {
  return concat(dom('sealbatch v1 keyper release'), expectLen(committee, 32, 'committee id'), u64le(e), u32le(count), expectLen(root, 32, 'root'));
}

/** `u16le(a) ‖ a × (u16le(keyper) ‖ signature)`, keypers strictly ascending and non-zero, `a ≤ 64`. */
export function encodeAttestations(w: Writer, atts: ReleaseAttestation[]): void {
  if (atts.length > COMMITTEE_MAX) throw new SealbatchError('Unencodable', 'over 64 attestations');
  w.u16(atts.length);
  let last = 0;
  for (const a of atts) {
    if (a.keyper <= last) throw new SealbatchError('Unencodable', 'attesting keypers not strictly ascending and non-zero');
    last = a.keyper;
    w.u16(a.keyper).fixed(a.signature, 64, 'attestation signature');
  }
}

/** Reads attestations: at most 64, keypers non-zero and strictly ascending (else `Invalid`). */
export function readAttestations(r: Reader): ReleaseAttestation[] {
  const at = r.offset;
  const a = r.u16('attestation count');
  if (a > COMMITTEE_MAX) r.fail('Invalid', 'attestation count', `${a} attestations`, at);
  const out: ReleaseAttestation[] = [];
  for (let i = 0; i < a; i++) {
    const kat = r.offset;
    const keyper = r.u16('attesting keyper');
    if (keyper === 0 || (out.length > 0 && (out[out.length - 1] as ReleaseAttestation).keyper >= keyper)) {
      r.fail('Invalid', 'attesting keyper', `keyper ${keyper} out of order`, kat);
    }
    out.push({ keyper, signature: r.take(64, 'attestation signature') });
  }
  return out;
}

/**
 * Whether attestations prove the release of the seal `(e, count, root)`
 * (§9): at least `t`, strictly ascending, each a member's valid signature.
 */
export function provesRelease(committee: Committee, atts: ReleaseAttestation[], e: bigint, count: number, root: Uint8Array): boolean {
  if (atts.length < committee.t) return false;
  const msg = releaseMessage(committeeId(committee), e, count, root);
  let last = 0;
  for (const a of atts) {
    if (a.keyper <= last) return false;
    last = a.keyper;
    const m = committee.members[a.keyper - 1];
    if (m === undefined || !verifyStrict(a.signature, msg, m.signing)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// §17 Hello

/** `u8(25) ‖ "sealbatch v1 keyper hello" ‖ committee_id ‖ sequencer_key ‖ channel_binding` (122 bytes). */
export function helloMessage(committee: Uint8Array, sequencerKey: Uint8Array, channelBinding: Uint8Array): Uint8Array {
  return concat(
    dom('sealbatch v1 keyper hello'),
    expectLen(committee, 32, 'committee id'),
    expectLen(sequencerKey, 32, 'sequencer key'),
    expectLen(channelBinding, 32, 'channel binding'),
  );
}

/** Lowercase hex of a committee id, as tooling prints it for pinning. */
export function committeeIdHex(c: Committee): string {
  return toHex(committeeId(c));
}
