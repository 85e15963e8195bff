// Intake hardening: request framing (smuggling), the browser guard (CORS,
// Sec-Fetch-Site, Host), the client_timeout deadline, the body budget and
// the connection cap with accept paused when descriptors run out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import {
  startMock, startGateway, config, sleep, closedPort, writeConfig, path, BIN,
} from './harness.mjs';

let mock, gw;

// One connection: writes `bytes` (a string or a list of [delayMs, string]),
// resolves with what came back and whether the gateway closed it.
function conn(port, bytes, { waitMs = 5000, host = '127.0.0.1' } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    let out = '', done = false;
    const finish = (closed) => { if (!done) { done = true; s.destroy(); resolve({ out, closed }); } };
    s.on('data', (d) => { out += d.toString(); });
    s.on('end', () => finish(true));
    s.on('close', () => finish(true));
    s.on('error', () => finish(true));
    setTimeout(() => finish(false), waitMs);
    if (typeof bytes === 'string') {
      s.write(bytes);
    } else {
      (async () => {
        for (const [ms, piece] of bytes) {
          await sleep(ms);
          if (done) return;
          s.write(piece);
        }
      })();
    }
  });
}

// Opens a connection and sends `bytes`, keeping it open; resolves once sent.
function hold(port, bytes) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes || '', () => resolve(s)));
    s.on('error', () => {});
    s.out = '';
    s.on('data', (d) => { s.out += d.toString(); });
  });
}

const CHAT = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    limits: '  max_body: 64KiB\n  max_body_total: 256KiB\n  client_timeout: 1s',
  }) + `
cors:
  allow_origins: ["https://app.example.com"]
`);
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

