// The official `openai` SDK's Responses API (`responses.create`, plain,
// streamed, with function tools and their results) against POST
// /v1/responses, served by an OpenAI-wire, an Anthropic and a Gemini
// upstream through the one canonical form; what reaches each upstream is
// checked, and errors arrive in OpenAI's shape.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, path } from '../integration/harness.mjs';

let mock, gw, client;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
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
  client = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const weather = {
  type: 'function', name: 'get_weather', description: 'Weather of a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

for (const model of ['gpt-4o', 'claude-sonnet-4', 'gemini-2.5-flash']) {
  test(`responses.create non-stream, served by ${model}`, async () => {
    const r = await client.responses.create({
      model, instructions: 'be brief', input: 'hello from the responses api', max_output_tokens: 200,
    });
    assert.equal(r.object, 'response');
    assert.equal(r.status, 'completed');
    assert.match(r.id, /^resp_/);
    assert.equal(r.output_text, 'Hello from mock. You said: hello from the responses api');
    assert.equal(r.output[0].type, 'message');
    assert.equal(r.output[0].role, 'assistant');
    assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
    assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
    const up = JSON.parse((await mock.last()).body);
    if (model === 'gpt-4o') {
      assert.deepEqual(up.messages, [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hello from the responses api' },
      ]);
      assert.equal(up.max_tokens, 200);
    } else if (model === 'gemini-2.5-flash') {
      assert.deepEqual(up.systemInstruction, { parts: [{ text: 'be brief' }] });
      assert.deepEqual(up.generationConfig, { maxOutputTokens: 200 });
    } else {
      assert.deepEqual(up.system, [{ type: 'text', text: 'be brief' }]);
      assert.equal(up.max_tokens, 200);
    }
  });

  test(`responses.create stream, served by ${model}`, async () => {
    const stream = await client.responses.create({
      model, stream: true, input: [{ role: 'user', content: [{ type: 'input_text', text: 'stream it please' }] }],
    });
    const types = [];
    let text = '', done;
    const seqs = [];
    for await (const ev of stream) {
      types.push(ev.type);
      seqs.push(ev.sequence_number);
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') done = ev.response;
    }
    assert.equal(text, 'Hello from mock. You said: stream it please');
    assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress',
      'response.output_item.added', 'response.content_part.added']);
    assert.deepEqual(types.slice(-4), ['response.output_text.done', 'response.content_part.done',
      'response.output_item.done', 'response.completed']);
    assert.deepEqual(seqs, seqs.map((_, i) => i));
    assert.equal(done.status, 'completed');
    assert.equal(done.output[0].content[0].text, text);
    assert.ok(done.usage.output_tokens > 0);
  });

  test(`responses.stream helper and function tools, served by ${model}`, async () => {
    const r = await client.responses.create({
      model, tools: [weather], tool_choice: 'required', input: 'weather in Paris?',
    });
    const call = r.output.find((o) => o.type === 'function_call');
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.arguments), { city: 'mock' });
    assert.ok(call.call_id);

    const stream = client.responses.stream({ model, tools: [weather], input: 'weather in Rome?' });
    let args = '';
    stream.on('response.function_call_arguments.delta', (e) => { args += e.delta; });
    const final = await stream.finalResponse();
    const sc = final.output.find((o) => o.type === 'function_call');
    assert.equal(sc.name, 'get_weather');
    assert.deepEqual(JSON.parse(args), { city: 'mock' });
    assert.equal(sc.arguments, args);

    const r2 = await client.responses.create({
      model, tools: [weather],
      input: [
        { role: 'user', content: 'weather in Paris?' },
        { type: 'function_call', call_id: call.call_id, name: 'get_weather', arguments: '{"city":"Paris"}' },
        { type: 'function_call_output', call_id: call.call_id, output: 'sunny, 21C' },
      ],
    });
    assert.equal(r2.status, 'completed');
    if (model === 'gpt-4o') {
      const up = JSON.parse((await mock.last()).body);
      assert.deepEqual(up.messages.slice(1), [
        { role: 'assistant', content: null, tool_calls: [{ id: call.call_id, type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
        { role: 'tool', tool_call_id: call.call_id, content: 'sunny, 21C' },
      ]);
      assert.deepEqual(up.tools, [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city', parameters: weather.parameters } }]);
    } else if (model === 'claude-sonnet-4') {
      assert.equal(r2.output_text, 'Tool said: sunny, 21C');
    } else {
      assert.equal(r2.output_text, 'Tool get_weather said: {"content":"sunny, 21C"}');
    }
  });
}

test('previous_response_id continues a stored conversation; retrieve and delete', async () => {
  const r1 = await client.responses.create({ model: 'gpt-4o', instructions: 'be brief', input: 'my name is Ada' });
  assert.match(r1.id, /^resp_[0-9a-f]{48}$/);
  const r2 = await client.responses.create({ model: 'gpt-4o', previous_response_id: r1.id, input: 'what is my name?' });
  assert.notEqual(r2.id, r1.id);
  let up = JSON.parse((await mock.last()).body);
  // instructions are not carried over (as on OpenAI's service); the turns are
  assert.deepEqual(up.messages, [
    { role: 'user', content: 'my name is Ada' },
    { role: 'assistant', content: 'Hello from mock. You said: my name is Ada' },
    { role: 'user', content: 'what is my name?' },
  ]);
  // a chain of three, the second streamed, with a function call in between
  const stream = await client.responses.create({
    model: 'gpt-4o', stream: true, previous_response_id: r2.id, tools: [weather], input: 'weather in Oslo?',
  });
  let r3;
  for await (const ev of stream) if (ev.type === 'response.completed') r3 = ev.response;
  const call = r3.output.find((o) => o.type === 'function_call');
  assert.ok(call);
  await client.responses.create({
    model: 'gpt-4o', previous_response_id: r3.id,
    input: [{ type: 'function_call_output', call_id: call.call_id, output: 'snow' }],
  });
  up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'tool']);
  assert.equal(up.messages[5].tool_calls[0].id, call.call_id);
  assert.deepEqual(up.messages[6], { role: 'tool', tool_call_id: call.call_id, content: 'snow' });

  const got = await client.responses.retrieve(r1.id);
  assert.equal(got.id, r1.id);
  assert.equal(got.output[0].content[0].text, r1.output_text);
  const streamed = await client.responses.retrieve(r3.id);
  assert.equal(streamed.status, 'completed');
  assert.equal(streamed.output.find((o) => o.type === 'function_call').call_id, call.call_id);
  await client.responses.del(r1.id);
  await assert.rejects(client.responses.retrieve(r1.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(client.responses.del(r1.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(
    client.responses.create({ model: 'gpt-4o', previous_response_id: r1.id, input: 'x' }),
    (e) => e instanceof OpenAI.BadRequestError && /previous_response_id: no response with this id/.test(e.message));
  // store: false keeps nothing
  const r4 = await client.responses.create({ model: 'gpt-4o', input: 'forget me', store: false });
  await assert.rejects(client.responses.retrieve(r4.id), (e) => e instanceof OpenAI.NotFoundError);
});

// With response_store.db the conversation survives a restart of the
// gateway: the SDK continues a streamed function call after it.
test('previous_response_id across a gateway restart (response_store.db)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-compat-respdb-'));
  const conf = config(mock.url) + 'response_store: { db: responses.db }\n';
  let g = await startGateway(conf, { dir });
  let c = new OpenAI({ apiKey: 'client-key', baseURL: g.url + '/v1', maxRetries: 0 });
  let r1;
  try {
    const stream = await c.responses.create({ model: 'gpt-4o', stream: true, tools: [weather], input: 'weather in Oslo?' });
    for await (const ev of stream) if (ev.type === 'response.completed') r1 = ev.response;
  } finally {
    await g.stop();
  }
  const call = r1.output.find((o) => o.type === 'function_call');
  assert.ok(call);
  g = await startGateway(conf, { dir });
  c = new OpenAI({ apiKey: 'client-key', baseURL: g.url + '/v1', maxRetries: 0 });
  try {
    const got = await c.responses.retrieve(r1.id);
    assert.equal(got.output.find((o) => o.type === 'function_call').call_id, call.call_id);
    await c.responses.create({
      model: 'gpt-4o', previous_response_id: r1.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: 'snow' }],
    });
    const up = JSON.parse((await mock.last()).body);
    assert.deepEqual(up.messages.map((m) => m.role), ['user', 'assistant', 'tool']);
    assert.equal(up.messages[1].tool_calls[0].id, call.call_id);
    assert.deepEqual(up.messages[2], { role: 'tool', tool_call_id: call.call_id, content: 'snow' });
  } finally {
    await g.stop();
  }
});

