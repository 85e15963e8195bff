/* Check suite for host/http/sse.c: events split at every byte boundary. */
#include "check_main.h"
#include <stdlib.h>

#include "http/sse.h"

typedef struct {
    int n;
    char data[8][64];
    char event[8][32];
    size_t raw_total;
} seen_t;

static int
on_event(void *arg, const mf_sse_event_t *ev)
{
    seen_t *s = arg;

    ck_assert_int_lt(s->n, 8);
    snprintf(s->data[s->n], 64, "%.*s", (int)ev->data.len, ev->data.data);
    snprintf(s->event[s->n], 32, "%.*s", (int)ev->event.len, ev->event.data);
    s->raw_total += ev->raw.len;
    s->n++;
    return MF_OK;
}

static const char stream[] =
    "data: {\"a\":1}\n\n"
    ": keep-alive\n\n"
    "data:[DONE]\r\r"
    "event: message_start\r\ndata: line1\r\ndata: line2\r\n\r\n";

START_TEST(split_everywhere)
{
    size_t len = strlen(stream), cut;

    for (cut = 0; cut <= len; cut++) {
        mf_sse_parser_t p;
        seen_t s;

        memset(&s, 0, sizeof(s));
        mf_sse_parser_init(&p, 1024);
        ck_assert_int_eq(mf_sse_parser_feed(&p, stream, cut, on_event, &s),
                         MF_OK);
        ck_assert_int_eq(
            mf_sse_parser_feed(&p, stream + cut, len - cut, on_event, &s),
            MF_OK);
        ck_assert_int_eq(s.n, 4);
        ck_assert_str_eq(s.data[0], "{\"a\":1}");
        ck_assert_str_eq(s.data[1], "");
        ck_assert_str_eq(s.data[2], "[DONE]");
        ck_assert_str_eq(s.event[3], "message_start");
        ck_assert_str_eq(s.data[3], "line1\nline2");
        ck_assert_uint_eq(s.raw_total, len); /* raw bytes kept whole */
        ck_assert_uint_eq(mf_sse_parser_pending(&p), 0);
        mf_sse_parser_free(&p);
    }
}
END_TEST

START_TEST(empty_data_lines_kept)
{
    /* WHATWG: each data line appends its value and a LF; an empty first
     * line is a line too */
    static const char in[] = "data:\ndata: x\n\ndata: a\ndata:\n\n";
    mf_sse_parser_t p;
    seen_t s;

    memset(&s, 0, sizeof(s));
    mf_sse_parser_init(&p, 1024);
    ck_assert_int_eq(mf_sse_parser_feed(&p, in, strlen(in), on_event, &s),
                     MF_OK);
    ck_assert_int_eq(s.n, 2);
    ck_assert_str_eq(s.data[0], "\nx");
    ck_assert_str_eq(s.data[1], "a\n");
    mf_sse_parser_free(&p);
}
END_TEST

START_TEST(bounded)
{
    mf_sse_parser_t p;
    seen_t s;
    char big[600];

    memset(&s, 0, sizeof(s));
    memset(big, 'x', sizeof(big));
    mf_sse_parser_init(&p, 512);
    ck_assert_int_eq(mf_sse_parser_feed(&p, "data: ", 6, on_event, &s), MF_OK);
    ck_assert_int_eq(mf_sse_parser_feed(&p, big, sizeof(big), on_event, &s),
                     MF_ERR);
    mf_sse_parser_free(&p);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("sse");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, split_everywhere);
    tcase_add_test(tc, empty_data_lines_kept);
    tcase_add_test(tc, bounded);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
