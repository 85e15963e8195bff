// What a client sends never reaches the upstream's request line or the
// client's response head unencoded; what an upstream echoes (its keys) or
// asks (Retry-After) is checked before it is passed on or acted upon.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  startMock, startGateway, config, post, raw, adminCall, closedPort, serviceKeys, serviceAccount,
} from './harness.mjs';

let mock, gw, dir;

const KEYS = {
  openai: 'sk-upstream-secret-0123456789',
  groq: 'gsk_groqsecretkey0123456789abcdef',
  xai: 'xai-grokSecretKey0123456789abcdef',
  azure: '0123456789abcdef0123456789abcdef',
  anthropic: 'sk-ant-api03-secretsecret0123456789',
  gemini: 'AIzaSyGeminiSecret0123456789abcdefghi',
  bedrock: 'AKIDHARDEN1:mock/secret/AKIDHARDEN1',
};

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-harden-'));
  const { privateKey } = serviceKeys();
  const sa = path.join(dir, 'sa.json');
  writeFileSync(sa, serviceAccount(`${mock.url}/token`, privateKey));
  const tlsPort = mock.port; // a plain HTTP server: the handshake fails
  gw = await startGateway(config(mock.url, {
    limits: '  max_retry_after: 60s',
    extraProviders: `
  - name: groq
    type: groq
    base_url: ${mock.url}/v1
    keys: ["${KEYS.groq}"]
    models: ["groq-*"]
  - name: xai
    type: xai
    base_url: ${mock.url}/v1
    keys: ["${KEYS.xai}"]
    models: ["grok-*"]
  - name: azure
    type: azure
    base_url: ${mock.url}
    keys: ["${KEYS.azure}"]
    models: ["azure-*"]
    deployments: { azure-mapped: prod-gpt4o }
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["${KEYS.anthropic}"]
    models: ["claude-*"]
  - name: gemini
    type: gemini
    base_url: ${mock.url}
    keys: ["${KEYS.gemini}"]
    models: ["gemini-*"]
  - name: vertex
    type: vertex
    base_url: ${mock.url}
    location: europe-west4
    credentials: ${sa}
    models: ["vx-*"]
  - name: bedrock
    type: bedrock
    base_url: ${mock.url}
    region: us-west-2
    keys: ["${KEYS.bedrock}"]
    models: ["anthropic.*"]
  - name: rest
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-rest-key-0123456789abcdef"]
    models: ["rest-*"]
  - name: tls
    type: openai
    base_url: https://127.0.0.1:${tlsPort}/v1
    keys: ["sk-tls-key-0123456789abcdef"]
    models: ["tls-*"]
  - name: nokey
    type: openai
    base_url: ${mock.url}/v1
    keys: [""]
    models: ["nokey-*"]`,
  }).replace('listen: 127.0.0.1:0', `listen: 127.0.0.1:0\nadmin: ${path.join(dir, 'admin.sock')}`),
  { workers: 1 });
});

after(async () => {
  await mock.mode({ status: 0 });
  await gw.stop();
  await mock.stop();
});

function chatModel(model, extra = {}) {
  return post(gw, '/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hi' }], ...extra });
}

async function lastPaths(n) {
  const all = await (await fetch(`${mock.url}/_mock/requests`)).json();
  return all.slice(-n).map((r) => r.path || r.uri);
}

// 1. the model name in the upstream URL

test('a model with CR LF is 400 in the client protocol and never sent', async () => {
  const before = await mock.count();
  for (const model of ['gemini-x\r\nGET /evil HTTP/1.1\r\nx: y', 'vx-a\nb', 'azure-a\rb', 'gpt-4o\u0000x']) {
    const res = await chatModel(model);
    assert.equal(res.status, 400, model);
    const body = await res.json();
    assert.equal(body.error.code, 'invalid_model');
  }
  const res = await post(gw, '/v1/messages', {
    model: 'claude-x\r\nSet-Cookie: a=b', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }],
  });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.type, 'error'); // Anthropic's error shape
  assert.equal(body.error.type, 'invalid_request_error');
  assert.equal(await mock.count(), before, 'nothing reached the upstream');
});

