// The exact AI cache (plugins/cache): hits for streams and whole answers,
// replayed byte for byte, across protocols and kinds; scopes that never
// leak between groups; client controls; only whole answers stored; purge.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, post, path, writeConfig, spawnSync, BIN, adminCommand } from './harness.mjs';

let mock, dir, gw, sock;

function gwConfig(mockUrl) {
  return config(mockUrl, {
    extraProviders: `
  - name: claude
    type: anthropic
    base_url: ${mockUrl}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]`,
    stages: `  - { name: auth, plugin: key-auth }
  - name: cache
    plugin: cache
    config: { ttl: 1h, max_memory: 8MiB }
  - { name: prometheus, plugin: prometheus }`,
  }) + `
admin: { socket: ${dir}/admin.sock }
status: { listen: 127.0.0.1:0 }
routes:
  - model: flaky
    targets:
      - { provider: claude, model: "claude-3-5-haiku[[mock:cut=1 delay=300]]" }
    fallback:
      - { provider: openai, model: "gpt-4o[[mock:chunks=6 chunk_delay=40]]" }
groups:
  - { name: red }
  - { name: blue }
consumers:
  - { name: ann, group: red, keys: ["k-ann"] }
  - { name: bob, group: red, keys: ["k-bob"] }
  - { name: cid, group: blue, keys: ["k-cid"] }
  - { name: dan, keys: ["k-dan"] }
`;
}

const command = (name, body) => adminCommand(sock, name, body);

const auth = (k, extra = {}) => ({ authorization: `Bearer ${k}`, ...extra });
let n = 0;
const unique = (s) => `${s} #${++n}`; // a question no other test asked

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-cache-'));
  sock = path.join(dir, 'admin.sock');
  gw = await startGateway(gwConfig(mock.url), { dir });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

async function counted(fn) {
  const before = await mock.count();
  const out = await fn();
  return { out, calls: (await mock.count()) - before };
}

test('non-stream: a miss, then a hit served without the upstream, same body, logged cached', async () => {
  const q = unique('what is a cache?');
  const a = await chat(gw, q, { max_tokens: 50 }, auth('k-ann'));
  assert.equal(a.status, 200);
  assert.equal(a.headers.get('x-manifold-cache'), 'miss');
  const ja = await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const { out: b, calls } = await counted(() => chat(gw, q, { max_tokens: 50 }, auth('k-ann')));
  assert.equal(calls, 0);
  assert.equal(b.status, 200);
  assert.equal(b.headers.get('x-manifold-cache'), 'hit');
  assert.equal(b.headers.get('x-manifold-cache-layer'), 'exact');
  assert.match(b.headers.get('age'), /^\d+$/);
  assert.deepEqual(await b.json(), ja);
  const line = await gw.waitLog((l) => l.request_id === b.headers.get('x-request-id'));
  assert.equal(line.cached, true);
  assert.equal(line.attempts, 0);
  assert.equal(line.total_tokens, ja.usage.total_tokens);
});

test('stream: the hit replays the stored events byte for byte, chunking kept', async () => {
  const q = unique('[[mock:chunks=7]] tell me a story');
  const body = { stream: true, stream_options: { include_usage: true } };
  const a = await chat(gw, q, body, auth('k-ann'));
  assert.equal(a.headers.get('x-manifold-cache'), 'miss');
  const ta = await a.text();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const { out: b, calls } = await counted(() => chat(gw, q, body, auth('k-ann')));
  assert.equal(calls, 0);
  assert.equal(b.headers.get('x-manifold-cache'), 'hit');
  assert.match(b.headers.get('content-type'), /text\/event-stream/);
  const tb = await b.text();
  assert.equal(tb, ta);
  assert.ok(tb.split('\n\n').length > 9, 'the original chunking');
});

