// The paths the gateway answers itself (model lists, count_tokens, GET and
// DELETE of a stored Response) run on_request: an authentication stage
// (key-auth) refuses them without a key, a stage sees them as the "local"
// endpoint, limits does not meter them. A stored Response is its
// consumer's: another consumer can neither read, delete nor continue it,
// with the store in memory and in Redis.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, post, path, spawnSync, closedPort, sleep, adminCommand } from './harness.mjs';

const ALICE = 'alice-secret-key-0001';
const BOB = 'bob-secret-key-0002';
const METERED = 'metered-secret-key-0003';
const auth = (k) => ({ authorization: `Bearer ${k}` });
let mock;

function gwConfig(dir, extra = '') {
  writeFileSync(path.join(dir, 'endpoint.lua'), `local mf = require "mf"
local M = { name = "endpoint-tag", version = "1" }
function M.on_request(conf, ctx)
  mf.resp.set_header("x-seen-endpoint", mf.req.info().endpoint)
end
return M
`);
  return config(mock.url, {
    stages: `  - { name: auth, plugin: key-auth }
  - name: limits
    plugin: limits
    config: { default_max_tokens: 100 }
  - name: tag
    lua: ${dir}/endpoint.lua`,
  }) + `
admin: { socket: ${dir}/admin.sock }
consumers:
  - { name: alice, keys: ["${ALICE}"] }
  - { name: bob, keys: ["${BOB}"] }
  - { name: metered, keys: ["${METERED}"], limits: { rpm: 1 } }
  - { name: narrow, keys: ["narrow-secret-key-0004"], models: ["gpt-3.5*"] }
${extra}`;
}

before(async () => { mock = await startMock(); });
after(async () => { await mock.stop(); });

const get = (gw, p, headers = {}) => fetch(gw.url + p, { headers });
const del = (gw, p, headers = {}) => fetch(gw.url + p, { method: 'DELETE', headers });
const countBody = { model: 'gpt-4o', messages: [{ role: 'user', content: 'count me' }] };

