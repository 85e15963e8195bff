/*
 * Helpers shared by the translating provider plugins (gemini, bedrock):
 * the canonical (OpenAI) shapes they produce and the small conversions
 * they all need. Linked statically into each plugin.
 */
#ifndef MF_PROVIDER_UTIL_H
#define MF_PROVIDER_UTIL_H

#include <manifold/plugin.h>

/* A usage with nothing known (-1 everywhere). */
void pu_usage_init(mf_usage_t *u);
/* The canonical usage object (prompt_tokens_details, reasoning tokens). */
json_t *pu_usage_json(const mf_usage_t *u);

/* An integer option that YAML may hand over as text; dflt when absent. */
json_int_t pu_opt_int(json_t *obj, const char *key, json_int_t dflt);
/* obj[key] as an integer, 0 when absent. */
json_int_t pu_int_at(json_t *obj, const char *key);

/* Appends text to a growing string (*s, *len); aborts on OOM. */
void pu_append(char **s, size_t *len, const char *text);

/* Standard base64 of n bytes (malloc'd), or NULL. */
char *pu_base64(const void *data, size_t n);
/* base64url without padding (JWT), malloc'd. */
char *pu_base64url(const void *data, size_t n);

/* A data: URL's media type and base64 payload (views into url); MF_ERR
 * when url is not a base64 data URL. */
int pu_data_url(const char *url, mf_str_t *media_type, mf_str_t *data);

/* The OpenAI embeddings response for vectors (arrays of numbers) in
 * input order: float arrays, or base64 float32 when base64 is set. */
json_t *pu_embeddings_response(json_t *vectors, const char *model, int base64,
                               const mf_usage_t *u);
/* The inputs of an OpenAI embeddings request as strings (a string or a
 * list of strings); NULL when it has none or token arrays. */
json_t *pu_embedding_inputs(json_t *body);

/* A canonical chat.completion.chunk with one choice. */
json_t *pu_chunk(const char *id, const char *model, json_int_t created,
                 int index, json_t *delta, const char *finish);
/* The usage chunk that ends a stream (choices empty). */
json_t *pu_usage_chunk(const char *id, const char *model, json_int_t created,
                       const mf_usage_t *u);

/* Appends items to the last turn of `turns` when it has the same role
 * (the APIs want turns to alternate), else a new {role, field: items}.
 * Takes items; drops an empty list. */
void pu_push_turn(json_t *turns, const char *role, const char *field,
                  json_t *items);

/* A canonical tool call's arguments as an object ({} when they are not
 * one); new reference. */
json_t *pu_tool_args(json_t *call);

/* The canonical request's max_completion_tokens, else max_tokens, when an
 * integer; borrowed. */
json_t *pu_max_tokens(json_t *in);

/* The canonical `stop` as a non-empty list (new), or NULL. */
json_t *pu_stop_list(json_t *in);

/* Copies in[from] to out[to] for each {from, to} pair whose value is a
 * number (integer: an integer); the list ends with NULL. */
typedef struct {
    const char *from;
    const char *to;
    int integer;
} pu_field_t;
void pu_copy_fields(json_t *in, json_t *out, const pu_field_t *fields);

/* Anthropic `document` blocks travel in the canonical form as content
 * parts of their own, as the client sent them ({"type":"document",
 * "source":{...}, "title", ...}); each wire takes the kinds it has a
 * documented form for. */
enum {
    PU_DOC_PDF = 1 << 0,  /* a base64 source (application/pdf) */
    PU_DOC_TEXT = 1 << 1, /* a text source (text/plain) */
    PU_DOC_URL = 1 << 2   /* a url source */
};
/* The PU_DOC_ bit of a document part, 0 for another source (content,
 * file). */
unsigned pu_document_kind(json_t *part);
/* Whether a message of the canonical request carries a document part
 * whose kind is not in takes: 1, its source type in *source (borrowed,
 * "?" when absent), else 0. */
int pu_document_refused(json_t *body, unsigned takes, const char **source);

/* api->set_error with a formatted message; type and code static. */
void pu_error(const mf_host_api_t *api, mf_req_t *r, int status,
              const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* s equals the C string lit. */
int pu_str_is(mf_str_t s, const char *lit);

/* Percent-encodes s (n bytes) as one URL path segment into out (cap
 * bytes, NUL-terminated): every byte but A-Za-z0-9-._~ becomes %XX, so
 * '/', '?', '#', ':' and CR LF cannot change the upstream path or request.
 * Returns the length, or -1 (out untouched but for a NUL) when s is empty,
 * "." or "..", holds a control character, or does not fit. Every client
 * value a provider puts into an upstream URL goes through here. */
int pu_path_segment(const char *s, size_t n, char *out, size_t cap);

/* pu_path_segment for a model or deployment name; when it is refused,
 * fails the attempt with a 400 invalid_model naming provider. Returns the
 * length or -1. */
int pu_model_segment(const mf_host_api_t *api, mf_req_t *r,
                     const char *provider, const char *s, size_t n, char *out,
                     size_t cap);

/* Lower-cased hex of n bytes into out (2n + 1). */
void pu_hex(const unsigned char *in, size_t n, char *out);

#endif
