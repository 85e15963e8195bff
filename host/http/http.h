/*
 * HTTP/1.1 message heads and chunked bodies: a parser for request and
 * response heads held whole in memory, and an incremental chunked decoder.
 * Views in parsed heads point into the caller's buffer.
 */
#ifndef MF_HTTP_H
#define MF_HTTP_H

#include <sys/types.h>

#include "core/core.h"

#define MF_HTTP_MAX_HEADERS 100
/* Bytes of the trailer section of a chunked body, all lines together. */
#define MF_HTTP_MAX_TRAILER 8192

typedef struct mf_header_s {
    mf_str_t name;
    mf_str_t value;
} mf_header_t;

/* A growable list of headers (the request's and the response's). */
typedef struct mf_hlist_s {
    mf_header_t *v;
    size_t n;
    size_t cap;
} mf_hlist_t;

typedef struct mf_http_head_s {
    mf_str_t method;        /* request */
    mf_str_t target;        /* request: path and query */
    mf_str_t path;          /* request: target without the query */
    int status;             /* response */
    int minor;              /* HTTP/1.<minor> */
    int64_t content_length; /* -1 when absent */
    int chunked;
    int keep_alive;
    int expect_continue;
    int err_status; /* after MF_ERR: 400, or 501 for a transfer coding */
    size_t nheaders;
    mf_header_t headers[MF_HTTP_MAX_HEADERS];
} mf_http_head_t;

/* Length of the head (blank line included) at the start of buf, 0 when
 * not complete yet. Accepts CRLF and bare LF line ends. */
size_t mf_http_head_end(const char *buf, size_t len);

/* Parses a complete request head. MF_ERR with *err set to a sentence and
 * h->err_status to the status to answer. A request framed both by
 * Content-Length and Transfer-Encoding, or by a Transfer-Encoding other
 * than a single final chunked, is refused (the connection must close). */
int mf_http_parse_request_head(const char *buf, size_t len, mf_http_head_t *h,
                               const char **err);
/* Parses a complete response head. */
int mf_http_parse_response_head(const char *buf, size_t len, mf_http_head_t *h,
                                const char **err);

/* Case-insensitive lookup; MF_ERR when absent. */
int mf_http_find_header(const mf_http_head_t *h, const char *name,
                        mf_str_t *value);

typedef struct mf_http_chunked_s {
    int state;
    uint64_t remaining;
    size_t line_len;
    size_t trailer_len; /* bytes of trailer lines so far */
    int trailer_too_large;
    int done;
} mf_http_chunked_t;

typedef int (*mf_http_data_cb)(void *arg, const char *data, size_t len);

/* Feeds encoded bytes; calls cb with each piece of payload. Returns the
 * bytes consumed (all of them unless done was reached), or -1 on a
 * malformed stream or when cb returns MF_ERR. c->done is set after the
 * last chunk and its trailers. */
ssize_t mf_http_chunked_feed(mf_http_chunked_t *c, const char *in, size_t len,
                             mf_http_data_cb cb, void *arg);

/* Reason phrase for a status code. */
const char *mf_http_reason(int status);

/* The current time as an HTTP date (RFC 9110 IMF-fixdate, "Sun, 06 Nov
 * 1994 08:49:37 GMT"), for the Date header of every response. Returns a
 * per-thread buffer, valid until the thread's next call. */
const char *mf_http_date(void);

/* 1 when name is a header name (an RFC 9110 token) and value holds no
 * CR, LF or NUL: a header that can be written without splitting the head.
 * Every header the host writes passes this check. */
int mf_http_header_ok(mf_str_t name, mf_str_t value);

/* Parses a Retry-After value (RFC 9110 10.2.3): delay-seconds (digits,
 * a decimal fraction tolerated) or an IMF-fixdate, relative to now (unix
 * seconds). *secs gets the delay, 0 for a date in the past, at most
 * max_secs. MF_ERR for anything else (nan, inf, 1e300, negative, other
 * date forms, garbage): the caller acts as if there were none. */
int mf_http_retry_after(mf_str_t v, double now, double max_secs, double *secs);

/* Sets (an empty value removes) header name in h, copied into pool.
 * MF_ERR for a name that is not a token or a value with CR, LF or NUL
 * (mf_http_header_ok): no header in a list can split a head. */
int mf_hlist_set(mf_pool_t *pool, mf_hlist_t *h, mf_str_t name, mf_str_t value);
/* As mf_hlist_set, for a name (a token, a literal) and a non-empty
 * value (in pool) the host made itself, of hex digits and dashes that
 * cannot split a head: neither checked nor copied. */
int mf_hlist_set_made(mf_pool_t *pool, mf_hlist_t *h, mf_str_t name,
                      mf_str_t value);
int mf_hlist_get(const mf_hlist_t *h, mf_str_t name, mf_str_t *value);

#endif
