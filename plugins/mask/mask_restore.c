/*
 * The placeholder restorer (mask_restore.h).
 */
#include "mask_restore.h"

#include <stdlib.h>
#include <string.h>

void
mf_mask_buf_add(mf_mask_buf_t *b, const char *s, size_t n)
{
    if (n == 0) {
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *d;

        while (cap < b->len + n) {
            cap *= 2;
        }
        d = realloc(b->data, cap);
        if (d == NULL) {
            abort();
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

void
mf_mask_buf_free(mf_mask_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* The entry whose placeholder starts t (of n bytes), or NULL; *prefix set
 * when t is a proper prefix of one. */
static const mf_mask_entry_t *
lookup(const mf_mask_entry_t *e, size_t ne, const char *t, size_t n,
       int *prefix)
{
    size_t i;

    *prefix = 0;
    for (i = 0; i < ne; i++) {
        if (e[i].phlen <= n) {
            if (memcmp(t, e[i].ph, e[i].phlen) == 0) {
                return &e[i];
            }
        } else if (memcmp(t, e[i].ph, n) == 0) {
            *prefix = 1;
        }
    }
    return NULL;
}

void
mf_mask_restore(const mf_mask_entry_t *e, size_t ne, mf_mask_buf_t *held,
                const char *s, size_t n, int final, mf_mask_buf_t *out)
{
    mf_mask_buf_t t = {0};
    const char *p;
    size_t i = 0, lit = 0;

    if (held->len == 0 && (ne == 0 || memchr(s, '[', n) == NULL)) {
        mf_mask_buf_add(out, s, n); /* nothing to restore or hold */
        return;
    }
    /* the held tail and the new text, as one */
    t = *held;
    *held = (mf_mask_buf_t){0};
    mf_mask_buf_add(&t, s, n);
    while (i < t.len && (p = memchr(t.data + i, '[', t.len - i)) != NULL) {
        size_t j = (size_t)(p - t.data);
        int prefix;
        const mf_mask_entry_t *m = lookup(e, ne, p, t.len - j, &prefix);

        if (m != NULL) {
            mf_mask_buf_add(out, t.data + lit, j - lit);
            mf_mask_buf_add(out, m->val, m->vlen);
            i = lit = j + m->phlen;
            continue;
        }
        if (prefix && !final) {
            /* may still become a placeholder: held, nothing of it out */
            mf_mask_buf_add(out, t.data + lit, j - lit);
            mf_mask_buf_add(held, p, t.len - j);
            mf_mask_buf_free(&t);
            return;
        }
        i = j + 1;
    }
    mf_mask_buf_add(out, t.data + lit, t.len - lit);
    mf_mask_buf_free(&t);
}
