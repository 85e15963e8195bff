/*
 * Gemini inbound: Google's Generative Language API as the Google GenAI
 * SDKs speak it, served by any provider. The model and the method are in
 * the path (/v1beta/models/{model}:{method}, or Google's /v1/models/...):
 *
 *  - generateContent and streamGenerateContent: contents, parts (text,
 *    inlineData, fileData, functionCall, functionResponse),
 *    systemInstruction, functionDeclarations, toolConfig and
 *    generationConfig to a canonical chat request; the completion back to
 *    a GenerateContentResponse (candidates, finishReason, usageMetadata);
 *    the stream as SSE records (alt=sse) or, without it, one JSON array
 *    written element by element, as Google's endpoint does;
 *  - embedContent and batchEmbedContents: to a canonical embeddings
 *    request, the vectors back as embedding.values / embeddings[];
 *  - countTokens: the gateway's estimate, answered without an upstream;
 *  - GET /v1beta/models and /v1beta/models/{model}: the model list in
 *    Google's shape (on /v1/models too when x-goog-api-key is sent).
 *
 * Errors are Google's: {"error":{"code","message","status"}} with the
 * google.rpc status name of the HTTP status.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <manifold/json.h>

#include "proto/proto.h"

#define GEM_PREFIX "/v1beta/models/"
#define GEM_V1_PREFIX "/v1/models/"

/* The length of the models prefix path starts with (/v1beta/models/, or
 * Google's /v1/models/), 0 for neither. */
static size_t
models_prefix(mf_str_t path)
{
    if (mf_proto_has_prefix(path, GEM_PREFIX)) {
        return sizeof(GEM_PREFIX) - 1;
    }
    if (mf_proto_has_prefix(path, GEM_V1_PREFIX)) {
        return sizeof(GEM_V1_PREFIX) - 1;
    }
    return 0;
}
#define GEM_TOOLS 32

typedef enum {
    G_NONE = 0,
    G_GENERATE,
    G_STREAM,
    G_COUNT,
    G_EMBED,
    G_BATCH
} gmethod_t;

/* A streamed tool call, gathered until it is whole: Gemini sends a
 * functionCall in one piece. */
typedef struct {
    mf_buf_t id;
    mf_buf_t name;
    mf_buf_t args;
} gtool_t;

typedef struct {
    int json_array; /* no alt=sse: one JSON array, element by element */
    int records;    /* records written */
    int closed;     /* the stream's end (or an error) was written */
    int ntools;
    char finish[32];
    char id[128];
    char model[256];
    gtool_t tools[GEM_TOOLS];
} gemini_stream_t;

/* Path */

/* The method of a /v1beta/models/{model}:{method} path and its model
 * (still percent-encoded); G_NONE when it is not one. */
static gmethod_t
gem_method(mf_str_t path, mf_str_t *model)
{
    static const struct {
        const char *name;
        gmethod_t m;
    } methods[] = {
        {"generateContent", G_GENERATE}, {"streamGenerateContent", G_STREAM},
        {"countTokens", G_COUNT},        {"embedContent", G_EMBED},
        {"batchEmbedContents", G_BATCH}, {NULL, G_NONE}};
    size_t pl = models_prefix(path), colon, i;
    mf_str_t name;

    if (pl == 0) {
        return G_NONE;
    }
    for (colon = path.len; colon > pl && path.data[colon - 1] != ':'; colon--) {
    }
    if (colon <= pl + 1) {
        return G_NONE; /* no ':' or no model before it */
    }
    name = (mf_str_t){path.data + colon, path.len - colon};
    for (i = 0; methods[i].name != NULL; i++) {
        if (mf_str_eq_cstr(name, methods[i].name)) {
            model->data = path.data + pl;
            model->len = colon - 1 - pl;
            return methods[i].m;
        }
    }
    return G_NONE;
}

/* The model of the path, percent-decoded, in buf; 0 when unusable. */
static int
path_model(const mf_proto_call_t *call, gmethod_t *m, char *buf, size_t cap)
{
    mf_str_t enc = MF_STR_NULL;
    size_t i, n = 0;

    *m = gem_method(call->path, &enc);
    if (*m == G_NONE) {
        return 0;
    }
    for (i = 0; i < enc.len; i++) {
        unsigned char ch = (unsigned char)enc.data[i];

        if (ch == '%' && i + 2 < enc.len &&
            isxdigit((unsigned char)enc.data[i + 1]) &&
            isxdigit((unsigned char)enc.data[i + 2])) {
            char hex[3] = {enc.data[i + 1], enc.data[i + 2], '\0'};

            ch = (unsigned char)strtol(hex, NULL, 16);
            i += 2;
        }
        if (ch == '\0' || n + 1 >= cap) {
            return 0;
        }
        buf[n++] = (char)ch;
    }
    buf[n] = '\0';
    return n > 0;
}

/* Is alt=sse among the query's parameters? */
static int
query_sse(mf_str_t q)
{
    size_t i = 0;

    while (i < q.len) {
        size_t j = i;

        while (j < q.len && q.data[j] != '&') {
            j++;
        }
        if (mf_str_eq_cstr((mf_str_t){q.data + i, j - i}, "alt=sse")) {
            return 1;
        }
        i = j + 1;
    }
    return 0;
}

/* Request */

/* The text of Content parts joined (thoughts left out); malloc'd. */
static char *
parts_text(json_t *content)
{
    mf_buf_t b = {0};
    json_t *p;
    size_t i;

    json_array_foreach(json_object_get(content, "parts"), i, p)
    {
        json_t *t = json_object_get(p, "text");

        if (json_is_string(t) && !json_is_true(json_object_get(p, "thought"))) {
            mf_buf_append(&b, json_string_value(t), json_string_length(t));
        }
    }
    mf_buf_append(&b, "", 1);
    return b.data;
}

