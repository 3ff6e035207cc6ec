/**
 * The wire protocol, version 4 (spec/wire.md): frames (§3), every client →
 * server (§4) and server → client (§5) message, the bounds of §6, and the
 * signing messages of the schedule and of signed requests.
 *
 * Decoding is strict and canonical: a frame that decodes re-encodes to the
 * same bytes, and every deviation throws a {@link SealbatchError} naming the
 * field and its byte offset from the start of the frame.
 */
import { Reader, Writer, concat, dom, expectLen, toHex, u32le, u64le, utf8 } from './codec.js';
import { decodePoint, publicKeyOf as publicKey, sign, verifyStrict } from './crypto.js';
import { SealbatchError } from './errors.js';
import { ENVELOPE_LEN_MAX } from './envelope.js';
import {
  encodeAttestations,
  encodeCertificate,
  encodeCommittee,
  readAttestations,
  readCertificate,
  readCommittee,
  type Committee,
  type ReleaseAttestation,
  type WindowCertificate,
} from './keyper.js';
import { PROOF_LEN_MAX } from './merkle.js';
import { RECEIPT_LEN_MAX, decodeReceipt, decodeSeal, encodeReceipt, encodeSeal, type Receipt, type Seal } from './receipt.js';

/** The ALPN of this protocol version. */
export const ALPN = 'sealbatch/5';
/** The protocol version. */
export const PROTOCOL_VERSION = 5;
/** The TLS exporter label of the channel binding (spec/wire.md §2). */
export const CHANNEL_BINDING_LABEL = 'EXPORTER-sealbatch-channel-binding';
/** Bytes of the length prefix. */
export const LEN_PREFIX_LEN = 4;
/** Largest `len` of a client → server frame. */
export const CLIENT_FRAME_LEN_MAX = 16384;
/** Largest `len` of a server → client frame. */
export const FRAME_LEN_MAX = 4194304;
/** `Rejected.message`, `Error.message`, in bytes. */
export const TEXT_LEN_MAX = 1024;
/** Announced keys in a schedule. */
export const SCHEDULE_BATCH_KEYS_MAX = 256;
/** Markets in a schedule, market lines in a `BatchCleared`. */
export const WIRE_MARKETS_MAX = 4096;
/** Replicas in a schedule. */
export const SCHEDULE_REPLICAS_MAX = 64;
/** A replica's address, in bytes. */
export const REPLICA_ADDRESS_LEN_MAX = 255;
/** Proofs in a `BatchSealed`, own envelopes in a `BatchCleared`. */
export const SUBSCRIBER_ENVELOPES_MAX = 1024;
/** Fills of one own envelope. */
export const FILLS_MAX = 256;
/** Balances in an `Account`. */
export const ACCOUNT_BALANCES_MAX = 4096;
/** Withdrawals in a `Payouts`. */
export const PAYOUTS_MAX = 1024;
/** A deposit's or payout's reference, in bytes. */
export const REFERENCE_LEN_MAX = 64;
/** A withdrawal's destination, in bytes. */
export const DESTINATION_LEN_MAX = 64;
/** Certificates in a `KeyCertificates`. */
export const KEY_CERTIFICATES_MAX = 256;
/** Bytes of one market in a schedule. */
export const MARKET_INFO_LEN = 54;

/** Client → server type bytes. */
export const ClientType = {
  GetSchedule: 0x01,
  Submit: 0x02,
  Subscribe: 0x03,
  GetAccount: 0x04,
  Deposit: 0x05,
  Withdraw: 0x06,
  OperatorDeposit: 0x07,
  GetPayouts: 0x08,
  AcknowledgePayout: 0x09,
  GetKeyCertificates: 0x0a,
} as const;

/** Server → client type bytes. */
export const ServerType = {
  Schedule: 0x81,
  Receipt: 0x82,
  Rejected: 0x83,
  BatchOpened: 0x84,
  BatchSealed: 0x85,
  BatchCleared: 0x86,
  Account: 0x87,
  Ack: 0x88,
  Error: 0x89,
  Withdrawn: 0x8a,
  Payouts: 0x8b,
  KeyCertificates: 0x8c,
} as const;

/** Reason codes of `Rejected` and `Error` (spec/wire.md §5). */
export const ReasonCode = {
  Malformed: 1,
  BatchClosed: 2,
  NotAnnounced: 3,
  BatchFull: 4,
  Duplicate: 5,
  Busy: 6,
  Protocol: 7,
  ConnectionQuota: 8,
  OperatorOnly: 9,
  InvalidRequest: 10,
  Internal: 11,
  Unauthorized: 12,
  Replayed: 13,
  NotLeader: 14,
} as const;

/** A reason code value (1–14). */
export type ReasonCodeValue = (typeof ReasonCode)[keyof typeof ReasonCode];

/** The direction of a frame: which type bytes and which size bound apply. */
export type Direction = 'client' | 'server';

// ---------------------------------------------------------------------------
// Messages

