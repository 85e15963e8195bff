// The AI cache's semantic layer (plugins/cache, `semantic:`): an exact
// miss embeds the last user message and a near question of the same
// partition answers. The mock's "bow" embeddings are a 64-dimension bag
// of words, so "near" means "shares most words": the threshold here is
// 0.9, which a question reordered or with one filler word more passes
// (cosine 1 and about 0.93 on bags of 7 to 14 words) and a different
// question does not. The guards (negations, numbers) are tested on
// pairs whose cosine is above the threshold (computed below the same
// way the mock does), so only the guard can make them miss.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, post, path, writeConfig, spawnSync, BIN, adminCommand } from './harness.mjs';

const THRESHOLD = 0.9;
let mock, dir, gw, sock;

function gwConfig(mockUrl, semantic) {
  return config(mockUrl, {
    stages: `  - name: cache
    plugin: cache
    config:
      ttl: 1h
      semantic: ${semantic}`,
  }) + `
admin: { socket: ${dir}/admin.sock }
`;
}

// The mock's bag of words (tests/mock/mock.c): FNV-1a of each word of
// letters and digits, lower-cased, adds 1 to dimension hash % 64.
function bow(s) {
  const v = new Array(64).fill(0);
  for (const w of s.toLowerCase().match(/[a-z0-9]+/g) || []) {
    let h = 2166136261;
    for (const ch of w) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
    v[h % 64] += 1;
  }
  return v;
}
function cosine(a, b) {
  const x = bow(a), y = bow(b);
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < 64; i++) { d += x[i] * y[i]; na += x[i] * x[i]; nb += y[i] * y[i]; }
  return d / Math.sqrt(na * nb);
}

function ask(g, content, { system, extra = {}, headers = {} } = {}) {
  const messages = system ? [{ role: 'system', content: system }] : [];
  messages.push({ role: 'user', content });
  return post(g, '/v1/chat/completions', { model: 'gpt-4o', messages, ...extra }, headers);
}

// A miss whose answer is stored (the access log has its line).
async function seed(g, q, opts) {
  const a = await ask(g, q, opts);
  assert.equal(a.status, 200);
  assert.equal(a.headers.get('x-manifold-cache'), 'miss');
  const body = await a.json();
  await g.waitLog((l) => l.request_id === a.headers.get('x-request-id') &&
      l.path === '/v1/chat/completions');
  return body;
}

const command = (name, body) => adminCommand(sock, name, body);

async function counted(fn) {
  const before = await mock.count();
  const out = await fn();
  return { out, calls: (await mock.count()) - before };
}

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-sem-'));
  sock = path.join(dir, 'admin.sock');
  gw = await startGateway(gwConfig(mock.url,
    `{ model: text-embedding-bow, threshold: ${THRESHOLD}, timeout: 2s, max_entries: 1000 }`), { dir });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('a paraphrase (reordered, a filler word more) is a semantic hit, with its similarity', async () => {
  const q = 'What is the capital city of France?';
  const ja = await seed(gw, q);
  // reordered: the same bag of words
  const { out: b, calls } = await counted(() => ask(gw, 'the capital city of France is what'));
  assert.equal(b.status, 200);
  assert.equal(b.headers.get('x-manifold-cache'), 'hit');
  assert.equal(b.headers.get('x-manifold-cache-layer'), 'semantic');
  assert.ok(Number(b.headers.get('x-manifold-cache-similarity')) > 0.999);
  assert.equal(calls, 1, 'the embeddings call only: no chat call');
  const jb = await b.json();
  assert.deepEqual(jb.choices, ja.choices);
  // (the embeddings call has a line of its own, with the same request id)
  const line = await gw.waitLog((l) => l.request_id === b.headers.get('x-request-id') &&
    l.path === '/v1/chat/completions');
  assert.equal(line.cached, true);
  assert.equal(line.attempts, 0);
  // one filler word more
  const p = 'what is the capital city of france today';
  const cos = cosine(q, p);
  assert.ok(cos >= THRESHOLD && cos < 0.999, `cosine ${cos}`);
  const c = await ask(gw, p);
  assert.equal(c.headers.get('x-manifold-cache'), 'hit');
  assert.equal(c.headers.get('x-manifold-cache-layer'), 'semantic');
  assert.ok(Math.abs(Number(c.headers.get('x-manifold-cache-similarity')) - cos) < 0.001);
  assert.deepEqual((await c.json()).choices, ja.choices);
  // a different question sharing a few words is a miss
  const d = await ask(gw, 'what is the population of france');
  assert.equal(d.headers.get('x-manifold-cache'), 'miss');
  await d.text();
});