test('tool-call stream replayed byte for byte; the usage chunk only when asked', async () => {
  const q = unique('call the tool');
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const a = await chat(gw, q, { stream: true, tools }, auth('k-ann'));
  const ta = await a.text();
  assert.match(ta, /"tool_calls"/);
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const { out: b, calls } = await counted(() => chat(gw, q, { stream: true, tools }, auth('k-ann')));
  assert.equal(calls, 0);
  assert.equal(await b.text(), ta);
  // the same entry, asked with the usage chunk: it comes, from the stored usage
  const c = await chat(gw, q, { stream: true, tools, stream_options: { include_usage: true } }, auth('k-ann'));
  assert.equal(c.headers.get('x-manifold-cache'), 'hit');
  const tc = await c.text();
  assert.match(tc, /"choices":\[\],"usage":\{"prompt_tokens"/);
});

test('reasoning stream replayed byte for byte', async () => {
  const id = `chatcmpl-r${n}`;
  const ev = (delta, finish = null) => `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
  const sse = ev({ role: 'assistant', content: '' }) + ev({ reasoning_content: 'Think: ' }) +
    ev({ reasoning_content: 'two and two.' }) + ev({ content: 'Four' }) + ev({}, 'stop') +
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [], usage: { prompt_tokens: 9, completion_tokens: 6, total_tokens: 15 } })}\n\n` +
    'data: [DONE]\n\n';
  await mock.mode({ status: 200, body: sse, headers: { 'Content-Type': 'text/event-stream' } });
  const q = unique('2+2?');
  let ta;
  try {
    const a = await chat(gw, q, { stream: true, stream_options: { include_usage: true } }, auth('k-ann'));
    ta = await a.text();
    await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  } finally {
    await mock.mode({ status: 0 });
  }
  assert.equal(ta, sse);
  const b = await chat(gw, q, { stream: true, stream_options: { include_usage: true } }, auth('k-ann'));
  assert.equal(b.headers.get('x-manifold-cache'), 'hit');
  assert.equal(await b.text(), sse);
  // the same entry as a whole answer: the reasoning and the text joined
  const c = await chat(gw, q, {}, auth('k-ann'));
  assert.equal(c.headers.get('x-manifold-cache'), 'hit');
  const jc = await c.json();
  assert.equal(jc.choices[0].message.content, 'Four');
  assert.equal(jc.choices[0].message.reasoning_content, 'Think: two and two.');
  assert.equal(jc.usage.total_tokens, 15);
});

test('a whole answer serves a stream and a stream serves a whole answer', async () => {
  const q1 = unique('whole first');
  const a = await chat(gw, q1, {}, auth('k-ann'));
  const ja = await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const b = await chat(gw, q1, { stream: true }, auth('k-ann'));
  assert.equal(b.headers.get('x-manifold-cache'), 'hit');
  const events = (await b.text()).split('\n\n').filter((e) => e.startsWith('data: '));
  assert.equal(events.at(-1), 'data: [DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), ja.choices[0].message.content);
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');

  const q2 = unique('[[mock:chunks=4]] stream first');
  const c = await chat(gw, q2, { stream: true }, auth('k-ann'));
  const tc = await c.text();
  await gw.waitLog((l) => l.request_id === c.headers.get('x-request-id'));
  const text = tc.split('\n\n').filter((e) => e.startsWith('data: {'))
    .map((e) => JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? '').join('');
  const d = await chat(gw, q2, {}, auth('k-ann'));
  assert.equal(d.headers.get('x-manifold-cache'), 'hit');
  const jd = await d.json();
  assert.equal(jd.object, 'chat.completion');
  assert.equal(jd.choices[0].message.content, text);
  assert.equal(jd.choices[0].finish_reason, 'stop');
  assert.ok(jd.usage.total_tokens > 0);
});

test('an entry an OpenAI client made is served to an Anthropic client, stream and not', async () => {
  const q = unique('[[mock:chunks=3]] hello from both');
  const a = await chat(gw, q, { max_tokens: 64 }, auth('k-ann'));
  await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const msg = { model: 'gpt-4o', max_tokens: 64, messages: [{ role: 'user', content: q }] };
  const { out: b, calls } = await counted(() => post(gw, '/v1/messages', msg, auth('k-ann')));
  assert.equal(calls, 0);
  assert.equal(b.headers.get('x-manifold-cache'), 'hit');
  const jb = await b.json();
  assert.equal(jb.type, 'message');
  assert.equal(jb.content[0].type, 'text');
  const s = await post(gw, '/v1/messages', { ...msg, stream: true }, auth('k-ann'));
  assert.equal(s.headers.get('x-manifold-cache'), 'hit');
  const ts = await s.text();
  assert.match(ts, /^event: message_start\n/);
  assert.match(ts, /event: message_stop\n/);
  assert.doesNotMatch(ts, /data: \[DONE\]/);
});

test('scope: a group shares its entries, another group and a lone consumer never see them', async () => {
  const q = unique('team secret');
  const a = await chat(gw, q, {}, auth('k-ann'));
  const ja = await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const b = await chat(gw, q, {}, auth('k-bob')); // same group
  assert.equal(b.headers.get('x-manifold-cache'), 'hit');
  assert.deepEqual(await b.json(), ja);
  const { out: c, calls } = await counted(async () => {
    const res = await chat(gw, q, {}, auth('k-cid')); // another group
    await res.json();
    return res;
  });
  assert.equal(c.headers.get('x-manifold-cache'), 'miss');
  assert.equal(calls, 1);
  const d = await chat(gw, q, {}, auth('k-dan')); // no group: its own scope
  assert.equal(d.headers.get('x-manifold-cache'), 'miss');
  await d.json();
  // a namespace narrows: bob's namespaced request does not see ann's entry
  const e = await chat(gw, q, {}, auth('k-bob', { 'x-cache-namespace': 'proj-1' }));
  assert.equal(e.headers.get('x-manifold-cache'), 'miss');
  await e.json();
});

test('client controls: no-store, no-cache, max-age, bypass and refresh', async () => {
  const q = unique('controls');
  const a = await chat(gw, q, {}, auth('k-ann', { 'cache-control': 'no-store' }));
  await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const b = await chat(gw, q, {}, auth('k-ann'));
  assert.equal(b.headers.get('x-manifold-cache'), 'miss', 'no-store: nothing was stored');
  await b.json();
  await gw.waitLog((l) => l.request_id === b.headers.get('x-request-id'));
  const { out: c, calls } = await counted(async () => {
    const res = await chat(gw, q, {}, auth('k-ann', { 'x-cache-control': 'bypass' }));
    await res.json();
    return res;
  });
  assert.equal(c.headers.get('x-manifold-cache'), 'bypass');
  assert.equal(calls, 1);
  await command('cache.purge', { all: true });
  const d = await chat(gw, q, {}, auth('k-ann', { 'cache-control': 'no-cache' }));
  assert.equal(d.headers.get('x-manifold-cache'), 'miss');
  await d.json();
  await gw.waitLog((l) => l.request_id === d.headers.get('x-request-id'));
  const e = await chat(gw, q, {}, auth('k-ann'));
  assert.equal(e.headers.get('x-manifold-cache'), 'hit', 'no-cache stored the fresh answer');
  await e.json();
  const f = await chat(gw, q, {}, auth('k-ann', { 'x-cache-control': 'refresh' }));
  assert.equal(f.headers.get('x-manifold-cache'), 'miss');
  await f.json();
  // max-age=0 is served only by an entry of this second
  await new Promise((r) => setTimeout(r, 1100));
  const g = await chat(gw, q, {}, auth('k-ann', { 'cache-control': 'max-age=0' }));
  assert.equal(g.headers.get('x-manifold-cache'), 'miss');
  await g.json();
});

test('errors, cut streams and unfinished answers are never stored', async () => {
  const q1 = unique('[[mock:status=500]] fails');
  const a = await chat(gw, q1, {}, auth('k-ann'));
  assert.equal(a.status, 502);
  await a.text();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const { calls: c1 } = await counted(async () => (await chat(gw, q1, {}, auth('k-ann'))).text());
  assert.equal(c1, 1);

  const q2 = unique('[[mock:chunks=6 cut=3]] cut short');
  const b = await chat(gw, q2, { stream: true }, auth('k-ann'));
  await b.text();
  await gw.waitLog((l) => l.request_id === b.headers.get('x-request-id'));
  const { out: b2, calls: c2 } = await counted(() => chat(gw, q2, { stream: true }, auth('k-ann')));
  assert.equal(b2.headers.get('x-manifold-cache'), 'miss');
  await b2.text();
  assert.equal(c2, 1);
});

test('manifoldctl cache purge: by key scope and model; stats count', async () => {
  const q = unique('purge me');
  const a = await chat(gw, q, {}, auth('k-ann'));
  await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const st = await command('cache.stats', {});
  assert.equal(st.status, 200);
  assert.ok(st.json.entries > 0 && st.json.hits > 0 && st.json.bytes <= st.json.max_bytes);
  assert.equal((await command('cache.purge', {})).status, 400);
  const p = await command('cache.purge', { scope: 'group:blue' });
  assert.equal(p.status, 200);
  const b = await chat(gw, q, {}, auth('k-ann'));
  assert.equal(b.headers.get('x-manifold-cache'), 'hit', 'another scope purged, not this one');
  await b.json();
  const p2 = await command('cache.purge', { scope: 'group:red', model: 'gpt-4o' });
  assert.ok(p2.json.purged >= 1);
  const c = await chat(gw, q, {}, auth('k-ann'));
  assert.equal(c.headers.get('x-manifold-cache'), 'miss');
  await c.json();
});

test('coalescing: 50 identical concurrent misses make one upstream call, all 50 answered alike', async () => {
  const q = unique('[[mock:delay=400]] everyone asks at once');
  const st0 = (await command('cache.stats', {})).json;
  const { out: rs, calls } = await counted(() => Promise.all(Array.from({ length: 50 }, async () => {
    const res = await chat(gw, q, {}, auth(n % 2 ? 'k-ann' : 'k-bob'));
    return { status: res.status, cache: res.headers.get('x-manifold-cache'), body: await res.json() };
  })));
  assert.equal(calls, 1);
  assert.ok(rs.every((r) => r.status === 200));
  assert.equal(rs.filter((r) => r.cache === 'miss').length, 1);
  for (const r of rs) assert.deepEqual(r.body, rs[0].body);
  assert.ok(rs[0].body.choices[0].message.content.length > 0);
  const st1 = (await command('cache.stats', {})).json;
  assert.equal(st1.misses - st0.misses, 1);
  assert.equal(st1.coalesced - st0.coalesced, 49);
  assert.equal(st1.hits - st0.hits, 0);
  assert.equal(st1.tokens_saved - st0.tokens_saved, 49 * rs[0].body.usage.total_tokens);
});

test('coalescing streams: followers get the leader\'s events as they arrive, in any protocol', async () => {
  const q = unique('[[mock:chunks=8 chunk_delay=60]] a slow story');
  let firstAt = 0;
  const { out: rs, calls } = await counted(() => Promise.all([
    ...Array.from({ length: 12 }, async (_, i) => {
      const res = await chat(gw, q, { max_tokens: 64, stream: true }, auth('k-ann'));
      const reader = res.body.getReader();
      let text = '';
      let sawEarly = false;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
        // an event before the leader's answer ended: the 8 chunks take ~500 ms
        if (!sawEarly && text.includes('"content":"') && !text.includes('[DONE]')) sawEarly = true;
      }
      if (i === 0) firstAt = Date.now();
      return { cache: res.headers.get('x-manifold-cache'), text, sawEarly };
    }),
    (async () => {
      const res = await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 64, stream: true, messages: [{ role: 'user', content: q }] }, auth('k-ann'));
      return { cache: res.headers.get('x-manifold-cache'), text: await res.text(), anthropic: true };
    })(),
    (async () => {
      const res = await chat(gw, q, { max_tokens: 64 }, auth('k-ann'));
      return { cache: res.headers.get('x-manifold-cache'), json: await res.json(), whole: true };
    })(),
  ]));
  assert.ok(firstAt > 0);
  assert.equal(calls, 1);
  const streams = rs.filter((r) => !r.anthropic && !r.whole);
  assert.equal(rs.filter((r) => r.cache === 'miss').length, 1);
  for (const r of streams) assert.equal(r.text, streams[0].text);
  assert.ok(streams.filter((r) => r.cache === 'hit').every((r) => r.sawEarly), 'followers streamed before the end');
  const text = streams[0].text.split('\n\n').filter((e) => e.startsWith('data: {'))
    .map((e) => JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? '').join('');
  const anth = rs.find((r) => r.anthropic);
  assert.match(anth.text, /^event: message_start\n/);
  assert.match(anth.text, /event: message_stop\n/);
  const whole = rs.find((r) => r.whole);
  assert.equal(whole.json.choices[0].message.content, text);
});

