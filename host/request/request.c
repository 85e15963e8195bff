/*
 * The request's lifecycle. A request read by the server runs the phases
 * of DESIGN.md: on_request, default routing by model, on_route, then per
 * attempt on_upstream_request, the provider's build_request and the
 * upstream call; the response passes on_upstream_response and
 * on_response_headers, then its body (whole, or each SSE event) passes
 * on_response_body; on_log and on_done close it. Retries move to the next
 * target only before the first byte reached the client. A path the
 * gateway answers itself (a model list, count_tokens, a stored Response)
 * runs on_request only, then its answer (MF_PHASE_LOCAL). This file runs
 * the phase loop (pause and resume) and finishes and frees the request;
 * one file per step does the rest (request-int.h).
 */
#include "request/request-int.h"

#include <stdio.h>
#include <stdlib.h>

#include "http/server.h"
#include "http/upstream.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"

/* Stops or restarts reading the upstream (stage pause, backpressure). */
void
mf_req_call_pause(mf_req_t *r, int paused)
{
    if (r->att.call == NULL || r->att.call_paused == paused) {
        return;
    }
    r->att.call_paused = paused;
    mf_upcall_pause(r->att.call, paused);
}

/* Acts on a stage result. Returns 1 to go on with the phase's end. */
static int
stage_result(mf_req_t *r, mf_action_t act)
{
    if (r->stage_stream != 0 && act != MF_PAUSE) {
        /* a stage's own stream is the answer, whatever it returned: ended
         * where the stage left it */
        if (r->stage_stream == 1) {
            mf_req_stage_event(r, MF_STR_NULL, 1);
        }
        mf_req_finish(r);
        return 0;
    }
    switch (act) {
    case MF_CONTINUE:
        return 1;
    case MF_PAUSE:
        r->paused = 1;
        return 0;
    case MF_RESPOND:
        if (!r->head_sent) {
            mf_req_respond_error(r, 500, "server_error", NULL,
                                 "a stage said it answered but did not");
        }
        mf_req_finish(r);
        return 0;
    default:
        if (r->phase == MF_PHASE_AUTHORIZE && r->att.prov_err != NULL) {
            mf_req_attempt_error(r, r->att.prov_err, r->att.prov_err->status);
            return 0;
        }
        if (!r->head_sent) {
            mf_req_respond_error(r, 500, "server_error", NULL,
                                 "a gateway stage failed; see the gateway "
                                 "log");
        }
        mf_req_finish(r);
        return 0;
    }
}

void
mf_req_resume(mf_req_t *r, mf_action_t action)
{
    if (!r->paused || r->finished) {
        return;
    }
    if (r->in_step) {
        r->resume_pending = 1;
        r->resume_action = action;
        return;
    }
    r->paused = 0;
    if (action == MF_CONTINUE && r->stage_stream == 0) {
        r->stage_idx++;
        mf_req_step(r);
    } else {
        stage_result(r, action);
    }
}

/* The ends of the phases that do more than move on (see phases[]):
 * each returns 1 when the loop goes on with r->phase, 0 when it stops. */

static int
request_end(mf_req_t *r)
{
    /* on_request named the consumer: a previous_response_id read at
     * intake must be its own before anything goes upstream */
    if (!mf_req_store_owner_ok(r)) {
        mf_req_respond_prev_unknown(r);
        mf_req_finish(r);
        return 0;
    }
    mf_req_route_default(r);
    return 1;
}

/* The first attempt: its target and key, the provider's request; the
 * phase is AUTHORIZE, or ATTEMPT for a provider without authorize. */
static int
route_end(mf_req_t *r)
{
    if (r->ntargets == 0) {
        mf_req_respond_unknown_model(r);
        mf_req_finish(r);
        return 0;
    }
    if (!mf_req_attempt_first(r)) {
        mf_req_respond_no_target(r);
        mf_req_finish(r);
        return 0;
    }
    return mf_req_attempt_prepare(r) == MF_OK;
}

static int
attempt_end(mf_req_t *r)
{
    mf_req_attempt_start(r);
    return 0; /* the upstream's callbacks go on */
}

static int
response_headers_end(mf_req_t *r)
{
    if (r->att.sse_active) {
        /* the client's head goes with the first event */
        mf_req_flush_stream(r);
        mf_req_call_pause(r, 0);
    } else {
        mf_req_complete_nonstream(r);
    }
    return 0;
}

/* A stage's path: the handler is done; an answer it did not give is a
 * 500. */
