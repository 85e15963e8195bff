/*
 * Lua stages on LuaJIT. A script is a module returning a table with name,
 * version and one function per stage (M.on_route(conf, ctx)). Each worker
 * has its own lua_State per stage and generation; each call runs in a
 * coroutine, so host async services (mf.sleep, mf.http, mf.redis) yield
 * it and resume it from their completion. Returning `status, body`
 * answers the request. This file is the runtime (states, coroutines,
 * limits, the sandbox, loading); the mf module is one lua_<area>.c per API
 * area on top of the host API, plus the embedded helper library
 * (the .lua files of lua/mf).
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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "lua/lua_common.h"
#include "request/request.h"
#include "pipeline/endpoint.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"
#include "pipeline/stage_runtime.h"

/* What a state may allocate; enforced while its Lua code runs. */
typedef struct {
    size_t used;
    size_t limit;
    int enforce;  /* refuse allocations past limit */
    int gc_check; /* no own allocator: the hook compares the GC's count */
} lua_mem_t;

typedef struct mf_lua_stage_s mf_lua_stage_t;

struct mf_lua_stage_s {
    int nworkers;
    lua_mem_t *mem; /* per state */
    int trusted;
    double time_limit_ms;
    double pause_limit_ms;
    double init_timeout_ms;
    char *config_dir; /* the config file's directory (mf.files) */
    char **deps;      /* files the script required while loading */
    size_t ndeps;
    lua_State **L;
    int *mod_ref;
    int *conf_ref;
    size_t *nhandlers; /* endpoint handlers, per state */
    char *path;
    char *name;
    char *version;
    /* admin commands (mf.command): their functions live in a state of
     * their own, loaded on the main thread after the workers' when the
     * script declares any; commands run there, one at a time */
    int ncommands;    /* declared in worker 0's state */
    lua_State *cmd_L; /* the commands' state (index nworkers of mem,
                         mod_ref, conf_ref), or NULL */
    pthread_mutex_t cmd_lock;
    struct lua_cmd_s **cmds; /* what each registered command calls */
    size_t ncmds;
};

/* One registered command: the stage and the name its function is kept
 * under in the commands' state. */
typedef struct lua_cmd_s {
    mf_lua_stage_t *ls;
    char name[64];
} lua_cmd_t;

static mf_lua_stage_t *
lua_of(const mf_pstage_t *st)
{
    return st->impl;
}

/* Per request and stage, in the request's pool. */
struct mf_lua_slot_s {
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
};

static __thread mf_req_t *cur_req;
static __thread int loading_worker = -1; /* see mf_lua_loading_worker */

int
mf_lua_loading_worker(void)
{
    return loading_worker;
}

/* The run of Lua code in progress on this thread: its deadline (0 = none),
 * what ends it, and the memory account of its state. */
