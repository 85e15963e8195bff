// A Lua stage registers admin commands (mf.command) and reads config
// sections (mf.config_section) as a C plugin does (api->register_command,
// api->config_section): the commands run in a state of their own on the
// main thread and see what the workers' states put in mf.shared; errors
// and bad answers are the command's status, never a crash.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, path, ROOT, adminCommand, adminCall, writeConfig, spawnSync, BIN } from './harness.mjs';

let mock, gw, sock;

before(async () => {
  mock = await startMock();
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-luacmd-'));
  sock = path.join(dir, 'admin.sock');
  gw = await startGateway(config(mock.url, {
    stages: `  - name: counter
    lua: ${ROOT}/tests/integration/fixtures/commands.lua
    config: { limit: 7 }`,
  }) + `
admin: { socket: ${sock} }
prices:
  gpt-4o: { input: 2.5, output: 10 }
  gpt-4o-mini: { input: 0.15, output: 0.6 }
`, { dir });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('a Lua command answers from the main thread what the workers counted', async () => {
  for (let i = 0; i < 6; i++) {
    const r = await chat(gw, `hi ${i}`);
    assert.equal(r.status, 200);
    await r.text();
  }
  let r = await adminCommand(sock, 'lua-counter.show', { args: ['gpt-4o'] });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, { model: 'gpt-4o', requests: 6, priced_models: 2, limit: 7 });
  r = await adminCommand(sock, 'lua-counter.reset', { args: ['gpt-4o'] });
  assert.deepEqual(r.json, { reset: 'gpt-4o' });
  r = await adminCommand(sock, 'lua-counter.show', { args: ['gpt-4o'] });
  assert.equal(r.json.requests, 0);
  // the command's own status, and an error raised in it
  r = await adminCommand(sock, 'lua-counter.reset', {});
  assert.equal(r.status, 400);
  assert.deepEqual(r.json, { error: 'name a model' });
  r = await adminCommand(sock, 'lua-counter.boom', {});
  assert.equal(r.status, 500);
  assert.match(r.json.error, /the command failed on purpose/);
  // listed with the others, and reached through manifoldctl's words
  const ctl = (...a) => spawnSync(path.join(path.dirname(BIN), 'manifoldctl'), ['-s', sock, ...a], { encoding: 'utf8' });
  let out = ctl('commands');
  assert.equal(out.status, 0, out.stderr);
  assert.match(out.stdout, /lua-counter\.show/);
  out = ctl('--json', 'lua-counter', 'show', 'gpt-4o-mini');
  assert.equal(out.status, 0, out.stderr);
  assert.equal(JSON.parse(out.stdout).model, 'gpt-4o-mini');
});

test('mf.command refuses a name declared twice or one the admin socket cannot take', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-luacmd-bad-'));
  const cases = [
    ['twice.lua', 'local mf = require "mf"\nmf.command("dup.x", "u", function() end)\nmf.command("dup.x", "u", function() end)\nreturn { name = "twice" }\n', /'dup\.x' is declared twice/],
    ['badname.lua', 'local mf = require "mf"\nmf.command("bad name", "u", function() end)\nreturn { name = "badname" }\n', /cannot be registered/],
  ];
  for (const [file, src, re] of cases) {
    writeFileSync(path.join(dir, file), src);
    const r = spawnSync(BIN, ['-t', '-c', writeConfig(config(mock.url, { stages: `  - { name: s, lua: ${dir}/${file} }` }))], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, file);
    assert.match(r.stderr, re, file);
  }
});

test('a Lua command is gone once a reload drops its stage', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-luacmd-rl-'));
  const s2 = path.join(dir, 'admin.sock');
  const conf = (withStage) => config(mock.url, {
    stages: withStage ? `  - name: counter
    lua: ${ROOT}/tests/integration/fixtures/commands.lua` : '',
  }) + `\nadmin: { socket: ${s2} }\nreload: { watch: false }\n`;
  const g = await startGateway(conf(true), { dir });
  try {
    assert.equal((await adminCommand(s2, 'lua-counter.show', {})).status, 200);
    writeFileSync(path.join(dir, 'manifold.yaml'), conf(false));
    const rl = await adminCall(s2, 'POST', '/reload');
    assert.equal(rl.status, 200, JSON.stringify(rl.json));
    assert.equal((await adminCommand(s2, 'lua-counter.show', {})).status, 404);
  } finally {
    await g.stop();
  }
});
