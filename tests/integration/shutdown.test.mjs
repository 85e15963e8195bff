// Graceful shutdown: on SIGTERM the gateway stops accepting, lets streams
// in flight finish within limits.drain_timeout, then exits 0; a stream
// longer than the drain timeout is cut at the deadline and still logged.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startMock, startGateway, config, http, sleep } from './harness.mjs';

let mock;
before(async () => { mock = await startMock(); });
after(async () => { await mock.stop(); });

function stream(gw, content, id) {
  return new Promise((resolve) => {
    let first;
    const firstByte = new Promise((r) => { first = r; });
    const req = http.request(gw.url + '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': id },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; first(); });
      res.on('end', () => resolve({ firstByte, text }));
      res.on('error', () => resolve({ firstByte, text }));
    });
    req.on('error', () => resolve({ firstByte, text: '' }));
    req.end(JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content }] }));
    stream.firstByte = firstByte;
  });
}

function connectRefused(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(false); });
    s.on('error', () => resolve(true));
  });
}

test('SIGTERM lets a stream in flight finish, refuses new connections, exits 0', async () => {
  const gw = await startGateway(config(mock.url, { limits: '  drain_timeout: 10s' }));
  const done = stream(gw, 'finish [[mock:chunks=20 chunk_delay=50]]', 'req-drain-1');
  await stream.firstByte;
  const t0 = Date.now();
  gw.proc.kill('SIGTERM');
  await sleep(100);
  assert.equal(await connectRefused(gw.port), true, 'no new connections while draining');
  const { text } = await done;
  assert.match(text, /data: \[DONE\]/, 'the stream in flight finished');
  const code = await new Promise((r) => gw.proc.exitCode !== null ? r(gw.proc.exitCode) : gw.proc.on('exit', r));
  assert.equal(code, 0);
  assert.ok(Date.now() - t0 < 5000, 'exits once the last stream ended');
  await gw.stop();
  assert.ok(gw.accessLog().some((l) => l.request_id === 'req-drain-1' && l.status === 200));
});

test('a stream longer than drain_timeout is cut at the deadline, logged, exit 0', async () => {
  const gw = await startGateway(config(mock.url, { limits: '  drain_timeout: 300ms' }));
  const done = stream(gw, 'long [[mock:chunks=100 chunk_delay=100]]', 'req-drain-2');
  await stream.firstByte;
  const t0 = Date.now();
  gw.proc.kill('SIGTERM');
  const { text } = await done;
  assert.doesNotMatch(text, /data: \[DONE\]/);
  const code = await new Promise((r) => gw.proc.exitCode !== null ? r(gw.proc.exitCode) : gw.proc.on('exit', r));
  assert.equal(code, 0);
  assert.ok(Date.now() - t0 < 3000, `drain took ${Date.now() - t0} ms`);
  await gw.stop();
  const line = gw.accessLog().find((l) => l.request_id === 'req-drain-2');
  assert.ok(line, 'the cut stream is logged');
  assert.ok(line.completion_tokens >= 1);
});
