/*
 * Upstream model lists (modellist.h). One entry per provider name, made
 * on first sight and kept for the process: the names of its last fetched
 * list (filtered by its models), when the next fetch is due, whether one
 * is under way. A fetch copies what it needs (URL, header, key, globs):
 * a reload may free the generation while it runs.
 */
#include "routing/modellist.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/upstream.h"

#define LIST_MAX_BODY (4u << 20) /* a list is small; more is refused */
#define LIST_RETRY_MS 30000.0    /* after a failed fetch, at most */

typedef struct {
    char *provider;
    char *base_url; /* a list of another base_url is dropped */
    json_t *names;  /* array of strings, or NULL before a fetch */
    double next_ms; /* monotonic: when the next fetch is due */
    int fetching;
} entry_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_uint version; /* bumped by each change of a list */
static entry_t *entries;
static size_t nentries;

typedef struct {
    size_t idx; /* its entry (entries only grow) */
    mf_upcall_t *call;
    int status;
    mf_buf_t body;
    json_t *globs; /* the provider's models: names and patterns */
    double refresh_ms;
} fetch_t;

/* The entry of provider pc (made when new); the lock is held. */
static entry_t *
entry_for(const mf_provider_conf_t *pc, size_t *idx)
{
    size_t i;

    for (i = 0; i < nentries; i++) {
        if (strcmp(entries[i].provider, pc->name) == 0) {
            if (strcmp(entries[i].base_url, pc->base_url) != 0) {
                free(entries[i].base_url);
                entries[i].base_url = mf_xstrdup(pc->base_url);
                if (entries[i].names != NULL) {
                    atomic_fetch_add(&version, 1);
                }
                json_decref(entries[i].names);
                entries[i].names = NULL;
                entries[i].next_ms = 0;
            }
            *idx = i;
            return &entries[i];
        }
    }
    entries = mf_xrealloc(entries, (nentries + 1) * sizeof(*entries));
    memset(&entries[nentries], 0, sizeof(*entries));
    entries[nentries].provider = mf_xstrdup(pc->name);
    entries[nentries].base_url = mf_xstrdup(pc->base_url);
    *idx = nentries;
    return &entries[nentries++];
}

/* The model names of a list answer: OpenAI's and Anthropic's data[].id,
 * Gemini's models[].name without "models/"; those globs serve. */
static json_t *
names_of(mf_str_t body, json_t *globs)
{
    json_t *j = json_loadb(body.data, body.len, 0, NULL), *out, *e, *g;
    json_t *list = json_object_get(j, "data");
    size_t i, k;
    int gemini = 0;

    if (!json_is_array(list)) {
        list = json_object_get(j, "models");
        gemini = 1;
    }
    if (!json_is_array(list)) {
        json_decref(j);
        return NULL;
    }
    out = json_array();
    json_array_foreach(list, i, e)
    {
        const char *id =
            json_string_value(json_object_get(e, gemini ? "name" : "id"));

        if (id == NULL) {
            continue;
        }
        if (gemini && strncmp(id, "models/", 7) == 0) {
            id += 7;
        }
        json_array_foreach(globs, k, g)
        {
            if (mf_glob_match(json_string_value(g), mf_str_from(id))) {
                json_array_append_new(out, json_string(id));
                break;
            }
        }
    }
    json_decref(j);
    return out;
}

static void
fetch_done(fetch_t *f, const char *err)
{
    json_t *names = NULL;
    entry_t *e;

    if (err == NULL && f->status >= 200 && f->status < 300) {
        names =
            names_of((mf_str_t){f->body.data ? f->body.data : "", f->body.len},
                     f->globs);
    }
    pthread_mutex_lock(&lock);
    e = &entries[f->idx];
    e->fetching = 0;
    if (names != NULL) {
        if (e->names == NULL || !json_equal(e->names, names)) {
            atomic_fetch_add(&version, 1);
        }
        json_decref(e->names);
        e->names = names;
    } else {
        /* the last list stays; tried again sooner */
        e->next_ms =
            mf_now_ms() +
            (f->refresh_ms < LIST_RETRY_MS ? f->refresh_ms : LIST_RETRY_MS);
        mf_log_warn("provider '%s': its model list (upstream_models) was not "
                    "fetched: %s",
                    e->provider,
                    err ? err
                        : (f->status >= 200 && f->status < 300
                               ? "the answer is not a model list"
                               : "the upstream answered with an error"));
    }
    pthread_mutex_unlock(&lock);
    mf_buf_free(&f->body);
    json_decref(f->globs);
    free(f);
}

static void
fetch_head(void *arg, const mf_http_head_t *h)
{
    ((fetch_t *)arg)->status = h->status;
}

