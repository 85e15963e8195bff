// Hooks a stage instance leaves out (api->skip_hooks, ABI 1.8): the
// instance is not called for them though its plugin has them, other
// instances of the same plugin still are; the admin API lists the hooks
// left; a bit that is no hook is refused (the fixture's init fails
// otherwise). The otel stage without content capture leaves out on_route
// and on_response_headers, with capture it keeps them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startMock, startGateway, config, chat, adminCall, BUILD, path } from './harness.mjs';

let mock, gw, dir;
const ALL = ['on_request', 'on_route', 'on_upstream_request', 'on_upstream_response',
  'on_response_headers', 'on_response_body', 'on_log', 'on_done'];

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-hookmask-'));
  const so = `${BUILD}/tests/fixtures/hookmask.so`;
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: a
    plugin: ${so}
    config: { tag: a, skip: [on_route, on_log] }
  - name: b
    plugin: ${so}
    config: { tag: b, bad: true }
  - name: c
    plugin: ${so}
    config: { tag: c, skip: [on_response_headers, on_done] }
  - name: traces
    plugin: otel
    config: { endpoint: "http://127.0.0.1:9/v1/traces", close_ms: 100 }
  - name: traces-capture
    plugin: otel
    config: { endpoint: "http://127.0.0.1:9/v1/traces", close_ms: 100, capture_content: true }`,
  }) + `admin: { socket: ${dir}/admin.sock }\n`, { dir, workers: 1 });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

test('an instance is not called for the hooks it left out; another instance is', async () => {
  // one worker: a request's on_log and on_done ran before the next one's
  // head; b counts both, a only on_done, c sets no header at all
  let a, b, res;
  for (let k = 0; k < 50; k++) {
    res = await chat(gw, 'hello');
    assert.equal(res.status, 200);
    await res.text();
    a = res.headers.get('x-hooks-a');
    b = res.headers.get('x-hooks-b');
    if (/log=[1-9]/.test(b) && /done=[1-9]/.test(b)) break;
  }
  assert.match(b, /^on_request,on_route,on_upstream_request,on_upstream_response,on_response_headers log=[1-9]\d* done=[1-9]\d*$/);
  assert.match(a, /^on_request,on_upstream_request,on_upstream_response,on_response_headers log=0 done=[1-9]\d*$/);
  assert.equal(a.split(' done=')[1], b.split(' done=')[1]);
  assert.equal(res.headers.get('x-hooks-c'), null);
});

test('the admin API lists the hooks an instance kept', async () => {
  const st = await adminCall(path.join(dir, 'admin.sock'), 'GET', '/stages');
  assert.equal(st.status, 200);
  const hooks = (name) => st.json.stages.find((s) => s.name === name).hooks;
  assert.deepEqual(hooks('a'), ALL.filter((h) => h !== 'on_route' && h !== 'on_log'));
  assert.deepEqual(hooks('b'), ALL);
  assert.deepEqual(hooks('c'), ALL.filter((h) => h !== 'on_response_headers' && h !== 'on_done'));
  // otel: capture off needs neither on_route nor on_response_headers
  assert.deepEqual(hooks('traces'), ['on_upstream_request', 'on_log']);
  assert.deepEqual(hooks('traces-capture'),
    ['on_route', 'on_upstream_request', 'on_response_headers', 'on_log']);
});
