/*
 * key-auth: who is calling. Finds the consumer of the key a client sends
 * (Authorization: Bearer, x-api-key, x-goog-api-key, ?key=), refuses a
 * missing, unknown, expired or revoked key (401, each with its code) and
 * a model the consumer may not use (403), removes the client's
 * credential from the request, and sets the consumer record (name,
 * group, key id, the limits and budget as attributes) for later stages.
 *
 * Keys come from the config (`consumers[].keys`: literal, ${ENV}, or
 * sha256:HEX) and from admin commands (generated "mf-ID-SECRET" keys, of
 * which only HMAC-SHA256 under a server secret is kept). Consumers and
 * keys made at run time persist in a SQLite file (`db`), written by the
 * admin commands on the main thread, never by a worker.
 */
#include <manifold/plugin.h>

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../common/gov.h"

static const mf_host_api_t *api;

typedef struct consumer_s {
    char *name;
    char *group;
    json_t *models; /* globs; NULL = all */
    json_t *limits; /* {rpm, tpm, concurrency, ...} or NULL */
    json_t *budget; /* {micro_usd | tokens, period, tz} or NULL */
    int disabled;
    int from_config;
    mf_str_t *attrs; /* the record's attributes, built from the above */
    size_t nattrs;
    char *attr_text;    /* storage of attrs */
    int64_t fetched_ms; /* Redis store: when read from Redis (monotonic) */
    int gone;           /* Redis store: a runtime consumer Redis lacks */
} consumer_t;

typedef struct key_s {
    char id[GOV_KEY_ID_LEN + 1];
    char *consumer;
    unsigned char mac[32]; /* HMAC(secret, key); SHA-256(key) for config */
    int64_t created;       /* unix seconds */
    int64_t expires;       /* unix seconds, 0 = never */
    int revoked;
    int from_config;
    int64_t fetched_ms; /* Redis store: when read from Redis (monotonic) */
    int missing;        /* Redis store: an id Redis does not know */
} key_t_;

typedef struct {
    pthread_rwlock_t lock;
    unsigned char secret[32];
    struct evp_md_st *sha256; /* fetched once (the per-request hashes) */
    gov_map_t *consumers;     /* name -> consumer_t */
    gov_map_t *keys;          /* id -> key_t_ (generated keys) */
    gov_map_t *cfg_keys;      /* hex SHA-256 of the key -> key_t_ */
    json_t *groups;           /* name -> {models} from `groups` */
    sqlite3 *db;
    char *db_path;
    int redis; /* runtime consumers and keys live in Redis */
} ka_t;

/* Redis store: a node trusts what it read from Redis this long, so a key
 * revoked or a consumer disabled on one node is refused on every node
 * within it. */
#define REFRESH_MS 500

/* Errors in the client's protocol */

static void
deny(mf_req_t *r, int status, const char *code, const char *msg)
{
    mf_req_info_t i = {.size = sizeof(i)};
    const char *type;

    api->get_info(r, &i);
    if (i.endpoint == MF_ENDPOINT_MESSAGES ||
        (i.path.len >= 12 && memcmp(i.path.data, "/v1/messages", 12) == 0)) {
        type = status == 401 ? "authentication_error" : "permission_error";
    } else {
        type = status == 401 ? "invalid_request_error" : "permission_error";
    }
    api->respond_error_code(r, status, type, code, msg);
}

/* Consumers */

static void
consumer_free(void *v)
{
    consumer_t *c = v;

    if (c == NULL) {
        return;
    }
    free(c->name);
    free(c->group);
    json_decref(c->models);
    json_decref(c->limits);
    json_decref(c->budget);
    free(c->attrs);
    free(c->attr_text);
    free(c);
}

static void
key_free(void *v)
{
    key_t_ *k = v;

    if (k != NULL) {
        free(k->consumer);
        free(k);
    }
}

/* The attributes later stages read: limits.NAME and budget.NAME, values
 * as decimal text. */
static void
consumer_attrs(consumer_t *c)
{
    char buf[4096];
    size_t used = 0, n = 0, i, off;
    const char *k;
    json_t *v;
    size_t starts[64];

    free(c->attrs);
    free(c->attr_text);
    c->attrs = NULL;
    c->attr_text = NULL;
    c->nattrs = 0;
#define PUT(prefix, obj)                                                       \
    json_object_foreach((obj), k, v)                                           \
    {                                                                          \
        int w;                                                                 \
        if (n >= 32) {                                                         \
            break;                                                             \
        }                                                                      \
        starts[2 * n] = used;                                                  \
        w = snprintf(buf + used, sizeof(buf) - used, "%s.%s", prefix, k);      \
        if (w < 0 || (size_t)w + 1 >= sizeof(buf) - used) {                    \
            break;                                                             \
        }                                                                      \
        used += (size_t)w + 1;                                                 \
        starts[2 * n + 1] = used;                                              \
        if (json_is_integer(v)) {                                              \
            w = snprintf(buf + used, sizeof(buf) - used, "%lld",               \
                         (long long)json_integer_value(v));                    \
        } else {                                                               \
            w = snprintf(buf + used, sizeof(buf) - used, "%s",                 \
                         json_string_value(v) ? json_string_value(v) : "");    \
        }                                                                      \
        if (w < 0 || (size_t)w + 1 >= sizeof(buf) - used) {                    \
            break;                                                             \
        }                                                                      \
        used += (size_t)w + 1;                                                 \
        n++;                                                                   \
    }
    if (c->limits != NULL) {
        PUT("limits", c->limits);
    }
    if (c->budget != NULL) {
        PUT("budget", c->budget);
    }
#undef PUT
    if (n == 0) {
        return;
    }
    c->attr_text = malloc(used);
    c->attrs = calloc(2 * n, sizeof(mf_str_t));
    if (c->attr_text == NULL || c->attrs == NULL) {
        free(c->attr_text);
        free(c->attrs);
        c->attr_text = NULL;
        c->attrs = NULL;
        return;
    }
    memcpy(c->attr_text, buf, used);
    for (i = 0; i < 2 * n; i++) {
        off = starts[i];
        c->attrs[i].data = c->attr_text + off;
        c->attrs[i].len = strlen(c->attr_text + off);
    }
    c->nattrs = n;
}

/* A consumer from its JSON (the config's normalized shape). */
static consumer_t *
consumer_from_json(json_t *j, int from_config)
{
    consumer_t *c = calloc(1, sizeof(*c));
    const char *g = json_string_value(json_object_get(j, "group"));

    if (c == NULL) {
        return NULL;
    }
    c->name = strdup(json_string_value(json_object_get(j, "name")));
    c->group = g ? strdup(g) : NULL;
    c->models = json_incref(json_object_get(j, "models"));
    c->limits = json_incref(json_object_get(j, "limits"));
    c->budget = json_incref(json_object_get(j, "budget"));
    c->disabled = json_is_true(json_object_get(j, "disabled"));
    c->from_config = from_config;
    consumer_attrs(c);
    return c;
}

static json_t *
consumer_json(const consumer_t *c)
{
    json_t *j =
        json_pack("{s:s,s:b,s:s}", "name", c->name, "disabled", c->disabled,
                  "source", c->from_config ? "config" : "runtime");

    if (c->group) {
        json_object_set_new(j, "group", json_string(c->group));
    }
    if (c->models) {
        json_object_set(j, "models", c->models);
    }
    if (c->limits) {
        json_object_set(j, "limits", c->limits);
    }
    if (c->budget) {
        json_object_set(j, "budget", c->budget);
    }
    return j;
}

/* The store (SQLite) */

