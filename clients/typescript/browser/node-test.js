// `node:test` in the browser: tests are registered, then run by vectors-entry.js.
export const tests = [];
export function test(name, fn) {
  tests.push({ name, fn });
}
