/*
 * mf-mock: a mock LLM upstream speaking OpenAI's wire format (chat, stream
 * and non-stream, usage, tool calls, embeddings float and base64, models),
 * with failure injection for tests:
 *
 *  - status by key or model: a bearer key or model name containing
 *    "status-NNN" is answered NNN with an OpenAI error body;
 *  - directives in the last user message, [[mock:NAME=VALUE ...]]:
 *      status=NNN        answer NNN
 *      retry_after=S     Retry-After on an error
 *      delay=MS          wait before the first byte
 *      chunk_delay=MS    wait between stream chunks
 *      chunks=N          number of content chunks (stream)
 *      cut=N             close the connection after N chunks (stream) or in
 *                        the middle of the body (non-stream)
 *      filter            answer 400 as Azure's content filter does
 *      hang              never answer
 *      cutfirst          (stream) send the head, then close before any event
 *      stall             (stream) send the head, then nothing
 *      garbage           answer 200 with a body that is not JSON (or a
 *                        stream event that is not JSON)
 *      halfjson          (stream) an event whose JSON object is cut short
 *      reply=TEXT        the reply text (underscores become spaces)
 *      drip=MS           send the body one byte at a time, MS apart (the
 *                        head at once), in every wire format
 *      drip_after=N      (stream, with drip) the first N events whole
 *      big=N             (non-stream chat) a reply of N bytes ("a"...)
 *    Without reply=, a chat asking for a JSON schema with a string enum
 *    property (response_format json_schema) is answered {"prop": value},
 *    the first enum value found in the last user message, else the
 *    last one (a classifier following its schema);
 *      chunk_bytes=N     (stream, with chunks) each chunk N bytes ("a"...)
 *      split=N           (stream) the reply text (and a tool call's
 *                        arguments) in pieces of N characters, one event
 *                        each (1: one character per event)
 *      echo_args         a tool call's arguments carry the user's text
 *                        ({"<first required parameter>": "<text>"})
 *      cache_write=N     (anthropic) report N cache_creation_input_tokens
 *    The same directives in the model name ("gpt-4o[[mock:hang]]") apply
 *    to every request for that model (a gateway's model_map can point one
 *    route target at a failing "model").
 *  - a bearer key containing "retry-after-S" adds Retry-After: S to its
 *    error answers;
 *  - POST /v1/messages speaks Anthropic's Messages API the same way
 *    (x-api-key, required max_tokens, text and tool_use blocks, the
 *    event stream: message_start, ping, content_block_start/delta/stop,
 *    message_delta, message_stop; Anthropic's error shape); with
 *    `thinking` on, a thinking block first (signed with a hash of its
 *    text; streamed with thinking and signature deltas) and a
 *    redacted_thinking block when the user text holds "redacted"; a
 *    thinking block whose signature it did not make, and a tool_result
 *    turn whose assistant turn does not start with its thinking, are a
 *    400 as on Anthropic's API;
 *  - Gemini (generateContent, streamGenerateContent?alt=sse,
 *    batchEmbedContents; Vertex AI paths and :predict; an OAuth token
 *    endpoint at /token) in mock_gemini.c, Bedrock (Converse,
 *    ConverseStream in AWS event-stream framing, InvokeModel embeddings)
 *    in mock_bedrock.c, with the same directives;
 *  - Claude on Vertex AI: POST .../publishers/anthropic/models/M:rawPredict
 *    and :streamRawPredict answer as /v1/messages does, after checking a
 *    Vertex access token and the body Vertex takes (no model,
 *    anthropic_version vertex-2023-10-16); count-tokens:rawPredict counts;
 *  - token counting: POST /v1/messages/count_tokens, :countTokens (Google
 *    AI and Vertex AI) and Bedrock's /model/ID/count-tokens check the
 *    body their service takes and answer 1000 + the number of turns;
 *  - POST /v1/responses speaks OpenAI's Responses API, whole and as its
 *    response.* event stream (mock_responses.c), with the same directives;
 *  - embeddings: 8 numbers from a hash of each input; a model whose name
 *    holds "bow" gives 64, the input's bag of words (texts sharing words
 *    are near);
 *  - POST /v1/moderations answers in OpenAI's moderation format, one
 *    result per input: flagged when the text holds "mock-flag-CATEGORY"
 *    (violence, hate, harassment, self-harm, sexual); the directives
 *    in the input (delay, hang, status) apply;
 *  - GET .../models lists mock-model, mock-model-large and other-model
 *    (OpenAI's and Anthropic's shape), GET .../v1beta/models
 *    gemini-mock-pro, gemini-mock-flash and text-mock-embed (Gemini's);
 *  - GET /_mock/last: the last request seen (path, headers, body);
 *    GET /_mock/requests: the last 64;
 *    GET /_mock/count: requests seen;
 *    POST /_mock/mode {"status": 429, "retry_after": 1}: answer every
 *    request with that status from now on ({"status": 0} ends it);
 *    with "body": "TEXT" (and "headers": {"Name": "value"}), every
 *    request but the OAuth token's is answered with exactly that body and
 *    those headers, "{key}" in TEXT replaced by the request's credential
 *    (an upstream echoing the key it was sent).
 *
 * Usage: mf-mock [--port N] (0 = pick one; the port is printed on stdout).
 */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <sys/queue.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

struct event_base *base;
static json_t *last_request;
static json_t *history; /* the last 64 requests, oldest first */
static long request_count;
static int mode_status; /* POST /_mock/mode: answer everything with this */
static int mode_retry_after;
static json_t *mode_reply; /* POST /_mock/mode with "body": scripted */

typedef struct stream_s {
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    struct event *timer;
    json_t *parts; /* strings: content pieces */
    json_t *tool;  /* tool call to stream, or NULL */
    size_t next;
    int phase; /* 0 role, 1 content, 2 finish, 3 usage, 4 done */
    int usage;
    int prompt_tokens;
    char model[128];
    char id[64];
    directives_t d;
    int sent;
    int gone;
    int cutting;
    int tool_started; /* split tool call: its first event went out */
} stream_t;

/* Appends text to arr in pieces of n UTF-8 characters. */
static void
split_text(const char *text, int n, json_t *arr)
{
    const unsigned char *p = (const unsigned char *)text, *start = p;
    int count = 0;

    while (*p) {
        p++;
        while ((*p & 0xC0) == 0x80) {
            p++; /* the rest of a multi-byte character */
        }
        if (++count == n) {
            json_array_append_new(
                arr, json_stringn((const char *)start, (size_t)(p - start)));
            start = p;
            count = 0;
        }
    }
    if (p > start) {
        json_array_append_new(
            arr, json_stringn((const char *)start, (size_t)(p - start)));
    }
}

void
parse_directives(const char *text, directives_t *d)
{
    const char *p = text;

    while (p && (p = strstr(p, "[[mock:")) != NULL) {
        const char *end = strstr(p, "]]");
        char buf[600], *tok, *save = NULL;
        size_t n;

        if (end == NULL) {
            break;
        }
        n = (size_t)(end - p - 7);
        if (n >= sizeof(buf)) {
            n = sizeof(buf) - 1;
        }
        memcpy(buf, p + 7, n);
        buf[n] = '\0';
        for (tok = strtok_r(buf, " ", &save); tok;
             tok = strtok_r(NULL, " ", &save)) {
            char *eq = strchr(tok, '=');
            int v = eq ? atoi(eq + 1) : 0;

            if (strncmp(tok, "status=", 7) == 0) {
                d->status = v;
            } else if (strncmp(tok, "retry_after=", 12) == 0) {
                d->retry_after = v;
            } else if (strncmp(tok, "delay=", 6) == 0) {
                d->delay = v;
            } else if (strncmp(tok, "chunk_delay=", 12) == 0) {
                d->chunk_delay = v;
            } else if (strncmp(tok, "chunks=", 7) == 0) {
                d->chunks = v;
            } else if (strncmp(tok, "cut=", 4) == 0) {
                d->cut = v;
            } else if (strncmp(tok, "cache_write=", 12) == 0) {
                d->cache_write = v;
            } else if (strcmp(tok, "filter") == 0) {
                d->filter = 1;
            } else if (strcmp(tok, "cutfirst") == 0) {
                d->cutfirst = 1;
            } else if (strcmp(tok, "stall") == 0) {
                d->stall = 1;
            } else if (strcmp(tok, "hang") == 0) {
                d->hang = 1;
            } else if (strcmp(tok, "garbage") == 0) {
                d->garbage = 1;
            } else if (strcmp(tok, "halfjson") == 0) {
                d->halfjson = 1;
            } else if (strcmp(tok, "safety") == 0) {
                d->safety = 1;
            } else if (strcmp(tok, "safety_answer") == 0) {
                d->safety_answer = 1;
            } else if (strncmp(tok, "drip=", 5) == 0) {
                d->drip = v;
            } else if (strncmp(tok, "drip_after=", 11) == 0) {
                d->drip_after = v;
            } else if (strncmp(tok, "chunk_bytes=", 12) == 0) {
                d->chunk_bytes = v;
            } else if (strncmp(tok, "split=", 6) == 0) {
                d->split = v;
            } else if (strcmp(tok, "echo_args") == 0) {
                d->echo_args = 1;
            } else if (strncmp(tok, "big=", 4) == 0) {
                d->big = v;
            } else if (strncmp(tok, "exception=", 10) == 0) {
                d->exception = v;
            } else if (strncmp(tok, "reply=", 6) == 0) {
                char *c;

                snprintf(d->reply, sizeof(d->reply), "%s", eq + 1);
                for (c = d->reply; *c; c++) {
                    if (*c == '_') {
                        *c = ' ';
                    }
                }
            }
        }
        p = end + 2;
    }
}

