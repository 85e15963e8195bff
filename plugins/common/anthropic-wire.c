/*
 * The Anthropic Messages wire behind the canonical (OpenAI chat) form,
 * shared by the providers that speak it: Anthropic's own API
 * (provider-anthropic) and Claude on Vertex AI (provider-gemini's vertex
 * type, which sends the same body without `model` to rawPredict).
 * Requests: system messages to `system`, images (data: URLs and http
 * URLs), tools and tool choice, tool calls and tool results (consecutive
 * results merged into one user turn), stop sequences, `max_tokens`
 * defaulted when the client sends none, reasoning_effort to extended
 * thinking, top_k, and cache_control breakpoints on content parts and
 * tools. Responses and stream events back to chat completions and chunks
 * (text, tool-call deltas, thinking as reasoning_content), stop reasons,
 * usage with cache tokens; errors to the right status. Thinking and
 * redacted_thinking blocks travel as reasoning items (marked
 * encrypted_content) both ways, so that a tool loop keeps them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <manifold/json.h>

#include "anthropic-wire.h"
#include "provider-util.h"

static const mf_host_api_t *api;

/* Per request: what a stream needs from one event to the next. */
typedef struct {
    char id[128];
    char model[256];
    json_int_t created;
    mf_usage_t usage;
    int tool_of_block[64]; /* content block -> tool call index, -1 */
    int ntools;
    int think_block; /* index of the open thinking block, -1 none */
    char *think;     /* its text so far (request memory) */
    size_t think_len, think_cap;
    char *signature; /* its signature (request memory), NULL none */
} stream_t;

/* Thinking blocks travel in the canonical form as reasoning items (the
 * Responses API's shape, the one the gateway carries reasoning in) whose
 * encrypted_content is this mark and the block's JSON: a client sends
 * them back as they came, and only the Anthropic wire reads them. */
#define AW_MARK "manifold:anthropic:"

/* The reasoning item carrying a thinking or redacted_thinking block
 * (its members as Anthropic sent them). New reference, NULL for another
 * block. */
static json_t *
reasoning_item_of(json_t *b)
{
    const char *type = json_string_value(json_object_get(b, "type"));
    json_t *block, *item;
    char *text;

    if (type != NULL && strcmp(type, "thinking") == 0 &&
        json_is_string(json_object_get(b, "thinking"))) {
        block = mf_json_pack("{s:s,s:O,s:s}", "type", "thinking", "thinking",
                             json_object_get(b, "thinking"), "signature",
                             json_string_value(json_object_get(b, "signature"))
                                 ?: "");
    } else if (type != NULL && strcmp(type, "redacted_thinking") == 0 &&
               json_is_string(json_object_get(b, "data"))) {
        block = mf_json_pack("{s:s,s:O}", "type", "redacted_thinking", "data",
                             json_object_get(b, "data"));
    } else {
        return NULL;
    }
    text = mf_json_dumps(block, JSON_COMPACT);
    item = mf_json_pack("{s:s,s:[],s:s+}", "type", "reasoning", "summary",
                        "encrypted_content", AW_MARK, text ? text : "{}");
    if (json_object_get(block, "thinking") != NULL) {
        json_array_append_new(json_object_get(item, "summary"),
                              mf_json_pack("{s:s,s:O}", "type", "summary_text",
                                           "text",
                                           json_object_get(block, "thinking")));
    }
    free(text);
    json_decref(block);
    return item;
}

/* The thinking or redacted_thinking block a reasoning item carries, for
 * an assistant turn; NULL for an item another provider made (or none). */
static json_t *
thinking_block(json_t *item)
{
    const char *ec =
        json_string_value(json_object_get(item, "encrypted_content"));
    json_t *b, *out = NULL;
    const char *type;

    if (ec == NULL || strncmp(ec, AW_MARK, sizeof(AW_MARK) - 1) != 0) {
        return NULL;
    }
    b = mf_json_loadb(ec + sizeof(AW_MARK) - 1,
                      strlen(ec) - (sizeof(AW_MARK) - 1), 0, NULL);
    type = json_string_value(json_object_get(b, "type"));
    if (type != NULL && strcmp(type, "thinking") == 0 &&
        json_is_string(json_object_get(b, "thinking")) &&
        json_is_string(json_object_get(b, "signature"))) {
        out = mf_json_pack("{s:s,s:O,s:O}", "type", "thinking", "thinking",
                           json_object_get(b, "thinking"), "signature",
                           json_object_get(b, "signature"));
    } else if (type != NULL && strcmp(type, "redacted_thinking") == 0 &&
               json_is_string(json_object_get(b, "data"))) {
        out = mf_json_pack("{s:s,s:O}", "type", "redacted_thinking", "data",
                           json_object_get(b, "data"));
    }
    json_decref(b);
    return out;
}