/* A Gemini Schema (OpenAPI subset, types in capitals) as JSON Schema:
 * the same tree with its type names in lower case. */
static json_t *
json_schema_of(json_t *in)
{
    json_t *out, *v;
    const char *key;

    if (json_is_array(in)) {
        size_t i;

        out = json_array();
        json_array_foreach(in, i, v)
        {
            json_array_append_new(out, json_schema_of(v));
        }
        return out;
    }
    if (!json_is_object(in)) {
        return json_incref(in);
    }
    out = json_object();
    json_object_foreach(in, key, v)
    {
        if (strcmp(key, "type") == 0 && json_is_string(v)) {
            char t[32];
            size_t i, n = json_string_length(v);

            for (i = 0; i < n && i + 1 < sizeof(t); i++) {
                t[i] = (char)tolower((unsigned char)json_string_value(v)[i]);
            }
            t[i] = '\0';
            json_object_set_new(out, key, json_string(t));
        } else if (strcmp(key, "properties") == 0 && json_is_object(v)) {
            json_t *props = json_object(), *p;
            const char *pk;

            json_object_foreach(v, pk, p)
            {
                json_object_set_new(props, pk, json_schema_of(p));
            }
            json_object_set_new(out, key, props);
        } else if (strcmp(key, "items") == 0 || strcmp(key, "anyOf") == 0) {
            json_object_set_new(out, key, json_schema_of(v));
        } else if (strcmp(key, "propertyOrdering") != 0) {
            json_object_set(out, key, v);
        }
    }
    return out;
}

/* Calls of the conversation so far, to give each functionResponse the id
 * of the call it answers (Gemini pairs them by name and order). */
typedef struct {
    json_t *calls; /* [{id, name, answered}] */
    int next;
} callbook_t;

static json_t *
call_id(callbook_t *cb, json_t *fc)
{
    json_t *id = json_object_get(fc, "id");
    char buf[32];

    if (json_is_string(id) && json_string_length(id) > 0) {
        id = json_incref(id);
    } else {
        snprintf(buf, sizeof(buf), "call_%d", cb->next++);
        id = json_string(buf);
    }
    json_array_append_new(
        cb->calls, mf_json_pack("{s:O,s:O,s:b}", "id", id, "name",
                                json_object_get(fc, "name"), "answered", 0));
    return id;
}

static json_t *
answer_id(callbook_t *cb, json_t *fr)
{
    json_t *id = json_object_get(fr, "id"), *c;
    const char *name = json_string_value(json_object_get(fr, "name"));
    size_t i;

    if (json_is_string(id) && json_string_length(id) > 0) {
        return json_incref(id);
    }
    json_array_foreach(cb->calls, i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));

        if (!json_is_true(json_object_get(c, "answered")) && n && name &&
            strcmp(n, name) == 0) {
            json_object_set_new(c, "answered", json_true());
            return json_incref(json_object_get(c, "id"));
        }
    }
    return json_string("call_unmatched");
}

/* An inlineData or fileData part as a canonical image_url part. */
static json_t *
media_part(json_t *p)
{
    json_t *d = json_object_get(p, "inlineData");

    if (json_is_object(d)) {
        const char *mt = json_string_value(json_object_get(d, "mimeType"));
        const char *data = json_string_value(json_object_get(d, "data"));
        json_t *out;
        mf_buf_t url = {0};

        if (mt == NULL || data == NULL) {
            return NULL;
        }
        mf_buf_printf(&url, "data:%s;base64,%s", mt, data);
        out = mf_json_pack("{s:s,s:{s:s%}}", "type", "image_url", "image_url",
                           "url", url.data, url.len);
        mf_buf_free(&url);
        return out;
    }
    d = json_object_get(p, "fileData");
    if (json_is_string(json_object_get(d, "fileUri"))) {
        return mf_json_pack("{s:s,s:{s:O}}", "type", "image_url", "image_url",
                            "url", json_object_get(d, "fileUri"));
    }
    return NULL;
}

/* A user turn: functionResponse parts become tool messages, the rest one
 * user message (a string when it is one text). */
static void
user_turn(json_t *msgs, json_t *content, callbook_t *cb)
{
    json_t *parts = json_array(), *p, *v;
    size_t i;
    int only_text = 1;

    json_array_foreach(json_object_get(content, "parts"), i, p)
    {
        if (json_is_object(v = json_object_get(p, "functionResponse"))) {
            json_t *resp = json_object_get(v, "response");
            char *text = mf_json_dumps(resp ? resp : json_object_get(v, "name"),
                                       JSON_COMPACT | JSON_ENCODE_ANY);

            json_array_append_new(msgs,
                                  mf_json_pack("{s:s,s:o,s:s}", "role", "tool",
                                               "tool_call_id", answer_id(cb, v),
                                               "content", text ? text : "{}"));
            free(text);
        } else if (json_is_string(v = json_object_get(p, "text"))) {
            json_array_append_new(
                parts, mf_json_pack("{s:s,s:O}", "type", "text", "text", v));
        } else if ((v = media_part(p)) != NULL) {
            json_array_append_new(parts, v);
            only_text = 0;
        }
    }
    if (json_array_size(parts) == 0) {
        json_decref(parts);
        return;
    }
    if (only_text && json_array_size(parts) == 1) {
        json_array_append_new(
            msgs,
            mf_json_pack("{s:s,s:O}", "role", "user", "content",
                         json_object_get(json_array_get(parts, 0), "text")));
        json_decref(parts);
        return;
    }
    json_array_append_new(
        msgs, mf_json_pack("{s:s,s:o}", "role", "user", "content", parts));
}

