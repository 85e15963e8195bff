/*
 * Anthropic's Messages API as an inbound protocol: POST /v1/messages is
 * translated to the canonical (OpenAI chat) request, served by any
 * provider, and its answer, stream and errors are translated back.
 */
#ifndef MF_PROTO_ANTHROPIC_H
#define MF_PROTO_ANTHROPIC_H

#include <jansson.h>

#include "core/core.h"

/* A Messages request to the canonical chat request (new reference); NULL
 * with a sentence in *err when it is not a valid Messages request. */
json_t *mf_anthropic_request(json_t *in, const char **err);
/* A canonical chat completion to an Anthropic message (new reference). */
json_t *mf_anthropic_response(json_t *completion, const mf_usage_t *usage);

/* Canonical chunks to Anthropic stream events. */
typedef struct mf_anthropic_stream_s {
    int started;
    int block;      /* index of the open block, -1 none */
    int block_type; /* 0 none, 1 text, 2 thinking, 3 tool_use */
    int nblocks;
    int tool_block[32]; /* canonical tool call index -> block, -1 */
    char finish[32];
    char id[128];
    char model[256];
} mf_anthropic_stream_t;

void mf_anthropic_stream_init(mf_anthropic_stream_t *s, mf_str_t model);
/* One canonical event (a chunk's JSON, or "[DONE]" with last): appends
 * the Anthropic events it makes to out. */
void mf_anthropic_stream_event(mf_anthropic_stream_t *s, mf_str_t data,
                               int last, const mf_usage_t *usage,
                               mf_buf_t *out);

#endif
