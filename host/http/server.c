/*
 * Server: workers (thread, event_base, SO_REUSEPORT listener, DNS, TLS
 * contexts, upstream pool) and client connections. A connection reads one
 * request at a time: the head up to max_header (431), the body up to
 * max_body (413, checked against Content-Length before reading), all
 * within client_timeout (408); then the request module owns it until it
 * calls mf_conn_req_done.
 */
#include "http/server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "http/guard.h"
#include "http/upstream.h"

enum {
    CONN_HEAD = 0, /* waiting for a request head */
    CONN_BODY,     /* reading a body */
    CONN_BUSY,     /* the request module has it */
    CONN_CLOSING   /* flushing, then closed */
};

struct mf_conn_s {
    mf_worker_t *w;
    struct bufferevent *bev;
    mf_conn_t *next;
    mf_conn_t *prev;
    char addr[64];
    int state;
    mf_http_head_t *head;
    char *head_bytes;
    size_t head_len;
    int64_t body_len;
    int chunked;
    mf_http_chunked_t chunk;
    mf_buf_t body;
    size_t body_reserved; /* of the server's body budget */
    int body_status;      /* why body_piece failed: 413 or 503 */
    int deadline_set;     /* client_timeout runs for this request */
    mf_req_t *req;
    struct event *timer;
    struct event *next_ev;  /* deferred start of a pipelined request */
    struct event *flush_ev; /* direct write at the end of this loop pass */
    int flush_pending;
    size_t drain_low; /* tell the request when output falls to this */
    int keep_alive;
    int requests;
    struct event *send_timer; /* limits.send_timeout without progress */
    int finishing;            /* req is answered; its answer is still leaving */
    int head_parsed;          /* head holds the request being read */
    double head_start_ms;     /* first byte of the request being read, 0 none */
    const char *cut_why;      /* the gateway closes: why, for the access log */
    int listener;             /* mf_listener_t it came in on */
};

static const mf_conn_handlers_t *handlers;
static const mf_worker_hooks_t *hooks[8];
static size_t nhooks;

void
mf_server_set_handlers(const mf_conn_handlers_t *h)
{
    handlers = h;
}

void
mf_server_add_hooks(const mf_worker_hooks_t *h)
{
    if (nhooks == sizeof(hooks) / sizeof(hooks[0])) {
        mf_log_error("more than %zu worker hooks", nhooks);
        abort();
    }
    hooks[nhooks++] = h;
}

#define MF_DRAIN_CUT "the gateway stopped: limits.drain_timeout ran out"

static const mf_limits_t *
limits(void)
{
    static mf_limits_t defaults = {.max_body = 16 << 20,
                                   .max_header = 64 << 10,
                                   .client_timeout_ms = 60000,
                                   .max_body_total = 256 << 20,
                                   .send_timeout_ms = 60000};
    void *hold;
    const mf_config_t *conf = handlers->config_acquire(&hold);
    static __thread mf_limits_t cached;

    if (conf != NULL) {
        cached = conf->limits;
    }
    handlers->config_release(hold);
    return conf != NULL ? &cached : &defaults;
}

struct bufferevent *
mf_conn_bev(mf_conn_t *c)
{
    return c->bev;
}

void
mf_conn_set_req(mf_conn_t *c, mf_req_t *r)
{
    c->req = r;
}

int
mf_conn_listener(const mf_conn_t *c)
{
    return c->listener;
}

int
mf_conn_keep_alive(mf_conn_t *c)
{
    return c->keep_alive;
}

/*
 * The body budget: bytes of request bodies being read, over all
 * connections, are bounded by limits.max_body_total (past it, 503 with
 * Retry-After). A body is reserved whole when its length is known, and as
 * it grows when chunked; it is released when the request is handed on or
 * the connection ends. When the last reservation goes, freed memory is
 * given back to the system.
 */
static int
body_reserve(mf_conn_t *c, size_t n, size_t budget)
{
    mf_server_t *s = c->w->server;
    size_t was = atomic_fetch_add(&s->body_bytes, n);

    if (was + n > budget) {
        atomic_fetch_sub(&s->body_bytes, n);
        return MF_ERR;
    }
    c->body_reserved += n;
    return MF_OK;
}

static void
body_release(mf_conn_t *c)
{
    size_t n = c->body_reserved;

    if (n == 0) {
        return;
    }
    c->body_reserved = 0;
    if (atomic_fetch_sub(&c->w->server->body_bytes, n) == n && n >= (1 << 20)) {
#ifdef __GLIBC__
        malloc_trim(0);
#endif
    }
}

