/**
 * Commit certificates of a replicated sequencer (spec/replication.md §12):
 * replicas' attestations over a committed seal, or over a run of the
 * committee's log entries. Keypers check them; a client can check them too.
 */
import { Reader, Writer, compareBytes, concat, dom, expectLen, toHex, u32le, u64le } from './codec.js';
import { blake3Hash, publicKeyOf, sign, verifyStrict } from './crypto.js';
import { SealbatchError } from './errors.js';

/** Attestations in a certificate, at most. */
export const COMMIT_CERTIFICATE_MAX = 64;

/** One replica's attestation: its commit key and signature. */
export interface CommitAttestation {
  /** The replica's Ed25519 commit key. */
  commitKey: Uint8Array;
  /** Its signature. */
  signature: Uint8Array;
}

/** `DOM("sealbatch v1 committed seal") ‖ sequencer_key ‖ u64le(e) ‖ u32le(count) ‖ root`. */
export function committedSealMessage(sequencerKey: Uint8Array, e: bigint, count: number, root: Uint8Array): Uint8Array {
  return concat(dom('sealbatch v1 committed seal'), expectLen(sequencerKey, 32, 'sequencer key'), u64le(e), u32le(count), expectLen(root, 32, 'root'));
}

/** `BLAKE3(DOM("sealbatch v1 keyper log entry") ‖ entry)`. */
export function logEntryHash(entry: Uint8Array): Uint8Array {
  return blake3Hash(concat(dom('sealbatch v1 keyper log entry'), entry));
}

/**
 * `DOM("sealbatch v1 committed keyper log") ‖ sequencer_key ‖ committee_id ‖
 * u32le(count) ‖ count × (u64le(position) ‖ entry hash)`; 1 to 64 entries,
 * positions strictly ascending.
 */
export function committedLogMessage(
  sequencerKey: Uint8Array,
  committee: Uint8Array,
  entries: { position: bigint; hash: Uint8Array }[],
): Uint8Array {
  if (entries.length < 1 || entries.length > 64) throw new SealbatchError('Unencodable', 'a run has 1..=64 entries');
  const w = new Writer().bytes(dom('sealbatch v1 committed keyper log')).fixed(sequencerKey, 32, 'sequencer key').fixed(committee, 32, 'committee id').u32(entries.length);
  let last = -1n;
  for (const e of entries) {
    if (e.position <= last) throw new SealbatchError('Unencodable', 'positions not strictly ascending');
    last = e.position;
    w.u64(e.position).fixed(e.hash, 32, 'entry hash');
  }
  return w.finish();
}

/** An attestation by the commit key of `seed` over `message`. */
export function attest(seed: Uint8Array, message: Uint8Array): CommitAttestation {
  return { commitKey: publicKeyOf(seed), signature: sign(seed, message) };
}

/** `u8(count) ‖ count × (commit key ‖ signature)`, count 1..=64, keys strictly ascending (sorts them). */
export function encodeCommitCertificate(atts: CommitAttestation[]): Uint8Array {
  const sorted = [...atts].sort((a, b) => compareBytes(a.commitKey, b.commitKey));
  if (sorted.length < 1 || sorted.length > COMMIT_CERTIFICATE_MAX) throw new SealbatchError('Unencodable', 'a certificate has 1..=64 attestations');
  const w = new Writer().u8(sorted.length);
  for (let i = 0; i < sorted.length; i++) {
    const a = sorted[i] as CommitAttestation;
    if (i > 0 && compareBytes((sorted[i - 1] as CommitAttestation).commitKey, a.commitKey) === 0) throw new SealbatchError('Unencodable', 'duplicate commit key');
    w.fixed(a.commitKey, 32, 'commit key').fixed(a.signature, 64, 'signature');
  }
  return w.finish();
}

/** Decodes a certificate: count in 1..=64, keys strictly ascending, nothing after (`Invalid`/`Truncated`/`Trailing`). */
export function decodeCommitCertificate(b: Uint8Array): CommitAttestation[] {
  const r = new Reader(b);
  const n = r.u8('count');
  if (n < 1 || n > COMMIT_CERTIFICATE_MAX) r.fail('Invalid', 'count', `${n} attestations`, 0);
  const out: CommitAttestation[] = [];
  for (let i = 0; i < n; i++) {
    const at = r.offset;
    const commitKey = r.take(32, 'commit key');
    if (out.length > 0 && compareBytes((out[out.length - 1] as CommitAttestation).commitKey, commitKey) >= 0) {
      r.fail('Invalid', 'commit key', 'commit keys not strictly ascending', at);
    }
    out.push({ commitKey, signature: r.take(64, 'signature') });
  }
  r.end('certificate');
  return out;
}

/**
 * Whether the attestations certify `message` for the configured replicas:
 * the valid signatures by configured commit keys are more than half of the
 * configured set (`⌊n/2⌋ + 1`).
 */
export function certifies(atts: CommitAttestation[], message: Uint8Array, configured: Uint8Array[]): boolean {
  const keys = new Set(configured.map((k) => toHex(k)));
  const good = new Set<string>();
  for (const a of atts) {
    const k = toHex(a.commitKey);
    if (keys.has(k) && verifyStrict(a.signature, message, a.commitKey)) good.add(k);
  }
  return good.size >= Math.floor(keys.size / 2) + 1;
}
