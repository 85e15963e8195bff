/*
 * Helpers shared by the governance plugins (key-auth, limits): a string
 * hash map, keyed hashes and constant-time comparison, the key format
 * and where a client puts its key, globs, calendar periods, GCRA and the
 * parsers of admin arguments ("20usd/month", "1h"). No I/O; linked
 * statically into each plugin and tested on their own.
 */
#ifndef MF_GOV_H
#define MF_GOV_H

#include <manifold/plugin.h>

/* A string-keyed hash map; values are the caller's. */
typedef struct gov_map_s gov_map_t;

gov_map_t *gov_map_new(void);
/* Frees the map; free_value (may be NULL) is called on each value. */
void gov_map_free(gov_map_t *m, void (*free_value)(void *v));
void *gov_map_get(const gov_map_t *m, mf_str_t key);
/* Sets key (copied) to v; returns the value it replaced, or NULL. */
void *gov_map_put(gov_map_t *m, mf_str_t key, void *v);
/* Removes key; returns its value, or NULL. */
void *gov_map_del(gov_map_t *m, mf_str_t key);
size_t gov_map_count(const gov_map_t *m);
/* Calls fn for each entry (no changes to the map meanwhile). */
void gov_map_each(const gov_map_t *m,
                  void (*fn)(const char *key, void *v, void *arg), void *arg);

/* SHA-256 and HMAC-SHA256 into out[32]. */
void gov_sha256(const void *data, size_t n, unsigned char out[32]);
/* The same with a digest fetched once (gov_sha256_fetch; NULL: looked up
 * on each call), for the hashes of every request; freed by
 * gov_sha256_release. */
struct evp_md_st;
struct evp_md_st *gov_sha256_fetch(void);
void gov_sha256_release(struct evp_md_st *md);
void gov_sha256_md(const struct evp_md_st *md, const void *data, size_t n,
                   unsigned char out[32]);
void gov_hmac_md(const struct evp_md_st *sha256, const unsigned char *key,
                 size_t klen, const void *data, size_t n,
                 unsigned char out[32]);
void gov_hmac(const unsigned char *key, size_t klen, const void *data, size_t n,
              unsigned char out[32]);
/* SHA-1 as 40 lowercase hex digits (a Lua script's name for EVALSHA). */
void gov_sha1_hex(const void *data, size_t n, char out[41]);
/* Whether a and b (n bytes) are equal, in time that depends on n only. */
int gov_ct_eq(const unsigned char *a, const unsigned char *b, size_t n);
/* n random bytes as 2n lowercase hex digits into out (2n + 1 bytes);
 * MF_ERR when the system has no randomness to give. */
int gov_random_hex(char *out, size_t n);
/* 2n hex digits -> n bytes; MF_ERR when not hex of that length. */
int gov_unhex(const char *hex, size_t len, unsigned char *out, size_t n);
void gov_hex(const unsigned char *in, size_t n, char *out);

/* Generated keys: "mf-" ID "-" SECRET, ID 12 and SECRET 48 lowercase hex
 * digits (so a scanner spots a leaked one, and the ID finds its record
 * without a scan). */
#define GOV_KEY_ID_LEN 12
#define GOV_KEY_SECRET_LEN 48
#define GOV_KEY_LEN (3 + GOV_KEY_ID_LEN + 1 + GOV_KEY_SECRET_LEN)
/* Splits a generated key; MF_ERR when s is not one (views into s). */
int gov_key_parse(mf_str_t s, mf_str_t *id, mf_str_t *secret);

/* The key a client sent, first of: Authorization "Bearer KEY",
 * x-api-key, x-goog-api-key, the query parameter key= of query (the
 * request's query, "a=1&key=K"; a whole target "/p?a=1&key=K" reads
 * after its '?'). Empty values count as absent. MF_ERR when none; *out
 * is a view. */
int gov_credential(mf_str_t authorization, mf_str_t x_api_key,
                   mf_str_t x_goog_api_key, mf_str_t query, mf_str_t *out);
