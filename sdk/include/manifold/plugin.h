/*
 * Manifold plugin ABI, version 1.
 *
 * A plugin is a shared object that exports one symbol, mf_plugin_v1(),
 * returning a static descriptor (mf_plugin_t). The host refuses a plugin
 * whose abi_major differs from its own or whose abi_minor is newer than its
 * own. Host services reach a plugin only through the mf_host_api_t table
 * given to init(); functions are only ever appended to it (minor bump).
 *
 * Lifetimes:
 *  - the host owns every request (mf_req_t) and every borrowed mf_str_t view
 *    it lends; a view is valid during the callback only;
 *  - memory from api->palloc() lives as long as the request;
 *  - the plugin owns its state (from init, freed in fini) and its
 *    per-request ctx slot (freed in on_done, which runs exactly once for
 *    every request that ran any stage);
 *  - anything a plugin passes into the host is copied, except where a
 *    function says it takes ownership (json values given to set_* calls).
 *
 * JSON values are jansson's json_t: a plugin that reads or changes the
 * request body links jansson (pkg-config manifold does).
 *
 * Every host function checks the stage it is called in and returns MF_ERR
 * (or NULL) outside the stages its comment names.
 */
#ifndef MF_PLUGIN_H
#define MF_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MF_ABI_MAJOR 1
#define MF_ABI_MINOR 8

#define MF_OK 0
#define MF_ERR (-1)

#define MF_EXPORT __attribute__((visibility("default")))

/* Fills the ABI fields of a descriptor: `MF_PLUGIN_ABI, .name = ...`. */
#define MF_PLUGIN_ABI .abi_major = MF_ABI_MAJOR, .abi_minor = MF_ABI_MINOR

/* A byte string view: (data, len), no hidden NUL. */
typedef struct mf_str_s {
    const char *data;
    size_t len;
} mf_str_t;

#define MF_STR(lit) ((mf_str_t){(lit), sizeof(lit) - 1})
#define MF_STR_NULL ((mf_str_t){NULL, 0})

/* What a stage callback tells the pipeline runner. */
typedef enum mf_action_e {
    MF_CONTINUE = 0, /* go on with the next stage */
    MF_PAUSE = 1,    /* the stage will call api->resume() or respond later */
    MF_RESPOND = 2,  /* the stage answered (api->respond*); stop the phase */
    MF_FAIL = 3      /* host answers 500 and logs plugin and stage */
} mf_action_t;

/* The stages, in the order a request meets them. */
typedef enum mf_stage_e {
    MF_STAGE_INIT = 0, /* inside init()/fini() */
    MF_STAGE_REQUEST,
    MF_STAGE_ROUTE,
    MF_STAGE_UPSTREAM_REQUEST,
    MF_STAGE_UPSTREAM_RESPONSE,
    MF_STAGE_RESPONSE_HEADERS,
    MF_STAGE_RESPONSE_BODY,
    MF_STAGE_LOG,
    MF_STAGE_DONE,
    MF_STAGE_PROVIDER, /* inside a provider callback */
    MF_STAGE_ENDPOINT, /* ABI 1.4: serving a path a stage added */
    MF_STAGE__COUNT
} mf_stage_t;

/* Which header set a header function reads or writes. */
typedef enum mf_headers_e {
    MF_REQUEST_HEADERS = 0,       /* client -> gateway */
    MF_RESPONSE_HEADERS,          /* gateway -> client */
    MF_UPSTREAM_REQUEST_HEADERS,  /* gateway -> upstream, this attempt */
    MF_UPSTREAM_RESPONSE_HEADERS, /* upstream -> gateway, this attempt */
} mf_headers_t;

typedef enum mf_log_level_e {
    MF_LOG_DEBUG = 0,
    MF_LOG_INFO,
    MF_LOG_WARN,
    MF_LOG_ERROR
} mf_log_level_t;

/* The API a request came in on. */
typedef enum mf_endpoint_e {
    MF_ENDPOINT_NONE = 0,
    MF_ENDPOINT_CHAT,       /* POST /v1/chat/completions */
    MF_ENDPOINT_EMBEDDINGS, /* POST /v1/embeddings */
    MF_ENDPOINT_MESSAGES,   /* POST /v1/messages (Anthropic inbound) */
    /* a path the gateway answers itself (model lists, count_tokens, GET
     * and DELETE of a stored Response): on_request runs (authentication),
     * then the gateway answers; no model call, no upstream, nothing to
     * meter */
    MF_ENDPOINT_LOCAL,
    /* ABI 1.6 (count tokens): only in mf_upstream_t, for a provider with
     * parse_count: count the prompt of the canonical request with the
     * upstream's own token-counting endpoint (Anthropic's
     * /v1/messages/count_tokens, Gemini's :countTokens, ...). Stages see
     * such a request as MF_ENDPOINT_LOCAL. */
    MF_ENDPOINT_COUNT_TOKENS,
} mf_endpoint_t;

/* Token usage of a request. -1 = not known. */
typedef struct mf_usage_s {
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t total_tokens;
    int64_t cached_tokens;    /* prompt tokens served from a provider cache */
    int64_t reasoning_tokens; /* part of completion_tokens */
    int estimated;            /* 1: counted by the host, not the upstream */
} mf_usage_t;

/*
 * Facts about a request, filled by api->get_info(). The caller sets `size`
 * to sizeof(mf_req_info_t); fields are only ever appended. Views are valid
 * during the callback.
 */
