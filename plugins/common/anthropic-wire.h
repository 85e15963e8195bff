/* The Anthropic Messages wire, shared by provider-anthropic and Claude on
 * Vertex AI (provider-gemini): the canonical request to a Messages body and
 * the answers back. See anthropic-wire.c. */
#ifndef MF_ANTHROPIC_WIRE_H
#define MF_ANTHROPIC_WIRE_H

#include <manifold/plugin.h>

typedef struct {
    const char *name;              /* the provider's, for messages */
    json_int_t default_max_tokens; /* when the client sends none */
} aw_conf_t;

/* Once, from the plugin's init: the host's table. */
void aw_init(const mf_host_api_t *host);

/* The Messages body (a new reference) of the canonical request `in` for
 * u's model; for u->endpoint == MF_ENDPOINT_COUNT_TOKENS only what
 * count_tokens takes. `stream` is set when u->stream. */
json_t *aw_request(const aw_conf_t *conf, json_t *in, const mf_upstream_t *u);

/* mf_provider_t's callbacks for a Messages answer (`state` unused; the
 * stream's state is in api->provider_ctx). */
int aw_parse_response(mf_req_t *r, void *state, mf_str_t body, int canonical);
int aw_parse_stream_event(mf_req_t *r, void *state, const mf_sse_event_t *ev,
                          int canonical);
int aw_parse_count(mf_req_t *r, void *state, mf_str_t body, int64_t *tokens);
/* An Anthropic error answer (or Google's {"error":{"message"}}) of
 * provider `name`. */
int aw_parse_error(mf_req_t *r, const char *name, int status, mf_str_t body,
                   mf_error_t *err);

#endif
