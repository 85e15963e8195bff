/*
 * A one-pass JSON checker and indexer for request bodies (see jscan.h):
 * recursive descent over the bytes, the rules of jansson's reader (UTF-8,
 * control characters, escapes and surrogate pairs, number syntax), no
 * allocation.
 */
#include "request/jscan.h"

#include <stdint.h>
#include <string.h>

/* Bounds the recursion whatever limits.max_json_depth says. */
#define JSCAN_MAX_DEPTH 256

typedef struct {
    const char *p, *end;
    mf_jscan_t *js;
    size_t values;   /* containers and separators, as body_scan counts */
    size_t messages; /* elements of the top-level "messages" array */
} scan_t;

static void
ws(scan_t *s)
{
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) {
        s->p++;
    }
}

static int
hex4(const char *p, unsigned *v)
{
    int i;

    *v = 0;
    for (i = 0; i < 4; i++) {
        char c = p[i];

        *v <<= 4;
        if (c >= '0' && c <= '9') {
            *v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            *v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            *v |= (unsigned)(c - 'A' + 10);
        } else {
            return MF_ERR;
        }
    }
    return MF_OK;
}

/* One UTF-8 sequence starting at p (a byte >= 0x80): its length, or 0
 * when jansson would refuse it (overlong, surrogate, above U+10FFFF). */
size_t
mf_jscan_utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], v;
    size_t n, i;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        v = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        v = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n) {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        v = (v << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && (v < 0x800 || (v >= 0xd800 && v <= 0xdfff))) ||
        (n == 4 && (v < 0x10000 || v > 0x10ffff))) {
        return 0;
    }
    return n;
}

#define SWAR_ONES 0x0101010101010101ULL
#define SWAR_HIGH 0x8080808080808080ULL
/* the high bit of each byte of x that is zero (and maybe of a 0x01 byte
 * after a zero one: only ever used to decide "none") */
#define SWAR_ZERO(x) (((x)-SWAR_ONES) & ~(x))

/* A string at s->p (its quote); *escaped says whether it had escapes. */
static int
string(scan_t *s, int *escaped)
{
    const unsigned char *p = (const unsigned char *)s->p + 1;
    const unsigned char *end = (const unsigned char *)s->end;

    *escaped = 0;
    while (p < end) {
        unsigned c;

        /* eight plain bytes at a time: printable ASCII, no quote, no
         * backslash (most of a prompt's text) */
        while (end - p >= 8) {
            uint64_t v;

            memcpy(&v, p, 8);
            if (((v | (v - SWAR_ONES * 0x20) |
                  SWAR_ZERO(v ^ (SWAR_ONES * '"')) |
                  SWAR_ZERO(v ^ (SWAR_ONES * '\\'))) &
                 SWAR_HIGH) != 0) {
                break;
            }
            p += 8;
        }
        if (p >= end) {
            break;
        }
        c = *p;
        if (c == '"') {
            s->p = (const char *)p + 1;
            return MF_OK;
        }
        if (c < 0x20) {
            return MF_ERR;
        }
        if (c >= 0x80) {
            size_t n = mf_jscan_utf8_len(p, end);

            if (n == 0) {
                return MF_ERR;
            }
            p += n;
            continue;
        }
        if (c != '\\') {
            p++;
            continue;
        }
        *escaped = 1;
        if (end - p < 2) {
            return MF_ERR;
        }
        if (p[1] != 'u') {
            if (strchr("\"\\/bfnrt", p[1]) == NULL || p[1] == '\0') {
                return MF_ERR;
            }
            p += 2;
            continue;
        }
        {
            unsigned v, lo;

            if (end - p < 6 || hex4((const char *)p + 2, &v) != MF_OK) {
                return MF_ERR;
            }
            p += 6;
            if (v >= 0xdc00 && v <= 0xdfff) {
                return MF_ERR; /* a low surrogate alone */
            }
            if (v >= 0xd800 && v <= 0xdbff) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                    hex4((const char *)p + 2, &lo) != MF_OK || lo < 0xdc00 ||
                    lo > 0xdfff) {
                    return MF_ERR;
                }
                p += 6;
            }
        }
    }
    return MF_ERR;
}

static int
number(scan_t *s)
{
    const char *p = s->p, *digits;

    if (*p == '-') {
        p++;
    }
    digits = p;
    while (p < s->end && *p >= '0' && *p <= '9') {
        p++;
    }
    if (p == digits || (*digits == '0' && p - digits > 1) || p - digits > 18) {
        return MF_ERR;
    }
    if (p < s->end && *p == '.') {
        const char *frac = ++p;

        while (p < s->end && *p >= '0' && *p <= '9') {
            p++;
        }
        if (p == frac || p - frac > 40) {
            return MF_ERR;
        }
    }
    if (p < s->end && (*p == 'e' || *p == 'E')) {
        return MF_ERR; /* strtod judges an exponent's range: jansson */
    }
    s->p = p;
    return MF_OK;
}

