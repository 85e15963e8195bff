/*
 * The metrics registry (metrics.h). A metric holds a fixed table of at
 * most max_series label sets, found by an open-addressing index that
 * readers probe without a lock (a series is published, whole, by a
 * release store of its index slot; adding one takes the metric's lock).
 * Values sit in one array per shard, allocated on the shard's first
 * write: worker `id` writes shard `id` alone, with relaxed loads and
 * stores (plain moves, no locked instruction); threads that are no
 * worker share the last shard under the metric's lock. A scrape sums
 * the shards. Histogram exemplars (OpenMetrics) are kept one per series
 * and shard behind a sequence count.
 */
#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NSHARDS (MF_METRICS_MAX_WORKERS + 1)
#define OTHER_SHARD MF_METRICS_MAX_WORKERS
#define MAX_VALUE_LEN 128
#define MAX_SERIES_CAP 1000000

typedef _Atomic uint64_t cell_t;

typedef struct {
    uint32_t hash;
    char **values; /* label values, sanitized, NUL-terminated */
} series_t;

typedef struct {
    atomic_uint seq; /* odd while written */
    char trace[33];
    double value;
    double ts;
} exemplar_t;

struct mf_metric_s {
    struct mf_metric_s *next;
    mf_metric_type_t type;
    char *name;
    char *help;
    char **labels;
    size_t nlabels;
    double *buckets;
    size_t nbuckets;
    size_t max_series;
    size_t nvals;      /* cells per series: 1, or buckets + Inf + sum */
    series_t **series; /* [max_series] */
    atomic_size_t nseries;
    atomic_uint *index; /* slots: series index + 1, 0 empty */
    size_t mask;
    pthread_mutex_t lock;
    _Atomic(cell_t *) shard[NSHARDS];
    _Atomic(exemplar_t *) ex[NSHARDS];
    cell_t *setv; /* gauges: the value set, added to the shards' sum */
    atomic_uint_fast64_t dropped;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static mf_metric_t *reg_head, *reg_tail;
static size_t default_cap = 2000;
static __thread int my_shard = -1;

static uint64_t
d2u(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof(u));
    return u;
}

static double
u2d(uint64_t u)
{
    double d;

    memcpy(&d, &u, sizeof(d));
    return d;
}

void
mf_metrics_init(size_t default_max_series)
{
    mf_metrics_set_default_max_series(default_max_series);
}

void
mf_metrics_set_default_max_series(size_t n)
{
    if (n > 0 && n <= MAX_SERIES_CAP) {
        default_cap = n;
    }
}

static void
metric_free(mf_metric_t *m)
{
    size_t i, j, n = atomic_load(&m->nseries);

    for (i = 0; i < n; i++) {
        for (j = 0; j < m->nlabels; j++) {
            free(m->series[i]->values[j]);
        }
        free(m->series[i]->values);
        free(m->series[i]);
    }
    for (i = 0; i < NSHARDS; i++) {
        free(atomic_load(&m->shard[i]));
        free(atomic_load(&m->ex[i]));
    }
    for (i = 0; i < m->nlabels; i++) {
        free(m->labels[i]);
    }
    free(m->labels);
    free(m->series);
    free(m->index);
    free(m->buckets);
    free(m->setv);
    free(m->name);
    free(m->help);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void
mf_metrics_free(void)
{
    mf_metric_t *m, *next;

    pthread_mutex_lock(&reg_lock);
    for (m = reg_head; m != NULL; m = next) {
        next = m->next;
        metric_free(m);
    }
    reg_head = reg_tail = NULL;
    pthread_mutex_unlock(&reg_lock);
}

void
mf_metrics_thread_shard(int id)
{
    my_shard = id >= 0 && id < MF_METRICS_MAX_WORKERS ? id : -1;
}

static int
valid_name(const char *s, int colon)
{
    size_t i;

    if (s == NULL || s[0] == '\0') {
        return 0;
    }
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');

        if (!ok) {
            return 0;
        }
    }
    return 1;
}

