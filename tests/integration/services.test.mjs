// Async host services for stages: Redis (a real redis-server started here)
// and the HTTP client, from a Lua stage that yields on each call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startGateway, config, chat, closedPort, sleep, ROOT, startRedis,
} from './harness.mjs';

let mock, gw, redis, dead;

before(async () => {
  mock = await startMock();
  dead = await closedPort();
  redis = await startRedis();
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: services
    lua: ${ROOT}/tests/integration/fixtures/services.lua
    config: { upstream: "${mock.url}", dead: "http://127.0.0.1:${dead}" }`,
  }) + `
redis: { host: 127.0.0.1, port: ${redis.port}, timeout: 500ms }
`);
});

after(async () => {
  await gw.stop();
  await mock.stop();
  await redis.stop('SIGTERM');
});

test('Redis commands from a Lua stage: replies, nil, Redis errors', async () => {
  let res = await chat(gw, 'count me', {}, { 'x-counter': 'a' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-count'), '1/1');
  assert.equal(res.headers.get('x-missing-nil'), 'true');
  assert.equal(res.headers.get('x-redis-error'), 'yes');
  res = await chat(gw, 'count me', {}, { 'x-counter': 'a' });
  assert.equal(res.headers.get('x-count'), '2/2');
  assert.equal(redis.cli('GET', 'hits:a'), '2');
  // both workers share the same Redis state
  const all = await Promise.all([...Array(20)].map(() => chat(gw, 'count me', {}, { 'x-counter': 'b' })));
  assert.ok(all.every((r) => r.status === 200));
  assert.equal(redis.cli('GET', 'hits:b'), '20');
});

test('Redis down: a clear error at once, not a hang; back after a restart', async () => {
  await redis.stop('SIGTERM');
  const t0 = Date.now();
  let res = await chat(gw, 'count me', {}, { 'x-counter': 'c' });
  assert.equal(res.status, 503);
  assert.match((await res.json()).error.message, /redis: redis/);
  res = await chat(gw, 'count me', {}, { 'x-counter': 'c' });
  assert.equal(res.status, 503);
  assert.ok(Date.now() - t0 < 1500, 'Redis down must fail fast');
  // plain traffic is not affected
  assert.equal((await chat(gw, 'hello')).status, 200);
  await redis.start();
  let ok = false;
  for (let i = 0; i < 100 && !ok; i++) {
    const r = await chat(gw, 'count me', {}, { 'x-counter': 'd' });
    ok = r.status === 200;
    if (!ok) await sleep(100);
  }
  assert.ok(ok, 'the worker reconnected after Redis came back');
});

test('HTTP calls from a Lua stage: GET and a JSON POST, headers, errors', async () => {
  let res = await chat(gw, 'fetch something');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('x-http'), /^200:\d+:application\/json/);
  assert.ok(Number(res.headers.get('x-embed')) >= 1, 'the POSTed JSON was answered');
  res = await chat(gw, 'unreachable');
  assert.equal(res.status, 502);
  assert.match((await res.json()).error.message, /http: .*(refused|connect)/i);
  const t0 = Date.now();
  res = await chat(gw, 'hang');
  assert.equal(res.status, 504);
  assert.match((await res.json()).error.message, /http: .*(within 300 ms|timed out)/);
  assert.ok(Date.now() - t0 < 3000);
});