/** A client → server message. */
export type ClientMessage =
  | { type: 'GetSchedule'; requestId: bigint }
  | { type: 'Submit'; requestId: bigint; envelope: Uint8Array }
  | { type: 'Subscribe'; requestId: bigint }
  | { type: 'GetAccount'; requestId: bigint; account: Uint8Array; requester: Uint8Array; signature: Uint8Array }
  | { type: 'Deposit'; requestId: bigint; account: Uint8Array; asset: number; amount: bigint }
  | {
      type: 'Withdraw';
      requestId: bigint;
      account: Uint8Array;
      asset: number;
      amount: bigint;
      sequence: bigint;
      destination: Uint8Array;
      signature: Uint8Array;
    }
  | {
      type: 'OperatorDeposit';
      requestId: bigint;
      operator: Uint8Array;
      account: Uint8Array;
      asset: number;
      amount: bigint;
      reference: Uint8Array;
      signature: Uint8Array;
    }
  | { type: 'GetPayouts'; requestId: bigint; after: bigint; requester: Uint8Array; signature: Uint8Array }
  | { type: 'AcknowledgePayout'; requestId: bigint; operator: Uint8Array; withdrawal: bigint; reference: Uint8Array; signature: Uint8Array }
  | { type: 'GetKeyCertificates'; requestId: bigint };

/** A market as a schedule lists it (54 bytes). */
export interface MarketInfo {
  /** Market id. */
  id: number;
  /** Base asset id. */
  baseAsset: number;
  /** Quote asset id. */
  quoteAsset: number;
  /** Tick size. */
  tickSize: bigint;
  /** Lot size. */
  lotSize: bigint;
  /** Lowest price of the band, in ticks. */
  bandMin: bigint;
  /** Highest price of the band, in ticks. */
  bandMax: bigint;
  /** Reference price, in ticks. */
  referencePrice: bigint;
  /** Fee in basis points (u16). */
  feeBps: number;
}

/** A replica of a replicated sequencer, as a schedule lists it. */
export interface ReplicaInfo {
  /** Replica id. */
  id: bigint;
  /** `host:port` where its clients connect (1–255 bytes of UTF-8). */
  address: string;
  /** SHA-256 of its certificate. */
  fingerprint: Uint8Array;
}

/** The signed schedule. */
export interface Schedule {
  /** The request it answers (not signed). */
  requestId: bigint;
  /** Unix time (ms) at which batch 0 opens. */
  genesisMs: bigint;
  /** Batch length (ms). */
  batchLengthMs: bigint;
  /** The batch open when the schedule was made. */
  openBatch: bigint;
  /** The sequencer's Ed25519 key. */
  sequencerKey: Uint8Array;
  /** Announced batch keys. */
  batchKeys: { e: bigint; key: Uint8Array }[];
  /** Markets. */
  markets: MarketInfo[];
  /** Replicas, ascending by id. */
  replicas: ReplicaInfo[];
  /** The sequencer's signature over {@link scheduleSigningMessage}. */
  signature: Uint8Array;
}

/** A market line of a `BatchCleared`. */
export interface MarketLine {
  /** Market id. */
  market: number;
  /** Clearing price in ticks, `null` if nothing crossed. */
  price: bigint | null;
  /** Volume in lots. */
  volume: bigint;
  /** Imbalance (demand − supply), lots, signed. */
  imbalance: bigint;
}

/** One of the subscriber's envelopes in a `BatchCleared`. */
export interface OwnEnvelope {
  /** Its commitment. */
  commitment: Uint8Array;
  /** 0 accepted, else the status code of spec/sequencer.md. */
  status: number;
  /** The status's detail. */
  detail: number;
  /** Orders of the bundle with a fill, ascending index. */
  fills: { index: number; filled: bigint }[];
}

/** A `BatchCleared` push. */
export interface BatchCleared {
  /** The batch. */
  e: bigint;
  /** The seal's Merkle root. */
  root: Uint8Array;
  /** The released `s_e` (32 bytes). */
  batchSecret: Uint8Array;
  /** The keypers' release attestations (empty for the embedded custodian). */
  release: ReleaseAttestation[];
  /** Envelopes in the batch (the seal's count). */
  envelopes: number;
  /** Envelopes accepted. */
  accepted: number;
  /** One line per configured market, ascending id. */
  markets: MarketLine[];
  /** The subscriber's envelopes, ascending commitment. */
  own: OwnEnvelope[];
}

/** A withdrawal awaiting payout, with the trader's signed request. */
export interface PendingWithdrawal {
  /** Withdrawal id. */
  id: bigint;
  /** Account. */
  account: Uint8Array;
  /** Asset id. */
  asset: number;
  /** Amount, in units. */
  amount: bigint;
  /** The account's withdrawal number. */
  sequence: bigint;
  /** Destination (1–64 bytes). */
  destination: Uint8Array;
  /** The account's signature over {@link withdrawalMessage}. */
  signature: Uint8Array;
}

