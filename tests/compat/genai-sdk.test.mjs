// The official `@google/genai` SDK against the gateway's Gemini-native
// inbound (/v1beta/models/{model}:generateContent and the rest), served by
// an OpenAI-wire upstream (the mock) through the canonical form (and by
// Anthropic and Gemini upstreams at the end): plain and
// streamed answers, function calls and their results, token counting,
// embeddings, the model list, and errors in Google's shape. What reaches
// the upstream is checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GoogleGenAI, Type, ApiError } from '@google/genai';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw, ai;

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
    models: ["gemini-*"]`,
  }));
  ai = new GoogleGenAI({ apiKey: 'client-key', httpOptions: { baseUrl: gw.url } });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const weather = {
  functionDeclarations: [{
    name: 'get_weather', description: 'Weather of a city',
    parameters: { type: Type.OBJECT, properties: { city: { type: Type.STRING } }, required: ['city'] },
  }],
};

test('generateContent, served by an OpenAI upstream', async () => {
  const r = await ai.models.generateContent({
    model: 'gpt-4o', contents: 'hello from genai',
    config: { systemInstruction: 'be brief', maxOutputTokens: 100, temperature: 0.5, topK: 3 },
  });
  assert.equal(r.text, 'Hello from mock. You said: hello from genai');
  assert.equal(r.candidates[0].finishReason, 'STOP');
  assert.equal(r.candidates[0].content.role, 'model');
  const u = r.usageMetadata;
  assert.ok(u.promptTokenCount > 0 && u.candidatesTokenCount > 0);
  assert.equal(u.totalTokenCount, u.promptTokenCount + u.candidatesTokenCount);
  const last = await mock.last();
  assert.equal(last.path, '/v1/chat/completions');
  const up = JSON.parse(last.body);
  assert.equal(up.model, 'gpt-4o');
  assert.deepEqual(up.messages, [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: 'hello from genai' },
  ]);
  assert.equal(up.max_tokens, 100);
  assert.equal(up.temperature, 0.5);
  assert.equal(up.stream, undefined);
});

test('generateContentStream (alt=sse), served by an OpenAI upstream', async () => {
  const stream = await ai.models.generateContentStream({
    model: 'gpt-4o', contents: [{ role: 'user', parts: [{ text: 'stream [[mock:chunks=4]] it' }] }],
  });
  let text = '', n = 0, lastChunk;
  for await (const ch of stream) {
    n++;
    text += ch.text ?? '';
    lastChunk = ch;
  }
  assert.ok(n >= 3, `chunks: ${n}`);
  assert.equal(text, 'tok tok tok tok');
  assert.equal(lastChunk.candidates[0].finishReason, 'STOP');
  assert.ok(lastChunk.usageMetadata.promptTokenCount > 0);
  assert.ok(lastChunk.usageMetadata.candidatesTokenCount > 0);
  const last = await mock.last();
  const up = JSON.parse(last.body);
  assert.equal(up.stream, true);
  assert.deepEqual(up.stream_options, { include_usage: true });
});

test('function calls and their results', async () => {
  const r = await ai.models.generateContent({
    model: 'gpt-4o', contents: 'weather in Paris?',
    config: { tools: [weather], toolConfig: { functionCallingConfig: { mode: 'ANY' } } },
  });
  assert.equal(r.functionCalls.length, 1);
  assert.equal(r.functionCalls[0].name, 'get_weather');
  assert.deepEqual(r.functionCalls[0].args, { city: 'mock' });
  let up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.tools, [{
    type: 'function',
    function: {
      name: 'get_weather', description: 'Weather of a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  }]);
  assert.equal(up.tool_choice, 'required');

  // the streamed call arrives whole, as Gemini sends it
  const stream = await ai.models.generateContentStream({
    model: 'gpt-4o', contents: 'weather in Rome?', config: { tools: [weather] },
  });
  const calls = [];
  for await (const ch of stream) calls.push(...(ch.functionCalls ?? []));
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(calls[0].args, { city: 'mock' });

  // the call and its result sent back: paired into tool_calls and a tool message
  await ai.models.generateContent({
    model: 'gpt-4o',
    contents: [
      { role: 'user', parts: [{ text: 'weather in Paris?' }] },
      { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: { city: 'Paris' } } }] },
      { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { temp: '21C' } } }] },
    ],
    config: { tools: [weather], toolConfig: { functionCallingConfig: { mode: 'NONE' } } },
  });
  up = JSON.parse((await mock.last()).body);
  const id = up.messages[1].tool_calls[0].id;
  assert.deepEqual(up.messages.slice(1), [
    { role: 'assistant', content: null, tool_calls: [{ id, type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: id, content: '{"temp":"21C"}' },
  ]);
  assert.equal(up.tool_choice, 'none');
});

test('JSON output: responseMimeType and responseSchema', async () => {
  await ai.models.generateContent({
    model: 'gpt-4o', contents: 'a city as JSON',
    config: {
      responseMimeType: 'application/json',
      responseSchema: { type: Type.OBJECT, properties: { name: { type: Type.STRING } } },
    },
  });
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.response_format, {
    type: 'json_schema',
    json_schema: { name: 'response', schema: { type: 'object', properties: { name: { type: 'string' } } } },
  });
});

test('countTokens is the gateway estimate, with no upstream call', async () => {
  const before = await mock.count();
  const r = await ai.models.countTokens({ model: 'gpt-4o', contents: 'count these words please, all of them' });
  assert.ok(r.totalTokens >= 8 && r.totalTokens <= 14, `totalTokens ${r.totalTokens}`);
  assert.equal(await mock.count(), before);
  const res = await fetch(`${gw.url}/v1beta/models/gpt-4o:countTokens`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ contents: [{ parts: [{ text: 'abcdabcd' }] }] }),
  });
  assert.equal(res.headers.get('x-manifold-tokens-estimated'), 'true');
  assert.deepEqual(await res.json(), { totalTokens: 3 });
});

test('countTokens for a Gemini model is counted by the upstream\'s own :countTokens', async () => {
  const r = await ai.models.countTokens({
    model: 'gemini-2.5-flash',
    contents: [{ role: 'user', parts: [{ text: 'one' }] }, { role: 'model', parts: [{ text: 'two' }] },
      { role: 'user', parts: [{ text: 'three' }] }],
  });
  assert.equal(r.totalTokens, 1003, 'the mock counts 1000 + the turns');
  const last = await mock.last();
  assert.equal(last.path, '/v1beta/models/gemini-2.5-flash:countTokens');
  assert.equal(last.headers['x-goog-api-key'], 'AIza-test-0123456789');
  const up = JSON.parse(last.body);
  assert.equal(up.generateContentRequest.model, 'models/gemini-2.5-flash');
  assert.equal(up.generateContentRequest.contents.length, 3);
  // a generateContentRequest with a system instruction and tools, over the wire
  const res = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:countTokens`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': 'client-key' },
    body: JSON.stringify({ generateContentRequest: {
      model: 'models/gemini-2.5-flash', contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
      systemInstruction: { parts: [{ text: 'be brief' }] }, tools: [weather],
    } }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-tokens-estimated'), null);
  assert.deepEqual(await res.json(), { totalTokens: 1001 });
  const up2 = JSON.parse((await mock.last()).body).generateContentRequest;
  assert.deepEqual(up2.systemInstruction.parts, [{ text: 'be brief' }]);
  assert.equal(up2.tools[0].functionDeclarations[0].name, 'get_weather');
  // and a Claude model through Gemini's path: Anthropic's count_tokens
  const c = await ai.models.countTokens({ model: 'claude-sonnet-4', contents: 'hello' });
  assert.equal(c.totalTokens, 1001);
  assert.equal((await mock.last()).path, '/v1/messages/count_tokens');
});

