/**
 * `npm run bench`: median time to sign and seal one 16-order bundle, to seal an
 * already signed one, and to verify one receipt, in this Node.js process.
 */
import { cpus } from 'node:os';
import { ReceiptChecker, batchPublicKey, deploymentId, filled, publicKeyOf, sealBundle, signBundle, signReceipt, signReceipts, verifyReceipt, type Order } from '../src/index.js';

function median(f: () => unknown, runs: number): number {
  for (let i = 0; i < Math.min(50, runs); i++) f();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const a = performance.now();
    f();
    t.push(performance.now() - a);
  }
  t.sort((x, y) => x - y);
  return t[Math.floor(t.length / 2)] as number;
}

const runs = Number(process.env.BENCH_RUNS ?? 500);
const seq = filled(32, 1);
const dep = deploymentId(publicKeyOf(seq), 1767225600000n, 100n);
const S = batchPublicKey(123456789n);
const trader = filled(32, 2);
const orders: Order[] = Array.from({ length: 16 }, (_, i) => ({ market: i % 4, side: i % 2 ? 'sell' : 'buy', limit: i % 3 ? 10000n + BigInt(i) : null, qty: BigInt(i + 1), clientOrderId: BigInt(i) }));
const signed = signBundle(trader, dep, 42n, 7n, orders);
const receipt = signReceipt(seq, 42n, sealBundle(signed, 42n, S).commitment);
const seqKey = publicKeyOf(seq);

const signSeal = median(() => sealBundle(signBundle(trader, dep, 42n, 7n, orders), 42n, S), runs);
const sealOnly = median(() => sealBundle(signed, 42n, S), runs);
const verify = median(() => {
  if (!verifyReceipt(receipt, seqKey)) throw new Error('receipt does not verify');
}, runs);

// A receipt of a group of 16 whose signature the checker verified already:
// only its path is walked.
const group = signReceipts(seq, Array.from({ length: 16 }, (_, i) => ({ e: 42n, commitment: filled(32, i + 1) })));
const checker = new ReceiptChecker(seqKey);
const last = group[15];
if (last === undefined || !checker.check(last)) throw new Error('group receipt does not verify');
const inGroup = median(() => {
  if (!checker.check(last)) throw new Error('group receipt does not verify');
}, runs);

const fmt = (ms: number) => `${(ms * 1000).toFixed(0)} µs`;
console.log(`node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, median of ${runs} runs`);
console.log(`sign + seal one 16-order bundle: ${fmt(signSeal)}`);
console.log(`seal one signed 16-order bundle: ${fmt(sealOnly)}`);
console.log(`verify one receipt:              ${fmt(verify)}`);
console.log(`check one receipt, group known:  ${fmt(inGroup)}`);
