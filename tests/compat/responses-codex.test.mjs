// Codex CLI's tools through the official `openai` SDK's Responses API: a
// custom (freeform) tool such as apply_patch and the local_shell tool
// become function tools upstream (OpenAI chat, Anthropic, Gemini), and the
// model's calls come back as custom_tool_call and local_shell_call items,
// whole and streamed; the items replayed in the next turn (given, or by
// previous_response_id) go upstream as the call and its result.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMock, startGateway, config } from '../integration/harness.mjs';

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
  if (process.env.CODEX_DEBUG) console.error(gw.stderr);
  await gw.stop();
  await mock.stop();
});

const GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF';
const applyPatch = {
  type: 'custom', name: 'apply_patch', description: 'Edit files with a patch.',
  format: { type: 'grammar', syntax: 'lark', definition: GRAMMAR },
};
const PATCH = '*** Begin Patch\n*** Add File: a.txt\n+hi "there"\n*** End Patch';

test('a custom call\'s input is streamed as its arguments arrive, escapes decoded whole', async () => {
  // the upstream's arguments in pieces of 3 characters: escapes (\n, \") fall
  // across pieces, and characters of more than one byte; no delta holds half of one
  const text = 'a\nb "q" \u00e9 \ud83d\ude00 end';
  const stream = await client.responses.create({
    model: 'gpt-4o', stream: true, tools: [applyPatch], input: `${text}[[mock:echo_args split=3]]`,
  });
  const evs = [];
  for await (const ev of stream) evs.push(ev);
  const deltas = evs.filter((e) => e.type === 'response.custom_tool_call_input.delta').map((e) => e.delta);
  assert.ok(deltas.length > 5, JSON.stringify(deltas));
  assert.equal(deltas.join(''), text);
  assert.ok(deltas.every((d) => d.length > 0 && !/[\ud800-\udbff]$/.test(d)), JSON.stringify(deltas));
  assert.equal(evs.find((e) => e.type === 'response.custom_tool_call_input.done').input, text);
});

// the function tools of an upstream body, whatever the wire: [name, description, parameters]
function upstreamTools(up) {
  if (up.messages && up.tools && up.tools[0].function) {
    return up.tools.map((t) => [t.function.name, t.function.description, t.function.parameters]);
  }
  if (up.tools && up.tools[0].input_schema) return up.tools.map((t) => [t.name, t.description, t.input_schema]);
  return up.tools[0].functionDeclarations.map((f) => [f.name, f.description, f.parameters]);
}

const lastBody = async () => JSON.parse((await mock.last()).body);

