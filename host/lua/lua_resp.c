/*
 * mf.resp: the response (status, headers, usage, the body chunk of
 * on_response_body), through the host API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A string argument, or a table encoded as JSON (request memory). */
static int
text_arg(lua_State *L, int idx, mf_str_t *out)
{
    json_t *j;
    char *text;

    if (lua_type(L, idx) == LUA_TSTRING) {
        *out = mf_lua_arg_str(L, idx);
        return MF_OK;
    }
    if (!lua_istable(L, idx)) {
        return MF_ERR;
    }
    j = mf_lua_to_json(L, idx, 0);
    text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        return MF_ERR;
    }
    out->len = strlen(text);
    out->data = mf_api.palloc(mf_lua_req(L), out->len + 1);
    if (out->data != NULL) {
        memcpy((char *)out->data, text, out->len + 1);
    }
    free(text);
    return out->data != NULL ? MF_OK : MF_ERR;
}

/* mf.resp.emit(chunk [, last]): one event of the stage's own stream. */
static int
l_resp_emit(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    mf_str_t data = MF_STR_NULL;

    if (!mf_api_allowed(r, MF_CALL_STAGE_ANSWER)) {
        return mf_lua_refuse(L, "mf.resp.emit", MF_CALL_STAGE_ANSWER);
    }
    if (!lua_isnoneornil(L, 1) && text_arg(L, 1, &data) != MF_OK) {
        return mf_lua_fail(L, "mf.resp.emit: the chunk must be a JSON text "
                              "or a table");
    }
    if (mf_api.emit_event(r, data, lua_toboolean(L, 2)) != MF_OK) {
        return mf_lua_fail(L, "mf.resp.emit: the request is not a stream, "
                              "or is already answered otherwise");
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* mf.resp.completion(completion): the stage's whole canonical answer. */
static int
l_resp_completion(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    mf_str_t text;

    if (!mf_api_allowed(r, MF_CALL_STAGE_ANSWER)) {
        return mf_lua_refuse(L, "mf.resp.completion", MF_CALL_STAGE_ANSWER);
    }
    if (text_arg(L, 1, &text) != MF_OK ||
        mf_api.respond_completion(r, text) != MF_OK) {
        return mf_lua_fail(L, "mf.resp.completion: not a chat completion "
                              "the client's protocol can take, or the "
                              "request is already answered");
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
        {"set_body", l_resp_set_body},     {"emit", l_resp_emit},
        {"completion", l_resp_completion}, {NULL, NULL}};

    mf_lua_register(L, "resp", fns);
}
