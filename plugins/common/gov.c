/*
 * Helpers shared by the governance plugins: see gov.h.
 */
#include "gov.h"
#include "price.h"

#include <ctype.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Hash map: chained, doubling at load 1. */

typedef struct gov_ent_s {
    struct gov_ent_s *next;
    uint64_t hash;
    size_t len;
    void *v;
    char key[]; /* NUL-terminated copy */
} gov_ent_t;

struct gov_map_s {
    gov_ent_t **b;
    size_t nb;
    size_t n;
};

static uint64_t
fnv1a(mf_str_t k)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;

    for (i = 0; i < k.len; i++) {
        h ^= (unsigned char)k.data[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void *
xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);

    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return p;
}

gov_map_t *
gov_map_new(void)
{
    gov_map_t *m = xcalloc(1, sizeof(*m));

    m->nb = 64;
    m->b = xcalloc(m->nb, sizeof(*m->b));
    return m;
}

void
gov_map_free(gov_map_t *m, void (*free_value)(void *v))
{
    size_t i;

    if (m == NULL) {
        return;
    }
    for (i = 0; i < m->nb; i++) {
        gov_ent_t *e = m->b[i], *next;

        for (; e != NULL; e = next) {
            next = e->next;
            if (free_value != NULL) {
                free_value(e->v);
            }
            free(e);
        }
    }
    free(m->b);
    free(m);
}

static gov_ent_t **
find(const gov_map_t *m, mf_str_t key, uint64_t h)
{
    gov_ent_t **pp = &m->b[h & (m->nb - 1)];

    for (; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->hash == h && (*pp)->len == key.len &&
            memcmp((*pp)->key, key.data, key.len) == 0) {
            break;
        }
    }
    return pp;
}

void *
gov_map_get(const gov_map_t *m, mf_str_t key)
{
    gov_ent_t **pp = find(m, key, fnv1a(key));

    return *pp ? (*pp)->v : NULL;
}

static void
grow(gov_map_t *m)
{
    gov_ent_t **nb = xcalloc(m->nb * 2, sizeof(*nb));
    size_t i;

    for (i = 0; i < m->nb; i++) {
        gov_ent_t *e = m->b[i], *next;

        for (; e != NULL; e = next) {
            next = e->next;
            e->next = nb[e->hash & (m->nb * 2 - 1)];
            nb[e->hash & (m->nb * 2 - 1)] = e;
        }
    }
    free(m->b);
    m->b = nb;
    m->nb *= 2;
}

void *
gov_map_put(gov_map_t *m, mf_str_t key, void *v)
{
    uint64_t h = fnv1a(key);
    gov_ent_t **pp = find(m, key, h), *e;
    void *old;

    if (*pp != NULL) {
        old = (*pp)->v;
        (*pp)->v = v;
        return old;
    }
    e = xcalloc(1, sizeof(*e) + key.len + 1);
    e->hash = h;
    e->len = key.len;
    e->v = v;
    memcpy(e->key, key.data, key.len);
    *pp = e;
    if (++m->n > m->nb) {
        grow(m);
    }
    return NULL;
}

void *
gov_map_del(gov_map_t *m, mf_str_t key)
{
    gov_ent_t **pp = find(m, key, fnv1a(key)), *e = *pp;
    void *v;

    if (e == NULL) {
        return NULL;
    }
    *pp = e->next;
    v = e->v;
    free(e);
    m->n--;
    return v;
}

size_t
gov_map_count(const gov_map_t *m)
{
    return m->n;
}

void
gov_map_each(const gov_map_t *m,
             void (*fn)(const char *key, void *v, void *arg), void *arg)
{
    size_t i;
    gov_ent_t *e;

    for (i = 0; i < m->nb; i++) {
        for (e = m->b[i]; e != NULL; e = e->next) {
            fn(e->key, e->v, arg);
        }
    }
}

/* Hashes */

/* SHA-256 fetched once by a caller that hashes on every request:
 * EVP_sha256() and HMAC() look the algorithm up in the provider tables
 * on every call (locks and name compares, about 7k instructions, more
 * than the hash of a key). The caller frees it (gov_sha256_release). */
struct evp_md_st *
gov_sha256_fetch(void)
{
    return EVP_MD_fetch(NULL, "SHA256", NULL);
}

