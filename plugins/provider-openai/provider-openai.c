/*
 * provider-openai: every OpenAI-compatible API, as named presets (openai,
 * deepseek, qwen, moonshot, zhipu, doubao, ...; the table below) with
 * their quirks: OpenAI-only request fields are dropped for the others,
 * Anthropic's cache_control for the APIs that refuse unknown fields,
 * max_completion_tokens becomes max_tokens where only that is known, and
 * stream usage is asked for where the API takes stream_options. The
 * request goes up untouched otherwise; usage is read from the body or the
 * final stream chunk (cache and reasoning fields of each vendor); errors
 * are mapped to the client's status with the upstream message (the host
 * masks the keys it may echo).
 */
#include <ctype.h>
#include <fnmatch.h>
#include <manifold/plugin.h>
#include <manifold/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/provider-util.h"
#include "responses-wire.h"

static const mf_host_api_t *api;

/* Quirks of a preset (bits). */
enum {
    Q_OPENAI_FIELDS = 1 << 0,  /* takes store, metadata, service_tier, ... */
    Q_MAX_COMPLETION = 1 << 1, /* knows max_completion_tokens */
    Q_STREAM_OPTIONS = 1 << 2, /* takes stream_options.include_usage */
    Q_NO_CACHE_CTL = 1 << 3    /* refuses (or has no use for) cache_control */
};

/* The presets: a type and its quirks. Each type is in openai_types too;
 * what a config needs for it (key variable, base URL, models) is in the
 * host's provider catalogue (cli/catalogue.c). */
typedef struct {
    const char *type;
    unsigned quirks;
} preset_t;

static const preset_t presets[] = {
    {.type = "openai",
     .quirks = Q_OPENAI_FIELDS | Q_MAX_COMPLETION | Q_STREAM_OPTIONS |
               Q_NO_CACHE_CTL},
    {.type = "openai-compatible", .quirks = Q_STREAM_OPTIONS},
    {.type = "azure",
     .quirks = Q_OPENAI_FIELDS | Q_MAX_COMPLETION | Q_STREAM_OPTIONS |
               Q_NO_CACHE_CTL},
    {.type = "deepseek", .quirks = Q_STREAM_OPTIONS},
    {.type = "qwen", .quirks = Q_STREAM_OPTIONS},
    {.type = "dashscope", .quirks = Q_STREAM_OPTIONS},
    {.type = "moonshot", .quirks = Q_STREAM_OPTIONS},
    {.type = "zhipu", .quirks = 0},
    {.type = "doubao", .quirks = Q_STREAM_OPTIONS},
    {.type = "hunyuan", .quirks = Q_STREAM_OPTIONS},
    {.type = "qianfan", .quirks = Q_STREAM_OPTIONS},
    {.type = "minimax", .quirks = Q_STREAM_OPTIONS},
    {.type = "stepfun", .quirks = 0},
    {.type = "yi", .quirks = 0},
    {.type = "baichuan", .quirks = 0},
    {.type = "spark", .quirks = 0},
    {.type = "siliconflow", .quirks = Q_STREAM_OPTIONS},
    {.type = "groq",
     .quirks = Q_STREAM_OPTIONS | Q_MAX_COMPLETION | Q_NO_CACHE_CTL},
    {.type = "mistral", .quirks = Q_NO_CACHE_CTL},
    {.type = "together", .quirks = Q_STREAM_OPTIONS},
    {.type = "fireworks", .quirks = Q_STREAM_OPTIONS},
    {.type = "openrouter", .quirks = Q_STREAM_OPTIONS | Q_MAX_COMPLETION},
    {.type = "xai", .quirks = Q_STREAM_OPTIONS | Q_MAX_COMPLETION},
    {.type = "perplexity", .quirks = 0},
    {.type = "ollama", .quirks = Q_STREAM_OPTIONS | Q_NO_CACHE_CTL},
    {.type = "vllm",
     .quirks = Q_STREAM_OPTIONS | Q_MAX_COMPLETION | Q_NO_CACHE_CTL},
};

static const preset_t *
preset_of(mf_str_t type)
{
    size_t i;

    for (i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
        if (strlen(presets[i].type) == type.len &&
            memcmp(presets[i].type, type.data, type.len) == 0) {
            return &presets[i];
        }
    }
    return &presets[1];
}

/* Fields only OpenAI's API takes; dropped for the others (some refuse
 * unknown fields with a 400). */
static const char *const openai_only[] = {"store", "metadata", "service_tier",
                                          "prediction", NULL};

typedef struct {
    char *name;
    char api_version[64]; /* azure */
    json_t *deployments;  /* azure: model -> deployment */
    /* options.wire: responses (every model), or options.responses_models
     * (the models that match one of its patterns): chat requests go to
     * the Responses API (responses-wire.c) */
    int responses_all;
    json_t *responses_models;
} openai_state_t;

/* The Responses wire of one attempt (its provider_ctx). */
typedef struct {
    rw_stream_t stream;
} responses_attempt_t;

