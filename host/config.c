/*
 * Configuration loading: YAML node tree -> validated mf_config_t. Every
 * error names file, line and key and says what to do; all errors of a file
 * are reported at once.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <strings.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "yamltree.h"

typedef struct {
    const char *file;
    mf_buf_t errors;
    int nerrors;
} check_t;

static void cfg_error(check_t *ck, const mf_node_t *n, const char *key,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
cfg_error(check_t *ck, const mf_node_t *n, const char *key, const char *fmt,
          ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mf_buf_printf(&ck->errors, "%s:%d: %s: %s\n", ck->file, n ? n->line : 1,
                  key, msg);
    ck->nerrors++;
}

int
mf_config_parse_size(const char *s, size_t *out)
{
    char *end;
    double v;
    double mult = 1;

    if (s == NULL || *s == '\0') {
        return MF_ERR;
    }
    v = strtod(s, &end);
    if (end == s || v < 0) {
        return MF_ERR;
    }
    while (*end == ' ') {
        end++;
    }
    if (*end == '\0' || strcasecmp(end, "b") == 0) {
        mult = 1;
    } else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0 ||
               strcasecmp(end, "kib") == 0) {
        mult = 1024;
    } else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0 ||
               strcasecmp(end, "mib") == 0) {
        mult = 1024.0 * 1024;
    } else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0 ||
               strcasecmp(end, "gib") == 0) {
        mult = 1024.0 * 1024 * 1024;
    } else {
        return MF_ERR;
    }
    v *= mult;
    if (v > (double)SIZE_MAX / 2) {
        return MF_ERR;
    }
    *out = (size_t)v;
    return MF_OK;
}

int
mf_config_parse_duration(const char *s, double *ms)
{
    char *end;
    double v;

    if (s == NULL || *s == '\0') {
        return MF_ERR;
    }
    v = strtod(s, &end);
    if (end == s || v < 0) {
        return MF_ERR;
    }
    if (*end == '\0' || strcmp(end, "ms") == 0) {
        *ms = v;
    } else if (strcmp(end, "s") == 0) {
        *ms = v * 1000;
    } else if (strcmp(end, "m") == 0) {
        *ms = v * 60000;
    } else if (strcmp(end, "h") == 0) {
        *ms = v * 3600000;
    } else {
        return MF_ERR;
    }
    return MF_OK;
}

int
mf_config_parse_listen(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    const char *ps = colon ? colon + 1 : s;
    char *end;
    long p;

    p = strtol(ps, &end, 10);
    if (*ps == '\0' || *end != '\0' || p < 0 || p > 65535) {
        return MF_ERR;
    }
    *port = (int)p;
    if (colon == NULL || colon == s) {
        *host = mf_xstrdup("0.0.0.0");
    } else if (s[0] == '[' && colon[-1] == ']') {
        *host = mf_xstrndup(s + 1, (size_t)(colon - s - 2));
    } else {
        *host = mf_xstrndup(s, (size_t)(colon - s));
    }
    return MF_OK;
}

static const mf_node_t *
want_scalar(check_t *ck, const mf_node_t *n, const char *key)
{
    if (n != NULL && n->type != MF_NODE_SCALAR) {
        cfg_error(ck, n, key, "must be a single value");
        return NULL;
    }
    return n;
}

static void
get_string(check_t *ck, const mf_node_t *map, const char *k, const char *path,
           char **out)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);

    if (n != NULL) {
        free(*out);
        *out = mf_xstrdup(n->value);
    }
}

static void
get_size(check_t *ck, const mf_node_t *map, const char *k, const char *path,
         size_t *out)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);

    if (n != NULL && mf_config_parse_size(n->value, out) != MF_OK) {
        cfg_error(ck, n, path,
                  "'%s' is not a size; write bytes or a number "
                  "with k, MiB or GiB (16MiB)",
                  n->value);
    }
}

static void
get_duration(check_t *ck, const mf_node_t *map, const char *k, const char *path,
             double *out)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);

    if (n != NULL && mf_config_parse_duration(n->value, out) != MF_OK) {
        cfg_error(ck, n, path,
                  "'%s' is not a duration; write 250ms, 30s, "
                  "2m or milliseconds",
                  n->value);
    }
}

static int
get_bool(check_t *ck, const mf_node_t *map, const char *k, const char *path,
         int def)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);

    if (n == NULL) {
        return def;
    }
    if (strcmp(n->value, "true") == 0 || strcmp(n->value, "yes") == 0 ||
        strcmp(n->value, "on") == 0) {
        return 1;
    }
    if (strcmp(n->value, "false") == 0 || strcmp(n->value, "no") == 0 ||
        strcmp(n->value, "off") == 0) {
        return 0;
    }
    cfg_error(ck, n, path, "'%s' is not true or false", n->value);
    return def;
}

/* An integer in [lo, hi]; def when absent. */
static int
get_int(check_t *ck, const mf_node_t *map, const char *k, const char *path,
        int def, int lo, int hi)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);
    char *end;
    long v;

    if (n == NULL) {
        return def;
    }
    v = strtol(n->value, &end, 10);
    if (*end != '\0' || end == n->value || v < lo || v > hi) {
        cfg_error(ck, n, path, "%s '%s' must be a whole number from %d to %d",
                  k, n->value, lo, hi);
        return def;
    }
    return (int)v;
}

