/*
 * Plugin loader: copies a .so to a unique path in the runtime directory (or
 * a memory file), dlopens it, checks its ABI.
 */
#ifndef MF_PLUGIN_LOADER_H
#define MF_PLUGIN_LOADER_H

#include "core/core.h"

typedef struct mf_dso_s {
    void *handle;
    const mf_plugin_t *desc;
    char *path; /* the configured path */
    int memfd;  /* the memory file it was loaded from, or -1 */
} mf_dso_t;

/* Loads a plugin; NULL with a sentence in err (path, dlerror, ABI). */
mf_dso_t *mf_plugin_load(const char *path, char *err, size_t errcap);
/* dlcloses and frees. */
void mf_plugin_unload(mf_dso_t *d);
/* The host API table every plugin's init() gets; set once at start,
 * before the first generation is built. */
void mf_plugin_set_api(const mf_host_api_t *api);
/* Runs d->init(api, config, state) on a helper thread within timeout_ms.
 * Returns its result, or MF_ERR with *timed_out set when it did not return
 * in time (1), or when the process was told to stop meanwhile (2,
 * mf_stop_requested): its thread is left running, detached, and the plugin
 * must stay loaded (mf_plugin_pin). */
int mf_plugin_init_bounded(const mf_plugin_t *d, const char *config,
                           void **state, double timeout_ms, int *timed_out);
/* Keeps d loaded for good (its init() still runs on a detached thread);
 * d is no longer the caller's. */
void mf_plugin_pin(mf_dso_t *d);

#endif
