/*
 * Prices of models from the config's `prices:` section, shared by the
 * stages that charge or show spend (limits, prometheus, accesslog, otel,
 * dashboard) so that they never disagree: the lookup (exact name, else
 * the longest matching glob) and the cost of a usage record in integer
 * micro-USD. No I/O; linked statically into each plugin.
 */
#ifndef MF_PRICE_H
#define MF_PRICE_H

#include <manifold/plugin.h>

/* USD per million tokens of each kind, which is micro-USD per token;
 * cache_read and cache_write below 0: not set, charged at input;
 * reasoning below 0: at output. request: USD per request. */
typedef struct {
    double above; /* a tier: applies when the prompt has more tokens */
    double input, output, cache_read, cache_write, reasoning, request;
} price_tier_t;

#define PRICE_TIERS 8

typedef struct {
    double input, output, cache_read, cache_write, reasoning, request;
    price_tier_t tiers[PRICE_TIERS]; /* ascending `above`; a kind a tier
                                        does not set is the base's */
    size_t ntiers;
} price_t;

/* The price of `model` in prices (the host's normalized `prices:`
 * section: MODEL: {input, output, cache_read?, cache_write?}): the entry
 * of its exact name, else of the longest pattern with '*' (any run)
 * matching it. Returns the entry (borrowed) and fills *p, or NULL. */
const json_t *price_find(const json_t *prices, mf_str_t model, price_t *p);

/* Cost in micro-USD, rounded up, of one request: prompt tokens (cached
 * of them read from and cache_write of them written to the provider's
 * cache, each at its own price, the rest at input), completion tokens
 * (reasoning of them at the reasoning price, the rest at output) and the
 * per-request fee, at the prices of the highest tier whose `above` the
 * prompt passes (else the base). Unknown counts (< 0) count as 0. */
int64_t price_cost(const price_t *p, int64_t prompt, int64_t cached,
                   int64_t cache_write, int64_t completion, int64_t reasoning);

/* price_find through a per-thread memo of the last models looked up
 * (a lookup is seven JSON reads): 1 and *p when priced, 0 when not. A
 * stage that uses it calls price_forget when it frees prices. */
int price_find_memo(const json_t *prices, mf_str_t model, price_t *p);

/* The cost of a finished request's usage (the one record on_log reads:
 * get_info's usage and cache_write_tokens), priced by the model the
 * client asked for, else by the model sent upstream (the lookup the
 * limits stage charges with). Returns 1 and sets *micro_usd when priced,
 * 0 when the request has usage but no price (unpriced), -1 when it has
 * no usage to price (nothing reached a provider). */
int price_request(const json_t *prices, const mf_req_info_t *i,
                  int64_t *micro_usd);

/* A stage that prices with price_request calls this when it frees the
 * prices it passed (fini): the per-thread memo of lookups forgets them. */
void price_forget(void);

/* Whether name matches pattern ('*' any run, other bytes literal). */
int price_glob(const char *pattern, mf_str_t name);

#endif
