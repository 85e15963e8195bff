/* Check suite for host/http/evstream.c: AWS event-stream frames (built with an
 * independent CRC-32, Python's zlib) split at every byte boundary, and
 * every malformed frame refused without growing. */
#include "check_main.h"
#include <stdlib.h>

#include "http/evstream.h"

/* 118 bytes, made with Python zlib.crc32 */
static const char f1[] =
    "\x00\x00\x00\x76\x00\x00\x00\x52\x96\xd5\xfa\xde\x0b\x3a\x65\x76"
    "\x65\x6e\x74\x2d\x74\x79\x70\x65\x07\x00\x0c\x6d\x65\x73\x73\x61"
    "\x67\x65\x53\x74\x61\x72\x74\x0d\x3a\x63\x6f\x6e\x74\x65\x6e\x74"
    "\x2d\x74\x79\x70\x65\x07\x00\x10\x61\x70\x70\x6c\x69\x63\x61\x74"
    "\x69\x6f\x6e\x2f\x6a\x73\x6f\x6e\x0d\x3a\x6d\x65\x73\x73\x61\x67"
    "\x65\x2d\x74\x79\x70\x65\x07\x00\x05\x65\x76\x65\x6e\x74\x7b\x22"
    "\x72\x6f\x6c\x65\x22\x3a\x22\x61\x73\x73\x69\x73\x74\x61\x6e\x74"
    "\x22\x7d\x6f\xa8\xc5\x99";
/* 136 bytes, made with Python zlib.crc32 */
static const char f2[] =
    "\x00\x00\x00\x88\x00\x00\x00\x61\xde\x01\x75\xf4\x0f\x3a\x65\x78"
    "\x63\x65\x70\x74\x69\x6f\x6e\x2d\x74\x79\x70\x65\x07\x00\x13\x74"
    "\x68\x72\x6f\x74\x74\x6c\x69\x6e\x67\x45\x78\x63\x65\x70\x74\x69"
    "\x6f\x6e\x0d\x3a\x63\x6f\x6e\x74\x65\x6e\x74\x2d\x74\x79\x70\x65"
    "\x07\x00\x10\x61\x70\x70\x6c\x69\x63\x61\x74\x69\x6f\x6e\x2f\x6a"
    "\x73\x6f\x6e\x0d\x3a\x6d\x65\x73\x73\x61\x67\x65\x2d\x74\x79\x70"
    "\x65\x07\x00\x09\x65\x78\x63\x65\x70\x74\x69\x6f\x6e\x7b\x22\x6d"
    "\x65\x73\x73\x61\x67\x65\x22\x3a\x22\x73\x6c\x6f\x77\x20\x64\x6f"
    "\x77\x6e\x22\x7d\x83\x2e\xe0\x72";
/* 69 bytes, made with Python zlib.crc32 */
static const char f3[] =
    "\x00\x00\x00\x45\x00\x00\x00\x35\xa3\x82\xcc\x73\x0b\x3a\x65\x76"
    "\x65\x6e\x74\x2d\x74\x79\x70\x65\x07\x00\x10\x63\x6f\x6e\x74\x65"
    "\x6e\x74\x42\x6c\x6f\x63\x6b\x53\x74\x6f\x70\x0d\x3a\x6d\x65\x73"
    "\x73\x61\x67\x65\x2d\x74\x79\x70\x65\x07\x00\x05\x65\x76\x65\x6e"
    "\x74\xd8\xa9\xe1\x05";

typedef struct {
    int n;
    char event[4][32];
    char id[4][16];
    char data[4][64];
} seen_t;

static int
on_msg(void *arg, const mf_sse_event_t *ev)
{
    seen_t *s = arg;

    ck_assert_int_lt(s->n, 4);
    snprintf(s->event[s->n], 32, "%.*s", (int)ev->event.len, ev->event.data);
    snprintf(s->id[s->n], 16, "%.*s", (int)ev->id.len, ev->id.data);
    snprintf(s->data[s->n], 64, "%.*s", (int)ev->data.len, ev->data.data);
    s->n++;
    return MF_OK;
}

START_TEST(crc32_check_value)
{
    ck_assert_uint_eq(mf_crc32(0, "123456789", 9), 0xCBF43926u);
    /* continued over pieces */
    ck_assert_uint_eq(mf_crc32(mf_crc32(0, "1234", 4), "56789", 5),
                      0xCBF43926u);
}
END_TEST

