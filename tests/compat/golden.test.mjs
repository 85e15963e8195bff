// Golden translation tests for the translating providers (anthropic,
// gemini, bedrock): the exact canonical output of a non-stream answer, a
// text stream and a tool-call stream (every chunk, `created` aside), and
// every upstream error status to the exact status, type, code and message
// the client gets. The upstream requests are checked exactly in each
// provider's own test file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, config, post, sseEvents } from '../integration/harness.mjs';

let mock, gw;
const STATUSES = [400, 401, 403, 404, 429, 500, 503];
const PROVIDERS = {
  anthropic: { model: 'claude-sonnet-4', key: (s) => `sk-ant-${s}-0123456789`, url: (u) => u },
  gemini: { model: 'gemini-2.5-flash', key: (s) => `AIza-${s}-0123456789`, url: (u) => u },
  bedrock: { model: 'anthropic.claude-3-5-haiku-20241022-v1:0', key: (s) => `AKID${s}:mock/secret/AKID${s}`, url: (u) => u },
};

before(async () => {
  mock = await startMock();
  let extra = '';
  for (const [type, p] of Object.entries(PROVIDERS)) {
    for (const s of ['main', ...STATUSES]) {
      // one provider (and key) per case: a 401 disables its key, a 429 rests it
      extra += `
  - name: ${type}-${s}
    type: ${type}
    base_url: ${p.url(mock.url)}
    keys: ["${p.key(s)}"]
    models: ["${type}-${s}"]
    model_map: { "${type}-${s}": "${p.model}" }`;
    }
  }
  gw = await startGateway(config(mock.url, { extraProviders: extra }));
});

after(async () => {
  await gw.stop();
  await mock.stop();
});

const strip = (o) => { delete o.created; return o; };
const TOOL = [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] } } }];

const expected = {
  anthropic: { id: 'msg_mock_1', cached: 3, toolId: 'toolu_mock_1', model: 'claude-sonnet-4' },
  gemini: { id: 'chatcmpl-resp-mock-1', cached: 2, model: 'gemini-2.5-flash' },
  bedrock: { id: 'chatcmpl-5e6f7a8b-0000-4000-8000-mockrequest1', cached: 4, toolId: 'tooluse_mock_1', model: 'anthropic.claude-3-5-haiku-20241022-v1:0' },
};

for (const type of Object.keys(PROVIDERS)) {
  const e = expected[type];
  const chunk = (delta, finish = null) => ({
    id: e.id, object: 'chat.completion.chunk', model: e.model,
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
  });

  test(`${type}: non-stream answer, exactly`, async () => {
    const res = await post(gw, '/v1/chat/completions', { model: `${type}-main`, messages: [{ role: 'user', content: 'golden' }] });
    assert.equal(res.status, 200);
    const body = strip(await res.json());
    const u = body.usage;
    assert.deepEqual(body, {
      id: e.id, object: 'chat.completion', model: e.model,
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hello from mock. You said: golden', refusal: null }, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.prompt_tokens + u.completion_tokens, prompt_tokens_details: { cached_tokens: e.cached } },
    });
    assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0);
  });

  test(`${type}: text stream, every chunk`, async () => {
    const res = await post(gw, '/v1/chat/completions', {
      model: `${type}-main`, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'two words' }],
    });
    const events = await sseEvents(res);
    assert.equal(events.at(-1), '[DONE]');
    const got = events.slice(0, -1).map((d) => strip(JSON.parse(d)));
    const usage = got.at(-1).usage;
    const words = ['Hello', ' from', ' mock.', ' You', ' said:', ' two', ' words'];
    const want = type === 'gemini'
      ? [chunk({ role: 'assistant', content: words[0] }), ...words.slice(1).map((w) => chunk({ content: w }))]
      : [chunk({ role: 'assistant', content: '' }), ...words.map((w) => chunk({ content: w }))];
    want.push(chunk({}, 'stop'));
    want.push({ id: e.id, object: 'chat.completion.chunk', model: e.model, choices: [], usage: {
      prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens,
      total_tokens: usage.prompt_tokens + usage.completion_tokens, prompt_tokens_details: { cached_tokens: e.cached },
    } });
    assert.deepEqual(got, want);
  });

  test(`${type}: tool-call stream, every chunk`, async () => {
    const res = await post(gw, '/v1/chat/completions', {
      model: `${type}-main`, stream: true, tools: TOOL, messages: [{ role: 'user', content: 'call' }],
    });
    const events = await sseEvents(res);
    assert.equal(events.at(-1), '[DONE]');
    const got = events.slice(0, -1).map((d) => strip(JSON.parse(d)));
    let want;
    if (type === 'gemini') {
      // Gemini sends a call whole; its id carries the thought signature
      const id = got[0].choices[0].delta.tool_calls[0].id;
      assert.match(id, /^call_[a-z0-9]{16}__ts__c2lnLW1vY2s$/);
      want = [
        chunk({ role: 'assistant', content: '', tool_calls: [{ id, type: 'function', function: { name: 'f', arguments: '{"q":"mock"}' }, index: 0 }] }),
        chunk({}, 'tool_calls'),
      ];
    } else {
      want = [
        chunk({ role: 'assistant', content: '' }),
        chunk({ tool_calls: [{ index: 0, id: e.toolId, type: 'function', function: { name: 'f', arguments: '' } }] }),
        chunk({ tool_calls: [{ index: 0, function: { arguments: '{"q":"' } }] }),
        chunk({ tool_calls: [{ index: 0, function: { arguments: 'mock"}' } }] }),
        chunk({}, 'tool_calls'),
      ];
    }
    assert.deepEqual(got, want);
  });
}

