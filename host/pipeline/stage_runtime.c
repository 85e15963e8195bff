/*
 * Stage runtimes: a small registry by name. The C runtime is always
 * there; others (Lua) register at start, before any generation is built,
 * so lookups need no lock.
 */
#include "pipeline/stage_runtime.h"

#include <stdio.h>
#include <stdlib.h>

#define MF_STAGE_RUNTIMES_MAX 8

static const mf_stage_runtime_t *runtimes[MF_STAGE_RUNTIMES_MAX] = {
    &mf_stage_runtime_c};
static size_t nruntimes = 1;

void
mf_stage_runtime_register(const mf_stage_runtime_t *rt)
{
    size_t i;

    for (i = 0; i < nruntimes; i++) {
        if (strcmp(runtimes[i]->name, rt->name) == 0) {
            runtimes[i] = rt;
            return;
        }
    }
    if (nruntimes == MF_STAGE_RUNTIMES_MAX) {
        fprintf(stderr, "stage runtime '%s': more than %d runtimes\n", rt->name,
                MF_STAGE_RUNTIMES_MAX);
        abort();
    }
    runtimes[nruntimes++] = rt;
}

const char *
mf_stage_conf_file(const mf_stage_conf_t *sc)
{
    return sc->plugin != NULL ? sc->plugin : sc->lua;
}

const mf_stage_runtime_t *
mf_stage_runtime_for(const mf_stage_conf_t *sc, char *err, size_t errcap)
{
    const char *name = sc->plugin != NULL ? "c" : "lua";
    size_t i;

    for (i = 0; i < nruntimes; i++) {
        if (strcmp(runtimes[i]->name, name) == 0) {
            return runtimes[i];
        }
    }
    snprintf(err, errcap,
             "stage '%s': %s: this program runs no '%s' stages (no %s "
             "runtime registered)",
             sc->name, mf_stage_conf_file(sc), name, name);
    return NULL;
}
