// The dashboard's fleet view (`fleet: redis`): two gateway nodes share a
// real redis-server; known traffic goes to each; the summary API of
// either node shows the sum (requests, tokens by kind, spend, errors by
// type, percentiles from the summed histograms, the node count); a
// restart of a node keeps the fleet's roll-ups (they are in Redis); with
// Redis stopped the API still answers, with this node's own data and
// the fleet flagged unavailable. Then the same on a Redis Cluster (the
// keys hash-tagged into one slot).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, startRedis, startRedisCluster, writeConfig, config, chat, sseEvents, sleep, spawnSync, ROOT, BIN, path } from './harness.mjs';

// Debian's chromium, driven by playwright-core from tests/browser
const { chromium } = await import(path.join(ROOT, 'tests/browser/node_modules/playwright-core/index.mjs'));

let mock, redis, text, browser;
const nodes = [];

const conf = (redisLine, dash = '{ fleet: redis, flush_s: 1, fleet_refresh_s: 1 }') => config(mock.url, {
  stages: `
  - name: consumer
    lua: ${ROOT}/tests/integration/fixtures/consumer.lua
  - name: dashboard
    plugin: dashboard
    config: ${dash}`,
  extraProviders: `
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]`,
}) + `prices:
  gpt-4o: { input: 2.5, output: 10 }
  "claude-*": { input: 3, output: 15, cache_read: 0.3 }
status:
  listen: 127.0.0.1:0
reload: { watch: false }
${redisLine}
`;