test('/, .., ?, # and : in a model never change the upstream path', async () => {
  const cases = [
    ['gemini-../../../v1/evil?x=1#y', '/v1beta/models/gemini-..%2F..%2F..%2Fv1%2Fevil%3Fx%3D1%23y:generateContent'],
    ['gemini-a:streamGenerateContent', '/v1beta/models/gemini-a%3AstreamGenerateContent:generateContent'],
    ['vx-../../../../other', '/v1/projects/mock-project/locations/europe-west4/publishers/google/models/vx-..%2F..%2F..%2F..%2Fother:generateContent'],
    ['azure-../../x?api-version=1#', '/openai/deployments/azure-..%2F..%2Fx%3Fapi-version%3D1%23/chat/completions?api-version=2024-10-21'],
    ['azure-mapped', '/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21'],
    ['anthropic.x/../../y?z', '/model/anthropic.x%2F..%2F..%2Fy%3Fz/converse'],
  ];
  for (const [model, want] of cases) {
    const before = await mock.count();
    await (await chatModel(model)).arrayBuffer();
    const after = await mock.count();
    const paths = await lastPaths(after - before);
    const upstream = paths.filter((p) => !p.startsWith('/token'));
    assert.deepEqual(upstream, [want], model);
  }
});

// 2. response header splitting

