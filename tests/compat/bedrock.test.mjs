// The official `openai` package against the bedrock provider through the
// mock's Bedrock wire format. Every request is signed with SigV4 and the
// mock checks the signature from what arrived (and the test recomputes it
// once more from the recorded request); ConverseStream answers in AWS
// event-stream framing; golden checks on the Converse requests; tools,
// reasoning, guardrails, in-stream exceptions, bad frames; Titan and
// Cohere embeddings.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw, client;
const CLAUDE = 'anthropic.claude-3-5-sonnet-20240620-v1:0';

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: bedrock
    type: bedrock
    base_url: ${mock.url}
    region: us-west-2
    keys: ["AKIDMOCK1:mock/secret/AKIDMOCK1"]
    models: ["anthropic.*", "amazon.*", "cohere.*", "meta.*"]
  - name: bedrock-sts
    type: bedrock
    base_url: ${mock.url}
    region: eu-central-1
    keys: ["ASIAMOCK2:mock/secret/ASIAMOCK2:FwoGZXIvYXdzEMOCKSESSIONTOKEN"]
    models: ["sts-*"]
    model_map: { "sts-claude": "${CLAUDE}" }
  - name: bedrock-apikey
    type: bedrock
    base_url: ${mock.url}
    keys: ["ABSKmockapikey0123456789"]
    models: ["apikey-*"]
    model_map: { "apikey-claude": "${CLAUDE}" }
  - name: bedrock-throttled
    type: bedrock
    base_url: ${mock.url}
    keys: ["AKIDMOCK6:mock/secret/AKIDMOCK6"]
    models: ["throttled-claude"]
    model_map: { "throttled-claude": "${CLAUDE}[[mock:chunks=3 exception=1]]" }
  - name: bedrock-wrong
    type: bedrock
    base_url: ${mock.url}
    keys: ["AKIDMOCK3:not-the-secret"]
    models: ["wrong-*"]