typedef struct {
    double deadline;
    const char *what;
    double limit_ms;
    lua_mem_t *mem;
    int loading; /* a script's load or init: ends when the gateway stops */
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
    if (cur_run.loading && mf_stop_requested()) {
        /* a load (start or reload) gives way to SIGTERM at once */
        luaL_error(L, "stopped: the gateway was told to stop while this "
                      "code ran at load");
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
    cur_run.loading = 0;
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

/* The mf module: shared helpers of its files (lua/lua_common.h) */

mf_req_t *
mf_lua_req(lua_State *L)
{
    if (cur_req == NULL) {
        luaL_error(L, "mf.req and friends are only usable inside a stage "
                      "function");
    }
    return cur_req;
}

mf_str_t
mf_lua_arg_str(lua_State *L, int i)
{
    size_t len;
    const char *s = luaL_checklstring(L, i, &len);

    return (mf_str_t){s, len};
}

int
mf_lua_push_str(lua_State *L, mf_str_t s)
{
    lua_pushlstring(L, s.data ? s.data : "", s.len);
    return 1;
}

int
mf_lua_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

int
mf_lua_refuse(lua_State *L, const char *fn, mf_call_t call)
{
    char why[256];

    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", fn,
                    mf_api_refusal(cur_req, call, why, sizeof(why)));
    return 2;
}

void
mf_lua_set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

void
mf_lua_push_usage(lua_State *L, const mf_usage_t *u)
{
    lua_createtable(L, 0, 6);
    mf_lua_set_num(L, "prompt_tokens", (double)u->prompt_tokens);
    mf_lua_set_num(L, "completion_tokens", (double)u->completion_tokens);
    mf_lua_set_num(L, "total_tokens", (double)u->total_tokens);
    mf_lua_set_num(L, "cached_tokens", (double)u->cached_tokens);
    mf_lua_set_num(L, "reasoning_tokens", (double)u->reasoning_tokens);
    lua_pushboolean(L, u->estimated);
    lua_setfield(L, -2, "estimated");
}

void
mf_lua_register(lua_State *L, const char *name, const luaL_Reg *fns)
{
    lua_newtable(L);
    for (; fns->name != NULL; fns++) {
        lua_pushcfunction(L, fns->func);
        lua_setfield(L, -2, fns->name);
    }
    lua_setfield(L, -2, name);
}

mf_headers_t
mf_lua_which_headers(lua_State *L, int idx, mf_headers_t def)
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

/* Async calls */

static mf_action_t finish_coroutine(mf_lua_slot_t *slot, mf_req_t *r,
                                    int status);

static __thread mf_lua_slot_t *cur_slot;

lua_State *
mf_lua_slot_thread(mf_lua_slot_t *slot)
{
    lua_State *co;

    lua_rawgeti(slot->L, LUA_REGISTRYINDEX, slot->co_ref);
    co = lua_tothread(slot->L, -1);
    lua_pop(slot->L, 1);
    return co;
}

void
mf_lua_slot_resume(mf_lua_slot_t *slot, mf_req_t *r, lua_State *co, int nargs)
{
    int status;
    mf_action_t act;
    lua_run_t was;

    cur_req = r;
    cur_slot = slot;
    r->cur_stage = slot->stage;
    slot->host_yield = 0;
    was = run_begin(&lua_of(slot->st)->mem[r->worker->id],
                    lua_of(slot->st)->time_limit_ms, "time_limit");
    status = lua_resume(co, nargs);
    run_end(was);
    act = finish_coroutine(slot, r, status);
    cur_req = NULL;
    cur_slot = NULL;
    if (act != MF_PAUSE) {
        mf_api.resume(r, act);
    }
}

mf_lua_slot_t *
mf_lua_yieldable(lua_State *L, const char *what)
{
    char why[256];

    if (cur_slot == NULL || cur_slot->co_ref == LUA_NOREF ||
        !mf_api_allowed(cur_req, MF_CALL_PAUSE)) {
        luaL_error(L, "%s: %s", what,
                   mf_api_refusal(cur_req, MF_CALL_PAUSE, why, sizeof(why)));
    }
    if (L != mf_lua_slot_thread(cur_slot)) {
        luaL_error(L,
                   "%s cannot be called from a coroutine the script "
                   "created; call it from the stage function itself",
                   what);
    }
    return cur_slot;
}

int
mf_lua_yield(lua_State *L, mf_lua_slot_t *slot)
{
    slot->host_yield = 1;
    return lua_yield(L, 0);
}

/* The mf module: each API area adds its part, then the embedded helper
 * library (the .lua files of lua/mf) is put on package.preload and each of its
 * modules required, so that the helpers extend mf before the script
 * runs. */
static int l_command(lua_State *L);
static int l_config_section(lua_State *L);

static int
open_mf(lua_State *L)
{
    lua_newtable(L);
    mf_lua_inject_req_api(L);
    mf_lua_inject_route_api(L);
    mf_lua_inject_resp_api(L);
    mf_lua_inject_shared_api(L);
    mf_lua_inject_log_api(L);
    mf_lua_inject_json_api(L);
    mf_lua_inject_http_api(L);
    mf_lua_inject_time_api(L);
    mf_lua_inject_redis_api(L);
    mf_lua_inject_endpoint_api(L);
    mf_lua_inject_models_api(L);
    mf_lua_inject_metrics_api(L);
    mf_lua_inject_regex_api(L);
    mf_lua_inject_llm_api(L);
    mf_lua_inject_files_api(L);
    mf_lua_inject_body_api(L);
    lua_pushcfunction(L, l_command);
    lua_setfield(L, -2, "command");
    lua_pushcfunction(L, l_config_section);
    lua_setfield(L, -2, "config_section");
    lua_pushstring(L, "1.0");
    lua_setfield(L, -2, "api_version");
    return 1;
}

/* Puts each embedded module on package.preload; MF_ERR with err when one
 * does not compile (a build defect). */
static int
preload_embedded(lua_State *L, char *err, size_t errcap)
{
    const mf_lua_embedded_t *e;

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    for (e = mf_lua_embedded; e->name != NULL; e++) {
        char chunk[128];

        snprintf(chunk, sizeof(chunk), "=[embedded %s]", e->name);
        if (luaL_loadbuffer(L, e->src, e->len, chunk) != 0) {
            snprintf(err, errcap, "embedded Lua module %s: %s", e->name,
                     lua_tostring(L, -1));
            lua_pop(L, 3);
            return MF_ERR;
        }
        lua_setfield(L, -2, e->name);
    }
    lua_pop(L, 2);
    return MF_OK;
}

/* Requires every embedded module (they extend mf); MF_ERR with err. */
static int
require_embedded(lua_State *L, char *err, size_t errcap)
{
    const mf_lua_embedded_t *e;

    for (e = mf_lua_embedded; e->name != NULL; e++) {
        lua_getglobal(L, "require");
        lua_pushstring(L, e->name);
        if (lua_pcall(L, 1, 0, 0) != 0) {
            snprintf(err, errcap, "embedded Lua module %s: %s", e->name,
                     lua_tostring(L, -1));
            lua_pop(L, 1);
            return MF_ERR;
        }
    }
    return MF_OK;
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

/* The stage being loaded on this thread (top-level code, M.init). */
static __thread mf_lua_stage_t *cur_load;
/* 1 while the commands' state is loaded (mf.command registers there) */
static __thread int loading_cmd_state;
/* the index of the state being loaded (its script and M.init), or -1 */
static __thread int loading_state = -1;

const char *
mf_lua_loading(lua_State *L, int *trusted, const char **script)
{
    MF_UNUSED(L);
    if (cur_load == NULL) {
        return NULL;
    }
    *trusted = cur_load->trusted;
    *script = cur_load->path;
    return cur_load->config_dir;
}

/* mf.config_section(name): a top-level section of the config as a Lua
 * value (api->config_section: "consumers", "groups", "prices", "redis",
 * "dir"; "@limits" claims the consumers' limits), nil when absent; while
 * the script loads only. */
static int
l_config_section(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const json_t *v;

    if (cur_load == NULL) {
        return luaL_error(L, "mf.config_section: only while the stage loads "
                             "(top level or M.init)");
    }
    v = mf_api.config_section(name);
    if (v == NULL) {
        lua_pushnil(L);
    } else {
        mf_lua_push_json(L, (json_t *)v, 0);
    }
    return 1;
}

#define LUA_CMDS_KEY "mf.commands"

/* An admin command, on the main thread: the function mf.command kept in
 * the commands' state, called with the request's arguments (a table);
 * it returns the answer (a value JSON can hold; nil is {}) and an HTTP
 * status (200 when absent). An error is a 500 with its message. */
static int
lua_cmd_run(void *arg, const json_t *args, json_t **out)
{
    lua_cmd_t *c = arg;
    mf_lua_stage_t *ls = c->ls;
    lua_State *L = ls->cmd_L;
    lua_run_t was;
    int top, rc, status = 200;

    pthread_mutex_lock(&ls->cmd_lock);
    top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_CMDS_KEY);
    lua_getfield(L, -1, c->name);
    mf_lua_push_json(L, (json_t *)args, 0);
    was =
        run_begin(&ls->mem[ls->nworkers], ls->init_timeout_ms, "init_timeout");
    rc = lua_pcall(L, 1, 2, 0);
    run_end(was);
    if (rc != 0) {
        *out = json_pack("{s:s}", "error",
                         lua_tostring(L, -1) ? lua_tostring(L, -1)
                                             : "not enough memory");
        status = 500;
    } else {
        if (lua_isnumber(L, -1)) {
            status = (int)lua_tointeger(L, -1);
            if (status < 100 || status > 599) {
                status = 500;
            }
        }
        *out = lua_isnil(L, -2) ? json_object()
                                : mf_lua_to_json(L, lua_gettop(L) - 1, 0);
        if (*out == NULL) {
            *out = json_pack("{s:s}", "error", mf_lua_to_json_why());
            status = 500;
        }
    }
    lua_settop(L, top);
    pthread_mutex_unlock(&ls->cmd_lock);
    return status;
}

/* mf.command(name, usage, fn): an admin command (POST /commands/NAME,
 * `manifoldctl NAME ...`), while the script loads. Every worker's state
 * runs the script; the command runs in a state of its own on the main
 * thread (the admin socket's), which shares with the workers' what
 * mf.shared and Redis hold. */
static int
l_command(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *usage = luaL_checkstring(L, 2);
    mf_lua_stage_t *ls = cur_load;
    lua_cmd_t *c;

    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (ls == NULL) {
        return luaL_error(L, "mf.command: only while the stage loads (top "
                             "level or M.init)");
    }
    if (strlen(name) >= sizeof(c->name)) {
        return luaL_error(L, "mf.command: the name '%s' is longer than %d",
                          name, (int)sizeof(c->name) - 1);
    }
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_CMDS_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, LUA_CMDS_KEY);
    }
    lua_getfield(L, -1, name);
    if (!lua_isnil(L, -1)) {
        return luaL_error(L, "mf.command: '%s' is declared twice", name);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
    if (!loading_cmd_state) {
        ls->ncommands += loading_state == 0;
        return 0;
    }
    c = mf_xcalloc(1, sizeof(*c));
    c->ls = ls;
    memcpy(c->name, name, strlen(name) + 1);
    ls->cmds = mf_xrealloc(ls->cmds, (ls->ncmds + 1) * sizeof(*ls->cmds));
    ls->cmds[ls->ncmds++] = c;
    if (mf_api.register_command(name, usage, lua_cmd_run, c) != MF_OK) {
        return luaL_error(L,
                          "mf.command: '%s' cannot be registered (a bad "
                          "name: letters, digits, '-', '.'; or taken)",
                          name);
    }
    return 0;
}

