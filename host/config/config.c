/*
 * Configuration loading: YAML node tree -> validated mf_config_t. Every
 * error names file, line and key and says what to do; all errors of a file
 * are reported at once.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <strings.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/yamltree.h"

typedef struct {
    const char *file;
    mf_buf_t errors;
    int nerrors;
} check_t;

static void cfg_error(check_t *ck, const mf_node_t *n, const char *key,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
cfg_error(check_t *ck, const mf_node_t *n, const char *key, const char *fmt,
          ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mf_buf_printf(&ck->errors, "%s:%d: %s: %s\n", ck->file, n ? n->line : 1,
                  key, msg);
    ck->nerrors++;
}

int
mf_config_parse_size(const char *s, size_t *out)
{
    char *end;
    double v;
    double mult = 1;

    if (s == NULL || *s == '\0') {
        return MF_ERR;
    }
    v = strtod(s, &end);
    if (end == s || v < 0) {
        return MF_ERR;
    }
    while (*end == ' ') {
        end++;
    }
    if (*end == '\0' || strcasecmp(end, "b") == 0) {
        mult = 1;
    } else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0 ||
               strcasecmp(end, "kib") == 0) {
        mult = 1024;
    } else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0 ||
               strcasecmp(end, "mib") == 0) {
        mult = 1024.0 * 1024;
    } else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0 ||
               strcasecmp(end, "gib") == 0) {
        mult = 1024.0 * 1024 * 1024;
    } else {
        return MF_ERR;
    }
    v *= mult;
    if (v > (double)SIZE_MAX / 2) {
        return MF_ERR;
    }
    *out = (size_t)v;
    return MF_OK;
}

int
mf_config_parse_duration(const char *s, double *ms)
{
    char *end;
    double v;

    if (s == NULL || *s == '\0') {
        return MF_ERR;
    }
    v = strtod(s, &end);
    if (end == s || v < 0) {
        return MF_ERR;
    }
    if (*end == '\0' || strcmp(end, "ms") == 0) {
        *ms = v;
    } else if (strcmp(end, "s") == 0) {
        *ms = v * 1000;
    } else if (strcmp(end, "m") == 0) {
        *ms = v * 60000;
    } else if (strcmp(end, "h") == 0) {
        *ms = v * 3600000;
    } else {
        return MF_ERR;
    }
    return MF_OK;
}

int
mf_config_parse_listen(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    const char *ps = colon ? colon + 1 : s;
    char *end;
    long p;

    p = strtol(ps, &end, 10);
    if (*ps == '\0' || *end != '\0' || p < 0 || p > 65535) {
        return MF_ERR;
    }
    *port = (int)p;
    if (colon == NULL || colon == s) {
        *host = mf_xstrdup("0.0.0.0");
    } else if (s[0] == '[' && colon[-1] == ']') {
        *host = mf_xstrndup(s + 1, (size_t)(colon - s - 2));
    } else {
        *host = mf_xstrndup(s, (size_t)(colon - s));
    }
    return MF_OK;
}

static const mf_node_t *
want_scalar(check_t *ck, const mf_node_t *n, const char *key)
{
    if (n != NULL && n->type != MF_NODE_SCALAR) {
        cfg_error(ck, n, key, "must be a single value");
        return NULL;
    }
    return n;
}

static void
get_string(check_t *ck, const mf_node_t *map, const char *k, const char *path,
           char **out)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);

    if (n != NULL) {
        free(*out);
        *out = mf_xstrdup(n->value);
    }
}

static void
get_size(check_t *ck, const mf_node_t *map, const char *k, const char *path,
         size_t *out)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);

    if (n != NULL && mf_config_parse_size(n->value, out) != MF_OK) {
        cfg_error(ck, n, path,
                  "'%s' is not a size; write bytes or a number "
                  "with k, MiB or GiB (16MiB)",
                  n->value);
    }
}

static void
get_duration(check_t *ck, const mf_node_t *map, const char *k, const char *path,
             double *out)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);

    if (n != NULL && mf_config_parse_duration(n->value, out) != MF_OK) {
        cfg_error(ck, n, path,
                  "'%s' is not a duration; write 250ms, 30s, "
                  "2m or milliseconds",
                  n->value);
    }
}

static int
get_bool(check_t *ck, const mf_node_t *map, const char *k, const char *path,
         int def)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);

    if (n == NULL) {
        return def;
    }
    if (strcmp(n->value, "true") == 0 || strcmp(n->value, "yes") == 0 ||
        strcmp(n->value, "on") == 0) {
        return 1;
    }
    if (strcmp(n->value, "false") == 0 || strcmp(n->value, "no") == 0 ||
        strcmp(n->value, "off") == 0) {
        return 0;
    }
    cfg_error(ck, n, path, "'%s' is not true or false", n->value);
    return def;
}

/* An integer in [lo, hi]; def when absent. */
static int
get_int(check_t *ck, const mf_node_t *map, const char *k, const char *path,
        int def, int lo, int hi)
{
    const mf_node_t *n = want_scalar(ck, mf_node_get(map, k), path);
    char *end;
    long v;

    if (n == NULL) {
        return def;
    }
    v = strtol(n->value, &end, 10);
    if (*end != '\0' || end == n->value || v < lo || v > hi) {
        cfg_error(ck, n, path, "%s '%s' must be a whole number from %d to %d",
                  k, n->value, lo, hi);
        return def;
    }
    return (int)v;
}

/* Levenshtein distance of a and b, both shorter than 64 bytes (else a
 * large number). */
