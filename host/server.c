/*
 * Server: workers (thread, event_base, SO_REUSEPORT listener, DNS, TLS
 * contexts, upstream pool) and client connections. A connection reads one
 * request at a time: the head up to max_header (431), the body up to
 * max_body (413, checked against Content-Length before reading), all
 * within client_timeout (408); then the request module owns it until it
 * calls mf_conn_req_done.
 */
#include "server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keypool.h"
#include "request.h"
#include "svc.h"
#include "upstream.h"

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
};

#define MF_DRAIN_CUT "the gateway stopped: limits.drain_timeout ran out"

static const mf_limits_t *
limits(void)
{
    static mf_limits_t defaults = {.max_body = 16 << 20,
                                   .max_header = 64 << 10,
                                   .client_timeout_ms = 60000,
                                   .send_timeout_ms = 60000};
    mf_gen_t *g = mf_gen_acquire();
    static __thread mf_limits_t cached;

    if (g == NULL) {
        return &defaults;
    }
    cached = g->config->limits;
    mf_gen_release(g);
    return &cached;
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
mf_conn_keep_alive(mf_conn_t *c)
{
    return c->keep_alive;
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
    mf_req_log_unserved(c->w, c->head_parsed ? c->head : NULL, c->addr, status,
                        why, got, c->head_start_ms);
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
        mf_req_client_gone(
            r, evbuffer_get_length(bufferevent_get_output(c->bev)), c->cut_why);
    } else if (c->state == CONN_HEAD || c->state == CONN_BODY) {
        conn_log_unserved(c, c->cut_why ? 503 : 499,
                          c->cut_why ? c->cut_why
                                     : "the client closed the connection "
                                       "before the request was received");
    }
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
            mf_req_delivered(r);
            conn_next(c); /* may free c */
        }
        return;
    }
    if (c->req != NULL && c->drain_low > 0 && left <= c->drain_low) {
        mf_req_drained(c->req); /* may free c */
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
    json_t *j = json_pack("{s:{s:s,s:s,s:n}}", "error", "message", msg, "type",
                          type, "code");
    char *text = json_dumps(j, JSON_COMPACT);
    size_t n = strlen(text);

    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                        status, mf_http_reason(status), n);
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

    return mf_buf_append(&c->body, data, len);
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
    evtimer_del(c->timer);
    mf_req_handle(c, c->w, c->head, c->addr, body, len);
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
            } else {
                conn_timer(c, lim->client_timeout_ms);
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
            conn_reject(c, 400, "invalid_request_error", msg);
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
                    if (c->body.len + v.iov_len > lim->max_body) {
                        conn_reject(c, 413, "invalid_request_error",
                                    "request body is larger than "
                                    "limits.max_body");
                    } else {
                        conn_reject(c, 400, "invalid_request_error",
                                    "malformed chunked request body");
                    }
                    return;
                }
                evbuffer_drain(in, (size_t)used);
            }
            if (!c->chunk.done) {
                conn_timer(c, lim->client_timeout_ms);
                return;
            }
        } else if (c->body_len > 0) {
            size_t need = (size_t)c->body_len;

            if (evbuffer_get_length(in) < need) {
                conn_timer(c, lim->client_timeout_ms);
                return;
            }
            if (mf_buf_append(&c->body, evbuffer_pullup(in, (ssize_t)need),
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
        /* a pipelined request waits; a flood is cut off */
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) >
            limits()->max_header + limits()->max_body) {
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
    } else if (c->state == CONN_BODY ||
               (c->state == CONN_HEAD &&
                evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)) {
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

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int socklen, void *arg)
{
    mf_worker_t *w = arg;
    mf_conn_t *c;
    int one = 1;

    MF_UNUSED(l);
    MF_UNUSED(socklen);
    if (w->stopping) {
        evutil_closesocket(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = mf_xcalloc(1, sizeof(*c));
    c->w = w;
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
listen_socket(const char *host, int port, char *err, size_t errcap)
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
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, (socklen_t)ai->ai_addrlen) != 0) {
        snprintf(err, errcap, "cannot listen on %s:%d: %s", host, port,
                 strerror(errno));
        goto fail;
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
    MF_UNUSED(fd);
    MF_UNUSED(what);
    mf_keypool_tick(arg);
}

static void *
worker_main(void *arg)
{
    mf_worker_t *w = arg;

    event_base_dispatch(w->base);
    return NULL;
}

int
mf_server_start(mf_server_t *s, const char *host, int port, int nworkers)
{
    char err[512];
    int i;

    s->host = mf_xstrdup(host);
    s->nworkers = nworkers;
    s->workers = mf_xcalloc((size_t)nworkers, sizeof(mf_worker_t));
    s->first_fd = listen_socket(host, port, err, sizeof(err));
    if (s->first_fd < 0) {
        mf_log_error("%s", err);
        return MF_ERR;
    }
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);

        getsockname(s->first_fd, (struct sockaddr *)&ss, &sl);
        s->port = ntohs(ss.ss_family == AF_INET
                            ? ((struct sockaddr_in *)&ss)->sin_port
                            : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    for (i = 0; i < nworkers; i++) {
        mf_worker_t *w = &s->workers[i];
        evutil_socket_t fd =
            i == 0 ? s->first_fd
                   : listen_socket(host, s->port, err, sizeof(err));

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
        w->seq = (uint64_t)i << 48;
        if (i == 0) {
            struct timeval sec = {1, 0};

            w->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
            event_add(w->tick, &sec);
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
        while (w->conns != NULL) {
            w->conns->cut_why = MF_DRAIN_CUT;
            conn_free(w->conns);
        }
        if (w->tick != NULL) {
            event_free(w->tick);
        }
        mf_svc_redis_worker_free(w);
        mf_uppool_free(w->pool);
        event_free(w->wake);
        evdns_base_free(w->dns, 0);
        SSL_CTX_free(w->ssl_ctx);
        SSL_CTX_free(w->ssl_ctx_noverify);
        event_base_free(w->base);
    }
    free(s->workers);
    free(s->host);
}