void
mf_lua_add_dep(lua_State *L, const char *path)
{
    lua_pushlightuserdata(L, &deps_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_istable(L, -1)) {
        lua_pushstring(L, path);
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    }
    lua_pop(L, 1);
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

static const char *const *
lua_rt_deps(const void *impl, size_t *n)
{
    const mf_lua_stage_t *ls = impl;

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
    cur_run.loading = 1;
    loading_worker = w;
    rc = lua_pcall(L, 0, 1, 0);
    loading_worker = -1;
    run_end(was);
    return rc == 0 ? MF_OK : MF_ERR;
}

/* M.init(conf), when the module has one, under init_timeout: it checks
 * the stage's config (raising an error, or returning nil, err, refuses
 * the load: the start or the reload fails with the message) and may
 * prepare per-worker state. */
static int
run_init(lua_State *L, mf_lua_stage_t *ls, int w, char *err, size_t errcap)
{
    lua_run_t was;
    int rc;

    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->mod_ref[w]);
    lua_getfield(L, -1, "init");
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 2);
        return MF_OK;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->conf_ref[w]);
    was = run_begin(&ls->mem[w], ls->init_timeout_ms, "init_timeout");
    cur_run.loading = 1;
    rc = lua_pcall(L, 1, 2, 0);
    run_end(was);
    if (rc != 0) {
        snprintf(err, errcap, "stage '%s': init: %s", ls->name,
                 lua_tostring(L, -1) ? lua_tostring(L, -1)
                                     : "not enough memory");
        return MF_ERR;
    }
    if (lua_isnil(L, -2) && !lua_isnil(L, -1)) {
        snprintf(err, errcap, "stage '%s': init: %s", ls->name,
                 lua_tostring(L, -1) ? lua_tostring(L, -1) : "refused");
        return MF_ERR;
    }
    lua_pop(L, 3);
    return MF_OK;
}

