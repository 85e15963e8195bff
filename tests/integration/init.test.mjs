// `manifold init`: the written config validates, and a gateway started on
// it serves the providers chosen, with and without questions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, startMock, startGateway, post } from './harness.mjs';

let mock, dir;

before(async () => {
  mock = await startMock();
  dir = mkdtempSync(path.join(tmpdir(), 'mf-init-'));
});

after(async () => {
  await mock.stop();
});

function init(args, input) {
  return spawnSync(BIN, ['init', ...args], {
    input, encoding: 'utf8', cwd: dir,
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1' },
  });
}

test('flags: --provider, --key-env, --base-url; validates; serves', async () => {
  const out = path.join(dir, 'flags.yaml');
  const r = init(['-o', out, '--provider', 'openai', '--key-env', 'TEAM_OPENAI_KEY',
    '--provider', 'anthropic', '--base-url', mock.url, '--provider', 'gemini', '--key-env', 'TEAM_GEMINI']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /wrote .*flags\.yaml \(3 providers\)/);
  assert.match(r.stdout, /configuration OK/);
  const text = readFileSync(out, 'utf8');
  assert.match(text, /keys: \["\$\{TEAM_OPENAI_KEY\}"\]/);
  assert.match(text, /base_url: \$\{OPENAI_BASE_URL:-https:\/\/api.openai.com\/v1\}/);
  assert.match(text, /keys: \["\$\{ANTHROPIC_API_KEY\}"\]/);
  assert.equal(statSync(out).mode & 0o777, 0o644);
  // stored Responses answers kept beside the config, across restarts
  assert.match(text, /\nresponse_store:\n  db: responses\.db\n/);

  const gw = await startGateway(text, {
    env: {
      TEAM_OPENAI_KEY: 'sk-team-0123456789', OPENAI_BASE_URL: `${mock.url}/v1`,
      ANTHROPIC_API_KEY: 'sk-ant-0123456789', TEAM_GEMINI: 'AIza-0123456789', GEMINI_BASE_URL: mock.url,
      MANIFOLD_ADMIN_SOCKET: path.join(dir, 'admin.sock'),
    },
  });
  try {
    for (const [model, header, key] of [
      ['gpt-4o', 'authorization', 'Bearer sk-team-0123456789'],
      ['claude-sonnet-4', 'x-api-key', 'sk-ant-0123456789'],
      ['gemini-2.5-flash', 'x-goog-api-key', 'AIza-0123456789'],
    ]) {
      const res = await post(gw, '/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hi' }] });
      assert.equal(res.status, 200, model);
      assert.equal((await res.json()).choices[0].message.content, 'Hello from mock. You said: hi');
      assert.equal((await mock.last()).headers[header], key);
    }
  } finally {
    await gw.stop();
  }
  assert.equal(statSync(path.join(path.dirname(gw.file), 'responses.db')).mode & 0o777, 0o600);
});

test('questions: catalogue shown, numbers and names, a literal key kept private', async () => {
  const out = path.join(dir, 'asked.yaml');
  // providers; anthropic key (literal); anthropic URL (default); bedrock key
  // (default variables); bedrock URL (the mock)
  const r = init(['-o', out], `anthropic, 5\nsk-ant-literal-0123456789\n\n\n${mock.url}\n`);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, / 5  bedrock +Amazon Bedrock/);
  assert.match(r.stderr, /GEMINI_API_KEY/);
  const text = readFileSync(out, 'utf8');
  assert.match(text, /keys: \["sk-ant-literal-0123456789"\]/);
  // the default answer: the catalogue's keys (SigV4, or a Bedrock API key)
  assert.match(text, /keys: \["\$\{AWS_ACCESS_KEY_ID\}:\$\{AWS_SECRET_ACCESS_KEY\}", "\$\{AWS_BEARER_TOKEN_BEDROCK\}"\]/);
  assert.match(text, new RegExp(`base_url: "${mock.url}"`));
  assert.equal(statSync(out).mode & 0o777, 0o600, 'a file with a key in it is 0600');
  assert.match(r.stdout, /configuration OK \(1 providers enabled/);

  const gw = await startGateway(text, {
    env: { AWS_ACCESS_KEY_ID: 'AKIDMOCK9', AWS_SECRET_ACCESS_KEY: 'mock/secret/AKIDMOCK9', MANIFOLD_ADMIN_SOCKET: path.join(dir, 'admin2.sock') },
  });
  try {
    const res = await post(gw, '/v1/chat/completions', { model: 'bedrock/meta.llama3-8b-instruct-v1:0', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(res.status, 200);
    assert.equal((await mock.last()).path, '/model/meta.llama3-8b-instruct-v1%3A0/converse');
  } finally {
    await gw.stop();
  }
});

test('refusals: unknown provider, misplaced flags, bad values, existing file', () => {
  let r = init(['-o', path.join(dir, 'x.yaml'), '--provider', 'nope']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /no provider 'nope' in the catalogue/);
  assert.match(r.stderr, /openai/);
  r = init(['--key-env', 'X']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--key-env belongs after a --provider/);
  r = init(['--provider', 'openai', '--key-env', 'sk-not-a-var']);
  assert.equal(r.status, 2);
  r = init(['--provider', 'openai', '--base-url', 'ftp://x']);
  assert.equal(r.status, 2);
  const out = path.join(dir, 'exists.yaml');
  writeFileSync(out, 'keep me');
  r = init(['-o', out, '--provider', 'openai']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--force overwrites it/);
  assert.equal(readFileSync(out, 'utf8'), 'keep me');
  r = init(['-o', out, '--force', '--provider', 'openai']);
  assert.equal(r.status, 0, r.stderr);
  r = init(['-o', path.join(dir, 'none.yaml')], 'nope\n');
  assert.equal(r.status, 2);
});
