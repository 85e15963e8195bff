/*
 * Upstream HTTP/1.1 client. Connections are pooled per worker and per
 * (tls, host, port); an idle connection watches for the peer closing it.
 * A reused connection that fails before any response byte is retried once
 * on a fresh one (the peer closed it while idle), as nginx does.
 */
#include "http/upstream.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define MF_UPPOOL_MAX_IDLE 256
#define MF_UPPOOL_IDLE_MS 60000

typedef struct mf_upconn_s mf_upconn_t;

struct mf_upconn_s {
    struct bufferevent *bev;
    mf_uppool_t *pool;
    mf_worker_t *worker;
    char key[300];
    mf_upconn_t *next; /* idle list */
    mf_upconn_t *prev;
    struct event *idle_timer;
    int requests; /* requests sent on it */
};

struct mf_uppool_s {
    mf_upconn_t *idle;
    int nidle;
};

enum { BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE, BODY_NONE };

struct mf_upcall_s {
    mf_worker_t *worker;
    mf_upconn_t *conn;
    mf_url_t url;
    mf_upcall_opts_t opts;
    mf_upcall_cbs_t cbs;
    void *arg;
    char *req;
    size_t req_len;
    struct event *timer;
    double deadline;          /* mf_now_ms() the answer must end by; 0 = none */
    unsigned at_deadline : 1; /* the timer is armed for the deadline */
    int connected;
    int got_head;
    int got_byte;
    int body_mode;
    uint64_t remaining;
    mf_http_chunked_t chunked;
    int keep_alive;
    int paused;
    int in_cb;
    int cancelled;
    int finished;
    int retried;
    int reused;
};

static void call_read_cb(struct bufferevent *bev, void *arg);
static void call_event_cb(struct bufferevent *bev, short what, void *arg);
static void call_start_conn(mf_upcall_t *c);

SSL_CTX *
mf_upstream_ssl_ctx(int verify)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL) {
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_default_verify_paths(ctx);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

int
mf_evbuffer_write(struct evbuffer *out, evutil_socket_t fd)
{
    int n;

    evbuffer_unfreeze(out, 1);
    n = evbuffer_write(out, fd);
    evbuffer_freeze(out, 1);
    return n;
}

mf_uppool_t *
mf_uppool_new(void)
{
    return mf_xcalloc(1, sizeof(mf_uppool_t));
}

static void
conn_free(mf_upconn_t *uc)
{
    if (uc->idle_timer) {
        event_free(uc->idle_timer);
    }
    if (uc->bev) {
        bufferevent_free(uc->bev);
    }
    free(uc);
}

static void
pool_unlink(mf_uppool_t *p, mf_upconn_t *uc)
{
    if (uc->prev) {
        uc->prev->next = uc->next;
    } else {
        p->idle = uc->next;
    }
    if (uc->next) {
        uc->next->prev = uc->prev;
    }
    uc->next = uc->prev = NULL;
    p->nidle--;
}

void
mf_uppool_close_idle(mf_uppool_t *p)
{
    while (p->idle != NULL) {
        mf_upconn_t *uc = p->idle;

        pool_unlink(p, uc);
        conn_free(uc);
    }
}

void
mf_uppool_free(mf_uppool_t *p)
{
    if (p == NULL) {
        return;
    }
    mf_uppool_close_idle(p);
    free(p);
}

/* An idle connection became readable or closed: drop it. */
static void
idle_read_cb(struct bufferevent *bev, void *arg)
{
    mf_upconn_t *uc = arg;

    MF_UNUSED(bev);
    pool_unlink(uc->pool, uc);
    conn_free(uc);
}

static void
idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    MF_UNUSED(what);
    idle_read_cb(bev, arg);
}

static void
idle_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    MF_UNUSED(fd);
    MF_UNUSED(what);
    idle_read_cb(NULL, arg);
}