static int
db_exec(ka_t *ka, const char *sql)
{
    char *err = NULL;

    if (sqlite3_exec(ka->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        api->log(MF_LOG_ERROR, "key-auth: %s: %s", ka->db_path,
                 err ? err : "?");
        sqlite3_free(err);
        return MF_ERR;
    }
    return MF_OK;
}

/* Runs sql with text parameters (NULL = SQL NULL) and int64 ones after
 * them: "T" text, "I" integer in types. */
static int
db_run(ka_t *ka, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = NULL;
    va_list ap;
    int i, rc;

    if (ka->db == NULL) {
        return MF_OK;
    }
    if (sqlite3_prepare_v2(ka->db, sql, -1, &st, NULL) != SQLITE_OK) {
        api->log(MF_LOG_ERROR, "key-auth: %s: %s", ka->db_path,
                 sqlite3_errmsg(ka->db));
        return MF_ERR;
    }
    va_start(ap, types);
    for (i = 0; types[i] != '\0'; i++) {
        if (types[i] == 'T') {
            const char *t = va_arg(ap, const char *);

            sqlite3_bind_text(st, i + 1, t, -1, SQLITE_TRANSIENT);
        } else {
            sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
    }
    va_end(ap);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        api->log(MF_LOG_ERROR, "key-auth: %s: %s", ka->db_path,
                 sqlite3_errmsg(ka->db));
        return MF_ERR;
    }
    return MF_OK;
}

static int
db_open(ka_t *ka)
{
    static const char schema[] =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=FULL;"
        "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT);"
        "CREATE TABLE IF NOT EXISTS consumers(name TEXT PRIMARY KEY,"
        " json TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS overrides(name TEXT PRIMARY KEY,"
        " disabled INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS keys(id TEXT PRIMARY KEY,"
        " consumer TEXT NOT NULL, mac TEXT NOT NULL, created INTEGER,"
        " expires INTEGER, revoked INTEGER);";
    int fd_mode = umask(0077);

    if (sqlite3_open_v2(ka->db_path, &ka->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        umask((mode_t)fd_mode);
        api->log(MF_LOG_ERROR,
                 "key-auth: cannot open %s: %s; set `db` to a writable "
                 "path",
                 ka->db_path, ka->db ? sqlite3_errmsg(ka->db) : "?");
        return MF_ERR;
    }
    umask((mode_t)fd_mode);
    chmod(ka->db_path, 0600);
    sqlite3_busy_timeout(ka->db, 2000);
    return db_exec(ka, schema);
}

/* The server secret: the config's, else the one kept in the store (made
 * on first start). */
static int
load_secret(ka_t *ka, json_t *conf)
{
    const char *s = json_string_value(json_object_get(conf, "secret"));
    sqlite3_stmt *st = NULL;
    char hex[65];
    int rc;

    if (s != NULL) {
        if (strlen(s) < 16) {
            api->log(MF_LOG_ERROR,
                     "key-auth: secret is shorter than 16 characters; "
                     "use 32 random bytes (openssl rand -hex 32)");
            return MF_ERR;
        }
        gov_sha256(s, strlen(s), ka->secret);
        return MF_OK;
    }
    if (ka->db == NULL) {
        api->log(MF_LOG_ERROR, "key-auth: without `db`, set `secret`");
        return MF_ERR;
    }
    if (sqlite3_prepare_v2(ka->db, "SELECT v FROM meta WHERE k='secret'", -1,
                           &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);

        rc = v && gov_unhex(v, strlen(v), ka->secret, 32) == MF_OK ? MF_OK
                                                                   : MF_ERR;
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_finalize(st);
    if (gov_random_hex(hex, 32) != MF_OK ||
        gov_unhex(hex, 64, ka->secret, 32) != MF_OK) {
        return MF_ERR;
    }
    return db_run(ka, "INSERT INTO meta(k, v) VALUES('secret', ?)", "T", hex);
}

/* The Redis store. Keys (one Redis key each, so a cluster spreads them):
 * mf:ka:key:{ID} a hash (consumer, mac, created, expires, revoked);
 * mf:ka:consumer:{NAME} the JSON of a runtime consumer, or of a config
 * consumer's override ({"override": true, "disabled": ...});
 * mf:ka:consumers and mf:ka:keys the sets of runtime names and ids;
 * mf:ka:ckeys:{NAME} the ids of one consumer's keys. Written by admin
 * commands (main thread, api->redis_call), read by workers when what
 * they hold is older than REFRESH_MS. */

static int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A blocking command of NUL-terminated arguments; NULL with err. */
static json_t *
rcall(char *err, size_t cap, int argc, ...)
{
    mf_str_t argv[16];
    va_list ap;
    int i;

    va_start(ap, argc);
    for (i = 0; i < argc && i < 16; i++) {
        const char *a = va_arg(ap, const char *);

        argv[i] = (mf_str_t){a, strlen(a)};
    }
    va_end(ap);
    return api->redis_call(argc, argv, err, cap);
}

/* rcall for a write whose reply does not matter: MF_ERR when it failed. */
static int
rdo(char *err, size_t cap, int argc, const char *a0, const char *a1,
    const char *a2, const char *a3)
{
    json_t *j = rcall(err, cap, argc, a0, a1, a2, a3);

    if (j == NULL) {
        return MF_ERR;
    }
    json_decref(j);
    return MF_OK;
}

static void
rkey_key(char *out, size_t cap, const char *id)
{
    snprintf(out, cap, "mf:ka:key:{%s}", id);
}

static void
rkey_consumer(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "mf:ka:consumer:{%s}", name);
}

/* Applies a key hash from Redis (HGETALL: field, value, ...) to k. */
static int
key_from_hash(key_t_ *k, const json_t *h)
{
    size_t i;
    int have_mac = 0;

    for (i = 0; i + 1 < json_array_size(h); i += 2) {
        const char *f = json_string_value(json_array_get(h, i));
        const char *v = json_string_value(json_array_get(h, i + 1));

        if (f == NULL || v == NULL) {
            continue;
        }
        if (strcmp(f, "consumer") == 0) {
            free(k->consumer);
            k->consumer = strdup(v);
        } else if (strcmp(f, "mac") == 0) {
            have_mac = gov_unhex(v, strlen(v), k->mac, 32) == MF_OK;
        } else if (strcmp(f, "created") == 0) {
            k->created = atoll(v);
        } else if (strcmp(f, "expires") == 0) {
            k->expires = atoll(v);
        } else if (strcmp(f, "revoked") == 0) {
            k->revoked = atoi(v);
        }
    }
    return have_mac && k->consumer != NULL ? MF_OK : MF_ERR;
}

/* Applies what Redis holds for consumer name (a JSON text or NULL) to the
 * map: a config consumer takes the override's disabled; a runtime one is
 * replaced, or marked gone. Under the write lock. */
static void
consumer_apply(ka_t *ka, const char *name, const char *text, int64_t now)
{
    consumer_t *c = gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)});
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;

    if (c != NULL && c->from_config) {
        c->disabled = json_is_true(json_object_get(j, "disabled"));
        c->fetched_ms = now;
    } else if (j != NULL && !json_is_true(json_object_get(j, "override")) &&
               json_is_string(json_object_get(j, "name"))) {
        consumer_t *n = consumer_from_json(j, 0);

        if (n != NULL) {
            n->fetched_ms = now;
            consumer_free(
                gov_map_put(ka->consumers, (mf_str_t){name, strlen(name)}, n));
        }
    } else {
        if (c == NULL) {
            c = calloc(1, sizeof(*c));
            if (c == NULL) {
                json_decref(j);
                return;
            }
            c->name = strdup(name);
            gov_map_put(ka->consumers, (mf_str_t){name, strlen(name)}, c);
        }
        c->gone = 1;
        c->fetched_ms = now;
    }
    json_decref(j);
}

/* Applies a key hash (NULL: Redis has none) to the map. Write lock. */
static void
key_apply(ka_t *ka, const char *id, const json_t *h, int64_t now)
{
    key_t_ *k = gov_map_get(ka->keys, (mf_str_t){id, strlen(id)});

    if (k == NULL) {
        k = calloc(1, sizeof(*k));
        if (k == NULL) {
            return;
        }
        snprintf(k->id, sizeof(k->id), "%s", id);
        gov_map_put(ka->keys, (mf_str_t){k->id, strlen(k->id)}, k);
    }
    k->missing =
        h == NULL || json_array_size(h) == 0 || key_from_hash(k, h) != MF_OK;
    k->fetched_ms = now;
}

static void
config_name(const char *name, void *v, void *arg)
{
    if (((consumer_t *)v)->from_config) {
        json_array_append_new(arg, json_string(name));
    }
}

/* Everything runtime from Redis into the maps (admin commands and init:
 * they then see what every node made). MF_ERR with err. */
static int
redis_sync_all(ka_t *ka, char *err, size_t cap)
{
    json_t *names = rcall(err, cap, 2, "SMEMBERS", "mf:ka:consumers");
    json_t *ids = names ? rcall(err, cap, 2, "SMEMBERS", "mf:ka:keys") : NULL;
    json_t *cfg = json_array(), *v, *got = json_array(), *hashes = json_array();
    const char *name;
    char rk[300];
    int64_t now = mono_ms();
    size_t i;
    int rc = MF_ERR;

    if (ids == NULL) {
        goto done;
    }
    /* config consumers' overrides too */
    pthread_rwlock_rdlock(&ka->lock);
    gov_map_each(ka->consumers, config_name, cfg);
    pthread_rwlock_unlock(&ka->lock);
    json_array_extend(names, cfg);
    json_array_foreach(names, i, v)
    {
        json_t *t;

        rkey_consumer(rk, sizeof(rk), json_string_value(v));
        t = rcall(err, cap, 2, "GET", rk);
        if (t == NULL) {
            goto done;
        }
        json_array_append_new(got, t);
    }
    json_array_foreach(ids, i, v)
    {
        json_t *h;

        rkey_key(rk, sizeof(rk), json_string_value(v));
        h = rcall(err, cap, 2, "HGETALL", rk);
        if (h == NULL) {
            goto done;
        }
        json_array_append_new(hashes, h);
    }
    pthread_rwlock_wrlock(&ka->lock);
    json_array_foreach(names, i, v)
    {
        name = json_string_value(v);
        consumer_apply(ka, name, json_string_value(json_array_get(got, i)),
                       now);
    }
    json_array_foreach(ids, i, v)
    {
        key_apply(ka, json_string_value(v), json_array_get(hashes, i), now);
    }
    pthread_rwlock_unlock(&ka->lock);
    rc = MF_OK;
done:
    json_decref(names);
    json_decref(ids);
    json_decref(cfg);
    json_decref(got);
    json_decref(hashes);
    return rc;
}

