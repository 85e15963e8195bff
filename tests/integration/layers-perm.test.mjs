// The host in layers, stage permissions: a C stage and a Lua stage that
// make the same host calls in the same stages get the same answers (one
// table says which call is allowed where), e.g. set_model is refused in
// on_log for both and allowed in on_route for both.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startGateway, config, chat, sseEvents, sleep, path, BUILD, ROOT,
} from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: permc
    plugin: ${path.join(BUILD, 'tests/fixtures/permprobe.so')}
  - name: permlua
    lua: ${path.join(ROOT, 'tests/integration/fixtures/permprobe.lua')}`,
  }), { workers: 1 });
});
after(async () => { await gw.stop(); await mock.stop(); });

const CALLS = ['set_model', 'set_request_header', 'set_upstream_header',
  'set_response_header', 'set_consumer', 'add_target', 'set_response_chunk',
  'pause'];
const STAGES = ['on_request', 'on_route', 'on_upstream_request',
  'on_upstream_response', 'on_response_headers', 'on_response_body', 'on_log'];

// {kind: {stage: {call: Set of answers}}} from the probes' log lines
function answers(text) {
  const out = { c: {}, lua: {} };
  for (const m of text.matchAll(/perm (c|lua) (\w+) (\w+)=(ok|no)/g)) {
    const [, kind, stage, call, ans] = m;
    out[kind][stage] ??= {};
    (out[kind][stage][call] ??= new Set()).add(ans);
  }
  return out;
}

async function probeOnce(stream) {
  const from = gw.stderr.length;
  const r = await chat(gw, 'perm probe', stream ? { stream: true } : {});
  assert.equal(r.status, 200);
  if (stream) await sseEvents(r); else await r.json();
  // on_log runs after the answer: wait for both stages' last line
  const end = Date.now() + 5000;
  for (;;) {
    const text = gw.stderr.slice(from);
    const a = answers(text);
    if (a.c.on_log?.pause && a.lua.on_log?.pause) return { a, text };
    if (Date.now() > end) assert.fail(`no on_log probe lines:\n${gw.stderr.slice(from)}`);
    await sleep(20);
  }
}

for (const stream of [false, true]) {
  test(`a C stage and a Lua stage get the same answer for each host call in each stage (${stream ? 'stream' : 'whole body'})`, async () => {
    const { a } = await probeOnce(stream);
    for (const stage of STAGES) {
      for (const call of CALLS) {
        const c = [...(a.c[stage]?.[call] ?? [])].join();
        const l = [...(a.lua[stage]?.[call] ?? [])].join();
        assert.ok(c !== '', `C stage did not try ${call} in ${stage}`);
        assert.equal(l, c, `${call} in ${stage}: Lua says ${l}, C says ${c}`);
      }
    }
    assert.equal([...a.c.on_log.set_model].join(), 'no');
    assert.equal([...a.c.on_route.set_model].join(), 'ok');
    // ABI 1.6: a stream's body stage may set a timer (it does not pause)
    assert.equal([...a.c.on_response_body.body_timer].join(), stream ? 'ok' : 'no');
    assert.equal([...a.c.on_request.set_consumer].join(), 'ok');
    assert.equal([...a.c.on_route.set_consumer].join(), 'no');
    assert.equal([...a.c.on_route.pause].join(), 'ok');
    assert.equal([...a.c.on_response_body.pause].join(), 'no');
    assert.equal([...a.c.on_response_body.set_response_chunk].join(), 'ok');
  });
}

test('a Lua stage refused a call is told why, from the same table', async () => {
  const { text } = await probeOnce(false);
  assert.match(text, /perm lua on_log set_model=no \(mf\.route\.set_model: set_model is not allowed in on_log; only in on_request, on_route\)/);
  assert.match(text, /perm lua on_route set_consumer=no \(mf\.req\.set_consumer: set_consumer is not allowed in on_route; only in on_request\)/);
  assert.match(text, /perm lua on_log pause=no \(.*mf\.sleep: an async call \(pausing the stage\) is not allowed in on_log; only in on_request, on_route, on_upstream_request, on_upstream_response, on_response_headers, an endpoint handler\)/);
});

test('the Lua binding reads and changes the request through the host API; mf.http helpers are embedded', async () => {
  const g = await startGateway(config(mock.url, {
    stages: `
  - name: binding
    lua: ${path.join(ROOT, 'tests/integration/fixtures/binding.lua')}`,
  }), { workers: 1 });
  try {
    let r = await chat(g, 'rewrite me', { model: 'gpt-3.5-turbo' });
    assert.equal(r.status, 200, await r.clone().text());
    assert.equal(r.headers.get('x-model'), 'gpt-4o');
    assert.equal(r.headers.get('x-first-target'), 'openai/gpt-4o');
    assert.equal(r.headers.get('x-user-text'), 'rewritten by the stage');
    assert.match((await r.json()).choices[0].message.content, /rewritten by the stage/);
    r = await chat(g, [{ type: 'text', text: 'part one' }, { type: 'text', text: 'part two' }]);
    assert.equal(r.status, 200, await r.clone().text());
    assert.equal(r.headers.get('x-user-text'), 'part one|part two');
    await r.json();
  } finally {
    await g.stop();
  }
});
