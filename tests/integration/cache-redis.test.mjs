// The cache with `redis:`: entries one node stores are served by another
// (two gateways, one real redis-server), and a purge on one node reaches
// both.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, post, sleep, path, writeConfig, BIN, startRedis, adminCommand } from './harness.mjs';

let mock, redis, a, b, sockA, sockB;

async function node(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `mf-cache-${name}-`));
  const sock = path.join(dir, 'admin.sock');
  const gw = await startGateway(config(mock.url, {
    stages: `  - { name: cache, plugin: cache, config: { scope: global, coalesce_wait: 10m } }`,
  }) + `
admin: { socket: ${sock} }
redis: { host: 127.0.0.1, port: ${redis.port}, timeout: 500ms }
`, { dir });
  return [gw, sock];
}

before(async () => {
  mock = await startMock();
  redis = await startRedis();
  [a, sockA] = await node('a');
  [b, sockB] = await node('b');
});

after(async () => {
  await a.stop();
  await b.stop();
  await mock.stop();
  await redis.stop('SIGTERM');
});

async function counted(fn) {
  const before = await mock.count();
  const out = await fn();
  return { out, calls: (await mock.count()) - before };
}

// waits until Redis holds n cache entries (a store is written after the answer)
async function entries(n) {
  for (let i = 0; i < 200; i++) {
    const keys = redis.cli('--scan', '--pattern', 'mf:cache:e:*').split('\n').filter(Boolean);
    if (keys.length >= n) return keys;
    await sleep(20);
  }
  throw new Error(`Redis never held ${n} cache entries`);
}

test('an entry stored by one node is served by the other, stream and whole', async () => {
  const q = '[[mock:chunks=5]] shared between nodes';
  const s1 = await chat(a, q, { stream: true });
  assert.equal(s1.headers.get('x-manifold-cache'), 'miss');
  const t1 = await s1.text();
  await entries(1);
  const { out, calls } = await counted(async () => {
    const s2 = await chat(b, q, { stream: true });
    const w = await chat(b, q, {});
    return { s2, t2: await s2.text(), w, jw: await w.json() };
  });
  assert.equal(calls, 0);
  assert.equal(out.s2.headers.get('x-manifold-cache'), 'hit');
  assert.equal(out.t2, t1);
  assert.equal(out.w.headers.get('x-manifold-cache'), 'hit');
  assert.equal(out.jw.choices[0].finish_reason, 'stop');
  // the Anthropic SDK's shape from the same entry, on the first node
  const m = await post(a, '/v1/messages', { model: 'gpt-4o', max_tokens: 1024, messages: [{ role: 'user', content: q }] });
  assert.equal(m.status, 200);
  await m.json();
});

test('a purge on one node reaches the other', async () => {
  const q = 'purged on every node';
  await (await chat(a, q, {})).json();
  await entries(2);
  const hit = await chat(a, q, {});
  assert.equal(hit.headers.get('x-manifold-cache'), 'hit');
  await hit.json();
  const p = await adminCommand(sockB, 'cache.purge', { model: 'gpt-4o' });
  assert.equal(p.status, 200);
  assert.match(p.json.redis, /marker written/);
  // node a no longer serves the purged entry, at once
  const onA = await chat(a, q, {});
  assert.equal(onA.headers.get('x-manifold-cache'), 'miss');
  await onA.json();
  // what was stored after the purge is served again
  await sleep(5);
  for (let i = 0; i < 100; i++) {
    const again = await chat(b, q, {});
    await again.json();
    if (again.headers.get('x-manifold-cache') === 'hit') return;
    await sleep(20);
  }
  assert.fail('the entry stored after the purge was never served');
});

test('coalescing across nodes: concurrent identical misses on both nodes make one upstream call', async () => {
  const q = '[[mock:delay=500 chunks=4]] asked on every node at once';
  const { out: rs, calls } = await counted(() => Promise.all(Array.from({ length: 24 }, async (_, i) => {
    const g = i % 2 ? b : a;
    const stream = i % 3 === 0;
    const res = await chat(g, q, stream ? { stream: true } : {});
    const text = await res.text();
    let content;
    if (stream) {
      content = text.split('\n\n').filter((e) => e.startsWith('data: {'))
        .map((e) => JSON.parse(e.slice(6)).choices[0]?.delta?.content || '').join('');
    } else {
      content = JSON.parse(text).choices[0].message.content;
    }
    return { status: res.status, cache: res.headers.get('x-manifold-cache'),
      shared: res.headers.get('x-manifold-cache-shared'), content };
  })));
  assert.equal(calls, 1);
  assert.ok(rs.every((r) => r.status === 200));
  assert.equal(rs.filter((r) => r.cache === 'miss').length, 1);
  assert.ok(rs[0].content.length > 0);
  for (const r of rs) assert.equal(r.content, rs[0].content);
  assert.ok(rs.every((r) => r.cache === 'miss' || r.shared === 'in-flight'));
  // the leader let its lock go
  assert.equal(redis.cli('--scan', '--pattern', 'mf:cache:l:*'), '');
});

