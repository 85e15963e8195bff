// CORS in a real browser: headless Chromium opens a page served from
// another origin (a small HTTP server of the test), and the page calls the
// gateway with fetch, a JSON body and an Authorization header, so the
// browser sends a preflight first. With cors: allowing the page's origin
// the call succeeds and the page reads the answer (and the stage saw the
// Authorization header); with the origin not allowed the browser blocks
// the call and the request never reaches the stages or the upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, ROOT, path } from './harness.mjs';

// Debian's chromium, driven by playwright-core from tests/browser
// (scripts/test.sh installs it; no browser is downloaded)
const { chromium } = await import(path.join(ROOT, 'tests/browser/node_modules/playwright-core/index.mjs'));

let mock, gw, browser, allowed, other;

// a page server; its origin is http://localhost:PORT (the gateway is on
// 127.0.0.1, so the two are different origins)
function pageServer() {
  return new Promise((resolve) => {
    const s = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><title>app</title><p>app</p>');
    });
    s.listen(0, '127.0.0.1', () => {
      s.origin = `http://localhost:${s.address().port}`;
      resolve(s);
    });
  });
}

before(async () => {
  mock = await startMock();
  allowed = await pageServer();
  other = await pageServer();
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-corsb-'));
  // an authentication stand-in: refuses a request without the page's key,
  // and names the consumer from it
  writeFileSync(path.join(dir, 'auth.lua'),
    'local mf = require "mf"\n' +
    'local M = { name = "auth", version = "1" }\n' +
    'function M.on_request(conf, ctx)\n' +
    '  if mf.req.get_header("authorization") ~= "Bearer page-key-1" then return 401, "no key" end\n' +
    '  mf.req.set_consumer("page")\n' +
    'end\nreturn M\n');
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: auth
    lua: ${dir}/auth.lua`,
  }) + `
cors:
  allow_origins: ["${allowed.origin}"]
`, { dir });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  await mock?.stop();
  allowed?.close();
  other?.close();
});

// opens the page at origin and runs a fetch to the gateway in it
async function callFromPage(origin, id) {
  const page = await browser.newPage();
  const failed = [];
  page.on('requestfailed', (r) => failed.push(r.url()));
  try {
    await page.goto(`${origin}/`);
    assert.equal(await page.evaluate(() => location.origin), origin);
    return await page.evaluate(async ({ url, id }) => {
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: 'Bearer page-key-1', 'x-request-id': id },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello from the page' }] }),
        });
        return { ok: true, status: res.status, body: await res.json() };
      } catch (e) {
        return { ok: false, error: String(e) };
      }
    }, { url: `${gw.url}/v1/chat/completions`, id });
  } finally {
    await page.close();
  }
}

test('from an allowed origin the call succeeds and the page reads the answer', async () => {
  const r = await callFromPage(allowed.origin, 'cb-ok');
  assert.equal(r.ok, true, r.error);
  assert.equal(r.status, 200);
  assert.equal(r.body.object, 'chat.completion');
  assert.equal(typeof r.body.choices[0].message.content, 'string');
  assert.ok(r.body.choices[0].message.content.length > 0);
  // the stage saw the page's Authorization header (it names the consumer)
  const line = await gw.waitLog((l) => l.request_id === 'cb-ok');
  assert.equal(line.status, 200);
  assert.equal(line.consumer, 'page');
});

test('from an origin not allowed the browser blocks the call', async () => {
  const before = await mock.count();
  const r = await callFromPage(other.origin, 'cb-blocked');
  assert.equal(r.ok, false);
  assert.match(r.error, /TypeError|Failed to fetch/);
  // the allowed origin still works afterwards, and the blocked call never
  // reached the upstream (the preflight was refused)
  const again = await callFromPage(allowed.origin, 'cb-ok2');
  assert.equal(again.status, 200);
  await gw.waitLog((l) => l.request_id === 'cb-ok2');
  assert.equal(gw.accessLog().some((l) => l.request_id === 'cb-blocked'), false);
  assert.equal(await mock.count(), before + 1);
});