static void
check_keys(check_t *ck, const mf_node_t *map, const char *path,
           const char *const *allowed)
{
    const mf_node_t *c;

    for (c = map->child; c != NULL; c = c->next) {
        size_t i;
        int ok = 0;

        for (i = 0; allowed[i] != NULL; i++) {
            if (strcmp(c->key, allowed[i]) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            char msg[512];
            size_t off = 0;

            for (i = 0; allowed[i] != NULL && off < sizeof(msg); i++) {
                off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%s",
                                        i ? ", " : "", allowed[i]);
            }
            cfg_error(ck, c, path[0] ? path : c->key,
                      "unknown key '%s'; known keys: %s", c->key, msg);
        }
    }
}

static char *
resolve_path(const mf_config_t *c, const char *p)
{
    char buf[PATH_MAX];

    if (p[0] == '/') {
        return mf_xstrdup(p);
    }
    snprintf(buf, sizeof(buf), "%s/%s", c->dir, p);
    return mf_xstrdup(buf);
}

static char **
string_list(check_t *ck, const mf_node_t *n, const char *path, size_t *count)
{
    const mf_node_t *c;
    char **out;
    size_t i = 0;

    *count = 0;
    if (n == NULL) {
        return NULL;
    }
    if (n->type == MF_NODE_SCALAR) {
        out = mf_xcalloc(1, sizeof(char *));
        out[0] = mf_xstrdup(n->value);
        *count = 1;
        return out;
    }
    if (n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, path, "must be a list");
        return NULL;
    }
    for (c = n->child; c != NULL; c = c->next) {
        i++;
    }
    out = mf_xcalloc(i ? i : 1, sizeof(char *));
    i = 0;
    for (c = n->child; c != NULL; c = c->next) {
        if (c->type != MF_NODE_SCALAR) {
            cfg_error(ck, c, path, "items must be single values");
            continue;
        }
        out[i++] = mf_xstrdup(c->value);
    }
    *count = i;
    return out;
}

