// The guard stage on streams with the moderation endpoint (`stream:`):
// hold (text released only after its checkpoint passed; a violation in
// the first checkpoint is a real 400, later ones end the stream with
// finish_reason content_filter, usage and [DONE]), stream_first (text
// released at once, cut on a violation), final (one check of the whole
// answer before the end), checkpoints every N bytes with overlap, and a
// check that takes longer than hold_ms following fail open or closed.
// The host side is api->hold_response (ABI 1.6): the output waits while
// the check runs and the end waits for the last verdict.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startMock, startGateway, config, chat, post, writeConfig, BIN } from './harness.mjs';

let mock;
const gws = {};

const guard = (mod, stream) => `
  - name: guard
    plugin: guard
    config:
      moderation: { url: "${mod}", timeout_ms: 3000, on: [output] }
      stream: ${stream}
  - name: prometheus
    plugin: prometheus`;

before(async () => {
  mock = await startMock();
  const url = `${mock.url}/v1/moderations`;
  const slow = `${mock.url}/v1/moderations/%5B%5Bmock:delay=1500%5D%5D`;
  const start = (mod, stream) => startGateway(config(mock.url, { stages: guard(mod, stream) }));
  gws.hold = await startGateway(config(mock.url, { stages: guard(url, '{ mode: hold, checkpoint: sentence, overlap: 0 }') }) +
    'status:\n  listen: 127.0.0.1:0\n');
  gws.first = await start(url, '{ mode: stream_first }');
  gws.final = await start(url, '{ mode: final }');
  gws.every = await start(url, '{ mode: hold, checkpoint: 16, overlap: 8 }');
  gws.open = await start(slow, '{ mode: hold, hold_ms: 200, fail: open }');
  gws.closed = await start(slow, '{ mode: hold, hold_ms: 200, fail: closed }');
  gws.slowtext = await start(url, '{ mode: hold, hold_ms: 20, overlap: 0 }');
  gws.stall = await start(url, '{ mode: hold, hold_ms: 50, overlap: 0 }');
  gws.stallopen = await start(slow, '{ mode: hold, hold_ms: 50, overlap: 0, fail: open }');
  // the judge (a model through the gateway) checks the stream, no moderation
  gws.judge = await startGateway(config(mock.url, { stages: `
  - name: guard
    plugin: guard
    config:
      judge: { model: gpt-4o-mini, on: [output], timeout_ms: 3000 }
      stream: { mode: hold, overlap: 0 }` }));
});

after(async () => {
  for (const g of Object.values(gws)) await g.stop();
  await mock.stop();
});

const reply = (text) => `[[mock:reply=${text.replaceAll(' ', '_')}]]`;

async function stream(g, text, n, extra = {}) {
  const res = await chat(g, reply(text), {
    stream: true, model: `gpt-4o[[mock:split=${n}]]`, stream_options: { include_usage: true }, ...extra,
  });
  const status = res.status;
  const raw = await res.text();
  const data = raw.split('\n\n').filter((b) => b.startsWith('data:')).map((b) => b.slice(5).trim());
  const events = status === 200 ? data.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d)) : [];
  let out = '';
  for (const e of events) out += e.choices?.[0]?.delta?.content ?? '';
  return { status, raw, data, events, text: out, headers: res.headers };
}

// the moderation inputs the mock got since `from` requests
async function checks(from) {
  // the mock keeps the last 64: those since `from` are the last n of them
  const n = (await mock.count()) - from;
  const all = await (await fetch(`${mock.url}/_mock/requests`)).json();
  return all.slice(Math.max(0, all.length - n)).filter((q) => q.path.includes('/moderations')).map((q) => JSON.parse(q.body).input[0]);
}

const finish = (s) => s.events.map((e) => e.choices?.[0]?.finish_reason).filter(Boolean);

