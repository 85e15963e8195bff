/*
 * The placeholder restorer of the mask stage: puts the values back for
 * the placeholders a request was given ([EMAIL_1] -> the address), over
 * a text that may arrive in pieces (stream events). Between pieces it
 * holds back only a tail that is a proper prefix of one of the request's
 * placeholders, so no partial placeholder is ever emitted and the joined
 * output equals restoring the joined text at once.
 */
#ifndef MF_MASK_RESTORE_H
#define MF_MASK_RESTORE_H

#include <stddef.h>

typedef struct {
    char *ph; /* "[EMAIL_1]": starts with '[', ends with ']' */
    size_t phlen;
    char *val;
    size_t vlen;
} mf_mask_entry_t;

/* A growable byte buffer (malloc; aborts on OOM). */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} mf_mask_buf_t;

void mf_mask_buf_add(mf_mask_buf_t *b, const char *s, size_t n);
void mf_mask_buf_free(mf_mask_buf_t *b);

/* Restores held + s into out (appended). When `final` is 0 the tail that
 * could still become a placeholder is left in held (else held is
 * emptied). No placeholder is a prefix of another (they end in ']'). */
void mf_mask_restore(const mf_mask_entry_t *e, size_t ne, mf_mask_buf_t *held,
                     const char *s, size_t n, int final, mf_mask_buf_t *out);

#endif
