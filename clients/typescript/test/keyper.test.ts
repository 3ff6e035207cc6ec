// The keyper vectors of spec/keyper.md §18, certificates, release attestations
// and the client's key-trust rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  G,
  Reader,
  accusation,
  approval,
  certificateDigest,
  certifiedKeys,
  committeeId,
  decodeCertificate,
  decodeServerMessage,
  deploymentId,
  encodeCertificate,
  encodeKeyperMessage,
  encodeServerMessage,
  filled,
  fromHex,
  helloMessage,
  keyperSigningMessage,
  makeCommittee,
  proofContext,
  provesRelease,
  publicKeyOf,
  readCommittee,
  encodeCommittee,
  releaseMessage,
  sign,
  signKeyperMessage,
  signSchedule,
  toHex,
  trustedKeys,
  verifyBatchCleared,
  verifyCertificate,
  verifyProofOfKnowledge,
  windowContext,
  batchPublicKey,
  scalarToBytes,
  signSeal,
  type Committee,
  type WindowCertificate,
} from '../src/index.js';
import { blockAfter, hexBlocks, readSpec, section } from './spec.js';

const BLOCKS = hexBlocks(section(readSpec('keyper.md'), '18.'));
const v = (marker: string) => blockAfter(BLOCKS, marker);
const flip = (b: Uint8Array, i: number) => {
  b[i] = (b[i] as number) ^ 1;
};

const SEQ = filled(32, 0x11);
const GENESIS = 1700000000000n;
const seedOf = (i: number) => filled(32, i);
const members = [1, 2, 3].map((i) => ({ signing: publicKeyOf(seedOf(i)), encryption: G.multiply(BigInt(i + 4)).toBytes() }));
const DEP = deploymentId(SEQ, GENESIS, 100n);
const committee: Committee = makeCommittee(DEP, 2, members);
const CID = committeeId(committee);
const WINDOW = { id: 1n, firstBatch: 0n, batches: 4 };
/** The seed of keyper `index` (members are indexed by ascending signing key). */
const seedOfKeyper = (index: number) => seedOf([1, 2, 3].find((i) => toHex(publicKeyOf(seedOf(i))) === toHex((committee.members[index - 1] as { signing: Uint8Array }).signing)) as number);

test('keypers are indexed by ascending signing key: 1 = seed [2;32], 2 = seed [1;32], 3 = seed [3;32]', () => {
  assert.deepEqual([1, 2, 3].map((k) => (seedOfKeyper(k)[0] as number)), [2, 1, 3]);
});

test('deployment id and committee id of §18', () => {
  assert.equal(toHex(DEP), v('the deployment id (§2)'));
  assert.equal(toHex(CID), v('committee id:'));
  // The committee's encoding reads back to the same committee.
  const r = new Reader(encodeCommittee(committee));
  assert.deepEqual(readCommittee(r), committee);
  r.end();
});

test('the signed accusation of keyper 2 against dealer 3, as stored', () => {
  const stored = signKeyperMessage(seedOfKeyper(2), CID, accusation(WINDOW, 2, 3));
  assert.equal(toHex(stored), v('the signed accusation of keyper 2'));
});

test('the proof context, C = 5·G and a proof that verifies only under its context', () => {
  const ctx = proofContext(windowContext(CID, WINDOW), 0n, 1);
  assert.equal(toHex(ctx), v('the proof context of batch 0, dealer 1'));
  const C = G.multiply(5n).toBytes();
  assert.equal(toHex(C), v('a commitment `C = 5·G`'));
  const proof = fromHex(v('and a proof `(R ‖ z)`'));
  assert.ok(verifyProofOfKnowledge(ctx, C, proof));
  for (const e of [1n, 2n, 3n]) assert.ok(!verifyProofOfKnowledge(proofContext(windowContext(CID, WINDOW), e, 1), C, proof), `batch ${e}`);
  assert.ok(!verifyProofOfKnowledge(proofContext(windowContext(CID, WINDOW), 0n, 2), C, proof), 'another dealer');
  const flipped = proof.slice();
  flipped[40] = (flipped[40] as number) ^ 1;
  assert.ok(!verifyProofOfKnowledge(ctx, C, flipped));
  const nonCanonicalZ = proof.slice();
  nonCanonicalZ.fill(0xff, 32);
  assert.ok(!verifyProofOfKnowledge(ctx, C, nonCanonicalZ));
});

test('the hello signing message of §17', () => {
  const m = helloMessage(CID, SEQ, filled(32, 0x42));
  assert.equal(m.length, 122);
  assert.equal(toHex(m), v('hello signing message'));
});