void
aw_init(const mf_host_api_t *host)
{
    api = host;
}

/* Request: canonical -> Messages */

/* An OpenAI image_url part to an Anthropic image block. */
static json_t *
image_block(json_t *part)
{
    const char *url = json_string_value(
        json_object_get(json_object_get(part, "image_url"), "url"));
    const char *comma, *semi;

    if (url == NULL) {
        return NULL;
    }
    if (strncmp(url, "data:", 5) == 0 && (comma = strchr(url, ',')) != NULL &&
        (semi = strstr(url, ";base64")) != NULL && semi < comma) {
        return mf_json_pack("{s:s,s:{s:s,s:s%,s:s}}", "type", "image", "source",
                            "type", "base64", "media_type", url + 5,
                            (size_t)(semi - url - 5), "data", comma + 1);
    }
    return mf_json_pack("{s:s,s:{s:s,s:s}}", "type", "image", "source", "type",
                        "url", "url", url);
}

/* A part's cache_control (a prompt-caching breakpoint, on OpenAI-format
 * parts and tools as on Anthropic blocks) onto the block made of it. */
static void
keep_cache_control(json_t *block, json_t *from)
{
    json_t *cc = json_object_get(from, "cache_control");

    if (json_is_object(cc)) {
        json_object_set(block, "cache_control", cc);
    }
}

/* Message content (a string or parts) to a list of blocks. */
static json_t *
content_blocks(json_t *content)
{
    json_t *out = json_array(), *part;
    size_t i;

    if (json_is_string(content)) {
        if (json_string_length(content) > 0) {
            json_array_append_new(out, mf_json_pack("{s:s,s:O}", "type", "text",
                                                    "text", content));
        }
        return out;
    }
    json_array_foreach(content, i, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *b = NULL;

        if (type && strcmp(type, "text") == 0) {
            b = mf_json_pack("{s:s,s:O}", "type", "text", "text",
                             json_object_get(part, "text"));
        } else if (type && strcmp(type, "image_url") == 0) {
            b = image_block(part);
        } else if (type && strcmp(type, "document") == 0) {
            b = json_deep_copy(part); /* Anthropic's own block */
        }
        if (b != NULL) {
            keep_cache_control(b, part);
            json_array_append_new(out, b);
        }
    }
    return out;
}

static json_t *
tool_use_blocks(json_t *calls)
{
    json_t *out = json_array(), *c;
    size_t i;

    json_array_foreach(calls, i, c)
    {
        json_t *fn = json_object_get(c, "function");

        json_array_append_new(
            out, mf_json_pack("{s:s,s:O,s:O,s:o}", "type", "tool_use", "id",
                              json_object_get(c, "id"), "name",
                              json_object_get(fn, "name"), "input",
                              pu_tool_args(c)));
    }
    return out;
}

static json_t *
tools_of(json_t *tools)
{
    json_t *out = json_array(), *t;
    size_t i;

    json_array_foreach(tools, i, t)
    {
        json_t *fn = json_object_get(t, "function");
        json_t *params = json_object_get(fn, "parameters");
        json_t *o = mf_json_pack("{s:O}", "name", json_object_get(fn, "name"));

        if (json_is_string(json_object_get(fn, "description"))) {
            json_object_set(o, "description",
                            json_object_get(fn, "description"));
        }
        json_object_set_new(o, "input_schema",
                            json_is_object(params)
                                ? json_incref(params)
                                : mf_json_pack("{s:s}", "type", "object"));
        keep_cache_control(o, t);
        json_array_append_new(out, o);
    }
    return out;
}

