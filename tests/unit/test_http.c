/* Check suite for host/http/http.c: heads and chunked bodies. */
#include "check_main.h"
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

static mf_http_head_t h;

START_TEST(request_head)
{
    const char *req = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\n"
                      "Content-Length: 12\r\nX-Y:  z \r\n\r\n";
    const char *err = NULL;

    ck_assert_uint_eq(mf_http_head_end(req, strlen(req)), strlen(req));
    ck_assert_int_eq(mf_http_parse_request_head(req, strlen(req), &h, &err),
                     MF_OK);
    ck_assert(mf_str_eq_cstr(h.method, "POST"));
    ck_assert(mf_str_eq_cstr(h.path, "/v1/chat/completions"));
    ck_assert_int_eq(h.content_length, 12);
    ck_assert_int_eq(h.keep_alive, 1);
    {
        mf_str_t v;

        ck_assert_int_eq(mf_http_find_header(&h, "x-y", &v), MF_OK);
        ck_assert(mf_str_eq_cstr(v, "z"));
    }
}
END_TEST

START_TEST(incomplete_and_bad_heads)
{
    const char *err;

    ck_assert_uint_eq(mf_http_head_end("GET / HTTP/1.1\r\nHost", 20), 0);
    ck_assert_int_eq(
        mf_http_parse_request_head("GET / HTTP/2.0\r\n\r\n", 18, &h, &err),
        MF_ERR);
    ck_assert_int_eq(
        mf_http_parse_request_head(
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            55, &h, &err),
        MF_ERR);
    ck_assert_int_eq(
        mf_http_parse_request_head("GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n",
                                   33, &h, &err),
        MF_ERR);
    ck_assert_int_eq(
        mf_http_parse_request_head("GET / HTTP/1.0\r\n\r\n", 18, &h, &err),
        MF_OK);
    ck_assert_int_eq(h.keep_alive, 0);
}
END_TEST

START_TEST(response_head)
{
    const char *r = "HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\n"
                    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    const char *err;

    ck_assert_int_eq(mf_http_parse_response_head(r, strlen(r), &h, &err),
                     MF_OK);
    ck_assert_int_eq(h.status, 429);
    ck_assert_int_eq(h.chunked, 1);
    ck_assert_int_eq(h.keep_alive, 0);
}
END_TEST

static char decoded[256];
static size_t decoded_len;

static int
collect(void *arg, const char *data, size_t len)
{
    (void)arg;
    memcpy(decoded + decoded_len, data, len);
    decoded_len += len;
    return MF_OK;
}

START_TEST(chunked_byte_by_byte)
{
    const char *in =
        "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
    mf_http_chunked_t c;
    size_t i;

    memset(&c, 0, sizeof(c));
    decoded_len = 0;
    for (i = 0; i < strlen(in); i++) {
        ck_assert_int_eq(mf_http_chunked_feed(&c, in + i, 1, collect, NULL), 1);
    }
    ck_assert_int_eq(c.done, 1);
    ck_assert_uint_eq(decoded_len, 12);
    ck_assert_int_eq(memcmp(decoded, "hello, world", 12), 0);
}
END_TEST

START_TEST(chunked_malformed)
{
    mf_http_chunked_t c;

    memset(&c, 0, sizeof(c));
    decoded_len = 0;
    ck_assert_int_lt(mf_http_chunked_feed(&c, "zz\r\n", 4, collect, NULL), 0);
    memset(&c, 0, sizeof(c));
    ck_assert_int_lt(
        mf_http_chunked_feed(&c, "ffffffffffffffffff\r\n", 20, collect, NULL),
        0);
}
END_TEST

/* Parses a request head; returns MF_OK or the status to answer. */
static int
parse_status(const char *req)
{
    const char *err = NULL;

    if (mf_http_parse_request_head(req, strlen(req), &h, &err) == MF_OK) {
        return MF_OK;
    }
    ck_assert_ptr_nonnull(err);
    return h.err_status;
}

START_TEST(request_framing)
{
    /* both lengths: refused, whatever the order (smuggling) */
    ck_assert_int_eq(parse_status("POST / HTTP/1.1\r\nContent-Length: 3\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"),
                     400);
    ck_assert_int_eq(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                                  "chunked\r\nContent-Length: 3\r\n\r\n"),
                     400);
    /* a coding the gateway does not implement */
    ck_assert_int_eq(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                                  "gzip, chunked\r\n\r\n"),
                     501);
    ck_assert_int_eq(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                                  "gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     501);
    ck_assert_int_eq(
        parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"),
        501);
    /* chunked not last, twice, empty, or in HTTP/1.0: malformed */
    ck_assert_int_eq(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                                  "chunked, gzip\r\n\r\n"),
                     400);
    ck_assert_int_eq(
        parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                     "chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400);
    ck_assert_int_eq(
        parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n"), 400);
    ck_assert_int_eq(
        parse_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400);
    /* the one framing served */
    ck_assert_int_eq(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                                  "Chunked,\r\n\r\n"),
                     MF_OK);
    ck_assert_int_eq(h.chunked, 1);
    ck_assert_int_eq(h.content_length, -1);
}
END_TEST

START_TEST(response_framing)
{
    const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n";
    const char *err;

    /* a response: chunked wins, and the connection is not reused */
    ck_assert_int_eq(mf_http_parse_response_head(r, strlen(r), &h, &err),
                     MF_OK);
    ck_assert_int_eq(h.chunked, 1);
    ck_assert_int_eq(h.content_length, -1);
    ck_assert_int_eq(h.keep_alive, 0);
}
END_TEST

