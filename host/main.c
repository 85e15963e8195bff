/*
 * manifold: the gateway. Loads the config into a generation, starts the
 * workers and serves until SIGTERM/SIGINT (graceful drain). The main
 * thread owns reloads: SIGHUP, the file watcher and the admin socket each
 * build a new generation, and the old one keeps serving on error.
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "api/api.h"
#include "control/admin.h"
#include "routing/balancer.h"
#include "cli/init.h"
#include "routing/keypool.h"
#include "routing/modellist.h"
#include "lua/lua_stage.h"
#include "pipeline/plugin.h"
#include "proto/respdb.h"
#include "request/request.h"
#include "svc/svc.h"
#include "control/reload.h"
#include "core/metrics.h"
#include "core/rundir.h"
#include "pipeline/generation.h"
#include "http/server.h"
#include "core/shdict.h"
#include "control/watch.h"

#define MF_VERSION "0.1.0"

typedef struct {
    const char *config_path;
    char *plugin_dir;       /* the built-in one */
    const char *first_dirs; /* -p */
    const char *listen;
    int workers;
    int test_only;
    struct event_base *base;
    mf_server_t server;
    mf_reloader_t rl;
    mf_watch_t *watch;
    mf_admin_t *admin;
    mf_admin_ctx_t admin_ctx;
} mf_main_t;

static void
usage(FILE *f)
{
    fprintf(f, "usage: manifold [-c FILE] [--listen HOST:PORT] [--workers N] "
               "[-p PLUGIN_DIR] [-t]\n"
               "       manifold init [-o FILE] [--provider NAME --key-env VAR "
               "...] (see manifold init --help)\n"
               "  -c, --config FILE    config file (configs/manifold.yaml)\n"
               "  -t, --test           validate the config and exit\n"
               "  -l, --listen H:P     override listen\n"
               "  -w, --workers N      override workers\n"
               "  -p, --plugin-dir DIR provider and stage plugins, searched "
               "before the config's\n"
               "                       plugin_dir and the built-in "
               "directory (DIR:DIR... for several)\n"
               "  -v, --version\n");
}

#ifndef MF_PLUGIN_DIR
#define MF_PLUGIN_DIR "plugins"
#endif

/* The built-in plugin directory: plugins/ next to the binary when there
 * is one (a build tree), else the one of the install prefix. */
static char *
default_plugin_dir(void)
{
    char exe[PATH_MAX], out[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    struct stat st;

    if (n <= 0) {
        return mf_xstrdup(MF_PLUGIN_DIR);
    }
    exe[n] = '\0';
    snprintf(out, sizeof(out), "%s/plugins", dirname(exe));
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
        return mf_xstrdup(out);
    }
#ifdef MF_PLUGIN_DIR_REL
    snprintf(out, sizeof(out), "%s/%s", exe, MF_PLUGIN_DIR_REL);
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
        return mf_xstrdup(out); /* an install moved as a whole */
    }
#endif
    return mf_xstrdup(MF_PLUGIN_DIR);
}

static void on_watch(void *arg);

/* Watches the config, every stage's files and the provider plugins, with
 * the current generation's reload settings: after each reload, so that
 * `reload:` changes take effect like the rest of the config. */
static void
rewatch(void *arg)
{
    mf_main_t *m = arg;
    mf_gen_t *g = mf_gen_acquire();
    const char **files;
    size_t n = 1, i, j;

    if (g == NULL) {
        return;
    }
    if (!g->config->watch) {
        if (m->watch != NULL) { /* kept: this may run inside its callback */
            mf_watch_set(m->watch, NULL, 0, NULL, 0);
        }
        mf_gen_release(g);
        return;
    }
    if (m->watch == NULL) {
        m->watch = mf_watch_new(m->base, g->config->watch_debounce_ms,
                                g->config->watch_write_wait_ms, on_watch, m);
        m->admin_ctx.watch = m->watch;
        if (m->watch == NULL) {
            mf_gen_release(g);
            return;
        }
    }
    mf_watch_timing(m->watch, g->config->watch_debounce_ms,
                    g->config->watch_write_wait_ms);
    for (i = 0; i < g->nstages; i++) {
        n += g->stages[i]->nfiles;
    }
    n += m->rl.nnamed;
    files = mf_xcalloc(n, sizeof(char *));
    n = 0;
    files[n++] = m->config_path;
    for (i = 0; i < g->nstages; i++) {
        for (j = 0; j < g->stages[i]->nfiles; j++) {
            files[n++] = g->stages[i]->files[j].path;
        }
    }
    for (i = 0; i < m->rl.nnamed; i++) {
        files[n++] = m->rl.named[i];
    }
    mf_watch_set(m->watch, files, n,
                 (const char *const *)g->config->plugin_dirs,
                 g->config->nplugin_dirs);
    free(files);
    mf_gen_release(g);
}

