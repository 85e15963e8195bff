// Hardening of stages and the control plane: Lua time, pause and memory
// limits and the sandbox, JSON errors for tables that cannot be encoded,
// reloads whose Lua top-level code or C init() never ends, the private
// runtime directory (admin socket, plugin copies) and `manifold -t`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  mkdtempSync, writeFileSync, copyFileSync, mkdirSync, chownSync, statSync,
  chmodSync, readdirSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import {
  startMock, startGateway, config, chat, post, adminCall, path, BUILD, BIN, ROOT,
  writeConfig,
} from './harness.mjs';

const FIX = path.join(ROOT, 'tests/integration/fixtures');
let mock;

before(async () => { mock = await startMock(); });
after(async () => { await mock.stop(); });

// Runs the gateway binary to its end; resolves {code, stderr, stdout}.
function runToEnd(args, env = {}) {
  return new Promise((resolve) => {
    const p = spawn(BIN, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', ...env },
    });
    let stderr = '', stdout = '';
    p.stderr.on('data', (d) => { stderr += d; });
    p.stdout.on('data', (d) => { stdout += d; });
    p.on('close', (code) => resolve({ code, stderr, stdout }));
  });
}

// Waits for a line of the gateway's log: stderr reaches us on its own
// pipe, not in step with the HTTP answer.
async function waitErr(gw, re, ms = 5000) {
  const end = Date.now() + ms;
  while (!re.test(gw.stderr)) {
    if (Date.now() > end) assert.match(gw.stderr, re);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function stages(extra = '') {
  return `
  - name: bad
    lua: ${FIX}/hardening.lua
    time_limit: 200ms
    pause_limit: 300ms
    memory_limit: 32MiB
  - name: trusted
    lua: ${FIX}/hardening.lua
    trusted: true
    config: { prefix: "t:" }${extra}`;
}

test('a Lua stage that loops, yields bare, sleeps forever or hogs memory fails that request; the next ones are served', async () => {
  const gw = await startGateway(config(mock.url, { stages: stages() }), { workers: 1 });
  try {
    const ok = async () => {
      const r = await chat(gw, 'hello');
      assert.equal(r.status, 200);
      assert.match((await r.json()).choices[0].message.content, /hello/);
    };
    let r = await chat(gw, 'loop');
    assert.equal(r.status, 500);
    assert.equal((await r.json()).error.type, 'server_error');
    await waitErr(gw, /stage 'bad' on_request: ran longer than its time_limit of 200 ms/);
    await ok();

    r = await chat(gw, 'yield');
    assert.equal(r.status, 500);
    await waitErr(gw, /stage 'bad' on_request: yielded outside an mf async call/);
    await ok();

    r = await chat(gw, 'sleep-forever');
    assert.equal(r.status, 504);
    const body = await r.json();
    assert.equal(body.error.type, 'timeout_error');
    assert.equal(body.error.code, 'stage_timeout');
    await waitErr(gw, /stage 'bad' on_request: waited longer than its pause_limit of 300 ms/);
    await ok();

    r = await chat(gw, 'hog');
    assert.equal(r.status, 500);
    await waitErr(gw, /stage 'bad' on_request: went over its memory_limit of 33554432 bytes/);
    await ok();
    await ok();
  } finally {
    await gw.stop();
  }
});

test('SIGTERM ends the gateway while a Lua stage loops', async () => {
  const gw = await startGateway(config(mock.url, {
    stages: stages(`
  - name: slow
    lua: ${FIX}/hardening.lua
    time_limit: 1s
    config: { prefix: "s:" }`),
  }), { workers: 1 });
  const pending = chat(gw, 's:log-loop').then((r) => r.status, (e) => e);
  await waitErr(gw, /looping now/);
  await gw.stop(); // exits 0 once the loop hits its time_limit
  const status = await pending;
  assert.ok(status === 500 || status instanceof Error, `loop request: ${status}`);
  await waitErr(gw, /stage 'slow' on_request: ran longer than its time_limit of 1000 ms/);
});

test('the sandbox removes io, os.execute, os.exit, debug, ffi, C modules and bytecode; trusted: true keeps them', async () => {
  const gw = await startGateway(config(mock.url, { stages: stages() }), { workers: 1 });
  try {
    let r = await chat(gw, 'sandbox');
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), {
      io: 'nil', execute: 'nil', exit: 'nil', debug: 'nil', ffi: 'nil',
      require_ffi: 'false', loadlib: 'nil', time: 'function', bytecode: 'nil',
      outside: 'nil',
    });
    r = await chat(gw, 't:sandbox');
    assert.equal(r.status, 200);
    const t = await r.json();
    assert.equal(t.io, 'table');
    assert.equal(t.execute, 'function');
    assert.equal(t.exit, 'function');
    assert.equal(t.debug, 'table');
    assert.equal(t.require_ffi, 'true');
    assert.equal(t.bytecode, 'function');
  } finally {
    await gw.stop();
  }
});

