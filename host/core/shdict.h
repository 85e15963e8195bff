/*
 * The shared dict: a sharded hash map with TTLs and atomic incr, shared by
 * all workers (mf.shared in Lua, api->shared_* in C).
 */
#ifndef MF_SHDICT_H
#define MF_SHDICT_H

#include "core/core.h"

void mf_shdict_init(void);
void mf_shdict_free(void);
/* Copies up to cap bytes into buf; returns the value length or MF_ERR. */
int mf_shdict_get(mf_str_t key, char *buf, size_t cap);
int mf_shdict_set(mf_str_t key, mf_str_t value, uint64_t ttl_ms);
/* Adds delta to an integer value (absent = 0); ttl set when created. */
int mf_shdict_incr(mf_str_t key, int64_t delta, uint64_t ttl_ms,
                   int64_t *result);
int mf_shdict_delete(mf_str_t key);
size_t mf_shdict_count(void);

#endif
