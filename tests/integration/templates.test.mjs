// lua/stages/prompt-templates.lua: packs read from the config's
// directory, rendered into the parsed request (escaped), by model name or
// the prompt field; stream and client fields survive; 400s naming what
// is missing; limited per consumer; the Anthropic inbound; a pack
// replaced under load switches without a failed request.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startMock, startGateway, config, post, sseEvents, ROOT } from './harness.mjs';

let mock, gw, dir;

function pack(version, userLine) {
  return `name: support
version: ${version}
description: replies to support tickets
templates:
  reply:
    description: answer a customer's ticket
    model: gpt-4o-mini
    params: { temperature: 0.2, max_tokens: 300 }
    variables:
      customer: { required: true, max_length: 200 }
      ticket: { required: true }
      product: { default: Manifold }
      urgent: { default: false }
    messages:
      - role: system
        content: |
          You answer support tickets for {{product}}.{{#urgent}} The customer is waiting: be short.{{/urgent}}
      - role: user
        content: "${userLine}"
  envleak:
    model: gpt-4o-mini
    messages:
      - { role: user, content: "home=\${HOME} key=\${OPENAI_API_KEY:-none}" }
  internal:
    model: gpt-4o-mini
    allow: { consumers: ["team-*"] }
    messages:
      - { role: user, content: "internal notes" }
`;
}

function writePack(sub, text) {
  mkdirSync(path.join(dir, sub), { recursive: true });
  const tmp = path.join(dir, sub, 'pack.yaml.tmp');
  writeFileSync(tmp, text);
  renameSync(tmp, path.join(dir, sub, 'pack.yaml'));
}

