// The dashboard: after known traffic (two consumers, three models, a
// stream, an upstream error, an unpriced model), headless Chromium opens
// GET /dashboard on the status listener and the panels show the numbers
// that traffic implies (requests, error rate, tokens, spend, top models
// and consumers, errors by type, the live tail, key health); the model
// filter narrows them; a screenshot is saved under the build directory;
// the roll-ups survive a reload that loads the stage again, and a
// restart (read back from the SQLite file the stage writes).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, writeConfig, adminCall, config, chat, sseEvents, ROOT, BUILD, path } from './harness.mjs';

// Debian's chromium, driven by playwright-core from tests/browser
// (scripts/test.sh installs it; no browser is downloaded)
const { chromium } = await import(path.join(ROOT, 'tests/browser/node_modules/playwright-core/index.mjs'));

let mock, gw, status, browser, dir, text;
const sock = () => path.join(dir, 'admin.sock');

const conf = (dash) => config(mock.url, {
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
admin: { socket: ${sock()} }
reload: { watch: false }
`;

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-dash-'));
  text = conf('{ max_models: 20 }');
  gw = await startGateway(text, { dir });
  status = `http://127.0.0.1:${gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  await gw.stop();
  await mock.stop();
});

const sent = [];
async function send(id, content, extra, consumer) {
  const h = { 'x-request-id': id };
  if (consumer) h['x-consumer'] = consumer;
  const res = await chat(gw, content, extra, h);
  if (extra.stream) await sseEvents(res); else await res.arrayBuffer();
  sent.push(id);
  return res.status;
}

async function summary(q = '') {
  const res = await fetch(`${status}/dashboard/api/summary?range=1h${q}`);
  assert.equal(res.status, 200);
  return res.json();
}

