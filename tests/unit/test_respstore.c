/* Check suite for host/proto/respstore.c: put, get, replace, delete, the
 * owner, the count and byte bounds (oldest evicted first), TTL, threads. */
#include "check_main.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "proto/respstore.h"

static void
clear(const char *const *ids)
{
    for (; *ids != NULL; ids++) {
        (void)mf_respstore_delete(*ids, NULL);
    }
}

START_TEST(put_get_replace_delete)
{
    char *v;

    ck_assert_int_eq(
        mf_respstore_put("a", NULL, MF_STR("one"), 10, 1000, 60000), MF_OK);
    v = mf_respstore_get("a", NULL);
    ck_assert_str_eq(v, "one");
    free(v);
    ck_assert_int_eq(
        mf_respstore_put("a", NULL, MF_STR("two"), 10, 1000, 60000), MF_OK);
    ck_assert_uint_eq(mf_respstore_count(), 1);
    v = mf_respstore_get("a", NULL);
    ck_assert_str_eq(v, "two");
    free(v);
    ck_assert_int_eq(mf_respstore_delete("a", NULL), 1);
    ck_assert_int_eq(mf_respstore_delete("a", NULL), 0);
    ck_assert_ptr_null(mf_respstore_get("a", NULL));
    ck_assert_uint_eq(mf_respstore_count(), 0);
}
END_TEST

/* An entry keeps its owner; a delete for another owner leaves it. */
START_TEST(owner_kept_and_checked)
{
    char *v, *owner;

    ck_assert_int_eq(
        mf_respstore_put("o", "alice", MF_STR("hers"), 10, 1000, 60000), MF_OK);
    v = mf_respstore_get("o", &owner);
    ck_assert_str_eq(v, "hers");
    ck_assert_str_eq(owner, "alice");
    free(v);
    free(owner);
    ck_assert_int_eq(mf_respstore_delete("o", "bob"), 0);
    ck_assert_int_eq(mf_respstore_delete("o", ""), 0);
    v = mf_respstore_get("o", NULL);
    ck_assert_str_eq(v, "hers");
    free(v);
    ck_assert_int_eq(mf_respstore_delete("o", "alice"), 1);
    ck_assert_ptr_null(mf_respstore_get("o", &owner));
    ck_assert_ptr_null(owner);
    /* anonymous: owner "" */
    mf_respstore_put("n", NULL, MF_STR("x"), 10, 1000, 60000);
    v = mf_respstore_get("n", &owner);
    ck_assert_str_eq(owner, "");
    free(v);
    free(owner);
    ck_assert_int_eq(mf_respstore_delete("n", "alice"), 0);
    ck_assert_int_eq(mf_respstore_delete("n", ""), 1);
}
END_TEST

START_TEST(bounds_evict_oldest)
{
    static const char *const ids[] = {"e1", "e2", "e3", "e4", "big", NULL};
    char *v;

    /* count: the third put evicts the first */
    mf_respstore_put("e1", NULL, MF_STR("1111"), 2, 1000, 60000);
    mf_respstore_put("e2", NULL, MF_STR("2222"), 2, 1000, 60000);
    mf_respstore_put("e3", NULL, MF_STR("3333"), 2, 1000, 60000);
    ck_assert_ptr_null(mf_respstore_get("e1", NULL));
    v = mf_respstore_get("e2", NULL);
    ck_assert_ptr_nonnull(v);
    free(v);
    ck_assert_uint_eq(mf_respstore_count(), 2);
    /* bytes: 4 + 4 + 4 > 10 evicts e2 */
    mf_respstore_put("e4", NULL, MF_STR("4444"), 10, 10, 60000);
    ck_assert_ptr_null(mf_respstore_get("e2", NULL));
    v = mf_respstore_get("e3", NULL);
    ck_assert_ptr_nonnull(v);
    free(v);
    /* a value over max_bytes is not kept, and evicts nothing */
    ck_assert_int_eq(
        mf_respstore_put("big", NULL, MF_STR("0123456789ab"), 10, 10, 60000),
        MF_ERR);
    ck_assert_ptr_null(mf_respstore_get("big", NULL));
    ck_assert_uint_eq(mf_respstore_count(), 2);
    /* max_entries 0 keeps nothing */
    ck_assert_int_eq(mf_respstore_put("e1", NULL, MF_STR("x"), 0, 10, 60000),
                     MF_ERR);
    clear(ids);
    ck_assert_uint_eq(mf_respstore_count(), 0);
}
END_TEST

START_TEST(ttl)
{
    ck_assert_int_eq(
        mf_respstore_put("t", NULL, MF_STR("soon gone"), 10, 1000, 30), MF_OK);
    usleep(60000);
    ck_assert_ptr_null(mf_respstore_get("t", NULL));
    ck_assert_uint_eq(mf_respstore_count(), 0); /* dropped when met */
    /* an expired entry is dropped by the next put */
    mf_respstore_put("t1", NULL, MF_STR("x"), 10, 1000, 30);
    usleep(60000);
    mf_respstore_put("t2", NULL, MF_STR("y"), 10, 1000, 60000);
    ck_assert_uint_eq(mf_respstore_count(), 1);
    ck_assert_int_eq(mf_respstore_delete("t2", NULL), 1);
}
END_TEST

static void *
churn(void *arg)
{
    int t = (int)(intptr_t)arg, i;
    char id[32];

    for (i = 0; i < 20000; i++) {
        char *v;

        snprintf(id, sizeof(id), "t%d-%d", t, i % 300);
        mf_respstore_put(id, NULL, MF_STR("value"), 500, 1 << 20, 60000);
        v = mf_respstore_get(id, NULL);
        free(v);
        if (i % 7 == 0) {
            (void)mf_respstore_delete(id, NULL);
        }
    }
    return NULL;
}

START_TEST(threads)
{
    pthread_t th[4];
    int i;

    for (i = 0; i < 4; i++) {
        pthread_create(&th[i], NULL, churn, (void *)(intptr_t)i);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    ck_assert_uint_le(mf_respstore_count(), 500);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("respstore");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, put_get_replace_delete);
    tcase_add_test(tc, owner_kept_and_checked);
    tcase_add_test(tc, bounds_evict_oldest);
    tcase_add_test(tc, ttl);
    tcase_add_test(tc, threads);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 1);
}
