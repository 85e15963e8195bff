/*
 * mf.llm and mf.embed: a model call and an embeddings call through the
 * gateway's own providers (api->model_call: routes, keys, fallback,
 * stages, usage billed to the calling consumer). The stage's coroutine
 * yields until the answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lua_common.h"

#define LLM_DEFAULT_TIMEOUT_MS 30000

/* Pushes nil and "what: status code: message" for an error answer. */
static void
push_answer_error(lua_State *co, const char *what, int status, json_t *j)
{
    json_t *e = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *code = json_string_value(json_object_get(e, "code"));

    if (code == NULL) {
        code = json_string_value(json_object_get(e, "type"));
    }
    lua_pushnil(co);
    lua_pushfstring(co, "%s: %d %s: %s", what, status, code ? code : "error",
                    msg ? msg : "no error message");
}

/* The answer's JSON, or NULL after pushing nil, err. */
static json_t *
answer_json(lua_State *co, const char *what, const mf_http_result_t *res,
            const char *err)
{
    json_t *j;

    if (err != NULL) {
        lua_pushnil(co);
        lua_pushfstring(co, "%s: no answer (%s)", what, err);
        return NULL;
    }
    j = json_loadb(res->body.data, res->body.len, 0, NULL);
    if (res->status < 200 || res->status > 299 || !json_is_object(j)) {
        if (json_is_object(j) || res->status < 200 || res->status > 299) {
            push_answer_error(co, what, res->status, j);
        } else {
            lua_pushnil(co);
            lua_pushfstring(co, "%s: the answer is not JSON", what);
        }
        json_decref(j);
        return NULL;
    }
    return j;
}

static void
llm_done(mf_req_t *r, void *arg, const mf_http_result_t *res, const char *err)
{
    mf_lua_slot_t *slot = arg;
    lua_State *co = mf_lua_slot_thread(slot);
    json_t *j = answer_json(co, "mf.llm", res, err), *choice, *msg;

    if (j == NULL) {
        mf_lua_slot_resume(slot, r, co, 2);
        return;
    }
    choice = json_array_get(json_object_get(j, "choices"), 0);
    msg = json_object_get(choice, "message");
    lua_createtable(co, 0, 7);
    lua_pushinteger(co, res->status);
    lua_setfield(co, -2, "status");
    if (json_is_string(json_object_get(msg, "content"))) {
        lua_pushstring(co, json_string_value(json_object_get(msg, "content")));
    } else {
        lua_pushliteral(co, "");
    }
    lua_setfield(co, -2, "text");
    if (json_is_string(json_object_get(choice, "finish_reason"))) {
        lua_pushstring(
            co, json_string_value(json_object_get(choice, "finish_reason")));
        lua_setfield(co, -2, "finish_reason");
    }
    if (json_is_string(json_object_get(j, "model"))) {
        lua_pushstring(co, json_string_value(json_object_get(j, "model")));
        lua_setfield(co, -2, "model");
    }
    if (json_is_object(msg)) {
        mf_lua_push_json(co, msg, 0);
        lua_setfield(co, -2, "message");
    }
    if (json_is_object(json_object_get(j, "usage"))) {
        mf_lua_push_json(co, json_object_get(j, "usage"), 0);
        lua_setfield(co, -2, "usage");
    }
    mf_lua_push_json(co, j, 0);
    lua_setfield(co, -2, "body");
    json_decref(j);
    mf_lua_slot_resume(slot, r, co, 1);
}

/* Decodes a base64 string of little-endian float32s into a table. */
static int
push_base64_floats(lua_State *co, const char *s)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = strlen(s), n = 0, i, k = 0;
    unsigned char *out = malloc(len / 4 * 3 + 3);
    unsigned acc = 0;
    int bits = 0;

    if (out == NULL) {
        return -1;
    }
    for (i = 0; i < len && s[i] != '='; i++) {
        const char *p = strchr(b64, s[i]);

        if (p == NULL || s[i] == '\0') {
            free(out);
            return -1;
        }
        acc = (acc << 6) | (unsigned)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    lua_createtable(co, (int)(n / 4), 0);
    for (i = 0; i + 4 <= n; i += 4) {
        uint32_t u = (uint32_t)out[i] | (uint32_t)out[i + 1] << 8 |
                     (uint32_t)out[i + 2] << 16 | (uint32_t)out[i + 3] << 24;
        float f;

        memcpy(&f, &u, sizeof(f));
        lua_pushnumber(co, (lua_Number)f);
        lua_rawseti(co, -2, (int)++k);
    }
    free(out);
    return 0;
}

static void
embed_done(mf_req_t *r, void *arg, const mf_http_result_t *res, const char *err)
{
    mf_lua_slot_t *slot = arg;
    lua_State *co = mf_lua_slot_thread(slot);
    json_t *j = answer_json(co, "mf.embed", res, err), *data, *item;
    size_t i, n;

    if (j == NULL) {
        mf_lua_slot_resume(slot, r, co, 2);
        return;
    }
    data = json_object_get(j, "data");
    n = json_array_size(data);
    lua_createtable(co, (int)n, 0);
    json_array_foreach(data, i, item)
    {
        json_t *e = json_object_get(item, "embedding");
        json_t *ix = json_object_get(item, "index");
        size_t at = json_is_integer(ix) ? (size_t)json_integer_value(ix) : i;

        if (at >= n) {
            at = i;
        }
        if (json_is_array(e)) {
            mf_lua_push_json(co, e, 0);
        } else if (!json_is_string(e) ||
                   push_base64_floats(co, json_string_value(e)) != 0) {
            lua_settop(co, lua_gettop(co) - 1);
            lua_pushnil(co);
            lua_pushliteral(co, "mf.embed: an embedding in the answer is "
                                "neither numbers nor base64");
            json_decref(j);
            mf_lua_slot_resume(slot, r, co, 2);
            return;
        }
        lua_rawseti(co, -2, (int)at + 1);
    }
    lua_createtable(co, 0, 2);
    if (json_is_object(json_object_get(j, "usage"))) {
        mf_lua_push_json(co, json_object_get(j, "usage"), 0);
        lua_setfield(co, -2, "usage");
    }
    if (json_is_string(json_object_get(j, "model"))) {
        lua_pushstring(co, json_string_value(json_object_get(j, "model")));
        lua_setfield(co, -2, "model");
    }
    json_decref(j);
    mf_lua_slot_resume(slot, r, co, 2);
}