/** A server → client message. */
export type ServerMessage =
  | ({ type: 'Schedule' } & Schedule)
  | { type: 'Receipt'; requestId: bigint; receipt: Receipt }
  | { type: 'Rejected'; requestId: bigint; code: ReasonCodeValue; nextOpen: bigint; retryAfterMs: number; message: string }
  | { type: 'BatchOpened'; e: bigint; publicKey: Uint8Array; closeMs: bigint }
  | { type: 'BatchSealed'; seal: Seal; proofs: { commitment: Uint8Array; proof: Uint8Array }[] }
  | ({ type: 'BatchCleared' } & BatchCleared)
  | { type: 'Account'; requestId: bigint; account: Uint8Array; nextWithdrawal: bigint; balances: { asset: number; balance: bigint }[] }
  | { type: 'Ack'; requestId: bigint }
  | { type: 'Error'; requestId: bigint; code: ReasonCodeValue; message: string }
  | { type: 'Withdrawn'; requestId: bigint; id: bigint }
  | { type: 'Payouts'; requestId: bigint; withdrawals: PendingWithdrawal[]; more: boolean }
  | { type: 'KeyCertificates'; requestId: bigint; committee: Committee | null; certificates: WindowCertificate[] };

// ---------------------------------------------------------------------------
// Frames

function frame(type: number, fields: Uint8Array, max: number): Uint8Array {
  const len = 1 + fields.length;
  if (len > max) throw new SealbatchError('Unencodable', `frame of ${len} bytes over ${max}`);
  return concat(u32le(len), Uint8Array.of(type), fields);
}

function isKnownType(dir: Direction, t: number): boolean {
  return dir === 'client' ? t >= 0x01 && t <= 0x0a : t >= 0x81 && t <= 0x8c;
}

/** The direction's largest `len`. */
export function frameLenMax(dir: Direction): number {
  return dir === 'client' ? CLIENT_FRAME_LEN_MAX : FRAME_LEN_MAX;
}

/**
 * Checks the head of `buf` as a receiver does (§3 steps 1–5) and returns the
 * whole frame's length (`4 + len`), or `null` when more bytes are needed
 * (`Incomplete`). Throws `Empty`, `Oversized` or `UnknownType`.
 */
export function checkFrameHead(dir: Direction, buf: Uint8Array): number | null {
  if (buf.length < 4) return null;
  const len = new Reader(buf).u32('len');
  if (len === 0) throw new SealbatchError('Empty', 'frame length 0', 'len', 0);
  if (len > frameLenMax(dir)) throw new SealbatchError('Oversized', `frame length ${len} over ${frameLenMax(dir)}`, 'len', 0);
  if (buf.length < 5) return null;
  const t = buf[4] as number;
  if (!isKnownType(dir, t)) throw new SealbatchError('UnknownType', `type 0x${t.toString(16).padStart(2, '0')} is not a ${dir} → ${dir === 'client' ? 'server' : 'client'} type`, 'type', 4);
  if (buf.length < 4 + len) return null;
  return 4 + len;
}

function decodeWhole<T>(dir: Direction, buf: Uint8Array, fields: (type: number, r: Reader) => T): T {
  const n = checkFrameHead(dir, buf);
  if (n === null) throw new SealbatchError('Incomplete', `frame incomplete: ${buf.length} bytes`);
  if (buf.length > n) throw new SealbatchError('Trailing', `${buf.length - n} bytes after the frame`, 'frame', n);
  const r = new Reader(buf.subarray(5, n), 5);
  const m = fields(buf[4] as number, r);
  r.end();
  return m;
}

/**
 * Splits a byte stream into frames of one direction. Feed it chunks as they
 * arrive; it returns every complete frame (whole, prefix included) and keeps
 * the rest. It throws at once on an empty, oversized or unknown-type frame,
 * before buffering its body.
 */
export class FrameDecoder {
  private buf: Uint8Array = new Uint8Array(0);

  /** A decoder for frames travelling in direction `dir`. */
  constructor(private readonly dir: Direction) {}

  /** Appends `chunk` and returns the complete frames now available. */
  push(chunk: Uint8Array): Uint8Array[] {
    this.buf = this.buf.length === 0 ? chunk.slice() : concat(this.buf, chunk);
    const out: Uint8Array[] = [];
    for (;;) {
      const n = checkFrameHead(this.dir, this.buf);
      if (n === null) return out;
      out.push(this.buf.slice(0, n));
      this.buf = this.buf.slice(n);
    }
  }

  /** Bytes held that do not make a complete frame yet. */
  get pending(): number {
    return this.buf.length;
  }

  /** Ends the stream: a FIN inside a frame is `Truncated`. */
  finish(): void {
    if (this.buf.length !== 0) throw new SealbatchError('Truncated', `stream ended inside a frame (${this.buf.length} bytes)`);
  }
}

// ---------------------------------------------------------------------------
// Client → server

