/*
 * The configuration: one YAML file validated into typed settings, with
 * errors that name file, line and key.
 */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H

#include <jansson.h>

#include "core.h"

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
    int disabled; /* keys all empty */
    json_t *json; /* the whole entry, for the plugin's init */
    int line;
} mf_provider_conf_t;

typedef struct mf_stage_conf_s {
    char *name;
    char *plugin; /* resolved path of a .so, or NULL */
    char *lua;    /* resolved path of a .lua, or NULL */
    json_t *config;
    int enabled;
    int line;
} mf_stage_conf_t;

typedef struct mf_limits_s {
    size_t max_body;
    size_t max_header;
    size_t max_response;
    size_t max_sse_event;
    double client_timeout_ms;
    double upstream_connect_timeout_ms;
    double upstream_timeout_ms;
    double stream_idle_timeout_ms;
    double drain_timeout_ms;
} mf_limits_t;

typedef struct mf_config_s {
    char *path;
    char *dir;
    char *listen_host;
    int listen_port;
    int workers; /* 0 = auto */
    char *admin_socket;
    int watch;                /* reload when a watched file changes */
    double watch_debounce_ms; /* quiet time that ends a burst of edits */
    char *plugin_dir;
    char *lua_path; /* extra package.path entries */
    mf_log_level_t log_level;
    mf_limits_t limits;
    mf_provider_conf_t *providers;
    size_t nproviders;
    mf_stage_conf_t *stages;
    size_t nstages;
    json_t *redis; /* raw, for the Redis service; NULL when absent */
} mf_config_t;

/* Loads and validates; NULL with all errors (one per line) in *errors,
 * which the caller frees. Warnings (a disabled provider) are logged. */
mf_config_t *mf_config_load(const char *path, const char *plugin_dir,
                            char **errors);
/* Same from text, `path` used for messages and relative paths. */
mf_config_t *mf_config_parse(const char *path, const char *text, size_t len,
                             const char *plugin_dir, char **errors);
void mf_config_free(mf_config_t *c);

/* "16MiB", "64k", "1024" -> bytes; "30s", "250ms", "2m", "100" (ms). */
int mf_config_parse_size(const char *s, size_t *out);
int mf_config_parse_duration(const char *s, double *ms);
/* "host:port", ":port" or "port". */
int mf_config_parse_listen(const char *s, char **host, int *port);

#endif