static size_t
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64], i, j;

    if (la >= 64 || lb >= 64) {
        return SIZE_MAX;
    }
    for (j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (j = 1; j <= lb; j++) {
            size_t up = row[j],
                   best = diag + (tolower((unsigned char)a[i - 1]) !=
                                  tolower((unsigned char)b[j - 1]));

            best = up + 1 < best ? up + 1 : best;
            best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

const char *
mf_config_suggest(const char *word, const char *const *choices, size_t n)
{
    const char *best = NULL;
    size_t i, d, bestd = SIZE_MAX, len = strlen(word);
    /* a third of the word may be wrong, at least one letter */
    size_t limit = len / 3 > 1 ? len / 3 : 1;

    for (i = 0; i < n && choices[i] != NULL; i++) {
        d = edit_distance(word, choices[i]);
        if (d < bestd) {
            bestd = d;
            best = choices[i];
        }
    }
    return bestd <= limit ? best : NULL;
}

static void
check_keys(check_t *ck, const mf_node_t *map, const char *path,
           const char *const *allowed)
{
    const mf_node_t *c;

    for (c = map->child; c != NULL; c = c->next) {
        size_t i;
        int ok = 0;

        for (i = 0; allowed[i] != NULL; i++) {
            if (strcmp(c->key, allowed[i]) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            char msg[512];
            size_t off = 0;
            const char *near = mf_config_suggest(c->key, allowed, SIZE_MAX);

            for (i = 0; allowed[i] != NULL && off < sizeof(msg); i++) {
                off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%s",
                                        i ? ", " : "", allowed[i]);
            }
            if (near != NULL) {
                cfg_error(ck, c, path[0] ? path : c->key,
                          "unknown key '%s'; did you mean '%s'? known keys: "
                          "%s",
                          c->key, near, msg);
            } else {
                cfg_error(ck, c, path[0] ? path : c->key,
                          "unknown key '%s'; known keys: %s", c->key, msg);
            }
        }
    }
}

static char *
resolve_path(const mf_config_t *c, const char *p)
{
    char buf[PATH_MAX];

    if (p[0] == '/') {
        return mf_xstrdup(p);
    }
    snprintf(buf, sizeof(buf), "%s/%s", c->dir, p);
    return mf_xstrdup(buf);
}

static char **
string_list(check_t *ck, const mf_node_t *n, const char *path, size_t *count)
{
    const mf_node_t *c;
    char **out;
    size_t i = 0;

    *count = 0;
    if (n == NULL) {
        return NULL;
    }
    if (n->type == MF_NODE_SCALAR) {
        out = mf_xcalloc(1, sizeof(char *));
        out[0] = mf_xstrdup(n->value);
        *count = 1;
        return out;
    }
    if (n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, path, "must be a list");
        return NULL;
    }
    for (c = n->child; c != NULL; c = c->next) {
        i++;
    }
    out = mf_xcalloc(i ? i : 1, sizeof(char *));
    i = 0;
    for (c = n->child; c != NULL; c = c->next) {
        if (c->type != MF_NODE_SCALAR) {
            cfg_error(ck, c, path, "items must be single values");
            continue;
        }
        out[i++] = mf_xstrdup(c->value);
    }
    *count = i;
    return out;
}

/* The unset variables named in the keys of a disabled provider. */
static void
key_vars(mf_provider_conf_t *p, const mf_node_t *keys)
{
    const mf_node_t *e = keys->type == MF_NODE_SEQ ? keys->child : keys;

    for (; e != NULL; e = keys->type == MF_NODE_SEQ ? e->next : NULL) {
        const char *s = e->raw;

        while (s != NULL && (s = strstr(s, "${")) != NULL) {
            size_t len = strcspn(s + 2, ":}");
            char *name = mf_xstrndup(s + 2, len);
            const char *v = getenv(name);

            if ((v == NULL || *v == '\0') && p->nkey_vars < 8) {
                p->key_vars[p->nkey_vars++] = name;
            } else {
                free(name);
            }
            s += 2 + len;
        }
    }
}

/* 1 when a client header must never go to a provider: the hop-by-hop
 * ones, the credentials (the provider's own key is the gateway's to
 * send) and the gateway's control headers. */
int
mf_config_header_never_forwarded(const char *name)
{
    static const char *const never[] = {"authorization",
                                        "proxy-authorization",
                                        "x-api-key",
                                        "api-key",
                                        "x-goog-api-key",
                                        "cookie",
                                        "x-amz-security-token",
                                        "x-amz-date",
                                        "x-amz-content-sha256",
                                        "host",
                                        "content-length",
                                        "transfer-encoding",
                                        "connection",
                                        "keep-alive",
                                        "te",
                                        "trailer",
                                        "upgrade",
                                        "proxy-connection",
                                        "content-type",
                                        "accept-encoding",
                                        NULL};
    size_t i;

    if (strncasecmp(name, "x-manifold-", 11) == 0) {
        return 1;
    }
    for (i = 0; never[i] != NULL; i++) {
        if (strcasecmp(name, never[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* upstream_models: {refresh, path, header}: the provider's own model
 * list, fetched in the background, for /v1/models to list what its globs
 * serve. The path and header default by type (the key probe's for the
 * OpenAI-wire types); signed APIs (bedrock, vertex) are refused. */
static void
load_upstream_models(check_t *ck, mf_provider_conf_t *p, const mf_node_t *n,
                     const char *path)
{
    static const char *const keys[] = {"refresh", "path", "header", NULL};
    const char *type = p->type ? p->type : "openai";

    if (n == NULL) {
        return;
    }
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path,
                  "upstream_models must be a map (refresh, path, header)");
        return;
    }
    check_keys(ck, n, path, keys);
    get_duration(ck, n, "refresh", path, &p->list_refresh_ms);
    if (mf_node_get(n, "refresh") == NULL) {
        cfg_error(ck, n, path,
                  "upstream_models needs refresh: how often the list is "
                  "fetched (10s or more, e.g. 10m)");
    } else if (p->list_refresh_ms < 10000) {
        cfg_error(ck, mf_node_get(n, "refresh"), path,
                  "upstream_models.refresh must be 10s or more");
    }
    if (strcmp(type, "bedrock") == 0 || strcmp(type, "vertex") == 0) {
        cfg_error(ck, n, path,
                  "upstream_models is not served for type %s (its model "
                  "list needs a signed request)",
                  type);
    }
    get_string(ck, n, "path", path, &p->list_path);
    get_string(ck, n, "header", path, &p->list_header);
    if (strcmp(type, "anthropic") == 0) {
        p->list_extra = mf_xstrdup("anthropic-version: 2023-06-01");
    }
    if (p->list_path == NULL) {
        p->list_path =
            mf_xstrdup(strcmp(type, "anthropic") == 0 ? "/v1/models"
                       : strcmp(type, "gemini") == 0  ? "/v1beta/models"
                                                      : p->probe_path);
    }
    if (p->list_header == NULL) {
        p->list_header =
            mf_xstrdup(strcmp(type, "anthropic") == 0 ? "x-api-key"
                       : strcmp(type, "gemini") == 0  ? "x-goog-api-key"
                       : strcmp(type, "azure") == 0   ? "api-key"
                                                      : p->probe_header);
    }
    if (p->list_path[0] != '/' || strpbrk(p->list_path, " \r\n") != NULL) {
        cfg_error(ck, n, path, "upstream_models.path must start with /");
    }
    if (p->list_header[0] == '\0' ||
        strpbrk(p->list_header, " :\r\n") != NULL) {
        cfg_error(ck, n, path, "upstream_models.header must be a header name");
    }
}

/* forward_headers: the client headers passed to this provider. */
static void
load_forward_headers(check_t *ck, mf_provider_conf_t *p, const mf_node_t *n,
                     const char *path)
{
    size_t i;

    if (n == NULL) {
        return;
    }
    p->has_forward = 1;
    p->forward_headers = string_list(ck, n, path, &p->nforward);
    for (i = 0; i < p->nforward; i++) {
        const char *h = p->forward_headers[i];
        size_t len = strlen(h), tok = strspn(h, "abcdefghijklmnopqrstuvwxyz"
                                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                "0123456789-_.");

        if (len == 0 || (tok != len && !(tok == len - 1 && h[tok] == '*'))) {
            cfg_error(ck, n, path,
                      "forward_headers: '%s' is not a header name (letters, "
                      "digits, '-', with an optional trailing '*' for a "
                      "prefix: \"x-goog-*\")",
                      h);
        } else if (h[len - 1] == '*' && len < 3) {
            cfg_error(ck, n, path,
                      "forward_headers: '%s' would pass every client header; "
                      "name a prefix (\"x-goog-*\") or the headers",
                      h);
        } else if (h[len - 1] != '*' && mf_config_header_never_forwarded(h)) {
            cfg_error(ck, n, path,
                      "forward_headers: '%s' is never passed to a provider "
                      "(a credential, hop-by-hop or gateway header); remove "
                      "it",
                      p->forward_headers[i]);
        }
    }
}

static void
load_provider(check_t *ck, mf_config_t *c, const mf_node_t *n, size_t idx)
{
    static const char *const allowed[] = {"name",
                                          "type",
                                          "base_url",
                                          "keys",
                                          "models",
                                          "model_map",
                                          "timeout",
                                          "connect_timeout",
                                          "tls_verify",
                                          "plugin",
                                          "options",
                                          "api_version",
                                          "deployments",
                                          "region",
                                          "project",
                                          "location",
                                          "credentials",
                                          "headers",
                                          "key_strategy",
                                          "key_failures",
                                          "probe",
                                          "forward_headers",
                                          "upstream_models",
                                          NULL};
    mf_provider_conf_t *p = &c->providers[idx];
    const mf_node_t *k, *m;
    char path[128];
    size_t i, empty = 0;

    snprintf(path, sizeof(path), "providers[%zu]", idx);
    p->line = n->line;
    p->tls_verify = 1;
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path, "must be a map with name, type, base_url");
        return;
    }
    check_keys(ck, n, path, allowed);
    get_string(ck, n, "name", path, &p->name);
    get_string(ck, n, "type", path, &p->type);
    get_string(ck, n, "base_url", path, &p->base_url);
    if (p->name == NULL || p->name[0] == '\0') {
        cfg_error(ck, n, path, "needs a name");
        free(p->name);
        p->name = mf_xstrdup("");
    }
    for (i = 0; i < idx; i++) {
        if (c->providers[i].name &&
            strcmp(c->providers[i].name, p->name) == 0) {
            cfg_error(ck, n, path,
                      "name '%s' is already used by "
                      "providers[%zu]",
                      p->name, i);
        }
    }
    if (p->type == NULL) {
        p->type = mf_xstrdup("openai");
    }
    if (p->base_url == NULL || p->base_url[0] == '\0') {
        cfg_error(ck, n, path,
                  "needs a base_url (http://host:port/v1 or "
                  "https://...)");
        free(p->base_url);
        p->base_url = mf_xstrdup("");
    } else if (strncmp(p->base_url, "http://", 7) != 0 &&
               strncmp(p->base_url, "https://", 8) != 0) {
        cfg_error(ck, mf_node_get(n, "base_url"), path,
                  "base_url '%s' must start with http:// or https://",
                  p->base_url);
    }
    while (p->base_url[0] && p->base_url[strlen(p->base_url) - 1] == '/') {
        p->base_url[strlen(p->base_url) - 1] = '\0';
    }
    {
        char *plugin = NULL;

        get_string(ck, n, "plugin", path, &plugin);
        if (plugin != NULL) {
            p->plugin = resolve_path(c, plugin);
            free(plugin);
        }
    }
    k = mf_node_get(n, "keys");
    p->has_keys = k != NULL;
    p->keys = string_list(ck, k, path, &p->nkeys);
    for (i = 0; i < p->nkeys; i++) {
        if (p->keys[i][0] == '\0') {
            empty++;
        }
    }
    if (p->has_keys && empty == p->nkeys) {
        p->disabled = 1;
        key_vars(p, k);
    }
    p->models = string_list(ck, mf_node_get(n, "models"), path, &p->nmodels);
    m = mf_node_get(n, "model_map");
    if (m != NULL) {
        const mf_node_t *e;

        if (m->type != MF_NODE_MAP) {
            cfg_error(ck, m, path,
                      "model_map must map a model name to the "
                      "upstream name");
        } else {
            for (e = m->child; e != NULL; e = e->next) {
                p->nmap++;
            }
            p->model_map = mf_xcalloc(p->nmap, sizeof(*p->model_map));
            i = 0;
            for (e = m->child; e != NULL; e = e->next) {
                if (e->type != MF_NODE_SCALAR) {
                    cfg_error(ck, e, path, "model_map.%s must be a name",
                              e->key);
                    continue;
                }
                p->model_map[i].from = mf_xstrdup(e->key);
                p->model_map[i].to = mf_xstrdup(e->value);
                i++;
            }
            p->nmap = i;
        }
    }
    get_duration(ck, n, "timeout", path, &p->timeout_ms);
    get_duration(ck, n, "connect_timeout", path, &p->connect_timeout_ms);
    p->tls_verify = get_bool(ck, n, "tls_verify", path, 1);
    {
        char *strategy = NULL;

        get_string(ck, n, "key_strategy", path, &strategy);
        if (strategy != NULL && strcmp(strategy, "least_used") == 0) {
            p->key_strategy = MF_KEYS_LEAST_USED;
        } else if (strategy != NULL && strcmp(strategy, "round_robin") != 0) {
            cfg_error(ck, mf_node_get(n, "key_strategy"), path,
                      "key_strategy '%s' must be round_robin or least_used",
                      strategy);
        }
        free(strategy);
    }
    p->key_failures = get_int(ck, n, "key_failures", path, 3, 1, 1000);
    m = mf_node_get(n, "probe");
    p->probe_interval_ms = 10000;
    if (m != NULL && m->type != MF_NODE_MAP) {
        cfg_error(ck, m, path, "probe must be a map (path, interval, header)");
    } else if (m != NULL) {
        static const char *const pk[] = {"path", "interval", "header", NULL};

        check_keys(ck, m, path, pk);
        get_string(ck, m, "path", path, &p->probe_path);
        get_duration(ck, m, "interval", path, &p->probe_interval_ms);
        get_string(ck, m, "header", path, &p->probe_header);
    }
    if (p->probe_path == NULL) {
        p->probe_path = mf_xstrdup("/models");
    }
    if (p->probe_header == NULL) {
        p->probe_header = mf_xstrdup("authorization");
    }
    load_forward_headers(ck, p, mf_node_get(n, "forward_headers"), path);
    load_upstream_models(ck, p, mf_node_get(n, "upstream_models"), path);
    p->json = mf_node_to_json(n);
}

static const mf_provider_conf_t *
find_provider(const mf_config_t *c, const char *name)
{
    size_t i;

    for (i = 0; i < c->nproviders; i++) {
        if (c->providers[i].name && strcmp(c->providers[i].name, name) == 0) {
            return &c->providers[i];
        }
    }
    return NULL;
}

/* A list of {provider, model, weight} maps. */
static mf_target_conf_t *
load_targets(check_t *ck, const mf_config_t *c, const mf_node_t *n,
             const char *path, size_t *count)
{
    static const char *const allowed[] = {"provider", "model", "weight", NULL};
    mf_target_conf_t *out;
    const mf_node_t *e;
    size_t i = 0;

    *count = 0;
    if (n == NULL) {
        return NULL;
    }
    if (n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, path, "must be a list of {provider, model, weight}");
        return NULL;
    }
    for (e = n->child; e != NULL; e = e->next) {
        (*count)++;
    }
    out = mf_xcalloc(*count ? *count : 1, sizeof(*out));
    for (e = n->child; e != NULL; e = e->next, i++) {
        mf_target_conf_t *t = &out[i];
        char tp[160];

        snprintf(tp, sizeof(tp), "%s[%zu]", path, i);
        t->line = e->line;
        t->weight = 1;
        if (e->type != MF_NODE_MAP) {
            cfg_error(ck, e, tp, "must be a map {provider, model, weight}");
            continue;
        }
        check_keys(ck, e, tp, allowed);
        get_string(ck, e, "provider", tp, &t->provider);
        get_string(ck, e, "model", tp, &t->model);
        t->weight = (unsigned)get_int(ck, e, "weight", tp, 1, 0, 1000000);
        if (t->provider == NULL) {
            cfg_error(ck, e, tp, "needs a provider");
        } else if (find_provider(c, t->provider) == NULL) {
            cfg_error(ck, mf_node_get(e, "provider"), tp,
                      "no provider named '%s'; see providers:", t->provider);
        }
    }
    return out;
}

static unsigned
retry_bits(check_t *ck, const mf_node_t *n, const char *path)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"5xx", MF_RETRY_5XX},
                 {"429", MF_RETRY_429},
                 {"timeout", MF_RETRY_TIMEOUT},
                 {"connect", MF_RETRY_CONNECT},
                 {"context_length", MF_RETRY_CONTEXT},
                 {"content_filter", MF_RETRY_FILTER},
                 {"auth", MF_RETRY_AUTH},
                 {"4xx", MF_RETRY_4XX}};
    size_t count, i, j;
    char **list = string_list(ck, n, path, &count);
    unsigned bits = 0;

    for (i = 0; i < count; i++) {
        for (j = 0; j < sizeof(names) / sizeof(names[0]); j++) {
            if (strcmp(list[i], names[j].name) == 0) {
                bits |= names[j].bit;
                break;
            }
        }
        if (j == sizeof(names) / sizeof(names[0])) {
            cfg_error(ck, n, path,
                      "'%s' is not a failure kind; use 5xx, 429, timeout, "
                      "connect, context_length, content_filter, auth, 4xx",
                      list[i]);
        }
        free(list[i]);
    }
    free(list);
    return bits;
}