/* A model turn: its text (thoughts left out) and functionCall parts as
 * an assistant message with tool_calls. */
static void
model_turn(json_t *msgs, json_t *content, callbook_t *cb)
{
    json_t *calls = json_array(), *p, *fc, *m;
    char *text = parts_text(content);
    size_t i;

    json_array_foreach(json_object_get(content, "parts"), i, p)
    {
        if (json_is_object(fc = json_object_get(p, "functionCall"))) {
            json_t *args = json_object_get(fc, "args");
            char *a = args ? mf_json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY)
                           : NULL;

            json_array_append_new(calls,
                                  mf_json_pack("{s:o,s:s,s:{s:O,s:s}}", "id",
                                               call_id(cb, fc), "type",
                                               "function", "function", "name",
                                               json_object_get(fc, "name"),
                                               "arguments", a ? a : "{}"));
            free(a);
        }
    }
    m = mf_json_pack("{s:s,s:o}", "role", "assistant", "content",
                     text[0] ? json_string(text) : json_null());
    free(text);
    if (json_array_size(calls) > 0) {
        json_object_set_new(m, "tool_calls", calls);
    } else {
        json_decref(calls);
    }
    json_array_append_new(msgs, m);
}

/* tools: functionDeclarations to function tools; Google's built-in tools
 * (googleSearch, codeExecution, ...) run only on its service. */
static int
tools_of(json_t *in, json_t *out, const char **err)
{
    json_t *tools = json_array(), *t, *d, *cfg, *v;
    const char *key;
    size_t i, j;

    json_array_foreach(json_object_get(in, "tools"), i, t)
    {
        json_object_foreach(t, key, v)
        {
            if (strcmp(key, "functionDeclarations") != 0) {
                json_decref(tools);
                *err = "tools: only functionDeclarations are served here; "
                       "Google's built-in tools (googleSearch, codeExecution, "
                       "urlContext, ...) run only on Google's own service";
                return MF_ERR;
            }
        }
        json_array_foreach(json_object_get(t, "functionDeclarations"), j, d)
        {
            json_t *fn, *params;

            if (!json_is_string(json_object_get(d, "name"))) {
                json_decref(tools);
                *err = "tools: each function declaration needs a name";
                return MF_ERR;
            }
            fn = mf_json_pack("{s:O}", "name", json_object_get(d, "name"));
            if (json_is_string(json_object_get(d, "description"))) {
                json_object_set(fn, "description",
                                json_object_get(d, "description"));
            }
            params = json_object_get(d, "parametersJsonSchema");
            if (json_is_object(params)) {
                json_object_set(fn, "parameters", params);
            } else if (json_is_object(params =
                                          json_object_get(d, "parameters"))) {
                json_object_set_new(fn, "parameters", json_schema_of(params));
            } else {
                json_object_set_new(
                    fn, "parameters",
                    mf_json_pack("{s:s,s:{}}", "type", "object", "properties"));
            }
            json_array_append_new(
                tools,
                mf_json_pack("{s:s,s:o}", "type", "function", "function", fn));
        }
    }
    if (json_array_size(tools) == 0) {
        json_decref(tools);
        return MF_OK;
    }
    json_object_set_new(out, "tools", tools);
    cfg = json_object_get(json_object_get(in, "toolConfig"),
                          "functionCallingConfig");
    key = json_string_value(json_object_get(cfg, "mode"));
    v = json_object_get(cfg, "allowedFunctionNames");
    if (key == NULL) {
        return MF_OK;
    }
    if (strcmp(key, "NONE") == 0) {
        json_object_set_new(out, "tool_choice", json_string("none"));
    } else if (strcmp(key, "ANY") == 0 && json_array_size(v) == 1) {
        json_object_set_new(out, "tool_choice",
                            mf_json_pack("{s:s,s:{s:O}}", "type", "function",
                                         "function", "name",
                                         json_array_get(v, 0)));
    } else if (strcmp(key, "ANY") == 0) {
        json_object_set_new(out, "tool_choice", json_string("required"));
    } else {
        json_object_set_new(out, "tool_choice", json_string("auto"));
    }
    return MF_OK;
}

