/*
 * cache: the exact AI cache, a stage plugin. At the end of on_route it
 * hashes the canonical request as it will be sent (every field but a
 * short deny-list, the resolved model, the scope and a cache version)
 * and answers a hit itself: a stream replayed event by event in the
 * client's protocol (api->emit_event), or a whole completion
 * (api->respond_completion), either made from an entry of the other
 * kind. A miss records the answer (api->record_answer) and on_log stores
 * it when it is whole: a 200 that ended with stop or tool_calls, with
 * the upstream's usage. With `semantic:`, an exact miss embeds the last
 * user message (api->model_call) and asks the semantic index
 * (semantic-index.c) for a near question of the same partition: the
 * request but its last user message. See docs/CACHE.md.
 */
#include <manifold/plugin.h>

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "../common/gov.h"
#include "cache-store.h"
#include "semantic-index.h"

/* Bumped when what a key covers or what an entry holds changes. */
#define CACHE_VERSION "mf-cache-1"
/* The same for the semantic layer's partitions. */
#define SEMANTIC_VERSION "mf-cache-sem-1"

static const mf_host_api_t *api;

typedef enum { SCOPE_GROUP = 0, SCOPE_CONSUMER, SCOPE_GLOBAL } scope_t;

typedef struct cache_s {
    cs_store_t *store;
    scope_t scope;
    int64_t ttl_ms;
    size_t max_entry;
    int paced;
    int64_t pace_ms;
    int client_controls; /* Cache-Control and x-cache-control honoured */
    int count_quota;     /* a hit is charged to quotas */
    atomic_ullong hits, misses, bypasses, stored;
    atomic_ullong tokens_saved;
    atomic_ullong coalesced;
    mf_metric_t *m_lookups;   /* manifold_cache_lookups_total{result} */
    mf_metric_t *m_saved;     /* manifold_cache_tokens_saved_total */
    int redis;                /* entries in the configured `redis:` */
    int64_t coalesce_wait_ms; /* Redis: how long a miss waits on another
                                 node's leader (0: coalescing per node) */
    pthread_mutex_t flock;    /* the flights and everything in them */
    gov_map_t *flights;       /* key -> flight_t: misses being answered */
    /* the semantic layer: sem NULL when off */
    si_index_t *sem;
    char *sem_model;    /* the embeddings model */
    char *sem_provider; /* the provider pinned, or NULL: routing */
    double sem_threshold;
    int64_t sem_timeout_ms;
    double sem_max_temp; /* a request above it skips the layer */
    size_t sem_max;      /* max_entries: also the Redis stream's bound */
    atomic_ullong sem_hits, sem_failures;
    /* with `redis:`, the index is fed from the stream mf:cache:v: the id
     * of the last entry read into it (ms-seq) */
    pthread_mutex_t sem_lock;
    uint64_t sem_last_ms, sem_last_seq;
} cache_t;

/* How often a follower looks at its leader's flight. */
#define FOLLOW_POLL_MS 3

/* A stream follower's end when its leader's stream broke under it. */
#define FOLLOW_CUT                                                             \
    "the upstream stream this answer shared with an identical request "        \
    "(cache coalescing) was cut"

/*
 * A miss in flight: the leader's upstream call that concurrent identical
 * misses (the followers) wait on instead of making their own. A stream
 * leader's events are copied here as they arrive; its end sets the entry
 * (an answer whole enough to store) or failed. Under cache_t.flock.
 */
typedef struct flight_s {
    int refs;
    int state;         /* FLIGHT_* */
    int stream;        /* the leader streams: events arrive */
    int emitted;       /* a follower has sent some of them */
    cs_entry_t *entry; /* FLIGHT_DONE: the answer */
    cs_event_t *events;
    size_t nevents, cap;
} flight_t;

enum { FLIGHT_RUNNING = 0, FLIGHT_DONE, FLIGHT_FAILED };

typedef enum { ST_NONE = 0, ST_HIT, ST_MISS, ST_BYPASS } status_t;

/* Per request (request memory; the entry is released in on_done). */
typedef struct rctx_s {
    mf_req_t *r;
    cache_t *c;
    status_t status;
    int store; /* store the answer at on_log */
    char key[65];
    const char *scope;
    const char *model;
    cs_entry_t *hit; /* a paced replay's entry */
    size_t next;     /* its next event */
    int want_usage;  /* the client asked for the usage chunk */
    int usage_sent;
    flight_t *flight; /* the flight it leads or follows (a reference) */
    int leader;
    int started;     /* a follower's stream has begun */
    int stream;      /* the client streams */
    int64_t max_age; /* Cache-Control: max-age, -1 none */
    /* the semantic layer */
    int semantic;              /* answered by it */
    double similarity;         /* the hit's cosine */
    uint8_t part[SI_PART_LEN]; /* the partition */
    const char *question;      /* the last user message's text */
    const char *sig;           /* its guard signature */
    float *vec;                /* its embedding, to index the answer */
    int dim;
    mf_str_t text;                /* the canonical request (the partition) */
    int sem_fetch;                /* with Redis: sem_key's entry is asked */
    int sem_rounds;               /* stream reads made by this lookup */
    char sem_key[SI_KEY_LEN + 1]; /* the near question's key */
    /* coalescing across nodes (Redis) */
    int locked;         /* holds the lock mf:cache:l:KEY */
    char token[40];     /* the lock's value: which request holds it */
    int64_t wait_until; /* a remote follower's deadline */
    int relayed;        /* a lock holder: its events go to mf:cache:s:KEY */
    char sid[48];       /* a remote stream follower: the last id read */
} rctx_t;

#define REDIS_PREFIX "mf:cache:"

/* The request fields that do not change the answer. */
static const char *const deny[] = {
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "model",
    "prompt_cache_key",
    "safety_identifier",
    NULL,
};

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *
pstrndup(mf_req_t *r, const char *s, size_t n)
{
    char *p = api->palloc(r, n + 1);

    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Configuration */

/* "64MiB", "512k", "1g", 1048576 -> bytes; MF_ERR otherwise. */
static int
size_parse(const json_t *v, size_t *out)
{
    const char *s;
    char *end;
    double n;

    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *out = (size_t)json_integer_value(v);
        return MF_OK;
    }
    if ((s = json_string_value(v)) == NULL) {
        return MF_ERR;
    }
    n = strtod(s, &end);
    if (end == s || n <= 0) {
        return MF_ERR;
    }
    if (strcasecmp(end, "") == 0 || strcasecmp(end, "b") == 0) {
    } else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0 ||
               strcasecmp(end, "kib") == 0) {
        n *= 1024;
    } else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0 ||
               strcasecmp(end, "mib") == 0) {
        n *= 1024 * 1024;
    } else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0 ||
               strcasecmp(end, "gib") == 0) {
        n *= 1024.0 * 1024 * 1024;
    } else {
        return MF_ERR;
    }
    *out = (size_t)n;
    return MF_OK;
}

/* "1h", "90s", 3600 (seconds) -> ms; MF_ERR otherwise. */
static int
duration_parse(const json_t *v, int64_t *ms)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ms = json_integer_value(v) * 1000;
        return MF_OK;
    }
    return json_is_string(v) ? gov_duration_parse(json_string_value(v), ms)
                             : MF_ERR;
}

static void
cache_fini(void *state)
{
    cache_t *c = state;

    if (c != NULL) {
        cs_store_free(c->store);
        si_free(c->sem);
        free(c->sem_model);
        free(c->sem_provider);
        if (c->flights != NULL) {
            gov_map_free(c->flights, NULL); /* each held by a request */
            pthread_mutex_destroy(&c->flock);
            pthread_mutex_destroy(&c->sem_lock);
        }
        free(c);
    }
}

/* Admin commands (main thread; the store locks itself) */

/*
 * A purge with Redis (the admin socket's thread, a blocking call of its
 * own): a key's entry is deleted; a scope, a model or both (or all) get a
 * marker holding the time, and an entry stored before a marker that
 * covers it is not served again by any node. Markers live as long as
 * entries do.
 */
static int
redis_purge(const cache_t *c, const char *scope, const char *model,
            const char *key, json_t **out)
{
    char k[1024], now[32], ttl[32], err[256];
    mf_str_t av[5];
    json_t *reply;
    int n, argc = 5;

    if (key != NULL) {
        n = snprintf(k, sizeof(k), REDIS_PREFIX "e:{%s}", key);
        av[0] = MF_STR("DEL");
        argc = 2;
    } else {
        n = scope && model ? snprintf(k, sizeof(k), REDIS_PREFIX "p:sm:%s\n%s",
                                      scope, model)
            : scope ? snprintf(k, sizeof(k), REDIS_PREFIX "p:s:%s", scope)
            : model ? snprintf(k, sizeof(k), REDIS_PREFIX "p:m:%s", model)
                    : snprintf(k, sizeof(k), REDIS_PREFIX "p:all");
        av[0] = MF_STR("SET");
        snprintf(now, sizeof(now), "%lld", (long long)now_ms());
        snprintf(ttl, sizeof(ttl), "%lld", (long long)c->ttl_ms);
        av[2] = (mf_str_t){now, strlen(now)};
        av[3] = MF_STR("PX");
        av[4] = (mf_str_t){ttl, strlen(ttl)};
    }
    if (n < 0 || (size_t)n >= sizeof(k)) {
        *out = json_pack("{s:s}", "error", "the scope or model is too long");
        return 400;
    }
    av[1] = (mf_str_t){k, (size_t)n};
    reply = api->redis_call(argc, av, err, sizeof(err));
    if (reply == NULL) {
        *out = json_pack("{s:s}", "error", err);
        return 503;
    }
    json_decref(reply);
    *out = json_pack("{s:s}", "redis",
                     key != NULL ? "entry deleted"
                                 : "purge marker written: no node serves "
                                   "what it covers");
    return 200;
}

static int
cmd_purge(void *arg, const json_t *args, json_t **out)
{
    cache_t *c = arg;
    const char *scope = json_string_value(json_object_get(args, "scope"));
    const char *model = json_string_value(json_object_get(args, "model"));
    const char *key = json_string_value(json_object_get(args, "key"));
    int all = json_is_true(json_object_get(args, "all"));
    size_t n;

    if (scope == NULL && model == NULL && key == NULL && !all) {
        *out = json_pack("{s:s}", "error",
                         "say what to purge: --scope SCOPE (group:NAME, "
                         "consumer:NAME, anonymous, global), --model MODEL, "
                         "--key KEY, or --all");
        return 400;
    }
    if (c->redis) {
        return redis_purge(c, scope, model, key, out);
    }
    n = cs_store_purge(c->store, scope, model, key);
    *out = json_pack("{s:I}", "purged", (json_int_t)n);
    return 200;
}

static int
cmd_stats(void *arg, const json_t *args, json_t **out)
{
    cache_t *c = arg;
    cs_stats_t st;

    (void)args;
    cs_store_stats(c->store, &st);
    *out = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "entries",
                     (json_int_t)st.entries, "bytes", (json_int_t)st.bytes,
                     "max_bytes", (json_int_t)st.max_bytes, "evicted",
                     (json_int_t)st.evicted, "expired", (json_int_t)st.expired,
                     "hits", (json_int_t)atomic_load(&c->hits), "misses",
                     (json_int_t)atomic_load(&c->misses), "bypasses",
                     (json_int_t)atomic_load(&c->bypasses), "coalesced",
                     (json_int_t)atomic_load(&c->coalesced), "stored",
                     (json_int_t)atomic_load(&c->stored), "tokens_saved",
                     (json_int_t)atomic_load(&c->tokens_saved));
    if (*out != NULL && c->sem != NULL) {
        json_object_set_new(*out, "semantic_entries",
                            json_integer((json_int_t)si_count(c->sem)));
        json_object_set_new(
            *out, "semantic_hits",
            json_integer((json_int_t)atomic_load(&c->sem_hits)));
        json_object_set_new(
            *out, "semantic_failures",
            json_integer((json_int_t)atomic_load(&c->sem_failures)));
    }
    return 200;
}

