// Negative tests: flipped bytes in receipts, seals and proofs; the strict
// Ed25519 rules of spec/envelope.md §11; non-canonical points and scalars.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ed25519, ED25519_TORSION_SUBGROUP } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';
import {
  EnvelopeRejectedError,
  GROUP_ORDER,
  Rejection,
  batchPublicKey,
  bigintToLe,
  bundleSigningMessage,
  checkBatchSecret,
  checkShape,
  concat,
  decodeBatchKey,
  decodeEdwardsStrict,
  decodeProof,
  decodeReceipt,
  decodeSeal,
  encodeBundleBody,
  encodePlaintext,
  encodeProof,
  encodeReceipt,
  encodeSeal,
  filled,
  fromHex,
  leToBigint,
  merkleProof,
  merkleRoot,
  openEnvelope,
  publicKeyOf,
  scalarToBytes,
  sealBundle,
  sealPlaintext,
  signBundle,
  signReceipt,
  signReceipts,
  signSeal,
  verifyCofactored,
  verifyInclusion,
  verifyReceipt,
  verifySeal,
  verifyBatchSealed,
  verifyStrict,
  type Order,
} from '../src/index.js';

const SEQ_SEED = filled(32, 0x51);
const SEQ = publicKeyOf(SEQ_SEED);
const flip = (b: Uint8Array, i: number): Uint8Array => {
  const c = b.slice();
  c[i] = (c[i] as number) ^ 1;
  return c;
};
const commitments = [1, 2, 3, 4, 5].map((i) => filled(32, i * 16));
const root = merkleRoot(commitments);
const seal = signSeal(SEQ_SEED, 9n, commitments.length, root);
const receipt = signReceipt(SEQ_SEED, 9n, commitments[2] as Uint8Array);
const proof = encodeProof(merkleProof(commitments, 2));

test('receipts: every flipped byte is refused, alone or in a group', () => {
  const grouped = signReceipts(SEQ_SEED, commitments.map((c) => ({ e: 9n, commitment: c })))[2] as typeof receipt;
  assert.equal(grouped.proof.siblings.length, 3);
  for (const r of [receipt, grouped]) {
    assert.ok(verifyReceipt(r, SEQ));
    const enc = encodeReceipt(r);
    for (let i = 0; i < enc.length; i++) {
      let refused: boolean;
      try {
        refused = !verifyReceipt(decodeReceipt(flip(enc, i)), SEQ);
      } catch {
        refused = true; // the sibling count no longer fits the length
      }
      assert.ok(refused, `byte ${i}`);
    }
    assert.ok(!verifyReceipt(r, publicKeyOf(filled(32, 0x52))), 'another key');
    assert.throws(() => decodeReceipt(enc.subarray(0, 144)), { code: 'Truncated' });
    assert.throws(() => decodeReceipt(enc.subarray(0, enc.length - 1)), { code: 'Truncated' });
    assert.throws(() => decodeReceipt(concat(enc, Uint8Array.of(0))), { code: 'Trailing' });
  }
});

test('seals: every flipped byte is refused', () => {
  assert.ok(verifySeal(seal, SEQ));
  const enc = encodeSeal(seal);
  for (let i = 0; i < enc.length; i++) assert.ok(!verifySeal(decodeSeal(flip(enc, i)), SEQ), `byte ${i}`);
  assert.throws(() => decodeSeal(enc.subarray(0, 107)), { code: 'Truncated' });
  assert.throws(() => decodeSeal(concat(enc, Uint8Array.of(0))), { code: 'Trailing' });
  assert.throws(() => verifyInclusion(receipt, decodeSeal(flip(enc, 70)), proof, SEQ), { code: 'BadSignature' });
});

test('inclusion proofs: flipped path bytes, wrong index, extra or missing siblings are refused', () => {
  verifyInclusion(receipt, seal, proof, SEQ);
  for (let i = 0; i < proof.length; i++) {
    const bad = flip(proof, i);
    if (i === 4) {
      assert.throws(() => verifyInclusion(receipt, seal, bad, SEQ), { code: 'Trailing' }, 'depth changed');
      continue;
    }
    assert.throws(() => verifyInclusion(receipt, seal, bad, SEQ), { code: 'BadProof' }, `byte ${i}`);
  }
  const p = decodeProof(proof);
  assert.throws(() => verifyInclusion(receipt, seal, { ...p, siblings: [...p.siblings, filled(32, 0)] }, SEQ), { code: 'BadProof' });
  assert.throws(() => verifyInclusion(receipt, seal, { ...p, siblings: p.siblings.slice(1) }, SEQ), { code: 'BadProof' });
  assert.throws(() => verifyInclusion(receipt, seal, { ...p, index: 5 }, SEQ), { code: 'BadProof' });
  // The count is bound by the seal's signature, not by the proof: a promoted
  // last leaf's proof fails under a seal stating another count.
  const last = signReceipt(SEQ_SEED, 9n, commitments[4] as Uint8Array);
  const lastProof = encodeProof(merkleProof(commitments, 4));
  verifyInclusion(last, seal, lastProof, SEQ);
  assert.throws(() => verifyInclusion(last, signSeal(SEQ_SEED, 9n, 6, root), lastProof, SEQ), { code: 'BadProof' });
  assert.throws(() => verifyInclusion(signReceipt(SEQ_SEED, 8n, commitments[2] as Uint8Array), seal, proof, SEQ), { code: 'Mismatch' });
  assert.throws(() => decodeProof(concat(Uint8Array.of(0, 0, 0, 0, 25), new Uint8Array(25 * 32))), { code: 'TooLarge', field: 'depth' });
  assert.throws(() => decodeProof(proof.subarray(0, proof.length - 1)), { code: 'Truncated' });
});

