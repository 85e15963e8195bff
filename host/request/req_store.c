/*
 * The response store as the inbound adapters see it (through their call):
 * in memory, one per process (proto/respstore.c), or in Redis when the
 * config has `redis:`, shared by every gateway process that uses it.
 * Redis is asynchronous and an adapter is not: the entry a request needs
 * (the adapter's store_key: a previous_response_id, the id of a GET or
 * DELETE) is read (or deleted) here first, the request waiting, and the
 * adapter then finds it in the request. Writes to Redis go out without
 * waiting (SET with the store's TTL).
 *
 * Each entry keeps its owner: the consumer of the request that made it
 * ("" when anonymous). A read after on_request (GET and DELETE
 * /v1/responses/{id}, which run in MF_PHASE_LOCAL) finds only the
 * request's consumer's entries; another's is "not stored here", and a
 * DELETE of it deletes nothing. The read a previous_response_id needs
 * happens at intake, before any stage named the consumer: it records the
 * entry's owner (store_owner), and request_end refuses the request when
 * it is not the consumer's (mf_req_store_owner_ok).
 */
#include "request/request-int.h"

#include <stdio.h>
#include <stdlib.h>

#include "proto/proto.h"
#include "proto/respstore.h"
#include "svc/svc.h"

#define STORE_PREFIX "manifold:resp:"

/* The request's consumer as an owner: NUL-terminated, "" anonymous;
 * NULL when out of memory (then nothing is kept or deleted). */
static const char *
req_owner(mf_req_t *r)
{
    return r->consumer.len > 0
               ? mf_pool_strndup(r->pool, r->consumer.data, r->consumer.len)
               : "";
}

/* Whether owner (n bytes) is the request's consumer ("" anonymous). */
static int
owner_is(mf_req_t *r, const char *owner, size_t n)
{
    return n == r->consumer.len &&
           (n == 0 || memcmp(owner, r->consumer.data, n) == 0);
}

/* A value read for r with its owner (both malloc'd; owner freed here):
 * before on_request the owner is recorded for request_end; after, the
 * value is r's only when the owner is its consumer (else NULL). */
static char *
owner_gate(mf_req_t *r, char *value, char *owner)
{
    if (value != NULL && !r->store_checked) {
        if (r->store_read_early && (r->store_owner.data == NULL ||
                                    !mf_str_eq_cstr(r->store_owner, owner))) {
            /* entries of two owners (a previous_response_id and an
             * item_reference): one is not the consumer's */
            r->store_owner = MF_STR_NULL;
        } else {
            r->store_owner = mf_pool_str(r->pool, mf_str_from(owner));
        }
        r->store_read_early = 1;
    } else if (value != NULL && !owner_is(r, owner, strlen(owner))) {
        free(value);
        value = NULL;
    }
    free(owner);
    return value;
}

int
mf_req_store_owner_ok(mf_req_t *r)
{
    r->store_checked = 1;
    return !r->store_read_early ||
           (r->store_owner.data != NULL &&
            owner_is(r, r->store_owner.data, r->store_owner.len));
}

/* In Redis an entry is "<n>:<owner><value>", n the owner's length in
 * bytes (decimal). An entry without it (kept before owners were) is
 * anonymous's. */
static void
redis_unwrap(mf_str_t raw, mf_str_t *owner, mf_str_t *value)
{
    size_t i = 0, n = 0;

    while (i < raw.len && i < 8 && raw.data[i] >= '0' && raw.data[i] <= '9') {
        n = n * 10 + (size_t)(raw.data[i++] - '0');
    }
    if (i == 0 || i >= raw.len || raw.data[i] != ':' || n > raw.len - i - 1) {
        *owner = MF_STR("");
        *value = raw;
        return;
    }
    *owner = (mf_str_t){raw.data + i + 1, n};
    *value = (mf_str_t){raw.data + i + 1 + n, raw.len - i - 1 - n};
}

static char *
mem_get(const mf_proto_call_t *call, const char *id)
{
    char *owner = NULL, *value = mf_respstore_get(id, &owner);

    return owner_gate(call->ctx, value, owner);
}

static void
mem_put(const mf_proto_call_t *call, const char *id, mf_str_t value)
{
    const mf_config_t *c = call->config;
    const char *owner = req_owner(call->ctx);

    if (owner != NULL) {
        (void)mf_respstore_put(id, owner, value, c->store_max_entries,
                               c->store_max_bytes, c->store_ttl_ms);
    }
}

static int
mem_delete(const mf_proto_call_t *call, const char *id)
{
    const char *owner = req_owner(call->ctx);

    return owner != NULL && mf_respstore_delete(id, owner);
}