static int
status_in(const char *s)
{
    const char *p = s ? strstr(s, "status-") : NULL;

    return p ? atoi(p + 7) : 0;
}

/* Text of the last user message (string or text parts). */
static const char *
last_user_text(json_t *body, char *buf, size_t cap)
{
    json_t *msgs = json_object_get(body, "messages");
    size_t i = json_array_size(msgs);

    buf[0] = '\0';
    while (i-- > 0) {
        json_t *m = json_array_get(msgs, i), *c;
        const char *role = json_string_value(json_object_get(m, "role"));

        if (role == NULL || strcmp(role, "user") != 0) {
            continue;
        }
        c = json_object_get(m, "content");
        if (json_is_string(c)) {
            snprintf(buf, cap, "%s", json_string_value(c));
        } else if (json_is_array(c)) {
            size_t k;
            json_t *part;

            json_array_foreach(c, k, part)
            {
                const char *t =
                    json_string_value(json_object_get(part, "text"));

                if (t) {
                    size_t l = strlen(buf);

                    snprintf(buf + l, cap - l, "%s%s", l ? " " : "", t);
                }
            }
        }
        break;
    }
    return buf;
}

static int
count_prompt_tokens(json_t *body)
{
    char *text = json_dumps(json_object_get(body, "messages"), JSON_COMPACT);
    int n = text ? (int)strlen(text) / 4 : 1;

    free(text);
    return n > 0 ? n : 1;
}

void
send_json(struct evhttp_request *req, int status, json_t *j, int retry_after)
{
    struct evbuffer *b = evbuffer_new();
    char *text = json_dumps(j, JSON_COMPACT);

    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    if (retry_after > 0) {
        char v[16];

        snprintf(v, sizeof(v), "%d", retry_after);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                          v);
    }
    evbuffer_add(b, text, strlen(text));
    evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
    free(text);
    json_decref(j);
}

static void
send_error(struct evhttp_request *req, int status, int retry_after)
{
    const char *type = status == 429   ? "rate_limit_error"
                       : status == 401 ? "invalid_request_error"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    char msg[128];

    if (status == 401) {
        snprintf(msg, sizeof(msg),
                 "Incorrect API key provided: "
                 "sk-mock-abcdefghijklmnop. You can find your API key at "
                 "the dashboard.");
    } else {
        snprintf(msg, sizeof(msg), "mock error %d", status);
    }
    send_json(req, status,
              json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg,
                        "type", type, "param", "code",
                        status == 429 ? "rate_limit_exceeded" : "mock_error"),
              retry_after);
}

static json_t *
usage_json(int prompt, int completion)
{
    return json_pack("{s:i,s:i,s:i,s:{s:i},s:{s:i}}", "prompt_tokens", prompt,
                     "completion_tokens", completion, "total_tokens",
                     prompt + completion, "prompt_tokens_details",
                     "cached_tokens", 0, "completion_tokens_details",
                     "reasoning_tokens", 0);
}

/* Picks the tool to call: the first function tool, unless "none". */
static json_t *
pick_tool(json_t *body, const directives_t *d)
{
    json_t *tools = json_object_get(body, "tools"), *choice, *fn, *req;
    const char *name, *param = NULL;
    char args[256];

    choice = json_object_get(body, "tool_choice");
    if (json_array_size(tools) == 0 ||
        (json_is_string(choice) &&
         strcmp(json_string_value(choice), "none") == 0)) {
        return NULL;
    }
    fn = json_object_get(json_array_get(tools, 0), "function");
    name = json_string_value(json_object_get(fn, "name"));
    if (name == NULL) {
        return NULL;
    }
    req = json_object_get(json_object_get(fn, "parameters"), "required");
    if (json_array_size(req) > 0) {
        param = json_string_value(json_array_get(req, 0));
    }
    if (param && d->echo_args) {
        char user[1024], *t;
        json_t *a, *tool;

        last_user_text(body, user, sizeof(user));
        strip_directives(user);
        a = json_pack("{s:s}", param, user);
        t = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        tool = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", "call_mock_1", "type",
                         "function", "function", "name", name, "arguments", t);
        free(t);
        return tool;
    }
    if (param) {
        snprintf(args, sizeof(args), "{\"%s\":\"mock\"}", param);
    } else {
        snprintf(args, sizeof(args), "{}");
    }
    return json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", "call_mock_1", "type",
                     "function", "function", "name", name, "arguments", args);
}

/* A request asking for a JSON schema with a string enum property (a
 * classifier's constrained label) is answered as a model following the
 * schema would: {"<property>": "<value>"}, the value the first of the
 * enum (in its order) found in the last user message, case-insensitively,
 * else the enum's last. 0 when the request asks for no such schema. */
static int
schema_reply(json_t *body, const char *user, char *out, size_t cap)
{
    json_t *props = json_object_get(
        json_object_get(
            json_object_get(json_object_get(body, "response_format"),
                            "json_schema"),
            "schema"),
        "properties");
    const char *key, *pick = NULL;
    json_t *p, *e, *v;
    size_t i;
    char *lower = strdup(user), *c;

    for (c = lower; c && *c; c++) {
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    }
    json_object_foreach(props, key, p)
    {
        e = json_object_get(p, "enum");
        if (json_array_size(e) == 0) {
            continue;
        }
        json_array_foreach(e, i, v)
        {
            if (json_is_string(v) && pick == NULL && lower &&
                strstr(lower, json_string_value(v)) != NULL) {
                pick = json_string_value(v);
            }
        }
        if (pick == NULL) {
            pick = json_string_value(json_array_get(e, json_array_size(e) - 1));
        }
        if (pick != NULL) {
            json_t *o = json_pack("{s:s}", key, pick);
            char *t = json_dumps(o, JSON_COMPACT);

            snprintf(out, cap, "%s", t ? t : "{}");
            free(t);
            json_decref(o);
            free(lower);
            return 1;
        }
    }
    free(lower);
    return 0;
}

static void
reply_text(json_t *body, const directives_t *d, char *out, size_t cap)
{
    char user[1024];

    if (d->reply[0]) {
        snprintf(out, cap, "%s", d->reply);
        return;
    }
    last_user_text(body, user, sizeof(user));
    if (schema_reply(body, user, out, cap)) {
        return;
    }
    strip_directives(user); /* drop directives from the echo */
    snprintf(out, cap, "Hello from mock. You said: %.200s", user);
}

void
strip_directives(char *text)
{
    char *p;

    while ((p = strstr(text, "[[mock:")) != NULL) {
        char *e = strstr(p, "]]");

        if (e == NULL) {
            *p = '\0';
            break;
        }
        memmove(p, e + 2, strlen(e + 2) + 1);
    }
}

/* Streaming */

static void stream_step(evutil_socket_t fd, short what, void *arg);

/* Dripping bodies */

typedef struct drip_s {
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    struct event *timer;
    struct evbuffer *rest;
    int ms;
    int gone;
} drip_t;

static void
drip_free(drip_t *dr)
{
    event_free(dr->timer);
    evbuffer_free(dr->rest);
    free(dr);
}

static void
drip_closed(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    ((drip_t *)arg)->gone = 1;
}

static void
drip_step(evutil_socket_t fd, short what, void *arg)
{
    drip_t *dr = arg;
    struct timeval tv = {dr->ms / 1000, (dr->ms % 1000) * 1000};
    struct evbuffer *b;

    (void)fd;
    (void)what;
    if (dr->gone) {
        drip_free(dr);
        return;
    }
    if (evbuffer_get_length(dr->rest) == 0) {
        evhttp_connection_set_closecb(dr->conn, NULL, NULL);
        evhttp_send_reply_end(dr->req);
        drip_free(dr);
        return;
    }
    b = evbuffer_new();
    evbuffer_remove_buffer(dr->rest, b, 1);
    evhttp_send_reply_chunk(dr->req, b);
    evbuffer_free(b);
    evtimer_add(dr->timer, &tv);
}

void
drip_send(struct evhttp_request *req, const char *content_type,
          struct evbuffer *body, size_t whole, int ms)
{
    drip_t *dr = calloc(1, sizeof(*dr));

    dr->req = req;
    dr->conn = evhttp_request_get_connection(req);
    dr->rest = body;
    dr->ms = ms;
    dr->timer = evtimer_new(base, drip_step, dr);
    evhttp_connection_set_closecb(dr->conn, drip_closed, dr);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      content_type);
    evhttp_send_reply_start(req, 200, "OK");
    if (whole > 0) {
        struct evbuffer *b = evbuffer_new();

        evbuffer_remove_buffer(body, b, whole);
        evhttp_send_reply_chunk(req, b);
        evbuffer_free(b);
    }
    event_active(dr->timer, EV_TIMEOUT, 0);
}

