// Integration tests: the gateway and the C mock over real sockets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startGateway, config, chat, post, sseEvents, raw, closedPort,
  sleep, http, spawnSync, BIN, BUILD, ROOT, writeConfig, path,
} from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  const refused = await closedPort();
  gw = await startGateway(config(mock.url, {
    limits: '  max_body: 4KiB\n  client_timeout: 400ms',
    extraProviders: `
  - name: dead
    type: openai
    base_url: http://127.0.0.1:${refused}/v1
    keys: ["sk-dead-0123456789abcdef"]
    models: ["dead-*"]
  - name: slow
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-slow-0123456789abcdef"]
    models: ["slow-*"]
    timeout: 300ms
  - name: local
    type: ollama
    base_url: ${mock.url}/v1
    models: ["ollama/*"]
    model_map: { "ollama/*": "*" }
  - name: errs429
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-errs429-0123456789"]
    models: ["errs429-*"]
  - name: errs401
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-errs401-0123456789"]
    models: ["errs401-*"]
  - name: errs500
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-errs500-0123456789"]
    models: ["errs500-*"]
  - name: nokey
    type: openai
    base_url: ${mock.url}/v1
    keys: ["\${MF_TEST_UNSET_KEY}"]
    models: ["nokey-*"]`,
    stages: `
  - name: router
    lua: ${ROOT}/examples/lua-router/router.lua
    config:
      default_model: gpt-4o-mini
      intents:
        code: { words: ["bug", "compile"], model: gpt-4.1 }
  - name: tagger
    lua: ${ROOT}/tests/integration/fixtures/tagger.lua
    config: { tag: first }
  - name: hello
    plugin: ${BUILD}/examples/hello.so
    config: { greeting: "from Manifold" }`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('non-stream chat is proxied and logged with usage', async () => {
  const res = await chat(gw, 'hi there', {}, { 'x-request-id': 'req-nonstream-1', authorization: 'Bearer client-key' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-request-id'), 'req-nonstream-1');
  assert.equal(res.headers.get('x-hello'), 'from Manifold');
  assert.equal(res.headers.get('x-tag'), 'first');
  const body = await res.json();
  assert.equal(body.object, 'chat.completion');
  assert.match(body.choices[0].message.content, /You said: hi there/);
  const up = await mock.last();
  assert.equal(up.headers.authorization, 'Bearer sk-upstream-secret-0123456789');
  assert.equal(JSON.parse(up.body).model, 'gpt-4o');
  const line = await gw.waitLog((l) => l.request_id === 'req-nonstream-1');
  assert.equal(line.status, 200);
  assert.equal(line.provider, 'openai');
  assert.equal(line.prompt_tokens, body.usage.prompt_tokens);
  assert.equal(line.completion_tokens, body.usage.completion_tokens);
  assert.equal(line.usage_estimated, false);
  assert.ok(line.latency_ms > 0);
  const all = JSON.stringify(gw.accessLog()) + gw.stderr;
  assert.ok(!all.includes('sk-upstream-secret'), 'key leaked into logs');
  assert.ok(!all.includes('client-key'), 'client key leaked into logs');
});

test('stream: usage asked upstream, stripped when the client did not ask', async () => {
  const res = await chat(gw, 'stream me', { stream: true }, { 'x-request-id': 'req-stream-1' });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/event-stream/);
  const events = await sseEvents(res);
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.ok(chunks.every((c) => c.choices.length > 0), 'usage-only chunk leaked');
  const text = chunks.map((c) => c.choices[0].delta.content || '').join('');
  assert.match(text, /You said: stream me/);
  const up = JSON.parse((await mock.last()).body);
  assert.equal(up.stream_options.include_usage, true);
  const line = await gw.waitLog((l) => l.request_id === 'req-stream-1');
  assert.ok(line.completion_tokens > 0);
  assert.equal(line.usage_estimated, false);
  assert.ok(line.ttft_ms !== null && line.ttft_ms >= 0);
});

test('stream: usage chunk kept when the client asked for it', async () => {
  const res = await chat(gw, 'with usage', { stream: true, stream_options: { include_usage: true } });
  const events = await sseEvents(res);
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.total_tokens > 0);
});

test('tools and images pass through', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const res = await post(gw, '/v1/chat/completions', {
    model: 'gpt-4o', tools,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'weather?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }],
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.choices[0].finish_reason, 'tool_calls');
  assert.equal(body.choices[0].message.tool_calls[0].function.name, 'get_weather');
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.tools, tools);
  assert.equal(up.messages[0].content[1].image_url.url, 'data:image/png;base64,iVBORw0KGgo=');
});

test('embeddings and models', async () => {
  const res = await post(gw, '/v1/embeddings', { model: 'text-embedding-3-small', input: ['a', 'b'] });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.data.length, 2);
  const models = await (await fetch(gw.url + '/v1/models')).json();
  assert.equal(models.object, 'list');
  assert.ok(models.data.some((m) => m.id === 'gpt-4o'));
  assert.ok(!models.data.some((m) => m.id.includes('*')));
  assert.ok(!models.data.some((m) => m.owned_by === 'nokey'));
  const health = await fetch(gw.url + '/healthz');
  assert.equal(health.status, 200);
});

test('malformed JSON is 400 in OpenAI error shape', async () => {
  const res = await post(gw, '/v1/chat/completions', '{"model": "gpt-4o", "messages": [');
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.error.type, 'invalid_request_error');
  assert.match(body.error.message, /could not parse the JSON/);
});