/* A request that never reached the request module (the client left
 * mid-upload, or its head or body was refused): one access-log line with
 * what is known, as nginx logs its 400s and 499s. Nothing when no byte of
 * a request arrived (an idle keep-alive connection). */
static void
conn_log_unserved(mf_conn_t *c, int status, const char *why)
{
    size_t got;

    if (c->head_start_ms == 0) {
        return;
    }
    got = c->head_len + c->body.len +
          evbuffer_get_length(bufferevent_get_input(c->bev));
    handlers->log_unserved(c->w, c->head_parsed ? c->head : NULL, c->addr,
                           status, why, got, c->head_start_ms);
    c->head_start_ms = 0;
}

static void
conn_free(mf_conn_t *c)
{
    mf_worker_t *w = c->w;

    if (c->prev) {
        c->prev->next = c->next;
    } else {
        w->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    if (c->req != NULL) {
        mf_req_t *r = c->req;

        c->req = NULL;
        handlers->client_gone(
            r, evbuffer_get_length(bufferevent_get_output(c->bev)), c->cut_why);
    } else if (c->state == CONN_HEAD || c->state == CONN_BODY) {
        conn_log_unserved(c, c->cut_why ? 503 : 499,
                          c->cut_why ? c->cut_why
                                     : "the client closed the connection "
                                       "before the request was received");
    }
    body_release(c);
    atomic_fetch_sub(&w->server->conns, 1);
    if (c->timer) {
        event_free(c->timer);
    }
    if (c->next_ev) {
        event_free(c->next_ev);
    }
    event_free(c->flush_ev);
    bufferevent_free(c->bev);
    event_free(c->send_timer);
    free(c->head);
    free(c->head_bytes);
    mf_buf_free(&c->body);
    free(c);
}

static void
conn_timer(mf_conn_t *c, double ms)
{
    struct timeval tv;

    if (ms <= 0) {
        evtimer_del(c->timer);
        return;
    }
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms - (double)tv.tv_sec * 1000) * 1000);
    evtimer_add(c->timer, &tv);
}

static void
close_event_cb(struct bufferevent *bev, short what, void *arg)
{
    MF_UNUSED(bev);
    MF_UNUSED(what);
    conn_free(arg);
}

/*
 * Writing to the client. The bufferevent's EV_WRITE stays disabled while
 * the socket keeps up: whatever a loop pass added to the output is written
 * once, directly, at the end of that pass (an active event, no epoll
 * change). Only what the socket refuses enables EV_WRITE, until drained.
 *
 * A write is timed by progress, as nginx's send_timeout: while output
 * waits on the socket the send timer runs, and every byte that leaves
 * re-arms it. A reader however slow gets the whole answer; one that reads
 * nothing for limits.send_timeout is cut, and the request is logged with
 * the bytes it did not get.
 *
 * An answered request stays tied to its connection until its last byte
 * has left (mf_conn_req_done returns 1): only then is it logged and freed
 * (and counted out of the requests in flight, which a drain waits for),
 * and only then does a keep-alive connection read the next request.
 */

static void
conn_send_arm(mf_conn_t *c)
{
    struct timeval tv;
    double ms = limits()->send_timeout_ms;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms - (double)tv.tv_sec * 1000) * 1000);
    evtimer_add(c->send_timer, &tv);
}

static void
conn_send_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_conn_t *c = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    c->cut_why = "the client read nothing for limits.send_timeout";
    conn_free(c);
}

static void conn_next(mf_conn_t *c);

/* After a write: stop watching when drained, close or tell the request. */
static void
conn_after_write(mf_conn_t *c)
{
    size_t left = evbuffer_get_length(bufferevent_get_output(c->bev));

    if (left == 0) {
        bufferevent_disable(c->bev, EV_WRITE);
        evtimer_del(c->send_timer);
    }
    if (c->state == CONN_CLOSING) {
        if (left == 0) {
            conn_free(c);
        }
        return;
    }
    if (c->finishing) {
        if (left == 0) {
            mf_req_t *r = c->req;

            c->req = NULL;
            c->finishing = 0;
            handlers->delivered(r);
            conn_next(c); /* may free c */
        }
        return;
    }
    if (c->req != NULL && c->drain_low > 0 && left <= c->drain_low) {
        handlers->drained(c->req); /* may free c */
    }
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
    MF_UNUSED(bev);
    conn_after_write(arg);
}

