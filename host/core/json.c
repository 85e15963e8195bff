/*
 * mf_json_dumps, mf_json_loadb and mf_json_pack: json_dumps, json_loadb
 * and json_pack in one pass, with the same results
 * (sdk/include/manifold/json.h). What they do not handle themselves
 * (flags, format characters, invalid UTF-8, any input jansson would
 * refuse) goes to jansson, so the result is always jansson's.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <manifold/json.h>

/* the containers deeper than this go to jansson (its own limit for
 * decoding is 2048; for encoding it detects cycles) */
#define JSON_MAX_DEPTH 1000

/* ---- UTF-8, as jansson checks it (utf8.c) ---- */

/* the length of the valid UTF-8 sequence at s (s[0] >= 0x80), or 0 */
static size_t
utf8_seq(const unsigned char *s, const unsigned char *end)
{
    unsigned char c = s[0];
    size_t n;
    int32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0xF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x7;
    } else {
        return 0;
    }
    if ((size_t)(end - s) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
        return 0;
    return n;
}

/* ---- the writer ---- */

typedef struct {
    char *p;
    size_t len, cap;
} wbuf_t;

static void
wb_grow(wbuf_t *b, size_t more)
{
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        abort();
    b->p = p;
    b->cap = cap;
}

static inline void
wb_put(wbuf_t *b, const char *s, size_t n)
{
    if (b->cap - b->len < n + 1)
        wb_grow(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static inline void
wb_ch(wbuf_t *b, char c)
{
    if (b->cap - b->len < 2)
        wb_grow(b, 1);
    b->p[b->len++] = c;
}

/* 1: the byte needs an escape or a UTF-8 check */
static const unsigned char special[256] = {
    ['\0'] = 1, [1] = 1,  [2] = 1,   [3] = 1,    [4] = 1,
    [5] = 1,    [6] = 1,  [7] = 1,   [8] = 1,    [9] = 1,
    [10] = 1,   [11] = 1, [12] = 1,  [13] = 1,   [14] = 1,
    [15] = 1,   [16] = 1, [17] = 1,  [18] = 1,   [19] = 1,
    [20] = 1,   [21] = 1, [22] = 1,  [23] = 1,   [24] = 1,
    [25] = 1,   [26] = 1, [27] = 1,  [28] = 1,   [29] = 1,
    [30] = 1,   [31] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xFF] = 1,
};

/* the string escaped as jansson's dump_string does without flags; 0, or
 * -1 when it is not valid UTF-8 */
static int
w_string(wbuf_t *b, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    const unsigned char *run = s;
    wb_ch(b, '"');
    while (s < end) {
        if (!special[*s]) {
            s++;
            continue;
        }
        if (*s >= 0x80) {
            size_t n = utf8_seq(s, end);
            if (n == 0)
                return -1;
            s += n;
            continue;
        }
        wb_put(b, (const char *)run, (size_t)(s - run));
        static const char hex[] = "0123456789ABCDEF";
        const char seq[6] = {'\\', 'u', '0', '0', hex[*s >> 4], hex[*s & 0xF]};
        const char *text = seq;
        size_t tl = 2;
        switch (*s) {
        case '\\':
            text = "\\\\";
            break;
        case '"':
            text = "\\\"";
            break;
        case '\b':
            text = "\\b";
            break;
        case '\f':
            text = "\\f";
            break;
        case '\n':
            text = "\\n";
            break;
        case '\r':
            text = "\\r";
            break;
        case '\t':
            text = "\\t";
            break;
        default:
            tl = 6;
        }
        wb_put(b, text, tl);
        s++;
        run = s;
    }
    wb_put(b, (const char *)run, (size_t)(s - run));
    wb_ch(b, '"');
    return 0;
}

/* 0, or -1: hand the value to jansson */
static int
w_value(wbuf_t *b, const json_t *v, int compact, int depth)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        wb_put(b, "null", 4);
        return 0;
    case JSON_TRUE:
        wb_put(b, "true", 4);
        return 0;
    case JSON_FALSE:
        wb_put(b, "false", 5);
        return 0;
    case JSON_INTEGER: {
        char num[24], *e = num + sizeof num, *q = e;
        json_int_t i = json_integer_value(v);
        unsigned long long u =
            i < 0 ? 0ULL - (unsigned long long)i : (unsigned long long)i;
        do {
            *--q = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (i < 0)
            *--q = '-';
        wb_put(b, q, (size_t)(e - q));
        return 0;
    }
    case JSON_REAL: {
        /* jansson's own text for a real (precision, the ".0" it adds,
         * the exponent it trims, the locale) */
        char num[64];
        size_t n = json_dumpb(v, num, sizeof num, JSON_ENCODE_ANY);
        if (n == 0 || n >= sizeof num)
            return -1;
        wb_put(b, num, n);
        return 0;
    }
    case JSON_STRING:
        return w_string(b, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (depth >= JSON_MAX_DEPTH)
            return -1;
        wb_ch(b, '[');
        for (size_t i = 0; i < n; i++) {
            if (i > 0) {
                if (compact)
                    wb_ch(b, ',');
                else
                    wb_put(b, ", ", 2);
            }
            if (w_value(b, json_array_get(v, i), compact, depth + 1) != 0)
                return -1;
        }
        wb_ch(b, ']');
        return 0;
    }
    case JSON_OBJECT: {
        if (depth >= JSON_MAX_DEPTH)
            return -1;
        wb_ch(b, '{');
        int first = 1;
        for (void *it = json_object_iter((json_t *)v); it != NULL;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first) {
                if (compact)
                    wb_ch(b, ',');
                else
                    wb_put(b, ", ", 2);
            }
            first = 0;
            if (w_string(b, json_object_iter_key(it),
                         json_object_iter_key_len(it)) != 0)
                return -1;
            if (compact)
                wb_ch(b, ':');
            else
                wb_put(b, ": ", 2);
            if (w_value(b, json_object_iter_value(it), compact, depth + 1) != 0)
                return -1;
        }
        wb_ch(b, '}');
        return 0;
    }
    }
    return -1;
}

