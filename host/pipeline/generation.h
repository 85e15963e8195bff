/*
 * Generations: a loaded config with its stages and providers; requests
 * hold a reference to the one they started on. Stage instances are
 * shared by consecutive generations while their files and config stay
 * the same.
 */
#ifndef MF_GENERATION_H
#define MF_GENERATION_H

#include "pipeline/generation-t.h"

/* Records the stage's last error (reload or runtime), thread-safe. */
void mf_stage_set_error(mf_pstage_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Copies the last error into buf ("" when none); returns its time. */
double mf_stage_get_error(mf_pstage_t *s, char *buf, size_t cap);
/* The stage's version string ("" when it declares none). */
const char *mf_stage_version(const mf_pstage_t *s);

/*
 * Builds a generation from a validated config (taking ownership of it on
 * success). Stages of `prev` whose files and config did not change are
 * shared, unless `force` names them ("*" = every stage). NULL with a
 * sentence naming file and line in err; the config is then the caller's.
 */
mf_gen_t *mf_gen_build(mf_config_t *config, int nworkers, mf_gen_t *prev,
                       const char *force, char *err, size_t errcap);
/* Checks that a plugin of the config's search path serves the type of
 * each provider; MF_ERR with one line per provider (and a "did you
 * mean") in err. Loads and unloads the provider plugins. */
int mf_gen_check_providers(mf_config_t *config, char *err, size_t errcap);
/* The current generation with a reference taken (NULL before the first
 * or after shutdown); mf_gen_release gives it back. On a thread that
 * started a reader, without the generation lock. */
mf_gen_t *mf_gen_acquire(void);
void mf_gen_release(mf_gen_t *g);
/* Makes g current (taking the caller's reference) and releases the one
 * before, once no reader still looks at it without a reference. */
void mf_gen_set_current(mf_gen_t *g);

/*
 * The read path of a worker, without a lock: a worker thread starts its
 * reader before its loop and stops it after; mf_gen_enter gives the
 * current generation borrowed (no reference) until mf_gen_leave, a short
 * window that mf_gen_set_current waits out before it releases the
 * generation it replaced. A request that outlives the window takes a
 * reference (mf_gen_acquire). Windows do not nest and hold no acquire
 * or release. On a thread without a reader, the window holds the
 * generation lock.
 */
void mf_gen_reader_start(void);
void mf_gen_reader_stop(void);
mf_gen_t *mf_gen_enter(void);
void mf_gen_leave(void);
mf_prov_t *mf_gen_find_provider(mf_gen_t *g, mf_str_t name);
mf_pstage_t *mf_gen_find_stage(mf_gen_t *g, const char *name);
/* Calls fn for each generation not yet freed, under the generation lock
 * (fn must not acquire or release generations). */
void mf_gen_foreach_alive(void (*fn)(mf_gen_t *g, void *arg), void *arg);
/* Turns stage s on or off (its atomic `enabled`) and counts the change
 * in the epoch below. */
void mf_stage_set_enabled(mf_pstage_t *s, int on);
/* A count of the changes made by mf_stage_set_enabled, process-wide:
 * what was computed from the stages' enabled settings is still true
 * while it stays the same (the model lists' cache). */
unsigned mf_stage_enabled_epoch(void);
/* Whether a stage's files changed on disk since it was loaded. */
int mf_stage_files_changed(const mf_pstage_t *s);

/* What the layer that keeps provider keys does with a generation's
 * providers: configure once per build (with its config), bind each
 * provider bound to its plugin, unbind each when the generation is freed.
 * Set once at start (the key pool's table); NULL members are skipped. */
typedef struct mf_gen_provider_hooks_s {
    void (*configure)(const mf_config_t *c);
    void (*bind)(mf_prov_t *p);
    void (*unbind)(mf_prov_t *p);
} mf_gen_provider_hooks_t;

void mf_gen_set_provider_hooks(const mf_gen_provider_hooks_t *h);

/* While a stage loads (its init, on whichever thread runs it): a
 * top-level config section it reads (NULL when absent), which ties the
 * stage to the sections, and an admin command it registers. Outside a
 * load: NULL and MF_ERR. */
const json_t *mf_gen_loading_section(const char *name);
/* The `redis:` settings (a new reference, NULL when none) of the config
 * being loaded, else of the current generation. */
json_t *mf_gen_redis_conf(void);
int mf_gen_loading_command(const char *name, const char *usage,
                           mf_command_fn fn, void *arg);
/* While a stage loads: whether a model call (kind MF_MODEL_*) of model,
 * pinned to provider (empty: routing), can be served by the config being
 * loaded; MF_ERR with the reason in why. See api->model_check. */
int mf_gen_loading_model_check(int kind, mf_str_t model, mf_str_t provider,
                               char *why, size_t whylen);
/* While a stage loads: a model name it serves itself (a virtual model,
 * ABI 1.6 api->declare_model, Lua mf.models.declare), kept on the stage
 * and listed by the model lists while it is enabled. MF_ERR with the
 * reason in err outside a load or for a pattern or empty name. */
int mf_gen_loading_declare_model(const char *name, char *err, size_t errcap);
/* While a stage loads: hooks (MF_HOOK bits, on_request to on_done) its
 * instance is not to be called for (ABI 1.8 api->skip_hooks). MF_ERR
 * with the reason in err outside a load or for a bit that is no hook. */
int mf_gen_loading_skip_hooks(unsigned hooks, char *err, size_t errcap);
/* The admin command `name` of a stage of g, or NULL. */
const mf_command_t *mf_gen_find_command(mf_gen_t *g, mf_str_t name);

/* Stage-bit helper. */
#define MF_HOOK(s) (1u << (s))

#endif