// ---------------------------------------------------------------------------
// Ed25519 strictness (spec/envelope.md §11)

const P = (1n << 255n) - 19n;
const ID_ENC = fromHex('01' + '00'.repeat(31));

test('non-canonical public keys (y ≥ 2^255 − 19) are refused before decoding', () => {
  for (let y = P; y < 1n << 255n; y++) {
    for (const sign of [0n, 1n]) {
      const enc = bigintToLe(y | (sign << 255n), 32);
      assert.equal(decodeEdwardsStrict(enc), null, `y = p + ${y - P}, sign ${sign}`);
      assert.ok(!verifyStrict(new Uint8Array(64), new Uint8Array(0), enc));
    }
  }
});

test('small-order keys and R are refused, even where the equation would hold', () => {
  for (const t of ED25519_TORSION_SUBGROUP) assert.equal(decodeEdwardsStrict(fromHex(t)), null, t);
  // A = identity, R = identity, S = 0 satisfies [S]B − [k]A = R: refused all the same.
  const sig = concat(ID_ENC, new Uint8Array(32));
  assert.ok(!verifyStrict(sig, new Uint8Array(0), ID_ENC));
  assert.ok(!verifyCofactored(sig, new Uint8Array(0), ID_ENC));
  assert.ok(!ed25519.Point.fromBytes(ID_ENC).is0() === false);
});

test('S ≥ l is refused (cofactorless and cofactored)', () => {
  const seed = filled(32, 7);
  const msg = new Uint8Array([1, 2, 3]);
  const sig = ed25519.sign(msg, seed);
  assert.ok(verifyStrict(sig, msg, publicKeyOf(seed)));
  const S = leToBigint(sig.subarray(32));
  const big = concat(sig.subarray(0, 32), bigintToLe(S + GROUP_ORDER, 32));
  assert.ok(!verifyStrict(big, msg, publicKeyOf(seed)));
  assert.ok(!verifyCofactored(big, msg, publicKeyOf(seed)));
});

/** A signature whose R carries a torsion component: valid cofactored, invalid cofactorless. */
function torsionSigned(seed: Uint8Array, msg: Uint8Array): Uint8Array {
  const { scalar: a, pointBytes: A } = ed25519.utils.getExtendedPublicKey(seed);
  const r = 12345678901234567890n;
  const T = ed25519.Point.fromHex(ED25519_TORSION_SUBGROUP[1] as string);
  const R = ed25519.Point.BASE.multiply(r).add(T).toBytes();
  const k = leToBigint(sha512(concat(R, A, msg))) % GROUP_ORDER;
  return concat(R, scalarToBytes((r + k * a) % GROUP_ORDER));
}

test('bundles verify cofactored, receipts cofactorless: a mixed-order R tells them apart', () => {
  const seed = filled(32, 9);
  const msg = new Uint8Array([4, 5, 6]);
  const sig = torsionSigned(seed, msg);
  assert.ok(decodeEdwardsStrict(sig.subarray(0, 32)) !== null, 'R is not of small order');
  assert.ok(verifyCofactored(sig, msg, publicKeyOf(seed)));
  assert.ok(!verifyStrict(sig, msg, publicKeyOf(seed)));
});

// ---------------------------------------------------------------------------
// Envelopes: rejection codes on the steps after the AEAD

const sE = 777n;
const S = batchPublicKey(sE);
const DEP = filled(32, 0xde);
const orders: Order[] = [{ market: 1, side: 'buy', limit: 100n, qty: 1n, clientOrderId: 1n }];

