// The golden frames and the schedule signing message of spec/wire.md §7, the
// `len` column of §4, every message's round trip, and refused frames.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ALPN,
  FrameDecoder,
  PROTOCOL_VERSION,
  SealbatchError,
  decodeClientMessage,
  decodeServerMessage,
  encodeClientMessage,
  encodeServerMessage,
  blake3Hash,
  filled,
  signReceipts,
  type Receipt,
  fromHex,
  publicKeyOf,
  scheduleSigningMessage,
  signSchedule,
  signedGetAccount,
  signedGetPayouts,
  signedWithdraw,
  signedOperatorDeposit,
  signedAcknowledgePayout,
  verifySchedule,
  verifyWithdrawal,
  queryMessage,
  accountQuery,
  verifyStrict,
  toHex,
  utf8,
  type ClientMessage,
  type ServerMessage,
} from '../src/index.js';
import { blockAfter, hexBlocks, readSpec, section } from './spec.js';

const WIRE = readSpec('wire.md');
const GOLDEN = hexBlocks(section(WIRE, '7.'));

/** The hex block after `marker`, checked against the byte count its paragraph states. */
function golden(marker: string): Uint8Array {
  const block = GOLDEN.find((b) => b.before.includes(marker));
  assert.ok(block, `golden block ${marker}`);
  const hex = blockAfter(GOLDEN, marker);
  const stated = /(\d+)\s+bytes:?$/.exec(block.before);
  assert.ok(stated, `byte count stated for ${marker}`);
  const b = fromHex(hex);
  assert.equal(b.length, Number(stated[1]), `stated length of ${marker}`);
  return b;
}

const goldenClient: [string, ClientMessage][] = [
  [
    '`OperatorDeposit {',
    { type: 'OperatorDeposit', requestId: 8n, operator: filled(32, 0x0d), account: filled(32, 0xbb), asset: 3, amount: 5000n, reference: utf8('tx:0xfeed'), signature: filled(64, 0xcc) },
  ],
  ['`Deposit {', { type: 'Deposit', requestId: 7n, account: filled(32, 0xaa), asset: 2, amount: 1000n }],
  [
    '`Withdraw {',
    { type: 'Withdraw', requestId: 7n, account: filled(32, 0xaa), asset: 2, amount: 1000n, sequence: 1n, destination: utf8('bc1qexample'), signature: filled(64, 0xcc) },
  ],
  ['`GetAccount {', { type: 'GetAccount', requestId: 4n, account: filled(32, 9), requester: filled(32, 9), signature: filled(64, 0xcc) }],
  ['`AcknowledgePayout {', { type: 'AcknowledgePayout', requestId: 10n, operator: filled(32, 0x0d), withdrawal: 6n, reference: utf8('tx:0xbeef'), signature: filled(64, 0xcc) }],
];

const goldenServer: [string, ServerMessage][] = [
  [
    '`Receipt {',
    {
      type: 'Receipt',
      requestId: 2n,
      // The second of three receipts signed as one group by the envelope
      // vectors' sequencer key (spec/envelope.md §16).
      receipt: signReceipts(blake3Hash(utf8('sealbatch test vector sequencer')), [
        { e: 42n, commitment: filled(32, 0x31) },
        { e: 42n, commitment: filled(32, 0x32) },
        { e: 43n, commitment: filled(32, 0x33) },
      ])[1] as Receipt,
    },
  ],
  ['`Rejected {', { type: 'Rejected', requestId: 0x0102030405060708n, code: 2, nextOpen: 42n, retryAfterMs: 0, message: 'late' }],
  [
    '`BatchCleared {',
    {
      type: 'BatchCleared',
      e: 5n,
      root: filled(32, 1),
      batchSecret: filled(32, 2),
      release: [{ keyper: 2, signature: filled(64, 0xab) }],
      envelopes: 3,
      accepted: 2,
      markets: [
        { market: 1, price: 100n, volume: 10n, imbalance: -3n },
        { market: 2, price: null, volume: 0n, imbalance: 0n },
      ],
      own: [{ commitment: filled(32, 3), status: 0, detail: 0, fills: [{ index: 1, filled: 10n }] }],
    },
  ],
];

