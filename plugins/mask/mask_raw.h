/*
 * The mask stage's walk over the canonical body's JSON text: the spans of
 * the strings the model reads (messages[].content as a string or its
 * parts' text, tool_calls[].function.arguments, function_call.arguments,
 * input), found by their place without parsing the body into a tree, and
 * the escaping of a JSON string's contents both ways.
 */
#ifndef MF_MASK_RAW_H
#define MF_MASK_RAW_H

#include <stddef.h>

#include "mask_restore.h"

typedef struct {
    size_t *span; /* offset, length pairs of the texts' contents (malloc) */
    size_t n, cap;
} mf_mask_raw_t;

/* Finds the texts of the JSON object s[0, n) into out (its n reset, its
 * span array reused). -1 when the walk cannot vouch for the spans: a
 * key with an escape in it, a shape it does not expect, bytes after the
 * object; the caller parses the body then. Each span lies inside s and
 * between the quotes of a string. */
int mf_mask_raw_texts(const char *s, size_t n, mf_mask_raw_t *out);

/* A JSON string's contents with the escapes undone into out (its len
 * reset); -1 for a \u escape or an unknown one (out then holds a part). */
int mf_mask_json_unescape(const char *s, size_t n, mf_mask_buf_t *out);

/* Appends text as the contents of a JSON string. */
void mf_mask_json_escape_add(mf_mask_buf_t *b, const char *s, size_t n);

#endif