/* The `semantic:` mapping. */
static int
semantic_parse(cache_t *c, const json_t *conf)
{
    static const char *const known[] = {
        "model",       "provider",        "threshold", "timeout",
        "max_entries", "max_temperature", NULL};
    const char *k, *s;
    json_t *v;
    json_int_t max_entries = 10000;
    size_t i;

    if (!json_is_object(conf)) {
        api->log(MF_LOG_ERROR, "cache: semantic must be a mapping (model, "
                               "threshold, ...)");
        return MF_ERR;
    }
    json_object_foreach((json_t *)conf, k, v)
    {
        for (i = 0; known[i] != NULL && strcmp(known[i], k) != 0; i++) {
        }
        if (known[i] == NULL) {
            api->log(MF_LOG_ERROR,
                     "cache: unknown setting semantic.%s (known: model, "
                     "provider, threshold, timeout, max_entries, "
                     "max_temperature)",
                     k);
            return MF_ERR;
        }
    }
    s = json_string_value(json_object_get(conf, "model"));
    if (s == NULL || s[0] == '\0') {
        api->log(MF_LOG_ERROR, "cache: semantic.model (the embeddings "
                               "model) is required");
        return MF_ERR;
    }
    c->sem_model = strdup(s);
    if ((v = json_object_get(conf, "provider")) != NULL) {
        s = json_string_value(v);
        if (s == NULL || s[0] == '\0') {
            api->log(MF_LOG_ERROR, "cache: semantic.provider must be a "
                                   "provider's name");
            return MF_ERR;
        }
        c->sem_provider = strdup(s);
    }
    c->sem_threshold = 0.95;
    if ((v = json_object_get(conf, "threshold")) != NULL &&
        (!json_is_number(v) || json_number_value(v) <= 0 ||
         json_number_value(v) > 1)) {
        api->log(MF_LOG_ERROR, "cache: semantic.threshold must be a cosine "
                               "similarity above 0, at most 1 (0.95)");
        return MF_ERR;
    }
    if (v != NULL) {
        c->sem_threshold = json_number_value(v);
    }
    c->sem_timeout_ms = 2000;
    if ((v = json_object_get(conf, "timeout")) != NULL &&
        (duration_parse(v, &c->sem_timeout_ms) != MF_OK ||
         c->sem_timeout_ms <= 0)) {
        api->log(MF_LOG_ERROR, "cache: semantic.timeout must be a duration "
                               "(\"2s\", \"500ms\") above 0");
        return MF_ERR;
    }
    if ((v = json_object_get(conf, "max_entries")) != NULL) {
        /* the index is a linear (sketch) pass, measured under 1 ms per
         * lookup up to 100,000 questions: no bound past that is taken */
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > 100000) {
            api->log(MF_LOG_ERROR,
                     "cache: semantic.max_entries must be a count from 1 "
                     "to 100000 (the index is a linear pass, measured "
                     "under 1 ms a lookup up to 100,000 questions)");
            return MF_ERR;
        }
        max_entries = json_integer_value(v);
    }
    c->sem_max_temp = 1.0;
    if ((v = json_object_get(conf, "max_temperature")) != NULL) {
        if (!json_is_number(v) || json_number_value(v) < 0) {
            api->log(MF_LOG_ERROR, "cache: semantic.max_temperature must be "
                                   "a number, 0 or above");
            return MF_ERR;
        }
        c->sem_max_temp = json_number_value(v);
    }
    c->sem_max = (size_t)max_entries;
    if (c->sem_model == NULL ||
        (c->sem = si_new((size_t)max_entries)) == NULL) {
        return MF_ERR;
    }
    /* a model no provider can embed with is refused at load */
    if (api->size >=
        offsetof(mf_host_api_t, model_check) + sizeof(api->model_check)) {
        char why[256];
        mf_str_t prov =
            c->sem_provider != NULL
                ? (mf_str_t){c->sem_provider, strlen(c->sem_provider)}
                : MF_STR_NULL;

        if (api->model_check(MF_MODEL_EMBEDDINGS,
                             (mf_str_t){c->sem_model, strlen(c->sem_model)},
                             prov, why, sizeof(why)) != MF_OK) {
            api->log(MF_LOG_ERROR,
                     "cache: semantic.model '%s' cannot be embedded with: %s",
                     c->sem_model, why);
            return MF_ERR;
        }
    }
    return MF_OK;
}

static int
cache_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    static const char *const known[] = {
        "scope",           "ttl",         "max_memory",
        "max_entry",       "replay",      "pace",
        "client_controls", "count_quota", "semantic",
        "coalesce_wait",   NULL,
    };
    json_t *conf = json_loads(config_json, 0, NULL), *v;
    cache_t *c = NULL;
    const char *k, *s;
    size_t max_memory = 64u * 1024 * 1024, i;

    api = host;
    if (!json_is_object(conf)) {
        api->log(MF_LOG_ERROR, "cache: config must be a mapping");
        goto fail;
    }
    json_object_foreach(conf, k, v)
    {
        for (i = 0; known[i] != NULL && strcmp(known[i], k) != 0; i++) {
        }
        if (known[i] == NULL) {
            api->log(MF_LOG_ERROR,
                     "cache: unknown setting '%s' (known: scope, ttl, "
                     "max_memory, max_entry, replay, pace, client_controls, "
                     "count_quota, semantic)",
                     k);
            goto fail;
        }
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        goto fail;
    }
    c->ttl_ms = 3600 * 1000;
    c->max_entry = 1024 * 1024;
    c->pace_ms = 20;
    c->client_controls = 1;
    if ((s = json_string_value(json_object_get(conf, "scope"))) != NULL ||
        json_object_get(conf, "scope") != NULL) {
        if (s != NULL && strcmp(s, "group") == 0) {
            c->scope = SCOPE_GROUP;
        } else if (s != NULL && strcmp(s, "consumer") == 0) {
            c->scope = SCOPE_CONSUMER;
        } else if (s != NULL && strcmp(s, "global") == 0) {
            c->scope = SCOPE_GLOBAL;
        } else {
            api->log(MF_LOG_ERROR, "cache: scope must be group (the "
                                   "default), consumer or global");
            goto fail;
        }
    }
    if ((v = json_object_get(conf, "ttl")) != NULL &&
        (duration_parse(v, &c->ttl_ms) != MF_OK || c->ttl_ms <= 0)) {
        api->log(MF_LOG_ERROR, "cache: ttl must be a duration (\"1h\", "
                               "\"90s\") or seconds above 0");
        goto fail;
    }
    if ((v = json_object_get(conf, "max_memory")) != NULL &&
        size_parse(v, &max_memory) != MF_OK) {
        api->log(MF_LOG_ERROR, "cache: max_memory must be a size (\"64MiB\", "
                               "\"512k\") or bytes");
        goto fail;
    }
    if ((v = json_object_get(conf, "max_entry")) != NULL &&
        size_parse(v, &c->max_entry) != MF_OK) {
        api->log(MF_LOG_ERROR, "cache: max_entry must be a size (\"1MiB\") "
                               "or bytes");
        goto fail;
    }
    if (c->max_entry > max_memory) {
        c->max_entry = max_memory;
    }
    if ((v = json_object_get(conf, "replay")) != NULL) {
        s = json_string_value(v);
        if (s != NULL && strcmp(s, "paced") == 0) {
            c->paced = 1;
        } else if (s == NULL || strcmp(s, "immediate") != 0) {
            api->log(MF_LOG_ERROR,
                     "cache: replay must be immediate (the default) or paced");
            goto fail;
        }
    }
    if ((v = json_object_get(conf, "pace")) != NULL &&
        (json_is_integer(v) || duration_parse(v, &c->pace_ms) != MF_OK)) {
        api->log(MF_LOG_ERROR, "cache: pace must be a duration (\"20ms\")");
        goto fail;
    }
    if ((v = json_object_get(conf, "client_controls")) != NULL) {
        if (!json_is_boolean(v)) {
            api->log(MF_LOG_ERROR, "cache: client_controls must be true or "
                                   "false");
            goto fail;
        }
        c->client_controls = json_is_true(v);
    }
    if ((v = json_object_get(conf, "count_quota")) != NULL) {
        if (!json_is_boolean(v)) {
            api->log(MF_LOG_ERROR, "cache: count_quota must be true or false");
            goto fail;
        }
        c->count_quota = json_is_true(v);
    }
    c->coalesce_wait_ms = 30000;
    if ((v = json_object_get(conf, "coalesce_wait")) != NULL) {
        if (api->config_section("redis") == NULL) {
            api->log(MF_LOG_ERROR,
                     "cache: coalesce_wait bounds the wait on another "
                     "node's call and needs `redis:` (without it misses "
                     "coalesce per node, waiting on their leader)");
            goto fail;
        }
        if (duration_parse(v, &c->coalesce_wait_ms) != MF_OK ||
            c->coalesce_wait_ms < 0) {
            api->log(MF_LOG_ERROR, "cache: coalesce_wait must be a duration "
                                   "(\"30s\") or seconds, 0 for off");
            goto fail;
        }
    }
    c->store = cs_store_new(max_memory);
    if (c->store == NULL) {
        goto fail;
    }
    if ((v = json_object_get(conf, "semantic")) != NULL &&
        semantic_parse(c, v) != MF_OK) {
        goto fail;
    }
    pthread_mutex_init(&c->flock, NULL);
    pthread_mutex_init(&c->sem_lock, NULL);
    c->flights = gov_map_new();
    c->redis = api->config_section("redis") != NULL;
    {
        static const char *const labels[] = {"result", NULL};
        mf_metric_def_t lookups = {
            .size = sizeof(lookups),
            .type = MF_METRIC_COUNTER,
            .name = "manifold_cache_lookups_total",
            .help = "Cache lookups by result: hit, miss, bypass, coalesced",
            .labels = labels};
        mf_metric_def_t saved = {
            .size = sizeof(saved),
            .type = MF_METRIC_COUNTER,
            .name = "manifold_cache_tokens_saved_total",
            .help = "Tokens of the answers the cache gave (not asked of an "
                    "upstream)"};

        c->m_lookups = api->metric_declare(&lookups);
        c->m_saved = api->metric_declare(&saved);
        if (c->m_lookups == NULL || c->m_saved == NULL) {
            goto fail;
        }
    }
    if (api->register_command("cache.purge",
                              "cache purge --scope S | --model M | --key K "
                              "| --all: drop cached answers",
                              cmd_purge, c) != MF_OK ||
        api->register_command("cache.stats",
                              "cache stats: entries, bytes, hits, misses",
                              cmd_stats, c) != MF_OK) {
        api->log(MF_LOG_ERROR, "cache: the admin commands cache.purge and "
                               "cache.stats are taken (one cache stage per "
                               "config)");
        goto fail;
    }
    json_decref(conf);
    *state = c;
    return MF_OK;
fail:
    json_decref(conf);
    cache_fini(c);
    return MF_ERR;
}

/* The key */

/* The scope string of the request: the consumer's group (or, without
 * one, the consumer), the consumer, or global; a namespace header
 * narrows it. Request memory. */