static void
load_route(check_t *ck, mf_config_t *c, const mf_node_t *n, size_t idx)
{
    static const char *const allowed[] = {
        "model",        "strategy", "targets", "fallback",
        "canary",       "retry_on", "retries", "attempt_timeout",
        "ttft_timeout", "breaker",  NULL};
    static const char *const strategies[] = {
        "weighted", "round_robin", "least_inflight", "lowest_latency"};
    mf_route_conf_t *rt = &c->routes[idx];
    const mf_node_t *m;
    char path[128], tp[160], *strategy = NULL;
    size_t i;

    snprintf(path, sizeof(path), "routes[%zu]", idx);
    rt->line = n->line;
    rt->retry_on = MF_RETRY_5XX | MF_RETRY_429 | MF_RETRY_TIMEOUT |
                   MF_RETRY_CONNECT | MF_RETRY_AUTH;
    rt->breaker_failures = 5;
    rt->breaker_cooldown_ms = 10000;
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path, "must be a map with model and targets");
        rt->model = mf_xstrdup("");
        return;
    }
    check_keys(ck, n, path, allowed);
    get_string(ck, n, "model", path, &rt->model);
    if (rt->model == NULL) {
        cfg_error(ck, n, path, "needs the model name clients ask for");
        rt->model = mf_xstrdup("");
    }
    get_string(ck, n, "strategy", path, &strategy);
    if (strategy != NULL) {
        for (i = 0; i < 4 && strcmp(strategy, strategies[i]) != 0; i++) {
        }
        if (i == 4) {
            cfg_error(ck, mf_node_get(n, "strategy"), path,
                      "strategy '%s' must be weighted, round_robin, "
                      "least_inflight or lowest_latency",
                      strategy);
        } else {
            rt->strategy = (int)i;
        }
        free(strategy);
    }
    snprintf(tp, sizeof(tp), "%s.targets", path);
    rt->targets =
        load_targets(ck, c, mf_node_get(n, "targets"), tp, &rt->ntargets);
    if (rt->ntargets == 0) {
        cfg_error(ck, n, path, "needs at least one target");
    }
    snprintf(tp, sizeof(tp), "%s.fallback", path);
    rt->fallbacks =
        load_targets(ck, c, mf_node_get(n, "fallback"), tp, &rt->nfallbacks);
    m = mf_node_get(n, "canary");
    if (m != NULL && m->type != MF_NODE_SEQ) {
        cfg_error(ck, m, path, "canary must be a list of rules");
    } else if (m != NULL) {
        static const char *const rk[] = {"header", "value",  "consumer",
                                         "group",  "target", NULL};
        const mf_node_t *e;

        for (e = m->child; e != NULL; e = e->next) {
            rt->nrules++;
        }
        rt->rules = mf_xcalloc(rt->nrules, sizeof(*rt->rules));
        for (e = m->child, i = 0; e != NULL; e = e->next, i++) {
            mf_route_rule_t *ru = &rt->rules[i];

            snprintf(tp, sizeof(tp), "%s.canary[%zu]", path, i);
            if (e->type != MF_NODE_MAP) {
                cfg_error(ck, e, tp,
                          "must be a map (header, value, "
                          "consumer, group, target)");
                continue;
            }
            check_keys(ck, e, tp, rk);
            get_string(ck, e, "header", tp, &ru->header);
            get_string(ck, e, "value", tp, &ru->value);
            get_string(ck, e, "consumer", tp, &ru->consumer);
            get_string(ck, e, "group", tp, &ru->group);
            ru->target = (size_t)get_int(ck, e, "target", tp, 0, 0, 1000);
            if (ru->target >= rt->ntargets && rt->ntargets > 0) {
                cfg_error(ck, e, tp,
                          "target %zu: the route has %zu targets "
                          "(counted from 0)",
                          ru->target, rt->ntargets);
            }
            if (!ru->header && !ru->consumer && !ru->group) {
                cfg_error(ck, e, tp, "needs header, consumer or group");
            }
        }
    }
    if (mf_node_get(n, "retry_on") != NULL) {
        rt->retry_on = retry_bits(ck, mf_node_get(n, "retry_on"), path);
    }
    rt->retries = get_int(ck, n, "retries", path, -1, 0, 100);
    get_duration(ck, n, "attempt_timeout", path, &rt->attempt_timeout_ms);
    get_duration(ck, n, "ttft_timeout", path, &rt->ttft_timeout_ms);
    m = mf_node_get(n, "breaker");
    if (m != NULL && m->type == MF_NODE_MAP) {
        static const char *const bk[] = {"failures", "cooldown", NULL};

        check_keys(ck, m, path, bk);
        rt->breaker_failures = get_int(ck, m, "failures", path, 5, 1, 100000);
        get_duration(ck, m, "cooldown", path, &rt->breaker_cooldown_ms);
    } else if (m != NULL) {
        cfg_error(ck, m, path, "breaker must be a map (failures, cooldown)");
    }
}

/* The sandbox and limits of a stage (see sdk/LUA.md). */
static void
load_stage_limits(check_t *ck, const mf_node_t *n, const char *path,
                  mf_stage_conf_t *s, int lua)
{
    static const char *const lua_only[] = {"trusted", "time_limit",
                                           "pause_limit", "memory_limit"};
    size_t i;

    s->time_limit_ms = 1000;
    s->pause_limit_ms = 60000;
    s->memory_limit = (size_t)128 << 20;
    s->init_timeout_ms = 10000;
    for (i = 0; !lua && i < sizeof(lua_only) / sizeof(lua_only[0]); i++) {
        if (mf_node_get(n, lua_only[i]) != NULL) {
            cfg_error(ck, mf_node_get(n, lua_only[i]), path,
                      "%s applies to Lua stages only; remove it", lua_only[i]);
        }
    }
    s->trusted = get_bool(ck, n, "trusted", path, 0);
    get_duration(ck, n, "time_limit", path, &s->time_limit_ms);
    get_duration(ck, n, "pause_limit", path, &s->pause_limit_ms);
    get_size(ck, n, "memory_limit", path, &s->memory_limit);
    get_duration(ck, n, "init_timeout", path, &s->init_timeout_ms);
    if (s->time_limit_ms < 1 || s->pause_limit_ms < 1 ||
        s->init_timeout_ms < 1) {
        cfg_error(ck, n, path,
                  "time_limit, pause_limit and init_timeout must be at "
                  "least 1ms");
    }
    if (s->memory_limit < ((size_t)1 << 20)) {
        cfg_error(ck, n, path, "memory_limit must be at least 1MiB");
    }
}