test('after known traffic the panels show what it implies', async () => {
  for (let i = 0; i < 4; i++) assert.equal(await send(`d-a${i}`, `hello ${i}`, {}, 'team-a'), 200);
  for (let i = 0; i < 2; i++) assert.equal(await send(`d-s${i}`, `stream ${i}`, { stream: true }, 'team-b'), 200);
  for (let i = 0; i < 2; i++) assert.equal(await send(`d-c${i}`, `claude ${i}`, { model: 'claude-3-5-sonnet' }, 'team-b'), 200);
  assert.equal(await send('d-e0', 'x [[mock:status=500]]', {}, 'team-a'), 502);
  assert.equal(await send('d-u0', 'free', { model: 'gpt-free' }), 200);

  // what the access log says of the same requests
  const lines = [];
  for (const id of sent) lines.push(await gw.waitLog((l) => l.request_id === id));
  const tokens = lines.reduce((a, l) => a + Math.max(l.prompt_tokens ?? 0, 0) + Math.max(l.completion_tokens ?? 0, 0), 0);
  const spendMicro = lines.reduce((a, l) => a + Math.round((l.cost_usd ?? 0) * 1e6), 0);
  const spendOf = (m) => lines.filter((l) => l.model === m).reduce((a, l) => a + (l.cost_usd ?? 0), 0);
  const s = await summary();
  assert.equal(s.totals.requests, 10);

  const page = await browser.newPage({ viewport: { width: 1440, height: 1800 } });
  const errorsSeen = [];
  page.on('pageerror', (e) => errorsSeen.push(e.message));
  page.on('requestfailed', (r) => errorsSeen.push('failed ' + r.url()));
  const res = await page.goto(`${status}/dashboard`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-security-policy'], /default-src 'none'/);
  await page.waitForFunction(() => Number(document.body.dataset.refreshes) >= 1);

  const kpi = async (id) => (await page.textContent(`#${id} .value`)).trim();
  const kpiValue = async (id) => Number(await page.getAttribute(`#${id}`, 'data-value'));
  assert.equal(await kpi('kpi-requests'), '10');
  assert.equal(await kpi('kpi-errors'), '10.0%');
  assert.match(await page.textContent('#kpi-errors .sub'), /^1 errors$/);
  assert.equal(await kpiValue('kpi-tokens'), tokens);
  assert.equal(Math.round(await kpiValue('kpi-spend') * 1e6), spendMicro);
  assert.match(await page.textContent('#kpi-spend .sub'), /1 unpriced requests/);
  assert.ok(await kpiValue('kpi-latency') > 0);
  assert.ok(await kpiValue('kpi-tps') > 0);

  // top models, by spend: every model with its requests
  const cell = async (table, name, k) => (await page.textContent(`#${table} tr[data-name="${name}"] td[data-k="${k}"]`)).trim();
  assert.equal(await cell('models', 'gpt-4o', 'requests'), '7');
  assert.equal(await cell('models', 'claude-3-5-sonnet', 'requests'), '2');
  assert.equal(await cell('models', 'gpt-free', 'spend'), 'unpriced');
  assert.equal(await cell('models', 'gpt-4o', 'errors'), '1');
  const order = await page.$$eval('#models tbody tr', (trs) => trs.map((t) => t.dataset.name));
  const want = ['gpt-4o', 'claude-3-5-sonnet'].sort((a, b) => spendOf(b) - spendOf(a));
  assert.deepEqual(order.slice(0, 2), want);
  assert.equal(await cell('consumers', 'team-a', 'requests'), '5');
  assert.equal(await cell('consumers', 'team-b', 'requests'), '4');
  assert.equal(await cell('consumers', 'anonymous', 'requests'), '1');
  // percentiles per model, from the histograms
  assert.notEqual(await cell('latency', 'gpt-4o', 'p50_ms'), '—');
  assert.notEqual(await cell('latency', 'gpt-4o', 'ttft_p50_ms'), '—');
  // time to first token is a stream's: claude was asked without streams
  assert.notEqual(await cell('latency', 'claude-3-5-sonnet', 'p50_ms'), '—');
  assert.equal(await cell('latency', 'claude-3-5-sonnet', 'ttft_p50_ms'), '—');
  // errors by type
  assert.equal((await page.textContent('#errors .hbar[data-type="upstream"] .n')).trim(), '1');
  // the live tail, latest first, with the client address cut
  const tail = await page.$$eval('#tail tbody tr', (trs) => trs.map((t) => t.dataset.id));
  assert.deepEqual(tail.slice(0, sent.length), [...sent].reverse());
  assert.match(await page.textContent('#tail tbody tr:first-child'), /127\.0\.0\.x/);
  // the upstreams' keys, masked
  assert.match(await page.textContent('#keys'), /openai/);
  assert.ok(!(await page.content()).includes('sk-upstream-secret-0123456789'));
  // the charts drew the requests
  assert.ok(await page.$$eval('#chart-requests rect.bar', (r) => r.length) >= 1);
  assert.ok(await page.$$eval('#chart-tokens path', (r) => r.length) >= 2);

  const shots = path.join(BUILD, 'test-artifacts');
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, 'dashboard.png'), fullPage: true });
  assert.ok(statSync(path.join(shots, 'dashboard.png')).size > 10000);

  // the model filter narrows every panel
  const before = Number(await page.getAttribute('body', 'data-refreshes'));
  await page.selectOption('#f-model', 'claude-3-5-sonnet');
  await page.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, before);
  assert.equal(await kpi('kpi-requests'), '2');
  assert.equal(await kpi('kpi-errors'), '0.0%');
  assert.equal(Math.round(await kpiValue('kpi-spend') * 1e6), Math.round(spendOf('claude-3-5-sonnet') * 1e6));
  assert.deepEqual(await page.$$eval('#consumers tbody tr', (trs) => trs.map((t) => t.dataset.name)), ['team-b']);
  const tail2 = await page.$$eval('#tail tbody tr', (trs) => trs.map((t) => t.dataset.id));
  assert.deepEqual(tail2, ['d-c1', 'd-c0']);
  await page.screenshot({ path: path.join(shots, 'dashboard-filtered.png'), fullPage: true });
  assert.deepEqual(errorsSeen, []);
  await page.close();

  // the consumer filter, and both together, in the API
  assert.equal((await summary('&consumer=team-a')).totals.requests, 5);
  assert.equal((await summary('&consumer=team-a&model=gpt-4o')).totals.errors, 1);
  assert.equal((await summary('&model=no-such')).totals.requests, 0);
  // longer ranges read the hourly roll-ups
  assert.equal((await summary().then(() => fetch(`${status}/dashboard/api/summary?range=30d`)).then((r) => r.json())).totals.requests, 10);
});

