/* Check suite for host/core/core.c: glob, masking, arena, buffers. */
#include "check_main.h"
#include <signal.h>
#include <stdlib.h>

#include "core/core.h"

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
    tcase_add_test(tc, pool_and_buf);
    tcase_add_test(tc, buf_try_append_limit);
    tcase_add_test(tc, buf_append_grows);
    tcase_add_test_raise_signal(tc, buf_append_past_limit_aborts, SIGABRT);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