static void
load_stage(check_t *ck, mf_config_t *c, const mf_node_t *n, size_t idx)
{
    static const char *const allowed[] = {
        "name",         "plugin",       "lua",        "config",
        "enabled",      "trusted",      "time_limit", "pause_limit",
        "memory_limit", "init_timeout", "models",     NULL};
    mf_stage_conf_t *s = &c->stages[idx];
    char path[128], *plugin = NULL, *lua = NULL;
    size_t i;

    snprintf(path, sizeof(path), "stages[%zu]", idx);
    s->line = n->line;
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path, "must be a map with name and plugin or lua");
        s->name = mf_xstrdup("");
        return;
    }
    check_keys(ck, n, path, allowed);
    get_string(ck, n, "name", path, &s->name);
    get_string(ck, n, "plugin", path, &plugin);
    get_string(ck, n, "lua", path, &lua);
    s->enabled = get_bool(ck, n, "enabled", path, 1);
    if ((plugin == NULL) == (lua == NULL)) {
        cfg_error(ck, n, path,
                  "needs exactly one of plugin: (a .so, or a "
                  "name in the plugin directory) or lua: (a .lua file)");
    }
    if (plugin != NULL) {
        if (strchr(plugin, '/') == NULL) {
            char buf[PATH_MAX];

            /* the first directory of the search path that has it */
            for (i = 0; i < c->nplugin_dirs; i++) {
                snprintf(buf, sizeof(buf), "%s/%s%s", c->plugin_dirs[i], plugin,
                         strstr(plugin, ".so") ? "" : ".so");
                if (access(buf, R_OK) == 0) {
                    break;
                }
            }
            if (i == c->nplugin_dirs && c->nplugin_dirs > 0) {
                /* named after the last directory in the error below */
                snprintf(buf, sizeof(buf), "%s/%s%s",
                         c->plugin_dirs[c->nplugin_dirs - 1], plugin,
                         strstr(plugin, ".so") ? "" : ".so");
            }
            s->plugin = mf_xstrdup(buf);
        } else {
            s->plugin = resolve_path(c, plugin);
        }
        if (access(s->plugin, R_OK) != 0) {
            cfg_error(ck, mf_node_get(n, "plugin"), path,
                      "plugin file %s not found; build it or fix the path",
                      s->plugin);
        }
    }
    if (lua != NULL) {
        s->lua = resolve_path(c, lua);
        /* a bare name not beside the config: a Lua stage shipped in (or
         * dropped into) a directory of the plugin search path */
        for (i = 0; strchr(lua, '/') == NULL && access(s->lua, R_OK) != 0 &&
                    i < c->nplugin_dirs;
             i++) {
            char buf[PATH_MAX];

            snprintf(buf, sizeof(buf), "%s/%s", c->plugin_dirs[i], lua);
            if (access(buf, R_OK) == 0) {
                free(s->lua);
                s->lua = mf_xstrdup(buf);
            }
        }
        if (access(s->lua, R_OK) != 0) {
            cfg_error(ck, mf_node_get(n, "lua"), path, "Lua file %s not found",
                      s->lua);
        }
    }
    load_stage_limits(ck, n, path, s, lua != NULL);
    if (s->name == NULL) {
        const char *base = plugin ? plugin : lua ? lua : "stage";
        const char *slash = strrchr(base, '/');

        s->name = mf_xstrdup(slash ? slash + 1 : base);
    }
    for (i = 0; i < idx; i++) {
        if (c->stages[i].name && strcmp(c->stages[i].name, s->name) == 0) {
            cfg_error(ck, n, path,
                      "name '%s' is already used by "
                      "stages[%zu]; stage names must be unique",
                      s->name, i);
        }
    }
    {
        const mf_node_t *cn = mf_node_get(n, "config");

        s->config = cn ? mf_node_to_json(cn) : json_object();
    }
    /* virtual models: names the stage answers or routes itself, listed by
     * the model lists; exact names (a list shows names, not patterns) */
    s->models = string_list(ck, mf_node_get(n, "models"), path, &s->nmodels);
    for (i = 0; i < s->nmodels; i++) {
        if (s->models[i][0] == '\0' || strpbrk(s->models[i], "*?") != NULL) {
            cfg_error(ck, mf_node_get(n, "models"), path,
                      "models: '%s' is not a model name (a stage's models "
                      "are exact names, listed by /v1/models)",
                      s->models[i]);
        }
    }
    free(plugin);
    free(lua);
}

static void
load_limits(check_t *ck, mf_config_t *c, const mf_node_t *n)
{
    static const char *const allowed[] = {"max_body",
                                          "max_header",
                                          "max_response",
                                          "max_sse_event",
                                          "client_timeout",
                                          "upstream_connect_timeout",
                                          "upstream_timeout",
                                          "stream_idle_timeout",
                                          "drain_timeout",
                                          "max_body_total",
                                          "max_conns",
                                          "max_messages",
                                          "max_json_depth",
                                          "max_json_values",
                                          "max_retry_after",
                                          "send_timeout",
                                          NULL};

    if (n == NULL) {
        return;
    }
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "limits", "must be a map");
        return;
    }
    check_keys(ck, n, "limits", allowed);
    get_size(ck, n, "max_body", "limits.max_body", &c->limits.max_body);
    get_size(ck, n, "max_header", "limits.max_header", &c->limits.max_header);
    get_size(ck, n, "max_response", "limits.max_response",
             &c->limits.max_response);
    get_size(ck, n, "max_sse_event", "limits.max_sse_event",
             &c->limits.max_sse_event);
    get_duration(ck, n, "client_timeout", "limits.client_timeout",
                 &c->limits.client_timeout_ms);
    get_duration(ck, n, "upstream_connect_timeout",
                 "limits.upstream_connect_timeout",
                 &c->limits.upstream_connect_timeout_ms);
    get_duration(ck, n, "upstream_timeout", "limits.upstream_timeout",
                 &c->limits.upstream_timeout_ms);
    get_duration(ck, n, "stream_idle_timeout", "limits.stream_idle_timeout",
                 &c->limits.stream_idle_timeout_ms);
    get_duration(ck, n, "drain_timeout", "limits.drain_timeout",
                 &c->limits.drain_timeout_ms);
    get_size(ck, n, "max_body_total", "limits.max_body_total",
             &c->limits.max_body_total);
    c->limits.max_conns = get_int(ck, n, "max_conns", "limits.max_conns",
                                  c->limits.max_conns, 1, 10000000);
    c->limits.max_messages =
        (size_t)get_int(ck, n, "max_messages", "limits.max_messages",
                        (int)c->limits.max_messages, 1, 100000000);
    c->limits.max_json_depth =
        (size_t)get_int(ck, n, "max_json_depth", "limits.max_json_depth",
                        (int)c->limits.max_json_depth, 2, 2048);
    c->limits.max_json_values =
        (size_t)get_int(ck, n, "max_json_values", "limits.max_json_values",
                        (int)c->limits.max_json_values, 16, 100000000);
    get_duration(ck, n, "max_retry_after", "limits.max_retry_after",
                 &c->limits.max_retry_after_ms);
    if (c->limits.max_retry_after_ms < 1000) {
        cfg_error(ck, mf_node_get(n, "max_retry_after"),
                  "limits.max_retry_after", "must be at least 1s");
    }
    get_duration(ck, n, "send_timeout", "limits.send_timeout",
                 &c->limits.send_timeout_ms);
    if (c->limits.send_timeout_ms <= 0) {
        cfg_error(ck, mf_node_get(n, "send_timeout"), "limits.send_timeout",
                  "must be longer than 0");
    }
    if (c->limits.max_body < 1024) {
        cfg_error(ck, mf_node_get(n, "max_body"), "limits.max_body",
                  "must be at least 1KiB");
    }
    if (c->limits.max_body_total < c->limits.max_body) {
        const mf_node_t *t = mf_node_get(n, "max_body_total");

        if (t == NULL) {
            c->limits.max_body_total = c->limits.max_body; /* the default */
        } else {
            cfg_error(ck, t, "limits.max_body_total",
                      "is less than limits.max_body; one request of the "
                      "largest size must fit");
        }
    }
}

/* cors.allow_origins and allowed_hosts: who may drive the gateway from a
 * browser, and under which Host names it answers. */
static void
load_access(check_t *ck, mf_config_t *c, const mf_node_t *root)
{
    const mf_node_t *n = mf_node_get(root, "cors");
    size_t i;

    if (n != NULL && n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "cors", "must be a map (allow_origins)");
    } else if (n != NULL) {
        static const char *const allowed[] = {"allow_origins", "allow_headers",
                                              "max_age", NULL};
        double age_ms = c->cors_max_age * 1000.0;
        mf_buf_t joined = {0};
        char **hdrs;
        size_t nh = 0;

        check_keys(ck, n, "cors", allowed);
        hdrs = string_list(ck, mf_node_get(n, "allow_headers"),
                           "cors.allow_headers", &nh);
        for (i = 0; i < nh; i++) {
            if (strcmp(hdrs[i], "*") != 0 &&
                (hdrs[i][0] == '\0' ||
                 strspn(hdrs[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"
                                 "RSTUVWXYZ0123456789-_") != strlen(hdrs[i]))) {
                cfg_error(ck, mf_node_get(n, "allow_headers"),
                          "cors.allow_headers",
                          "'%s' is not a header name (letters, digits, - "
                          "and _) or *",
                          hdrs[i]);
            }
            if (i > 0) {
                mf_buf_append(&joined, ", ", 2);
            }
            mf_buf_append(&joined, hdrs[i], strlen(hdrs[i]));
            free(hdrs[i]);
        }
        if (nh > 0) {
            mf_buf_append(&joined, "", 1);
            c->cors_headers = joined.data;
        }
        free(hdrs);
        get_duration(ck, n, "max_age", "cors.max_age", &age_ms);
        if (age_ms < 0 || age_ms > 86400.0 * 1000) {
            cfg_error(ck, mf_node_get(n, "max_age"), "cors.max_age",
                      "must be between 0s and 24h (browsers cap it lower)");
        } else {
            c->cors_max_age = (unsigned)(age_ms / 1000);
        }
        c->cors_origins = string_list(ck, mf_node_get(n, "allow_origins"),
                                      "cors.allow_origins", &c->ncors_origins);
        for (i = 0; i < c->ncors_origins; i++) {
            const char *o = c->cors_origins[i], *host = strstr(o, "://");

            if (strcmp(o, "*") == 0) {
                continue;
            }
            if ((strncmp(o, "http://", 7) != 0 &&
                 strncmp(o, "https://", 8) != 0) ||
                host[3] == '\0' || strpbrk(host + 3, "/?# \t") != NULL ||
                (strchr(host + 3, '*') != NULL &&
                 (strncmp(host + 3, "*.", 2) != 0 ||
                  strchr(host + 4, '*') != NULL || host[5] == '\0'))) {
                cfg_error(ck, mf_node_get(n, "allow_origins"),
                          "cors.allow_origins",
                          "'%s' is not an origin; write "
                          "scheme://host[:port] without a path or trailing "
                          "'/' (https://app.example.com), "
                          "scheme://*.domain for its subdomains "
                          "(https://*.example.com), or *",
                          o);
            }
        }
    }
    n = mf_node_get(root, "allowed_hosts");
    if (n != NULL) {
        c->has_allowed_hosts = 1;
        c->allowed_hosts =
            string_list(ck, n, "allowed_hosts", &c->nallowed_hosts);
    }
}

