/*
 * Default routing by model name: matching a model against providers'
 * patterns, the route's plan of targets, and the answer for a model no
 * provider serves.
 */
#include "request/request-int.h"

#include <limits.h>

#include "pipeline/generation.h"
#include "routing/balancer.h"

/* Applies a provider's model_map (exact, or glob with '*' carried). */
static mf_str_t
map_model(mf_req_t *r, mf_provider_conf_t *pc, mf_str_t model)
{
    size_t i;

    for (i = 0; i < pc->nmap; i++) {
        const char *from = pc->model_map[i].from, *to = pc->model_map[i].to;
        size_t fl = strlen(from);

        if (mf_str_eq_cstr(model, from)) {
            return mf_str_from(to);
        }
        if (fl > 0 && from[fl - 1] == '*' &&
            strchr(from, '*') == from + fl - 1 && model.len >= fl - 1 &&
            memcmp(model.data, from, fl - 1) == 0) {
            const char *star = strchr(to, '*');
            mf_buf_t b = {0};
            mf_str_t outs;

            if (star == NULL) {
                return mf_str_from(to);
            }
            mf_buf_append(&b, to, (size_t)(star - to));
            mf_buf_append(&b, model.data + fl - 1, model.len - (fl - 1));
            mf_buf_append(&b, star + 1, strlen(star + 1));
            outs.data = b.data;
            outs.len = b.len;
            outs = mf_pool_str(r->pool, outs);
            mf_buf_free(&b);
            return outs;
        }
    }
    return model;
}

/* The rank of an exact name: above any glob's. */
#define MF_MATCH_EXACT INT_MAX

/* How well one pattern of `models` or `model_map` matches model:
 * MF_MATCH_EXACT for the same name, the length of its literal prefix (the
 * bytes before the first '*' or '?') for a matching glob, -1 for none. */
static int
pattern_rank(const char *pat, mf_str_t model)
{
    size_t lit = strcspn(pat, "*?");

    if (pat[lit] == '\0') {
        return mf_str_eq_cstr(model, pat) ? MF_MATCH_EXACT : -1;
    }
    return mf_glob_match(pat, model) ? (int)(lit < 65535 ? lit : 65535) : -1;
}

/* How well a provider serves model: its best pattern's rank, -1 when it
 * does not serve it. Across providers the highest rank wins (an exact
 * name anywhere beats every glob; among globs the longest literal
 * prefix); docs/ROUTING.md. */
static int
match_rank(const mf_provider_conf_t *pc, mf_str_t model)
{
    int best = -1, rank;
    size_t i;

    for (i = 0; i < pc->nmodels; i++) {
        rank = pattern_rank(pc->models[i], model);
        best = rank > best ? rank : best;
    }
    for (i = 0; i < pc->nmap; i++) {
        rank = pattern_rank(pc->model_map[i].from, model);
        best = rank > best ? rank : best;
    }
    return best;
}

/* The best rank any configured provider, enabled or not, has for model. */
static int
best_rank(const mf_config_t *c, mf_str_t model)
{
    int best = -1, rank;
    size_t i;

    for (i = 0; i < c->nproviders; i++) {
        rank = match_rank(&c->providers[i], model);
        best = rank > best ? rank : best;
    }
    return best;
}

/* A model name a stage gives (set_model, add_target, a body it rewrote)
 * is checked as a client's is at intake: one with a control character
 * would reach upstream URLs, headers and logs. 1 (and a log line) when it
 * is refused. */
static int
model_refused(mf_req_t *r, mf_str_t model, const char *how)
{
    if (!mf_str_has_control(model)) {
        return 0;
    }
    mf_log_warn("request %.*s: %s refused: the model name holds a control "
                "character (such as a line break)",
                (int)r->id.len, r->id.data, how);
    return 1;
}

int
mf_req_add_target(mf_req_t *r, mf_prov_t *p, mf_str_t model, unsigned weight)
{
    if (model_refused(r, model, "a target")) {
        return MF_ERR;
    }
    if (r->ntargets == r->targets_cap) {
        size_t cap = r->targets_cap ? r->targets_cap * 2 : 4;
        mf_rtarget_t *t = mf_pool_alloc(r->pool, cap * sizeof(*t));

        if (t == NULL) {
            return MF_ERR;
        }
        if (r->ntargets) {
            memcpy(t, r->targets, r->ntargets * sizeof(*t));
        }
        r->targets = t;
        r->targets_cap = cap;
    }
    r->targets[r->ntargets].prov = p;
    r->targets[r->ntargets].model = mf_pool_str(r->pool, model);
    r->targets[r->ntargets].weight = weight ? weight : 1;
    r->targets[r->ntargets].tgt = NULL;
    r->ntargets++;
    return MF_OK;
}

/* A route's target, in the order the balancer plans. */
static void
plan_add(void *arg, mf_prov_t *p, mf_str_t model, unsigned weight,
         mf_tgt_t *tgt)
{
    mf_req_t *r = arg;

    if (mf_req_add_target(r, p, model, weight) == MF_OK) {
        r->targets[r->ntargets - 1].tgt = tgt;
    }
}

/* Default targets: the route of the model, else the enabled providers
 * matching it best. */