test('embedContent (batchEmbedContents) and embedContent over the wire', async () => {
  const r = await ai.models.embedContent({
    model: 'text-embedding-3-small', contents: ['first text', 'second text'],
    config: { outputDimensionality: 8 },
  });
  assert.equal(r.embeddings.length, 2);
  assert.ok(r.embeddings.every((e) => Array.isArray(e.values) && e.values.length > 0));
  const last = await mock.last();
  assert.equal(last.path, '/v1/embeddings');
  const up = JSON.parse(last.body);
  assert.deepEqual(up.input, ['first text', 'second text']);
  assert.equal(up.dimensions, 8);
  assert.equal(up.model, 'text-embedding-3-small');

  const res = await fetch(`${gw.url}/v1beta/models/text-embedding-3-small:embedContent`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ content: { parts: [{ text: 'one text' }] } }),
  });
  assert.equal(res.status, 200);
  const one = await res.json();
  assert.ok(Array.isArray(one.embedding.values) && one.embedding.values.length > 0);
  assert.equal(JSON.parse((await mock.last()).body).input, 'one text');
});

test('models.list and models.get in Google shape', async () => {
  const names = [];
  for await (const m of await ai.models.list()) names.push(m.name);
  assert.ok(names.includes('models/gpt-4o'), names.join(','));
  assert.ok(!names.some((n) => n.includes('*')));
  const m = await ai.models.get({ model: 'gpt-4o' });
  assert.equal(m.name, 'models/gpt-4o');
  assert.ok(m.supportedActions.includes('generateContent'));
  await assert.rejects(ai.models.get({ model: 'no-such-model' }),
    (e) => e instanceof ApiError && e.status === 404);
});

