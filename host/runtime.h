/*
 * The host's runtime types: generations (stages, providers, plugin handles,
 * Lua states), workers and requests. Only host modules include this.
 */
#ifndef MF_RUNTIME_H
#define MF_RUNTIME_H

#include <event2/event.h>
#include <event2/bufferevent.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "config.h"
#include "http.h"
#include "plugin.h"
#include "sse.h"
#include "evstream.h"

typedef struct mf_lua_stage_s mf_lua_stage_t;
typedef struct mf_upcall_s mf_upcall_t;
typedef struct mf_uppool_s mf_uppool_t;
typedef struct mf_worker_s mf_worker_t;
typedef struct mf_conn_s mf_conn_t;

typedef enum { MF_STAGE_KIND_C, MF_STAGE_KIND_LUA } mf_stage_kind_t;

/* Per-stage counters, updated by workers. */
typedef struct mf_stage_stats_s {
    atomic_uint_fast64_t requests; /* requests that ran one of its hooks */
    atomic_uint_fast64_t errors;   /* callbacks that failed */
    atomic_uint_fast64_t time_ns;  /* time spent in its callbacks */
} mf_stage_stats_t;

/* A file a stage was loaded from, to tell whether it changed since. */
typedef struct mf_fileid_s {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int missing;
} mf_fileid_t;

/*
 * A loaded stage. Generations share the instances of stages that did not
 * change (same file contents on disk, same config), so a reload re-inits
 * only what changed; the instance is freed (fini, dlclose, lua_close) with
 * its last generation.
 */
typedef struct mf_pstage_s {
    atomic_int refs;
    char *name;
    char *file;
    mf_stage_kind_t kind;
    mf_dso_t *dso;           /* C */
    const mf_plugin_t *desc; /* C */
    void *state;             /* C */
    mf_lua_stage_t *lua;     /* Lua: one state per worker */
    unsigned hooks;          /* bit per mf_stage_t it serves */
    atomic_int enabled;
    int conf_enabled;   /* `enabled` in the config it was loaded with */
    json_t *config;     /* its config as loaded */
    mf_fileid_t *files; /* the stage file, then Lua modules it required */
    size_t nfiles;
    unsigned gen_id;  /* generation that loaded it */
    double loaded_at; /* unix time */
    mf_stage_stats_t stats;
    pthread_mutex_t err_lock;
    char last_error[512];
    double last_error_at;
} mf_pstage_t;