async function requests() {
  const list = await (await fetch(`${mock.url}/_mock/requests`)).json();
  return list.map((q) => { try { return { ...q, body: JSON.parse(q.body) }; } catch { return { ...q, body: {} }; } });
}

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-tpl-'));
  writePack('support-v1', pack(1, 'v1: {{customer}} asks: {{ticket}}'));
  writePack('support-v2', pack(2, 'Customer {{customer}} writes: {{ticket}}'));
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
  - name: templates
    lua: prompt-templates.lua
    config:
      packs: [support-v1, support-v2]`,
  }) + '\nreload: { watch: true, debounce: 100ms }\n', { dir });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('a template by model name renders its messages, escaped, before the client\'s', async () => {
  const customer = 'Ann "the \\\\ tester"\n{{ticket}} </script>';
  const res = await post(gw, '/v1/chat/completions', {
    model: 'template:reply@2',
    variables: { customer, ticket: 'it broke', urgent: true },
    messages: [{ role: 'user', content: 'and one more thing' }],
    temperature: 0.9, user: 'u-1',
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-template'), 'reply@2');
  const sent = (await requests()).pop();
  assert.equal(sent.body.model, 'gpt-4o-mini');
  assert.deepEqual(sent.body.messages, [
    { role: 'system', content: 'You answer support tickets for Manifold. The customer is waiting: be short.\n' },
    { role: 'user', content: `Customer ${customer} writes: it broke` },
    { role: 'user', content: 'and one more thing' },
  ]);
  assert.equal(sent.body.temperature, 0.9, 'the client\'s field wins over the template\'s');
  assert.equal(sent.body.max_tokens, 300, 'the template\'s fills what the client left');
  assert.equal(sent.body.user, 'u-1');
  assert.equal(sent.body.variables, undefined);
});

test('template:NAME takes the highest version; the prompt field keeps the client\'s model', async () => {
  let res = await post(gw, '/v1/chat/completions', { model: 'template:reply', variables: { customer: 'A', ticket: 'T' } });
  assert.equal(res.headers.get('x-manifold-template'), 'reply@2');
  res = await post(gw, '/v1/chat/completions', { model: 'template:reply@1', variables: { customer: 'A', ticket: 'T' } });
  assert.equal((await res.json()).choices[0].message.content, 'Hello from mock. You said: v1: A asks: T');
  res = await post(gw, '/v1/chat/completions', {
    model: 'gpt-4o', prompt: { id: 'reply', version: 1, variables: { customer: 'B', ticket: 'U' } },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-template'), 'reply@1');
  const sent = (await requests()).pop();
  assert.equal(sent.body.model, 'gpt-4o');
  assert.equal(sent.body.prompt, undefined);
  assert.equal(sent.body.messages[1].content, 'v1: B asks: U');
});

test('a pack is data: ${VAR} in it is text, not the environment', async () => {
  const res = await post(gw, '/v1/chat/completions', { model: 'template:envleak@2' });
  assert.equal(res.status, 200);
  assert.equal((await requests()).pop().body.messages[0].content, 'home=${HOME} key=${OPENAI_API_KEY:-none}');
});

test('a stream stays a stream', async () => {
  const res = await post(gw, '/v1/chat/completions', {
    model: 'template:reply@2', stream: true, variables: { customer: 'S', ticket: 'streaming' },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/event-stream/);
  const events = await sseEvents(res);
  assert.equal(events.at(-1), '[DONE]');
  const text = events.slice(0, -1).map((e) => JSON.parse(e).choices?.[0]?.delta?.content || '').join('');
  assert.equal(text, 'Hello from mock. You said: Customer S writes: streaming');
  assert.equal((await requests()).pop().body.stream, true);
});

test('missing or unknown variables and unknown templates are 400s naming them', async () => {
  const cases = [
    [{ model: 'template:reply@2', variables: { customer: 'A' } }, /template 'reply@2': missing variable 'ticket'/],
    [{ model: 'template:nope@1', variables: {} }, /unknown template 'nope@1'/],
    [{ model: 'template:reply@7', variables: {} }, /unknown template 'reply@7'/],
    [{ model: 'template:reply@2', variables: { customer: 'A', ticket: 'T', colour: 'red' } }, /has no variable 'colour'/],
    [{ model: 'template:reply@2', variables: { customer: { a: 1 }, ticket: 'T' } }, /variable 'customer' must be a string/],
    [{ model: 'template:reply@2', variables: { customer: 'x'.repeat(201), ticket: 'T' } }, /longer than 200 bytes/],
  ];
  const before = await mock.count();
  for (const [body, re] of cases) {
    const res = await post(gw, '/v1/chat/completions', body);
    assert.equal(res.status, 400);
    const j = await res.json();
    assert.match(j.error.message, re);
  }
  assert.equal(await mock.count(), before, 'nothing reached the upstream');
});

test('a template limited to some consumers', async () => {
  let res = await post(gw, '/v1/chat/completions', { model: 'template:internal@2' }, { 'x-who': 'someone' });
  assert.equal(res.status, 403);
  assert.match((await res.json()).error.message, /template 'internal@2' is not allowed/);
  res = await post(gw, '/v1/chat/completions', { model: 'template:internal@2' }, { 'x-who': 'team-a' });
  assert.equal(res.status, 200);
});

test('the Anthropic inbound: variables travel, the answer is Anthropic\'s', async () => {
  const res = await post(gw, '/v1/messages', {
    model: 'template:reply@2', max_tokens: 50,
    system: 'Client system prompt.',
    messages: [{ role: 'user', content: 'hello' }],
    variables: { customer: 'C', ticket: 'from claude code' },
  }, { 'x-api-key': 'client', 'anthropic-version': '2023-06-01' });
  assert.equal(res.status, 200);
  const j = await res.json();
  assert.equal(j.type, 'message');
  const sent = (await requests()).pop();
  assert.deepEqual(sent.body.messages.map((m) => m.role), ['system', 'user', 'system', 'user']);
  assert.equal(sent.body.messages[1].content, 'Customer C writes: from claude code');
  const bad = await post(gw, '/v1/messages', {
    model: 'template:reply@2', max_tokens: 50, messages: [{ role: 'user', content: 'x' }], variables: {},
  }, { 'x-api-key': 'client', 'anthropic-version': '2023-06-01' });
  assert.equal(bad.status, 400);
  const e = await bad.json();
  assert.equal(e.type, 'error');
  assert.match(e.error.message, /missing variable/);
});

test('a pack replaced under load switches without a failed request', async () => {
  let stop = false;
  const statuses = [];
  const seen = new Set();
  const load = (async () => {
    while (!stop) {
      const res = await post(gw, '/v1/chat/completions', { model: 'template:reply@2', variables: { customer: 'L', ticket: 'load' } });
      statuses.push(res.status);
      const j = await res.json();
      if (res.status === 200) seen.add(j.choices[0].message.content);
    }
  })();
  await new Promise((r) => setTimeout(r, 100));
  writePack('support-v2', pack(2, 'Replaced: {{customer}} / {{ticket}}'));
  const end = Date.now() + 10000;
  while (![...seen].some((t) => t.includes('Replaced: L / load')) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
  }
  stop = true;
  await load;
  assert.ok([...seen].some((t) => t.includes('Replaced: L / load')), `switched: ${[...seen]}`);
  assert.ok(statuses.length > 2);
  assert.deepEqual([...new Set(statuses)], [200]);
  // a broken pack is refused: the last good one keeps serving
  writePack('support-v2', pack(2, 'Broken {{nosuch}}'));
  await gw.waitStderr(/\{\{nosuch\}\} is not a declared variable/);
  const res = await post(gw, '/v1/chat/completions', { model: 'template:reply@2', variables: { customer: 'L', ticket: 'load' } });
  assert.equal((await res.json()).choices[0].message.content, 'Hello from mock. You said: Replaced: L / load');
});

test('examples/prompt-template: the shipped example pack serves', async () => {
  const { cpSync, readFileSync } = await import('node:fs');
  const copy = mkdtempSync(path.join(tmpdir(), 'mf-tpl-example-'));
  cpSync(path.join(ROOT, 'examples/prompt-template'), copy, { recursive: true });
  const ex = await startGateway(readFileSync(path.join(copy, 'manifold.yaml'), 'utf8'), {
    dir: copy, env: { OPENAI_API_KEY: 'sk-example-0123456789', OPENAI_BASE_URL: `${mock.url}/v1` },
  });
  try {
    const res = await post(ex, '/v1/chat/completions', {
      model: 'template:ticket-reply@2',
      variables: { customer: 'Ann', ticket: 'The export button does nothing.', urgent: true },
    });
    assert.equal(res.status, 200);
    const sent = (await requests()).pop().body;
    assert.equal(sent.model, 'gpt-4o-mini');
    assert.match(sent.messages[0].content, /^You are a support agent for our product\. Your tone is friendly\.\nThe customer is blocked/);
    assert.equal(sent.messages[1].role, 'system');
    assert.match(sent.messages[1].content, /Never promise refunds/);
    assert.equal(sent.messages[2].content, 'Ticket from Ann:\nThe export button does nothing.');
    const denied = await post(ex, '/v1/chat/completions', { model: 'template:ticket-summary', variables: { thread: 't' } });
    assert.equal(denied.status, 403);
  } finally {
    await ex.stop();
  }
});