static void
pool_put(mf_upconn_t *uc)
{
    mf_uppool_t *p = uc->pool;
    struct timeval tv = {MF_UPPOOL_IDLE_MS / 1000, 0};

    if (p->nidle >= MF_UPPOOL_MAX_IDLE || uc->worker->stopping) {
        conn_free(uc);
        return;
    }
    bufferevent_setcb(uc->bev, idle_read_cb, NULL, idle_event_cb, uc);
    bufferevent_enable(uc->bev, EV_READ);
    if (uc->idle_timer == NULL) {
        uc->idle_timer = evtimer_new(uc->worker->base, idle_timeout_cb, uc);
    }
    evtimer_add(uc->idle_timer, &tv);
    uc->next = p->idle;
    uc->prev = NULL;
    if (p->idle) {
        p->idle->prev = uc;
    }
    p->idle = uc;
    p->nidle++;
}

static mf_upconn_t *
pool_get(mf_uppool_t *p, const char *key)
{
    mf_upconn_t *uc;

    for (uc = p->idle; uc != NULL; uc = uc->next) {
        if (strcmp(uc->key, key) == 0) {
            pool_unlink(p, uc);
            evtimer_del(uc->idle_timer);
            return uc;
        }
    }
    return NULL;
}

/* Arms the call's one timer for ms (none when ms <= 0), never past the
 * deadline of the whole answer. */
static void
set_timer(mf_upcall_t *c, double ms)
{
    struct timeval tv;

    /* which limit the timer stands for is kept, not guessed from the clock
     * when it fires: libevent counts from its cached loop time, so the
     * timer may fire a few ms before mf_now_ms() reaches the deadline */
    c->at_deadline = 0;
    if (c->deadline > 0) {
        double left = c->deadline - mf_now_ms();

        if (ms <= 0 || left <= ms) {
            ms = left > 1 ? left : 1;
            c->at_deadline = 1;
        }
    }
    if (ms <= 0) {
        evtimer_del(c->timer);
        return;
    }
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms - (double)tv.tv_sec * 1000) * 1000);
    evtimer_add(c->timer, &tv);
}

/* The request goes out now: the whole answer is due within
 * total_timeout_ms. */
static void
arm_deadline(mf_upcall_t *c)
{
    c->deadline = c->opts.total_timeout_ms > 0
                      ? mf_now_ms() + c->opts.total_timeout_ms
                      : 0;
}

static void
call_free(mf_upcall_t *c)
{
    if (c->timer) {
        event_free(c->timer);
    }
    if (c->conn) {
        conn_free(c->conn);
    }
    free(c->req);
    free(c);
}

/* Ends the call: returns the connection to the pool when reusable. */
static void
call_finish(mf_upcall_t *c, int reusable)
{
    c->finished = 1;
    evtimer_del(c->timer);
    if (c->conn != NULL) {
        if (reusable && c->keep_alive &&
            evbuffer_get_length(bufferevent_get_input(c->conn->bev)) == 0) {
            pool_put(c->conn);
        } else {
            conn_free(c->conn);
        }
        c->conn = NULL;
    }
}

static void
call_fail(mf_upcall_t *c, mf_uperr_t kind, const char *msg)
{
    /* a reused connection closed under us before any byte: once more */
    if (!c->got_byte && c->reused && !c->retried &&
        (kind == MF_UPERR_CLOSED || kind == MF_UPERR_CONNECT)) {
        c->retried = 1;
        conn_free(c->conn);
        c->conn = NULL;
        call_start_conn(c);
        return;
    }
    call_finish(c, 0);
    c->in_cb++;
    c->cbs.on_error(c->arg, kind, msg);
    c->in_cb--;
    call_free(c);
}

