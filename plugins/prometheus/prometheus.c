/*
 * prometheus: records each LLM request in the host's metrics registry at
 * on_log (requests, durations, time to first token, time per output
 * token, upstream attempts, gateway overhead, tokens by kind, stream
 * cuts, in flight) and serves the registry on the status listener
 * (GET /metrics: Prometheus text, or OpenMetrics with exemplars when the
 * scraper asks for it), with spend at the config's prices and the
 * upstreams' key health and circuit breakers read at each scrape.
 *
 * Labels are bounded by construction: `model` is a name a request was
 * routed with, admitted up to max_models (then "other"); `consumer` the
 * request's consumer name ("anonymous" without one), admitted up to
 * max_consumers (then "other"); the other labels come from the config
 * (provider) or small fixed sets. No key, address or user agent is a
 * label. The host caps every metric's series besides (status.max_series).
 *
 * config: { path: /metrics, max_models: 100, max_consumers: 100 }
 */
#include <manifold/plugin.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/price.h"

static const mf_host_api_t *api;

/* A set of names admitted up to a cap: probed without a lock (a slot is
 * published whole by a release store), added to under a lock. */
typedef struct {
    pthread_mutex_t lock;
    char **slots;
    size_t mask;
    size_t n;
    size_t cap;
} nameset_t;

enum {
    M_REQUESTS,
    M_DURATION,
    M_TTFT,
    M_TPOT,
    M_ATTEMPTS,
    M_ATTEMPT_DURATION,
    M_ATTEMPT_TTFB,
    M_OVERHEAD,
    M_TOKENS,
    M_CUTS,
    M_FALLBACKS,
    M_IN_FLIGHT,
    M_STREAMS_IN_FLIGHT,
    M_SPEND,
    M_UNPRICED,
    M_KEY_HEALTHY,
    M_BREAKER,
    M__COUNT
};

typedef struct {
    char *path;
    nameset_t models;
    nameset_t consumers;
    nameset_t providers; /* names from the config: ids for the cache */
    json_t *prices;      /* the config's prices:, or NULL */
    mf_metric_t *m[M__COUNT];
    int s_in_flight, s_streams_in_flight; /* their one series */
    uint64_t serial; /* this load's, for the per-worker series cache */
} prom_t;

/* Buckets: the OpenTelemetry GenAI conventions, extended for long
 * answers (operation duration up to ~330 s) and slow first tokens (60 s).
 */
static const double duration_buckets[] = {
    0.01, 0.02, 0.04,  0.08,  0.16,  0.32,  0.64,   1.28,
    2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84, 327.68};
static const double ttft_buckets[] = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
    0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 15.0, 30.0, 60.0};
static const double tpot_buckets[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                      0.3,  0.4,   0.5,  0.75,  1.0, 2.5};
static const double overhead_buckets[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  0.5,    1.0};

#define LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

typedef struct {
    mf_metric_type_t type;
    const char *name;
    const char *help;
    const char *const *labels;
    const double *buckets;
    size_t nbuckets;
} def_t;

#define HIST(b) (b), (sizeof(b) / sizeof((b)[0]))

