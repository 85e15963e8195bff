/*
 * hello: a C stage that adds a response header, `x-hello: <greeting>`,
 * to every answer, and, when given a path in `serve`, serves it: GET
 * <path> answers "hello, <greeting>" as text. config: { greeting:
 * "world", serve: "/hello", listener: "client" | "status" }
 */
#include <manifold/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mf_host_api_t *api;

typedef struct {
    char *greeting;
} hello_t;

static mf_action_t
hello_serve(mf_req_t *r, void *state, void *arg)
{
    hello_t *h = state;
    char *text;
    int n;

    (void)arg;
    n = snprintf(NULL, 0, "hello, %s\n", h->greeting);
    text = api->palloc(r, (size_t)n + 1);
    if (text == NULL) {
        return MF_FAIL;
    }
    snprintf(text, (size_t)n + 1, "hello, %s\n", h->greeting);
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-hello"),
                    (mf_str_t){h->greeting, strlen(h->greeting)});
    api->respond(r, 200, "text/plain; charset=utf-8",
                 (mf_str_t){text, (size_t)n});
    return MF_RESPOND;
}

static int
hello_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    const char *g = json_string_value(json_object_get(conf, "greeting"));
    const char *path = json_string_value(json_object_get(conf, "serve"));
    const char *l = json_string_value(json_object_get(conf, "listener"));
    hello_t *h = malloc(sizeof(*h));

    api = host;
    if (h == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    h->greeting = strdup(g ? g : "world");
    if (path != NULL) {
        mf_endpoint_def_t def = {
            .size = sizeof(def),
            .listener = l != NULL && strcmp(l, "status") == 0
                            ? MF_LISTENER_STATUS
                            : MF_LISTENER_CLIENT,
            .method = "GET",
            .path = path,
            .handler = hello_serve,
        };

        if (api->abi_minor < 4 || api->add_endpoint(&def) != MF_OK) {
            api->log(MF_LOG_ERROR, "hello: cannot serve %s", path);
            free(h->greeting);
            free(h);
            json_decref(conf);
            return MF_ERR;
        }
    }
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
    .version = "1.1.0", .init = hello_init,
    .fini = hello_fini, .on_response_headers = hello_on_response_headers,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &hello;
}
