/*
 * mf.log: log lines tagged with the script's file and line.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

static int
log_at(lua_State *L, mf_log_level_t level)
{
    mf_buf_t b = {0};
    int i, n = lua_gettop(L);
    lua_Debug ar;
    char tag[128] = "lua";

    if (level < mf_log_get_level()) {
        return 0;
    }
    for (i = 1; i <= n; i++) {
        size_t len;
        const char *s;

        lua_getglobal(L, "tostring");
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        s = lua_tolstring(L, -1, &len);
        if (s != NULL) {
            if (i > 1) {
                mf_buf_append(&b, " ", 1);
            }
            mf_buf_append(&b, s, len);
        }
        lua_pop(L, 1);
    }
    mf_buf_append(&b, "", 1);
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar)) {
        snprintf(tag, sizeof(tag), "%s:%d", ar.short_src, ar.currentline);
    }
    mf_log_tagged(level, tag, "%s", b.data);
    mf_buf_free(&b);
    return 0;
}

static int
l_log_debug(lua_State *L)
{
    return log_at(L, MF_LOG_DEBUG);
}

static int
l_log_info(lua_State *L)
{
    return log_at(L, MF_LOG_INFO);
}

static int
l_log_warn(lua_State *L)
{
    return log_at(L, MF_LOG_WARN);
}

static int
l_log_err(lua_State *L)
{
    return log_at(L, MF_LOG_ERROR);
}

void
mf_lua_inject_log_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"debug", l_log_debug}, {"info", l_log_info},
                                   {"warn", l_log_warn},   {"err", l_log_err},
                                   {"error", l_log_err},   {NULL, NULL}};

    mf_lua_register(L, "log", fns);
}