/* Appends one OpenAI stream event; takes chunk. */
static void
event_text(struct evbuffer *b, json_t *chunk)
{
    char *text = json_dumps(chunk, JSON_COMPACT);

    evbuffer_add_printf(b, "data: %s\n\n", text);
    free(text);
    json_decref(chunk);
}

static void
stream_free(stream_t *s)
{
    if (s->conn && !s->gone) {
        evhttp_connection_set_closecb(s->conn, NULL, NULL);
    }
    event_free(s->timer);
    json_decref(s->parts);
    json_decref(s->tool);
    free(s);
}

static void
stream_closed(struct evhttp_connection *conn, void *arg)
{
    stream_t *s = arg;

    (void)conn;
    s->gone = 1;
}

static void
send_event(stream_t *s, json_t *chunk)
{
    struct evbuffer *b = evbuffer_new();
    char *text = json_dumps(chunk, JSON_COMPACT);

    evbuffer_add_printf(b, "data: %s\n\n", text);
    evhttp_send_reply_chunk(s->req, b);
    evbuffer_free(b);
    free(text);
    json_decref(chunk);
    s->sent++;
}

static json_t *
chunk_base(stream_t *s, json_t *delta, const char *finish)
{
    json_t *c = json_pack(
        "{s:s,s:s,s:i,s:s,s:[{s:i,s:o,s:o,s:n}]}", "id", s->id, "object",
        "chat.completion.chunk", "created", 1700000000, "model", s->model,
        "choices", "index", 0, "delta", delta, "finish_reason",
        finish ? json_string(finish) : json_null(), "logprobs");

    if (s->usage) {
        json_object_set_new(c, "usage", json_null());
    }
    return c;
}

static void
stream_step(evutil_socket_t fd, short what, void *arg)
{
    stream_t *s = arg;
    struct timeval tv = {s->d.chunk_delay / 1000,
                         (s->d.chunk_delay % 1000) * 1000};

    (void)fd;
    (void)what;
    if (s->gone) {
        stream_free(s);
        return;
    }
    if (s->d.stall) {
        return; /* the head went out; nothing else will */
    }
    if ((s->d.cut > 0 && s->sent >= s->d.cut) || s->d.cutfirst) {
        struct evhttp_connection *conn = s->conn;

        if (!s->cutting) {
            /* let what was sent go out before the close */
            struct timeval soon = {0, 20000};

            s->cutting = 1;
            evtimer_add(s->timer, &soon);
            return;
        }
        s->gone = 1;
        evhttp_connection_set_closecb(conn, NULL, NULL);
        stream_free(s);
        evhttp_connection_free(conn);
        return;
    }
    if ((s->d.garbage || s->d.halfjson) && s->sent == 1) {
        struct evbuffer *b = evbuffer_new();

        evbuffer_add_printf(b, s->d.halfjson
                                   ? "data: {\"choices\":[{\"index\":0,"
                                     "\"delta\":{\"content\":\"cut sh\n\n"
                                   : "data: this is not json\n\n");
        evhttp_send_reply_chunk(s->req, b);
        evbuffer_free(b);
        s->sent++;
    }
    switch (s->phase) {
    case 0:
        send_event(s, chunk_base(s,
                                 json_pack("{s:s,s:s,s:n}", "role", "assistant",
                                           "content", "", "refusal"),
                                 NULL));
        s->phase = 1;
        break;
    case 1:
        if (s->tool && s->d.split > 0) {
            json_t *fnj = json_object_get(s->tool, "function");

            if (!s->tool_started) {
                s->tool_started = 1;
                send_event(
                    s, chunk_base(
                           s,
                           json_pack(
                               "{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls",
                               "index", 0, "id", "call_mock_1", "type",
                               "function", "function", "name",
                               json_string_value(json_object_get(fnj, "name")),
                               "arguments", ""),
                           NULL));
                break;
            }
            if (s->next < json_array_size(s->parts)) {
                send_event(
                    s, chunk_base(s,
                                  json_pack("{s:[{s:i,s:{s:O}}]}", "tool_calls",
                                            "index", 0, "function", "arguments",
                                            json_array_get(s->parts, s->next)),
                                  NULL));
                s->next++;
            }
            if (s->next >= json_array_size(s->parts)) {
                s->phase = 2;
            }
            break;
        }
        if (s->tool) {
            json_t *fnj = json_object_get(s->tool, "function");
            const char *args =
                json_string_value(json_object_get(fnj, "arguments"));
            size_t half = strlen(args) / 2;
            char first[256];

            snprintf(first, sizeof(first), "%.*s", (int)half, args);
            send_event(
                s,
                chunk_base(
                    s,
                    json_pack("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls",
                              "index", 0, "id", "call_mock_1", "type",
                              "function", "function", "name",
                              json_string_value(json_object_get(fnj, "name")),
                              "arguments", first),
                    NULL));
            send_event(s,
                       chunk_base(s,
                                  json_pack("{s:[{s:i,s:{s:s}}]}", "tool_calls",
                                            "index", 0, "function", "arguments",
                                            args + half),
                                  NULL));
            s->phase = 2;
            break;
        }
        if (s->next < json_array_size(s->parts)) {
            send_event(s,
                       chunk_base(s,
                                  json_pack("{s:O}", "content",
                                            json_array_get(s->parts, s->next)),
                                  NULL));
            s->next++;
            if (s->next == json_array_size(s->parts)) {
                s->phase = 2;
            }
        } else {
            s->phase = 2;
        }
        break;
    case 2:
        send_event(
            s, chunk_base(s, json_object(), s->tool ? "tool_calls" : "stop"));
        s->phase = s->usage ? 3 : 4;
        break;
    case 3: {
        json_t *c = json_pack("{s:s,s:s,s:i,s:s,s:[]}", "id", s->id, "object",
                              "chat.completion.chunk", "created", 1700000000,
                              "model", s->model, "choices");

        json_object_set_new(
            c, "usage",
            usage_json(s->prompt_tokens,
                       s->tool ? 2 : (int)json_array_size(s->parts)));
        send_event(s, c);
        s->phase = 4;
        break;
    }
    default: {
        struct evbuffer *b = evbuffer_new();

        evbuffer_add_printf(b, "data: [DONE]\n\n");
        evhttp_send_reply_chunk(s->req, b);
        evbuffer_free(b);
        evhttp_send_reply_end(s->req);
        stream_free(s);
        return;
    }
    }
    if (s->d.chunk_delay > 0) {
        evtimer_add(s->timer, &tv);
    } else {
        event_active(s->timer, EV_TIMEOUT, 0);
    }
}

static void
start_stream(struct evhttp_request *req, json_t *body, const directives_t *d,
             const char *model)
{
    stream_t *s = calloc(1, sizeof(*s));
    char text[1024], *save = NULL, *w;
    int i;

    s->req = req;
    s->conn = evhttp_request_get_connection(req);
    s->d = *d;
    s->timer = evtimer_new(base, stream_step, s);
    s->parts = json_array();
    s->tool = pick_tool(body, d);
    s->usage = json_is_true(json_object_get(
        json_object_get(body, "stream_options"), "include_usage"));
    s->prompt_tokens = count_prompt_tokens(body);
    snprintf(s->model, sizeof(s->model), "%s", model);
    snprintf(s->id, sizeof(s->id), "chatcmpl-mock%ld", request_count);
    if (d->chunks > 0) {
        for (i = 0; i < d->chunks; i++) {
            if (d->chunk_bytes > 0) {
                char *big = malloc((size_t)d->chunk_bytes + 1);

                memset(big, 'a', (size_t)d->chunk_bytes);
                big[d->chunk_bytes] = '\0';
                json_array_append_new(s->parts, json_string(big));
                free(big);
                continue;
            }
            json_array_append_new(s->parts, json_string(i ? " tok" : "tok"));
        }
    } else if (d->split > 0 && s->tool != NULL) {
        split_text(json_string_value(json_object_get(
                       json_object_get(s->tool, "function"), "arguments")),
                   d->split, s->parts);
    } else if (d->split > 0) {
        reply_text(body, d, text, sizeof(text));
        split_text(text, d->split, s->parts);
    } else {
        reply_text(body, d, text, sizeof(text));
        for (w = strtok_r(text, " ", &save), i = 0; w;
             w = strtok_r(NULL, " ", &save), i++) {
            char piece[600];

            snprintf(piece, sizeof(piece), "%s%s", i ? " " : "", w);
            json_array_append_new(s->parts, json_string(piece));
        }
    }
    if (d->drip > 0) {
        /* the same events, as text, dripped */
        struct evbuffer *b = evbuffer_new();
        size_t whole = 0, k, n = json_array_size(s->parts);

        for (k = 0; k < n + 2; k++) {
            if ((int)k == d->drip_after) {
                whole = evbuffer_get_length(b);
            }
            event_text(
                b, k == 0 ? chunk_base(s,
                                       json_pack("{s:s,s:s}", "role",
                                                 "assistant", "content", ""),
                                       NULL)
                   : k <= n
                       ? chunk_base(s,
                                    json_pack("{s:O}", "content",
                                              json_array_get(s->parts, k - 1)),
                                    NULL)
                       : chunk_base(s, json_object(), "stop"));
        }
        if (d->drip_after >= (int)n + 2) {
            whole = evbuffer_get_length(b);
        }
        evbuffer_add_printf(b, "data: [DONE]\n\n");
        stream_free(s);
        drip_send(req, "text/event-stream; charset=utf-8", b, whole, d->drip);
        return;
    }
    evhttp_connection_set_closecb(s->conn, stream_closed, s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/event-stream; charset=utf-8");
    evhttp_send_reply_start(req, 200, "OK");
    event_active(s->timer, EV_TIMEOUT, 0);
}

/* Framed streams (Gemini SSE, Bedrock event stream) */

typedef struct frame_s {
    char *data;
    size_t len;
} frame_t;

struct frames_s {
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    struct event *timer;
    frame_t *v;
    size_t n, cap, next;
    directives_t d;
    int gone;
};

frames_t *
frames_new(void)
{
    return calloc(1, sizeof(frames_t));
}

void
frames_add(frames_t *f, const void *data, size_t len)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 16;
        f->v = realloc(f->v, f->cap * sizeof(*f->v));
    }
    f->v[f->n].data = malloc(len ? len : 1);
    memcpy(f->v[f->n].data, data, len);
    f->v[f->n].len = len;
    f->n++;
}

