// Test harness: starts the C mock upstream and the gateway on free loopback
// ports, and stops them, failing on sanitizer reports or a bad exit.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import http from 'node:http';
import crypto from 'node:crypto';

export const ROOT = path.resolve(new URL('../..', import.meta.url).pathname);
export const BUILD = path.resolve(ROOT, process.env.MF_BUILD || 'build');
export const BIN = path.join(BUILD, 'manifold');
export const MOCK = path.join(BUILD, 'tests/mock/mf-mock');

function waitLine(proc, stream, re, ms = 10000) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`timeout waiting for ${re}: ${buf}`)), ms);
    const on = (d) => {
      buf += d.toString();
      const m = buf.match(re);
      if (m) { clearTimeout(timer); stream.off('data', on); resolve(m); }
    };
    stream.on('data', on);
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`exited ${code}: ${buf}`)); });
  });
}

export async function startMock(want = 0) {
  const proc = spawn(MOCK, ["--port", String(want)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' }, // the mock, not the gateway
  });
  const m = await waitLine(proc, proc.stdout, /(\d+)\n/);
  const port = Number(m[1]);
  return {
    proc, port, url: `http://127.0.0.1:${port}`,
    async last() { return (await fetch(`http://127.0.0.1:${port}/_mock/last`)).json(); },
    async count() { return (await (await fetch(`http://127.0.0.1:${port}/_mock/count`)).json()).count; },
    async mode(m) { return (await fetch(`http://127.0.0.1:${port}/_mock/mode`, { method: 'POST', body: JSON.stringify(m) })).json(); },
    async stop() { proc.kill('SIGTERM'); await new Promise((r) => proc.exitCode !== null ? r() : proc.on('exit', r)); },
  };
}

export function writeConfig(text, dir) {
  dir = dir || mkdtempSync(path.join(tmpdir(), 'mf-test-'));
  const file = path.join(dir, 'manifold.yaml');
  writeFileSync(file, text);
  return file;
}

// wrap: a command line the gateway runs under (e.g. prlimit ... --).
export async function startGateway(configText, { workers = 2, env = {}, dir, wrap = [] } = {}) {
  const file = writeConfig(configText, dir);
  const logFile = path.join(path.dirname(file), 'access.log');
  const argv = [...wrap, BIN, '-c', file, '--listen', '127.0.0.1:0', '--workers', String(workers)];
  const proc = spawn(argv[0], argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'], cwd: path.dirname(file),
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', ...env },
  });
  let stderr = '', stdout = '';
  proc.stderr.on('data', (d) => { stderr += d.toString(); });
  proc.stdout.on('data', (d) => { stdout += d.toString(); });
  const m = await waitLine(proc, proc.stderr, /listening on [^:]+:(\d+)/);
  const port = Number(m[1]);
  const gw = {
    proc, port, file, logFile, url: `http://127.0.0.1:${port}`,
    get stderr() { return stderr; },
    get stdout() { return stdout; },
    accessLog() {
      const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : stdout;
      // only complete lines: a line may be read while it is being written
      return text.split('\n').slice(0, -1).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    },
    async waitLog(pred, ms = 5000) {
      const end = Date.now() + ms;
      for (;;) {
        const hit = gw.accessLog().find(pred);
        if (hit) return hit;
        if (Date.now() > end) throw new Error('no matching access log line:\n' + gw.accessLog().map(JSON.stringify).join('\n'));
        await sleep(20);
      }
    },
    // waits until the gateway's stderr matches re (a log line is written
    // after the answer it is about may have reached the client)
    async waitStderr(re, ms = 5000) {
      const end = Date.now() + ms;
      while (!re.test(stderr)) {
        if (Date.now() > end) throw new Error(`no stderr line matching ${re}:\n${stderr}`);
        await sleep(20);
      }
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) { // still running
        proc.kill('SIGTERM');
        await new Promise((r) => proc.on('exit', r));
      }
      if (/AddressSanitizer|LeakSanitizer|runtime error:/.test(stderr)) {
        throw new Error('sanitizer report:\n' + stderr);
      }
      if (proc.exitCode !== 0) throw new Error(`gateway exited ${proc.exitCode ?? proc.signalCode}:\n${stderr}`);
    },
  };
  return gw;
}

// One request to a gateway's admin socket: {status, json}.
export function adminCall(sock, method, p) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, path: p, method }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(body) }));
    });
    req.on('error', reject);
    req.end();
  });
}

