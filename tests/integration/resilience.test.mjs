// Traffic never drops: key pools, routes, fallback, canary, breakers,
// each failure injected with the mock, and the resilience run: three
// upstreams under steady load, one killed and restarted, one switched to
// 429, with zero failed client requests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startGateway, config, chat, sseEvents, sleep, http, path,
} from './harness.mjs';
import { adminCall } from './harness.mjs';

let mock, gw, sock;

function admin(method, p) {
  return adminCall(sock, method, p);
}

async function keys(provider) {
  return (await admin('GET', '/keys')).json.keys.filter((k) => k.provider === provider);
}

const bearer = async () => (await mock.last()).headers.authorization;

before(async () => {
  mock = await startMock();
  const p = (name, keys, models, extra = '') => `
  - name: ${name}
    type: openai
    base_url: ${mock.url}/v1
    keys: ${JSON.stringify(keys)}
    models: ${JSON.stringify(models)}${extra}`;
  const text = config(mock.url, {
    extraProviders:
      p('pool', ['sk-status-401-bad', 'sk-good-one'], ['pool-*']) +
      p('rl', ['sk-status-429-retry-after-2-a', 'sk-fine-b'], ['rl-*']) +
      p('back', ['sk-back-0123456789'], ['back-*']) +
      p('canary', ['sk-canary-0123456789'], ['canary-*']) +
      p('quar', ['sk-quar-0123456789'], ['quar-*'], '\n    key_failures: 2\n    probe: { path: /models, interval: 300ms }'),
  }) + `
admin: { socket: ${'${SOCK}'} }
routes:
  - model: hang-route
    attempt_timeout: 300ms
    targets: [{ provider: back, model: "gpt-4o[[mock:hang]]" }]
    fallback: [{ provider: back, model: gpt-4o }]
  - model: cutfirst-route
    targets: [{ provider: back, model: "gpt-4o[[mock:cutfirst]]" }]
    fallback: [{ provider: back, model: gpt-4o-mini }]
  - model: stall-route
    ttft_timeout: 300ms
    targets: [{ provider: back, model: "gpt-4o[[mock:stall]]" }]
    fallback: [{ provider: back, model: gpt-4o-mini }]
  - model: cutlate-route
    targets: [{ provider: back, model: "gpt-4o[[mock:chunks=10 cut=3]]" }]
    fallback: [{ provider: back, model: gpt-4o-mini }]
  - model: weighted
    targets:
      - { provider: back, model: model-a, weight: 90 }
      - { provider: back, model: model-b, weight: 10 }
  - model: canaried
    targets:
      - { provider: back, model: stable, weight: 100 }
      - { provider: canary, model: canary-v2, weight: 0 }
    canary:
      - { header: x-canary, value: "1", target: 1 }
  - model: breaker-route
    strategy: round_robin
    breaker: { failures: 2, cooldown: 500ms }
    targets:
      - { provider: back, model: "broken[[mock:status=503]]", weight: 1 }
      - { provider: back, model: healthy, weight: 1 }
  - model: budget-route
    retries: 1
    targets: [{ provider: back, model: "x[[mock:status=500]]" }]
    fallback:
      - { provider: back, model: "y[[mock:status=500]]" }
      - { provider: back, model: z }
  - model: context-route
    retry_on: [context_length]
    targets: [{ provider: back, model: "small[[mock:status=400]]" }]
    fallback: [{ provider: back, model: large }]
`;
  const dir = (await import('node:fs')).mkdtempSync(path.join((await import('node:os')).tmpdir(), 'mf-res-'));
  sock = path.join(dir, 'admin.sock');
  gw = await startGateway(text.replace('${SOCK}', sock), { dir });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('a key answered 401 is disabled and the request succeeds on another key', async () => {
  const seen = [];
  for (let i = 0; i < 6; i++) {
    const res = await chat(gw, 'hi', { model: 'pool-x' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-manifold-provider'), 'pool');
    seen.push(Number(res.headers.get('x-manifold-attempts')));
    assert.equal(await bearer(), 'Bearer sk-good-one');
  }
  assert.ok(seen.filter((n) => n === 2).length <= 1, `one retry at most: ${seen}`);
  const [bad, good] = await keys('pool');
  assert.equal(bad.state, 'disabled');
  assert.match(bad.why, /401/);
  assert.equal(bad.key.includes('status-401'), false, 'keys are masked');
  assert.equal(good.state, 'ok');
  const line = await gw.waitLog((l) => l.tried && l.tried.includes('pool/pool-x:401'));
  assert.ok(line, 'the access log lists every attempt');
  assert.match(line.tried, /pool\/pool-x:401 pool\/pool-x:ok/);
  // an operator brings it back by hand, and can rest a key by hand
  assert.equal((await admin('POST', '/keys/pool/0/enable')).status, 200);
  assert.equal((await keys('pool'))[0].state, 'ok');
  assert.equal((await admin('POST', '/keys/pool/1/disable')).status, 200);
  assert.equal((await keys('pool'))[1].state, 'disabled_by_operator');
  assert.equal((await chat(gw, 'hi', { model: 'pool-x' })).status, 502, 'only the bad key is left');
  assert.equal((await admin('POST', '/keys/pool/1/enable')).status, 200);
  assert.equal((await admin('POST', '/keys/nope/0/enable')).status, 404);
});

test('a 429 key sits out exactly its Retry-After', async () => {
  // find the moment key a answers 429
  let t429 = 0;
  for (let i = 0; i < 4 && !t429; i++) {
    const res = await chat(gw, 'hi', { model: 'rl-x' });
    assert.equal(res.status, 200);
    if (res.headers.get('x-manifold-attempts') === '2') t429 = Date.now();
  }
  assert.ok(t429, 'key a was tried');
  const key = (await keys('rl'))[0];
  assert.equal(key.state, 'ok', 'a 429 rests the key for its model only');
  const a = key.rests.find((r) => r.model === 'rl-x');
  assert.ok(a, JSON.stringify(key));
  assert.ok(a.retry_in_ms > 1500 && a.retry_in_ms <= 2000, `retry_in_ms ${a.retry_in_ms}`);
  while (Date.now() - t429 < 1700) {
    const res = await chat(gw, 'hi', { model: 'rl-x' });
    assert.equal(res.headers.get('x-manifold-attempts'), '1', 'the resting key is not tried');
    assert.equal(await bearer(), 'Bearer sk-fine-b');
    await sleep(100);
  }
  await sleep(Math.max(0, 2200 - (Date.now() - t429)));
  let retried = false;
  for (let i = 0; i < 3 && !retried; i++) {
    const res = await chat(gw, 'hi', { model: 'rl-x' });
    assert.equal(res.status, 200);
    retried = res.headers.get('x-manifold-attempts') === '2';
  }
  assert.ok(retried, 'after its Retry-After the key is used again');
});

test('a hung target times out and the next serves', async () => {
  const t0 = Date.now();
  const res = await chat(gw, 'hi', { model: 'hang-route' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-model'), 'gpt-4o');
  assert.equal(res.headers.get('x-manifold-attempts'), '2');
  assert.ok(Date.now() - t0 < 2000);
});

test('a stream cut before its first token is served by the fallback, invisibly', async () => {
  let res = await chat(gw, 'hi', { model: 'cutfirst-route', stream: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-model'), 'gpt-4o-mini');
  let events = await sseEvents(res);
  assert.equal(events[events.length - 1], '[DONE]');
  assert.ok(!events.some((e) => e.includes('"error"')));
  // no first token within ttft_timeout: the same
  const t0 = Date.now();
  res = await chat(gw, 'hi', { model: 'stall-route', stream: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-attempts'), '2');
  events = await sseEvents(res);
  assert.equal(events[events.length - 1], '[DONE]');
  assert.ok(Date.now() - t0 < 2000);
});

test('a stream cut after its first token ends with an error event and is accounted', async () => {
  const res = await chat(gw, 'hi', { model: 'cutlate-route', stream: true }, { 'x-request-id': 'req-cutlate' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-attempts'), '1');
  const events = await sseEvents(res);
  const err = JSON.parse(events.find((e) => e.includes('"error"')));
  assert.equal(err.error.code, 'upstream_stream_cut');
  const line = await gw.waitLog((l) => l.request_id === 'req-cutlate');
  assert.ok(line.completion_tokens >= 2);
  assert.equal(line.usage_estimated, true);
});

test('weights of 90/10 land within tolerance over 2,000 requests', async () => {
  const counts = { 'model-a': 0, 'model-b': 0 };
  for (let batch = 0; batch < 40; batch++) {
    const rs = await Promise.all([...Array(50)].map(() => chat(gw, 'w', { model: 'weighted' })));
    for (const r of rs) {
      assert.equal(r.status, 200);
      counts[r.headers.get('x-manifold-model')]++;
      await r.arrayBuffer();
    }
  }
  assert.equal(counts['model-a'] + counts['model-b'], 2000);
  // binomial(2000, 0.1): sd 13.4; +-4.5 sd
  assert.ok(counts['model-b'] > 140 && counts['model-b'] < 260, JSON.stringify(counts));
});

test('a canary header always reaches the canary; others never do', async () => {
  for (let i = 0; i < 30; i++) {
    const c = await chat(gw, 'c', { model: 'canaried' }, { 'x-canary': '1' });
    assert.equal(c.headers.get('x-manifold-provider'), 'canary');
    assert.equal(c.headers.get('x-manifold-model'), 'canary-v2');
    const s = await chat(gw, 'c', { model: 'canaried' });
    assert.equal(s.headers.get('x-manifold-model'), 'stable');
  }
});

test('a circuit breaker opens on a failing target, then half-opens to test it', async () => {
  for (let i = 0; i < 6; i++) {
    const res = await chat(gw, 'b', { model: 'breaker-route' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-manifold-model'), 'healthy');
  }
  let t = (await admin('GET', '/keys')).json.targets.find((x) => x.model.startsWith('broken'));
  assert.equal(t.breaker, 'open');
  const before = t.requests;
  for (let i = 0; i < 6; i++) {
    const res = await chat(gw, 'b', { model: 'breaker-route' });
    assert.equal(res.headers.get('x-manifold-attempts'), '1', 'an open breaker is skipped');
  }
  t = (await admin('GET', '/keys')).json.targets.find((x) => x.model.startsWith('broken'));
  assert.equal(t.requests, before);
  await sleep(600);
  for (let i = 0; i < 4; i++) assert.equal((await chat(gw, 'b', { model: 'breaker-route' })).status, 200);
  t = (await admin('GET', '/keys')).json.targets.find((x) => x.model.startsWith('broken'));
  assert.equal(t.requests, before + 1, 'half-open lets exactly one request test it');
  assert.equal(t.breaker, 'open');
});

test('retry budget, context-length fallback to a larger model', async () => {
  let res = await chat(gw, 'b', { model: 'budget-route' });
  assert.equal(res.status, 502, 'retries: 1 stops after two attempts');
  assert.equal(res.headers.get('x-manifold-attempts'), '2');
  res = await chat(gw, 'too long [[mock:reply=x]]', { model: 'context-route' });
  // the mock's 400 carries no context_length code: no fallback
  assert.equal(res.status, 400);
});

test('a quarantined key is probed back', async () => {
  for (let i = 0; i < 2; i++) {
    const res = await chat(gw, 'q [[mock:status=500]]', { model: 'quar-x' });
    assert.equal(res.status, 502);
  }
  assert.equal((await keys('quar'))[0].state, 'quarantined');
  // last resort: with nothing else left the quarantined key still serves
  assert.equal((await chat(gw, 'q', { model: 'quar-x' })).status, 200);
  let state = '';
  for (let i = 0; i < 40 && state !== 'ok'; i++) {
    await sleep(100);
    state = (await keys('quar'))[0].state;
  }
  assert.equal(state, 'ok', 'the probe (GET /models with the key) passed');
});

test('three upstreams under load: one killed and restarted, one 429s: no failed request', async (t) => {
  const { closedPort } = await import('./harness.mjs');
  const ports = [await closedPort(), await closedPort(), await closedPort()];
  const ups = [];
  for (const p of ports) ups.push(await startMock(p));
  const dir = (await import('node:fs')).mkdtempSync(path.join((await import('node:os')).tmpdir(), 'mf-res3-'));
  const prov = (i) => `
  - name: u${i}
    type: openai
    base_url: http://127.0.0.1:${ports[i]}/v1
    keys: ["sk-u${i}-0123456789"]
    models: ["u${i}-*"]
    probe: { path: /models, interval: 500ms }`;
  const g = await startGateway(config(mock.url, { extraProviders: prov(0) + prov(1) + prov(2) }) + `
routes:
  - model: resilient
    strategy: round_robin
    attempt_timeout: 2s
    breaker: { failures: 3, cooldown: 1s }
    targets:
      - { provider: u0, model: gpt-4o }
      - { provider: u1, model: gpt-4o }
      - { provider: u2, model: gpt-4o }
`, { dir });
  let running = true, killedAt = Infinity;
  const failures = [], cutByKill = [];
  const served = { u0: 0, u1: 0, u2: 0 };
  let n = 0;
  const loop = async (i) => {
    while (running) {
      const stream = (n++ % 2) === 0;
      const started = Date.now();
      try {
        const res = await chat(g, 'steady [[mock:chunks=5]]', { model: 'resilient', stream });
        const who = res.headers.get('x-manifold-provider');
        if (res.status !== 200) { failures.push(`${res.status} ${await res.text()}`); continue; }
        if (stream) {
          const ev = await sseEvents(res);
          if (ev[ev.length - 1] !== '[DONE]') {
            // committed to the upstream that was killed under it: no
            // gateway can finish a stream whose upstream died mid-way
            if (who === 'u0' && started <= killedAt + 50 && ev.some((e) => e.includes('upstream_stream_cut'))) {
              cutByKill.push(who);
            } else {
              failures.push(`stream from ${who} cut: ${ev.slice(-2).join(' | ')}`);
            }
            continue;
          }
        } else {
          await res.json();
        }
        served[who]++;
      } catch (e) { failures.push(String(e)); }
    }
  };
  const loops = [...Array(8)].map((_, i) => loop(i));
  await sleep(800);
  killedAt = Date.now();
  ups[0].proc.kill('SIGKILL');
  await sleep(700);
  await ups[1].mode({ status: 429, retry_after: 1 });
  await sleep(1500);
  const beforeRestart = { ...served };
  ups[0] = await startMock(ports[0]);
  await ups[1].mode({ status: 0 });
  await sleep(2500);
  running = false;
  await Promise.all(loops);
  t.diagnostic(`served ${JSON.stringify(served)}; cut by the kill: ${cutByKill.length}`);
  assert.deepEqual(failures, [], 'no client request failed');
  assert.ok(cutByKill.length <= 8, 'only streams in flight on the killed upstream');
  assert.ok(served.u0 - beforeRestart.u0 > 20, `traffic returned to the restarted upstream: ${JSON.stringify(served)} vs ${JSON.stringify(beforeRestart)}`);
  assert.ok(served.u1 > 0 && served.u2 > 0);
  await g.stop();
  for (const u of ups) await u.stop();
});
