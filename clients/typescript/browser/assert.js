// The part of `node:assert/strict` the SDK's tests use, for the browser.
class AssertionError extends Error {
  constructor(message) {
    super(message);
    this.name = 'AssertionError';
  }
}

const show = (v) => {
  try {
    return typeof v === 'bigint' ? `${v}n` : JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? `<${x.length} bytes>` : x));
  } catch {
    return String(v);
  }
};

function deepEqualValues(a, b) {
  if (Object.is(a, b)) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b)) {
    if (!ArrayBuffer.isView(a) || !ArrayBuffer.isView(b) || a.constructor !== b.constructor || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !deepEqualValues(v, b.get(k))) return false;
    return true;
  }
  if (a instanceof Set || b instanceof Set) {
    if (!(a instanceof Set && b instanceof Set) || a.size !== b.size) return false;
    for (const v of a) if (!b.has(v)) return false;
    return true;
  }
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqualValues(a[k], b[k]));
}

function ok(value, message) {
  if (!value) throw new AssertionError(message ?? `expected a truthy value, got ${show(value)}`);
}

function equal(actual, expected, message) {
  if (!Object.is(actual, expected)) throw new AssertionError(message ?? `${show(actual)} !== ${show(expected)}`);
}

function deepEqual(actual, expected, message) {
  if (!deepEqualValues(actual, expected)) throw new AssertionError(message ?? `not deep-equal: ${show(actual)} vs ${show(expected)}`);
}

function match(string, regexp, message) {
  if (typeof string !== 'string' || !regexp.test(string)) throw new AssertionError(message ?? `${show(string)} does not match ${regexp}`);
}

function checkError(err, expected, message) {
  if (expected === undefined) return;
  if (typeof expected === 'function') {
    if (expected.prototype !== undefined && err instanceof expected) return;
    if (expected.prototype === undefined || !(expected.prototype instanceof Error || expected === Error)) {
      if (expected(err) === true) return;
      throw new AssertionError(message ?? `the error did not pass the check: ${err}`);
    }
    throw new AssertionError(message ?? `the error is not a ${expected.name}: ${err}`);
  }
  if (expected instanceof RegExp) {
    if (expected.test(String(err && err.message !== undefined ? err.message : err))) return;
    throw new AssertionError(message ?? `the error ${err} does not match ${expected}`);
  }
  if (typeof expected === 'object' && expected !== null) {
    for (const [k, v] of Object.entries(expected)) {
      const got = err === null || err === undefined ? undefined : err[k];
      if (v instanceof RegExp ? !v.test(String(got)) : !deepEqualValues(got, v)) {
        throw new AssertionError(message ?? `the error's ${k} is ${show(got)}, expected ${show(v)} (${err})`);
      }
    }
  }
}

function throws(fn, expected, message) {
  try {
    fn();
  } catch (err) {
    checkError(err, expected, message);
    return;
  }
  throw new AssertionError(message ?? 'expected a throw');
}

async function rejects(promiseOrFn, expected, message) {
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
  } catch (err) {
    checkError(err, expected, message);
    return;
  }
  throw new AssertionError(message ?? 'expected a rejection');
}

const assert = Object.assign((value, message) => ok(value, message), { ok, equal, deepEqual, match, throws, rejects, strictEqual: equal, deepStrictEqual: deepEqual, AssertionError });
export default assert;
export { ok, equal, deepEqual, match, throws, rejects, AssertionError };
