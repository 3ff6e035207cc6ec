/**
 * A trader's client over any transport: it asks for the signed schedule and
 * the keyper certificates, keeps only trusted batch keys, seals and submits
 * bundles and verifies their receipts, checks seals, inclusion proofs and
 * cleared results, and makes signed account queries and withdrawals.
 *
 * The SDK ships no network transport: plug one in through {@link Transport}.
 */
import { bytesEqual, toHex } from './codec.js';
import { publicKeyOf } from './crypto.js';
import { SealbatchError } from './errors.js';
import { checkBatchSecret, deploymentId, sealBundle, signBundle, type Order, type Sealed } from './envelope.js';
import { certifiedKeys, committeeId, provesRelease, servesDeployment, type Committee, type WindowCertificate } from './keyper.js';
import { decodeProof, verifyProof } from './merkle.js';
import { ReceiptChecker, verifySeal, type Receipt, type Seal } from './receipt.js';
import {
  decodeServerMessage,
  encodeClientMessage,
  signedGetAccount,
  signedWithdraw,
  verifySchedule,
  type BatchCleared,
  type ClientMessage,
  type Schedule,
  type ServerMessage,
} from './wire.js';

/**
 * What carries frames to the sequencer and back. `send` writes one encoded
 * client → server frame and resolves with the server's reply frame to it
 * (matched by request id; pushes are the transport's to deliver elsewhere).
 * A transport over QUIC/TLS 1.3 also exposes the connection's channel binding
 * (the TLS exporter of spec/wire.md §2), which signed queries need.
 */
export interface Transport {
  /** Sends one whole frame and resolves with the whole reply frame. */
  send(frame: Uint8Array): Promise<Uint8Array>;
  /** The connection's 32-byte channel binding, when the transport has one. */
  channelBinding?(): Uint8Array;
}

/**
 * Whose batch keys to trust: `operator` takes the schedule's keys as signed
 * (trusted-operator mode only: refuses a committee); `named` trusts whatever
 * committee the sequencer names (or none); `committee` pins a committee id
 * and refuses any other committee and trusted-operator mode.
 */
export type KeyTrust = { mode: 'operator' } | { mode: 'named' } | { mode: 'committee'; committeeId: Uint8Array };

/** A verified schedule with the batch keys a client may seal to. */
export interface TrustedSchedule {
  /** The verified schedule, as sent. */
  schedule: Schedule;
  /** Its deployment id. */
  deploymentId: Uint8Array;
  /** The committee that certifies the keys, or `null` in trusted-operator mode. */
  committee: Committee | null;
  /** The keys the client may seal to, by batch. */
  keys: Map<bigint, Uint8Array>;
}

/**
 * Applies the key-trust rules of spec/wire.md §4 (`GetKeyCertificates`) to a
 * verified schedule: a committee must serve the schedule's deployment, a
 * pinned committee must be the named one, and only schedule keys that a
 * certificate valid for the committee lists for that batch are kept.
 */
export function trustedKeys(schedule: Schedule, committee: Committee | null, certificates: WindowCertificate[], trust: KeyTrust): TrustedSchedule {
  const dep = deploymentId(schedule.sequencerKey, schedule.genesisMs, schedule.batchLengthMs);
  const keys = new Map<bigint, Uint8Array>();
  if (committee === null) {
    if (trust.mode === 'committee') throw new SealbatchError('Untrusted', 'pinned to a committee, but the sequencer runs in trusted-operator mode');
    for (const k of schedule.batchKeys) keys.set(k.e, k.key);
    return { schedule, deploymentId: dep, committee, keys };
  }
  if (trust.mode === 'operator') throw new SealbatchError('Untrusted', 'expected trusted-operator mode, the sequencer names a committee');
  if (!servesDeployment(committee, schedule.sequencerKey, schedule.genesisMs, schedule.batchLengthMs)) {
    throw new SealbatchError('Untrusted', 'the committee is bound to another deployment');
  }
  if (trust.mode === 'committee' && !bytesEqual(committeeId(committee), trust.committeeId)) {
    throw new SealbatchError('Untrusted', `committee ${toHex(committeeId(committee))} is not the pinned one`);
  }
  const certified = certifiedKeys(committee, certificates);
  for (const k of schedule.batchKeys) {
    if ((certified.get(k.e) ?? []).some((c) => bytesEqual(c, k.key))) keys.set(k.e, k.key);
  }
  return { schedule, deploymentId: dep, committee, keys };
}

/**
 * Checks a `BatchCleared` as spec/wire.md §5 requires before showing it: its
 * `root` and `envelopes` are the signed seal's, `s_e·G` is the batch's trusted
 * key, and under a committee it carries at least `t` valid, strictly ascending
 * release attestations of this seal. Throws `NotReleased` or `Mismatch`.
 */
export function verifyBatchCleared(c: BatchCleared, seal: Seal, batchKey: Uint8Array, committee: Committee | null): void {
  if (c.e !== seal.e || c.envelopes !== seal.count || !bytesEqual(c.root, seal.root)) {
    throw new SealbatchError('Mismatch', `result of batch ${c.e} is not for its signed seal`);
  }
  try {
    checkBatchSecret(c.batchSecret, batchKey);
  } catch {
    throw new SealbatchError('Mismatch', `batch secret of ${c.e} is not its key's`);
  }
  if (committee !== null && !provesRelease(committee, c.release, c.e, c.envelopes, c.root)) {
    throw new SealbatchError('NotReleased', `result of batch ${c.e} does not prove its release`);
  }
}

/**
 * Checks a `BatchSealed`: the seal verifies under the sequencer key and each
 * listed commitment's proof leads to its root. Returns the verified seal.
 */