test('coalescing across nodes: a leader that fails lets the other node\'s requests make their own calls', { timeout: 30000 }, async () => {
  // coalesce_wait is 10m: only the lock let go can end the wait
  const q = '[[mock:delay=300 status=500]] failing on every node';
  const { out: rs, calls } = await counted(() => Promise.all(Array.from({ length: 6 }, async (_, i) => {
    const res = await chat(i % 2 ? b : a, q, {});
    await res.text();
    return res.status;
  })));
  assert.ok(rs.every((s) => s === 502));
  assert.equal(calls, 6);
});

// reads a response's body as it comes; onChunk(text so far) after each read
async function readAll(res, onChunk = () => {}) {
  const reader = res.body.getReader();
  let text = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text;
    text += Buffer.from(value).toString();
    onChunk(text);
  }
}
const contents = (t) => t.split('\n\n').filter((e) => e.startsWith('data: {'))
  .map((e) => JSON.parse(e.slice(6)).choices?.[0]?.delta?.content).filter((c) => c);

// a stream leader on node a, once its answer is under way: the first
// content read, the rest read by the promise it returns with
async function leaderOn(q) {
  const res = await chat(a, q, { max_tokens: 64, stream: true });
  const state = { text: '', done: false };
  const reader = res.body.getReader();
  while (!state.text.includes('"content":"')) {
    const { done, value } = await reader.read();
    if (done) break;
    state.text += Buffer.from(value).toString();
  }
  state.promise = (async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      state.text += Buffer.from(value).toString();
    }
    state.done = true;
    return { cache: res.headers.get('x-manifold-cache'), text: state.text };
  })();
  return state;
}

