/*
 * Redis service: hiredis async connections per worker, attached to the
 * worker's event loop (hiredis's libevent adapter), made on first use from
 * the current generation's `redis:` settings. Every command is bounded by
 * redis.timeout; a timeout drops the connection (Redis is stuck). While
 * Redis is down, commands fail at once and the connection is tried again
 * with exponential backoff (100 ms doubling to 5 s): a clear error, never
 * a hang.
 *
 * redis: { host: 127.0.0.1, port: 6379, password: "", db: 0,
 *          timeout: 1s }
 * redis: { cluster: ["127.0.0.1:7000", "127.0.0.1:7001"], password: "",
 *          timeout: 1s }
 *
 * With `cluster:` (Redis Cluster), a worker holds one connection per
 * master node, opened on first use, and the slot map (CLUSTER SLOTS),
 * asked of any reachable node when the client is made and again after a
 * -MOVED (at most every MAP_MIN_MS). A command goes to the master of its
 * key's slot (redis_slot.c finds the keys); the keys of one command must
 * share a slot (a hash tag), except MGET's, which is sent as one GET per
 * key and its answers joined. SCRIPT LOAD / FLUSH and FUNCTION LOAD go to
 * every master. -MOVED updates the slot and sends the command again on the
 * named node, -ASK sends ASKING and the command there; at most
 * MAX_REDIRECTS times, within the command's redis.timeout.
 */
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pipeline/pipeline.h"
#include "svc/redis_slot.h"
#include "svc/svc.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define MAX_NODES 64    /* cluster nodes one worker knows */
#define MAX_SEEDS 16    /* redis.cluster entries */
#define MAX_REDIRECTS 5 /* -MOVED / -ASK followed per command */
#define MAP_MIN_MS 100  /* between two slot map requests */
#define TRY_AGAIN_MS 20 /* after -TRYAGAIN (keys of a migrating slot) */
#define SETTINGS_KEY 4800

typedef struct {
    char host[256];
    int port;
    char password[256];
    int db;
    double timeout_ms;
    int cluster; /* seeds below, host and port unused */
    int nseeds;
    char seed_host[MAX_SEEDS][256];
    int seed_port[MAX_SEEDS];
} redis_settings_t;

struct mf_redis_conn_s;

/* One Redis server: the standalone one, or a cluster node. */
typedef struct {
    struct mf_redis_conn_s *cl;
    char host[256];
    int port;
    redisAsyncContext *ac;
    int connected;
    double retry_at_ms; /* down: no attempt before this */
    double backoff_ms;
    char last_err[256];
} node_t;

/* A worker's Redis client. */
typedef struct mf_redis_conn_s {
    mf_worker_t *w;
    json_t *conf;           /* the `redis:` it was last asked with (held) */
    char key[SETTINGS_KEY]; /* the settings it was made with */
    redis_settings_t s;
    node_t *nodes[MAX_NODES]; /* standalone: nodes[0] */
    int nnodes;
    int16_t slots[MF_REDIS_SLOTS]; /* cluster: node index, -1 unknown */
    int map_pending;               /* a CLUSTER SLOTS is under way */
    int map_node;                  /* the node it was asked of */
    double map_at;
} redis_conn_t;

typedef struct gather_s gather_t;

typedef struct {
    mf_async_t link; /* first */
    mf_req_t *r;     /* NULL once abandoned */
    redis_conn_t *rc;
    node_t *node; /* where it was last sent */
    mf_redis_cb cb;
    void *arg;
    struct event *timer;
    int done;      /* the callback ran (reply, error or timeout) */
    char *failure; /* failed before sending: reported from the loop */
    mf_svc_redis_raw_cb raw_cb; /* a host command, not a request's */
    /* cluster: the command, kept to send again after a redirection */
    int argc;
    const char **av;
    size_t *al;
    int redirects;
    int tryagain;        /* -TRYAGAIN answers (a slot migrating) */
    struct event *retry; /* sent again after TRY_AGAIN_MS */
} redis_op_t;

/* A command sent as several (MGET across slots, SCRIPT LOAD to every
 * master): its op (not sent itself) answered when every part is. */
struct gather_s {
    redis_op_t *op;
    redis_conn_t *rc;
    int broadcast; /* the first part's reply; else an array of them */
    int n, left;
    mf_pool_t *pool;
    mf_redis_reply_t *parts;
    char err[320];
};

typedef struct {
    gather_t *g;
    int i;
} part_t;

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

/* "host:port" (the last colon splits) into host and *port. */
static int
split_hostport(const char *hp, char *host, size_t cap, int *port)
{
    const char *colon = hp ? strrchr(hp, ':') : NULL;
    size_t n;

    if (colon == NULL || colon == hp || colon[1] == '\0') {
        return MF_ERR;
    }
    n = (size_t)(colon - hp);
    if (hp[0] == '[' && n > 2 && hp[n - 1] == ']') {
        hp++; /* [::1]:7000 */
        n -= 2;
    }
    if (n >= cap) {
        return MF_ERR;
    }
    memcpy(host, hp, n);
    host[n] = '\0';
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536 ? MF_OK : MF_ERR;
}

/* The settings of conf, and their text in key (what a client was made
 * with: another one means a new client). */
