/*
 * Types only: a loaded stage instance (C plugin or Lua script), its
 * counters and the files it was loaded from.
 */
#ifndef MF_STAGE_T_H
#define MF_STAGE_T_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <manifold/plugin.h>

#include "pipeline/plugin.h"

typedef struct mf_lua_stage_s mf_lua_stage_t;

typedef enum { MF_STAGE_KIND_C, MF_STAGE_KIND_LUA } mf_stage_kind_t;

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
typedef struct mf_pstage_s {
    atomic_int refs;
    char *name;
    char *file;
    mf_stage_kind_t kind;
    mf_dso_t *dso;           /* C */
    const mf_plugin_t *desc; /* C */
    void *state;             /* C */
    mf_lua_stage_t *lua;     /* Lua: one state per worker */
    unsigned hooks;          /* bit per mf_stage_t it serves */
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
} mf_pstage_t;

#endif
