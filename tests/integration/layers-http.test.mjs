// The host seen from outside: HTTP/1.0 clients, the listening port, the
// heads every answer carries, config errors reported at once, the plugin
// search path and the installed layout.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { mkdtempSync, copyFileSync, existsSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import {
  startMock, startGateway, config, chat, writeConfig, BIN, BUILD, ROOT,
  spawnSync, path, writeFileSync, readFileSync,
} from './harness.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway(config(mock.url, { limits: '  max_body: 4KiB\n  max_header: 4KiB' }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

// A connection that collects what comes back; `until(text)` resolves once
// the text received matches, `closed` once the gateway closed it.
function connect(port) {
  const s = net.connect(port, '127.0.0.1');
  const c = { s, out: '', closed: false, waiters: [] };
  const check = () => {
    c.waiters = c.waiters.filter((w) => {
      if (w.pred()) { w.resolve(); return false; }
      return true;
    });
  };
  s.on('data', (d) => { c.out += d.toString('latin1'); check(); });
  s.on('close', () => { c.closed = true; check(); });
  s.on('error', () => {});
  c.until = (pred) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no match; got:\n${c.out}`)), 10000);
    c.waiters.push({ pred, resolve: () => { clearTimeout(timer); resolve(); } });
    check();
  });
  return c;
}

test('HTTP/1.0 keep-alive is announced and the connection serves a second request', async () => {
  const c = connect(gw.port);
  c.s.write('GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n');
  await c.until(() => /\r\n\r\n\{"status":"ok"\}/.test(c.out));
  assert.match(c.out, /^HTTP\/1.1 200/);
  assert.match(c.out, /\r\nConnection: keep-alive\r\n/i);
  assert.match(c.out, /\r\nKeep-Alive: timeout=60\r\n/); // limits.client_timeout, 60 s
  assert.equal(c.closed, false);
  c.out = '';
  c.s.write('GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n');
  await c.until(() => c.closed);
  assert.match(c.out, /^HTTP\/1.1 200/);
  assert.match(c.out, /\r\nConnection: close\r\n/i); // no keep-alive asked
  c.s.destroy();
});

test('a stream to an HTTP/1.0 client is sent as identity and ends with the connection', async () => {
  const body = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'old client' }] });
  const c = connect(gw.port);
  c.s.write(`POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await c.until(() => c.closed);
  const [head, rest] = c.out.split('\r\n\r\n', 2).length === 2
    ? [c.out.slice(0, c.out.indexOf('\r\n\r\n')), c.out.slice(c.out.indexOf('\r\n\r\n') + 4)]
    : [c.out, ''];
  assert.match(head, /^HTTP\/1.1 200/);
  assert.doesNotMatch(head, /transfer-encoding/i);
  assert.doesNotMatch(head, /content-length/i);
  assert.match(head, /\r\nConnection: close/i);
  assert.match(rest, /^data: \{/); // no chunk size line before the event
  assert.match(rest, /data: \[DONE\]\n\n$/); // no last-chunk after it
});

test('every answer carries Date; 405 carries Allow; 413 and 431 bodies have param', async () => {
  const dateRe = /\r\nDate: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT\r\n/;
  const once = async (bytes) => {
    const c = connect(gw.port);
    c.s.write(bytes);
    await c.until(() => c.closed);
    return c.out;
  };
  let out = await once('GET /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
  assert.match(out, /^HTTP\/1.1 405/);
  assert.match(out, dateRe);
  assert.match(out, /\r\nallow: POST\r\n/i);
  out = await once('POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  assert.match(out, /^HTTP\/1.1 405/);
  assert.match(out, /\r\nallow: GET\r\n/i);
  out = await once('POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n');
  assert.match(out, /^HTTP\/1.1 413/);
  assert.match(out, dateRe);
  assert.equal(JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4)).error.param, null);
  assert.ok('param' in JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4)).error);
  out = await once('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ' + 'a'.repeat(5000) + '\r\n\r\n');
  assert.match(out, /^HTTP\/1.1 431/);
  assert.match(out, dateRe);
  assert.ok('param' in JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4)).error);
  const res = await chat(gw, 'dated');
  assert.equal(res.status, 200);
  assert.ok(!Number.isNaN(Date.parse(res.headers.get('date'))));
});

test('an unknown model is answered without the config path or the model patterns', async () => {
  const res = await chat(gw, 'hi', { model: 'nope-model' });
  assert.equal(res.status, 404);
  const msg = (await res.json()).error.message;
  assert.doesNotMatch(msg, /\*/);
  assert.doesNotMatch(msg, /manifold\.yaml/);
  assert.match(msg, /Served: gpt-4o\./);
});

