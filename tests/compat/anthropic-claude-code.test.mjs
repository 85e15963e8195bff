// What Claude Code and other Anthropic SDK clients rely on, through the
// official `@anthropic-ai/sdk`: cache_control breakpoints (system,
// message, tool result and tool blocks) and top_k kept to an Anthropic
// upstream, the anthropic-beta header passed to it (and OpenAI-Beta to an
// OpenAI upstream), cache_control on OpenAI-format parts kept to
// Anthropic, and top_k never sent to OpenAI itself.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw, client;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]
  - name: passing
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-pass-0123456789"]
    models: ["passing-*"]
    model_map: { "passing-claude": "claude-sonnet-4" }
    forward_headers: ["x-trace-tag"]
  - name: compatible
    type: openai-compatible
    base_url: ${mock.url}/v1
    keys: ["sk-compat-0123456789"]
    models: ["compat-*"]`,
  }));
  client = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const eph = { type: 'ephemeral' };
const tool = {
  name: 'get_weather', description: 'Weather of a city', cache_control: eph,
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

test('cache_control, top_k and anthropic-beta reach an Anthropic upstream', async () => {
  const m = await client.messages.create({
    model: 'claude-sonnet-4', max_tokens: 100, top_k: 5,
    system: [{ type: 'text', text: 'a long system prompt', cache_control: eph }],
    tools: [tool],
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'weather?', cache_control: eph }] },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny', cache_control: eph }, { type: 'text', text: 'and so?' }] },
    ],
  }, { headers: { 'anthropic-beta': 'prompt-caching-2024-07-31,token-efficient-tools-2025-02-19' } });
  assert.equal(m.type, 'message');
  const last = await mock.last();
  assert.equal(last.path, '/v1/messages');
  assert.equal(last.headers['anthropic-beta'], 'prompt-caching-2024-07-31,token-efficient-tools-2025-02-19');
  const up = JSON.parse(last.body);
  assert.equal(up.top_k, 5);
  assert.deepEqual(up.system, [{ type: 'text', text: 'a long system prompt', cache_control: eph }]);
  assert.deepEqual(up.tools, [{ name: 'get_weather', description: 'Weather of a city', input_schema: tool.input_schema, cache_control: eph }]);
  assert.deepEqual(up.messages[0], { role: 'user', content: [{ type: 'text', text: 'weather?', cache_control: eph }] });
  assert.deepEqual(up.messages[2], {
    role: 'user',
    content: [
      { type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny', cache_control: eph },
      { type: 'text', text: 'and so?' },
    ],
  });
});

test('cache_control inside a tool_result content stays inside; on the block stays on the block', async () => {
  await client.messages.create({
    model: 'claude-sonnet-4', max_tokens: 10,
    messages: [
      { role: 'user', content: 'weather in Rome?' },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_2', name: 'get_weather', input: { city: 'Rome' } }] },
      { role: 'user', content: [
        { type: 'tool_result', tool_use_id: 'toolu_2', content: [{ type: 'text', text: 'rain', cache_control: eph }] },
      ] },
    ],
  });
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[2].content, [
    { type: 'tool_result', tool_use_id: 'toolu_2', content: [{ type: 'text', text: 'rain', cache_control: eph }] },
  ]);
});

test('without cache_control the text goes as plain strings, as before', async () => {
  await client.messages.create({
    model: 'gpt-4o', max_tokens: 10, system: [{ type: 'text', text: 'sys' }],
    messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }],
  });
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages, [{ role: 'system', content: 'sys' }, { role: 'user', content: 'a\nb' }]);
});

test('top_k is kept to providers that take it and never sent to OpenAI', async () => {
  await client.messages.create({ model: 'gpt-4o', max_tokens: 10, top_k: 3, messages: [{ role: 'user', content: 'x' }] });
  const up = JSON.parse((await mock.last()).body);
  assert.equal(up.top_k, undefined);
  assert.equal(up.max_tokens, 10);
});

test('cache_control never reaches OpenAI\'s own API; a generic openai-compatible server gets it', async () => {
  const req = (model) => ({
    model, max_tokens: 10,
    system: [{ type: 'text', text: 'a long system prompt', cache_control: eph }],
    tools: [tool],
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'weather?', cache_control: eph }, { type: 'image', source: { type: 'url', url: 'https://example.com/a.png' }, cache_control: eph }] },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny', cache_control: eph }] },
    ],
  });
  await client.messages.create(req('gpt-4o'));
  let body = (await mock.last()).body;
  assert.doesNotMatch(body, /cache_control/);
  const up = JSON.parse(body);
  assert.deepEqual(up.messages[0], { role: 'system', content: [{ type: 'text', text: 'a long system prompt' }] });
  assert.equal(up.messages[3].role, 'tool');
  assert.equal(up.messages[3].content, 'sunny');
  assert.equal(up.tools[0].function.name, 'get_weather');
  // the same through /v1/chat/completions
  const oa = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
  await oa.chat.completions.create({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hi', cache_control: eph }] }],
    tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } }, cache_control: eph }],
  });
  assert.doesNotMatch((await mock.last()).body, /cache_control/);
  // openai-compatible (LiteLLM, OpenRouter-like servers use it): kept
  await client.messages.create(req('compat-model'));
  body = JSON.parse((await mock.last()).body);
  assert.deepEqual(body.messages[0].content, [{ type: 'text', text: 'a long system prompt', cache_control: eph }]);
  assert.deepEqual(body.messages[3].cache_control, eph);
  assert.deepEqual(body.tools[0].cache_control, eph);
});

test('OpenAI-format cache_control reaches Anthropic; OpenAI-Beta reaches OpenAI', async () => {
  const oa = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
  await oa.chat.completions.create({
    model: 'claude-sonnet-4',
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'cached system', cache_control: eph }] },
      { role: 'user', content: [{ type: 'text', text: 'hi', cache_control: eph }] },
    ],
    tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } }, cache_control: eph }],
  });
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.system, [{ type: 'text', text: 'cached system', cache_control: eph }]);
  assert.deepEqual(up.messages, [{ role: 'user', content: [{ type: 'text', text: 'hi', cache_control: eph }] }]);
  assert.deepEqual(up.tools[0].cache_control, eph);

  await oa.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] },
    { headers: { 'OpenAI-Beta': 'assistants=v2', 'anthropic-beta': 'not-for-openai' } });
  const last = await mock.last();
  assert.equal(last.headers['openai-beta'], 'assistants=v2');
  assert.equal(last.headers['anthropic-beta'], undefined);
});

test('forward_headers replaces the default list of a provider', async () => {
  await client.messages.create({ model: 'passing-claude', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] },
    { headers: { 'x-trace-tag': 't-1', 'anthropic-beta': 'b' } });
  const last = await mock.last();
  assert.equal(last.headers['x-trace-tag'], 't-1');
  assert.equal(last.headers['anthropic-beta'], undefined);
});

test('messages.countTokens is counted by an Anthropic upstream, cache_control and anthropic-beta passed', async () => {
  const res = await client.messages.countTokens({
    model: 'claude-sonnet-4', system: [{ type: 'text', text: 'sys', cache_control: eph }], tools: [tool],
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'hello there', cache_control: eph }] },
      { role: 'assistant', content: 'hi' },
      { role: 'user', content: 'and so?' },
    ],
  }, { headers: { 'anthropic-beta': 'token-counting-2024-11-01' } }).withResponse();
  assert.equal(res.data.input_tokens, 1003, 'the mock counts 1000 + the turns');
  assert.equal(res.response.headers.get('x-manifold-tokens-estimated'), null);
  const last = await mock.last();
  assert.equal(last.path, '/v1/messages/count_tokens');
  assert.equal(last.headers['anthropic-beta'], 'token-counting-2024-11-01');
  assert.equal(last.headers['x-api-key'], 'sk-ant-test-0123456789');
  const up = JSON.parse(last.body);
  assert.equal(up.model, 'claude-sonnet-4');
  assert.equal(up.max_tokens, undefined);
  assert.deepEqual(up.system, [{ type: 'text', text: 'sys', cache_control: eph }]);
  assert.equal(up.tools[0].cache_control.type, 'ephemeral');
  assert.equal(up.messages.length, 3);
  // model_map applies as for a message
  const mapped = await client.messages.countTokens({ model: 'passing-claude', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(mapped.input_tokens, 1001);
  assert.equal(JSON.parse((await mock.last()).body).model, 'claude-sonnet-4');
  // the upstream's error, in Anthropic's shape
  await assert.rejects(
    client.messages.countTokens({ model: 'claude-status-500', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof Anthropic.InternalServerError && e.error.error.type === 'api_error');
});

test('messages.countTokens for a provider with no counting endpoint is an estimate, marked, with no upstream call', async () => {
  const before = await mock.count();
  const short = await client.messages.countTokens({
    model: 'gpt-4o', messages: [{ role: 'user', content: 'hello there' }],
  });
  const long = await client.messages.countTokens({
    model: 'gpt-4o', system: 'x'.repeat(400), tools: [tool],
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hello there', cache_control: eph }] }],
  });
  assert.ok(Number.isInteger(short.input_tokens) && short.input_tokens > 0);
  assert.ok(long.input_tokens > short.input_tokens + 100);
  const res = await client.messages.countTokens({
    model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }],
  }).asResponse();
  assert.equal(res.headers.get('x-manifold-tokens-estimated'), 'true');
  // a model nothing serves: the estimate too
  const none = await client.messages.countTokens({ model: 'nothing-serves-this', messages: [{ role: 'user', content: 'hi' }] });
  assert.ok(none.input_tokens > 0);
  assert.equal(await mock.count(), before, 'nothing reached an upstream');
  await assert.rejects(
    client.messages.countTokens({ model: 'claude-sonnet-4', messages: [] }),
    (e) => e instanceof Anthropic.BadRequestError && e.error.type === 'error' &&
      e.error.error.type === 'invalid_request_error' && /messages: Field required/.test(e.message));
  assert.equal(await mock.count(), before, 'a bad request reached no upstream');
});

test('errors on Anthropic paths are Anthropic errors the SDK classifies', async () => {
  await assert.rejects(
    client.messages.create({ model: 'claude-sonnet-4', max_tokens: 10, messages: [{ role: 'user', content: 'x [[mock:status=500]]' }] }),
    (e) => e instanceof Anthropic.InternalServerError && e.error.error.type === 'api_error');
  await assert.rejects(
    client.messages.batches.list(),
    (e) => e instanceof Anthropic.NotFoundError && e.error.error.type === 'not_found_error');
});

test('models.list and models.retrieve in Anthropic shape (anthropic-version sent)', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.type, 'model');
    assert.equal(typeof m.display_name, 'string');
    assert.match(m.created_at, /^\d{4}-\d\d-\d\dT/);
    ids.push(m.id);
  }
  assert.ok(ids.includes('passing-claude') && ids.includes('gpt-4o'), ids.join(','));
  const page = await client.models.list();
  assert.equal(page.has_more, false);
  assert.equal(page.first_id, ids[0]);
  assert.equal(page.last_id, ids.at(-1));
  const m = await client.models.retrieve('claude-sonnet-4'); // served by a glob
  assert.deepEqual(m, { type: 'model', id: 'claude-sonnet-4', display_name: 'claude-sonnet-4', created_at: '1970-01-01T00:00:00Z' });
  await assert.rejects(client.models.retrieve('no-such-model'),
    (e) => e instanceof Anthropic.NotFoundError && e.error.error.type === 'not_found_error');
  // without anthropic-version the same path answers in OpenAI's shape
  const res = await fetch(`${gw.url}/v1/models`);
  const j = await res.json();
  assert.equal(j.object, 'list');
  assert.equal(j.data[0].object, 'model');
});

test('an unknown URL lists what the gateway serves', async () => {
  const res = await fetch(`${gw.url}/v2/nothing`, { method: 'POST', body: '{}' });
  assert.equal(res.status, 404);
  const j = await res.json();
  assert.equal(j.error.code, 'unknown_url');
  for (const e of ['POST /v1/chat/completions', 'POST /v1/embeddings', 'GET /v1/models', 'POST /v1/messages',
    'POST /v1/messages/count_tokens', 'POST /v1/responses', 'GET and DELETE /v1/responses/{id}',
    'POST /v1beta/models/{model}:generateContent', 'GET /v1beta/models', 'GET /healthz']) {
    assert.ok(j.error.message.includes(e), `${e} in: ${j.error.message}`);
  }
  assert.match(j.error.message, /^Unknown request URL: POST \/v2\/nothing\. The gateway serves /);
});
