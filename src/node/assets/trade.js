// The trade page (spec/explorer.md §8): a trader's whole chain in the
// browser, over WebTransport (spec/wire.md §9). The account key is made
// (or imported) and kept in this browser; orders are signed and sealed
// here, so nothing readable leaves the page; every receipt, seal, proof,
// released key and result is checked here against the sequencer key.
import * as sb from '/sealbatch-sdk.js';

const $ = (id) => document.getElementById(id);
const SEED_KEY = 'sealbatch.seed';
const state = {
  info: null,
  sequencerKey: null,
  conn: null,
  client: null,
  trusted: null,
  seed: null,
  nonce: BigInt(Date.now()),
  pushes: [],
  waiters: new Set(),
};

function log(line) {
  $('log').textContent += `${new Date().toISOString().slice(11, 23)} ${line}\n`;
  console.log(line);
}

function step(label, detail, ok = true) {
  const li = document.createElement('li');
  li.dataset.step = label;
  li.dataset.ok = String(ok);
  li.textContent = `${ok ? '✔' : '✘'} ${label}: ${detail}`;
  $('chain').append(li);
  console.log(li.textContent);
}

function onPush(m) {
  state.pushes.push(m);
  if (state.pushes.length > 256) state.pushes.shift();
  if (m.type === 'BatchOpened') $('open-batch').textContent = String(m.e);
  for (const w of [...state.waiters]) w(m);
}

/** The first push (already here or still to come) that `pred` accepts, within `ms`. */
function waitPush(pred, ms, what) {
  const seen = state.pushes.find(pred);
  if (seen !== undefined) return Promise.resolve(seen);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      state.waiters.delete(w);
      reject(new Error(`no ${what} within ${ms} ms`));
    }, ms);
    const w = (m) => {
      if (!pred(m)) return;
      clearTimeout(timer);
      state.waiters.delete(w);
      resolve(m);
    };
    state.waiters.add(w);
  });
}

function loadSeed() {
  const stored = localStorage.getItem(SEED_KEY);
  if (stored !== null && /^[0-9a-f]{64}$/.test(stored)) return sb.fromHex(stored);
  const seed = sb.randomSeed();
  localStorage.setItem(SEED_KEY, sb.toHex(seed));
  return seed;
}

function showAccount() {
  $('account-key').textContent = sb.toHex(sb.publicKeyOf(state.seed));
}

async function connect() {
  state.info = await sb.fetchWebTransportInfo('');
  // `?sequencer=HEX` pins the key this page checks everything against;
  // without it the page takes the key the node states (and shows it).
  const pinned = new URLSearchParams(location.search).get('sequencer');
  if (pinned !== null && pinned.toLowerCase() !== state.info.sequencer_key) {
    throw new Error(`the node states sequencer key ${state.info.sequencer_key}, not the pinned ${pinned}`);
  }
  state.sequencerKey = sb.fromHex(state.info.sequencer_key);
  $('sequencer-key').textContent = `${state.info.sequencer_key}${pinned === null ? ' (as the node states it: pin it with ?sequencer=…)' : ' (pinned)'}`;
  state.conn = await sb.connectWebTransport(state.info, {
    onPush,
    onClose: (err) => log(`session closed: ${err.message}`),
  });
  state.client = new sb.SealbatchClient(state.conn.transport, {
    sequencerKey: state.sequencerKey,
    trust: { mode: 'named' },
  });
  await state.client.request({ type: 'Subscribe', requestId: 0n });
  await refresh();
  log(`connected to ${state.info.url}`);
}

async function refresh() {
  state.trusted = await state.client.refreshSchedule();
  const s = state.trusted.schedule;
  $('open-batch').textContent = String(s.openBatch);
  $('trust').textContent =
    state.trusted.committee === null
      ? 'keys signed by the sequencer (trusted-operator mode)'
      : `keys certified by committee ${sb.committeeIdHex(state.trusted.committee).slice(0, 16)}… (${state.trusted.committee.t} of ${state.trusted.committee.members.length})`;
  const select = $('market');
  if (select.options.length === 0) {
    for (const m of s.markets) {
      const o = document.createElement('option');
      o.value = String(m.id);
      o.textContent = `market ${m.id} (reference ${m.referencePrice})`;
      select.append(o);
    }
    const first = s.markets[0];
    if (first !== undefined) $('price').value = String(first.referencePrice);
  }
}

