/* Helpers shared by the translating provider plugins; see provider-util.h. */
#include "provider-util.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <manifold/json.h>

void
pu_usage_init(mf_usage_t *u)
{
    u->prompt_tokens = u->completion_tokens = u->total_tokens = -1;
    u->cached_tokens = u->reasoning_tokens = -1;
    u->estimated = 0;
}

static json_int_t
nonneg(int64_t v)
{
    return (json_int_t)(v < 0 ? 0 : v);
}

json_t *
pu_usage_json(const mf_usage_t *u)
{
    json_t *o = mf_json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens",
                             nonneg(u->prompt_tokens), "completion_tokens",
                             nonneg(u->completion_tokens), "total_tokens",
                             nonneg(u->total_tokens), "prompt_tokens_details",
                             "cached_tokens", nonneg(u->cached_tokens));

    if (u->reasoning_tokens > 0) {
        json_object_set_new(o, "completion_tokens_details",
                            mf_json_pack("{s:I}", "reasoning_tokens",
                                         nonneg(u->reasoning_tokens)));
    }
    return o;
}

json_int_t
pu_opt_int(json_t *obj, const char *key, json_int_t dflt)
{
    json_t *v = json_object_get(obj, key);

    if (json_is_integer(v)) {
        return json_integer_value(v);
    }
    if (json_is_string(v) && json_string_length(v) > 0) {
        return atoll(json_string_value(v));
    }
    return dflt;
}

json_int_t
pu_int_at(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    return json_is_integer(v) ? json_integer_value(v) : 0;
}

void
pu_append(char **s, size_t *len, const char *text)
{
    size_t n = strlen(text);
    char *p = realloc(*s, *len + n + 1);

    if (p == NULL) {
        /* a dropped piece would tear the text: fail as the host's own
         * allocations do */
        fprintf(stderr, "manifold: out of memory allocating %zu bytes\n",
                *len + n + 1);
        abort();
    }
    memcpy(p + *len, text, n + 1);
    *s = p;
    *len += n;
}

char *
pu_base64(const void *data, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);

    if (out != NULL) {
        EVP_EncodeBlock((unsigned char *)out, data, (int)n);
    }
    return out;
}

char *
pu_base64url(const void *data, size_t n)
{
    char *s = pu_base64(data, n), *p;

    if (s == NULL) {
        return NULL;
    }
    for (p = s; *p; p++) {
        if (*p == '+') {
            *p = '-';
        } else if (*p == '/') {
            *p = '_';
        } else if (*p == '=') {
            *p = '\0';
            break;
        }
    }
    return s;
}

int
pu_data_url(const char *url, mf_str_t *media_type, mf_str_t *data)
{
    const char *comma, *semi;

    if (url == NULL || strncmp(url, "data:", 5) != 0 ||
        (comma = strchr(url, ',')) == NULL ||
        (semi = strstr(url, ";base64")) == NULL || semi > comma) {
        return MF_ERR;
    }
    *media_type = (mf_str_t){url + 5, (size_t)(semi - url - 5)};
    *data = (mf_str_t){comma + 1, strlen(comma + 1)};
    return MF_OK;
}

json_t *
pu_embeddings_response(json_t *vectors, const char *model, int base64,
                       const mf_usage_t *u)
{
    json_t *data = json_array(), *vec;
    size_t i;

    json_array_foreach(vectors, i, vec)
    {
        json_t *emb;

        if (base64) {
            size_t n = json_array_size(vec), k;
            float *f = calloc(n ? n : 1, sizeof(float));
            char *b;

            for (k = 0; f != NULL && k < n; k++) {
                f[k] = (float)json_number_value(json_array_get(vec, k));
            }
            b = f ? pu_base64(f, n * sizeof(float)) : NULL;
            emb = json_string(b ? b : "");
            free(b);
            free(f);
        } else {
            emb = json_incref(vec);
        }
        json_array_append_new(
            data, mf_json_pack("{s:s,s:I,s:o}", "object", "embedding", "index",
                               (json_int_t)i, "embedding", emb));
    }
    return mf_json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data",
                        data, "model", model, "usage", "prompt_tokens",
                        nonneg(u->prompt_tokens), "total_tokens",
                        nonneg(u->total_tokens));
}

json_t *
pu_embedding_inputs(json_t *body)
{
    json_t *in = json_object_get(body, "input"), *out, *v;
    size_t i;

    if (json_is_string(in)) {
        return mf_json_pack("[O]", in);
    }
    if (!json_is_array(in) || json_array_size(in) == 0) {
        return NULL;
    }
    out = json_array();
    json_array_foreach(in, i, v)
    {
        if (!json_is_string(v)) {
            json_decref(out);
            return NULL; /* token arrays: only OpenAI reads them */
        }
        json_array_append(out, v);
    }
    return out;
}

json_t *
pu_chunk(const char *id, const char *model, json_int_t created, int index,
         json_t *delta, const char *finish)
{
    return mf_json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:o,s:n}]}", "id", id,
                        "object", "chat.completion.chunk", "created", created,
                        "model", model, "choices", "index", index, "delta",
                        delta, "finish_reason",
                        finish ? json_string(finish) : json_null(), "logprobs");
}

