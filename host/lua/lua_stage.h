/*
 * The Lua stage runtime on LuaJIT: one lua_State per worker per stage and
 * generation, each call in a coroutine so async host services can yield.
 */
#ifndef MF_LUA_STAGE_H
#define MF_LUA_STAGE_H

/* Registers the runtime of `lua:` stages with the pipeline; call once at
 * start, before the first generation is built. */
void mf_lua_stage_init(void);

#endif
