// Metering with the embedded store: what reaches a model is charged right
// in every ending. A tpm limit holds under concurrent long streams; a
// client that leaves mid-stream pays for what it was sent; a failover is
// one request billed at the answering attempt; include_usage: false does
// not escape metering; embeddings are metered; key, model and global
// scopes and group budgets; the non-loopback warning; and what a kill -9
// of the embedded store can lose.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn } from 'node:child_process';
import { startMock, startGateway, config, chat, post, sleep, path, writeConfig, BIN, adminCommand } from './harness.mjs';

let mock, dir, gw, sock;

function gwConfig(mockUrl) {
  return config(mockUrl, {
    stages: `  - { name: auth, plugin: key-auth }
  - name: limits
    plugin: limits
    config: { default_max_tokens: 100 }`,
  }).replace('stream_idle_timeout: 10s', 'stream_idle_timeout: 2s') + `
admin: { socket: ${dir}/admin.sock }
routes:
  - model: failing-over
    targets: [{ provider: openai, model: "gpt-4o[[mock:status=500]]" }]
    fallback: [{ provider: openai, model: gpt-4o }]
prices:
  gpt-4o: { input: 2.5, output: 10 }
groups:
  - { name: eng, budget: { tokens: 150, period: month } }
consumers:
  - { name: tpm, keys: ["k-tpm"], limits: { tpm: 600 } }
  - { name: leaver, keys: ["k-leaver"], budget: { tokens: 1000000, period: month } }
  - { name: failover, keys: ["k-failover"], budget: { tokens: 1000000, period: month } }
  - { name: quiet, keys: ["k-quiet"], budget: { tokens: 1000000, period: month } }
  - { name: embedder, keys: ["k-embedder"], budget: { tokens: 1000000, period: month } }
  - { name: g1, group: eng, keys: ["k-g1"] }
  - { name: g2, group: eng, keys: ["k-g2"] }
  - { name: plain, keys: ["k-plain"] }
  - { name: wallet, keys: ["k-wallet"], budget: { usd: 2, period: month } }
  - { name: durable, keys: ["k-durable"], budget: { tokens: 100000000, period: month } }
  - { name: stalled, keys: ["k-stalled"], budget: { tokens: 1000000, period: month } }
  - { name: anth, keys: ["k-anth"], budget: { tokens: 1000000, period: month } }
  - { name: resp, keys: ["k-resp"], budget: { tokens: 1000000, period: month } }
  - { name: gem, keys: ["k-gem"], budget: { tokens: 1000000, period: month } }
`;
}

const command = (name, body) => adminCommand(sock, name, body);

const auth = (k) => ({ authorization: `Bearer ${k}` });

async function used(name) {
  const b = (await command('budget.show', { args: [name] })).json.budgets.tokens;
  return b ? b : { used: 0, reserved: 0 };
}

// waits until the consumer's requests are settled (nothing reserved)
async function settled(name, n) {
  for (let i = 0; i < 500; i++) {
    const u = await command('usage', { consumer: name, period: 'month' });
    const b = await used(name);
    if (u.json.total.requests >= n && b.reserved === 0) return u.json.total;
    await sleep(10);
  }
  throw new Error(`${name}: ${n} requests not settled`);
}

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-meter-'));
  sock = path.join(dir, 'admin.sock');
  gw = await startGateway(gwConfig(mock.url), { dir });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('tpm under concurrent long streams stays within the limit plus one estimate', async () => {
  // each stream reserves its estimate (prompt + max_tokens 100) when it is
  // admitted, so concurrent ones cannot all start on a full bucket; each
  // streams 80 tokens over ~1.6 s
  const content = '[[mock:chunks=80 chunk_delay=20]] go';
  const rs = await Promise.all(Array.from({ length: 12 }, () =>
    chat(gw, content, { stream: true, max_tokens: 100 }, auth('k-tpm'))));
  const ok = rs.filter((r) => r.status === 200);
  const refused = rs.filter((r) => r.status === 429);
  await Promise.all(rs.map((r) => r.text()));
  assert.ok(ok.length >= 1 && refused.length >= 1, rs.map((r) => r.status).join(','));
  for (const r of refused) assert.equal(r.headers.get('x-should-retry'), null);
  const total = await settled('tpm', ok.length);
  const tokens = total.prompt_tokens + total.completion_tokens;
  const estimate = Math.floor(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content }], stream: true, max_tokens: 100 }).length / 4) + 1 + 100;
  assert.equal(total.estimated, 0);
  assert.ok(tokens <= 600 + estimate, `${tokens} tokens in a minute against tpm 600 (+${estimate})`);
  // without reservations all 12 would have run: 12 x 80 completion tokens
  assert.ok(ok.length * 80 <= 600 + estimate);
});

