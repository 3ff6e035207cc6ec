// StreamTransport over an in-memory stream pair: pipelined requests answered
// out of order, pushes interleaved, and a broken stream failing every request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FrameDecoder,
  StreamTransport,
  decodeClientMessage,
  decodeServerMessage,
  encodeClientMessage,
  encodeServerMessage,
  filled,
  type ServerMessage,
} from '../src/index.js';

/** A client/server pair of streams; `server` gets the client's bytes and writes the replies. */
function pair() {
  const up = new TransformStream<Uint8Array, Uint8Array>();
  const down = new TransformStream<Uint8Array, Uint8Array>();
  return {
    client: { readable: down.readable, writable: up.writable },
    server: { readable: up.readable, writer: down.writable.getWriter() },
  };
}

test('pipelined requests are matched by id, replies out of order, pushes delivered', async () => {
  const { client, server } = pair();
  const pushes: ServerMessage[] = [];
  const t = new StreamTransport(client, { onPush: (m) => pushes.push(m) });
  // The server reads three requests, then answers them in reverse order, with a push first.
  void (async () => {
    const reader = server.readable.getReader();
    const dec = new FrameDecoder('client');
    const ids: bigint[] = [];
    while (ids.length < 3) {
      const { value } = await reader.read();
      for (const f of dec.push(value as Uint8Array)) ids.push(decodeClientMessage(f).requestId);
    }
    const out = [encodeServerMessage({ type: 'BatchOpened', e: 4n, publicKey: filled(32, 1), closeMs: 500n })];
    for (const id of ids.reverse()) out.push(encodeServerMessage({ type: 'Withdrawn', requestId: id, id: id * 10n }));
    const all = new Uint8Array(out.reduce((a, f) => a + f.length, 0));
    let o = 0;
    for (const f of out) {
      all.set(f, o);
      o += f.length;
    }
    // One write, split oddly: frames cross chunk boundaries.
    await server.writer.write(all.subarray(0, 7));
    await server.writer.write(all.subarray(7));
  })();
  const replies = await Promise.all([1n, 2n, 3n].map((id) => t.send(encodeClientMessage({ type: 'Subscribe', requestId: id }))));
  assert.deepEqual(
    replies.map((f) => decodeServerMessage(f)),
    [1n, 2n, 3n].map((id) => ({ type: 'Withdrawn', requestId: id, id: id * 10n })),
  );
  assert.equal(pushes.length, 1);
  assert.equal(pushes[0]?.type, 'BatchOpened');
  assert.equal(t.inFlight, 0);
  await assert.rejects(
    (async () => {
      const a = t.send(encodeClientMessage({ type: 'Subscribe', requestId: 9n }));
      const b = t.send(encodeClientMessage({ type: 'Subscribe', requestId: 9n }));
      await Promise.all([a, b]);
    })(),
    { code: 'Invalid' },
  );
});

test('an undecodable frame from the server fails every pending request and the transport', async () => {
  const { client, server } = pair();
  let closedWith: string | null = null;
  const t = new StreamTransport(client, { onClose: (e) => (closedWith = e.code) });
  const p = t.send(encodeClientMessage({ type: 'GetSchedule', requestId: 1n }));
  await server.writer.write(Uint8Array.of(9, 0, 0, 0, 0x01)); // a client type byte sent by the server
  await assert.rejects(p, { code: 'UnknownType' });
  assert.equal(closedWith, 'UnknownType');
  await assert.rejects(t.send(encodeClientMessage({ type: 'GetSchedule', requestId: 2n })), { code: 'UnknownType' });
});

test('a stream ending inside a frame is Truncated', async () => {
  const { client, server } = pair();
  const t = new StreamTransport(client);
  const p = t.send(encodeClientMessage({ type: 'GetSchedule', requestId: 1n }));
  const ack = encodeServerMessage({ type: 'Ack', requestId: 1n });
  await server.writer.write(ack.subarray(0, ack.length - 1));
  await server.writer.close();
  await assert.rejects(p, { code: 'Truncated' });
});