/* Whether the attempt's model goes over the Responses API. */
static int
wants_responses(const openai_state_t *st, mf_str_t model)
{
    char m[512];
    json_t *p;
    size_t i;

    if (st->responses_all) {
        return 1;
    }
    if (st->responses_models == NULL || model.len >= sizeof(m)) {
        return 0;
    }
    snprintf(m, sizeof(m), "%.*s", (int)model.len, model.data);
    json_array_foreach(st->responses_models, i, p)
    {
        if (fnmatch(json_string_value(p), m, 0) == 0) {
            return 1;
        }
    }
    return 0;
}

/* options.wire and options.responses_models: MF_ERR (logged) when they
 * are not what the provider takes. */
static int
read_wire_options(openai_state_t *st, json_t *conf)
{
    json_t *opt = json_object_get(conf, "options");
    json_t *wire = json_object_get(opt, "wire");
    json_t *models = json_object_get(opt, "responses_models"), *p;
    const char *type = json_string_value(json_object_get(conf, "type"));
    size_t i;

    if (wire != NULL && (!json_is_string(wire) ||
                         (strcmp(json_string_value(wire), "chat") != 0 &&
                          strcmp(json_string_value(wire), "responses") != 0))) {
        api->log(MF_LOG_ERROR,
                 "provider '%s': options.wire must be chat or responses",
                 st->name);
        return MF_ERR;
    }
    if (models != NULL && !json_is_array(models)) {
        api->log(MF_LOG_ERROR,
                 "provider '%s': options.responses_models must be a list of "
                 "model names or patterns",
                 st->name);
        return MF_ERR;
    }
    json_array_foreach(models, i, p)
    {
        if (!json_is_string(p) || json_string_length(p) == 0) {
            api->log(MF_LOG_ERROR,
                     "provider '%s': options.responses_models[%zu] must be a "
                     "model name or pattern",
                     st->name, i);
            return MF_ERR;
        }
    }
    st->responses_all =
        wire != NULL && strcmp(json_string_value(wire), "responses") == 0;
    if ((st->responses_all || json_array_size(models) > 0) && type != NULL &&
        strcmp(type, "azure") == 0) {
        api->log(MF_LOG_ERROR,
                 "provider '%s': the Responses wire is not served for azure "
                 "(its deployments' Responses paths differ); use type "
                 "openai with the resource's /openai/v1 base_url",
                 st->name);
        return MF_ERR;
    }
    st->responses_models =
        json_array_size(models) > 0 ? json_incref(models) : NULL;
    return MF_OK;
}

static int
openai_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    openai_state_t *st = calloc(1, sizeof(*st));

    api = host;
    if (st == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    st->name = strdup(json_string_value(json_object_get(conf, "name"))
                          ? json_string_value(json_object_get(conf, "name"))
                          : "openai");
    snprintf(st->api_version, sizeof(st->api_version), "%s",
             json_string_value(json_object_get(conf, "api_version"))
                 ? json_string_value(json_object_get(conf, "api_version"))
                 : "2024-10-21");
    st->deployments = json_incref(json_object_get(conf, "deployments"));
    if (read_wire_options(st, conf) != MF_OK) {
        json_decref(conf);
        json_decref(st->deployments);
        free(st->name);
        free(st);
        return MF_ERR;
    }
    json_decref(conf);
    *state = st;
    return MF_OK;
}

static void
openai_fini(void *state)
{
    openai_state_t *st = state;

    json_decref(st->deployments);
    json_decref(st->responses_models);
    free(st->name);
    free(st);
}

static int
has_field(mf_req_t *r, const char *key)
{
    mf_str_t v;

    return api->get_body_field(r, (mf_str_t){key, strlen(key)}, &v) == MF_OK;
}

/* Whether the canonical messages carry reasoning items (the Responses
 * API's, from a Responses client), which only the Responses wire reads
 * and strict chat servers refuse. */
