/*
 * Admin socket: a Unix socket created 0600 on the main thread that speaks
 * HTTP/1.1 with JSON bodies (curl --unix-socket works). One command per
 * file (admin_cmd_*.c); this module accepts, reads a bounded request,
 * routes it and writes the answer, then closes.
 */
#ifndef MF_ADMIN_H
#define MF_ADMIN_H

#include "control/reload.h"
#include "http/server.h"
#include "control/watch.h"

typedef struct mf_admin_s mf_admin_t;

/* What commands reach; owned by main. */
typedef struct mf_admin_ctx_s {
    mf_reloader_t *rl;
    mf_server_t *server;
    mf_watch_t *watch;
    double started_at;
    /* called after every reload attempt made through the socket */
    void (*after_reload)(void *arg);
    void *arg;
} mf_admin_ctx_t;

/* A parsed admin request; views into the caller's bytes. */
typedef struct mf_admin_req_s {
    mf_str_t method;
    mf_str_t path;
    mf_str_t body;
} mf_admin_req_t;

/*
 * A command answers with an HTTP status and a JSON body (*out, owned by
 * the caller). `arg` is the path segment the route captured (a stage
 * name), or empty.
 */
typedef int (*mf_admin_cmd_fn)(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                               mf_str_t arg, json_t **out);

int mf_admin_cmd_stages(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                        mf_str_t arg, json_t **out);
int mf_admin_cmd_reload(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                        mf_str_t arg, json_t **out);
int mf_admin_cmd_enable(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                        mf_str_t arg, json_t **out);
int mf_admin_cmd_disable(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                         mf_str_t arg, json_t **out);
int mf_admin_cmd_stats(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                       mf_str_t arg, json_t **out);
int mf_admin_cmd_keys(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                      mf_str_t arg, json_t **out);
int mf_admin_cmd_key_enable(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                            mf_str_t arg, json_t **out);
int mf_admin_cmd_key_disable(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                             mf_str_t arg, json_t **out);
int mf_admin_cmd_generations(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                             mf_str_t arg, json_t **out);

int mf_admin_cmd_commands(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                          mf_str_t arg, json_t **out);
int mf_admin_cmd_command_run(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                             mf_str_t arg, json_t **out);

/*
 * Parses one request held whole in buf: 1 when complete (q filled), 0
 * when more bytes are needed, -1 when malformed or too large (*err says
 * why).
 */
int mf_admin_parse(const char *buf, size_t len, mf_admin_req_t *q,
                   const char **err);
/*
 * Routes a parsed request to its command and runs it; returns the status
 * and the JSON answer (*out, owned by the caller). Unknown paths get 404,
 * a wrong method 405.
 */
int mf_admin_dispatch(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                      json_t **out);
/*
 * For mf_reloader_t.busy (arg: the mf_admin_t): while on, a helper thread
 * answers the admin socket for the busy main thread, one connection at a
 * time: GET /stats (with "reload_in_progress") and GET /stages as usual,
 * a reload 409 "reload in progress", any other command 503 (it waits for
 * the main thread). Off joins the helper; connections it has not accepted
 * are the main loop's again.
 */
void mf_admin_busy(void *admin, int on, const char *trigger);
/* One stage as GET /stages shows it. */
json_t *mf_admin_stage_json(mf_pstage_t *s);
/* {"error": {"message": ...}} */
json_t *mf_admin_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Binds path (refusing when another gateway answers on it) and serves on
 * base. NULL with a logged reason. */
mf_admin_t *mf_admin_start(struct event_base *base, const char *path,
                           mf_admin_ctx_t *ctx);
void mf_admin_stop(mf_admin_t *a);

#endif
