/*
 * Anthropic inbound: Messages requests to canonical chat requests (with
 * top_k, and cache_control breakpoints kept on the parts and tools they
 * mark, for an Anthropic upstream's prompt cache), chat
 * completions and chunks back to messages and Messages stream events
 * (message_start, content_block_start/delta/stop for text, thinking and
 * tool_use blocks, message_delta with the stop reason and usage,
 * message_stop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <manifold/json.h>

#include "proto/proto.h"

/* Canonical chunks to Anthropic stream events. */
typedef struct {
    int started;
    int block;      /* index of the open block, -1 none */
    int block_type; /* 0 none, 1 text, 2 thinking, 3 tool_use, 4 redacted */
    int nblocks;
    int tool_block[32]; /* canonical tool call index -> block, -1 */
    char finish[32];
    char id[128];
    char model[256];
} anthropic_stream_t;

static char *text_of(json_t *content);

/* Thinking blocks in the canonical form: reasoning items (the Responses
 * API's shape, the gateway's one form for reasoning) whose
 * encrypted_content is this mark and the block's JSON, as the Anthropic
 * wire (plugins/common/anthropic-wire.c) writes and reads them. */
#define THINK_MARK "manifold:anthropic:"

/* The reasoning item of a thinking or redacted_thinking block; NULL for
 * another block. New reference. */
static json_t *
reasoning_item_of(json_t *b)
{
    const char *type = json_string_value(json_object_get(b, "type"));
    const char *sig = json_string_value(json_object_get(b, "signature"));
    json_t *block, *item;
    char *text;

    if (type != NULL && strcmp(type, "thinking") == 0 && sig != NULL &&
        strncmp(sig, "manifold:", 9) == 0 &&
        json_is_string(json_object_get(b, "thinking"))) {
        /* another provider's reasoning (Claude on Bedrock) given to the
         * client as a thinking block: its signature is the item's
         * encrypted_content, as it was */
        return mf_json_pack("{s:s,s:[{s:s,s:O}],s:s}", "type", "reasoning",
                            "summary", "type", "summary_text", "text",
                            json_object_get(b, "thinking"), "encrypted_content",
                            sig);
    }
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
                        "encrypted_content", THINK_MARK, text ? text : "{}");
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

/* The block a reasoning item made by reasoning_item_of carries; NULL for
 * another item. New reference. */
static json_t *
thinking_block(json_t *item)
{
    const char *ec =
        json_string_value(json_object_get(item, "encrypted_content"));
    json_t *b, *out = NULL;
    const char *type;

    if (ec != NULL && strncmp(ec, "manifold:", 9) == 0 &&
        strncmp(ec, THINK_MARK, sizeof(THINK_MARK) - 1) != 0) {
        /* another provider's marked reasoning (Claude on Bedrock): a
         * thinking block whose signature carries it, so that the client
         * gives it back */
        char *t = text_of(json_object_get(item, "summary"));

        out = mf_json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking", t,
                           "signature", ec);
        free(t);
        return out;
    }
    if (ec == NULL || strncmp(ec, THINK_MARK, sizeof(THINK_MARK) - 1) != 0) {
        return NULL;
    }
    b = mf_json_loadb(ec + sizeof(THINK_MARK) - 1,
                      strlen(ec) - (sizeof(THINK_MARK) - 1), 0, NULL);
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

/* Request */

/* The text of a string or of text blocks joined by newlines; malloc'd. */
static char *
text_of(json_t *content)
{
    mf_buf_t b = {0};
    json_t *blk;
    size_t i;

    if (json_is_string(content)) {
        return mf_xstrdup(json_string_value(content));
    }
    json_array_foreach(content, i, blk)
    {
        const char *t = json_string_value(json_object_get(blk, "text"));

        if (t != NULL) {
            if (b.len > 0) {
                mf_buf_append(&b, "\n", 1);
            }
            mf_buf_append(&b, t, strlen(t));
        }
    }
    mf_buf_append(&b, "", 1);
    return b.data ? b.data : mf_xstrdup("");
}

/* The block's cache_control (a prompt-caching breakpoint) onto the
 * canonical part or tool made of it; 1 when there was one. */
