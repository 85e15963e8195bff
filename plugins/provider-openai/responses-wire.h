/*
 * OpenAI's Responses API as an upstream wire (provider-openai, options
 * wire: responses or responses_models): the canonical chat request to a
 * POST /responses body, and the Response (whole, or its response.* event
 * stream) back to a chat completion and its chunks.
 */
#ifndef MF_RESPONSES_WIRE_H
#define MF_RESPONSES_WIRE_H

#include <jansson.h>
#include <manifold/plugin.h>

/* The translation state of one attempt (api->palloc memory): what the
 * stream's events need across each other. */
typedef struct {
    char id[160];
    char model[256];
    json_int_t created;
    int ntools;
    int tool_of_item[64]; /* output_index -> canonical tool call index */
    int finished;         /* the finish chunk went out */
    mf_usage_t usage;
} rw_stream_t;

void rw_stream_init(rw_stream_t *s);

/* The canonical chat request (in) as a Responses request for model; a new
 * reference. */
json_t *rw_request(json_t *in, mf_str_t model, int stream);

/* A Response (a JSON object) as a chat completion (new reference, NULL
 * when it is not one); *usage set from it. */
json_t *rw_completion(json_t *resp, mf_usage_t *usage);

/* One event of a Responses stream: the canonical chunks it makes (new
 * references, in order) in chunks[0] and chunks[1], each may be NULL;
 * returns MF_EVENT_* flags (MF_EVENT_DONE at response.completed or
 * .incomplete, the stream's end), or MF_ERR for an event that cannot be
 * read. *usage_set when s->usage is new. */
int rw_event(rw_stream_t *s, mf_str_t data, json_t **chunks, int *usage_set);

#endif
