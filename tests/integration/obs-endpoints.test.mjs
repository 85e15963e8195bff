// The endpoint table: paths a C plugin and a Lua stage add on the client
// and status listeners, the built-in paths in the same table, 404 and 405
// for what no entry serves, the status listener's token, mf.metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startGateway, config, spawnSync, BIN, BUILD, ROOT, writeConfig, raw,
} from './harness.mjs';

let mock, gw, status;

const stages = `
  - name: hello
    plugin: ${BUILD}/examples/hello.so
    config: { greeting: "from C", serve: "/hello" }
  - name: hello-status
    plugin: ${BUILD}/examples/hello.so
    config: { greeting: "status side", serve: "/hi", listener: status }
  - name: endpoints
    lua: ${ROOT}/tests/integration/fixtures/endpoints.lua
    config: { tag: t1 }`;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, { stages }) + 'status:\n  listen: 127.0.0.1:0\n');
  const m = gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/);
  assert.ok(m, gw.stderr);
  status = `http://127.0.0.1:${m[1]}`;
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('a C plugin serves a path on the client listener and one on the status listener', async () => {
  let res = await fetch(gw.url + '/hello');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-hello'), 'from C');
  assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
  assert.equal(await res.text(), 'hello, from C\n');
  res = await fetch(status + '/hi');
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'hello, status side\n');
  // each listener has its own table
  res = await fetch(gw.url + '/hi');
  assert.equal(res.status, 404);
  res = await fetch(status + '/hello');
  assert.equal(res.status, 404);
  // a path served for GET only: 405 with Allow
  res = await fetch(gw.url + '/hello', { method: 'POST', body: 'x' });
  assert.equal(res.status, 405);
  assert.equal(res.headers.get('allow'), 'GET');
});

test('a Lua stage serves a prefix for any method, with query and body', async () => {
  const res = await fetch(gw.url + '/lua/echo/a/b?x=1&y=2', { method: 'POST', body: 'payload' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    path: '/lua/echo/a/b', query: 'x=1&y=2', method: 'POST', body: 'payload', tag: 't1',
  });
  const plain = await fetch(gw.url + '/lua/echo');
  assert.equal((await plain.json()).path, '/lua/echo');
  // a prefix covers what is under it, not a longer name
  assert.equal((await fetch(gw.url + '/lua/echoes')).status, 404);
});

test('a Lua handler may yield in an async call and answer with headers', async () => {
  const res = await fetch(status + '/lua/slow');
  assert.equal(res.status, 201);
  assert.equal(res.headers.get('x-slept'), 'yes');
  assert.equal(res.headers.get('content-type'), 'text/plain');
  assert.equal(await res.text(), 'slept\n');
});

test('a handler that does not answer gets a 500, logged', async () => {
  const res = await fetch(status + '/lua/quiet');
  assert.equal(res.status, 500);
  assert.equal((await res.json()).error.type, 'server_error');
});

test('built-in paths are in the table; unknown paths 404 in the client protocol', async () => {
  assert.equal((await fetch(gw.url + '/healthz')).status, 200);
  assert.equal((await fetch(status + '/healthz')).status, 200);
  assert.equal((await fetch(gw.url + '/v1/models')).status, 200);
  let res = await fetch(gw.url + '/nope');
  assert.equal(res.status, 404);
  let body = await res.json();
  assert.equal(body.error.code, 'unknown_url');
  assert.equal(body.error.type, 'invalid_request_error');
  res = await fetch(status + '/nope');
  assert.equal(res.status, 404);
  assert.match((await res.json()).error.message, /status listener/);
  // the chat API is not on the status listener
  res = await fetch(status + '/v1/chat/completions', { method: 'POST', body: '{}' });
  assert.equal(res.status, 404);
  // Anthropic's path keeps its error shape
  const out = await raw(gw.port, 'GET /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n', { waitMs: 1000 });
  assert.match(out, /^HTTP\/1.1 405/);
  body = JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4));
  assert.equal(body.type, 'error');
});

test('mf.metrics: a Lua counter and histogram, scraped on a Lua path', async () => {
  await fetch(gw.url + '/lua/echo/x', { method: 'POST', body: 'x'.repeat(50) });
  await fetch(gw.url + '/hello');
  let text = '';
  for (let i = 0; i < 100; i++) {
    text = await (await fetch(status + '/lua/metrics')).text();
    if (/test_lua_requests_total\{path="\/hello"\} [1-9]/.test(text)) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.match(text, /# TYPE test_lua_requests_total counter/);
  assert.match(text, /test_lua_requests_total\{path="\/hello"\} [1-9]/);
  assert.match(text, /# TYPE test_lua_body_bytes histogram/);
  assert.match(text, /test_lua_body_bytes_bucket\{le="100"\} [1-9]/);
  assert.match(text, /test_lua_body_bytes_bucket\{le="\+Inf"\} [1-9]/);
  assert.match(text, /test_lua_body_bytes_count [1-9]/);
});

test('a path a stage adds where the gateway or another stage serves is refused', () => {
  const file = writeConfig(config(mock.url, { stages: `
  - name: hello
    plugin: ${BUILD}/examples/hello.so
    config: { serve: "/healthz" }` }));
  let r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /GET \/healthz \(client listener\): the gateway serves it/);
  const file2 = writeConfig(config(mock.url, { stages: `
  - name: a
    plugin: ${BUILD}/examples/hello.so
    config: { serve: "/same" }
  - name: b
    plugin: ${BUILD}/examples/hello.so
    config: { serve: "/same" }` }));
  r = spawnSync(BIN, ['-t', '-c', file2], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /stage 'b' adds GET \/same \(client listener\), which stage 'a' serves already/);
});

test('the status listener asks for its bearer token when one is set', async () => {
  const token = 'status-token-0123456789';
  const gw2 = await startGateway(config(mock.url, { stages }) +
    `status:\n  listen: 127.0.0.1:0\n  token: ${token}\n`);
  try {
    const port = gw2.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1];
    const url = `http://127.0.0.1:${port}`;
    let res = await fetch(url + '/hi');
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate'), /^Bearer/);
    res = await fetch(url + '/hi', { headers: { authorization: 'Bearer wrong-token-0123456789' } });
    assert.equal(res.status, 401);
    res = await fetch(url + '/hi', { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    // the client listener does not ask for it
    assert.equal((await fetch(gw2.url + '/hello')).status, 200);
    assert.ok(!gw2.stderr.includes(token), 'the token leaked into the log');
  } finally {
    await gw2.stop();
  }
});

test('status.token too short is refused', () => {
  const file = writeConfig(config(mock.url) + 'status:\n  token: short\n');
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /status\.token/);
});
