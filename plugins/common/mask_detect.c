/*
 * Built-in detectors of the mask stage (mask_detect.h): hand-written
 * scanners with the checks that keep near misses out (Luhn for cards,
 * the ISO 7064 MOD 11-2 check digit and a birth date for CN resident
 * IDs, the SSA's invalid ranges for SSNs, inet_pton for IPv6).
 */
#include "mask_detect.h"

#include <arpa/inet.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *const mf_mask_kind_names[MF_MASK__BUILTIN] = {
    "email", "phone", "cn_id", "ssn", "card", "ip", "api_key", "secret"};
const char *const mf_mask_kind_types[MF_MASK__BUILTIN] = {
    "EMAIL", "PHONE", "CN_ID", "SSN", "CARD", "IP", "API_KEY", "SECRET"};

/* byte classes, one table lookup per test */
enum {
    C_DIG = 1,
    C_UP = 2,
    C_LOW = 4,
    C_HEX = 8,    /* 0-9 a-f A-F */
    C_TOK = 16,   /* alnum _ - */
    C_SEC = 32,   /* alnum _ - + / = */
    C_LOCAL = 64, /* an e-mail's local part: alnum . _ % + - */
    C_IP6 = 128   /* hex : . */
};

static unsigned char ctab[256];

__attribute__((constructor)) static void
cls_init(void)
{
    int c;

    for (c = 0; c < 256; c++) {
        int dig = c >= '0' && c <= '9', up = c >= 'A' && c <= 'Z',
            low = c >= 'a' && c <= 'z', alnum = dig || up || low;
        int hex = dig || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');

        ctab[c] = (unsigned char)((dig ? C_DIG : 0) | (up ? C_UP : 0) |
                                  (low ? C_LOW : 0) | (hex ? C_HEX : 0) |
                                  (alnum || c == '_' || c == '-' ? C_TOK : 0) |
                                  (alnum || c == '_' || c == '-' || c == '+' ||
                                           c == '/' || c == '='
                                       ? C_SEC
                                       : 0) |
                                  (alnum || c == '.' || c == '_' || c == '%' ||
                                           c == '+' || c == '-'
                                       ? C_LOCAL
                                       : 0) |
                                  (hex || c == ':' || c == '.' ? C_IP6 : 0));
    }
}

#define CLS(c) ctab[(unsigned char)(c)]
#define DIG(c) (CLS(c) & C_DIG)
#define UP(c) (CLS(c) & C_UP)
#define LOW(c) (CLS(c) & C_LOW)
#define ALPHA(c) (CLS(c) & (C_UP | C_LOW))
#define ALNUM(c) (CLS(c) & (C_UP | C_LOW | C_DIG))
#define HEX(c) (CLS(c) & C_HEX)

void
mf_mask_matches_add(mf_mask_matches_t *m, size_t start, size_t len,
                    unsigned rule)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        mf_mask_match_t *v = realloc(m->v, cap * sizeof(*v));

        if (v == NULL) {
            abort();
        }
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n].start = start;
    m->v[m->n].len = len;
    m->v[m->n].rule = rule;
    m->n++;
}

void
mf_mask_matches_free(mf_mask_matches_t *m)
{
    free(m->v);
    m->v = NULL;
    m->n = m->cap = 0;
}

static int
match_cmp(const void *a, const void *b)
{
    const mf_mask_match_t *x = a, *y = b;

    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }
    if (x->len != y->len) {
        return x->len > y->len ? -1 : 1;
    }
    return x->rule < y->rule ? -1 : x->rule > y->rule;
}

void
mf_mask_matches_resolve(mf_mask_matches_t *m)
{
    size_t i, k = 0, end = 0;

    if (m->n == 0) {
        return;
    }
    if (m->n <= 16) {
        /* a text's few matches: sorted in place, no qsort call */
        for (i = 1; i < m->n; i++) {
            mf_mask_match_t x = m->v[i];

            for (k = i; k > 0 && match_cmp(&m->v[k - 1], &x) > 0; k--) {
                m->v[k] = m->v[k - 1];
            }
            m->v[k] = x;
        }
        k = 0;
    } else {
        qsort(m->v, m->n, sizeof(*m->v), match_cmp);
    }
    for (i = 0; i < m->n; i++) {
        if (m->v[i].len == 0 || (k > 0 && m->v[i].start < end)) {
            continue;
        }
        m->v[k++] = m->v[i];
        end = m->v[i].start + m->v[i].len;
    }
    m->n = k;
}