test('Content-Length with Transfer-Encoding: one 400, connection closed, nothing smuggled', async () => {
  const before = await mock.count();
  const r = await conn(gw.port,
    'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n' +
    'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n' +
    'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  assert.match(r.out, /^HTTP\/1.1 400 /);
  assert.match(r.out, /both Content-Length and Transfer-Encoding/);
  assert.equal(r.out.match(/HTTP\/1.1 /g).length, 1, r.out);
  assert.ok(r.closed, 'the connection is closed');
  assert.equal(await mock.count(), before);
});

test('transfer codings other than a final chunked are refused', async () => {
  let r = await conn(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    'Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n');
  assert.match(r.out, /^HTTP\/1.1 501 /);
  assert.ok(r.closed);
  r = await conn(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    'Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n');
  assert.match(r.out, /^HTTP\/1.1 400 /);
  assert.ok(r.closed);
});

test('a flood of chunked trailers is cut off', async () => {
  const r = await conn(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    'Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n0\r\n' + 'X-Trailer: aaaaaaaaaaaaaaaaaaaaaaaa\r\n'.repeat(2000));
  assert.match(r.out, /^HTTP\/1.1 431 /);
  assert.match(r.out, /"error":\{"message":"the trailer section/);
  assert.ok(r.closed);
});

test('a cross-site text/plain POST is refused with 403 in the OpenAI error shape', async () => {
  const before = await mock.count();
  const r = await conn(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:' + gw.port +
    '\r\nOrigin: https://evil.example\r\nContent-Type: text/plain\r\n' +
    `Content-Length: ${CHAT.length}\r\n\r\n${CHAT}`);
  assert.match(r.out, /^HTTP\/1.1 403 /);
  const body = JSON.parse(r.out.slice(r.out.indexOf('\r\n\r\n') + 4));
  assert.equal(body.error.code, 'origin_not_allowed');
  assert.equal(body.error.type, 'invalid_request_error');
  assert.match(body.error.message, /cors\.allow_origins/);
  assert.equal(await mock.count(), before);
  const line = await gw.waitLog((l) => l.status === 403 && /origin/.test(l.error || ''));
  assert.equal(line.path, '/v1/chat/completions');
});

test('Sec-Fetch-Site: cross-site without Origin is refused', async () => {
  const r = await conn(gw.port, 'GET /v1/models HTTP/1.1\r\nHost: localhost\r\n' +
    'Sec-Fetch-Site: cross-site\r\n\r\n');
  assert.match(r.out, /^HTTP\/1.1 403 /);
  assert.match(r.out, /"code":"cross_site_request"/);
});

test('a Host name that is not loopback is refused on a loopback listener (DNS rebinding)', async () => {
  const r = await conn(gw.port, 'GET /v1/models HTTP/1.1\r\nHost: evil.example:' + gw.port + '\r\n\r\n');
  assert.match(r.out, /^HTTP\/1.1 403 /);
  assert.match(r.out, /"code":"host_not_allowed"/);
  assert.match(r.out, /allowed_hosts/);
});

test('allowed_hosts: a listed name or suffix is served on a loopback listener, another name is refused', async () => {
  const g = await startGateway(config(mock.url) +
    'allowed_hosts: [gateway.internal, "*.corp.example"]\n', { workers: 1 });
  try {
    for (const host of ['gateway.internal', 'gateway.internal:' + g.port, 'api.corp.example', 'localhost']) {
      const r = await conn(g.port, `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      assert.match(r.out, /^HTTP\/1.1 200 /, host);
    }
    for (const host of ['evil.example', 'corp.example.evil.example', 'gateway.internal.evil.example']) {
      const r = await conn(g.port, `GET /v1/models HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      assert.match(r.out, /^HTTP\/1.1 403 /, host);
      assert.match(r.out, /"code":"host_not_allowed"/, host);
    }
  } finally {
    await g.stop();
  }
});

// Starts the gateway on its own command line (no --listen of the harness's
// unless given), waits until it listens, stops it; resolves with stderr.
async function startAndStop(configText, args = []) {
  const file = writeConfig(configText, mkdtempSync(path.join(tmpdir(), 'mf-listen-')));
  const proc = spawn(BIN, ['-c', file, '--workers', '1', ...args], {
    cwd: path.dirname(file), stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  for (let i = 0; i < 1000 && !/listening on [^ ]+:[1-9]/.test(err) && proc.exitCode === null; i++) await sleep(10);
  assert.match(err, /listening on [^ ]+:[1-9]/);
  proc.kill('SIGTERM');
  assert.equal(await exited, 0, err);
  return err;
}

test('listen: PORT and --listen :PORT bind every interface and say so; no auth stage there is warned about once', async () => {
  const port = await closedPort();
  const bare = config(mock.url).replace('listen: 127.0.0.1:0', `listen: ${port}`);
  for (const [text, args] of [[bare, []], [config(mock.url), ['--listen', `:${port}`]]]) {
    const err = await startAndStop(text, args);
    const where = `0\\.0\\.0\\.0:${port}`;
    assert.match(err, new RegExp(`listening on every network interface \\(${where}\\)[^\\n]*write 127\\.0\\.0\\.1:${port} to serve this machine only`));
    const warned = err.match(new RegExp(`warn the listener on ${where} is not a loopback one and has no auth stage`, 'g')) || [];
    assert.equal(warned.length, 1, err);
    assert.equal((err.match(/spends every provider key/g) || []).length, 1, 'said once: ' + err);
  }
  // a loopback listener: neither line
  const quiet = await startAndStop(config(mock.url));
  assert.doesNotMatch(quiet, /every network interface|auth stage/);
});

test('curl-like requests (no Origin) and loopback Host names are served', async () => {
  for (const host of ['127.0.0.1:' + gw.port, 'localhost:' + gw.port, '[::1]', 'localhost']) {
    const r = await conn(gw.port, `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    assert.match(r.out, /^HTTP\/1.1 200 /, host);
  }
  const res = await fetch(gw.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: CHAT,
  });
  assert.equal(res.status, 200);
});

test('an allowed origin gets a preflight answer and CORS headers', async () => {
  let r = await conn(gw.port, 'OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    'Origin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\n' +
    'Access-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n');
  assert.match(r.out, /^HTTP\/1.1 204 /);
  assert.match(r.out, /\r\naccess-control-allow-origin: https:\/\/app.example.com\r\n/i);
  assert.match(r.out, /\r\naccess-control-allow-methods: [^\r]*POST/i);
  assert.match(r.out, /\r\naccess-control-allow-headers: authorization, content-type\r\n/i);
  r = await conn(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    'Origin: https://app.example.com\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/json\r\n' +
    `Connection: close\r\nContent-Length: ${CHAT.length}\r\n\r\n${CHAT}`);
  assert.match(r.out, /^HTTP\/1.1 200 /);
  assert.match(r.out, /\r\naccess-control-allow-origin: https:\/\/app.example.com\r\n/i);
  // a preflight from another origin is refused
  r = await conn(gw.port, 'OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    'Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n\r\n');
  assert.match(r.out, /^HTTP\/1.1 403 /);
  assert.doesNotMatch(r.out, /access-control-allow-origin/i);
});

test('a trickling client is answered 408 at the client_timeout deadline, and logged', async () => {
  // one byte of body every 100 ms would re-arm a per-read timeout forever
  const head = 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    'X-Request-Id: req-trickle-1\r\nContent-Length: 1000\r\n\r\n';
  const pieces = [[0, head]];
  for (let i = 0; i < 200; i++) pieces.push([100, 'x']);
  const r = await conn(gw.port, pieces, { waitMs: 15000 });
  assert.match(r.out, /^HTTP\/1.1 408 /);
  assert.ok(r.closed);
  const line = await gw.waitLog((l) => l.request_id === 'req-trickle-1');
  assert.equal(line.status, 408);
});

test('a request head trickled a byte at a time is cut at client_timeout: one deadline for the whole head', async () => {
  // 1 s for the head; a byte every 50 ms of a 400-byte head would take 20 s
  // and re-arm a per-read timeout forever
  const head = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n' + 'X-Pad: ' + 'p'.repeat(340) + '\r\n\r\n';
  const r = await conn(gw.port, [...head].map((ch) => [50, ch]), { waitMs: 30000 });
  // a whole head of /healthz would be a 200: the 408 came before its end
  assert.match(r.out, /^HTTP\/1.1 408 /);
  assert.match(r.out, /limits\.client_timeout/);
  assert.ok(r.closed, 'the connection is closed');
});

test('partial uploads past limits.max_body_total get 503 with Retry-After; the budget is given back', async () => {
  // 60 KiB bodies against a 256 KiB budget: four fit, the fifth does not;
  // its own gateway: the held uploads must outlive the test's opening of
  // the fifth connection, whatever the machine's load (the shared gateway's
  // client_timeout is 1 s, for the trickle test)
  const gw = await startGateway(config(mock.url, {
    limits: '  max_body: 64KiB\n  max_body_total: 256KiB\n  client_timeout: 60s',
  }), { workers: 1 });
  const held = [];
  const head = (id) => 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    `X-Request-Id: ${id}\r\nContent-Length: ${60 * 1024}\r\n\r\n{"model":`;
  try {
    for (let i = 0; i < 4; i++) held.push(await hold(gw.port, head('req-part-' + i)));
    // one worker reads in order: once a later connection is answered, the
    // four held heads have been read and their bodies reserved
    const probe = await conn(gw.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    assert.match(probe.out, /^HTTP\/1.1 200 /);
    const r = await conn(gw.port, head('req-part-over'));
    assert.match(r.out, /^HTTP\/1.1 503 /);
    assert.match(r.out, /\r\nretry-after: 1\r\n/i);
    assert.match(r.out, /limits\.max_body_total/);
    assert.ok(r.closed);
    await gw.waitLog((l) => l.request_id === 'req-part-over' && l.status === 503);
    // each held client ends its side; the gateway closes its own once it
    // has freed the connection (and its reservation)
    await Promise.all(held.map((s) => new Promise((resolve) => {
      s.on('end', resolve);
      s.on('close', resolve);
      s.end();
    })));
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'y'.repeat(50000) }] });
    const res = await fetch(gw.url + '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body,
    });
    await res.text();
    const status = res.status;
    assert.equal(status, 200);
  } finally {
    await gw.stop();
  }
});

test('over limits.max_conns a connection is answered 503 and closed; /healthz answers again after', async () => {
  const g = await startGateway(config(mock.url, { limits: '  max_conns: 4' }), { workers: 1 });
  try {
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await hold(g.port, ''));
    const r = await conn(g.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    assert.match(r.out, /^HTTP\/1.1 503 /);
    assert.match(r.out, /\r\nRetry-After: 1\r\n/);
    assert.match(r.out, /"code":"too_many_connections"/);
    assert.ok(r.closed);
    await Promise.all(held.map((s) => new Promise((resolve) => {
      s.on('close', resolve);
      s.end();
    })));
    const ok = await conn(g.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    assert.match(ok.out, /^HTTP\/1.1 200 /);
    await g.waitStderr(/limits\.max_conns\): new ones are answered 503/);
    assert.equal(g.stderr.match(/limits\.max_conns\): new ones are answered 503/g).length, 1);
  } finally {
    await g.stop();
  }
});

test('out of descriptors, accept pauses with one log line per episode (until a quiet second) and serving resumes', async () => {
  const g = await startGateway(config(mock.url, { limits: '  max_conns: 10000' }), {
    workers: 1, wrap: ['prlimit', '--nofile=64:64', '--'],
  });
  const episodes = () => (g.stderr.match(/accept: Too many open files/g) || []).length;
  try {
    for (let round = 1; round <= 2; round++) {
      // more connections than descriptors: the rest wait in the backlog
      const held = [];
      for (let i = 0; i < 80; i++) held.push(await hold(g.port, ''));
      await new Promise((resolve) => {
        const until = () => (episodes() >= round ? resolve() : setTimeout(until, 20));
        until();
      });
      for (const s of held) s.destroy();
      // served again once descriptors are free
      const ok = await conn(g.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n',
        { waitMs: 10000 });
      assert.match(ok.out, /^HTTP\/1.1 200 /);
      // the episode ends after a quiet second of accepts, said once
      await g.waitStderr(new RegExp(`(accepted again[^]*){${round}}`));
      assert.equal(episodes(), round, g.stderr);
      assert.equal((g.stderr.match(/accepted again/g) || []).length, round, g.stderr);
    }
  } finally {
    await g.stop();
  }
});