static int
load_runtime(ka_t *ka)
{
    sqlite3_stmt *st = NULL;

    if (ka->db == NULL) {
        return MF_OK;
    }
    if (sqlite3_prepare_v2(ka->db, "SELECT json FROM consumers", -1, &st,
                           NULL) != SQLITE_OK) {
        return MF_ERR;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *j =
            json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
        const char *name = json_string_value(json_object_get(j, "name"));
        consumer_t *c;

        if (name != NULL &&
            gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)}) ==
                NULL &&
            (c = consumer_from_json(j, 0)) != NULL) {
            gov_map_put(ka->consumers, (mf_str_t){c->name, strlen(c->name)}, c);
        } else if (name != NULL) {
            api->log(MF_LOG_WARN,
                     "key-auth: consumer '%s' in %s is also in the config; "
                     "the config's is used",
                     name, ka->db_path);
        }
        json_decref(j);
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(ka->db, "SELECT name, disabled FROM overrides", -1,
                           &st, NULL) != SQLITE_OK) {
        return MF_ERR;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        consumer_t *c =
            name ? gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)})
                 : NULL;

        if (c != NULL) {
            c->disabled = sqlite3_column_int(st, 1);
        }
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(ka->db,
                           "SELECT id, consumer, mac, created, expires, "
                           "revoked FROM keys",
                           -1, &st, NULL) != SQLITE_OK) {
        return MF_ERR;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *cons = (const char *)sqlite3_column_text(st, 1);
        const char *mac = (const char *)sqlite3_column_text(st, 2);
        key_t_ *k = calloc(1, sizeof(*k));

        if (k == NULL || id == NULL || cons == NULL || mac == NULL ||
            strlen(id) != GOV_KEY_ID_LEN ||
            gov_unhex(mac, strlen(mac), k->mac, 32) != MF_OK) {
            free(k);
            continue;
        }
        memcpy(k->id, id, GOV_KEY_ID_LEN + 1);
        k->consumer = strdup(cons);
        k->created = sqlite3_column_int64(st, 3);
        k->expires = sqlite3_column_int64(st, 4);
        k->revoked = sqlite3_column_int(st, 5);
        key_free(gov_map_put(ka->keys, (mf_str_t){k->id, GOV_KEY_ID_LEN}, k));
    }
    sqlite3_finalize(st);
    return MF_OK;
}

/* The config's consumers and their keys. */
static int
load_config(ka_t *ka)
{
    const json_t *cons = api->config_section("consumers");
    const json_t *groups = api->config_section("groups");
    json_t *c, *g, *kv;
    size_t i, j;

    json_array_foreach(groups, i, g)
    {
        json_object_set(ka->groups,
                        json_string_value(json_object_get(g, "name")), g);
    }
    json_array_foreach(cons, i, c)
    {
        consumer_t *co = consumer_from_json(c, 1);

        if (co == NULL) {
            return MF_ERR;
        }
        gov_map_put(ka->consumers, (mf_str_t){co->name, strlen(co->name)}, co);
        json_array_foreach(json_object_get(c, "keys"), j, kv)
        {
            const char *k = json_string_value(kv);
            key_t_ *key = calloc(1, sizeof(*key));
            char hex[65];

            if (key == NULL) {
                return MF_ERR;
            }
            if (strncmp(k, "sha256:", 7) == 0) {
                if (gov_unhex(k + 7, strlen(k + 7), key->mac, 32) != MF_OK) {
                    api->log(MF_LOG_ERROR,
                             "key-auth: consumers '%s': key %zu: sha256: "
                             "needs 64 hex digits (sha256sum of the key)",
                             co->name, j);
                    free(key);
                    return MF_ERR;
                }
            } else {
                gov_sha256(k, strlen(k), key->mac);
            }
            gov_hex(key->mac, 32, hex);
            /* the id shown in logs and the ledger: not the key */
            snprintf(key->id, sizeof(key->id), "c%.11s", hex);
            key->consumer = strdup(co->name);
            key->from_config = 1;
            key_free(gov_map_put(ka->cfg_keys, (mf_str_t){hex, 64}, key));
        }
    }
    return MF_OK;
}

/* Redis store: the HMAC key every node shares: the config's `secret`,
 * else one made once and kept in Redis. */
static int
redis_secret(ka_t *ka, json_t *conf)
{
    char hex[65], e[256];
    json_t *j;

    if (json_is_string(json_object_get(conf, "secret"))) {
        return load_secret(ka, conf);
    }
    if (gov_random_hex(hex, 32) != MF_OK) {
        return MF_ERR;
    }
    j = rcall(e, sizeof(e), 4, "SET", "mf:ka:secret", hex, "NX");
    json_decref(j);
    j = j ? rcall(e, sizeof(e), 2, "GET", "mf:ka:secret") : NULL;
    if (!json_is_string(j) ||
        gov_unhex(json_string_value(j), json_string_length(j), ka->secret,
                  32) != MF_OK) {
        json_decref(j);
        api->log(MF_LOG_ERROR,
                 "key-auth: the Redis store needs the secret every node "
                 "shares, kept in Redis: %s; set `secret:` in the stage's "
                 "config to start without Redis",
                 j ? "mf:ka:secret is not 64 hex digits" : e);
        return MF_ERR;
    }
    json_decref(j);
    return MF_OK;
}

/* Writes of the admin commands, to the store in use */

static int
redis_failed_log(const char *e)
{
    api->log(MF_LOG_ERROR, "key-auth: the Redis store: %s", e);
    return MF_ERR;
}

/* A key, new (is_new) or changed (expires, revoked). */
static int
store_key(ka_t *ka, const key_t_ *k, int is_new)
{
    char hex[65], rk[300], cr[24], ex[24], rv[4], e[256], ck[300];
    json_t *j;

    gov_hex(k->mac, 32, hex);
    if (!ka->redis) {
        return is_new ? db_run(ka,
                               "INSERT INTO keys(id, consumer, mac, created, "
                               "expires, revoked) VALUES(?, ?, ?, ?, ?, ?)",
                               "TTTIII", k->id, k->consumer, hex, k->created,
                               k->expires, (int64_t)k->revoked)
                      : db_run(ka,
                               "UPDATE keys SET expires=?, revoked=? WHERE "
                               "id=?",
                               "IIT", k->expires, (int64_t)k->revoked, k->id);
    }
    rkey_key(rk, sizeof(rk), k->id);
    snprintf(cr, sizeof(cr), "%lld", (long long)k->created);
    snprintf(ex, sizeof(ex), "%lld", (long long)k->expires);
    snprintf(rv, sizeof(rv), "%d", k->revoked);
    j = rcall(e, sizeof(e), 12, "HSET", rk, "consumer", k->consumer, "mac", hex,
              "created", cr, "expires", ex, "revoked", rv);
    if (j == NULL) {
        return redis_failed_log(e);
    }
    json_decref(j);
    snprintf(ck, sizeof(ck), "mf:ka:ckeys:{%s}", k->consumer);
    if (is_new &&
        (rdo(e, sizeof(e), 3, "SADD", "mf:ka:keys", k->id, NULL) != MF_OK ||
         rdo(e, sizeof(e), 3, "SADD", ck, k->id, NULL) != MF_OK)) {
        return redis_failed_log(e);
    }
    return MF_OK;
}

/* A new runtime consumer: MF_OK, 1 when the name is taken, MF_ERR. */
static int
store_consumer_new(ka_t *ka, const char *name, const char *text)
{
    char rk[300], e[256];
    json_t *j;

    if (!ka->redis) {
        return db_run(ka, "INSERT INTO consumers(name, json) VALUES(?, ?)",
                      "TT", name, text);
    }
    rkey_consumer(rk, sizeof(rk), name);
    j = rcall(e, sizeof(e), 4, "SET", rk, text, "NX");
    if (j == NULL) {
        return redis_failed_log(e);
    }
    if (json_is_null(j)) {
        return 1; /* another node made it */
    }
    json_decref(j);
    if (rdo(e, sizeof(e), 3, "SADD", "mf:ka:consumers", name, NULL) != MF_OK) {
        return redis_failed_log(e);
    }
    return MF_OK;
}

/* A consumer's disabled flag (c->disabled, set by the caller). */
static int
store_disabled(ka_t *ka, const consumer_t *c)
{
    char rk[300], e[256], *text;
    json_t *j;
    int rc;

    if (!ka->redis) {
        return db_run(ka,
                      "INSERT OR REPLACE INTO overrides(name, disabled) "
                      "VALUES(?, ?)",
                      "TI", c->name, (int64_t)c->disabled);
    }
    j = c->from_config ? json_pack("{s:s,s:b,s:b}", "name", c->name, "override",
                                   1, "disabled", c->disabled)
                       : consumer_json(c);
    text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    rkey_consumer(rk, sizeof(rk), c->name);
    rc = text ? rdo(e, sizeof(e), 3, "SET", rk, text, NULL) : MF_ERR;
    free(text);
    return rc == MF_OK ? MF_OK : redis_failed_log(e);
}

