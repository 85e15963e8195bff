/*
 * dashboard: the built-in monitoring page on the status listener.
 *
 * At on_log each LLM request is added to in-memory roll-ups: one-minute
 * buckets for a day and one-hour buckets for 30 days, each holding a cell
 * per (model, consumer) with requests, errors by type, tokens by kind,
 * spend (micro-USD at `prices:`), and histograms of latency and time to
 * first token (for real percentiles), plus a ring of the last requests
 * for the live tail (no prompt, no answer, no key; the client address
 * cut to its network). The roll-ups live in memory the host keeps for
 * the process (api->keep_memory), so reloads keep them; a writer thread
 * (never a worker) copies the buckets that changed into SQLite (`db`)
 * every `flush_s` seconds and at the stage's end, and the first load
 * after a start reads them back, so a restart keeps them too.
 *
 * With `fleet: redis` the same thread also adds this node's deltas to
 * the fleet's buckets in the config's `redis:` (every node does), and
 * reads what changed there into a view of the whole fleet, which the
 * summary answers from (this node's own when Redis cannot be read; the
 * live tail is always the node's own). A worker never waits on Redis.
 * What a stop could not add (the host has no Redis then) is kept in the
 * db's fleet_pending and added by the next start.
 *
 * It serves, on the status listener:
 *   GET /dashboard                 the page (HTML, CSS and JS in the binary)
 *   GET /dashboard/api/summary     ?range=1h|6h|24h|7d|30d&model=M&consumer=C
 *   GET /dashboard/api/tail        ?n=50&model=M&consumer=C
 *   GET /dashboard/api/health      keys (masked) and breakers
 *
 * config: { path: /dashboard, max_models: 60, max_consumers: 60,
 *           db: dashboard.db, flush_s: 10, fleet: none | redis,
 *           fleet_refresh_s: 5 }
 */
#include <manifold/plugin.h>
#include <math.h>
#include <errno.h>
#include <stdarg.h>
#include <unistd.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../common/price.h"

static const mf_host_api_t *api;

/* the page, made from dashboard.html at build time */
extern const unsigned char mf_dashboard_html[];
extern const size_t mf_dashboard_html_len;

#define NAMES 64 /* models or consumers a store names; 0 is "other" */
#define NAME_LEN 96
#define NE 12 /* error types */
#define NH 30 /* histogram buckets (ms) */
#define MINUTES 1440
#define HOURS 720
#define TAIL 256
#define CELLS_MAX 256 /* cells a bucket holds; beyond, other/other */
#define STORE_VERSION 3

static const char *const error_types[NE] = {
    "none",        "invalid_request", "authentication", "permission",
    "not_found",   "rate_limit",      "client_closed",  "upstream",
    "unavailable", "timeout",         "internal",       "stream_cut"};

/* upper bounds in ms; the last bucket is everything above */
static const double hbounds[NH - 1] = {
    1,     2,     5,     10,    20,    50,     100,    200,    300,   400,
    500,   750,   1000,  1500,  2000,  3000,   5000,   7500,   10000, 15000,
    20000, 30000, 45000, 60000, 90000, 120000, 180000, 240000, 330000};

typedef struct {
    uint16_t model, consumer;
    uint32_t requests, streams, unpriced, estimated;
    uint32_t err[NE];
    int64_t input, output, cache_read, cache_write, reasoning;
    int64_t cost_micro;
    double gen_ms; /* time spent producing output (for tokens per second) */
    int64_t gen_tokens;
    uint32_t lat[NH];
    uint32_t ttft[NH];
} cell_t;

typedef struct {
    int64_t start; /* minute or hour number since the epoch, 0 empty */
    uint32_t n, cap;
    int dirty;     /* changed since the writer last copied it */
    cell_t *cells; /* heap */
    /* fleet: what was added since the writer last added it to Redis */
    uint32_t dn, dcap;
    cell_t *dcells; /* heap */
} slot_t;

typedef struct {
    double time;
    char id[64];
    uint16_t model, consumer;
    char provider[48];
    char client[48];
    int status;
    uint8_t err;
    uint8_t stream;
    uint8_t priced;
    double latency_ms, ttft_ms;
    int64_t input, output, cost_micro;
} tail_t;

typedef struct {
    uint32_t version;
    int ready;
    pthread_mutex_t lock;
    pthread_mutex_t flush_lock; /* one writer at a time (reloads overlap) */
    char models[NAMES][NAME_LEN];
    int nmodels;
    char consumers[NAMES][NAME_LEN];
    int nconsumers;
    slot_t minute[MINUTES];
    slot_t hour[HOURS];
    tail_t tail[TAIL];
    uint64_t tail_seq; /* requests recorded in the tail */
    char node[96];     /* this process in the fleet's node set */
} store_t;

typedef struct fleet_s fleet_t;

typedef struct {
    char *path;
    char *api_summary, *api_tail, *api_health;
    int max_models, max_consumers;
    json_t *prices;
    json_t *known; /* the exact model names of the config, a set */
    store_t *st;
    char *db_path; /* NULL: memory only */
    int flush_s;
    pthread_t writer;
    int writer_up;
    pthread_mutex_t wlock;
    pthread_cond_t wcond;
    int stop;
    int kick;      /* the fleet view is wanted now */
    int fleet;     /* fleet: redis */
    int refresh_s; /* fleet_refresh_s */
    char *fkey;    /* the keys' prefix, "mf:dash:{PATH}:" */
    fleet_t *fl;   /* NULL without fleet */
    int unparked;  /* counts of the last run to add at once */
} dash_t;

/* Recording */

/* v's slot among names, added when admit and there is room; 0 ("other")
 * otherwise. */
static int
name_index(char (*names)[NAME_LEN], int *n, int cap, mf_str_t v, int admit)
{
    int i;

    if (v.len == 0 || v.len >= NAME_LEN) {
        return 0;
    }
    for (i = 1; i < *n; i++) {
        if (strlen(names[i]) == v.len && memcmp(names[i], v.data, v.len) == 0) {
            return i;
        }
    }
    if (!admit || *n >= cap || *n >= NAMES) {
        return 0;
    }
    memcpy(names[*n], v.data, v.len);
    names[*n][v.len] = '\0';
    return (*n)++;
}

/* Whether the config names model exactly (a provider's, a route's, a
 * stage's model, or an exact name in prices:): such a name is admitted
 * also when its request failed, so a configured model's outage shows
 * under its name. */
static int
configured(const dash_t *d, mf_str_t model)
{
    char name[NAME_LEN];

    if (d->known == NULL || model.len == 0 || model.len >= NAME_LEN) {
        return 0;
    }
    memcpy(name, model.data, model.len);
    name[model.len] = '\0';
    return json_object_get(d->known, name) != NULL;
}

static int
hbucket(double ms)
{
    int i;

    for (i = 0; i < NH - 1; i++) {
        if (ms <= hbounds[i]) {
            return i;
        }
    }
    return NH - 1;
}

static int
error_index(const mf_req_info_t *i, int cut)
{
    int s = i->status;

    if (cut) {
        return 11;
    }
    switch (s) {
    case 400:
    case 405:
    case 413:
    case 431:
        return 1;
    case 401:
        return 2;
    case 403:
        return 3;
    case 404:
        return 4;
    case 429:
        return 5;
    case 499:
        return 6;
    case 502:
        return 7;
    case 503:
        return 8;
    case 504:
        return 9;
    default:
        return s >= 500 ? 10 : s >= 400 ? 1 : 0;
    }
}

/* The cell of (model, consumer) in cells[0..*n), added when missing;
 * past CELLS_MAX the pair counts as other/other. */
static cell_t *
cells_find(cell_t **cells, uint32_t *n, uint32_t *cap, int model, int consumer)
{
    uint32_t k;

    for (k = 0; k < *n; k++) {
        if ((*cells)[k].model == model && (*cells)[k].consumer == consumer) {
            return &(*cells)[k];
        }
    }
    if (*n == CELLS_MAX) {
        for (k = 0; k < *n; k++) {
            if ((*cells)[k].model == 0 && (*cells)[k].consumer == 0) {
                return &(*cells)[k];
            }
        }
        /* the last cell becomes other/other, its counts kept: totals
         * stay whole, that one pair is named no more in this bucket */
        k = *n - 1;
        (*cells)[k].model = 0;
        (*cells)[k].consumer = 0;
        return &(*cells)[k];
    }
    if (*n == *cap) {
        uint32_t ncap = *cap ? *cap * 2 : 4;
        cell_t *c = realloc(*cells, ncap * sizeof(*c));

        if (c == NULL) {
            return NULL;
        }
        *cells = c;
        *cap = ncap;
    }
    memset(&(*cells)[*n], 0, sizeof(cell_t));
    (*cells)[*n].model = (uint16_t)model;
    (*cells)[*n].consumer = (uint16_t)consumer;
    return &(*cells)[(*n)++];
}

static cell_t *
cell_of(slot_t *s, int64_t start, int model, int consumer)
{
    if (s->start != start) {
        s->start = start;
        s->n = 0;
        s->dn = 0; /* not added to Redis in a day (or 30): past its ring */
    }
    return cells_find(&s->cells, &s->n, &s->cap, model, consumer);
}

typedef struct {
    int err;
    int stream;
    int priced;
    int64_t cost;
    double gen_ms;
    const mf_req_info_t *i;
} rec_t;

static void
cell_add(cell_t *c, const rec_t *x)
{
    const mf_req_info_t *i = x->i;
    const mf_usage_t *u = &i->usage;
    int64_t cached = u->cached_tokens > 0 ? u->cached_tokens : 0;
    int64_t written = i->cache_write_tokens > 0 ? i->cache_write_tokens : 0;

    c->requests++;
    c->streams += x->stream;
    c->err[x->err]++;
    if (u->prompt_tokens > 0) {
        if (cached + written > u->prompt_tokens) {
            cached = written = 0;
        }
        c->input += u->prompt_tokens - cached - written;
        c->cache_read += cached;
        c->cache_write += written;
    }
    if (u->completion_tokens > 0) {
        c->output += u->completion_tokens;
        if (x->gen_ms > 0) {
            c->gen_ms += x->gen_ms;
            c->gen_tokens += u->completion_tokens;
        }
    }
    if (u->reasoning_tokens > 0) {
        c->reasoning += u->reasoning_tokens;
    }
    c->estimated +=
        (u->prompt_tokens >= 0 || u->completion_tokens >= 0) && u->estimated;
    if (x->priced == 1) {
        c->cost_micro += x->cost;
    } else if (x->priced == 0) {
        c->unpriced++;
    }
    c->lat[hbucket(i->latency_ms)]++;
    /* time to first token is a stream's (a whole answer's first byte is
     * its latency), as the prometheus stage's histogram */
    if (i->stream && i->first_content_ms >= 0 && x->err == 0) {
        c->ttft[hbucket(i->first_content_ms)]++;
    }
}

/* "10.1.2.x", "2001:db8:1:x": the address without its host part */
static void
mask_addr(mf_str_t a, char *out, size_t cap)
{
    size_t n = a.len < cap - 3 ? a.len : cap - 3, k;
    char sep = memchr(a.data, ':', a.len) ? ':' : '.';

    memcpy(out, a.data, n);
    out[n] = '\0';
    for (k = n; k > 0 && out[k - 1] != sep; k--) {
    }
    if (k > 0) {
        out[k] = 'x';
        out[k + 1] = '\0';
    } else {
        snprintf(out, cap, "x");
    }
}

static void
copy_str(char *out, size_t cap, mf_str_t s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;

    memcpy(out, s.data ? s.data : "", n);
    out[n] = '\0';
}