// the texts of an upstream body's turns, whatever the wire: [role, text]
function turns(up) {
  const text = (c) => (typeof c === 'string' ? c : (c || []).map((b) => b.text || '').join(''));
  if (up.contents) return up.contents.map((t) => [t.role, text(t.parts)]);
  return up.messages.map((m) => [m.role, text(m.content)]);
}

for (const model of ['claude-sonnet-4', 'gemini-2.5-flash']) {
  test(`previous_response_id continues a conversation served by ${model}, a function call in between`, async () => {
    const r1 = await client.responses.create({ model, instructions: 'be brief', input: 'my name is Ada' });
    const r2 = await client.responses.create({ model, previous_response_id: r1.id, input: 'what is my name?' });
    let up = JSON.parse((await mock.last()).body);
    const assistant = model.startsWith('gemini') ? 'model' : 'assistant';
    assert.deepEqual(turns(up), [
      ['user', 'my name is Ada'],
      [assistant, 'Hello from mock. You said: my name is Ada'],
      ['user', 'what is my name?'],
    ]);
    // streamed, with a tool: the call and its result go back in the wire's own form
    const stream = await client.responses.create({
      model, stream: true, previous_response_id: r2.id, tools: [weather], input: 'weather in Oslo?',
    });
    let r3;
    for await (const ev of stream) if (ev.type === 'response.completed') r3 = ev.response;
    const call = r3.output.find((o) => o.type === 'function_call');
    assert.ok(call, JSON.stringify(r3.output));
    const r4 = await client.responses.create({
      model, previous_response_id: r3.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: 'snow' }],
    });
    assert.equal(r4.status, 'completed');
    up = JSON.parse((await mock.last()).body);
    if (model.startsWith('gemini')) {
      const parts = up.contents.flatMap((t) => t.parts);
      assert.ok(parts.some((p) => p.functionCall && p.functionCall.name === 'get_weather'));
      const res = parts.find((p) => p.functionResponse);
      assert.equal(res.functionResponse.name, 'get_weather');
      assert.match(JSON.stringify(res.functionResponse.response), /snow/);
      assert.equal(up.contents.length, 7);
    } else {
      const blocks = up.messages.flatMap((m) => (typeof m.content === 'string' ? [] : m.content));
      const use = blocks.find((b) => b.type === 'tool_use');
      assert.equal(use.id, call.call_id);
      const result = blocks.find((b) => b.type === 'tool_result');
      assert.equal(result.tool_use_id, call.call_id);
      assert.match(JSON.stringify(result.content), /snow/);
      assert.equal(up.system, undefined, 'instructions are not carried over');
    }
  });
}

