/*
 * accesslog: one JSON line per request (time, id, consumer, model asked,
 * provider, upstream model, status, tokens, latency, time to first token,
 * bytes, bytes not delivered, error) to a file (appended) or stdout. Every
 * line has the same fields, null where a value is unknown. Keys never
 * reach it: the host's request info carries none.
 *
 * config: { path: "stdout" | "/var/log/manifold/access.log",
 *          buffer: 1048576, bytes of lines held for the writer (0: wake
 *                           the writer for every line, same bound)
 *          flush_ms: 200,   the longest a line waits in the buffer
 *          close_ms: 2000 } the longest fini waits for a stuck output
 *
 * Logging never blocks a worker. Workers only append whole lines to a
 * bounded buffer under a mutex; a writer thread of the plugin takes them
 * out and writes them, waiting on poll() for an output that does not take
 * them (a pipe nobody reads: a stuck `| tee`, a paused shipper). When the
 * buffer is full a line is dropped and counted; drops are reported in the
 * host log, at most once a second while they go on. fini gives the writer
 * close_ms to write what is left, then counts the rest as dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <manifold/plugin.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/price.h"

static const mf_host_api_t *api;

typedef struct {
    int fd;
    int owns_fd;
    int is_file; /* a regular file: writes never wait on a reader */
    char *name;  /* the output, for the host log */
    size_t cap;  /* buffer bound */
    int eager;   /* buffer: 0, the writer is woken for every line */
    long flush_ms;
    long close_ms;
    char *buf;
    size_t len;
    uint64_t dropped; /* lines dropped (under lock) */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t writer;
    int stop;
    json_t *prices; /* the config's prices: (for cost_usd), or NULL */
} accesslog_t;

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One write of what the output takes now, waiting at most wait_ms for it
 * to take anything. Returns the bytes written (0: it took nothing), -1 on
 * an error that will not pass (the reader closed the pipe). A pipe or a
 * socket gets at most PIPE_BUF bytes after poll() said it has room, so
 * the write itself does not wait. */
static ssize_t
write_some(accesslog_t *al, const char *p, size_t n, int wait_ms)
{
    ssize_t w;

    if (!al->is_file) {
        struct pollfd pfd = {.fd = al->fd, .events = POLLOUT};
        int rc = poll(&pfd, 1, wait_ms);

        if (rc == 0 || (rc < 0 && errno == EINTR)) {
            return 0;
        }
        if (rc < 0 || (pfd.revents & (POLLERR | POLLNVAL))) {
            return -1;
        }
        if (n > PIPE_BUF) {
            n = PIPE_BUF;
        }
    }
    w = write(al->fd, p, n);
    if (w < 0) {
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    }
    return w;
}

static uint64_t
count_lines(const char *p, size_t n)
{
    uint64_t k = 0;
    const char *e = p + n;

    while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
        k++;
        p++;
    }
    return k;
}

/* Takes the buffered lines into out (when it is empty) and says whether
 * to stop; waits up to flush_ms for lines when there is nothing to do. */
static int
take_lines(accesslog_t *al, char *out, size_t *n, int idle, uint64_t *dropped)
{
    int stop;

    pthread_mutex_lock(&al->lock);
    if (idle && al->len == 0 && !al->stop) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (al->flush_ms % 1000) * 1000000L;
        ts.tv_sec += al->flush_ms / 1000 + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&al->wake, &al->lock, &ts);
    }
    if (*n == 0 && al->len > 0) {
        memcpy(out, al->buf, al->len);
        *n = al->len;
        al->len = 0;
    }
    stop = al->stop;
    *dropped = al->dropped;
    pthread_mutex_unlock(&al->lock);
    return stop;
}

static void
report_drops(accesslog_t *al, uint64_t dropped, uint64_t *reported)
{
    if (dropped > *reported) {
        api->log(MF_LOG_WARN,
                 "accesslog: %llu lines dropped (%llu since start): %s is "
                 "not taking them",
                 (unsigned long long)(dropped - *reported),
                 (unsigned long long)dropped, al->name);
        *reported = dropped;
    }
}