typedef struct mf_req_info_s {
    size_t size;
    mf_str_t id;             /* request id (x-request-id) */
    mf_str_t method;         /* "POST" */
    mf_str_t path;           /* "/v1/chat/completions" */
    mf_str_t client_addr;    /* "127.0.0.1" */
    mf_str_t consumer;       /* consumer name, empty when anonymous */
    mf_str_t model;          /* model the client asked for */
    mf_str_t provider;       /* provider of the last attempt, or empty */
    mf_str_t upstream_model; /* model sent upstream on the last attempt */
    mf_str_t error;          /* error message sent or seen, or empty */
    mf_endpoint_t endpoint;
    int stream;          /* client asked for a stream */
    int status;          /* status sent to the client; 499 client went away */
    int upstream_status; /* status of the last upstream attempt, 0 if none */
    int attempts;        /* upstream attempts made */
    mf_usage_t usage;
    double start_time;  /* unix time in seconds, with fraction */
    double latency_ms;  /* request start to last byte (or now) */
    double ttft_ms;     /* request start to first body byte sent, -1 */
    double upstream_ms; /* time spent in upstream attempts */
    uint64_t bytes_in;  /* request body bytes */
    uint64_t bytes_out; /* response body bytes sent */
    unsigned generation;
    /* ABI 1.1 */
    mf_str_t tried; /* every attempt, "provider/model:outcome" joined by
                       spaces (outcome: ok, a status, timeout, connect,
                       cut, ttft_timeout, abandoned) */
    /* ABI 1.2 */
    uint64_t bytes_undelivered; /* response bytes the connection was cut
                                   with (the client stopped reading or
                                   left, or the drain time ran out); 0
                                   when the whole answer left */
    /* ABI 1.4: observability */
    int listener;            /* mf_listener_t the request came in on */
    double first_content_ms; /* request start to the first event that
                                carried content (not a role-only chunk,
                                not the first byte), -1 none; the whole
                                body's first byte for a non-stream */
    double attempt_ttfb_ms;  /* last attempt: its start to the upstream's
                                answer head, -1 none */
    double attempt_ms;       /* last attempt: its start to its end (or
                                now), -1 none */
    mf_str_t query;          /* the target's query, without '?' */
    /* ABI 1.5: observability (usage detail, trace context) */
    int64_t cache_write_tokens; /* prompt tokens written to a provider's
                                   cache (part of usage.prompt_tokens,
                                   Anthropic's cache_creation_input_tokens),
                                   -1 unknown */
    mf_str_t trace_id;          /* 32 lowercase hex digits: the trace of
                                   the client's W3C traceparent, else one
                                   made for the request */
    mf_str_t span_id;           /* 16 hex digits: the request's own
                                   (server) span */
    mf_str_t parent_span_id;    /* 16 hex digits: the span of the client's
                                   traceparent, empty when none came */
    int trace_sampled;          /* the client's traceparent flags say
                                   sampled (1 when none came) */
    /* ABI 1.5: caches */
    int cached;     /* 0, or a stage answered from a cache (api->set_cached):
                       1 not counted against quotas, 2 counted as if served */
    int call_depth; /* 0 for a client's request; N for a stage's model
                       call (api->model_call) made N calls deep */
} mf_req_info_t;

/* ABI 1.5: one upstream attempt of a request (api->get_attempt). The
 * caller sets `size`; views valid during the callback. */
typedef struct mf_attempt_info_s {
    size_t size;
    mf_str_t provider;      /* provider name from the config */
    mf_str_t model;         /* model sent upstream */
    mf_str_t outcome;       /* ok, a status ("503"), timeout, connect, cut,
                               ttft_timeout, abandoned; empty while open */
    int status;             /* the upstream's status, 0 when none came */
    int key_index;          /* the provider key's index, -1 none (never the
                               key) */
    double start_ms;        /* request start to the call's start, -1 when no
                               call went out */
    double duration_ms;     /* the call's start to its end (or now), -1 */
    double ttfb_ms;         /* the call's start to the answer head, -1 */
    mf_str_t span_id;       /* 16 hex digits: the attempt's (client) span,
                               the parent a traceparent sent upstream names */
    mf_str_t provider_type; /* the provider's type ("openai", "anthropic",
                               "bedrock", ...) */
} mf_attempt_info_t;

/* A target a route sends to: provider by name and the model it gets. */
typedef struct mf_target_s {
    mf_str_t provider;
    mf_str_t model;
    unsigned weight;
} mf_target_t;

/*
 * What a provider callback is given for one attempt. Views valid during
 * the callback.
 */
typedef struct mf_upstream_s {
    mf_str_t provider; /* provider name from the config */
    mf_str_t type;     /* provider type ("openai", "deepseek", ...) */
    mf_str_t base_url; /* base URL, no trailing slash */
    mf_str_t model;    /* upstream model (after model_map) */
    mf_str_t key;      /* the key picked for this attempt, may be empty */
    mf_endpoint_t endpoint;
    int stream;     /* the request streams */
    int want_usage; /* ask the upstream to report stream usage */
} mf_upstream_t;

/* One server-sent event. Views valid during the callback. */
typedef struct mf_sse_event_s {
    mf_str_t event; /* "event:" field, empty when absent */
    mf_str_t data;  /* "data:" lines joined by "\n" */
    mf_str_t id;
    mf_str_t raw; /* the bytes of the whole event, blank line included */
} mf_sse_event_t;

/* What parse_stream_event says of an event (bit flags). The host holds a
 * stream's usage as exact only once an event flagged MF_EVENT_DONE or
 * MF_EVENT_USAGE_ONLY came (the provider's last usage report); a stream
 * that ends before is logged with usage estimated from what it delivered. */
#define MF_EVENT_PASS 0x0       /* an ordinary event */
#define MF_EVENT_USAGE_ONLY 0x1 /* carries only usage: dropped unless asked */
#define MF_EVENT_DONE 0x2       /* the stream's end marker */
#define MF_EVENT_ERROR 0x4      /* the upstream reported an error in-band */
/* ABI 1.2: the event only opens the answer (a role, no content); the host
 * holds what it emitted until a later event, so a failure before any
 * content can still fail over to the next target. */
#define MF_EVENT_PREAMBLE 0x8

/* An error mapped by a provider: status for the client, type, message. */
typedef struct mf_error_s {
    int status;
    const char *type;  /* "invalid_request_error", "rate_limit_error" .. */
    const char *code;  /* may be NULL */
    char message[512]; /* a sentence, no secrets */
    int retry_after;   /* seconds, 0 = none */
} mf_error_t;

typedef struct mf_req_s mf_req_t;
typedef struct mf_host_api_s mf_host_api_t;

/*
 * Provider callbacks (stage MF_STAGE_PROVIDER). A provider plugin's init()
 * is called once per configured provider that uses one of its types, with
 * that provider's config as JSON; the state it returns is that provider's.
 */
