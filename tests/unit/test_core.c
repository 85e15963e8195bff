/* Check suite for host/core/core.c: glob, masking, arena, buffers. */
#include "check_main.h"
#include <signal.h>
#include <stdlib.h>

#include "core/core.h"
#include "request/jscan.h"

/* api->edit_body_text's engine (request/jscan.c): edits of string
 * contents, escaped; the shifted index is the one a new scan makes. */
static mf_jscan_t
scan_of(const char *body)
{
    mf_jscan_t js = {.max_depth = 64, .max_values = 10000, .max_messages = 100};

    ck_assert_int_eq(mf_jscan_body(mf_str_from(body), &js), MF_OK);
    return js;
}

static char edited[4096];

/* the edited text, checked against a new scan of it; NULL when refused */
static const char *
edit(const char *body, const mf_body_edit_t *ed, size_t n)
{
    mf_jscan_t js = scan_of(body), out, again;
    long len = mf_jscan_edit_size(mf_str_from(body), ed, n);
    size_t i;

    if (len < 0) {
        return NULL;
    }
    ck_assert_int_lt(len, (long)sizeof(edited));
    mf_jscan_edit_apply(mf_str_from(body), &js, ed, n, edited, &out);
    edited[len] = '\0';
    again = scan_of(edited); /* still a JSON object within the limits */
    ck_assert_uint_eq(out.nmembers, again.nmembers);
    for (i = 0; i < out.nmembers; i++) {
        ck_assert(out.members[i].key.data == again.members[i].key.data);
        ck_assert_uint_eq(out.members[i].key.len, again.members[i].key.len);
        ck_assert(out.members[i].value.data == again.members[i].value.data);
        ck_assert_uint_eq(out.members[i].value.len, again.members[i].value.len);
    }
    ck_assert_int_eq(out.messages_ok, again.messages_ok);
    return edited;
}

#define ED(off, len, text)                                                     \
    {                                                                          \
        (off), (len), MF_STR(text)                                             \
    }

START_TEST(jscan_edits)
{
    const char *b = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                    "\"content\":\"mail a@b.io now\"}],\"n\":1}";
    size_t c = (size_t)(strstr(b, "a@b.io") - b);

    {
        mf_body_edit_t e[] = {ED(c, 6, "[EMAIL_1]")};

        ck_assert_str_eq(edit(b, e, 1),
                         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                         "\"content\":\"mail [EMAIL_1] now\"}],\"n\":1}");
    }
    {
        /* the whole contents, at both ends; the host escapes the text */
        mf_body_edit_t e[] = {ED(c - 5, 5, "q\"\\\n\x01"),
                              ED(c + 6, 4, "\xe4\xb8\xad")};

        ck_assert_str_eq(
            edit(b, e, 2),
            "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
            "\"content\":\"q\\\"\\\\\\n\\u0001a@b.io\xe4\xb8\xad\"}"
            "],\"n\":1}");
    }
    {
        /* two strings, the second value shifted */
        mf_body_edit_t e[] = {ED(10, 1, "longer model"), ED(c, 6, "")};

        ck_assert_ptr_nonnull(edit(b, e, 2));
        ck_assert(strstr(edited, "\"model\":\"longer model\"") != NULL);
        ck_assert(strstr(edited, "\"content\":\"mail  now\"") != NULL);
    }
    {
        mf_body_edit_t key[] = {ED(2, 3, "x")},  /* a key's contents */
            across[] = {ED(c, 12, "x")},         /* past the string */
            outside[] = {ED(c - 11, 2, "x")},    /* a quote and ':' */
            bad_utf8[] = {ED(c, 6, "\xe4\xb8")}, /* a cut character */
            order[] = {ED(c, 6, "x"), ED(c - 5, 2, "y")},
                       overlap[] = {ED(c, 6, "x"), ED(c + 3, 2, "y")};

        ck_assert_ptr_null(edit(b, key, 1));
        ck_assert_ptr_null(edit(b, across, 1));
        ck_assert_ptr_null(edit(b, outside, 1));
        ck_assert_ptr_null(edit(b, bad_utf8, 1));
        ck_assert_ptr_null(edit(b, order, 2));
        ck_assert_ptr_null(edit(b, overlap, 2));
    }
    {
        /* escapes and characters are never cut */
        const char *u = "{\"a\":\"x\\ny\\u00e9z\\ud83d\\ude00w\xc3\xa9v\"}";
        size_t s = 6; /* the contents' start */
        mf_body_edit_t in_esc[] = {ED(s + 2, 1, "")},
                       in_u[] = {ED(s + 5, 2, "")},
                       in_pair[] = {ED(s + 17, 6, "")},
                       in_char[] = {ED(s + 25, 1, "")},
                       whole[] = {ED(s + 1, 2, "-"), ED(s + 10, 13, "+")};

        ck_assert_ptr_null(edit(u, in_esc, 1));
        ck_assert_ptr_null(edit(u, in_u, 1));
        ck_assert_ptr_null(edit(u, in_pair, 1));
        ck_assert_ptr_null(edit(u, in_char, 1));
        ck_assert_str_eq(edit(u, whole, 2),
                         "{\"a\":\"x-y\\u00e9+w\xc3\xa9v\"}");
    }
}
END_TEST

