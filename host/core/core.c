/*
 * Core utilities: aborting allocators, the logger, the arena, byte buffers
 * and small string helpers.
 */
#include "core/core.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void
mf_oom(size_t size)
{
    fprintf(stderr, "manifold: out of memory allocating %zu bytes\n", size);
    abort();
}

void *
mf_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);

    if (p == NULL) {
        mf_oom(size);
    }
    return p;
}

void *
mf_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL) {
        mf_oom(n * size);
    }
    return p;
}

void *
mf_xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);

    if (q == NULL) {
        mf_oom(size);
    }
    return q;
}

char *
mf_xstrdup(const char *s)
{
    return mf_xstrndup(s, strlen(s));
}

char *
mf_xstrndup(const char *s, size_t n)
{
    char *p = mf_xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Logger */

static mf_log_level_t log_level = MF_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void
mf_log_set_level(mf_log_level_t level)
{
    log_level = level;
}

mf_log_level_t
mf_log_get_level(void)
{
    return log_level;
}

/* The writer: lines are queued in buf, written by a thread that waits on
 * poll() for stderr and writes at most PIPE_BUF bytes at a time, so that
 * no write of it waits on a pipe either. */
#define MF_LOG_BUFFER (256 * 1024)

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int running;
    int stop;
    double deadline; /* monotonic ms: stop writing after it */
    char *buf;
    size_t len;
    uint64_t dropped;
    uint64_t reported;
    int writing; /* the writer thread is writing (outside the lock) */
} lw = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static double
log_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Writes p[0..n) to stderr until done, an error, or the deadline (0 =
 * none) passes while stderr takes nothing; returns the bytes written. */
static size_t
log_write(const char *p, size_t n, double deadline)
{
    size_t done = 0;

    while (done < n) {
        struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
        size_t k = n - done < PIPE_BUF ? n - done : PIPE_BUF;
        ssize_t w;
        int rc = poll(&pfd, 1, 100);

        if (rc < 0 && errno != EINTR) {
            break;
        }
        if (rc <= 0) {
            if (deadline > 0 && log_now_ms() > deadline) {
                break;
            }
            continue;
        }
        if (pfd.revents & (POLLERR | POLLNVAL)) {
            break;
        }
        w = write(STDERR_FILENO, p + done, k);
        if (w < 0 && errno != EINTR && errno != EAGAIN) {
            break;
        }
        done += w > 0 ? (size_t)w : 0;
    }
    return done;
}

/* With nothing queued or being written, a line is written at once when
 * stderr has room for it (poll says so; a line is under PIPE_BUF, so the
 * write does not wait). Returns the length of what is left to queue (the
 * tail moved to the front of line). Called under lw.lock. */
static int
log_try_now(char *line, int n)
{
    struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
    ssize_t w;

    if (lw.len > 0 || lw.writing || lw.dropped != lw.reported ||
        poll(&pfd, 1, 0) != 1 || (pfd.revents & (POLLERR | POLLNVAL))) {
        return n;
    }
    w = write(STDERR_FILENO, line, (size_t)n);
    if (w <= 0) {
        return n;
    }
    memmove(line, line + w, (size_t)(n - w));
    return n - (int)w;
}

static void *
log_writer_main(void *arg)
{
    char *out = mf_xmalloc(MF_LOG_BUFFER);

    MF_UNUSED(arg);
    pthread_mutex_lock(&lw.lock);
    for (;;) {
        size_t n;
        uint64_t lost;
        double deadline;
        char note[128];
        int k;

        while (lw.len == 0 && lw.dropped == lw.reported && !lw.stop) {
            pthread_cond_wait(&lw.wake, &lw.lock);
        }
        if (lw.len == 0 && lw.dropped == lw.reported) {
            break; /* stopping, nothing left */
        }
        n = lw.len;
        memcpy(out, lw.buf, n);
        lw.len = 0;
        lost = lw.dropped - lw.reported;
        lw.reported = lw.dropped;
        deadline = lw.stop ? lw.deadline : 0;
        lw.writing = 1;
        pthread_mutex_unlock(&lw.lock);
        if (lost > 0) {
            k = snprintf(note, sizeof(note),
                         "manifold: %llu log lines dropped: stderr was not "
                         "taking them\n",
                         (unsigned long long)lost);
            log_write(note, (size_t)k, deadline);
        }
        if (log_write(out, n, deadline) < n) {
            pthread_mutex_lock(&lw.lock);
            lw.writing = 0;
            lw.stop = 1;
            lw.len = 0; /* stderr is gone or stuck past the deadline */
            lw.reported = lw.dropped;
            break;
        }
        pthread_mutex_lock(&lw.lock);
        lw.writing = 0;
    }
    pthread_mutex_unlock(&lw.lock);
    free(out);
    return NULL;
}