int
mf_mask_luhn(const char *digits, size_t n)
{
    int sum = 0, dbl = 0;
    size_t i;

    for (i = n; i-- > 0;) {
        int d = digits[i] - '0';

        if (dbl) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }
        sum += d;
        dbl = !dbl;
    }
    return sum % 10 == 0;
}

int
mf_mask_cn_id_valid(const char *s)
{
    static const int w[17] = {7, 9, 10, 5,  8, 4, 2, 1, 6,
                              3, 7, 9,  10, 5, 8, 4, 2};
    static const char check[] = "10X98765432";
    int sum = 0, i, year, month, day;
    char last;

    for (i = 0; i < 17; i++) {
        if (!DIG(s[i])) {
            return 0;
        }
        sum += (s[i] - '0') * w[i];
    }
    last = s[17] == 'x' ? 'X' : s[17];
    if (check[sum % 11] != last) {
        return 0;
    }
    year = (s[6] - '0') * 1000 + (s[7] - '0') * 100 + (s[8] - '0') * 10 +
           (s[9] - '0');
    month = (s[10] - '0') * 10 + (s[11] - '0');
    day = (s[12] - '0') * 10 + (s[13] - '0');
    return year >= 1800 && year <= 2100 && month >= 1 && month <= 12 &&
           day >= 1 && day <= 31;
}

/* e-mail: local@domain.tld, the TLD two letters or more, around the '@'
 * at `at`; returns where the next '@' may be looked for */
static const char *
email_at(const char *s, size_t n, const char *at, mf_mask_matches_t *out)
{
    const char *l = at, *r = at + 1, *end = s + n, *dot = NULL, *p;
    int ok = 1;

    while (l > s && (CLS(l[-1]) & C_LOCAL)) {
        l--;
    }
    while (l < at && *l == '.') {
        l++;
    }
    while (r < end && (ALNUM(*r) || *r == '.' || *r == '-')) {
        r++;
    }
    while (r > at + 1 && (r[-1] == '.' || r[-1] == '-')) {
        r--;
    }
    if (l == at || r <= at + 1) {
        return at + 1;
    }
    for (p = at + 1; p < r; p++) {
        if (*p == '.') {
            if (p == at + 1 || p[-1] == '.') {
                ok = 0;
            }
            dot = p;
        }
    }
    if (ok && dot != NULL && r - dot - 1 >= 2) {
        for (p = dot + 1; p < r; p++) {
            ok &= ALPHA(*p) != 0;
        }
    } else {
        ok = 0;
    }
    if (!ok) {
        return at + 1;
    }
    mf_mask_matches_add(out, (size_t)(l - s), (size_t)(r - l), MF_MASK_EMAIL);
    return r;
}

/* a run of digits with single separators between groups (a space or a
 * dash, and a dot when `dot`), from s[i]; returns its end (after the
 * last digit) and the digits */
static size_t
digit_run(const char *s, size_t n, size_t i, int dot, char *digits, size_t cap,
          size_t *ndigits)
{
    size_t end = i, k = 0;

    while (i < n) {
        char c = s[i];

        if (DIG(c)) {
            if (k < cap) {
                digits[k] = c;
            }
            k++;
            i++;
            end = i;
        } else if ((c == ' ' || c == '-' || (dot && c == '.')) && k > 0 &&
                   i + 1 < n && DIG(s[i + 1])) {
            i++;
        } else {
            break;
        }
    }
    *ndigits = k;
    return end;
}

/* phone: '+' and a country code, 8 to 15 digits in groups; a CN mobile
 * 1[3-9]xxxxxxxxx (or 3-4-4 groups) */