char *
mf_json_dumps(const json_t *json, size_t flags)
{
    if (json == NULL)
        return NULL;
    if ((flags & ~(size_t)(JSON_COMPACT | JSON_ENCODE_ANY)) != 0)
        return json_dumps(json, flags);
    if (!(flags & JSON_ENCODE_ANY) && !json_is_object(json) &&
        !json_is_array(json))
        return NULL;
    wbuf_t b = {0};
    wb_grow(&b, 256);
    if (w_value(&b, json, (flags & JSON_COMPACT) != 0, 0) != 0) {
        free(b.p);
        return json_dumps(json, flags);
    }
    b.p[b.len] = '\0';
    return b.p;
}

size_t
mf_json_escape(char *dst, const char *str, size_t len)
{
    wbuf_t b = {dst, 0, 6 * len + 3}; /* never grown: the worst case fits */

    if (w_string(&b, str, len) != 0)
        return 0;
    b.p[b.len] = '\0';
    return b.len;
}

/* ---- the reader ---- */

typedef struct {
    const unsigned char *p, *end;
    size_t flags;
    int depth;
    char *scratch; /* decoded strings with escapes */
    size_t scap;
} rd_t;

static inline void
skip_ws(rd_t *r)
{
    while (r->p < r->end &&
           (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r'))
        r->p++;
}

static int
hex4(const unsigned char *p, int32_t *out)
{
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t
utf8_encode(int32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 + (cp >> 6));
        o[1] = (char)(0x80 + (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 + (cp >> 12));
        o[1] = (char)(0x80 + ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 + (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 + (cp >> 18));
    o[1] = (char)(0x80 + ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 + ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 + (cp & 0x3F));
    return 4;
}

/* the string at r->p (just past its opening quote): its text in *out
 * (into the input when it has no escape, else into the scratch buffer),
 * r->p past its closing quote; -1 when jansson would refuse it */
static int
r_string(rd_t *r, const char **out, size_t *len)
{
    const unsigned char *s = r->p, *start = s;
    while (s < r->end && !special[*s])
        s++;
    if (s < r->end && *s == '"') { /* no escape, ASCII: the common case */
        *out = (const char *)start;
        *len = (size_t)(s - start);
        r->p = s + 1;
        return 0;
    }
    size_t n = 0;
    int escaped = 0;
    for (;;) {
        if (s >= r->end)
            return -1;
        unsigned char c = *s;
        if (c == '"')
            break;
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t k = utf8_seq(s, r->end);
            if (k == 0)
                return -1;
            s += k;
            continue;
        }
        if (c != '\\') {
            s++;
            continue;
        }
        /* the first escape: decode from here into the scratch buffer */
        escaped = 1;
        break;
    }
    if (!escaped) {
        *out = (const char *)start;
        *len = (size_t)(s - start);
        r->p = s + 1;
        return 0;
    }
    /* the decoded text is never longer than the input */
    size_t need = (size_t)(r->end - start) + 1;
    if (r->scap < need) {
        char *p = realloc(r->scratch, need);
        if (p == NULL)
            abort();
        r->scratch = p;
        r->scap = need;
    }
    n = (size_t)(s - start);
    memcpy(r->scratch, start, n);
    while (s < r->end) {
        unsigned char c = *s;
        if (c == '"') {
            *out = r->scratch;
            *len = n;
            r->p = s + 1;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t k = utf8_seq(s, r->end);
            if (k == 0)
                return -1;
            memcpy(r->scratch + n, s, k);
            n += k;
            s += k;
            continue;
        }
        if (c != '\\') {
            r->scratch[n++] = (char)c;
            s++;
            continue;
        }
        if (r->end - s < 2)
            return -1;
        c = s[1];
        s += 2;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            r->scratch[n++] = (char)c;
            break;
        case 'b':
            r->scratch[n++] = '\b';
            break;
        case 'f':
            r->scratch[n++] = '\f';
            break;
        case 'n':
            r->scratch[n++] = '\n';
            break;
        case 'r':
            r->scratch[n++] = '\r';
            break;
        case 't':
            r->scratch[n++] = '\t';
            break;
        case 'u': {
            int32_t cp, lo;
            if (r->end - s < 4 || hex4(s, &cp) != 0)
                return -1;
            s += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (r->end - s < 6 || s[0] != '\\' || s[1] != 'u' ||
                    hex4(s + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                s += 6;
                cp = (((cp & 0x3FF) << 10) | (lo & 0x3FF)) + 0x10000;
            } else if (cp == 0 && !(r->flags & JSON_ALLOW_NUL)) {
                return -1;
            }
            n += utf8_encode(cp, r->scratch + n);
            break;
        }
        default:
            return -1;
        }
    }
    return -1;
}

static json_t *r_value(rd_t *r);

static json_t *
r_number(rd_t *r)
{
    const unsigned char *s = r->p, *start = s;
    int neg = 0, real = 0;
    if (s < r->end && *s == '-') {
        neg = 1;
        s++;
    }
    if (s >= r->end)
        return NULL;
    if (*s == '0') {
        s++;
        if (s < r->end && *s >= '0' && *s <= '9')
            return NULL;
    } else if (*s >= '1' && *s <= '9') {
        while (s < r->end && *s >= '0' && *s <= '9')
            s++;
    } else {
        return NULL;
    }
    const unsigned char *int_end = s;
    if (s < r->end && *s == '.') {
        s++;
        if (s >= r->end || *s < '0' || *s > '9')
            return NULL;
        while (s < r->end && *s >= '0' && *s <= '9')
            s++;
        real = 1;
    }
    if (s < r->end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < r->end && (*s == '+' || *s == '-'))
            s++;
        if (s >= r->end || *s < '0' || *s > '9')
            return NULL;
        while (s < r->end && *s >= '0' && *s <= '9')
            s++;
        real = 1;
    }
    r->p = s;
    size_t len = (size_t)(s - start);
    if (!real) {
        size_t digits = (size_t)(int_end - start) - (size_t)neg;
        if (digits <= 18) {
            long long v = 0;
            for (const unsigned char *d = start + neg; d < int_end; d++)
                v = v * 10 + (*d - '0');
            return json_integer(neg ? -v : v);
        }
    }
    char tmp[64];
    char *text = len < sizeof tmp ? tmp : malloc(len + 1);
    if (text == NULL)
        abort();
    memcpy(text, start, len);
    text[len] = '\0';
    char *end;
    json_t *v = NULL;
    errno = 0;
    if (!real) {
        long long i = strtoll(text, &end, 10);
        if (errno != ERANGE && end == text + len)
            v = json_integer(i);
    } else {
        double d = strtod(text, &end);
        /* an overflow is jansson's error; a text strtod reads otherwise
         * (a locale's decimal comma) goes to jansson too */
        if (end == text + len &&
            !(errno == ERANGE && (d > 1e308 || d < -1e308)))
            v = json_real(d);
    }
    if (text != tmp)
        free(text);
    return v;
}

static json_t *
r_object(rd_t *r)
{
    json_t *obj = json_object();
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return obj;
    }
    for (;;) {
        const char *key;
        size_t klen;
        if (r->p >= r->end || *r->p != '"')
            goto fail;
        r->p++;
        if (r_string(r, &key, &klen) != 0)
            goto fail;
        /* jansson refuses a NUL in a key; copy the key off the scratch
         * buffer the value may reuse */
        char kbuf[128], *k = kbuf;
        if (memchr(key, '\0', klen) != NULL)
            goto fail;
        if (key == r->scratch) {
            if (klen >= sizeof kbuf && (k = malloc(klen + 1)) == NULL)
                abort();
            memcpy(k, key, klen);
            key = k;
        }
        skip_ws(r);
        if (r->p >= r->end || *r->p != ':') {
            if (k != kbuf)
                free(k);
            goto fail;
        }
        r->p++;
        json_t *v = r_value(r);
        if (v == NULL) {
            if (k != kbuf)
                free(k);
            goto fail;
        }
        json_object_setn_new_nocheck(obj, key, klen, v);
        if (k != kbuf)
            free(k);
        skip_ws(r);
        if (r->p >= r->end)
            goto fail;
        if (*r->p == ',') {
            r->p++;
            skip_ws(r);
            continue;
        }
        if (*r->p == '}') {
            r->p++;
            return obj;
        }
        goto fail;
    }
fail:
    json_decref(obj);
    return NULL;
}

static json_t *
r_array(rd_t *r)
{
    json_t *arr = json_array();
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return arr;
    }
    for (;;) {
        json_t *v = r_value(r);
        if (v == NULL)
            goto fail;
        json_array_append_new(arr, v);
        skip_ws(r);
        if (r->p >= r->end)
            goto fail;
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        if (*r->p == ']') {
            r->p++;
            return arr;
        }
        goto fail;
    }
fail:
    json_decref(arr);
    return NULL;
}