static json_t *
tool_choice_of(json_t *tc, json_t *parallel)
{
    json_t *out = NULL;

    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);

        out = mf_json_pack("{s:s}", "type",
                           strcmp(s, "required") == 0 ? "any"
                           : strcmp(s, "none") == 0   ? "none"
                                                      : "auto");
    } else if (json_is_object(tc)) {
        out = mf_json_pack(
            "{s:s,s:O}", "type", "tool", "name",
            json_object_get(json_object_get(tc, "function"), "name"));
    }
    if (json_is_false(parallel)) {
        if (out == NULL) {
            out = mf_json_pack("{s:s}", "type", "auto");
        }
        json_object_set_new(out, "disable_parallel_tool_use", json_true());
    }
    return out;
}

/* The Messages request for a canonical chat request. */
static json_t *
to_messages(const aw_conf_t *a, json_t *in, const mf_upstream_t *u)
{
    static const pu_field_t fields[] = {{"temperature", "temperature", 0},
                                        {"top_p", "top_p", 0},
                                        {"top_k", "top_k", 1},
                                        {NULL, NULL, 0}};
    json_t *out = json_object(), *msgs = json_array(), *system = json_array();
    json_t *m, *v;
    size_t i;
    const char *effort;

    json_object_set_new(out, "model",
                        json_stringn(u->model.data, u->model.len));
    json_array_foreach(json_object_get(in, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");

        if (role == NULL) {
            continue;
        }
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            json_t *blocks = content_blocks(content);

            json_array_extend(system, blocks);
            json_decref(blocks);
        } else if (strcmp(role, "tool") == 0) {
            json_t *text = json_is_string(content) ? json_incref(content)
                                                   : content_blocks(content);
            json_t *res = mf_json_pack(
                "{s:s,s:O,s:o}", "type", "tool_result", "tool_use_id",
                json_object_get(m, "tool_call_id"), "content", text);

            keep_cache_control(res, m); /* on the block, as documented */
            pu_push_turn(msgs, "user", "content", mf_json_pack("[o]", res));
        } else if (strcmp(role, "assistant") == 0) {
            json_t *blocks = json_array(), *ri, *b;
            json_t *text = content_blocks(content);
            json_t *calls = tool_use_blocks(json_object_get(m, "tool_calls"));
            size_t k;

            /* the turn's thinking first, as Anthropic gave it: a tool loop
             * with thinking on needs it back before the tool_use */
            json_array_foreach(json_object_get(m, "reasoning_items"), k, ri)
            {
                if ((b = thinking_block(ri)) != NULL) {
                    json_array_append_new(blocks, b);
                }
            }
            json_array_extend(blocks, text);
            json_array_extend(blocks, calls);
            json_decref(text);
            json_decref(calls);
            pu_push_turn(msgs, "assistant", "content", blocks);
        } else {
            pu_push_turn(msgs, "user", "content", content_blocks(content));
        }
    }
    if (json_array_size(system) > 0) {
        json_object_set_new(out, "system", system);
    } else {
        json_decref(system);
    }
    json_object_set_new(out, "messages", msgs);
    v = pu_max_tokens(in);
    json_object_set_new(out, "max_tokens",
                        v ? json_incref(v)
                          : json_integer(a->default_max_tokens));
    if ((v = pu_stop_list(in)) != NULL) {
        json_object_set_new(out, "stop_sequences", v);
    }
    pu_copy_fields(in, out, fields);
    if (json_is_string(v = json_object_get(in, "user"))) {
        json_object_set_new(out, "metadata",
                            mf_json_pack("{s:O}", "user_id", v));
    }
    if (json_array_size(json_object_get(in, "tools")) > 0) {
        json_t *tc = tool_choice_of(json_object_get(in, "tool_choice"),
                                    json_object_get(in, "parallel_tool_calls"));

        json_object_set_new(out, "tools",
                            tools_of(json_object_get(in, "tools")));
        if (tc != NULL) {
            json_object_set_new(out, "tool_choice", tc);
        }
    }
    if (json_is_object(v = json_object_get(in, "thinking"))) {
        json_object_set(out, "thinking", v); /* Anthropic's own, as sent */
    } else if ((effort = json_string_value(
                    json_object_get(in, "reasoning_effort"))) != NULL) {
        json_int_t budget = strcmp(effort, "low") == 0    ? 1024
                            : strcmp(effort, "high") == 0 ? 16384
                                                          : 4096;
        json_int_t max = json_integer_value(json_object_get(out, "max_tokens"));

        json_object_set_new(out, "thinking",
                            mf_json_pack("{s:s,s:I}", "type", "enabled",
                                         "budget_tokens", budget));
        if (max <= budget) {
            json_object_set_new(out, "max_tokens", json_integer(budget + max));
        }
        json_object_del(out, "temperature"); /* thinking refuses it */
    }
    if (u->stream) {
        json_object_set_new(out, "stream", json_true());
    }
    return out;
}