test('errors arrive in Google shape with its status names', async () => {
  await assert.rejects(
    ai.models.generateContent({ model: 'no-such-model', contents: 'x' }),
    (e) => e instanceof ApiError && e.status === 404);
  let res = await fetch(`${gw.url}/v1beta/models/gpt-4o:generateContent`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"contents": []}',
  });
  assert.equal(res.status, 400);
  let j = await res.json();
  assert.equal(j.error.code, 400);
  assert.equal(j.error.status, 'INVALID_ARGUMENT');
  assert.match(j.error.message, /contents is required/);
  res = await fetch(`${gw.url}/v1beta/models/gpt-4o:generateContent`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }], tools: [{ googleSearch: {} }] }),
  });
  j = await res.json();
  assert.equal(res.status, 400);
  assert.match(j.error.message, /googleSearch|built-in tools/);
  res = await fetch(`${gw.url}/v1beta/models/gpt-4o:predict`, { method: 'POST', body: '{}' });
  assert.equal(res.status, 404);
  j = await res.json();
  assert.equal(j.error.status, 'NOT_FOUND');
  res = await fetch(`${gw.url}/v1beta/models/gpt-4o:generateContent`);
  assert.equal(res.status, 405);
  assert.equal((await res.json()).error.code, 405);
  // an upstream failure: Google's status name for the gateway's status
  await assert.rejects(
    ai.models.generateContent({ model: 'gpt-4o', contents: 'x [[mock:status=503]]' }),
    (e) => e instanceof ApiError && e.status === 502 && /"status":"UNAVAILABLE"/.test(e.message));
});