static void
detect_phone(const char *s, size_t n, size_t from, size_t to,
             mf_mask_matches_t *out)
{
    char d[32];
    size_t i = from, end, k;

    while (i < to) {
        if (s[i] == '+' && i + 1 < n && DIG(s[i + 1]) && s[i + 1] != '0' &&
            (i == 0 || !ALNUM(s[i - 1]))) {
            end = digit_run(s, n, i + 1, 1, d, sizeof(d), &k);
            if (k >= 8 && k <= 15 && (end == n || !ALNUM(s[end]))) {
                mf_mask_matches_add(out, i, end - i, MF_MASK_PHONE);
                i = end;
                continue;
            }
            i = end > i ? end : i + 1;
            continue;
        }
        if (s[i] == '1' && (i == 0 || (!ALNUM(s[i - 1]) && s[i - 1] != '+')) &&
            i + 1 < n && s[i + 1] >= '3' && s[i + 1] <= '9') {
            end = digit_run(s, n, i, 0, d, sizeof(d), &k);
            if (k == 11 && (end == n || !ALNUM(s[end])) &&
                (end - i == 11 || (end - i == 13 && s[i + 3] == s[i + 8] &&
                                   (s[i + 3] == ' ' || s[i + 3] == '-')))) {
                mf_mask_matches_add(out, i, end - i, MF_MASK_PHONE);
                i = end;
                continue;
            }
        }
        if (DIG(s[i])) {
            while (i < n && DIG(s[i])) {
                i++;
            }
            continue;
        }
        i++;
    }
}

/* CN resident ID: 17 digits and a check digit (or X) */
static void
detect_cn_id(const char *s, size_t n, size_t from, size_t to,
             mf_mask_matches_t *out)
{
    size_t i = from, j;

    while (i < to && i + 18 <= n) {
        if (!DIG(s[i]) || (i > 0 && ALNUM(s[i - 1]))) {
            i++;
            continue;
        }
        for (j = i; j < n && DIG(s[j]); j++) {
        }
        if (j - i == 17 && j < n && (s[j] == 'X' || s[j] == 'x') &&
            (j + 1 == n || !ALNUM(s[j + 1])) && mf_mask_cn_id_valid(s + i)) {
            mf_mask_matches_add(out, i, 18, MF_MASK_CN_ID);
        } else if (j - i == 18 && (j == n || !ALPHA(s[j])) &&
                   mf_mask_cn_id_valid(s + i)) {
            mf_mask_matches_add(out, i, 18, MF_MASK_CN_ID);
        }
        i = j;
    }
}

/* US SSN: AAA-GG-SSSS; not area 000, 666 or 9xx, group 00, serial 0000 */
static void
detect_ssn(const char *s, size_t n, size_t from, size_t to,
           mf_mask_matches_t *out)
{
    size_t i;

    for (i = from; i < to && i + 11 <= n; i++) {
        const char *p = s + i;

        if (!(DIG(p[0]) && DIG(p[1]) && DIG(p[2]) && p[3] == '-' && DIG(p[4]) &&
              DIG(p[5]) && p[6] == '-' && DIG(p[7]) && DIG(p[8]) && DIG(p[9]) &&
              DIG(p[10]))) {
            continue;
        }
        if ((i > 0 && (ALNUM(s[i - 1]) || s[i - 1] == '-')) ||
            (i + 11 < n &&
             (ALNUM(p[11]) || (p[11] == '-' && i + 12 < n && DIG(p[12]))))) {
            continue;
        }
        if (memcmp(p, "000", 3) == 0 || memcmp(p, "666", 3) == 0 ||
            p[0] == '9' || memcmp(p + 4, "00", 2) == 0 ||
            memcmp(p + 7, "0000", 4) == 0) {
            continue;
        }
        mf_mask_matches_add(out, i, 11, MF_MASK_SSN);
        i += 10;
    }
}

/* bank card: 13 to 19 digits (groups split by single spaces or dashes)
 * that pass the Luhn check */
static void
detect_card(const char *s, size_t n, size_t from, size_t to,
            mf_mask_matches_t *out)
{
    char d[32];
    size_t i = from, end, k;

    while (i < to) {
        if (!DIG(s[i])) {
            i++;
            continue;
        }
        end = digit_run(s, n, i, 0, d, sizeof(d), &k);
        if ((i == 0 || !ALNUM(s[i - 1])) && (end == n || !ALNUM(s[end])) &&
            k >= 13 && k <= 19 && mf_mask_luhn(d, k)) {
            mf_mask_matches_add(out, i, end - i, MF_MASK_CARD);
        }
        i = end;
    }
}

/* one IPv4 octet: 0..255, no leading zero */
static size_t
octet(const char *s, size_t n, size_t i)
{
    size_t j = i;
    int v = 0;

    while (j < n && DIG(s[j]) && j - i < 3) {
        v = v * 10 + (s[j] - '0');
        j++;
    }
    if (j == i || v > 255 || (j - i > 1 && s[i] == '0') ||
        (j < n && DIG(s[j]))) {
        return 0;
    }
    return j - i;
}

