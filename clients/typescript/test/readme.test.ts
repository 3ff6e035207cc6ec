// The README's five-line example, run with real values (the lines between
// the markers are the README's, verbatim: a test fails if they drift apart).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { batchPublicKey, deploymentId, encodeProof, filled, merkleProof, merkleRoot, publicKeyOf, sealBundle, signBundle, signReceipt, signSeal, verifyInclusion, verifyReceipt } from '../src/index.js';

test('the README example runs', () => {
  const seqSeed = filled(32, 3);
  const schedule = { sequencerKey: publicKeyOf(seqSeed), genesisMs: 1767225600000n, batchLengthMs: 100n };
  const accountSeed = filled(32, 4);
  const e = 42n;
  const nonce = 1n;
  const S_e = batchPublicKey(99n);
  // --- README lines 2–3
  const dep = deploymentId(schedule.sequencerKey, schedule.genesisMs, schedule.batchLengthMs);
  const sealed = sealBundle(signBundle(accountSeed, dep, e, nonce, [{ market: 1, side: 'buy', limit: 10_000n, qty: 5n, clientOrderId: 1n }]), e, S_e);
  // --- what the sequencer sends back
  const receipt = signReceipt(seqSeed, e, sealed.commitment);
  const seal = signSeal(seqSeed, e, 1, merkleRoot([sealed.commitment]));
  const proof = encodeProof(merkleProof([sealed.commitment], 0));
  // --- README lines 4–5
  if (!verifyReceipt(receipt, schedule.sequencerKey)) throw new Error('bad receipt');
  verifyInclusion(receipt, seal, proof, schedule.sequencerKey);
  assert.ok(true);
});

test('the README holds those lines verbatim', () => {
  const readme = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
  const here = readFileSync(fileURLToPath(new URL('../../test/readme.test.ts', import.meta.url)), 'utf8');
  for (const needle of [
    'const dep = deploymentId(schedule.sequencerKey, schedule.genesisMs, schedule.batchLengthMs);',
    "const sealed = sealBundle(signBundle(accountSeed, dep, e, nonce, [{ market: 1, side: 'buy', limit: 10_000n, qty: 5n, clientOrderId: 1n }]), e, S_e);",
    "if (!verifyReceipt(receipt, schedule.sequencerKey)) throw new Error('bad receipt');",
    'verifyInclusion(receipt, seal, proof, schedule.sequencerKey);',
  ]) {
    assert.ok(readme.includes(needle), needle);
    assert.ok(here.includes(needle), needle);
  }
});
