// `node:url` in the browser, as far as the tests' spec reader uses it.
export const fileURLToPath = (u) => String(u);
