/*
 * Key pools: a process-wide registry of key health, keyed by provider
 * name and a fingerprint of the key (SHA-256, never the key), so health
 * survives reloads and is shared by all workers. One mutex guards it: the
 * critical sections are a few comparisons per attempt.
 *
 * A 429 rests a key for one model only (providers limit each model on
 * its own): the rests hang off the key, one per (key, model). A 401/403,
 * failures and the operator act on the key for every model.
 *
 * An entry lives as long as a generation binds its key: when the last
 * generation using it is freed, the row goes (health of a key that comes
 * back in a later config starts afresh).
 *
 * With `redis:` set, worker 0 publishes every state change (a key's
 * health as a short string with an expiry, its rests as the fields of a
 * hash) and reads the others' once a second, so several nodes agree on
 * which keys to rest.
 */
#include "routing/keypool.h"

#include <math.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "http/upstream.h"
#include "pipeline/generation.h"

typedef enum {
    KEY_OK = 0,
    KEY_COOLDOWN,    /* unused: rests are per model (the number stays, as
                        other nodes read it through Redis) */
    KEY_QUARANTINED, /* too many failures: until a probe passes */
    KEY_DISABLED,    /* 401/403: until a probe passes or the config changes */
    KEY_MANUAL       /* disabled by the operator */
} key_state_t;

static const char *const state_names[] = {"ok", "cooldown", "quarantined",
                                          "disabled", "disabled_by_operator"};

/* At most this many models rest at once on one key; a new rest takes the
 * place of an ended one, else of the one ending first. */
#define MF_KEY_RESTS 64

/* A 429 for one model: the key rests for that model only. */
typedef struct {
    char model[128];
    double until_ms;   /* monotonic; <= now: ended (the backoff stays) */
    double backoff_ms; /* the next 429 without Retry-After */
    double since;      /* wall time the rest began */
    char why[160];
    int dirty; /* to publish to Redis */
} rest_t;

typedef struct mf_keyh_s {
    char provider[128];
    char fp[17];     /* first 8 bytes of SHA-256, hex */
    char masked[32]; /* sk-...abcd */
    size_t index;    /* position in the provider's pool */
    unsigned conf_hash;
    key_state_t state;
    char why[160];
    double since;      /* wall time of the last state change */
    double next_probe; /* monotonic */
    rest_t *rests;     /* per model; MF_KEY_RESTS at most */
    size_t nrests;
    int rests_dirty; /* a rest to publish */
    int rests_clear; /* the rests were ended: delete them in Redis */
    int uses;        /* generations binding the key */
    int gone;        /* unbound while probing: the probe frees it */
    int fails;       /* consecutive failures */
    int in_flight;
    uint64_t requests;
    uint64_t errors;
    int dirty; /* changed since the last Redis sync */
    int probing;
    /* what a probe needs, refreshed at bind */
    char *key;
    char *base_url;
    char *probe_path;
    char *probe_header;
    double probe_interval_ms;
    int key_failures;
    int tls_verify;
} keyh_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static keyh_t **all;
static size_t nall;
static double max_rest_ms = 300000; /* limits.max_retry_after */

static unsigned
hash_str(const char *s)
{
    unsigned h = 2166136261u;

    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h;
}

static void
fingerprint(const char *key, char out[17])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    int i;

    SHA256((const unsigned char *)key, strlen(key), md);
    for (i = 0; i < 8; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}

static void
set_state(keyh_t *k, key_state_t st, const char *why)
{
    if (k->state != st) {
        mf_log_info("key %s of provider '%s': %s -> %s (%s)", k->masked,
                    k->provider, state_names[k->state], state_names[st], why);
        k->since = mf_wall_time();
    }
    k->state = st;
    snprintf(k->why, sizeof(k->why), "%s", why);
    k->dirty = 1;
}

static void
set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = mf_xstrdup(src ? src : "");
}

void
mf_keypool_set_max_rest(double ms)
{
    pthread_mutex_lock(&lock);
    max_rest_ms = ms > 0 ? ms : 300000;
    pthread_mutex_unlock(&lock);
}

