// Claude on Vertex AI: a vertex provider sends claude-* models to
// Anthropic's publisher (rawPredict, streamRawPredict,
// count-tokens:rawPredict) in the Messages wire. The mock checks the body
// Vertex takes (no model, anthropic_version vertex-2023-10-16, stream only
// on streamRawPredict) and the access token; the tests check what reached
// it: cache_control, top_k and anthropic-beta kept, the model a URL path
// segment, Gemini models of the same provider still on Google's publisher.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startMock, startGateway, config, serviceKeys, serviceAccount, post, sseEvents } from './harness.mjs';

let mock, gw;
const PREFIX = '/v1/projects/mock-project/locations/us-east5/publishers';

before(async () => {
  mock = await startMock();
  const keys = serviceKeys();
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-vc-'));
  const sa = path.join(dir, 'sa.json');
  writeFileSync(sa, serviceAccount(`${mock.url}/token`, keys.privateKey));
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: vertex
    type: vertex
    base_url: ${mock.url}
    location: us-east5
    credentials: ${sa}
    models: ["claude-*", "gemini-*", "vc-*"]
    model_map: { "vc-sonnet": "claude-sonnet-4@20250514", "vc-odd": "claude-x/../y" }
    options: { default_max_tokens: 777 }`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('chat: rawPredict with the Messages body without model, anthropic_version, cache_control and top_k kept', async () => {
  const res = await post(gw, '/v1/chat/completions', {
    model: 'vc-sonnet', top_k: 5,
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'long system', cache_control: { type: 'ephemeral' } }] },
      { role: 'user', content: 'hello vertex claude' },
    ],
  }, { 'anthropic-beta': 'prompt-caching-2024-07-31' });
  assert.equal(res.status, 200);
  const r = await res.json();
  assert.equal(r.choices[0].message.content, 'Hello from mock. You said: hello vertex claude');
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 3);
  const last = await mock.last();
  // the model is one path segment: '@' is percent-encoded
  assert.equal(decodeURIComponent(last.path), `${PREFIX}/anthropic/models/claude-sonnet-4@20250514:rawPredict`);
  assert.ok(!last.path.slice(PREFIX.length).includes('@'), last.path);
  assert.match(last.headers.authorization, /^Bearer ya29\.mock-/);
  assert.equal(last.headers['x-api-key'], undefined);
  assert.equal(last.headers['anthropic-beta'], 'prompt-caching-2024-07-31');
  const body = JSON.parse(last.body);
  assert.equal(body.model, undefined);
  assert.equal(body.anthropic_version, 'vertex-2023-10-16');
  assert.equal(body.max_tokens, 777);
  assert.equal(body.top_k, 5);
  assert.deepEqual(body.system, [{ type: 'text', text: 'long system', cache_control: { type: 'ephemeral' } }]);
  assert.equal(body.stream, undefined);
});

test('/v1/messages stream: streamRawPredict, Anthropic events back, tool_use and cache_control on tools', async () => {
  const res = await post(gw, '/v1/messages', {
    model: 'claude-haiku-4-5@20251001', max_tokens: 100, stream: true,
    tools: [{ name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } }, cache_control: { type: 'ephemeral' } }],
    messages: [{ role: 'user', content: [{ type: 'text', text: 'stream me', cache_control: { type: 'ephemeral' } }] }],
  }, { 'anthropic-version': '2023-06-01' });
  assert.equal(res.status, 200);
  const events = (await sseEvents(res)).map((d) => JSON.parse(d));
  const types = events.map((e) => e.type);
  assert.equal(types[0], 'message_start');
  assert.equal(types.at(-1), 'message_stop');
  assert.ok(types.includes('content_block_delta'));
  const last = await mock.last();
  assert.equal(decodeURIComponent(last.path), `${PREFIX}/anthropic/models/claude-haiku-4-5@20251001:streamRawPredict`);
  const body = JSON.parse(last.body);
  assert.equal(body.model, undefined);
  assert.equal(body.stream, true);
  assert.equal(body.anthropic_version, 'vertex-2023-10-16');
  assert.deepEqual(body.tools[0].cache_control, { type: 'ephemeral' });
  assert.deepEqual(body.messages[0].content, [{ type: 'text', text: 'stream me', cache_control: { type: 'ephemeral' } }]);
});

test('chat stream: Anthropic events become chat chunks', async () => {
  const res = await post(gw, '/v1/chat/completions', {
    model: 'vc-sonnet', stream: true, messages: [{ role: 'user', content: 'chunks please' }],
  });
  assert.equal(res.status, 200);
  const data = await sseEvents(res);
  assert.equal(data.at(-1), '[DONE]');
  const text = data.slice(0, -1).map((d) => JSON.parse(d).choices[0]?.delta?.content || '').join('');
  assert.equal(text, 'Hello from mock. You said: chunks please');
});

test('count_tokens: count-tokens:rawPredict with the model in the body', async () => {
  const res = await post(gw, '/v1/messages/count_tokens', {
    model: 'vc-sonnet', system: 'be brief', messages: [{ role: 'user', content: 'count me' }],
  }, { 'anthropic-version': '2023-06-01' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-tokens-estimated'), null);
  assert.deepEqual(await res.json(), { input_tokens: 1001 });
  const last = await mock.last();
  assert.equal(last.path, `${PREFIX}/anthropic/models/count-tokens:rawPredict`);
  const body = JSON.parse(last.body);
  assert.equal(body.model, 'claude-sonnet-4@20250514');
  assert.equal(body.max_tokens, undefined);
});

test('errors: Anthropic errors keep their status and type; no embeddings for Claude', async () => {
  const res = await post(gw, '/v1/messages', {
    model: 'claude-haiku-4-5@20251001', max_tokens: 10,
    messages: [{ role: 'user', content: '[[mock:status=429]] slow down' }],
  }, { 'anthropic-version': '2023-06-01' });
  assert.equal(res.status, 429);
  const e = await res.json();
  assert.equal(e.type, 'error');
  assert.equal(e.error.type, 'rate_limit_error');
  const emb = await post(gw, '/v1/embeddings', { model: 'claude-haiku-4-5@20251001', input: 'x' });
  assert.equal(emb.status, 400);
  assert.match((await emb.json()).error.message, /Claude on Vertex AI has no embeddings/);
});

test('a Gemini model of the same provider stays on Google\'s publisher', async () => {
  const res = await post(gw, '/v1/chat/completions', {
    model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'gemini here' }],
  });
  assert.equal(res.status, 200);
  const last = await mock.last();
  assert.equal(last.path, `${PREFIX}/google/models/gemini-2.5-flash:generateContent`);
});

test('a model name is one path segment: a slash is encoded', async () => {
  const res = await post(gw, '/v1/chat/completions', {
    model: 'vc-odd', messages: [{ role: 'user', content: 'x' }],
  });
  assert.equal(res.status, 200);
  const last = await mock.last();
  assert.equal(last.path, `${PREFIX}/anthropic/models/claude-x%2F..%2Fy:rawPredict`);
});
