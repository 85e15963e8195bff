/*
 * Inbound protocol adapters: one table of functions per API a client may
 * speak (OpenAI chat and embeddings, Anthropic Messages, ...). The request
 * module asks the table which adapter serves a path, and from then on
 * calls the adapter, never branches on a protocol: it turns the client's
 * body into the canonical request (OpenAI chat JSON), renders errors in
 * the client's shape, and turns the canonical answer, whole or as stream
 * chunks, back into the client's protocol. A new protocol is one more
 * adapter file and one entry in mf_protos[] (proto.c).
 */
#ifndef MF_PROTO_H
#define MF_PROTO_H

#include <jansson.h>

#include "core/core.h"

/* What a path is to an adapter (match). */
typedef enum {
    MF_PROTO_NO = 0, /* not its path */
    MF_PROTO_OWNS,   /* its path space, not an endpoint it serves: an
                        error there is rendered in its shape */
    MF_PROTO_SERVES, /* an endpoint it serves; *endpoint says which */
    MF_PROTO_LOCAL   /* an endpoint it answers itself (`local`), with no
                        upstream; *endpoint says how the body is checked */
} mf_proto_match_t;

/* An error for the client, rendered by the adapter in its shape. `type`
 * and `code` are the gateway's (OpenAI's) names; an adapter maps them to
 * its own. Views are borrowed for the call. */
typedef struct mf_proto_error_s {
    int status;
    const char *type;
    const char *code;    /* may be NULL */
    const char *param;   /* may be NULL */
    const char *message; /* valid UTF-8 */
} mf_proto_error_t;

typedef struct mf_proto_s {
    const char *name; /* "openai", "anthropic", ... */
    /* The method its endpoints take ("POST"); another is a 405. */
    const char *method;
    /* 1: the client's body is the canonical form already: it is scanned,
     * not parsed, and stream bytes from an upstream of the "openai" wire
     * pass through untouched. `request`, `response` and `stream_event`
     * are then NULL. */
    int canonical;

    /* Is path (without the query) one of its? On MF_PROTO_SERVES sets
     * *endpoint. Required. */
    mf_proto_match_t (*match)(mf_str_t path, mf_endpoint_t *endpoint);

    /* The client's parsed body (a JSON object) to the canonical request:
     * a new reference, or NULL with a sentence for a 400 in *err. When
     * the body has no usable "model" the adapter may return `in` itself
     * (a new reference) so that the host answers the missing model. */
    json_t *(*request)(json_t *in, const char **err);

    /* The JSON body of an error answer, malloc'd (NULL on OOM). */
    char *(*error_body)(const mf_proto_error_t *e);
    /* An error inside a stream already under way: the bytes of the events
     * that end it, appended to out. state is the stream's (below), NULL
     * when the adapter translates no stream. */
    void (*stream_error)(void *state, const mf_proto_error_t *e, mf_buf_t *out);

    /* A canonical chat completion to the client's answer (new reference,
     * NULL when it cannot be translated). */
    json_t *(*response)(json_t *completion, const mf_usage_t *usage);

    /* Stream translation: a state of stream_size bytes (request memory),
     * set up once with the model the client asked for, then given each
     * canonical event (a chunk's JSON, or "[DONE]" with last = 1; usage
     * is the request's so far) and appending the client's events to out.
     * NULL stream_event: each event goes out as "data: <json>\n\n". */
    size_t stream_size;
    void (*stream_init)(void *state, mf_str_t model);
    void (*stream_event)(void *state, mf_str_t data, int last,
                         const mf_usage_t *usage, mf_buf_t *out);
    /* For its MF_PROTO_LOCAL paths: the answer to the client's parsed
     * body (a JSON object): a JSON text (malloc'd) and *status; NULL with
     * a sentence for a 400 in *err. *estimated is set when the answer is
     * the gateway's estimate rather than a provider's. */
    char *(*local)(mf_str_t path, json_t *in, int *status, int *estimated,
                   const char **err);
    /* Optional: frees what the state holds beyond its own bytes; called
     * once when the attempt that made it is over or the request ends. */
    void (*stream_free)(void *state);
} mf_proto_t;

/* Every adapter, NULL-terminated; the first is the default (OpenAI). */
extern const mf_proto_t *const mf_protos[];

/* The adapter that serves path (*endpoint set; *local set when it
 * answers it itself), or, when none does, the one whose path space it is,
 * else the default with *endpoint MF_ENDPOINT_NONE. Never NULL. */
const mf_proto_t *mf_proto_find(mf_str_t path, mf_endpoint_t *endpoint,
                                int *local);

/* The adapters, one file each. */
extern const mf_proto_t mf_proto_openai;
extern const mf_proto_t mf_proto_anthropic;
extern const mf_proto_t mf_proto_responses;

/* 1 when s begins with prefix. */
int mf_proto_has_prefix(mf_str_t s, const char *prefix);

/* Anthropic's error type for an HTTP status (invalid_request_error,
 * authentication_error, ..., api_error, overloaded_error). */
const char *mf_proto_anthropic_type(int status);

#endif