export function verifyBatchSealed(m: { seal: Seal; proofs: { commitment: Uint8Array; proof: Uint8Array }[] }, sequencerKey: Uint8Array): Seal {
  if (!verifySeal(m.seal, sequencerKey)) throw new SealbatchError('BadSignature', `seal of batch ${m.seal.e} does not verify`);
  for (const p of m.proofs) {
    if (!verifyProof(p.commitment, decodeProof(p.proof), m.seal.count, m.seal.root)) {
      throw new SealbatchError('BadProof', `proof of ${toHex(p.commitment)} does not lead to the seal's root`);
    }
  }
  return m.seal;
}

/** Options of a {@link SealbatchClient}. */
export interface ClientOptions {
  /** The sequencer's Ed25519 key, configured or pinned. */
  sequencerKey: Uint8Array;
  /** Whose batch keys to trust (default: `named`). */
  trust?: KeyTrust;
}

/** A request/response client over a {@link Transport}. */
export class SealbatchClient {
  private nextId = 1n;
  private readonly trust: KeyTrust;
  private trusted: TrustedSchedule | null = null;
  /** Checks receipts, each group's signature once. */
  private receipts: ReceiptChecker | undefined;

  /** A client speaking to the sequencer of `opts.sequencerKey` over `transport`. */
  constructor(
    private readonly transport: Transport,
    private readonly opts: ClientOptions,
  ) {
    this.trust = opts.trust ?? { mode: 'named' };
  }

  /** Sends a request (its `requestId` is replaced by a fresh one) and returns the decoded reply; an `Error` reply throws `Refused`. */
  async request(m: ClientMessage): Promise<ServerMessage> {
    const requestId = this.nextId++;
    const reply = decodeServerMessage(await this.transport.send(encodeClientMessage({ ...m, requestId })));
    if (!('requestId' in reply) || reply.requestId !== requestId) throw new SealbatchError('UnexpectedReply', `reply ${reply.type} does not answer request ${requestId}`);
    if (reply.type === 'Error') throw new SealbatchError('Refused', `error ${reply.code}: ${reply.message}`);
    return reply;
  }

  /** Fetches and verifies the schedule and the key certificates, and keeps the trusted keys. */
  async refreshSchedule(): Promise<TrustedSchedule> {
    const s = await this.request({ type: 'GetSchedule', requestId: 0n });
    if (s.type !== 'Schedule') throw new SealbatchError('UnexpectedReply', `${s.type} to GetSchedule`);
    verifySchedule(s, this.opts.sequencerKey);
    let committee: Committee | null = null;
    let certificates: WindowCertificate[] = [];
    if (this.trust.mode !== 'operator') {
      const k = await this.request({ type: 'GetKeyCertificates', requestId: 0n });
      if (k.type !== 'KeyCertificates') throw new SealbatchError('UnexpectedReply', `${k.type} to GetKeyCertificates`);
      committee = k.committee;
      certificates = k.certificates;
    }
    this.trusted = trustedKeys(s, committee, certificates, this.trust);
    return this.trusted;
  }

  /**
   * Signs, seals and submits a bundle for batch `e` (which must have a trusted
   * key), and verifies the receipt: signature, batch and commitment. Resolves
   * with the receipt and the sealed envelope; a `Rejected` throws `Refused`.
   */
  async submit(accountSeed: Uint8Array, e: bigint, nonce: bigint, orders: Order[]): Promise<{ receipt: Receipt; sealed: Sealed }> {
    const t = this.trusted ?? (await this.refreshSchedule());
    const key = t.keys.get(e);
    if (key === undefined) throw new SealbatchError('NotCertified', `no trusted key for batch ${e}`);
    const sealed = sealBundle(signBundle(accountSeed, t.deploymentId, e, nonce, orders), e, key);
    const reply = await this.request({ type: 'Submit', requestId: 0n, envelope: sealed.envelope });
    if (reply.type === 'Rejected') throw new SealbatchError('Refused', `rejected ${reply.code} (next open ${reply.nextOpen}): ${reply.message}`);
    if (reply.type !== 'Receipt') throw new SealbatchError('UnexpectedReply', `${reply.type} to Submit`);
    const r = reply.receipt;
    this.receipts ??= new ReceiptChecker(this.opts.sequencerKey);
    if (!this.receipts.check(r)) throw new SealbatchError('BadSignature', 'receipt does not verify');
    if (r.e !== e || !bytesEqual(r.commitment, sealed.commitment)) throw new SealbatchError('Mismatch', 'receipt for another envelope');
    return { receipt: r, sealed };
  }

  /** A signed `GetAccount` for the account of `seed` (needs the transport's channel binding). */
  async getAccount(seed: Uint8Array, account?: Uint8Array): Promise<Extract<ServerMessage, { type: 'Account' }>> {
    const m = signedGetAccount(seed, 0n, account ?? publicKeyOf(seed), this.opts.sequencerKey, this.binding());
    const reply = await this.request(m);
    if (reply.type !== 'Account') throw new SealbatchError('UnexpectedReply', `${reply.type} to GetAccount`);
    return reply;
  }

  /** A `Withdraw` signed by the account's seed; resolves with the withdrawal id. */
  async withdraw(seed: Uint8Array, w: { asset: number; amount: bigint; sequence: bigint; destination: Uint8Array }): Promise<bigint> {
    const reply = await this.request(signedWithdraw(seed, 0n, this.opts.sequencerKey, w));
    if (reply.type !== 'Withdrawn') throw new SealbatchError('UnexpectedReply', `${reply.type} to Withdraw`);
    return reply.id;
  }

  private binding(): Uint8Array {
    const b = this.transport.channelBinding?.();
    if (b === undefined || b.length !== 32) throw new SealbatchError('Invalid', 'the transport has no channel binding');
    return b;
  }
}