static void
load_provider(check_t *ck, mf_config_t *c, const mf_node_t *n, size_t idx)
{
    static const char *const allowed[] = {
        "name",        "type",      "base_url",     "keys",
        "models",      "model_map", "timeout",      "connect_timeout",
        "tls_verify",  "plugin",    "options",      "api_version",
        "deployments", "region",    "project",      "location",
        "credentials", "headers",   "key_strategy", "key_failures",
        "probe",       NULL};
    mf_provider_conf_t *p = &c->providers[idx];
    const mf_node_t *k, *m;
    char path[128];
    size_t i, empty = 0;

    snprintf(path, sizeof(path), "providers[%zu]", idx);
    p->line = n->line;
    p->tls_verify = 1;
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path, "must be a map with name, type, base_url");
        return;
    }
    check_keys(ck, n, path, allowed);
    get_string(ck, n, "name", path, &p->name);
    get_string(ck, n, "type", path, &p->type);
    get_string(ck, n, "base_url", path, &p->base_url);
    if (p->name == NULL || p->name[0] == '\0') {
        cfg_error(ck, n, path, "needs a name");
        free(p->name);
        p->name = mf_xstrdup("");
    }
    for (i = 0; i < idx; i++) {
        if (c->providers[i].name &&
            strcmp(c->providers[i].name, p->name) == 0) {
            cfg_error(ck, n, path,
                      "name '%s' is already used by "
                      "providers[%zu]",
                      p->name, i);
        }
    }
    if (p->type == NULL) {
        p->type = mf_xstrdup("openai");
    }
    if (p->base_url == NULL || p->base_url[0] == '\0') {
        cfg_error(ck, n, path,
                  "needs a base_url (http://host:port/v1 or "
                  "https://...)");
        free(p->base_url);
        p->base_url = mf_xstrdup("");
    } else if (strncmp(p->base_url, "http://", 7) != 0 &&
               strncmp(p->base_url, "https://", 8) != 0) {
        cfg_error(ck, mf_node_get(n, "base_url"), path,
                  "base_url '%s' must start with http:// or https://",
                  p->base_url);
    }
    while (p->base_url[0] && p->base_url[strlen(p->base_url) - 1] == '/') {
        p->base_url[strlen(p->base_url) - 1] = '\0';
    }
    {
        char *plugin = NULL;

        get_string(ck, n, "plugin", path, &plugin);
        if (plugin != NULL) {
            p->plugin = resolve_path(c, plugin);
            free(plugin);
        }
    }
    k = mf_node_get(n, "keys");
    p->has_keys = k != NULL;
    p->keys = string_list(ck, k, path, &p->nkeys);
    for (i = 0; i < p->nkeys; i++) {
        if (p->keys[i][0] == '\0') {
            empty++;
        }
    }
    if (p->has_keys && empty == p->nkeys) {
        p->disabled = 1;
    }
    p->models = string_list(ck, mf_node_get(n, "models"), path, &p->nmodels);
    m = mf_node_get(n, "model_map");
    if (m != NULL) {
        const mf_node_t *e;

        if (m->type != MF_NODE_MAP) {
            cfg_error(ck, m, path,
                      "model_map must map a model name to the "
                      "upstream name");
        } else {
            for (e = m->child; e != NULL; e = e->next) {
                p->nmap++;
            }
            p->model_map = mf_xcalloc(p->nmap, sizeof(*p->model_map));
            i = 0;
            for (e = m->child; e != NULL; e = e->next) {
                if (e->type != MF_NODE_SCALAR) {
                    cfg_error(ck, e, path, "model_map.%s must be a name",
                              e->key);
                    continue;
                }
                p->model_map[i].from = mf_xstrdup(e->key);
                p->model_map[i].to = mf_xstrdup(e->value);
                i++;
            }
            p->nmap = i;
        }
    }
    get_duration(ck, n, "timeout", path, &p->timeout_ms);
    get_duration(ck, n, "connect_timeout", path, &p->connect_timeout_ms);
    p->tls_verify = get_bool(ck, n, "tls_verify", path, 1);
    {
        char *strategy = NULL;

        get_string(ck, n, "key_strategy", path, &strategy);
        if (strategy != NULL && strcmp(strategy, "least_used") == 0) {
            p->key_strategy = MF_KEYS_LEAST_USED;
        } else if (strategy != NULL && strcmp(strategy, "round_robin") != 0) {
            cfg_error(ck, mf_node_get(n, "key_strategy"), path,
                      "key_strategy '%s' must be round_robin or least_used",
                      strategy);
        }
        free(strategy);
    }
    p->key_failures = get_int(ck, n, "key_failures", path, 3, 1, 1000);
    m = mf_node_get(n, "probe");
    p->probe_interval_ms = 10000;
    if (m != NULL && m->type != MF_NODE_MAP) {
        cfg_error(ck, m, path, "probe must be a map (path, interval, header)");
    } else if (m != NULL) {
        static const char *const pk[] = {"path", "interval", "header", NULL};

        check_keys(ck, m, path, pk);
        get_string(ck, m, "path", path, &p->probe_path);
        get_duration(ck, m, "interval", path, &p->probe_interval_ms);
        get_string(ck, m, "header", path, &p->probe_header);
    }
    if (p->probe_path == NULL) {
        p->probe_path = mf_xstrdup("/models");
    }
    if (p->probe_header == NULL) {
        p->probe_header = mf_xstrdup("authorization");
    }
    p->json = mf_node_to_json(n);
}

static const mf_provider_conf_t *
find_provider(const mf_config_t *c, const char *name)
{
    size_t i;

    for (i = 0; i < c->nproviders; i++) {
        if (c->providers[i].name && strcmp(c->providers[i].name, name) == 0) {
            return &c->providers[i];
        }
    }
    return NULL;
}

