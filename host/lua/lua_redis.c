/*
 * mf.redis(cmd, ...): a command through the host's Redis service; the
 * stage's coroutine yields until the reply.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

/* mf.redis(cmd, ...): a reply as a Lua value; nil, err on failure. */

static void
push_redis(lua_State *co, const mf_redis_reply_t *rep, int depth)
{
    size_t i;

    switch (rep->type) {
    case MF_REDIS_STRING:
    case MF_REDIS_STATUS:
    case MF_REDIS_ERROR:
        lua_pushlstring(co, rep->str.data ? rep->str.data : "", rep->str.len);
        break;
    case MF_REDIS_INTEGER:
        lua_pushnumber(co, (lua_Number)rep->integer);
        break;
    case MF_REDIS_ARRAY:
        lua_createtable(co, (int)rep->nelements, 0);
        for (i = 0; i < rep->nelements && depth < 16; i++) {
            push_redis(co, &rep->elements[i], depth + 1);
            lua_rawseti(co, -2, (int)i + 1);
        }
        break;
    default:
        lua_pushlightuserdata(co, NULL); /* mf.null */
        break;
    }
}

static void
redis_done(mf_req_t *r, void *arg, const mf_redis_reply_t *reply,
           const char *err)
{
    mf_lua_slot_t *slot = arg;
    lua_State *co = mf_lua_slot_thread(slot);
    int n = 1;

    if (err != NULL) {
        lua_pushnil(co);
        lua_pushstring(co, err);
        n = 2;
    } else if (reply->type == MF_REDIS_ERROR) {
        lua_pushnil(co);
        lua_pushlstring(co, reply->str.data ? reply->str.data : "",
                        reply->str.len);
        n = 2;
    } else {
        push_redis(co, reply, 0);
    }
    mf_lua_slot_resume(slot, r, co, n);
}

static int
l_redis(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    int argc = lua_gettop(L), i;
    mf_str_t argv[64];
    mf_lua_slot_t *slot;

    if (argc < 1 || argc > 64) {
        return luaL_error(L, "mf.redis(cmd, ...): 1 to 64 arguments");
    }
    for (i = 0; i < argc; i++) {
        if (!lua_isstring(L, i + 1)) {
            return luaL_error(L,
                              "mf.redis: argument %d is a %s, not a string "
                              "or number",
                              i + 1, luaL_typename(L, i + 1));
        }
        argv[i].data = lua_tolstring(L, i + 1, &argv[i].len);
    }
    slot = mf_lua_yieldable(L, "mf.redis");
    if (mf_api.redis_command(r, argc, argv, redis_done, slot) != MF_OK) {
        lua_pushnil(L);
        lua_pushstring(L, "mf.redis: the command could not be sent");
        return 2;
    }
    return mf_lua_yield(L, slot);
}

void
mf_lua_inject_redis_api(lua_State *L)
{
    lua_pushcfunction(L, l_redis);
    lua_setfield(L, -2, "redis");
}
