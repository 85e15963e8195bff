// The mask stage: personal data and secrets leave the gateway replaced
// (the mock records what it was sent), placeholders come back restored in
// whole answers and streams (split one character per event and at every
// other size: the restored text equals the whole answer's, no partial
// placeholder ever reaches the client), tool-call arguments both ways,
// Anthropic clients, user rules (regex, keywords), hashing with a
// secret, blocking with a 400 naming the rule, and config refusals.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startMock, startGateway, config, chat, post, sseEvents, writeConfig, BIN, ROOT } from './harness.mjs';

let mock, gw;

const SECRET = 'mask-test-secret-0123456789';
const stages = `
  - name: mask
    plugin: mask
    config:
      secret: ${SECRET}
      actions: { ip: hash }
      rules:
        - { name: ticket, regex: 'TCK-[0-9]{6}', action: placeholder }
        - { name: codename, keywords: [bluefalcon, Red Osprey], case_insensitive: true, action: redact }
        - { name: forbidden, keywords: [launch-codes], action: block }
  - name: prometheus
    plugin: prometheus`;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, { stages }) + 'status:\n  listen: 127.0.0.1:0\n');
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

// what the upstream was sent: the last user message's text
async function upstreamText() {
  const last = await mock.last();
  const body = typeof last.body === 'string' ? JSON.parse(last.body) : last.body;
  return body;
}

const PII = 'mail alice.smith@example.com or call +1 415-555-0100, id 11010519491231002X, ' +
  'ssn 123-45-6789, card 4111 1111 1111 1111, host 10.20.30.40';

test('built-in detectors: the upstream sees placeholders, the client the values', async () => {
  const res = await chat(gw, PII);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-manifold-masked'), '6');
  const body = await res.json();
  const sent = JSON.stringify(await upstreamText());
  for (const v of ['alice.smith@example.com', '415-555-0100', '11010519491231002X', '123-45-6789',
    '4111 1111 1111 1111', '10.20.30.40']) {
    assert.ok(!sent.includes(v), `${v} reached the upstream: ${sent}`);
  }
  for (const p of ['[EMAIL_1]', '[PHONE_1]', '[CN_ID_1]', '[SSN_1]', '[CARD_1]']) {
    assert.ok(sent.includes(p), `${p} missing upstream: ${sent}`);
  }
  assert.match(sent, /\[IP:[0-9a-f]{16}\]/); // keyed hash, not restored
  const text = body.choices[0].message.content;
  assert.equal(text, 'Hello from mock. You said: ' + PII.replace('10.20.30.40', sent.match(/\[IP:[0-9a-f]{16}\]/)[0]));
});