static void
settings(json_t *conf, redis_settings_t *s, char *key, size_t keycap)
{
    const char *host = json_string_value(json_object_get(conf, "host"));
    const char *pw = json_string_value(json_object_get(conf, "password"));
    json_t *t = json_object_get(conf, "timeout");
    json_t *cl = json_object_get(conf, "cluster"), *v;
    size_t i, used;

    memset(s, 0, sizeof(*s));
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
    s->cluster = json_is_array(cl);
    json_array_foreach(cl, i, v)
    {
        if (s->nseeds < MAX_SEEDS &&
            split_hostport(json_string_value(v), s->seed_host[s->nseeds],
                           sizeof(s->seed_host[0]),
                           &s->seed_port[s->nseeds]) == MF_OK) {
            s->nseeds++;
        }
    }
    if (s->cluster) {
        s->db = 0;
    }
    used = (size_t)snprintf(key, keycap, "%s:%d/%d/%s/%d", s->host, s->port,
                            s->db, s->password, s->cluster);
    for (i = 0; i < (size_t)s->nseeds && used < keycap; i++) {
        used += (size_t)snprintf(key + used, keycap - used, ",%s:%d",
                                 s->seed_host[i], s->seed_port[i]);
    }
}

static void map_refresh(redis_conn_t *rc);

static void
mark_down(node_t *n, const char *why)
{
    n->ac = NULL;
    n->connected = 0;
    snprintf(n->last_err, sizeof(n->last_err), "%s", why);
    n->retry_at_ms = mf_now_ms() + n->backoff_ms;
    n->backoff_ms =
        n->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : n->backoff_ms * 2;
    mf_log_warn("redis: worker %d: %s:%d: %s; next attempt in %.0f ms",
                n->cl->w->id, n->host, n->port, why,
                n->retry_at_ms - mf_now_ms());
    if (n->cl->s.cluster) {
        map_refresh(n->cl); /* a failover may have moved its slots */
    }
}

static void
connect_cb(const redisAsyncContext *ac, int status)
{
    node_t *n = ac->data;

    if (n == NULL || n->ac != ac) {
        return;
    }
    if (status != REDIS_OK) {
        char why[300];

        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
        mark_down(n, why); /* hiredis frees the context */
        return;
    }
    n->connected = 1;
    n->backoff_ms = BACKOFF_MIN_MS;
    n->last_err[0] = '\0';
}

static void
disconnect_cb(const redisAsyncContext *ac, int status)
{
    node_t *n = ac->data;
    char why[300];

    if (n == NULL || n->ac != ac) {
        return;
    }
    snprintf(why, sizeof(why), "connection lost: %s",
             status == REDIS_OK ? "closed" : ac->errstr);
    mark_down(n, why);
}

