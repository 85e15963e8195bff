// The prometheus stage: what mixed traffic (streams, errors, a cut
// stream, a fallback, two consumers) implies, read back from /metrics on
// the status listener; promtool accepts the output; OpenMetrics with
// exemplars; TTFT is the first event with text, not the first byte;
// label sets stay bounded under 10,000 random models and consumers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startMock, startGateway, config, chat, sseEvents, ROOT } from './harness.mjs';

let mock, gw, status;

const stages = `
  - name: consumer
    lua: ${ROOT}/tests/integration/fixtures/consumer.lua
  - name: prometheus
    plugin: prometheus
    config: { max_models: 40, max_consumers: 200 }`;

before(async () => {
  mock = await startMock();
  const text = config(mock.url, {
    stages,
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
  }) + 'status:\n  listen: 127.0.0.1:0\n  max_series: 100\n';
  gw = await startGateway(text);
  status = `http://127.0.0.1:${gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

async function scrape(headers = {}) {
  const res = await fetch(status + '/metrics', { headers });
  assert.equal(res.status, 200);
  return { type: res.headers.get('content-type'), text: await res.text() };
}

// The value of the sample whose name and labels (a subset) match.
function value(text, name, labels = {}) {
  let sum = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    const m = line.match(/^([a-z_:]+)(?:\{(.*)\})? (\S+)/);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] || '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

async function until(fn) {
  for (let i = 0; i < 250; i++) {
    const { text } = await scrape();
    if (fn(text)) return text;
    await new Promise((r) => setTimeout(r, 20));
  }
  const { text } = await scrape();
  assert.fail('metrics never matched:\n' + text);
}

function promtool(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
}

test('mixed traffic is counted as it was sent, and promtool accepts it', async () => {
  let prompt = 0, completion = 0;
  for (let i = 0; i < 3; i++) {
    const res = await chat(gw, `plain ${i}`);
    assert.equal(res.status, 200);
    const b = await res.json();
    prompt += b.usage.prompt_tokens;
    completion += b.usage.completion_tokens;
  }
  for (let i = 0; i < 2; i++) {
    const res = await chat(gw, `stream ${i}`, { stream: true }, { 'x-consumer': 'team-a' });
    assert.equal(res.status, 200);
    await sseEvents(res);
  }
  assert.equal((await chat(gw, 'x', { model: 'no-such-model' }, { 'x-consumer': 'team-b' })).status, 404);
  assert.equal((await chat(gw, 'x [[mock:status=500]]', {}, { 'x-consumer': 'team-b' })).status, 502);
  const cut = await chat(gw, 'cut me [[mock:chunks=10 cut=3]]', { stream: true }, { 'x-consumer': 'team-b' });
  const ev = await sseEvents(cut);
  assert.ok(ev.some((e) => e.includes('upstream_stream_cut')));
  assert.equal((await chat(gw, 'fall back', { model: 'fb-route' })).status, 200);

  const text = await until((t) => value(t, 'manifold_requests_total') === 9 &&
    value(t, 'manifold_requests_in_flight') === 0);
  const req = (l) => value(text, 'manifold_requests_total', l);
  assert.equal(req({ route: 'chat', model: 'gpt-4o', provider: 'openai', consumer: 'anonymous', stream: 'false', status_class: '2xx', error_type: 'none' }), 3);
  assert.equal(req({ model: 'gpt-4o', consumer: 'team-a', stream: 'true', status_class: '2xx', error_type: 'none' }), 2);
  assert.equal(req({ model: 'other', provider: 'none', consumer: 'team-b', status_class: '4xx', error_type: 'not_found' }), 1);
  assert.equal(req({ consumer: 'team-b', status_class: '5xx', error_type: 'upstream' }), 1);
  assert.equal(req({ consumer: 'team-b', stream: 'true', error_type: 'stream_cut' }), 1);
  assert.equal(req({ model: 'fb-route', provider: 'openai', error_type: 'none' }), 1);
  assert.equal(value(text, 'manifold_stream_cuts_total', { provider: 'openai', by: 'upstream' }), 1);
  assert.equal(value(text, 'manifold_fallbacks_total', { model: 'fb-route' }), 1);
  assert.equal(value(text, 'manifold_upstream_attempts_total', { provider: 'back', outcome: '5xx' }), 1);
  assert.ok(value(text, 'manifold_upstream_attempts_total', { provider: 'openai', outcome: 'ok' }) >= 7);
  assert.equal(value(text, 'manifold_tokens_total', { model: 'gpt-4o', consumer: 'anonymous', kind: 'input', source: 'reported' }), prompt);
  assert.equal(value(text, 'manifold_tokens_total', { model: 'gpt-4o', consumer: 'anonymous', kind: 'output', source: 'reported' }), completion);
  assert.ok(value(text, 'manifold_tokens_total', { consumer: 'team-a', kind: 'output' }) > 0);
  // the cut stream's usage is estimated, and counted apart
  assert.ok(value(text, 'manifold_tokens_total', { consumer: 'team-b', source: 'estimated' }) > 0);
  // three answered, one upstream error
  assert.equal(value(text, 'manifold_request_duration_seconds_count', { model: 'gpt-4o', stream: 'false' }), 4);
  assert.equal(value(text, 'manifold_request_duration_seconds_bucket', { model: 'gpt-4o', stream: 'false', le: '+Inf' }), 4);
  assert.ok(value(text, 'manifold_gateway_overhead_seconds_count', { route: 'chat' }) >= 9);
  assert.ok(value(text, 'manifold_upstream_time_to_first_byte_seconds_count', { provider: 'openai' }) >= 6);
  assert.equal(value(text, 'manifold_time_to_first_token_seconds_count', { model: 'gpt-4o' }), 3, text); // 2 streams + the cut one
  assert.ok(!/sk-|127\.0\.0\.1/.test(text), 'a key or an address in the metrics');
  promtool(text);
});

test('TTFT is the first event with text, not the role-only first chunk', async () => {
  const res = await chat(gw, 'slow start [[mock:chunk_delay=300]]', { model: 'gpt-ttft', stream: true });
  await sseEvents(res);
  const text = await until((t) => value(t, 'manifold_time_to_first_token_seconds_count', { model: 'gpt-ttft' }) === 1);
  // the role chunk came at once, the first text 300 ms later by the
  // mock's libevent timer, which runs on the coarse monotonic clock (a
  // few ms early by the gateway's precise one): 0.25 s still tells the
  // text event from the role chunk
  assert.ok(value(text, 'manifold_time_to_first_token_seconds_sum', { model: 'gpt-ttft' }) >= 0.25);
  assert.equal(value(text, 'manifold_time_to_first_token_seconds_bucket', { model: 'gpt-ttft', le: '0.25' }), 0);
  assert.equal(value(text, 'manifold_time_per_output_token_seconds_count', { model: 'gpt-ttft' }), 1);
});

test('OpenMetrics when asked, with the client trace id as exemplar', async () => {
  const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
  assert.equal((await chat(gw, 'traced', { model: 'gpt-traced' }, { traceparent: `00-${trace}-00f067aa0ba902b7-01` })).status, 200);
  await until((t) => value(t, 'manifold_request_duration_seconds_count', { model: 'gpt-traced' }) === 1);
  const { type, text } = await scrape({ accept: 'application/openmetrics-text;version=1.0.0,text/plain;q=0.5' });
  assert.match(type, /^application\/openmetrics-text; version=1\.0\.0/);
  assert.match(text, /# EOF\n$/);
  assert.match(text, /# TYPE manifold_requests counter\n/);
  assert.match(text, new RegExp(`manifold_request_duration_seconds_bucket\\{route="chat",model="gpt-traced",[^}]*\\} 1 # \\{trace_id="${trace}"\\} [0-9.e-]+ [0-9.]+\\n`));
  const plain = await scrape();
  assert.match(plain.type, /^text\/plain; version=0\.0\.4/);
  assert.ok(!plain.text.includes('# EOF'));
});

