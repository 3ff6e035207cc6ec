// The clearing vectors of spec/clearing.md §9: the pro-rata vector P (key,
// tie-break hashes, encoding, digest, all recomputed from its orders), X1's
// digest, and the price/volume/imbalance columns of the example table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clearBatch, encodeResult, resultDigest, tiebreakHash, tiebreakKey, toHex, type ClearingOrder, type MarketResult } from '../src/index.js';
import { readSpec, section } from './spec.js';

const S9 = section(readSpec('clearing.md'), '9.');
const ZERO = new Uint8Array(32);

function indentedAfter(marker: string): string[] {
  const at = S9.indexOf(marker);
  assert.ok(at >= 0, marker);
  const lines = S9.slice(at + marker.length).split('\n').slice(1);
  const out: string[] = [];
  for (const l of lines) {
    if (/^ {4}\S/.test(l)) out.push(l.trim());
    else if (l.trim() === '' && out.length === 0) continue;
    else break;
  }
  return out;
}

const lim = (side: 'buy' | 'sell', limit: bigint | null, qty: bigint, id: bigint): ClearingOrder => ({ id, side, limit, qty });
const market = (orders: ClearingOrder[], reference: bigint) => ({ market: 1, bandMin: 1n, bandMax: 1000n, reference, orders });

test('pro-rata vector P: tie-break key and hashes', () => {
  const lines = indentedAfter('so the hashes decide:');
  const kv = Object.fromEntries(lines.map((l) => l.split('=').map((x) => x.trim()) as [string, string]));
  const key = tiebreakKey(ZERO);
  assert.equal(toHex(key), kv.key);
  for (const id of [1n, 2n, 3n]) assert.equal(toHex(tiebreakHash(key, 1, id)), kv[`hash(1,${id})`]);
});

test('pro-rata vector P: fills, encoding and digest from its orders', () => {
  const orders = [lim('buy', 100n, 7n, 1n), lim('buy', 100n, 7n, 2n), lim('buy', 100n, 7n, 3n), lim('sell', 100n, 10n, 4n)];
  const res = clearBatch([market(orders, 100n)], ZERO);
  const m = res[0] as MarketResult;
  assert.equal(m.price, 100n);
  assert.equal(m.volume, 10n);
  assert.equal(m.imbalance, 11n);
  assert.deepEqual(m.fills.map((f) => f.filled), [3n, 4n, 3n, 10n]);
  const lines = indentedAfter('Order 2 wins: fills 3, 4, 3, 10. Encoding and digest:');
  const digestLine = lines.find((l) => l.startsWith('digest ='));
  assert.ok(digestLine);
  const encoding = lines.filter((l) => !l.startsWith('digest')).join('').replace(/\s+/g, '');
  assert.equal(toHex(encodeResult(res)), encoding);
  assert.equal(toHex(resultDigest(res)), digestLine.split('=')[1]?.trim());
});

test('X1 with reference 200: digest', () => {
  const orders = [
    lim('buy', 202n, 200n, 1n),
    lim('buy', 201n, 200n, 2n),
    lim('buy', 200n, 300n, 3n),
    lim('sell', 200n, 100n, 4n),
    lim('sell', 198n, 200n, 5n),
    lim('sell', 197n, 400n, 6n),
  ];
  const want = /has digest\s+`([0-9a-f]{64})`/.exec(S9);
  assert.ok(want);
  assert.equal(toHex(resultDigest(clearBatch([market(orders, 200n)], ZERO))), want[1]);
});

/** Orders of a table cell such as `buys 202×200, 201×200; sells 200×100` or `market buy 10, market sell 10`. */
function parseOrders(cell: string): ClearingOrder[] {
  const out: ClearingOrder[] = [];
  let id = 1n;
  for (const part of cell.split(';').map((p) => p.trim())) {
    const mk = part.match(/market (buy|sell) (\d+)/g);
    if (mk) {
      for (const x of mk) {
        const [, side, q] = /market (buy|sell) (\d+)/.exec(x) as RegExpExecArray;
        out.push(lim(side as 'buy' | 'sell', null, BigInt(q as string), id++));
      }
      continue;
    }
    const side = part.startsWith('buys') ? 'buy' : 'sell';
    for (const [, p, q] of part.matchAll(/(\d+)×(\d+)/g)) out.push(lim(side, BigInt(p as string), BigInt(q as string), id++));
  }
  return out;
}

test('the example table: price, volume and imbalance at references the reference column allows', () => {
  const rows = S9.split('\n').filter((l) => /^\| (X\d|W1′?|M) \|/.test(l));
  assert.equal(rows.length, 6);
  const refs: Record<string, bigint[]> = { X1: [1n, 200n, 1000n], X2: [150n, 200n, 250n], X3: [1n, 199n, 1000n], W1: [1n, 60n, 65n, 1000n], 'W1′': [62n], M: [1n, 500n, 1000n] };
  let byName: Record<string, ClearingOrder[]> = {};
  for (const row of rows) {
    const c = row.split('|').map((x) => x.trim());
    const name = c[1] as string;
    const orders = (c[2] as string) === 'as W1' ? (byName.W1 as ClearingOrder[]) : parseOrders(c[2] as string);
    byName = { ...byName, [name]: orders };
    for (const r of refs[name] as bigint[]) {
      const m = clearBatch([market(orders, r)], ZERO)[0] as MarketResult;
      const price = c[4] === 'r' ? r : BigInt(c[4] as string);
      assert.equal(m.price, price, `${name} at ${r}`);
      assert.equal(m.volume, BigInt(c[5] as string), `${name} volume`);
      assert.equal(m.imbalance, BigInt((c[6] as string).replace('−', '-').replace('+', '')), `${name} imbalance`);
      const fill = (limit: bigint, side: 'buy' | 'sell') => m.fills.find((f) => orders.find((o) => o.id === f.id && o.limit === limit && o.side === side))?.filled;
      if (name === 'X2') assert.equal(fill(201n, 'buy'), 100n);
      if (name === 'X3') assert.equal(fill(199n, 'sell'), 300n);
      if (name === 'W1') {
        assert.equal(fill(65n, 'buy'), 40n);
        assert.equal(fill(60n, 'buy'), 0n);
      }
      if (name === 'X1' || name === 'M') for (const f of m.fills) assert.equal(f.filled, (orders.find((o) => o.id === f.id) as ClearingOrder).qty);
    }
  }
});
