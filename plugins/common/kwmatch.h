/*
 * A keyword automaton (Aho-Corasick) shared by the mask and guard
 * stages: every keyword of a list found in one pass over a text, with
 * the state carried across pieces of a text (stream events), and the
 * length of the match still in progress (what a stream must hold back
 * so a keyword split across events is caught before any of it leaves).
 * ASCII case folding on request.
 */
#ifndef MF_KWMATCH_H
#define MF_KWMATCH_H

#include <stddef.h>

typedef struct mf_kw_s mf_kw_t;

/* A keyword ending at byte `end` (exclusive, counted from the start of
 * the piece fed) of `len` bytes (it may have begun in an earlier piece),
 * keyword number `id`. Returns 0 to go on, 1 to stop. */
typedef int (*mf_kw_hit_fn)(void *arg, size_t end, size_t len, unsigned id);

mf_kw_t *mf_kw_new(int nocase);
/* Adds a keyword (1 to 255 bytes); MF_ERR-like -1 when empty or too
 * long. */
int mf_kw_add(mf_kw_t *kw, const char *s, size_t n, unsigned id);
/* Computes the failure links; no mf_kw_add after it. */
int mf_kw_build(mf_kw_t *kw);
void mf_kw_free(mf_kw_t *kw);

/* Runs s through the automaton from `state` (0 at a text's start) and
 * returns the state after it; calls hit for every keyword found (the
 * longest first at one position, then its suffixes). */
unsigned mf_kw_feed(const mf_kw_t *kw, unsigned state, const char *s, size_t n,
                    mf_kw_hit_fn hit, void *arg);
/* Bytes of the keyword prefix in progress in `state`. */
size_t mf_kw_depth(const mf_kw_t *kw, unsigned state);

#endif
