/*
 * limits: rates, concurrency and budgets for every scope a request falls
 * in (its key, consumer, group, model, and the whole gateway), all or
 * nothing. Before the upstream call it reserves an estimate (prompt bytes
 * / 4 + max_tokens or default_max_tokens) against every token rate and
 * budget and takes a concurrency lease in each scope; in on_done
 * (exactly once) it settles with the usage the upstream reported, or,
 * when only an estimate is known (a cut stream, a client gone), with the
 * larger of the estimate and the reservation: unknown usage never
 * refunds. Rates are GCRA; budgets are integer micro-USD or tokens per
 * calendar period; leases expire (lease_ttl).
 *
 * The counters live in memory shared by every worker under one lock,
 * kept across reloads (a new instance adopts the state of the one before
 * through the host's shared dict); the spend of each period and the
 * usage ledger are written to SQLite by a writer thread, never by a
 * worker (docs/DECISIONS.md says what a kill -9 can lose). With the
 * Redis store the counters are in Redis, and each settlement also adds
 * to the shared ledger there (per period hashes) that `usage` reads.
 */
#include <manifold/plugin.h>

#include <math.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../common/gov.h"
#include "../common/price.h"

static const mf_host_api_t *api;

#define NWIN 6 /* rpm rph rpd tpm tph tpd */
static const char *const win_names[NWIN] = {"rpm", "rph", "rpd",
                                            "tpm", "tph", "tpd"};
/* the embedded store's key suffixes: SCOPE|rpm */
static const char *const win_sfx[NWIN] = {"|rpm", "|rph", "|rpd",
                                          "|tpm", "|tph", "|tpd"};
static const int64_t win_us[NWIN] = {60000000LL, 3600000000LL, 86400000000LL,
                                     60000000LL, 3600000000LL, 86400000000LL};
#define MAX_SCOPES 5

/* The limits of one scope. */
typedef struct {
    int64_t win[NWIN]; /* 0 = none */
    int64_t concurrency;
    int has_budget;
    int budget_usd; /* else tokens */
    int64_t budget;
    gov_period_t period;
    int tz;
} lim_t;

typedef struct {
    int64_t period_start;
    int64_t used;     /* settled in this period */
    int64_t reserved; /* held by requests in flight */
    int64_t topup;    /* added by budget topup for this period */
} budget_t;

/* A store operation for the writer thread. */
typedef struct op_s {
    struct op_s *next;
    int kind; /* 0 spend delta, 1 topup, 2 ledger */
    char scope[160];
    int64_t period_start;
    int64_t amount;
    /* ledger */
    int64_t ts;
    char consumer[128], key_id[32], model[128], provider[64];
    int64_t prompt, completion, cached, reasoning, cost, cache_write;
    int estimated, unpriced, status;
} op_t;

/* Replay (the Redis store): what was settled while Redis failed, sent to
 * it when it answers again. A budget's spend (kind 0: HINCRBY of `used`
 * in the period's hash) or one hash tag's part of the shared ledger
 * (kind 1: the ledger script, with the settlement's own time). */
#define REPLAY_MAX 65536 /* entries kept; beyond, dropped and logged */
#define REPLAY_BATCH 512 /* sent per answer from Redis */
typedef struct replay_s {
    struct replay_s *next;
    void *sh; /* shared_t: where it goes back when the send fails */
    int kind;
    char key[400];   /* spend: the budget hash; usage: the tag */
    int64_t amount;  /* spend */
    int64_t keep;    /* spend: seconds to keep the hash (0 forever) */
    int64_t ts;      /* usage: when it was settled */
    char model[201]; /* usage */
    int64_t v[9];    /* usage: n p c k r d e u w */
    int whole;       /* Redis forgot the script: sent whole (EVAL) */
} replay_t;

/* The counters, shared by the instances of one store across reloads. */
#define SHARED_MAGIC "mf-limits-shared-3"
typedef struct {
    char magic[24];
    pthread_mutex_t lock;
    int refs;
    gov_map_t *tats;    /* "scope|win" -> int64_t */
    gov_map_t *leases;  /* scope -> gov_leases_t */
    gov_map_t *budgets; /* "scope|usd" / "scope|tokens" -> budget_t */
    uint64_t next_lease;
    pthread_mutex_t qlock;
    pthread_cond_t qcond; /* the queue is written (flush waits on it) */
    pthread_cond_t wcond; /* wakes the writer */
    op_t *qhead, *qtail;
    size_t qlen;
    struct timespec qsince; /* when the oldest queued op came */
    int busy;        /* a writer holds ops it took and has not written yet */
    size_t inflight; /* the ops those writers hold */
    int urgent;      /* flush(): write what is queued now */
    replay_t *rhead, *rtail; /* under lock */
    size_t rlen;             /* read without the lock to skip the lock */
    uint64_t rdropped;
    char key[600];                   /* its name in the host's shared dict */
    char use_sha[41], spend_sha[41]; /* the ledger and replay scripts' */
} shared_t;

static void replay_flush(shared_t *sh, mf_req_t *r);

typedef struct {
    shared_t *sh;
    char *db_path; /* NULL: no store */
    sqlite3 *rdb;  /* reads for admin commands (main thread) */
    pthread_t writer;
    int writer_up;
    int stop;
    int64_t default_max_tokens;
    json_t *dmt_models; /* default_max_tokens by model pattern, or NULL */
    int64_t lease_ttl_us;
    int refuse_unpriced;
    lim_t key, global;
    json_t *models; /* model glob -> limits json */
    json_t *groups; /* name -> entry */
    json_t *prices; /* model or glob -> {input, output, cache_read, ...} */
    int redis;      /* the counters live in Redis (`redis:` configured) */
    int on_err[3];  /* per kind (K_RATES, K_CONC, K_BUDGETS): ERR_* */
    char sha[41];   /* the store script's SHA-1 */
} lm_t;

/* Limit kinds, as bits of a mask of what a store checks. */
#define K_RATES 0
#define K_CONC 1
#define K_BUDGETS 2
#define M_ALL 7
/* What a kind does while its store (Redis) fails. */
#define ERR_OPEN 0
#define ERR_CLOSED 1
#define ERR_LOCAL 2

/* A request's admission, kept for settlement. */
typedef struct {
    int nscopes;
    char scope[MAX_SCOPES][160];
    lim_t lim[MAX_SCOPES];
    uint64_t lease[MAX_SCOPES];
    int64_t period_start[MAX_SCOPES];
    int64_t est_tokens; /* prompt and output */
    int64_t est_prompt;
    int64_t est_cost;
    int priced;
    price_t price;
    int settled;
    lm_t *lm;
    int admitted; /* something was taken: settle in on_done */
    int redis;    /* taken in Redis (else in memory, for kinds in mask) */
    int mask;     /* kinds held in memory: 1 << K_* */
    char tag[MAX_SCOPES][150]; /* Redis hash tag of each scope */
    int ngroups;               /* runs of scopes with one tag */
    int grp_start[MAX_SCOPES + 1];
    int grp;      /* the group being admitted */
    int use_eval; /* the script is not loaded: send it whole */
    char id[40];  /* this admission's lease and reservation id */
    int64_t req_lim, req_rem, req_rst, tok_lim, tok_rem, tok_rst;
    int64_t budget_ttl[MAX_SCOPES]; /* seconds to keep a period's key */
} rctx_t;

/* Limits from JSON */

static void
lim_from_json(lim_t *l, json_t *limits, json_t *budget)
{
    int i;

    memset(l, 0, sizeof(*l));
    for (i = 0; i < NWIN; i++) {
        l->win[i] = json_integer_value(json_object_get(limits, win_names[i]));
    }
    l->concurrency = json_integer_value(json_object_get(limits, "concurrency"));
    if (json_is_object(budget)) {
        json_t *usd = json_object_get(budget, "micro_usd");

        l->has_budget = 1;
        l->budget_usd = usd != NULL;
        l->budget =
            json_integer_value(usd ? usd : json_object_get(budget, "tokens"));
        if (gov_period_parse(
                json_string_value(json_object_get(budget, "period")),
                &l->period) != MF_OK) {
            l->period = GOV_MONTH;
        }
        if (gov_tz_parse(json_string_value(json_object_get(budget, "tz")),
                         &l->tz) != MF_OK) {
            l->tz = 0;
        }
    }
}

static int
lim_any(const lim_t *l)
{
    int i;

    for (i = 0; i < NWIN; i++) {
        if (l->win[i] > 0) {
            return 1;
        }
    }
    return l->concurrency > 0 || l->has_budget;
}

/* The consumer's limits from the record's attributes (limits.rpm,
 * budget.micro_usd, ...), as key-auth sets them; read in place, no
 * allocation (this runs for every request). */
static int
attr_is(mf_str_t n, const char *s)
{
    size_t l = strlen(s);

    return n.len == l && memcmp(n.data, s, l) == 0;
}

static int64_t
attr_int(mf_str_t v)
{
    int64_t x = 0;
    size_t i;

    for (i = 0; i < v.len && v.data[i] >= '0' && v.data[i] <= '9' &&
                x < INT64_MAX / 10 - 10;
         i++) {
        x = x * 10 + (v.data[i] - '0');
    }
    return x;
}

static void
lim_from_attrs(lim_t *l, const mf_consumer_t *c)
{
    size_t i;
    int w;

    memset(l, 0, sizeof(*l));
    l->period = GOV_MONTH;
    for (i = 0; i < c->nattrs; i++) {
        mf_str_t n = c->attrs[2 * i], v = c->attrs[2 * i + 1];
        char t[64];

        if (n.len > 7 && memcmp(n.data, "limits.", 7) == 0) {
            n.data += 7;
            n.len -= 7;
            for (w = 0; w < NWIN; w++) {
                if (attr_is(n, win_names[w])) {
                    l->win[w] = attr_int(v);
                }
            }
            if (attr_is(n, "concurrency")) {
                l->concurrency = attr_int(v);
            }
        } else if (n.len > 7 && memcmp(n.data, "budget.", 7) == 0) {
            n.data += 7;
            n.len -= 7;
            if (attr_is(n, "micro_usd") || attr_is(n, "tokens")) {
                l->has_budget = 1;
                l->budget_usd = attr_is(n, "micro_usd");
                l->budget = attr_int(v);
            } else if ((attr_is(n, "period") || attr_is(n, "tz")) &&
                       v.len < sizeof(t)) {
                memcpy(t, v.data, v.len);
                t[v.len] = '\0';
                if (attr_is(n, "tz")) {
                    if (gov_tz_parse(t, &l->tz) != MF_OK) {
                        l->tz = 0;
                    }
                } else if (gov_period_parse(t, &l->period) != MF_OK) {
                    l->period = GOV_MONTH;
                }
            }
        }
    }
}

/* Errors and headers */

static int
is_messages(mf_req_t *r)
{
    mf_req_info_t i = {.size = sizeof(i)};

    api->get_info(r, &i);
    return i.path.len == 12 && memcmp(i.path.data, "/v1/messages", 12) == 0;
}

static void set_resp(mf_req_t *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_resp(mf_req_t *r, const char *name, const char *fmt, ...)
{
    char v[64];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(v, sizeof(v), fmt, ap);
    va_end(ap);
    api->set_header(r, MF_RESPONSE_HEADERS, (mf_str_t){name, strlen(name)},
                    (mf_str_t){v, strlen(v)});
}

/* Decimal digits of v (>= 0) at out; returns the end. */
static char *
put_int(char *out, int64_t v)
{
    char tmp[24];
    int n = 0;

    if (v < 0) {
        v = 0;
    }
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && n < (int)sizeof(tmp));
    while (n > 0) {
        *out++ = tmp[--n];
    }
    return out;
}

/* A response header with a whole number (every success sets several:
 * no printf on that path). */
static void
set_int(mf_req_t *r, mf_str_t name, int64_t v)
{
    char b[24];

    api->set_header(r, MF_RESPONSE_HEADERS, name,
                    (mf_str_t){b, (size_t)(put_int(b, v) - b)});
}

/* OpenAI's reset format: "1s", "6m0s", "250ms", "1.25s" (3 significant
 * digits under a minute). */
static size_t
fmt_reset(char *out, int64_t us)
{
    int64_t ms = (us + 999) / 1000, v, scale;
    char *p = out;

    if (ms < 1000) {
        p = put_int(p, ms);
        *p++ = 'm';
    } else if (ms < 60000) {
        /* hundredths under 10 s, tenths above; no trailing zeros */
        scale = ms < 10000 ? 100 : 10;
        v = (ms * scale + 500) / 1000;
        p = put_int(p, v / scale);
        if (v % scale != 0) {
            const char d[2] = {(char)('0' + (v % scale) / (scale / 10)),
                               (char)('0' + (v % scale) % 10)};

            *p++ = '.';
            *p++ = d[0];
            if (scale == 100 && d[1] != '0') {
                *p++ = d[1];
            }
        }
    } else {
        p = put_int(p, ms / 60000);
        *p++ = 'm';
        p = put_int(p, (ms % 60000 + 999) / 1000);
    }
    *p++ = 's';
    return (size_t)(p - out);
}

static void
refuse_rate(mf_req_t *r, int64_t retry_us, const char *code, const char *msg)
{
    int64_t ms = (retry_us + 999) / 1000;

    set_resp(r, "retry-after", "%lld", (long long)((ms + 999) / 1000));
    set_resp(r, "retry-after-ms", "%lld", (long long)ms);
    api->respond_error_code(r, 429, "rate_limit_error", code, msg);
}

/* Admission */

static int64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* a then b into dst (cap bytes, NUL-terminated, cut to fit): the
 * per-request map keys without snprintf's format parsing. */
static size_t
cat2(char *dst, size_t cap, const char *a, size_t an, const char *b, size_t bn)
{
    if (an > cap - 1) {
        an = cap - 1;
    }
    if (bn > cap - 1 - an) {
        bn = cap - 1 - an;
    }
    memcpy(dst, a, an);
    memcpy(dst + an, b, bn);
    dst[an + bn] = '\0';
    return an + bn;
}

