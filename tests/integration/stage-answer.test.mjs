// A stage's own answers in the canonical form (ABI 1.5: emit_event,
// respond_completion; Lua mf.resp.emit, mf.resp.completion), translated by
// the host to the client's protocol, with no upstream call; a stage that
// returns without ending its stream has it ended by the host.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, chat, post, ROOT } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    stages: `  - name: replier
    lua: ${ROOT}/tests/integration/fixtures/replier.lua`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const chunk = (delta, finish = null) => JSON.stringify({ id: 'chatcmpl-replier', object: 'chat.completion.chunk', created: 1, model: 'replier', choices: [{ index: 0, delta, finish_reason: finish }] });

test('a stage-made stream reaches an OpenAI client as its events, then [DONE]', async () => {
  const before = await mock.count();
  const res = await chat(gw, 'replier: stream', { stream: true });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/event-stream/);
  assert.equal(res.headers.get('x-replier'), 'stream');
  const text = await res.text();
  // Lua tables have no member order: the events are compared as JSON
  const events = text.split('\n\n').filter(Boolean);
  assert.ok(events.every((e) => e.startsWith('data: ')));
  assert.equal(events.at(-1), 'data: [DONE]');
  assert.deepEqual(events.slice(0, -1).map((e) => JSON.parse(e.slice(6))),
    [chunk({ role: 'assistant', content: '' }), chunk({ content: 'one ' }), chunk({ content: 'two ' }),
      chunk({ content: 'three' }), chunk({}, 'stop')].map((c) => JSON.parse(c)));
  assert.equal(await mock.count(), before);
});

test('the same stream reaches an Anthropic client as Anthropic events', async () => {
  const res = await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'replier: stream' }] });
  assert.equal(res.status, 200);
  const text = await res.text();
  const events = text.split('\n\n').filter(Boolean).map((e) => e.split('\n')[0]);
  assert.equal(events[0], 'event: message_start');
  assert.equal(events.at(-1), 'event: message_stop');
  const said = text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)))
    .filter((d) => d.type === 'content_block_delta').map((d) => d.delta.text).join('');
  assert.equal(said, 'one two three');
});

test('a stage that returns before ending its stream has it ended by the host', async () => {
  const res = await chat(gw, 'replier: stream unfinished', { stream: true });
  const text = await res.text();
  assert.ok(text.endsWith('data: [DONE]\n\n'));
  // the connection is still usable: the answer was whole
  const again = await chat(gw, 'replier: whole', {});
  assert.equal(again.status, 200);
  await again.text();
});

test('a stage-made completion: as is to OpenAI, translated to Anthropic', async () => {
  const a = await chat(gw, 'replier: whole', {});
  assert.equal(a.status, 200);
  const ja = await a.json();
  assert.equal(ja.choices[0].message.content, 'whole answer');
  const m = await post(gw, '/v1/messages', { model: 'gpt-4o', max_tokens: 50, messages: [{ role: 'user', content: 'replier: whole' }] });
  assert.equal(m.status, 200);
  const jm = await m.json();
  assert.equal(jm.type, 'message');
  assert.equal(jm.content[0].text, 'whole answer');
  assert.equal(jm.stop_reason, 'end_turn');
});