for (const model of ['gpt-4o', 'claude-sonnet-4', 'gemini-2.5-flash']) {
  test(`custom tool (apply_patch): a custom_tool_call, whole and streamed, served by ${model}`, async () => {
    // [[mock:echo_args]]: the call's one required parameter is the user's text
    // (the OpenAI-wire mock; the others call with "mock")
    const input = `${PATCH}[[mock:echo_args]]`;
    const want = model === 'gpt-4o' ? PATCH : 'mock';
    const r = await client.responses.create({ model, tools: [applyPatch], tool_choice: 'required', input });
    const call = r.output.find((o) => o.type === 'custom_tool_call');
    assert.ok(call, JSON.stringify(r.output));
    assert.equal(call.name, 'apply_patch');
    assert.equal(call.input, want);
    assert.ok(call.call_id);
    assert.match(call.id, /^ctc_/);
    assert.deepEqual(r.tools, [applyPatch], 'the request\'s tools are said back as sent');
    const [[name, desc, params]] = upstreamTools(await lastBody());
    assert.equal(name, 'apply_patch');
    assert.ok(desc.startsWith('Edit files with a patch.'));
    assert.ok(desc.includes('lark grammar') && desc.includes(GRAMMAR), desc);
    assert.deepEqual(params.required, ['input']);
    assert.equal(params.properties.input.type.toLowerCase(), 'string');

    // store: false, as Codex CLI sends it: nothing is kept, the calls still come back as custom items
    const stream = await client.responses.create({ model, stream: true, store: false, tools: [applyPatch], input });
    const evs = [];
    for await (const ev of stream) evs.push(ev);
    const types = evs.map((e) => e.type);
    const added = evs.find((e) => e.type === 'response.output_item.added');
    assert.equal(added.item.type, 'custom_tool_call');
    assert.equal(added.item.input, '');
    const deltas = evs.filter((e) => e.type === 'response.custom_tool_call_input.delta');
    assert.equal(deltas.map((e) => e.delta).join(''), want);
    const done = evs.find((e) => e.type === 'response.custom_tool_call_input.done');
    assert.equal(done.input, want);
    assert.equal(done.item_id, added.item.id);
    assert.ok(types.indexOf('response.custom_tool_call_input.done') < types.indexOf('response.output_item.done'));
    assert.ok(!types.includes('response.function_call_arguments.delta'));
    const fin = evs.at(-1).response;
    assert.equal(evs.at(-1).type, 'response.completed');
    const sc = fin.output.find((o) => o.type === 'custom_tool_call');
    assert.equal(sc.input, want);
    assert.equal(sc.name, 'apply_patch');

    // the next turn replays the call and its output
    const r2 = await client.responses.create({
      model, tools: [applyPatch],
      input: [
        { role: 'user', content: 'add a.txt' },
        { type: 'custom_tool_call', call_id: call.call_id, name: 'apply_patch', input: PATCH },
        { type: 'custom_tool_call_output', call_id: call.call_id, output: 'Done!' },
      ],
    });
    assert.equal(r2.status, 'completed');
    const up = await lastBody();
    if (model === 'gpt-4o') {
      assert.deepEqual(up.messages.slice(1), [
        { role: 'assistant', content: null, tool_calls: [{ id: call.call_id, type: 'function', function: { name: 'apply_patch', arguments: JSON.stringify({ input: PATCH }) } }] },
        { role: 'tool', tool_call_id: call.call_id, content: 'Done!' },
      ]);
    } else if (model === 'claude-sonnet-4') {
      const blocks = up.messages.flatMap((m) => (typeof m.content === 'string' ? [] : m.content));
      const use = blocks.find((b) => b.type === 'tool_use');
      assert.deepEqual(use.input, { input: PATCH });
      assert.equal(r2.output_text, 'Tool said: Done!');
    } else {
      const parts = up.contents.flatMap((t) => t.parts);
      assert.deepEqual(parts.find((p) => p.functionCall).functionCall.args, { input: PATCH });
      assert.match(JSON.stringify(parts.find((p) => p.functionResponse)), /Done!/);
    }
  });

  test(`local_shell: a local_shell_call, whole and streamed, served by ${model}`, async () => {
    const r = await client.responses.create({ model, tools: [{ type: 'local_shell' }], input: 'list files' });
    const call = r.output.find((o) => o.type === 'local_shell_call');
    assert.ok(call, JSON.stringify(r.output));
    assert.match(call.id, /^lsh_/);
    assert.equal(call.status, 'completed');
    // the mock calls with {"command":"mock"}: one string becomes the list of it
    assert.deepEqual(call.action, { type: 'exec', command: ['mock'], env: {}, timeout_ms: null, working_directory: null, user: null });
    const [[name, , params]] = upstreamTools(await lastBody());
    assert.equal(name, 'local_shell');
    assert.deepEqual(params.required, ['command']);

    const stream = await client.responses.create({ model, stream: true, tools: [{ type: 'local_shell' }], input: 'list files' });
    const evs = [];
    for await (const ev of stream) evs.push(ev);
    const items = evs.filter((e) => e.type.startsWith('response.output_item.'));
    assert.deepEqual(items.map((e) => [e.type, e.item.type, e.item.status]), [
      ['response.output_item.added', 'local_shell_call', 'in_progress'],
      ['response.output_item.done', 'local_shell_call', 'completed'],
    ]);
    assert.deepEqual(items[0].item.action.command, [], 'the command is said whole when done');
    assert.deepEqual(items[1].item.action.command, ['mock']);
    assert.equal(items[1].item.id, items[0].item.id);
    assert.ok(!evs.some((e) => e.type.startsWith('response.function_call_arguments')));

    const action = { type: 'exec', command: ['ls', '-la'], working_directory: '/tmp', timeout_ms: 5000, env: {}, user: null };
    const r2 = await client.responses.create({
      model, tools: [{ type: 'local_shell' }],
      input: [
        { role: 'user', content: 'list files' },
        { type: 'local_shell_call', id: 'lsh_1', call_id: call.call_id, status: 'completed', action },
        { type: 'local_shell_call_output', id: call.call_id, output: 'a.txt b.txt' },
      ],
    });
    assert.equal(r2.status, 'completed');
    const up = await lastBody();
    const args = { command: ['ls', '-la'], working_directory: '/tmp', timeout_ms: 5000, env: {}, user: null };
    if (model === 'gpt-4o') {
      assert.deepEqual(up.messages.slice(1).map((m) => m.role), ['assistant', 'tool']);
      assert.equal(up.messages[1].tool_calls[0].function.name, 'local_shell');
      assert.deepEqual(JSON.parse(up.messages[1].tool_calls[0].function.arguments), args);
      assert.deepEqual(up.messages[2], { role: 'tool', tool_call_id: call.call_id, content: 'a.txt b.txt' });
    } else if (model === 'claude-sonnet-4') {
      assert.equal(r2.output_text, 'Tool said: a.txt b.txt');
    } else {
      const parts = up.contents.flatMap((t) => t.parts);
      assert.deepEqual(parts.find((p) => p.functionCall).functionCall.args.command, ['ls', '-la']);
    }
  });
}