test('golden client frames of §7 encode and decode byte for byte', () => {
  for (const [marker, m] of goldenClient) {
    const g = golden(marker);
    assert.equal(toHex(encodeClientMessage(m)), toHex(g), marker);
    assert.deepEqual(decodeClientMessage(g), m, marker);
  }
});

test('golden server frames of §7 encode and decode byte for byte', () => {
  for (const [marker, m] of goldenServer) {
    const g = golden(marker);
    assert.equal(toHex(encodeServerMessage(m)), toHex(g), marker);
    assert.deepEqual(decodeServerMessage(g), m, marker);
  }
});

const SCHEDULE_FIELDS = {
  genesisMs: 1700000000000n,
  batchLengthMs: 100n,
  openBatch: 9n,
  sequencerKey: filled(32, 0x11),
  batchKeys: [{ e: 10n, key: filled(32, 0x22) }],
  markets: [{ id: 1, baseAsset: 1, quoteAsset: 2, tickSize: 1n, lotSize: 1n, bandMin: 1n, bandMax: 1000n, referencePrice: 500n, feeBps: 10 }],
  replicas: [{ id: 2n, address: '127.0.0.1:7001', fingerprint: filled(32, 0x44) }],
};

test('the schedule signing message of §7', () => {
  assert.equal(toHex(scheduleSigningMessage(SCHEDULE_FIELDS)), toHex(golden('Schedule signing message for')));
});