static void *
writer_main(void *arg)
{
    accesslog_t *al = arg;
    char *out = malloc(al->cap);
    size_t off = 0, n = 0;
    uint64_t dropped = 0, reported = 0;
    double last_report = 0, deadline = 0;

    if (out == NULL) {
        return NULL;
    }
    for (;;) {
        int stop;

        if (off == n) {
            off = n = 0;
        }
        stop = take_lines(al, out, &n, n == 0, &dropped);
        if (stop && deadline == 0) {
            deadline = now_ms() + (double)al->close_ms;
        }
        if (n > off) {
            ssize_t w = write_some(al, out + off, n - off, 100);

            if (w < 0 || (stop && now_ms() > deadline)) {
                /* the output is gone or stuck past close_ms */
                pthread_mutex_lock(&al->lock);
                al->dropped += count_lines(out + off, n - off) +
                               count_lines(al->buf, al->len);
                al->len = 0;
                dropped = al->dropped;
                pthread_mutex_unlock(&al->lock);
                off = n;
            } else {
                off += (size_t)w;
            }
        }
        if (dropped > reported && (stop || now_ms() - last_report >= 1000)) {
            report_drops(al, dropped, &reported);
            last_report = now_ms();
        }
        if (stop && off == n) {
            pthread_mutex_lock(&al->lock);
            stop = al->len == 0;
            pthread_mutex_unlock(&al->lock);
            if (stop) {
                break;
            }
        }
    }
    report_drops(al, dropped, &reported);
    free(out);
    return NULL;
}

static long
conf_long(json_t *conf, const char *key, long dflt)
{
    json_t *v = json_object_get(conf, key);

    return json_is_integer(v)  ? (long)json_integer_value(v)
           : json_is_string(v) ? atol(json_string_value(v))
                               : dflt;
}