void
mf_keypool_bind(mf_prov_t *p)
{
    mf_provider_conf_t *pc = p->conf;
    char *text = json_dumps(pc->json, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned ch = hash_str(text ? text : "");
    size_t i, j;

    free(text);
    p->keys = mf_xcalloc(pc->nkeys ? pc->nkeys : 1, sizeof(keyh_t *));
    p->key_str = mf_xcalloc(pc->nkeys ? pc->nkeys : 1, sizeof(char *));
    p->nkeys = 0;
    pthread_mutex_lock(&lock);
    for (i = 0; i < pc->nkeys; i++) {
        char fp[17];
        keyh_t *k = NULL;

        if (pc->keys[i][0] == '\0') {
            continue;
        }
        fingerprint(pc->keys[i], fp);
        for (j = 0; j < nall; j++) {
            if (strcmp(all[j]->fp, fp) == 0 &&
                strcmp(all[j]->provider, pc->name) == 0) {
                k = all[j];
                break;
            }
        }
        if (k == NULL) {
            k = mf_xcalloc(1, sizeof(*k));
            snprintf(k->provider, sizeof(k->provider), "%s", pc->name);
            memcpy(k->fp, fp, sizeof(fp));
            mf_mask_secret(mf_str_from(pc->keys[i]), k->masked,
                           sizeof(k->masked));
            k->since = mf_wall_time();
            snprintf(k->why, sizeof(k->why), "configured");
            k->conf_hash = ch;
            all = mf_xrealloc(all, (nall + 1) * sizeof(*all));
            all[nall++] = k;
        } else if (k->conf_hash != ch) {
            k->conf_hash = ch;
            if (k->state == KEY_DISABLED || k->state == KEY_QUARANTINED) {
                set_state(k, KEY_OK, "the provider's config changed");
                k->fails = 0;
            }
        }
        k->uses++;
        k->index = p->nkeys;
        set_str(&k->key, pc->keys[i]);
        set_str(&k->base_url, pc->base_url);
        set_str(&k->probe_path, pc->probe_path);
        set_str(&k->probe_header, pc->probe_header);
        k->probe_interval_ms = pc->probe_interval_ms;
        k->key_failures = pc->key_failures;
        k->tls_verify = pc->tls_verify;
        p->key_str[p->nkeys] = pc->keys[i];
        p->keys[p->nkeys++] = k;
    }
    pthread_mutex_unlock(&lock);
}

static void
keypool_configure(const mf_config_t *c)
{
    mf_keypool_set_max_rest(c->limits.max_retry_after_ms);
}

static void
key_free(keyh_t *k)
{
    free(k->key);
    free(k->base_url);
    free(k->probe_path);
    free(k->probe_header);
    free(k->rests);
    free(k);
}

void
mf_keypool_unbind(mf_prov_t *p)
{
    size_t i, j;

    pthread_mutex_lock(&lock);
    for (i = 0; i < p->nkeys; i++) {
        keyh_t *k = p->keys[i];

        for (j = 0; j < nall && all[j] != k; j++) {
        }
        if (j == nall || --k->uses > 0) {
            continue; /* freed already (exit), or another generation's */
        }
        memmove(all + j, all + j + 1, (nall - j - 1) * sizeof(*all));
        nall--;
        if (k->probing) {
            k->gone = 1; /* the probe's end frees it */
        } else {
            key_free(k);
        }
    }
    pthread_mutex_unlock(&lock);
}

/* The rest of k for model, NULL when none (ended ones included). */
static rest_t *
rest_find(keyh_t *k, mf_str_t model)
{
    size_t i;

    for (i = 0; i < k->nrests; i++) {
        if (mf_str_eq_cstr(model, k->rests[i].model)) {
            return &k->rests[i];
        }
    }
    return NULL;
}

/* The rest of k for model, made when missing: in a free slot, else in
 * place of an ended rest, else of the one ending first. Never NULL. */
static rest_t *
rest_get(keyh_t *k, mf_str_t model, double now)
{
    rest_t *r = rest_find(k, model);
    size_t i, victim = 0;

    if (r != NULL) {
        return r;
    }
    if (k->rests == NULL) {
        k->rests = mf_xcalloc(MF_KEY_RESTS, sizeof(rest_t));
    }
    if (k->nrests < MF_KEY_RESTS) {
        victim = k->nrests++;
    } else {
        for (i = 0; i < k->nrests; i++) {
            if (k->rests[i].until_ms <= now) {
                victim = i;
                break;
            }
            if (k->rests[i].until_ms < k->rests[victim].until_ms) {
                victim = i;
            }
        }
    }
    r = &k->rests[victim];
    memset(r, 0, sizeof(*r));
    snprintf(
        r->model, sizeof(r->model), "%.*s",
        (int)(model.len < sizeof(r->model) ? model.len : sizeof(r->model) - 1),
        model.data);
    r->backoff_ms = 1000;
    return r;
}

/* Forgets the rest of model on k (a success: its backoff starts over). */
static void
rest_drop(keyh_t *k, mf_str_t model)
{
    rest_t *r = rest_find(k, model);

    if (r != NULL) {
        *r = k->rests[--k->nrests];
    }
}

/* Whether k can take a request for model now; the wait of a resting key
 * goes into *retry_ms when shorter. */
static int
usable(keyh_t *k, mf_str_t model, double now, double *retry_ms)
{
    rest_t *r;

    if (k->state != KEY_OK) {
        return 0;
    }
    r = rest_find(k, model);
    if (r != NULL && r->until_ms > now) {
        if (*retry_ms == 0 || r->until_ms - now < *retry_ms) {
            *retry_ms = r->until_ms - now;
        }
        return 0;
    }
    return 1;
}

int
mf_keypool_pick(mf_prov_t *p, mf_str_t model, uint64_t tried, int last_resort,
                double *retry_ms)
{
    double now = mf_now_ms();
    size_t n = p->nkeys, i;
    int best = -1;
    unsigned start;

    *retry_ms = 0;
    if (n == 0) {
        return -1;
    }
    start = atomic_fetch_add(&p->key_rr, 1);
    pthread_mutex_lock(&lock);
    for (i = 0; i < n; i++) {
        size_t ki = (start + i) % n;
        keyh_t *k = p->keys[ki];

        if ((ki < 64 && (tried & ((uint64_t)1 << ki))) ||
            !(usable(k, model, now, retry_ms) ||
              (last_resort && k->state == KEY_QUARANTINED))) {
            continue;
        }
        if (p->conf->key_strategy == MF_KEYS_ROUND_ROBIN) {
            best = (int)ki;
            break;
        }
        if (best < 0 || k->in_flight < p->keys[best]->in_flight ||
            (k->in_flight == p->keys[best]->in_flight &&
             k->requests < p->keys[best]->requests)) {
            best = (int)ki;
        }
    }
    pthread_mutex_unlock(&lock);
    return best;
}

void
mf_keypool_begin(mf_prov_t *p, int ki)
{
    if (ki < 0 || (size_t)ki >= p->nkeys) {
        return;
    }
    pthread_mutex_lock(&lock);
    p->keys[ki]->in_flight++;
    p->keys[ki]->requests++;
    pthread_mutex_unlock(&lock);
}

void
mf_keypool_end(mf_prov_t *p, int ki, mf_str_t model, mf_keyres_t res,
               double retry_after_ms, const char *why)
{
    keyh_t *k;
    rest_t *rest;
    char buf[160];
    double now;

    if (ki < 0 || (size_t)ki >= p->nkeys) {
        return;
    }
    k = p->keys[ki];
    pthread_mutex_lock(&lock);
    k->in_flight--;
    switch (res) {
    case MF_KEYRES_OK:
        k->fails = 0;
        rest_drop(k, model);
        break;
    case MF_KEYRES_AUTH:
        k->errors++;
        if (k->state != KEY_MANUAL) {
            snprintf(buf, sizeof(buf), "refused by the provider: %s", why);
            set_state(k, KEY_DISABLED, buf);
            k->next_probe = mf_now_ms() + k->probe_interval_ms;
        }
        break;
    case MF_KEYRES_RATE:
        k->errors++;
        if (k->state == KEY_OK) {
            double ms = retry_after_ms;

            now = mf_now_ms();
            rest = rest_get(k, model, now);
            if (!isfinite(ms) || ms <= 0) {
                ms = rest->backoff_ms;
                rest->backoff_ms = fmin(rest->backoff_ms * 2, 60000);
                snprintf(buf, sizeof(buf),
                         "429 without Retry-After: backing off %.0f ms", ms);
            } else {
                ms = fmin(ms, max_rest_ms);
                snprintf(buf, sizeof(buf), "429: Retry-After %.0f ms", ms);
            }
            if (rest->until_ms <= now) {
                mf_log_info("key %s of provider '%s' rests for model '%s' "
                            "(%s)",
                            k->masked, k->provider, rest->model, buf);
                rest->since = mf_wall_time();
            }
            rest->until_ms = now + ms;
            snprintf(rest->why, sizeof(rest->why), "%s", buf);
            rest->dirty = 1;
            k->rests_dirty = 1;
        }
        break;
    case MF_KEYRES_FAIL:
        k->errors++;
        k->fails++;
        if (k->state == KEY_OK && k->fails >= k->key_failures) {
            snprintf(buf, sizeof(buf), "%d failures in a row, last: %s",
                     k->fails, why);
            set_state(k, KEY_QUARANTINED, buf);
            k->next_probe = mf_now_ms() + k->probe_interval_ms;
        }
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&lock);
}

json_t *
mf_keypool_json(void)
{
    json_t *list = json_array();
    double now = mf_now_ms();
    size_t i;

    pthread_mutex_lock(&lock);
    for (i = 0; i < nall; i++) {
        keyh_t *k = all[i];
        json_t *rests = json_array();
        json_t *j;
        size_t r;

        for (r = 0; r < k->nrests; r++) {
            const rest_t *rs = &k->rests[r];

            if (rs->until_ms > now) {
                json_array_append_new(
                    rests, json_pack("{s:s,s:s,s:f,s:f}", "model", rs->model,
                                     "why", rs->why, "since", rs->since,
                                     "retry_in_ms", rs->until_ms - now));
            }
        }
        j = json_pack("{s:s,s:I,s:s,s:s,s:s,s:f,s:I,s:I,s:i,s:o}", "provider",
                      k->provider, "index", (json_int_t)k->index, "key",
                      k->masked, "state", state_names[k->state], "why", k->why,
                      "since", k->since, "requests", (json_int_t)k->requests,
                      "errors", (json_int_t)k->errors, "in_flight",
                      k->in_flight, "rests", rests);
        json_array_append_new(list, j);
    }
    pthread_mutex_unlock(&lock);
    return list;
}

int
mf_keypool_set_manual(const char *provider, size_t index, int enable, char *err,
                      size_t errcap)
{
    mf_gen_t *g = mf_gen_acquire();
    mf_prov_t *p = g ? mf_gen_find_provider(g, mf_str_from(provider)) : NULL;
    int rc = MF_ERR;

    if (p == NULL) {
        snprintf(err, errcap, "no enabled provider named '%s'", provider);
    } else if (index >= p->nkeys) {
        snprintf(err, errcap, "provider '%s' has %zu keys (counted from 0)",
                 provider, p->nkeys);
    } else {
        keyh_t *k = p->keys[index];

        pthread_mutex_lock(&lock);
        if (enable) {
            /* the operator's word ends the key's rests too, on all nodes */
            k->fails = 0;
            k->nrests = 0;
            k->rests_clear = 1;
            set_state(k, KEY_OK, "enabled by the operator");
        } else {
            set_state(k, KEY_MANUAL, "disabled by the operator");
        }
        pthread_mutex_unlock(&lock);
        rc = MF_OK;
    }
    mf_gen_release(g);
    return rc;
}

/* Probes */

typedef struct {
    keyh_t *k;
    mf_upcall_t *call;
    int status;
    /* copies taken under the lock: a reload may replace the key's strings */
    char url[1024];
    char header[64];
    char key[512];
    int tls_verify;
} probe_t;

static void
probe_head(void *arg, const mf_http_head_t *h)
{
    ((probe_t *)arg)->status = h->status;
}

static void
probe_data(void *arg, const char *data, size_t len)
{
    MF_UNUSED(arg);
    MF_UNUSED(data);
    MF_UNUSED(len);
}

static void
probe_done(probe_t *pr, const char *err)
{
    keyh_t *k = pr->k;
    char why[160];

    pthread_mutex_lock(&lock);
    k->probing = 0;
    if (k->gone) {
        /* no generation binds the key any more */
        pthread_mutex_unlock(&lock);
        key_free(k);
        free(pr);
        return;
    }
    if (err == NULL && pr->status >= 200 && pr->status < 300) {
        if (k->state == KEY_QUARANTINED || k->state == KEY_DISABLED) {
            snprintf(why, sizeof(why), "probe passed (%d)", pr->status);
            k->fails = 0;
            set_state(k, KEY_OK, why);
        }
    } else {
        k->next_probe = mf_now_ms() + k->probe_interval_ms;
        if (err != NULL) {
            snprintf(why, sizeof(why), "%s; probe failed: %s",
                     k->state == KEY_DISABLED ? "refused" : "quarantined", err);
        } else {
            snprintf(why, sizeof(why), "%s; probe answered %d",
                     k->state == KEY_DISABLED ? "refused" : "quarantined",
                     pr->status);
        }
        snprintf(k->why, sizeof(k->why), "%s", why);
    }
    pthread_mutex_unlock(&lock);
    free(pr);
}

static void
probe_end(void *arg)
{
    probe_done(arg, NULL);
}

static void
probe_error(void *arg, mf_uperr_t kind, const char *msg)
{
    MF_UNUSED(kind);
    probe_done(arg, msg);
}

static void
probe_start(mf_worker_t *w, probe_t *pr)
{
    static const mf_upcall_cbs_t cbs = {.on_head = probe_head,
                                        .on_data = probe_data,
                                        .on_end = probe_end,
                                        .on_error = probe_error};
    char pathbuf[1024];
    mf_buf_t req = {0};
    mf_upcall_opts_t opts;
    mf_url_t u;
    int bearer = strcasecmp(pr->header, "authorization") == 0;

    if (mf_url_parse(pr->url, strlen(pr->url), &u, pathbuf, sizeof(pathbuf)) !=
        MF_OK) {
        probe_done(pr, "the probe URL cannot be used");
        return;
    }
    mf_buf_printf(&req,
                  "GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s: %s%s\r\n"
                  "User-Agent: manifold-probe\r\n\r\n",
                  u.path, u.host, u.port, pr->header, bearer ? "Bearer " : "",
                  pr->key);
    memset(&opts, 0, sizeof(opts));
    opts.connect_timeout_ms = 5000;
    opts.first_byte_timeout_ms = 10000;
    opts.idle_timeout_ms = 10000;
    opts.tls_verify = pr->tls_verify;
    pr->call = mf_upstream_call(w, &u, &opts, req.data, req.len, &cbs, pr);
    mf_buf_free(&req);
    if (pr->call == NULL) {
        probe_done(pr, "the probe could not start");
        return;
    }
    mf_upcall_start(pr->call);
}

/*
 * Redis: per key, its state as one string "state|until_wall_ms|why" under
 * mf:keyhealth:{mf-keys}:<provider>:<fingerprint> (an hour's expiry,
 * renewed by each change), and its rests as the hash
 * mf:keyrest:{mf-keys}:<provider>:<fingerprint>, one field per model,
 * "until_wall_ms|why", expiring with the longest rest. Every key carries
 * the one hash tag {mf-keys}: the MGET of the states and the script
 * reading the rests name many keys in one command, which a Redis Cluster
 * runs only when they are in one slot. Replies find their key again by provider
 * and fingerprint: rows come and go with generations between a command and its
 * reply.
 */

#define MF_SYNC_KEYS 64
#define MF_SYNC_RESTS 256 /* rests published per tick at most */

static const mf_keypool_redis_t *redis; /* mf_keypool_set_redis */

typedef struct {
    size_t n;
    struct {
        char provider[128];
        char fp[17];
    } ids[MF_SYNC_KEYS];
} sync_t;

static keyh_t *
sync_find(const sync_t *s, size_t i)
{
    size_t j;

    for (j = 0; j < nall; j++) {
        if (strcmp(all[j]->fp, s->ids[i].fp) == 0 &&
            strcmp(all[j]->provider, s->ids[i].provider) == 0) {
            return all[j];
        }
    }
    return NULL;
}

/* A reply's string as a C string in buf; 0 when it is none or too long. */
static int
reply_str(const mf_redis_reply_t *e, char *buf, size_t cap)
{
    if (e->type != MF_REDIS_STRING || e->str.len >= cap) {
        return 0;
    }
    memcpy(buf, e->str.data, e->str.len);
    buf[e->str.len] = '\0';
    return 1;
}

static void
sync_reply(void *arg, const mf_redis_reply_t *rep, const char *err)
{
    sync_t *s = arg;
    size_t i;
    double now = mf_now_ms();

    if (err != NULL || rep == NULL || rep->type != MF_REDIS_ARRAY) {
        free(s);
        return;
    }
    pthread_mutex_lock(&lock);
    for (i = 0; i < rep->nelements && i < s->n; i++) {
        keyh_t *k = sync_find(s, i);
        char buf[256], *bar, *bar2;
        int st;

        if (k == NULL || k->dirty ||
            !reply_str(&rep->elements[i], buf, sizeof(buf))) {
            continue;
        }
        st = atoi(buf);
        bar = strchr(buf, '|');
        bar2 = bar ? strchr(bar + 1, '|') : NULL;
        if (bar == NULL || bar2 == NULL || st < 0 || st > KEY_MANUAL ||
            st == KEY_COOLDOWN || (key_state_t)st == k->state) {
            continue;
        }
        k->state = (key_state_t)st;
        k->since = mf_wall_time();
        snprintf(k->why, sizeof(k->why), "from another node: %s", bar2 + 1);
        if (k->state == KEY_QUARANTINED || k->state == KEY_DISABLED) {
            k->next_probe = now + k->probe_interval_ms;
        }
    }
    pthread_mutex_unlock(&lock);
    free(s);
}

/* The rests other nodes published: a model's rest is taken when this node
 * has none running for it, or one ending more than a second sooner. */
static void
rests_reply(void *arg, const mf_redis_reply_t *rep, const char *err)
{
    sync_t *s = arg;
    double now_wall = mf_wall_time() * 1000, now = mf_now_ms();
    size_t i, f;

    if (err != NULL || rep == NULL || rep->type != MF_REDIS_ARRAY) {
        free(s);
        return;
    }
    pthread_mutex_lock(&lock);
    for (i = 0; i < rep->nelements && i < s->n; i++) {
        const mf_redis_reply_t *h = &rep->elements[i];
        keyh_t *k = sync_find(s, i);

        if (k == NULL || h->type != MF_REDIS_ARRAY) {
            continue;
        }
        for (f = 0; f + 1 < h->nelements && f < 2 * MF_KEY_RESTS; f += 2) {
            char model[128], buf[256], *bar;
            double until, ends;
            rest_t *r;

            if (!reply_str(&h->elements[f], model, sizeof(model)) ||
                !reply_str(&h->elements[f + 1], buf, sizeof(buf)) ||
                (bar = strchr(buf, '|')) == NULL) {
                continue;
            }
            until = atof(buf);
            if (!isfinite(until) || until <= now_wall) {
                continue;
            }
            /* another node's rest, no longer than this node's cap */
            ends = now + fmin(until - now_wall, max_rest_ms);
            r = rest_find(k, mf_str_from(model));
            if (r != NULL && (r->dirty || r->until_ms + 1000 >= ends)) {
                continue;
            }
            r = rest_get(k, mf_str_from(model), now);
            if (r->until_ms <= now) {
                r->since = mf_wall_time();
            }
            r->until_ms = ends;
            snprintf(r->why, sizeof(r->why), "from another node: %s", bar + 1);
        }
    }
    pthread_mutex_unlock(&lock);
    free(s);
}

static void
ignore_reply(void *arg, const mf_redis_reply_t *rep, const char *err)
{
    MF_UNUSED(arg);
    MF_UNUSED(rep);
    MF_UNUSED(err);
}

/* What a tick sends, taken under the lock. */
typedef struct {
    char state_name[MF_SYNC_KEYS][200];
    char rest_name[MF_SYNC_KEYS][200];
    char value[MF_SYNC_KEYS][300];
    char px[MF_SYNC_KEYS][32];
    int dirty[MF_SYNC_KEYS];
    int clear[MF_SYNC_KEYS];        /* DEL the key's rests first */
    char rest_px[MF_SYNC_KEYS][32]; /* "" when no rest to publish */
    size_t nrest;
    struct {
        size_t key;
        char model[128];
        char value[300];
    } rest[MF_SYNC_RESTS];
} outbox_t;

/* Takes k's dirty rests into o (as many as fit; the rest wait a tick). */
static void
outbox_rests(outbox_t *o, size_t i, keyh_t *k, double now, double now_wall)
{
    double longest = 0;
    size_t r;

    o->rest_px[i][0] = '\0';
    o->clear[i] = k->rests_clear;
    k->rests_clear = 0;
    if (!k->rests_dirty) {
        return;
    }
    k->rests_dirty = 0;
    for (r = 0; r < k->nrests; r++) {
        rest_t *rs = &k->rests[r];

        if (rs->until_ms > now) {
            longest = fmax(longest, rs->until_ms - now);
        }
        if (!rs->dirty) {
            continue;
        }
        if (o->nrest == MF_SYNC_RESTS) {
            k->rests_dirty = 1;
            continue;
        }
        rs->dirty = 0;
        if (rs->until_ms <= now) {
            continue; /* ended before it went out */
        }
        o->rest[o->nrest].key = i;
        snprintf(o->rest[o->nrest].model, sizeof(o->rest[0].model), "%s",
                 rs->model);
        snprintf(o->rest[o->nrest].value, sizeof(o->rest[0].value), "%.0f|%s",
                 now_wall + (rs->until_ms - now), rs->why);
        o->nrest++;
    }
    if (longest > 0) {
        snprintf(o->rest_px[i], sizeof(o->rest_px[i]), "%.0f",
                 fmax(1, longest));
    }
}

static void
redis_sync(mf_worker_t *w, json_t *conf)
{
    static const char script[] = "local r = {} for i, k in ipairs(KEYS) do "
                                 "r[i] = redis.call('HGETALL', k) end return r";
    outbox_t *o = mf_xcalloc(1, sizeof(*o));
    sync_t *s = mf_xcalloc(1, sizeof(*s)), *s2;
    mf_str_t argv[3 + MF_SYNC_KEYS];
    char nkeys[16];
    size_t i, n;
    double now = mf_now_ms(), now_wall = mf_wall_time() * 1000;

    /* what to send is taken under the lock; the commands go out after it
     * (a dropped connection calls back, and the callbacks take the lock) */
    pthread_mutex_lock(&lock);
    n = nall < MF_SYNC_KEYS ? nall : MF_SYNC_KEYS;
    /* cppcheck-suppress knownConditionTrueFalse */
    for (i = 0; i < n; i++) {
        keyh_t *k = all[i];

        snprintf(s->ids[i].provider, sizeof(s->ids[i].provider), "%s",
                 k->provider);
        memcpy(s->ids[i].fp, k->fp, sizeof(k->fp));
        snprintf(o->state_name[i], sizeof(o->state_name[i]),
                 "mf:keyhealth:{mf-keys}:%s:%s", k->provider, k->fp);
        snprintf(o->rest_name[i], sizeof(o->rest_name[i]),
                 "mf:keyrest:{mf-keys}:%s:%s", k->provider, k->fp);
        o->dirty[i] = k->dirty;
        if (k->dirty) {
            k->dirty = 0;
            snprintf(o->value[i], sizeof(o->value[i]), "%d|0|%s", (int)k->state,
                     k->why);
            snprintf(o->px[i], sizeof(o->px[i]), "3600000");
        }
        outbox_rests(o, i, k, now, now_wall);
    }
    pthread_mutex_unlock(&lock);
    s->n = n;
    /* cppcheck-suppress knownConditionTrueFalse */
    if (n == 0) {
        free(o);
        free(s);
        return;
    }
    /* cppcheck-suppress knownConditionTrueFalse */
    for (i = 0; i < n; i++) {
        if (o->dirty[i]) {
            mf_str_t set[5] = {MF_STR("SET"), mf_str_from(o->state_name[i]),
                               mf_str_from(o->value[i]), MF_STR("PX"),
                               mf_str_from(o->px[i])};

            redis->command(w, conf, 5, set, ignore_reply, NULL);
        }
    }
    for (i = 0; i < n; i++) {
        if (o->clear[i]) {
            mf_str_t del[2] = {MF_STR("DEL"), mf_str_from(o->rest_name[i])};

            redis->command(w, conf, 2, del, ignore_reply, NULL);
        }
    }
    for (i = 0; i < o->nrest; i++) {
        mf_str_t hset[4] = {
            MF_STR("HSET"), mf_str_from(o->rest_name[o->rest[i].key]),
            mf_str_from(o->rest[i].model), mf_str_from(o->rest[i].value)};

        redis->command(w, conf, 4, hset, ignore_reply, NULL);
    }
    for (i = 0; i < n; i++) {
        if (o->rest_px[i][0] != '\0') {
            /* the hash lives as long as the longest rest in it; a longer
             * one another node wrote is published again by that node */
            mf_str_t px[3] = {MF_STR("PEXPIRE"), mf_str_from(o->rest_name[i]),
                              mf_str_from(o->rest_px[i])};

            redis->command(w, conf, 3, px, ignore_reply, NULL);
        }
    }
    argv[0] = MF_STR("MGET");
    for (i = 0; i < n; i++) {
        argv[i + 1] = mf_str_from(o->state_name[i]);
    }
    s2 = mf_xmalloc(sizeof(*s2));
    memcpy(s2, s, sizeof(*s));
    if (redis->command(w, conf, (int)n + 1, argv, sync_reply, s) != MF_OK) {
        free(s);
    }
    snprintf(nkeys, sizeof(nkeys), "%zu", n);
    argv[0] = MF_STR("EVAL");
    argv[1] = MF_STR(script);
    argv[2] = mf_str_from(nkeys);
    for (i = 0; i < n; i++) {
        argv[i + 3] = mf_str_from(o->rest_name[i]);
    }
    if (redis->command(w, conf, (int)n + 3, argv, rests_reply, s2) != MF_OK) {
        free(s2);
    }
    free(o);
}

void
mf_keypool_set_redis(const mf_keypool_redis_t *r)
{
    redis = r;
}

void
mf_keypool_tick(mf_worker_t *w, json_t *redis_conf)
{
    double now = mf_now_ms();
    probe_t *due[16];
    size_t i, ndue = 0;

    pthread_mutex_lock(&lock);
    for (i = 0; i < nall && ndue < 16; i++) {
        keyh_t *k = all[i];
        probe_t *pr;

        if ((k->state != KEY_QUARANTINED && k->state != KEY_DISABLED) ||
            k->probing || now < k->next_probe || k->key == NULL) {
            continue;
        }
        pr = mf_xcalloc(1, sizeof(*pr));
        pr->k = k;
        snprintf(pr->url, sizeof(pr->url), "%s%s", k->base_url, k->probe_path);
        snprintf(pr->header, sizeof(pr->header), "%s", k->probe_header);
        snprintf(pr->key, sizeof(pr->key), "%s", k->key);
        pr->tls_verify = k->tls_verify;
        k->probing = 1;
        due[ndue++] = pr;
    }
    pthread_mutex_unlock(&lock);
    for (i = 0; i < ndue; i++) {
        probe_start(w, due[i]);
    }
    if (redis_conf != NULL && redis != NULL) {
        redis_sync(w, redis_conf);
    }
}

void
mf_keypool_free(void)
{
    size_t i;

    for (i = 0; i < nall; i++) {
        key_free(all[i]);
    }
    free(all);
    all = NULL;
    nall = 0;
}

/* Secret scrubbing */

/* A byte that continues a key-like token. */
static int
tok_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

/* Replaces msg[at, at + n) with the secret's mask; msg stays a string. */
static size_t
mask_at(char *msg, size_t at, size_t n)
{
    char mask[32];
    size_t m, len = strlen(msg);

    mf_mask_secret((mf_str_t){msg + at, n}, mask, sizeof(mask));
    m = strlen(mask);
    if (m > n) {
        m = n; /* a mask never makes the text longer */
    }
    memmove(msg + at + m, msg + at + n, len - at - n + 1);
    memcpy(msg + at, mask, m);
    return m;
}

/* Masks each occurrence of secret in msg, and a prefix of it (8 bytes or
 * more) that ends msg: a message cut inside the key. */
static void
scrub_one(char *msg, const char *secret, size_t n)
{
    size_t len, at = 0, k;
    char *hit;

    if (n < 8) {
        return; /* too short to tell from text */
    }
    while ((hit = memmem(msg + at, strlen(msg + at), secret, n)) != NULL) {
        at = (size_t)(hit - msg);
        at += mask_at(msg, at, n);
    }
    len = strlen(msg);
    for (k = n - 1 < len ? n - 1 : len; k >= 8; k--) {
        if (memcmp(msg + len - k, secret, k) == 0) {
            mask_at(msg, len - k, k);
            break;
        }
    }
}

/* Masks what looks like an API key: a known prefix at a word start and
 * 12 or more token bytes after it. */
static void
scrub_shapes(char *msg)
{
    static const char *const shapes[] = {
        "sk-",  "sk_",  "rk_",   "gsk_", "xai-", "pplx-",  "AIza",    "AKIA",
        "ASIA", "ABSK", "ya29.", "hf_",  "r8_",  "nvapi-", "Bearer ", NULL};
    size_t i, j;

    for (i = 0; msg[i] != '\0'; i++) {
        if (i > 0 && tok_char(msg[i - 1])) {
            continue;
        }
        for (j = 0; shapes[j] != NULL; j++) {
            size_t pl = strlen(shapes[j]), n = pl;

            if (strncmp(msg + i, shapes[j], pl) != 0) {
                continue;
            }
            while (tok_char(msg[i + n])) {
                n++;
            }
            while (n > pl && msg[i + n - 1] == '.') {
                n--; /* the end of a sentence */
            }
            /* cppcheck-suppress knownConditionTrueFalse */
            if (n - pl >= 12) { /* n grew over the token above */
                if (shapes[j][pl - 1] == ' ') { /* Bearer: the token */
                    mask_at(msg, i + pl, n - pl);
                } else {
                    mask_at(msg, i, n);
                }
            }
            break;
        }
    }
}

void
mf_keypool_scrub(const mf_prov_t *p, const mf_str_t *secrets, size_t n,
                 char *msg)
{
    size_t i;

    for (i = 0; i < n; i++) {
        scrub_one(msg, secrets[i].data, secrets[i].len);
    }
    for (i = 0; p != NULL && i < p->nkeys; i++) {
        const char *key = p->key_str[i], *part = key, *colon;

        scrub_one(msg, key, strlen(key));
        /* a composite key (Bedrock's id:secret:token): each part */
        while ((colon = strchr(part, ':')) != NULL) {
            scrub_one(msg, part, (size_t)(colon - part));
            part = colon + 1;
        }
        if (part != key) {
            scrub_one(msg, part, strlen(part));
        }
    }
    scrub_shapes(msg);
}

const mf_gen_provider_hooks_t mf_keypool_gen_hooks = {
    .configure = keypool_configure,
    .bind = mf_keypool_bind,
    .unbind = mf_keypool_unbind,
};