static void
fetch_data(void *arg, const char *data, size_t len)
{
    fetch_t *f = arg;

    if (f->body.len + len > LIST_MAX_BODY ||
        mf_buf_try_append(&f->body, data, len) != MF_OK) {
        mf_upcall_cancel(f->call);
        fetch_done(f, "the list is larger than 4 MiB");
    }
}

static void
fetch_end(void *arg)
{
    fetch_done(arg, NULL);
}

static void
fetch_error(void *arg, mf_uperr_t kind, const char *msg)
{
    MF_UNUSED(kind);
    fetch_done(arg, msg);
}

/* Starts the fetch of pc's list with key. */
static void
fetch_start(mf_worker_t *w, const mf_provider_conf_t *pc, const char *key,
            size_t idx)
{
    static const mf_upcall_cbs_t cbs = {.on_head = fetch_head,
                                        .on_data = fetch_data,
                                        .on_end = fetch_end,
                                        .on_error = fetch_error};
    fetch_t *f = mf_xcalloc(1, sizeof(*f));
    char url[2048], pathbuf[2048];
    mf_buf_t req = {0};
    mf_upcall_opts_t opts;
    mf_url_t u;
    size_t i;
    int bearer = strcasecmp(pc->list_header, "authorization") == 0;

    f->idx = idx;
    f->refresh_ms = pc->list_refresh_ms;
    f->globs = json_array();
    for (i = 0; i < pc->nmodels; i++) {
        json_array_append_new(f->globs, json_string(pc->models[i]));
    }
    snprintf(url, sizeof(url), "%s%s", pc->base_url, pc->list_path);
    if (mf_url_parse(url, strlen(url), &u, pathbuf, sizeof(pathbuf)) != MF_OK) {
        fetch_done(f, "the list URL cannot be used");
        return;
    }
    mf_buf_printf(&req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n", u.path, u.host,
                  u.port);
    if (key != NULL && key[0] != '\0') {
        mf_buf_printf(&req, "%s: %s%s\r\n", pc->list_header,
                      bearer ? "Bearer " : "", key);
    }
    if (pc->list_extra != NULL) {
        mf_buf_printf(&req, "%s\r\n", pc->list_extra);
    }
    mf_buf_printf(&req, "User-Agent: manifold\r\nAccept: application/json"
                        "\r\n\r\n");
    memset(&opts, 0, sizeof(opts));
    opts.connect_timeout_ms = 5000;
    opts.first_byte_timeout_ms = 10000;
    opts.idle_timeout_ms = 10000;
    opts.total_timeout_ms = 30000;
    opts.tls_verify = pc->tls_verify;
    f->call = mf_upstream_call(w, &u, &opts, req.data, req.len, &cbs, f);
    mf_buf_free(&req);
    if (f->call == NULL) {
        fetch_done(f, "the list fetch could not start");
        return;
    }
    mf_upcall_start(f->call);
}

void
mf_modellist_tick(mf_worker_t *w, mf_gen_t *g)
{
    double now = mf_now_ms();
    size_t i, idx;

    for (i = 0; g != NULL && i < g->nproviders; i++) {
        const mf_prov_t *p = &g->providers[i];
        const mf_provider_conf_t *pc = p->conf;
        entry_t *e;
        int due;

        if (pc->list_refresh_ms <= 0 || pc->disabled) {
            continue;
        }
        pthread_mutex_lock(&lock);
        e = entry_for(pc, &idx);
        due = !e->fetching && now >= e->next_ms;
        if (due) {
            e->fetching = 1;
            e->next_ms = now + pc->list_refresh_ms;
        }
        pthread_mutex_unlock(&lock);
        if (due) {
            fetch_start(w, pc, p->nkeys > 0 ? p->key_str[0] : NULL, idx);
        }
    }
}

json_t *
mf_modellist_get(const mf_provider_conf_t *pc)
{
    json_t *out = NULL;
    size_t i;

    if (pc->list_refresh_ms <= 0) {
        return NULL;
    }
    pthread_mutex_lock(&lock);
    for (i = 0; i < nentries; i++) {
        if (strcmp(entries[i].provider, pc->name) == 0 &&
            strcmp(entries[i].base_url, pc->base_url) == 0 &&
            entries[i].names != NULL) {
            out = json_deep_copy(entries[i].names); /* nothing shared */
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return out;
}

unsigned
mf_modellist_version(void)
{
    return atomic_load(&version);
}

void
mf_modellist_free(void)
{
    size_t i;

    pthread_mutex_lock(&lock);
    for (i = 0; i < nentries; i++) {
        free(entries[i].provider);
        free(entries[i].base_url);
        json_decref(entries[i].names);
    }
    free(entries);
    entries = NULL;
    nentries = 0;
    pthread_mutex_unlock(&lock);
}
