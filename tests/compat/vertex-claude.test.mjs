// The official `openai` and `@anthropic-ai/sdk` packages through a route to
// Claude on Vertex AI (a vertex provider, a claude-* model): chat
// completions and Messages, whole and streamed, and messages.countTokens;
// what reached the upstream (Anthropic's publisher, rawPredict or
// streamRawPredict, the Messages body without model and with Vertex's
// anthropic_version, cache_control and anthropic-beta) is checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, config, serviceKeys, serviceAccount } from '../integration/harness.mjs';

let mock, gw, openai, anthropic;
const MODELS = '/v1/projects/mock-project/locations/europe-west1/publishers/anthropic/models';

before(async () => {
  mock = await startMock();
  const keys = serviceKeys();
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-vcsdk-'));
  const sa = path.join(dir, 'sa.json');
  writeFileSync(sa, serviceAccount(`${mock.url}/token`, keys.privateKey));
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: vertex
    type: vertex
    base_url: ${mock.url}
    location: europe-west1
    credentials: ${sa}
    models: ["claude-sonnet-4@20250514"]
routes:
  - model: sonnet
    targets: [{ provider: vertex, model: "claude-sonnet-4@20250514" }]`,
  }));
  openai = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

function upstream(last) {
  return { path: decodeURIComponent(last.path), body: JSON.parse(last.body), headers: last.headers };
}

test('openai chat.completions through the vertex-claude route, whole and streamed', async () => {
  const r = await openai.chat.completions.create({
    model: 'sonnet', messages: [{ role: 'user', content: 'hi from openai' }],
  });
  assert.equal(r.choices[0].message.content, 'Hello from mock. You said: hi from openai');
  assert.equal(r.choices[0].finish_reason, 'stop');
  let up = upstream(await mock.last());
  assert.equal(up.path, `${MODELS}/claude-sonnet-4@20250514:rawPredict`);
  assert.equal(up.body.model, undefined);
  assert.equal(up.body.anthropic_version, 'vertex-2023-10-16');

  const stream = await openai.chat.completions.create({
    model: 'sonnet', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream from openai' }],
  });
  let text = '', usage = null;
  for await (const ch of stream) {
    text += ch.choices[0]?.delta?.content || '';
    if (ch.usage) usage = ch.usage;
  }
  assert.equal(text, 'Hello from mock. You said: stream from openai');
  assert.ok(usage && usage.completion_tokens > 0);
  up = upstream(await mock.last());
  assert.equal(up.path, `${MODELS}/claude-sonnet-4@20250514:streamRawPredict`);
  assert.equal(up.body.stream, true);
});

test('anthropic messages.create with cache_control and anthropic-beta, whole and streamed', async () => {
  const msg = await anthropic.messages.create({
    model: 'sonnet', max_tokens: 64, top_k: 3,
    system: [{ type: 'text', text: 'a long cached system prompt', cache_control: { type: 'ephemeral' } }],
    messages: [{ role: 'user', content: 'hi from anthropic' }],
  }, { headers: { 'anthropic-beta': 'prompt-caching-2024-07-31' } });
  assert.equal(msg.type, 'message');
  assert.equal(msg.content[0].text, 'Hello from mock. You said: hi from anthropic');
  assert.equal(msg.usage.cache_read_input_tokens, 3);
  const up = upstream(await mock.last());
  assert.equal(up.path, `${MODELS}/claude-sonnet-4@20250514:rawPredict`);
  assert.equal(up.headers['anthropic-beta'], 'prompt-caching-2024-07-31');
  assert.match(up.headers.authorization, /^Bearer ya29\.mock-/);
  assert.equal(up.body.model, undefined);
  assert.equal(up.body.top_k, 3);
  assert.deepEqual(up.body.system, [{ type: 'text', text: 'a long cached system prompt', cache_control: { type: 'ephemeral' } }]);

  const stream = anthropic.messages.stream({
    model: 'sonnet', max_tokens: 64, messages: [{ role: 'user', content: 'stream from anthropic' }],
  });
  const final = await stream.finalMessage();
  assert.equal(final.content[0].text, 'Hello from mock. You said: stream from anthropic');
  assert.equal(final.stop_reason, 'end_turn');
});

test('anthropic messages.countTokens: count-tokens:rawPredict', async () => {
  const res = await anthropic.messages.countTokens({
    model: 'sonnet', messages: [{ role: 'user', content: 'one' }, { role: 'assistant', content: 'two' }, { role: 'user', content: 'three' }],
  });
  assert.equal(res.input_tokens, 1003);
  const up = upstream(await mock.last());
  assert.equal(up.path, `${MODELS}/count-tokens:rawPredict`);
  assert.equal(up.body.model, 'claude-sonnet-4@20250514');
});
