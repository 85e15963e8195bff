// A model name a stage sets (mf.route.set_model, add_target, a body it
// rewrites) is checked as a client's is: one with a control character is
// refused, never reaches an upstream URL, request line or response header.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, raw, path, ROOT } from './harness.mjs';

const FIX = path.join(ROOT, 'tests/integration/fixtures');
let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: gemini
    type: gemini
    base_url: ${mock.url}
    keys: ["AIzaSyInjectTest0123456789abcdefghijk"]
    models: ["gemini-*"]`,
    stages: `
  - name: inject
    lua: ${FIX}/inject.lua`,
  }), { workers: 1 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

// One chat request over a raw socket: the whole head and body as sent.
async function rawChat(content, id) {
  const body = JSON.stringify({ model: 'gemini-pro', messages: [{ role: 'user', content }] });
  const out = await raw(gw.port,
    'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
    `X-Request-Id: ${id}\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  const cut = out.indexOf('\r\n\r\n');
  return { head: out.slice(0, cut), body: out.slice(cut + 4) };
}

async function upstreamSince(before) {
  const n = (await mock.count()) - before;
  if (n === 0) return [];
  const all = await (await fetch(`${mock.url}/_mock/requests`)).json();
  return all.slice(-n);
}

function assertClean(head, seen) {
  assert.doesNotMatch(head, /X-Injected/i, head);
  for (const line of head.split('\r\n').slice(1)) assert.match(line, /^[A-Za-z0-9-]+: /, line);
  for (const q of seen) {
    const text = JSON.stringify(q);
    assert.doesNotMatch(text, /X-Injected/i, `upstream saw ${text}`);
    assert.doesNotMatch(q.path || q.uri || '', /%0D|%0A|\r|\n/i);
  }
}

test('mf.route.set_model with CR LF is refused with a clear error; the request keeps its own model', async () => {
  let before = await mock.count();
  let r = await rawChat('set-report', 'inj-1');
  assert.match(r.head, /^HTTP\/1\.1 200 /);
  const told = JSON.parse(r.body);
  assert.equal(told.ok, 'nil');
  assert.equal(told.err, 'mf.route.set_model: the model name holds a control character ' +
    '(such as a line break); it is refused as a client\'s would be');
  assert.deepEqual(await upstreamSince(before), [], 'a stage answer reaches no upstream');

  // a stage that ignores the refusal: served with the client's model
  before = await mock.count();
  r = await rawChat('set-ignore', 'inj-2');
  assert.match(r.head, /^HTTP\/1\.1 200 /);
  assert.match(r.head, /\r\nx-manifold-model: gemini-pro(\r\n|$)/);
  const seen = await upstreamSince(before);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].path, '/v1beta/models/gemini-pro:generateContent');
  assertClean(r.head, seen);
  await gw.waitStderr(/request inj-2: a stage's set_model refused: the model name holds a control character/);

  // a stage that asserts: a stage error, 500, the reason in the log
  before = await mock.count();
  r = await rawChat('set-assert', 'inj-3');
  assert.match(r.head, /^HTTP\/1\.1 500 /);
  assert.equal(JSON.parse(r.body).error.type, 'server_error');
  assertClean(r.head, await upstreamSince(before));
  assert.deepEqual(await upstreamSince(before), []);
  await gw.waitStderr(/stage 'inject'[^\n]*mf\.route\.set_model: the model name holds a control character/);
});

test('mf.route.add_target with CR LF is refused; with no other target nothing goes upstream', async () => {
  let before = await mock.count();
  let r = await rawChat('target-report', 'inj-4');
  assert.match(r.head, /^HTTP\/1\.1 200 /);
  assert.match(JSON.parse(r.body).err, /^mf\.route\.add_target: the model name holds a control character/);

  before = await mock.count();
  r = await rawChat('target-only', 'inj-5');
  assert.match(r.head, /^HTTP\/1\.1 404 /, "no target: the model is not served");
  assertClean(r.head, []);
  assert.deepEqual(await upstreamSince(before), [], 'nothing reached the upstream');
  await gw.waitStderr(/request inj-5: a target refused: the model name holds a control character/);
});

test('mf.req.set_body with a CR LF model is refused and the body stays as it was', async () => {
  let r = await rawChat('body-report', 'inj-6');
  assert.match(r.head, /^HTTP\/1\.1 200 /);
  assert.match(JSON.parse(r.body).err, /^mf\.req\.set_body: the model name holds a control character/);

  const before = await mock.count();
  r = await rawChat('body-ignore', 'inj-7');
  assert.match(r.head, /^HTTP\/1\.1 200 /);
  assert.match(r.head, /\r\nx-manifold-model: gemini-pro(\r\n|$)/);
  const seen = await upstreamSince(before);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].path, '/v1beta/models/gemini-pro:generateContent');
  assertClean(r.head, seen);
});