test('without a client traceparent the exemplar is the trace the gateway made; a not-sampled one gives none', async () => {
  assert.equal((await chat(gw, 'untraced', { model: 'gpt-untraced' })).status, 200);
  const unsampled = '0af7651916cd43dd8448eb211c80319c';
  assert.equal((await chat(gw, 'unsampled', { model: 'gpt-unsampled' }, { traceparent: `00-${unsampled}-b7ad6b7169203331-00` })).status, 200);
  await until((t) => value(t, 'manifold_request_duration_seconds_count', { model: 'gpt-unsampled' }) === 1 &&
    value(t, 'manifold_request_duration_seconds_count', { model: 'gpt-untraced' }) === 1);
  const { text } = await scrape({ accept: 'application/openmetrics-text;version=1.0.0' });
  assert.match(text, /manifold_request_duration_seconds_bucket\{route="chat",model="gpt-untraced",[^}]*\} 1 # \{trace_id="[0-9a-f]{32}"\} [0-9.e-]+ [0-9.]+\n/);
  assert.doesNotMatch(text, /model="gpt-unsampled",[^}]*\} \d+ # \{trace_id=/);
  assert.ok(!text.includes(unsampled));
});

test('labels stay bounded under 10,000 random models and consumers', async () => {
  const rand = () => Math.random().toString(36).slice(2, 10);
  let sent = 0;
  const worker = async () => {
    while (sent < 10000) {
      sent++;
      const res = await chat(gw, 'x', { model: `gpt-${rand()}` }, { 'x-consumer': `c-${rand()}` });
      await res.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  // the duration histogram has room for every model label: all counted
  const text = await until((t) => value(t, 'manifold_requests_in_flight') === 0 &&
    value(t, 'manifold_request_duration_seconds_count') >= 10000);
  const models = new Set([...text.matchAll(/^manifold_requests_total\{[^}]*model="([^"]*)"/gm)].map((m) => m[1]));
  const consumers = new Set([...text.matchAll(/^manifold_requests_total\{[^}]*consumer="([^"]*)"/gm)].map((m) => m[1]));
  assert.ok(models.size <= 41 + 1, `models: ${models.size}`); // 40 admitted, other, and none
  assert.ok(models.has('other'));
  // 200 consumers may be admitted, but the metric holds 100 label sets
  const series = text.split('\n').filter((l) => l.startsWith('manifold_requests_total{')).length;
  assert.equal(series, 100);
  assert.ok(consumers.size <= 100, `consumers: ${consumers.size}`);
  assert.ok(value(text, 'manifold_metric_series_dropped_total', { metric: 'manifold_requests_total' }) > 0);
  promtool(text);
});

test('a model the config names holds its label from the start: its failures are counted under it', async () => {
  const g = await startGateway(config(mock.url, {
    stages: `
  - name: prometheus
    plugin: prometheus
    config: { max_models: 3 }`,
    extraProviders: `
  - name: other-up
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-other-0123456789abcdef"]
    models: ["team-*"]
    model_map: { claude-house: gpt-4o-mini }
routes:
  - model: house-route
    targets:
      - { provider: openai, model: gpt-4o }`,
  }) + 'status:\n  listen: 127.0.0.1:0\n');
  try {
    const st = `http://127.0.0.1:${g.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
    // an outage from the first request: never a 2xx
    for (const m of ['gpt-4o', 'claude-house', 'house-route', 'team-x']) {
      const r = await chat(g, 'x [[mock:status=500]]', { model: m });
      assert.equal(r.status, 502, m);
      await r.arrayBuffer();
    }
    let text;
    for (let i = 0; i < 250; i++) {
      text = await (await fetch(st + '/metrics')).text();
      if (value(text, 'manifold_requests_total') >= 4) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const m of ['gpt-4o', 'claude-house', 'house-route']) {
      assert.equal(value(text, 'manifold_requests_total', { model: m, status_class: '5xx', error_type: 'upstream' }), 1, m);
    }
    // a glob's name that never answered is other
    assert.equal(value(text, 'manifold_requests_total', { model: 'other', error_type: 'upstream' }), 1);
    assert.doesNotMatch(text, /model="team-x"/);
  } finally {
    await g.stop();
  }
});

test('a model label goes to a name an upstream answered, not to names that fail; priced names hold theirs from the start', async () => {
  const g = await startGateway(config(mock.url, {
    stages: `
  - name: prometheus
    plugin: prometheus
    config: { max_models: 2 }`,
  }) + 'status:\n  listen: 127.0.0.1:0\nprices:\n  gpt-4o: { input: 2.5, output: 10 }\n  "gpt-5*": { input: 1, output: 1 }\n');
  try {
    const st = `http://127.0.0.1:${g.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
    // names a glob provider takes but its upstream refuses
    for (let k = 0; k < 4; k++) {
      const r = await chat(g, 'x', { model: `gpt-junk-${k}[[mock:status=404]]` });
      assert.equal(r.status, 404);
      await r.arrayBuffer();
    }
    for (const m of ['gpt-4o-mini', 'gpt-4o', 'gpt-4.1']) {
      const r = await chat(g, 'x', { model: m });
      assert.equal(r.status, 200);
      await r.arrayBuffer();
    }
    let text;
    for (let i = 0; i < 250; i++) {
      text = await (await fetch(st + '/metrics')).text();
      if (value(text, 'manifold_requests_total') >= 7) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // gpt-4o priced (held from the start), gpt-4o-mini the first answered
    // name; the refused names and gpt-4.1 (past max_models) are "other"
    assert.equal(value(text, 'manifold_requests_total', { model: 'gpt-4o' }), 1);
    assert.equal(value(text, 'manifold_requests_total', { model: 'gpt-4o-mini' }), 1);
    assert.equal(value(text, 'manifold_requests_total', { model: 'other' }), 5);
    assert.doesNotMatch(text, /model="gpt-junk/);
    assert.doesNotMatch(text, /model="gpt-5\*"/);
  } finally {
    await g.stop();
  }
});