test('the len column of §4 adds up from the encoders', () => {
  const rows = section(WIRE, '4.')
    .split('\n')
    .filter((l) => /^\| `0x0[0-9a]` \|/.test(l))
    .map((l) => l.split('|').map((c) => c.trim()));
  assert.equal(rows.length, 10);
  const key = filled(32, 1);
  const sig = filled(64, 2);
  const make = (name: string, v: Uint8Array): ClientMessage => {
    const r = 1n;
    switch (name) {
      case 'Submit':
        return { type: 'Submit', requestId: r, envelope: v };
      case 'Withdraw':
        return { type: 'Withdraw', requestId: r, account: key, asset: 1, amount: 1n, sequence: 1n, destination: v, signature: sig };
      case 'OperatorDeposit':
        return { type: 'OperatorDeposit', requestId: r, operator: key, account: key, asset: 1, amount: 1n, reference: v, signature: sig };
      case 'AcknowledgePayout':
        return { type: 'AcknowledgePayout', requestId: r, operator: key, withdrawal: 1n, reference: v, signature: sig };
      case 'GetAccount':
        return { type: 'GetAccount', requestId: r, account: key, requester: key, signature: sig };
      case 'Deposit':
        return { type: 'Deposit', requestId: r, account: key, asset: 1, amount: 1n };
      case 'GetPayouts':
        return { type: 'GetPayouts', requestId: r, after: 1n, requester: key, signature: sig };
      default:
        return { type: name as 'GetSchedule', requestId: r };
    }
  };
  for (const row of rows) {
    const name = (row[2] as string).replace(/`/g, '');
    const len = row[4] as string;
    const fixed = /^(\d+)$/.exec(len);
    const variable = /^(\d+) \+ [a-z] ≤ (\d+)$/.exec(len);
    if (fixed) {
      assert.equal(encodeClientMessage(make(name, new Uint8Array(0))).length - 4, Number(fixed[1]), name);
    } else {
      assert.ok(variable, `len column of ${name}: ${len}`);
      const base = Number(variable[1]);
      const max = Number(variable[2]);
      const minVar = name === 'Submit' ? 0 : 1; // short() holds 1..=max bytes
      assert.equal(encodeClientMessage(make(name, new Uint8Array(minVar))).length - 4, base + minVar, name);
      assert.equal(encodeClientMessage(make(name, new Uint8Array(max - base))).length - 4, max, name);
      assert.throws(() => encodeClientMessage(make(name, new Uint8Array(max - base + 1))), { code: 'Unencodable' });
    }
  }
});

// ---------------------------------------------------------------------------

const SEQ_SEED = filled(32, 0x31);
const SEQ = publicKeyOf(SEQ_SEED);

const everyClient: ClientMessage[] = [
  { type: 'GetSchedule', requestId: 1n },
  { type: 'Submit', requestId: 2n, envelope: filled(313, 7) },
  { type: 'Subscribe', requestId: 3n },
  signedGetAccount(filled(32, 5), 4n, filled(32, 6), SEQ, filled(32, 0x42)),
  { type: 'Deposit', requestId: 5n, account: filled(32, 1), asset: 2, amount: 3n },
  signedWithdraw(filled(32, 5), 6n, SEQ, { asset: 1, amount: 2n, sequence: 3n, destination: utf8('x') }),
  signedOperatorDeposit(filled(32, 8), 7n, SEQ, { account: filled(32, 1), asset: 1, amount: 9n, reference: utf8('ref') }),
  signedGetPayouts(filled(32, 8), 8n, 0n, SEQ, filled(32, 0x42)),
  signedAcknowledgePayout(filled(32, 8), 9n, SEQ, 4n, utf8('paid')),
  { type: 'GetKeyCertificates', requestId: 10n },
];

const schedule = signSchedule(SEQ_SEED, { ...SCHEDULE_FIELDS, sequencerKey: SEQ, requestId: 3n, batchKeys: [{ e: 10n, key: fromHex('e882b131016b52c1d3337080187cf768423efccbb517bb495ab812c4160ff44e') }] });

const everyServer: ServerMessage[] = [
  { type: 'Schedule', ...schedule },
  { type: 'Receipt', requestId: 2n, receipt: { e: 4n, commitment: filled(32, 9), count: 3, root: filled(32, 7), signature: filled(64, 8), proof: { index: 2, siblings: [filled(32, 6)] } } },
  { type: 'Rejected', requestId: 2n, code: 6, nextOpen: 5n, retryAfterMs: 100, message: 'busy ✓' },
  { type: 'BatchOpened', e: 3n, publicKey: filled(32, 1), closeMs: 99n },
  { type: 'BatchSealed', seal: { e: 3n, count: 2, root: filled(32, 4), signature: filled(64, 5) }, proofs: [{ commitment: filled(32, 1), proof: fromHex('0000000001' + '77'.repeat(32)) }] },
  { type: 'Account', requestId: 4n, account: filled(32, 6), nextWithdrawal: 1n, balances: [{ asset: 1, balance: 10n }, { asset: 2, balance: (1n << 64n) - 1n }] },
  { type: 'Ack', requestId: 5n },
  { type: 'Error', requestId: 0n, code: 12, message: 'unauthorized' },
  { type: 'Withdrawn', requestId: 6n, id: 77n },
  {
    type: 'Payouts',
    requestId: 8n,
    withdrawals: [{ id: 1n, account: filled(32, 1), asset: 1, amount: 2n, sequence: 1n, destination: utf8('dest'), signature: filled(64, 3) }],
    more: true,
  },
  { type: 'KeyCertificates', requestId: 10n, committee: null, certificates: [] },
];

test('every message round-trips and re-encodes canonically', () => {
  for (const m of everyClient) {
    const f = encodeClientMessage(m);
    assert.deepEqual(decodeClientMessage(f), m, m.type);
    assert.equal(toHex(encodeClientMessage(decodeClientMessage(f))), toHex(f));
  }
  for (const m of everyServer) {
    const f = encodeServerMessage(m);
    assert.deepEqual(decodeServerMessage(f), m, m.type);
    assert.equal(toHex(encodeServerMessage(decodeServerMessage(f))), toHex(f));
  }
});

test('signed requests verify over the messages of §4', () => {
  const ga = everyClient[3] as Extract<ClientMessage, { type: 'GetAccount' }>;
  assert.ok(verifyStrict(ga.signature, queryMessage(SEQ, filled(32, 0x42), ga.requester, accountQuery(ga.account)), ga.requester));
  // On another connection (another channel binding) the signature is worthless.
  assert.ok(!verifyStrict(ga.signature, queryMessage(SEQ, filled(32, 0x43), ga.requester, accountQuery(ga.account)), ga.requester));
  const w = everyClient[5] as Extract<ClientMessage, { type: 'Withdraw' }>;
  assert.ok(verifyWithdrawal({ id: 1n, ...w }, SEQ));
  assert.ok(!verifyWithdrawal({ id: 1n, ...w, amount: 3n }, SEQ));
});

test('a schedule verifies only under the expected key and with an intact signature', () => {
  verifySchedule(schedule, SEQ);
  assert.throws(() => verifySchedule(schedule, filled(32, 0x11)), { code: 'Untrusted' });
  const bad = { ...schedule, signature: schedule.signature.slice() };
  bad.signature[0] = (bad.signature[0] as number) ^ 1;
  assert.throws(() => verifySchedule(bad, SEQ), { code: 'BadSignature' });
  assert.throws(() => verifySchedule({ ...schedule, openBatch: 10n }, SEQ), { code: 'BadSignature' });
  const identity = signSchedule(SEQ_SEED, { ...schedule, batchKeys: [{ e: 10n, key: new Uint8Array(32) }] });
  assert.throws(() => verifySchedule(identity, SEQ), { code: 'BadPoint' });
});

// ---------------------------------------------------------------------------
// Refused frames

function refuses(f: () => unknown, code: string, field?: string, offset?: number): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof SealbatchError, String(e));
    assert.equal(e.code, code, e.message);
    if (field !== undefined) assert.equal(e.field, field, e.message);
    if (offset !== undefined) assert.equal(e.offset, offset, e.message);
    return true;
  });
}

function withLen(f: Uint8Array, len: number): Uint8Array {
  const g = f.slice();
  new DataView(g.buffer).setUint32(0, len, true);
  return g;
}

test('truncated and extended frames are refused', () => {
  const g = golden('`Withdraw {');
  refuses(() => decodeClientMessage(g.subarray(0, g.length - 1)), 'Incomplete');
  refuses(() => decodeClientMessage(g.subarray(0, 3)), 'Incomplete');
  refuses(() => decodeClientMessage(new Uint8Array([...g, 0])), 'Trailing');
  // A length prefix that promises one byte less cuts the signature.
  refuses(() => decodeClientMessage(withLen(g, g.length - 5).subarray(0, g.length - 1)), 'Truncated', 'signature', 77);
  // One byte more inside the frame is a trailing field byte.
  refuses(() => decodeClientMessage(withLen(new Uint8Array([...g, 0]), g.length - 3)), 'Trailing', 'end', g.length);
  const c = golden('`BatchCleared {');
  refuses(() => decodeServerMessage(c.subarray(0, c.length - 1)), 'Incomplete');
  refuses(() => decodeServerMessage(withLen(c, c.length - 5).subarray(0, c.length - 1)), 'Truncated', 'fill.filled');
});

test('frame heads are checked in order: Empty, Oversized, UnknownType', () => {
  refuses(() => decodeClientMessage(fromHex('00000000')), 'Empty', 'len', 0);
  refuses(() => decodeClientMessage(fromHex('01400000')), 'Oversized', 'len', 0);
  refuses(() => decodeServerMessage(fromHex('01004000')), 'Oversized', 'len', 0);
  refuses(() => decodeClientMessage(fromHex('0900000081')), 'UnknownType', 'type', 4);
  refuses(() => decodeClientMessage(fromHex('090000000b')), 'UnknownType', 'type', 4);
  refuses(() => decodeServerMessage(fromHex('0900000001')), 'UnknownType', 'type', 4);
  refuses(() => decodeServerMessage(fromHex('090000008d')), 'UnknownType', 'type', 4);
  // Oversized and unknown types are refused before the body arrives.
  const d = new FrameDecoder('client');
  refuses(() => d.push(fromHex('01400000')), 'Oversized');
  refuses(() => new FrameDecoder('client').push(fromHex('0900000099')), 'UnknownType');
});

test('bad codes, tags, short lengths, UTF-8 and counts are refused with field and offset', () => {
  const rej = golden('`Rejected {');
  for (const bad of [0, 15, 255]) {
    const f = rej.slice();
    f[13] = bad;
    refuses(() => decodeServerMessage(f), 'Invalid', 'code', 13);
  }
  const utf = rej.slice();
  utf[utf.length - 1] = 0xff;
  refuses(() => decodeServerMessage(utf), 'Invalid', 'message', 26);
  const c = golden('`BatchCleared {');
  // The first market line's price tag (offset 5 + 8 + 32 + 32 + 2 + 66 + 4 + 4 + 4 + 4).
  const tagAt = 5 + 8 + 32 + 32 + 2 + 66 + 4 + 4 + 4 + 4;
  assert.equal(c[tagAt], 1);
  const t = c.slice();
  t[tagAt] = 2;
  refuses(() => decodeServerMessage(t), 'Invalid', 'market_line.price', tagAt);
  const k = c.slice();
  k[5 + 8 + 32 + 32 + 2] = 0; // keyper 0
  refuses(() => decodeServerMessage(k), 'Invalid', 'attesting keyper', 5 + 8 + 32 + 32 + 2);
  const w = golden('`Withdraw {');
  const destAt = 5 + 8 + 32 + 4 + 8 + 8;
  for (const bad of [0, 65]) {
    const f = w.slice();
    f[destAt] = bad;
    refuses(() => decodeClientMessage(f), 'Invalid', 'destination', destAt);
  }
  const acct = encodeServerMessage({ type: 'Account', requestId: 1n, account: filled(32, 1), nextWithdrawal: 1n, balances: [] });
  const over = acct.slice();
  new DataView(over.buffer).setUint32(5 + 8 + 32 + 8, 4097, true);
  refuses(() => decodeServerMessage(over), 'TooLarge', 'balances', 5 + 8 + 32 + 8);
  const sub = encodeClientMessage({ type: 'Submit', requestId: 1n, envelope: new Uint8Array(10) });
  const big = sub.slice();
  new DataView(big.buffer).setUint32(13, 8250, true);
  refuses(() => decodeClientMessage(big), 'TooLarge', 'envelope', 13);
  const pay = encodeServerMessage(everyServer[9] as ServerMessage);
  const more = pay.slice();
  more[more.length - 1] = 2;
  refuses(() => decodeServerMessage(more), 'Invalid', 'more', more.length - 1);
  const kc = encodeServerMessage({ type: 'KeyCertificates', requestId: 1n, committee: null, certificates: [] });
  const flag = kc.slice();
  flag[13] = 2;
  refuses(() => decodeServerMessage(flag), 'Invalid', 'committee flag', 13);
});

test('a chunked stream splits into the same frames', () => {
  const frames = [...goldenClient.map(([m]) => golden(m)), ...everyClient.map(encodeClientMessage)];
  const stream = new Uint8Array(frames.reduce((a, f) => a + f.length, 0));
  let o = 0;
  for (const f of frames) {
    stream.set(f, o);
    o += f.length;
  }
  for (const chunk of [1, 3, 7, 1000]) {
    const d = new FrameDecoder('client');
    const got: Uint8Array[] = [];
    for (let i = 0; i < stream.length; i += chunk) got.push(...d.push(stream.subarray(i, i + chunk)));
    d.finish();
    assert.deepEqual(got.map(toHex), frames.map(toHex));
  }
  const d = new FrameDecoder('client');
  d.push(stream.subarray(0, 10));
  refuses(() => d.finish(), 'Truncated');
});

test('the ALPN and the protocol version are the spec\'s (§2)', () => {
  const m = /ALPN `(sealbatch\/(\d+))`/.exec(WIRE);
  assert.ok(m, 'spec/wire.md names its ALPN');
  assert.equal(ALPN, m[1]);
  assert.equal(PROTOCOL_VERSION, Number(m[2]));
});