static int
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Checks a definition; MF_ERR with the reason in err. */
static int
check_def(const mf_metric_def_t *d, size_t *nlabels, char *err, size_t cap)
{
    size_t i, j;

    if (d == NULL || d->size < sizeof(mf_metric_def_t) ||
        d->type > MF_METRIC_HISTOGRAM) {
        snprintf(err, cap, "a metric definition needs size and a type");
        return MF_ERR;
    }
    if (!valid_name(d->name, 1)) {
        snprintf(err, cap, "metric name '%s' is not [a-zA-Z_:][a-zA-Z0-9_:]*",
                 d->name ? d->name : "");
        return MF_ERR;
    }
    if (d->type == MF_METRIC_COUNTER && !ends_with(d->name, "_total")) {
        snprintf(err, cap, "counter '%s': a counter's name ends in _total",
                 d->name);
        return MF_ERR;
    }
    if (d->type != MF_METRIC_COUNTER && ends_with(d->name, "_total")) {
        snprintf(err, cap, "metric '%s': only a counter's name ends in _total",
                 d->name);
        return MF_ERR;
    }
    for (i = 0; d->labels != NULL && d->labels[i] != NULL; i++) {
        if (i >= MF_METRIC_MAX_LABELS) {
            snprintf(err, cap, "metric '%s': more than %d labels", d->name,
                     MF_METRIC_MAX_LABELS);
            return MF_ERR;
        }
        if (!valid_name(d->labels[i], 0) ||
            strncmp(d->labels[i], "__", 2) == 0 ||
            (d->type == MF_METRIC_HISTOGRAM &&
             strcmp(d->labels[i], "le") == 0)) {
            snprintf(err, cap, "metric '%s': label name '%s' is not allowed",
                     d->name, d->labels[i]);
            return MF_ERR;
        }
        for (j = 0; j < i; j++) {
            if (strcmp(d->labels[i], d->labels[j]) == 0) {
                snprintf(err, cap, "metric '%s': label '%s' twice", d->name,
                         d->labels[i]);
                return MF_ERR;
            }
        }
    }
    *nlabels = i;
    if (d->type == MF_METRIC_HISTOGRAM) {
        if (d->nbuckets == 0 || d->nbuckets > MF_METRIC_MAX_BUCKETS ||
            d->buckets == NULL) {
            snprintf(err, cap, "histogram '%s': give 1..%d buckets", d->name,
                     MF_METRIC_MAX_BUCKETS);
            return MF_ERR;
        }
        for (i = 0; i < d->nbuckets; i++) {
            if (!isfinite(d->buckets[i]) ||
                (i > 0 && d->buckets[i] <= d->buckets[i - 1])) {
                snprintf(err, cap,
                         "histogram '%s': buckets must be finite and "
                         "ascending",
                         d->name);
                return MF_ERR;
            }
        }
    }
    if (d->max_series > MAX_SERIES_CAP) {
        snprintf(err, cap, "metric '%s': max_series above %d", d->name,
                 MAX_SERIES_CAP);
        return MF_ERR;
    }
    return MF_OK;
}

/* Whether m was declared as d (the same type, labels and buckets). */
static int
same_def(const mf_metric_t *m, const mf_metric_def_t *d, size_t nlabels)
{
    size_t i;

    if (m->type != d->type || m->nlabels != nlabels ||
        (m->type == MF_METRIC_HISTOGRAM && m->nbuckets != d->nbuckets)) {
        return 0;
    }
    for (i = 0; i < nlabels; i++) {
        if (strcmp(m->labels[i], d->labels[i]) != 0) {
            return 0;
        }
    }
    for (i = 0; m->type == MF_METRIC_HISTOGRAM && i < m->nbuckets; i++) {
        if (m->buckets[i] != d->buckets[i]) {
            return 0;
        }
    }
    return 1;
}