/* A list of {provider, model, weight} maps. */
static mf_target_conf_t *
load_targets(check_t *ck, const mf_config_t *c, const mf_node_t *n,
             const char *path, size_t *count)
{
    static const char *const allowed[] = {"provider", "model", "weight", NULL};
    mf_target_conf_t *out;
    const mf_node_t *e;
    size_t i = 0;

    *count = 0;
    if (n == NULL) {
        return NULL;
    }
    if (n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, path, "must be a list of {provider, model, weight}");
        return NULL;
    }
    for (e = n->child; e != NULL; e = e->next) {
        (*count)++;
    }
    out = mf_xcalloc(*count ? *count : 1, sizeof(*out));
    for (e = n->child; e != NULL; e = e->next, i++) {
        mf_target_conf_t *t = &out[i];
        char tp[160];

        snprintf(tp, sizeof(tp), "%s[%zu]", path, i);
        t->line = e->line;
        t->weight = 1;
        if (e->type != MF_NODE_MAP) {
            cfg_error(ck, e, tp, "must be a map {provider, model, weight}");
            continue;
        }
        check_keys(ck, e, tp, allowed);
        get_string(ck, e, "provider", tp, &t->provider);
        get_string(ck, e, "model", tp, &t->model);
        t->weight = (unsigned)get_int(ck, e, "weight", tp, 1, 0, 1000000);
        if (t->provider == NULL) {
            cfg_error(ck, e, tp, "needs a provider");
        } else if (find_provider(c, t->provider) == NULL) {
            cfg_error(ck, mf_node_get(e, "provider"), tp,
                      "no provider named '%s'; see providers:", t->provider);
        }
    }
    return out;
}

static unsigned
retry_bits(check_t *ck, const mf_node_t *n, const char *path)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"5xx", MF_RETRY_5XX},
                 {"429", MF_RETRY_429},
                 {"timeout", MF_RETRY_TIMEOUT},
                 {"connect", MF_RETRY_CONNECT},
                 {"context_length", MF_RETRY_CONTEXT},
                 {"content_filter", MF_RETRY_FILTER},
                 {"auth", MF_RETRY_AUTH},
                 {"4xx", MF_RETRY_4XX}};
    size_t count, i, j;
    char **list = string_list(ck, n, path, &count);
    unsigned bits = 0;

    for (i = 0; i < count; i++) {
        for (j = 0; j < sizeof(names) / sizeof(names[0]); j++) {
            if (strcmp(list[i], names[j].name) == 0) {
                bits |= names[j].bit;
                break;
            }
        }
        if (j == sizeof(names) / sizeof(names[0])) {
            cfg_error(ck, n, path,
                      "'%s' is not a failure kind; use 5xx, 429, timeout, "
                      "connect, context_length, content_filter, auth, 4xx",
                      list[i]);
        }
        free(list[i]);
    }
    free(list);
    return bits;
}