static int
literal(rd_t *r, const char *word, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return -1;
    r->p += n;
    /* jansson reads the whole word: "truex" is not "true" */
    if (r->p < r->end &&
        ((*r->p >= 'a' && *r->p <= 'z') || (*r->p >= 'A' && *r->p <= 'Z')))
        return -1;
    return 0;
}

static json_t *
r_value(rd_t *r)
{
    skip_ws(r);
    if (r->p >= r->end)
        return NULL;
    json_t *v = NULL;
    switch (*r->p) {
    case '{':
    case '[':
        if (++r->depth > JSON_MAX_DEPTH)
            return NULL;
        r->p++;
        v = r->p[-1] == '{' ? r_object(r) : r_array(r);
        r->depth--;
        return v;
    case '"': {
        const char *s;
        size_t n;
        r->p++;
        if (r_string(r, &s, &n) != 0)
            return NULL;
        return json_stringn_nocheck(s, n);
    }
    case 't':
        return literal(r, "true", 4) == 0 ? json_true() : NULL;
    case 'f':
        return literal(r, "false", 5) == 0 ? json_false() : NULL;
    case 'n':
        return literal(r, "null", 4) == 0 ? json_null() : NULL;
    default:
        return r_number(r);
    }
}

json_t *
mf_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error)
{
    if (buf == NULL ||
        (flags & ~(size_t)(JSON_ALLOW_NUL | JSON_DECODE_ANY)) != 0)
        return json_loadb(buf, len, flags, error);
    rd_t r = {.p = (const unsigned char *)buf,
              .end = (const unsigned char *)buf + len,
              .flags = flags};
    skip_ws(&r);
    json_t *v = NULL;
    if (r.p < r.end &&
        ((flags & JSON_DECODE_ANY) || *r.p == '{' || *r.p == '['))
        v = r_value(&r);
    free(r.scratch);
    if (v != NULL) {
        skip_ws(&r);
        if (r.p != r.end) {
            json_decref(v);
            v = NULL;
        }
    }
    if (v == NULL) /* jansson's own error (or value) */
        return json_loadb(buf, len, flags, error);
    if (error != NULL) {
        error->text[0] = '\0';
        error->line = -1;
        error->column = -1;
        error->position = 0;
        snprintf(error->source, sizeof error->source, "%s", "<buffer>");
    }
    return v;
}

