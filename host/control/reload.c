/*
 * Reloads: config file -> validated config -> generation (sharing the
 * stages that did not change) -> current. A failure changes nothing.
 */
#include "control/reload.h"
#include "pipeline/generation.h"
#include "core/metrics.h"
#include "proto/respdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
remember_named(mf_reloader_t *rl, const mf_config_t *c)
{
    size_t i;

    for (i = 0; i < rl->nnamed; i++) {
        free(rl->named[i]);
    }
    free(rl->named);
    rl->named = mf_xcalloc(c->nstages ? c->nstages : 1, sizeof(char *));
    rl->nnamed = 0;
    for (i = 0; i < c->nstages; i++) {
        const char *f =
            c->stages[i].plugin ? c->stages[i].plugin : c->stages[i].lua;

        if (f != NULL) {
            rl->named[rl->nnamed++] = mf_xstrdup(f);
        }
    }
}

mf_gen_t *
mf_reload_build(mf_reloader_t *rl, const char *force, char *err, size_t errcap)
{
    char *errors = NULL;
    mf_config_t *c = mf_config_load_dirs(rl->config_path, rl->first_dirs,
                                         rl->plugin_dir, &errors);
    mf_gen_t *g, *prev;
    int nworkers = rl->nworkers;

    if (errors != NULL) {
        size_t n = strlen(errors);
        char more[4096];

        while (n > 0 && errors[n - 1] == '\n') {
            errors[--n] = '\0';
        }
        /* what the providers' plugins would say, in the same report */
        if (c != NULL &&
            mf_gen_check_providers(c, more, sizeof(more)) != MF_OK) {
            snprintf(err, errcap, "%s\n%s", errors, more);
        } else {
            snprintf(err, errcap, "%s", errors);
        }
        free(errors);
        mf_config_free(c);
        return NULL;
    }
    /* the store's file is opened once, at start: a reload that names
     * another is refused rather than leave answers in the old one */
    if (mf_respdb_started() &&
        ((c->store_db == NULL) != (mf_respdb_path() == NULL) ||
         (c->store_db != NULL && strcmp(c->store_db, mf_respdb_path())))) {
        snprintf(err, errcap,
                 "%s: response_store.db: changed from %s to %s; the file is "
                 "opened at start and kept: restart the gateway to change "
                 "it, or put the old value back",
                 rl->config_path,
                 mf_respdb_path() ? mf_respdb_path() : "none (memory only)",
                 c->store_db ? c->store_db : "none (memory only)");
        mf_config_free(c);
        return NULL;
    }
    remember_named(rl, c);
    if (rl->listen != NULL) {
        char *host = NULL;
        int port;

        if (mf_config_parse_listen(rl->listen, &host, &port) != MF_OK) {
            snprintf(err, errcap, "--listen %s: not host:port", rl->listen);
            free(host);
            mf_config_free(c);
            return NULL;
        }
        free(c->listen_host);
        c->listen_host = host;
        c->listen_port = port;
    }
    if (rl->workers > 0) {
        c->workers = rl->workers;
    }
    if (nworkers == 0) {
        nworkers =
            c->workers > 0 ? c->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (nworkers < 1) {
            nworkers = 1;
        }
    }
    /* metrics the stages declare while they load take this cap */
    mf_metrics_set_default_max_series(c->status_max_series);
    prev = mf_gen_acquire();
    g = mf_gen_build(c, nworkers, prev, force, err, errcap);
    mf_gen_release(prev);
    if (g == NULL) {
        mf_config_free(c);
        return NULL;
    }
    mf_config_warn_disabled(c);
    return g;
}

/* What a running gateway cannot take from a reload. */
static void
warn_static(mf_reloader_t *rl, const mf_config_t *now, const mf_config_t *was)
{
    if (was == NULL) {
        return;
    }
    if (now->listen_port != was->listen_port ||
        strcmp(now->listen_host, was->listen_host) != 0) {
        mf_log_warn("reload: listen changed to %s:%d; restart to apply",
                    now->listen_host, now->listen_port);
    }
    if (now->workers != was->workers) {
        mf_log_warn("reload: workers changed to %s%.0d, %d workers go on "
                    "serving; restart to apply",
                    now->workers ? "" : "auto", now->workers, rl->nworkers);
    }
    if (now->status_on != was->status_on ||
        (now->status_on && (now->status_port != was->status_port ||
                            strcmp(now->status_host, was->status_host) != 0))) {
        mf_log_warn("reload: status.listen changed; restart to apply");
    }
    if (now->reuse_port != was->reuse_port) {
        mf_log_warn("reload: reuse_port changed; restart to apply");
    }
    if ((now->admin_socket == NULL) != (rl->admin_socket == NULL) ||
        (now->admin_socket && strcmp(now->admin_socket, rl->admin_socket))) {
        mf_log_warn("reload: admin.socket changed; restart to apply");
    }
}

unsigned
mf_reload(mf_reloader_t *rl, const char *trigger, const char *force, char *err,
          size_t errcap)
{
    char buf[4096];
    mf_gen_t *g, *was;
    double at = mf_wall_time();

    if (rl->busy != NULL) {
        rl->busy(rl->busy_arg, 1, trigger);
    }
    g = mf_reload_build(rl, force, buf, sizeof(buf));
    if (rl->busy != NULL) {
        rl->busy(rl->busy_arg, 0, trigger);
    }
    /* counted once decided: GET /stats, served while a reload's init
     * runs, shows the reload in progress apart ("reload_in_progress"),
     * and attempts, failures and last always agree */
    rl->attempts++;
    rl->last_at = at;
    snprintf(rl->last_trigger, sizeof(rl->last_trigger), "%s", trigger);
    if (g == NULL) {
        rl->failures++;
        rl->last_ok = 0;
        snprintf(rl->last_error, sizeof(rl->last_error), "%s", buf);
        mf_log_error("reload (%s) refused, the current generation keeps "
                     "serving: %s",
                     trigger, buf);
        if (err != NULL) {
            snprintf(err, errcap, "%s", buf);
        }
        return 0;
    }
    was = mf_gen_acquire();
    warn_static(rl, g->config, was ? was->config : NULL);
    mf_gen_release(was);
    mf_log_set_level(g->config->log_level);
    mf_gen_set_current(g);
    rl->last_ok = 1;
    rl->last_error[0] = '\0';
    mf_log_info("reload (%s%s%s): generation %u serving", trigger,
                force ? ", stage " : "", force ? force : "", g->id);
    return g->id;
}

void
mf_reloader_free(mf_reloader_t *rl)
{
    size_t i;

    for (i = 0; i < rl->nnamed; i++) {
        free(rl->named[i]);
    }
    free(rl->named);
    free(rl->admin_socket);
}