/* query without its key= parameters (and a bare "key"), into out (cap
 * bytes, NUL-terminated): what later stages may see. Returns its
 * length. */
size_t gov_query_without_key(mf_str_t query, char *out, size_t cap);

/* Whether name matches the glob pattern ('*' any run). */
int gov_glob(const char *pattern, mf_str_t name);
/* Whether name matches one of the globs ('*' any run); none = all. */
int gov_models_allowed(json_t *globs, mf_str_t model);

/* Calendar periods. */
typedef enum {
    GOV_DAY = 0,
    GOV_WEEK, /* from Monday */
    GOV_MONTH,
    GOV_TOTAL /* never rolls over */
} gov_period_t;

/* "day", "week", "month", "total"; MF_ERR otherwise. */
int gov_period_parse(const char *s, gov_period_t *p);
const char *gov_period_name(gov_period_t p);
/* "UTC", "Z", "+02:00", "UTC-05:30", "-0700" -> seconds east of UTC. */
int gov_tz_parse(const char *s, int *offset_s);
/* The period holding unix time now, in the zone offset_s east of UTC:
 * its start and end (unix seconds). TOTAL: 0 and INT64_MAX. */
void gov_period_bounds(gov_period_t p, int offset_s, int64_t now,
                       int64_t *start, int64_t *end);

/*
 * GCRA (the generic cell rate algorithm) of a limit of `limit` units per
 * `window_us`, allowing a burst of the whole window: *tat is the
 * theoretical arrival time (0 at first). Admits `cost` units at now_us
 * when the tat it would reach is within the window: returns 1 and sets
 * *new_tat; else 0 and *retry_us, the wait after which it would be
 * admitted (exact, rounded up to a microsecond). *remaining is the units
 * left after this one (or now, when refused); *reset_us the time until
 * the limit is whole again.
 */
int gov_gcra(int64_t tat, int64_t now_us, int64_t limit, int64_t window_us,
             int64_t cost, int64_t *new_tat, int64_t *retry_us,
             int64_t *remaining, int64_t *reset_us);

/* "20usd", "20.5usd", "$20", "5000tokens", "5000t" -> micro-USD or
 * tokens (*is_usd); optional "/day|week|month|total" sets *period (else
 * left). MF_ERR with nothing set when s is not one. */
int gov_amount_parse(const char *s, int64_t *amount, int *is_usd,
                     gov_period_t *period, int *has_period);
/* "90s", "15m", "1h", "2d", "500ms" -> milliseconds; MF_ERR otherwise. */
int gov_duration_parse(const char *s, int64_t *ms);

/* Cost in micro-USD of usage at a price (USD per million tokens of
 * each kind; cache_read applies to cached prompt tokens, the rest of the
 * prompt at input), rounded up. */
typedef struct {
    double input, output, cache_read;
} gov_price_t;
int64_t gov_cost(const gov_price_t *p, int64_t prompt, int64_t cached,
                 int64_t completion);

/*
 * Concurrency leases of one scope: at most `limit` live at once, each
 * with an expiry (a holder that never releases stops counting once it
 * expires). Released exactly once: a second release, or a release after
 * expiry, is a no-op that says so.
 */
typedef struct {
    uint64_t id;
    int64_t expires_us;
} gov_lease_t;

typedef struct {
    gov_lease_t *v;
    size_t n;
    size_t cap;
} gov_leases_t;

/* Drops expired leases; returns how many are live at now_us. */
size_t gov_leases_live(gov_leases_t *ls, int64_t now_us);
/* Takes lease id (unique, non-zero) when fewer than limit are live;
 * 1 taken, 0 full (*retry_us: until the first expiry). */
int gov_lease_take(gov_leases_t *ls, int64_t now_us, int64_t ttl_us,
                   int64_t limit, uint64_t id, int64_t *retry_us);
/* 1 when lease id was live and is released now, 0 when it was not. */
int gov_lease_release(gov_leases_t *ls, uint64_t id);
void gov_leases_free(gov_leases_t *ls);

#endif
