/*
 * hello: a C stage that adds a response header, `x-hello: <greeting>`,
 * to every answer. config: { greeting: "world" }
 */
#include <manifold/plugin.h>
#include <stdlib.h>
#include <string.h>

static const mf_host_api_t *api;

typedef struct {
    char *greeting;
} hello_t;

static int
hello_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    const char *g = json_string_value(json_object_get(conf, "greeting"));
    hello_t *h = malloc(sizeof(*h));

    api = host;
    if (h == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    h->greeting = strdup(g ? g : "world");
    json_decref(conf);
    *state = h;
    return MF_OK;
}

static void
hello_fini(void *state)
{
    hello_t *h = state;

    free(h->greeting);
    free(h);
}

static mf_action_t
hello_on_response_headers(mf_req_t *r, void *state, void **ctx)
{
    hello_t *h = state;

    (void)ctx;
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-hello"),
                    (mf_str_t){h->greeting, strlen(h->greeting)});
    return MF_CONTINUE;
}

static const mf_plugin_t hello = {
    MF_PLUGIN_ABI,      .name = "hello",
    .version = "1.0.0", .init = hello_init,
    .fini = hello_fini, .on_response_headers = hello_on_response_headers,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &hello;
}