static void
frames_free(frames_t *f)
{
    size_t i;

    for (i = 0; i < f->n; i++) {
        free(f->v[i].data);
    }
    free(f->v);
    if (f->timer) {
        event_free(f->timer);
    }
    free(f);
}

static void
frames_closed(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    ((frames_t *)arg)->gone = 1;
}

static void
frames_step(evutil_socket_t fd, short what, void *arg)
{
    frames_t *f = arg;
    struct timeval tv = {f->d.chunk_delay / 1000,
                         (f->d.chunk_delay % 1000) * 1000};
    struct evbuffer *b;

    (void)fd;
    (void)what;
    if (f->gone) {
        frames_free(f);
        return;
    }
    if (f->d.stall) {
        return; /* the head went out; nothing else ever comes */
    }
    if (f->d.cutfirst || (f->d.cut > 0 && (int)f->next >= f->d.cut)) {
        struct evhttp_connection *conn = f->conn;

        evhttp_connection_set_closecb(conn, NULL, NULL);
        frames_free(f);
        evhttp_connection_free(conn);
        return;
    }
    if (f->next >= f->n) {
        evhttp_connection_set_closecb(f->conn, NULL, NULL);
        evhttp_send_reply_end(f->req);
        frames_free(f);
        return;
    }
    b = evbuffer_new();
    evbuffer_add(b, f->v[f->next].data, f->v[f->next].len);
    f->next++;
    evhttp_send_reply_chunk(f->req, b);
    evbuffer_free(b);
    evtimer_add(f->timer, &tv);
}

void
frames_send(struct evhttp_request *req, frames_t *f, const directives_t *d,
            const char *content_type)
{
    if (d->drip > 0) {
        struct evbuffer *b = evbuffer_new();
        size_t whole = 0, k;

        for (k = 0; k < f->n; k++) {
            if ((int)k == d->drip_after) {
                whole = evbuffer_get_length(b);
            }
            evbuffer_add(b, f->v[k].data, f->v[k].len);
        }
        if (d->drip_after >= (int)f->n) {
            whole = evbuffer_get_length(b);
        }
        frames_free(f);
        drip_send(req, content_type, b, whole, d->drip);
        return;
    }
    f->req = req;
    f->conn = evhttp_request_get_connection(req);
    f->d = *d;
    f->timer = evtimer_new(base, frames_step, f);
    evhttp_connection_set_closecb(f->conn, frames_closed, f);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      content_type);
    evhttp_send_reply_start(req, 200, "OK");
    event_active(f->timer, EV_TIMEOUT, 0);
}

/* Non-stream and dispatch */

typedef struct {
    struct evhttp_request *req;
    json_t *body;
    directives_t d;
    struct event *timer;
    int embeddings;
    int moderations;
    int anthropic;
    int gemini;
    int count;     /* a token-counting endpoint */
    int responses; /* OpenAI's Responses API */
    int bedrock;
    int vclaude; /* Claude on Vertex AI (publishers/anthropic) */
    char uri[1024];
    char auth[2048];
} pending_t;

/* Claude on Vertex AI: a Vertex access token, and the Messages body as
 * rawPredict takes it: no `model` (the path names it), anthropic_version
 * "vertex-2023-10-16", `stream` only and always on :streamRawPredict;
 * count-tokens:rawPredict takes the model in the body. Answers the
 * problem (Google's 401, Anthropic's 400) and returns 0, or puts the
 * path's model into the body for answer_anthropic and returns 1. */
static int
vclaude_check(pending_t *p)
{
    const char *m = strstr(p->uri, "/publishers/anthropic/models/") + 29;
    const char *colon = strchr(m, ':'), *problem = NULL;
    const char *ver =
        json_string_value(json_object_get(p->body, "anthropic_version"));
    int stream = strstr(p->uri, ":streamRawPredict") != NULL;
    char *model;

    if (strncmp(p->auth, "Bearer ya29.mock-", 17) != 0) {
        send_json(p->req, 401,
                  json_pack("{s:{s:i,s:s,s:s}}", "error", "code", 401,
                            "message",
                            "Request had invalid authentication credentials.",
                            "status", "UNAUTHENTICATED"),
                  0);
        return 0;
    }
    if (p->count) {
        return 1; /* answer_count checks model and what it refuses */
    }
    if (json_object_get(p->body, "model") != NULL) {
        problem = "model: Extra inputs are not permitted";
    } else if (ver == NULL || strcmp(ver, "vertex-2023-10-16") != 0) {
        problem = "anthropic_version: vertex-2023-10-16 is required";
    } else if (json_is_true(json_object_get(p->body, "stream")) != stream) {
        problem = "stream must be set on streamRawPredict only";
    } else if (colon == NULL || (strcmp(colon, ":rawPredict") != 0 &&
                                 strcmp(colon, ":streamRawPredict") != 0)) {
        problem = "unknown method";
    }
    if (problem != NULL) {
        send_json(p->req, 400,
                  json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error",
                            "type", "invalid_request_error", "message",
                            problem),
                  0);
        return 0;
    }
    model = strndup(m, (size_t)(colon - m));
    {
        char *dec = evhttp_decode_uri(model);

        json_object_set_new(p->body, "model", json_string(dec ? dec : model));
        free(dec);
    }
    free(model);
    return 1;
}

static void
answer_chat(struct evhttp_request *req, json_t *body, const directives_t *d)
{
    const char *model = json_string_value(json_object_get(body, "model"));
    json_t *tool, *msg, *resp;
    char text[1024];
    int prompt = count_prompt_tokens(body), completion;

    if (json_is_true(json_object_get(body, "stream"))) {
        start_stream(req, body, d, model ? model : "mock");
        return;
    }
    if (d->garbage) {
        struct evbuffer *b = evbuffer_new();

        evbuffer_add_printf(b, "<html>502 upstream garbage</html>");
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    tool = pick_tool(body, d);
    if (tool != NULL) {
        msg = json_pack("{s:s,s:n,s:[o],s:n}", "role", "assistant", "content",
                        "tool_calls", tool, "refusal");
        completion = 2;
    } else if (d->big > 0) {
        char *big = malloc((size_t)d->big + 1);

        memset(big, 'a', (size_t)d->big);
        big[d->big] = '\0';
        msg = json_pack("{s:s,s:s,s:n}", "role", "assistant", "content", big,
                        "refusal");
        completion = d->big / 4 + 1;
        free(big);
    } else {
        reply_text(body, d, text, sizeof(text));
        msg = json_pack("{s:s,s:s,s:n}", "role", "assistant", "content", text,
                        "refusal");
        completion = (int)strlen(text) / 4 + 1;
    }
    resp = json_pack(
        "{s:s,s:s,s:i,s:s,s:[{s:i,s:o,s:n,s:s}],s:o,s:s}", "id",
        "chatcmpl-mock", "object", "chat.completion", "created", 1700000000,
        "model", model ? model : "mock", "choices", "index", 0, "message", msg,
        "logprobs", "finish_reason", tool ? "tool_calls" : "stop", "usage",
        usage_json(prompt, completion), "system_fingerprint", "fp_mock");
    if (d->cut > 0) {
        /* promise more than is sent, then close */
        struct evbuffer *b = evbuffer_new();
        char *t = json_dumps(resp, JSON_COMPACT);
        struct evhttp_connection *conn = evhttp_request_get_connection(req);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);

        evbuffer_add_printf(bufferevent_get_output(bev),
                            "HTTP/1.1 200 OK\r\nContent-Type: "
                            "application/json\r\nContent-Length: %zu\r\n\r\n"
                            "%.*s",
                            strlen(t), (int)(strlen(t) / 2), t);
        bufferevent_flush(bev, EV_WRITE, BEV_FLUSH);
        free(t);
        evbuffer_free(b);
        json_decref(resp);
        evhttp_connection_free(conn);
        return;
    }
    if (d->drip > 0) {
        struct evbuffer *b = evbuffer_new();
        char *t = json_dumps(resp, JSON_COMPACT);

        evbuffer_add(b, t, strlen(t));
        free(t);
        json_decref(resp);
        drip_send(req, "application/json", b, 0, d->drip);
        return;
    }
    send_json(req, 200, resp, 0);
}

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *
base64_floats(const float *v, size_t n)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t len = n * 4, i, o = 0;
    char *out = malloc(len / 3 * 4 + 8);
    json_t *s;

    for (i = 0; i + 2 < len; i += 3) {
        out[o++] = b64[p[i] >> 2];
        out[o++] = b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
        out[o++] = b64[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
        out[o++] = b64[p[i + 2] & 63];
    }
    if (i < len) {
        out[o++] = b64[p[i] >> 2];
        if (i + 1 < len) {
            out[o++] = b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
            out[o++] = b64[(p[i + 1] & 15) << 2];
        } else {
            out[o++] = b64[(p[i] & 3) << 4];
            out[o++] = '=';
        }
        out[o++] = '=';
    }
    out[o] = '\0';
    s = json_string(out);
    free(out);
    return s;
}