static void
dash_on_log(mf_req_t *r, void *state, void **ctx)
{
    dash_t *d = state;
    store_t *st = d->st;
    mf_req_info_t i = {.size = sizeof(i)};
    rec_t x;
    int m, c, cut;
    int64_t minute, hour;
    cell_t *cell;
    tail_t *t;

    (void)ctx;
    api->get_info(r, &i);
    /* LLM requests only: not the gateway's own answers (model lists,
     * count_tokens, stored Responses), which call no model */
    if (i.listener != MF_LISTENER_CLIENT || i.endpoint == MF_ENDPOINT_NONE ||
        i.endpoint == MF_ENDPOINT_LOCAL) {
        return;
    }
    cut = i.stream && i.status < 400 && i.error.len > 0;
    x.i = &i;
    x.err = error_index(&i, cut);
    x.stream = i.stream != 0;
    x.priced = price_request(d->prices, &i, &x.cost);
    /* output time: a stream's after its first token, else the upstream's */
    x.gen_ms = i.stream && i.first_content_ms >= 0
                   ? i.latency_ms - i.first_content_ms
                   : i.upstream_ms;
    minute = (int64_t)(i.start_time / 60);
    hour = minute / 60;
    pthread_mutex_lock(&st->lock);
    /* a model not seen before takes a name only when an upstream (or the
     * cache) answered it, as the prometheus stage's labels */
    m = i.attempts > 0 || i.provider.len > 0
            ? name_index(
                  st->models, &st->nmodels, d->max_models + 1, i.model,
                  i.cached ||
                      (i.upstream_status >= 200 && i.upstream_status < 300) ||
                      configured(d, i.model))
            : 0;
    c = name_index(st->consumers, &st->nconsumers, d->max_consumers + 1,
                   i.consumer.len > 0 ? i.consumer : MF_STR("anonymous"), 1);
    {
        slot_t *ss[2] = {&st->minute[minute % MINUTES],
                         &st->hour[hour % HOURS]};
        int64_t starts[2] = {minute, hour};
        int k;

        for (k = 0; k < 2; k++) {
            if ((cell = cell_of(ss[k], starts[k], m, c)) != NULL) {
                cell_add(cell, &x);
                ss[k]->dirty = 1;
            }
            if (d->fleet && (cell = cells_find(&ss[k]->dcells, &ss[k]->dn,
                                               &ss[k]->dcap, m, c)) != NULL) {
                cell_add(cell, &x);
            }
        }
    }
    t = &st->tail[st->tail_seq % TAIL];
    st->tail_seq++;
    t->time = i.start_time;
    copy_str(t->id, sizeof(t->id), i.id);
    t->model = (uint16_t)m;
    t->consumer = (uint16_t)c;
    copy_str(t->provider, sizeof(t->provider), i.provider);
    mask_addr(i.client_addr, t->client, sizeof(t->client));
    t->status = i.status;
    t->err = (uint8_t)x.err;
    t->stream = (uint8_t)x.stream;
    t->priced = (uint8_t)(x.priced + 1);
    t->latency_ms = i.latency_ms;
    t->ttft_ms = i.first_content_ms;
    t->input = i.usage.prompt_tokens;
    t->output = i.usage.completion_tokens;
    t->cost_micro = x.cost;
    pthread_mutex_unlock(&st->lock);
}

/* Queries */

typedef struct {
    cell_t sum;
} point_t;

typedef struct {
    int model;    /* -1 all */
    int consumer; /* -1 all */
} filter_t;

static int
cell_matches(const cell_t *c, const filter_t *f)
{
    return (f->model == -1 || c->model == f->model) &&
           (f->consumer == -1 || c->consumer == f->consumer);
}

static void
cell_merge(cell_t *a, const cell_t *b)
{
    int k;

    a->requests += b->requests;
    a->streams += b->streams;
    a->unpriced += b->unpriced;
    a->estimated += b->estimated;
    for (k = 0; k < NE; k++) {
        a->err[k] += b->err[k];
    }
    a->input += b->input;
    a->output += b->output;
    a->cache_read += b->cache_read;
    a->cache_write += b->cache_write;
    a->reasoning += b->reasoning;
    a->cost_micro += b->cost_micro;
    a->gen_ms += b->gen_ms;
    a->gen_tokens += b->gen_tokens;
    for (k = 0; k < NH; k++) {
        a->lat[k] += b->lat[k];
        a->ttft[k] += b->ttft[k];
    }
}

/* The q-quantile (0..1) of a histogram, interpolated inside its bucket;
 * -1 when empty. */
static double
quantile(const uint32_t *h, double q)
{
    uint64_t total = 0, seen = 0;
    double rank;
    int k;

    for (k = 0; k < NH; k++) {
        total += h[k];
    }
    if (total == 0) {
        return -1;
    }
    rank = q * (double)total;
    for (k = 0; k < NH; k++) {
        if (h[k] > 0 && (double)(seen + h[k]) >= rank) {
            double lo = k == 0 ? 0 : hbounds[k - 1];
            double hi = k < NH - 1 ? hbounds[k] : hbounds[NH - 2] * 1.5;
            double frac = ((rank - (double)seen) / (double)h[k]);

            return lo + (hi - lo) * (frac < 0 ? 0 : frac > 1 ? 1 : frac);
        }
        seen += h[k];
    }
    return hbounds[NH - 2];
}

static json_t *
usd(int64_t micro)
{
    return json_real((double)micro / 1e6);
}

static double
ms_round(double v)
{
    return v < 0 ? -1 : floor(v * 10 + 0.5) / 10;
}

static json_t *
cell_json(const cell_t *c)
{
    int64_t errors = (int64_t)c->requests - c->err[0];

    return json_pack(
        "{s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:I}", "requests",
        (json_int_t)c->requests, "errors", (json_int_t)errors, "streams",
        (json_int_t)c->streams, "error_rate",
        c->requests ? (double)errors / c->requests : 0.0, "input_tokens",
        (json_int_t)c->input, "output_tokens", (json_int_t)c->output,
        "cache_read_tokens", (json_int_t)c->cache_read, "cache_write_tokens",
        (json_int_t)c->cache_write, "reasoning_tokens",
        (json_int_t)c->reasoning, "tokens",
        (json_int_t)(c->input + c->cache_read + c->cache_write + c->output),
        "spend_usd", usd(c->cost_micro), "unpriced", (json_int_t)c->unpriced,
        "estimated", (json_int_t)c->estimated);
}

static void
add_percentiles(json_t *o, const cell_t *c)
{
    json_object_set_new(o, "p50_ms",
                        json_real(ms_round(quantile(c->lat, 0.5))));
    json_object_set_new(o, "p95_ms",
                        json_real(ms_round(quantile(c->lat, 0.95))));
    json_object_set_new(o, "p99_ms",
                        json_real(ms_round(quantile(c->lat, 0.99))));
    json_object_set_new(o, "ttft_p50_ms",
                        json_real(ms_round(quantile(c->ttft, 0.5))));
    json_object_set_new(o, "ttft_p95_ms",
                        json_real(ms_round(quantile(c->ttft, 0.95))));
    json_object_set_new(o, "ttft_p99_ms",
                        json_real(ms_round(quantile(c->ttft, 0.99))));
    json_object_set_new(
        o, "tokens_per_s",
        json_real(
            c->gen_ms > 0
                ? floor((double)c->gen_tokens / (c->gen_ms / 1000) * 10 + 0.5) /
                      10
                : 0));
}

