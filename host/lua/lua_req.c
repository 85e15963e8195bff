/*
 * mf.req: the request as the stage sees it (id, headers, model, body,
 * consumer, info), read and changed through the host API.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

/* What get_info says about the running stage's request. */
static mf_req_info_t
info_of(lua_State *L)
{
    mf_req_info_t i = {.size = sizeof(i)};

    mf_api.get_info(mf_lua_req(L), &i);
    return i;
}

static int
l_req_id(lua_State *L)
{
    return mf_lua_push_str(L, info_of(L).id);
}

static int
l_req_method(lua_State *L)
{
    return mf_lua_push_str(L, info_of(L).method);
}

static int
l_req_path(lua_State *L)
{
    return mf_lua_push_str(L, info_of(L).path);
}

static int
l_req_query(lua_State *L)
{
    return mf_lua_push_str(L, info_of(L).query);
}

/* mf.req.set_query(q): the query later stages and logs read (an identity
 * stage removes the credential it took from it). */
static int
l_req_set_query(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);

    if (!mf_api_allowed(r, MF_CALL_SET_QUERY)) {
        return mf_lua_refuse(L, "mf.req.set_query", MF_CALL_SET_QUERY);
    }
    mf_api.set_query(r, lua_isnil(L, 1) ? MF_STR_NULL : mf_lua_arg_str(L, 1));
    lua_pushboolean(L, 1);
    return 1;
}

/* The raw request body (a string, "" when none). */
static int
l_req_raw_body(lua_State *L)
{
    mf_str_t b;

    if (mf_api.get_body(mf_lua_req(L), &b) != MF_OK) {
        return mf_lua_refuse(L, "mf.req.raw_body", MF_CALL_READ);
    }
    return mf_lua_push_str(L, b);
}

static int
l_req_client_addr(lua_State *L)
{
    return mf_lua_push_str(L, info_of(L).client_addr);
}

static int
l_req_get_header(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    mf_str_t v;

    if (mf_api.get_header(r, MF_REQUEST_HEADERS, mf_lua_arg_str(L, 1), &v) !=
        MF_OK) {
        lua_pushnil(L);
        return 1;
    }
    return mf_lua_push_str(L, v);
}