static void
load_route(check_t *ck, mf_config_t *c, const mf_node_t *n, size_t idx)
{
    static const char *const allowed[] = {
        "model",        "strategy", "targets", "fallback",
        "canary",       "retry_on", "retries", "attempt_timeout",
        "ttft_timeout", "breaker",  NULL};
    static const char *const strategies[] = {
        "weighted", "round_robin", "least_inflight", "lowest_latency"};
    mf_route_conf_t *rt = &c->routes[idx];
    const mf_node_t *m;
    char path[128], tp[160], *strategy = NULL;
    size_t i;

    snprintf(path, sizeof(path), "routes[%zu]", idx);
    rt->line = n->line;
    rt->retry_on = MF_RETRY_5XX | MF_RETRY_429 | MF_RETRY_TIMEOUT |
                   MF_RETRY_CONNECT | MF_RETRY_AUTH;
    rt->breaker_failures = 5;
    rt->breaker_cooldown_ms = 10000;
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path, "must be a map with model and targets");
        rt->model = mf_xstrdup("");
        return;
    }
    check_keys(ck, n, path, allowed);
    get_string(ck, n, "model", path, &rt->model);
    if (rt->model == NULL) {
        cfg_error(ck, n, path, "needs the model name clients ask for");
        rt->model = mf_xstrdup("");
    }
    get_string(ck, n, "strategy", path, &strategy);
    if (strategy != NULL) {
        for (i = 0; i < 4 && strcmp(strategy, strategies[i]) != 0; i++) {
        }
        if (i == 4) {
            cfg_error(ck, mf_node_get(n, "strategy"), path,
                      "strategy '%s' must be weighted, round_robin, "
                      "least_inflight or lowest_latency",
                      strategy);
        } else {
            rt->strategy = (int)i;
        }
        free(strategy);
    }
    snprintf(tp, sizeof(tp), "%s.targets", path);
    rt->targets =
        load_targets(ck, c, mf_node_get(n, "targets"), tp, &rt->ntargets);
    if (rt->ntargets == 0) {
        cfg_error(ck, n, path, "needs at least one target");
    }
    snprintf(tp, sizeof(tp), "%s.fallback", path);
    rt->fallbacks =
        load_targets(ck, c, mf_node_get(n, "fallback"), tp, &rt->nfallbacks);
    m = mf_node_get(n, "canary");
    if (m != NULL && m->type != MF_NODE_SEQ) {
        cfg_error(ck, m, path, "canary must be a list of rules");
    } else if (m != NULL) {
        static const char *const rk[] = {"header", "value",  "consumer",
                                         "group",  "target", NULL};
        const mf_node_t *e;

        for (e = m->child; e != NULL; e = e->next) {
            rt->nrules++;
        }
        rt->rules = mf_xcalloc(rt->nrules, sizeof(*rt->rules));
        for (e = m->child, i = 0; e != NULL; e = e->next, i++) {
            mf_route_rule_t *ru = &rt->rules[i];

            snprintf(tp, sizeof(tp), "%s.canary[%zu]", path, i);
            if (e->type != MF_NODE_MAP) {
                cfg_error(ck, e, tp,
                          "must be a map (header, value, "
                          "consumer, group, target)");
                continue;
            }
            check_keys(ck, e, tp, rk);
            get_string(ck, e, "header", tp, &ru->header);
            get_string(ck, e, "value", tp, &ru->value);
            get_string(ck, e, "consumer", tp, &ru->consumer);
            get_string(ck, e, "group", tp, &ru->group);
            ru->target = (size_t)get_int(ck, e, "target", tp, 0, 0, 1000);
            if (ru->target >= rt->ntargets && rt->ntargets > 0) {
                cfg_error(ck, e, tp,
                          "target %zu: the route has %zu targets "
                          "(counted from 0)",
                          ru->target, rt->ntargets);
            }
            if (!ru->header && !ru->consumer && !ru->group) {
                cfg_error(ck, e, tp, "needs header, consumer or group");
            }
        }
    }
    if (mf_node_get(n, "retry_on") != NULL) {
        rt->retry_on = retry_bits(ck, mf_node_get(n, "retry_on"), path);
    }
    rt->retries = get_int(ck, n, "retries", path, -1, 0, 100);
    get_duration(ck, n, "attempt_timeout", path, &rt->attempt_timeout_ms);
    get_duration(ck, n, "ttft_timeout", path, &rt->ttft_timeout_ms);
    m = mf_node_get(n, "breaker");
    if (m != NULL && m->type == MF_NODE_MAP) {
        static const char *const bk[] = {"failures", "cooldown", NULL};

        check_keys(ck, m, path, bk);
        rt->breaker_failures = get_int(ck, m, "failures", path, 5, 1, 100000);
        get_duration(ck, m, "cooldown", path, &rt->breaker_cooldown_ms);
    } else if (m != NULL) {
        cfg_error(ck, m, path, "breaker must be a map (failures, cooldown)");
    }
}

static void
load_stage(check_t *ck, mf_config_t *c, const mf_node_t *n, size_t idx)
{
    static const char *const allowed[] = {"name",   "plugin",  "lua",
                                          "config", "enabled", NULL};
    mf_stage_conf_t *s = &c->stages[idx];
    char path[128], *plugin = NULL, *lua = NULL;
    size_t i;

    snprintf(path, sizeof(path), "stages[%zu]", idx);
    s->line = n->line;
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path, "must be a map with name and plugin or lua");
        s->name = mf_xstrdup("");
        return;
    }
    check_keys(ck, n, path, allowed);
    get_string(ck, n, "name", path, &s->name);
    get_string(ck, n, "plugin", path, &plugin);
    get_string(ck, n, "lua", path, &lua);
    s->enabled = get_bool(ck, n, "enabled", path, 1);
    if ((plugin == NULL) == (lua == NULL)) {
        cfg_error(ck, n, path,
                  "needs exactly one of plugin: (a .so, or a "
                  "name in the plugin directory) or lua: (a .lua file)");
    }
    if (plugin != NULL) {
        if (strchr(plugin, '/') == NULL) {
            char buf[PATH_MAX];

            snprintf(buf, sizeof(buf), "%s/%s%s", c->plugin_dir, plugin,
                     strstr(plugin, ".so") ? "" : ".so");
            s->plugin = mf_xstrdup(buf);
        } else {
            s->plugin = resolve_path(c, plugin);
        }
        if (access(s->plugin, R_OK) != 0) {
            cfg_error(ck, mf_node_get(n, "plugin"), path,
                      "plugin file %s not found; build it or fix the path",
                      s->plugin);
        }
    }
    if (lua != NULL) {
        s->lua = resolve_path(c, lua);
        if (access(s->lua, R_OK) != 0) {
            cfg_error(ck, mf_node_get(n, "lua"), path, "Lua file %s not found",
                      s->lua);
        }
    }
    if (s->name == NULL) {
        const char *base = plugin ? plugin : lua ? lua : "stage";
        const char *slash = strrchr(base, '/');

        s->name = mf_xstrdup(slash ? slash + 1 : base);
    }
    for (i = 0; i < idx; i++) {
        if (c->stages[i].name && strcmp(c->stages[i].name, s->name) == 0) {
            cfg_error(ck, n, path,
                      "name '%s' is already used by "
                      "stages[%zu]; stage names must be unique",
                      s->name, i);
        }
    }
    {
        const mf_node_t *cn = mf_node_get(n, "config");

        s->config = cn ? mf_node_to_json(cn) : json_object();
    }
    free(plugin);
    free(lua);
}