static int value(scan_t *s, size_t depth, int role);

/* Where a value sits, for what the scan checks on the way. */
enum { AT_ANY = 0, AT_MESSAGES, AT_MESSAGE, AT_ROLE };

static int
literal(scan_t *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) {
        return MF_ERR;
    }
    s->p += n;
    return MF_OK;
}

static int
array(scan_t *s, size_t depth, int role)
{
    int elem = role == AT_MESSAGES ? AT_MESSAGE : AT_ANY;
    size_t n = 0;

    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return MF_OK;
    }
    for (;;) {
        if (value(s, depth + 1, elem) != MF_OK) {
            return MF_ERR;
        }
        n++;
        if (role == AT_MESSAGES) {
            s->messages = n;
            if (n > s->js->max_messages) {
                return MF_ERR;
            }
        }
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            if (++s->values > s->js->max_values) {
                return MF_ERR;
            }
        } else if (s->p < s->end && *s->p == ']') {
            s->p++;
            return MF_OK;
        } else {
            return MF_ERR;
        }
    }
}

static int
object(scan_t *s, size_t depth, int role)
{
    mf_jscan_t *js = s->js;
    int top = depth == 1, has_role = 0;

    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        goto done;
    }
    for (;;) {
        const char *key;
        mf_str_t k;
        int escaped, sub = AT_ANY;

        ws(s);
        if (s->p >= s->end || *s->p != '"') {
            return MF_ERR;
        }
        key = s->p + 1;
        if (string(s, &escaped) != MF_OK || escaped) {
            return MF_ERR;
        }
        k = (mf_str_t){key, (size_t)(s->p - 1 - key)};
        ws(s);
        if (s->p >= s->end || *s->p != ':') {
            return MF_ERR;
        }
        s->p++;
        ws(s);
        if (top) {
            if (js->nmembers == MF_JSCAN_MAX_MEMBERS ||
                mf_jscan_get(js, k).data != NULL) {
                return MF_ERR; /* many or duplicate keys: jansson's */
            }
            js->members[js->nmembers].key = k;
            js->members[js->nmembers].value.data = s->p;
            if (mf_str_eq_cstr(k, "messages")) {
                sub = AT_MESSAGES;
            }
        } else if (role == AT_MESSAGE && mf_str_eq_cstr(k, "role")) {
            sub = AT_ROLE; /* the last "role" is the one jansson keeps */
            has_role = s->p < s->end && *s->p == '"';
        }
        if (value(s, depth, sub) != MF_OK) {
            return MF_ERR;
        }
        if (top) {
            mf_jmember_t *m = &js->members[js->nmembers++];

            m->value.len = (size_t)(s->p - m->value.data);
            if (sub == AT_MESSAGES) {
                js->messages_ok = *m->value.data == '[' && s->messages > 0 &&
                                  js->messages_ok != 0;
            }
        }
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            if (++s->values > js->max_values) {
                return MF_ERR;
            }
        } else if (s->p < s->end && *s->p == '}') {
            s->p++;
            break;
        } else {
            return MF_ERR;
        }
    }
done:
    if (role == AT_MESSAGE && !has_role) {
        js->messages_ok = 0;
    }
    return MF_OK;
}

/* A value at s->p, inside depth containers. */
static int
value(scan_t *s, size_t depth, int role)
{
    int escaped;

    ws(s);
    if (s->p >= s->end) {
        return MF_ERR;
    }
    if (role == AT_MESSAGE && *s->p != '{') {
        s->js->messages_ok = 0;
    }
    switch (*s->p) {
    case '{':
    case '[':
        if (depth + 1 > s->js->max_depth || depth + 1 > JSCAN_MAX_DEPTH ||
            ++s->values > s->js->max_values) {
            return MF_ERR;
        }
        return *s->p == '{' ? object(s, depth + 1, role)
                            : array(s, depth + 1, role);
    case '"':
        return string(s, &escaped);
    case 't':
        return literal(s, "true", 4);
    case 'f':
        return literal(s, "false", 5);
    case 'n':
        return literal(s, "null", 4);
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) {
            return number(s);
        }
        return MF_ERR;
    }
}

int
mf_jscan_body(mf_str_t body, mf_jscan_t *js)
{
    scan_t s = {body.data, body.data + body.len, js, 0, 0};

    js->nmembers = 0;
    js->messages_ok = -1; /* no "messages" seen yet */
    ws(&s);
    if (s.p >= s.end || *s.p != '{' || value(&s, 0, AT_ANY) != MF_OK) {
        return MF_ERR;
    }
    ws(&s);
    if (s.p != s.end) {
        return MF_ERR;
    }
    if (js->messages_ok < 0) {
        js->messages_ok = 0;
    }
    return MF_OK;
}