START_TEST(glob)
{
    ck_assert(mf_glob_match("gpt-*", MF_STR("gpt-4o")));
    ck_assert(!mf_glob_match("gpt-*", MF_STR("o3")));
    ck_assert(mf_glob_match("o1*", MF_STR("o1")));
    ck_assert(mf_glob_match("a*b*c", MF_STR("axxbyyc")));
    ck_assert(!mf_glob_match("a*b*c", MF_STR("axxbyy")));
    ck_assert(mf_glob_match("q?n", MF_STR("qwn")));
}
END_TEST

START_TEST(str_has_control)
{
    ck_assert(!mf_str_has_control(MF_STR("gpt-4o")));
    ck_assert(!mf_str_has_control(MF_STR("")));
    ck_assert(!mf_str_has_control(MF_STR("mod\xc3\xa8le ../x?y#z")));
    ck_assert(mf_str_has_control(MF_STR("gpt-4o\r\nX: y")));
    ck_assert(mf_str_has_control(MF_STR("a\tb")));
    ck_assert(mf_str_has_control(MF_STR("a\x7f")));
    ck_assert(mf_str_has_control((mf_str_t){"a\0b", 3}));
}
END_TEST

START_TEST(mask)
{
    char out[64];

    mf_mask_secret(MF_STR("sk-abcdefghijklmnop1234"), out, sizeof(out));
    ck_assert_str_eq(out, "sk-...1234");
    mf_mask_secret(MF_STR("short"), out, sizeof(out));
    ck_assert_str_eq(out, "***");
    /* shorter than 20 bytes: nothing of it is shown, not even its length */
    mf_mask_secret(MF_STR("sk-aaaa-bbbb-cccc-d"), out, sizeof(out));
    ck_assert_str_eq(out, "***");
    mf_mask_secret(MF_STR("sk-aaaa-bbbb-cccc-dd"), out, sizeof(out));
    ck_assert_str_eq(out, "sk-...c-dd");
}
END_TEST

START_TEST(pool_and_buf)
{
    mf_pool_t *p = mf_pool_create(256);
    mf_buf_t b = {.limit = 8};
    char *big = mf_pool_alloc(p, 10000);
    int i;

    ck_assert_ptr_nonnull(big);
    memset(big, 1, 10000);
    for (i = 0; i < 100; i++) {
        ck_assert_ptr_nonnull(mf_pool_strndup(p, "hello", 5));
    }
    mf_pool_destroy(p);
    ck_assert_int_eq(mf_buf_try_append(&b, "12345678", 8), MF_OK);
    ck_assert_int_eq(mf_buf_try_append(&b, "9", 1), MF_ERR);
    mf_buf_consume(&b, 3);
    ck_assert_int_eq(memcmp(b.data, "45678", 5), 0);
    mf_buf_free(&b);
}
END_TEST

/* A try append past the limit fails and leaves the buffer as it was. */
START_TEST(buf_try_append_limit)
{
    mf_buf_t b = {.limit = 300};
    char fill[300];
    char *data;
    size_t cap;

    memset(fill, 'x', sizeof(fill));
    ck_assert_int_eq(mf_buf_try_append(&b, "abc", 3), MF_OK);
    data = b.data;
    cap = b.cap;
    ck_assert_int_eq(mf_buf_try_append(&b, fill, 298), MF_ERR);
    ck_assert_int_eq(mf_buf_try_append(&b, fill, SIZE_MAX), MF_ERR);
    ck_assert_ptr_eq(b.data, data);
    ck_assert_uint_eq(b.cap, cap);
    ck_assert_uint_eq(b.len, 3);
    ck_assert_int_eq(memcmp(b.data, "abc", 3), 0);
    ck_assert_int_eq(mf_buf_try_append(&b, fill, 297), MF_OK);
    ck_assert_uint_eq(b.len, 300);
    ck_assert_int_eq(memcmp(b.data, "abcxxx", 6), 0);
    mf_buf_free(&b);
}
END_TEST

/* The host's own appends grow without a check; printf past its stack
 * buffer formats in full. */
START_TEST(buf_append_grows)
{
    mf_buf_t b = {0};
    char fill[1000];

    memset(fill, 'y', sizeof(fill) - 1);
    fill[sizeof(fill) - 1] = '\0';
    mf_buf_append(&b, "a", 1);
    mf_buf_printf(&b, "<%s>", fill);
    ck_assert_uint_eq(b.len, 1 + 1 + 999 + 1);
    ck_assert_int_eq(b.data[0], 'a');
    ck_assert_int_eq(b.data[1], '<');
    ck_assert_int_eq(b.data[1000], 'y');
    ck_assert_int_eq(b.data[1001], '>');
    mf_buf_free(&b);
}
END_TEST

/* A host buffer passing its limit is a bug: it aborts, never truncates. */
START_TEST(buf_append_past_limit_aborts)
{
    mf_buf_t b = {.limit = 4};

    mf_buf_append(&b, "12345", 5);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, glob);
    tcase_add_test(tc, mask);
    tcase_add_test(tc, str_has_control);
    tcase_add_test(tc, jscan_edits);
    tcase_add_test(tc, pool_and_buf);
    tcase_add_test(tc, buf_try_append_limit);
    tcase_add_test(tc, buf_append_grows);
    tcase_add_test_raise_signal(tc, buf_append_past_limit_aborts, SIGABRT);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
