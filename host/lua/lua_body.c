/*
 * mf.req.body_field(key): one top-level member of the request body,
 * decoded, without copying (or parsing) the whole body: a stage that
 * acts only on requests carrying a field (a template's `prompt`) asks
 * for it and lets every other request pass at the cost of a lookup.
 */
#include "lua/lua_common.h"

static int
l_req_body_field(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    mf_str_t key = mf_lua_arg_str(L, 1), text;
    json_t *j;

    if (mf_api.get_body_field(r, key, &text) != MF_OK) {
        lua_pushnil(L);
        return 1;
    }
    j = json_loadb(text.data, text.len, JSON_DECODE_ANY, NULL);
    if (j == NULL) {
        lua_pushnil(L);
        return 1;
    }
    mf_lua_push_json(L, j, 0);
    json_decref(j);
    return 1;
}

void
mf_lua_inject_body_api(lua_State *L)
{
    lua_getfield(L, -1, "req");
    lua_pushcfunction(L, l_req_body_field);
    lua_setfield(L, -2, "body_field");
    lua_pop(L, 1);
}