/* ---- json_pack ---- */

/* the format characters mf_json_pack builds itself; any other ('+', '*',
 * a mistake) goes to jansson */
static int
pack_supported(const char *fmt)
{
    int objects = 0;
    for (const char *f = fmt; *f; f++) {
        if (strchr("{}[]sbiInfoO?#% \t\n,:", *f) == NULL)
            return 0;
        if (*f == 'o' && ++objects > 32)
            return 0;
    }
    return 1;
}

typedef struct {
    const char *f;
    va_list *ap;
    json_t *stolen[32]; /* the 'o' values, released once the pack is whole */
    int nstolen;
    int depth;
} pk_t;

static char
pk_peek(pk_t *p)
{
    while (*p->f == ' ' || *p->f == '\t' || *p->f == '\n' || *p->f == ',' ||
           *p->f == ':')
        p->f++;
    return *p->f;
}

static char
pk_next(pk_t *p)
{
    char c = pk_peek(p);
    if (c != '\0')
        p->f++;
    return c;
}

static int
utf8_ok(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    while (s < end) {
        if (*s < 0x80) {
            s++;
            continue;
        }
        size_t n = utf8_seq(s, end);
        if (n == 0)
            return 0;
        s += n;
    }
    return 1;
}

/* a string's arguments, after its 's' (and '?' when optional); 0, or -1
 * for jansson; *str NULL for an optional one not given */
