// The official `openai` and `@anthropic-ai/sdk` packages against the
// key-auth and limits stages: the error classes they raise for a bad key,
// a model not allowed, a rate limit and a spent budget, the headers they
// read, and that they do not retry a spent budget (x-should-retry: false)
// while they do retry a rate limit.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: claude
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-upstream-0123456789"]
    models: ["claude-*"]`,
    stages: `  - { name: auth, plugin: key-auth, config: { db: none, secret: "0123456789abcdef0123" } }
  - { name: limits, plugin: limits, config: { db: none, default_max_tokens: 50 } }`,
  }) + `
consumers:
  - { name: ok, keys: ["k-ok"], models: ["gpt-4o*", "claude-*"] }
  - { name: gpt-only, keys: ["k-gpt"], models: ["gpt-*"] }
  - { name: rated, keys: ["k-rated"], limits: { rpm: 1 } }
  - { name: broke, keys: ["k-broke"], budget: { tokens: 10, period: month } }
`);
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

// error headers: a plain object in some SDK versions, Headers in others
const hdr = (e, name) => (typeof e.headers?.get === 'function' ? e.headers.get(name) : e.headers?.[name]);
const oa = (key, maxRetries = 0) => new OpenAI({ apiKey: key, baseURL: gw.url + '/v1', maxRetries });
const an = (key, maxRetries = 0) => new Anthropic({ apiKey: key, baseURL: gw.url, maxRetries });
const msg = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] };
const amsg = { model: 'claude-3-5-sonnet', max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] };

test('openai: AuthenticationError, PermissionDeniedError, RateLimitError', async () => {
  await assert.rejects(oa('wrong').chat.completions.create(msg), (e) =>
    e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key');
  await assert.rejects(oa('k-gpt').chat.completions.create({ ...msg, model: 'claude-3-5-sonnet' }), (e) =>
    e instanceof OpenAI.PermissionDeniedError && e.code === 'model_not_allowed');
  assert.ok((await oa('k-rated').chat.completions.create(msg)).id);
  await assert.rejects(oa('k-rated').chat.completions.create(msg), (e) =>
    e instanceof OpenAI.RateLimitError && e.code === 'rate_limit_exceeded' &&
    Number(hdr(e, 'retry-after-ms')) > 0 && Number(hdr(e, 'retry-after')) >= 1);
});

test('openai: a spent budget is insufficient_quota and is not retried', async () => {
  const before = await mock.count();
  const client = oa('k-broke', 3); // would retry a 429 three times
  await assert.rejects(client.chat.completions.create(msg), (e) =>
    e instanceof OpenAI.RateLimitError && e.code === 'insufficient_quota' &&
    hdr(e, 'x-should-retry') === 'false');
  assert.equal(await mock.count(), before, 'no request reached the upstream');
  // one request only: the SDK made every attempt it would before it
  // rejected, and the gateway logged one refusal for this key
  await gw.waitLog((l) => l.status === 429 && l.consumer === 'broke');
  assert.equal(gw.accessLog().filter((l) => l.status === 429 && l.consumer === 'broke').length, 1);
});

test('anthropic: AuthenticationError, PermissionDeniedError, RateLimitError without retry on a spent budget', async () => {
  await assert.rejects(an('wrong').messages.create(amsg), (e) => e instanceof Anthropic.AuthenticationError);
  await assert.rejects(an('k-gpt').messages.create(amsg), (e) => e instanceof Anthropic.PermissionDeniedError);
  const r = await an('k-ok').messages.create(amsg);
  assert.equal(r.type, 'message');
  const n = gw.accessLog().filter((l) => l.consumer === 'broke').length;
  await assert.rejects(an('k-broke', 3).messages.create(amsg), (e) =>
    e instanceof Anthropic.RateLimitError && hdr(e, 'x-should-retry') === 'false');
  await gw.waitLog((l) => l.consumer === 'broke' && l.path === '/v1/messages');
  assert.equal(gw.accessLog().filter((l) => l.consumer === 'broke').length, n + 1, 'not retried');
});