mf_metric_t *
mf_metric_declare(const mf_metric_def_t *d, char *err, size_t errcap)
{
    mf_metric_t *m;
    size_t nlabels, i, slots = 2;

    if (check_def(d, &nlabels, err, errcap) != MF_OK) {
        return NULL;
    }
    pthread_mutex_lock(&reg_lock);
    for (m = reg_head; m != NULL; m = m->next) {
        if (strcmp(m->name, d->name) == 0) {
            if (!same_def(m, d, nlabels)) {
                snprintf(err, errcap,
                         "metric '%s' is declared already with another "
                         "type, labels or buckets",
                         d->name);
                m = NULL;
            }
            pthread_mutex_unlock(&reg_lock);
            return m;
        }
    }
    m = mf_xcalloc(1, sizeof(*m));
    m->type = d->type;
    m->name = mf_xstrdup(d->name);
    m->help = mf_xstrdup(d->help ? d->help : "");
    for (i = 0; m->help[i] != '\0'; i++) {
        if (m->help[i] == '\n' || m->help[i] == '\r') {
            m->help[i] = ' ';
        }
    }
    m->nlabels = nlabels;
    m->labels = mf_xcalloc(nlabels + 1, sizeof(char *));
    for (i = 0; i < nlabels; i++) {
        m->labels[i] = mf_xstrdup(d->labels[i]);
    }
    if (d->type == MF_METRIC_HISTOGRAM) {
        m->nbuckets = d->nbuckets;
        m->buckets = mf_xmalloc(d->nbuckets * sizeof(double));
        memcpy(m->buckets, d->buckets, d->nbuckets * sizeof(double));
        m->nvals = d->nbuckets + 2; /* buckets, +Inf, sum */
    } else {
        m->nvals = 1;
    }
    m->max_series = nlabels == 0        ? 1
                    : d->max_series > 0 ? d->max_series
                                        : default_cap;
    m->series = mf_xcalloc(m->max_series, sizeof(series_t *));
    while (slots < m->max_series * 2) {
        slots <<= 1;
    }
    m->index = mf_xcalloc(slots, sizeof(atomic_uint));
    m->mask = slots - 1;
    if (d->type == MF_METRIC_GAUGE) {
        m->setv = mf_xcalloc(m->max_series, sizeof(cell_t));
    }
    pthread_mutex_init(&m->lock, NULL);
    if (reg_tail != NULL) {
        reg_tail->next = m;
    } else {
        reg_head = m;
    }
    reg_tail = m;
    pthread_mutex_unlock(&reg_lock);
    return m;
}

/* The bytes of a label value that are kept. */
static size_t
cut_len(size_t n)
{
    return n < MAX_VALUE_LEN ? n : MAX_VALUE_LEN;
}

/* A label value as it is kept: at most MAX_VALUE_LEN bytes, cut on a
 * character boundary; controls and bytes that are not UTF-8 become '?'. */
static char *
sanitize(mf_str_t v)
{
    size_t n = cut_len(v.len), i = 0, o = 0;
    char *s = mf_xmalloc(n + 1);
    const unsigned char *p = (const unsigned char *)v.data;

    while (i < n) {
        unsigned char c = p[i];
        size_t k = c < 0x80             ? 1
                   : (c & 0xe0) == 0xc0 ? 2
                   : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4
                                        : 0;
        size_t j;

        if (k == 1) {
            s[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
            i++;
            continue;
        }
        for (j = 1; k > 1 && j < k; j++) {
            if (i + j >= n || (p[i + j] & 0xc0) != 0x80) {
                k = 0;
                break;
            }
        }
        if (k == 0 || (k == 2 && c < 0xc2)) {
            s[o++] = '?';
            i++;
            continue;
        }
        memcpy(s + o, p + i, k);
        o += k;
        i += k;
    }
    s[o] = '\0';
    return s;
}

static uint32_t
hash_values(const mf_str_t *v, size_t n)
{
    uint32_t h = 2166136261u;
    size_t i, j;

    for (i = 0; i < n; i++) {
        size_t len = cut_len(v[i].len);

        for (j = 0; j < len; j++) {
            h = (h ^ (unsigned char)v[i].data[j]) * 16777619u;
        }
        h = (h ^ 0xff) * 16777619u;
    }
    return h;
}

/* Whether a series holds these values (as given, before sanitizing: a
 * value sanitizing changed never matches, and finds its series by the
 * slow path under the lock). */
static int
series_is(const series_t *s, const mf_str_t *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        size_t len = cut_len(v[i].len);

        if (strlen(s->values[i]) != len ||
            (len > 0 && memcmp(s->values[i], v[i].data, len) != 0)) {
            return 0;
        }
    }
    return 1;
}

static int
probe(mf_metric_t *m, uint32_t h, const mf_str_t *v, size_t n, size_t *slot)
{
    size_t i = h & m->mask, k;

    for (k = 0; k <= m->mask; k++) {
        unsigned s = atomic_load_explicit(&m->index[i], memory_order_acquire);

        if (s == 0) {
            *slot = i;
            return -1;
        }
        if (m->series[s - 1]->hash == h && series_is(m->series[s - 1], v, n)) {
            return (int)(s - 1);
        }
        i = (i + 1) & m->mask;
    }
    *slot = (size_t)-1;
    return -1;
}