/* The value of query parameter key (decoded) in q, into out. */
static int
query_param(mf_str_t q, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    const char *p = q.data, *end = q.data + q.len;

    while (p != NULL && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;

        if ((size_t)(stop - p) > kl && memcmp(p, key, kl) == 0 &&
            p[kl] == '=') {
            const char *v = p + kl + 1;
            size_t n = 0;

            while (v < stop && n + 1 < cap) {
                if (*v == '%' && stop - v >= 3) {
                    char hx[3] = {v[1], v[2], 0};

                    out[n++] = (char)strtol(hx, NULL, 16);
                    v += 3;
                } else {
                    out[n++] = *v == '+' ? ' ' : *v;
                    v++;
                }
            }
            out[n] = '\0';
            return 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    out[0] = '\0';
    return 0;
}

static int
find_name(char (*names)[NAME_LEN], int n, const char *v)
{
    int i;

    if (v[0] == '\0') {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (strcmp(names[i], v) == 0) {
            return i;
        }
    }
    return -2; /* named, unknown: matches nothing */
}

static void
filter_of(store_t *st, mf_str_t q, filter_t *f)
{
    char v[NAME_LEN * 3];

    query_param(q, "model", v, sizeof(v));
    f->model = find_name(st->models, st->nmodels, v);
    query_param(q, "consumer", v, sizeof(v));
    f->consumer = find_name(st->consumers, st->nconsumers, v);
}

static int
by_spend(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    double sx = json_real_value(json_object_get(x, "spend_usd"));
    double sy = json_real_value(json_object_get(y, "spend_usd"));
    json_int_t tx = json_integer_value(json_object_get(x, "tokens"));
    json_int_t ty = json_integer_value(json_object_get(y, "tokens"));
    json_int_t rx = json_integer_value(json_object_get(x, "requests"));
    json_int_t ry = json_integer_value(json_object_get(y, "requests"));

    return sx != sy   ? (sx < sy ? 1 : -1)
           : tx != ty ? (tx < ty ? 1 : -1)
           : rx != ry ? (rx < ry ? 1 : -1)
                      : 0;
}

/* A list of name -> cell as JSON rows sorted by spend, then tokens. */
static json_t *
ranked(char (*names)[NAME_LEN], const cell_t *cells, int n, const char *key,
       int percentiles)
{
    json_t **rows = calloc((size_t)n + 1, sizeof(*rows)), *out = json_array();
    int i, k = 0;

    for (i = 0; i < n && rows != NULL; i++) {
        json_t *o;

        if (cells[i].requests == 0) {
            continue;
        }
        o = cell_json(&cells[i]);
        json_object_set_new(o, key, json_string(names[i]));
        if (percentiles) {
            add_percentiles(o, &cells[i]);
        }
        rows[k++] = o;
    }
    if (rows != NULL) {
        qsort(rows, (size_t)k, sizeof(*rows), by_spend);
        for (i = 0; i < k; i++) {
            json_array_append_new(out, rows[i]);
        }
    }
    free(rows);
    return out;
}

static json_t *
summary(store_t *st, mf_str_t q)
{
    static const struct {
        const char *name;
        int minutes;   /* span */
        int step_min;  /* a point's width */
        int by_minute; /* minute slots, else hour slots */
    } ranges[] = {{"1h", 60, 1, 1},
                  {"6h", 360, 5, 1},
                  {"24h", 1440, 15, 1},
                  {"7d", 7 * 1440, 60, 0},
                  {"30d", 30 * 1440, 240, 0}};
    char rv[16];
    int ri = 0, k, npoints;
    int64_t now_min = (int64_t)(time(NULL) / 60), first_min;
    filter_t f;
    point_t *pts;
    cell_t total, *by_model, *by_consumer;
    json_t *out, *series, *errors, *names;

    query_param(q, "range", rv, sizeof(rv));
    for (k = 0; k < (int)(sizeof(ranges) / sizeof(ranges[0])); k++) {
        if (strcmp(rv, ranges[k].name) == 0) {
            ri = k;
        }
    }
    npoints = ranges[ri].minutes / ranges[ri].step_min;
    /* points end with the one holding now */
    first_min =
        (now_min / ranges[ri].step_min - npoints + 1) * ranges[ri].step_min;
    pts = calloc((size_t)npoints, sizeof(*pts));
    by_model = calloc(NAMES, sizeof(cell_t));
    by_consumer = calloc(NAMES, sizeof(cell_t));
    if (pts == NULL || by_model == NULL || by_consumer == NULL) {
        free(pts);
        free(by_model);
        free(by_consumer);
        return NULL;
    }
    memset(&total, 0, sizeof(total));
    pthread_mutex_lock(&st->lock);
    filter_of(st, q, &f);
    {
        int nslots = ranges[ri].by_minute ? MINUTES : HOURS;
        slot_t *slots = ranges[ri].by_minute ? st->minute : st->hour;
        int unit = ranges[ri].by_minute ? 1 : 60;

        for (k = 0; k < nslots; k++) {
            const slot_t *s = &slots[k];
            int64_t smin = s->start * unit;
            uint32_t c;
            int p;

            if (s->start == 0 || smin < first_min ||
                smin >= first_min + (int64_t)npoints * ranges[ri].step_min) {
                continue;
            }
            p = (int)((smin - first_min) / ranges[ri].step_min);
            for (c = 0; c < s->n; c++) {
                const cell_t *cell = &s->cells[c];

                if (!cell_matches(cell, &f)) {
                    continue;
                }
                cell_merge(&pts[p].sum, cell);
                cell_merge(&total, cell);
                cell_merge(&by_model[cell->model], cell);
                cell_merge(&by_consumer[cell->consumer], cell);
            }
        }
    }
    out = json_object();
    json_object_set_new(out, "range", json_string(ranges[ri].name));
    json_object_set_new(out, "step_s", json_integer(ranges[ri].step_min * 60));
    json_object_set_new(out, "now", json_integer((json_int_t)time(NULL)));
    {
        json_t *t = cell_json(&total);

        add_percentiles(t, &total);
        json_object_set_new(out, "totals", t);
    }
    series = json_array();
    for (k = 0; k < npoints; k++) {
        const cell_t *c = &pts[k].sum;

        json_array_append_new(
            series,
            json_pack(
                "{s:I,s:I,s:I,s:I,s:I,s:o}", "t",
                (json_int_t)((first_min + (int64_t)k * ranges[ri].step_min) *
                             60),
                "requests", (json_int_t)c->requests, "errors",
                (json_int_t)(c->requests - c->err[0]), "input_tokens",
                (json_int_t)(c->input + c->cache_read + c->cache_write),
                "output_tokens", (json_int_t)c->output, "spend_usd",
                usd(c->cost_micro)));
    }
    json_object_set_new(out, "series", series);
    {
        /* name 0 is "other" */
        char(*mnames)[NAME_LEN] = st->models;
        char(*cnames)[NAME_LEN] = st->consumers;

        json_object_set_new(out, "models",
                            ranked(mnames, by_model, st->nmodels, "model", 1));
        json_object_set_new(
            out, "consumers",
            ranked(cnames, by_consumer, st->nconsumers, "consumer", 0));
    }
    errors = json_array();
    for (k = 1; k < NE; k++) {
        if (total.err[k] > 0) {
            json_array_append_new(errors,
                                  json_pack("{s:s,s:I}", "type", error_types[k],
                                            "count", (json_int_t)total.err[k]));
        }
    }
    json_object_set_new(out, "errors", errors);
    names = json_pack("{s:[],s:[]}", "models", "consumers");
    for (k = 1; k < st->nmodels; k++) {
        json_array_append_new(json_object_get(names, "models"),
                              json_string(st->models[k]));
    }
    for (k = 1; k < st->nconsumers; k++) {
        json_array_append_new(json_object_get(names, "consumers"),
                              json_string(st->consumers[k]));
    }
    json_object_set_new(out, "names", names);
    pthread_mutex_unlock(&st->lock);
    free(pts);
    free(by_model);
    free(by_consumer);
    return out;
}

static json_t *
tail(dash_t *d, mf_str_t q)
{
    store_t *st = d->st;
    json_t *out = json_array();
    char nv[16];
    long n;
    uint64_t k, have;
    filter_t f;

    query_param(q, "n", nv, sizeof(nv));
    n = nv[0] ? atol(nv) : 50;
    n = n < 1 ? 1 : n > TAIL ? TAIL : n;
    pthread_mutex_lock(&st->lock);
    filter_of(st, q, &f);
    have = st->tail_seq;
    if (have > TAIL) {
        have = TAIL;
    }
    /* cppcheck-suppress knownConditionTrueFalse ; the store is shared */
    for (k = 0; k < have && (long)json_array_size(out) < n; k++) {
        const tail_t *t = &st->tail[(st->tail_seq - 1 - k) % TAIL];
        json_t *o;

        if ((f.model != -1 && t->model != f.model) ||
            (f.consumer != -1 && t->consumer != f.consumer)) {
            continue;
        }
        o = json_pack("{s:f,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:b,s:f}", "time",
                      t->time, "id", t->id, "model", st->models[t->model],
                      "consumer", st->consumers[t->consumer], "provider",
                      t->provider, "client", t->client, "status", t->status,
                      "error_type", error_types[t->err], "stream", t->stream,
                      "latency_ms", ms_round(t->latency_ms));
        json_object_set_new(o, "ttft_ms",
                            t->ttft_ms >= 0 ? json_real(ms_round(t->ttft_ms))
                                            : json_null());
        json_object_set_new(o, "input_tokens",
                            t->input >= 0 ? json_integer(t->input)
                                          : json_null());
        json_object_set_new(o, "output_tokens",
                            t->output >= 0 ? json_integer(t->output)
                                           : json_null());
        json_object_set_new(o, "spend_usd",
                            t->priced == 2 ? usd(t->cost_micro) : json_null());
        json_object_set_new(o, "unpriced", json_boolean(t->priced == 1));
        json_array_append_new(out, o);
    }
    pthread_mutex_unlock(&st->lock);
    return out;
}

static json_t *
health(void)
{
    json_t *h = api->upstream_health(), *keys = json_array(),
           *targets = json_array(), *e;
    size_t k;

    json_array_foreach(json_object_get(h, "keys"), k, e)
    {
        /* the masked key ("sk-...abcd") is all that is shown of it */
        json_array_append_new(
            keys, json_pack("{s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "provider",
                            json_object_get(e, "provider"), "index",
                            json_object_get(e, "index"), "key",
                            json_object_get(e, "key"), "state",
                            json_object_get(e, "state"), "requests",
                            json_object_get(e, "requests"), "errors",
                            json_object_get(e, "errors"), "in_flight",
                            json_object_get(e, "in_flight")));
    }
    json_array_foreach(json_object_get(h, "targets"), k, e)
    {
        json_array_append_new(
            targets, json_pack("{s:O,s:O,s:O,s:O,s:O,s:O}", "provider",
                               json_object_get(e, "provider"), "model",
                               json_object_get(e, "model"), "breaker",
                               json_object_get(e, "breaker"), "requests",
                               json_object_get(e, "requests"), "failures",
                               json_object_get(e, "failures"), "ttft_ms_avg",
                               json_object_get(e, "ttft_ms_avg")));
    }
    json_decref(h);
    return json_pack("{s:o,s:o}", "keys", keys, "targets", targets);
}

/* Serving */

static json_t *summary_json(dash_t *d, mf_str_t q);

static mf_action_t
respond_json(mf_req_t *r, json_t *j)
{
    char *text =
        j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    mf_str_t body;

    json_decref(j);
    if (text == NULL) {
        api->respond_error(r, 500, "server_error", "out of memory");
        return MF_RESPOND;
    }
    body.data = api->palloc(r, strlen(text));
    body.len = strlen(text);
    if (body.data == NULL) {
        free(text);
        return MF_FAIL;
    }
    memcpy((char *)body.data, text, body.len);
    free(text);
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("cache-control"),
                    MF_STR("no-store"));
    api->respond(r, 200, "application/json", body);
    return MF_RESPOND;
}

static mf_action_t
serve_page(mf_req_t *r, void *state, void *arg)
{
    (void)state;
    (void)arg;
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("cache-control"),
                    MF_STR("no-store"));
    /* everything is in the page: nothing else may load */
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("content-security-policy"),
                    MF_STR("default-src 'none'; script-src 'unsafe-inline'; "
                           "style-src 'unsafe-inline'; connect-src 'self'; "
                           "img-src data:; base-uri 'none'; "
                           "frame-ancestors 'none'"));
    api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-content-type-options"),
                    MF_STR("nosniff"));
    api->respond(
        r, 200, "text/html; charset=utf-8",
        (mf_str_t){(const char *)mf_dashboard_html, mf_dashboard_html_len});
    return MF_RESPOND;
}

static mf_action_t
serve_summary(mf_req_t *r, void *state, void *arg)
{
    mf_req_info_t i = {.size = sizeof(i)};

    (void)arg;
    api->get_info(r, &i);
    return respond_json(r, summary_json(state, i.query));
}

static mf_action_t
serve_tail(mf_req_t *r, void *state, void *arg)
{
    mf_req_info_t i = {.size = sizeof(i)};

    (void)arg;
    api->get_info(r, &i);
    return respond_json(r,
                        json_pack("{s:o}", "requests", tail(state, i.query)));
}

static mf_action_t
serve_health(mf_req_t *r, void *state, void *arg)
{
    (void)state;
    (void)arg;
    return respond_json(r, health());
}

/* Persistence: the roll-ups in SQLite, written by a thread of the stage's
 * own. A row is one cell of one bucket: (page, res 0 minute | 1 hour,
 * start, model, consumer) and its counts; errors as a JSON object by
 * type, the histograms as lists of counts. */

