// Claude's extended thinking through the gateway's one form for reasoning
// (reasoning items with the provider's encrypted_content). The upstream is
// the mock's Messages API, which with thinking on answers a thinking block
// (signed with a hash of its text) first, refuses a thinking block whose
// signature it did not make, and refuses a tool_result turn whose
// assistant turn lost its thinking, as Anthropic does.
//  - Responses clients (the official `openai` SDK, as Codex CLI): the
//    thinking block comes back as a reasoning item whose encrypted_content
//    carries it (marked "manifold:anthropic:") when include asks for it;
//    sent back, it becomes the thinking block again before the tool_use.
//  - Anthropic clients (the official `@anthropic-ai/sdk`): thinking blocks
//    in the assistant history reach the upstream with their signature, and
//    answers carry the real signature (whole, and as a signature_delta).
//  - Claude on Bedrock (Converse): its reasoningContent (text and
//    signature) goes round a tool loop the same way, marked
//    "manifold:bedrock:" (the Bedrock mock signs and checks it too).
//  - Marked content never goes to another provider (the Responses mock
//    refuses encrypted content it did not make).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw, client, anthropic;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]
  - name: openai-responses
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-resp-0123456789"]
    models: ["codex-*"]
    options: { wire: responses }
  - name: bedrock
    type: bedrock
    base_url: ${mock.url}
    region: us-west-2
    keys: ["AKIDMOCK1:mock/secret/AKIDMOCK1"]
    models: ["anthropic.*"]`,
  }));
  client = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: 'client-key', baseURL: gw.url, maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const tools = [{
  type: 'function', name: 'get_weather', description: 'Weather of a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];
const MARK = 'manifold:anthropic:';

async function create(req, stream) {
  if (!stream) return client.responses.create(req);
  const events = [];
  for await (const ev of await client.responses.create({ ...req, stream: true })) events.push(ev);
  return { events, ...events.find((e) => e.type === 'response.completed').response };
}

for (const stream of [false, true]) {
  test(`responses (${stream ? 'stream' : 'whole'}): the signed thinking block goes round a tool loop as a reasoning item`, async () => {
    const base = {
      model: 'claude-sonnet-4', store: false, include: ['reasoning.encrypted_content'],
      reasoning: { effort: 'low' }, tools,
    };
    const user = { role: 'user', content: 'weather in Paris? redacted too' };
    const r1 = await create({ ...base, input: [user] }, stream);
    assert.deepEqual(r1.output.map((i) => i.type), ['reasoning', 'reasoning', 'function_call']);
    const [rs, red, fc] = r1.output;
    assert.ok(rs.encrypted_content.startsWith(MARK));
    assert.ok(red.encrypted_content.startsWith(MARK));
    assert.deepEqual(rs.summary, [{ type: 'summary_text', text: 'Thinking about it.' }]);
    assert.deepEqual(red.summary, []);
    if (stream) {
      const done = r1.events.filter((e) => e.type === 'response.output_item.done');
      assert.equal(done[0].item.encrypted_content, rs.encrypted_content);
      const added = r1.events.filter((e) => e.type === 'response.output_item.added');
      assert.equal(added[1].item.encrypted_content, red.encrypted_content, 'a redacted block comes whole: added carries it');
      assert.deepEqual(r1.events.filter((e) => e.item_id === red.id).map((e) => e.type), [],
        'no summary: no summary part events, as the API sends none');
      assert.deepEqual(r1.events.filter((e) => e.item_id === rs.id).map((e) => e.type), [
        'response.reasoning_summary_part.added', 'response.reasoning_summary_text.delta',
        'response.reasoning_summary_text.delta', 'response.reasoning_summary_text.done',
        'response.reasoning_summary_part.done',
      ]);
    }
    const r2 = await create({
      ...base,
      input: [user, rs, red, fc, { type: 'function_call_output', call_id: fc.call_id, output: 'sunny' }],
    }, stream);
    assert.equal(r2.status, 'completed');
    const up = JSON.parse((await mock.last()).body);
    assert.deepEqual(up.messages[1].content.map((b) => b.type), ['thinking', 'redacted_thinking', 'tool_use']);
    assert.equal(up.messages[1].content[0].thinking, 'Thinking about it.');
    assert.match(up.messages[1].content[0].signature, /^sig_mock_/);
    assert.equal(up.messages[1].content[1].data, 'redacted_mock_1');
    assert.equal(up.messages[2].content[0].type, 'tool_result');
  });
}

test('responses: without its reasoning item the tool loop is refused by Anthropic (the mock checks it)', async () => {
  const r1 = await client.responses.create({
    model: 'claude-sonnet-4', store: false, reasoning: { effort: 'low' }, tools, input: 'weather in Paris?',
  });
  const [rs, fc] = r1.output;
  assert.equal(rs.type, 'reasoning');
  assert.equal(rs.encrypted_content, undefined, 'not asked with include: not given');
  await assert.rejects(client.responses.create({
    model: 'claude-sonnet-4', store: false, reasoning: { effort: 'low' }, tools,
    input: ['weather in Paris?', fc, { type: 'function_call_output', call_id: fc.call_id, output: 'sunny' }]
      .map((i) => (typeof i === 'string' ? { role: 'user', content: i } : i)),
  }), (e) => e.status === 400 && /must start with a thinking block/.test(e.message));
});

test('a reasoning item Anthropic made is not sent to an OpenAI model, and an OpenAI one not to Anthropic', async () => {
  const base = { store: false, include: ['reasoning.encrypted_content'], reasoning: { effort: 'low' }, tools };
  const r1 = await client.responses.create({ ...base, model: 'claude-sonnet-4', input: 'weather in Rome?' });
  const [rs, fc] = r1.output;
  const out = { type: 'function_call_output', call_id: fc.call_id, output: 'sunny' };
  const r2 = await client.responses.create({
    ...base, model: 'codex-mini', input: [{ role: 'user', content: 'weather in Rome?' }, rs, fc, out],
  });
  assert.equal(r2.status, 'completed');
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.input.map((i) => i.type), ['message', 'function_call', 'function_call_output']);
  const oa = { type: 'reasoning', id: 'rs_x', summary: [], encrypted_content: 'enc_mock_9' };
  await client.responses.create({
    model: 'claude-sonnet-4', store: false,
    input: [{ role: 'user', content: 'hi' }, oa, { role: 'assistant', content: 'hello' }, { role: 'user', content: 'again' }],
  });
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[1], { role: 'assistant', content: [{ type: 'text', text: 'hello' }] });
});

test('anthropic SDK: thinking blocks in the history keep their signature to the upstream; answers carry the real one', async () => {
  const thinking = { type: 'enabled', budget_tokens: 1024 };
  const atools = [{ name: 'get_weather', input_schema: tools[0].parameters }];
  const r1 = await anthropic.messages.create({
    model: 'claude-sonnet-4', max_tokens: 2000, thinking, tools: atools,
    messages: [{ role: 'user', content: 'weather in Oslo?' }],
  });
  assert.deepEqual(r1.content.map((b) => b.type), ['thinking', 'tool_use']);
  assert.match(r1.content[0].signature, /^sig_mock_/);
  const r2 = await anthropic.messages.create({
    model: 'claude-sonnet-4', max_tokens: 2000, thinking, tools: atools,
    messages: [
      { role: 'user', content: 'weather in Oslo?' },
      { role: 'assistant', content: r1.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: r1.content[1].id, content: 'cold' }] },
    ],
  });
  assert.equal(r2.stop_reason, 'end_turn');
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[1].content[0], r1.content[0]);
  assert.equal(up.messages[1].content[1].type, 'tool_use');

  const s = anthropic.messages.stream({
    model: 'claude-sonnet-4', max_tokens: 2000, thinking, tools: atools,
    messages: [{ role: 'user', content: 'weather in Oslo? redacted' }],
  });
  const sigs = [];
  s.on('streamEvent', (e) => { if (e.type === 'content_block_delta' && e.delta.type === 'signature_delta') sigs.push(e.delta.signature); });
  const m = await s.finalMessage();
  assert.deepEqual(m.content.map((b) => b.type), ['thinking', 'redacted_thinking', 'tool_use']);
  assert.equal(m.content[0].thinking, 'Thinking about it.');
  assert.deepEqual(sigs, [m.content[0].signature]);
  assert.match(m.content[0].signature, /^sig_mock_/);
  assert.equal(m.content[1].data, 'redacted_mock_1');
});

for (const stream of [false, true]) {
  test(`stored responses (${stream ? 'stream' : 'whole'}): previous_response_id gives Claude its signed thinking back in the tool loop`, async () => {
    const req = { model: 'claude-sonnet-4', reasoning: { effort: 'low' }, tools, input: 'weather in Quito?' };
    const r1 = await create(req, stream);
    assert.equal(r1.output[0].encrypted_content, undefined, 'not asked with include: not shown');
    const fc = r1.output.find((i) => i.type === 'function_call');
    const r2 = await create({
      model: 'claude-sonnet-4', reasoning: { effort: 'low' }, tools, previous_response_id: r1.id,
      input: [{ type: 'function_call_output', call_id: fc.call_id, output: 'mild' }],
    }, stream);
    assert.equal(r2.status, 'completed');
    const up = JSON.parse((await mock.last()).body);
    assert.deepEqual(up.messages[1].content.map((b) => b.type), ['thinking', 'tool_use']);
    assert.match(up.messages[1].content[0].signature, /^sig_mock_/);
  });
}

test('chat.completions clients: the answer message carries reasoning_items; sent back, Claude gets its thinking block', async () => {
  const ctools = [{ type: 'function', function: { name: 'get_weather', parameters: tools[0].parameters } }];
  const messages = [{ role: 'user', content: 'weather in Lisbon?' }];
  const r1 = await client.chat.completions.create({ model: 'claude-sonnet-4', reasoning_effort: 'low', tools: ctools, messages });
  const m = r1.choices[0].message;
  assert.equal(m.reasoning_items.length, 1);
  assert.ok(m.reasoning_items[0].encrypted_content.startsWith(MARK));
  const r2 = await client.chat.completions.create({
    model: 'claude-sonnet-4', reasoning_effort: 'low', tools: ctools,
    messages: [...messages, m, { role: 'tool', tool_call_id: m.tool_calls[0].id, content: 'sunny' }],
  });
  assert.equal(r2.choices[0].finish_reason, 'stop');
  const up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages[1].content.map((b) => b.type), ['thinking', 'tool_use']);
});

const BEDROCK = 'anthropic.claude-3-7-sonnet-20250219-v1:0';

for (const stream of [false, true]) {
  test(`Bedrock (${stream ? 'stream' : 'whole'}): Claude's signed reasoning goes round a tool loop as a reasoning item, stored too`, async () => {
    const base = { model: BEDROCK, reasoning: { effort: 'low' }, tools };
    const r1 = await create({ ...base, store: false, include: ['reasoning.encrypted_content'], input: 'weather in Bern?' }, stream);
    assert.deepEqual(r1.output.map((i) => i.type), ['reasoning', 'function_call']);
    const [rs, fc] = r1.output;
    assert.ok(rs.encrypted_content.startsWith('manifold:bedrock:'));
    assert.deepEqual(rs.summary, [{ type: 'summary_text', text: 'Thinking.' }]);
    const out = { type: 'function_call_output', call_id: fc.call_id, output: 'foggy' };
    const r2 = await create({ ...base, store: false, input: [{ role: 'user', content: 'weather in Bern?' }, rs, fc, out] }, stream);
    assert.equal(r2.status, 'completed');
    const up = JSON.parse((await mock.last()).body);
    assert.deepEqual(Object.keys(up.messages[1].content[0]), ['reasoningContent']);
    assert.equal(up.messages[1].content[0].reasoningContent.reasoningText.text, 'Thinking.');
    assert.match(up.messages[1].content[0].reasoningContent.reasoningText.signature, /^bsig_mock_/);
    assert.ok(up.messages[1].content[1].toolUse);
    // the same loop over previous_response_id, encrypted content not shown
    const s1 = await create({ ...base, input: 'weather in Bern?' }, stream);
    assert.equal(s1.output[0].encrypted_content, undefined);
    const s2 = await create({ ...base, previous_response_id: s1.id, input: [{ ...out, call_id: s1.output[1].call_id }] }, stream);
    assert.equal(s2.status, 'completed');
    // and Anthropic's thinking is not sent to Bedrock, nor Bedrock's to Anthropic
    await assert.rejects(create({ ...base, store: false, input: [{ role: 'user', content: 'weather in Bern?' },
      { ...rs, encrypted_content: 'manifold:anthropic:{"type":"thinking","thinking":"Thinking.","signature":"x"}' }, fc, out] }, stream),
    (e) => e.status === 400 && /must start with a thinking block/.test(e.message));
  });
}