static lua_State *new_state_in(mf_lua_stage_t *ls, int w, lua_State *L,
                               json_t *config, const char *lua_path,
                               unsigned *hooks, char *err, size_t errcap);

static lua_State *
new_state(mf_lua_stage_t *ls, int w, json_t *config, const char *lua_path,
          unsigned *hooks, char *err, size_t errcap)
{
    lua_State *L = lua_newstate(limited_alloc, &ls->mem[w]);

    loading_state = w;
    L = new_state_in(ls, w, L, config, lua_path, hooks, err, errcap);
    loading_state = -1;
    return L;
}

static lua_State *
new_state_in(mf_lua_stage_t *ls, int w, lua_State *L, json_t *config,
             const char *lua_path, unsigned *hooks, char *err, size_t errcap)
{
    const char *path = ls->path, *name = ls->name;
    int *mod_ref = &ls->mod_ref[w], *conf_ref = &ls->conf_ref[w];
    char **version = &ls->version;
    int i, rc;

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
    set_package_path(L, path, lua_path);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    open_mf(L);
    lua_setfield(L, -2, "mf");
    lua_pop(L, 2);
    if (preload_embedded(L, err, errcap) != MF_OK ||
        require_embedded(L, err, errcap) != MF_OK) {
        lua_close(L);
        return NULL;
    }
    install_dep_recorder(L);
    cur_load = ls;
    rc = run_script(L, ls, w, path);
    cur_load = NULL;
    if (rc != MF_OK) {
        const char *why =
            lua_tostring(L, -1) ? lua_tostring(L, -1) : "not enough memory";

        /* a syntax or runtime error names the file and line itself; a
         * limit (init_timeout, memory) does not */
        snprintf(err, errcap, "%s%sstage '%s': %s",
                 strstr(why, path) ? "" : path, strstr(why, path) ? "" : ": ",
                 name, why);
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
    mf_lua_push_json(L, config, 0);
    *conf_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cur_load = ls;
    rc = run_init(L, ls, w, err, errcap);
    cur_load = NULL;
    if (rc != MF_OK) {
        lua_close(L);
        return NULL;
    }
    return L;
}

static void lua_rt_free(void *impl);

/* Loads the stage's script into nworkers fresh states, with its sandbox
 * and limits; NULL with err (file:line). *hooks gets a bit per stage
 * function the module defines. */
static mf_lua_stage_t *
lua_stage_load(const mf_stage_conf_t *sc, int nworkers, const char *lua_path,
               const char *config_dir, unsigned *hooks, char *err,
               size_t errcap)
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
    /* one more of each for the commands' state */
    ls->mem = mf_xcalloc((size_t)nworkers + 1, sizeof(lua_mem_t));
    for (i = 0; i <= nworkers; i++) {
        ls->mem[i].limit = sc->memory_limit;
    }
    ls->L = mf_xcalloc((size_t)nworkers, sizeof(lua_State *));
    ls->mod_ref = mf_xcalloc((size_t)nworkers + 1, sizeof(int));
    ls->conf_ref = mf_xcalloc((size_t)nworkers + 1, sizeof(int));
    pthread_mutex_init(&ls->cmd_lock, NULL);
    ls->nhandlers = mf_xcalloc((size_t)nworkers, sizeof(size_t));
    ls->path = mf_xstrdup(path);
    ls->name = mf_xstrdup(name);
    ls->config_dir = mf_xstrdup(config_dir ? config_dir : ".");
    for (i = 0; i < nworkers; i++) {
        ls->L[i] = new_state(ls, i, config, lua_path, hooks, err, errcap);
        if (ls->L[i] == NULL) {
            lua_rt_free(ls);
            return NULL;
        }
        mf_lua_push_endpoint_handlers(ls->L[i]);
        ls->nhandlers[i] = lua_objlen(ls->L[i], -1);
        lua_pop(ls->L[i], 1);
        if (ls->nhandlers[i] != ls->nhandlers[0]) {
            snprintf(err, errcap,
                     "%s: stage '%s': the script added %zu paths in one "
                     "worker's state and %zu in another; add them "
                     "unconditionally at the top level",
                     path, name, ls->nhandlers[0], ls->nhandlers[i]);
            lua_rt_free(ls);
            return NULL;
        }
    }
    if (ls->ncommands > 0) {
        unsigned cmd_hooks;

        loading_cmd_state = 1;
        ls->cmd_L =
            new_state(ls, nworkers, config, lua_path, &cmd_hooks, err, errcap);
        loading_cmd_state = 0;
        if (ls->cmd_L == NULL) {
            lua_rt_free(ls);
            return NULL;
        }
    }
    collect_deps(ls, ls->L[0]);
    return ls;
}

