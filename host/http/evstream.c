/*
 * AWS event-stream decoder (see evstream.h). The prelude is checked as
 * soon as its 12 bytes are in, so a bad length is refused before any
 * payload is buffered.
 */
#include "http/evstream.h"

#include <pthread.h>

#define PRELUDE 12
#define TRAILER 4

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init(void)
{
    uint32_t i, j, c;

    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++) {
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[i] = c;
    }
}

uint32_t
mf_crc32(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;

    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    while (len--) {
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

static uint32_t
be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;

    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 |
           u[3];
}

void
mf_evstream_init(mf_evstream_t *p, size_t max_message)
{
    memset(p, 0, sizeof(*p));
    p->buf.limit = max_message;
}

void
mf_evstream_free(mf_evstream_t *p)
{
    mf_buf_free(&p->buf);
}

size_t
mf_evstream_pending(const mf_evstream_t *p)
{
    return p->buf.len;
}

/* Size of a header value of `type` at v (n bytes left), or -1. */
static long
value_size(unsigned type, const char *v, size_t n)
{
    static const long fixed[] = {0, 0, 1, 2, 4, 8, -1, -1, 8, 16};

    if (type > 9) {
        return -1;
    }
    if (type == 6 || type == 7) {
        if (n < 2) {
            return -1;
        }
        return 2 + (long)(((unsigned char)v[0] << 8) | (unsigned char)v[1]);
    }
    return fixed[type];
}

/* Decodes the complete message in p->buf and reports it. */
static int
message(mf_evstream_t *p, mf_sse_event_cb cb, void *arg)
{
    const char *m = p->buf.data;
    uint32_t total = be32(m), hlen = be32(m + 4);
    size_t pos = PRELUDE, hend = PRELUDE + hlen;
    mf_str_t event_type = MF_STR(""), exc_type = MF_STR("");
    mf_str_t msg_type = MF_STR(""), err_code = MF_STR(""), err_msg;
    mf_sse_event_t ev;

    err_msg = MF_STR("");
    if (mf_crc32(0, m, total - TRAILER) != be32(m + total - TRAILER)) {
        return MF_ERR;
    }
    while (pos < hend) {
        size_t nlen = (unsigned char)m[pos];
        mf_str_t name;
        unsigned type;
        long vs;

        if (nlen == 0 || pos + 1 + nlen + 1 > hend) {
            return MF_ERR;
        }
        name = (mf_str_t){m + pos + 1, nlen};
        pos += 1 + nlen;
        type = (unsigned char)m[pos++];
        vs = value_size(type, m + pos, hend - pos);
        if (vs < 0 || pos + (size_t)vs > hend) {
            return MF_ERR;
        }
        if (type == 7) {
            mf_str_t val = {m + pos + 2, (size_t)vs - 2};

            if (mf_str_eq_cstr(name, ":event-type")) {
                event_type = val;
            } else if (mf_str_eq_cstr(name, ":exception-type")) {
                exc_type = val;
            } else if (mf_str_eq_cstr(name, ":message-type")) {
                msg_type = val;
            } else if (mf_str_eq_cstr(name, ":error-code")) {
                err_code = val;
            } else if (mf_str_eq_cstr(name, ":error-message")) {
                err_msg = val;
            }
        }
        pos += (size_t)vs;
    }
    memset(&ev, 0, sizeof(ev));
    ev.id = msg_type;
    ev.raw = (mf_str_t){m, total};
    ev.data = (mf_str_t){m + hend, total - TRAILER - hend};
    if (mf_str_eq_cstr(msg_type, "exception")) {
        ev.event = exc_type;
    } else if (mf_str_eq_cstr(msg_type, "error")) {
        ev.event = err_code;
        ev.data = err_msg;
    } else {
        ev.event = event_type;
    }
    return cb(arg, &ev);
}

int
mf_evstream_feed(mf_evstream_t *p, const char *in, size_t len,
                 mf_sse_event_cb cb, void *arg)
{
    while (len > 0) {
        size_t need = PRELUDE, take;

        if (p->buf.len >= PRELUDE) {
            need = be32(p->buf.data);
        }
        take = need - p->buf.len < len ? need - p->buf.len : len;
        if (mf_buf_try_append(&p->buf, in, take) != MF_OK) {
            return MF_ERR;
        }
        in += take;
        len -= take;
        if (p->buf.len == PRELUDE && need == PRELUDE) {
            uint32_t total = be32(p->buf.data), hlen = be32(p->buf.data + 4);

            if (total < PRELUDE + TRAILER || hlen > total - PRELUDE - TRAILER ||
                (p->buf.limit > 0 && total > p->buf.limit) ||
                mf_crc32(0, p->buf.data, 8) != be32(p->buf.data + 8)) {
                return MF_ERR;
            }
            if (total == PRELUDE + TRAILER) {
                continue; /* the trailer is all that is left */
            }
        }
        if (p->buf.len >= PRELUDE && p->buf.len == be32(p->buf.data)) {
            int rc = message(p, cb, arg);

            p->buf.len = 0;
            if (rc != MF_OK) {
                return MF_ERR;
            }
        }
    }
    return MF_OK;
}