/** Encodes a client → server message as a whole frame. */
export function encodeClientMessage(m: ClientMessage): Uint8Array {
  const w = new Writer().u64(m.requestId);
  switch (m.type) {
    case 'GetSchedule':
    case 'Subscribe':
    case 'GetKeyCertificates':
      break;
    case 'Submit':
      w.lenBytes(m.envelope, ENVELOPE_LEN_MAX, 'envelope');
      break;
    case 'GetAccount':
      w.fixed(m.account, 32, 'account').fixed(m.requester, 32, 'requester').fixed(m.signature, 64, 'signature');
      break;
    case 'Deposit':
      w.fixed(m.account, 32, 'account').u32(m.asset).u64(m.amount);
      break;
    case 'Withdraw':
      w.fixed(m.account, 32, 'account').u32(m.asset).u64(m.amount).u64(m.sequence);
      w.short(m.destination, DESTINATION_LEN_MAX, 'destination').fixed(m.signature, 64, 'signature');
      break;
    case 'OperatorDeposit':
      w.fixed(m.operator, 32, 'operator').fixed(m.account, 32, 'account').u32(m.asset).u64(m.amount);
      w.short(m.reference, REFERENCE_LEN_MAX, 'reference').fixed(m.signature, 64, 'signature');
      break;
    case 'GetPayouts':
      w.u64(m.after).fixed(m.requester, 32, 'requester').fixed(m.signature, 64, 'signature');
      break;
    case 'AcknowledgePayout':
      w.fixed(m.operator, 32, 'operator').u64(m.withdrawal).short(m.reference, REFERENCE_LEN_MAX, 'reference').fixed(m.signature, 64, 'signature');
      break;
  }
  return frame(ClientType[m.type], w.finish(), CLIENT_FRAME_LEN_MAX);
}

/** Decodes exactly one whole client → server frame. */
export function decodeClientMessage(buf: Uint8Array): ClientMessage {
  return decodeWhole('client', buf, (t, r): ClientMessage => {
    const requestId = r.u64('request_id');
    switch (t) {
      case ClientType.GetSchedule:
        return { type: 'GetSchedule', requestId };
      case ClientType.Subscribe:
        return { type: 'Subscribe', requestId };
      case ClientType.GetKeyCertificates:
        return { type: 'GetKeyCertificates', requestId };
      case ClientType.Submit:
        return { type: 'Submit', requestId, envelope: r.lenBytes(ENVELOPE_LEN_MAX, 'envelope') };
      case ClientType.GetAccount:
        return { type: 'GetAccount', requestId, account: r.take(32, 'account'), requester: r.take(32, 'requester'), signature: r.take(64, 'signature') };
      case ClientType.Deposit:
        return { type: 'Deposit', requestId, account: r.take(32, 'account'), asset: r.u32('asset'), amount: r.u64('amount') };
      case ClientType.Withdraw:
        return {
          type: 'Withdraw',
          requestId,
          account: r.take(32, 'account'),
          asset: r.u32('asset'),
          amount: r.u64('amount'),
          sequence: r.u64('sequence'),
          destination: r.short(DESTINATION_LEN_MAX, 'destination'),
          signature: r.take(64, 'signature'),
        };
      case ClientType.OperatorDeposit:
        return {
          type: 'OperatorDeposit',
          requestId,
          operator: r.take(32, 'operator'),
          account: r.take(32, 'account'),
          asset: r.u32('asset'),
          amount: r.u64('amount'),
          reference: r.short(REFERENCE_LEN_MAX, 'reference'),
          signature: r.take(64, 'signature'),
        };
      case ClientType.GetPayouts:
        return { type: 'GetPayouts', requestId, after: r.u64('after'), requester: r.take(32, 'requester'), signature: r.take(64, 'signature') };
      default:
        return {
          type: 'AcknowledgePayout',
          requestId,
          operator: r.take(32, 'operator'),
          withdrawal: r.u64('withdrawal'),
          reference: r.short(REFERENCE_LEN_MAX, 'reference'),
          signature: r.take(64, 'signature'),
        };
    }
  });
}

// ---------------------------------------------------------------------------
// Server → client

function readCode(r: Reader): ReasonCodeValue {
  const at = r.offset;
  const c = r.u8('code');
  if (c < 1 || c > 14) r.fail('Invalid', 'code', `reason code ${c}`, at);
  return c as ReasonCodeValue;
}

function writeCode(w: Writer, c: number): void {
  if (!Number.isInteger(c) || c < 1 || c > 14) throw new SealbatchError('Unencodable', `reason code ${c}`);
  w.u8(c);
}

function writeText(w: Writer, s: string, what: string): void {
  w.lenBytes(utf8(s), TEXT_LEN_MAX, what);
}

function writeScheduleBody(w: Writer, s: Schedule): void {
  w.u64(s.genesisMs).u64(s.batchLengthMs).u64(s.openBatch).fixed(s.sequencerKey, 32, 'sequencer key');
  if (s.batchKeys.length > SCHEDULE_BATCH_KEYS_MAX) throw new SealbatchError('Unencodable', 'too many batch keys');
  w.u32(s.batchKeys.length);
  for (const k of s.batchKeys) w.u64(k.e).fixed(k.key, 32, 'batch key');
  if (s.markets.length > WIRE_MARKETS_MAX) throw new SealbatchError('Unencodable', 'too many markets');
  w.u32(s.markets.length);
  for (const m of s.markets) {
    w.u32(m.id).u32(m.baseAsset).u32(m.quoteAsset).u64(m.tickSize).u64(m.lotSize).u64(m.bandMin).u64(m.bandMax).u64(m.referencePrice).u16(m.feeBps);
  }
  if (s.replicas.length > SCHEDULE_REPLICAS_MAX) throw new SealbatchError('Unencodable', 'too many replicas');
  w.u32(s.replicas.length);
  for (const r of s.replicas) w.u64(r.id).short(utf8(r.address), REPLICA_ADDRESS_LEN_MAX, 'replica address').fixed(r.fingerprint, 32, 'fingerprint');
}

