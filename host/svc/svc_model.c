/*
 * Model calls for stages (api->model_call, mf.llm, mf.embed): a call of
 * the gateway's own API as its client, over loopback to its own
 * listener, so that it is served by everything a client's request is
 * (routes, key pools, fallback, breakers, stages, usage, the access log)
 * and billed to the calling request's consumer. The call carries the
 * caller's credentials and an x-manifold-call header with a secret made
 * at start: only a call holding it has its depth, pinned provider and
 * consumer believed (the request module drops every x-manifold-* header
 * a client sends).
 */
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "svc/svc.h"

static char token[33];
static pthread_once_t token_once = PTHREAD_ONCE_INIT;

static void
token_make(void)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    size_t i;

    if (RAND_bytes(b, sizeof(b)) != 1) {
        /* without randomness no call is believed: an empty token never
         * matches (mf_svc_model_trusted) */
        token[0] = '\0';
        return;
    }
    for (i = 0; i < sizeof(b); i++) {
        token[2 * i] = hex[b[i] >> 4];
        token[2 * i + 1] = hex[b[i] & 15];
    }
    token[32] = '\0';
}

int
mf_svc_model_trusted(mf_str_t value)
{
    unsigned char diff = 0;
    size_t i;

    pthread_once(&token_once, token_make);
    if (token[0] == '\0' || value.len != 32) {
        return 0;
    }
    for (i = 0; i < 32; i++) {
        diff |= (unsigned char)(value.data[i] ^ token[i]);
    }
    return diff == 0;
}

/* The credentials a client sends, passed on so that an authentication
 * stage names the same consumer. */
static const char *const cred_headers[] = {"authorization", "x-api-key",
                                           "api-key", "x-goog-api-key"};

int
mf_svc_model_call(mf_req_t *r, const mf_model_call_t *call, mf_http_cb cb,
                  void *arg)
{
    const mf_server_t *s = r->worker->server;
    mf_str_t h[2 * 9], v;
    size_t nh = 0, i;
    char url[320], depth[16];
    const char *host = s->host;
    int v6;

    if (r->call_depth >= MF_MODEL_CALL_MAX_DEPTH) {
        return MF_ERR;
    }
    pthread_once(&token_once, token_make);
    if (host == NULL || host[0] == '\0' || strcmp(host, "0.0.0.0") == 0) {
        host = "127.0.0.1";
    } else if (strcmp(host, "::") == 0) {
        host = "::1";
    }
    v6 = strchr(host, ':') != NULL;
    snprintf(url, sizeof(url), "http://%s%s%s:%d%s", v6 ? "[" : "", host,
             v6 ? "]" : "", s->port,
             call->kind == MF_MODEL_EMBEDDINGS ? "/v1/embeddings"
                                               : "/v1/chat/completions");
    snprintf(depth, sizeof(depth), "%d", r->call_depth + 1);
    h[nh++] = MF_STR("content-type");
    h[nh++] = MF_STR("application/json");
    h[nh++] = MF_STR("x-manifold-call");
    h[nh++] = mf_str_from(token);
    h[nh++] = MF_STR("x-manifold-call-depth");
    h[nh++] = mf_str_from(depth);
    if (call->provider.len > 0) {
        h[nh++] = MF_STR("x-manifold-call-provider");
        h[nh++] = call->provider;
    }
    if (r->consumer.len > 0) {
        h[nh++] = MF_STR("x-manifold-call-consumer");
        h[nh++] = r->consumer;
    }
    for (i = 0; i < sizeof(cred_headers) / sizeof(cred_headers[0]); i++) {
        if (mf_hlist_get(&r->req_headers, mf_str_from(cred_headers[i]), &v) ==
            MF_OK) {
            h[nh++] = mf_str_from(cred_headers[i]);
            h[nh++] = v;
        }
    }
    return mf_svc_http_call(r, "POST", mf_str_from(url), h, nh / 2, call->body,
                            call->timeout_ms, cb, arg);
}