static const char *
scope_of(mf_req_t *r, const cache_t *c)
{
    mf_consumer_t who = {.size = sizeof(who)};
    mf_str_t ns;
    char buf[512];
    int n;

    if (c->scope == SCOPE_GLOBAL) {
        n = snprintf(buf, sizeof(buf), "global");
    } else if (api->get_consumer(r, &who) != MF_OK) {
        n = snprintf(buf, sizeof(buf), "anonymous");
    } else if (c->scope == SCOPE_GROUP && who.group.len > 0) {
        n = snprintf(buf, sizeof(buf), "group:%.*s", (int)who.group.len,
                     who.group.data);
    } else {
        n = snprintf(buf, sizeof(buf), "consumer:%.*s", (int)who.name.len,
                     who.name.data);
    }
    if (api->get_header(r, MF_REQUEST_HEADERS, MF_STR("x-cache-namespace"),
                        &ns) == MF_OK &&
        ns.len > 0 && n > 0 && (size_t)n < sizeof(buf)) {
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "|ns:%.*s",
                      (int)(ns.len > 128 ? 128 : ns.len), ns.data);
    }
    if (n < 0) {
        return NULL;
    }
    return pstrndup(r, buf,
                    (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* The end of the JSON value at p (a string, object, array or scalar),
 * or NULL when it is cut. */
static const char *
skip_value(const char *p, const char *end)
{
    int depth = 0, in_str = 0;

    for (; p < end; p++) {
        char ch = *p;

        if (in_str) {
            if (ch == '\\') {
                p++;
            } else if (ch == '"') {
                in_str = 0;
                if (depth == 0) {
                    return p + 1;
                }
            }
            continue;
        }
        if (ch == '"') {
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (depth == 0) {
                return p; /* the end of the enclosing object */
            }
            if (--depth == 0) {
                return p + 1;
            }
        } else if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\n' ||
                                  ch == '\r' || ch == '\t')) {
            return p;
        }
    }
    return depth == 0 && !in_str ? p : NULL;
}

static const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    return p;
}

/* A top-level member: its key (quotes included) and its value's text. */
typedef struct {
    mf_str_t key;
    mf_str_t value;
} member_t;

static int
member_cmp(const void *a, const void *b)
{
    const member_t *x = a, *y = b;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = memcmp(x->key.data, y->key.data, n);

    return c != 0 ? c : (x->key.len > y->key.len) - (x->key.len < y->key.len);
}

/* Appends v without the whitespace outside its strings. */
static size_t
put_stripped(char *out, mf_str_t v)
{
    size_t i, n = 0;
    int in_str = 0;

    for (i = 0; i < v.len; i++) {
        char ch = v.data[i];

        if (in_str) {
            out[n++] = ch;
            if (ch == '\\' && i + 1 < v.len) {
                out[n++] = v.data[++i];
            } else if (ch == '"') {
                in_str = 0;
            }
        } else if (ch == '"') {
            in_str = 1;
            out[n++] = ch;
        } else if (ch != ' ' && ch != '\n' && ch != '\r' && ch != '\t') {
            out[n++] = ch;
        }
    }
    return n;
}

/* The entry key: SHA-256 over the version, resolved model, scope and the
 * canonical body's top-level members but the deny-listed, sorted by key,
 * without insignificant whitespace. Read from the body's text, not a
 * parse of it. */
/* The length of a messages array's text up to its last element (the
 * question the semantic layer embeds), or 0. */
static size_t
messages_head(mf_str_t v)
{
    const char *p = v.data, *end = v.data + v.len, *last = NULL, *ve;

    p = skip_ws(p, end);
    if (p == end || *p != '[') {
        return 0;
    }
    for (p = skip_ws(p + 1, end); p < end && *p != ']';) {
        last = p;
        if ((ve = skip_value(p, end)) == NULL || ve == p) {
            return 0;
        }
        p = skip_ws(ve, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
        }
    }
    return last != NULL ? (size_t)(last - v.data) : 0;
}

/* The entry key (partition 0) into x->key; or (partition 1) the
 * semantic layer's partition into x->part: the same hash with its own
 * version and the embeddings model, and the messages but the last. */
static int
key_of(mf_req_t *r, rctx_t *x, mf_str_t text, int partition)
{
    const char *p = text.data, *end = text.data + text.len;
    member_t *m;
    size_t n = 0, cap = 64, i, j, len = 0;
    unsigned char h[32];
    char *buf;

    m = api->palloc(r, cap * sizeof(*m));
    p = skip_ws(p, end);
    if (m == NULL || p == end || *p != '{') {
        return MF_ERR;
    }
    for (p = skip_ws(p + 1, end); p < end && *p != '}';) {
        const char *k = p, *ke, *v, *ve;

        if (*p != '"' || (ke = skip_value(p, end)) == NULL) {
            return MF_ERR;
        }
        p = skip_ws(ke, end);
        if (p == end || *p != ':') {
            return MF_ERR;
        }
        v = skip_ws(p + 1, end);
        if ((ve = skip_value(v, end)) == NULL || ve == v) {
            return MF_ERR;
        }
        for (j = 0; deny[j] != NULL; j++) {
            size_t dl = strlen(deny[j]);

            if ((size_t)(ke - k) == dl + 2 && memcmp(k + 1, deny[j], dl) == 0) {
                break;
            }
        }
        if (deny[j] == NULL) {
            if (n == cap) {
                return MF_ERR; /* no canonical request has this many */
            }
            m[n].key = (mf_str_t){k, (size_t)(ke - k)};
            m[n].value = (mf_str_t){v, (size_t)(ve - v)};
            if (partition && m[n].key.len == 10 &&
                memcmp(k, "\"messages\"", 10) == 0) {
                m[n].value.len = messages_head(m[n].value);
                if (m[n].value.len == 0) {
                    return MF_ERR;
                }
            }
            len += m[n].key.len + m[n].value.len + 2;
            n++;
        }
        p = skip_ws(ve, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
        }
    }
    if (p == end) {
        return MF_ERR;
    }
    qsort(m, n, sizeof(*m), member_cmp);
    len += sizeof(SEMANTIC_VERSION) + strlen(x->model) + strlen(x->scope) + 4;
    if (partition) {
        len += strlen(x->c->sem_model);
    }
    buf = api->palloc(r, len);
    if (buf == NULL) {
        return MF_ERR;
    }
    if (partition) {
        len = (size_t)snprintf(buf, len, SEMANTIC_VERSION "\n%s\n%s\n%s\n",
                               x->c->sem_model, x->model, x->scope);
    } else {
        len = (size_t)snprintf(buf, len, CACHE_VERSION "\n%s\n%s\n", x->model,
                               x->scope);
    }
    for (i = 0; i < n; i++) {
        memcpy(buf + len, m[i].key.data, m[i].key.len);
        len += m[i].key.len;
        buf[len++] = ':';
        len += put_stripped(buf + len, m[i].value);
        buf[len++] = ',';
    }
    gov_sha256(buf, len, h);
    if (partition) {
        memcpy(x->part, h, SI_PART_LEN);
        return MF_OK;
    }
    gov_hex(h, 32, x->key);
    x->key[64] = '\0';
    return MF_OK;
}

/* Client controls */

/* Cache-Control's directive name ("no-store") in v, with its value
 * after '=' in *arg when it has one. */
static int
cc_has(mf_str_t v, const char *name, int64_t *arg)
{
    size_t nl = strlen(name), i = 0;

    while (i < v.len) {
        size_t j;

        while (i < v.len && (v.data[i] == ' ' || v.data[i] == ',')) {
            i++;
        }
        for (j = i; j < v.len && v.data[j] != ','; j++) {
        }
        if (j - i >= nl && strncasecmp(v.data + i, name, nl) == 0 &&
            (j - i == nl || v.data[i + nl] == '=' || v.data[i + nl] == ' ')) {
            if (arg != NULL && j - i > nl + 1 && v.data[i + nl] == '=') {
                *arg = strtoll(v.data + i + nl + 1, NULL, 10);
            }
            return 1;
        }
        i = j;
    }
    return 0;
}

/* Replay */

/* Counts a lookup's result in the metrics registry. */
static void
count(const cache_t *c, const char *result)
{
    mf_str_t v = {result, strlen(result)};

    if (c->m_lookups != NULL) {
        api->metric_add(c->m_lookups, &v, 1, 1);
    }
}

static void
set_status(mf_req_t *r, const char *status)
{
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-manifold-cache"),
                    (mf_str_t){status, strlen(status)});
}

static json_t *
usage_json(const mf_usage_t *u)
{
    json_t *j = json_pack("{s:I,s:I,s:I}", "prompt_tokens",
                          (json_int_t)u->prompt_tokens, "completion_tokens",
                          (json_int_t)u->completion_tokens, "total_tokens",
                          (json_int_t)u->total_tokens);

    if (j != NULL && u->cached_tokens >= 0) {
        json_object_set_new(
            j, "prompt_tokens_details",
            json_pack("{s:I}", "cached_tokens", (json_int_t)u->cached_tokens));
    }
    if (j != NULL && u->reasoning_tokens >= 0) {
        json_object_set_new(j, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens",
                                      (json_int_t)u->reasoning_tokens));
    }
    return j;
}

/* Appends s (a JSON string's value) to the string member name of o. */
static void
str_append(json_t *o, const char *name, const json_t *s)
{
    json_t *have = json_object_get(o, name);
    size_t a, b;
    char *p;

    if (!json_is_string(s)) {
        return;
    }
    if (!json_is_string(have)) {
        json_object_set(o, name, (json_t *)s);
        return;
    }
    a = json_string_length(have);
    b = json_string_length(s);
    p = malloc(a + b + 1);
    if (p == NULL) {
        return;
    }
    memcpy(p, json_string_value(have), a);
    memcpy(p + a, json_string_value(s), b);
    json_object_set_new(o, name, json_stringn_nocheck(p, a + b));
    free(p);
}

/* A whole completion from a stream entry's chunks. New reference. */
static json_t *
completion_from_stream(const cs_entry_t *e)
{
    json_t *msg = json_pack("{s:s,s:n}", "role", "assistant", "content");
    json_t *calls = json_array(), *first = NULL, *out;
    const char *finish = "stop";
    size_t i, j;

    for (i = 0; i < e->nevents; i++) {
        json_t *ch =
            json_loadb(e->events[i].data.data, e->events[i].data.len, 0, NULL);
        json_t *c0 = json_array_get(json_object_get(ch, "choices"), 0);
        json_t *d = json_object_get(c0, "delta"), *tc;

        if (ch == NULL) {
            continue;
        }
        if (first == NULL && json_object_get(ch, "id") != NULL) {
            first = json_incref(ch);
        }
        str_append(msg, "content", json_object_get(d, "content"));
        str_append(msg, "reasoning_content",
                   json_object_get(d, "reasoning_content"));
        json_array_foreach(json_object_get(d, "tool_calls"), j, tc)
        {
            size_t idx =
                (size_t)json_integer_value(json_object_get(tc, "index"));
            json_t *have, *fn = json_object_get(tc, "function");

            while (json_array_size(calls) <= idx) {
                json_array_append_new(
                    calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", "", "type",
                                     "function", "function", "name", "",
                                     "arguments", ""));
            }
            have = json_array_get(calls, idx);
            if (json_is_string(json_object_get(tc, "id"))) {
                json_object_set(have, "id", json_object_get(tc, "id"));
            }
            str_append(json_object_get(have, "function"), "name",
                       json_object_get(fn, "name"));
            str_append(json_object_get(have, "function"), "arguments",
                       json_object_get(fn, "arguments"));
        }
        if (json_is_string(json_object_get(c0, "finish_reason"))) {
            finish = json_string_value(json_object_get(c0, "finish_reason"));
            finish = strcmp(finish, "tool_calls") == 0 ? "tool_calls" : "stop";
        }
        json_decref(ch);
    }
    if (json_array_size(calls) > 0) {
        json_object_set(msg, "tool_calls", calls);
    }
    json_decref(calls);
    out = json_pack("{s:O?,s:s,s:O?,s:O?,s:[{s:i,s:o,s:n,s:s}],s:o}", "id",
                    json_object_get(first, "id"), "object", "chat.completion",
                    "created", json_object_get(first, "created"), "model",
                    json_object_get(first, "model"), "choices", "index", 0,
                    "message", msg, "logprobs", "finish_reason", finish,
                    "usage", usage_json(&e->usage));
    json_decref(first);
    return out;
}

/* The JSON text of j (taken), malloc'd; NULL for NULL. */
static char *
json_dumps_new(json_t *j)
{
    char *t = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return t;
}

/* Stream chunks from a whole completion (text, reasoning, each tool
 * call, the end, the usage when asked). New reference: an array. */
