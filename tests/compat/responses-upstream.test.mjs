// OpenAI's Responses API as an upstream wire: a provider with
// `options.wire: responses` (every model) or `options.responses_models`
// (the models matching a pattern) gets chat requests as POST /responses,
// and its Responses (whole and as response.* event streams) come back as
// chat completions and chunks, to the official `openai` SDK's
// chat.completions, its responses.create and the Anthropic SDK alike.
// What reaches the upstream (the mock, speaking the Responses wire) is
// checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, config, spawnSync, BIN, writeConfig } from '../integration/harness.mjs';

let mock, gw, client;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: openai-responses
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-resp-0123456789"]
    models: ["o1-pro", "codex-*"]
    options: { wire: responses }
  - name: openai-mixed
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-mixed-0123456789"]
    models: ["mixed-*"]
    options: { responses_models: ["mixed-pro*"] }`,
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

test('chat.completions to a Responses-only model: the request as POST /responses, the answer as a completion', async () => {
  const r = await client.chat.completions.create({
    model: 'o1-pro', max_tokens: 300, temperature: 0.5,
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: [{ type: 'text', text: 'hello' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBOR', detail: 'low' } }] },
    ],
    response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object' }, strict: true } },
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, 'Hello from mock. You said: hello');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.model, 'o1-pro');
  assert.match(r.id, /^chatcmpl-resp_mock_/);
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  const last = await mock.last();
  assert.equal(last.path, '/v1/responses');
  assert.equal(last.headers.authorization, 'Bearer sk-resp-0123456789');
  assert.deepEqual(JSON.parse(last.body), {
    model: 'o1-pro', store: false,
    input: [
      { type: 'message', role: 'system', content: 'be brief' },
      { type: 'message', role: 'user', content: [
        { type: 'input_text', text: 'hello' },
        { type: 'input_image', image_url: 'data:image/png;base64,iVBOR', detail: 'low' },
      ] },
    ],
    max_output_tokens: 300, temperature: 0.5,
    text: { format: { type: 'json_schema', name: 'answer', schema: { type: 'object' }, strict: true } },
  });
});

test('stream: response.* events become chunks, usage included when asked', async () => {
  const stream = await client.chat.completions.create({
    model: 'codex-mini', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream over responses' }],
  });
  let text = '', finish = null, usage = null, roles = 0;
  for await (const ch of stream) {
    if (ch.usage) usage = ch.usage;
    const d = ch.choices[0]?.delta;
    if (d?.role) roles++;
    text += d?.content || '';
    finish = ch.choices[0]?.finish_reason || finish;
  }
  assert.equal(text, 'Hello from mock. You said: stream over responses');
  assert.equal(finish, 'stop');
  assert.equal(roles, 1);
  assert.ok(usage && usage.prompt_tokens > 0 && usage.completion_tokens > 0);
  const up = JSON.parse((await mock.last()).body);
  assert.equal(up.stream, true);
  assert.equal(up.model, 'codex-mini');
});

test('tools: flat function tools up, function_call items back as tool_calls, results as function_call_output', async () => {
  const r = await client.chat.completions.create({
    model: 'o1-pro', tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } },
    messages: [{ role: 'user', content: 'weather in Oslo?' }],
  });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.deepEqual(r.choices[0].message.tool_calls, [
    { id: 'call_mock_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"mock"}' } },
  ]);
  let up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.tools, [{ type: 'function', name: 'get_weather', description: 'Weather of a city', parameters: weather.function.parameters }]);
  assert.deepEqual(up.tool_choice, { type: 'function', name: 'get_weather' });

  const s = await client.chat.completions.create({
    model: 'o1-pro', tools: [weather], stream: true, messages: [{ role: 'user', content: 'weather in Oslo?' }],
  });
  const calls = [];
  let finish;
  for await (const ch of s) {
    for (const tc of ch.choices[0]?.delta?.tool_calls || []) {
      calls[tc.index] ??= { id: '', name: '', args: '' };
      if (tc.id) calls[tc.index].id = tc.id;
      if (tc.function?.name) calls[tc.index].name = tc.function.name;
      calls[tc.index].args += tc.function?.arguments || '';
    }
    finish = ch.choices[0]?.finish_reason || finish;
  }
  assert.deepEqual(calls, [{ id: 'call_mock_1', name: 'get_weather', args: '{"city":"mock"}' }]);
  assert.equal(finish, 'tool_calls');

  const done = await client.chat.completions.create({
    model: 'o1-pro', tools: [weather],
    messages: [
      { role: 'user', content: 'weather in Oslo?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_mock_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }] },
      { role: 'tool', tool_call_id: 'call_mock_1', content: 'snow' },
    ],
  });
  assert.equal(done.choices[0].message.content, 'Hello from mock. You said: weather in Oslo?');
  up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.input.slice(1), [
    { type: 'function_call', call_id: 'call_mock_1', name: 'get_weather', arguments: '{"city":"Oslo"}' },
    { type: 'function_call_output', call_id: 'call_mock_1', output: 'snow' },
  ]);
});

test('reasoning and an incomplete answer', async () => {
  const r = await client.chat.completions.create({
    model: 'o1-pro', reasoning_effort: 'high', messages: [{ role: 'user', content: 'think' }],
  });
  assert.equal(r.choices[0].message.reasoning_content, 'Thinking about it.');
  assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 7);
  assert.deepEqual(JSON.parse((await mock.last()).body).reasoning, { effort: 'high', summary: 'auto' });
  const cut = await client.chat.completions.create({ model: 'o1-pro', max_tokens: 4, messages: [{ role: 'user', content: 'long' }] });
  assert.equal(cut.choices[0].finish_reason, 'length');
});

test('responses_models: only the matching models go over the Responses API', async () => {
  await client.chat.completions.create({ model: 'mixed-pro-1', messages: [{ role: 'user', content: 'a' }] });
  assert.equal((await mock.last()).path, '/v1/responses');
  const r = await client.chat.completions.create({ model: 'mixed-small', messages: [{ role: 'user', content: 'b' }] });
  assert.equal(r.choices[0].message.content, 'Hello from mock. You said: b');
  assert.equal((await mock.last()).path, '/v1/chat/completions');
});

test('other clients through the same wire: responses.create (streamed) and Anthropic messages', async () => {
  const stream = await client.responses.create({ model: 'o1-pro', input: 'from the responses api', stream: true });
  let done;
  for await (const ev of stream) if (ev.type === 'response.completed') done = ev.response;
  assert.equal(done.output.find((o) => o.type === 'message').content[0].text, 'Hello from mock. You said: from the responses api');
  assert.equal((await mock.last()).path, '/v1/responses');
  const ant = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
  const m = await ant.messages.create({ model: 'codex-mini', max_tokens: 100, messages: [{ role: 'user', content: 'from claude code' }] });
  assert.equal(m.content[0].text, 'Hello from mock. You said: from claude code');
  assert.equal(m.stop_reason, 'end_turn');
});

test('an upstream error is the client\'s error (last: the key rests after a 429)', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'o1-pro', messages: [{ role: 'user', content: 'x [[mock:status=429]]' }] }),
    (e) => e instanceof OpenAI.RateLimitError);
  await assert.rejects(
    client.chat.completions.create({ model: 'mixed-pro-2', messages: [{ role: 'user', content: 'x [[mock:status=400]]' }] }),
    (e) => e instanceof OpenAI.BadRequestError);
});

test('the wire options are checked', () => {
  for (const [opt, msg] of [
    ['{ wire: bogus }', /options\.wire must be chat or responses/],
    ['{ responses_models: o1-pro }', /options\.responses_models must be a list/],
  ]) {
    const file = writeConfig(config('http://127.0.0.1:9', {
      extraProviders: `
  - name: bad
    type: openai
    base_url: http://127.0.0.1:9/v1
    models: ["bad-*"]
    options: ${opt}`,
    }));
    const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, msg);
  }
  const az = writeConfig(config('http://127.0.0.1:9', {
    extraProviders: `
  - name: az
    type: azure
    base_url: http://127.0.0.1:9
    models: ["az-*"]
    options: { wire: responses }`,
  }));
  const r = spawnSync(BIN, ['-t', '-c', az], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /Responses wire is not served for azure/);
});