test('a stage returning a cyclic table fails with 500 in the client protocol; mf.json.encode of a cycle returns nil, err', async () => {
  const gw = await startGateway(config(mock.url, { stages: stages() }), { workers: 1 });
  try {
    let r = await chat(gw, 'cycle');
    assert.equal(r.status, 500);
    assert.equal((await r.json()).error.type, 'server_error');
    await waitErr(gw, /stage 'bad': the body it returned cannot be encoded as JSON: a table nests deeper than 200 levels or contains itself/);

    r = await post(gw, '/v1/messages', {
      model: 'gpt-4o', max_tokens: 16, messages: [{ role: 'user', content: 'cycle' }],
    });
    assert.equal(r.status, 500);
    const a = await r.json();
    assert.equal(a.type, 'error');
    assert.equal(typeof a.error.message, 'string');

    r = await chat(gw, 'encode-cycle');
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), {
      s: 'nil', err: 'mf.json.encode: a table nests deeper than 200 levels or contains itself',
    });
  } finally {
    await gw.stop();
  }
});

test('a stage returning a table nested deeper than 200 levels fails with 500, not 200 null', async () => {
  const gw = await startGateway(config(mock.url, { stages: stages() }), { workers: 1 });
  try {
    const r = await chat(gw, 'deep');
    assert.equal(r.status, 500);
    assert.equal((await r.json()).error.type, 'server_error');
    await waitErr(gw, /stage 'bad': the body it returned cannot be encoded as JSON: a table nests deeper than 200 levels/);
    assert.equal((await chat(gw, 'hello')).status, 200);
  } finally {
    await gw.stop();
  }
});

// Resolves with the exit code, or 'still running' after ms.
function exitWithin(proc, ms) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null) { resolve(proc.exitCode); return; }
    const timer = setTimeout(() => resolve('still running'), ms);
    proc.on('exit', (code) => { clearTimeout(timer); resolve(code); });
  });
}

for (const kind of ['Lua top-level code loops', 'C init() spins']) {
  test(`SIGTERM during a reload whose ${kind} ends the wait at once and the gateway exits 0`, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mf-hard-'));
    writeFileSync(path.join(dir, 'stage.lua'), 'return { name = "fine", version = "1" }\n');
    copyFileSync(path.join(BUILD, 'tests/fixtures/tagplug-a.so'), path.join(dir, 'tag.so'));
    // an init_timeout far past the wait below: only the signal can end it
    const gw = await startGateway(config(mock.url, {
      stages: `
  - name: fine
    lua: ${dir}/stage.lua
    init_timeout: 300s
  - name: sotag
    plugin: ${dir}/tag.so
    init_timeout: 300s`,
    }) + 'reload: { watch: false }\n', { dir, workers: 1 });
    if (kind.startsWith('Lua')) {
      copyFileSync(path.join(FIX, 'toploop-log.lua'), path.join(dir, 'stage.lua'));
      gw.proc.kill('SIGHUP');
      await waitErr(gw, /top-level loop starts/);
    } else {
      copyFileSync(path.join(BUILD, 'tests/fixtures/spininit.so'), path.join(dir, 'tag.so'));
      gw.proc.kill('SIGHUP');
      await waitErr(gw, /spininit: init\(\) spins from now on/);
    }
    // the current generation serves while the reload waits
    assert.equal((await chat(gw, 'hello')).status, 200);
    gw.proc.kill('SIGTERM');
    const code = await exitWithin(gw.proc, 60000);
    assert.equal(code, 0, gw.stderr);
    assert.match(gw.stderr, /reload \(SIGHUP\) refused[^\n]*(told to stop)/);
    assert.match(gw.stderr, /stopped\n?/);
  });
}