/* Drops n's connection: its pending commands are answered NULL. */
static void
node_close(node_t *n)
{
    redisAsyncContext *ac = n->ac;

    n->ac = NULL;
    n->connected = 0;
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

/* n's connection, made now if needed: MF_ERR with err while it is down. */
static int
node_connect(node_t *n, char *err, size_t errcap)
{
    const redis_settings_t *s = &n->cl->s;

    if (n->ac != NULL) {
        return MF_OK;
    }
    if (mf_now_ms() < n->retry_at_ms) {
        if (n->cl->s.cluster) {
            map_refresh(n->cl); /* a failover's new master, if any */
        }
        snprintf(err, errcap,
                 "redis %s:%d is unavailable (%.200s); next attempt "
                 "in %.0f ms",
                 n->host, n->port, n->last_err, n->retry_at_ms - mf_now_ms());
        return MF_ERR;
    }
    n->ac = redisAsyncConnect(n->host, n->port);
    if (n->ac == NULL || n->ac->err) {
        char why[300];

        snprintf(why, sizeof(why), "cannot connect to %s:%d: %s", n->host,
                 n->port, n->ac ? n->ac->errstr : "out of memory");
        if (n->ac != NULL) {
            redisAsyncFree(n->ac);
        }
        mark_down(n, why);
        snprintf(err, errcap, "redis %s", why);
        return MF_ERR;
    }
    n->ac->data = n;
    redisLibeventAttach(n->ac, n->cl->w->base);
    redisAsyncSetConnectCallback(n->ac, connect_cb);
    redisAsyncSetDisconnectCallback(n->ac, disconnect_cb);
    if (s->password[0] != '\0') {
        redisAsyncCommand(n->ac, NULL, NULL, "AUTH %s", s->password);
    }
    if (s->db != 0) {
        redisAsyncCommand(n->ac, NULL, NULL, "SELECT %d", s->db);
    }
    return MF_OK;
}

/* The index of the node host:port, added when new; -1 when full. */
static int
node_index(redis_conn_t *rc, const char *host, int port)
{
    node_t *n;
    int i;

    for (i = 0; i < rc->nnodes; i++) {
        if (rc->nodes[i]->port == port &&
            strcmp(rc->nodes[i]->host, host) == 0) {
            return i;
        }
    }
    if (rc->nnodes == MAX_NODES) {
        return -1;
    }
    n = mf_xcalloc(1, sizeof(*n));
    n->cl = rc;
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    n->backoff_ms = BACKOFF_MIN_MS;
    rc->nodes[rc->nnodes] = n;
    return rc->nnodes++;
}

/* A node to ask what any node answers: a connected one, else one that
 * may be tried now; NULL with err when every one is down. */
static node_t *
node_any(redis_conn_t *rc, char *err, size_t errcap)
{
    int i;

    for (i = 0; i < rc->nnodes; i++) {
        if (rc->nodes[i]->connected) {
            return rc->nodes[i];
        }
    }
    for (i = 0; i < rc->nnodes; i++) {
        if (rc->nodes[i]->ac != NULL ||
            mf_now_ms() >= rc->nodes[i]->retry_at_ms) {
            return rc->nodes[i];
        }
    }
    if (rc->nnodes > 0) {
        return node_connect(rc->nodes[0], err, errcap) == MF_OK ? rc->nodes[0]
                                                                : NULL;
    }
    snprintf(err, errcap, "redis.cluster names no node");
    return NULL;
}

/* Forgets every node (settings changed, worker stop): pending commands
 * are answered NULL; what they call back finds the client empty. */
static void
client_reset(redis_conn_t *rc)
{
    node_t *old[MAX_NODES];
    int i, n = rc->nnodes;

    memcpy(old, rc->nodes, sizeof(old));
    rc->nnodes = 0;
    memset(rc->slots, 0xff, sizeof(rc->slots));
    for (i = 0; i < n; i++) {
        node_close(old[i]);
        free(old[i]);
    }
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

/* A copy of src in pool (a joined reply into the request's pool). */
static int
copy_reply(mf_pool_t *pool, mf_redis_reply_t *dst, const mf_redis_reply_t *src)
{
    size_t i;

    *dst = *src;
    if (src->str.data != NULL) {
        dst->str = mf_pool_str(pool, src->str);
    }
    if (src->nelements > 0) {
        dst->elements =
            mf_pool_alloc(pool, src->nelements * sizeof(mf_redis_reply_t));
        if (dst->elements == NULL) {
            return MF_ERR;
        }
        for (i = 0; i < src->nelements; i++) {
            if (copy_reply(pool, &dst->elements[i], &src->elements[i]) !=
                MF_OK) {
                return MF_ERR;
            }
        }
    }
    return MF_OK;
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

static void
op_free(redis_op_t *op)
{
    if (op->timer != NULL) {
        event_free(op->timer);
    }
    if (op->retry != NULL) {
        event_free(op->retry);
    }
    free(op->av); /* av and al in one block with the arguments */
    free(op);
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata);
static int op_start(redis_op_t *op, int *gathered, char *err, size_t errcap);
static void timeout_cb(evutil_socket_t fd, short what, void *arg);

/* Keeps a copy of argv in op (sent again after a redirection). */
static void
op_set_argv(redis_op_t *op, int argc, const mf_str_t *argv)
{
    size_t bytes = 0, off;
    char *data;
    int i;

    for (i = 0; i < argc; i++) {
        bytes += argv[i].len;
    }
    op->av = mf_xmalloc((size_t)argc * (sizeof(char *) + sizeof(size_t)) +
                        bytes + 1);
    op->al = (size_t *)(void *)(op->av + argc);
    data = (char *)(op->al + argc);
    for (i = 0, off = 0; i < argc; i++) {
        if (argv[i].len > 0) {
            memcpy(data + off, argv[i].data, argv[i].len);
        }
        op->av[i] = data + off;
        op->al[i] = argv[i].len;
        off += argv[i].len;
    }
    op->argc = argc;
}

/* Sends op's command to n (after ASKING when ask): MF_ERR with err when
 * n cannot be reached now. */
static int
op_send(redis_op_t *op, node_t *n, int ask, char *err, size_t errcap)
{
    if (node_connect(n, err, errcap) != MF_OK) {
        return MF_ERR;
    }
    if (ask) {
        redisAsyncCommand(n->ac, NULL, NULL, "ASKING");
    }
    if (redisAsyncCommandArgv(n->ac, reply_cb, op, op->argc, op->av, op->al) !=
        REDIS_OK) {
        snprintf(err, errcap, "redis connection is closing; try again");
        return MF_ERR;
    }
    op->node = n;
    return MF_OK;
}

/* Bounds op by redis.timeout. */
static void
op_arm(redis_op_t *op)
{
    double ms = op->rc->s.timeout_ms;
    struct timeval tv;

    op->timer = evtimer_new(op->rc->w->base, timeout_cb, op);
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms - (double)tv.tv_sec * 1000) * 1000);
    evtimer_add(op->timer, &tv);
}

/* The slot map (CLUSTER SLOTS: [[start, end, [host, port, id], replicas
 * ...], ...]) into rc->slots. */
static void
slots_got(void *arg, const mf_redis_reply_t *reply, const char *err)
{
    redis_conn_t *rc = arg;
    size_t i;

    rc->map_pending = 0;
    if (err != NULL || reply == NULL || reply->type != MF_REDIS_ARRAY) {
        mf_log_warn("redis: worker %d: the cluster's slot map could not be "
                    "read: %.*s",
                    rc->w->id, err ? (int)strlen(err) : (int)reply->str.len,
                    err ? err : reply->str.data);
        return;
    }
    for (i = 0; i < reply->nelements; i++) {
        const mf_redis_reply_t *e = &reply->elements[i], *m;
        char host[256];
        long long s;
        int idx;

        if (e->type != MF_REDIS_ARRAY || e->nelements < 3 ||
            e->elements[0].type != MF_REDIS_INTEGER ||
            e->elements[1].type != MF_REDIS_INTEGER ||
            e->elements[2].type != MF_REDIS_ARRAY ||
            e->elements[2].nelements < 2) {
            continue;
        }
        m = e->elements[2].elements;
        if (m[0].type != MF_REDIS_STRING || m[1].type != MF_REDIS_INTEGER ||
            m[0].str.len >= sizeof(host)) {
            continue;
        }
        if (m[0].str.len == 0 ||
            (m[0].str.len == 1 && m[0].str.data[0] == '?')) {
            /* the node asked is at the address it was reached by */
            snprintf(host, sizeof(host), "%s",
                     rc->map_node < rc->nnodes ? rc->nodes[rc->map_node]->host
                                               : "127.0.0.1");
        } else {
            memcpy(host, m[0].str.data, m[0].str.len);
            host[m[0].str.len] = '\0';
        }
        idx = node_index(rc, host, (int)m[1].integer);
        for (s = e->elements[0].integer < 0 ? 0 : e->elements[0].integer;
             idx >= 0 && s <= e->elements[1].integer && s < MF_REDIS_SLOTS;
             s++) {
            rc->slots[s] = (int16_t)idx;
        }
    }
}

/* Asks a node for the slot map (at most every MAP_MIN_MS, one at a
 * time); commands meanwhile go where the map said, or to any node,
 * and follow -MOVED. */
static void
map_refresh(redis_conn_t *rc)
{
    static const mf_str_t argv[2] = {{"CLUSTER", 7}, {"SLOTS", 5}};
    char err[320];
    redis_op_t *op;
    node_t *n;
    int i;

    if (!rc->s.cluster || rc->map_pending ||
        mf_now_ms() - rc->map_at < MAP_MIN_MS) {
        return;
    }
    rc->map_at = mf_now_ms();
    n = node_any(rc, err, sizeof(err));
    if (n == NULL) {
        return;
    }
    op = mf_xcalloc(1, sizeof(*op));
    op->rc = rc;
    op->raw_cb = slots_got;
    op->arg = rc;
    op_set_argv(op, 2, argv);
    if (op_send(op, n, 0, err, sizeof(err)) != MF_OK) {
        op_free(op);
        return;
    }
    for (i = 0; i < rc->nnodes; i++) {
        if (rc->nodes[i] == n) {
            rc->map_node = i;
        }
    }
    rc->map_pending = 1;
    op_arm(op);
}

/* After -TRYAGAIN: the command again, to the node of its slot now. */
static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_op_t *op = arg;
    char err[320];
    int gathered;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    event_free(op->retry);
    op->retry = NULL;
    if (op_start(op, &gathered, err, sizeof(err)) != MF_OK) {
        finish(op, NULL, err);
        op_free(op);
    }
}