json_t *
aw_request(const aw_conf_t *conf, json_t *in, const mf_upstream_t *u)
{
    json_t *msg = to_messages(conf, in, u);

    if (u->endpoint == MF_ENDPOINT_COUNT_TOKENS) {
        /* count_tokens takes the prompt: model, system, messages, tools,
         * tool_choice, thinking */
        static const char *const drop[] = {
            "max_tokens", "stop_sequences", "temperature", "top_p",
            "top_k",      "metadata",       "stream",      NULL};
        size_t i;

        for (i = 0; drop[i] != NULL; i++) {
            json_object_del(msg, drop[i]);
        }
    }
    return msg;
}

/* Response: Messages -> canonical */

static const char *
finish_reason(const char *stop)
{
    if (stop == NULL) {
        return NULL;
    }
    if (strcmp(stop, "max_tokens") == 0) {
        return "length";
    }
    if (strcmp(stop, "tool_use") == 0) {
        return "tool_calls";
    }
    if (strcmp(stop, "refusal") == 0) {
        return "content_filter";
    }
    return "stop"; /* end_turn, stop_sequence, pause_turn */
}

static json_int_t
int_at(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_integer(v) ? json_integer_value(v) : 0;
}

/* Reads Anthropic usage into u (fields present only); the prompt
 * tokens written to the cache go to the host on their own. */
static void
read_usage(mf_req_t *r, json_t *in, mf_usage_t *u)
{
    if (!json_is_object(in)) {
        return;
    }
    if (json_object_get(in, "input_tokens") != NULL) {
        json_int_t read = int_at(in, "cache_read_input_tokens");
        json_int_t write = int_at(in, "cache_creation_input_tokens");

        u->prompt_tokens = int_at(in, "input_tokens") + read + write;
        u->cached_tokens = read;
        if (json_object_get(in, "cache_creation_input_tokens") != NULL &&
            api->abi_minor >= 5) {
            api->set_cache_write_tokens(r, write);
        }
    }
    if (json_object_get(in, "output_tokens") != NULL) {
        u->completion_tokens = int_at(in, "output_tokens");
    }
    if (u->prompt_tokens >= 0 && u->completion_tokens >= 0) {
        u->total_tokens = u->prompt_tokens + u->completion_tokens;
    }
    u->estimated = 0;
}