test('a client that leaves after k chunks is charged at least prompt + k', async () => {
  const content = '[[mock:chunks=60 chunk_delay=30]] go away';
  // the prompt's size in tokens, as the upstream counts it
  const probe = await chat(gw, content, { max_tokens: 10 }, auth('k-quiet'));
  const prompt = (await probe.json()).usage.prompt_tokens;
  await settled('quiet', 1);
  const before = (await used('leaver')).used;
  const ctl = new AbortController();
  const res = await fetch(gw.url + '/v1/chat/completions', {
    method: 'POST', signal: ctl.signal,
    headers: { 'content-type': 'application/json', ...auth('k-leaver') },
    body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content }] }),
  });
  assert.equal(res.status, 200);
  const k = 5;
  let seen = 0, buf = '';
  const reader = res.body.getReader();
  while (seen < k) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += Buffer.from(value).toString();
    seen = (buf.match(/"content":"[^"]+"/g) || []).length;
  }
  assert.ok(seen >= k);
  ctl.abort();
  const line = await gw.waitLog((l) => l.consumer === 'leaver');
  assert.equal(line.error, 'the client closed the connection');
  assert.equal(line.usage_estimated, true);
  assert.ok(line.completion_tokens >= k, JSON.stringify(line));
  const total = await settled('leaver', 1);
  const charged = (await used('leaver')).used - before;
  assert.ok(charged >= prompt + k, `charged ${charged} < prompt ${prompt} + ${k}`);
  // unknown usage never refunds: at least the reservation (prompt estimate + 100)
  assert.ok(charged >= 100, `charged ${charged}`);
  assert.equal(total.estimated, 1);
});

test('a failover is one request, billed at the attempt that answered', async () => {
  const before = (await used('failover')).used;
  const r = await chat(gw, 'hi', { model: 'failing-over' }, auth('k-failover'));
  assert.equal(r.status, 200);
  const body = await r.json();
  const line = await gw.waitLog((l) => l.consumer === 'failover');
  assert.match(line.tried, /:500 .*:ok/);
  const total = await settled('failover', 1);
  assert.equal(total.requests, 1);
  assert.equal(total.estimated, 0);
  assert.equal((await used('failover')).used - before, body.usage.prompt_tokens + body.usage.completion_tokens);
});