mf_str_t
mf_jscan_get(const mf_jscan_t *js, mf_str_t key)
{
    size_t i;

    for (i = 0; i < js->nmembers; i++) {
        if (mf_str_eq(js->members[i].key, key)) {
            return js->members[i].value;
        }
    }
    return MF_STR_NULL;
}

/* Skips a value of a text mf_jscan_body accepted. */
static void
skip(scan_t *s)
{
    int escaped;

    ws(s);
    if (s->p >= s->end) {
        return;
    }
    if (*s->p == '{' || *s->p == '[') {
        size_t depth = 0;

        do {
            if (*s->p == '"') {
                string(s, &escaped);
                continue;
            }
            if (*s->p == '{' || *s->p == '[') {
                depth++;
            } else if (*s->p == '}' || *s->p == ']') {
                depth--;
            }
            s->p++;
        } while (depth > 0 && s->p < s->end);
    } else if (*s->p == '"') {
        string(s, &escaped);
    } else {
        while (s->p < s->end && *s->p != ',' && *s->p != '}' && *s->p != ']' &&
               *s->p != ' ' && *s->p != '\n' && *s->p != '\r' &&
               *s->p != '\t') {
            s->p++;
        }
    }
}

mf_str_t
mf_jscan_object_get(mf_str_t obj, mf_str_t key)
{
    scan_t s = {obj.data, obj.data + obj.len, NULL, 0, 0};
    mf_str_t found = MF_STR_NULL;

    if (obj.len < 2 || *s.p != '{') {
        return found;
    }
    s.p++;
    for (;;) {
        mf_str_t k;
        const char *v;
        int escaped;

        ws(&s);
        if (s.p >= s.end || *s.p != '"') {
            return found;
        }
        k.data = s.p + 1;
        if (string(&s, &escaped) != MF_OK) {
            return found;
        }
        k.len = (size_t)(s.p - 1 - k.data);
        ws(&s);
        s.p++; /* ':' */
        ws(&s);
        v = s.p;
        skip(&s);
        if (!escaped && mf_str_eq(k, key)) {
            found = (mf_str_t){v, (size_t)(s.p - v)};
        }
        ws(&s);
        if (s.p >= s.end || *s.p != ',') {
            return found;
        }
        s.p++;
    }
}

int
mf_jscan_plain_string(mf_str_t value, mf_str_t *out)
{
    if (value.len < 2 || value.data[0] != '"' ||
        value.data[value.len - 1] != '"' ||
        memchr(value.data, '\\', value.len) != NULL) {
        return MF_ERR;
    }
    *out = (mf_str_t){value.data + 1, value.len - 2};
    return MF_OK;
}

/* ---- edits of string contents (api->edit_body_text) ---- */

/* The length of text escaped as JSON string contents; -1 when it is not
 * valid UTF-8. */
static long
escaped_len(mf_str_t t)
{
    const unsigned char *p = (const unsigned char *)t.data, *end = p + t.len;
    size_t n = 0;

    while (p < end) {
        unsigned c = *p;

        if (c >= 0x80) {
            size_t l = mf_jscan_utf8_len(p, end);

            if (l == 0) {
                return -1;
            }
            n += l;
            p += l;
            continue;
        }
        if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' ||
            c == '\b' || c == '\f') {
            n += 2;
        } else if (c < 0x20) {
            n += 6;
        } else {
            n++;
        }
        p++;
    }
    return (long)n;
}

static char *
escape_into(char *w, mf_str_t t)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < t.len; i++) {
        unsigned char c = (unsigned char)t.data[i];
        char e = 0;

        switch (c) {
        case '"':
            e = '"';
            break;
        case '\\':
            e = '\\';
            break;
        case '\n':
            e = 'n';
            break;
        case '\t':
            e = 't';
            break;
        case '\r':
            e = 'r';
            break;
        case '\b':
            e = 'b';
            break;
        case '\f':
            e = 'f';
            break;
        default:
            break;
        }
        if (e != 0) {
            *w++ = '\\';
            *w++ = e;
        } else if (c < 0x20) {
            memcpy(w, "\\u00", 4);
            w[4] = hex[c >> 4];
            w[5] = hex[c & 15];
            w += 6;
        } else {
            *w++ = (char)c;
        }
    }
    return w;
}

/* The bytes one escape at p takes (a surrogate pair is one: neither half
 * may be cut from the other). The text was checked: p is a backslash. */