static void
load_limits(check_t *ck, mf_config_t *c, const mf_node_t *n)
{
    static const char *const allowed[] = {
        "max_body",
        "max_header",
        "max_response",
        "max_sse_event",
        "client_timeout",
        "upstream_connect_timeout",
        "upstream_timeout",
        "stream_idle_timeout",
        "drain_timeout",
        "send_timeout",
        NULL,
    };

    if (n == NULL) {
        return;
    }
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "limits", "must be a map");
        return;
    }
    check_keys(ck, n, "limits", allowed);
    get_size(ck, n, "max_body", "limits.max_body", &c->limits.max_body);
    get_size(ck, n, "max_header", "limits.max_header", &c->limits.max_header);
    get_size(ck, n, "max_response", "limits.max_response",
             &c->limits.max_response);
    get_size(ck, n, "max_sse_event", "limits.max_sse_event",
             &c->limits.max_sse_event);
    get_duration(ck, n, "client_timeout", "limits.client_timeout",
                 &c->limits.client_timeout_ms);
    get_duration(ck, n, "upstream_connect_timeout",
                 "limits.upstream_connect_timeout",
                 &c->limits.upstream_connect_timeout_ms);
    get_duration(ck, n, "upstream_timeout", "limits.upstream_timeout",
                 &c->limits.upstream_timeout_ms);
    get_duration(ck, n, "stream_idle_timeout", "limits.stream_idle_timeout",
                 &c->limits.stream_idle_timeout_ms);
    get_duration(ck, n, "drain_timeout", "limits.drain_timeout",
                 &c->limits.drain_timeout_ms);
    get_duration(ck, n, "send_timeout", "limits.send_timeout",
                 &c->limits.send_timeout_ms);
    if (c->limits.send_timeout_ms <= 0) {
        cfg_error(ck, mf_node_get(n, "send_timeout"), "limits.send_timeout",
                  "must be longer than 0");
    }
    if (c->limits.max_body < 1024) {
        cfg_error(ck, mf_node_get(n, "max_body"), "limits.max_body",
                  "must be at least 1KiB");
    }
}

