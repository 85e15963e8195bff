/*
 * Request bodies sent with a Content-Encoding: gzip and deflate (zlib or
 * raw) are decoded before anything reads the body, with limits.max_body
 * counted on the decoded bytes (a small body that inflates past it, a
 * zip bomb, is a 413 as soon as the output passes the limit, never held
 * whole); identity is nothing to do; any other coding is a 415 naming it.
 */
#include "request/request-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#define INFLATE_STEP (64 * 1024)

/* One coding's name: "gzip", "x-gzip", "deflate", "identity". */
typedef enum {
    CODING_OTHER,
    CODING_IDENTITY,
    CODING_GZIP,
    CODING_DEFLATE
} coding_t;

static coding_t
coding_of(mf_str_t name)
{
    if (mf_str_caseeq(name, MF_STR("gzip")) ||
        mf_str_caseeq(name, MF_STR("x-gzip"))) {
        return CODING_GZIP;
    }
    if (mf_str_caseeq(name, MF_STR("deflate"))) {
        return CODING_DEFLATE;
    }
    if (mf_str_caseeq(name, MF_STR("identity"))) {
        return CODING_IDENTITY;
    }
    return CODING_OTHER;
}

static mf_str_t
trim(mf_str_t s)
{
    while (s.len > 0 && (s.data[0] == ' ' || s.data[0] == '\t')) {
        s.data++;
        s.len--;
    }
    while (s.len > 0 &&
           (s.data[s.len - 1] == ' ' || s.data[s.len - 1] == '\t')) {
        s.len--;
    }
    return s;
}

/* Inflates in into *out (malloc'd, *out_len bytes) with zlib's window
 * bits wbits. Returns 0, 1 when the output would pass max, -1 when the
 * data is not valid (zmsg says why). */
static int
inflate_body(mf_str_t in, int wbits, size_t max, char **out, size_t *out_len,
             const char **zmsg)
{
    z_stream z;
    mf_buf_t b = {0};
    char chunk[INFLATE_STEP];
    int rc;

    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, wbits) != Z_OK) {
        *zmsg = "the decoder could not start";
        return -1;
    }
    z.next_in = (Bytef *)(uintptr_t)in.data;
    z.avail_in = (uInt)in.len;
    b.limit = max;
    do {
        z.next_out = (Bytef *)chunk;
        z.avail_out = sizeof(chunk);
        rc = inflate(&z, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) {
            *zmsg = z.msg ? z.msg
                          : (rc == Z_BUF_ERROR ? "the data ends early"
                                               : "the data is invalid");
            inflateEnd(&z);
            mf_buf_free(&b);
            return -1;
        }
        if (mf_buf_try_append(&b, chunk, sizeof(chunk) - z.avail_out) !=
            MF_OK) {
            inflateEnd(&z);
            mf_buf_free(&b);
            return 1;
        }
        if (rc != Z_STREAM_END && z.avail_in == 0 && z.avail_out != 0) {
            *zmsg = "the data ends early";
            inflateEnd(&z);
            mf_buf_free(&b);
            return -1;
        }
    } while (rc != Z_STREAM_END);
    inflateEnd(&z);
    *out = b.data ? b.data : mf_xstrdup("");
    *out_len = b.len;
    return 0;
}

/* deflate is zlib-wrapped (RFC 9110), but some clients send it raw: the
 * zlib header decides. */
static int
deflate_bits(mf_str_t in)
{
    if (in.len >= 2) {
        unsigned char a = (unsigned char)in.data[0];
        unsigned char b = (unsigned char)in.data[1];

        if ((a & 0x0f) == 8 && ((unsigned)a * 256 + b) % 31 == 0) {
            return 15;
        }
    }
    return -15;
}

int
mf_req_decode_body(mf_req_t *r)
{
    const mf_limits_t *lim = &r->gen->config->limits;
    mf_str_t v = MF_STR_NULL;
    mf_str_t names[8];
    size_t n = 0, i, start = 0;
    char msg[512];

    if (mf_hlist_get(&r->req_headers, MF_STR("content-encoding"), &v) !=
            MF_OK ||
        v.len == 0) {
        return MF_OK;
    }
    /* codings are listed in the order they were applied */
    for (i = 0; i <= v.len; i++) {
        if (i == v.len || v.data[i] == ',') {
            mf_str_t name = trim((mf_str_t){v.data + start, i - start});

            start = i + 1;
            if (name.len == 0) {
                continue;
            }
            if (coding_of(name) == CODING_OTHER || n == 8) {
                snprintf(msg, sizeof(msg),
                         "Content-Encoding '%.*s' is not supported; send the "
                         "body plain, or with gzip or deflate.",
                         (int)(name.len > 64 ? 64 : name.len), name.data);
                mf_req_respond_error(r, 415, "invalid_request_error",
                                     "unsupported_content_encoding", msg);
                return MF_ERR;
            }
            names[n++] = name;
        }
    }
    while (n-- > 0) {
        coding_t c = coding_of(names[n]);
        const char *zmsg = "";
        char *out = NULL;
        size_t out_len = 0;
        int rc;

        if (c == CODING_IDENTITY) {
            continue;
        }
        rc = inflate_body(r->body,
                          c == CODING_GZIP ? 15 + 16 : deflate_bits(r->body),
                          lim->max_body, &out, &out_len, &zmsg);
        if (rc > 0) {
            snprintf(msg, sizeof(msg),
                     "The request body decoded (Content-Encoding: %.*s) is "
                     "larger than the limit of %zu bytes (limits.max_body).",
                     (int)(names[n].len > 32 ? 32 : names[n].len),
                     names[n].data, lim->max_body);
            mf_req_respond_error(r, 413, "invalid_request_error",
                                 "request_too_large", msg);
            return MF_ERR;
        }
        if (rc < 0) {
            snprintf(msg, sizeof(msg),
                     "The request body could not be decoded as %.*s (its "
                     "Content-Encoding): %s.",
                     (int)(names[n].len > 32 ? 32 : names[n].len),
                     names[n].data, zmsg);
            mf_req_respond_error(r, 400, "invalid_request_error",
                                 "invalid_content_encoding", msg);
            return MF_ERR;
        }
        free((char *)r->body.data);
        r->body.data = out;
        r->body.len = out_len;
    }
    /* the body is plain from here on, for stages and upstreams alike */
    mf_hlist_set(r->pool, &r->req_headers, MF_STR("content-encoding"),
                 MF_STR(""));
    return MF_OK;
}