test('missing model or messages is 400', async () => {
  let res = await post(gw, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /model/);
  res = await post(gw, '/v1/chat/completions', { model: 'gpt-4o' });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /messages/);
  res = await post(gw, '/v1/embeddings', { model: 'text-embedding-3-small' });
  assert.equal(res.status, 400);
});

test('body over the limit is 413 before it is read', async () => {
  const res = await chat(gw, 'x'.repeat(8000));
  assert.equal(res.status, 413);
  assert.match((await res.json()).error.message, /max_body/);
});

test('unknown model is 404 model_not_found with a fix', async () => {
  const res = await chat(gw, 'hi', { model: 'claude-nope' });
  assert.equal(res.status, 404);
  const body = await res.json();
  assert.equal(body.error.code, 'model_not_found');
  assert.match(body.error.message, /Served:.*operator/);
  // a model of a provider disabled for lack of a key: 503 naming it
  const res2 = await chat(gw, 'hi', { model: 'nokey-1' });
  assert.equal(res2.status, 503);
  const text2 = await res2.text();
  assert.equal(JSON.parse(text2).error.code, 'provider_disabled');
  assert.match(text2, /provider 'nokey'/);
  assert.ok(!text2.includes('.yaml'), 'the config path is the operator\'s');
  // the hint for the operator goes to the log
  const end = Date.now() + 5000;
  while (!/disabled because its keys are empty/.test(gw.stderr) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
  }
  await gw.waitStderr(/disabled because its keys are empty/);
});

test('upstream refusing connection is 502', async () => {
  const res = await chat(gw, 'hi', { model: 'dead-1' });
  assert.equal(res.status, 502);
  const body = await res.json();
  assert.equal(body.error.code, 'upstream_unreachable');
  assert.ok(!JSON.stringify(body).includes('sk-dead'));
});

test('upstream hanging is 504 after the provider timeout', async () => {
  const t0 = Date.now();
  const res = await chat(gw, 'hang please [[mock:hang]]', { model: 'slow-1' });
  assert.equal(res.status, 504);
  assert.equal((await res.json()).error.code, 'upstream_timeout');
  assert.ok(Date.now() - t0 >= 250);
});