typedef struct mf_provider_s {
    /* Wire protocol spoken to the upstream: "openai", "anthropic", ... The
     * host passes stream bytes through untouched when it equals the
     * client's protocol and no stage watches response bodies. */
    const char *wire;
    /* NULL-terminated list of provider types served. */
    const char *const *types;

    /* Builds the upstream request of one attempt from the canonical
     * request (api->get_body_json) with api->set_upstream_url,
     * api->set_header(MF_UPSTREAM_REQUEST_HEADERS, ...) and
     * api->set_upstream_body or leaves the body to the host (the original
     * bytes when nothing changed, else the canonical JSON). */
    int (*build_request)(mf_req_t *r, void *state, const mf_upstream_t *u);

    /* A complete 2xx body: sets the usage (api->set_usage) and, when
     * `canonical` is set, the canonical (OpenAI) response with
     * api->set_response_json. */
    int (*parse_response)(mf_req_t *r, void *state, mf_str_t body,
                          int canonical);

    /* One stream event: sets usage when it carries some, emits canonical
     * chunks with api->emit_chunk when `canonical` is set, and returns
     * MF_EVENT_* flags, or MF_ERR for an event it cannot read. */
    int (*parse_stream_event)(mf_req_t *r, void *state,
                              const mf_sse_event_t *ev, int canonical);

    /* A non-2xx answer: fills `err` (status for the client, type,
     * message without secrets). */
    int (*parse_error)(mf_req_t *r, void *state, int status, mf_str_t body,
                       mf_error_t *err);

    /* ABI 1.2 (a host older than 1.2 never reads these). */

    /* How a 2xx stream answer is framed: NULL or "sse" (server-sent
     * events), or "aws-eventstream" (the binary framing of Bedrock's
     * ConverseStream): each message reaches parse_stream_event as an
     * event whose `event` is its :event-type (or :exception-type),
     * `id` its :message-type ("event", "exception", "error") and `data`
     * its payload. */
    const char *stream_framing;

    /* Optional, called after build_request for each attempt: may add
     * what needs a service call first (an OAuth token, say) with
     * api->set_header. Returns MF_CONTINUE, or MF_PAUSE after starting
     * api->http_call or api->timer and later calls api->resume(r,
     * MF_CONTINUE), or fails the attempt: api->set_error then MF_FAIL
     * (or api->resume(r, MF_FAIL)). */
    mf_action_t (*authorize)(mf_req_t *r, void *state, const mf_upstream_t *u);

    /* ABI 1.6 (count tokens). Optional: a provider that sets it counts
     * tokens upstream: build_request takes u->endpoint ==
     * MF_ENDPOINT_COUNT_TOKENS (the canonical request's prompt to the
     * upstream's counting endpoint; MF_ERR without api->set_error: this
     * model cannot be counted there, and the host answers its estimate),
     * and parse_count reads the 2xx answer into *tokens (MF_ERR when it
     * cannot). */
    int (*parse_count)(mf_req_t *r, void *state, mf_str_t body,
                       int64_t *tokens);

    void *spare[5];
} mf_provider_t;

/* The descriptor a plugin returns from mf_plugin_v1(). */
typedef struct mf_plugin_s {
    uint16_t abi_major;
    uint16_t abi_minor;
    const char *name;
    const char *version;

    /* Called in MF_STAGE_INIT with the stage's (or provider's) config as a
     * JSON text ("{}" when none). Returns MF_OK and sets *state, or MF_ERR
     * after api->log() of why (the reload is then refused). */
    int (*init)(const mf_host_api_t *api, const char *config_json,
                void **state);
    /* Frees the state; called when the generation is freed. */
    void (*fini)(void *state);

    /* Stage callbacks; NULL = not interested. `ctx` is the plugin's
     * per-request slot, NULL at first. */
    mf_action_t (*on_request)(mf_req_t *r, void *state, void **ctx);
    mf_action_t (*on_route)(mf_req_t *r, void *state, void **ctx);
    mf_action_t (*on_upstream_request)(mf_req_t *r, void *state, void **ctx);
    mf_action_t (*on_upstream_response)(mf_req_t *r, void *state, void **ctx);
    mf_action_t (*on_response_headers)(mf_req_t *r, void *state, void **ctx);
    /* Each SSE event's data, or the whole body (last = 1). A stage may
     * replace what is sent with api->set_response_chunk. Must not pause. */
    mf_action_t (*on_response_body)(mf_req_t *r, void *state, void **ctx,
                                    mf_str_t data, int last);
    /* Usage is known; exporters and settlement. */
    void (*on_log)(mf_req_t *r, void *state, void **ctx);
    /* Exactly once per request; free *ctx here. */
    void (*on_done)(mf_req_t *r, void *state, void **ctx);

    /* Non-NULL for a provider plugin. */
    const mf_provider_t *provider;

    void *spare[8];
} mf_plugin_t;

typedef const mf_plugin_t *(*mf_plugin_entry_t)(void);

/*
 * ABI 1.4: who is calling. The consumer record an identity stage sets in
 * on_request (api->set_consumer_record) and any later stage reads
 * (api->get_consumer): a name, a group, the id of the credential that
 * identified it, and attributes (name, value pairs the identity stage
 * chooses: "budget.usd" = "50", "limits.rpm" = "600", ...). Views are
 * valid during the callback.
 */
typedef struct mf_consumer_s {
    size_t size;           /* set by the caller: sizeof(mf_consumer_t) */
    mf_str_t name;         /* never empty in a record */
    mf_str_t group;        /* empty when none */
    mf_str_t key_id;       /* the credential's id, empty when none */
    const mf_str_t *attrs; /* name, value, name, value, ... (2 * nattrs) */
    size_t nattrs;
} mf_consumer_t;

/*
 * ABI 1.4: an admin command a plugin registers (api->register_command in
 * init). Runs on the main thread (the admin socket's), concurrently with
 * workers running requests: the plugin locks what the two share. `args`
 * is the JSON object the admin request carried (borrowed); the command
 * sets *out to a new JSON value (the host takes the reference) and
 * returns an HTTP status (200, 400 for bad arguments, 404, ...). The
 * command is reachable as long as a generation uses the stage instance
 * that registered it: POST /commands/NAME on the admin socket,
 * `manifoldctl WORD WORD ...`.
 */
typedef int (*mf_command_fn)(void *arg, const json_t *args, json_t **out);

/* ABI 1.5: a stream answer's canonical events as they arrive
 * (api->watch_answer). restart = 1 (data empty): an attempt that failed
 * over before the client saw a byte is abandoned; events begin again. */
typedef void (*mf_answer_watch_fn)(mf_req_t *r, void *arg, mf_str_t data,
                                   int restart);

/* Completion of an async host service; err == NULL on success. */
typedef void (*mf_timer_cb)(mf_req_t *r, void *arg, const char *err);

/* The answer to api->http_call; views valid during the callback only. */
typedef struct mf_http_result_s {
    int status;
    size_t nheaders;
    const mf_str_t *headers; /* name, value, name, value, ... (2 * n) */
    mf_str_t body;
} mf_http_result_t;

/* res is NULL when err is set (connect error, timeout, bad URL, ...). */
typedef void (*mf_http_cb)(mf_req_t *r, void *arg, const mf_http_result_t *res,
                           const char *err);

typedef enum mf_redis_type_e {
    MF_REDIS_NIL = 0,
    MF_REDIS_STRING,
    MF_REDIS_STATUS, /* +OK */
    MF_REDIS_INTEGER,
    MF_REDIS_ARRAY,
    MF_REDIS_ERROR /* -ERR ...: the command ran and Redis refused it */
} mf_redis_type_t;

