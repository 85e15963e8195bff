// The Redis store with `on_store_error: local`: what a node settles while
// Redis is down (a budget's spend, the shared ledger) is replayed to Redis
// when it is back, so another node sees the whole spend. A real
// redis-server (append-only file, fsync always) is killed with SIGKILL and
// started again on the same file; two gateway nodes share it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, sleep, path, startRedis, adminCommand } from './harness.mjs';

let mock, redis;
const nodes = [];

async function node(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `mf-rr-${name}-`));
  const sock = path.join(dir, 'admin.sock');
  const gw = await startGateway(config(mock.url, {
    stages: `  - { name: auth, plugin: key-auth }
  - name: limits
    plugin: limits
    config: { default_max_tokens: 100, on_store_error: local }`,
  }) + `
admin: { socket: ${sock} }
redis: { host: 127.0.0.1, port: ${redis.port}, timeout: 300ms }
consumers:
  - { name: wallet, keys: ["k-wallet"], budget: { tokens: 100000000, period: month } }
  - { name: purse, keys: ["k-purse"], budget: { usd: 100, period: month } }
prices:
  gpt-4o: { input: 2.5, output: 10 }
`, { dir });
  gw.sock = sock;
  return gw;
}

const auth = (k) => ({ authorization: `Bearer ${k}` });

async function spend(gw, key, content) {
  const r = await chat(gw, content, {}, auth(key));
  const b = await r.text();
  assert.equal(r.status, 200, b);
  const u = JSON.parse(b).usage;
  // tokens, and micro-USD at gpt-4o's price (the budget's unit)
  return { tokens: u.prompt_tokens + u.completion_tokens,
    usd: Math.ceil(u.prompt_tokens * 2.5 + u.completion_tokens * 10) };
}

// Polls until f() returns a value that want() accepts; the last value.
async function until(f, want, tries = 400) {
  let v;
  for (let i = 0; i < tries; i++) {
    v = await f();
    if (want(v)) return v;
    await sleep(25);
  }
  return v;
}

before(async () => {
  mock = await startMock();
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-rr-redis-'));
  redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir] });
  for (const n of ['a', 'b']) nodes.push(await node(n));
});

after(async () => {
  for (const n of nodes) await n.stop();
  await mock.stop();
  await redis.stop();
});

test('spend and ledger settled locally during a Redis outage are replayed when it is back', async () => {
  const [a, b] = nodes;
  const used = async (who) => (await adminCommand(b.sock, 'budget.show', { args: [who] })).json;
  const requests = async () => {
    const u = await adminCommand(b.sock, 'usage', { consumer: 'wallet', period: 'month' });
    return u.status === 200 ? u.json.total.requests : -1;
  };
  let tokens = 0, usd = 0;
  // before the outage: counted in Redis
  for (let i = 0; i < 2; i++) {
    tokens += (await spend(a, 'k-wallet', `before ${i}`)).tokens;
    usd += (await spend(a, 'k-purse', `before ${i}`)).usd;
  }
  let shown = await until(() => used('wallet'), (j) => j.budgets?.tokens?.used === tokens);
  assert.equal(shown.budgets.tokens.used, tokens, JSON.stringify(shown));

  await redis.stop();
  // during the outage: admitted and counted on node a alone (local)
  let during = 0;
  for (let i = 0; i < 3; i++) {
    const t = (await spend(a, 'k-wallet', `during ${'x'.repeat(i * 30)}`)).tokens;
    during += t;
    usd += (await spend(a, 'k-purse', `during ${i}`)).usd;
  }
  tokens += during;
  // node b cannot read the budget while Redis is down
  assert.notEqual((await adminCommand(b.sock, 'budget.show', { args: ['wallet'] })).status, 200);

  await redis.start();
  // node a reconnects (with a backoff: until then it still counts
  // locally, and keeps that too); the first answers Redis gives it carry
  // the replay of what it settled meanwhile. Node b must then see the
  // whole spend: before + during the outage + after.
  let sent = 5;
  for (let i = 0; i < 100; i++) {
    tokens += (await spend(a, 'k-wallet', `back ${i}`)).tokens;
    sent++;
    shown = await until(() => used('wallet'), (j) => j.budgets?.tokens?.used === tokens, 20);
    if (shown.budgets?.tokens?.used === tokens) break;
  }
  assert.equal(shown.budgets.tokens.used, tokens,
    `node b sees ${JSON.stringify(shown.budgets)}, ${tokens} spent (${during} during the outage)`);
  assert.equal(shown.budgets.tokens.reserved, 0);
  // the USD budget too
  shown = await until(() => used('purse'), (j) => j.budgets?.micro_usd?.used === usd);
  assert.equal(shown.budgets?.micro_usd?.used, usd, JSON.stringify(shown));
  // and the shared ledger counts every request
  assert.equal(await until(requests, (n) => n === sent), sent);
  // replayed once: nothing more arrives afterwards
  await spend(a, 'k-purse', 'after');
  await sleep(200);
  assert.equal(await requests(), sent);
  assert.equal((await used('wallet')).budgets.tokens.used, tokens);
});
