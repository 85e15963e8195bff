// Delivery of answers and accounting of connections: an answer counts as
// in flight until its last byte has left (a SIGTERM drain waits for slow
// readers; a cut at the deadline is logged as a cut); writes are timed by
// progress (limits.send_timeout), not by a fixed budget; a client that
// leaves mid-upload is logged; an access log nobody reads never stops the
// workers. Backpressure is real: answers are megabytes, far over what the
// kernel buffers on loopback, and readers pause.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { startMock, startGateway, config, writeConfig, BIN, sleep } from './harness.mjs';

let mock;
before(async () => { mock = await startMock(); });
after(async () => { await mock.stop(); });

const exited = (proc) => new Promise((r) => (proc.exitCode !== null ? r(proc.exitCode) : proc.on('exit', r)));

// A raw HTTP/1.1 client that stops reading after the first bytes (the
// head) until told to read, and then reads as it is told.
function client(port, { id, content, stream = false, close = false }) {
  const body = JSON.stringify({ model: 'gpt-4o', stream, messages: [{ role: 'user', content }] });
  const s = net.connect(port, '127.0.0.1');
  const c = { s, chunks: [], bytes: 0, delay: 0 };
  let headResolve, closeResolve;
  c.gotHead = new Promise((r) => { headResolve = r; });
  c.closed = new Promise((r) => { closeResolve = r; });
  s.on('data', (d) => {
    c.chunks.push(d);
    c.bytes += d.length;
    if (c.waiter && c.bytes >= c.waiter.n) { c.waiter.r(); c.waiter = null; }
    if (headResolve) { s.pause(); headResolve(); headResolve = null; return; }
    if (c.delay > 0) { s.pause(); setTimeout(() => s.resume(), c.delay); }
  });
  s.on('close', () => { c.isClosed = true; if (c.waiter) c.waiter.r(); closeResolve(); });
  s.on('error', () => {});
  s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
    `x-request-id: ${id}\r\n${close ? 'Connection: close\r\n' : ''}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  c.text = () => Buffer.concat(c.chunks).toString('latin1');
  c.read = (delay = 0) => { c.delay = delay; s.resume(); };
  c.pause = () => { c.delay = 0; s.pause(); };
  // resolves once n bytes in all have come (reading meanwhile), or at close
  c.readUntil = (n) => new Promise((r) => {
    if (c.bytes >= n || c.isClosed) r(); else { c.waiter = { n, r }; s.resume(); }
  });
  // the body of a Content-Length answer, once it is all there
  c.body = () => { const t = c.text(); return t.slice(t.indexOf('\r\n\r\n') + 4); };
  c.contentLength = () => Number(/content-length: (\d+)/i.exec(c.text())[1]);
  return c;
}

const streamComplete = (text) => text.includes('data: [DONE]') && text.endsWith('0\r\n\r\n');
// 13 MB: loopback sockets buffer 4 MB and more between the two ends
const BIG_STREAM = '[[mock:chunks=200 chunk_bytes=65536]]';

test('SIGTERM: streams to slow readers all end with [DONE] and the chunked end, each logged complete', async () => {
  const gw = await startGateway(config(mock.url, { limits: '  drain_timeout: 60s' }));
  const n = 4;
  const cs = [];
  for (let i = 0; i < n; i++) {
    cs.push(client(gw.port, { id: `slow-${i}`, content: `s ${BIG_STREAM}`, stream: true }));
  }
  await Promise.all(cs.map((c) => c.gotHead));
  gw.proc.kill('SIGTERM');
  for (const c of cs) c.read(10); // slowly: a pause after every read
  await Promise.all(cs.map((c) => c.closed));
  assert.equal(await exited(gw.proc), 0);
  await gw.stop();
  const log = gw.accessLog();
  for (let i = 0; i < n; i++) {
    assert.ok(streamComplete(cs[i].text()), `stream ${i} got its end`);
    const line = log.find((l) => l.request_id === `slow-${i}`);
    assert.ok(line, `stream ${i} is logged`);
    assert.equal(line.status, 200);
    assert.equal(line.bytes_undelivered, 0);
    assert.equal(line.error, null);
  }
});

test('SIGTERM: streams cut at the drain deadline are logged as cut, as each client saw it', async () => {
  const gw = await startGateway(config(mock.url, { limits: '  drain_timeout: 300ms' }));
  const n = 4;
  const cs = [];
  for (let i = 0; i < n; i++) {
    cs.push(client(gw.port, { id: `stuck-${i}`, content: `s ${BIG_STREAM}`, stream: true }));
  }
  await Promise.all(cs.map((c) => c.gotHead));
  gw.proc.kill('SIGTERM');
  assert.equal(await exited(gw.proc), 0);
  for (const c of cs) c.read(); // what the kernel still held, then the close
  await Promise.all(cs.map((c) => c.closed));
  await gw.stop();
  const log = gw.accessLog();
  let cut = 0;
  for (let i = 0; i < n; i++) {
    const line = log.find((l) => l.request_id === `stuck-${i}`);
    assert.ok(line, `stream ${i} is logged`);
    const complete = streamComplete(cs[i].text());
    assert.equal(line.bytes_undelivered === 0 && line.error === null, complete,
      `stream ${i}: the log agrees with what the client got: ${JSON.stringify(line)}`);
    if (!complete) {
      cut++; // bytes_undelivered: what was queued (0 if the stream was
      // cut while its next bytes were still upstream)
      assert.match(line.error, /drain_timeout/);
    }
  }
  assert.ok(cut > 0, "streams over the kernel buffers were cut: " + JSON.stringify(log) + cs.map((c) => c.bytes));
});

test('a slow reader of a large answer gets every byte, with Connection: close and with keep-alive', async () => {
  // client_timeout (idle keep-alive) and the old fixed 5 s close budget are
  // both shorter than the reading (three 2 s pauses); every pause is well
  // under send_timeout, with room for a loaded machine's late timers
  const gw = await startGateway(config(mock.url, { limits: '  client_timeout: 1s\n  send_timeout: 8s' }));
  const size = 16000000;
  const cs = [
    client(gw.port, { id: 'slow-close', content: `[[mock:big=${size}]]`, close: true }),
    client(gw.port, { id: 'slow-keepalive', content: `[[mock:big=${size}]]` }),
  ];
  await Promise.all(cs.map((c) => c.gotHead));
  await Promise.all(cs.map(async (c) => {
    for (let mb = 1; mb <= 2; mb++) {
      await sleep(2000); // a reader that is slow, not stopped
      await c.readUntil(c.bytes + 1000000);
      c.pause();
    }
    await sleep(2000);
    c.read();
    await c.readUntil(c.text().indexOf('\r\n\r\n') + 4 + c.contentLength());
  }));
  for (const c of cs) {
    assert.equal(c.body().length, c.contentLength());
    assert.equal(JSON.parse(c.body()).choices[0].message.content.length, size);
  }
  await cs[0].closed; // Connection: close closes once all has left
  cs[1].s.destroy();
  for (const id of ['slow-close', 'slow-keepalive']) {
    const line = await gw.waitLog((l) => l.request_id === id);
    assert.equal(line.status, 200);
    assert.equal(line.bytes_undelivered, 0);
    assert.equal(line.error, null);
  }
  await gw.stop();
});

test('a reader that stops is cut after send_timeout, and the log says what it did not get', async () => {
  const gw = await startGateway(config(mock.url, { limits: '  send_timeout: 500ms' }));
  const c = client(gw.port, { id: 'stopped', content: '[[mock:big=16000000]]' });
  await c.gotHead;
  const line = await gw.waitLog((l) => l.request_id === 'stopped', 10000);
  assert.equal(line.status, 200);
  assert.ok(line.bytes_undelivered > 0, JSON.stringify(line));
  assert.match(line.error, /send_timeout/);
  c.read();
  await c.closed;
  assert.ok(c.body().length < c.contentLength(), 'the client did not get it all either');
  await gw.stop();
});

test('a client that leaves mid-upload, or whose body is refused, gets an access-log line', async () => {
  const gw = await startGateway(config(mock.url));
  const s = net.connect(gw.port, '127.0.0.1');
  await new Promise((r) => s.on('connect', r));
  s.write('POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: upload-gone\r\n' +
    'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n' + 'x'.repeat(500));
  s.end();
  const line = await gw.waitLog((l) => l.request_id === 'upload-gone');
  assert.equal(line.status, 499);
  assert.equal(line.method, 'POST');
  assert.equal(line.path, '/v1/chat/completions');
  assert.ok(line.bytes_in >= 500, JSON.stringify(line));
  assert.match(line.error, /closed the connection/);

  const big = net.connect(gw.port, '127.0.0.1');
  big.on('data', () => {});
  big.on('error', () => {});
  big.write('POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: upload-big\r\n' +
    'Content-Length: 999999999\r\n\r\n');
  const refused = await gw.waitLog((l) => l.request_id === 'upload-big');
  assert.equal(refused.status, 413);
  assert.equal(refused.path, '/v1/chat/completions');
  big.destroy();
  await gw.stop();
});

test('an access log on a stdout nobody reads drops lines, says so, and never stops the workers', async (t) => {
  const text = config(mock.url).replace('{ path: access.log }', '{ path: stdout, buffer: 65536, close_ms: 300 }');
  const file = writeConfig(text);
  const proc = spawn(BIN, ['-c', file, '--listen', '127.0.0.1:0', '--workers', '2'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0' },
  });
  proc.stdout.pause(); // nobody reads it: the pipe fills
  t.after(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  while (!/listening on [^:]+:\d+/.test(stderr)) {
    assert.equal(proc.exitCode, null, stderr);
    await sleep(20);
  }
  const port = Number(/listening on [^:]+:(\d+)/.exec(stderr)[1]);
  const url = `http://127.0.0.1:${port}/healthz`;
  // ~450 bytes a line: far over the pipe, node's buffer and the log's buffer
  for (let round = 0; !/accesslog: \d+ lines dropped/.test(stderr); round++) {
    assert.ok(round < 200, 'drops are reported');
    const rs = await Promise.all(Array.from({ length: 20 }, () =>
      fetch(url, { signal: AbortSignal.timeout(5000) })));
    for (const r of rs) { assert.equal(r.status, 200); await r.text(); }
  }
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  assert.equal(r.status, 200, 'still serving');
  proc.kill('SIGTERM');
  assert.equal(await exited(proc), 0, stderr);
  assert.doesNotMatch(stderr, /AddressSanitizer|LeakSanitizer|runtime error:/);
});
