/*
 * The cache plugin's in-process store: entries by key, bounded by bytes
 * (LRU eviction) and by time (TTL), shared by every worker under one
 * lock; readers hold a reference, so an entry evicted while it is being
 * replayed is freed when its last reader lets go.
 */
#ifndef MF_CACHE_STORE_H
#define MF_CACHE_STORE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <manifold/plugin.h>

/* What an entry holds: a whole completion (JSON text), or a stream's
 * events (each event's data text and its flags). */
#define CS_EV_USAGE 0x1 /* the event carries only usage */

typedef struct cs_event_s {
    mf_str_t data;
    unsigned flags;
} cs_event_t;

typedef struct cs_entry_s {
    struct cs_entry_s *prev; /* LRU: towards the most recent */
    struct cs_entry_s *next;
    atomic_int refs;
    int linked;   /* in the store's index and list */
    char key[65]; /* hex SHA-256 */
    char *scope;  /* "group:a", "consumer:b|ns:c", "global", ... */
    char *model;  /* the model the request resolved to */
    int64_t created_ms;
    int64_t expires_ms;
    int stream; /* events, else body */
    mf_usage_t usage;
    mf_str_t body; /* the completion's JSON text (not a stream) */
    cs_event_t *events;
    size_t nevents;
    size_t bytes; /* what it counts against the store's bound */
    char *mem;    /* one allocation behind the strings above */
} cs_entry_t;

typedef struct cs_store_s cs_store_t;

typedef struct cs_stats_s {
    size_t entries;
    size_t bytes;
    size_t max_bytes;
    uint64_t evicted;
    uint64_t expired;
} cs_stats_t;

/* A store bounded by max_bytes; NULL on OOM. */
cs_store_t *cs_store_new(size_t max_bytes);
void cs_store_free(cs_store_t *s);

/* A new entry (one reference) copying what it is given: for a stream,
 * nevents events (flags per event), else body. NULL on OOM. */
cs_entry_t *cs_entry_new(const char *key, const char *scope, const char *model,
                         int64_t created_ms, int64_t expires_ms,
                         const mf_usage_t *usage, int stream, mf_str_t body,
                         const cs_event_t *events, size_t nevents);
/* Drops a reference; the last frees the entry. */
void cs_entry_release(cs_entry_t *e);

/* Inserts e (takes the caller's reference), replacing an entry of the
 * same key, and evicts the least recently used entries until the store
 * is within its bound. MF_ERR (e released) when e alone exceeds it. */
int cs_store_put(cs_store_t *s, cs_entry_t *e);
/* The live entry of key (a new reference; cs_entry_release it) moved to
 * the front of the LRU list, or NULL; an expired one is dropped. */
cs_entry_t *cs_store_get(cs_store_t *s, const char *key, int64_t now_ms);
/* Removes the entries matching every filter given (NULL = any; scope
 * matches the scope or any of its namespaces); returns how many. */
size_t cs_store_purge(cs_store_t *s, const char *scope, const char *model,
                      const char *key);
void cs_store_stats(cs_store_t *s, cs_stats_t *st);

#endif
