/**
 * The clearing rule (spec/clearing.md), so a client can re-derive a published
 * batch result: uniform price per market (§4), pro-rata allocation with the
 * keyed tie-break (§5), the canonical result encoding and its digest (§8).
 * Integers only (`bigint`).
 */
import { Writer, compareBytes, concat, u32le, u64le, utf8 } from './codec.js';
import { blake3Keyed, kdf } from './crypto.js';
import { SealbatchError } from './errors.js';

/** Lowest valid price tick. */
export const TICK_MIN = 1n;
/** Highest valid price tick (`2^64 − 2`). */
export const TICK_MAX = (1n << 64n) - 2n;
const U64_MAX = (1n << 64n) - 1n;

/** An order as the clearing engine sees it. */
export interface ClearingOrder {
  /** Order id (u64), unique in the batch. */
  id: bigint;
  /** Buy or sell. */
  side: 'buy' | 'sell';
  /** Limit in ticks, or `null` for a market order. */
  limit: bigint | null;
  /** Quantity in lots, at least 1. */
  qty: bigint;
}

/** One market of a batch. */
export interface ClearingMarket {
  /** Market id (u32). */
  market: number;
  /** Band minimum. */
  bandMin: bigint;
  /** Band maximum. */
  bandMax: bigint;
  /** Reference price, inside the band. */
  reference: bigint;
  /** Its orders, in any order. */
  orders: ClearingOrder[];
}

/** A market's result. */
export interface MarketResult {
  /** Market id. */
  market: number;
  /** Clearing price, or `null` when nothing crosses. */
  price: bigint | null;
  /** Volume in lots. */
  volume: bigint;
  /** Imbalance at the price (or at the reference when nothing crosses). */
  imbalance: bigint;
  /** Fills of every order of the market, ascending id. */
  fills: { id: bigint; filled: bigint }[];
}

/** `key = derive_key("sealbatch v1 clearing tiebreak", seed)`. */
export function tiebreakKey(seed: Uint8Array): Uint8Array {
  return kdf('sealbatch v1 clearing tiebreak', seed);
}

/** `hash = keyed_hash(key, u32le(market) ‖ u64le(order))`. */
export function tiebreakHash(key: Uint8Array, market: number, orderId: bigint): Uint8Array {
  return blake3Keyed(key, concat(u32le(market), u64le(orderId)));
}

function accepts(o: ClearingOrder, p: bigint): boolean {
  if (o.limit === null) return true;
  return o.side === 'buy' ? o.limit >= p : o.limit <= p;
}

function validate(m: ClearingMarket): void {
  const bad = (msg: string): never => {
    throw new SealbatchError('Invalid', `market ${m.market}: ${msg}`);
  };
  if (m.bandMin < TICK_MIN || m.bandMax > TICK_MAX || m.bandMin > m.bandMax) bad('bad band');
  if (m.reference < m.bandMin || m.reference > m.bandMax) bad('reference outside the band');
  const ids = new Set<bigint>();
  for (const o of m.orders) {
    if (ids.has(o.id)) bad(`duplicate order id ${o.id}`);
    ids.add(o.id);
    if (o.qty < 1n || o.qty > U64_MAX) bad(`order ${o.id}: bad quantity`);
    if (o.limit !== null && (o.limit < m.bandMin || o.limit > m.bandMax)) bad(`order ${o.id}: limit outside the band`);
  }
}

