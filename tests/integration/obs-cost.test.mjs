// Spend and the settled usage record: the prometheus stage and the access
// log price each request from `prices:` (exact names and globs, cache
// reads and writes at their own prices) and agree; unpriced models are
// counted and flagged, never a silent 0; the access log line carries the
// trace id, overhead, first token, time per output token, cost, usage
// source and every upstream attempt; per-attempt durations and the
// upstreams' key health and breakers are on /metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startMock, startGateway, config, chat, sseEvents, ROOT } from './harness.mjs';

let mock, gw, status;

const PRICES = {
  'gpt-4o': { input: 2.5, output: 10, cache_read: 1.25 },
  'claude-*': { input: 3, output: 15, cache_read: 0.3, cache_write: 3.75 },
  'claude-3-haiku': { input: 0.25, output: 1.25 },
};

before(async () => {
  mock = await startMock();
  const text = config(mock.url, {
    stages: `
  - name: trace-header
    lua: ${ROOT}/tests/integration/fixtures/trace-header.lua
  - name: prometheus
    plugin: prometheus`,
    extraProviders: `
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]
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
  gpt-4o: { input: 2.5, output: 10, cache_read: 1.25 }
  "claude-*": { input: 3, output: 15, cache_read: 0.3, cache_write: 3.75 }
  claude-3-haiku: { input: 0.25, output: 1.25 }
status:
  listen: 127.0.0.1:0
`;
  gw = await startGateway(text);
  status = `http://127.0.0.1:${gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

async function scrape() {
  const res = await fetch(status + '/metrics');
  assert.equal(res.status, 200);
  return res.text();
}

function value(text, name, labels = {}) {
  let sum = null;
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-z_:]+)(?:\{(.*)\})? (\S+)/);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] || '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

async function until(fn) {
  for (let i = 0; i < 250; i++) {
    const text = await scrape();
    if (fn(text)) return text;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail('metrics never matched:\n' + await scrape());
}

// The cost in micro-USD the log line's usage implies at price p.
function micro(l, p) {
  const cached = l.cached_tokens ?? 0, written = l.cache_write_tokens ?? 0;
  const c = (l.prompt_tokens - cached - written) * p.input + cached * (p.cache_read ?? p.input) +
    written * (p.cache_write ?? p.input) + l.completion_tokens * p.output;
  return Math.ceil(c - 1e-9);
}

test('requests are priced alike in the access log and in spend; unpriced ones are flagged', async () => {
  const trace = '0af7651916cd43dd8448eb211c80319c', parent = 'b7ad6b7169203331';
  const r1 = await chat(gw, 'priced', {}, { 'x-request-id': 'cost-1', traceparent: `00-${trace}-${parent}-01` });
  assert.equal(r1.status, 200);
  // a Lua stage reads the same trace context (mf.req.info())
  assert.equal(r1.headers.get('x-trace-id'), trace);
  assert.equal(r1.headers.get('x-parent-span-id'), parent);
  const s = await chat(gw, 'priced stream', { stream: true }, { 'x-request-id': 'cost-2' });
  await sseEvents(s);
  assert.equal((await chat(gw, 'cache it [[mock:cache_write=20]]', { model: 'claude-3-5-sonnet' }, { 'x-request-id': 'cost-3' })).status, 200);
  const as = await chat(gw, 'cache it [[mock:cache_write=7]]', { model: 'claude-3-5-sonnet', stream: true }, { 'x-request-id': 'cost-4' });
  await sseEvents(as);
  assert.equal((await chat(gw, 'exact wins', { model: 'claude-3-haiku' }, { 'x-request-id': 'cost-5' })).status, 200);
  assert.equal((await chat(gw, 'free?', { model: 'gpt-free' }, { 'x-request-id': 'cost-6' })).status, 200);
  assert.equal((await chat(gw, 'x', { model: 'no-such-model' }, { 'x-request-id': 'cost-7' })).status, 404);

  const line = async (id) => gw.waitLog((l) => l.request_id === id);
  const l1 = await line('cost-1');
  assert.equal(l1.trace_id, trace);
  assert.match(l1.span_id, /^[0-9a-f]{16}$/);
  assert.notEqual(l1.span_id, parent);
  assert.equal(r1.headers.get('x-span-id'), l1.span_id);
  assert.equal(l1.usage_source, 'reported');
  assert.equal(l1.unpriced, false);
  assert.equal(Math.round(l1.cost_usd * 1e6), micro(l1, PRICES['gpt-4o']));
  assert.ok(l1.cost_usd > 0);
  assert.ok(l1.overhead_ms >= 0 && l1.overhead_ms <= l1.latency_ms);
  assert.ok(l1.first_token_ms > 0);
  assert.equal(l1.tpot_ms, null); // not a stream
  assert.deepEqual(l1.upstream_attempts.map((a) => [a.provider, a.model, a.outcome, a.status]), [['openai', 'gpt-4o', 'ok', 200]]);
  assert.ok(l1.upstream_attempts[0].ms >= l1.upstream_attempts[0].ttfb_ms);

  const l2 = await line('cost-2');
  assert.match(l2.trace_id, /^[0-9a-f]{32}$/);
  assert.notEqual(l2.trace_id, trace);
  assert.ok(l2.completion_tokens > 1);
  assert.ok(l2.tpot_ms >= 0, JSON.stringify(l2));
  assert.equal(Math.round(l2.cost_usd * 1e6), micro(l2, PRICES['gpt-4o']));

  const l3 = await line('cost-3');
  assert.equal(l3.cache_write_tokens, 20);
  assert.equal(l3.cached_tokens, 3);
  assert.equal(Math.round(l3.cost_usd * 1e6), micro(l3, PRICES['claude-*']));
  const l4 = await line('cost-4');
  assert.equal(l4.cache_write_tokens, 7);
  assert.equal(Math.round(l4.cost_usd * 1e6), micro(l4, PRICES['claude-*']));
  const l5 = await line('cost-5'); // the exact name, not the glob
  assert.equal(Math.round(l5.cost_usd * 1e6), micro(l5, PRICES['claude-3-haiku']));
  const l6 = await line('cost-6');
  assert.equal(l6.unpriced, true);
  assert.equal(l6.cost_usd, null);
  assert.ok(l6.prompt_tokens > 0);
  const l7 = await line('cost-7'); // no usage: nothing to price
  assert.equal(l7.unpriced, null);
  assert.equal(l7.cost_usd, null);
  assert.equal(l7.usage_source, null);
  assert.deepEqual(l7.upstream_attempts, []);
  for (const l of [l1, l2, l3, l4, l5, l6, l7]) {
    for (const k of ['trace_id', 'overhead_ms', 'first_token_ms', 'tpot_ms', 'cost_usd', 'unpriced', 'usage_source', 'upstream_attempts', 'cache_write_tokens']) {
      assert.ok(k in l, `${k} missing in ${JSON.stringify(l)}`);
    }
  }

  const text = await until((t) => value(t, 'manifold_requests_total') === 7 && value(t, 'manifold_requests_in_flight') === 0);
  const spend = (model) => value(text, 'manifold_spend_usd_total', { model });
  assert.equal(Math.round(spend('gpt-4o') * 1e6), micro(l1, PRICES['gpt-4o']) + micro(l2, PRICES['gpt-4o']));
  assert.equal(Math.round(spend('claude-3-5-sonnet') * 1e6), micro(l3, PRICES['claude-*']) + micro(l4, PRICES['claude-*']));
  assert.equal(Math.round(spend('claude-3-haiku') * 1e6), micro(l5, PRICES['claude-3-haiku']));
  assert.equal(spend('gpt-free'), null);
  assert.equal(value(text, 'manifold_unpriced_requests_total', { model: 'gpt-free', provider: 'openai' }), 1);
  assert.equal(value(text, 'manifold_unpriced_requests_total'), 1);
  assert.equal(value(text, 'manifold_tokens_total', { model: 'claude-3-5-sonnet', kind: 'cache_write' }), 27);
  assert.equal(value(text, 'manifold_tokens_total', { model: 'claude-3-5-sonnet', kind: 'cache_read' }), 6);
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
});

test('every attempt is timed, failed-over ones too; key health and breakers are gauges', async () => {
  assert.equal((await chat(gw, 'fall back', { model: 'fb-route' }, { 'x-request-id': 'fb-1' })).status, 200);
  const l = await gw.waitLog((x) => x.request_id === 'fb-1');
  assert.deepEqual(l.upstream_attempts.map((a) => [a.provider, a.outcome, a.status]), [['back', '500', 500], ['openai', 'ok', 200]]);
  for (const a of l.upstream_attempts) assert.ok(a.ms >= 0 && a.ttfb_ms >= 0 && a.ttfb_ms <= a.ms);
  const text = await until((t) => value(t, 'manifold_upstream_attempt_duration_seconds_count', { provider: 'back' }) === 1);
  assert.equal(value(text, 'manifold_upstream_time_to_first_byte_seconds_count', { provider: 'back' }), 1);
  assert.equal(value(text, 'manifold_upstream_key_healthy', { provider: 'openai', key_index: '0' }), 1);
  assert.equal(value(text, 'manifold_upstream_key_healthy', { provider: 'anthropic', key_index: '0' }), 1);
  assert.equal(value(text, 'manifold_circuit_breaker_state', { provider: 'openai', model: 'gpt-4o', state: 'closed' }), 1);
  assert.equal(value(text, 'manifold_circuit_breaker_state', { provider: 'openai', model: 'gpt-4o', state: 'open' }), 0);
  assert.ok(!/sk-/.test(text), 'a key in the metrics');
});
