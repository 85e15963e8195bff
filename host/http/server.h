/*
 * The server: worker threads, each with its own event loop, SO_REUSEPORT
 * listener and upstream pool; client connections that read requests
 * (bounded, timed) and hand them to the request module.
 */
#ifndef MF_SERVER_H
#define MF_SERVER_H

#include <manifold/plugin.h>

#include "config/config.h"
#include "http/http.h"
#include "http/worker-t.h"

typedef struct mf_server_s {
    char *host;
    int port; /* the bound port (after :0) */
    int nworkers;
    mf_worker_t *workers;
    evutil_socket_t first_fd;
    atomic_int draining;
    double drain_deadline_ms;
    int loopback;      /* the listener is on a loopback address */
    int reuse_port;    /* set before start: share the port with processes */
    char *status_host; /* set before start: the status listener, NULL none */
    int status_port;   /* set before start; the bound port after */
    int status_loopback;
    evutil_socket_t status_fd;
    atomic_int conns;         /* client connections open */
    atomic_int cap_reached;   /* limits.max_conns was met (logged once) */
    atomic_int accept_paused; /* workers whose accept() paused on errors */
    atomic_size_t body_bytes; /* request bodies being read (the budget) */
} mf_server_t;

/* Why a request is refused before its body is read. */
typedef struct mf_req_refusal_s {
    int status;
    const char *type;        /* OpenAI error type */
    const char *code;        /* error code, or NULL */
    const char *message;     /* a sentence */
    const char *retry_after; /* Retry-After value, or NULL */
} mf_req_refusal_t;

/*
 * What a client connection calls in the layer above it (the request
 * module), set once with mf_server_set_handlers before mf_server_start.
 * Head views are valid during the call only.
 */
typedef struct mf_conn_handlers_s {
    /* A whole request was read; `body` (malloc'd) is taken. */
    void (*handle)(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
                   const char *client_addr, char *body, size_t len);
    /* A request refused at intake (its head was read). */
    void (*refuse)(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
                   const char *client_addr, const mf_req_refusal_t *why);
    /* The client connection closed, or the gateway cut it (`why`, NULL:
     * the client closed it), with `undelivered` bytes of output not
     * sent. */
    void (*client_gone)(mf_req_t *r, size_t undelivered, const char *why);
    /* The answer of a finished request has left. */
    void (*delivered)(mf_req_t *r);
    /* A request that never reached the pipeline (refused while read, or
     * the client left mid-upload); `head` may be NULL. */
    void (*log_unserved)(mf_worker_t *w, const mf_http_head_t *head,
                         const char *client_addr, int status, const char *why,
                         uint64_t bytes_in, double start_ms);
    /* The client output drained under the low mark. */
    void (*drained)(mf_req_t *r);
    /* The config in force (limits, the browser guard's lists), NULL when
     * none; *hold goes back to config_release when done with it (also
     * after NULL), a few lines later: the pair may be a window that
     * blocks a reload, and pairs do not nest. */
    const mf_config_t *(*config_acquire)(void **hold);
    void (*config_release)(void *hold);
} mf_conn_handlers_t;

/*
 * Hooks a module registers on every worker: init after the worker is set
 * up (main thread, before it serves), tick once a second on worker 0, fini
 * after its thread stopped; thread_start and thread_stop on the worker's
 * own thread, before its loop runs and after it ended. Any may be NULL.
 * Registered before mf_server_start; at most 8.
 */
typedef struct mf_worker_hooks_s {
    void (*init)(mf_worker_t *w);
    void (*tick)(mf_worker_t *w);
    void (*fini)(mf_worker_t *w);
    void (*thread_start)(mf_worker_t *w);
    void (*thread_stop)(mf_worker_t *w);
} mf_worker_hooks_t;

void mf_server_set_handlers(const mf_conn_handlers_t *h);
void mf_server_add_hooks(const mf_worker_hooks_t *h);

/* Binds and starts the workers; MF_ERR with a logged reason. */
int mf_server_start(mf_server_t *s, const char *host, int port, int nworkers);
/* Stops accepting, lets requests in flight finish until drain_ms, then
 * stops the workers and joins them. */
void mf_server_stop(mf_server_t *s, double drain_ms);
/* Requests in flight over all workers. */
int mf_server_in_flight(mf_server_t *s);

/* For the request module. */
struct bufferevent *mf_conn_bev(mf_conn_t *c);
/* The response is written (queued): keep the connection for the next
 * request, or close it, once the output has left. Returns 1 when output
 * is still waiting on the socket: the request stays tied to the connection
 * until the delivered handler (all left) or client_gone (cut); 0 when
 * the connection is done with the request now. */
int mf_conn_req_done(mf_conn_t *c, int keep_alive);
/* Calls the drained handler when the output falls under low (0 = off). */
void mf_conn_watch_drain(mf_conn_t *c, size_t low);
int mf_conn_keep_alive(mf_conn_t *c);
/* Ties the request being served to the connection. */
void mf_conn_set_req(mf_conn_t *c, mf_req_t *r);
/* The listener the connection came in on (mf_listener_t). */
int mf_conn_listener(const mf_conn_t *c);

#endif
