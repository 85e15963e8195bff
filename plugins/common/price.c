/*
 * Model prices: lookup and cost (see price.h).
 */
#include "price.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

int
price_glob(const char *pat, mf_str_t s)
{
    size_t i = 0;
    const char *star = NULL;
    size_t back = 0;

    while (i < s.len) {
        if (*pat == '*') {
            star = pat++;
            back = i;
        } else if (*pat != '\0' && *pat == s.data[i]) {
            pat++;
            i++;
        } else if (star != NULL) {
            pat = star + 1;
            i = ++back;
        } else {
            return 0;
        }
    }
    while (*pat == '*') {
        pat++;
    }
    return *pat == '\0';
}

static double
num(const json_t *o, const char *k, double dflt)
{
    const json_t *v = json_object_get(o, k);

    return json_is_number(v) ? json_number_value(v) : dflt;
}

const json_t *
price_find(const json_t *prices, mf_str_t model, price_t *p)
{
    char m[256];
    const char *key;
    const json_t *v, *best = NULL;
    size_t best_len = 0;

    if (!json_is_object(prices) || model.len == 0 || model.len >= sizeof(m)) {
        return NULL;
    }
    memcpy(m, model.data, model.len);
    m[model.len] = '\0';
    best = json_object_get(prices, m);
    if (best == NULL) {
        json_object_foreach((json_t *)prices, key, v)
        {
            size_t n = strlen(key);

            if (strchr(key, '*') != NULL && n > best_len &&
                price_glob(key, model)) {
                best = v;
                best_len = n;
            }
        }
    }
    if (!json_is_object(best)) {
        return NULL;
    }
    p->input = num(best, "input", 0);
    p->output = num(best, "output", 0);
    p->cache_read = num(best, "cache_read", -1);
    p->cache_write = num(best, "cache_write", -1);
    p->reasoning = num(best, "reasoning", -1);
    p->request = num(best, "request", 0);
    p->ntiers = 0;
    {
        const json_t *tiers = json_object_get(best, "tiers"), *t;
        size_t k;

        json_array_foreach((json_t *)tiers, k, t)
        {
            price_tier_t *x;

            if (p->ntiers == PRICE_TIERS) {
                break;
            }
            x = &p->tiers[p->ntiers++];
            x->above = num(t, "above", 0);
            x->input = num(t, "input", p->input);
            x->output = num(t, "output", p->output);
            x->cache_read = num(t, "cache_read", p->cache_read);
            x->cache_write = num(t, "cache_write", p->cache_write);
            x->reasoning = num(t, "reasoning", p->reasoning);
            x->request = num(t, "request", p->request);
        }
    }
    return best;
}

int64_t
price_cost(const price_t *p, int64_t prompt, int64_t cached,
           int64_t cache_write, int64_t completion, int64_t reasoning)
{
    price_tier_t t = {0,
                      p->input,
                      p->output,
                      p->cache_read,
                      p->cache_write,
                      p->reasoning,
                      p->request};
    double c;
    size_t k;

    if (prompt < 0) {
        prompt = 0;
    }
    if (cached < 0 || cached > prompt) {
        cached = 0;
    }
    if (cache_write < 0 || cache_write > prompt - cached) {
        cache_write = 0;
    }
    if (completion < 0) {
        completion = 0;
    }
    if (reasoning < 0 || reasoning > completion) {
        reasoning = 0;
    }
    for (k = 0; k < p->ntiers; k++) {
        if ((double)prompt > p->tiers[k].above) {
            t = p->tiers[k];
        }
    }
    /* USD per million tokens is micro-USD per token */
    c = (double)(prompt - cached - cache_write) * t.input +
        (double)cached * (t.cache_read >= 0 ? t.cache_read : t.input) +
        (double)cache_write * (t.cache_write >= 0 ? t.cache_write : t.input) +
        (double)(completion - reasoning) * t.output +
        (double)reasoning * (t.reasoning >= 0 ? t.reasoning : t.output) +
        t.request * 1e6;
    return (int64_t)ceil(c - 1e-9);
}

/* A memo of the last lookups, per thread: a lookup is seven JSON object
 * reads; requests mostly name the same few models. An entry is valid for
 * the prices object and the epoch it was made in; price_forget moves the
 * epoch, so a freed object whose address comes back is not believed. */
#define MEMO 8
typedef struct {
    const json_t *prices;
    unsigned epoch;
    int found;
    size_t len;
    char model[64];
    price_t p;
} memo_t;

static unsigned memo_epoch = 1;
static __thread memo_t memo[MEMO];

void
price_forget(void)
{
    __atomic_add_fetch(&memo_epoch, 1, __ATOMIC_RELEASE);
}

int
price_find_memo(const json_t *prices, mf_str_t model, price_t *p)
{
    unsigned epoch = __atomic_load_n(&memo_epoch, __ATOMIC_ACQUIRE);
    uint32_t h = 2166136261u;
    memo_t *m;
    size_t k;

    if (model.len == 0 || model.len >= sizeof(m->model)) {
        return price_find(prices, model, p) != NULL;
    }
    for (k = 0; k < model.len; k++) {
        h = (h ^ (unsigned char)model.data[k]) * 16777619u;
    }
    m = &memo[h % MEMO];
    if (m->prices != prices || m->epoch != epoch || m->len != model.len ||
        memcmp(m->model, model.data, model.len) != 0) {
        m->found = price_find(prices, model, &m->p) != NULL;
        m->prices = prices;
        m->epoch = epoch;
        m->len = model.len;
        memcpy(m->model, model.data, model.len);
    }
    if (m->found) {
        *p = m->p;
    }
    return m->found;
}

int
price_request(const json_t *prices, const mf_req_info_t *i, int64_t *micro_usd)
{
    const mf_usage_t *u = &i->usage;
    int64_t cw = -1;
    price_t p;

    *micro_usd = 0;
    if (u->prompt_tokens < 0 && u->completion_tokens < 0) {
        return -1;
    }
    if (!price_find_memo(prices, i->model, &p) &&
        !price_find_memo(prices, i->upstream_model, &p)) {
        return 0;
    }
    if (i->size >=
        offsetof(mf_req_info_t, cache_write_tokens) + sizeof(int64_t)) {
        cw = i->cache_write_tokens;
    }
    *micro_usd = price_cost(&p, u->prompt_tokens, u->cached_tokens, cw,
                            u->completion_tokens, u->reasoning_tokens);
    return 1;
}