static void
call_end(mf_upcall_t *c)
{
    call_finish(c, 1);
    c->in_cb++;
    c->cbs.on_end(c->arg);
    c->in_cb--;
    call_free(c);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_upcall_t *c = arg;
    char msg[512];

    MF_UNUSED(fd);
    MF_UNUSED(what);
    if (!c->connected) {
        snprintf(msg, sizeof(msg), "could not connect to %s:%d within %.0f ms",
                 c->url.host, c->url.port, c->opts.connect_timeout_ms);
    } else if (c->at_deadline) {
        snprintf(msg, sizeof(msg),
                 "%s:%d did not complete its answer within %.0f ms",
                 c->url.host, c->url.port, c->opts.total_timeout_ms);
    } else if (!c->got_head) {
        snprintf(msg, sizeof(msg), "%s:%d sent no response within %.0f ms",
                 c->url.host, c->url.port, c->opts.first_byte_timeout_ms);
    } else if (c->opts.idle_by_progress) {
        snprintf(msg, sizeof(msg), "%s:%d sent no complete event for %.0f ms",
                 c->url.host, c->url.port, c->opts.idle_timeout_ms);
    } else {
        snprintf(msg, sizeof(msg), "%s:%d sent nothing for %.0f ms",
                 c->url.host, c->url.port, c->opts.idle_timeout_ms);
    }
    c->reused = 0; /* a timeout is never retried */
    call_fail(c, MF_UPERR_TIMEOUT, msg);
}

static int
deliver(void *arg, const char *data, size_t len)
{
    mf_upcall_t *c = arg;

    if (len > 0 && !c->cancelled) {
        c->cbs.on_data(c->arg, data, len);
    }
    return c->cancelled ? MF_ERR : MF_OK;
}

/* Feeds body bytes from the input buffer. Returns 1 when the call ended. */
static int
read_body(mf_upcall_t *c, struct evbuffer *in)
{
    while (evbuffer_get_length(in) > 0 && !c->cancelled && !c->paused) {
        struct evbuffer_iovec v;
        size_t n;

        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) {
            break;
        }
        n = v.iov_len;
        if (c->body_mode == BODY_LENGTH) {
            if (n > c->remaining) {
                n = (size_t)c->remaining;
            }
            c->in_cb++;
            deliver(c, v.iov_base, n);
            c->in_cb--;
            c->remaining -= n;
            evbuffer_drain(in, n);
            if (c->cancelled) {
                call_free(c);
                return 1;
            }
            if (c->remaining == 0) {
                call_end(c);
                return 1;
            }
        } else if (c->body_mode == BODY_CHUNKED) {
            ssize_t used;

            c->in_cb++;
            used = mf_http_chunked_feed(&c->chunked, v.iov_base, n, deliver, c);
            c->in_cb--;
            if (c->cancelled) {
                call_free(c);
                return 1;
            }
            if (used < 0) {
                call_fail(c, MF_UPERR_PROTOCOL,
                          "malformed chunked body from upstream");
                return 1;
            }
            evbuffer_drain(in, (size_t)used);
            if (c->chunked.done) {
                call_end(c);
                return 1;
            }
        } else {
            c->in_cb++;
            deliver(c, v.iov_base, n);
            c->in_cb--;
            evbuffer_drain(in, n);
            if (c->cancelled) {
                call_free(c);
                return 1;
            }
        }
    }
    return 0;
}

