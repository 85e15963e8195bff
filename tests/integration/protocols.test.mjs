// Inbound protocols at the byte level: the Responses API's event stream
// (every event of a text and a tool-call answer, in order, with its
// sequence number), a cut Responses stream (response.failed, then error),
// Anthropic's error types on Anthropic paths (whole and in a stream) and
// the 404 of an unknown path in the shape of the API it is under.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post, writeConfig, spawnSync, BIN } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

// An SSE body to [{event, data}] with data parsed.
async function events(res) {
  const text = await res.text();
  return text.split('\n\n').filter((b) => b.trim()).map((b) => {
    const lines = b.split('\n');
    const ev = lines.find((l) => l.startsWith('event:'));
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
    return { event: ev ? ev.slice(6).trim() : null, data: JSON.parse(data) };
  });
}

test('a Responses text stream: every event, in order, named as its type', async () => {
  const res = await post(gw, '/v1/responses', { model: 'gpt-4o', stream: true, input: 'hi [[mock:chunks=2]]' });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const evs = await events(res);
  for (const [i, e] of evs.entries()) {
    assert.equal(e.event, e.data.type);
    assert.equal(e.data.sequence_number, i);
  }
  const types = evs.map((e) => e.data.type);
  const deltas = types.filter((t) => t === 'response.output_text.delta').length;
  assert.ok(deltas >= 2);
  assert.deepEqual(types, [
    'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
    ...Array(deltas).fill('response.output_text.delta'),
    'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed',
  ]);
  const created = evs[0].data.response;
  assert.equal(created.status, 'in_progress');
  assert.deepEqual(created.output, []);
  assert.equal(created.usage, null);
  const text = evs.filter((e) => e.data.type === 'response.output_text.delta').map((e) => e.data.delta).join('');
  const itemId = evs[2].data.item.id;
  for (const e of evs.slice(2, -1)) {
    assert.equal(e.data.output_index, 0);
    if (e.data.item_id) assert.equal(e.data.item_id, itemId);
  }
  assert.equal(evs.at(-4).data.text, text);
  const done = evs.at(-1).data.response;
  assert.equal(done.id, created.id);
  assert.equal(done.status, 'completed');
  assert.deepEqual(done.output, [{
    type: 'message', id: itemId, status: 'completed', role: 'assistant',
    content: [{ type: 'output_text', text, annotations: [] }],
  }]);
  assert.ok(done.usage.input_tokens > 0 && done.usage.output_tokens > 0);
});

test('a Responses tool-call stream: function_call item, argument deltas, done', async () => {
  const res = await post(gw, '/v1/responses', {
    model: 'claude-sonnet-4', stream: true, input: 'weather?',
    tools: [{ type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }],
  });
  const evs = await events(res);
  const types = evs.map((e) => e.data.type);
  const added = evs.find((e) => e.data.type === 'response.output_item.added' && e.data.item.type === 'function_call');
  assert.equal(added.data.item.name, 'get_weather');
  assert.equal(added.data.item.status, 'in_progress');
  const args = evs.filter((e) => e.data.type === 'response.function_call_arguments.delta').map((e) => e.data.delta).join('');
  assert.deepEqual(JSON.parse(args), { city: 'mock' });
  const argsDone = evs.find((e) => e.data.type === 'response.function_call_arguments.done');
  assert.equal(argsDone.data.arguments, args);
  assert.equal(types.at(-1), 'response.completed');
  const fc = evs.at(-1).data.response.output.find((o) => o.type === 'function_call');
  assert.deepEqual(fc, { type: 'function_call', id: added.data.item.id, call_id: added.data.item.call_id, name: 'get_weather', arguments: args, status: 'completed' });
});

test('a cut Responses stream ends with response.failed and an error event', async () => {
  const res = await post(gw, '/v1/responses', { model: 'gpt-4o', stream: true, input: 'hi [[mock:chunks=8 cut=3]]' });
  assert.equal(res.status, 200);
  const evs = await events(res);
  const [failed, err] = evs.slice(-2);
  assert.equal(failed.data.type, 'response.failed');
  assert.equal(failed.data.response.status, 'failed');
  assert.equal(typeof failed.data.response.error.message, 'string');
  assert.equal(err.event, 'error');
  assert.equal(err.data.type, 'error');
  assert.equal(err.data.message, failed.data.response.error.message);
  assert.equal(err.data.sequence_number, failed.data.sequence_number + 1);
  // the text streamed before the cut is in the failed Response's output
  const streamed = evs.filter((e) => e.event === 'response.output_text.delta').map((e) => e.data.delta).join('');
  assert.ok(streamed.length > 0);
  const out = failed.data.response.output;
  assert.equal(out.length, 1);
  assert.equal(out[0].type, 'message');
  assert.equal(out[0].content[0].text, streamed);
  assert.ok(evs.some((e) => e.event === 'response.output_item.done' && e.data.item.id === out[0].id));
});

