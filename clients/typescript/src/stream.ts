/**
 * A {@link Transport} over one bidirectional byte stream, as spec/wire.md §2
 * prescribes: requests are pipelined on one stream, replies are matched to
 * their requests by `request_id` (they may come in any order), and
 * subscription pushes (`BatchOpened`, `BatchSealed`, `BatchCleared`) arrive
 * interleaved on the same stream.
 *
 * It works on WHATWG streams, which is what a browser's or a Node.js
 * WebTransport bidirectional stream is; a QUIC library's stream can be
 * wrapped into the same pair. The connection itself (QUIC, TLS 1.3, ALPN
 * `sealbatch/5`, the pinned certificate, the channel binding) is the
 * caller's.
 */
import { toHex } from './codec.js';
import { SealbatchError } from './errors.js';
import type { Transport } from './client.js';
import { FrameDecoder, decodeServerMessage, type ServerMessage } from './wire.js';

/** One bidirectional byte stream: what the server sends, and where to write. */
export interface ByteStreamPair {
  /** Bytes from the server. */
  readable: ReadableStream<Uint8Array>;
  /** Bytes to the server. */
  writable: WritableStream<Uint8Array>;
}

/** Options of a {@link StreamTransport}. */
export interface StreamTransportOptions {
  /** The connection's channel binding (TLS exporter, spec/wire.md §2), for signed queries. */
  channelBinding?: Uint8Array;
  /** Called with every push and every `Error` with request id 0 (a frame the server could not read). */
  onPush?: (m: ServerMessage) => void;
  /** Called once when the stream ends or fails; pending requests are rejected with the same error. */
  onClose?: (err: SealbatchError) => void;
}

/** A pipelining request/reply transport with push delivery over a {@link ByteStreamPair}. */
export class StreamTransport implements Transport {
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly pending = new Map<bigint, { resolve: (f: Uint8Array) => void; reject: (e: Error) => void }>();
  private closed: SealbatchError | null = null;

  /** Starts reading the stream at once. */
  constructor(
    stream: ByteStreamPair,
    private readonly opts: StreamTransportOptions = {},
  ) {
    this.writer = stream.writable.getWriter();
    void this.readLoop(stream.readable);
  }

  /** The channel binding given in the options. */
  channelBinding(): Uint8Array {
    if (this.opts.channelBinding === undefined) throw new SealbatchError('Invalid', 'no channel binding configured');
    return this.opts.channelBinding;
  }

  /**
   * Writes one client frame and resolves with the reply frame that echoes its
   * request id. Request ids must be unique among the requests in flight.
   */
  async send(frame: Uint8Array): Promise<Uint8Array> {
    if (this.closed !== null) throw this.closed;
    if (frame.length < 13) throw new SealbatchError('Invalid', 'a client frame starts with a type byte and a request id');
    const id = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getBigUint64(5, true);
    if (this.pending.has(id)) throw new SealbatchError('Invalid', `request id ${id} already in flight`);
    const reply = new Promise<Uint8Array>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    // Not awaited: requests are pipelined, and the reply settles the call
    // (a failed write rejects it).
    this.writer.write(frame).catch((err: unknown) => {
      const w = this.pending.get(id);
      this.pending.delete(id);
      w?.reject(new SealbatchError('Refused', `write failed: ${String(err)}`));
    });
    return reply;
  }

  /** Finishes the send side (FIN): the server answers what was sent, then ends the stream. */
  async finish(): Promise<void> {
    await this.writer.close();
  }

  /** Requests waiting for their reply. */
  get inFlight(): number {
    return this.pending.size;
  }

  private async readLoop(readable: ReadableStream<Uint8Array>): Promise<void> {
    const reader = readable.getReader();
    const frames = new FrameDecoder('server');
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          frames.finish();
          this.close(new SealbatchError('Refused', 'the server ended the stream'));
          return;
        }
        for (const f of frames.push(value)) this.deliver(f);
      }
    } catch (err) {
      this.close(err instanceof SealbatchError ? err : new SealbatchError('Refused', `stream failed: ${String(err)}`));
    }
  }

  private deliver(frame: Uint8Array): void {
    const m = decodeServerMessage(frame);
    const id = 'requestId' in m ? m.requestId : null;
    const waiter = id === null ? undefined : this.pending.get(id);
    if (waiter === undefined || id === null) {
      if (id !== null && !(m.type === 'Error' && id === 0n)) {
        throw new SealbatchError('UnexpectedReply', `reply ${m.type} to request ${id}, which is not in flight (${toHex(frame.subarray(0, 16))}…)`);
      }
      this.opts.onPush?.(m);
      return;
    }
    this.pending.delete(id);
    waiter.resolve(frame);
  }

  private close(err: SealbatchError): void {
    if (this.closed !== null) return;
    this.closed = err;
    for (const w of this.pending.values()) w.reject(err);
    this.pending.clear();
    this.opts.onClose?.(err);
  }
}