static int64_t *
tat_of(shared_t *sh, const char *scope, int w)
{
    char k[200];
    int64_t *t;
    size_t n = cat2(k, sizeof(k), scope, strlen(scope), win_sfx[w],
                    strlen(win_sfx[w]));

    t = gov_map_get(sh->tats, (mf_str_t){k, n});
    if (t == NULL && (t = calloc(1, sizeof(*t))) != NULL) {
        gov_map_put(sh->tats, (mf_str_t){k, n}, t);
    }
    return t;
}

static gov_leases_t *
leases_of(shared_t *sh, const char *scope)
{
    gov_leases_t *l = gov_map_get(sh->leases, (mf_str_t){scope, strlen(scope)});

    if (l == NULL && (l = calloc(1, sizeof(*l))) != NULL) {
        gov_map_put(sh->leases, (mf_str_t){scope, strlen(scope)}, l);
    }
    return l;
}

static budget_t *
budget_of(shared_t *sh, const char *scope, int usd)
{
    char k[200];
    size_t n = cat2(k, sizeof(k), scope, strlen(scope),
                    usd ? "|usd" : "|tokens", usd ? 4 : 7);
    budget_t *b = gov_map_get(sh->budgets, (mf_str_t){k, n});

    if (b == NULL && (b = calloc(1, sizeof(*b))) != NULL) {
        gov_map_put(sh->budgets, (mf_str_t){k, n}, b);
    }
    return b;
}

/* A budget in its current period (rolled over when the period ended). */
static budget_t *
budget_now(shared_t *sh, const char *scope, const lim_t *l, int64_t now_s)
{
    budget_t *b = budget_of(sh, scope, l->budget_usd);
    int64_t start, end;

    gov_period_bounds(l->period, l->tz, now_s, &start, &end);
    if (b != NULL && b->period_start != start) {
        if (b->period_start < start) {
            b->used = 0;
            b->topup = 0;
        }
        b->period_start = start;
    }
    return b;
}

/* Group commit: the writer commits what is queued FLUSH_MS after the
 * oldest of it came, or at once when FLUSH_MAX operations wait (a
 * request queues its ledger row and one spend delta per budget), on
 * flush() and on a stop. A kill -9 loses at most what came in the last
 * FLUSH_MS and the transaction being written (docs/GOVERNANCE.md). */
#define FLUSH_MS 5
#define FLUSH_MAX 256

static void
enqueue(shared_t *sh, op_t *op)
{
    pthread_mutex_lock(&sh->qlock);
    if (sh->qtail) {
        sh->qtail->next = op;
    } else {
        sh->qhead = op;
        clock_gettime(CLOCK_REALTIME, &sh->qsince);
    }
    sh->qtail = op;
    sh->qlen++;
    /* the writer sleeps until the window ends; it needs waking only to
     * start one, or to write a full batch before it ends */
    if (sh->qlen == 1 || sh->qlen == FLUSH_MAX) {
        pthread_cond_signal(&sh->wcond);
    }
    pthread_mutex_unlock(&sh->qlock);
}

static void
queue_spend(lm_t *lm, const char *scope, int usd, int64_t start, int64_t d,
            int kind)
{
    op_t *op;

    if (lm->db_path == NULL || d == 0 ||
        (op = calloc(1, sizeof(*op))) == NULL) {
        return;
    }
    op->kind = kind;
    cat2(op->scope, sizeof(op->scope), scope, strlen(scope),
         usd ? "|usd" : "|tokens", usd ? 4 : 7);
    op->period_start = start;
    op->amount = d;
    enqueue(lm->sh, op);
}

static int
price_of(lm_t *lm, mf_str_t model, price_t *p)
{
    return price_find_memo(lm->prices, model, p);
}

/* The scopes of r and their limits, in ctx; each with its Redis hash tag
 * (a key and its consumer share the consumer's), and the runs of scopes
 * with one tag (one script each on a cluster). */
static void
scopes_of(lm_t *lm, mf_req_t *r, rctx_t *x, mf_str_t model)
{
    mf_consumer_t c = {.size = sizeof(c)};
    const char *k;
    json_t *v;
    char m[256];
    int s;

    x->nscopes = 0;
    if (api->get_consumer(r, &c) == MF_OK) {
        int cn = (int)(c.name.len > 140 ? 140 : c.name.len);

        if (c.key_id.len > 0 && lim_any(&lm->key)) {
            cat2(x->scope[x->nscopes], 160, "key:", 4, c.key_id.data,
                 c.key_id.len);
            cat2(x->tag[x->nscopes], 150, "c:", 2, c.name.data, (size_t)cn);
            x->lim[x->nscopes++] = lm->key;
        }
        lim_from_attrs(&x->lim[x->nscopes], &c);
        if (lim_any(&x->lim[x->nscopes])) {
            cat2(x->tag[x->nscopes], 150, "c:", 2, c.name.data, (size_t)cn);
            cat2(x->scope[x->nscopes++], 160, "consumer:", 9, c.name.data,
                 (size_t)cn);
        }
        if (c.group.len > 0 && c.group.len < 128) {
            memcpy(m, c.group.data, c.group.len);
            m[c.group.len] = '\0';
            v = json_object_get(lm->groups, m);
            if (v != NULL) {
                lim_from_json(&x->lim[x->nscopes], json_object_get(v, "limits"),
                              json_object_get(v, "budget"));
                if (lim_any(&x->lim[x->nscopes])) {
                    snprintf(x->tag[x->nscopes], 150, "g:%.140s", m);
                    snprintf(x->scope[x->nscopes++], 160, "group:%.140s", m);
                }
            }
        }
    }
    json_object_foreach(lm->models, k, v)
    {
        if (gov_glob(k, model)) {
            lim_from_json(&x->lim[x->nscopes], v, json_object_get(v, "budget"));
            snprintf(x->tag[x->nscopes], 150, "m:%.140s", k);
            snprintf(x->scope[x->nscopes++], 160, "model:%.150s", k);
            break;
        }
    }
    if (lim_any(&lm->global)) {
        snprintf(x->scope[x->nscopes], 160, "global");
        snprintf(x->tag[x->nscopes], 150, "global");
        x->lim[x->nscopes++] = lm->global;
    }
    x->ngroups = 0;
    for (s = 0; s < x->nscopes; s++) {
        if (s == 0 || strcmp(x->tag[s], x->tag[s - 1]) != 0) {
            x->grp_start[x->ngroups++] = s;
        }
    }
    x->grp_start[x->ngroups] = x->nscopes;
}

/* Tokens the request may use: its prompt (bytes / 4) and max_tokens. */
/* default_max_tokens for model by the most specific pattern matching it
 * (the longest; an exact name beats any pattern), else the default. */
static int64_t
model_default(lm_t *lm, mf_str_t model)
{
    const char *k;
    json_t *v;
    size_t best = 0;
    int64_t out = 1024;

    json_object_foreach(lm->dmt_models, k, v)
    {
        /* an exact name ranks above every pattern */
        size_t kl = strlen(k) + 1 + (strpbrk(k, "*?[") ? 0 : 100000);

        if (kl > best && gov_glob(k, model)) {
            best = kl;
            out = json_integer_value(v);
        }
    }
    return out;
}

static int64_t
estimate(lm_t *lm, mf_req_t *r, int64_t *prompt_out)
{
    mf_req_info_t i = {.size = sizeof(i)};
    mf_str_t v;
    int64_t prompt, out = lm->default_max_tokens;

    api->get_info(r, &i);
    prompt = (int64_t)(i.bytes_in / 4) + 1;
    *prompt_out = prompt;
    if (i.endpoint == MF_ENDPOINT_EMBEDDINGS) {
        return prompt;
    }
    if (lm->dmt_models != NULL) {
        out = model_default(lm, i.model);
    }
    if ((api->get_body_field(r, MF_STR("max_completion_tokens"), &v) == MF_OK ||
         api->get_body_field(r, MF_STR("max_tokens"), &v) == MF_OK) &&
        v.len > 0 && v.len < 12 && v.data[0] >= '0' && v.data[0] <= '9') {
        out = strtoll(v.data, NULL, 10);
    }
    return prompt + out;
}

static void
ratelimit_headers(mf_req_t *r, const rctx_t *x)
{
    char reset[48];

    if (x->req_lim > 0) {
        set_int(r, MF_STR("x-ratelimit-limit-requests"), x->req_lim);
        set_int(r, MF_STR("x-ratelimit-remaining-requests"), x->req_rem);
        api->set_header(r, MF_RESPONSE_HEADERS,
                        MF_STR("x-ratelimit-reset-requests"),
                        (mf_str_t){reset, fmt_reset(reset, x->req_rst)});
    }
    if (x->tok_lim > 0) {
        set_int(r, MF_STR("x-ratelimit-limit-tokens"), x->tok_lim);
        set_int(r, MF_STR("x-ratelimit-remaining-tokens"), x->tok_rem);
        api->set_header(r, MF_RESPONSE_HEADERS,
                        MF_STR("x-ratelimit-reset-tokens"),
                        (mf_str_t){reset, fmt_reset(reset, x->tok_rst)});
    }
}

/* The tightest request and token limit seen so far (for the headers). */
static void
note_remaining(rctx_t *x, int w, int64_t lim, int64_t rem, int64_t rst)
{
    if (w < 3 && (x->req_lim == 0 || rem < x->req_rem)) {
        x->req_lim = lim;
        x->req_rem = rem;
        x->req_rst = rst;
    } else if (w >= 3 && (x->tok_lim == 0 || rem < x->tok_rem)) {
        x->tok_lim = lim;
        x->tok_rem = rem;
        x->tok_rst = rst;
    }
}

static void
refuse_quota(mf_req_t *r, lm_t *lm, const rctx_t *x, const char *which,
             int spent)
{
    char msg[300];

    snprintf(msg, sizeof(msg),
             "%s budget of %s: %s; no retry will pass before the period "
             "ends or a top-up",
             x->priced || !lm->refuse_unpriced ? "the"
                                               : "no price for "
                                                 "this model in "
                                                 "the",
             which,
             spent ? "spent"
                   : "this request's estimate does not fit "
                     "what is left");
    set_resp(r, "x-should-retry", "false");
    api->respond_error_code(
        r, 429, is_messages(r) ? "rate_limit_error" : "insufficient_quota",
        "insufficient_quota", msg);
}

static void
refuse_limit(mf_req_t *r, const char *why, const char *which, int64_t retry)
{
    char msg[300];

    snprintf(msg, sizeof(msg), "%s limit of %s reached; retry after %lld ms",
             why, which, (long long)((retry + 999) / 1000));
    refuse_rate(r, retry,
                strcmp(why, "concurrency") == 0 ? "concurrency_limit_exceeded"
                                                : "rate_limit_exceeded",
                msg);
}

/* Admission in memory for the kinds in mask (all of them without Redis;
 * those set to `local` while Redis fails). */
static mf_action_t
local_admit(lm_t *lm, mf_req_t *r, rctx_t *x, int mask)
{
    shared_t *sh = lm->sh;
    int64_t now = now_us(), now_s = now / 1000000, tats[MAX_SCOPES][NWIN];
    int64_t retry = 0;
    const char *why = NULL, *which = NULL;
    int s, w, quota = 0, spent = 0;

    x->redis = 0;
    x->mask = mask;
    pthread_mutex_lock(&sh->lock);
    for (s = 0; s < x->nscopes; s++) {
        const lim_t *l = &x->lim[s];

        for (w = 0; w < NWIN; w++) {
            int64_t *tat, nt, ry, rem, rst, cost = w < 3 ? 1 : x->est_tokens;

            tats[s][w] = 0;
            if (!(mask & (1 << K_RATES)) || l->win[w] <= 0 ||
                (tat = tat_of(sh, x->scope[s], w)) == NULL) {
                continue;
            }
            if (!gov_gcra(*tat, now, l->win[w], win_us[w], cost, &nt, &ry, &rem,
                          &rst)) {
                if (ry > retry) {
                    retry = ry;
                    which = x->scope[s];
                    why = w < 3 ? "requests" : "tokens";
                }
                continue;
            }
            tats[s][w] = nt;
            note_remaining(x, w, l->win[w], rem, rst);
        }
        if (l->concurrency > 0 && (mask & (1 << K_CONC))) {
            gov_leases_t *ls = leases_of(sh, x->scope[s]);

            if (ls != NULL &&
                (int64_t)gov_leases_live(ls, now) >= l->concurrency &&
                why == NULL) {
                why = "concurrency";
                which = x->scope[s];
                retry = 1000000;
            }
        }
        if (l->has_budget && (mask & (1 << K_BUDGETS))) {
            budget_t *b = budget_now(sh, x->scope[s], l, now_s);
            int64_t need = l->budget_usd ? x->est_cost : x->est_tokens;

            if (l->budget_usd && !x->priced && lm->refuse_unpriced) {
                quota = 1;
                which = x->scope[s];
            } else if (b != NULL &&
                       b->used + b->reserved + need > l->budget + b->topup) {
                quota = 1;
                spent = b->used >= l->budget + b->topup;
                which = x->scope[s];
            }
        }
    }
    if (quota) {
        pthread_mutex_unlock(&sh->lock);
        refuse_quota(r, lm, x, which, spent);
        return MF_RESPOND;
    }
    if (why != NULL) {
        pthread_mutex_unlock(&sh->lock);
        refuse_limit(r, why, which, retry);
        return MF_RESPOND;
    }
    /* everything fits: take it all */
    for (s = 0; s < x->nscopes; s++) {
        const lim_t *l = &x->lim[s];

        for (w = 0; w < NWIN; w++) {
            if (tats[s][w] != 0) {
                *tat_of(sh, x->scope[s], w) = tats[s][w];
            }
        }
        if (l->concurrency > 0 && (mask & (1 << K_CONC))) {
            gov_leases_t *ls = leases_of(sh, x->scope[s]);
            int64_t ry;

            x->lease[s] = ++sh->next_lease;
            if (ls == NULL ||
                !gov_lease_take(ls, now, lm->lease_ttl_us, l->concurrency,
                                x->lease[s], &ry)) {
                x->lease[s] = 0;
            }
        }
        if (l->has_budget && (mask & (1 << K_BUDGETS))) {
            budget_t *b = budget_now(sh, x->scope[s], l, now_s);

            if (b != NULL) {
                b->reserved += l->budget_usd ? x->est_cost : x->est_tokens;
                x->period_start[s] = b->period_start;
            }
        }
    }
    pthread_mutex_unlock(&sh->lock);
    x->admitted = 1;
    ratelimit_headers(r, x);
    return MF_CONTINUE;
}

