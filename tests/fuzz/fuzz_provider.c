/*
 * libFuzzer driver for a provider plugin's translators, linked with one
 * plugin's source (fuzz_provider_<name>). A stand-in host API records what
 * the plugin sets. The first input byte picks the provider type and what
 * the rest is:
 *
 *   0  a canonical chat or embeddings request  -> build_request
 *   1  an upstream 2xx body                    -> parse_response
 *      (bit 6 of the second byte: passthrough, only the usage is read)
 *   2  stream events, one per line; "name|json" lines give the event
 *      name (Bedrock's :event-type) and "!name|json" an exception
 *                                              -> parse_stream_event
 *   3  an upstream error body                  -> parse_error (and
 *      parse_count, for a provider that counts tokens)
 *
 * Bit 7 of the second byte configures options.wire: responses (the
 * Responses API as provider-openai's upstream wire; the other plugins
 * ignore it): build_request runs first so that parse_response and
 * parse_stream_event read the Responses wire.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <manifold/plugin.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mf_req_s {
    json_t *body;
    mf_endpoint_t endpoint;
    void *ctx;
    void *allocs[256];
    int nalloc;
    json_t *resp;
    mf_error_t err;
    int has_err;
};

static void
f_log(mf_log_level_t level, const char *fmt, ...)
{
    (void)level;
    (void)fmt;
}

static void *
f_palloc(mf_req_t *r, size_t size)
{
    void *p;

    if (r->nalloc == 256 || (p = calloc(1, size ? size : 1)) == NULL) {
        return NULL;
    }
    r->allocs[r->nalloc++] = p;
    return p;
}

static int
f_get_info(mf_req_t *r, mf_req_info_t *info)
{
    memset((char *)info + sizeof(info->size), 0,
           info->size - sizeof(info->size));
    info->endpoint = r->endpoint;
    info->model = MF_STR("fuzz-model");
    info->upstream_model = MF_STR("fuzz-model");
    return MF_OK;
}

static int
f_get_header(mf_req_t *r, mf_headers_t which, mf_str_t name, mf_str_t *value)
{
    (void)r;
    (void)which;
    if (name.len == 11 && memcmp(name.data, "retry-after", 11) == 0) {
        *value = MF_STR("3");
        return MF_OK;
    }
    return MF_ERR;
}

static int
f_set(mf_req_t *r, mf_headers_t which, mf_str_t name, mf_str_t value)
{
    (void)r;
    (void)which;
    return name.data && (value.len == 0 || value.data) ? MF_OK : MF_ERR;
}

static json_t *
f_get_body_json(mf_req_t *r)
{
    return r->body;
}

static void
f_body_changed(mf_req_t *r)
{
    (void)r;
}

static mf_str_t
f_get_model(mf_req_t *r)
{
    (void)r;
    return MF_STR("fuzz-model");
}

static int
f_set_str(mf_req_t *r, mf_str_t s)
{
    (void)r;
    return s.len == 0 || s.data ? MF_OK : MF_ERR;
}

static int
f_set_usage(mf_req_t *r, const mf_usage_t *u)
{
    (void)r;
    return u ? MF_OK : MF_ERR;
}

static int
f_set_json(mf_req_t *r, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);

    free(text);
    json_decref(r->resp);
    r->resp = j;
    return MF_OK;
}

static int
f_emit(mf_req_t *r, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);

    (void)r;
    free(text);
    json_decref(j);
    return MF_OK;
}

static int
f_set_error(mf_req_t *r, const mf_error_t *e)
{
    r->err = *e;
    r->has_err = 1;
    return MF_OK;
}

static void **
f_provider_ctx(mf_req_t *r)
{
    return &r->ctx;
}

static int
f_set_upstream_wire(mf_req_t *r, mf_str_t wire)
{
    (void)r;
    (void)wire;
    return MF_OK;
}

static mf_host_api_t api = {
    .size = sizeof(mf_host_api_t),
    .abi_major = MF_ABI_MAJOR,
    .abi_minor = MF_ABI_MINOR,
    .log = f_log,
    .palloc = f_palloc,
    .get_info = f_get_info,
    .get_header = f_get_header,
    .set_header = f_set,
    .get_body_json = f_get_body_json,
    .body_changed = f_body_changed,
    .get_model = f_get_model,
    .set_upstream_url = f_set_str,
    .set_upstream_body = f_set_str,
    .set_usage = f_set_usage,
    .set_response_json = f_set_json,
    .emit_chunk = f_emit,
    .provider_ctx = f_provider_ctx,
    .set_error = f_set_error,
    .set_upstream_wire = f_set_upstream_wire,
};

static void
stream(const mf_plugin_t *p, void *state, mf_req_t *r, const char *in,
       size_t len)
{
    while (len > 0) {
        const char *nl = memchr(in, '\n', len), *bar;
        size_t n = nl ? (size_t)(nl - in) : len;
        mf_sse_event_t ev;

        memset(&ev, 0, sizeof(ev));
        ev.raw = (mf_str_t){in, n};
        ev.data = ev.raw;
        bar = memchr(in, '|', n);
        if (bar != NULL) {
            int exc = in[0] == '!';

            ev.event = (mf_str_t){in + exc, (size_t)(bar - in) - exc};
            ev.id = exc ? MF_STR("exception") : MF_STR("event");
            ev.data = (mf_str_t){bar + 1, n - (size_t)(bar + 1 - in)};
        }
        r->has_err = 0;
        p->provider->parse_stream_event(r, state, &ev, 1);
        in += nl ? n + 1 : n;
        len -= nl ? n + 1 : n;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const mf_plugin_t *p = mf_plugin_v1();
    const char *const *types = p->provider->types;
    size_t ntypes = 0;
    char conf[320];
    void *state = NULL;
    mf_req_t r;
    mf_upstream_t u;
    int i;

    if (size < 2) {
        return 0;
    }
    while (types[ntypes]) {
        ntypes++;
    }
    if (strcmp(types[data[0] % ntypes], "vertex") == 0) {
        return 0; /* the service-account path needs a key file */
    }
    snprintf(conf, sizeof(conf),
             "{\"name\":\"fuzz\",\"type\":\"%s\",\"base_url\":"
             "\"https://fuzz.example/v1\",\"region\":\"us-east-1\"%s}",
             types[data[0] % ntypes],
             (data[1] & 0x80) ? ",\"options\":{\"wire\":\"responses\"}" : "");
    if (p->init(&api, conf, &state) != MF_OK) {
        return 0;
    }
    memset(&r, 0, sizeof(r));
    memset(&u, 0, sizeof(u));
    u.provider = MF_STR("fuzz");
    u.type =
        (mf_str_t){types[data[0] % ntypes], strlen(types[data[0] % ntypes])};
    u.base_url = MF_STR("https://fuzz.example/v1");
    u.model = MF_STR("fuzz-model:0");
    u.key = (data[1] & 4) ? MF_STR("AKIDFUZZ:secret:token") : MF_STR("sk-fuzz");
    r.endpoint = (data[1] & 1) ? MF_ENDPOINT_EMBEDDINGS : MF_ENDPOINT_CHAT;
    u.endpoint = r.endpoint;
    u.stream = (data[1] & 2) != 0;
    if ((data[1] & 0x80) && ((data[1] >> 4) & 3) != 0) {
        /* the attempt's wire is chosen by build_request */
        json_t *b = r.body;

        r.body = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "fuzz-model",
                           "messages", "role", "user", "content", "x");
        r.endpoint = u.endpoint = MF_ENDPOINT_CHAT;
        p->provider->build_request(&r, state, &u);
        json_decref(r.body);
        r.body = b;
    }
    switch ((data[1] >> 4) & 3) {
    case 0:
        r.body = json_loadb((const char *)data + 2, size - 2, 0, NULL);
        if (json_is_object(r.body)) {
            p->provider->build_request(&r, state, &u);
        }
        break;
    case 1:
        r.body = json_pack("{s:s}", "encoding_format",
                           (data[1] & 8) ? "base64" : "float");
        p->provider->parse_response(
            &r, state, (mf_str_t){(const char *)data + 2, size - 2},
            (data[1] & 0x40) == 0);
        break;
    case 2:
        stream(p, state, &r, (const char *)data + 2, size - 2);
        break;
    default: {
        mf_error_t err;

        memset(&err, 0, sizeof(err));
        p->provider->parse_error(&r, state, 400 + (data[1] & 0x0f) * 8,
                                 (mf_str_t){(const char *)data + 2, size - 2},
                                 &err);
        if (p->provider->parse_count != NULL) {
            int64_t tokens;

            p->provider->parse_count(
                &r, state, (mf_str_t){(const char *)data + 2, size - 2},
                &tokens);
        }
        break;
    }
    }
    json_decref(r.body);
    json_decref(r.resp);
    for (i = 0; i < r.nalloc; i++) {
        free(r.allocs[i]);
    }
    p->fini(state);
    return 0;
}
