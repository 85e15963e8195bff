/*
 * Lua stages on LuaJIT: one lua_State per worker per stage and generation,
 * each call in a coroutine so async host services can yield.
 */
#ifndef MF_LUA_STAGE_H
#define MF_LUA_STAGE_H

#include "pipeline/request-t.h"

/* Loads the stage's script into nworkers fresh states, with its sandbox
 * and limits; NULL with err (file:line). *hooks gets a bit per stage
 * function the module defines. */
mf_lua_stage_t *mf_lua_stage_load(const mf_stage_conf_t *sc, int nworkers,
                                  const char *lua_path, unsigned *hooks,
                                  char *err, size_t errcap);
/* Whether ls was loaded with the sandbox and limits sc asks for. */
int mf_lua_stage_same_limits(const mf_lua_stage_t *ls,
                             const mf_stage_conf_t *sc);
void mf_lua_stage_free(mf_lua_stage_t *ls);
/* Runs M.<stage>(conf, ctx) for r on its worker's state. */
mf_action_t mf_lua_stage_call(mf_pstage_t *st, mf_stage_t stage, mf_req_t *r,
                              void **ctx, mf_str_t data, int last);
/* Frees the per-request ctx table. */
void mf_lua_stage_done(mf_pstage_t *st, mf_req_t *r, void **ctx);
/* Files of the modules the script required while loading (for the file
 * watcher); owned by ls. */
const char *const *mf_lua_stage_deps(mf_lua_stage_t *ls, size_t *n);
/* Version string the module declares ("" when none). */
const char *mf_lua_stage_version(mf_lua_stage_t *ls);

#endif
