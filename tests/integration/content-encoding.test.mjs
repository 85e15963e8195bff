// Request bodies with a Content-Encoding: gzip and deflate (zlib-wrapped
// and raw) are decoded before anything reads them, with limits.max_body
// counted on the decoded bytes (a zip bomb is a 413), a body that does not
// decode is a 400, and another coding a 415 naming it, in the client's
// protocol's shape. The upstream gets the plain body and no
// Content-Encoding.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { startMock, startGateway, config } from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, { limits: '  max_body: 64KiB' }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const body = (text) => JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: text }] });
const send = (path, bytes, encoding, extra = {}) => fetch(gw.url + path, {
  method: 'POST',
  headers: { 'content-type': 'application/json', 'content-encoding': encoding, ...extra },
  body: bytes,
});

for (const [name, enc, encode] of [
  ['gzip', 'gzip', zlib.gzipSync],
  ['x-gzip', 'x-gzip', zlib.gzipSync],
  ['deflate (zlib)', 'deflate', zlib.deflateSync],
  ['deflate (raw)', 'deflate', zlib.deflateRawSync],
  ['gzip then identity', 'gzip, identity', zlib.gzipSync],
  ['gzip twice', 'gzip, gzip', (b) => zlib.gzipSync(zlib.gzipSync(b))],
]) {
  test(`a ${name} body is decoded`, async () => {
    const res = await send('/v1/chat/completions', encode(Buffer.from(body(`encoded ${name}`))), enc);
    assert.equal(res.status, 200);
    const j = await res.json();
    assert.equal(j.choices[0].message.content, `Hello from mock. You said: encoded ${name}`);
    const last = await mock.last();
    assert.equal(JSON.parse(last.body).messages[0].content, `encoded ${name}`);
    assert.equal(last.headers['content-encoding'], undefined);
  });
}

test('a body that decodes past limits.max_body is a 413 (a zip bomb)', async () => {
  // 64 MiB of spaces inside the JSON: about 64 KiB compressed
  const big = Buffer.concat([Buffer.from('{"model":"gpt-4o","pad":"'), Buffer.alloc(64 << 20, 0x20), Buffer.from('","messages":[]}')]);
  const bomb = zlib.gzipSync(big, { level: 9 });
  assert.ok(bomb.length < 64 * 1024, `compressed ${bomb.length}`);
  const before = await mock.count();
  const res = await send('/v1/chat/completions', bomb, 'gzip');
  assert.equal(res.status, 413);
  const j = await res.json();
  assert.equal(j.error.code, 'request_too_large');
  assert.match(j.error.message, /decoded \(Content-Encoding: gzip\) is larger than the limit of 65536 bytes \(limits\.max_body\)/);
  assert.equal(await mock.count(), before);
  // just under the limit decoded is served
  const ok = zlib.gzipSync(Buffer.from(body('x'.repeat(60 * 1024))));
  assert.equal((await send('/v1/chat/completions', ok, 'gzip')).status, 200);
});

test('another coding is a 415 naming it; bad data a 400', async () => {
  let res = await send('/v1/chat/completions', zlib.brotliCompressSync(Buffer.from(body('x'))), 'br');
  assert.equal(res.status, 415);
  let j = await res.json();
  assert.equal(j.error.code, 'unsupported_content_encoding');
  assert.match(j.error.message, /Content-Encoding 'br' is not supported/);
  res = await send('/v1/chat/completions', Buffer.from(body('x')), 'gzip, zstd');
  assert.equal(res.status, 415);
  assert.match((await res.json()).error.message, /'zstd'/);
  res = await send('/v1/chat/completions', Buffer.from('not gzip at all'), 'gzip');
  assert.equal(res.status, 400);
  j = await res.json();
  assert.equal(j.error.code, 'invalid_content_encoding');
  assert.match(j.error.message, /could not be decoded as gzip/);
  const cut = zlib.gzipSync(Buffer.from(body('cut short')));
  res = await send('/v1/chat/completions', cut.subarray(0, cut.length - 12), 'gzip');
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /could not be decoded/);
});

test('errors come in the protocol of the path', async () => {
  let res = await send('/v1/messages', Buffer.from('{}'), 'br', { 'anthropic-version': '2023-06-01' });
  assert.equal(res.status, 415);
  let j = await res.json();
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'invalid_request_error');
  res = await send('/v1beta/models/gpt-4o:generateContent', Buffer.from('{}'), 'compress');
  assert.equal(res.status, 415);
  j = await res.json();
  assert.equal(j.error.code, 415);
  assert.equal(j.error.status, 'INVALID_ARGUMENT');
  // and a gzip body on the Anthropic and Gemini paths is served
  res = await send('/v1beta/models/gpt-4o:generateContent',
    zlib.gzipSync(Buffer.from(JSON.stringify({ contents: [{ parts: [{ text: 'zipped gemini' }] }] }))), 'gzip');
  assert.equal(res.status, 200);
  assert.equal((await res.json()).candidates[0].content.parts[0].text, 'Hello from mock. You said: zipped gemini');
});