static void
conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_conn_t *c = arg;
    struct evbuffer *o = bufferevent_get_output(c->bev);

    MF_UNUSED(fd);
    MF_UNUSED(what);
    c->flush_pending = 0;
    if ((bufferevent_get_enabled(c->bev) & EV_WRITE) ||
        evbuffer_get_length(o) == 0) {
        return;
    }
    if (mf_evbuffer_write(o, bufferevent_getfd(c->bev)) < 0 &&
        errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        /* let the bufferevent meet the error and report it */
        bufferevent_enable(c->bev, EV_WRITE);
        return;
    }
    if (evbuffer_get_length(o) > 0) {
        bufferevent_enable(c->bev, EV_WRITE);
        if (!evtimer_pending(c->send_timer, NULL)) {
            conn_send_arm(c);
        }
    }
    conn_after_write(c);
}

static void
conn_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
            void *arg)
{
    mf_conn_t *c = arg;

    if (info->n_deleted > 0 && evtimer_pending(c->send_timer, NULL)) {
        /* bytes left: progress re-arms the send timer */
        if (evbuffer_get_length(buf) > 0) {
            conn_send_arm(c);
        } else {
            evtimer_del(c->send_timer);
        }
    }
    if (info->n_added > 0 && !c->flush_pending &&
        !(bufferevent_get_enabled(c->bev) & EV_WRITE)) {
        c->flush_pending = 1;
        event_active(c->flush_ev, EV_TIMEOUT, 0);
    }
}

/* Closes once the output is flushed. */
static void
conn_close_after_write(mf_conn_t *c)
{
    c->state = CONN_CLOSING;
    evtimer_del(c->timer);
    bufferevent_disable(c->bev, EV_READ);
    c->drain_low = 0;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_setcb(c->bev, NULL, conn_write_cb, close_event_cb, c);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_free(c);
        return;
    }
    bufferevent_enable(c->bev, EV_WRITE);
    if (!evtimer_pending(c->send_timer, NULL)) {
        conn_send_arm(c);
    }
}

/* An error before a request exists: OpenAI-shaped, then close. */
static void
conn_reject(mf_conn_t *c, int status, const char *type, const char *msg)
{
    json_t *j = json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", msg,
                          "type", type, "code", "param");
    char *text = json_dumps(j, JSON_COMPACT);
    size_t n = strlen(text);

    body_release(c);
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "HTTP/1.1 %d %s\r\nDate: %s\r\n"
                        "Content-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                        status, mf_http_reason(status), mf_http_date(), n);
    evbuffer_add(bufferevent_get_output(c->bev), text, n);
    free(text);
    json_decref(j);
    conn_log_unserved(c, status, msg);
    conn_close_after_write(c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg);

static int
body_piece(void *arg, const char *data, size_t len)
{
    mf_conn_t *c = arg;
    const mf_limits_t *lim = limits();
    size_t need = c->body.len + len;

    if (need > lim->max_body) {
        c->body_status = 413;
        return MF_ERR;
    }
    if (need > c->body_reserved) {
        /* reserve ahead as the buffer grows: doubling, like its capacity */
        size_t want = c->body_reserved * 2;

        want = want < (64 << 10) ? (64 << 10) : want;
        want = want > lim->max_body ? lim->max_body : want;
        want = want < need ? need : want;
        if (body_reserve(c, want - c->body_reserved, lim->max_body_total) !=
            MF_OK) {
            c->body_status = 503;
            return MF_ERR;
        }
    }
    if (mf_buf_try_append(&c->body, data, len) != MF_OK) {
        c->body_status = 503;
        return MF_ERR;
    }
    return MF_OK;
}

/* Answers a request whose head was read but not its body, through the
 * request module so that it is logged, and closes after the answer. */
static void
conn_refuse(mf_conn_t *c, int status, const char *code, const char *msg)
{
    mf_req_refusal_t why = {.status = status,
                            .type = status == 503 ? "server_error"
                                                  : "invalid_request_error",
                            .code = code,
                            .message = msg,
                            .retry_after = status == 503 ? "1" : NULL};

    body_release(c);
    mf_buf_free(&c->body);
    c->keep_alive = 0;
    c->state = CONN_BUSY;
    c->deadline_set = 0;
    evtimer_del(c->timer);
    bufferevent_disable(c->bev, EV_READ);
    handlers->refuse(c, c->w, c->head, c->addr, &why); /* may free c */
}

