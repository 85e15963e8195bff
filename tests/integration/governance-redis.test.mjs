// The Redis store of key-auth and limits: three gateway nodes sharing one
// real redis-server act as one. A budget that fits one request lets one
// through across the nodes; a key revoked on one node is refused on the
// others within a second; with Redis killed under load each limit kind
// follows on_store_error (rates local, concurrency open, budgets closed
// here), no request fails with a 500 or waits past the store timeout;
// with Redis back the counters are in Redis again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, sleep, path, startRedis, adminCommand } from './harness.mjs';

const STORE_TIMEOUT_MS = 300;
let mock, redis;
const nodes = [];

async function node(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `mf-rs-${name}-`));
  const sock = path.join(dir, 'admin.sock');
  const gw = await startGateway(config(mock.url, {
    stages: `  - { name: auth, plugin: key-auth }
  - name: limits
    plugin: limits
    config:
      default_max_tokens: 100
      on_store_error: { rates: local, concurrency: open, budgets: closed }`,
  }) + `
admin: { socket: ${sock} }
redis: { host: 127.0.0.1, port: ${redis.port}, timeout: ${STORE_TIMEOUT_MS}ms }
consumers:
  - { name: one-shot, keys: ["k-one-shot"], budget: { tokens: 200, period: month } }
  - { name: rated, keys: ["k-rated"], limits: { rpm: 3 } }
  - { name: narrow, keys: ["k-narrow"], limits: { concurrency: 1 } }
  - { name: budgeted, keys: ["k-budgeted"], budget: { tokens: 100000000, period: month } }
  - { name: free, keys: ["k-free"] }
  - { name: wallet, keys: ["k-wallet"], budget: { usd: 2, period: month } }
  - { name: spread, keys: ["k-spread"], budget: { tokens: 100000000, period: month } }
  - { name: plain, keys: ["k-plain"] }
  - { name: g1, group: eng, keys: ["k-g1"] }
  - { name: g2, group: eng, keys: ["k-g2"], budget: { tokens: 100000, period: month } }
groups:
  - { name: eng, budget: { tokens: 150, period: month } }
prices:
  gpt-4o: { input: 2.5, output: 10 }
`, { dir });
  gw.sock = sock;
  return gw;
}

const auth = (k) => ({ authorization: `Bearer ${k}` });

before(async () => {
  mock = await startMock();
  redis = await startRedis();
  for (const n of ['a', 'b', 'c']) nodes.push(await node(n));
});

after(async () => {
  for (const n of nodes) await n.stop();
  await mock.stop();
  await redis.stop();
});

test('20 parallel requests on 3 nodes against a budget that fits one: exactly one passes', async () => {
  const rs = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    chat(nodes[i % 3], '[[mock:delay=1500]] hi', {}, auth('k-one-shot'))));
  const ok = rs.filter((r) => r.status === 200);
  const quota = rs.filter((r) => r.status === 429);
  assert.equal(ok.length, 1, rs.map((r) => r.status).join(','));
  assert.equal(quota.length, 19);
  const j = await quota[0].json();
  assert.equal(j.error.code, 'insufficient_quota');
  assert.equal(quota[0].headers.get('x-should-retry'), 'false');
  await Promise.all(rs.map((r) => r.text().catch(() => {})));
  // the spend is in Redis, settled once, seen by every node
  let shown;
  for (let i = 0; i < 100; i++) {
    shown = await adminCommand(nodes[2].sock, 'budget.show', { args: ['one-shot'] });
    if (shown.json.budgets.tokens && shown.json.budgets.tokens.reserved === 0) break;
    await sleep(20);
  }
  assert.equal(shown.json.store, 'redis');
  assert.equal(shown.json.budgets.tokens.reserved, 0);
  // charged as the upstream reported it, once (not 20 estimates)
  const used = shown.json.budgets.tokens.used;
  assert.ok(used > 0 && used < 200, JSON.stringify(shown.json));
});

test('a group budget on another hash tag: shared by the nodes, and a refusal there gives back what the consumer\'s tag took', async () => {
  const first = chat(nodes[0], '[[mock:delay=1000]] hi', {}, auth('k-g1'));
  for (let i = 0; i < 200; i++) {
    const shown = (await adminCommand(nodes[1].sock, 'budget.show', { args: ['eng'], group: true })).json.budgets.tokens;
    if (shown && shown.reserved > 0) break;
    await sleep(5);
  }
  const second = await chat(nodes[1], 'hi', {}, auth('k-g2'));
  assert.equal(second.status, 429);
  const j = await second.json();
  assert.equal(j.error.code, 'insufficient_quota');
  assert.match(j.error.message, /group:eng/);
  // g2's own budget ({c:g2}) was reserved first, then given back
  let mine;
  for (let i = 0; i < 200; i++) {
    mine = (await adminCommand(nodes[2].sock, 'budget.show', { args: ['g2'] })).json.budgets.tokens;
    if (mine && mine.reserved === 0) break;
    await sleep(10);
  }
  assert.ok(mine, 'g2 was reserved in Redis');
  assert.equal(mine.reserved, 0);
  assert.equal(mine.used, 0);
  const r1 = await first;
  assert.equal(r1.status, 200);
  await r1.text();
});

