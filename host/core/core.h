/*
 * Core utilities of the host: aborting allocators, the logger, the
 * per-request arena and growable byte buffers.
 */
#ifndef MF_CORE_H
#define MF_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <manifold/plugin.h>

#define MF_UNUSED(x) ((void)(x))
#define MF_NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* Allocators that abort with a message on OOM (host-owned memory). */
void *mf_xmalloc(size_t size);
void *mf_xcalloc(size_t n, size_t size);
void *mf_xrealloc(void *p, size_t size);
char *mf_xstrdup(const char *s);
char *mf_xstrndup(const char *s, size_t n);

/* Logger: one line to stderr, "time level [tag] message". Before
 * mf_log_start and after mf_log_stop a line is written at once; in
 * between, lines go through a bounded buffer to a writer thread, so a
 * stderr nobody reads never stops a worker: lines that do not fit are
 * dropped, counted, and the count is written once stderr takes lines
 * again. */
void mf_log_set_level(mf_log_level_t level);
void mf_log_start(void);
/* Gives the writer up to wait_ms to write what is buffered, then stops. */
void mf_log_stop(double wait_ms);
/* Lines dropped since start. */
uint64_t mf_log_dropped(void);
mf_log_level_t mf_log_get_level(void);
void mf_log(mf_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mf_log_tagged(mf_log_level_t level, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mf_logv(mf_log_level_t level, const char *tag, const char *fmt,
             va_list ap);

#define mf_log_debug(...) mf_log(MF_LOG_DEBUG, __VA_ARGS__)
#define mf_log_info(...) mf_log(MF_LOG_INFO, __VA_ARGS__)
#define mf_log_warn(...) mf_log(MF_LOG_WARN, __VA_ARGS__)
#define mf_log_error(...) mf_log(MF_LOG_ERROR, __VA_ARGS__)

/* Arena: allocations freed all at once by mf_pool_destroy. */
typedef struct mf_pool_s mf_pool_t;

mf_pool_t *mf_pool_create(size_t block_size);
void mf_pool_destroy(mf_pool_t *p);
/* NULL when a client-inflated size cannot be had (the caller answers). */
void *mf_pool_alloc(mf_pool_t *p, size_t size);
char *mf_pool_strndup(mf_pool_t *p, const char *s, size_t n);
mf_str_t mf_pool_str(mf_pool_t *p, mf_str_t s);

/* Growable byte buffer with an optional cap (0 = none). */
typedef struct mf_buf_s {
    char *data;
    size_t len;
    size_t cap;
    size_t limit;
} mf_buf_t;

/* For buffers a client or upstream can inflate: MF_ERR, with the buffer
 * left as it was, when the limit would be passed or memory is short. */
int mf_buf_try_append(mf_buf_t *b, const void *data, size_t len)
    __attribute__((warn_unused_result));
/* For host-owned buffers: abort with a message on OOM or past the limit. */
void mf_buf_append(mf_buf_t *b, const void *data, size_t len);
void mf_buf_printf(mf_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mf_buf_consume(mf_buf_t *b, size_t n);
void mf_buf_reset(mf_buf_t *b);
void mf_buf_free(mf_buf_t *b);

/* String helpers. */
int mf_str_eq(mf_str_t a, mf_str_t b);
int mf_str_caseeq(mf_str_t a, mf_str_t b);
int mf_str_eq_cstr(mf_str_t a, const char *b);
mf_str_t mf_str_from(const char *s);
/* 1 when s holds a control character (below 0x20, or DEL): a value that
 * would split a header or a request line (CR, LF) or end a C string (NUL)
 * where it is copied into one. */
int mf_str_has_control(mf_str_t s);
/* Glob match: '*' any run, '?' one char; others literal. */
int mf_glob_match(const char *pattern, mf_str_t s);
/* A secret shorter than this is masked whole. */
#define MF_MASK_MIN_LEN 20
/* Masks a secret for display: "sk-...abcd" (its known prefix, made of
 * 's', 'k', '-' only, and its last 4 bytes) when it has MF_MASK_MIN_LEN
 * bytes or more, else "***" (nothing of it, not even its length). */
void mf_mask_secret(mf_str_t secret, char *out, size_t cap);

/* Monotonic milliseconds and wall time in seconds. */
double mf_now_ms(void);
/* The process was told to stop (SIGTERM, SIGINT): set from the signal
 * handler, read by code that may run long on the main thread (a stage's
 * init during a reload) so that it gives up at once. */
void mf_stop_request(void);
int mf_stop_requested(void);
double mf_wall_time(void);

/* 64 random bits from a per-thread generator seeded by the system (not
 * for secrets: trace and span ids). Never 0. */
uint64_t mf_rand64(void);
/* n random bytes as 2n lowercase hex digits into out (2n + 1 bytes),
 * never all zeros (W3C trace and span ids). */
void mf_rand_hex(char *out, size_t n);

#endif