/* A model named with "bow" embeds a text as its bag of words: each word
 * (letters and digits, lowercased) adds 1 to the dimension its hash
 * picks, so that texts sharing words are near (a deterministic stand-in
 * for semantic similarity). */
static void
bag_of_words(const char *s, float *v, size_t dims)
{
    size_t k;

    for (k = 0; k < dims; k++) {
        v[k] = 0;
    }
    while (*s) {
        uint32_t h = 2166136261u;
        int len = 0;

        while (*s && !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                       (*s >= '0' && *s <= '9'))) {
            s++;
        }
        while ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
               (*s >= '0' && *s <= '9')) {
            char c = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);

            h = (h ^ (unsigned char)c) * 16777619u;
            len++;
            s++;
        }
        if (len > 0) {
            v[h % dims] += 1.0f;
        }
    }
}

/* One moderation result in OpenAI's format for a text: flagged for the
 * categories named by "mock-flag-CATEGORY" in it. */
static json_t *
moderation_result(const char *text)
{
    static const char *const cats[] = {"harassment", "hate", "self-harm",
                                       "sexual", "violence"};
    json_t *c = json_object(), *sc = json_object(), *ty = json_object();
    int flagged = 0;
    size_t i;

    for (i = 0; i < sizeof(cats) / sizeof(cats[0]); i++) {
        char mark[64];
        int hit;

        snprintf(mark, sizeof(mark), "mock-flag-%s", cats[i]);
        hit = text != NULL && strstr(text, mark) != NULL;
        flagged |= hit;
        json_object_set_new(c, cats[i], json_boolean(hit));
        json_object_set_new(sc, cats[i], json_real(hit ? 0.97 : 0.0001));
        json_object_set_new(ty, cats[i], json_pack("[s]", "text"));
    }
    return json_pack("{s:b,s:o,s:o,s:o}", "flagged", flagged, "categories", c,
                     "category_scores", sc, "category_applied_input_types", ty);
}

/* POST /v1/moderations: input a string, strings, or parts with text. */
static void
answer_moderations(struct evhttp_request *req, json_t *body)
{
    json_t *in = json_object_get(body, "input"), *res = json_array(), *v;
    const char *model = json_string_value(json_object_get(body, "model"));
    size_t i;

    if (json_is_string(in)) {
        json_array_append_new(res, moderation_result(json_string_value(in)));
    }
    json_array_foreach(in, i, v)
    {
        json_array_append_new(
            res, moderation_result(
                     json_is_string(v)
                         ? json_string_value(v)
                         : json_string_value(json_object_get(v, "text"))));
    }
    if (json_array_size(res) == 0) {
        json_decref(res);
        send_json(req, 400,
                  json_pack("{s:{s:s,s:s}}", "error", "message",
                            "input is required", "type",
                            "invalid_request_error"),
                  0);
        return;
    }
    send_json(req, 200,
              json_pack("{s:s,s:s,s:o}", "id", "modr-mock", "model",
                        model ? model : "omni-moderation-latest", "results",
                        res),
              0);
}

static void
answer_embeddings(struct evhttp_request *req, json_t *body)
{
    json_t *input = json_object_get(body, "input"), *data = json_array();
    const char *fmt =
        json_string_value(json_object_get(body, "encoding_format"));
    size_t n = json_is_array(input) ? json_array_size(input) : 1, i, k;
    int tokens = 0;

    const char *model = json_string_value(json_object_get(body, "model"));
    int bow = model != NULL && strstr(model, "bow") != NULL;
    size_t dims = bow ? 64 : 8;

    for (i = 0; i < n; i++) {
        json_t *item = json_is_array(input) ? json_array_get(input, i) : input;
        const char *s = json_is_string(item) ? json_string_value(item) : "x";
        uint32_t h = 2166136261u;
        float v[64];

        if (bow) {
            bag_of_words(s, v, dims);
        } else {
            for (k = 0; s[k]; k++) {
                h = (h ^ (unsigned char)s[k]) * 16777619u;
            }
            for (k = 0; k < 8; k++) {
                h = h * 1103515245u + 12345u;
                v[k] = (float)((h >> 8) % 2000) / 1000.0f - 1.0f;
            }
        }
        tokens += (int)strlen(s) / 4 + 1;
        if (fmt && strcmp(fmt, "base64") == 0) {
            json_array_append_new(
                data, json_pack("{s:s,s:i,s:o}", "object", "embedding", "index",
                                (int)i, "embedding", base64_floats(v, dims)));
        } else {
            json_t *arr = json_array();

            for (k = 0; k < dims; k++) {
                json_array_append_new(arr, json_real(v[k]));
            }
            json_array_append_new(data, json_pack("{s:s,s:i,s:o}", "object",
                                                  "embedding", "index", (int)i,
                                                  "embedding", arr));
        }
    }
    send_json(req, 200,
              json_pack("{s:s,s:o,s:O,s:{s:i,s:i}}", "object", "list", "data",
                        data, "model", json_object_get(body, "model"), "usage",
                        "prompt_tokens", tokens, "total_tokens", tokens),
              0);
}

/* Anthropic's Messages API */

typedef struct {
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    struct event *timer;
    json_t *events; /* {event, data} to send, in order */
    size_t next;
    directives_t d;
    int gone;
} astream_t;

static void
anthropic_error(struct evhttp_request *req, int status, int retry_after)
{
    const char *type = status == 400   ? "invalid_request_error"
                       : status == 401 ? "authentication_error"
                       : status == 403 ? "permission_error"
                       : status == 404 ? "not_found_error"
                       : status == 413 ? "request_too_large"
                       : status == 429 ? "rate_limit_error"
                       : status == 529 ? "overloaded_error"
                                       : "api_error";
    char msg[128];

    snprintf(msg, sizeof(msg),
             status == 401 ? "invalid x-api-key sk-ant-mock-secret-1234"
                           : "mock error %d",
             status);
    send_json(req, status,
              json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                        type, "message", msg),
              retry_after);
}

/* The text of the last user turn, and whether it carries a tool result. */
static const char *
anthropic_last_user(json_t *body, char *buf, size_t cap, int *tool_result)
{
    json_t *msgs = json_object_get(body, "messages"), *m, *b;
    size_t i = json_array_size(msgs), k;

    *tool_result = 0;
    buf[0] = '\0';
    while (i-- > 0) {
        m = json_array_get(msgs, i);
        if (strcmp(json_string_value(json_object_get(m, "role")) ?: "",
                   "user") != 0) {
            continue;
        }
        if (json_is_string(json_object_get(m, "content"))) {
            snprintf(buf, cap, "%s",
                     json_string_value(json_object_get(m, "content")));
            return buf;
        }
        json_array_foreach(json_object_get(m, "content"), k, b)
        {
            const char *t = json_string_value(json_object_get(b, "type"));

            if (t && strcmp(t, "text") == 0) {
                snprintf(buf, cap, "%s",
                         json_string_value(json_object_get(b, "text")));
            } else if (t && strcmp(t, "tool_result") == 0) {
                json_t *c = json_object_get(b, "content");

                *tool_result = 1;
                snprintf(buf, cap, "Tool said: %s",
                         json_is_string(c) ? json_string_value(c) : "(blocks)");
            }
        }
        return buf;
    }
    return buf;
}

static json_t *
anthropic_tool(json_t *body)
{
    json_t *tools = json_object_get(body, "tools"), *t, *req;
    const char *choice = json_string_value(
        json_object_get(json_object_get(body, "tool_choice"), "type"));
    const char *param = NULL;

    if (json_array_size(tools) == 0 ||
        (choice && strcmp(choice, "none") == 0)) {
        return NULL;
    }
    t = json_array_get(tools, 0);
    req = json_object_get(json_object_get(t, "input_schema"), "required");
    if (json_array_size(req) > 0) {
        param = json_string_value(json_array_get(req, 0));
    }
    return json_pack("{s:s,s:s,s:O,s:o}", "type", "tool_use", "id",
                     "toolu_mock_1", "name", json_object_get(t, "name"),
                     "input",
                     param ? json_pack("{s:s}", param, "mock") : json_object());
}