/* -MOVED SLOT HOST:PORT / -ASK SLOT HOST:PORT: op sent again there
 * (1), or answered with why it cannot be (0, op->done). 0 as well for
 * any other reply. */
static int
redirected(redis_op_t *op, const redisReply *rep)
{
    redis_conn_t *rc = op->rc;
    char host[256], err[320];
    const char *p;
    int ask, slot, port, i;

    if (!rc->s.cluster || rep->type != REDIS_REPLY_ERROR || rep->str == NULL) {
        return 0;
    }
    if (strncmp(rep->str, "TRYAGAIN", 8) == 0 && op->node != NULL) {
        struct timeval tv = {0, TRY_AGAIN_MS * 1000};

        /* a multi-key command met its slot half migrated: again soon,
         * until redis.timeout */
        op->tryagain++;
        op->redirects = 0; /* the ASK to the importing node, again */
        op->retry = evtimer_new(rc->w->base, retry_cb, op);
        evtimer_add(op->retry, &tv);
        return 1;
    }
    if (strncmp(rep->str, "MOVED ", 6) == 0) {
        ask = 0;
        p = rep->str + 6;
    } else if (strncmp(rep->str, "ASK ", 4) == 0) {
        ask = 1;
        p = rep->str + 4;
    } else {
        return 0;
    }
    slot = atoi(p);
    p = strchr(p, ' ');
    if (p == NULL || slot < 0 || slot >= MF_REDIS_SLOTS) {
        return 0;
    }
    p++;
    if (p[0] == ':' && op->node != NULL) { /* an unknown endpoint: the same
                                              host */
        snprintf(host, sizeof(host), "%s", op->node->host);
        port = atoi(p + 1);
    } else if (split_hostport(p, host, sizeof(host), &port) != MF_OK) {
        return 0;
    }
    if (op->redirects >= MAX_REDIRECTS) {
        snprintf(err, sizeof(err),
                 "redis cluster: still redirected after %d redirections "
                 "(%.200s)",
                 MAX_REDIRECTS, rep->str);
        finish(op, NULL, err);
        return 0;
    }
    i = node_index(rc, host, port);
    if (i < 0) {
        return 0;
    }
    if (!ask) {
        rc->slots[slot] = (int16_t)i;
        map_refresh(rc);
    }
    op->redirects++;
    if (op_send(op, rc->nodes[i], ask, err, sizeof(err)) != MF_OK) {
        finish(op, NULL, err);
        return 0;
    }
    return 1;
}

/* hiredis: a reply, or NULL when the connection went away. Owns op
 * (unless the reply sent it on to another node). */