/* generationConfig to the chat request's settings. */
static void
generation_of(json_t *in, json_t *out)
{
    static const struct {
        const char *from, *to;
    } same[] = {{"temperature", "temperature"},
                {"topP", "top_p"},
                {"topK", "top_k"},
                {"maxOutputTokens", "max_tokens"},
                {"stopSequences", "stop"},
                {"presencePenalty", "presence_penalty"},
                {"frequencyPenalty", "frequency_penalty"},
                {"seed", "seed"},
                {NULL, NULL}};
    json_t *gc = json_object_get(in, "generationConfig"), *v, *schema;
    const char *mime;
    size_t i;

    if (!json_is_object(gc)) {
        return;
    }
    for (i = 0; same[i].from != NULL; i++) {
        if ((v = json_object_get(gc, same[i].from)) != NULL &&
            !json_is_null(v)) {
            json_object_set(out, same[i].to, v);
        }
    }
    if (json_is_integer(v = json_object_get(gc, "candidateCount")) &&
        json_integer_value(v) > 1) {
        json_object_set(out, "n", v);
    }
    mime = json_string_value(json_object_get(gc, "responseMimeType"));
    if (mime != NULL && strcmp(mime, "application/json") == 0) {
        schema = json_object_get(gc, "responseJsonSchema");
        if (!json_is_object(schema)) {
            schema = json_object_get(gc, "responseSchema");
            schema = json_is_object(schema) ? json_schema_of(schema) : NULL;
        } else {
            json_incref(schema);
        }
        json_object_set_new(
            out, "response_format",
            schema ? mf_json_pack("{s:s,s:{s:s,s:o}}", "type", "json_schema",
                                  "json_schema", "name", "response", "schema",
                                  schema)
                   : mf_json_pack("{s:s}", "type", "json_object"));
    }
    v = json_object_get(gc, "thinkingConfig");
    if (json_is_string(json_object_get(v, "thinkingLevel"))) {
        json_object_set(out, "reasoning_effort",
                        json_object_get(v, "thinkingLevel"));
    } else if (json_is_integer(json_object_get(v, "thinkingBudget"))) {
        json_int_t b = json_integer_value(json_object_get(v, "thinkingBudget"));

        /* 0 is off and -1 dynamic: the upstream's default either way */
        if (b > 0) {
            json_object_set_new(out, "reasoning_effort",
                                json_string(b <= 1024   ? "low"
                                            : b <= 8192 ? "medium"
                                                        : "high"));
        }
    }
}

static json_t *
chat_request(const char *model, json_t *in, int stream, const char **err)
{
    json_t *contents = json_object_get(in, "contents"), *msgs, *c, *out;
    callbook_t cb = {json_array(), 0};
    size_t i;

    if (!json_is_array(contents) || json_array_size(contents) == 0) {
        json_decref(cb.calls);
        *err = "contents is required: a non-empty list of {role, parts} "
               "turns";
        return NULL;
    }
    if (json_object_get(in, "cachedContent") != NULL) {
        json_decref(cb.calls);
        *err = "cachedContent names a cache stored on Google's own service, "
               "which this gateway cannot read; send the content itself";
        return NULL;
    }
    msgs = json_array();
    c = json_object_get(in, "systemInstruction");
    if (json_is_object(c)) {
        char *t = parts_text(c);

        if (t[0] != '\0') {
            json_array_append_new(msgs, mf_json_pack("{s:s,s:s}", "role",
                                                     "system", "content", t));
        }
        free(t);
    }
    json_array_foreach(contents, i, c)
    {
        const char *role = json_string_value(json_object_get(c, "role"));

        if (!json_is_object(c)) {
            json_decref(msgs);
            json_decref(cb.calls);
            *err = "contents: each turn must be an object with parts";
            return NULL;
        }
        if (role != NULL && strcmp(role, "model") == 0) {
            model_turn(msgs, c, &cb);
        } else {
            user_turn(msgs, c, &cb);
        }
    }
    json_decref(cb.calls);
    out = mf_json_pack("{s:s,s:o}", "model", model, "messages", msgs);
    if (tools_of(in, out, err) != MF_OK) {
        json_decref(out);
        return NULL;
    }
    generation_of(in, out);
    if (stream) {
        json_object_set_new(out, "stream", json_true());
        json_object_set_new(out, "stream_options",
                            mf_json_pack("{s:b}", "include_usage", 1));
    }
    return out;
}

/* embedContent's content, or a batch's requests, to embeddings input. */
static json_t *
embed_request(const char *model, json_t *in, int batch, const char **err)
{
    json_t *input = json_array(), *reqs, *r, *dims = NULL;
    size_t i;

    reqs = batch ? json_object_get(in, "requests") : NULL;
    if (batch && (!json_is_array(reqs) || json_array_size(reqs) == 0)) {
        json_decref(input);
        *err = "requests is required: a non-empty list of {content} "
               "requests";
        return NULL;
    }
    if (!batch) {
        reqs = mf_json_pack("[O]", in);
    } else {
        json_incref(reqs);
    }
    json_array_foreach(reqs, i, r)
    {
        json_t *content = json_object_get(r, "content");
        char *t;

        if (!json_is_object(content)) {
            json_decref(reqs);
            json_decref(input);
            *err = "content is required: {parts: [{text}]}";
            return NULL;
        }
        t = parts_text(content);
        json_array_append_new(input, json_string(t));
        free(t);
        if (dims == NULL &&
            json_is_integer(json_object_get(r, "outputDimensionality"))) {
            dims = json_object_get(r, "outputDimensionality");
        }
    }
    r = mf_json_pack("{s:s,s:O}", "model", model, "input",
                     batch ? input : json_array_get(input, 0));
    if (dims != NULL) {
        json_object_set(r, "dimensions", dims);
    }
    json_decref(reqs);
    json_decref(input);
    return r;
}

static json_t *
gemini_request(const mf_proto_call_t *call, json_t *in, const char **err)
{
    char model[256];
    gmethod_t m;

    if (!path_model(call, &m, model, sizeof(model))) {
        *err = "the model in the path is missing or not a valid name";
        return NULL;
    }
    if (m == G_EMBED || m == G_BATCH) {
        return embed_request(model, in, m == G_BATCH, err);
    }
    return chat_request(model, in, m == G_STREAM, err);
}

/* Response */

static const char *
finish_of(const char *f)
{
    if (f == NULL) {
        return "STOP";
    }
    if (strcmp(f, "length") == 0) {
        return "MAX_TOKENS";
    }
    if (strcmp(f, "content_filter") == 0) {
        return "SAFETY";
    }
    return "STOP";
}

