/*
 * The mask stage's walk over the canonical body's raw JSON text and the
 * escaping of the texts it rewrites (mask_raw.h).
 */
#include "mask_raw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the raw body: the texts the model sees, rewritten in its bytes ----
 *
 * A walk over the canonical body's JSON text that finds the strings
 * mask_body visits (messages[].content as a string or its parts' text,
 * tool_calls[].function.arguments, function_call.arguments, input) by
 * their place, so that a body with something to mask is rewritten
 * without parsing it into a tree and serializing it again. A key with an
 * escape in it, a \u escape in a text, or anything unexpected leaves the
 * body to the parsed path (jr.bad).
 */
typedef struct {
    const char *base, *s, *e;
    int bad;
    mf_mask_raw_t *out;
} jr_t;

static void
jr_ws(jr_t *j)
{
    while (j->s < j->e &&
           (*j->s == ' ' || *j->s == '\t' || *j->s == '\n' || *j->s == '\r')) {
        j->s++;
    }
}

/* At a '"': the contents' span; *esc when a backslash is in it. */
static int
jr_str(jr_t *j, const char **p, size_t *len, int *esc)
{
    if (j->s >= j->e || *j->s != '"') {
        j->bad = 1;
        return -1;
    }
    *p = ++j->s;
    *esc = 0;
    {
        /* the common case, found at memchr's speed: no backslash before
         * the closing quote */
        const char *qt = memchr(j->s, '"', (size_t)(j->e - j->s));

        if (qt != NULL && memchr(j->s, '\\', (size_t)(qt - j->s)) == NULL) {
            j->s = qt + 1;
            *len = (size_t)(qt - *p);
            return 0;
        }
    }
    while (j->s < j->e && *j->s != '"') {
        if (*j->s == '\\') {
            *esc = 1;
            j->s++;
        }
        j->s++;
    }
    if (j->s >= j->e) {
        j->bad = 1;
        return -1;
    }
    *len = (size_t)(j->s - *p);
    j->s++;
    return 0;
}

/* Skips one value (the host checked the body's shape and depth). */
static void
jr_skip(jr_t *j)
{
    const char *p;
    size_t n;
    int esc, depth = 0;

    jr_ws(j);
    if (j->s >= j->e) {
        j->bad = 1;
        return;
    }
    if (*j->s != '{' && *j->s != '[') {
        if (*j->s == '"') {
            jr_str(j, &p, &n, &esc);
            return;
        }
        while (j->s < j->e && *j->s != ',' && *j->s != '}' && *j->s != ']' &&
               *j->s != ' ' && *j->s != '\t' && *j->s != '\n' &&
               *j->s != '\r') {
            j->s++;
        }
        return;
    }
    while (j->s < j->e && !j->bad) {
        char c = *j->s;

        if (c == '"') {
            jr_str(j, &p, &n, &esc);
            if (depth == 0) {
                return;
            }
            continue;
        }
        j->s++;
        if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            return;
        }
    }
    j->bad = 1;
}

/* A text: a string is kept, anything else skipped. */
static void
jr_text(jr_t *j)
{
    const char *p;
    size_t n;
    int esc;

    jr_ws(j);
    if (j->s >= j->e || *j->s != '"') {
        jr_skip(j);
        return;
    }
    if (jr_str(j, &p, &n, &esc) != 0) {
        return;
    }
    if (j->out->n + 2 > j->out->cap) {
        j->out->cap = j->out->cap ? j->out->cap * 2 : 16;
        j->out->span =
            realloc(j->out->span, j->out->cap * sizeof(*j->out->span));
        if (j->out->span == NULL) {
            abort();
        }
    }
    j->out->span[j->out->n++] = (size_t)(p - j->base);
    j->out->span[j->out->n++] = n;
}

typedef void (*jr_member_fn)(jr_t *j, const char *key, size_t klen);

static int
jr_is(const char *key, size_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(key, name, klen) == 0;
}

/* Each member of an object (anything else is skipped). */
static void
jr_object(jr_t *j, jr_member_fn fn)
{
    const char *key;
    size_t klen;
    int esc;

    jr_ws(j);
    if (j->s >= j->e || *j->s != '{') {
        jr_skip(j);
        return;
    }
    j->s++;
    jr_ws(j);
    if (j->s < j->e && *j->s == '}') {
        j->s++;
        return;
    }
    while (!j->bad) {
        jr_ws(j);
        if (jr_str(j, &key, &klen, &esc) != 0) {
            return;
        }
        if (esc) {
            j->bad = 1; /* "\u0063ontent" is "content": the parser's */
            return;
        }
        jr_ws(j);
        if (j->s >= j->e || *j->s != ':') {
            j->bad = 1;
            return;
        }
        j->s++;
        fn(j, key, klen);
        jr_ws(j);
        if (j->s < j->e && *j->s == ',') {
            j->s++;
            continue;
        }
        if (j->s < j->e && *j->s == '}') {
            j->s++;
            return;
        }
        j->bad = 1;
    }
}

