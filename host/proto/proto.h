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

/* What an adapter sees of the client's request beside its body: the path
 * names the model and the method for some protocols (Gemini's
 * /v1beta/models/{model}:streamGenerateContent), the query the framing
 * (alt=sse). Views are borrowed for the call. */
typedef struct mf_proto_call_s {
    mf_str_t path;  /* without the query */
    mf_str_t query; /* after '?', empty when none */
    /* the request's slot for what `request` keeps for the answer (the
     * Responses API's conversation, to store it); the host releases it */
    json_t **memo;
    const struct mf_config_s *config; /* the generation's */
    /* The response store, as the host keeps it (in memory, or in Redis
     * when `redis:` is configured; then the host reads the entry the
     * adapter's store_key names before calling it). NULL in a call that
     * has none. get: a malloc'd copy or NULL; put: keeps value under id
     * (bounded, may drop it); delete: 1 when it was there. */
    char *(*store_get)(const struct mf_proto_call_s *call, const char *id);
    void (*store_put)(const struct mf_proto_call_s *call, const char *id,
                      mf_str_t value);
    int (*store_delete)(const struct mf_proto_call_s *call, const char *id);
    void *ctx; /* the host's, for the store functions */
    /* Set by the host for `response` (else NULL): the adapter that has
     * already written the answer it returns as compact JSON (to store it)
     * may leave that text here (malloc'd, the bytes mf_json_dumps would
     * give), and the host sends it instead of writing it again. */
    char **text;
} mf_proto_call_t;

/* One model as a model list shows it. */
typedef struct mf_proto_model_s {
    const char *id;
    const char *owner; /* the provider, or "manifold" for a route */
} mf_proto_model_t;

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
    json_t *(*request)(const mf_proto_call_t *call, json_t *in,
                       const char **err);

    /* The JSON body of an error answer, malloc'd (NULL on OOM). */
    char *(*error_body)(const mf_proto_error_t *e);
    /* An error inside a stream already under way: the bytes of the events
     * that end it, appended to out. state is the stream's (below), NULL
     * when the adapter translates no stream. */
    void (*stream_error)(void *state, const mf_proto_error_t *e, mf_buf_t *out);

    /* A canonical chat completion to the client's answer (new reference,
     * NULL when it cannot be translated). */
    json_t *(*response)(const mf_proto_call_t *call, json_t *completion,
                        const mf_usage_t *usage);

    /* Stream translation: a state of stream_size bytes (request memory),
     * set up once with the model the client asked for, then given each
     * canonical event (a chunk's JSON, or "[DONE]" with last = 1; usage
     * is the request's so far) and appending the client's events to out.
     * NULL stream_event: each event goes out as "data: <json>\n\n". */
    size_t stream_size;
    void (*stream_init)(void *state, const mf_proto_call_t *call,
                        mf_str_t model);
    void (*stream_event)(void *state, mf_str_t data, int last,
                         const mf_usage_t *usage, mf_buf_t *out);
    /* For its MF_PROTO_LOCAL paths: the answer to the client's parsed
     * body (a JSON object): a JSON text (malloc'd) and *status; NULL with
     * a sentence for a 400 in *err. *estimated is set when the answer is
     * the gateway's estimate rather than a provider's. */
    char *(*local)(const mf_proto_call_t *call, json_t *in, int *status,
                   int *estimated, const char **err);
    /* Optional: frees what the state holds beyond its own bytes; called
     * once when the attempt that made it is over or the request ends. */
    void (*stream_free)(void *state);
    /* Optional: the Content-Type of its stream for this call; NULL or
     * the slot NULL: text/event-stream. */
    const char *(*stream_type)(const mf_proto_call_t *call);

    /* Optional: model lists in its shape. models_path says whether a path
     * (GET) is its list (*id empty) or one model (*id set, still
     * percent-encoded); model renders one entry, model_list wraps the
     * entries (an array, taken). */
    int (*models_path)(mf_str_t path, mf_str_t *id);
    /* Optional: a request header its clients always send (Anthropic's
     * anthropic-version): a model-list path another adapter owns is
     * answered in this one's shape (and errors too) when it is sent and
     * this adapter's models_path takes the path. */
    const char *models_header;
    /* The endpoints it serves, for the 404 of an unknown path. */
    const char *endpoints;
    json_t *(*model)(const mf_proto_model_t *m);
    json_t *(*model_list)(json_t *entries);

    /* Optional: a path of its space it answers itself, whatever the
     * method, with no body and no upstream (GET and DELETE
     * /v1/responses/{id}): 1 with *status and *body (malloc'd): the JSON
     * answer when *status < 400, else the message of an error answer;
     * 0 when the path is not one. */
    int (*resource)(const mf_proto_call_t *call, mf_str_t method, int *status,
                    char **body);
    /* Optional: the store entry handling this request will read (or,
     * *del set, delete): in the parsed body (in), or, in NULL, from the
     * path of a resource; 1 with *id set (a view into in or the path),
     * else 0. A host whose store is remote fetches it first. */
    int (*store_key)(const mf_proto_call_t *call, json_t *in, mf_str_t method,
                     mf_str_t *id, int *del);

    /* Optional, for a MF_PROTO_LOCAL path that counts tokens (Anthropic's
     * count_tokens, Gemini's :countTokens): count_request turns the
     * client's parsed body (checked by `local` first) into the canonical
     * chat request whose prompt a provider with a counting endpoint
     * counts (a new reference, the model set; NULL with *err set for a
     * 400), count_answer renders that provider's count (malloc'd JSON). */
    json_t *(*count_request)(const mf_proto_call_t *call, json_t *in,
                             const char **err);
    char *(*count_answer)(int64_t tokens);

    /* Optional: the route template of a path of its space it serves or
     * answers ("/v1beta/models/{model}:generateContent"): a static string
     * or path itself when path has no variable part; empty when path is
     * none of its routes. A few compares, no allocation. */
    mf_str_t (*route)(mf_str_t path);
} mf_proto_t;