test('a bundle under a small-order account key is BadAccountKey; a bad signature BadSignature', () => {
  const b = signBundle(filled(32, 1), DEP, 3n, 0n, orders);
  const small = { ...b, account: ID_ENC };
  const env = sealBundle(small, 3n, S).envelope;
  assert.throws(() => openEnvelope(env, 3n, sE, DEP), (e: unknown) => e instanceof EnvelopeRejectedError && e.rejection === Rejection.BadAccountKey);
  const wrongDep = sealBundle(b, 3n, S).envelope;
  assert.throws(() => openEnvelope(wrongDep, 3n, sE, filled(32, 0xdf)), (e: unknown) => e instanceof EnvelopeRejectedError && e.rejection === Rejection.BadSignature);
  const wrongBatch = signBundle(filled(32, 1), DEP, 4n, 0n, orders);
  assert.throws(
    () => openEnvelope(sealBundle(wrongBatch, 3n, S).envelope, 3n, sE, DEP),
    (e: unknown) => e instanceof EnvelopeRejectedError && e.rejection === Rejection.BadSignature,
  );
  // A mixed-order R in a bundle signature is accepted (cofactored rule).
  const seed = filled(32, 2);
  const body = encodeBundleBody({ account: publicKeyOf(seed), nonce: 1n, orders });
  const sig = torsionSigned(seed, bundleSigningMessage(DEP, 3n, body));
  const pt = encodePlaintext({ account: publicKeyOf(seed), nonce: 1n, orders, signature: sig });
  assert.equal(openEnvelope(sealPlaintext(pt, 3n, S).envelope, 3n, sE, DEP).nonce, 1n);
});

test('malformed plaintexts: zero orders, bad side, bad limit encoding, zero quantity', () => {
  const good = encodePlaintext(signBundle(filled(32, 1), DEP, 3n, 0n, orders));
  const cases: [number, number, number][] = [
    [40, 0, Rejection.Malformed], // n = 0
    [46, 2, Rejection.Malformed], // side 2
    [47, 2, Rejection.Malformed], // limit kind 2
    [41, 1, Rejection.BundleTooLarge], // n = 257
  ];
  for (const [at, v, code] of cases) {
    const pt = good.slice();
    pt[at] = v;
    if (at === 41) pt[40] = 1;
    assert.throws(() => openEnvelope(sealPlaintext(pt, 3n, S).envelope, 3n, sE, DEP), (e: unknown) => e instanceof EnvelopeRejectedError && e.rejection === code, `byte ${at}`);
  }
  const mkt = good.slice();
  mkt[47] = 0; // market order with a non-zero limit
  assert.throws(() => openEnvelope(sealPlaintext(mkt, 3n, S).envelope, 3n, sE, DEP), (e: unknown) => e instanceof EnvelopeRejectedError && e.rejection === Rejection.Malformed);
  const zq = good.slice();
  zq.fill(0, 56, 64);
  assert.throws(() => openEnvelope(sealPlaintext(zq, 3n, S).envelope, 3n, sE, DEP), (e: unknown) => e instanceof EnvelopeRejectedError && e.rejection === Rejection.Malformed);
  assert.throws(() => signBundle(filled(32, 1), DEP, 3n, 0n, []), { code: 'Unencodable' });
  assert.throws(() => signBundle(filled(32, 1), DEP, 3n, 0n, [{ ...orders[0] as Order, qty: 0n }]), { code: 'Unencodable' });
});

test('non-canonical ristretto points and scalars are refused', () => {
  const nonCanonical = [
    'ff'.repeat(32), // not a field element
    '01' + '00'.repeat(31), // a negative field element (odd)
    'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // p itself
  ];
  for (const h of nonCanonical) {
    assert.throws(() => decodeBatchKey(fromHex(h)), { code: 'BadPoint' }, h);
    const env = sealBundle(signBundle(filled(32, 1), DEP, 3n, 0n, orders), 3n, S).envelope;
    env.set(fromHex(h), 9);
    assert.throws(() => checkShape(env, 3n), (e: unknown) => e instanceof EnvelopeRejectedError && e.rejection === Rejection.BadEphemeral);
  }
  assert.throws(() => decodeBatchKey(new Uint8Array(32)), { code: 'BadPoint' }, 'the identity');
  assert.throws(() => checkBatchSecret(bigintToLe(sE + GROUP_ORDER, 32), S), { code: 'BadScalar' });
  assert.throws(() => checkBatchSecret(new Uint8Array(32), S), { code: 'ZeroScalar' });
  assert.throws(() => checkBatchSecret(scalarToBytes(sE + 1n), S), { code: 'Mismatch' });
  assert.equal(checkBatchSecret(scalarToBytes(sE), S), sE);
});

test('a BatchSealed push verifies: seal signature and every listed proof', () => {
  const proofs = [0, 2, 4].map((i) => ({ commitment: commitments[i] as Uint8Array, proof: encodeProof(merkleProof(commitments, i)) }));
  assert.equal(verifyBatchSealed({ seal, proofs }, SEQ), seal);
  assert.throws(() => verifyBatchSealed({ seal: { ...seal, count: 4 }, proofs }, SEQ), { code: 'BadSignature' });
  const bad = proofs.map((p) => ({ ...p }));
  (bad[1] as { proof: Uint8Array }).proof = flip((bad[1] as { proof: Uint8Array }).proof, 20);
  assert.throws(() => verifyBatchSealed({ seal, proofs: bad }, SEQ), { code: 'BadProof' });
  const swapped = [{ commitment: commitments[1] as Uint8Array, proof: (proofs[0] as { proof: Uint8Array }).proof }];
  assert.throws(() => verifyBatchSealed({ seal, proofs: swapped }, SEQ), { code: 'BadProof' });
});