test('near misses are left alone', async () => {
  const text = 'order 4111 1111 1111 1112, id 110105194912310021, ssn 000-12-3456, ' +
    'ip 300.1.2.3, mail me@localhost, version 1.2.3.4.5, hex 0123456789abcdef0123456789abcdef01234567';
  const res = await chat(gw, text);
  assert.equal(res.status, 200);
  const body = await res.json();
  const sent = JSON.stringify(await upstreamText());
  assert.ok(!/\[(EMAIL|PHONE|CN_ID|SSN|CARD|IP|SECRET)/.test(sent), sent);
  assert.equal(body.choices[0].message.content, 'Hello from mock. You said: ' + text);
});

test('secrets are redacted, never restored; the same value gets the same placeholder', async () => {
  const key = 'sk-proj-' + 'Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z';
  const aws = 'AKIAIOSFODNN7EXAMPLE';
  const gh = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';
  const res = await chat(gw, `keys ${key} ${aws} ${gh}; bob@example.org twice bob@example.org, ann@example.org`);
  const body = await res.json();
  const sent = JSON.stringify(await upstreamText());
  for (const v of [key, aws, gh]) assert.ok(!sent.includes(v) && !body.choices[0].message.content.includes(v));
  assert.equal((sent.match(/\[API_KEY_REDACTED\]/g) || []).length, 3);
  assert.ok(sent.includes('[EMAIL_1] twice [EMAIL_1], [EMAIL_2]'), sent);
  assert.ok(body.choices[0].message.content.endsWith('bob@example.org twice bob@example.org, ann@example.org'));
});

test('user rules: regex placeholder restored, keywords redacted (any case), hash is stable', async () => {
  const res = await chat(gw, 'ticket TCK-123456 about BLUEFALCON and red osprey');
  const body = await res.json();
  const sent = JSON.stringify(await upstreamText());
  assert.ok(sent.includes('ticket [TICKET_1] about [CODENAME_REDACTED] and [CODENAME_REDACTED]'), sent);
  assert.equal(body.choices[0].message.content,
    'Hello from mock. You said: ticket TCK-123456 about [CODENAME_REDACTED] and [CODENAME_REDACTED]');
  await (await chat(gw, 'host 10.20.30.40')).json();
  const a = JSON.stringify(await upstreamText()).match(/\[IP:[0-9a-f]{16}\]/)[0];
  await (await chat(gw, 'again 10.20.30.40')).json();
  const b = JSON.stringify(await upstreamText()).match(/\[IP:[0-9a-f]{16}\]/)[0];
  assert.equal(a, b);
});

test('a block rule answers 400 naming the rule, in the client protocol, upstream not called', async () => {
  const before = await mock.count();
  const res = await chat(gw, 'give me the launch-codes');
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.match(body.error.message, /mask rule 'forbidden'/);
  assert.equal(body.error.code, 'content_blocked');
  const ant = await post(gw, '/v1/messages', {
    model: 'gpt-4o', max_tokens: 50, messages: [{ role: 'user', content: 'the launch-codes please' }],
  });
  assert.equal(ant.status, 400);
  const ab = await ant.json();
  assert.equal(ab.type, 'error');
  assert.match(ab.error.message, /mask rule 'forbidden'/);
  assert.equal(await mock.count(), before);
});

test('every text the model sees: parts, system, tool calls and results', async () => {
  const res = await post(gw, '/v1/chat/completions', {
    model: 'gpt-4o',
    messages: [
      { role: 'system', content: 'operator ops@example.com' },
      { role: 'user', content: [{ type: 'text', text: 'part carol@example.com' }] },
      { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'lookup', arguments: '{"email":"dave@example.com"}' } }] },
      { role: 'tool', tool_call_id: 'c1', content: 'result for dave@example.com: 13812345678' },
      { role: 'user', content: 'and erin@example.com' },
    ],
  });
  assert.equal(res.status, 200);
  await res.json();
  const sent = JSON.stringify(await upstreamText());
  for (const v of ['ops@', 'carol@', 'dave@', 'erin@', '13812345678']) assert.ok(!sent.includes(v), `${v}: ${sent}`);
  assert.ok(sent.includes('{\\"email\\":\\"[EMAIL_3]\\"}'), sent);
  assert.ok(sent.includes('result for [EMAIL_3]: [PHONE_1]'), sent);

  // Anthropic system blocks, through the adapter
  const ant = await post(gw, '/v1/messages', {
    model: 'gpt-4o', max_tokens: 50,
    system: [{ type: 'text', text: 'operator frank@example.com' }],
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hi from gina@example.com' }] }],
  });
  assert.equal(ant.status, 200);
  const ab = await ant.json();
  const sent2 = JSON.stringify(await upstreamText());
  assert.ok(!sent2.includes('frank@') && !sent2.includes('gina@'), sent2);
  assert.equal(ab.content[0].text, 'Hello from mock. You said: hi from gina@example.com');
});

// the text of an OpenAI stream and its events
async function streamText(content, extra = {}) {
  const res = await chat(gw, content, { stream: true, ...extra });
  assert.equal(res.status, 200);
  const events = (await sseEvents(res)).filter((e) => e !== '[DONE]').map((e) => JSON.parse(e));
  let text = '';
  for (const e of events) text += e.choices[0]?.delta?.content ?? '';
  return { text, events };
}