test('x-manifold-model and every header stay one line each', async () => {
  // a model_map/stage can only produce a clean name now; the intake refuses
  // the raw one, so the head of a served request is intact
  const body = '{"model":"gpt-4o\\r\\nSet-Cookie: evil=1","messages":[{"role":"user","content":"hi"}]}';
  const out = await raw(gw.port,
    'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
    `Connection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  assert.match(out, /^HTTP\/1\.1 400 /);
  assert.ok(!/\r\nSet-Cookie:/i.test(out), out);
});

// 3. keys echoed by an upstream error

const ECHO = {
  openai: ['gpt-4o', '{"error":{"message":"bad request for key {key} here","type":"invalid_request_error"}}'],
  groq: ['groq-llama', '{"error":{"message":"Invalid API Key: {key}","type":"invalid_request_error"}}'],
  xai: ['grok-2', '{"error":"Incorrect API key provided: {key}. Obtain an API key"}'],
  azure: ['azure-gpt', '{"error":{"message":"Access denied for api-key {key}","code":"bad"}}'],
  anthropic: ['claude-x', '{"type":"error","error":{"type":"invalid_request_error","message":"key {key} is bad"}}'],
  gemini: ['gemini-x', '{"error":{"code":400,"message":"API key {key} bad","status":"INVALID_ARGUMENT"}}'],
  vertex: ['vx-x', '{"error":{"code":400,"message":"token {key} bad","status":"INVALID_ARGUMENT"}}'],
  bedrock: ['anthropic.claude', '{"message":"The security token {key} included in the request is invalid."}'],
};

for (const status of [400, 401, 500]) {
  test(`an upstream ${status} echoing the key reaches neither client nor log`, async () => {
    for (const [prov, [model, body]] of Object.entries(ECHO)) {
      await mock.mode({ status, body });
      const seen = await mock.count();
      const res = await post(gw, '/v1/chat/completions', {
        model, messages: [{ role: 'user', content: `echo ${prov} ${status}` }],
      }, { 'x-request-id': `echo-${prov}-${status}` });
      const text = await res.text();
      const sent = (await mock.last()).headers;
      const cred = JSON.stringify(sent).match(/"(?:authorization|x-api-key|api-key|x-goog-api-key)":"(?:Bearer )?([^"]+)"/i);
      const secrets = [KEYS[prov], cred && cred[1]].filter(Boolean)
        .flatMap((k) => k.split(':')).filter((k) => k.length >= 12 && !k.startsWith('AWS4-HMAC'));
      assert.ok(await mock.count() > seen, `${prov} ${status}: the upstream was asked`);
      await adminCall(path.join(dir, 'admin.sock'), 'POST', `/keys/${prov}/0/enable`);
      const line = await gw.waitLog((l) => l.request_id === `echo-${prov}-${status}`);
      for (const s of secrets) {
        assert.ok(!text.includes(s), `${prov} ${status}: client body leaks ${s}: ${text}`);
        assert.ok(!JSON.stringify(line).includes(s), `${prov} ${status}: access log leaks ${s}`);
      }
    }
    await mock.mode({ status: 0 });
  });
}

test('key-shaped text of other providers is masked too', async () => {
  await mock.mode({
    status: 400,
    body: '{"error":{"message":"keys sk-proj-abcdefghijklmnop1234 gsk_abcdefghijklmnop1234 xai-abcdefghijklmnop1234 pplx-abcdefghijklmnop1234 AIzaSyabcdefghijklmnop1234567890123 Bearer ya29.abcdefghijklmnop1234 and a task-based plan"}}',
  });
  const res = await chatModel('groq-x');
  const msg = (await res.json()).error.message;
  await mock.mode({ status: 0 });
  for (const s of ['abcdefghijklmnop']) assert.ok(!msg.includes(s), msg);
  assert.match(msg, /task-based plan/);
  assert.match(msg, /sk-\.\.\.1234/);
});

// 18. Retry-After

async function keyOf(provider) {
  const { json } = await adminCall(path.join(dir, 'admin.sock'), 'GET', '/keys');
  const list = Array.isArray(json) ? json : json.keys;
  return list.find((k) => k.provider === provider);
}

for (const [value, want] of [
  ['nan', null], ['inf', null], ['1e300', null], ['-5', null], ['garbage', null],
  ['99999999999999999999999', 60], ['31536000', 60], ['7', 7], ['2.2', 3],
  [() => new Date(Date.now() + 30_000).toUTCString(), 30],
  ['Thu, 01 Jan 1970 00:00:00 GMT', 1],
]) {
  const name = typeof value === 'function' ? 'an HTTP date 30 s ahead' : JSON.stringify(value);
  test(`Retry-After ${name}: ${want === null ? 'ignored' : `rest ${want} s`}, told the same`, async (t) => {
    t.after(() => adminCall(path.join(dir, 'admin.sock'), 'POST', '/keys/rest/0/enable'));
    const sent = typeof value === 'function' ? value() : value;
    await mock.mode({
      status: 429, body: '{"error":{"message":"slow down","type":"rate_limit_error"}}',
      headers: { 'Retry-After': sent },
    });
    const res = await chatModel('rest-1');
    await res.arrayBuffer();
    await mock.mode({ status: 0 });
    assert.equal(res.status, 429);
    assert.match(res.headers.get('x-manifold-provider') || '', /rest/, 'the upstream answered');
    const key = await keyOf('rest');
    assert.equal(key.state, 'ok', 'a 429 rests the key for its model only');
    const k = key.rests.find((r) => r.model === 'rest-1');
    assert.ok(k, JSON.stringify(key));
    if (want === null) {
      assert.equal(res.headers.get('retry-after'), null);
      assert.match(k.why, /without Retry-After/);
    } else {
      const told = Number(res.headers.get('retry-after'));
      // an HTTP date counts from now: a second may pass on the way
      assert.ok(told === want || (sent.includes('GMT') && Math.abs(told - want) <= 1), `told ${told}`);
      assert.match(k.why, new RegExp(`Retry-After ${told * 1000} ms`));
      assert.ok(k.retry_in_ms <= told * 1000);
    }
  });
}

// 24. bounded, log-safe errors

test('the unknown-model 404 quotes a bounded prefix and no config path', async () => {
  const big = 'm'.repeat(1024 * 1024);
  const res = await chatModel(big);
  assert.equal(res.status, 404);
  const text = await res.text();
  assert.ok(text.length < 4096, `404 body is ${text.length} bytes`);
  assert.ok(!text.includes(gw.file) && !text.includes('.yaml'), text);
  assert.match(JSON.parse(text).error.message, /'m{64}\.\.\.'/);
  const res2 = await chatModel('nokey-1');
  assert.equal(res2.status, 503, 'its provider is disabled for lack of a key');
  const text2 = await res2.text();
  assert.match(text2, /provider 'nokey'/);
  assert.ok(!text2.includes('.yaml'));
  const end = Date.now() + 5000;
  while (!/disabled because its keys are empty/.test(gw.stderr) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
  }
  await gw.waitStderr(/provider 'nokey', disabled because its keys are empty: set its key variable in .*manifold\.yaml/);
});

test('access-log lines are valid UTF-8 JSON for a path with raw bytes', async () => {
  const bytes = Buffer.concat([
    Buffer.from('POST /v1/', 'latin1'), Buffer.from([0xff, 0xc3, 0x28]),
    Buffer.from(' HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: rawpath-1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}'),
  ]);
  const out = await raw(gw.port, bytes);
  assert.match(out, /^HTTP\/1\.1 404 /);
  const body = JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4));
  assert.match(body.error.message, /%FF%C3\(/);
  const line = await gw.waitLog((l) => l.request_id === 'rawpath-1');
  assert.equal(line.path, '/v1/%FF%C3(');
  const { readFileSync } = await import('node:fs');
  const rawLog = readFileSync(gw.logFile);
  assert.ok(Buffer.from(rawLog.toString('utf8'), 'utf8').equals(rawLog), 'the access log is valid UTF-8');
});

test('a failed TLS handshake says why, never (null)', async () => {
  const res = await chatModel('tls-1');
  assert.equal(res.status, 502);
  const msg = (await res.json()).error.message;
  assert.match(msg, /TLS handshake with 127\.0\.0\.1:\d+ failed: \S/);
  assert.ok(!msg.includes('(null)'), msg);
});