json_t *
pu_usage_chunk(const char *id, const char *model, json_int_t created,
               const mf_usage_t *u)
{
    return mf_json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", id, "object",
                        "chat.completion.chunk", "created", created, "model",
                        model, "choices", "usage", pu_usage_json(u));
}

void
pu_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void
pu_push_turn(json_t *turns, const char *role, const char *field, json_t *items)
{
    json_t *last = json_array_get(turns, json_array_size(turns) - 1);
    const char *lr = json_string_value(json_object_get(last, "role"));

    if (json_array_size(items) == 0) {
        json_decref(items);
        return;
    }
    if (lr != NULL && strcmp(lr, role) == 0) {
        json_array_extend(json_object_get(last, field), items);
        json_decref(items);
        return;
    }
    json_array_append_new(
        turns, mf_json_pack("{s:s,s:o}", "role", role, field, items));
}

json_t *
pu_tool_args(json_t *call)
{
    const char *args = json_string_value(
        json_object_get(json_object_get(call, "function"), "arguments"));
    json_t *a = args ? json_loads(args, 0, NULL) : NULL;

    if (!json_is_object(a)) {
        json_decref(a);
        a = json_object();
    }
    return a;
}

json_t *
pu_max_tokens(json_t *in)
{
    json_t *v = json_object_get(in, "max_completion_tokens");

    if (!json_is_integer(v)) {
        v = json_object_get(in, "max_tokens");
    }
    return json_is_integer(v) ? v : NULL;
}

json_t *
pu_stop_list(json_t *in)
{
    json_t *v = json_object_get(in, "stop");

    if (json_is_string(v)) {
        return mf_json_pack("[O]", v);
    }
    return json_array_size(v) > 0 ? json_incref(v) : NULL;
}

void
pu_copy_fields(json_t *in, json_t *out, const pu_field_t *f)
{
    for (; f->from != NULL; f++) {
        json_t *v = json_object_get(in, f->from);

        if (f->integer ? json_is_integer(v) : json_is_number(v)) {
            json_object_set(out, f->to, v);
        }
    }
}

unsigned
pu_document_kind(json_t *part)
{
    json_t *src = json_object_get(part, "source");
    const char *type = json_string_value(json_object_get(src, "type"));
    const char *mt = json_string_value(json_object_get(src, "media_type"));

    if (type == NULL) {
        return 0;
    }
    if (strcmp(type, "base64") == 0 && mt != NULL &&
        strcmp(mt, "application/pdf") == 0 &&
        json_is_string(json_object_get(src, "data"))) {
        return PU_DOC_PDF;
    }
    if (strcmp(type, "text") == 0 &&
        json_is_string(json_object_get(src, "data"))) {
        return PU_DOC_TEXT;
    }
    if (strcmp(type, "url") == 0 &&
        json_is_string(json_object_get(src, "url"))) {
        return PU_DOC_URL;
    }
    return 0;
}

int
pu_document_refused(json_t *body, unsigned takes, const char **source)
{
    json_t *m, *p;
    size_t i, j;

    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        json_array_foreach(json_object_get(m, "content"), j, p)
        {
            const char *type = json_string_value(json_object_get(p, "type"));
            const char *st;

            if (type == NULL || strcmp(type, "document") != 0 ||
                (pu_document_kind(p) & takes) != 0) {
                continue;
            }
            st = json_string_value(
                json_object_get(json_object_get(p, "source"), "type"));
            *source = st ? st : "?";
            return 1;
        }
    }
    return 0;
}

void
pu_error(const mf_host_api_t *api, mf_req_t *r, int status, const char *type,
         const char *code, const char *fmt, ...)
{
    mf_error_t err;
    va_list ap;

    memset(&err, 0, sizeof(err));
    err.status = status;
    err.type = type;
    err.code = code;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof(err.message), fmt, ap);
    va_end(ap);
    api->set_error(r, &err);
}

int
pu_str_is(mf_str_t s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.data, lit, s.len) == 0;
}

int
pu_path_segment(const char *s, size_t n, char *out, size_t cap)
{
    static const char hexd[] = "0123456789ABCDEF";
    size_t i, o = 0;

    if (cap == 0) {
        return -1;
    }
    out[0] = '\0';
    if (n == 0 || (n == 1 && s[0] == '.') ||
        (n == 2 && s[0] == '.' && s[1] == '.')) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f) {
            out[0] = '\0';
            return -1;
        }
        if (o + 4 > cap) {
            out[0] = '\0';
            return -1;
        }
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
            c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hexd[c >> 4];
            out[o++] = hexd[c & 15];
        }
    }
    out[o] = '\0';
    return (int)o;
}

int
pu_model_segment(const mf_host_api_t *api, mf_req_t *r, const char *provider,
                 const char *s, size_t n, char *out, size_t cap)
{
    int len = pu_path_segment(s, n, out, cap);

    if (len < 0) {
        pu_error(api, r, 400, "invalid_request_error", "invalid_model",
                 "provider '%s' cannot put this model name into its URL (it "
                 "is empty, '.' or '..', too long, or holds a control "
                 "character)",
                 provider);
    }
    return len;
}