static int
has_reasoning_items(mf_req_t *r)
{
    static const char key[] = "\"reasoning_items\""; /* '_' at 10 */
    mf_str_t v;
    const char *p, *end;

    if (api->get_body_field(r, MF_STR("messages"), &v) != MF_OK) {
        return 0;
    }
    /* each '_' (memchr is cheaper than memmem's setup on every request) */
    end = v.data + v.len;
    for (p = v.data; p < end && (p = memchr(p, '_', (size_t)(end - p))); p++) {
        if (p - v.data >= 10 && end - p >= 7 &&
            memcmp(p - 10, key, sizeof(key) - 1) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The reasoning items taken out of the messages (no chat server reads
 * them). A reasoning item between two function calls of one answer made
 * the second its own assistant message (its place, for the wires that
 * read it): without it, that message joins the one before, as chat
 * wants one assistant message holding the calls its tool results
 * answer. */
static void
strip_reasoning(mf_req_t *r, json_t *msgs)
{
    size_t i = 0;

    while (i < json_array_size(msgs)) {
        json_t *m = json_array_get(msgs, i);
        json_t *prev = i > 0 ? json_array_get(msgs, i - 1) : NULL;
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *prole = json_string_value(json_object_get(prev, "role"));
        json_t *calls, *pcalls, *c, *pc;

        if (json_object_del(m, "reasoning_items") != 0) {
            i++;
            continue;
        }
        api->body_changed(r);
        pcalls = json_object_get(prev, "tool_calls");
        calls = json_object_get(m, "tool_calls");
        if (role == NULL || prole == NULL || strcmp(role, "assistant") != 0 ||
            strcmp(prole, "assistant") != 0 || !json_is_array(pcalls)) {
            i++;
            continue;
        }
        c = json_object_get(m, "content");
        pc = json_object_get(prev, "content");
        if (json_is_string(c) && json_string_length(c) > 0) {
            if (json_is_string(pc) && json_string_length(pc) > 0) {
                json_object_set_new(prev, "content",
                                    mf_json_pack("s++", json_string_value(pc),
                                                 "\n", json_string_value(c)));
            } else {
                json_object_set(prev, "content", c);
            }
        }
        if (json_is_array(calls)) {
            json_array_extend(pcalls, calls);
        }
        json_array_remove(msgs, i);
    }
}

/* Whether the raw text of the body's member key holds needle (a false
 * positive only costs a parse). */
static int
field_holds(mf_req_t *r, const char *key, const char *needle)
{
    mf_str_t v;

    return api->get_body_field(r, (mf_str_t){key, strlen(key)}, &v) == MF_OK &&
           memmem(v.data, v.len, needle, strlen(needle)) != NULL;
}

static int
field_has_cache_control(mf_req_t *r, const char *key)
{
    return field_holds(r, key, "\"cache_control\"");
}

/* A document part (see provider-util.h) as Chat Completions documents
 * it: a PDF as a file part with file_data, a text document as a text
 * part (OpenAI's advice for text files); cache_control kept. New
 * reference, NULL for another kind or on OOM. */
static json_t *
document_to_chat(json_t *p)
{
    json_t *src = json_object_get(p, "source"), *title, *np;
    const char *data = json_string_value(json_object_get(src, "data"));
    unsigned kind = pu_document_kind(p);
    size_t len;
    char *url;

    if (kind == PU_DOC_TEXT) {
        np = mf_json_pack("{s:s,s:s}", "type", "text", "text", data);
    } else if (kind == PU_DOC_PDF) {
        title = json_object_get(p, "title");
        len = strlen(data) + 32;
        if ((url = malloc(len)) == NULL) {
            return NULL;
        }
        snprintf(url, len, "data:application/pdf;base64,%s", data);
        np = mf_json_pack(
            "{s:s,s:{s:s,s:s}}", "type", "file", "file", "filename",
            json_is_string(title) ? json_string_value(title) : "document.pdf",
            "file_data", url);
        free(url);
    } else {
        return NULL;
    }
    if (np != NULL && json_is_object(json_object_get(p, "cache_control"))) {
        json_object_set(np, "cache_control",
                        json_object_get(p, "cache_control"));
    }
    return np;
}

/* A 400 naming the document the wire has no form for; 1 when there is
 * one (the request is not sent). */
static int
document_refused(mf_req_t *r, const char *name, json_t *body, unsigned takes)
{
    const char *src;

    if (!pu_document_refused(body, takes, &src)) {
        return 0;
    }
    pu_error(api, r, 400, "invalid_request_error", "unsupported_document",
             "provider '%s' cannot take a document block with a '%s' "
             "source: %s takes a base64 PDF, a text document%s; other "
             "documents need a model an Anthropic provider serves",
             name, src,
             takes & PU_DOC_URL ? "the Responses API" : "Chat Completions",
             takes & PU_DOC_URL ? " or a URL" : "");
    return 1;
}

/* Every document part of the messages to its Chat Completions form; 1
 * when one was changed. */
static int
documents_to_chat(json_t *body)
{
    json_t *m, *p, *np;
    size_t i, j;
    int n = 0;

    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        json_array_foreach(json_object_get(m, "content"), j, p)
        {
            const char *type = json_string_value(json_object_get(p, "type"));

            if (type != NULL && strcmp(type, "document") == 0 &&
                (np = document_to_chat(p)) != NULL) {
                json_array_set_new(json_object_get(m, "content"), j, np);
                n++;
            }
        }
    }
    return n > 0;
}

/* Drops every cache_control member (Anthropic's prompt-cache breakpoint)
 * from the messages, their content parts and the tools; 1 when one was
 * dropped. */
static int
strip_cache_control(json_t *body)
{
    json_t *m, *p, *t;
    size_t i, j;
    int n = 0;

    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        n += json_object_del(m, "cache_control") == 0;
        json_array_foreach(json_object_get(m, "content"), j, p)
        {
            n += json_object_del(p, "cache_control") == 0;
        }
    }
    json_array_foreach(json_object_get(body, "tools"), i, t)
    {
        n += json_object_del(t, "cache_control") == 0;
    }
    return n > 0;
}

/* Whether build_request may have to change the body for this upstream,
 * read from the body's fields without parsing it (ABI 1.3): 0 only when
 * it is sure not to (the original bytes then go up). */
static int
may_edit(mf_req_t *r, const mf_upstream_t *u)
{
    const preset_t *pre = preset_of(u->type);
    mf_str_t m;
    size_t i;

    if (api->abi_minor < 3 || api->get_body_field == NULL ||
        api->get_body_field(r, MF_STR("model"), &m) != MF_OK ||
        m.len != u->model.len + 2 || m.data[0] != '"' ||
        memchr(m.data, '\\', m.len) != NULL ||
        memcmp(m.data + 1, u->model.data, u->model.len) != 0) {
        return 1;
    }
    if (u->endpoint != MF_ENDPOINT_CHAT) {
        return 0;
    }
    if (has_field(r, "thinking") || has_field(r, "include") ||
        has_reasoning_items(r) ||
        ((pre->quirks & Q_OPENAI_FIELDS) && has_field(r, "top_k")) ||
        field_holds(r, "messages", "\"document\"") ||
        ((pre->quirks & Q_NO_CACHE_CTL) &&
         (field_has_cache_control(r, "messages") ||
          field_has_cache_control(r, "tools"))) ||
        (u->stream && u->want_usage && (pre->quirks & Q_STREAM_OPTIONS))) {
        return 1;
    }
    for (i = 0; !(pre->quirks & Q_OPENAI_FIELDS) && openai_only[i]; i++) {
        if (has_field(r, openai_only[i])) {
            return 1;
        }
    }
    return (!(pre->quirks & Q_MAX_COMPLETION) &&
            has_field(r, "max_completion_tokens")) ||
           (!(pre->quirks & Q_STREAM_OPTIONS) &&
            has_field(r, "stream_options"));
}

/* A chat request to a model served over the Responses API. */
static int
build_responses(mf_req_t *r, const openai_state_t *st, const mf_upstream_t *u)
{
    json_t *body = api->get_body_json(r), *out;
    responses_attempt_t *ra;
    char url[2048], auth[1024], *text;
    int n, rc;

    if (body == NULL || api->abi_minor < 6 || api->set_upstream_wire == NULL) {
        return MF_ERR;
    }
    if (document_refused(r, st->name, body,
                         PU_DOC_PDF | PU_DOC_TEXT | PU_DOC_URL)) {
        return MF_ERR;
    }
    ra = api->palloc(r, sizeof(*ra));
    if (ra == NULL) {
        return MF_ERR;
    }
    rw_stream_init(&ra->stream);
    *api->provider_ctx(r) = ra;
    api->set_upstream_wire(r, MF_STR("openai-responses"));
    n = snprintf(url, sizeof(url), "%.*s/responses", (int)u->base_url.len,
                 u->base_url.data);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        return MF_ERR;
    }
    api->set_upstream_url(r, (mf_str_t){url, (size_t)n});
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("content-type"),
                    MF_STR("application/json"));
    if (u->key.len > 0 && u->key.len < sizeof(auth) - 8) {
        n = snprintf(auth, sizeof(auth), "Bearer %.*s", (int)u->key.len,
                     u->key.data);
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("authorization"),
                        (mf_str_t){auth, (size_t)n});
    }
    if (u->stream) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("accept"),
                        MF_STR("text/event-stream"));
    }
    out = rw_request(body, u->model, u->stream);
    text = out ? mf_json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (text == NULL) {
        return MF_ERR;
    }
    rc = api->set_upstream_body(r, (mf_str_t){text, strlen(text)});
    free(text);
    return rc;
}