test('"turn on" vs "turn off": near by cosine, a miss by the negation guard', async () => {
  const on = 'please turn on the big kitchen light in the house right now for me';
  const off = 'please turn off the big kitchen light in the house right now for me';
  assert.ok(cosine(on, off) >= THRESHOLD, `cosine ${cosine(on, off)}`);
  await seed(gw, on);
  const b = await ask(gw, off);
  assert.equal(b.headers.get('x-manifold-cache'), 'miss');
  await b.text();
  // the same polarity, reordered, still hits
  const c = await ask(gw, 'please turn on the big kitchen light in the house for me right now');
  assert.equal(c.headers.get('x-manifold-cache'), 'hit');
  assert.equal(c.headers.get('x-manifold-cache-layer'), 'semantic');
  await c.text();
  // "don't" against its absence
  const keep = 'please keep the big garden gate in the yard closed tonight for me';
  const dont = "please don't keep the big garden gate in the yard closed tonight for me";
  assert.ok(cosine(keep, dont) >= THRESHOLD, `cosine ${cosine(keep, dont)}`);
  await seed(gw, keep);
  const d = await ask(gw, dont);
  assert.equal(d.headers.get('x-manifold-cache'), 'miss');
  await d.text();
});

test('a changed number is a miss', async () => {
  const a = 'what is the sum of 12 and 7 explained in simple words for a young child please';
  const b = 'what is the sum of 12 and 8 explained in simple words for a young child please';
  assert.ok(cosine(a, b) >= THRESHOLD, `cosine ${cosine(a, b)}`);
  await seed(gw, a);
  const r = await ask(gw, b);
  assert.equal(r.headers.get('x-manifold-cache'), 'miss');
  await r.text();
  const same = await ask(gw, 'what is the sum of 12 and 7 explained in simple words for a young child');
  assert.equal(same.headers.get('x-manifold-cache'), 'hit');
  await same.text();
});

test('another system prompt (another partition) is a miss; the same one hits', async () => {
  const q = 'name three famous rivers of south america';
  await seed(gw, q, { system: 'You are a terse geography tutor.' });
  const b = await ask(gw, 'name three famous rivers of south america please', { system: 'You are a pirate.' });
  assert.equal(b.headers.get('x-manifold-cache'), 'miss');
  await b.text();
  const c = await ask(gw, 'name three famous rivers of south america please', { system: 'You are a terse geography tutor.' });
  assert.equal(c.headers.get('x-manifold-cache'), 'hit');
  assert.equal(c.headers.get('x-manifold-cache-layer'), 'semantic');
  await c.text();
  // other parameters are their own partition too
  const d = await ask(gw, 'name three famous rivers of south america please',
    { system: 'You are a terse geography tutor.', extra: { max_tokens: 7 } });
  assert.equal(d.headers.get('x-manifold-cache'), 'miss');
  await d.text();
});

test('tools and a temperature above the bound skip the layer (no embeddings call)', async () => {
  const q = 'describe the weather on the planet mars in winter';
  await seed(gw, q);
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } }];
  let r = await counted(() => ask(gw, 'describe the weather on the planet mars in winter please', { extra: { tools } }));
  assert.equal(r.out.headers.get('x-manifold-cache'), 'miss');
  assert.equal(r.calls, 1, 'the chat call only');
  await r.out.text();
  r = await counted(() => ask(gw, 'describe the weather on the planet mars in winter please', { extra: { temperature: 1.5 } }));
  assert.equal(r.out.headers.get('x-manifold-cache'), 'miss');
  assert.equal(r.calls, 1, 'the chat call only');
  await r.out.text();
});

test('stats count semantic entries and hits', async () => {
  const r = await command('cache.stats', {});
  assert.equal(r.status, 200);
  assert.ok(r.json.semantic_entries >= 5, JSON.stringify(r.json));
  assert.ok(r.json.semantic_hits >= 5, JSON.stringify(r.json));
  assert.equal(r.json.semantic_failures, 0);
});

