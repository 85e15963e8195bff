// lua/stages/prompt-decorator.lua: system and user messages added by
// rule, in the canonical request, so an Anthropic upstream gets the
// system ones in `system`; also after a template.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { startMock, startGateway, config, post, writeConfig, ROOT, BIN } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: claude
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-mock-0123456789"]
    models: ["claude-*"]`,
    stages: `
  - name: who
    lua: ${ROOT}/tests/integration/fixtures/consumer-header.lua
  - name: decorate
    lua: prompt-decorator.lua
    config:
      decorators:
        - { when: { models: ["claude-*"] }, system: "Decorated system first." }
        - { system: "Policy: be kind.", position: append }
        - { when: { words: [urgent] }, user: "Reminder.", position: append }
        - { when: { consumer: "team-*" }, user: "Context: internal." }`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

async function lastBody() {
  return JSON.parse((await mock.last()).body);
}

test('system and user messages by rule, in the canonical request', async () => {
  let res = await post(gw, '/v1/chat/completions', { model: 'gpt-4o', messages: [
    { role: 'system', content: 'Client sys' }, { role: 'user', content: 'this is urgent' }] });
  assert.equal(res.status, 200);
  assert.deepEqual((await lastBody()).messages, [
    { role: 'system', content: 'Client sys' },
    { role: 'system', content: 'Policy: be kind.' },
    { role: 'user', content: 'this is urgent' },
    { role: 'user', content: 'Reminder.' },
  ]);
  res = await post(gw, '/v1/chat/completions', { model: 'gpt-4o', messages: [
    { role: 'user', content: 'hello' }] }, { 'x-who': 'team-x' });
  assert.deepEqual((await lastBody()).messages, [
    { role: 'system', content: 'Policy: be kind.' },
    { role: 'user', content: 'Context: internal.' },
    { role: 'user', content: 'hello' },
  ]);
});

test('an Anthropic upstream gets the system ones in system, from either inbound', async () => {
  let res = await post(gw, '/v1/chat/completions', { model: 'claude-3-5-haiku', max_tokens: 20, messages: [
    { role: 'system', content: 'Client sys' }, { role: 'user', content: 'hi' }] });
  assert.equal(res.status, 200);
  let sent = await lastBody();
  const texts = (s) => (typeof s === 'string' ? [s] : s.map((b) => b.text));
  assert.deepEqual(texts(sent.system), ['Decorated system first.', 'Client sys', 'Policy: be kind.']);
  assert.deepEqual(sent.messages.map((m) => m.role), ['user']);
  res = await post(gw, '/v1/messages', { model: 'claude-3-5-haiku', max_tokens: 20, system: 'Anthropic client sys',
    messages: [{ role: 'user', content: 'hi' }] }, { 'x-api-key': 'c', 'anthropic-version': '2023-06-01' });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).type, 'message');
  sent = await lastBody();
  assert.deepEqual(texts(sent.system), ['Decorated system first.', 'Anthropic client sys', 'Policy: be kind.']);
});

test('a decorator config with an unknown key is refused', () => {
  const file = writeConfig(config(mock.url, { stages: `
  - name: decorate
    lua: prompt-decorator.lua
    config:
      decorators: [{ system: "x", where: top }]` }));
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8', cwd: path.dirname(file) });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /decorators\[1\]: unknown key 'where'/);
});
