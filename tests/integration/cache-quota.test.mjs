// count_quota end to end: a cache hit seen by the `limits` stage. With
// count_quota: false (the default) a hit leaves the consumer's token
// budget untouched; with true it is charged the stored usage, as if the
// upstream had answered. Two gateways (one per setting), key-auth,
// limits and the cache, the budget read with budget.show.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, path, adminCommand } from './harness.mjs';

let mock;
const gws = {};

async function gateway(countQuota) {
  const dir = mkdtempSync(path.join(tmpdir(), `mf-cache-quota-${countQuota}-`));
  const sock = path.join(dir, 'admin.sock');
  const gw = await startGateway(config(mock.url, {
    stages: `  - { name: auth, plugin: key-auth }
  - { name: limits, plugin: limits, config: { default_max_tokens: 100 } }
  - name: cache
    plugin: cache
    config: { scope: consumer, count_quota: ${countQuota} }`,
  }) + `
admin: { socket: ${sock} }
consumers:
  - { name: ann, keys: ["k-ann"], budget: { tokens: 100000, period: month } }
`, { dir });
  return { gw, sock };
}

const auth = { authorization: 'Bearer k-ann' };

async function used(g) {
  const r = await adminCommand(g.sock, 'budget.show', { args: ['ann'] });
  assert.equal(r.status, 200);
  const t = r.json.budgets.tokens; // absent before the first charge
  if (t === undefined) return 0;
  assert.equal(t.reserved, 0, 'nothing left reserved');
  return t.used;
}

// one request, its access-log line awaited (limits settles at its end)
async function ask(g, q, extra = {}) {
  const r = await chat(g.gw, q, extra, auth);
  assert.equal(r.status, 200);
  const text = await r.text();
  const id = r.headers.get('x-request-id');
  const line = await g.gw.waitLog((l) => l.request_id === id);
  return { cache: r.headers.get('x-manifold-cache'), text, line };
}

before(async () => {
  mock = await startMock();
  gws.off = await gateway(false);
  gws.on = await gateway(true);
});

after(async () => {
  await gws.off.gw.stop();
  await gws.on.gw.stop();
  await mock.stop();
});

for (const [name, counted] of [['off', false], ['on', true]]) {
  test(`count_quota: ${counted}: a hit ${counted ? 'is charged its stored usage' : 'leaves the budget untouched'}, whole and stream`, async () => {
    const g = gws[name];
    const q = `how much does a hit cost with count_quota ${counted}`;
    const u0 = await used(g);
    const miss = await ask(g, q);
    assert.equal(miss.cache, 'miss');
    const tokens = miss.line.prompt_tokens + miss.line.completion_tokens;
    assert.ok(tokens > 0);
    const u1 = await used(g);
    assert.equal(u1 - u0, tokens, 'the miss is charged its usage');
    const hit = await ask(g, q);
    assert.equal(hit.cache, 'hit');
    assert.equal(hit.line.cached, true);
    assert.equal(hit.text, miss.text);
    const u2 = await used(g);
    assert.equal(u2 - u1, counted ? tokens : 0);
    // the same from the stored answer as a stream
    const s = await ask(g, q, { stream: true });
    assert.equal(s.cache, 'hit');
    const u3 = await used(g);
    assert.equal(u3 - u2, counted ? tokens : 0);
  });
}
