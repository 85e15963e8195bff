/*
 * mf.metrics: counters, gauges and histograms on the host's metrics
 * registry (the host API's metric_* calls).
 *
 *   local c = mf.metrics.counter("x_total", "help", {"model"})
 *   c:add({"gpt-4o"}, 1)          -- c:inc({"gpt-4o"}) adds 1
 *   local g = mf.metrics.gauge("x", "help", {"model"}); g:set({...}, v)
 *   local h = mf.metrics.histogram("x_seconds", "help", {"model"},
 *                                  {0.1, 1, 10}); h:observe({...}, v)
 *   mf.metrics.render("prometheus" | "openmetrics") -- text, in a handler
 *
 * A declaration made again (each worker's state runs the script) finds
 * the same metric. Label values are given in the order declared.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lua/lua_common.h"

#define METRIC_MT "mf.metric"

typedef struct {
    mf_metric_t *m;
    mf_metric_type_t type;
} lmetric_t;

/* Label values from the array at idx (nil: none) into v. */
static size_t
label_values(lua_State *L, int idx, mf_str_t *v)
{
    size_t n = 0, len;
    const char *s;

    if (lua_isnoneornil(L, idx)) {
        return 0;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    for (;;) {
        lua_rawgeti(L, idx, (int)n + 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            return n;
        }
        if (n == MF_METRIC_MAX_LABELS) {
            luaL_error(L, "more than %d label values", MF_METRIC_MAX_LABELS);
        }
        s = lua_tolstring(L, -1, &len);
        if (s == NULL) {
            luaL_error(L, "label value %d is not a string", (int)n + 1);
        }
        v[n++] = (mf_str_t){s, len};
        lua_pop(L, 1); /* the value stays referenced by the table */
    }
}

static int
declare(lua_State *L, mf_metric_type_t type)
{
    const char *labels[MF_METRIC_MAX_LABELS + 1] = {0};
    double buckets[MF_METRIC_MAX_BUCKETS];
    mf_metric_def_t d = {.size = sizeof(d), .type = type};
    int opts = type == MF_METRIC_HISTOGRAM ? 5 : 4;
    lmetric_t *lm;
    size_t i;

    d.name = luaL_checkstring(L, 1);
    d.help = luaL_optstring(L, 2, "");
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        for (i = 0; i <= MF_METRIC_MAX_LABELS; i++) {
            lua_rawgeti(L, 3, (int)i + 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                break;
            }
            if (i == MF_METRIC_MAX_LABELS || !lua_isstring(L, -1)) {
                return luaL_error(L,
                                  "metric '%s': labels must be up to %d "
                                  "names",
                                  d.name, MF_METRIC_MAX_LABELS);
            }
            labels[i] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
        d.labels = labels;
    }
    if (type == MF_METRIC_HISTOGRAM) {
        luaL_checktype(L, 4, LUA_TTABLE);
        for (i = 0; i < MF_METRIC_MAX_BUCKETS; i++) {
            lua_rawgeti(L, 4, (int)i + 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                break;
            }
            buckets[i] = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        d.buckets = buckets;
        d.nbuckets = i;
    }
    if (lua_istable(L, opts)) {
        lua_getfield(L, opts, "max_series");
        d.max_series = (size_t)luaL_optnumber(L, -1, 0);
        lua_pop(L, 1);
    }
    lm = lua_newuserdata(L, sizeof(*lm));
    lm->type = type;
    lm->m = mf_api.metric_declare(&d);
    if (lm->m == NULL) {
        return luaL_error(L,
                          "metric '%s': invalid, or declared already "
                          "with another type, labels or buckets (see "
                          "the log)",
                          d.name);
    }
    luaL_getmetatable(L, METRIC_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int
l_counter(lua_State *L)
{
    return declare(L, MF_METRIC_COUNTER);
}

static int
l_gauge(lua_State *L)
{
    return declare(L, MF_METRIC_GAUGE);
}

static int
l_histogram(lua_State *L)
{
    return declare(L, MF_METRIC_HISTOGRAM);
}

static int
done(lua_State *L, int rc, const char *what)
{
    if (rc != MF_OK) {
        return mf_lua_fail(L, what);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int
l_metric_add(lua_State *L)
{
    lmetric_t *lm = luaL_checkudata(L, 1, METRIC_MT);
    mf_str_t v[MF_METRIC_MAX_LABELS];
    size_t n = label_values(L, 2, v);

    return done(L, mf_api.metric_add(lm->m, v, n, luaL_optnumber(L, 3, 1)),
                "metric add refused: wrong type, label count, a negative "
                "counter step, or its series cap");
}

static int
l_metric_set(lua_State *L)
{
    lmetric_t *lm = luaL_checkudata(L, 1, METRIC_MT);
    mf_str_t v[MF_METRIC_MAX_LABELS];
    size_t n = label_values(L, 2, v);

    return done(L, mf_api.metric_set(lm->m, v, n, luaL_checknumber(L, 3)),
                "metric set refused: not a gauge, wrong label count, or its "
                "series cap");
}

static int
l_metric_observe(lua_State *L)
{
    lmetric_t *lm = luaL_checkudata(L, 1, METRIC_MT);
    mf_str_t v[MF_METRIC_MAX_LABELS], trace = MF_STR_NULL;
    size_t n = label_values(L, 2, v);

    if (!lua_isnoneornil(L, 4)) {
        trace = mf_lua_arg_str(L, 4);
    }
    return done(
        L, mf_api.metric_observe(lm->m, v, n, luaL_checknumber(L, 3), trace),
        "metric observe refused: not a histogram, wrong label count, "
        "or its series cap");
}

static int
l_render(lua_State *L)
{
    const char *f = luaL_optstring(L, 1, "prometheus");
    mf_str_t out;
    int format;

    if (strcmp(f, "prometheus") == 0) {
        format = MF_METRICS_PROMETHEUS;
    } else if (strcmp(f, "openmetrics") == 0) {
        format = MF_METRICS_OPENMETRICS;
    } else {
        return luaL_error(L,
                          "mf.metrics.render: format '%s' is not "
                          "prometheus or openmetrics",
                          f);
    }
    if (mf_api.metrics_render(mf_lua_req(L), format, &out) != MF_OK) {
        return mf_lua_refuse(L, "mf.metrics.render", MF_CALL_READ);
    }
    return mf_lua_push_str(L, out);
}

void
mf_lua_inject_metrics_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"counter", l_counter},
                                   {"gauge", l_gauge},
                                   {"histogram", l_histogram},
                                   {"render", l_render},
                                   {NULL, NULL}};
    static const luaL_Reg methods[] = {{"add", l_metric_add},
                                       {"inc", l_metric_add},
                                       {"set", l_metric_set},
                                       {"observe", l_metric_observe},
                                       {NULL, NULL}};
    const luaL_Reg *m;

    if (luaL_newmetatable(L, METRIC_MT)) {
        lua_newtable(L);
        for (m = methods; m->name != NULL; m++) {
            lua_pushcfunction(L, m->func);
            lua_setfield(L, -2, m->name);
        }
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    mf_lua_register(L, "metrics", fns);
}
