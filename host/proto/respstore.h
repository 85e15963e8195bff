/*
 * The response store: Responses API answers kept in memory, per process
 * (all workers share it), for previous_response_id and GET/DELETE
 * /v1/responses/{id}. Bounded by a count, a byte total and a TTL (the
 * config's response_store); the oldest entries are evicted first. With
 * response_store.db a writer thread keeps a file in step with it
 * (proto/respdb.c), read back at start.
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

/* For the store's file (proto/respdb.c). The journal is told the id of
 * each entry that changed: put, or dropped (deleted, evicted, expired);
 * it runs under the store's lock, so it only queues the id (it must not
 * call back into the store). NULL: none (the default). */
typedef void (*mf_respstore_journal_fn)(const char *id);
void mf_respstore_set_journal(mf_respstore_journal_fn fn);
/* Like mf_respstore_get for any owner, also giving the value's length and
 * its expiry (monotonic ms, mf_now_ms); NULL (and *owner NULL) when id is
 * not held or expired. Both results malloc'd, the caller frees them. */
char *mf_respstore_peek(const char *id, char **owner, size_t *len,
                        double *expires);
/* The ids held, oldest first, in *ids (a malloc'd array of malloc'd
 * strings, NULL-terminated, the caller frees all); returns how many. */
size_t mf_respstore_ids(char ***ids);

#endif