/** Clears one market (§3–§6) with the batch seed. Throws `Invalid` on input that breaks §2. */
export function clearMarket(m: ClearingMarket, seed: Uint8Array): MarketResult {
  validate(m);
  const D = (p: bigint) => m.orders.reduce((s, o) => (o.side === 'buy' && accepts(o, p) ? s + o.qty : s), 0n);
  const S = (p: bigint) => m.orders.reduce((s, o) => (o.side === 'sell' && accepts(o, p) ? s + o.qty : s), 0n);
  const candidates = [...new Set<bigint>([m.reference, ...m.orders.flatMap((o) => (o.limit === null ? [] : [o.limit]))])].sort((a, b) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  const stats = candidates.map((p) => {
    const d = D(p);
    const s = S(p);
    return { p, d, s, v: d < s ? d : s, i: d - s };
  });
  const vStar = stats.reduce((mx, x) => (x.v > mx ? x.v : mx), 0n);
  const sortedOrders = [...m.orders].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (vStar === 0n) {
    return { market: m.market, price: null, volume: 0n, imbalance: D(m.reference) - S(m.reference), fills: sortedOrders.map((o) => ({ id: o.id, filled: 0n })) };
  }
  if (vStar > U64_MAX) throw new SealbatchError('Invalid', `market ${m.market}: volume overflow`);
  const c1 = stats.filter((x) => x.v === vStar);
  const abs = (x: bigint) => (x < 0n ? -x : x);
  const minImb = c1.reduce((mn, x) => (abs(x.i) < mn ? abs(x.i) : mn), abs((c1[0] as (typeof c1)[0]).i));
  const c2 = c1.filter((x) => abs(x.i) === minImb);
  const lo = (c2[0] as (typeof c2)[0]).p;
  const hi = (c2[c2.length - 1] as (typeof c2)[0]).p;
  let price: bigint;
  if (c2.every((x) => x.i > 0n)) price = hi;
  else if (c2.every((x) => x.i < 0n)) price = lo;
  else price = m.reference < lo ? lo : m.reference > hi ? hi : m.reference;
  const d = D(price);
  const s = S(price);
  const volume = d < s ? d : s;
  const fills = new Map<bigint, bigint>();
  for (const o of m.orders) fills.set(o.id, 0n);
  const acc = m.orders.filter((o) => accepts(o, price));
  if (d === s) {
    for (const o of acc) fills.set(o.id, o.qty);
  } else {
    const longSide = d > s ? 'buy' : 'sell';
    for (const o of acc) if (o.side !== longSide) fills.set(o.id, o.qty);
    const long = acc.filter((o) => o.side === longSide);
    // Levels: market orders, then limits best first.
    const levels = new Map<string, ClearingOrder[]>();
    const keyOf = (o: ClearingOrder) => (o.limit === null ? 'm' : o.limit.toString());
    for (const o of long) {
      const k = keyOf(o);
      const l = levels.get(k);
      if (l) l.push(o);
      else levels.set(k, [o]);
    }
    const order = [...levels.keys()].sort((a, b) => {
      if (a === 'm') return -1;
      if (b === 'm') return 1;
      const x = BigInt(a);
      const y = BigInt(b);
      const c = x < y ? -1 : x > y ? 1 : 0;
      return longSide === 'buy' ? -c : c;
    });
    let left = volume;
    const key = tiebreakKey(seed);
    for (const k of order) {
      const lvl = levels.get(k) as ClearingOrder[];
      const Q = lvl.reduce((a, o) => a + o.qty, 0n);
      if (left === 0n) break;
      if (Q <= left) {
        for (const o of lvl) fills.set(o.id, o.qty);
        left -= Q;
        continue;
      }
      const R = left;
      const parts = lvl.map((o) => ({ o, base: (o.qty * R) / Q, rem: (o.qty * R) % Q, h: tiebreakHash(key, m.market, o.id) }));
      let L = R - parts.reduce((a, x) => a + x.base, 0n);
      parts.sort((a, b) => (a.rem !== b.rem ? (a.rem > b.rem ? -1 : 1) : compareBytes(a.h, b.h) || (a.o.id < b.o.id ? -1 : 1)));
      for (const x of parts) {
        let f = x.base;
        if (L > 0n) {
          f += 1n;
          L -= 1n;
        }
        fills.set(x.o.id, f);
      }
      left = 0n;
      break;
    }
  }
  return { market: m.market, price, volume, imbalance: d - s, fills: sortedOrders.map((o) => ({ id: o.id, filled: fills.get(o.id) as bigint })) };
}

/** Clears every market of a batch (markets ascending by id; duplicate markets or order ids are `Invalid`). */
export function clearBatch(markets: ClearingMarket[], seed: Uint8Array): MarketResult[] {
  const ids = new Set<number>();
  const orderIds = new Set<bigint>();
  for (const m of markets) {
    if (ids.has(m.market)) throw new SealbatchError('Invalid', `duplicate market ${m.market}`);
    ids.add(m.market);
    for (const o of m.orders) {
      if (orderIds.has(o.id)) throw new SealbatchError('Invalid', `duplicate order id ${o.id}`);
      orderIds.add(o.id);
    }
  }
  return [...markets].sort((a, b) => a.market - b.market).map((m) => clearMarket(m, seed));
}

/** The canonical result encoding of §8 (`"SBCLEAR1"` …), markets and orders ascending by id. */
export function encodeResult(results: MarketResult[]): Uint8Array {
  const w = new Writer().bytes(utf8('SBCLEAR1')).u32(results.length);
  for (const r of [...results].sort((a, b) => a.market - b.market)) {
    w.u32(r.market).u8(r.price === null ? 0 : 1).u64(r.price ?? 0n).u64(r.volume).i128(r.imbalance).u64(BigInt(r.fills.length));
    for (const f of [...r.fills].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) w.u64(f.id).u64(f.filled);
  }
  return w.finish();
}

/** The result digest: `derive_key("sealbatch v1 clearing result", encoding)`. */
export function resultDigest(results: MarketResult[]): Uint8Array {
  return kdf('sealbatch v1 clearing result', encodeResult(results));
}
