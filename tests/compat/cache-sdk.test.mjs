// The official `openai` and `@anthropic-ai/sdk` packages against the
// exact cache: a hit, stream and non-stream, reads like the miss did (the
// SDK's own parsing of the replayed stream); an entry an OpenAI client
// made is served to the Anthropic SDK; groups never share entries.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    stages: `  - { name: auth, plugin: key-auth, config: { db: none, secret: "0123456789abcdef0123" } }
  - { name: cache, plugin: cache }`,
  }) + `
groups:
  - { name: red }
  - { name: blue }
consumers:
  - { name: ann, group: red, keys: ["k-ann"] }
  - { name: cid, group: blue, keys: ["k-cid"] }
`);
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const openai = (key) => new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
const anthropic = (key) => new Anthropic({ apiKey: key, baseURL: gw.url, maxRetries: 0 });

async function counted(fn) {
  const before = await mock.count();
  const out = await fn();
  return { out, calls: (await mock.count()) - before };
}

test('openai SDK: a non-stream hit is the miss, without an upstream call', async () => {
  const body = { model: 'gpt-4o', max_tokens: 40, messages: [{ role: 'user', content: 'sdk whole' }] };
  const { data: a, response: ra } = await openai('k-ann').chat.completions.create(body).withResponse();
  assert.equal(ra.headers.get('x-manifold-cache'), 'miss');
  await gw.waitLog((l) => l.request_id === ra.headers.get('x-request-id'));
  const { out, calls } = await counted(() => openai('k-ann').chat.completions.create(body).withResponse());
  assert.equal(calls, 0);
  assert.equal(out.response.headers.get('x-manifold-cache'), 'hit');
  assert.deepEqual(out.data, a);
});

test('openai SDK: a stream hit yields the same chunks, usage included', async () => {
  const body = {
    model: 'gpt-4o', max_tokens: 40, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: '[[mock:chunks=5]] sdk stream' }],
  };
  const read = async () => {
    const { data: stream, response } = await openai('k-ann').chat.completions.create(body).withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    return { chunks, response };
  };
  const a = await read();
  await gw.waitLog((l) => l.request_id === a.response.headers.get('x-request-id'));
  const { out: b, calls } = await counted(read);
  assert.equal(calls, 0);
  assert.equal(b.response.headers.get('x-manifold-cache'), 'hit');
  assert.deepEqual(b.chunks, a.chunks);
  assert.ok(b.chunks.at(-1).usage.total_tokens > 0);
});

test('an entry the openai SDK made is served to the Anthropic SDK, whole and streamed', async () => {
  const q = '[[mock:chunks=3]] shared across protocols';
  const a = await openai('k-ann').chat.completions.create({
    model: 'gpt-4o', max_tokens: 64, messages: [{ role: 'user', content: q }],
  }).withResponse();
  await gw.waitLog((l) => l.request_id === a.response.headers.get('x-request-id'));
  const text = a.data.choices[0].message.content;
  const { out, calls } = await counted(async () => {
    const m = await anthropic('k-ann').messages.create({
      model: 'gpt-4o', max_tokens: 64, messages: [{ role: 'user', content: q }],
    }).withResponse();
    const s = anthropic('k-ann').messages.stream({
      model: 'gpt-4o', max_tokens: 64, messages: [{ role: 'user', content: q }],
    });
    let streamed = '';
    s.on('text', (t) => { streamed += t; });
    const final = await s.finalMessage();
    return { m, streamed, final };
  });
  assert.equal(calls, 0);
  assert.equal(out.m.response.headers.get('x-manifold-cache'), 'hit');
  assert.equal(out.m.data.type, 'message');
  assert.equal(out.m.data.content[0].text, text);
  assert.equal(out.m.data.stop_reason, 'end_turn');
  assert.equal(out.streamed, text);
  assert.equal(out.final.content[0].text, text);
  assert.ok(out.final.usage.output_tokens > 0);
});

test('no hit across groups, through the SDK', async () => {
  const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'red only' }] };
  const a = await openai('k-ann').chat.completions.create(body).withResponse();
  await gw.waitLog((l) => l.request_id === a.response.headers.get('x-request-id'));
  const { out, calls } = await counted(() => openai('k-cid').chat.completions.create(body).withResponse());
  assert.equal(calls, 1);
  assert.equal(out.response.headers.get('x-manifold-cache'), 'miss');
});
