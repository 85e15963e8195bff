/*
 * mf.resp: the response (status, headers, usage, the body chunk of
 * on_response_body), through the host API.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

static int
l_resp_status(lua_State *L)
{
    mf_req_info_t i = {.size = sizeof(i)};

    mf_api.get_info(mf_lua_req(L), &i);
    lua_pushinteger(L, i.status ? i.status : i.upstream_status);
    return 1;
}

static int
l_resp_get_header(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    mf_str_t v;
    mf_headers_t w = mf_lua_which_headers(L, 2, MF_RESPONSE_HEADERS);

    if (mf_api.get_header(r, w, mf_lua_arg_str(L, 1), &v) != MF_OK) {
        lua_pushnil(L);
        return 1;
    }
    return mf_lua_push_str(L, v);
}

static int
l_resp_set_header(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);

    if (!mf_api_allowed(r, MF_CALL_SET_RESPONSE_HEADER)) {
        return mf_lua_refuse(L, "mf.resp.set_header",
                             MF_CALL_SET_RESPONSE_HEADER);
    }
    if (mf_api.set_header(r, MF_RESPONSE_HEADERS, mf_lua_arg_str(L, 1),
                          lua_isnil(L, 2) ? MF_STR("")
                                          : mf_lua_arg_str(L, 2)) != MF_OK) {
        return mf_lua_fail(L,
                           "response headers are already sent or the header is "
                           "invalid");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_resp_usage(lua_State *L)
{
    mf_req_info_t i = {.size = sizeof(i)};

    mf_api.get_info(mf_lua_req(L), &i);
    mf_lua_push_usage(L, &i.usage);
    return 1;
}

static int
l_resp_set_body(lua_State *L)
{
    if (mf_api.set_response_chunk(mf_lua_req(L), mf_lua_arg_str(L, 1)) !=
        MF_OK) {
        return mf_lua_refuse(L, "mf.resp.set_body", MF_CALL_SET_RESPONSE_CHUNK);
    }
    lua_pushboolean(L, 1);
    return 1;
}

void
mf_lua_inject_resp_api(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"status", l_resp_status},         {"get_header", l_resp_get_header},
        {"set_header", l_resp_set_header}, {"usage", l_resp_usage},
        {"set_body", l_resp_set_body},     {NULL, NULL}};

    mf_lua_register(L, "resp", fns);
}