/* The browser guard on a request head: MF_ERR when it was refused. */
static int
conn_guard(mf_conn_t *c)
{
    void *hold;
    const mf_config_t *conf = handlers->config_acquire(&hold);
    const char *code = NULL;
    char msg[512];
    int rc = MF_OK;

    if (conf != NULL) {
        rc = mf_guard_check(conf,
                            c->listener == MF_LISTENER_STATUS
                                ? c->w->server->status_loopback
                                : c->w->server->loopback,
                            c->head, &code, msg, sizeof(msg));
    }
    handlers->config_release(hold);
    if (rc != MF_OK) {
        conn_refuse(c, 403, code, msg);
    }
    return rc;
}

static void
conn_dispatch(mf_conn_t *c)
{
    char *body = c->body.data;
    size_t len = c->body.len;

    c->body.data = NULL;
    c->body.len = c->body.cap = 0;
    c->state = CONN_BUSY;
    c->requests++;
    c->deadline_set = 0;
    body_release(c); /* the request module owns the body now */
    evtimer_del(c->timer);
    handlers->handle(c, c->w, c->head, c->addr, body, len);
}

/* Reads the head and body of the next request from the input. */
static void
conn_process(mf_conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    const mf_limits_t *lim = limits();

    if (c->state == CONN_HEAD) {
        size_t avail = evbuffer_get_length(in), look, hlen;
        const char *data, *err;

        if (avail == 0) {
            return;
        }
        if (!c->deadline_set) {
            /* one deadline for the head and body, from their first byte */
            c->deadline_set = 1;
            conn_timer(c, lim->client_timeout_ms);
        }
        if (c->head_start_ms == 0) {
            c->head_start_ms = mf_now_ms();
        }
        look = avail < lim->max_header ? avail : lim->max_header;
        data = (const char *)evbuffer_pullup(in, (ssize_t)look);
        hlen = mf_http_head_end(data, look);
        if (hlen == 0) {
            if (avail >= lim->max_header) {
                conn_reject(c, 431, "invalid_request_error",
                            "request headers are larger than "
                            "limits.max_header");
            }
            return;
        }
        free(c->head_bytes);
        c->head_bytes = mf_xmalloc(hlen);
        memcpy(c->head_bytes, data, hlen);
        c->head_len = hlen;
        evbuffer_drain(in, hlen);
        if (c->head == NULL) {
            c->head = mf_xmalloc(sizeof(*c->head));
        }
        if (mf_http_parse_request_head(c->head_bytes, hlen, c->head, &err) !=
            MF_OK) {
            char msg[256];

            snprintf(msg, sizeof(msg), "malformed HTTP request: %s", err);
            conn_reject(c, c->head->err_status, "invalid_request_error", msg);
            return;
        }
        if (conn_guard(c) != MF_OK) {
            return;
        }
        c->head_parsed = 1;
        c->keep_alive = c->head->keep_alive;
        c->chunked = c->head->chunked;
        c->body_len = c->head->content_length;
        if (!c->chunked && c->body_len > (int64_t)lim->max_body) {
            char msg[256];

            snprintf(msg, sizeof(msg),
                     "request body of %lld bytes is larger "
                     "than the limit of %zu bytes (limits.max_body)",
                     (long long)c->body_len, lim->max_body);
            conn_reject(c, 413, "invalid_request_error", msg);
            return;
        }
        if (!c->chunked && c->body_len > 0 &&
            body_reserve(c, (size_t)c->body_len, lim->max_body_total) !=
                MF_OK) {
            conn_refuse(c, 503, "body_budget_exhausted",
                        "the gateway is reading as many request bodies as "
                        "limits.max_body_total allows; retry shortly");
            return;
        }
        mf_buf_reset(&c->body);
        c->body.limit = lim->max_body;
        memset(&c->chunk, 0, sizeof(c->chunk));
        if (c->head->expect_continue && (c->chunked || c->body_len > 0)) {
            evbuffer_add_printf(bufferevent_get_output(c->bev),
                                "HTTP/1.1 100 Continue\r\n\r\n");
        }
        c->state = CONN_BODY;
    }
    if (c->state == CONN_BODY) {
        if (c->chunked) {
            while (evbuffer_get_length(in) > 0 && !c->chunk.done) {
                struct evbuffer_iovec v;
                ssize_t used;

                evbuffer_peek(in, -1, NULL, &v, 1);
                used = mf_http_chunked_feed(&c->chunk, v.iov_base, v.iov_len,
                                            body_piece, c);
                if (used < 0) {
                    if (c->body_status == 413) {
                        conn_reject(c, 413, "invalid_request_error",
                                    "request body is larger than "
                                    "limits.max_body");
                    } else if (c->body_status == 503) {
                        conn_refuse(c, 503, "body_budget_exhausted",
                                    "the gateway is reading as many request "
                                    "bodies as limits.max_body_total "
                                    "allows; retry shortly");
                    } else if (c->chunk.trailer_too_large) {
                        conn_reject(c, 431, "invalid_request_error",
                                    "the trailer section of the chunked "
                                    "body is larger than 8 KiB");
                    } else {
                        conn_reject(c, 400, "invalid_request_error",
                                    "malformed chunked request body");
                    }
                    return;
                }
                evbuffer_drain(in, (size_t)used);
            }
            if (!c->chunk.done) {
                return;
            }
        } else if (c->body_len > 0) {
            size_t need = (size_t)c->body_len;

            if (evbuffer_get_length(in) < need) {
                return;
            }
            if (mf_buf_try_append(&c->body, evbuffer_pullup(in, (ssize_t)need),
                                  need) != MF_OK) {
                conn_reject(c, 503, "server_error",
                            "out of memory reading the request body");
                return;
            }
            evbuffer_drain(in, need);
        }
        conn_dispatch(c);
    }
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
    mf_conn_t *c = arg;

    MF_UNUSED(bev);
    if (c->state == CONN_BUSY) {
        /* a pipelined request waits, its body outside the gateway's
         * memory (the socket holds it) */
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) >
            limits()->max_header) {
            bufferevent_disable(c->bev, EV_READ);
        }
        return;
    }
    if (c->state == CONN_CLOSING) {
        return;
    }
    conn_process(c);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    mf_conn_t *c = arg;

    MF_UNUSED(bev);
    MF_UNUSED(what);
    /* EOF or error: the client is gone (conn_free tells its request) */
    conn_free(c);
}

