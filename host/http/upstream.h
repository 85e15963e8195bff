/*
 * Upstream HTTP/1.1 client: a keep-alive connection pool per worker (plain
 * and TLS), async DNS, response framing (length, chunked, close) and
 * connect / first-byte / idle timeouts and a deadline for the whole answer.
 */
#ifndef MF_UPSTREAM_H
#define MF_UPSTREAM_H

#include <event2/buffer.h>

#include "http/http.h"
#include "http/worker-t.h"

typedef struct mf_upcall_s mf_upcall_t;

/* A parsed http(s) URL. */
typedef struct mf_url_s {
    int tls;
    char host[256];
    int port;
    const char *path; /* points into the original string */
} mf_url_t;

int mf_url_parse(const char *url, size_t len, mf_url_t *u, char *pathbuf,
                 size_t pathcap);

typedef enum {
    MF_UPERR_CONNECT = 1, /* refused, DNS, TLS handshake */
    MF_UPERR_TIMEOUT,     /* connect, first byte or idle timeout */
    MF_UPERR_CLOSED,      /* closed before the response ended */
    MF_UPERR_PROTOCOL     /* not HTTP, or a malformed body */
} mf_uperr_t;

typedef struct mf_upcall_cbs_s {
    /* The head arrived; views valid during the call. */
    void (*on_head)(void *arg, const mf_http_head_t *head);
    /* Body bytes (de-chunked). */
    void (*on_data)(void *arg, const char *data, size_t len);
    /* The body is complete; the call is over. */
    void (*on_end)(void *arg);
    /* The call failed; it is over. `got_head` says whether on_head ran. */
    void (*on_error)(void *arg, mf_uperr_t kind, const char *msg);
} mf_upcall_cbs_t;

typedef struct mf_upcall_opts_s {
    double connect_timeout_ms;
    double first_byte_timeout_ms;
    double idle_timeout_ms;
    /* > 0: the whole answer must end within this from the request being
     * sent, however the bytes trickle in */
    double total_timeout_ms;
    /* body bytes do not re-arm the idle timer: only mf_upcall_progress
     * does (a stream's deadline is per event, not per byte) */
    int idle_by_progress;
    int tls_verify;
    size_t max_header;
} mf_upcall_opts_t;

/*
 * Writes a bufferevent's output straight to its socket, outside the
 * bufferevent's write callback (which keeps the output's front frozen).
 * Returns what evbuffer_write returns; errno tells a retriable error.
 */
int mf_evbuffer_write(struct evbuffer *out, evutil_socket_t fd);

mf_uppool_t *mf_uppool_new(void);
void mf_uppool_free(mf_uppool_t *p);
/* Closes idle connections (at shutdown). */
void mf_uppool_close_idle(mf_uppool_t *p);

/* Prepares a request: `req` is the whole request (head and body), copied.
 * The callbacks run on the worker's loop; none runs after cancel or
 * after on_end/on_error. NULL when the URL cannot be used. */
mf_upcall_t *mf_upstream_call(mf_worker_t *w, const mf_url_t *url,
                              const mf_upcall_opts_t *opts, const char *req,
                              size_t len, const mf_upcall_cbs_t *cbs,
                              void *arg);
/* Starts the call made by mf_upstream_call (kept apart so the caller
 * holds the handle before a synchronous failure is reported). */
void mf_upcall_start(mf_upcall_t *c);
/* Abandons a call; its connection is closed. Safe inside its callbacks. */
void mf_upcall_cancel(mf_upcall_t *c);
/* Whether the call reached its upstream: a connection was made and the
 * request went out on it. Valid until the call is over (inside on_error
 * too). */
int mf_upcall_connected(const mf_upcall_t *c);
/* Stops or restarts reading the response (backpressure); the idle timer
 * does not run while paused. */
void mf_upcall_pause(mf_upcall_t *c, int paused);

/* The caller saw the answer progress (a complete stream event): re-arms
 * the idle timer. A no-op on NULL, a paused or an ended call. */
void mf_upcall_progress(mf_upcall_t *c);

/* TLS client contexts of a worker. */
SSL_CTX *mf_upstream_ssl_ctx(int verify);

#endif