START_TEST(chunked_trailer_bounded)
{
    static char in[64 * 1024];
    mf_http_chunked_t c;
    size_t n = 0;
    ssize_t used;

    memset(&c, 0, sizeof(c));
    decoded_len = 0;
    n += (size_t)snprintf(in, sizeof(in), "0\r\n");
    while (n + 32 < sizeof(in)) {
        n +=
            (size_t)snprintf(in + n, sizeof(in) - n, "X-T: aaaaaaaaaaaaaa\r\n");
    }
    used = mf_http_chunked_feed(&c, in, n, collect, NULL);
    ck_assert_int_lt(used, 0);
    ck_assert_int_eq(c.trailer_too_large, 1);
    ck_assert_int_eq(c.done, 0);

    /* a few trailer lines are still taken */
    memset(&c, 0, sizeof(c));
    used = mf_http_chunked_feed(&c, "0\r\nA: 1\r\nB: 2\r\n\r\n", 17, collect,
                                NULL);
    ck_assert_int_eq(used, 17);
    ck_assert_int_eq(c.done, 1);
}
END_TEST

static int
retry(const char *v, double *secs)
{
    *secs = -1;
    return mf_http_retry_after(mf_str_from(v), 784111777.0 /* the date's */,
                               300, secs);
}

START_TEST(retry_after_forms)
{
    static const char *const bad[] = {"nan",
                                      "inf",
                                      "-inf",
                                      "1e300",
                                      "-5",
                                      "",
                                      " ",
                                      "7s",
                                      "0x10",
                                      "garbage",
                                      ".5",
                                      "Sunday, 06-Nov-94 08:49:37 GMT",
                                      "Sun Nov  6 08:49:37 1994",
                                      "Sun, 06 Nov 1994 08:49:37 UTC",
                                      "Sun, 32 Nov 1994 08:49:37 GMT",
                                      NULL};
    double secs;
    size_t i;

    for (i = 0; bad[i] != NULL; i++) {
        ck_assert_msg(retry(bad[i], &secs) == MF_ERR, "%s", bad[i]);
    }
    ck_assert_int_eq(retry("7", &secs), MF_OK);
    ck_assert(secs == 7);
    ck_assert_int_eq(retry(" 2.5 ", &secs), MF_OK);
    ck_assert(secs == 2.5);
    ck_assert_int_eq(retry("31536000", &secs), MF_OK);
    ck_assert(secs == 300); /* capped */
    ck_assert_int_eq(retry("999999999999999999999999999999999999", &secs),
                     MF_OK);
    ck_assert(secs == 300);
    /* 784111777 is Sun, 06 Nov 1994 08:49:37 GMT */
    ck_assert_int_eq(retry("Sun, 06 Nov 1994 08:50:07 GMT", &secs), MF_OK);
    ck_assert(secs == 30);
    ck_assert_int_eq(retry("Sun, 06 Nov 1994 08:49:00 GMT", &secs), MF_OK);
    ck_assert(secs == 0); /* in the past: now */
    ck_assert_int_eq(retry("Mon, 06 Nov 1995 08:49:37 GMT", &secs), MF_OK);
    ck_assert(secs == 300);
}
END_TEST

START_TEST(header_ok)
{
    ck_assert(mf_http_header_ok(MF_STR("x-manifold-model"), MF_STR("gpt-4o")));
    ck_assert(mf_http_header_ok(MF_STR("a"), MF_STR("")));
    ck_assert(!mf_http_header_ok(MF_STR("x"), MF_STR("a\r\nSet-Cookie: b")));
    ck_assert(!mf_http_header_ok(MF_STR("x"), MF_STR("a\nb")));
    ck_assert(!mf_http_header_ok(MF_STR("x"), (mf_str_t){"a\0b", 3}));
    ck_assert(!mf_http_header_ok(MF_STR("x y"), MF_STR("v")));
    ck_assert(!mf_http_header_ok(MF_STR("x:y"), MF_STR("v")));
    ck_assert(!mf_http_header_ok(MF_STR(""), MF_STR("v")));
    /* every byte of a name: a token char is visible ASCII but none of
     * the separators (RFC 9110) */
    for (int c = 0; c < 256; c++) {
        char n[2] = {(char)c, 0};
        int tchar =
            c > 0x20 && c < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", c) == NULL;

        ck_assert_int_eq(mf_http_header_ok((mf_str_t){n, 1}, MF_STR("v")),
                         tchar);
    }
    /* every value byte at every position of values of 1 to 40 bytes:
     * refused exactly when it is CR, LF or NUL (the value is scanned
     * eight bytes at a time) */
    for (size_t len = 1; len <= 40; len++) {
        for (size_t at = 0; at < len; at++) {
            for (int c = 0; c < 256; c++) {
                char v[40];

                memset(v, c == 'a' ? 'b' : 'a', sizeof(v));
                v[at] = (char)c;
                ck_assert_int_eq(
                    mf_http_header_ok(MF_STR("x"), (mf_str_t){v, len}),
                    c != '\r' && c != '\n' && c != 0);
            }
        }
    }
    /* high bytes and tabs beside a CR found in the same eight */
    ck_assert(!mf_http_header_ok(MF_STR("x"), MF_STR("\xff\t\xfe\x80"
                                                     "a\rbcdefgh")));
    ck_assert(mf_http_header_ok(MF_STR("x"), MF_STR("\xff\t\xfe\x80\x0e\x0f\x01"
                                                    "bcdefgh")));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, request_head);
    tcase_add_test(tc, incomplete_and_bad_heads);
    tcase_add_test(tc, response_head);
    tcase_add_test(tc, chunked_byte_by_byte);
    tcase_add_test(tc, chunked_malformed);
    tcase_add_test(tc, request_framing);
    tcase_add_test(tc, response_framing);
    tcase_add_test(tc, chunked_trailer_bounded);
    tcase_add_test(tc, retry_after_forms);
    tcase_add_test(tc, header_ok);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
