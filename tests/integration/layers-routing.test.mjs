// The host in layers, routing side: a 429 rests a key for one model only;
// exact model names beat globs across providers and a disabled provider's
// best match is reported; a client's x-manifold-* headers never reach the
// stages; every access-log line has the same fields, and tokens are
// estimated only when a request reached a provider, from the prompt text.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import {
  startMock, startGateway, config, chat, post, sseEvents, closedPort, adminCall, path,
} from './harness.mjs';

let mock, gw, sock;

const keysOf = async (provider) =>
  (await adminCall(sock, 'GET', '/keys')).json.keys.filter((k) => k.provider === provider);

before(async () => {
  mock = await startMock();
  const down = await closedPort();
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-layers-'));
  sock = path.join(dir, 'admin.sock');
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: lim
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-lim-only-key-0123456789"]
    models: ["lim-*"]
  - name: gemini
    type: gemini
    base_url: ${mock.url}
    keys: ["AIza-layers-test-0123456789"]
    models: ["gemini-*", "text-embedding-004"]
  - name: qwen
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-qwen-layers-0123456789"]
    models: ["qwen-*", "text-embedding-v*"]
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-layers-0123456789"]
    models: ["claude-*"]
  - name: bedrock
    type: bedrock
    base_url: ${mock.url}
    region: us-west-2
    keys: ["AKIDLAYERS1:mock/secret/AKIDLAYERS1"]
    models: ["anthropic.*"]
  - name: mistral
    type: openai
    base_url: ${mock.url}/v1
    keys: ["\${MF_LAYERS_UNSET_KEY:-}"]
    models: ["mistral-*"]
  - name: local
    type: openai
    base_url: http://127.0.0.1:${down}/v1
    models: ["mistral*", "llama*", "down-*"]`,
  }) + `
admin: { socket: ${sock} }
routes:
  - model: model-a
    targets: [{ provider: lim, model: "lim-a[[mock:status=429 retry_after=30]]" }]
  - model: model-b
    targets: [{ provider: lim, model: lim-b }]
  - model: grouped
    targets:
      - { provider: lim, model: lim-stable, weight: 100 }
      - { provider: lim, model: lim-canary, weight: 0 }
    canary:
      - { group: early-access, target: 1 }
  - model: cut-route
    targets: [{ provider: openai, model: "gpt-4o[[mock:chunks=10 cut=3]]" }]
`, { dir });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('a 429 for model A leaves model B on the same key served', async () => {
  const a = await chat(gw, 'hi', { model: 'model-a' });
  await a.arrayBuffer();
  assert.equal(a.status, 429);
  assert.equal(a.headers.get('x-manifold-provider'), 'lim', 'the upstream answered');
  // the only key of `lim` serves lim-b at once ...
  const b = await chat(gw, 'hi', { model: 'model-b' });
  await b.arrayBuffer();
  assert.equal(b.status, 200);
  assert.equal(b.headers.get('x-manifold-attempts'), '1');
  // ... as it rests for lim-a only
  const [key] = await keysOf('lim');
  assert.equal(key.state, 'ok');
  assert.deepEqual(key.rests.map((r) => r.model), ['lim-a[[mock:status=429 retry_after=30]]']);
  assert.ok(key.rests[0].retry_in_ms > 20000);
  // model A is still told to wait, by the gateway itself
  const again = await chat(gw, 'hi', { model: 'model-a' });
  await again.arrayBuffer();
  assert.equal(again.status, 429);
  assert.equal(again.headers.get('x-manifold-provider'), null, 'the resting key was not tried');
  assert.ok(Number(again.headers.get('retry-after')) > 20);
});

test('an exact model name beats any glob; among globs the longest literal prefix', async () => {
  const embed = (model) => post(gw, '/v1/embeddings', { model, input: 'hello' });
  let res = await embed('text-embedding-004');
  await res.arrayBuffer();
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-provider'), 'gemini');
  res = await embed('text-embedding-v3');
  await res.arrayBuffer();
  assert.equal(res.headers.get('x-manifold-provider'), 'qwen');
  res = await embed('text-embedding-3-small');
  await res.arrayBuffer();
  assert.equal(res.headers.get('x-manifold-provider'), 'openai');
});

test('a model whose best match is a disabled provider: a clear error naming it', async () => {
  const res = await chat(gw, 'hi', { model: 'mistral-large-latest' });
  const body = await res.json();
  assert.equal(res.status, 503);
  assert.equal(body.error.code, 'provider_disabled');
  assert.match(body.error.message, /provider 'mistral'/);
  assert.match(body.error.message, /disabled because no API key is configured/);
  assert.ok(!/\.yaml|\//.test(body.error.message), body.error.message);
  assert.equal(res.headers.get('x-manifold-provider'), null, 'nothing was tried');
  // the operator's hint (with the config file) is in the log
  await gw.waitStderr(/served by provider 'mistral', disabled because its keys are empty: set its key variable in \S+\.yaml/);
  // a model only the keyless provider matches still goes there
  const other = await chat(gw, 'hi', { model: 'llama-3' });
  await other.arrayBuffer();
  assert.equal(other.status, 502);
});

test('x-manifold-group from a client does not enter a canary', async () => {
  for (let i = 0; i < 5; i++) {
    const res = await chat(gw, 'hi', { model: 'grouped' }, { 'x-manifold-group': 'early-access', 'X-Manifold-Group': 'early-access' });
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-manifold-model'), 'lim-stable');
  }
  const res = await chat(gw, 'hi', { model: 'grouped' }, { 'x-manifold-anything': 'x' });
  await res.arrayBuffer();
  const seen = (await mock.last()).headers;
  assert.ok(!Object.keys(seen).some((h) => h.startsWith('x-manifold-')), JSON.stringify(seen));
});

test('access-log lines all have the same fields, whatever the provider or failure', async () => {
  const ids = {
    openai: ['gpt-4o', {}], anthropic: ['claude-3-5-haiku', {}], gemini: ['gemini-2.0-flash', {}],
    bedrock: ['anthropic.claude-3-haiku', {}], connect: ['down-1', {}], stream: ['gpt-4o', { stream: true }],
  };
  for (const [name, [model, extra]] of Object.entries(ids)) {
    const res = await chat(gw, 'hello there', { model, ...extra }, { 'x-request-id': `layers-${name}` });
    await res.arrayBuffer();
    assert.equal(res.status, name === 'connect' ? 502 : 200, name);
  }
  const lines = {};
  for (const name of Object.keys(ids)) lines[name] = await gw.waitLog((l) => l.request_id === `layers-${name}`);
  const want = Object.keys(lines.openai).sort();
  for (const [name, line] of Object.entries(lines)) assert.deepEqual(Object.keys(line).sort(), want, name);
  for (const f of ['cached_tokens', 'reasoning_tokens', 'tried', 'upstream_status']) assert.ok(want.includes(f), f);
  // nothing reached a provider: no tokens, nothing estimated
  const c = lines.connect;
  assert.equal(c.prompt_tokens, null);
  assert.equal(c.completion_tokens, null);
  assert.equal(c.total_tokens, null);
  assert.equal(c.usage_estimated, false);
  assert.equal(c.upstream_status, null);
  assert.match(c.tried, /local\/down-1:connect/);
});

test('a prompt estimate counts the text of the messages, not the JSON', async () => {
  const messages = [
    { role: 'system', content: 's'.repeat(40) },
    { role: 'user', content: [{ type: 'text', text: 'u'.repeat(300) }] },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{"q":"abcdefgh"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: 't'.repeat(44) },
    { role: 'user', content: 'v'.repeat(100) },
  ];
  const text = 40 + 300 + '{"q":"abcdefgh"}'.length + 44 + 100;
  const res = await post(gw, '/v1/chat/completions', { model: 'cut-route', stream: true, messages },
    { 'x-request-id': 'layers-estimate' });
  await sseEvents(res);
  const line = await gw.waitLog((l) => l.request_id === 'layers-estimate');
  assert.equal(line.usage_estimated, true);
  assert.equal(line.prompt_tokens, Math.ceil(text / 4));
});
