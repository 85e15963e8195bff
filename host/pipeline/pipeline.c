/*
 * Pipeline runner: runs one phase's stages in order from the request's
 * stage index through each stage's runtime, with per-stage timing; a
 * stage may continue, pause, answer or fail. Body, log and done phases
 * run every stage and never pause.
 */
#include <time.h>

#include "pipeline/endpoint.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"

const char *const mf_stage_fn_names[MF_STAGE__COUNT] = {
    [MF_STAGE_REQUEST] = "on_request",
    [MF_STAGE_ROUTE] = "on_route",
    [MF_STAGE_UPSTREAM_REQUEST] = "on_upstream_request",
    [MF_STAGE_UPSTREAM_RESPONSE] = "on_upstream_response",
    [MF_STAGE_RESPONSE_HEADERS] = "on_response_headers",
    [MF_STAGE_RESPONSE_BODY] = "on_response_body",
    [MF_STAGE_LOG] = "on_log",
    [MF_STAGE_DONE] = "on_done",
    [MF_STAGE_ENDPOINT] = "an endpoint handler",
};

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static mf_action_t
run_one(mf_req_t *r, size_t i, mf_stage_t stage, mf_str_t data, int last)
{
    mf_pstage_t *s = r->gen->stages[i];
    uint64_t t0 = now_ns();
    mf_action_t act;

    r->cur_stage = stage;
    act = s->rt->call(s, stage, r, &r->ctx[i], data, last);
    atomic_fetch_add(&s->stats.time_ns, now_ns() - t0);
    if (i < 64) {
        r->ran |= (uint64_t)1 << i;
    } else if (stage == MF_STAGE_REQUEST) {
        atomic_fetch_add(&s->stats.requests, 1);
    }
    if (act == MF_FAIL) {
        atomic_fetch_add(&s->stats.errors, 1);
    }
    return act;
}

mf_action_t
mf_pipeline_run(mf_req_t *r, mf_stage_t stage)
{
    mf_gen_t *g = r->gen;

    if (!(g->hooks & MF_HOOK(stage))) {
        r->stage_idx = 0;
        return MF_CONTINUE;
    }
    for (; r->stage_idx < g->nstages; r->stage_idx++) {
        mf_pstage_t *s = g->stages[r->stage_idx];
        mf_action_t act;

        if (!(s->hooks & MF_HOOK(stage)) || !atomic_load(&s->enabled)) {
            continue;
        }
        act = run_one(r, r->stage_idx, stage, MF_STR_NULL, 0);
        if (act == MF_CONTINUE) {
            continue;
        }
        if (act == MF_FAIL) {
            mf_log_error("request %.*s: stage '%s' (%s) failed in %s",
                         (int)r->id.len, r->id.data, s->name, s->file,
                         stage == MF_STAGE_REQUEST ? "on_request"
                         : stage == MF_STAGE_ROUTE ? "on_route"
                                                   : "a stage callback");
        }
        return act;
    }
    r->stage_idx = 0;
    return MF_CONTINUE;
}

mf_action_t
mf_pipeline_serve(mf_req_t *r, mf_stage_t stage)
{
    const mf_epath_t *ep = r->epath;
    mf_pstage_t *s;
    uint64_t t0;
    mf_action_t act;
    size_t i;

    if (r->stage_idx > 0 || ep == NULL || ep->stage == NULL) {
        r->stage_idx = 0; /* resumed: the handler is done */
        return MF_CONTINUE;
    }
    s = ep->stage;
    for (i = 0; i < r->gen->nstages && r->gen->stages[i] != s; i++) {
    }
    if (i == r->gen->nstages || !atomic_load(&s->enabled)) {
        return MF_CONTINUE; /* the end answers 404 */
    }
    r->cur_stage = stage;
    t0 = now_ns();
    act = s->rt->serve(s, ep, r, &r->ctx[i]);
    atomic_fetch_add(&s->stats.time_ns, now_ns() - t0);
    if (i < 64) {
        r->ran |= (uint64_t)1 << i;
    }
    if (act == MF_FAIL) {
        atomic_fetch_add(&s->stats.errors, 1);
        mf_log_error("request %.*s: stage '%s' (%s) failed serving %.*s",
                     (int)r->id.len, r->id.data, s->name, s->file,
                     (int)r->path.len, r->path.data);
    }
    return act;
}

/* Appends one event to those sent before the current one. */
static int
body_before_add(mf_req_t *r, mf_str_t data)
{
    if (r->nins_before == r->ins_cap_before) {
        size_t cap = r->ins_cap_before ? r->ins_cap_before * 2 : 4;
        mf_str_t *v = mf_pool_alloc(r->pool, cap * sizeof(*v));

        if (v == NULL) {
            return MF_ERR;
        }
        if (r->nins_before > 0) {
            memcpy(v, r->ins_before, r->nins_before * sizeof(*v));
        }
        r->ins_before = v;
        r->ins_cap_before = cap;
    }
    r->ins_before[r->nins_before++] = data;
    return MF_OK;
}