// without the helper the admin calls would wait the whole init_timeout:
// the test's timeout fails it instead
test('while a reload waits for an init, the admin socket answers: /stats and /stages served, a reload 409, the rest 503', { timeout: 60000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-hard-'));
  const sock = path.join(dir, 'admin.sock');
  writeFileSync(path.join(dir, 'stage.lua'), 'return { name = "fine", version = "1" }\n');
  // an init_timeout the test never waits for: SIGTERM ends the wait
  const gw = await startGateway(config(mock.url, {
    stages: `
  - name: fine
    lua: ${dir}/stage.lua
    init_timeout: 300s`,
  }) + `admin: { socket: ${sock} }\nreload: { watch: false }\n`, { dir, workers: 1 });
  try {
    copyFileSync(path.join(FIX, 'toploop-log.lua'), path.join(dir, 'stage.lua'));
    gw.proc.kill('SIGHUP');
    await waitErr(gw, /top-level loop starts/);
    const st = await adminCall(sock, 'GET', '/stats');
    assert.equal(st.status, 200);
    assert.equal(st.json.reload_in_progress.trigger, 'SIGHUP');
    assert.equal(typeof st.json.reload_in_progress.for_s, 'number');
    // counted once it ends: the one in progress is reload_in_progress
    assert.equal(st.json.reloads.attempts, 0);
    const stages = await adminCall(sock, 'GET', '/stages');
    assert.equal(stages.status, 200);
    assert.equal(stages.json.stages.find((x) => x.name === 'fine').version, '1');
    for (const p of ['/reload', '/stages/fine/reload']) {
      const rel = await adminCall(sock, 'POST', p);
      assert.equal(rel.status, 409, p);
      assert.match(rel.json.error.message, /^reload in progress \(SIGHUP, for [\d.]+ s\): this one is refused/);
    }
    const keys = await adminCall(sock, 'GET', '/keys');
    assert.equal(keys.status, 503);
    assert.match(keys.json.error.message, /reload in progress .*GET \/keys is served once it ends/);
    // the current generation serves meanwhile
    assert.equal((await chat(gw, 'hello')).status, 200);
  } finally {
    await gw.stop(); // SIGTERM ends the wait; the reload is refused
  }
  assert.match(gw.stderr, /reload \(SIGHUP\) refused[^\n]*told to stop/);
});

test('a start whose Lua top-level code or C init() never ends fails at init_timeout, saying so', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-hard-'));
  for (const [stage, want] of [
    [`
  - name: spin
    plugin: ${BUILD}/tests/fixtures/spininit.so
    init_timeout: 300ms`, /stages\[0\] 'spin': .*init\(\) did not return within its init_timeout of 300 ms/],
    [`
  - name: loop
    lua: ${FIX}/toploop.lua
    init_timeout: 300ms`, /toploop\.lua: stage 'loop': ran longer than its init_timeout of 300 ms/],
  ]) {
    const file = writeConfig(config(mock.url, { stages: stage }), mkdtempSync(path.join(dir, 's-')));
    const res = await runToEnd(['-c', file, '--listen', '127.0.0.1:0', '--workers', '1']);
    assert.equal(res.code, 1, res.stderr);
    assert.match(res.stderr, want);
    assert.doesNotMatch(res.stderr, /listening on/);
  }
});

test('a reload whose Lua top-level code loops or whose C init() never returns is refused; the admin socket answers', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-hard-'));
  const sock = path.join(dir, 'admin.sock');
  writeFileSync(path.join(dir, 'stage.lua'), 'return { name = "fine", version = "1" }\n');
  copyFileSync(path.join(BUILD, 'tests/fixtures/tagplug-a.so'), path.join(dir, 'tag.so'));
  const gw = await startGateway(config(mock.url, {
    stages: `
  - name: fine
    lua: ${dir}/stage.lua
    init_timeout: 300ms
  - name: sotag
    plugin: ${dir}/tag.so
    init_timeout: 300ms`,
  }) + `
admin: { socket: ${sock} }
reload: { watch: false }
`, { dir, workers: 1 });
  try {
    copyFileSync(path.join(FIX, 'toploop.lua'), path.join(dir, 'stage.lua'));
    let rel = await adminCall(sock, 'POST', '/reload');
    assert.equal(rel.status, 422);
    assert.match(rel.json.error.message, /ran longer than its init_timeout of 300 ms/);
    let st = await adminCall(sock, 'GET', '/stages');
    assert.equal(st.status, 200);
    assert.equal(st.json.stages.find((s) => s.name === 'fine').version, '1');

    writeFileSync(path.join(dir, 'stage.lua'), 'return { name = "fine", version = "2" }\n');
    copyFileSync(path.join(BUILD, 'tests/fixtures/spininit.so'), path.join(dir, 'tag.so'));
    rel = await adminCall(sock, 'POST', '/reload');
    assert.equal(rel.status, 422);
    assert.match(rel.json.error.message, /init\(\) did not return within its init_timeout of 300 ms; the reload is refused/);
    st = await adminCall(sock, 'GET', '/stages');
    assert.equal(st.status, 200);
    assert.equal(st.json.stages.find((s) => s.name === 'sotag').version, '1.0.a');
    const r = await chat(gw, 'hello');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('x-so-tag'), /^so-a-/);
  } finally {
    await gw.stop();
  }
});