/* The Redis store: every counter, lease and reservation in Redis, one
 * script run per admission and per settlement (per hash tag: a cluster
 * keeps each tag's keys on one node). The script takes the server's
 * clock (TIME), so nodes with skewed clocks still share one rate.
 *
 * KEYS, 4 per scope: its rate hash (field 1..6: the TAT of each
 * window), its lease set (id -> expiry), the budget hash of the period
 * (used, reserved, topup) and the period's reservations (id:amount ->
 * expiry). ARGV: mode (admit | settle), the id, the ttl of leases and
 * reservations (us), the number of scopes, the token estimate (admit)
 * or used minus estimate (settle), then 10 per scope: the six window
 * limits (0 none), concurrency (0 none), the budget (-1 none), the
 * amount reserved, and the seconds to keep the period's keys (admit) or
 * the spend (settle). A reservation whose settlement never came
 * expires and counts as spent: unknown usage never refunds. */
static const char store_lua[] =
    "local W={60000000,3600000000,86400000000,60000000,3600000000,"
    "86400000000}\n"
    "local t=redis.call('TIME')\n"
    "local now=tonumber(t[1])*1000000+tonumber(t[2])\n"
    "local id=ARGV[2] local ttl=tonumber(ARGV[3]) local n=tonumber(ARGV[4])\n"
    "local est=tonumber(ARGV[5])\n"
    "local function expire(vk,bk)\n"
    "  local gone=redis.call('ZRANGEBYSCORE',vk,'-inf',now)\n"
    "  for _,m in ipairs(gone) do\n"
    "    local a=tonumber(string.match(m,':(%-?%d+)$')) or 0\n"
    "    redis.call('HINCRBY',bk,'used',a)\n"
    "    redis.call('HINCRBY',bk,'reserved',-a)\n"
    "    redis.call('ZREM',vk,m)\n"
    "  end\n"
    "end\n"
    "if ARGV[1]=='admit' then\n"
    "  local nt={} local h={0,-1,0,0,-1,0}\n"
    "  for s=0,n-1 do\n"
    "    local a=6+s*10 local rk=KEYS[s*4+1] local lk=KEYS[s*4+2]\n"
    "    local bk=KEYS[s*4+3] local vk=KEYS[s*4+4]\n"
    "    nt[s]={}\n"
    "    for w=1,6 do\n"
    "      local lim=tonumber(ARGV[a+w-1])\n"
    "      if lim>0 then\n"
    "        local cost=1 if w>3 then cost=est end\n"
    "        local inc=W[w]/lim\n"
    "        local tat=tonumber(redis.call('HGET',rk,w) or '0')\n"
    "        if tat<now then tat=now end\n"
    "        local new=tat+cost*inc\n"
    "        if new-now>W[w] then return {0,'rate',s,w,"
    "math.ceil(new-W[w]-now)} end\n"
    "        nt[s][w]=new\n"
    "        local rem=math.floor((W[w]-(new-now))/inc)\n"
    "        local o=0 if w>3 then o=3 end\n"
    "        if h[o+2]<0 or rem<h[o+2] then h[o+1]=lim h[o+2]=rem "
    "h[o+3]=math.ceil(new-now) end\n"
    "      end\n"
    "    end\n"
    "    local c=tonumber(ARGV[a+6])\n"
    "    if c>0 then\n"
    "      redis.call('ZREMRANGEBYSCORE',lk,'-inf',now)\n"
    "      if redis.call('ZCARD',lk)>=c then\n"
    "        local f=redis.call('ZRANGE',lk,0,0,'WITHSCORES')\n"
    "        return {0,'concurrency',s,0,math.max(1000,"
    "math.ceil(tonumber(f[2])-now))}\n"
    "      end\n"
    "    end\n"
    "    local bl=tonumber(ARGV[a+7])\n"
    "    if bl>=0 then\n"
    "      expire(vk,bk)\n"
    "      local v=redis.call('HMGET',bk,'used','reserved','topup')\n"
    "      local used=tonumber(v[1] or '0') local res=tonumber(v[2] or '0')\n"
    "      local top=tonumber(v[3] or '0')\n"
    "      if used+res+tonumber(ARGV[a+8])>bl+top then\n"
    "        local sp=0 if used>=bl+top then sp=1 end\n"
    "        return {0,'quota',s,sp,0}\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for s=0,n-1 do\n"
    "    local a=6+s*10 local rk=KEYS[s*4+1] local lk=KEYS[s*4+2]\n"
    "    local bk=KEYS[s*4+3] local vk=KEYS[s*4+4]\n"
    "    local any=false\n"
    "    for w=1,6 do if nt[s][w] then any=true\n"
    "      redis.call('HSET',rk,w,string.format('%.0f',nt[s][w])) end end\n"
    "    if any then redis.call('PEXPIRE',rk,172800000) end\n"
    "    if tonumber(ARGV[a+6])>0 then\n"
    "      redis.call('ZADD',lk,now+ttl,id)\n"
    "      redis.call('PEXPIRE',lk,math.floor(ttl/1000)+60000)\n"
    "    end\n"
    "    if tonumber(ARGV[a+7])>=0 then\n"
    "      local need=tonumber(ARGV[a+8])\n"
    "      redis.call('HINCRBY',bk,'reserved',need)\n"
    "      redis.call('ZADD',vk,now+ttl,id..':'..need)\n"
    "      local keep=tonumber(ARGV[a+9])\n"
    "      if keep>0 then redis.call('EXPIRE',bk,keep) "
    "redis.call('EXPIRE',vk,keep) end\n"
    "    end\n"
    "  end\n"
    "  return {1,h[1],h[2],h[3],h[4],h[5],h[6]}\n"
    "end\n"
    "for s=0,n-1 do\n"
    "  local a=6+s*10 local rk=KEYS[s*4+1] local lk=KEYS[s*4+2]\n"
    "  local bk=KEYS[s*4+3] local vk=KEYS[s*4+4]\n"
    "  for w=4,6 do\n"
    "    local lim=tonumber(ARGV[a+w-1])\n"
    "    if lim>0 and est~=0 then\n"
    "      local tat=tonumber(redis.call('HGET',rk,w) or '0')\n"
    "      if tat>0 then redis.call('HSET',rk,w,"
    "string.format('%.0f',tat+est*W[w]/lim)) end\n"
    "    end\n"
    "  end\n"
    "  if tonumber(ARGV[a+6])>0 then redis.call('ZREM',lk,id) end\n"
    "  local bl=tonumber(ARGV[a+7])\n"
    "  if bl>=0 then\n"
    "    local held=tonumber(ARGV[a+8]) local spend=tonumber(ARGV[a+9])\n"
    "    if redis.call('ZREM',vk,id..':'..ARGV[a+8])==1 then\n"
    "      redis.call('HINCRBY',bk,'reserved',-held)\n"
    "      redis.call('HINCRBY',bk,'used',spend)\n"
    "    elseif spend>held then redis.call('HINCRBY',bk,'used',spend-held)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return 1\n";

/* A command being built: up to 128 arguments in one buffer. */
#define CMD_MAX_ARGS 128
typedef struct {
    int n;
    size_t used;
    size_t off[CMD_MAX_ARGS], len[CMD_MAX_ARGS];
    char buf[12288];
} cmd_t;