static void *
lua_rt_load(const mf_config_t *c, size_t i, int nworkers, unsigned *hooks,
            char *err, size_t errcap)
{
    return lua_stage_load(&c->stages[i], nworkers, c->lua_path, c->dir, hooks,
                          err, errcap);
}

/* Whether the stage was loaded with the sandbox and limits sc asks for. */
static int
lua_rt_same(const void *impl, const mf_stage_conf_t *sc)
{
    const mf_lua_stage_t *ls = impl;

    return ls->trusted == sc->trusted &&
           ls->time_limit_ms == sc->time_limit_ms &&
           ls->pause_limit_ms == sc->pause_limit_ms &&
           ls->init_timeout_ms == sc->init_timeout_ms &&
           (ls->nworkers == 0 || ls->mem[0].limit == sc->memory_limit);
}

static void
lua_rt_free(void *impl)
{
    mf_lua_stage_t *ls = impl;
    int i;

    if (ls == NULL) {
        return;
    }
    for (i = 0; i < ls->nworkers; i++) {
        if (ls->L[i] != NULL) {
            lua_close(ls->L[i]);
        }
    }
    if (ls->cmd_L != NULL) {
        lua_close(ls->cmd_L);
    }
    for (i = 0; i < (int)ls->ncmds; i++) {
        free(ls->cmds[i]);
    }
    free(ls->cmds);
    pthread_mutex_destroy(&ls->cmd_lock);
    for (i = 0; i < (int)ls->ndeps; i++) {
        free(ls->deps[i]);
    }
    free(ls->deps);
    free(ls->L);
    free(ls->mem);
    free(ls->mod_ref);
    free(ls->conf_ref);
    free(ls->nhandlers);
    free(ls->path);
    free(ls->config_dir);
    free(ls->name);
    free(ls->version);
    free(ls);
}

