/*
 * The endpoint table (endpoint.h): the built-in paths, the paths a stage
 * adds while it loads, and each generation's table joining them. A
 * lookup walks the table (a few dozen entries at most): an exact path
 * wins, then the longest prefix; among the entries for that path, the
 * one for the method.
 */
#include "pipeline/endpoint.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "core/core.h"

static mf_epath_t *builtins;
static size_t nbuiltins;

static pthread_mutex_t collect_lock = PTHREAD_MUTEX_INITIALIZER;
static int collecting;
static mf_epath_t *collected;
static size_t ncollected;

static void
epath_copy(mf_epath_t *to, const mf_epath_t *from)
{
    *to = *from;
    to->method = from->method ? mf_xstrdup(from->method) : NULL;
    to->path = mf_xstrdup(from->path);
    to->path_len = strlen(to->path);
}

void
mf_endpoints_set_builtins(const mf_epath_t *b, size_t n)
{
    size_t i;

    mf_endpoints_free(builtins, nbuiltins);
    builtins = mf_xcalloc(n ? n : 1, sizeof(*builtins));
    for (i = 0; i < n; i++) {
        epath_copy(&builtins[i], &b[i]);
    }
    nbuiltins = n;
}

void
mf_endpoints_free(mf_epath_t *e, size_t n)
{
    size_t i;

    for (i = 0; e != NULL && i < n; i++) {
        free((char *)e[i].method);
        free((char *)e[i].path);
    }
    free(e);
}

void
mf_endpoints_collect_begin(void)
{
    pthread_mutex_lock(&collect_lock);
    mf_endpoints_free(collected, ncollected);
    collected = NULL;
    ncollected = 0;
    collecting = 1;
    pthread_mutex_unlock(&collect_lock);
}

mf_epath_t *
mf_endpoints_collect_end(size_t *n)
{
    mf_epath_t *e;

    pthread_mutex_lock(&collect_lock);
    e = collected;
    *n = ncollected;
    collected = NULL;
    ncollected = 0;
    collecting = 0;
    pthread_mutex_unlock(&collect_lock);
    return e;
}

/* A path the table can hold: '/' first, no query, no space or control,
 * no "//" or "/../" tricks. */
static int
valid_path(const char *p)
{
    size_t i;

    if (p == NULL || p[0] != '/' || strlen(p) > 256 ||
        strstr(p, "//") != NULL || strstr(p, "/..") != NULL) {
        return 0;
    }
    for (i = 0; p[i] != '\0'; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#') {
            return 0;
        }
    }
    return 1;
}

static int
valid_method(const char *m)
{
    size_t i;

    if (m == NULL) {
        return 1;
    }
    for (i = 0; m[i] != '\0'; i++) {
        if (m[i] < 'A' || m[i] > 'Z' || i >= 16) {
            return 0;
        }
    }
    return 1;
}

void
mf_endpoint_describe(const mf_epath_t *e, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s %s%s (%s listener)", e->method ? e->method : "*",
             e->path, e->prefix ? "/..." : "",
             e->listener == MF_LISTENER_STATUS ? "status" : "client");
}

/* Whether a and b would serve the same requests. */
static int
overlap(const mf_epath_t *a, const mf_epath_t *b)
{
    int same_path;

    if (a->listener != b->listener || (a->method != NULL && b->method != NULL &&
                                       strcmp(a->method, b->method) != 0)) {
        return 0;
    }
    if (a->claims != NULL || b->claims != NULL) {
        const mf_epath_t *c = a->claims != NULL ? a : b;
        const mf_epath_t *o = c == a ? b : a;

        return o->claims == NULL && c->claims(mf_str_from(o->path));
    }
    same_path = a->prefix == b->prefix && strcmp(a->path, b->path) == 0;
    return same_path;
}