static void cmd_add(cmd_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
cmd_add(cmd_t *c, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (c->n >= CMD_MAX_ARGS || c->used >= sizeof(c->buf)) {
        c->n = CMD_MAX_ARGS + 1; /* too long: refused by cmd_argv */
        return;
    }
    va_start(ap, fmt);
    w = vsnprintf(c->buf + c->used, sizeof(c->buf) - c->used, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= sizeof(c->buf) - c->used) {
        c->n = CMD_MAX_ARGS + 1;
        return;
    }
    c->off[c->n] = c->used;
    c->len[c->n++] = (size_t)w;
    c->used += (size_t)w + 1;
}

/* argv of c, the script sent whole when eval (EVAL) or by name. */
static int
cmd_argv(lm_t *lm, const cmd_t *c, int eval, mf_str_t *argv)
{
    int i;

    if (c->n > CMD_MAX_ARGS || c->n < 2) {
        return -1;
    }
    for (i = 0; i < c->n; i++) {
        argv[i] = (mf_str_t){c->buf + c->off[i], c->len[i]};
    }
    argv[0] = eval ? MF_STR("EVAL") : MF_STR("EVALSHA");
    argv[1] = eval ? (mf_str_t){store_lua, sizeof(store_lua) - 1}
                   : (mf_str_t){lm->sha, 40};
    return c->n;
}

/* The script run of group g (admit, or settle with delta tokens and
 * each scope's spend). */
static void
cmd_build(lm_t *lm, const rctx_t *x, int g, int settle, int64_t delta,
          const int64_t *spend, cmd_t *c)
{
    int s, w, a = x->grp_start[g], b = x->grp_start[g + 1];

    c->n = 0;
    c->used = 0;
    cmd_add(c, "EVALSHA");
    cmd_add(c, "-"); /* the script or its name (cmd_argv) */
    cmd_add(c, "%d", (b - a) * 4);
    for (s = a; s < b; s++) {
        const lim_t *l = &x->lim[s];
        const char *unit = l->budget_usd ? "usd" : "tokens";

        cmd_add(c, "mf:lim:{%s}:%s:r", x->tag[s], x->scope[s]);
        cmd_add(c, "mf:lim:{%s}:%s:l", x->tag[s], x->scope[s]);
        cmd_add(c, "mf:lim:{%s}:%s:b:%s:%lld", x->tag[s], x->scope[s], unit,
                (long long)x->period_start[s]);
        cmd_add(c, "mf:lim:{%s}:%s:b:%s:%lld:v", x->tag[s], x->scope[s], unit,
                (long long)x->period_start[s]);
    }
    cmd_add(c, "%s", settle ? "settle" : "admit");
    cmd_add(c, "%s", x->id);
    cmd_add(c, "%lld", (long long)lm->lease_ttl_us);
    cmd_add(c, "%d", b - a);
    cmd_add(c, "%lld", (long long)(settle ? delta : x->est_tokens));
    for (s = a; s < b; s++) {
        const lim_t *l = &x->lim[s];
        int has_b = l->has_budget &&
                    !(l->budget_usd && !x->priced && !lm->refuse_unpriced);

        for (w = 0; w < NWIN; w++) {
            cmd_add(c, "%lld", (long long)(l->win[w] > 0 ? l->win[w] : 0));
        }
        cmd_add(c, "%lld", (long long)l->concurrency);
        cmd_add(c, "%lld", (long long)(has_b ? l->budget : -1));
        cmd_add(c, "%lld",
                (long long)(l->budget_usd ? x->est_cost : x->est_tokens));
        cmd_add(c, "%lld", (long long)(settle ? spend[s] : x->budget_ttl[s]));
    }
}

typedef struct {
    lm_t *lm;
    int retried;
    cmd_t cmd;
} post_t;

static void
log_store_error(const char *what, const char *err)
{
    static int64_t last; /* at most one line every 5 s */
    int64_t now = now_us(), was = __atomic_load_n(&last, __ATOMIC_RELAXED);

    if (now - was > 5000000 &&
        __atomic_compare_exchange_n(&last, &was, now, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
        api->log(MF_LOG_WARN, "limits: Redis store: %s: %s", what, err);
    }
}

static int
is_noscript(const mf_redis_reply_t *rep)
{
    return rep != NULL && rep->type == MF_REDIS_ERROR && rep->str.len >= 8 &&
           memcmp(rep->str.data, "NOSCRIPT", 8) == 0;
}

/* A settlement's answer: sent again whole when Redis forgot the script. */
static void
post_done(void *arg, const mf_redis_reply_t *reply, const char *err)
{
    post_t *p = arg;
    mf_str_t argv[CMD_MAX_ARGS];
    int argc;

    if (is_noscript(reply) && !p->retried) {
        p->retried = 1;
        argc = cmd_argv(p->lm, &p->cmd, 1, argv);
        if (argc > 0 &&
            api->redis_post(NULL, argc, argv, post_done, p) == MF_OK) {
            return;
        }
    } else if (err != NULL || (reply && reply->type == MF_REDIS_ERROR)) {
        char e[200];

        snprintf(e, sizeof(e), "%.*s",
                 err ? (int)strlen(err) : (int)reply->str.len,
                 err ? err : reply->str.data);
        log_store_error("a settlement was lost (its reservation and lease "
                        "expire after lease_ttl; the reservation then "
                        "counts as spent)",
                        e);
    } else {
        replay_flush(p->lm->sh, NULL);
    }
    free(p);
}

/* Settles (or gives back: delta -estimate, spend 0) groups [from, to). */
static void
redis_settle(lm_t *lm, mf_req_t *r, const rctx_t *x, int from, int to,
             int64_t delta, const int64_t *spend)
{
    mf_str_t argv[CMD_MAX_ARGS];
    int g, argc;

    for (g = from; g < to; g++) {
        post_t *p = calloc(1, sizeof(*p));

        if (p == NULL) {
            return;
        }
        p->lm = lm;
        cmd_build(lm, x, g, 1, delta, spend, &p->cmd);
        argc = cmd_argv(lm, &p->cmd, x->use_eval, argv);
        if (argc < 0 || api->redis_post(r, argc, argv, post_done, p) != MF_OK) {
            log_store_error("a settlement could not be sent (its reservation "
                            "and lease expire after lease_ttl)",
                            "Redis is unavailable");
            free(p);
        }
    }
}

static void redis_admit_next(lm_t *lm, mf_req_t *r, rctx_t *x);

/* Redis failed (down, timeout, an error reply): each kind as configured.
 * Answers r when a kind is `closed`; returns what the stage does. */
static mf_action_t
redis_fallback(lm_t *lm, mf_req_t *r, rctx_t *x, const char *err)
{
    static const char *const kind[3] = {"rate", "concurrency", "budget"};
    int64_t zero[MAX_SCOPES] = {0};
    int s, k, mask = 0;

    log_store_error("admission", err);
    redis_settle(lm, r, x, 0, x->grp, -x->est_tokens, zero);
    x->grp = 0; /* given back */
    for (s = 0; s < x->nscopes; s++) {
        const lim_t *l = &x->lim[s];
        int has[3] = {0, l->concurrency > 0, l->has_budget};
        int w;

        for (w = 0; w < NWIN; w++) {
            has[K_RATES] |= l->win[w] > 0;
        }
        for (k = 0; k < 3; k++) {
            if (has[k] && lm->on_err[k] == ERR_CLOSED) {
                char msg[200];

                snprintf(msg, sizeof(msg),
                         "the %s store is unavailable; retry in a moment",
                         kind[k]);
                set_resp(r, "retry-after", "1");
                set_resp(r, "retry-after-ms", "1000");
                api->respond_error_code(
                    r, 503, is_messages(r) ? "api_error" : "server_error",
                    "limits_store_unavailable", msg);
                return MF_RESPOND;
            }
        }
    }
    for (k = 0; k < 3; k++) {
        if (lm->on_err[k] == ERR_LOCAL) {
            mask |= 1 << k;
        }
    }
    return local_admit(lm, r, x, mask);
}

static void
redis_failed(lm_t *lm, mf_req_t *r, rctx_t *x, const char *err)
{
    api->resume(r, redis_fallback(lm, r, x, err));
}

static void
admit_cb(mf_req_t *r, void *arg, const mf_redis_reply_t *reply, const char *err)
{
    rctx_t *x = arg;
    lm_t *lm = x->lm;
    const mf_redis_reply_t *e;
    int64_t zero[MAX_SCOPES] = {0};
    char msg[200];
    int s, w;

    if (is_noscript(reply) && !x->use_eval) {
        x->use_eval = 1; /* Redis restarted or flushed: send it whole */
        redis_admit_next(lm, r, x);
        return;
    }
    if (err != NULL || reply == NULL || reply->type != MF_REDIS_ARRAY ||
        reply->nelements < 5) {
        snprintf(msg, sizeof(msg), "%.*s",
                 err                                      ? (int)strlen(err)
                 : reply && reply->type == MF_REDIS_ERROR ? (int)reply->str.len
                                                          : 19,
                 err                                      ? err
                 : reply && reply->type == MF_REDIS_ERROR ? reply->str.data
                                                          : "unexpected reply");
        redis_failed(lm, r, x, msg);
        return;
    }
    e = reply->elements;
    if (e[0].integer == 1 && reply->nelements >= 7) {
        for (w = 0; w < 2; w++) {
            if (e[1 + 3 * w].integer > 0) {
                note_remaining(x, w * 3, e[1 + 3 * w].integer,
                               e[2 + 3 * w].integer, e[3 + 3 * w].integer);
            }
        }
        x->grp++;
        if (x->grp < x->ngroups) {
            redis_admit_next(lm, r, x);
            return;
        }
        x->admitted = 1;
        x->redis = 1;
        ratelimit_headers(r, x);
        replay_flush(lm->sh, r); /* Redis answers: what it missed */
        api->resume(r, MF_CONTINUE);
        return;
    }
    s = x->grp_start[x->grp] + (int)e[2].integer;
    if (s < 0 || s >= x->nscopes) {
        s = x->grp_start[x->grp];
    }
    /* refused: give back what earlier groups took */
    redis_settle(lm, r, x, 0, x->grp, -x->est_tokens, zero);
    x->grp = 0; /* given back */
    if (e[1].str.len == 5 && memcmp(e[1].str.data, "quota", 5) == 0) {
        refuse_quota(r, lm, x, x->scope[s], e[3].integer == 1);
    } else if (e[1].str.len == 11 &&
               memcmp(e[1].str.data, "concurrency", 11) == 0) {
        refuse_limit(r, "concurrency", x->scope[s], e[4].integer);
    } else {
        refuse_limit(r, e[3].integer <= 3 ? "requests" : "tokens", x->scope[s],
                     e[4].integer);
    }
    api->resume(r, MF_RESPOND);
}

/* Sends the script run of group x->grp; MF_ERR when it could not. */
static int
redis_send(lm_t *lm, mf_req_t *r, rctx_t *x)
{
    cmd_t *c = api->palloc(r, sizeof(*c));
    mf_str_t argv[CMD_MAX_ARGS];
    int argc;

    if (c == NULL) {
        return MF_ERR;
    }
    cmd_build(lm, x, x->grp, 0, 0, NULL, c);
    argc = cmd_argv(lm, c, x->use_eval, argv);
    return argc > 0 && api->redis_command(r, argc, argv, admit_cb, x) == MF_OK
               ? MF_OK
               : MF_ERR;
}

static void
redis_admit_next(lm_t *lm, mf_req_t *r, rctx_t *x)
{
    if (redis_send(lm, r, x) != MF_OK) {
        redis_failed(lm, r, x, "the command could not be sent");
    }
}

static mf_action_t
lm_on_request(mf_req_t *r, void *state, void **ctx)
{
    lm_t *lm = state;
    rctx_t *x = api->palloc(r, sizeof(*x));
    mf_str_t model = api->get_model(r);
    int64_t now_s = now_us() / 1000000;
    int s;

    mf_req_info_t info = {.size = sizeof(info)};

    if (x == NULL) {
        return MF_FAIL;
    }
    memset(x, 0, sizeof(*x));
    x->lm = lm;
    api->get_info(r, &info);
    if (info.endpoint == MF_ENDPOINT_LOCAL) {
        return MF_CONTINUE; /* answered by the gateway: nothing to meter */
    }
    scopes_of(lm, r, x, model);
    x->est_tokens = estimate(lm, r, &x->est_prompt);
    x->priced = price_of(lm, model, &x->price);
    x->est_cost = x->priced ? price_cost(&x->price, x->est_prompt, 0, 0,
                                         x->est_tokens - x->est_prompt, 0)
                            : 0;
    *ctx = x; /* on_done settles what x says was taken */
    if (x->nscopes == 0) {
        /* nothing to limit: still one ledger row when someone is
         * identified (usage, the billing endpoints) */
        mf_consumer_t c = {.size = sizeof(c)};

        x->admitted = api->get_consumer(r, &c) == MF_OK;
        return MF_CONTINUE;
    }
    if (!lm->redis) {
        return local_admit(lm, r, x, M_ALL);
    }
    for (s = 0; s < x->nscopes; s++) {
        const lim_t *l = &x->lim[s];
        int64_t start, end;

        if (!l->has_budget) {
            continue;
        }
        if (l->budget_usd && !x->priced && lm->refuse_unpriced) {
            refuse_quota(r, lm, x, x->scope[s], 0);
            return MF_RESPOND;
        }
        gov_period_bounds(l->period, l->tz, now_s, &start, &end);
        x->period_start[s] = start;
        /* a period's keys outlive it by 35 days (budget show, late
         * settlements); a total budget's never expire */
        x->budget_ttl[s] =
            l->period == GOV_TOTAL ? 0 : end - now_s + 35 * 86400;
    }
    if (gov_random_hex(x->id, 12) != MF_OK) {
        return MF_FAIL;
    }
    if (redis_send(lm, r, x) != MF_OK) {
        return redis_fallback(lm, r, x, "the command could not be sent");
    }
    return MF_PAUSE;
}

/* What a client may ask about its own spend (the billing endpoints
 * key-auth serves), published in the host's shared dict: the state of a
 * consumer's USD budget in the embedded store ("PERIOD_START USED
 * TOPUP", micro-USD), and each consumer's cost of the calendar month in
 * UTC on this node (with either store). */
#define BILLING_BUDGET "mf.billing.budget."
#define BILLING_COST "mf.billing.cost."

static void
publish_budget(const char *scope, const budget_t *b)
{
    char k[200], v[80], *p = v;
    int kn;

    if (strncmp(scope, "consumer:", 9) != 0) {
        return;
    }
    kn = (int)cat2(k, sizeof(k), BILLING_BUDGET, sizeof(BILLING_BUDGET) - 1,
                   scope + 9, strlen(scope + 9));
    /* "START USED TOPUP" (each >= 0), without printf: once a request */
    p = put_int(p, b->period_start);
    *p++ = ' ';
    p = put_int(p, b->used);
    *p++ = ' ';
    p = put_int(p, b->topup);
    if (kn > 0 && (size_t)kn < sizeof(k)) {
        api->shared_set((mf_str_t){k, (size_t)kn},
                        (mf_str_t){v, (size_t)(p - v)}, 0);
    }
}

static void
publish_cost(mf_str_t consumer, int64_t cost)
{
    int64_t start, end;
    char k[220], *p;
    int kn;

    if (cost <= 0 || consumer.len == 0 || consumer.len > 160) {
        return;
    }
    gov_period_bounds(GOV_MONTH, 0, (int64_t)time(NULL), &start, &end);
    /* BILLING_COST "START.NAME", without printf: once a request */
    memcpy(k, BILLING_COST, sizeof(BILLING_COST) - 1);
    p = put_int(k + sizeof(BILLING_COST) - 1, start);
    *p++ = '.';
    memcpy(p, consumer.data, consumer.len);
    kn = (int)(p - k) + (int)consumer.len;
    api->shared_incr((mf_str_t){k, (size_t)kn}, cost,
                     (uint64_t)(end - start + 86400) * 1000, NULL);
}

/* The shared ledger (Redis store): every settlement adds to per period
 * hashes that `usage` and the billing endpoints read, so each node shows
 * what all of them served. One hash per consumer and UTC period,
 * mf:use:{c:NAME}:PERIOD:START, and one for everyone, mf:use:{all}:...
 * (anonymous requests too); fields KIND:MODEL with KIND n requests,
 * p prompt, c completion, k cached, r reasoning, d micro-USD,
 * e estimated, u unpriced, w cache writes, and `cost` the whole micro-USD. A
 * period's hash expires 35 days after the period ends; `total` never does.
 * KEYS: the four periods' hashes of one hash tag; ARGV: the model, the
 * nine amounts, the four TTLs (0: none). */
static const char usage_lua[] =
    "local f={'n','p','c','k','r','d','e','u','w'}\n"
    "for i,key in ipairs(KEYS) do\n"
    " for j=1,9 do\n"
    "  local v=tonumber(ARGV[j+1])\n"
    "  if v~=0 then redis.call('HINCRBY',key,f[j]..':'..ARGV[1],v) end\n"
    " end\n"
    " local d=tonumber(ARGV[7])\n"
    " if d~=0 then redis.call('HINCRBY',key,'cost',d) end\n"
    " local t=tonumber(ARGV[10+i])\n"
    " if t>0 then redis.call('EXPIRE',key,t) end\n"
    "end\n"
    "return 1\n";

static const gov_period_t use_periods[4] = {GOV_DAY, GOV_WEEK, GOV_MONTH,
                                            GOV_TOTAL};

/* The key of a ledger hash: tag "c:NAME" or "all". */
static int
use_key(char *dst, size_t cap, const char *tag, gov_period_t p, int64_t start)
{
    return snprintf(dst, cap, "mf:use:{%s}:%s:%lld", tag, gov_period_name(p),
                    (long long)start);
}

/* The 21 arguments of one tag's ledger script ("c:NAME" or "all"),
 * for a settlement at now; keys and nums hold the text. */
static void
use_argv(const char *tag, mf_str_t model, const int64_t *v, int64_t now,
         const char *sha, char keys[4][400], char nums[13][24], mf_str_t *argv)
{
    int64_t start, end;
    int k, n;

    /* by name: the script (~500 bytes) is sent whole only when Redis
     * does not know it (NOSCRIPT: replay_done sends it again) */
    argv[0] = sha ? MF_STR("EVALSHA") : MF_STR("EVAL");
    argv[1] = sha ? (mf_str_t){sha, 40}
                  : (mf_str_t){usage_lua, sizeof(usage_lua) - 1};
    argv[2] = MF_STR("4");
    for (k = 0; k < 4; k++) {
        gov_period_bounds(use_periods[k], 0, now, &start, &end);
        n = use_key(keys[k], 400, tag, use_periods[k], start);
        argv[3 + k] = (mf_str_t){keys[k], (size_t)n};
        /* how long to keep it: 35 days past the period's end (from now,
         * the time it is sent: a replay sets it anew) */
        snprintf(nums[9 + k], 24, "%lld",
                 (long long)(use_periods[k] == GOV_TOTAL
                                 ? 0
                                 : end - (int64_t)time(NULL) + 35 * 86400));
    }
    argv[7] = model;
    for (k = 0; k < 9; k++) {
        snprintf(nums[k], 24, "%lld", (long long)v[k]);
    }
    for (k = 0; k < 13; k++) {
        argv[8 + k] = (mf_str_t){nums[k], strlen(nums[k])};
    }
}

/* A budget's spend settled without Redis, added when it is back (the
 * hash kept as long as the admission would have kept it). */
static const char spend_lua[] = "redis.call('HINCRBY',KEYS[1],'used',ARGV[1])\n"
                                "local k=tonumber(ARGV[2])\n"
                                "if k>0 and redis.call('TTL',KEYS[1])<0 then "
                                "redis.call('EXPIRE',KEYS[1],k) end\n"
                                "return 1\n";

static void
replay_push(shared_t *sh, replay_t *e)
{
    int full;

    e->next = NULL;
    e->sh = sh;
    pthread_mutex_lock(&sh->lock);
    full = sh->rlen >= REPLAY_MAX;
    if (full) {
        sh->rdropped++;
    } else {
        if (sh->rtail != NULL) {
            sh->rtail->next = e;
        } else {
            sh->rhead = e;
        }
        sh->rtail = e;
        __atomic_store_n(&sh->rlen, sh->rlen + 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&sh->lock);
    if (full) {
        free(e);
        log_store_error("a settlement made while Redis failed was dropped "
                        "(the replay queue is full)",
                        "its spend stays on this node only");
    }
}

static int replay_send(mf_req_t *r, replay_t *e);

/* The answer to a ledger part or a replayed spend: kept for the next
 * replay when Redis could not be reached (at least once: one whose
 * answer timed out may have been applied and is sent again), logged and
 * dropped on an error reply; on success, the next replays go. */
static void
replay_done(void *arg, const mf_redis_reply_t *reply, const char *err)
{
    replay_t *e = arg;
    shared_t *sh = e->sh;

    if (is_noscript(reply) && !e->whole) {
        e->whole = 1; /* Redis restarted or flushed: the script whole */
        if (replay_send(NULL, e) == MF_OK) {
            return;
        }
        replay_push(sh, e);
        return;
    }
    e->whole = 0;
    if (err != NULL) {
        log_store_error("a settlement could not be added to Redis (kept "
                        "for when it is back)",
                        err);
        replay_push(sh, e);
        return;
    }
    if (reply != NULL && reply->type == MF_REDIS_ERROR) {
        char m[200];

        snprintf(m, sizeof(m), "%.*s", (int)reply->str.len, reply->str.data);
        log_store_error("a settlement's usage was not added to the shared "
                        "ledger (this node's ledger has it)",
                        m);
    }
    free(e);
    replay_flush(sh, NULL);
}

static int
replay_send(mf_req_t *r, replay_t *e)
{
    mf_str_t argv[21];
    char keys[4][400], nums[13][24], a[2][24];

    if (e->kind == 0) {
        snprintf(a[0], sizeof(a[0]), "%lld", (long long)e->amount);
        snprintf(a[1], sizeof(a[1]), "%lld", (long long)e->keep);
        argv[0] = e->whole ? MF_STR("EVAL") : MF_STR("EVALSHA");
        argv[1] = e->whole ? (mf_str_t){spend_lua, sizeof(spend_lua) - 1}
                           : (mf_str_t){((shared_t *)e->sh)->spend_sha, 40};
        argv[2] = MF_STR("1");
        argv[3] = (mf_str_t){e->key, strlen(e->key)};
        argv[4] = (mf_str_t){a[0], strlen(a[0])};
        argv[5] = (mf_str_t){a[1], strlen(a[1])};
        return api->redis_post(r, 6, argv, replay_done, e);
    }
    use_argv(e->key, (mf_str_t){e->model, strlen(e->model)}, e->v, e->ts,
             e->whole ? NULL : ((shared_t *)e->sh)->use_sha, keys, nums, argv);
    return api->redis_post(r, 21, argv, replay_done, e);
}

/* Redis answered: sends what was kept while it failed, a batch at a
 * time (each answer sends the next). */
static void
replay_flush(shared_t *sh, mf_req_t *r)
{
    replay_t *batch, *e, *last = NULL;
    size_t n = 0;

    if (__atomic_load_n(&sh->rlen, __ATOMIC_RELAXED) == 0) {
        return;
    }
    pthread_mutex_lock(&sh->lock);
    batch = sh->rhead;
    for (e = batch; e != NULL && n < REPLAY_BATCH; e = e->next) {
        last = e;
        n++;
    }
    if (last != NULL) {
        sh->rhead = last->next;
        last->next = NULL;
    }
    if (sh->rhead == NULL) {
        sh->rtail = NULL;
    }
    __atomic_store_n(&sh->rlen, sh->rlen - n, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&sh->lock);
    if (n > 0) {
        api->log(MF_LOG_INFO,
                 "limits: Redis store: replaying %zu settlements made while "
                 "it failed",
                 n);
    }
    while (batch != NULL) {
        e = batch;
        batch = e->next;
        if (replay_send(r, e) != MF_OK) {
            replay_push(sh, e); /* down again: kept, with the rest */
            while (batch != NULL) {
                e = batch;
                batch = e->next;
                replay_push(sh, e);
            }
        }
    }
}

/* Adds one settled request to the shared ledger: the consumer's hashes
 * (when someone was identified) and everyone's. What cannot reach Redis
 * is kept and replayed when it is back. */
static void
use_post(lm_t *lm, mf_req_t *r, mf_str_t consumer, mf_str_t model,
         const int64_t *v)
{
    int64_t now = (int64_t)time(NULL);
    int t;

    if (consumer.len > 160 || model.len > 200) {
        return;
    }
    for (t = 0; t < 2; t++) {
        replay_t *e;

        if (t == 0 && consumer.len == 0) {
            continue;
        }
        if ((e = calloc(1, sizeof(*e))) == NULL) {
            return;
        }
        e->kind = 1;
        e->sh = lm->sh;
        e->ts = now;
        if (t == 0) {
            snprintf(e->key, sizeof(e->key), "c:%.*s", (int)consumer.len,
                     consumer.data);
        } else {
            snprintf(e->key, sizeof(e->key), "all");
        }
        memcpy(e->model, model.data, model.len);
        memcpy(e->v, v, sizeof(e->v));
        if (replay_send(r, e) != MF_OK) {
            log_store_error("a settlement's usage could not be sent to the "
                            "shared ledger (kept for when Redis is back)",
                            "Redis is unavailable");
            replay_push(lm->sh, e);
        }
    }
}

/* A settlement made without Redis (admitted while it failed): each
 * budget's spend kept for Redis, whatever the budgets' on_store_error
 * (with `open` nothing was checked, but the money was spent). */
static void
replay_spend(lm_t *lm, const rctx_t *x, int64_t tokens, int64_t cost)
{
    int s;

    for (s = 0; s < x->nscopes; s++) {
        const lim_t *l = &x->lim[s];
        int64_t spend = l->budget_usd ? cost : tokens;
        replay_t *e;

        if (!l->has_budget || spend <= 0 ||
            (e = calloc(1, sizeof(*e))) == NULL) {
            continue;
        }
        e->kind = 0;
        snprintf(e->key, sizeof(e->key), "mf:lim:{%s}:%s:b:%s:%lld", x->tag[s],
                 x->scope[s], l->budget_usd ? "usd" : "tokens",
                 (long long)x->period_start[s]);
        e->amount = spend;
        e->keep = x->budget_ttl[s];
        replay_push(lm->sh, e);
    }
}

/* Settlement (on_done, exactly once) */

static void
put_str(char *dst, size_t cap, mf_str_t s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;

    if (n > 0) {
        memcpy(dst, s.data, n);
    }
    dst[n] = '\0';
}

/* An answer whose usage is only estimated (cut, abandoned, timed out)
 * is charged at least what was reserved (unknown usage never refunds):
 * the record's usage is raised to it here, in on_log, so the access log,
 * metrics, traces and the dashboard (stages after this one) read what
 * the ledger and the budgets are charged in on_done. */
static void
lm_on_log(mf_req_t *r, void *state, void **ctx)
{
    rctx_t *x = *ctx;
    mf_req_info_t i = {.size = offsetof(mf_req_info_t, trace_id)};
    mf_usage_t u;

    (void)state;
    if (x == NULL || x->settled || !x->admitted) {
        return;
    }
    api->get_info(r, &i);
    u = i.usage;
    /* billable as on_done has it: an upstream answered, or the prompt
     * went out */
    if (!u.estimated || u.prompt_tokens < 0 ||
        !(i.attempts > 0 || i.cached == 2) ||
        !((i.upstream_status >= 200 && i.upstream_status < 300) ||
          u.prompt_tokens > 0) ||
        u.prompt_tokens + (u.completion_tokens > 0 ? u.completion_tokens : 0) >=
            x->est_tokens) {
        return;
    }
    if (u.prompt_tokens < x->est_prompt) {
        u.prompt_tokens = x->est_prompt;
    }
    if (u.completion_tokens < x->est_tokens - u.prompt_tokens) {
        u.completion_tokens = x->est_tokens - u.prompt_tokens;
    }
    u.total_tokens = u.prompt_tokens + u.completion_tokens;
    (void)api->set_usage(r, &u);
}

static void
lm_on_done(mf_req_t *r, void *state, void **ctx)
{
    lm_t *lm = state;
    shared_t *sh = lm->sh;
    rctx_t *x = *ctx;
    mf_req_info_t i = {.size = sizeof(i)};
    mf_consumer_t c = {.size = sizeof(c)};
    int64_t tokens, cost, prompt, completion, cached;
    int reported, billable, s;
    op_t *op;

    if (x != NULL && !x->admitted && !x->settled && x->grp > 0) {
        /* the request ended while its admission was under way: give
         * back what the groups before took */
        int64_t zero[MAX_SCOPES] = {0};

        x->settled = 1;
        redis_settle(lm, r, x, 0, x->grp, -x->est_tokens, zero);
        return;
    }
    if (x == NULL || x->settled || !x->admitted) {
        return;
    }
    x->settled = 1;
    *ctx = NULL;
    api->get_info(r, &i);
    prompt = i.usage.prompt_tokens;
    completion = i.usage.completion_tokens;
    cached = i.usage.cached_tokens;
    reported = prompt >= 0 && !i.usage.estimated;
    /* nothing billable when no upstream answered 2xx (refused, failed
     * before any answer): the reservation is given back */
    billable =
        (i.attempts > 0 || i.cached == 2) &&
        (reported || (i.upstream_status >= 200 && i.upstream_status < 300) ||
         i.usage.prompt_tokens > 0);
    if (!billable) {
        tokens = 0;
        cost = 0;
    } else if (reported) {
        tokens = (prompt > 0 ? prompt : 0) + (completion > 0 ? completion : 0);
        cost = x->priced
                   ? price_cost(&x->price, prompt, cached, i.cache_write_tokens,
                                completion, i.usage.reasoning_tokens)
                   : 0;
    } else {
        /* an estimate only (cut, abandoned, timed out): never less than
         * what was reserved */
        int64_t est =
            (prompt > 0 ? prompt : 0) + (completion > 0 ? completion : 0);

        tokens = est > x->est_tokens ? est : x->est_tokens;
        cost = x->priced
                   ? price_cost(&x->price, prompt, cached, i.cache_write_tokens,
                                completion, i.usage.reasoning_tokens)
                   : 0;
        if (cost < x->est_cost) {
            cost = x->est_cost;
        }
    }
    if (x->redis) {
        int64_t spend[MAX_SCOPES];

        for (s = 0; s < x->nscopes; s++) {
            spend[s] = x->lim[s].budget_usd ? cost : tokens;
        }
        redis_settle(lm, r, x, 0, x->ngroups, tokens - x->est_tokens, spend);
        goto ledger;
    }
    pthread_mutex_lock(&sh->lock);
    for (s = 0; s < x->nscopes; s++) {
        const lim_t *l = &x->lim[s];
        int w;

        for (w = 3; w < NWIN && (x->mask & (1 << K_RATES)); w++) {
            int64_t *tat;

            if (l->win[w] > 0 && (tat = tat_of(sh, x->scope[s], w)) != NULL) {
                __int128 d = ((__int128)(tokens - x->est_tokens) * win_us[w]) /
                             l->win[w];

                *tat += (int64_t)d;
            }
        }
        if (x->lease[s] != 0) {
            gov_leases_t *ls = leases_of(sh, x->scope[s]);

            if (ls != NULL) {
                gov_lease_release(ls, x->lease[s]);
            }
        }
        if (l->has_budget && (x->mask & (1 << K_BUDGETS))) {
            budget_t *b = budget_of(sh, x->scope[s], l->budget_usd);
            int64_t held = l->budget_usd ? x->est_cost : x->est_tokens;
            int64_t spend = l->budget_usd ? cost : tokens;

            if (b != NULL) {
                b->reserved -= held;
                if (b->period_start == x->period_start[s]) {
                    b->used += spend;
                } else if (b->period_start < x->period_start[s]) {
                    b->period_start = x->period_start[s];
                    b->used = spend;
                    b->topup = 0;
                } else {
                    b->used += spend; /* reserved last period, settled in
                                         this one: counted here */
                }
                queue_spend(lm, x->scope[s], l->budget_usd, b->period_start,
                            spend, 0);
                if (l->budget_usd) {
                    publish_budget(x->scope[s], b);
                }
            }
        }
    }
    pthread_mutex_unlock(&sh->lock);
    if (lm->redis) {
        replay_spend(lm, x, tokens, cost);
    }
ledger:
    if (api->get_consumer(r, &c) == MF_OK) {
        publish_cost(c.name, cost);
    } else {
        c.name = (mf_str_t){"", 0};
    }
    if (lm->redis) {
        int64_t p0 = billable ? (prompt > 0 ? prompt : 0) : 0;
        int64_t c0 = billable ? (completion > 0 ? completion : 0) : 0;
        int64_t v[9];

        if (billable && !reported && p0 + c0 < tokens) {
            c0 = tokens - p0; /* what was charged, as the row below */
        }
        v[0] = 1;
        v[1] = p0;
        v[2] = c0;
        v[3] = cached > 0 ? cached : 0;
        v[4] = i.usage.reasoning_tokens > 0 ? i.usage.reasoning_tokens : 0;
        v[5] = cost;
        v[6] = billable && !reported;
        v[7] = billable && !x->priced;
        v[8] = billable && i.cache_write_tokens > 0 ? i.cache_write_tokens : 0;
        use_post(lm, r, c.name, i.model, v);
    }
    if (lm->db_path == NULL || (op = calloc(1, sizeof(*op))) == NULL) {
        return;
    }
    op->kind = 2;
    op->ts = (int64_t)time(NULL);
    if (api->get_consumer(r, &c) == MF_OK) {
        put_str(op->consumer, sizeof(op->consumer), c.name);
        put_str(op->key_id, sizeof(op->key_id), c.key_id);
    }
    put_str(op->model, sizeof(op->model), i.model);
    put_str(op->provider, sizeof(op->provider), i.provider);
    op->prompt = billable ? (prompt > 0 ? prompt : 0) : 0;
    op->completion = billable ? (completion > 0 ? completion : 0) : 0;
    if (billable && !reported && op->prompt + op->completion < tokens) {
        op->completion = tokens - op->prompt; /* what was charged */
    }
    op->cached = cached > 0 ? cached : 0;
    op->reasoning = i.usage.reasoning_tokens > 0 ? i.usage.reasoning_tokens : 0;
    op->cost = cost;
    op->cache_write =
        billable && i.cache_write_tokens > 0 ? i.cache_write_tokens : 0;
    op->estimated = billable && !reported;
    op->unpriced = billable && !x->priced;
    op->status = i.status;
    enqueue(sh, op);
}

/* The writer thread: applies queued operations in transactions. */

static const char *const op_sql[3] = {
    "INSERT INTO spend(scope, period_start, used, topup) "
    "VALUES(?, ?, ?, 0) ON CONFLICT(scope, period_start) DO UPDATE "
    "SET used = used + excluded.used",
    "INSERT INTO spend(scope, period_start, used, topup) "
    "VALUES(?, ?, 0, ?) ON CONFLICT(scope, period_start) DO UPDATE "
    "SET topup = topup + excluded.topup",
    "INSERT INTO ledger(ts, consumer, key_id, model, provider, "
    "prompt, completion, cached, reasoning, cost, estimated, "
    "unpriced, status, cache_write) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"};

/* One operation, with the writer's statements (prepared once). */
static void
write_op(sqlite3 *db, sqlite3_stmt **sts, const op_t *op)
{
    sqlite3_stmt *st;

    if (op->kind < 0 || op->kind > 2) {
        return;
    }
    if (sts[op->kind] == NULL &&
        sqlite3_prepare_v2(db, op_sql[op->kind], -1, &sts[op->kind], NULL) !=
            SQLITE_OK) {
        return;
    }
    st = sts[op->kind];
    if (op->kind == 2) {
        sqlite3_bind_int64(st, 1, op->ts);
        sqlite3_bind_text(st, 2, op->consumer, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, op->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, op->model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, op->provider, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, op->prompt);
        sqlite3_bind_int64(st, 7, op->completion);
        sqlite3_bind_int64(st, 8, op->cached);
        sqlite3_bind_int64(st, 9, op->reasoning);
        sqlite3_bind_int64(st, 10, op->cost);
        sqlite3_bind_int(st, 11, op->estimated);
        sqlite3_bind_int(st, 12, op->unpriced);
        sqlite3_bind_int(st, 13, op->status);
        sqlite3_bind_int64(st, 14, op->cache_write);
    } else {
        sqlite3_bind_text(st, 1, op->scope, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, op->period_start);
        sqlite3_bind_int64(st, 3, op->amount);
    }
    sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* One batch's spend deltas of a scope and period add up into one
 * statement (the ledger rows stay one each). */
static void
coalesce(op_t *ops)
{
    op_t *a, *b;

    for (a = ops; a != NULL; a = a->next) {
        if (a->kind != 0 && a->kind != 1) {
            continue;
        }
        for (b = a->next; b != NULL; b = b->next) {
            if (b->kind == a->kind && b->period_start == a->period_start &&
                strcmp(b->scope, a->scope) == 0) {
                a->amount += b->amount;
                b->kind = -1; /* written with a */
            }
        }
    }
}

static void *
writer_main(void *arg)
{
    lm_t *lm = arg;
    shared_t *sh = lm->sh;
    sqlite3 *db = NULL;
    sqlite3_stmt *sts[3] = {NULL, NULL, NULL}, *begin = NULL, *commit = NULL;
    int k;

    if (sqlite3_open(lm->db_path, &db) != SQLITE_OK) {
        api->log(MF_LOG_ERROR, "limits: writer cannot open %s", lm->db_path);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    /* WAL with synchronous=NORMAL: a commit is in the file when it
     * returns (a kill -9 loses nothing committed); only a power cut can
     * lose the last commits (no fsync per commit) */
    sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    for (;;) {
        op_t *ops, *op;
        struct timespec until;
        size_t taken;

        pthread_mutex_lock(&sh->qlock);
        while (sh->qhead == NULL && !lm->stop) {
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&sh->wcond, &sh->qlock, &until);
        }
        /* the window: more settlements join this transaction */
        while (sh->qhead != NULL && !lm->stop && !sh->urgent &&
               sh->qlen < FLUSH_MAX) {
            until = sh->qsince;
            until.tv_nsec += FLUSH_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&sh->wcond, &sh->qlock, &until) ==
                ETIMEDOUT) {
                break;
            }
        }
        ops = sh->qhead;
        taken = sh->qlen;
        sh->qhead = sh->qtail = NULL;
        sh->qlen = 0;
        sh->urgent = 0;
        sh->busy += ops != NULL;
        sh->inflight += taken;
        pthread_mutex_unlock(&sh->qlock);
        if (ops == NULL && lm->stop) {
            break;
        }
        coalesce(ops);
        if (begin == NULL) {
            sqlite3_prepare_v2(db, "BEGIN", -1, &begin, NULL);
            sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL);
        }
        sqlite3_step(begin);
        sqlite3_reset(begin);
        for (op = ops; op != NULL; op = op->next) {
            write_op(db, sts, op);
        }
        sqlite3_step(commit);
        sqlite3_reset(commit);
        while (ops != NULL) {
            op = ops->next;
            free(ops);
            ops = op;
        }
        pthread_mutex_lock(&sh->qlock);
        sh->busy--;
        sh->inflight -= taken;
        pthread_cond_broadcast(&sh->qcond);
        pthread_mutex_unlock(&sh->qlock);
    }
    for (k = 0; k < 3; k++) {
        sqlite3_finalize(sts[k]);
    }
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close(db);
    return NULL;
}

/* Waits (up to 2 s) until every queued operation is written. */
static void
flush(lm_t *lm)
{
    shared_t *sh = lm->sh;
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    pthread_mutex_lock(&sh->qlock);
    if (sh->qhead != NULL) {
        sh->urgent = 1; /* no waiting out the window */
        pthread_cond_broadcast(&sh->wcond);
    }
    while ((sh->qhead != NULL || sh->busy > 0) &&
           pthread_cond_timedwait(&sh->qcond, &sh->qlock, &until) == 0) {
    }
    pthread_mutex_unlock(&sh->qlock);
}

/* Admin commands */

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

static const char *
arg_pos(const json_t *args, size_t i)
{
    return json_string_value(json_array_get(json_object_get(args, "args"), i));
}

/* budget topup NAME AMOUNT [--group] [--period P] [--tz Z] */
static int
cmd_topup(void *arg, const json_t *args, json_t **out)
{
    lm_t *lm = arg;
    const char *name = arg_pos(args, 0), *amt = arg_pos(args, 1);
    const char *per = json_string_value(json_object_get(args, "period"));
    const char *tz = json_string_value(json_object_get(args, "tz"));
    int group = json_is_true(json_object_get(args, "group"));
    char scope[160], t[256];
    int64_t amount, start, end;
    gov_period_t p = GOV_MONTH;
    int usd, off = 0;
    budget_t *b;

    if (name == NULL || amt == NULL ||
        gov_amount_parse(amt, &amount, &usd, NULL, NULL) != MF_OK ||
        (per != NULL && gov_period_parse(per, &p) != MF_OK) ||
        (tz != NULL && gov_tz_parse(tz, &off) != MF_OK)) {
        *out = err_json("budget topup NAME AMOUNT (10usd or 50000tokens) "
                        "[--group] [--period month] [--tz UTC]");
        return 400;
    }
    snprintf(scope, sizeof(scope), "%s:%s", group ? "group" : "consumer", name);
    if (lm->redis) {
        char key[400], keep[32], a[32], e[256];
        json_t *rep;

        gov_period_bounds(p, off, (int64_t)time(NULL), &start, &end);
        snprintf(key, sizeof(key), "mf:lim:{%c:%s}:%s:b:%s:%lld",
                 group ? 'g' : 'c', name, scope, usd ? "usd" : "tokens",
                 (long long)start);
        snprintf(a, sizeof(a), "%lld", (long long)amount);
        snprintf(keep, sizeof(keep), "%lld",
                 (long long)(end - (int64_t)time(NULL) + 35 * 86400));
        rep = api->redis_call(4,
                              (mf_str_t[]){MF_STR("HINCRBY"),
                                           {key, strlen(key)},
                                           MF_STR("topup"),
                                           {a, strlen(a)}},
                              e, sizeof(e));
        if (rep == NULL) {
            *out = err_json("the budget store (Redis): %s", e);
            return 503;
        }
        json_decref(rep);
        if (p != GOV_TOTAL) {
            json_decref(api->redis_call(3,
                                        (mf_str_t[]){MF_STR("EXPIRE"),
                                                     {key, strlen(key)},
                                                     {keep, strlen(keep)}},
                                        e, sizeof(e)));
        }
        snprintf(t, sizeof(t), "%s topped up by %s (%s from %lld)\n", scope,
                 amt, gov_period_name(p), (long long)start);
        *out = json_pack("{s:s,s:I,s:s,s:s}", "scope", scope, "amount",
                         (json_int_t)amount, "unit",
                         usd ? "micro_usd" : "tokens", "text", t);
        return 200;
    }
    pthread_mutex_lock(&lm->sh->lock);
    b = budget_of(lm->sh, scope, usd);
    if (b != NULL && b->period_start == 0) {
        gov_period_bounds(p, off, (int64_t)time(NULL), &start, &end);
        b->period_start = start;
    }
    if (b != NULL) {
        b->topup += amount;
        queue_spend(lm, scope, usd, b->period_start, amount, 1);
        if (usd) {
            publish_budget(scope, b);
        }
    }
    pthread_mutex_unlock(&lm->sh->lock);
    snprintf(t, sizeof(t), "%s topped up by %s\n", scope, amt);
    *out = json_pack("{s:s,s:I,s:s,s:s}", "scope", scope, "amount",
                     (json_int_t)amount, "unit", usd ? "micro_usd" : "tokens",
                     "text", t);
    return 200;
}

static int
cmd_budget_show(void *arg, const json_t *args, json_t **out)
{
    lm_t *lm = arg;
    const char *name = arg_pos(args, 0);
    int group = json_is_true(json_object_get(args, "group"));
    char scope[160];
    json_t *j = json_object();
    int usd;
    json_int_t unwritten;

    if (name == NULL) {
        json_decref(j);
        *out = err_json("budget show NAME [--group]");
        return 400;
    }
    snprintf(scope, sizeof(scope), "%s:%s", group ? "group" : "consumer", name);
    if (lm->redis) {
        const char *per = json_string_value(json_object_get(args, "period"));
        const char *tz = json_string_value(json_object_get(args, "tz"));
        gov_period_t p = GOV_MONTH;
        int64_t start, end;
        int off = 0;

        if ((per != NULL && gov_period_parse(per, &p) != MF_OK) ||
            (tz != NULL && gov_tz_parse(tz, &off) != MF_OK)) {
            json_decref(j);
            *out = err_json("budget show NAME [--group] [--period month] "
                            "[--tz UTC]");
            return 400;
        }
        gov_period_bounds(p, off, (int64_t)time(NULL), &start, &end);
        for (usd = 0; usd < 2; usd++) {
            char key[400], e[256];
            json_t *rep;

            snprintf(key, sizeof(key), "mf:lim:{%c:%s}:%s:b:%s:%lld",
                     group ? 'g' : 'c', name, scope, usd ? "usd" : "tokens",
                     (long long)start);
            rep = api->redis_call(5,
                                  (mf_str_t[]){MF_STR("HMGET"),
                                               {key, strlen(key)},
                                               MF_STR("used"),
                                               MF_STR("reserved"),
                                               MF_STR("topup")},
                                  e, sizeof(e));
            if (rep == NULL) {
                json_decref(j);
                *out = err_json("the budget store (Redis): %s", e);
                return 503;
            }
            if (json_is_string(json_array_get(rep, 0)) ||
                json_is_string(json_array_get(rep, 1)) ||
                json_is_string(json_array_get(rep, 2))) {
                json_t *b =
                    json_pack("{s:I}", "period_start", (json_int_t)start);
                const char *f[3] = {"used", "reserved", "topup"};
                int i;

                for (i = 0; i < 3; i++) {
                    const char *v = json_string_value(json_array_get(rep, i));

                    json_object_set_new(b, f[i],
                                        json_integer(v ? atoll(v) : 0));
                }
                json_object_set_new(j, usd ? "micro_usd" : "tokens", b);
            }
            json_decref(rep);
        }
        *out = json_pack("{s:s,s:s,s:o}", "scope", scope, "store", "redis",
                         "budgets", j);
        return 200;
    }
    pthread_mutex_lock(&lm->sh->lock);
    for (usd = 0; usd < 2; usd++) {
        char k[200];
        int n = snprintf(k, sizeof(k), "%s|%s", scope, usd ? "usd" : "tokens");
        budget_t *b = gov_map_get(lm->sh->budgets, (mf_str_t){k, (size_t)n});

        if (b != NULL) {
            json_object_set_new(j, usd ? "micro_usd" : "tokens",
                                json_pack("{s:I,s:I,s:I,s:I}", "period_start",
                                          (json_int_t)b->period_start, "used",
                                          (json_int_t)b->used, "reserved",
                                          (json_int_t)b->reserved, "topup",
                                          (json_int_t)b->topup));
        }
    }
    pthread_mutex_unlock(&lm->sh->lock);
    pthread_mutex_lock(&lm->sh->qlock);
    unwritten = (json_int_t)(lm->sh->qlen + lm->sh->inflight);
    pthread_mutex_unlock(&lm->sh->qlock);
    /* unwritten: the settlement records (spend deltas, ledger rows) this
     * node has not committed to its database yet, what a kill -9 now
     * would lose */
    *out = json_pack("{s:s,s:s,s:o,s:I}", "scope", scope, "store", "local",
                     "budgets", j, "unwritten", unwritten);
    return 200;
}

/* One model's line of `usage`. */
typedef struct {
    char model[200];
    int64_t v[9]; /* requests, prompt, completion, cached, reasoning,
                     micro-USD, estimated, unpriced, cache writes */
} use_row_t;

static int
use_row_cmp(const void *a, const void *b)
{
    return strcmp(((const use_row_t *)a)->model, ((const use_row_t *)b)->model);
}

/* The shared ledger's hash of a period (Redis store): rows by model.
 * Returns the number of rows, or -1 with err set (Redis failed). */
static int
use_read(const char *who, gov_period_t p, int64_t start, use_row_t **rows,
         char *err, size_t errcap)
{
    static const char kinds[] = "npckrdeuw";
    char key[400], tag[200];
    json_t *rep;
    size_t i, n;
    int nrows = 0, cap = 0, k;

    *rows = NULL;
    if (who != NULL) {
        snprintf(tag, sizeof(tag), "c:%s", who);
    } else {
        snprintf(tag, sizeof(tag), "all");
    }
    use_key(key, sizeof(key), tag, p, start);
    rep = api->redis_call(
        2, (mf_str_t[]){MF_STR("HGETALL"), {key, strlen(key)}}, err, errcap);
    if (rep == NULL) {
        return -1;
    }
    n = json_array_size(rep);
    for (i = 0; i + 1 < n; i += 2) {
        const char *f = json_string_value(json_array_get(rep, i));
        const char *v = json_string_value(json_array_get(rep, i + 1));
        const char *kp;
        int r;

        if (f == NULL || v == NULL || f[0] == '\0' || f[1] != ':' ||
            (kp = strchr(kinds, f[0])) == NULL) {
            continue; /* `cost`, the whole */
        }
        k = (int)(kp - kinds);
        for (r = 0; r < nrows && strcmp((*rows)[r].model, f + 2) != 0; r++) {
        }
        if (r == nrows) {
            if (nrows == cap) {
                int nc = cap ? cap * 2 : 8;
                use_row_t *g = realloc(*rows, (size_t)nc * sizeof(**rows));

                if (g == NULL) {
                    break;
                }
                *rows = g;
                cap = nc;
            }
            memset(&(*rows)[r], 0, sizeof((*rows)[r]));
            snprintf((*rows)[r].model, sizeof((*rows)[r].model), "%s", f + 2);
            nrows++;
        }
        (*rows)[r].v[k] += atoll(v);
    }
    json_decref(rep);
    if (nrows > 1) {
        qsort(*rows, (size_t)nrows, sizeof(**rows), use_row_cmp);
    }
    return nrows;
}

/* This node's ledger rows of [start, end), by model. Returns the number
 * of rows, or -1 (the SQLite error is the reader's). */
static int
use_sqlite(lm_t *lm, const char *who, int64_t start, int64_t end,
           use_row_t **rows)
{
    sqlite3_stmt *st = NULL;
    int nrows = 0, cap = 0, k;

    *rows = NULL;
    if (sqlite3_prepare_v2(
            lm->rdb,
            "SELECT model, count(*), sum(prompt), sum(completion), "
            "sum(cached), sum(reasoning), sum(cost), sum(estimated), "
            "sum(unpriced), sum(cache_write) FROM ledger WHERE ts >= ? AND ts "
            "< ? AND "
            "(?3 IS NULL OR consumer = ?3) GROUP BY model ORDER BY model",
            -1, &st, NULL) != SQLITE_OK) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, start);
    sqlite3_bind_int64(st, 2, end);
    if (who != NULL) {
        sqlite3_bind_text(st, 3, who, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, 3);
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(st, 0);
        use_row_t *row;

        if (nrows == cap) {
            int nc = cap ? cap * 2 : 8;
            use_row_t *g = realloc(*rows, (size_t)nc * sizeof(**rows));

            if (g == NULL) {
                break;
            }
            *rows = g;
            cap = nc;
        }
        row = &(*rows)[nrows++];
        memset(row, 0, sizeof(*row));
        snprintf(row->model, sizeof(row->model), "%s", m ? m : "");
        for (k = 0; k < 9; k++) {
            row->v[k] = sqlite3_column_int64(st, k + 1);
        }
    }
    sqlite3_finalize(st);
    return nrows;
}