/* Records the stage's last error (reload or runtime), thread-safe. */
void mf_stage_set_error(mf_pstage_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Copies the last error into buf ("" when none); returns its time. */
double mf_stage_get_error(mf_pstage_t *s, char *buf, size_t cap);
/* The stage's version string ("" when it declares none). */
const char *mf_stage_version(const mf_pstage_t *s);

/* A parsed http(s) URL. */
typedef struct mf_url_s {
    int tls;
    char host[256];
    int port;
    const char *path; /* points into the original string */
} mf_url_t;

int mf_url_parse(const char *url, size_t len, mf_url_t *u, char *pathbuf,
                 size_t pathcap);

/* A configured provider, bound to its plugin. */
typedef struct mf_prov_s {
    mf_provider_conf_t *conf;
    mf_dso_t *dso;
    const mf_provider_t *ops;
    void *state;
    size_t index;
    atomic_uint key_rr;
    struct mf_keyh_s **keys; /* health of each non-empty key (keypool.c) */
    const char **key_str;    /* those keys (the config's strings) */
    size_t nkeys;
} mf_prov_t;

typedef struct mf_gen_s {
    unsigned id;
    atomic_int refs;
    double created_at;           /* unix time */
    struct mf_gen_s *next_alive; /* list of generations not yet freed */
    mf_config_t *config;
    mf_pstage_t **stages;
    size_t nstages;
    mf_prov_t *providers;
    size_t nproviders;
    mf_dso_t **provider_dsos;
    size_t nprovider_dsos;
    unsigned hooks; /* union of stage hooks */
    int nworkers;
} mf_gen_t;

typedef enum { MF_PROTO_OPENAI = 0, MF_PROTO_ANTHROPIC } mf_proto_t;

/* An async host service call a request waits on (HTTP, Redis); cancelled
 * (the completion never runs) when the request ends first. */
typedef struct mf_async_s {
    struct mf_async_s *next;
    struct mf_async_s *prev;
    void (*cancel)(struct mf_async_s *a); /* unlinked before the call */
} mf_async_t;

typedef struct mf_hlist_s {
    mf_header_t *v;
    size_t n;
    size_t cap;
} mf_hlist_t;

typedef struct mf_tgt_s mf_tgt_t; /* a target's health (balancer.c) */

typedef struct mf_rtarget_s {
    mf_prov_t *prov;
    mf_str_t model; /* upstream model */
    unsigned weight;
    mf_tgt_t *tgt; /* NULL: not a route's (stages, default routing) */
} mf_rtarget_t;

typedef enum {
    MF_PHASE_REQUEST = 0,
    MF_PHASE_ROUTE,
    MF_PHASE_AUTHORIZE, /* the provider's authorize (may pause) */
    MF_PHASE_ATTEMPT,
    MF_PHASE_UPSTREAM,
    MF_PHASE_UPSTREAM_RESPONSE,
    MF_PHASE_RESPONSE_HEADERS,
    MF_PHASE_BODY,
    MF_PHASE_FINISHED
} mf_phase_t;

struct mf_req_s {
    mf_pool_t *pool;
    mf_worker_t *worker;
    mf_conn_t *conn; /* NULL once the client went away */
    mf_gen_t *gen;
    void **ctx;   /* one slot per stage */
    uint64_t ran; /* stages that had a callback run (bit per index < 64) */

    /* what the client sent */
    mf_str_t id;
    mf_str_t method;
    mf_str_t path;
    mf_str_t client_addr;
    mf_hlist_t req_headers;
    mf_str_t body; /* raw request body */
    json_t *json;  /* parsed body */
    int body_dirty;
    mf_endpoint_t endpoint;
    mf_proto_t proto;
    int stream;
    int http10;      /* an HTTP/1.0 client: no chunked coding */
    int close_after; /* the connection ends with this answer */
    int client_wants_usage;
    mf_str_t model;       /* current model (routing may change it) */
    mf_str_t model_asked; /* what the client asked for */
    mf_str_t consumer;

    /* routing */
    mf_rtarget_t *targets;
    size_t ntargets;
    size_t targets_cap;
    size_t target_idx;
    const mf_route_conf_t *route; /* the route that planned the targets */
    int key_idx;                  /* key of the current attempt, -1 none */
    uint64_t keys_tried;          /* keys of the current target tried (bits) */
    double cool_ms;               /* shortest wait for a cooling key seen */
    int skipped_rate;             /* targets skipped: every key cooling */
    int skipped_open;             /* targets skipped: breaker open */
    int skipped_keys;             /* targets skipped: every key disabled */
    int attempt_open;  /* key and target counted; attempt_close owed */
    mf_tgt_t *att_tgt; /* the current attempt's target health */
    double att_start;  /* when the current attempt started */
    struct event *attempt_timer; /* time to first token */
    mf_buf_t tried;              /* "provider/model:status,..." for logs */

    /* the current attempt */
    mf_prov_t *prov;
    mf_str_t up_model;
    mf_str_t up_key;
    mf_str_t up_url;
    mf_str_t up_body;
    mf_hlist_t up_req_headers;
    mf_hlist_t up_resp_headers;
    int up_status;
    int attempts;
    int reached; /* a request went out to an upstream (usage may be owed) */
    mf_upcall_t *call;
    int call_paused;
    mf_buf_t up_buf; /* non-stream or error body */
    mf_sse_parser_t sse;
    mf_evstream_t evs; /* the stream is AWS event-stream framed */
    int evs_framing;
    int sse_active;
    mf_error_t *prov_err; /* api->set_error of the current attempt */
    int passthrough;      /* stream bytes forwarded untouched */
    int saw_done;
    int done_sent;  /* the canonical stream's end was emitted */
    int held;       /* chunk_out holds only preamble events: not committed */
    void *prov_ctx; /* the provider's per-request slot */
    struct mf_anthropic_stream_s *anth; /* Anthropic inbound stream state */
    int64_t events_seen;
    double up_start;
    int body_failed;         /* an on_response_body stage failed */
    int usage_final;         /* the stream reached the provider's last usage */
    uint64_t delivered_text; /* bytes of answer text sent in stream events */

    /* the response */
    mf_hlist_t resp_headers;
    int status;
    int head_sent;
    int finished; /* response complete or aborted */
    mf_str_t error;
    mf_usage_t usage;
    int have_usage;
    json_t *resp_json;  /* canonical response from a translating provider */
    mf_buf_t chunk_out; /* canonical chunks emitted by a provider */
    mf_str_t replace;   /* set_response_chunk */
    int replaced;

    /* timing */
    double start_ms;
    double start_wall;
    double first_byte_ms;
    double upstream_ms;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t bytes_undelivered; /* output the connection was cut with */
    int delivering; /* finished; the answer is still leaving (not logged) */

    /* pipeline */
    mf_phase_t phase;
    mf_stage_t cur_stage;
    size_t stage_idx;
    int paused;
    int in_step;
    int resume_pending;
    mf_action_t resume_action;
    int logged;
    int done;
    int lua_yielded; /* a Lua stage yielded: resume it, not the next */
    struct event *timer;
    mf_async_t *asyncs; /* service calls in flight */
};

struct mf_worker_s {
    int id;
    struct event_base *base;
    struct evdns_base *dns;
    struct evconnlistener *listener;
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
};

/* Generations */

/*
 * Builds a generation from a validated config (taking ownership of it on
 * success). Stages of `prev` whose files and config did not change are
 * shared, unless `force` names them ("*" = every stage). NULL with a
 * sentence naming file and line in err; the config is then the caller's.
 */
mf_gen_t *mf_gen_build(mf_config_t *config, int nworkers, mf_gen_t *prev,
                       const char *force, char *err, size_t errcap);
/* Checks that a plugin of the config's search path serves the type of
 * each provider; MF_ERR with one line per provider (and a "did you
 * mean") in err. Loads and unloads the provider plugins. */
int mf_gen_check_providers(mf_config_t *config, char *err, size_t errcap);
mf_gen_t *mf_gen_acquire(void);
void mf_gen_release(mf_gen_t *g);
void mf_gen_set_current(mf_gen_t *g);
mf_prov_t *mf_gen_find_provider(mf_gen_t *g, mf_str_t name);
mf_pstage_t *mf_gen_find_stage(mf_gen_t *g, const char *name);
/* Calls fn for each generation not yet freed, under the generation lock
 * (fn must not acquire or release generations). */
void mf_gen_foreach_alive(void (*fn)(mf_gen_t *g, void *arg), void *arg);
/* Whether a stage's files changed on disk since it was loaded. */
int mf_stage_files_changed(const mf_pstage_t *s);

/* The callback name of each stage ("on_route"), NULL for the others. */
extern const char *const mf_stage_fn_names[MF_STAGE__COUNT];

/* Pipeline: runs the stages of `stage` from r->stage_idx. */
mf_action_t mf_pipeline_run(mf_req_t *r, mf_stage_t stage);
/* Runs the on_response_body stages over one event or the whole body.
 * MF_ERR when a stage failed: the data must not reach the client. */
int mf_pipeline_body(mf_req_t *r, mf_str_t data, int last);
void mf_pipeline_log_done(mf_req_t *r);

/* The host API table given to plugins. */
extern const mf_host_api_t mf_api;
/* Stage-bit helper. */
#define MF_HOOK(s) (1u << (s))

#endif