int
aw_parse_response(mf_req_t *r, void *state, mf_str_t body, int canonical)
{
    json_t *in = mf_json_loadb(body.data, body.len, 0, NULL), *b, *msg, *calls;
    json_t *reasoning;
    mf_usage_t usage = {-1, -1, -1, -1, -1, 0};
    char *text = NULL, *thinking = NULL;
    size_t i, tl = 0, kl = 0;
    json_t *out;

    (void)state;
    if (!json_is_object(in) || !json_is_array(json_object_get(in, "content"))) {
        json_decref(in);
        return MF_ERR;
    }
    read_usage(r, json_object_get(in, "usage"), &usage);
    api->set_usage(r, &usage);
    if (!canonical) {
        json_decref(in);
        return MF_OK;
    }
    calls = json_array();
    reasoning = json_array();
    json_array_foreach(json_object_get(in, "content"), i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        const char *t;
        json_t *ri;

        if (type == NULL) {
            continue;
        }
        if ((ri = reasoning_item_of(b)) != NULL) {
            json_array_append_new(reasoning, ri);
        }
        if (strcmp(type, "text") == 0 &&
            (t = json_string_value(json_object_get(b, "text"))) != NULL) {
            size_t n = strlen(t);
            char *p = realloc(text, tl + n + 1);

            if (p != NULL) {
                text = p;
                memcpy(text + tl, t, n + 1);
                tl += n;
            }
        } else if (strcmp(type, "thinking") == 0 &&
                   (t = json_string_value(json_object_get(b, "thinking"))) !=
                       NULL) {
            size_t n = strlen(t);
            char *p = realloc(thinking, kl + n + 1);

            if (p != NULL) {
                thinking = p;
                memcpy(thinking + kl, t, n + 1);
                kl += n;
            }
        } else if (strcmp(type, "tool_use") == 0) {
            char *args = mf_json_dumps(json_object_get(b, "input"),
                                       JSON_COMPACT | JSON_ENCODE_ANY);

            json_array_append_new(
                calls,
                mf_json_pack("{s:O,s:s,s:{s:O,s:s}}", "id",
                             json_object_get(b, "id"), "type", "function",
                             "function", "name", json_object_get(b, "name"),
                             "arguments", args ? args : "{}"));
            free(args);
        }
    }
    msg = mf_json_pack("{s:s,s:o,s:n}", "role", "assistant", "content",
                       text ? json_string(text) : json_null(), "refusal");
    if (thinking != NULL) {
        json_object_set_new(msg, "reasoning_content", json_string(thinking));
    }
    if (json_array_size(reasoning) > 0) {
        json_object_set(msg, "reasoning_items", reasoning);
    }
    json_decref(reasoning);
    if (json_array_size(calls) > 0) {
        json_object_set_new(msg, "tool_calls", calls);
    } else {
        json_decref(calls);
    }
    out = mf_json_pack(
        "{s:O,s:s,s:I,s:O,s:[{s:i,s:o,s:n,s:s}],s:o}", "id",
        json_object_get(in, "id"), "object", "chat.completion", "created",
        (json_int_t)time(NULL), "model", json_object_get(in, "model"),
        "choices", "index", 0, "message", msg, "logprobs", "finish_reason",
        finish_reason(json_string_value(json_object_get(in, "stop_reason")))
            ?: "stop",
        "usage", pu_usage_json(&usage));
    free(text);
    free(thinking);
    json_decref(in);
    return out ? api->set_response_json(r, out) : MF_ERR;
}

/* Stream: events -> chunks */

static json_t *
chunk(stream_t *s, json_t *delta, const char *finish)
{
    return mf_json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:o,s:n}]}", "id", s->id,
                        "object", "chat.completion.chunk", "created",
                        s->created, "model", s->model, "choices", "index", 0,
                        "delta", delta, "finish_reason",
                        finish ? json_string(finish) : json_null(), "logprobs");
}

/* The open thinking block's text grown by n bytes (request memory,
 * doubled as it grows); MF_ERR when out of memory. */
static int
think_append(mf_req_t *r, stream_t *s, const char *t, size_t n)
{
    if (s->think_len + n + 1 > s->think_cap) {
        size_t cap = s->think_cap ? s->think_cap * 2 : 1024;
        char *p;

        while (cap < s->think_len + n + 1) {
            cap *= 2;
        }
        if ((p = api->palloc(r, cap)) == NULL) {
            return MF_ERR;
        }
        if (s->think_len > 0) {
            memcpy(p, s->think, s->think_len);
        }
        s->think = p;
        s->think_cap = cap;
    }
    memcpy(s->think + s->think_len, t, n);
    s->think_len += n;
    s->think[s->think_len] = '\0';
    return MF_OK;
}

/* The chunk carrying one whole thinking or redacted_thinking block as a
 * reasoning item, or NULL. */
static json_t *reasoning_chunk(stream_t *s, json_t *block);

static stream_t *
stream_state(mf_req_t *r)
{
    void **slot = api->provider_ctx(r);
    stream_t *s = *slot;
    int i;

    if (s == NULL) {
        s = api->palloc(r, sizeof(*s));
        if (s == NULL) {
            return NULL;
        }
        memset(s, 0, sizeof(*s));
        s->usage.prompt_tokens = s->usage.completion_tokens = -1;
        s->usage.total_tokens = s->usage.cached_tokens = -1;
        s->usage.reasoning_tokens = -1;
        s->created = (json_int_t)time(NULL);
        snprintf(s->id, sizeof(s->id), "chatcmpl-anthropic");
        for (i = 0; i < 64; i++) {
            s->tool_of_block[i] = -1;
        }
        s->think_block = -1;
        *slot = s;
    }
    return s;
}

