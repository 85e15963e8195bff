/*
 * Answers to the client: the head, whole bodies, chunks, errors as JSON
 * in the client's protocol, and error events inside a stream.
 */
#include "request/request-int.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>

#include "http/server.h"
#include "proto/proto.h"

struct evbuffer *
mf_req_out(mf_req_t *r)
{
    return bufferevent_get_output(mf_conn_bev(r->conn));
}

static int
is_hop_header(mf_str_t n)
{
    return mf_str_caseeq(n, MF_STR("content-length")) ||
           mf_str_caseeq(n, MF_STR("transfer-encoding")) ||
           mf_str_caseeq(n, MF_STR("connection")) ||
           mf_str_caseeq(n, MF_STR("content-type"));
}

/* Writes one header line; a header that would split the head (a stage's
 * or the client's value with CR or LF) is dropped and logged instead. */
/* A head gathered on the stack and added to the output in few pieces:
 * a printf or an evbuffer_add per piece costs more than the head. */
typedef struct {
    struct evbuffer *o;
    size_t len;
    char b[1024];
} head_buf_t;

static void
hb_put(head_buf_t *h, const char *p, size_t n)
{
    if (h->len + n > sizeof(h->b)) {
        evbuffer_add(h->o, h->b, h->len);
        h->len = 0;
        if (n > sizeof(h->b)) {
            evbuffer_add(h->o, p, n);
            return;
        }
    }
    memcpy(h->b + h->len, p, n);
    h->len += n;
}

static void
hb_str(head_buf_t *h, const char *s)
{
    hb_put(h, s, strlen(s));
}

/* The decimal digits of v (v >= 0). */
static void
hb_num(head_buf_t *h, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    hb_put(h, tmp + i, sizeof(tmp) - i);
}

static void
send_header(mf_req_t *r, head_buf_t *h, mf_str_t name, mf_str_t value)
{
    if (!mf_http_header_ok(name, value)) {
        mf_log_warn("request %.*s: header '%.*s' not sent: its value holds "
                    "CR, LF or NUL",
                    (int)r->id.len, r->id.data,
                    (int)(name.len > 64 ? 64 : name.len), name.data);
        return;
    }
    hb_put(h, name.data, name.len);
    hb_put(h, ": ", 2);
    hb_put(h, value.data, value.len);
    hb_put(h, "\r\n", 2);
}

