/*
 * The response store: a hash of ids to values (each with its owner) and a
 * list from oldest to newest, behind one mutex (an entry is written once per
 * answer and read once per follow-up request: no contention worth sharding).
 */
#include "proto/respstore.h"

#include <pthread.h>
#include <stdlib.h>

#define BUCKETS 4096

typedef struct entry_s {
    struct entry_s *hnext; /* bucket chain */
    struct entry_s *older, *newer;
    double expires; /* monotonic ms */
    size_t len;
    char *value;
    char *owner; /* the consumer it was kept for, "" anonymous */
    char id[];
} entry_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static entry_t *buckets[BUCKETS];
static entry_t *oldest, *newest;
static size_t count, bytes;
static mf_respstore_journal_fn journal; /* told each id that changed */

static size_t
bucket_of(const char *id)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *id; id++) {
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    }
    return (size_t)(h % BUCKETS);
}

static entry_t **
find(const char *id)
{
    entry_t **p = &buckets[bucket_of(id)];

    while (*p != NULL && strcmp((*p)->id, id) != 0) {
        p = &(*p)->hnext;
    }
    return p;
}

/* Unlinks and frees e, telling the journal (unless replaced: the put
 * that replaces it tells); the caller holds mu. */
static void
drop(entry_t *e, int replaced)
{
    entry_t **p = find(e->id);

    if (journal != NULL && !replaced) {
        journal(e->id);
    }

    *p = e->hnext;
    if (e->older != NULL) {
        e->older->newer = e->newer;
    } else {
        oldest = e->newer;
    }
    if (e->newer != NULL) {
        e->newer->older = e->older;
    } else {
        newest = e->older;
    }
    count--;
    bytes -= e->len;
    free(e->value);
    free(e->owner);
    free(e);
}

/* Whether e may be seen by owner (NULL: by anyone). */
static int
owned(const entry_t *e, const char *owner)
{
    return owner == NULL || strcmp(e->owner, owner) == 0;
}

int
mf_respstore_put(const char *id, const char *owner, mf_str_t value,
                 size_t max_entries, size_t max_bytes, double ttl_ms)
{
    double now = mf_now_ms();
    size_t idlen = strlen(id);
    entry_t *e, **p;

    if (max_entries == 0 || value.len > max_bytes) {
        return MF_ERR;
    }
    e = mf_xmalloc(sizeof(*e) + idlen + 1);
    memcpy(e->id, id, idlen + 1);
    e->value = mf_xstrndup(value.data, value.len);
    e->owner = mf_xstrdup(owner != NULL ? owner : "");
    e->len = value.len;
    e->expires = now + ttl_ms;
    pthread_mutex_lock(&mu);
    if (*(p = find(id)) != NULL) {
        drop(*p, 1);
    }
    while (oldest != NULL &&
           (oldest->expires <= now || count + 1 > max_entries ||
            bytes + value.len > max_bytes)) {
        drop(oldest, 0);
    }
    p = &buckets[bucket_of(id)];
    e->hnext = *p;
    *p = e;
    e->newer = NULL;
    e->older = newest;
    if (newest != NULL) {
        newest->newer = e;
    } else {
        oldest = e;
    }
    newest = e;
    count++;
    bytes += e->len;
    if (journal != NULL) {
        journal(e->id);
    }
    pthread_mutex_unlock(&mu);
    return MF_OK;
}

char *
mf_respstore_get(const char *id, char **owner)
{
    entry_t **p;
    char *out = NULL;

    if (owner != NULL) {
        *owner = NULL;
    }
    pthread_mutex_lock(&mu);
    p = find(id);
    if (*p != NULL && (*p)->expires <= mf_now_ms()) {
        drop(*p, 0);
    } else if (*p != NULL) {
        out = mf_xstrndup((*p)->value, (*p)->len);
        if (owner != NULL) {
            *owner = mf_xstrdup((*p)->owner);
        }
    }
    pthread_mutex_unlock(&mu);
    return out;
}

int
mf_respstore_delete(const char *id, const char *owner)
{
    entry_t **p;
    int found = 0;

    pthread_mutex_lock(&mu);
    p = find(id);
    if (*p != NULL && owned(*p, owner)) {
        found = (*p)->expires > mf_now_ms();
        drop(*p, 0);
    }
    pthread_mutex_unlock(&mu);
    return found;
}

size_t
mf_respstore_count(void)
{
    size_t n;

    pthread_mutex_lock(&mu);
    n = count;
    pthread_mutex_unlock(&mu);
    return n;
}

char *
mf_respstore_peek(const char *id, char **owner, size_t *len, double *expires)
{
    entry_t **p;
    char *out = NULL;

    *owner = NULL;
    pthread_mutex_lock(&mu);
    p = find(id);
    if (*p != NULL && (*p)->expires > mf_now_ms()) {
        out = mf_xstrndup((*p)->value, (*p)->len);
        *owner = mf_xstrdup((*p)->owner);
        *len = (*p)->len;
        *expires = (*p)->expires;
    }
    pthread_mutex_unlock(&mu);
    return out;
}

size_t
mf_respstore_ids(char ***ids)
{
    entry_t *e;
    size_t n = 0;

    pthread_mutex_lock(&mu);
    *ids = mf_xcalloc(count + 1, sizeof(**ids));
    for (e = oldest; e != NULL; e = e->newer) {
        (*ids)[n++] = mf_xstrdup(e->id);
    }
    pthread_mutex_unlock(&mu);
    return n;
}

void
mf_respstore_set_journal(mf_respstore_journal_fn fn)
{
    pthread_mutex_lock(&mu);
    journal = fn;
    pthread_mutex_unlock(&mu);
}