static json_t *
reasoning_chunk(stream_t *s, json_t *block)
{
    json_t *ri = reasoning_item_of(block);

    return ri ? chunk(s, mf_json_pack("{s:[o]}", "reasoning_items", ri), NULL)
              : NULL;
}

int
aw_parse_stream_event(mf_req_t *r, void *state, const mf_sse_event_t *ev,
                      int canonical)
{
    stream_t *s = stream_state(r);
    json_t *j, *c = NULL;
    const char *type;
    int flags = MF_EVENT_PASS;
    json_int_t idx;

    (void)state;
    if (s == NULL) {
        return MF_ERR;
    }
    if (ev->data.len == 0) {
        return MF_EVENT_PASS;
    }
    j = mf_json_loadb(ev->data.data, ev->data.len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return MF_ERR;
    }
    type = json_string_value(json_object_get(j, "type"));
    idx = int_at(j, "index");
    if (type == NULL) {
        json_decref(j);
        return MF_ERR;
    }
    if (strcmp(type, "message_start") == 0) {
        json_t *m = json_object_get(j, "message");
        const char *id = json_string_value(json_object_get(m, "id"));
        const char *model = json_string_value(json_object_get(m, "model"));

        if (id != NULL) {
            snprintf(s->id, sizeof(s->id), "%s", id);
        }
        snprintf(s->model, sizeof(s->model), "%s", model ? model : "");
        read_usage(r, json_object_get(m, "usage"), &s->usage);
        api->set_usage(r, &s->usage);
        c = chunk(s,
                  mf_json_pack("{s:s,s:s}", "role", "assistant", "content", ""),
                  NULL);
        flags |= MF_EVENT_PREAMBLE;
    } else if (strcmp(type, "content_block_start") == 0) {
        json_t *b = json_object_get(j, "content_block");
        const char *bt = json_string_value(json_object_get(b, "type"));

        if (bt && strcmp(bt, "thinking") == 0) {
            s->think_block = (int)idx;
            s->think_len = 0;
            s->signature = NULL;
            if (s->think != NULL) {
                s->think[0] = '\0';
            }
        } else if (bt && strcmp(bt, "redacted_thinking") == 0) {
            c = reasoning_chunk(s, b); /* it comes whole */
        } else if (bt && strcmp(bt, "tool_use") == 0 && idx >= 0 && idx < 64) {
            int ti = s->ntools++;

            s->tool_of_block[idx] = ti;
            c = chunk(s,
                      mf_json_pack("{s:[{s:i,s:O,s:s,s:{s:O,s:s}}]}",
                                   "tool_calls", "index", ti, "id",
                                   json_object_get(b, "id"), "type", "function",
                                   "function", "name",
                                   json_object_get(b, "name"), "arguments", ""),
                      NULL);
        }
    } else if (strcmp(type, "content_block_delta") == 0) {
        json_t *d = json_object_get(j, "delta");
        const char *dt = json_string_value(json_object_get(d, "type"));

        if (dt && strcmp(dt, "text_delta") == 0) {
            c = chunk(
                s, mf_json_pack("{s:O}", "content", json_object_get(d, "text")),
                NULL);
        } else if (dt && strcmp(dt, "signature_delta") == 0 &&
                   idx == s->think_block &&
                   json_is_string(json_object_get(d, "signature"))) {
            json_t *sig = json_object_get(d, "signature");

            s->signature = api->palloc(r, json_string_length(sig) + 1);
            if (s->signature != NULL) {
                memcpy(s->signature, json_string_value(sig),
                       json_string_length(sig) + 1);
            }
        } else if (dt && strcmp(dt, "thinking_delta") == 0) {
            json_t *t = json_object_get(d, "thinking");

            if (idx == s->think_block && json_is_string(t) &&
                think_append(r, s, json_string_value(t),
                             json_string_length(t)) != MF_OK) {
                json_decref(j);
                return MF_ERR;
            }
            c = chunk(s,
                      mf_json_pack("{s:O}", "reasoning_content",
                                   json_object_get(d, "thinking")),
                      NULL);
        } else if (dt && strcmp(dt, "input_json_delta") == 0 && idx >= 0 &&
                   idx < 64 && s->tool_of_block[idx] >= 0) {
            c = chunk(s,
                      mf_json_pack("{s:[{s:i,s:{s:O}}]}", "tool_calls", "index",
                                   s->tool_of_block[idx], "function",
                                   "arguments",
                                   json_object_get(d, "partial_json")),
                      NULL);
        }
    } else if (strcmp(type, "content_block_stop") == 0 &&
               idx == s->think_block && s->think_block >= 0) {
        /* the thinking block whole, with its signature, for the turn
         * that goes on from it */
        json_t *b = mf_json_pack("{s:s,s:s,s:s}", "type", "thinking",
                                 "thinking", s->think ? s->think : "",
                                 "signature", s->signature ? s->signature : "");

        c = reasoning_chunk(s, b);
        json_decref(b);
        s->think_block = -1;
    } else if (strcmp(type, "message_delta") == 0) {
        const char *stop = json_string_value(
            json_object_get(json_object_get(j, "delta"), "stop_reason"));

        read_usage(r, json_object_get(j, "usage"), &s->usage);
        api->set_usage(r, &s->usage);
        c = chunk(s, json_object(), finish_reason(stop) ?: "stop");
    } else if (strcmp(type, "message_stop") == 0) {
        /* the usage chunk (the host drops it unless the client asked) */
        c = mf_json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", s->id, "object",
                         "chat.completion.chunk", "created", s->created,
                         "model", s->model, "choices", "usage",
                         pu_usage_json(&s->usage));
        flags |= MF_EVENT_USAGE_ONLY | MF_EVENT_DONE;
    } else if (strcmp(type, "error") == 0) {
        json_t *e = json_object_get(j, "error");

        c = mf_json_pack("{s:{s:O,s:O,s:n}}", "error", "message",
                         json_object_get(e, "message"), "type",
                         json_object_get(e, "type"), "code");
        flags |= MF_EVENT_ERROR;
    }
    /* ping, the stop of other blocks: nothing to send */
    if (c != NULL && canonical) {
        api->emit_chunk(r, c);
    } else {
        json_decref(c);
    }
    json_decref(j);
    return flags;
}

