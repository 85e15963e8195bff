/*
 * provider-anthropic: Anthropic's Messages API behind the canonical
 * (OpenAI chat) form. The translation both ways is the shared Messages
 * wire (plugins/common/anthropic-wire.c); this plugin adds the URL
 * (/v1/messages, /v1/messages/count_tokens) and Anthropic's headers
 * (x-api-key, anthropic-version).
 *
 * provider options: { default_max_tokens: 4096, version: "2023-06-01" }
 */
#include <manifold/plugin.h>
#include <manifold/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/anthropic-wire.h"
#include "../common/provider-util.h"

static const mf_host_api_t *api;

typedef struct {
    char *name;
    aw_conf_t conf;
    char version[32];
} anthropic_t;

static int
anthropic_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    json_t *opt = json_object_get(conf, "options");
    anthropic_t *a = calloc(1, sizeof(*a));
    const char *name = json_string_value(json_object_get(conf, "name"));
    const char *ver = json_string_value(json_object_get(opt, "version"));
    json_t *mt = json_object_get(opt, "default_max_tokens");
    json_int_t mtv = 0;

    api = host;
    aw_init(host);
    if (a == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    a->name = strdup(name ? name : "anthropic");
    if (json_is_integer(mt)) {
        mtv = json_integer_value(mt);
    } else if (json_is_string(mt)) {
        mtv = atoll(json_string_value(mt)); /* YAML scalars come as text */
    }
    a->conf.name = a->name;
    a->conf.default_max_tokens = mtv > 0 ? mtv : 4096;
    snprintf(a->version, sizeof(a->version), "%s", ver ? ver : "2023-06-01");
    json_decref(conf);
    *state = a;
    return MF_OK;
}

static void
anthropic_fini(void *state)
{
    anthropic_t *a = state;

    free(a->name);
    free(a);
}

static int
anthropic_build_request(mf_req_t *r, void *state, const mf_upstream_t *u)
{
    anthropic_t *a = state;
    json_t *body = api->get_body_json(r), *msg;
    char url[2048], *text;
    int n, rc;

    if ((u->endpoint != MF_ENDPOINT_CHAT &&
         u->endpoint != MF_ENDPOINT_COUNT_TOKENS) ||
        body == NULL) {
        return MF_ERR; /* Anthropic has no embeddings API */
    }
    n = snprintf(
        url, sizeof(url), "%.*s%s%s", (int)u->base_url.len, u->base_url.data,
        u->base_url.len >= 3 &&
                memcmp(u->base_url.data + u->base_url.len - 3, "/v1", 3) == 0
            ? "/messages"
            : "/v1/messages",
        u->endpoint == MF_ENDPOINT_COUNT_TOKENS ? "/count_tokens" : "");
    if (n < 0 || (size_t)n >= sizeof(url)) {
        return MF_ERR;
    }
    api->set_upstream_url(r, (mf_str_t){url, (size_t)n});
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("content-type"),
                    MF_STR("application/json"));
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("anthropic-version"),
                    (mf_str_t){a->version, strlen(a->version)});
    if (u->key.len > 0) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("x-api-key"),
                        u->key);
    }
    if (u->stream) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("accept"),
                        MF_STR("text/event-stream"));
    }
    msg = aw_request(&a->conf, body, u);
    text = mf_json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL) {
        return MF_ERR;
    }
    rc = api->set_upstream_body(r, (mf_str_t){text, strlen(text)});
    free(text);
    return rc;
}

static int
anthropic_parse_error(mf_req_t *r, void *state, int status, mf_str_t body,
                      mf_error_t *err)
{
    anthropic_t *a = state;

    return aw_parse_error(r, a->name, status, body, err);
}

static const char *const anthropic_types[] = {"anthropic", NULL};

static const mf_provider_t anthropic_provider = {
    .wire = "anthropic",
    .types = anthropic_types,
    .build_request = anthropic_build_request,
    .parse_response = aw_parse_response,
    .parse_stream_event = aw_parse_stream_event,
    .parse_error = anthropic_parse_error,
    .parse_count = aw_parse_count,
};

static const mf_plugin_t anthropic_plugin = {
    MF_PLUGIN_ABI,          .name = "provider-anthropic",
    .version = "1.0.0",     .init = anthropic_init,
    .fini = anthropic_fini, .provider = &anthropic_provider,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &anthropic_plugin;
}