/**
 * `schedule_msg = DOM("sealbatch v1 schedule") ‖ u64le(genesis_ms) ‖
 * u64le(batch_length_ms) ‖ u64le(open_batch) ‖ sequencer_key ‖ u32le(k) ‖ keys
 * ‖ u32le(m) ‖ markets ‖ u32le(r) ‖ replicas`: the schedule's fields without
 * `request_id` and `signature`.
 */
export function scheduleSigningMessage(s: Omit<Schedule, 'requestId' | 'signature'>): Uint8Array {
  const w = new Writer().bytes(dom('sealbatch v1 schedule'));
  writeScheduleBody(w, { ...s, requestId: 0n, signature: new Uint8Array(64) });
  return w.finish();
}

/** Signs a schedule with the sequencer's seed (for tests and tools). */
export function signSchedule(seed: Uint8Array, s: Omit<Schedule, 'signature'>): Schedule {
  return { ...s, signature: sign(seed, scheduleSigningMessage(s)) };
}

/**
 * Verifies a schedule as a client must: its sequencer key is the expected one,
 * its signature verifies strictly over the signing message, and every
 * announced `S_e` decodes (canonical, not the identity). Throws `Untrusted`,
 * `BadSignature` or `BadPoint`.
 */
export function verifySchedule(s: Schedule, expectedSequencerKey: Uint8Array): void {
  if (toHex(s.sequencerKey) !== toHex(expectedSequencerKey)) throw new SealbatchError('Untrusted', 'schedule of another sequencer key');
  if (!verifyStrict(s.signature, scheduleSigningMessage(s), s.sequencerKey)) throw new SealbatchError('BadSignature', 'schedule signature does not verify');
  if (s.batchLengthMs === 0n) throw new SealbatchError('Invalid', 'batch length 0');
  for (const k of s.batchKeys) {
    try {
      decodePoint(k.key);
    } catch {
      throw new SealbatchError('BadPoint', `batch key of ${k.e} does not decode`);
    }
  }
}

/** Encodes a server → client message as a whole frame. */
export function encodeServerMessage(m: ServerMessage): Uint8Array {
  const w = new Writer();
  switch (m.type) {
    case 'Schedule':
      w.u64(m.requestId);
      writeScheduleBody(w, m);
      w.fixed(m.signature, 64, 'signature');
      break;
    case 'Receipt':
      w.u64(m.requestId).lenBytes(encodeReceipt(m.receipt), RECEIPT_LEN_MAX, 'receipt');
      break;
    case 'Rejected':
      w.u64(m.requestId);
      writeCode(w, m.code);
      w.u64(m.nextOpen).u32(m.retryAfterMs);
      writeText(w, m.message, 'message');
      break;
    case 'BatchOpened':
      w.u64(m.e).fixed(m.publicKey, 32, 'public key').u64(m.closeMs);
      break;
    case 'BatchSealed':
      w.bytes(encodeSeal(m.seal));
      if (m.proofs.length > SUBSCRIBER_ENVELOPES_MAX) throw new SealbatchError('Unencodable', 'too many proofs');
      w.u32(m.proofs.length);
      for (const p of m.proofs) w.fixed(p.commitment, 32, 'commitment').lenBytes(p.proof, PROOF_LEN_MAX, 'proof');
      break;
    case 'BatchCleared':
      w.u64(m.e).fixed(m.root, 32, 'root').fixed(m.batchSecret, 32, 'batch secret');
      encodeAttestations(w, m.release);
      w.u32(m.envelopes).u32(m.accepted);
      if (m.markets.length > WIRE_MARKETS_MAX || m.own.length > SUBSCRIBER_ENVELOPES_MAX) throw new SealbatchError('Unencodable', 'too many entries');
      w.u32(m.markets.length);
      for (const l of m.markets) w.u32(l.market).optionU64(l.price).u64(l.volume).i128(l.imbalance);
      w.u32(m.own.length);
      for (const o of m.own) {
        w.fixed(o.commitment, 32, 'commitment').u8(o.status).u32(o.detail);
        if (o.fills.length > FILLS_MAX) throw new SealbatchError('Unencodable', 'too many fills');
        w.u32(o.fills.length);
        for (const f of o.fills) w.u16(f.index).u64(f.filled);
      }
      break;
    case 'Account':
      w.u64(m.requestId).fixed(m.account, 32, 'account').u64(m.nextWithdrawal);
      if (m.balances.length > ACCOUNT_BALANCES_MAX) throw new SealbatchError('Unencodable', 'too many balances');
      w.u32(m.balances.length);
      for (const b of m.balances) w.u32(b.asset).u64(b.balance);
      break;
    case 'Ack':
      w.u64(m.requestId);
      break;
    case 'Error':
      w.u64(m.requestId);
      writeCode(w, m.code);
      writeText(w, m.message, 'message');
      break;
    case 'Withdrawn':
      w.u64(m.requestId).u64(m.id);
      break;
    case 'Payouts':
      w.u64(m.requestId);
      if (m.withdrawals.length > PAYOUTS_MAX) throw new SealbatchError('Unencodable', 'too many withdrawals');
      w.u32(m.withdrawals.length);
      for (const x of m.withdrawals) {
        w.u64(x.id).fixed(x.account, 32, 'account').u32(x.asset).u64(x.amount).u64(x.sequence);
        w.short(x.destination, DESTINATION_LEN_MAX, 'destination').fixed(x.signature, 64, 'signature');
      }
      w.u8(m.more ? 1 : 0);
      break;
    case 'KeyCertificates':
      w.u64(m.requestId);
      if (m.committee === null) w.u8(0);
      else w.u8(1).bytes(encodeCommittee(m.committee));
      if (m.certificates.length > KEY_CERTIFICATES_MAX) throw new SealbatchError('Unencodable', 'too many certificates');
      w.u32(m.certificates.length);
      for (const c of m.certificates) w.bytes(encodeCertificate(c));
      break;
  }
  return frame(ServerType[m.type], w.finish(), FRAME_LEN_MAX);
}

