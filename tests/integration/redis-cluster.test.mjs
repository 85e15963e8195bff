// `redis: { cluster: [...] }`: two gateway nodes with key-auth, limits and
// the cache share a real 3-master Redis Cluster and act as one. A budget
// that fits one request lets one through; a key revoked on node 1 is
// refused on node 2 within a second; a cache entry stored by one node is
// served by the other, and identical misses on both coalesce into one
// upstream call; a consumer's slot moved to another master (ASK while it
// migrates, MOVED after) keeps its counters and its requests working.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { ROOT, startMock, startGateway, startRedisCluster, config, chat, sleep, path, writeConfig, BIN, spawnSync, http } from './harness.mjs';

// POST /commands/NAME on a gateway's admin socket: {status, json}.
function adminCommand(sock, name, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({ socketPath: sock, path: `/commands/${name}`, method: 'POST',
      headers: { 'content-length': Buffer.byteLength(data) } }, (res) => {
      let t = '';
      res.on('data', (d) => { t += d; });
      res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(t) }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

let mock, cluster;
const nodes = [];

async function node(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `mf-rc-${name}-`));
  const sock = path.join(dir, 'admin.sock');
  const gw = await startGateway(config(mock.url, {
    stages: `  - { name: redis-cmd, lua: ${ROOT}/tests/integration/fixtures/redis-cmd.lua }
  - { name: auth, plugin: key-auth }
  - name: limits
    plugin: limits
    config:
      default_max_tokens: 100
      on_store_error: { rates: local, concurrency: open, budgets: closed }
  - { name: cache, plugin: cache, config: { scope: global, coalesce_wait: 10m } }`,
  }) + `
admin: { socket: ${sock} }
redis: { cluster: [${cluster.seeds.map((s) => `"${s}"`).join(', ')}], timeout: 2s }
consumers:
  - { name: one-shot, keys: ["k-one-shot"], budget: { tokens: 200, period: month } }
  - { name: mover, keys: ["k-mover"], budget: { tokens: 100000000, period: month } }
  - { name: free, keys: ["k-free"] }
`, { dir });
  gw.sock = sock;
  return gw;
}

const auth = (k) => ({ authorization: `Bearer ${k}` });

before(async () => {
  mock = await startMock();
  cluster = await startRedisCluster({ masters: 3 });
  for (const n of ['a', 'b']) nodes.push(await node(n));
});

after(async () => {
  for (const n of nodes) await n.stop();
  await mock.stop();
  await cluster.stop();
});

// Every key of the cluster matching pattern (a SCAN of each master).
function keysOf(pattern) {
  return cluster.nodes.flatMap((n) => cluster.cli(n.port, '--scan', '--pattern', pattern)
    .split('\n').filter(Boolean).map((k) => ({ key: k, port: n.port })));
}

test('the config: cluster seeds are checked at load', () => {
  const file = writeConfig(`${config(mock.url)}
redis: { cluster: ["127.0.0.1:7000", "nohost"], db: 1 }
`);
  const r = spawnSync(BIN, ['-t', '-c', file]);
  const out = r.stdout.toString() + r.stderr.toString();
  assert.notEqual(r.status, 0);
  assert.match(out, /'nohost' must be "host:port"/);
  assert.match(out, /redis\.db cannot be set with redis\.cluster/);
});

test('20 parallel requests on 2 nodes against a budget that fits one: exactly one passes', async () => {
  const rs = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    chat(nodes[i % 2], '[[mock:delay=1000]] hi', {}, auth('k-one-shot'))));
  const statuses = rs.map((r) => r.status);
  await Promise.all(rs.map((r) => r.text().catch(() => {})));
  assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(','));
  assert.equal(statuses.filter((s) => s === 429).length, 19, statuses.join(','));
  // settled once, in the cluster, read by the other node
  let shown;
  for (let i = 0; i < 100; i++) {
    shown = await adminCommand(nodes[1].sock, 'budget.show', { args: ['one-shot'] });
    if (shown.json.budgets?.tokens?.reserved === 0) break;
    await sleep(20);
  }
  assert.equal(shown.json.store, 'redis');
  assert.equal(shown.json.budgets.tokens.reserved, 0);
  assert.ok(shown.json.budgets.tokens.used > 0, JSON.stringify(shown.json));
  // the consumer's counters live on the master of its hash tag's slot
  const mine = keysOf('mf:lim:{c:one-shot}:*');
  assert.ok(mine.length > 0);
  const owner = cluster.owner(cluster.slotOf('{c:one-shot}'));
  assert.ok(mine.every((k) => k.port === owner), JSON.stringify(mine));
});