test('include_usage: false from a client does not escape metering', async () => {
  const before = (await used('quiet')).used;
  const r = await chat(gw, '[[mock:chunks=7]] hi', { stream: true, stream_options: { include_usage: false } }, auth('k-quiet'));
  assert.equal(r.status, 200);
  const text = await r.text();
  // the client gets no usage chunk, as it asked ...
  assert.ok(!/"usage":\{/.test(text), text);
  // ... but the upstream was asked for usage, and it was charged as reported
  const last = await mock.last();
  assert.equal(JSON.parse(last.body).stream_options.include_usage, true);
  const total = await settled('quiet', 2);
  assert.equal(total.estimated, 0);
  const charged = (await used('quiet')).used - before;
  assert.ok(charged >= 7, `charged ${charged}`);
  assert.ok(charged < 100, `charged ${charged}: the reported usage, not the reservation`);
});

test('a stream the upstream stops feeding is ended at stream_idle_timeout and charged at least its reservation', async () => {
  const before = (await used('stalled')).used;
  const r = await chat(gw, '[[mock:chunks=5 chunk_delay=8000]] wait', { stream: true }, auth('k-stalled'));
  assert.equal(r.status, 200);
  const text = await r.text();
  // the client got the first chunk, then an in-stream error, no [DONE]
  assert.match(text, /"content":/);
  assert.match(text, /"error":/);
  assert.doesNotMatch(text, /\[DONE\]/);
  const line = await gw.waitLog((l) => l.consumer === 'stalled');
  assert.equal(line.usage_estimated, true);
  const total = await settled('stalled', 1);
  assert.equal(total.estimated, 1);
  // unknown usage never refunds: the reservation (prompt estimate + 100)
  const charged = (await used('stalled')).used - before;
  assert.ok(charged >= 100);
  // and the access log says what was charged, not less
  assert.equal(line.prompt_tokens + line.completion_tokens, charged);
  assert.equal(total.prompt_tokens + total.completion_tokens, charged);
});

test('Messages, Responses and Gemini-native calls are metered as reported', async () => {
  const cases = [
    ['anth', async () => {
      const r = await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 50, messages: [{ role: 'user', content: 'hello there' }] },
        { 'x-api-key': 'k-anth', 'anthropic-version': '2023-06-01' });
      assert.equal(r.status, 200);
      const u = (await r.json()).usage;
      return u.input_tokens + u.output_tokens;
    }],
    ['resp', async () => {
      const r = await post(gw, '/v1/responses', { model: 'gpt-4o', input: 'hello there' }, auth('k-resp'));
      assert.equal(r.status, 200);
      const u = (await r.json()).usage;
      return u.input_tokens + u.output_tokens;
    }],
    ['gem', async () => {
      const r = await post(gw, '/v1beta/models/gpt-4o:generateContent', { contents: [{ role: 'user', parts: [{ text: 'hello there' }] }] },
        { 'x-goog-api-key': 'k-gem' });
      assert.equal(r.status, 200);
      return (await r.json()).usageMetadata.totalTokenCount;
    }],
  ];
  for (const [name, call] of cases) {
    const before = (await used(name)).used;
    const tokens = await call();
    assert.ok(tokens > 0, name);
    const total = await settled(name, 1);
    assert.equal(total.estimated, 0, name);
    assert.equal((await used(name)).used - before, tokens, name);
  }
});

test('embeddings are metered', async () => {
  const r = await post(gw, '/v1/embeddings', { model: 'text-embedding-3-small', input: ['a b c', 'd e f'] }, auth('k-embedder'));
  assert.equal(r.status, 200);
  const body = await r.json();
  const total = await settled('embedder', 1);
  assert.equal(total.prompt_tokens, body.usage.prompt_tokens);
  assert.equal((await used('embedder')).used, body.usage.prompt_tokens);
});

test('a consumer without limits or budget is still in the ledger', async () => {
  const r = await chat(gw, 'hi', {}, auth('k-plain'));
  assert.equal(r.status, 200);
  const body = await r.json();
  for (let i = 0; i < 500; i++) {
    const u = await command('usage', { consumer: 'plain', period: 'day' });
    if (u.json.total.requests === 1) {
      assert.equal(u.json.total.prompt_tokens, body.usage.prompt_tokens);
      assert.equal(u.json.total.cost_micro_usd, Math.ceil(body.usage.prompt_tokens * 2.5 + body.usage.completion_tokens * 10));
      return;
    }
    await sleep(10);
  }
  assert.fail('no ledger row');
});

