/*
 * Redis service: one hiredis async connection per worker, attached to the
 * worker's event loop (hiredis's libevent adapter), made on first use from
 * the current generation's `redis:` settings. Every command is bounded by
 * redis.timeout; a timeout drops the connection (Redis is stuck). While
 * Redis is down, commands fail at once and the connection is tried again
 * with exponential backoff (100 ms doubling to 5 s): a clear error, never
 * a hang.
 *
 * redis: { host: 127.0.0.1, port: 6379, password: "", db: 0,
 *          timeout: 1s }
 */
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "pipeline/pipeline.h"
#include "svc/svc.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef struct mf_redis_conn_s {
    mf_worker_t *w;
    redisAsyncContext *ac;
    int connected;
    char key[640]; /* the settings it was made with */
    double timeout_ms;
    double retry_at_ms; /* down: no attempt before this */
    double backoff_ms;
    char last_err[256];
} redis_conn_t;

typedef struct {
    mf_async_t link; /* first */
    mf_req_t *r;     /* NULL once abandoned */
    redis_conn_t *rc;
    mf_redis_cb cb;
    void *arg;
    struct event *timer;
    int done;      /* the callback ran (reply, error or timeout) */
    char *failure; /* failed before sending: reported from the loop */
    mf_svc_redis_raw_cb raw_cb; /* a host command, not a request's */
} redis_op_t;

typedef struct {
    char host[256];
    int port;
    char password[256];
    int db;
    double timeout_ms;
} redis_settings_t;

static int
json_int(json_t *v, int def)
{
    if (json_is_integer(v)) {
        return (int)json_integer_value(v);
    }
    if (json_is_string(v)) {
        return atoi(json_string_value(v));
    }
    return def;
}

static void
settings(json_t *conf, redis_settings_t *s)
{
    const char *host = json_string_value(json_object_get(conf, "host"));
    const char *pw = json_string_value(json_object_get(conf, "password"));
    json_t *t = json_object_get(conf, "timeout");

    snprintf(s->host, sizeof(s->host), "%s", host ? host : "127.0.0.1");
    snprintf(s->password, sizeof(s->password), "%s", pw ? pw : "");
    s->port = json_int(json_object_get(conf, "port"), 6379);
    s->db = json_int(json_object_get(conf, "db"), 0);
    s->timeout_ms = 1000;
    if (json_is_string(t)) {
        mf_config_parse_duration(json_string_value(t), &s->timeout_ms);
    } else if (json_is_number(t)) {
        s->timeout_ms = json_number_value(t);
    }
    if (s->timeout_ms <= 0) {
        s->timeout_ms = 1000;
    }
}

static void
mark_down(redis_conn_t *rc, const char *why)
{
    rc->ac = NULL;
    rc->connected = 0;
    snprintf(rc->last_err, sizeof(rc->last_err), "%s", why);
    rc->retry_at_ms = mf_now_ms() + rc->backoff_ms;
    rc->backoff_ms = rc->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                         : rc->backoff_ms * 2;
    mf_log_warn("redis: worker %d: %s; next attempt in %.0f ms", rc->w->id, why,
                rc->retry_at_ms - mf_now_ms());
}

static void
connect_cb(const redisAsyncContext *ac, int status)
{
    redis_conn_t *rc = ac->data;

    if (rc == NULL || rc->ac != ac) {
        return;
    }
    if (status != REDIS_OK) {
        char why[300];

        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
        mark_down(rc, why); /* hiredis frees the context */
        return;
    }
    rc->connected = 1;
    rc->backoff_ms = BACKOFF_MIN_MS;
    rc->last_err[0] = '\0';
}

static void
disconnect_cb(const redisAsyncContext *ac, int status)
{
    redis_conn_t *rc = ac->data;
    char why[300];

    if (rc == NULL || rc->ac != ac) {
        return;
    }
    snprintf(why, sizeof(why), "connection lost: %s",
             status == REDIS_OK ? "closed" : ac->errstr);
    mark_down(rc, why);
}