function readSchedule(r: Reader): Schedule {
  const requestId = r.u64('request_id');
  const genesisMs = r.u64('genesis_ms');
  const batchLengthMs = r.u64('batch_length_ms');
  const openBatch = r.u64('open_batch');
  const sequencerKey = r.take(32, 'sequencer_key');
  const batchKeys: Schedule['batchKeys'] = [];
  for (let i = 0, n = r.count(SCHEDULE_BATCH_KEYS_MAX, 'batch_keys'); i < n; i++) {
    batchKeys.push({ e: r.u64('batch_key.e'), key: r.take(32, 'batch_key.key') });
  }
  const markets: MarketInfo[] = [];
  for (let i = 0, n = r.count(WIRE_MARKETS_MAX, 'markets'); i < n; i++) {
    markets.push({
      id: r.u32('market.id'),
      baseAsset: r.u32('market.base_asset'),
      quoteAsset: r.u32('market.quote_asset'),
      tickSize: r.u64('market.tick_size'),
      lotSize: r.u64('market.lot_size'),
      bandMin: r.u64('market.band_min'),
      bandMax: r.u64('market.band_max'),
      referencePrice: r.u64('market.reference_price'),
      feeBps: r.u16('market.fee_bps'),
    });
  }
  const replicas: ReplicaInfo[] = [];
  for (let i = 0, n = r.count(SCHEDULE_REPLICAS_MAX, 'replicas'); i < n; i++) {
    const id = r.u64('replica.id');
    const at = r.offset;
    const a = r.short(REPLICA_ADDRESS_LEN_MAX, 'replica.address');
    let address = '';
    try {
      address = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(a);
    } catch {
      r.fail('Invalid', 'replica.address', 'not UTF-8', at);
    }
    replicas.push({ id, address, fingerprint: r.take(32, 'replica.fingerprint') });
  }
  return { requestId, genesisMs, batchLengthMs, openBatch, sequencerKey, batchKeys, markets, replicas, signature: r.take(64, 'signature') };
}

function readCleared(r: Reader): BatchCleared {
  const e = r.u64('e');
  const root = r.take(32, 'root');
  const batchSecret = r.take(32, 'batch_secret');
  const release = readAttestations(r);
  const envelopes = r.u32('envelopes');
  const accepted = r.u32('accepted');
  const markets: MarketLine[] = [];
  for (let i = 0, n = r.count(WIRE_MARKETS_MAX, 'markets'); i < n; i++) {
    markets.push({ market: r.u32('market_line.market'), price: r.optionU64('market_line.price'), volume: r.u64('market_line.volume'), imbalance: r.i128('market_line.imbalance') });
  }
  const own: OwnEnvelope[] = [];
  for (let i = 0, n = r.count(SUBSCRIBER_ENVELOPES_MAX, 'own'); i < n; i++) {
    const commitment = r.take(32, 'own.commitment');
    const status = r.u8('own.status');
    const detail = r.u32('own.detail');
    const fills: OwnEnvelope['fills'] = [];
    for (let j = 0, k = r.count(FILLS_MAX, 'own.fills'); j < k; j++) fills.push({ index: r.u16('fill.index'), filled: r.u64('fill.filled') });
    own.push({ commitment, status, detail, fills });
  }
  return { e, root, batchSecret, release, envelopes, accepted, markets, own };
}