// Resolves with the port once a spawned gateway says it listens.
function listening(p) {
  let err = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not listening:\n${err}`)), 15000);
    p.stderr.on('data', (d) => {
      err += d;
      const m = err.match(/listening on [^:]+:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    p.on('exit', (code) => { clearTimeout(timer); reject(new Error(`exited ${code}: ${err}`)); });
  });
}

// Runs the gateway until it exits; {status, stderr}. It runs in its
// config's directory, where the access log of the test config is written.
function runToExit(args, ms = 15000) {
  return new Promise((resolve) => {
    const cwd = path.dirname(args[args.indexOf('-c') + 1]);
    const p = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let stderr = '';
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), ms);
    p.on('exit', (status) => { clearTimeout(timer); resolve({ status, stderr }); });
  });
}

test('a second gateway on the same port fails unless both share it with reuse_port', async () => {
  const text = config(mock.url).replace('listen: 127.0.0.1:0', `listen: 127.0.0.1:${gw.port}`);
  const file = writeConfig(text);
  const r = await runToExit(['-c', file, '--workers', '2']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, new RegExp(`cannot listen on 127.0.0.1:${gw.port}: Address already in use`));
  assert.match(r.stderr, /reuse_port/);
  // opted in, two gateways share a port (this one and a second)
  const a = await startGateway(config(mock.url) + 'reuse_port: true\n');
  const shared = config(mock.url) + 'reuse_port: true\n';
  const file2 = writeConfig(shared);
  const p = spawn(BIN, ['-c', file2, '--listen', `127.0.0.1:${a.port}`, '--workers', '1'],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: path.dirname(file2) });
  await listening(p);
  p.kill('SIGTERM');
  await new Promise((r2) => p.on('exit', r2));
  await a.stop();
});

test('manifold -t reports every config error at once, with suggestions', () => {
  const file = writeConfig(`
listen: 127.0.0.1:0
plugin_dir: ${BUILD}/plugins
provders: []
consumers:
  - { name: team-a, budget: { usd: 5, period: year } }
providers:
  - name: a
    type: opena
    base_url: http://127.0.0.1:1/v1
    keys: ["k"]
    modles: ["x"]
  - name: b
    type: antropic
    base_url: http://127.0.0.1:1/v1
    keys: ["k"]
`);
  const r = spawnSync(BIN, ['-t', '-c', file], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /:4: provders: unknown key 'provders'; did you mean 'providers'\?/);
  assert.match(r.stderr, /:6: consumers\[0\]\.budget: period 'year' must be day, week, month or total/);
  assert.match(r.stderr, /:12: providers\[0\]: unknown key 'modles'; did you mean 'models'\?/);
  assert.match(r.stderr, /:8: providers\[0\]: 'a' has type 'opena', which no provider plugin serves; did you mean 'openai'\?/);
  assert.match(r.stderr, /:13: providers\[1\]: 'b' has type 'antropic', .*did you mean 'anthropic'\?/);
  // a name far from every key gets no guess
  const far = writeConfig('zzzzzzzz: 1\n');
  const r2 = spawnSync(BIN, ['-t', '-c', far], { encoding: 'utf8' });
  assert.match(r2.stderr, /unknown key 'zzzzzzzz'; known keys:/);
});

test('-p is searched before plugin_dir, and plugin_dir does not hide the built-in providers', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-layers-'));
  const first = path.join(dir, 'first');
  const second = path.join(dir, 'second');
  for (const d of [first, second]) (await import('node:fs')).mkdirSync(d);
  copyFileSync(path.join(BUILD, 'examples/hello.so'), path.join(first, 'greet.so'));
  copyFileSync(path.join(BUILD, 'plugins/accesslog.so'), path.join(second, 'greet.so'));
  const text = `
listen: 127.0.0.1:0
plugin_dir: [${second}]
providers:
  - name: openai
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-1"]
    models: ["gpt-4o"]
stages:
  - name: greet
    plugin: greet
    config: { greeting: "from the command line", path: greet.log }
`;
  const file = writeConfig(text, dir);
  const p = spawn(BIN, ['-c', file, '--listen', '127.0.0.1:0', '--workers', '1', '-p', first],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  const port = await listening(p);
  const res = await chat({ url: `http://127.0.0.1:${port}` }, 'hello');
  assert.equal(res.status, 200); // the openai provider came from the built-in dir
  assert.equal(res.headers.get('x-hello'), 'from the command line');
  p.kill('SIGTERM');
  await new Promise((r) => p.on('exit', r));
});