static void
on_watch(void *arg)
{
    mf_main_t *m = arg;

    mf_reload(&m->rl, "file watcher", NULL, NULL, 0);
    rewatch(m);
}

static void
on_stop(evutil_socket_t sig, short what, void *arg)
{
    mf_main_t *m = arg;

    MF_UNUSED(what);
    mf_log_info("signal %d: draining requests in flight and stopping",
                (int)sig);
    event_base_loopexit(m->base, NULL);
}

/* libevent's handlers of SIGTERM and SIGINT, which ours call after
 * raising the stop flag: a reload busy on the main thread (a stage's init
 * that loops) sees the flag and gives way, then the loop sees the signal. */
static void (*evsig_term)(int);
static void (*evsig_int)(int);

static void
on_stop_signal(int sig)
{
    void (*prev)(int) = sig == SIGTERM ? evsig_term : evsig_int;

    mf_stop_request();
    if (prev != NULL && prev != SIG_IGN && prev != SIG_DFL) {
        prev(sig);
    }
}

static void
chain_stop_signal(int sig, void (**prev)(int))
{
    struct sigaction now, sa;

    if (sigaction(sig, NULL, &now) != 0 || (now.sa_flags & SA_SIGINFO)) {
        return; /* left as it is: the loop still sees the signal */
    }
    *prev = now.sa_handler;
    sa = now;
    sa.sa_handler = on_stop_signal;
    sigaction(sig, &sa, NULL);
}

static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
    mf_main_t *m = arg;

    MF_UNUSED(sig);
    MF_UNUSED(what);
    mf_reload(&m->rl, "SIGHUP", NULL, NULL, 0);
    rewatch(m);
}

/* Says when the gateway is reachable from other machines, and warns when
 * no stage could refuse their requests: once, at start (a reload that
 * drops the auth stage is not warned about). */
static void
warn_listen(const mf_server_t *s, mf_gen_t *g)
{
    size_t i;

    if (s->loopback) {
        return;
    }
    if (strcmp(s->host, "0.0.0.0") == 0 || strcmp(s->host, "::") == 0) {
        mf_log_warn("listening on every network interface (%s:%d): a listen "
                    "address without a host binds all of them; write "
                    "127.0.0.1:%d to serve this machine only",
                    s->host, s->port, s->port);
    }
    for (i = 0; i < g->nstages; i++) {
        if (g->stages[i]->hooks & MF_HOOK(MF_STAGE_REQUEST)) {
            return;
        }
    }
    mf_log_warn("the listener on %s:%d is not a loopback one and has no "
                "auth stage (no stage checks requests in on_request): anyone "
                "who reaches the port spends every provider key; add the "
                "key-auth stage (see docs/GOVERNANCE.md) or listen on "
                "127.0.0.1",
                s->host, s->port);
}

/* The key pool's tick on worker 0: probes, and the Redis sync with the
 * current generation's `redis:` settings. */
static void
keypool_tick(mf_worker_t *w)
{
    mf_gen_t *g = mf_gen_acquire();

    mf_keypool_tick(w, g != NULL ? g->config->redis : NULL);
    mf_modellist_tick(w, g); /* upstream_models: the lists due */
    mf_gen_release(g);
}

static const mf_worker_hooks_t keypool_hooks = {.tick = keypool_tick};

/* Each worker reads the current generation without the lock. */
static void
gen_thread_start(mf_worker_t *w)
{
    mf_gen_reader_start();
    mf_metrics_thread_shard(w->id); /* its own metrics shard */
}

