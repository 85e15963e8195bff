// Reasoning items through the Responses API, as Codex CLI uses them:
// store: false, include ["reasoning.encrypted_content"], and on the next
// turn the reasoning items it got sent back in `input`. Served over the
// Responses wire (an OpenAI model only served there), the items reach the
// upstream as the client sent them and in place (before the call they led
// to), include is passed, and the upstream's encrypted_content comes back
// in the answer and the stream. Other upstreams never see them. The
// upstream is the mock, which refuses reasoning items as OpenAI does with
// store: false (no encrypted_content, content it did not make, nothing
// after the item).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw, client;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: openai-responses
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-resp-0123456789"]
    models: ["codex-*"]
    options: { wire: responses }`,
  }));
  client = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const tools = [{
  type: 'function', name: 'get_weather', description: 'Weather of a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];

async function turnOne(stream) {
  const req = {
    model: 'codex-mini', store: false, include: ['reasoning.encrypted_content'],
    reasoning: { effort: 'medium' }, tools,
    input: [{ role: 'user', content: [{ type: 'input_text', text: 'weather in Paris?' }] }],
  };
  if (!stream) return client.responses.create(req);
  const events = [];
  for await (const ev of await client.responses.create({ ...req, stream: true })) events.push(ev);
  return { events, output: events.find((e) => e.type === 'response.completed').response.output };
}

test('responses.create with include: the reasoning item carries the upstream\'s encrypted_content, include reaches the upstream', async () => {
  const r = await turnOne(false);
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.include, ['reasoning.encrypted_content']);
  assert.equal(sent.store, false);
  assert.deepEqual(r.output.map((i) => i.type), ['reasoning', 'function_call']);
  const rs = r.output[0];
  assert.match(rs.encrypted_content, /^enc_mock_\d+$/);
  assert.deepEqual(rs.summary, [{ type: 'summary_text', text: 'Thinking about it.' }]);
});

test('a second turn sends the reasoning item back: it reaches the upstream unchanged but for its id (store: false), before its function call', async () => {
  const r = await turnOne(false);
  const [rs, fc] = r.output;
  const second = await client.responses.create({
    model: 'codex-mini', store: false, include: ['reasoning.encrypted_content'], tools,
    input: [
      { role: 'user', content: [{ type: 'input_text', text: 'weather in Paris?' }] },
      rs, fc,
      { type: 'function_call_output', call_id: fc.call_id, output: '{"temp":21}' },
    ],
  });
  assert.equal(second.status, 'completed');
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.input.map((i) => i.type), ['message', 'reasoning', 'function_call', 'function_call_output']);
  const { id: _id, ...rsNoId } = rs;
  assert.deepEqual(sent.input[1], rsNoId);
  assert.equal(sent.input[1].id, undefined);
  assert.equal(sent.input[2].call_id, fc.call_id);
});

test('a reasoning item before an assistant message keeps its place; one with nothing after it is left out', async () => {
  const r = await client.responses.create({
    model: 'codex-mini', store: false, include: ['reasoning.encrypted_content'],
    input: [
      { role: 'user', content: 'hi' },
      { type: 'reasoning', id: 'rs_a', summary: [], encrypted_content: 'enc_mock_a' },
      { role: 'assistant', content: [{ type: 'output_text', text: 'hello' }] },
      { role: 'user', content: 'again' },
      { type: 'reasoning', id: 'rs_b', summary: [], encrypted_content: 'enc_mock_b' },
    ],
  });
  assert.equal(r.status, 'completed');
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.input, [
    { type: 'message', role: 'user', content: 'hi' },
    { type: 'reasoning', summary: [], encrypted_content: 'enc_mock_a' },
    { type: 'message', role: 'assistant', content: 'hello' },
    { type: 'message', role: 'user', content: 'again' },
  ]);
});

test('the stream: output_item.done of the reasoning item carries encrypted_content; sent back, it reaches the upstream', async () => {
  const { events, output } = await turnOne(true);
  const done = events.filter((e) => e.type === 'response.output_item.done');
  assert.equal(done[0].item.type, 'reasoning');
  assert.match(done[0].item.encrypted_content, /^enc_mock_\d+$/);
  const added = events.find((e) => e.type === 'response.output_item.added');
  assert.equal(added.item.id, done[0].item.id);
  assert.equal(done[0].item.summary[0].text, 'Thinking about it.');
  assert.deepEqual(output[0], done[0].item);
  assert.deepEqual(output.map((i) => i.type), ['reasoning', 'function_call']);
  const fc = output[1];
  const events2 = [];
  for await (const ev of await client.responses.create({
    model: 'codex-mini', store: false, include: ['reasoning.encrypted_content'], tools, stream: true,
    input: [
      { role: 'user', content: 'weather in Paris?' }, output[0], fc,
      { type: 'function_call_output', call_id: fc.call_id, output: 'sunny' },
    ],
  })) events2.push(ev);
  assert.equal(events2.at(-1).type, 'response.completed');
  const sent = JSON.parse((await mock.last()).body);
  const { id: _oid, ...outNoId } = output[0];
  assert.deepEqual(sent.input[1], outNoId);
});

test('without include the answer has no encrypted_content', async () => {
  const r = await client.responses.create({
    model: 'codex-mini', reasoning: { effort: 'low' }, input: 'think',
  });
  assert.equal(r.output[0].type, 'reasoning');
  assert.equal(r.output[0].encrypted_content, undefined);
  assert.deepEqual(JSON.parse((await mock.last()).body).include, ['reasoning.encrypted_content'],
    'stored (store is not false): the gateway keeps it for previous_response_id');
});

test('to a chat upstream, reasoning items and include are not sent', async () => {
  const r = await client.responses.create({
    model: 'gpt-4o', store: false, include: ['reasoning.encrypted_content'],
    input: [
      { role: 'user', content: 'hi' },
      { type: 'reasoning', id: 'rs_a', summary: [{ type: 'summary_text', text: 's' }], encrypted_content: 'enc_mock_a' },
      { role: 'assistant', content: 'hello' },
      { role: 'user', content: 'again' },
    ],
  });
  assert.equal(r.status, 'completed');
  const sent = JSON.parse((await mock.last()).body);
  assert.equal(sent.include, undefined);
  assert.deepEqual(sent.messages, [
    { role: 'user', content: 'hi' },
    { role: 'assistant', content: 'hello' },
    { role: 'user', content: 'again' },
  ]);
});

test('a reasoning item without a summary is a 400 naming it', async () => {
  await assert.rejects(client.responses.create({
    model: 'codex-mini', input: [{ type: 'reasoning', id: 'rs_x' }, { role: 'user', content: 'hi' }],
  }), (e) => e.status === 400 && /reasoning item needs a summary/.test(e.message));
});

for (const stream of [false, true]) {
  test(`stored responses (${stream ? 'stream' : 'whole'}): previous_response_id replays the reasoning item with its encrypted_content, which the client was not shown`, async () => {
    const req = {
      model: 'codex-mini', reasoning: { effort: 'low' }, tools,
      input: [{ role: 'user', content: 'weather in Lima?' }],
    };
    let r1;
    if (stream) {
      const events = [];
      for await (const ev of await client.responses.create({ ...req, stream: true })) events.push(ev);
      for (const e of events) assert.ok(!JSON.stringify(e).includes('enc_mock_'), `${e.type} shows no encrypted_content`);
      r1 = events.at(-1).response;
    } else {
      r1 = await client.responses.create(req);
    }
    const sent1 = JSON.parse((await mock.last()).body);
    assert.deepEqual(sent1.include, ['reasoning.encrypted_content'], 'the gateway asks for it, to store it');
    assert.equal(r1.output[0].type, 'reasoning');
    assert.equal(r1.output[0].encrypted_content, undefined, 'not asked with include: not shown');
    const got = await client.responses.retrieve(r1.id);
    assert.equal(got.output[0].encrypted_content, undefined);
    const withEnc = await (await fetch(`${gw.url}/v1/responses/${r1.id}?include[]=reasoning.encrypted_content`,
      { headers: { authorization: 'Bearer client-key' } })).json();
    assert.match(withEnc.output[0].encrypted_content, /^enc_mock_\d+$/);
    const fc = r1.output[1];
    const r2 = await client.responses.create({
      model: 'codex-mini', tools, previous_response_id: r1.id,
      input: [{ type: 'function_call_output', call_id: fc.call_id, output: 'warm' }],
    });
    assert.equal(r2.status, 'completed');
    const sent2 = JSON.parse((await mock.last()).body);
    assert.deepEqual(sent2.input.map((i) => i.type), ['message', 'reasoning', 'function_call', 'function_call_output']);
    assert.equal(sent2.input[1].encrypted_content, withEnc.output[0].encrypted_content);
    assert.equal(sent2.include, undefined, 'no reasoning asked: none included');
  });
}

test('store: false without include: the gateway does not ask for encrypted content', async () => {
  await client.responses.create({ model: 'codex-mini', store: false, reasoning: { effort: 'low' }, input: 'x' });
  assert.equal(JSON.parse((await mock.last()).body).include, undefined);
});

test('reasoning between two calls of one answer: in place to the Responses wire, one assistant message to a chat upstream', async () => {
  const call = (id) => ({ type: 'function_call', call_id: id, name: 'get_weather', arguments: '{"city":"x"}' });
  const out = (id) => ({ type: 'function_call_output', call_id: id, output: 'ok' });
  const ra = { type: 'reasoning', summary: [], encrypted_content: 'enc_mock_a' };
  const rb = { type: 'reasoning', summary: [], encrypted_content: 'enc_mock_b' };
  const input = [{ role: 'user', content: 'two cities' }, ra, call('c1'), rb, call('c2'), out('c1'), out('c2')];
  await client.responses.create({ model: 'codex-mini', store: false, tools, input });
  const sent = JSON.parse((await mock.last()).body);
  assert.deepEqual(sent.input.map((i) => i.type === 'reasoning' ? i.encrypted_content : i.call_id ?? i.role),
    ['user', 'enc_mock_a', 'c1', 'enc_mock_b', 'c2', 'c1', 'c2']);
  await client.responses.create({ model: 'gpt-4o', store: false, tools, input });
  const chat = JSON.parse((await mock.last()).body);
  assert.deepEqual(chat.messages.map((m) => [m.role, (m.tool_calls ?? []).map((c) => c.id).join(',') || m.tool_call_id || '']),
    [['user', ''], ['assistant', 'c1,c2'], ['tool', 'c1'], ['tool', 'c2']]);
  assert.ok(chat.messages.every((m) => m.reasoning_items === undefined));
});
