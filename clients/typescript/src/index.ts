/**
 * `@sealbatch/sdk`: the TypeScript SDK of sealbatch, written from its
 * specifications (spec/). Everything a trader's client does: build and sign
 * bundles, seal them to a batch key and compute commitments, verify receipts,
 * seals, inclusion proofs, schedules and keyper certificates, open a published
 * batch, encode and decode every wire frame, and sign account queries and
 * withdrawals.
 */
export * from './errors.js';
export * from './codec.js';
export * from './crypto.js';
export * from './envelope.js';
export * from './merkle.js';
export * from './receipt.js';
export * from './keyper.js';
export * from './commit.js';
export * from './wire.js';
export * from './clearing.js';
export * from './client.js';
export * from './stream.js';
export * from './webtransport.js';