/* The attempt's Responses state, NULL when it speaks chat. */
static responses_attempt_t *
responses_attempt(mf_req_t *r)
{
    return *api->provider_ctx(r);
}

static int
openai_build_request(mf_req_t *r, void *state, const mf_upstream_t *u)
{
    int edit;
    openai_state_t *ost = state;

    if (u->endpoint == MF_ENDPOINT_CHAT && wants_responses(ost, u->model)) {
        return build_responses(r, ost, u);
    }
    edit = may_edit(r, u);
    json_t *body = edit ? api->get_body_json(r) : NULL;
    const char *suffix = u->endpoint == MF_ENDPOINT_EMBEDDINGS
                             ? "/embeddings"
                             : "/chat/completions";
    char url[2048], auth[1024];
    json_t *model;
    int n, want_usage = u->want_usage;
    int azure = u->type.len == 5 && memcmp(u->type.data, "azure", 5) == 0;
    openai_state_t *st = state;

    if (u->endpoint == MF_ENDPOINT_CHAT && body != NULL &&
        document_refused(r, st->name, body, PU_DOC_PDF | PU_DOC_TEXT)) {
        return MF_ERR;
    }
    if (azure) {
        /* deployments: {model: deployment}; else the model names it */
        char mname[256], seg[1024];
        const char *dep;

        snprintf(mname, sizeof(mname), "%.*s", (int)u->model.len,
                 u->model.data);
        dep = u->model.len < sizeof(mname)
                  ? json_string_value(json_object_get(st->deployments, mname))
                  : NULL;
        if ((dep ? pu_model_segment(api, r, st->name, dep, strlen(dep), seg,
                                    sizeof(seg))
                 : pu_model_segment(api, r, st->name, u->model.data,
                                    u->model.len, seg, sizeof(seg))) < 0) {
            return MF_ERR;
        }
        n = snprintf(url, sizeof(url),
                     "%.*s/openai/deployments/%s%s?api-version=%s",
                     (int)u->base_url.len, u->base_url.data, seg, suffix,
                     st->api_version);
    } else {
        n = snprintf(url, sizeof(url), "%.*s%s", (int)u->base_url.len,
                     u->base_url.data, suffix);
    }
    if (n < 0 || (size_t)n >= sizeof(url) || (edit && body == NULL)) {
        return MF_ERR;
    }
    api->set_upstream_url(r, (mf_str_t){url, (size_t)n});
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("content-type"),
                    MF_STR("application/json"));
    if (azure && u->key.len > 0) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("api-key"),
                        u->key);
    } else if (u->key.len > 0 && u->key.len < sizeof(auth) - 8) {
        n = snprintf(auth, sizeof(auth), "Bearer %.*s", (int)u->key.len,
                     u->key.data);
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("authorization"),
                        (mf_str_t){auth, (size_t)n});
    }
    if (u->stream) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("accept"),
                        MF_STR("text/event-stream"));
    }
    if (!edit) {
        return MF_OK; /* nothing to change: the original bytes go up */
    }
    if (u->endpoint == MF_ENDPOINT_CHAT) {
        const preset_t *pre = preset_of(u->type);
        size_t i;

        if (json_object_get(body, "thinking") != NULL) {
            /* Anthropic's extended thinking (from /v1/messages clients) */
            json_object_del(body, "thinking");
            api->body_changed(r);
        }
        if (json_object_get(body, "include") != NULL) {
            /* a Responses client's include: the Responses wire's alone */
            json_object_del(body, "include");
            api->body_changed(r);
        }
        strip_reasoning(r, json_object_get(body, "messages"));
        if ((pre->quirks & Q_OPENAI_FIELDS) &&
            json_object_get(body, "top_k") != NULL) {
            /* Anthropic's and Gemini's sampling knob: OpenAI refuses it */
            json_object_del(body, "top_k");
            api->body_changed(r);
        }
        if (documents_to_chat(body)) {
            api->body_changed(r);
        }
        if ((pre->quirks & Q_NO_CACHE_CTL) && strip_cache_control(body)) {
            api->body_changed(r); /* unknown fields are refused there */
        }
        if (!(pre->quirks & Q_OPENAI_FIELDS)) {
            for (i = 0; openai_only[i] != NULL; i++) {
                if (json_object_get(body, openai_only[i]) != NULL) {
                    json_object_del(body, openai_only[i]);
                    api->body_changed(r);
                }
            }
        }
        if (!(pre->quirks & Q_MAX_COMPLETION) &&
            json_object_get(body, "max_completion_tokens") != NULL) {
            if (json_object_get(body, "max_tokens") == NULL) {
                json_object_set(body, "max_tokens",
                                json_object_get(body, "max_completion_tokens"));
            }
            json_object_del(body, "max_completion_tokens");
            api->body_changed(r);
        }
        if (!(pre->quirks & Q_STREAM_OPTIONS) &&
            json_object_get(body, "stream_options") != NULL) {
            json_object_del(body, "stream_options"); /* usage comes anyway */
            api->body_changed(r);
        }
        want_usage = want_usage && (pre->quirks & Q_STREAM_OPTIONS);
    }
    model = json_object_get(body, "model");
    if (!json_is_string(model) || json_string_length(model) != u->model.len ||
        memcmp(json_string_value(model), u->model.data, u->model.len) != 0) {
        json_object_set_new(body, "model",
                            json_stringn(u->model.data, u->model.len));
        api->body_changed(r);
    }
    if (u->stream && want_usage) {
        json_t *so = json_object_get(body, "stream_options");

        if (!json_is_true(json_object_get(so, "include_usage"))) {
            if (!json_is_object(so)) {
                so = json_object();
                json_object_set_new(body, "stream_options", so);
            }
            json_object_set_new(so, "include_usage", json_true());
            api->body_changed(r);
        }
    }
    return MF_OK;
}