test('hold: a clean stream arrives whole, each sentence checked before it goes', async () => {
  const text = 'One fine sentence. Another fine one! And a last?';
  for (const n of [1, 3, 7]) {
    const before = await mock.count();
    const s = await stream(gws.hold, text, n);
    assert.equal(s.status, 200);
    assert.equal(s.text, text, `n=${n}`);
    assert.deepEqual(finish(s), ['stop']);
    assert.ok(s.events.at(-1).usage?.completion_tokens > 0);
    assert.equal(s.data.at(-1), '[DONE]');
    const inputs = await checks(before);
    assert.ok(inputs.length >= 2, `n=${n}: ${inputs.length} checks`);
    // every byte of the answer was checked, in order
    assert.equal(inputs.join(''), text, `n=${n}`);
  }
});

test('hold: a violation in the first checkpoint is a real 400, nothing streamed', async () => {
  for (const n of [1, 4]) {
    const s = await stream(gws.hold, 'Here is mock-flag-violence now. More.', n);
    assert.equal(s.status, 400, `n=${n}`);
    assert.equal(s.headers.get('x-manifold-guard'), 'moderation');
    const b = JSON.parse(s.raw);
    assert.equal(b.error.code, 'content_filter');
    assert.match(b.error.message, /moderation check \(violence\)/);
    assert.ok(!s.raw.includes('Here is'));
  }
  const ant = await post(gws.hold, '/v1/messages', {
    model: 'gpt-4o[[mock:split=2]]', max_tokens: 50, stream: true,
    messages: [{ role: 'user', content: reply('Bad mock-flag-hate text.') }],
  });
  assert.equal(ant.status, 400);
  assert.equal((await ant.json()).type, 'error');
});

test('hold: a violation later ends the stream after the checked text, billed', async () => {
  for (const n of [1, 2, 5]) {
    const s = await stream(gws.hold, 'First part is fine. Then mock-flag-violence here. Tail.', n);
    assert.equal(s.status, 200, `n=${n}`);
    // the checkpoint is the end of the event that ends the sentence
    assert.ok(s.text.startsWith('First part is fine.') && s.text.length < 'First part is fine.'.length + n, `n=${n}: ${s.text}`);
    assert.ok(!s.raw.includes('mock-flag'));
    assert.deepEqual(finish(s), ['content_filter'], `n=${n}`);
    assert.ok(s.events.at(-1).usage?.completion_tokens > 0, `n=${n}`);
    assert.equal(s.data.at(-1), '[DONE]');
  }
  const line = await gws.hold.waitLog((l) => l.status === 200 && /moderation check \(violence\)/.test(l.error ?? ''));
  assert.ok(line.completion_tokens > 0, JSON.stringify(line));
});

test('hold: Anthropic stream clients get stop_reason refusal after the checked text', async () => {
  const res = await post(gws.hold, '/v1/messages', {
    model: 'gpt-4o[[mock:split=3]]', max_tokens: 50, stream: true,
    messages: [{ role: 'user', content: reply('All good so far. But mock-flag-hate then.') }],
  });
  assert.equal(res.status, 200);
  const raw = await res.text();
  let text = '';
  for (const block of raw.split('\n\n')) {
    const d = block.split('\n').find((l) => l.startsWith('data:'));
    if (d && JSON.parse(d.slice(5)).type === 'content_block_delta') text += JSON.parse(d.slice(5)).delta.text ?? '';
  }
  assert.ok(text.startsWith('All good so far.') && !text.includes('mock-flag'), text);
  assert.match(raw, /"stop_reason":"refusal"/);
  assert.match(raw, /event: message_stop/);
});

test('stream_first: text goes at once and the stream is cut on a violation', async () => {
  const text = 'Fine start. Then mock-flag-violence comes. And more text after it.';
  const s = await stream(gws.first, text, 2);
  assert.equal(s.status, 200);
  assert.ok(text.startsWith(s.text), s.text);
  assert.ok(s.text.length >= 'Fine start.'.length, s.text);
  assert.deepEqual(finish(s), ['content_filter']);
  assert.equal(s.data.at(-1), '[DONE]');
  // the end waits for the last verdict: a violation in the last text
  const t = await stream(gws.first, 'All fine, then at the very end mock-flag-hate', 3);
  assert.deepEqual(finish(t), ['content_filter']);
  const c = await stream(gws.first, 'Nothing wrong. At all.', 1);
  assert.equal(c.text, 'Nothing wrong. At all.');
  assert.deepEqual(finish(c), ['stop']);
});