void
mf_log_start(void)
{
    pthread_mutex_lock(&lw.lock);
    if (!lw.running) {
        lw.buf = mf_xmalloc(MF_LOG_BUFFER);
        lw.stop = 0;
        lw.len = 0;
        lw.running =
            pthread_create(&lw.thread, NULL, log_writer_main, NULL) == 0;
        if (!lw.running) {
            free(lw.buf);
            lw.buf = NULL;
        }
    }
    pthread_mutex_unlock(&lw.lock);
}

void
mf_log_stop(double wait_ms)
{
    pthread_mutex_lock(&lw.lock);
    if (!lw.running) {
        pthread_mutex_unlock(&lw.lock);
        return;
    }
    lw.stop = 1;
    lw.deadline = log_now_ms() + wait_ms;
    pthread_cond_signal(&lw.wake);
    pthread_mutex_unlock(&lw.lock);
    pthread_join(lw.thread, NULL);
    pthread_mutex_lock(&lw.lock);
    lw.running = 0;
    free(lw.buf);
    lw.buf = NULL;
    pthread_mutex_unlock(&lw.lock);
}

uint64_t
mf_log_dropped(void)
{
    uint64_t n;

    pthread_mutex_lock(&lw.lock);
    n = lw.dropped;
    pthread_mutex_unlock(&lw.lock);
    return n;
}

void
mf_logv(mf_log_level_t level, const char *tag, const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    int n;

    if (level < log_level) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s%s%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level],
                 tag ? "[" : "", tag ? tag : "", tag ? "] " : "");
    if (n < 0 || (size_t)n >= sizeof(line)) {
        n = 0;
    }
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    n = (int)strlen(line);
    line[n++] = '\n';
    pthread_mutex_lock(&lw.lock);
    if (!lw.running || lw.stop) {
        fwrite(line, 1, (size_t)n, stderr);
    } else if ((n = log_try_now(line, n)) == 0) {
        /* written at once: stderr had room and nothing waits before it */
    } else if (lw.len + (size_t)n > MF_LOG_BUFFER) {
        lw.dropped++;
    } else {
        memcpy(lw.buf + lw.len, line, (size_t)n);
        lw.len += (size_t)n;
        pthread_cond_signal(&lw.wake);
    }
    pthread_mutex_unlock(&lw.lock);
}

void
mf_log_tagged(mf_log_level_t level, const char *tag, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    mf_logv(level, tag, fmt, ap);
    va_end(ap);
}

void
mf_log(mf_log_level_t level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    mf_logv(level, NULL, fmt, ap);
    va_end(ap);
}

/* Arena */

typedef struct mf_pool_block_s {
    struct mf_pool_block_s *next;
    size_t used;
    size_t size;
    max_align_t data[];
} mf_pool_block_t;

struct mf_pool_s {
    mf_pool_block_t *head;
    size_t block_size;
};

static mf_pool_block_t *
mf_pool_block_new(size_t size)
{
    mf_pool_block_t *b = malloc(sizeof(*b) + size);

    if (b == NULL) {
        return NULL;
    }
    b->next = NULL;
    b->used = 0;
    b->size = size;
    return b;
}

mf_pool_t *
mf_pool_create(size_t block_size)
{
    mf_pool_t *p = mf_xmalloc(sizeof(*p));

    p->block_size = block_size ? block_size : 4096;
    p->head = mf_pool_block_new(p->block_size);
    if (p->head == NULL) {
        mf_oom(p->block_size);
    }
    return p;
}

void
mf_pool_destroy(mf_pool_t *p)
{
    mf_pool_block_t *b, *next;

    if (p == NULL) {
        return;
    }
    for (b = p->head; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(p);
}

void *
mf_pool_alloc(mf_pool_t *p, size_t size)
{
    const size_t align = sizeof(max_align_t);
    mf_pool_block_t *b = p->head;
    size_t need = (size + align - 1) & ~(align - 1);
    void *out;

    if (need < size) {
        return NULL;
    }
    if (b->size - b->used < need) {
        if (need > p->block_size / 4) {
            /* large: its own block, kept behind the head */
            mf_pool_block_t *big = mf_pool_block_new(need);

            if (big == NULL) {
                return NULL;
            }
            big->used = need;
            big->next = b->next;
            b->next = big;
            return big->data;
        }
        b = mf_pool_block_new(p->block_size);
        if (b == NULL) {
            return NULL;
        }
        b->next = p->head;
        p->head = b;
    }
    out = (char *)b->data + b->used;
    b->used += need;
    return out;
}

char *
mf_pool_strndup(mf_pool_t *p, const char *s, size_t n)
{
    char *d = mf_pool_alloc(p, n + 1);

    if (d == NULL) {
        return NULL;
    }
    if (n > 0) {
        memcpy(d, s, n);
    }
    d[n] = '\0';
    return d;
}

mf_str_t
mf_pool_str(mf_pool_t *p, mf_str_t s)
{
    mf_str_t out = {mf_pool_strndup(p, s.data, s.len), s.len};

    if (out.data == NULL) {
        out.len = 0;
    }
    return out;
}

/* Buffers */

int
mf_buf_try_append(mf_buf_t *b, const void *data, size_t len)
{
    size_t need = b->len + len;

    if (need < b->len || (b->limit && need > b->limit)) {
        return MF_ERR;
    }
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;

        while (cap < need) {
            if (cap > SIZE_MAX / 2) {
                cap = need;
                break;
            }
            cap *= 2;
        }
        if (b->limit && cap > b->limit) {
            cap = b->limit;
        }
        p = realloc(b->data, cap);
        if (p == NULL) {
            return MF_ERR;
        }
        b->data = p;
        b->cap = cap;
    }
    if (len > 0) {
        memcpy(b->data + b->len, data, len);
    }
    b->len = need;
    return MF_OK;
}

