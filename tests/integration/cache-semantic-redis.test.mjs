// The semantic layer with `redis:`: the questions one node stores reach
// every node's index through a Redis stream (mf:cache:v), so a near
// question on another node (or a node started later) is a semantic hit
// on the entry the first stored. Two gateways, one real redis-server,
// the mock's bag-of-words embeddings (cache-semantic.test.mjs explains
// the threshold).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, post, sleep, path, startRedis, adminCommand } from './harness.mjs';

let mock, redis, a, b, sockA;
const started = [];

async function node(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `mf-semr-${name}-`));
  const sock = path.join(dir, 'admin.sock');
  const gw = await startGateway(config(mock.url, {
    stages: `  - name: cache
    plugin: cache
    config:
      scope: global
      semantic: { model: text-embedding-bow, threshold: 0.9, timeout: 2s, max_entries: 1000 }`,
  }) + `
admin: { socket: ${sock} }
redis: { host: 127.0.0.1, port: ${redis.port}, timeout: 500ms }
`, { dir });
  started.push(gw);
  return [gw, sock];
}

// waits until the stream holds n questions (appended after the answer)
async function questions(n) {
  for (let i = 0; i < 200; i++) {
    if (Number(redis.cli('XLEN', 'mf:cache:v')) >= n) return;
    await sleep(20);
  }
  throw new Error(`the stream never held ${n} questions`);
}

function ask(g, content) {
  return post(g, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content }] });
}

async function counted(fn) {
  const before = await mock.count();
  const out = await fn();
  return { out, calls: (await mock.count()) - before };
}

before(async () => {
  mock = await startMock();
  redis = await startRedis();
  [a, sockA] = await node('a');
  [b] = await node('b');
});

after(async () => {
  for (const g of started) await g.stop();
  await mock.stop();
  await redis.stop('SIGTERM');
});

test('a near question on node b hits the answer node a stored', async () => {
  const q = 'What is the capital city of France?';
  const first = await ask(a, q);
  assert.equal(first.headers.get('x-manifold-cache'), 'miss');
  const ja = await first.json();
  await questions(1);
  // reordered: the same bag of words, on the other node
  const { out, calls } = await counted(() => ask(b, 'the capital city of France is what'));
  assert.equal(out.status, 200);
  assert.equal(out.headers.get('x-manifold-cache'), 'hit');
  assert.equal(out.headers.get('x-manifold-cache-layer'), 'semantic');
  assert.ok(Number(out.headers.get('x-manifold-cache-similarity')) > 0.999);
  assert.equal(calls, 1, 'the embeddings call only: no chat call');
  assert.deepEqual((await out.json()).choices, ja.choices);
});

test('the guards hold across nodes: "turn off" misses what "turn on" stored', async () => {
  const on = 'please turn on the big kitchen light in the house right now for me';
  const off = 'please turn off the big kitchen light in the house right now for me';
  const n = Number(redis.cli('XLEN', 'mf:cache:v'));
  await (await ask(a, on)).json();
  await questions(n + 1);
  const r = await ask(b, off);
  assert.equal(r.headers.get('x-manifold-cache'), 'miss');
  await r.text();
  const same = await ask(b, 'please turn on the big kitchen light in the house for me right now');
  assert.equal(same.headers.get('x-manifold-cache'), 'hit');
  assert.equal(same.headers.get('x-manifold-cache-layer'), 'semantic');
  await same.text();
});

test('a node started later reads the questions stored before it', async () => {
  const [c] = await node('c');
  const { out, calls } = await counted(() => ask(c, 'the capital city of France is what'));
  assert.equal(out.headers.get('x-manifold-cache'), 'hit');
  assert.equal(out.headers.get('x-manifold-cache-layer'), 'semantic');
  assert.equal(calls, 1);
  await out.text();
});

test('a purged answer is not served by a near question on any node', async () => {
  const q = 'name three famous rivers of south america';
  const n = Number(redis.cli('XLEN', 'mf:cache:v'));
  await (await ask(a, q)).json();
  await questions(n + 1);
  const hit = await ask(b, 'name three famous rivers of south america please');
  assert.equal(hit.headers.get('x-manifold-cache-layer'), 'semantic');
  await hit.text();
  const p = await adminCommand(sockA, 'cache.purge', { model: 'gpt-4o' });
  assert.equal(p.status, 200);
  const after = await ask(b, 'south america: name three famous rivers please');
  assert.equal(after.headers.get('x-manifold-cache'), 'miss');
  await after.text();
});

test('a near answer too old for one client (max-age) still answers the next', async () => {
  const q = 'which planet is the largest in our solar system';
  const n = Number(redis.cli('XLEN', 'mf:cache:v'));
  await (await ask(a, q)).json();
  await questions(n + 1);
  // wait until the entry is a second old (its exact hit says its age)
  for (let i = 0; ; i++) {
    const r = await ask(a, q);
    await r.text();
    if (Number(r.headers.get('age')) >= 1) break;
    assert.ok(i < 100, 'the entry never aged');
    await sleep(50);
  }
  const old = await post(b, '/v1/chat/completions',
    { model: 'gpt-4o', messages: [{ role: 'user', content: 'in our solar system which planet is the largest' }] },
    { 'cache-control': 'max-age=0, no-store' });
  assert.equal(old.headers.get('x-manifold-cache'), 'miss');
  await old.text();
  const next = await ask(b, 'the largest planet in our solar system is which');
  assert.equal(next.headers.get('x-manifold-cache'), 'hit');
  assert.equal(next.headers.get('x-manifold-cache-layer'), 'semantic');
  await next.text();
});