static void
gen_thread_stop(mf_worker_t *w)
{
    MF_UNUSED(w);
    mf_gen_reader_stop();
    mf_metrics_thread_shard(-1);
}

static const mf_worker_hooks_t gen_hooks = {.thread_start = gen_thread_start,
                                            .thread_stop = gen_thread_stop};
static const mf_keypool_redis_t keypool_redis = {.command = mf_svc_redis_raw};

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"listen", required_argument, NULL, 'l'},
        {"workers", required_argument, NULL, 'w'},
        {"plugin-dir", required_argument, NULL, 'p'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    mf_main_t m;
    mf_gen_t *g;
    struct event *ev_term, *ev_int, *ev_hup;
    char err[4096];
    int c, rc = 0, from_init = 0;
    double drain;

    memset(&m, 0, sizeof(m));
    m.config_path = "configs/manifold.yaml";
    if (argc > 1 && strcmp(argv[1], "init") == 0) {
        rc = mf_init_main(argc - 1, argv + 1, &m.config_path);
        if (rc >= 0) {
            return rc;
        }
        rc = 0;
        m.test_only = 1; /* the file written must validate */
        from_init = 1;
        argc = 1;
        optind = 0; /* getopt starts over (glibc) */
    }
    while ((c = getopt_long(argc, argv, "c:tl:w:p:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            m.config_path = optarg;
            break;
        case 't':
            m.test_only = 1;
            break;
        case 'l':
            m.listen = optarg;
            break;
        case 'w':
            m.workers = atoi(optarg);
            if (m.workers < 1 || m.workers > 256) {
                fprintf(stderr, "--workers %s: must be 1..256\n", optarg);
                return 2;
            }
            break;
        case 'p':
            m.first_dirs = optarg;
            break;
        case 'v':
            printf("manifold %s (plugin ABI %d.%d)\n", MF_VERSION, MF_ABI_MAJOR,
                   MF_ABI_MINOR);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (m.first_dirs != NULL) {
        char dirs[PATH_MAX];
        char *save = NULL, *d;
        struct stat st;

        snprintf(dirs, sizeof(dirs), "%s", m.first_dirs);
        for (d = strtok_r(dirs, ":", &save); d != NULL;
             d = strtok_r(NULL, ":", &save)) {
            if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode)) {
                fprintf(stderr, "--plugin-dir %s: not a directory\n", d);
                return 2;
            }
        }
    }
    m.plugin_dir = default_plugin_dir();
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    mf_shdict_init();
    /* the layers meet here: the host API for plugins, the Lua runtime for
     * `lua:` stages, the key pool's hold on providers' keys */
    mf_plugin_set_api(&mf_api);
    mf_lua_stage_init();
    mf_req_endpoints_init();
    mf_gen_set_provider_hooks(&mf_keypool_gen_hooks);

    m.rl.config_path = m.config_path;
    m.rl.plugin_dir = m.plugin_dir;
    m.rl.first_dirs = m.first_dirs;
    m.rl.listen = m.listen;
    m.rl.workers = m.workers;
    m.rl.nworkers = m.test_only ? 1 : 0;
    g = mf_reload_build(&m.rl, NULL, err, sizeof(err));
    if (g == NULL) {
        fprintf(stderr, "%s\n", err);
        rc = 1;
        goto out;
    }
    mf_log_set_level(g->config->log_level);
    if (m.test_only && g->config->store_db != NULL &&
        mf_respdb_check(g->config->store_db, err, sizeof(err)) != MF_OK) {
        fprintf(stderr, "%s: %s\n", m.config_path, err);
        mf_gen_release(g);
        rc = 1;
        goto out;
    }
    if (m.test_only) {
        printf("%s: configuration OK (%zu providers enabled, %zu stages)\n",
               m.config_path, g->nproviders, g->nstages);
        if (from_init) {
            mf_init_next_steps(g->config, argv[0]);
        }
        mf_gen_release(g);
        goto out;
    }
    mf_gen_set_current(g);
    m.server.reuse_port = g->config->reuse_port;
    if (g->config->status_on) {
        m.server.status_host = mf_xstrdup(g->config->status_host);
        m.server.status_port = g->config->status_port;
    }
    mf_log_start();
    /* the stored Responses answers of the last run, before any worker
     * can store or look one up */
    if (mf_respdb_open(g->config->store_db, g->config->store_max_entries,
                       g->config->store_max_bytes, err, sizeof(err)) != MF_OK) {
        mf_log_error("%s: %s", m.config_path, err);
        rc = 1;
        mf_gen_set_current(NULL);
        goto out;
    }
    mf_server_set_handlers(&mf_req_conn_handlers);
    mf_keypool_set_redis(&keypool_redis);
    mf_server_add_hooks(&keypool_hooks);
    mf_server_add_hooks(&gen_hooks);
    mf_server_add_hooks(&mf_svc_redis_hooks);
    if (mf_server_start(&m.server, g->config->listen_host,
                        g->config->listen_port, g->nworkers) != MF_OK) {
        rc = 1;
        mf_gen_set_current(NULL);
        goto out;
    }
    warn_listen(&m.server, g);
    if (g->config->status_on) {
        mf_log_info("status listener on %s:%d%s", g->config->status_host,
                    m.server.status_port,
                    g->config->status_token ? " (bearer token asked)" : "");
        if (!m.server.status_loopback && g->config->status_token == NULL) {
            mf_log_warn("the status listener on %s:%d is not a loopback one "
                        "and asks for no token: anyone who reaches it reads "
                        "the metrics; set status.token",
                        g->config->status_host, m.server.status_port);
        }
    }
    m.rl.nworkers = m.server.nworkers;
    if (g->config->admin_socket != NULL) {
        m.rl.admin_socket = mf_xstrdup(g->config->admin_socket);
    }
    m.base = event_base_new();
    rewatch(&m); /* makes the watcher when reload.watch is on */
    m.admin_ctx.rl = &m.rl;
    m.admin_ctx.server = &m.server;
    m.admin_ctx.started_at = mf_wall_time();
    m.admin_ctx.after_reload = rewatch;
    m.admin_ctx.arg = &m;
    if (m.rl.admin_socket != NULL) {
        char sock[4096];

        m.admin = NULL;
        if (mf_rundir_socket_path(m.rl.admin_socket, sock, sizeof(sock), 1, err,
                                  sizeof(err)) != MF_OK) {
            mf_log_error("admin: %s", err);
        } else {
            m.admin = mf_admin_start(m.base, sock, &m.admin_ctx);
            /* it answers (in part) while a reload keeps this thread */
            m.rl.busy = mf_admin_busy;
            m.rl.busy_arg = m.admin;
        }
        if (m.admin == NULL) {
            rc = 1;
            mf_server_stop(&m.server, 0);
            mf_gen_set_current(NULL);
            mf_watch_free(m.watch);
            event_base_free(m.base);
            goto out;
        }
    }
    ev_term = evsignal_new(m.base, SIGTERM, on_stop, &m);
    ev_int = evsignal_new(m.base, SIGINT, on_stop, &m);
    ev_hup = evsignal_new(m.base, SIGHUP, on_hup, &m);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    event_add(ev_hup, NULL);
    chain_stop_signal(SIGTERM, &evsig_term);
    chain_stop_signal(SIGINT, &evsig_int);
    /* ready: signals and the admin socket are served from here on */
    mf_log_info("manifold %s listening on %s:%d with %d workers, %zu "
                "providers, %zu stages",
                MF_VERSION, g->config->listen_host, m.server.port,
                m.server.nworkers, g->nproviders, g->nstages);
    event_base_dispatch(m.base);
    m.rl.busy = NULL;
    mf_admin_stop(m.admin); /* no reload while draining */
    mf_watch_free(m.watch);

    g = mf_gen_acquire();
    drain = g ? g->config->limits.drain_timeout_ms : 30000;
    mf_gen_release(g);
    mf_server_stop(&m.server, drain);
    mf_gen_set_current(NULL);
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_hup);
    event_base_free(m.base);
    mf_log_info("stopped");
out:
    mf_respdb_close(); /* after the workers: every answer is written */
    mf_log_stop(2000);
    mf_reloader_free(&m.rl);
    mf_keypool_free();
    mf_modellist_free();
    mf_balancer_free();
    mf_shdict_free();
    mf_metrics_free();
    free(m.plugin_dir);
    libevent_global_shutdown();
    return rc;
}
