// Gemini-native streams of an OpenAI-wire upstream whose chunks carry
// reasoning and text that need escaping: each mid-stream record is
// written straight to text (no tree), and must read as the tree would
// have been written: a thought part before the text part, the strings
// escaped as JSON (quote, backslash, control characters, non-ASCII kept),
// in both framings (alt=sse and the JSON array).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, config, post, http } from './harness.mjs';

let upstream, gw;
const THINK = 'think "twice" \\ then\n\tact \u0001';
const TEXT = 'héllo ✓ 😀 </tag>';

function chunk(delta, extra = {}) {
  return `data: ${JSON.stringify({
    id: 'chatcmpl-esc', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o',
    choices: [{ index: 0, delta, finish_reason: null }], ...extra,
  })}\n\n`;
}

before(async () => {
  upstream = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(chunk({ role: 'assistant', content: '' }));
      res.write(chunk({ reasoning_content: THINK }));
      res.write(chunk({ reasoning_content: 'and', content: TEXT }));
      res.write(chunk({ content: 'end' }));
      res.write(`data: ${JSON.stringify({
        id: 'chatcmpl-esc', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o',
        choices: [{ index: 0, delta: {}, finish_reason: 'stop' }],
      })}\n\n`);
      res.write(`data: ${JSON.stringify({
        id: 'chatcmpl-esc', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [],
        usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
      })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
  });
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
  gw = await startGateway(config(`http://127.0.0.1:${upstream.address().port}`));
});

after(async () => {
  await gw?.stop();
  await new Promise((r) => upstream?.close(r));
});

const body = { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] };

function record(parts) {
  return JSON.stringify({
    candidates: [{ content: { role: 'model', parts }, index: 0 }],
    modelVersion: 'gpt-4o', responseId: 'chatcmpl-esc',
  });
}

const MID = [
  record([{ text: THINK, thought: true }]),
  record([{ text: 'and', thought: true }, { text: TEXT }]),
  record([{ text: 'end' }]),
];

test('alt=sse: the records carry the thought and text parts, escaped', async () => {
  const res = await post(gw, '/v1beta/models/gpt-4o:streamGenerateContent?alt=sse', body);
  assert.equal(res.status, 200);
  const text = await res.text();
  const records = text.split('\r\n\r\n').filter((b) => b).map((b) => b.replace(/^data: /, ''));
  assert.equal(records.length, 4, text);
  assert.deepEqual(records.slice(0, 3), MID, 'byte for byte');
  const last = JSON.parse(records[3]);
  assert.equal(last.candidates[0].finishReason, 'STOP');
  assert.equal(last.usageMetadata.totalTokenCount, 7);
});

test('the JSON array: the same records, element by element', async () => {
  const res = await post(gw, '/v1beta/models/gpt-4o:streamGenerateContent', body);
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.ok(text.startsWith(`[${MID[0]},\r\n${MID[1]},\r\n${MID[2]},\r\n`), text);
  const all = JSON.parse(text);
  assert.equal(all.length, 4);
  assert.deepEqual(all[1].candidates[0].content.parts, [{ text: 'and', thought: true }, { text: TEXT }]);
});