static int
keep_cache_control(json_t *to, json_t *block)
{
    json_t *cc = json_object_get(block, "cache_control");

    if (!json_is_object(cc) || to == NULL) {
        return 0;
    }
    json_object_set(to, "cache_control", cc);
    return 1;
}

/* Text blocks to canonical text parts, cache_control kept; NULL when
 * none carries cache_control (the text then goes as one string). */
static json_t *
cached_text_parts(json_t *content)
{
    json_t *parts, *b;
    size_t i;
    int cached = 0;

    if (!json_is_array(content)) {
        return NULL;
    }
    parts = json_array();
    json_array_foreach(content, i, b)
    {
        json_t *t = json_object_get(b, "text"), *p;

        if (!json_is_string(t)) {
            continue;
        }
        p = mf_json_pack("{s:s,s:O}", "type", "text", "text", t);
        cached |= keep_cache_control(p, b);
        json_array_append_new(parts, p);
    }
    if (!cached) {
        json_decref(parts);
        return NULL;
    }
    return parts;
}

static json_t *
image_part(json_t *block)
{
    json_t *src = json_object_get(block, "source");
    const char *type = json_string_value(json_object_get(src, "type"));

    if (type && strcmp(type, "base64") == 0) {
        const char *mt = json_string_value(json_object_get(src, "media_type"));
        const char *data = json_string_value(json_object_get(src, "data"));
        json_t *out;
        char *url;
        size_t n;

        if (mt == NULL || data == NULL) {
            return NULL;
        }
        n = strlen(mt) + strlen(data) + 16;
        url = mf_xmalloc(n);
        snprintf(url, n, "data:%s;base64,%s", mt, data);
        out = mf_json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url",
                           "url", url);
        free(url);
        return out;
    }
    if (type && strcmp(type, "url") == 0) {
        return mf_json_pack("{s:s,s:{s:O}}", "type", "image_url", "image_url",
                            "url", json_object_get(src, "url"));
    }
    return NULL;
}

/* The images and documents of a tool result's content to parts of the
 * user message after the tool messages (a tool message takes text only
 * on most wires); the count appended. */
static int
tool_result_media(json_t *parts, json_t *content)
{
    json_t *b, *p;
    size_t i;
    int n = 0;

    json_array_foreach(content, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));

        p = NULL;
        if (type != NULL && strcmp(type, "image") == 0) {
            p = image_part(b);
            keep_cache_control(p, b);
        } else if (type != NULL && strcmp(type, "document") == 0) {
            p = json_deep_copy(b);
        }
        if (p != NULL) {
            json_array_append_new(parts, p);
            n++;
        }
    }
    return n;
}

/* A user turn: tool results become tool messages, the rest one message. */
static void
user_turn(json_t *out, json_t *content)
{
    json_t *parts = json_array(), *b;
    size_t i;
    int only_text = 1;

    if (json_is_string(content)) {
        json_array_append_new(
            out, mf_json_pack("{s:s,s:O}", "role", "user", "content", content));
        json_decref(parts);
        return;
    }
    json_array_foreach(content, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));

        if (type == NULL) {
            continue;
        }
        if (strcmp(type, "tool_result") == 0) {
            json_t *c = json_object_get(b, "content");
            json_t *cp = cached_text_parts(c);
            char *t = text_of(c);
            json_t *tm =
                mf_json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id",
                             json_object_get(b, "tool_use_id"), "content",
                             cp ? cp : json_string(t));

            /* the block's own breakpoint stays on the tool message: the
             * provider puts it back on the tool_result block */
            keep_cache_control(tm, b);
            json_array_append_new(out, tm);
            free(t);
            if (tool_result_media(parts, c) > 0) {
                only_text = 0;
            }
        } else if (strcmp(type, "text") == 0) {
            json_t *p = mf_json_pack("{s:s,s:O}", "type", "text", "text",
                                     json_object_get(b, "text"));

            if (keep_cache_control(p, b)) {
                only_text = 0; /* the breakpoint needs the part */
            }
            json_array_append_new(parts, p);
        } else if (strcmp(type, "document") == 0) {
            /* a PDF or text document: a part of its own, as sent (each
             * provider takes it, translates it or refuses it) */
            json_array_append_new(parts, json_deep_copy(b));
            only_text = 0;
        } else if (strcmp(type, "image") == 0) {
            json_t *p = image_part(b);

            if (p != NULL) {
                keep_cache_control(p, b);
                json_array_append_new(parts, p);
                only_text = 0;
            }
        }
    }
    if (json_array_size(parts) == 0) {
        json_decref(parts);
        return;
    }
    if (only_text) { /* plain text reaches every provider */
        char *t = text_of(parts);
        json_t *text = json_string(t);

        free(t);
        json_decref(parts);
        json_array_append_new(
            out, mf_json_pack("{s:s,s:o}", "role", "user", "content", text));
        return;
    }
    json_array_append_new(
        out, mf_json_pack("{s:s,s:o}", "role", "user", "content", parts));
}

