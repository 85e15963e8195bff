// Two gateway nodes sharing a real redis-server: key health learned by one
// node (a 401 disables a key, a 429 rests one) reaches the other within a
// sync period, so no node keeps sending to a key another found bad.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, closedPort, sleep, http, path } from './harness.mjs';
import { adminCall } from './harness.mjs';

let mock, redis, redisPort, a, b, sockA, sockB;

async function admin(sock, p) {
  return (await adminCall(sock, 'GET', p)).json;
}

async function node(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `mf-${name}-`));
  const sock = path.join(dir, 'admin.sock');
  const gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: shared
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-status-401-revoked", "sk-fine-0123456789", "sk-status-429-retry-after-5-hot"]
    models: ["shared-*"]`,
  }) + `
admin: { socket: ${sock} }
redis: { host: 127.0.0.1, port: ${redisPort}, timeout: 500ms }
`, { dir });
  return [gw, sock];
}

before(async () => {
  mock = await startMock();
  redisPort = await closedPort();
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const r = spawnSync('redis-cli', ['-p', String(redisPort), 'PING']);
    if (r.stdout && r.stdout.toString().includes('PONG')) break;
    await sleep(50);
  }
  [a, sockA] = await node('a');
  [b, sockB] = await node('b');
});

after(async () => {
  await a.stop();
  await b.stop();
  await mock.stop();
  redis.kill('SIGTERM');
  await new Promise((r) => redis.on('exit', r));
});

test('key health learned on one node reaches the other through Redis', async () => {
  // node a meets both bad keys (round robin over three keys)
  for (let i = 0; i < 3; i++) assert.equal((await chat(a, 'x', { model: 'shared-1' })).status, 200);
  const ka = (await admin(sockA, '/keys')).keys.filter((k) => k.provider === 'shared');
  assert.equal(ka[0].state, 'disabled');
  // a 429 rests a key for the model asked only, on every node
  assert.equal(ka[2].state, 'ok');
  assert.deepEqual(ka[2].rests.map((r) => r.model), ['shared-1']);
  let kb;
  const rested = (k) => k.rests.find((r) => r.model === 'shared-1');
  for (let i = 0; i < 40; i++) {
    await sleep(100);
    kb = (await admin(sockB, '/keys')).keys.filter((k) => k.provider === 'shared');
    if (kb[0].state === 'disabled' && rested(kb[2])) break;
  }
  assert.equal(kb[0].state, 'disabled', JSON.stringify(kb));
  assert.match(kb[0].why, /another node/);
  assert.equal(kb[2].state, 'ok');
  const rest = rested(kb[2]);
  assert.ok(rest, JSON.stringify(kb));
  assert.match(rest.why, /another node/);
  assert.ok(rest.retry_in_ms > 1000 && rest.retry_in_ms <= 5000);
  // node b never tries them: every request is served at the first attempt
  for (let i = 0; i < 6; i++) {
    const res = await chat(b, 'x', { model: 'shared-1' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-manifold-attempts'), '1');
  }
});
