/*
 * What the files of the mf binding share (host/lua only): the request of
 * the running stage call, argument and result helpers, JSON <-> Lua, and
 * the async-call protocol (a call checks the stage may pause, starts a
 * host service with its slot, yields; the completion pushes the results
 * and resumes the slot). Each lua_<area>.c adds one table or function to
 * the mf module by one mf_lua_inject_<area>_api call. A binding calls the
 * host only through mf_api (the plugin ABI) and the stage permissions.
 */
#ifndef MF_LUA_COMMON_H
#define MF_LUA_COMMON_H

#include <lauxlib.h>
#include <lua.h>

#include "api/api.h"

/* The per-request slot of a Lua stage (lua_stage.c). */
typedef struct mf_lua_slot_s mf_lua_slot_t;

/* The request of the running stage call; raises a Lua error outside one. */
mf_req_t *mf_lua_req(lua_State *L);
/* Argument i as a borrowed string view (raises when not a string). */
mf_str_t mf_lua_arg_str(lua_State *L, int i);
/* Pushes s ("" for a NULL view); returns 1. */
int mf_lua_push_str(lua_State *L, mf_str_t s);
/* Pushes nil, msg; returns 2. */
int mf_lua_fail(lua_State *L, const char *msg);
/* The error of a call given a model name with a control character. */
#define MF_LUA_CONTROL_MODEL(fn)                                               \
    fn ": the model name holds a control character (such as a line "           \
       "break); it is refused as a client's would be"
/* Pushes nil, "fn: why" for a call the stage permissions refuse in the
 * running stage; returns 2. */
int mf_lua_refuse(lua_State *L, const char *fn, mf_call_t call);
/* Adds t[k] = v to the table on top. */
void mf_lua_set_num(lua_State *L, const char *k, double v);
/* Pushes {prompt_tokens, ..., estimated}. */
void mf_lua_push_usage(lua_State *L, const mf_usage_t *u);
/* Sets mf[name] to a table of fns (mf on top); leaves the stack as is. */
void mf_lua_register(lua_State *L, const char *name, const luaL_Reg *fns);
/* Which header list the optional argument idx names ("upstream",
 * "upstream_response"), def when absent. */
mf_headers_t mf_lua_which_headers(lua_State *L, int idx, mf_headers_t def);

/* JSON <-> Lua (lua_json.c). A JSON array becomes a table marked as one,
 * null becomes mf.json.null; depth is the nesting so far (callers pass
 * 0). to_json returns NULL with the reason in mf_lua_to_json_why(). */
void mf_lua_push_json(lua_State *L, json_t *j, int depth);
json_t *mf_lua_to_json(lua_State *L, int idx, int depth);
const char *mf_lua_to_json_why(void);

/* Async calls: the slot of the running stage call when it may pause
 * here (raises a Lua error naming `what` otherwise); the coroutine it
 * runs; marking it paused in a host call and yielding (return the
 * result from the lua_CFunction); resuming it with nargs values pushed on
 * its coroutine (from the host service's completion). */
mf_lua_slot_t *mf_lua_yieldable(lua_State *L, const char *what);
lua_State *mf_lua_slot_thread(mf_lua_slot_t *slot);
int mf_lua_yield(lua_State *L, mf_lua_slot_t *slot);
void mf_lua_slot_resume(mf_lua_slot_t *slot, mf_req_t *r, lua_State *co,
                        int nargs);

/* While a stage loads (its top-level code or M.init) on this thread:
 * the config file's directory, and whether the stage is trusted and its
 * script's path; NULL outside a load. mf_lua_add_dep adds a file the
 * load read to those watched (a change reloads the stage). */
const char *mf_lua_loading(lua_State *L, int *trusted, const char **script);
void mf_lua_add_dep(lua_State *L, const char *path);

/* mf.route.set_model, also reached as mf.req.set_model. */
int mf_lua_route_set_model(lua_State *L);

/* One per API area: adds it to the mf table on top of the stack. */
void mf_lua_inject_req_api(lua_State *L);
void mf_lua_inject_route_api(lua_State *L);
void mf_lua_inject_resp_api(lua_State *L);
void mf_lua_inject_shared_api(lua_State *L);
void mf_lua_inject_log_api(lua_State *L);
void mf_lua_inject_json_api(lua_State *L);
void mf_lua_inject_time_api(lua_State *L);
void mf_lua_inject_redis_api(lua_State *L);
void mf_lua_inject_http_api(lua_State *L);
void mf_lua_inject_regex_api(lua_State *L);
void mf_lua_inject_llm_api(lua_State *L);
void mf_lua_inject_files_api(lua_State *L);
void mf_lua_inject_body_api(lua_State *L); /* after the req API */
void mf_lua_inject_endpoint_api(lua_State *L);
void mf_lua_inject_models_api(lua_State *L);
void mf_lua_inject_metrics_api(lua_State *L);

/* The worker whose state is running the script's top level while the
 * stage loads, -1 otherwise (lua_stage.c). */
int mf_lua_loading_worker(void);
/* Pushes the state's table of endpoint handlers, in the order added
 * (lua_endpoint.c). */
void mf_lua_push_endpoint_handlers(lua_State *L);

/* The embedded helper library (the .lua files of lua/mf, generated at build
 * time): module name, source, length; ends with a NULL name. */
typedef struct {
    const char *name;
    const char *src;
    size_t len;
} mf_lua_embedded_t;

extern const mf_lua_embedded_t mf_lua_embedded[];

#endif