static void
detect_ip(const char *s, size_t n, size_t from, size_t to, int v6,
          mf_mask_matches_t *out)
{
    size_t i = from;

    while (i < to) {
        size_t j = i, k, part;
        char buf[64];

        /* IPv4 */
        if (DIG(s[i]) && (i == 0 || (!ALNUM(s[i - 1]) && s[i - 1] != '.'))) {
            for (k = 0; k < 4; k++) {
                part = octet(s, n, j);
                if (part == 0) {
                    break;
                }
                j += part;
                if (k < 3) {
                    if (j >= n || s[j] != '.') {
                        break;
                    }
                    j++;
                }
            }
            if (k == 4 &&
                (j == n || (!ALNUM(s[j]) &&
                            !(s[j] == '.' && j + 1 < n && DIG(s[j + 1]))))) {
                mf_mask_matches_add(out, i, j - i, MF_MASK_IP);
                i = j;
                continue;
            }
        }
        /* IPv6: a token of hex digits, ':' and '.' with two ':' or more */
        if (v6 && (HEX(s[i]) || s[i] == ':') &&
            (i == 0 ||
             (!ALNUM(s[i - 1]) && s[i - 1] != ':' && s[i - 1] != '.'))) {
            size_t colons = 0, hex = 0;

            for (j = i; j < n && (CLS(s[j]) & C_IP6); j++) {
                colons += s[j] == ':';
                hex += HEX(s[j]) != 0;
            }
            while (j > i && s[j - 1] == '.') {
                j--;
            }
            if (colons >= 2 && hex > 0 && j - i < sizeof(buf) &&
                (j == n || !ALNUM(s[j]))) {
                struct in6_addr a;

                memcpy(buf, s + i, j - i);
                buf[j - i] = '\0';
                if (inet_pton(AF_INET6, buf, &a) == 1) {
                    mf_mask_matches_add(out, i, j - i, MF_MASK_IP);
                    i = j;
                    continue;
                }
            }
        }
        if (ALNUM(s[i])) {
            while (i < n && (CLS(s[i]) & (C_UP | C_LOW | C_IP6))) {
                i++;
            }
            continue;
        }
        i++;
    }
}

#define TOKCH(c) (CLS(c) & C_TOK)

/* bytes from i in class: 0 alnum, 1 alnum _ -, 2 upper and digits */
static size_t
span(const char *s, size_t n, size_t i, int cls)
{
    size_t j = i;

    while (j < n && (cls == 0   ? ALNUM(s[j])
                     : cls == 1 ? TOKCH(s[j])
                                : (UP(s[j]) || DIG(s[j])))) {
        j++;
    }
    return j - i;
}

static int
has_prefix(const char *s, size_t n, size_t i, const char *p)
{
    size_t l = strlen(p);

    return n - i >= l && memcmp(s + i, p, l) == 0;
}

/* Shannon entropy of s, bits per byte */
static double
entropy(const char *s, size_t n)
{
    unsigned counts[256] = {0};
    double h = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        counts[(unsigned char)s[i]]++;
    }
    for (i = 0; i < 256; i++) {
        if (counts[i] > 0) {
            double p = (double)counts[i] / (double)n;

            h -= p * log2(p);
        }
    }
    return h;
}

#define SECRETCH(c) (CLS(c) & C_SEC)

/* The API key and secret detectors over one token [i, j): a maximal run
 * of bytes in C_SEC, 20 bytes or more (no key or secret is shorter). */