/* usage [--consumer NAME] [--period day|week|month|total] [--tz Z] */
static int
cmd_usage(void *arg, const json_t *args, json_t **out)
{
    lm_t *lm = arg;
    const char *who = json_string_value(json_object_get(args, "consumer"));
    const char *per = json_string_value(json_object_get(args, "period"));
    const char *tz = json_string_value(json_object_get(args, "tz"));
    gov_period_t p = GOV_MONTH;
    int64_t start, end;
    int off = 0, r, nrows;
    use_row_t *rows = NULL;
    const char *source = "node";
    json_t *models = json_array();
    char *text = NULL;
    size_t tlen = 0;
    FILE *f;
    struct {
        int64_t n, prompt, completion, cached, reasoning, cost, est, unpriced,
            cache_write;
    } tot = {0};

    if (who == NULL) {
        who = arg_pos(args, 0);
    }
    if ((per != NULL && gov_period_parse(per, &p) != MF_OK) ||
        (tz != NULL && gov_tz_parse(tz, &off) != MF_OK)) {
        json_decref(models);
        *out = err_json("usage [--consumer NAME] [--period "
                        "day|week|month|total] [--tz +02:00]");
        return 400;
    }
    gov_period_bounds(p, off, (int64_t)time(NULL), &start, &end);
    if (lm->redis && (off == 0 || lm->rdb == NULL)) {
        char e[256];

        if (off != 0) {
            json_decref(models);
            *out = err_json("with the Redis store the shared ledger is kept "
                            "by UTC period; --tz needs this node's ledger "
                            "(db)");
            return 400;
        }
        nrows = use_read(who, p, start, &rows, e, sizeof(e));
        if (nrows < 0) {
            json_decref(models);
            *out = err_json("the usage ledger (Redis): %s", e);
            return 503;
        }
        source = "redis";
    } else if (lm->rdb == NULL) {
        json_decref(models);
        *out = err_json("the limits stage keeps no ledger (db: none)");
        return 404;
    } else {
        flush(lm);
        nrows = use_sqlite(lm, who, start, end, &rows);
        if (nrows < 0) {
            json_decref(models);
            *out = err_json("ledger: %s", sqlite3_errmsg(lm->rdb));
            return 500;
        }
    }
    f = open_memstream(&text, &tlen);
    if (f != NULL) {
        fprintf(f, "%-24s %8s %10s %10s %10s %12s  %s\n", "model", "requests",
                "prompt", "completion", "cached", "cost_usd", "flags");
    }
    for (r = 0; r < nrows; r++) {
        const char *m = rows[r].model;
        const int64_t *v = rows[r].v;

        tot.n += v[0];
        tot.prompt += v[1];
        tot.completion += v[2];
        tot.cached += v[3];
        tot.reasoning += v[4];
        tot.cost += v[5];
        tot.est += v[6];
        tot.unpriced += v[7];
        tot.cache_write += v[8];
        json_array_append_new(
            models,
            json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "model", m,
                      "requests", (json_int_t)v[0], "prompt_tokens",
                      (json_int_t)v[1], "completion_tokens", (json_int_t)v[2],
                      "cached_tokens", (json_int_t)v[3], "cache_write_tokens",
                      (json_int_t)v[8], "reasoning_tokens", (json_int_t)v[4],
                      "cost_micro_usd", (json_int_t)v[5], "estimated",
                      (json_int_t)v[6], "unpriced", (json_int_t)v[7]));
        if (f != NULL) {
            fprintf(f, "%-24s %8lld %10lld %10lld %10lld %12.6f  %s%s\n", m,
                    (long long)v[0], (long long)v[1], (long long)v[2],
                    (long long)v[3], (double)v[5] / 1e6,
                    v[7] ? "UNPRICED " : "", v[6] ? "estimated" : "");
        }
    }
    free(rows);
    if (f != NULL) {
        fprintf(f, "%-24s %8lld %10lld %10lld %10lld %12.6f\n", "total",
                (long long)tot.n, (long long)tot.prompt,
                (long long)tot.completion, (long long)tot.cached,
                (double)tot.cost / 1e6);
        if (lm->redis && strcmp(source, "node") == 0) {
            fprintf(f, "(this node's requests only: the shared ledger is "
                       "kept by UTC period)\n");
        }
        fclose(f);
    }
    *out = json_pack(
        "{s:s?,s:s,s:s,s:I,s:I,s:o,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},"
        "s:s}",
        "consumer", who, "ledger", source, "period", gov_period_name(p), "from",
        (json_int_t)start, "to", (json_int_t)end, "models", models, "total",
        "requests", (json_int_t)tot.n, "prompt_tokens", (json_int_t)tot.prompt,
        "completion_tokens", (json_int_t)tot.completion, "cached_tokens",
        (json_int_t)tot.cached, "cache_write_tokens",
        (json_int_t)tot.cache_write, "reasoning_tokens",
        (json_int_t)tot.reasoning, "cost_micro_usd", (json_int_t)tot.cost,
        "estimated", (json_int_t)tot.est, "unpriced", (json_int_t)tot.unpriced,
        "text", text ? text : "");
    free(text);
    return 200;
}