static size_t
escape_len(const char *p)
{
    unsigned v = 0;
    int i;

    if (p[1] != 'u') {
        return 2;
    }
    for (i = 2; i < 6; i++) {
        char c = p[i];

        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v >= 0xd800 && v <= 0xdbff ? 12 : 6;
}

/*
 * Checks the edits against the text b: each inside the contents of one
 * string value, on character boundaries. b is a JSON object the host
 * checked (so every quote outside a string opens one).
 */
static int
edits_ok(mf_str_t b, const mf_body_edit_t *ed, size_t n)
{
    const char *s = b.data, *end = b.data + b.len;
    size_t k = 0, pos = 0;

    while (k < n) {
        const char *q = memchr(s + pos, '"', b.len - pos), *c, *e, *w;
        int esc = 0;

        if (q == NULL) {
            return MF_ERR;
        }
        /* the string's contents [c, e): its closing quote is the first
         * one that no backslash escapes */
        c = q + 1;
        for (e = c;;) {
            const char *qt = memchr(e, '"', (size_t)(end - e)), *bs;

            if (qt == NULL) {
                return MF_ERR;
            }
            bs = memchr(e, '\\', (size_t)(qt - e));
            if (bs == NULL) {
                e = qt;
                break;
            }
            esc = 1;
            e = bs + escape_len(bs);
        }
        pos = (size_t)(e - s) + 1;
        if (ed[k].offset > (size_t)(e - s)) {
            continue; /* no edit in this string */
        }
        /* a key is followed by ':': its contents are never edited */
        for (w = e + 1;
             w < end && (*w == ' ' || *w == '\t' || *w == '\n' || *w == '\r');
             w++) {
        }
        if (w < end && *w == ':') {
            return MF_ERR;
        }
        w = c; /* the escape walker: only moves forward */
        for (; k < n && ed[k].offset <= (size_t)(e - s); k++) {
            size_t x[2], i;

            x[0] = ed[k].offset;
            x[1] = ed[k].offset + ed[k].len;
            if (x[0] < (size_t)(c - s) || x[1] < x[0] ||
                x[1] > (size_t)(e - s) ||
                (k > 0 && x[0] < ed[k - 1].offset + ed[k - 1].len)) {
                return MF_ERR;
            }
            for (i = 0; i < 2; i++) {
                if (((unsigned char)s[x[i]] & 0xc0) == 0x80) {
                    return MF_ERR; /* inside a UTF-8 character */
                }
                while (esc && w < s + x[i]) {
                    w += *w == '\\' ? escape_len(w) : 1;
                }
                if (esc && w != s + x[i]) {
                    return MF_ERR; /* inside an escape */
                }
            }
        }
    }
    return MF_OK;
}

long
mf_jscan_edit_size(mf_str_t body, const mf_body_edit_t *ed, size_t n)
{
    long total = (long)body.len;
    size_t k;

    if (n > 0 && edits_ok(body, ed, n) != MF_OK) {
        return -1;
    }
    for (k = 0; k < n; k++) {
        long l = escaped_len(ed[k].text);

        if (l < 0) {
            return -1;
        }
        total += l - (long)ed[k].len;
    }
    return total;
}

void
mf_jscan_edit_apply(mf_str_t body, const mf_jscan_t *js,
                    const mf_body_edit_t *ed, size_t n, char *out,
                    mf_jscan_t *js_out)
{
    /* the index's positions in ascending order (each member's key, value
     * and value's end): each moves by what the edits before it grew */
    const char *old[3 * MF_JSCAN_MAX_MEMBERS], *now[3 * MF_JSCAN_MAX_MEMBERS];
    size_t k, i, np = 0, j = 0, from = 0;
    char *w = out;
    long d = 0;

    for (i = 0; js != NULL && i < js->nmembers; i++) {
        old[np++] = js->members[i].key.data;
        old[np++] = js->members[i].value.data;
        old[np++] = js->members[i].value.data + js->members[i].value.len;
    }
    for (k = 0; k < n; k++) {
        for (; j < np && old[j] <= body.data + ed[k].offset; j++) {
            now[j] = out + (old[j] - body.data) + d;
        }
        memcpy(w, body.data + from, ed[k].offset - from);
        w = escape_into(w + (ed[k].offset - from), ed[k].text);
        from = ed[k].offset + ed[k].len;
        d = (long)(w - out) - (long)from;
    }
    memcpy(w, body.data + from, body.len - from);
    for (; j < np; j++) {
        now[j] = out + (old[j] - body.data) + d;
    }
    if (js == NULL) {
        return;
    }
    *js_out = *js;
    for (i = 0; i < js_out->nmembers; i++) {
        mf_jmember_t *m = &js_out->members[i];

        m->key.data = now[3 * i];
        m->value.data = now[3 * i + 1];
        m->value.len = (size_t)(now[3 * i + 2] - now[3 * i + 1]);
    }
}
