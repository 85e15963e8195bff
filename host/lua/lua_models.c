/*
 * mf.models: model names a Lua stage serves itself. mf.models.declare
 * ("auto") or mf.models.declare{"auto", "auto-cheap"} at the script's top
 * level, while the stage loads, lists the names (virtual models) in the
 * model lists while the stage is enabled, as `models:` on its entry does
 * (api->declare_model for C stages).
 */
#include <stdio.h>

#include "lua/lua_common.h"
#include "pipeline/generation.h"

static void
declare(lua_State *L, int w, const char *name)
{
    char err[300];

    /* every worker's state runs the script: the first one declares */
    if (w == 0 &&
        mf_gen_loading_declare_model(name, err, sizeof(err)) != MF_OK) {
        luaL_error(L, "mf.models.declare: %s", err);
    }
}

static int
l_models_declare(lua_State *L)
{
    int w = mf_lua_loading_worker();
    size_t i, n;

    if (w < 0) {
        return luaL_error(L, "mf.models.declare: only at the script's top "
                             "level, while the stage loads");
    }
    if (lua_type(L, 1) == LUA_TSTRING) {
        declare(L, w, lua_tostring(L, 1));
    } else if (lua_istable(L, 1)) {
        n = lua_objlen(L, 1);
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, (int)i);
            if (lua_type(L, -1) != LUA_TSTRING) {
                return luaL_error(L, "mf.models.declare: names must be "
                                     "strings");
            }
            declare(L, w, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    } else {
        return luaL_error(L, "mf.models.declare: a name or a list of names");
    }
    lua_pushboolean(L, 1);
    return 1;
}

void
mf_lua_inject_models_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"declare", l_models_declare}, {NULL, NULL}};

    mf_lua_register(L, "models", fns);
}