test('the release message and keyper 1\'s attestation', () => {
  const m = releaseMessage(CID, 7n, 3, filled(32, 0x55));
  assert.equal(m.length, 104);
  assert.equal(toHex(m), v('the release message (§9)'));
  assert.equal(toHex(sign(seedOfKeyper(1), m)), v('release attestation of it by keyper 1'));
});

// ---------------------------------------------------------------------------

function certificate(signers: number[], keys = [1, 2, 3, 4].map((i) => batchPublicKey(BigInt(i + 100)))): WindowCertificate {
  const c: WindowCertificate = { window: WINDOW, dealers: [1, 2, 3], commitmentsDigest: filled(32, 0x77), keys, approvals: [] };
  const digest = certificateDigest(CID, c);
  c.approvals = signers.map((k) => ({ keyper: k, signature: sign(seedOfKeyper(k), keyperSigningMessage(CID, encodeKeyperMessage(approval(WINDOW, k, digest)))) }));
  return c;
}

test('a certificate verifies with t distinct members and round-trips', () => {
  const c = certificate([1, 3]);
  assert.ok(verifyCertificate(committee, c));
  assert.deepEqual(decodeCertificate(encodeCertificate(c)), c);
  assert.ok(!verifyCertificate(committee, certificate([2])), 'one approval of t = 2');
  const twice = certificate([2]);
  twice.approvals.push(twice.approvals[0] as { keyper: number; signature: Uint8Array });
  assert.ok(!verifyCertificate(committee, twice), 'the same keyper twice counts once');
  const flipped = certificate([1, 3]);
  flip((flipped.approvals[1] as { signature: Uint8Array }).signature, 5);
  assert.ok(!verifyCertificate(committee, flipped), 'a flipped byte in an approval');
  const swapped = certificate([1, 3]);
  swapped.keys[0] = batchPublicKey(999n);
  assert.ok(!verifyCertificate(committee, swapped), 'a key changed after approval');
  const other = makeCommittee(deploymentId(SEQ, GENESIS, 200n), 2, members);
  assert.ok(!verifyCertificate(other, certificate([1, 2, 3])), 'another deployment\'s committee');
});

test('certificate decoding refuses a key count other than W and over-long lists', () => {
  const c = encodeCertificate(certificate([1, 3]));
  const keysAt = 20 + 2 + 6 + 32;
  const wrong = c.slice();
  wrong[keysAt] = 3;
  assert.throws(() => decodeCertificate(wrong), { code: 'Invalid', field: 'keys' });
  const huge = c.slice();
  new DataView(huge.buffer).setUint32(keysAt, 1025, true);
  assert.throws(() => decodeCertificate(huge), { code: 'TooLarge', field: 'keys' });
  const zeroW = c.slice();
  new DataView(zeroW.buffer).setUint32(16, 0, true);
  assert.throws(() => decodeCertificate(zeroW), { code: 'Invalid', field: 'window' });
  assert.throws(() => decodeCertificate(c.subarray(0, c.length - 1)), { code: 'Truncated' });
  assert.throws(() => decodeCertificate(new Uint8Array([...c, 0])), { code: 'Trailing' });
});

test('KeyCertificates carries a committee and certificates; the committee is checked', () => {
  const m = { type: 'KeyCertificates' as const, requestId: 3n, committee, certificates: [certificate([1, 2])] };
  const f = encodeServerMessage(m);
  assert.deepEqual(decodeServerMessage(f), m);
  // Members out of order are refused.
  const swapped = f.slice();
  const at = 5 + 8 + 1 + 32 + 4;
  swapped.set(f.subarray(at + 64, at + 128), at);
  swapped.set(f.subarray(at, at + 64), at + 64);
  assert.throws(() => decodeServerMessage(swapped), { code: 'Invalid', field: 'members', offset: 5 + 8 + 1 });
  const badT = f.slice();
  badT[5 + 8 + 1 + 32] = 4;
  assert.throws(() => decodeServerMessage(badT), { code: 'Invalid', field: 'committee', offset: 5 + 8 + 1 });
  const badKey = f.slice();
  badKey.fill(0, at + 32, at + 64); // member 1's encryption key: the identity
  assert.throws(() => decodeServerMessage(badKey), { code: 'Invalid', field: 'committee' });
});