static const char db_schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS rollup(page TEXT NOT NULL, res INTEGER NOT "
    "NULL, start INTEGER NOT NULL, model TEXT NOT NULL, consumer TEXT NOT "
    "NULL, requests INTEGER, streams INTEGER, unpriced INTEGER, estimated "
    "INTEGER, errors TEXT, input INTEGER, output INTEGER, cache_read "
    "INTEGER, cache_write INTEGER, reasoning INTEGER, cost_micro INTEGER, "
    "gen_ms REAL, gen_tokens INTEGER, lat TEXT, ttft TEXT, PRIMARY "
    "KEY(page, res, start, model, consumer));"
    /* fleet: counts a stop could not add to Redis, for the next start */
    "CREATE TABLE IF NOT EXISTS fleet_pending(page TEXT NOT NULL, res "
    "INTEGER NOT NULL, start INTEGER NOT NULL, model TEXT NOT NULL, consumer "
    "TEXT NOT NULL, requests INTEGER, streams INTEGER, unpriced INTEGER, "
    "estimated INTEGER, errors TEXT, input INTEGER, output INTEGER, "
    "cache_read INTEGER, cache_write INTEGER, reasoning INTEGER, cost_micro "
    "INTEGER, gen_ms REAL, gen_tokens INTEGER, lat TEXT, ttft TEXT, PRIMARY "
    "KEY(page, res, start, model, consumer));";

static sqlite3 *
db_open(const char *path)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    mode_t old = umask(0077);

    if (sqlite3_open(path, &db) != SQLITE_OK) {
        umask(old);
        api->log(MF_LOG_ERROR, "dashboard: cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    umask(old);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, db_schema, NULL, NULL, &err) != SQLITE_OK) {
        api->log(MF_LOG_ERROR, "dashboard: %s: %s", path, err ? err : "?");
        sqlite3_free(err);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    return db;
}

static void
hist_text(const uint32_t *h, char *out, size_t cap)
{
    size_t n = 0;
    int k;

    out[0] = '\0';
    for (k = 0; k < NH && n < cap; k++) {
        n += (size_t)snprintf(out + n, cap - n, k ? ",%u" : "%u", h[k]);
    }
}

/* 1 when text is NH counts */
static int
hist_parse(const char *text, uint32_t *h)
{
    const char *p = text;
    char *end;
    int k;

    for (k = 0; k < NH; k++) {
        unsigned long v;

        if (p == NULL || *p < '0' || *p > '9') {
            return 0;
        }
        errno = 0;
        v = strtoul(p, &end, 10);
        if (errno != 0 || v > UINT32_MAX ||
            (*end != (k < NH - 1 ? ',' : '\0'))) {
            return 0;
        }
        h[k] = (uint32_t)v;
        p = end + 1;
    }
    return 1;
}

typedef struct {
    int res;
    int64_t start;
    uint32_t n;
    cell_t *cells;
} copy_t;

/* What changed since the last flush, copied under the store's lock. */
static copy_t *
take_dirty(store_t *st, size_t *count)
{
    copy_t *out = NULL;
    size_t n = 0, cap = 0;
    int res, k;

    pthread_mutex_lock(&st->lock);
    for (res = 0; res < 2; res++) {
        slot_t *slots = res ? st->hour : st->minute;
        int nslots = res ? HOURS : MINUTES;

        for (k = 0; k < nslots; k++) {
            slot_t *s = &slots[k];
            copy_t *c;

            if (!s->dirty || s->start == 0) {
                continue;
            }
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                copy_t *g = realloc(out, ncap * sizeof(*g));

                if (g == NULL) {
                    goto out;
                }
                out = g;
                cap = ncap;
            }
            c = &out[n];
            c->cells = malloc((s->n ? s->n : 1) * sizeof(cell_t));
            if (c->cells == NULL) {
                goto out;
            }
            memcpy(c->cells, s->cells, s->n * sizeof(cell_t));
            c->res = res;
            c->start = s->start;
            c->n = s->n;
            s->dirty = 0;
            n++;
        }
    }
out:
    pthread_mutex_unlock(&st->lock);
    *count = n;
    return out;
}

/* A flush that failed: its buckets are written again next time (if the
 * ring has not moved on). */
static void
mark_dirty(store_t *st, const copy_t *c, size_t n)
{
    size_t k;

    pthread_mutex_lock(&st->lock);
    for (k = 0; k < n; k++) {
        slot_t *s = c[k].res ? &st->hour[c[k].start % HOURS]
                             : &st->minute[c[k].start % MINUTES];

        if (s->start == c[k].start) {
            s->dirty = 1;
        }
    }
    pthread_mutex_unlock(&st->lock);
}

static int
write_cell(sqlite3_stmt *ins, const dash_t *d, const copy_t *c, const cell_t *x,
           char (*models)[NAME_LEN], char (*consumers)[NAME_LEN])
{
    json_t *errs = json_object();
    char *etext;
    char lat[NH * 11 + 1], ttft[NH * 11 + 1];
    int k, rc;

    for (k = 0; k < NE; k++) {
        if (x->err[k] > 0) {
            json_object_set_new(errs, error_types[k], json_integer(x->err[k]));
        }
    }
    etext = json_dumps(errs, JSON_COMPACT);
    json_decref(errs);
    hist_text(x->lat, lat, sizeof(lat));
    hist_text(x->ttft, ttft, sizeof(ttft));
    sqlite3_reset(ins);
    sqlite3_bind_text(ins, 1, d->path, -1, SQLITE_STATIC);
    sqlite3_bind_int(ins, 2, c->res);
    sqlite3_bind_int64(ins, 3, c->start);
    sqlite3_bind_text(ins, 4, models[x->model], -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 5, consumers[x->consumer], -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 6, x->requests);
    sqlite3_bind_int64(ins, 7, x->streams);
    sqlite3_bind_int64(ins, 8, x->unpriced);
    sqlite3_bind_int64(ins, 9, x->estimated);
    sqlite3_bind_text(ins, 10, etext ? etext : "{}", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins, 11, x->input);
    sqlite3_bind_int64(ins, 12, x->output);
    sqlite3_bind_int64(ins, 13, x->cache_read);
    sqlite3_bind_int64(ins, 14, x->cache_write);
    sqlite3_bind_int64(ins, 15, x->reasoning);
    sqlite3_bind_int64(ins, 16, x->cost_micro);
    sqlite3_bind_double(ins, 17, x->gen_ms);
    sqlite3_bind_int64(ins, 18, x->gen_tokens);
    sqlite3_bind_text(ins, 19, lat, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 20, ttft, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(ins);
    free(etext);
    return rc == SQLITE_DONE ? MF_OK : MF_ERR;
}

/* Writes the buckets that changed (each bucket's rows replaced whole)
 * and drops rows older than the ring holds. */
static void
flush(dash_t *d, sqlite3 *db)
{
    store_t *st = d->st;
    copy_t *c;
    size_t n, k;
    uint32_t j;
    sqlite3_stmt *del = NULL, *ins = NULL, *old = NULL;
    int ok;
    int64_t now_min = (int64_t)(time(NULL) / 60);
    char(*models)[NAME_LEN] = NULL;
    char(*consumers)[NAME_LEN] = NULL;

    pthread_mutex_lock(&st->flush_lock);
    c = take_dirty(st, &n);
    if (n == 0) {
        pthread_mutex_unlock(&st->flush_lock);
        free(c);
        return;
    }
    /* names only grow: a copy taken after the cells names them all */
    models = malloc(sizeof(st->models));
    consumers = malloc(sizeof(st->consumers));
    ok = models != NULL && consumers != NULL;
    if (ok) {
        pthread_mutex_lock(&st->lock);
        memcpy(models, st->models, sizeof(st->models));
        memcpy(consumers, st->consumers, sizeof(st->consumers));
        pthread_mutex_unlock(&st->lock);
    }
    ok = ok &&
         sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    ok = ok &&
         sqlite3_prepare_v2(db,
                            "DELETE FROM rollup WHERE page=? AND res=? AND "
                            "start=?",
                            -1, &del, NULL) == SQLITE_OK &&
         sqlite3_prepare_v2(
             db,
             "INSERT OR REPLACE INTO rollup VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,"
             "?,?,?,?,?,?,?)",
             -1, &ins, NULL) == SQLITE_OK &&
         sqlite3_prepare_v2(db,
                            "DELETE FROM rollup WHERE page=? AND ((res=0 AND "
                            "start<=?) OR (res=1 AND start<=?))",
                            -1, &old, NULL) == SQLITE_OK;
    for (k = 0; ok && k < n; k++) {
        sqlite3_bind_text(del, 1, d->path, -1, SQLITE_STATIC);
        sqlite3_bind_int(del, 2, c[k].res);
        sqlite3_bind_int64(del, 3, c[k].start);
        ok = sqlite3_step(del) == SQLITE_DONE;
        sqlite3_reset(del);
        for (j = 0; ok && j < c[k].n; j++) {
            ok = write_cell(ins, d, &c[k], &c[k].cells[j], models, consumers) ==
                 MF_OK;
        }
    }
    if (ok) {
        sqlite3_bind_text(old, 1, d->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(old, 2, now_min - MINUTES);
        sqlite3_bind_int64(old, 3, now_min / 60 - HOURS);
        ok = sqlite3_step(old) == SQLITE_DONE;
    }
    ok = ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) {
        api->log(MF_LOG_WARN,
                 "dashboard: writing the roll-ups to %s failed (%s); tried "
                 "again in %d s",
                 d->db_path, sqlite3_errmsg(db), d->flush_s);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        mark_dirty(st, c, n);
    }
    sqlite3_finalize(del);
    sqlite3_finalize(ins);
    sqlite3_finalize(old);
    pthread_mutex_unlock(&st->flush_lock);
    for (k = 0; k < n; k++) {
        free(c[k].cells);
    }
    free(c);
    free(models);
    free(consumers);
}

/* A name read back: "other" is slot 0, else its index (or 0 past the
 * cap). */
static int
name_back(char (*names)[NAME_LEN], int *n, int cap, const char *v)
{
    if (v == NULL || strcmp(v, names[0]) == 0) {
        return 0;
    }
    return name_index(names, n, cap, (mf_str_t){v, strlen(v)}, 1);
}

static void
json_errors_back(const char *text, uint32_t *err)
{
    json_t *o = text ? json_loads(text, 0, NULL) : NULL;
    int k;

    for (k = 0; k < NE; k++) {
        json_int_t v = json_integer_value(json_object_get(o, error_types[k]));

        err[k] = v > 0 && v <= UINT32_MAX ? (uint32_t)v : 0;
    }
    json_decref(o);
}

/* The counts of a row (columns 4 on, as load's SELECT) into x. */
static void
row_cell(sqlite3_stmt *q, cell_t *x)
{
    memset(x, 0, sizeof(*x));
    x->requests = (uint32_t)sqlite3_column_int64(q, 4);
    x->streams = (uint32_t)sqlite3_column_int64(q, 5);
    x->unpriced = (uint32_t)sqlite3_column_int64(q, 6);
    x->estimated = (uint32_t)sqlite3_column_int64(q, 7);
    json_errors_back((const char *)sqlite3_column_text(q, 8), x->err);
    x->input = sqlite3_column_int64(q, 9);
    x->output = sqlite3_column_int64(q, 10);
    x->cache_read = sqlite3_column_int64(q, 11);
    x->cache_write = sqlite3_column_int64(q, 12);
    x->reasoning = sqlite3_column_int64(q, 13);
    x->cost_micro = sqlite3_column_int64(q, 14);
    x->gen_ms = sqlite3_column_double(q, 15);
    x->gen_tokens = sqlite3_column_int64(q, 16);
    if (!hist_parse((const char *)sqlite3_column_text(q, 17), x->lat)) {
        memset(x->lat, 0, sizeof(x->lat));
    }
    if (!hist_parse((const char *)sqlite3_column_text(q, 18), x->ttft)) {
        memset(x->ttft, 0, sizeof(x->ttft));
    }
}

/* The rows of this page still inside the rings, into a new store. */
static int
load(dash_t *d)
{
    store_t *st = d->st;
    sqlite3 *db = db_open(d->db_path);
    sqlite3_stmt *q = NULL;
    int64_t now_min = (int64_t)(time(NULL) / 60);
    long rows = 0;
    int rc;

    if (db == NULL) {
        return MF_ERR;
    }
    if (sqlite3_prepare_v2(
            db,
            "SELECT res, start, model, consumer, requests, streams, "
            "unpriced, estimated, errors, input, output, cache_read, "
            "cache_write, reasoning, cost_micro, gen_ms, gen_tokens, lat, "
            "ttft FROM rollup WHERE page=? AND ((res=0 AND start>?) OR "
            "(res=1 AND start>?))",
            -1, &q, NULL) != SQLITE_OK) {
        api->log(MF_LOG_ERROR, "dashboard: %s: %s", d->db_path,
                 sqlite3_errmsg(db));
        sqlite3_close(db);
        return MF_ERR;
    }
    sqlite3_bind_text(q, 1, d->path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, now_min - MINUTES);
    sqlite3_bind_int64(q, 3, now_min / 60 - HOURS);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int res = sqlite3_column_int(q, 0);
        int64_t start = sqlite3_column_int64(q, 1);
        slot_t *s =
            res ? &st->hour[start % HOURS] : &st->minute[start % MINUTES];
        cell_t x, *cell;
        int m, c;

        if (start <= 0 || (s->start != 0 && s->start > start)) {
            continue;
        }
        row_cell(q, &x);
        m = name_back(st->models, &st->nmodels, d->max_models + 1,
                      (const char *)sqlite3_column_text(q, 2));
        c = name_back(st->consumers, &st->nconsumers, d->max_consumers + 1,
                      (const char *)sqlite3_column_text(q, 3));
        if ((cell = cell_of(s, start, m, c)) != NULL) {
            cell_merge(cell, &x);
            rows++;
        }
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    if (rc != SQLITE_DONE) {
        api->log(MF_LOG_ERROR, "dashboard: reading %s failed", d->db_path);
        return MF_ERR;
    }
    if (rows > 0) {
        api->log(MF_LOG_INFO, "dashboard: %ld roll-up rows read from %s", rows,
                 d->db_path);
    }
    return MF_OK;
}

/* Fleet: the roll-ups of every node in Redis (`fleet: redis`).
 *
 * Keys (one hash tag, so every command's keys are in one slot of a
 * cluster): PREFIX = "mf:dash:{PATH}:"; PREFIX "m:N" / "h:N" a hash per
 * minute / hour bucket N with a field per model, consumer and counter
 * ("gpt-4o\tteam-a\treq"); PREFIX "seq" a change number, PREFIX "chg" a
 * sorted set of the bucket keys by the change number that last touched
 * them; PREFIX "nodes" a sorted set of the nodes by the time they last
 * wrote; PREFIX "epoch" names the key space (a new one when it was lost).
 * The stage's thread (never a worker) adds this node's deltas with
 * HINCRBY (one script per batch of whole cells) and reads what changed
 * since its last read into a view the page's API answers from. */

#define FLEET_ARGS 1000 /* arguments of one EVAL (the host's cap: 1024) */
#define FLEET_READ 64   /* buckets one read returns (then it goes on) */
#define FLEET_NODE_S 60 /* a node that wrote this recently is counted */

struct fleet_s {
    store_t *view;     /* the fleet's buckets as last read (its lock) */
    long long seq;     /* the change number read up to */
    char epoch[128];   /* the key space read */
    int ok;            /* the last read succeeded */
    int have;          /* a read succeeded since the start */
    int push_ok;       /* the last write succeeded */
    long long nodes;   /* nodes that wrote in the last FLEET_NODE_S */
    double read_at;    /* wall time of the last good read */
    double tried_at;   /* wall time of the last read tried */
    double watched_at; /* wall time the API was last asked */
    char err[256];     /* why the last read failed */
    int logged;        /* the failure was logged */
};

static const char fleet_write_lua[] =
    "local seq=redis.call('INCR',KEYS[1])\n"
    "redis.call('SET',KEYS[4],ARGV[2],'NX')\n"
    "local a=3\n"
    "for k=5,#KEYS do\n"
    "  local at=ARGV[a]\n"
    "  local n=tonumber(ARGV[a+1])\n"
    "  a=a+2\n"
    "  for j=1,n do\n"
    "    redis.call('HINCRBY',KEYS[k],ARGV[a],ARGV[a+1])\n"
    "    a=a+2\n"
    "  end\n"
    "  redis.call('EXPIREAT',KEYS[k],at)\n"
    "  redis.call('ZADD',KEYS[2],seq,KEYS[k])\n"
    "end\n"
    "local t=tonumber(redis.call('TIME')[1])\n"
    "redis.call('ZADD',KEYS[3],t,ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE',KEYS[3],'-inf',t-86400)\n"
    "for k=1,4 do redis.call('EXPIRE',KEYS[k],2764800) end\n"
    "return seq\n";

static const char fleet_read_lua[] =
    "local cur=tonumber(redis.call('GET',KEYS[3]) or '0')\n"
    "local ep=redis.call('GET',KEYS[4]) or ''\n"
    "local t=tonumber(redis.call('TIME')[1])\n"
    "local nodes=redis.call('ZCOUNT',KEYS[2],t-tonumber(ARGV[3]),'+inf')\n"
    "local m=redis.call('ZRANGEBYSCORE',KEYS[1],'('..ARGV[1],'+inf',"
    "'WITHSCORES')\n"
    "local out={cur,ep,nodes,0,tonumber(ARGV[1])}\n"
    "local n,lim=0,tonumber(ARGV[2])\n"
    "for i=1,#m,2 do\n"
    "  local s=tonumber(m[i+1])\n"
    "  if n>=lim and s~=out[5] then out[4]=1 break end\n"
    "  local h=redis.call('HGETALL',m[i])\n"
    "  if #h==0 then redis.call('ZREM',KEYS[1],m[i]) end\n"
    "  out[#out+1]=m[i]\n"
    "  out[#out+1]=h\n"
    "  out[5]=s\n"
    "  n=n+1\n"
    "end\n"
    "return out\n";

static double
wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* a growing list of strings (the arguments of one command) */
typedef struct {
    char **v;
    int n, cap;
} sv_t;

static int
sv_add(sv_t *s, const char *fmt, ...)
{
    va_list ap;
    char *p;

    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        char **v = realloc(s->v, (size_t)cap * sizeof(*v));

        if (v == NULL) {
            return MF_ERR;
        }
        s->v = v;
        s->cap = cap;
    }
    va_start(ap, fmt);
    if (vasprintf(&p, fmt, ap) < 0) {
        va_end(ap);
        return MF_ERR;
    }
    va_end(ap);
    s->v[s->n++] = p;
    return MF_OK;
}

static void
sv_cut(sv_t *s, int n)
{
    while (s->n > n) {
        free(s->v[--s->n]);
    }
}

/* A name as a field part: "other" when it would break the field. */
static const char *
field_name(const char *v)
{
    return strchr(v, '\t') != NULL ? "other" : v;
}

/* The fields (name, delta) of one cell's non-zero counters. */
static int
cell_fields(const cell_t *x, const char *model, const char *consumer, sv_t *out)
{
    const struct {
        const char *name;
        long long v;
    } plain[] = {{"req", x->requests},
                 {"stream", x->streams},
                 {"unpriced", x->unpriced},
                 {"estimated", x->estimated},
                 {"in", x->input},
                 {"out", x->output},
                 {"cache_read", x->cache_read},
                 {"cache_write", x->cache_write},
                 {"reasoning", x->reasoning},
                 {"cost_micro", x->cost_micro},
                 {"gen_us", llround(x->gen_ms * 1000)},
                 {"gen_tokens", x->gen_tokens}};
    size_t k;
    int ok = MF_OK;

    model = field_name(model);
    consumer = field_name(consumer);
    for (k = 0; k < sizeof(plain) / sizeof(plain[0]) && ok == MF_OK; k++) {
        if (plain[k].v != 0) {
            ok = sv_add(out, "%s\t%s\t%s", model, consumer, plain[k].name) ||
                 sv_add(out, "%lld", plain[k].v);
        }
    }
    for (k = 0; k < NE && ok == MF_OK; k++) {
        if (x->err[k] != 0) {
            ok = sv_add(out, "%s\t%s\terr.%s", model, consumer,
                        error_types[k]) ||
                 sv_add(out, "%u", x->err[k]);
        }
    }
    for (k = 0; k < NH && ok == MF_OK; k++) {
        if (x->lat[k] != 0) {
            ok = sv_add(out, "%s\t%s\tlat.%zu", model, consumer, k) ||
                 sv_add(out, "%u", x->lat[k]);
        }
        if (ok == MF_OK && x->ttft[k] != 0) {
            ok = sv_add(out, "%s\t%s\tttft.%zu", model, consumer, k) ||
                 sv_add(out, "%u", x->ttft[k]);
        }
    }
    return ok;
}

static uint32_t
u32_add(uint32_t a, long long v)
{
    long long s = (long long)a + v;

    return s < 0 ? 0 : s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* A counter read back into a cell. */
static void
cell_counter(cell_t *c, const char *name, long long v)
{
    int k;

    if (strncmp(name, "err.", 4) == 0) {
        for (k = 0; k < NE; k++) {
            if (strcmp(name + 4, error_types[k]) == 0) {
                c->err[k] = u32_add(c->err[k], v);
            }
        }
    } else if (strncmp(name, "lat.", 4) == 0 ||
               strncmp(name, "ttft.", 5) == 0) {
        uint32_t *h = name[0] == 'l' ? c->lat : c->ttft;

        k = atoi(strchr(name, '.') + 1);
        if (k >= 0 && k < NH) {
            h[k] = u32_add(h[k], v);
        }
    } else if (strcmp(name, "req") == 0) {
        c->requests = u32_add(c->requests, v);
    } else if (strcmp(name, "stream") == 0) {
        c->streams = u32_add(c->streams, v);
    } else if (strcmp(name, "unpriced") == 0) {
        c->unpriced = u32_add(c->unpriced, v);
    } else if (strcmp(name, "estimated") == 0) {
        c->estimated = u32_add(c->estimated, v);
    } else if (strcmp(name, "in") == 0) {
        c->input += v;
    } else if (strcmp(name, "out") == 0) {
        c->output += v;
    } else if (strcmp(name, "cache_read") == 0) {
        c->cache_read += v;
    } else if (strcmp(name, "cache_write") == 0) {
        c->cache_write += v;
    } else if (strcmp(name, "reasoning") == 0) {
        c->reasoning += v;
    } else if (strcmp(name, "cost_micro") == 0) {
        c->cost_micro += v;
    } else if (strcmp(name, "gen_us") == 0) {
        c->gen_ms += (double)v / 1000;
    } else if (strcmp(name, "gen_tokens") == 0) {
        c->gen_tokens += v;
    }
}

/* One EVAL of fleet_write_lua: keys and args after the fixed ones. */
static int
fleet_send(const sv_t *keys, const sv_t *args, char *err, size_t errcap)
{
    int argc = 3 + keys->n + args->n, i, n = 0;
    mf_str_t *argv = malloc((size_t)argc * sizeof(*argv));
    char nkeys[16];
    json_t *rep;

    if (argv == NULL) {
        snprintf(err, errcap, "out of memory");
        return MF_ERR;
    }
    snprintf(nkeys, sizeof(nkeys), "%d", keys->n);
    argv[n++] = MF_STR("EVAL");
    argv[n++] = (mf_str_t){fleet_write_lua, sizeof(fleet_write_lua) - 1};
    argv[n++] = (mf_str_t){nkeys, strlen(nkeys)};
    for (i = 0; i < keys->n; i++) {
        argv[n++] = (mf_str_t){keys->v[i], strlen(keys->v[i])};
    }
    for (i = 0; i < args->n; i++) {
        argv[n++] = (mf_str_t){args->v[i], strlen(args->v[i])};
    }
    rep = api->redis_call(argc, argv, err, errcap);
    free(argv);
    if (rep == NULL) {
        return MF_ERR;
    }
    json_decref(rep);
    return MF_OK;
}

/* The deltas of slots moved out, under the store's lock. */
static copy_t *
take_deltas(store_t *st, size_t *count)
{
    copy_t *out = NULL;
    size_t n = 0, cap = 0;
    int res, k;

    pthread_mutex_lock(&st->lock);
    for (res = 0; res < 2; res++) {
        slot_t *slots = res ? st->hour : st->minute;
        int nslots = res ? HOURS : MINUTES;

        for (k = 0; k < nslots; k++) {
            slot_t *s = &slots[k];

            if (s->dn == 0 || s->start == 0) {
                continue;
            }
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                copy_t *g = realloc(out, ncap * sizeof(*g));

                if (g == NULL) {
                    goto out;
                }
                out = g;
                cap = ncap;
            }
            out[n].res = res;
            out[n].start = s->start;
            out[n].n = s->dn;
            out[n].cells = s->dcells;
            s->dcells = NULL;
            s->dn = s->dcap = 0;
            n++;
        }
    }
out:
    pthread_mutex_unlock(&st->lock);
    *count = n;
    return out;
}

typedef struct {
    size_t k;   /* the copy */
    uint32_t j; /* its cell */
} ref_t;

/* One batch of whole cells being built into a write. */
typedef struct {
    dash_t *d;
    copy_t *c;
    sv_t keys, args;
    ref_t *refs;
    size_t nrefs;
    int group;     /* the copy whose bucket is the last key, -1 none */
    int npairs_at; /* its pair count's place in args */
    int npairs;
    int failed;
    char err[256];
    char salt[160];
} batch_t;

/* Deltas a write failed to add: back into their slots (if the ring has
 * not moved on), to be added with the next. */
static void
give_back(store_t *st, const copy_t *c, const ref_t *refs, size_t n)
{
    size_t k;

    pthread_mutex_lock(&st->lock);
    for (k = 0; k < n; k++) {
        const copy_t *b = &c[refs[k].k];
        const cell_t *from = &b->cells[refs[k].j];
        slot_t *s = b->res ? &st->hour[b->start % HOURS]
                           : &st->minute[b->start % MINUTES];
        cell_t *x;

        if (s->start != b->start) {
            continue;
        }
        x = cells_find(&s->dcells, &s->dn, &s->dcap, from->model,
                       from->consumer);
        if (x != NULL) {
            cell_merge(x, from);
        }
    }
    pthread_mutex_unlock(&st->lock);
}

static int
batch_group_close(batch_t *b)
{
    if (b->group < 0) {
        return MF_OK;
    }
    free(b->args.v[b->npairs_at]);
    b->args.v[b->npairs_at] = NULL;
    b->group = -1;
    return asprintf(&b->args.v[b->npairs_at], "%d", b->npairs) < 0 ? MF_ERR
                                                                   : MF_OK;
}

static int
batch_start(batch_t *b)
{
    const dash_t *d = b->d;

    sv_cut(&b->keys, 0);
    sv_cut(&b->args, 0);
    b->nrefs = 0;
    b->group = -1;
    return sv_add(&b->keys, "%sseq", d->fkey) ||
                   sv_add(&b->keys, "%schg", d->fkey) ||
                   sv_add(&b->keys, "%snodes", d->fkey) ||
                   sv_add(&b->keys, "%sepoch", d->fkey) ||
                   sv_add(&b->args, "%s", d->st->node) ||
                   sv_add(&b->args, "%s", b->salt)
               ? MF_ERR
               : MF_OK;
}

static void
batch_send(batch_t *b)
{
    if (batch_group_close(b) != MF_OK ||
        fleet_send(&b->keys, &b->args, b->err, sizeof(b->err)) != MF_OK) {
        b->failed = 1;
        give_back(b->d->st, b->c, b->refs, b->nrefs);
    }
    b->nrefs = 0;
}

/* Cell j of copy k into the batch (sending the batch first when full). */
static int
batch_cell(batch_t *b, size_t k, uint32_t j, sv_t *fields)
{
    const copy_t *c = &b->c[k];
    int i;

    if (b->nrefs > 0 &&
        3 + b->keys.n + b->args.n + fields->n + 3 > FLEET_ARGS) {
        batch_send(b);
        if (batch_start(b) != MF_OK) {
            return MF_ERR;
        }
    }
    if (b->group != (int)k) {
        /* a bucket lasts its ring (a day of minutes, 30 days of hours)
         * past its end */
        long long at =
            c->res ? (long long)(c->start + 1) * 3600 + HOURS * 3600LL + 3600
                   : (long long)(c->start + 1) * 60 + MINUTES * 60LL + 300;

        if (batch_group_close(b) != MF_OK ||
            sv_add(&b->keys, "%s%c:%lld", b->d->fkey, c->res ? 'h' : 'm',
                   (long long)c->start) != MF_OK ||
            sv_add(&b->args, "%lld", at) != MF_OK ||
            sv_add(&b->args, "0") != MF_OK) {
            return MF_ERR;
        }
        b->group = (int)k;
        b->npairs_at = b->args.n - 1;
        b->npairs = 0;
    }
    for (i = 0; i < fields->n; i++) {
        if (sv_add(&b->args, "%s", fields->v[i]) != MF_OK) {
            return MF_ERR;
        }
    }
    b->npairs += fields->n / 2;
    b->refs[b->nrefs].k = k;
    b->refs[b->nrefs].j = j;
    b->nrefs++;
    return MF_OK;
}

/* Out of memory: the batch being built and every cell from (k, j) on go
 * back, to be added next time. */
static void
give_rest(batch_t *b, size_t n, size_t k, uint32_t j)
{
    snprintf(b->err, sizeof(b->err), "out of memory");
    b->failed = 1;
    if (b->refs == NULL) {
        return; /* lost: no memory to say which */
    }
    give_back(b->d->st, b->c, b->refs, b->nrefs);
    b->nrefs = 0;
    for (; k < n; k++, j = 0) {
        for (; j < b->c[k].n; j++) {
            b->refs[b->nrefs].k = k;
            b->refs[b->nrefs++].j = j;
        }
    }
    give_back(b->d->st, b->c, b->refs, b->nrefs);
    b->nrefs = 0;
}

/* Adds this node's deltas to the fleet's buckets, in batches of whole
 * cells (a batch that fails goes back to be added next time), and says
 * the node is alive (the node set) even when there is nothing to add.
 * Returns MF_OK when all was added. */
static int
fleet_push(dash_t *d, int quiet)
{
    store_t *st = d->st;
    size_t n, k, cells = 0;
    copy_t *c = take_deltas(st, &n);
    char(*models)[NAME_LEN] = malloc(sizeof(st->models));
    char(*consumers)[NAME_LEN] = malloc(sizeof(st->consumers));
    sv_t fields = {0};
    batch_t b;
    uint32_t j;
    int ok, started;

    memset(&b, 0, sizeof(b));
    b.d = d;
    b.c = c;
    snprintf(b.salt, sizeof(b.salt), "%s:%.6f", st->node, wall_now());
    for (k = 0; k < n; k++) {
        cells += c[k].n;
    }
    b.refs = malloc((cells + 1) * sizeof(*b.refs));
    ok = models != NULL && consumers != NULL && b.refs != NULL &&
         batch_start(&b) == MF_OK;
    if (ok) {
        /* names only grow: a copy taken after the cells names them all */
        pthread_mutex_lock(&st->lock);
        memcpy(models, st->models, sizeof(st->models));
        memcpy(consumers, st->consumers, sizeof(st->consumers));
        pthread_mutex_unlock(&st->lock);
    }
    started = ok;
    for (k = 0; ok && k < n; k++) {
        for (j = 0; j < c[k].n; j++) {
            const cell_t *x = &c[k].cells[j];

            sv_cut(&fields, 0);
            if (cell_fields(x, models[x->model], consumers[x->consumer],
                            &fields) != MF_OK ||
                batch_cell(&b, k, j, &fields) != MF_OK) {
                ok = 0;
                give_rest(&b, n, k, j);
                break;
            }
        }
    }
    if (ok) {
        batch_send(&b); /* the last cells, or the node's hello alone */
    } else if (!started) {
        give_rest(&b, n, 0, 0); /* nothing was tried */
    }
    if (b.failed && !quiet && d->fl->push_ok) {
        api->log(MF_LOG_WARN,
                 "dashboard: adding this node's roll-ups to Redis failed "
                 "(%s); kept, and tried again every %d s",
                 b.err, d->flush_s);
    } else if (!b.failed && !d->fl->push_ok) {
        api->log(MF_LOG_INFO, "dashboard: this node's roll-ups are added to "
                              "Redis again");
    }
    d->fl->push_ok = !b.failed;
    sv_cut(&fields, 0);
    free(fields.v);
    sv_cut(&b.keys, 0);
    free(b.keys.v);
    sv_cut(&b.args, 0);
    free(b.args.v);
    free(b.refs);
    for (k = 0; k < n; k++) {
        free(c[k].cells);
    }
    free(c);
    free(models);
    free(consumers);
    return b.failed ? MF_ERR : MF_OK;
}

/* One bucket read back (key, its fields as a flat list) into the view. */
static void
fleet_apply(dash_t *d, const char *key, const json_t *h)
{
    store_t *v = d->fl->view;
    size_t pl = strlen(d->fkey), i;
    const char *p;
    long long start;
    slot_t *s;

    if (key == NULL || strncmp(key, d->fkey, pl) != 0) {
        return;
    }
    p = key + pl;
    if ((p[0] != 'm' && p[0] != 'h') || p[1] != ':' ||
        (start = strtoll(p + 2, NULL, 10)) <= 0) {
        return;
    }
    s = p[0] == 'h' ? &v->hour[start % HOURS] : &v->minute[start % MINUTES];
    pthread_mutex_lock(&v->lock);
    if (s->start > start) {
        pthread_mutex_unlock(&v->lock);
        return; /* older than the ring holds */
    }
    /* the bucket's sums replace what the view had of it */
    s->start = start;
    s->n = 0;
    for (i = 0; i + 1 < json_array_size(h); i += 2) {
        const char *f = json_string_value(json_array_get(h, i));
        const char *val = json_string_value(json_array_get(h, i + 1));
        const char *t1 = f ? strchr(f, '\t') : NULL;
        const char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        char model[NAME_LEN], consumer[NAME_LEN];
        cell_t *x;
        int m, c;

        if (t2 == NULL || val == NULL) {
            continue;
        }
        /* a name too long for the table is other (name_back: "") */
        snprintf(model, sizeof(model), "%.*s",
                 (size_t)(t1 - f) < NAME_LEN ? (int)(t1 - f) : 0, f);
        snprintf(consumer, sizeof(consumer), "%.*s",
                 (size_t)(t2 - t1 - 1) < NAME_LEN ? (int)(t2 - t1 - 1) : 0,
                 t1 + 1);
        /* the fleet's names: the caps of this page, first read first
         * named; the rest are other */
        m = name_back(v->models, &v->nmodels, d->max_models + 1, model);
        c = name_back(v->consumers, &v->nconsumers, d->max_consumers + 1,
                      consumer);
        if ((x = cells_find(&s->cells, &s->n, &s->cap, m, c)) != NULL) {
            cell_counter(x, t2 + 1, strtoll(val, NULL, 10));
        }
    }
    pthread_mutex_unlock(&v->lock);
}

static void
view_clear(store_t *v)
{
    int k;

    pthread_mutex_lock(&v->lock);
    for (k = 0; k < MINUTES; k++) {
        v->minute[k].start = 0;
        v->minute[k].n = 0;
    }
    for (k = 0; k < HOURS; k++) {
        v->hour[k].start = 0;
        v->hour[k].n = 0;
    }
    pthread_mutex_unlock(&v->lock);
}

/* Reads the buckets changed since the last read (all of them the first
 * time, or when the key space was lost) into the view. */
static void
fleet_read(dash_t *d)
{
    fleet_t *fl = d->fl;
    char err[256] = "", last[32], lim[16], win[16], nk[4] = "4";
    char *keys[4] = {NULL, NULL, NULL, NULL};
    const char *names[4] = {"chg", "nodes", "seq", "epoch"};
    long long nodes = 0;
    int ok = 1, round, k;

    for (k = 0; k < 4; k++) {
        if (asprintf(&keys[k], "%s%s", d->fkey, names[k]) < 0) {
            keys[k] = NULL;
            ok = 0;
        }
    }
    snprintf(lim, sizeof(lim), "%d", FLEET_READ);
    snprintf(win, sizeof(win), "%d", FLEET_NODE_S);
    /* at most 64 rounds of FLEET_READ buckets: more than the rings */
    for (round = 0; ok && round < 64; round++) {
        mf_str_t argv[10];
        json_t *rep;
        const char *ep;
        long long cur, top;
        size_t i;

        snprintf(last, sizeof(last), "%lld", fl->seq);
        argv[0] = MF_STR("EVAL");
        argv[1] = (mf_str_t){fleet_read_lua, sizeof(fleet_read_lua) - 1};
        argv[2] = (mf_str_t){nk, 1};
        for (k = 0; k < 4; k++) {
            argv[3 + k] = (mf_str_t){keys[k], strlen(keys[k])};
        }
        argv[7] = (mf_str_t){last, strlen(last)};
        argv[8] = (mf_str_t){lim, strlen(lim)};
        argv[9] = (mf_str_t){win, strlen(win)};
        rep = api->redis_call(10, argv, err, sizeof(err));
        if (rep == NULL) {
            ok = 0;
            break;
        }
        if (!json_is_array(rep) || json_array_size(rep) < 5 ||
            !json_is_string(json_array_get(rep, 1))) {
            snprintf(err, sizeof(err), "an unexpected reply from Redis");
            json_decref(rep);
            ok = 0;
            break;
        }
        cur = json_integer_value(json_array_get(rep, 0));
        ep = json_string_value(json_array_get(rep, 1));
        nodes = json_integer_value(json_array_get(rep, 2));
        top = json_integer_value(json_array_get(rep, 4));
        if (strcmp(ep, fl->epoch) != 0 || cur < fl->seq) {
            int again = fl->seq != 0;

            /* another key space (Redis lost the keys): read it whole */
            snprintf(fl->epoch, sizeof(fl->epoch), "%s", ep);
            fl->seq = 0;
            view_clear(fl->view);
            if (again) {
                json_decref(rep);
                continue;
            }
        }
        for (i = 5; i + 1 < json_array_size(rep); i += 2) {
            fleet_apply(d, json_string_value(json_array_get(rep, i)),
                        json_array_get(rep, i + 1));
        }
        fl->seq = top;
        k = (int)json_integer_value(json_array_get(rep, 3));
        json_decref(rep);
        if (k == 0) {
            break;
        }
    }
    for (k = 0; k < 4; k++) {
        free(keys[k]);
    }
    pthread_mutex_lock(&fl->view->lock);
    if (!ok && !fl->logged) {
        api->log(MF_LOG_WARN,
                 "dashboard: reading the fleet's roll-ups from Redis failed "
                 "(%s); the page shows this node's own",
                 err[0] ? err : "out of memory");
        fl->logged = 1;
    } else if (ok && fl->logged) {
        api->log(MF_LOG_INFO,
                 "dashboard: the fleet view is read from Redis again");
        fl->logged = 0;
    }
    fl->ok = ok;
    fl->tried_at = wall_now();
    if (ok) {
        fl->have = 1;
        fl->read_at = fl->tried_at;
        fl->nodes = nodes;
        fl->err[0] = '\0';
    } else {
        snprintf(fl->err, sizeof(fl->err), "%s",
                 err[0] ? err : "out of memory");
    }
    pthread_mutex_unlock(&fl->view->lock);
}

/* The summary: the fleet's (from the view) when there is one and it was
 * read, else this node's; ?view=node asks for this node's. */
static json_t *
summary_json(dash_t *d, mf_str_t q)
{
    fleet_t *fl = d->fl;
    char want[16];
    json_t *out, *f;
    int ok, kick;
    double now = wall_now(), age;
    long long nodes;
    char err[256];

    if (fl == NULL) {
        out = summary(d->st, q);
        if (out != NULL) {
            json_object_set_new(out, "view", json_string("node"));
            json_object_set_new(out, "fleet", json_pack("{s:b}", "enabled", 0));
        }
        return out;
    }
    query_param(q, "view", want, sizeof(want));
    pthread_mutex_lock(&fl->view->lock);
    fl->watched_at = now;
    ok = fl->ok && fl->have;
    nodes = fl->nodes;
    age = fl->have ? now - fl->read_at : -1;
    kick = now - fl->tried_at >= d->refresh_s;
    snprintf(err, sizeof(err), "%s", fl->err);
    pthread_mutex_unlock(&fl->view->lock);
    if (kick) {
        /* the thread reads it (a worker never waits on Redis) */
        pthread_mutex_lock(&d->wlock);
        d->kick = 1;
        pthread_cond_signal(&d->wcond);
        pthread_mutex_unlock(&d->wlock);
    }
    out = summary(ok && strcmp(want, "node") != 0 ? fl->view : d->st, q);
    if (out == NULL) {
        return NULL;
    }
    json_object_set_new(
        out, "view",
        json_string(ok && strcmp(want, "node") != 0 ? "fleet" : "node"));
    f = json_pack("{s:b,s:b,s:I}", "enabled", 1, "available", ok, "nodes",
                  (json_int_t)(ok ? nodes : 0));
    json_object_set_new(
        f, "age_s", age >= 0 ? json_real(floor(age * 10) / 10) : json_null());
    json_object_set_new(f, "error", err[0] ? json_string(err) : json_null());
    json_object_set_new(out, "fleet", f);
    return out;
}

/* At the end, what could not be added to Redis (at a stop the host has
 * no connection left): into fleet_pending and out of memory, for the
 * next load to add. */
static void
fleet_park(dash_t *d, sqlite3 *db)
{
    store_t *st = d->st;
    size_t n, k;
    copy_t *c = take_deltas(st, &n);
    char(*models)[NAME_LEN] = malloc(sizeof(st->models));
    char(*consumers)[NAME_LEN] = malloc(sizeof(st->consumers));
    sqlite3_stmt *ins = NULL;
    long cells = 0;
    uint32_t j;
    int ok = n > 0 && models != NULL && consumers != NULL;

    if (ok) {
        pthread_mutex_lock(&st->lock);
        memcpy(models, st->models, sizeof(st->models));
        memcpy(consumers, st->consumers, sizeof(st->consumers));
        pthread_mutex_unlock(&st->lock);
    }
    ok = ok &&
         sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    ok = ok && sqlite3_prepare_v2(db,
                                  "INSERT OR REPLACE INTO fleet_pending "
                                  "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                                  "?,?,?)",
                                  -1, &ins, NULL) == SQLITE_OK;
    for (k = 0; ok && k < n; k++) {
        for (j = 0; ok && j < c[k].n; j++) {
            ok = write_cell(ins, d, &c[k], &c[k].cells[j], models, consumers) ==
                 MF_OK;
            cells++;
        }
    }
    sqlite3_finalize(ins);
    ok = ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (ok) {
        api->log(MF_LOG_INFO,
                 "dashboard: %ld cells not yet added to Redis kept in %s for "
                 "the next start",
                 cells, d->db_path);
    } else if (n > 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        api->log(MF_LOG_WARN,
                 "dashboard: this node's last counts could not be added to "
                 "Redis nor kept in %s (%s): the fleet view misses them",
                 d->db_path, sqlite3_errmsg(db));
    }
    for (k = 0; k < n; k++) {
        free(c[k].cells);
    }
    free(c);
    free(models);
    free(consumers);
}