/* Lifecycle */

static void
free_ptr(void *v)
{
    free(v);
}

static void
free_leases(void *v)
{
    gov_leases_free(v);
    free(v);
}

static void
shared_unref(shared_t *sh)
{
    int last;

    pthread_mutex_lock(&sh->lock);
    last = --sh->refs == 0;
    pthread_mutex_unlock(&sh->lock);
    if (!last) {
        return;
    }
    api->shared_delete((mf_str_t){sh->key, strlen(sh->key)});
    gov_map_free(sh->tats, free_ptr);
    gov_map_free(sh->leases, free_leases);
    gov_map_free(sh->budgets, free_ptr);
    while (sh->qhead != NULL) {
        op_t *n = sh->qhead->next;

        free(sh->qhead);
        sh->qhead = n;
    }
    if (sh->rlen > 0) {
        api->log(MF_LOG_WARN,
                 "limits: %zu settlements made while Redis failed were not "
                 "replayed before the stop",
                 sh->rlen);
    }
    while (sh->rhead != NULL) {
        replay_t *n = sh->rhead->next;

        free(sh->rhead);
        sh->rhead = n;
    }
    pthread_mutex_destroy(&sh->lock);
    pthread_mutex_destroy(&sh->qlock);
    pthread_cond_destroy(&sh->qcond);
    pthread_cond_destroy(&sh->wcond);
    free(sh);
}

