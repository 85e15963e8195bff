/*
 * Pipeline runner: runs one phase's stages of a request in order.
 */
#ifndef MF_PIPELINE_H
#define MF_PIPELINE_H

#include "pipeline/request-t.h"

/* The callback name of each stage ("on_route"), NULL for the others. */
extern const char *const mf_stage_fn_names[MF_STAGE__COUNT];

/* Pipeline: runs the stages of `stage` from r->stage_idx. */
mf_action_t mf_pipeline_run(mf_req_t *r, mf_stage_t stage);
/* Serves a request with the stage's handler of the path it came for
 * (r->epath); MF_CONTINUE when the handler is done or the stage is
 * disabled (the caller answers what is left unanswered). */
mf_action_t mf_pipeline_serve(mf_req_t *r, mf_stage_t stage);
/* Runs the on_response_body stages over one event or the whole body.
 * MF_ERR when a stage failed: the data must not reach the client. After
 * it, r->replaced and r->replace say what the event became, and
 * r->ins_before (r->nins_before) holds the events stages inserted, to be
 * sent first, in order. */
int mf_pipeline_body(mf_req_t *r, mf_str_t data, int last);
/* The same from the body stage `from` on (the stages after one that
 * held the output, on its release). */
int mf_pipeline_body_from(mf_req_t *r, size_t from, mf_str_t data, int last);
void mf_pipeline_log_done(mf_req_t *r);

/* Async service calls the request waits on. */
void mf_req_async_add(mf_req_t *r, mf_async_t *a);
void mf_req_async_remove(mf_req_t *r, mf_async_t *a);

#endif