static json_t *
usage_of(const mf_usage_t *u)
{
    int64_t in = u->prompt_tokens > 0 ? u->prompt_tokens : 0;
    int64_t out = u->completion_tokens > 0 ? u->completion_tokens : 0;
    int64_t think = u->reasoning_tokens > 0 ? u->reasoning_tokens : 0;
    json_t *j;

    if (think > out) {
        think = out;
    }
    j = mf_json_pack("{s:I,s:I,s:I}", "promptTokenCount", (json_int_t)in,
                     "candidatesTokenCount", (json_int_t)(out - think),
                     "totalTokenCount", (json_int_t)(in + out));
    if (u->cached_tokens > 0) {
        json_object_set_new(j, "cachedContentTokenCount",
                            json_integer(u->cached_tokens));
    }
    if (think > 0) {
        json_object_set_new(j, "thoughtsTokenCount", json_integer(think));
    }
    return j;
}

/* A functionCall part of a canonical tool call. */
static json_t *
call_part(json_t *id, json_t *name, const char *args)
{
    json_t *a = args ? json_loads(args, 0, NULL) : NULL, *fc;

    if (!json_is_object(a)) {
        json_decref(a);
        a = json_object();
    }
    fc =
        mf_json_pack("{s:O,s:o}", "name", name ? name : json_null(), "args", a);
    if (json_is_string(id)) {
        json_object_set(fc, "id", id);
    }
    return mf_json_pack("{s:o}", "functionCall", fc);
}

static json_t *
embed_response(json_t *c, int batch)
{
    json_t *data = json_object_get(c, "data"), *out = json_array(), *d;
    size_t i;

    json_array_foreach(data, i, d)
    {
        json_t *v = json_object_get(d, "embedding");

        if (!json_is_array(v)) {
            json_decref(out);
            return NULL; /* base64 or missing: not a vector */
        }
        json_array_append_new(out, mf_json_pack("{s:O}", "values", v));
    }
    if (json_array_size(out) == 0) {
        json_decref(out);
        return NULL;
    }
    if (batch) {
        return mf_json_pack("{s:o}", "embeddings", out);
    }
    d = mf_json_pack("{s:O}", "embedding", json_array_get(out, 0));
    json_decref(out);
    return d;
}

static json_t *
gemini_response(const mf_proto_call_t *call, json_t *c, const mf_usage_t *u)
{
    json_t *cands = json_array(), *choice, *out;
    mf_str_t enc;
    gmethod_t m = gem_method(call->path, &enc);
    const char *id = json_string_value(json_object_get(c, "id"));
    size_t i;

    if (m == G_EMBED || m == G_BATCH) {
        json_decref(cands);
        return embed_response(c, m == G_BATCH);
    }
    json_array_foreach(json_object_get(c, "choices"), i, choice)
    {
        json_t *msg = json_object_get(choice, "message"), *parts = json_array();
        json_t *tc;
        const char *t = json_string_value(json_object_get(msg, "content"));
        const char *think =
            json_string_value(json_object_get(msg, "reasoning_content"));
        size_t k;

        if (think != NULL && think[0] != '\0') {
            json_array_append_new(
                parts, mf_json_pack("{s:s,s:b}", "text", think, "thought", 1));
        }
        if (t != NULL && t[0] != '\0') {
            json_array_append_new(parts, mf_json_pack("{s:s}", "text", t));
        }
        json_array_foreach(json_object_get(msg, "tool_calls"), k, tc)
        {
            json_t *fn = json_object_get(tc, "function");

            json_array_append_new(
                parts,
                call_part(json_object_get(tc, "id"),
                          json_object_get(fn, "name"),
                          json_string_value(json_object_get(fn, "arguments"))));
        }
        if (json_array_size(parts) == 0) {
            json_array_append_new(parts, mf_json_pack("{s:s}", "text", ""));
        }
        json_array_append_new(
            cands,
            mf_json_pack(
                "{s:{s:s,s:o},s:s,s:I}", "content", "role", "model", "parts",
                parts, "finishReason",
                finish_of(json_string_value(
                    json_object_get(choice, "finish_reason"))),
                "index",
                (json_int_t)(json_is_integer(json_object_get(choice, "index"))
                                 ? json_integer_value(
                                       json_object_get(choice, "index"))
                                 : (json_int_t)i)));
    }
    out = mf_json_pack("{s:o,s:o}", "candidates", cands, "usageMetadata",
                       usage_of(u));
    if (json_is_string(json_object_get(c, "model"))) {
        json_object_set(out, "modelVersion", json_object_get(c, "model"));
    }
    if (id != NULL) {
        json_object_set_new(out, "responseId", json_string(id));
    }
    return out;
}

/* Stream */

static const char *
gemini_stream_type(const mf_proto_call_t *call)
{
    mf_str_t enc;

    if (gem_method(call->path, &enc) == G_STREAM && !query_sse(call->query)) {
        return "application/json; charset=UTF-8";
    }
    return NULL;
}

static void
gemini_stream_init(void *state, const mf_proto_call_t *call, mf_str_t model)
{
    gemini_stream_t *s = state;

    memset(s, 0, sizeof(*s));
    s->json_array = gemini_stream_type(call) != NULL;
    snprintf(s->model, sizeof(s->model), "%.*s", (int)model.len, model.data);
}

static void
gemini_stream_free(void *state)
{
    gemini_stream_t *s = state;
    int i;

    for (i = 0; i < s->ntools; i++) {
        mf_buf_free(&s->tools[i].id);
        mf_buf_free(&s->tools[i].name);
        mf_buf_free(&s->tools[i].args);
    }
    s->ntools = 0;
}