/* The series of values, added when new and the cap allows; -1 when it
 * would pass the cap (counted as dropped). Values are compared as they
 * are kept (sanitized): a value sanitizing changes misses the lock-free
 * probe and finds its series under the lock. */
static int
series_of(mf_metric_t *m, const mf_str_t *v, size_t n)
{
    mf_str_t clean[MF_METRIC_MAX_LABELS] = {{0}};
    char *kept[MF_METRIC_MAX_LABELS] = {0};
    size_t slot, idx, i;
    series_t *s;
    uint32_t h;
    int found;

    found = probe(m, hash_values(v, n), v, n, &slot);
    if (found >= 0) {
        return found;
    }
    for (i = 0; i < n; i++) {
        kept[i] = sanitize(v[i]);
        clean[i] = mf_str_from(kept[i]);
    }
    h = hash_values(clean, n);
    pthread_mutex_lock(&m->lock);
    found = probe(m, h, clean, n, &slot);
    idx = atomic_load_explicit(&m->nseries, memory_order_relaxed);
    if (found >= 0 || idx >= m->max_series || slot == (size_t)-1) {
        pthread_mutex_unlock(&m->lock);
        for (i = 0; i < n; i++) {
            free(kept[i]);
        }
        if (found < 0) {
            atomic_fetch_add_explicit(&m->dropped, 1, memory_order_relaxed);
        }
        return found;
    }
    s = mf_xcalloc(1, sizeof(*s));
    s->hash = h;
    s->values = mf_xcalloc(n + 1, sizeof(char *));
    for (i = 0; i < n; i++) {
        s->values[i] = kept[i];
    }
    m->series[idx] = s;
    atomic_store_explicit(&m->nseries, idx + 1, memory_order_release);
    atomic_store_explicit(&m->index[slot], (unsigned)idx + 1,
                          memory_order_release);
    pthread_mutex_unlock(&m->lock);
    return (int)idx;
}

/* The calling thread's cells of m, allocated on its first write; the
 * shared shard's are written under m->lock (taken by the caller). */
static __attribute__((noinline)) cell_t *
cells_alloc(mf_metric_t *m, int shard)
{
    cell_t *c = mf_xcalloc(m->max_series * m->nvals, sizeof(cell_t));

    atomic_store_explicit(&m->shard[shard], c, memory_order_release);
    return c;
}

static inline cell_t *
cells_of(mf_metric_t *m, int shard)
{
    cell_t *c = atomic_load_explicit(&m->shard[shard], memory_order_acquire);

    return c != NULL ? c : cells_alloc(m, shard);
}

static void
cell_add(cell_t *c, double d)
{
    uint64_t v = atomic_load_explicit(c, memory_order_relaxed);

    atomic_store_explicit(c, d2u(u2d(v) + d), memory_order_relaxed);
}

static void
cell_inc(cell_t *c)
{
    uint64_t v = atomic_load_explicit(c, memory_order_relaxed);

    atomic_store_explicit(c, v + 1, memory_order_relaxed);
}