test('a client keeps only certified keys of a pinned committee serving its deployment', () => {
  const seqSeed = filled(32, 0x21);
  const seqKey = publicKeyOf(seqSeed);
  const dep = deploymentId(seqKey, GENESIS, 100n);
  const com = makeCommittee(dep, 2, members);
  const cid = committeeId(com);
  const keys = [1, 2, 3, 4].map((i) => batchPublicKey(BigInt(i + 100)));
  const c: WindowCertificate = { window: WINDOW, dealers: [1, 2], commitmentsDigest: filled(32, 1), keys, approvals: [] };
  const digest = certificateDigest(cid, c);
  c.approvals = [1, 2].map((k) => {
    const idx = com.members.findIndex((m) => toHex(m.signing) === toHex(publicKeyOf(seedOf(k))));
    return { keyper: idx + 1, signature: sign(seedOf(k), keyperSigningMessage(cid, encodeKeyperMessage(approval(WINDOW, idx + 1, digest)))) };
  }).sort((a, b) => a.keyper - b.keyper);
  const schedule = signSchedule(seqSeed, {
    requestId: 1n,
    genesisMs: GENESIS,
    batchLengthMs: 100n,
    openBatch: 0n,
    sequencerKey: seqKey,
    batchKeys: [
      { e: 1n, key: keys[1] as Uint8Array },
      { e: 2n, key: batchPublicKey(555n) }, // not the certified key
      { e: 9n, key: batchPublicKey(556n) }, // outside every window
    ],
    markets: [],
    replicas: [],
  });
  const t = trustedKeys(schedule, com, [c], { mode: 'committee', committeeId: cid });
  assert.deepEqual([...t.keys.keys()], [1n]);
  assert.deepEqual(certifiedKeys(com, [c]).size, 4);
  assert.throws(() => trustedKeys(schedule, com, [c], { mode: 'committee', committeeId: filled(32, 0) }), { code: 'Untrusted' });
  assert.throws(() => trustedKeys(schedule, null, [], { mode: 'committee', committeeId: cid }), { code: 'Untrusted' });
  assert.throws(() => trustedKeys(schedule, committee, [c], { mode: 'named' }), { code: 'Untrusted' }, 'a committee of another deployment');
  assert.equal(trustedKeys(schedule, null, [], { mode: 'named' }).keys.size, 3, 'trusted-operator mode takes the signed keys');

  // A result under the committee must prove its release.
  const sE = 102n;
  const seal = signSeal(seqSeed, 1n, 3, filled(32, 0x55));
  const att = (k: number) => ({ keyper: com.members.findIndex((m) => toHex(m.signing) === toHex(publicKeyOf(seedOf(k)))) + 1, signature: sign(seedOf(k), releaseMessage(cid, 1n, 3, seal.root)) });
  const release = [att(1), att(3)].sort((a, b) => a.keyper - b.keyper);
  const cleared = { e: 1n, root: seal.root, batchSecret: scalarToBytes(sE), release, envelopes: 3, accepted: 3, markets: [], own: [] };
  verifyBatchCleared(cleared, seal, keys[1] as Uint8Array, com);
  assert.ok(provesRelease(com, release, 1n, 3, seal.root));
  assert.throws(() => verifyBatchCleared({ ...cleared, release: release.slice(0, 1) }, seal, keys[1] as Uint8Array, com), { code: 'NotReleased' });
  assert.throws(() => verifyBatchCleared({ ...cleared, release: [...release].reverse() }, seal, keys[1] as Uint8Array, com), { code: 'NotReleased' });
  const flipped = release.map((a) => ({ ...a, signature: a.signature.slice() }));
  flip((flipped[0] as { signature: Uint8Array }).signature, 0);
  assert.throws(() => verifyBatchCleared({ ...cleared, release: flipped }, seal, keys[1] as Uint8Array, com), { code: 'NotReleased' });
  assert.throws(() => verifyBatchCleared({ ...cleared, envelopes: 4 }, seal, keys[1] as Uint8Array, com), { code: 'Mismatch' });
  assert.throws(() => verifyBatchCleared({ ...cleared, batchSecret: scalarToBytes(sE + 1n) }, seal, keys[1] as Uint8Array, com), { code: 'Mismatch' });
  // Attestations of another seal of the batch prove nothing for this one.
  const other = [att(1), att(3)].map((a) => ({ ...a, signature: sign(seedOf(a.keyper === release[0]?.keyper ? 1 : 3), releaseMessage(cid, 1n, 3, filled(32, 0x56))) }));
  assert.ok(!provesRelease(com, other, 1n, 3, seal.root));
});

test('a window running past the last batch number is refused', () => {
  const c = encodeCertificate(certificate([1, 3]));
  const last = c.slice();
  new DataView(last.buffer).setBigUint64(8, (1n << 64n) - 4n, true); // first + 4 = 2^64: overflows u64
  assert.throws(() => decodeCertificate(last), { code: 'Invalid', field: 'window' });
  const fits = c.slice();
  new DataView(fits.buffer).setBigUint64(8, (1n << 64n) - 5n, true);
  assert.equal(decodeCertificate(fits).window.firstBatch, (1n << 64n) - 5n);
});