/* Every adapter, NULL-terminated; the first is the default (OpenAI). */
extern const mf_proto_t *const mf_protos[];

/* The adapter that serves path (*endpoint set; *local set when it
 * answers it itself), or, when none does, the one whose path space it is,
 * else the default with *endpoint MF_ENDPOINT_NONE. Never NULL. */
const mf_proto_t *mf_proto_find(mf_str_t path, mf_endpoint_t *endpoint,
                                int *local);

/* The route template of path (mf_proto_t.route), asking p first, then
 * the other adapters; empty when no adapter has the path. */
mf_str_t mf_proto_route(const mf_proto_t *p, mf_str_t path);

/* The adapters, one file each. */
extern const mf_proto_t mf_proto_openai;
extern const mf_proto_t mf_proto_anthropic;
extern const mf_proto_t mf_proto_responses;
extern const mf_proto_t mf_proto_gemini;

/* The Responses adapter's 400 for a previous_response_id it does not
 * find; the host answers the same when the entry is another consumer's. */
extern const char mf_proto_prev_unknown[];

/* The string s as a JSON string (as mf_json_dumps writes it), appended
 * to b, for an adapter that writes an event's text without a tree;
 * MF_ERR, nothing appended, when s is not valid UTF-8 (or on OOM). */
int mf_proto_put_str(mf_buf_t *b, const char *s);

/* A string literal appended to a buffer. */
#define MF_PROTO_PUT_LIT(b, lit) mf_buf_append((b), (lit), sizeof(lit) - 1)

/* 1 when s begins with prefix. */
int mf_proto_has_prefix(mf_str_t s, const char *prefix);

/* Anthropic's error type for an HTTP status (invalid_request_error,
 * authentication_error, ..., api_error, overloaded_error). */
const char *mf_proto_anthropic_type(int status);

#endif