/* At a load: the counts the last end parked, back into the deltas (and
 * out of the file), to be added with the thread's first write. Returns
 * the cells taken. */
typedef struct {
    int res;
    int64_t start;
    char model[NAME_LEN], consumer[NAME_LEN];
    cell_t x;
} parked_t;

static long
fleet_unpark(dash_t *d)
{
    store_t *st = d->st;
    sqlite3 *db = db_open(d->db_path);
    sqlite3_stmt *q = NULL, *del = NULL;
    parked_t *rows = NULL;
    size_t n = 0, cap = 0, k;
    long taken = 0;
    int ok;

    if (db == NULL) {
        return 0;
    }
    ok = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK &&
         sqlite3_prepare_v2(
             db,
             "SELECT res, start, model, consumer, requests, streams, "
             "unpriced, estimated, errors, input, output, cache_read, "
             "cache_write, reasoning, cost_micro, gen_ms, gen_tokens, lat, "
             "ttft FROM fleet_pending WHERE page=?",
             -1, &q, NULL) == SQLITE_OK &&
         sqlite3_prepare_v2(db, "DELETE FROM fleet_pending WHERE page=?", -1,
                            &del, NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(q, 1, d->path, -1, SQLITE_STATIC);
        sqlite3_bind_text(del, 1, d->path, -1, SQLITE_STATIC);
    }
    while (ok && sqlite3_step(q) == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(q, 2);
        const char *c = (const char *)sqlite3_column_text(q, 3);

        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            parked_t *g = realloc(rows, ncap * sizeof(*g));

            if (g == NULL) {
                ok = 0;
                break;
            }
            rows = g;
            cap = ncap;
        }
        rows[n].res = sqlite3_column_int(q, 0);
        rows[n].start = sqlite3_column_int64(q, 1);
        snprintf(rows[n].model, NAME_LEN, "%s", m ? m : "");
        snprintf(rows[n].consumer, NAME_LEN, "%s", c ? c : "");
        row_cell(q, &rows[n].x);
        n++;
    }
    /* taken out of the file before they are counted: never both */
    ok = ok && sqlite3_step(del) == SQLITE_DONE &&
         sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        n = 0;
    }
    sqlite3_finalize(q);
    sqlite3_finalize(del);
    sqlite3_close(db);
    pthread_mutex_lock(&st->lock);
    for (k = 0; k < n; k++) {
        parked_t *r = &rows[k];
        slot_t *s = r->res ? &st->hour[r->start % HOURS]
                           : &st->minute[r->start % MINUTES];
        cell_t *cell;
        int m, c;

        if (r->start <= 0) {
            continue;
        }
        if (s->start == 0) {
            s->start = r->start;
        }
        m = name_back(st->models, &st->nmodels, d->max_models + 1, r->model);
        c = name_back(st->consumers, &st->nconsumers, d->max_consumers + 1,
                      r->consumer);
        if (s->start == r->start &&
            (cell = cells_find(&s->dcells, &s->dn, &s->dcap, m, c)) != NULL) {
            cell_merge(cell, &r->x);
            taken++;
        }
    }
    pthread_mutex_unlock(&st->lock);
    free(rows);
    if (taken > 0) {
        api->log(MF_LOG_INFO,
                 "dashboard: %ld cells kept from the last run to be added "
                 "to Redis",
                 taken);
    }
    return taken;
}

