/* Check suite for host/core/shdict.c: values, TTL, incr across threads. */
#include "check_main.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/shdict.h"

START_TEST(set_get_delete_ttl)
{
    char buf[32];
    int n;

    ck_assert_int_eq(mf_shdict_set(MF_STR("k"), MF_STR("value"), 0), MF_OK);
    n = mf_shdict_get(MF_STR("k"), buf, sizeof(buf));
    ck_assert_int_eq(n, 5);
    ck_assert_int_eq(memcmp(buf, "value", 5), 0);
    ck_assert_int_eq(mf_shdict_set(MF_STR("t"), MF_STR("x"), 30), MF_OK);
    ck_assert_int_eq(mf_shdict_get(MF_STR("t"), buf, sizeof(buf)), 1);
    usleep(60000);
    ck_assert_int_eq(mf_shdict_get(MF_STR("t"), buf, sizeof(buf)), MF_ERR);
    ck_assert_int_eq(mf_shdict_delete(MF_STR("k")), MF_OK);
    ck_assert_int_eq(mf_shdict_get(MF_STR("k"), buf, sizeof(buf)), MF_ERR);
}
END_TEST

static void *
incr_many(void *arg)
{
    int i;

    (void)arg;
    for (i = 0; i < 10000; i++) {
        mf_shdict_incr(MF_STR("counter"), 1, 0, NULL);
    }
    return NULL;
}

START_TEST(incr_threads)
{
    pthread_t t[4];
    int64_t v;
    int i;

    for (i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, incr_many, NULL);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    ck_assert_int_eq(mf_shdict_incr(MF_STR("counter"), 0, 0, &v), MF_OK);
    ck_assert_int_eq(v, 40000);
    ck_assert_int_eq(mf_shdict_set(MF_STR("s"), MF_STR("abc"), 0), MF_OK);
    ck_assert_int_eq(mf_shdict_incr(MF_STR("s"), 1, 0, &v), MF_ERR);
    /* the stored text of negative, zero and extreme values */
    {
        char buf[32];

        ck_assert_int_eq(mf_shdict_incr(MF_STR("neg"), -7, 0, &v), MF_OK);
        ck_assert_int_eq(mf_shdict_get(MF_STR("neg"), buf, sizeof(buf)), 2);
        ck_assert_mem_eq(buf, "-7", 2);
        ck_assert_int_eq(mf_shdict_incr(MF_STR("neg"), 7, 0, &v), MF_OK);
        ck_assert_int_eq(mf_shdict_get(MF_STR("neg"), buf, sizeof(buf)), 1);
        ck_assert_mem_eq(buf, "0", 1);
        ck_assert_int_eq(mf_shdict_incr(MF_STR("min"), INT64_MIN, 0, &v),
                         MF_OK);
        ck_assert_int_eq(mf_shdict_get(MF_STR("min"), buf, sizeof(buf)), 20);
        ck_assert_mem_eq(buf, "-9223372036854775808", 20);
        ck_assert_int_eq(mf_shdict_incr(MF_STR("max"), INT64_MAX, 0, &v),
                         MF_OK);
        ck_assert_int_eq(mf_shdict_get(MF_STR("max"), buf, sizeof(buf)), 19);
        ck_assert_mem_eq(buf, "9223372036854775807", 19);
    }
}
END_TEST

START_TEST(grow)
{
    char key[32], buf[32];
    int i;

    for (i = 0; i < 20000; i++) {
        int n = snprintf(key, sizeof(key), "key%d", i);

        ck_assert_int_eq(mf_shdict_set((mf_str_t){key, (size_t)n},
                                       (mf_str_t){key, (size_t)n}, 0),
                         MF_OK);
    }
    ck_assert_int_eq(mf_shdict_get(MF_STR("key12345"), buf, sizeof(buf)), 8);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("shdict");
    TCase *tc = tcase_create("core");
    int rc;

    mf_shdict_init();
    tcase_add_test(tc, set_get_delete_ttl);
    tcase_add_test(tc, incr_threads);
    tcase_add_test(tc, grow);
    suite_add_tcase(s, tc);
    rc = mf_check_run(s, 1);
    mf_shdict_free();
    return rc;
}