/* A runtime consumer and its keys, gone. */
static int
store_delete(ka_t *ka, const char *name)
{
    char rk[300], ck[300], e[256];
    json_t *ids, *v;
    size_t i;

    if (!ka->redis) {
        return db_run(ka, "DELETE FROM keys WHERE consumer=?", "T", name) ==
                           MF_OK &&
                       db_run(ka, "DELETE FROM consumers WHERE name=?", "T",
                              name) == MF_OK &&
                       db_run(ka, "DELETE FROM overrides WHERE name=?", "T",
                              name) == MF_OK
                   ? MF_OK
                   : MF_ERR;
    }
    snprintf(ck, sizeof(ck), "mf:ka:ckeys:{%s}", name);
    ids = rcall(e, sizeof(e), 2, "SMEMBERS", ck);
    if (ids == NULL) {
        return redis_failed_log(e);
    }
    json_array_foreach(ids, i, v)
    {
        rkey_key(rk, sizeof(rk), json_string_value(v));
        if (rdo(e, sizeof(e), 2, "DEL", rk, NULL, NULL) != MF_OK ||
            rdo(e, sizeof(e), 3, "SREM", "mf:ka:keys", json_string_value(v),
                NULL) != MF_OK) {
            json_decref(ids);
            return redis_failed_log(e);
        }
    }
    json_decref(ids);
    rkey_consumer(rk, sizeof(rk), name);
    if (rdo(e, sizeof(e), 2, "DEL", rk, NULL, NULL) != MF_OK ||
        rdo(e, sizeof(e), 2, "DEL", ck, NULL, NULL) != MF_OK ||
        rdo(e, sizeof(e), 3, "SREM", "mf:ka:consumers", name, NULL) != MF_OK) {
        return redis_failed_log(e);
    }
    return MF_OK;
}

/* Redis store: an admin command first reads what every node made. */
static int
sync_first(ka_t *ka, json_t **out)
{
    char e[256];

    if (!ka->redis || redis_sync_all(ka, e, sizeof(e)) == MF_OK) {
        return MF_OK;
    }
    *out = json_pack("{s:{s:s,s:s}}", "error", "message",
                     "the key store (Redis) is unavailable; nothing was "
                     "changed",
                     "detail", e);
    return MF_ERR;
}

/* The request */

/* The key record of cred, or NULL; under the read lock. */
static key_t_ *
find_key(ka_t *ka, mf_str_t cred)
{
    mf_str_t id, secret;
    unsigned char mac[32];
    char hex[65];
    key_t_ *k;

    if (gov_key_parse(cred, &id, &secret) == MF_OK &&
        (k = gov_map_get(ka->keys, id)) != NULL) {
        if (k->missing) {
            return NULL;
        }
        gov_hmac_md(ka->sha256, ka->secret, 32, cred.data, cred.len, mac);
        return gov_ct_eq(mac, k->mac, 32) ? k : NULL;
    }
    gov_sha256_md(ka->sha256, cred.data, cred.len, mac);
    gov_hex(mac, 32, hex);
    k = gov_map_get(ka->cfg_keys, (mf_str_t){hex, 64});
    return k != NULL && gov_ct_eq(mac, k->mac, 32) ? k : NULL;
}

static int
model_allowed(ka_t *ka, const consumer_t *c, mf_str_t model)
{
    json_t *g;

    if (!gov_models_allowed(c->models, model)) {
        return 0;
    }
    g = c->group ? json_object_get(ka->groups, c->group) : NULL;
    return g == NULL || gov_models_allowed(json_object_get(g, "models"), model);
}

static mf_str_t
header(mf_req_t *r, const char *name)
{
    mf_str_t v = MF_STR_NULL;

    if (api->get_header(r, MF_REQUEST_HEADERS, (mf_str_t){name, strlen(name)},
                        &v) != MF_OK) {
        v = MF_STR_NULL;
    }
    return v;
}

/* ?key=: later stages and logs see the query without it. */
static void
strip_query_key(mf_req_t *r)
{
    mf_req_info_t info = {.size = sizeof(info)};
    char *q;
    size_t n;

    api->get_info(r, &info);
    if (info.query.len == 0 ||
        memmem(info.query.data, info.query.len, "key", 3) == NULL) {
        return;
    }
    q = api->palloc(r, info.query.len + 1);
    if (q == NULL) {
        api->set_query(r, MF_STR_NULL); /* rather nothing than the key */
        return;
    }
    n = gov_query_without_key(info.query, q, info.query.len + 1);
    api->set_query(r, (mf_str_t){q, n});
}

/* Decides on cred with what the maps hold. store_down: Redis could not
 * be asked; what was never read from it is then unknown (503). */
static mf_action_t
decide(ka_t *ka, mf_req_t *r, mf_str_t cred, int store_down)
{
    mf_str_t model = api->get_model(r), id, secret;
    mf_consumer_t rec = {.size = sizeof(rec)};
    key_t_ *k;
    consumer_t *c;
    const char *code = NULL, *msg = NULL;
    int status = 401;
    char text[256];

    pthread_rwlock_rdlock(&ka->lock);
    k = find_key(ka, cred);
    c = k ? gov_map_get(ka->consumers,
                        (mf_str_t){k->consumer, strlen(k->consumer)})
          : NULL;
    if (store_down &&
        ((k == NULL && gov_key_parse(cred, &id, &secret) == MF_OK &&
          gov_map_get(ka->keys, id) == NULL) ||
         (k != NULL && c == NULL))) {
        status = 503;
        code = "key_store_unavailable";
        msg = "the key store is unavailable; retry in a moment";
    } else if (k == NULL || c == NULL || c->gone) {
        code = "invalid_api_key";
        msg = "the API key is not valid";
    } else if (k->revoked) {
        code = "revoked_api_key";
        msg = "the API key was revoked; ask for a new one";
    } else if (k->expires != 0 && (int64_t)time(NULL) >= k->expires) {
        code = "expired_api_key";
        msg = "the API key has expired; use the key that replaced it";
    } else if (c->disabled) {
        code = "consumer_disabled";
        msg = "the consumer of this API key is disabled";
    } else if (model.len > 0 && !model_allowed(ka, c, model)) {
        status = 403;
        code = "model_not_allowed";
        snprintf(text, sizeof(text),
                 "this API key may not use the model '%.*s'",
                 (int)(model.len > 100 ? 100 : model.len), model.data);
        msg = text;
    } else {
        rec.name = (mf_str_t){c->name, strlen(c->name)};
        rec.group =
            c->group ? (mf_str_t){c->group, strlen(c->group)} : MF_STR_NULL;
        rec.key_id = (mf_str_t){k->id, strlen(k->id)};
        rec.attrs = c->attrs;
        rec.nattrs = c->nattrs;
        api->set_consumer_record(r, &rec); /* copies */
    }
    pthread_rwlock_unlock(&ka->lock);
    /* the client's credential goes no further: not upstream (providers
     * set their own), not to later stages or logs */
    api->set_header(r, MF_REQUEST_HEADERS, MF_STR("authorization"),
                    MF_STR_NULL);
    api->set_header(r, MF_REQUEST_HEADERS, MF_STR("x-api-key"), MF_STR_NULL);
    api->set_header(r, MF_REQUEST_HEADERS, MF_STR("x-goog-api-key"),
                    MF_STR_NULL);
    strip_query_key(r);
    if (status == 503) {
        api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("retry-after"),
                        MF_STR("1"));
        api->respond_error_code(r, 503, "server_error", code, msg);
        return MF_RESPOND;
    }
    if (code != NULL) {
        deny(r, status, code, msg);
        return MF_RESPOND;
    }
    return MF_CONTINUE;
}

/* Redis store: a request's lookups. */
typedef struct {
    ka_t *ka;
    mf_str_t cred; /* request memory */
    int fetches;
    int store_down;
    int kind;       /* 1 a key, 2 a consumer */
    char what[160]; /* its id or name */
    int billing;    /* a billing endpoint: BILLING_* */
} actx_t;

static mf_action_t billing_identified(ka_t *ka, mf_req_t *r, actx_t *a);

/* What must be read from Redis before deciding: 0 nothing, 1 the key
 * (a->what its id), 2 its consumer (a->what the name). */
static int
need_fetch(ka_t *ka, actx_t *a)
{
    mf_str_t id, secret;
    int64_t now = mono_ms();
    key_t_ *k;
    consumer_t *c;
    int need = 0;

    pthread_rwlock_rdlock(&ka->lock);
    if (gov_key_parse(a->cred, &id, &secret) == MF_OK) {
        k = gov_map_get(ka->keys, id);
        if (k == NULL || now - k->fetched_ms > REFRESH_MS) {
            snprintf(a->what, sizeof(a->what), "%.*s", (int)id.len, id.data);
            need = 1;
            goto out;
        }
    }
    k = find_key(ka, a->cred);
    if (k == NULL) {
        goto out;
    }
    c = gov_map_get(ka->consumers,
                    (mf_str_t){k->consumer, strlen(k->consumer)});
    if (c == NULL || now - c->fetched_ms > REFRESH_MS) {
        snprintf(a->what, sizeof(a->what), "%s", k->consumer);
        need = 2;
    }
out:
    pthread_rwlock_unlock(&ka->lock);
    return need;
}

static mf_action_t step(ka_t *ka, mf_req_t *r, actx_t *a);

