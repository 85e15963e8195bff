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

#endif