/** Decodes exactly one whole server → client frame. */
export function decodeServerMessage(buf: Uint8Array): ServerMessage {
  return decodeWhole('server', buf, (t, r): ServerMessage => {
    switch (t) {
      case ServerType.Schedule:
        return { type: 'Schedule', ...readSchedule(r) };
      case ServerType.Receipt:
        {
          const requestId = r.u64('request_id');
          const at = r.offset;
          const bytes = r.lenBytes(RECEIPT_LEN_MAX, 'receipt');
          let receipt: Receipt;
          try {
            receipt = decodeReceipt(bytes);
          } catch {
            return r.fail('Invalid', 'receipt', 'the receipt\'s length is not the one its sibling count gives', at);
          }
          return { type: 'Receipt', requestId, receipt };
        }
      case ServerType.Rejected:
        return { type: 'Rejected', requestId: r.u64('request_id'), code: readCode(r), nextOpen: r.u64('next_open'), retryAfterMs: r.u32('retry_after_ms'), message: r.text(TEXT_LEN_MAX, 'message') };
      case ServerType.BatchOpened:
        return { type: 'BatchOpened', e: r.u64('e'), publicKey: r.take(32, 'public_key'), closeMs: r.u64('close_ms') };
      case ServerType.BatchSealed: {
        const seal = decodeSeal(r.take(108, 'seal'));
        const proofs: { commitment: Uint8Array; proof: Uint8Array }[] = [];
        for (let i = 0, n = r.count(SUBSCRIBER_ENVELOPES_MAX, 'proofs'); i < n; i++) {
          proofs.push({ commitment: r.take(32, 'proof.commitment'), proof: r.lenBytes(PROOF_LEN_MAX, 'proof') });
        }
        return { type: 'BatchSealed', seal, proofs };
      }
      case ServerType.BatchCleared:
        return { type: 'BatchCleared', ...readCleared(r) };
      case ServerType.Account: {
        const requestId = r.u64('request_id');
        const account = r.take(32, 'account');
        const nextWithdrawal = r.u64('next_withdrawal');
        const balances: { asset: number; balance: bigint }[] = [];
        for (let i = 0, n = r.count(ACCOUNT_BALANCES_MAX, 'balances'); i < n; i++) balances.push({ asset: r.u32('asset'), balance: r.u64('balance') });
        return { type: 'Account', requestId, account, nextWithdrawal, balances };
      }
      case ServerType.Ack:
        return { type: 'Ack', requestId: r.u64('request_id') };
      case ServerType.Error:
        return { type: 'Error', requestId: r.u64('request_id'), code: readCode(r), message: r.text(TEXT_LEN_MAX, 'message') };
      case ServerType.Withdrawn:
        return { type: 'Withdrawn', requestId: r.u64('request_id'), id: r.u64('id') };
      case ServerType.Payouts: {
        const requestId = r.u64('request_id');
        const withdrawals: PendingWithdrawal[] = [];
        for (let i = 0, n = r.count(PAYOUTS_MAX, 'withdrawals'); i < n; i++) {
          withdrawals.push({
            id: r.u64('withdrawal.id'),
            account: r.take(32, 'account'),
            asset: r.u32('asset'),
            amount: r.u64('amount'),
            sequence: r.u64('sequence'),
            destination: r.short(DESTINATION_LEN_MAX, 'destination'),
            signature: r.take(64, 'signature'),
          });
        }
        return { type: 'Payouts', requestId, withdrawals, more: r.bool('more') };
      }
      default: {
        const requestId = r.u64('request_id');
        const at = r.offset;
        const flag = r.u8('committee flag');
        if (flag > 1) r.fail('Invalid', 'committee flag', `flag ${flag}`, at);
        const committee = flag === 1 ? readCommittee(r) : null;
        const certificates: WindowCertificate[] = [];
        for (let i = 0, n = r.count(KEY_CERTIFICATES_MAX, 'certificates'); i < n; i++) certificates.push(readCertificate(r));
        return { type: 'KeyCertificates', requestId, committee, certificates };
      }
    }
  });
}

/** The request id a server message answers, or `null` for a push. */
export function replyRequestId(m: ServerMessage): bigint | null {
  return 'requestId' in m ? m.requestId : null;
}

// ---------------------------------------------------------------------------
// Signed requests

/** `query = u8(1) ‖ account` for `GetAccount`. */
export function accountQuery(account: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(1), expectLen(account, 32, 'account'));
}

/** `query = u8(2) ‖ u64le(after)` for `GetPayouts`. */
export function payoutsQuery(after: bigint): Uint8Array {
  return concat(Uint8Array.of(2), u64le(after));
}

/** `query_msg = DOM("sealbatch v1 query") ‖ sequencer_key ‖ channel_binding ‖ requester ‖ query`. */
export function queryMessage(sequencerKey: Uint8Array, channelBinding: Uint8Array, requester: Uint8Array, query: Uint8Array): Uint8Array {
  return concat(dom('sealbatch v1 query'), expectLen(sequencerKey, 32, 'sequencer key'), expectLen(channelBinding, 32, 'channel binding'), expectLen(requester, 32, 'requester'), query);
}