static const char *
lua_rt_version(const void *impl)
{
    const mf_lua_stage_t *ls = impl;

    return ls->version ? ls->version : "";
}

/* Calls */

/* Answers from `return status, body`. */
static mf_action_t
respond_from(lua_State *co, mf_req_t *r, int nres, const char *name)
{
    int base = lua_gettop(co) - nres + 1;
    const char *ctype = NULL;
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
    if (!mf_api_allowed(r, MF_CALL_RESPOND)) {
        char why[256];

        mf_log_error("stage '%s': returned status %d: %s", name, status,
                     mf_api_refusal(r, MF_CALL_RESPOND, why, sizeof(why)));
        return MF_FAIL;
    }
    if (nres >= 3 && lua_istable(co, base + 2)) {
        /* headers: {name = value, ...}; content-type picks the type */
        lua_pushnil(co);
        while (lua_next(co, base + 2) != 0) {
            size_t kl, vl;
            const char *k = lua_tolstring(co, -2, &kl);
            const char *v = lua_type(co, -1) == LUA_TSTRING ||
                                    lua_type(co, -1) == LUA_TNUMBER
                                ? lua_tolstring(co, -1, &vl)
                                : NULL;

            if (lua_type(co, -2) != LUA_TSTRING || v == NULL) {
                mf_log_error("stage '%s': the headers it returned must map "
                             "names to strings",
                             name);
                return MF_FAIL;
            }
            if (kl == 12 && strncasecmp(k, "content-type", 12) == 0) {
                ctype = mf_pool_strndup(r->pool, v, vl);
            } else if (mf_api.set_header(r, MF_RESPONSE_HEADERS,
                                         (mf_str_t){k, kl},
                                         (mf_str_t){v, vl}) != MF_OK) {
                mf_log_error("stage '%s': header '%s' refused", name, k);
                return MF_FAIL;
            }
            lua_pop(co, 1);
        }
    }
    if (ctype != NULL && nres >= 2 && lua_isstring(co, base + 1)) {
        size_t len;
        const char *s = lua_tolstring(co, base + 1, &len);

        mf_api.respond(r, status, ctype, (mf_str_t){s, len});
    } else if (nres >= 2 && lua_istable(co, base + 1)) {
        json_t *j = mf_lua_to_json(co, base + 1, 0);
        char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

        const char *why = j ? "encoding failed" : mf_lua_to_json_why();

        json_decref(j);
        if (text == NULL) {
            mf_log_error("stage '%s': the body it returned cannot be encoded "
                         "as JSON: %s",
                         name, why);
            return MF_FAIL;
        }
        mf_api.respond(r, status, "application/json", mf_str_from(text));
        free(text);
    } else if (nres >= 2 && lua_isstring(co, base + 1)) {
        size_t len;
        const char *s = lua_tolstring(co, base + 1, &len);

        if (status >= 400 && (len == 0 || (s[0] != '{' && s[0] != '['))) {
            mf_api.respond_error(r, status,
                                 status == 401   ? "authentication_error"
                                 : status == 429 ? "rate_limit_error"
                                                 : "invalid_request_error",
                                 s);
        } else {
            mf_api.respond(r, status,
                           len && (s[0] == '{' || s[0] == '[')
                               ? "application/json"
                               : "text/plain; charset=utf-8",
                           (mf_str_t){s, len});
        }
    } else {
        mf_api.respond(r, status, "application/json", MF_STR(""));
    }
    return MF_RESPOND;
}