void
mf_conn_watch_drain(mf_conn_t *c, size_t low)
{
    c->drain_low = low;
    bufferevent_setwatermark(c->bev, EV_WRITE, low, 0);
}

static void
conn_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_conn_t *c = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    if (c->state == CONN_CLOSING) {
        conn_free(c);
    } else if (c->state == CONN_BODY) {
        conn_refuse(c, 408, NULL,
                    "the request was not received within "
                    "limits.client_timeout");
    } else if (c->state == CONN_HEAD &&
               evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
        conn_reject(c, 408, "invalid_request_error",
                    "the request was not received within "
                    "limits.client_timeout");
    } else if (c->state == CONN_HEAD) {
        conn_free(c); /* idle keep-alive connection */
    }
}

static void
conn_next_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_conn_t *c = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    if (c->state == CONN_HEAD) {
        conn_process(c);
    }
}

/* The answer has left: read the next request, or close. */
static void
conn_next(mf_conn_t *c)
{
    struct timeval zero = {0, 0};

    if (!c->keep_alive || c->w->stopping) {
        conn_close_after_write(c);
        return;
    }
    c->state = CONN_HEAD;
    c->head_parsed = 0;
    c->head_len = 0;
    c->head_start_ms = 0;
    bufferevent_enable(c->bev, EV_READ);
    conn_timer(c, limits()->client_timeout_ms);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
        if (c->next_ev == NULL) {
            c->next_ev = evtimer_new(c->w->base, conn_next_cb, c);
        }
        evtimer_add(c->next_ev, &zero);
    }
}

/* The connection cap in force: limits.max_conns, or from RLIMIT_NOFILE
 * (a client connection and its upstream one each take a descriptor). */
static int
max_conns(void)
{
    static int from_nofile;
    struct rlimit rl;
    int n = limits()->max_conns;

    if (n > 0) {
        return n;
    }
    if (from_nofile == 0) {
        n = 1000000;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
            rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 2000000) {
            n = ((int)rl.rlim_cur - 64) / 2;
        }
        from_nofile = n < 16 ? 16 : n;
    }
    return from_nofile;
}

/* Over the cap: a fixed 503 written straight to the new socket, then
 * closed. It costs one write; no state is kept for the connection. */