test('billing endpoints (OneAPI shapes) answer for the calling key', async () => {
  const get = async (p, key) => {
    const r = await fetch(gw.url + p, { headers: key ? auth(key) : {} });
    return [r.status, await r.json()];
  };
  // a USD budget: its size, and what the period spent, in cents
  let [st, sub] = await get('/v1/dashboard/billing/subscription', 'k-wallet');
  assert.equal(st, 200);
  assert.equal(sub.object, 'billing_subscription');
  assert.equal(sub.hard_limit_usd, 2);
  assert.equal(sub.soft_limit_usd, 2);
  assert.equal(sub.system_hard_limit_usd, 2);
  assert.equal(sub.has_payment_method, true);
  let [, use] = await get('/v1/dashboard/billing/usage?start_date=2026-12-01&end_date=2026-12-31', 'k-wallet');
  assert.deepEqual(use, { object: 'list', total_usage: 0 });
  const r = await chat(gw, 'hi', {}, auth('k-wallet'));
  const body = await r.json();
  const cost = Math.ceil(body.usage.prompt_tokens * 2.5 + body.usage.completion_tokens * 10);
  await settled('wallet', 1);
  [st, use] = await get('/dashboard/billing/usage', 'k-wallet');
  assert.equal(st, 200);
  assert.equal(use.total_usage, cost / 1e4);
  // a top-up raises the limit a client sees
  assert.equal((await command('budget.topup', { args: ['wallet', '1usd'] })).status, 200);
  [, sub] = await get('/dashboard/billing/subscription', 'k-wallet');
  assert.equal(sub.hard_limit_usd, 3);
  // no budget: unlimited, and the month's cost; the key may come in the query
  [st, sub] = await get('/v1/dashboard/billing/subscription?key=k-plain');
  assert.equal(st, 200);
  assert.equal(sub.hard_limit_usd, 100000000);
  [, use] = await get('/v1/dashboard/billing/usage', 'k-plain');
  assert.ok(use.total_usage > 0, JSON.stringify(use));
  // no key, a wrong key: 401 in OpenAI's shape
  [st, sub] = await get('/v1/dashboard/billing/usage');
  assert.equal(st, 401);
  assert.equal(sub.error.code, 'missing_api_key');
  [st, sub] = await get('/v1/dashboard/billing/subscription', 'k-nobody');
  assert.equal(st, 401);
  assert.equal(sub.error.code, 'invalid_api_key');
});

test('a group budget is shared by its consumers', async () => {
  // g1's request holds ~110 of the group's 150 tokens while in flight
  const first = chat(gw, '[[mock:delay=800]] hi', {}, auth('k-g1'));
  for (let i = 0; i < 200; i++) {
    const shown = (await command('budget.show', { args: ['eng'], group: true })).json.budgets.tokens;
    if (shown && shown.reserved > 0) break;
    await sleep(5);
  }
  const second = await chat(gw, 'hi', {}, auth('k-g2'));
  assert.equal(second.status, 429);
  const j = await second.json();
  assert.equal(j.error.code, 'insufficient_quota');
  assert.match(j.error.message, /group:eng/);
  assert.equal((await first).status, 200);
});

test('key, model and global scopes each limit on their own', async () => {
  const d = mkdtempSync(path.join(tmpdir(), 'mf-scopes-'));
  const g = await startGateway(config(mock.url, {
    stages: `  - { name: auth, plugin: key-auth, config: { db: none, secret: "scopes-test-secret-0123456789" } }
  - name: limits
    plugin: limits
    config:
      db: none
      key: { rpm: 3 }
      models: { "gpt-4o-mini*": { rpm: 1 } }
      global: { rpm: 5 }`,
  }) + `
consumers:
  - { name: multi, keys: ["k-one", "k-two"] }
`, { dir: d });
  try {
    const ask = async (key, model) => {
      const r = await chat(g, 'hi', { model }, auth(key));
      const b = await r.json();
      return [r.status, r.status === 429 ? b.error.message : ''];
    };
    for (let i = 0; i < 3; i++) assert.equal((await ask('k-one', 'gpt-4o'))[0], 200);
    const [s1, m1] = await ask('k-one', 'gpt-4o');
    assert.equal(s1, 429);
    assert.match(m1, /of key:c[0-9a-f]{11} /);
    // the consumer's other key is a scope of its own
    assert.equal((await ask('k-two', 'gpt-4o-mini'))[0], 200);
    const [s2, m2] = await ask('k-two', 'gpt-4o-mini');
    assert.equal(s2, 429);
    assert.match(m2, /of model:gpt-4o-mini\* /);
    assert.equal((await ask('k-two', 'gpt-4o'))[0], 200);
    const [s3, m3] = await ask('k-two', 'gpt-4o');
    assert.equal(s3, 429);
    assert.match(m3, /of global /);
  } finally {
    await g.stop();
  }
});