static int
accesslog_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    const char *path = json_string_value(json_object_get(conf, "path"));
    accesslog_t *al = calloc(1, sizeof(*al));
    struct stat st;
    long bv, fv, cv;
    char full[4096];

    api = host;
    if (al == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    if (path == NULL || strcmp(path, "stdout") == 0 || path[0] == '\0') {
        al->fd = STDOUT_FILENO;
        path = "stdout";
    } else if (strcmp(path, "stderr") == 0) {
        al->fd = STDERR_FILENO;
    } else {
        /* a relative file is beside the config, as every other path in
         * it, not wherever the gateway was started from */
        const char *dir = json_string_value(api->config_section("dir"));

        if (path[0] != '/' && dir != NULL && dir[0] != '\0') {
            snprintf(full, sizeof(full), "%s/%s", dir, path);
            path = full;
        }
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
    al->is_file = fstat(al->fd, &st) == 0 && S_ISREG(st.st_mode);
    al->name = strdup(path);
    bv = conf_long(conf, "buffer", 1 << 20);
    fv = conf_long(conf, "flush_ms", 200);
    cv = conf_long(conf, "close_ms", 2000);
    json_decref(conf);
    al->eager = bv <= 0;
    al->cap = bv > 0 ? (size_t)bv : (size_t)1 << 20;
    al->cap = al->cap < 4096 ? 4096 : al->cap;
    al->flush_ms = fv > 0 ? fv : 200;
    al->close_ms = cv >= 0 ? cv : 2000;
    al->buf = malloc(al->cap);
    al->prices = json_deep_copy(api->config_section("prices"));
    pthread_mutex_init(&al->lock, NULL);
    pthread_cond_init(&al->wake, NULL);
    if (al->buf == NULL || al->name == NULL ||
        pthread_create(&al->writer, NULL, writer_main, al) != 0) {
        api->log(MF_LOG_ERROR, "accesslog: cannot start the log writer");
        pthread_mutex_destroy(&al->lock);
        pthread_cond_destroy(&al->wake);
        if (al->owns_fd) {
            close(al->fd);
        }
        free(al->buf);
        free(al->name);
        json_decref(al->prices);
        free(al);
        return MF_ERR;
    }
    *state = al;
    return MF_OK;
}

static void
accesslog_fini(void *state)
{
    accesslog_t *al = state;

    pthread_mutex_lock(&al->lock);
    al->stop = 1;
    pthread_cond_signal(&al->wake);
    pthread_mutex_unlock(&al->lock);
    pthread_join(al->writer, NULL); /* it writes what is left, bounded */
    pthread_mutex_destroy(&al->lock);
    pthread_cond_destroy(&al->wake);
    free(al->buf);
    free(al->name);
    price_forget();
    json_decref(al->prices);
    if (al->owns_fd) {
        close(al->fd);
    }
    free(al);
}

/* Queues a whole line for the writer, or drops and counts it: a worker
 * never writes and never waits on the output. */
static void
enqueue(accesslog_t *al, const char *p, size_t n)
{
    pthread_mutex_lock(&al->lock);
    if (al->len + n > al->cap) {
        al->dropped++;
    } else {
        memcpy(al->buf + al->len, p, n);
        al->len += n;
        if (al->eager ||
            (al->len >= al->cap / 2 && al->len - n < al->cap / 2)) {
            pthread_cond_signal(&al->wake);
        }
    }
    pthread_mutex_unlock(&al->lock);
}

/* The line is formatted by hand into a growing buffer: no JSON tree. */
typedef struct {
    char *p;
    size_t len, cap;
    char stack[2048];
} line_t;

/* Makes room for n more bytes: 0 when there is none (the line is cut
 * short; the next request tries again). */
static int
room(line_t *l, size_t n)
{
    size_t cap;
    char *p;

    if (l->len + n <= l->cap) {
        return 1;
    }
    cap = (l->len + n) * 2;
    p = l->p == l->stack ? malloc(cap) : realloc(l->p, cap);
    if (p == NULL) {
        return 0;
    }
    if (l->p == l->stack) {
        memcpy(p, l->stack, l->len);
    }
    l->p = p;
    l->cap = cap;
    return 1;
}

static void
put(line_t *l, const char *s, size_t n)
{
    if (room(l, n)) {
        memcpy(l->p + l->len, s, n);
        l->len += n;
    }
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

/* ,"name": (no comma before the first field) */
static void
put_field(line_t *l, const char *name)
{
    size_t n = strlen(name), first = l->len <= 1;

    if (!room(l, n + 4)) {
        return;
    }
    memcpy(l->p + l->len, ",\"" + first, 2 - first);
    l->len += 2 - first;
    memcpy(l->p + l->len, name, n);
    memcpy(l->p + l->len + n, "\":", 2);
    l->len += n + 2;
}

/* The decimal digits of v, at least min of them (zeros before). */
static void
put_digits(line_t *l, uint64_t v, int min)
{
    char tmp[24];
    int i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 || (int)sizeof(tmp) - i < min);
    put(l, tmp + i, sizeof(tmp) - (size_t)i);
}

static void
put_int(line_t *l, const char *name, int64_t v, int null_below_zero)
{
    put_field(l, name);
    if (null_below_zero && v < 0) {
        put(l, "null", 4);
    } else if (v < 0) {
        put(l, "-", 1);
        put_digits(l, (uint64_t)0 - (uint64_t)v, 1);
    } else {
        put_digits(l, (uint64_t)v, 1);
    }
}

/* Milliseconds with three decimals (as %.3f). */
static void
put_ms(line_t *l, const char *name, double ms)
{
    put_field(l, name);
    if (ms < 0 || ms != ms) {
        put(l, "null", 4);
    } else if (ms < 1e12) {
        uint64_t us = (uint64_t)(ms * 1000 + 0.5);

        put_digits(l, us / 1000, 1);
        put(l, ".", 1);
        put_digits(l, us % 1000, 3);
    } else {
        char tmp[64];
        int n = snprintf(tmp, sizeof(tmp), "%.3f", ms);

        put(l, tmp, n > 0 && (size_t)n < sizeof(tmp) ? (size_t)n : 0);
    }
}

static void
put_bool(line_t *l, const char *name, int v)
{
    put_field(l, name);
    put(l, v ? "true" : "false", v ? 4 : 5);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC); the part to the second is kept per
 * thread, as most lines of a second share it. */
static void
put_time(line_t *l, const char *name, double t)
{
    static __thread time_t last = -1;
    static __thread char day[64];
    time_t sec = (time_t)t;
    int ms = (int)((t - (double)sec) * 1000);

    if (sec != last) {
        struct tm tm;

        gmtime_r(&sec, &tm);
        snprintf(day, sizeof(day), "%04d-%02d-%02dT%02d:%02d:%02d",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec);
        last = sec;
    }
    put_field(l, name);
    put(l, "\"", 1);
    put(l, day, strlen(day));
    put(l, ".", 1);
    put_digits(l, (uint64_t)(ms < 0 ? 0 : ms > 999 ? 999 : ms), 3);
    put(l, "Z\"", 2);
}

static void
put_named(line_t *l, const char *name, mf_str_t s)
{
    put_field(l, name);
    put_str(l, s);
}

/* Micro-USD as USD with six decimals. */
static void
put_usd(line_t *l, const char *name, int64_t micro)
{
    put_field(l, name);
    if (micro < 0) {
        put(l, "null", 4);
        return;
    }
    put_digits(l, (uint64_t)micro / 1000000, 1);
    put(l, ".", 1);
    put_digits(l, (uint64_t)micro % 1000000, 6);
}

/* Every upstream attempt: [{provider, model, outcome, status, ms,
 * ttfb_ms}], [] when none. */
static void
put_attempts(line_t *l, mf_req_t *r)
{
    mf_attempt_info_t a = {.size = sizeof(a)};
    size_t k;

    put_field(l, "upstream_attempts");
    put(l, "[", 1);
    for (k = 0; api->get_attempt(r, k, &a) == MF_OK; k++) {
        size_t mark;

        put(l, k ? ",{" : "{", k ? 2 : 1);
        mark = l->len;
        put_named(l, "provider", a.provider);
        /* put_field leaves out the comma of an object's first field only
         * at the line's start: take it out here */
        if (l->len > mark && l->p[mark] == ',') {
            memmove(l->p + mark, l->p + mark + 1, l->len - mark - 1);
            l->len--;
        }
        put_named(l, "model", a.model);
        put_named(l, "outcome", a.outcome);
        put_int(l, "status", a.status ? a.status : -1, 1);
        put_ms(l, "ms", a.duration_ms);
        put_ms(l, "ttfb_ms", a.ttfb_ms);
        put(l, "}", 1);
    }
    put(l, "]", 1);
}

/* The safety stages' results, from the response headers they set:
 * masked (values replaced), guard (the rule that blocked), guard_checks
 * (what the request and its answer were checked by), guard_hold_ms
 * (the answer's wait for the guard), guard_fallback (the model that
 * answered in place of a blocked answer). Null when absent. */
static void
put_safety(line_t *l, mf_req_t *r)
{
    mf_str_t v;
    int64_t n = -1;
    size_t k;

    if (api->get_header(r, MF_RESPONSE_HEADERS, MF_STR("x-manifold-masked"),
                        &v) == MF_OK &&
        v.len > 0 && v.len < 10) {
        n = 0;
        for (k = 0; k < v.len && v.data[k] >= '0' && v.data[k] <= '9'; k++) {
            n = n * 10 + (v.data[k] - '0');
        }
    }
    put_int(l, "masked", n, 1);
    put_named(l, "guard",
              api->get_header(r, MF_RESPONSE_HEADERS,
                              MF_STR("x-manifold-guard"), &v) == MF_OK
                  ? v
                  : MF_STR_NULL);
    put_named(l, "guard_checks",
              api->get_header(r, MF_RESPONSE_HEADERS,
                              MF_STR("x-manifold-guard-checks"), &v) == MF_OK
                  ? v
                  : MF_STR_NULL);
    n = -1;
    if (api->get_header(r, MF_RESPONSE_HEADERS,
                        MF_STR("x-manifold-guard-hold-ms"), &v) == MF_OK &&
        v.len > 0 && v.len < 10) {
        n = 0;
        for (k = 0; k < v.len && v.data[k] >= '0' && v.data[k] <= '9'; k++) {
            n = n * 10 + (v.data[k] - '0');
        }
    }
    put_int(l, "guard_hold_ms", n, 1);
    put_named(l, "guard_fallback",
              api->get_header(r, MF_RESPONSE_HEADERS,
                              MF_STR("x-manifold-guard-fallback"), &v) == MF_OK
                  ? v
                  : MF_STR_NULL);
}

static void
accesslog_on_log(mf_req_t *r, void *state, void **ctx)
{
    accesslog_t *al = state;
    mf_req_info_t i = {.size = sizeof(i)};
    line_t l;

    (void)ctx;
    if (api->get_info(r, &i) != MF_OK) {
        return;
    }
    l.p = l.stack;
    l.len = 0;
    l.cap = sizeof(l.stack);
    put(&l, "{", 1);
    put_time(&l, "time", i.start_time);
    put_named(&l, "request_id", i.id);
    put_named(&l, "method", i.method);
    put_named(&l, "path", i.path);
    put_named(&l, "client", i.client_addr);
    put_named(&l, "consumer", i.consumer);
    put_named(&l, "model", i.model);
    put_named(&l, "provider", i.provider);
    put_named(&l, "upstream_model", i.upstream_model);
    put_bool(&l, "stream", i.stream);
    put_int(&l, "status", i.status, 0);
    put_int(&l, "upstream_status", i.upstream_status ? i.upstream_status : -1,
            1);
    put_int(&l, "attempts", i.attempts, 0);
    /* every line has the same fields, whatever the provider: null when
     * unknown (a host too old to tell, a provider that does not say) */
    put_named(&l, "tried",
              i.size >= offsetof(mf_req_info_t, tried) + sizeof(mf_str_t)
                  ? i.tried
                  : MF_STR_NULL);
    put_int(&l, "prompt_tokens", i.usage.prompt_tokens, 1);
    put_int(&l, "completion_tokens", i.usage.completion_tokens, 1);
    put_int(&l, "total_tokens", i.usage.total_tokens, 1);
    put_int(&l, "cached_tokens", i.usage.cached_tokens, 1);
    put_int(&l, "reasoning_tokens", i.usage.reasoning_tokens, 1);
    put_bool(&l, "usage_estimated", i.usage.estimated);
    put_bool(&l, "cached", i.cached != 0);
    put_ms(&l, "latency_ms", i.latency_ms);
    put_ms(&l, "ttft_ms", i.ttft_ms);
    put_ms(&l, "upstream_ms", i.upstream_ms);
    put_int(&l, "bytes_in", (int64_t)i.bytes_in, 0);
    put_int(&l, "bytes_out", (int64_t)i.bytes_out, 0);
    if (i.size >=
        offsetof(mf_req_info_t, bytes_undelivered) + sizeof(uint64_t)) {
        put_int(&l, "bytes_undelivered", (int64_t)i.bytes_undelivered, 0);
    }
    put_named(&l, "error", i.error);
    put_int(&l, "generation", (int64_t)i.generation, 0);
    /* ABI 1.5: trace, timing split, cost, usage source, attempts */
    {
        int64_t cost = 0;
        int priced = price_request(al->prices, &i, &cost);
        int has_usage =
            i.usage.prompt_tokens >= 0 || i.usage.completion_tokens >= 0;
        double over = i.latency_ms - i.upstream_ms;

        put_int(&l, "cache_write_tokens", i.cache_write_tokens, 1);
        put_named(&l, "trace_id", i.trace_id);
        put_named(&l, "span_id", i.span_id);
        put_ms(&l, "overhead_ms", over > 0 ? over : 0);
        put_ms(&l, "first_token_ms", i.first_content_ms);
        put_ms(&l, "tpot_ms",
               i.stream && i.first_content_ms >= 0 &&
                       i.usage.completion_tokens > 1 &&
                       i.latency_ms > i.first_content_ms
                   ? (i.latency_ms - i.first_content_ms) /
                         (double)(i.usage.completion_tokens - 1)
                   : -1);
        put_usd(&l, "cost_usd", priced == 1 ? cost : -1);
        put_field(&l, "unpriced");
        put(&l,
            priced == 0   ? "true"
            : priced == 1 ? "false"
                          : "null",
            priced == 0   ? 4
            : priced == 1 ? 5
                          : 4);
        put_named(&l, "usage_source",
                  !has_usage          ? MF_STR_NULL
                  : i.usage.estimated ? MF_STR("estimated")
                                      : MF_STR("reported"));
        put_attempts(&l, r);
    }
    put_safety(&l, r);
    put(&l, "}\n", 2);
    enqueue(al, l.p, l.len);
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