static json_t *
stream_from_completion(const cs_entry_t *e, int want_usage)
{
    json_t *cpl = json_loadb(e->body.data, e->body.len, 0, NULL);
    json_t *c0 = json_array_get(json_object_get(cpl, "choices"), 0);
    json_t *msg = json_object_get(c0, "message"), *tc;
    json_t *out = json_array(), *v;
    size_t i;

#define CHUNK(delta, finish)                                                   \
    json_array_append_new(                                                     \
        out, json_pack("{s:O?,s:s,s:O?,s:O?,s:[{s:i,s:o,s:O?}]}", "id",        \
                       json_object_get(cpl, "id"), "object",                   \
                       "chat.completion.chunk", "created",                     \
                       json_object_get(cpl, "created"), "model",               \
                       json_object_get(cpl, "model"), "choices", "index", 0,   \
                       "delta", (delta), "finish_reason", (finish)))

    if (cpl == NULL) {
        json_decref(out);
        return NULL;
    }
    CHUNK(json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL);
    if (json_is_string(v = json_object_get(msg, "reasoning_content")) &&
        json_string_length(v) > 0) {
        CHUNK(json_pack("{s:O}", "reasoning_content", v), NULL);
    }
    if (json_is_string(v = json_object_get(msg, "content")) &&
        json_string_length(v) > 0) {
        CHUNK(json_pack("{s:O}", "content", v), NULL);
    }
    json_array_foreach(json_object_get(msg, "tool_calls"), i, tc)
    {
        json_t *t = json_deep_copy(tc);

        json_object_set_new(t, "index", json_integer((json_int_t)i));
        CHUNK(json_pack("{s:[o]}", "tool_calls", t), NULL);
    }
    CHUNK(json_object(), json_object_get(c0, "finish_reason"));
    if (want_usage) {
        json_array_append_new(
            out, json_pack("{s:O?,s:s,s:O?,s:O?,s:[],s:o}", "id",
                           json_object_get(cpl, "id"), "object",
                           "chat.completion.chunk", "created",
                           json_object_get(cpl, "created"), "model",
                           json_object_get(cpl, "model"), "choices", "usage",
                           usage_json(&e->usage)));
    }
#undef CHUNK
    json_decref(cpl);
    return out;
}

static void
emit_json(mf_req_t *r, json_t *chunk)
{
    char *t = json_dumps(chunk, JSON_COMPACT);

    if (t != NULL) {
        api->emit_event(r, (mf_str_t){t, strlen(t)}, 0);
        free(t);
    }
}

/* The usage chunk a client asked for when the entry has none. */
static void
emit_usage(rctx_t *x, const cs_entry_t *e)
{
    json_t *u = json_pack("{s:s,s:[],s:o}", "object", "chat.completion.chunk",
                          "choices", "usage", usage_json(&e->usage));

    emit_json(x->r, u);
    json_decref(u);
    x->usage_sent = 1;
}

/* Sends the entry's next event; returns 0 once the last went. */
static int
replay_one(rctx_t *x, const cs_entry_t *e)
{
    while (x->next < e->nevents) {
        const cs_event_t *ev = &e->events[x->next++];

        if (ev->flags & CS_EV_USAGE) {
            if (!x->want_usage) {
                continue;
            }
            x->usage_sent = 1;
        }
        api->emit_event(x->r, ev->data, 0);
        return 1;
    }
    if (x->want_usage && !x->usage_sent) {
        emit_usage(x, e);
    }
    api->emit_event(x->r, MF_STR_NULL, 1);
    return 0;
}

static void
pace_cb(mf_req_t *r, void *arg, const char *err)
{
    rctx_t *x = arg;

    if (err != NULL || !replay_one(x, x->hit) ||
        api->timer(r, (uint64_t)x->c->pace_ms, pace_cb, x) != MF_OK) {
        api->resume(r, MF_RESPOND);
    }
}

/* Counts the tokens an answer from the cache saved. */
static void
count_saved(cache_t *c, const mf_usage_t *u)
{
    if (u->total_tokens > 0) {
        atomic_fetch_add(&c->tokens_saved, (unsigned long long)u->total_tokens);
        if (c->m_saved != NULL) {
            api->metric_add(c->m_saved, NULL, 0, (double)u->total_tokens);
        }
    }
}

/* Answers the request from entry e (a reference the context takes). */
static mf_action_t
answer(mf_req_t *r, rctx_t *x, cs_entry_t *e, int stream)
{
    cache_t *c = x->c;
    char age[32];
    int n;

    x->status = ST_HIT;
    x->store = 0;
    x->hit = e;
    set_status(r, "hit");
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-manifold-cache-layer"),
                    x->semantic ? MF_STR("semantic") : MF_STR("exact"));
    if (x->semantic) {
        char sim[32];

        n = snprintf(sim, sizeof(sim), "%.4f", x->similarity);
        api->set_header(r, MF_RESPONSE_HEADERS,
                        MF_STR("x-manifold-cache-similarity"),
                        (mf_str_t){sim, (size_t)n});
        atomic_fetch_add(&c->sem_hits, 1);
    }
    n = snprintf(age, sizeof(age), "%lld",
                 (long long)((now_ms() - e->created_ms) / 1000));
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("age"),
                    (mf_str_t){age, (size_t)n});
    api->set_usage(r, &e->usage);
    api->set_cached(r, c->count_quota);
    if (x->flight == NULL) {
        atomic_fetch_add(&c->hits, 1); /* a follower counts as coalesced */
        count(c, "hit");
    }
    count_saved(c, &e->usage);
    if (!stream) {
        char *made =
            e->stream ? json_dumps_new(completion_from_stream(e)) : NULL;
        mf_str_t text = made != NULL ? (mf_str_t){made, strlen(made)} : e->body;
        int rc = (e->stream && made == NULL) ? MF_ERR
                                             : api->respond_completion(r, text);

        free(made);
        return rc == MF_OK ? MF_RESPOND : MF_FAIL;
    }
    if (!e->stream) {
        json_t *chunks = stream_from_completion(e, x->want_usage), *ch;
        size_t i;

        if (chunks == NULL) {
            return MF_FAIL;
        }
        json_array_foreach(chunks, i, ch)
        {
            emit_json(r, ch);
        }
        json_decref(chunks);
        api->emit_event(r, MF_STR_NULL, 1);
        return MF_RESPOND;
    }
    if (c->paced) {
        if (replay_one(x, e) &&
            api->timer(r, (uint64_t)c->pace_ms, pace_cb, x) == MF_OK) {
            return MF_PAUSE;
        }
        return MF_RESPOND;
    }
    while (replay_one(x, e)) {
    }
    return MF_RESPOND;
}

/* Coalescing */

static void
flight_unref(flight_t *f)
{
    size_t i;

    if (--f->refs > 0) {
        return;
    }
    for (i = 0; i < f->nevents; i++) {
        free((char *)f->events[i].data.data);
    }
    free(f->events);
    cs_entry_release(f->entry);
    free(f);
}

/* Drops the request's reference on its flight (on_done). */
static void
flight_leave(cache_t *c, rctx_t *x)
{
    if (x->flight == NULL) {
        return;
    }
    pthread_mutex_lock(&c->flock);
    flight_unref(x->flight);
    pthread_mutex_unlock(&c->flock);
    x->flight = NULL;
}

/* The leader's answer is over: e (a new reference taken by the flight,
 * or NULL: failed), the flight leaves the table. Once per leader. */
static void
flight_end(cache_t *c, rctx_t *x, cs_entry_t *e)
{
    flight_t *f = x->flight;

    x->leader = 0;
    if (f == NULL) {
        return;
    }
    pthread_mutex_lock(&c->flock);
    if (gov_map_get(c->flights, (mf_str_t){x->key, 64}) == f) {
        gov_map_del(c->flights, (mf_str_t){x->key, 64});
    }
    if (f->state == FLIGHT_FAILED) {
        e = NULL; /* its events broke off (a failover): they stay broken */
    }
    if (e != NULL) {
        atomic_fetch_add(&e->refs, 1);
    }
    f->entry = e;
    f->state = e != NULL ? FLIGHT_DONE : FLIGHT_FAILED;
    pthread_mutex_unlock(&c->flock);
}

static void relay_event(mf_req_t *r, rctx_t *x, mf_str_t data, int restart);

/* An event of the flight's answer (under flock), or a restart (a
 * failover: the events so far were not the answer). */
static void
flight_add(flight_t *f, mf_str_t data, int restart)
{
    cs_event_t *ev;
    char *copy;

    if (restart) {
        /* a failover: the events so far were not the answer. Followers
         * that sent some cannot be given others; else they start over */
        if (f->emitted) {
            f->state = FLIGHT_FAILED;
        } else {
            while (f->nevents > 0) {
                free((char *)f->events[--f->nevents].data.data);
            }
        }
        return;
    }
    if (f->state != FLIGHT_RUNNING) {
        return;
    }
    if (f->nevents == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        cs_event_t *bigger = realloc(f->events, cap * sizeof(*bigger));

        if (bigger == NULL) {
            f->state = FLIGHT_FAILED;
            return;
        }
        f->events = bigger;
        f->cap = cap;
    }
    copy = malloc(data.len ? data.len : 1);
    if (copy == NULL) {
        f->state = FLIGHT_FAILED;
        return;
    }
    memcpy(copy, data.data, data.len);
    ev = &f->events[f->nevents++];
    memset(ev, 0, sizeof(*ev));
    ev->data = (mf_str_t){copy, data.len};
    /* a usage-only chunk: {"choices":[],...,"usage":{...}} */
    if (memmem(data.data, data.len, "\"choices\":[]", 12) != NULL) {
        ev->flags = CS_EV_USAGE;
    }
    /* cppcheck-suppress memleak ; copy is the event's, freed by flight_unref */
}

/* The leader's stream events as they arrive (its worker). */
static void
flight_event(mf_req_t *r, void *arg, mf_str_t data, int restart)
{
    rctx_t *x = arg;

    if (x->flight == NULL) {
        return;
    }
    pthread_mutex_lock(&x->c->flock);
    flight_add(x->flight, data, restart);
    pthread_mutex_unlock(&x->c->flock);
    if (x->locked) {
        relay_event(r, x, data, restart); /* for other nodes' followers */
    }
}

/* Marks a follower's answer as the cache's. */
static void
follower_headers(mf_req_t *r, rctx_t *x)
{
    x->status = ST_HIT;
    set_status(r, "hit");
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-manifold-cache-layer"),
                    MF_STR("exact"));
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-manifold-cache-shared"),
                    MF_STR("in-flight"));
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("age"), MF_STR("0"));
    api->set_cached(r, x->c->count_quota);
    atomic_fetch_add(&x->c->coalesced, 1);
    count(x->c, "coalesced");
}

/* A stream follower's events since it last looked (under flock): the
 * first may be a provider's preamble (a role), which a failover can
 * still take back, so it begins with the second, when the leader's
 * answer is under way. 1 when the flight is done and its stream ended. */
static int
follow_events(mf_req_t *r, rctx_t *x, flight_t *f)
{
    if (!x->started && (f->nevents > 1 || f->state == FLIGHT_DONE)) {
        x->started = 1;
        f->emitted = 1;
        follower_headers(r, x);
    }
    while (x->started && x->next < f->nevents) {
        const cs_event_t *ev = &f->events[x->next++];

        if (!(ev->flags & CS_EV_USAGE) || x->want_usage) {
            x->usage_sent |= (ev->flags & CS_EV_USAGE) != 0;
            api->emit_event(r, ev->data, 0);
        }
    }
    if (f->state != FLIGHT_DONE) {
        return 0;
    }
    api->set_usage(r, &f->entry->usage);
    count_saved(x->c, &f->entry->usage);
    if (x->want_usage && !x->usage_sent) {
        emit_usage(x, f->entry);
    }
    api->emit_event(r, MF_STR_NULL, 1);
    return 1;
}

