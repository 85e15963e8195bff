// Golden tests of the inbound event streams: the exact sequence of events
// (every event name and every data object) a client gets for a text stream
// and a tool-call stream served by the OpenAI-wire mock, through
//  - OpenAI Responses (POST /v1/responses, the response.* events),
//  - Anthropic Messages (POST /v1/messages, stream: true),
//  - Gemini-native :streamGenerateContent without alt=sse (a JSON array)
//    for a function call (the SSE framing and the text streams are golden
//    in genai-sdk.test.mjs),
//  - and chat completions over the Responses upstream wire
//    (options.wire: responses), the chunks the client gets;
//  - reasoning: a Responses stream over the Responses wire with its
//    reasoning item (encrypted_content asked with include), and an
//    Anthropic stream from an Anthropic upstream with a signed thinking
//    block.
// Volatile fields are normalised: ids the gateway or the mock counts
// (checked against their pattern first) and created timestamps.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post } from '../integration/harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: openai-responses
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-resp-0123456789"]
    models: ["o1-pro"]
    options: { wire: responses }
  - name: anthropic
    type: anthropic
    base_url: ${mock.url}
    keys: ["sk-ant-test-0123456789"]
    models: ["claude-*"]`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const PARAMS = { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] };
const TEXT = 'Hello from mock. You said: two words';
const WORDS = ['Hello', ' from', ' mock.', ' You', ' said:', ' two', ' words'];

// A named-event SSE stream: [{ event, data }], each block exactly one
// `event:` line and one `data:` line; the event name is the data's type.
async function namedEvents(res) {
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  const text = await res.text();
  assert.ok(text.endsWith('\n\n'));
  assert.ok(!text.includes('[DONE]'));
  return text.split('\n\n').filter((b) => b !== '').map((b) => {
    const lines = b.split('\n');
    assert.equal(lines.length, 2, b);
    assert.match(lines[0], /^event: [a-z_.]+$/);
    assert.match(lines[1], /^data: \{/);
    const ev = { event: lines[0].slice(7), data: JSON.parse(lines[1].slice(6)) };
    assert.equal(ev.data.type, ev.event);
    return ev;
  });
}

// ---- OpenAI Responses inbound ---------------------------------------------

// The Response object of the created/in_progress/completed events, the id
// and created_at normalised by the caller; `echo`: the request's settings
// it says back (tools, instructions, temperature, ...), as OpenAI's does.
const response = (status, output, usage, echo = {}) => ({
  id: 'RID', object: 'response', created_at: 0, status, model: 'gpt-4o', output,
  error: null, incomplete_details: null, instructions: null, metadata: {},
  parallel_tool_calls: true, temperature: null, top_p: null, tool_choice: 'auto',
  tools: [], text: { format: { type: 'text' } }, usage, ...echo,
});

// Checks the response id, the item ids derived from it and created_at (one
// integer for the whole stream), then replaces them.
function normaliseResponses(evs, itemPrefix) {
  const rid = evs[0].data.response.id;
  assert.match(rid, /^resp_[0-9a-f]{48}$/);
  const item = `${itemPrefix}_${rid.slice(5)}_0`; // msg_/fc_, the id's hex, the output index
  const created = evs[0].data.response.created_at;
  assert.ok(Number.isInteger(created) && created > 1700000000);
  return JSON.parse(JSON.stringify(evs), (k, v) => {
    if (k === 'created_at') { assert.equal(v, created); return 0; }
    if (v === rid) return 'RID';
    if (v === item) return 'ITEM';
    return v;
  });
}

const usageR = (input, output) => ({
  input_tokens: input, input_tokens_details: { cached_tokens: 0 },
  output_tokens: output, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: input + output,
});
const seq = (list) => list.map(([event, body], i) => ({ event, data: { ...body, type: event, sequence_number: i } }));

test('Responses inbound: a text stream, every event', async () => {
  const evs = normaliseResponses(await namedEvents(await post(gw, '/v1/responses', {
    model: 'gpt-4o', stream: true, input: 'two words',
  })), 'msg');
  const at = { item_id: 'ITEM', output_index: 0, content_index: 0 };
  const part = (text) => ({ type: 'output_text', text, annotations: [] });
  const msg = (status, content) => ({ type: 'message', id: 'ITEM', status, role: 'assistant', content });
  assert.deepEqual(evs, seq([
    ['response.created', { response: response('in_progress', [], null) }],
    ['response.in_progress', { response: response('in_progress', [], null) }],
    ['response.output_item.added', { output_index: 0, item: msg('in_progress', []) }],
    ['response.content_part.added', { ...at, part: part('') }],
    ...WORDS.map((w) => ['response.output_text.delta', { ...at, delta: w }]),
    ['response.output_text.done', { ...at, text: TEXT }],
    ['response.content_part.done', { ...at, part: part(TEXT) }],
    ['response.output_item.done', { output_index: 0, item: msg('completed', [part(TEXT)]) }],
    ['response.completed', { response: response('completed', [msg('completed', [part(TEXT)])], usageR(9, 7)) }],
  ]));
});

test('Responses inbound: a function-call stream, every event', async () => {
  const tools = [{ type: 'function', name: 'f', parameters: PARAMS }];
  const echo = { tools, tool_choice: 'required', temperature: 0.2, metadata: { team: 'a' } };
  const evs = normaliseResponses(await namedEvents(await post(gw, '/v1/responses', {
    model: 'gpt-4o', stream: true, input: 'call', ...echo,
  })), 'fc');
  const call = (status, args) => ({ type: 'function_call', id: 'ITEM', call_id: 'call_mock_1', name: 'f', arguments: args, status });
  const at = { item_id: 'ITEM', output_index: 0 };
  assert.deepEqual(evs, seq([
    ['response.created', { response: response('in_progress', [], null, echo) }],
    ['response.in_progress', { response: response('in_progress', [], null, echo) }],
    ['response.output_item.added', { output_index: 0, item: call('in_progress', '') }],
    ['response.function_call_arguments.delta', { ...at, delta: '{"q":"' }],
    ['response.function_call_arguments.delta', { ...at, delta: 'mock"}' }],
    ['response.function_call_arguments.done', { ...at, arguments: '{"q":"mock"}' }],
    ['response.output_item.done', { output_index: 0, item: call('completed', '{"q":"mock"}') }],
    ['response.completed', { response: response('completed', [call('completed', '{"q":"mock"}')], usageR(8, 2), echo) }],
  ]));
});

test('Responses inbound: a custom tool call stream (apply_patch), every event', async () => {
  const tools = [{ type: 'custom', name: 'apply_patch', description: 'Edit files.', format: { type: 'grammar', syntax: 'lark', definition: 'start: "x"' } }];
  const evs = normaliseResponses(await namedEvents(await post(gw, '/v1/responses', {
    model: 'gpt-4o', stream: true, input: 'call', tools,
  })), 'ctc');
  // the upstream calls the function the tool became with {"input":"mock"}
  // in two pieces: the input is said whole once the call is
  const call = (status, input) => ({ type: 'custom_tool_call', id: 'ITEM', call_id: 'call_mock_1', name: 'apply_patch', input, status });
  const at = { item_id: 'ITEM', output_index: 0 };
  assert.deepEqual(evs, seq([
    ['response.created', { response: response('in_progress', [], null, { tools }) }],
    ['response.in_progress', { response: response('in_progress', [], null, { tools }) }],
    ['response.output_item.added', { output_index: 0, item: call('in_progress', '') }],
    ['response.custom_tool_call_input.delta', { ...at, delta: 'mock' }],
    ['response.custom_tool_call_input.done', { ...at, input: 'mock' }],
    ['response.output_item.done', { output_index: 0, item: call('completed', 'mock') }],
    ['response.completed', { response: response('completed', [call('completed', 'mock')], usageR(8, 2), { tools }) }],
  ]));
});

// ---- Anthropic Messages inbound -------------------------------------------

// The message id is the upstream's completion id behind msg_; one per stream.
function normaliseAnthropic(evs) {
  const id = evs[0].data.message.id;
  assert.match(id, /^msg_chatcmpl-mock\d+$/);
  evs[0].data.message.id = 'MID';
  return evs.map(({ event, data }) => ({ event, data }));
}
const usageA = (input, output) => ({ output_tokens: output, input_tokens: input, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 });
// message_start says the prompt's tokens as Anthropic's does; an OpenAI
// upstream gives its count only at the end, so this is the gateway's
// estimate (about 4 bytes of prompt text a token: 'two words' is 3, 'call'
// 1); message_delta has the upstream's count.
const messageStart = (input) => ({
  event: 'message_start',
  data: { type: 'message_start', message: { id: 'MID', type: 'message', role: 'assistant', model: 'gpt-4o', content: [], stop_reason: null, stop_sequence: null, usage: usageA(input, 0) } },
});
const ev = (event, body) => ({ event, data: { type: event, ...body } });

test('Anthropic inbound: a text stream, every event', async () => {
  const evs = normaliseAnthropic(await namedEvents(await post(gw, '/v1/messages', {
    model: 'gpt-4o', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'two words' }],
  })));
  assert.deepEqual(evs, [
    messageStart(3),
    ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
    ...WORDS.map((w) => ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: w } })),
    ev('content_block_stop', { index: 0 }),
    ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: usageA(9, 7) }),
    ev('message_stop', {}),
  ]);
});

test('Anthropic inbound: a tool_use stream, every event', async () => {
  const evs = normaliseAnthropic(await namedEvents(await post(gw, '/v1/messages', {
    model: 'gpt-4o', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'call' }],
    tools: [{ name: 'f', input_schema: PARAMS }],
  })));
  assert.deepEqual(evs, [
    messageStart(1),
    ev('content_block_start', { index: 0, content_block: { type: 'tool_use', id: 'call_mock_1', name: 'f', input: {} } }),
    ev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: '{"q":"' } }),
    ev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: 'mock"}' } }),
    ev('content_block_stop', { index: 0 }),
    ev('message_delta', { delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: usageA(8, 2) }),
    ev('message_stop', {}),
  ]);
});

// ---- Gemini-native inbound, JSON array framing -----------------------------

test('Gemini inbound: a function call streamed without alt=sse is a one-element JSON array', async () => {
  const res = await fetch(`${gw.url}/v1beta/models/gpt-4o:streamGenerateContent`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      contents: [{ parts: [{ text: 'call it' }] }],
      tools: [{ functionDeclarations: [{ name: 'f', parameters: { type: 'OBJECT', properties: { q: { type: 'STRING' } }, required: ['q'] } }] }],
    }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/json; charset=UTF-8');
  const text = await res.text();
  assert.ok(text.startsWith('[{') && text.endsWith('}]'));
  const got = JSON.parse(text);
  assert.match(got[0].responseId, /^chatcmpl-mock\d+$/);
  got[0].responseId = 'ID';
  assert.deepEqual(got, [{
    candidates: [{ content: { role: 'model', parts: [{ functionCall: { name: 'f', args: { q: 'mock' }, id: 'call_mock_1' } }] }, index: 0, finishReason: 'STOP' }],
    modelVersion: 'gpt-4o',
    usageMetadata: { promptTokenCount: 9, candidatesTokenCount: 2, totalTokenCount: 11 },
    responseId: 'ID',
  }]);
});

// ---- Chat completions over the Responses upstream wire --------------------

// The data of every chunk, [DONE] last; the id (the upstream Response's id
// behind chatcmpl-) and created are one per stream and normalised.
async function chatChunks(res) {
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  const blocks = (await res.text()).split('\n\n').filter((b) => b !== '');
  assert.ok(blocks.every((b) => b.startsWith('data: ') && !b.includes('\n')));
  assert.equal(blocks.at(-1), 'data: [DONE]');
  const got = blocks.slice(0, -1).map((b) => JSON.parse(b.slice(6)));
  const { id, created } = got[0];
  assert.match(id, /^chatcmpl-resp_mock_\d+$/);
  assert.ok(Number.isInteger(created) && created > 1700000000);
  for (const c of got) {
    assert.equal(c.id, id);
    assert.equal(c.created, created);
    c.id = 'CID';
    delete c.created;
  }
  return got;
}
const chunk = (delta, finish = null) => ({
  id: 'CID', object: 'chat.completion.chunk', model: 'o1-pro',
  choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
});

test('chat over the Responses wire: a text stream, every chunk', async () => {
  const got = await chatChunks(await post(gw, '/v1/chat/completions', {
    model: 'o1-pro', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'two words' }],
  }));
  // the mock's Responses upstream sends its text a word and its space at a time
  assert.deepEqual(got, [
    chunk({ role: 'assistant', content: '' }),
    ...['Hello ', 'from ', 'mock. ', 'You ', 'said: ', 'two ', 'words'].map((w) => chunk({ content: w })),
    chunk({}, 'stop'),
    { id: 'CID', object: 'chat.completion.chunk', model: 'o1-pro', choices: [], usage: { prompt_tokens: 14, completion_tokens: 10, total_tokens: 24, prompt_tokens_details: { cached_tokens: 0 } } },
  ]);
  // the request went out as POST /responses; the counts are the mock's own
  // (its serialised input / 4, its text / 4 + 1), passed on as they came
  assert.equal((await mock.last()).path, '/v1/responses');
});

test('chat over the Responses wire: a tool-call stream, every chunk', async () => {
  const got = await chatChunks(await post(gw, '/v1/chat/completions', {
    model: 'o1-pro', stream: true, messages: [{ role: 'user', content: 'call' }],
    tools: [{ type: 'function', function: { name: 'f', parameters: PARAMS } }],
  }));
  // the mock's Responses upstream calls with {"city":"mock"} in two deltas
  assert.deepEqual(got, [
    chunk({ role: 'assistant', content: '' }),
    chunk({ tool_calls: [{ index: 0, id: 'call_mock_1', type: 'function', function: { name: 'f', arguments: '' } }] }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: '"mock"}' } }] }),
    chunk({}, 'tool_calls'),
  ]);
});

// ---- Reasoning --------------------------------------------------------------

// Item ids made of the response id (kind_<hex>_<n>) to KIND_n.
function normaliseItems(evs) {
  const rid = evs[0].data.response.id;
  const hex = rid.slice(5);
  return JSON.parse(JSON.stringify(normaliseResponses(evs, 'none')), (k, v) => {
    if (typeof v === 'string' && v.includes(hex)) {
      const m = v.match(/^(msg|fc|rs)_([0-9a-f]{48})_(\d+)$/);
      assert.ok(m && m[2] === hex, v);
      return `${m[1].toUpperCase()}_${m[3]}`;
    }
    return v;
  });
}

test('Responses inbound over the Responses wire: a reasoning item with its encrypted_content, every event', async () => {
  const echo = { model: 'o1-pro', reasoning: { effort: 'low' }, store: false };
  const evs = normaliseItems(await namedEvents(await post(gw, '/v1/responses', {
    model: 'o1-pro', stream: true, input: 'two words', reasoning: { effort: 'low' }, store: false,
    include: ['reasoning.encrypted_content'],
  })));
  const enc = evs.find((e) => e.event === 'response.output_item.done').data.item.encrypted_content;
  assert.match(enc, /^enc_mock_\d+$/, 'the upstream\'s, as it came');
  const THINK = 'Thinking about it.';
  const sum = { type: 'summary_text', text: THINK };
  const rs = (done) => ({ type: 'reasoning', id: 'RS_0', summary: done ? [sum] : [], ...(done ? { encrypted_content: enc } : {}) });
  const rat = { item_id: 'RS_0', output_index: 0, summary_index: 0 };
  const at = { item_id: 'MSG_1', output_index: 1, content_index: 0 };
  const part = (text) => ({ type: 'output_text', text, annotations: [] });
  const msg = (status, content) => ({ type: 'message', id: 'MSG_1', status, role: 'assistant', content });
  const words = ['Hello ', 'from ', 'mock. ', 'You ', 'said: ', 'two ', 'words'];
  const done = [rs(true), msg('completed', [part(TEXT)])];
  const usage = { ...usageR(14, 17), output_tokens_details: { reasoning_tokens: 7 } };
  assert.deepEqual(evs, seq([
    ['response.created', { response: response('in_progress', [], null, echo) }],
    ['response.in_progress', { response: response('in_progress', [], null, echo) }],
    ['response.output_item.added', { output_index: 0, item: rs(false) }],
    ['response.reasoning_summary_part.added', { ...rat, part: { type: 'summary_text', text: '' } }],
    ['response.reasoning_summary_text.delta', { ...rat, delta: THINK }],
    ['response.reasoning_summary_text.done', { ...rat, text: THINK }],
    ['response.reasoning_summary_part.done', { ...rat, part: sum }],
    ['response.output_item.done', { output_index: 0, item: rs(true) }],
    ['response.output_item.added', { output_index: 1, item: msg('in_progress', []) }],
    ['response.content_part.added', { ...at, part: part('') }],
    ...words.map((w) => ['response.output_text.delta', { ...at, delta: w }]),
    ['response.output_text.done', { ...at, text: TEXT }],
    ['response.content_part.done', { ...at, part: part(TEXT) }],
    ['response.output_item.done', { output_index: 1, item: msg('completed', [part(TEXT)]) }],
    ['response.completed', { response: response('completed', done, usage, echo) }],
  ]));
});

test('Anthropic inbound from an Anthropic upstream: a signed thinking block, every event', async () => {
  const evs = (await namedEvents(await post(gw, '/v1/messages', {
    model: 'claude-sonnet-4', max_tokens: 2000, stream: true, thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: [{ role: 'user', content: 'two words' }],
  }))).map(({ event, data }) => ({ event, data }));
  assert.equal(evs[0].data.message.id, 'msg_mock_1');
  const sig = evs.find((e) => e.data.delta?.type === 'signature_delta').data.delta.signature;
  assert.match(sig, /^sig_mock_[0-9a-f]{8}$/, 'the upstream\'s, as it came');
  // the counts are the mock's own (message_start's and message_delta's),
  // passed on as they came
  assert.deepEqual(evs, [
    { event: 'message_start', data: { type: 'message_start', message: { id: 'msg_mock_1', type: 'message', role: 'assistant', model: 'claude-sonnet-4', content: [], stop_reason: null, stop_sequence: null, usage: { output_tokens: 1, input_tokens: 16, cache_read_input_tokens: 3, cache_creation_input_tokens: 0 } } } },
    ev('content_block_start', { index: 0, content_block: { type: 'thinking', thinking: '' } }),
    ev('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'Thinking ' } }),
    ev('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'about it.' } }),
    ev('content_block_delta', { index: 0, delta: { type: 'signature_delta', signature: sig } }),
    ev('content_block_stop', { index: 0 }),
    ev('content_block_start', { index: 1, content_block: { type: 'text', text: '' } }),
    ...['Hello', ' from', ' mock.', ' You', ' said:', ' two', ' words'].map((w) => ev('content_block_delta', { index: 1, delta: { type: 'text_delta', text: w } })),
    ev('content_block_stop', { index: 1 }),
    ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 10, input_tokens: 16, cache_read_input_tokens: 3, cache_creation_input_tokens: 0 } }),
    ev('message_stop', {}),
  ]);
});