test('coalescing across nodes: stream requests on another node get the leader\'s events live, through Redis', { timeout: 30000 }, async () => {
  const q = '[[mock:chunks=20 chunk_delay=100]] relayed live to the other node';
  const { out: rs, calls } = await counted(async () => {
    const lead = await leaderOn(q);
    const follower = async (res) => {
      let leaderSeen = -1;
      const text = await readAll(res, (t) => {
        if (leaderSeen < 0 && /"content":"|content_block_delta/.test(t)) leaderSeen = contents(lead.text).length;
      });
      return { cache: res.headers.get('x-manifold-cache'), shared: res.headers.get('x-manifold-cache-shared'), text, leaderSeen };
    };
    return Promise.all([
      lead.promise,
      ...Array.from({ length: 3 }, async () => follower(await chat(b, q, { max_tokens: 64, stream: true }))),
      (async () => ({ ...(await follower(await post(b, '/v1/messages', { model: 'gpt-4o', max_tokens: 64, stream: true, messages: [{ role: 'user', content: q }] }))), anthropic: true }))(),
    ]);
  });
  assert.equal(calls, 1);
  const [leader, ...followers] = rs;
  assert.equal(leader.cache, 'miss');
  const all = contents(leader.text);
  assert.equal(all.length, 20);
  for (const f of followers) {
    assert.equal(f.cache, 'hit');
    assert.equal(f.shared, 'in-flight');
    // its first event came while the leader's stream still went on
    assert.ok(f.leaderSeen >= 0 && f.leaderSeen < all.length, `live: the leader had sent ${f.leaderSeen} of ${all.length}`);
    if (f.anthropic) {
      assert.match(f.text, /event: message_stop\n/);
      const deltas = f.text.split('\n\n').filter((e) => e.startsWith('event: content_block_delta'))
        .map((e) => JSON.parse(e.split('\n')[1].slice(6)).delta.text).join('');
      assert.equal(deltas, all.join(''));
    } else {
      assert.equal(f.text, leader.text, 'byte for byte');
    }
  }
  // the relay stream goes with the lock
  for (let i = 0; i < 100; i++) {
    const s = redis.cli('--scan', '--pattern', 'mf:cache:[sl]:*');
    if (s === '') break;
    assert.ok(i < 99, `left in Redis: ${s}`);
    await sleep(20);
  }
});

test('coalescing across nodes: a stream on another node whose leader\'s stream is cut after it began gets an error event', { timeout: 30000 }, async () => {
  const q = '[[mock:chunks=20 chunk_delay=100 cut=10]] cut while relayed';
  const { out: rs, calls } = await counted(async () => {
    const lead = await leaderOn(q);
    return Promise.all([
      lead.promise,
      (async () => {
        const res = await chat(b, q, { max_tokens: 64, stream: true });
        return { id: res.headers.get('x-request-id'), cache: res.headers.get('x-manifold-cache'), text: await res.text() };
      })(),
      (async () => {
        const res = await post(b, '/v1/messages', { model: 'gpt-4o', max_tokens: 64, stream: true, messages: [{ role: 'user', content: q }] });
        return { id: res.headers.get('x-request-id'), cache: res.headers.get('x-manifold-cache'), text: await res.text(), anthropic: true };
      })(),
    ]);
  });
  assert.equal(calls, 1, 'no follower called');
  const [leader, ...followers] = rs;
  assert.match(leader.text, /"code":"upstream_stream_cut"/);
  for (const f of followers) {
    assert.equal(f.cache, 'hit');
    const last = f.text.trimEnd().split('\n\n').pop();
    if (f.anthropic) {
      assert.match(f.text, /event: content_block_delta\n/);
      assert.doesNotMatch(f.text, /message_stop/);
      assert.match(last, /^event: error\ndata: .*"type":"api_error"/);
    } else {
      assert.deepEqual(contents(f.text), contents(leader.text));
      assert.equal(JSON.parse(last.slice(6)).error.code, 'upstream_stream_cut');
      assert.doesNotMatch(f.text, /\[DONE\]/);
    }
    const line = await b.waitLog((l) => l.request_id === f.id);
    assert.match(line.error, /cut/);
  }
});

test('coalescing across nodes: a lock left by a dead node ends with its expiry, then the waiting request calls', { timeout: 30000 }, async () => {
  const q = 'asked while a dead node held the lock';
  // the question's key: answered and stored once, then its entry deleted
  const first = await chat(a, q, {});
  await first.json();
  let key;
  for (let i = 0; i < 200 && !key; i++) {
    const keys = redis.cli('--scan', '--pattern', 'mf:cache:e:*').split('\n').filter(Boolean);
    for (const k of keys) {
      const v = redis.cli('GET', k);
      if (v.includes('asked while a dead node')) key = k.slice('mf:cache:e:{'.length, -1);
    }
    if (!key) await sleep(20);
  }
  assert.ok(key, 'the entry was stored');
  const p = await adminCommand(sockA, 'cache.purge', { key });
  assert.equal(p.status, 200);
  // a lock as a node that died mid-call leaves it (its token, a short life)
  redis.cli('SET', `mf:cache:l:{${key}}`, 'dead-node', 'PX', '400');
  const { out, calls } = await counted(async () => {
    const r = await chat(b, q, {});
    return { r, j: await r.json() };
  });
  assert.equal(out.r.status, 200);
  assert.equal(out.r.headers.get('x-manifold-cache'), 'miss');
  assert.equal(calls, 1, 'it called once the lock expired');
  assert.ok(out.j.choices[0].message.content.length > 0);
});

test('coalesce_wait needs redis:', () => {
  const file = writeConfig(config(mock.url, {
    stages: `  - { name: cache, plugin: cache, config: { coalesce_wait: 5s } }`,
  }));
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /coalesce_wait .* needs `redis:`/);
});

test('Redis down: requests are answered as misses, nothing breaks', async () => {
  redis.proc.kill('SIGSTOP');
  try {
    const { out, calls } = await counted(async () => {
      const r = await chat(a, 'while redis sleeps', {});
      return { r, j: await r.json() };
    });
    assert.equal(out.r.status, 200);
    assert.equal(out.r.headers.get('x-manifold-cache'), 'miss');
    assert.equal(calls, 1);
  } finally {
    redis.proc.kill('SIGCONT');
  }
});

test('a purge by key deletes the entry; Redis down, a purge says so', async () => {
  const q = 'purged by its key';
  await (await chat(a, q, {})).json();
  let hitOnB = false;
  for (let i = 0; i < 100 && !hitOnB; i++) { // stored at on_log, after the answer
    const hit = await chat(b, q, {});
    await hit.json();
    hitOnB = hit.headers.get('x-manifold-cache') === 'hit';
    if (!hitOnB) await sleep(20);
  }
  assert.ok(hitOnB);
  const keys = await entries(1);
  const before = keys.length;
  for (const k of keys) {
    await adminCommand(sockA, 'cache.purge', { key: k.slice('mf:cache:e:{'.length, -1) });
  }
  assert.equal(redis.cli('--scan', '--pattern', 'mf:cache:e:*'), '', `${before} entries deleted`);
  const miss = await chat(b, q, {});
  assert.equal(miss.headers.get('x-manifold-cache'), 'miss');
  await miss.json();
  redis.proc.kill('SIGSTOP');
  try {
    const p = await adminCommand(sockA, 'cache.purge', { all: true });
    assert.equal(p.status, 503);
    assert.ok(p.json.error.length > 0);
  } finally {
    redis.proc.kill('SIGCONT');
  }
});
