// The mask stage on an OpenAI client's body, rewritten in its bytes
// (api->set_body_text, ABI 1.6) instead of parsed and serialized: only the
// texts the model sees change, every other byte of the body reaches the
// upstream as the client sent it; escapes around a value are kept; a
// text with a \u escape, or a key spelled with escapes, goes the parsed
// way and is masked all the same; content parts, tool-call and legacy
// function-call arguments, embeddings input; a block rule still blocks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: mask
    plugin: mask
    config:
      rules:
        - { name: ticket, regex: 'TCK-[0-9]{6}' }
        - { name: forbidden, keywords: [launch-codes], action: block }
        - { name: codename, keywords: ["blue\\tsky"] }`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

async function sent() {
  const last = await mock.last();
  return typeof last.body === 'string' ? last.body : JSON.stringify(last.body);
}

test('only the texts change: the rest of the bytes go as sent', async () => {
  const raw = '{ "model" : "gpt-4o",\n  "user": "bob@example.com",\n  "messages": [ {"role":"user", "content": "write to bob@example.com about TCK-123456"} ],\n  "metadata": {"note": "x@y.io stays"} }';
  const res = await post(gw, '/v1/chat/completions', raw);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-masked'), '2');
  const up = await sent();
  assert.equal(up, raw.replace('write to bob@example.com about TCK-123456', 'write to [EMAIL_1] about [TICKET_1]'));
  // the answer has the values back
  assert.equal((await res.json()).choices[0].message.content,
    'Hello from mock. You said: write to bob@example.com about TCK-123456');
});

test('escapes around a value are kept, and the value is found inside them', async () => {
  const raw = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'quote "ann@example.com"\nand a\\path\ttab' }] });
  const res = await post(gw, '/v1/chat/completions', raw);
  assert.equal(res.status, 200);
  const up = JSON.parse(await sent());
  assert.equal(up.messages[0].content, 'quote "[EMAIL_1]"\nand a\\path\ttab');
  assert.equal((await res.json()).choices[0].message.content, 'Hello from mock. You said: quote "ann@example.com"\nand a\\path\ttab');
});

test('the edits handed to the host (ABI 1.7): values filling a text, next to escapes and non-ASCII, across an escape, many', async () => {
  const emails = Array.from({ length: 60 }, (_, i) => `u${i}@example.com`);
  const msgs = (c) => [
    { role: 'system', content: c[0] },
    { role: 'user', content: c[1] },
    { role: 'user', content: [{ type: 'text', text: c[2] }] },
    { role: 'user', content: c[3] },
  ];
  // spaced out: the parsed way would send it compact
  const body = (c) => JSON.stringify({ model: 'gpt-4o', messages: msgs(c), metadata: { k: 'v\u00e9' } }, null, 1);
  const sentTexts = ['a@example.com', '\u00e9\u4e2db@example.org"\nc@example.net', emails.join('\t'), 'the blue\tsky plan'];
  const res = await post(gw, '/v1/chat/completions', body(sentTexts));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-masked'), '64');
  const up = await sent();
  assert.equal(up, body([
    '[EMAIL_1]',
    '\u00e9\u4e2d[EMAIL_2]"\n[EMAIL_3]',
    emails.map((_, i) => `[EMAIL_${i + 4}]`).join('\t'),
    'the [CODENAME_1] plan',
  ]));
  assert.equal((await res.json()).choices[0].message.content, 'Hello from mock. You said: the blue\tsky plan');
});

test('a \\u escape or a key spelled with escapes takes the parsed way, masked all the same', async () => {
  const u = '{"model":"gpt-4o","messages":[{"role":"user","content":"caf\\u00e9 mail cy@example.com"}]}';
  let res = await post(gw, '/v1/chat/completions', u);
  assert.equal(res.status, 200);
  assert.equal(JSON.parse(await sent()).messages[0].content, 'café mail [EMAIL_1]');
  const k = '{"model":"gpt-4o","messages":[{"role":"user","\\u0063ontent":"mail dee@example.com"}]}';
  res = await post(gw, '/v1/chat/completions', k);
  assert.equal(res.status, 200);
  const up = await sent();
  assert.ok(!up.includes('dee@example.com'), up);
});

test('content parts, tool-call and function-call arguments, embeddings input', async () => {
  const body = {
    model: 'gpt-4o',
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'ops is eve@example.com' }] },
      { role: 'assistant', content: null, tool_calls: [{ id: 't1', type: 'function', function: { name: 'send', arguments: '{"to":"eve@example.com","ssn":"123-45-6789"}' } }] },
      { role: 'assistant', content: null, function_call: { name: 'f', arguments: '{"card":"4111 1111 1111 1111"}' } },
      { role: 'tool', tool_call_id: 't1', content: 'sent to eve@example.com' },
      { role: 'user', content: 'ok' },
    ],
  };
  const res = await post(gw, '/v1/chat/completions', body);
  assert.equal(res.status, 200);
  const up = JSON.parse(await sent());
  assert.equal(up.messages[0].content[0].text, 'ops is [EMAIL_1]');
  assert.equal(up.messages[1].tool_calls[0].function.arguments, '{"to":"[EMAIL_1]","ssn":"[SSN_1]"}');
  assert.equal(up.messages[2].function_call.arguments, '{"card":"[CARD_1]"}');
  assert.equal(up.messages[3].content, 'sent to [EMAIL_1]');
  assert.equal(up.messages[1].tool_calls[0].function.name, 'send');
  const emb = await post(gw, '/v1/embeddings', { model: 'text-embedding-3-small', input: ['fred@example.com here', 'nothing'] });
  assert.equal(emb.status, 200);
  assert.deepEqual(JSON.parse(await sent()).input, ['[EMAIL_1] here', 'nothing']);
});

test('a block rule still blocks, whatever else is in the body', async () => {
  const n = await mock.count();
  const res = await post(gw, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'mail gil@example.com the launch-codes' }] });
  assert.equal(res.status, 400);
  assert.equal(res.headers.get('x-manifold-blocked'), 'forbidden');
  assert.equal(await mock.count(), n);
});
