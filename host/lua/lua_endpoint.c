/*
 * mf.endpoint: paths a Lua stage serves. mf.endpoint.add{listener =
 * "status" | "client", method = "GET", path = "/x", prefix = false,
 * handler = function(conf, ctx) ... end} at the script's top level adds
 * the path to the listener's endpoint table; the handler answers with
 * `return status, body[, headers]`, like a stage function, and may
 * yield in mf async calls. Each worker's state keeps its handlers in
 * order in the registry; the first state adds the paths to the table.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"
#include "pipeline/endpoint.h"

static char handlers_key;

void
mf_lua_push_endpoint_handlers(lua_State *L)
{
    lua_pushlightuserdata(L, &handlers_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlightuserdata(L, &handlers_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
}

static const char *
opt_field(lua_State *L, const char *k)
{
    const char *v;

    lua_getfield(L, 1, k);
    v = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && v == NULL) {
        luaL_error(L, "mf.endpoint.add: %s must be a string", k);
    }
    lua_pop(L, 1); /* the string stays referenced by the table */
    return v;
}

static int
l_endpoint_add(lua_State *L)
{
    int w = mf_lua_loading_worker();
    mf_endpoint_def_t def = {.size = sizeof(def)};
    const char *listener;
    char err[512];
    int handle;

    luaL_checktype(L, 1, LUA_TTABLE);
    if (w < 0) {
        return luaL_error(L, "mf.endpoint.add: only at the script's top "
                             "level, while the stage loads");
    }
    listener = opt_field(L, "listener");
    if (listener == NULL || strcmp(listener, "client") == 0) {
        def.listener = MF_LISTENER_CLIENT;
    } else if (strcmp(listener, "status") == 0) {
        def.listener = MF_LISTENER_STATUS;
    } else {
        return luaL_error(L,
                          "mf.endpoint.add: listener '%s' is not "
                          "\"client\" or \"status\"",
                          listener);
    }
    def.method = opt_field(L, "method");
    def.path = opt_field(L, "path");
    lua_getfield(L, 1, "prefix");
    def.prefix = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "handler");
    if (!lua_isfunction(L, -1)) {
        return luaL_error(L, "mf.endpoint.add: handler must be a function");
    }
    mf_lua_push_endpoint_handlers(L);
    handle = (int)lua_objlen(L, -1) + 1;
    if (w == 0 &&
        mf_endpoints_collect_add(&def, handle, err, sizeof(err)) != MF_OK) {
        return luaL_error(L, "mf.endpoint.add: %s", err);
    }
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, handle);
    lua_pop(L, 2);
    lua_pushboolean(L, 1);
    return 1;
}

void
mf_lua_inject_endpoint_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"add", l_endpoint_add}, {NULL, NULL}};

    mf_lua_register(L, "endpoint", fns);
}
