// upstream_models: a provider configured with globs can have /v1/models
// list the upstream's own models that its globs serve, fetched in the
// background (GET base_url + path with its first key, in each type's
// shape: OpenAI's, Anthropic's with anthropic-version, Gemini's), kept
// and refreshed. Off unless configured; the settings are checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, writeConfig, spawnSync, BIN, sleep } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: globby
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-globby-0123456789"]
    models: ["mock-*"]
    upstream_models: { refresh: 10s }
  - name: ant
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-list-0123456789"]
    models: ["mock-model-l*"]
    upstream_models: { refresh: 10s }
  - name: gem
    type: gemini
    base_url: ${mock.url}
    keys: ["AIza-list-0123456789"]
    models: ["gemini-mock-*"]
    upstream_models: { refresh: 10s }
  - name: quiet
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-quiet-0123456789"]
    models: ["other-*"]`,
  }));
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

async function ids() {
  return (await (await fetch(gw.url + '/v1/models')).json()).data;
}

test('/v1/models lists what the globs serve of each upstream\'s list', async () => {
  let data;
  for (let i = 0; ; i++) {
    data = await ids();
    const have = new Set(data.map((m) => m.id));
    if (['mock-model', 'mock-model-large', 'gemini-mock-pro', 'gemini-mock-flash'].every((m) => have.has(m))) break;
    assert.ok(i < 200, `the lists were not fetched: ${[...have].join(',')}`);
    await sleep(50);
  }
  const owner = (id) => data.filter((m) => m.id === id).map((m) => m.owned_by);
  assert.deepEqual(owner('mock-model'), ['globby']);
  assert.deepEqual(owner('mock-model-large'), ['globby'], 'once, as the first provider\'s');
  assert.deepEqual(owner('gemini-mock-pro'), ['gem']);
  assert.deepEqual(owner('gemini-mock-flash'), ['gem']);
  // what no glob serves is not listed; a provider without upstream_models lists nothing of it
  assert.deepEqual(owner('other-model'), []);
  assert.deepEqual(owner('text-mock-embed'), []);
  // the Anthropic-shaped and Gemini-shaped lists show them too
  const a = await (await fetch(gw.url + '/v1/models', { headers: { 'anthropic-version': '2023-06-01' } })).json();
  assert.ok(a.data.some((m) => m.id === 'gemini-mock-pro' && m.type === 'model'));
  const g = await (await fetch(gw.url + '/v1beta/models')).json();
  assert.ok(g.models.some((m) => m.name === 'models/mock-model-large'));

  // each fetch in its provider's shape
  const reqs = await (await fetch(`${mock.url}/_mock/requests`)).json();
  const got = (p) => reqs.filter((q) => q.path === p);
  const openai = got('/v1/models').find((q) => q.headers.authorization);
  assert.equal(openai.headers.authorization, 'Bearer sk-globby-0123456789');
  const ant = got('/v1/models').find((q) => q.headers['x-api-key']);
  assert.equal(ant.headers['x-api-key'], 'sk-ant-list-0123456789');
  assert.equal(ant.headers['anthropic-version'], '2023-06-01');
  assert.equal(got('/v1beta/models')[0].headers['x-goog-api-key'], 'AIza-list-0123456789');
  assert.ok(!reqs.some((q) => q.headers.authorization === 'Bearer sk-quiet-0123456789'), 'off unless configured');
});

test('upstream_models settings are checked', () => {
  for (const [entry, msg] of [
    ['upstream_models: {}', /upstream_models needs refresh/],
    ['upstream_models: { refresh: 1s }', /upstream_models\.refresh must be 10s or more/],
    ['upstream_models: { refresh: 1m, every: 2 }', /unknown key 'every'/],
    ['upstream_models: { refresh: 1m, path: models }', /upstream_models\.path must start with \//],
    ['upstream_models: yes', /upstream_models must be a map/],
  ]) {
    const file = writeConfig(config(mock.url, { providerExtra: `    ${entry}` }));
    const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, entry);
    assert.match(r.stderr, msg);
  }
  const file = writeConfig(config(mock.url, { extraProviders: `
  - name: br
    type: bedrock
    base_url: ${mock.url}
    models: ["anthropic.*"]
    upstream_models: { refresh: 1m }` }));
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /upstream_models is not served for type bedrock/);
});