/* Reads what arrived. Returns 1 when the call is over and freed. */
static int
call_process(mf_upcall_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->conn->bev);

    if (evbuffer_get_length(in) > 0) {
        c->got_byte = 1;
    }
    while (!c->got_head) {
        size_t avail = evbuffer_get_length(in), hlen;
        size_t look = avail < c->opts.max_header ? avail : c->opts.max_header;
        const char *data, *err;
        mf_http_head_t *head;

        if (look == 0) {
            return 0;
        }
        data = (const char *)evbuffer_pullup(in, (ssize_t)look);
        hlen = mf_http_head_end(data, look);
        if (hlen == 0) {
            if (avail >= c->opts.max_header) {
                call_fail(c, MF_UPERR_PROTOCOL,
                          "upstream response head is too large");
                return 1;
            }
            return 0;
        }
        head = malloc(sizeof(*head));
        if (head == NULL ||
            mf_http_parse_response_head(data, hlen, head, &err) != MF_OK) {
            free(head);
            call_fail(c, MF_UPERR_PROTOCOL,
                      "upstream sent a malformed HTTP response");
            return 1;
        }
        if (head->status >= 100 && head->status < 200) {
            free(head);
            evbuffer_drain(in, hlen);
            continue; /* 100 Continue and friends */
        }
        c->got_head = 1;
        c->keep_alive = head->keep_alive;
        if (head->status == 204 || head->status == 304) {
            c->body_mode = BODY_NONE;
        } else if (head->chunked) {
            c->body_mode = BODY_CHUNKED;
        } else if (head->content_length >= 0) {
            c->body_mode = BODY_LENGTH;
            c->remaining = (uint64_t)head->content_length;
        } else {
            c->body_mode = BODY_CLOSE;
            c->keep_alive = 0;
        }
        set_timer(c, c->opts.idle_timeout_ms);
        c->in_cb++;
        c->cbs.on_head(c->arg, head);
        c->in_cb--;
        free(head);
        evbuffer_drain(in, hlen);
        if (c->cancelled) {
            call_free(c);
            return 1;
        }
        if (c->body_mode == BODY_NONE ||
            (c->body_mode == BODY_LENGTH && c->remaining == 0)) {
            call_end(c);
            return 1;
        }
    }
    if (read_body(c, in)) {
        return 1;
    }
    if (!c->paused && !c->opts.idle_by_progress) {
        set_timer(c, c->opts.idle_timeout_ms);
    }
    return 0;
}

static void
call_read_cb(struct bufferevent *bev, void *arg)
{
    MF_UNUSED(bev);
    call_process(arg);
}

