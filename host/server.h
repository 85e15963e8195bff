/*
 * The server: worker threads, each with its own event loop, SO_REUSEPORT
 * listener and upstream pool; client connections that read requests
 * (bounded, timed) and hand them to the request module.
 */
#ifndef MF_SERVER_H
#define MF_SERVER_H

#include "runtime.h"

typedef struct mf_server_s {
    char *host;
    int port; /* the bound port (after :0) */
    int nworkers;
    mf_worker_t *workers;
    evutil_socket_t first_fd;
    atomic_int draining;
    double drain_deadline_ms;
    int loopback;     /* the listener is on a loopback address */
    int reuse_port;   /* set before start: share the port with processes */
    atomic_int conns; /* client connections open */
    atomic_int cap_reached;   /* limits.max_conns was met (logged once) */
    atomic_int accept_paused; /* workers whose accept() paused on errors */
    atomic_size_t body_bytes; /* request bodies being read (the budget) */
} mf_server_t;

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
 * until mf_req_delivered (all left) or mf_req_client_gone (cut); 0 when
 * the connection is done with the request now. */
int mf_conn_req_done(mf_conn_t *c, int keep_alive);
/* Calls mf_req_drained when the output falls under low (0 = off). */
void mf_conn_watch_drain(mf_conn_t *c, size_t low);
int mf_conn_keep_alive(mf_conn_t *c);
/* Ties the request being served to the connection. */
void mf_conn_set_req(mf_conn_t *c, mf_req_t *r);

#endif
