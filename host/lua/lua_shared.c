/*
 * mf.shared: the host's shared dict (all workers), through the host API.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

static int
l_shared_get(lua_State *L)
{
    mf_str_t k = mf_lua_arg_str(L, 1);
    char small[1024];
    int n = mf_api.shared_get(k, small, sizeof(small));

    if (n < 0) {
        lua_pushnil(L);
        return 1;
    }
    if ((size_t)n <= sizeof(small)) {
        lua_pushlstring(L, small, (size_t)n);
        return 1;
    }
    {
        char *big = malloc((size_t)n);
        int m;

        if (big == NULL) {
            return mf_lua_fail(L, "out of memory");
        }
        m = mf_api.shared_get(k, big, (size_t)n);
        if (m < 0) {
            free(big);
            lua_pushnil(L);
            return 1;
        }
        lua_pushlstring(L, big, (size_t)(m < n ? m : n));
        free(big);
        return 1;
    }
}

static int
l_shared_set(lua_State *L)
{
    size_t len;
    const char *v;
    double ttl = luaL_optnumber(L, 3, 0);

    lua_settop(L, 3);
    v = lua_tolstring(L, 2, &len);
    if (v == NULL) {
        return mf_lua_fail(L, "value must be a string or a number");
    }
    if (mf_api.shared_set(mf_lua_arg_str(L, 1), (mf_str_t){v, len},
                          (uint64_t)(ttl > 0 ? ttl : 0)) != MF_OK) {
        return mf_lua_fail(L, "shared.set failed (key or value too large)");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_shared_incr(lua_State *L)
{
    int64_t out;
    double delta = luaL_optnumber(L, 2, 1);
    double ttl = luaL_optnumber(L, 3, 0);

    if (mf_api.shared_incr(mf_lua_arg_str(L, 1), (int64_t)delta,
                           (uint64_t)(ttl > 0 ? ttl : 0), &out) != MF_OK) {
        return mf_lua_fail(L,
                           "shared.incr failed: the value is not an integer");
    }
    lua_pushnumber(L, (lua_Number)out);
    return 1;
}

static int
l_shared_delete(lua_State *L)
{
    lua_pushboolean(L, mf_api.shared_delete(mf_lua_arg_str(L, 1)) == MF_OK);
    return 1;
}

void
mf_lua_inject_shared_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"get", l_shared_get},
                                   {"set", l_shared_set},
                                   {"incr", l_shared_incr},
                                   {"delete", l_shared_delete},
                                   {NULL, NULL}};

    mf_lua_register(L, "shared", fns);
}
