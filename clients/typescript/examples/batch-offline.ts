/**
 * A trader's whole chain, offline: the sequencer's side is played here with
 * keys made on the spot, so the example runs anywhere (`npm run example`).
 * Against a real node the same calls take the schedule, the receipt, the
 * `BatchSealed` push and the `BatchCleared` result from the wire
 * (`SealbatchClient` over a `Transport`).
 *
 * 1. seal a 2-order bundle to batch e's key (nothing readable leaves the trader);
 * 2. receive a receipt: one of a group signed at once; check it (once per group);
 * 3. the batch seals: check the seal and the inclusion proof of the commitment;
 * 4. the key is released: open the batch's envelopes with s_e, find the bundle.
 */
import {
  ReceiptChecker,
  batchPublicKey,
  deploymentId,
  encodeProof,
  filled,
  merkleProof,
  merkleRoot,
  openEnvelope,
  publicKeyOf,
  sealBundle,
  signBundle,
  signReceipts,
  signSeal,
  toHex,
  verifyInclusion,
  type Order,
} from '../src/index.js';

/** What the example prints, line by line; returned for its test. */
export function runExample(): string[] {
  const out: string[] = [];
  // The venue (played here): its key, its schedule, batch e's secret.
  const sequencerSeed = filled(32, 0x51);
  const sequencerKey = publicKeyOf(sequencerSeed);
  const schedule = { genesisMs: 1_767_225_600_000n, batchLengthMs: 100n };
  const e = 7n;
  const sE = 0x1234_5678_9abc_def0n; // released after the batch closes
  const S_e = batchPublicKey(sE); // announced (certified by the committee) before

  // 1. The trader seals.
  const account = filled(32, 0x0a);
  const dep = deploymentId(sequencerKey, schedule.genesisMs, schedule.batchLengthMs);
  const orders: Order[] = [
    { market: 1, side: 'buy', limit: 10_050n, qty: 3n, clientOrderId: 1n },
    { market: 2, side: 'sell', limit: null, qty: 1n, clientOrderId: 2n },
  ];
  const sealed = sealBundle(signBundle(account, dep, e, 1n, orders), e, S_e);
  out.push(`sealed ${sealed.envelope.length} bytes, commitment ${toHex(sealed.commitment).slice(0, 16)}…`);

  // 2. The sequencer receipts it with two other envelopes made durable together.
  const others = [filled(32, 0xa1), filled(32, 0xa2)];
  const group = signReceipts(sequencerSeed, [
    { e, commitment: others[0] as Uint8Array },
    { e, commitment: sealed.commitment },
    { e, commitment: others[1] as Uint8Array },
  ]);
  const receipt = group[1];
  if (receipt === undefined) throw new Error('no receipt');
  const checker = new ReceiptChecker(sequencerKey);
  if (!checker.check(receipt)) throw new Error('the receipt does not verify');
  out.push(`receipt ${receipt.proof.index} of a group of ${receipt.count}: verified`);

  // 3. The batch seals: its sorted commitments' root, signed.
  const sorted = [...others, sealed.commitment].sort((a, b) => toHex(a).localeCompare(toHex(b)));
  const seal = signSeal(sequencerSeed, e, sorted.length, merkleRoot(sorted));
  const index = sorted.findIndex((c) => toHex(c) === toHex(sealed.commitment));
  verifyInclusion(receipt, seal, encodeProof(merkleProof(sorted, index)), sequencerKey);
  out.push(`included in the seal of batch ${e} (${seal.count} envelopes)`);

  // 4. The key is released: the envelope opens to the bundle the trader signed.
  const opened = openEnvelope(sealed.envelope, e, sE, dep, S_e);
  out.push(`opened: nonce ${opened.nonce}, ${opened.orders.length} orders`);
  return out;
}

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/.*\//, ''))) {
  for (const line of runExample()) console.log(line);
}