static int
l_req_set_header(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    mf_headers_t w = mf_lua_which_headers(L, 3, MF_REQUEST_HEADERS);
    mf_call_t call = w == MF_REQUEST_HEADERS ? MF_CALL_SET_REQUEST_HEADER
                                             : MF_CALL_SET_UPSTREAM_HEADER;

    if (!mf_api_allowed(r, call)) {
        return mf_lua_refuse(L, "mf.req.set_header", call);
    }
    if (mf_api.set_header(r, w, mf_lua_arg_str(L, 1),
                          lua_isnil(L, 2) ? MF_STR("")
                                          : mf_lua_arg_str(L, 2)) != MF_OK) {
        return mf_lua_fail(L,
                           "mf.req.set_header: the header is invalid (or the "
                           "upstream_response headers, which are read-only)");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_req_model(lua_State *L)
{
    return mf_lua_push_str(L, mf_api.get_model(mf_lua_req(L)));
}

static int
l_req_body(lua_State *L)
{
    json_t *body = mf_api.get_body_json(mf_lua_req(L));

    if (body == NULL) {
        lua_pushnil(L);
        return 1;
    }
    mf_lua_push_json(L, body, 0);
    return 1;
}

/* Replaces the body's members with those of the table (the body is the
 * host's JSON value, changed in place as a C stage would), then re-routes
 * when its "model" changed and set_model is allowed here. */
static int
l_req_set_body(lua_State *L)
{
    mf_req_t *r = mf_lua_req(L);
    json_t *j, *body, *m;

    luaL_checktype(L, 1, LUA_TTABLE);
    if (!mf_api_allowed(r, MF_CALL_SET_BODY)) {
        return mf_lua_refuse(L, "mf.req.set_body", MF_CALL_SET_BODY);
    }
    body = mf_api.get_body_json(r);
    if (body == NULL) {
        return mf_lua_fail(L, "mf.req.set_body: the request has no JSON body");
    }
    j = mf_lua_to_json(L, 1, 0);
    if (!json_is_object(j)) {
        json_decref(j);
        return mf_lua_fail(L, "the body must be a table convertible to a JSON "
                              "object");
    }
    m = json_object_get(j, "model");
    if (json_is_string(m) &&
        mf_str_has_control(
            (mf_str_t){json_string_value(m), json_string_length(m)})) {
        json_decref(j); /* the body stays as it was */
        return mf_lua_fail(L, MF_LUA_CONTROL_MODEL("mf.req.set_body"));
    }
    json_object_clear(body);
    json_object_update(body, j);
    json_decref(j);
    mf_api.body_changed(r);
    m = json_object_get(body, "model");
    if (json_is_string(m) && mf_api_allowed(r, MF_CALL_SET_MODEL) &&
        !mf_str_eq(mf_api.get_model(r), mf_str_from(json_string_value(m)))) {
        mf_api.set_model(r, mf_str_from(json_string_value(m)));
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_req_stream(lua_State *L)
{
    lua_pushboolean(L, info_of(L).stream);
    return 1;
}

/* The text of the last user message (text parts joined by newlines),
 * read from the body's JSON value. */
static int
l_req_last_user_text(lua_State *L)
{
    json_t *msgs =
        json_object_get(mf_api.get_body_json(mf_lua_req(L)), "messages");
    size_t i = json_array_size(msgs), k;

    while (i-- > 0) {
        json_t *msg = json_array_get(msgs, i), *c, *part;
        const char *role = json_string_value(json_object_get(msg, "role"));
        luaL_Buffer b;
        int n = 0;

        if (role == NULL || strcmp(role, "user") != 0) {
            continue;
        }
        c = json_object_get(msg, "content");
        if (json_is_string(c)) {
            lua_pushlstring(L, json_string_value(c), json_string_length(c));
            return 1;
        }
        luaL_buffinit(L, &b);
        json_array_foreach(c, k, part)
        {
            json_t *t = json_object_get(part, "text");

            if (json_is_string(t)) {
                if (n++ > 0) {
                    luaL_addchar(&b, '\n');
                }
                luaL_addlstring(&b, json_string_value(t),
                                json_string_length(t));
            }
        }
        luaL_pushresult(&b);
        return 1;
    }
    lua_pushliteral(L, "");
    return 1;
}

static int
l_req_consumer(lua_State *L)
{
    return mf_lua_push_str(L, info_of(L).consumer);
}

static int
l_req_set_consumer(lua_State *L)
{
    if (mf_api.set_consumer(mf_lua_req(L), mf_lua_arg_str(L, 1)) != MF_OK) {
        return mf_lua_refuse(L, "mf.req.set_consumer", MF_CALL_SET_CONSUMER);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* mf.req.consumer_record(): {name, group, key_id, attrs = {k = v}}, or
 * nil when the request is anonymous. */
static int
l_req_consumer_record(lua_State *L)
{
    mf_consumer_t c = {.size = sizeof(c)};
    size_t i;

    if (mf_api.get_consumer(mf_lua_req(L), &c) != MF_OK) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 4);
    mf_lua_push_str(L, c.name);
    lua_setfield(L, -2, "name");
    mf_lua_push_str(L, c.group);
    lua_setfield(L, -2, "group");
    mf_lua_push_str(L, c.key_id);
    lua_setfield(L, -2, "key_id");
    lua_createtable(L, 0, (int)c.nattrs);
    for (i = 0; i < c.nattrs; i++) {
        mf_lua_push_str(L, c.attrs[2 * i]);
        mf_lua_push_str(L, c.attrs[2 * i + 1]);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "attrs");
    return 1;
}

/* A string field of the table at index t, or empty. */
static mf_str_t
field_str(lua_State *L, int t, const char *k)
{
    mf_str_t v = MF_STR_NULL;

    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TSTRING) {
        v.data = lua_tolstring(L, -1, &v.len);
    }
    lua_pop(L, 1); /* the string stays in the table */
    return v;
}

/* mf.req.set_consumer_record{name =, group =, key_id =, attrs = {k = v}}
 * (on_request): string attributes only. */
static int
l_req_set_consumer_record(lua_State *L)
{
    mf_consumer_t c = {.size = sizeof(c)};
    mf_str_t *attrs = NULL;
    size_t n = 0, cap = 0;
    int rc;

    luaL_checktype(L, 1, LUA_TTABLE);
    c.name = field_str(L, 1, "name");
    c.group = field_str(L, 1, "group");
    c.key_id = field_str(L, 1, "key_id");
    lua_getfield(L, 1, "attrs");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            if (lua_type(L, -2) == LUA_TSTRING &&
                lua_type(L, -1) == LUA_TSTRING) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 8;
                    attrs = mf_xrealloc(attrs, 2 * cap * sizeof(*attrs));
                }
                attrs[2 * n].data = lua_tolstring(L, -2, &attrs[2 * n].len);
                attrs[2 * n + 1].data =
                    lua_tolstring(L, -1, &attrs[2 * n + 1].len);
                n++;
            }
            lua_pop(L, 1);
        }
    }
    c.attrs = attrs;
    c.nattrs = n;
    rc =
        c.name.len > 0 ? mf_api.set_consumer_record(mf_lua_req(L), &c) : MF_ERR;
    lua_pop(L, 1);
    free(attrs);
    if (rc != MF_OK) {
        if (c.name.len == 0) {
            return luaL_error(L, "mf.req.set_consumer_record: needs a name");
        }
        return mf_lua_refuse(L, "mf.req.set_consumer_record",
                             MF_CALL_SET_CONSUMER);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* The API a request came in on, as info() names it. */
static const char *
endpoint_name(mf_endpoint_t e)
{
    switch (e) {
    case MF_ENDPOINT_CHAT:
        return "chat";
    case MF_ENDPOINT_EMBEDDINGS:
        return "embeddings";
    case MF_ENDPOINT_MESSAGES:
        return "messages";
    case MF_ENDPOINT_LOCAL:
        return "local";
    default:
        return "";
    }
}

static int
l_req_info(lua_State *L)
{
    mf_req_info_t i = {.size = sizeof(i)};

    mf_api.get_info(mf_lua_req(L), &i);
    lua_createtable(L, 0, 20);
    mf_lua_push_str(L, i.id);
    lua_setfield(L, -2, "id");
    mf_lua_push_str(L, i.model);
    lua_setfield(L, -2, "model");
    mf_lua_push_str(L, i.provider);
    lua_setfield(L, -2, "provider");
    mf_lua_push_str(L, i.upstream_model);
    lua_setfield(L, -2, "upstream_model");
    mf_lua_push_str(L, i.consumer);
    lua_setfield(L, -2, "consumer");
    mf_lua_push_str(L, i.error);
    lua_setfield(L, -2, "error");
    mf_lua_set_num(L, "status", i.status);
    mf_lua_set_num(L, "upstream_status", i.upstream_status);
    mf_lua_set_num(L, "attempts", i.attempts);
    mf_lua_set_num(L, "latency_ms", i.latency_ms);
    mf_lua_set_num(L, "ttft_ms", i.ttft_ms);
    mf_lua_set_num(L, "generation", i.generation);
    mf_lua_set_num(L, "first_content_ms", i.first_content_ms);
    mf_lua_set_num(L, "upstream_ms", i.upstream_ms);
    mf_lua_set_num(L, "attempt_ttfb_ms", i.attempt_ttfb_ms);
    mf_lua_set_num(L, "attempt_ms", i.attempt_ms);
    mf_lua_set_num(L, "start_time", i.start_time);
    lua_pushstring(L, i.listener == MF_LISTENER_STATUS ? "status" : "client");
    lua_setfield(L, -2, "listener");
    mf_lua_push_str(L, i.path);
    lua_setfield(L, -2, "path");
    lua_pushboolean(L, i.stream);
    lua_setfield(L, -2, "stream");
    lua_pushstring(L, endpoint_name(i.endpoint));
    lua_setfield(L, -2, "endpoint");
    mf_lua_push_usage(L, &i.usage);
    lua_setfield(L, -2, "usage");
    /* ABI 1.5: the trace context and cache writes */
    mf_lua_push_str(L, i.trace_id);
    lua_setfield(L, -2, "trace_id");
    mf_lua_push_str(L, i.span_id);
    lua_setfield(L, -2, "span_id");
    mf_lua_push_str(L, i.parent_span_id);
    lua_setfield(L, -2, "parent_span_id");
    if (i.cache_write_tokens >= 0) {
        mf_lua_set_num(L, "cache_write_tokens", (double)i.cache_write_tokens);
    }
    return 1;
}

void
mf_lua_inject_req_api(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"id", l_req_id},
        {"method", l_req_method},
        {"path", l_req_path},
        {"query", l_req_query},
        {"set_query", l_req_set_query},
        {"raw_body", l_req_raw_body},
        {"client_addr", l_req_client_addr},
        {"get_header", l_req_get_header},
        {"set_header", l_req_set_header},
        {"model", l_req_model},
        {"set_model", mf_lua_route_set_model},
        {"body", l_req_body},
        {"set_body", l_req_set_body},
        {"stream", l_req_stream},
        {"last_user_text", l_req_last_user_text},
        {"consumer", l_req_consumer},
        {"set_consumer", l_req_set_consumer},
        {"consumer_record", l_req_consumer_record},
        {"set_consumer_record", l_req_set_consumer_record},
        {"info", l_req_info},
        {NULL, NULL}};

    mf_lua_register(L, "req", fns);
}
