/*
 * Types only: a loaded stage instance, the runtime that runs it (C
 * plugins, Lua scripts), its counters and the files it was loaded from.
 */
#ifndef MF_STAGE_T_H
#define MF_STAGE_T_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <manifold/plugin.h>

#include "config/config.h"
#include "pipeline/plugin.h"

typedef struct mf_pstage_s mf_pstage_t;
struct mf_epath_s; /* a path a stage serves (endpoint.h) */

/* An admin command a stage registered in its init (ABI 1.4). */
typedef struct mf_command_s {
    char *name;  /* "consumers.add" */
    char *usage; /* one line */
    mf_command_fn fn;
    void *arg;
} mf_command_t;

/*
 * A stage runtime: what loads and runs one kind of stage file (a .so, a
 * Lua script), as Redis's scripting engines implement one engine table.
 * The pipeline calls stages only through it; each runtime registers
 * itself at start (mf_stage_runtime_register), the C one is built in.
 */
typedef struct mf_stage_runtime_s {
    const char *name; /* the stage's kind in admin output: "c", "lua" */
    /* Loads stage `i` of config c for nworkers workers: returns the
     * instance (s->impl) and a bit per stage function it serves in
     * *hooks; NULL with a sentence naming file and line in err. */
    void *(*load)(const mf_config_t *c, size_t i, int nworkers, unsigned *hooks,
                  char *err, size_t errcap);
    /* Runs the stage's function for `stage` on r; data and last are the
     * body chunk of on_response_body. *ctx is its per-request slot. */
    mf_action_t (*call)(mf_pstage_t *s, mf_stage_t stage, mf_req_t *r,
                        void **ctx, mf_str_t data, int last);
    /* Frees a per-request slot left by a stage without on_done; NULL when
     * the runtime keeps none. */
    void (*done)(mf_pstage_t *s, mf_req_t *r, void **ctx);
    /* The version the stage declares ("" when none). */
    const char *(*version)(const void *impl);
    /* Files besides the stage file it read while loading (watched);
     * owned by impl. NULL when the runtime reads no others. */
    const char *const *(*deps)(const void *impl, size_t *n);
    /* Whether impl can serve sc as it is (same limits); NULL: always. */
    int (*same)(const void *impl, const mf_stage_conf_t *sc);
    /* Lets go of impl (fini, dlclose, lua_close). */
    void (*free)(void *impl);
    /* Serves a request to one of the stage's paths (stage
     * MF_STAGE_ENDPOINT); `ep` is its entry (endpoint.h). */
    mf_action_t (*serve)(mf_pstage_t *s, const struct mf_epath_s *ep,
                         mf_req_t *r, void **ctx);
} mf_stage_runtime_t;

/* Per-stage counters, updated by workers. */
typedef struct mf_stage_stats_s {
    atomic_uint_fast64_t requests; /* requests that ran one of its hooks */
    atomic_uint_fast64_t errors;   /* callbacks that failed */
    atomic_uint_fast64_t time_ns;  /* time spent in its callbacks */
} mf_stage_stats_t;

/* A file a stage was loaded from, to tell whether it changed since. */
typedef struct mf_fileid_s {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int missing;
} mf_fileid_t;

/*
 * A loaded stage. Generations share the instances of stages that did not
 * change (same file contents on disk, same config), so a reload re-inits
 * only what changed; the instance is freed (fini, dlclose, lua_close) with
 * its last generation.
 */
struct mf_pstage_s {
    atomic_int refs;
    char *name;
    char *file;
    const mf_stage_runtime_t *rt; /* what runs it */
    void *impl;                   /* the runtime's instance */
    unsigned hooks;               /* bit per mf_stage_t it serves */
    unsigned skipped; /* hooks its init left out (api->skip_hooks) */
    atomic_int enabled;
    int conf_enabled;   /* `enabled` in the config it was loaded with */
    json_t *config;     /* its config as loaded */
    mf_fileid_t *files; /* the stage file, then Lua modules it required */
    size_t nfiles;
    unsigned gen_id;  /* generation that loaded it */
    double loaded_at; /* unix time */
    mf_stage_stats_t stats;
    pthread_mutex_t err_lock;
    char last_error[512];
    double last_error_at;
    json_t *sections;       /* the config sections when it read one in init
                               (consumers, groups, prices), else NULL */
    unsigned reads;         /* MF_READS_*: the governance sections it read
                               and what it claimed (generation.c) */
    mf_command_t *commands; /* admin commands it registered */
    size_t ncommands;
    struct mf_epath_s *epaths; /* paths it added (endpoint.h) */
    size_t nepaths;
    char **models; /* model names it declared in its init (ABI 1.6),
                      listed as `models:` on its entry are */
    size_t nmodels;
};

#endif
