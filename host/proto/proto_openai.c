/*
 * OpenAI inbound: chat completions and embeddings. Its body is the
 * canonical form, so the adapter only names its paths and renders errors
 * ({"error":{"message","type","code","param"}}, in a stream as one more
 * data event).
 */
#include <manifold/json.h>

#include "proto/proto.h"

#include <stdlib.h>

static mf_proto_match_t
openai_match(mf_str_t path, mf_endpoint_t *endpoint)
{
    if (mf_str_eq_cstr(path, "/v1/chat/completions") ||
        mf_str_eq_cstr(path, "/chat/completions")) {
        *endpoint = MF_ENDPOINT_CHAT;
        return MF_PROTO_SERVES;
    }
    if (mf_str_eq_cstr(path, "/v1/embeddings") ||
        mf_str_eq_cstr(path, "/embeddings")) {
        *endpoint = MF_ENDPOINT_EMBEDDINGS;
        return MF_PROTO_SERVES;
    }
    return MF_PROTO_NO;
}

static json_t *
openai_error_json(const mf_proto_error_t *e)
{
    return mf_json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", e->message,
                        "type", e->type, "code",
                        e->code ? json_string(e->code) : json_null(), "param",
                        e->param ? json_string(e->param) : json_null());
}

static char *
openai_error_body(const mf_proto_error_t *e)
{
    json_t *j = openai_error_json(e);
    char *text = j ? mf_json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return text;
}

static void
openai_stream_error(void *state, const mf_proto_error_t *e, mf_buf_t *out)
{
    char *text = openai_error_body(e);

    (void)state;
    if (text != NULL) {
        mf_buf_printf(out, "data: %s\n\n", text);
    }
    free(text);
}

/* GET /v1/models (or /models) and /v1/models/{id}. */
static int
openai_models_path(mf_str_t path, mf_str_t *id)
{
    *id = MF_STR_NULL;
    if (mf_str_eq_cstr(path, "/v1/models") || mf_str_eq_cstr(path, "/models")) {
        return 1;
    }
    if (mf_proto_has_prefix(path, "/v1/models/")) {
        *id = (mf_str_t){path.data + 11, path.len - 11};
        return 1;
    }
    return 0;
}

static mf_str_t
openai_route(mf_str_t path)
{
    mf_endpoint_t e;
    mf_str_t id;

    if (openai_match(path, &e) != MF_PROTO_NO) {
        return path; /* a fixed path */
    }
    if (openai_models_path(path, &id)) {
        return id.len > 0 ? MF_STR("/v1/models/{model}") : path;
    }
    return MF_STR_NULL;
}

static json_t *
openai_model(const mf_proto_model_t *m)
{
    return mf_json_pack("{s:s,s:s,s:I,s:s}", "id", m->id, "object", "model",
                        "created", (json_int_t)0, "owned_by", m->owner);
}

static json_t *
openai_model_list(json_t *entries)
{
    return mf_json_pack("{s:s,s:o}", "object", "list", "data", entries);
}

const mf_proto_t mf_proto_openai = {
    .name = "openai",
    .method = "POST",
    .canonical = 1,
    .match = openai_match,
    .error_body = openai_error_body,
    .stream_error = openai_stream_error,
    .models_path = openai_models_path,
    .route = openai_route,
    .model = openai_model,
    .model_list = openai_model_list,
    .endpoints = "POST /v1/chat/completions, POST /v1/embeddings, GET "
                 "/v1/models, GET /v1/models/{id}",
};