/* A stream follower whose leader's stream broke after it began: it ends
 * with the error event a cut upstream stream gets, so the client cannot
 * take it for a whole answer. */
static void
follow_cut(mf_req_t *r)
{
    if (api->size < offsetof(mf_host_api_t, emit_stream_error) +
                        sizeof(api->emit_stream_error) ||
        api->emit_stream_error(r, "upstream_stream_cut", FOLLOW_CUT) != MF_OK) {
        api->emit_event(r, MF_STR_NULL, 1);
    }
}

/*
 * A follower's turn (its worker, every FOLLOW_POLL_MS): a stream follower
 * of a stream leader sends the events that came since it last looked;
 * any follower answers from the entry once the leader is done; when the
 * leader failed, a follower that sent nothing makes its own call.
 */
static void
follow_cb(mf_req_t *r, void *arg, const char *err)
{
    rctx_t *x = arg;
    cache_t *c = x->c;
    flight_t *f = x->flight;
    mf_req_info_t info = {.size = sizeof(info)};
    cs_entry_t *e;
    mf_action_t act;

    if (err != NULL) {
        api->resume(r, MF_CONTINUE);
        return;
    }
    api->get_info(r, &info);
    pthread_mutex_lock(&c->flock);
    if (info.stream && f->stream && f->state != FLIGHT_FAILED) {
        if (follow_events(r, x, f)) {
            pthread_mutex_unlock(&c->flock);
            api->resume(r, MF_RESPOND);
            return;
        }
    } else if (f->state == FLIGHT_DONE && !x->started) {
        e = f->entry;
        atomic_fetch_add(&e->refs, 1);
        pthread_mutex_unlock(&c->flock);
        follower_headers(r, x);
        act = answer(r, x, e, info.stream);
        if (act != MF_PAUSE) {
            api->resume(r, act);
        }
        return;
    }
    if (f->state == FLIGHT_FAILED) {
        pthread_mutex_unlock(&c->flock);
        if (x->started) {
            follow_cut(r); /* the leader's stream broke after it began */
            api->resume(r, MF_RESPOND);
        } else {
            api->resume(r, MF_CONTINUE); /* its own upstream call */
        }
        return;
    }
    pthread_mutex_unlock(&c->flock);
    if (api->timer(r, FOLLOW_POLL_MS, follow_cb, x) != MF_OK) {
        api->resume(r, MF_CONTINUE);
    }
}

/* A miss: leads a new flight (MF_CONTINUE: the upstream call is made),
 * or follows the one in the air (MF_PAUSE). */
static mf_action_t
flight_join(mf_req_t *r, rctx_t *x, int stream)
{
    cache_t *c = x->c;
    flight_t *f;

    pthread_mutex_lock(&c->flock);
    f = gov_map_get(c->flights, (mf_str_t){x->key, 64});
    if (f == NULL) {
        if (!x->store || (f = calloc(1, sizeof(*f))) == NULL) {
            pthread_mutex_unlock(&c->flock);
            return MF_CONTINUE;
        }
        f->refs = 1;
        f->stream = stream;
        gov_map_put(c->flights, (mf_str_t){x->key, 64}, f);
        x->flight = f;
        x->leader = 1;
        pthread_mutex_unlock(&c->flock);
        if (stream) {
            api->watch_answer(r, flight_event, x);
        }
        return MF_CONTINUE;
    }
    f->refs++;
    x->flight = f;
    pthread_mutex_unlock(&c->flock);
    if (api->timer(r, FOLLOW_POLL_MS, follow_cb, x) != MF_OK) {
        return MF_CONTINUE;
    }
    return MF_PAUSE;
}

/* Redis: entries shared by every node */

/* The entry as Redis keeps it (a JSON text, malloc'd), or NULL. */
static char *
entry_encode(const cs_entry_t *e)
{
    const mf_usage_t *u = &e->usage;
    json_t *j = json_pack(
        "{s:I,s:s,s:s,s:[I,I,I,I,I]}", "created", (json_int_t)e->created_ms,
        "scope", e->scope, "model", e->model, "usage",
        (json_int_t)u->prompt_tokens, (json_int_t)u->completion_tokens,
        (json_int_t)u->total_tokens, (json_int_t)u->cached_tokens,
        (json_int_t)u->reasoning_tokens);
    char *t;
    size_t i;

    if (j == NULL) {
        return NULL;
    }
    if (e->stream) {
        json_t *evs = json_array();

        for (i = 0; i < e->nevents; i++) {
            json_array_append_new(
                evs, json_pack("[i,s%]", (int)e->events[i].flags,
                               e->events[i].data.data, e->events[i].data.len));
        }
        json_object_set_new(j, "events", evs);
    } else {
        json_object_set_new(j, "body", json_stringn(e->body.data, e->body.len));
    }
    t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return t;
}

/* An entry from what entry_encode wrote, or NULL. */
static cs_entry_t *
entry_decode(const cache_t *c, const char *key, mf_str_t text)
{
    json_t *j = json_loadb(text.data, text.len, 0, NULL), *evs, *ev;
    json_t *u = json_object_get(j, "usage");
    mf_usage_t usage = {0};
    cs_event_t *events = NULL;
    cs_entry_t *e = NULL;
    int64_t created = json_integer_value(json_object_get(j, "created"));
    const char *scope = json_string_value(json_object_get(j, "scope"));
    const char *model = json_string_value(json_object_get(j, "model"));
    size_t i, n;

    if (j == NULL || scope == NULL || model == NULL ||
        json_array_size(u) != 5) {
        goto out;
    }
    usage.prompt_tokens = json_integer_value(json_array_get(u, 0));
    usage.completion_tokens = json_integer_value(json_array_get(u, 1));
    usage.total_tokens = json_integer_value(json_array_get(u, 2));
    usage.cached_tokens = json_integer_value(json_array_get(u, 3));
    usage.reasoning_tokens = json_integer_value(json_array_get(u, 4));
    if ((evs = json_object_get(j, "events")) != NULL) {
        n = json_array_size(evs);
        events = calloc(n ? n : 1, sizeof(*events));
        if (events == NULL) {
            goto out;
        }
        json_array_foreach(evs, i, ev)
        {
            json_t *d = json_array_get(ev, 1);

            events[i].flags =
                (unsigned)json_integer_value(json_array_get(ev, 0));
            events[i].data =
                (mf_str_t){json_string_value(d), json_string_length(d)};
        }
        e = cs_entry_new(key, scope, model, created, created + c->ttl_ms,
                         &usage, 1, MF_STR_NULL, events, n);
    } else if (json_is_string(json_object_get(j, "body"))) {
        json_t *b = json_object_get(j, "body");

        e = cs_entry_new(
            key, scope, model, created, created + c->ttl_ms, &usage, 0,
            (mf_str_t){json_string_value(b), json_string_length(b)}, NULL, 0);
    }
out:
    free(events);
    json_decref(j);
    return e;
}

/* A Redis key of the cache: the prefix, then what (palloc'd). */
static mf_str_t
rkey(mf_req_t *r, const char *kind, const char *a, const char *b)
{
    /* an entry's key, lock and stream share its hash tag (one slot on a
     * cluster: the unlock script touches the lock and the stream) */
    int tag = b == NULL && strlen(kind) == 2 && strchr("els", kind[0]);
    size_t n = sizeof(REDIS_PREFIX) + strlen(kind) + strlen(a) +
               (b ? strlen(b) + 1 : 0) + 2;
    char *p = api->palloc(r, n);
    int len;

    if (p == NULL) {
        return MF_STR("");
    }
    len = snprintf(p, n, REDIS_PREFIX "%s%s%s%s%s%s", kind, tag ? "{" : "", a,
                   tag ? "}" : "", b ? "\n" : "", b ? b : "");
    return (mf_str_t){p, (size_t)len};
}

/* Stores e in Redis, for the entry's TTL. */
static void
redis_store(mf_req_t *r, const cache_t *c, const cs_entry_t *e)
{
    char *t = entry_encode(e), ttl[32];
    mf_str_t av[5];

    if (t == NULL) {
        return;
    }
    snprintf(ttl, sizeof(ttl), "%lld", (long long)c->ttl_ms);
    av[0] = MF_STR("SET");
    av[1] = rkey(r, "e:", e->key, NULL);
    av[2] = (mf_str_t){t, strlen(t)};
    av[3] = MF_STR("PX");
    av[4] = (mf_str_t){ttl, strlen(ttl)};
    api->redis_post(r, 5, av, NULL, NULL);
    free(t);
}

static mf_action_t miss(mf_req_t *r, rctx_t *x);
static int semantic_eligible(mf_req_t *r, rctx_t *x, mf_str_t text);
static mf_action_t semantic_lookup(mf_req_t *r, rctx_t *x);

/* The MGET of an entry and the purge markers that could cover it: the
 * request's own key, or (x->sem_fetch) the near question's the index
 * found. An exact miss goes on to the semantic layer when it is on. */
static void
redis_got(mf_req_t *r, void *arg, const mf_redis_reply_t *reply,
          const char *err)
{
    rctx_t *x = arg;
    cs_entry_t *e = NULL;
    mf_action_t act;
    size_t i;
    int gone = err == NULL; /* no entry, or a purged one */

    if (err == NULL && reply->type == MF_REDIS_ARRAY && reply->nelements == 7 &&
        reply->elements[0].type == MF_REDIS_STRING) {
        e = entry_decode(x->c, x->sem_fetch ? x->sem_key : x->key,
                         reply->elements[0].str);
        for (i = 1; e != NULL && i < 7; i++) {
            const mf_redis_reply_t *m = &reply->elements[i];
            char at[32];

            if (m->type != MF_REDIS_STRING || m->str.len >= sizeof(at)) {
                continue;
            }
            memcpy(at, m->str.data, m->str.len);
            at[m->str.len] = '\0';
            if (strtoll(at, NULL, 10) >= e->created_ms) {
                cs_entry_release(e); /* purged */
                e = NULL;
            }
        }
        if (e != NULL && x->max_age >= 0 &&
            (now_ms() - e->created_ms) / 1000 > x->max_age) {
            cs_entry_release(e);
            e = NULL;
            gone = 0; /* there, only older than this client takes */
        }
    } else if (err != NULL) {
        api->log(MF_LOG_WARN,
                 "cache: redis lookup failed (%s); answered "
                 "as a miss",
                 err);
    }
    if (x->sem_fetch && e == NULL && gone) {
        /* its answer expired, was purged or is gone: never again */
        si_remove(x->c->sem, x->sem_key);
    }
    if (e != NULL) {
        x->semantic = x->sem_fetch;
        act = answer(r, x, e, x->stream);
    } else if (!x->sem_fetch && err == NULL && x->c->sem != NULL &&
               semantic_eligible(r, x, x->text)) {
        act = semantic_lookup(r, x);
    } else {
        act = miss(r, x);
    }
    if (act != MF_PAUSE) {
        api->resume(r, act);
    }
}

/* Looks the entry of key up in Redis: MF_PAUSE, or the miss when Redis
 * cannot be asked. */
static mf_action_t
redis_lookup(mf_req_t *r, rctx_t *x, const char *key)
{
    const char *base = x->scope, *ns = strstr(x->scope, "|ns:");
    mf_str_t av[8];

    if (ns != NULL) {
        base = pstrndup(r, x->scope, (size_t)(ns - x->scope));
    }
    av[0] = MF_STR("MGET");
    av[1] = rkey(r, "e:", key, NULL);
    av[2] = rkey(r, "p:all", "", NULL);
    av[3] = rkey(r, "p:s:", base ? base : x->scope, NULL);
    av[4] = rkey(r, "p:s:", x->scope, NULL);
    av[5] = rkey(r, "p:m:", x->model, NULL);
    av[6] = rkey(r, "p:sm:", base ? base : x->scope, x->model);
    av[7] = rkey(r, "p:sm:", x->scope, x->model);
    if (api->redis_command(r, 8, av, redis_got, x) != MF_OK) {
        return miss(r, x);
    }
    return MF_PAUSE;
}

