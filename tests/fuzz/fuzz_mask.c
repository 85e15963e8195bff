/*
 * libFuzzer driver: the mask stage's detectors (every match inside the
 * text, none overlapping after resolution), the placeholder restorer
 * (the text cut at two data-chosen points restores to exactly what the
 * whole text does, and nothing is held after the last piece) and the
 * keyword automaton (the same hits fed in two pieces as whole).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/common/kwmatch.h"
#include "../../plugins/common/mask_detect.h"
#include "../../plugins/mask/mask_restore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char p1[] = "[EMAIL_1]", p2[] = "[EMAIL_12]", p3[] = "[CN_ID_1]";
static char v1[] = "a@b.io", v2[] = "[EMAIL_1]", v3[] = "11010519491231002X";
static mf_mask_entry_t entries[] = {
    {p1, 9, v1, 6},
    {p2, 10, v2, 9},
    {p3, 9, v3, 18},
};

static int
count_hit(void *arg, size_t end, size_t len, unsigned id)
{
    size_t *n = arg;

    (void)end;
    (void)len;
    *n += id + 1;
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_mask_matches_t m = {0};
    mf_mask_buf_t whole = {0}, out = {0}, held = {0};
    const char *s;
    size_t n, i, a, b, end = 0, h1 = 0, h2 = 0;
    mf_kw_t *kw;
    unsigned st;

    if (size < 3) {
        return 0;
    }
    s = (const char *)data + 3;
    n = size - 3;
    a = n ? data[1] % (n + 1) : 0;
    b = a + (n - a ? data[2] % (n - a + 1) : 0);

    mf_mask_detect(s, n, data[0], &m);
    mf_mask_matches_resolve(&m);
    for (i = 0; i < m.n; i++) {
        if (m.v[i].start < end || m.v[i].start + m.v[i].len > n ||
            m.v[i].len == 0) {
            abort();
        }
        end = m.v[i].start + m.v[i].len;
    }
    mf_mask_matches_free(&m);

    mf_mask_restore(entries, 3, &held, s, n, 1, &whole);
    if (held.len != 0) {
        abort();
    }
    mf_mask_restore(entries, 3, &held, s, a, 0, &out);
    mf_mask_restore(entries, 3, &held, s + a, b - a, 0, &out);
    mf_mask_restore(entries, 3, &held, s + b, n - b, 1, &out);
    if (held.len != 0 || out.len != whole.len ||
        (out.len && memcmp(out.data, whole.data, out.len) != 0)) {
        abort();
    }
    mf_mask_buf_free(&whole);
    mf_mask_buf_free(&out);
    mf_mask_buf_free(&held);

    kw = mf_kw_new(data[0] & 1);
    mf_kw_add(kw, "he", 2, 0);
    mf_kw_add(kw, "hers", 4, 1);
    mf_kw_add(kw, "[EMAIL", 6, 2);
    mf_kw_add(kw, "aaa", 3, 3);
    mf_kw_build(kw);
    mf_kw_feed(kw, 0, s, n, count_hit, &h1);
    st = mf_kw_feed(kw, 0, s, a, count_hit, &h2);
    st = mf_kw_feed(kw, st, s + a, n - a, count_hit, &h2);
    if (h1 != h2 || mf_kw_depth(kw, st) > 6) {
        abort();
    }
    mf_kw_free(kw);
    return 0;
}