void
gov_sha256_release(struct evp_md_st *md)
{
    EVP_MD_free(md);
}

void
gov_sha256_md(const struct evp_md_st *md, const void *data, size_t n,
              unsigned char out[32])
{
    unsigned int len = 32;

    EVP_Digest(data, n, out, &len, md != NULL ? md : EVP_sha256(), NULL);
}

void
gov_sha256(const void *data, size_t n, unsigned char out[32])
{
    gov_sha256_md(NULL, data, n, out);
}

void
gov_sha1_hex(const void *data, size_t n, char out[41])
{
    unsigned char d[20];
    unsigned int len = 20;

    EVP_Digest(data, n, d, &len, EVP_sha1(), NULL);
    gov_hex(d, 20, out);
}

/* HMAC-SHA256 (RFC 2104) over sha256 (NULL: EVP_sha256()): H(K ^ opad, H(K ^
 * ipad, data)), a key longer than the block hashed first. */
void
gov_hmac_md(const struct evp_md_st *sha256, const unsigned char *key,
            size_t klen, const void *data, size_t n, unsigned char out[32])
{
    unsigned char k[64], pad[64], inner[32];
    unsigned int len = 32;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const EVP_MD *md = sha256 != NULL ? sha256 : EVP_sha256();
    size_t i;
    int ok;

    memset(k, 0, sizeof(k));
    if (klen > sizeof(k)) {
        gov_sha256_md(sha256, key, klen, k);
    } else {
        memcpy(k, key, klen);
    }
    for (i = 0; i < 64; i++) {
        pad[i] = k[i] ^ 0x36;
    }
    ok = ctx != NULL && EVP_DigestInit_ex(ctx, md, NULL) &&
         EVP_DigestUpdate(ctx, pad, 64) && EVP_DigestUpdate(ctx, data, n) &&
         EVP_DigestFinal_ex(ctx, inner, &len);
    for (i = 0; i < 64; i++) {
        pad[i] = k[i] ^ 0x5c;
    }
    ok = ok && EVP_DigestInit_ex(ctx, md, NULL) &&
         EVP_DigestUpdate(ctx, pad, 64) && EVP_DigestUpdate(ctx, inner, 32) &&
         EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    if (!ok) { /* no memory: the library's own, slower */
        len = 32;
        HMAC(EVP_sha256(), key, (int)klen, data, n, out, &len);
    }
}

void
gov_hmac(const unsigned char *key, size_t klen, const void *data, size_t n,
         unsigned char out[32])
{
    gov_hmac_md(NULL, key, klen, data, n, out);
}