/* The worker's connection, made now if needed; NULL with err. */
static redis_conn_t *
conn_get(mf_worker_t *w, json_t *conf, char *err, size_t errcap)
{
    redis_conn_t *rc = w->redis;
    redis_settings_t s = {0}; /* settings() fills every field */
    char key[640];

    if (conf == NULL) {
        snprintf(err, errcap,
                 "no redis: configured; add redis: {host, port} "
                 "to the config");
        return NULL;
    }
    settings(conf, &s);
    snprintf(key, sizeof(key), "%s:%d/%d/%s", s.host, s.port, s.db, s.password);
    if (rc == NULL) {
        rc = w->redis = mf_xcalloc(1, sizeof(*rc));
        rc->w = w;
        rc->backoff_ms = BACKOFF_MIN_MS;
    }
    if (rc->ac != NULL && strcmp(rc->key, key) != 0) {
        redisAsyncContext *ac = rc->ac; /* settings changed by a reload */

        rc->ac = NULL;
        rc->connected = 0;
        ac->data = NULL;
        redisAsyncFree(ac);
        rc->backoff_ms = BACKOFF_MIN_MS;
        rc->retry_at_ms = 0;
    }
    memcpy(rc->key, key, sizeof(key));
    rc->timeout_ms = s.timeout_ms;
    if (rc->ac != NULL) {
        return rc;
    }
    if (mf_now_ms() < rc->retry_at_ms) {
        snprintf(err, errcap,
                 "redis %s:%d is unavailable (%.200s); next attempt "
                 "in %.0f ms",
                 s.host, s.port, rc->last_err, rc->retry_at_ms - mf_now_ms());
        return NULL;
    }
    rc->ac = redisAsyncConnect(s.host, s.port);
    if (rc->ac == NULL || rc->ac->err) {
        char why[300];

        snprintf(why, sizeof(why), "cannot connect to %s:%d: %s", s.host,
                 s.port, rc->ac ? rc->ac->errstr : "out of memory");
        if (rc->ac != NULL) {
            redisAsyncFree(rc->ac);
        }
        mark_down(rc, why);
        snprintf(err, errcap, "redis %s", why);
        return NULL;
    }
    rc->ac->data = rc;
    redisLibeventAttach(rc->ac, w->base);
    redisAsyncSetConnectCallback(rc->ac, connect_cb);
    redisAsyncSetDisconnectCallback(rc->ac, disconnect_cb);
    if (s.password[0] != '\0') {
        redisAsyncCommand(rc->ac, NULL, NULL, "AUTH %s", s.password);
    }
    if (s.db != 0) {
        redisAsyncCommand(rc->ac, NULL, NULL, "SELECT %d", s.db);
    }
    return rc;
}

static mf_redis_reply_t *
convert(mf_pool_t *pool, const redisReply *rep, int depth)
{
    mf_redis_reply_t *out = mf_pool_alloc(pool, sizeof(*out));
    size_t i;

    if (out == NULL) {
        return NULL;
    }
    memset(out, 0, sizeof(*out));
    switch (rep->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        out->type = rep->type == REDIS_REPLY_STRING   ? MF_REDIS_STRING
                    : rep->type == REDIS_REPLY_STATUS ? MF_REDIS_STATUS
                                                      : MF_REDIS_ERROR;
        out->str = mf_pool_str(pool, (mf_str_t){rep->str, rep->len});
        break;
    case REDIS_REPLY_INTEGER:
        out->type = MF_REDIS_INTEGER;
        out->integer = rep->integer;
        break;
    case REDIS_REPLY_ARRAY:
        out->type = MF_REDIS_ARRAY;
        if (depth > 16 || rep->elements == 0) {
            break;
        }
        out->elements =
            mf_pool_alloc(pool, rep->elements * sizeof(mf_redis_reply_t));
        if (out->elements == NULL) {
            return NULL;
        }
        for (i = 0; i < rep->elements; i++) {
            mf_redis_reply_t *e = convert(pool, rep->element[i], depth + 1);

            if (e == NULL) {
                return NULL;
            }
            out->elements[i] = *e;
        }
        out->nelements = rep->elements;
        break;
    default:
        out->type = MF_REDIS_NIL;
        break;
    }
    return out;
}

