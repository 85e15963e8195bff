/*
 * Shared dict: 64 shards, each a chained hash table behind its own mutex.
 * Expired entries are dropped when met; a full table grows.
 */
#include "core/shdict.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MF_SHDICT_SHARDS 64
#define MF_SHDICT_MAX_KEY 65536
#define MF_SHDICT_MAX_VALUE (16 * 1024 * 1024)

typedef struct mf_shentry_s {
    struct mf_shentry_s *next;
    uint64_t hash;
    double expires; /* monotonic ms, 0 = never */
    size_t klen;
    size_t vlen;
    char *value;
    char key[];
} mf_shentry_t;

typedef struct {
    pthread_mutex_t lock;
    mf_shentry_t **slots;
    size_t nslots;
    size_t count;
} mf_shard_t;

static mf_shard_t shards[MF_SHDICT_SHARDS];

static uint64_t
hash_key(mf_str_t k)
{
    uint64_t h = 1469598103934665603ULL;
    size_t i;

    for (i = 0; i < k.len; i++) {
        h ^= (unsigned char)k.data[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void
mf_shdict_init(void)
{
    size_t i;

    for (i = 0; i < MF_SHDICT_SHARDS; i++) {
        pthread_mutex_init(&shards[i].lock, NULL);
        shards[i].nslots = 64;
        shards[i].slots = mf_xcalloc(64, sizeof(mf_shentry_t *));
        shards[i].count = 0;
    }
}

void
mf_shdict_free(void)
{
    size_t i, j;

    for (i = 0; i < MF_SHDICT_SHARDS; i++) {
        for (j = 0; j < shards[i].nslots; j++) {
            mf_shentry_t *e = shards[i].slots ? shards[i].slots[j] : NULL;

            while (e != NULL) {
                mf_shentry_t *next = e->next;

                free(e->value);
                free(e);
                e = next;
            }
        }
        free(shards[i].slots);
        shards[i].slots = NULL;
        pthread_mutex_destroy(&shards[i].lock);
    }
}

static mf_shard_t *
shard_of(uint64_t h)
{
    return &shards[h % MF_SHDICT_SHARDS];
}

/* Finds a live entry; drops an expired one. Lock held. */
static mf_shentry_t **
find(mf_shard_t *s, uint64_t h, mf_str_t k)
{
    mf_shentry_t **pp = &s->slots[(h >> 6) % s->nslots];
    double now = 0;

    while (*pp != NULL) {
        mf_shentry_t *e = *pp;

        if (e->expires > 0) {
            if (now == 0) {
                now = mf_now_ms();
            }
            if (e->expires <= now) {
                *pp = e->next;
                free(e->value);
                free(e);
                s->count--;
                continue;
            }
        }
        if (e->hash == h && e->klen == k.len &&
            memcmp(e->key, k.data, k.len) == 0) {
            return pp;
        }
        pp = &e->next;
    }
    return pp;
}

static void
grow(mf_shard_t *s)
{
    size_t n = s->nslots * 2, i;
    mf_shentry_t **slots = mf_xcalloc(n, sizeof(*slots));

    for (i = 0; i < s->nslots; i++) {
        mf_shentry_t *e = s->slots[i];

        while (e != NULL) {
            mf_shentry_t *next = e->next;
            size_t b = (e->hash >> 6) % n;

            e->next = slots[b];
            slots[b] = e;
            e = next;
        }
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = n;
}

int
mf_shdict_get(mf_str_t key, char *buf, size_t cap)
{
    uint64_t h = hash_key(key);
    mf_shard_t *s = shard_of(h);
    mf_shentry_t **pp;
    int rc = MF_ERR;

    pthread_mutex_lock(&s->lock);
    pp = find(s, h, key);
    if (*pp != NULL) {
        size_t n = (*pp)->vlen < cap ? (*pp)->vlen : cap;

        if (n > 0) {
            memcpy(buf, (*pp)->value, n);
        }
        rc = (int)(*pp)->vlen;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Sets a value; lock held. */
static int
put(mf_shard_t *s, uint64_t h, mf_str_t key, mf_str_t value, uint64_t ttl_ms)
{
    mf_shentry_t **pp = find(s, h, key), *e = *pp;
    char *v = malloc(value.len ? value.len : 1);

    if (v == NULL) {
        return MF_ERR;
    }
    if (value.len) {
        memcpy(v, value.data, value.len);
    }
    if (e == NULL) {
        e = malloc(sizeof(*e) + key.len);
        if (e == NULL) {
            free(v);
            return MF_ERR;
        }
        e->hash = h;
        e->klen = key.len;
        memcpy(e->key, key.data, key.len);
        e->value = NULL;
        e->next = NULL;
        *pp = e;
        s->count++;
    }
    free(e->value);
    e->value = v;
    e->vlen = value.len;
    e->expires = ttl_ms ? mf_now_ms() + (double)ttl_ms : 0;
    if (s->count > s->nslots * 2) {
        grow(s);
    }
    return MF_OK;
}

int
mf_shdict_set(mf_str_t key, mf_str_t value, uint64_t ttl_ms)
{
    uint64_t h = hash_key(key);
    mf_shard_t *s = shard_of(h);
    int rc;

    if (key.len == 0 || key.len > MF_SHDICT_MAX_KEY ||
        value.len > MF_SHDICT_MAX_VALUE) {
        return MF_ERR;
    }
    pthread_mutex_lock(&s->lock);
    rc = put(s, h, key, value, ttl_ms);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* v in decimal at out (room for 21 bytes); returns its length. A
 * counter is incremented once a request on some paths: no printf. */
static int
put_i64(char *out, int64_t v)
{
    char tmp[24];
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    int n = 0, len = 0;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0) {
        out[len++] = '-';
    }
    while (n > 0) {
        out[len++] = tmp[--n];
    }
    return len;
}

int
mf_shdict_incr(mf_str_t key, int64_t delta, uint64_t ttl_ms, int64_t *result)
{
    uint64_t h = hash_key(key);
    mf_shard_t *s = shard_of(h);
    mf_shentry_t **pp;
    int64_t v = 0;
    char num[32];
    int rc = MF_OK, n;

    if (key.len == 0 || key.len > MF_SHDICT_MAX_KEY) {
        return MF_ERR;
    }
    pthread_mutex_lock(&s->lock);
    pp = find(s, h, key);
    if (*pp != NULL) {
        char tmp[32];
        char *end;
        size_t l = (*pp)->vlen;

        if (l == 0 || l >= sizeof(tmp)) {
            rc = MF_ERR;
            goto out;
        }
        memcpy(tmp, (*pp)->value, l);
        tmp[l] = '\0';
        v = strtoll(tmp, &end, 10);
        if (*end != '\0') {
            rc = MF_ERR;
            goto out;
        }
        v += delta;
        n = put_i64(num, v);
        {
            char *nv = realloc((*pp)->value, (size_t)n);

            if (nv == NULL) {
                rc = MF_ERR;
                goto out;
            }
            memcpy(nv, num, (size_t)n);
            (*pp)->value = nv;
            (*pp)->vlen = (size_t)n;
        }
    } else {
        mf_str_t val;

        v = delta;
        n = put_i64(num, v);
        val.data = num;
        val.len = (size_t)n;
        rc = put(s, h, key, val, ttl_ms);
    }
    if (result) {
        *result = v;
    }
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
mf_shdict_delete(mf_str_t key)
{
    uint64_t h = hash_key(key);
    mf_shard_t *s = shard_of(h);
    mf_shentry_t **pp;
    int rc = MF_ERR;

    pthread_mutex_lock(&s->lock);
    pp = find(s, h, key);
    if (*pp != NULL) {
        mf_shentry_t *e = *pp;

        *pp = e->next;
        free(e->value);
        free(e);
        s->count--;
        rc = MF_OK;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

size_t
mf_shdict_count(void)
{
    size_t i, n = 0;

    for (i = 0; i < MF_SHDICT_SHARDS; i++) {
        pthread_mutex_lock(&shards[i].lock);
        n += shards[i].count;
        pthread_mutex_unlock(&shards[i].lock);
    }
    return n;
}