// upstream status -> [client status, type, code, message after "provider 'NAME' answered "]
const errors = {
  anthropic: {
    400: [400, 'invalid_request_error', null, '400: mock error 400'],
    401: [502, 'upstream_error', 'upstream_auth_failed', "401: the provider refused the gateway's key"],
    403: [502, 'upstream_error', 'upstream_auth_failed', "403: the provider refused the gateway's key"],
    404: [404, 'invalid_request_error', null, '404: mock error 404'],
    429: [429, 'rate_limit_error', null, '429: mock error 429'],
    500: [502, 'upstream_error', null, '500: mock error 500'],
    503: [502, 'upstream_error', null, '503: mock error 503'],
  },
  gemini: {
    400: [400, 'invalid_request_error', null, '400 INVALID_ARGUMENT: mock error 400'],
    401: [502, 'upstream_error', 'upstream_auth_failed', "401 UNAUTHENTICATED: the provider refused the gateway's credentials"],
    403: [502, 'upstream_error', 'upstream_auth_failed', "403 PERMISSION_DENIED: the provider refused the gateway's credentials"],
    404: [404, 'invalid_request_error', 'model_not_found', '404 NOT_FOUND: mock error 404'],
    429: [429, 'rate_limit_error', null, '429 RESOURCE_EXHAUSTED: mock error 429'],
    500: [502, 'upstream_error', null, '500 INTERNAL: mock error 500'],
    503: [503, 'upstream_error', 'upstream_overloaded', '503 UNAVAILABLE: mock error 503'],
  },
  bedrock: {
    400: [400, 'invalid_request_error', null, '400 ValidationException: mock error 400'],
    401: [502, 'upstream_error', 'upstream_auth_failed', "401 UnrecognizedClientException: the provider refused the gateway's credentials"],
    403: [502, 'upstream_error', 'upstream_auth_failed', "403 AccessDeniedException: the provider refused the gateway's credentials"],
    404: [404, 'invalid_request_error', 'model_not_found', '404 ResourceNotFoundException: mock error 404'],
    429: [429, 'rate_limit_error', null, '429 ThrottlingException: mock error 429'],
    500: [502, 'upstream_error', null, '500 InternalServerException: mock error 500'],
    503: [503, 'upstream_error', 'upstream_overloaded', '503 ServiceUnavailableException: mock error 503'],
  },
};

for (const type of Object.keys(PROVIDERS)) {
  test(`${type}: every error status to the client's status, type, code and message`, async () => {
    for (const s of STATUSES) {
      const res = await post(gw, '/v1/chat/completions', {
        model: `${type}-${s}`, messages: [{ role: 'user', content: `x [[mock:status=${s}]]` }],
      });
      const [status, etype, code, msg] = errors[type][s];
      const body = await res.json();
      assert.deepEqual({ status: res.status, error: body.error }, {
        status, error: { message: `provider '${type}-${s}' answered ${msg}`, type: etype, code, param: null },
      }, `${type} ${s}`);
    }
  });
}
