/*
 * Async host services for stages: an HTTP client call and Redis commands,
 * each bound to a request that waits on it (C: MF_PAUSE + resume from the
 * callback; Lua: the coroutine yields).
 */
#ifndef MF_SVC_H
#define MF_SVC_H

#include "http/server.h"
#include "pipeline/request-t.h"

/* api->http_call (see plugin.h). MF_ERR when the URL is not http(s). */
int mf_svc_http_call(mf_req_t *r, const char *method, mf_str_t url,
                     const mf_str_t *headers, size_t nheaders, mf_str_t body,
                     uint64_t timeout_ms, mf_http_cb cb, void *arg);

/* api->model_call (see plugin.h): over loopback to the gateway's own
 * listener. MF_ERR when r->call_depth is MF_MODEL_CALL_MAX_DEPTH. */
#define MF_MODEL_CALL_MAX_DEPTH 3
int mf_svc_model_call(mf_req_t *r, const mf_model_call_t *call, mf_http_cb cb,
                      void *arg);
/* Whether value is this process's model-call secret (the x-manifold-call
 * header of a call mf_svc_model_call made). */
int mf_svc_model_trusted(mf_str_t value);

/* api->redis_command (see plugin.h). Completion may run before this
 * returns when the command fails at once (no Redis configured or down). */
int mf_svc_redis_command(mf_req_t *r, int argc, const mf_str_t *argv,
                         mf_redis_cb cb, void *arg);
/* A command of the host itself (no request) on the worker's connection,
 * with the `redis:` settings conf. MF_ERR (cb not called) when Redis is
 * not reachable now; otherwise cb runs once, later, with the reply (valid
 * during the call) or err. */
typedef void (*mf_svc_redis_raw_cb)(void *arg, const mf_redis_reply_t *reply,
                                    const char *err);
int mf_svc_redis_raw(mf_worker_t *w, json_t *conf, int argc,
                     const mf_str_t *argv, mf_svc_redis_raw_cb cb, void *arg);
/* Closes the worker's Redis connection (worker stop). */
void mf_svc_redis_worker_free(mf_worker_t *w);
/* The Redis service's worker hooks (fini: mf_svc_redis_worker_free). */
extern const mf_worker_hooks_t mf_svc_redis_hooks;

#endif
