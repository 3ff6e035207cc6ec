// The SDK's tests in a browser: every test file that reads spec/ (vectors,
// golden frames) and the pure ones; the Node-only ones (README, HTTP) stay out.
import { tests } from './node-test.js';
import '../dist/test/clearing.test.js';
import '../dist/test/client.test.js';
import '../dist/test/commit.test.js';
import '../dist/test/crypto.test.js';
import '../dist/test/envelope.test.js';
import '../dist/test/keyper.test.js';
import '../dist/test/stream.test.js';
import '../dist/test/wire.test.js';

async function run() {
  const out = document.getElementById('result');
  const list = document.getElementById('tests');
  let passed = 0;
  const failed = [];
  for (const t of tests) {
    const li = document.createElement('li');
    try {
      await t.fn();
      passed += 1;
      li.dataset.ok = 'true';
      li.textContent = `ok ${t.name}`;
    } catch (err) {
      failed.push(t.name);
      li.dataset.ok = 'false';
      li.textContent = `not ok ${t.name}: ${err && err.message ? err.message : err}`;
    }
    list.append(li);
  }
  out.dataset.tests = String(tests.length);
  out.dataset.passed = String(passed);
  out.dataset.status = failed.length === 0 && tests.length > 0 ? 'pass' : 'fail';
  out.textContent = `${passed} of ${tests.length} passed${failed.length ? `; failed: ${failed.join('; ')}` : ''}`;
}

run();
