/*
 * The request path: endpoints, body validation, the phase loop with pause
 * and resume, upstream attempts, streaming and non-streaming responses,
 * accounting and cleanup.
 */
#ifndef MF_REQUEST_H
#define MF_REQUEST_H

#include "http/server.h"
#include "pipeline/request-t.h"

/* Registers the gateway's own paths in the endpoint table (once, at
 * start, before the first generation is built). */
void mf_req_endpoints_init(void);

/* The client connection's handlers (mf_server_set_handlers). */
extern const mf_conn_handlers_t mf_req_conn_handlers;

/* A whole request was read; `body` (malloc'd) is taken. Head views are
 * valid during the call only. */
void mf_req_handle(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
                   const char *client_addr, char *body, size_t len);

/* Answers a request refused at intake (its head was read) with an error
 * and accounts it like any other (stages' on_log and on_done); the
 * connection closes after the answer unless mf_conn_keep_alive says it is
 * kept. Head views are valid during the call only. */
void mf_req_refuse(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
                   const char *client_addr, const mf_req_refusal_t *why);
/* The client connection closed, or the gateway cut it (`why`, NULL: the
 * client closed it) with `undelivered` bytes of output not sent: abandon
 * the request, or end its delivery, and account it. */
void mf_req_client_gone(mf_req_t *r, size_t undelivered, const char *why);
/* The answer of a finished request has left: log and free it. */
void mf_req_delivered(mf_req_t *r);
/* Logs a request that never reached the pipeline (refused while read, or
 * the client left mid-upload): on_log and on_done run on what is known.
 * `head` may be NULL (not parsed); views are read during the call only. */
void mf_req_log_unserved(mf_worker_t *w, const mf_http_head_t *head,
                         const char *client_addr, int status, const char *why,
                         uint64_t bytes_in, double start_ms);
/* The client output drained under the low mark. */
void mf_req_drained(mf_req_t *r);

/* A canonical stream event (OpenAI chunk JSON, or "[DONE]" with last):
 * runs the body stages on it and queues it for the client. */
void mf_req_emit_event(mf_req_t *r, mf_str_t data, int last);
/* api->hold_response (ABI 1.6): an event the holding body stage sends
 * from its async callback (through the stages after it, out at once);
 * the stage let go (the end that waited, reading resumed); a stop made
 * from the callback. */
int mf_req_body_insert_held(mf_req_t *r, mf_str_t data);
void mf_req_body_release(mf_req_t *r);
/* Sets the holding stage (index + 1; 0 lets go inside the pipeline) and
 * stops or restarts reading the upstream. */
void mf_req_body_hold(mf_req_t *r, int idx1);
void mf_req_body_stopped(mf_req_t *r);

/* A stage's own stream answer (api->emit_event): data is a canonical
 * chunk's JSON (may be empty), translated to the client's protocol and
 * sent at once, the head going with the first; last ends the stream.
 * MF_ERR when the request cannot take one (not a stream, answered). */
int mf_req_stage_event(mf_req_t *r, mf_str_t data, int last);
/* Ends a stage's stream under way with an error event (api->
 * emit_stream_error). MF_ERR when none is under way. */
int mf_req_stage_stream_error(mf_req_t *r, const char *code,
                              const char *message);
/* A stage's whole canonical completion (JSON text), in the client's
 * protocol, status 200. */
int mf_req_respond_canonical(mf_req_t *r, mf_str_t completion);
/* The recorded canonical answer (api->record_answer): a new reference
 * to the completion, or an array of the stream's chunks; NULL when none
 * was recorded. */
json_t *mf_req_answer(mf_req_t *r);
/* The i-th recorded stream event (borrowed); MF_ERR past the last. */
int mf_req_answer_event(mf_req_t *r, size_t i, mf_str_t *data);

/* For the host API. */
int mf_req_respond(mf_req_t *r, int status, const char *content_type,
                   mf_str_t body);
int mf_req_respond_error(mf_req_t *r, int status, const char *type,
                         const char *code, const char *message);
void mf_req_resume(mf_req_t *r, mf_action_t action);
/* A model (and its default targets), or one more target. MF_ERR, with
 * nothing changed, for a model name holding a control character (as a
 * client's is refused at intake), or when no provider serves the model. */
int mf_req_set_model(mf_req_t *r, mf_str_t model);
int mf_req_add_target(mf_req_t *r, mf_prov_t *p, mf_str_t model,
                      unsigned weight);
/* The parsed request body, parsed now when parse_body left it lazy (a
 * body no stage had read): borrowed, NULL when there is none. */
json_t *mf_req_body_json(mf_req_t *r);
/* The JSON text of the body's top-level member key: from the scan's
 * index while the body is not parsed, else serialized from the value
 * (into the request's pool). MF_ERR when absent. */
int mf_req_body_field(mf_req_t *r, mf_str_t key, mf_str_t *value);
/* api->get_body_text: the body's canonical JSON text (see plugin.h). */
int mf_req_body_text(mf_req_t *r, mf_str_t *text);
/* api->set_body_text (ABI 1.6): the canonical body's new JSON text
 * (copied, checked as at intake), for a client whose protocol is the
 * canonical one; the parsed tree, if any, is dropped. */
int mf_req_set_body_text(mf_req_t *r, mf_str_t text);
/* api->edit_body_text (ABI 1.7, req_edit.c): edits of string contents of
 * the canonical body's text, checked and escaped; the body's index is
 * shifted, not rebuilt (see plugin.h). */
int mf_req_edit_body_text(mf_req_t *r, const mf_body_edit_t *edits, size_t n);
/* Text of the last user message (string content or text parts joined). */
mf_str_t mf_req_last_user_text(mf_req_t *r);

#endif
