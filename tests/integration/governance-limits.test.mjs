// limits: reserve-then-settle budgets, GCRA rates, concurrency leases,
// the headers and errors clients see, streams billed in every ending,
// the ledger, and spend that survives a restart (embedded store).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, path, adminCommand } from './harness.mjs';

let mock, dir, gw, sock;

function gwConfig(mockUrl) {
  return config(mockUrl, {
    stages: `  - { name: auth, plugin: key-auth }
  - name: limits
    plugin: limits
    config: { default_max_tokens: 100 }`,
  }) + `
admin: { socket: ${dir}/admin.sock }
consumers:
  - { name: one-shot, keys: ["k-one-shot"], budget: { tokens: 200, period: month } }
  - { name: rated, keys: ["k-rated"], limits: { rpm: 2 } }
  - { name: narrow, keys: ["k-narrow"], limits: { concurrency: 1 } }
  - { name: payer, keys: ["k-payer"], budget: { usd: 1, period: day } }
  - { name: streamer, keys: ["k-streamer"], budget: { tokens: 100000, period: month } }
prices:
  gpt-4o: { input: 2.5, output: 10 }
`;
}

const command = (name, body) => adminCommand(sock, name, body);

const auth = (k) => ({ authorization: `Bearer ${k}` });

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-lim-'));
  sock = path.join(dir, 'admin.sock');
  gw = await startGateway(gwConfig(mock.url), { dir });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('20 parallel requests against a budget that fits one: exactly one passes', async () => {
  // each request reserves its prompt estimate + 100 (default_max_tokens):
  // one fits 200 tokens, two do not; the upstream holds each answer so
  // that all are admitted while the first is in flight
  const rs = await Promise.all(Array.from({ length: 20 }, () =>
    chat(gw, '[[mock:delay=1500]] hi', {}, auth('k-one-shot'))));
  const ok = rs.filter((r) => r.status === 200);
  const quota = rs.filter((r) => r.status === 429);
  assert.equal(ok.length, 1);
  assert.equal(quota.length, 19);
  const j = await quota[0].json();
  assert.equal(j.error.code, 'insufficient_quota');
  assert.equal(j.error.type, 'insufficient_quota');
  assert.equal(quota[0].headers.get('x-should-retry'), 'false');
  await Promise.all(rs.map((r) => r.text().catch(() => {})));
});

test('rpm: the third request in a minute is 429 with exact Retry-After; successes carry x-ratelimit-*', async () => {
  const a = await chat(gw, 'hi', {}, auth('k-rated'));
  assert.equal(a.status, 200);
  assert.equal(a.headers.get('x-ratelimit-limit-requests'), '2');
  assert.equal(a.headers.get('x-ratelimit-remaining-requests'), '1');
  assert.match(a.headers.get('x-ratelimit-reset-requests'), /^\d+(\.\d+)?m?s$/);
  const b = await chat(gw, 'hi', {}, auth('k-rated'));
  assert.equal(b.status, 200);
  assert.equal(b.headers.get('x-ratelimit-remaining-requests'), '0');
  const c = await chat(gw, 'hi', {}, auth('k-rated'));
  assert.equal(c.status, 429);
  const j = await c.json();
  assert.equal(j.error.code, 'rate_limit_exceeded');
  const ms = Number(c.headers.get('retry-after-ms'));
  assert.ok(ms > 0 && ms <= 30000, `retry-after-ms ${ms}: one request's share of a minute`);
  assert.equal(Number(c.headers.get('retry-after')), Math.ceil(ms / 1000));
  await a.text(); await b.text();
});