/* The counters of this store: adopted from the instance before (a
 * reload), else new and filled from the store's spend. */
static shared_t *
shared_get(const char *key, int *adopted)
{
    shared_t *sh = NULL;
    char buf[sizeof(void *)];

    *adopted = 0;
    if (api->shared_get((mf_str_t){key, strlen(key)}, buf, sizeof(buf)) ==
        (int)sizeof(buf)) {
        memcpy(&sh, buf, sizeof(sh));
        if (sh != NULL &&
            memcmp(sh->magic, SHARED_MAGIC, sizeof(SHARED_MAGIC)) == 0) {
            pthread_mutex_lock(&sh->lock);
            if (sh->refs > 0) {
                sh->refs++;
                *adopted = 1;
            }
            pthread_mutex_unlock(&sh->lock);
            if (*adopted) {
                return sh;
            }
        }
    }
    sh = calloc(1, sizeof(*sh));
    if (sh == NULL) {
        return NULL;
    }
    memcpy(sh->magic, SHARED_MAGIC, sizeof(SHARED_MAGIC));
    pthread_mutex_init(&sh->lock, NULL);
    pthread_mutex_init(&sh->qlock, NULL);
    pthread_cond_init(&sh->qcond, NULL);
    pthread_cond_init(&sh->wcond, NULL);
    gov_sha1_hex(usage_lua, sizeof(usage_lua) - 1, sh->use_sha);
    gov_sha1_hex(spend_lua, sizeof(spend_lua) - 1, sh->spend_sha);
    sh->refs = 1;
    sh->tats = gov_map_new();
    sh->leases = gov_map_new();
    sh->budgets = gov_map_new();
    snprintf(sh->key, sizeof(sh->key), "%s", key);
    memcpy(buf, &sh, sizeof(sh));
    api->shared_set((mf_str_t){key, strlen(key)}, (mf_str_t){buf, sizeof(buf)},
                    0);
    return sh;
}

static int
db_open(lm_t *lm)
{
    static const char schema[] =
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE IF NOT EXISTS spend(scope TEXT NOT NULL, period_start "
        "INTEGER NOT NULL, used INTEGER NOT NULL, topup INTEGER NOT NULL, "
        "PRIMARY KEY(scope, period_start));"
        "CREATE TABLE IF NOT EXISTS ledger(ts INTEGER, consumer TEXT, key_id "
        "TEXT, model TEXT, provider TEXT, prompt INTEGER, completion "
        "INTEGER, cached INTEGER, reasoning INTEGER, cost INTEGER, estimated "
        "INTEGER, unpriced INTEGER, status INTEGER, cache_write INTEGER NOT "
        "NULL DEFAULT 0);"
        "CREATE INDEX IF NOT EXISTS ledger_ts ON ledger(ts);";
    char *err = NULL;
    mode_t old = umask(0077);

    if (sqlite3_open(lm->db_path, &lm->rdb) != SQLITE_OK) {
        umask(old);
        api->log(MF_LOG_ERROR, "limits: cannot open %s: %s; set `db`",
                 lm->db_path, lm->rdb ? sqlite3_errmsg(lm->rdb) : "?");
        return MF_ERR;
    }
    umask(old);
    sqlite3_busy_timeout(lm->rdb, 5000);
    if (sqlite3_exec(lm->rdb, schema, NULL, NULL, &err) != SQLITE_OK) {
        api->log(MF_LOG_ERROR, "limits: %s: %s", lm->db_path, err);
        sqlite3_free(err);
        return MF_ERR;
    }
    /* a ledger written before cache writes were kept gains the column
     * (the error when it has it already is the expected one) */
    (void)sqlite3_exec(lm->rdb,
                       "ALTER TABLE ledger ADD COLUMN cache_write INTEGER NOT "
                       "NULL DEFAULT 0",
                       NULL, NULL, NULL);
    return MF_OK;
}

/* The spend of each scope's latest period, into fresh counters. */
static void
load_spend(lm_t *lm)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(lm->rdb,
                           "SELECT scope, period_start, used, topup FROM "
                           "spend s WHERE period_start = (SELECT "
                           "max(period_start) FROM spend t WHERE t.scope = "
                           "s.scope)",
                           -1, &st, NULL) != SQLITE_OK) {
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        budget_t *b = calloc(1, sizeof(*b));

        if (b == NULL || k == NULL) {
            free(b);
            continue;
        }
        b->period_start = sqlite3_column_int64(st, 1);
        b->used = sqlite3_column_int64(st, 2);
        b->topup = sqlite3_column_int64(st, 3);
        if (strlen(k) > 4 && strcmp(k + strlen(k) - 4, "|usd") == 0) {
            char scope[200];

            snprintf(scope, sizeof(scope), "%.*s", (int)(strlen(k) - 4), k);
            publish_budget(scope, b);
        }
        free(gov_map_put(lm->sh->budgets, (mf_str_t){k, strlen(k)}, b));
    }
    sqlite3_finalize(st);
}