static void
fetch_cb(mf_req_t *r, void *arg, const mf_redis_reply_t *rep, const char *err)
{
    actx_t *a = arg;
    ka_t *ka = a->ka;
    mf_action_t act;

    if (err != NULL || rep == NULL || rep->type == MF_REDIS_ERROR) {
        static int64_t last;
        int64_t now = mono_ms();

        if (now - last > 5000) { /* one line every 5 s at most */
            last = now;
            api->log(MF_LOG_WARN,
                     "key-auth: the Redis store: %s; deciding on what this "
                     "node last read",
                     err ? err : "an error reply");
        }
        a->store_down = 1;
    } else if (a->kind == 1) {
        json_t *h = json_array();
        size_t i;

        for (i = 0; rep->type == MF_REDIS_ARRAY && i < rep->nelements; i++) {
            json_array_append_new(
                h, json_stringn_nocheck(rep->elements[i].str.data,
                                        rep->elements[i].str.len));
        }
        pthread_rwlock_wrlock(&ka->lock);
        key_apply(ka, a->what, h, mono_ms());
        pthread_rwlock_unlock(&ka->lock);
        json_decref(h);
    } else {
        char *text = rep->type == MF_REDIS_STRING
                         ? strndup(rep->str.data, rep->str.len)
                         : NULL;

        pthread_rwlock_wrlock(&ka->lock);
        consumer_apply(ka, a->what, text, mono_ms());
        pthread_rwlock_unlock(&ka->lock);
        free(text);
    }
    act = step(ka, r, a);
    if (act != MF_PAUSE) {
        api->resume(r, act);
    }
}

static mf_action_t
step(ka_t *ka, mf_req_t *r, actx_t *a)
{
    char rk[300];
    mf_str_t argv[2];

    if (a->fetches < 3 && !a->store_down &&
        (a->kind = need_fetch(ka, a)) != 0) {
        a->fetches++;
        if (a->kind == 1) {
            rkey_key(rk, sizeof(rk), a->what);
            argv[0] = MF_STR("HGETALL");
        } else {
            rkey_consumer(rk, sizeof(rk), a->what);
            argv[0] = MF_STR("GET");
        }
        argv[1] = (mf_str_t){rk, strlen(rk)};
        if (api->redis_command(r, 2, argv, fetch_cb, a) == MF_OK) {
            return MF_PAUSE;
        }
        a->store_down = 1;
    }
    if (a->billing) {
        return billing_identified(ka, r, a);
    }
    return decide(ka, r, a->cred, a->store_down);
}

#define BILLING_SUBSCRIPTION 1
#define BILLING_USAGE 2

/* Self-service billing (GET /v1/dashboard/billing/subscription and
 * /usage, OneAPI's shapes, which NextChat and LobeChat read to show a
 * balance), answered for the calling key. The spend comes from the
 * limits stage: its Redis budget keys (Redis store) or what it publishes
 * in the shared dict (embedded store). */

typedef struct {
    int found;
    int64_t key_expires;
    char name[160];
    int has_usd;
    int64_t budget; /* micro-USD */
    gov_period_t period;
    int tz;
} payer_t;

/* The consumer of a's key, or an answer (401) when there is none. */
static int
payer_of(ka_t *ka, mf_req_t *r, actx_t *a, payer_t *p)
{
    key_t_ *k;
    consumer_t *c;
    const char *code = NULL, *msg = NULL;
    json_t *usd;

    memset(p, 0, sizeof(*p));
    pthread_rwlock_rdlock(&ka->lock);
    k = find_key(ka, a->cred);
    c = k ? gov_map_get(ka->consumers,
                        (mf_str_t){k->consumer, strlen(k->consumer)})
          : NULL;
    if (k == NULL || c == NULL || c->gone) {
        code = a->store_down ? "key_store_unavailable" : "invalid_api_key";
        msg = a->store_down ? "the key store is unavailable; retry in a moment"
                            : "the API key is not valid";
    } else if (k->revoked) {
        code = "revoked_api_key";
        msg = "the API key was revoked; ask for a new one";
    } else if (k->expires != 0 && (int64_t)time(NULL) >= k->expires) {
        code = "expired_api_key";
        msg = "the API key has expired; use the key that replaced it";
    } else if (c->disabled) {
        code = "consumer_disabled";
        msg = "the consumer of this API key is disabled";
    } else {
        p->found = 1;
        p->key_expires = k->expires;
        snprintf(p->name, sizeof(p->name), "%s", c->name);
        usd = json_object_get(c->budget, "micro_usd");
        if (json_is_integer(usd)) {
            p->has_usd = 1;
            p->budget = json_integer_value(usd);
            if (gov_period_parse(
                    json_string_value(json_object_get(c->budget, "period")),
                    &p->period) != MF_OK) {
                p->period = GOV_MONTH;
            }
            if (gov_tz_parse(
                    json_string_value(json_object_get(c->budget, "tz")),
                    &p->tz) != MF_OK) {
                p->tz = 0;
            }
        }
    }
    pthread_rwlock_unlock(&ka->lock);
    if (!p->found) {
        if (strcmp(code, "key_store_unavailable") == 0) {
            api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("retry-after"),
                            MF_STR("1"));
            api->respond_error_code(r, 503, "server_error", code, msg);
        } else {
            deny(r, 401, code, msg);
        }
        return MF_ERR;
    }
    return MF_OK;
}

static mf_action_t
billing_answer(mf_req_t *r, int which, const payer_t *p, int64_t used,
               int64_t topup)
{
    int64_t start = 0, end = 0;
    double hard;
    json_t *j;
    char *text;

    if (p->has_usd) {
        gov_period_bounds(p->period, p->tz, (int64_t)time(NULL), &start, &end);
        hard = (double)(p->budget + topup) / 1e6;
    } else {
        hard = 100000000; /* no budget: OneAPI's "unlimited" */
    }
    if (which == BILLING_SUBSCRIPTION) {
        j = json_pack("{s:s,s:b,s:f,s:f,s:f,s:I}", "object",
                      "billing_subscription", "has_payment_method", 1,
                      "soft_limit_usd", hard, "hard_limit_usd", hard,
                      "system_hard_limit_usd", hard, "access_until",
                      (json_int_t)p->key_expires);
    } else {
        /* cents, as OpenAI's old usage endpoint: what the period spent */
        j = json_pack("{s:s,s:f}", "object", "list", "total_usage",
                      (double)used / 1e4);
    }
    text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    api->respond(r, 200, NULL, (mf_str_t){text, text ? strlen(text) : 0});
    free(text);
    return MF_RESPOND;
}

/* Embedded store: the state limits published; a period that ended reads
 * as nothing spent. */
static mf_action_t
billing_local(mf_req_t *r, int which, const payer_t *p)
{
    char k[220], v[96];
    int n;
    long long ps = 0, used = 0, topup = 0;
    int64_t start, end;

    if (p->has_usd) {
        n = snprintf(k, sizeof(k), "mf.billing.budget.%s", p->name);
        gov_period_bounds(p->period, p->tz, (int64_t)time(NULL), &start, &end);
        if (api->shared_get((mf_str_t){k, (size_t)n}, v, sizeof(v) - 1) > 0) {
            v[sizeof(v) - 1] = '\0';
            if (sscanf(v, "%lld %lld %lld", &ps, &used, &topup) != 3 ||
                ps != start) {
                used = topup = 0;
            }
        }
        return billing_answer(r, which, p, used, topup);
    }
    gov_period_bounds(GOV_MONTH, 0, (int64_t)time(NULL), &start, &end);
    n = snprintf(k, sizeof(k), "mf.billing.cost.%lld.%s", (long long)start,
                 p->name);
    memset(v, 0, sizeof(v));
    if ((n = api->shared_get((mf_str_t){k, (size_t)n}, v, sizeof(v) - 1)) > 0) {
        v[n] = '\0';
        used = atoll(v);
    }
    return billing_answer(r, which, p, used, 0);
}

/* Redis store: the budget limits keeps in Redis for this period. */
typedef struct {
    int which;
    payer_t p;
} bq_t;

static void
billing_redis_cb(mf_req_t *r, void *arg, const mf_redis_reply_t *rep,
                 const char *err)
{
    bq_t *q = arg;
    int64_t v[2] = {0, 0};
    size_t i;

    if (err != NULL || rep == NULL || rep->type != MF_REDIS_ARRAY) {
        api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("retry-after"),
                        MF_STR("1"));
        api->respond_error_code(r, 503, "server_error", "store_unavailable",
                                "the budget store is unavailable; retry in "
                                "a moment");
        api->resume(r, MF_RESPOND);
        return;
    }
    for (i = 0; i < 2 && i < rep->nelements; i++) {
        if (rep->elements[i].type == MF_REDIS_STRING &&
            rep->elements[i].str.len < 24) {
            char t[24];

            memcpy(t, rep->elements[i].str.data, rep->elements[i].str.len);
            t[rep->elements[i].str.len] = '\0';
            v[i] = atoll(t);
        }
    }
    api->resume(r, billing_answer(r, q->which, &q->p, v[0], v[1]));
}

static mf_action_t
billing_identified(ka_t *ka, mf_req_t *r, actx_t *a)
{
    payer_t p;
    bq_t *q;
    char key[400];
    int64_t start, end;
    mf_str_t argv[4];

    strip_query_key(r);
    if (payer_of(ka, r, a, &p) != MF_OK) {
        return MF_RESPOND;
    }
    if (!ka->redis || (!p.has_usd && a->billing == BILLING_SUBSCRIPTION)) {
        return billing_local(r, a->billing, &p);
    }
    q = api->palloc(r, sizeof(*q));
    if (q == NULL) {
        return MF_FAIL;
    }
    q->which = a->billing;
    q->p = p;
    argv[0] = MF_STR("HMGET");
    argv[1] = (mf_str_t){key, 0};
    if (p.has_usd) {
        gov_period_bounds(p.period, p.tz, (int64_t)time(NULL), &start, &end);
        snprintf(key, sizeof(key), "mf:lim:{c:%s}:consumer:%s:b:usd:%lld",
                 p.name, p.name, (long long)start);
        argv[2] = MF_STR("used");
        argv[3] = MF_STR("topup");
    } else {
        /* the month's cost in the shared ledger limits keeps */
        gov_period_bounds(GOV_MONTH, 0, (int64_t)time(NULL), &start, &end);
        snprintf(key, sizeof(key), "mf:use:{c:%s}:month:%lld", p.name,
                 (long long)start);
        argv[2] = MF_STR("cost");
        argv[3] = MF_STR("-"); /* no such field: nil, no top-up */
    }
    argv[1].len = strlen(key);
    if (api->redis_command(r, 4, argv, billing_redis_cb, q) != MF_OK) {
        return MF_FAIL;
    }
    return MF_PAUSE;
}