/* The body stages from `from` over one event; *data becomes what they
 * made of it. An event a stage inserted ahead goes through the stages
 * after that one (depth bounded by the number of stages) and then into
 * r->ins_before. */
static int
body_from(mf_req_t *r, size_t from, mf_str_t *data, int last)
{
    mf_gen_t *g = r->gen;
    size_t i, k, n;
    mf_str_t *ins;

    for (i = from; i < g->nstages; i++) {
        mf_pstage_t *s = g->stages[i];

        if (!(s->hooks & MF_HOOK(MF_STAGE_RESPONSE_BODY)) ||
            !atomic_load(&s->enabled)) {
            continue;
        }
        r->replaced = 0;
        r->nins_pending = 0;
        r->body_idx = i;
        if (run_one(r, i, MF_STAGE_RESPONSE_BODY, *data, last) == MF_FAIL) {
            /* a body stage may redact: what it did not pass on is
             * never sent (the stages after it do not run either) */
            mf_log_error("request %.*s: stage '%s' (%s) failed in "
                         "on_response_body; the body is withheld",
                         (int)r->id.len, r->id.data, s->name, s->file);
            return MF_ERR;
        }
        if (r->replaced) {
            *data = r->replace;
        }
        if (r->nins_pending == 0) {
            if (r->body_stop) {
                return MF_OK; /* the answer ends here */
            }
            continue;
        }
        /* taken before the stages after this one run (they may insert) */
        ins = r->ins_pending;
        n = r->nins_pending;
        r->ins_pending = NULL;
        r->nins_pending = 0;
        r->ins_cap_pending = 0;
        for (k = 0; k < n; k++) {
            mf_str_t d = ins[k];

            if (body_from(r, i + 1, &d, 0) != MF_OK) {
                return MF_ERR;
            }
            if (r->body_stop) {
                return MF_OK; /* a later stage stopped at this event */
            }
            if (d.len > 0 && body_before_add(r, d) != MF_OK) {
                return MF_ERR;
            }
        }
        if (r->body_stop) {
            return MF_OK;
        }
    }
    return MF_OK;
}

int
mf_pipeline_body(mf_req_t *r, mf_str_t data, int last)
{
    return mf_pipeline_body_from(r, 0, data, last);
}

int
mf_pipeline_body_from(mf_req_t *r, size_t from, mf_str_t data, int last)
{
    mf_str_t orig = data;
    int rc;

    r->nins_before = 0;
    if (!(r->gen->hooks & MF_HOOK(MF_STAGE_RESPONSE_BODY))) {
        return MF_OK;
    }
    r->in_body++;
    rc = body_from(r, from, &data, last);
    r->in_body--;
    if (rc != MF_OK) {
        return MF_ERR;
    }
    /* what the caller reads: the event as the last stage left it */
    r->replaced = data.data != orig.data || data.len != orig.len;
    r->replace = data;
    return MF_OK;
}

void
mf_pipeline_log_done(mf_req_t *r)
{
    mf_gen_t *g = r->gen;
    size_t i;

    if (!r->logged) {
        r->logged = 1;
        for (i = 0; i < g->nstages; i++) {
            mf_pstage_t *s = g->stages[i];

            if ((s->hooks & MF_HOOK(MF_STAGE_LOG)) &&
                atomic_load(&s->enabled)) {
                run_one(r, i, MF_STAGE_LOG, MF_STR_NULL, 0);
            }
        }
    }
    if (!r->done) {
        r->done = 1;
        for (i = 0; i < g->nstages; i++) {
            mf_pstage_t *s = g->stages[i];

            if (i < 64 && (r->ran & ((uint64_t)1 << i))) {
                atomic_fetch_add(&s->stats.requests, 1);
            }
            /* on_done runs even for a stage disabled since: ctx is freed */
            if (s->hooks & MF_HOOK(MF_STAGE_DONE)) {
                run_one(r, i, MF_STAGE_DONE, MF_STR_NULL, 0);
            } else if (s->rt->done != NULL && r->ctx[i] != NULL) {
                s->rt->done(s, r, &r->ctx[i]);
            }
        }
    }
}

/* Async service calls a request waits on */

void
mf_req_async_add(mf_req_t *r, mf_async_t *a)
{
    a->prev = NULL;
    a->next = r->asyncs;
    if (r->asyncs != NULL) {
        r->asyncs->prev = a;
    }
    r->asyncs = a;
}

void
mf_req_async_remove(mf_req_t *r, mf_async_t *a)
{
    if (a->prev != NULL) {
        a->prev->next = a->next;
    } else if (r->asyncs == a) {
        r->asyncs = a->next;
    }
    if (a->next != NULL) {
        a->next->prev = a->prev;
    }
    a->next = a->prev = NULL;
}