static void
key_token(const char *s, size_t n, size_t i, size_t j, unsigned kinds,
          mf_mask_matches_t *out)
{
    size_t len = 0, sp;

    if (kinds & (1u << MF_MASK_API_KEY)) {
        if (has_prefix(s, n, i, "sk-")) {
            sp = span(s, n, i + 3, 1);
            len = sp >= 20 ? 3 + sp : 0;
        } else if (has_prefix(s, n, i, "AKIA") || has_prefix(s, n, i, "ASIA")) {
            sp = span(s, n, i + 4, 2);
            len = sp == 16 && (i + 20 == n || !ALNUM(s[i + 20])) ? 20 : 0;
        } else if (s[i] == 'g' && s[i + 1] == 'h' &&
                   strchr("pousr", s[i + 2]) != NULL && s[i + 2] != '\0' &&
                   s[i + 3] == '_') {
            sp = span(s, n, i + 4, 0);
            len = sp >= 36 ? 4 + sp : 0;
        } else if (has_prefix(s, n, i, "github_pat_")) {
            sp = span(s, n, i + 11, 1);
            len = sp >= 22 ? 11 + sp : 0;
        }
        if (len > 0) {
            mf_mask_matches_add(out, i, len, MF_MASK_API_KEY);
            return; /* the rest of the token is no token's start */
        }
    }
    if ((kinds & (1u << MF_MASK_SECRET)) && j - i >= 32 && j - i <= 512) {
        int up = 0, low = 0, dig = 0;
        size_t k;

        for (k = i; k < j; k++) {
            up |= UP(s[k]);
            low |= LOW(s[k]);
            dig |= DIG(s[k]);
        }
        if (up && low && dig && entropy(s + i, j - i) > 4.2) {
            mf_mask_matches_add(out, i, j - i, MF_MASK_SECRET);
        }
    }
}

/* The detectors whose values hold digits, run over the windows of the
 * text where digits are (no such value spans more than three bytes
 * without one); IPv6 from each token holding a ':'. */
#define DIGIT_KINDS                                                            \
    ((1u << MF_MASK_PHONE) | (1u << MF_MASK_CN_ID) | (1u << MF_MASK_SSN) |     \
     (1u << MF_MASK_CARD) | (1u << MF_MASK_IP))
#define KEY_KINDS ((1u << MF_MASK_API_KEY) | (1u << MF_MASK_SECRET))

/* The digit window that starts at the digit s[i]: the digit detectors
 * over it, each only when the window holds what its values need (every
 * digit of a value lies in the window: a gap of four bytes without one
 * ends any); returns its end. */
static size_t
digit_window(const char *s, size_t n, size_t i, unsigned kinds,
             mf_mask_matches_t *out)
{
    size_t from = i > 0 && s[i - 1] == '+' ? i - 1 : i, to, last;
    size_t ndig = 0, run = 0, maxrun = 0, ndot = 0, ndash = 0;

    for (last = to = i; to < n && to - last <= 3; to++) {
        if (DIG(s[to])) {
            last = to;
            ndig++;
            if (++run > maxrun) {
                maxrun = run;
            }
        } else {
            run = 0;
            ndot += s[to] == '.';
            ndash += s[to] == '-';
        }
    }
    to = last + 1;
    if ((kinds & (1u << MF_MASK_PHONE)) && ndig >= 8) {
        detect_phone(s, n, from, to, out);
    }
    if ((kinds & (1u << MF_MASK_CN_ID)) && maxrun >= 17) {
        detect_cn_id(s, n, from, to, out);
    }
    if ((kinds & (1u << MF_MASK_SSN)) && ndig >= 9 && ndash >= 2) {
        detect_ssn(s, n, from, to, out);
    }
    if ((kinds & (1u << MF_MASK_CARD)) && ndig >= 13) {
        detect_card(s, n, from, to, out);
    }
    if ((kinds & (1u << MF_MASK_IP)) && ndig >= 4 && ndot >= 3) {
        detect_ip(s, n, from, to, 0, out);
    }
    return to;
}

/* The classes of 64 bytes, a bit per byte: digits, '@' or ':', and the
 * bytes a token may hold (0x21 to 0x7f). */
typedef struct {
    uint64_t dig, pun, tok;
} blk_t;

#ifdef __SSE2__
/* 16 bytes at p into bits [sh, sh + 16) of each mask */
#define BLK16(p, sh)                                                           \
    do {                                                                       \
        __m128i v_ = _mm_loadu_si128((const __m128i *)(const void *)(p));      \
        __m128i d_ = _mm_sub_epi8(v_, zero);                                   \
                                                                               \
        b->dig |= (uint64_t)(unsigned)_mm_movemask_epi8(                       \
                      _mm_cmpeq_epi8(_mm_min_epu8(d_, nine), d_))              \
                  << (sh);                                                     \
        b->pun |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_or_si128(          \
                      _mm_cmpeq_epi8(v_, at), _mm_cmpeq_epi8(v_, colon)))      \
                  << (sh);                                                     \
        /* signed: the bytes from 0x80 are below 0x20 too */                   \
        b->tok |=                                                              \
            (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpgt_epi8(v_, space))   \
            << (sh);                                                           \
    } while (0)