/* Errors */

int
aw_parse_error(mf_req_t *r, const char *name, int status, mf_str_t body,
               mf_error_t *err)
{
    json_t *j = mf_json_loadb(body.data, body.len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *msg = json_string_value(json_object_get(e, "message"));

    (void)r;
    err->status = status;
    err->type = "upstream_error";
    if (status == 400 || status == 404 || status == 413 || status == 422) {
        err->type = "invalid_request_error";
        if (msg &&
            (strstr(msg, "prompt is too long") ||
             strstr(msg, "context window") || strstr(msg, "too many tokens"))) {
            err->code = "context_length_exceeded";
        }
    } else if (status == 401 || status == 403) {
        err->status = 502; /* the gateway's key, not the client's */
        err->code = "upstream_auth_failed";
        msg = "the provider refused the gateway's key";
    } else if (status == 429) {
        err->type = "rate_limit_error"; /* the host reads Retry-After */
    } else if (status == 529 ||
               (type && strcmp(type, "overloaded_error") == 0)) {
        err->status = 503;
        err->code = "upstream_overloaded";
    } else {
        err->status = 502;
    }
    snprintf(err->message, sizeof(err->message),
             "provider '%s' answered %d%s%s", name, status, msg ? ": " : "",
             msg ? msg : "");
    json_decref(j);
    return MF_OK;
}

/* count_tokens' answer: {"input_tokens": N}. */
int
aw_parse_count(mf_req_t *r, void *state, mf_str_t body, int64_t *tokens)
{
    json_t *in = mf_json_loadb(body.data, body.len, 0, NULL);
    json_t *n = json_object_get(in, "input_tokens");

    (void)r;
    (void)state;
    *tokens = json_is_integer(n) ? (int64_t)json_integer_value(n) : -1;
    json_decref(in);
    return *tokens >= 0 ? MF_OK : MF_ERR;
}
