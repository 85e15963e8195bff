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
 * worker (docs/DECISIONS.md says what a kill -9 can lose).
 */
#include <manifold/plugin.h>

#include <math.h>
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
    int64_t prompt, completion, cached, reasoning, cost;
    int estimated, unpriced, status;
} op_t;

/* The counters, shared by the instances of one store across reloads. */
#define SHARED_MAGIC "mf-limits-shared-1"
typedef struct {
    char magic[24];
    pthread_mutex_t lock;
    int refs;
    gov_map_t *tats;    /* "scope|win" -> int64_t */
    gov_map_t *leases;  /* scope -> gov_leases_t */
    gov_map_t *budgets; /* "scope|usd" / "scope|tokens" -> budget_t */
    uint64_t next_lease;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    op_t *qhead, *qtail;
    size_t qlen;
    int busy;      /* a writer holds ops it took and has not written yet */
    char key[600]; /* its name in the host's shared dict */
} shared_t;

typedef struct {
    shared_t *sh;
    char *db_path; /* NULL: no store */
    sqlite3 *rdb;  /* reads for admin commands (main thread) */
    pthread_t writer;
    int writer_up;
    int stop;
    int64_t default_max_tokens;
    int64_t lease_ttl_us;
    int refuse_unpriced;
    lim_t key, global;
    json_t *models; /* model glob -> limits json */
    json_t *groups; /* name -> entry */
    json_t *prices; /* model or glob -> {input, output, cache_read, ...} */
} lm_t;

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
 * budget.micro_usd, ...), as key-auth sets them. */
