// Upstream timing, stream usage, body stages and body size: an upstream
// that drips bytes cannot hold a request past its timeouts, a cut stream is
// billed from what it delivered and marked estimated, a failing
// on_response_body stage never lets the unfiltered answer through, and a
// body too large in shape is refused before it is parsed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post, chat, sseEvents, writeConfig, spawnSync, BIN, ROOT } from './harness.mjs';

let mock, gw, redact;

const providers = (url) => `
  - name: anthropic
    type: anthropic
    base_url: ${url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]
  - name: gemini
    type: gemini
    base_url: ${url}
    keys: ["AIza-test-0123456789"]
    models: ["gemini-*"]`;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    limits: '  upstream_timeout: 1s\n  stream_idle_timeout: 1s',
    extraProviders: providers(mock.url),
  }).replace('  upstream_timeout: 10s\n  stream_idle_timeout: 10s\n', ''), { workers: 1 });
  redact = await startGateway(config(mock.url, {
    stages: `  - name: redact
    lua: ${ROOT}/tests/integration/fixtures/redact_fail.lua
    config: { word: SECRET }`,
  }), { workers: 1 });
});

after(async () => {
  await gw?.stop();
  await redact?.stop();
  await mock?.stop();
});

// A request that must be answered well before the drip could finish.
function bounded(g, p, body, headers = {}) {
  return fetch(g.url + p, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15000),
  });
}

test('a non-stream answer dripped byte by byte ends with 504 at upstream_timeout', async () => {
  const res = await bounded(gw, '/v1/chat/completions', {
    model: 'gpt-4o', messages: [{ role: 'user', content: 'hi [[mock:drip=100]]' }],
  });
  assert.equal(res.status, 504);
  const j = await res.json();
  assert.equal(j.error.code, 'upstream_timeout');
  assert.match(j.error.message, /did not complete its answer within 1000 ms/);
});

test('a stream whose first event never completes is a 504 in the client protocol', async () => {
  const res = await bounded(gw, '/v1/chat/completions', {
    model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi [[mock:drip=100]]' }],
  });
  assert.equal(res.status, 504);
  const j = await res.json();
  assert.equal(j.error.code, 'upstream_timeout');
  assert.match(j.error.message, /no complete event for 1000 ms/);

  const a = await bounded(gw, '/v1/messages', {
    model: 'claude-3-5-haiku', max_tokens: 50, stream: true,
    messages: [{ role: 'user', content: 'hi [[mock:drip=100]]' }],
  });
  assert.equal(a.status, 504);
  const aj = await a.json();
  assert.equal(aj.type, 'error');
  assert.equal(aj.error.type, 'timeout_error', 'Anthropic\'s type for a 504');
  assert.match(aj.error.message, /no complete event/);

  const g = await bounded(gw, '/v1/chat/completions', {
    model: 'gemini-2.0-flash', stream: true, messages: [{ role: 'user', content: 'hi [[mock:drip=100]]' }],
  });
  assert.equal(g.status, 504);
  assert.equal((await g.json()).error.code, 'upstream_timeout');
});

test('a stream that starts, then drips partial events, ends with an error event and estimated usage', async () => {
  const res = await bounded(gw, '/v1/chat/completions', {
    model: 'gpt-4o', stream: true,
    messages: [{ role: 'user', content: 'one two three four five six [[mock:drip=100 drip_after=3]]' }],
  }, { 'x-request-id': 'drip-after-3' });
  assert.equal(res.status, 200);
  const events = await sseEvents(res);
  const last = JSON.parse(events.at(-1));
  assert.equal(last.error.code, 'upstream_timeout');
  const text = events.slice(0, -1).map((e) => JSON.parse(e).choices[0].delta.content || '').join('');
  assert.ok(text.length > 0, 'the first events went out whole');
  const line = await gw.waitLog((l) => l.request_id === 'drip-after-3');
  assert.equal(line.usage_estimated, true);
  assert.equal(line.completion_tokens, Math.ceil(text.length / 4));
  assert.match(line.error, /no complete event/);
});

async function cutStream(model, cut, id) {
  const res = await bounded(gw, '/v1/chat/completions', {
    model, stream: true,
    messages: [{ role: 'user', content: `hi [[mock:chunks=8 cut=${cut}]]` }],
  }, { 'x-request-id': id });
  assert.equal(res.status, 200);
  const events = (await sseEvents(res)).map((e) => JSON.parse(e));
  assert.ok(events.at(-1).error, 'the cut ends with an error event');
  const text = events.map((e) => e.choices?.[0]?.delta?.content || '').join('');
  assert.ok(text.length > 0);
  return { text, line: await gw.waitLog((l) => l.request_id === id) };
}