/*
 * The semantic index with Redis: every node appends the questions it
 * stores to one stream (SEM_STREAM: XADD, trimmed to about max_entries)
 * and reads the entries it has not read yet into its own index before
 * each lookup (XREAD from the last id read, SEM_READ at a time, at most
 * SEM_ROUNDS reads per lookup; a node that starts reads the backlog over
 * its first lookups). An entry: p the partition (32 bytes), k the exact
 * key (hex), s the guard signature, v the vector (float32, the node's
 * byte order: little-endian wherever the gateway builds).
 */
#define SEM_STREAM REDIS_PREFIX "v"
#define SEM_READ 1000
#define SEM_ROUNDS 16

/* Appends the question of x (indexed with the entry of its key). */
static void
sem_publish(mf_req_t *r, const cache_t *c, const rctx_t *x)
{
    char max[32];
    mf_str_t av[14];

    snprintf(max, sizeof(max), "%zu", c->sem_max);
    av[0] = MF_STR("XADD");
    av[1] = MF_STR(SEM_STREAM);
    av[2] = MF_STR("MAXLEN");
    av[3] = MF_STR("~");
    av[4] = (mf_str_t){max, strlen(max)};
    av[5] = MF_STR("*");
    av[6] = MF_STR("p");
    av[7] = (mf_str_t){(const char *)x->part, SI_PART_LEN};
    av[8] = MF_STR("k");
    av[9] = (mf_str_t){x->key, strlen(x->key)};
    av[10] = MF_STR("s");
    av[11] = (mf_str_t){x->sig, strlen(x->sig)};
    av[12] = MF_STR("v");
    av[13] = (mf_str_t){(const char *)x->vec, (size_t)x->dim * sizeof(float)};
    api->redis_post(r, 14, av, NULL, NULL);
}

/* A stream id "ms-seq"; 0 on a malformed one. */
static int
sem_id(mf_str_t s, uint64_t *ms, uint64_t *seq)
{
    char buf[48], *dash, *end;

    if (s.len == 0 || s.len >= sizeof(buf)) {
        return 0;
    }
    memcpy(buf, s.data, s.len);
    buf[s.len] = '\0';
    dash = strchr(buf, '-');
    if (dash == NULL) {
        return 0;
    }
    *dash = '\0';
    *ms = strtoull(buf, &end, 10);
    if (*end != '\0') {
        return 0;
    }
    *seq = strtoull(dash + 1, &end, 10);
    return *end == '\0';
}

/* Reads the stream entries of an XREAD reply into the index; the count
 * of entries the reply had. */
static size_t
sem_ingest(cache_t *c, const mf_redis_reply_t *reply)
{
    const mf_redis_reply_t *entries;
    size_t i, j;

    if (reply->type != MF_REDIS_ARRAY || reply->nelements != 1 ||
        reply->elements[0].type != MF_REDIS_ARRAY ||
        reply->elements[0].nelements != 2 ||
        reply->elements[0].elements[1].type != MF_REDIS_ARRAY) {
        return 0; /* nil: nothing new */
    }
    entries = &reply->elements[0].elements[1];
    for (i = 0; i < entries->nelements; i++) {
        const mf_redis_reply_t *en = &entries->elements[i], *f;
        const mf_redis_reply_t *part = NULL, *key = NULL, *sig = NULL,
                               *vec = NULL;
        uint64_t ms, seq;
        int newer;

        if (en->type != MF_REDIS_ARRAY || en->nelements != 2 ||
            en->elements[0].type != MF_REDIS_STRING ||
            en->elements[1].type != MF_REDIS_ARRAY ||
            !sem_id(en->elements[0].str, &ms, &seq)) {
            continue;
        }
        f = &en->elements[1];
        for (j = 0; j + 1 < f->nelements; j += 2) {
            const mf_redis_reply_t *n = &f->elements[j], *v = n + 1;

            if (n->type != MF_REDIS_STRING || n->str.len != 1 ||
                v->type != MF_REDIS_STRING) {
                continue;
            }
            switch (n->str.data[0]) {
            case 'p':
                part = v;
                break;
            case 'k':
                key = v;
                break;
            case 's':
                sig = v;
                break;
            case 'v':
                vec = v;
                break;
            default:
                break;
            }
        }
        pthread_mutex_lock(&c->sem_lock);
        newer = ms > c->sem_last_ms ||
                (ms == c->sem_last_ms && seq > c->sem_last_seq);
        if (newer) {
            c->sem_last_ms = ms;
            c->sem_last_seq = seq;
        }
        pthread_mutex_unlock(&c->sem_lock);
        if (newer && part != NULL && part->str.len == SI_PART_LEN &&
            key != NULL && key->str.len == SI_KEY_LEN && sig != NULL &&
            vec != NULL && vec->str.len > 0 &&
            vec->str.len % sizeof(float) == 0 &&
            vec->str.len / sizeof(float) <= 65536) {
            char k[SI_KEY_LEN + 1], *s = malloc(sig->str.len + 1);
            float *v = malloc(vec->str.len);

            if (s != NULL && v != NULL) {
                memcpy(k, key->str.data, SI_KEY_LEN);
                k[SI_KEY_LEN] = '\0';
                memcpy(s, sig->str.data, sig->str.len);
                s[sig->str.len] = '\0';
                memcpy(v, vec->str.data, vec->str.len);
                si_put(c->sem, (const uint8_t *)part->str.data, v,
                       (int)(vec->str.len / sizeof(float)), s, k);
            }
            free(s);
            free(v);
        }
    }
    return entries->nelements;
}

/* The index, fed, answers: a near question's entry is fetched from
 * Redis (MF_PAUSE), or the miss. */
static mf_action_t
sem_match(mf_req_t *r, rctx_t *x)
{
    if (si_find(x->c->sem, x->part, x->vec, x->dim, x->sig, x->c->sem_threshold,
                x->sem_key, &x->similarity)) {
        x->sem_fetch = 1;
        return redis_lookup(r, x, x->sem_key);
    }
    return miss(r, x);
}

static mf_action_t sem_sync(mf_req_t *r, rctx_t *x);

static void
sem_synced(mf_req_t *r, void *arg, const mf_redis_reply_t *reply,
           const char *err)
{
    rctx_t *x = arg;
    mf_action_t act;

    if (err != NULL) {
        /* the index as it is: a near question read before may answer */
        api->log(MF_LOG_WARN, "cache: reading the semantic stream failed (%s)",
                 err);
        act = sem_match(r, x);
    } else if (sem_ingest(x->c, reply) == SEM_READ &&
               x->sem_rounds < SEM_ROUNDS) {
        act = sem_sync(r, x);
    } else {
        act = sem_match(r, x);
    }
    if (act != MF_PAUSE) {
        api->resume(r, act);
    }
}

/* Reads what other nodes (and this one's other workers) added to the
 * stream since the last read (MF_PAUSE), then matches. */
static mf_action_t
sem_sync(mf_req_t *r, rctx_t *x)
{
    char nread[16], from[48];
    mf_str_t av[6];

    pthread_mutex_lock(&x->c->sem_lock);
    snprintf(from, sizeof(from), "%llu-%llu",
             (unsigned long long)x->c->sem_last_ms,
             (unsigned long long)x->c->sem_last_seq);
    pthread_mutex_unlock(&x->c->sem_lock);
    snprintf(nread, sizeof(nread), "%d", SEM_READ);
    av[0] = MF_STR("XREAD");
    av[1] = MF_STR("COUNT");
    av[2] = (mf_str_t){nread, strlen(nread)};
    av[3] = MF_STR("STREAMS");
    av[4] = MF_STR(SEM_STREAM);
    av[5] = (mf_str_t){from, strlen(from)};
    x->sem_rounds++;
    if (api->redis_command(r, 6, av, sem_synced, x) != MF_OK) {
        return sem_match(r, x);
    }
    return MF_PAUSE;
}

/*
 * Coalescing across nodes (Redis, coalesce_wait > 0). A node's leader of
 * a flight (coalescing.. above) first takes the key's lock, SET
 * mf:cache:l:KEY NX PX coalesce_wait. Taken: it calls the upstream, its
 * answer is stored as any (SET at on_log) and the lock let go at on_done
 * (after the SET, on the same connection; only its own, by its token).
 * Held by another node's request: it waits, reading the entry and the
 * lock every REMOTE_POLL_MS (one MGET): the entry answers it and its
 * own node's followers; the lock gone without an entry (that leader's
 * answer could not be stored: an error, a cut, a timeout) or
 * coalesce_wait passed, it makes its own call.
 *
 * Live events across nodes: a lock holder that streams adds each event
 * to the stream mf:cache:s:KEY as it arrives (XADD, not waiting on the
 * reply; a failover's restart as an "r" field), which expires with the
 * lock and is deleted with it. A waiting stream request reads what came
 * (XREAD from the last id, without blocking: the worker's connection is
 * shared) before each MGET, into its flight, and sends it as a follower
 * does: its node's followers get the same events. When the entry comes,
 * a stream under way ends with the entry's events past those relayed;
 * when the lock goes without one, it ends with the cut's error event.
 */
#define REMOTE_POLL_MS 10
/* The most relayed events one poll reads. */
#define RELAY_READ "512"

/* A lock holder's stream event (or restart) for other nodes' requests. */
static void
relay_event(mf_req_t *r, rctx_t *x, mf_str_t data, int restart)
{
    char px[32];
    mf_str_t av[5];

    av[0] = MF_STR("XADD");
    av[1] = rkey(r, "s:", x->key, NULL);
    av[2] = MF_STR("*");
    av[3] = restart ? MF_STR("r") : MF_STR("d");
    av[4] = restart ? MF_STR("") : data;
    if (api->redis_post(r, 5, av, NULL, NULL) != MF_OK || x->relayed) {
        return;
    }
    x->relayed = 1; /* the stream lives no longer than the lock */
    snprintf(px, sizeof(px), "%lld", (long long)x->c->coalesce_wait_ms);
    av[0] = MF_STR("PEXPIRE");
    av[2] = (mf_str_t){px, strlen(px)};
    api->redis_post(r, 3, av, NULL, NULL);
}

/* The miss goes to the upstream (a leader's call, counted). */
static mf_action_t
upstream(rctx_t *x)
{
    atomic_fetch_add(&x->c->misses, 1);
    count(x->c, "miss");
    return MF_CONTINUE;
}

static void remote_poll(mf_req_t *r, void *arg, const char *err);

/* The other node's answer will not come (its leader failed, the wait
 * ended, Redis failed): a stream that began here with its relayed events
 * ends with the cut's error event (as do its node's followers that
 * began: the flight failed); else this request calls. */
static void
remote_fail(mf_req_t *r, rctx_t *x)
{
    flight_t *f = x->flight;

    pthread_mutex_lock(&x->c->flock);
    if (f->emitted) {
        f->state = FLIGHT_FAILED;
    } else {
        while (f->nevents > 0) {
            free((char *)f->events[--f->nevents].data.data);
        }
    }
    pthread_mutex_unlock(&x->c->flock);
    if (x->started) {
        follow_cut(r);
        api->resume(r, MF_RESPOND);
        return;
    }
    api->resume(r, upstream(x));
}

/* The entry came while its events were relayed and some sent here: the
 * flight goes on with the entry's events past those relayed (the same
 * sequence: both are the answer's recorded events). 0 when nothing was
 * sent (the entry answers as any). */
static int
remote_relayed(rctx_t *x, const cs_entry_t *e)
{
    flight_t *f = x->flight;
    int sent;

    pthread_mutex_lock(&x->c->flock);
    sent = f->emitted;
    if (sent && f->state == FLIGHT_RUNNING) {
        if (!e->stream || f->nevents > e->nevents) {
            f->state = FLIGHT_FAILED; /* not the answer relayed */
        }
        while (f->state == FLIGHT_RUNNING && f->nevents < e->nevents) {
            flight_add(f, e->events[f->nevents].data, 0);
        }
    }
    pthread_mutex_unlock(&x->c->flock);
    return sent;
}