test('without a key the gateway\'s own answers are 401; with one they are served and seen as "local"', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-local-'));
  const gw = await startGateway(gwConfig(dir), { dir });
  try {
    const before = await mock.count();
    const refused = [
      await get(gw, '/v1/models'),
      await get(gw, '/v1/models/gpt-4o'),
      await get(gw, '/models'),
      await get(gw, '/v1beta/models'),
      await post(gw, '/v1/messages/count_tokens', countBody),
      await post(gw, '/v1beta/models/gpt-4o:countTokens', { contents: [{ parts: [{ text: 'hi' }] }] }),
      await get(gw, '/v1/responses/resp_0123'),
      await del(gw, '/v1/responses/resp_0123'),
    ];
    for (const r of refused) {
      assert.equal(r.status, 401, r.url);
      const j = await r.json();
      assert.match(JSON.stringify(j), /no API key/, r.url);
    }
    // the Anthropic list, in Anthropic's shape
    let r = await get(gw, '/v1/models', { 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 401);
    let j = await r.json();
    assert.equal(j.type, 'error');
    assert.equal(j.error.type, 'authentication_error');
    r = await post(gw, '/v1/messages/count_tokens', countBody, { 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.type, 'authentication_error');
    // a wrong key too
    r = await get(gw, '/v1/models', auth('not-a-key'));
    assert.equal(r.status, 401);
    await r.text();
    // health stays without stages
    assert.equal((await get(gw, '/healthz')).status, 200);

    r = await get(gw, '/v1/models', auth(ALICE));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-seen-endpoint'), 'local');
    assert.ok((await r.json()).data.some((m) => m.id === 'gpt-4o'));
    r = await get(gw, '/v1/models', { 'x-api-key': ALICE, 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 200);
    assert.ok(Array.isArray((await r.json()).data));
    r = await get(gw, '/v1beta/models', { 'x-goog-api-key': ALICE });
    assert.equal(r.status, 200);
    assert.ok(Array.isArray((await r.json()).models));
    r = await post(gw, '/v1/messages/count_tokens', countBody, { 'x-api-key': ALICE });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-seen-endpoint'), 'local');
    assert.ok((await r.json()).input_tokens > 0);
    r = await post(gw, '/v1beta/models/gpt-4o:countTokens', { contents: [{ parts: [{ text: 'abcdabcd' }] }] },
      { 'x-goog-api-key': ALICE });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { totalTokens: 3 });
    // the models check applies when the request names a model
    r = await get(gw, '/v1/models', auth('narrow-secret-key-0004'));
    assert.equal(r.status, 200);
    await r.text();
    r = await post(gw, '/v1/messages/count_tokens', countBody, { 'x-api-key': 'narrow-secret-key-0004' });
    assert.equal(r.status, 403);
    assert.equal((await r.json()).error.type, 'permission_error');
    r = await post(gw, '/v1/messages/count_tokens', { ...countBody, model: 'gpt-3.5-turbo' },
      { 'x-api-key': 'narrow-secret-key-0004' });
    assert.equal(r.status, 200);
    await r.text();
    // a model call is not "local"
    r = await chat(gw, 'hi', {}, auth(ALICE));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-seen-endpoint'), 'chat');
    await r.text();
    assert.equal(await mock.count(), before + 1); // only the chat went upstream
  } finally {
    await gw.stop();
  }
});

test('limits does not meter what the gateway answers itself', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-local-'));
  const gw = await startGateway(gwConfig(dir), { dir });
  try {
    // rpm 1: were the lists and counts metered, the chat would be refused
    for (let i = 0; i < 3; i++) {
      const r = await get(gw, '/v1/models', auth(METERED));
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-ratelimit-remaining-requests'), null);
      await r.text();
    }
    let r = await post(gw, '/v1/messages/count_tokens', countBody, { 'x-api-key': METERED });
    assert.equal(r.status, 200);
    await r.text();
    r = await chat(gw, 'hi', {}, auth(METERED));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0');
    await r.text();
    await gw.waitLog((l) => l.consumer === 'metered' && l.path === '/v1/chat/completions');
    // the ledger counts the one model call
    let u;
    for (let i = 0; i < 100; i++) {
      u = await adminCommand(path.join(dir, 'admin.sock'), 'usage', { consumer: 'metered', period: 'day' });
      if (u.json.total?.requests >= 1) break;
      await sleep(50);
    }
    assert.equal(u.status, 200);
    assert.equal(u.json.total.requests, 1);
    // and the logged lists carry the consumer
    await gw.waitLog((l) => l.consumer === 'metered' && l.path === '/v1/models');
  } finally {
    await gw.stop();
  }
});

