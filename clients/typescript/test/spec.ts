/**
 * Test helpers that read the vectors from the spec files themselves, so a
 * changed byte in spec/ fails the tests: locating spec/, a JSON parser that
 * keeps integers exact, and extraction of hex blocks from markdown.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The repository's spec/ directory, found by walking up from this file
 * (`SEALBATCH_SPEC_DIR` overrides it, e.g. to check that a changed byte fails).
 */
export function specDir(): string {
  const env = process.env.SEALBATCH_SPEC_DIR;
  if (env) return env;
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(d, 'spec', 'README.md'))) return join(d, 'spec');
    d = dirname(d);
  }
  throw new Error('spec/ not found above the test directory');
}

/** The text of a spec file, e.g. `readSpec('wire.md')`. */
export function readSpec(name: string): string {
  return readFileSync(join(specDir(), name), 'utf8');
}

/** A JSON value with every integer as a `bigint`. */
export type Json = null | boolean | bigint | number | string | Json[] | { [k: string]: Json };

/** Parses JSON keeping integers exact (`bigint`); fractions are refused. */
export function parseJson(text: string): Json {
  let i = 0;
  const ws = () => {
    while (i < text.length && /\s/.test(text[i] as string)) i++;
  };
  const value = (): Json => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const o: { [k: string]: Json } = {};
      ws();
      if (text[i] === '}') {
        i++;
        return o;
      }
      for (;;) {
        ws();
        const k = str();
        ws();
        if (text[i++] !== ':') throw new Error(`bad JSON at ${i}`);
        o[k] = value();
        ws();
        const d = text[i++];
        if (d === '}') return o;
        if (d !== ',') throw new Error(`bad JSON at ${i}`);
      }
    }
    if (c === '[') {
      i++;
      const a: Json[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return a;
      }
      for (;;) {
        a.push(value());
        ws();
        const d = text[i++];
        if (d === ']') return a;
        if (d !== ',') throw new Error(`bad JSON at ${i}`);
      }
    }
    if (c === '"') return str();
    if (text.startsWith('null', i)) {
      i += 4;
      return null;
    }
    if (text.startsWith('true', i)) {
      i += 4;
      return true;
    }
    if (text.startsWith('false', i)) {
      i += 5;
      return false;
    }
    const m = /^-?\d+/.exec(text.slice(i, i + 64));
    if (!m) throw new Error(`bad JSON at ${i}`);
    i += m[0].length;
    if (/[.eE]/.test(text[i] ?? '')) throw new Error('fractions are not expected in the vectors');
    return BigInt(m[0]);
  };
  const str = (): string => {
    if (text[i] !== '"') throw new Error(`expected a string at ${i}`);
    let j = i + 1;
    let out = '';
    while (text[j] !== '"') {
      if (text[j] === '\\') {
        const e = text[j + 1];
        if (e === 'u') {
          out += String.fromCharCode(parseInt(text.slice(j + 2, j + 6), 16));
          j += 6;
          continue;
        }
        out += ({ n: '\n', t: '\t', r: '\r', b: '\b', f: '\f' } as Record<string, string>)[e as string] ?? e;
        j += 2;
        continue;
      }
      out += text[j++];
    }
    i = j + 1;
    return out;
  };
  const v = value();
  ws();
  if (i !== text.length) throw new Error('trailing bytes after JSON');
  return v;
}

/** The text of a markdown section: from the heading starting `## <prefix>` to the next `## `. */
export function section(md: string, headingPrefix: string): string {
  const start = md.indexOf(`\n## ${headingPrefix}`);
  if (start < 0) throw new Error(`section ${headingPrefix} not found`);
  const end = md.indexOf('\n## ', start + 4);
  return md.slice(start, end < 0 ? md.length : end);
}

/**
 * The indented hex blocks of a markdown text (4 or more spaces, lines of hex
 * digits only), each with the prose paragraph before it.
 */
export function hexBlocks(md: string): { before: string; hex: string }[] {
  const lines = md.split('\n');
  const out: { before: string; hex: string }[] = [];
  let prose: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string;
    if (/^ {4,}[0-9a-f]+$/.test(l)) {
      let hex = '';
      while (i < lines.length && /^ {4,}[0-9a-f]+$/.test(lines[i] as string)) hex += (lines[i++] as string).trim();
      i--;
      out.push({ before: prose.join(' '), hex });
      prose = [];
    } else if (l.trim() === '') {
      if (prose.length && !/^\s*$/.test(prose[prose.length - 1] as string)) prose.push('');
    } else prose.push(l.trim());
  }
  return out.map((b) => ({ before: b.before.replace(/\s+/g, ' ').trim(), hex: b.hex }));
}

/** The fenced code blocks (```) of a markdown text, each with the prose before it. */
export function fencedBlocks(md: string): { before: string; body: string }[] {
  const out: { before: string; body: string }[] = [];
  const re = /```[a-z]*\n([\s\S]*?)```/g;
  let last = 0;
  for (let m = re.exec(md); m; m = re.exec(md)) {
    out.push({ before: md.slice(last, m.index).replace(/\s+/g, ' ').trim(), body: m[1] as string });
    last = m.index + m[0].length;
  }
  return out;
}

/** The single hex block whose preceding prose contains `marker` (fails on none or several). */
export function blockAfter(blocks: { before: string; hex: string }[], marker: string): string {
  const hits = blocks.filter((b) => b.before.includes(marker));
  if (hits.length !== 1) throw new Error(`expected one hex block after "${marker}", found ${hits.length}`);
  return (hits[0] as { hex: string }).hex;
}
