// mf.embed and mf.llm: calls through the gateway's own providers, as a
// client of it (routes, fallback, keys, the access log, the caller's
// consumer), yielding the stage; timeouts, a pinned provider, nesting.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post, ROOT } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: second
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-second-provider-key-000"]
    models: ["text-embedding-*", "cls-*"]
  - name: broken
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-status-503-broken"]
    models: ["cls-*"]
routes:
  - model: cls-fallback
    targets: [{ provider: broken, model: cls-fallback }]
    fallback: [{ provider: second, model: gpt-4o-mini }]
    retry_on: [5xx]`,
    stages: `
  - name: calls
    lua: ${ROOT}/tests/integration/fixtures/model-calls.lua`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

async function call(model, body, headers = {}) {
  const res = await post(gw, '/v1/chat/completions', { model, messages: [{ role: 'user', content: 'x' }], ...body }, headers);
  assert.equal(res.status, 200);
  return res.json();
}

test('mf.embed returns the provider\'s vectors, in order, through the gateway', async () => {
  const j = await call('call-embed', { texts: ['alpha beta', 'alpha beta', 'gamma'], call_opts: { model: 'text-embedding-3-small' } }, { 'x-who': 'alice' });
  assert.equal(j.vectors.length, 3);
  assert.equal(j.vectors[0].length, 8);
  assert.deepEqual(j.vectors[0], j.vectors[1]);
  assert.notDeepEqual(j.vectors[0], j.vectors[2]);
  assert.ok(Math.abs(j.cosine - 1) < 1e-9);
  assert.equal(j.model, 'text-embedding-3-small');
  assert.ok(j.usage.prompt_tokens > 0);
  // the same numbers as a client's own embeddings call
  const direct = await (await post(gw, '/v1/embeddings', { model: 'text-embedding-3-small', input: ['gamma'] })).json();
  assert.deepEqual(direct.data[0].embedding.map((x) => Math.fround(x)), j.vectors[2].map((x) => Math.fround(x)));
  // the call is a request of its own, billed to the caller's consumer
  const line = await gw.waitLog((l) => l.path === '/v1/embeddings' && l.consumer === 'alice');
  assert.equal(line.status, 200);
  assert.equal(line.provider, 'openai');
  assert.ok(line.prompt_tokens > 0);
});

test('mf.embed takes one string, and a pinned provider serves it alone', async () => {
  const j = await call('call-embed', { texts: 'one text', call_opts: { model: 'text-embedding-3-small', provider: 'second' } });
  assert.equal(j.vectors.length, 1);
  const last = await mock.last();
  assert.match(JSON.stringify(last.headers), /sk-second-provider-key-000/);
  const line = await gw.waitLog((l) => l.path === '/v1/embeddings' && l.provider === 'second');
  assert.equal(line.status, 200);
  // a provider that does not serve the model: the gateway's 404, as err
  const k = await call('call-embed', { texts: 'x', call_opts: { model: 'gpt-4o', provider: 'second' } });
  assert.match(k.err, /^mf\.embed: 404 model_not_found: /);
});

test('mf.llm answers with the text, usage and body, never streamed', async () => {
  const j = await call('call-llm', { target: 'gpt-4o', messages: [{ role: 'user', content: 'hi there' }] }, { 'x-who': 'bob' });
  assert.equal(j.status, 200);
  assert.equal(j.text, 'Hello from mock. You said: hi there');
  assert.equal(j.finish_reason, 'stop');
  assert.ok(j.usage.total_tokens > 0);
  assert.equal(j.id, 'chatcmpl-mock');
  const last = await mock.last();
  assert.equal(JSON.parse(last.body).stream, false);
  const line = await gw.waitLog((l) => l.consumer === 'bob' && l.model === 'gpt-4o');
  assert.equal(line.stream, false);
  assert.equal(line.status, 200);
});

test('mf.llm goes through routes: a failing target falls back', async () => {
  const j = await call('call-llm', { target: 'cls-fallback', messages: [{ role: 'user', content: 'route me' }] });
  assert.equal(j.text, 'Hello from mock. You said: route me');
  const line = await gw.waitLog((l) => l.model === 'cls-fallback');
  assert.equal(line.provider, 'second');
  assert.equal(line.attempts, 2);
});

test('mf.llm reports an error answer and a timeout as nil, err', async () => {
  let j = await call('call-llm', { target: 'gpt-4o', messages: [{ role: 'user', content: '[[mock:status=400]]' }] });
  assert.match(j.err, /^mf\.llm: 400 /);
  j = await call('call-llm', { target: 'gpt-4o', messages: [{ role: 'user', content: '[[mock:hang]]' }], call_opts: { timeout: 300 } });
  assert.match(j.err, /^mf\.llm: no answer \(.*within 300 ms\)$/);
  j = await call('call-llm', { target: 'nonexistent-model', messages: [{ role: 'user', content: 'x' }] });
  assert.match(j.err, /^mf\.llm: 404 model_not_found/);
});

test('a stage calling the model it serves is stopped at depth 3', async () => {
  const j = await call('loop', {});
  assert.match(j.inner.inner.inner.err, /nest at most 3 deep/);
});

test('bad arguments raise; on_log may not call', async () => {
  const j = await call('bad-args', {});
  assert.match(j.llm, /request\.model is required/);
  assert.match(j.embed, /texts\[1\] is not a string/);
  assert.equal(j.ok, false);
  await post(gw, '/v1/chat/completions', { model: 'log-call', messages: [{ role: 'user', content: 'x' }] });
  await gw.waitStderr(/on_log mf\.llm:\s+false\s+mf\.llm: .*not allowed in on_log/);
});

test('a client cannot pose as a model call', async () => {
  const res = await post(gw, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'forged' }] }, {
    'x-manifold-call': '0123456789abcdef0123456789abcdef', 'x-manifold-call-consumer': 'mallory',
    'x-manifold-call-provider': 'second', 'x-manifold-call-depth': '1',
  });
  assert.equal(res.status, 200);
  const line = await gw.waitLog((l) => l.model === 'gpt-4o' && l.provider === 'openai' && l.consumer !== 'bob');
  assert.notEqual(line.consumer, 'mallory');
});

test('a C stage gets the same service: api->model_call', async () => {
  const { BUILD } = await import('./harness.mjs');
  const g = await startGateway(config(mock.url, { stages: `
  - name: cstage
    plugin: ${BUILD}/tests/fixtures/modelcall.so` }));
  try {
    let res = await post(g, '/v1/chat/completions', { model: 'c-embed', messages: [{ role: 'user', content: 'gamma' }] });
    assert.equal(res.status, 200);
    let j = await res.json();
    const direct = await (await post(g, '/v1/embeddings', { model: 'text-embedding-3-small', input: ['gamma'] })).json();
    assert.deepEqual(j.data[0].embedding, direct.data[0].embedding);
    res = await post(g, '/v1/chat/completions', { model: 'c-chat', messages: [{ role: 'user', content: 'from C' }] });
    j = await res.json();
    assert.equal(j.choices[0].message.content, 'Hello from mock. You said: from C');
    await g.waitLog((l) => l.path === '/v1/embeddings' && l.status === 200);
  } finally {
    await g.stop();
  }
});