static mf_action_t
billing_serve(mf_req_t *r, void *state, void *arg)
{
    ka_t *ka = state;
    mf_req_info_t info = {.size = sizeof(info)};
    mf_str_t cred;
    actx_t *a;
    char *copy;

    api->get_info(r, &info);
    if (gov_credential(header(r, "authorization"), header(r, "x-api-key"),
                       header(r, "x-goog-api-key"), info.query,
                       &cred) != MF_OK) {
        deny(r, 401, "missing_api_key",
             "no API key: send it as Authorization: Bearer KEY");
        return MF_RESPOND;
    }
    a = api->palloc(r, sizeof(*a));
    copy = api->palloc(r, cred.len + 1);
    if (a == NULL || copy == NULL) {
        return MF_FAIL;
    }
    memset(a, 0, sizeof(*a));
    memcpy(copy, cred.data, cred.len);
    copy[cred.len] = '\0';
    a->ka = ka;
    a->cred = (mf_str_t){copy, cred.len};
    a->billing = (int)(intptr_t)arg;
    if (!ka->redis) {
        return billing_identified(ka, r, a);
    }
    return step(ka, r, a);
}

static mf_action_t
ka_on_request(mf_req_t *r, void *state, void **ctx)
{
    ka_t *ka = state;
    mf_req_info_t info = {.size = sizeof(info)};
    mf_str_t cred;
    actx_t *a;
    char *copy;

    (void)ctx;
    api->get_info(r, &info);
    if (gov_credential(header(r, "authorization"), header(r, "x-api-key"),
                       header(r, "x-goog-api-key"), info.query,
                       &cred) != MF_OK) {
        deny(r, 401, "missing_api_key",
             "no API key: send it as Authorization: Bearer KEY (or "
             "x-api-key)");
        return MF_RESPOND;
    }
    if (!ka->redis) {
        return decide(ka, r, cred, 0);
    }
    a = api->palloc(r, sizeof(*a));
    copy = api->palloc(r, cred.len + 1);
    if (a == NULL || copy == NULL) {
        return MF_FAIL;
    }
    memset(a, 0, sizeof(*a));
    memcpy(copy, cred.data, cred.len);
    copy[cred.len] = '\0';
    a->ka = ka;
    a->cred = (mf_str_t){copy, cred.len};
    return step(ka, r, a);
}

/* Admin commands (main thread) */

static const char *
arg_pos(const json_t *args, size_t i)
{
    return json_string_value(json_array_get(json_object_get(args, "args"), i));
}

static const char *
arg_opt(const json_t *args, const char *name)
{
    return json_string_value(json_object_get(args, name));
}

static json_t *err_json(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static json_t *
err_json(const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:{s:s}}", "error", "message", msg);
}

/* A new generated key for consumer; the key's text into out
 * (GOV_KEY_LEN + 1). Under the write lock. */
static key_t_ *
new_key(ka_t *ka, const char *consumer, char *out)
{
    char id[GOV_KEY_ID_LEN + 1], secret[GOV_KEY_SECRET_LEN + 1], hex[65];
    key_t_ *k;

    do {
        if (gov_random_hex(id, GOV_KEY_ID_LEN / 2) != MF_OK ||
            gov_random_hex(secret, GOV_KEY_SECRET_LEN / 2) != MF_OK) {
            return NULL;
        }
    } while (gov_map_get(ka->keys, (mf_str_t){id, GOV_KEY_ID_LEN}) != NULL);
    snprintf(out, GOV_KEY_LEN + 1, "mf-%s-%s", id, secret);
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    memcpy(k->id, id, sizeof(k->id));
    k->consumer = strdup(consumer);
    k->created = (int64_t)time(NULL);
    gov_hmac(ka->secret, 32, out, GOV_KEY_LEN, k->mac);
    gov_hex(k->mac, 32, hex);
    k->fetched_ms = mono_ms();
    if (store_key(ka, k, 1) != MF_OK) {
        key_free(k);
        return NULL;
    }
    key_free(gov_map_put(ka->keys, (mf_str_t){k->id, GOV_KEY_ID_LEN}, k));
    return k;
}

/* --models 'a*,b' -> ["a*", "b"] */
static json_t *
split_list(const char *s)
{
    json_t *a = json_array();

    while (s != NULL && *s != '\0') {
        size_t n = strcspn(s, ",");

        if (n > 0) {
            json_array_append_new(a, json_stringn(s, n));
        }
        s += n + (s[n] == ',');
    }
    return a;
}

static int
cmd_consumers_add(void *arg, const json_t *args, json_t **out)
{
    static const char *const lim[] = {"rpm", "rph", "rpd",         "tpm",
                                      "tph", "tpd", "concurrency", NULL};
    ka_t *ka = arg;
    const char *name = arg_pos(args, 0), *s;
    json_t *j, *limits = json_object();
    char key[GOV_KEY_LEN + 1], *text;
    consumer_t *c;
    key_t_ *k;
    size_t i;
    int status = 200, rc;

    if (name == NULL || name[0] == '\0' || strlen(name) > 128 ||
        strpbrk(name, " \t\r\n{}") != NULL) {
        json_decref(limits);
        *out = err_json("consumers add NAME [--group G] [--models 'a*,b'] "
                        "[--budget 20usd/month] [--rpm N] [--tpm N] "
                        "[--concurrency N]");
        return 400;
    }
    j = json_pack("{s:s,s:b}", "name", name, "disabled", 0);
    if ((s = arg_opt(args, "group")) != NULL) {
        json_object_set_new(j, "group", json_string(s));
    }
    if ((s = arg_opt(args, "models")) != NULL) {
        json_object_set_new(j, "models", split_list(s));
    }
    for (i = 0; lim[i] != NULL; i++) {
        char *end;
        long long v;

        if ((s = arg_opt(args, lim[i])) == NULL) {
            continue;
        }
        v = strtoll(s, &end, 10);
        if (*end != '\0' || v < 1) {
            *out = err_json("--%s '%s' must be a whole number of at least 1",
                            lim[i], s);
            status = 400;
            goto done;
        }
        json_object_set_new(limits, lim[i], json_integer(v));
    }
    if (json_object_size(limits) > 0) {
        json_object_set(j, "limits", limits);
    }
    if ((s = arg_opt(args, "budget")) != NULL) {
        int64_t amount;
        int usd, has = 0;
        gov_period_t p = GOV_MONTH;

        if (gov_amount_parse(s, &amount, &usd, &p, &has) != MF_OK) {
            *out = err_json("--budget '%s': write 20usd/month or "
                            "500000tokens/day (periods: day, week, month, "
                            "total)",
                            s);
            status = 400;
            goto done;
        }
        json_object_set_new(
            j, "budget",
            json_pack("{s:I,s:s,s:s}", usd ? "micro_usd" : "tokens",
                      (json_int_t)amount, "period", gov_period_name(p), "tz",
                      arg_opt(args, "tz") ? arg_opt(args, "tz") : "UTC"));
        if (arg_opt(args, "tz") != NULL) {
            int off;

            if (gov_tz_parse(arg_opt(args, "tz"), &off) != MF_OK) {
                *out = err_json("--tz '%s': write UTC or an offset (+02:00)",
                                arg_opt(args, "tz"));
                status = 400;
                goto done;
            }
        }
    }
    if (sync_first(ka, out) != MF_OK) {
        status = 503;
        goto done;
    }
    pthread_rwlock_wrlock(&ka->lock);
    c = gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)});
    if (c != NULL && !c->gone) {
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("consumer '%s' exists; pick another name", name);
        status = 409;
        goto done;
    }
    text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    rc = store_consumer_new(ka, name, text);
    free(text);
    if (rc != MF_OK || (c = consumer_from_json(j, 0)) == NULL) {
        pthread_rwlock_unlock(&ka->lock);
        *out =
            rc == 1
                ? err_json("consumer '%s' exists; pick another name", name)
                : err_json("could not store consumer '%s' (see the log)", name);
        status = rc == 1 ? 409 : ka->redis ? 503 : 500;
        goto done;
    }
    c->fetched_ms = mono_ms();
    consumer_free(
        gov_map_put(ka->consumers, (mf_str_t){c->name, strlen(c->name)}, c));
    k = new_key(ka, name, key);
    pthread_rwlock_unlock(&ka->lock);
    if (k == NULL) {
        *out = err_json("consumer '%s' added, but no key could be made; "
                        "run keys add %s",
                        name, name);
        status = 500;
        goto done;
    }
    api->log(MF_LOG_INFO, "key-auth: consumer '%s' added with key %s", name,
             k->id);
    text = NULL;
    *out = json_pack("{s:s,s:s,s:s,s:s}", "consumer", name, "key_id", k->id,
                     "key", key, "text", "");
    {
        char t[512];

        snprintf(t, sizeof(t),
                 "consumer %s added\nkey id %s\nkey    %s\n(the key is shown "
                 "this once: only its keyed hash is kept)\n",
                 name, k->id, key);
        json_object_set_new(*out, "text", json_string(t));
    }