/* A Redis reply; lives as long as the request (request pool). */
typedef struct mf_redis_reply_s {
    mf_redis_type_t type;
    long long integer;                 /* INTEGER */
    mf_str_t str;                      /* STRING, STATUS, ERROR */
    size_t nelements;                  /* ARRAY */
    struct mf_redis_reply_s *elements; /* ARRAY */
} mf_redis_reply_t;

/* reply is NULL when err is set: no `redis:` configured, Redis down or
 * unreachable (the host reconnects with backoff), or the command timed
 * out. A reply of type MF_REDIS_ERROR is not an err. */
typedef void (*mf_redis_cb)(mf_req_t *r, void *arg,
                            const mf_redis_reply_t *reply, const char *err);

/* ABI 1.4: the endpoint table. Each listener has one table of paths:
 * the gateway's own (POST /v1/chat/completions, GET /healthz, ...) and
 * those stages add with api->add_endpoint. A request whose path no entry
 * serves gets a 404 in the client's protocol. */
typedef enum mf_listener_e {
    MF_LISTENER_CLIENT = 0, /* the client port (`listen`) */
    MF_LISTENER_STATUS = 1  /* the status listener (`status.listen`) */
} mf_listener_t;

/* Serves one request to a path a stage added (stage MF_STAGE_ENDPOINT):
 * answers with api->respond (headers with api->set_header on
 * MF_RESPONSE_HEADERS first) and returns MF_RESPOND, or MF_PAUSE after
 * an async call and api->resume later, or MF_FAIL (the host answers
 * 500). `state` is the plugin's state from init. No other stage runs for
 * such a request but on_log and on_done. */
typedef mf_action_t (*mf_endpoint_fn)(mf_req_t *r, void *state, void *arg);

typedef struct mf_endpoint_def_s {
    size_t size;            /* sizeof(mf_endpoint_def_t) */
    mf_listener_t listener; /* which listener's table */
    const char *method;     /* "GET", ...; NULL or "" = any method */
    const char *path;       /* "/metrics": starts with '/', no '?' */
    int prefix;             /* 1: also every path under path + "/"; an
                               exact entry wins, then the longest prefix */
    mf_endpoint_fn handler;
    void *arg; /* given back to handler */
} mf_endpoint_def_t;

/* ABI 1.4: metrics. A metric lives as long as the process: declaring it
 * again (the same stage after a reload, or another stage) with the same
 * name, type, labels and buckets gives the same metric, so counters
 * survive reloads. Each worker writes its own shard without locks or
 * atomic read-modify-writes; a scrape sums the shards. A metric holds at
 * most max_series label combinations: an observation that would make
 * one more is dropped and counted in
 * manifold_metric_series_dropped_total{metric="..."}. */
typedef struct mf_metric_s mf_metric_t;

typedef enum mf_metric_type_e {
    MF_METRIC_COUNTER = 0, /* only goes up; its name ends in _total */
    MF_METRIC_GAUGE,       /* up and down (add) or set */
    MF_METRIC_HISTOGRAM    /* observations counted in buckets, with sum */
} mf_metric_type_t;

#define MF_METRIC_MAX_LABELS 8
#define MF_METRIC_MAX_BUCKETS 40

typedef struct mf_metric_def_s {
    size_t size; /* sizeof(mf_metric_def_t) */
    mf_metric_type_t type;
    const char *name;          /* [a-zA-Z_:][a-zA-Z0-9_:]* */
    const char *help;          /* one line */
    const char *const *labels; /* label names, NULL-terminated; NULL none */
    const double *buckets;     /* histogram: upper bounds, ascending */
    size_t nbuckets;           /* at most MF_METRIC_MAX_BUCKETS */
    size_t max_series;         /* 0: the host's (status.max_series) */
} mf_metric_def_t;

/* The formats api->metrics_render writes. */
#define MF_METRICS_PROMETHEUS 0  /* text format 0.0.4 */
#define MF_METRICS_OPENMETRICS 1 /* OpenMetrics 1.0, with exemplars */

/* What api->model_call calls (ABI 1.4). */
typedef enum mf_model_kind_e {
    MF_MODEL_CHAT = 0,      /* POST /v1/chat/completions (not streamed) */
    MF_MODEL_EMBEDDINGS = 1 /* POST /v1/embeddings */
} mf_model_kind_t;

typedef struct mf_model_call_s {
    size_t size; /* sizeof(mf_model_call_t) of the caller */
    mf_model_kind_t kind;
    mf_str_t body;       /* the OpenAI request JSON (its `model` included) */
    mf_str_t provider;   /* only this provider serves it; empty: routing */
    uint64_t timeout_ms; /* as api->http_call's (0 = 30 s) */
} mf_model_call_t;

/* ABI 1.4: the answer to api->redis_post, on the request's worker, after
 * the request may be gone: no request, `arg` only. reply (valid during
 * the call) is NULL when err is set. */
typedef void (*mf_redis_post_cb)(void *arg, const mf_redis_reply_t *reply,
                                 const char *err);

/* ABI 1.7 (body edits): one edit of the canonical body's text, for
 * api->edit_body_text: the bytes [offset, offset + len) of the text
 * get_body_text gave, inside the contents of one JSON string, replaced
 * by `text`, plain UTF-8 that the host escapes as JSON string contents. */
typedef struct {
    size_t offset;
    size_t len;
    mf_str_t text;
} mf_body_edit_t;

/*
 * The host API. `size` is sizeof(mf_host_api_t) of the host; a plugin built
 * against a newer minor checks it before using appended functions.
 */
struct mf_host_api_s {
    size_t size;
    uint16_t abi_major;
    uint16_t abi_minor;