int
mf_endpoints_collect_add(const mf_endpoint_def_t *def, int handle, char *err,
                         size_t errcap)
{
    mf_epath_t e;
    char what[320];
    size_t i;
    int rc = MF_OK;

    if (def == NULL || def->size < sizeof(mf_endpoint_def_t) ||
        (def->listener != MF_LISTENER_CLIENT &&
         def->listener != MF_LISTENER_STATUS)) {
        snprintf(err, errcap,
                 "add_endpoint: a definition needs its size "
                 "and a listener (client or status)");
        return MF_ERR;
    }
    if (!valid_path(def->path)) {
        snprintf(err, errcap,
                 "add_endpoint: path '%s' must start with '/' and hold no "
                 "query, space, '//' or '..'",
                 def->path ? def->path : "");
        return MF_ERR;
    }
    if (!valid_method(def->method && def->method[0] ? def->method : NULL)) {
        snprintf(err, errcap,
                 "add_endpoint: method '%s' is not a method "
                 "name such as GET or POST",
                 def->method);
        return MF_ERR;
    }
    memset(&e, 0, sizeof(e));
    e.listener = def->listener;
    e.method = def->method && def->method[0] ? def->method : NULL;
    e.path = def->path;
    e.path_len = strlen(def->path);
    e.prefix = def->prefix != 0;
    e.fn = def->handler;
    e.arg = def->arg;
    e.handle = handle;
    if (e.prefix && e.path_len > 1 && e.path[e.path_len - 1] == '/') {
        snprintf(err, errcap,
                 "add_endpoint: prefix path '%s' must not end in '/'", e.path);
        return MF_ERR;
    }
    mf_endpoint_describe(&e, what, sizeof(what));
    pthread_mutex_lock(&collect_lock);
    if (!collecting) {
        snprintf(err, errcap,
                 "add_endpoint %s: only while the stage loads (init, or a "
                 "Lua script's top level)",
                 what);
        rc = MF_ERR;
    }
    for (i = 0; rc == MF_OK && i < nbuiltins; i++) {
        if (overlap(&builtins[i], &e)) {
            snprintf(err, errcap, "add_endpoint %s: the gateway serves it",
                     what);
            rc = MF_ERR;
        }
    }
    for (i = 0; rc == MF_OK && i < ncollected; i++) {
        if (overlap(&collected[i], &e)) {
            snprintf(err, errcap, "add_endpoint %s: added twice", what);
            rc = MF_ERR;
        }
    }
    if (rc == MF_OK) {
        collected =
            mf_xrealloc(collected, (ncollected + 1) * sizeof(*collected));
        epath_copy(&collected[ncollected++], &e);
    }
    pthread_mutex_unlock(&collect_lock);
    return rc;
}

int
mf_endpoints_build(mf_gen_t *g, char *err, size_t errcap)
{
    size_t n = nbuiltins, i, j, k = 0;
    char a[320];

    for (i = 0; i < g->nstages; i++) {
        n += g->stages[i]->nepaths;
    }
    g->epaths = mf_xcalloc(n ? n : 1, sizeof(*g->epaths));
    for (i = 0; i < nbuiltins; i++) {
        g->epaths[k++] = &builtins[i];
    }
    for (i = 0; i < g->nstages; i++) {
        mf_pstage_t *s = g->stages[i];

        for (j = 0; j < s->nepaths; j++) {
            size_t m;

            for (m = 0; m < k; m++) {
                if (overlap(g->epaths[m], &s->epaths[j])) {
                    mf_endpoint_describe(&s->epaths[j], a, sizeof(a));
                    snprintf(err, errcap,
                             "%s: stage '%s' adds %s, which %s%s%s "
                             "serves already; remove one of them",
                             g->config->path, s->name, a,
                             g->epaths[m]->stage ? "stage '" : "the gateway",
                             g->epaths[m]->stage ? g->epaths[m]->stage->name
                                                 : "",
                             g->epaths[m]->stage ? "'" : "");
                    return MF_ERR;
                }
            }
            g->epaths[k++] = &s->epaths[j];
        }
    }
    g->nepaths = k;
    return MF_OK;
}

/* How well e serves path: 0 not at all, else the higher the better (an
 * exact entry above every prefix, a longer prefix above a shorter). */
static size_t
match(const mf_epath_t *e, mf_str_t path)
{
    if (e->claims != NULL) {
        return e->claims(path) ? (size_t)-1 : 0;
    }
    if (!e->prefix) {
        return path.len == e->path_len &&
                       memcmp(path.data, e->path, path.len) == 0
                   ? (size_t)-1
                   : 0;
    }
    if (e->path_len == 1) { /* "/": everything */
        return 1;
    }
    if (path.len < e->path_len ||
        memcmp(path.data, e->path, e->path_len) != 0 ||
        (path.len > e->path_len && path.data[e->path_len] != '/')) {
        return 0;
    }
    return e->path_len + 1;
}

const mf_epath_t *
mf_endpoints_find(const mf_gen_t *g, mf_listener_t l, mf_str_t method,
                  mf_str_t path, char *allow, size_t allowcap)
{
    size_t i, best = 0, used = 0;
    const char *q = memchr(path.data, '?', path.len);

    if (q != NULL) {
        path.len = (size_t)(q - path.data);
    }
    allow[0] = '\0';
    for (i = 0; i < g->nepaths; i++) {
        size_t m;

        if (g->epaths[i]->listener != l) {
            continue;
        }
        m = match(g->epaths[i], path);
        if (m > best) {
            best = m;
        }
    }
    if (best == 0) {
        return NULL;
    }
    for (i = 0; i < g->nepaths; i++) {
        const mf_epath_t *e = g->epaths[i];

        if (e->listener != l || match(e, path) != best) {
            continue;
        }
        if (e->method == NULL ||
            (method.len == strlen(e->method) &&
             memcmp(method.data, e->method, method.len) == 0)) {
            return e;
        }
        if (used < allowcap) {
            used += (size_t)snprintf(allow + used, allowcap - used, "%s%s",
                                     used ? ", " : "", e->method);
        }
    }
    return NULL;
}