test('inputItems.list: the stored conversation\'s items, paged by limit, order and after', async () => {
  const r1 = await client.responses.create({
    model: 'gpt-4o', input: [
      { role: 'user', content: 'first' },
      { role: 'assistant', content: [{ type: 'output_text', text: 'second' }] },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'third' }] },
    ],
  });
  const r2 = await client.responses.create({ model: 'gpt-4o', previous_response_id: r1.id, input: 'fourth' });
  // newest first by default; r2's conversation: r1's input, r1's answer, its own
  const page = await client.responses.inputItems.list(r2.id);
  assert.deepEqual(page.data.map((i) => i.content[0].text),
    ['fourth', r1.output_text, 'third', 'second', 'first']);
  assert.ok(page.data.every((i) => i.type === 'message' && typeof i.id === 'string' && i.status === 'completed'));
  assert.equal(page.data[0].content[0].type, 'input_text');
  assert.equal(page.data[3].content[0].type, 'output_text');
  assert.equal(page.data[1].id, r1.output[0].id, 'an answer item keeps its id');
  assert.equal(page.has_more, false);
  const raw = await (await fetch(`${gw.url}/v1/responses/${r2.id}/input_items?order=asc&limit=3`)).json();
  assert.equal(raw.object, 'list');
  assert.equal(raw.has_more, true);
  assert.equal(raw.first_id, page.data[4].id);
  assert.equal(raw.last_id, page.data[2].id);
  // items keep their ids from one response to the next
  const first = await client.responses.inputItems.list(r1.id, { order: 'asc' });
  assert.deepEqual(first.data.map((i) => i.id), page.data.slice(2).reverse().map((i) => i.id));
  // pages of two, ascending, followed by the SDK through after=
  const seen = [];
  for await (const item of client.responses.inputItems.list(r2.id, { order: 'asc', limit: 2 })) seen.push(item.content[0].text);
  assert.deepEqual(seen, ['first', 'second', 'third', r1.output_text, 'fourth']);
  const p1 = await client.responses.inputItems.list(r2.id, { order: 'asc', limit: 2 });
  assert.equal(p1.has_more, true);
  assert.equal(p1.data.length, 2);
  await assert.rejects(client.responses.inputItems.list(r2.id, { limit: 101 }),
    (e) => e instanceof OpenAI.BadRequestError && /limit/.test(e.message));
  await assert.rejects(client.responses.inputItems.list('resp_' + '0'.repeat(48)),
    (e) => e instanceof OpenAI.NotFoundError);
});