/* Writes the status line and headers; len < 0 = chunked body. */
static void
send_head(mf_req_t *r, int status, const char *ctype, int64_t len)
{
    head_buf_t h;
    size_t i;

    r->status = status;
    r->head_sent = 1;
    if (r->conn == NULL) {
        return;
    }
    h.o = mf_req_out(r);
    h.len = 0;
    hb_put(&h, "HTTP/1.1 ", 9);
    hb_num(&h, (uint64_t)status);
    hb_put(&h, " ", 1);
    hb_str(&h, mf_http_reason(status));
    hb_put(&h, "\r\nDate: ", 8);
    hb_str(&h, mf_http_date());
    hb_put(&h, "\r\nContent-Type: ", 16);
    hb_str(&h, ctype);
    hb_put(&h, "\r\n", 2);
    if (len >= 0) {
        hb_put(&h, "Content-Length: ", 16);
        hb_num(&h, (uint64_t)len);
        hb_put(&h, "\r\n", 2);
    } else if (r->http10) {
        /* HTTP/1.0 has no chunked coding: the body ends with the
         * connection (RFC 9112 6.3) */
        r->close_after = 1;
    } else {
        hb_put(&h, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (!mf_conn_keep_alive(r->conn)) {
        r->close_after = 1;
    }
    if (r->close_after) {
        hb_put(&h, "Connection: close\r\n", 19);
    } else {
        if (r->http10) {
            /* a 1.0 client keeps the connection only when told so */
            hb_put(&h, "Connection: keep-alive\r\n", 24);
        }
        /* how long the idle connection is kept (limits.client_timeout), so
         * that a client does not send a request on one being closed */
        hb_put(&h, "Keep-Alive: timeout=", 20);
        hb_num(&h,
               r->gen != NULL
                   ? (uint64_t)(r->gen->config->limits.client_timeout_ms / 1000)
                   : 0);
        hb_put(&h, "\r\n", 2);
    }
    hb_put(&h, "x-request-id: ", 14);
    hb_put(&h, r->id.data, r->id.len);
    hb_put(&h, "\r\n", 2);
    if (r->attempts > 0 && r->att.prov != NULL) {
        send_header(r, &h, MF_STR("x-manifold-provider"),
                    mf_str_from(r->att.prov->conf->name));
        send_header(r, &h, MF_STR("x-manifold-model"), r->att.up_model);
        hb_put(&h, "x-manifold-attempts: ", 21);
        hb_num(&h, (uint64_t)(r->attempts > 0 ? r->attempts : 0));
        hb_put(&h, "\r\n", 2);
    }
    for (i = 0; i < r->resp_headers.n; i++) {
        mf_header_t *hd = &r->resp_headers.v[i];

        if (is_hop_header(hd->name)) {
            continue;
        }
        send_header(r, &h, hd->name, hd->value);
    }
    hb_put(&h, "\r\n", 2);
    evbuffer_add(h.o, h.b, h.len);
}

static void
mark_first_byte(mf_req_t *r)
{
    if (r->first_byte_ms == 0) {
        r->first_byte_ms = mf_now_ms();
    }
}

void
mf_req_send_chunk(mf_req_t *r, const char *data, size_t len)
{
    if (len == 0 || r->conn == NULL) {
        return;
    }
    mark_first_byte(r);
    if (r->http10) {
        evbuffer_add(mf_req_out(r), data, len); /* identity: no framing */
        r->bytes_out += len;
        return;
    }
    evbuffer_add_printf(mf_req_out(r), "%zx\r\n", len);
    evbuffer_add(mf_req_out(r), data, len);
    evbuffer_add(mf_req_out(r), "\r\n", 2);
    r->bytes_out += len;
}

int
mf_req_respond(mf_req_t *r, int status, const char *content_type, mf_str_t body)
{
    if (r->head_sent || r->finished) {
        return MF_ERR;
    }
    send_head(r, status, content_type ? content_type : "application/json",
              (int64_t)body.len);
    if (r->conn != NULL && body.len > 0) {
        evbuffer_add(mf_req_out(r), body.data, body.len);
    }
    mark_first_byte(r);
    r->bytes_out += body.len;
    r->phase = MF_PHASE_FINISHED;
    return MF_OK;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    size_t len, i;
    unsigned cp;

    if (s[0] < 0x80) {
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
        return 0;
    }
    return len;
}

/* message as valid UTF-8 (a sentence cut inside a character, a path's raw
 * bytes): each invalid byte becomes U+FFFD. Pool memory, or message. */
static const char *
utf8_clean(mf_req_t *r, const char *message)
{
    const unsigned char *m = (const unsigned char *)message;
    size_t n = strlen(message), i = 0, k;
    mf_buf_t b = {0};
    const char *out;

    while (i < n && (k = utf8_seq(m + i, n - i)) > 0) {
        i += k;
    }
    if (i == n) {
        return message;
    }
    mf_buf_append(&b, message, i);
    while (i < n) {
        k = utf8_seq(m + i, n - i);
        if (k == 0) {
            mf_buf_append(&b, "\xef\xbf\xbd", 3);
            k = 1;
        } else {
            mf_buf_append(&b, message + i, k);
        }
        i += k;
    }
    out = b.data ? mf_pool_strndup(r->pool, b.data, b.len) : NULL;
    mf_buf_free(&b);
    return out ? out : "the error message could not be encoded";
}

/* The error's JSON body in the client's protocol; malloc'd. */
static char *
error_json(mf_req_t *r, int status, const char *type, const char *code,
           const char *param, const char *message)
{
    mf_proto_error_t e = {status, type, code, param, message};
    char *text = r->proto->error_body(&e);

    return text ? text : mf_xstrdup("{\"error\":{\"message\":\"error\"}}");
}

/* An error naming the request field it is about (OpenAI's `param`). */
int
mf_req_respond_error_param(mf_req_t *r, int status, const char *type,
                           const char *code, const char *param,
                           const char *message)
{
    char *text;
    int rc;

    if (r->head_sent || r->finished) {
        return MF_ERR;
    }
    message = utf8_clean(r, message);
    text = error_json(r, status, type, code, param, message);
    r->error = mf_pool_str(r->pool, mf_str_from(message));
    rc = mf_req_respond(r, status, "application/json", mf_str_from(text));
    free(text);
    return rc;
}

int
mf_req_respond_error(mf_req_t *r, int status, const char *type,
                     const char *code, const char *message)
{
    return mf_req_respond_error_param(r, status, type, code, NULL, message);
}

/* An error event in the middle of a stream, then the stream ends. */
void
mf_req_send_stream_error(mf_req_t *r, const char *code, const char *message)
{
    mf_proto_error_t e = {502, "upstream_error", code, NULL, NULL};
    mf_buf_t ev = {0};

    message = utf8_clean(r, message);
    r->error = mf_pool_str(r->pool, mf_str_from(message));
    if (r->conn == NULL) {
        return;
    }
    e.message = message;
    r->proto->stream_error(r->att.proto_stream, &e, &ev);
    mf_req_send_chunk(r, ev.data, ev.len);
    mf_buf_free(&ev);
}

void
mf_req_finish_stream(mf_req_t *r)
{
    if (r->conn != NULL && !r->http10) {
        evbuffer_add(mf_req_out(r), "0\r\n\r\n", 5);
    }
}

void
mf_req_start_stream_response(mf_req_t *r)
{
    const char *ctype = "text/event-stream; charset=utf-8";
    mf_proto_call_t call = mf_req_proto_call(r);

    if (r->proto->stream_type != NULL && r->proto->stream_type(&call) != NULL) {
        ctype = r->proto->stream_type(&call);
    }

    mf_hlist_set(r->pool, &r->resp_headers, MF_STR("cache-control"),
                 MF_STR("no-cache"));
    send_head(r, 200, ctype, -1);
}
