/*
 * accesslog: one JSON line per request (time, id, consumer, model asked,
 * provider, upstream model, status, tokens, latency, time to first token,
 * bytes, error) to a file (appended) or stdout. Keys never reach it: the
 * host's request info carries none.
 *
 * config: { path: "stdout" | "/var/log/manifold/access.log",
 *          buffer: 65536,   bytes held before a write (0: a write per line)
 *          flush_ms: 200 }  the longest a line waits in the buffer
 *
 * Buffered lines are written by a flusher thread of the plugin (never by
 * a worker), at most flush_ms late, whole lines only; fini writes what is
 * left. Workers only append under a mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <manifold/plugin.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const mf_host_api_t *api;

typedef struct {
    int fd;
    int owns_fd;
    size_t cap; /* buffer size; 0 = unbuffered */
    long flush_ms;
    char *buf;
    size_t len;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t flusher;
    int stop;
} accesslog_t;

static void
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                continue;
            }
            return; /* nothing to do: the requests are answered */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Takes the buffered lines out under the lock and writes them. */
static void
flush_some(accesslog_t *al, char *out)
{
    size_t n;

    pthread_mutex_lock(&al->lock);
    n = al->len;
    memcpy(out, al->buf, n);
    al->len = 0;
    pthread_mutex_unlock(&al->lock);
    write_all(al->fd, out, n);
}

static void *
flusher_main(void *arg)
{
    accesslog_t *al = arg;
    char *out = malloc(al->cap);

    if (out == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&al->lock);
    while (!al->stop) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (al->flush_ms % 1000) * 1000000L;
        ts.tv_sec += al->flush_ms / 1000 + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&al->wake, &al->lock, &ts);
        if (al->len > 0) {
            pthread_mutex_unlock(&al->lock);
            flush_some(al, out);
            pthread_mutex_lock(&al->lock);
        }
    }
    pthread_mutex_unlock(&al->lock);
    flush_some(al, out);
    free(out);
    return NULL;
}

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
    {
        json_t *b = json_object_get(conf, "buffer");
        json_t *f = json_object_get(conf, "flush_ms");
        long bv = json_is_integer(b)  ? (long)json_integer_value(b)
                  : json_is_string(b) ? atol(json_string_value(b))
                                      : 65536;
        long fv = json_is_integer(f)  ? (long)json_integer_value(f)
                  : json_is_string(f) ? atol(json_string_value(f))
                                      : 200;

        al->cap = bv > 0 ? (size_t)bv : 0;
        al->flush_ms = fv > 0 ? fv : 200;
    }
    json_decref(conf);
    if (al->cap > 0) {
        al->buf = malloc(al->cap);
        pthread_mutex_init(&al->lock, NULL);
        pthread_cond_init(&al->wake, NULL);
        if (al->buf == NULL ||
            pthread_create(&al->flusher, NULL, flusher_main, al) != 0) {
            api->log(MF_LOG_WARN, "accesslog: no buffer; a write per line");
            free(al->buf);
            al->buf = NULL;
            al->cap = 0;
        }
    }
    *state = al;
    return MF_OK;
}

static void
accesslog_fini(void *state)
{
    accesslog_t *al = state;

    if (al->cap > 0) {
        pthread_mutex_lock(&al->lock);
        al->stop = 1;
        pthread_cond_signal(&al->wake);
        pthread_mutex_unlock(&al->lock);
        pthread_join(al->flusher, NULL); /* it writes what is left */
        pthread_mutex_destroy(&al->lock);
        pthread_cond_destroy(&al->wake);
        free(al->buf);
    }
    if (al->owns_fd) {
        close(al->fd);
    }
    free(al);
}

/* The line is formatted by hand into a growing buffer: no JSON tree. */
typedef struct {
    char *p;
    size_t len, cap;
    char stack[2048];
} line_t;

static void
put(line_t *l, const char *s, size_t n)
{
    if (l->len + n > l->cap) {
        size_t cap = (l->len + n) * 2;
        char *p = l->p == l->stack ? malloc(cap) : realloc(l->p, cap);

        if (p == NULL) {
            return; /* the line is cut short; the next request tries again */
        }
        if (l->p == l->stack) {
            memcpy(p, l->stack, l->len);
        }
        l->p = p;
        l->cap = cap;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void
put_str(line_t *l, mf_str_t s)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, from = 0;

    if (s.len == 0) {
        put(l, "null", 4);
        return;
    }
    put(l, "\"", 1);
    for (i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.data[i];
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        put(l, s.data + from, i - from);
        from = i + 1;
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c == '\n') {
            put(l, "\\n", 2);
        } else {
            put(l, esc, 6);
        }
    }
    put(l, s.data + from, s.len - from);
    put(l, "\"", 1);
}

