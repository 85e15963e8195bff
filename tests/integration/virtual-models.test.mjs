// Virtual models: a stage declares the model names it serves itself
// (models: on the stage); /v1/models lists them (owned by the stage), as
// do the Gemini and Anthropic lists, /v1/models/{id} knows them, a
// disabled stage's names are not listed (in the config or through the
// admin API), and a request for one is served
// by the stage (here, routed to a real model). A pattern is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, writeConfig, adminCall, spawnSync, BIN, path } from './harness.mjs';

let mock, gw, dir;

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-vmodels-'));
  // picks a real model for "auto" and "auto-cheap"
  writeFileSync(path.join(dir, 'auto.lua'),
    'local mf = require "mf"\n' +
    'local M = { name = "auto", version = "1" }\n' +
    'local pick = { ["auto"] = "gpt-4o", ["auto-cheap"] = "gpt-4o-mini" }\n' +
    'function M.on_request(conf, ctx)\n' +
    '  local m = pick[mf.req.model() or ""]\n' +
    '  if m then mf.req.set_body({ model = m }) end\n' +
    'end\nreturn M\n');
  writeFileSync(path.join(dir, 'off.lua'),
    'local M = { name = "off", version = "1" }\nreturn M\n');
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: auto
    lua: ${dir}/auto.lua
    models: [auto, auto-cheap, gpt-4o]
  - name: off
    lua: ${dir}/off.lua
    enabled: false
    models: [off-model]`,
  }) + `
routes:
  - model: smart
    targets:
      - { provider: openai, model: gpt-4o }
admin: { socket: ${dir}/admin.sock }
`, { dir });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

test('/v1/models lists the models a stage declares, once each', async () => {
  const list = await (await fetch(gw.url + '/v1/models')).json();
  const ids = list.data.map((m) => m.id);
  assert.deepEqual(list.data.find((m) => m.id === 'auto'),
    { id: 'auto', object: 'model', created: 0, owned_by: 'auto' });
  assert.equal(list.data.find((m) => m.id === 'auto-cheap').owned_by, 'auto');
  // a name a provider already lists is listed once, as the provider's
  assert.equal(ids.filter((i) => i === 'gpt-4o').length, 1);
  assert.equal(list.data.find((m) => m.id === 'gpt-4o').owned_by, 'openai');
  // routes are listed too; a disabled stage's models are not
  assert.equal(list.data.find((m) => m.id === 'smart').owned_by, 'manifold');
  assert.ok(!ids.includes('off-model'));
});

test('/v1/models/{id} knows a virtual model; the other lists show it', async () => {
  let res = await fetch(gw.url + '/v1/models/auto-cheap');
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { id: 'auto-cheap', object: 'model', created: 0, owned_by: 'auto' });
  res = await fetch(gw.url + '/v1/models/off-model');
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, 'model_not_found');
  const g = await (await fetch(gw.url + '/v1beta/models')).json();
  assert.ok(g.models.some((m) => m.name === 'models/auto'));
  res = await fetch(gw.url + '/v1beta/models/auto');
  assert.equal(res.status, 200);
  const a = await (await fetch(gw.url + '/v1/models', { headers: { 'anthropic-version': '2023-06-01' } })).json();
  assert.ok(a.data.some((m) => m.id === 'auto' && m.type === 'model'));
});

test('a request for a virtual model is served by the stage', async () => {
  const res = await chat(gw, 'hi', { model: 'auto-cheap' });
  assert.equal(res.status, 200);
  assert.equal(typeof (await res.json()).choices[0].message.content, 'string');
  assert.equal(JSON.parse((await mock.last()).body).model, 'gpt-4o-mini');
});

test('a stage disabled or enabled through the admin API drops or lists its models', async () => {
  const sock = path.join(dir, 'admin.sock');
  const ids = async () => (await (await fetch(gw.url + '/v1/models')).json()).data.map((m) => m.id);
  assert.equal((await adminCall(sock, 'POST', '/stages/auto/disable')).status, 200);
  try {
    assert.ok(!(await ids()).includes('auto'));
    assert.equal((await fetch(gw.url + '/v1/models/auto')).status, 404);
  } finally {
    assert.equal((await adminCall(sock, 'POST', '/stages/auto/enable')).status, 200);
  }
  assert.ok((await ids()).includes('auto'));
  assert.equal((await adminCall(sock, 'POST', '/stages/off/enable')).status, 200);
  assert.ok((await ids()).includes('off-model'));
  assert.equal((await fetch(gw.url + '/v1/models/off-model')).status, 200);
});

test('a stage\'s models must be exact names', () => {
  const file = writeConfig(config(mock.url, {
    stages: `
  - name: auto
    lua: ${dir}/auto.lua
    models: ["auto-*"]`,
  }));
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /models: 'auto-\*' is not a model name/);
});
