/*
 * mf.regex: POSIX extended regular expressions (regcomp/regexec) for
 * routing rules, the regex half of mf.match (lua/mf/match.lua). Compiled
 * patterns are kept per Lua state in a bounded cache.
 */
#include <regex.h>
#include <string.h>

#include "lua/lua_common.h"

#define RE_MAX_PATTERN 4096
#define RE_MAX_CACHED 256
#define RE_MAX_GROUPS 10

static char cache_key; /* registry: {flags .. "\0" .. pattern = userdata} */

typedef struct {
    regex_t re;
    int ok;
} re_box_t;

static int
re_gc(lua_State *L)
{
    re_box_t *b = lua_touserdata(L, 1);

    if (b->ok) {
        regfree(&b->re);
        b->ok = 0;
    }
    return 0;
}

/* The compiled pattern at arg 2 with the flags at arg 3 (raises a Lua
 * error naming the pattern when it does not compile). */
static re_box_t *
compiled(lua_State *L)
{
    size_t plen, flen = 0;
    const char *pat = luaL_checklstring(L, 2, &plen);
    const char *flags = luaL_optlstring(L, 3, "", &flen);
    int cflags = REG_EXTENDED, rc, n;
    re_box_t *b;
    char err[160];
    size_t i;

    if (plen > RE_MAX_PATTERN || strlen(pat) != plen) {
        luaL_error(L, "mf.regex: a pattern is at most %d bytes, without NUL",
                   RE_MAX_PATTERN);
    }
    for (i = 0; i < flen; i++) {
        if (flags[i] == 'i') {
            cflags |= REG_ICASE;
        } else if (flags[i] == 'm') {
            cflags |= REG_NEWLINE;
        } else {
            luaL_error(L, "mf.regex: unknown flag '%c' (i, m)", flags[i]);
        }
    }
    lua_pushlightuserdata(L, &cache_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlightuserdata(L, &cache_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_pushlstring(L, flags, flen);
    lua_pushlstring(L, "", 1);
    lua_pushvalue(L, 2);
    lua_concat(L, 3);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isuserdata(L, -1)) {
        b = lua_touserdata(L, -1);
        lua_pop(L, 3);
        return b;
    }
    lua_pop(L, 1);
    b = lua_newuserdata(L, sizeof(*b));
    b->ok = 0;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, re_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    rc = regcomp(&b->re, pat, cflags);
    if (rc != 0) {
        regerror(rc, &b->re, err, sizeof(err));
        luaL_error(L, "mf.regex: bad pattern '%s': %s", pat, err);
    }
    b->ok = 1;
    /* a full cache starts over (a script's patterns are few); its
     * count is under "n", which no key (they hold a NUL) can be */
    lua_getfield(L, -3, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n >= RE_MAX_CACHED) {
        lua_newtable(L);
        lua_pushlightuserdata(L, &cache_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
        lua_replace(L, -4);
        n = 0;
    }
    lua_pushinteger(L, n + 1);
    lua_setfield(L, -4, "n");
    lua_rawset(L, -3); /* cache[key] = box (pops both) */
    lua_pop(L, 1);
    return b;
}

/* mf.regex.find(s, pattern [, flags]): start, end (1-based, inclusive),
 * then the captures (nil for a group that did not take part); nil when
 * s does not match. */
static int
l_regex_find(lua_State *L)
{
    const char *s = luaL_checkstring(L, 1); /* matched up to a NUL */
    re_box_t *b = compiled(L);
    regmatch_t m[RE_MAX_GROUPS];
    size_t i, groups;

    if (regexec(&b->re, s, RE_MAX_GROUPS, m, 0) != 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)m[0].rm_so + 1);
    lua_pushinteger(L, (lua_Integer)m[0].rm_eo);
    groups =
        b->re.re_nsub < RE_MAX_GROUPS - 1 ? b->re.re_nsub : RE_MAX_GROUPS - 1;
    luaL_checkstack(L, (int)groups, "mf.regex.find");
    for (i = 1; i <= groups; i++) {
        if (m[i].rm_so < 0) {
            lua_pushnil(L);
        } else {
            lua_pushlstring(L, s + m[i].rm_so,
                            (size_t)(m[i].rm_eo - m[i].rm_so));
        }
    }
    return 2 + (int)groups;
}

/* mf.regex.test(s, pattern [, flags]): true when s matches. */
static int
l_regex_test(lua_State *L)
{
    const char *s = luaL_checkstring(L, 1);
    re_box_t *b = compiled(L);

    lua_pushboolean(L, regexec(&b->re, s, 0, NULL, 0) == 0);
    return 1;
}

void
mf_lua_inject_regex_api(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"find", l_regex_find}, {"test", l_regex_test}, {NULL, NULL}};

    mf_lua_register(L, "regex", fns);
}