static int
pk_string(pk_t *p, int optional, const char **str, size_t *len)
{
    char t = pk_peek(p);
    *str = va_arg(*p->ap, const char *);
    if (t == '#' || t == '%') {
        if (optional || *str == NULL)
            return -1;
        p->f++;
        if (t == '#') {
            int n = va_arg(*p->ap, int);
            if (n < 0)
                return -1;
            *len = (size_t)n;
        } else {
            *len = va_arg(*p->ap, size_t);
        }
    } else {
        if (*str == NULL)
            return optional ? 0 : -1;
        *len = strlen(*str);
    }
    return utf8_ok(*str, *len) ? 0 : -1;
}

static json_t *pk_value(pk_t *p);

static json_t *
pk_object(pk_t *p)
{
    json_t *obj = json_object();
    for (;;) {
        char c = pk_next(p);
        if (c == '}')
            return obj;
        const char *key;
        size_t klen;
        if (c != 's' || pk_peek(p) == '?' ||
            pk_string(p, 0, &key, &klen) != 0 ||
            memchr(key, '\0', klen) != NULL) {
            json_decref(obj);
            return NULL;
        }
        json_t *v = pk_value(p);
        if (v == NULL) {
            json_decref(obj);
            return NULL;
        }
        json_object_setn_new_nocheck(obj, key, klen, v);
    }
}

static json_t *
pk_array(pk_t *p)
{
    json_t *arr = json_array();
    for (;;) {
        if (pk_peek(p) == ']') {
            p->f++;
            return arr;
        }
        json_t *v = pk_value(p);
        if (v == NULL) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, v);
    }
}

static json_t *
pk_value(pk_t *p)
{
    char c = pk_next(p);
    switch (c) {
    case '{':
    case '[': {
        json_t *v;
        if (++p->depth > JSON_MAX_DEPTH)
            return NULL;
        v = c == '{' ? pk_object(p) : pk_array(p);
        p->depth--;
        return v;
    }
    case 's': {
        int optional = pk_peek(p) == '?';
        const char *s;
        size_t n;
        if (optional)
            p->f++;
        if (pk_string(p, optional, &s, &n) != 0)
            return NULL;
        return s != NULL ? json_stringn_nocheck(s, n) : json_null();
    }
    case 'n':
        return json_null();
    case 'b':
        return va_arg(*p->ap, int) ? json_true() : json_false();
    case 'i':
        return json_integer(va_arg(*p->ap, int));
    case 'I':
        return json_integer(va_arg(*p->ap, json_int_t));
    case 'f':
        /* json_real refuses what is not finite, as jansson's pack does */
        return json_real(va_arg(*p->ap, double));
    case 'o':
    case 'O': {
        int optional = pk_peek(p) == '?';
        if (optional)
            p->f++;
        json_t *v = va_arg(*p->ap, json_t *);
        if (v == NULL)
            return optional ? json_null() : NULL;
        if (c == 'o')
            p->stolen[p->nstolen++] = v;
        /* 'o' too holds a reference of its own until the whole pack
         * succeeds: a failed one is handed to jansson untouched */
        return json_incref(v);
    }
    default:
        return NULL;
    }
}

json_t *
mf_json_pack(const char *fmt, ...)
{
    va_list ap, again;
    json_t *v = NULL;
    va_start(ap, fmt);
    va_copy(again, ap);
    if (fmt != NULL && pack_supported(fmt)) {
        pk_t p = {.f = fmt, .ap = &ap};
        v = pk_value(&p);
        if (v != NULL && pk_peek(&p) != '\0') {
            json_decref(v);
            v = NULL;
        }
        if (v != NULL) {
            for (int i = 0; i < p.nstolen; i++)
                json_decref(p.stolen[i]);
        }
    }
    if (v == NULL) /* jansson's own result, and its errors */
        v = json_vpack_ex(NULL, 0, fmt, again);
    va_end(again);
    va_end(ap);
    return v;
}