static void
load_root(check_t *ck, mf_config_t *c, const mf_node_t *root)
{
    static const char *const allowed[] = {
        "listen",     "workers",  "admin",     "limits", "redis",
        "providers",  "routes",   "consumers", "stages", "log_level",
        "plugin_dir", "lua_path", "reload",    NULL};
    const mf_node_t *n;
    size_t i;

    if (root->type != MF_NODE_MAP) {
        cfg_error(ck, root, "(top)", "the config must be a map of settings");
        return;
    }
    check_keys(ck, root, "", allowed);

    n = want_scalar(ck, mf_node_get(root, "listen"), "listen");
    if (n != NULL) {
        free(c->listen_host);
        c->listen_host = NULL;
        if (mf_config_parse_listen(n->value, &c->listen_host,
                                   &c->listen_port) != MF_OK) {
            cfg_error(ck, n, "listen", "'%s' is not host:port", n->value);
            c->listen_host = mf_xstrdup("127.0.0.1");
        }
    }
    n = want_scalar(ck, mf_node_get(root, "workers"), "workers");
    if (n != NULL && strcmp(n->value, "auto") != 0) {
        char *end;
        long w = strtol(n->value, &end, 10);

        if (*end != '\0' || w < 1 || w > 256) {
            cfg_error(ck, n, "workers", "'%s' must be auto or 1..256",
                      n->value);
        } else {
            c->workers = (int)w;
        }
    }
    n = mf_node_get(root, "admin");
    if (n != NULL) {
        if (n->type == MF_NODE_MAP) {
            static const char *const adm[] = {"socket", NULL};

            check_keys(ck, n, "admin", adm);
            get_string(ck, n, "socket", "admin.socket", &c->admin_socket);
        } else {
            get_string(ck, root, "admin", "admin", &c->admin_socket);
        }
    }
    n = mf_node_get(root, "reload");
    if (n != NULL && n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "reload", "must be a map (watch, debounce)");
    } else if (n != NULL) {
        static const char *const rel[] = {"watch", "debounce", NULL};

        check_keys(ck, n, "reload", rel);
        c->watch = get_bool(ck, n, "watch", "reload.watch", 1);
        get_duration(ck, n, "debounce", "reload.debounce",
                     &c->watch_debounce_ms);
    }
    n = want_scalar(ck, mf_node_get(root, "log_level"), "log_level");
    if (n != NULL) {
        static const char *const names[] = {"debug", "info", "warn", "error"};

        for (i = 0; i < 4; i++) {
            if (strcmp(n->value, names[i]) == 0) {
                c->log_level = (mf_log_level_t)i;
                break;
            }
        }
        if (i == 4) {
            cfg_error(ck, n, "log_level",
                      "'%s' must be debug, info, warn "
                      "or error",
                      n->value);
        }
    }
    {
        char *pd = NULL;

        get_string(ck, root, "plugin_dir", "plugin_dir", &pd);
        if (pd != NULL) {
            free(c->plugin_dir);
            c->plugin_dir = resolve_path(c, pd);
            free(pd);
        }
    }
    get_string(ck, root, "lua_path", "lua_path", &c->lua_path);
    load_limits(ck, c, mf_node_get(root, "limits"));

    n = mf_node_get(root, "redis");
    if (n != NULL) {
        c->redis = mf_node_to_json(n);
    }

    n = mf_node_get(root, "providers");
    if (n != NULL && n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, "providers", "must be a list");
    } else if (n != NULL) {
        const mf_node_t *p;

        for (p = n->child; p != NULL; p = p->next) {
            c->nproviders++;
        }
        c->providers = mf_xcalloc(c->nproviders ? c->nproviders : 1,
                                  sizeof(*c->providers));
        i = 0;
        for (p = n->child; p != NULL; p = p->next) {
            load_provider(ck, c, p, i++);
        }
    }
    n = mf_node_get(root, "routes");
    if (n != NULL && n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, "routes", "must be a list");
    } else if (n != NULL) {
        const mf_node_t *p;

        for (p = n->child; p != NULL; p = p->next) {
            c->nroutes++;
        }
        c->routes = mf_xcalloc(c->nroutes ? c->nroutes : 1, sizeof(*c->routes));
        for (p = n->child, i = 0; p != NULL; p = p->next, i++) {
            load_route(ck, c, p, i);
        }
    }

    n = mf_node_get(root, "stages");
    if (n != NULL && n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, "stages", "must be a list");
    } else if (n != NULL) {
        const mf_node_t *s;

        for (s = n->child; s != NULL; s = s->next) {
            c->nstages++;
        }
        c->stages = mf_xcalloc(c->nstages ? c->nstages : 1, sizeof(*c->stages));
        i = 0;
        for (s = n->child; s != NULL; s = s->next) {
            load_stage(ck, c, s, i++);
        }
    }
}

static mf_config_t *
config_new(const char *path, const char *plugin_dir)
{
    mf_config_t *c = mf_xcalloc(1, sizeof(*c));
    char *tmp = mf_xstrdup(path);

    c->path = mf_xstrdup(path);
    c->dir = mf_xstrdup(dirname(tmp));
    free(tmp);
    c->listen_host = mf_xstrdup("127.0.0.1");
    c->listen_port = 8080;
    c->plugin_dir = mf_xstrdup(plugin_dir ? plugin_dir : "plugins");
    c->log_level = MF_LOG_INFO;
    c->limits.max_body = 16 * 1024 * 1024;
    c->limits.max_header = 64 * 1024;
    c->limits.max_response = 64 * 1024 * 1024;
    c->limits.max_sse_event = 4 * 1024 * 1024;
    c->limits.client_timeout_ms = 60000;
    c->limits.upstream_connect_timeout_ms = 10000;
    c->limits.upstream_timeout_ms = 600000;
    c->limits.stream_idle_timeout_ms = 300000;
    c->limits.drain_timeout_ms = 30000;
    c->limits.send_timeout_ms = 60000;
    c->watch = 1;
    c->watch_debounce_ms = 200;
    return c;
}

