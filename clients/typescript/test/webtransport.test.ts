// The browser path's Node-side pieces: reading a node's `GET /webtransport`
// (spec/wire.md §9) and refusing to connect where there is no WebTransport.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SealbatchError, connectWebTransport, fetchWebTransportInfo } from '../src/index.js';

async function serving(body: string, status = 200): Promise<{ base: string; close: () => void }> {
  const server = createServer((req, res) => {
    if (req.url !== '/webtransport') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { base: `http://127.0.0.1:${port}`, close: () => server.close() };
}

test('the published WebTransport details are read and checked', async () => {
  const good = {
    url: 'https://127.0.0.1:4434/sealbatch',
    certificate_hashes: ['ab'.repeat(32)],
    sequencer_key: 'cd'.repeat(32),
  };
  const ok = await serving(JSON.stringify(good));
  try {
    assert.deepEqual(await fetchWebTransportInfo(ok.base), good);
  } finally {
    ok.close();
  }
  const partial = await serving(JSON.stringify({ url: good.url }));
  try {
    await assert.rejects(fetchWebTransportInfo(partial.base), (e: unknown) => e instanceof SealbatchError && e.code === 'Invalid');
  } finally {
    partial.close();
  }
  const missing = await serving('', 404);
  try {
    await assert.rejects(fetchWebTransportInfo(missing.base), (e: unknown) => e instanceof SealbatchError && e.code === 'Refused');
  } finally {
    missing.close();
  }
});

test('without WebTransport (Node.js 20) a connection is refused, typed', async () => {
  assert.equal((globalThis as { WebTransport?: unknown }).WebTransport, undefined);
  await assert.rejects(
    connectWebTransport({ url: 'https://127.0.0.1:1/sealbatch', certificate_hashes: [], sequencer_key: '' }),
    (e: unknown) => e instanceof SealbatchError && e.code === 'Refused',
  );
});
