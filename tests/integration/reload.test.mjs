// Hot reload under load: while 50 paced streams and steady non-stream
// requests run, a Lua stage and a .so stage are each replaced 20 times
// (the file watcher picks up every write); no request fails or is cut,
// every response is served by one instance of each stage from its first
// byte to its last, a request made after the admin socket shows a reload
// sees the new code, memory does not grow, and broken versions are refused
// while traffic flows. A stage file written in two halves with a pause
// between them is loaded once, after it is closed; a writer that keeps it
// open past reload.write_wait gets a reload anyway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  mkdtempSync, writeFileSync, copyFileSync, readFileSync, openSync, writeSync, closeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import {
  startMock, startGateway, config, chat, sleep, http, path, BUILD,
} from './harness.mjs';
import { adminCall } from './harness.mjs';

const SANITIZED = /asan/.test(BUILD);
let mock, gw, dir, sock;

function luaSource(n) {
  return `-- tag.lua version ${n}
local mf = require "mf"
local TAG = "lua-${n}"
local M = { name = "luatag", version = "${n}" }
function M.on_response_headers(conf, ctx) mf.resp.set_header("x-lua-tag", TAG) end
function M.on_response_body(conf, ctx, data, last)
  if data:sub(1, 1) == "{" then mf.resp.set_body('{"lua_tag":"' .. TAG .. '",' .. data:sub(2)) end
end
return M
`;
}

function admin(method, p) {
  return adminCall(sock, method, p);
}

async function stage(name) {
  const { json } = await admin('GET', '/stages');
  return json.stages.find((s) => s.name === name);
}

async function waitStage(name, pred, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    if (gw.proc.exitCode !== null || gw.proc.signalCode !== null) {
      throw new Error(`the gateway died (${gw.proc.exitCode ?? gw.proc.signalCode}):\n${gw.stderr.slice(-4000)}`);
    }
    const s = await stage(name);
    if (pred(s)) return s;
    if (Date.now() > end) throw new Error(`stage ${name} did not reload: ${JSON.stringify(s)}`);
    await sleep(15);
  }
}