static void
reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_op_t *op = privdata;

    MF_UNUSED(ac);
    if (!op->done && reply != NULL && redirected(op, reply)) {
        return;
    }
    if (!op->done && op->raw_cb != NULL) {
        mf_pool_t *pool = mf_pool_create(4096);
        mf_redis_reply_t *rep = reply ? convert(pool, reply, 0) : NULL;

        finish(op, rep, reply == NULL ? "redis connection lost" : NULL);
        mf_pool_destroy(pool);
    } else if (!op->done && op->r != NULL) {
        if (reply == NULL) {
            char msg[320];

            snprintf(msg, sizeof(msg), "redis: %s",
                     op->node && op->node->last_err[0]
                         ? op->node->last_err
                         : "connection lost before the reply");
            finish(op, NULL, msg);
        } else {
            mf_redis_reply_t *rep = convert(op->r->pool, reply, 0);

            finish(op, rep, rep ? NULL : "out of memory reading the reply");
        }
    }
    op_free(op);
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_op_t *op = arg;
    node_t *n = op->node;
    char msg[128];

    MF_UNUSED(fd);
    MF_UNUSED(what);
    snprintf(msg, sizeof(msg), "redis command timed out after %.0f ms",
             op->rc->s.timeout_ms);
    if (op->retry != NULL) {
        /* waiting to be sent again (-TRYAGAIN): in no queue */
        snprintf(msg, sizeof(msg),
                 "redis cluster: the slot was still migrating after %.0f ms "
                 "(TRYAGAIN)",
                 op->rc->s.timeout_ms);
        finish(op, NULL, msg);
        op_free(op);
        return;
    }
    finish(op, NULL, msg);
    if (n != NULL && n->ac != NULL) {
        redisAsyncContext *ac = n->ac;

        /* Redis is stuck or unreachable: drop the connection; pending
         * replies (this op's too) come back NULL and are freed */
        mark_down(n, msg);
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
    op_free(op);
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

/* Every part answered: the op's reply, then the op and g freed. */
static void
gather_done(gather_t *g)
{
    redis_op_t *op = g->op;
    mf_redis_reply_t whole, *rep = &whole;
    int i;

    memset(&whole, 0, sizeof(whole));
    if (g->broadcast) {
        rep = &g->parts[0];
        for (i = 0; i < g->n; i++) {
            if (g->parts[i].type == MF_REDIS_ERROR) {
                rep = &g->parts[i]; /* a master refused it */
                break;
            }
        }
    } else {
        whole.type = MF_REDIS_ARRAY;
        whole.nelements = (size_t)g->n;
        whole.elements = g->parts;
    }
    if (g->err[0] != '\0') {
        finish(op, NULL, g->err);
    } else if (op->raw_cb == NULL && op->r != NULL) {
        mf_redis_reply_t *mine = mf_pool_alloc(op->r->pool, sizeof(*mine));

        if (mine == NULL || copy_reply(op->r->pool, mine, rep) != MF_OK) {
            finish(op, NULL, "out of memory reading the reply");
        } else {
            finish(op, mine, NULL);
        }
    } else {
        finish(op, rep, NULL);
    }
    op_free(op);
    mf_pool_destroy(g->pool);
    free(g);
}

static void
part_done(void *arg, const mf_redis_reply_t *reply, const char *err)
{
    part_t *p = arg;
    gather_t *g = p->g;

    if (err != NULL && g->err[0] == '\0') {
        snprintf(g->err, sizeof(g->err), "%s", err);
    } else if (reply != NULL && !g->broadcast &&
               reply->type == MF_REDIS_ERROR) {
        g->parts[p->i].type = MF_REDIS_NIL; /* as MGET answers a non-string */
    } else if (reply != NULL &&
               copy_reply(g->pool, &g->parts[p->i], reply) != MF_OK &&
               g->err[0] == '\0') {
        snprintf(g->err, sizeof(g->err), "out of memory reading the reply");
    }
    free(p);
    if (--g->left == 0) {
        gather_done(g);
    }
}

/* The node serving slot: the map's, else any (a -MOVED corrects it). */
static node_t *
node_for_slot(redis_conn_t *rc, int slot, char *err, size_t errcap)
{
    int i = rc->slots[slot];

    if (i >= 0 && i < rc->nnodes) {
        return rc->nodes[i];
    }
    map_refresh(rc);
    return node_any(rc, err, errcap);
}

/* op's command as parts: MGET as a GET per key (split), or the command
 * on every master. MF_ERR with err when no part could be sent. */
static int
gather_start(redis_op_t *op, int split, char *err, size_t errcap)
{
    redis_conn_t *rc = op->rc;
    gather_t *g = mf_xcalloc(1, sizeof(*g));
    node_t *targets[MAX_NODES];
    int i, j, started = 0;

    g->op = op;
    g->rc = rc;
    g->broadcast = !split;
    if (split) {
        g->n = op->argc - 1;
    } else {
        int owns[MAX_NODES] = {0};

        for (i = 0; i < MF_REDIS_SLOTS; i++) {
            if (rc->slots[i] >= 0 && rc->slots[i] < rc->nnodes) {
                owns[rc->slots[i]] = 1;
            }
        }
        for (i = 0; i < rc->nnodes; i++) {
            if (owns[i]) {
                targets[g->n++] = rc->nodes[i];
            }
        }
        if (g->n == 0) {
            map_refresh(rc);
            snprintf(err, errcap,
                     "redis cluster: the slot map is not known yet (no node "
                     "answered CLUSTER SLOTS); try again");
            free(g);
            return MF_ERR;
        }
    }
    g->pool = mf_pool_create(4096);
    g->parts = mf_pool_alloc(g->pool, (size_t)g->n * sizeof(*g->parts));
    memset(g->parts, 0, (size_t)g->n * sizeof(*g->parts));
    g->left = g->n + 1; /* none done before every part is sent */
    for (i = 0; i < g->n; i++) {
        redis_op_t *c = mf_xcalloc(1, sizeof(*c));
        part_t *p = mf_xcalloc(1, sizeof(*p));
        mf_str_t one[2];
        node_t *n;

        p->g = g;
        p->i = i;
        c->rc = rc;
        c->raw_cb = part_done;
        c->arg = p;
        if (split) {
            one[0] = (mf_str_t){"GET", 3};
            one[1] = (mf_str_t){op->av[i + 1], op->al[i + 1]};
            op_set_argv(c, 2, one);
            n = node_for_slot(rc, mf_redis_key_slot(one[1]), err, errcap);
        } else {
            mf_str_t *all = mf_xmalloc((size_t)op->argc * sizeof(mf_str_t));

            for (j = 0; j < op->argc; j++) {
                all[j] = (mf_str_t){op->av[j], op->al[j]};
            }
            op_set_argv(c, op->argc, all);
            free(all);
            n = targets[i];
        }
        if (n == NULL || op_send(c, n, 0, err, errcap) != MF_OK) {
            if (g->err[0] == '\0') {
                snprintf(g->err, sizeof(g->err), "%s", err);
            }
            free(p);
            op_free(c);
            g->left--;
            continue;
        }
        op_arm(c);
        started++;
    }
    if (started == 0) {
        snprintf(err, errcap, "%s", g->err);
        mf_pool_destroy(g->pool);
        free(g);
        return MF_ERR;
    }
    g->left--; /* every part is out */
    return MF_OK;
}

/* Routes and sends op's command (in op->av); *gathered when it went as
 * parts. MF_ERR with err when it cannot be sent now. */
static int
op_start(redis_op_t *op, int *gathered, char *err, size_t errcap)
{
    redis_conn_t *rc = op->rc;
    mf_str_t *argv;
    node_t *n;
    int i, slot, split;
    mf_rcmd_kind_t kind;

    *gathered = 0;
    if (!rc->s.cluster) {
        return op_send(op, rc->nodes[0], 0, err, errcap);
    }
    argv = mf_xmalloc((size_t)op->argc * sizeof(*argv));
    for (i = 0; i < op->argc; i++) {
        argv[i] = (mf_str_t){op->av[i], op->al[i]};
    }
    kind = mf_redis_cmd_route(op->argc, argv, &slot, &split);
    free(argv);
    switch (kind) {
    case MF_RCMD_KEYED:
        n = node_for_slot(rc, slot, err, errcap);
        return n ? op_send(op, n, 0, err, errcap) : MF_ERR;
    case MF_RCMD_KEYLESS:
        n = node_any(rc, err, errcap);
        return n ? op_send(op, n, 0, err, errcap) : MF_ERR;
    case MF_RCMD_ALL:
        *gathered = 1;
        return gather_start(op, 0, err, errcap);
    case MF_RCMD_CROSSSLOT:
        if (split) {
            *gathered = 1;
            return gather_start(op, 1, err, errcap);
        }
        snprintf(err, errcap,
                 "CROSSSLOT: the keys of this %.*s hash to different slots "
                 "of the redis cluster; give them one hash tag {...}",
                 (int)(op->al[0] < 32 ? op->al[0] : 32), op->av[0]);
        return MF_ERR;
    default:
        snprintf(err, errcap,
                 "%.*s is not supported with redis.cluster (one shared "
                 "connection per node)",
                 (int)(op->al[0] < 32 ? op->al[0] : 32), op->av[0]);
        return MF_ERR;
    }
}

/* The worker's client for conf, made (or made anew: the settings
 * changed) if needed; NULL with err when no Redis is configured. */
static redis_conn_t *
client_get(mf_worker_t *w, json_t *conf, char *err, size_t errcap)
{
    redis_conn_t *rc = w->redis;
    redis_settings_t s;
    char key[SETTINGS_KEY];
    int i;

    if (conf == NULL) {
        snprintf(err, errcap,
                 "no redis: configured; add redis: {host, port} "
                 "to the config");
        return NULL;
    }
    if (rc != NULL && rc->conf == conf && rc->nnodes > 0) {
        return rc; /* the same generation's settings (held: not reused) */
    }
    settings(conf, &s, key, sizeof(key));
    if (rc == NULL) {
        rc = w->redis = mf_xcalloc(1, sizeof(*rc));
        rc->w = w;
        memset(rc->slots, 0xff, sizeof(rc->slots));
    }
    json_decref(rc->conf);
    rc->conf = json_incref(conf);
    rc->s.timeout_ms = s.timeout_ms;
    if (rc->nnodes > 0 && strcmp(rc->key, key) == 0) {
        return rc;
    }
    client_reset(rc); /* new, or the settings changed by a reload */
    memcpy(rc->key, key, sizeof(key));
    rc->s = s;
    rc->map_at = 0;
    if (!s.cluster) {
        node_index(rc, s.host, s.port);
    }
    for (i = 0; i < s.nseeds; i++) {
        node_index(rc, s.seed_host[i], s.seed_port[i]);
    }
    if (rc->nnodes == 0) {
        snprintf(err, errcap, "redis.cluster names no node (host:port)");
        return NULL;
    }
    map_refresh(rc);
    return rc;
}

int
mf_svc_redis_command(mf_req_t *r, int argc, const mf_str_t *argv,
                     mf_redis_cb cb, void *arg)
{
    char err[512];
    redis_conn_t *rc;
    redis_op_t *op;
    int gathered;

    if (argc < 1 || argc > 1024) {
        return MF_ERR;
    }
    op = mf_xcalloc(1, sizeof(*op));
    op->r = r;
    op->cb = cb;
    op->arg = arg;
    op->link.cancel = op_cancel;
    rc = client_get(r->worker, r->gen->config->redis, err, sizeof(err));
    if (rc == NULL) {
        fail_later(r, op, err);
        return MF_OK;
    }
    op->rc = rc;
    op_set_argv(op, argc, argv);
    if (op_start(op, &gathered, err, sizeof(err)) != MF_OK) {
        fail_later(r, op, err);
        return MF_OK;
    }
    mf_req_async_add(r, &op->link);
    if (!gathered) {
        op_arm(op);
    }
    return MF_OK;
}

int
mf_svc_redis_raw(mf_worker_t *w, json_t *conf, int argc, const mf_str_t *argv,
                 mf_svc_redis_raw_cb cb, void *arg)
{
    char err[512];
    redis_conn_t *rc = conf ? client_get(w, conf, err, sizeof(err)) : NULL;
    redis_op_t *op;
    int gathered;

    if (rc == NULL || argc < 1 || argc > 1024) {
        return MF_ERR;
    }
    op = mf_xcalloc(1, sizeof(*op));
    op->rc = rc;
    op->raw_cb = cb;
    op->arg = arg;
    op_set_argv(op, argc, argv);
    if (op_start(op, &gathered, err, sizeof(err)) != MF_OK) {
        op_free(op);
        return MF_ERR;
    }
    if (!gathered) {
        op_arm(op);
    }
    return MF_OK;
}

void
mf_svc_redis_worker_free(mf_worker_t *w)
{
    redis_conn_t *rc = w->redis;

    if (rc == NULL) {
        return;
    }
    client_reset(rc);
    json_decref(rc->conf);
    free(rc);
    w->redis = NULL;
}

static void worker_thread_start(mf_worker_t *w);

const mf_worker_hooks_t mf_svc_redis_hooks = {
    .fini = mf_svc_redis_worker_free, .thread_start = worker_thread_start};

/* The blocking connections of api->redis_call (init, on its loader
 * thread, and admin commands, on the main thread), one command at a time;
 * never on a worker, whose loop it would stall. Standalone: snodes[0];
 * cluster: one per node, with the slot map read when first needed and
 * again after a -MOVED. */
typedef struct {
    char host[256];
    int port;
    redisContext *c;
} snode_t;

static pthread_mutex_t sync_lock = PTHREAD_MUTEX_INITIALIZER;
static snode_t snodes[MAX_NODES];
static int nsnodes;
static int16_t sslots[MF_REDIS_SLOTS];
static int smap; /* sslots was read */
static redis_settings_t ss;
static char sync_key[SETTINGS_KEY];
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
sync_drop_all(void)
{
    int i;

    for (i = 0; i < nsnodes; i++) {
        if (snodes[i].c != NULL) {
            redisFree(snodes[i].c);
        }
    }
    nsnodes = 0;
    smap = 0;
    memset(sslots, 0xff, sizeof(sslots));
}

static int
snode_index(const char *host, int port)
{
    int i;

    for (i = 0; i < nsnodes; i++) {
        if (snodes[i].port == port && strcmp(snodes[i].host, host) == 0) {
            return i;
        }
    }
    if (nsnodes == MAX_NODES) {
        return -1;
    }
    snprintf(snodes[nsnodes].host, sizeof(snodes[0].host), "%s", host);
    snodes[nsnodes].port = port;
    snodes[nsnodes].c = NULL;
    return nsnodes++;
}

/* One command on node i (after ASKING when ask); NULL with err. A
 * connection kept from before may have died with its server: one more
 * try on a new one. */
static redisReply *
snode_cmd(int i, int argc, const char **av, const size_t *al, int ask,
          char *err, size_t errcap)
{
    snode_t *n = &snodes[i];
    struct timeval tv;
    redisReply *rep = NULL;
    int attempt;

    tv.tv_sec = (time_t)(ss.timeout_ms / 1000);
    tv.tv_usec =
        (suseconds_t)((ss.timeout_ms - (double)tv.tv_sec * 1000) * 1000);
    for (attempt = 0; rep == NULL && attempt < 2; attempt++) {
        int reused = n->c != NULL;

        if (n->c == NULL) {
            n->c = redisConnectWithTimeout(n->host, n->port, tv);
            if (n->c == NULL || n->c->err) {
                snprintf(err, errcap, "redis %s:%d: %s", n->host, n->port,
                         n->c ? n->c->errstr : "out of memory");
                if (n->c != NULL) {
                    redisFree(n->c);
                    n->c = NULL;
                }
                smap = 0; /* a failover may have moved its slots */
                return NULL;
            }
            redisSetTimeout(n->c, tv);
            rep = ss.password[0] ? redisCommand(n->c, "AUTH %s", ss.password)
                                 : NULL;
            if (rep != NULL) {
                freeReplyObject(rep);
            }
            rep = ss.db != 0 ? redisCommand(n->c, "SELECT %d", ss.db) : NULL;
            if (rep != NULL) {
                freeReplyObject(rep);
            }
            rep = NULL;
        }
        if (ask) {
            rep = redisCommand(n->c, "ASKING");
            if (rep != NULL) {
                freeReplyObject(rep);
            }
        }
        rep = redisCommandArgv(n->c, argc, av, al);
        if (rep == NULL) {
            snprintf(err, errcap, "redis %s:%d: %s", n->host, n->port,
                     n->c->errstr[0] ? n->c->errstr : "no reply");
            redisFree(n->c); /* a timeout leaves the connection unusable */
            n->c = NULL;
            if (!reused) {
                break;
            }
        }
    }
    return rep;
}

/* The slot map from the first node that answers CLUSTER SLOTS. */
static void
sync_map_load(void)
{
    static const char *av[2] = {"CLUSTER", "SLOTS"};
    static const size_t al[2] = {7, 5};
    char err[256];
    int i, n = nsnodes;
    size_t j;

    for (i = 0; i < n && !smap; i++) {
        redisReply *rep = snode_cmd(i, 2, av, al, 0, err, sizeof(err));

        if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
            if (rep != NULL) {
                freeReplyObject(rep);
            }
            continue;
        }
        for (j = 0; j < rep->elements; j++) {
            const redisReply *e = rep->element[j], *m;
            long long s;
            int idx;

            if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
                e->element[2]->type != REDIS_REPLY_ARRAY ||
                e->element[2]->elements < 2) {
                continue;
            }
            m = e->element[2];
            if (m->element[0]->type != REDIS_REPLY_STRING ||
                m->element[1]->type != REDIS_REPLY_INTEGER) {
                continue;
            }
            idx = snode_index(m->element[0]->len == 0 ||
                                      strcmp(m->element[0]->str, "?") == 0
                                  ? snodes[i].host
                                  : m->element[0]->str,
                              (int)m->element[1]->integer);
            for (s = e->element[0]->integer < 0 ? 0 : e->element[0]->integer;
                 idx >= 0 && s <= e->element[1]->integer && s < MF_REDIS_SLOTS;
                 s++) {
                sslots[s] = (int16_t)idx;
            }
        }
        smap = 1;
        freeReplyObject(rep);
    }
}