#endif

static void
blk_classify(const char *p, blk_t *b)
{
#ifdef __SSE2__
    const __m128i zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9),
                  at = _mm_set1_epi8('@'), colon = _mm_set1_epi8(':'),
                  space = _mm_set1_epi8(0x20);

    b->dig = b->pun = b->tok = 0;
    BLK16(p, 0);
    BLK16(p + 16, 16);
    BLK16(p + 32, 32);
    BLK16(p + 48, 48);
#else
    unsigned k;

    b->dig = b->pun = b->tok = 0;
    for (k = 0; k < 64; k++) {
        unsigned char c = (unsigned char)p[k];

        b->dig |= (uint64_t)(DIG(c) != 0) << k;
        b->pun |= (uint64_t)(c == '@' || c == ':') << k;
        b->tok |= (uint64_t)(c > 0x20 && c < 0x80) << k;
    }
#endif
}

/* The bits of m at or above bit `from` (relative to the block). */
static uint64_t
bits_from(uint64_t m, size_t base, size_t from)
{
    if (from <= base) {
        return m;
    }
    return from - base >= 64 ? 0 : m & (~(uint64_t)0 << (from - base));
}

/*
 * One pass over the text, 64 bytes at a time: each block is classified
 * (SSE2 where there is, a table otherwise) and the detectors run only
 * where their values can be: e-mail at each '@', IPv6 at each ':',
 * the digit detectors over each digit window, the key and secret
 * detectors over each token of 20 bytes or more (such a token covers
 * an aligned 8 bytes with no separator: the blocks' other tokens are
 * skipped unread). Each detector sees what its own scan over the whole
 * text saw, so the matches are the same.
 */
void
mf_mask_detect(const char *s, size_t n, unsigned kinds, mf_mask_matches_t *out)
{
    const uint64_t group = 0x0101010101010101ull;
    size_t base, di = 0, ki = 0, ci = 0, ei = 0;
    char tail[64];

    for (base = 0; base < n; base += 64) {
        const char *p = s + base;
        blk_t b;
        uint64_t m;

        if (n - base < 64) {
            memset(tail, 0, sizeof(tail)); /* NUL: no class, a separator */
            memcpy(tail, p, n - base);
            p = tail;
        }
        blk_classify(p, &b);
        for (m = b.pun; m != 0; m &= m - 1) {
            size_t c = base + (size_t)__builtin_ctzll(m), t = c;

            if (s[c] == '@') {
                if ((kinds & (1u << MF_MASK_EMAIL)) && c >= ei) {
                    ei = (size_t)(email_at(s, n, s + c, out) - s);
                }
                continue;
            }
            if (!(kinds & (1u << MF_MASK_IP)) || c < ci) {
                continue;
            }
            /* IPv6: from the start of each token holding a ':' */
            while (t > 0 && (CLS(s[t - 1]) & C_IP6)) {
                t--;
            }
            detect_ip(s, n, t, t + 1, 1, out);
            while (c < n && (CLS(s[c]) & C_IP6)) {
                c++;
            }
            ci = c;
        }
        if (kinds & DIGIT_KINDS) {
            for (m = bits_from(b.dig, base, di); m != 0;
                 m = bits_from(m, base, di)) {
                di = digit_window(s, n, base + (size_t)__builtin_ctzll(m),
                                  kinds, out);
            }
        }
        if (kinds & KEY_KINDS) {
            /* bit 8g set: the bytes [8g, 8g + 8) may all be a token's */
            m = b.tok;
            m &= m >> 1;
            m &= m >> 2;
            m &= m >> 4;
            for (m &= group; m != 0; m &= m - 1) {
                size_t q = base + (size_t)__builtin_ctzll(m), e = q + 8;

                for (q = q > ki ? q : ki; q < e && q < n;) {
                    size_t a = q, j = q;

                    if (!SECRETCH(s[q])) {
                        q++;
                        continue;
                    }
                    while (a > 0 && SECRETCH(s[a - 1])) {
                        a--;
                    }
                    while (j < n && SECRETCH(s[j])) {
                        j++;
                    }
                    if (j - a >= 20) {
                        key_token(s, n, a, j, kinds, out);
                    }
                    q = ki = j;
                }
            }
        }
    }
}
