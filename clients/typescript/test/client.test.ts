// The client over a Transport: a fake sequencer in this file answers frames
// as spec/wire.md says, so the trust rules, receipts and signed queries are
// exercised end to end without a network.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SealbatchClient,
  approval,
  batchPublicKey,
  certificateDigest,
  committeeId,
  decodeClientMessage,
  deploymentId,
  encodeKeyperMessage,
  encodeServerMessage,
  filled,
  G,
  keyperSigningMessage,
  makeCommittee,
  openEnvelope,
  publicKeyOf,
  queryMessage,
  accountQuery,
  sign,
  signReceipt,
  signSchedule,
  verifyStrict,
  withdrawalMessage,
  commitment,
  type ServerMessage,
  type Transport,
  type WindowCertificate,
} from '../src/index.js';

const SEQ_SEED = filled(32, 0x61);
const SEQ = publicKeyOf(SEQ_SEED);
const GENESIS = 1767225600000n;
const DEP = deploymentId(SEQ, GENESIS, 100n);
const seeds = [1, 2, 3].map((i) => filled(32, 0x70 + i));
const committee = makeCommittee(DEP, 2, seeds.map((s, i) => ({ signing: publicKeyOf(s), encryption: G.multiply(BigInt(i + 2)).toBytes() })));
const CID = committeeId(committee);
const secrets = [100n, 101n, 102n, 103n];
const keys = secrets.map(batchPublicKey);
const BINDING = filled(32, 0x99);

function certificate(): WindowCertificate {
  const c: WindowCertificate = { window: { id: 1n, firstBatch: 10n, batches: 4 }, dealers: [1, 2, 3], commitmentsDigest: filled(32, 5), keys, approvals: [] };
  const d = certificateDigest(CID, c);
  c.approvals = [1, 2].map((k) => {
    const s = seeds.find((x) => publicKeyOf(x).every((b, i) => b === committee.members[k - 1]?.signing[i])) as Uint8Array;
    return { keyper: k, signature: sign(s, keyperSigningMessage(CID, encodeKeyperMessage(approval(c.window, k, d)))) };
  });
  return c;
}

/** A fake sequencer: one reply frame per request frame. */
class FakeSequencer implements Transport {
  submitted: Uint8Array[] = [];
  constructor(private readonly lie: 'none' | 'receipt' | 'key' = 'none') {}
  channelBinding(): Uint8Array {
    return BINDING;
  }
  async send(frame: Uint8Array): Promise<Uint8Array> {
    const m = decodeClientMessage(frame);
    const reply = (x: ServerMessage) => encodeServerMessage(x);
    switch (m.type) {
      case 'GetSchedule': {
        const batchKeys = [10n, 11n, 12n].map((e, i) => ({ e, key: this.lie === 'key' && i === 1 ? batchPublicKey(5n) : (keys[i] as Uint8Array) }));
        return reply({ type: 'Schedule', ...signSchedule(SEQ_SEED, { requestId: m.requestId, genesisMs: GENESIS, batchLengthMs: 100n, openBatch: 10n, sequencerKey: SEQ, batchKeys, markets: [], replicas: [] }) });
      }
      case 'GetKeyCertificates':
        return reply({ type: 'KeyCertificates', requestId: m.requestId, committee, certificates: [certificate()] });
      case 'Submit': {
        this.submitted.push(m.envelope);
        const e = new DataView(m.envelope.buffer, m.envelope.byteOffset).getBigUint64(1, true);
        const c = commitment(m.envelope);
        if (this.lie === 'receipt') c[0] = (c[0] as number) ^ 1;
        return reply({ type: 'Receipt', requestId: m.requestId, receipt: signReceipt(SEQ_SEED, e, c) });
      }
      case 'GetAccount': {
        if (!verifyStrict(m.signature, queryMessage(SEQ, BINDING, m.requester, accountQuery(m.account)), m.requester)) {
          return reply({ type: 'Error', requestId: m.requestId, code: 12, message: 'unauthorized' });
        }
        return reply({ type: 'Account', requestId: m.requestId, account: m.account, nextWithdrawal: 1n, balances: [{ asset: 1, balance: 500n }] });
      }
      case 'Withdraw': {
        if (!verifyStrict(m.signature, withdrawalMessage(SEQ, m.account, m.asset, m.amount, m.sequence, m.destination), m.account)) {
          return reply({ type: 'Error', requestId: m.requestId, code: 12, message: 'unauthorized' });
        }
        return reply({ type: 'Withdrawn', requestId: m.requestId, id: 7n });
      }
      default:
        return reply({ type: 'Error', requestId: m.requestId, code: 10, message: 'not here' });
    }
  }
}

const TRADER = filled(32, 0x42);
const ORDERS = [{ market: 1, side: 'buy' as const, limit: 100n, qty: 2n, clientOrderId: 1n }];

test('a pinned client seals to a certified key, verifies its receipt, and the envelope opens', async () => {
  const t = new FakeSequencer();
  const c = new SealbatchClient(t, { sequencerKey: SEQ, trust: { mode: 'committee', committeeId: CID } });
  const s = await c.refreshSchedule();
  assert.deepEqual([...s.keys.keys()], [10n, 11n, 12n]);
  const { receipt, sealed } = await c.submit(TRADER, 11n, 1n, ORDERS);
  assert.equal(receipt.e, 11n);
  const b = openEnvelope(sealed.envelope, 11n, secrets[1] as bigint, DEP);
  assert.deepEqual(b.orders, ORDERS);
  await assert.rejects(c.submit(TRADER, 13n, 1n, ORDERS), { code: 'NotCertified' });
});

test('a key the certificate does not list is never sealed to', async () => {
  const c = new SealbatchClient(new FakeSequencer('key'), { sequencerKey: SEQ, trust: { mode: 'committee', committeeId: CID } });
  const s = await c.refreshSchedule();
  assert.deepEqual([...s.keys.keys()], [10n, 12n]);
  await assert.rejects(c.submit(TRADER, 11n, 1n, ORDERS), { code: 'NotCertified' });
});

test('a receipt for another commitment is refused', async () => {
  const c = new SealbatchClient(new FakeSequencer('receipt'), { sequencerKey: SEQ });
  await assert.rejects(c.submit(TRADER, 10n, 1n, ORDERS), { code: 'Mismatch' });
});

test('a client pinned to another committee or sequencer key refuses the schedule', async () => {
  await assert.rejects(new SealbatchClient(new FakeSequencer(), { sequencerKey: SEQ, trust: { mode: 'committee', committeeId: filled(32, 1) } }).refreshSchedule(), { code: 'Untrusted' });
  await assert.rejects(new SealbatchClient(new FakeSequencer(), { sequencerKey: filled(32, 0x11) }).refreshSchedule(), { code: 'Untrusted' });
});

test('signed account query and withdrawal over the transport', async () => {
  const c = new SealbatchClient(new FakeSequencer(), { sequencerKey: SEQ });
  const a = await c.getAccount(TRADER);
  assert.equal(a.balances[0]?.balance, 500n);
  assert.equal(await c.withdraw(TRADER, { asset: 1, amount: 5n, sequence: 1n, destination: new TextEncoder().encode('bc1q') }), 7n);
  const noBinding: Transport = { send: (f) => new FakeSequencer().send(f) };
  await assert.rejects(new SealbatchClient(noBinding, { sequencerKey: SEQ }).getAccount(TRADER), { code: 'Invalid' });
});