test('a consumer made on node 1 works on node 2; a key revoked on node 1 is refused on node 2 within 1 s', async () => {
  const made = await adminCommand(nodes[0].sock, 'consumers.add', { args: ['team-c'], budget: '1usd/month' });
  assert.equal(made.status, 200, JSON.stringify(made.json));
  const key = made.json.key;
  const r1 = await chat(nodes[1], 'hi', {}, auth(key));
  assert.equal(r1.status, 200, await r1.text());
  // runtime keys and consumers are spread over the masters by their tags
  const spread = new Set(keysOf('mf:ka:*').map((k) => k.port));
  assert.ok(spread.size >= 1);
  const revoked = await adminCommand(nodes[0].sock, 'keys.revoke', { args: [made.json.key_id] });
  assert.equal(revoked.status, 200, JSON.stringify(revoked.json));
  const t0 = Date.now();
  for (;;) {
    const r = await chat(nodes[1], 'hi', {}, auth(key));
    const body = await r.text();
    if (r.status === 401) {
      assert.equal(JSON.parse(body).error.code, 'revoked_api_key');
      break;
    }
    assert.equal(r.status, 200, body);
    assert.ok(Date.now() - t0 < 1000, 'still accepted 1 s after the revocation');
    await sleep(20);
  }
});

test('the cache: an entry stored by one node is served by the other', async () => {
  const q = 'cached across the cluster';
  const first = await chat(nodes[0], q, {}, auth('k-free'));
  assert.equal(first.headers.get('x-manifold-cache'), 'miss');
  const want = (await first.json()).choices[0].message.content;
  for (let i = 0; ; i++) { // stored at on_log, after the answer
    const r = await chat(nodes[1], q, {}, auth('k-free'));
    const j = await r.json();
    if (r.headers.get('x-manifold-cache') === 'hit') {
      assert.equal(j.choices[0].message.content, want);
      break;
    }
    assert.ok(i < 100, 'the entry was never served by the other node');
    await sleep(20);
  }
  // the entry's key, lock and stream share a hash tag: one slot
  const e = keysOf('mf:cache:e:*');
  assert.ok(e.length > 0);
});

test('the cache: identical misses on both nodes at once make one upstream call', async () => {
  const q = '[[mock:delay=500]] asked on both nodes at once';
  const before = await mock.count();
  const rs = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
    const r = await chat(nodes[i % 2], q, {}, auth('k-free'));
    return { status: r.status, cache: r.headers.get('x-manifold-cache'), j: await r.json() };
  }));
  assert.equal((await mock.count()) - before, 1);
  assert.ok(rs.every((r) => r.status === 200));
  for (const r of rs) assert.equal(r.j.choices[0].message.content, rs[0].j.choices[0].message.content);
  assert.equal(keysOf('mf:cache:l:*').length, 0, 'the leader let its lock go');
});

// The cluster node id of the master on port.
function nodeId(port) {
  return cluster.cli(port, 'CLUSTER', 'MYID');
}

test('a consumer\'s slot moved to another master: requests keep working, through ASK while it migrates and MOVED after', { timeout: 60000 }, async () => {
  let n = 0;
  const spend = async (gw) => {
    // a new question each time: a cache hit spends nothing
    const r = await chat(gw, `spend a little, ${n++}`, {}, auth('k-mover'));
    assert.equal(r.status, 200, (await r.text()) + gw.stderr.split('\n').slice(-8).join('\n'));
  };
  for (const gw of nodes) await spend(gw); // both nodes' workers learnt the slot map
  const used = async () => {
    let shown;
    for (let i = 0; i < 100; i++) {
      shown = await adminCommand(nodes[0].sock, 'budget.show', { args: ['mover'] });
      if (shown.json.budgets?.tokens?.reserved === 0) return shown.json.budgets.tokens.used;
      await sleep(20);
    }
    assert.fail(JSON.stringify(shown.json));
  };
  const used0 = await used();
  assert.ok(used0 > 0);
  const slot = cluster.slotOf('{c:mover}');
  const src = cluster.owner(slot);
  const dst = cluster.nodes.find((n) => n.port !== src).port;
  const asking = () => Number((cluster.cli(dst, 'INFO', 'commandstats').match(/cmdstat_asking:calls=(\d+)/) || [0, 0])[1]);
  const asked0 = asking();
  // migrating: every key of the slot moved to dst, the slot still src's
  assert.equal(cluster.cli(dst, 'CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', nodeId(src)), 'OK');
  assert.equal(cluster.cli(src, 'CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', nodeId(dst)), 'OK');
  const keys = cluster.cli(src, 'CLUSTER', 'GETKEYSINSLOT', String(slot), '1000').split('\n').filter(Boolean);
  assert.ok(keys.length > 0);
  assert.equal(cluster.cli(src, 'MIGRATE', '127.0.0.1', String(dst), '', '0', '5000', 'KEYS', ...keys), 'OK');
  // requests now: the source answers ASK (its keys are gone), the
  // importing node takes the command after ASKING, or answers TRYAGAIN
  // while the consumer's keys are split; they wait (within redis.timeout)
  // for the slot to be settled
  const during = nodes.map((gw) => spend(gw));
  for (let i = 0; asking() === asked0; i++) {
    assert.ok(i < 200, 'the gateway never sent ASKING to the importing node');
    await sleep(5);
  }
  // moved: every master says the slot is dst's; the source answers MOVED
  for (const n of cluster.nodes) {
    assert.equal(cluster.cli(n.port, 'CLUSTER', 'SETSLOT', String(slot), 'NODE', nodeId(dst)), 'OK');
  }
  await Promise.all(during);
  const used1 = await used();
  assert.ok(used1 > used0, `${used1} > ${used0}`);
  for (const gw of nodes) await spend(gw);
  const used2 = await used();
  assert.ok(used2 > used1, `${used2} > ${used1}`);
  // the counters are on dst, none left on src
  const now = keysOf('mf:lim:{c:mover}:*');
  assert.ok(now.length > 0 && now.every((k) => k.port === dst), JSON.stringify(now));
});