static void
refuse_over_cap(mf_worker_t *w, evutil_socket_t fd)
{
    static const char body[] =
        "{\"error\":{\"message\":\"the gateway serves as many connections "
        "as limits.max_conns allows; retry shortly\",\"type\":"
        "\"server_error\",\"code\":\"too_many_connections\","
        "\"param\":null}}";
    char resp[512];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 503 Service Unavailable\r\nDate: %s\r\n"
                     "Content-Type: application/json\r\nRetry-After: 1\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     mf_http_date(), sizeof(body) - 1, body);
    char drain[4096];
    ssize_t rc;

    if (atomic_exchange(&w->server->cap_reached, 1) == 0) {
        mf_log_warn("%d client connections open (limits.max_conns): new "
                    "ones are answered 503 until some close",
                    max_conns());
    }
    rc = recv(fd, drain, sizeof(drain), MSG_DONTWAIT); /* no RST for it */
    MF_UNUSED(rc);
    rc = send(fd, resp, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    MF_UNUSED(rc);
    evutil_closesocket(fd);
}

/*
 * accept() failed (out of descriptors, or memory): the listener stops for a
 * while, then tries again, waiting twice as long each time (up to 1 s) while
 * it fails. An episode lasts until accept() has worked for a second without
 * failing again (at the limit, a descriptor freed now and then lets one
 * accept through between failures: that is the same episode). It is
 * logged when the first worker pauses and when the last one is done.
 */
static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
    mf_worker_t *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv;

    evconnlistener_disable(l);
    evtimer_del(w->accept_quiet);
    if (!w->accept_episode) {
        w->accept_episode = 1;
        if (atomic_fetch_add(&w->server->accept_paused, 1) == 0) {
            mf_log_warn("accept: %s; new connections wait until descriptors "
                        "are free (raise the open files limit, ulimit -n, or "
                        "lower limits.max_conns)",
                        evutil_socket_error_to_string(err));
        }
    }
    if (w->accept_backoff_ms == 0) {
        w->accept_backoff_ms = 25;
    } else if (w->accept_backoff_ms < 1000) {
        w->accept_backoff_ms *= 2;
    }
    tv.tv_sec = 0;
    tv.tv_usec = (suseconds_t)(w->accept_backoff_ms * 1000);
    if (tv.tv_usec >= 1000000) {
        tv.tv_sec = 1;
        tv.tv_usec = 0;
    }
    evtimer_add(w->accept_retry, &tv);
}

static void
accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_worker_t *w = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    if (w->listener != NULL && !w->stopping) {
        evconnlistener_enable(w->listener);
    }
    if (w->status_listener != NULL && !w->stopping) {
        evconnlistener_enable(w->status_listener);
    }
    if (w->accept_episode && !w->stopping) {
        /* a quiet second from here ends the episode, also when no
         * connection is waiting to be accepted (an accept's success only
         * re-arms it; without this, an episode whose last event was a
         * failure stayed open until the next connection came) */
        static const struct timeval quiet = {1, 0};

        evtimer_add(w->accept_quiet, &quiet);
    }
}

/* A second of accepts without a failure: the episode is over. */
static void
accept_quiet_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_worker_t *w = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    w->accept_episode = 0;
    w->accept_backoff_ms = 0;
    if (atomic_fetch_sub(&w->server->accept_paused, 1) == 1) {
        mf_log_info("accept: new connections are accepted again");
    }
}

int
mf_conn_req_done(mf_conn_t *c, int keep_alive)
{
    if (!keep_alive) {
        c->keep_alive = 0;
    }
    mf_conn_watch_drain(c, 0);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
        c->finishing = 1; /* conn_after_write goes on once it has left */
        bufferevent_disable(c->bev, EV_READ);
        return 1;
    }
    c->req = NULL;
    conn_next(c);
    return 0;
}

/* l is not const: libevent's callback type */
static void
/* cppcheck-suppress constParameter */
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int socklen, void *arg)
{
    mf_worker_t *w = arg;
    mf_conn_t *c;
    int one = 1;

    MF_UNUSED(socklen);
    if (w->stopping) {
        evutil_closesocket(fd);
        return;
    }
    if (w->accept_backoff_ms != 0) {
        /* accepting again: the episode ends after a quiet second */
        static const struct timeval quiet = {1, 0};

        w->accept_backoff_ms = 0;
        evtimer_add(w->accept_quiet, &quiet);
    }
    if (atomic_fetch_add(&w->server->conns, 1) >= max_conns()) {
        atomic_fetch_sub(&w->server->conns, 1);
        refuse_over_cap(w, fd);
        return;
    }
    if (atomic_load(&w->server->cap_reached) &&
        atomic_load(&w->server->conns) < max_conns() * 9 / 10) {
        atomic_store(&w->server->cap_reached, 0);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = mf_xcalloc(1, sizeof(*c));
    c->w = w;
    c->listener =
        l == w->status_listener ? MF_LISTENER_STATUS : MF_LISTENER_CLIENT;
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(w->base, conn_timeout_cb, c);
    c->send_timer = evtimer_new(w->base, conn_send_timeout_cb, c);
    if (sa->sa_family == AF_INET) {
        evutil_inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr,
                         c->addr, sizeof(c->addr));
    } else if (sa->sa_family == AF_INET6) {
        evutil_inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr,
                         c->addr, sizeof(c->addr));
    }
    c->next = w->conns;
    if (w->conns) {
        w->conns->prev = c;
    }
    w->conns = c;
    c->flush_ev = event_new(w->base, -1, 0, conn_flush_cb, c);
    evbuffer_add_cb(bufferevent_get_output(c->bev), conn_out_cb, c);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_disable(c->bev, EV_WRITE); /* enabled by default */
    bufferevent_enable(c->bev, EV_READ);
    conn_timer(c, limits()->client_timeout_ms);
}

