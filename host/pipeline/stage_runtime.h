/*
 * Stage runtimes: the registry of what loads and runs stage files (the
 * table is in pipeline/stage-t.h). The C runtime is built in; the Lua one
 * registers itself at start.
 */
#ifndef MF_STAGE_RUNTIME_H
#define MF_STAGE_RUNTIME_H

#include "pipeline/stage-t.h"

/* The runtime of C plugins (.so). */
extern const mf_stage_runtime_t mf_stage_runtime_c;

/* Adds a runtime under rt->name (a static table, kept for the process);
 * one registered again under the same name replaces it. Call at start,
 * before the first generation is built. */
void mf_stage_runtime_register(const mf_stage_runtime_t *rt);
/* The runtime that runs stage sc (`plugin:` is "c", `lua:` is "lua");
 * NULL with a sentence in err when none is registered for it. */
const mf_stage_runtime_t *mf_stage_runtime_for(const mf_stage_conf_t *sc,
                                               char *err, size_t errcap);
/* The stage file sc names (`plugin:` or `lua:`). */
const char *mf_stage_conf_file(const mf_stage_conf_t *sc);

#endif
