/*
 * The response store as the inbound adapters see it (through their call):
 * in memory, one per process (proto/respstore.c), or in Redis when the
 * config has `redis:`, shared by every gateway process that uses it.
 * Redis is asynchronous and an adapter is not: the entry a request needs
 * (the adapter's store_key: a previous_response_id, the id of a GET or
 * DELETE) is read (or deleted) here first, the request waiting, and the
 * adapter then finds it in the request. Writes to Redis go out without
 * waiting (SET with the store's TTL).
 */
#include "request/request-int.h"

#include <stdio.h>
#include <stdlib.h>

#include "proto/proto.h"
#include "proto/respstore.h"
#include "svc/svc.h"

#define STORE_PREFIX "manifold:resp:"

static char *
mem_get(const mf_proto_call_t *call, const char *id)
{
    (void)call;
    return mf_respstore_get(id);
}

static void
mem_put(const mf_proto_call_t *call, const char *id, mf_str_t value)
{
    const mf_config_t *c = call->config;

    (void)mf_respstore_put(id, value, c->store_max_entries, c->store_max_bytes,
                           c->store_ttl_ms);
}

static int
mem_delete(const mf_proto_call_t *call, const char *id)
{
    (void)call;
    return mf_respstore_delete(id);
}

/* Redis: the entry read before the adapter ran. */
static char *
redis_get(const mf_proto_call_t *call, const char *id)
{
    mf_req_t *r = call->ctx;

    if (r->store_value.data == NULL || !mf_str_eq_cstr(r->store_id, id)) {
        return NULL;
    }
    return mf_xstrndup(r->store_value.data, r->store_value.len);
}

static int
redis_delete(const mf_proto_call_t *call, const char *id)
{
    mf_req_t *r = call->ctx;

    return r->store_deleted && mf_str_eq_cstr(r->store_id, id);
}

static void
put_done(void *arg, const mf_redis_reply_t *reply, const char *err)
{
    (void)arg;
    if (err != NULL || (reply != NULL && reply->type == MF_REDIS_ERROR)) {
        mf_log_warn("response store: a Responses answer was not kept in "
                    "Redis: %s",
                    err ? err : "Redis refused the SET");
    }
}

static void
redis_put(const mf_proto_call_t *call, const char *id, mf_str_t value)
{
    mf_req_t *r = call->ctx;
    const mf_config_t *c = call->config;
    char key[256], ttl[32];
    mf_str_t argv[5];
    int n;

    if (c->store_max_entries == 0 || value.len > c->store_max_bytes ||
        strlen(id) + sizeof(STORE_PREFIX) > sizeof(key)) {
        return;
    }
    snprintf(key, sizeof(key), STORE_PREFIX "%s", id);
    n = snprintf(ttl, sizeof(ttl), "%.0f",
                 c->store_ttl_ms < 1 ? 1 : c->store_ttl_ms);
    argv[0] = MF_STR("SET");
    argv[1] = mf_str_from(key);
    argv[2] = value;
    argv[3] = MF_STR("PX");
    argv[4] = (mf_str_t){ttl, (size_t)n};
    if (mf_svc_redis_raw(r->worker, c->redis, 5, argv, put_done, NULL) !=
        MF_OK) {
        mf_log_warn("response store: a Responses answer was not kept: "
                    "Redis is not reachable");
    }
}

mf_proto_call_t
mf_req_proto_call(mf_req_t *r)
{
    mf_proto_call_t call = {r->path, r->query, &r->proto_memo, r->gen->config,
                            mem_get, mem_put,  mem_delete,     r};

    if (r->gen->config->redis != NULL) {
        call.store_get = redis_get;
        call.store_put = redis_put;
        call.store_delete = redis_delete;
    }
    return call;
}

static void
fetched(mf_req_t *r, void *arg, const mf_redis_reply_t *reply, const char *err)
{
    char msg[400];

    (void)arg;
    if (err != NULL || reply == NULL || reply->type == MF_REDIS_ERROR) {
        snprintf(msg, sizeof(msg),
                 "The response store (Redis) could not be read: %s.",
                 err ? err : "Redis refused the command");
        mf_req_respond_error(r, 503, "server_error", "store_unavailable", msg);
        mf_req_finish(r);
        return;
    }
    if (reply->type == MF_REDIS_STRING) {
        r->store_value = mf_pool_str(r->pool, reply->str);
    }
    r->store_deleted = reply->type == MF_REDIS_INTEGER && reply->integer > 0;
    mf_req_intake_resume(r);
}

int
mf_req_store_fetch(mf_req_t *r, json_t *in)
{
    mf_proto_call_t call = mf_req_proto_call(r);
    mf_str_t id, argv[2];
    char key[256];
    int del = 0;

    if (r->gen->config->redis == NULL || r->proto->store_key == NULL ||
        !r->proto->store_key(&call, in, r->method, &id, &del) ||
        id.len + sizeof(STORE_PREFIX) > sizeof(key)) {
        return 0;
    }
    r->store_id = mf_pool_str(r->pool, id);
    snprintf(key, sizeof(key), STORE_PREFIX "%.*s", (int)id.len, id.data);
    argv[0] = del ? MF_STR("DEL") : MF_STR("GET");
    argv[1] = mf_pool_str(r->pool, mf_str_from(key));
    if (mf_svc_redis_command(r, 2, argv, fetched, NULL) != MF_OK) {
        return 0;
    }
    return 1;
}