done:
    json_decref(j);
    json_decref(limits);
    return status;
}

static int
cmd_keys_add(void *arg, const json_t *args, json_t **out)
{
    ka_t *ka = arg;
    const char *name = arg_pos(args, 0);
    char key[GOV_KEY_LEN + 1], t[512];
    key_t_ *k = NULL;

    consumer_t *c;

    if (name == NULL) {
        *out = err_json("keys add CONSUMER");
        return 400;
    }
    if (sync_first(ka, out) != MF_OK) {
        return 503;
    }
    pthread_rwlock_wrlock(&ka->lock);
    c = gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)});
    if (c != NULL && !c->gone) {
        k = new_key(ka, name, key);
    }
    pthread_rwlock_unlock(&ka->lock);
    if (k == NULL) {
        *out = err_json("no consumer '%s' (consumers list shows them)", name);
        return 404;
    }
    snprintf(t, sizeof(t), "key id %s\nkey    %s\n(shown this once)\n", k->id,
             key);
    *out = json_pack("{s:s,s:s,s:s,s:s}", "consumer", name, "key_id", k->id,
                     "key", key, "text", t);
    return 200;
}

/* keys rotate KEYID [--grace 1h]: a new key for the same consumer; the
 * old one works until the grace ends (at once without --grace). */
static int
cmd_keys_rotate(void *arg, const json_t *args, json_t **out)
{
    ka_t *ka = arg;
    const char *id = arg_pos(args, 0), *g = arg_opt(args, "grace");
    char key[GOV_KEY_LEN + 1], t[512];
    int64_t grace_ms = 0, expires;
    key_t_ *old, *k = NULL;

    if (id == NULL ||
        (g != NULL && gov_duration_parse(g, &grace_ms) != MF_OK)) {
        *out = err_json("keys rotate KEYID [--grace 1h]");
        return 400;
    }
    if (sync_first(ka, out) != MF_OK) {
        return 503;
    }
    pthread_rwlock_wrlock(&ka->lock);
    old = gov_map_get(ka->keys, (mf_str_t){id, strlen(id)});
    if (old == NULL || old->missing || old->revoked) {
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("no live generated key '%s' (keys list shows them; "
                        "keys from the config change in the config)",
                        id);
        return 404;
    }
    expires = (int64_t)time(NULL) + (grace_ms + 999) / 1000;
    if (old->expires == 0 || expires < old->expires) {
        int64_t was = old->expires;

        old->expires = expires;
        if (store_key(ka, old, 0) != MF_OK) {
            old->expires = was;
            pthread_rwlock_unlock(&ka->lock);
            *out = err_json("could not store the rotation (see the log)");
            return ka->redis ? 503 : 500;
        }
    }
    k = new_key(ka, old->consumer, key);
    pthread_rwlock_unlock(&ka->lock);
    if (k == NULL) {
        *out = err_json("no new key could be made (see the log)");
        return 500;
    }
    api->log(MF_LOG_INFO, "key-auth: key %s rotated to %s (grace %lld ms)", id,
             k->id, (long long)grace_ms);
    snprintf(t, sizeof(t),
             "key %s expires in %llds\nnew key id %s\nnew key    %s\n(shown "
             "this once)\n",
             id, (long long)((grace_ms + 999) / 1000), k->id, key);
    *out = json_pack("{s:s,s:s,s:s,s:I,s:s}", "old_key_id", id, "key_id", k->id,
                     "key", key, "old_expires", (json_int_t)expires, "text", t);
    return 200;
}

static int
cmd_keys_revoke(void *arg, const json_t *args, json_t **out)
{
    ka_t *ka = arg;
    const char *id = arg_pos(args, 0);
    key_t_ *k;
    int was;

    if (id == NULL) {
        *out = err_json("keys revoke KEYID");
        return 400;
    }
    if (sync_first(ka, out) != MF_OK) {
        return 503;
    }
    pthread_rwlock_wrlock(&ka->lock);
    k = gov_map_get(ka->keys, (mf_str_t){id, strlen(id)});
    if (k == NULL || k->missing) {
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("no generated key '%s' (keys list shows them; keys "
                        "from the config are removed from the config)",
                        id);
        return 404;
    }
    was = k->revoked;
    k->revoked = 1;
    if (store_key(ka, k, 0) != MF_OK) {
        k->revoked = was;
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("could not store the revocation (see the log)");
        return ka->redis ? 503 : 500;
    }
    pthread_rwlock_unlock(&ka->lock);
    api->log(MF_LOG_INFO, "key-auth: key %s revoked", id);
    *out = json_pack("{s:s,s:b,s:s}", "key_id", id, "revoked", 1, "text",
                     "revoked\n");
    return 200;
}

typedef struct {
    json_t *list;
    const char *only;
} list_arg_t;

static void
list_key(const char *id, void *v, void *arg)
{
    key_t_ *k = v;
    list_arg_t *la = arg;

    (void)id;
    if (!k->missing && k->consumer != NULL &&
        (la->only == NULL || strcmp(la->only, k->consumer) == 0)) {
        json_array_append_new(
            la->list, json_pack("{s:s,s:s,s:s,s:I,s:I,s:b}", "key_id", k->id,
                                "consumer", k->consumer, "source",
                                k->from_config ? "config" : "runtime",
                                "created", (json_int_t)k->created, "expires",
                                (json_int_t)k->expires, "revoked", k->revoked));
    }
}

static int
cmd_keys_list(void *arg, const json_t *args, json_t **out)
{
    ka_t *ka = arg;
    list_arg_t la = {json_array(), arg_opt(args, "consumer")};

    if (la.only == NULL) {
        la.only = arg_pos(args, 0);
    }
    if (sync_first(ka, out) != MF_OK) {
        json_decref(la.list);
        return 503;
    }
    pthread_rwlock_rdlock(&ka->lock);
    gov_map_each(ka->keys, list_key, &la);
    gov_map_each(ka->cfg_keys, list_key, &la);
    pthread_rwlock_unlock(&ka->lock);
    *out = json_pack("{s:o}", "keys", la.list);
    return 200;
}

static void
list_consumer(const char *name, void *v, void *arg)
{
    (void)name;
    if (!((consumer_t *)v)->gone) {
        json_array_append_new(arg, consumer_json(v));
    }
}

static int
cmd_consumers_list(void *arg, const json_t *args, json_t **out)
{
    ka_t *ka = arg;
    json_t *list = json_array();

    (void)args;
    if (sync_first(ka, out) != MF_OK) {
        json_decref(list);
        return 503;
    }
    pthread_rwlock_rdlock(&ka->lock);
    gov_map_each(ka->consumers, list_consumer, list);
    pthread_rwlock_unlock(&ka->lock);
    *out = json_pack("{s:o}", "consumers", list);
    return 200;
}

static int
set_disabled(ka_t *ka, const json_t *args, int disabled, json_t **out)
{
    const char *name = arg_pos(args, 0);
    consumer_t *c;
    int was;

    if (name == NULL) {
        *out = err_json("consumers %s NAME", disabled ? "disable" : "enable");
        return 400;
    }
    if (sync_first(ka, out) != MF_OK) {
        return 503;
    }
    pthread_rwlock_wrlock(&ka->lock);
    c = gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)});
    if (c == NULL || c->gone) {
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("no consumer '%s'", name);
        return 404;
    }
    was = c->disabled;
    c->disabled = disabled;
    if (store_disabled(ka, c) != MF_OK) {
        c->disabled = was;
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("could not store it (see the log)");
        return ka->redis ? 503 : 500;
    }
    pthread_rwlock_unlock(&ka->lock);
    api->log(MF_LOG_INFO, "key-auth: consumer '%s' %s", name,
             disabled ? "disabled" : "enabled");
    *out = json_pack("{s:s,s:b,s:s}", "consumer", name, "disabled", disabled,
                     "text", disabled ? "disabled\n" : "enabled\n");
    return 200;
}

static int
cmd_consumers_disable(void *arg, const json_t *args, json_t **out)
{
    return set_disabled(arg, args, 1, out);
}

static int
cmd_consumers_enable(void *arg, const json_t *args, json_t **out)
{
    return set_disabled(arg, args, 0, out);
}

typedef struct {
    const char *consumer;
    char ids[256][GOV_KEY_ID_LEN + 1];
    size_t n;
} owned_t;

static void
collect_keys(const char *id, void *v, void *arg)
{
    owned_t *o = arg;
    key_t_ *k = v;

    if (k->consumer != NULL && strcmp(k->consumer, o->consumer) == 0 &&
        o->n < 256) {
        memcpy(o->ids[o->n++], id, GOV_KEY_ID_LEN + 1);
    }
}