/* One record: an SSE event, or the next element of the JSON array. */
static void
record(gemini_stream_t *s, mf_buf_t *out, json_t *j)
{
    char *text = mf_json_dumps(j, JSON_COMPACT);

    json_decref(j);
    if (text == NULL) {
        return;
    }
    if (s->json_array) {
        mf_buf_append(out, s->records == 0 ? "[" : ",\r\n",
                      s->records == 0 ? 1 : 3);
        mf_buf_append(out, text, strlen(text));
    } else {
        mf_buf_printf(out, "data: %s\r\n\r\n", text);
    }
    s->records++;
    free(text);
}

/* A response record of parts, with the finish reason and usage when it
 * is the last. */
static json_t *
chunk_json(gemini_stream_t *s, json_t *parts, const char *finish,
           const mf_usage_t *u)
{
    json_t *cand = mf_json_pack("{s:{s:s,s:o},s:i}", "content", "role", "model",
                                "parts", parts, "index", 0);
    json_t *j;

    if (finish != NULL) {
        json_object_set_new(cand, "finishReason", json_string(finish));
    }
    j = mf_json_pack("{s:[o],s:s}", "candidates", cand, "modelVersion",
                     s->model);
    if (u != NULL) {
        json_object_set_new(j, "usageMetadata", usage_of(u));
    }
    if (s->id[0] != '\0') {
        json_object_set_new(j, "responseId", json_string(s->id));
    }
    return j;
}

/* The record of a mid-stream event's text parts (its reasoning, then its
 * text; either NULL), written as record(s, out, chunk_json(s, parts,
 * NULL, NULL)) writes it, without building the tree. MF_ERR (nothing
 * written) when a string is not valid UTF-8. */
static int
text_record(gemini_stream_t *s, mf_buf_t *out, const char *thought,
            const char *text)
{
    mf_buf_t b = {0};
    int rc = MF_OK;

    MF_PROTO_PUT_LIT(&b, "{\"candidates\":[{\"content\":{\"role\":\"model\","
                         "\"parts\":[");
    if (thought != NULL) {
        MF_PROTO_PUT_LIT(&b, "{\"text\":");
        rc |= mf_proto_put_str(&b, thought);
        MF_PROTO_PUT_LIT(&b, ",\"thought\":true}");
    }
    if (text != NULL) {
        if (thought != NULL) {
            MF_PROTO_PUT_LIT(&b, ",");
        }
        MF_PROTO_PUT_LIT(&b, "{\"text\":");
        rc |= mf_proto_put_str(&b, text);
        MF_PROTO_PUT_LIT(&b, "}");
    }
    MF_PROTO_PUT_LIT(&b, "]},\"index\":0}],\"modelVersion\":");
    rc |= mf_proto_put_str(&b, s->model);
    if (s->id[0] != '\0') {
        MF_PROTO_PUT_LIT(&b, ",\"responseId\":");
        rc |= mf_proto_put_str(&b, s->id);
    }
    MF_PROTO_PUT_LIT(&b, "}");
    if (rc == MF_OK) {
        if (s->json_array) {
            mf_buf_append(out, s->records == 0 ? "[" : ",\r\n",
                          s->records == 0 ? 1 : 3);
            mf_buf_append(out, b.data, b.len);
        } else {
            mf_buf_append(out, "data: ", 6);
            mf_buf_append(out, b.data, b.len);
            mf_buf_append(out, "\r\n\r\n", 4);
        }
        s->records++;
    }
    mf_buf_free(&b);
    return rc == MF_OK ? MF_OK : MF_ERR;
}

static void
gemini_stream_event(void *state, mf_str_t data, int last,
                    const mf_usage_t *usage, mf_buf_t *out)
{
    gemini_stream_t *s = state;
    json_t *j, *choice, *d, *tc, *parts;
    const char *t, *think, *fin;
    size_t i;

    if (s->closed) {
        return;
    }
    if (last) {
        parts = json_array();
        for (i = 0; i < (size_t)s->ntools; i++) {
            gtool_t *g = &s->tools[i];
            json_t *id = g->id.len ? json_stringn(g->id.data, g->id.len) : NULL;
            json_t *name =
                json_stringn(g->name.data ? g->name.data : "", g->name.len);

            mf_buf_append(&g->args, "", 1);
            json_array_append_new(parts, call_part(id, name, g->args.data));
            json_decref(id);
            json_decref(name);
        }
        if (json_array_size(parts) == 0) {
            json_array_append_new(parts, mf_json_pack("{s:s}", "text", ""));
        }
        record(s, out,
               chunk_json(s, parts, finish_of(s->finish[0] ? s->finish : NULL),
                          usage));
        if (s->json_array) {
            mf_buf_append(out, "]", 1);
        }
        s->closed = 1;
        return;
    }
    j = mf_json_loadb(data.data, data.len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    if (s->id[0] == '\0' && json_is_string(json_object_get(j, "id"))) {
        snprintf(s->id, sizeof(s->id), "%s",
                 json_string_value(json_object_get(j, "id")));
    }
    choice = json_array_get(json_object_get(j, "choices"), 0);
    d = json_object_get(choice, "delta");
    think = json_string_value(json_object_get(d, "reasoning_content"));
    t = json_string_value(json_object_get(d, "content"));
    think = think != NULL && think[0] ? think : NULL;
    t = t != NULL && t[0] ? t : NULL;
    if (think != NULL || t != NULL) {
        /* not valid UTF-8 (the model's name): no record, as the tree
         * jansson refuses to build */
        (void)text_record(s, out, think, t);
    }
    json_array_foreach(json_object_get(d, "tool_calls"), i, tc)
    {
        json_int_t ti = json_integer_value(json_object_get(tc, "index"));
        json_t *fn = json_object_get(tc, "function");
        gtool_t *g;

        if (ti < 0 || ti >= GEM_TOOLS) {
            continue;
        }
        while (s->ntools <= ti) {
            memset(&s->tools[s->ntools], 0, sizeof(gtool_t));
            s->ntools++;
        }
        g = &s->tools[ti];
        if ((t = json_string_value(json_object_get(tc, "id"))) &&
            g->id.len == 0) {
            mf_buf_append(&g->id, t, strlen(t));
        }
        if ((t = json_string_value(json_object_get(fn, "name"))) &&
            g->name.len == 0) {
            mf_buf_append(&g->name, t, strlen(t));
        }
        if ((t = json_string_value(json_object_get(fn, "arguments")))) {
            if (mf_buf_try_append(&g->args, t, strlen(t)) != MF_OK) {
                continue; /* out of memory: the call's arguments end here */
            }
        }
    }
    if ((fin = json_string_value(json_object_get(choice, "finish_reason")))) {
        snprintf(s->finish, sizeof(s->finish), "%s", fin);
    }
    json_decref(j);
}

/* Errors */

/* google.rpc's status name for an HTTP status. */
static const char *
rpc_status(int status)
{
    switch (status) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 409:
        return "ABORTED";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 499:
        return "CANCELLED";
    case 501:
        return "UNIMPLEMENTED";
    case 502:
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return status >= 500 ? "INTERNAL" : "INVALID_ARGUMENT";
    }
}

