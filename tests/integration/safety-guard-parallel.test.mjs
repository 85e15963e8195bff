// The guard stage's input checks in parallel with the upstream call
// (`input: parallel`): the moderation call and the upstream call run at
// once; nothing of the answer reaches the client before the verdict; a
// block cancels the upstream call (an upstream that never answers still
// gives the client its 400 at once) or withholds an answer that came
// first, stream or not, in the client's protocol.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startMock, startGateway, config, chat, post, writeConfig, BIN } from './harness.mjs';

let mock, fast, slow, both;

const guard = (mod) => `
  - name: guard
    plugin: guard
    config:
      input: parallel
      moderation: { url: "${mod}", timeout_ms: 5000, fail: closed }`;

before(async () => {
  mock = await startMock();
  fast = await startGateway(config(mock.url, { stages: guard(`${mock.url}/v1/moderations`) }));
  // the verdict comes after the answer
  slow = await startGateway(config(mock.url, { stages: guard(`${mock.url}/v1/moderations/%5B%5Bmock:delay=400%5D%5D`) }));
  // the moderation check and the judge, both beside the upstream call
  both = await startGateway(config(mock.url, { stages: guard(`${mock.url}/v1/moderations`) + `
      judge: { model: gpt-4o-mini, timeout_ms: 3000 }` }));
});

after(async () => {
  await fast.stop();
  await slow.stop();
  await both.stop();
  await mock.stop();
});

async function paths(from) {
  const all = await (await fetch(`${mock.url}/_mock/requests`)).json();
  return all.slice(from).map((q) => q.path.replace(/\/%5B.*$/, '').replace(/\[\[.*$/, ''));
}

test('a clean request: both calls made, the answer whole', async () => {
  for (const g of [fast, slow]) {
    const before = await mock.count();
    const res = await chat(g, 'hello there');
    assert.equal(res.status, 200);
    assert.equal((await res.json()).choices[0].message.content, 'Hello from mock. You said: hello there');
    const p = await paths(before);
    assert.ok(p.includes('/v1/chat/completions') && p.some((x) => x.startsWith('/v1/moderations')), p.join(' '));
    const s = await chat(g, 'stream me', { stream: true, model: 'gpt-4o[[mock:split=3]]' });
    assert.equal(s.status, 200);
    const raw = await s.text();
    assert.match(raw, /\[DONE\]/);
  }
});

test('a block cancels an upstream call that has not answered', async () => {
  const before = await mock.count();
  const res = await chat(fast, 'this is mock-flag-violence', { model: 'gpt-4o[[mock:hang]]' });
  assert.equal(res.status, 400);
  const b = await res.json();
  assert.equal(b.error.code, 'content_filter');
  assert.match(b.error.message, /moderation check \(violence\)/);
  assert.equal(res.headers.get('x-manifold-guard'), 'moderation');
  // the upstream was called (in parallel), then cut
  assert.ok((await paths(before)).includes('/v1/chat/completions'));
  const line = await fast.waitLog((l) => l.status === 400 && /moderation check/.test(l.error ?? ''));
  assert.equal(line.status, 400);
});

test('an answer that came before the verdict is withheld: a block is the 400', async () => {
  const res = await chat(slow, 'this is mock-flag-hate');
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.code, 'content_filter');
  const s = await chat(slow, 'mock-flag-hate as a stream', { stream: true, model: 'gpt-4o[[mock:split=2]]' });
  assert.equal(s.status, 400);
  const raw = await s.text();
  assert.ok(!raw.includes('Hello from mock'), raw);
  const ant = await post(slow, '/v1/messages', {
    model: 'gpt-4o', max_tokens: 30, stream: true,
    messages: [{ role: 'user', content: 'mock-flag-violence again' }],
  });
  assert.equal(ant.status, 400);
  const ab = await ant.json();
  assert.equal(ab.type, 'error');
  assert.match(ab.error.message, /moderation check/);
});

test('config: input is before or parallel', () => {
  const file = writeConfig(config('http://127.0.0.1:9', { stages: '  - name: guard\n    plugin: guard\n    config: { input: sideways, moderation: { url: "http://x/v1/moderations" } }' }));
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /input: before or parallel/);
});

test('results: the wait for the verdict in a header, the log line and the histogram', async () => {
  const res = await chat(slow, 'all fine here');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-guard-checks'), 'input=moderation(parallel); output=none');
  const held = Number(res.headers.get('x-manifold-guard-hold-ms'));
  assert.ok(held >= 0, String(held));
  const line = await slow.waitLog((l) => l.status === 200 && l.guard_hold_ms !== null);
  assert.equal(line.guard_checks, 'input=moderation(parallel); output=none');
  const bl = await fast.waitLog((l) => l.status === 400 && l.guard === 'moderation');
  assert.equal(bl.guard_hold_ms, null);
});

test('moderation and the judge run beside each other and the upstream call; either blocks', async () => {
  const before = await mock.count();
  const ok = await chat(both, 'a harmless question');
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('x-manifold-guard-checks'), 'input=moderation(parallel),judge(parallel); output=none');
  const all = (await (await fetch(`${mock.url}/_mock/requests`)).json()).slice(before - (await mock.count()));
  const judged = all.filter((q) => q.path.endsWith('/chat/completions') && JSON.parse(q.body).response_format?.type === 'json_schema');
  assert.equal(judged.length, 1);
  assert.ok(all.some((q) => q.path.endsWith('/moderations')));
  const j = await chat(both, 'something unsafe please', { model: 'gpt-4o[[mock:hang]]' });
  assert.equal(j.status, 400);
  assert.equal(j.headers.get('x-manifold-guard'), 'judge');
  const m = await chat(both, 'this is mock-flag-violence', { model: 'gpt-4o[[mock:hang]]' });
  assert.equal(m.status, 400);
  assert.equal(m.headers.get('x-manifold-guard'), 'moderation');
});