test('final: one check of the whole answer before the end', async () => {
  const before = await mock.count();
  const text = 'A first sentence. A second one. A third.';
  const s = await stream(gws.final, text, 2);
  assert.equal(s.text, text);
  assert.deepEqual(finish(s), ['stop']);
  assert.deepEqual(await checks(before), [text]);
  const bad = await stream(gws.final, 'Harmless. Harmless. mock-flag-violence.', 2);
  assert.deepEqual(finish(bad), ['content_filter']);
  assert.equal(bad.data.at(-1), '[DONE]');
});

test('checkpoints every N bytes carry the overlap of the text checked before', async () => {
  const before = await mock.count();
  const text = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const s = await stream(gws.every, text, 1);
  assert.equal(s.text, text);
  const inputs = await checks(before);
  assert.ok(inputs.length >= 3, inputs.join('|'));
  for (let i = 1; i < inputs.length; i++) {
    assert.equal(inputs[i].slice(0, 8), inputs[i - 1].slice(-8), inputs.join('|'));
  }
  // without the overlaps, the checked text is the answer
  assert.equal(inputs[0] + inputs.slice(1).map((x) => x.slice(8)).join(''), text);
  // the first checkpoint passed and went out; the one holding the
  // flagged text never does
  const split = await stream(gws.every, 'xxxxxxxxxxxxxxxx mock-flag-hate.', 1);
  assert.equal(split.status, 200);
  assert.equal(split.text, 'xxxxxxxxxxxxxxxx');
  assert.deepEqual(finish(split), ['content_filter']);
});

test('a check slower than hold_ms follows fail: open releases, closed refuses', async () => {
  const o = await stream(gws.open, 'Slow but fine. Really.', 3);
  assert.equal(o.status, 200);
  assert.equal(o.text, 'Slow but fine. Really.');
  await gws.open.waitStderr(/stream's moderation check failed .*fail: open/);
  const c = await stream(gws.closed, 'Slow and refused. Yes.', 3);
  assert.equal(c.status, 503);
  assert.equal(JSON.parse(c.raw).error.code, 'guard_unavailable');
});

test('config: stream needs an output moderation check; bad values are refused', () => {
  const cases = [
    ['{ rules: [{ name: a, keywords: [x] }], stream: { mode: hold } }', /stream: needs moderation/],
    ['{ moderation: { url: "http://x/v1/moderations", on: [output] }, stream: { mode: sometimes } }', /stream.mode/],
    ['{ moderation: { url: "http://x/v1/moderations", on: [output] }, stream: { checkpoint: 3 } }', /stream.checkpoint/],
    ['{ moderation: { url: "http://x/v1/moderations", on: [output] }, stream: { hold_ms: 0 } }', /stream.hold_ms/],
    ['{ moderation: { url: "http://x/v1/moderations", on: [output] }, stream: { fail: maybe } }', /stream.fail/],
    ['{ moderation: { url: "http://x/v1/moderations", on: [output] }, stream: { window: 3 } }', /window/],
  ];
  for (const [cfg, re] of cases) {
    const file = writeConfig(config('http://127.0.0.1:9', { stages: `  - name: guard\n    plugin: guard\n    config: ${cfg}` }));
    const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, cfg);
    assert.match(r.stderr + r.stdout, re, cfg);
  }
});