/* response_store: how many Responses API answers are kept for
 * previous_response_id and GET /v1/responses/{id}, their bytes, for how
 * long, and the file they are kept in across restarts (db, relative to
 * the config's folder; "none" or absent: memory only). */
static void
load_response_store(check_t *ck, mf_config_t *c, const mf_node_t *n, int redis)
{
    static const char *const allowed[] = {"max_entries", "max_bytes", "ttl",
                                          "db", NULL};
    const mf_node_t *db;
    int entries;

    if (n == NULL) {
        return;
    }
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "response_store",
                  "must be a map (max_entries, max_bytes, ttl, db)");
        return;
    }
    check_keys(ck, n, "response_store", allowed);
    entries = get_int(ck, n, "max_entries", "response_store.max_entries",
                      (int)c->store_max_entries, 0, 10000000);
    c->store_max_entries = (size_t)entries;
    if (redis && entries > 0 && mf_node_get(n, "max_entries") != NULL) {
        cfg_error(ck, mf_node_get(n, "max_entries"),
                  "response_store.max_entries",
                  "with redis: the store is bounded by its ttl (and Redis's "
                  "maxmemory), not by a count; remove max_entries, or set 0 "
                  "to keep no answer");
    }
    get_size(ck, n, "max_bytes", "response_store.max_bytes",
             &c->store_max_bytes);
    get_duration(ck, n, "ttl", "response_store.ttl", &c->store_ttl_ms);
    if (c->store_ttl_ms <= 0) {
        cfg_error(ck, mf_node_get(n, "ttl"), "response_store.ttl",
                  "must be longer than 0s");
    }
    db = want_scalar(ck, mf_node_get(n, "db"), "response_store.db");
    if (db != NULL && db->value[0] == '\0') {
        cfg_error(ck, db, "response_store.db",
                  "is empty; name a file (responses.db), or none to keep "
                  "answers in memory only");
    } else if (db != NULL && strcmp(db->value, "none") != 0) {
        if (redis) {
            cfg_error(ck, db, "response_store.db",
                      "with redis: the store is Redis, shared by every "
                      "gateway using it; remove db (or set none)");
        }
        c->store_db = resolve_path(c, db->value);
    }
}

/* status: the status listener (listen, token) and the metrics
 * registry's default cap of label sets per metric (max_series). */
static void
load_status(check_t *ck, mf_config_t *c, const mf_node_t *n)
{
    static const char *const allowed[] = {"listen", "token", "max_series",
                                          NULL};
    const mf_node_t *v;

    if (n == NULL) {
        return;
    }
    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "status", "must be a map (listen, token, max_series)");
        return;
    }
    check_keys(ck, n, "status", allowed);
    c->status_on = 1;
    v = want_scalar(ck, mf_node_get(n, "listen"), "status.listen");
    if (v != NULL) {
        free(c->status_host);
        c->status_host = NULL;
        if (mf_config_parse_listen(v->value, &c->status_host,
                                   &c->status_port) != MF_OK) {
            cfg_error(ck, v, "status.listen", "'%s' is not host:port",
                      v->value);
            c->status_host = mf_xstrdup("127.0.0.1");
            c->status_port = 9464;
        }
    }
    get_string(ck, n, "token", "status.token", &c->status_token);
    if (c->status_token != NULL && strlen(c->status_token) < 16) {
        cfg_error(ck, mf_node_get(n, "token"), "status.token",
                  "a bearer token of %zu characters is too easy to guess "
                  "(or the variable it names is empty); use 16 or more",
                  strlen(c->status_token));
    }
    c->status_max_series = (size_t)get_int(
        ck, n, "max_series", "status.max_series", 2000, 1, 1000000);
}

static void
add_plugin_dir(mf_config_t *c, char *dir)
{
    c->plugin_dirs =
        mf_xrealloc(c->plugin_dirs, (c->nplugin_dirs + 1) * sizeof(char *));
    c->plugin_dirs[c->nplugin_dirs++] = dir;
}

/* The plugin search path: the host's first directories (-p), then
 * plugin_dir (one directory or a list, relative to the config file), then
 * the built-in directory. */
static void
load_plugin_dirs(check_t *ck, mf_config_t *c, const mf_node_t *n)
{
    size_t count = 0, i;
    char **list = string_list(ck, n, "plugin_dir", &count);

    for (i = 0; i < count; i++) {
        char *dir = resolve_path(c, list[i]);
        struct stat st;

        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            cfg_error(ck, n, "plugin_dir",
                      "%s is not a directory; fix the path or remove it", dir);
        }
        add_plugin_dir(c, dir);
        free(list[i]);
    }
    free(list);
    if (c->builtin_plugin_dir != NULL) {
        add_plugin_dir(c, mf_xstrdup(c->builtin_plugin_dir));
    }
}

/* Governance sections: `consumers`, `groups` and `prices` are checked
 * here and handed whole, normalized, to the stages that read them
 * (api->config_section): the host neither identifies nor limits. */

/* A non-negative number; -1 when n is not one (reported). */
static double
gov_number(check_t *ck, const mf_node_t *n, const char *path)
{
    char *end;
    double v;

    if (n == NULL || n->type != MF_NODE_SCALAR || n->quoted) {
        cfg_error(ck, n, path, "must be a number");
        return -1;
    }
    v = strtod(n->value, &end);
    if (*end != '\0' || end == n->value || !(v >= 0) || v > 1e15) {
        cfg_error(ck, n, path, "'%s' must be a number from 0 to 1e15",
                  n->value);
        return -1;
    }
    return v;
}

/* limits: {rpm, rph, rpd, tpm, tph, tpd, concurrency}: whole numbers. */
static json_t *
gov_limits(check_t *ck, const mf_node_t *n, const char *path)
{
    static const char *const keys[] = {"rpm", "rph", "rpd",         "tpm",
                                       "tph", "tpd", "concurrency", NULL};
    json_t *j = json_object();
    const mf_node_t *k;
    char p[768];

    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path,
                  "must be a map of rpm, rph, rpd, tpm, tph, tpd, "
                  "concurrency");
        return j;
    }
    check_keys(ck, n, path, keys);
    for (k = n->child; k != NULL; k = k->next) {
        double v;

        snprintf(p, sizeof(p), "%s.%s", path, k->key);
        v = gov_number(ck, k, p);
        if (v < 0) {
            continue;
        }
        if (v < 1 || v != (double)(int64_t)v) {
            cfg_error(ck, k, p, "'%s' must be a whole number of at least 1",
                      k->value);
            continue;
        }
        json_object_set_new(j, k->key, json_integer((json_int_t)v));
    }
    return j;
}

/* A period: day, week, month or total, and a UTC offset (tz). */
static int
gov_tz_ok(const char *s)
{
    int h, m = 0, n = 0;

    if (strcmp(s, "UTC") == 0 || strcmp(s, "Z") == 0) {
        return 1;
    }
    if (strncmp(s, "UTC", 3) == 0) {
        s += 3;
    }
    if ((s[0] != '+' && s[0] != '-') ||
        (sscanf(s + 1, "%2d:%2d%n", &h, &m, &n) != 2 &&
         sscanf(s + 1, "%2d%n", &h, &n) != 1)) {
        return 0;
    }
    return s[1 + n] == '\0' && h <= 14 && m < 60;
}

/* budget: {usd: N | tokens: N, period: day|week|month|total, tz}. USD
 * become integer micro-USD ("micro_usd"). */
static json_t *
gov_budget(check_t *ck, const mf_node_t *n, const char *path)
{
    static const char *const keys[] = {"usd", "tokens", "period", "tz", NULL};
    static const char *const periods[] = {"day", "week", "month", "total",
                                          NULL};
    const mf_node_t *usd, *tok, *per, *tz;
    json_t *j = json_object();
    char p[768];
    double v;
    size_t i;

    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path, "must be a map: { usd: 50, period: month }");
        return j;
    }
    check_keys(ck, n, path, keys);
    usd = mf_node_get(n, "usd");
    tok = mf_node_get(n, "tokens");
    per = want_scalar(ck, mf_node_get(n, "period"), path);
    tz = want_scalar(ck, mf_node_get(n, "tz"), path);
    if ((usd == NULL) == (tok == NULL)) {
        cfg_error(ck, n, path, "needs one of usd or tokens");
    }
    snprintf(p, sizeof(p), "%s.%s", path, usd ? "usd" : "tokens");
    if (usd != NULL && (v = gov_number(ck, usd, p)) >= 0) {
        json_object_set_new(j, "micro_usd",
                            json_integer((json_int_t)(v * 1e6 + 0.5)));
    } else if (tok != NULL && (v = gov_number(ck, tok, p)) >= 0) {
        if (v != (double)(int64_t)v) {
            cfg_error(ck, tok, p, "'%s' must be a whole number", tok->value);
        }
        json_object_set_new(j, "tokens", json_integer((json_int_t)v));
    }
    for (i = 0; per != NULL && periods[i] != NULL; i++) {
        if (strcmp(per->value, periods[i]) == 0) {
            break;
        }
    }
    if (per != NULL && periods[i] == NULL) {
        cfg_error(ck, per, path,
                  "period '%s' must be day, week, month or total", per->value);
    }
    json_object_set_new(j, "period", json_string(per ? per->value : "month"));
    if (tz != NULL && !gov_tz_ok(tz->value)) {
        cfg_error(ck, tz, path,
                  "tz '%s' must be UTC or an offset such as +02:00 or "
                  "UTC-05:00 (zone names with daylight saving are not read)",
                  tz->value);
    }
    json_object_set_new(j, "tz", json_string(tz ? tz->value : "UTC"));
    return j;
}