static int64_t
int_at(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* Reads an OpenAI usage object (DeepSeek's cache fields too). */
static int
read_usage(json_t *u, mf_usage_t *out)
{
    json_t *d;

    if (!json_is_object(u)) {
        return MF_ERR;
    }
    out->prompt_tokens = int_at(u, "prompt_tokens");
    out->completion_tokens = int_at(u, "completion_tokens");
    if (out->completion_tokens < 0 && out->prompt_tokens >= 0) {
        out->completion_tokens = 0; /* embeddings */
    }
    out->total_tokens = int_at(u, "total_tokens");
    d = json_object_get(u, "prompt_tokens_details");
    out->cached_tokens = int_at(d, "cached_tokens");
    if (out->cached_tokens < 0) {
        out->cached_tokens =
            int_at(u, "prompt_cache_hit_tokens"); /* DeepSeek */
    }
    if (out->cached_tokens < 0) {
        out->cached_tokens = int_at(u, "cached_tokens"); /* Moonshot */
    }
    d = json_object_get(u, "completion_tokens_details");
    out->reasoning_tokens = int_at(d, "reasoning_tokens");
    out->estimated = 0;
    return out->prompt_tokens >= 0 ? MF_OK : MF_ERR;
}

/* The value after the last top-level-looking "usage": key, searched from
 * the end (usage closes an answer), or NULL: a key is never inside a JSON
 * string unescaped. */
static const char *
usage_value(mf_str_t body)
{
    const char *p, *end = body.data + body.len;

    if (body.len < 8) {
        return NULL;
    }
    for (p = end - 7; p >= body.data; p--) {
        if (*p == '"' && memcmp(p, "\"usage\"", 7) == 0) {
            break;
        }
    }
    if (p < body.data) {
        return NULL;
    }
    p += 7;
    while (p < end && isspace((unsigned char)*p)) {
        p++;
    }
    return p < end && *p == ':' ? p + 1 : NULL;
}

/*
 * A reader of the usage object straight from its bytes, for the common
 * case: plain keys and strings (printable ASCII, no escapes), integers of
 * at most 18 digits, nesting up to 8. It gives up (SCAN_GIVE_UP) on
 * anything else, and the caller parses with jansson then: what it reads
 * is what jansson would read (duplicate keys: the last wins).
 */
enum { SCAN_OK = 0, SCAN_GIVE_UP = -2 };

#define key_is(k, lit)                                                         \
    ((k).len == sizeof(lit) - 1 && memcmp((k).data, lit, sizeof(lit) - 1) == 0)

typedef struct {
    const char *p, *end;
} scan_t;

static void
scan_ws(scan_t *s)
{
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) {
        s->p++;
    }
}

/* A string at s->p (past its quote on return): its bytes in *out. */
static int
scan_str(scan_t *s, mf_str_t *out)
{
    const char *q = ++s->p;

    while (q < s->end && *q != '"') {
        unsigned char c = (unsigned char)*q;

        if (c < 0x20 || c >= 0x7f || c == '\\') {
            return SCAN_GIVE_UP;
        }
        q++;
    }
    if (q >= s->end) {
        return SCAN_GIVE_UP;
    }
    *out = (mf_str_t){s->p, (size_t)(q - s->p)};
    s->p = q + 1;
    return SCAN_OK;
}

/* An integer at s->p into *v. */
static int
scan_num(scan_t *s, int64_t *v)
{
    const char *q = s->p, *digits;
    int neg = 0;
    int64_t n = 0;

    if (q < s->end && *q == '-') {
        neg = 1;
        q++;
    }
    digits = q;
    while (q < s->end && *q >= '0' && *q <= '9') {
        if (q - digits >= 18) {
            return SCAN_GIVE_UP; /* checked before a 19th digit overflows */
        }
        n = n * 10 + (*q - '0');
        q++;
    }
    if (q == digits || (*digits == '0' && q - digits > 1)) {
        return SCAN_GIVE_UP;
    }
    if (q < s->end && (*q == '.' || *q == 'e' || *q == 'E')) {
        return SCAN_GIVE_UP; /* a real: jansson judges its syntax */
    }
    s->p = q;
    *v = neg ? -n : n;
    return SCAN_OK;
}

static int scan_object(scan_t *s, int depth, mf_usage_t *u, int which);

/* Any value at s->p; *v its integer value or -1. which: see scan_object. */
static int
scan_value(scan_t *s, int depth, int64_t *v, mf_usage_t *u, int which)
{
    mf_str_t str;
    int rc;

    *v = -1;
    scan_ws(s);
    if (s->p >= s->end) {
        return SCAN_GIVE_UP;
    }
    switch (*s->p) {
    case '{':
        return scan_object(s, depth + 1, u, which);
    case '[':
        if (depth >= 8) {
            return SCAN_GIVE_UP;
        }
        s->p++;
        scan_ws(s);
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return SCAN_OK;
        }
        for (;;) {
            int64_t ignored;

            if ((rc = scan_value(s, depth + 1, &ignored, NULL, 0)) != SCAN_OK) {
                return rc;
            }
            scan_ws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
            } else if (s->p < s->end && *s->p == ']') {
                s->p++;
                return SCAN_OK;
            } else {
                return SCAN_GIVE_UP;
            }
        }
    case '"':
        return scan_str(s, &str);
    case 't':
    case 'f':
    case 'n': {
        static const char *const lit[] = {"true", "false", "null"};
        const char *l = lit[*s->p == 't' ? 0 : *s->p == 'f' ? 1 : 2];
        size_t n = strlen(l);

        if ((size_t)(s->end - s->p) < n || memcmp(s->p, l, n) != 0) {
            return SCAN_GIVE_UP;
        }
        s->p += n;
        return SCAN_OK;
    }
    default:
        return scan_num(s, v);
    }
}