test('results: the checks and the hold in headers, the log line and the hold histogram', async () => {
  const s = await stream(gws.hold, 'Checked text. Twice.', 2);
  assert.equal(s.status, 200);
  assert.equal(s.headers.get('x-manifold-guard-checks'), 'input=none; output=moderation(hold)');
  const held = s.headers.get('x-manifold-guard-hold-ms');
  assert.match(held ?? '', /^\d+$/);
  const line = await gws.hold.waitLog((l) => l.guard_checks === 'input=none; output=moderation(hold)' && l.guard_hold_ms !== null);
  assert.equal(line.guard, null);
  assert.equal(line.masked, null);
  const blocked = await stream(gws.hold, 'Bad mock-flag-violence first.', 2);
  assert.equal(blocked.status, 400);
  const bl = await gws.hold.waitLog((l) => l.guard === 'moderation' && l.status === 400);
  assert.equal(bl.guard_checks, 'input=none; output=moderation(hold)');
  const port = gws.hold.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1];
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const count = Number((text.match(/^manifold_guard_hold_seconds_count\{check="stream"\} (\d+)/m) || [])[1] ?? NaN);
  assert.ok(count >= 1, text.split('\n').filter((x) => x.includes('guard')).join('\n'));
  assert.ok(Number((text.match(/^manifold_guard_blocked_total\{direction="output",rule="moderation"\} (\d+)/m) || [])[1]) >= 1);
  assert.ok(Number((text.match(/^manifold_guard_checks_total\{direction="output",check="moderation"\} (\d+)/m) || [])[1]) >= 2);
});

test('hold: text of a slow answer is checked after hold_ms, not held for a sentence end', async () => {
  // events 400 ms apart, no sentence end: the second event comes after
  // hold_ms (20) and makes a checkpoint before the end (events that
  // arrive together after a check has held the upstream wait for the
  // next one)
  const before = await mock.count();
  const text = 'no sentence end in this slow text at all';
  const s = await stream(gws.slowtext, text, 10, { model: 'gpt-4o[[mock:split=10 chunk_delay=400]]' });
  assert.equal(s.status, 200);
  assert.equal(s.text, text);
  const inputs = await checks(before);
  assert.ok(inputs.length >= 2 && inputs[0].length < text.length, inputs.join('|'));
  assert.equal(inputs.join(''), text);
});

test('hold: text held while the upstream stalls is checked when hold_ms passes, not at the next event', async () => {
  // events 700 ms apart, no sentence end: the first one's text is
  // checked (and released) on its own, by the stage's timer
  const text = 'first half and the second';
  const before = await mock.count();
  const s = await stream(gws.stall, text, 13, { model: 'gpt-4o[[mock:split=13 chunk_delay=700]]' });
  assert.equal(s.status, 200);
  assert.equal(s.text, text);
  const inputs = await checks(before);
  assert.deepEqual(inputs, [text.slice(0, 13), text.slice(13)]);
  // a check the timer made that gets no verdict in time follows fail: open
  const o = await stream(gws.stallopen, text, 13, { model: 'gpt-4o[[mock:split=13 chunk_delay=700]]' });
  assert.equal(o.status, 200);
  assert.equal(o.text, text);
});

test('the judge checks a stream at its checkpoints too', async () => {
  const ok = await stream(gws.judge, 'A calm answer. Nothing more.', 3);
  assert.equal(ok.status, 200);
  assert.equal(ok.text, 'A calm answer. Nothing more.');
  assert.equal(ok.headers.get('x-manifold-guard-checks'), 'input=none; output=judge(hold)');
  // the mock judge answers with the first verdict word found in the text
  const bad = await stream(gws.judge, 'A calm start. Then an unsafe part. End.', 2);
  assert.equal(bad.status, 200);
  assert.ok(bad.text.startsWith('A calm start.') && !bad.text.includes('unsafe'), bad.text);
  assert.deepEqual(finish(bad), ['content_filter']);
  assert.equal(bad.data.at(-1), '[DONE]');
  const first = await stream(gws.judge, 'Unsafe from the start. Yes.', 2);
  assert.equal(first.status, 400);
  assert.equal(first.headers.get('x-manifold-guard'), 'judge');
  assert.match(JSON.parse(first.raw).error.message, /judge check/);
});
