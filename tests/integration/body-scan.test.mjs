// The request body on the default pipeline (no stage reads it): checked
// and indexed in one pass, forwarded byte for byte, parsed only when a
// translator must change it; anything the scan is not sure of is judged
// by the JSON parser exactly as before.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post, sseEvents } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: local
    type: ollama
    base_url: ${mock.url}/v1
    models: ["ollama/*"]
    model_map: { "ollama/*": "*" }`,
  }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const send = (body, id) => post(gw, '/v1/chat/completions', body, { 'x-request-id': id });

test('an unchanged body goes upstream byte for byte', async () => {
  const body = '{ "messages" : [ {"content":"caf\\u00e9 \u00e9 \\ud83d\\ude00", "role":"user"} ],\n'
    + '  "temperature": 0.50, "model":"gpt-4o", "stop": ["x"], "n": null, "logprobs": false }';
  const res = await send(body, 'scan-verbatim');
  assert.equal(res.status, 200);
  assert.match((await res.json()).choices[0].message.content, /You said: café é 😀/);
  assert.equal((await mock.last()).body, body);
  const line = await gw.waitLog((l) => l.request_id === 'scan-verbatim');
  assert.equal(line.model, 'gpt-4o');
  assert.ok(line.prompt_tokens > 0);
});

test('what the scan does not take is read by the parser as before', async () => {
  // an escaped model, duplicate keys (the last wins), an exponent
  let res = await send('{"model":"gpt\\u002d4o","messages":[{"role":"user","content":"a"}]}', 'scan-esc');
  assert.equal(res.status, 200);
  assert.equal((await gw.waitLog((l) => l.request_id === 'scan-esc')).model, 'gpt-4o');
  res = await send('{"model":"nope","model":"gpt-4o","messages":[{"role":"user","content":"b"}]}', 'scan-dup');
  assert.equal(res.status, 200);
  assert.equal((await gw.waitLog((l) => l.request_id === 'scan-dup')).model, 'gpt-4o');
  res = await send('{"model":"gpt-4o","temperature":5e-1,"messages":[{"role":"user","content":"c"}]}', 'scan-exp');
  assert.equal(res.status, 200);
  assert.equal(JSON.parse((await mock.last()).body).temperature, 0.5);
});

test('bodies the parser refuses are refused with its message', async () => {
  const cases = [
    ['{"model":"gpt-4o","messages":[{"role":"user","content":"\xff"}]}', /could not parse the JSON/],
    ['{"model":"gpt-4o","messages":[{"role":"user","content":"\\ud800"}]}', /could not parse the JSON/],
    ['{"model":"gpt-4o","messages":[{"role":"user","content":"a\tb"}]}', /could not parse the JSON/],
    ['{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]} x', /could not parse the JSON/],
    ['{"model":"gpt-4o","n":01,"messages":[{"role":"user","content":"x"}]}', /could not parse the JSON/],
    ['[{"model":"gpt-4o"}]', /must be a JSON object/],
    ['{"model":"gpt-4o","stream":"yes","messages":[{"role":"user","content":"x"}]}', /'stream' must be a boolean/],
    ['{"model":"gpt-4o","messages":[{"content":"x"}]}', /messages\[0\] must be an object with a string 'role'/],
    ['{"model":"gpt-4o","messages":[{"role":"user","content":"x"},{"role":7}]}', /messages\[1\] must be an object/],
    ['{"model":"gpt-4o","messages":[]}', /'messages' is required/],
    ['{"model":"","messages":[{"role":"user","content":"x"}]}', /model parameter/],
  ];
  for (const [body, re] of cases) {
    const res = await fetch(gw.url + '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from(body, 'latin1'),
    });
    assert.equal(res.status, 400, body);
    assert.match((await res.json()).error.message, re, body);
  }
});

test('stream and stream_options.include_usage are read from the scan', async () => {
  let res = await send({ model: 'gpt-4o', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'u' }] }, 'scan-usage');
  let chunks = (await sseEvents(res)).slice(0, -1).map((e) => JSON.parse(e));
  assert.deepEqual(chunks.at(-1).choices, []);
  assert.ok(chunks.at(-1).usage.total_tokens > 0);
  res = await send({ model: 'gpt-4o', stream: true, stream_options: { include_usage: false },
    messages: [{ role: 'user', content: 'v' }] }, 'scan-nousage');
  chunks = (await sseEvents(res)).slice(0, -1).map((e) => JSON.parse(e));
  assert.ok(chunks.every((c) => c.choices.length > 0), 'usage-only chunk leaked');
  assert.equal(JSON.parse((await mock.last()).body).stream_options.include_usage, true);
  const line = await gw.waitLog((l) => l.request_id === 'scan-nousage');
  assert.equal(line.stream, true);
  assert.equal(line.usage_estimated, false);
});

test('a body a translator changes is serialized again', async () => {
  const res = await send('{"model":"ollama/llama3","max_completion_tokens":9,"store":true,'
    + '"messages":[{"role":"user","content":"m"}]}', 'scan-changed');
  assert.equal(res.status, 200);
  const up = JSON.parse((await mock.last()).body);
  assert.equal(up.model, 'llama3');
  assert.equal(up.max_tokens, 9);
  assert.equal(up.max_completion_tokens, undefined);
  assert.equal(up.store, undefined);
});