/* Runs the callback once, with the op out of the request's list. */
static void
finish(redis_op_t *op, const mf_redis_reply_t *reply, const char *err)
{
    mf_req_t *r = op->r;

    if (op->raw_cb != NULL) {
        if (!op->done) {
            op->done = 1;
            op->raw_cb(op->arg, reply, err);
        }
        if (op->timer != NULL) {
            event_free(op->timer);
            op->timer = NULL;
        }
        return;
    }
    op->done = 1;
    if (op->timer != NULL) {
        event_free(op->timer);
        op->timer = NULL;
    }
    if (r == NULL) {
        return;
    }
    mf_req_async_remove(r, &op->link);
    /* op->done is set: the reply, when it comes, is dropped */
    op->r = NULL;
    op->cb(r, op->arg, reply, err);
}

/* hiredis: a reply, or NULL when the connection went away. Owns op. */
static void
reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_op_t *op = privdata;

    MF_UNUSED(ac);
    if (!op->done && op->raw_cb != NULL) {
        mf_pool_t *pool = mf_pool_create(4096);
        mf_redis_reply_t *rep = reply ? convert(pool, reply, 0) : NULL;

        finish(op, rep, reply == NULL ? "redis connection lost" : NULL);
        mf_pool_destroy(pool);
    } else if (!op->done && op->r != NULL) {
        if (reply == NULL) {
            char msg[320];

            snprintf(msg, sizeof(msg), "redis: %s",
                     op->rc->last_err[0] ? op->rc->last_err
                                         : "connection lost before the reply");
            finish(op, NULL, msg);
        } else {
            mf_redis_reply_t *rep = convert(op->r->pool, reply, 0);

            finish(op, rep, rep ? NULL : "out of memory reading the reply");
        }
    }
    if (op->timer != NULL) {
        event_free(op->timer);
    }
    free(op);
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_op_t *op = arg;
    redis_conn_t *rc = op->rc;
    char msg[128];

    MF_UNUSED(fd);
    MF_UNUSED(what);
    snprintf(msg, sizeof(msg), "redis command timed out after %.0f ms",
             rc->timeout_ms);
    finish(op, NULL, msg);
    if (rc->ac != NULL) {
        redisAsyncContext *ac = rc->ac;

        /* Redis is stuck or unreachable: drop the connection; pending
         * replies (this op's too) come back NULL and are freed */
        mark_down(rc, msg);
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

/* A failure before sending, reported on the next loop pass so that the
 * callback never runs inside redis_command. */
static void
fail_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_op_t *op = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    finish(op, NULL, op->failure);
    free(op->failure);
    free(op);
}

static void
fail_later(mf_req_t *r, redis_op_t *op, const char *err)
{
    struct timeval zero = {0, 0};

    op->failure = mf_xstrdup(err);
    mf_req_async_add(r, &op->link);
    op->timer = evtimer_new(r->worker->base, fail_cb, op);
    evtimer_add(op->timer, &zero);
}

/* The request ended first: the reply, when it comes, is dropped. */
static void
op_cancel(mf_async_t *a)
{
    redis_op_t *op = (redis_op_t *)a;

    op->r = NULL; /* the timer stays: a stuck Redis is still dropped, and
                     fail_cb still frees a failed op */
}