/* The entry and the lock, read while another node's request calls. */
static void
remote_got(mf_req_t *r, void *arg, const mf_redis_reply_t *reply,
           const char *err)
{
    rctx_t *x = arg;
    cache_t *c = x->c;
    cs_entry_t *e = NULL;
    mf_action_t act;
    int done;

    if (err != NULL || reply->type != MF_REDIS_ARRAY || reply->nelements != 2) {
        remote_fail(r, x);
        return;
    }
    if (reply->elements[0].type == MF_REDIS_STRING) {
        e = entry_decode(c, x->key, reply->elements[0].str);
    }
    if (e != NULL && remote_relayed(x, e)) {
        /* the streams under way here end with the entry's last events */
        flight_end(c, x, e);
        x->store = 0;
        pthread_mutex_lock(&c->flock);
        done = x->flight->state == FLIGHT_DONE;
        if (done) {
            follow_events(r, x, x->flight);
        }
        pthread_mutex_unlock(&c->flock);
        if (done || x->started) {
            if (!done) {
                follow_cut(r); /* a failover took back events sent */
            }
            cs_entry_release(e);
            api->resume(r, MF_RESPOND);
            return;
        }
        follower_headers(r, x); /* this one sent nothing: the entry */
        act = answer(r, x, e, x->stream);
        if (act != MF_PAUSE) {
            api->resume(r, act);
        }
        return;
    }
    if (e != NULL) {
        /* the other node's answer: for this one and its followers here */
        pthread_mutex_lock(&c->flock);
        x->flight->stream = 0; /* they answer from the entry */
        pthread_mutex_unlock(&c->flock);
        flight_end(c, x, e);
        x->store = 0;
        follower_headers(r, x);
        act = answer(r, x, e, x->stream);
        if (act != MF_PAUSE) {
            api->resume(r, act);
        }
        return;
    }
    if (reply->elements[1].type != MF_REDIS_STRING ||
        now_ms() >= x->wait_until ||
        api->timer(r, REMOTE_POLL_MS, remote_poll, x) != MF_OK) {
        remote_fail(r, x); /* gone unstored, or waited enough */
    }
}

static void
remote_mget(mf_req_t *r, rctx_t *x)
{
    mf_str_t av[3];

    av[0] = MF_STR("MGET");
    av[1] = rkey(r, "e:", x->key, NULL);
    av[2] = rkey(r, "l:", x->key, NULL);
    if (api->redis_command(r, 3, av, remote_got, x) != MF_OK) {
        remote_fail(r, x);
    }
}

/* The events relayed since the last read (XREAD's reply: nil, or
 * [[key, [[id, [field, value]], ...]]]), into the flight; sent. */
static void
relay_got(mf_req_t *r, void *arg, const mf_redis_reply_t *reply,
          const char *err)
{
    rctx_t *x = arg;
    cache_t *c = x->c;
    flight_t *f = x->flight;
    const mf_redis_reply_t *evs = NULL;
    size_t i;
    int cut;

    if (err != NULL) {
        remote_fail(r, x);
        return;
    }
    if (reply->type == MF_REDIS_ARRAY && reply->nelements == 1 &&
        reply->elements[0].type == MF_REDIS_ARRAY &&
        reply->elements[0].nelements == 2 &&
        reply->elements[0].elements[1].type == MF_REDIS_ARRAY) {
        evs = &reply->elements[0].elements[1];
    }
    pthread_mutex_lock(&c->flock);
    for (i = 0; evs != NULL && i < evs->nelements; i++) {
        const mf_redis_reply_t *ev = &evs->elements[i], *fv;

        if (ev->type != MF_REDIS_ARRAY || ev->nelements != 2 ||
            ev->elements[0].type != MF_REDIS_STRING ||
            ev->elements[0].str.len >= sizeof(x->sid) ||
            ev->elements[1].type != MF_REDIS_ARRAY ||
            ev->elements[1].nelements != 2 ||
            ev->elements[1].elements[0].type != MF_REDIS_STRING ||
            ev->elements[1].elements[1].type != MF_REDIS_STRING) {
            break;
        }
        memcpy(x->sid, ev->elements[0].str.data, ev->elements[0].str.len);
        x->sid[ev->elements[0].str.len] = '\0';
        fv = ev->elements[1].elements;
        flight_add(f, fv[1].str,
                   fv[0].str.len == 1 && fv[0].str.data[0] == 'r');
    }
    if (f->state == FLIGHT_RUNNING) {
        follow_events(r, x, f);
    }
    cut = f->state == FLIGHT_FAILED && x->started;
    pthread_mutex_unlock(&c->flock);
    if (cut) {
        follow_cut(r); /* a failover took back events sent */
        api->resume(r, MF_RESPOND);
        return;
    }
    remote_mget(r, x);
}

static void
remote_poll(mf_req_t *r, void *arg, const char *err)
{
    rctx_t *x = arg;
    mf_str_t av[6];

    if (err != NULL) {
        remote_fail(r, x);
        return;
    }
    if (!x->stream) {
        remote_mget(r, x);
        return;
    }
    av[0] = MF_STR("XREAD");
    av[1] = MF_STR("COUNT");
    av[2] = MF_STR(RELAY_READ);
    av[3] = MF_STR("STREAMS");
    av[4] = rkey(r, "s:", x->key, NULL);
    av[5] = (mf_str_t){x->sid, strlen(x->sid)};
    if (api->redis_command(r, 6, av, relay_got, x) != MF_OK) {
        remote_fail(r, x);
    }
}

static void
lock_got(mf_req_t *r, void *arg, const mf_redis_reply_t *reply, const char *err)
{
    rctx_t *x = arg;

    if (err == NULL && reply->type == MF_REDIS_STATUS) {
        x->locked = 1; /* +OK: this request calls */
    } else if (err == NULL && reply->type == MF_REDIS_NIL) {
        x->wait_until = now_ms() + x->c->coalesce_wait_ms;
        strcpy(x->sid, "0"); /* the relayed events from the first */
        if (api->timer(r, REMOTE_POLL_MS, remote_poll, x) == MF_OK) {
            return;
        }
    }
    api->resume(r, upstream(x));
}

/* A node's leader takes the key's lock (MF_PAUSE), or calls. */
static mf_action_t
remote_lock(mf_req_t *r, rctx_t *x)
{
    static atomic_ullong seq;
    char px[32];
    mf_str_t av[6];

    snprintf(x->token, sizeof(x->token), "%ld-%llu-%lld", (long)getpid(),
             (unsigned long long)atomic_fetch_add(&seq, 1),
             (long long)now_ms());
    snprintf(px, sizeof(px), "%lld", (long long)x->c->coalesce_wait_ms);
    av[0] = MF_STR("SET");
    av[1] = rkey(r, "l:", x->key, NULL);
    av[2] = (mf_str_t){x->token, strlen(x->token)};
    av[3] = MF_STR("NX");
    av[4] = MF_STR("PX");
    av[5] = (mf_str_t){px, strlen(px)};
    if (api->redis_command(r, 6, av, lock_got, x) != MF_OK) {
        return upstream(x);
    }
    return MF_PAUSE;
}

/* Lets the key's lock go, when it is still this request's. */
static void
remote_unlock(mf_req_t *r, rctx_t *x)
{
    mf_str_t av[6];

    av[0] = MF_STR("EVAL");
    av[1] = MF_STR("if redis.call('get', KEYS[1]) == ARGV[1] then return "
                   "redis.call('del', KEYS[1], KEYS[2]) end return 0");
    av[2] = MF_STR("2");
    av[3] = rkey(r, "l:", x->key, NULL);
    av[4] = rkey(r, "s:", x->key, NULL);
    av[5] = (mf_str_t){x->token, strlen(x->token)};
    api->redis_post(r, 6, av, NULL, NULL);
    x->locked = 0;
}

/* Stages */

/* The semantic layer */

/* Whether the request may be answered by a near question: no tools, no
 * parts but text (no images, audio, files), a temperature at most the
 * bound, a last message from the user with text. Sets x->question, its
 * guard signature and the partition. */
static int
semantic_eligible(mf_req_t *r, rctx_t *x, mf_str_t text)
{
    mf_str_t v;
    json_t *msgs, *m, *last, *content, *part;
    size_t i, j, len = 0;
    const char *role;
    char *q;
    int ok = 1;

    if ((api->get_body_field(r, MF_STR("tools"), &v) == MF_OK &&
         !(v.len == 2 && memcmp(v.data, "[]", 2) == 0) &&
         !(v.len == 4 && memcmp(v.data, "null", 4) == 0)) ||
        api->get_body_field(r, MF_STR("functions"), &v) == MF_OK) {
        return 0;
    }
    if (api->get_body_field(r, MF_STR("temperature"), &v) == MF_OK) {
        char num[32];

        if (v.len >= sizeof(num)) {
            return 0;
        }
        memcpy(num, v.data, v.len);
        num[v.len] = '\0';
        if (!(strtod(num, NULL) <= x->c->sem_max_temp)) {
            return 0;
        }
    }
    if (api->get_body_field(r, MF_STR("messages"), &v) != MF_OK ||
        (msgs = json_loadb(v.data, v.len, 0, NULL)) == NULL) {
        return 0;
    }
    json_array_foreach(msgs, i, m)
    {
        content = json_object_get(m, "content");
        json_array_foreach(content, j, part)
        {
            const char *t = json_string_value(json_object_get(part, "type"));

            if (t == NULL || strcmp(t, "text") != 0 ||
                !json_is_string(json_object_get(part, "text"))) {
                ok = 0; /* an image, audio, a file */
            } else {
                len += json_string_length(json_object_get(part, "text")) + 1;
            }
        }
    }
    last = json_array_get(msgs, json_array_size(msgs) - 1);
    role = json_string_value(json_object_get(last, "role"));
    content = json_object_get(last, "content");
    if (!ok || role == NULL || strcmp(role, "user") != 0 ||
        (!json_is_string(content) && !json_is_array(content))) {
        json_decref(msgs);
        return 0;
    }
    if (json_is_string(content)) {
        len = json_string_length(content) + 1;
    }
    q = api->palloc(r, len + 1);
    if (q == NULL) {
        json_decref(msgs);
        return 0;
    }
    if (json_is_string(content)) {
        memcpy(q, json_string_value(content), json_string_length(content));
        len = json_string_length(content);
    } else {
        len = 0;
        json_array_foreach(content, j, part)
        {
            json_t *t = json_object_get(part, "text");

            /* cppcheck-suppress knownConditionTrueFalse */
            if (len > 0) { /* not the first part (the loop is a macro) */
                q[len++] = '\n';
            }
            memcpy(q + len, json_string_value(t), json_string_length(t));
            len += json_string_length(t);
        }
    }
    q[len] = '\0';
    json_decref(msgs);
    if (len == 0) {
        return 0;
    }
    x->question = q;
    {
        char *sig = si_guard_sig(q, len);

        x->sig = sig != NULL ? pstrndup(r, sig, strlen(sig)) : NULL;
        free(sig);
    }
    return x->sig != NULL && key_of(r, x, text, 1) == MF_OK;
}

/* The embeddings answer: its first vector into x->vec (request memory),
 * or MF_ERR. */
static int
semantic_vector(rctx_t *x, mf_str_t body)
{
    json_t *j = json_loadb(body.data, body.len, 0, NULL), *emb, *num;
    size_t i, n;

    emb = json_object_get(json_array_get(json_object_get(j, "data"), 0),
                          "embedding");
    n = json_array_size(emb);
    if (n == 0 || n > 65536 ||
        (x->vec = api->palloc(x->r, n * sizeof(float))) == NULL) {
        json_decref(j);
        return MF_ERR;
    }
    json_array_foreach(emb, i, num)
    {
        if (!json_is_number(num)) {
            json_decref(j);
            return MF_ERR;
        }
        x->vec[i] = (float)json_number_value(num);
    }
    x->dim = (int)n;
    json_decref(j);
    return MF_OK;
}

