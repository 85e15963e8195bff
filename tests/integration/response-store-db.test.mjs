// The response store's file (response_store.db): stored Responses answers
// survive a restart (SIGTERM writes them all), with their owner and
// expiry; a DELETE stays deleted; the file is created 0600; newest kept
// within the bounds when read back; a db with redis:, a file that cannot
// be opened and a reload naming another file are refused; a file others
// can read is warned of.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, statSync, existsSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, post, path, spawnSync, BIN, writeConfig, sleep } from './harness.mjs';

const ALICE = 'alice-secret-key-0001';
const BOB = 'bob-secret-key-0002';
const auth = (k) => ({ authorization: `Bearer ${k}` });
let mock;

before(async () => { mock = await startMock(); });
after(async () => { await mock.stop(); });

function gwConfig(store, extra = '') {
  return config(mock.url, { stages: '  - { name: auth, plugin: key-auth }' }) + `
consumers:
  - { name: alice, keys: ["${ALICE}"] }
  - { name: bob, keys: ["${BOB}"] }
response_store: ${store}
${extra}`;
}

const get = (gw, p, k = ALICE) => fetch(gw.url + p, { headers: auth(k) });
const del = (gw, p, k = ALICE) => fetch(gw.url + p, { method: 'DELETE', headers: auth(k) });
const create = async (gw, input, extra = {}, k = ALICE) => {
  const res = await post(gw, '/v1/responses', { model: 'gpt-4o', input, ...extra }, auth(k));
  assert.equal(res.status, 200);
  return (await res.json()).id;
};
const status = async (res) => { await res.arrayBuffer(); return res.status; };

test('stored answers survive a restart with their owner; a DELETE stays deleted; the file is 0600', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-respdb-'));
  const conf = gwConfig('{ db: responses.db }');
  let gw = await startGateway(conf, { dir });
  let kept, gone;
  try {
    kept = await create(gw, 'remember Oslo');
    gone = await create(gw, 'forget me');
    assert.equal(await status(await del(gw, `/v1/responses/${gone}`)), 200);
  } finally {
    await gw.stop(); // SIGTERM: everything queued is written
  }
  const file = path.join(dir, 'responses.db');
  assert.equal(statSync(file).mode & 0o777, 0o600);
  gw = await startGateway(conf, { dir });
  try {
    assert.match(gw.stderr, /response store: 1 answers read back from .*responses\.db/);
    let r = await get(gw, `/v1/responses/${kept}`);
    assert.equal(r.status, 200);
    assert.equal((await r.json()).id, kept);
    r = await get(gw, `/v1/responses/${kept}/input_items`);
    assert.equal(r.status, 200);
    assert.equal((await r.json()).data[0].content[0].text, 'remember Oslo');
    assert.equal(await status(await get(gw, `/v1/responses/${gone}`)), 404);
    // another consumer: as before the restart, as if it did not exist
    assert.equal(await status(await get(gw, `/v1/responses/${kept}`, BOB)), 404);
    r = await post(gw, '/v1/responses', { model: 'gpt-4o', previous_response_id: kept, input: 'where?' }, auth(BOB));
    assert.equal(r.status, 400);
    assert.match((await r.json()).error.message, /previous_response_id: no response with this id/);
    // its consumer continues the conversation
    const next = await create(gw, 'where?', { previous_response_id: kept });
    assert.deepEqual(JSON.parse((await mock.last()).body).messages, [
      { role: 'user', content: 'remember Oslo' },
      { role: 'assistant', content: 'Hello from mock. You said: remember Oslo' },
      { role: 'user', content: 'where?' },
    ]);
    // and the answer made after the restart is kept for the next one
    await gw.stop();
    gw = await startGateway(conf, { dir });
    assert.equal(await status(await get(gw, `/v1/responses/${next}`)), 200);
    assert.equal(await status(await del(gw, `/v1/responses/${kept}`)), 200);
    await gw.stop();
    gw = await startGateway(conf, { dir });
    assert.equal(await status(await get(gw, `/v1/responses/${kept}`)), 404);
    assert.equal(await status(await get(gw, `/v1/responses/${next}`)), 200);
  } finally {
    await gw.stop();
  }
});