static double
mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The stage's thread: every flush_s the buckets that changed into
 * SQLite and this node's deltas into Redis; the fleet view read every
 * fleet_refresh_s while the page is watched (every minute when not), or
 * at once when the API finds it older; once more at the end. */
static void *
writer_main(void *arg)
{
    dash_t *d = arg;
    sqlite3 *db = d->db_path ? db_open(d->db_path) : NULL;
    double next_flush = mono_now() + (d->unparked ? 0 : d->flush_s),
           next_read = 0;
    int stop = 0;

    while (!stop) {
        struct timespec until;
        double now = mono_now(), wait, watched;
        int kick;

        wait = next_flush - now;
        if (d->fl != NULL && next_read - now < wait) {
            wait = next_read - now;
        }
        clock_gettime(CLOCK_REALTIME, &until);
        if (wait > 0) {
            double ns = (double)until.tv_nsec + (wait - floor(wait)) * 1e9;

            until.tv_sec += (time_t)wait + (time_t)(ns / 1e9);
            until.tv_nsec = (long)fmod(ns, 1e9);
        }
        pthread_mutex_lock(&d->wlock);
        while (wait > 0 && !d->stop && !d->kick &&
               pthread_cond_timedwait(&d->wcond, &d->wlock, &until) == 0) {
        }
        stop = d->stop;
        kick = d->kick;
        d->kick = 0;
        pthread_mutex_unlock(&d->wlock);
        now = mono_now();
        if (stop || now >= next_flush) {
            if (d->db_path != NULL && db == NULL) {
                db = db_open(d->db_path);
            }
            if (db != NULL) {
                flush(d, db);
            }
            if (d->fl != NULL && fleet_push(d, stop) != MF_OK && stop &&
                db != NULL) {
                /* at a stop the host has no config left to reach Redis
                 * with: the next start adds it */
                fleet_park(d, db);
            }
            next_flush = now + d->flush_s;
        }
        if (d->fl != NULL && !stop && (kick || now >= next_read)) {
            fleet_read(d);
            pthread_mutex_lock(&d->fl->view->lock);
            watched = wall_now() - d->fl->watched_at;
            pthread_mutex_unlock(&d->fl->view->lock);
            next_read = mono_now() + (watched < 600 ? d->refresh_s : 60);
        }
    }
    sqlite3_close(db);
    return NULL;
}

