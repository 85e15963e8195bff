/*
 * The placeholder restorer (mask_restore.h).
 */
#include "mask_restore.h"

#include <stdlib.h>
#include <string.h>

/* Room for n more bytes. */
static void
buf_room(mf_mask_buf_t *b, size_t n)
{
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
}

void
mf_mask_buf_add(mf_mask_buf_t *b, const char *s, size_t n)
{
    if (n == 0) {
        return;
    }
    buf_room(b, n);
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
    const char *p, *d = s;
    size_t i = 0, lit = 0, dl = n;

    if (held->len == 0 && (ne == 0 || memchr(s, '[', n) == NULL)) {
        mf_mask_buf_add(out, s, n); /* nothing to restore or hold */
        return;
    }
    if (held->len > 0) {
        /* the held tail and the new text, as one */
        t = *held;
        *held = (mf_mask_buf_t){0};
        mf_mask_buf_add(&t, s, n);
        d = t.data;
        dl = t.len;
    }
    buf_room(out, dl + 64); /* the usual answer: one allocation */
    while (i < dl && (p = memchr(d + i, '[', dl - i)) != NULL) {
        size_t j = (size_t)(p - d);
        int prefix;
        const mf_mask_entry_t *m = lookup(e, ne, p, dl - j, &prefix);

        if (m != NULL) {
            mf_mask_buf_add(out, d + lit, j - lit);
            mf_mask_buf_add(out, m->val, m->vlen);
            i = lit = j + m->phlen;
            continue;
        }
        if (prefix && !final) {
            /* may still become a placeholder: held, nothing of it out */
            mf_mask_buf_add(out, d + lit, j - lit);
            mf_mask_buf_add(held, p, dl - j);
            mf_mask_buf_free(&t);
            return;
        }
        i = j + 1;
    }
    mf_mask_buf_add(out, d + lit, dl - lit);
    mf_mask_buf_free(&t);
}