test('an answer past its ttl is not read back; the newest are kept within the bounds', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-respdb-'));
  let gw = await startGateway(gwConfig('{ db: responses.db, ttl: 2s }'), { dir });
  const t0 = Date.now();
  let short;
  try {
    short = await create(gw, 'short lived');
  } finally {
    await gw.stop();
  }
  // the expiry is the wall clock's: a restart does not start it again
  while (Date.now() < t0 + 2500) await sleep(100);
  gw = await startGateway(gwConfig('{ db: responses.db, ttl: 1h }'), { dir });
  let ids;
  try {
    assert.equal(await status(await get(gw, `/v1/responses/${short}`)), 404);
    ids = [await create(gw, 'one'), await create(gw, 'two'), await create(gw, 'three')];
  } finally {
    await gw.stop();
  }
  gw = await startGateway(gwConfig('{ db: responses.db, max_entries: 2 }'), { dir });
  try {
    const got = [];
    for (const id of ids) got.push(await status(await get(gw, `/v1/responses/${id}`)));
    assert.deepEqual(got, [404, 200, 200]);
  } finally {
    await gw.stop();
  }
  // the oldest, past the bound, was deleted from the file too
  gw = await startGateway(gwConfig('{ db: responses.db }'), { dir });
  try {
    assert.equal(await status(await get(gw, `/v1/responses/${ids[0]}`)), 404);
    assert.equal(await status(await get(gw, `/v1/responses/${ids[2]}`)), 200);
  } finally {
    await gw.stop();
  }
});

test('response_store.db: refused with redis:, a file that cannot be opened names its path, none is memory only', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-respdb-'));
  let file = writeConfig(gwConfig('{ db: responses.db }', 'redis: { host: 127.0.0.1, port: 6399 }\n'), dir);
  let r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /response_store\.db: with redis: the store is Redis/);
  file = writeConfig(gwConfig('{ db: missing/responses.db }'), dir);
  const want = path.join(dir, 'missing/responses.db');
  r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.ok(r.stderr.includes(`cannot create ${want}`), r.stderr);
  r = spawnSync(BIN, ['-c', file, '--listen', '127.0.0.1:0', '--workers', '1'], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(`response_store.db: cannot open ${want}`), r.stderr);
  file = writeConfig(gwConfig('{ db: none }'), dir);
  r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(existsSync(path.join(dir, 'none')), false);
});

test('a store file other users can read is used, with a warning', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-respdb-'));
  writeFileSync(path.join(dir, 'shared.db'), '', { mode: 0o644 });
  chmodSync(path.join(dir, 'shared.db'), 0o644);
  const gw = await startGateway(gwConfig('{ db: shared.db }'), { dir });
  try {
    assert.match(gw.stderr, /shared\.db can be read by other users \(mode 0644\) and holds conversations; chmod 600 it/);
    const id = await create(gw, 'kept anyway');
    assert.equal(await status(await get(gw, `/v1/responses/${id}`)), 200);
  } finally {
    await gw.stop();
  }
});

test('a reload naming another db is refused; the store keeps its file', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-respdb-'));
  const conf = gwConfig('{ db: responses.db }', 'reload: { watch: false }\n');
  const gw = await startGateway(conf, { dir });
  try {
    const id = await create(gw, 'before the reload');
    writeConfig(conf.replace('db: responses.db', 'db: other.db'), dir);
    gw.proc.kill('SIGHUP');
    await gw.waitStderr(/response_store\.db: changed from .*responses\.db to .*other\.db/);
    assert.equal(existsSync(path.join(dir, 'other.db')), false);
    // a reload with the same file is taken, and the store is kept
    writeConfig(conf.replace('{ db: responses.db }', '{ db: responses.db, ttl: 2h }'), dir);
    gw.proc.kill('SIGHUP');
    await gw.waitStderr(/reload \(SIGHUP\): generation 2 serving/);
    assert.equal(await status(await get(gw, `/v1/responses/${id}`)), 200);
  } finally {
    await gw.stop();
  }
});
