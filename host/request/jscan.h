/*
 * A one-pass JSON checker and indexer for request bodies: validates the
 * bytes as jansson would read them, counts what the limits bound and
 * indexes the top-level members, so that a request no stage reads is
 * forwarded without building a JSON tree.
 */
#ifndef MF_JSCAN_H
#define MF_JSCAN_H

#include "core/core.h"

#define MF_JSCAN_MAX_MEMBERS 32

typedef struct mf_jmember_s {
    mf_str_t key;   /* raw bytes between the quotes (no escapes) */
    mf_str_t value; /* the value's JSON text */
} mf_jmember_t;

typedef struct mf_jscan_s {
    size_t max_depth, max_values, max_messages; /* in: the limits */
    size_t nmembers;                            /* out: top-level members */
    mf_jmember_t members[MF_JSCAN_MAX_MEMBERS];
    int messages_ok; /* "messages" is an array whose elements are all
                        objects with a string "role" */
} mf_jscan_t;

/*
 * Checks that body is one JSON object that jansson (JSON_ALLOW_NUL) reads
 * and indexes its top-level members. MF_OK only for bodies it is sure of:
 * it returns MF_ERR for invalid JSON and also for what it does not take
 * (a limit passed, duplicate top-level keys, more than
 * MF_JSCAN_MAX_MEMBERS of them, escaped keys, numbers with an exponent or
 * of more than 18 digits); the caller then parses with jansson, which
 * judges. No allocation.
 */
int mf_jscan_body(mf_str_t body, mf_jscan_t *js);

/* The value of top-level member key, or MF_STR_NULL (data NULL). */
mf_str_t mf_jscan_get(const mf_jscan_t *js, mf_str_t key);

/* The value of member key (the last of that name) in obj, the JSON text
 * of an object mf_jscan_body accepted; MF_STR_NULL when absent or obj is
 * no object. */
mf_str_t mf_jscan_object_get(mf_str_t obj, mf_str_t key);

/* The length of the UTF-8 sequence at p (a byte >= 0x80), or 0 when
 * jansson would refuse it (overlong, surrogate, above U+10FFFF, cut). */
size_t mf_jscan_utf8_len(const unsigned char *p, const unsigned char *end);

/*
 * Edits of string contents of body, a JSON object mf_jscan_body accepted
 * (see api->edit_body_text in plugin.h: sorted, not overlapping, each in
 * the contents of one string value, not a key, splitting no escape,
 * surrogate pair or UTF-8 character; the texts valid UTF-8, escaped here
 * as JSON string contents). mf_jscan_edit_size checks them in one pass
 * over the quotes and backslashes up to the last edit and returns the
 * new text's length, or -1 when an edit breaks a rule.
 * mf_jscan_edit_apply writes the new text (that many bytes) to out and,
 * when js is not NULL, js's index shifted to it into js_out: the shape
 * is the same, so the new text needs no new scan.
 */
long mf_jscan_edit_size(mf_str_t body, const mf_body_edit_t *edits, size_t n);
void mf_jscan_edit_apply(mf_str_t body, const mf_jscan_t *js,
                         const mf_body_edit_t *edits, size_t n, char *out,
                         mf_jscan_t *js_out);

/* The bytes of a JSON string with no escapes (between the quotes) in
 * *out: MF_OK, else MF_ERR (not a string, or escaped). */
int mf_jscan_plain_string(mf_str_t value, mf_str_t *out);

#endif