/* The pause deadline: a stage call waiting longer than pause_limit on
 * async calls fails the request (504) and its coroutine is dropped; the
 * calls it waited on are cancelled with the request. */
static void
pause_disarm(mf_lua_slot_t *slot)
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
    mf_lua_slot_t *slot = (mf_lua_slot_t *)a; /* async is the first member */

    evtimer_del(slot->pause_ev);
    slot->pause_armed = 0;
}

static void
pause_expired(evutil_socket_t fd, short what, void *arg)
{
    mf_lua_slot_t *slot = arg;
    mf_req_t *r = slot->r;
    double limit = lua_of(slot->st)->pause_limit_ms;

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
        mf_api.resume(r, MF_FAIL);
        return;
    }
    mf_req_respond_error(r, 504, "timeout_error", "stage_timeout",
                         "a gateway stage waited too long on a service");
    mf_api.resume(r, MF_RESPOND);
}

static void
pause_arm(mf_lua_slot_t *slot, mf_req_t *r)
{
    double left =
        slot->call_started + lua_of(slot->st)->pause_limit_ms - mf_now_ms();
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
finish_coroutine(mf_lua_slot_t *slot, mf_req_t *r, int status)
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
                     "(a bare coroutine.yield()); only mf.sleep, mf.http, "
                     "mf.redis, mf.llm and mf.embed may pause a stage",
                     slot->st->name, stage_fn[slot->stage]);
        mf_stage_set_error(slot->st, "%s: yielded outside an mf async call",
                           stage_fn[slot->stage]);
        act = MF_FAIL;
    } else if (status == LUA_ERRMEM) {
        mf_log_error("stage '%s' %s: went over its memory_limit of %zu "
                     "bytes",
                     slot->st->name, stage_fn[slot->stage],
                     lua_of(slot->st)->mem[r->worker->id].limit);
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
        if (act == MF_CONTINUE && r->head_sent &&
            (slot->stage == MF_STAGE_REQUEST ||
             slot->stage == MF_STAGE_ROUTE)) {
            act = MF_RESPOND; /* it answered (mf.resp.completion, emit) */
        }
    }
    luaL_unref(L, LUA_REGISTRYINDEX, slot->co_ref);
    slot->co_ref = LUA_NOREF;
    if (status != 0 && status != LUA_YIELD) {
        lua_gc(L, LUA_GCCOLLECT, 0); /* what the failed call held */
    }
    return act;
}

