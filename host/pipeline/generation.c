/*
 * Generations: a loaded config with its stages (plugins and Lua states) and
 * providers bound to their plugins. Requests hold a reference to the
 * generation they started on; the last release frees it (fini, dlclose).
 * Stage instances are refcounted and shared by consecutive generations
 * while their files and config stay the same.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <sched.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "pipeline/generation.h"
#include "pipeline/endpoint.h"
#include "pipeline/stage_runtime.h"

/* A provider's init() has this long (stages: their init_timeout). */
#define MF_PROVIDER_INIT_TIMEOUT_MS 10000

static pthread_mutex_t gen_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(mf_gen_t *) gen_current;      /* stored under gen_lock */
static mf_gen_reader_t *gen_readers;         /* under gen_lock */
static __thread mf_gen_reader_t *gen_reader; /* this thread's, or NULL */
static mf_gen_t *gen_alive; /* every generation not yet freed */
static unsigned gen_seq;
static const mf_gen_provider_hooks_t *prov_hooks; /* the key pool's */
static atomic_uint enabled_epoch; /* mf_stage_set_enabled calls */

void
mf_gen_set_provider_hooks(const mf_gen_provider_hooks_t *h)
{
    prov_hooks = h;
}

/* Stage instances */

void
mf_stage_set_error(mf_pstage_t *s, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&s->err_lock);
    va_start(ap, fmt);
    vsnprintf(s->last_error, sizeof(s->last_error), fmt, ap);
    va_end(ap);
    s->last_error_at = mf_wall_time();
    pthread_mutex_unlock(&s->err_lock);
}

double
mf_stage_get_error(mf_pstage_t *s, char *buf, size_t cap)
{
    double at;

    pthread_mutex_lock(&s->err_lock);
    snprintf(buf, cap, "%s", s->last_error);
    at = s->last_error_at;
    pthread_mutex_unlock(&s->err_lock);
    return at;
}

const char *
mf_stage_version(const mf_pstage_t *s)
{
    return s->impl != NULL ? s->rt->version(s->impl) : "";
}

static void
fileid_take(mf_fileid_t *f, const char *path)
{
    struct stat st;

    memset(f, 0, sizeof(*f));
    f->path = mf_xstrdup(path);
    if (stat(path, &st) != 0) {
        f->missing = 1;
        return;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->size = st.st_size;
    f->mtime = st.st_mtim;
}

static int
fileid_changed(const mf_fileid_t *f)
{
    struct stat st;

    if (stat(f->path, &st) != 0) {
        return !f->missing;
    }
    return f->missing || st.st_dev != f->dev || st.st_ino != f->ino ||
           st.st_size != f->size || st.st_mtim.tv_sec != f->mtime.tv_sec ||
           st.st_mtim.tv_nsec != f->mtime.tv_nsec;
}

void
mf_stage_set_enabled(mf_pstage_t *s, int on)
{
    atomic_store(&s->enabled, on);
    atomic_fetch_add(&enabled_epoch, 1);
}

unsigned
mf_stage_enabled_epoch(void)
{
    return atomic_load(&enabled_epoch);
}

int
mf_stage_files_changed(const mf_pstage_t *s)
{
    size_t i;

    for (i = 0; i < s->nfiles; i++) {
        if (fileid_changed(&s->files[i])) {
            return 1;
        }
    }
    return 0;
}

static void
stage_unref(mf_pstage_t *s)
{
    size_t i;

    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1) {
        return;
    }
    if (s->impl != NULL) {
        s->rt->free(s->impl);
    }
    mf_endpoints_free(s->epaths, s->nepaths);
    for (i = 0; i < s->nfiles; i++) {
        free(s->files[i].path);
    }
    free(s->files);
    json_decref(s->config);
    json_decref(s->sections);
    for (i = 0; i < s->ncommands; i++) {
        free(s->commands[i].name);
        free(s->commands[i].usage);
    }
    free(s->commands);
    for (i = 0; i < s->nmodels; i++) {
        free(s->models[i]);
    }
    free(s->models);
    pthread_mutex_destroy(&s->err_lock);
    free(s->name);
    free(s->file);
    free(s);
}

static void
gen_free(mf_gen_t *g)
{
    mf_gen_t **pp;
    size_t i;

    pthread_mutex_lock(&gen_lock);
    for (pp = &gen_alive; *pp != NULL; pp = &(*pp)->next_alive) {
        if (*pp == g) {
            *pp = g->next_alive;
            break;
        }
    }
    pthread_mutex_unlock(&gen_lock);
    for (i = 0; i < g->nstages; i++) {
        stage_unref(g->stages[i]);
    }
    free(g->stages);
    free(g->epaths);
    for (i = 0; i < g->nproviders; i++) {
        mf_prov_t *p = &g->providers[i];

        if (p->dso && p->dso->desc->fini && p->state) {
            p->dso->desc->fini(p->state);
        }
        if (prov_hooks != NULL && prov_hooks->unbind != NULL) {
            prov_hooks->unbind(p);
        }
        free(p->keys);
        free(p->key_str);
    }
    free(g->providers);
    for (i = 0; i < g->nprovider_dsos; i++) {
        mf_plugin_unload(g->provider_dsos[i]);
    }
    free(g->provider_dsos);
    if (g->config != NULL) {
        mf_config_free(g->config);
    }
    free(g);
}