int
mf_svc_redis_command(mf_req_t *r, int argc, const mf_str_t *argv,
                     mf_redis_cb cb, void *arg)
{
    char err[512];
    redis_conn_t *rc;
    redis_op_t *op;
    const char **av;
    size_t *al;
    struct timeval tv;
    int i, rcode;

    if (argc < 1 || argc > 1024) {
        return MF_ERR;
    }
    op = mf_xcalloc(1, sizeof(*op));
    op->r = r;
    op->cb = cb;
    op->arg = arg;
    op->link.cancel = op_cancel;
    rc = conn_get(r->worker, r->gen->config->redis, err, sizeof(err));
    if (rc == NULL) {
        fail_later(r, op, err);
        return MF_OK;
    }
    op->rc = rc;
    av = mf_xmalloc((size_t)argc * sizeof(char *));
    al = mf_xmalloc((size_t)argc * sizeof(size_t));
    for (i = 0; i < argc; i++) {
        av[i] = argv[i].data ? argv[i].data : "";
        al[i] = argv[i].len;
    }
    rcode = redisAsyncCommandArgv(rc->ac, reply_cb, op, argc, av, al);
    free(av);
    free(al);
    if (rcode != REDIS_OK) {
        fail_later(r, op, "redis connection is closing; try again");
        return MF_OK;
    }
    mf_req_async_add(r, &op->link);
    op->timer = evtimer_new(r->worker->base, timeout_cb, op);
    tv.tv_sec = (time_t)(rc->timeout_ms / 1000);
    tv.tv_usec =
        (suseconds_t)((rc->timeout_ms - (double)tv.tv_sec * 1000) * 1000);
    evtimer_add(op->timer, &tv);
    return MF_OK;
}

int
mf_svc_redis_raw(mf_worker_t *w, json_t *conf, int argc, const mf_str_t *argv,
                 mf_svc_redis_raw_cb cb, void *arg)
{
    char err[512];
    redis_conn_t *rc = conf ? conn_get(w, conf, err, sizeof(err)) : NULL;
    const char **av;
    size_t *al;
    redis_op_t *op;
    struct timeval tv;
    int i, rcode;

    if (rc == NULL || argc < 1 || argc > 1024) {
        return MF_ERR;
    }
    av = mf_xmalloc((size_t)argc * sizeof(char *));
    al = mf_xmalloc((size_t)argc * sizeof(size_t));
    for (i = 0; i < argc; i++) {
        av[i] = argv[i].data ? argv[i].data : "";
        al[i] = argv[i].len;
    }
    op = mf_xcalloc(1, sizeof(*op));
    op->rc = rc;
    op->raw_cb = cb;
    op->arg = arg;
    rcode = redisAsyncCommandArgv(rc->ac, reply_cb, op, argc, av, al);
    free(av);
    free(al);
    if (rcode != REDIS_OK) {
        free(op);
        return MF_ERR;
    }
    op->timer = evtimer_new(w->base, timeout_cb, op);
    tv.tv_sec = (time_t)(rc->timeout_ms / 1000);
    tv.tv_usec =
        (suseconds_t)((rc->timeout_ms - (double)tv.tv_sec * 1000) * 1000);
    evtimer_add(op->timer, &tv);
    return MF_OK;
}

void
mf_svc_redis_worker_free(mf_worker_t *w)
{
    redis_conn_t *rc = w->redis;

    if (rc == NULL) {
        return;
    }
    if (rc->ac != NULL) {
        rc->ac->data = NULL;
        redisAsyncFree(rc->ac);
    }
    free(rc);
    w->redis = NULL;
}

static void worker_thread_start(mf_worker_t *w);

const mf_worker_hooks_t mf_svc_redis_hooks = {
    .fini = mf_svc_redis_worker_free, .thread_start = worker_thread_start};

/* The blocking connection of api->redis_call (init, on its loader
 * thread, and admin commands, on the main thread), one at a time; never
 * on a worker, whose loop it would stall. */
static pthread_mutex_t sync_lock = PTHREAD_MUTEX_INITIALIZER;
static redisContext *sync_ctx;
static char sync_key[640];
static __thread int on_worker;

static void
worker_thread_start(mf_worker_t *w)
{
    MF_UNUSED(w);
    on_worker = 1;
}

static json_t *
sync_json(const redisReply *rep, int depth)
{
    json_t *a;
    size_t i;

    switch (rep->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        return json_stringn_nocheck(rep->str, rep->len);
    case REDIS_REPLY_INTEGER:
        return json_integer(rep->integer);
    case REDIS_REPLY_ARRAY:
        a = json_array();
        for (i = 0; depth < 16 && i < rep->elements; i++) {
            json_array_append_new(a, sync_json(rep->element[i], depth + 1));
        }
        return a;
    default:
        return json_null();
    }
}