static void lua_rt_done(mf_pstage_t *st, mf_req_t *r, void **ctx);

/* Runs M.<stage>(conf, ctx) for r on its worker's state, in a fresh
 * coroutine; for MF_STAGE_ENDPOINT, the endpoint handler `handle`. */
static mf_action_t
lua_run(mf_pstage_t *st, mf_stage_t stage, mf_req_t *r, void **ctx,
        mf_str_t data, int last, int handle)
{
    mf_lua_stage_t *ls = lua_of(st);
    int w = r->worker->id;
    lua_State *L = ls->L[w], *co;
    mf_lua_slot_t *slot = *ctx;
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
    if (stage == MF_STAGE_ENDPOINT) {
        mf_lua_push_endpoint_handlers(co);
        lua_rawgeti(co, -1, handle);
    } else {
        lua_rawgeti(co, LUA_REGISTRYINDEX, ls->mod_ref[w]);
        lua_getfield(co, -1, stage_fn[stage]);
    }
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
        lua_rt_done(st, r, ctx);
    } else if (act == MF_PAUSE && !mf_api_allowed(r, MF_CALL_PAUSE)) {
        mf_log_error("stage '%s': %s may not yield", st->name, stage_fn[stage]);
        act = MF_FAIL;
    }
    return act;
}

static mf_action_t
lua_rt_call(mf_pstage_t *st, mf_stage_t stage, mf_req_t *r, void **ctx,
            mf_str_t data, int last)
{
    return lua_run(st, stage, r, ctx, data, last, 0);
}

static mf_action_t
lua_rt_serve(mf_pstage_t *st, const mf_epath_t *ep, mf_req_t *r, void **ctx)
{
    return lua_run(st, MF_STAGE_ENDPOINT, r, ctx, MF_STR_NULL, 0, ep->handle);
}

/* Frees the per-request ctx table. */
static void
lua_rt_done(mf_pstage_t *st, mf_req_t *r, void **ctx)
{
    mf_lua_slot_t *slot = *ctx;

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

static const mf_stage_runtime_t lua_runtime = {
    .name = "lua",
    .load = lua_rt_load,
    .call = lua_rt_call,
    .done = lua_rt_done,
    .version = lua_rt_version,
    .deps = lua_rt_deps,
    .same = lua_rt_same,
    .free = lua_rt_free,
    .serve = lua_rt_serve,
};

void
mf_lua_stage_init(void)
{
    mf_stage_runtime_register(&lua_runtime);
}