static evutil_socket_t
listen_socket(const char *host, int port, int exclusive, char *err,
              size_t errcap)
{
    struct evutil_addrinfo hints, *ai = NULL;
    char portstr[16];
    evutil_socket_t fd = -1;
    int one = 1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_NUMERICHOST;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = evutil_getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errcap, "listen %s:%d: %s", host, port,
                 evutil_gai_strerror(rc));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errcap, "socket: %s", strerror(errno));
        goto fail;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (!exclusive) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    }
    if (bind(fd, ai->ai_addr, (socklen_t)ai->ai_addrlen) != 0) {
        snprintf(err, errcap,
                 errno == EADDRINUSE
                     ? "cannot listen on %s:%d: %s (another process, perhaps "
                       "another gateway, listens there; stop it, choose "
                       "another port, or set reuse_port: true in both to "
                       "share it)"
                     : "cannot listen on %s:%d: %s",
                 host, port, strerror(errno));
        goto fail;
    }
    if (exclusive) {
        /* bound without SO_REUSEPORT, so the port was free; setting it
         * now, before listen, lets this gateway's other workers join the
         * group, while another process that binds without it fails */
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    }
    if (listen(fd, 1024) != 0) {
        snprintf(err, errcap, "listen: %s", strerror(errno));
        goto fail;
    }
    evutil_freeaddrinfo(ai);
    return fd;
fail:
    if (fd >= 0) {
        close(fd);
    }
    evutil_freeaddrinfo(ai);
    return -1;
}

/* The port a listening socket is bound to (after :0). */
static int
bound_port(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    getsockname(fd, (struct sockaddr *)&ss, &sl);
    return ntohs(ss.ss_family == AF_INET
                     ? ((struct sockaddr_in *)&ss)->sin_port
                     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_worker_t *w = arg;
    mf_conn_t *c, *next;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    /* stop accepting; close idle connections; loop ends when none left */
    if (w->tick != NULL) {
        event_free(w->tick);
        w->tick = NULL;
    }
    if (w->listener) {
        evconnlistener_free(w->listener);
        w->listener = NULL;
    }
    if (w->status_listener) {
        evconnlistener_free(w->status_listener);
        w->status_listener = NULL;
    }
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        if (c->state == CONN_HEAD &&
            evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
            conn_free(c);
        }
    }
    mf_uppool_close_idle(w->pool);
    if (w->stopping == 2) {
        /* drain time is over: cut what is left */
        while (w->conns != NULL) {
            w->conns->cut_why = MF_DRAIN_CUT;
            conn_free(w->conns);
        }
        event_base_loopbreak(w->base);
    }
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    size_t i;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    for (i = 0; i < nhooks; i++) {
        if (hooks[i]->tick != NULL) {
            hooks[i]->tick(arg);
        }
    }
}

static void *
worker_main(void *arg)
{
    mf_worker_t *w = arg;
    size_t i;

    for (i = 0; i < nhooks; i++) {
        if (hooks[i]->thread_start != NULL) {
            hooks[i]->thread_start(w);
        }
    }
    event_base_dispatch(w->base);
    for (i = nhooks; i-- > 0;) {
        if (hooks[i]->thread_stop != NULL) {
            hooks[i]->thread_stop(w);
        }
    }
    return NULL;
}