static json_t *
error_json(const mf_proto_error_t *e)
{
    return mf_json_pack("{s:{s:i,s:s,s:s}}", "error", "code", e->status,
                        "message", e->message ? e->message : "error", "status",
                        rpc_status(e->status));
}

static char *
gemini_error_body(const mf_proto_error_t *e)
{
    json_t *j = error_json(e);
    char *text = j ? mf_json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return text;
}

/* The error as the stream's last record (a bare JSON object after the
 * SSE events, or the array's last element, the array then closed). */
static void
gemini_stream_error(void *state, const mf_proto_error_t *e, mf_buf_t *out)
{
    gemini_stream_t *s = state;
    char *text = gemini_error_body(e);

    if (text == NULL) {
        return;
    }
    if (s != NULL && s->json_array && !s->closed) {
        mf_buf_append(out, s->records == 0 ? "[" : ",\r\n",
                      s->records == 0 ? 1 : 3);
        mf_buf_append(out, text, strlen(text));
        mf_buf_append(out, "]", 1);
    } else if (s == NULL || !s->closed) {
        /* as Google's endpoint does: the error object bare, outside the
         * SSE framing (the GenAI SDKs raise it when it arrives alone) */
        mf_buf_printf(out, "%s\n", text);
    }
    if (s != NULL) {
        s->closed = 1;
    }
    free(text);
}

/* countTokens */

static size_t
value_bytes(json_t *v)
{
    char *t = v ? mf_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    size_t n = t ? strlen(t) : 0;

    free(t);
    return n;
}

/* Bytes of prompt in a Content: text, calls and results as JSON, about a
 * token's worth of framing a part, and 258 tokens an image or file (what
 * Gemini counts for an image). */
static size_t
content_bytes(json_t *content)
{
    json_t *p;
    size_t i, n = 0;

    json_array_foreach(json_object_get(content, "parts"), i, p)
    {
        n += 4 + json_string_length(json_object_get(p, "text"));
        if (json_object_get(p, "functionCall") != NULL) {
            n += value_bytes(json_object_get(p, "functionCall"));
        }
        if (json_object_get(p, "functionResponse") != NULL) {
            n += value_bytes(json_object_get(p, "functionResponse"));
        }
        if (json_object_get(p, "inlineData") != NULL ||
            json_object_get(p, "fileData") != NULL) {
            n += 258 * 4;
        }
    }
    return n;
}

/* POST :countTokens: the gateway's estimate (about 4 bytes a token) of
 * contents, or of a generateContentRequest's contents, system instruction
 * and tools, as {"totalTokens": N}; marked estimated by the host. */
static char *
gemini_local(const mf_proto_call_t *call, json_t *in, int *status,
             int *estimated, const char **err)
{
    json_t *req = json_object_get(in, "generateContentRequest"), *c;
    size_t i, n = 0;
    char buf[64];

    (void)call;
    if (!json_is_object(req)) {
        req = in;
    }
    if (!json_is_array(json_object_get(req, "contents"))) {
        *err = "contents is required: a list of {role, parts} turns (or a "
               "generateContentRequest holding it)";
        return NULL;
    }
    json_array_foreach(json_object_get(req, "contents"), i, c)
    {
        n += content_bytes(c);
    }
    n += content_bytes(json_object_get(req, "systemInstruction"));
    if (json_object_get(req, "tools") != NULL) {
        n += value_bytes(json_object_get(req, "tools"));
    }
    snprintf(buf, sizeof(buf), "{\"totalTokens\":%zu}", (n + 3) / 4);
    *status = 200;
    *estimated = 1;
    return mf_xstrdup(buf);
}

/* :countTokens forwarded: the contents (or the generateContentRequest,
 * with its system instruction and tools) as a chat request for the
 * model of the path. */
static json_t *
gemini_count_request(const mf_proto_call_t *call, json_t *in, const char **err)
{
    json_t *req = json_object_get(in, "generateContentRequest");
    char model[256];
    gmethod_t m;

    if (!path_model(call, &m, model, sizeof(model))) {
        *err = "the model in the path is missing or not a valid name";
        return NULL;
    }
    return chat_request(model, json_is_object(req) ? req : in, 0, err);
}