test('anthropic SDK to Claude on Bedrock: thinking enabled there, its signed reasoning goes round the tool loop as a thinking block', async () => {
  const thinking = { type: 'enabled', budget_tokens: 1024 };
  const atools = [{ name: 'get_weather', input_schema: tools[0].parameters }];
  const r1 = await anthropic.messages.create({
    model: BEDROCK, max_tokens: 2000, thinking, tools: atools, messages: [{ role: 'user', content: 'weather in Graz?' }],
  });
  assert.deepEqual(JSON.parse((await mock.last()).body).additionalModelRequestFields, { thinking });
  assert.deepEqual(r1.content.map((b) => b.type), ['thinking', 'tool_use']);
  assert.equal(r1.content[0].thinking, 'Thinking.');
  assert.ok(r1.content[0].signature.startsWith('manifold:bedrock:'), 'Bedrock\'s reasoning, marked, as the signature');
  const r2 = await anthropic.messages.create({
    model: BEDROCK, max_tokens: 2000, thinking, tools: atools,
    messages: [
      { role: 'user', content: 'weather in Graz?' },
      { role: 'assistant', content: r1.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: r1.content[1].id, content: 'windy' }] },
    ],
  });
  assert.equal(r2.stop_reason, 'end_turn');
  const up = JSON.parse((await mock.last()).body);
  assert.match(up.messages[1].content[0].reasoningContent.reasoningText.signature, /^bsig_mock_/);

  const s = anthropic.messages.stream({
    model: BEDROCK, max_tokens: 2000, thinking, tools: atools, messages: [{ role: 'user', content: 'weather in Graz?' }],
  });
  const m = await s.finalMessage();
  assert.deepEqual(m.content.map((b) => b.type), ['thinking', 'tool_use']);
  assert.equal(m.content[0].signature, r1.content[0].signature);
});
