/*
 * The endpoint table: per listener, the paths the gateway serves (its
 * own, registered once at start by the layer that serves them) and those
 * stages add while they load (api->add_endpoint, mf.endpoint.add). A
 * stage's paths belong to its instance and come and go with it; each
 * generation joins the built-in paths and its stages' into one table,
 * refusing a path two of them would serve.
 */
#ifndef MF_ENDPOINT_H
#define MF_ENDPOINT_H

#include <manifold/plugin.h>

#include "pipeline/request-t.h"

typedef struct mf_epath_s mf_epath_t;

/* A built-in path's server: `arg` as registered. */
typedef void (*mf_builtin_fn)(mf_req_t *r, int arg);

struct mf_epath_s {
    mf_listener_t listener;
    const char *method; /* NULL: any */
    const char *path;
    size_t path_len;
    int prefix; /* also path + "/..." */
    /* a built-in entry whose paths a function decides (path then only
     * names it): 1 when it serves the path; an exact entry */
    int (*claims)(mf_str_t path);
    /* the gateway's own */
    mf_builtin_fn builtin;
    int builtin_arg;
    /* a stage's: its handler (C) or the runtime's index (Lua) */
    struct mf_pstage_s *stage; /* set when the stage is loaded */
    mf_endpoint_fn fn;
    void *arg;
    int handle;
};

/* Registers the built-in paths (copied), once, before the first
 * generation is built. */
void mf_endpoints_set_builtins(const mf_epath_t *b, size_t n);

/* Collecting the paths of the stage being loaded (one at a time: loads
 * run on the main thread). add is refused outside begin..end; handle is
 * the runtime's index for a stage runtime that has no C handler. end
 * returns what was added (the caller owns it, *n entries). */
void mf_endpoints_collect_begin(void);
int mf_endpoints_collect_add(const mf_endpoint_def_t *def, int handle,
                             char *err, size_t errcap);
mf_epath_t *mf_endpoints_collect_end(size_t *n);
void mf_endpoints_free(mf_epath_t *e, size_t n);

/* Builds a generation's table: the built-in paths, then each stage's.
 * MF_ERR with a sentence in err when two would serve the same path. */
int mf_endpoints_build(mf_gen_t *g, char *err, size_t errcap);

/* What serves `path` (without its query) for `method` on a listener:
 * the entry, or NULL; *allow then names the methods the path is served
 * with ("" when no entry serves the path: a 404, else a 405). */
const mf_epath_t *mf_endpoints_find(const mf_gen_t *g, mf_listener_t l,
                                    mf_str_t method, mf_str_t path, char *allow,
                                    size_t allowcap);

/* "GET /metrics (status listener)" for messages. */
void mf_endpoint_describe(const mf_epath_t *e, char *buf, size_t cap);

#endif