test('an embeddings failure is a miss (fail open), counted', async () => {
  const d2 = mkdtempSync(path.join(tmpdir(), 'mf-sem-'));
  const g = await startGateway(config(mock.url, {
    stages: `  - name: cache
    plugin: cache
    config: { semantic: { model: text-embedding-bow-status-500, threshold: ${THRESHOLD} } }`,
  }) + `admin: { socket: ${d2}/admin.sock }\n`, { dir: d2 });
  try {
    const q = 'which ocean is the deepest on earth';
    const a = await ask(g, q);
    assert.equal(a.status, 200);
    assert.equal(a.headers.get('x-manifold-cache'), 'miss');
    await a.text();
    await g.waitStderr(/semantic layer's embeddings call failed/);
    await g.waitLog((l) => l.request_id === a.headers.get('x-request-id') &&
      l.path === '/v1/chat/completions');
    // the exact layer still answers
    const b = await ask(g, q);
    assert.equal(b.headers.get('x-manifold-cache'), 'hit');
    assert.equal(b.headers.get('x-manifold-cache-layer'), 'exact');
    await b.text();
    const c = await ask(g, 'which ocean is the deepest on earth today');
    assert.equal(c.status, 200);
    assert.equal(c.headers.get('x-manifold-cache'), 'miss');
    await c.text();
  } finally {
    await g.stop();
  }
});

test('manifold -t refuses a semantic config that cannot work, with the reason', () => {
  const bad = (conf, extra = '') => {
    const file = writeConfig(config(mock.url, { stages: `  - { name: cache, plugin: cache, config: ${conf} }` }) + extra);
    return spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  };
  let r = bad('{ semantic: { threshold: 0.9 } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /semantic.model \(the embeddings model\) is required/);
  r = bad('{ semantic: { model: text-embedding-bow, threshold: 1.5 } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /semantic.threshold must be/);
  r = bad('{ semantic: { model: text-embedding-bow, k: 3 } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /unknown setting semantic.k/);
  // with `redis:` the layer works (its index is fed from a stream)
  r = bad('{ semantic: { model: text-embedding-bow } }', 'redis: { host: 127.0.0.1, port: 1, timeout: 500ms }\n');
  assert.equal(r.status, 0, r.stderr);
  // calls that cannot be served: no such model, no such provider, a
  // provider (or a route's only provider) without embeddings, a disabled one
  const claude = `
  - name: claude
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]
  - name: off
    type: openai
    base_url: ${mock.url}/v1
    keys: [""]
    models: ["off-embed-*"]`;
  const bad2 = (conf, extra = '') => {
    const file = writeConfig(config(mock.url, { extraProviders: claude,
      stages: `  - { name: cache, plugin: cache, config: ${conf} }` }) + extra);
    return spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  };
  r = bad2('{ semantic: { model: no-such-embedder } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /semantic.model 'no-such-embedder' cannot be embedded with: no route or enabled provider serving embeddings lists the model 'no-such-embedder'/);
  r = bad2('{ semantic: { model: text-embedding-bow, provider: nobody } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /no provider is named 'nobody'/);
  r = bad2('{ semantic: { model: claude-embed, provider: claude } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /provider 'claude' serves no embeddings/);
  r = bad2('{ semantic: { model: claude-3-embed } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /no route or enabled provider serving embeddings lists the model 'claude-3-embed'/);
  r = bad2('{ semantic: { model: off-embed-1 } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /no route or enabled provider serving embeddings/);
  r = bad2('{ semantic: { model: embedder } }', `routes:
  - model: embedder
    targets: [{ provider: claude, model: claude-3-embed }]
`);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /the route 'embedder' has no enabled provider serving embeddings/);
  r = bad2('{ semantic: { model: embedder } }', `routes:
  - model: embedder
    targets: [{ provider: claude, model: claude-3-embed }]
    fallback: [{ provider: openai, model: text-embedding-bow }]
`);
  assert.equal(r.status, 0, r.stderr);
  r = bad('{ semantic: { model: text-embedding-bow, provider: openai, threshold: 0.9, timeout: 1s, max_entries: 50, max_temperature: 0.5 } }');
  assert.equal(r.status, 0, r.stderr);
  // past the size the linear index is measured at
  r = bad('{ semantic: { model: text-embedding-bow, max_entries: 100001 } }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /semantic\.max_entries must be a count from 1 to 100000/);
  r = bad('{ semantic: { model: text-embedding-bow, max_entries: 100000 } }');
  assert.equal(r.status, 0, r.stderr);
});