async function startNode(text, dir) {
  const gw = await startGateway(text, { dir });
  gw.status = `http://127.0.0.1:${gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
  gw.dir = dir;
  return gw;
}

async function summary(gw, q = '') {
  const res = await fetch(`${gw.status}/dashboard/api/summary?range=1h${q}`);
  assert.equal(res.status, 200);
  return res.json();
}

// The summary once cond holds (the nodes add every second, read every
// second); the last one seen in the failure otherwise.
async function summaryWhen(gw, cond, q = '') {
  let s;
  for (let i = 0; i < 600; i++) {
    s = await summary(gw, q);
    if (cond(s)) return s;
    await sleep(50);
  }
  assert.fail(`summary never met the condition: ${JSON.stringify(s).slice(0, 600)}`);
}

const logs = [];
async function send(gw, id, content, extra = {}, consumer) {
  const h = { 'x-request-id': id };
  if (consumer) h['x-consumer'] = consumer;
  const res = await chat(gw, content, extra, h);
  if (extra.stream) await sseEvents(res); else await res.arrayBuffer();
  logs.push(await gw.waitLog((l) => l.request_id === id));
  return res.status;
}

// What the access logs say of the requests sent so far.
function expected() {
  const sum = (f) => logs.reduce((a, l) => a + f(l), 0);
  return {
    requests: logs.length,
    errors: logs.filter((l) => l.status >= 400).length,
    tokens: sum((l) => Math.max(l.prompt_tokens ?? 0, 0) + Math.max(l.completion_tokens ?? 0, 0)),
    output: sum((l) => Math.max(l.completion_tokens ?? 0, 0)),
    spendMicro: sum((l) => Math.round((l.cost_usd ?? 0) * 1e6)),
  };
}

before(async () => {
  mock = await startMock();
  redis = await startRedis();
  text = conf(`redis: { host: 127.0.0.1, port: ${redis.port}, timeout: 300ms }`);
  for (let i = 0; i < 2; i++) nodes.push(await startNode(text, mkdtempSync(path.join(tmpdir(), 'mf-fleet-'))));
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
});

// What the page on gw shows once it has refreshed: the fleet badge and
// the requests card.
async function page(gw) {
  const p = await browser.newPage();
  await p.goto(`${gw.status}/dashboard`);
  await p.waitForFunction(() => Number(document.body.dataset.refreshes) >= 1);
  const out = { fleet: (await p.textContent('#fleet')).trim(), requests: (await p.textContent('#kpi-requests .value')).trim() };
  await p.close();
  return out;
}

after(async () => {
  await browser?.close();
  for (const gw of nodes) await gw.stop();
  await redis?.stop();
  await mock?.stop();
});

test('either node shows the sum of both', async () => {
  const [a, b] = nodes;
  for (let i = 0; i < 3; i++) assert.equal(await send(a, `fa-${i}`, `hello ${i}`, {}, 'team-a'), 200);
  assert.equal(await send(a, 'fa-s', 'a stream', { stream: true }, 'team-a'), 200);
  for (let i = 0; i < 2; i++) assert.equal(await send(b, `fb-${i}`, `claude ${i}`, { model: 'claude-3-5-sonnet' }, 'team-b'), 200);
  assert.equal(await send(b, 'fb-e', 'x [[mock:status=500]]', {}, 'team-b'), 502);
  assert.equal(await send(b, 'fb-g', 'hello from b', {}, 'team-a'), 200);
  const want = expected();

  const fa = await summaryWhen(a, (s) => s.view === 'fleet' && s.totals.requests === want.requests && s.fleet.nodes === 2);
  const fb = await summaryWhen(b, (s) => s.view === 'fleet' && s.totals.requests === want.requests && s.fleet.nodes === 2);
  assert.equal(fa.fleet.available, true);
  assert.equal(fa.fleet.error, null);
  // both nodes see the same fleet
  assert.deepEqual(fa.totals, fb.totals);
  assert.deepEqual(fa.models, fb.models);
  assert.deepEqual(fa.consumers, fb.consumers);
  assert.deepEqual(fa.errors, fb.errors);
  // and it is what was sent
  const t = fa.totals;
  assert.equal(t.errors, want.errors);
  assert.equal(t.tokens, want.tokens);
  assert.equal(t.output_tokens, want.output);
  assert.equal(t.streams, 1);
  assert.equal(Math.round(t.spend_usd * 1e6), want.spendMicro);
  assert.deepEqual(fa.errors, [{ type: 'upstream', count: 1 }]);
  const row = (list, k, name) => list.find((r) => r[k] === name);
  // the failed request too: gpt-4o is a name the config lists, so its
  // errors are counted under it
  assert.equal(row(fa.models, 'model', 'gpt-4o').requests, 6);
  assert.equal(row(fa.models, 'model', 'gpt-4o').errors, 1);
  assert.equal(row(fa.models, 'model', 'claude-3-5-sonnet').requests, 2);
  assert.equal(row(fa.consumers, 'consumer', 'team-a').requests, 5);
  assert.equal(row(fa.consumers, 'consumer', 'team-b').requests, 3);
  assert.deepEqual(fa.names.models.sort(), ['claude-3-5-sonnet', 'gpt-4o']);

  // each node's own (?view=node) sums to the fleet's
  const na = await summary(a, '&view=node');
  const nb = await summary(b, '&view=node');
  assert.equal(na.view, 'node');
  assert.equal(na.totals.requests, 4);
  assert.equal(nb.totals.requests, 4);
  for (const k of ['requests', 'errors', 'streams', 'input_tokens', 'output_tokens', 'cache_read_tokens',
    'cache_write_tokens', 'reasoning_tokens', 'tokens', 'unpriced', 'estimated']) {
    assert.equal(t[k], na.totals[k] + nb.totals[k], k);
  }
  assert.equal(Math.round(t.spend_usd * 1e6), Math.round(na.totals.spend_usd * 1e6) + Math.round(nb.totals.spend_usd * 1e6));
  // percentiles of the summed histograms: between the nodes' own
  for (const k of ['p50_ms', 'p95_ms', 'p99_ms', 'ttft_p50_ms']) {
    assert.ok(t[k] >= 0, k);
    assert.ok(t[k] >= Math.min(na.totals[k], nb.totals[k]) - 0.1, `${k} ${t[k]} ${na.totals[k]} ${nb.totals[k]}`);
    assert.ok(t[k] <= Math.max(na.totals[k], nb.totals[k]) + 0.1, `${k} ${t[k]} ${na.totals[k]} ${nb.totals[k]}`);
  }
  assert.ok(t.p50_ms <= t.p95_ms && t.p95_ms <= t.p99_ms);
  // the filters apply to the fleet's view
  assert.equal((await summary(b, '&consumer=team-a')).totals.requests, 5);
  assert.equal((await summary(b, '&consumer=team-b')).totals.errors, 1);
  // the hourly roll-ups sum too
  const month = await (await fetch(`${a.status}/dashboard/api/summary?range=30d`)).json();
  assert.equal(month.view, 'fleet');
  assert.deepEqual(month.totals.requests, want.requests);
  assert.equal(Math.round(month.totals.spend_usd * 1e6), want.spendMicro);
  // the live tail stays the node's own
  const tail = (await (await fetch(`${a.status}/dashboard/api/tail`)).json()).requests.map((r) => r.id);
  assert.deepEqual(tail.sort(), ['fa-0', 'fa-1', 'fa-2', 'fa-s']);
  // the page says whose traffic it shows
  assert.deepEqual(await page(b), { fleet: 'fleet: 2 nodes', requests: String(want.requests) });
  // the keys share one hash tag
  assert.match(redis.cli('KEYS', 'mf:dash:*'), /mf:dash:\{\/dashboard\}:m:\d+/);
});

test('a restarted node reads the fleet back from Redis', async () => {
  const before = await summary(nodes[0]);
  await nodes[1].stop();
  nodes[1] = await startNode(text, nodes[1].dir);
  const s = await summaryWhen(nodes[1], (x) => x.view === 'fleet');
  assert.deepEqual(s.totals, before.totals);
  assert.deepEqual(s.models, before.models);
  assert.deepEqual(s.consumers, before.consumers);
  // and counting goes on, on the other node too
  assert.equal(await send(nodes[1], 'fb-after', 'after the restart', {}, 'team-b'), 200);
  await summaryWhen(nodes[0], (x) => x.totals.requests === before.totals.requests + 1);
});

test('what a stopping node had not yet written is added at its next start', async () => {
  const total = (await summary(nodes[0])).totals.requests;
  // a node that writes every 30 s: its stop comes before its write (a
  // minute and an hour cell)
  const slow = text.replace('flush_s: 1,', 'flush_s: 30,');
  assert.notEqual(slow, text);
  await nodes[1].stop();
  nodes[1] = await startNode(slow, nodes[1].dir);
  assert.equal(await send(nodes[1], 'fb-late', 'just before the stop', {}, 'team-b'), 200);
  const b = nodes[1];
  await b.stop();
  assert.match(b.stderr, /dashboard: 2 cells not yet added to Redis kept in .*dashboard\.db for the next start/);
  assert.equal((await summary(nodes[0])).totals.requests, total);
  nodes[1] = await startNode(text, nodes[1].dir);
  assert.match(nodes[1].stderr, /dashboard: 2 cells kept from the last run to be added to Redis/);
  await summaryWhen(nodes[0], (x) => x.totals.requests === total + 1);
  // added once: not again at the start after
  await nodes[1].stop();
  nodes[1] = await startNode(text, nodes[1].dir);
  assert.doesNotMatch(nodes[1].stderr, /cells kept from the last run/);
  const s = await summaryWhen(nodes[1], (x) => x.view === 'fleet');
  assert.equal(s.totals.requests, total + 1);
});

test('with Redis stopped the API answers with the node\'s own data and says so', async () => {
  const a = nodes[0];
  const own = await summary(a, '&view=node');
  await redis.stop();
  const s = await summaryWhen(a, (x) => x.fleet.available === false);
  assert.equal(s.view, 'node');
  assert.equal(typeof s.fleet.error, 'string');
  assert.deepEqual(s.totals, own.totals);
  assert.deepEqual(await page(a), { fleet: 'fleet view unavailable · this node only', requests: String(own.totals.requests) });
  // requests are served and counted meanwhile
  assert.equal(await send(a, 'fa-down', 'redis is down', {}, 'team-a'), 200);
  await summaryWhen(a, (x) => x.totals.requests === own.totals.requests + 1);
  // Redis back (empty): the node's deltas since are added again
  await redis.start();
  await summaryWhen(a, (x) => x.view === 'fleet' && x.fleet.available === true);
});

test('fleet settings the stage cannot honour refuse the config', () => {
  const check = (dash, extra = '') => {
    const file = writeConfig(config(mock.url, { stages: `  - { name: dashboard, plugin: dashboard, config: ${dash} }` }) +
      `status: { listen: "127.0.0.1:0" }\n${extra}`);
    return spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  };
  const redisLine = `redis: { host: 127.0.0.1, port: ${redis.port} }\n`;
  let r = check('{ fleet: redis }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /fleet: redis needs `redis:` in the config/);
  r = check('{ fleet: memcached }', redisLine);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /fleet is redis .* or none/);
  r = check('{ fleet: redis, flush_s: 60 }', redisLine);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /with fleet: redis flush_s is at most 30/);
  r = check('{ fleet: redis, fleet_refresh_s: 0 }', redisLine);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /fleet_refresh_s is a whole number of seconds from 1 to 300/);
  r = check('{ fleet: redis, db: none }', redisLine);
  assert.equal(r.status, 0, r.stderr);
});

test('on a Redis Cluster the keys share one slot and the sums hold', async (t) => {
  const cluster = await startRedisCluster({ masters: 3 });
  t.after(() => cluster.stop());
  // one model named per node and in the fleet view: the rest is other
  const text = conf(`redis: { cluster: [${cluster.seeds.map((x) => `"${x}"`).join(', ')}], timeout: 2s }`,
    '{ fleet: redis, flush_s: 1, fleet_refresh_s: 1, max_models: 1 }');
  const pair = [];
  t.after(async () => { for (const gw of pair) await gw.stop(); });
  for (let i = 0; i < 2; i++) pair.push(await startNode(text, mkdtempSync(path.join(tmpdir(), 'mf-fleetc-'))));
  logs.length = 0;
  assert.equal(await send(pair[0], 'fc-0', 'one', {}, 'team-a'), 200);
  assert.equal(await send(pair[1], 'fc-1', 'two', { model: 'claude-3-5-sonnet' }, 'team-b'), 200);
  assert.equal(await send(pair[1], 'fc-2', 'three', { stream: true }, 'team-b'), 200);
  const want = expected();
  const s = await summaryWhen(pair[0], (x) => x.view === 'fleet' && x.totals.requests === 3);
  assert.equal(s.totals.tokens, want.tokens);
  assert.equal(Math.round(s.totals.spend_usd * 1e6), want.spendMicro);
  // each node named its own model; the view names one, the other is other
  assert.equal(s.names.models.length, 1);
  assert.deepEqual(s.models.map((m) => m.model).sort(), [s.names.models[0], 'other'].sort());
  assert.equal(s.models.reduce((a, m) => a + m.requests, 0), 3);
  const slot = cluster.slotOf('mf:dash:{/dashboard}:seq');
  const owner = cluster.owner(slot);
  assert.ok(Number(cluster.cli(owner, 'CLUSTER', 'COUNTKEYSINSLOT', String(slot))) >= 6);
});