// each failing kind on its own provider: the key pool learns from them
test('upstream errors map to the right status, keys scrubbed', async () => {
  let res = await chat(gw, 'limit me [[mock:status=429 retry_after=7]]', { model: 'errs429-a' });
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '7');
  assert.equal((await res.json()).error.type, 'rate_limit_error');
  // the only key now rests for its Retry-After: the gateway answers itself
  res = await chat(gw, 'again', { model: 'errs429-a' });
  assert.equal(res.status, 429);
  assert.ok(Number(res.headers.get('retry-after')) >= 6);
  res = await chat(gw, 'bad key [[mock:status=401]]', { model: 'errs401-a' });
  assert.equal(res.status, 502);
  const body = await res.json();
  assert.equal(body.error.code, 'upstream_auth_failed');
  assert.ok(!JSON.stringify(body).includes('sk-mock'));
  assert.ok(!JSON.stringify(body).includes('sk-errs401'));
  res = await chat(gw, 'server error [[mock:status=500]]', { model: 'errs500-a' });
  assert.equal(res.status, 502);
  res = await chat(gw, 'bad request [[mock:status=400]]');
  assert.equal(res.status, 400);
});

test('garbage from upstream is a clear 502 or error event', async () => {
  let res = await chat(gw, 'junk [[mock:garbage]]');
  assert.equal(res.status, 502);
  assert.equal((await res.json()).error.code, 'upstream_bad_response');
  res = await chat(gw, 'junk stream [[mock:garbage]]', { stream: true });
  const events = await sseEvents(res);
  const err = events.map((e) => { try { return JSON.parse(e); } catch { return null; } }).find((e) => e && e.error);
  assert.ok(err, 'no error event');
  assert.equal(err.error.code, 'upstream_bad_stream');
});

test('an upstream event cut short ends a translated stream with an error, in the client\'s protocol', async () => {
  // OpenAI client: as for any garbage
  let res = await chat(gw, 'half [[mock:halfjson]]', { stream: true });
  let events = await sseEvents(res);
  assert.ok(events.some((e) => e.includes('"upstream_bad_stream"')), events.join('\n'));
  // Anthropic client: the event is not dropped and the answer does not go on short
  res = await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'half [[mock:halfjson]]' }] },
    { 'anthropic-version': '2023-06-01' });
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.match(text, /event: error\ndata: \{"type":"error","error":\{"type":"[a-z_]+"/);
  assert.doesNotMatch(text, /event: message_stop/);
  // Responses client
  res = await post(gw, '/v1/responses', { model: 'gpt-4o', stream: true, store: false, input: 'half [[mock:halfjson]]' });
  const rtext = await res.text();
  assert.match(rtext, /event: response\.failed/);
  assert.doesNotMatch(rtext, /event: response\.completed/);
});

test('a cut stream ends with an error event and is logged with the usage seen', async () => {
  const res = await chat(gw, 'cut [[mock:chunks=10 cut=4 chunk_delay=30]]', { stream: true }, { 'x-request-id': 'req-cut-1' });
  assert.equal(res.status, 200);
  const events = await sseEvents(res);
  const last = JSON.parse(events.at(-1));
  assert.equal(last.error.code, 'upstream_stream_cut');
  const line = await gw.waitLog((l) => l.request_id === 'req-cut-1');
  assert.equal(line.usage_estimated, true);
  assert.ok(line.completion_tokens >= 3);
  assert.ok(line.prompt_tokens > 0);
  assert.match(line.error, /cut/);
});

test('a client vanishing mid-stream cancels the upstream and is logged', async () => {
  await new Promise((resolve, reject) => {
    const req = http.request(gw.url + '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'req-vanish-1' },
    }, (res) => {
      // gone once some answer text arrived (the role chunk carries none)
      res.on('data', (d) => { if (/tok/.test(d)) { req.destroy(); resolve(); } });
    });
    req.on('error', () => {});
    req.end(JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'slow [[mock:chunks=50 chunk_delay=100]]' }] }));
    setTimeout(() => reject(new Error('no data')), 5000);
  });
  const line = await gw.waitLog((l) => l.request_id === 'req-vanish-1');
  assert.match(line.error, /client closed/);
  assert.ok(line.completion_tokens >= 1);
  assert.equal(line.usage_estimated, true);
  assert.ok(line.latency_ms < 3000, 'the upstream stream was not cancelled');
  const res = await chat(gw, 'still alive');
  assert.equal(res.status, 200);
});

