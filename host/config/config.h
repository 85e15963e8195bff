/*
 * The configuration: one YAML file validated into typed settings, with
 * errors that name file, line and key.
 */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H

#include <jansson.h>

#include "core/core.h"

typedef struct mf_model_map_s {
    char *from; /* exact name or glob ending in '*' */
    char *to;   /* with a glob: '*' stands for what the glob matched */
} mf_model_map_t;

typedef struct mf_provider_conf_s {
    char *name;
    char *type;
    char *base_url; /* no trailing slash */
    char *plugin;   /* explicit provider plugin path, or NULL */
    char **keys;
    size_t nkeys;
    int has_keys;  /* `keys` was given (an empty pool disables) */
    char **models; /* exact names and globs */
    size_t nmodels;
    mf_model_map_t *model_map;
    size_t nmap;
    double timeout_ms;         /* first byte; 0 = limits default */
    double connect_timeout_ms; /* 0 = limits default */
    int tls_verify;
    int disabled;      /* keys all empty */
    char *key_vars[8]; /* disabled: the unset variables its keys name */
    size_t nkey_vars;
    /* key pool */
    int key_strategy;         /* MF_KEYS_ROUND_ROBIN, MF_KEYS_LEAST_USED */
    int key_failures;         /* consecutive failures that quarantine */
    char *probe_path;         /* GET base_url + this brings a key back */
    double probe_interval_ms; /* between probes of a quarantined key */
    char *probe_header;       /* the header carrying the key */
    /* upstream_models: the upstream's own model list, fetched in the
     * background (GET base_url + list_path with the first key in
     * list_header, plus list_extra "name: value" when set) every
     * list_refresh_ms; 0: off */
    double list_refresh_ms;
    char *list_path;
    char *list_header;
    char *list_extra;
    char **forward_headers; /* client headers passed upstream */
    size_t nforward;
    int has_forward; /* forward_headers was given (else the wire's) */
    json_t *json;    /* the whole entry, for the plugin's init */
    int line;
} mf_provider_conf_t;

enum { MF_KEYS_ROUND_ROBIN = 0, MF_KEYS_LEAST_USED };

/* Balancing strategies of a route. */
enum {
    MF_BALANCE_WEIGHTED = 0, /* weighted random */
    MF_BALANCE_ROUND_ROBIN,  /* weighted round robin */
    MF_BALANCE_LEAST_INFLIGHT,
    MF_BALANCE_LOWEST_LATENCY /* moving average of time to first token */
};

/* Failures a route moves on from (bits of retry_on). */
enum {
    MF_RETRY_5XX = 1 << 0,
    MF_RETRY_429 = 1 << 1,
    MF_RETRY_TIMEOUT = 1 << 2,
    MF_RETRY_CONNECT = 1 << 3,
    MF_RETRY_CONTEXT = 1 << 4, /* context length exceeded: a larger model */
    MF_RETRY_FILTER = 1 << 5,  /* content filter refusal */
    MF_RETRY_AUTH = 1 << 6,    /* the provider refused its key (401/403) */
    MF_RETRY_4XX = 1 << 7      /* any other 4xx */
};

typedef struct mf_target_conf_s {
    char *provider;
    char *model;     /* upstream model; NULL = the model asked */
    unsigned weight; /* 0 = only reached by a rule or as a fallback */
    int line;
} mf_target_conf_t;

/* A canary rule: requests matching it go to targets[target] first. */
typedef struct mf_route_rule_s {
    char *header; /* header name, or NULL */
    char *value;  /* header value (NULL = present) */
    char *consumer;
    char *group; /* consumer group */
    size_t target;
} mf_route_rule_t;

typedef struct mf_route_conf_s {
    char *model; /* the name clients ask for: exact or glob */
    int strategy;
    mf_target_conf_t *targets;
    size_t ntargets;
    mf_target_conf_t *fallbacks; /* tried in order after the targets */
    size_t nfallbacks;
    mf_route_rule_t *rules;
    size_t nrules;
    unsigned retry_on;
    int retries;               /* attempts after the first; -1 = every target */
    double attempt_timeout_ms; /* 0 = the provider's */
    double ttft_timeout_ms;    /* streams: to the first event; 0 = none */
    int breaker_failures;      /* consecutive failures that open it */
    double breaker_cooldown_ms;
    int line;
} mf_route_conf_t;

typedef struct mf_stage_conf_s {
    char *name;
    char *plugin; /* resolved path of a .so, or NULL */
    char *lua;    /* resolved path of a .lua, or NULL */
    json_t *config;
    char **models; /* model names the stage serves (listed by /v1/models) */
    size_t nmodels;
    int enabled;
    int line;
    int trusted;            /* Lua: no sandbox, JIT compiler on */
    double time_limit_ms;   /* Lua: one run of a stage function */
    double pause_limit_ms;  /* Lua: one stage call waiting on async calls */
    size_t memory_limit;    /* Lua: bytes per state */
    double init_timeout_ms; /* a script's top-level code, a plugin's init */
} mf_stage_conf_t;