static void
assistant_turn(json_t *out, json_t *content)
{
    json_t *calls = json_array(), *b, *m, *cp, *ri;
    json_t *reasoning = json_array();
    mf_buf_t text = {0};
    size_t i;

    if (json_is_string(content)) {
        mf_buf_append(&text, json_string_value(content),
                      json_string_length(content));
    }
    json_array_foreach(content, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        const char *t;

        if ((ri = reasoning_item_of(b)) != NULL) {
            json_array_append_new(reasoning, ri); /* with its signature */
        } else if (type && strcmp(type, "text") == 0 &&
                   (t = json_string_value(json_object_get(b, "text"))) !=
                       NULL) {
            mf_buf_append(&text, t, strlen(t));
        } else if (type && strcmp(type, "tool_use") == 0) {
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
    cp = cached_text_parts(content);
    m = mf_json_pack("{s:s,s:o}", "role", "assistant", "content",
                     cp         ? cp
                     : text.len ? json_stringn(text.data, text.len)
                                : json_null());
    mf_buf_free(&text);
    if (json_array_size(calls) > 0) {
        json_object_set_new(m, "tool_calls", calls);
    } else {
        json_decref(calls);
    }
    if (json_array_size(reasoning) > 0) {
        json_object_set(m, "reasoning_items", reasoning);
    }
    json_decref(reasoning);
    json_array_append_new(out, m);
}

/* A Messages request to the canonical chat request; with no usable
 * model, the body itself (the host answers the missing model). */
static json_t *
anthropic_request(const mf_proto_call_t *call, json_t *in, const char **err)
{
    json_t *out, *msgs, *m, *v, *sys;
    size_t i;

    (void)call;
    if (!json_is_string(json_object_get(in, "model"))) {
        return json_incref(in);
    }
    if (!json_is_integer(json_object_get(in, "max_tokens"))) {
        *err = "max_tokens: Field required (an integer)";
        return NULL;
    }
    if (!json_is_array(json_object_get(in, "messages")) ||
        json_array_size(json_object_get(in, "messages")) == 0) {
        *err = "messages: Field required (a non-empty list of turns)";
        return NULL;
    }
    out = mf_json_pack("{s:O,s:O}", "model", json_object_get(in, "model"),
                       "max_tokens", json_object_get(in, "max_tokens"));
    msgs = json_array();
    sys = json_object_get(in, "system");
    if ((v = cached_text_parts(sys)) != NULL) {
        json_array_append_new(
            msgs, mf_json_pack("{s:s,s:o}", "role", "system", "content", v));
    } else if (json_is_string(sys) || json_is_array(sys)) {
        char *t = text_of(sys);

        json_array_append_new(
            msgs, mf_json_pack("{s:s,s:s}", "role", "system", "content", t));
        free(t);
    }
    json_array_foreach(json_object_get(in, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));

        if (role == NULL ||
            (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
            json_decref(msgs);
            json_decref(out);
            *err = "messages: each turn's role must be user or assistant";
            return NULL;
        }
        if (strcmp(role, "user") == 0) {
            user_turn(msgs, json_object_get(m, "content"));
        } else {
            assistant_turn(msgs, json_object_get(m, "content"));
        }
    }
    json_object_set_new(out, "messages", msgs);
    if (json_is_array(v = json_object_get(in, "stop_sequences")) &&
        json_array_size(v) > 0) {
        json_object_set(out, "stop", v);
    }
    if (json_is_number(v = json_object_get(in, "temperature"))) {
        json_object_set(out, "temperature", v);
    }
    if (json_is_number(v = json_object_get(in, "top_p"))) {
        json_object_set(out, "top_p", v);
    }
    if (json_is_integer(v = json_object_get(in, "top_k"))) {
        json_object_set(out, "top_k", v);
    }
    if (json_is_string(
            v = json_object_get(json_object_get(in, "metadata"), "user_id"))) {
        json_object_set(out, "user", v);
    }
    if (json_is_true(json_object_get(in, "stream"))) {
        json_object_set_new(out, "stream", json_true());
    }
    if (json_is_object(v = json_object_get(in, "thinking"))) {
        json_object_set(out, "thinking", v);
    }
    /* a prompt template's values, for the stage that renders it (the
     * model names the template: nothing else reads the field) */
    if (json_is_object(v = json_object_get(in, "variables")) &&
        json_is_string(json_object_get(in, "model")) &&
        strncmp(json_string_value(json_object_get(in, "model")),
                "template:", 9) == 0) {
        json_object_set(out, "variables", v);
    }
    if (json_array_size(v = json_object_get(in, "tools")) > 0) {
        json_t *tools = json_array(), *t, *tc;

        json_array_foreach(v, i, t)
        {
            json_t *fn =
                mf_json_pack("{s:O}", "name", json_object_get(t, "name"));

            if (json_is_string(json_object_get(t, "description"))) {
                json_object_set(fn, "description",
                                json_object_get(t, "description"));
            }
            json_object_set_new(
                fn, "parameters",
                json_is_object(json_object_get(t, "input_schema"))
                    ? json_incref(json_object_get(t, "input_schema"))
                    : mf_json_pack("{s:s}", "type", "object"));
            json_t *tool =
                mf_json_pack("{s:s,s:o}", "type", "function", "function", fn);

            keep_cache_control(tool, t);
            json_array_append_new(tools, tool);
        }
        json_object_set_new(out, "tools", tools);
        tc = json_object_get(in, "tool_choice");
        if (json_is_object(tc)) {
            const char *type = json_string_value(json_object_get(tc, "type"));

            if (type && strcmp(type, "any") == 0) {
                json_object_set_new(out, "tool_choice",
                                    json_string("required"));
            } else if (type && strcmp(type, "none") == 0) {
                json_object_set_new(out, "tool_choice", json_string("none"));
            } else if (type && strcmp(type, "tool") == 0) {
                json_object_set_new(out, "tool_choice",
                                    mf_json_pack("{s:s,s:{s:O}}", "type",
                                                 "function", "function", "name",
                                                 json_object_get(tc, "name")));
            }
            if (json_is_true(
                    json_object_get(tc, "disable_parallel_tool_use"))) {
                json_object_set_new(out, "parallel_tool_calls", json_false());
            }
        }
    }
    return out;
}

/* Response */

static const char *
stop_reason(const char *finish)
{
    if (finish == NULL) {
        return "end_turn";
    }
    if (strcmp(finish, "length") == 0) {
        return "max_tokens";
    }
    if (strcmp(finish, "tool_calls") == 0 ||
        strcmp(finish, "function_call") == 0) {
        return "tool_use";
    }
    if (strcmp(finish, "content_filter") == 0) {
        return "refusal";
    }
    return "end_turn";
}

static json_t *
usage_json(const mf_usage_t *u, int with_input)
{
    int64_t cached = u->cached_tokens > 0 ? u->cached_tokens : 0;
    int64_t in = u->prompt_tokens > 0 ? u->prompt_tokens - cached : 0;
    json_t *j = mf_json_pack(
        "{s:I}", "output_tokens",
        (json_int_t)(u->completion_tokens > 0 ? u->completion_tokens : 0));

    if (with_input) {
        json_object_set_new(j, "input_tokens", json_integer(in));
        json_object_set_new(j, "cache_read_input_tokens", json_integer(cached));
        json_object_set_new(j, "cache_creation_input_tokens", json_integer(0));
    }
    return j;
}

static json_t *
anthropic_response(const mf_proto_call_t *pc, json_t *c,
                   const mf_usage_t *usage)
{
    json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    json_t *content = json_array(), *call;
    const char *text = json_string_value(json_object_get(msg, "content"));
    const char *id = json_string_value(json_object_get(c, "id"));
    const char *think =
        json_string_value(json_object_get(msg, "reasoning_content"));
    char mid[160];
    size_t i;

    (void)pc;
    if (json_array_size(json_object_get(msg, "reasoning_items")) > 0) {
        json_t *ri, *b;

        /* Anthropic's blocks as they came (signature, redacted data);
         * another provider's reasoning as its text */
        json_array_foreach(json_object_get(msg, "reasoning_items"), i, ri)
        {
            if ((b = thinking_block(ri)) == NULL) {
                char *t = text_of(json_object_get(ri, "summary"));

                b = t[0] != '\0'
                        ? mf_json_pack("{s:s,s:s,s:s}", "type", "thinking",
                                       "thinking", t, "signature", "")
                        : NULL;
                free(t);
            }
            if (b != NULL) {
                json_array_append_new(content, b);
            }
        }
    } else if (think != NULL && think[0] != '\0') {
        json_array_append_new(content,
                              mf_json_pack("{s:s,s:s,s:s}", "type", "thinking",
                                           "thinking", think, "signature", ""));
    }
    if (text != NULL && text[0] != '\0') {
        json_array_append_new(
            content, mf_json_pack("{s:s,s:s}", "type", "text", "text", text));
    }
    json_array_foreach(json_object_get(msg, "tool_calls"), i, call)
    {
        json_t *fn = json_object_get(call, "function");
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        json_t *input = args ? json_loads(args, 0, NULL) : NULL;

        if (!json_is_object(input)) {
            json_decref(input);
            input = json_object();
        }
        json_array_append_new(
            content, mf_json_pack("{s:s,s:O,s:O,s:o}", "type", "tool_use", "id",
                                  json_object_get(call, "id"), "name",
                                  json_object_get(fn, "name"), "input", input));
    }
    snprintf(mid, sizeof(mid), "%s%s",
             id && strncmp(id, "msg_", 4) == 0 ? "" : "msg_",
             id ? id : "manifold");
    return mf_json_pack("{s:s,s:s,s:s,s:O,s:o,s:s,s:n,s:o}", "id", mid, "type",
                        "message", "role", "assistant", "model",
                        json_object_get(c, "model"), "content", content,
                        "stop_reason",
                        stop_reason(json_string_value(
                            json_object_get(choice, "finish_reason"))),
                        "stop_sequence", "usage", usage_json(usage, 1));
}

/* Stream */

static void
anthropic_stream_init(void *state, const mf_proto_call_t *call, mf_str_t model)
{
    anthropic_stream_t *s = state;
    int i;

    (void)call;
    memset(s, 0, sizeof(*s));
    s->block = -1;
    for (i = 0; i < 32; i++) {
        s->tool_block[i] = -1;
    }
    snprintf(s->model, sizeof(s->model), "%.*s", (int)model.len, model.data);
    snprintf(s->id, sizeof(s->id), "msg_manifold");
}

static void
emit(mf_buf_t *out, const char *event, json_t *data)
{
    char *text = mf_json_dumps(data, JSON_COMPACT);

    mf_buf_printf(out, "event: %s\ndata: %s\n\n", event, text ? text : "{}");
    free(text);
    json_decref(data);
}

static void
start(anthropic_stream_t *s, const mf_usage_t *u, mf_buf_t *out)
{
    if (s->started) {
        return;
    }
    s->started = 1;
    emit(out, "message_start",
         mf_json_pack("{s:s,s:{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:o}}", "type",
                      "message_start", "message", "id", s->id, "type",
                      "message", "role", "assistant", "model", s->model,
                      "content", "stop_reason", "stop_sequence", "usage",
                      usage_json(u, 1)));
}

static void
close_block(anthropic_stream_t *s, mf_buf_t *out)
{
    if (s->block < 0) {
        return;
    }
    emit(out, "content_block_stop",
         mf_json_pack("{s:s,s:i}", "type", "content_block_stop", "index",
                      s->block));
    s->block = -1;
    s->block_type = 0;
}

static void
open_block(anthropic_stream_t *s, int type, json_t *block, mf_buf_t *out)
{
    close_block(s, out);
    s->block = s->nblocks++;
    s->block_type = type;
    emit(out, "content_block_start",
         mf_json_pack("{s:s,s:i,s:o}", "type", "content_block_start", "index",
                      s->block, "content_block", block));
}

static void
delta(anthropic_stream_t *s, json_t *d, mf_buf_t *out)
{
    emit(out, "content_block_delta",
         mf_json_pack("{s:s,s:i,s:o}", "type", "content_block_delta", "index",
                      s->block, "delta", d));
}

/* A provider's whole reasoning item from a chunk: Anthropic's thinking
 * block gets its signature (a signature_delta closing the thinking block
 * its deltas opened, or a block of its own when none came), a redacted
 * block is sent as it is; another provider's item adds nothing (its text
 * came as deltas). */
static void
reasoning_block(anthropic_stream_t *s, json_t *ri, mf_buf_t *out)
{
    json_t *b = thinking_block(ri);
    const char *type = json_string_value(json_object_get(b, "type"));

    if (type != NULL && strcmp(type, "thinking") == 0) {
        if (s->block_type != 2) {
            open_block(
                s, 2,
                mf_json_pack("{s:s,s:s}", "type", "thinking", "thinking", ""),
                out);
            delta(s,
                  mf_json_pack("{s:s,s:O}", "type", "thinking_delta",
                               "thinking", json_object_get(b, "thinking")),
                  out);
        }
        delta(s,
              mf_json_pack("{s:s,s:O}", "type", "signature_delta", "signature",
                           json_object_get(b, "signature")),
              out);
        close_block(s, out);
    } else if (type != NULL) {
        open_block(s, 4, json_incref(b), out);
        close_block(s, out);
    }
    json_decref(b);
}

static void
anthropic_stream_event(void *state, mf_str_t data, int last,
                       const mf_usage_t *usage, mf_buf_t *out)
{
    anthropic_stream_t *s = state;
    json_t *j, *choice, *d, *tc;
    const char *t, *fin;
    size_t i;

    if (last) {
        start(s, usage, out);
        close_block(s, out);
        emit(out, "message_delta",
             mf_json_pack("{s:s,s:{s:s,s:n},s:o}", "type", "message_delta",
                          "delta", "stop_reason",
                          stop_reason(s->finish[0] ? s->finish : NULL),
                          "stop_sequence", "usage", usage_json(usage, 1)));
        emit(out, "message_stop",
             mf_json_pack("{s:s}", "type", "message_stop"));
        return;
    }
    j = mf_json_loadb(data.data, data.len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    if (json_object_get(j, "error") != NULL) {
        json_t *e = json_object_get(j, "error");

        start(s, usage, out);
        emit(out, "error",
             mf_json_pack("{s:s,s:{s:s,s:O}}", "type", "error", "error", "type",
                          "api_error", "message",
                          json_object_get(e, "message")));
        json_decref(j);
        return;
    }
    if (!s->started) {
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *model = json_string_value(json_object_get(j, "model"));

        if (id != NULL) {
            snprintf(s->id, sizeof(s->id), "%s%s",
                     strncmp(id, "msg_", 4) == 0 ? "" : "msg_", id);
        }
        if (model != NULL) {
            snprintf(s->model, sizeof(s->model), "%s", model);
        }
        start(s, usage, out);
    }
    choice = json_array_get(json_object_get(j, "choices"), 0);
    d = json_object_get(choice, "delta");
    if ((t = json_string_value(json_object_get(d, "reasoning_content"))) &&
        t[0]) {
        if (s->block_type != 2) {
            open_block(
                s, 2,
                mf_json_pack("{s:s,s:s}", "type", "thinking", "thinking", ""),
                out);
        }
        delta(
            s,
            mf_json_pack("{s:s,s:s}", "type", "thinking_delta", "thinking", t),
            out);
    }
    json_array_foreach(json_object_get(d, "reasoning_items"), i, tc)
    {
        reasoning_block(s, tc, out);
    }
    if ((t = json_string_value(json_object_get(d, "content"))) && t[0]) {
        if (s->block_type != 1) {
            open_block(s, 1,
                       mf_json_pack("{s:s,s:s}", "type", "text", "text", ""),
                       out);
        }
        delta(s, mf_json_pack("{s:s,s:s}", "type", "text_delta", "text", t),
              out);
    }
    json_array_foreach(json_object_get(d, "tool_calls"), i, tc)
    {
        json_int_t ti = json_integer_value(json_object_get(tc, "index"));
        json_t *fn = json_object_get(tc, "function");
        const char *args = json_string_value(json_object_get(fn, "arguments"));

        if (ti < 0 || ti >= 32) {
            continue;
        }
        if (json_is_string(json_object_get(tc, "id")) &&
            s->tool_block[ti] < 0) {
            open_block(s, 3,
                       mf_json_pack("{s:s,s:O,s:O,s:{}}", "type", "tool_use",
                                    "id", json_object_get(tc, "id"), "name",
                                    json_object_get(fn, "name"), "input"),
                       out);
            s->tool_block[ti] = s->block;
        }
        if (args != NULL && args[0] && s->tool_block[ti] == s->block &&
            s->block >= 0) {
            delta(s,
                  mf_json_pack("{s:s,s:s}", "type", "input_json_delta",
                               "partial_json", args),
                  out);
        }
    }
    if ((fin = json_string_value(json_object_get(choice, "finish_reason")))) {
        snprintf(s->finish, sizeof(s->finish), "%s", fin);
    }
    json_decref(j);
}

/* Errors */

const char *
mf_proto_anthropic_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    case 504:
        return "timeout_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* Anthropic's shape; the type is Anthropic's for the status, whatever
 * the gateway's own name for it. */
static char *
anthropic_error_body(const mf_proto_error_t *e)
{
    json_t *j =
        mf_json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                     mf_proto_anthropic_type(e->status), "message", e->message);
    char *text = j ? mf_json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return text;
}

static void
anthropic_stream_error(void *state, const mf_proto_error_t *e, mf_buf_t *out)
{
    char *text = anthropic_error_body(e);

    (void)state;
    if (text != NULL) {
        mf_buf_printf(out, "event: error\ndata: %s\n\n", text);
    }
    free(text);
}

/* count_tokens */

/* Bytes of a value as its JSON text (a tool's schema, a tool call's
 * input). */
static size_t
json_bytes(json_t *v)
{
    char *t = v ? mf_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    size_t n = t ? strlen(t) : 0;

    free(t);
    return n;
}

/* Bytes of prompt a content (a string or blocks) carries: text, tool
 * results' text, tool calls' input, and about a token's worth (4 bytes)
 * of framing per block. */
static size_t
content_bytes(json_t *content)
{
    json_t *b;
    size_t i, n = 0;

    if (json_is_string(content)) {
        return json_string_length(content);
    }
    json_array_foreach(content, i, b)
    {
        n += 4 + json_string_length(json_object_get(b, "text")) +
             json_string_length(json_object_get(b, "thinking"));
        if (json_object_get(b, "input") != NULL) {
            n += json_bytes(json_object_get(b, "input")) +
                 json_string_length(json_object_get(b, "name"));
        }
        if (json_object_get(b, "content") != NULL) {
            n += content_bytes(json_object_get(b, "content"));
        }
    }
    return n;
}

/* POST /v1/messages/count_tokens: the gateway's estimate, about 4 bytes
 * of prompt a token (system, messages, tools), as {"input_tokens": N};
 * the host marks the answer estimated. The same checks as Anthropic's
 * endpoint: a model and a non-empty list of turns. */
static char *
anthropic_local(const mf_proto_call_t *call, json_t *in, int *status,
                int *estimated, const char **err)
{
    json_t *msgs = json_object_get(in, "messages"), *m, *t;
    size_t i, n = 0;
    char buf[64];

    (void)call;
    if (!json_is_string(json_object_get(in, "model"))) {
        *err = "model: Field required (a string)";
        return NULL;
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        *err = "messages: Field required (a non-empty list of turns)";
        return NULL;
    }
    n += content_bytes(json_object_get(in, "system"));
    json_array_foreach(msgs, i, m)
    {
        n += 4 + content_bytes(json_object_get(m, "content"));
    }
    json_array_foreach(json_object_get(in, "tools"), i, t)
    {
        n += json_string_length(json_object_get(t, "name")) +
             json_string_length(json_object_get(t, "description")) +
             json_bytes(json_object_get(t, "input_schema"));
    }
    snprintf(buf, sizeof(buf), "{\"input_tokens\":%zu}", (n + 3) / 4);
    *status = 200;
    *estimated = 1;
    return mf_xstrdup(buf);
}

/* count_tokens forwarded: the body as a Messages request (count_tokens
 * takes no max_tokens and no stream) in the canonical form. */
static json_t *
anthropic_count_request(const mf_proto_call_t *call, json_t *in,
                        const char **err)
{
    json_t *copy = json_copy(in), *out;

    if (copy == NULL) {
        *err = "out of memory";
        return NULL;
    }
    json_object_set_new(copy, "max_tokens", json_integer(1));
    json_object_del(copy, "stream");
    out = anthropic_request(call, copy, err);
    json_decref(copy);
    if (out != NULL) {
        json_object_del(out, "max_tokens");
    }
    return out;
}

static char *
anthropic_count_answer(int64_t tokens)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "{\"input_tokens\":%lld}", (long long)tokens);
    return mf_xstrdup(buf);
}

