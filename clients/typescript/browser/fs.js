// `node:fs` in the browser: the spec files the tests read, inlined when the
// page is bundled (so a changed byte in spec/ fails the page too).
import clearing from '../../../spec/clearing.md';
import keyper from '../../../spec/keyper.md';
import replication from '../../../spec/replication.md';
import wire from '../../../spec/wire.md';
import envelopeVectors from '../../../spec/test-vectors/envelope-v1.json';
import specReadme from '../../../spec/README.md';

const files = {
  'spec/clearing.md': clearing,
  'spec/keyper.md': keyper,
  'spec/replication.md': replication,
  'spec/wire.md': wire,
  'spec/test-vectors/envelope-v1.json': envelopeVectors,
  'spec/README.md': specReadme,
};

export function existsSync(path) {
  return Object.prototype.hasOwnProperty.call(files, path);
}

export function readFileSync(path) {
  if (!existsSync(path)) throw new Error(`${path}: not bundled into the browser page`);
  return files[path];
}
