// The guard stage: local rules on input (400 in the client's protocol,
// upstream never called) and on output (a whole answer becomes the 400;
// a stream is checked per event with only a possible match held back: a
// deny word or a regex match split one character per event never reaches
// the client, the stream ends with finish_reason content_filter, usage
// and [DONE], and is billed), the remote moderation classifier (flagged,
// timeout and refused under fail open and closed), and the mask stage
// beside it (the guard sees restored text).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startMock, startGateway, config, chat, post, sseEvents, writeConfig, closedPort, BIN } from './harness.mjs';

let mock, gw, open, closed;

const guard = (moderation) => `
  - name: mask
    plugin: mask
  - name: guard
    plugin: guard
    config:
      rules:
        - { name: weapons, keywords: [nerve agent], case_insensitive: true, on: [input] }
        - { name: leak, keywords: [forbiddenword, zebra-key], on: [output] }
        - { name: code, regex: 'secret-[0-9]{4}', on: [output] }
        - { name: greeting, regex: '^Hello from mock\\. You said: greet-block', on: [output] }
        - { name: both, keywords: [badbadbad] }
${moderation}
  - name: prometheus
    plugin: prometheus`;

before(async () => {
  mock = await startMock();
  const dead = await closedPort();
  gw = await startGateway(config(mock.url, { stages: guard(`      moderation: { url: "${mock.url}/v1/moderations", key: sk-mod-test-0123456789, timeout_ms: 2000, categories: [violence, hate] }`) }) +
    'status:\n  listen: 127.0.0.1:0\n');
  open = await startGateway(config(mock.url, { stages: guard(`      moderation: { url: "${mock.url}/v1/moderations", timeout_ms: 200, fail: open }`) }));
  closed = await startGateway(config(mock.url, { stages: guard(`      moderation: { url: "http://127.0.0.1:${dead}/v1/moderations", timeout_ms: 200, fail: closed }`) }));
});

after(async () => {
  await gw.stop();
  await open.stop();
  await closed.stop();
  await mock.stop();
});

test('input rules answer 400 in the client protocol before the upstream is called', async () => {
  const n = await mock.count();
  const res = await chat(gw, 'how to make a Nerve Agent');
  assert.equal(res.status, 400);
  assert.equal(res.headers.get('x-manifold-guard'), 'weapons');
  const b = await res.json();
  assert.equal(b.error.code, 'content_filter');
  assert.match(b.error.message, /guard rule 'weapons'/);
  const ant = await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 20, messages: [{ role: 'user', content: 'badbadbad' }] });
  assert.equal(ant.status, 400);
  const ab = await ant.json();
  assert.equal(ab.type, 'error');
  assert.match(ab.error.message, /guard rule 'both'/);
  assert.equal(await mock.count(), n);
});

test('the moderation classifier: flagged is a 400, the request format is OpenAI\'s', async () => {
  const res = await chat(gw, 'this is mock-flag-violence');
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /moderation check \(violence\)/);
  const last = await mock.last();
  assert.equal(last.path, '/v1/moderations');
  assert.equal(last.headers.authorization ?? last.headers.Authorization, 'Bearer sk-mod-test-0123456789');
  // a category not listed does not count
  const ok = await chat(gw, 'this is mock-flag-sexual but fine');
  assert.equal(ok.status, 200);
});

test('a classifier that times out follows fail: open goes on, closed refuses', async () => {
  const res = await chat(open, 'slow check [[mock:delay=1500]]');
  assert.equal(res.status, 200);
  await open.waitStderr(/moderation check failed .*fail: open/);
  const res2 = await chat(closed, 'no classifier there');
  assert.equal(res2.status, 503);
  const b = await res2.json();
  assert.equal(b.error.code, 'guard_unavailable');
});

test('a whole answer that matches an output rule is a 400, never a 200', async () => {
  const res = await chat(gw, 'say forbiddenword');
  assert.equal(res.status, 400);
  const b = await res.json();
  assert.equal(b.error.code, 'content_filter');
  assert.match(b.error.message, /guard rule 'leak'/);
});

async function stream(g, content, n, extra = {}) {
  const res = await chat(g, content, { stream: true, model: `gpt-4o[[mock:split=${n}]]`, ...extra });
  const status = res.status;
  const raw = await res.text();
  const data = raw.split('\n\n').filter((b) => b.startsWith('data:')).map((b) => b.slice(5).trim());
  const events = data.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
  let text = '';
  for (const e of events) text += e.choices?.[0]?.delta?.content ?? '';
  return { status, raw, data, events, text };
}

