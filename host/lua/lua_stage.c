/*
 * Lua stages on LuaJIT. A script is a module returning a table with name,
 * version and one function per stage (M.on_route(conf, ctx)). Each worker
 * has its own lua_State per stage and generation; each call runs in a
 * coroutine, so host async services (mf.sleep, later mf.http, mf.redis)
 * yield it and resume it from their completion. Returning `status, body`
 * answers the request.
 *
 * Limits: a count hook ends a run of Lua code (a stage function up to its
 * next yield, or a script's top-level code) past its deadline; a timer
 * ends a stage call paused longer than its pause_limit; the allocator
 * refuses what would take a state past its memory_limit. Unless a stage is
 * trusted, its state is sandboxed (no io, os.execute, os.exit, debug, ffi,
 * C modules, bytecode) and runs in the interpreter, where the hook holds.
 */
#include "lua/lua_stage.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "request/request.h"
#include "api/api.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"

/* What a state may allocate; enforced while its Lua code runs. */
typedef struct {
    size_t used;
    size_t limit;
    int enforce;  /* refuse allocations past limit */
    int gc_check; /* no own allocator: the hook compares the GC's count */
} lua_mem_t;

struct mf_lua_stage_s {
    int nworkers;
    lua_mem_t *mem; /* per state */
    int trusted;
    double time_limit_ms;
    double pause_limit_ms;
    double init_timeout_ms;
    char **deps; /* files the script required while loading */
    size_t ndeps;
    lua_State **L;
    int *mod_ref;
    int *conf_ref;
    char *path;
    char *name;
    char *version;
};

/* Per request and stage, in the request's pool. */
typedef struct {
    mf_async_t async; /* the pause deadline, while armed (first member) */
    struct event *pause_ev;
    mf_req_t *r;
    double call_started; /* mf_now_ms() when the stage function was called */
    int pause_armed;
    int host_yield; /* the coroutine yielded in an mf async call */
    lua_State *L;
    int ctx_ref;
    int co_ref;
    mf_pstage_t *st;
    mf_stage_t stage;
} lua_slot_t;

static __thread mf_req_t *cur_req;

/* The run of Lua code in progress on this thread: its deadline (0 = none),
 * what ends it, and the memory account of its state. */
typedef struct {
    double deadline;
    const char *what;
    double limit_ms;
    lua_mem_t *mem;
} lua_run_t;

static __thread lua_run_t cur_run;

static void *
limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lua_mem_t *m = ud;
    void *p;

    if (nsize == 0) {
        free(ptr);
        m->used -= osize;
        return NULL;
    }
    if (m->enforce && nsize > osize && m->used - osize + nsize > m->limit) {
        return NULL; /* the VM raises "not enough memory" */
    }
    p = realloc(ptr, nsize);
    if (p != NULL) {
        m->used = m->used - osize + nsize;
    }
    return p;
}

/* Every MF_LUA_HOOK_COUNT VM instructions: past the deadline or the
 * memory limit, the running code fails with an error. */
#define MF_LUA_HOOK_COUNT 1000