test('manifold -t loads plugins and runs init: a plugin whose init never returns is reported', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-hard-'));
  const base = config(mock.url, { stages: '' });
  const good = writeConfig(base, dir);
  let res = await runToEnd(['-t', '-c', good]);
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /configuration OK/);
  const spin = path.join(dir, 'spin.yaml');
  writeFileSync(spin, config(mock.url, {
    stages: `
  - name: spin
    plugin: ${BUILD}/tests/fixtures/spininit.so
    init_timeout: 200ms`,
  }));
  res = await runToEnd(['-t', '-c', spin]);
  assert.equal(res.code, 1);
  assert.match(res.stderr, /stages\[0\] 'spin': .*init\(\) did not return within its init_timeout of 200 ms/);
});

test('the admin socket lives in a private runtime directory; a path owned by another user is refused', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-hard-'));
  const rt = path.join(dir, 'rt');
  const gw = await startGateway(config(mock.url) + 'admin: { socket: admin.sock }\n',
    { dir, env: { MANIFOLD_RUNTIME_DIR: rt, TMPDIR: path.join(dir, 'no-such-dir') } });
  try {
    assert.equal(statSync(rt).mode & 0o777, 0o700);
    const st = await adminCall(path.join(rt, 'admin.sock'), 'GET', '/stages');
    assert.equal(st.status, 200);
    // plugins loaded with TMPDIR unusable, and no copy stays behind
    assert.equal((await chat(gw, 'hello')).status, 200);
    assert.deepEqual(readdirSync(rt), ['admin.sock']);
  } finally {
    await gw.stop();
  }

  const loose = path.join(dir, 'loose');
  mkdirSync(loose, { mode: 0o755 });
  chmodSync(loose, 0o755);
  const file = writeConfig(config(mock.url) + 'admin: { socket: admin.sock }\n', dir);
  let res = await runToEnd(['-c', file, '--listen', '127.0.0.1:0', '--workers', '1'],
    { MANIFOLD_RUNTIME_DIR: loose });
  assert.equal(res.code, 1);
  assert.match(res.stderr, /runtime directory .*loose has mode 755; other users must have no access/);

  if (process.getuid() !== 0) {
    t.diagnostic('not root: cannot hand a path to another user; the rest is skipped');
    return;
  }
  const theirs = path.join(dir, 'theirs.sock');
  writeFileSync(theirs, '');
  chownSync(theirs, 65534, 65534);
  const dir2 = mkdtempSync(path.join(tmpdir(), 'mf-hard-'));
  const file2 = writeConfig(config(mock.url) + `admin: { socket: ${theirs} }\n`, dir2);
  res = await runToEnd(['-c', file2, '--listen', '127.0.0.1:0', '--workers', '1']);
  assert.equal(res.code, 1);
  assert.match(res.stderr, /admin: .*theirs\.sock belongs to uid 65534, not to this user/);

  const foreign = path.join(dir, 'foreign');
  mkdirSync(foreign, { mode: 0o700 });
  chownSync(foreign, 65534, 65534);
  res = await runToEnd(['-c', file, '--listen', '127.0.0.1:0', '--workers', '1'],
    { MANIFOLD_RUNTIME_DIR: foreign });
  assert.equal(res.code, 1);
  assert.match(res.stderr, /runtime directory .*foreign belongs to uid 65534/);
});

test('plugins load when the runtime directory and TMPDIR sit on a noexec filesystem', async (t) => {
  if (process.getuid() !== 0) {
    t.skip('not root: cannot mount a noexec tmpfs to test on');
    return;
  }
  const mnt = mkdtempSync(path.join(tmpdir(), 'mf-noexec-'));
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'noexec,size=64m', 'tmpfs', mnt], { encoding: 'utf8' });
  if (m.status !== 0) {
    t.skip(`mount -t tmpfs -o noexec refused here: ${(m.stderr || m.error || '').toString().trim()}`);
    return;
  }
  t.after(() => spawnSync('umount', ['-l', mnt]));
  const rt = path.join(mnt, 'rt');
  const gw = await startGateway(config(mock.url, {
    stages: `
  - name: sotag
    plugin: ${BUILD}/tests/fixtures/tagplug-a.so`,
  }).replace('log_level: info', 'log_level: debug') + 'admin: { socket: admin.sock }\n', {
    workers: 1, env: { MANIFOLD_RUNTIME_DIR: rt, TMPDIR: mnt },
  });
  try {
    let r = await chat(gw, 'hello');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('x-so-tag') || '', /^so-a-/);
    // loaded again once the debug level is on, to see how: the copy in the
    // runtime directory could not be mapped, so from memory
    const rel = await adminCall(path.join(rt, 'admin.sock'), 'POST', '/stages/sotag/reload');
    assert.equal(rel.status, 200, JSON.stringify(rel.json));
    await waitErr(gw, /tagplug-a\.so: loaded from memory \(.*cannot load its copy in /);
    r = await chat(gw, 'hello');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('x-so-tag') || '', /^so-a-/);
    assert.equal(statSync(rt).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(rt), ['admin.sock'], 'no copy stays behind');
  } finally {
    await gw.stop();
  }
});