mf_config_t *
mf_config_parse(const char *path, const char *text, size_t len,
                const char *plugin_dir, char **errors)
{
    char err[1024];
    check_t ck = {.file = path};
    mf_config_t *c;
    mf_node_t *root;
    size_t i;

    *errors = NULL;
    root = mf_yaml_parse(path, text, len, err, sizeof(err));
    if (root == NULL) {
        *errors = mf_xstrdup(err);
        return NULL;
    }
    c = config_new(path, plugin_dir);
    load_root(&ck, c, root);
    mf_node_free(root);
    if (ck.nerrors > 0) {
        mf_buf_append(&ck.errors, "", 1);
        *errors = mf_xstrdup(ck.errors.data);
        mf_buf_free(&ck.errors);
        mf_config_free(c);
        return NULL;
    }
    for (i = 0; i < c->nproviders; i++) {
        if (c->providers[i].disabled) {
            mf_log_warn("%s:%d: provider '%s' disabled: its keys are empty "
                        "(set the key variable to enable it)",
                        path, c->providers[i].line, c->providers[i].name);
        }
    }
    return c;
}

mf_config_t *
mf_config_load(const char *path, const char *plugin_dir, char **errors)
{
    char err[1024];
    FILE *f = fopen(path, "rb");
    mf_buf_t b = {.limit = 16 * 1024 * 1024};
    char chunk[8192];
    size_t n;
    mf_config_t *c;

    if (f == NULL) {
        snprintf(err, sizeof(err), "%s: cannot open the config: %s", path,
                 strerror(errno));
        *errors = mf_xstrdup(err);
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (mf_buf_append(&b, chunk, n) != MF_OK) {
            fclose(f);
            mf_buf_free(&b);
            snprintf(err, sizeof(err), "%s: larger than 16 MiB", path);
            *errors = mf_xstrdup(err);
            return NULL;
        }
    }
    fclose(f);
    c = mf_config_parse(path, b.data ? b.data : "", b.len, plugin_dir, errors);
    mf_buf_free(&b);
    return c;
}

void
mf_config_free(mf_config_t *c)
{
    size_t i, j;

    if (c == NULL) {
        return;
    }
    for (i = 0; i < c->nproviders; i++) {
        mf_provider_conf_t *p = &c->providers[i];

        free(p->name);
        free(p->type);
        free(p->base_url);
        free(p->plugin);
        for (j = 0; j < p->nkeys; j++) {
            free(p->keys[j]);
        }
        free(p->keys);
        for (j = 0; j < p->nmodels; j++) {
            free(p->models[j]);
        }
        free(p->models);
        for (j = 0; j < p->nmap; j++) {
            free(p->model_map[j].from);
            free(p->model_map[j].to);
        }
        free(p->model_map);
        free(p->probe_path);
        free(p->probe_header);
        json_decref(p->json);
    }
    free(c->providers);
    for (i = 0; i < c->nstages; i++) {
        free(c->stages[i].name);
        free(c->stages[i].plugin);
        free(c->stages[i].lua);
        json_decref(c->stages[i].config);
    }
    free(c->stages);
    json_decref(c->redis);
    free(c->path);
    free(c->dir);
    free(c->listen_host);
    free(c->admin_socket);
    for (i = 0; i < c->nroutes; i++) {
        mf_route_conf_t *rt = &c->routes[i];

        free(rt->model);
        for (j = 0; j < rt->ntargets; j++) {
            free(rt->targets[j].provider);
            free(rt->targets[j].model);
        }
        for (j = 0; j < rt->nfallbacks; j++) {
            free(rt->fallbacks[j].provider);
            free(rt->fallbacks[j].model);
        }
        for (j = 0; j < rt->nrules; j++) {
            free(rt->rules[j].header);
            free(rt->rules[j].value);
            free(rt->rules[j].consumer);
            free(rt->rules[j].group);
        }
        free(rt->targets);
        free(rt->fallbacks);
        free(rt->rules);
    }
    free(c->routes);
    free(c->plugin_dir);
    free(c->lua_path);
    free(c);
}