static void
astream_free(astream_t *s)
{
    event_free(s->timer);
    json_decref(s->events);
    free(s);
}

static void
astream_closed(struct evhttp_connection *conn, void *arg)
{
    astream_t *s = arg;

    (void)conn;
    s->gone = 1;
}

static void
astream_step(evutil_socket_t fd, short what, void *arg)
{
    astream_t *s = arg;
    struct timeval tv = {s->d.chunk_delay / 1000,
                         (s->d.chunk_delay % 1000) * 1000};
    json_t *e;
    struct evbuffer *b;
    char *data;

    (void)fd;
    (void)what;
    if (s->gone) {
        astream_free(s);
        return;
    }
    if (s->d.cut > 0 && (int)s->next >= s->d.cut) {
        struct evhttp_connection *conn = s->conn;

        evhttp_connection_set_closecb(conn, NULL, NULL);
        astream_free(s);
        evhttp_connection_free(conn);
        return;
    }
    if (s->next >= json_array_size(s->events)) {
        evhttp_connection_set_closecb(s->conn, NULL, NULL);
        evhttp_send_reply_end(s->req);
        astream_free(s);
        return;
    }
    e = json_array_get(s->events, s->next++);
    data = json_dumps(json_object_get(e, "data"), JSON_COMPACT);
    b = evbuffer_new();
    evbuffer_add_printf(b, "event: %s\ndata: %s\n\n",
                        json_string_value(json_object_get(e, "event")), data);
    evhttp_send_reply_chunk(s->req, b);
    evbuffer_free(b);
    free(data);
    evtimer_add(s->timer, &tv);
}

/* The signature the mock gives a thinking block: its text's hash, so
 * that a block changed on its way back is refused, as Anthropic does. */
static void
mock_signature(const char *text, char *buf, size_t cap)
{
    unsigned long h = 5381;

    while (*text) {
        h = h * 33 + (unsigned char)*text++;
    }
    snprintf(buf, cap, "sig_mock_%08lx", h & 0xffffffffUL);
}

/* With thinking enabled, what Anthropic checks of the turns: each
 * thinking block's signature (and redacted_thinking's data) is one it
 * made, and the assistant turn a tool_result answers starts with its
 * thinking. NULL when all is well. */
static const char *
thinking_problem(json_t *body, int on)
{
    static char msg[256];
    json_t *msgs = json_object_get(body, "messages"), *m, *b;
    size_t i, k, n = json_array_size(msgs);

    json_array_foreach(msgs, i, m)
    {
        json_array_foreach(json_object_get(m, "content"), k, b)
        {
            const char *t = json_string_value(json_object_get(b, "type"));
            char sig[64];

            if (t && strcmp(t, "thinking") == 0) {
                mock_signature(json_string_value(json_object_get(b, "thinking"))
                                   ?: "",
                               sig, sizeof(sig));
                if (strcmp(json_string_value(json_object_get(b, "signature"))
                               ?: "",
                           sig) != 0) {
                    snprintf(msg, sizeof(msg),
                             "messages.%zu.content.%zu: Invalid `signature` "
                             "in `thinking` block",
                             i, k);
                    return msg;
                }
            } else if (t && strcmp(t, "redacted_thinking") == 0 &&
                       strncmp(json_string_value(json_object_get(b, "data"))
                                   ?: "",
                               "redacted_mock_", 14) != 0) {
                snprintf(msg, sizeof(msg),
                         "messages.%zu.content.%zu: Invalid `data` in "
                         "`redacted_thinking` block",
                         i, k);
                return msg;
            }
        }
    }
    if (on && n >= 2) {
        json_t *last = json_array_get(msgs, n - 1);
        json_t *prev = json_array_get(msgs, n - 2);
        json_t *first = json_array_get(json_object_get(last, "content"), 0);
        const char *lt = json_string_value(json_object_get(first, "type"));
        const char *pt = json_string_value(json_object_get(
            json_array_get(json_object_get(prev, "content"), 0), "type"));

        if (lt && strcmp(lt, "tool_result") == 0 &&
            (pt == NULL || (strcmp(pt, "thinking") != 0 &&
                            strcmp(pt, "redacted_thinking") != 0))) {
            snprintf(msg, sizeof(msg),
                     "messages.%zu.content.0.type: Expected `thinking` or "
                     "`redacted_thinking`, but found `%s`. When `thinking` is "
                     "enabled, a final `assistant` message must start with a "
                     "thinking block",
                     n - 2, pt ? pt : "text");
            return msg;
        }
    }
    return NULL;
}

static void
anthropic_event(json_t *list, const char *name, json_t *data)
{
    json_array_append_new(list,
                          json_pack("{s:s,s:o}", "event", name, "data", data));
}

static void
answer_anthropic(struct evhttp_request *req, json_t *body,
                 const directives_t *d)
{
    const char *model = json_string_value(json_object_get(body, "model"));
    char text[1024], reply[1200];
    int tool_result, in_tokens, out_tokens, thinking, bi;
    json_t *tool, *content, *thinks;

    if (model == NULL ||
        !json_is_integer(json_object_get(body, "max_tokens")) ||
        !json_is_array(json_object_get(body, "messages"))) {
        send_json(req, 400,
                  json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error",
                            "type", "invalid_request_error", "message",
                            "model, max_tokens and messages are required"),
                  0);
        return;
    }
    {
        const char *tt = json_string_value(
            json_object_get(json_object_get(body, "thinking"), "type"));
        const char *problem;

        thinking = tt != NULL && strcmp(tt, "disabled") != 0;
        if ((problem = thinking_problem(body, thinking)) != NULL) {
            send_json(req, 400,
                      json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error",
                                "type", "invalid_request_error", "message",
                                problem),
                      0);
            return;
        }
    }
    anthropic_last_user(body, text, sizeof(text), &tool_result);
    tool = tool_result ? NULL : anthropic_tool(body);
    thinks = json_array();
    if (thinking) {
        /* a thinking block first (and a redacted one when asked) */
        char sig[64];

        mock_signature("Thinking about it.", sig, sizeof(sig));
        json_array_append_new(
            thinks, json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking",
                              "Thinking about it.", "signature", sig));
        if (strstr(text, "redacted") != NULL) {
            json_array_append_new(thinks, json_pack("{s:s,s:s}", "type",
                                                    "redacted_thinking", "data",
                                                    "redacted_mock_1"));
        }
    }
    bi = (int)json_array_size(thinks);
    if (d->reply[0]) {
        snprintf(reply, sizeof(reply), "%s", d->reply);
    } else if (tool_result) {
        snprintf(reply, sizeof(reply), "%s", text);
    } else {
        snprintf(reply, sizeof(reply), "Hello from mock. You said: %s", text);
    }
    in_tokens = count_prompt_tokens(body);
    out_tokens = tool ? 2 : (int)strlen(reply) / 4 + 1;
    if (!json_is_true(json_object_get(body, "stream"))) {
        content = tool
                      ? json_pack("[o]", tool)
                      : json_pack("[{s:s,s:s}]", "type", "text", "text", reply);
        json_array_extend(thinks, content);
        json_decref(content);
        content = thinks;
        send_json(req, 200,
                  json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:n,s:{s:i,s:i,s:i,s:i}}",
                            "id", "msg_mock_1", "type", "message", "role",
                            "assistant", "model", model, "content", content,
                            "stop_reason", tool ? "tool_use" : "end_turn",
                            "stop_sequence", "usage", "input_tokens", in_tokens,
                            "output_tokens", out_tokens,
                            "cache_read_input_tokens", 3,
                            "cache_creation_input_tokens", d->cache_write),
                  0);
        return;
    }
    {
        astream_t *s = calloc(1, sizeof(*s));
        json_t *ev = json_array();
        char *save = NULL, *w;
        int i = 0;

        anthropic_event(
            ev, "message_start",
            json_pack(
                "{s:s,s:{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:{s:i,s:i,s:i,s:i}}}",
                "type", "message_start", "message", "id", "msg_mock_1", "type",
                "message", "role", "assistant", "model", model, "content",
                "stop_reason", "stop_sequence", "usage", "input_tokens",
                in_tokens, "output_tokens", 1, "cache_read_input_tokens", 3,
                "cache_creation_input_tokens", d->cache_write));
        anthropic_event(ev, "ping", json_pack("{s:s}", "type", "ping"));
        for (i = 0; i < bi; i++) {
            json_t *tb = json_array_get(thinks, (size_t)i);
            const char *tt = json_string_value(json_object_get(tb, "type"));

            if (strcmp(tt, "thinking") == 0) {
                anthropic_event(ev, "content_block_start",
                                json_pack("{s:s,s:i,s:{s:s,s:s,s:s}}", "type",
                                          "content_block_start", "index", i,
                                          "content_block", "type", "thinking",
                                          "thinking", "", "signature", ""));
                anthropic_event(ev, "content_block_delta",
                                json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
                                          "content_block_delta", "index", i,
                                          "delta", "type", "thinking_delta",
                                          "thinking", "Thinking "));
                anthropic_event(ev, "content_block_delta",
                                json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
                                          "content_block_delta", "index", i,
                                          "delta", "type", "thinking_delta",
                                          "thinking", "about it."));
                anthropic_event(ev, "content_block_delta",
                                json_pack("{s:s,s:i,s:{s:s,s:O}}", "type",
                                          "content_block_delta", "index", i,
                                          "delta", "type", "signature_delta",
                                          "signature",
                                          json_object_get(tb, "signature")));
            } else {
                anthropic_event(ev, "content_block_start",
                                json_pack("{s:s,s:i,s:O}", "type",
                                          "content_block_start", "index", i,
                                          "content_block", tb));
            }
            anthropic_event(ev, "content_block_stop",
                            json_pack("{s:s,s:i}", "type", "content_block_stop",
                                      "index", i));
        }
        i = 0;
        json_decref(thinks);
        if (tool) {
            anthropic_event(ev, "content_block_start",
                            json_pack("{s:s,s:i,s:{s:s,s:s,s:O,s:{}}}", "type",
                                      "content_block_start", "index", bi,
                                      "content_block", "type", "tool_use", "id",
                                      "toolu_mock_1", "name",
                                      json_object_get(tool, "name"), "input"));
            {
                char *args =
                    json_dumps(json_object_get(tool, "input"), JSON_COMPACT);
                size_t half = strlen(args) / 2;
                char first[256];

                snprintf(first, sizeof(first), "%.*s", (int)half, args);
                anthropic_event(ev, "content_block_delta",
                                json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
                                          "content_block_delta", "index", bi,
                                          "delta", "type", "input_json_delta",
                                          "partial_json", first));
                anthropic_event(ev, "content_block_delta",
                                json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
                                          "content_block_delta", "index", bi,
                                          "delta", "type", "input_json_delta",
                                          "partial_json", args + half));
                free(args);
            }
        } else {
            anthropic_event(ev, "content_block_start",
                            json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
                                      "content_block_start", "index", bi,
                                      "content_block", "type", "text", "text",
                                      ""));
            if (d->chunks > 0) {
                for (i = 0; i < d->chunks; i++) {
                    anthropic_event(ev, "content_block_delta",
                                    json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
                                              "content_block_delta", "index",
                                              bi, "delta", "type", "text_delta",
                                              "text", i ? " tok" : "tok"));
                }
                out_tokens = d->chunks;
            } else {
                for (w = strtok_r(reply, " ", &save); w;
                     w = strtok_r(NULL, " ", &save), i++) {
                    char piece[600];

                    snprintf(piece, sizeof(piece), "%s%s", i ? " " : "", w);
                    anthropic_event(ev, "content_block_delta",
                                    json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
                                              "content_block_delta", "index",
                                              bi, "delta", "type", "text_delta",
                                              "text", piece));
                }
            }
        }
        anthropic_event(
            ev, "content_block_stop",
            json_pack("{s:s,s:i}", "type", "content_block_stop", "index", bi));
        anthropic_event(
            ev, "message_delta",
            json_pack("{s:s,s:{s:s,s:n},s:{s:i}}", "type", "message_delta",
                      "delta", "stop_reason", tool ? "tool_use" : "end_turn",
                      "stop_sequence", "usage", "output_tokens", out_tokens));
        anthropic_event(ev, "message_stop",
                        json_pack("{s:s}", "type", "message_stop"));
        json_decref(tool);
        if (d->drip > 0) {
            struct evbuffer *b = evbuffer_new();
            size_t whole = 0, k;

            for (k = 0; k < json_array_size(ev); k++) {
                json_t *e = json_array_get(ev, k);
                char *data =
                    json_dumps(json_object_get(e, "data"), JSON_COMPACT);

                if ((int)k == d->drip_after) {
                    whole = evbuffer_get_length(b);
                }
                evbuffer_add_printf(
                    b, "event: %s\ndata: %s\n\n",
                    json_string_value(json_object_get(e, "event")), data);
                free(data);
            }
            if (d->drip_after >= (int)json_array_size(ev)) {
                whole = evbuffer_get_length(b);
            }
            json_decref(ev);
            free(s);
            drip_send(req, "text/event-stream; charset=utf-8", b, whole,
                      d->drip);
            return;
        }
        s->req = req;
        s->conn = evhttp_request_get_connection(req);
        s->events = ev;
        s->d = *d;
        s->timer = evtimer_new(base, astream_step, s);
        evhttp_connection_set_closecb(s->conn, astream_closed, s);
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "Content-Type", "text/event-stream; charset=utf-8");
        evhttp_send_reply_start(req, 200, "OK");
        event_active(s->timer, EV_TIMEOUT, 0);
        return;
    }
}

