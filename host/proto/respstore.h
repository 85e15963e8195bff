/*
 * The response store: Responses API answers kept in memory, per process
 * (all workers share it), for previous_response_id and GET/DELETE
 * /v1/responses/{id}. Bounded by a count, a byte total and a TTL (the
 * config's response_store); the oldest entries are evicted first.
 */
#ifndef MF_RESPSTORE_H
#define MF_RESPSTORE_H

#include "core/core.h"

/* Keeps value (copied) under id for owner (the consumer it was made for,
 * NULL or "" anonymous), replacing an earlier one, evicting expired then
 * oldest entries to stay within max_entries and max_bytes. MF_ERR when
 * it cannot be kept (max_entries 0, a value over max_bytes). */
int mf_respstore_put(const char *id, const char *owner, mf_str_t value,
                     size_t max_entries, size_t max_bytes, double ttl_ms);
/* A malloc'd copy of the value under id (NUL-terminated), or NULL when
 * there is none or it expired; *owner (when owner is not NULL) a malloc'd
 * copy of its owner, NULL with no value. */
char *mf_respstore_get(const char *id, char **owner);
/* 1 when id was there and is owner's (owner NULL: anyone's) and is
 * removed, else 0 (another's entry stays). */
int mf_respstore_delete(const char *id, const char *owner);
/* Entries held (expired ones not yet dropped included). */
size_t mf_respstore_count(void);

#endif