/* Redis: the entry read before the adapter ran. */
static char *
redis_get(const mf_proto_call_t *call, const char *id)
{
    mf_req_t *r = call->ctx;
    mf_str_t owner, value;

    if (r->store_value.data == NULL || !mf_str_eq_cstr(r->store_id, id)) {
        return NULL;
    }
    redis_unwrap(r->store_value, &owner, &value);
    return owner_gate(r, mf_xstrndup(value.data, value.len),
                      mf_xstrndup(owner.data, owner.len));
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
    const char *owner = req_owner(r);
    char key[256], ttl[32];
    mf_str_t argv[5];
    mf_buf_t v = {0};
    int n;

    if (owner == NULL || c->store_max_entries == 0 ||
        value.len > c->store_max_bytes ||
        strlen(id) + sizeof(STORE_PREFIX) > sizeof(key)) {
        return;
    }
    snprintf(key, sizeof(key), STORE_PREFIX "%s", id);
    n = snprintf(ttl, sizeof(ttl), "%.0f",
                 c->store_ttl_ms < 1 ? 1 : c->store_ttl_ms);
    argv[0] = MF_STR("SET");
    argv[1] = mf_str_from(key);
    mf_buf_printf(&v, "%zu:%s", strlen(owner), owner);
    mf_buf_append(&v, value.data, value.len);
    argv[2] = (mf_str_t){v.data, v.len};
    argv[3] = MF_STR("PX");
    argv[4] = (mf_str_t){ttl, (size_t)n};
    if (mf_svc_redis_raw(r->worker, c->redis, 5, argv, put_done, NULL) !=
        MF_OK) {
        mf_log_warn("response store: a Responses answer was not kept: "
                    "Redis is not reachable");
    }
    mf_buf_free(&v);
}

mf_proto_call_t
mf_req_proto_call(mf_req_t *r)
{
    mf_proto_call_t call = {r->path,        r->query, &r->proto_memo,
                            r->gen->config, mem_get,  mem_put,
                            mem_delete,     r,        NULL};

    if (r->gen->config->redis != NULL) {
        call.store_get = redis_get;
        call.store_put = redis_put;
        call.store_delete = redis_delete;
    }
    return call;
}

/* The store could not be used: a 503; 1 when so. */
static int
store_failed(mf_req_t *r, const mf_redis_reply_t *reply, const char *err)
{
    char msg[400];

    if (err == NULL && reply != NULL && reply->type != MF_REDIS_ERROR) {
        return 0;
    }
    snprintf(msg, sizeof(msg),
             "The response store (Redis) could not be read: %s.",
             err ? err : "Redis refused the command");
    mf_req_respond_error(r, 503, "server_error", "store_unavailable", msg);
    mf_req_finish(r);
    return 1;
}

static void
deleted(mf_req_t *r, void *arg, const mf_redis_reply_t *reply, const char *err)
{
    (void)arg;
    if (store_failed(r, reply, err)) {
        return;
    }
    r->store_deleted = reply->type == MF_REDIS_INTEGER && reply->integer > 0;
    mf_req_intake_resume(r);
}

/* The entry read; for a DELETE (arg set), deleted next when it is the
 * request's consumer's (another's stays: a 404). */
static void
fetched(mf_req_t *r, void *arg, const mf_redis_reply_t *reply, const char *err)
{
    mf_str_t owner, value, argv[2];

    if (store_failed(r, reply, err)) {
        return;
    }
    if (reply->type == MF_REDIS_STRING) {
        r->store_value = mf_pool_str(r->pool, reply->str);
    }
    if (arg != NULL && r->store_value.data != NULL) {
        redis_unwrap(r->store_value, &owner, &value);
        if (owner_is(r, owner.data, owner.len)) {
            argv[0] = MF_STR("DEL");
            argv[1] = *(mf_str_t *)arg;
            if (mf_svc_redis_command(r, 2, argv, deleted, NULL) == MF_OK) {
                return;
            }
            store_failed(r, NULL, "Redis is not reachable");
            return;
        }
    }
    mf_req_intake_resume(r);
}

int
mf_req_store_fetch(mf_req_t *r, json_t *in)
{
    mf_proto_call_t call = mf_req_proto_call(r);
    mf_str_t id, argv[2], *key_arg;
    char key[256];
    int del = 0;

    if (r->gen->config->redis == NULL || r->proto->store_key == NULL ||
        !r->proto->store_key(&call, in, r->method, &id, &del) ||
        id.len + sizeof(STORE_PREFIX) > sizeof(key)) {
        return 0;
    }
    r->store_id = mf_pool_str(r->pool, id);
    snprintf(key, sizeof(key), STORE_PREFIX "%.*s", (int)id.len, id.data);
    key_arg = mf_pool_alloc(r->pool, sizeof(*key_arg));
    *key_arg = mf_pool_str(r->pool, mf_str_from(key));
    /* a DELETE reads first: only the owner's entry is deleted */
    argv[0] = MF_STR("GET");
    argv[1] = *key_arg;
    if (mf_svc_redis_command(r, 2, argv, fetched, del ? key_arg : NULL) !=
        MF_OK) {
        return 0;
    }
    return 1;
}
