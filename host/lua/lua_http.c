/*
 * mf.http.request: a call through the host's HTTP client service; the
 * stage's coroutine yields until the answer. mf.http.get and post are
 * Lua helpers on top of it (lua/mf/http.lua).
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

/* mf.http.request{url=, method=, headers=, body=, timeout=} */

static void
http_done(mf_req_t *r, void *arg, const mf_http_result_t *res, const char *err)
{
    mf_lua_slot_t *slot = arg;
    lua_State *co = mf_lua_slot_thread(slot);
    size_t i, j;

    if (err != NULL) {
        lua_pushnil(co);
        lua_pushstring(co, err);
        mf_lua_slot_resume(slot, r, co, 2);
        return;
    }
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, res->status);
    lua_setfield(co, -2, "status");
    lua_pushlstring(co, res->body.data, res->body.len);
    lua_setfield(co, -2, "body");
    lua_createtable(co, 0, (int)res->nheaders);
    for (i = 0; i < res->nheaders; i++) {
        mf_str_t n = res->headers[2 * i], v = res->headers[2 * i + 1];
        char lower[256];

        if (n.len >= sizeof(lower)) {
            continue;
        }
        for (j = 0; j < n.len; j++) {
            char c = n.data[j];

            lower[j] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        lua_pushlstring(co, lower, n.len);
        lua_pushlstring(co, v.data, v.len);
        lua_rawset(co, -3);
    }
    lua_setfield(co, -2, "headers");
    mf_lua_slot_resume(slot, r, co, 1);
}

/* Sends the request described by the table at idx, then yields. */
static int
http_send(lua_State *L, int idx, const char *what)
{
    mf_req_t *r = mf_lua_req(L);
    mf_str_t url, body = MF_STR_NULL, hdrs[128];
    const char *method;
    size_t nh = 0;
    double timeout;
    mf_lua_slot_t *slot;

    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "url");
    if (!lua_isstring(L, -1)) {
        return luaL_error(L, "%s: url is required", what);
    }
    url.data = lua_tolstring(L, -1, &url.len);
    lua_getfield(L, idx, "method");
    method = lua_isstring(L, -1) ? lua_tostring(L, -1) : "GET";
    lua_getfield(L, idx, "body");
    if (lua_isstring(L, -1)) {
        body.data = lua_tolstring(L, -1, &body.len);
    } else if (lua_istable(L, -1)) {
        json_t *j = mf_lua_to_json(L, lua_gettop(L), 0);
        char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

        json_decref(j);
        lua_pushstring(L, text ? text : "null");
        free(text);
        body.data = lua_tolstring(L, -1, &body.len);
        hdrs[nh++] = MF_STR("content-type");
        hdrs[nh++] = MF_STR("application/json");
    }
    lua_getfield(L, idx, "timeout");
    timeout = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
    lua_getfield(L, idx, "headers");
    if (lua_istable(L, -1)) {
        int t = lua_gettop(L);

        lua_pushnil(L);
        while (lua_next(L, t) != 0 && nh + 2 <= 128 && lua_checkstack(L, 3)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_isstring(L, -1)) {
                hdrs[nh].data = lua_tolstring(L, -2, &hdrs[nh].len);
                nh++;
                lua_pushvalue(L, -1); /* keep the value string alive */
                lua_insert(L, t + 1);
                hdrs[nh].data = lua_tolstring(L, t + 1, &hdrs[nh].len);
                nh++;
            }
            lua_pop(L, 1);
        }
    }
    slot = mf_lua_yieldable(L, what);
    if (mf_api.http_call(r, method, url, hdrs, nh / 2, body,
                         (uint64_t)(timeout > 0 ? timeout : 0), http_done,
                         slot) != MF_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: cannot call %s (an http:// or https:// URL?)",
                        what, url.data);
        return 2;
    }
    return mf_lua_yield(L, slot);
}

static int
l_http_request(lua_State *L)
{
    return http_send(L, 1, "mf.http.request");
}

void
mf_lua_inject_http_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"request", l_http_request}, {NULL, NULL}};

    mf_lua_register(L, "http", fns);
}
