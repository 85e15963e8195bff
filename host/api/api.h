/*
 * The host API given to plugins (mf_host_api_t).
 */
#ifndef MF_API_H
#define MF_API_H

#include <stddef.h>

#include "pipeline/request-t.h"

/* The host API table given to plugins. */
extern const mf_host_api_t mf_api;

/* What a stage may do, by the stages it is allowed in (one table in
 * api.c, consulted by the host API and the Lua binding). */
typedef enum {
    MF_CALL_READ,                /* headers, body, model, targets */
    MF_CALL_SET_REQUEST_HEADER,  /* on_request, on_route */
    MF_CALL_SET_UPSTREAM_HEADER, /* on_upstream_request, a provider */
    MF_CALL_SET_RESPONSE_HEADER, /* any (until the head is sent) */
    MF_CALL_SET_BODY,            /* before the upstream call */
    MF_CALL_SET_MODEL,           /* on_request, on_route */
    MF_CALL_SET_TARGETS,         /* on_route */
    MF_CALL_SET_CONSUMER,        /* on_request */
    MF_CALL_RESPOND,             /* on_request .. on_response_headers */
    MF_CALL_PAUSE,               /* on_request .. on_response_headers */
    MF_CALL_PROVIDER,            /* a provider callback */
    MF_CALL_SET_USAGE,           /* a provider, on_response_body, on_log */
    MF_CALL_SET_RESPONSE_CHUNK,  /* on_response_body */
    MF_CALL_SET_QUERY,           /* on_request, on_route, an endpoint */
    MF_CALL_INSERT_CHUNK,        /* on_response_body, a stream */
    MF_CALL_STOP_RESPONSE,       /* on_response_body */
    MF_CALL_STAGE_ANSWER,        /* on_request, on_route (ABI 1.5) */
    MF_CALL_GET_ANSWER,          /* on_log, on_done */
    MF_CALL_SET_CACHED,          /* on_request .. on_log */
    MF_CALL__COUNT
} mf_call_t;

/* Whether r's current stage may make `call` (never once the request is
 * finished, but in on_log and on_done). */
int mf_api_allowed(const mf_req_t *r, mf_call_t call);
/* Why `call` is refused in r's current stage, as a sentence in buf ("set_model
 * is not allowed in on_log; only in on_request, on_route"); returns buf. */
const char *mf_api_refusal(const mf_req_t *r, mf_call_t call, char *buf,
                           size_t cap);

#endif
