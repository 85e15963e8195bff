// The guard stage's `fallback:`: an answer blocked before anything of it
// reached the client (a whole answer, or a stream's first text) is
// answered by another model through the gateway instead, in the client's
// protocol, stream or not, marked (x-manifold-guard-fallback, the log
// line's guard_fallback); the blocked attempt's tokens are still billed.
// A fallback that fails or is blocked too leaves the block's 400; its
// answer is checked by the local output rules and by the stage's remote
// output checks (the moderation endpoint, the judge) as the blocked one was.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startMock, startGateway, config, chat, post, writeConfig, BIN } from './harness.mjs';

let mock;
const gws = {};

const guard = (extra) => `
  - name: guard
    plugin: guard
    config:
      rules: [{ name: leak, keywords: [TOPSECRET], on: [output] }]
${extra}`;

before(async () => {
  mock = await startMock();
  const start = (extra) => startGateway(config(mock.url, { stages: guard(extra) }));
  gws.fb = await start('      fallback: gpt-4o-mini');
  // the fallback's answer is blocked too, or is an error
  gws.bad = await start('      fallback: "gpt-4o-mini[[mock:reply=TOPSECRET_again]]"');
  gws.down = await start('      fallback: "gpt-4o-mini[[mock:status=500]]"');
  // a held stream checked by the moderation endpoint: the first checkpoint flagged
  gws.hold = await start(`      moderation: { url: "${mock.url}/v1/moderations", timeout_ms: 3000, on: [output] }
      stream: { mode: hold, overlap: 0 }
      fallback: gpt-4o-mini`);
  // whole answers checked by the moderation endpoint
  gws.mod = await start(`      moderation: { url: "${mock.url}/v1/moderations", timeout_ms: 3000, on: [output] }
      fallback: gpt-4o-mini`);
  // the fallback's answer is flagged by the moderation check too
  gws.modbad = await start(`      moderation: { url: "${mock.url}/v1/moderations", timeout_ms: 3000, on: [output] }
      fallback: "gpt-4o-mini[[mock:reply=mock-flag-hate_again]]"`);
  // a judge on output: the fallback's answer is judged (the mock judge
  // answers with the first verdict word in the text, else safe)
  gws.judge = await start(`      judge: { model: gpt-4o-mini, on: [output], timeout_ms: 3000 }
      fallback: gpt-4o-mini`);
  gws.judgebad = await start(`      judge: { model: gpt-4o-mini, on: [output], timeout_ms: 3000 }
      fallback: "gpt-4o-mini[[mock:reply=an_unsafe_reply]]"`);
});

after(async () => {
  for (const g of Object.values(gws)) await g.stop();
  await mock.stop();
});

// the first answer (model directives) holds the blocked word; the
// fallback model (no directive) echoes the user's text
const blocked = (text, more = '') => `gpt-4o[[mock:reply=${text.replaceAll(' ', '_')}${more}]]`;
const FALLBACK = 'Hello from mock. You said: tell me';

async function sse(res) {
  const raw = await res.text();
  return { raw, data: raw.split('\n\n').filter((b) => b.includes('data:')).map((b) => b.split('\n').find((l) => l.startsWith('data:')).slice(5).trim()) };
}

async function models(from) {
  const all = await (await fetch(`${mock.url}/_mock/requests`)).json();
  return all.slice(from).filter((q) => q.path.endsWith('/chat/completions')).map((q) => JSON.parse(q.body));
}

test('a whole answer blocked: the fallback model answers, marked and logged', async () => {
  const from = await mock.count();
  const res = await chat(gws.fb, 'tell me', { model: blocked('the TOPSECRET plan') });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.choices[0].message.content, FALLBACK);
  assert.equal(res.headers.get('x-manifold-guard-fallback'), 'gpt-4o-mini');
  assert.equal(res.headers.get('x-manifold-guard'), 'leak');
  const sent = await models(from);
  assert.deepEqual(sent.map((b) => b.model), ['gpt-4o[[mock:reply=the_TOPSECRET_plan]]', 'gpt-4o-mini']);
  assert.equal(sent[1].messages.at(-1).content, 'tell me');
  const line = await gws.fb.waitLog((l) => l.guard_fallback === 'gpt-4o-mini' && l.stream === false);
  assert.equal(line.guard, 'leak');
  assert.equal(line.status, 200);
  // the blocked attempt is billed on this line; the fallback call has its own
  assert.ok(line.completion_tokens > 0, JSON.stringify(line));
  await gws.fb.waitLog((l) => l.model === 'gpt-4o-mini' && l.status === 200);
});