static char *
gemini_count_answer(int64_t tokens)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "{\"totalTokens\":%lld}", (long long)tokens);
    return mf_xstrdup(buf);
}

/* Models */

static int
gemini_models_path(mf_str_t path, mf_str_t *id)
{
    size_t pl = models_prefix(path);

    *id = MF_STR_NULL;
    if (mf_str_eq_cstr(path, "/v1beta/models") ||
        mf_str_eq_cstr(path, "/v1/models")) {
        return 1;
    }
    if (pl > 0 && path.len > pl &&
        memchr(path.data + pl, ':', path.len - pl) == NULL) {
        *id = (mf_str_t){path.data + pl, path.len - pl};
        return 1;
    }
    return 0;
}

/* One model in Google's shape. The two joined strings are built here:
 * mf_json_pack hands a format with '+' to jansson, whose packer cost
 * about 2.5 times this per model of a list. */
static json_t *
gemini_model(const mf_proto_model_t *m)
{
    static const char by[] = "Served through Manifold by ";
    size_t nid = strlen(m->id), nown = strlen(m->owner);
    char *name = malloc(7 + nid + 1), *desc = malloc(sizeof(by) + nown);
    json_t *j = NULL;

    if (name != NULL && desc != NULL) {
        memcpy(name, "models/", 7);
        memcpy(name + 7, m->id, nid + 1);
        memcpy(desc, by, sizeof(by) - 1);
        memcpy(desc + sizeof(by) - 1, m->owner, nown + 1);
        j = mf_json_pack("{s:s,s:s,s:s,s:[s,s,s,s,s]}", "name", name,
                         "displayName", m->id, "description", desc,
                         "supportedGenerationMethods", "generateContent",
                         "streamGenerateContent", "countTokens", "embedContent",
                         "batchEmbedContents");
    }
    free(name);
    free(desc);
    return j;
}

static json_t *
gemini_model_list(json_t *entries)
{
    return mf_json_pack("{s:o}", "models", entries);
}

static mf_proto_match_t
gemini_match(mf_str_t path, mf_endpoint_t *endpoint)
{
    mf_str_t model;

    switch (gem_method(path, &model)) {
    case G_GENERATE:
    case G_STREAM:
        *endpoint = MF_ENDPOINT_CHAT;
        return MF_PROTO_SERVES;
    case G_COUNT:
        *endpoint = MF_ENDPOINT_CHAT;
        return MF_PROTO_LOCAL;
    case G_EMBED:
    case G_BATCH:
        *endpoint = MF_ENDPOINT_EMBEDDINGS;
        return MF_PROTO_SERVES;
    default:
        break;
    }
    if (mf_str_eq_cstr(path, "/v1beta") ||
        mf_proto_has_prefix(path, "/v1beta/")) {
        return MF_PROTO_OWNS;
    }
    return MF_PROTO_NO;
}

/* The templates of gem_method's paths, by method, for each prefix */
#define ROUTE(lit)                                                             \
    {                                                                          \
        (lit), sizeof(lit) - 1                                                 \
    }
static mf_str_t
gemini_route(mf_str_t path)
{
    static const mf_str_t beta[] = {
        {NULL, 0},
        ROUTE("/v1beta/models/{model}:generateContent"),
        ROUTE("/v1beta/models/{model}:streamGenerateContent"),
        ROUTE("/v1beta/models/{model}:countTokens"),
        ROUTE("/v1beta/models/{model}:embedContent"),
        ROUTE("/v1beta/models/{model}:batchEmbedContents")};
    static const mf_str_t v1[] = {
        {NULL, 0},
        ROUTE("/v1/models/{model}:generateContent"),
        ROUTE("/v1/models/{model}:streamGenerateContent"),
        ROUTE("/v1/models/{model}:countTokens"),
        ROUTE("/v1/models/{model}:embedContent"),
        ROUTE("/v1/models/{model}:batchEmbedContents")};
    mf_str_t model;
    gmethod_t m = gem_method(path, &model);

    if (m != G_NONE) {
        return mf_proto_has_prefix(path, GEM_PREFIX) ? beta[m] : v1[m];
    }
    if (mf_str_eq_cstr(path, "/v1beta/models")) {
        return path;
    }
    if (mf_proto_has_prefix(path, GEM_PREFIX)) {
        return MF_STR("/v1beta/models/{model}");
    }
    return MF_STR_NULL;
}
#undef ROUTE

const mf_proto_t mf_proto_gemini = {
    .name = "gemini",
    .method = "POST",
    .match = gemini_match,
    .request = gemini_request,
    .error_body = gemini_error_body,
    .stream_error = gemini_stream_error,
    .response = gemini_response,
    .stream_size = sizeof(gemini_stream_t),
    .stream_init = gemini_stream_init,
    .stream_event = gemini_stream_event,
    .local = gemini_local,
    .count_request = gemini_count_request,
    .count_answer = gemini_count_answer,
    .stream_free = gemini_stream_free,
    .stream_type = gemini_stream_type,
    .models_path = gemini_models_path,
    .route = gemini_route,
    .model = gemini_model,
    .model_list = gemini_model_list,
    .models_header = "x-goog-api-key",
    .endpoints = "POST /v1beta/models/{model}:generateContent (and "
                 ":streamGenerateContent, :countTokens, :embedContent, "
                 ":batchEmbedContents), GET /v1beta/models",
};
