/*
 * Types only: the request as the pipeline, the services, the routing
 * layer and the stage bindings see it. The request module (request/)
 * owns its lifecycle; the others read and set the fields their contract
 * names.
 */
#ifndef MF_REQUEST_T_H
#define MF_REQUEST_T_H

#include <event2/event.h>

#include "http/evstream.h"
#include "http/http.h"
#include "http/sse.h"
#include "http/worker-t.h"
#include "pipeline/generation-t.h"

typedef struct mf_upcall_s mf_upcall_t;

/* An async host service call a request waits on (HTTP, Redis); cancelled
 * (the completion never runs) when the request ends first. */
typedef struct mf_async_s {
    struct mf_async_s *next;
    struct mf_async_s *prev;
    void (*cancel)(struct mf_async_s *a); /* unlinked before the call */
} mf_async_t;

typedef struct mf_tgt_s mf_tgt_t; /* a target's health (balancer.c) */

typedef struct mf_rtarget_s {
    mf_prov_t *prov;
    mf_str_t model; /* upstream model */
    unsigned weight;
    mf_tgt_t *tgt; /* NULL: not a route's (stages, default routing) */
} mf_rtarget_t;

typedef enum {
    MF_PHASE_REQUEST = 0,
    MF_PHASE_ROUTE,
    MF_PHASE_AUTHORIZE, /* the provider's authorize (may pause) */
    MF_PHASE_ATTEMPT,
    MF_PHASE_UPSTREAM,
    MF_PHASE_UPSTREAM_RESPONSE,
    MF_PHASE_RESPONSE_HEADERS,
    MF_PHASE_BODY,
    MF_PHASE_SERVE, /* a stage serves a path it added */
    MF_PHASE_LOCAL, /* on_request, then the gateway answers it itself */
    MF_PHASE_FINISHED
} mf_phase_t;

/* One upstream attempt: a target, a key, the provider's request and
 * the upstream's answer so far. The request module resets it whole, in
 * one statement, when an attempt begins (req_attempt.c); what outlives
 * an attempt (the count, the buffers it reuses) is in mf_req_t. */
typedef struct mf_attempt_s {
    mf_prov_t *prov;
    mf_str_t up_model;
    int key_idx;     /* the key, -1 none */
    mf_tgt_t *tgt;   /* the target's health, NULL none */
    int open;        /* key and target counted; attempt_close owed */
    double start;    /* when its upstream call started (ttft) */
    double up_start; /* the same until added to upstream_ms, then 0 */
    mf_str_t up_key;
    mf_str_t up_url;
    mf_str_t up_body;
    mf_hlist_t up_req_headers;
    mf_hlist_t up_resp_headers;
    int up_status;
    mf_upcall_t *call;
    int call_paused;
    int evs_framing; /* evs, not sse, reads the stream */
    int sse_active;
    mf_error_t *prov_err; /* api->set_error of the attempt */
    mf_str_t up_wire;     /* api->set_upstream_wire's, empty: the provider's */
    int passthrough;      /* stream bytes forwarded untouched */
    int wire_canonical;   /* the upstream's bytes are the canonical form
                             (OpenAI wire, an OpenAI client): body stages
                             get them as they came, nothing is parsed */
    int wire_openai;      /* the upstream speaks the OpenAI wire, whatever the
                             client: its events are canonical chunks already */
    int saw_done;
    int done_sent;  /* the canonical stream's end was emitted */
    int held;       /* chunk_out holds only preamble events: not committed */
    void *prov_ctx; /* the provider's per-attempt slot */
    void *proto_stream; /* the inbound adapter's stream state, or NULL */
    int64_t events_seen;
    int usage_final;         /* the stream reached the provider's last usage */
    uint64_t delivered_text; /* bytes of answer text sent in stream events */
    double head_ms;          /* the upstream's answer head came, 0 not yet */
    double end_ms;           /* the attempt ended, 0 not yet */
    char span_id[17];        /* its trace span (16 hex digits) */
    const char *tp_made;     /* the traceparent value the host made
                                (api->set_traceparent): not checked again */
    mf_str_t server_host;    /* the host of up_url (a view into it), empty
                                until the call goes out */
    int server_port;
} mf_attempt_t;