/* The token-counting endpoints: Anthropic's /v1/messages/count_tokens,
 * Gemini's :countTokens (Google AI: a generateContentRequest naming its
 * model; Vertex AI: contents at the top), Bedrock's count-tokens
 * (input.converse). Each checks the shape its service takes and answers
 * 1000 + the number of turns, a count no estimate gives. */
static void
answer_count(pending_t *p)
{
    json_t *turns = NULL,
           *gcr = json_object_get(p->body, "generateContentRequest");
    const char *problem = NULL;
    int n;

    if (p->auth[0] == '\0') {
        problem = "no credential";
    } else if (p->anthropic) {
        turns = json_object_get(p->body, "messages");
        if (!json_is_string(json_object_get(p->body, "model"))) {
            problem = "model: Field required";
        } else if (json_object_get(p->body, "max_tokens") != NULL ||
                   json_object_get(p->body, "stream") != NULL) {
            problem = "max_tokens, stream: Extra inputs are not permitted";
        }
    } else if (p->gemini && strstr(p->uri, "/publishers/") != NULL) {
        turns = json_object_get(p->body, "contents");
        if (gcr != NULL) {
            problem = "Vertex AI takes contents at the top";
        }
    } else if (p->gemini) {
        turns = json_object_get(gcr, "contents");
        if (!json_is_object(gcr) ||
            strncmp(json_string_value(json_object_get(gcr, "model")) ?: "",
                    "models/", 7) != 0 ||
            json_object_get(p->body, "contents") != NULL) {
            problem = "generateContentRequest with its model (models/...) "
                      "is required";
        }
    } else {
        turns = json_object_get(
            json_object_get(json_object_get(p->body, "input"), "converse"),
            "messages");
    }
    if (problem == NULL && !json_is_array(turns)) {
        problem = "no turns to count";
    }
    if (problem != NULL) {
        send_json(p->req, 400,
                  json_pack("{s:{s:s,s:s}}", "error", "message", problem,
                            "type", "invalid_request_error"),
                  0);
        return;
    }
    n = 1000 + (int)json_array_size(turns);
    send_json(p->req, 200,
              p->anthropic ? json_pack("{s:i}", "input_tokens", n)
              : p->gemini  ? json_pack("{s:i}", "totalTokens", n)
                           : json_pack("{s:i}", "inputTokens", n),
              0);
}

static void
answer(pending_t *p)
{
    int status = p->d.status;

    if (!status) {
        status = status_in(p->auth);
    }
    if (!status) {
        status =
            status_in(json_string_value(json_object_get(p->body, "model")));
    }
    if (p->vclaude && !vclaude_check(p)) {
        /* answered */
    } else if (p->d.filter) {
        send_json(p->req, 400,
                  json_pack("{s:{s:s,s:n,s:s,s:s,s:i,s:{s:s,s:{s:{s:b,s:s}}}}}",
                            "error", "message",
                            "The response was filtered due to the prompt "
                            "triggering Azure OpenAI's content management "
                            "policy.",
                            "type", "param", "prompt", "code", "content_filter",
                            "status", 400, "innererror", "code",
                            "ResponsibleAIPolicyViolation",
                            "content_filter_result", "violence", "filtered", 1,
                            "severity", "high"),
                  0);
    } else if (status && status != 200 && (p->gemini || p->bedrock)) {
        p->d.status = status; /* their own error shapes */
        if (p->gemini) {
            answer_gemini(p->req, p->uri, p->body, &p->d, p->auth);
        } else {
            answer_bedrock(p->req, p->uri, p->body, &p->d, p->auth);
        }
    } else if (status && status != 200 && p->anthropic) {
        anthropic_error(p->req, status, p->d.retry_after);
    } else if (status && status != 200) {
        send_error(p->req, status, p->d.retry_after);
    } else if (p->count) {
        answer_count(p);
    } else if (p->responses) {
        answer_responses(p->req, p->body, &p->d);
    } else if (p->gemini) {
        answer_gemini(p->req, p->uri, p->body, &p->d, p->auth);
    } else if (p->bedrock) {
        answer_bedrock(p->req, p->uri, p->body, &p->d, p->auth);
    } else if (p->anthropic) {
        answer_anthropic(p->req, p->body, &p->d);
    } else if (p->embeddings) {
        answer_embeddings(p->req, p->body);
    } else if (p->moderations) {
        answer_moderations(p->req, p->body);
    } else {
        answer_chat(p->req, p->body, &p->d);
    }
    json_decref(p->body);
    if (p->timer) {
        event_free(p->timer);
    }
    free(p);
}

static void
delayed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    answer(arg);
}