test('coalescing: when the leader fails, its followers make their own calls', async () => {
  const q = unique('[[mock:delay=300 status=500]] a failing question');
  const { out: rs, calls } = await counted(() => Promise.all(Array.from({ length: 5 }, async () => {
    const res = await chat(gw, q, {}, auth('k-ann'));
    await res.text();
    return res.status;
  })));
  assert.ok(rs.every((s) => s === 502));
  assert.equal(calls, 5);
});

test('coalescing: a stream follower whose leader\'s stream is cut after it began gets an error event, OpenAI and Anthropic', async () => {
  // a slow leader stream the mock cuts after 10 of its 20 chunks (~1 s)
  const q = unique('[[mock:chunks=20 chunk_delay=100 cut=10]] cut while followed');
  const content = (t) => t.split('\n\n').filter((e) => e.startsWith('data: {'))
    .map((e) => JSON.parse(e.slice(6)).choices?.[0]?.delta?.content ?? '').join('');
  const { out: rs, calls } = await counted(async () => {
    const lead = await chat(gw, q, { max_tokens: 64, stream: true }, auth('k-ann'));
    const reader = lead.body.getReader();
    let ltext = '';
    // the followers come once the leader's answer is under way
    while (!ltext.includes('"content":"')) {
      const { done, value } = await reader.read();
      if (done) break;
      ltext += Buffer.from(value).toString();
    }
    const leader = (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        ltext += Buffer.from(value).toString();
      }
      return { cache: lead.headers.get('x-manifold-cache'), text: ltext };
    })();
    const follow = async (res) => ({ id: res.headers.get('x-request-id'), cache: res.headers.get('x-manifold-cache'), text: await res.text() });
    return Promise.all([
      leader,
      ...Array.from({ length: 3 }, async () => ({ ...(await follow(await chat(gw, q, { max_tokens: 64, stream: true }, auth('k-ann')))), openai: true })),
      (async () => ({ ...(await follow(await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 64, stream: true, messages: [{ role: 'user', content: q }] }, auth('k-ann')))), anthropic: true }))(),
    ]);
  });
  assert.equal(calls, 1, 'the followers shared the leader\'s call');
  const [leader, ...followers] = rs;
  assert.equal(leader.cache, 'miss');
  assert.match(leader.text, /"code":"upstream_stream_cut"/, 'the host ends the leader\'s own cut stream so');
  const shared = content(leader.text);
  assert.ok(shared.length > 0);
  for (const f of followers) {
    assert.equal(f.cache, 'hit', 'joined the flight');
    if (f.openai) {
      assert.equal(content(f.text), shared, 'the leader\'s events before the cut');
      const last = f.text.trimEnd().split('\n\n').pop();
      const err = JSON.parse(last.slice(6));
      assert.equal(err.error.code, 'upstream_stream_cut');
      assert.match(err.error.message, /cut/);
      assert.doesNotMatch(f.text, /\[DONE\]/);
    } else {
      assert.match(f.text, /^event: message_start\n/);
      assert.match(f.text, /event: content_block_delta\n/);
      assert.doesNotMatch(f.text, /event: message_stop/);
      const last = f.text.trimEnd().split('\n\n').pop();
      assert.match(last, /^event: error\ndata: /);
      const err = JSON.parse(last.split('\n')[1].slice(6));
      assert.equal(err.type, 'error');
      assert.equal(err.error.type, 'api_error');
      assert.match(err.error.message, /cut/);
    }
    const line = await gw.waitLog((l) => l.request_id === f.id);
    assert.equal(line.status, 200);
    assert.match(line.error, /cut/);
  }
  // nothing of it was stored: the next ask goes upstream
  const { out: again, calls: c2 } = await counted(() => chat(gw, q, { max_tokens: 64, stream: true }, auth('k-ann')));
  assert.equal(again.headers.get('x-manifold-cache'), 'miss');
  await again.text();
  assert.equal(c2, 1);
});

