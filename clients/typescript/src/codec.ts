/**
 * Byte-level building blocks: hex, little-endian integers, and a bounds-checked
 * reader/writer pair used by every encoder and decoder of the SDK.
 *
 * All integers are little-endian (spec/wire.md §1, spec/envelope.md §1); u64 and
 * wider values are `bigint`.
 */
import { SealbatchError } from './errors.js';

const U64_MAX = (1n << 64n) - 1n;
const I128_MIN = -(1n << 127n);
const I128_MAX = (1n << 127n) - 1n;

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** Bytes of a hex string (either case, even length); throws `Invalid` otherwise. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new SealbatchError('Invalid', 'not an even-length hex string');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Concatenation of byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Whether two byte arrays are equal (not constant time: for public data). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Lexicographic comparison of byte strings (negative, 0 or positive). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** `u8(len(d)) ‖ d`: a domain string with a one-byte length (spec/envelope.md §1). */
export function dom(domain: string): Uint8Array {
  const d = utf8(domain);
  if (d.length > 255) throw new SealbatchError('Unencodable', 'domain string over 255 bytes');
  return concat(Uint8Array.of(d.length), d);
}

/** A `bytes` value of `n` repetitions of `byte` (handy for fixed fields). */
export function filled(n: number, byte: number): Uint8Array {
  return new Uint8Array(n).fill(byte);
}

/** Integer of little-endian bytes. */
export function leToBigint(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i] as number);
  return v;
}

/** `n` little-endian bytes of a non-negative integer; throws `Unencodable` if it does not fit. */
export function bigintToLe(v: bigint, n: number): Uint8Array {
  if (v < 0n || v >> BigInt(8 * n) !== 0n) throw new SealbatchError('Unencodable', `integer does not fit in ${n} bytes`);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** `u16le(v)`. */
export function u16le(v: number): Uint8Array {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new SealbatchError('Unencodable', 'not a u16');
  return Uint8Array.of(v & 0xff, v >>> 8);
}

/** `u32le(v)`. */
export function u32le(v: number): Uint8Array {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new SealbatchError('Unencodable', 'not a u32');
  return Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
}

/** `u64le(v)`. */
export function u64le(v: bigint): Uint8Array {
  if (v < 0n || v > U64_MAX) throw new SealbatchError('Unencodable', 'not a u64');
  return bigintToLe(v, 8);
}

/** `i128le(v)`, two's complement. */
export function i128le(v: bigint): Uint8Array {
  if (v < I128_MIN || v > I128_MAX) throw new SealbatchError('Unencodable', 'not an i128');
  return bigintToLe(v < 0n ? v + (1n << 128n) : v, 16);
}

/** Checks that `b` is a byte array of exactly `n` bytes (an encoder's precondition). */
export function expectLen(b: Uint8Array, n: number, what: string): Uint8Array {
  if (!(b instanceof Uint8Array) || b.length !== n) {
    throw new SealbatchError('Unencodable', `${what} must be ${n} bytes`);
  }
  return b;
}

/**
 * An append-only byte buffer for encoders. Every method checks its value
 * against the field's type and throws `Unencodable` instead of truncating.
 */
export class Writer {
  private parts: Uint8Array[] = [];
  private n = 0;

  /** Number of bytes written so far. */
  get length(): number {
    return this.n;
  }

  /** Appends raw bytes. */
  bytes(b: Uint8Array): this {
    this.parts.push(b);
    this.n += b.length;
    return this;
  }

  /** Appends a fixed array of exactly `n` bytes. */
  fixed(b: Uint8Array, n: number, what: string): this {
    return this.bytes(expectLen(b, n, what));
  }

  /** Appends a `u8`. */
  u8(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 255) throw new SealbatchError('Unencodable', 'not a u8');
    return this.bytes(Uint8Array.of(v));
  }

  /** Appends a `u16le`. */
  u16(v: number): this {
    return this.bytes(u16le(v));
  }

  /** Appends a `u32le`. */
  u32(v: number): this {
    return this.bytes(u32le(v));
  }

  /** Appends a `u64le`. */
  u64(v: bigint): this {
    return this.bytes(u64le(v));
  }

  /** Appends an `i128le`. */
  i128(v: bigint): this {
    return this.bytes(i128le(v));
  }

  /** Appends `u32le(len) ‖ b` with `len ≤ max` (`bytes(max)` of spec/wire.md §1). */
  lenBytes(b: Uint8Array, max: number, what: string): this {
    if (b.length > max) throw new SealbatchError('Unencodable', `${what} over ${max} bytes`);
    return this.u32(b.length).bytes(b);
  }

  /** Appends `u8(len) ‖ b` with `1 ≤ len ≤ max` (`short(max)` of spec/wire.md §4). */
  short(b: Uint8Array, max: number, what: string): this {
    if (b.length < 1 || b.length > max) throw new SealbatchError('Unencodable', `${what} must be 1..=${max} bytes`);
    return this.u8(b.length).bytes(b);
  }

  /** Appends `option<u64>`: `0`, or `1 ‖ u64le(v)`. */
  optionU64(v: bigint | null): this {
    return v === null ? this.u8(0) : this.u8(1).u64(v);
  }

  /** The bytes written. */
  finish(): Uint8Array {
    return concat(...this.parts);
  }
}