// POST /commands/NAME on a gateway's admin socket (a command a plugin
// registered, or a built-in one) with a JSON body: {status, json}.
export function adminCommand(sock, name, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({ socketPath: sock, path: `/commands/${name}`, method: 'POST',
      headers: { 'content-length': Buffer.byteLength(data) } }, (res) => {
      let t = '';
      res.on('data', (d) => { t += d; });
      res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(t) }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

// A real redis-server on a free loopback port, without persistence unless
// `args` ask for some (they are appended to its command line). start()
// starts it (again, on the same port) and waits for its PING; stop(sig)
// signals it and waits for its exit; cli(...) runs redis-cli against it
// and returns the trimmed output; `proc` is the running process.
export async function startRedis({ args = [] } = {}) {
  const port = await closedPort();
  const redis = {
    port,
    proc: null,
    cli(...a) {
      return spawnSync('redis-cli', ['-p', String(port), ...a]).stdout.toString().trim();
    },
    async start() {
      this.proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', ...args], { stdio: 'ignore' });
      for (let i = 0; i < 400; i++) {
        if (this.cli('PING') === 'PONG') return;
        if (this.proc.exitCode !== null) break;
        await sleep(25);
      }
      throw new Error('redis-server did not start');
    },
    async stop(sig = 'SIGKILL') {
      const p = this.proc;
      if (p === null || p.exitCode !== null || p.signalCode !== null) return;
      const gone = new Promise((r) => p.on('exit', r));
      p.kill(sig);
      await gone;
    },
  };
  await redis.start();
  return redis;
}

// Whether port is free on loopback now.
function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

// A real Redis Cluster of `masters` masters (no replicas), each a
// redis-server with --cluster-enabled in its own temp dir on a free
// loopback port whose bus port (port + 10000) is free too, joined by
// `redis-cli --cluster create`; resolves once every node reports
// cluster_state:ok and all 16384 slots covered. seeds: ["127.0.0.1:P",
// ...]; cli(port, ...) runs redis-cli -c against a node; nodes[i].port;
// slotOf(key) asks CLUSTER KEYSLOT; owner(slot) the port of the master
// serving slot; stop() kills every node.
export async function startRedisCluster({ masters = 3 } = {}) {
  const nodes = [];
  while (nodes.length < masters) {
    const port = await closedPort();
    if (port + 10000 > 65535 || nodes.some((n) => n.port === port) || !(await portFree(port + 10000))) continue;
    const dir = mkdtempSync(path.join(tmpdir(), 'mf-rcluster-'));
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
      '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'),
      '--cluster-node-timeout', '5000', '--dir', dir, '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
    nodes.push({ port, dir, proc });
  }
  const cli = (port, ...a) => spawnSync('redis-cli', ['-p', String(port), ...a]).stdout.toString().trim();
  const stop = async () => {
    for (const n of nodes) {
      if (n.proc.exitCode !== null || n.proc.signalCode !== null) continue;
      const gone = new Promise((r) => n.proc.on('exit', r));
      n.proc.kill('SIGKILL');
      await gone;
    }
  };
  try {
    for (const n of nodes) {
      for (let i = 0; cli(n.port, 'PING') !== 'PONG'; i++) {
        if (i > 400 || n.proc.exitCode !== null) throw new Error(`redis-server on ${n.port} did not start`);
        await sleep(25);
      }
    }
    const made = spawnSync('redis-cli', ['--cluster', 'create',
      ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes']);
    if (made.status !== 0) throw new Error('redis-cli --cluster create: ' + made.stdout + made.stderr);
    const ready = () => nodes.every((n) => {
      const info = cli(n.port, 'CLUSTER', 'INFO');
      return /cluster_state:ok/.test(info) && /cluster_slots_ok:16384/.test(info) &&
        new RegExp(`cluster_known_nodes:${masters}\\b`).test(info);
    });
    for (let i = 0; !ready(); i++) {
      if (i > 800) throw new Error('the redis cluster did not reach cluster_state:ok');
      await sleep(25);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    nodes,
    seeds: nodes.map((n) => `127.0.0.1:${n.port}`),
    cli,
    slotOf(key) { return Number(cli(nodes[0].port, 'CLUSTER', 'KEYSLOT', key)); },
    owner(slot) {
      const n = nodes.find((m) => ownsSlot(cli(m.port, 'CLUSTER', 'NODES').split('\n')
        .find((l) => l.includes('myself')) || '', slot));
      return n ? n.port : null;
    },
    stop,
  };
}

// Whether a CLUSTER NODES line's slot ranges hold slot.
function ownsSlot(line, slot) {
  return line.split(' ').slice(8).some((r) => {
    if (r.startsWith('[')) return false; // a migrating/importing note
    const [a, b] = r.split('-').map(Number);
    return slot >= a && slot <= (b ?? a);
  });
}

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

export function post(gw, pathName, body, headers = {}) {
  return fetch(gw.url + pathName, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

export function chat(gw, content, extra = {}, headers = {}) {
  return post(gw, '/v1/chat/completions', {
    model: 'gpt-4o', messages: [{ role: 'user', content }], ...extra,
  }, headers);
}

// Reads an SSE response into events (data strings).
export async function sseEvents(res) {
  const text = await res.text();
  return text.split('\n\n').filter((b) => b.trim()).map((b) =>
    b.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n'));
}

// Raw HTTP/1.1 exchange over a socket; resolves with what came back.
export function raw(port, bytes, { waitMs = 3000 } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (d) => { out += d.toString(); });
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
    s.write(bytes);
    setTimeout(() => { s.destroy(); resolve(out); }, waitMs);
  });
}

export function closedPort() {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const p = srv.address().port; srv.close(() => resolve(p)); });
  });
}

export function config(mockUrl, { extraProviders = '', stages = '', limits = '', providerExtra = '' } = {}) {
  return `
listen: 127.0.0.1:0
log_level: info
plugin_dir: ${BUILD}/plugins
limits:
  upstream_connect_timeout: 2s
  upstream_timeout: 10s
  stream_idle_timeout: 10s
${limits}
providers:
  - name: openai
    type: openai
    base_url: ${mockUrl}/v1
    keys: ["sk-upstream-secret-0123456789"]
    models: ["gpt-*", "text-embedding-*", "gpt-4o"]
${providerExtra}
${extraProviders}
stages:
${stages}
  - name: accesslog
    plugin: accesslog
    config: { path: access.log }
`;
}

// A Google service account whose tokens the mock's /token endpoint grants:
// serviceKeys() makes its RSA key pair, serviceAccount() the account's JSON.
export function serviceKeys() {
  return crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}

export function serviceAccount(tokenUri, privateKey, email = 'gw@mock-project.iam.gserviceaccount.com') {
  return JSON.stringify({
    type: 'service_account', project_id: 'mock-project', private_key_id: 'k1',
    private_key: privateKey, client_email: email, client_id: '1', token_uri: tokenUri,
  });
}

export { http, spawnSync, path, writeFileSync, readFileSync };