static void
limit_hook(lua_State *L, lua_Debug *ar)
{
    MF_UNUSED(ar);
    if (cur_run.deadline > 0 && mf_now_ms() > cur_run.deadline) {
        luaL_error(L, "ran longer than its %s of %.0f ms", cur_run.what,
                   cur_run.limit_ms);
    }
    if (cur_run.mem != NULL && cur_run.mem->gc_check &&
        (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 > cur_run.mem->limit) {
        lua_gc(L, LUA_GCCOLLECT, 0);
        if ((size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 > cur_run.mem->limit) {
            luaL_error(L, "not enough memory");
        }
    }
}

/* Starts a run of Lua code with a time budget; returns the run it
 * interrupts (restored by run_end). */
static lua_run_t
run_begin(lua_mem_t *mem, double limit_ms, const char *what)
{
    lua_run_t was = cur_run;

    cur_run.deadline = mf_now_ms() + limit_ms;
    cur_run.what = what;
    cur_run.limit_ms = limit_ms;
    cur_run.mem = mem;
    mem->enforce = 1;
    return was;
}

static void
run_end(lua_run_t was)
{
    if (cur_run.mem != NULL) {
        cur_run.mem->enforce = 0;
    }
    cur_run = was;
    if (cur_run.mem != NULL) {
        cur_run.mem->enforce = 1;
    }
}

#define stage_fn mf_stage_fn_names

/* JSON <-> Lua */

static char array_mt_key;

static void
push_json(lua_State *L, json_t *j, int depth)
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
            push_json(L, v, depth + 1);
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
            push_json(L, v, depth + 1);
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

/* Converts the value at idx; NULL with the reason in to_json_why. A table
 * that contains itself fails as nesting too deep. */
static json_t *
to_json(lua_State *L, int idx, int depth)
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
                v = to_json(L, -1, depth + 1);
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
            v = to_json(L, -1, depth + 1);
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

/* The mf module */

static mf_req_t *
need_req(lua_State *L)
{
    if (cur_req == NULL) {
        luaL_error(L, "mf.req and friends are only usable inside a stage "
                      "function");
    }
    return cur_req;
}

static mf_str_t
arg_str(lua_State *L, int i)
{
    size_t len;
    const char *s = luaL_checklstring(L, i, &len);

    return (mf_str_t){s, len};
}

static int
push_str(lua_State *L, mf_str_t s)
{
    lua_pushlstring(L, s.data ? s.data : "", s.len);
    return 1;
}

static int
fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static int
l_req_id(lua_State *L)
{
    return push_str(L, need_req(L)->id);
}

static int
l_req_method(lua_State *L)
{
    return push_str(L, need_req(L)->method);
}

static int
l_req_path(lua_State *L)
{
    return push_str(L, need_req(L)->path);
}

static int
l_req_client_addr(lua_State *L)
{
    return push_str(L, need_req(L)->client_addr);
}

static mf_headers_t
which_headers(lua_State *L, int idx, mf_headers_t def)
{
    const char *w = luaL_optstring(L, idx, NULL);

    if (w == NULL) {
        return def;
    }
    if (strcmp(w, "upstream") == 0) {
        return MF_UPSTREAM_REQUEST_HEADERS;
    }
    if (strcmp(w, "upstream_response") == 0) {
        return MF_UPSTREAM_RESPONSE_HEADERS;
    }
    return def;
}

static int
l_req_get_header(lua_State *L)
{
    mf_req_t *r = need_req(L);
    mf_str_t v;

    if (mf_api.get_header(r, MF_REQUEST_HEADERS, arg_str(L, 1), &v) != MF_OK) {
        lua_pushnil(L);
        return 1;
    }
    return push_str(L, v);
}

static int
l_req_set_header(lua_State *L)
{
    mf_req_t *r = need_req(L);
    mf_headers_t w = which_headers(L, 3, MF_REQUEST_HEADERS);

    if (mf_api.set_header(r, w, arg_str(L, 1),
                          lua_isnil(L, 2) ? MF_STR("") : arg_str(L, 2)) !=
        MF_OK) {
        return fail(L, "set_header is not allowed here or the header is "
                       "invalid");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_req_model(lua_State *L)
{
    return push_str(L, need_req(L)->model);
}

static int
l_route_set_model(lua_State *L)
{
    mf_req_t *r = need_req(L);
    mf_str_t m = arg_str(L, 1);

    if (mf_api.set_model(r, m) != MF_OK) {
        char msg[300];

        snprintf(msg, sizeof(msg), "no provider serves model '%.*s'",
                 (int)(m.len > 200 ? 200 : m.len), m.data);
        return fail(L, msg);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_req_body(lua_State *L)
{
    mf_req_t *r = need_req(L);
    json_t *body = mf_req_body_json(r);

    if (body == NULL) {
        lua_pushnil(L);
        return 1;
    }
    push_json(L, body, 0);
    return 1;
}

static int
l_req_set_body(lua_State *L)
{
    mf_req_t *r = need_req(L);
    json_t *j;

    luaL_checktype(L, 1, LUA_TTABLE);
    if (!(MF_HOOK(r->cur_stage) &
          (MF_HOOK(MF_STAGE_REQUEST) | MF_HOOK(MF_STAGE_ROUTE) |
           MF_HOOK(MF_STAGE_UPSTREAM_REQUEST)))) {
        return fail(L, "set_body is only allowed before the upstream call");
    }
    j = to_json(L, 1, 0);
    if (!json_is_object(j)) {
        json_decref(j);
        return fail(L, "the body must be a table convertible to a JSON "
                       "object");
    }
    json_decref(r->json);
    r->json = j;
    r->body_dirty = 1;
    {
        json_t *m = json_object_get(j, "model");

        if (json_is_string(m) &&
            !mf_str_eq(r->model, mf_str_from(json_string_value(m)))) {
            mf_req_set_model(r, mf_str_from(json_string_value(m)));
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_req_stream(lua_State *L)
{
    lua_pushboolean(L, need_req(L)->stream);
    return 1;
}

static int
l_req_last_user_text(lua_State *L)
{
    return push_str(L, mf_req_last_user_text(need_req(L)));
}

static int
l_req_consumer(lua_State *L)
{
    return push_str(L, need_req(L)->consumer);
}

static int
l_req_set_consumer(lua_State *L)
{
    if (mf_api.set_consumer(need_req(L), arg_str(L, 1)) != MF_OK) {
        return fail(L, "set_consumer is only allowed in on_request");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void
set_num_field(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void
push_usage(lua_State *L, const mf_usage_t *u)
{
    lua_createtable(L, 0, 6);
    set_num_field(L, "prompt_tokens", (double)u->prompt_tokens);
    set_num_field(L, "completion_tokens", (double)u->completion_tokens);
    set_num_field(L, "total_tokens", (double)u->total_tokens);
    set_num_field(L, "cached_tokens", (double)u->cached_tokens);
    set_num_field(L, "reasoning_tokens", (double)u->reasoning_tokens);
    lua_pushboolean(L, u->estimated);
    lua_setfield(L, -2, "estimated");
}

static int
l_req_info(lua_State *L)
{
    mf_req_info_t i = {.size = sizeof(i)};

    mf_api.get_info(need_req(L), &i);
    lua_createtable(L, 0, 20);
    push_str(L, i.id);
    lua_setfield(L, -2, "id");
    push_str(L, i.model);
    lua_setfield(L, -2, "model");
    push_str(L, i.provider);
    lua_setfield(L, -2, "provider");
    push_str(L, i.upstream_model);
    lua_setfield(L, -2, "upstream_model");
    push_str(L, i.consumer);
    lua_setfield(L, -2, "consumer");
    push_str(L, i.error);
    lua_setfield(L, -2, "error");
    set_num_field(L, "status", i.status);
    set_num_field(L, "upstream_status", i.upstream_status);
    set_num_field(L, "attempts", i.attempts);
    set_num_field(L, "latency_ms", i.latency_ms);
    set_num_field(L, "ttft_ms", i.ttft_ms);
    set_num_field(L, "generation", i.generation);
    lua_pushboolean(L, i.stream);
    lua_setfield(L, -2, "stream");
    push_usage(L, &i.usage);
    lua_setfield(L, -2, "usage");
    return 1;
}

static int
l_route_clear(lua_State *L)
{
    if (mf_api.clear_targets(need_req(L)) != MF_OK) {
        return fail(L, "targets can only be changed in on_route");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_route_add_target(lua_State *L)
{
    mf_target_t t;

    t.provider = arg_str(L, 1);
    t.model = arg_str(L, 2);
    t.weight = (unsigned)luaL_optinteger(L, 3, 1);
    if (mf_api.add_target(need_req(L), &t) != MF_OK) {
        return fail(L, "add_target needs on_route and a configured "
                       "provider name");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_route_targets(lua_State *L)
{
    mf_req_t *r = need_req(L);
    size_t i;

    lua_createtable(L, (int)r->ntargets, 0);
    for (i = 0; i < r->ntargets; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, r->targets[i].prov->conf->name);
        lua_setfield(L, -2, "provider");
        push_str(L, r->targets[i].model);
        lua_setfield(L, -2, "model");
        lua_pushinteger(L, r->targets[i].weight);
        lua_setfield(L, -2, "weight");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int
l_resp_status(lua_State *L)
{
    mf_req_t *r = need_req(L);

    lua_pushinteger(L, r->status ? r->status : r->att.up_status);
    return 1;
}

static int
l_resp_get_header(lua_State *L)
{
    mf_req_t *r = need_req(L);
    mf_str_t v;
    mf_headers_t w = which_headers(L, 2, MF_RESPONSE_HEADERS);

    if (mf_api.get_header(r, w, arg_str(L, 1), &v) != MF_OK) {
        lua_pushnil(L);
        return 1;
    }
    return push_str(L, v);
}

static int
l_resp_set_header(lua_State *L)
{
    mf_req_t *r = need_req(L);

    if (mf_api.set_header(r, MF_RESPONSE_HEADERS, arg_str(L, 1),
                          lua_isnil(L, 2) ? MF_STR("") : arg_str(L, 2)) !=
        MF_OK) {
        return fail(L, "response headers are already sent or the header is "
                       "invalid");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_resp_usage(lua_State *L)
{
    push_usage(L, &need_req(L)->usage);
    return 1;
}

static int
l_resp_set_body(lua_State *L)
{
    if (mf_api.set_response_chunk(need_req(L), arg_str(L, 1)) != MF_OK) {
        return fail(L, "set_body is only allowed in on_response_body");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_shared_get(lua_State *L)
{
    mf_str_t k = arg_str(L, 1);
    char small[1024];
    int n = mf_api.shared_get(k, small, sizeof(small));

    if (n < 0) {
        lua_pushnil(L);
        return 1;
    }
    if ((size_t)n <= sizeof(small)) {
        lua_pushlstring(L, small, (size_t)n);
        return 1;
    }
    {
        char *big = malloc((size_t)n);
        int m;

        if (big == NULL) {
            return fail(L, "out of memory");
        }
        m = mf_api.shared_get(k, big, (size_t)n);
        if (m < 0) {
            free(big);
            lua_pushnil(L);
            return 1;
        }
        lua_pushlstring(L, big, (size_t)(m < n ? m : n));
        free(big);
        return 1;
    }
}

static int
l_shared_set(lua_State *L)
{
    size_t len;
    const char *v;
    double ttl = luaL_optnumber(L, 3, 0);

    lua_settop(L, 3);
    v = lua_tolstring(L, 2, &len);
    if (v == NULL) {
        return fail(L, "value must be a string or a number");
    }
    if (mf_api.shared_set(arg_str(L, 1), (mf_str_t){v, len},
                          (uint64_t)(ttl > 0 ? ttl : 0)) != MF_OK) {
        return fail(L, "shared.set failed (key or value too large)");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_shared_incr(lua_State *L)
{
    int64_t out;
    double delta = luaL_optnumber(L, 2, 1);
    double ttl = luaL_optnumber(L, 3, 0);

    if (mf_api.shared_incr(arg_str(L, 1), (int64_t)delta,
                           (uint64_t)(ttl > 0 ? ttl : 0), &out) != MF_OK) {
        return fail(L, "shared.incr failed: the value is not an integer");
    }
    lua_pushnumber(L, (lua_Number)out);
    return 1;
}

static int
l_shared_delete(lua_State *L)
{
    lua_pushboolean(L, mf_api.shared_delete(arg_str(L, 1)) == MF_OK);
    return 1;
}

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

static int
l_json_encode(lua_State *L)
{
    json_t *j;
    char *text;

    luaL_checkany(L, 1);
    j = to_json(L, 1, 0);
    if (j == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "mf.json.encode: %s", to_json_why);
        return 2;
    }
    text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (text == NULL) {
        return fail(L, "JSON encoding failed");
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
        return fail(L, msg);
    }
    push_json(L, j, 0);
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

static int
l_now(lua_State *L)
{
    lua_pushnumber(L, mf_now_ms());
    return 1;
}

static mf_action_t finish_coroutine(lua_slot_t *slot, mf_req_t *r, int status);

static __thread lua_slot_t *cur_slot;

/* The coroutine a slot runs, with nothing pushed. */
static lua_State *
slot_thread(lua_slot_t *slot)
{
    lua_State *co;

    lua_rawgeti(slot->L, LUA_REGISTRYINDEX, slot->co_ref);
    co = lua_tothread(slot->L, -1);
    lua_pop(slot->L, 1);
    return co;
}

/* Resumes a yielded stage with the nargs values pushed on co; the
 * request goes on unless the stage yields again. */
static void
resume_slot(lua_slot_t *slot, mf_req_t *r, lua_State *co, int nargs)
{
    int status;
    mf_action_t act;
    lua_run_t was;

    cur_req = r;
    cur_slot = slot;
    r->cur_stage = slot->stage;
    slot->host_yield = 0;
    was = run_begin(&slot->st->lua->mem[r->worker->id],
                    slot->st->lua->time_limit_ms, "time_limit");
    status = lua_resume(co, nargs);
    run_end(was);
    act = finish_coroutine(slot, r, status);
    cur_req = NULL;
    cur_slot = NULL;
    if (act != MF_PAUSE) {
        mf_req_resume(r, act);
    }
}

/* Checks that the running stage may yield for an async call. */
static lua_slot_t *
need_yieldable(lua_State *L, const char *what)
{
    if (cur_slot == NULL || cur_slot->co_ref == LUA_NOREF ||
        !(MF_HOOK(cur_slot->stage) &
          (MF_HOOK(MF_STAGE_REQUEST) | MF_HOOK(MF_STAGE_ROUTE) |
           MF_HOOK(MF_STAGE_UPSTREAM_REQUEST) |
           MF_HOOK(MF_STAGE_UPSTREAM_RESPONSE) |
           MF_HOOK(MF_STAGE_RESPONSE_HEADERS)))) {
        luaL_error(L,
                   "%s may only be called from a stage that can pause "
                   "(on_request .. on_response_headers)",
                   what);
    }
    if (L != slot_thread(cur_slot)) {
        luaL_error(L,
                   "%s cannot be called from a coroutine the script "
                   "created; call it from the stage function itself",
                   what);
    }
    return cur_slot;
}

static void
sleep_done(mf_req_t *r, void *arg, const char *err)
{
    lua_slot_t *slot = arg;

    MF_UNUSED(err);
    resume_slot(slot, r, slot_thread(slot), 0);
}

static int
l_sleep(lua_State *L)
{
    mf_req_t *r = need_req(L);
    double ms = luaL_checknumber(L, 1);
    lua_slot_t *slot = need_yieldable(L, "mf.sleep");

    if (mf_api.timer(r, (uint64_t)(ms > 0 ? ms : 0), sleep_done, slot) !=
        MF_OK) {
        return luaL_error(L, "mf.sleep: cannot arm a timer here");
    }
    slot->host_yield = 1;
    return lua_yield(L, 0);
}

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
    lua_slot_t *slot = arg;
    lua_State *co = slot_thread(slot);
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
    resume_slot(slot, r, co, n);
}

static int
l_redis(lua_State *L)
{
    mf_req_t *r = need_req(L);
    int argc = lua_gettop(L), i;
    mf_str_t argv[64];
    lua_slot_t *slot;

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
    slot = need_yieldable(L, "mf.redis");
    if (mf_api.redis_command(r, argc, argv, redis_done, slot) != MF_OK) {
        lua_pushnil(L);
        lua_pushstring(L, "mf.redis: the command could not be sent");
        return 2;
    }
    slot->host_yield = 1;
    return lua_yield(L, 0);
}

/* mf.http.request{url=, method=, headers=, body=, timeout=} */

static void
http_done(mf_req_t *r, void *arg, const mf_http_result_t *res, const char *err)
{
    lua_slot_t *slot = arg;
    lua_State *co = slot_thread(slot);
    size_t i, j;

    if (err != NULL) {
        lua_pushnil(co);
        lua_pushstring(co, err);
        resume_slot(slot, r, co, 2);
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
    resume_slot(slot, r, co, 1);
}

/* Sends the request described by the table at idx, then yields. */
static int
http_send(lua_State *L, int idx, const char *what)
{
    mf_req_t *r = need_req(L);
    mf_str_t url, body = MF_STR_NULL, hdrs[128];
    const char *method;
    size_t nh = 0;
    double timeout;
    lua_slot_t *slot;

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
        json_t *j = to_json(L, lua_gettop(L), 0);
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
    slot = need_yieldable(L, what);
    if (mf_api.http_call(r, method, url, hdrs, nh / 2, body,
                         (uint64_t)(timeout > 0 ? timeout : 0), http_done,
                         slot) != MF_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: cannot call %s (an http:// or https:// URL?)",
                        what, url.data);
        return 2;
    }
    slot->host_yield = 1;
    return lua_yield(L, 0);
}

static int
l_http_request(lua_State *L)
{
    return http_send(L, 1, "mf.http.request");
}

/* mf.http.get(url[, opts]) */
static int
l_http_get(lua_State *L)
{
    luaL_checkstring(L, 1);
    if (!lua_istable(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    lua_pushvalue(L, 1);
    lua_setfield(L, 2, "url");
    lua_pushstring(L, "GET");
    lua_setfield(L, 2, "method");
    return http_send(L, 2, "mf.http.get");
}

/* mf.http.post(url, body[, opts]); a table body is sent as JSON. */
static int
l_http_post(lua_State *L)
{
    luaL_checkstring(L, 1);
    if (!lua_istable(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    lua_pushvalue(L, 1);
    lua_setfield(L, 3, "url");
    lua_pushvalue(L, 2);
    lua_setfield(L, 3, "body");
    lua_pushstring(L, "POST");
    lua_setfield(L, 3, "method");
    return http_send(L, 3, "mf.http.post");
}

static void
register_fns(lua_State *L, const char *name, const luaL_Reg *fns)
{
    lua_newtable(L);
    for (; fns->name != NULL; fns++) {
        lua_pushcfunction(L, fns->func);
        lua_setfield(L, -2, fns->name);
    }
    lua_setfield(L, -2, name);
}

static int
open_mf(lua_State *L)
{
    static const luaL_Reg req[] = {{"id", l_req_id},
                                   {"method", l_req_method},
                                   {"path", l_req_path},
                                   {"client_addr", l_req_client_addr},
                                   {"get_header", l_req_get_header},
                                   {"set_header", l_req_set_header},
                                   {"model", l_req_model},
                                   {"set_model", l_route_set_model},
                                   {"body", l_req_body},
                                   {"set_body", l_req_set_body},
                                   {"stream", l_req_stream},
                                   {"last_user_text", l_req_last_user_text},
                                   {"consumer", l_req_consumer},
                                   {"set_consumer", l_req_set_consumer},
                                   {"info", l_req_info},
                                   {NULL, NULL}};
    static const luaL_Reg route[] = {{"set_model", l_route_set_model},
                                     {"clear", l_route_clear},
                                     {"add_target", l_route_add_target},
                                     {"targets", l_route_targets},
                                     {NULL, NULL}};
    static const luaL_Reg resp[] = {
        {"status", l_resp_status},         {"get_header", l_resp_get_header},
        {"set_header", l_resp_set_header}, {"usage", l_resp_usage},
        {"set_body", l_resp_set_body},     {NULL, NULL}};
    static const luaL_Reg shared[] = {{"get", l_shared_get},
                                      {"set", l_shared_set},
                                      {"incr", l_shared_incr},
                                      {"delete", l_shared_delete},
                                      {NULL, NULL}};
    static const luaL_Reg log[] = {{"debug", l_log_debug}, {"info", l_log_info},
                                   {"warn", l_log_warn},   {"err", l_log_err},
                                   {"error", l_log_err},   {NULL, NULL}};
    static const luaL_Reg http[] = {{"request", l_http_request},
                                    {"get", l_http_get},
                                    {"post", l_http_post},
                                    {NULL, NULL}};
    static const luaL_Reg json[] = {{"encode", l_json_encode},
                                    {"decode", l_json_decode},
                                    {"array", l_json_array},
                                    {NULL, NULL}};

    lua_newtable(L);
    register_fns(L, "req", req);
    register_fns(L, "route", route);
    register_fns(L, "resp", resp);
    register_fns(L, "shared", shared);
    register_fns(L, "log", log);
    register_fns(L, "json", json);
    register_fns(L, "http", http);
    lua_getfield(L, -1, "json");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_sleep);
    lua_setfield(L, -2, "sleep");
    lua_pushcfunction(L, l_redis);
    lua_setfield(L, -2, "redis");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushstring(L, "1.0");
    lua_setfield(L, -2, "api_version");
    return 1;
}

/* Loading */

static void
set_package_path(lua_State *L, const char *script, const char *extra)
{
    char *tmp = mf_xstrdup(script);
    const char *dir = dirname(tmp);
    const char *cur;

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    cur = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/?.lua;%s%s%s", dir, extra ? extra : "",
                    extra ? ";" : "", cur ? cur : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
    free(tmp);
}

/* Modules required while a script loads: the file watcher reloads the
 * stage when one changes. A searcher in front records the file that
 * package.searchpath finds, then lets the standard searchers load it. */
static char deps_key;

static int
record_dep(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    if (lua_isfunction(L, -1)) {
        lua_pushstring(L, name);
        lua_getfield(L, -3, "path");
        if (lua_pcall(L, 2, 1, 0) == 0 && lua_isstring(L, -1)) {
            lua_pushlightuserdata(L, &deps_key);
            lua_rawget(L, LUA_REGISTRYINDEX);
            lua_pushvalue(L, -2);
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
            lua_pop(L, 1);
        }
    }
    lua_pushnil(L); /* not found here: the next searcher loads it */
    return 1;
}

static void
install_dep_recorder(lua_State *L)
{
    lua_pushlightuserdata(L, &deps_key);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "insert");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaders");
    lua_remove(L, -2);
    lua_pushinteger(L, 1);
    lua_pushcfunction(L, record_dep);
    lua_call(L, 3, 0);
    lua_pop(L, 1);
}

static void
collect_deps(mf_lua_stage_t *ls, lua_State *L)
{
    size_t i, n;

    lua_pushlightuserdata(L, &deps_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    n = lua_objlen(L, -1);
    ls->deps = mf_xcalloc(n ? n : 1, sizeof(char *));
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (int)i + 1);
        ls->deps[ls->ndeps++] = mf_xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

const char *const *
mf_lua_stage_deps(mf_lua_stage_t *ls, size_t *n)
{
    *n = ls->ndeps;
    return (const char *const *)ls->deps;
}

/* The sandbox of a stage that is not trusted, run with the script's
 * directory as its argument: what reaches outside the process (files,
 * commands, exit, C code, the debug library, bytecode) is removed, and
 * loadfile/dofile read text files under the script's directory only. */
static const char sandbox_lua[] =
    "local dir = ...\n"
    "io, debug, jit = nil, nil, nil\n"
    "for _, k in ipairs{'exit', 'execute', 'remove', 'rename', 'tmpname',\n"
    "                   'getenv', 'setlocale'} do os[k] = nil end\n"
    "for k in pairs(package.loaded) do\n"
    "  if k == 'io' or k == 'debug' or k == 'ffi' or k:match('^jit') then\n"
    "    package.loaded[k] = nil end end\n"
    "for k in pairs(package.preload) do\n"
    "  if k == 'ffi' or k:match('^jit') then package.preload[k] = nil end end\n"
    "package.loadlib, package.cpath = nil, ''\n"
    "package.loaders[4], package.loaders[3] = nil, nil\n"
    "local rawload, rawloadfile = load, loadfile\n"
    "load = function(chunk, name, mode, env)\n"
    "  return rawload(chunk, name, 't', env) end\n"
    "loadstring = function(s, name) return rawload(s, name, 't') end\n"
    "loadfile = function(p, mode, env)\n"
    "  if type(p) ~= 'string' or p:find('..', 1, true) then\n"
    "    return nil, 'loadfile: only files under the script directory' end\n"
    "  if p:sub(1, 1) ~= '/' then p = dir .. '/' .. p end\n"
    "  if p:sub(1, #dir + 1) ~= dir .. '/' then\n"
    "    return nil, 'loadfile: only files under the script directory' end\n"
    "  return rawloadfile(p, 't', env) end\n"
    "dofile = function(p) return assert(loadfile(p))() end\n";

static int
lua_panic_log(lua_State *L)
{
    mf_log_error("Lua panic: %s", lua_tostring(L, -1));
    return 0;
}

/* Removes what an untrusted script must not reach; MF_ERR with err. */
static int
sandbox(lua_State *L, const char *path, char *err, size_t errcap)
{
    char *tmp = mf_xstrdup(path);
    char *dir = dirname(tmp);
    char real[PATH_MAX];

    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    if (luaL_loadbuffer(L, sandbox_lua, sizeof(sandbox_lua) - 1, "=sandbox") !=
        0) {
        snprintf(err, errcap, "%s: sandbox: %s", path, lua_tostring(L, -1));
        free(tmp);
        return MF_ERR;
    }
    lua_pushstring(L, realpath(dir, real) ? real : dir);
    free(tmp);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        snprintf(err, errcap, "%s: sandbox: %s", path, lua_tostring(L, -1));
        return MF_ERR;
    }
    return MF_OK;
}

/* Runs the script's top-level code under init_timeout and the memory
 * limit; the module table is pushed on success. */
static int
run_script(lua_State *L, mf_lua_stage_t *ls, int w, const char *path)
{
    lua_run_t was;
    int rc;

    if (luaL_loadfile(L, path) != 0) {
        return MF_ERR;
    }
    was = run_begin(&ls->mem[w], ls->init_timeout_ms, "init_timeout");
    rc = lua_pcall(L, 0, 1, 0);
    run_end(was);
    return rc == 0 ? MF_OK : MF_ERR;
}

static lua_State *
new_state(mf_lua_stage_t *ls, int w, json_t *config, const char *lua_path,
          unsigned *hooks, char *err, size_t errcap)
{
    const char *path = ls->path, *name = ls->name;
    int *mod_ref = &ls->mod_ref[w], *conf_ref = &ls->conf_ref[w];
    char **version = &ls->version;
    lua_State *L = lua_newstate(limited_alloc, &ls->mem[w]);
    int i;

    if (L == NULL) { /* a LuaJIT without its own allocators (no GC64) */
        L = luaL_newstate();
        ls->mem[w].gc_check = 1;
    }
    if (L == NULL) {
        snprintf(err, errcap,
                 "%s: cannot create a Lua state (out of "
                 "memory)",
                 path);
        return NULL;
    }
    lua_atpanic(L, lua_panic_log);
    luaL_openlibs(L);
    lua_sethook(L, limit_hook, LUA_MASKCOUNT, MF_LUA_HOOK_COUNT);
    if (!ls->trusted && sandbox(L, path, err, errcap) != MF_OK) {
        lua_close(L);
        return NULL;
    }
    lua_pushlightuserdata(L, &array_mt_key);
    lua_newtable(L);
    lua_pushstring(L, "array");
    lua_setfield(L, -2, "__jsontype");
    lua_rawset(L, LUA_REGISTRYINDEX);
    set_package_path(L, path, lua_path);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    open_mf(L);
    lua_setfield(L, -2, "mf");
    lua_pop(L, 2);
    install_dep_recorder(L);
    if (run_script(L, ls, w, path) != MF_OK) {
        snprintf(err, errcap, "stage '%s': %s", name,
                 lua_tostring(L, -1) ? lua_tostring(L, -1)
                                     : "not enough memory");
        lua_close(L);
        return NULL;
    }
    if (!lua_istable(L, -1)) {
        snprintf(err, errcap,
                 "%s: stage '%s': the script must return a "
                 "table of stage functions (return M)",
                 path, name);
        lua_close(L);
        return NULL;
    }
    *hooks = 0;
    for (i = 0; i < MF_STAGE__COUNT; i++) {
        if (stage_fn[i] == NULL) {
            continue;
        }
        lua_getfield(L, -1, stage_fn[i]);
        if (lua_isfunction(L, -1)) {
            *hooks |= MF_HOOK(i);
        } else if (!lua_isnil(L, -1)) {
            snprintf(err, errcap, "%s: stage '%s': %s must be a function", path,
                     name, stage_fn[i]);
            lua_close(L);
            return NULL;
        }
        lua_pop(L, 1);
    }
    if (*version == NULL) {
        lua_getfield(L, -1, "version");
        *version = mf_xstrdup(lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
        lua_pop(L, 1);
    }
    *mod_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    push_json(L, config, 0);
    *conf_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return L;
}

mf_lua_stage_t *
mf_lua_stage_load(const mf_stage_conf_t *sc, int nworkers, const char *lua_path,
                  unsigned *hooks, char *err, size_t errcap)
{
    mf_lua_stage_t *ls = mf_xcalloc(1, sizeof(*ls));
    const char *path = sc->lua, *name = sc->name;
    json_t *config = sc->config;
    int i;

    ls->nworkers = nworkers;
    ls->trusted = sc->trusted;
    ls->time_limit_ms = sc->time_limit_ms;
    ls->pause_limit_ms = sc->pause_limit_ms;
    ls->init_timeout_ms = sc->init_timeout_ms;
    ls->mem = mf_xcalloc((size_t)nworkers, sizeof(lua_mem_t));
    for (i = 0; i < nworkers; i++) {
        ls->mem[i].limit = sc->memory_limit;
    }
    ls->L = mf_xcalloc((size_t)nworkers, sizeof(lua_State *));
    ls->mod_ref = mf_xcalloc((size_t)nworkers, sizeof(int));
    ls->conf_ref = mf_xcalloc((size_t)nworkers, sizeof(int));
    ls->path = mf_xstrdup(path);
    ls->name = mf_xstrdup(name);
    for (i = 0; i < nworkers; i++) {
        ls->L[i] = new_state(ls, i, config, lua_path, hooks, err, errcap);
        if (ls->L[i] == NULL) {
            mf_lua_stage_free(ls);
            return NULL;
        }
    }
    collect_deps(ls, ls->L[0]);
    return ls;
}

int
mf_lua_stage_same_limits(const mf_lua_stage_t *ls, const mf_stage_conf_t *sc)
{
    return ls->trusted == sc->trusted &&
           ls->time_limit_ms == sc->time_limit_ms &&
           ls->pause_limit_ms == sc->pause_limit_ms &&
           ls->init_timeout_ms == sc->init_timeout_ms &&
           (ls->nworkers == 0 || ls->mem[0].limit == sc->memory_limit);
}

void
mf_lua_stage_free(mf_lua_stage_t *ls)
{
    int i;

    if (ls == NULL) {
        return;
    }
    for (i = 0; i < ls->nworkers; i++) {
        if (ls->L[i] != NULL) {
            lua_close(ls->L[i]);
        }
    }
    for (i = 0; i < (int)ls->ndeps; i++) {
        free(ls->deps[i]);
    }
    free(ls->deps);
    free(ls->L);
    free(ls->mem);
    free(ls->mod_ref);
    free(ls->conf_ref);
    free(ls->path);
    free(ls->name);
    free(ls->version);
    free(ls);
}

const char *
mf_lua_stage_version(mf_lua_stage_t *ls)
{
    return ls->version ? ls->version : "";
}

/* Calls */

/* Answers from `return status, body`. */
static mf_action_t
respond_from(lua_State *co, mf_req_t *r, int nres, const char *name)
{
    int base = lua_gettop(co) - nres + 1;
    int status;

    if (nres == 0 || lua_isnil(co, base)) {
        return MF_CONTINUE;
    }
    if (!lua_isnumber(co, base)) {
        mf_log_error("stage '%s': returned %s; return nothing to go on, or "
                     "status, body to answer",
                     name, luaL_typename(co, base));
        return MF_FAIL;
    }
    status = (int)lua_tointeger(co, base);
    if (status < 200 || status > 599) {
        mf_log_error("stage '%s': returned status %d", name, status);
        return MF_FAIL;
    }
    if (nres >= 2 && lua_istable(co, base + 1)) {
        json_t *j = to_json(co, base + 1, 0);
        char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

        const char *why = j ? "encoding failed" : to_json_why;

        json_decref(j);
        if (text == NULL) {
            mf_log_error("stage '%s': the body it returned cannot be encoded "
                         "as JSON: %s",
                         name, why);
            return MF_FAIL;
        }
        mf_req_respond(r, status, "application/json", mf_str_from(text));
        free(text);
    } else if (nres >= 2 && lua_isstring(co, base + 1)) {
        size_t len;
        const char *s = lua_tolstring(co, base + 1, &len);

        if (status >= 400 && (len == 0 || (s[0] != '{' && s[0] != '['))) {
            mf_req_respond_error(r, status,
                                 status == 401   ? "authentication_error"
                                 : status == 429 ? "rate_limit_error"
                                                 : "invalid_request_error",
                                 NULL, s);
        } else {
            mf_req_respond(r, status,
                           len && (s[0] == '{' || s[0] == '[')
                               ? "application/json"
                               : "text/plain; charset=utf-8",
                           (mf_str_t){s, len});
        }
    } else {
        mf_req_respond(r, status, "application/json", MF_STR(""));
    }
    return MF_RESPOND;
}

/* The pause deadline: a stage call waiting longer than pause_limit on
 * async calls fails the request (504) and its coroutine is dropped; the
 * calls it waited on are cancelled with the request. */
static void
pause_disarm(lua_slot_t *slot)
{
    if (slot->pause_armed) {
        evtimer_del(slot->pause_ev);
        mf_req_async_remove(slot->r, &slot->async);
        slot->pause_armed = 0;
    }
}

static void
pause_cancel(mf_async_t *a)
{
    lua_slot_t *slot = (lua_slot_t *)a; /* async is the first member */

    evtimer_del(slot->pause_ev);
    slot->pause_armed = 0;
}

static void
pause_expired(evutil_socket_t fd, short what, void *arg)
{
    lua_slot_t *slot = arg;
    mf_req_t *r = slot->r;
    double limit = slot->st->lua->pause_limit_ms;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    pause_disarm(slot);
    mf_log_error("stage '%s' %s: waited longer than its pause_limit of %.0f "
                 "ms on an async call; the request fails",
                 slot->st->name, stage_fn[slot->stage], limit);
    mf_stage_set_error(slot->st, "%s: waited longer than its pause_limit",
                       stage_fn[slot->stage]);
    luaL_unref(slot->L, LUA_REGISTRYINDEX, slot->co_ref);
    slot->co_ref = LUA_NOREF;
    if (r->head_sent) {
        mf_req_resume(r, MF_FAIL);
        return;
    }
    mf_req_respond_error(r, 504, "timeout_error", "stage_timeout",
                         "a gateway stage waited too long on a service");
    mf_req_resume(r, MF_RESPOND);
}

static void
pause_arm(lua_slot_t *slot, mf_req_t *r)
{
    double left =
        slot->call_started + slot->st->lua->pause_limit_ms - mf_now_ms();
    struct timeval tv;

    if (slot->pause_armed) {
        return;
    }
    if (slot->pause_ev == NULL) {
        slot->pause_ev = evtimer_new(r->worker->base, pause_expired, slot);
    }
    if (left < 0) {
        left = 0;
    }
    tv.tv_sec = (time_t)(left / 1000);
    tv.tv_usec = (suseconds_t)((left - (double)tv.tv_sec * 1000) * 1000);
    evtimer_add(slot->pause_ev, &tv);
    slot->async.cancel = pause_cancel;
    mf_req_async_add(r, &slot->async);
    slot->pause_armed = 1;
}

static mf_action_t
finish_coroutine(lua_slot_t *slot, mf_req_t *r, int status)
{
    lua_State *L = slot->L, *co;
    mf_action_t act;

    lua_rawgeti(L, LUA_REGISTRYINDEX, slot->co_ref);
    co = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (status == LUA_YIELD && slot->host_yield) {
        pause_arm(slot, r);
        return MF_PAUSE;
    }
    pause_disarm(slot);
    if (status == LUA_YIELD) {
        mf_log_error("stage '%s' %s: yielded outside an mf async call "
                     "(a bare coroutine.yield()); only mf.sleep, mf.http "
                     "and mf.redis may pause a stage",
                     slot->st->name, stage_fn[slot->stage]);
        mf_stage_set_error(slot->st, "%s: yielded outside an mf async call",
                           stage_fn[slot->stage]);
        act = MF_FAIL;
    } else if (status == LUA_ERRMEM) {
        mf_log_error("stage '%s' %s: went over its memory_limit of %zu "
                     "bytes",
                     slot->st->name, stage_fn[slot->stage],
                     slot->st->lua->mem[r->worker->id].limit);
        mf_stage_set_error(slot->st, "%s: went over its memory_limit",
                           stage_fn[slot->stage]);
        act = MF_FAIL;
    } else if (status != 0) {
        const char *msg = lua_tostring(co, -1);

        mf_log_error("stage '%s' %s: %s", slot->st->name, stage_fn[slot->stage],
                     msg ? msg : "(error)");
        mf_stage_set_error(slot->st, "%s: %s", stage_fn[slot->stage],
                           msg ? msg : "(error)");
        act = MF_FAIL;
    } else {
        act = respond_from(co, r, lua_gettop(co), slot->st->name);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, slot->co_ref);
    slot->co_ref = LUA_NOREF;
    if (status != 0 && status != LUA_YIELD) {
        lua_gc(L, LUA_GCCOLLECT, 0); /* what the failed call held */
    }
    return act;
}

mf_action_t
mf_lua_stage_call(mf_pstage_t *st, mf_stage_t stage, mf_req_t *r, void **ctx,
                  mf_str_t data, int last)
{
    mf_lua_stage_t *ls = st->lua;
    int w = r->worker->id;
    lua_State *L = ls->L[w], *co;
    lua_slot_t *slot = *ctx;
    mf_action_t act;
    lua_run_t was;
    int nargs = 2, status;

    if (slot == NULL) {
        slot = mf_pool_alloc(r->pool, sizeof(*slot));
        if (slot == NULL) {
            return MF_FAIL;
        }
        memset(slot, 0, sizeof(*slot));
        slot->r = r;
        slot->L = L;
        slot->st = st;
        slot->co_ref = LUA_NOREF;
        lua_newtable(L);
        slot->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        *ctx = slot;
    }
    slot->stage = stage;
    co = lua_newthread(L);
    slot->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(co, LUA_REGISTRYINDEX, ls->mod_ref[w]);
    lua_getfield(co, -1, stage_fn[stage]);
    lua_remove(co, -2);
    lua_rawgeti(co, LUA_REGISTRYINDEX, ls->conf_ref[w]);
    lua_rawgeti(co, LUA_REGISTRYINDEX, slot->ctx_ref);
    if (stage == MF_STAGE_RESPONSE_BODY) {
        lua_pushlstring(co, data.data ? data.data : "", data.len);
        lua_pushboolean(co, last);
        nargs = 4;
    }
    cur_req = r;
    cur_slot = slot;
    slot->host_yield = 0;
    slot->call_started = mf_now_ms();
    was = run_begin(&ls->mem[w], ls->time_limit_ms, "time_limit");
    status = lua_resume(co, nargs);
    run_end(was);
    act = finish_coroutine(slot, r, status);
    cur_req = NULL;
    cur_slot = NULL;
    if (stage == MF_STAGE_DONE) {
        mf_lua_stage_done(st, r, ctx);
    } else if (act == MF_PAUSE &&
               !(MF_HOOK(stage) &
                 (MF_HOOK(MF_STAGE_REQUEST) | MF_HOOK(MF_STAGE_ROUTE) |
                  MF_HOOK(MF_STAGE_UPSTREAM_REQUEST) |
                  MF_HOOK(MF_STAGE_UPSTREAM_RESPONSE) |
                  MF_HOOK(MF_STAGE_RESPONSE_HEADERS)))) {
        mf_log_error("stage '%s': %s may not yield", st->name, stage_fn[stage]);
        act = MF_FAIL;
    }
    return act;
}

void
mf_lua_stage_done(mf_pstage_t *st, mf_req_t *r, void **ctx)
{
    lua_slot_t *slot = *ctx;

    MF_UNUSED(st);
    MF_UNUSED(r);
    if (slot == NULL) {
        return;
    }
    pause_disarm(slot);
    if (slot->pause_ev != NULL) {
        event_free(slot->pause_ev);
        slot->pause_ev = NULL;
    }
    if (slot->co_ref != LUA_NOREF) {
        luaL_unref(slot->L, LUA_REGISTRYINDEX, slot->co_ref);
        slot->co_ref = LUA_NOREF;
    }
    luaL_unref(slot->L, LUA_REGISTRYINDEX, slot->ctx_ref);
    *ctx = NULL;
}