/* 1 when an earlier directory of the search path gave a file of this
 * name: the first one found is used. */
static int
shadowed(const mf_gen_t *g, const char *name)
{
    size_t i;

    for (i = 0; i < g->nprovider_dsos; i++) {
        const char *p = g->provider_dsos[i]->path;
        const char *base = p ? strrchr(p, '/') : NULL;

        if (base != NULL && strcmp(base + 1, name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Loads every provider-*.so of the plugin search path (once per
 * generation), in its order. */
static int
load_provider_dsos(mf_gen_t *g, char *err, size_t errcap)
{
    const mf_config_t *c = g->config;
    size_t k, opened = 0;

    for (k = 0; k < c->nplugin_dirs; k++) {
        const char *dir = c->plugin_dirs[k];
        DIR *d = opendir(dir);
        struct dirent *de;

        if (d == NULL) {
            continue; /* the built-in one may be absent */
        }
        opened++;
        while ((de = readdir(d)) != NULL) {
            size_t n = strlen(de->d_name);
            char path[4096];
            mf_dso_t *dso;

            if (strncmp(de->d_name, "provider-", 9) != 0 || n < 4 ||
                strcmp(de->d_name + n - 3, ".so") != 0 ||
                shadowed(g, de->d_name)) {
                continue;
            }
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            dso = mf_plugin_load(path, err, errcap);
            if (dso == NULL) {
                closedir(d);
                return MF_ERR;
            }
            g->provider_dsos = mf_xrealloc(
                g->provider_dsos, (g->nprovider_dsos + 1) * sizeof(mf_dso_t *));
            g->provider_dsos[g->nprovider_dsos++] = dso;
            if (dso->desc->provider == NULL) {
                snprintf(err, errcap,
                         "%s: named provider-* but is not a "
                         "provider plugin",
                         path);
                closedir(d);
                return MF_ERR;
            }
        }
        closedir(d);
    }
    if (opened == 0) {
        snprintf(err, errcap,
                 "%s: cannot open the plugin directory; set "
                 "plugin_dir in the config or build the plugins",
                 c->nplugin_dirs ? c->plugin_dirs[c->nplugin_dirs - 1]
                                 : "(none)");
        return MF_ERR;
    }
    return MF_OK;
}

/* Keeps a provider plugin whose init() never returned loaded for good. */
static void
pin_dso(mf_gen_t *g, mf_dso_t *dso)
{
    size_t i;

    for (i = 0; i < g->nprovider_dsos; i++) {
        if (g->provider_dsos[i] == dso) {
            g->provider_dsos[i] = g->provider_dsos[--g->nprovider_dsos];
            break;
        }
    }
    mf_plugin_pin(dso);
}

static mf_dso_t *
find_provider_dso(mf_gen_t *g, const char *type)
{
    size_t i, j;

    for (i = 0; i < g->nprovider_dsos; i++) {
        const char *const *t = g->provider_dsos[i]->desc->provider->types;

        for (j = 0; t && t[j]; j++) {
            if (strcmp(t[j], type) == 0) {
                return g->provider_dsos[i];
            }
        }
    }
    return NULL;
}

/* Appends one line per provider whose type no loaded plugin serves,
 * with the closest type served; the count of such providers. */
static size_t
check_types(mf_gen_t *g, mf_buf_t *out)
{
    const mf_config_t *c = g->config;
    const char *types[256];
    size_t i, j, ntypes = 0, bad = 0;

    for (i = 0; i < g->nprovider_dsos; i++) {
        const char *const *t = g->provider_dsos[i]->desc->provider
                                   ? g->provider_dsos[i]->desc->provider->types
                                   : NULL;

        for (j = 0; t && t[j] && ntypes < 256; j++) {
            types[ntypes++] = t[j];
        }
    }
    for (i = 0; i < c->nproviders; i++) {
        const mf_provider_conf_t *pc = &c->providers[i];
        const char *near;

        if (pc->plugin != NULL || pc->type == NULL ||
            find_provider_dso(g, pc->type) != NULL) {
            continue;
        }
        near = mf_config_suggest(pc->type, types, ntypes);
        mf_buf_printf(out,
                      "%s%s:%d: providers[%zu]: '%s' has type '%s', "
                      "which no provider plugin serves",
                      bad || out->len ? "\n" : "", c->path, pc->line, i,
                      pc->name ? pc->name : "", pc->type);
        if (near != NULL) {
            mf_buf_printf(out, "; did you mean '%s'?", near);
        }
        mf_buf_printf(out, " (types served:");
        for (j = 0; j < ntypes; j++) {
            mf_buf_printf(out, "%s %s", j ? "," : "", types[j]);
        }
        mf_buf_printf(out, "%s; plugin search path:", ntypes ? "" : " none");
        for (j = 0; j < c->nplugin_dirs; j++) {
            mf_buf_printf(out, " %s", c->plugin_dirs[j]);
        }
        mf_buf_printf(out, ")");
        bad++;
    }
    return bad;
}

int
mf_gen_check_providers(mf_config_t *config, char *err, size_t errcap)
{
    mf_gen_t g = {.config = config};
    mf_buf_t out = {0};
    size_t i;
    int rc = MF_OK;

    err[0] = '\0';
    if (config->nproviders == 0) {
        return MF_OK;
    }
    if (load_provider_dsos(&g, err, errcap) != MF_OK) {
        rc = MF_ERR;
    } else if (check_types(&g, &out) > 0) {
        mf_buf_append(&out, "", 1);
        snprintf(err, errcap, "%s", out.data);
        rc = MF_ERR;
    }
    for (i = 0; i < g.nprovider_dsos; i++) {
        mf_plugin_unload(g.provider_dsos[i]);
    }
    free(g.provider_dsos);
    mf_buf_free(&out);
    return rc;
}

static int
bind_providers(mf_gen_t *g, char *err, size_t errcap)
{
    mf_config_t *c = g->config;
    size_t i;

    if (c->nproviders > 0 && load_provider_dsos(g, err, errcap) != MF_OK) {
        return MF_ERR;
    }
    {
        mf_buf_t out = {0};

        if (check_types(g, &out) > 0) {
            /* every provider's type at once, not the first one */
            mf_buf_append(&out, "", 1);
            snprintf(err, errcap, "%s", out.data);
            mf_buf_free(&out);
            return MF_ERR;
        }
        mf_buf_free(&out);
    }
    g->providers =
        mf_xcalloc(c->nproviders ? c->nproviders : 1, sizeof(mf_prov_t));
    if (prov_hooks != NULL && prov_hooks->configure != NULL) {
        prov_hooks->configure(c);
    }
    for (i = 0; i < c->nproviders; i++) {
        mf_provider_conf_t *pc = &c->providers[i];
        mf_prov_t *p = &g->providers[g->nproviders];
        mf_dso_t *dso;
        json_t *conf;
        char *text;
        int rc, timed_out;

        if (pc->disabled) {
            continue;
        }
        if (pc->plugin != NULL) {
            dso = mf_plugin_load(pc->plugin, err, errcap);
            if (dso == NULL) {
                return MF_ERR;
            }
            g->provider_dsos = mf_xrealloc(
                g->provider_dsos, (g->nprovider_dsos + 1) * sizeof(mf_dso_t *));
            g->provider_dsos[g->nprovider_dsos++] = dso;
            if (dso->desc->provider == NULL) {
                snprintf(err, errcap,
                         "%s:%d: provider '%s': %s is not a "
                         "provider plugin",
                         c->path, pc->line, pc->name, pc->plugin);
                return MF_ERR;
            }
        } else {
            dso = find_provider_dso(g, pc->type); /* checked above */
        }
        conf = json_deep_copy(pc->json);
        json_object_del(conf, "keys"); /* keys reach it per attempt */
        text = json_dumps(conf, JSON_COMPACT);
        json_decref(conf);
        p->conf = pc;
        p->dso = dso;
        p->ops = dso->desc->provider;
        p->index = g->nproviders;
        rc = mf_plugin_init_bounded(dso->desc, text, &p->state,
                                    MF_PROVIDER_INIT_TIMEOUT_MS, &timed_out);
        free(text);
        if (timed_out) {
            pin_dso(g, dso);
            snprintf(err, errcap,
                     "%s:%d: provider '%s': plugin %s init() did not return "
                     "%s %d ms; its thread is left running (see "
                     "docs/RELOAD.md), restart the gateway to end it",
                     c->path, pc->line, pc->name, dso->desc->name,
                     timed_out == 2 ? "before the gateway was told to stop, "
                                      "of its"
                                    : "within",
                     MF_PROVIDER_INIT_TIMEOUT_MS);
            p->dso = NULL;
            return MF_ERR;
        }
        if (rc != MF_OK) {
            snprintf(err, errcap,
                     "%s:%d: provider '%s': plugin %s refused "
                     "its config (see the log above)",
                     c->path, pc->line, pc->name, dso->desc->name);
            p->dso = NULL;
            return MF_ERR;
        }
        if (prov_hooks != NULL && prov_hooks->bind != NULL) {
            prov_hooks->bind(p);
        }
        g->nproviders++;
    }
    return MF_OK;
}

/* The stage being loaded and its config, for the calls an init makes
 * (sections, commands); an init that outlived its deadline finds NULL. */
static pthread_mutex_t loading_lock = PTHREAD_MUTEX_INITIALIZER;
static mf_pstage_t *loading;
static const mf_config_t *loading_cfg;

/* The governance sections whose readers the host counts, and the claim
 * of the stage that enforces consumers' and groups' limits and budgets:
 * bit i of mf_pstage_t.reads. A config that sets one no stage reads is
 * refused (check_governance). */
static const char *const read_names[] = {"consumers", "groups", "prices",
                                         "@limits"};
enum { READ_CONSUMERS = 1, READ_GROUPS = 2, READ_PRICES = 4, READ_LIMITS = 8 };

const json_t *
mf_gen_loading_section(const char *name)
{
    const json_t *v = NULL;
    size_t i;

    pthread_mutex_lock(&loading_lock);
    if (loading != NULL && name != NULL && loading_cfg->sections != NULL) {
        /* the config's directory is where it is, not a section whose
         * change should load the stage again */
        if (strcmp(name, "dir") != 0 && name[0] != '@' &&
            loading->sections == NULL) {
            loading->sections = json_incref(loading_cfg->sections);
        }
        for (i = 0; i < sizeof(read_names) / sizeof(read_names[0]); i++) {
            if (strcmp(name, read_names[i]) == 0) {
                loading->reads |= 1u << i;
            }
        }
        /* "@..." names are claims (see plugin.h), not sections */
        v = name[0] == '@' ? NULL
                           : json_object_get(loading_cfg->sections, name);
    }
    pthread_mutex_unlock(&loading_lock);
    return v;
}

/* Whether provider pc can serve a call of kind: enabled, and for
 * embeddings a type with an embeddings API. NULL, else why not. */
static const char *
provider_serves(const mf_provider_conf_t *pc, int kind)
{
    if (pc->disabled) {
        return "is disabled (its keys are unset)";
    }
    if (kind == MF_MODEL_EMBEDDINGS && pc->type != NULL &&
        strcmp(pc->type, "anthropic") == 0) {
        return "serves no embeddings (type anthropic)";
    }
    return NULL;
}

static const mf_provider_conf_t *
provider_named(const mf_config_t *c, const char *name)
{
    size_t i;

    for (i = 0; i < c->nproviders; i++) {
        if (strcmp(c->providers[i].name, name) == 0) {
            return &c->providers[i];
        }
    }
    return NULL;
}

static int
model_check(const mf_config_t *c, int kind, mf_str_t model, mf_str_t provider,
            char *why, size_t whylen)
{
    const char *what = kind == MF_MODEL_EMBEDDINGS ? "embeddings" : "chat";
    const mf_provider_conf_t *pc;
    const char *no;
    size_t i, j;

    if (provider.len > 0) {
        char name[128];

        snprintf(name, sizeof(name), "%.*s", (int)provider.len, provider.data);
        if ((pc = provider_named(c, name)) == NULL) {
            snprintf(why, whylen, "no provider is named '%s'", name);
            return MF_ERR;
        }
        if ((no = provider_serves(pc, kind)) != NULL) {
            snprintf(why, whylen, "provider '%s' %s", name, no);
            return MF_ERR;
        }
        return MF_OK;
    }
    for (i = 0; i < c->nroutes; i++) {
        const mf_route_conf_t *rt = &c->routes[i];

        if (!mf_glob_match(rt->model, model)) {
            continue;
        }
        for (j = 0; j < rt->ntargets + rt->nfallbacks; j++) {
            const mf_target_conf_t *t = j < rt->ntargets
                                            ? &rt->targets[j]
                                            : &rt->fallbacks[j - rt->ntargets];

            pc = provider_named(c, t->provider);
            if (pc != NULL && provider_serves(pc, kind) == NULL) {
                return MF_OK;
            }
        }
        snprintf(why, whylen,
                 "the route '%s' has no enabled provider serving %s", rt->model,
                 what);
        return MF_ERR;
    }
    for (i = 0; i < c->nproviders; i++) {
        pc = &c->providers[i];
        for (j = 0; j < pc->nmodels; j++) {
            if (mf_glob_match(pc->models[j], model) &&
                provider_serves(pc, kind) == NULL) {
                return MF_OK;
            }
        }
    }
    for (i = 0; i < c->nstages; i++) {
        for (j = 0; j < c->stages[i].nmodels; j++) {
            if (mf_glob_match(c->stages[i].models[j], model)) {
                return MF_OK;
            }
        }
    }
    snprintf(why, whylen,
             "no route or enabled provider serving %s lists the model "
             "'%.*s'",
             what, (int)model.len, model.data);
    return MF_ERR;
}

int
mf_gen_loading_model_check(int kind, mf_str_t model, mf_str_t provider,
                           char *why, size_t whylen)
{
    int rc = MF_ERR;

    if (why == NULL || whylen == 0) {
        return MF_ERR;
    }
    why[0] = '\0';
    pthread_mutex_lock(&loading_lock);
    if (loading != NULL && loading_cfg != NULL) {
        rc = model_check(loading_cfg, kind, model, provider, why, whylen);
    } else {
        snprintf(why, whylen, "only while a stage loads");
    }
    pthread_mutex_unlock(&loading_lock);
    return rc;
}

json_t *
mf_gen_redis_conf(void)
{
    json_t *v = NULL;
    mf_gen_t *g;

    pthread_mutex_lock(&loading_lock);
    if (loading != NULL && loading_cfg != NULL) {
        v = json_incref(loading_cfg->redis);
        pthread_mutex_unlock(&loading_lock);
        return v;
    }
    pthread_mutex_unlock(&loading_lock);
    g = mf_gen_acquire();
    if (g != NULL) {
        v = json_incref(g->config->redis);
        mf_gen_release(g);
    }
    return v;
}

static int
command_name_ok(const char *n)
{
    size_t i, len = n ? strlen(n) : 0;

    if (len == 0 || len > 64) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (!isalnum((unsigned char)n[i]) && n[i] != '-' && n[i] != '.') {
            return 0;
        }
    }
    return 1;
}

int
mf_gen_loading_command(const char *name, const char *usage, mf_command_fn fn,
                       void *arg)
{
    mf_pstage_t *s;
    size_t i;
    int rc = MF_ERR;

    pthread_mutex_lock(&loading_lock);
    s = loading;
    if (s == NULL || fn == NULL || !command_name_ok(name)) {
        goto out;
    }
    for (i = 0; i < s->ncommands; i++) {
        if (strcmp(s->commands[i].name, name) == 0) {
            goto out;
        }
    }
    s->commands =
        mf_xrealloc(s->commands, (s->ncommands + 1) * sizeof(*s->commands));
    s->commands[s->ncommands].name = mf_xstrdup(name);
    s->commands[s->ncommands].usage = mf_xstrdup(usage ? usage : "");
    s->commands[s->ncommands].fn = fn;
    s->commands[s->ncommands].arg = arg;
    s->ncommands++;
    rc = MF_OK;
out:
    pthread_mutex_unlock(&loading_lock);
    return rc;
}

int
mf_gen_loading_declare_model(const char *name, char *err, size_t errcap)
{
    mf_pstage_t *s;
    size_t i, n = name ? strlen(name) : 0;
    int rc = MF_ERR;

    pthread_mutex_lock(&loading_lock);
    s = loading;
    if (s == NULL) {
        snprintf(err, errcap, "only while the stage loads (its init)");
        goto out;
    }
    if (n == 0 || n > 200 || strpbrk(name, "*?") != NULL) {
        snprintf(err, errcap,
                 "'%.200s': a model name is exact (no * or ?), 1 to 200 "
                 "bytes",
                 name ? name : "");
        goto out;
    }
    for (i = 0; i < n; i++) {
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) {
            snprintf(err, errcap, "a model name holds no control character");
            goto out;
        }
    }
    rc = MF_OK;
    for (i = 0; i < s->nmodels; i++) {
        if (strcmp(s->models[i], name) == 0) {
            goto out; /* declared already: once is enough */
        }
    }
    s->models = mf_xrealloc(s->models, (s->nmodels + 1) * sizeof(*s->models));
    s->models[s->nmodels++] = mf_xstrdup(name);
out:
    pthread_mutex_unlock(&loading_lock);
    return rc;
}

int
mf_gen_loading_skip_hooks(unsigned hooks, char *err, size_t errcap)
{
    const unsigned all = MF_HOOK(MF_STAGE_REQUEST) | MF_HOOK(MF_STAGE_ROUTE) |
                         MF_HOOK(MF_STAGE_UPSTREAM_REQUEST) |
                         MF_HOOK(MF_STAGE_UPSTREAM_RESPONSE) |
                         MF_HOOK(MF_STAGE_RESPONSE_HEADERS) |
                         MF_HOOK(MF_STAGE_RESPONSE_BODY) |
                         MF_HOOK(MF_STAGE_LOG) | MF_HOOK(MF_STAGE_DONE);
    int rc = MF_ERR;

    pthread_mutex_lock(&loading_lock);
    if (loading == NULL) {
        snprintf(err, errcap, "only while the stage loads (its init)");
    } else if ((hooks & ~all) != 0) {
        snprintf(err, errcap,
                 "0x%x: bits that are no hook (on_request to on_done)",
                 hooks & ~all);
    } else {
        loading->skipped |= hooks;
        rc = MF_OK;
    }
    pthread_mutex_unlock(&loading_lock);
    return rc;
}

const mf_command_t *
mf_gen_find_command(mf_gen_t *g, mf_str_t name)
{
    size_t i, j;

    for (i = 0; g != NULL && i < g->nstages; i++) {
        mf_pstage_t *s = g->stages[i];

        for (j = 0; s != NULL && j < s->ncommands; j++) {
            if (mf_str_eq_cstr(name, s->commands[j].name)) {
                return &s->commands[j];
            }
        }
    }
    return NULL;
}

/* Loads the stage of `sc` afresh with its runtime; NULL with err. */
static mf_pstage_t *
stage_load(mf_config_t *c, size_t i, unsigned gen_id, int nworkers, char *err,
           size_t errcap)
{
    mf_stage_conf_t *sc = &c->stages[i];
    mf_pstage_t *s = mf_xcalloc(1, sizeof(*s));
    const char *const *deps = NULL;
    mf_fileid_t first;
    size_t n = 0, j;

    atomic_store(&s->refs, 1);
    pthread_mutex_init(&s->err_lock, NULL);
    s->name = mf_xstrdup(sc->name);
    s->config = json_incref(sc->config);
    s->conf_enabled = sc->enabled;
    mf_stage_set_enabled(s, sc->enabled);
    s->gen_id = gen_id;
    s->loaded_at = mf_wall_time();
    s->file = mf_xstrdup(mf_stage_conf_file(sc));
    /* the stage file as it was before loading (a .so is read again for
     * the loader's copy): a change from here on reloads the stage */
    fileid_take(&first, s->file);
    s->rt = mf_stage_runtime_for(sc, err, errcap);
    if (s->rt != NULL) {
        pthread_mutex_lock(&loading_lock);
        loading = s;
        loading_cfg = c;
        pthread_mutex_unlock(&loading_lock);
        /* the paths it adds while it loads are its own */
        mf_endpoints_collect_begin();
        s->impl = s->rt->load(c, i, nworkers, &s->hooks, err, errcap);
        s->epaths = mf_endpoints_collect_end(&s->nepaths);
        pthread_mutex_lock(&loading_lock);
        loading = NULL;
        loading_cfg = NULL;
        /* the hooks its init left out are not called (ABI 1.8) */
        s->hooks &= ~s->skipped;
        pthread_mutex_unlock(&loading_lock);
        for (j = 0; j < s->nepaths; j++) {
            s->epaths[j].stage = s;
        }
        if (s->impl != NULL && s->nepaths > 0 && s->rt->serve == NULL) {
            snprintf(err, errcap,
                     "%s:%d: stages[%zu] '%s': its runtime (%s) cannot "
                     "serve the paths it added",
                     c->path, sc->line, i, sc->name, s->rt->name);
            s->rt->free(s->impl);
            s->impl = NULL;
        }
    }
    if (s->impl != NULL && s->rt->deps != NULL) {
        deps = s->rt->deps(s->impl, &n);
    }
    /* the stage file, then the files it read while loading */
    s->nfiles = n + 1;
    s->files = mf_xcalloc(n + 1, sizeof(*s->files));
    s->files[0] = first;
    for (j = 0; j < n; j++) {
        fileid_take(&s->files[j + 1], deps[j]);
    }
    if (s->impl == NULL) {
        stage_unref(s);
        return NULL;
    }
    return s;
}

/* Whether prev's instance `p` can serve stage `sc` of config c unchanged
 * (a stage that read the governance sections is loaded again when they
 * changed). */
static int
stage_reusable(const mf_pstage_t *p, const mf_config_t *c,
               const mf_stage_conf_t *sc, const char *force)
{
    char err[256];

    if (force != NULL &&
        (strcmp(force, "*") == 0 || strcmp(force, p->name) == 0)) {
        return 0;
    }
    return p->rt == mf_stage_runtime_for(sc, err, sizeof(err)) &&
           strcmp(p->file, mf_stage_conf_file(sc)) == 0 &&
           json_equal(p->config, sc->config) &&
           (p->sections == NULL || json_equal(p->sections, c->sections)) &&
           (p->rt->same == NULL || p->rt->same(p->impl, sc)) &&
           !mf_stage_files_changed(p);
}

/* What the loaded stages make of the governance sections: `consumers`
 * that no stage reads are refused (they would protect nothing), and two
 * stages may not register one command. */
/* Whether an entry of a consumers or groups list sets limits or a
 * budget. */
static int
gov_sets_limits(const json_t *list)
{
    const json_t *e;
    size_t i;

    json_array_foreach(list, i, e)
    {
        if (json_object_get(e, "limits") != NULL ||
            json_object_get(e, "budget") != NULL) {
            return 1;
        }
    }
    return 0;
}

static int
check_governance(mf_gen_t *g, char *err, size_t errcap)
{
    const mf_config_t *c = g->config;
    size_t i, j, k, l;
    unsigned reads = 0;

    for (i = 0; i < g->nstages; i++) {
        reads |= g->stages[i]->reads;
        for (j = 0; j < g->stages[i]->ncommands; j++) {
            for (k = 0; k < i; k++) {
                for (l = 0; l < g->stages[k]->ncommands; l++) {
                    if (strcmp(g->stages[i]->commands[j].name,
                               g->stages[k]->commands[l].name) == 0) {
                        snprintf(err, errcap,
                                 "%s: stages '%s' and '%s' both register "
                                 "the admin command '%s'; keep one of them",
                                 c->path, g->stages[k]->name,
                                 g->stages[i]->name,
                                 g->stages[i]->commands[j].name);
                        return MF_ERR;
                    }
                }
            }
        }
    }
    if (c->sections == NULL) {
        return MF_OK;
    }
    if (!(reads & READ_CONSUMERS) &&
        json_object_get(c->sections, "consumers") != NULL) {
        snprintf(err, errcap,
                 "%s:%d: consumers: no stage reads them, so no request would "
                 "be identified or limited; add the key-auth stage "
                 "(stages: - { name: auth, plugin: key-auth }) or remove "
                 "consumers",
                 c->path, c->sections_line);
        return MF_ERR;
    }
    if (!(reads & READ_GROUPS) &&
        json_object_get(c->sections, "groups") != NULL) {
        snprintf(err, errcap,
                 "%s:%d: groups: no stage reads them; add the key-auth stage "
                 "(consumers name their group) and the limits stage, or "
                 "remove groups",
                 c->path, c->groups_line);
        return MF_ERR;
    }
    if (!(reads & READ_PRICES) &&
        json_object_get(c->sections, "prices") != NULL) {
        snprintf(err, errcap,
                 "%s:%d: prices: no stage reads them, so nothing would be "
                 "priced; add a stage that prices requests (limits, "
                 "accesslog, prometheus, dashboard) or remove prices",
                 c->path, c->prices_line);
        return MF_ERR;
    }
    if (!(reads & READ_LIMITS) &&
        (gov_sets_limits(json_object_get(c->sections, "consumers")) ||
         gov_sets_limits(json_object_get(c->sections, "groups")))) {
        snprintf(err, errcap,
                 "%s:%d: %s sets limits or a budget, but no stage enforces "
                 "them; add the limits stage (stages: - { name: limits, "
                 "plugin: limits }) or remove them",
                 c->path,
                 gov_sets_limits(json_object_get(c->sections, "consumers"))
                     ? c->sections_line
                     : c->groups_line,
                 gov_sets_limits(json_object_get(c->sections, "consumers"))
                     ? "a consumer"
                     : "a group");
        return MF_ERR;
    }
    /* a listener beyond loopback without a stage checking requests is
     * warned about once, at start, by main (warn_listen) */
    return MF_OK;
}

/* Loads every stage (each failing one is reported, not just the first). */
static int
load_stages(mf_gen_t *g, mf_gen_t *prev, const char *force, char *err,
            size_t errcap)
{
    mf_config_t *c = g->config;
    size_t i, used = 0;
    int rc = MF_OK;

    g->stages = mf_xcalloc(c->nstages ? c->nstages : 1, sizeof(mf_pstage_t *));
    g->nstages = c->nstages;
    for (i = 0; i < c->nstages; i++) {
        mf_stage_conf_t *sc = &c->stages[i];
        mf_pstage_t *old = prev ? mf_gen_find_stage(prev, sc->name) : NULL;
        mf_pstage_t *s;
        char one[2048];

        if (old != NULL && stage_reusable(old, c, sc, force) &&
            prev->nworkers == g->nworkers) {
            s = old;
            atomic_fetch_add(&s->refs, 1);
            if (s->conf_enabled != sc->enabled) {
                s->conf_enabled = sc->enabled;
                mf_stage_set_enabled(s, sc->enabled);
            }
        } else {
            s = stage_load(c, i, g->id, g->nworkers, one, sizeof(one));
            if (s == NULL) {
                if (old != NULL) {
                    mf_stage_set_error(old, "reload refused: %s", one);
                }
                if (used < errcap) {
                    used += (size_t)snprintf(err + used, errcap - used, "%s%s",
                                             used ? "\n" : "", one);
                }
                rc = MF_ERR;
                continue;
            }
        }
        g->stages[i] = s;
        g->hooks |= s->hooks;
    }
    if (rc == MF_OK) {
        rc = check_governance(g, err, errcap);
    }
    return rc;
}

mf_gen_t *
mf_gen_build(mf_config_t *config, int nworkers, mf_gen_t *prev,
             const char *force, char *err, size_t errcap)
{
    mf_gen_t *g = mf_xcalloc(1, sizeof(*g));

    g->config = config;
    g->nworkers = nworkers;
    g->created_at = mf_wall_time();
    atomic_store(&g->refs, 1);
    pthread_mutex_lock(&gen_lock);
    g->id = gen_seq + 1; /* taken for good only on success */
    g->next_alive = gen_alive;
    gen_alive = g;
    pthread_mutex_unlock(&gen_lock);
    if (bind_providers(g, err, errcap) != MF_OK ||
        load_stages(g, prev, force, err, errcap) != MF_OK ||
        mf_endpoints_build(g, err, errcap) != MF_OK) {
        g->config = NULL; /* the caller's again */
        gen_free(g);
        return NULL;
    }
    pthread_mutex_lock(&gen_lock);
    gen_seq = g->id;
    pthread_mutex_unlock(&gen_lock);
    return g;
}

void
mf_gen_reader_start(void)
{
    mf_gen_reader_t *rd = mf_xcalloc(1, sizeof(*rd));

    atomic_init(&rd->seq, 0);
    pthread_mutex_lock(&gen_lock);
    rd->next = gen_readers;
    gen_readers = rd;
    pthread_mutex_unlock(&gen_lock);
    gen_reader = rd;
}

void
mf_gen_reader_stop(void)
{
    mf_gen_reader_t **pp, *rd = gen_reader;

    if (rd == NULL) {
        return;
    }
    pthread_mutex_lock(&gen_lock);
    for (pp = &gen_readers; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == rd) {
            *pp = rd->next;
            break;
        }
    }
    pthread_mutex_unlock(&gen_lock);
    gen_reader = NULL;
    free(rd);
}

/*
 * The window: the reader's seq goes odd (a sequentially consistent
 * read-modify-write) before it loads gen_current, and even again after.
 * mf_gen_set_current stores the new pointer, then waits for each reader
 * it finds odd to move on: a reader that loaded the old pointer is inside
 * a window the writer sees, one that entered later loads the new one.
 */
mf_gen_t *
mf_gen_enter(void)
{
    if (gen_reader == NULL) {
        pthread_mutex_lock(&gen_lock); /* left in mf_gen_leave */
        return atomic_load(&gen_current);
    }
    atomic_fetch_add(&gen_reader->seq, 1);
    return atomic_load(&gen_current);
}

void
mf_gen_leave(void)
{
    if (gen_reader == NULL) {
        pthread_mutex_unlock(&gen_lock);
        return;
    }
    atomic_fetch_add_explicit(&gen_reader->seq, 1, memory_order_release);
}

mf_gen_t *
mf_gen_acquire(void)
{
    mf_gen_t *g = mf_gen_enter();

    if (g != NULL) {
        atomic_fetch_add(&g->refs, 1);
    }
    mf_gen_leave();
    return g;
}

void
mf_gen_release(mf_gen_t *g)
{
    if (g != NULL && atomic_fetch_sub(&g->refs, 1) == 1) {
        gen_free(g);
    }
}

void
mf_gen_set_current(mf_gen_t *g)
{
    mf_gen_reader_t *rd;
    mf_gen_t *old;

    pthread_mutex_lock(&gen_lock);
    old = atomic_load(&gen_current);
    atomic_store(&gen_current, g);
    for (rd = gen_readers; rd != NULL; rd = rd->next) {
        unsigned seq = atomic_load(&rd->seq);

        while ((seq & 1) && atomic_load(&rd->seq) == seq) {
            sched_yield(); /* a window is a few instructions long */
        }
    }
    pthread_mutex_unlock(&gen_lock);
    mf_gen_release(old);
}

mf_prov_t *
mf_gen_find_provider(mf_gen_t *g, mf_str_t name)
{
    size_t i;

    for (i = 0; i < g->nproviders; i++) {
        if (mf_str_eq_cstr(name, g->providers[i].conf->name)) {
            return &g->providers[i];
        }
    }
    return NULL;
}

mf_pstage_t *
mf_gen_find_stage(mf_gen_t *g, const char *name)
{
    size_t i;

    for (i = 0; g != NULL && i < g->nstages; i++) {
        if (strcmp(g->stages[i]->name, name) == 0) {
            return g->stages[i];
        }
    }
    return NULL;
}

void
mf_gen_foreach_alive(void (*fn)(mf_gen_t *g, void *arg), void *arg)
{
    mf_gen_t *g;

    pthread_mutex_lock(&gen_lock);
    for (g = gen_alive; g != NULL; g = g->next_alive) {
        fn(g, arg);
    }
    pthread_mutex_unlock(&gen_lock);
}
