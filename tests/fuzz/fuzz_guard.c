/*
 * libFuzzer driver: the guard stage's stream checker (chan_check in
 * plugins/guard/guard.c, included) over a text cut into data-chosen
 * pieces, against the whole-text check. A text with no match is released
 * whole and in order; a text with one is stopped, and what was released
 * before the stop holds no match.
 */
#include "../../plugins/guard/guard.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static guard_t *g;

static guard_t *
make_guard(void)
{
    guard_t *x = calloc(1, sizeof(*x));
    int err;
    PCRE2_SIZE off;

    x->nrules = 3;
    x->rules = calloc(3, sizeof(*x->rules));
    x->rules[0] = (grule_t){strdup("kw"), DIR_OUT, NULL};
    x->rules[1] = (grule_t){strdup("re"), DIR_OUT, NULL};
    x->rules[2] = (grule_t){strdup("re2"), DIR_OUT, NULL};
    x->kw[DIR_OUT] = mf_kw_new(1);
    mf_kw_add(x->kw[DIR_OUT], "forbidden", 9, 0);
    mf_kw_add(x->kw[DIR_OUT], "bid", 3, 0);
    mf_kw_add(x->kw[DIR_OUT], "zebra-key", 9, 0);
    mf_kw_build(x->kw[DIR_OUT]);
    x->rules[1].re = pcre2_compile((PCRE2_SPTR) "secret-[0-9]{4}",
                                   PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    x->rules[2].re = pcre2_compile((PCRE2_SPTR) "a[bc]+d",
                                   PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    pcre2_jit_compile(x->rules[1].re,
                      PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
    x->has_re[DIR_OUT] = 1;
    x->overlap = 64;
    x->max_hold = 4096;
    return x;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    greq_t q = {0};
    gchan_t ch = {0};
    gbuf_t out = {0};
    const char *text, *whole_hit;
    size_t n, at = 0, k = 0;

    if (g == NULL) {
        g = make_guard();
    }
    if (size < 4) {
        return 0;
    }
    text = (const char *)data + 4;
    n = size - 4;
    whole_hit = check_text(g, DIR_OUT, text, n);
    while (at < n && q.hit == NULL) {
        size_t piece = (size_t)(data[k++ % 4] % 9) + 1;

        if (piece > n - at) {
            piece = n - at;
        }
        chan_check(g, &q, &ch, text + at, piece, 0, &out);
        at += piece;
    }
    if (q.hit == NULL) {
        chan_check(g, &q, &ch, "", 0, 1, &out);
    }
    if ((whole_hit == NULL) != (q.hit == NULL)) {
        abort(); /* the stream and the whole text disagree */
    }
    if (q.hit == NULL &&
        (out.len != n || (n && memcmp(out.data, text, n) != 0))) {
        abort(); /* not released whole and in order */
    }
    if (q.hit != NULL && check_text(g, DIR_OUT, out.data, out.len) != NULL) {
        abort(); /* a match went out before the stop */
    }
    gbuf_free(&out);
    gbuf_free(&ch.held);
    gbuf_free(&ch.tail);
    gbuf_free(&q.t);
    return 0;
}