/* Follows -MOVED / -ASK replies (at most MAX_REDIRECTS). */
static redisReply *
sync_follow(redisReply *rep, int cur, int argc, const char **av,
            const size_t *al, char *err, size_t errcap)
{
    int hops;

    for (hops = 0;
         rep != NULL && rep->type == REDIS_REPLY_ERROR && hops < MAX_REDIRECTS;
         hops++) {
        char host[256];
        const char *p;
        int ask, slot, port, i;

        if (strncmp(rep->str, "TRYAGAIN", 8) == 0) {
            struct timespec ts = {0, TRY_AGAIN_MS * 1000000L};

            /* a slot half migrated: again soon, on the same node */
            freeReplyObject(rep);
            nanosleep(&ts, NULL);
            rep = snode_cmd(cur, argc, av, al, 0, err, errcap);
            continue;
        }
        if (strncmp(rep->str, "MOVED ", 6) == 0) {
            ask = 0;
            p = rep->str + 6;
        } else if (strncmp(rep->str, "ASK ", 4) == 0) {
            ask = 1;
            p = rep->str + 4;
        } else {
            break;
        }
        slot = atoi(p);
        p = strchr(p, ' ');
        if (p == NULL || slot < 0 || slot >= MF_REDIS_SLOTS ||
            split_hostport(p + 1, host, sizeof(host), &port) != MF_OK ||
            (i = snode_index(host, port)) < 0) {
            break;
        }
        if (!ask) {
            sslots[slot] = (int16_t)i;
            smap = 0; /* read again on the next command */
        }
        freeReplyObject(rep);
        cur = i;
        rep = snode_cmd(i, argc, av, al, ask, err, errcap);
    }
    return rep;
}