test('billing endpoints read the budget in Redis: spent on node 1, seen on node 3', async () => {
  const r = await chat(nodes[0], 'hi', {}, auth('k-wallet'));
  const body = await r.json();
  const cost = Math.ceil(body.usage.prompt_tokens * 2.5 + body.usage.completion_tokens * 10);
  let use;
  for (let i = 0; i < 200; i++) {
    use = await (await fetch(nodes[2].url + '/v1/dashboard/billing/usage', { headers: auth('k-wallet') })).json();
    if (use.total_usage > 0) break;
    await sleep(10);
  }
  assert.deepEqual(use, { object: 'list', total_usage: cost / 1e4 });
  const sub = await (await fetch(nodes[1].url + '/v1/dashboard/billing/subscription', { headers: auth('k-wallet') })).json();
  assert.equal(sub.hard_limit_usd, 2);
});

// Polls `usage` on a node until it counts n requests (settlements are
// sent without waiting).
async function usageOf(n, body, requests) {
  let u;
  for (let i = 0; i < 300; i++) {
    u = await adminCommand(nodes[n].sock, 'usage', body);
    if (u.status === 200 && u.json.total.requests >= requests) break;
    await sleep(10);
  }
  return u;
}

test('the ledger is shared: traffic spread over 3 nodes, usage on any node shows the sum, by model', async () => {
  const sent = [];
  for (let i = 0; i < 9; i++) {
    const model = i % 3 === 2 ? 'gpt-4o-mini' : 'gpt-4o';
    const r = await chat(nodes[i % 3], `hi ${'x'.repeat(i * 40)}`, { model }, auth('k-spread'));
    assert.equal(r.status, 200);
    sent.push({ model, usage: (await r.json()).usage, node: i % 3 });
  }
  const want = {};
  for (const s of sent) {
    const w = want[s.model] ??= { requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_micro_usd: 0, unpriced: 0 };
    w.requests++;
    w.prompt_tokens += s.usage.prompt_tokens;
    w.completion_tokens += s.usage.completion_tokens;
    if (s.model === 'gpt-4o') w.cost_micro_usd += Math.ceil(s.usage.prompt_tokens * 2.5 + s.usage.completion_tokens * 10);
    else w.unpriced++;
  }
  const views = [];
  for (const n of [0, 1, 2]) {
    const u = await usageOf(n, { consumer: 'spread', period: 'month' }, 9);
    assert.equal(u.status, 200, JSON.stringify(u.json));
    assert.equal(u.json.ledger, 'redis');
    const got = Object.fromEntries(u.json.models.map((m) => [m.model, {
      requests: m.requests, prompt_tokens: m.prompt_tokens, completion_tokens: m.completion_tokens,
      cost_micro_usd: m.cost_micro_usd, unpriced: m.unpriced }]));
    assert.deepEqual(got, want);
    assert.deepEqual(u.json.models.map((m) => m.model), ['gpt-4o', 'gpt-4o-mini']);
    assert.equal(u.json.total.requests, 9);
    assert.equal(u.json.total.prompt_tokens, sent.reduce((a, s) => a + s.usage.prompt_tokens, 0));
    assert.match(u.json.text, /gpt-4o-mini +3 .*UNPRICED/);
    views.push(u.json);
  }
  assert.deepEqual(views[0].total, views[2].total);
  // the other periods, and everyone's (no --consumer), count them too
  const day = await usageOf(1, { consumer: 'spread', period: 'day' }, 9);
  assert.deepEqual(day.json.total, views[0].total);
  const all = await usageOf(2, { period: 'total' }, 9);
  assert.ok(all.json.total.requests >= 9 && all.json.total.prompt_tokens >= views[0].total.prompt_tokens);
  // the aggregates are in Redis under the consumer's hash tag, with a TTL
  const key = redis.cli('--scan', '--pattern', 'mf:use:{c:spread}:month:*');
  assert.match(key, /^mf:use:\{c:spread\}:month:\d+$/);
  assert.ok(Number(redis.cli('TTL', key)) > 35 * 86400, redis.cli('TTL', key));
  assert.equal(redis.cli('TTL', redis.cli('--scan', '--pattern', 'mf:use:{c:spread}:total:*')), '-1');
  // a time zone other than UTC: this node's own ledger, and said so
  const local = await adminCommand(nodes[0].sock, 'usage', { consumer: 'spread', period: 'total', tz: '+02:00' });
  assert.equal(local.json.ledger, 'node');
  assert.equal(local.json.total.requests, sent.filter((s) => s.node === 0).length);
  assert.match(local.json.text, /this node's requests only/);
});

test('billing usage without a USD budget: the month\'s cost of all nodes', async () => {
  let cost = 0;
  for (let i = 0; i < 3; i++) {
    const r = await chat(nodes[i], 'hi there', {}, auth('k-plain'));
    assert.equal(r.status, 200);
    const u = (await r.json()).usage;
    cost += Math.ceil(u.prompt_tokens * 2.5 + u.completion_tokens * 10);
  }
  await usageOf(0, { consumer: 'plain', period: 'month' }, 3);
  for (const n of [0, 1, 2]) {
    const use = await (await fetch(nodes[n].url + '/v1/dashboard/billing/usage', { headers: auth('k-plain') })).json();
    assert.deepEqual(use, { object: 'list', total_usage: cost / 1e4 });
  }
  const sub = await (await fetch(nodes[2].url + '/dashboard/billing/subscription', { headers: auth('k-plain') })).json();
  assert.equal(sub.hard_limit_usd, 100000000);
});

test('a rate and a concurrency limit are shared by the nodes', async () => {
  const statuses = [];
  for (let i = 0; i < 4; i++) {
    const r = await chat(nodes[i % 3], 'hi', {}, auth('k-rated'));
    statuses.push(r.status);
    if (r.status === 429) {
      assert.equal((await r.json()).error.code, 'rate_limit_exceeded');
      assert.ok(Number(r.headers.get('retry-after-ms')) > 0);
    } else {
      await r.text();
    }
  }
  assert.deepEqual(statuses, [200, 200, 200, 429]);
  const before = await mock.count();
  const slow = chat(nodes[0], '[[mock:delay=1500]] hi', {}, auth('k-narrow'));
  // wait until the slow one holds the lease (it reached the upstream)
  for (let i = 0; i < 300 && (await mock.count()) === before; i++) await sleep(10);
  let second;
  for (let i = 0; i < 200; i++) {
    second = await chat(nodes[1], 'hi', {}, auth('k-narrow'));
    if (second.status !== 200) break;
    await second.text();
  }
  assert.equal(second.status, 429);
  assert.equal((await second.json()).error.code, 'concurrency_limit_exceeded');
  const first = await slow;
  assert.equal(first.status, 200);
  await first.text();
  // released in on_done: node c gets the lease once node a let it go
  let third;
  for (let i = 0; i < 200; i++) {
    third = await chat(nodes[2], 'hi', {}, auth('k-narrow'));
    if (third.status === 200) break;
    await third.text();
    await sleep(10);
  }
  assert.equal(third.status, 200);
  await third.text();
});

test('a consumer made on node 1 works on nodes 2 and 3; a key revoked on node 1 is refused on both within 1 s', async () => {
  const made = await adminCommand(nodes[0].sock, 'consumers.add', { args: ['team-r'], budget: '1usd/month' });
  assert.equal(made.status, 200, JSON.stringify(made.json));
  const key = made.json.key;
  // the key's keyed hash is in Redis, never the key
  const stored = redis.cli('HGETALL', `mf:ka:key:{${made.json.key_id}}`);
  assert.match(stored, /team-r/);
  assert.ok(!stored.includes(key.split('-')[2]));
  for (const gw of nodes.slice(1)) {
    // a worker whose connection went down with Redis in the test before
    // tries again after its backoff (at most 5 s): until then it answers
    // 503 for a key it never read
    let r, body;
    for (const t0 = Date.now(); ;) {
      r = await chat(gw, 'hi', {}, auth(key));
      body = await r.text();
      if (r.status !== 503 || Date.now() - t0 > 6000) break;
      assert.equal(JSON.parse(body).error.code, 'key_store_unavailable');
      await sleep(100);
    }
    assert.equal(r.status, 200, body);
  }
  const listed = await adminCommand(nodes[2].sock, 'consumers.list', {});
  assert.ok(listed.json.consumers.some((c) => c.name === 'team-r' && c.source === 'runtime'));
  const revoked = await adminCommand(nodes[0].sock, 'keys.revoke', { args: [made.json.key_id] });
  assert.equal(revoked.status, 200);
  const t0 = Date.now();
  const refusedAt = [];
  for (const gw of nodes.slice(1)) {
    for (;;) {
      const r = await chat(gw, 'hi', {}, auth(key));
      const body = await r.text();
      if (r.status === 401) {
        assert.equal(JSON.parse(body).error.code, 'revoked_api_key');
        refusedAt.push(Date.now() - t0);
        break;
      }
      assert.equal(r.status, 200, body);
      assert.ok(Date.now() - t0 < 1000, 'still accepted 1 s after the revocation');
    }
  }
  assert.equal(refusedAt.length, 2);
  // a config consumer disabled on node 3 is refused on node 1
  assert.equal((await adminCommand(nodes[2].sock, 'consumers.disable', { args: ['free'] })).status, 200);
  const t1 = Date.now();
  for (;;) {
    const r = await chat(nodes[0], 'hi', {}, auth('k-free'));
    const body = await r.text();
    if (r.status === 401) {
      assert.equal(JSON.parse(body).error.code, 'consumer_disabled');
      break;
    }
    assert.ok(Date.now() - t1 < 1000, 'still accepted 1 s after disable');
  }
  assert.equal((await adminCommand(nodes[1].sock, 'consumers.enable', { args: ['free'] })).status, 200);
  for (const gw of nodes) {
    const t2 = Date.now();
    for (;;) {
      const r = await chat(gw, 'hi', {}, auth('k-free'));
      await r.text();
      if (r.status === 200) break;
      assert.ok(Date.now() - t2 < 1000, 'still refused 1 s after enable');
    }
  }
});

test('Redis killed under load: each kind follows on_store_error, no 500, none past the store timeout; Redis back: counters resume', async () => {
  const timed = async (gw, key, content = 'hi') => {
    const t0 = Date.now();
    const r = await chat(gw, content, {}, auth(key));
    const body = await r.text();
    return { status: r.status, ms: Date.now() - t0, body, headers: r.headers };
  };
  // load on every node while Redis goes away
  let stop = false;
  const seen = [];
  const load = nodes.map(async (gw) => {
    while (!stop) {
      for (const k of ['k-budgeted', 'k-free', 'k-narrow']) seen.push(await timed(gw, k));
    }
  });
  await sleep(300);
  await redis.stop();
  await sleep(600);
  // budgets: closed -> 503 with Retry-After
  const b = await timed(nodes[0], 'k-budgeted');
  assert.equal(b.status, 503, b.body);
  assert.equal(JSON.parse(b.body).error.code, 'limits_store_unavailable');
  assert.equal(b.headers.get('retry-after'), '1');
  // rates: local -> each node counts on its own (3 a minute per node)
  const rated = [];
  for (let i = 0; i < 4; i++) rated.push((await timed(nodes[1], 'k-rated')).status);
  assert.deepEqual(rated, [200, 200, 200, 429]);
  // concurrency: open -> two at once pass
  const two = await Promise.all([timed(nodes[2], 'k-narrow', '[[mock:delay=300]] a'),
    timed(nodes[2], 'k-narrow', '[[mock:delay=300]] b')]);
  assert.deepEqual(two.map((x) => x.status), [200, 200]);
  stop = true;
  await Promise.all(load);
  assert.ok(seen.length > 10);
  for (const s of seen) {
    assert.notEqual(s.status, 500, s.body);
    assert.ok([200, 429, 503].includes(s.status), `${s.status} ${s.body}`);
    // the mock answers at once: what a request waits on is the store
    assert.ok(s.ms < STORE_TIMEOUT_MS + 1500, `a request took ${s.ms} ms`);
  }
  // Redis back: the nodes reconnect and count in Redis again
  await redis.start();
  let back;
  for (let i = 0; i < 200; i++) {
    back = await timed(nodes[0], 'k-budgeted');
    if (back.status === 200) break;
    await sleep(50);
  }
  assert.equal(back.status, 200, back.body);
  let keys = '';
  for (let i = 0; i < 100 && !/consumer:budgeted:b:tokens/.test(keys); i++) {
    await sleep(20);
    keys = redis.cli('--scan', '--pattern', 'mf:lim:*');
  }
  assert.match(keys, /mf:lim:\{c:budgeted\}:consumer:budgeted:b:tokens:\d+/);
  const used = Number(redis.cli('HGET', keys.split('\n').find((k) => /budgeted:b:tokens:\d+$/.test(k)), 'used'));
  assert.ok(used > 0);
});

test('Redis stuck (not answering): a request waits at most the store timeout, then each kind follows its setting', async () => {
  redis.proc.kill('SIGSTOP');
  try {
    for (const gw of nodes) {
      for (const [key, want] of [['k-budgeted', 503], ['k-free', 200]]) {
        const t0 = Date.now();
        const r = await chat(gw, 'hi', {}, auth(key));
        const body = await r.text();
        const ms = Date.now() - t0;
        assert.equal(r.status, want, body);
        assert.ok(ms < STORE_TIMEOUT_MS + 1500, `${key} took ${ms} ms`);
      }
    }
  } finally {
    redis.proc.kill('SIGCONT');
  }
  let back;
  for (let i = 0; i < 200; i++) {
    back = await chat(nodes[1], 'hi', {}, auth('k-budgeted'));
    await back.text();
    if (back.status === 200) break;
    await sleep(50);
  }
  assert.equal(back.status, 200);
});
