/*
 * Types only: a worker thread (event loop, listener, upstream pool) and
 * the handles of what it owns.
 */
#ifndef MF_WORKER_T_H
#define MF_WORKER_T_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct mf_uppool_s mf_uppool_t;
typedef struct mf_worker_s mf_worker_t;
typedef struct mf_conn_s mf_conn_t;

struct mf_worker_s {
    int id;
    struct event_base *base;
    struct evdns_base *dns;
    struct evconnlistener *listener;
    struct evconnlistener *status_listener; /* NULL: no status listener */
    struct event *wake;
    SSL_CTX *ssl_ctx;
    SSL_CTX *ssl_ctx_noverify;
    mf_uppool_t *pool;
    pthread_t thread;
    uint64_t seq;
    int stopping;
    struct mf_server_s *server;
    mf_conn_t *conns; /* all client connections */
    atomic_int in_flight;
    atomic_uint_fast64_t requests;
    struct mf_redis_conn_s *redis; /* the worker's Redis connection */
    struct event *tick;         /* worker 0: key probes and health sync, 1/s */
    struct event *accept_retry; /* re-enables accept after an error */
    int accept_backoff_ms;      /* 0 unless accept() is paused */
    struct event *accept_quiet; /* ends the episode after 1 s of accepts */
    int accept_episode;         /* accept() failed and has not been quiet */
};

#endif