static void
exemplar_put(mf_metric_t *m, int shard, int idx, double value, mf_str_t trace)
{
    exemplar_t *ex = atomic_load_explicit(&m->ex[shard], memory_order_acquire);
    unsigned seq;

    struct timespec now;

    /* checked when written out (latest_exemplar), not on the request
     * path: every request's histograms carry one */
    if (trace.len == 0 || trace.len > 32) {
        return;
    }
    if (ex == NULL) {
        ex = mf_xcalloc(m->max_series, sizeof(exemplar_t));
        atomic_store_explicit(&m->ex[shard], ex, memory_order_release);
    }
    ex += idx;
    seq = atomic_load_explicit(&ex->seq, memory_order_relaxed);
    atomic_store_explicit(&ex->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy(ex->trace, trace.data, trace.len);
    ex->trace[trace.len] = '\0';
    ex->value = value;
    /* the tick's time (a few ms coarse) is fine for an exemplar and costs
     * a read of the vDSO page, not a clock read */
    clock_gettime(CLOCK_REALTIME_COARSE, &now);
    ex->ts = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    atomic_store_explicit(&ex->seq, seq + 2, memory_order_release);
}

typedef enum { OP_ADD, OP_SET, OP_OBSERVE } op_t;

/* Whether op fits m's type and x. */
static int
op_ok(const mf_metric_t *m, op_t op, double x)
{
    return !isnan(x) &&
           (op == OP_OBSERVE) == (m->type == MF_METRIC_HISTOGRAM) &&
           !(op == OP_SET && m->type != MF_METRIC_GAUGE) &&
           !(m->type == MF_METRIC_COUNTER && x < 0);
}

/* op on series idx (valid, op checked); inlined where it is called, op
 * then known when compiled (a counter's add is a few instructions) */
static inline __attribute__((always_inline)) int
record_at(mf_metric_t *m, op_t op, int idx, double x, mf_str_t trace)
{
    int shard = my_shard;
    cell_t *c;
    size_t b;

    if (op == OP_SET) {
        atomic_store_explicit(&m->setv[idx], d2u(x), memory_order_relaxed);
        return MF_OK;
    }
    if (shard < 0) {
        shard = OTHER_SHARD;
        pthread_mutex_lock(&m->lock);
    }
    c = cells_of(m, shard) + (size_t)idx * m->nvals;
    if (op == OP_ADD) {
        cell_add(c, x);
    } else {
        for (b = 0; b < m->nbuckets && x > m->buckets[b]; b++) {
        }
        cell_inc(&c[b]); /* b == nbuckets: +Inf */
        cell_add(&c[m->nbuckets + 1], x);
        exemplar_put(m, shard, idx, x, trace);
    }
    if (shard == OTHER_SHARD) {
        pthread_mutex_unlock(&m->lock);
    }
    return MF_OK;
}

static int
record(mf_metric_t *m, op_t op, const mf_str_t *v, size_t n, double x,
       mf_str_t trace)
{
    int idx;

    if (m == NULL || n != m->nlabels || (n > 0 && v == NULL) ||
        !op_ok(m, op, x)) {
        return MF_ERR;
    }
    idx = series_of(m, v, n);
    if (idx < 0) {
        return MF_ERR;
    }
    return record_at(m, op, idx, x, trace);
}

int
mf_metric_series(mf_metric_t *m, const mf_str_t *values, size_t n)
{
    if (m == NULL || n != m->nlabels || (n > 0 && values == NULL)) {
        return -1;
    }
    return series_of(m, values, n);
}

/* a series number metric_series gave (published: below nseries) */
static int
series_ok(mf_metric_t *m, int series)
{
    return m != NULL && series >= 0 &&
           (size_t)series <
               atomic_load_explicit(&m->nseries, memory_order_acquire);
}

int
mf_metric_add_at(mf_metric_t *m, int series, double delta)
{
    if (!series_ok(m, series) || !op_ok(m, OP_ADD, delta)) {
        return MF_ERR;
    }
    return record_at(m, OP_ADD, series, delta, MF_STR_NULL);
}

int
mf_metric_observe_at(mf_metric_t *m, int series, double value,
                     mf_str_t trace_id)
{
    if (!series_ok(m, series) || !op_ok(m, OP_OBSERVE, value)) {
        return MF_ERR;
    }
    return record_at(m, OP_OBSERVE, series, value, trace_id);
}

int
mf_metric_add(mf_metric_t *m, const mf_str_t *values, size_t n, double delta)
{
    return record(m, OP_ADD, values, n, delta, MF_STR_NULL);
}

int
mf_metric_set(mf_metric_t *m, const mf_str_t *values, size_t n, double value)
{
    return record(m, OP_SET, values, n, value, MF_STR_NULL);
}

int
mf_metric_observe(mf_metric_t *m, const mf_str_t *values, size_t n,
                  double value, mf_str_t trace_id)
{
    return record(m, OP_OBSERVE, values, n, value, trace_id);
}

/* Reading */

/* Sums series idx over the shards into out[nvals] (bucket counts as
 * counts, the rest as doubles). */
static void
sum_series(mf_metric_t *m, size_t idx, double *out)
{
    size_t s, k;

    for (k = 0; k < m->nvals; k++) {
        out[k] = 0;
    }
    for (s = 0; s < NSHARDS; s++) {
        cell_t *c = atomic_load_explicit(&m->shard[s], memory_order_acquire);

        if (c == NULL) {
            continue;
        }
        c += idx * m->nvals;
        for (k = 0; k < m->nvals; k++) {
            uint64_t u = atomic_load_explicit(&c[k], memory_order_relaxed);
            int is_count = m->type == MF_METRIC_HISTOGRAM && k <= m->nbuckets;

            out[k] += is_count ? (double)u : u2d(u);
        }
    }
    if (m->setv != NULL) {
        out[0] +=
            u2d(atomic_load_explicit(&m->setv[idx], memory_order_relaxed));
    }
}

/* Whether s is lowercase hex digits, at least one. */
static int
hex_id(const char *s)
{
    const char *p = s;

    for (; (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'); p++) {
    }
    return p > s && *p == '\0';
}

/* The latest exemplar of series idx over the shards; 0 when none. */
static int
latest_exemplar(mf_metric_t *m, size_t idx, exemplar_t *best)
{
    size_t s;
    int have = 0;

    for (s = 0; s < NSHARDS; s++) {
        exemplar_t *ex = atomic_load_explicit(&m->ex[s], memory_order_acquire);
        exemplar_t copy;
        unsigned a, b;
        int tries = 0;

        if (ex == NULL) {
            continue;
        }
        ex += idx;
        do {
            a = atomic_load_explicit(&ex->seq, memory_order_acquire);
            memcpy(copy.trace, ex->trace, sizeof(copy.trace));
            copy.value = ex->value;
            copy.ts = ex->ts;
            atomic_thread_fence(memory_order_acquire);
            b = atomic_load_explicit(&ex->seq, memory_order_relaxed);
        } while ((a != b || (a & 1)) && ++tries < 100);
        if (a != b || (a & 1) || a == 0) {
            continue;
        }
        copy.trace[32] = '\0';
        if (!hex_id(copy.trace)) {
            continue; /* what a stage gave is written only when it is an id */
        }
        if (!have || copy.ts > best->ts) {
            memcpy(best->trace, copy.trace, sizeof(best->trace));
            best->value = copy.value;
            best->ts = copy.ts;
            have = 1;
        }
    }
    return have;
}

/* an integer's digits, right to left into the end of buf; their start */
static char *
put_digits(char *end, uint64_t u)
{
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    return end;
}

static void
put_value(mf_buf_t *out, double v)
{
    if (isinf(v)) {
        mf_buf_append(out, v > 0 ? "+Inf" : "-Inf", 4);
    } else if (v == floor(v) && fabs(v) < 1e15) {
        /* counts, the most of a scrape: no printf */
        char buf[24], *end = buf + sizeof(buf), *p;

        p = put_digits(end, (uint64_t)fabs(v));
        if (v < 0) {
            *--p = '-';
        }
        mf_buf_append(out, p, (size_t)(end - p));
    } else {
        mf_buf_printf(out, "%.17g", v);
    }
}

/* s escaped: runs without a character to escape appended whole */
static void
put_escaped(mf_buf_t *out, const char *s, int quote)
{
    const char *stop = quote ? "\\\n\"" : "\\\n";

    for (;;) {
        size_t run = strcspn(s, stop);

        mf_buf_append(out, s, run);
        s += run;
        if (*s == '\0') {
            return;
        }
        mf_buf_append(out, *s == '\n' ? "\\n" : *s == '"' ? "\\\"" : "\\\\", 2);
        s++;
    }
}

/* name{labels,le="..."} and a space; suffix is "" or "_bucket", ... */
static void
put_sample_name(mf_buf_t *out, const mf_metric_t *m, const char *suffix,
                const series_t *s, const char *le)
{
    size_t i;
    int any = 0;

    mf_buf_append(out, m->name, strlen(m->name));
    mf_buf_append(out, suffix, strlen(suffix));
    for (i = 0; i < m->nlabels; i++) {
        mf_buf_append(out, any++ ? "," : "{", 1);
        mf_buf_append(out, m->labels[i], strlen(m->labels[i]));
        mf_buf_append(out, "=\"", 2);
        put_escaped(out, s->values[i], 1);
        mf_buf_append(out, "\"", 1);
    }
    if (le != NULL) {
        mf_buf_append(out, any++ ? ",le=\"" : "{le=\"", 5);
        mf_buf_append(out, le, strlen(le));
        mf_buf_append(out, "\"", 1);
    }
    if (any) {
        mf_buf_append(out, "}", 1);
    }
    mf_buf_append(out, " ", 1);
}

static void
put_family(mf_buf_t *out, const char *name, size_t len, const char *type,
           const char *help, int om)
{
    mf_buf_printf(out, "# HELP %.*s ", (int)len, name);
    put_escaped(out, help, om);
    mf_buf_printf(out, "\n# TYPE %.*s %s\n", (int)len, name, type);
}

static void
render_metric(mf_buf_t *out, mf_metric_t *m, int om)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    size_t n = atomic_load_explicit(&m->nseries, memory_order_acquire);
    size_t len = strlen(m->name), i, b;
    double vals[MF_METRIC_MAX_BUCKETS + 2];

    static char les[MF_METRIC_MAX_BUCKETS + 1][32]; /* under reg_lock */

    if (om && m->type == MF_METRIC_COUNTER) {
        len -= 6; /* the family's name has no _total */
    }
    put_family(out, m->name, len, types[m->type], m->help, om);
    /* the bounds' text, once for every series */
    for (b = 0; m->type == MF_METRIC_HISTOGRAM && b <= m->nbuckets; b++) {
        char *le = les[b];

        if (b < m->nbuckets) {
            snprintf(le, sizeof(les[b]), "%.15g", m->buckets[b]);
            if (om && strpbrk(le, ".e") == NULL) {
                snprintf(le + strlen(le), sizeof(les[b]) - strlen(le), ".0");
            }
        } else {
            snprintf(le, sizeof(les[b]), "+Inf");
        }
    }
    for (i = 0; i < n; i++) {
        const series_t *s = m->series[i];
        exemplar_t ex;
        int have_ex = 0;
        double cum = 0;

        sum_series(m, i, vals);
        if (m->type != MF_METRIC_HISTOGRAM) {
            put_sample_name(out, m, "", s, NULL);
            put_value(out, vals[0]);
            mf_buf_append(out, "\n", 1);
            continue;
        }
        if (om) {
            have_ex = latest_exemplar(m, i, &ex);
        }
        for (b = 0; b <= m->nbuckets; b++) {
            cum += vals[b];
            put_sample_name(out, m, "_bucket", s, les[b]);
            put_value(out, cum);
            if (have_ex && (b == m->nbuckets || ex.value <= m->buckets[b]) &&
                (b == 0 || ex.value > m->buckets[b - 1])) {
                mf_buf_printf(out, " # {trace_id=\"%s\"} ", ex.trace);
                put_value(out, ex.value);
                mf_buf_printf(out, " %.3f", ex.ts);
            }
            mf_buf_append(out, "\n", 1);
        }
        put_sample_name(out, m, "_sum", s, NULL);
        put_value(out, vals[m->nbuckets + 1]);
        mf_buf_append(out, "\n", 1);
        put_sample_name(out, m, "_count", s, NULL);
        put_value(out, cum);
        mf_buf_append(out, "\n", 1);
    }
}

void
mf_metrics_render(mf_buf_t *out, int format)
{
    int om = format == MF_METRICS_OPENMETRICS;
    mf_metric_t *m;

    pthread_mutex_lock(&reg_lock);
    for (m = reg_head; m != NULL; m = m->next) {
        render_metric(out, m, om);
    }
    if (reg_head != NULL) {
        static const char name[] = "manifold_metric_series_dropped_total";

        put_family(out, name, om ? sizeof(name) - 7 : sizeof(name) - 1,
                   "counter",
                   "Observations dropped because their metric held its "
                   "cap of label sets (max_series)",
                   om);
        for (m = reg_head; m != NULL; m = m->next) {
            mf_buf_printf(out, "%s{metric=\"%s\"} %llu\n", name, m->name,
                          (unsigned long long)atomic_load(&m->dropped));
        }
    }
    pthread_mutex_unlock(&reg_lock);
    if (om) {
        mf_buf_printf(out, "# EOF\n");
    }
}

double
mf_metric_value(mf_metric_t *m, const mf_str_t *values, size_t n)
{
    double vals[MF_METRIC_MAX_BUCKETS + 2], sum = 0;
    size_t slot, b;
    int idx;

    if (m == NULL || n != m->nlabels) {
        return -1;
    }
    idx = probe(m, hash_values(values, n), values, n, &slot);
    if (idx < 0) {
        return -1;
    }
    sum_series(m, (size_t)idx, vals);
    if (m->type != MF_METRIC_HISTOGRAM) {
        return vals[0];
    }
    for (b = 0; b <= m->nbuckets; b++) {
        sum += vals[b];
    }
    return sum;
}

size_t
mf_metric_nseries(const mf_metric_t *m)
{
    return atomic_load(&((mf_metric_t *)m)->nseries);
}

uint64_t
mf_metric_dropped(const mf_metric_t *m)
{
    return atomic_load(&((mf_metric_t *)m)->dropped);
}
