/*
 * Reading the request body without copying it into Lua:
 * mf.req.body_field(key), one top-level member, decoded (a stage that
 * acts only on requests carrying a field, a template's `prompt`, lets
 * every other request pass at the cost of a lookup);
 * mf.req.estimate_tokens(), the messages' text length / 4 (a rule on
 * the size of a conversation).
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

/* The bytes of text of one message's content (a string, or text parts). */
static size_t
content_len(json_t *c)
{
    size_t n = 0, i;
    json_t *part;

    if (json_is_string(c)) {
        return json_string_length(c);
    }
    json_array_foreach(c, i, part)
    {
        json_t *t = json_object_get(part, "text");

        if (json_is_string(t)) {
            n += json_string_length(t) + (n > 0); /* parts join with \n */
        }
    }
    return n;
}

static int
l_req_estimate_tokens(lua_State *L)
{
    json_t *body = mf_api.get_body_json(mf_lua_req(L)), *m;
    size_t n = 0, i;

    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        n += content_len(json_object_get(m, "content"));
    }
    lua_pushinteger(L, (lua_Integer)((n + 3) / 4));
    return 1;
}

void
mf_lua_inject_body_api(lua_State *L)
{
    lua_getfield(L, -1, "req");
    lua_pushcfunction(L, l_req_body_field);
    lua_setfield(L, -2, "body_field");
    lua_pushcfunction(L, l_req_estimate_tokens);
    lua_setfield(L, -2, "estimate_tokens");
    lua_pop(L, 1);
}
