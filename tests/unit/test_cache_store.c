/* Check suite for plugins/cache/cache-store.c: the byte bound held under
 * 100,000 distinct entries (by its own count and by the heap), LRU order,
 * TTL, purge filters, and an entry outliving its eviction while read. */
#include "check_main.h"
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/cache/cache-store.h"

static const mf_usage_t usage = {10, 5, 15, -1, -1, 0};

static cs_entry_t *
entry(int i, const char *scope, int64_t now, int64_t ttl, size_t size)
{
    char key[65], *body = malloc(size);
    cs_entry_t *e;

    snprintf(key, sizeof(key), "%064d", i);
    memset(body, 'a', size);
    e = cs_entry_new(key, scope, "gpt-4o", now, now + ttl, &usage, 0,
                     (mf_str_t){body, size}, NULL, 0);
    free(body);
    return e;
}

static cs_entry_t *
get(cs_store_t *s, int i, int64_t now)
{
    char key[65];

    snprintf(key, sizeof(key), "%064d", i);
    return cs_store_get(s, key, now);
}

START_TEST(bound_under_100k_entries)
{
    const size_t max = 8u * 1024 * 1024;
    cs_store_t *s = cs_store_new(max);
    struct mallinfo2 before = mallinfo2(), after;
    cs_entry_t *e;
    cs_stats_t st;
    int i;

    for (i = 0; i < 100000; i++) {
        ck_assert_int_eq(cs_store_put(s, entry(i, "global", 0, 60000, 700)),
                         MF_OK);
        if (i % 10000 == 0) {
            cs_store_stats(s, &st);
            ck_assert_uint_le(st.bytes, max);
        }
    }
    cs_store_stats(s, &st);
    ck_assert_uint_le(st.bytes, max);
    ck_assert_uint_gt(st.entries, 1000);
    ck_assert_uint_lt(st.entries, 100000);
    ck_assert_uint_eq(st.evicted, 100000 - st.entries);
    /* the heap agrees with the count: what the store holds stays within
     * its bound plus the allocator's slack */
    after = mallinfo2();
    ck_assert_uint_lt(after.uordblks - before.uordblks, max + max / 2);
    /* the newest are there, the oldest went */
    ck_assert_ptr_null(get(s, 0, 1));
    e = get(s, 99999, 1);
    ck_assert_ptr_nonnull(e);
    cs_entry_release(e);
    cs_store_free(s);
}
END_TEST

START_TEST(lru_order_and_ttl)
{
    cs_entry_t *probe = entry(0, "g", 0, 1, 100);
    cs_store_t *s = cs_store_new(3 * probe->bytes);
    cs_entry_t *e;
    cs_stats_t st;

    cs_entry_release(probe);
    ck_assert_int_eq(cs_store_put(s, entry(1, "g", 0, 1000, 100)), MF_OK);
    ck_assert_int_eq(cs_store_put(s, entry(2, "g", 0, 1000, 100)), MF_OK);
    ck_assert_int_eq(cs_store_put(s, entry(3, "g", 0, 1000, 100)), MF_OK);
    e = get(s, 1, 10); /* 1 is now the most recent: 2 goes next */
    ck_assert_ptr_nonnull(e);
    cs_entry_release(e);
    ck_assert_int_eq(cs_store_put(s, entry(4, "g", 0, 1000, 100)), MF_OK);
    ck_assert_ptr_null(get(s, 2, 10));
    e = get(s, 1, 10);
    ck_assert_ptr_nonnull(e);
    cs_entry_release(e);
    /* expired at its time */
    ck_assert_ptr_null(get(s, 3, 1000));
    cs_store_stats(s, &st);
    ck_assert_uint_eq(st.expired, 1);
    ck_assert_uint_eq(st.entries, 2);
    /* an entry larger than the whole store is refused */
    ck_assert_int_eq(cs_store_put(s, entry(5, "g", 0, 1000, 100000)), MF_ERR);
    cs_store_free(s);
}
END_TEST

START_TEST(purge_filters_and_readers)
{
    cs_store_t *s = cs_store_new(1 << 20);
    cs_entry_t *held;

    cs_store_put(s, entry(1, "group:red", 0, 1000, 10));
    cs_store_put(s, entry(2, "group:red|ns:p1", 0, 1000, 10));
    cs_store_put(s, entry(3, "group:redder", 0, 1000, 10));
    cs_store_put(s, entry(4, "group:blue", 0, 1000, 10));
    held = get(s, 2, 1);
    /* a scope takes its namespaces, not a scope it is a prefix of */
    ck_assert_uint_eq(cs_store_purge(s, "group:red", NULL, NULL), 2);
    ck_assert_ptr_null(get(s, 1, 1));
    /* the purged entry a reader holds is still whole */
    ck_assert_str_eq(held->scope, "group:red|ns:p1");
    ck_assert_uint_eq(held->body.len, 10);
    cs_entry_release(held);
    ck_assert_uint_eq(cs_store_purge(s, NULL, "other-model", NULL), 0);
    ck_assert_uint_eq(cs_store_purge(s, NULL, "gpt-4o", NULL), 2);
    cs_store_put(s, entry(5, "global", 0, 1000, 10));
    ck_assert_uint_eq(
        cs_store_purge(s, NULL, NULL,
                       "0000000000000000000000000000000000000000000000000000"
                       "000000000005"),
        1);
    cs_store_free(s);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("cache_store");
    TCase *tc = tcase_create("cache_store");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bound_under_100k_entries);
    tcase_add_test(tc, lru_order_and_ttl);
    tcase_add_test(tc, purge_filters_and_readers);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 1);
}