/* Life */

static void dash_fini(void *state);

static int
dash_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL), *v;
    const char *key, *path;
    dash_t *d;
    size_t k, n;
    char buf[512];
    int bad = 0;

    api = host;
    if (api->abi_minor < 5) {
        api->log(MF_LOG_ERROR, "dashboard: needs a host with ABI 1.5");
        json_decref(conf);
        return MF_ERR;
    }
    json_object_foreach(conf, key, v)
    {
        if (strcmp(key, "path") != 0 && strcmp(key, "max_models") != 0 &&
            strcmp(key, "max_consumers") != 0 && strcmp(key, "db") != 0 &&
            strcmp(key, "flush_s") != 0 && strcmp(key, "fleet") != 0 &&
            strcmp(key, "fleet_refresh_s") != 0) {
            api->log(MF_LOG_ERROR,
                     "dashboard: unknown config key '%s' (path, max_models, "
                     "max_consumers, db, flush_s, fleet, fleet_refresh_s)",
                     key);
            bad = 1;
        } else if (strcmp(key, "fleet") == 0) {
            if (!json_is_string(v) ||
                (strcmp(json_string_value(v), "redis") != 0 &&
                 strcmp(json_string_value(v), "none") != 0)) {
                api->log(MF_LOG_ERROR, "dashboard: fleet is redis (every "
                                       "node's roll-ups summed in the "
                                       "config's redis:) or none");
                bad = 1;
            }
        } else if (strcmp(key, "fleet_refresh_s") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > 300) {
                api->log(MF_LOG_ERROR, "dashboard: fleet_refresh_s is a whole "
                                       "number of seconds from 1 to 300");
                bad = 1;
            }
        } else if (strcmp(key, "db") == 0) {
            if (!json_is_string(v) || json_string_length(v) == 0) {
                api->log(MF_LOG_ERROR, "dashboard: db is a file name, or "
                                       "\"none\" to keep the roll-ups in "
                                       "memory only");
                bad = 1;
            }
        } else if (strcmp(key, "flush_s") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > 3600) {
                api->log(MF_LOG_ERROR,
                         "dashboard: flush_s is a whole number of seconds "
                         "from 1 to 3600");
                bad = 1;
            }
        } else if (strcmp(key, "path") != 0 &&
                   (!json_is_integer(v) || json_integer_value(v) < 1 ||
                    json_integer_value(v) > NAMES - 1)) {
            api->log(MF_LOG_ERROR,
                     "dashboard: %s is a whole number from 1 to %d", key,
                     NAMES - 1);
            bad = 1;
        }
    }
    path = json_string_value(json_object_get(conf, "path"));
    path = path ? path : "/dashboard";
    if (path[0] != '/' || strlen(path) > 200) {
        api->log(MF_LOG_ERROR, "dashboard: path must start with '/'");
        bad = 1;
    }
    v = json_object_get(conf, "fleet");
    if (!bad && v != NULL && strcmp(json_string_value(v), "redis") == 0) {
        if (api->config_section("redis") == NULL) {
            api->log(MF_LOG_ERROR, "dashboard: fleet: redis needs `redis:` "
                                   "in the config");
            bad = 1;
        } else if (json_integer_value(json_object_get(conf, "flush_s")) >
                   FLEET_NODE_S / 2) {
            /* a node writes (and so counts as alive) every flush_s */
            api->log(MF_LOG_ERROR,
                     "dashboard: with fleet: redis flush_s is at most %d",
                     FLEET_NODE_S / 2);
            bad = 1;
        } else if (strpbrk(path, "{}") != NULL) {
            /* the path is the keys' hash tag */
            api->log(MF_LOG_ERROR, "dashboard: with fleet: redis the path "
                                   "may not hold '{' or '}'");
            bad = 1;
        }
    }
    if (bad || (d = calloc(1, sizeof(*d))) == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    n = strlen(path);
    while (n > 1 && path[n - 1] == '/') {
        n--;
    }
    d->path = strndup(path, n);
    snprintf(buf, sizeof(buf), "%s/api/summary", d->path);
    d->api_summary = strdup(buf);
    snprintf(buf, sizeof(buf), "%s/api/tail", d->path);
    d->api_tail = strdup(buf);
    snprintf(buf, sizeof(buf), "%s/api/health", d->path);
    d->api_health = strdup(buf);
    v = json_object_get(conf, "max_models");
    d->max_models = v ? (int)json_integer_value(v) : NAMES - 1;
    v = json_object_get(conf, "max_consumers");
    d->max_consumers = v ? (int)json_integer_value(v) : NAMES - 1;
    v = json_object_get(conf, "flush_s");
    d->flush_s = v ? (int)json_integer_value(v) : 10;
    v = json_object_get(conf, "fleet_refresh_s");
    d->refresh_s = v ? (int)json_integer_value(v) : 5;
    v = json_object_get(conf, "fleet");
    d->fleet = v != NULL && strcmp(json_string_value(v), "redis") == 0;
    pthread_mutex_init(&d->wlock, NULL);
    pthread_cond_init(&d->wcond, NULL);
    {
        const char *db = json_string_value(json_object_get(conf, "db"));
        const char *dir = json_string_value(api->config_section("dir"));

        db = db ? db : "dashboard.db";
        if (strcmp(db, "none") != 0) {
            size_t len = strlen(db) + (dir ? strlen(dir) : 0) + 2;

            d->db_path = malloc(len);
            if (d->db_path != NULL) {
                snprintf(d->db_path, len, "%s%s%s",
                         db[0] == '/' || !dir ? "" : dir,
                         db[0] == '/' || !dir ? "" : "/", db);
            }
        }
    }
    json_decref(conf);
    d->prices = json_deep_copy(api->config_section("prices"));
    d->known = json_object();
    {
        const json_t *names = api->config_section("models");
        const char *pk;
        json_t *nv;
        size_t j;

        json_array_foreach(names, j, nv)
        {
            json_object_set_new(d->known, json_string_value(nv), json_true());
        }
        json_object_foreach(d->prices, pk, nv)
        {
            if (strpbrk(pk, "*?[") == NULL) {
                json_object_set_new(d->known, pk, json_true());
            }
        }
    }
    /* one store per page: two dashboard stages count apart */
    snprintf(buf, sizeof(buf), "dashboard:v%d:%s", STORE_VERSION, d->path);
    d->st = api->keep_memory(buf, sizeof(store_t));
    if (d->st == NULL) {
        dash_fini(d);
        return MF_ERR;
    }
    /* the first load makes the store; later ones find it (one init runs
     * at a time) */
    if (!d->st->ready) {
        pthread_mutex_init(&d->st->lock, NULL);
        pthread_mutex_init(&d->st->flush_lock, NULL);
        d->st->version = STORE_VERSION;
        snprintf(d->st->models[0], NAME_LEN, "other");
        snprintf(d->st->consumers[0], NAME_LEN, "other");
        d->st->nmodels = d->st->nconsumers = 1;
        {
            char hn[64] = "";
            struct timespec ts;

            /* this process among the fleet's nodes */
            gethostname(hn, sizeof(hn) - 1);
            clock_gettime(CLOCK_REALTIME, &ts);
            snprintf(d->st->node, sizeof(d->st->node), "%s:%ld:%lx", hn,
                     (long)getpid(),
                     (unsigned long)(ts.tv_nsec ^ (ts.tv_sec << 20)));
        }
        /* after a start: what the last run wrote */
        if (d->db_path != NULL && load(d) != MF_OK) {
            int k2;

            /* nothing half read stays for the next try */
            for (k2 = 0; k2 < MINUTES; k2++) {
                d->st->minute[k2].start = 0;
                d->st->minute[k2].n = 0;
            }
            for (k2 = 0; k2 < HOURS; k2++) {
                d->st->hour[k2].start = 0;
                d->st->hour[k2].n = 0;
            }
            d->st->nmodels = d->st->nconsumers = 1;
            dash_fini(d);
            return MF_ERR;
        }
        d->st->ready = 1;
    }
    if (d->fleet) {
        size_t len = strlen(d->path) + 16;

        d->fkey = malloc(len);
        d->fl = calloc(1, sizeof(*d->fl));
        if (d->fkey == NULL || d->fl == NULL ||
            (d->fl->view = calloc(1, sizeof(store_t))) == NULL) {
            dash_fini(d);
            return MF_ERR;
        }
        snprintf(d->fkey, len, "mf:dash:{%s}:", d->path);
        pthread_mutex_init(&d->fl->view->lock, NULL);
        snprintf(d->fl->view->models[0], NAME_LEN, "other");
        snprintf(d->fl->view->consumers[0], NAME_LEN, "other");
        d->fl->view->nmodels = d->fl->view->nconsumers = 1;
        d->fl->push_ok = 1;
        snprintf(d->fl->err, sizeof(d->fl->err), "not read from Redis yet");
        if (d->db_path != NULL) {
            d->unparked = fleet_unpark(d) > 0;
        }
    }
    if (d->db_path != NULL || d->fl != NULL) {
        if (pthread_create(&d->writer, NULL, writer_main, d) != 0) {
            dash_fini(d);
            return MF_ERR;
        }
        d->writer_up = 1;
    }
    {
        const struct {
            const char *path;
            mf_endpoint_fn fn;
        } eps[] = {{d->path, serve_page},
                   {d->api_summary, serve_summary},
                   {d->api_tail, serve_tail},
                   {d->api_health, serve_health}};

        for (k = 0; k < sizeof(eps) / sizeof(eps[0]); k++) {
            mf_endpoint_def_t e = {.size = sizeof(e),
                                   .listener = MF_LISTENER_STATUS,
                                   .method = "GET",
                                   .path = eps[k].path,
                                   .handler = eps[k].fn};

            if (eps[k].path == NULL || api->add_endpoint(&e) != MF_OK) {
                dash_fini(d);
                return MF_ERR;
            }
        }
    }
    *state = d;
    return MF_OK;
}

