/*
 * Types only: a generation (a loaded config with its stages and
 * providers) and a provider bound to its plugin.
 */
#ifndef MF_GENERATION_T_H
#define MF_GENERATION_T_H

#include <stdatomic.h>

#include "config/config.h"
#include "pipeline/plugin.h"
#include "pipeline/stage-t.h"

/* A configured provider, bound to its plugin. */
typedef struct mf_prov_s {
    mf_provider_conf_t *conf;
    mf_dso_t *dso;
    const mf_provider_t *ops;
    void *state;
    size_t index;
    atomic_uint key_rr;
    struct mf_keyh_s **keys; /* health of each non-empty key (keypool.c) */
    const char **key_str;    /* those keys (the config's strings) */
    size_t nkeys;
} mf_prov_t;

typedef struct mf_gen_s {
    unsigned id;
    atomic_int refs;
    double created_at;           /* unix time */
    struct mf_gen_s *next_alive; /* list of generations not yet freed */
    mf_config_t *config;
    mf_pstage_t **stages;
    size_t nstages;
    mf_prov_t *providers;
    size_t nproviders;
    mf_dso_t **provider_dsos;
    size_t nprovider_dsos;
    unsigned hooks; /* union of stage hooks */
    int nworkers;
    const struct mf_epath_s **epaths; /* the endpoint table (endpoint.h) */
    size_t nepaths;
} mf_gen_t;

/* A worker thread's reader of the current generation (generation.h). */
typedef struct mf_gen_reader_s {
    atomic_uint seq; /* odd while inside a window */
    struct mf_gen_reader_s *next;
} mf_gen_reader_t;

#endif
