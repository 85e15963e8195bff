/*
 * Upstream model lists: for a provider with `upstream_models:`, its own
 * list of models (GET base_url + path with its first key), fetched in the
 * background on worker 0's tick every `refresh`, kept in memory (one per
 * process), so that /v1/models can list what its globs serve. Off unless
 * configured; a failed fetch keeps the last list and is tried again
 * after at most 30 s.
 */
#ifndef MF_MODELLIST_H
#define MF_MODELLIST_H

#include <jansson.h>

#include "http/worker-t.h"
#include "pipeline/generation.h"

/* Starts the fetches that are due for g's providers (worker 0). */
void mf_modellist_tick(mf_worker_t *w, mf_gen_t *g);

/* The names provider pc's last fetched list holds that its models (exact
 * names and globs) serve: a new reference to an array of strings, or
 * NULL when none was fetched (or upstream_models is off). */
json_t *mf_modellist_get(const mf_provider_conf_t *pc);

/* A count of the changes to the lists (a fetch that replaced one, a
 * provider's base_url that dropped one): what was computed from them is
 * still true while it stays the same (the model lists' cache). */
unsigned mf_modellist_version(void);

/* Frees every list (at exit). */
void mf_modellist_free(void);

#endif
