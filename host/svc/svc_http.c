/*
 * HTTP client service: a stage's HTTP/1.1 call through the worker's
 * upstream client (pooled keep-alive connections, TLS, timeouts), the
 * response collected whole (16 MiB at most) and handed to the callback.
 */
#include <stdio.h>
#include <stdlib.h>

#include "pipeline/pipeline.h"
#include "svc/svc.h"
#include "http/upstream.h"

#define SVC_HTTP_MAX_BODY (16u << 20)

typedef struct {
    mf_async_t link; /* first: the request's list holds &op->link */
    mf_req_t *r;
    mf_upcall_t *call;
    mf_http_cb cb;
    void *arg;
    int status;
    mf_str_t *headers; /* in the request's pool */
    size_t nheaders;
    mf_buf_t body;
    int starting;  /* inside mf_upcall_start */
    char *failure; /* failed while starting: reported later */
    struct event *deferred;
} http_op_t;

static void
op_free(http_op_t *op)
{
    if (op->deferred != NULL) {
        event_free(op->deferred);
    }
    free(op->failure);
    mf_buf_free(&op->body);
    free(op);
}

static void
op_cancel(mf_async_t *a)
{
    http_op_t *op = (http_op_t *)a;

    if (op->failure == NULL) {
        mf_upcall_cancel(op->call);
    }
    op_free(op);
}

static void
on_head(void *arg, const mf_http_head_t *h)
{
    http_op_t *op = arg;
    size_t i;

    op->status = h->status;
    op->headers = mf_pool_alloc(op->r->pool, (h->nheaders ? h->nheaders : 1) *
                                                 2 * sizeof(mf_str_t));
    if (op->headers == NULL) {
        return;
    }
    for (i = 0; i < h->nheaders; i++) {
        op->headers[2 * i] = mf_pool_str(op->r->pool, h->headers[i].name);
        op->headers[2 * i + 1] = mf_pool_str(op->r->pool, h->headers[i].value);
    }
    op->nheaders = h->nheaders;
}

/* Unlinks the op, calls back, frees. The callback may end the request. */
static void
complete(http_op_t *op, const mf_http_result_t *res, const char *err)
{
    mf_req_async_remove(op->r, &op->link);
    op->cb(op->r, op->arg, res, err);
    op_free(op);
}

static void
on_data(void *arg, const char *data, size_t len)
{
    http_op_t *op = arg;

    if (op->body.len + len > SVC_HTTP_MAX_BODY ||
        mf_buf_try_append(&op->body, data, len) != MF_OK) {
        mf_upcall_cancel(op->call);
        complete(op, NULL, "the HTTP response is larger than 16 MiB");
    }
}

static void
on_end(void *arg)
{
    http_op_t *op = arg;
    mf_http_result_t res = {
        .status = op->status,
        .nheaders = op->nheaders,
        .headers = op->headers,
        .body = {op->body.data ? op->body.data : "", op->body.len}};

    complete(op, &res, NULL);
}

static void
deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    http_op_t *op = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    complete(op, NULL, op->failure);
}

static void
on_error(void *arg, mf_uperr_t kind, const char *msg)
{
    http_op_t *op = arg;
    struct timeval zero = {0, 0};

    MF_UNUSED(kind);
    if (op->starting) {
        /* never call back inside http_call: report on the next pass */
        op->failure = mf_xstrdup(msg);
        op->deferred = evtimer_new(op->r->worker->base, deferred_cb, op);
        evtimer_add(op->deferred, &zero);
        return;
    }
    complete(op, NULL, msg);
}

int
mf_svc_http_call(mf_req_t *r, const char *method, mf_str_t url,
                 const mf_str_t *headers, size_t nheaders, mf_str_t body,
                 uint64_t timeout_ms, mf_http_cb cb, void *arg)
{
    static const mf_upcall_cbs_t cbs = {.on_head = on_head,
                                        .on_data = on_data,
                                        .on_end = on_end,
                                        .on_error = on_error};
    char pathbuf[4096];
    mf_url_t u;
    mf_upcall_opts_t opts;
    mf_buf_t req = {0};
    http_op_t *op;
    size_t i;
    double t = timeout_ms ? (double)timeout_ms : 30000;

    if (url.len == 0 || url.len > 8192 ||
        mf_url_parse(url.data, url.len, &u, pathbuf, sizeof(pathbuf)) !=
            MF_OK ||
        strpbrk(pathbuf, " \t\r\n") != NULL) {
        return MF_ERR;
    }
    mf_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s", method ? method : "GET",
                  u.path && u.path[0] ? u.path : "/", u.host);
    if ((u.tls && u.port != 443) || (!u.tls && u.port != 80)) {
        mf_buf_printf(&req, ":%d", u.port);
    }
    mf_buf_printf(&req, "\r\nContent-Length: %zu\r\nUser-Agent: manifold\r\n",
                  body.len);
    for (i = 0; i < nheaders; i++) {
        mf_str_t n = headers[2 * i], v = headers[2 * i + 1];

        if (memchr(n.data, '\n', n.len) || memchr(v.data, '\n', v.len) ||
            memchr(n.data, '\r', n.len) || memchr(v.data, '\r', v.len) ||
            mf_str_caseeq(n, MF_STR("content-length")) ||
            mf_str_caseeq(n, MF_STR("host")) ||
            mf_str_caseeq(n, MF_STR("transfer-encoding")) ||
            mf_str_caseeq(n, MF_STR("connection"))) {
            continue; /* framing is the host's; no header injection */
        }
        mf_buf_append(&req, n.data, n.len);
        mf_buf_append(&req, ": ", 2);
        mf_buf_append(&req, v.data, v.len);
        mf_buf_append(&req, "\r\n", 2);
    }
    mf_buf_append(&req, "\r\n", 2);
    if (body.len > 0) {
        mf_buf_append(&req, body.data, body.len);
    }
    memset(&opts, 0, sizeof(opts));
    opts.connect_timeout_ms = t;
    opts.first_byte_timeout_ms = t;
    opts.idle_timeout_ms = t;
    opts.tls_verify = 1;
    op = mf_xcalloc(1, sizeof(*op));
    op->r = r;
    op->cb = cb;
    op->arg = arg;
    op->link.cancel = op_cancel;
    op->call =
        mf_upstream_call(r->worker, &u, &opts, req.data, req.len, &cbs, op);
    mf_buf_free(&req);
    if (op->call == NULL) {
        free(op);
        return MF_ERR;
    }
    mf_req_async_add(r, &op->link);
    op->starting = 1;
    mf_upcall_start(op->call);
    op->starting = 0;
    return MF_OK;
}