test('previous_response_id replays custom_tool_call and local_shell_call items', async () => {
  const tools = [applyPatch, { type: 'local_shell' }];
  const s1 = await client.responses.create({ model: 'gpt-4o', stream: true, tools, input: `${PATCH}[[mock:echo_args]]` });
  let r1;
  for await (const ev of s1) if (ev.type === 'response.completed') r1 = ev.response;
  const call = r1.output.find((o) => o.type === 'custom_tool_call');
  assert.equal(call.input, PATCH);
  const got = await client.responses.retrieve(r1.id);
  assert.deepEqual(got.output, r1.output);
  const r2 = await client.responses.create({
    model: 'gpt-4o', previous_response_id: r1.id, tools,
    input: [{ type: 'custom_tool_call_output', call_id: call.call_id, output: 'Done!' }],
  });
  let up = await lastBody();
  assert.deepEqual(up.messages.map((m) => m.role), ['user', 'assistant', 'tool']);
  assert.deepEqual(up.messages[1].tool_calls, [{ id: call.call_id, type: 'function', function: { name: 'apply_patch', arguments: JSON.stringify({ input: PATCH }) } }]);
  assert.deepEqual(up.messages[2], { role: 'tool', tool_call_id: call.call_id, content: 'Done!' });
  // the stored conversation lists the items as the client sent them
  const items = await client.responses.inputItems.list(r2.id, { order: 'asc' });
  assert.deepEqual(items.data.map((i) => i.type), ['message', 'custom_tool_call', 'custom_tool_call_output']);
  assert.match(items.data[2].id, /^ctco_/);

  // a local shell call, continued by its output given as a function_call_output (as Codex sends it)
  const r3 = await client.responses.create({
    model: 'gpt-4o', tool_choice: { type: 'local_shell' }, tools: [{ type: 'local_shell' }], input: 'list files',
  });
  up = await lastBody();
  assert.deepEqual(up.tool_choice, { type: 'function', function: { name: 'local_shell' } });
  const sh = r3.output.find((o) => o.type === 'local_shell_call');
  await client.responses.create({
    model: 'gpt-4o', previous_response_id: r3.id, tools: [{ type: 'local_shell' }],
    input: [{ type: 'function_call_output', call_id: sh.call_id, output: 'a.txt' }],
  });
  up = await lastBody();
  assert.deepEqual(up.messages.map((m) => m.role), ['user', 'assistant', 'tool']);
  assert.equal(up.messages[1].tool_calls[0].function.name, 'local_shell');
  assert.deepEqual(JSON.parse(up.messages[1].tool_calls[0].function.arguments),
    { command: ['mock'], env: {}, timeout_ms: null, working_directory: null, user: null });
});

test('built-in tools only OpenAI runs are refused by name; bad items are a 400', async () => {
  for (const type of ['web_search', 'file_search', 'computer_use_preview', 'code_interpreter', 'image_generation', 'mcp']) {
    await assert.rejects(
      client.responses.create({ model: 'gpt-4o', input: 'x', tools: [{ type }] }),
      (e) => e instanceof OpenAI.BadRequestError && e.message.includes(`${type} is a built-in tool`), type);
  }
  await assert.rejects(
    client.responses.create({ model: 'gpt-4o', input: [{ type: 'custom_tool_call', call_id: 'c1', name: 'apply_patch' }] }),
    (e) => e instanceof OpenAI.BadRequestError && /custom_tool_call item needs/.test(e.message));
  await assert.rejects(
    client.responses.create({ model: 'gpt-4o', input: [{ type: 'local_shell_call', call_id: 'c1', action: { type: 'exec' } }] }),
    (e) => e instanceof OpenAI.BadRequestError && /local_shell_call item needs/.test(e.message));
});