test('a stream whose first text is blocked: the fallback answer as a stream, with usage and [DONE]', async () => {
  const res = await chat(gws.fb, 'tell me', {
    model: blocked('TOPSECRET first', ' split=3'), stream: true, stream_options: { include_usage: true },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-guard-fallback'), 'gpt-4o-mini');
  const { raw, data } = await sse(res);
  assert.equal(data.at(-1), '[DONE]', raw);
  const events = data.slice(0, -1).map((d) => JSON.parse(d));
  const text = events.map((e) => e.choices?.[0]?.delta?.content ?? '').join('');
  assert.equal(text, FALLBACK);
  assert.ok(!raw.includes('TOPSECRET'));
  assert.deepEqual(events.map((e) => e.choices?.[0]?.finish_reason).filter(Boolean), ['stop']);
  assert.ok(events.at(-1).usage?.completion_tokens > 0, raw);
  const line = await gws.fb.waitLog((l) => l.guard_fallback === 'gpt-4o-mini' && l.stream === true);
  assert.equal(line.guard, 'leak');
  assert.ok(line.completion_tokens > 0, JSON.stringify(line));
});

test('Anthropic clients get the fallback answer as a message and as events', async () => {
  const res = await post(gws.fb, '/v1/messages', {
    model: blocked('TOPSECRET x'), max_tokens: 50, messages: [{ role: 'user', content: 'tell me' }],
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.type, 'message');
  assert.equal(body.content[0].text, FALLBACK);
  assert.equal(res.headers.get('x-manifold-guard-fallback'), 'gpt-4o-mini');

  const s = await post(gws.fb, '/v1/messages', {
    model: blocked('TOPSECRET y', ' split=2'), max_tokens: 50, stream: true,
    messages: [{ role: 'user', content: 'tell me' }],
  });
  assert.equal(s.status, 200);
  const raw = await s.text();
  let text = '';
  for (const block of raw.split('\n\n')) {
    const d = block.split('\n').find((l) => l.startsWith('data:'));
    if (!d) continue;
    const ev = JSON.parse(d.slice(5));
    if (ev.type === 'content_block_delta') text += ev.delta.text ?? '';
  }
  assert.equal(text, FALLBACK);
  assert.match(raw, /"stop_reason":"end_turn"/);
  assert.match(raw, /event: message_stop/);
});

test('a held stream flagged at its first checkpoint falls back', async () => {
  const res = await chat(gws.hold, 'tell me', { model: blocked('mock-flag-violence now. more', ' split=4'), stream: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-guard'), 'moderation');
  assert.equal(res.headers.get('x-manifold-guard-fallback'), 'gpt-4o-mini');
  const { raw, data } = await sse(res);
  const text = data.slice(0, -1).map((d) => JSON.parse(d).choices?.[0]?.delta?.content ?? '').join('');
  assert.equal(text, FALLBACK, raw);
});

test('a whole answer the moderation check flags falls back', async () => {
  const res = await chat(gws.mod, 'tell me', { model: blocked('mock-flag-hate here') });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.choices[0].message.content, FALLBACK);
  assert.equal(res.headers.get('x-manifold-guard'), 'moderation');
  assert.equal(res.headers.get('x-manifold-guard-fallback'), 'gpt-4o-mini');
});

test('a fallback blocked too, or failing, leaves the block (stream or not)', async () => {
  for (const g of [gws.bad, gws.down]) {
    const res = await chat(g, 'tell me', { model: blocked('TOPSECRET z') });
    const body = await res.json();
    assert.equal(res.status, 400);
    assert.equal(body.error.code, 'content_filter');
    assert.match(body.error.message, /guard rule 'leak'/);
    assert.equal(res.headers.get('x-manifold-guard-fallback'), null);

    const s = await chat(g, 'tell me', { model: blocked('TOPSECRET w', ' split=2'), stream: true });
    assert.equal(s.status, 400);
    assert.match(await s.text(), /content_filter/);
  }
});

test('the fallback answer is checked by the remote output checks too: moderation, the judge', async () => {
  // judged safe: it answers; the judge was asked about the fallback's text
  let from = await mock.count();
  let res = await chat(gws.judge, 'tell me', { model: blocked('the TOPSECRET plan') });
  let body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.choices[0].message.content, FALLBACK);
  assert.equal(res.headers.get('x-manifold-guard-fallback'), 'gpt-4o-mini');
  const judged = (await models(from)).filter((b) => b.messages?.[0]?.role === 'system' &&
    /classifier/.test(b.messages[0].content)).map((b) => JSON.parse(b.messages.at(-1).content));
  assert.ok(judged.includes(FALLBACK), JSON.stringify(judged));
  // judged unsafe, or flagged by the moderation check: the block stands
  for (const [g, rule] of [[gws.judgebad, /guard rule 'leak'/], [gws.modbad, /moderation check/]]) {
    const first = g === gws.modbad ? 'mock-flag-hate here' : 'the TOPSECRET plan';
    res = await chat(g, 'tell me', { model: blocked(first) });
    body = await res.json();
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error.code, 'content_filter');
    assert.match(body.error.message, rule);
    assert.equal(res.headers.get('x-manifold-guard-fallback'), null);
  }
  // a stream's fallback too
  from = await mock.count();
  const s = await chat(gws.judgebad, 'tell me', { model: blocked('TOPSECRET w', ' split=2'), stream: true });
  assert.equal(s.status, 400);
  assert.match(await s.text(), /content_filter/);
  const ok = await chat(gws.judge, 'tell me', { model: blocked('TOPSECRET w', ' split=2'), stream: true });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('x-manifold-guard-fallback'), 'gpt-4o-mini');
  const { data } = await sse(ok);
  assert.equal(data.slice(0, -1).map((d) => JSON.parse(d).choices?.[0]?.delta?.content ?? '').join(''), FALLBACK);
});

test('a stream blocked after text went out is cut, not replaced', async () => {
  const res = await chat(gws.fb, 'tell me', { model: blocked('fine words then TOPSECRET', ' split=5'), stream: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-guard-fallback'), null);
  const { data } = await sse(res);
  const events = data.slice(0, -1).map((d) => JSON.parse(d));
  assert.ok(events.map((e) => e.choices?.[0]?.delta?.content ?? '').join('').startsWith('fine words'));
  assert.deepEqual(events.map((e) => e.choices?.[0]?.finish_reason).filter(Boolean), ['content_filter']);
});

test('manifold -t refuses a fallback no provider serves', () => {
  for (const [cfg, re] of [['claude-nowhere', /fallback: .*claude-nowhere|fallback: /], ['""', /fallback: a model name/]]) {
    const file = writeConfig(config('http://127.0.0.1:9', { stages: guard(`      fallback: ${cfg}`) }));
    const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, cfg);
    assert.match(r.stderr + r.stdout, re, cfg);
  }
});