static const def_t defs[M__COUNT] = {
    [M_REQUESTS] = {MF_METRIC_COUNTER, "manifold_requests_total",
                    "LLM requests answered, by route, model, provider, "
                    "consumer, stream, status class and error type",
                    LABELS("route", "model", "provider", "consumer", "stream",
                           "status_class", "error_type")},
    [M_DURATION] = {MF_METRIC_HISTOGRAM, "manifold_request_duration_seconds",
                    "Time from a request's first byte to its answer's last",
                    LABELS("route", "model", "provider", "stream"),
                    HIST(duration_buckets)},
    [M_TTFT] = {MF_METRIC_HISTOGRAM, "manifold_time_to_first_token_seconds",
                "Time from a stream request's start to its first event with "
                "answer text (not its first byte, not a role-only chunk)",
                LABELS("model", "provider"), HIST(ttft_buckets)},
    [M_TPOT] = {MF_METRIC_HISTOGRAM, "manifold_time_per_output_token_seconds",
                "Time per output token after the first, of a stream",
                LABELS("model", "provider"), HIST(tpot_buckets)},
    [M_ATTEMPTS] = {MF_METRIC_COUNTER, "manifold_upstream_attempts_total",
                    "Upstream attempts by provider and outcome",
                    LABELS("provider", "outcome")},
    [M_ATTEMPT_DURATION] = {MF_METRIC_HISTOGRAM,
                            "manifold_upstream_attempt_duration_seconds",
                            "Duration of each upstream attempt, from its "
                            "call's start to its end",
                            LABELS("provider"), HIST(duration_buckets)},
    [M_ATTEMPT_TTFB] = {MF_METRIC_HISTOGRAM,
                        "manifold_upstream_time_to_first_byte_seconds",
                        "Time from each upstream attempt's start to the "
                        "upstream's answer head",
                        LABELS("provider"), HIST(ttft_buckets)},
    [M_OVERHEAD] = {MF_METRIC_HISTOGRAM, "manifold_gateway_overhead_seconds",
                    "Time a request spent in the gateway: its duration less "
                    "the time in upstream attempts",
                    LABELS("route"), HIST(overhead_buckets)},
    [M_TOKENS] = {MF_METRIC_COUNTER, "manifold_tokens_total",
                  "Tokens by kind (input, output, cache_read, cache_write, "
                  "reasoning) and source (reported by the upstream, or "
                  "estimated)",
                  LABELS("model", "provider", "consumer", "kind", "source")},
    [M_CUTS] = {MF_METRIC_COUNTER, "manifold_stream_cuts_total",
                "Streams cut before their end, by who cut them",
                LABELS("model", "provider", "by")},
    [M_FALLBACKS] = {MF_METRIC_COUNTER, "manifold_fallbacks_total",
                     "Requests answered after more than one upstream attempt",
                     LABELS("model")},
    [M_IN_FLIGHT] = {MF_METRIC_GAUGE, "manifold_requests_in_flight",
                     "LLM requests being served", NULL},
    [M_STREAMS_IN_FLIGHT] = {MF_METRIC_GAUGE, "manifold_streams_in_flight",
                             "Stream requests being served", NULL},
    [M_SPEND] = {MF_METRIC_COUNTER, "manifold_spend_usd_total",
                 "Spend in USD at the config's prices, by model, provider "
                 "and consumer (requests of models without a price are in "
                 "manifold_unpriced_requests_total, not here)",
                 LABELS("model", "provider", "consumer")},
    [M_UNPRICED] = {MF_METRIC_COUNTER, "manifold_unpriced_requests_total",
                    "Requests with usage whose model has no price",
                    LABELS("model", "provider")},
    [M_KEY_HEALTHY] = {MF_METRIC_GAUGE, "manifold_upstream_key_healthy",
                       "Whether a provider key (by its index in the config, "
                       "never the key) takes requests: 1 ok, 0 resting, "
                       "quarantined or disabled",
                       LABELS("provider", "key_index")},
    [M_BREAKER] = {MF_METRIC_GAUGE, "manifold_circuit_breaker_state",
                   "A route target's circuit breaker: 1 for its state "
                   "(closed, open, half_open), 0 for the others",
                   LABELS("provider", "model", "state")},
};

static mf_str_t
cstr(const char *s)
{
    return (mf_str_t){s, strlen(s)};
}

/* Name sets */

