/*
 * The cache plugin's semantic index: a flat, in-process vector index per
 * node. Each entry is a question's embedding (unit length), the
 * partition it belongs to (a hash of everything in the request but the
 * last user message), its guard signature (the question's negations and
 * numbers) and the exact-store key of the answer. A lookup scans the
 * entries of one partition for the nearest with cosine >= threshold and
 * an equal guard signature. A partition holds vectors of one dimension
 * (its first entry's). Bounded by max_entries (LRU), one read-write
 * lock. Large partitions are searched by their sign sketches first
 * (below 128 dimensions, of projections), then exactly
 * (semantic-index.c).
 *
 * With `redis:` the cache stage feeds it from a Redis stream
 * (cache.c, sem_sync), so every node holds every node's questions.
 */
#ifndef MF_CACHE_SEMANTIC_INDEX_H
#define MF_CACHE_SEMANTIC_INDEX_H

#include <stddef.h>
#include <stdint.h>

#define SI_PART_LEN 32 /* a SHA-256 of the partition */
#define SI_KEY_LEN 64  /* the exact store's hex key */

typedef struct si_index_s si_index_t;

/* The guard signature of a question: its negation / polarity words
 * (not, no, never, don't, off, on, ...) and its numbers, each
 * normalized, sorted, joined by spaces. Two questions may share an
 * answer only when their signatures are equal. The caller frees it;
 * NULL on OOM. */
char *si_guard_sig(const char *text, size_t len);

/* An index of at most max_entries entries; NULL on OOM. */
si_index_t *si_new(size_t max_entries);
void si_free(si_index_t *x);

/* Adds (or replaces, same key) an entry: vec (dim floats, normalized
 * here), the partition, the guard signature and the exact key; evicts
 * the least recently used entry beyond max_entries. -1 on OOM, a zero
 * vector or a dim other than the partition's, else 0. */
int si_put(si_index_t *x, const uint8_t part[SI_PART_LEN], const float *vec,
           int dim, const char *sig, const char *key);

/* The nearest entry of the partition with the same dim and signature
 * and cosine >= threshold: its key copied to key_out (SI_KEY_LEN + 1),
 * its similarity to *sim, moved to the front of the LRU; 1 found, 0
 * not. */
int si_find(si_index_t *x, const uint8_t part[SI_PART_LEN], const float *vec,
            int dim, const char *sig, double threshold, char *key_out,
            double *sim);

/* Removes the entry of key (its answer left the exact store); 1 if one
 * was removed. */
int si_remove(si_index_t *x, const char *key);

size_t si_count(si_index_t *x);

#endif