static void
lim_from_attrs(lim_t *l, const mf_consumer_t *c)
{
    json_t *limits = json_object(), *budget = json_object();
    size_t i;

    for (i = 0; i < c->nattrs; i++) {
        mf_str_t n = c->attrs[2 * i], v = c->attrs[2 * i + 1];
        char name[64], val[64];
        json_t *into;

        if (n.len >= sizeof(name) || v.len >= sizeof(val)) {
            continue;
        }
        memcpy(name, n.data, n.len);
        name[n.len] = '\0';
        memcpy(val, v.data, v.len);
        val[v.len] = '\0';
        if (strncmp(name, "limits.", 7) == 0) {
            json_object_set_new(limits, name + 7,
                                json_integer(strtoll(val, NULL, 10)));
        } else if (strncmp(name, "budget.", 7) == 0) {
            into = budget;
            if (strcmp(name + 7, "period") == 0 ||
                strcmp(name + 7, "tz") == 0) {
                json_object_set_new(into, name + 7, json_string(val));
            } else {
                json_object_set_new(into, name + 7,
                                    json_integer(strtoll(val, NULL, 10)));
            }
        }
    }
    lim_from_json(l, limits, json_object_size(budget) ? budget : NULL);
    json_decref(limits);
    json_decref(budget);
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

/* OpenAI's reset format: "1s", "6m0s", "250ms". */
static void
fmt_reset(char *out, size_t cap, int64_t us)
{
    int64_t ms = (us + 999) / 1000;

    if (ms < 1000) {
        snprintf(out, cap, "%lldms", (long long)ms);
    } else if (ms < 60000) {
        snprintf(out, cap, "%.3gs", (double)ms / 1000);
    } else {
        snprintf(out, cap, "%lldm%llds", (long long)(ms / 60000),
                 (long long)((ms % 60000 + 999) / 1000));
    }
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

static int64_t *
tat_of(shared_t *sh, const char *scope, int w)
{
    char k[200];
    int64_t *t;
    int n = snprintf(k, sizeof(k), "%s|%s", scope, win_names[w]);

    t = gov_map_get(sh->tats, (mf_str_t){k, (size_t)n});
    if (t == NULL && (t = calloc(1, sizeof(*t))) != NULL) {
        gov_map_put(sh->tats, (mf_str_t){k, (size_t)n}, t);
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
    int n = snprintf(k, sizeof(k), "%s|%s", scope, usd ? "usd" : "tokens");
    budget_t *b = gov_map_get(sh->budgets, (mf_str_t){k, (size_t)n});

    if (b == NULL && (b = calloc(1, sizeof(*b))) != NULL) {
        gov_map_put(sh->budgets, (mf_str_t){k, (size_t)n}, b);
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

static void
enqueue(shared_t *sh, op_t *op)
{
    pthread_mutex_lock(&sh->qlock);
    if (sh->qtail) {
        sh->qtail->next = op;
    } else {
        sh->qhead = op;
    }
    sh->qtail = op;
    sh->qlen++;
    pthread_cond_signal(&sh->qcond);
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
    snprintf(op->scope, sizeof(op->scope), "%s|%s", scope,
             usd ? "usd" : "tokens");
    op->period_start = start;
    op->amount = d;
    enqueue(lm->sh, op);
}

static const json_t *
price_of(lm_t *lm, mf_str_t model, price_t *p)
{
    return price_find(lm->prices, model, p);
}

/* The scopes of r and their limits, in ctx. */
static void
scopes_of(lm_t *lm, mf_req_t *r, rctx_t *x, mf_str_t model)
{
    mf_consumer_t c = {.size = sizeof(c)};
    const char *k;
    json_t *v;
    char m[256];

    x->nscopes = 0;
    if (api->get_consumer(r, &c) == MF_OK) {
        if (c.key_id.len > 0 && lim_any(&lm->key)) {
            snprintf(x->scope[x->nscopes], 160, "key:%.*s", (int)c.key_id.len,
                     c.key_id.data);
            x->lim[x->nscopes++] = lm->key;
        }
        lim_from_attrs(&x->lim[x->nscopes], &c);
        if (lim_any(&x->lim[x->nscopes])) {
            snprintf(x->scope[x->nscopes++], 160, "consumer:%.*s",
                     (int)(c.name.len > 140 ? 140 : c.name.len), c.name.data);
        }
        if (c.group.len > 0 && c.group.len < 128) {
            memcpy(m, c.group.data, c.group.len);
            m[c.group.len] = '\0';
            v = json_object_get(lm->groups, m);
            if (v != NULL) {
                lim_from_json(&x->lim[x->nscopes], json_object_get(v, "limits"),
                              json_object_get(v, "budget"));
                if (lim_any(&x->lim[x->nscopes])) {
                    snprintf(x->scope[x->nscopes++], 160, "group:%.140s", m);
                }
            }
        }
    }
    json_object_foreach(lm->models, k, v)
    {
        json_t *one = json_array();

        json_array_append_new(one, json_string(k));
        if (gov_models_allowed(one, model)) {
            json_decref(one);
            lim_from_json(&x->lim[x->nscopes], v, json_object_get(v, "budget"));
            snprintf(x->scope[x->nscopes++], 160, "model:%s", k);
            break;
        }
        json_decref(one);
    }
    if (lim_any(&lm->global)) {
        snprintf(x->scope[x->nscopes], 160, "global");
        x->lim[x->nscopes++] = lm->global;
    }
}

/* Tokens the request may use: its prompt (bytes / 4) and max_tokens. */
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
    if ((api->get_body_field(r, MF_STR("max_completion_tokens"), &v) == MF_OK ||
         api->get_body_field(r, MF_STR("max_tokens"), &v) == MF_OK) &&
        v.len > 0 && v.len < 12 && v.data[0] >= '0' && v.data[0] <= '9') {
        out = strtoll(v.data, NULL, 10);
    }
    return prompt + out;
}

static mf_action_t
lm_on_request(mf_req_t *r, void *state, void **ctx)
{
    lm_t *lm = state;
    shared_t *sh = lm->sh;
    rctx_t *x = api->palloc(r, sizeof(*x));
    mf_str_t model = api->get_model(r);
    int64_t now = now_us(), now_s = now / 1000000, tats[MAX_SCOPES][NWIN];
    int64_t retry = 0, best_req = INT64_MAX, best_tok = INT64_MAX;
    int64_t req_lim = 0, tok_lim = 0, req_reset = 0, tok_reset = 0;
    const char *why = NULL, *which = NULL;
    int s, w, quota = 0, spent = 0;
    char msg[300], reset[32];

    mf_req_info_t info = {.size = sizeof(info)};

    if (x == NULL) {
        return MF_FAIL;
    }
    memset(x, 0, sizeof(*x));
    api->get_info(r, &info);
    if (info.endpoint == MF_ENDPOINT_LOCAL) {
        return MF_CONTINUE; /* answered by the gateway: nothing to meter */
    }
    scopes_of(lm, r, x, model);
    if (x->nscopes == 0) {
        return MF_CONTINUE;
    }
    x->est_tokens = estimate(lm, r, &x->est_prompt);
    x->priced = price_of(lm, model, &x->price) != NULL;
    x->est_cost = x->priced ? price_cost(&x->price, x->est_prompt, 0, 0,
                                         x->est_tokens - x->est_prompt, 0)
                            : 0;
    pthread_mutex_lock(&sh->lock);
    for (s = 0; s < x->nscopes; s++) {
        const lim_t *l = &x->lim[s];

        for (w = 0; w < NWIN; w++) {
            int64_t *tat, nt, ry, rem, rst, cost = w < 3 ? 1 : x->est_tokens;

            tats[s][w] = 0;
            if (l->win[w] <= 0 || (tat = tat_of(sh, x->scope[s], w)) == NULL) {
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
            if (w < 3 && rem < best_req) {
                best_req = rem;
                req_lim = l->win[w];
                req_reset = rst;
            } else if (w >= 3 && rem < best_tok) {
                best_tok = rem;
                tok_lim = l->win[w];
                tok_reset = rst;
            }
        }
        if (l->concurrency > 0) {
            gov_leases_t *ls = leases_of(sh, x->scope[s]);

            if (ls != NULL &&
                (int64_t)gov_leases_live(ls, now) >= l->concurrency &&
                why == NULL) {
                why = "concurrency";
                which = x->scope[s];
                retry = 1000000;
            }
        }
        if (l->has_budget) {
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
        return MF_RESPOND;
    }
    if (why != NULL) {
        pthread_mutex_unlock(&sh->lock);
        snprintf(msg, sizeof(msg),
                 "%s limit of %s reached; retry after %lld ms", why, which,
                 (long long)((retry + 999) / 1000));
        refuse_rate(r, retry,
                    strcmp(why, "concurrency") == 0
                        ? "concurrency_limit_exceeded"
                        : "rate_limit_exceeded",
                    msg);
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
        if (l->concurrency > 0) {
            gov_leases_t *ls = leases_of(sh, x->scope[s]);
            int64_t ry;

            x->lease[s] = ++sh->next_lease;
            if (ls == NULL ||
                !gov_lease_take(ls, now, lm->lease_ttl_us, l->concurrency,
                                x->lease[s], &ry)) {
                x->lease[s] = 0;
            }
        }
        if (l->has_budget) {
            budget_t *b = budget_now(sh, x->scope[s], l, now_s);

            if (b != NULL) {
                b->reserved += l->budget_usd ? x->est_cost : x->est_tokens;
                x->period_start[s] = b->period_start;
            }
        }
    }
    pthread_mutex_unlock(&sh->lock);
    *ctx = x;
    if (req_lim > 0) {
        set_resp(r, "x-ratelimit-limit-requests", "%lld", (long long)req_lim);
        set_resp(r, "x-ratelimit-remaining-requests", "%lld",
                 (long long)best_req);
        fmt_reset(reset, sizeof(reset), req_reset);
        set_resp(r, "x-ratelimit-reset-requests", "%s", reset);
    }
    if (tok_lim > 0) {
        set_resp(r, "x-ratelimit-limit-tokens", "%lld", (long long)tok_lim);
        set_resp(r, "x-ratelimit-remaining-tokens", "%lld",
                 (long long)best_tok);
        fmt_reset(reset, sizeof(reset), tok_reset);
        set_resp(r, "x-ratelimit-reset-tokens", "%s", reset);
    }
    return MF_CONTINUE;
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

    if (x == NULL || x->settled) {
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
        i.attempts > 0 &&
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
    pthread_mutex_lock(&sh->lock);
    for (s = 0; s < x->nscopes; s++) {
        const lim_t *l = &x->lim[s];
        int w;

        for (w = 3; w < NWIN; w++) {
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
        if (l->has_budget) {
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
            }
        }
    }
    pthread_mutex_unlock(&sh->lock);
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
    op->estimated = billable && !reported;
    op->unpriced = billable && !x->priced;
    op->status = i.status;
    enqueue(sh, op);
}

/* The writer thread: applies queued operations in transactions. */

static void
write_op(sqlite3 *db, const op_t *op)
{
    sqlite3_stmt *st = NULL;
    const char *sql =
        op->kind == 2
            ? "INSERT INTO ledger(ts, consumer, key_id, model, provider, "
              "prompt, completion, cached, reasoning, cost, estimated, "
              "unpriced, status) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)"
        : op->kind == 0
            ? "INSERT INTO spend(scope, period_start, used, topup) "
              "VALUES(?, ?, ?, 0) ON CONFLICT(scope, period_start) DO UPDATE "
              "SET used = used + excluded.used"
            : "INSERT INTO spend(scope, period_start, used, topup) "
              "VALUES(?, ?, 0, ?) ON CONFLICT(scope, period_start) DO UPDATE "
              "SET topup = topup + excluded.topup";

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return;
    }
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
    } else {
        sqlite3_bind_text(st, 1, op->scope, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, op->period_start);
        sqlite3_bind_int64(st, 3, op->amount);
    }
    sqlite3_step(st);
    sqlite3_finalize(st);
}

static void *
writer_main(void *arg)
{
    lm_t *lm = arg;
    shared_t *sh = lm->sh;
    sqlite3 *db = NULL;

    if (sqlite3_open(lm->db_path, &db) != SQLITE_OK) {
        api->log(MF_LOG_ERROR, "limits: writer cannot open %s", lm->db_path);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    for (;;) {
        op_t *ops, *op;
        struct timespec until;

        pthread_mutex_lock(&sh->qlock);
        while (sh->qhead == NULL && !lm->stop) {
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&sh->qcond, &sh->qlock, &until);
        }
        ops = sh->qhead;
        sh->qhead = sh->qtail = NULL;
        sh->qlen = 0;
        sh->busy += ops != NULL;
        pthread_mutex_unlock(&sh->qlock);
        if (ops == NULL && lm->stop) {
            break;
        }
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        for (op = ops; op != NULL; op = op->next) {
            write_op(db, op);
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        while (ops != NULL) {
            op = ops->next;
            free(ops);
            ops = op;
        }
        pthread_mutex_lock(&sh->qlock);
        sh->busy--;
        pthread_cond_broadcast(&sh->qcond);
        pthread_mutex_unlock(&sh->qlock);
    }
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
    pthread_mutex_lock(&lm->sh->lock);
    b = budget_of(lm->sh, scope, usd);
    if (b != NULL && b->period_start == 0) {
        gov_period_bounds(p, off, (int64_t)time(NULL), &start, &end);
        b->period_start = start;
    }
    if (b != NULL) {
        b->topup += amount;
        queue_spend(lm, scope, usd, b->period_start, amount, 1);
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

    if (name == NULL) {
        json_decref(j);
        *out = err_json("budget show NAME [--group]");
        return 400;
    }
    snprintf(scope, sizeof(scope), "%s:%s", group ? "group" : "consumer", name);
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
    *out = json_pack("{s:s,s:o}", "scope", scope, "budgets", j);
    return 200;
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
    int off = 0;
    sqlite3_stmt *st = NULL;
    json_t *models = json_array();
    char *text = NULL;
    size_t tlen = 0;
    FILE *f;
    struct {
        int64_t n, prompt, completion, cached, reasoning, cost, est, unpriced;
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
    if (lm->rdb == NULL) {
        json_decref(models);
        *out = err_json("the limits stage keeps no ledger (db: none)");
        return 404;
    }
    flush(lm);
    gov_period_bounds(p, off, (int64_t)time(NULL), &start, &end);
    if (sqlite3_prepare_v2(
            lm->rdb,
            "SELECT model, count(*), sum(prompt), sum(completion), "
            "sum(cached), sum(reasoning), sum(cost), sum(estimated), "
            "sum(unpriced) FROM ledger WHERE ts >= ? AND ts < ? AND "
            "(?3 IS NULL OR consumer = ?3) GROUP BY model ORDER BY model",
            -1, &st, NULL) != SQLITE_OK) {
        json_decref(models);
        *out = err_json("ledger: %s", sqlite3_errmsg(lm->rdb));
        return 500;
    }
    sqlite3_bind_int64(st, 1, start);
    sqlite3_bind_int64(st, 2, end);
    if (who != NULL) {
        sqlite3_bind_text(st, 3, who, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, 3);
    }
    f = open_memstream(&text, &tlen);
    if (f != NULL) {
        fprintf(f, "%-24s %8s %10s %10s %10s %12s  %s\n", "model", "requests",
                "prompt", "completion", "cached", "cost_usd", "flags");
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(st, 0);
        int64_t v[8];
        int k;

        for (k = 0; k < 8; k++) {
            v[k] = sqlite3_column_int64(st, k + 1);
        }
        tot.n += v[0];
        tot.prompt += v[1];
        tot.completion += v[2];
        tot.cached += v[3];
        tot.reasoning += v[4];
        tot.cost += v[5];
        tot.est += v[6];
        tot.unpriced += v[7];
        json_array_append_new(
            models,
            json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "model",
                      m ? m : "", "requests", (json_int_t)v[0], "prompt_tokens",
                      (json_int_t)v[1], "completion_tokens", (json_int_t)v[2],
                      "cached_tokens", (json_int_t)v[3], "reasoning_tokens",
                      (json_int_t)v[4], "cost_micro_usd", (json_int_t)v[5],
                      "estimated", (json_int_t)v[6], "unpriced",
                      (json_int_t)v[7]));
        if (f != NULL) {
            fprintf(f, "%-24s %8lld %10lld %10lld %10lld %12.6f  %s%s\n",
                    m ? m : "", (long long)v[0], (long long)v[1],
                    (long long)v[2], (long long)v[3], (double)v[5] / 1e6,
                    v[7] ? "UNPRICED " : "", v[6] ? "estimated" : "");
        }
    }
    sqlite3_finalize(st);
    if (f != NULL) {
        fprintf(f, "%-24s %8lld %10lld %10lld %10lld %12.6f\n", "total",
                (long long)tot.n, (long long)tot.prompt,
                (long long)tot.completion, (long long)tot.cached,
                (double)tot.cost / 1e6);
        fclose(f);
    }
    *out = json_pack(
        "{s:s?,s:s,s:I,s:I,s:o,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:s}",
        "consumer", who, "period", gov_period_name(p), "from",
        (json_int_t)start, "to", (json_int_t)end, "models", models, "total",
        "requests", (json_int_t)tot.n, "prompt_tokens", (json_int_t)tot.prompt,
        "completion_tokens", (json_int_t)tot.completion, "cached_tokens",
        (json_int_t)tot.cached, "reasoning_tokens", (json_int_t)tot.reasoning,
        "cost_micro_usd", (json_int_t)tot.cost, "estimated",
        (json_int_t)tot.est, "unpriced", (json_int_t)tot.unpriced, "text",
        text ? text : "");
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
    pthread_mutex_destroy(&sh->lock);
    pthread_mutex_destroy(&sh->qlock);
    pthread_cond_destroy(&sh->qcond);
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
        "INTEGER, unpriced INTEGER, status INTEGER);"
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
        pthread_cond_broadcast(&lm->sh->qcond);
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
    json_decref(lm->groups);
    json_decref(lm->prices);
    free(lm->db_path);
    free(lm);
}

static int
lm_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    static const char *const known[] = {
        "db",     "default_max_tokens", "key",      "models",
        "global", "lease_ttl",          "unpriced", NULL};
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
                     "unpriced)",
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
    lm->default_max_tokens =
        json_integer_value(json_object_get(conf, "default_max_tokens"));
    if (lm->default_max_tokens <= 0) {
        lm->default_max_tokens = 1024;
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
    lim_from_json(&lm->key, json_object_get(conf, "key"), NULL);
    lim_from_json(&lm->global, json_object_get(conf, "global"), NULL);
    lm->models = json_object_get(conf, "models");
    lm->models =
        json_is_object(lm->models) ? json_incref(lm->models) : json_object();
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
    MF_PLUGIN_ABI,         .name = "limits", .version = "1.0.0",
    .init = lm_init,       .fini = lm_fini,  .on_request = lm_on_request,
    .on_done = lm_on_done,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &limits_plugin;
}