/* The command on a cluster: to its slot's master, or every master. */
static redisReply *
sync_cluster(int argc, const mf_str_t *argv, const char **av, const size_t *al,
             char *err, size_t errcap)
{
    redisReply *rep = NULL;
    int slot, split, i, owners[MAX_NODES] = {0}, nown = 0;

    if (!smap) {
        sync_map_load();
    }
    switch (mf_redis_cmd_route(argc, argv, &slot, &split)) {
    case MF_RCMD_KEYED:
        i = sslots[slot] >= 0 ? sslots[slot] : 0;
        return sync_follow(snode_cmd(i, argc, av, al, 0, err, errcap), i, argc,
                           av, al, err, errcap);
    case MF_RCMD_KEYLESS:
        for (i = 0; rep == NULL && i < nsnodes; i++) {
            rep = snode_cmd(i, argc, av, al, 0, err, errcap);
        }
        return rep;
    case MF_RCMD_ALL:
        for (i = 0; i < MF_REDIS_SLOTS; i++) {
            if (sslots[i] >= 0) {
                owners[sslots[i]] = 1;
            }
        }
        for (i = 0; i < nsnodes; i++) {
            redisReply *one;

            if (!owners[i]) {
                continue;
            }
            nown++;
            one = snode_cmd(i, argc, av, al, 0, err, errcap);
            if (one == NULL) {
                if (rep != NULL) {
                    freeReplyObject(rep);
                }
                return NULL;
            }
            if (rep == NULL || one->type == REDIS_REPLY_ERROR) {
                if (rep != NULL) {
                    freeReplyObject(rep);
                }
                rep = one;
            } else {
                freeReplyObject(one);
            }
        }
        if (nown == 0) {
            snprintf(err, errcap,
                     "redis cluster: no node answered CLUSTER SLOTS");
        }
        return rep;
    case MF_RCMD_CROSSSLOT:
        snprintf(err, errcap,
                 "CROSSSLOT: the keys of this %.*s hash to different slots "
                 "of the redis cluster; give them one hash tag {...}",
                 (int)(argv[0].len < 32 ? argv[0].len : 32), argv[0].data);
        return NULL;
    default:
        snprintf(err, errcap, "%.*s is not supported with redis.cluster",
                 (int)(argv[0].len < 32 ? argv[0].len : 32), argv[0].data);
        return NULL;
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
    redis_settings_t s;
    char key[SETTINGS_KEY];
    const char **av;
    size_t *al;
    redisReply *rep;
    json_t *out = NULL;
    int i;

    if (conf == NULL) {
        snprintf(err, errcap, "no redis: configured");
        return NULL;
    }
    if (argc < 1 || argc > 1024) {
        snprintf(err, errcap, "redis_call: 1 to 1024 arguments");
        return NULL;
    }
    settings(conf, &s, key, sizeof(key));
    if (nsnodes == 0 || strcmp(key, sync_key) != 0) {
        sync_drop_all();
        memcpy(sync_key, key, sizeof(key));
        ss = s;
        if (!s.cluster) {
            snode_index(s.host, s.port);
        }
        for (i = 0; i < s.nseeds; i++) {
            snode_index(s.seed_host[i], s.seed_port[i]);
        }
        if (nsnodes == 0) {
            snprintf(err, errcap, "redis.cluster names no node (host:port)");
            return NULL;
        }
    }
    ss.timeout_ms = s.timeout_ms;
    av = mf_xmalloc((size_t)argc * sizeof(char *));
    al = mf_xmalloc((size_t)argc * sizeof(size_t));
    for (i = 0; i < argc; i++) {
        av[i] = argv[i].data ? argv[i].data : "";
        al[i] = argv[i].len;
    }
    rep = ss.cluster ? sync_cluster(argc, argv, av, al, err, errcap)
                     : snode_cmd(0, argc, av, al, 0, err, errcap);
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