void
mf_req_route_default(mf_req_t *r)
{
    mf_gen_t *g = r->gen;
    const mf_route_conf_t *rt = mf_balancer_route(g, r->model);
    const mf_config_t *c;
    size_t i;
    int best, *ranks;

    r->ntargets = 0;
    r->route = NULL;
    if (r->call_provider.len > 0) {
        /* a stage's model call pinned to one provider: it, if it serves
         * the model, else nothing (no route, no fallback) */
        for (i = 0; i < g->nproviders; i++) {
            mf_prov_t *p = &g->providers[i];

            if (mf_str_eq_cstr(r->call_provider, p->conf->name) &&
                match_rank(p->conf, r->model) >= 0) {
                mf_req_add_target(r, p, map_model(r, p->conf, r->model), 1);
            }
        }
        return;
    }
    if (rt != NULL) {
        mf_plan_t pl = {.gen = r->gen,
                        .headers = &r->req_headers,
                        .consumer = r->consumer,
                        .group = r->consumer_group,
                        .model = r->model,
                        .add = plan_add,
                        .arg = r};

        r->route = rt;
        mf_balancer_plan(&pl, rt);
        return;
    }
    /* no route: the providers that match the model best, in config
     * order; none when the best match is a disabled provider's. Each
     * configured provider is ranked once (an enabled provider's conf is
     * an element of config->providers). */
    c = g->config;
    ranks = mf_pool_alloc(r->pool, (c->nproviders + 1) * sizeof(*ranks));
    best = -1;
    for (i = 0; i < c->nproviders; i++) {
        ranks[i] = match_rank(&c->providers[i], r->model);
        best = ranks[i] > best ? ranks[i] : best;
    }
    for (i = 0; best >= 0 && i < g->nproviders; i++) {
        mf_prov_t *p = &g->providers[i];

        if (ranks[p->conf - c->providers] == best) {
            mf_req_add_target(r, p, map_model(r, p->conf, r->model), 1);
        }
    }
}

int
mf_req_set_model(mf_req_t *r, mf_str_t model)
{
    if (model_refused(r, model, "a stage's set_model")) {
        return MF_ERR; /* the model and targets stay as they were */
    }
    r->model = mf_pool_str(r->pool, model);
    mf_req_route_default(r);
    return r->ntargets > 0 ? MF_OK : MF_ERR;
}

/* At most MF_MODEL_QUOTE bytes of a client's model are quoted back. */
#define MF_MODEL_QUOTE 64

/* 404 for a model no provider serves; 503 when the provider matching it
 * best is disabled for lack of a key. The client is told a bounded prefix
 * of the name and the models served, or the disabled provider's name;
 * hints meant for the operator (the config file) go to the log. */
void
mf_req_respond_unknown_model(mf_req_t *r)
{
    mf_gen_t *g = r->gen;
    mf_config_t *c = g->config;
    mf_buf_t b = {0};
    size_t i, j, listed = 0, quote = r->model.len;
    int best = best_rank(c, r->model);

    if (quote > MF_MODEL_QUOTE) {
        quote = MF_MODEL_QUOTE;
        while (quote > 0 && (r->model.data[quote] & 0xc0) == 0x80) {
            quote--; /* not inside a character */
        }
    }
    mf_buf_printf(&b,
                  "The model '%.*s%s' does not exist or is not served by "
                  "this gateway.",
                  (int)quote, r->model.data, quote < r->model.len ? "..." : "");
    for (i = 0; best >= 0 && i < c->nproviders; i++) {
        const mf_provider_conf_t *pc = &c->providers[i];

        if (pc->disabled && match_rank(pc, r->model) == best) {
            mf_log_warn("request %.*s: model '%.*s%s' is served by "
                        "provider '%s', disabled because its keys are "
                        "empty: set its key variable in %s and reload",
                        (int)r->id.len, r->id.data, (int)quote, r->model.data,
                        quote < r->model.len ? "..." : "", pc->name, c->path);
            mf_buf_reset(&b);
            mf_buf_printf(&b,
                          "The model '%.*s%s' is served by provider '%s', "
                          "which is disabled because no API key is "
                          "configured for it. Ask the gateway's operator to "
                          "set its key.",
                          (int)quote, r->model.data,
                          quote < r->model.len ? "..." : "", pc->name);
            mf_buf_append(&b, "", 1);
            mf_req_respond_error(r, 503, "upstream_error", "provider_disabled",
                                 b.data);
            mf_buf_free(&b);
            return;
        }
    }
    /* the names GET /v1/models lists; the patterns are the operator's */
    mf_buf_printf(&b, " Served:");
    for (i = 0; i < g->nproviders && listed < 40; i++) {
        mf_provider_conf_t *pc = g->providers[i].conf;

        for (j = 0; j < pc->nmodels && listed < 40; j++) {
            if (strpbrk(pc->models[j], "*?") == NULL) {
                mf_buf_printf(&b, "%s %s", listed ? "," : "", pc->models[j]);
                listed++;
            }
        }
    }
    if (listed == 0) {
        mf_buf_printf(&b, " no model by name (GET /v1/models)");
    }
    mf_buf_printf(&b, ". Use one of these, or ask the gateway's operator to "
                      "serve the model.");
    if (g->nproviders == 0) {
        mf_log_warn("request %.*s: model '%.*s%s' not served: no provider is "
                    "enabled in %s",
                    (int)r->id.len, r->id.data, (int)quote, r->model.data,
                    quote < r->model.len ? "..." : "", c->path);
    }
    mf_buf_append(&b, "", 1);
    mf_req_respond_error(r, 404, "invalid_request_error", "model_not_found",
                         b.data ? b.data : "The model is not served.");
    mf_buf_free(&b);
}