test('the roll-ups survive a reload that loads the stage again', async () => {
  writeConfig(conf('{ max_models: 30 }'), dir);
  const rel = await adminCall(sock(), 'POST', '/reload');
  assert.equal(rel.status, 200, JSON.stringify(rel.json));
  const s = await summary();
  assert.equal(s.totals.requests, 10);
  assert.equal(await send('d-after', 'after the reload', {}, 'team-a'), 200);
  for (;;) {
    const t = await summary();
    if (t.totals.requests === 11) break;
    await new Promise((r) => setTimeout(r, 20));
  }
});

test('the roll-ups survive a restart (written to the embedded store)', async () => {
  const s = await summary();
  const month = await (await fetch(`${status}/dashboard/api/summary?range=30d`)).json();
  assert.equal(s.totals.requests, 11);
  // a stop writes what changed since the last flush
  await gw.stop();
  assert.ok(statSync(path.join(dir, 'dashboard.db')).size > 0);
  gw = await startGateway(text, { dir });
  status = `http://127.0.0.1:${gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
  assert.match(gw.stderr, /dashboard: \d+ roll-up rows read from .*dashboard\.db/);
  const s2 = await summary();
  assert.deepEqual(s2.totals, s.totals);
  assert.deepEqual(s2.models, s.models);
  assert.deepEqual(s2.consumers, s.consumers);
  assert.deepEqual(s2.errors, s.errors);
  assert.deepEqual(s2.series.filter((p) => p.requests > 0), s.series.filter((p) => p.requests > 0));
  const month2 = await (await fetch(`${status}/dashboard/api/summary?range=30d`)).json();
  assert.deepEqual(month2.totals, month.totals);
  // and counting goes on from there
  assert.equal(await send('d-restarted', 'after the restart', {}, 'team-b'), 200);
  for (;;) {
    const t = await summary('&consumer=team-b');
    if (t.totals.requests === s.consumers.find((c) => c.consumer === 'team-b').requests + 1) break;
    await new Promise((r) => setTimeout(r, 20));
  }
});

test('a model the config names keeps its name when it fails from its first request; a glob\'s failing name is other', async () => {
  const g = await startGateway(config(mock.url, {
    stages: `
  - name: dashboard
    plugin: dashboard
    config: { db: none, max_models: 5 }`,
    extraProviders: `
  - name: house
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-house-0123456789abcdef"]
    models: ["team-*"]
    model_map: { house-model: gpt-4o-mini }`,
  }) + 'status:\n  listen: 127.0.0.1:0\n');
  try {
    const st = `http://127.0.0.1:${g.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
    for (const m of ['house-model', 'team-x']) {
      const r = await chat(g, 'x [[mock:status=500]]', { model: m });
      assert.equal(r.status, 502, m);
      await r.arrayBuffer();
    }
    let s;
    for (;;) {
      s = await (await fetch(`${st}/dashboard/api/summary?range=1h`)).json();
      if (s.totals.requests === 2) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const names = s.models.map((m) => m.model);
    assert.ok(names.includes('house-model'), JSON.stringify(s.models));
    assert.ok(!names.includes('team-x'), JSON.stringify(s.models));
    assert.equal(s.models.find((m) => m.model === 'house-model').errors, 1);
  } finally {
    await g.stop();
  }
});