test('concurrency: a lease is held while in flight and released exactly once in on_done', async () => {
  const slow = chat(gw, '[[mock:delay=1500]] hi', {}, auth('k-narrow'));
  // wait until the slow one is admitted (it reached the upstream)
  for (let i = 0; i < 200 && (await mock.count()) === 0; i++) await new Promise((r) => setTimeout(r, 10));
  let second;
  for (;;) {
    second = await chat(gw, 'hi', {}, auth('k-narrow'));
    if (second.status !== 200) break;
    await second.text(); // the slow one may not have been admitted yet
  }
  assert.equal(second.status, 429);
  assert.equal((await second.json()).error.code, 'concurrency_limit_exceeded');
  assert.ok(second.headers.get('retry-after'));
  const first = await slow;
  assert.equal(first.status, 200);
  await first.text();
  const done = async (n) => {
    // the lease is released in on_done, which runs after the access log line
    // is queued; wait for n logged answers
    for (let i = 0; i < 500; i++) {
      if (gw.accessLog().filter((l) => l.consumer === 'narrow' && l.status === 200).length >= n) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('no access log line');
  };
  let n = gw.accessLog().filter((l) => l.consumer === 'narrow' && l.status === 200).length;
  await done(Math.max(n, 1));
  // released: the next ones pass one after the other (no lease leaked)
  for (let i = 0; i < 3; i++) {
    n = gw.accessLog().filter((l) => l.consumer === 'narrow' && l.status === 200).length;
    let r;
    do {
      r = await chat(gw, 'hi', {}, auth('k-narrow'));
      // on_done of the one before may still be running
    } while (r.status === 429 && (await r.text()));
    assert.equal(r.status, 200);
    await r.text();
    await done(n + 1);
  }
});

test('a stream cut by the upstream without usage is charged at least its reservation', async () => {
  const before = (await command('budget.show', { args: ['streamer'] })).json.budgets.tokens;
  const r = await chat(gw, '[[mock:chunks=10 cut=2]] hi', { stream: true, max_tokens: 500 }, auth('k-streamer'));
  assert.equal(r.status, 200);
  await r.text().catch(() => {});
  await gw.waitLog((l) => l.consumer === 'streamer');
  const after = (await command('budget.show', { args: ['streamer'] })).json.budgets.tokens;
  const used = after.used - (before ? before.used : 0);
  assert.ok(used >= 500, `charged ${used}, at least the 500 reserved for output`);
  assert.equal(after.reserved, 0);
});

test('a priced model is charged in micro-USD; usage reports it; spend survives a restart', async () => {
  const r = await chat(gw, 'hi', {}, auth('k-payer'));
  assert.equal(r.status, 200);
  const body = await r.json();
  await gw.waitLog((l) => l.consumer === 'payer');
  const expect = Math.ceil(body.usage.prompt_tokens * 2.5 + body.usage.completion_tokens * 10);
  const shown = (await command('budget.show', { args: ['payer'] })).json.budgets.micro_usd;
  assert.equal(shown.used, expect);
  const u = await command('usage', { consumer: 'payer', period: 'day' });
  assert.equal(u.json.total.requests, 1);
  assert.equal(u.json.total.cost_micro_usd, expect);
  assert.equal(u.json.total.unpriced, 0);
  // a model without a price is counted and flagged
  const r2 = await chat(gw, 'hi', { model: 'gpt-3.5-turbo' }, auth('k-payer'));
  assert.equal(r2.status, 200);
  await r2.text();
  await gw.waitLog((l) => l.consumer === 'payer' && l.model === 'gpt-3.5-turbo');
  const u2 = await command('usage', { consumer: 'payer', period: 'day' });
  assert.equal(u2.json.total.requests, 2);
  assert.equal(u2.json.total.unpriced, 1);
  await gw.stop();
  gw = await startGateway(gwConfig(mock.url), { dir });
  const again = (await command('budget.show', { args: ['payer'] })).json.budgets.micro_usd;
  assert.equal(again.used, expect);
  // topping up lets a spent budget pass again
  const ts = await command('budget.topup', { args: ['one-shot', '100000tokens'] });
  assert.equal(ts.status, 200);
  const r3 = await chat(gw, 'hi', {}, auth('k-one-shot'));
  assert.equal(r3.status, 200);
  await r3.text();
});
