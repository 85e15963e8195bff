/* Check suite for host/core/core.c: glob, masking, arena, buffers. */
#include "check_main.h"
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
    ck_assert_int_eq(mf_buf_append(&b, "12345678", 8), MF_OK);
    ck_assert_int_eq(mf_buf_append(&b, "9", 1), MF_ERR);
    mf_buf_consume(&b, 3);
    ck_assert_int_eq(memcmp(b.data, "45678", 5), 0);
    mf_buf_free(&b);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, glob);
    tcase_add_test(tc, mask);
    tcase_add_test(tc, pool_and_buf);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