    /* Any stage. Writes a line to the host log, tagged with the plugin. */
    void (*log)(mf_log_level_t level, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

    /* Request stages. Memory freed with the request. NULL on failure. */
    void *(*palloc)(mf_req_t *r, size_t size);

    /* Request stages. Fills *info (info->size set by the caller). */
    int (*get_info)(mf_req_t *r, mf_req_info_t *info);

    /* Request stages. Case-insensitive lookup; *value borrowed.
     * MF_ERR when absent. UPSTREAM_REQUEST from on_upstream_request and
     * the provider's build_request; UPSTREAM_RESPONSE from
     * on_upstream_response on; RESPONSE until on_response_headers. */
    int (*get_header)(mf_req_t *r, mf_headers_t which, mf_str_t name,
                      mf_str_t *value);
    /* Sets (replaces) a header; an empty value removes it. Copied. */
    int (*set_header)(mf_req_t *r, mf_headers_t which, mf_str_t name,
                      mf_str_t value);

    /* on_request .. on_upstream_request, provider. The parsed request body
     * (borrowed; a stage may change it in place, then calls
     * body_changed). NULL for a request without a JSON body. */
    json_t *(*get_body_json)(mf_req_t *r);
    /* Marks the body changed: it will be serialized again upstream. */
    void (*body_changed)(mf_req_t *r);

    /* on_request, on_route. The model asked for; set_model changes it and
     * resolves the default targets again. A model name holding a control
     * character (CR, LF, NUL, ...) is refused as a client's is: MF_ERR,
     * nothing changed, a warning logged. */
    mf_str_t (*get_model)(mf_req_t *r);
    int (*set_model)(mf_req_t *r, mf_str_t model);

    /* on_route. Replaces or appends to the ordered targets. A target's
     * provider must exist in the config; a target model holding a control
     * character is refused (MF_ERR). */
    int (*clear_targets)(mf_req_t *r);
    int (*add_target)(mf_req_t *r, const mf_target_t *t);
    /* Any request stage: number of targets and the i-th (borrowed). */
    int (*get_target)(mf_req_t *r, unsigned i, mf_target_t *t);

    /* on_request. Names the consumer (copied); visible to later stages. */
    int (*set_consumer)(mf_req_t *r, mf_str_t name);

    /* on_request .. on_response_headers. Answers the request with status
     * and body (copied); the stage then returns MF_RESPOND. content_type
     * NULL = application/json. */
    int (*respond)(mf_req_t *r, int status, const char *content_type,
                   mf_str_t body);
    /* Same, with the error shape of the client's protocol. */
    int (*respond_error)(mf_req_t *r, int status, const char *type,
                         const char *message);

    /* Ends an MF_PAUSE: `action` as a callback would have returned it. */
    void (*resume)(mf_req_t *r, mf_action_t action);

    /* Provider only. Sets the full URL of the upstream request. */
    int (*set_upstream_url)(mf_req_t *r, mf_str_t url);
    /* Provider only. Sets the upstream body (copied). */
    int (*set_upstream_body)(mf_req_t *r, mf_str_t body);
    /* Provider, on_response_body, on_log. Sets the usage. */
    int (*set_usage)(mf_req_t *r, const mf_usage_t *usage);
    /* Provider only (parse_response, canonical). Takes ownership. */
    int (*set_response_json)(mf_req_t *r, json_t *resp);
    /* Provider only (parse_stream_event, canonical). Takes ownership. */
    int (*emit_chunk)(mf_req_t *r, json_t *chunk);

    /* on_response_body. Replaces what is sent for this event or body. */
    int (*set_response_chunk)(mf_req_t *r, mf_str_t data);

    /* Any stage. Shared dict, shared by all workers. get copies into buf
     * (up to cap) and returns the value length, or MF_ERR when absent.
     * ttl_ms 0 = no expiry. */
    int (*shared_get)(mf_str_t key, char *buf, size_t cap);
    int (*shared_set)(mf_str_t key, mf_str_t value, uint64_t ttl_ms);
    int (*shared_incr)(mf_str_t key, int64_t delta, uint64_t ttl_ms,
                       int64_t *result);
    int (*shared_delete)(mf_str_t key);

    /* Request stages that may pause. Calls cb after ms on the request's
     * worker; the stage returns MF_PAUSE and resumes from cb. ABI 1.6:
     * also on_response_body of a stream, its hold_response callbacks
     * and its timer's own callback: no stage pauses then; cb runs
     * outside the pipeline (never after the request ended) and may do
     * what the callback of that stage's http_call may, and hold the
     * output (hold_response) as in on_response_body. One timer per
     * request: a later call replaces the one pending. */
    int (*timer)(mf_req_t *r, uint64_t ms, mf_timer_cb cb, void *arg);

    /* ABI 1.1 (check api->abi_minor >= 1 before use). */

    /* Request stages that may pause. An HTTP/1.1 call (http or https,
     * pooled connections) on the request's worker; the stage returns
     * MF_PAUSE and resumes from cb. headers are nheaders (name, value)
     * pairs; everything is copied. timeout_ms bounds connect, first byte
     * and each read (0 = 30 s). The response body is capped at 16 MiB.
     * Abandoned (cb never called) when the request ends first. */
    int (*http_call)(mf_req_t *r, const char *method, mf_str_t url,
                     const mf_str_t *headers, size_t nheaders, mf_str_t body,
                     uint64_t timeout_ms, mf_http_cb cb, void *arg);

    /* Request stages that may pause. A Redis command (argv binary-safe,
     * copied) on the worker's connection to the configured `redis:`;
     * the stage returns MF_PAUSE and resumes from cb. Fails at once with
     * err when Redis is down, never hangs: each command is bounded by
     * redis.timeout. Abandoned when the request ends first. */
    int (*redis_command)(mf_req_t *r, int argc, const mf_str_t *argv,
                         mf_redis_cb cb, void *arg);

    /* Provider only. The provider's per-request slot (NULL at first), for
     * the state of a translation across stream events; put palloc memory
     * in it (freed with the request). Reset to NULL at each attempt. */
    void **(*provider_ctx)(mf_req_t *r);

    /* ABI 1.2 */

    /* Provider only (authorize, parse_response, parse_stream_event).
     * Fails the attempt with this error although the upstream said 2xx
     * (a safety block in a 200 body, a token that could not be had): the
     * route's retry_on classes apply as for an upstream error with
     * err->status and err->code; mid-stream, the client gets an error
     * event. parse_response then returns MF_OK, parse_stream_event
     * MF_EVENT_ERROR. Copied. */
    int (*set_error)(mf_req_t *r, const mf_error_t *err);

    /* ABI 1.3 */

    /* on_request .. on_upstream_request, provider. The JSON text of the
     * request body's top-level member key (borrowed, valid for the
     * request), without parsing the body when no one has asked for it
     * yet: a translator reads what decides whether it must change the
     * body before it takes get_body_json. MF_ERR when absent. */
    int (*get_body_field)(mf_req_t *r, mf_str_t key, mf_str_t *value);

    /* ABI 1.4: consumers and plugin admin commands (one group; other
     * ABI 1.4 members may follow it). */

    /* on_request. Sets the consumer record (copied whole; replaces the
     * name set_consumer set). Routing rules on `consumer` and `group`
     * read it. MF_ERR without a name. */
    int (*set_consumer_record)(mf_req_t *r, const mf_consumer_t *c);
    /* Request stages. Fills *c (c->size set by the caller) with the
     * request's consumer; MF_ERR when it is anonymous. A consumer named
     * with set_consumer alone has no group, key id or attributes. */
    int (*get_consumer)(mf_req_t *r, mf_consumer_t *c);
    /* Request stages. One attribute of the consumer record; MF_ERR when
     * absent. */
    int (*get_consumer_attr)(mf_req_t *r, mf_str_t name, mf_str_t *value);
    /* init only. A top-level section of the config that belongs to no
     * one layer ("consumers", "groups", "prices"; "dir" is the config
     * file's directory, a JSON string; "redis" the `redis:` settings
     * without the password, when configured; "models" the exact model
     * names the config serves, a JSON array: providers' models and
     * model_map names, routes, stages' models), validated by the host,
     * borrowed for the init call; NULL when absent. Reading a section
     * ties the stage to it: a reload that changes the section loads the
     * stage again, and a config whose `consumers`, `groups` or `prices`
     * no stage reads is refused. A name starting with '@' is a claim, not
     * a section (NULL): "@limits" says this stage enforces the `limits`
     * and `budget` of consumers and groups, without which a config that
     * sets them is refused. */
    const json_t *(*config_section)(const char *name);
    /* init only. Registers an admin command `name` (letters, digits,
     * '-' and '.', "consumers.add"); usage is one line for the command
     * list. MF_ERR when the name is taken in this generation or bad. */
    int (*register_command)(const char *name, const char *usage,
                            mf_command_fn fn, void *arg);
    /* As respond_error, with a machine-readable code (OpenAI's
     * error.code: "invalid_api_key", "insufficient_quota"; the Anthropic
     * shape has none) and the response headers the stage set
     * (Retry-After, ...). */
    int (*respond_error_code)(mf_req_t *r, int status, const char *type,
                              const char *code, const char *message);

    /* ABI 1.4: endpoints and metrics (observability) */

    /* init only. Adds a path to a listener's endpoint table for the
     * stage being loaded (the stage's paths come and go with it on
     * reloads). MF_ERR after a log line when the path is malformed or a
     * path the gateway or another stage serves. */
    int (*add_endpoint)(const mf_endpoint_def_t *def);

    /* Request stages. The raw request body (borrowed, valid for the
     * request); empty when none. */
    int (*get_body)(mf_req_t *r, mf_str_t *body);

    /* Any stage, init included. Declares a metric, or finds the one
     * declared with the same definition. NULL after a log line when the
     * definition is invalid or differs from one of the same name. */
    mf_metric_t *(*metric_declare)(const mf_metric_def_t *def);
    /* Any stage. values are the label values, one per label declared,
     * in order (copied; bytes past 128 cut). add: a counter (delta >= 0)
     * or a gauge; set: a gauge; observe: a histogram, with a trace id
     * as its exemplar (empty for none). MF_ERR on a wrong type or count
     * of values, or a series over the cap (dropped, counted). */
    int (*metric_add)(mf_metric_t *m, const mf_str_t *values, size_t nvalues,
                      double delta);
    int (*metric_set)(mf_metric_t *m, const mf_str_t *values, size_t nvalues,
                      double value);
    int (*metric_observe)(mf_metric_t *m, const mf_str_t *values,
                          size_t nvalues, double value, mf_str_t trace_id);
    /* Request stages (an endpoint's handler). Every metric declared, in
     * `format` (MF_METRICS_*), into *out (request memory). */
    int (*metrics_render)(mf_req_t *r, int format, mf_str_t *out);

    /* ABI 1.4: model calls from stages. */

    /* Request stages that may pause. A call of the gateway's own API as
     * its client (an embeddings call, a model call), through its
     * providers: routes, key pools, fallback, breakers, stages, usage
     * and the access log, as any request, with the calling request's
     * consumer and credentials (so its limits and spend are the
     * caller's). call->provider pins one provider (no route, no
     * fallback). cb gets the gateway's answer: the status and its JSON
     * body in OpenAI's shape (an error's too); err for a call that got
     * no answer (timeout, the gateway draining). MF_ERR when r may not
     * pause here or calls are nested deeper than 3 (a stage calling
     * itself). Abandoned when the request ends first. */
    int (*model_call)(mf_req_t *r, const mf_model_call_t *call, mf_http_cb cb,
                      void *arg);

    /* ABI 1.4: Redis beyond a paused stage (stores that outlive the
     * request). */

    /* Any request stage, on_log and on_done included; or r NULL inside a
     * mf_redis_post_cb (the same worker). Sends a Redis command (argv
     * copied) on the worker's connection without pausing: cb (may be
     * NULL) runs later with the reply, bounded by redis.timeout, whether
     * or not the request still exists. MF_ERR (cb never called) when no
     * `redis:` is configured or Redis is down now. */
    int (*redis_post)(mf_req_t *r, int argc, const mf_str_t *argv,
                      mf_redis_post_cb cb, void *arg);
    /* init and admin commands only (never a worker): a blocking Redis
     * command on a connection of its own, bounded by
     * redis.timeout. Returns the reply as JSON (a new reference:
     * strings, integers, arrays, null for nil), or NULL with err set
     * (no `redis:`, Redis down, a timeout, or an error reply). */
    json_t *(*redis_call)(int argc, const mf_str_t *argv, char *err,
                          size_t errcap);

    /* ABI 1.4: on_request, on_route and an endpoint's handler. Replaces
     * the request's query (get_info's `query`, Lua's mf.req.query()) for
     * every later stage and log: an identity stage removes the
     * credential it read from it (?key=). Copied. */
    int (*set_query)(mf_req_t *r, mf_str_t query);

    /* ABI 1.5: stream events from body stages */

    /* on_response_body, a stream only. Sends data (copied) as an event
     * of its own before the event the stage was given, which follows it
     * (replaced or not; set_response_chunk with "" drops it); several
     * calls keep their order. The body stages after this one see the
     * inserted event before the given one. A stage holding text back
     * (a placeholder split across events) releases it this way ahead of
     * an event that is not text. MF_ERR for a non-stream answer or an
     * empty data. */
    int (*insert_response_chunk)(mf_req_t *r, mf_str_t data);
    /* on_response_body. Ends the answer at this event: the upstream is
     * read no further (its tokens so far are billed, estimated from what
     * was delivered when the upstream had not reported them) and neither
     * this event nor any after it is sent; the body stages after this
     * one do not see it. When nothing has reached the client (a whole
     * answer, or a stream whose head has not left) the client gets the
     * error (status 4xx/5xx, type, code or NULL, message) in its
     * protocol. A stream under way gets what the stages inserted ahead
     * of this event, then `final` (a canonical chunk, say one with
     * finish_reason "content_filter"; empty for none), the usage chunk
     * when the client asked for usage, and its clean end. */
    int (*stop_response)(mf_req_t *r, int status, const char *type,
                         const char *code, const char *message, mf_str_t final);

    /* ABI 1.5: observability (usage detail, attempts, upstream health) */

    /* Provider, on_response_body, on_log (as set_usage). Prompt tokens
     * written to the provider's cache, part of prompt_tokens (get_info's
     * cache_write_tokens). */
    int (*set_cache_write_tokens)(mf_req_t *r, int64_t tokens);
    /* Request stages. Fills *a (a->size set by the caller) with the i-th
     * upstream attempt (from 0, in order; the one open now last, with an
     * empty outcome). MF_ERR past the last. */
    int (*get_attempt)(mf_req_t *r, size_t i, mf_attempt_info_t *a);
    /* Any stage, not per request (it takes the routing locks): the
     * upstreams' health as JSON (a new reference): {"keys": [{provider,
     * index, key (masked), state, why, since, requests, errors,
     * in_flight, rests}], "targets": [{provider, model, breaker
     * (closed, open, half_open), since, in_flight, requests, failures,
     * consecutive_failures, ttft_ms_avg}]}. */
    json_t *(*upstream_health)(void);
    /* init only. A block of `size` bytes, zeroed the first time, that
     * lives as long as the process: asking again with the same name and
     * size (a later load of the stage, after a reload) gives the same
     * block, so what a stage gathers outlives reloads. The stage keeps
     * its own lock in it; it may hold pointers to heap memory, never to
     * the plugin's own code or static data (a reload loads a new copy).
     * NULL after a log line when the name is taken with another size. */
    void *(*keep_memory)(const char *name, size_t size);

    /* ABI 1.5: answers a stage makes itself in the canonical form, and
     * the whole canonical answer at on_log (one group). */

    /* on_request, on_route, for a stream request. Sends one event of a
     * stream the stage makes itself (no provider): data is the JSON of a
     * canonical chunk (an OpenAI chat.completion.chunk; empty = none),
     * which the host translates to the client's protocol (an Anthropic
     * client gets Anthropic events) and sends at once; the first call
     * sends the head (200, text/event-stream, the response headers set
     * so far). last = 1 ends the stream (the host adds the protocol's end:
     * [DONE], message_stop, ...). Set the usage first (api->set_usage):
     * the end events of some protocols carry it. No on_response_body
     * stage sees these events. The stage returns MF_RESPOND after the
     * last event, or MF_PAUSE between events (api->timer) and
     * api->resume(r, MF_RESPOND) at the end; MF_RESPOND before the last
     * event ends the stream there. MF_ERR for a request that is not a
     * stream or is already answered otherwise. */
    int (*emit_event)(mf_req_t *r, mf_str_t data, int last);
    /* on_request, on_route. Answers with a canonical chat completion
     * (the JSON text of an OpenAI chat.completion, copied) in the client's
     * protocol, status 200, with the usage set by api->set_usage; an
     * OpenAI client gets the text as it is. The stage then returns
     * MF_RESPOND. MF_ERR when the text is not a completion the client's
     * protocol can take. */
    int (*respond_completion)(mf_req_t *r, mf_str_t completion);
    /* on_request, on_route. Asks the host to keep the canonical answer
     * for api->get_answer (it costs memory: only when needed). */
    int (*record_answer)(mf_req_t *r);
    /* on_log, on_done, after record_answer. The canonical answer as the
     * client got it (after on_response_body stages), a new reference: a
     * non-stream's chat.completion object, or a stream's chunks in order
     * (a JSON array, the usage chunk included; [DONE] is not a chunk).
     * NULL when nothing was recorded (no record_answer, an error answer,
     * a stage's own answer). Whether it is whole: get_info's status,
     * error and usage.estimated, and the finish_reason. */
    json_t *(*get_answer)(mf_req_t *r);
    /* on_log, on_done, after record_answer, for a stream: the i-th
     * recorded event's data exactly as it was sent in the canonical form
     * (borrowed, valid for the request), for a byte-faithful copy.
     * MF_ERR past the last. */
    int (*get_answer_event)(mf_req_t *r, size_t i, mf_str_t *data);
    /* on_request .. on_log. Marks the request as answered from a cache
     * (get_info's `cached`): counted = 0 leaves quotas and budgets
     * untouched, 1 charges its usage as if an upstream had served it. */
    int (*set_cached)(mf_req_t *r, int counted);
    /* on_request, on_route, for a stream request. Records the answer
     * (as record_answer) and calls cb with each canonical event's data as
     * it is recorded, on the request's worker, while the answer is still
     * arriving ([DONE] is not an event). cb must not block and must not
     * call back into the host for r; data is borrowed for the call. Events
     * of an attempt that fails over before its first byte reached the
     * client were already given to cb: a failover calls cb with an empty
     * data and *restart* set, after which the events begin again. */
    int (*watch_answer)(mf_req_t *r, mf_answer_watch_fn cb, void *arg);
    /* on_request .. on_upstream_request. The canonical request body's JSON
     * text as it stands (borrowed, request memory), without parsing it
     * when no one has: the client's bytes when its protocol is the
     * canonical one and no stage took the parsed body, else the parsed
     * body serialized (compact, members in their order). A key over the
     * request (a cache's) is made from it cheaply. MF_ERR without a JSON
     * body. */
    int (*get_body_text)(mf_req_t *r, mf_str_t *text);
    /* on_upstream_response, on_response_headers: a 2xx non-stream
     * answer's canonical JSON text (an OpenAI chat.completion, or the
     * upstream's body as it came when that is one; borrowed, request
     * memory), before any of it reached the client; a stage may pause
     * here to check it and answer with an error instead. MF_ERR for a
     * stream, an error answer or a stage's own answer. */
    int (*get_response_text)(mf_req_t *r, mf_str_t *text);

    /* ABI 1.5: checks a stage's model calls at load (check api->size). */

    /* init only. Whether api->model_call could be served for this model
     * (kind MF_MODEL_*) by the config being loaded: with provider (not
     * empty) that provider exists, is enabled and serves the kind; else
     * a route matching the model has such a provider among its targets
     * and fallbacks, or a provider lists the model, or a stage serves it.
     * MF_ERR with the reason in why (at most whylen bytes) when not, so
     * `manifold -t` refuses a config whose calls cannot work. Anthropic
     * providers serve no embeddings. */
    int (*model_check)(int kind, mf_str_t model, mf_str_t provider, char *why,
                       size_t whylen);

    /* ABI 1.6 (metric series): a label set looked up once, then written
     * by its number, without the lookup (check api->size). */

    /* Any stage. The number (>= 0) of the series of values (as for
     * metric_add), added when new; -1 for a wrong count of values or a
     * series over the cap (dropped, counted). A number stays valid as
     * long as the metric, that is the process: a stage may keep it (per
     * worker, or shared) for the requests that follow. */
    int (*metric_series)(mf_metric_t *m, const mf_str_t *values,
                         size_t nvalues);
    /* Any stage. metric_add and metric_observe on series number `series`
     * of m. MF_ERR for a number metric_series did not give for m or a
     * wrong type. */
    int (*metric_add_at)(mf_metric_t *m, int series, double delta);
    int (*metric_observe_at)(mf_metric_t *m, int series, double value,
                             mf_str_t trace_id);

    /* ABI 1.6 (protocols): an upstream wire per attempt; model names a
     * stage declares. */
    /* Provider, build_request only. This attempt's upstream speaks
     * another wire than the provider's `wire` (a provider that serves
     * some models over another API, such as OpenAI's Responses API): its
     * bytes are then never passed through, and parse_response and
     * parse_stream_event are called with `canonical` set. MF_ERR outside
     * build_request. */
    int (*set_upstream_wire)(mf_req_t *r, mf_str_t wire);
    /* init only. A model name the stage serves itself (a virtual model,
     * such as a router's "auto" that it maps to a real model in
     * on_request or on_route): listed by every model list (/v1/models in
     * each API's shape, /v1/models/{id}) while the stage is enabled, as
     * `models:` on its entry in the config is. Exact names only: MF_ERR
     * (logged) for a pattern (* or ?), an empty name, or a call outside
     * init. Declaring a name only lists it. */
    int (*declare_model)(const char *name);

    /* ABI 1.6 (guard): a body stage holds a stream's output; the mask
     * stage's raw body (check api->size). */

    /* on_response_body of a stream (or the callback of the stage's own
     * api->timer), hold 1: the stage holds the output
     * while an async check it made runs (http_call and model_call are
     * allowed in on_response_body of a stream and in their callbacks). The
     * upstream is read no further (the events already read still come to the
     * stages: the stage keeps them, bounded by its own limit) and the stream's
     * end waits: the last event goes on only when the stage lets go. From the
     * call's callback (on the request's worker, outside the pipeline) the
     * stage may then send events (insert_response_chunk: they pass the
     * stages after it and go out at once), end the answer
     * (stop_response: an error status when nothing has left, else the
     * final chunk and the end; held events are never sent) and let go
     * (hold 0: the end that waited goes on, reading resumes). A callback
     * of a body stage's call made without holding may stop_response too;
     * so may the callback of a call an on_request stage made without
     * pausing, while the request waits on its upstream (the upstream
     * call is cancelled, the client gets the error).
     * MF_ERR when another stage holds it or the answer is not a stream. */
    int (*hold_response)(mf_req_t *r, int hold);
    /* on_request, on_route. Replaces the canonical request body with
     * this JSON text (copied): a stage that rewrites spans of the bytes
     * get_body_text gave (masking) spares the parse and serialization of
     * the whole body. Checked as the client's body was (a JSON object
     * within limits.max_json_*); the parsed tree a stage took is dropped
     * (get_body_json parses the new text when asked); get_body gives the
     * new text; the model stays as it is (set_model changes it). MF_ERR
     * for a client whose protocol is not the canonical one (its body
     * changes through get_body_json), or a text that is not such an
     * object. */
    int (*set_body_text)(mf_req_t *r, mf_str_t text);

    /* ABI 1.6 (cache): a stage's own stream ends with an error event
     * (check api->size). */

    /* on_request, on_route (and their timer callbacks), after
     * emit_event began a stream: ends it with an error event in the
     * client's protocol, as the host ends an upstream stream that was
     * cut (OpenAI: an `error` object; Anthropic: `event: error`; ...),
     * status 502 type upstream_error, code (NULL: "upstream_stream_cut")
     * and message, which the request's error (the access log's `error`)
     * carries. The stage then returns MF_RESPOND (or resumes with it).
     * MF_ERR when no stage stream is under way. */
    int (*emit_stream_error)(mf_req_t *r, const char *code,
                             const char *message);

    /* ABI 1.7 (body edits): a stage hands over its edits of the body's
     * text instead of a new text (check api->size). */

    /* on_request, on_route. Applies edits (n of them, sorted by offset,
     * not overlapping) to the canonical body's text as get_body_text gave
     * it: each span lies in the contents of one JSON string value (not a
     * key), does not split an escape sequence or a UTF-8 character, and
     * its text is escaped by the host (a quote, a backslash, control
     * characters) and must be valid UTF-8. The body stays a JSON object
     * of the same shape, so the host shifts its index of the body instead
     * of checking the whole text again (set_body_text does); otherwise as
     * set_body_text. MF_ERR, the body unchanged, for an edit that breaks
     * these rules or a client whose protocol is not the canonical one. */
    int (*edit_body_text)(mf_req_t *r, const mf_body_edit_t *edits, size_t n);

    /* ABI 1.8 (hook masks): a stage instance leaves out hooks it does not
     * need; the host writes the upstream traceparent (check api->size). */

    /* init only. The hooks (MF_HOOK_BIT(MF_STAGE_ROUTE) | ...: on_request
     * to on_done) this instance of the stage is not called for, though
     * its descriptor has them: a stage whose config needs fewer hooks
     * (otel without content capture) costs the requests nothing for
     * them. Calls add up; the admin `stages` output lists the hooks
     * left. A stage that leaves out on_done keeps no per-request state
     * that needs freeing. MF_ERR outside a stage's init (a provider's
     * included) or for a bit that is no hook. */
    int (*skip_hooks)(unsigned hooks);
    /* on_upstream_request. Sets the upstream request's W3C traceparent
     * header to the request's trace id (api->get_info's trace_id), the
     * open attempt's span id (get_attempt's span_id) and the sampled
     * flag: "00-<trace>-<span>-01". The host builds the value itself, so
     * it is cheaper than get_info, get_attempt and set_header together.
     * MF_ERR outside on_upstream_request or with no attempt open. */
    int (*set_traceparent)(mf_req_t *r);
};

/* A hook's bit for api->skip_hooks (ABI 1.8). */
#define MF_HOOK_BIT(stage) (1u << (stage))

/* The one symbol a plugin exports. */
MF_EXPORT const mf_plugin_t *mf_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* MF_PLUGIN_H */