test('a non-loopback listener without an auth stage logs a loud warning; with key-auth it does not', async () => {
  const run = async (stages) => {
    const d = mkdtempSync(path.join(tmpdir(), 'mf-open-'));
    const file = writeConfig(config(mock.url, { stages }) + 'consumers:\n  - { name: x, keys: ["k-x"] }\n'.repeat(stages ? 1 : 0), d);
    const proc = spawn(BIN, ['-c', file, '--listen', '0.0.0.0:0', '--workers', '1'], { cwd: d, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr.on('data', (c) => { err += c; });
    for (let i = 0; i < 500 && !/listening on [^ ]+:[1-9]/.test(err); i++) await sleep(10);
    proc.kill('SIGTERM');
    await new Promise((r) => proc.on('exit', r));
    return err;
  };
  const open = await run('');
  assert.match(open, /listening on [^ ]+:[1-9]/);
  const warned = open.match(/warn the listener on 0\.0\.0\.0:\d+ is not a loopback one and has no auth stage[^\n]*anyone who reaches the port spends every provider key/g) || [];
  assert.equal(warned.length, 1, open);
  assert.equal((open.match(/spends every provider key/g) || []).length, 1, 'said once, not by two parts of the start: ' + open);
  const guarded = await run('  - { name: auth, plugin: key-auth, config: { db: none, secret: "warning-test-secret-0123" } }');
  assert.match(guarded, /listening on [^ ]+:[1-9]/);
  assert.doesNotMatch(guarded, /auth stage|no stage checks requests/);
});

test('kill -9 of the embedded store loses no settled spend but that of the last moments', async () => {
  const costs = [];
  for (let i = 0; i < 10; i++) {
    if (i === 9) {
      // the writer commits a batch by itself (group commit: a few ms
      // after the oldest record of it, no flush asked): wait until nothing
      // of the first nine is left unwritten, reading without flushing
      for (let k = 0; ; k++) {
        const s = (await command('budget.show', { args: ['durable'] })).json;
        assert.equal(s.store, 'local');
        if (s.unwritten === 0) break;
        assert.ok(k < 500, `the writer left ${s.unwritten} records unwritten`);
        await sleep(10);
      }
    }
    const r = await chat(gw, 'hi', {}, auth('k-durable'));
    const b = await r.json();
    costs.push(b.usage.prompt_tokens + b.usage.completion_tokens);
    await gw.waitLog((l) => l.consumer === 'durable' && gw.accessLog().filter((x) => x.consumer === 'durable').length > i);
  }
  // no clean stop: the writer gets no chance to drain
  gw.proc.kill('SIGKILL');
  await new Promise((r) => (gw.proc.exitCode !== null || gw.proc.signalCode !== null ? r() : gw.proc.on('exit', r)));
  gw = await startGateway(gwConfig(mock.url), { dir });
  const after = (await used('durable')).used;
  const all = costs.reduce((a, b) => a + b, 0);
  // docs/GOVERNANCE.md: what the writer had not committed, the settlements
  // of the last few ms; here at most the last request's, the first nine
  // were committed
  assert.ok(after <= all, `${after} > ${all}`);
  assert.ok(after >= all - costs[costs.length - 1], `lost ${all - after} of ${all}`);
});

test('a clean stop (SIGTERM) writes every settlement the writer still held', async () => {
  const before = (await used('durable')).used;
  const rows = (await command('usage', { consumer: 'durable', period: 'month' })).json.total.requests;
  const logged = gw.accessLog().filter((x) => x.consumer === 'durable').length;
  // settled together: they wait in one group-commit window
  const rs = await Promise.all(Array.from({ length: 8 }, () => chat(gw, 'hi', {}, auth('k-durable'))));
  const bodies = await Promise.all(rs.map((r) => r.json()));
  const sum = bodies.reduce((a, b) => a + b.usage.prompt_tokens + b.usage.completion_tokens, 0);
  await gw.waitLog(() => gw.accessLog().filter((x) => x.consumer === 'durable').length >= logged + 8);
  await gw.stop();
  gw = await startGateway(gwConfig(mock.url), { dir });
  assert.equal((await used('durable')).used, before + sum);
  const u = await command('usage', { consumer: 'durable', period: 'month' });
  assert.equal(u.json.total.requests, rows + 8);
});