test('Lua router routes model auto by keywords', async () => {
  const res = await chat(gw, 'there is a bug in my code', { model: 'auto' }, { 'x-request-id': 'req-auto-1' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-intent'), 'code');
  assert.equal(JSON.parse((await mock.last()).body).model, 'gpt-4.1');
  const res2 = await chat(gw, 'hello', { model: 'auto' });
  assert.equal(res2.headers.get('x-intent'), 'default');
  assert.equal(JSON.parse((await mock.last()).body).model, 'gpt-4o-mini');
  const line = await gw.waitLog((l) => l.request_id === 'req-auto-1');
  assert.equal(line.model, 'auto');
  assert.equal(line.upstream_model, 'gpt-4.1');
});

test('Lua stages answer, pause on mf.sleep, share state and fail cleanly', async () => {
  let res = await chat(gw, 'please block this');
  assert.equal(res.status, 403);
  assert.equal((await res.json()).error.message, 'blocked by tagger');
  res = await chat(gw, 'answer json');
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { answered_by: 'lua', model: 'gpt-4o' });
  res = await chat(gw, 'sleep first');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-slept'), 'true');
  const counts = [];
  for (let i = 0; i < 4; i++) {
    res = await chat(gw, 'count me');
    counts.push(Number(res.headers.get('x-count')));
  }
  assert.deepEqual(counts.slice(1).map((c, i) => c - counts[i]), [1, 1, 1]);
  res = await chat(gw, 'crash lua');
  assert.equal(res.status, 500);
  await gw.waitStderr(/deliberate failure/);
});

test('model_map renames before sending upstream', async () => {
  const res = await chat(gw, 'hi', { model: 'ollama/qwen2.5:7b' });
  assert.equal(res.status, 200);
  const up = await mock.last();
  assert.equal(JSON.parse(up.body).model, 'qwen2.5:7b');
  assert.equal(up.headers.authorization, undefined);
});

test('slow, oversized and malformed HTTP requests get clear errors', async () => {
  let out = await raw(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"mo');
  assert.match(out, /^HTTP\/1.1 408/);
  out = await raw(gw.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ' + 'a'.repeat(70000) + '\r\n\r\n');
  assert.match(out, /^HTTP\/1.1 431/);
  out = await raw(gw.port, 'BAD\r\n\r\n');
  assert.match(out, /^HTTP\/1.1 400/);
  out = await raw(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello');
  assert.match(out, /^HTTP\/1.1 400/);
  out = await raw(gw.port, 'GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
  assert.match(out, /^HTTP\/1.1 404/);
  // chunked request bodies and keep-alive (two requests, one connection)
  const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'chunked' }] });
  const chunked = `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
  out = await raw(gw.port, chunked + 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
  assert.equal(out.match(/HTTP\/1.1 200/g).length, 2);
});

test('manifold -t validates and names file, line and key', async () => {
  const ok = spawnSync(BIN, ['-t', '-c', path.join(ROOT, 'configs/manifold.yaml')], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  const bad = writeConfig('listen: 127.0.0.1:x\nproviders:\n  - name: a\n    type: openai\n    bogus: 1\nlimits:\n  max_body: lots\n');
  const r = spawnSync(BIN, ['-t', '-c', bad], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /manifold.yaml:1: listen: '127.0.0.1:x' is not host:port/);
  assert.match(r.stderr, /manifold.yaml:5: providers\[0\]: unknown key 'bogus'/);
  assert.match(r.stderr, /manifold.yaml:3: providers\[0\]: needs a base_url/);
  assert.match(r.stderr, /manifold.yaml:7: limits.max_body: 'lots' is not a size/);
  const lua = writeConfig(`stages:\n  - name: broken\n    lua: broken.lua\n`);
  (await import('node:fs')).writeFileSync(path.join(path.dirname(lua), 'broken.lua'), 'local M = {\nfunction M.on_route(\nreturn M\n');
  const r2 = spawnSync(BIN, ['-t', '-c', lua, '-p', path.join(BUILD, 'plugins')], { encoding: 'utf8' });
  assert.notEqual(r2.status, 0);
  assert.match(r2.stderr, /broken.lua:\d+:/);
});
