/*
 * What the files of the request module share, and no one else: the
 * lifecycle (request.c), intake (req_intake.c), answers to the client
 * (req_respond.c), default routing (req_route.c), attempts
 * (req_attempt.c), retries (req_retry.c) and the relay of the upstream's
 * answer (req_relay.c). request.h is the module's public API.
 */
#ifndef MF_REQUEST_INT_H
#define MF_REQUEST_INT_H

#include "http/upstream.h"
#include "request/request.h"
#include "routing/keypool.h"

struct evbuffer;

/* How an attempt ended, for key and target health and retry. */
typedef struct {
    unsigned kind; /* MF_RETRY_* bit of the failure; 0 = success */
    mf_keyres_t keyres;
    int breaker_fail;
    double retry_after_ms;
    char what[96];
    /* the client's answer when the attempt is not retried */
    int status;
    const char *type; /* NULL: "upstream_error" */
    const char *code;
    const char *message; /* borrowed for mf_req_attempt_failed */
    int retry_after;     /* seconds for Retry-After, 0 none */
} mf_outcome_t;

/* An attempt that succeeded. */
extern const mf_outcome_t mf_outcome_ok;

/* request.c */
void mf_req_call_pause(mf_req_t *r, int paused);
void mf_req_step(mf_req_t *r);
void mf_req_free(mf_req_t *r);
void mf_req_finish(mf_req_t *r);

/* req_store.c: what the inbound adapter sees of the request beside its
 * body (path, query, its memo slot, the config, the response store). */
struct mf_proto_call_s mf_req_proto_call(mf_req_t *r);
/* Reads (or, for a DELETE whose entry is the consumer's, deletes) in
 * Redis the response-store entry the adapter's store_key names for this
 * request (in: its parsed body, or NULL for a resource path): 1 when the
 * request now waits, and mf_req_intake_resume runs with the entry in
 * r->store_value; 0 when nothing is to be read (no Redis, no entry
 * named). */
int mf_req_store_fetch(mf_req_t *r, json_t *in);
/* After on_request: 1 when the entry read at intake (previous_response_id)
 * is none or the consumer's; reads from here on compare owners. */
int mf_req_store_owner_ok(mf_req_t *r);
/* req_intake.c: intake goes on after the fetch. */
void mf_req_intake_resume(mf_req_t *r);
/* The end of MF_PHASE_LOCAL (on_request ran): the gateway's own answer
 * (a model list, an adapter's local answer, a stored Response); 0 (the
 * request is answered, or waits on the store). */
int mf_req_local_end(mf_req_t *r);
/* The answer of a previous_response_id that is not the consumer's: the
 * 400 an unknown id has. */
void mf_req_respond_prev_unknown(mf_req_t *r);
/* A token count's answer: the estimate, marked
 * x-manifold-tokens-estimated. */
void mf_req_respond_count_estimate(mf_req_t *r);

/* req_decode.c: decodes a body sent with Content-Encoding gzip or
 * deflate in place; MF_ERR when it answered (413 past limits.max_body
 * decoded, 415 another coding, 400 data that does not decode). */
int mf_req_decode_body(mf_req_t *r);

/* req_respond.c */
struct evbuffer *mf_req_out(mf_req_t *r);
void mf_req_send_chunk(mf_req_t *r, const char *data, size_t len);
int mf_req_respond_error_param(mf_req_t *r, int status, const char *type,
                               const char *code, const char *param,
                               const char *message);
void mf_req_send_stream_error(mf_req_t *r, const char *code,
                              const char *message);
void mf_req_finish_stream(mf_req_t *r);
void mf_req_start_stream_response(mf_req_t *r);

/* req_route.c */
void mf_req_route_default(mf_req_t *r);
void mf_req_respond_unknown_model(mf_req_t *r);

/* req_attempt.c */
void mf_req_attempt_close(mf_req_t *r, const mf_outcome_t *o, double ttft_ms);
int mf_req_attempt_select(mf_req_t *r, size_t from, size_t to, int last_resort);
int mf_req_attempt_first(mf_req_t *r);
void mf_req_respond_no_target(mf_req_t *r);
int mf_req_attempt_prepare(mf_req_t *r);
mf_action_t mf_req_run_authorize(mf_req_t *r, mf_stage_t stage);
void mf_req_attempt_start(mf_req_t *r);
void mf_req_account_upstream_time(mf_req_t *r);

/* req_retry.c */
void mf_req_outcome_error(mf_outcome_t *o, mf_uperr_t kind);
void mf_req_scrub_error(mf_req_t *r, char *message);
void mf_req_attempt_failed(mf_req_t *r, const mf_outcome_t *o);
void mf_req_attempt_error(mf_req_t *r, const mf_error_t *up_err, int status);

/* req_relay.c */
/* Frees the inbound adapter's stream state of the attempt, if any. */
void mf_req_proto_stream_free(mf_req_t *r);
void mf_req_estimate_usage(mf_req_t *r);
int mf_req_on_sse_event(void *arg, const mf_sse_event_t *ev);
void mf_req_flush_stream(mf_req_t *r);
void mf_req_stream_failed(mf_req_t *r, const mf_error_t *err);
void mf_req_body_stage_failed(mf_req_t *r);
/* A body stage failed the answer or stopped it: ends it that way and
 * returns 1; 0 when neither. */
int mf_req_body_ended_by_stage(mf_req_t *r);
/* Ends a stream whose upstream has ended and that nothing holds: as a
 * stage decided (above), else flushed, finished and logged. */
void mf_req_stream_end(mf_req_t *r);
void mf_req_complete_nonstream(mf_req_t *r);

#endif
