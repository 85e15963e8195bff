// The Lua helper library (lua/mf) inside the gateway: embedded, loaded in
// the sandbox, its helpers working on a real request (their own unit
// tests run under LuaJIT: tests/lua).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post, ROOT } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: probe
    lua: ${ROOT}/tests/integration/fixtures/library.lua
    config:
      regex: "(fix|debug)ging"
      intents:
        code: "code function bug compile debug"
        math: "prove integral equation"`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

function probe(body) {
  return post(gw, '/v1/chat/completions', { model: 'probe', ...body });
}

test('the helpers read the request, score, match and keep state', async () => {
  const body = {
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'hello' },
      { role: 'assistant', content: 'hi' },
      { role: 'user', content: [{ type: 'text', text: 'I am Debugging a compile error' }] },
    ],
    tools: [{ type: 'function', function: { name: 'run', parameters: {} } }],
    metadata: { tag: 't1' },
  };
  let res = await probe(body);
  assert.equal(res.status, 200);
  let j = await res.json();
  assert.equal(j.last_user, 'I am Debugging a compile error');
  assert.equal(j.system, 'Be brief.');
  assert.equal(j.tools, 1);
  assert.equal(j.bm25, 'code');
  assert.deepEqual(j.regex, [6, 14, 'Debug']);
  assert.equal(j.regex_test, false);
  assert.equal(j.bad_regex, true);
  assert.equal(j.sticky_before, null);
  assert.equal(j.rule, 'regex: (fix|debug)ging; consumer: anyone');
  assert.equal(j.cosine, 1);
  assert.equal(j.glob, true);
  assert.equal(j.path, 't1');
  assert.equal(j.hash.slice(0, 8), 'e40c292c');
  // the next turn of the same conversation finds what the first kept
  body.messages.push({ role: 'assistant', content: 'ok' }, { role: 'user', content: 'prove it' });
  res = await probe(body);
  j = await res.json();
  assert.equal(j.sticky_before, 'code');
  assert.equal(j.bm25, 'math');
  assert.equal(j.regex, null);
  assert.equal(j.regex_test, true);
});