// The answer of a Redis command a Lua stage ran on gw (mf.redis).
let asked = 0;
async function redis(gw, ...argv) {
  // a new question each time: a cache hit would skip the stage's answer
  const r = await chat(gw, `a redis command, ${asked++}`, {}, { ...auth('k-free'), 'x-redis-cmd': JSON.stringify(argv) });
  await r.text();
  assert.equal(r.status, 200);
  return JSON.parse(r.headers.get('x-redis-reply'));
}

test('commands from a stage: routed by slot; keys of one command in two slots refused; MGET joined; SCRIPT LOAD on every master', async () => {
  const [gw] = nodes;
  // keys on each master, written and read through the gateway
  const keys = [];
  for (const n of cluster.nodes) { // two keys on each master
    for (let i = 0, mine = 0; mine < 2; i++) {
      if (cluster.owner(cluster.slotOf(`t:${i}`)) === n.port && !keys.includes(String(i))) {
        keys.push(String(i));
        mine++;
      }
    }
  }
  for (const k of keys) assert.deepEqual(await redis(gw, 'SET', `t:${k}`, `v-${k}`), { ok: 'OK' });
  for (const k of keys) {
    assert.equal(cluster.cli(cluster.owner(cluster.slotOf(`t:${k}`)), 'GET', `t:${k}`), `v-${k}`);
  }
  // a multi-key command across slots: refused, never sent wrong
  const [a, , b] = keys.map((k) => `t:${k}`); // on two masters
  const cross = await redis(gw, 'DEL', a, b);
  assert.match(cross.err, /CROSSSLOT: the keys of this DEL hash to different slots/);
  assert.equal(cluster.cli(cluster.owner(cluster.slotOf(a)), 'GET', a), `v-${keys[0]}`);
  const crossEval = await redis(gw, 'EVAL', "return redis.call('GET', KEYS[1])", '2', a, b);
  assert.match(crossEval.err, /CROSSSLOT/);
  // one hash tag: one slot, allowed
  assert.deepEqual(await redis(gw, 'MSET', '{t}a', '1', '{t}b', '2'), { ok: 'OK' });
  assert.deepEqual(await redis(gw, 'DEL', '{t}a', '{t}b'), { ok: 2 });
  // MGET across slots: one GET per key, the answers in order
  const got = await redis(gw, 'MGET', ...keys.map((k) => `t:${k}`), 't:nothing');
  assert.deepEqual(got.ok.map((v) => (typeof v === 'string' ? v : null)), [...keys.map((k) => `v-${k}`), null]);
  // SCRIPT LOAD reaches every master: EVALSHA then works on any slot
  const sha = (await redis(gw, 'SCRIPT', 'LOAD', "return redis.call('GET', KEYS[1])")).ok;
  assert.match(sha, /^[0-9a-f]{40}$/);
  for (const n of cluster.nodes) assert.equal(cluster.cli(n.port, 'SCRIPT', 'EXISTS', sha), '1');
  for (const k of keys) assert.deepEqual(await redis(gw, 'EVALSHA', sha, '1', `t:${k}`), { ok: `v-${k}` });
  // what a shared connection cannot do
  assert.match((await redis(gw, 'MULTI')).err, /MULTI is not supported with redis.cluster/);
});

test('a master killed: its slots fail at once (on_store_error), the other masters\' keep working', async () => {
  const [gw] = nodes;
  const slot = cluster.slotOf('{c:mover}');
  const dead = cluster.nodes.find((n) => n.port === cluster.owner(slot));
  let live;
  for (let i = 0; !live; i++) {
    if (cluster.owner(cluster.slotOf(`live:${i}`)) !== dead.port) live = `live:${i}`;
  }
  const gone = new Promise((r) => dead.proc.on('exit', r));
  dead.proc.kill('SIGKILL');
  await gone;
  // the consumer's budget is on the dead master: budgets closed, a 503
  for (const g of nodes) {
    const r = await chat(g, 'after the kill', {}, auth('k-mover'));
    const j = await r.json();
    assert.equal(r.status, 503, JSON.stringify(j));
    assert.equal(j.error.code, 'limits_store_unavailable');
  }
  // a key on a live master: written and read
  assert.deepEqual(await redis(gw, 'SET', live, 'still'), { ok: 'OK' });
  assert.deepEqual(await redis(gw, 'GET', live), { ok: 'still' });
  // a key on the dead one: an error, not a hang
  const lost = await redis(gw, 'GET', '{c:mover}');
  assert.ok(lost.err, JSON.stringify(lost));
});