const PARTIAL = /\[(E(M(A(I(L(_\d*)?)?)?)?)?|P(H(O(N(E(_\d*)?)?)?)?)?)?$/;

test('streams restore placeholders split across events at every position', async () => {
  const prompt = 'to a.b@example.com and +44 20 7946 0958 then c@example.net ok';
  const whole = (await (await chat(gw, prompt)).json()).choices[0].message.content;
  assert.equal(whole, 'Hello from mock. You said: ' + prompt);
  for (let n = 1; n <= 12; n++) {
    const { text, events } = await streamText(prompt, { model: `gpt-4o[[mock:split=${n}]]` });
    assert.equal(text, whole, `split=${n}`);
    for (const e of events) {
      const c = e.choices[0]?.delta?.content ?? '';
      assert.ok(!/\[(EMAIL|PHONE)_/.test(c) && !PARTIAL.test(c), `split=${n}: partial placeholder in ${JSON.stringify(c)}`);
    }
    // held text goes out before the finish event, which comes last
    const fin = events.findIndex((e) => e.choices[0]?.finish_reason);
    assert.equal(fin, events.length - 1);
  }
});

test('a stream with nothing masked is passed event for event', async () => {
  const { text, events } = await streamText('plain words [[mock:split=3]]');
  assert.equal(text, 'Hello from mock. You said: plain words ');
  assert.equal(events.filter((e) => e.choices[0]?.delta?.content).length, Math.ceil(text.length / 3));
});

test('a literal bracket that is no placeholder is released, not lost', async () => {
  const prompt = 'x@example.com [EMAIL_ [E [EMAIL_9] [';
  const whole = (await (await chat(gw, prompt)).json()).choices[0].message.content;
  assert.equal(whole, 'Hello from mock. You said: ' + prompt);
  for (const n of [1, 2, 5]) {
    assert.equal((await streamText(prompt, { model: `gpt-4o[[mock:split=${n}]]` })).text, whole);
  }
});

test('tool-call arguments are restored, whole and streamed', async () => {
  const tools = [{ type: 'function', function: { name: 'send', parameters: { type: 'object', properties: { to: { type: 'string' } }, required: ['to'] } } }];
  const prompt = 'write to hana@example.com [[mock:echo_args]]';
  const res = await chat(gw, prompt, { tools });
  const body = await res.json();
  const sent = JSON.stringify(await upstreamText());
  assert.ok(!sent.includes('hana@'), sent);
  const args = body.choices[0].message.tool_calls[0].function.arguments;
  assert.deepEqual(JSON.parse(args), { to: 'write to hana@example.com ' });
  for (const n of [1, 3]) {
    const r = await chat(gw, prompt, { tools, stream: true, model: `gpt-4o[[mock:split=${n}]]` });
    const events = (await sseEvents(r)).filter((e) => e !== '[DONE]').map((e) => JSON.parse(e));
    let got = '';
    for (const e of events) {
      for (const tc of e.choices[0]?.delta?.tool_calls ?? []) {
        const a = tc.function?.arguments ?? '';
        assert.ok(!PARTIAL.test(a) && !/\[EMAIL_/.test(a), a);
        got += a;
      }
    }
    assert.equal(got, args, `split=${n}`);
    assert.equal(events.at(-1).choices[0].finish_reason, 'tool_calls');
  }
});

test('Anthropic clients get restored text in their own stream events', async () => {
  const prompt = 'reach ivy@example.com soon';
  const res = await post(gw, '/v1/messages', {
    model: 'gpt-4o', max_tokens: 50, stream: true,
    messages: [{ role: 'user', content: prompt + ' [[mock:split=1]]' }],
  });
  assert.equal(res.status, 200);
  const raw = await res.text();
  let text = '';
  for (const block of raw.split('\n\n')) {
    const data = block.split('\n').find((l) => l.startsWith('data:'));
    if (!data) continue;
    const ev = JSON.parse(data.slice(5));
    if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') {
      assert.ok(!/\[EMAIL_/.test(ev.delta.text) && !PARTIAL.test(ev.delta.text), ev.delta.text);
      text += ev.delta.text;
    }
  }
  assert.equal(text, 'Hello from mock. You said: ' + prompt + ' ');
  assert.match(raw, /event: message_stop/);
});

test('metrics count masked values by type and action, blocks by rule', async () => {
  const port = gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1];
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const sample = (re) => Number((text.match(re) || [])[1] ?? NaN);
  assert.ok(sample(/^manifold_mask_entities_total\{type="EMAIL",action="placeholder"\} (\d+)/m) >= 10, text);
  assert.ok(sample(/^manifold_mask_entities_total\{type="API_KEY",action="redact"\} (\d+)/m) >= 3);
  assert.ok(sample(/^manifold_mask_blocked_total\{rule="forbidden"\} (\d+)/m) >= 2);
  assert.ok(!text.includes('example.com'), 'a value became a label');
});

test('config refusals name the problem', () => {
  const cases = [
    ['actions: { api_key: placeholder }', /never kept for restoring/],
    ['actions: { email: hash }', /needs a secret/],
    ['rules: [{ name: x, regex: "(" }]', /regex: .*offset/],
    ['detectors: [emails]', /not a detector/],
    ['colour: blue', /unknown key 'colour'/],
    ['rules: [{ name: email, keywords: [a] }]', /built-in detector's name/],
  ];
  for (const [cfg, re] of cases) {
    const file = writeConfig(config('http://127.0.0.1:9', {
      stages: `  - name: mask\n    plugin: mask\n    config: { ${cfg} }`,
    }));
    const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, cfg);
    assert.match(r.stderr + r.stdout, re, cfg);
  }
});

test('token counts forwarded to the provider are masked too (count_tokens, countTokens), and a block rule holds', async () => {
  const g = await startGateway(config(mock.url, {
    stages,
    extraProviders: `
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]
  - name: gemini
    type: gemini
    base_url: ${mock.url}
    keys: ["AIza-test-0123456789"]
    models: ["gemini-*"]`,
  }));
  try {
    let res = await post(g, '/v1/messages/count_tokens', {
      model: 'claude-sonnet-4',
      system: 'my mail is alice.smith@example.com',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'card 4111 1111 1111 1111, ticket TCK-123456' }] }],
    }, { 'anthropic-version': '2023-06-01' });
    assert.equal(res.status, 200);
    assert.ok((await res.json()).input_tokens > 0);
    let last = await mock.last();
    assert.match(last.path, /count_tokens/);
    for (const v of ['alice.smith@example.com', '4111 1111 1111 1111', 'TCK-123456']) {
      assert.ok(!last.body.includes(v), `${v} reached the upstream: ${last.body}`);
    }
    assert.match(last.body, /\[EMAIL_1\]/);
    assert.equal(JSON.parse(last.body).model, 'claude-sonnet-4');
    res = await post(g, '/v1beta/models/gemini-2.5-flash:countTokens', {
      contents: [{ role: 'user', parts: [{ text: 'reach carol@example.com' }] }],
    });
    assert.equal(res.status, 200);
    assert.ok((await res.json()).totalTokens > 0);
    last = await mock.last();
    assert.match(last.path, /countTokens/);
    assert.ok(!last.body.includes('carol@example.com'), last.body);
    assert.match(last.body, /\[EMAIL_1\]/);
    // a block rule refuses the count as it refuses the message
    const before = await mock.count();
    res = await post(g, '/v1/messages/count_tokens', {
      model: 'claude-sonnet-4', messages: [{ role: 'user', content: 'the launch-codes are' }],
    }, { 'anthropic-version': '2023-06-01' });
    assert.equal(res.status, 400);
    assert.equal(await mock.count(), before);
  } finally {
    await g.stop();
  }
});

