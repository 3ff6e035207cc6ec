// The commit-certificate vectors of spec/replication.md §12.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  attest,
  certifies,
  committedLogMessage,
  committedSealMessage,
  decodeCommitCertificate,
  encodeCommitCertificate,
  filled,
  fromHex,
  logEntryHash,
  publicKeyOf,
  toHex,
} from '../src/index.js';
import { fencedBlocks, readSpec, section } from './spec.js';

const S12 = section(readSpec('replication.md'), '12.');
const HEX = fencedBlocks(S12)
  .filter((b) => /^[0-9a-f\s]+$/.test(b.body))
  .map((b) => ({ before: b.before, hex: b.body.replace(/\s+/g, '') }));
const inline = (re: RegExp): string => {
  const m = re.exec(S12);
  assert.ok(m, String(re));
  return m[1] as string;
};

test('§12 holds four hex vectors in order: seal message, its certificate, log message, its certificate', () => {
  assert.equal(HEX.length, 4);
  assert.match((HEX[0] as { before: string }).before, /The message is$/);
  assert.match((HEX[1] as { before: string }).before, /their certificate \(ascending keys, so the second first\) is$/);
  assert.match((HEX[2] as { before: string }).before, /the message is$/);
  assert.match((HEX[3] as { before: string }).before, /the certificate of the commit keys of seeds 32 × `01` and 32 × `02` is$/);
});

const SEQ = filled(32, 0x09);
const k1 = publicKeyOf(filled(32, 1));
const k2 = publicKeyOf(filled(32, 2));
const k3 = publicKeyOf(filled(32, 3));

test('commit keys of seeds 01 and 02', () => {
  assert.equal(toHex(k1), inline(/seeds 32 × `01` and 32 × `02` are\s+`([0-9a-f]{64})`/));
  assert.equal(toHex(k2), inline(/`[0-9a-f]{64}` and\s+`([0-9a-f]{64})`;/));
});

test('the committed-seal message and its commit certificate', () => {
  const msg = committedSealMessage(SEQ, 5n, 3, filled(32, 0xab));
  assert.equal(toHex(msg), HEX[0]?.hex);
  const cert = encodeCommitCertificate([attest(filled(32, 1), msg), attest(filled(32, 2), msg)]);
  assert.equal(toHex(cert), HEX[1]?.hex);
  const atts = decodeCommitCertificate(cert);
  assert.ok(certifies(atts, msg, [k1, k2, k3]), 'two of three');
  assert.ok(!certifies(atts, committedSealMessage(SEQ, 5n, 4, filled(32, 0xab)), [k1, k2, k3]), 'another seal');
  assert.ok(!certifies(atts.slice(0, 1), msg, [k1, k2, k3]), 'one of three');
  assert.ok(!certifies(atts, msg, [k1, k2, k3, publicKeyOf(filled(32, 4)), publicKeyOf(filled(32, 5))]), 'two of five');
  // A flipped signature byte leaves one valid attestation: not a majority.
  const flipped = fromHex(HEX[1]?.hex as string);
  flipped[1 + 32 + 10] = (flipped[1 + 32 + 10] as number) ^ 1;
  assert.ok(!certifies(decodeCommitCertificate(flipped), msg, [k1, k2, k3]));
});

test('commit certificate decoding refuses bad counts, order, truncation and trailing bytes', () => {
  const cert = fromHex(HEX[1]?.hex as string);
  const zero = cert.slice();
  zero[0] = 0;
  assert.throws(() => decodeCommitCertificate(zero), { code: 'Invalid', field: 'count' });
  const over = cert.slice();
  over[0] = 65;
  assert.throws(() => decodeCommitCertificate(over), { code: 'Invalid', field: 'count' });
  const swapped = new Uint8Array([2, ...cert.subarray(97, 193), ...cert.subarray(1, 97)]);
  assert.throws(() => decodeCommitCertificate(swapped), { code: 'Invalid', field: 'commit key', offset: 97 });
  assert.throws(() => decodeCommitCertificate(cert.subarray(0, cert.length - 1)), { code: 'Truncated' });
  assert.throws(() => decodeCommitCertificate(new Uint8Array([...cert, 0])), { code: 'Trailing' });
});

test('the committed keyper-log message and its certificate', () => {
  const h7 = logEntryHash(Uint8Array.of(0, 1, 2));
  assert.equal(toHex(h7), inline(/`00 01 02` hash to\s+`([0-9a-f]{64})`/));
  const h9 = logEntryHash(Uint8Array.of(3));
  const msg = committedLogMessage(SEQ, filled(32, 0x0c), [
    { position: 7n, hash: h7 },
    { position: 9n, hash: h9 },
  ]);
  assert.equal(toHex(msg), HEX[2]?.hex);
  const cert = encodeCommitCertificate([attest(filled(32, 2), msg), attest(filled(32, 1), msg)]);
  assert.equal(toHex(cert), HEX[3]?.hex);
  assert.ok(certifies(decodeCommitCertificate(cert), msg, [k1, k2, k3]));
});
