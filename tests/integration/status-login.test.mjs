// The status listener with a token, opened in a browser: a page asked
// for without it sends the browser to /login; the token typed there
// becomes an HttpOnly, SameSite=Strict cookie holding a keyed hash of it
// (never the token), with which the dashboard and its data load; a wrong
// token, a forged cookie and a next that leaves the listener are refused.
// Headless Chromium, as a user would; raw HTTP for the refusals.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, ROOT, path } from './harness.mjs';

const { chromium } = await import(path.join(ROOT, 'tests/browser/node_modules/playwright-core/index.mjs'));

const TOKEN = 'status-token-0123456789abcdef';
let mock, gw, status, browser;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: dashboard
    plugin: dashboard
  - name: prometheus
    plugin: prometheus`,
  }) + `status:\n  listen: 127.0.0.1:0\n  token: ${TOKEN}\n`);
  status = `http://127.0.0.1:${gw.stderr.match(/status listener on 127\.0\.0\.1:(\d+)/)[1]}`;
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  await gw.stop();
  await mock.stop();
});

test('a browser signs in with the token and the dashboard loads with its data', async () => {
  const page = await browser.newPage();
  try {
    await page.goto(status + '/dashboard');
    assert.match(page.url(), /\/login\?next=\/dashboard$/);
    await page.fill('input[name=token]', 'not-the-token-0123456789');
    await page.click('input[type=submit]');
    assert.match(await page.content(), /That is not the token/);
    await page.fill('input[name=token]', TOKEN);
    const data = page.waitForResponse((r) => r.url().includes('/dashboard/api/summary'));
    await page.click('input[type=submit]');
    assert.equal((await data).status(), 200);
    assert.equal(new URL(page.url()).pathname, '/dashboard');
    const [cookie] = await page.context().cookies();
    assert.equal(cookie.name, 'mf_status');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.ok(!cookie.value.includes(TOKEN) && /^[0-9a-f]{64}$/.test(cookie.value), 'a keyed hash, not the token');
    // the same cookie opens the other pages of the listener
    const metrics = await page.evaluate(async () => (await fetch('/metrics')).status);
    assert.equal(metrics, 200);
  } finally {
    await page.close();
  }
});

test('without the token or its cookie: 401 for a program, the sign-in form for a browser; a forged cookie and a foreign next are refused', async () => {
  let r = await fetch(status + '/metrics');
  assert.equal(r.status, 401);
  r = await fetch(status + '/metrics', { headers: { cookie: `mf_status=${'0'.repeat(64)}` } });
  assert.equal(r.status, 401);
  r = await fetch(status + '/metrics', { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 200);
  r = await fetch(status + '/dashboard', { headers: { accept: 'text/html' }, redirect: 'manual' });
  assert.equal(r.status, 303);
  assert.equal(r.headers.get('location'), '/login?next=/dashboard');
  // next must stay on this listener
  for (const next of ['//evil.example/x', 'https://evil.example/', '/\\evil.example']) {
    r = await fetch(status + '/login', {
      method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `token=${TOKEN}&next=${encodeURIComponent(next)}`,
    });
    assert.equal(r.status, 303, next);
    assert.equal(r.headers.get('location'), '/', next);
  }
  r = await fetch(status + '/login', {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=wrong',
  });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get('set-cookie'), null);
  // a page of another origin cannot post to it
  r = await fetch(status + '/login', {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'http://evil.example' },
    body: `token=${TOKEN}`,
  });
  assert.equal(r.status, 403);
});
