// The otel stage: an OTLP/HTTP receiver inside the test (JSON, and
// protobuf decoded by hand from the trace.proto field numbers) gets a
// server span joined to the client's traceparent and one client span per
// upstream attempt (GenAI semantic conventions, hex ids, parent/child);
// the traceparent sent upstream names the attempt's span; the endpoint
// and headers come from OTEL_EXPORTER_OTLP_*; a receiver that fails is
// retried.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import zlib from 'node:zlib';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startMock, startGateway, config, chat, sseEvents, writeConfig, spawnSync, BIN } from './harness.mjs';

let mock, gw, recv;
const batches = []; // { headers, body }
let failNext = 0;

function startReceiver() {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      const parts = [];
      let body;
      req.on('data', (d) => { parts.push(d); });
      req.on('end', () => {
        body = Buffer.concat(parts);
        if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
        body = body.toString();
        if (req.method !== 'POST' || req.url !== '/v1/traces') {
          res.writeHead(404).end();
          return;
        }
        if (failNext > 0) {
          failNext--;
          res.writeHead(503).end();
          return;
        }
        batches.push({ headers: req.headers, body: JSON.parse(body) });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

// Every span received, with its resource's attributes.
function spans() {
  const out = [];
  for (const b of batches) {
    for (const rs of b.body.resourceSpans) {
      for (const ss of rs.scopeSpans) for (const s of ss.spans) out.push({ ...s, resource: rs.resource });
    }
  }
  return out;
}

function attrs(span) {
  return Object.fromEntries(span.attributes.map((a) => {
    const v = a.value;
    return [a.key, v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.doubleValue ?? v.boolValue)];
  }));
}

async function waitSpans(pred, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const got = spans().filter(pred);
    if (got.length > 0) return got;
    if (Date.now() > end) assert.fail('no matching span in:\n' + JSON.stringify(spans(), null, 1));
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  mock = await startMock();
  recv = await startReceiver();
  const text = config(mock.url, {
    stages: `
  - name: otel
    plugin: otel
    config: { flush_ms: 50, batch: 64, retries: 3, detail: full }`,
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
      - { provider: back, model: "gpt-4o[[mock:status=503]]" }
      - { provider: anthropic, model: claude-3-5-sonnet }`,
  });
  gw = await startGateway(text, {
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${recv.address().port}/`,
      OTEL_EXPORTER_OTLP_HEADERS: 'x-otlp-token=s3cret%20value, x-tenant = blue',
      OTEL_SERVICE_NAME: 'gw-under-test',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    },
  });
});

after(async () => {
  await gw.stop();
  await mock.stop();
  recv.close();
});