static int
serve_end(mf_req_t *r)
{
    if (!r->head_sent) {
        mf_req_respond_error(r, 500, "server_error", NULL,
                             "the gateway stage serving this path did not "
                             "answer; see the gateway log");
    }
    mf_req_finish(r);
    return 0;
}

/* One phase of the loop: run runs its stages (stage), then the phase
 * becomes next and end, when set, does the rest. A phase without run
 * (UPSTREAM, BODY, FINISHED) waits for the upstream or the client. */
typedef struct {
    mf_action_t (*run)(mf_req_t *r, mf_stage_t stage);
    mf_stage_t stage;
    mf_phase_t next;
    int (*end)(mf_req_t *r);
} phase_t;

/*
 * REQUEST --(on_request; default route)--> ROUTE
 * ROUTE --(on_route; first target)--> AUTHORIZE or ATTEMPT, or answered
 * AUTHORIZE --(the provider's authorize)--> ATTEMPT
 * ATTEMPT --(on_upstream_request; the call starts)--> UPSTREAM
 * UPSTREAM --(up_on_head, up_on_end)--> UPSTREAM_RESPONSE, or a retry
 * UPSTREAM_RESPONSE --(on_upstream_response)--> RESPONSE_HEADERS
 * RESPONSE_HEADERS --(on_response_headers; the body goes out)--> BODY
 * SERVE --(the handler of a stage's path)--> FINISHED
 * LOCAL --(on_request; the gateway's own answer)--> FINISHED
 */
static const phase_t phases[MF_PHASE_FINISHED + 1] = {
    [MF_PHASE_REQUEST] = {.run = mf_pipeline_run,
                          .stage = MF_STAGE_REQUEST,
                          .next = MF_PHASE_ROUTE,
                          .end = request_end},
    [MF_PHASE_ROUTE] = {.run = mf_pipeline_run,
                        .stage = MF_STAGE_ROUTE,
                        .next = MF_PHASE_AUTHORIZE,
                        .end = route_end},
    [MF_PHASE_AUTHORIZE] = {.run = mf_req_run_authorize,
                            .stage = MF_STAGE_PROVIDER,
                            .next = MF_PHASE_ATTEMPT},
    [MF_PHASE_ATTEMPT] = {.run = mf_pipeline_run,
                          .stage = MF_STAGE_UPSTREAM_REQUEST,
                          .next = MF_PHASE_UPSTREAM,
                          .end = attempt_end},
    [MF_PHASE_UPSTREAM_RESPONSE] = {.run = mf_pipeline_run,
                                    .stage = MF_STAGE_UPSTREAM_RESPONSE,
                                    .next = MF_PHASE_RESPONSE_HEADERS},
    [MF_PHASE_RESPONSE_HEADERS] = {.run = mf_pipeline_run,
                                   .stage = MF_STAGE_RESPONSE_HEADERS,
                                   .next = MF_PHASE_BODY,
                                   .end = response_headers_end},
    [MF_PHASE_SERVE] = {.run = mf_pipeline_serve,
                        .stage = MF_STAGE_ENDPOINT,
                        .next = MF_PHASE_FINISHED,
                        .end = serve_end},
    /* model lists, count_tokens, a stored Response: authenticated like
     * a model call (on_request), answered by the gateway */
    [MF_PHASE_LOCAL] = {.run = mf_pipeline_run,
                        .stage = MF_STAGE_REQUEST,
                        .next = MF_PHASE_FINISHED,
                        .end = mf_req_local_end},
};

/* Runs phases from r->phase until one pauses, answers, or waits. */
void
mf_req_step(mf_req_t *r)
{
    const phase_t *ph;
    mf_action_t act;

    r->in_step++;
    for (;;) {
        ph = &phases[r->phase];
        if (ph->run == NULL) {
            goto out;
        }
        act = ph->run(r, ph->stage);
        if (act == MF_PAUSE && r->resume_pending) {
            /* resumed before the stage even returned */
            r->resume_pending = 0;
            act = r->resume_action;
            if (act == MF_CONTINUE && r->stage_stream == 0) {
                r->stage_idx++;
                continue;
            }
        }
        if (!stage_result(r, act)) {
            if (act == MF_PAUSE) {
                mf_req_call_pause(r, 1);
            }
            goto out;
        }
        r->stage_idx = 0;
        r->phase = ph->next;
        if (ph->end != NULL && !ph->end(r)) {
            goto out;
        }
    }
out:
    if (--r->in_step == 0 && r->finished) {
        mf_req_free(r);
    }
}

