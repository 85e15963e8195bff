/*
 * JSON <-> Lua, and mf.json (encode, decode, array, null). A JSON array
 * becomes a table with a marker metatable, so that it encodes back as an
 * array even when empty.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

static char array_mt_key;

void
mf_lua_push_json(lua_State *L, json_t *j, int depth)
{
    if (depth > 200 || !lua_checkstack(L, 4)) {
        lua_pushnil(L);
        return;
    }
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;

        lua_createtable(L, 0, (int)json_object_size(j));
        json_object_foreach(j, k, v)
        {
            lua_pushstring(L, k);
            mf_lua_push_json(L, v, depth + 1);
            lua_rawset(L, -3);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;

        lua_createtable(L, (int)json_array_size(j), 0);
        json_array_foreach(j, i, v)
        {
            mf_lua_push_json(L, v, depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_pushlightuserdata(L, &array_mt_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_setmetatable(L, -2);
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        lua_pushnumber(L, (lua_Number)json_integer_value(j));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(j));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    default:
        lua_pushlightuserdata(L, NULL); /* mf.json.null */
        break;
    }
}

static int
is_array(lua_State *L, int idx, size_t *n)
{
    size_t count = 0, max = 0;

    if (lua_getmetatable(L, idx)) {
        int arr;

        lua_pushlightuserdata(L, &array_mt_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        arr = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (arr) {
            *n = lua_objlen(L, idx);
            return 1;
        }
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return 0;
        }
        {
            lua_Number k = lua_tonumber(L, -1);

            if (k < 1 || k != (lua_Number)(size_t)k) {
                lua_pop(L, 1);
                return 0;
            }
            if ((size_t)k > max) {
                max = (size_t)k;
            }
        }
        count++;
    }
    *n = max;
    return count > 0 && count == max;
}

/* Why the last to_json failed (a static sentence). */
static __thread const char *to_json_why;

const char *
mf_lua_to_json_why(void)
{
    return to_json_why;
}

/* Converts the value at idx; NULL with the reason in to_json_why. A table
 * that contains itself fails as nesting too deep. */
json_t *
mf_lua_to_json(lua_State *L, int idx, int depth)
{
    if (idx < 0) {
        idx = lua_gettop(L) + idx + 1;
    }
    if (depth > 200 || !lua_checkstack(L, 4)) {
        to_json_why = "a table nests deeper than 200 levels or contains "
                      "itself";
        return NULL;
    }
    to_json_why = "functions, userdata and threads cannot be encoded";
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
        lua_Number v = lua_tonumber(L, idx);

        if (v == (lua_Number)(json_int_t)v && v < 9.007199254740992e15 &&
            v > -9.007199254740992e15) {
            return json_integer((json_int_t)v);
        }
        return json_real(v);
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);

        return json_stringn(s, len);
    }
    case LUA_TLIGHTUSERDATA:
        return lua_touserdata(L, idx) == NULL ? json_null() : NULL;
    case LUA_TTABLE: {
        size_t n, i;
        json_t *out;

        if (is_array(L, idx, &n)) {
            out = json_array();
            for (i = 1; i <= n; i++) {
                json_t *v;

                lua_rawgeti(L, idx, (int)i);
                v = mf_lua_to_json(L, -1, depth + 1);
                lua_pop(L, 1);
                if (v == NULL) {
                    json_decref(out);
                    return NULL;
                }
                json_array_append_new(out, v);
            }
            return out;
        }
        out = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            json_t *v;
            const char *k;

            /* object keys must be strings */
            k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (k == NULL) {
                to_json_why = "a table mixes array items and other keys, or "
                              "has a key that is not a string";
                lua_pop(L, 2);
                json_decref(out);
                return NULL;
            }
            v = mf_lua_to_json(L, -1, depth + 1);
            if (v == NULL) {
                lua_pop(L, 2);
                json_decref(out);
                return NULL;
            }
            json_object_set_new(out, k, v);
            lua_pop(L, 1);
        }
        return out;
    }
    default:
        return NULL;
    }
}

static int
l_json_encode(lua_State *L)
{
    json_t *j;
    char *text;

    luaL_checkany(L, 1);
    j = mf_lua_to_json(L, 1, 0);
    if (j == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "mf.json.encode: %s", to_json_why);
        return 2;
    }
    text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (text == NULL) {
        return mf_lua_fail(L, "JSON encoding failed");
    }
    lua_pushstring(L, text);
    free(text);
    return 1;
}

static int
l_json_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    json_error_t err;
    json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    char msg[256];

    if (j == NULL) {
        snprintf(msg, sizeof(msg), "invalid JSON: %s (line %d, column %d)",
                 err.text, err.line, err.column);
        return mf_lua_fail(L, msg);
    }
    mf_lua_push_json(L, j, 0);
    json_decref(j);
    return 1;
}

static int
l_json_array(lua_State *L)
{
    if (lua_gettop(L) == 0 || !lua_istable(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    lua_settop(L, 1);
    lua_pushlightuserdata(L, &array_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, 1);
    return 1;
}

void
mf_lua_inject_json_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"encode", l_json_encode},
                                   {"decode", l_json_decode},
                                   {"array", l_json_array},
                                   {NULL, NULL}};

    lua_pushlightuserdata(L, &array_mt_key);
    lua_newtable(L);
    lua_pushstring(L, "array");
    lua_setfield(L, -2, "__jsontype");
    lua_rawset(L, LUA_REGISTRYINDEX);
    mf_lua_register(L, "json", fns);
    lua_getfield(L, -1, "json");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pop(L, 1);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
}