static void
put_field(line_t *l, const char *name)
{
    put(l, l->len > 1 ? ",\"" : "\"", l->len > 1 ? 2 : 1);
    put(l, name, strlen(name));
    put(l, "\":", 2);
}

static void
put_fmt(line_t *l, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) {
        put(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
    }
}

static void
put_int(line_t *l, const char *name, int64_t v, int null_below_zero)
{
    put_field(l, name);
    if (null_below_zero && v < 0) {
        put(l, "null", 4);
    } else {
        put_fmt(l, "%lld", (long long)v);
    }
}

static void
put_ms(line_t *l, const char *name, double ms)
{
    put_field(l, name);
    if (ms < 0) {
        put(l, "null", 4);
    } else {
        put_fmt(l, "%.3f", ms);
    }
}

static void
put_named(line_t *l, const char *name, mf_str_t s)
{
    put_field(l, name);
    put_str(l, s);
}

static void
accesslog_on_log(mf_req_t *r, void *state, void **ctx)
{
    accesslog_t *al = state;
    mf_req_info_t i = {.size = sizeof(i)};
    line_t l;
    time_t sec;
    struct tm tm;

    (void)ctx;
    if (api->get_info(r, &i) != MF_OK) {
        return;
    }
    l.p = l.stack;
    l.len = 0;
    l.cap = sizeof(l.stack);
    sec = (time_t)i.start_time;
    gmtime_r(&sec, &tm);
    put(&l, "{", 1);
    put_field(&l, "time");
    put_fmt(&l, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            (int)((i.start_time - (double)sec) * 1000));
    put_named(&l, "request_id", i.id);
    put_named(&l, "method", i.method);
    put_named(&l, "path", i.path);
    put_named(&l, "client", i.client_addr);
    put_named(&l, "consumer", i.consumer);
    put_named(&l, "model", i.model);
    put_named(&l, "provider", i.provider);
    put_named(&l, "upstream_model", i.upstream_model);
    put_field(&l, "stream");
    put_fmt(&l, "%s", i.stream ? "true" : "false");
    put_int(&l, "status", i.status, 0);
    put_int(&l, "upstream_status", i.upstream_status ? i.upstream_status : -1,
            1);
    put_int(&l, "attempts", i.attempts, 0);
    if (i.size >= offsetof(mf_req_info_t, tried) + sizeof(mf_str_t)) {
        put_named(&l, "tried", i.tried);
    }
    put_int(&l, "prompt_tokens", i.usage.prompt_tokens, 1);
    put_int(&l, "completion_tokens", i.usage.completion_tokens, 1);
    put_int(&l, "total_tokens", i.usage.total_tokens, 1);
    if (i.usage.cached_tokens >= 0) {
        put_int(&l, "cached_tokens", i.usage.cached_tokens, 0);
    }
    if (i.usage.reasoning_tokens >= 0) {
        put_int(&l, "reasoning_tokens", i.usage.reasoning_tokens, 0);
    }
    put_field(&l, "usage_estimated");
    put_fmt(&l, "%s", i.usage.estimated ? "true" : "false");
    put_ms(&l, "latency_ms", i.latency_ms);
    put_ms(&l, "ttft_ms", i.ttft_ms);
    put_ms(&l, "upstream_ms", i.upstream_ms);
    put_int(&l, "bytes_in", (int64_t)i.bytes_in, 0);
    put_int(&l, "bytes_out", (int64_t)i.bytes_out, 0);
    if (i.size >= offsetof(mf_req_info_t, bytes_undelivered) +
                      sizeof(uint64_t)) {
        put_int(&l, "bytes_undelivered", (int64_t)i.bytes_undelivered, 0);
    }
    put_named(&l, "error", i.error);
    put_int(&l, "generation", (int64_t)i.generation, 0);
    put(&l, "}\n", 2);
    if (al->cap == 0 || l.len > al->cap) {
        write_all(al->fd, l.p, l.len);
    } else {
        pthread_mutex_lock(&al->lock);
        if (al->len + l.len > al->cap) {
            /* full: this worker writes what is there (rare) */
            write_all(al->fd, al->buf, al->len);
            al->len = 0;
        }
        memcpy(al->buf + al->len, l.p, l.len);
        al->len += l.len;
        pthread_mutex_unlock(&al->lock);
    }
    if (l.p != l.stack) {
        free(l.p);
    }
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