/* Each element of an array (anything else is skipped). */
static void
jr_array(jr_t *j, void (*el)(jr_t *j))
{
    jr_ws(j);
    if (j->s >= j->e || *j->s != '[') {
        jr_skip(j);
        return;
    }
    j->s++;
    jr_ws(j);
    if (j->s < j->e && *j->s == ']') {
        j->s++;
        return;
    }
    while (!j->bad) {
        el(j);
        jr_ws(j);
        if (j->s < j->e && *j->s == ',') {
            j->s++;
            continue;
        }
        if (j->s < j->e && *j->s == ']') {
            j->s++;
            return;
        }
        j->bad = 1;
    }
}

static void
jr_m_part(jr_t *j, const char *key, size_t klen)
{
    if (jr_is(key, klen, "text")) {
        jr_text(j);
    } else {
        jr_skip(j);
    }
}

static void
jr_part(jr_t *j)
{
    jr_object(j, jr_m_part);
}

static void
jr_m_arguments(jr_t *j, const char *key, size_t klen)
{
    if (jr_is(key, klen, "arguments")) {
        jr_text(j);
    } else {
        jr_skip(j);
    }
}

static void
jr_m_tool_call(jr_t *j, const char *key, size_t klen)
{
    if (jr_is(key, klen, "function")) {
        jr_object(j, jr_m_arguments);
    } else {
        jr_skip(j);
    }
}

static void
jr_tool_call(jr_t *j)
{
    jr_object(j, jr_m_tool_call);
}

static void
jr_m_message(jr_t *j, const char *key, size_t klen)
{
    jr_ws(j);
    if (jr_is(key, klen, "content") && j->s < j->e && *j->s == '[') {
        jr_array(j, jr_part);
    } else if (jr_is(key, klen, "content")) {
        jr_text(j);
    } else if (jr_is(key, klen, "tool_calls")) {
        jr_array(j, jr_tool_call);
    } else if (jr_is(key, klen, "function_call")) {
        jr_object(j, jr_m_arguments);
    } else {
        jr_skip(j);
    }
}

static void
jr_message(jr_t *j)
{
    jr_object(j, jr_m_message);
}

static void
jr_m_top(jr_t *j, const char *key, size_t klen)
{
    jr_ws(j);
    if (jr_is(key, klen, "messages")) {
        jr_array(j, jr_message);
    } else if (jr_is(key, klen, "input") && j->s < j->e && *j->s == '[') {
        jr_array(j, jr_text);
    } else if (jr_is(key, klen, "input")) {
        jr_text(j);
    } else {
        jr_skip(j);
    }
}

/* A JSON string's contents with the escapes undone into out; -1 for a
 * \u escape (the parsed path decodes those). */
int
mf_mask_json_unescape(const char *s, size_t n, mf_mask_buf_t *out)
{
    size_t i;

    out->len = 0;
    for (i = 0; i < n; i++) {
        char c = s[i];

        if (c == '\\' && i + 1 < n) {
            switch (s[++i]) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case '"':
            case '\\':
            case '/':
                c = s[i];
                break;
            default:
                return -1;
            }
        }
        mf_mask_buf_add(out, &c, 1);
    }
    return 0;
}

/* Text as the contents of a JSON string. */
void
mf_mask_json_escape_add(mf_mask_buf_t *b, const char *s, size_t n)
{
    size_t i, from = 0;
    char e[8];

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c != '"' && c != '\\' && c >= 0x20) {
            continue;
        }
        mf_mask_buf_add(b, s + from, i - from);
        from = i + 1;
        switch (c) {
        case '"':
            mf_mask_buf_add(b, "\\\"", 2);
            break;
        case '\\':
            mf_mask_buf_add(b, "\\\\", 2);
            break;
        case '\n':
            mf_mask_buf_add(b, "\\n", 2);
            break;
        case '\t':
            mf_mask_buf_add(b, "\\t", 2);
            break;
        case '\r':
            mf_mask_buf_add(b, "\\r", 2);
            break;
        default:
            snprintf(e, sizeof(e), "\\u%04x", c);
            mf_mask_buf_add(b, e, 6);
        }
    }
    mf_mask_buf_add(b, s + from, n - from);
}

int
mf_mask_raw_texts(const char *s, size_t n, mf_mask_raw_t *out)
{
    jr_t j = {.base = s, .s = s, .e = s + n, .out = out};

    out->n = 0;
    jr_object(&j, jr_m_top);
    jr_ws(&j);
    return j.bad || j.s != j.e ? -1 : 0;
}