routes:
  - model: guarded-claude
    targets: [{ provider: bedrock-throttled, model: throttled-claude }]
    fallback: [{ provider: bedrock, model: "${CLAUDE}" }]
    retry_on: [429]`,
  }));
  client = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

// SigV4 recomputed from the recorded request, independently of the mock.
function sigv4(last, secret) {
  const auth = last.headers.authorization;
  const m = auth.match(/^AWS4-HMAC-SHA256 Credential=([^/]+)\/([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/);
  assert.ok(m, auth);
  const [, , scope, signed, signature] = m;
  const [date, region, service] = scope.split('/');
  const canonPath = last.path.replace(/[^A-Za-z0-9\-_.~/]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
  const headers = signed.split(';').map((h) => `${h}:${last.headers[h]}\n`).join('');
  const hash = (s) => crypto.createHash('sha256').update(s).digest('hex');
  const creq = `POST\n${canonPath}\n\n${headers}\n${signed}\n${hash(last.body)}`;
  const sts = `AWS4-HMAC-SHA256\n${last.headers['x-amz-date']}\n${scope}\n${hash(creq)}`;
  let k = crypto.createHmac('sha256', 'AWS4' + secret).update(date).digest();
  for (const part of [region, service, 'aws4_request']) k = crypto.createHmac('sha256', k).update(part).digest();
  return { ok: crypto.createHmac('sha256', k).update(sts).digest('hex') === signature, region, service, signed };
}

const weather = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

test('non-stream: SigV4, encoded model id, golden Converse request, usage', async () => {
  const r = await client.chat.completions.create({
    model: CLAUDE, max_tokens: 300, temperature: 0.2, stop: 'END', top_k: 40,
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hello' },
      { role: 'user', content: [{ type: 'text', text: 'bedrock' }, { type: 'image_url', image_url: { url: 'data:image/jpeg;base64,/9j/4AAQ' } }] },
    ],
  });
  assert.equal(r.choices[0].message.content, 'Hello from mock. You said: hello bedrock');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.id, 'chatcmpl-5e6f7a8b-0000-4000-8000-mockrequest1');
  assert.equal(r.model, CLAUDE);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 4);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  const last = await mock.last();
  assert.equal(last.path, '/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse');
  const v = sigv4(last, 'mock/secret/AKIDMOCK1');
  assert.ok(v.ok, 'signature');
  assert.equal(v.region, 'us-west-2');
  assert.equal(v.service, 'bedrock');
  assert.equal(v.signed, 'content-type;host;x-amz-date');
  assert.deepEqual(JSON.parse(last.body), {
    messages: [{ role: 'user', content: [
      { text: 'hello' }, { text: 'bedrock' }, { image: { format: 'jpeg', source: { bytes: '/9j/4AAQ' } } },
    ] }],
    system: [{ text: 'be brief' }],
    inferenceConfig: { maxTokens: 300, temperature: 0.2, stopSequences: ['END'] },
    additionalModelRequestFields: { top_k: 40 },
  });
});

test('count_tokens for a Claude model: Bedrock CountTokens, signed; another model is estimated', async () => {
  const ant = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
  const r = await ant.messages.countTokens({
    model: CLAUDE, system: 'be brief',
    messages: [{ role: 'user', content: 'hello' }, { role: 'assistant', content: 'hi' }, { role: 'user', content: 'count' }],
  });
  assert.equal(r.input_tokens, 1003, 'the mock counts 1000 + the turns');
  const last = await mock.last();
  assert.equal(last.path, '/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/count-tokens');
  assert.ok(sigv4(last, 'mock/secret/AKIDMOCK1').ok, 'signature');
  assert.deepEqual(JSON.parse(last.body), { input: { converse: {
    messages: [
      { role: 'user', content: [{ text: 'hello' }] },
      { role: 'assistant', content: [{ text: 'hi' }] },
      { role: 'user', content: [{ text: 'count' }] },
    ],
    system: [{ text: 'be brief' }],
  } } });
  const before = (await (await fetch(`${mock.url}/_mock/count`)).json()).count;
  const res = await ant.messages.countTokens({
    model: 'amazon.nova-pro-v1:0', messages: [{ role: 'user', content: 'hello' }],
  }).withResponse();
  assert.ok(res.data.input_tokens > 0 && res.data.input_tokens < 1000);
  assert.equal(res.response.headers.get('x-manifold-tokens-estimated'), 'true');
  assert.equal((await (await fetch(`${mock.url}/_mock/count`)).json()).count, before, 'no upstream call');
});

test('cache_control (Anthropic SDK) becomes Converse cachePoint blocks', async () => {
  const ant = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
  const eph = { type: 'ephemeral' };
  const m = await ant.messages.create({
    model: CLAUDE, max_tokens: 100,
    system: [{ type: 'text', text: 'a long system prompt', cache_control: eph }],
    tools: [{ name: 'get_weather', description: 'Weather of a city', cache_control: eph,
      input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'weather?', cache_control: eph }] },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'tooluse_1', name: 'get_weather', input: { city: 'Paris' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'tooluse_1', content: [{ type: 'text', text: 'sunny', cache_control: eph }] }, { type: 'text', text: 'and so?' }] },
    ],
  });
  assert.equal(m.type, 'message');
  const up = JSON.parse((await mock.last()).body);
  const cp = { cachePoint: { type: 'default' } };
  assert.deepEqual(up.system, [{ text: 'a long system prompt' }, cp]);
  assert.deepEqual(up.messages[0].content, [{ text: 'weather?' }, cp]);
  assert.deepEqual(up.messages[2].content, [
    { toolResult: { toolUseId: 'tooluse_1', content: [{ text: 'sunny' }], status: 'success' } }, cp, { text: 'and so?' },
  ]);
  assert.deepEqual(up.toolConfig.tools[1], cp);
  assert.equal(up.toolConfig.tools[0].toolSpec.name, 'get_weather');
  // a breakpoint on the tool_result block itself goes after it too
  await ant.messages.create({
    model: CLAUDE, max_tokens: 10,
    tools: [{ name: 'get_weather', input_schema: { type: 'object' } }],
    messages: [
      { role: 'user', content: 'weather in Rome?' },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'tooluse_2', name: 'get_weather', input: { city: 'Rome' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'tooluse_2', content: 'rain', cache_control: eph }] },
    ],
  });
  assert.deepEqual(JSON.parse((await mock.last()).body).messages[2].content, [
    { toolResult: { toolUseId: 'tooluse_2', content: [{ text: 'rain' }], status: 'success' } }, cp,
  ]);
  // without cache_control, no cachePoint
  await ant.messages.create({ model: CLAUDE, max_tokens: 10, system: 'plain', messages: [{ role: 'user', content: 'hi' }] });
  assert.ok(!(await mock.last()).body.includes('cachePoint'));
});

test('auth: session token signed too, API keys as bearer, a wrong secret is a 502', async () => {
  const a = await client.chat.completions.create({ model: 'sts-claude', messages: [{ role: 'user', content: 'sts' }] });
  assert.equal(a.choices[0].message.content, 'Hello from mock. You said: sts');
  let last = await mock.last();
  assert.equal(last.headers['x-amz-security-token'], 'FwoGZXIvYXdzEMOCKSESSIONTOKEN');
  const v = sigv4(last, 'mock/secret/ASIAMOCK2');
  assert.ok(v.ok);
  assert.equal(v.region, 'eu-central-1');
  assert.equal(v.signed, 'content-type;host;x-amz-date;x-amz-security-token');

  const b = await client.chat.completions.create({ model: 'apikey-claude', messages: [{ role: 'user', content: 'key' }] });
  assert.equal(b.choices[0].message.content, 'Hello from mock. You said: key');
  last = await mock.last();
  assert.equal(last.headers.authorization, 'Bearer ABSKmockapikey0123456789');

  await assert.rejects(client.chat.completions.create({ model: 'wrong-claude', messages: [{ role: 'user', content: 'x' }] }), (e) => {
    assert.equal(e.status, 502);
    assert.equal(e.code, 'upstream_auth_failed');
    assert.doesNotMatch(e.message, /not-the-secret/);
    return true;
  });
});

test('stream: event-stream frames to chunks, usage chunk, stop reason', async () => {
  const stream = await client.chat.completions.create({
    model: CLAUDE, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream bedrock' }],
  });
  let text = '', finish = null, usage = null, role = null;
  for await (const c of stream) {
    role = c.choices[0]?.delta?.role || role;
    text += c.choices[0]?.delta?.content || '';
    finish = c.choices[0]?.finish_reason || finish;
    usage = c.usage || usage;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, 'Hello from mock. You said: stream bedrock');
  assert.equal(finish, 'stop');
  assert.equal(usage.prompt_tokens_details.cached_tokens, 4);
  const last = await mock.last();
  assert.equal(last.path, '/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream');
  assert.equal(last.headers.accept, 'application/vnd.amazon.eventstream');
  assert.ok(sigv4(last, 'mock/secret/AKIDMOCK1').ok);
});

test('tools: toolSpec, toolChoice, tool calls streamed and not, results back', async () => {
  const first = await client.chat.completions.create({
    model: CLAUDE, tools: [weather], tool_choice: 'required',
    messages: [{ role: 'user', content: 'weather in Paris?' }],
  });
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(first.choices[0].finish_reason, 'tool_calls');
  assert.equal(call.id, 'tooluse_mock_1');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'mock' });
  let sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.toolConfig, {
    tools: [{ toolSpec: { name: 'get_weather', inputSchema: { json: weather.function.parameters }, description: 'Weather of a city' } }],
    toolChoice: { any: {} },
  });
  const second = await client.chat.completions.create({
    model: CLAUDE, tools: [weather],
    messages: [
      { role: 'user', content: 'weather in Paris?' }, first.choices[0].message,
      { role: 'tool', tool_call_id: call.id, content: '{"temp":20}' },
    ],
  });
  assert.equal(second.choices[0].message.content, 'Tool said: [{"json":{"temp":20}}]');
  sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.messages.slice(1), [
    { role: 'assistant', content: [{ toolUse: { toolUseId: 'tooluse_mock_1', name: 'get_weather', input: { city: 'mock' } } }] },
    { role: 'user', content: [{ toolResult: { toolUseId: 'tooluse_mock_1', content: [{ json: { temp: 20 } }], status: 'success' } }] },
  ]);

  const stream = await client.chat.completions.create({
    model: CLAUDE, stream: true, tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } },
    messages: [{ role: 'user', content: 'weather?' }],
  });
  let args = '', name = null, finish = null;
  for await (const c of stream) {
    for (const tc of c.choices[0]?.delta?.tool_calls || []) {
      name = tc.function?.name || name;
      args += tc.function?.arguments || '';
    }
    finish = c.choices[0]?.finish_reason || finish;
  }
  assert.equal(name, 'get_weather');
  assert.deepEqual(JSON.parse(args), { city: 'mock' });
  assert.equal(finish, 'tool_calls');
  sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.toolConfig.toolChoice, { tool: { name: 'get_weather' } });
});

test('reasoning and guardrails', async () => {
  const r = await client.chat.completions.create({
    model: CLAUDE, reasoning_effort: 'low', max_tokens: 500,
    messages: [{ role: 'user', content: 'think' }],
  });
  assert.equal(r.choices[0].message.reasoning_content, 'Thinking.');
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.additionalModelRequestFields, { thinking: { type: 'enabled', budget_tokens: 1024 } });
  assert.deepEqual(sent.inferenceConfig, { maxTokens: 1524 }); // the budget comes on top
  let reasoning = '';
  for await (const c of await client.chat.completions.create({
    model: CLAUDE, reasoning_effort: 'low', stream: true, messages: [{ role: 'user', content: 'think' }],
  })) reasoning += c.choices[0]?.delta?.reasoning_content || '';
  assert.equal(reasoning, 'Thinking.');
  const g = await client.chat.completions.create({ model: CLAUDE, messages: [{ role: 'user', content: 'bad [[mock:safety]]' }] });
  assert.equal(g.choices[0].finish_reason, 'content_filter');
});

test('stream failures: in-stream exception, bad CRC, cut', async () => {
  const read = async (content, model = CLAUDE) => {
    let text = '';
    const stream = await client.chat.completions.create({ model, stream: true, messages: [{ role: 'user', content }] });
    for await (const c of stream) text += c.choices[0]?.delta?.content || '';
    return text;
  };
  await assert.rejects(read('x [[mock:chunks=5 exception=3]]'), (e) => /ThrottlingException: Too many requests/.test(e.message));
  // a bad first frame: nothing reached the client, so a plain 502
  await assert.rejects(read('x [[mock:garbage]]'), (e) => e.status === 502 && /could not be read/.test(e.message));
  // before the first byte reached the client, an in-stream exception fails
  // the attempt with its status: a 429 the client (or a route) can act on
  // (its own provider: the 429 rests that key)
  await assert.rejects(read('x', 'throttled-claude'), (e) => e.status === 429 && /ThrottlingException/.test(e.message));
  await assert.rejects(read('x [[mock:chunks=5 cut=3]]'), (e) => /cut/.test(e.message));
});

test('an in-stream exception before the first chunk falls back along a route', async () => {
  await new Promise((r) => setTimeout(r, 1100)); // the throttled key rests 1 s
  const stream = await client.chat.completions.create({
    model: 'guarded-claude', stream: true, messages: [{ role: 'user', content: 'fall back' }],
  });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.delta?.content || '';
  assert.equal(text, 'Hello from mock. You said: fall back');
});

test('errors: throttling, validation, missing model, access', async () => {
  const res = await fetch(gw.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'meta.llama3-70b-instruct-v1:0', messages: [{ role: 'user', content: 'x [[mock:status=400]]' }] }),
  });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.error.type, 'invalid_request_error');
  assert.match(body.error.message, /ValidationException: mock error 400/);
  await assert.rejects(client.chat.completions.create({ model: CLAUDE, messages: [{ role: 'user', content: 'x [[mock:status=404]]' }] }),
    (e) => e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(client.chat.completions.create({ model: CLAUDE, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] }] }),
    (e) => e.status === 400 && e.code === 'unsupported_image');
  await assert.rejects(client.chat.completions.create({ model: 'sts-claude', messages: [{ role: 'user', content: 'x [[mock:status=429]]' }] }),
    (e) => e.status === 429);
});

test('embeddings: Titan one input, Cohere batches, base64, token counts', async () => {
  const t = await client.embeddings.create({ model: 'amazon.titan-embed-text-v2:0', input: 'hello titan', dimensions: 4 });
  assert.equal(t.data.length, 1);
  assert.equal(t.data[0].embedding.length, 4);
  assert.ok(Math.abs(t.data[0].embedding[0] - 0.5) < 1e-6);
  assert.ok(t.usage.prompt_tokens > 0);
  let last = await mock.last();
  assert.equal(last.path, '/model/amazon.titan-embed-text-v2%3A0/invoke');
  assert.deepEqual(JSON.parse(last.body), { inputText: 'hello titan', dimensions: 4 });
  assert.ok(sigv4(last, 'mock/secret/AKIDMOCK1').ok);
  await assert.rejects(client.embeddings.create({ model: 'amazon.titan-embed-text-v2:0', input: ['a', 'b'] }),
    (e) => e.status === 400 && /one input per request/.test(e.message));
  const c = await client.embeddings.create({ model: 'cohere.embed-english-v3', input: ['one', 'two', 'three'], encoding_format: 'float' });
  assert.equal(c.data.length, 3);
  assert.equal(c.data[2].index, 2);
  assert.equal(c.data[0].embedding.length, 8);
  assert.ok(c.usage.prompt_tokens >= 3);
  last = await mock.last();
  assert.deepEqual(JSON.parse(last.body), { texts: ['one', 'two', 'three'], input_type: 'search_document', truncate: 'END' });
});

test('anthropic-beta reaches a Claude model as Converse additionalModelRequestFields.anthropic_beta, never another model', async () => {
  const ant = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
  const betas = { headers: { 'anthropic-beta': 'context-1m-2025-08-07, token-efficient-tools-2025-02-19' } };
  await ant.messages.create({ model: CLAUDE, max_tokens: 10, top_k: 4, messages: [{ role: 'user', content: 'hi' }] }, betas);
  let last = await mock.last();
  let up = JSON.parse(last.body);
  assert.deepEqual(up.additionalModelRequestFields, { top_k: 4, anthropic_beta: ['context-1m-2025-08-07', 'token-efficient-tools-2025-02-19'] });
  assert.equal(last.headers['anthropic-beta'], undefined, 'Bedrock reads the body, not a header');
  await ant.messages.create({ model: 'amazon.nova-lite-v1:0', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }, betas);
  up = JSON.parse((await mock.last()).body);
  assert.equal(up.additionalModelRequestFields, undefined);
});
