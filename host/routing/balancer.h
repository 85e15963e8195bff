/*
 * Routes and targets: picks the order in which a request tries its
 * targets (canary rules, then a balancing strategy over the healthy
 * targets, then the fallback chain) and keeps each target's health: a
 * circuit breaker (opens after breaker.failures consecutive failures,
 * half-opens after breaker.cooldown to let one request test it), requests
 * in flight and a moving average of time to first token. Shared by all
 * workers, for the life of the process.
 */
#ifndef MF_BALANCER_H
#define MF_BALANCER_H

#include "http/http.h"
#include "pipeline/generation-t.h"

typedef struct mf_tgt_s mf_tgt_t; /* a target's health */

/* What a plan reads (the request's generation, headers, consumer and
 * model) and where it puts the targets, in the order to try. */
typedef struct mf_plan_s {
    mf_gen_t *gen;
    const mf_hlist_t *headers;
    mf_str_t consumer;
    mf_str_t group; /* the consumer's group, empty when none */
    mf_str_t model;
    void (*add)(void *arg, mf_prov_t *p, mf_str_t model, unsigned weight,
                mf_tgt_t *tgt);
    void *arg;
} mf_plan_t;

/* The route serving `model` (exact names first, then globs), or NULL. */
const mf_route_conf_t *mf_balancer_route(mf_gen_t *g, mf_str_t model);
/* Gives the targets of route rt to pl->add in the order to try. */
void mf_balancer_plan(const mf_plan_t *pl, const mf_route_conf_t *rt);
/* The health of a provider's model (made on first use). */
mf_tgt_t *mf_balancer_target(const char *provider, mf_str_t model);
/* Whether the breaker lets a request through now (a half-open breaker
 * lets exactly one through until it reports). */
int mf_balancer_allow(mf_tgt_t *t, const mf_route_conf_t *rt);
void mf_balancer_begin(mf_tgt_t *t);
/* An attempt ended: ok, or a failure that counts for the breaker (5xx,
 * timeout, connect error, cut); ttft_ms < 0 when unknown. */
void mf_balancer_end(mf_tgt_t *t, const mf_route_conf_t *rt, int ok,
                     int failure, double ttft_ms);
/* Every target's health, for the admin socket. */
json_t *mf_balancer_json(void);
void mf_balancer_free(void);

#endif