typedef struct mf_limits_s {
    size_t max_body;
    size_t max_header;
    size_t max_response;
    size_t max_sse_event;
    double client_timeout_ms;
    double send_timeout_ms; /* an answer's write without progress */
    double upstream_connect_timeout_ms;
    double upstream_timeout_ms;
    double stream_idle_timeout_ms;
    double drain_timeout_ms;
    size_t max_body_total;     /* request bodies being read, all connections */
    int max_conns;             /* client connections; 0 = from RLIMIT_NOFILE */
    size_t max_messages;       /* elements of a request's "messages" */
    size_t max_json_depth;     /* nesting of a request body */
    size_t max_json_values;    /* values in a request body */
    double max_retry_after_ms; /* the longest rest an upstream's 429 gives */
} mf_limits_t;

typedef struct mf_config_s {
    char *path;
    char *dir;
    char *listen_host;
    int listen_port;
    int workers; /* 0 = auto */
    char *admin_socket;
    int watch;                  /* reload when a watched file changes */
    double watch_debounce_ms;   /* quiet time that ends a burst of edits */
    double watch_write_wait_ms; /* longest wait for a writer to close */
    int reuse_port;     /* share the port with other processes (SO_REUSEPORT) */
    char **plugin_dirs; /* search path: -p, plugin_dir, the built-in one */
    size_t nplugin_dirs;
    char *builtin_plugin_dir; /* searched last */
    char *lua_path;           /* extra package.path entries */
    mf_log_level_t log_level;
    mf_limits_t limits;
    mf_provider_conf_t *providers;
    size_t nproviders;
    mf_stage_conf_t *stages;
    size_t nstages;
    mf_route_conf_t *routes;
    size_t nroutes;
    json_t *redis;       /* raw, for the Redis service; NULL when absent */
    json_t *sections;    /* consumers, groups, prices: checked, normalized,
                            for the stages that read them */
    int sections_line;   /* line of `consumers`, 0 when absent */
    int groups_line;     /* line of `groups`, 0 when absent */
    int prices_line;     /* line of `prices`, 0 when absent */
    char **cors_origins; /* browser origins served (cors.allow_origins) */
    size_t ncors_origins;
    /* response_store: the Responses API's stored responses (in memory,
     * per process); max_entries 0 = none stored */
    size_t store_max_entries;
    size_t store_max_bytes;
    double store_ttl_ms;
    char *store_db;        /* response_store.db, resolved; NULL: memory only */
    char *cors_headers;    /* cors.allow_headers joined ", "; NULL: the
                              preflight's requested headers are allowed */
    unsigned cors_max_age; /* cors.max_age, seconds a preflight is cached */
    char **allowed_hosts;  /* Host names served besides loopback names */
    size_t nallowed_hosts;
    int has_allowed_hosts; /* allowed_hosts was given */
    /* status: the status listener (metrics, dashboard, stage pages) */
    int status_on;     /* `status:` was given */
    char *status_host; /* listen address, loopback by default */
    int status_port;
    char *status_token;       /* bearer token asked for, NULL none */
    size_t status_max_series; /* label sets per metric by default */
} mf_config_t;

/* Loads and validates; NULL with all errors (one per line) in *errors,
 * which the caller frees. plugin_dir is the built-in plugin directory,
 * searched after the config's plugin_dir. */
mf_config_t *mf_config_load(const char *path, const char *plugin_dir,
                            char **errors);
/* Same from text, `path` used for messages and relative paths. */
mf_config_t *mf_config_parse(const char *path, const char *text, size_t len,
                             const char *plugin_dir, char **errors);
/* Same, with first_dirs (the command line's, ':'-separated, or NULL)
 * searched before the config's plugin_dir. On errors the config is
 * returned all the same, with *errors set: later phases can check what
 * was read and report their errors together; the caller frees both. NULL
 * only when the file cannot be read or parsed as YAML. */
mf_config_t *mf_config_load_dirs(const char *path, const char *first_dirs,
                                 const char *plugin_dir, char **errors);
mf_config_t *mf_config_parse_dirs(const char *path, const char *text,
                                  size_t len, const char *first_dirs,
                                  const char *plugin_dir, char **errors);
void mf_config_free(mf_config_t *c);

/* Logs one line: which providers are enabled and which variables would
 * enable the others (none when every provider is enabled). */
void mf_config_warn_disabled(const mf_config_t *c);

/* The choice closest to word by edit distance (case-insensitive), when
 * close enough to be a misspelling; NULL otherwise. Looks at n choices or
 * up to a NULL. */
const char *mf_config_suggest(const char *word, const char *const *choices,
                              size_t n);

/* "16MiB", "64k", "1024" -> bytes; "30s", "250ms", "2m", "100" (ms). */
int mf_config_parse_size(const char *s, size_t *out);
int mf_config_parse_duration(const char *s, double *ms);
/* "host:port", ":port" or "port". */
int mf_config_parse_listen(const char *s, char **host, int *port);

/* 1 when a client header must never go to a provider: the hop-by-hop
 * ones, the credentials (the provider's own key is the gateway's to send)
 * and the gateway's control headers (x-manifold-*). A forward_headers
 * prefix ("x-goog-*") skips them too. */
int mf_config_header_never_forwarded(const char *name);

#endif