/* The embeddings call's answer: a near question's entry answers, else
 * the miss (which indexes the answer when it is stored). A failure or a
 * timeout is a miss too (fail open), counted. */
static void
semantic_got(mf_req_t *r, void *arg, const mf_http_result_t *res,
             const char *err)
{
    rctx_t *x = arg;
    cache_t *c = x->c;
    cs_entry_t *e = NULL;
    char key[SI_KEY_LEN + 1];
    mf_action_t act;

    if (err != NULL || res->status != 200 ||
        semantic_vector(x, res->body) != MF_OK) {
        atomic_fetch_add(&c->sem_failures, 1);
        api->log(MF_LOG_WARN,
                 "cache: the semantic layer's embeddings call failed (%s); "
                 "answered as a miss",
                 err != NULL          ? err
                 : res->status != 200 ? "an error status"
                                      : "no embedding in the answer");
        x->vec = NULL;
    } else if (c->redis) {
        act = sem_sync(r, x); /* fed from the stream first */
        if (act != MF_PAUSE) {
            api->resume(r, act);
        }
        return;
    } else if (si_find(c->sem, x->part, x->vec, x->dim, x->sig,
                       c->sem_threshold, key, &x->similarity)) {
        e = cs_store_get(c->store, key, now_ms());
        if (e == NULL) {
            si_remove(c->sem, key); /* its answer expired or was evicted */
        } else if (x->max_age >= 0 &&
                   (now_ms() - e->created_ms) / 1000 > x->max_age) {
            cs_entry_release(e);
            e = NULL;
        }
    }
    if (e != NULL) {
        x->semantic = 1;
        act = answer(r, x, e, x->stream);
    } else {
        act = miss(r, x);
    }
    if (act != MF_PAUSE) {
        api->resume(r, act);
    }
}

/* Embeds the question (MF_PAUSE), or the miss when the call cannot be
 * made. */
static mf_action_t
semantic_lookup(mf_req_t *r, rctx_t *x)
{
    cache_t *c = x->c;
    mf_model_call_t call = {.size = sizeof(call)};
    json_t *body =
        json_pack("{s:s,s:s}", "model", c->sem_model, "input", x->question);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc;

    json_decref(body);
    if (text == NULL) {
        return miss(r, x);
    }
    call.kind = MF_MODEL_EMBEDDINGS;
    call.body = (mf_str_t){text, strlen(text)};
    if (c->sem_provider != NULL) {
        call.provider = (mf_str_t){c->sem_provider, strlen(c->sem_provider)};
    }
    call.timeout_ms = (uint64_t)c->sem_timeout_ms;
    rc = api->model_call(r, &call, semantic_got, x);
    free(text);
    if (rc != MF_OK) {
        atomic_fetch_add(&c->sem_failures, 1);
        return miss(r, x);
    }
    return MF_PAUSE;
}

static mf_action_t
cache_on_route(mf_req_t *r, void *state, void **ctx)
{
    cache_t *c = state;
    mf_req_info_t info = {.size = sizeof(info)};
    mf_str_t v, model, text;
    rctx_t *x;
    cs_entry_t *e;
    int64_t max_age = -1;
    int no_store = 0, no_cache = 0, bypass = 0;

    api->get_info(r, &info);
    if (info.endpoint != MF_ENDPOINT_CHAT &&
        info.endpoint != MF_ENDPOINT_MESSAGES) {
        return MF_CONTINUE;
    }
    x = api->palloc(r, sizeof(*x));
    if (x == NULL) {
        return MF_CONTINUE;
    }
    memset(x, 0, sizeof(*x));
    x->r = r;
    x->c = c;
    *ctx = x;
    if (c->client_controls) {
        if (api->get_header(r, MF_REQUEST_HEADERS, MF_STR("cache-control"),
                            &v) == MF_OK) {
            no_store = cc_has(v, "no-store", NULL);
            no_cache = cc_has(v, "no-cache", NULL);
            cc_has(v, "max-age", &max_age);
        }
        if (api->get_header(r, MF_REQUEST_HEADERS, MF_STR("x-cache-control"),
                            &v) == MF_OK) {
            bypass = v.len == 6 && strncasecmp(v.data, "bypass", 6) == 0;
            no_cache |= v.len == 7 && strncasecmp(v.data, "refresh", 7) == 0;
        }
    }
    /* what the cache does not serve: several choices */
    if (bypass || api->get_body_text(r, &text) != MF_OK ||
        (api->get_body_field(r, MF_STR("n"), &v) == MF_OK &&
         !(v.len == 1 && v.data[0] == '1'))) {
        x->status = ST_BYPASS;
        set_status(r, "bypass");
        atomic_fetch_add(&c->bypasses, 1);
        count(c, "bypass");
        return MF_CONTINUE;
    }
    model = api->get_model(r);
    x->model = pstrndup(r, model.data, model.len);
    x->scope = scope_of(r, c);
    if (api->get_body_field(r, MF_STR("stream_options"), &v) == MF_OK) {
        json_t *so = json_loadb(v.data, v.len, 0, NULL);

        x->want_usage = json_is_true(json_object_get(so, "include_usage"));
        json_decref(so);
    }
    if (x->model == NULL || x->scope == NULL ||
        key_of(r, x, text, 0) != MF_OK) {
        return MF_CONTINUE;
    }
    x->stream = info.stream;
    x->max_age = max_age;
    x->store = !no_store; /* a miss's answer is stored (see miss) */
    if (c->redis) {
        x->text = text;
        return no_cache ? miss(r, x) : redis_lookup(r, x, x->key);
    }
    if (!no_cache && (e = cs_store_get(c->store, x->key, now_ms())) != NULL) {
        if (max_age < 0 || (now_ms() - e->created_ms) / 1000 <= max_age) {
            return answer(r, x, e, info.stream);
        }
        cs_entry_release(e);
    }
    if (c->sem != NULL && !no_cache && semantic_eligible(r, x, text)) {
        return semantic_lookup(r, x);
    }
    return miss(r, x);
}

/* Not in the cache: the upstream is asked (or the flight in the air
 * followed) and the answer recorded to be stored. */
static mf_action_t
miss(mf_req_t *r, rctx_t *x)
{
    mf_action_t act;

    x->status = ST_MISS;
    set_status(r, "miss");
    if (x->store) {
        api->record_answer(r);
    }
    act = flight_join(r, x, x->stream);
    if (act == MF_CONTINUE && x->leader && x->c->redis &&
        x->c->coalesce_wait_ms > 0) {
        return remote_lock(r, x); /* counted when it calls */
    }
    if (x->flight == NULL || x->leader) {
        atomic_fetch_add(&x->c->misses, 1); /* a follower: coalesced */
        count(x->c, "miss");
    }
    return act;
}

/* finish_reason of a choice: stop or tool_calls make an answer whole. */
static int
whole_finish(const json_t *fr)
{
    const char *s = json_string_value(fr);

    return s != NULL &&
           (strcmp(s, "stop") == 0 || strcmp(s, "tool_calls") == 0);
}

/* A stream answer's events, flagged; NULL when it did not end whole. */
static cs_event_t *
stream_events(mf_req_t *r, size_t *n)
{
    size_t cap = 16, i;
    cs_event_t *ev = malloc(cap * sizeof(*ev));
    int whole = 0;
    mf_str_t d;

    if (ev == NULL) {
        return NULL;
    }
    for (i = 0; api->get_answer_event(r, i, &d) == MF_OK; i++) {
        json_t *ch = json_loadb(d.data, d.len, 0, NULL);
        json_t *choices = json_object_get(ch, "choices");
        json_t *c0 = json_array_get(choices, 0);

        if (ch == NULL) {
            free(ev);
            return NULL;
        }
        if (i == cap) {
            cs_event_t *bigger = realloc(ev, 2 * cap * sizeof(*ev));

            if (bigger == NULL) {
                json_decref(ch);
                free(ev);
                return NULL;
            }
            ev = bigger;
            cap *= 2;
        }
        ev[i].data = d;
        ev[i].flags = json_array_size(choices) == 0 &&
                              json_is_object(json_object_get(ch, "usage"))
                          ? CS_EV_USAGE
                          : 0;
        whole |= whole_finish(json_object_get(c0, "finish_reason"));
        json_decref(ch);
    }
    if (!whole || i == 0) {
        free(ev);
        return NULL;
    }
    *n = i;
    return ev;
}

/* The entry of a whole answer (a 200 the upstream finished, with its
 * usage), or NULL. */
static cs_entry_t *
entry_of(mf_req_t *r, const cache_t *c, const rctx_t *x)
{
    mf_req_info_t info = {.size = sizeof(info)};
    cs_entry_t *e = NULL;
    int64_t now = now_ms();

    api->get_info(r, &info);
    if (info.status != 200 || info.error.len > 0 || info.usage.estimated ||
        info.usage.prompt_tokens < 0 || info.usage.completion_tokens < 0 ||
        info.cached) {
        return NULL;
    }
    if (info.stream) {
        size_t n = 0;
        cs_event_t *ev = stream_events(r, &n);

        if (ev == NULL) {
            return NULL;
        }
        e = cs_entry_new(x->key, x->scope, x->model, now, now + c->ttl_ms,
                         &info.usage, 1, MF_STR_NULL, ev, n);
        free(ev);
    } else {
        json_t *a = api->get_answer(r);
        json_t *c0 = json_array_get(json_object_get(a, "choices"), 0);
        char *t = whole_finish(json_object_get(c0, "finish_reason"))
                      ? json_dumps(a, JSON_COMPACT)
                      : NULL;

        json_decref(a);
        if (t == NULL) {
            return NULL;
        }
        e = cs_entry_new(x->key, x->scope, x->model, now, now + c->ttl_ms,
                         &info.usage, 0, (mf_str_t){t, strlen(t)}, NULL, 0);
        free(t);
    }
    if (e != NULL && e->bytes > c->max_entry) {
        cs_entry_release(e);
        e = NULL;
    }
    return e;
}

static void
cache_on_log(mf_req_t *r, void *state, void **ctx)
{
    cache_t *c = state;
    rctx_t *x = *ctx;
    cs_entry_t *e;

    if (x == NULL || (!x->store && !x->leader)) {
        return;
    }
    e = entry_of(r, c, x);
    if (x->leader) {
        flight_end(c, x, e); /* the followers get it, stored or not */
    }
    if (e == NULL) {
        return;
    }
    if (!x->store) {
        cs_entry_release(e);
        return;
    }
    if (c->redis) {
        redis_store(r, c, e);
        if (c->sem != NULL && x->vec != NULL) {
            si_put(c->sem, x->part, x->vec, x->dim, x->sig, x->key);
            sem_publish(r, c, x); /* after the SET, on the same connection */
        }
        cs_entry_release(e);
        atomic_fetch_add(&c->stored, 1);
        return;
    }
    if (cs_store_put(c->store, e) == MF_OK) {
        atomic_fetch_add(&c->stored, 1);
        if (c->sem != NULL && x->vec != NULL) {
            si_put(c->sem, x->part, x->vec, x->dim, x->sig, x->key);
        }
    }
}

static void
cache_on_done(mf_req_t *r, void *state, void **ctx)
{
    cache_t *c = state;
    rctx_t *x = *ctx;

    if (x != NULL) {
        if (x->locked) {
            remote_unlock(r, x); /* after on_log's SET */
        }
        if (x->leader) {
            flight_end(c, x, NULL); /* no on_log: the followers go on */
        }
        flight_leave(c, x);
        cs_entry_release(x->hit);
        x->hit = NULL;
    }
    *ctx = NULL;
}

static const mf_plugin_t cache_plugin = {
    MF_PLUGIN_ABI,          .name = "cache",
    .version = "1.0.0",     .init = cache_init,
    .fini = cache_fini,     .on_route = cache_on_route,
    .on_log = cache_on_log, .on_done = cache_on_done,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &cache_plugin;
}