test('Responses answers non-stream with a Response object; bad input is a 400 in OpenAI shape', async () => {
  let res = await post(gw, '/v1/responses', { model: 'gpt-4o', input: 'hi', max_output_tokens: 1000 });
  const r = await res.json();
  assert.equal(res.status, 200);
  assert.equal(r.object, 'response');
  assert.equal(r.output[0].content[0].text, 'Hello from mock. You said: hi');
  res = await post(gw, '/v1/responses', { model: 'gpt-4o' });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /^input: Field required/);
  res = await post(gw, '/v1/responses', { model: 'gpt-4o', input: [{ type: 'item_reference', id: 'msg_1' }] });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.type, 'invalid_request_error');
  res = await fetch(gw.url + '/v1/responses/resp_123');
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, 'not_found');
});

test('errors on Anthropic paths carry Anthropic types, whole and in a stream', async () => {
  let res = await post(gw, '/v1/messages', { model: 'no-such-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 404);
  assert.deepEqual(Object.keys(await res.json()), ['type', 'error']);
  res = await post(gw, '/v1/messages', { model: 'no-such-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
  assert.equal((await res.json()).error.type, 'not_found_error');
  // upstream status -> the client's status and Anthropic type
  const want = { 400: [400, 'invalid_request_error'], 429: [429, 'rate_limit_error'], 500: [502, 'api_error'], 503: [502, 'api_error'] };
  for (const [up, [status, type]] of Object.entries(want)) {
    res = await post(gw, '/v1/messages', { model: `claude-e${up}`, max_tokens: 10, messages: [{ role: 'user', content: `x [[mock:status=${up}]]` }] });
    const j = await res.json();
    assert.equal(res.status, status, `upstream ${up}`);
    assert.deepEqual(Object.keys(j), ['type', 'error']);
    assert.equal(j.error.type, type, `upstream ${up}`);
  }
  res = await post(gw, '/v1/messages', {
    model: 'gpt-4o', max_tokens: 50, stream: true,
    messages: [{ role: 'user', content: 'hi [[mock:chunks=8 cut=3]]' }],
  });
  assert.equal(res.status, 200);
  const evs = await events(res);
  assert.equal(evs[0].event, 'message_start');
  const last = evs.at(-1);
  assert.equal(last.event, 'error');
  assert.equal(last.data.type, 'error');
  assert.equal(last.data.error.type, 'api_error');
});

test('an unknown path under /v1/messages/ is a 404 in Anthropic shape', async () => {
  const res = await post(gw, '/v1/messages/batches', {});
  assert.equal(res.status, 404);
  const j = await res.json();
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'not_found_error');
});

test('forward_headers refuses credentials and hop-by-hop headers', () => {
  const file = writeConfig(config('http://127.0.0.1:9', {
    providerExtra: '    forward_headers: ["anthropic-beta", "Authorization", "connection"]',
  }));
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /forward_headers: 'Authorization' is never passed to a provider/);
  assert.match(r.stderr, /forward_headers: 'connection' is never passed/);
  assert.doesNotMatch(r.stderr, /'anthropic-beta'/);
});

test('forward_headers takes a prefix ("x-goog-*"), never a credential under it; bad names are refused', async () => {
  let r = spawnSync(BIN, ['-t', '-c', writeConfig(config('http://127.0.0.1:9', {
    providerExtra: '    forward_headers: ["bad header", "*", "x-ok-*"]',
  }))], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /forward_headers: 'bad header' is not a header name/);
  assert.match(r.stderr, /forward_headers: '\*' would pass every client header/);
  assert.doesNotMatch(r.stderr, /'x-ok-\*'/);
  const gw2 = await startGateway(config(mock.url, {
    providerExtra: '    forward_headers: ["x-goog-*", "x-trace-tag"]',
  }));
  try {
    const res = await post(gw2, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }, {
      'x-goog-user-project': 'proj-1', 'X-Goog-Request-Reason': 'audit', 'x-goog-api-key': 'AIza-client-secret',
      'x-trace-tag': 't1', 'x-other': 'no',
    });
    assert.equal(res.status, 200);
    await res.json();
    const h = (await mock.last()).headers;
    assert.equal(h['x-goog-user-project'], 'proj-1');
    assert.equal(h['x-goog-request-reason'], 'audit');
    assert.equal(h['x-trace-tag'], 't1');
    assert.equal(h['x-goog-api-key'], undefined, 'a credential is never passed, prefix or not');
    assert.equal(h['x-other'], undefined);
  } finally {
    await gw2.stop();
  }
});

test('a forward prefix "x-amz-*" never passes the client\'s AWS credentials or signature headers', async () => {
  const gw2 = await startGateway(config(mock.url, {
    providerExtra: '    forward_headers: ["x-amz-*", "x-*"]',
  }));
  try {
    const res = await post(gw2, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }, {
      'x-amz-security-token': 'FwoGZXIvYXdzEClientSession', 'X-Amz-Date': '20261203T120000Z',
      'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb924', 'x-amz-user-agent': 'aws-sdk-js/3',
      'x-api-key': 'sk-client', 'x-goog-api-key': 'AIza-client', 'api-key': 'az-client',
    });
    assert.equal(res.status, 200);
    await res.json();
    const h = (await mock.last()).headers;
    assert.equal(h['x-amz-user-agent'], 'aws-sdk-js/3', 'the prefix passes what is not a credential');
    for (const k of ['x-amz-security-token', 'x-amz-date', 'x-amz-content-sha256', 'x-api-key', 'x-goog-api-key', 'api-key']) {
      assert.equal(h[k], undefined, k);
    }
  } finally {
    await gw2.stop();
  }
  const r = spawnSync(BIN, ['-t', '-c', writeConfig(config('http://127.0.0.1:9', {
    providerExtra: '    forward_headers: ["X-Amz-Security-Token"]',
  }))], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /forward_headers: 'X-Amz-Security-Token' is never passed to a provider/);
});

