/*
 * Shared parts of mf-mock: failure directives, JSON answers and a framed
 * streamer, used by the OpenAI/Anthropic core (mock.c) and the Gemini
 * (mock_gemini.c) and Bedrock (mock_bedrock.c) wire formats.
 */
#ifndef MF_MOCK_H
#define MF_MOCK_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stddef.h>

extern struct event_base *base;

typedef struct {
    int status;
    int retry_after;
    int delay;
    int chunk_delay;
    int chunks;
    int cut;
    int hang;
    int garbage;
    int halfjson; /* stream: an event whose JSON object is cut short */
    int cutfirst;
    int stall;
    int filter;
    int safety;        /* gemini: block the prompt; bedrock: guardrail */
    int safety_answer; /* gemini: block the answer */
    int exception;     /* bedrock: an in-stream exception after N events */
    int drip;          /* ms between single body bytes; 0 = off */
    int drip_after;    /* stream events sent whole before the drip */
    int big;           /* non-stream chat: a reply of this many bytes */
    int chunk_bytes;   /* stream with chunks=N: each chunk this many bytes */
    int split;         /* stream: text pieces of this many characters */
    int echo_args;     /* tool call arguments carry the user's text */
    int cache_write;   /* anthropic: cache_creation_input_tokens reported */
    char reply[512];
} directives_t;

void parse_directives(const char *text, directives_t *d);
/* Removes [[mock:...]] from text in place. */
void strip_directives(char *text);
void send_json(struct evhttp_request *req, int status, json_t *j,
               int retry_after);

/* A stream of prepared frames sent one per chunk_delay; cut, stall and
 * cutfirst applied. Takes the frames. content_type for the head. */
typedef struct frames_s frames_t;
frames_t *frames_new(void);
void frames_add(frames_t *f, const void *data, size_t len);
void frames_send(struct evhttp_request *req, frames_t *f, const directives_t *d,
                 const char *content_type);

/* drip=MS: a 200 whose body goes out one byte per chunk, MS apart, after
 * its first `whole` bytes at once. Takes body. */
void drip_send(struct evhttp_request *req, const char *content_type,
               struct evbuffer *body, size_t whole, int ms);

/* Gemini (Generative Language and Vertex AI, the OAuth token endpoint). */
int gemini_path(const char *uri);
void gemini_directives(json_t *body, directives_t *d);
void answer_gemini(struct evhttp_request *req, const char *uri, json_t *body,
                   const directives_t *d, const char *key);

/* Bedrock (Converse, ConverseStream, InvokeModel embeddings). */
int bedrock_path(const char *uri);
void bedrock_directives(json_t *body, directives_t *d);
void answer_bedrock(struct evhttp_request *req, const char *uri, json_t *body,
                    const directives_t *d, const char *auth);

/* OpenAI's Responses API (POST /v1/responses, whole and streamed). */
int responses_path(const char *uri);
void responses_directives(json_t *body, directives_t *d);
void answer_responses(struct evhttp_request *req, json_t *body,
                      const directives_t *d);

#endif