/** Demo mode: the sequencer credits an account with no signature. */
async function fund(seed) {
  const account = sb.publicKeyOf(seed);
  const assets = new Set();
  for (const m of state.trusted.schedule.markets) {
    assets.add(m.baseAsset);
    assets.add(m.quoteAsset);
  }
  for (const asset of assets) {
    await state.client.request({ type: 'Deposit', requestId: 0n, account, asset, amount: 1_000_000_000_000n });
  }
  log(`funded ${sb.toHex(account).slice(0, 16)}… with ${assets.size} assets`);
}

/** The batch to seal to: open long enough from now, with a trusted key (never one the schedule says closed, whatever this browser's clock says). */
function targetBatch() {
  const s = state.trusted.schedule;
  const now = BigInt(Date.now()) + 30n;
  let e = now < s.genesisMs ? 0n : (now - s.genesisMs) / s.batchLengthMs;
  if (e < s.openBatch) e = s.openBatch;
  while (!state.trusted.keys.has(e)) {
    e += 1n;
    if (e > s.openBatch + 64n) throw new Error('no trusted batch key ahead');
  }
  return e;
}

/**
 * Signs, seals and submits one limit order of `seed`'s account, retrying the
 * next batch if this one closed on the way; resolves with its receipt and
 * sealed envelope, checked.
 */