test('a cut Anthropic stream is billed from the delivered text, marked estimated', async () => {
  const { text, line } = await cutStream('claude-3-5-haiku', 7, 'cut-anthropic');
  assert.equal(line.usage_estimated, true);
  assert.equal(line.completion_tokens, Math.ceil(text.length / 4));
  assert.ok(line.prompt_tokens > 0, 'the prompt count message_start gave is kept');
  assert.equal(line.total_tokens, line.prompt_tokens + line.completion_tokens);
});

test('a cut Gemini stream is marked estimated', async () => {
  const { text, line } = await cutStream('gemini-2.0-flash', 4, 'cut-gemini');
  assert.equal(line.usage_estimated, true);
  assert.equal(line.completion_tokens, Math.ceil(text.length / 4));
});

test('a stream that ends is billed exactly', async () => {
  const res = await bounded(gw, '/v1/chat/completions', {
    model: 'claude-3-5-haiku', stream: true,
    messages: [{ role: 'user', content: 'hi [[mock:chunks=3]]' }],
  }, { 'x-request-id': 'whole-anthropic' });
  await res.text();
  const line = await gw.waitLog((l) => l.request_id === 'whole-anthropic');
  assert.equal(line.usage_estimated, false);
  assert.equal(line.completion_tokens, 3);
});

test('a failing on_response_body stage withholds a whole answer: 500', async () => {
  const res = await post(redact, '/v1/chat/completions', {
    model: 'gpt-4o', messages: [{ role: 'user', content: 'tell [[mock:reply=the_SECRET_is_42]]' }],
  });
  assert.equal(res.status, 500);
  const body = await res.text();
  assert.doesNotMatch(body, /SECRET|42/);
  assert.equal(JSON.parse(body).error.code, 'stage_failed');
  await redact.waitStderr(/stage 'redact'.*failed in on_response_body/);
});

test('a failing on_response_body stage ends a stream with an error event', async () => {
  const res = await post(redact, '/v1/chat/completions', {
    model: 'gpt-4o', stream: true,
    messages: [{ role: 'user', content: 'tell [[mock:reply=alpha_beta_SECRET_gamma chunk_delay=150]]' }],
  });
  assert.equal(res.status, 200);
  const body = await res.text();
  assert.match(body, /alpha/);
  assert.doesNotMatch(body, /SECRET|gamma/);
  const events = body.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
  assert.equal(JSON.parse(events.at(-1)).error.code, 'stage_failed');
  assert.ok(!events.includes('[DONE]'));
});

test('a body of 500k messages is refused with 400 while a small request is served', async () => {
  const msgs = Array.from({ length: 500000 }, () => ({ role: 'user', content: 'hi' }));
  const big = post(gw, '/v1/chat/completions', { model: 'gpt-4o', messages: msgs });
  const small = chat(gw, 'still here');
  const [b, s] = await Promise.all([big, small]);
  assert.equal(s.status, 200);
  assert.match((await s.json()).choices[0].message.content, /still here/);
  assert.equal(b.status, 400);
  const j = await b.json();
  assert.equal(j.error.param, 'messages');
  assert.equal(j.error.code, 'array_above_max_length');
  assert.match(j.error.message, /limits\.max_messages/);

  const a = await post(gw, '/v1/messages', { model: 'claude-3-5-haiku', max_tokens: 10, messages: msgs });
  assert.equal(a.status, 400);
  const aj = await a.json();
  assert.equal(aj.type, 'error');
  assert.match(aj.error.message, /max_messages/);
});

test('a body nested too deep or with too many values is refused naming its field', async () => {
  const deep = '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"metadata":'
    + '['.repeat(200) + ']'.repeat(200) + '}';
  const d = await post(gw, '/v1/chat/completions', deep);
  assert.equal(d.status, 400);
  const dj = await d.json();
  assert.equal(dj.error.param, 'metadata');
  assert.match(dj.error.message, /limits\.max_json_depth/);

  const many = await post(gw, '/v1/chat/completions', {
    model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stop: new Array(1100000).fill(0),
  });
  assert.equal(many.status, 400);
  const mj = await many.json();
  assert.equal(mj.error.param, 'stop');
  assert.match(mj.error.message, /limits\.max_json_values/);

  // strings may hold brackets and commas of any number
  const ok = await chat(gw, '[[[[,,,,'.repeat(1000));
  assert.equal(ok.status, 200);
});

test('the body shape limits are validated by the config loader', () => {
  const bad = writeConfig('limits:\n  max_messages: 0\n  max_json_depth: lots\n');
  const r = spawnSync(BIN, ['-t', '-c', bad], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /limits\.max_messages: max_messages '0' must be a whole number/);
  assert.match(r.stderr, /limits\.max_json_depth/);
});
