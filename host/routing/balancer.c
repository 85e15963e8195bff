/*
 * Balancer: route lookup, the order of targets for a request, and target
 * health (breakers, in flight, latency), process-wide under one mutex.
 */
#include "routing/balancer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "pipeline/generation.h"

typedef enum { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN } brk_t;

static const char *const breaker_names[] = {"closed", "open", "half_open"};

struct mf_tgt_s {
    char provider[128];
    char model[256];
    brk_t breaker;
    int fails;         /* consecutive */
    double open_until; /* monotonic */
    int trial;         /* half-open: a test request is out */
    int in_flight;
    uint64_t requests;
    uint64_t failures;
    double ewma_ttft; /* ms; 0 = no sample yet */
    int64_t rr;       /* smooth weighted round robin: current weight */
    double since;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static mf_tgt_t **all;
static size_t nall;
static atomic_uint_fast64_t seq; /* round robin and random */

const mf_route_conf_t *
mf_balancer_route(mf_gen_t *g, mf_str_t model)
{
    mf_config_t *c = g->config;
    size_t i;

    for (i = 0; i < c->nroutes; i++) {
        if (mf_str_eq_cstr(model, c->routes[i].model)) {
            return &c->routes[i];
        }
    }
    for (i = 0; i < c->nroutes; i++) {
        if (strpbrk(c->routes[i].model, "*?") != NULL &&
            mf_glob_match(c->routes[i].model, model)) {
            return &c->routes[i];
        }
    }
    return NULL;
}

mf_tgt_t *
mf_balancer_target(const char *provider, mf_str_t model)
{
    mf_tgt_t *t;
    size_t i;

    pthread_mutex_lock(&lock);
    for (i = 0; i < nall; i++) {
        if (strcmp(all[i]->provider, provider) == 0 &&
            mf_str_eq_cstr(model, all[i]->model)) {
            pthread_mutex_unlock(&lock);
            return all[i];
        }
    }
    t = mf_xcalloc(1, sizeof(*t));
    snprintf(t->provider, sizeof(t->provider), "%s", provider);
    snprintf(t->model, sizeof(t->model), "%.*s", (int)model.len, model.data);
    t->since = mf_wall_time();
    all = mf_xrealloc(all, (nall + 1) * sizeof(*all));
    all[nall++] = t;
    pthread_mutex_unlock(&lock);
    return t;
}

/* Under the lock: whether t takes a request now (no side effect). */
static int
open_now(mf_tgt_t *t, double now)
{
    return (t->breaker == BREAKER_OPEN && now < t->open_until) ||
           (t->breaker == BREAKER_HALF_OPEN && t->trial) ||
           (t->breaker == BREAKER_OPEN && now >= t->open_until && t->trial);
}

int
mf_balancer_allow(mf_tgt_t *t, const mf_route_conf_t *rt)
{
    double now = mf_now_ms();
    int ok = 1;

    MF_UNUSED(rt);
    pthread_mutex_lock(&lock);
    if (t->breaker == BREAKER_OPEN && now >= t->open_until) {
        t->breaker = BREAKER_HALF_OPEN;
        t->trial = 0;
        t->since = mf_wall_time();
    }
    if (t->breaker == BREAKER_OPEN ||
        (t->breaker == BREAKER_HALF_OPEN && t->trial)) {
        ok = 0;
    } else if (t->breaker == BREAKER_HALF_OPEN) {
        t->trial = 1; /* this request tests it */
    }
    pthread_mutex_unlock(&lock);
    return ok;
}

void
mf_balancer_begin(mf_tgt_t *t)
{
    pthread_mutex_lock(&lock);
    t->in_flight++;
    t->requests++;
    pthread_mutex_unlock(&lock);
}

void
mf_balancer_end(mf_tgt_t *t, const mf_route_conf_t *rt, int ok, int failure,
                double ttft_ms)
{
    pthread_mutex_lock(&lock);
    t->in_flight--;
    if (ok) {
        if (t->breaker != BREAKER_CLOSED) {
            mf_log_info("target %s/%s: breaker closed", t->provider, t->model);
            t->since = mf_wall_time();
        }
        t->breaker = BREAKER_CLOSED;
        t->fails = 0;
        t->trial = 0;
        if (ttft_ms >= 0) {
            t->ewma_ttft = t->ewma_ttft == 0
                               ? ttft_ms
                               : 0.8 * t->ewma_ttft + 0.2 * ttft_ms;
        }
    } else if (failure) {
        t->failures++;
        t->fails++;
        if (t->breaker == BREAKER_HALF_OPEN ||
            (t->breaker == BREAKER_CLOSED && rt != NULL &&
             t->fails >= rt->breaker_failures)) {
            mf_log_warn("target %s/%s: breaker open for %.0f ms after %d "
                        "failures",
                        t->provider, t->model,
                        rt ? rt->breaker_cooldown_ms : 10000.0, t->fails);
            t->breaker = BREAKER_OPEN;
            t->open_until =
                mf_now_ms() + (rt ? rt->breaker_cooldown_ms : 10000.0);
            t->since = mf_wall_time();
        }
        t->trial = 0;
    } else if (t->breaker == BREAKER_HALF_OPEN) {
        t->trial = 0; /* no verdict (a 4xx): let another test it */
    }
    pthread_mutex_unlock(&lock);
}

/* Planning */

typedef struct {
    const mf_target_conf_t *conf;
    mf_prov_t *prov;
    mf_tgt_t *tgt;
    mf_str_t model;
    double score; /* lower first */
    int used;
} cand_t;

static int
rule_matches(const mf_plan_t *r, const mf_route_rule_t *ru)
{
    mf_str_t v;

    if (ru->header != NULL) {
        if (mf_hlist_get(r->headers, mf_str_from(ru->header), &v) != MF_OK) {
            return 0;
        }
        if (ru->value != NULL && !mf_str_eq_cstr(v, ru->value)) {
            return 0;
        }
    }
    if (ru->consumer != NULL && !mf_str_eq_cstr(r->consumer, ru->consumer)) {
        return 0;
    }
    if (ru->group != NULL && !mf_str_eq_cstr(r->group, ru->group)) {
        /* the consumer record's group; else the header a stage set (a
         * client's x-manifold-* headers never reach here) */
        if (r->group.len > 0 ||
            mf_hlist_get(r->headers, MF_STR("x-manifold-group"), &v) != MF_OK ||
            !mf_str_eq_cstr(v, ru->group)) {
            return 0;
        }
    }
    return 1;
}

static double
rand01(void)
{
    uint64_t x = atomic_fetch_add(&seq, 0x9E3779B97F4A7C15ull);

    x ^= x >> 33; /* splitmix64 */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb93c185a6345ull;
    x ^= x >> 33;
    return (double)(x >> 11) / 9007199254740992.0;
}

static void
add(const mf_plan_t *r, cand_t *c)
{
    if (c->used || c->prov == NULL) {
        return;
    }
    c->used = 1;
    r->add(r->arg, c->prov, c->model, c->conf->weight, c->tgt);
}

/* A candidate a strategy may pick: not yet in the plan, bound, weighted. */
static int
open_candidate(const cand_t *c)
{
    return !c->used && c->prov != NULL && c->conf->weight > 0;
}

/*
 * Balancing strategies, as nginx keeps its upstream balancers behind
 * get/free: each picks the next of the open candidates, under the lock,
 * given their summed weight. A candidate whose breaker is open has score
 * 1 and goes after every healthy one.
 */
typedef cand_t *(*strategy_pick_fn)(cand_t *cs, size_t n, double total);

/* smooth weighted round robin (nginx's) */
static cand_t *
pick_round_robin(cand_t *cs, size_t n, double total)
{
    cand_t *best = NULL;
    size_t i;

    for (i = 0; i < n; i++) {
        cand_t *c = &cs[i];

        if (!open_candidate(c)) {
            continue;
        }
        c->tgt->rr += c->conf->weight;
        if (best == NULL || c->score < best->score ||
            (c->score == best->score && c->tgt->rr > best->tgt->rr)) {
            best = c;
        }
    }
    if (best != NULL) {
        best->tgt->rr -= (int64_t)total;
    }
    return best;
}

/* The candidate with the least of metric, healthy ones first. */
static cand_t *
pick_least(cand_t *cs, size_t n, double (*metric)(const cand_t *))
{
    cand_t *best = NULL;
    double best_m = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        cand_t *c = &cs[i];
        double m;

        if (!open_candidate(c)) {
            continue;
        }
        m = metric(c);
        if (best == NULL || c->score < best->score ||
            (c->score == best->score && m < best_m)) {
            best = c;
            best_m = m;
        }
    }
    return best;
}