static void
cancel_asyncs(mf_req_t *r)
{
    while (r->asyncs != NULL) {
        mf_async_t *a = r->asyncs;

        mf_req_async_remove(r, a);
        a->cancel(a);
    }
}

/* Frees a finished request, unless its answer is still leaving: then
 * mf_req_delivered or mf_req_client_gone frees it. */
void
mf_req_free(mf_req_t *r)
{
    mf_worker_t *w = r->worker;

    if (r->delivering) {
        return;
    }
    if (r->timer) {
        event_free(r->timer);
    }
    if (r->attempt_timer) {
        event_free(r->attempt_timer);
    }
    mf_req_proto_stream_free(r);
    mf_buf_free(&r->tried);
    json_decref(r->json);
    json_decref(r->proto_memo);
    json_decref(r->resp_json);
    json_decref(r->rec_json);
    mf_buf_free(&r->rec_events);
    mf_buf_free(&r->up_buf);
    mf_buf_free(&r->chunk_out);
    mf_sse_parser_free(&r->sse);
    mf_evstream_free(&r->evs);
    free(r->body_own != NULL ? r->body_own : (char *)r->body.data);
    mf_gen_release(r->gen);
    mf_pool_destroy(r->pool);
    atomic_fetch_sub(&w->in_flight, 1);
}

void
mf_req_finish(mf_req_t *r)
{
    mf_conn_t *c = r->conn;

    if (r->finished) {
        return;
    }
    r->finished = 1;
    r->phase = MF_PHASE_FINISHED;
    if (r->att.call != NULL) {
        if (mf_upcall_connected(r->att.call)) {
            r->reached = 1;
        }
        mf_upcall_cancel(r->att.call);
        r->att.call = NULL;
        mf_req_account_upstream_time(r);
    }
    if (r->timer) {
        evtimer_del(r->timer);
    }
    if (r->att.open) {
        static const mf_outcome_t gone = {.kind = 0x80000000u,
                                          .keyres = MF_KEYRES_NEUTRAL,
                                          .what = "abandoned"};

        mf_req_attempt_close(r, &gone, -1); /* no verdict on key or target */
    }
    cancel_asyncs(r);
    mf_req_estimate_usage(r);
    if (c != NULL) {
        r->conn = NULL;
        if (mf_conn_req_done(c, !r->close_after)) {
            r->delivering = 1; /* logged once the answer has left */
            return;
        }
    }
    mf_pipeline_log_done(r);
    if (r->in_step == 0) {
        mf_req_free(r);
    }
}

void
mf_req_delivered(mf_req_t *r)
{
    r->delivering = 0;
    mf_pipeline_log_done(r);
    if (r->in_step == 0) {
        mf_req_free(r);
    }
}

void
mf_req_client_gone(mf_req_t *r, size_t undelivered, const char *why)
{
    r->conn = NULL;
    r->bytes_undelivered = undelivered;
    if (!r->head_sent) {
        r->status = 499;
    }
    if (r->error.len == 0 && undelivered > 0) {
        char msg[256];

        snprintf(msg, sizeof(msg),
                 "%s; %zu bytes of the answer were not delivered",
                 why ? why : "the client closed the connection", undelivered);
        r->error = mf_pool_str(r->pool, mf_str_from(msg));
    } else if (r->error.len == 0) {
        r->error = mf_str_from(why ? why : "the client closed the connection");
    }
    if (r->delivering) {
        mf_req_delivered(r);
        return;
    }
    mf_req_finish(r);
}

/* A window on the current generation (mf_gen_enter): no lock and no
 * reference on a worker; the connection holds it for a few lines. */
static const mf_config_t *
conn_config_acquire(void **hold)
{
    mf_gen_t *g = mf_gen_enter();

    *hold = NULL;
    return g != NULL ? g->config : NULL;
}

static void
conn_config_release(void *hold)
{
    MF_UNUSED(hold);
    mf_gen_leave();
}

const mf_conn_handlers_t mf_req_conn_handlers = {
    .handle = mf_req_handle,
    .refuse = mf_req_refuse,
    .client_gone = mf_req_client_gone,
    .delivered = mf_req_delivered,
    .log_unserved = mf_req_log_unserved,
    .drained = mf_req_drained,
    .config_acquire = conn_config_acquire,
    .config_release = conn_config_release,
};