static void
sync_drop(void)
{
    if (sync_ctx != NULL) {
        redisFree(sync_ctx);
        sync_ctx = NULL;
    }
}

static json_t *sync_locked(json_t *conf, int argc, const mf_str_t *argv,
                           char *err, size_t errcap);

json_t *
mf_svc_redis_sync(json_t *conf, int argc, const mf_str_t *argv, char *err,
                  size_t errcap)
{
    json_t *out;

    if (on_worker) {
        snprintf(err, errcap,
                 "redis_call is for init and admin commands; a stage "
                 "uses redis_command or redis_post");
        return NULL;
    }
    pthread_mutex_lock(&sync_lock);
    out = sync_locked(conf, argc, argv, err, errcap);
    pthread_mutex_unlock(&sync_lock);
    return out;
}

static json_t *
sync_locked(json_t *conf, int argc, const mf_str_t *argv, char *err,
            size_t errcap)
{
    redis_settings_t s = {0};
    char key[640];
    const char **av;
    size_t *al;
    redisReply *rep;
    json_t *out = NULL;
    struct timeval tv;
    int i, attempt;

    if (conf == NULL) {
        snprintf(err, errcap, "no redis: configured");
        return NULL;
    }
    if (argc < 1 || argc > 1024) {
        snprintf(err, errcap, "redis_call: 1 to 1024 arguments");
        return NULL;
    }
    settings(conf, &s);
    snprintf(key, sizeof(key), "%s:%d/%d/%s", s.host, s.port, s.db, s.password);
    if (sync_ctx != NULL && strcmp(key, sync_key) != 0) {
        sync_drop();
    }
    tv.tv_sec = (time_t)(s.timeout_ms / 1000);
    tv.tv_usec =
        (suseconds_t)((s.timeout_ms - (double)tv.tv_sec * 1000) * 1000);
    av = mf_xmalloc((size_t)argc * sizeof(char *));
    al = mf_xmalloc((size_t)argc * sizeof(size_t));
    for (i = 0; i < argc; i++) {
        av[i] = argv[i].data ? argv[i].data : "";
        al[i] = argv[i].len;
    }
    /* a connection kept from before may have died with its server: one
     * more try on a new one */
    for (attempt = 0, rep = NULL; rep == NULL && attempt < 2; attempt++) {
        int reused = sync_ctx != NULL;

        if (sync_ctx == NULL) {
            sync_ctx = redisConnectWithTimeout(s.host, s.port, tv);
            if (sync_ctx == NULL || sync_ctx->err) {
                snprintf(err, errcap, "redis %s:%d: %s", s.host, s.port,
                         sync_ctx ? sync_ctx->errstr : "out of memory");
                sync_drop();
                break;
            }
            redisSetTimeout(sync_ctx, tv);
            memcpy(sync_key, key, sizeof(key));
            rep = s.password[0] ? redisCommand(sync_ctx, "AUTH %s", s.password)
                                : NULL;
            if (rep != NULL) {
                freeReplyObject(rep);
            }
            rep = s.db != 0 ? redisCommand(sync_ctx, "SELECT %d", s.db) : NULL;
            if (rep != NULL) {
                freeReplyObject(rep);
            }
        }
        rep = redisCommandArgv(sync_ctx, argc, av, al);
        if (rep == NULL) {
            snprintf(err, errcap, "redis %s:%d: %s", s.host, s.port,
                     sync_ctx->errstr[0] ? sync_ctx->errstr : "no reply");
            sync_drop(); /* a timeout leaves the connection unusable */
            if (!reused) {
                break;
            }
        }
    }
    free(av);
    free(al);
    if (rep == NULL) {
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(err, errcap, "redis: %.*s", (int)rep->len, rep->str);
    } else {
        out = sync_json(rep, 0);
    }
    freeReplyObject(rep);
    return out;
}
