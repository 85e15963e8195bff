// A real Prometheus (Debian's package) on a free loopback port scrapes
// the gateway's status listener under mixed traffic (streams, errors, a
// cut stream, a fallback, an unpriced model, two consumers and many
// more): its HTTP API gives back the counts that were sent, and every
// PromQL query of the Grafana dashboard in configs/ returns data.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, sseEvents, closedPort, ROOT, path } from './harness.mjs';

let mock, gw, prom, promUrl, dir, recv;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  mock = await startMock();
  // an OTLP receiver, so the dashboard's trace panel has data
  recv = await new Promise((resolve) => {
    const s = http.createServer((req, res) => { req.resume(); req.on('end', () => res.writeHead(200).end('{}')); });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
  const text = config(mock.url, {
    stages: `
  - name: consumer
    lua: ${ROOT}/tests/integration/fixtures/consumer.lua
  - name: prometheus
    plugin: prometheus
    config: { max_models: 20, max_consumers: 200 }
  - name: otel
    plugin: otel
    config: { endpoint: "http://127.0.0.1:${recv.address().port}/v1/traces", flush_ms: 100 }`,
    extraProviders: `
  - name: back
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-back-0123456789abcdef"]
    models: ["back-*"]
routes:
  - model: fb-route
    targets:
      - { provider: back, model: "gpt-4o[[mock:status=500]]" }
      - { provider: openai, model: gpt-4o }`,
  }) + `prices:
  gpt-4o: { input: 2.5, output: 10 }
status:
  listen: 127.0.0.1:0
  max_series: 60
`;
  gw = await startGateway(text);
  const statusPort = gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1];
  dir = mkdtempSync(path.join(tmpdir(), 'mf-prom-'));
  writeFileSync(path.join(dir, 'prometheus.yml'), `
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: manifold
    scrape_interval: 1s
    static_configs: [{ targets: ["127.0.0.1:${statusPort}"] }]
`);
  const port = await closedPort();
  promUrl = `http://127.0.0.1:${port}`;
  prom = spawn('prometheus', [`--config.file=${path.join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  prom.stderr.on('data', (d) => { err += d; });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(promUrl + '/-/ready')).status === 200) break;
    } catch { /* not listening yet */ }
    if (prom.exitCode !== null || i > 600) throw new Error('prometheus did not start:\n' + err);
    await sleep(50);
  }
});

after(async () => {
  prom?.kill('SIGTERM');
  if (prom && prom.exitCode === null) await new Promise((r) => prom.on('exit', r));
  await gw.stop();
  await mock.stop();
  recv.close();
  rmSync(dir, { recursive: true, force: true });
});

async function query(q) {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
  const j = await res.json();
  assert.equal(j.status, 'success', `${q}: ${JSON.stringify(j)}`);
  return j.data.result;
}

async function scalar(q) {
  const r = await query(q);
  return r.length ? Number(r[0].value[1]) : null;
}

// Waits until Prometheus's answer to q passes ok.
async function until(q, ok, what = q) {
  let last;
  for (let i = 0; i < 600; i++) {
    last = await query(q);
    if (ok(last)) return last;
    await sleep(50);
  }
  assert.fail(`${what}: never matched, last ${JSON.stringify(last)}`);
}

test('Prometheus scrapes the counts that were sent', async () => {
  await until('up{job="manifold"}', (r) => r.length === 1 && r[0].value[1] === '1');
  const ids = [];
  const send = async (id, content, extra = {}, consumer) => {
    const h = { 'x-request-id': id };
    if (consumer) h['x-consumer'] = consumer;
    const res = await chat(gw, content, extra, h);
    if (extra.stream) await sseEvents(res); else await res.arrayBuffer();
    ids.push(id);
    return res.status;
  };
  // two waves with a scrape between them, so every rate has two samples
  let n = 0;
  for (const wave of [1, 2]) {
    for (let i = 0; i < 3; i++) assert.equal(await send(`p${wave}-a${i}`, 'plain', {}, 'team-a'), 200);
    for (let i = 0; i < 2; i++) assert.equal(await send(`p${wave}-s${i}`, 'stream', { stream: true }, 'team-b'), 200);
    assert.equal(await send(`p${wave}-e`, 'x [[mock:status=500]]', {}, 'team-b'), 502);
    assert.equal(await send(`p${wave}-fb`, 'fall back', { model: 'fb-route' }, 'team-a'), 200);
    assert.equal(await send(`p${wave}-u`, 'free', { model: 'gpt-free' }), 200);
    n += 8;
    if (wave === 1) {
      assert.equal(await send('p1-cut', 'cut me [[mock:chunks=10 cut=3]]', { stream: true }, 'team-b'), 200);
      assert.equal(await send('p1-404', 'x', { model: 'no-such-model' }, 'team-a'), 404);
      n += 2;
      // many consumers: past max_series, series are dropped and counted
      for (let i = 0; i < 70; i++) assert.equal(await send(`p1-m${i}`, 'many', {}, `c-${i}`), 200);
      n += 70;
    }
    await until('sum(manifold_request_duration_seconds_count)', (r) => r.length === 1 && Number(r[0].value[1]) === n, 'scrape');
    if (wave === 1) await sleep(1100); // one more scrape interval
  }
  // requests_total holds 60 label sets at most; the requests of consumers
  // past that are in the duration histogram (fewer labels) instead
  await until('sum(manifold_request_duration_seconds_count)', (r) => r.length && Number(r[0].value[1]) === n);
  const lines = [];
  for (const id of ids) lines.push(await gw.waitLog((l) => l.request_id === id));
  // the tokens of the named consumers (the many others hit the series cap)
  const tokens = lines.filter((l) => !/^c-/.test(l.consumer ?? ''))
    .reduce((a, l) => a + Math.max(l.prompt_tokens ?? 0, 0) + Math.max(l.completion_tokens ?? 0, 0), 0);
  await until('sum(manifold_tokens_total{consumer=~"team-a|team-b|anonymous"})', (r) => r.length && Number(r[0].value[1]) === tokens, 'tokens');
  assert.equal(await scalar('sum(manifold_requests_total{consumer="team-a",error_type="none"})'), 8);
  assert.equal(await scalar('sum(manifold_requests_total{consumer="team-b",stream="true",error_type="none"})'), 4);
  assert.equal(await scalar('sum(manifold_requests_total{error_type="upstream"})'), 2);
  assert.equal(await scalar('sum(manifold_requests_total{error_type="not_found"})'), 1);
  assert.equal(await scalar('sum(manifold_stream_cuts_total)'), 1);
  assert.equal(await scalar('sum(manifold_fallbacks_total{model="fb-route"})'), 2);
  assert.equal(await scalar('sum(manifold_unpriced_requests_total{model="gpt-free"})'), 2);
  assert.equal(await scalar('sum(manifold_upstream_attempts_total{provider="back",outcome="5xx"})'), 2);
  assert.ok(await scalar('sum(manifold_metric_series_dropped_total{metric="manifold_requests_total"})') > 0);
  const spend = lines.filter((l) => !/^c-/.test(l.consumer ?? '')).reduce((a, l) => a + Math.round((l.cost_usd ?? 0) * 1e6), 0);
  assert.equal(Math.round(await scalar('sum(manifold_spend_usd_total{consumer=~"team-a|team-b|anonymous"})') * 1e6), spend);
  assert.equal(await scalar('manifold_requests_in_flight'), 0);
});

test('every PromQL query of the Grafana dashboard returns data', async () => {
  const dash = JSON.parse(readFileSync(path.join(ROOT, 'configs/grafana-manifold.json'), 'utf8'));
  const exprs = dash.panels.flatMap((p) => (p.targets || []).map((t) => ({ panel: p.title, expr: t.expr })));
  assert.ok(exprs.length >= 20);
  // the template variables as Grafana fills them for "All"
  const fill = (e) => e.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '1h')
    .replaceAll('$model', '.*').replaceAll('$consumer', '.*');
  for (const v of dash.templating.list.filter((x) => x.type === 'query')) {
    const m = v.definition.match(/^label_values\((\w+), (\w+)\)$/);
    const r = await fetch(`${promUrl}/api/v1/label/${m[2]}/values?match[]=${m[1]}`).then((x) => x.json());
    assert.ok(r.data.length > 0, `variable ${v.name}`);
  }
  for (const { panel, expr } of exprs) {
    const q = fill(expr);
    assert.ok(!q.includes('$'), q);
    await until(q, (r) => r.length > 0 && r.some((s) => Number.isFinite(Number(s.value[1]))), `${panel}: ${q}`);
  }
});