static void
nameset_init(nameset_t *s, size_t cap)
{
    size_t slots = 4;

    while (slots < cap * 2) {
        slots <<= 1;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->slots = calloc(slots, sizeof(char *));
    s->mask = slots - 1;
    s->cap = cap;
    s->n = 0;
}

static void
nameset_free(nameset_t *s)
{
    size_t i;

    for (i = 0; s->slots != NULL && i <= s->mask; i++) {
        free(s->slots[i]);
    }
    free(s->slots);
    pthread_mutex_destroy(&s->lock);
}

static size_t
name_hash(mf_str_t v)
{
    size_t h = 14695981039346656037ull, i;

    for (i = 0; i < v.len; i++) {
        h = (h ^ (unsigned char)v.data[i]) * 1099511628211ull;
    }
    return h;
}

/* The slot holding v, or the empty slot where it would go (*found 0). */
static size_t
nameset_probe(nameset_t *s, mf_str_t v, int *found)
{
    size_t i = name_hash(v) & s->mask, k;

    for (k = 0; k <= s->mask; k++) {
        const char *have = __atomic_load_n(&s->slots[i], __ATOMIC_ACQUIRE);

        if (have == NULL) {
            *found = 0;
            return i;
        }
        if (strlen(have) == v.len && memcmp(have, v.data, v.len) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & s->mask;
    }
    *found = 0;
    return (size_t)-1;
}

/* v's id: its slot + 2 when it is in the set or now admitted, with
 * *name = v; 1 with *name = "other" when the set is full or v is not a
 * name to admit (empty, too long, or admit 0: only names already in the
 * set). A slot keeps its name for the set's life, so an id names one
 * value. */
static int
nameset_id(nameset_t *s, mf_str_t v, int admit, mf_str_t *name)
{
    size_t i;
    int found;
    char *copy;

    *name = MF_STR("other");
    if (v.len == 0 || v.len > 128 || s->slots == NULL) {
        return 1;
    }
    i = nameset_probe(s, v, &found);
    if (!found && admit) {
        pthread_mutex_lock(&s->lock);
        i = nameset_probe(s, v, &found);
        if (!found && i != (size_t)-1 && s->n < s->cap &&
            (copy = malloc(v.len + 1)) != NULL) {
            memcpy(copy, v.data, v.len);
            copy[v.len] = '\0';
            __atomic_store_n(&s->slots[i], copy, __ATOMIC_RELEASE);
            s->n++;
            found = 1;
        }
        pthread_mutex_unlock(&s->lock);
    }
    if (!found) {
        return 1;
    }
    *name = v;
    return (int)i + 2;
}

/* Recording */

static int
path_starts(mf_str_t path, const char *prefix)
{
    size_t n = strlen(prefix);

    return path.len >= n && memcmp(path.data, prefix, n) == 0;
}

/* The API a request came for: a small fixed set. */
static const char *
route_of(const mf_req_info_t *i)
{
    switch (i->endpoint) {
    case MF_ENDPOINT_CHAT:
        return path_starts(i->path, "/v1/messages")    ? "messages"
               : path_starts(i->path, "/v1/responses") ? "responses"
                                                       : "chat";
    case MF_ENDPOINT_EMBEDDINGS:
        return "embeddings";
    case MF_ENDPOINT_MESSAGES:
        return "messages";
    case MF_ENDPOINT_LOCAL:
        return "local"; /* model lists, count_tokens, stored Responses */
    default:
        return "other";
    }
}

/* A small fixed set: what the status tells of an error. */
static const char *
error_type_of(const mf_req_info_t *i, int cut)
{
    if (cut) {
        return "stream_cut";
    }
    switch (i->status) {
    case 400:
    case 405:
    case 413:
    case 431:
        return "invalid_request";
    case 401:
        return "authentication";
    case 403:
        return "permission";
    case 404:
        return "not_found";
    case 429:
        return "rate_limit";
    case 499:
        return "client_closed";
    case 502:
        return "upstream";
    case 503:
        return "unavailable";
    case 504:
        return "timeout";
    default:
        return i->status >= 500   ? "internal"
               : i->status >= 400 ? "invalid_request"
                                  : "none";
    }
}

/* The series cache. A worker keeps, for the label sets of recent
 * requests, the series numbers (api->metric_series) of every metric a
 * request writes, so that a request like one before it writes by number
 * without the registry's lookup of its labels. An entry is keyed by small
 * ids (the model's, provider's and consumer's slots in this load's name
 * sets, route, stream, status class, error type) and this load's serial;
 * a number is looked up on its first use (-2 until then; -1 over the
 * series cap, then the write goes by labels, dropped and counted). */
enum {
    S_REQUESTS,
    S_DURATION,
    S_OVERHEAD,
    S_FALLBACKS,
    S_TTFT,
    S_TPOT,
    S_CUT_CLIENT,
    S_CUT_UPSTREAM,
    S_SPEND,
    S_UNPRICED,
    S_TOKENS, /* kind * 2 + estimated */
    S__COUNT = S_TOKENS + 5 * 2
};

#define SC_SIZE 64 /* entries per worker */

typedef struct {
    uint64_t key; /* 0: empty */
    uint64_t serial;
    int s[S__COUNT];
} sc_entry_t;

/* attempts, by provider: duration, ttfb, then one per outcome */
static const char *const outcomes[] = {
    "ok",           "1xx",       "2xx",        "3xx",      "4xx",
    "429",          "5xx",       "timeout",    "connect",  "cut",
    "ttft_timeout", "abandoned", "bad_stream", "bad_body", "other"};
#define NOUT (sizeof(outcomes) / sizeof(outcomes[0]))

typedef struct {
    uint64_t key; /* provider id + 1, 0 empty */
    uint64_t serial;
    int dur, ttfb;
    int out[NOUT];
} ac_entry_t;

/* A worker's: the caches, and the last model, provider and consumer
 * names it saw with their ids (a request like the last one finds them
 * without the name sets' hashing). */
typedef struct {
    uint64_t serial;
    struct {
        int id;
        size_t len;
        char v[128];
    } last[3];
    sc_entry_t sc[SC_SIZE];
    ac_entry_t ac[16];
} tcache_t;

static __thread tcache_t tcache;
static uint64_t serials; /* loads so far (under the host's init order) */

/* What a request's series are made of. */
typedef struct {
    mf_str_t route, model, provider, consumer, stream, cls, err;
    int route_id, model_id, provider_id, consumer_id, stream_id, cls_id, err_id;
} labels_t;

static sc_entry_t *
sc_entry(prom_t *p, sc_entry_t *sc_cache, const labels_t *l)
{
    uint64_t key = (1ull << 63) | (uint64_t)l->route_id |
                   (uint64_t)l->stream_id << 3 | (uint64_t)l->cls_id << 4 |
                   (uint64_t)l->err_id << 8 | (uint64_t)l->model_id << 12 |
                   (uint64_t)l->provider_id << 28 |
                   (uint64_t)l->consumer_id << 44;
    sc_entry_t *e =
        &sc_cache[((key * 0x9E3779B97F4A7C15ull) >> 58) & (SC_SIZE - 1)];
    int k;

    if (e->key != key || e->serial != p->serial) {
        e->key = key;
        e->serial = p->serial;
        for (k = 0; k < S__COUNT; k++) {
            e->s[k] = -2;
        }
    }
    return e;
}

/* The series number in *slot, looked up with values on its first use. */
static int
series(mf_metric_t *m, int *slot, const mf_str_t *v, size_t n)
{
    if (*slot == -2) {
        *slot = api->metric_series(m, v, n);
    }
    return *slot;
}

static void
add(mf_metric_t *m, int *slot, const mf_str_t *v, size_t n, double x)
{
    if (series(m, slot, v, n) >= 0) {
        api->metric_add_at(m, *slot, x);
    } else {
        api->metric_add(m, v, n, x); /* over the cap: dropped, counted */
    }
}

static void
observe(mf_metric_t *m, int *slot, const mf_str_t *v, size_t n, double x,
        mf_str_t trace)
{
    if (series(m, slot, v, n) >= 0) {
        api->metric_observe_at(m, *slot, x, trace);
    } else {
        api->metric_observe(m, v, n, x, trace);
    }
}

static ac_entry_t *
ac_entry(prom_t *p, ac_entry_t *cache, int id)
{
    uint64_t key = (uint64_t)id + 1;
    ac_entry_t *e = &cache[key & 15];
    size_t k;

    if (e->key != key || e->serial != p->serial) {
        e->key = key;
        e->serial = p->serial;
        e->dur = e->ttfb = -2;
        for (k = 0; k < NOUT; k++) {
            e->out[k] = -2;
        }
    }
    return e;
}

/* An attempt: its outcome, duration and time to first byte. Statuses
 * fold into their class; words are a fixed set, but for a provider's own
 * error codes, which go by label. */
static void
record_attempt(prom_t *p, ac_entry_t *ac, mf_str_t provider,
               const mf_attempt_info_t *a, mf_str_t trace)
{
    mf_str_t out = a->outcome, v[2] = {provider, MF_STR_NULL};
    size_t o = NOUT;

    if (out.len == 3 && out.data[0] >= '1' && out.data[0] <= '5') {
        o = out.data[0] == '4' && out.data[1] == '2' && out.data[2] == '9' ? 5
            : out.data[0] == '5'                                           ? 6
                                 : (size_t)(out.data[0] - '1') + 1;
    } else {
        size_t k;

        /* "ok", nearly every attempt's, without a strlen per word */
        if (out.len == 2 && out.data[0] == 'o' && out.data[1] == 'k') {
            o = 0;
        }
        for (k = 1; o == NOUT && k < NOUT; k++) {
            if (strlen(outcomes[k]) == out.len &&
                memcmp(outcomes[k], out.data, out.len) == 0) {
                o = k;
            }
        }
    }
    if (out.len == 0) {
        /* still open: not in the counts */
    } else if (o < NOUT) {
        v[1] = cstr(outcomes[o]);
        add(p->m[M_ATTEMPTS], &ac->out[o], v, 2, 1);
    } else {
        v[1] = out.len <= 16 ? out : MF_STR("other");
        api->metric_add(p->m[M_ATTEMPTS], v, 2, 1);
    }
    if (a->duration_ms >= 0) {
        observe(p->m[M_ATTEMPT_DURATION], &ac->dur, v, 1, a->duration_ms / 1000,
                trace);
    }
    if (a->ttfb_ms >= 0) {
        observe(p->m[M_ATTEMPT_TTFB], &ac->ttfb, v, 1, a->ttfb_ms / 1000,
                trace);
    }
}

static void
record_tokens(prom_t *p, sc_entry_t *e, const labels_t *l, const mf_usage_t *u,
              int64_t cache_write)
{
    static const char *const kinds[] = {"input", "cache_read", "cache_write",
                                        "output", "reasoning"};
    mf_str_t v[5] = {l->model, l->provider, l->consumer, MF_STR_NULL,
                     u->estimated ? MF_STR("estimated") : MF_STR("reported")};
    int64_t cached = u->cached_tokens > 0 ? u->cached_tokens : 0;
    int64_t written = cache_write > 0 ? cache_write : 0;
    int64_t n[5] = {0};
    int k, est = u->estimated != 0;

    if (cached + written > u->prompt_tokens) {
        cached = written = 0; /* not a breakdown of the prompt */
    }
    if (u->prompt_tokens > 0) {
        n[0] = u->prompt_tokens - cached - written;
        n[0] = n[0] > 0 ? n[0] : -1; /* a zero is still written */
        n[1] = cached;
        n[2] = written;
    }
    if (u->completion_tokens > 0) {
        int64_t reasoning = u->reasoning_tokens > 0 ? u->reasoning_tokens : 0;

        n[3] = u->completion_tokens - reasoning;
        n[3] = n[3] > 0 ? n[3] : -1;
        n[4] = reasoning;
    }
    for (k = 0; k < 5; k++) {
        if (n[k] != 0) {
            v[3] = cstr(kinds[k]);
            add(p->m[M_TOKENS], &e->s[S_TOKENS + k * 2 + est], v, 5,
                n[k] > 0 ? (double)n[k] : 0);
        }
    }
}

static int in_flight_mark;

/* The models the config names exactly (the providers', the routes', the
 * stages' virtual models: the host's "models" section) and those it
 * prices by exact name hold their labels from the start, so a configured
 * model that fails from its first request is counted under its name (a
 * pattern is no name). Past max_models the rest are admitted as served. */
static void
prefill_models(prom_t *p)
{
    const json_t *names = api->config_section("models");
    const char *k;
    json_t *v;
    size_t j;
    mf_str_t name;

    json_array_foreach(names, j, v)
    {
        (void)nameset_id(&p->models, cstr(json_string_value(v)), 1, &name);
    }
    json_object_foreach(p->prices, k, v)
    {
        if (strpbrk(k, "*?[") == NULL) {
            (void)nameset_id(&p->models, cstr(k), 1, &name);
        }
    }
}

/* v's id in set, through the worker's memo of the last name of its kind */
static int
memo_id(prom_t *p, tcache_t *t, int kind, nameset_t *set, mf_str_t v, int admit,
        mf_str_t *name)
{
    int id;

    if (t->serial != p->serial) {
        memset(t->last, 0, sizeof(t->last));
        t->serial = p->serial;
    }
    if (v.len > 0 && v.len == t->last[kind].len &&
        memcmp(v.data, t->last[kind].v, v.len) == 0) {
        *name = v;
        return t->last[kind].id;
    }
    id = nameset_id(set, v, admit, name);
    if (id >= 2 && v.len <= sizeof(t->last[kind].v)) {
        memcpy(t->last[kind].v, v.data, v.len);
        t->last[kind].len = v.len;
        t->last[kind].id = id;
    }
    return id;
}

static mf_action_t
prom_on_request(mf_req_t *r, void *state, void **ctx)
{
    prom_t *p = state;
    mf_req_info_t i = {.size = sizeof(i)};

    /* the fields before the trace context: none is made here */
    i.size = offsetof(mf_req_info_t, trace_id);
    api->get_info(r, &i);
    *ctx = &in_flight_mark;
    api->metric_add_at(p->m[M_IN_FLIGHT], p->s_in_flight, 1);
    if (i.stream) {
        api->metric_add_at(p->m[M_STREAMS_IN_FLIGHT], p->s_streams_in_flight,
                           1);
    }
    return MF_CONTINUE;
}

static int
route_id(const char *route)
{
    static const char *const routes[] = {"chat",       "messages", "responses",
                                         "embeddings", "local",    "other"};
    int k;

    for (k = 0; k < 5 && routes[k] != route; k++) {
    }
    return k;
}

static int
error_id(const char *err)
{
    static const char *const errs[] = {
        "none",        "invalid_request", "authentication", "permission",
        "not_found",   "rate_limit",      "client_closed",  "upstream",
        "unavailable", "timeout",         "internal",       "stream_cut"};
    int k;

    for (k = 0; k < 11 && strcmp(errs[k], err) != 0; k++) {
    }
    return k;
}

static void
prom_on_log(mf_req_t *r, void *state, void **ctx)
{
    static const char *const classes[] = {"0xx", "1xx", "2xx", "3xx", "4xx",
                                          "5xx", "6xx", "7xx", "8xx", "9xx"};
    prom_t *p = state;
    mf_req_info_t i = {.size = sizeof(i)};
    mf_str_t trace, v[7];
    labels_t l;
    sc_entry_t *e;
    tcache_t *t = &tcache;
    const char *route, *err;
    int cut;
    double secs;

    api->get_info(r, &i);
    if (*ctx == &in_flight_mark) {
        api->metric_add_at(p->m[M_IN_FLIGHT], p->s_in_flight, -1);
        if (i.stream) {
            api->metric_add_at(p->m[M_STREAMS_IN_FLIGHT],
                               p->s_streams_in_flight, -1);
        }
        *ctx = NULL;
    }
    if (i.listener != MF_LISTENER_CLIENT || i.endpoint == MF_ENDPOINT_NONE) {
        return; /* scrapes, stage pages, health checks */
    }
    /* a model is a label once a request was routed with it; a name not
     * seen before takes one of max_models only when an upstream (or a
     * cache) answered it: names that fail (an unknown model a glob
     * provider took, a typo) never push a served model out */
    if (i.attempts > 0 || i.provider.len > 0) {
        l.model_id = memo_id(
            p, t, 0, &p->models, i.model,
            i.cached || (i.upstream_status >= 200 && i.upstream_status < 300),
            &l.model);
    } else {
        l.model_id = 1;
        l.model = MF_STR("other");
    }
    if (i.provider.len > 0) {
        l.provider_id =
            memo_id(p, t, 1, &p->providers, i.provider, 1, &l.provider);
    } else {
        l.provider_id = 0;
        l.provider = MF_STR("none");
    }
    if (i.consumer.len > 0) {
        l.consumer_id =
            memo_id(p, t, 2, &p->consumers, i.consumer, 1, &l.consumer);
    } else {
        l.consumer_id = 0;
        l.consumer = MF_STR("anonymous");
    }
    route = route_of(&i);
    l.route = cstr(route);
    l.route_id = route_id(route);
    l.stream_id = i.stream != 0;
    l.stream = i.stream ? MF_STR("true") : MF_STR("false");
    /* a stream that began (2xx) and ended with an error: cut */
    cut = i.stream && i.status < 400 && i.error.len > 0;
    l.cls_id = i.status / 100 % 10;
    l.cls = (mf_str_t){classes[l.cls_id], 3};
    err = error_type_of(&i, cut);
    l.err = cstr(err);
    l.err_id = error_id(err);
    /* the exemplars' trace: the request's (the client's traceparent's,
     * else the one the gateway made, which the otel stage exports and the
     * access log writes), unless the client's flags say not sampled */
    trace = i.trace_sampled ? i.trace_id : MF_STR_NULL;
    e = sc_entry(p, t->sc, &l);

    v[0] = l.route;
    v[1] = l.model;
    v[2] = l.provider;
    v[3] = l.consumer;
    v[4] = l.stream;
    v[5] = l.cls;
    v[6] = l.err;
    add(p->m[M_REQUESTS], &e->s[S_REQUESTS], v, 7, 1);

    v[3] = l.stream;
    observe(p->m[M_DURATION], &e->s[S_DURATION], v, 4, i.latency_ms / 1000,
            trace);
    secs = (i.latency_ms - i.upstream_ms) / 1000;
    observe(p->m[M_OVERHEAD], &e->s[S_OVERHEAD], v, 1, secs > 0 ? secs : 0,
            trace);

    if (i.attempts > 1 && i.status < 400) {
        add(p->m[M_FALLBACKS], &e->s[S_FALLBACKS], &l.model, 1, 1);
    }
    {
        mf_attempt_info_t a = {.size = sizeof(a)};
        ac_entry_t *cache = t->ac;
        size_t k;

        /* every attempt, failed-over ones too (no more than were
         * started: no call to learn that there is no next one) */
        for (k = 0;
             k < (size_t)i.attempts && api->get_attempt(r, k, &a) == MF_OK;
             k++) {
            mf_str_t pv;
            int id;

            /* the provider's name is the config's: the same bytes as
             * the request's provider when it is that one */
            if (a.provider.data == i.provider.data &&
                a.provider.len == i.provider.len) {
                id = l.provider_id;
                pv = l.provider;
            } else {
                id = memo_id(p, t, 1, &p->providers, a.provider, 1, &pv);
            }
            record_attempt(p, ac_entry(p, cache, id), pv, &a, trace);
        }
    }
    v[0] = l.model;
    v[1] = l.provider;
    if (i.stream && i.first_content_ms >= 0) {
        observe(p->m[M_TTFT], &e->s[S_TTFT], v, 2, i.first_content_ms / 1000,
                trace);
        if (i.usage.completion_tokens > 1 &&
            i.latency_ms > i.first_content_ms) {
            observe(p->m[M_TPOT], &e->s[S_TPOT], v, 2,
                    (i.latency_ms - i.first_content_ms) / 1000 /
                        (double)(i.usage.completion_tokens - 1),
                    trace);
        }
    }
    if (cut) {
        int by_client = i.bytes_undelivered > 0 ||
                        (i.error.len >= 17 &&
                         memcmp(i.error.data, "the client closed", 17) == 0);

        v[2] = by_client ? MF_STR("client") : MF_STR("upstream");
        add(p->m[M_CUTS], &e->s[by_client ? S_CUT_CLIENT : S_CUT_UPSTREAM], v,
            3, 1);
    }
    record_tokens(p, e, &l, &i.usage, i.cache_write_tokens);
    {
        int64_t micro = 0;
        int priced = price_request(p->prices, &i, &micro);

        v[0] = l.model;
        v[1] = l.provider;
        if (priced == 1) {
            v[2] = l.consumer;
            add(p->m[M_SPEND], &e->s[S_SPEND], v, 3, (double)micro / 1e6);
        } else if (priced == 0) {
            add(p->m[M_UNPRICED], &e->s[S_UNPRICED], v, 2, 1);
        }
    }
}

/* The upstreams' health as gauges, read when scraped. */
static void
record_health(prom_t *p)
{
    static const char *const states[] = {"closed", "open", "half_open"};
    json_t *h = api->upstream_health(), *e;
    size_t k, s;

    if (h == NULL) {
        return;
    }
    json_array_foreach(json_object_get(h, "keys"), k, e)
    {
        const char *prov = json_string_value(json_object_get(e, "provider"));
        const char *state = json_string_value(json_object_get(e, "state"));
        char idx[24];
        mf_str_t v[2];

        if (prov == NULL || state == NULL) {
            continue;
        }
        snprintf(idx, sizeof(idx), "%lld",
                 (long long)json_integer_value(json_object_get(e, "index")));
        v[0] = cstr(prov);
        v[1] = cstr(idx);
        api->metric_set(p->m[M_KEY_HEALTHY], v, 2,
                        strcmp(state, "ok") == 0 ? 1 : 0);
    }
    json_array_foreach(json_object_get(h, "targets"), k, e)
    {
        const char *prov = json_string_value(json_object_get(e, "provider"));
        const char *model = json_string_value(json_object_get(e, "model"));
        const char *br = json_string_value(json_object_get(e, "breaker"));
        mf_str_t v[3];

        if (prov == NULL || model == NULL || br == NULL) {
            continue;
        }
        v[0] = cstr(prov);
        v[1] = cstr(model);
        for (s = 0; s < 3; s++) {
            v[2] = cstr(states[s]);
            api->metric_set(p->m[M_BREAKER], v, 3,
                            strcmp(br, states[s]) == 0 ? 1 : 0);
        }
    }
    json_decref(h);
}

/* GET /metrics on the status listener. */
static mf_action_t
prom_serve(mf_req_t *r, void *state, void *arg)
{
    mf_str_t accept, out;
    int om;

    (void)arg;
    record_health(state);
    om = api->get_header(r, MF_REQUEST_HEADERS, MF_STR("accept"), &accept) ==
             MF_OK &&
         accept.len >= 24 &&
         memmem(accept.data, accept.len, "application/openmetrics-text", 28) !=
             NULL;
    if (api->metrics_render(r,
                            om ? MF_METRICS_OPENMETRICS : MF_METRICS_PROMETHEUS,
                            &out) != MF_OK) {
        return MF_FAIL;
    }
    api->respond(r, 200,
                 om ? "application/openmetrics-text; version=1.0.0; "
                      "charset=utf-8"
                    : "text/plain; version=0.0.4; charset=utf-8",
                 out);
    return MF_RESPOND;
}

static void prom_fini(void *state);

static int
prom_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    const char *path = json_string_value(json_object_get(conf, "path"));
    json_t *mm = json_object_get(conf, "max_models");
    json_t *mc = json_object_get(conf, "max_consumers");
    const char *key;
    json_t *val;
    prom_t *p;
    size_t k;

    api = host;
    if (api->abi_minor < 6) {
        api->log(MF_LOG_ERROR, "prometheus: needs a host with ABI 1.6");
        json_decref(conf);
        return MF_ERR;
    }
    json_object_foreach(conf, key, val)
    {
        if (strcmp(key, "path") != 0 && strcmp(key, "max_models") != 0 &&
            strcmp(key, "max_consumers") != 0) {
            api->log(MF_LOG_ERROR,
                     "prometheus: unknown config key '%s' (path, "
                     "max_models, max_consumers)",
                     key);
            json_decref(conf);
            return MF_ERR;
        }
    }
    if ((mm != NULL && (!json_is_integer(mm) || json_integer_value(mm) < 1 ||
                        json_integer_value(mm) > 10000)) ||
        (mc != NULL && (!json_is_integer(mc) || json_integer_value(mc) < 1 ||
                        json_integer_value(mc) > 10000))) {
        api->log(MF_LOG_ERROR, "prometheus: max_models and max_consumers "
                               "are whole numbers from 1 to 10000");
        json_decref(conf);
        return MF_ERR;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    p->path = strdup(path ? path : "/metrics");
    nameset_init(&p->models, mm ? (size_t)json_integer_value(mm) : 100);
    nameset_init(&p->consumers, mc ? (size_t)json_integer_value(mc) : 100);
    nameset_init(&p->providers, 1000);
    p->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
    p->prices = json_deep_copy(api->config_section("prices"));
    prefill_models(p);
    json_decref(conf);
    for (k = 0; k < M__COUNT; k++) {
        mf_metric_def_t d = {.size = sizeof(d),
                             .type = defs[k].type,
                             .name = defs[k].name,
                             .help = defs[k].help,
                             .labels = defs[k].labels,
                             .buckets = defs[k].buckets,
                             .nbuckets = defs[k].nbuckets};

        p->m[k] = api->metric_declare(&d);
        if (p->m[k] == NULL) {
            prom_fini(p);
            return MF_ERR;
        }
    }
    p->s_in_flight = api->metric_series(p->m[M_IN_FLIGHT], NULL, 0);
    p->s_streams_in_flight =
        api->metric_series(p->m[M_STREAMS_IN_FLIGHT], NULL, 0);
    {
        mf_endpoint_def_t e = {.size = sizeof(e),
                               .listener = MF_LISTENER_STATUS,
                               .method = "GET",
                               .path = p->path,
                               .handler = prom_serve};

        if (p->path == NULL || api->add_endpoint(&e) != MF_OK) {
            prom_fini(p);
            return MF_ERR;
        }
    }
    *state = p;
    return MF_OK;
}

static void
prom_fini(void *state)
{
    prom_t *p = state;

    nameset_free(&p->models);
    nameset_free(&p->consumers);
    nameset_free(&p->providers);
    price_forget();
    json_decref(p->prices);
    free(p->path);
    free(p);
}

static const mf_plugin_t prometheus = {
    MF_PLUGIN_ABI,         .name = "prometheus", .version = "1.0.0",
    .init = prom_init,     .fini = prom_fini,    .on_request = prom_on_request,
    .on_log = prom_on_log,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &prometheus;
}