test('a deny word split across events never reaches the client; the stream ends cleanly', async () => {
  for (const n of [1, 2, 3, 5, 7, 13]) {
    const s = await stream(gw, 'tell me about forbiddenword please', n, { stream_options: { include_usage: true } });
    assert.equal(s.status, 200);
    assert.ok(!s.text.includes('forbid'), `n=${n}: ${s.text}`);
    assert.ok('Hello from mock. You said: tell me about '.startsWith(s.text), `n=${n}: ${s.text}`);
    const fin = s.events.find((e) => e.choices?.[0]?.finish_reason);
    assert.equal(fin.choices[0].finish_reason, 'content_filter', `n=${n}`);
    const usage = s.events.find((e) => e.usage)?.usage;
    assert.ok(usage && usage.completion_tokens > 0, `n=${n}: usage ${JSON.stringify(usage)}`);
    assert.equal(s.data.at(-1), '[DONE]');
  }
  // one character per event: everything before the word went out, not more
  const s = await stream(gw, 'tell me about forbiddenword please', 1);
  assert.equal(s.text, 'Hello from mock. You said: tell me about ');
});

test('a regex match split across events is caught with only the partial match held', async () => {
  const s = await stream(gw, 'the code is secret-1234 ok', 1);
  assert.equal(s.text, 'Hello from mock. You said: the code is ');
  assert.equal(s.events.at(-1).choices[0].finish_reason, 'content_filter');
  // a near miss is released whole, and in the same order
  const t = await stream(gw, 'the code is secret-12x4 ok', 1);
  assert.equal(t.text, 'Hello from mock. You said: the code is secret-12x4 ok');
  assert.equal(t.events.at(-1).choices[0].finish_reason, 'stop');
});

test('a stopped stream is logged with its cut and billed usage', async () => {
  await stream(gw, 'billing check zebra-key now', 2);
  const line = await gw.waitLog((l) => l.status === 200 && l.error && /guard rule 'leak'/.test(l.error));
  assert.ok(line.completion_tokens > 0, JSON.stringify(line));
  assert.equal(line.status, 200);
});

test('a match before anything was sent is a real 400, even for a stream', async () => {
  const s = await stream(gw, 'greet-block now', 400);
  assert.equal(s.status, 400);
  assert.match(s.raw, /guard rule 'greeting'/);
});

test('Anthropic stream clients get stop_reason refusal and message_stop', async () => {
  const res = await post(gw, '/v1/messages', {
    model: 'gpt-4o[[mock:split=1]]', max_tokens: 50, stream: true,
    messages: [{ role: 'user', content: 'about forbiddenword' }],
  });
  assert.equal(res.status, 200);
  const raw = await res.text();
  let text = '';
  for (const block of raw.split('\n\n')) {
    const d = block.split('\n').find((l) => l.startsWith('data:'));
    if (!d) continue;
    const ev = JSON.parse(d.slice(5));
    if (ev.type === 'content_block_delta') text += ev.delta.text ?? '';
  }
  assert.equal(text, 'Hello from mock. You said: about ');
  assert.match(raw, /"stop_reason":"refusal"/);
  assert.match(raw, /event: message_stop/);
});

test('with mask before it, the guard checks restored text and placeholders still come back', async () => {
  const s = await stream(gw, 'mail jo@example.com', 1);
  assert.equal(s.text, 'Hello from mock. You said: mail jo@example.com');
  // the log line counts the masked values (never which)
  const line = await gw.waitLog((l) => l.masked === 1 && l.stream === true);
  assert.match(line.guard_checks, /^input=rules,moderation; output=rules$/);
  assert.ok(!JSON.stringify(line).includes('jo@example.com'));
});

test('metrics: checks and blocks by rule', async () => {
  const port = gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1];
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const v = (re) => Number((text.match(re) || [])[1] ?? NaN);
  assert.ok(v(/^manifold_guard_blocked_total\{direction="output",rule="leak"\} (\d+)/m) >= 8, text);
  assert.ok(v(/^manifold_guard_blocked_total\{direction="input",rule="moderation"\} (\d+)/m) >= 1);
  assert.ok(v(/^manifold_guard_checks_total\{direction="input",check="moderation"\} (\d+)/m) >= 2);
  assert.ok(!/forbiddenword|secret-1234/.test(text));
});

test('config refusals name the problem', () => {
  const cases = [
    ['{}', /nothing to check/],
    ['{ rules: [{ name: a, keywords: [x], on: [sideways] }] }', /on lists input, output/],
    ['{ moderation: { url: "ftp://x" } }', /moderation.url/],
    ['{ moderation: { url: "http://x/v1/moderations", fail: maybe } }', /open or closed/],
    ['{ rules: [{ name: a, regex: "[" }] }', /regex: .*offset/],
  ];
  for (const [cfg, re] of cases) {
    const file = writeConfig(config('http://127.0.0.1:9', { stages: `  - name: guard\n    plugin: guard\n    config: ${cfg}` }));
    const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, cfg);
    assert.match(r.stderr + r.stdout, re, cfg);
  }
});