static double
inflight_per_weight(const cand_t *c)
{
    return (double)c->tgt->in_flight / c->conf->weight;
}

static double
ttft_average(const cand_t *c)
{
    return c->tgt->ewma_ttft;
}

static cand_t *
pick_least_inflight(cand_t *cs, size_t n, double total)
{
    MF_UNUSED(total);
    return pick_least(cs, n, inflight_per_weight);
}

static cand_t *
pick_lowest_latency(cand_t *cs, size_t n, double total)
{
    MF_UNUSED(total);
    return pick_least(cs, n, ttft_average);
}

/* weighted random among the healthy, then the rest */
static cand_t *
pick_weighted(cand_t *cs, size_t n, double total)
{
    cand_t *best = NULL;
    double x;
    size_t i;

    total = 0;
    for (i = 0; i < n; i++) {
        if (open_candidate(&cs[i]) && cs[i].score == 0) {
            total += cs[i].conf->weight;
        }
    }
    x = rand01() * total;
    for (i = 0; i < n; i++) {
        cand_t *c = &cs[i];

        if (!open_candidate(c) || (total > 0 && c->score != 0)) {
            continue;
        }
        best = c;
        if (total == 0 || x < c->conf->weight) {
            break;
        }
        x -= c->conf->weight;
    }
    return best;
}

