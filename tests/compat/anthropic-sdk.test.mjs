// The official `@anthropic-ai/sdk` against POST /v1/messages: served by an
// OpenAI-wire upstream, an Anthropic upstream, Gemini and Bedrock (all
// through the mock and the one canonical form), non-stream and stream,
// tools and tool results, errors in Anthropic's shape.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
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
  - name: gemini
    type: gemini
    base_url: ${mock.url}
    keys: ["AIza-test-0123456789"]
    models: ["gemini-*"]
  - name: bedrock
    type: bedrock
    base_url: ${mock.url}
    keys: ["AKIDMOCK5:mock/secret/AKIDMOCK5"]
    models: ["anthropic.*"]
  - name: limited
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-limited-0123456789"]
    models: ["limited-*"]`,
  }));
  client = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const weather = {
  name: 'get_weather', description: 'Weather of a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

const BEDROCK = 'anthropic.claude-3-5-haiku-20241022-v1:0';

for (const model of ['gpt-4o', 'claude-sonnet-4', 'gemini-2.5-flash', BEDROCK]) {
  test(`messages.create non-stream, served by ${model}`, async () => {
    const m = await client.messages.create({
      model, max_tokens: 200, system: 'be brief',
      messages: [{ role: 'user', content: 'hello from the anthropic sdk' }],
    });
    assert.equal(m.type, 'message');
    assert.equal(m.role, 'assistant');
    assert.equal(m.content[0].type, 'text');
    assert.equal(m.content[0].text, 'Hello from mock. You said: hello from the anthropic sdk');
    assert.equal(m.stop_reason, 'end_turn');
    assert.ok(m.usage.input_tokens > 0 && m.usage.output_tokens > 0);
    const up = JSON.parse((await mock.last()).body);
    if (model === 'gpt-4o') {
      assert.deepEqual(up.messages, [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hello from the anthropic sdk' },
      ]);
      assert.equal(up.max_tokens, 200);
    } else if (model === 'gemini-2.5-flash') {
      assert.deepEqual(up.systemInstruction, { parts: [{ text: 'be brief' }] });
      assert.deepEqual(up.generationConfig, { maxOutputTokens: 200 });
    } else if (model === BEDROCK) {
      assert.deepEqual(up.system, [{ text: 'be brief' }]);
      assert.deepEqual(up.inferenceConfig, { maxTokens: 200 });
    } else {
      assert.deepEqual(up.system, [{ type: 'text', text: 'be brief' }]);
      assert.equal(up.max_tokens, 200);
    }
  });

  test(`messages.stream with finalMessage, served by ${model}`, async () => {
    const stream = client.messages.stream({
      model, max_tokens: 200, messages: [{ role: 'user', content: 'stream it please' }],
    });
    let text = '';
    stream.on('text', (t) => { text += t; });
    const final = await stream.finalMessage();
    assert.equal(text, 'Hello from mock. You said: stream it please');
    assert.equal(final.content[0].text, text);
    assert.equal(final.stop_reason, 'end_turn');
    assert.ok(final.usage.output_tokens > 0);
  });

  test(`tools: tool_use (non-stream and stream) and tool_result, served by ${model}`, async () => {
    const m = await client.messages.create({
      model, max_tokens: 200, tools: [weather], tool_choice: { type: 'any' },
      messages: [{ role: 'user', content: 'weather in Paris?' }],
    });
    const use = m.content.find((b) => b.type === 'tool_use');
    assert.equal(m.stop_reason, 'tool_use');
    assert.equal(use.name, 'get_weather');
    assert.deepEqual(use.input, { city: 'mock' });

    const stream = client.messages.stream({
      model, max_tokens: 200, tools: [weather],
      messages: [{ role: 'user', content: 'weather in Rome?' }],
    });
    const final = await stream.finalMessage();
    const su = final.content.find((b) => b.type === 'tool_use');
    assert.equal(final.stop_reason, 'tool_use');
    assert.equal(su.name, 'get_weather');
    assert.deepEqual(su.input, { city: 'mock' });

    const r = await client.messages.create({
      model, max_tokens: 200, tools: [weather],
      messages: [
        { role: 'user', content: 'weather in Paris?' },
        { role: 'assistant', content: [{ type: 'tool_use', id: use.id, name: 'get_weather', input: { city: 'Paris' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny, 21C' }] },
      ],
    });
    if (model === 'gpt-4o') {
      const up = JSON.parse((await mock.last()).body);
      assert.deepEqual(up.messages.slice(1), [
        { role: 'assistant', content: null, tool_calls: [{ id: use.id, type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
        { role: 'tool', tool_call_id: use.id, content: 'sunny, 21C' },
      ]);
    } else if (model === 'gemini-2.5-flash') {
      assert.equal(r.content[0].text, 'Tool get_weather said: {"content":"sunny, 21C"}');
    } else if (model === BEDROCK) {
      assert.equal(r.content[0].text, 'Tool said: [{"text":"sunny, 21C"}]');
    } else {
      assert.equal(r.content[0].text, 'Tool said: sunny, 21C');
    }
  });
}

test('errors arrive in Anthropic shape with the right status', async () => {
  await assert.rejects(
    client.messages.create({ model: 'no-such-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof Anthropic.NotFoundError && e.error.type === 'error');
  await assert.rejects(
    client.messages.create({ model: 'limited-1', max_tokens: 10, messages: [{ role: 'user', content: 'x [[mock:status=429]]' }] }),
    (e) => e instanceof Anthropic.RateLimitError);
  const res = await fetch(gw.url + '/v1/messages', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
  });
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), { type: 'error', error: { type: 'invalid_request_error', message: 'max_tokens: Field required (an integer)' } });
});
