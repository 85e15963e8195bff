// Governance settings the gateway accepts do something, or are refused at
// load with a message: sections no stage reads, limits no stage enforces,
// a consumer's group that is not listed, and the limits stage's own
// `key`, `global` and `models` maps (checked as `consumers:` are; a model's
// budget in USD is charged in micro-USD, a key's and the global budget
// are enforced).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, path, writeConfig, spawnSync, BIN, adminCommand } from './harness.mjs';

let mock;

before(async () => { mock = await startMock(); });
after(async () => { await mock.stop(); });

function check(stages, extra) {
  const file = writeConfig(config(mock.url, { stages }) + extra);
  return spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
}

const AUTH = '  - { name: auth, plugin: key-auth }';
const LIMITS = (conf = '{ db: none }') => `  - { name: limits, plugin: limits, config: ${conf} }`;

test('a consumer budget or group limits without the limits stage are refused', () => {
  let r = check(AUTH, `
consumers:
  - { name: a, keys: ["k1"], budget: { usd: 5 } }
`);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /a consumer sets limits or a budget, but no stage enforces them; add the limits stage/);
  r = check(AUTH, `
groups:
  - { name: eng, limits: { rpm: 10 } }
consumers:
  - { name: a, group: eng, keys: ["k1"] }
`);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /a group sets limits or a budget, but no stage enforces them/);
  // with the limits stage both are taken
  r = check(`${AUTH}\n${LIMITS()}`, `
groups:
  - { name: eng, limits: { rpm: 10 } }
consumers:
  - { name: a, group: eng, keys: ["k1"], budget: { usd: 5 } }
`);
  assert.equal(r.status, 0, r.stderr);
});

test('groups no stage reads, and a group name not listed under groups, are refused', () => {
  let r = check('', `
groups:
  - { name: eng }
`);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /groups: no stage reads them/);
  r = check(`${AUTH}\n${LIMITS()}`, `
groups:
  - { name: engineering }
consumers:
  - { name: a, group: enginering, keys: ["k1"] }
`);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /consumers\[0\]\.group: 'enginering' is not one of the groups listed under `groups:`/);
  // without a groups list a group is a label, and any name goes
  r = check(AUTH, `
consumers:
  - { name: a, group: anything, keys: ["k1"] }
`);
  assert.equal(r.status, 0, r.stderr);
});

test('prices no stage reads are refused', () => {
  // the harness's pipeline prices requests in its access log: drop it
  const file = writeConfig(config(mock.url).replace(/  - name: accesslog[\s\S]*$/, '  []\n').replace('stages:\n', 'stages:') + `
prices:
  gpt-4o: { input: 2.5, output: 10 }
`);
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /prices: no stage reads them, so nothing would be priced/);
});

test('the limits stage refuses unknown limits, non-numbers and bad budgets in key, global and models', () => {
  const cases = [
    ['{ models: { "gpt-4o*": { rmp: 60 } } }', /models\.gpt-4o\*: unknown limit 'rmp'/],
    ['{ key: { rpm: "abc" } }', /key\.rpm must be a whole number of at least 1/],
    ['{ global: { concurrency: 0 } }', /global\.concurrency must be a whole number of at least 1/],
    ['{ global: { budget: { usd: 5, period: year } } }', /global\.budget\.period must be day, week, month or total/],
    ['{ key: { budget: { usd: 5, tokens: 10 } } }', /key\.budget needs one of usd .* or tokens/],
    ['{ models: { "gpt-4o*": { budget: { dollars: 5 } } } }', /models\.gpt-4o\*\.budget: unknown key 'dollars'/],
    ['{ models: [1] }', /models must be a map of model patterns/],
  ];
  for (const [conf, re] of cases) {
    const r = check(LIMITS(conf), '');
    assert.notEqual(r.status, 0, conf);
    assert.match(r.stderr, re, conf);
  }
});