static void
record(struct evhttp_request *req, const char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    json_t *hj = json_object();

    TAILQ_FOREACH(kv, h, next)
    {
        char lower[256];
        size_t i;

        for (i = 0; kv->key[i] && i < sizeof(lower) - 1; i++) {
            lower[i] = (char)((kv->key[i] >= 'A' && kv->key[i] <= 'Z')
                                  ? kv->key[i] + 32
                                  : kv->key[i]);
        }
        lower[i] = '\0';
        json_object_set_new(hj, lower, json_string(kv->value));
    }
    json_decref(last_request);
    last_request =
        json_pack("{s:s,s:o,s:s%}", "path", evhttp_request_get_uri(req),
                  "headers", hj, "body", body ? body : "", len);
    if (history == NULL) {
        history = json_array();
    }
    json_array_append(history, last_request);
    if (json_array_size(history) > 64) {
        json_array_remove(history, 0);
    }
    request_count++;
}

/* The scripted answer of POST /_mock/mode {"body", "headers"}. */
static void
send_scripted(struct evhttp_request *req, const char *auth)
{
    const char *text = json_string_value(json_object_get(mode_reply, "body"));
    const char *key = strncmp(auth, "Bearer ", 7) == 0 ? auth + 7 : auth;
    struct evbuffer *b = evbuffer_new();
    json_t *v;
    const char *name, *hole;

    while ((hole = strstr(text, "{key}")) != NULL) {
        evbuffer_add(b, text, (size_t)(hole - text));
        evbuffer_add(b, key, strlen(key));
        text = hole + 5;
    }
    evbuffer_add(b, text, strlen(text));
    json_object_foreach(json_object_get(mode_reply, "headers"), name, v)
    {
        evhttp_add_header(evhttp_request_get_output_headers(req), name,
                          json_string_value(v) ? json_string_value(v) : "");
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, mode_status ? mode_status : 400, "Scripted", b);
    evbuffer_free(b);
}

static void
handle(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char *body = malloc(len + 1);
    const char *auth;
    json_error_t err;
    pending_t *p;
    char text[1024];

    (void)arg;
    evbuffer_copyout(in, body, len);
    body[len] = '\0';
    if (strncmp(uri, "/_mock/", 7) != 0) {
        record(req, body, len);
    }
    if (strcmp(uri, "/_mock/last") == 0) {
        send_json(req, 200,
                  last_request ? json_incref(last_request) : json_object(), 0);
        free(body);
        return;
    }
    if (strcmp(uri, "/_mock/mode") == 0) {
        json_t *m = json_loadb(body, len, 0, NULL);

        mode_status = (int)json_integer_value(json_object_get(m, "status"));
        mode_retry_after =
            (int)json_integer_value(json_object_get(m, "retry_after"));
        json_decref(mode_reply);
        mode_reply =
            json_is_string(json_object_get(m, "body")) ? json_incref(m) : NULL;
        json_decref(m);
        send_json(req, 200, json_pack("{s:i}", "status", mode_status), 0);
        free(body);
        return;
    }
    if (strcmp(uri, "/_mock/requests") == 0) {
        send_json(req, 200, history ? json_incref(history) : json_array(), 0);
        free(body);
        return;
    }
    if (strcmp(uri, "/_mock/count") == 0) {
        send_json(req, 200, json_pack("{s:i}", "count", (int)request_count), 0);
        free(body);
        return;
    }
    if (strstr(uri, "/v1beta/models") != NULL &&
        evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
        /* Gemini's list */
        send_json(req, 200,
                  json_pack("{s:[{s:s},{s:s},{s:s}]}", "models", "name",
                            "models/gemini-mock-pro", "name",
                            "models/gemini-mock-flash", "name",
                            "models/text-mock-embed"),
                  0);
        free(body);
        return;
    }
    if (strstr(uri, "/models") != NULL &&
        evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
        send_json(req, 200,
                  json_pack("{s:s,s:[{s:s,s:s,s:i,s:s},{s:s,s:s,s:i,s:s},"
                            "{s:s,s:s,s:i,s:s}]}",
                            "object", "list", "data", "id", "mock-model",
                            "object", "model", "created", 0, "owned_by", "mock",
                            "id", "mock-model-large", "object", "model",
                            "created", 0, "owned_by", "mock", "id",
                            "other-model", "object", "model", "created", 0,
                            "owned_by", "mock"),
                  0);
        free(body);
        return;
    }
    p = calloc(1, sizeof(*p));
    p->req = req;
    snprintf(p->uri, sizeof(p->uri), "%s", uri);
    p->gemini = gemini_path(uri);
    p->bedrock = !p->gemini && bedrock_path(uri);
    p->embeddings = strstr(uri, "/embeddings") != NULL;
    p->moderations = strstr(uri, "/moderations") != NULL;
    p->responses = !p->gemini && !p->bedrock && responses_path(uri);
    p->vclaude = strstr(uri, "/publishers/anthropic/models/") != NULL;
    p->anthropic = p->vclaude || (strstr(uri, "/messages") != NULL &&
                                  strstr(uri, "/chat/completions") == NULL);
    p->count = strstr(uri, "/v1/messages/count_tokens") != NULL ||
               strstr(uri, ":countTokens") != NULL ||
               (p->bedrock && strstr(uri, "/count-tokens") != NULL) ||
               (p->vclaude && strstr(uri, "/count-tokens:rawPredict") != NULL);
    auth = evhttp_find_header(evhttp_request_get_input_headers(req),
                              p->anthropic && !p->vclaude ? "x-api-key"
                                                          : "Authorization");
    if (p->gemini && evhttp_find_header(evhttp_request_get_input_headers(req),
                                        "x-goog-api-key") != NULL) {
        auth = evhttp_find_header(evhttp_request_get_input_headers(req),
                                  "x-goog-api-key");
    }
    if (auth == NULL) {
        auth = evhttp_find_header(evhttp_request_get_input_headers(req),
                                  "api-key"); /* Azure */
    }
    snprintf(p->auth, sizeof(p->auth), "%s", auth ? auth : "");
    if (mode_reply != NULL && strstr(uri, "/token") == NULL) {
        send_scripted(req, p->auth);
        free(body);
        free(p);
        return;
    }
    p->body = json_loadb(body, len, 0, &err);
    if (p->gemini && p->body == NULL) {
        p->body = json_stringn(body, len); /* the token endpoint's form */
    }
    free(body);
    if (p->body == NULL || (!p->embeddings && !p->anthropic && !p->gemini &&
                            !p->bedrock && !p->moderations && !p->responses &&
                            strstr(uri, "/chat/completions") == NULL)) {
        send_json(req, p->body ? 404 : 400,
                  json_pack("{s:{s:s,s:s}}", "error", "message",
                            p->body ? "unknown path" : "invalid JSON", "type",
                            "invalid_request_error"),
                  0);
        json_decref(p->body);
        free(p);
        return;
    }
    parse_directives(json_string_value(json_object_get(p->body, "model")),
                     &p->d);
    parse_directives(last_user_text(p->body, text, sizeof(text)), &p->d);
    if (p->moderations) {
        char *all =
            json_dumps(json_object_get(p->body, "input"), JSON_ENCODE_ANY);

        parse_directives(all, &p->d);
        free(all);
    }
    {
        /* gemini and bedrock: the model (and its directives) in the path */
        char *dec = evhttp_decode_uri(uri);

        parse_directives(dec ? dec : uri, &p->d);
        free(dec);
    }
    if (p->gemini) {
        gemini_directives(p->body, &p->d);
    } else if (p->bedrock) {
        bedrock_directives(p->body, &p->d);
    } else if (p->responses) {
        responses_directives(p->body, &p->d);
    }
    if (mode_status != 0) {
        p->d.status = mode_status;
        p->d.retry_after = mode_retry_after;
    }
    if (auth != NULL && strstr(auth, "retry-after-") != NULL) {
        p->d.retry_after = atoi(strstr(auth, "retry-after-") + 12);
    }
    if (p->d.hang) {
        json_decref(p->body);
        free(p);
        return; /* never answered; freed with the connection */
    }
    if (p->d.delay > 0) {
        struct timeval tv = {p->d.delay / 1000, (p->d.delay % 1000) * 1000};

        p->timer = evtimer_new(base, delayed, p);
        evtimer_add(p->timer, &tv);
        return;
    }
    answer(p);
}

static void
on_term(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_base_loopexit(base, NULL);
}

int
main(int argc, char **argv)
{
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct event *term;
    int port = 0, i;
    const char *host = "127.0.0.1";

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
            host = argv[++i];
        } else {
            fprintf(stderr, "usage: mf-mock [--port N] [--host ADDR]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    http = evhttp_new(base);
    evhttp_set_gencb(http, handle, NULL);
    evhttp_set_max_body_size(http, 64 * 1024 * 1024);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    sock = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port);
    if (sock == NULL) {
        fprintf(stderr, "mf-mock: cannot listen on %s:%d\n", host, port);
        return 1;
    }
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);

        getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss,
                    &sl);
        printf("%d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
        fflush(stdout);
    }
    term = evsignal_new(base, SIGTERM, on_term, NULL);
    event_add(term, NULL);
    event_base_dispatch(base);
    event_free(term);
    evhttp_free(http);
    event_base_free(base);
    json_decref(last_request);
    json_decref(history);
    return 0;
}
