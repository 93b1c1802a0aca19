import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import * as switchboard from '../switchboard.js';

const source = await readFile(new URL('../switchboard.js', import.meta.url), 'utf8');
const declarations = await readFile(new URL('../switchboard.d.ts', import.meta.url), 'utf8');

test('switchboard.d.ts declares exactly what the module exports', () => {
  const declared = [
    ...declarations.matchAll(/^export declare (?:const|class|function) (\w+)/gm),
  ].map((m) => m[1]);
  if (/^export default /m.test(declarations)) declared.push('default');
  assert.deepEqual(declared.sort(), Object.keys(switchboard).sort());
  assert.equal(switchboard.default, switchboard.SwitchboardClient);
});

test('the module never logs and never evaluates code', () => {
  assert.doesNotMatch(source, /\bconsole\s*\./);
  assert.doesNotMatch(source, /\beval\s*\(|new\s+Function\s*\(/);
  assert.doesNotMatch(source, /^\s*import\s/m, 'no dependencies');
});

test('the client works without a browser page when given a url', () => {
  assert.throws(() => new switchboard.SwitchboardClient(), /url/);
  assert.throws(
    () => new switchboard.SwitchboardClient({ url: 'https://x.test', clientId: 'bad id' }),
    TypeError,
  );
  const client = new switchboard.SwitchboardClient({ url: 'https://x.test' });
  assert.equal(client.state, 'closed');
  assert.match(client.clientId, /^[A-Za-z0-9]{22}$/);
});
