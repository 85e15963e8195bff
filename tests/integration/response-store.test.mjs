// The response store's bounds (response_store: max_entries, max_bytes,
// ttl): the oldest answers are evicted past the count or the bytes, an
// answer expires after the TTL, max_entries 0 keeps none; the section's
// settings are checked; with `redis:` the store is Redis, shared by
// gateway processes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post, spawnSync, BIN, writeConfig, sleep, startRedis } from './harness.mjs';

let mock;

before(async () => { mock = await startMock(); });
after(async () => { await mock.stop(); });

const create = async (gw, input, extra = {}) => {
  const res = await post(gw, '/v1/responses', { model: 'gpt-4o', input, ...extra });
  assert.equal(res.status, 200);
  return (await res.json()).id;
};
const stored = async (gw, id) => (await fetch(`${gw.url}/v1/responses/${id}`)).status === 200;

test('past max_entries the oldest answers are evicted', async () => {
  const gw = await startGateway(config(mock.url) + 'response_store: { max_entries: 2 }\n');
  try {
    const ids = [await create(gw, 'one'), await create(gw, 'two'), await create(gw, 'three')];
    assert.deepEqual(await Promise.all(ids.map((id) => stored(gw, id))), [false, true, true]);
    const res = await post(gw, '/v1/responses', { model: 'gpt-4o', input: 'x', previous_response_id: ids[0] });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.type, 'invalid_request_error');
  } finally {
    await gw.stop();
  }
});

test('past max_bytes the oldest answers are evicted; a larger one is not kept', async () => {
  const gw = await startGateway(config(mock.url) + 'response_store: { max_bytes: 3000 }\n');
  try {
    const a = await create(gw, 'a'.repeat(1000));
    const b = await create(gw, 'b'.repeat(1000));
    assert.equal(await stored(gw, a), false); // an entry holds the input and the answer echoing it
    assert.equal(await stored(gw, b), true);
    const big = await create(gw, 'c'.repeat(4000));
    assert.equal(await stored(gw, big), false);
    assert.equal(await stored(gw, b), true);
  } finally {
    await gw.stop();
  }
});

test('an answer expires after the ttl; max_entries 0 keeps none', async () => {
  let gw = await startGateway(config(mock.url) + 'response_store: { ttl: 1500ms }\n');
  try {
    const t0 = Date.now();
    const id = await create(gw, 'short lived');
    const there = await stored(gw, id);
    // On a starved machine the answer may already be past its ttl when
    // it is looked up; it must be there only when it cannot have expired.
    if (Date.now() - t0 < 1500) assert.equal(there, true);
    // wait for the condition, bounded
    const until = Date.now() + 10000;
    while (await stored(gw, id)) {
      assert.ok(Date.now() < until, 'the stored answer never expired');
      await new Promise((r) => setTimeout(r, 100));
    }
    const res = await fetch(`${gw.url}/v1/responses/${id}`, { method: 'DELETE' });
    assert.equal(res.status, 404);
  } finally {
    await gw.stop();
  }
  gw = await startGateway(config(mock.url) + 'response_store: { max_entries: 0 }\n');
  try {
    const id = await create(gw, 'kept nowhere');
    assert.equal(await stored(gw, id), false);
  } finally {
    await gw.stop();
  }
});

test('response_store settings are checked', () => {
  const file = writeConfig(config(mock.url) + 'response_store: { max_entries: -1, ttl: 0s, redis: true }\n');
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /response_store: unknown key 'redis'/);
  assert.match(r.stderr, /response_store\.max_entries: max_entries '-1' must be a whole number from 0/);
  assert.match(r.stderr, /response_store\.ttl: must be longer than 0s/);
});

// With `redis:` the store is Redis, shared by every gateway process using
// it: an answer made on one is continued, read and deleted on another.
test('with redis: the store is shared by gateway processes', async () => {
  const redis = await startRedis();
  const conf = config(mock.url) + `redis: { host: 127.0.0.1, port: ${redis.port}, timeout: 500ms }\n` +
    'response_store: { ttl: 1h }\n';
  let a, b;
  try {
    // Redis keeps no count: max_entries other than 0 is refused with it
    const bad = spawnSync(BIN, ['-t', '-c', writeConfig(conf.replace('{ ttl: 1h }', '{ ttl: 1h, max_entries: 50 }'))], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /response_store\.max_entries: with redis: the store is bounded by its ttl/);
    a = await startGateway(conf);
    b = await startGateway(conf);
    const first = await create(a, 'remember Oslo');
    // SET goes out without waiting for its reply: wait until it is there
    for (let i = 0; !(await stored(b, first)); i++) {
      assert.ok(i < 100, 'the answer never reached Redis');
      await sleep(50);
    }
    const ttl = Number(redis.cli('PTTL', `manifold:resp:${first}`));
    assert.ok(ttl > 3500000 && ttl <= 3600000, `PTTL ${ttl}`);
    const res = await post(b, '/v1/responses', { model: 'gpt-4o', previous_response_id: first, input: 'where?' });
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse((await mock.last()).body).messages, [
      { role: 'user', content: 'remember Oslo' },
      { role: 'assistant', content: 'Hello from mock. You said: remember Oslo' },
      { role: 'user', content: 'where?' },
    ]);
    const got = await (await fetch(`${b.url}/v1/responses/${first}`)).json();
    assert.equal(got.id, first);
    let del = await fetch(`${b.url}/v1/responses/${first}`, { method: 'DELETE' });
    assert.deepEqual(await del.json(), { id: first, object: 'response', deleted: true });
    assert.equal(await stored(a, first), false);
    del = await fetch(`${a.url}/v1/responses/${first}`, { method: 'DELETE' });
    assert.equal(del.status, 404);
    // Redis down: a request that needs the store is a 503 saying so
    await redis.stop('SIGTERM');
    const down = await post(a, '/v1/responses', { model: 'gpt-4o', previous_response_id: first, input: 'x' });
    assert.equal(down.status, 503);
    const j = await down.json();
    assert.equal(j.error.code, 'store_unavailable');
    assert.match(j.error.message, /response store \(Redis\) could not be read/);
    // and one that does not is served
    assert.equal((await post(a, '/v1/responses', { model: 'gpt-4o', input: 'no store needed' })).status, 200);
  } finally {
    await redis.stop('SIGTERM');
    await a?.stop();
    await b?.stop();
  }
});