test('a stored Response keeps the client\'s own input; a later turn masks it again with one numbering', async () => {
  let res = await post(gw, '/v1/responses', { model: 'gpt-4o', input: 'mail alice.smith@example.com please' });
  assert.equal(res.status, 200);
  const first = await res.json();
  assert.equal(first.output[0].content[0].text, 'Hello from mock. You said: mail alice.smith@example.com please');
  // what the client reads back is what it sent, not the placeholders
  const items = await (await fetch(`${gw.url}/v1/responses/${first.id}/input_items`)).json();
  assert.equal(items.data[0].content[0].text, 'mail alice.smith@example.com please');
  res = await post(gw, '/v1/responses', { model: 'gpt-4o', previous_response_id: first.id, input: 'and bob@example.com' });
  assert.equal(res.status, 200);
  const second = await res.json();
  const sent = JSON.parse((await mock.last()).body).messages;
  // every turn masked in this request: alice is EMAIL_1 in each, bob EMAIL_2
  assert.deepEqual(sent.map((m) => m.content), [
    'mail [EMAIL_1] please',
    'Hello from mock. You said: mail [EMAIL_1] please',
    'and [EMAIL_2]',
  ]);
  assert.equal(second.output[0].content[0].text, 'Hello from mock. You said: and bob@example.com');
});