START_TEST(split_everywhere)
{
    char all[512];
    size_t n1 = sizeof(f1) - 1, n2 = sizeof(f2) - 1, n3 = sizeof(f3) - 1;
    size_t len = n1 + n2 + n3, cut;

    memcpy(all, f1, n1);
    memcpy(all + n1, f2, n2);
    memcpy(all + n1 + n2, f3, n3);
    for (cut = 0; cut <= len; cut++) {
        mf_evstream_t p;
        seen_t s;

        memset(&s, 0, sizeof(s));
        mf_evstream_init(&p, 4096);
        ck_assert_int_eq(mf_evstream_feed(&p, all, cut, on_msg, &s), MF_OK);
        ck_assert_int_eq(mf_evstream_feed(&p, all + cut, len - cut, on_msg, &s),
                         MF_OK);
        ck_assert_uint_eq(mf_evstream_pending(&p), 0);
        ck_assert_int_eq(s.n, 3);
        ck_assert_str_eq(s.event[0], "messageStart");
        ck_assert_str_eq(s.id[0], "event");
        ck_assert_str_eq(s.data[0], "{\"role\":\"assistant\"}");
        ck_assert_str_eq(s.event[1], "throttlingException");
        ck_assert_str_eq(s.id[1], "exception");
        ck_assert_str_eq(s.data[1], "{\"message\":\"slow down\"}");
        ck_assert_str_eq(s.event[2], "contentBlockStop");
        ck_assert_str_eq(s.data[2], "");
        mf_evstream_free(&p);
    }
}
END_TEST

START_TEST(byte_at_a_time_partial)
{
    mf_evstream_t p;
    seen_t s;
    size_t i;

    memset(&s, 0, sizeof(s));
    mf_evstream_init(&p, 4096);
    for (i = 0; i + 1 < sizeof(f1) - 1; i++) {
        ck_assert_int_eq(mf_evstream_feed(&p, f1 + i, 1, on_msg, &s), MF_OK);
    }
    ck_assert_int_eq(s.n, 0);
    ck_assert_uint_eq(mf_evstream_pending(&p), sizeof(f1) - 2);
    mf_evstream_free(&p);
}
END_TEST

static int
feed_copy(const char *frame, size_t n, size_t flip, size_t max)
{
    char buf[512];
    mf_evstream_t p;
    seen_t s;
    int rc;

    memcpy(buf, frame, n);
    if (flip < n) {
        buf[flip] ^= 0x01;
    }
    memset(&s, 0, sizeof(s));
    mf_evstream_init(&p, max);
    rc = mf_evstream_feed(&p, buf, n, on_msg, &s);
    ck_assert_uint_le(p.buf.cap, max > 0 ? max + 64 : 1 << 20);
    mf_evstream_free(&p);
    return rc == MF_OK && s.n == 1 ? MF_OK : MF_ERR;
}

START_TEST(corruption_refused)
{
    size_t n = sizeof(f1) - 1, i;

    ck_assert_int_eq(feed_copy(f1, n, n, 4096), MF_OK);
    for (i = 0; i < n; i++) {
        /* any flipped bit: prelude CRC, headers, payload or message CRC */
        ck_assert_int_eq(feed_copy(f1, n, i, 4096), MF_ERR);
    }
    /* larger than the limit: refused at the prelude */
    ck_assert_int_eq(feed_copy(f1, n, n, 64), MF_ERR);
}
END_TEST

START_TEST(bad_lengths)
{
    /* total 8 (< 16), headers longer than the message: CRCs right */
    unsigned char pre[12] = {0, 0, 0, 8, 0, 0, 0, 0};
    uint32_t c = mf_crc32(0, pre, 8);
    mf_evstream_t p;
    seen_t s;

    pre[8] = (unsigned char)(c >> 24);
    pre[9] = (unsigned char)(c >> 16);
    pre[10] = (unsigned char)(c >> 8);
    pre[11] = (unsigned char)c;
    memset(&s, 0, sizeof(s));
    mf_evstream_init(&p, 4096);
    ck_assert_int_eq(mf_evstream_feed(&p, (char *)pre, 12, on_msg, &s), MF_ERR);
    mf_evstream_free(&p);

    pre[3] = 32;
    pre[7] = 40;
    c = mf_crc32(0, pre, 8);
    pre[8] = (unsigned char)(c >> 24);
    pre[9] = (unsigned char)(c >> 16);
    pre[10] = (unsigned char)(c >> 8);
    pre[11] = (unsigned char)c;
    mf_evstream_init(&p, 4096);
    ck_assert_int_eq(mf_evstream_feed(&p, (char *)pre, 12, on_msg, &s), MF_ERR);
    mf_evstream_free(&p);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("evstream");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, crc32_check_value);
    tcase_add_test(tc, split_everywhere);
    tcase_add_test(tc, byte_at_a_time_partial);
    tcase_add_test(tc, corruption_refused);
    tcase_add_test(tc, bad_lengths);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