/**
 * `withdrawal_msg = DOM("sealbatch v1 withdrawal") ‖ sequencer_key ‖ account ‖
 * u32le(asset) ‖ u64le(amount) ‖ u64le(sequence) ‖ u8(len) ‖ destination`.
 */
export function withdrawalMessage(sequencerKey: Uint8Array, account: Uint8Array, asset: number, amount: bigint, sequence: bigint, destination: Uint8Array): Uint8Array {
  return new Writer()
    .bytes(dom('sealbatch v1 withdrawal'))
    .fixed(sequencerKey, 32, 'sequencer key')
    .fixed(account, 32, 'account')
    .u32(asset)
    .u64(amount)
    .u64(sequence)
    .short(destination, DESTINATION_LEN_MAX, 'destination')
    .finish();
}

/**
 * `deposit_msg = DOM("sealbatch v1 operator deposit") ‖ sequencer_key ‖
 * operator ‖ account ‖ u32le(asset) ‖ u64le(amount) ‖ u8(len) ‖ reference`.
 */
export function operatorDepositMessage(sequencerKey: Uint8Array, operator: Uint8Array, account: Uint8Array, asset: number, amount: bigint, reference: Uint8Array): Uint8Array {
  return new Writer()
    .bytes(dom('sealbatch v1 operator deposit'))
    .fixed(sequencerKey, 32, 'sequencer key')
    .fixed(operator, 32, 'operator')
    .fixed(account, 32, 'account')
    .u32(asset)
    .u64(amount)
    .short(reference, REFERENCE_LEN_MAX, 'reference')
    .finish();
}

/** `payout_msg = DOM("sealbatch v1 payout") ‖ sequencer_key ‖ operator ‖ u64le(withdrawal) ‖ u8(len) ‖ reference`. */
export function payoutMessage(sequencerKey: Uint8Array, operator: Uint8Array, withdrawal: bigint, reference: Uint8Array): Uint8Array {
  return new Writer()
    .bytes(dom('sealbatch v1 payout'))
    .fixed(sequencerKey, 32, 'sequencer key')
    .fixed(operator, 32, 'operator')
    .u64(withdrawal)
    .short(reference, REFERENCE_LEN_MAX, 'reference')
    .finish();
}

/** A signed `GetAccount` for `account`, by the requester's seed, for this connection's channel binding. */
export function signedGetAccount(seed: Uint8Array, requestId: bigint, account: Uint8Array, sequencerKey: Uint8Array, channelBinding: Uint8Array): ClientMessage {
  const requester = publicKey(seed);
  const signature = sign(seed, queryMessage(sequencerKey, channelBinding, requester, accountQuery(account)));
  return { type: 'GetAccount', requestId, account, requester, signature };
}

/** A signed `GetPayouts` (operators only). */
export function signedGetPayouts(seed: Uint8Array, requestId: bigint, after: bigint, sequencerKey: Uint8Array, channelBinding: Uint8Array): ClientMessage {
  const requester = publicKey(seed);
  const signature = sign(seed, queryMessage(sequencerKey, channelBinding, requester, payoutsQuery(after)));
  return { type: 'GetPayouts', requestId, after, requester, signature };
}

/** A `Withdraw` signed by the account's seed. */
export function signedWithdraw(
  seed: Uint8Array,
  requestId: bigint,
  sequencerKey: Uint8Array,
  w: { asset: number; amount: bigint; sequence: bigint; destination: Uint8Array },
): ClientMessage {
  const account = publicKey(seed);
  const signature = sign(seed, withdrawalMessage(sequencerKey, account, w.asset, w.amount, w.sequence, w.destination));
  return { type: 'Withdraw', requestId, account, ...w, signature };
}

/** An `OperatorDeposit` signed by an operator's seed. */
export function signedOperatorDeposit(
  seed: Uint8Array,
  requestId: bigint,
  sequencerKey: Uint8Array,
  d: { account: Uint8Array; asset: number; amount: bigint; reference: Uint8Array },
): ClientMessage {
  const operator = publicKey(seed);
  const signature = sign(seed, operatorDepositMessage(sequencerKey, operator, d.account, d.asset, d.amount, d.reference));
  return { type: 'OperatorDeposit', requestId, operator, ...d, signature };
}

/** An `AcknowledgePayout` signed by an operator's seed. */
export function signedAcknowledgePayout(seed: Uint8Array, requestId: bigint, sequencerKey: Uint8Array, withdrawal: bigint, reference: Uint8Array): ClientMessage {
  const operator = publicKey(seed);
  const signature = sign(seed, payoutMessage(sequencerKey, operator, withdrawal, reference));
  return { type: 'AcknowledgePayout', requestId, operator, withdrawal, reference, signature };
}

/** Whether a pending withdrawal carries its account's valid signature (what a payout process checks). */
export function verifyWithdrawal(w: PendingWithdrawal, sequencerKey: Uint8Array): boolean {
  return verifyStrict(w.signature, withdrawalMessage(sequencerKey, w.account, w.asset, w.amount, w.sequence, w.destination), w.account);
}

