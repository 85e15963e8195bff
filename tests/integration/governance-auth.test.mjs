// key-auth: consumers and keys from the config and from admin commands,
// the errors of each refusal in the client's protocol, the credential
// kept from the upstream and the logs, and the store that survives a
// restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { startMock, startGateway, config, chat, post, adminCall, path, BUILD, adminCommand } from './harness.mjs';

const TEAM_A = 'team-a-secret-key-0001';
const TEAM_B = 'team-b-secret-key-0002';
let mock, dir, gw, sock;

function gwConfig(mockUrl, extraStages = '') {
  return config(mockUrl, {
    stages: `  - { name: auth, plugin: key-auth }
${extraStages}`,
  }) + `
admin: { socket: ${dir}/admin.sock }
consumers:
  - name: team-a
    group: engineering
    keys: ["\${TEAM_A_KEY}"]
    models: ["gpt-4o*", "text-embedding-*"]
  - name: team-b
    keys: ["sha256:${createHash('sha256').update(TEAM_B).digest('hex')}"]
    models: ["gpt-3.5*"]
groups:
  - { name: engineering, models: ["gpt-*", "text-*"] }
`;
}

function ctl(...args) {
  const r = spawnSync(path.join(BUILD, 'manifoldctl'), ['-s', sock, ...args], { encoding: 'utf8' });
  return r;
}

const command = (name, body) => adminCommand(sock, name, body);

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-gov-'));
  gw = await startGateway(gwConfig(mock.url), { dir, env: { TEAM_A_KEY: TEAM_A } });
  sock = path.join(dir, 'admin.sock');
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('a missing or unknown key is 401 with its own code, in the client protocol', async () => {
  let r = await chat(gw, 'hi');
  assert.equal(r.status, 401);
  let j = await r.json();
  assert.equal(j.error.code, 'missing_api_key');
  assert.equal(j.error.type, 'invalid_request_error');
  r = await chat(gw, 'hi', {}, { authorization: 'Bearer nope-not-a-key' });
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error.code, 'invalid_api_key');
  // a well-formed generated key that does not exist
  r = await chat(gw, 'hi', {}, { authorization: `Bearer mf-000000000000-${'0'.repeat(48)}` });
  assert.equal((await r.json()).error.code, 'invalid_api_key');
  r = await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] },
    { 'x-api-key': 'wrong' });
  assert.equal(r.status, 401);
  j = await r.json();
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'authentication_error');
  assert.equal(await mock.count(), 0, 'nothing reached the upstream');
});

test('a config key (literal or sha256) identifies its consumer; the credential goes no further', async () => {
  let r = await chat(gw, 'hi', {}, { authorization: `Bearer ${TEAM_A}`, 'x-manifold-consumer': 'someone-else', 'x-manifold-group': 'admins' });
  assert.equal(r.status, 200);
  const last = await mock.last();
  const sent = JSON.stringify(last);
  assert.ok(!sent.includes(TEAM_A), 'the client key did not reach the upstream');
  assert.ok(!/x-manifold-consumer|someone-else/i.test(sent), 'identity headers were dropped');
  const line = await gw.waitLog((l) => l.consumer === 'team-a');
  assert.equal(line.status, 200);
  r = await chat(gw, 'hi', { model: 'gpt-3.5-turbo' }, { 'x-api-key': TEAM_B });
  assert.equal(r.status, 200);
  await gw.waitLog((l) => l.consumer === 'team-b');
  assert.ok(!readFileSync(gw.logFile, 'utf8').includes(TEAM_A));
  assert.ok(!gw.stderr.includes(TEAM_A) && !gw.stderr.includes(TEAM_B));
});

test('a model outside the consumer\'s globs is 403 model_not_allowed', async () => {
  let r = await chat(gw, 'hi', { model: 'gpt-4o' }, { authorization: `Bearer ${TEAM_B}` });
  assert.equal(r.status, 403);
  assert.equal((await r.json()).error.code, 'model_not_allowed');
  r = await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] },
    { 'x-api-key': TEAM_B });
  assert.equal(r.status, 403);
  assert.equal((await r.json()).error.type, 'permission_error');
});