// Golden: the exact records of a streamed answer, in both framings, and
// of a streamed function call; the ids the upstream gave aside.
const streamRaw = async (query, body) => {
  const res = await fetch(`${gw.url}/v1beta/models/gpt-4o:streamGenerateContent${query}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  assert.equal(res.status, 200);
  return { type: res.headers.get('content-type'), text: (await res.text()).replace(/"responseId":"[^"]*"/g, '"responseId":"ID"') };
};
const rec = (parts, extra = {}) => ({
  candidates: [{ content: { role: 'model', parts }, index: 0, ...(extra.finish ? { finishReason: extra.finish } : {}) }],
  modelVersion: 'gpt-4o',
  ...(extra.usage ? { usageMetadata: extra.usage } : {}),
  responseId: 'ID',
});
const WORDS = ['Hello', ' from', ' mock.', ' You', ' said:', ' two', ' words'];
const textRecords = (usage) => [...WORDS.map((w) => rec([{ text: w }])), rec([{ text: '' }], { finish: 'STOP', usage })];

test('golden: streamGenerateContent?alt=sse, every record and its framing', async () => {
  const { type, text } = await streamRaw('?alt=sse', { contents: [{ parts: [{ text: 'two words' }] }] });
  assert.equal(type, 'text/event-stream; charset=utf-8');
  assert.ok(text.endsWith('\r\n\r\n'));
  const events = text.slice(0, -4).split('\r\n\r\n');
  assert.ok(events.every((e) => e.startsWith('data: ')));
  const got = events.map((e) => JSON.parse(e.slice(6)));
  const usage = got.at(-1).usageMetadata;
  assert.ok(usage.promptTokenCount > 0 && usage.candidatesTokenCount > 0);
  assert.deepEqual(got, textRecords({ promptTokenCount: usage.promptTokenCount, candidatesTokenCount: usage.candidatesTokenCount, totalTokenCount: usage.promptTokenCount + usage.candidatesTokenCount }));
});

test('golden: streamGenerateContent without alt=sse is one JSON array, written element by element', async () => {
  const { type, text } = await streamRaw('', { contents: [{ parts: [{ text: 'two words' }] }] });
  assert.equal(type, 'application/json; charset=UTF-8');
  assert.ok(text.startsWith('[{') && text.endsWith('}]'));
  assert.equal(text.split(',\r\n{').length, WORDS.length + 1);
  const got = JSON.parse(text);
  const usage = got.at(-1).usageMetadata;
  assert.deepEqual(got, textRecords({ promptTokenCount: usage.promptTokenCount, candidatesTokenCount: usage.candidatesTokenCount, totalTokenCount: usage.promptTokenCount + usage.candidatesTokenCount }));
});

test('golden: a streamed function call is one whole functionCall record', async () => {
  const { text } = await streamRaw('?alt=sse', {
    contents: [{ parts: [{ text: 'call it' }] }],
    tools: [{ functionDeclarations: [{ name: 'f', parameters: { type: 'OBJECT', properties: { q: { type: 'STRING' } }, required: ['q'] } }] }],
  });
  const got = text.slice(0, -4).split('\r\n\r\n').map((e) => JSON.parse(e.slice(6)));
  const usage = got.at(-1).usageMetadata;
  assert.deepEqual(got, [rec([{ functionCall: { name: 'f', args: { q: 'mock' }, id: 'call_mock_1' } }], { finish: 'STOP', usage })]);
});

test('golden: a stream cut after it began ends with an error record', async () => {
  let { text } = await streamRaw('?alt=sse', { contents: [{ parts: [{ text: 'x [[mock:cut=2]]' }] }] });
  // the SSE events, then the error object bare (as Google sends it)
  const cut = text.lastIndexOf('\r\n\r\n') + 4;
  let events = text.slice(0, cut - 4).split('\r\n\r\n').map((e) => JSON.parse(e.slice(6)));
  assert.deepEqual(events, [rec([{ text: 'Hello' }])]);
  assert.ok(text.endsWith('}\n'));
  const err = JSON.parse(text.slice(cut));
  assert.deepEqual(Object.keys(err), ['error']);
  assert.equal(err.error.code, 502);
  assert.equal(err.error.status, 'UNAVAILABLE');
  assert.match(err.error.message, /was cut/);
  ({ text } = await streamRaw('', { contents: [{ parts: [{ text: 'x [[mock:cut=2]]' }] }] }));
  events = JSON.parse(text); // still one whole array
  assert.deepEqual(events[0], rec([{ text: 'Hello' }]));
  assert.equal(events.at(-1).error.status, 'UNAVAILABLE');
});

test("Google's /v1 paths: apiVersion v1 generates, streams and lists in Google's shape", async () => {
  const v1 = new GoogleGenAI({ apiKey: 'client-key', httpOptions: { baseUrl: gw.url, apiVersion: 'v1' } });
  const r = await v1.models.generateContent({ model: 'gpt-4o', contents: 'over v1' });
  assert.equal(r.text, 'Hello from mock. You said: over v1');
  let text = '';
  for await (const ch of await v1.models.generateContentStream({ model: 'gpt-4o', contents: 'v1 stream' })) text += ch.text ?? '';
  assert.equal(text, 'Hello from mock. You said: v1 stream');
  const names = [];
  for await (const m of await v1.models.list()) names.push(m.name);
  assert.ok(names.includes('models/gpt-4o'), names.join(','));
  assert.equal((await v1.models.get({ model: 'gpt-4o' })).name, 'models/gpt-4o');
  // the same paths without the Gemini key header stay OpenAI's
  const j = await (await fetch(`${gw.url}/v1/models/gpt-4o`)).json();
  assert.deepEqual(j, { id: 'gpt-4o', object: 'model', created: 0, owned_by: 'openai' });
});

for (const model of ['claude-sonnet-4', 'gemini-2.5-flash']) {
  test(`generateContent and its stream, served by ${model}`, async () => {
    const r = await ai.models.generateContent({ model, contents: 'hello there', config: { systemInstruction: 'be brief' } });
    assert.equal(r.text, 'Hello from mock. You said: hello there');
    assert.ok(r.usageMetadata.promptTokenCount > 0);
    const up = JSON.parse((await mock.last()).body);
    if (model.startsWith('claude')) {
      assert.deepEqual(up.system, [{ type: 'text', text: 'be brief' }]);
    } else {
      assert.deepEqual(up.systemInstruction, { parts: [{ text: 'be brief' }] });
      assert.deepEqual(up.contents, [{ role: 'user', parts: [{ text: 'hello there' }] }]);
    }
    let text = '', last;
    for await (const ch of await ai.models.generateContentStream({ model, contents: 'stream this' })) {
      text += ch.text ?? '';
      last = ch;
    }
    assert.equal(text, 'Hello from mock. You said: stream this');
    assert.equal(last.candidates[0].finishReason, 'STOP');
    assert.ok(last.usageMetadata.candidatesTokenCount > 0);
  });
}