test('item_reference items are resolved from the store', async () => {
  const r1 = await client.responses.create({ model: 'gpt-4o', input: 'my name is Ada' });
  const items = (await client.responses.inputItems.list(r1.id)).data;
  // a later request, without previous_response_id, naming the items it wants
  await client.responses.create({
    model: 'gpt-4o', input: [
      { type: 'item_reference', id: items[0].id },
      { type: 'item_reference', id: r1.output[0].id },
      { role: 'user', content: 'what is my name?' },
    ],
  });
  let up = JSON.parse((await mock.last()).body);
  assert.deepEqual(up.messages, [
    { role: 'user', content: 'my name is Ada' },
    { role: 'assistant', content: r1.output_text },
    { role: 'user', content: 'what is my name?' },
  ]);
  // a function call item referenced, its output sent
  const r3 = await client.responses.create({ model: 'gpt-4o', tools: [weather], input: 'weather in Oslo?' });
  const call = r3.output.find((o) => o.type === 'function_call');
  assert.match(call.id, /^fc_[0-9a-f]{48}_\d+$/);
  const r4 = await client.responses.create({
    model: 'gpt-4o', tools: [weather], input: [
      { role: 'user', content: 'weather in Oslo?' },
      { type: 'item_reference', id: call.id },
      { type: 'function_call_output', call_id: call.call_id, output: 'snow' },
    ],
  });
  up = JSON.parse((await mock.last()).body);
  assert.equal(up.messages[1].tool_calls[0].id, call.call_id);
  assert.deepEqual(up.messages[2], { role: 'tool', tool_call_id: call.call_id, content: 'snow' });
  // stored resolved: the reference became the item itself
  const listed = (await client.responses.inputItems.list(r4.id, { order: 'asc' })).data;
  assert.equal(listed[1].type, 'function_call');
  assert.equal(listed[1].id, call.id);
  const before = await mock.count();
  await assert.rejects(
    client.responses.create({ model: 'gpt-4o', input: [{ type: 'item_reference', id: 'msg_' + 'a'.repeat(48) + '_0' }] }),
    (e) => e instanceof OpenAI.BadRequestError && /item_reference/.test(e.message));
  await assert.rejects(
    client.responses.create({ model: 'gpt-4o', input: [{ type: 'item_reference', id: 'msg_unknown' }] }),
    (e) => e instanceof OpenAI.BadRequestError && /item_reference/.test(e.message));
  assert.equal(await mock.count(), before, 'nothing reached the upstream');
});

test('responses errors arrive in OpenAI shape with the right status', async () => {
  await assert.rejects(
    client.responses.create({ model: 'no-such-model', input: 'x' }),
    (e) => e instanceof OpenAI.NotFoundError && typeof e.error.message === 'string');
  await assert.rejects(
    client.responses.create({ model: 'gpt-4o', input: 'x', previous_response_id: 'resp_1' }),
    (e) => e instanceof OpenAI.BadRequestError && /previous_response_id/.test(e.message));
  await assert.rejects(
    client.responses.create({ model: 'gpt-4o', input: 'x', tools: [{ type: 'web_search_preview' }] }),
    (e) => e instanceof OpenAI.BadRequestError && /web_search_preview is a built-in tool/.test(e.message));
  await assert.rejects(
    client.responses.create({ model: 'gpt-4o', input: 'x [[mock:status=429]]' }),
    (e) => e instanceof OpenAI.RateLimitError);
});

test('models.retrieve and models.list through the SDK', async () => {
  const m = await client.models.retrieve('gpt-4o');
  assert.deepEqual(m, { id: 'gpt-4o', object: 'model', created: 0, owned_by: 'openai' });
  const g = await client.models.retrieve('claude-3-7-sonnet-latest'); // served by a glob
  assert.equal(g.owned_by, 'anthropic');
  await assert.rejects(client.models.retrieve('no-such-model'),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  const ids = [];
  for await (const x of client.models.list()) ids.push(x.id);
  assert.ok(ids.includes('gpt-4o'));
  assert.ok(!ids.some((id) => id.includes('*')), 'globs are not model names');
});