/* Where a member goes: which 0 ignores, 1 is the usage object, 2 its
 * prompt_tokens_details, 3 its completion_tokens_details. The slots of u
 * hold the raw fields; read_usage_bytes combines them. */
static void
scan_put(mf_usage_t *u, int which, mf_str_t key, int64_t v, int64_t *hit,
         int64_t *moonshot)
{
    if (which == 1) {
        if (key_is(key, "prompt_tokens")) {
            u->prompt_tokens = v;
        } else if (key_is(key, "completion_tokens")) {
            u->completion_tokens = v;
        } else if (key_is(key, "total_tokens")) {
            u->total_tokens = v;
        } else if (key_is(key, "prompt_cache_hit_tokens")) {
            *hit = v;
        } else if (key_is(key, "cached_tokens")) {
            *moonshot = v;
        }
    } else if (which == 2 && key_is(key, "cached_tokens")) {
        u->cached_tokens = v;
    } else if (which == 3 && key_is(key, "reasoning_tokens")) {
        u->reasoning_tokens = v;
    }
}

static int
scan_object(scan_t *s, int depth, mf_usage_t *u, int which)
{
    int64_t hit = -1, moonshot = -1;
    int rc;

    if (depth > 8) {
        return SCAN_GIVE_UP;
    }
    s->p++;
    scan_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        goto done;
    }
    for (;;) {
        mf_str_t key;
        int64_t v;
        int sub = 0;

        scan_ws(s);
        if (s->p >= s->end || *s->p != '"') {
            return SCAN_GIVE_UP;
        }
        if ((rc = scan_str(s, &key)) != SCAN_OK) {
            return rc;
        }
        scan_ws(s);
        if (s->p >= s->end || *s->p != ':') {
            return SCAN_GIVE_UP;
        }
        s->p++;
        if (which == 1 && key_is(key, "prompt_tokens_details")) {
            sub = 2;
            u->cached_tokens = -1; /* a later duplicate replaces it */
        } else if (which == 1 && key_is(key, "completion_tokens_details")) {
            sub = 3;
            u->reasoning_tokens = -1;
        }
        if ((rc = scan_value(s, depth, &v, sub ? u : NULL, sub)) != SCAN_OK) {
            return rc;
        }
        if (sub == 0) {
            scan_put(u, which, key, v, &hit, &moonshot);
        }
        scan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
        } else if (s->p < s->end && *s->p == '}') {
            s->p++;
            break;
        } else {
            return SCAN_GIVE_UP;
        }
    }
