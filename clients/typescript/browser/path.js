// `node:path` in the browser, as far as the tests' spec reader uses it.
export const join = (...parts) => parts.filter((p) => p !== '').join('/');
export const dirname = (p) => p.slice(0, Math.max(0, p.lastIndexOf('/')));