test('/v1/models lists the routes\' names; /v1/models/{id} knows routes and globs', async () => {
  const gw2 = await startGateway(config(mock.url) + `
routes:
  - model: smart
    targets:
      - { provider: openai, model: gpt-4o }
  - model: team-*
    targets:
      - { provider: openai, model: gpt-4o }
`);
  try {
    const list = await (await fetch(gw2.url + '/v1/models')).json();
    const smart = list.data.find((m) => m.id === 'smart');
    assert.deepEqual(smart, { id: 'smart', object: 'model', created: 0, owned_by: 'manifold' });
    assert.ok(!list.data.some((m) => m.id.includes('*')));
    // Google's shape, every entry whole, in the same order
    const g = await (await fetch(gw2.url + '/v1beta/models')).json();
    assert.deepEqual(g.models.find((m) => m.name === 'models/smart'), {
      name: 'models/smart',
      displayName: 'smart',
      description: 'Served through Manifold by manifold',
      supportedGenerationMethods: ['generateContent', 'streamGenerateContent', 'countTokens', 'embedContent', 'batchEmbedContents'],
    });
    assert.deepEqual(g.models.map((m) => m.name), list.data.map((m) => `models/${m.id}`));
    assert.equal(g.models.find((m) => m.name === 'models/gpt-4o').description, 'Served through Manifold by openai');
    let res = await fetch(gw2.url + '/v1/models/team-blue');
    assert.equal(res.status, 200);
    assert.equal((await res.json()).owned_by, 'manifold');
    res = await fetch(gw2.url + '/v1/models/gpt-4o-mini');
    assert.deepEqual(await res.json(), { id: 'gpt-4o-mini', object: 'model', created: 0, owned_by: 'openai' });
    res = await fetch(gw2.url + '/v1/models/nothing-here');
    assert.equal(res.status, 404);
    const e = await res.json();
    assert.equal(e.error.code, 'model_not_found');
    assert.equal(e.error.param, 'model');
    res = await post(gw2, '/v1/models/gpt-4o', {});
    assert.equal(res.status, 405);
    assert.equal(res.headers.get('allow'), 'GET');
  } finally {
    await gw2.stop();
  }
});
