// The official `openai` package against every OpenAI-compatible preset
// through the mock: each type reaches the upstream with its quirks applied
// (OpenAI-only fields dropped, max_completion_tokens renamed, stream usage
// asked for only where stream_options is taken) and answers the SDK, chat
// and embeddings.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMock, startGateway, config } from '../integration/harness.mjs';

const TYPES = {
  // type: [keeps OpenAI-only fields, knows max_completion_tokens, takes stream_options]
  openai: [1, 1, 1], 'openai-compatible': [0, 0, 1], deepseek: [0, 0, 1], qwen: [0, 0, 1],
  dashscope: [0, 0, 1], moonshot: [0, 0, 1],
  zhipu: [0, 0, 0], doubao: [0, 0, 1], hunyuan: [0, 0, 1], qianfan: [0, 0, 1],
  minimax: [0, 0, 1], stepfun: [0, 0, 0], yi: [0, 0, 0], baichuan: [0, 0, 0],
  spark: [0, 0, 0], siliconflow: [0, 0, 1], groq: [0, 1, 1], mistral: [0, 0, 0],
  together: [0, 0, 1], fireworks: [0, 0, 1], openrouter: [0, 1, 1], xai: [0, 1, 1],
  perplexity: [0, 0, 0], ollama: [0, 0, 1], vllm: [0, 1, 1],
};

let mock, gw, client;

before(async () => {
  mock = await startMock();
  const providers = Object.keys(TYPES).map((t) => `
  - name: p-${t}
    type: ${t}
    base_url: ${mock.url}/v1
    keys: ["sk-${t}-0123456789"]
    models: ["${t}-model", "${t}-embed"]`).join('');
  gw = await startGateway(config(mock.url, { extraProviders: providers }));
  client = new OpenAI({ apiKey: 'client-key', baseURL: gw.url + '/v1', maxRetries: 0 });
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

for (const [type, [openaiFields, maxCompletion, streamOptions]] of Object.entries(TYPES)) {
  test(`preset ${type}: non-stream and stream through the SDK, quirks applied`, async () => {
    const r = await client.chat.completions.create({
      model: `${type}-model`, messages: [{ role: 'user', content: `hi ${type}` }],
      max_completion_tokens: 50, store: true, metadata: { team: 'x' },
    });
    assert.match(r.choices[0].message.content, new RegExp(`You said: hi ${type}`));
    let up = JSON.parse((await mock.last()).body);
    assert.equal(up.model, `${type}-model`);
    assert.equal('store' in up, Boolean(openaiFields));
    assert.equal('metadata' in up, Boolean(openaiFields));
    if (maxCompletion) {
      assert.equal(up.max_completion_tokens, 50);
    } else {
      assert.equal(up.max_tokens, 50);
      assert.equal('max_completion_tokens' in up, false);
    }
    assert.equal((await mock.last()).headers.authorization, `Bearer sk-${type}-0123456789`);

    const stream = await client.chat.completions.create({
      model: `${type}-model`, stream: true, messages: [{ role: 'user', content: 'stream it' }],
    });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta?.content || '';
    assert.match(text, /You said: stream it/);
    up = JSON.parse((await mock.last()).body);
    assert.equal(Boolean(up.stream_options?.include_usage), Boolean(streamOptions));

    // embeddings pass through every OpenAI-compatible API that has them
    const e = await client.embeddings.create({ model: `${type}-embed`, input: ['a', 'b'] });
    assert.equal(e.data.length, 2);
    assert.ok(e.data[0].embedding.length > 0);
    assert.equal((await mock.last()).path, '/v1/embeddings');
  });
}
