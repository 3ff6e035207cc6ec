/**
 * The one error type the SDK throws for bad input.
 *
 * Every decoder takes untrusted bytes; whatever it refuses it refuses with a
 * {@link SealbatchError} whose `code` says why (and, for wire frames, which field
 * at which byte offset). Nothing is ever returned half-decoded.
 */

/** Machine-readable reasons a {@link SealbatchError} carries. */
export type ErrorCode =
  // Frame and field decoding (spec/wire.md §3).
  | 'Incomplete'
  | 'Empty'
  | 'Oversized'
  | 'UnknownType'
  | 'Truncated'
  | 'Trailing'
  | 'TooLarge'
  | 'Invalid'
  // Encoding refused by an encoder (a value over a bound).
  | 'Unencodable'
  // Keys, scalars and points.
  | 'BadPoint'
  | 'BadScalar'
  | 'BadKey'
  | 'ZeroScalar'
  // Signatures and proofs.
  | 'BadSignature'
  | 'BadProof'
  | 'Mismatch'
  // Envelopes (spec/envelope.md §9, §10): see `rejection` on the error.
  | 'EnvelopeRejected'
  | 'SealMismatch'
  // Trust decisions (schedules, committees, certificates, results).
  | 'Untrusted'
  | 'NotCertified'
  | 'NotReleased'
  // Replies that answer something other than what was asked.
  | 'UnexpectedReply'
  | 'Refused';

/** An error of the sealbatch SDK, with a stable {@link ErrorCode}. */
export class SealbatchError extends Error {
  /** Why the input was refused. */
  readonly code: ErrorCode;
  /** The field being decoded, when a decoder failed on one. */
  readonly field: string | undefined;
  /** Byte offset of that field from the start of the decoded buffer (a frame: including its length prefix). */
  readonly offset: number | undefined;

  /** Builds an error; `field` and `offset` name the place in the input, when there is one. */
  constructor(code: ErrorCode, message: string, field?: string, offset?: number) {
    super(field === undefined ? `${code}: ${message}` : `${code}: ${message} (field ${field} at byte ${offset ?? '?'})`);
    this.name = 'SealbatchError';
    this.code = code;
    this.field = field;
    this.offset = offset;
  }
}

/** Rejection codes of spec/envelope.md §10 ("Rejection codes (stable, for publishing)"). */
export const Rejection = {
  Truncated: 1,
  Oversized: 2,
  BadLength: 3,
  UnknownVersion: 4,
  WrongBatch: 5,
  BadEphemeral: 6,
  AeadFailure: 7,
  Malformed: 8,
  BundleTooLarge: 9,
  BadAccountKey: 10,
  BadSignature: 11,
  DuplicateEnvelope: 12,
  DuplicateNonce: 13,
} as const;

/** One of the numeric envelope rejection codes of spec/envelope.md §10. */
export type RejectionCode = (typeof Rejection)[keyof typeof Rejection];

/** The name of an envelope rejection code, e.g. `rejectionName(7) === 'AeadFailure'`. */
export function rejectionName(code: RejectionCode): string {
  for (const [name, value] of Object.entries(Rejection)) if (value === code) return name;
  return `Rejection${code as number}`;
}

/** An envelope refused by the shape check or by opening; `rejection` is its stable code. */
export class EnvelopeRejectedError extends SealbatchError {
  /** The stable rejection code (spec/envelope.md §10). */
  readonly rejection: RejectionCode;
  /** A human-readable detail (informative; only `rejection` is normative). */
  readonly detail: string;

  /** Builds the error for rejection `rejection` with an informative `detail`. */
  constructor(rejection: RejectionCode, detail: string) {
    super('EnvelopeRejected', `${rejectionName(rejection)}${detail ? ` (${detail})` : ''}`);
    this.name = 'EnvelopeRejectedError';
    this.rejection = rejection;
    this.detail = detail;
  }
}