/* One entry of `consumers` (keys and models lists) or `groups`. */
static json_t *
gov_entry(check_t *ck, const mf_node_t *n, const char *path, int consumer,
          json_t *names)
{
    static const char *const ckeys[] = {"name",     "group",  "keys",
                                        "models",   "limits", "budget",
                                        "disabled", NULL};
    static const char *const gkeys[] = {"name", "models", "limits", "budget",
                                        NULL};
    json_t *j = json_object();
    const mf_node_t *k;
    char *name = NULL, p[128];
    size_t i, count;
    char **list;

    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, path, "must be a map with a name");
        return j;
    }
    check_keys(ck, n, path, consumer ? ckeys : gkeys);
    get_string(ck, n, "name", path, &name);
    if (name == NULL || name[0] == '\0') {
        cfg_error(ck, n, path, "needs a name");
    } else if (json_object_get(names, name) != NULL) {
        cfg_error(ck, n, path, "name '%s' is used twice; names are unique",
                  name);
    } else {
        json_object_set_new(names, name, json_true());
        json_object_set_new(j, "name", json_string(name));
    }
    free(name);
    name = NULL;
    if (consumer) {
        get_string(ck, n, "group", path, &name);
        if (name != NULL) {
            json_object_set_new(j, "group", json_string(name));
            free(name);
        }
        k = mf_node_get(n, "keys");
        snprintf(p, sizeof(p), "%s.keys", path);
        list = string_list(ck, k, p, &count);
        if (k != NULL) {
            json_t *keys = json_array();
            const mf_node_t *e = k->type == MF_NODE_SEQ ? k->child : k;

            for (i = 0; i < count; i++, e = e ? e->next : NULL) {
                if (e != NULL && e->unset_var) {
                    cfg_error(ck, e, p,
                              "key %zu names an unset variable (%s); set it "
                              "or remove the key",
                              i, e->raw ? e->raw : "?");
                } else if (list[i][0] == '\0') {
                    cfg_error(ck, e, p, "key %zu is empty", i);
                } else {
                    json_array_append_new(keys, json_string(list[i]));
                }
                free(list[i]);
            }
            json_object_set_new(j, "keys", keys);
        }
        free(list);
        json_object_set_new(j, "disabled",
                            json_boolean(get_bool(ck, n, "disabled", path, 0)));
    }
    k = mf_node_get(n, "models");
    snprintf(p, sizeof(p), "%s.models", path);
    list = string_list(ck, k, p, &count);
    if (k != NULL) {
        json_t *models = json_array();

        for (i = 0; i < count; i++) {
            json_array_append_new(models, json_string(list[i]));
            free(list[i]);
        }
        json_object_set_new(j, "models", models);
    }
    free(list);
    if ((k = mf_node_get(n, "limits")) != NULL) {
        snprintf(p, sizeof(p), "%s.limits", path);
        json_object_set_new(j, "limits", gov_limits(ck, k, p));
    }
    if ((k = mf_node_get(n, "budget")) != NULL) {
        snprintf(p, sizeof(p), "%s.budget", path);
        json_object_set_new(j, "budget", gov_budget(ck, k, p));
    }
    return j;
}

static json_t *
gov_list(check_t *ck, const mf_node_t *n, const char *key, int consumer)
{
    json_t *out = json_array(), *names = json_object();
    const mf_node_t *e;
    char p[64];
    size_t i = 0;

    if (n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, key, "must be a list of maps, each with a name");
    } else {
        for (e = n->child; e != NULL; e = e->next, i++) {
            snprintf(p, sizeof(p), "%s[%zu]", key, i);
            json_array_append_new(out, gov_entry(ck, e, p, consumer, names));
        }
    }
    json_decref(names);
    return out;
}

/* With a `groups` list, a consumer's group is one of it (a name typed
 * wrong would silently drop the group's limits and budget); without
 * one, a group is a label (metrics, cache scope) and any name goes. */
static void
gov_check_groups(check_t *ck, json_t *sections, const mf_node_t *cons)
{
    json_t *groups = json_object_get(sections, "groups"), *c, *g;
    const mf_node_t *e;
    const char *want;
    size_t i = 0, j;
    char p[64];

    if (groups == NULL || cons == NULL || cons->type != MF_NODE_SEQ) {
        return;
    }
    for (e = cons->child; e != NULL; e = e->next, i++) {
        c = json_array_get(json_object_get(sections, "consumers"), i);
        want = json_string_value(json_object_get(c, "group"));
        if (want == NULL) {
            continue;
        }
        json_array_foreach(groups, j, g)
        {
            const char *name = json_string_value(json_object_get(g, "name"));

            if (name != NULL && strcmp(name, want) == 0) {
                break;
            }
        }
        if (j == json_array_size(groups)) {
            snprintf(p, sizeof(p), "consumers[%zu].group", i);
            cfg_error(ck, e, p,
                      "'%s' is not one of the groups listed under "
                      "`groups:`; add it there or correct the name",
                      want);
        }
    }
}

/* One price's kinds into one: USD per million tokens, request in USD. */
static void
gov_price_kinds(check_t *ck, const mf_node_t *m, const char *at, json_t *one)
{
    static const char *const kinds[] = {
        "input",     "output",  "cache_read", "cache_write",
        "reasoning", "request", NULL};
    const mf_node_t *k;
    char p[560];
    size_t i;

    for (i = 0; kinds[i] != NULL; i++) {
        double v;

        if ((k = mf_node_get(m, kinds[i])) == NULL) {
            continue;
        }
        snprintf(p, sizeof(p), "%s.%s", at, kinds[i]);
        if ((v = gov_number(ck, k, p)) >= 0) {
            json_object_set_new(one, kinds[i], json_real(v));
        }
    }
}

/* prices: MODEL or GLOB: {input, output, cache_read, cache_write,
 * reasoning} in USD per million tokens, request in USD per request, and
 * tiers: [{above: N, <the same kinds>}] that replace them when the
 * prompt has more than N tokens. */
static json_t *
gov_prices(check_t *ck, const mf_node_t *n)
{
    static const char *const keys[] = {"input",       "output",    "cache_read",
                                       "cache_write", "reasoning", "request",
                                       "tiers",       NULL};
    static const char *const tier_keys[] = {
        "above",       "input",     "output",  "cache_read",
        "cache_write", "reasoning", "request", NULL};
    json_t *out = json_object();
    const mf_node_t *m, *t;
    char p[512];

    if (n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "prices",
                  "must be a map: MODEL: { input: 2.5, output: 10 } (USD per "
                  "million tokens)");
        return out;
    }
    for (m = n->child; m != NULL; m = m->next) {
        json_t *one = json_object();

        snprintf(p, sizeof(p), "prices.%s", m->key);
        if (m->type != MF_NODE_MAP) {
            cfg_error(ck, m, p,
                      "must be a map of input, output, cache_read, "
                      "cache_write, reasoning, request, tiers");
            json_object_set_new(out, m->key, one);
            continue;
        }
        check_keys(ck, m, p, keys);
        if (mf_node_get(m, "input") == NULL ||
            mf_node_get(m, "output") == NULL) {
            cfg_error(ck, m, p, "needs input and output");
        }
        gov_price_kinds(ck, m, p, one);
        if ((t = mf_node_get(m, "tiers")) != NULL) {
            json_t *tiers = json_array();
            const mf_node_t *e;
            double last = -1;
            size_t i = 0;

            if (t->type != MF_NODE_SEQ) {
                snprintf(p, sizeof(p), "prices.%s.tiers", m->key);
                cfg_error(ck, t, p,
                          "must be a list: - { above: 200000, input: 5, "
                          "output: 22.5 }");
            }
            for (e = t->type == MF_NODE_SEQ ? t->child : NULL; e != NULL;
                 e = e->next, i++) {
                json_t *tier = json_object();
                const mf_node_t *above;
                double a;

                snprintf(p, sizeof(p), "prices.%s.tiers[%zu]", m->key, i);
                if (e->type != MF_NODE_MAP) {
                    cfg_error(ck, e, p, "must be a map with above");
                    json_decref(tier);
                    continue;
                }
                check_keys(ck, e, p, tier_keys);
                above = mf_node_get(e, "above");
                if (above == NULL) {
                    cfg_error(ck, e, p, "needs above (prompt tokens)");
                } else {
                    char ap[560];

                    snprintf(ap, sizeof(ap), "%s.above", p);
                    if ((a = gov_number(ck, above, ap)) >= 0) {
                        if (a <= last) {
                            cfg_error(ck, above, ap,
                                      "tiers go up: above must be more than "
                                      "the tier before's");
                        }
                        last = a;
                        json_object_set_new(tier, "above", json_real(a));
                    }
                }
                gov_price_kinds(ck, e, p, tier);
                json_array_append_new(tiers, tier);
            }
            json_object_set_new(one, "tiers", tiers);
        }
        json_object_set_new(out, m->key, one);
    }
    return out;
}

/* A number of a LiteLLM price entry in USD per token, as USD per
 * million tokens; -1 when absent or not a sane number. */
static double
litellm_per_million(const json_t *e, const char *key)
{
    const json_t *v = json_object_get(e, key);
    double d = json_is_number(v) ? json_number_value(v) : -1;

    return d >= 0 && d < 1e6 ? d * 1e6 : -1;
}

/* prices_file: a JSON file in LiteLLM's model-price format
 * (model_prices_and_context_window.json: MODEL: {input_cost_per_token,
 * output_cost_per_token, cache_read_input_token_cost,
 * cache_creation_input_token_cost, output_cost_per_reasoning_token,
 * input_cost_per_token_above_200k_tokens,
 * output_cost_per_token_above_200k_tokens, ...}) made into `prices:`
 * entries; an entry without both token prices (images, audio, the
 * "sample_spec") is left out. */
static json_t *
gov_prices_file(check_t *ck, const mf_config_t *c, const mf_node_t *n)
{
    static const struct {
        const char *from, *to;
    } kinds[] = {{"input_cost_per_token", "input"},
                 {"output_cost_per_token", "output"},
                 {"cache_read_input_token_cost", "cache_read"},
                 {"cache_creation_input_token_cost", "cache_write"},
                 {"output_cost_per_reasoning_token", "reasoning"}};
    json_t *out = json_object(), *in, *e;
    json_error_t jerr;
    const char *model;
    char *file;
    size_t k;

    if (n->type != MF_NODE_SCALAR || n->value[0] == '\0') {
        cfg_error(ck, n, "prices_file",
                  "must be the path of a JSON file in LiteLLM's model-price "
                  "format");
        return out;
    }
    file = resolve_path(c, n->value);
    in = json_load_file(file, 0, &jerr);
    if (!json_is_object(in)) {
        cfg_error(ck, n, "prices_file", "cannot read %s: %s", file,
                  in == NULL ? jerr.text : "not a JSON object");
        json_decref(in);
        free(file);
        return out;
    }
    free(file);
    json_object_foreach(in, model, e)
    {
        json_t *one;
        double in_above, out_above;

        if (litellm_per_million(e, "input_cost_per_token") < 0 ||
            litellm_per_million(e, "output_cost_per_token") < 0) {
            continue;
        }
        one = json_object();
        for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            double v = litellm_per_million(e, kinds[k].from);

            if (v >= 0) {
                json_object_set_new(one, kinds[k].to, json_real(v));
            }
        }
        in_above =
            litellm_per_million(e, "input_cost_per_token_above_200k_tokens");
        out_above =
            litellm_per_million(e, "output_cost_per_token_above_200k_tokens");
        if (in_above >= 0 || out_above >= 0) {
            json_t *tier = json_pack("{s:f}", "above", 200000.0);

            if (in_above >= 0) {
                json_object_set_new(tier, "input", json_real(in_above));
            }
            if (out_above >= 0) {
                json_object_set_new(tier, "output", json_real(out_above));
            }
            json_object_set_new(one, "tiers", json_pack("[o]", tier));
        }
        json_object_set_new(out, model, one);
    }
    json_decref(in);
    return out;
}