async function submit(seed, order) {
  for (let attempt = 0; ; attempt += 1) {
    await refresh();
    const e = targetBatch();
    state.nonce += 1n;
    try {
      const { receipt, sealed } = await state.client.submit(seed, e, state.nonce, [{ ...order, clientOrderId: state.nonce }]);
      return { e, receipt, sealed };
    } catch (err) {
      // Closed on the way, not announced yet, full: the next batch. Busy:
      // after the wait the sequencer asks for.
      const code = /rejected (\d+)/.exec(String(err.message));
      if (attempt < 10 && code !== null && ['2', '3', '4', '6'].includes(code[1])) {
        if (code[1] === '6') await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      throw err;
    }
  }
}

/** Follows one envelope: its seal and proof, its batch's released key, its fills. */
async function follow(e, commitment, label) {
  const sealedMsg = await waitPush((m) => m.type === 'BatchSealed' && m.seal.e === e, 15000, `seal of batch ${e}`);
  const seal = sb.verifyBatchSealed(sealedMsg, state.sequencerKey);
  const proved = sealedMsg.proofs.some((p) => sb.bytesEqual(p.commitment, commitment));
  step(`${label} sealed`, `batch ${e}, ${seal.count} envelopes, root ${sb.toHex(seal.root).slice(0, 16)}…, inclusion proof ${proved ? 'checked' : 'missing'}`, proved);
  const cleared = await waitPush((m) => m.type === 'BatchCleared' && m.e === e, 15000, `result of batch ${e}`);
  const key = state.trusted.keys.get(e);
  sb.verifyBatchCleared(cleared, seal, key, state.trusted.committee);
  step(`${label} key released`, `s_e of batch ${e} matches its announced key${cleared.release.length > 0 ? `, ${cleared.release.length} keyper attestations` : ''}`);
  const own = cleared.own.find((o) => sb.bytesEqual(o.commitment, commitment));
  const fills = own === undefined ? [] : own.fills.map((f) => ({ index: f.index, filled: String(f.filled) }));
  const lines = cleared.markets.map((m) => ({ market: m.market, price: m.price === null ? null : String(m.price), volume: String(m.volume) }));
  step(`${label} result`, own === undefined ? 'not in this batch' : own.status === 0 ? `filled ${fills.map((f) => f.filled).join(', ') || 'nothing'}` : `rejected, status ${own.status}`, own !== undefined);
  return { status: own?.status ?? null, fills, markets: lines };
}

async function placeFromForm(event) {
  event.preventDefault();
  try {
    const order = {
      market: Number($('market').value),
      side: $('side').value,
      limit: BigInt($('price').value),
      qty: BigInt($('qty').value),
    };
    const { e, receipt, sealed } = await submit(state.seed, order);
    step('receipt', `batch ${e}, group of ${receipt.count}, verified under the sequencer key`);
    await follow(e, sealed.commitment, 'order');
  } catch (err) {
    step('order', err.message, false);
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Times sealing a 16-order bundle and verifying a receipt, here. */
function bench(receipt) {
  const seed = sb.randomSeed();
  const key = state.trusted.keys.get(receipt.e) ?? [...state.trusted.keys.values()][0];
  const market = state.trusted.schedule.markets[0];
  const orders = Array.from({ length: 16 }, (_, i) => ({
    market: market.id,
    side: i % 2 === 0 ? 'buy' : 'sell',
    limit: market.referencePrice,
    qty: 1n,
    clientOrderId: BigInt(i),
  }));
  const seal = [];
  const verify = [];
  for (let i = 0; i < 40; i += 1) {
    let t = performance.now();
    sb.sealBundle(sb.signBundle(seed, state.trusted.deploymentId, receipt.e, BigInt(i), orders), receipt.e, key);
    seal.push(performance.now() - t);
    t = performance.now();
    if (!sb.verifyReceipt(receipt, state.sequencerKey)) throw new Error('the receipt does not verify');
    verify.push(performance.now() - t);
  }
  return { seal_16_orders_ms: median(seal), verify_receipt_ms: median(verify) };
}

/**
 * The demo run (`/trade?demo=1`, and the browser test): two fresh accounts
 * funded, a crossing buy and sell placed in one batch, each followed to its
 * fill; the outcome in `#result` (`data-status` pass or fail).
 */
async function demo() {
  const out = $('result');
  try {
    const buyer = sb.randomSeed();
    const seller = sb.randomSeed();
    await fund(buyer);
    await fund(seller);
    const market = state.trusted.schedule.markets[0];
    const price = market.referencePrice;
    const buy = { market: market.id, side: 'buy', limit: price, qty: 3n };
    const sell = { market: market.id, side: 'sell', limit: price, qty: 3n };
    // Both into one batch: the seller's goes to the buyer's batch.
    let placed;
    for (let attempt = 0; attempt < 10; attempt += 1) {
      const b = await submit(buyer, buy);
      try {
        state.nonce += 1n;
        const s = await state.client.submit(seller, b.e, state.nonce, [{ ...sell, clientOrderId: state.nonce }]);
        placed = { e: b.e, buy: b, sell: s };
        break;
      } catch (err) {
        log(`seller missed batch ${b.e}: ${err.message}`);
      }
    }
    if (placed === undefined) throw new Error('could not place both orders in one batch');
    step('receipts', `batch ${placed.e}: buyer's and seller's verified`);
    const [bought, sold] = await Promise.all([
      follow(placed.e, placed.buy.sealed.commitment, 'buy'),
      follow(placed.e, placed.sell.sealed.commitment, 'sell'),
    ]);
    const timing = bench(placed.buy.receipt);
    const result = { e: String(placed.e), price: String(price), bought, sold, timing };
    out.textContent = JSON.stringify(result);
    out.dataset.status = bought.fills.length > 0 && sold.fills.length > 0 ? 'pass' : 'fail';
  } catch (err) {
    out.textContent = String(err && err.stack ? err.stack : err);
    out.dataset.status = 'fail';
  }
}

async function main() {
  const demoRun = new URLSearchParams(location.search).has('demo');
  // A demo run holds the page's load event until it ends (an image still
  // loading delays it), so that a headless browser's `--dump-dom` shows
  // the outcome: the image is the explorer's event stream, which never
  // ends by itself.
  const hold = new Image();
  if (demoRun) {
    hold.hidden = true;
    hold.src = '/events';
    document.body.append(hold);
  }
  try {
    await run(demoRun);
  } finally {
    hold.remove();
  }
}

async function run(demoRun) {
  state.seed = loadSeed();
  showAccount();
  $('new-key').addEventListener('click', () => {
    state.seed = sb.randomSeed();
    localStorage.setItem(SEED_KEY, sb.toHex(state.seed));
    showAccount();
  });
  $('import-key').addEventListener('click', () => {
    const hex = prompt('Account seed (64 hex digits)');
    if (hex === null || !/^[0-9a-fA-F]{64}$/.test(hex.trim())) return;
    state.seed = sb.fromHex(hex.trim().toLowerCase());
    localStorage.setItem(SEED_KEY, sb.toHex(state.seed));
    showAccount();
  });
  $('fund').addEventListener('click', () => fund(state.seed).catch((err) => log(err.message)));
  $('order').addEventListener('submit', placeFromForm);
  try {
    await connect();
  } catch (err) {
    log(`not connected: ${err.message}`);
    $('result').dataset.status = 'fail';
    $('result').textContent = String(err.message);
    return;
  }
  if (demoRun) await demo();
}

main();