void
mf_buf_append(mf_buf_t *b, const void *data, size_t len)
{
    if (mf_buf_try_append(b, data, len) != MF_OK) {
        if (b->limit && (b->len + len < b->len || b->len + len > b->limit)) {
            fprintf(stderr,
                    "manifold: a host buffer would pass its limit of %zu "
                    "bytes\n",
                    b->limit);
            abort();
        }
        mf_oom(b->len + len);
    }
}

void
mf_buf_printf(mf_buf_t *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        fprintf(stderr, "manifold: cannot format \"%s\"\n", fmt);
        abort();
    }
    if ((size_t)n < sizeof(small)) {
        mf_buf_append(b, small, (size_t)n);
        return;
    }
    {
        char *big = mf_xmalloc((size_t)n + 1);

        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        mf_buf_append(b, big, (size_t)n);
        free(big);
    }
}

void
mf_buf_consume(mf_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void
mf_buf_reset(mf_buf_t *b)
{
    b->len = 0;
}

void
mf_buf_free(mf_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Strings */

int
mf_str_eq(mf_str_t a, mf_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

int
mf_str_caseeq(mf_str_t a, mf_str_t b)
{
    return a.len == b.len &&
           (a.len == 0 || strncasecmp(a.data, b.data, a.len) == 0);
}

int
mf_str_eq_cstr(mf_str_t a, const char *b)
{
    return mf_str_eq(a, mf_str_from(b));
}

mf_str_t
mf_str_from(const char *s)
{
    mf_str_t out = {s, s ? strlen(s) : 0};

    return out;
}

int
mf_str_has_control(mf_str_t s)
{
    size_t i;

    for (i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.data[i];

        if (ch < 0x20 || ch == 0x7f) {
            return 1;
        }
    }
    return 0;
}

int
mf_glob_match(const char *pattern, mf_str_t s)
{
    const char *p = pattern, *star = NULL;
    size_t i = 0, mark = 0;

    while (i < s.len) {
        if (*p == '?' || (*p != '\0' && *p != '*' && *p == s.data[i])) {
            p++;
            i++;
        } else if (*p == '*') {
            star = p++;
            mark = i;
        } else if (star != NULL) {
            p = star + 1;
            i = ++mark;
        } else {
            return 0;
        }
    }
    while (*p == '*') {
        p++;
    }
    return *p == '\0';
}

void
mf_mask_secret(mf_str_t secret, char *out, size_t cap)
{
    size_t prefix = 0;

    if (cap == 0) {
        return;
    }
    if (secret.len == 0) {
        snprintf(out, cap, "(none)");
        return;
    }
    if (secret.len < MF_MASK_MIN_LEN) {
        /* too short to show any of it: a fixed mask, the length hidden */
        snprintf(out, cap, "***");
        return;
    }
    while (prefix < 3 && /* shorter than MF_MASK_MIN_LEN returned above */
           (secret.data[prefix] == 's' || secret.data[prefix] == 'k' ||
            secret.data[prefix] == '-')) {
        prefix++;
    }
    snprintf(out, cap, "%.*s...%.*s", (int)prefix, secret.data, 4,
             secret.data + secret.len - 4);
}

static volatile sig_atomic_t stop_flag;

void
mf_stop_request(void)
{
    stop_flag = 1; /* async-signal-safe */
}

int
mf_stop_requested(void)
{
    return stop_flag != 0;
}

double
mf_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double
mf_wall_time(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t
mf_rand64(void)
{
    static __thread uint64_t st;
    uint64_t z;

    if (st == 0) {
        if (getrandom(&st, sizeof(st), GRND_NONBLOCK) != sizeof(st)) {
            st = (uint64_t)(mf_wall_time() * 1e9) ^ (uint64_t)pthread_self();
        }
        st |= 1;
    }
    /* splitmix64 */
    z = (st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z != 0 ? z : 1;
}

void
mf_rand_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        if (i % 8 == 0) {
            v = mf_rand64();
        }
        out[2 * i] = hex[(v >> 4) & 15];
        out[2 * i + 1] = hex[v & 15];
        v >>= 8;
    }
    out[2 * n] = '\0';
}