static void
dash_fini(void *state)
{
    dash_t *d = state;

    /* the store stays: the next load takes it over; the writer writes
     * what changed once more */
    if (d->writer_up) {
        pthread_mutex_lock(&d->wlock);
        d->stop = 1;
        pthread_cond_signal(&d->wcond);
        pthread_mutex_unlock(&d->wlock);
        pthread_join(d->writer, NULL);
    }
    pthread_mutex_destroy(&d->wlock);
    pthread_cond_destroy(&d->wcond);
    if (d->fl != NULL && d->fl->view != NULL) {
        int k;

        for (k = 0; k < MINUTES; k++) {
            free(d->fl->view->minute[k].cells);
        }
        for (k = 0; k < HOURS; k++) {
            free(d->fl->view->hour[k].cells);
        }
        pthread_mutex_destroy(&d->fl->view->lock);
        free(d->fl->view);
    }
    free(d->fl);
    free(d->fkey);
    free(d->db_path);
    price_forget();
    json_decref(d->prices);
    json_decref(d->known);
    free(d->path);
    free(d->api_summary);
    free(d->api_tail);
    free(d->api_health);
    free(d);
}

static const mf_plugin_t dashboard = {
    MF_PLUGIN_ABI,     .name = "dashboard", .version = "1.0.0",
    .init = dash_init, .fini = dash_fini,   .on_log = dash_on_log,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &dashboard;
}