/**
 * A cursor over untrusted bytes. Every read checks bounds and throws a
 * {@link SealbatchError} naming the field and its byte offset (relative to
 * `base`, so a frame's fields are named from the start of the frame).
 */
export class Reader {
  private pos = 0;

  /**
   * Reads `buf`; `base` is added to every reported offset (e.g. 5 for the fields
   * of a frame after its length prefix and type byte).
   */
  constructor(
    private readonly buf: Uint8Array,
    private readonly base = 0,
  ) {}

  /** Bytes not read yet. */
  get remaining(): number {
    return this.buf.length - this.pos;
  }

  /** Offset of the next byte, as reported in errors. */
  get offset(): number {
    return this.base + this.pos;
  }

  /** Throws `code` for `field` at the current offset. */
  fail(code: 'Truncated' | 'Trailing' | 'TooLarge' | 'Invalid', field: string, message: string, at = this.offset): never {
    throw new SealbatchError(code, message, field, at);
  }

  /** Reads `n` bytes (a copy). */
  take(n: number, field: string): Uint8Array {
    if (n > this.remaining) this.fail('Truncated', field, `needs ${n} bytes, ${this.remaining} left`);
    const out = this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Reads a `u8`. */
  u8(field: string): number {
    return this.take(1, field)[0] as number;
  }

  /** Reads a `u16le`. */
  u16(field: string): number {
    const b = this.take(2, field);
    return (b[0] as number) | ((b[1] as number) << 8);
  }

  /** Reads a `u32le`. */
  u32(field: string): number {
    const b = this.take(4, field);
    return ((b[0] as number) | ((b[1] as number) << 8) | ((b[2] as number) << 16)) + (b[3] as number) * 0x1000000;
  }

  /** Reads a `u64le`. */
  u64(field: string): bigint {
    return leToBigint(this.take(8, field));
  }

  /** Reads an `i128le` (two's complement). */
  i128(field: string): bigint {
    const v = leToBigint(this.take(16, field));
    return v >= 1n << 127n ? v - (1n << 128n) : v;
  }

  /** Reads a `u8` that must be 0 or 1. */
  bool(field: string): boolean {
    const at = this.offset;
    const v = this.u8(field);
    if (v > 1) this.fail('Invalid', field, `tag ${v} is neither 0 nor 1`, at);
    return v === 1;
  }

  /** Reads `option<u64>` (tag 0 or 1; any other tag is `Invalid`). */
  optionU64(field: string): bigint | null {
    return this.bool(field) ? this.u64(field) : null;
  }

  /** Reads a `u32le` count of entries and checks it against `max` (`TooLarge`). */
  count(max: number, field: string): number {
    const at = this.offset;
    const n = this.u32(field);
    if (n > max) this.fail('TooLarge', field, `count ${n} over ${max}`, at);
    return n;
  }

  /** Reads `bytes(max)`: a `u32le` length (at most `max`, else `TooLarge`) and the bytes. */
  lenBytes(max: number, field: string): Uint8Array {
    const at = this.offset;
    const n = this.u32(field);
    if (n > max) this.fail('TooLarge', field, `length ${n} over ${max}`, at);
    return this.take(n, field);
  }

  /** Reads `text(max)`: `bytes(max)` holding UTF-8 (bad UTF-8 is `Invalid`). */
  text(max: number, field: string): string {
    const at = this.offset;
    const b = this.lenBytes(max, field);
    return decodeUtf8(b, () => this.fail('Invalid', field, 'not UTF-8', at));
  }

  /** Reads `short(max)`: a `u8` length in `1..=max` (else `Invalid`) and the bytes. */
  short(max: number, field: string): Uint8Array {
    const at = this.offset;
    const n = this.u8(field);
    if (n === 0 || n > max) this.fail('Invalid', field, `short length ${n} not in 1..=${max}`, at);
    return this.take(n, field);
  }

  /** Requires that every byte was read (`Trailing` otherwise). */
  end(what = 'end'): void {
    if (this.remaining !== 0) this.fail('Trailing', what, `${this.remaining} bytes after the last field`);
  }
}

/** Strict UTF-8 decoding; calls `onError` (which must throw) on invalid input. */
export function decodeUtf8(b: Uint8Array, onError: () => never): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(b);
  } catch {
    return onError();
  }
}
