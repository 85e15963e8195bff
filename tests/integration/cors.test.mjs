// CORS settings: cors.allow_headers (the list a preflight allows, instead
// of reflecting the requested headers) and cors.max_age (how long a
// browser caches the preflight); preflights are answered before any stage
// runs (a stage that refuses every request does not see them); without a
// cors: section no CORS header is ever sent and browser requests are
// refused. Raw HTTP, as a browser sends it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, raw, path, spawnSync, BIN, writeConfig } from './harness.mjs';

let mock, gw, plain;
const ORIGIN = 'https://app.example.com';

before(async () => {
  mock = await startMock();
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-cors-'));
  // a stage refusing every request, as an authentication stage would
  writeFileSync(path.join(dir, 'deny.lua'),
    'local M = { name = "deny", version = "1" }\n' +
    'function M.on_request(conf, ctx) return 401, "no key" end\nreturn M\n');
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: deny
    lua: ${dir}/deny.lua`,
  }) + `
cors:
  allow_origins: ["${ORIGIN}", "https://*.example.org"]
  allow_headers: [authorization, content-type, x-stainless-os, anthropic-version]
  max_age: 2h
`, { dir });
  plain = await startGateway(config(mock.url));
});

after(async () => {
  await gw.stop();
  await plain.stop();
  await mock.stop();
});

const preflight = (port, path, origin, headers, method = 'POST') => raw(port,
  `OPTIONS ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: ${origin}\r\n` +
  `Access-Control-Request-Method: ${method}\r\n` +
  (headers ? `Access-Control-Request-Headers: ${headers}\r\n` : '') +
  'Sec-Fetch-Mode: cors\r\nSec-Fetch-Site: cross-site\r\nConnection: close\r\n\r\n');

test('a preflight gets the configured headers and max age, with no stage run', async () => {
  for (const p of ['/v1/chat/completions', '/v1/messages', '/v1beta/models/gpt-4o:streamGenerateContent']) {
    const out = await preflight(gw.port, p, ORIGIN, 'authorization, content-type, x-other');
    assert.match(out, /^HTTP\/1.1 204 /, p);
    assert.match(out, new RegExp(`\r\naccess-control-allow-origin: ${ORIGIN}\r\n`, 'i'));
    assert.match(out, /\r\naccess-control-allow-methods: GET, POST, DELETE, OPTIONS\r\n/i);
    // the configured list, not the requested one
    assert.match(out, /\r\naccess-control-allow-headers: authorization, content-type, x-stainless-os, anthropic-version\r\n/i);
    assert.match(out, /\r\naccess-control-max-age: 7200\r\n/i);
    assert.match(out, /\r\nvary: Origin\r\n/i);
  }
  // the request itself runs the stages (refused by the stage), with CORS headers
  const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
  const out = await raw(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    `Origin: ${ORIGIN}\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/json\r\n` +
    `Connection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  assert.match(out, /^HTTP\/1.1 401 /);
  assert.match(out, new RegExp(`\r\naccess-control-allow-origin: ${ORIGIN}\r\n`, 'i'));
  assert.match(out, /\r\naccess-control-expose-headers: [^\r]*x-request-id/i);
});

test('a preflight for DELETE /v1/responses/{id} allows DELETE (a browser then sends it)', async () => {
  const out = await preflight(gw.port, '/v1/responses/resp_abc', ORIGIN, 'authorization', 'DELETE');
  assert.match(out, /^HTTP\/1.1 204 /);
  const allow = /\r\naccess-control-allow-methods: ([^\r]*)\r\n/i.exec(out);
  assert.ok(allow, out);
  assert.ok(allow[1].split(/,\s*/).includes('DELETE'), allow[1]);
});

test('a preflight from an origin not listed is refused with no CORS header', async () => {
  const out = await preflight(gw.port, '/v1/chat/completions', 'https://evil.example', 'authorization');
  assert.match(out, /^HTTP\/1.1 403 /);
  assert.doesNotMatch(out, /access-control-allow/i);
});

test('an origin pattern https://*.example.org allows its subdomains, not the domain or look-alikes', async () => {
  for (const o of ['https://app.example.org', 'https://a.b.example.org', 'https://A-1.Example.ORG']) {
    const out = await preflight(gw.port, '/v1/chat/completions', o, 'authorization');
    assert.match(out, /^HTTP\/1.1 204 /, o);
    assert.match(out, new RegExp(`\r\naccess-control-allow-origin: ${o}\r\n`, 'i'), o);
  }
  for (const o of ['https://example.org', 'https://evilexample.org', 'http://app.example.org',
    'https://app.example.org.evil.com', 'https://.example.org', 'https://a..example.org', 'https://a/b.example.org']) {
    const out = await preflight(gw.port, '/v1/chat/completions', o, 'authorization');
    assert.match(out, /^HTTP\/1.1 403 /, o);
    assert.doesNotMatch(out, /access-control-allow/i, o);
  }
});

test('off by default: no cors section, no CORS header, browser requests refused', async () => {
  const out = await preflight(plain.port, '/v1/chat/completions', ORIGIN, 'authorization');
  assert.match(out, /^HTTP\/1.1 403 /);
  assert.doesNotMatch(out, /access-control-/i);
  const res = await fetch(plain.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('access-control-allow-origin'), null);
});

test('cors settings are checked', async () => {
  const file = writeConfig(config(mock.url) + `
cors:
  allow_origins: ["${ORIGIN}", "https://app.example.com/", "https://*example.com", "https://a.*.example.com", "https://*."]
  allow_headers: ["bad header"]
  max_age: 48h
  allow_credentials: true
`);
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /cors\.allow_headers: 'bad header' is not a header name/);
  assert.match(r.stderr, /cors\.max_age: must be between 0s and 24h/);
  assert.match(r.stderr, /allow_credentials/);
  for (const o of ['https://app.example.com/', 'https://*example.com', 'https://a.*.example.com', 'https://*.']) {
    assert.ok(r.stderr.includes(`'${o}' is not an origin`), o);
  }
  assert.ok(!r.stderr.includes(`'${ORIGIN}' is not an origin`));
});
