// The `openai` package against the azure type through the mock: model to
// deployment, api-version, the api-key header, streams, and Azure's
// content filter refusal mapped to 400 content_filter, which a route can
// send on to another provider.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMock, startGateway, config } from '../integration/harness.mjs';

let mock, gw, client;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    extraProviders: `
  - name: azure
    type: azure
    base_url: ${mock.url}
    keys: ["azure-key-0123456789"]
    models: ["azure-*"]
    api_version: "2025-01-01-preview"
    deployments: { azure-gpt-4o: prod-gpt4o }`,
  }) + `
routes:
  - model: filtered-route
    retry_on: [content_filter]
    targets: [{ provider: azure, model: azure-gpt-4o }]
    fallback: [{ provider: openai, model: gpt-4o }]
`);
  client = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('deployment, api-version and api-key reach Azure; streams work', async () => {
  const r = await client.chat.completions.create({
    model: 'azure-gpt-4o', messages: [{ role: 'user', content: 'hi azure' }], store: true,
  });
  assert.match(r.choices[0].message.content, /You said: hi azure/);
  let last = await mock.last();
  assert.equal(last.path, '/openai/deployments/prod-gpt4o/chat/completions?api-version=2025-01-01-preview');
  assert.equal(last.headers['api-key'], 'azure-key-0123456789');
  assert.equal(last.headers.authorization, undefined);
  assert.equal(JSON.parse(last.body).store, true, 'Azure takes OpenAI\'s fields');
  await client.chat.completions.create({ model: 'azure-other', messages: [{ role: 'user', content: 'x' }] });
  last = await mock.last();
  assert.equal(last.path, '/openai/deployments/azure-other/chat/completions?api-version=2025-01-01-preview');
  const stream = await client.chat.completions.create({
    model: 'azure-gpt-4o', stream: true, messages: [{ role: 'user', content: 'stream azure' }],
  });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.delta?.content || '';
  assert.match(text, /You said: stream azure/);
});

test('a content filter refusal is 400 content_filter, and a route can fall back', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'azure-gpt-4o', messages: [{ role: 'user', content: 'bad [[mock:filter]]' }] }),
    (e) => e.status === 400 && e.code === 'content_filter');
  const res = await fetch(gw.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'filtered-route', messages: [{ role: 'user', content: 'bad [[mock:filter]]' }] }),
  });
  // the fallback gets the same message; the mock filters it too, but the
  // attempt order shows the route moved on after Azure's refusal
  assert.equal(res.headers.get('x-manifold-attempts'), '2');
  assert.equal(res.headers.get('x-manifold-provider'), 'openai');
});