int
mf_server_start(mf_server_t *s, const char *host, int port, int nworkers)
{
    char err[512];
    size_t j;
    int i;

    s->host = mf_xstrdup(host);
    s->loopback = mf_guard_loopback_listener(host);
    s->nworkers = nworkers;
    s->workers = mf_xcalloc((size_t)nworkers, sizeof(mf_worker_t));
    s->first_fd = listen_socket(host, port, !s->reuse_port, err, sizeof(err));
    if (s->first_fd < 0) {
        mf_log_error("%s", err);
        return MF_ERR;
    }
    s->port = bound_port(s->first_fd);
    s->status_fd = -1;
    if (s->status_host != NULL) {
        s->status_loopback = mf_guard_loopback_listener(s->status_host);
        s->status_fd = listen_socket(s->status_host, s->status_port,
                                     !s->reuse_port, err, sizeof(err));
        if (s->status_fd < 0) {
            mf_log_error("status listener: %s", err);
            return MF_ERR;
        }
        s->status_port = bound_port(s->status_fd);
    }
    for (i = 0; i < nworkers; i++) {
        mf_worker_t *w = &s->workers[i];
        evutil_socket_t fd =
            i == 0 ? s->first_fd
                   : listen_socket(host, s->port, 0, err, sizeof(err));

        if (fd < 0) {
            mf_log_error("%s", err);
            return MF_ERR;
        }
        w->id = i;
        w->server = s;
        w->base = event_base_new();
        w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (w->dns == NULL) {
            w->dns = evdns_base_new(w->base, 0);
        }
        w->ssl_ctx = mf_upstream_ssl_ctx(1);
        w->ssl_ctx_noverify = mf_upstream_ssl_ctx(0);
        w->pool = mf_uppool_new();
        w->wake = event_new(w->base, -1, 0, wake_cb, w);
        w->listener = evconnlistener_new(w->base, accept_cb, w,
                                         LEV_OPT_CLOSE_ON_FREE, -1, fd);
        w->accept_retry = evtimer_new(w->base, accept_retry_cb, w);
        w->accept_quiet = evtimer_new(w->base, accept_quiet_cb, w);
        evconnlistener_set_error_cb(w->listener, accept_error_cb);
        if (s->status_fd >= 0) {
            evutil_socket_t sfd =
                i == 0 ? s->status_fd
                       : listen_socket(s->status_host, s->status_port, 0, err,
                                       sizeof(err));

            if (sfd < 0) {
                mf_log_error("status listener: %s", err);
                return MF_ERR;
            }
            w->status_listener = evconnlistener_new(
                w->base, accept_cb, w, LEV_OPT_CLOSE_ON_FREE, -1, sfd);
            evconnlistener_set_error_cb(w->status_listener, accept_error_cb);
        }
        w->seq = (uint64_t)i << 48;
        if (i == 0) {
            struct timeval sec = {1, 0};

            w->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
            event_add(w->tick, &sec);
        }
        for (j = 0; j < nhooks; j++) {
            if (hooks[j]->init != NULL) {
                hooks[j]->init(w);
            }
        }
    }
    for (i = 0; i < nworkers; i++) {
        pthread_create(&s->workers[i].thread, NULL, worker_main,
                       &s->workers[i]);
    }
    return MF_OK;
}

int
mf_server_in_flight(mf_server_t *s)
{
    int i, n = 0;

    for (i = 0; i < s->nworkers; i++) {
        n += atomic_load(&s->workers[i].in_flight);
    }
    return n;
}

void
mf_server_stop(mf_server_t *s, double drain_ms)
{
    double deadline = mf_now_ms() + drain_ms;
    size_t j;
    int i;

    for (i = 0; i < s->nworkers; i++) {
        s->workers[i].stopping = 1;
        event_active(s->workers[i].wake, EV_READ, 0);
    }
    while (mf_server_in_flight(s) > 0 && mf_now_ms() < deadline) {
        usleep(20000);
    }
    for (i = 0; i < s->nworkers; i++) {
        s->workers[i].stopping = 2;
        event_active(s->workers[i].wake, EV_READ, 0);
    }
    for (i = 0; i < s->nworkers; i++) {
        mf_worker_t *w = &s->workers[i];

        pthread_join(w->thread, NULL);
        if (w->listener) {
            evconnlistener_free(w->listener);
        }
        if (w->status_listener) {
            evconnlistener_free(w->status_listener);
        }
        while (w->conns != NULL) {
            w->conns->cut_why = MF_DRAIN_CUT;
            conn_free(w->conns);
        }
        if (w->tick != NULL) {
            event_free(w->tick);
        }
        for (j = 0; j < nhooks; j++) {
            if (hooks[j]->fini != NULL) {
                hooks[j]->fini(w);
            }
        }
        mf_uppool_free(w->pool);
        event_free(w->accept_retry);
        event_free(w->accept_quiet);
        event_free(w->wake);
        evdns_base_free(w->dns, 0);
        SSL_CTX_free(w->ssl_ctx);
        SSL_CTX_free(w->ssl_ctx_noverify);
        event_base_free(w->base);
    }
    free(s->workers);
    free(s->host);
    free(s->status_host);
}
