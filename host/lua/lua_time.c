/*
 * mf.now and mf.sleep (a host timer; the stage's coroutine yields).
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

static int
l_now(lua_State *L)
{
    lua_pushnumber(L, mf_now_ms());
    return 1;
}

static void
sleep_done(mf_req_t *r, void *arg, const char *err)
{
    mf_lua_slot_t *slot = arg;

    MF_UNUSED(err);
    mf_lua_slot_resume(slot, r, mf_lua_slot_thread(slot), 0);
}

static int
l_sleep(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    double ms = luaL_checknumber(L, 1);
    mf_lua_slot_t *slot = mf_lua_yieldable(L, "mf.sleep");

    if (mf_api.timer(r, (uint64_t)(ms > 0 ? ms : 0), sleep_done, slot) !=
        MF_OK) {
        return luaL_error(L, "mf.sleep: cannot arm a timer here");
    }
    return mf_lua_yield(L, slot);
}

void
mf_lua_inject_time_api(lua_State *L)
{
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_sleep);
    lua_setfield(L, -2, "sleep");
}