test('a server span joined to the client trace, a client span per attempt, traceparent upstream', async () => {
  const trace = '4bf92f3577b34da6a3ce929d0e0e4736', parent = '00f067aa0ba902b7';
  const res = await chat(gw, 'traced', { model: 'fb-route', max_tokens: 50, temperature: 0.5 },
    { traceparent: `00-${trace}-${parent}-01`, 'x-request-id': 'otel-1' });
  assert.equal(res.status, 200);
  const upstream = await mock.last();

  const [server] = await waitSpans((s) => s.traceId === trace && s.kind === 2);
  assert.equal(server.parentSpanId, parent);
  assert.match(server.spanId, /^[0-9a-f]{16}$/);
  assert.equal(server.name, 'POST /v1/chat/completions');
  assert.match(server.startTimeUnixNano, /^\d{19}$/);
  assert.ok(BigInt(server.endTimeUnixNano) >= BigInt(server.startTimeUnixNano));
  const sa = attrs(server);
  assert.equal(sa['http.response.status_code'], 200);
  assert.equal(sa['gen_ai.request.model'], 'fb-route');
  assert.equal(sa['gen_ai.operation.name'], 'chat');
  assert.equal(sa['manifold.request_id'], 'otel-1');
  assert.equal(sa['manifold.attempts'], 2);
  assert.equal(server.status, undefined);
  assert.equal(attrs({ attributes: server.resource.attributes })['service.name'], 'gw-under-test');

  const clients = await waitSpans((s) => s.traceId === trace && s.kind === 3);
  clients.sort((a, b) => (BigInt(a.startTimeUnixNano) < BigInt(b.startTimeUnixNano) ? -1 : 1));
  assert.equal(clients.length, 2);
  for (const c of clients) {
    assert.equal(c.parentSpanId, server.spanId);
    assert.match(c.spanId, /^[0-9a-f]{16}$/);
    assert.notEqual(c.spanId, server.spanId);
    assert.ok(BigInt(c.startTimeUnixNano) >= BigInt(server.startTimeUnixNano));
    assert.ok(BigInt(c.endTimeUnixNano) <= BigInt(server.endTimeUnixNano));
  }
  const [failed, ok] = clients;
  assert.equal(failed.name, 'chat gpt-4o[[mock:status=503]]');
  assert.equal(failed.status.code, 2);
  const fa = attrs(failed);
  assert.equal(fa['gen_ai.provider.name'], 'openai');
  assert.equal(fa['error.type'], '503');
  assert.equal(fa['http.response.status_code'], 503);
  assert.equal(fa['gen_ai.usage.input_tokens'], undefined);

  assert.equal(ok.name, 'chat claude-3-5-sonnet');
  assert.equal(ok.status, undefined);
  const oa = attrs(ok);
  assert.equal(oa['gen_ai.provider.name'], 'anthropic');
  assert.equal(oa['gen_ai.operation.name'], 'chat');
  assert.equal(oa['gen_ai.request.model'], 'claude-3-5-sonnet');
  assert.equal(oa['gen_ai.request.max_tokens'], 50);
  assert.equal(oa['gen_ai.request.temperature'], 0.5);
  assert.ok(oa['gen_ai.usage.input_tokens'] > 0);
  assert.ok(oa['gen_ai.usage.output_tokens'] > 0);
  assert.equal(oa['gen_ai.usage.cache_read.input_tokens'], 3);
  assert.equal(oa['manifold.usage.estimated'], false); // detail: full
  assert.equal(oa['manifold.provider'], 'anthropic');

  // the upstream got the trace, with the answering attempt's span as parent
  assert.equal(upstream.headers.traceparent, `00-${trace}-${ok.spanId}-01`);
  // the exporter's headers came from OTEL_EXPORTER_OTLP_HEADERS
  const b = batches.find((x) => x.body.resourceSpans[0].scopeSpans[0].spans.some((s) => s.traceId === trace));
  assert.equal(b.headers['x-otlp-token'], 's3cret value');
  assert.equal(b.headers['x-tenant'], 'blue');
  assert.equal(b.headers['content-type'], 'application/json');
  // header values are never logged
  assert.ok(!gw.stderr.includes('s3cret'));
});

test('a request without traceparent starts a trace; errors and streams are spans too; a failed export is retried', async () => {
  failNext = 2; // the receiver answers 503 twice: the exporter tries again
  const res = await chat(gw, 'streamed', { stream: true }, { 'x-request-id': 'otel-2' });
  await sseEvents(res);
  assert.equal((await chat(gw, 'x [[mock:status=500]]', {}, { 'x-request-id': 'otel-3' })).status, 502);
  const [s2] = await waitSpans((s) => s.kind === 2 && attrs(s)['manifold.request_id'] === 'otel-2');
  assert.match(s2.traceId, /^[0-9a-f]{32}$/);
  assert.equal(s2.parentSpanId, undefined);
  assert.equal(attrs(s2)['manifold.stream'], true);
  assert.ok(attrs(s2)['manifold.time_to_first_token_s'] >= 0);
  const [c2] = await waitSpans((s) => s.kind === 3 && s.parentSpanId === s2.spanId);
  assert.equal(c2.traceId, s2.traceId);
  assert.ok(attrs(c2)['gen_ai.usage.output_tokens'] > 0);
  const [s3] = await waitSpans((s) => s.kind === 2 && attrs(s)['manifold.request_id'] === 'otel-3');
  assert.equal(s3.status.code, 2);
  assert.equal(attrs(s3)['error.type'], 'upstream');
  assert.equal(failNext, 0);
});

