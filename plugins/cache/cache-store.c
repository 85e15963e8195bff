/*
 * The cache plugin's in-process store: a hash index and an LRU list under
 * one mutex, bounded by bytes and by TTL (cache-store.h).
 */
#include "cache-store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gov.h"

/* What the index spends on an entry beyond the entry itself. */
#define CS_INDEX_OVERHEAD 96

struct cs_store_s {
    pthread_mutex_t lock;
    gov_map_t *index; /* key -> entry */
    cs_entry_t *head; /* most recently used */
    cs_entry_t *tail;
    size_t bytes;
    size_t max_bytes;
    uint64_t evicted;
    uint64_t expired;
};

cs_store_t *
cs_store_new(size_t max_bytes)
{
    cs_store_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        return NULL;
    }
    s->index = gov_map_new();
    s->max_bytes = max_bytes;
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void
cs_entry_release(cs_entry_t *e)
{
    if (e != NULL && atomic_fetch_sub(&e->refs, 1) == 1) {
        free(e->events);
        free(e->mem);
        free(e);
    }
}

/* Unlinks e from list and index (lock held) and drops the store's
 * reference. */
static void
unlink_entry(cs_store_t *s, cs_entry_t *e)
{
    if (e->prev != NULL) {
        e->prev->next = e->next;
    } else {
        s->head = e->next;
    }
    if (e->next != NULL) {
        e->next->prev = e->prev;
    } else {
        s->tail = e->prev;
    }
    e->prev = e->next = NULL;
    e->linked = 0;
    gov_map_del(s->index, (mf_str_t){e->key, strlen(e->key)});
    s->bytes -= e->bytes;
    cs_entry_release(e);
}

static void
push_front(cs_store_t *s, cs_entry_t *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head != NULL) {
        s->head->prev = e;
    }
    s->head = e;
    if (s->tail == NULL) {
        s->tail = e;
    }
}

void
cs_store_free(cs_store_t *s)
{
    if (s == NULL) {
        return;
    }
    while (s->head != NULL) {
        unlink_entry(s, s->head);
    }
    gov_map_free(s->index, NULL);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

cs_entry_t *
cs_entry_new(const char *key, const char *scope, const char *model,
             int64_t created_ms, int64_t expires_ms, const mf_usage_t *usage,
             int stream, mf_str_t body, const cs_event_t *events,
             size_t nevents)
{
    size_t sl = strlen(scope), ml = strlen(model), total = sl + ml + 2, i;
    cs_entry_t *e = calloc(1, sizeof(*e));
    char *p;

    if (e == NULL) {
        return NULL;
    }
    if (stream) {
        for (i = 0; i < nevents; i++) {
            total += events[i].data.len;
        }
        e->events = nevents ? calloc(nevents, sizeof(*e->events)) : NULL;
        if (nevents && e->events == NULL) {
            goto fail;
        }
    } else {
        total += body.len;
    }
    e->mem = malloc(total ? total : 1);
    if (e->mem == NULL) {
        goto fail;
    }
    p = e->mem;
    e->scope = memcpy(p, scope, sl + 1);
    p += sl + 1;
    e->model = memcpy(p, model, ml + 1);
    p += ml + 1;
    if (stream) {
        for (i = 0; i < nevents; i++) {
            memcpy(p, events[i].data.data, events[i].data.len);
            e->events[i].data = (mf_str_t){p, events[i].data.len};
            e->events[i].flags = events[i].flags;
            p += events[i].data.len;
        }
        e->nevents = nevents;
    } else {
        memcpy(p, body.data, body.len);
        e->body = (mf_str_t){p, body.len};
    }
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->created_ms = created_ms;
    e->expires_ms = expires_ms;
    e->stream = stream;
    e->usage = *usage;
    e->bytes = sizeof(*e) + total + e->nevents * sizeof(cs_event_t) +
               CS_INDEX_OVERHEAD + strlen(e->key);
    atomic_init(&e->refs, 1);
    return e;
fail:
    free(e->events);
    free(e);
    return NULL;
}

int
cs_store_put(cs_store_t *s, cs_entry_t *e)
{
    cs_entry_t *old;

    if (e->bytes > s->max_bytes) {
        cs_entry_release(e);
        return MF_ERR;
    }
    pthread_mutex_lock(&s->lock);
    old = gov_map_get(s->index, (mf_str_t){e->key, strlen(e->key)});
    if (old != NULL) {
        unlink_entry(s, old);
    }
    while (s->tail != NULL && s->bytes + e->bytes > s->max_bytes) {
        unlink_entry(s, s->tail);
        s->evicted++;
    }
    gov_map_put(s->index, (mf_str_t){e->key, strlen(e->key)}, e);
    push_front(s, e);
    e->linked = 1;
    s->bytes += e->bytes;
    pthread_mutex_unlock(&s->lock);
    return MF_OK;
}

cs_entry_t *
cs_store_get(cs_store_t *s, const char *key, int64_t now_ms)
{
    cs_entry_t *e;

    pthread_mutex_lock(&s->lock);
    e = gov_map_get(s->index, (mf_str_t){key, strlen(key)});
    if (e != NULL && e->expires_ms <= now_ms) {
        unlink_entry(s, e);
        s->expired++;
        e = NULL;
    }
    if (e != NULL) {
        if (s->head != e) {
            /* to the front */
            e->prev->next = e->next;
            if (e->next != NULL) {
                e->next->prev = e->prev;
            } else {
                s->tail = e->prev;
            }
            push_front(s, e);
        }
        atomic_fetch_add(&e->refs, 1);
    }
    pthread_mutex_unlock(&s->lock);
    return e;
}

/* scope, or scope followed by a namespace ("group:a|ns:x"). */
static int
scope_matches(const char *want, const char *have)
{
    size_t n = strlen(want);

    return strncmp(want, have, n) == 0 &&
           (have[n] == '\0' || strncmp(have + n, "|ns:", 4) == 0);
}

size_t
cs_store_purge(cs_store_t *s, const char *scope, const char *model,
               const char *key)
{
    cs_entry_t *e, *next;
    size_t n = 0;

    pthread_mutex_lock(&s->lock);
    for (e = s->head; e != NULL; e = next) {
        next = e->next;
        if ((scope == NULL || scope_matches(scope, e->scope)) &&
            (model == NULL || strcmp(model, e->model) == 0) &&
            (key == NULL || strcmp(key, e->key) == 0)) {
            unlink_entry(s, e);
            n++;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

void
cs_store_stats(cs_store_t *s, cs_stats_t *st)
{
    pthread_mutex_lock(&s->lock);
    st->entries = gov_map_count(s->index);
    st->bytes = s->bytes;
    st->max_bytes = s->max_bytes;
    st->evicted = s->evicted;
    st->expired = s->expired;
    pthread_mutex_unlock(&s->lock);
}
