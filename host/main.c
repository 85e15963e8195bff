/*
 * manifold: the gateway. Loads the config into a generation, starts the
 * workers and serves until SIGTERM/SIGINT (graceful drain); SIGHUP reloads
 * the config into a new generation, keeping the old one serving on error.
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "runtime.h"
#include "server.h"
#include "shdict.h"

#define MF_VERSION "0.1.0"

typedef struct {
    const char *config_path;
    char *plugin_dir;
    const char *listen;
    int workers;
    int test_only;
    struct event_base *base;
    mf_server_t server;
} mf_main_t;

static void
usage(FILE *f)
{
    fprintf(f, "usage: manifold [-c FILE] [--listen HOST:PORT] [--workers N] "
               "[-p PLUGIN_DIR] [-t]\n"
               "  -c, --config FILE    config file (configs/manifold.yaml)\n"
               "  -t, --test           validate the config and exit\n"
               "  -l, --listen H:P     override listen\n"
               "  -w, --workers N      override workers\n"
               "  -p, --plugin-dir DIR provider and stage plugins "
               "(next to the binary: plugins/)\n"
               "  -v, --version\n");
}

static char *
default_plugin_dir(void)
{
    char exe[PATH_MAX], out[PATH_MAX + 16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    if (n <= 0) {
        return mf_xstrdup("plugins");
    }
    exe[n] = '\0';
    snprintf(out, sizeof(out), "%s/plugins", dirname(exe));
    return mf_xstrdup(out);
}

static mf_gen_t *
load_generation(mf_main_t *m, int nworkers)
{
    char *errors = NULL;
    char err[2048];
    mf_config_t *c = mf_config_load(m->config_path, m->plugin_dir, &errors);
    mf_gen_t *g;

    if (c == NULL) {
        fprintf(stderr, "%s", errors);
        if (errors[0] && errors[strlen(errors) - 1] != '\n') {
            fputc('\n', stderr);
        }
        free(errors);
        return NULL;
    }
    if (m->listen != NULL) {
        free(c->listen_host);
        c->listen_host = NULL;
        if (mf_config_parse_listen(m->listen, &c->listen_host,
                                   &c->listen_port) != MF_OK) {
            fprintf(stderr, "--listen %s: not host:port\n", m->listen);
            c->listen_host = mf_xstrdup("127.0.0.1");
            mf_config_free(c);
            return NULL;
        }
    }
    if (m->workers > 0) {
        c->workers = m->workers;
    }
    mf_log_set_level(c->log_level);
    if (nworkers == 0) {
        nworkers =
            c->workers > 0 ? c->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (nworkers < 1) {
            nworkers = 1;
        }
    }
    g = mf_gen_build(c, nworkers, err, sizeof(err));
    if (g == NULL) {
        fprintf(stderr, "%s\n", err);
        mf_config_free(c);
        return NULL;
    }
    return g;
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

static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
    mf_main_t *m = arg;
    mf_gen_t *g;

    MF_UNUSED(sig);
    MF_UNUSED(what);
    g = load_generation(m, m->server.nworkers);
    if (g == NULL) {
        mf_log_error("reload refused; generation kept serving");
        return;
    }
    mf_gen_set_current(g);
    mf_log_info("reloaded %s: generation %u", m->config_path, g->id);
}

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
    int c, rc = 0;
    double drain;

    memset(&m, 0, sizeof(m));
    m.config_path = "configs/manifold.yaml";
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
            m.plugin_dir = mf_xstrdup(optarg);
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
    if (m.plugin_dir == NULL) {
        m.plugin_dir = default_plugin_dir();
    }
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    mf_shdict_init();

    g = load_generation(&m, m.test_only ? 1 : 0);
    if (g == NULL) {
        rc = 1;
        goto out;
    }
    if (m.test_only) {
        printf("%s: configuration OK (%zu providers enabled, %zu stages)\n",
               m.config_path, g->nproviders, g->nstages);
        mf_gen_release(g);
        goto out;
    }
    mf_gen_set_current(g);
    if (mf_server_start(&m.server, g->config->listen_host,
                        g->config->listen_port, g->nworkers) != MF_OK) {
        rc = 1;
        mf_gen_set_current(NULL);
        goto out;
    }
    mf_log_info("manifold %s listening on %s:%d with %d workers, %zu "
                "providers, %zu stages",
                MF_VERSION, g->config->listen_host, m.server.port,
                m.server.nworkers, g->nproviders, g->nstages);
    m.base = event_base_new();
    ev_term = evsignal_new(m.base, SIGTERM, on_stop, &m);
    ev_int = evsignal_new(m.base, SIGINT, on_stop, &m);
    ev_hup = evsignal_new(m.base, SIGHUP, on_hup, &m);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    event_add(ev_hup, NULL);
    event_base_dispatch(m.base);

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
    mf_shdict_free();
    free(m.plugin_dir);
    libevent_global_shutdown();
    return rc;
}