static void
lm_fini(void *state)
{
    lm_t *lm = state;

    if (lm == NULL) {
        return;
    }
    if (lm->writer_up) {
        pthread_mutex_lock(&lm->sh->qlock);
        lm->stop = 1;
        pthread_cond_broadcast(&lm->sh->wcond);
        pthread_mutex_unlock(&lm->sh->qlock);
        pthread_join(lm->writer, NULL);
    }
    if (lm->sh != NULL) {
        shared_unref(lm->sh);
    }
    if (lm->rdb != NULL) {
        sqlite3_close(lm->rdb);
    }
    json_decref(lm->models);
    json_decref(lm->dmt_models);
    json_decref(lm->groups);
    json_decref(lm->prices);
    price_forget(); /* the memo of price_of held it */
    free(lm->db_path);
    free(lm);
}

/* store: redis | local (default: redis when the config has `redis:`);
 * on_store_error: open | closed | local, or {rates, concurrency,
 * budgets} each (defaults: rates and concurrency local, budgets
 * closed). */
static int
store_settings(lm_t *lm, json_t *conf)
{
    static const char *const kinds[3] = {"rates", "concurrency", "budgets"};
    static const char *const modes[3] = {"open", "closed", "local"};
    const char *st = json_string_value(json_object_get(conf, "store"));
    json_t *oe = json_object_get(conf, "on_store_error"), *v;
    const char *k;
    int i, m;

    lm->on_err[K_RATES] = ERR_LOCAL;
    lm->on_err[K_CONC] = ERR_LOCAL;
    lm->on_err[K_BUDGETS] = ERR_CLOSED;
    if (st != NULL && strcmp(st, "redis") != 0 && strcmp(st, "local") != 0) {
        api->log(MF_LOG_ERROR, "limits: store '%s' must be redis or local", st);
        return MF_ERR;
    }
    lm->redis = st != NULL ? strcmp(st, "redis") == 0
                           : api->config_section("redis") != NULL;
    if (lm->redis && api->config_section("redis") == NULL) {
        api->log(MF_LOG_ERROR, "limits: store: redis needs `redis:` in the "
                               "config ({host, port, timeout})");
        return MF_ERR;
    }
    if (lm->redis &&
        (api->size < offsetof(mf_host_api_t, redis_call) + sizeof(void *))) {
        api->log(MF_LOG_ERROR, "limits: store: redis needs a newer host");
        return MF_ERR;
    }
    if (oe != NULL && !lm->redis) {
        api->log(MF_LOG_ERROR, "limits: on_store_error applies to the Redis "
                               "store only (this stage counts in memory)");
        return MF_ERR;
    }
    if (json_is_string(oe)) {
        for (m = 0; m < 3 && strcmp(modes[m], json_string_value(oe)); m++) {
        }
        if (m == 3) {
            goto bad;
        }
        for (i = 0; i < 3; i++) {
            lm->on_err[i] = m;
        }
    } else if (json_is_object(oe)) {
        json_object_foreach(oe, k, v)
        {
            for (i = 0; i < 3 && strcmp(kinds[i], k) != 0; i++) {
            }
            for (m = 0; m < 3 && json_is_string(v) &&
                        strcmp(modes[m], json_string_value(v)) != 0;
                 m++) {
            }
            if (i == 3 || m == 3 || !json_is_string(v)) {
                goto bad;
            }
            lm->on_err[i] = m;
        }
    } else if (oe != NULL) {
        goto bad;
    }
    gov_sha1_hex(store_lua, sizeof(store_lua) - 1, lm->sha);
    return MF_OK;
bad:
    api->log(MF_LOG_ERROR,
             "limits: on_store_error must be open, closed or local, or an "
             "object of rates, concurrency, budgets with one of them each");
    return MF_ERR;
}

/* A budget in the stage's config ({usd | tokens, period, tz}, as in
 * `consumers:`): checked, its usd made integer micro-USD in place. */
static int
conf_budget(json_t *b, const char *where)
{
    json_t *usd = json_object_get(b, "usd"),
           *tok = json_object_get(b, "tokens");
    json_t *v;
    const char *k, *s;
    gov_period_t per;
    int tz;

    if (!json_is_object(b)) {
        api->log(MF_LOG_ERROR,
                 "limits: %s.budget must be a map: { usd: 50, period: month }",
                 where);
        return MF_ERR;
    }
    json_object_foreach(b, k, v)
    {
        if (strcmp(k, "usd") != 0 && strcmp(k, "tokens") != 0 &&
            strcmp(k, "period") != 0 && strcmp(k, "tz") != 0) {
            api->log(MF_LOG_ERROR,
                     "limits: %s.budget: unknown key '%s' (usd, tokens, "
                     "period, tz)",
                     where, k);
            return MF_ERR;
        }
    }
    if ((usd == NULL) == (tok == NULL) ||
        (usd != NULL && (!json_is_number(usd) || json_number_value(usd) < 0 ||
                         json_number_value(usd) > 9e12)) ||
        (tok != NULL &&
         (!json_is_integer(tok) || json_integer_value(tok) < 0))) {
        api->log(MF_LOG_ERROR,
                 "limits: %s.budget needs one of usd (a number of dollars) "
                 "or tokens (a whole number)",
                 where);
        return MF_ERR;
    }
    s = json_string_value(json_object_get(b, "period"));
    if ((json_object_get(b, "period") != NULL &&
         (s == NULL || gov_period_parse(s, &per) != MF_OK))) {
        api->log(MF_LOG_ERROR,
                 "limits: %s.budget.period must be day, week, month or total",
                 where);
        return MF_ERR;
    }
    s = json_string_value(json_object_get(b, "tz"));
    if (json_object_get(b, "tz") != NULL &&
        (s == NULL || gov_tz_parse(s, &tz) != MF_OK)) {
        api->log(MF_LOG_ERROR,
                 "limits: %s.budget.tz must be UTC or an offset such as "
                 "+02:00",
                 where);
        return MF_ERR;
    }
    if (usd != NULL) {
        json_object_set_new(
            b, "micro_usd",
            json_integer((json_int_t)(json_number_value(usd) * 1e6 + 0.5)));
        json_object_del(b, "usd");
    }
    return MF_OK;
}

/* A limits map of the stage's config (key, global, a model's): rpm, rph,
 * rpd, tpm, tph, tpd and concurrency whole numbers of at least 1, and a
 * budget. */
static int
conf_limits(json_t *o, const char *where)
{
    const char *k;
    json_t *v;
    int w;

    if (o == NULL) {
        return MF_OK;
    }
    if (!json_is_object(o)) {
        api->log(MF_LOG_ERROR,
                 "limits: %s must be a map of rpm, rph, rpd, tpm, tph, tpd, "
                 "concurrency, budget",
                 where);
        return MF_ERR;
    }
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "budget") == 0) {
            if (conf_budget(v, where) != MF_OK) {
                return MF_ERR;
            }
            continue;
        }
        for (w = 0; w < NWIN && strcmp(win_names[w], k) != 0; w++) {
        }
        if (w == NWIN && strcmp(k, "concurrency") != 0) {
            api->log(MF_LOG_ERROR,
                     "limits: %s: unknown limit '%s' (rpm, rph, rpd, tpm, "
                     "tph, tpd, concurrency, budget)",
                     where, k);
            return MF_ERR;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            api->log(MF_LOG_ERROR,
                     "limits: %s.%s must be a whole number of at least 1",
                     where, k);
            return MF_ERR;
        }
    }
    return MF_OK;
}

static int
lm_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    static const char *const known[] = {
        "db",        "default_max_tokens", "key",   "models",         "global",
        "lease_ttl", "unpriced",           "store", "on_store_error", NULL};
    json_t *conf = json_loads(config_json, 0, NULL), *v, *g;
    const char *k, *db, *dir, *s;
    char skey[600];
    int64_t ms;
    lm_t *lm;
    size_t i;
    int adopted;

    api = host;
    if (host->abi_minor < 4 ||
        host->size <
            offsetof(mf_host_api_t, respond_error_code) + sizeof(void *)) {
        host->log(MF_LOG_ERROR, "limits: needs a host with ABI 1.4");
        json_decref(conf);
        return MF_ERR;
    }
    json_object_foreach(conf, k, v)
    {
        for (i = 0; known[i] != NULL && strcmp(known[i], k) != 0; i++) {
        }
        if (known[i] == NULL) {
            api->log(MF_LOG_ERROR,
                     "limits: unknown setting '%s' (known: db, "
                     "default_max_tokens, key, models, global, lease_ttl, "
                     "unpriced, store, on_store_error)",
                     k);
            json_decref(conf);
            return MF_ERR;
        }
    }
    lm = calloc(1, sizeof(*lm));
    if (lm == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    v = json_object_get(conf, "default_max_tokens");
    lm->default_max_tokens = 1024;
    if (json_is_object(v)) {
        json_t *n;

        json_object_foreach(v, k, n)
        {
            if (!json_is_integer(n) || json_integer_value(n) < 1) {
                api->log(MF_LOG_ERROR,
                         "limits: default_max_tokens.%s must be a whole "
                         "number of at least 1",
                         k);
                goto fail;
            }
        }
        lm->dmt_models = json_incref(v);
    } else if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            api->log(MF_LOG_ERROR,
                     "limits: default_max_tokens must be a whole number of "
                     "at least 1, or a map of model patterns to one "
                     "({\"gpt-4o*\": 16384, \"*\": 1024})");
            goto fail;
        }
        lm->default_max_tokens = json_integer_value(v);
    }
    lm->lease_ttl_us = 600000000LL;
    s = json_string_value(json_object_get(conf, "lease_ttl"));
    if (s != NULL) {
        if (gov_duration_parse(s, &ms) != MF_OK || ms < 1000) {
            api->log(MF_LOG_ERROR,
                     "limits: lease_ttl '%s' must be a "
                     "duration of at least 1s (10m)",
                     s);
            goto fail;
        }
        lm->lease_ttl_us = ms * 1000;
    }
    s = json_string_value(json_object_get(conf, "unpriced"));
    if (s != NULL && strcmp(s, "refuse") != 0 && strcmp(s, "allow") != 0) {
        api->log(MF_LOG_ERROR, "limits: unpriced '%s' must be allow or refuse",
                 s);
        goto fail;
    }
    lm->refuse_unpriced = s != NULL && strcmp(s, "refuse") == 0;
    if (store_settings(lm, conf) != MF_OK ||
        conf_limits(json_object_get(conf, "key"), "key") != MF_OK ||
        conf_limits(json_object_get(conf, "global"), "global") != MF_OK) {
        goto fail;
    }
    lm->models = json_object_get(conf, "models");
    if (lm->models != NULL && !json_is_object(lm->models)) {
        api->log(MF_LOG_ERROR, "limits: models must be a map of model "
                               "patterns to limits ({\"gpt-4o*\": {rpm: "
                               "60}})");
        lm->models = NULL;
        goto fail;
    }
    json_object_foreach(lm->models, k, v)
    {
        char where[300];

        snprintf(where, sizeof(where), "models.%.280s", k);
        if (conf_limits(v, where) != MF_OK) {
            lm->models = NULL;
            goto fail;
        }
    }
    /* each key's own budget, and one for everything */
    g = json_object_get(conf, "key");
    lim_from_json(&lm->key, g, json_object_get(g, "budget"));
    g = json_object_get(conf, "global");
    lim_from_json(&lm->global, g, json_object_get(g, "budget"));
    lm->models = lm->models ? json_incref(lm->models) : json_object();
    /* this stage enforces consumers' and groups' limits and budgets */
    (void)api->config_section("@limits");
    lm->groups = json_object();
    json_array_foreach(api->config_section("groups"), i, g)
    {
        json_object_set(lm->groups,
                        json_string_value(json_object_get(g, "name")), g);
    }
    lm->prices = json_deep_copy(api->config_section("prices"));
    if (lm->prices == NULL) {
        lm->prices = json_object();
    }
    db = json_string_value(json_object_get(conf, "db"));
    dir = json_string_value(api->config_section("dir"));
    if (db == NULL) {
        db = "usage.db";
    }
    if (strcmp(db, "none") != 0) {
        size_t n = strlen(db) + (dir ? strlen(dir) : 0) + 2;

        lm->db_path = malloc(n);
        if (lm->db_path == NULL) {
            goto fail;
        }
        snprintf(lm->db_path, n, "%s%s%s", db[0] == '/' || !dir ? "" : dir,
                 db[0] == '/' || !dir ? "" : "/", db);
        if (db_open(lm) != MF_OK) {
            goto fail;
        }
    }
    snprintf(skey, sizeof(skey), "mf.limits.%s",
             lm->db_path ? lm->db_path : "memory");
    lm->sh = shared_get(skey, &adopted);
    if (lm->sh == NULL) {
        goto fail;
    }
    if (!adopted && lm->rdb != NULL) {
        load_spend(lm);
    }
    if (lm->db_path != NULL) {
        if (pthread_create(&lm->writer, NULL, writer_main, lm) != 0) {
            goto fail;
        }
        lm->writer_up = 1;
    }
    if (api->register_command("budget.topup",
                              "NAME AMOUNT [--group]: more budget for the "
                              "current period (10usd, 50000tokens)",
                              cmd_topup, lm) != MF_OK ||
        api->register_command("budget.show",
                              "NAME [--group]: used, "
                              "reserved, topped up",
                              cmd_budget_show, lm) != MF_OK ||
        api->register_command("usage",
                              "[--consumer NAME] [--period month]: requests, "
                              "tokens and cost by model",
                              cmd_usage, lm) != MF_OK) {
        goto fail;
    }
    json_decref(conf);
    *state = lm;
    return MF_OK;
fail:
    json_decref(conf);
    lm_fini(lm);
    return MF_ERR;
}

static const mf_plugin_t limits_plugin = {
    MF_PLUGIN_ABI,       .name = "limits",      .version = "1.0.0",
    .init = lm_init,     .fini = lm_fini,       .on_request = lm_on_request,
    .on_log = lm_on_log, .on_done = lm_on_done,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &limits_plugin;
}