/* What stays of an attempt once it closed (api->get_attempt). */
typedef struct mf_attempt_rec_s {
    const char *provider; /* the generation's provider name */
    const char *type;     /* and its type */
    mf_str_t model;
    char outcome[24];
    int status;
    int key_idx;
    double start; /* monotonic ms: the call's start, 0 none went out */
    double end;
    double head;
    char span_id[17];
    mf_str_t server_host; /* a view into the attempt's up_url */
    int server_port;
} mf_attempt_rec_t;

struct mf_req_s {
    mf_pool_t *pool;
    mf_worker_t *worker;
    mf_conn_t *conn; /* NULL once the client went away */
    mf_gen_t *gen;
    void **ctx;   /* one slot per stage */
    uint64_t ran; /* stages that had a callback run (bit per index < 64) */

    /* what the client sent */
    mf_str_t id;
    mf_str_t method;
    mf_str_t path;
    mf_str_t query; /* the target's query, without '?' */
    mf_str_t client_addr;
    mf_hlist_t req_headers;
    mf_str_t body;  /* raw request body */
    json_t *json;   /* parsed body (see mf_req_body_json) */
    char *body_own; /* the client's body (malloc) once set_body_text
                     * replaced it with pool memory, else NULL */
    int body_dirty;
    int body_lazy;                /* checked, not parsed yet: json NULL */
    struct mf_jscan_s *body_scan; /* its top-level members, when lazy */
    mf_endpoint_t endpoint;
    const struct mf_proto_s *proto; /* the inbound adapter (proto/) */
    mf_str_t route_tmpl;            /* its route template (mf_proto_route), once
                                       route_known */
    int route_known;
    int proto_local;    /* the adapter answers the path itself (no upstream) */
    json_t *proto_memo; /* what the adapter kept from the request */
    /* the response-store entry read from Redis before the adapter runs */
    mf_str_t store_id;
    mf_str_t store_value; /* data NULL: none stored */
    int store_deleted;
    /* the owner (consumer, "" anonymous) of the entry read at intake, for
     * request_end to compare once on_request has set the consumer */
    mf_str_t store_owner; /* of the entry read at intake */
    int store_read_early; /* an entry was read at intake (store_owner) */
    int store_checked;    /* reads compare the owner (after on_request) */
    int local_what;       /* what MF_PHASE_LOCAL answers (req_intake.c) */
    /* a token count forwarded to the provider's counting endpoint
     * (MF_ENDPOINT_COUNT_TOKENS upstream); the estimate, answered when
     * the target has no such endpoint */
    int count_mode;
    mf_str_t count_estimate;
    int intake_wait; /* what intake does once it is read (req_store.c) */
    int listener;    /* mf_listener_t it came in on */
    const struct mf_epath_s *epath; /* a stage's path it is served by */
    int stream;
    int http10;      /* an HTTP/1.0 client: no chunked coding */
    int close_after; /* the connection ends with this answer */
    int client_wants_usage;
    mf_str_t model;       /* current model (routing may change it) */
    mf_str_t model_asked; /* what the client asked for */
    mf_str_t consumer;
    mf_str_t consumer_group; /* the consumer record (ABI 1.4) */
    mf_str_t consumer_key_id;
    mf_str_t *consumer_attrs; /* name, value, ... (2 * n) */
    size_t nconsumer_attrs;
    int call_depth;         /* a stage's model call: how nested (0: a client) */
    mf_str_t call_provider; /* a model call pinned to this provider */