/* Why a TLS handshake failed, as a phrase (static or thread-local). */
static const char *
tls_reason(struct bufferevent *bev, unsigned long err, unsigned long kind)
{
    static _Thread_local char text[256];
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    const char *why;

    if (err != 0 && ERR_GET_REASON(err) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
        vr != X509_V_OK) {
        snprintf(text, sizeof(text), "certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
        return text;
    }
    if (err != 0) {
        why = ERR_reason_error_string(err);
        if (why != NULL) {
            return why;
        }
        ERR_error_string_n(err, text, sizeof(text));
        return text;
    }
    switch (kind) {
    case SSL_ERROR_SSL:
        return "TLS protocol error (does the port speak TLS?)";
    case SSL_ERROR_SYSCALL:
        return "the peer closed the connection during the handshake";
    default:
        snprintf(text, sizeof(text), "TLS error %lu", kind);
        return text;
    }
}

static void
call_event_cb(struct bufferevent *bev, short what, void *arg)
{
    mf_upcall_t *c = arg;
    char msg[1024];

    if (what & BEV_EVENT_CONNECTED) {
        c->connected = 1;
        arm_deadline(c);
        set_timer(c, c->opts.first_byte_timeout_ms);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* drain what is buffered first */
        if (evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
            c->paused = 0;
            if (call_process(c)) {
                return;
            }
        }
        if (c->got_head && c->body_mode == BODY_CLOSE) {
            call_end(c);
            return;
        }
        call_fail(c, MF_UPERR_CLOSED,
                  c->got_head ? "upstream closed the connection before the "
                                "response ended"
                              : "upstream closed the connection without "
                                "answering");
        return;
    }
    if (!c->connected) {
        unsigned long ssl_err = 0, ssl_kind = 0;
        int dns_err = bufferevent_socket_get_dns_error(bev);

        {
            unsigned long e;

            /* libevent records SSL_get_error()'s kind (no library) before
             * OpenSSL's own errors: the last of these says most */
            while ((e = bufferevent_get_openssl_error(bev)) != 0) {
                if (ERR_GET_LIB(e) == 0) {
                    ssl_kind = e;
                } else {
                    ssl_err = e;
                }
            }
        }
        if (dns_err) {
            snprintf(msg, sizeof(msg), "cannot resolve %s: %s", c->url.host,
                     evutil_gai_strerror(dns_err));
        } else if (ssl_err || ssl_kind) {
            snprintf(msg, sizeof(msg), "TLS handshake with %s:%d failed: %s",
                     c->url.host, c->url.port,
                     tls_reason(bev, ssl_err, ssl_kind));
        } else {
            snprintf(msg, sizeof(msg), "cannot connect to %s:%d: %s",
                     c->url.host, c->url.port,
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        }
        call_fail(c, MF_UPERR_CONNECT, msg);
        return;
    }
    snprintf(msg, sizeof(msg), "connection to %s:%d failed: %s", c->url.host,
             c->url.port, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    call_fail(c, MF_UPERR_CLOSED, msg);
}

static void
call_send(mf_upcall_t *c)
{
    struct bufferevent *bev = c->conn->bev;
    struct evbuffer *o = bufferevent_get_output(bev);

    bufferevent_setcb(bev, call_read_cb, NULL, call_event_cb, c);
    c->conn->requests++;
    if (c->reused && !c->url.tls) {
        /* an idle plain connection: write now, watch only for a rest */
        bufferevent_disable(bev, EV_WRITE);
        bufferevent_enable(bev, EV_READ);
        evbuffer_add(o, c->req, c->req_len);
        mf_evbuffer_write(o, bufferevent_getfd(bev));
        if (evbuffer_get_length(o) > 0) {
            bufferevent_enable(bev, EV_WRITE);
        }
        return;
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    evbuffer_add(o, c->req, c->req_len);
}

static void
call_start_conn(mf_upcall_t *c)
{
    mf_worker_t *w = c->worker;
    char key[300];
    mf_upconn_t *uc;
    struct bufferevent *bev;

    c->connected = 0;
    c->got_head = 0;
    c->got_byte = 0;
    c->deadline = 0; /* armed when the request goes out */
    snprintf(key, sizeof(key), "%d|%s|%d|%d", c->url.tls, c->url.host,
             c->url.port, c->opts.tls_verify);
    uc = c->retried ? NULL : pool_get(w->pool, key);
    if (uc != NULL) {
        c->conn = uc;
        c->connected = 1;
        c->reused = 1;
        arm_deadline(c);
        set_timer(c, c->opts.first_byte_timeout_ms);
        call_send(c);
        return;
    }
    c->reused = 0;
    if (c->url.tls) {
        SSL *ssl =
            SSL_new(c->opts.tls_verify ? w->ssl_ctx : w->ssl_ctx_noverify);

        SSL_set_tlsext_host_name(ssl, c->url.host);
        if (c->opts.tls_verify) {
            SSL_set1_host(ssl, c->url.host);
        }
        bev = bufferevent_openssl_socket_new(w->base, -1, ssl,
                                             BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    } else {
        bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    uc = mf_xcalloc(1, sizeof(*uc));
    uc->bev = bev;
    uc->pool = w->pool;
    uc->worker = w;
    memcpy(uc->key, key, sizeof(key));
    c->conn = uc;
    call_send(c);
    set_timer(c, c->opts.connect_timeout_ms);
    if (bufferevent_socket_connect_hostname(bev, w->dns, AF_UNSPEC, c->url.host,
                                            c->url.port) != 0) {
        /* the error event has been or will be reported */
        return;
    }
}

mf_upcall_t *
mf_upstream_call(mf_worker_t *w, const mf_url_t *url,
                 const mf_upcall_opts_t *opts, const char *req, size_t len,
                 const mf_upcall_cbs_t *cbs, void *arg)
{
    mf_upcall_t *c = mf_xcalloc(1, sizeof(*c));

    c->worker = w;
    c->url = *url;
    c->url.path = NULL;
    c->opts = *opts;
    if (c->opts.max_header == 0) {
        c->opts.max_header = 64 * 1024;
    }
    c->cbs = *cbs;
    c->arg = arg;
    c->req = mf_xmalloc(len);
    memcpy(c->req, req, len);
    c->req_len = len;
    c->timer = evtimer_new(w->base, timer_cb, c);
    return c;
}

void
mf_upcall_start(mf_upcall_t *c)
{
    call_start_conn(c);
}

void
mf_upcall_cancel(mf_upcall_t *c)
{
    if (c == NULL || c->cancelled || c->finished) {
        return;
    }
    c->cancelled = 1;
    evtimer_del(c->timer);
    if (c->conn) {
        conn_free(c->conn);
        c->conn = NULL;
    }
    if (c->in_cb == 0) {
        call_free(c);
    }
}

int
mf_upcall_connected(const mf_upcall_t *c)
{
    return c != NULL && c->connected;
}

void
mf_upcall_pause(mf_upcall_t *c, int paused)
{
    if (c == NULL || c->cancelled || c->finished || c->conn == NULL) {
        return;
    }
    c->paused = paused;
    if (paused) {
        bufferevent_disable(c->conn->bev, EV_READ);
        evtimer_del(c->timer);
    } else {
        bufferevent_enable(c->conn->bev, EV_READ);
        set_timer(c, c->opts.idle_timeout_ms);
        if (evbuffer_get_length(bufferevent_get_input(c->conn->bev)) > 0) {
            call_process(c);
        }
    }
}

void
mf_upcall_progress(mf_upcall_t *c)
{
    if (c == NULL || c->cancelled || c->finished || c->paused || !c->got_head) {
        return;
    }
    set_timer(c, c->opts.idle_timeout_ms);
}

int
mf_url_parse(const char *url, size_t len, mf_url_t *u, char *pathbuf,
             size_t pathcap)
{
    const char *p = url, *end = url + len, *host, *hend, *path;
    size_t hl;

    memset(u, 0, sizeof(*u));
    if (len >= 8 && strncasecmp(p, "https://", 8) == 0) {
        u->tls = 1;
        u->port = 443;
        p += 8;
    } else if (len >= 7 && strncasecmp(p, "http://", 7) == 0) {
        u->port = 80;
        p += 7;
    } else {
        return MF_ERR;
    }
    host = p;
    path = memchr(p, '/', (size_t)(end - p));
    if (path == NULL) {
        path = end;
    }
    hend = path;
    if (*host == '[') {
        const char *rb = memchr(host, ']', (size_t)(path - host));

        if (rb == NULL) {
            return MF_ERR;
        }
        hl = (size_t)(rb - host - 1);
        if (hl == 0 || hl >= sizeof(u->host)) {
            return MF_ERR;
        }
        memcpy(u->host, host + 1, hl);
        u->host[hl] = '\0';
        hend = rb + 1;
        if (hend < path && *hend == ':') {
            u->port = atoi(hend + 1);
        }
    } else {
        const char *colon = memchr(host, ':', (size_t)(path - host));

        if (colon != NULL) {
            u->port = atoi(colon + 1);
            hend = colon;
        }
        hl = (size_t)(hend - host);
        if (hl == 0 || hl >= sizeof(u->host)) {
            return MF_ERR;
        }
        memcpy(u->host, host, hl);
        u->host[hl] = '\0';
    }
    if (u->port <= 0 || u->port > 65535) {
        return MF_ERR;
    }
    if ((size_t)(end - path) + 2 > pathcap) {
        return MF_ERR;
    }
    if (path == end) {
        memcpy(pathbuf, "/", 2);
    } else {
        memcpy(pathbuf, path, (size_t)(end - path));
        pathbuf[end - path] = '\0';
    }
    u->path = pathbuf;
    return MF_OK;
}