function rss() {
  const m = readFileSync(`/proc/${gw.proc.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return Number(m[1]);
}

// Checks that every JSON part carries the header's tags.
function checkTags(headers, parts, what) {
  const lt = headers['x-lua-tag'], st = headers['x-so-tag'];
  assert.ok(lt && st, `${what}: tag headers missing`);
  for (const p of parts) {
    assert.equal(p.lua_tag, lt, `${what}: Lua tag changed inside a response`);
    assert.equal(p.so_tag, st, `${what}: .so tag changed inside a response`);
  }
  return { lt, st };
}

function streamOnce() {
  return new Promise((resolve) => {
    const req = http.request(gw.url + '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        try {
          assert.equal(res.statusCode, 200);
          const events = text.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
          assert.equal(events[events.length - 1], '[DONE]', 'stream cut short');
          const parts = events.slice(0, -1).map((e) => JSON.parse(e));
          assert.ok(parts.length >= 10);
          assert.ok(!parts.some((p) => p.error), 'error event in stream');
          checkTags(res.headers, parts, 'stream');
          resolve(null);
        } catch (e) { resolve(e); }
      });
      res.on('error', (e) => resolve(e));
    });
    req.on('error', (e) => resolve(e));
    req.end(JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'tell [[mock:chunks=20 chunk_delay=40]]' }] }));
  });
}

async function plainOnce() {
  try {
    const res = await chat(gw, 'hello');
    assert.equal(res.status, 200);
    const body = await res.json();
    return { tags: checkTags(Object.fromEntries(res.headers), [body], 'non-stream') };
  } catch (e) { return { error: e }; }
}

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-reload-'));
  sock = path.join(dir, 'admin.sock');
  writeFileSync(path.join(dir, 'tag.lua'), luaSource(0));
  copyFileSync(path.join(BUILD, 'tests/fixtures/tagplug-a.so'), path.join(dir, 'tag.so'));
  gw = await startGateway(config(mock.url, {
    stages: `
  - name: luatag
    lua: ${dir}/tag.lua
  - name: sotag
    plugin: ${dir}/tag.so`,
  }) + `
admin: { socket: ${sock} }
reload: { watch: true, debounce: 100ms }
`, { dir });
});

after(async () => {
  try {
    await gw.stop();
  } finally {
    await mock.stop();
  }
});

// Runs 50 stream loops and 4 non-stream loops until stop() is awaited.
function load(nstreams = 50, nplains = 4) {
  let running = true;
  const failures = [];
  const counts = { streams: 0, plains: 0 };
  const loops = [
    ...[...Array(nstreams)].map(async () => {
      while (running) {
        const err = await streamOnce();
        counts.streams++;
        if (err) failures.push(err);
      }
    }),
    ...[...Array(nplains)].map(async () => {
      while (running) {
        const r = await plainOnce();
        counts.plains++;
        if (r.error) failures.push(r.error);
      }
    }),
  ];
  return {
    failures, counts,
    async stop() { running = false; await Promise.all(loops); },
  };
}

test('20 Lua and 20 .so swaps under 50 streams and steady requests: nothing lost or mixed', async (t) => {
  // warm up under the same load, with a reload of each kind, so that
  // connections, buffers and allocator arenas are in the "before" figure
  const warm = load();
  try {
  writeFileSync(path.join(dir, 'tag.lua'), luaSource(100));
  await waitStage('luatag', (s) => s.version === '100');
  copyFileSync(path.join(BUILD, 'tests/fixtures/tagplug-b.so'), path.join(dir, 'tag.so'));
  await waitStage('sotag', (s) => s.version === '1.0.b');
  await sleep(1500);
  } finally {
    await warm.stop();
  }
  assert.deepEqual(warm.failures.map(String), []);
  await sleep(300);
  const rssBefore = rss();

  const main = load();
  try {
  let soVariant = 'b';
  for (let i = 1; i <= 20; i++) {
    writeFileSync(path.join(dir, 'tag.lua'), luaSource(i));
    await waitStage('luatag', (s) => s.version === String(i));
    const after1 = await plainOnce();
    assert.equal(after1.error, undefined);
    assert.equal(after1.tags.lt, `lua-${i}`, 'a request after the reload must see the new Lua stage');

    const before = await stage('sotag');
    soVariant = soVariant === 'a' ? 'b' : 'a';
    copyFileSync(path.join(BUILD, `tests/fixtures/tagplug-${soVariant}.so`), path.join(dir, 'tag.so'));
    await waitStage('sotag', (s) => s.version === `1.0.${soVariant}` && s.generation > before.generation);
    const after2 = await plainOnce();
    assert.equal(after2.error, undefined);
    assert.ok(after2.tags.st.startsWith(`so-${soVariant}-`), 'a request after the reload must see the new .so stage');
  }
  } catch (e) {
    throw new Error(`${e.message}\n--- gateway log (tail):\n${gw.stderr.slice(-4000)}`);
  } finally {
    await main.stop();
  }
  const { streams, plains } = main.counts;
  assert.deepEqual(main.failures.map(String), [], 'failed, cut or mixed requests');
  assert.ok(streams >= 50 && plains >= 40, `traffic ran (${streams} streams, ${plains} requests)`);

  const { json: stats } = await admin('GET', '/stats');
  assert.ok(stats.reloads.attempts >= 42, `${stats.reloads.attempts} reloads`);
  assert.equal(stats.reloads.failures, 0);
  // every old generation was freed once its last request ended
  await sleep(200);
  const { json: gens } = await admin('GET', '/generations');
  assert.equal(gens.generations.length, 1, JSON.stringify(gens));

  await sleep(300);
  const rssAfter = rss();
  t.diagnostic(`${streams} streams, ${plains} requests; RSS ${rssBefore} -> ${rssAfter} KiB`);
  if (!SANITIZED) { // ASan's quarantine holds freed memory on purpose
    assert.ok(rssAfter <= rssBefore * 1.10, `RSS grew from ${rssBefore} to ${rssAfter} KiB`);
  }
});

test('a broken Lua file and a .so with the wrong ABI are refused while traffic flows', async () => {
  const good = await stage('luatag');
  writeFileSync(path.join(dir, 'tag.lua'), luaSource(500) + '\nthis is not lua(\n');
  let s = await waitStage('luatag', (x) => x.last_error && /reload refused/.test(x.last_error));
  assert.match(s.last_error, /tag\.lua:\d+:/);
  assert.equal(s.version, good.version, 'the old version keeps serving');
  const r1 = await plainOnce();
  assert.equal(r1.error, undefined);
  assert.equal(r1.tags.lt, `lua-${good.version}`);
  // an explicit reload answers with the error, its file and line
  const rel = await admin('POST', '/reload');
  assert.equal(rel.status, 422);
  assert.equal(rel.json.ok, false);
  assert.equal(rel.json.error.file, path.join(dir, 'tag.lua'));
  assert.ok(rel.json.error.line >= 1);

  const goodSo = await stage('sotag');
  copyFileSync(path.join(BUILD, 'tests/fixtures/badabi.so'), path.join(dir, 'tag.so'));
  s = await waitStage('sotag', (x) => x.last_error && /ABI/.test(x.last_error));
  assert.match(s.last_error, /ABI/);
  assert.equal(s.generation, goodSo.generation);
  const r2 = await plainOnce();
  assert.equal(r2.error, undefined);
  assert.equal(r2.tags.st, (await plainOnce()).tags.st);
  const { json: stats } = await admin('GET', '/stats');
  assert.equal(stats.reloads.last.ok, false);

  // fixing both files brings the new versions in
  writeFileSync(path.join(dir, 'tag.lua'), luaSource(501));
  copyFileSync(path.join(BUILD, 'tests/fixtures/tagplug-a.so'), path.join(dir, 'tag.so'));
  await waitStage('luatag', (x) => x.version === '501');
  await waitStage('sotag', (x) => x.generation > goodSo.generation);
  const r3 = await plainOnce();
  assert.equal(r3.tags.lt, 'lua-501');
  assert.ok(r3.tags.st.startsWith('so-a-'));
});

test('admin: stage list, enable/disable, one-stage reload, 0600 socket, errors', async () => {
  const { statSync } = await import('node:fs');
  assert.equal(statSync(sock).mode & 0o777, 0o600);
  let r = await admin('POST', '/stages/luatag/disable');
  assert.equal(r.status, 200);
  let res = await chat(gw, 'hello');
  assert.equal(res.headers.get('x-lua-tag'), null, 'a disabled stage does not run');
  r = await admin('POST', '/stages/luatag/enable');
  res = await chat(gw, 'hello');
  assert.ok(res.headers.get('x-lua-tag'));
  const before = await stage('luatag');
  const other = await stage('sotag');
  r = await admin('POST', '/stages/luatag/reload');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.stages_loaded, ['luatag']);
  assert.ok((await stage('luatag')).generation > before.generation);
  assert.equal((await stage('sotag')).generation, other.generation, 'the other stage is shared, not reloaded');
  assert.equal((await admin('POST', '/stages/nope/reload')).status, 404);
  assert.equal((await admin('GET', '/reload')).status, 405);
  assert.equal((await admin('GET', '/nothing')).status, 404);
  const st = await stage('accesslog');
  assert.ok(st.requests > 0 && st.kind === 'c' && st.version === '1.0.0');
  const text = JSON.stringify((await admin('GET', '/stats')).json) + JSON.stringify((await admin('GET', '/stages')).json);
  assert.ok(!text.includes('sk-upstream-secret'), 'no secret in admin output');
});

async function reloads() {
  return (await admin('GET', '/stats')).json.reloads;
}

function count(re) {
  return (gw.stderr.match(new RegExp(re.source, 'g')) || []).length;
}

// Opens file (truncating it), writes bytes up to cut and waits until the
// gateway has either logged that it waits for the writer (one more line
// matching waitRe) or tried a reload; returns the descriptor, still open,
// and the reload counters from before the write.
async function writeFirstHalf(file, bytes, cut, waitRe) {
  const before = await reloads();
  const seen = count(waitRe);
  const fd = openSync(file, 'w');
  writeSync(fd, bytes, 0, cut);
  const end = Date.now() + 10000;
  for (;;) {
    if (count(waitRe) > seen) break;
    const now = await reloads();
    if (now.attempts > before.attempts) break;
    if (Date.now() > end) {
      closeSync(fd);
      throw new Error(`the watcher neither waited nor reloaded:\n${gw.stderr.slice(-3000)}`);
    }
    await sleep(20);
  }
  return { fd, before };
}

test('a Lua and a .so stage written in two halves with a pause: loaded once, after the close', async () => {
  const traffic = load(4, 2);
  try {
    // Lua: the first half ends inside a function, a syntax error if loaded
    const oldLua = (await stage('luatag')).version;
    const src = Buffer.from(luaSource(700));
    const cut = src.indexOf('then mf.resp.set_body');
    const lua = await writeFirstHalf(path.join(dir, 'tag.lua'), src, cut,
      /tag\.lua is open for writing; the reload waits/);
    let now = await reloads();
    assert.equal(now.attempts, lua.before.attempts, 'a half-written Lua file was reloaded');
    const during = await plainOnce();
    assert.equal(during.error, undefined);
    assert.equal(during.tags.lt, `lua-${oldLua}`, 'the old version serves while the file is written');
    writeSync(lua.fd, src, cut, src.length - cut);
    closeSync(lua.fd);
    await waitStage('luatag', (s) => s.version === '700');
    const afterLua = await plainOnce();
    assert.equal(afterLua.error, undefined);
    assert.equal(afterLua.tags.lt, 'lua-700', 'the new version serves after the close');
    now = await reloads();
    assert.equal(now.failures, lua.before.failures, `reload failed: ${JSON.stringify(now.last)}`);
    assert.equal(now.attempts, lua.before.attempts + 1, 'one reload for the whole write');

    // .so: half an ELF file would fail in dlopen
    const so = await stage('sotag');
    const variant = so.version === '1.0.a' ? 'b' : 'a';
    const elf = readFileSync(path.join(BUILD, `tests/fixtures/tagplug-${variant}.so`));
    const half = await writeFirstHalf(path.join(dir, 'tag.so'), elf, elf.length >> 1,
      /tag\.so is open for writing; the reload waits/);
    now = await reloads();
    assert.equal(now.attempts, half.before.attempts, 'a half-written .so was reloaded');
    writeSync(half.fd, elf, elf.length >> 1, elf.length - (elf.length >> 1));
    closeSync(half.fd);
    await waitStage('sotag', (s) => s.version === `1.0.${variant}` && s.generation > so.generation);
    const afterSo = await plainOnce();
    assert.equal(afterSo.error, undefined);
    assert.ok(afterSo.tags.st.startsWith(`so-${variant}-`), 'the new .so serves after the close');
    now = await reloads();
    assert.equal(now.failures, half.before.failures, `reload failed: ${JSON.stringify(now.last)}`);
    assert.equal(now.attempts, half.before.attempts + 1, 'one reload for the whole write');
  } catch (e) {
    throw new Error(`${e.message}\n--- gateway log (tail):\n${gw.stderr.slice(-4000)}`);
  } finally {
    await traffic.stop();
  }
  assert.deepEqual(traffic.failures.map(String), [], 'failed, cut or mixed requests');
});

// The end of the loadable segments of a 64-bit ELF file.
function loadEnd(elf) {
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36), phnum = elf.readUInt16LE(0x38);
  let end = 0;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) === 1) { // PT_LOAD
      end = Math.max(end, Number(elf.readBigUInt64LE(ph + 8) + elf.readBigUInt64LE(ph + 32)));
    }
  }
  return end;
}

test('an explicit reload while a .so is half written refuses it and the gateway goes on', async () => {
  const so = await stage('sotag');
  const variant = so.version === '1.0.a' ? 'b' : 'a';
  const elf = readFileSync(path.join(BUILD, `tests/fixtures/tagplug-${variant}.so`));
  const cut = loadEnd(elf) >> 1; // dlopen of this much would die of SIGBUS
  assert.ok(cut > 1024 && cut < elf.length);
  const fd = openSync(path.join(dir, 'tag.so'), 'w');
  try {
    writeSync(fd, elf, 0, cut);
    const rel = await admin('POST', '/reload');
    assert.equal(rel.status, 422, JSON.stringify(rel.json));
    assert.match(rel.json.error.message, /tag\.so: cut short: \d+ bytes, but its contents reach byte \d+; is it still being written\?/);
    const r = await plainOnce();
    assert.equal(r.error, undefined);
    assert.equal(r.tags.st.slice(0, 4), `so-${so.version.slice(-1)}`, 'the old .so goes on serving');
    writeSync(fd, elf, cut, elf.length - cut);
  } catch (e) {
    throw new Error(`${e.message}\n--- gateway log (tail):\n${gw.stderr.slice(-4000)}`);
  } finally {
    closeSync(fd);
  }
  // the watcher loads the whole file after the close
  await waitStage('sotag', (s) => s.version === `1.0.${variant}` && s.generation > so.generation);
  assert.ok((await plainOnce()).tags.st.startsWith(`so-${variant}-`));
});

test('a writer that keeps a stage file open past reload.write_wait gets a reload anyway', async () => {
  // a reload of the config brings the shorter wait in
  const conf = readFileSync(gw.file, 'utf8');
  assert.match(conf, /reload: \{ watch: true, debounce: 100ms \}/);
  let before = await reloads();
  writeFileSync(gw.file, conf.replace('debounce: 100ms }', 'debounce: 100ms, write_wait: 1s }'));
  for (let end = Date.now() + 10000; (await reloads()).attempts === before.attempts;) {
    if (Date.now() > end) throw new Error('the config change was not reloaded');
    await sleep(20);
  }
  assert.equal((await reloads()).last.ok, true);
  try {
    const good = (await stage('luatag')).version;
    const src = Buffer.from(luaSource(800));
    const cut = src.indexOf('then mf.resp.set_body');
    const seen = count(/tag\.lua is still open for writing after 1\.0 s; reloading anyway/);
    const { fd, before: b } = await writeFirstHalf(path.join(dir, 'tag.lua'), src, cut,
      /tag\.lua is open for writing; the reload waits until it is closed \(at most 1\.0 s\)/);
    before = b;
    try {
      await gw.waitStderr(/tag\.lua is still open for writing after 1\.0 s; reloading anyway/, 10000);
      assert.equal(count(/tag\.lua is still open for writing after 1\.0 s; reloading anyway/), seen + 1);
      // the half file was tried and refused; the old version goes on serving
      for (let end = Date.now() + 10000; (await reloads()).attempts === before.attempts;) {
        if (Date.now() > end) throw new Error('no reload after the write wait');
        await sleep(20);
      }
      const now = await reloads();
      assert.equal(now.failures, before.failures + 1);
      assert.equal(now.last.trigger, 'file watcher');
      assert.match(JSON.stringify(now.last.error), /tag\.lua:\d+:/);
      assert.equal((await stage('luatag')).version, good);
      const r = await plainOnce();
      assert.equal(r.error, undefined);
      assert.equal(r.tags.lt, `lua-${good}`);
      writeSync(fd, src, cut, src.length - cut);
    } finally {
      closeSync(fd);
    }
    // the close is a change like any other: the whole file is loaded
    await waitStage('luatag', (x) => x.version === '800');
    assert.equal((await plainOnce()).tags.lt, 'lua-800');
  } catch (e) {
    throw new Error(`${e.message}\n--- gateway log (tail):\n${gw.stderr.slice(-4000)}`);
  } finally {
    writeFileSync(gw.file, conf);
  }
});

test('reload.watch: false in a reloaded config stops the watcher; a reload that turns it on starts it', async () => {
  const conf = readFileSync(gw.file, 'utf8');
  const stats = async () => (await admin('GET', '/stats')).json;
  const before = await stats();
  assert.ok(before.watched_files >= 3, JSON.stringify(before));
  writeFileSync(gw.file, conf.replace('reload: { watch: true,', 'reload: { watch: false,'));
  for (let end = Date.now() + 10000; (await stats()).reloads.attempts === before.reloads.attempts;) {
    if (Date.now() > end) throw new Error('the config change was not reloaded');
    await sleep(20);
  }
  let now = await stats();
  assert.equal(now.reloads.last.ok, true);
  assert.equal(now.watched_files, 0);
  writeFileSync(gw.file, conf);
  const rel = await admin('POST', '/reload');
  assert.equal(rel.status, 200);
  now = await stats();
  assert.equal(now.watched_files, before.watched_files);
});
