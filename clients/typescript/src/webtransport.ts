/**
 * Reaching a sequencer from a browser: WebTransport over HTTP/3
 * (spec/wire.md §9). The node publishes where its WebTransport listener is
 * and which self-signed certificates to accept (`GET /webtransport` on its
 * HTTP listener); a session's bidirectional stream carries the same frames
 * as a native stream, so a {@link StreamTransport} speaks over it.
 *
 * A WebTransport stream has no channel binding (a browser exposes no TLS
 * exporter): signed account queries are refused there; submitting, the
 * schedule, certificates, subscriptions, withdrawals and (demo) deposits
 * work.
 */
import { fromHex } from './codec.js';
import { SealbatchError } from './errors.js';
import { StreamTransport, type StreamTransportOptions } from './stream.js';

/** What `GET /webtransport` answers. */
export interface WebTransportInfo {
  /** The session URL, `https://ADDRESS/sealbatch`. */
  url: string;
  /** SHA-256 hashes (hex) of the certificates to accept, current first. */
  certificate_hashes: string[];
  /** The sequencer's Ed25519 key (hex), as this node states it: pin it where you can. */
  sequencer_key: string;
}

/** Fetches the WebTransport details from a node's HTTP listener (`base`: e.g. `http://127.0.0.1:9433`, or '' for this page's origin). */
export async function fetchWebTransportInfo(base = ''): Promise<WebTransportInfo> {
  const res = await fetch(`${base}/webtransport`, { cache: 'no-store' });
  if (!res.ok) throw new SealbatchError('Refused', `GET /webtransport: ${res.status}`);
  const info = (await res.json()) as WebTransportInfo;
  if (typeof info.url !== 'string' || !Array.isArray(info.certificate_hashes) || typeof info.sequencer_key !== 'string') {
    throw new SealbatchError('Invalid', 'GET /webtransport: not the expected fields');
  }
  return info;
}

/** An open WebTransport session and the stream transport on its first bidirectional stream. */
export interface WebTransportConnection {
  /** Requests and pushes over the session's stream. */
  transport: StreamTransport;
  /** Closes the session. */
  close(): void;
}

/**
 * Opens a session to `info.url` accepting only the certificates whose hashes
 * `info` lists, and one bidirectional stream on it. Needs a runtime with
 * WebTransport (browsers; Node.js 20 has none).
 */
export async function connectWebTransport(info: WebTransportInfo, opts: StreamTransportOptions = {}): Promise<WebTransportConnection> {
  const WT = (globalThis as { WebTransport?: typeof WebTransport }).WebTransport;
  if (WT === undefined) throw new SealbatchError('Refused', 'this runtime has no WebTransport');
  if (!info.certificate_hashes.every((h) => /^[0-9a-f]{64}$/.test(h))) {
    throw new SealbatchError('Invalid', 'a certificate hash is not 64 lowercase hex digits');
  }
  const session = new WT(info.url, {
    serverCertificateHashes: info.certificate_hashes.map((h) => ({ algorithm: 'sha-256', value: fromHex(h) as Uint8Array<ArrayBuffer> })),
  });
  let stream: WebTransportBidirectionalStream;
  try {
    await session.ready;
    stream = await session.createBidirectionalStream();
  } catch (err) {
    session.close();
    throw new SealbatchError('Refused', `webtransport: ${String(err)}`);
  }
  return {
    transport: new StreamTransport(stream, opts),
    close: () => session.close(),
  };
}