done:
    if (which == 1) {
        /* DeepSeek's then Moonshot's field where the details have none */
        if (u->cached_tokens < 0) {
            u->cached_tokens = hit >= 0 ? hit : moonshot;
        }
    }
    return SCAN_OK;
}

/* Reads the usage value at p (up to end) into out: MF_OK, MF_ERR when it
 * is no usage object with prompt_tokens, SCAN_GIVE_UP when jansson must
 * judge. */
static int
read_usage_bytes(const char *p, const char *end, mf_usage_t *out)
{
    scan_t s = {p, end};
    int rc;

    pu_usage_init(out);
    scan_ws(&s);
    if (s.p >= s.end || *s.p != '{') {
        return SCAN_GIVE_UP;
    }
    rc = scan_object(&s, 1, out, 1);
    if (rc != SCAN_OK) {
        return rc;
    }
    if (out->completion_tokens < 0 && out->prompt_tokens >= 0) {
        out->completion_tokens = 0; /* embeddings */
    }
    out->estimated = 0;
    return out->prompt_tokens >= 0 ? MF_OK : MF_ERR;
}

static int
looks_like_object(mf_str_t b)
{
    size_t i = 0, j = b.len;

    while (i < j && isspace((unsigned char)b.data[i])) {
        i++;
    }
    while (j > i && isspace((unsigned char)b.data[j - 1])) {
        j--;
    }
    return j > i + 1 && b.data[i] == '{' && b.data[j - 1] == '}';
}

static int
openai_parse_response(mf_req_t *r, void *state, mf_str_t body, int canonical)
{
    mf_usage_t usage;
    const char *p;
    json_t *u;
    int rc;

    (void)state;
    if (!looks_like_object(body)) {
        return MF_ERR;
    }
    if (responses_attempt(r) != NULL) {
        json_t *resp = mf_json_loadb(body.data, body.len, 0, NULL);
        json_t *c = resp ? rw_completion(resp, &usage) : NULL;

        json_decref(resp);
        if (c == NULL) {
            return MF_ERR;
        }
        api->set_usage(r, &usage);
        return api->set_response_json(r, c);
    }
    if (canonical) {
        json_t *j = mf_json_loadb(body.data, body.len, 0, NULL);

        if (j == NULL) {
            return MF_ERR;
        }
        if (read_usage(json_object_get(j, "usage"), &usage) == MF_OK) {
            api->set_usage(r, &usage);
        }
        return api->set_response_json(r, j);
    }
    p = usage_value(body);
    if (p == NULL) {
        return MF_OK;
    }
    rc = read_usage_bytes(p, body.data + body.len, &usage);
    if (rc == SCAN_GIVE_UP) {
        u = mf_json_loadb(p, (size_t)(body.data + body.len - p),
                          JSON_DISABLE_EOF_CHECK, NULL);
        rc = u != NULL ? read_usage(u, &usage) : MF_ERR;
        json_decref(u);
    }
    if (rc == MF_OK) {
        api->set_usage(r, &usage);
    }
    return MF_OK;
}