// One consumer's stored Response, tried by another, by no one and by its
// own; waitStored: the store is written without waiting (Redis).
async function ownership(gw, waitStored) {
  let r = await post(gw, '/v1/responses', { model: 'gpt-4o', input: 'remember Oslo' }, auth(ALICE));
  assert.equal(r.status, 200);
  const made = await r.json();
  const id = made.id;
  await waitStored(id);
  const gone = await get(gw, '/v1/responses/resp_does_not_exist_0000', auth(BOB));
  assert.equal(gone.status, 404);
  const goneBody = await gone.json();

  // no key
  r = await get(gw, `/v1/responses/${id}`);
  assert.equal(r.status, 401);
  await r.text();
  r = await del(gw, `/v1/responses/${id}`);
  assert.equal(r.status, 401);
  await r.text();
  // another consumer: as if it did not exist
  r = await get(gw, `/v1/responses/${id}`, auth(BOB));
  assert.equal(r.status, 404);
  let j = await r.json();
  assert.equal(j.error.code, goneBody.error.code);
  assert.equal(j.error.type, goneBody.error.type);
  assert.ok(!JSON.stringify(j).includes('Oslo'));
  r = await del(gw, `/v1/responses/${id}`, auth(BOB));
  assert.equal(r.status, 404);
  assert.equal((await r.json()).error.code, goneBody.error.code);
  // its input items: no key, another consumer
  r = await get(gw, `/v1/responses/${id}/input_items`);
  assert.equal(r.status, 401);
  await r.text();
  r = await get(gw, `/v1/responses/${id}/input_items`, auth(BOB));
  assert.equal(r.status, 404);
  assert.ok(!(await r.text()).includes('Oslo'));
  const upstream = await mock.count();
  // an item_reference to another consumer's item
  r = await post(gw, '/v1/responses', { model: 'gpt-4o', input: [{ type: 'item_reference', id: made.output[0].id }] }, auth(BOB));
  assert.equal(r.status, 400);
  assert.ok(!(await r.text()).includes('Oslo'));
  r = await post(gw, '/v1/responses', { model: 'gpt-4o', previous_response_id: id, input: 'where?' }, auth(BOB));
  assert.equal(r.status, 400);
  j = await r.json();
  assert.match(j.error.message, /previous_response_id: no response with this id/);
  // the same answer as an id that does not exist
  r = await post(gw, '/v1/responses', { model: 'gpt-4o', previous_response_id: 'resp_nope', input: 'x' }, auth(BOB));
  assert.equal(r.status, 400);
  assert.deepEqual(await r.json(), j);
  assert.equal(await mock.count(), upstream, 'nothing reached the upstream');

  // its own consumer: still there after the other's DELETE
  r = await get(gw, `/v1/responses/${id}`, auth(ALICE));
  assert.equal(r.status, 200);
  assert.equal((await r.json()).id, id);
  r = await get(gw, `/v1/responses/${id}/input_items`, auth(ALICE));
  assert.equal(r.status, 200);
  assert.equal((await r.json()).data[0].content[0].text, 'remember Oslo');
  r = await post(gw, '/v1/responses', { model: 'gpt-4o', previous_response_id: id, input: 'where?' }, auth(ALICE));
  assert.equal(r.status, 200);
  await r.json();
  assert.deepEqual(JSON.parse((await mock.last()).body).messages[0], { role: 'user', content: 'remember Oslo' });
  r = await del(gw, `/v1/responses/${id}`, auth(ALICE));
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { id, object: 'response', deleted: true });
  r = await get(gw, `/v1/responses/${id}`, auth(ALICE));
  assert.equal(r.status, 404);
  await r.text();
}

test('a stored Response is its consumer\'s (memory store)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-local-'));
  const gw = await startGateway(gwConfig(dir), { dir });
  try {
    await ownership(gw, async () => {});
  } finally {
    await gw.stop();
  }
});

test('a stored Response is its consumer\'s (Redis store)', async () => {
  const redisPort = await closedPort();
  const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-local-'));
  let gw;
  try {
    for (let i = 0; ; i++) {
      const r = spawnSync('redis-cli', ['-p', String(redisPort), 'PING']);
      if (r.stdout && r.stdout.toString().includes('PONG')) break;
      assert.ok(i < 100, 'redis-server did not start');
      await sleep(50);
    }
    gw = await startGateway(gwConfig(dir,
      `redis: { host: 127.0.0.1, port: ${redisPort}, timeout: 500ms }\nresponse_store: { ttl: 1h }\n`), { dir });
    const exists = (id) => spawnSync('redis-cli', ['-p', String(redisPort), 'EXISTS', `manifold:resp:${id}`])
      .stdout.toString().trim() === '1';
    await ownership(gw, async (id) => {
      for (let i = 0; !exists(id); i++) {
        assert.ok(i < 100, 'the answer never reached Redis');
        await sleep(50);
      }
    });
    // the owner is kept with the entry in Redis
    let r = await post(gw, '/v1/responses', { model: 'gpt-4o', input: 'kept' }, auth(ALICE));
    const id = (await r.json()).id;
    for (let i = 0; !exists(id); i++) {
      assert.ok(i < 100, 'the answer never reached Redis');
      await sleep(50);
    }
    const raw = spawnSync('redis-cli', ['-p', String(redisPort), 'GET', `manifold:resp:${id}`]).stdout.toString();
    assert.match(raw, /^5:alice\{/);
    r = await del(gw, `/v1/responses/${id}`, auth(BOB));
    assert.equal(r.status, 404);
    await r.text();
    assert.ok(exists(id), 'another consumer\'s DELETE left the entry');
  } finally {
    redis.kill('SIGTERM');
    await gw?.stop();
  }
});
