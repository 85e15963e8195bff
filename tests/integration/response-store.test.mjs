// The response store's bounds (response_store: max_entries, max_bytes,
// ttl): the oldest answers are evicted past the count or the bytes, an
// answer expires after the TTL, max_entries 0 keeps none; and the
// section's settings are checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post, spawnSync, BIN, writeConfig } from './harness.mjs';

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
  let gw = await startGateway(config(mock.url) + 'response_store: { ttl: 300ms }\n');
  try {
    const id = await create(gw, 'short lived');
    assert.equal(await stored(gw, id), true);
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