static int
cmd_consumers_delete(void *arg, const json_t *args, json_t **out)
{
    ka_t *ka = arg;
    const char *name = arg_pos(args, 0);
    consumer_t *c;
    owned_t *o;
    size_t i;

    if (name == NULL) {
        *out = err_json("consumers delete NAME");
        return 400;
    }
    o = calloc(1, sizeof(*o));
    if (o == NULL) {
        *out = err_json("out of memory");
        return 500;
    }
    o->consumer = name;
    if (sync_first(ka, out) != MF_OK) {
        free(o);
        return 503;
    }
    pthread_rwlock_wrlock(&ka->lock);
    c = gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)});
    if (c != NULL && c->gone) {
        c = NULL;
    }
    if (c == NULL || c->from_config) {
        pthread_rwlock_unlock(&ka->lock);
        free(o);
        *out = err_json(c ? "consumer '%s' is in the config: remove it there "
                            "(or disable it here)"
                          : "no consumer '%s'",
                        name);
        return c ? 409 : 404;
    }
    if (store_delete(ka, name) != MF_OK) {
        pthread_rwlock_unlock(&ka->lock);
        free(o);
        *out = err_json("could not delete '%s' (see the log)", name);
        return 500;
    }
    gov_map_each(ka->keys, collect_keys, o);
    for (i = 0; i < o->n; i++) {
        key_free(gov_map_del(ka->keys, (mf_str_t){o->ids[i], GOV_KEY_ID_LEN}));
    }
    consumer_free(gov_map_del(ka->consumers, (mf_str_t){name, strlen(name)}));
    pthread_rwlock_unlock(&ka->lock);
    api->log(MF_LOG_INFO, "key-auth: consumer '%s' deleted with %zu keys", name,
             o->n);
    *out = json_pack("{s:s,s:I,s:s}", "consumer", name, "keys_deleted",
                     (json_int_t)o->n, "text", "deleted\n");
    free(o);
    return 200;
}

/* Lifecycle */

/* The billing paths OneAPI serves, with and without /v1 (clients append
 * "dashboard/billing/..." to a base URL that may hold it). */
static int
register_billing(void)
{
    static const char *const paths[] = {
        "/v1/dashboard/billing/subscription", "/dashboard/billing/subscription",
        "/v1/dashboard/billing/usage", "/dashboard/billing/usage"};
    size_t i;

    for (i = 0; i < 4; i++) {
        mf_endpoint_def_t def = {
            .size = sizeof(def),
            .listener = MF_LISTENER_CLIENT,
            .method = "GET",
            .path = paths[i],
            .handler = billing_serve,
            .arg = (void *)(intptr_t)(i < 2 ? BILLING_SUBSCRIPTION
                                            : BILLING_USAGE),
        };

        if (api->add_endpoint(&def) != MF_OK) {
            api->log(MF_LOG_ERROR,
                     "key-auth: cannot serve %s (set billing: false to "
                     "leave it to another stage)",
                     paths[i]);
            return MF_ERR;
        }
    }
    return MF_OK;
}

static void
ka_fini(void *state)
{
    ka_t *ka = state;

    if (ka == NULL) {
        return;
    }
    gov_map_free(ka->consumers, consumer_free);
    gov_map_free(ka->keys, key_free);
    gov_map_free(ka->cfg_keys, key_free);
    json_decref(ka->groups);
    if (ka->db != NULL) {
        sqlite3_close(ka->db);
    }
    free(ka->db_path);
    gov_sha256_release(ka->sha256);
    pthread_rwlock_destroy(&ka->lock);
    free(ka);
}

static int
ka_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    static const struct {
        const char *name, *usage;
        mf_command_fn fn;
    } cmds[] = {
        {"consumers.add",
         "NAME [--group G] [--models 'a*,b'] [--budget 20usd/month] [--rpm N] "
         "[--tpm N] [--concurrency N]: prints its key once",
         cmd_consumers_add},
        {"consumers.list", "every consumer", cmd_consumers_list},
        {"consumers.disable", "NAME: its keys are refused",
         cmd_consumers_disable},
        {"consumers.enable", "NAME", cmd_consumers_enable},
        {"consumers.delete", "NAME: a runtime consumer and its keys",
         cmd_consumers_delete},
        {"keys.add", "CONSUMER: one more key, printed once", cmd_keys_add},
        {"keys.list", "[CONSUMER]: key ids, never keys", cmd_keys_list},
        {"keys.rotate", "KEYID [--grace 1h]: a new key; the old one ends",
         cmd_keys_rotate},
        {"keys.revoke", "KEYID: refused from now on", cmd_keys_revoke},
    };
    static const char *const known[] = {"secret", "db", "store", "billing",
                                        NULL};
    json_t *conf, *v;
    const char *k, *db, *dir, *st;
    int billing;
    ka_t *ka;
    size_t i;

    api = host;
    if (host->abi_minor < 4 ||
        host->size < offsetof(mf_host_api_t, set_query) + sizeof(void *)) {
        host->log(MF_LOG_ERROR, "key-auth: needs a host with ABI 1.4 "
                                "(set_query)");
        return MF_ERR;
    }
    conf = json_loads(config_json, 0, NULL);
    json_object_foreach(conf, k, v)
    {
        for (i = 0; known[i] != NULL && strcmp(known[i], k) != 0; i++) {
        }
        if (known[i] == NULL) {
            api->log(MF_LOG_ERROR,
                     "key-auth: unknown setting '%s' (known: secret, db, "
                     "store, billing)",
                     k);
            json_decref(conf);
            return MF_ERR;
        }
    }
    ka = calloc(1, sizeof(*ka));
    if (ka == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    pthread_rwlock_init(&ka->lock, NULL);
    ka->sha256 = gov_sha256_fetch(); /* NULL: looked up on each call */
    ka->consumers = gov_map_new();
    ka->keys = gov_map_new();
    ka->cfg_keys = gov_map_new();
    ka->groups = json_object();
    db = json_string_value(json_object_get(conf, "db"));
    dir = json_string_value(api->config_section("dir"));
    st = json_string_value(json_object_get(conf, "store"));
    v = json_object_get(conf, "billing");
    if (v != NULL && !json_is_boolean(v)) {
        api->log(MF_LOG_ERROR, "key-auth: billing must be true or false");
        goto fail;
    }
    billing = v == NULL || json_is_true(v);
    if (st != NULL && strcmp(st, "redis") != 0 && strcmp(st, "local") != 0) {
        api->log(MF_LOG_ERROR, "key-auth: store '%s' must be redis or local",
                 st);
        goto fail;
    }
    ka->redis = st != NULL ? strcmp(st, "redis") == 0
                           : api->config_section("redis") != NULL;
    if (ka->redis &&
        (api->config_section("redis") == NULL ||
         api->size < offsetof(mf_host_api_t, redis_call) + sizeof(void *))) {
        api->log(MF_LOG_ERROR, "key-auth: store: redis needs `redis:` in the "
                               "config and a host with redis_call");
        goto fail;
    }
    if (ka->redis && db != NULL) {
        api->log(MF_LOG_ERROR,
                 "key-auth: `db` is the embedded store's file; with "
                 "`redis:` runtime consumers and keys live in Redis (set "
                 "store: local to keep them in db instead)");
        goto fail;
    }
    if (db == NULL) {
        db = ka->redis ? "none" : "keys.db";
    }
    if (strcmp(db, "none") != 0) {
        size_t n = strlen(db) + (dir ? strlen(dir) : 0) + 2;

        ka->db_path = malloc(n);
        if (ka->db_path == NULL) {
            goto fail;
        }
        if (db[0] == '/' || dir == NULL) {
            snprintf(ka->db_path, n, "%s", db);
        } else {
            snprintf(ka->db_path, n, "%s/%s", dir, db);
        }
        if (db_open(ka) != MF_OK) {
            goto fail;
        }
    }
    if ((ka->redis ? redis_secret(ka, conf) : load_secret(ka, conf)) != MF_OK ||
        load_config(ka) != MF_OK || load_runtime(ka) != MF_OK) {
        goto fail;
    }
    if (ka->redis) {
        char e[256];

        /* a warm start; a node that cannot read Redis now reads each key
         * when it is first used */
        if (redis_sync_all(ka, e, sizeof(e)) != MF_OK) {
            api->log(MF_LOG_WARN, "key-auth: the Redis store: %s", e);
        }
    }
    for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (api->register_command(cmds[i].name, cmds[i].usage, cmds[i].fn,
                                  ka) != MF_OK) {
            api->log(MF_LOG_ERROR, "key-auth: admin command %s is taken",
                     cmds[i].name);
            goto fail;
        }
    }
    if (billing && register_billing() != MF_OK) {
        goto fail;
    }
    api->log(MF_LOG_INFO,
             "key-auth: %zu consumers, %zu keys from the config, %zu "
             "generated (%s)",
             gov_map_count(ka->consumers), gov_map_count(ka->cfg_keys),
             gov_map_count(ka->keys),
             ka->redis     ? "Redis store"
             : ka->db_path ? ka->db_path
                           : "no store");
    json_decref(conf);
    *state = ka;
    return MF_OK;
fail:
    json_decref(conf);
    ka_fini(ka);
    return MF_ERR;
}

static const mf_plugin_t key_auth = {
    MF_PLUGIN_ABI,   .name = "key-auth", .version = "1.0.0",
    .init = ka_init, .fini = ka_fini,    .on_request = ka_on_request,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &key_auth;
}