static mf_proto_match_t
anthropic_match(mf_str_t path, mf_endpoint_t *endpoint)
{
    if (mf_str_eq_cstr(path, "/v1/messages")) {
        *endpoint = MF_ENDPOINT_CHAT;
        return MF_PROTO_SERVES;
    }
    if (mf_str_eq_cstr(path, "/v1/messages/count_tokens")) {
        *endpoint = MF_ENDPOINT_CHAT;
        return MF_PROTO_LOCAL;
    }
    if (mf_proto_has_prefix(path, "/v1/messages/")) {
        return MF_PROTO_OWNS;
    }
    return MF_PROTO_NO;
}

/* Models: /v1/models in Anthropic's shape, for clients that send
 * anthropic-version (the SDK's models.list and models.retrieve). */
static int
anthropic_models_path(mf_str_t path, mf_str_t *id)
{
    *id = MF_STR_NULL;
    if (mf_str_eq_cstr(path, "/v1/models")) {
        return 1;
    }
    if (mf_proto_has_prefix(path, "/v1/models/") && path.len > 11) {
        *id = (mf_str_t){path.data + 11, path.len - 11};
        return 1;
    }
    return 0;
}

static json_t *
anthropic_model(const mf_proto_model_t *m)
{
    /* the config says nothing of a release date: the epoch, as OpenAI's
     * shape says created 0 */
    return mf_json_pack("{s:s,s:s,s:s,s:s}", "type", "model", "id", m->id,
                        "display_name", m->id, "created_at",
                        "1970-01-01T00:00:00Z");
}

static json_t *
anthropic_model_list(json_t *entries)
{
    size_t n = json_array_size(entries);
    json_t *first = json_object_get(json_array_get(entries, 0), "id");
    json_t *last =
        json_object_get(json_array_get(entries, n ? n - 1 : 0), "id");

    return mf_json_pack("{s:o,s:b,s:O,s:O}", "data", entries, "has_more", 0,
                        "first_id", first ? first : json_null(), "last_id",
                        last ? last : json_null());
}

const mf_proto_t mf_proto_anthropic = {
    .name = "anthropic",
    .method = "POST",
    .match = anthropic_match,
    .request = anthropic_request,
    .error_body = anthropic_error_body,
    .stream_error = anthropic_stream_error,
    .response = anthropic_response,
    .stream_size = sizeof(anthropic_stream_t),
    .stream_init = anthropic_stream_init,
    .stream_event = anthropic_stream_event,
    .local = anthropic_local,
    .count_request = anthropic_count_request,
    .count_answer = anthropic_count_answer,
    .models_path = anthropic_models_path,
    .model = anthropic_model,
    .model_list = anthropic_model_list,
    .models_header = "anthropic-version",
    .endpoints = "POST /v1/messages, POST /v1/messages/count_tokens",
};
