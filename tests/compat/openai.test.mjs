// The official `openai` npm package against the gateway (and the C mock
// upstream): chat stream and non-stream, tools, embeddings, models, errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw, client;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: limited
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-limited-0123456789"]
    models: ["limited-*"]`,
  }));
  client = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('chat non-stream', async () => {
  const r = await client.chat.completions.create({
    model: 'gpt-4o', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello sdk' }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.choices[0].message.content, /You said: hello sdk/);
  assert.ok(r.usage.total_tokens > 0);
});

test('chat stream', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'stream sdk' }],
  });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content || '';
    finish = chunk.choices[0]?.finish_reason || finish;
  }
  assert.match(text, /You said: stream sdk/);
  assert.equal(finish, 'stop');
});

test('chat stream with include_usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'usage please' }],
  });
  let usage = null;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
  assert.ok(usage && usage.completion_tokens > 0);
});

test('tools, non-stream and stream', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'weather',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const r = await client.chat.completions.create({
    model: 'gpt-4o', tools, messages: [{ role: 'user', content: 'weather in Paris?' }],
  });
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'mock' });

  const runner = client.beta.chat.completions.stream({
    model: 'gpt-4o', tools, messages: [{ role: 'user', content: 'weather in Rome?' }],
  });
  const final = await runner.finalChatCompletion();
  const scall = final.choices[0].message.tool_calls[0];
  assert.equal(scall.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(scall.function.arguments), { city: 'mock' });
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
});

test('embeddings (the SDK asks for base64)', async () => {
  const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta'] });
  assert.equal(r.data.length, 2);
  assert.equal(r.data[0].embedding.length, 8);
  assert.ok(r.data[0].embedding.every((x) => typeof x === 'number' && x >= -1 && x <= 1));
  const f = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'gamma', encoding_format: 'float' });
  assert.equal(f.data[0].embedding.length, 8);
});

test('models', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('gpt-4o'));
});

test('errors surface as SDK errors with the right status', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  await assert.rejects(
    client.chat.completions.create({ model: 'limited-1', messages: [{ role: 'user', content: 'x [[mock:status=429]]' }] }),
    (e) => e instanceof OpenAI.RateLimitError);
});

test('a cut stream raises an error in the SDK', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'cut [[mock:chunks=10 cut=4 chunk_delay=30]]' }],
  });
  await assert.rejects(async () => { for await (const c of stream) void c; }, /cut/);
});