    /* routing */
    mf_rtarget_t *targets;
    size_t ntargets;
    size_t targets_cap;
    size_t target_idx;
    const mf_route_conf_t *route; /* the route that planned the targets */
    uint64_t keys_tried;          /* keys of the current target tried (bits) */
    double cool_ms;               /* shortest wait for a cooling key seen */
    int skipped_rate;             /* targets skipped: every key cooling */
    int skipped_open;             /* targets skipped: breaker open */
    int skipped_keys;             /* targets skipped: every key disabled */
    struct event *attempt_timer;  /* time to first token */
    mf_buf_t tried;               /* "provider/model:status,..." for logs */
    mf_attempt_rec_t *recs;       /* closed attempts (request memory) */
    size_t nrecs;
    size_t recs_cap;

    /* the current attempt (reset in one statement when one begins) */
    mf_attempt_t att;
    int attempts;
    int reached;     /* a request went out to an upstream (usage may be owed) */
    mf_buf_t up_buf; /* non-stream or error body (emptied per attempt) */
    mf_sse_parser_t sse;
    mf_evstream_t evs; /* the stream is AWS event-stream framed */
    int body_failed;   /* an on_response_body stage failed */

    /* the response */
    mf_hlist_t resp_headers;
    int status;
    int head_sent;
    int finished; /* response complete or aborted */
    mf_str_t error;
    mf_usage_t usage;
    int have_usage;
    int64_t cache_write_tokens; /* part of usage.prompt_tokens, -1 unknown */
    json_t *resp_json;  /* canonical response from a translating provider */
    mf_buf_t chunk_out; /* canonical chunks emitted by a provider */
    mf_str_t replace;   /* set_response_chunk */
    int replaced;
    /* insert_response_chunk: events a body stage put before the one it
     * was given (pending: from the stage now running; before: what every
     * stage made of them, in order, sent ahead of the event) */
    mf_str_t *ins_pending, *ins_before;
    size_t nins_pending, nins_before, ins_cap_pending, ins_cap_before;
    /* stop_response: the answer ends at this event (what the client gets
     * instead: an error before anything left, else `final` and the end) */
    int body_stop;
    int stop_status;
    const char *stop_type, *stop_code;
    mf_str_t stop_message;
    mf_str_t stop_final;
    /* hold_response (ABI 1.6): a body stage holds the stream's output
     * while its async check runs; the upstream is read no further and the
     * end waits until it lets go */
    size_t body_idx;     /* the body stage running now */
    int in_body;         /* inside mf_pipeline_body */
    int body_hold;       /* the holding stage's index + 1, 0 none */
    int end_held;        /* the last event arrived while held */
    size_t end_from;     /* the stages it still goes through on release */
    mf_str_t end_data;   /* what it was when held */
    int up_ended;        /* the upstream ended while held */
    int record;          /* api->record_answer: keep the canonical answer */
    mf_buf_t rec_events; /* its stream events: 4-byte length, then data */
    json_t *rec_json;    /* its non-stream completion */
    mf_answer_watch_fn rec_watch; /* api->watch_answer */
    void *rec_watch_arg;
    size_t rec_at;     /* mf_req_answer_event's cursor: an event index */
    size_t rec_at_off; /* and where it begins in rec_events */
    int stage_stream;  /* 1: a stage's own stream is going out, 2: ended */
    int cached;        /* api->set_cached: 1, or 2 counted as served */

    /* timing */
    double start_ms;
    double start_wall;
    double first_byte_ms;
    double first_content_ms; /* the first event with content was sent */

    /* trace context (made on first use: mf_req_trace) */
    int trace_made;
    int trace_sampled;
    char trace_id[33];
    char span_id[17];
    char parent_span_id[17]; /* the client's, "" none */
    double upstream_ms;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t bytes_undelivered; /* output the connection was cut with */
    int delivering; /* finished; the answer is still leaving (not logged) */

    /* pipeline */
    mf_phase_t phase;
    mf_stage_t cur_stage;
    size_t stage_idx;
    int paused;
    int in_step;
    int resume_pending;
    mf_action_t resume_action;
    int logged;
    int done;
    int lua_yielded; /* a Lua stage yielded: resume it, not the next */
    struct event *timer;
    mf_async_t *asyncs; /* service calls in flight */
};

#endif