test('a model budget in USD is charged in micro-USD; a budget on the key is enforced', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-gcfg-'));
  // gpt-4o: $10 per million output tokens; each request reserves its
  // prompt and 100 output tokens (about $0.001): $50 admits, $0.0001 not
  const gw = await startGateway(config(mock.url, {
    stages: `${AUTH}
${LIMITS(`{ db: none, default_max_tokens: 100,
              models: { "gpt-4o": { budget: { usd: 50 } }, "gpt-4o-mini": { budget: { usd: 0.0001, period: day } } },
              key: { budget: { tokens: 60 } } }`)}`,
  }) + `
consumers:
  - { name: a, keys: ["k-a"] }
  - { name: b, keys: ["k-b"] }
prices:
  gpt-4o: { input: 2.5, output: 10 }
  gpt-4o-mini: { input: 2.5, output: 10 }
`, { dir });
  try {
    const auth = { authorization: 'Bearer k-a' };
    // the key's 60 tokens fit a request capped at 10 output tokens
    let r = await chat(gw, 'hi', { max_tokens: 10 }, auth);
    assert.equal(r.status, 200, await r.clone().text());
    await r.text();
    // 100 output tokens do not fit the key's budget
    r = await chat(gw, 'hi', {}, auth);
    assert.equal(r.status, 429);
    const j = await r.json();
    assert.equal(j.error.code, 'insufficient_quota');
    assert.match(j.error.message, /key/);
    // the model budget in USD: $0.0001 is less than one reservation
    r = await chat(gw, 'hi', { model: 'gpt-4o-mini', max_tokens: 5 }, auth);
    assert.equal(r.status, 429);
    assert.match((await r.json()).error.message, /model/);
    // $50 admits (read as 50 tokens before, it refused every request)
    r = await chat(gw, 'hi', { model: 'gpt-4o', max_tokens: 10 }, { authorization: 'Bearer k-b' });
    assert.equal(r.status, 200, await r.clone().text());
    await r.text();
  } finally {
    await gw.stop();
  }
});

test('default_max_tokens by model: the most specific pattern (an exact name first) gives the output estimate', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-gdmt-'));
  const gw = await startGateway(config(mock.url, {
    stages: `${AUTH}
${LIMITS('{ db: none, default_max_tokens: { "gpt-4o*": 50, "gpt-4o": 5, "*": 1000 } }')}`,
  }) + `
consumers:
  - { name: a, keys: ["k-a"], budget: { tokens: 60 } }
  - { name: b, keys: ["k-b"], budget: { tokens: 60 } }
  - { name: c, keys: ["k-c"], budget: { tokens: 60 } }
`, { dir });
  try {
    // a short prompt (about 20 tokens) and each model's estimate
    const ask = (key, model) => chat(gw, 'hi', { model }, { authorization: `Bearer ${key}` });
    let r = await ask('k-a', 'gpt-4o'); // 5: fits 60
    assert.equal(r.status, 200, await r.clone().text());
    await r.text();
    r = await ask('k-b', 'gpt-4o-mini'); // 50: does not
    assert.equal(r.status, 429);
    assert.equal((await r.json()).error.code, 'insufficient_quota');
    r = await ask('k-c', 'gpt-4.1'); // 1000: does not
    assert.equal(r.status, 429);
    await r.text();
  } finally {
    await gw.stop();
  }
  const bad = check(LIMITS('{ default_max_tokens: { "gpt-4o*": 0 } }'), '');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /default_max_tokens\.gpt-4o\* must be a whole number of at least 1/);
});

test('the usage ledger keeps cache writes as a kind of their own', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-gcw-'));
  const sock = path.join(dir, 'admin.sock');
  const gw = await startGateway(config(mock.url, {
    stages: `${AUTH}
${LIMITS('{}')}`,
    extraProviders: `
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]`,
  }) + `
admin: { socket: ${sock} }
consumers:
  - { name: writer, keys: ["k-w"] }
prices:
  "claude-*": { input: 3, output: 15, cache_write: 3.75 }
`, { dir });
  try {
    const r = await chat(gw, '[[mock:cache_write=20]] hi', { model: 'claude-sonnet-4' }, { authorization: 'Bearer k-w' });
    assert.equal(r.status, 200);
    await r.text();
    let u;
    for (let i = 0; i < 300; i++) {
      u = (await adminCommand(sock, 'usage', { consumer: 'writer', period: 'day' })).json;
      if (u.total.requests === 1) break;
      await new Promise((res) => setTimeout(res, 10));
    }
    assert.equal(u.total.requests, 1);
    assert.equal(u.total.cache_write_tokens, 20);
    assert.equal(u.models[0].cache_write_tokens, 20);
  } finally {
    await gw.stop();
  }
});