static void
load_governance(check_t *ck, mf_config_t *c, const mf_node_t *root)
{
    const mf_node_t *n;

    c->sections = json_object();
    /* where relative paths in a stage's config are read from */
    json_object_set_new(c->sections, "dir", json_string(c->dir));
    if ((n = mf_node_get(root, "consumers")) != NULL) {
        json_object_set_new(c->sections, "consumers",
                            gov_list(ck, n, "consumers", 1));
        c->sections_line = n->line;
    }
    if ((n = mf_node_get(root, "groups")) != NULL) {
        json_object_set_new(c->sections, "groups",
                            gov_list(ck, n, "groups", 0));
        c->groups_line = n->line;
    }
    if ((n = mf_node_get(root, "prices")) != NULL) {
        json_object_set_new(c->sections, "prices", gov_prices(ck, n));
        c->prices_line = n->line;
    }
    gov_check_groups(ck, c->sections, mf_node_get(root, "consumers"));
    if ((n = mf_node_get(root, "redis")) != NULL) {
        json_t *r = mf_node_to_json(n);

        /* whether the gateway has a Redis and where: stores choose by it;
         * the password stays with the host */
        if (json_is_object(r)) {
            json_object_del(r, "password");
        }
        json_object_set_new(c->sections, "redis", r);
    }
    if ((n = mf_node_get(root, "prices_file")) != NULL) {
        json_t *imported = gov_prices_file(ck, c, n);
        json_t *own = json_object_get(c->sections, "prices");

        /* the config's own prices win over the file's */
        if (own != NULL) {
            json_object_update(imported, own);
        }
        json_object_set_new(c->sections, "prices", imported);
    }
}

/* redis.cluster: a list of seed nodes, "host:port" each; then the
 * standalone host, port and db are refused (a cluster has only db 0, and
 * its nodes come from the seeds' slot map). */
static void
load_redis_cluster(check_t *ck, const mf_node_t *redis, const mf_node_t *cl)
{
    static const char *const standalone[] = {"host", "port", "db", NULL};
    const mf_node_t *s;
    size_t i;
    int n = 0;

    if (cl->type != MF_NODE_SEQ || cl->child == NULL) {
        cfg_error(ck, cl, "redis.cluster",
                  "must be a list of seed nodes, \"host:port\" each "
                  "(e.g. [\"127.0.0.1:7000\", \"127.0.0.1:7001\"])");
        return;
    }
    for (s = cl->child; s != NULL; s = s->next) {
        const char *colon =
            s->type == MF_NODE_SCALAR ? strrchr(s->value, ':') : NULL;
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;

        if (colon == NULL || colon == s->value || end == colon + 1 ||
            *end != '\0' || port < 1 || port > 65535) {
            cfg_error(ck, s, "redis.cluster",
                      "'%s' must be \"host:port\" (a seed node)",
                      s->type == MF_NODE_SCALAR ? s->value : "(not a string)");
        }
        n++;
    }
    if (n > 16) {
        cfg_error(ck, cl, "redis.cluster",
                  "at most 16 seed nodes (any one reachable node is enough; "
                  "the others come from its slot map)");
    }
    for (i = 0; standalone[i] != NULL; i++) {
        const mf_node_t *v = mf_node_get(redis, standalone[i]);

        if (v != NULL) {
            cfg_error(ck, v, standalone[i],
                      "redis.%s cannot be set with redis.cluster (%s)",
                      standalone[i],
                      i == 2 ? "a Redis Cluster has only database 0"
                             : "the nodes are the cluster's seeds");
        }
    }
}

/* The "models" section: the exact model names the config serves (the
 * providers' models and model_map names, the routes', the stages'
 * `models`), once each, in config order; globs are no names. Stages that
 * label by model (prometheus, the dashboard) reserve them from the start,
 * so a configured model that fails is counted under its own name. */
static void
add_model_name(json_t *names, json_t *seen, const char *m)
{
    if (m == NULL || strpbrk(m, "*?[") != NULL || json_object_get(seen, m)) {
        return;
    }
    json_object_set_new(seen, m, json_true());
    json_array_append_new(names, json_string(m));
}

static void
load_model_names(mf_config_t *c)
{
    json_t *names = json_array(), *seen = json_object();
    size_t i, j;

    for (i = 0; i < c->nproviders; i++) {
        const mf_provider_conf_t *pc = &c->providers[i];

        for (j = 0; j < pc->nmodels; j++) {
            add_model_name(names, seen, pc->models[j]);
        }
        for (j = 0; j < pc->nmap; j++) {
            add_model_name(names, seen, pc->model_map[j].from);
        }
    }
    for (i = 0; i < c->nroutes; i++) {
        add_model_name(names, seen, c->routes[i].model);
    }
    for (i = 0; i < c->nstages; i++) {
        for (j = 0; j < c->stages[i].nmodels; j++) {
            add_model_name(names, seen, c->stages[i].models[j]);
        }
    }
    json_decref(seen);
    json_object_set_new(c->sections, "models", names);
}

static void
load_root(check_t *ck, mf_config_t *c, const mf_node_t *root)
{
    static const char *const allowed[] = {
        "listen",      "workers",  "admin",     "limits", "redis",
        "providers",   "routes",   "consumers", "stages", "log_level",
        "plugin_dir",  "lua_path", "reload",    "cors",   "allowed_hosts",
        "reuse_port",  "groups",   "prices",    "status", "response_store",
        "prices_file", NULL};
    const mf_node_t *n;
    size_t i;

    if (root->type != MF_NODE_MAP) {
        cfg_error(ck, root, "(top)", "the config must be a map of settings");
        return;
    }
    check_keys(ck, root, "", allowed);

    n = want_scalar(ck, mf_node_get(root, "listen"), "listen");
    if (n != NULL) {
        free(c->listen_host);
        c->listen_host = NULL;
        if (mf_config_parse_listen(n->value, &c->listen_host,
                                   &c->listen_port) != MF_OK) {
            cfg_error(ck, n, "listen", "'%s' is not host:port", n->value);
            c->listen_host = mf_xstrdup("127.0.0.1");
        }
    }
    n = want_scalar(ck, mf_node_get(root, "workers"), "workers");
    if (n != NULL && strcmp(n->value, "auto") != 0) {
        char *end;
        long w = strtol(n->value, &end, 10);

        if (*end != '\0' || w < 1 || w > 256) {
            cfg_error(ck, n, "workers", "'%s' must be auto or 1..256",
                      n->value);
        } else {
            c->workers = (int)w;
        }
    }
    c->reuse_port = get_bool(ck, root, "reuse_port", "reuse_port", 0);
    load_governance(ck, c, root);
    n = mf_node_get(root, "admin");
    if (n != NULL) {
        if (n->type == MF_NODE_MAP) {
            static const char *const adm[] = {"socket", NULL};

            check_keys(ck, n, "admin", adm);
            get_string(ck, n, "socket", "admin.socket", &c->admin_socket);
        } else {
            get_string(ck, root, "admin", "admin", &c->admin_socket);
        }
    }
    n = mf_node_get(root, "reload");
    if (n != NULL && n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "reload",
                  "must be a map (watch, debounce, write_wait)");
    } else if (n != NULL) {
        static const char *const rel[] = {"watch", "debounce", "write_wait",
                                          NULL};

        check_keys(ck, n, "reload", rel);
        c->watch = get_bool(ck, n, "watch", "reload.watch", 1);
        get_duration(ck, n, "debounce", "reload.debounce",
                     &c->watch_debounce_ms);
        get_duration(ck, n, "write_wait", "reload.write_wait",
                     &c->watch_write_wait_ms);
    }
    n = want_scalar(ck, mf_node_get(root, "log_level"), "log_level");
    if (n != NULL) {
        static const char *const names[] = {"debug", "info", "warn", "error"};

        for (i = 0; i < 4; i++) {
            if (strcmp(n->value, names[i]) == 0) {
                c->log_level = (mf_log_level_t)i;
                break;
            }
        }
        if (i == 4) {
            cfg_error(ck, n, "log_level",
                      "'%s' must be debug, info, warn "
                      "or error",
                      n->value);
        }
    }
    load_plugin_dirs(ck, c, mf_node_get(root, "plugin_dir"));
    get_string(ck, root, "lua_path", "lua_path", &c->lua_path);
    load_limits(ck, c, mf_node_get(root, "limits"));
    load_access(ck, c, root);
    load_response_store(ck, c, mf_node_get(root, "response_store"),
                        mf_node_get(root, "redis") != NULL);
    load_status(ck, c, mf_node_get(root, "status"));

    n = mf_node_get(root, "redis");
    if (n != NULL && n->type != MF_NODE_MAP) {
        cfg_error(ck, n, "redis", "must be a map (host, port, ...)");
    } else if (n != NULL) {
        static const char *const rk[] = {"host",    "port",    "db", "password",
                                         "timeout", "cluster", NULL};
        const mf_node_t *cl = mf_node_get(n, "cluster");

        check_keys(ck, n, "redis", rk);
        if (cl != NULL) {
            load_redis_cluster(ck, n, cl);
        }
        c->redis = mf_node_to_json(n);
    }

    n = mf_node_get(root, "providers");
    if (n != NULL && n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, "providers", "must be a list");
    } else if (n != NULL) {
        const mf_node_t *p;

        for (p = n->child; p != NULL; p = p->next) {
            c->nproviders++;
        }
        c->providers = mf_xcalloc(c->nproviders ? c->nproviders : 1,
                                  sizeof(*c->providers));
        i = 0;
        for (p = n->child; p != NULL; p = p->next) {
            load_provider(ck, c, p, i++);
        }
    }
    n = mf_node_get(root, "routes");
    if (n != NULL && n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, "routes", "must be a list");
    } else if (n != NULL) {
        const mf_node_t *p;

        for (p = n->child; p != NULL; p = p->next) {
            c->nroutes++;
        }
        c->routes = mf_xcalloc(c->nroutes ? c->nroutes : 1, sizeof(*c->routes));
        for (p = n->child, i = 0; p != NULL; p = p->next, i++) {
            load_route(ck, c, p, i);
        }
    }

    n = mf_node_get(root, "stages");
    if (n != NULL && n->type != MF_NODE_SEQ) {
        cfg_error(ck, n, "stages", "must be a list");
    } else if (n != NULL) {
        const mf_node_t *s;

        for (s = n->child; s != NULL; s = s->next) {
            c->nstages++;
        }
        c->stages = mf_xcalloc(c->nstages ? c->nstages : 1, sizeof(*c->stages));
        i = 0;
        for (s = n->child; s != NULL; s = s->next) {
            load_stage(ck, c, s, i++);
        }
    }
    if (c->sections != NULL) {
        load_model_names(c);
    }
}