/* opts at idx (a table or nil): timeout and provider into call. */
static void
read_opts(lua_State *L, int idx, mf_model_call_t *call)
{
    call->timeout_ms = LLM_DEFAULT_TIMEOUT_MS;
    if (!lua_istable(L, idx)) {
        return;
    }
    lua_getfield(L, idx, "timeout");
    if (lua_isnumber(L, -1) && lua_tonumber(L, -1) > 0) {
        call->timeout_ms = (uint64_t)lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "provider");
    if (lua_type(L, -1) == LUA_TSTRING) {
        /* the opts table keeps the string alive */
        call->provider.data = lua_tolstring(L, -1, &call->provider.len);
    }
    lua_pop(L, 1);
}

/* Sends body (its JSON, taken) as call for slot (mf_lua_yieldable, asked
 * before anything is allocated: it raises), then yields. */
static int
model_send(lua_State *L, mf_lua_slot_t *slot, const char *what,
           mf_model_call_t *call, json_t *body, mf_http_cb cb)
{
    mf_req_t *r = mf_lua_req(L);
    char *text = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    if (text == NULL) {
        return luaL_error(L, "%s: the request cannot be encoded", what);
    }
    lua_pushstring(L, text);
    free(text);
    call->body.data = lua_tolstring(L, -1, &call->body.len);
    if (mf_api.model_call(r, call, cb, slot) != MF_OK) {
        lua_pushnil(L);
        lua_pushfstring(L,
                        "%s: refused: model calls nest at most 3 deep (a "
                        "stage calling a model it serves itself?)",
                        what);
        return 2;
    }
    return mf_lua_yield(L, slot);
}

/* mf.llm(request [, {timeout=, provider=}]) */
static int
l_llm(lua_State *L)
{
    mf_model_call_t call = {.size = sizeof(call), .kind = MF_MODEL_CHAT};
    mf_lua_slot_t *slot;
    json_t *body;

    luaL_checktype(L, 1, LUA_TTABLE);
    slot = mf_lua_yieldable(L, "mf.llm");
    lua_getfield(L, 1, "model");
    if (!lua_isstring(L, -1)) {
        return luaL_error(L, "mf.llm: request.model is required");
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "messages");
    if (!lua_istable(L, -1)) {
        return luaL_error(L, "mf.llm: request.messages is required");
    }
    lua_pop(L, 1);
    body = mf_lua_to_json(L, 1, 0);
    if (!json_is_object(body)) {
        json_decref(body);
        return luaL_error(L, "mf.llm: the request is not a JSON object (%s)",
                          body ? "an array" : mf_lua_to_json_why());
    }
    json_object_set_new(body, "stream", json_false());
    json_object_del(body, "stream_options");
    read_opts(L, 2, &call);
    return model_send(L, slot, "mf.llm", &call, body, llm_done);
}

/* mf.embed(texts, {model=, provider=, timeout=, dimensions=}) */
static int
l_embed(lua_State *L)
{
    mf_model_call_t call = {.size = sizeof(call), .kind = MF_MODEL_EMBEDDINGS};
    mf_lua_slot_t *slot;
    json_t *body, *input;
    size_t i, n;

    luaL_checktype(L, 2, LUA_TTABLE);
    slot = mf_lua_yieldable(L, "mf.embed");
    lua_getfield(L, 2, "model");
    if (!lua_isstring(L, -1)) {
        return luaL_error(L, "mf.embed: opts.model is required");
    }
    body = json_pack("{s:s,s:s}", "model", lua_tostring(L, -1),
                     "encoding_format", "float");
    lua_pop(L, 1);
    input = json_array();
    if (lua_type(L, 1) == LUA_TSTRING) {
        json_array_append_new(input, json_string(lua_tostring(L, 1)));
    } else if (lua_istable(L, 1) && (n = lua_objlen(L, 1)) > 0) {
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, (int)i);
            if (lua_type(L, -1) != LUA_TSTRING) {
                json_decref(input);
                json_decref(body);
                return luaL_error(L, "mf.embed: texts[%d] is not a string",
                                  (int)i);
            }
            json_array_append_new(
                input, json_stringn(lua_tostring(L, -1), lua_objlen(L, -1)));
            lua_pop(L, 1);
        }
    } else {
        json_decref(input);
        json_decref(body);
        return luaL_error(L, "mf.embed: texts is a string or a non-empty "
                             "list of strings");
    }
    json_object_set_new(body, "input", input);
    lua_getfield(L, 2, "dimensions");
    if (lua_isnumber(L, -1)) {
        json_object_set_new(body, "dimensions",
                            json_integer((json_int_t)lua_tonumber(L, -1)));
    }
    lua_pop(L, 1);
    read_opts(L, 2, &call);
    return model_send(L, slot, "mf.embed", &call, body, embed_done);
}

void
mf_lua_inject_llm_api(lua_State *L)
{
    lua_pushcfunction(L, l_llm);
    lua_setfield(L, -2, "llm");
    lua_pushcfunction(L, l_embed);
    lua_setfield(L, -2, "embed");
}
