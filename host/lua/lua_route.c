/*
 * mf.route: the model and the ordered targets of the request (on_route),
 * through the host API.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

int
mf_lua_route_set_model(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    mf_str_t m = mf_lua_arg_str(L, 1);

    if (!mf_api_allowed(r, MF_CALL_SET_MODEL)) {
        return mf_lua_refuse(L, "mf.route.set_model", MF_CALL_SET_MODEL);
    }
    if (mf_api.set_model(r, m) != MF_OK) {
        char msg[300];

        if (mf_str_has_control(m)) {
            return mf_lua_fail(L, MF_LUA_CONTROL_MODEL("mf.route.set_model"));
        }
        snprintf(msg, sizeof(msg), "no provider serves model '%.*s'",
                 (int)(m.len > 200 ? 200 : m.len), m.data);
        return mf_lua_fail(L, msg);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_route_clear(lua_State *L)
{
    if (mf_api.clear_targets(mf_lua_req(L)) != MF_OK) {
        return mf_lua_refuse(L, "mf.route.clear", MF_CALL_SET_TARGETS);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_route_add_target(lua_State *L)
{
    mf_target_t t;

    t.provider = mf_lua_arg_str(L, 1);
    t.model = mf_lua_arg_str(L, 2);
    t.weight = (unsigned)luaL_optinteger(L, 3, 1);
    if (!mf_api_allowed(mf_lua_req(L), MF_CALL_SET_TARGETS)) {
        return mf_lua_refuse(L, "mf.route.add_target", MF_CALL_SET_TARGETS);
    }
    if (mf_api.add_target(mf_lua_req(L), &t) != MF_OK) {
        if (mf_str_has_control(t.model)) {
            return mf_lua_fail(L, MF_LUA_CONTROL_MODEL("mf.route.add_target"));
        }
        return mf_lua_fail(L, "mf.route.add_target: no configured provider of "
                              "that name, or no model");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_route_targets(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    mf_target_t t;
    int n = mf_api.get_target(r, 0, NULL), i;

    lua_createtable(L, n > 0 ? n : 0, 0);
    for (i = 0; i < n && mf_api.get_target(r, (unsigned)i, &t) >= 0; i++) {
        lua_createtable(L, 0, 3);
        mf_lua_push_str(L, t.provider);
        lua_setfield(L, -2, "provider");
        mf_lua_push_str(L, t.model);
        lua_setfield(L, -2, "model");
        lua_pushinteger(L, t.weight);
        lua_setfield(L, -2, "weight");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

void
mf_lua_inject_route_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"set_model", mf_lua_route_set_model},
                                   {"clear", l_route_clear},
                                   {"add_target", l_route_add_target},
                                   {"targets", l_route_targets},
                                   {NULL, NULL}};

    mf_lua_register(L, "route", fns);
}