static int
openai_parse_stream_event(mf_req_t *r, void *state, const mf_sse_event_t *ev,
                          int canonical)
{
    mf_str_t d = ev->data;
    int flags = MF_EVENT_PASS;
    json_t *j = NULL;

    (void)state;
    if (responses_attempt(r) != NULL) {
        responses_attempt_t *ra = responses_attempt(r);
        json_t *chunks[2];
        int usage_set, i;

        flags = rw_event(&ra->stream, d, chunks, &usage_set);
        if (usage_set) {
            api->set_usage(r, &ra->stream.usage);
        }
        for (i = 0; i < 2; i++) {
            if (chunks[i] != NULL && canonical) {
                api->emit_chunk(r, chunks[i]);
            } else {
                json_decref(chunks[i]);
            }
        }
        return flags;
    }
    if (d.len == 6 && memcmp(d.data, "[DONE]", 6) == 0) {
        return MF_EVENT_DONE;
    }
    if (d.len == 0 || d.data[0] != '{') {
        return MF_ERR;
    }
    /* parse only what carries usage or an error, unless translating */
    if (canonical || memmem(d.data, d.len, "\"usage\":{", 9) != NULL ||
        memmem(d.data, d.len, "\"usage\": {", 10) != NULL ||
        memmem(d.data, d.len, "\"error\"", 7) != NULL) {
        mf_usage_t usage;
        json_t *choices;

        j = mf_json_loadb(d.data, d.len, 0, NULL);
        if (j == NULL) {
            return MF_ERR;
        }
        if (read_usage(json_object_get(j, "usage"), &usage) == MF_OK) {
            api->set_usage(r, &usage);
            choices = json_object_get(j, "choices");
            if (json_is_array(choices) && json_array_size(choices) == 0) {
                flags |= MF_EVENT_USAGE_ONLY;
            }
        }
        if (json_object_get(j, "error") != NULL) {
            flags |= MF_EVENT_ERROR;
        }
    }
    if (canonical && j != NULL && !(flags & MF_EVENT_ERROR)) {
        api->emit_chunk(r, j);
        j = NULL;
    }
    json_decref(j);
    return flags;
}

static int
openai_parse_error(mf_req_t *r, void *state, int status, mf_str_t body,
                   mf_error_t *err)
{
    openai_state_t *st = state;
    json_t *j = mf_json_loadb(body.data, body.len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *msg = NULL, *code = NULL;

    (void)r;

    if (json_is_object(e)) {
        msg = json_string_value(json_object_get(e, "message"));
        code = json_string_value(json_object_get(e, "code"));
    } else if (json_is_string(e)) {
        msg = json_string_value(e); /* Ollama: {"error":"..."} */
    } else if (json_is_string(json_object_get(j, "message"))) {
        msg = json_string_value(json_object_get(j, "message"));
    }
    err->code = NULL;
    err->type = "upstream_error";
    switch (status) {
    case 400:
    case 404:
    case 413:
    case 422:
        err->status = status == 422 ? 400 : status;
        err->type = "invalid_request_error";
        if (code != NULL && strcmp(code, "model_not_found") == 0) {
            err->code = "model_not_found";
        } else if (code != NULL &&
                   strcmp(code, "context_length_exceeded") == 0) {
            err->code = "context_length_exceeded";
        } else if (code != NULL &&
                   (strcmp(code, "content_filter") == 0 ||
                    strcmp(code, "content_policy_violation") == 0)) {
            /* Azure's content management policy refused the prompt */
            err->code = "content_filter";
        }
        break;
    case 401:
    case 403:
        err->status = 502;
        err->code = "upstream_auth_failed";
        snprintf(err->message, sizeof(err->message),
                 "provider '%s' rejected its API key (upstream %d); check "
                 "the key configured for it",
                 st->name, status);
        json_decref(j);
        return MF_OK;
    case 408:
        err->status = 504;
        err->code = "upstream_timeout";
        break;
    case 429:
        err->status = 429;
        err->type = "rate_limit_error";
        err->code = "rate_limit_exceeded"; /* the host reads Retry-After */
        break;
    default:
        err->status = 502;
        break;
    }
    snprintf(err->message, sizeof(err->message),
             "provider '%s' answered %d: %s", st->name, status,
             msg ? msg : "(no message)");
    json_decref(j); /* the host masks keys the message may echo */
    return MF_OK;
}

static const char *const openai_types[] = {"openai",      "openai-compatible",
                                           "azure",       "deepseek",
                                           "qwen",        "dashscope",
                                           "moonshot",    "zhipu",
                                           "doubao",      "hunyuan",
                                           "qianfan",     "minimax",
                                           "stepfun",     "yi",
                                           "baichuan",    "spark",
                                           "siliconflow", "groq",
                                           "mistral",     "together",
                                           "fireworks",   "openrouter",
                                           "xai",         "perplexity",
                                           "ollama",      "vllm",
                                           NULL};

static const mf_provider_t openai_provider = {
    .wire = "openai",
    .types = openai_types,
    .build_request = openai_build_request,
    .parse_response = openai_parse_response,
    .parse_stream_event = openai_parse_stream_event,
    .parse_error = openai_parse_error,
};

static const mf_plugin_t openai_plugin = {
    MF_PLUGIN_ABI,       .name = "provider-openai",
    .version = "1.0.0",  .init = openai_init,
    .fini = openai_fini, .provider = &openai_provider,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &openai_plugin;
}