test('a reload that changes workers warns that it needs a restart', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-layers-'));
  const text = config(mock.url) + 'workers: 1\n';
  const file = writeConfig(text, dir);
  const p = spawn(BIN, ['-c', file], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  let err = '';
  const wait = (re) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${re} in:\n${err}`)), 10000);
    const on = () => { if (re.test(err)) { clearTimeout(timer); p.stderr.off('data', on); resolve(); } };
    p.stderr.on('data', (d) => { err += d; on(); });
    p.on('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
    on();
  });
  await wait(/listening on/);
  writeFileSync(file, text.replace('workers: 1', 'workers: 3'));
  p.kill('SIGHUP');
  try {
    await wait(/reload: workers changed to 3, 1 workers go on serving; restart to apply/);
  } finally {
    p.kill('SIGTERM');
    await new Promise((r) => (p.exitCode !== null ? r() : p.on('exit', r)));
  }
});

function findFile(dir, name) {
  for (const e of readdirSync(dir)) {
    const f = path.join(dir, e);
    if (statSync(f).isDirectory()) {
      const hit = findFile(f, name);
      if (hit) return hit;
    } else if (e === name) {
      return f;
    }
  }
  return null;
}

test('cmake --install: the installed gateway finds its plugins, and plugins build against manifold.pc', async () => {
  const prefix = mkdtempSync(path.join(tmpdir(), 'mf-install-'));
  const inst = spawnSync('cmake', ['--install', BUILD, '--prefix', prefix], { encoding: 'utf8' });
  assert.equal(inst.status, 0, inst.stderr);
  const bin = path.join(prefix, 'bin/manifold');
  assert.ok(existsSync(bin));
  assert.ok(existsSync(path.join(prefix, 'bin/manifoldctl')));
  assert.ok(findFile(prefix, 'provider-openai.so'));
  assert.ok(findFile(prefix, 'router.lua'));
  const pc = findFile(prefix, 'manifold.pc');
  assert.ok(pc);
  const pcText = readFileSync(pc, 'utf8');
  assert.match(pcText, new RegExp(`^prefix=${prefix}$`, 'm'));
  const header = readFileSync(path.join(ROOT, 'sdk/include/manifold/plugin.h'), 'utf8');
  const major = header.match(/#define MF_ABI_MAJOR (\d+)/)[1];
  const minor = header.match(/#define MF_ABI_MINOR (\d+)/)[1];
  assert.match(pcText, new RegExp(`\\(ABI ${major}\\.${minor}\\)`));
  // the example plugin, built against the installed SDK
  const env = { ...process.env, PKG_CONFIG_PATH: path.dirname(pc) };
  const flags = spawnSync('pkg-config', ['--cflags', '--libs', 'manifold'], { encoding: 'utf8', env });
  assert.equal(flags.status, 0, flags.stderr);
  assert.match(flags.stdout, new RegExp(`-I${prefix}/include`));
  const so = path.join(prefix, 'hello.so');
  const cc = spawnSync('sh', ['-c', `cc -shared -o ${so} ${path.join(ROOT, 'examples/hello-plugin/hello.c')} ${flags.stdout.trim()}`],
    { encoding: 'utf8', env });
  assert.equal(cc.status, 0, cc.stderr);
  // the installed gateway, with a config that names no plugin_dir
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-layers-'));
  const file = writeConfig(`
listen: 127.0.0.1:0
providers:
  - name: openai
    type: openai
    base_url: ${mock.url}/v1
    keys: ["sk-1"]
    models: ["gpt-4o"]
stages:
  - name: hello
    plugin: ${so}
    config: { greeting: "installed" }
`, dir);
  const p = spawn(bin, ['-c', file, '--workers', '1'], {
    stdio: ['ignore', 'pipe', 'pipe'], cwd: dir,
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' },
  });
  const port = await listening(p);
  const res = await chat({ url: `http://127.0.0.1:${port}` }, 'installed');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-hello'), 'installed');
  p.kill('SIGTERM');
  await new Promise((r) => p.on('exit', r));
});

test('a first run says in one line which providers are enabled, and init says what to export', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-layers-'));
  const out = path.join(dir, 'init.yaml');
  const env = { ...process.env };
  delete env.OPENAI_API_KEY;
  delete env.ANTHROPIC_API_KEY;
  const r = spawnSync(BIN, ['init', '-o', out, '--provider', 'openai', '--provider', 'anthropic'],
    { encoding: 'utf8', cwd: dir, env });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /export OPENAI_API_KEY=\.\.\./);
  assert.match(r.stdout, /export ANTHROPIC_API_KEY=\.\.\./);
  assert.match(r.stdout, new RegExp(`start the gateway:\\n  \\S*manifold -c ${out}\\n$`));
  const t = spawnSync(BIN, ['-t', '-c', path.join(ROOT, 'configs/manifold.yaml')], { encoding: 'utf8', env });
  assert.equal(t.status, 0, t.stderr);
  const warnings = t.stderr.split('\n').filter((l) => / warn /.test(l));
  assert.equal(warnings.length, 1, t.stderr);
  assert.match(warnings[0], /providers enabled \(.*\); \d+ disabled because their keys are empty; export one of these to enable one: .*ANTHROPIC_API_KEY/);
});

test('a relative access log path is beside the config, wherever the gateway starts', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mf-layers-'));
  const elsewhere = mkdtempSync(path.join(tmpdir(), 'mf-cwd-'));
  const file = writeConfig(config(mock.url).replace('{ path: access.log }', '{ path: rel.log, buffer: 0 }'), dir);
  const p = spawn(BIN, ['-c', file, '--listen', '127.0.0.1:0', '--workers', '1'],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: elsewhere });
  const port = await listening(p);
  const res = await chat({ url: `http://127.0.0.1:${port}` }, 'hello');
  assert.equal(res.status, 200);
  const log = path.join(dir, 'rel.log');
  for (let i = 0; i < 500 && !(existsSync(log) && statSync(log).size > 0); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.match(readFileSync(log, 'utf8'), /"path":"\/v1\/chat\/completions"/);
  assert.deepEqual(readdirSync(elsewhere), []);
  p.kill('SIGTERM');
  await new Promise((r) => p.on('exit', r));
});
