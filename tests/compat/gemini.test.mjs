// The official `openai` package against the gemini and vertex providers
// through the mock's Gemini wire format: each canonical request becomes the
// exact generateContent request (golden checks on what reached the
// upstream), answers and SSE streams come back as chat completions and
// chunks, tools round-trip with their thought signatures, safety blocks
// become 400 content_filter errors (and can fall back), embeddings work,
// and Vertex gets its access token from a service-account JWT (RS256,
// verified here with the public key), cached, refreshed, single-flight.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { startMock, startGateway, config, serviceKeys, serviceAccount } from '../integration/harness.mjs';

let mock, gw, client, keys, saFile, saShortFile;

async function requests() {
  return (await fetch(`${mock.url}/_mock/requests`)).json();
}

before(async () => {
  mock = await startMock();
  keys = serviceKeys();
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-sa-'));
  saFile = path.join(dir, 'sa.json');
  saShortFile = path.join(dir, 'sa-short.json');
  writeFileSync(saFile, serviceAccount(`${mock.url}/token`, keys.privateKey, 'gw@mock-project.iam.gserviceaccount.com'));
  // a token that is already inside the refresh window (300 s)
  writeFileSync(saShortFile, serviceAccount(`${mock.url}/token?ttl=200`, keys.privateKey, 'short@mock-project.iam.gserviceaccount.com'));
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: gemini
    type: gemini
    base_url: ${mock.url}
    keys: ["AIza-test-key-0123456789"]
    models: ["gemini-*"]
  - name: gemini-bad
    type: gemini
    base_url: ${mock.url}/v1beta
    keys: ["AIza-invalid-key-0123456789"]
    models: ["badkey-gemini"]
  - name: gemini-rl
    type: gemini
    base_url: ${mock.url}
    keys: ["AIza-rl-key-0123456789"]
    models: ["rl-gemini"]
  - name: vertex
    type: vertex
    base_url: ${mock.url}
    location: europe-west4
    credentials: ${saFile}
    models: ["vx-*"]
    model_map: { "vx-flash": "gemini-2.5-flash", "vx-embed": "text-embedding-005" }
  - name: vertex-short
    type: vertex
    base_url: ${mock.url}
    project: other-project
    keys: ["${saShortFile}"]
    models: ["vshort-*"]
  - name: vertex-down
    type: vertex
    base_url: ${mock.url}
    credentials: '${serviceAccount('http://127.0.0.1:1/token', keys.privateKey, 'down@mock-project.iam.gserviceaccount.com').replace(/\n/g, '\\n')}'
    models: ["vdown-*"]
routes:
  - model: guarded
    targets: [{ provider: gemini, model: "gemini-2.5-flash[[mock:safety]]" }]
    fallback: [{ provider: openai, model: gpt-4o }]
    retry_on: [content_filter]`,
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
    parameters: {
      type: 'object', additionalProperties: false, $schema: 'http://json-schema.org/draft-07/schema#',
      properties: { city: { type: 'string' }, unit: { type: ['string', 'null'], enum: ['c', 'f'] } },
      required: ['city'],
    },
  },
};

test('non-stream: golden request, system, settings, usage with cached tokens', async () => {
  const r = await client.chat.completions.create({
    model: 'gemini-2.5-flash', stop: ['END'], temperature: 0.5, top_p: 0.9, max_tokens: 100, seed: 7,
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello gemini' }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.id, 'chatcmpl-resp-mock-1');
  assert.equal(r.model, 'gemini-2.5-flash');
  assert.equal(r.choices[0].message.content, 'Hello from mock. You said: hello gemini');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 2);
  const last = await mock.last();
  assert.equal(last.path, '/v1beta/models/gemini-2.5-flash:generateContent');
  assert.equal(last.headers['x-goog-api-key'], 'AIza-test-key-0123456789');
  assert.equal(last.headers.authorization, undefined);
  assert.deepEqual(JSON.parse(last.body), {
    contents: [{ role: 'user', parts: [{ text: 'hello gemini' }] }],
    systemInstruction: { parts: [{ text: 'be brief' }] },
    generationConfig: { temperature: 0.5, topP: 0.9, maxOutputTokens: 100, stopSequences: ['END'], seed: 7 },
  });
});

test('stream: SSE to chunks, finish reason, usage chunk when asked', async () => {
  const stream = await client.chat.completions.create({
    model: 'gemini-2.5-flash', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream gemini' }],
  });
  let text = '', finish = null, usage = null, role = null;
  for await (const c of stream) {
    role = c.choices[0]?.delta?.role || role;
    text += c.choices[0]?.delta?.content || '';
    finish = c.choices[0]?.finish_reason || finish;
    usage = c.usage || usage;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, 'Hello from mock. You said: stream gemini');
  assert.equal(finish, 'stop');
  assert.equal(usage.prompt_tokens_details.cached_tokens, 2);
  assert.ok(usage.completion_tokens > 0);
  assert.equal((await mock.last()).path, '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse');
});

test('tools: declarations cut to Gemini schema, calls with signatures, results back', async () => {
  const first = await client.chat.completions.create({
    model: 'gemini-2.5-pro', tools: [weather], tool_choice: 'required',
    messages: [{ role: 'user', content: 'weather in Paris?' }],
  });
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(first.choices[0].finish_reason, 'tool_calls');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'mock' });
  assert.match(call.id, /^call_[a-z0-9]+__ts__c2lnLW1vY2s$/); // base64url: ids stay [A-Za-z0-9_-]
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.tools, [{ functionDeclarations: [{
    name: 'get_weather', description: 'Weather of a city',
    parameters: {
      type: 'object', required: ['city'],
      properties: { city: { type: 'string' }, unit: { type: 'string', nullable: true, enum: ['c', 'f'] } },
    },
  }] }]);
  assert.deepEqual(sent.toolConfig, { functionCallingConfig: { mode: 'ANY' } });

  const second = await client.chat.completions.create({
    model: 'gemini-2.5-pro', tools: [weather],
    messages: [
      { role: 'user', content: 'weather in Paris?' },
      first.choices[0].message,
      { role: 'tool', tool_call_id: call.id, content: '{"temp":20}' },
    ],
  });
  assert.equal(second.choices[0].message.content, 'Tool get_weather said: {"temp":20}');
  const body = JSON.parse((await mock.last()).body);
  assert.deepEqual(body.contents, [
    { role: 'user', parts: [{ text: 'weather in Paris?' }] },
    { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: { city: 'mock' } }, thoughtSignature: 'c2lnLW1vY2s' }] },
    { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { temp: 20 } } }] },
  ]);
});

test('tools: a forced function, streamed call', async () => {
  const stream = await client.chat.completions.create({
    model: 'gemini-2.5-pro', stream: true, tools: [weather],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    messages: [{ role: 'user', content: 'weather?' }],
  });
  const calls = [];
  let finish = null;
  for await (const c of stream) {
    for (const tc of c.choices[0]?.delta?.tool_calls || []) calls.push(tc);
    finish = c.choices[0]?.finish_reason || finish;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].index, 0);
  assert.equal(calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: 'mock' });
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.toolConfig, { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['get_weather'] } });
});

test('images, JSON mode, n candidates, reasoning', async () => {
  const r = await client.chat.completions.create({
    model: 'gemini-2.5-flash', n: 2, reasoning_effort: 'low',
    response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', additionalProperties: false, properties: { a: { type: 'integer' } } } } },
    messages: [{ role: 'user', content: [
      { type: 'text', text: 'describe' },
      { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
      { type: 'image_url', image_url: { url: 'https://example.com/cat.webp' } },
    ] }],
  });
  assert.equal(r.choices.length, 2);
  assert.equal(r.choices[1].index, 1);
  assert.equal(r.choices[0].message.reasoning_content, 'Thinking about it.');
  assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 5);
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.contents[0].parts, [
    { text: 'describe' },
    { inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' } },
    { fileData: { mimeType: 'image/webp', fileUri: 'https://example.com/cat.webp' } },
  ]);
  assert.deepEqual(sent.generationConfig, {
    candidateCount: 2, responseMimeType: 'application/json',
    responseSchema: { type: 'object', properties: { a: { type: 'integer' } } },
    thinkingConfig: { thinkingBudget: 1024, includeThoughts: true },
  });
});

test('safety: a blocked prompt or answer is a 400 content_filter, stream or not', async () => {
  for (const stream of [false, true]) {
    await assert.rejects(client.chat.completions.create({
      model: 'gemini-2.5-flash', stream, messages: [{ role: 'user', content: 'bad [[mock:safety]]' }],
    }), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.code, 'content_filter');
      assert.match(e.message, /blocked the prompt: SAFETY \(HARM_CATEGORY_DANGEROUS_CONTENT\)/);
      return true;
    });
    await assert.rejects(client.chat.completions.create({
      model: 'gemini-2.5-flash', stream, messages: [{ role: 'user', content: 'bad [[mock:safety_answer]]' }],
    }), (e) => e.status === 400 && e.code === 'content_filter' && /blocked the answer: SAFETY \(HARM_CATEGORY_HARASSMENT\)/.test(e.message));
  }
});

test('safety: a route falls back on content_filter', async () => {
  const res = await fetch(gw.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'guarded', messages: [{ role: 'user', content: 'hi' }] }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-provider'), 'openai');
  assert.equal(res.headers.get('x-manifold-attempts'), '2');
});

test('errors: bad key, rate limit with retry delay, unknown model, 5xx', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'badkey-gemini', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 502 && e.code === 'upstream_auth_failed' && !/invalid-key/.test(e.message));
  const res = await fetch(gw.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'rl-gemini', messages: [{ role: 'user', content: 'x [[mock:status=429 retry_after=9]]' }] }),
  });
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '9');
  assert.equal((await res.json()).error.type, 'rate_limit_error');
  // the key now rests for the retry delay Gemini gave: no upstream call
  const n = await mock.count();
  const again = await fetch(gw.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'rl-gemini', messages: [{ role: 'user', content: 'x' }] }),
  });
  assert.equal(again.status, 429);
  assert.equal(await mock.count(), n);
  await assert.rejects(client.chat.completions.create({ model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'x [[mock:status=404]]' }] }),
    (e) => e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(client.chat.completions.create({ model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'x [[mock:status=503]]' }] }),
    (e) => e.status === 503);
});

test('embeddings: batchEmbedContents, floats and base64, dimensions', async () => {
  const r = await client.embeddings.create({ model: 'gemini-embedding-001', input: ['one', 'two'], dimensions: 4 });
  assert.equal(r.data.length, 2);
  assert.equal(r.data[1].index, 1);
  assert.equal(r.data[0].embedding.length, 4); // the SDK asked base64 and decoded it
  assert.ok(Math.abs(r.data[0].embedding[0] - 0.5) < 1e-6);
  assert.ok(r.usage.prompt_tokens > 0);
  const last = await mock.last();
  assert.equal(last.path, '/v1beta/models/gemini-embedding-001:batchEmbedContents');
  assert.deepEqual(JSON.parse(last.body), { requests: [
    { model: 'models/gemini-embedding-001', content: { parts: [{ text: 'one' }] }, outputDimensionality: 4 },
    { model: 'models/gemini-embedding-001', content: { parts: [{ text: 'two' }] }, outputDimensionality: 4 },
  ] });
  const f = await client.embeddings.create({ model: 'gemini-embedding-001', input: 'one', encoding_format: 'float' });
  assert.equal(f.data[0].embedding.length, 8);
  await assert.rejects(client.embeddings.create({ model: 'gemini-embedding-001', input: [[1, 2, 3]] }),
    (e) => e.status === 400 && /list of strings/.test(e.message));
});

test('vertex: service-account JWT (RS256), token cached and shared, stream and embeddings', async () => {
  const before = (await requests()).filter((q) => q.path.startsWith('/token')).length;
  const all = await Promise.all(Array.from({ length: 12 }, (_, i) => client.chat.completions.create({
    model: 'vx-flash', messages: [{ role: 'user', content: `vertex ${i}` }],
  })));
  all.forEach((r, i) => assert.equal(r.choices[0].message.content, `Hello from mock. You said: vertex ${i}`));
  const reqs = await requests();
  const tokens = reqs.filter((q) => q.path.startsWith('/token'));
  assert.equal(tokens.length - before, 1, 'one token request for 12 concurrent requests');
  const form = new URLSearchParams(tokens.at(-1).body);
  assert.equal(form.get('grant_type'), 'urn:ietf:params:oauth:grant-type:jwt-bearer');
  const [h, c, s] = form.get('assertion').split('.');
  assert.deepEqual(JSON.parse(Buffer.from(h, 'base64url')), { alg: 'RS256', typ: 'JWT' });
  const claims = JSON.parse(Buffer.from(c, 'base64url'));
  assert.equal(claims.iss, 'gw@mock-project.iam.gserviceaccount.com');
  assert.equal(claims.aud, `${mock.url}/token`);
  assert.equal(claims.scope, 'https://www.googleapis.com/auth/cloud-platform');
  assert.equal(claims.exp - claims.iat, 3600);
  assert.ok(crypto.verify('RSA-SHA256', Buffer.from(`${h}.${c}`), keys.publicKey, Buffer.from(s, 'base64url')), 'JWT signature');
  const chat = reqs.filter((q) => q.path.includes(':generateContent')).at(-1);
  assert.equal(chat.path, '/v1/projects/mock-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent');
  assert.equal(chat.headers.authorization, 'Bearer ya29.mock-1');
  assert.equal(chat.headers['x-goog-api-key'], undefined);

  const stream = await client.chat.completions.create({ model: 'vx-flash', stream: true, messages: [{ role: 'user', content: 'vertex stream' }] });
  let text = '';
  for await (const ch of stream) text += ch.choices[0]?.delta?.content || '';
  assert.equal(text, 'Hello from mock. You said: vertex stream');

  const e = await client.embeddings.create({ model: 'vx-embed', input: ['a', 'b'], encoding_format: 'float' });
  assert.equal(e.data.length, 2);
  assert.ok(e.usage.prompt_tokens > 0);
  const last = await mock.last();
  assert.equal(last.path, '/v1/projects/mock-project/locations/europe-west4/publishers/google/models/text-embedding-005:predict');
  assert.deepEqual(JSON.parse(last.body), { instances: [{ content: 'a' }, { content: 'b' }] });
  assert.equal((await requests()).filter((q) => q.path.startsWith('/token')).length - before, 1, 'still one token');
});

test('vertex: count_tokens is counted by Vertex AI\'s :countTokens (contents at the top)', async () => {
  const res = await fetch(`${gw.url}/v1/messages/count_tokens`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'vx-flash', system: 'be brief', messages: [{ role: 'user', content: 'count me' }] }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-tokens-estimated'), null);
  assert.deepEqual(await res.json(), { input_tokens: 1001 });
  const last = await mock.last();
  assert.equal(last.path, '/v1/projects/mock-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:countTokens');
  assert.match(last.headers.authorization, /^Bearer ya29\.mock-/);
  const up = JSON.parse(last.body);
  assert.equal(up.generateContentRequest, undefined);
  assert.deepEqual(up.contents, [{ role: 'user', parts: [{ text: 'count me' }] }]);
  assert.deepEqual(up.systemInstruction.parts, [{ text: 'be brief' }]);
});

test('vertex: a token near expiry is refreshed, a token endpoint down is a clear 502', async () => {
  const count = async () => (await requests()).filter((q) => q.path.startsWith('/token?ttl=200')).length;
  const a = await client.chat.completions.create({ model: 'vshort-x', messages: [{ role: 'user', content: 'one' }] });
  assert.equal(a.choices[0].message.content, 'Hello from mock. You said: one');
  assert.match((await mock.last()).path, /^\/v1\/projects\/other-project\/locations\/us-central1\//);
  const n = await count();
  await client.chat.completions.create({ model: 'vshort-x', messages: [{ role: 'user', content: 'two' }] });
  assert.equal(await count(), n + 1, 'inside the refresh window each request refreshes');
  await assert.rejects(client.chat.completions.create({ model: 'vdown-x', messages: [{ role: 'user', content: 'x' }] }), (e) => {
    assert.equal(e.status, 502);
    assert.equal(e.code, 'upstream_auth_failed');
    assert.match(e.message, /no Vertex AI access token for down@mock-project/);
    assert.doesNotMatch(e.message, /PRIVATE KEY/);
    return true;
  });
});