/* Indexed by the route's MF_BALANCE_* (config/config.h). */
static const strategy_pick_fn strategies[] = {
    [MF_BALANCE_WEIGHTED] = pick_weighted,
    [MF_BALANCE_ROUND_ROBIN] = pick_round_robin,
    [MF_BALANCE_LEAST_INFLIGHT] = pick_least_inflight,
    [MF_BALANCE_LOWEST_LATENCY] = pick_lowest_latency,
};

/* Picks the next of the weighted candidates by the route's strategy. */
static cand_t *
pick(const mf_route_conf_t *rt, cand_t *cs, size_t n, double now)
{
    strategy_pick_fn fn = pick_weighted;
    cand_t *best;
    double total = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        if (open_candidate(&cs[i])) {
            total += cs[i].conf->weight;
        }
    }
    if (total == 0) {
        return NULL;
    }
    if (rt->strategy >= 0 &&
        (size_t)rt->strategy < sizeof(strategies) / sizeof(strategies[0]) &&
        strategies[rt->strategy] != NULL) {
        fn = strategies[rt->strategy];
    }
    pthread_mutex_lock(&lock);
    /* open breakers go last: a target cooling down is not picked first */
    for (i = 0; i < n; i++) {
        cs[i].score = cs[i].tgt && open_now(cs[i].tgt, now) ? 1 : 0;
    }
    best = fn(cs, n, total);
    pthread_mutex_unlock(&lock);
    return best;
}

static void
fill(const mf_plan_t *r, const mf_target_conf_t *tc, size_t n, cand_t *cs)
{
    size_t i;

    for (i = 0; i < n; i++) {
        cs[i].conf = &tc[i];
        cs[i].prov = mf_gen_find_provider(r->gen, mf_str_from(tc[i].provider));
        cs[i].model = tc[i].model ? mf_str_from(tc[i].model) : r->model;
        cs[i].tgt =
            cs[i].prov ? mf_balancer_target(tc[i].provider, cs[i].model) : NULL;
        cs[i].used = 0;
    }
}

void
mf_balancer_plan(const mf_plan_t *r, const mf_route_conf_t *rt)
{
    cand_t cs[64], fb[64];
    size_t n = rt->ntargets < 64 ? rt->ntargets : 64;
    size_t nf = rt->nfallbacks < 64 ? rt->nfallbacks : 64, i;
    double now = mf_now_ms();
    cand_t *c;

    fill(r, rt->targets, n, cs);
    fill(r, rt->fallbacks, nf, fb);
    for (i = 0; i < rt->nrules; i++) {
        /* cppcheck-suppress knownConditionTrueFalse */
        if (rule_matches(r, &rt->rules[i]) && rt->rules[i].target < n) {
            add(r, &cs[rt->rules[i].target]);
            break;
        }
    }
    while ((c = pick(rt, cs, n, now)) != NULL) {
        add(r, c);
    }
    /* cppcheck-suppress knownConditionTrueFalse */
    for (i = 0; i < nf; i++) {
        add(r, &fb[i]);
    }
}

json_t *
mf_balancer_json(void)
{
    json_t *list = json_array();
    size_t i;

    pthread_mutex_lock(&lock);
    for (i = 0; i < nall; i++) {
        mf_tgt_t *t = all[i];

        json_array_append_new(
            list, json_pack("{s:s,s:s,s:s,s:f,s:i,s:I,s:I,s:i,s:f}", "provider",
                            t->provider, "model", t->model, "breaker",
                            breaker_names[t->breaker], "since", t->since,
                            "in_flight", t->in_flight, "requests",
                            (json_int_t)t->requests, "failures",
                            (json_int_t)t->failures, "consecutive_failures",
                            t->fails, "ttft_ms_avg", t->ewma_ttft));
    }
    pthread_mutex_unlock(&lock);
    return list;
}

void
mf_balancer_free(void)
{
    size_t i;

    for (i = 0; i < nall; i++) {
        free(all[i]);
    }
    free(all);
    all = NULL;
    nall = 0;
}
