// The TypeScript example (examples/batch-offline.ts) runs and says what it did.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runExample } from '../examples/batch-offline.js';

test('the offline example seals, verifies its group receipt and inclusion, and opens', () => {
  const lines = runExample();
  assert.equal(lines.length, 4);
  assert.match(lines[1] as string, /^receipt 1 of a group of 3: verified$/);
  assert.match(lines[2] as string, /^included in the seal of batch 7 \(3 envelopes\)$/);
  assert.match(lines[3] as string, /^opened: nonce 1, 2 orders$/);
});
