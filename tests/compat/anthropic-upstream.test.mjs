// The official `openai` package against the anthropic provider through the
// mock's Messages API: each canonical request becomes the exact Messages
// request (golden checks on what reached the upstream), answers and
// streams come back as chat completions and chunks (text, tool calls,
// stop reasons, usage with cache tokens), errors map to the right status.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
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
  - name: anthropic-errs
    type: anthropic
    base_url: ${mock.url}/v1
    keys: ["sk-ant-errs-0123456789"]
    models: ["errs-claude-*"]
    options: { default_max_tokens: 1000 }`,
  }));
  client = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const weather = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

test('non-stream: system, stop, max_tokens default, usage with cache tokens', async () => {
  const r = await client.chat.completions.create({
    model: 'claude-sonnet-4', stop: ['END'], temperature: 0.5, user: 'u-1',
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello claude' }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, 'Hello from mock. You said: hello claude');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.prompt_tokens, r.usage.total_tokens - r.usage.completion_tokens);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 3);
  const last = await mock.last();
  assert.equal(last.path, '/v1/messages');
  assert.equal(last.headers['x-api-key'], 'sk-ant-test-0123456789');
  assert.equal(last.headers['anthropic-version'], '2023-06-01');
  assert.equal(last.headers.authorization, undefined);
  assert.deepEqual(JSON.parse(last.body), {
    model: 'claude-sonnet-4',
    system: [{ type: 'text', text: 'be brief' }],
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hello claude' }] }],
    max_tokens: 4096, stop_sequences: ['END'], temperature: 0.5, metadata: { user_id: 'u-1' },
  });
});

test('stream: text deltas, finish reason, usage chunk only when asked', async () => {
  let stream = await client.chat.completions.create({
    model: 'claude-sonnet-4', stream: true, messages: [{ role: 'user', content: 'stream claude' }],
  });
  let text = '', finish = null, usage = null;
  for await (const c of stream) {
    text += c.choices[0]?.delta?.content || '';
    finish = c.choices[0]?.finish_reason || finish;
    usage = c.usage || usage;
  }
  assert.equal(text, 'Hello from mock. You said: stream claude');
  assert.equal(finish, 'stop');
  assert.equal(usage, null);
  assert.equal(JSON.parse((await mock.last()).body).stream, true);
  stream = await client.chat.completions.create({
    model: 'claude-sonnet-4', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'count me' }],
  });
  for await (const c of stream) usage = c.usage || usage;
  assert.ok(usage.completion_tokens > 0 && usage.prompt_tokens_details.cached_tokens === 3);
});

test('tools: definitions, choice, calls (non-stream and stream), results', async () => {
  const r = await client.chat.completions.create({
    model: 'claude-sonnet-4', tools: [weather], tool_choice: 'required', parallel_tool_calls: false,
    messages: [{ role: 'user', content: 'weather in Paris?' }],
  });
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'mock' });
  let up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.tools, [{ name: 'get_weather', description: 'Weather of a city', input_schema: weather.function.parameters }]);
  assert.deepEqual(up.tool_choice, { type: 'any', disable_parallel_tool_use: true });

  const stream = await client.chat.completions.create({
    model: 'claude-sonnet-4', stream: true, tools: [weather],
    messages: [{ role: 'user', content: 'weather in Rome?' }],
  });
  let args = '', name = '', id = '', finish = null;
  for await (const c of stream) {
    const tc = c.choices[0]?.delta?.tool_calls?.[0];
    if (tc?.function?.name) name = tc.function.name;
    if (tc?.id) id = tc.id;
    args += tc?.function?.arguments || '';
    finish = c.choices[0]?.finish_reason || finish;
  }
  assert.equal(name, 'get_weather');
  assert.equal(id, 'toolu_mock_1');
  assert.deepEqual(JSON.parse(args), { city: 'mock' });
  assert.equal(finish, 'tool_calls');

  // the round trip: the assistant's call and two tool results
  const r2 = await client.chat.completions.create({
    model: 'claude-sonnet-4', tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } },
    messages: [
      { role: 'user', content: 'weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'toolu_1', content: 'sunny, 21C' },
    ],
  });
  assert.equal(r2.choices[0].message.content, 'Tool said: sunny, 21C');
  up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages, [
    { role: 'user', content: [{ type: 'text', text: 'weather in Paris?' }] },
    { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny, 21C' }] },
  ]);
  assert.deepEqual(up.tool_choice, { type: 'tool', name: 'get_weather' });
});

test('images and reasoning effort', async () => {
  await client.chat.completions.create({
    model: 'claude-sonnet-4', reasoning_effort: 'low', max_tokens: 500,
    messages: [{ role: 'user', content: [
      { type: 'text', text: 'what is this?' },
      { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
      { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
    ] }],
  });
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[0].content, [
    { type: 'text', text: 'what is this?' },
    { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
    { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
  ]);
  assert.deepEqual(up.thinking, { type: 'enabled', budget_tokens: 1024 });
  assert.equal(up.max_tokens, 1024 + 500, 'thinking needs max_tokens above its budget: the answer keeps its 500');
});

test('errors: 400, refused key, 429 with Retry-After, overloaded', async () => {
  const ask = (content, model = 'errs-claude-a') =>
    client.chat.completions.create({ model, messages: [{ role: 'user', content }] });
  await assert.rejects(ask('bad [[mock:status=400]]'), (e) => e instanceof OpenAI.BadRequestError);
  assert.equal(JSON.parse((await mock.last()).body).max_tokens, 1000, 'default_max_tokens from the config');
  await assert.rejects(ask('x [[mock:status=529]]'), (e) => e.status === 503);
  await assert.rejects(ask('x [[mock:status=401]]', 'errs-claude-b'), (e) => {
    assert.equal(e.status, 502);
    assert.ok(!JSON.stringify(e.error).includes('sk-ant'));
    return true;
  });
});
