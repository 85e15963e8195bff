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
    models: ["limited-*"]
  - name: openai-responses
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-resp-0123456789"]
    models: ["o1-pro"]
    options: { wire: responses }`,
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

// Claude Code sends PDFs (and text documents) as `document` blocks: each
// upstream gets them in its own documented form, or a 400 naming the block.
const eph = { type: 'ephemeral' };
const PDF = 'JVBERi0xLjQKJcfsj6IK';
const pdfDoc = { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: PDF }, title: 'Q3 report.pdf', cache_control: eph };
const textDoc = { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'plain notes' }, title: 'notes', citations: { enabled: true } };
const urlDoc = { type: 'document', source: { type: 'url', url: 'https://example.com/a.pdf' } };
const ask = { type: 'text', text: 'summarise' };
const withDocs = (model, ...docs) => ({ model, max_tokens: 50, messages: [{ role: 'user', content: [...docs, ask] }] });

test('document blocks reach an Anthropic upstream as sent (base64, text, url; title, citations, cache_control)', async () => {
  await client.messages.create(withDocs('claude-sonnet-4', pdfDoc, textDoc, urlDoc));
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[0].content, [pdfDoc, textDoc, urlDoc, ask]);
});

test('document blocks to OpenAI: a PDF as a file part, text as text; a URL is a 400 naming the block', async () => {
  await client.messages.create(withDocs('gpt-4o', pdfDoc, textDoc));
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[0].content, [
    { type: 'file', file: { filename: 'Q3 report.pdf', file_data: `data:application/pdf;base64,${PDF}` } },
    { type: 'text', text: 'plain notes' },
    { type: 'text', text: 'summarise' },
  ]);
  const before = await mock.count();
  await assert.rejects(client.messages.create(withDocs('gpt-4o', urlDoc)), (e) =>
    e instanceof Anthropic.BadRequestError && e.error.type === 'error' &&
    e.error.error.type === 'invalid_request_error' && /document block with a 'url' source/.test(e.error.error.message));
  assert.equal(await mock.count(), before, 'nothing sent upstream');
});

test('document blocks to the Responses API: input_file with file_data or file_url, text as input_text', async () => {
  await client.messages.create(withDocs('o1-pro', pdfDoc, urlDoc, textDoc));
  const last = await mock.last();
  assert.equal(last.path, '/v1/responses');
  const up = JSON.parse(last.body);
  assert.deepEqual(up.input[0].content.slice(0, 3), [
    { type: 'input_file', filename: 'Q3 report.pdf', file_data: `data:application/pdf;base64,${PDF}` },
    { type: 'input_file', file_url: 'https://example.com/a.pdf' },
    { type: 'input_text', text: 'plain notes' },
  ]);
});

test('document blocks to Gemini: inline data (application/pdf, text/plain); a URL is a 400', async () => {
  await client.messages.create(withDocs('gemini-2.5-flash', pdfDoc, textDoc));
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.contents[0].parts, [
    { inlineData: { mimeType: 'application/pdf', data: PDF } },
    { inlineData: { mimeType: 'text/plain', data: Buffer.from('plain notes').toString('base64') } },
    { text: 'summarise' },
  ]);
  await assert.rejects(client.messages.create(withDocs('gemini-2.5-flash', urlDoc)), (e) =>
    e instanceof Anthropic.BadRequestError && /document block with a 'url' source/.test(e.error.error.message));
});

test('document blocks to Bedrock: Converse document blocks with unique names; no text beside one is a 400', async () => {
  await client.messages.create({ model: BEDROCK, max_tokens: 50, messages: [
    { role: 'user', content: [pdfDoc, ask] },
    { role: 'assistant', content: 'ok' },
    { role: 'user', content: [{ ...pdfDoc, title: undefined, cache_control: undefined }, textDoc, ask] },
  ] });
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[0].content, [
    { document: { format: 'pdf', name: 'Q3 report pdf 1', source: { bytes: PDF } } },
    { cachePoint: { type: 'default' } },
    { text: 'summarise' },
  ]);
  assert.deepEqual(up.messages[2].content, [
    { document: { format: 'pdf', name: 'Document 2', source: { bytes: PDF } } },
    { document: { format: 'txt', name: 'notes 3', source: { bytes: Buffer.from('plain notes').toString('base64') } } },
    { text: 'summarise' },
  ]);
  await assert.rejects(client.messages.create({ model: BEDROCK, max_tokens: 50, messages: [{ role: 'user', content: [pdfDoc] }] }),
    (e) => e instanceof Anthropic.BadRequestError && /document block and no text/.test(e.error.error.message));
  await assert.rejects(client.messages.create(withDocs(BEDROCK, urlDoc)),
    (e) => e instanceof Anthropic.BadRequestError && /'url' source/.test(e.error.error.message));
});

test('images and documents inside a tool_result go in the user message after the tool messages', async () => {
  const img = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } };
  const turn = (model) => ({ model, max_tokens: 50, tools: [weather], messages: [
    { role: 'user', content: 'screenshot please' },
    { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_9', name: 'get_weather', input: { city: 'Oslo' } }] },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_9', content: [{ type: 'text', text: 'here' }, img, pdfDoc] }] },
  ] });
  await client.messages.create(turn('gpt-4o'));
  let up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages.slice(2), [
    { role: 'tool', tool_call_id: 'toolu_9', content: 'here' },
    { role: 'user', content: [
      { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
      { type: 'file', file: { filename: 'Q3 report.pdf', file_data: `data:application/pdf;base64,${PDF}` } },
    ] },
  ]);
  await client.messages.create(turn('claude-sonnet-4'));
  up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[2], { role: 'user', content: [
    { type: 'tool_result', tool_use_id: 'toolu_9', content: 'here' }, img, pdfDoc,
  ] });
});
