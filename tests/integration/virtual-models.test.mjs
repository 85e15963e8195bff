// Virtual models: a stage declares the model names it serves itself
// (models: on the stage, or in its own code: mf.models.declare in Lua,
// api->declare_model in C); /v1/models lists them (owned by the stage), as
// do the Gemini and Anthropic lists, /v1/models/{id} knows them, a
// disabled stage's names are not listed (in the config or through the
// admin API), and a request for one is served
// by the stage (here, routed to a real model). A pattern is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, writeConfig, adminCall, spawnSync, BIN, BUILD, path } from './harness.mjs';

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
  // declares its names itself
  writeFileSync(path.join(dir, 'router.lua'),
    'local mf = require "mf"\n' +
    'local M = { name = "router", version = "1" }\n' +
    'mf.models.declare{ "lua-auto", "lua-fast" }\n' +
    'mf.models.declare("lua-auto")\n' +
    'function M.on_request(conf, ctx)\n' +
    '  if mf.req.model() == "lua-auto" then mf.req.set_body({ model = "gpt-4o" }) end\n' +
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
    models: [off-model]
  - name: router
    lua: ${dir}/router.lua
  - name: cstage
    plugin: ${BUILD}/tests/fixtures/modelcall.so`,
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

test('models a stage declares in its code are listed like its models:', async () => {
  const list = await (await fetch(gw.url + '/v1/models')).json();
  const of = (id) => list.data.filter((m) => m.id === id);
  assert.deepEqual(of('lua-auto'), [{ id: 'lua-auto', object: 'model', created: 0, owned_by: 'router' }]);
  assert.equal(of('lua-fast')[0].owned_by, 'router');
  assert.equal(of('c-chat')[0].owned_by, 'cstage');
  assert.equal(of('c-embed')[0].owned_by, 'cstage');
  assert.equal(list.data.filter((m) => m.id.startsWith('c-')).length, 2, 'a pattern is not declared');
  let res = await fetch(gw.url + '/v1/models/lua-fast');
  assert.equal(res.status, 200);
  assert.equal((await res.json()).owned_by, 'router');
  const g = await (await fetch(gw.url + '/v1beta/models')).json();
  assert.ok(g.models.some((m) => m.name === 'models/c-chat'));
  // served by the stage
  res = await chat(gw, 'hi', { model: 'lua-auto' });
  assert.equal(res.status, 200);
  await res.json();
  assert.equal(JSON.parse((await mock.last()).body).model, 'gpt-4o');
  // and dropped while it is disabled
  const sock = path.join(dir, 'admin.sock');
  assert.equal((await adminCall(sock, 'POST', '/stages/router/disable')).status, 200);
  try {
    const ids = (await (await fetch(gw.url + '/v1/models')).json()).data.map((m) => m.id);
    assert.ok(!ids.includes('lua-auto') && ids.includes('c-chat'));
    assert.equal((await fetch(gw.url + '/v1/models/lua-auto')).status, 404);
  } finally {
    assert.equal((await adminCall(sock, 'POST', '/stages/router/enable')).status, 200);
  }
});

test('mf.models.declare takes exact names, at the top level only', async () => {
  writeFileSync(path.join(dir, 'bad.lua'),
    'local mf = require "mf"\nmf.models.declare("auto-*")\nreturn { name = "bad", version = "1" }\n');
  const file = writeConfig(config(mock.url, { stages: `
  - name: bad
    lua: ${dir}/bad.lua` }));
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /mf\.models\.declare: 'auto-\*': a model name is exact/);
  writeFileSync(path.join(dir, 'late.lua'),
    'local mf = require "mf"\nlocal M = { name = "late", version = "1" }\n' +
    'function M.on_request(conf, ctx) mf.models.declare("late-model") end\nreturn M\n');
  const gw2 = await startGateway(config(mock.url, { stages: `
  - name: late
    lua: ${dir}/late.lua` }), { dir });
  try {
    const res = await chat(gw2, 'hi', { model: 'gpt-4o' });
    assert.equal(res.status, 500); /* the call raised: a stage failure */
    await res.text();
  } finally {
    await gw2.stop();
  }
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
