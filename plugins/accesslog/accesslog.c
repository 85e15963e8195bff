/*
 * accesslog: one JSON line per request (time, id, consumer, model asked,
 * provider, upstream model, status, tokens, latency, time to first token,
 * bytes, error) to a file (appended) or stdout. Keys never reach it: the
 * host's request info carries none.
 *
 * config: { path: "stdout" | "/var/log/manifold/access.log" }
 */
#include <errno.h>
#include <fcntl.h>
#include <manifold/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const mf_host_api_t *api;

typedef struct {
    int fd;
    int owns_fd;
} accesslog_t;

static int
accesslog_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    const char *path = json_string_value(json_object_get(conf, "path"));
    accesslog_t *al = calloc(1, sizeof(*al));

    api = host;
    if (al == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    if (path == NULL || strcmp(path, "stdout") == 0 || path[0] == '\0') {
        al->fd = STDOUT_FILENO;
    } else if (strcmp(path, "stderr") == 0) {
        al->fd = STDERR_FILENO;
    } else {
        al->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (al->fd < 0) {
            api->log(MF_LOG_ERROR, "accesslog: cannot open %s: %s", path,
                     strerror(errno));
            free(al);
            json_decref(conf);
            return MF_ERR;
        }
        al->owns_fd = 1;
    }
    json_decref(conf);
    *state = al;
    return MF_OK;
}

static void
accesslog_fini(void *state)
{
    accesslog_t *al = state;

    if (al->owns_fd) {
        close(al->fd);
    }
    free(al);
}

static json_t *
str_or_null(mf_str_t s)
{
    return s.len ? json_stringn(s.data, s.len) : json_null();
}

static json_t *
tokens(int64_t v)
{
    return v >= 0 ? json_integer(v) : json_null();
}

static void
accesslog_on_log(mf_req_t *r, void *state, void **ctx)
{
    accesslog_t *al = state;
    mf_req_info_t i = {.size = sizeof(i)};
    char ts[64];
    time_t sec;
    struct tm tm;
    json_t *j;
    char *line;
    size_t n;

    (void)ctx;
    if (api->get_info(r, &i) != MF_OK) {
        return;
    }
    sec = (time_t)i.start_time;
    gmtime_r(&sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)((i.start_time - (double)sec) * 1000));
    j = json_object();
    json_object_set_new(j, "time", json_string(ts));
    json_object_set_new(j, "request_id", str_or_null(i.id));
    json_object_set_new(j, "method", str_or_null(i.method));
    json_object_set_new(j, "path", str_or_null(i.path));
    json_object_set_new(j, "client", str_or_null(i.client_addr));
    json_object_set_new(j, "consumer", str_or_null(i.consumer));
    json_object_set_new(j, "model", str_or_null(i.model));
    json_object_set_new(j, "provider", str_or_null(i.provider));
    json_object_set_new(j, "upstream_model", str_or_null(i.upstream_model));
    json_object_set_new(j, "stream", json_boolean(i.stream));
    json_object_set_new(j, "status", json_integer(i.status));
    json_object_set_new(j, "upstream_status",
                        i.upstream_status ? json_integer(i.upstream_status)
                                          : json_null());
    json_object_set_new(j, "attempts", json_integer(i.attempts));
    json_object_set_new(j, "prompt_tokens", tokens(i.usage.prompt_tokens));
    json_object_set_new(j, "completion_tokens",
                        tokens(i.usage.completion_tokens));
    json_object_set_new(j, "total_tokens", tokens(i.usage.total_tokens));
    if (i.usage.cached_tokens >= 0) {
        json_object_set_new(j, "cached_tokens",
                            json_integer(i.usage.cached_tokens));
    }
    if (i.usage.reasoning_tokens >= 0) {
        json_object_set_new(j, "reasoning_tokens",
                            json_integer(i.usage.reasoning_tokens));
    }
    json_object_set_new(j, "usage_estimated", json_boolean(i.usage.estimated));
    json_object_set_new(
        j, "latency_ms",
        json_real((double)(int64_t)(i.latency_ms * 1000) / 1000));
    json_object_set_new(
        j, "ttft_ms",
        i.ttft_ms >= 0 ? json_real((double)(int64_t)(i.ttft_ms * 1000) / 1000)
                       : json_null());
    json_object_set_new(
        j, "upstream_ms",
        json_real((double)(int64_t)(i.upstream_ms * 1000) / 1000));
    json_object_set_new(j, "bytes_in", json_integer((json_int_t)i.bytes_in));
    json_object_set_new(j, "bytes_out", json_integer((json_int_t)i.bytes_out));
    json_object_set_new(j, "error", str_or_null(i.error));
    json_object_set_new(j, "generation", json_integer(i.generation));
    line = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(j);
    if (line == NULL) {
        return;
    }
    n = strlen(line);
    line[n] = '\n'; /* json_dumps leaves room: replace the NUL, write n+1 */
    if (write(al->fd, line, n + 1) < 0) {
        /* nothing to do: the request is already answered */
    }
    free(line);
}

static const mf_plugin_t accesslog = {
    MF_PLUGIN_ABI,          .name = "accesslog",    .version = "1.0.0",
    .init = accesslog_init, .fini = accesslog_fini, .on_log = accesslog_on_log,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &accesslog;
}