test('paced replay: the stored events again, one every `pace`', async () => {
  const dir2 = mkdtempSync(path.join(tmpdir(), 'mf-cache-paced-'));
  const gw2 = await startGateway(config(mock.url, {
    stages: `  - name: cache
    plugin: cache
    config: { scope: global, replay: paced, pace: 40ms }`,
  }), { dir: dir2 });
  try {
    const q = unique('[[mock:chunks=6]] paced');
    const a = await chat(gw2, q, { stream: true }, {});
    const ta = await a.text();
    await gw2.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
    const t0 = Date.now();
    const b = await chat(gw2, q, { stream: true }, {});
    assert.equal(b.headers.get('x-manifold-cache'), 'hit');
    assert.equal(await b.text(), ta);
    const events = ta.split('\n\n').filter((e) => e.startsWith('data: {')).length;
    // a timer never fires early: the replay cannot be shorter than its pace
    assert.ok(Date.now() - t0 >= (events - 1) * 40, 'paced');
  } finally {
    await gw2.stop();
  }
});

test('manifold -t refuses a cache config that cannot work, with the reason', () => {
  const bad = (conf) => {
    const file = writeConfig(config(mock.url, { stages: `  - { name: cache, plugin: cache, config: ${conf} }` }));
    return spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  };
  let r = bad('{ scope: team }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /scope must be group \(the default\), consumer or global/);
  r = bad('{ ttl: soon }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /ttl must be a duration/);
  r = bad('{ semantic: true }');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /semantic must be a mapping/);
  r = bad('{ max_memory: 64MiB, replay: paced, pace: 10ms, scope: consumer, count_quota: true }');
  assert.equal(r.status, 0, r.stderr);
});

test('metrics: lookups by result and tokens saved on the status listener', async () => {
  const status = `http://127.0.0.1:${gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
  const q = unique('counted');
  const a = await chat(gw, q, {}, auth('k-ann'));
  const ja = await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const metric = async (re) => Number(((await (await fetch(status + '/metrics')).text()).match(re) || [])[1] ?? 0);
  const hits = await metric(/^manifold_cache_lookups_total\{result="hit"\} (\d+)/m);
  const saved = await metric(/^manifold_cache_tokens_saved_total (\d+)/m);
  await (await chat(gw, q, {}, auth('k-ann'))).json();
  assert.equal(await metric(/^manifold_cache_lookups_total\{result="hit"\} (\d+)/m), hits + 1);
  assert.equal(await metric(/^manifold_cache_tokens_saved_total (\d+)/m), saved + ja.usage.total_tokens);
  assert.ok(await metric(/^manifold_cache_lookups_total\{result="miss"\} (\d+)/m) > 0);
});

test('an entry an OpenAI client made is served to a Gemini-native client', async () => {
  const q = unique('[[mock:chunks=2]] hello gemini');
  const a = await chat(gw, q, { max_tokens: 64 }, auth('k-ann'));
  const ja = await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const { out: g, calls } = await counted(() => post(gw, '/v1beta/models/gpt-4o:generateContent',
    { contents: [{ role: 'user', parts: [{ text: q }] }], generationConfig: { maxOutputTokens: 64 } }, auth('k-ann')));
  assert.equal(g.headers.get('x-manifold-cache'), 'hit');
  assert.equal(calls, 0);
  const jg = await g.json();
  assert.equal(jg.candidates[0].content.parts[0].text, ja.choices[0].message.content);
});


test('coalescing across a failover: the leader\'s first attempt broke after its preamble, followers get the second', async () => {
  const q = unique('failover while followed');
  const body = { model: 'flaky', max_tokens: 50, stream: true, messages: [{ role: 'user', content: q }] };
  const { out: rs, calls } = await counted(() => Promise.all(Array.from({ length: 6 }, async () => {
    const res = await post(gw, '/v1/chat/completions', body, auth('k-ann'));
    return { cache: res.headers.get('x-manifold-cache'), text: await res.text() };
  })));
  assert.equal(calls, 2, 'the cut attempt and the fallback');
  const content = (t) => t.split('\n\n').filter((e) => e.startsWith('data: {'))
    .map((e) => JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? '').join('');
  const leader = rs.find((r) => r.cache === 'miss');
  assert.ok(content(leader.text).length > 0, leader.text);
  for (const r of rs) {
    assert.equal(content(r.text), content(leader.text));
    assert.match(r.text, /data: \[DONE\]\n\n$/);
  }
});

test('the in-process store holds its byte bound in the gateway: least recently used entries go', async () => {
  const dir3 = mkdtempSync(path.join(tmpdir(), 'mf-cache-lru-'));
  const sock3 = path.join(dir3, 'admin.sock');
  const gw3 = await startGateway(config(mock.url, {
    stages: `  - { name: cache, plugin: cache, config: { scope: global, max_memory: 24KiB } }`,
  }) + `\nadmin: { socket: ${sock3} }\n`, { dir: dir3 });
  const stats = async () => (await adminCommand(sock3, 'cache.stats', {})).json;
  try {
    for (let i = 0; i < 120; i++) {
      const res = await chat(gw3, `lru question ${i}`, {});
      await res.json();
      // stored at on_log, once the answer has left
      while ((await stats()).stored < i + 1) await new Promise((r) => setTimeout(r, 2));
    }
    const st = await stats();
    assert.ok(st.bytes <= 24 * 1024, JSON.stringify(st));
    assert.ok(st.evicted > 0 && st.entries > 0 && st.entries < 120, JSON.stringify(st));
    assert.equal(st.entries + st.evicted, 120);
    const last = await chat(gw3, 'lru question 119', {});
    assert.equal(last.headers.get('x-manifold-cache'), 'hit');
    await last.json();
    const first = await chat(gw3, 'lru question 0', {});
    assert.equal(first.headers.get('x-manifold-cache'), 'miss');
    await first.json();
  } finally {
    await gw3.stop();
  }
});

test('an entry an OpenAI chat client made is served to a Responses client, stream and not', async () => {
  const q = unique('[[mock:chunks=3]] hello responses');
  const a = await chat(gw, q, { max_tokens: 64 }, auth('k-ann'));
  const ja = await a.json();
  await gw.waitLog((l) => l.request_id === a.headers.get('x-request-id'));
  const { out, calls } = await counted(async () => {
    const w = await post(gw, '/v1/responses', { model: 'gpt-4o', input: q, max_output_tokens: 64 }, auth('k-ann'));
    const s = await post(gw, '/v1/responses', { model: 'gpt-4o', input: q, max_output_tokens: 64, stream: true }, auth('k-ann'));
    return { w, jw: await w.json(), s, ts: await s.text() };
  });
  assert.equal(calls, 0);
  assert.equal(out.w.headers.get('x-manifold-cache'), 'hit');
  const msg = out.jw.output.find((o) => o.type === 'message');
  assert.equal(msg.content[0].text, ja.choices[0].message.content);
  assert.equal(out.s.headers.get('x-manifold-cache'), 'hit');
  assert.match(out.ts, /event: response\.created/);
  assert.match(out.ts, /event: response\.completed/);
});
