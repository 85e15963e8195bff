// The safety stages through the official SDKs: `openai` and
// `@anthropic-ai/sdk` clients get masked values back (whole, streamed one
// character per event, tool-call arguments and tool_use input), a guard
// stop as finish_reason content_filter / stop_reason refusal, and blocks
// as the SDKs' own 400 errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw, openai, anthropic;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: mask
    plugin: mask
    config:
      rules: [{ name: forbidden, keywords: [launch-codes], action: block }]
  - name: guard
    plugin: guard
    config:
      rules: [{ name: leak, keywords: [forbiddenword], on: [output] }]`,
  }));
  openai = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const PROMPT = 'write to kim@example.com or +44 20 7946 0958';
const ECHO = 'Hello from mock. You said: ' + PROMPT;
const SPLIT1 = 'gpt-4o[[mock:split=1]]';

test('openai: whole and streamed answers are restored', async () => {
  const r = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: PROMPT }] });
  assert.equal(r.choices[0].message.content, ECHO);
  const last = await mock.last();
  const sent = JSON.stringify(last.body);
  assert.ok(!sent.includes('kim@example.com') && sent.includes('[EMAIL_1]'), sent);
  const stream = await openai.chat.completions.create({
    model: SPLIT1, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: PROMPT }],
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const c of stream) {
    const piece = c.choices[0]?.delta?.content ?? '';
    assert.ok(!/\[(E|EM|EMA|EMAI|EMAIL|EMAIL_|P|PH|PHO|PHON|PHONE|PHONE_)\d*$/.test(piece), piece);
    text += piece;
    finish = c.choices[0]?.finish_reason ?? finish;
    usage = c.usage ?? usage;
  }
  assert.equal(text, ECHO);
  assert.equal(finish, 'stop');
  assert.ok(usage.completion_tokens > 0);
});

test('openai: tool-call arguments restored in a stream; a block is a BadRequestError', async () => {
  const tools = [{ type: 'function', function: { name: 'send', parameters: { type: 'object', properties: { to: { type: 'string' } }, required: ['to'] } } }];
  const stream = openai.beta.chat.completions.stream({
    model: SPLIT1, tools, messages: [{ role: 'user', content: 'mail lee@example.org [[mock:echo_args]]' }],
  });
  const final = await stream.finalChatCompletion();
  assert.deepEqual(JSON.parse(final.choices[0].message.tool_calls[0].function.arguments), { to: 'mail lee@example.org ' });
  await assert.rejects(
    openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'the launch-codes' }] }),
    (e) => e instanceof OpenAI.BadRequestError && /mask rule 'forbidden'/.test(e.message));
});

test('openai: a guard stop ends the stream with content_filter', async () => {
  const stream = await openai.chat.completions.create({
    model: SPLIT1, stream: true, messages: [{ role: 'user', content: 'say forbiddenword now' }],
  });
  let text = '';
  let finish = null;
  for await (const c of stream) {
    text += c.choices[0]?.delta?.content ?? '';
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, 'Hello from mock. You said: say ');
  assert.equal(finish, 'content_filter');
});

test('anthropic: restored text and tool_use input, streamed one character per event', async () => {
  const m = await anthropic.messages.create({ model: 'gpt-4o', max_tokens: 100, messages: [{ role: 'user', content: PROMPT }] });
  assert.equal(m.content[0].text, ECHO);
  const stream = anthropic.messages.stream({ model: SPLIT1, max_tokens: 100, messages: [{ role: 'user', content: PROMPT }] });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, ECHO);
  assert.equal(final.content[0].text, ECHO);
  const tool = { name: 'send', input_schema: { type: 'object', properties: { to: { type: 'string' } }, required: ['to'] } };
  const ts = anthropic.messages.stream({
    model: SPLIT1, max_tokens: 100, tools: [tool],
    messages: [{ role: 'user', content: 'mail lee@example.org [[mock:echo_args]]' }],
  });
  const tf = await ts.finalMessage();
  const use = tf.content.find((b) => b.type === 'tool_use');
  assert.deepEqual(use.input, { to: 'mail lee@example.org ' });
});

test('anthropic: a guard stop is stop_reason refusal; a block is a BadRequestError', async () => {
  const stream = anthropic.messages.stream({ model: SPLIT1, max_tokens: 100, messages: [{ role: 'user', content: 'say forbiddenword now' }] });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, 'Hello from mock. You said: say ');
  assert.equal(final.stop_reason, 'refusal');
  await assert.rejects(
    anthropic.messages.create({ model: 'gpt-4o', max_tokens: 10, messages: [{ role: 'user', content: 'launch-codes' }] }),
    (e) => e instanceof Anthropic.BadRequestError && /mask rule 'forbidden'/.test(e.message));
});