static mf_config_t *
config_new(const char *path, const char *first_dirs, const char *plugin_dir)
{
    mf_config_t *c = mf_xcalloc(1, sizeof(*c));
    char *tmp = mf_xstrdup(path);

    c->path = mf_xstrdup(path);
    c->dir = mf_xstrdup(dirname(tmp));
    free(tmp);
    c->listen_host = mf_xstrdup("127.0.0.1");
    c->listen_port = 8080;
    c->cors_max_age = 600;
    c->store_max_entries = 10000;
    c->store_max_bytes = 64 << 20;
    c->store_ttl_ms = 3600.0 * 1000;
    c->status_host = mf_xstrdup("127.0.0.1");
    c->status_port = 9464;
    c->status_max_series = 2000;
    c->builtin_plugin_dir = mf_xstrdup(plugin_dir ? plugin_dir : "plugins");
    while (first_dirs != NULL && *first_dirs != '\0') {
        size_t len = strcspn(first_dirs, ":");

        if (len > 0) {
            add_plugin_dir(c, mf_xstrndup(first_dirs, len));
        }
        first_dirs += len + (first_dirs[len] == ':');
    }
    c->log_level = MF_LOG_INFO;
    c->limits.max_body = 16 * 1024 * 1024;
    c->limits.max_header = 64 * 1024;
    c->limits.max_response = 64 * 1024 * 1024;
    c->limits.max_sse_event = 4 * 1024 * 1024;
    c->limits.client_timeout_ms = 60000;
    c->limits.upstream_connect_timeout_ms = 10000;
    c->limits.upstream_timeout_ms = 600000;
    c->limits.stream_idle_timeout_ms = 300000;
    c->limits.drain_timeout_ms = 30000;
    c->limits.max_body_total = (size_t)256 * 1024 * 1024;
    c->limits.max_messages = 100000;     /* Anthropic's own limit */
    c->limits.max_json_depth = 128;      /* jansson stops at 2048 */
    c->limits.max_json_values = 1000000; /* about 0.2 s of parsing */
    c->limits.max_retry_after_ms = 300000;
    c->limits.send_timeout_ms = 60000;
    c->watch = 1;
    c->watch_debounce_ms = 200;
    c->watch_write_wait_ms = 5000;
    return c;
}

mf_config_t *
mf_config_parse_dirs(const char *path, const char *text, size_t len,
                     const char *first_dirs, const char *plugin_dir,
                     char **errors)
{
    char err[1024];
    check_t ck = {.file = path};
    mf_config_t *c;
    mf_node_t *root;

    *errors = NULL;
    root = mf_yaml_parse(path, text, len, err, sizeof(err));
    if (root == NULL) {
        *errors = mf_xstrdup(err);
        return NULL;
    }
    c = config_new(path, first_dirs, plugin_dir);
    load_root(&ck, c, root);
    mf_node_free(root);
    if (ck.nerrors > 0) {
        /* the config is returned too, for checks of later phases */
        mf_buf_append(&ck.errors, "", 1);
        *errors = mf_xstrdup(ck.errors.data);
        mf_buf_free(&ck.errors);
    }
    return c;
}

mf_config_t *
mf_config_parse(const char *path, const char *text, size_t len,
                const char *plugin_dir, char **errors)
{
    mf_config_t *c =
        mf_config_parse_dirs(path, text, len, NULL, plugin_dir, errors);

    if (*errors != NULL) {
        mf_config_free(c);
        return NULL;
    }
    return c;
}

void
mf_config_warn_disabled(const mf_config_t *c)
{
    mf_buf_t names = {0}, vars = {0};
    size_t i, j, ndisabled = 0, nenabled = 0;

    for (i = 0; i < c->nproviders; i++) {
        const mf_provider_conf_t *p = &c->providers[i];
        mf_buf_t *b = p->disabled ? &vars : &names;

        if (!p->disabled) {
            mf_buf_printf(b, "%s%s", nenabled++ ? ", " : "", p->name);
            continue;
        }
        ndisabled++;
        for (j = 0; j < p->nkey_vars; j++) {
            mf_buf_printf(b, "%s%s", vars.len ? ", " : "", p->key_vars[j]);
        }
    }
    if (ndisabled == 0) {
        goto out;
    }
    mf_buf_append(&names, "", 1);
    mf_buf_append(&vars, "", 1);
    mf_log_warn("%s: %zu of %zu providers enabled (%s); %zu disabled because "
                "their keys are empty%s%s",
                c->path, nenabled, c->nproviders,
                nenabled ? names.data : "none", ndisabled,
                vars.len > 1 ? "; export one of these to enable one: " : "",
                vars.len > 1 ? vars.data : "");
out:
    mf_buf_free(&names);
    mf_buf_free(&vars);
}

static mf_config_t *
config_read(const char *path, const char *first_dirs, const char *plugin_dir,
            char **errors)
{
    char err[1024];
    FILE *f = fopen(path, "rb");
    mf_buf_t b = {.limit = 16 * 1024 * 1024};
    char chunk[8192];
    size_t n;
    mf_config_t *c;

    if (f == NULL) {
        snprintf(err, sizeof(err), "%s: cannot open the config: %s", path,
                 strerror(errno));
        *errors = mf_xstrdup(err);
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (mf_buf_try_append(&b, chunk, n) != MF_OK) {
            fclose(f);
            mf_buf_free(&b);
            snprintf(err, sizeof(err), "%s: larger than 16 MiB", path);
            *errors = mf_xstrdup(err);
            return NULL;
        }
    }
    fclose(f);
    c = mf_config_parse_dirs(path, b.data ? b.data : "", b.len, first_dirs,
                             plugin_dir, errors);
    mf_buf_free(&b);
    return c;
}

mf_config_t *
mf_config_load_dirs(const char *path, const char *first_dirs,
                    const char *plugin_dir, char **errors)
{
    return config_read(path, first_dirs, plugin_dir, errors);
}

mf_config_t *
mf_config_load(const char *path, const char *plugin_dir, char **errors)
{
    mf_config_t *c = config_read(path, NULL, plugin_dir, errors);

    if (*errors != NULL) {
        mf_config_free(c);
        return NULL;
    }
    return c;
}

void
mf_config_free(mf_config_t *c)
{
    size_t i, j;

    if (c == NULL) {
        return;
    }
    for (i = 0; i < c->nproviders; i++) {
        mf_provider_conf_t *p = &c->providers[i];

        free(p->name);
        free(p->type);
        free(p->base_url);
        free(p->plugin);
        for (j = 0; j < p->nkeys; j++) {
            free(p->keys[j]);
        }
        free(p->keys);
        for (j = 0; j < p->nmodels; j++) {
            free(p->models[j]);
        }
        free(p->models);
        for (j = 0; j < p->nmap; j++) {
            free(p->model_map[j].from);
            free(p->model_map[j].to);
        }
        free(p->model_map);
        free(p->probe_path);
        free(p->list_path);
        free(p->list_header);
        free(p->list_extra);
        free(p->probe_header);
        for (j = 0; j < p->nforward; j++) {
            free(p->forward_headers[j]);
        }
        free(p->forward_headers);
        for (j = 0; j < p->nkey_vars; j++) {
            free(p->key_vars[j]);
        }
        json_decref(p->json);
    }
    free(c->providers);
    for (i = 0; i < c->nstages; i++) {
        free(c->stages[i].name);
        free(c->stages[i].plugin);
        free(c->stages[i].lua);
        json_decref(c->stages[i].config);
        for (j = 0; j < c->stages[i].nmodels; j++) {
            free(c->stages[i].models[j]);
        }
        free(c->stages[i].models);
    }
    free(c->stages);
    json_decref(c->redis);
    json_decref(c->sections);
    for (i = 0; i < c->ncors_origins; i++) {
        free(c->cors_origins[i]);
    }
    free(c->cors_origins);
    free(c->cors_headers);
    free(c->store_db);
    for (i = 0; i < c->nallowed_hosts; i++) {
        free(c->allowed_hosts[i]);
    }
    free(c->allowed_hosts);
    free(c->path);
    free(c->dir);
    free(c->status_host);
    free(c->status_token);
    free(c->listen_host);
    free(c->admin_socket);
    for (i = 0; i < c->nroutes; i++) {
        mf_route_conf_t *rt = &c->routes[i];

        free(rt->model);
        for (j = 0; j < rt->ntargets; j++) {
            free(rt->targets[j].provider);
            free(rt->targets[j].model);
        }
        for (j = 0; j < rt->nfallbacks; j++) {
            free(rt->fallbacks[j].provider);
            free(rt->fallbacks[j].model);
        }
        for (j = 0; j < rt->nrules; j++) {
            free(rt->rules[j].header);
            free(rt->rules[j].value);
            free(rt->rules[j].consumer);
            free(rt->rules[j].group);
        }
        free(rt->targets);
        free(rt->fallbacks);
        free(rt->rules);
    }
    free(c->routes);
    for (i = 0; i < c->nplugin_dirs; i++) {
        free(c->plugin_dirs[i]);
    }
    free(c->plugin_dirs);
    free(c->builtin_plugin_dir);
    free(c->lua_path);
    free(c);
}
