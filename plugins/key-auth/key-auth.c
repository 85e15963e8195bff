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
    char *attr_text; /* storage of attrs */
} consumer_t;

typedef struct key_s {
    char id[GOV_KEY_ID_LEN + 1];
    char *consumer;
    unsigned char mac[32]; /* HMAC(secret, key); SHA-256(key) for config */
    int64_t created;       /* unix seconds */
    int64_t expires;       /* unix seconds, 0 = never */
    int revoked;
    int from_config;
} key_t_;

typedef struct {
    pthread_rwlock_t lock;
    unsigned char secret[32];
    gov_map_t *consumers; /* name -> consumer_t */
    gov_map_t *keys;      /* id -> key_t_ (generated keys) */
    gov_map_t *cfg_keys;  /* hex SHA-256 of the key -> key_t_ */
    json_t *groups;       /* name -> {models} from `groups` */
    sqlite3 *db;
    char *db_path;
} ka_t;

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
        gov_hmac(ka->secret, 32, cred.data, cred.len, mac);
        return gov_ct_eq(mac, k->mac, 32) ? k : NULL;
    }
    gov_sha256(cred.data, cred.len, mac);
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

static mf_action_t
ka_on_request(mf_req_t *r, void *state, void **ctx)
{
    ka_t *ka = state;
    mf_req_info_t info = {.size = sizeof(info)};
    mf_str_t cred, model;
    mf_consumer_t rec = {.size = sizeof(rec)};
    key_t_ *k;
    consumer_t *c;
    const char *code = NULL, *msg = NULL;
    int status = 401;
    char text[256];

    (void)ctx;
    api->get_info(r, &info);
    if (gov_credential(header(r, "authorization"), header(r, "x-api-key"),
                       header(r, "x-goog-api-key"), info.path,
                       &cred) != MF_OK) {
        deny(r, 401, "missing_api_key",
             "no API key: send it as Authorization: Bearer KEY (or "
             "x-api-key)");
        return MF_RESPOND;
    }
    model = api->get_model(r);
    pthread_rwlock_rdlock(&ka->lock);
    k = find_key(ka, cred);
    c = k ? gov_map_get(ka->consumers,
                        (mf_str_t){k->consumer, strlen(k->consumer)})
          : NULL;
    if (k == NULL || c == NULL) {
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
    if (code != NULL) {
        deny(r, status, code, msg);
        return MF_RESPOND;
    }
    return MF_CONTINUE;
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
    if (db_run(ka,
               "INSERT INTO keys(id, consumer, mac, created, expires, "
               "revoked) VALUES(?, ?, ?, ?, 0, 0)",
               "TTTI", k->id, consumer, hex, k->created) != MF_OK) {
        key_free(k);
        return NULL;
    }
    gov_map_put(ka->keys, (mf_str_t){k->id, GOV_KEY_ID_LEN}, k);
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
    int status = 200;

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
    pthread_rwlock_wrlock(&ka->lock);
    if (gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)}) != NULL) {
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("consumer '%s' exists; pick another name", name);
        status = 409;
        goto done;
    }
    text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    if (db_run(ka, "INSERT INTO consumers(name, json) VALUES(?, ?)", "TT", name,
               text) != MF_OK ||
        (c = consumer_from_json(j, 0)) == NULL) {
        free(text);
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("could not store consumer '%s' (see the log)", name);
        status = 500;
        goto done;
    }
    free(text);
    gov_map_put(ka->consumers, (mf_str_t){c->name, strlen(c->name)}, c);
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

    if (name == NULL) {
        *out = err_json("keys add CONSUMER");
        return 400;
    }
    pthread_rwlock_wrlock(&ka->lock);
    if (gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)}) != NULL) {
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
    pthread_rwlock_wrlock(&ka->lock);
    old = gov_map_get(ka->keys, (mf_str_t){id, strlen(id)});
    if (old == NULL || old->revoked) {
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("no live generated key '%s' (keys list shows them; "
                        "keys from the config change in the config)",
                        id);
        return 404;
    }
    expires = (int64_t)time(NULL) + (grace_ms + 999) / 1000;
    if (old->expires == 0 || expires < old->expires) {
        if (db_run(ka, "UPDATE keys SET expires=? WHERE id=?", "IT", expires,
                   id) != MF_OK) {
            pthread_rwlock_unlock(&ka->lock);
            *out = err_json("could not store the rotation (see the log)");
            return 500;
        }
        old->expires = expires;
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

    if (id == NULL) {
        *out = err_json("keys revoke KEYID");
        return 400;
    }
    pthread_rwlock_wrlock(&ka->lock);
    k = gov_map_get(ka->keys, (mf_str_t){id, strlen(id)});
    if (k == NULL ||
        db_run(ka, "UPDATE keys SET revoked=1 WHERE id=?", "T", id) != MF_OK) {
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("no generated key '%s' (keys list shows them; keys "
                        "from the config are removed from the config)",
                        id);
        return 404;
    }
    k->revoked = 1;
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
    if (la->only == NULL || strcmp(la->only, k->consumer) == 0) {
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
    json_array_append_new(arg, consumer_json(v));
}

static int
cmd_consumers_list(void *arg, const json_t *args, json_t **out)
{
    ka_t *ka = arg;
    json_t *list = json_array();

    (void)args;
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

    if (name == NULL) {
        *out = err_json("consumers %s NAME", disabled ? "disable" : "enable");
        return 400;
    }
    pthread_rwlock_wrlock(&ka->lock);
    c = gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)});
    if (c == NULL || db_run(ka,
                            "INSERT OR REPLACE INTO overrides(name, disabled) "
                            "VALUES(?, ?)",
                            "TI", name, (int64_t)disabled) != MF_OK) {
        pthread_rwlock_unlock(&ka->lock);
        *out = err_json("no consumer '%s'", name);
        return 404;
    }
    c->disabled = disabled;
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

    if (strcmp(k->consumer, o->consumer) == 0 && o->n < 256) {
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
    pthread_rwlock_wrlock(&ka->lock);
    c = gov_map_get(ka->consumers, (mf_str_t){name, strlen(name)});
    if (c == NULL || c->from_config) {
        pthread_rwlock_unlock(&ka->lock);
        free(o);
        *out = err_json(c ? "consumer '%s' is in the config: remove it there "
                            "(or disable it here)"
                          : "no consumer '%s'",
                        name);
        return c ? 409 : 404;
    }
    if (db_run(ka, "DELETE FROM keys WHERE consumer=?", "T", name) != MF_OK ||
        db_run(ka, "DELETE FROM consumers WHERE name=?", "T", name) != MF_OK ||
        db_run(ka, "DELETE FROM overrides WHERE name=?", "T", name) != MF_OK) {
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
    static const char *const known[] = {"secret", "db", NULL};
    json_t *conf, *v;
    const char *k, *db, *dir;
    ka_t *ka;
    size_t i;

    api = host;
    if (host->abi_minor < 4 ||
        host->size <
            offsetof(mf_host_api_t, respond_error_code) + sizeof(void *)) {
        host->log(MF_LOG_ERROR, "key-auth: needs a host with ABI 1.4");
        return MF_ERR;
    }
    conf = json_loads(config_json, 0, NULL);
    json_object_foreach(conf, k, v)
    {
        for (i = 0; known[i] != NULL && strcmp(known[i], k) != 0; i++) {
        }
        if (known[i] == NULL) {
            api->log(MF_LOG_ERROR,
                     "key-auth: unknown setting '%s' (known: secret, db)", k);
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
    ka->consumers = gov_map_new();
    ka->keys = gov_map_new();
    ka->cfg_keys = gov_map_new();
    ka->groups = json_object();
    db = json_string_value(json_object_get(conf, "db"));
    dir = json_string_value(api->config_section("dir"));
    if (db == NULL) {
        db = "keys.db";
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
    if (load_secret(ka, conf) != MF_OK || load_config(ka) != MF_OK ||
        load_runtime(ka) != MF_OK) {
        goto fail;
    }
    for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (api->register_command(cmds[i].name, cmds[i].usage, cmds[i].fn,
                                  ka) != MF_OK) {
            api->log(MF_LOG_ERROR, "key-auth: admin command %s is taken",
                     cmds[i].name);
            goto fail;
        }
    }
    api->log(MF_LOG_INFO,
             "key-auth: %zu consumers, %zu keys from the config, %zu "
             "generated (%s)",
             gov_map_count(ka->consumers), gov_map_count(ka->cfg_keys),
             gov_map_count(ka->keys), ka->db_path ? ka->db_path : "no store");
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
