/*
 * The C stage runtime: a stage is a dlopen'd plugin whose descriptor has
 * one callback per stage (NULL = not interested). Its init() runs on a
 * helper thread within the stage's init_timeout; fini() runs when the
 * last generation using it is freed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "pipeline/endpoint.h"
#include "pipeline/stage_runtime.h"

typedef struct {
    mf_dso_t *dso;
    const mf_plugin_t *desc;
    void *state;
} c_stage_t;

/* What a stuck init() may still read: held here for the life of the
 * process (reachable, like the pinned code of its plugin). */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t **kept;
static size_t nkept;

static void
keep_for_stuck_init(json_t *v)
{
    if (v == NULL) {
        return;
    }
    pthread_mutex_lock(&kept_lock);
    kept = mf_xrealloc(kept, (nkept + 1) * sizeof(*kept));
    kept[nkept++] = json_incref(v);
    pthread_mutex_unlock(&kept_lock);
}

static unsigned
c_hooks(const mf_plugin_t *d)
{
    unsigned h = 0;

    h |= d->on_request ? 1u << MF_STAGE_REQUEST : 0;
    h |= d->on_route ? 1u << MF_STAGE_ROUTE : 0;
    h |= d->on_upstream_request ? 1u << MF_STAGE_UPSTREAM_REQUEST : 0;
    h |= d->on_upstream_response ? 1u << MF_STAGE_UPSTREAM_RESPONSE : 0;
    h |= d->on_response_headers ? 1u << MF_STAGE_RESPONSE_HEADERS : 0;
    h |= d->on_response_body ? 1u << MF_STAGE_RESPONSE_BODY : 0;
    h |= d->on_log ? 1u << MF_STAGE_LOG : 0;
    h |= d->on_done ? 1u << MF_STAGE_DONE : 0;
    return h;
}

static void
c_free(void *impl)
{
    c_stage_t *cs = impl;

    if (cs == NULL) {
        return;
    }
    if (cs->dso != NULL) {
        if (cs->desc != NULL && cs->desc->fini && cs->state) {
            cs->desc->fini(cs->state);
        }
        mf_plugin_unload(cs->dso);
    }
    free(cs);
}

static void *
c_load(const mf_config_t *c, size_t i, int nworkers, unsigned *hooks, char *err,
       size_t errcap)
{
    const mf_stage_conf_t *sc = &c->stages[i];
    c_stage_t *cs = mf_xcalloc(1, sizeof(*cs));
    char *text;
    int rc, timed_out;

    MF_UNUSED(nworkers); /* a plugin's state serves every worker */
    cs->dso = mf_plugin_load(sc->plugin, err, errcap);
    if (cs->dso == NULL) {
        goto fail;
    }
    if (cs->dso->desc->provider != NULL) {
        snprintf(err, errcap,
                 "%s:%d: stages[%zu] '%s': %s is a provider plugin; "
                 "list it under providers",
                 c->path, sc->line, i, sc->name, sc->plugin);
        goto fail;
    }
    cs->desc = cs->dso->desc;
    text = json_dumps(sc->config, JSON_COMPACT);
    rc = mf_plugin_init_bounded(cs->desc, text, &cs->state, sc->init_timeout_ms,
                                &timed_out);
    free(text);
    if (timed_out == 2) {
        snprintf(err, errcap,
                 "%s:%d: stages[%zu] '%s': %s init() had not returned when "
                 "the gateway was told to stop; the load is refused",
                 c->path, sc->line, i, sc->name, sc->plugin);
    } else if (timed_out) {
        snprintf(err, errcap,
                 "%s:%d: stages[%zu] '%s': %s init() did not return "
                 "within its init_timeout of %.0f ms; the reload is "
                 "refused and its thread left running (see "
                 "docs/RELOAD.md): fix the plugin, check it with "
                 "manifold -t, restart the gateway to end the thread",
                 c->path, sc->line, i, sc->name, sc->plugin,
                 sc->init_timeout_ms);
    }
    if (timed_out) {
        mf_plugin_pin(cs->dso);
        cs->dso = NULL; /* its code stays mapped for the stuck thread */
        /* and the config sections it may have been handed
         * (api->config_section, borrowed) stay alive for it: the refused
         * config is freed, they are not */
        keep_for_stuck_init(c->sections);
        goto fail;
    }
    if (rc != MF_OK) {
        snprintf(err, errcap,
                 "%s:%d: stages[%zu] '%s': %s init() refused its "
                 "config (see the log above)",
                 c->path, sc->line, i, sc->name, sc->plugin);
        cs->desc = NULL; /* no fini for a refused init */
        goto fail;
    }
    *hooks = c_hooks(cs->desc);
    return cs;
fail:
    c_free(cs);
    return NULL;
}

static mf_action_t
c_call(mf_pstage_t *s, mf_stage_t stage, mf_req_t *r, void **ctx, mf_str_t data,
       int last)
{
    const c_stage_t *cs = s->impl;
    const mf_plugin_t *d = cs->desc;

    switch (stage) {
    case MF_STAGE_REQUEST:
        return d->on_request(r, cs->state, ctx);
    case MF_STAGE_ROUTE:
        return d->on_route(r, cs->state, ctx);
    case MF_STAGE_UPSTREAM_REQUEST:
        return d->on_upstream_request(r, cs->state, ctx);
    case MF_STAGE_UPSTREAM_RESPONSE:
        return d->on_upstream_response(r, cs->state, ctx);
    case MF_STAGE_RESPONSE_HEADERS:
        return d->on_response_headers(r, cs->state, ctx);
    case MF_STAGE_RESPONSE_BODY:
        return d->on_response_body(r, cs->state, ctx, data, last);
    case MF_STAGE_LOG:
        d->on_log(r, cs->state, ctx);
        return MF_CONTINUE;
    case MF_STAGE_DONE:
        d->on_done(r, cs->state, ctx);
        return MF_CONTINUE;
    default:
        return MF_FAIL;
    }
}

static mf_action_t
c_serve(mf_pstage_t *s, const mf_epath_t *ep, mf_req_t *r, void **ctx)
{
    const c_stage_t *cs = s->impl;

    MF_UNUSED(ctx);
    return ep->fn != NULL ? ep->fn(r, cs->state, ep->arg) : MF_FAIL;
}

static const char *
c_version(const void *impl)
{
    const c_stage_t *cs = impl;

    return cs->desc && cs->desc->version ? cs->desc->version : "";
}

const mf_stage_runtime_t mf_stage_runtime_c = {
    .name = "c",
    .load = c_load,
    .call = c_call,
    .version = c_version,
    .free = c_free,
    .serve = c_serve,
};