int
gov_ct_eq(const unsigned char *a, const unsigned char *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void
gov_hex(const unsigned char *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int
gov_random_hex(char *out, size_t n)
{
    unsigned char buf[64];

    if (n > sizeof(buf) || RAND_bytes(buf, (int)n) != 1) {
        return MF_ERR;
    }
    gov_hex(buf, n, out);
    return MF_OK;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int
gov_unhex(const char *hex, size_t len, unsigned char *out, size_t n)
{
    size_t i;

    if (len != 2 * n) {
        return MF_ERR;
    }
    for (i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return MF_ERR;
        }
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return MF_OK;
}

/* Keys */

static int
all_lower_hex(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

int
gov_key_parse(mf_str_t s, mf_str_t *id, mf_str_t *secret)
{
    if (s.data == NULL || s.len != GOV_KEY_LEN ||
        memcmp(s.data, "mf-", 3) != 0 || s.data[3 + GOV_KEY_ID_LEN] != '-' ||
        !all_lower_hex(s.data + 3, GOV_KEY_ID_LEN) ||
        !all_lower_hex(s.data + 4 + GOV_KEY_ID_LEN, GOV_KEY_SECRET_LEN)) {
        return MF_ERR;
    }
    id->data = s.data + 3;
    id->len = GOV_KEY_ID_LEN;
    secret->data = s.data + 4 + GOV_KEY_ID_LEN;
    secret->len = GOV_KEY_SECRET_LEN;
    return MF_OK;
}

static mf_str_t
trim(mf_str_t v)
{
    while (v.len > 0 && (v.data[0] == ' ' || v.data[0] == '\t')) {
        v.data++;
        v.len--;
    }
    while (v.len > 0 &&
           (v.data[v.len - 1] == ' ' || v.data[v.len - 1] == '\t')) {
        v.len--;
    }
    return v;
}

/* The value of query parameter key= in a query ("a=1&key=K"; a target
 * "/path?a=1&key=K" reads after its '?'), not decoded (keys are
 * URL-safe), or empty. */
static mf_str_t
query_key(mf_str_t query)
{
    const char *q = query.data ? memchr(query.data, '?', query.len) : NULL;
    const char *end = query.data + query.len, *p;
    mf_str_t v = MF_STR_NULL;

    for (p = q ? q + 1 : query.data; p != NULL && p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;

        if (stop - p >= 4 && memcmp(p, "key=", 4) == 0) {
            v.data = p + 4;
            v.len = (size_t)(stop - p - 4);
            return v;
        }
        p = stop + (amp != NULL);
    }
    return v;
}

size_t
gov_query_without_key(mf_str_t query, char *out, size_t cap)
{
    const char *end = query.data + query.len, *p;
    size_t n = 0;

    for (p = query.data; p != NULL && p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        size_t len = (size_t)(stop - p);

        if (!(len >= 4 && memcmp(p, "key=", 4) == 0) &&
            !(len == 3 && memcmp(p, "key", 3) == 0) && len > 0 &&
            n + len + 2 <= cap) {
            if (n > 0) {
                out[n++] = '&';
            }
            memcpy(out + n, p, len);
            n += len;
        }
        p = stop + (amp != NULL);
    }
    if (cap > 0) {
        out[n < cap ? n : cap - 1] = '\0';
    }
    return n;
}

int
gov_credential(mf_str_t authorization, mf_str_t x_api_key,
               mf_str_t x_goog_api_key, mf_str_t path, mf_str_t *out)
{
    mf_str_t a = trim(authorization);

    if (a.len > 7 && strncasecmp(a.data, "bearer ", 7) == 0) {
        a.data += 7;
        a.len -= 7;
        a = trim(a);
        if (a.len > 0) {
            *out = a;
            return MF_OK;
        }
    }
    if ((a = trim(x_api_key)).len > 0 || (a = trim(x_goog_api_key)).len > 0 ||
        (a = query_key(path)).len > 0) {
        *out = a;
        return MF_OK;
    }
    return MF_ERR;
}

/* '*' matches any run; everything else is literal. */
static int
glob(const char *p, const char *s, size_t n)
{
    const char *star = NULL, *back = NULL, *end = s + n;

    while (s < end) {
        if (*p == '*') {
            star = ++p;
            back = s;
        } else if (*p != '\0' && *p == *s) {
            p++;
            s++;
        } else if (star != NULL) {
            p = star;
            s = ++back;
        } else {
            return 0;
        }
    }
    while (*p == '*') {
        p++;
    }
    return *p == '\0';
}

int
gov_glob(const char *pattern, mf_str_t name)
{
    return pattern != NULL &&
           glob(pattern, name.data ? name.data : "", name.len);
}

int
gov_models_allowed(json_t *globs, mf_str_t model)
{
    size_t i;
    json_t *g;

    if (!json_is_array(globs) || json_array_size(globs) == 0) {
        return 1;
    }
    json_array_foreach(globs, i, g)
    {
        const char *p = json_string_value(g);

        if (p != NULL && glob(p, model.data ? model.data : "", model.len)) {
            return 1;
        }
    }
    return 0;
}

/* Periods */

static const char *const period_names[] = {"day", "week", "month", "total"};

int
gov_period_parse(const char *s, gov_period_t *p)
{
    int i;

    for (i = 0; i < 4; i++) {
        if (s != NULL && strcmp(s, period_names[i]) == 0) {
            *p = (gov_period_t)i;
            return MF_OK;
        }
    }
    return MF_ERR;
}

const char *
gov_period_name(gov_period_t p)
{
    return (unsigned)p < 4 ? period_names[p] : "?";
}

int
gov_tz_parse(const char *s, int *offset_s)
{
    int h = 0, m = 0, sign, n = 0;

    if (s == NULL) {
        return MF_ERR;
    }
    if (strcmp(s, "UTC") == 0 || strcmp(s, "Z") == 0) {
        *offset_s = 0;
        return MF_OK;
    }
    if (strncmp(s, "UTC", 3) == 0) {
        s += 3;
    }
    if (s[0] != '+' && s[0] != '-') {
        return MF_ERR;
    }
    sign = s[0] == '-' ? -1 : 1;
    s++;
    if (!isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1])) {
        return MF_ERR;
    }
    h = (s[0] - '0') * 10 + (s[1] - '0');
    n = 2;
    if (s[n] == ':') {
        n++;
    }
    if (isdigit((unsigned char)s[n]) && isdigit((unsigned char)s[n + 1])) {
        m = (s[n] - '0') * 10 + (s[n + 1] - '0');
        n += 2;
    } else if (s[n - 1] == ':') {
        return MF_ERR;
    }
    if (s[n] != '\0' || h > 14 || m > 59) {
        return MF_ERR;
    }
    *offset_s = sign * (h * 3600 + m * 60);
    return MF_OK;
}

static int64_t
floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Days since 1970-01-01 of a civil date, and back (H. Hinnant). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = floor_div(y, 400);
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, unsigned *m)
{
    int64_t era;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = floor_div(z, 146097);
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void
gov_period_bounds(gov_period_t p, int offset_s, int64_t now, int64_t *start,
                  int64_t *end)
{
    int64_t local = now + offset_s, day = floor_div(local, 86400), y, d0, d1;
    unsigned m;

    switch (p) {
    case GOV_DAY:
        d0 = day;
        d1 = day + 1;
        break;
    case GOV_WEEK:
        /* 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays */
        d0 = day - ((day + 3) - floor_div(day + 3, 7) * 7);
        d1 = d0 + 7;
        break;
    case GOV_MONTH:
        civil_from_days(day, &y, &m);
        d0 = days_from_civil(y, m, 1);
        d1 = m == 12 ? days_from_civil(y + 1, 1, 1)
                     : days_from_civil(y, m + 1, 1);
        break;
    default:
        *start = 0;
        *end = INT64_MAX;
        return;
    }
    *start = d0 * 86400 - offset_s;
    *end = d1 * 86400 - offset_s;
}

/* GCRA */

int
gov_gcra(int64_t tat, int64_t now_us, int64_t limit, int64_t window_us,
         int64_t cost, int64_t *new_tat, int64_t *retry_us, int64_t *remaining,
         int64_t *reset_us)
{
    __int128 inc;
    int64_t base = tat > now_us ? tat : now_us, next, used;

    if (limit <= 0 || window_us <= 0 || cost < 0) {
        return 0;
    }
    /* each unit takes window/limit; rounded up so that limit units never
     * fit in less than the window */
    inc = ((__int128)cost * window_us + limit - 1) / limit;
    if (inc > (__int128)INT64_MAX / 2) {
        inc = INT64_MAX / 2;
    }
    next = base + (int64_t)inc;
    if (next - now_us <= window_us) {
        *new_tat = next;
        *retry_us = 0;
        used = next - now_us;
        *remaining =
            (int64_t)(((__int128)(window_us - used) * limit) / window_us);
        *reset_us = used;
        return 1;
    }
    *new_tat = tat;
    /* a cost above the whole limit never fits: the wait is reported as
     * the window, and the caller says why */
    *retry_us = cost > limit ? window_us : next - window_us - now_us;
    used = base - now_us;
    *remaining = (int64_t)(((__int128)(window_us - used) * limit) / window_us);
    *reset_us = used;
    return 0;
}

/* Arguments */

int
gov_amount_parse(const char *s, int64_t *amount, int *is_usd,
                 gov_period_t *period, int *has_period)
{
    char num[64], unit[32], per[32];
    const char *slash;
    double v;
    char *end;
    size_t n;
    int usd = 0;

    if (s == NULL) {
        return MF_ERR;
    }
    if (s[0] == '$') {
        usd = 1;
        s++;
    }
    n = strspn(s, "0123456789.");
    if (n == 0 || n >= sizeof(num)) {
        return MF_ERR;
    }
    memcpy(num, s, n);
    num[n] = '\0';
    v = strtod(num, &end);
    if (*end != '\0' || !(v >= 0) || v > 1e12) {
        return MF_ERR;
    }
    s += n;
    slash = strchr(s, '/');
    n = slash ? (size_t)(slash - s) : strlen(s);
    if (n >= sizeof(unit)) {
        return MF_ERR;
    }
    memcpy(unit, s, n);
    unit[n] = '\0';
    if (strcasecmp(unit, "usd") == 0 || (usd && unit[0] == '\0')) {
        usd = 1;
    } else if (!usd && (strcasecmp(unit, "tokens") == 0 ||
                        strcasecmp(unit, "t") == 0 || unit[0] == '\0')) {
        if (v != floor(v)) {
            return MF_ERR;
        }
    } else {
        return MF_ERR;
    }
    if (slash != NULL) {
        gov_period_t p;

        if (strlen(slash + 1) >= sizeof(per)) {
            return MF_ERR;
        }
        snprintf(per, sizeof(per), "%s", slash + 1);
        if (gov_period_parse(per, &p) != MF_OK) {
            return MF_ERR;
        }
        if (period != NULL) {
            *period = p;
        }
        if (has_period != NULL) {
            *has_period = 1;
        }
    }
    *amount = usd ? (int64_t)llround(v * 1e6) : (int64_t)v;
    *is_usd = usd;
    return MF_OK;
}

int
gov_duration_parse(const char *s, int64_t *ms)
{
    char *end;
    double v;
    double mult;

    if (s == NULL || !isdigit((unsigned char)s[0])) {
        return MF_ERR;
    }
    v = strtod(s, &end);
    if (strcmp(end, "ms") == 0) {
        mult = 1;
    } else if (strcmp(end, "s") == 0) {
        mult = 1e3;
    } else if (strcmp(end, "m") == 0) {
        mult = 60e3;
    } else if (strcmp(end, "h") == 0) {
        mult = 3600e3;
    } else if (strcmp(end, "d") == 0) {
        mult = 86400e3;
    } else {
        return MF_ERR;
    }
    if (!(v >= 0) || v * mult > 1e15) {
        return MF_ERR;
    }
    *ms = (int64_t)(v * mult);
    return MF_OK;
}

int64_t
gov_cost(const gov_price_t *p, int64_t prompt, int64_t cached,
         int64_t completion)
{
    price_t q = {.input = p->input,
                 .output = p->output,
                 .cache_read = p->cache_read > 0 ? p->cache_read : -1,
                 .cache_write = -1,
                 .reasoning = -1};

    return price_cost(&q, prompt, cached, 0, completion, 0);
}

/* Leases */

size_t
gov_leases_live(gov_leases_t *ls, int64_t now_us)
{
    size_t i = 0;

    while (i < ls->n) {
        if (ls->v[i].expires_us <= now_us) {
            ls->v[i] = ls->v[--ls->n];
        } else {
            i++;
        }
    }
    return ls->n;
}

int
gov_lease_take(gov_leases_t *ls, int64_t now_us, int64_t ttl_us, int64_t limit,
               uint64_t id, int64_t *retry_us)
{
    size_t i;
    int64_t first = INT64_MAX;

    if ((int64_t)gov_leases_live(ls, now_us) >= limit) {
        for (i = 0; i < ls->n; i++) {
            if (ls->v[i].expires_us < first) {
                first = ls->v[i].expires_us;
            }
        }
        *retry_us = first == INT64_MAX ? 0 : first - now_us;
        return 0;
    }
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? 2 * ls->cap : 8;
        gov_lease_t *v = realloc(ls->v, cap * sizeof(*v));

        if (v == NULL) {
            *retry_us = 1000000;
            return 0;
        }
        ls->v = v;
        ls->cap = cap;
    }
    ls->v[ls->n].id = id;
    ls->v[ls->n].expires_us = now_us + ttl_us;
    ls->n++;
    *retry_us = 0;
    return 1;
}

int
gov_lease_release(gov_leases_t *ls, uint64_t id)
{
    size_t i;

    for (i = 0; i < ls->n; i++) {
        if (ls->v[i].id == id) {
            ls->v[i] = ls->v[--ls->n];
            return 1;
        }
    }
    return 0;
}

void
gov_leases_free(gov_leases_t *ls)
{
    free(ls->v);
    ls->v = NULL;
    ls->n = ls->cap = 0;
}
