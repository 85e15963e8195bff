/*
 * Key pools: the health of every provider key, shared by all workers (and
 * by all nodes through Redis when `redis:` is set). A key answered
 * 401/403 is disabled for every model; a 429 rests it for the model asked
 * only, for Retry-After (or an exponential backoff per key and model);
 * 5xx, timeouts and connect errors count toward
 * key_failures, which quarantines it; a probe (GET base_url + probe.path
 * with the key) brings a disabled or quarantined key back.
 */
#ifndef MF_KEYPOOL_H
#define MF_KEYPOOL_H

#include "pipeline/generation.h"
#include "http/worker-t.h"

typedef enum {
    MF_KEYRES_OK = 0, /* the attempt succeeded */
    MF_KEYRES_AUTH,   /* 401/403: the key is refused */
    MF_KEYRES_RATE,   /* 429 */
    MF_KEYRES_FAIL,   /* 5xx, timeout, connect error, cut */
    MF_KEYRES_NEUTRAL /* the request's own fault (4xx): says nothing */
} mf_keyres_t;

/* Binds the provider's non-empty keys to their health entries (made on
 * first sight, kept for the process). Called when a generation is built;
 * a key disabled by a 401 is enabled again when its provider's config
 * changed. */
void mf_keypool_bind(mf_prov_t *p);
/* Lets go of what mf_keypool_bind took (the generation is freed): a key
 * no generation binds any more leaves the registry. */
void mf_keypool_unbind(mf_prov_t *p);
/* The generation's provider hooks: set max_rest from the config, bind,
 * unbind (mf_gen_set_provider_hooks). */
extern const mf_gen_provider_hooks_t mf_keypool_gen_hooks;
/* Picks a key usable for `model` (the upstream model) not in `tried`
 * (bit per key index < 64) by the provider's key_strategy; with
 * last_resort, a quarantined key too (when nothing else is left, a key
 * resting for its provider's outage is better than no answer). -1 when
 * none. *retry_ms gets the shortest wait until a key resting for this
 * model is usable again (0 when none rests). */
int mf_keypool_pick(mf_prov_t *p, mf_str_t model, uint64_t tried,
                    int last_resort, double *retry_ms);
/* An attempt starts / ended with a key; a 429 (MF_KEYRES_RATE) rests the
 * key for `model` only, a success ends that model's backoff. */
void mf_keypool_begin(mf_prov_t *p, int k);
void mf_keypool_end(mf_prov_t *p, int k, mf_str_t model, mf_keyres_t res,
                    double retry_after_ms, const char *why);
/* The longest rest a 429 gives a key (limits.max_retry_after), also for
 * rests learnt from other nodes through Redis. */
void mf_keypool_set_max_rest(double ms);
/* Masks secrets in msg (a string, edited in place; it only shrinks), as
 * keys are shown elsewhere ("sk-...abcd"): the n secrets given (the
 * attempt's key and credential headers), every key of provider p (and
 * each ':'-separated part of one), and text shaped like an API key of a
 * known provider (sk-, gsk_, xai-, pplx-, AIza, AKIA, ya29., Bearer ...).
 * For upstream error messages before a client, a log or a metric sees
 * them. */
void mf_keypool_scrub(const mf_prov_t *p, const mf_str_t *secrets, size_t n,
                      char *msg);
/* Every key bound by a live generation (masked), its state, why, since
 * when, requests, errors, and its running rests ("rests": model, why,
 * since, retry_in_ms). */
json_t *mf_keypool_json(void);
/* Operator: enable or disable key `index` of `provider` by hand. */
int mf_keypool_set_manual(const char *provider, size_t index, int enable,
                          char *err, size_t errcap);
/* How the key pool reaches Redis: a host command on the worker's
 * connection with the `redis:` settings conf (the Redis service's
 * mf_svc_redis_raw). MF_ERR (cb not called) when Redis is not reachable
 * now; otherwise cb runs once, later, with the reply or err. */
typedef struct mf_keypool_redis_s {
    int (*command)(mf_worker_t *w, json_t *conf, int argc, const mf_str_t *argv,
                   void (*cb)(void *arg, const mf_redis_reply_t *reply,
                              const char *err),
                   void *arg);
} mf_keypool_redis_t;
/* Sets the Redis table (before the workers start); without one, health
 * stays on this node. */
void mf_keypool_set_redis(const mf_keypool_redis_t *r);
/* Worker 0, every second: probes keys that are due, and syncs health
 * with Redis when redis_conf (the current `redis:` settings) is not
 * NULL. */
void mf_keypool_tick(mf_worker_t *w, json_t *redis_conf);
/* Frees the registry (exit). */
void mf_keypool_free(void);

#endif