test('a client that says not sampled is not traced, but its context still goes upstream', async () => {
  const trace = 'aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb';
  assert.equal((await chat(gw, 'quiet', {}, { traceparent: `00-${trace}-1111111111111111-00`, 'x-request-id': 'otel-4' })).status, 200);
  const up = await mock.last();
  assert.match(up.headers.traceparent, new RegExp(`^00-${trace}-[0-9a-f]{16}-00$`));
  // a later request is exported; the unsampled one never is
  assert.equal((await chat(gw, 'loud', {}, { 'x-request-id': 'otel-5' })).status, 200);
  await waitSpans((s) => s.kind === 2 && attrs(s)['manifold.request_id'] === 'otel-5');
  assert.equal(spans().filter((s) => s.traceId === trace).length, 0);
});

test('a collector that never answers does not hold up the gateway stopping', { timeout: 30000 }, async () => {
  const sockets = [];
  let accepted;
  const gotOne = new Promise((r) => { accepted = r; });
  const hang = await new Promise((resolve) => {
    const s = http.createServer(() => { /* never answers */ });
    s.on('connection', (c) => { sockets.push(c); accepted(); });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
  const g = await startGateway(config(mock.url, {
    stages: `
  - name: otel
    plugin: otel
    config: { endpoint: "http://127.0.0.1:${hang.address().port}/v1/traces", flush_ms: 20, timeout_ms: 600000, close_ms: 200 }`,
  }));
  try {
    assert.equal((await chat(g, 'into the void')).status, 200);
    await gotOne; // an export is waiting on the collector now
    // more spans queue behind it; stopping cuts the export short (a
    // ten-minute timeout would outlast this test's 30 s)
    assert.equal((await chat(g, 'more')).status, 200);
  } finally {
    await g.stop();
    for (const c of sockets) c.destroy();
    hang.close();
  }
});

// Protobuf, read by field number (trace.proto): [field, wire, value].
function pbFields(buf) {
  const out = [];
  let i = 0;
  const varint = () => {
    let r = 0n, sh = 0n;
    for (;;) {
      const b = buf[i++];
      r |= BigInt(b & 0x7f) << sh;
      sh += 7n;
      if (!(b & 0x80)) return r;
    }
  };
  while (i < buf.length) {
    const tag = Number(varint());
    const f = tag >> 3, w = tag & 7;
    if (w === 0) out.push([f, w, varint()]);
    else if (w === 1) { out.push([f, w, buf.subarray(i, i + 8)]); i += 8; }
    else if (w === 2) { const n = Number(varint()); out.push([f, w, buf.subarray(i, i + n)]); i += n; }
    else if (w === 5) { out.push([f, w, buf.subarray(i, i + 4)]); i += 4; }
    else throw new Error(`wire type ${w}`);
  }
  return out;
}
const all = (buf, f) => pbFields(buf).filter((x) => x[0] === f).map((x) => x[2]);
const one = (buf, f) => all(buf, f)[0];
const str = (b) => (b ? Buffer.from(b).toString('utf8') : undefined);
const hex = (b) => (b ? Buffer.from(b).toString('hex') : undefined);

function pbAttributes(list) {
  return list.map((kv) => {
    const any = one(kv, 2), [f, , v] = pbFields(any)[0];
    const value = f === 1 ? { stringValue: str(v) } : f === 2 ? { boolValue: v === 1n }
      : f === 3 ? { intValue: String(v) } : { doubleValue: Buffer.from(v).readDoubleLE(0) };
    return { key: str(one(kv, 1)), value };
  });
}

// ExportTraceServiceRequest -> spans shaped as the JSON ones
function pbSpans(buf) {
  const out = [];
  for (const rs of all(buf, 1)) {
    const resource = { attributes: pbAttributes(all(one(rs, 1), 1)) };
    for (const ss of all(rs, 2)) {
      const scope = one(ss, 1);
      for (const sp of all(ss, 2)) {
        const st = one(sp, 15);
        out.push({
          traceId: hex(one(sp, 1)), spanId: hex(one(sp, 2)), parentSpanId: hex(one(sp, 4)),
          name: str(one(sp, 5)), kind: Number(one(sp, 6) ?? 0n),
          startTimeUnixNano: Buffer.from(one(sp, 7)).readBigUInt64LE(0).toString(),
          endTimeUnixNano: Buffer.from(one(sp, 8)).readBigUInt64LE(0).toString(),
          attributes: pbAttributes(all(sp, 9)),
          status: st ? { code: Number(one(st, 3) ?? 0n), message: str(one(st, 2)) } : undefined,
          resource, scope: str(one(scope, 1)),
        });
      }
    }
  }
  return out;
}

test('protobuf, the OTel default: the same spans, by trace.proto', async () => {
  const got = [];
  let ctype;
  const pb = await new Promise((resolve) => {
    const s = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (d) => chunks.push(d));
      req.on('end', () => {
        ctype = req.headers['content-type'];
        got.push(...pbSpans(Buffer.concat(chunks)));
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      });
    });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
  const g = await startGateway(config(mock.url, {
    stages: `
  - name: otel
    plugin: otel
    config: { endpoint: "http://127.0.0.1:${pb.address().port}/v1/traces", protocol: http/protobuf, flush_ms: 20 }`,
  }), { env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' } }); // the config's protocol wins
  try {
    const trace = '11112222333344445555666677778888', parent = '9999aaaabbbbcccc';
    assert.equal((await chat(g, 'in protobuf', { max_tokens: 7 }, { traceparent: `00-${trace}-${parent}-01` })).status, 200);
    for (let i = 0; got.filter((x) => x.traceId === trace).length < 2; i++) {
      if (i > 250) assert.fail('spans never came: ' + JSON.stringify(got));
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(ctype, 'application/x-protobuf');
    const server = got.find((x) => x.traceId === trace && x.kind === 2);
    const client = got.find((x) => x.traceId === trace && x.kind === 3);
    assert.equal(server.parentSpanId, parent);
    assert.equal(server.name, 'POST /v1/chat/completions');
    assert.equal(client.parentSpanId, server.spanId);
    assert.match(client.spanId, /^[0-9a-f]{16}$/);
    assert.equal(client.name, 'chat gpt-4o');
    assert.equal(client.scope, 'manifold');
    assert.ok(BigInt(client.endTimeUnixNano) >= BigInt(client.startTimeUnixNano));
    const ca = attrs(client), sa = attrs(server);
    // detail: standard, the default: the conventions' attributes, not
    // the gateway's own (the JSON test above runs detail: full)
    assert.deepEqual(Object.keys(ca).sort(), ['gen_ai.operation.name', 'gen_ai.provider.name',
      'gen_ai.request.max_tokens', 'gen_ai.request.model', 'gen_ai.response.model',
      'gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens']);
    assert.equal(ca['gen_ai.provider.name'], 'openai');
    assert.equal(ca['gen_ai.request.max_tokens'], 7);
    assert.ok(ca['gen_ai.usage.input_tokens'] > 0);
    assert.equal(ca['manifold.usage.estimated'], undefined);
    assert.deepEqual(Object.keys(sa).sort(), ['gen_ai.operation.name', 'gen_ai.request.model',
      'http.request.method', 'http.response.status_code', 'http.route', 'url.path']);
    assert.equal(sa['http.response.status_code'], 200);
    assert.equal(sa['manifold.request_id'], undefined);
    assert.equal(attrs({ attributes: server.resource.attributes })['service.name'], 'manifold');
  } finally {
    await g.stop();
    pb.close();
  }
});

// A span is written in place with room for a two-byte length (128 to
// 16,383 bytes): a longer one (a captured 20 KB prompt) is moved to fit
// its length, and the spans around it still decode.
test('protobuf: a span over 16 KB (a long capture) decodes, and the spans after it', async () => {
  const got = [];
  const pb = await new Promise((resolve) => {
    const s = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (d) => chunks.push(d));
      req.on('end', () => {
        got.push(...pbSpans(Buffer.concat(chunks)));
        res.writeHead(200).end();
      });
    });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
  const g = await startGateway(config(mock.url, {
    stages: `
  - name: otel
    plugin: otel
    config: { endpoint: "http://127.0.0.1:${pb.address().port}/v1/traces", flush_ms: 200, capture_content: true, capture_max_bytes: 60000 }`,
  }));
  try {
    const long = 'lorem ipsum '.repeat(2000); // 24,000 bytes
    const t1 = 'aaaa2222333344445555666677778888', t2 = 'bbbb2222333344445555666677778888';
    assert.equal((await chat(g, long, {}, { traceparent: `00-${t1}-1111222233334444-01` })).status, 200);
    assert.equal((await chat(g, 'short', {}, { traceparent: `00-${t2}-1111222233334444-01` })).status, 200);
    for (let i = 0; got.filter((x) => x.traceId === t2).length < 2; i++) {
      if (i > 250) assert.fail('spans never came: ' + JSON.stringify(got.map((x) => x.name)));
      await new Promise((r) => setTimeout(r, 20));
    }
    const c1 = got.find((x) => x.traceId === t1 && x.kind === 3);
    const c2 = got.find((x) => x.traceId === t2 && x.kind === 3);
    assert.ok(attrs(c1)['gen_ai.input.messages'].includes(long.trim()));
    assert.ok(attrs(c2)['gen_ai.input.messages'].includes('short'));
    assert.equal(c2.parentSpanId, got.find((x) => x.traceId === t2 && x.kind === 2).spanId);
  } finally {
    await g.stop();
    pb.close();
  }
});

// Prompt and answer capture: off by default; on, the prompt as it went
// upstream (after the mask stage) and the answer before the mask stage
// put values back; a stream's answer only when nothing was masked in
// it; keys and secrets redacted; each cut to capture_max_bytes.
test('prompts and answers are captured only when asked, masked and bounded', async () => {
  const recvUrl = `http://127.0.0.1:${recv.address().port}/v1/traces`;
  const KEY = 'sk-proj-' + 'Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6';
  const gwOf = (stages, env = {}) => startGateway(config(mock.url, { stages }), { env });
  const masked = await gwOf(`
  - name: mask
    plugin: mask
  - name: otel
    plugin: otel
    config: { endpoint: "${recvUrl}", protocol: http/json, flush_ms: 20, capture_content: true }`);
  // no mask stage; capture from the GenAI conventions' variable, small
  const bare = await gwOf(`
  - name: otel
    plugin: otel
    config: { endpoint: "${recvUrl}", protocol: http/json, flush_ms: 20, capture_max_bytes: 300 }`,
  { OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: 'true' });
  const tp = (n) => `00-${String(n).padStart(32, 'c')}-00f067aa0ba902b7-01`;
  const clientSpan = async (n) => (await waitSpans((s) => s.traceId === String(n).padStart(32, 'c') && s.kind === 3))[0];
  const json = (a, k) => (a[k] === undefined ? undefined : JSON.parse(a[k]));
  try {
    // a whole answer, masked: placeholders in both, the client got the value
    let res = await chat(masked, `mail alice.smith@example.com, key ${KEY}`, {}, { traceparent: tp(1) });
    assert.equal(res.status, 200);
    assert.match((await res.json()).choices[0].message.content, /alice\.smith@example\.com/);
    let span = await clientSpan(1);
    let a = attrs(span);
    const input = json(a, 'gen_ai.input.messages');
    assert.equal(input.length, 1);
    assert.equal(input[0].role, 'user');
    assert.equal(input[0].parts[0].type, 'text');
    assert.match(input[0].parts[0].content, /\[EMAIL_1\]/);
    const output = json(a, 'gen_ai.output.messages');
    assert.equal(output[0].role, 'assistant');
    assert.equal(output[0].finish_reason, 'stop');
    assert.match(output[0].parts[0].content, /^Hello from mock\. You said: mail \[EMAIL_1\]/);
    assert.ok(!JSON.stringify(span).includes('alice.smith'), JSON.stringify(span));
    assert.ok(!JSON.stringify(span).includes(KEY));
    assert.equal(a['manifold.capture.truncated'], undefined);

    // a stream with values masked: the client got them back, so its
    // answer is not kept; the prompt is
    res = await chat(masked, 'stream to alice.smith@example.com', { stream: true }, { traceparent: tp(2) });
    assert.match((await sseEvents(res)).join(''), /alice\.smith/);
    a = attrs(await clientSpan(2));
    assert.match(json(a, 'gen_ai.input.messages')[0].parts[0].content, /\[EMAIL_1\]/);
    assert.equal(a['gen_ai.output.messages'], undefined);
    assert.equal(a['manifold.capture.output_omitted'], 'masked');

    // a stream with nothing masked: what the client got, put together
    res = await chat(masked, 'a plain stream', { stream: true, messages: [
      { role: 'system', content: 'be brief' }, { role: 'user', content: 'a plain stream [[mock:split=3]]' }] },
    { traceparent: tp(3) });
    const got = (await sseEvents(res)).filter((d) => d !== '[DONE]')
      .map((d) => JSON.parse(d).choices?.[0]?.delta?.content ?? '').join('');
    a = attrs(await clientSpan(3));
    assert.deepEqual(json(a, 'gen_ai.input.messages').map((m) => m.role), ['system', 'user']);
    const out3 = json(a, 'gen_ai.output.messages');
    assert.equal(out3[0].parts[0].content, got);
    assert.equal(out3[0].finish_reason, 'stop');

    // without a mask stage a key is still redacted, and the capture is cut
    res = await chat(bare, `key ${KEY} ` + 'long '.repeat(200), {}, { traceparent: tp(4) });
    assert.equal(res.status, 200);
    span = await clientSpan(4);
    a = attrs(span);
    assert.ok(!JSON.stringify(span).includes(KEY));
    assert.ok(Buffer.byteLength(a['gen_ai.input.messages']) <= 300);
    assert.ok(Buffer.byteLength(a['gen_ai.output.messages']) <= 300);
    assert.match(json(a, 'gen_ai.input.messages')[0].parts[0].content, /^key \[API_KEY_REDACTED\] long long/);
    assert.match(json(a, 'gen_ai.output.messages')[0].parts[0].content, /\[API_KEY_REDACTED\]/);
    assert.equal(a['manifold.capture.truncated'], true);

    // off by default: the first gateway's spans carry no content
    res = await chat(gw, 'not captured', {}, { traceparent: tp(5) });
    assert.equal(res.status, 200);
    a = attrs(await clientSpan(5));
    assert.equal(a['gen_ai.input.messages'], undefined);
    assert.equal(a['gen_ai.output.messages'], undefined);
  } finally {
    await masked.stop();
    await bare.stop();
  }
});

test('detail takes standard or full; another value is refused at load', () => {
  const check = (detail) => spawnSync(BIN, ['-t', '-c', writeConfig(config(mock.url, {
    stages: `
  - name: otel
    plugin: otel
    config: { endpoint: "http://127.0.0.1:9/v1/traces", detail: ${detail} }`,
  }))], { encoding: 'utf8' });
  assert.equal(check('standard').status, 0);
  assert.equal(check('full').status, 0);
  const r = check('everything');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /detail must be standard or full/);
});

test('compression: gzip sends each batch gzip\'d with Content-Encoding; other values are refused', async () => {
  const g = await startGateway(config(mock.url, {
    stages: `
  - name: otel
    plugin: otel
    config: { endpoint: "http://127.0.0.1:${recv.address().port}/v1/traces", protocol: http/json, flush_ms: 50, compression: gzip }`,
  }));
  try {
    const n = batches.length;
    const trace = '21'.padStart(32, 'c');
    const res = await chat(g, 'compressed', {}, { traceparent: `00-${trace}-00f067aa0ba902b7-01` });
    assert.equal(res.status, 200);
    await res.text();
    await waitSpans((sp) => sp.traceId === trace);
    const got = batches.slice(n).find((b) => b.headers['content-encoding'] === 'gzip');
    assert.ok(got, 'a gzip batch');
  } finally {
    await g.stop();
  }
  const r = spawnSync(BIN, ['-t', '-c', writeConfig(config(mock.url, {
    stages: `
  - name: otel
    plugin: otel
    config: { endpoint: "http://127.0.0.1:9/v1/traces", compression: brotli }`,
  }))], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /compression 'brotli' must be gzip or none/);
});

test('certificate, client_certificate and client_key: an https collector with its own CA, and mutual TLS', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-otel-tls-'));
  const ssl = (...a) => {
    const r = spawnSync('openssl', a, { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  };
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=otel-test-ca');
  writeFileSync(path.join(dir, 'srv.ext'), 'subjectAltName=DNS:localhost\n');
  for (const [name, ext] of [['srv', ['-extfile', 'srv.ext']], ['cli', []]]) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'srv' ? 'localhost' : 'gateway'}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', ...ext);
  }
  const seen = [];
  const srv = https.createServer({
    key: readFileSync(path.join(dir, 'srv.key')), cert: readFileSync(path.join(dir, 'srv.pem')),
    ca: readFileSync(path.join(dir, 'ca.pem')), requestCert: true, rejectUnauthorized: true,
  }, (req, res) => {
    let b = '';
    req.on('data', (d) => { b += d; });
    req.on('end', () => {
      seen.push({ peer: req.socket.getPeerCertificate().subject.CN, body: JSON.parse(b) });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const port = srv.address().port;
  const conf = (extra) => config(mock.url, {
    stages: `
  - name: otel
    plugin: otel
    config: { endpoint: "https://localhost:${port}/v1/traces", protocol: http/json, flush_ms: 50, retries: 0${extra} }`,
  });
  const g = await startGateway(conf(`, certificate: ${dir}/ca.pem, client_certificate: ${dir}/cli.pem, client_key: ${dir}/cli.key`));
  try {
    const res = await chat(g, 'over tls', {});
    assert.equal(res.status, 200);
    await res.text();
    for (let i = 0; i < 250 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(seen.length > 0, 'the collector got a batch over mutual TLS');
    assert.equal(seen[0].peer, 'gateway');
    assert.ok(seen[0].body.resourceSpans.length > 0);
  } finally {
    await g.stop();
    srv.close();
  }
  // refused at load: a key without its certificate, TLS files for an
  // http endpoint, a CA file that holds none
  const check = (text) => spawnSync(BIN, ['-t', '-c', writeConfig(text)], { encoding: 'utf8' });
  let r = check(conf(`, client_key: ${dir}/cli.key`));
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /client_certificate and client_key go together/);
  r = check(conf(`, certificate: ${dir}/srv.ext`));
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /no certificates read from/);
  r = check(conf(`, certificate: ${dir}/ca.pem`).replace(`https://localhost:${port}`, 'http://127.0.0.1:9'));
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /apply to an https endpoint/);
});