test('consumers add prints a generated key once; revoke, rotate, disable and delete take effect', async () => {
  const list = await adminCall(sock, 'GET', '/commands');
  assert.ok(list.json.commands.some((c) => c.name === 'consumers.add' && c.stage === 'auth'));
  const add = ctl('consumers', 'add', 'team-c', '--group', 'engineering', '--models', 'gpt-4o*');
  assert.equal(add.status, 0, add.stderr);
  const key = add.stdout.match(/key\s+(mf-[0-9a-f]{12}-[0-9a-f]{48})/)[1];
  const id = key.slice(3, 15);
  assert.ok(!gw.stderr.includes(key), 'the key is not logged');
  let r = await chat(gw, 'hi', {}, { authorization: `Bearer ${key}` });
  assert.equal(r.status, 200);
  await gw.waitLog((l) => l.consumer === 'team-c');
  // the same name again is refused
  assert.equal((await command('consumers.add', { args: ['team-c'] })).status, 409);
  // a wrong secret for a known id
  const bad = key.slice(0, -1) + (key.endsWith('0') ? '1' : '0');
  r = await chat(gw, 'hi', {}, { authorization: `Bearer ${bad}` });
  assert.equal((await r.json()).error.code, 'invalid_api_key');
  // rotate with a grace: both work; rotate the new one at once: it expires
  const rot = await command('keys.rotate', { args: [id], grace: '1h' });
  assert.equal(rot.status, 200);
  const key2 = rot.json.key;
  assert.equal((await chat(gw, 'hi', {}, { authorization: `Bearer ${key}` })).status, 200);
  assert.equal((await chat(gw, 'hi', {}, { authorization: `Bearer ${key2}` })).status, 200);
  const rot2 = await command('keys.rotate', { args: [rot.json.key_id] });
  r = await chat(gw, 'hi', {}, { authorization: `Bearer ${key2}` });
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error.code, 'expired_api_key');
  const key3 = rot2.json.key;
  assert.equal((await chat(gw, 'hi', {}, { authorization: `Bearer ${key3}` })).status, 200);
  // revoke
  const rev = ctl('keys', 'revoke', id);
  assert.equal(rev.status, 0, rev.stderr);
  r = await chat(gw, 'hi', {}, { authorization: `Bearer ${key}` });
  assert.equal((await r.json()).error.code, 'revoked_api_key');
  // disable / enable
  assert.equal(ctl('consumers', 'disable', 'team-c').status, 0);
  r = await chat(gw, 'hi', {}, { authorization: `Bearer ${key3}` });
  assert.equal((await r.json()).error.code, 'consumer_disabled');
  assert.equal(ctl('consumers', 'enable', 'team-c').status, 0);
  assert.equal((await chat(gw, 'hi', {}, { authorization: `Bearer ${key3}` })).status, 200);
  // a config consumer cannot be deleted at run time
  assert.equal((await command('consumers.delete', { args: ['team-a'] })).status, 409);
  const keys = await command('keys.list', { args: ['team-c'] });
  assert.equal(keys.json.keys.length, 3);
  assert.ok(!JSON.stringify(keys.json).includes(key3.slice(16)), 'keys list shows no secret');
});

test('runtime consumers and keys survive a restart; deleted ones do not', async () => {
  const add = await command('consumers.add', { args: ['team-d'] });
  const keyD = add.json.key;
  const add2 = await command('consumers.add', { args: ['team-e'] });
  const keyE = add2.json.key;
  assert.equal((await command('consumers.delete', { args: ['team-e'] })).status, 200);
  assert.equal((await chat(gw, 'hi', {}, { authorization: `Bearer ${keyE}` })).status, 401);
  await gw.stop();
  gw = await startGateway(gwConfig(mock.url), { dir, env: { TEAM_A_KEY: TEAM_A } });
  assert.equal((await chat(gw, 'hi', {}, { authorization: `Bearer ${keyD}` })).status, 200);
  assert.equal((await chat(gw, 'hi', {}, { authorization: `Bearer ${keyE}` })).status, 401);
  assert.equal((await chat(gw, 'hi', {}, { authorization: `Bearer ${TEAM_A}` })).status, 200);
  const db = readFileSync(path.join(dir, 'keys.db'));
  assert.ok(!db.includes(Buffer.from(keyD.slice(16))), 'the store holds no key secret');
});

test('consumers without a stage that reads them are refused', () => {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'mf-gov-')), 'm.yaml');
  const text = config('http://127.0.0.1:1') + `
consumers:
  - { name: x, keys: ["k"] }
`;
  import('node:fs').then(() => {});
  spawnSync('sh', ['-c', `cat > ${file}`], { input: text });
  const r = spawnSync(path.join(BUILD, 'manifold'), ['-t', '-c', file], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /consumers: no stage reads them/);
});

test('?key= identifies the consumer; later stages, logs and the upstream never see the key', async () => {
  const d = mkdtempSync(path.join(tmpdir(), 'mf-gov-q-'));
  writeFileSync(path.join(d, 'peek.lua'), `local mf = require "mf"
local M = { name = "peek", version = "1.0.0" }
function M.on_request(conf, ctx)
  mf.resp.set_header("x-seen-query", mf.req.query() or "")
  mf.req.set_query((mf.req.query() or "") .. "&peeked=1")
  mf.resp.set_header("x-new-query", mf.req.query())
end
return M
`);
  const g = await startGateway(gwConfig(mock.url, `  - { name: peek, lua: ${path.join(d, 'peek.lua')} }`)
    .replace(`admin: { socket: ${dir}/admin.sock }`, ''), { dir: d, env: { TEAM_A_KEY: TEAM_A } });
  try {
    const r = await fetch(`${g.url}/v1/chat/completions?alt=sse&key=${TEAM_A}&x=1`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 200, await r.clone().text());
    await r.text();
    // the stage after key-auth sees the query without the key
    assert.equal(r.headers.get('x-seen-query'), 'alt=sse&x=1');
    // and may change it itself (mf.req.set_query)
    assert.equal(r.headers.get('x-new-query'), 'alt=sse&x=1&peeked=1');
    const line = await g.waitLog((l) => l.consumer === 'team-a');
    assert.equal(line.path, '/v1/chat/completions');
    const log = g.accessLog().map((l) => JSON.stringify(l)).join('\n') + g.stderr;
    assert.ok(!log.includes(TEAM_A), 'the key is in a log');
    assert.ok(!JSON.stringify(await mock.last()).includes(TEAM_A), 'the key reached the upstream');
    // a wrong key in the query is refused like any other
    const bad = await fetch(`${g.url}/v1/chat/completions?key=nope`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(bad.status, 401);
    assert.equal((await bad.json()).error.code, 'invalid_api_key');
    assert.equal(bad.headers.get('x-seen-query'), null);
  } finally {
    await g.stop();
  }
});
