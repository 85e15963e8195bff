/* Check suite for plugins/common/gov.c: GCRA arithmetic, calendar
 * periods (month ends, leap years, UTC offsets), lease expiry and
 * release-once, the key format, credentials and argument parsers. */
#include "check_main.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugins/common/gov.h"

#define MIN_US 60000000LL

START_TEST(gcra_burst_then_spacing)
{
    int64_t tat = 0, nt, retry, rem, reset, now = 1000 * MIN_US;
    int i;

    /* 3 per minute: a burst of 3 at once, then the fourth waits 20 s */
    for (i = 0; i < 3; i++) {
        ck_assert(gov_gcra(tat, now, 3, MIN_US, 1, &nt, &retry, &rem, &reset));
        tat = nt;
        ck_assert_int_eq(rem, 2 - i);
    }
    ck_assert(!gov_gcra(tat, now, 3, MIN_US, 1, &nt, &retry, &rem, &reset));
    ck_assert_int_eq(retry, 20000000);
    ck_assert_int_eq(nt, tat); /* a refusal takes nothing */
    /* exactly at the retry time it passes, one microsecond early not */
    ck_assert(!gov_gcra(tat, now + retry - 1, 3, MIN_US, 1, &nt, &retry, &rem,
                        &reset));
    ck_assert(
        gov_gcra(tat, now + 20000000, 3, MIN_US, 1, &nt, &retry, &rem, &reset));
    ck_assert_int_eq(reset, MIN_US); /* full again after a whole window */
}
END_TEST

START_TEST(gcra_tokens_and_oversize)
{
    int64_t nt, retry, rem, reset, now = 5 * MIN_US;

    /* 1000 tokens a minute: 600 then 400 fit, then 1 waits 60 ms */
    ck_assert(gov_gcra(0, now, 1000, MIN_US, 600, &nt, &retry, &rem, &reset));
    ck_assert_int_eq(rem, 400);
    ck_assert(gov_gcra(nt, now, 1000, MIN_US, 400, &nt, &retry, &rem, &reset));
    ck_assert_int_eq(rem, 0);
    ck_assert(!gov_gcra(nt, now, 1000, MIN_US, 1, &nt, &retry, &rem, &reset));
    ck_assert_int_eq(retry, 60000);
    /* a cost above the limit never fits */
    ck_assert(!gov_gcra(0, now, 1000, MIN_US, 1001, &nt, &retry, &rem, &reset));
    ck_assert_int_eq(retry, MIN_US);
    /* a bucket of 7 that refills at 7 a minute: tried every 0.6 s for
     * ten minutes, the burst of 7 and then one per 1/7 minute pass:
     * never more than 7 + 7 * 10 (rounding up the spacing never lets an
     * extra one through) */
    {
        int64_t tat = 0, t = now;
        int passed = 0, first = 0, i;

        for (i = 0; i < 1000; i++, t += MIN_US / 100) {
            if (gov_gcra(tat, t, 7, MIN_US, 1, &nt, &retry, &rem, &reset)) {
                tat = nt;
                passed++;
            }
            if (i == 99) {
                first = passed;
            }
        }
        ck_assert_int_eq(first, 13); /* 7 at once, 6 refilled in a minute */
        ck_assert_int_le(passed, 7 + 70);
        ck_assert_int_ge(passed, 7 + 69);
    }
}
END_TEST

static int64_t
utc(int y, int m, int d, int hh)
{
    struct tm t = {
        .tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = hh};

    return (int64_t)timegm(&t);
}

START_TEST(period_month_ends)
{
    int64_t s, e;

    gov_period_bounds(GOV_MONTH, 0, utc(2024, 1, 31, 23), &s, &e);
    ck_assert_int_eq(s, utc(2024, 1, 1, 0));
    ck_assert_int_eq(e, utc(2024, 2, 1, 0));
    /* February of a leap year, and of a year that is not */
    gov_period_bounds(GOV_MONTH, 0, utc(2024, 2, 29, 12), &s, &e);
    ck_assert_int_eq(e - s, 29 * 86400);
    gov_period_bounds(GOV_MONTH, 0, utc(2023, 2, 28, 12), &s, &e);
    ck_assert_int_eq(e - s, 28 * 86400);
    /* December rolls into the next year */
    gov_period_bounds(GOV_MONTH, 0, utc(2025, 12, 31, 23), &s, &e);
    ck_assert_int_eq(e, utc(2026, 1, 1, 0));
    /* the last second of a month is in it, the next is not */
    gov_period_bounds(GOV_MONTH, 0, utc(2024, 3, 1, 0) - 1, &s, &e);
    ck_assert_int_eq(s, utc(2024, 2, 1, 0));
    gov_period_bounds(GOV_MONTH, 0, utc(2024, 3, 1, 0), &s, &e);
    ck_assert_int_eq(s, utc(2024, 3, 1, 0));
}
END_TEST

START_TEST(period_time_zones)
{
    int64_t s, e;
    int off;

    /* 23:30 UTC on Jan 31 is Feb 1 in UTC+2: February's budget */
    ck_assert_int_eq(gov_tz_parse("+02:00", &off), MF_OK);
    ck_assert_int_eq(off, 7200);
    gov_period_bounds(GOV_MONTH, off, utc(2024, 1, 31, 23), &s, &e);
    ck_assert_int_eq(s, utc(2024, 2, 1, 0) - 7200);
    ck_assert_int_eq(e, utc(2024, 3, 1, 0) - 7200);
    /* and still January in UTC-05:30 */
    ck_assert_int_eq(gov_tz_parse("UTC-05:30", &off), MF_OK);
    ck_assert_int_eq(off, -(5 * 3600 + 1800));
    gov_period_bounds(GOV_DAY, off, utc(2024, 1, 1, 2), &s, &e);
    ck_assert_int_eq(s, utc(2023, 12, 31, 0) + 5 * 3600 + 1800);
    ck_assert_int_eq(e - s, 86400);
    /* weeks start on Monday: 2024-01-04 was a Thursday */
    gov_period_bounds(GOV_WEEK, 0, utc(2024, 1, 4, 10), &s, &e);
    ck_assert_int_eq(s, utc(2024, 1, 1, 0));
    ck_assert_int_eq(e, utc(2024, 1, 8, 0));
    /* before 1970 too */
    gov_period_bounds(GOV_WEEK, 0, utc(1969, 12, 31, 10), &s, &e);
    ck_assert_int_eq(s, utc(1969, 12, 29, 0));
    gov_period_bounds(GOV_TOTAL, 0, 12345, &s, &e);
    ck_assert_int_eq(s, 0);
    ck_assert_int_eq(e, INT64_MAX);
    ck_assert_int_eq(gov_tz_parse("Europe/Paris", &off), MF_ERR);
    ck_assert_int_eq(gov_tz_parse("+25:00", &off), MF_ERR);
    ck_assert_int_eq(gov_tz_parse("+02:", &off), MF_ERR);
    ck_assert_int_eq(gov_tz_parse("-0700", &off), MF_OK);
    ck_assert_int_eq(off, -25200);
}
END_TEST

START_TEST(lease_expiry_and_release_once)
{
    gov_leases_t ls = {0};
    int64_t retry, now = 1000000;

    ck_assert(gov_lease_take(&ls, now, 5000000, 2, 1, &retry));
    ck_assert(gov_lease_take(&ls, now + 1000000, 5000000, 2, 2, &retry));
    ck_assert(!gov_lease_take(&ls, now + 2000000, 5000000, 2, 3, &retry));
    ck_assert_int_eq(retry, 3000000); /* until lease 1 expires */
    /* lease 1 expired: a third fits; releasing 1 now is a no-op */
    ck_assert(gov_lease_take(&ls, now + 5000000, 5000000, 2, 3, &retry));
    ck_assert_int_eq(gov_lease_release(&ls, 1), 0);
    ck_assert_int_eq(gov_lease_release(&ls, 2), 1);
    ck_assert_int_eq(gov_lease_release(&ls, 2), 0); /* exactly once */
    ck_assert_int_eq(gov_leases_live(&ls, now + 5000000), 1);
    gov_leases_free(&ls);
}
END_TEST

START_TEST(keys_and_credentials)
{
    char key[GOV_KEY_LEN + 1];
    mf_str_t id, secret, out;

    snprintf(key, sizeof(key), "mf-%s-%s", "0123456789ab",
             "0123456789abcdef0123456789abcdef0123456789abcdef");
    ck_assert_int_eq(gov_key_parse((mf_str_t){key, strlen(key)}, &id, &secret),
                     MF_OK);
    ck_assert_int_eq(id.len, 12);
    ck_assert_int_eq(memcmp(id.data, "0123456789ab", 12), 0);
    key[5] = 'G';
    ck_assert_int_eq(gov_key_parse((mf_str_t){key, strlen(key)}, &id, &secret),
                     MF_ERR);
    ck_assert_int_eq(gov_key_parse(MF_STR("mf--"), &id, &secret), MF_ERR);
    ck_assert_int_eq(gov_credential(MF_STR("Bearer  abc "), MF_STR_NULL,
                                    MF_STR_NULL, MF_STR_NULL, &out),
                     MF_OK);
    ck_assert_int_eq(out.len, 3);
    ck_assert_int_eq(gov_credential(MF_STR("Basic xyz"), MF_STR("k2"),
                                    MF_STR_NULL, MF_STR_NULL, &out),
                     MF_OK);
    ck_assert_int_eq(memcmp(out.data, "k2", 2), 0);
    ck_assert_int_eq(gov_credential(MF_STR_NULL, MF_STR_NULL, MF_STR_NULL,
                                    MF_STR("/v1beta/x?alt=sse&key=g3"), &out),
                     MF_OK);
    ck_assert_int_eq(memcmp(out.data, "g3", 2), 0);
    ck_assert_int_eq(gov_credential(MF_STR("Bearer "), MF_STR_NULL, MF_STR_NULL,
                                    MF_STR("/v1?nokey=1"), &out),
                     MF_ERR);
    /* a query alone, as the request keeps it (no '?') */
    ck_assert_int_eq(gov_credential(MF_STR_NULL, MF_STR_NULL, MF_STR_NULL,
                                    MF_STR("key=g4&alt=sse"), &out),
                     MF_OK);
    ck_assert_int_eq(out.len, 2);
    ck_assert_int_eq(memcmp(out.data, "g4", 2), 0);
    ck_assert_int_eq(gov_credential(MF_STR_NULL, MF_STR_NULL, MF_STR_NULL,
                                    MF_STR("alt=sse&monkey=1"), &out),
                     MF_ERR);
    {
        char q[64];

        ck_assert_uint_eq(gov_query_without_key(
                              MF_STR("alt=sse&key=s3cr3t&x=1"), q, sizeof(q)),
                          11);
        ck_assert_str_eq(q, "alt=sse&x=1");
        gov_query_without_key(MF_STR("key=a&key=b"), q, sizeof(q));
        ck_assert_str_eq(q, "");
        gov_query_without_key(MF_STR("monkey=1&key"), q, sizeof(q));
        ck_assert_str_eq(q, "monkey=1");
    }
}
END_TEST

START_TEST(amounts_and_costs)
{
    int64_t a;
    int usd, has = 0;
    gov_period_t p = GOV_MONTH;
    gov_price_t price = {2.5, 10, 1.25};

    ck_assert_int_eq(gov_amount_parse("20usd/day", &a, &usd, &p, &has), MF_OK);
    ck_assert_int_eq(a, 20000000);
    ck_assert(usd && has && p == GOV_DAY);
    ck_assert_int_eq(gov_amount_parse("$0.5", &a, &usd, NULL, NULL), MF_OK);
    ck_assert_int_eq(a, 500000);
    ck_assert_int_eq(gov_amount_parse("5000tokens", &a, &usd, NULL, NULL),
                     MF_OK);
    ck_assert(!usd && a == 5000);
    ck_assert_int_eq(gov_amount_parse("1.5tokens", &a, &usd, NULL, NULL),
                     MF_ERR);
    ck_assert_int_eq(gov_amount_parse("20eur", &a, &usd, NULL, NULL), MF_ERR);
    ck_assert_int_eq(gov_amount_parse("20usd/year", &a, &usd, NULL, NULL),
                     MF_ERR);
    ck_assert_int_eq(gov_duration_parse("1h", &a), MF_OK);
    ck_assert_int_eq(a, 3600000);
    ck_assert_int_eq(gov_duration_parse("1y", &a), MF_ERR);
    /* 1000 prompt (400 cached) + 100 completion:
     * 600 * 2.5 + 400 * 1.25 + 100 * 10 micro-USD */
    ck_assert_int_eq(gov_cost(&price, 1000, 400, 100), 1500 + 500 + 1000);
    /* rounded up, never down to 0 */
    ck_assert_int_eq(gov_cost(&(gov_price_t){0.1, 0.1, 0}, 1, 0, 0), 1);
}
END_TEST

/* RFC 4231 test cases 1, 2 and 6 (a key longer than the block) */
START_TEST(hmac_sha256_vectors)
{
    unsigned char key[131], out[32];
    char hex[65];

    memset(key, 0x0b, 20);
    gov_hmac(key, 20, "Hi There", 8, out);
    gov_hex(out, 32, hex);
    ck_assert_str_eq(
        hex,
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    gov_hmac((const unsigned char *)"Jefe", 4, "what do ya want for nothing?",
             28, out);
    gov_hex(out, 32, hex);
    ck_assert_str_eq(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    memset(key, 0xaa, sizeof(key));
    gov_hmac(key, sizeof(key),
             "Test Using Larger Than Block-Size Key - Hash Key First", 54, out);
    gov_hex(out, 32, hex);
    ck_assert_str_eq(
        hex,
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    gov_sha256("abc", 3, out);
    gov_hex(out, 32, hex);
    ck_assert_str_eq(
        hex,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
END_TEST

START_TEST(map_many)
{
    gov_map_t *m = gov_map_new();
    char k[32];
    int i, *v;

    for (i = 0; i < 100000; i++) {
        v = malloc(sizeof(int));
        *v = i;
        snprintf(k, sizeof(k), "consumer-%d", i);
        ck_assert_ptr_null(gov_map_put(m, (mf_str_t){k, strlen(k)}, v));
    }
    ck_assert_int_eq(gov_map_count(m), 100000);
    v = gov_map_get(m, MF_STR("consumer-77777"));
    ck_assert_int_eq(*v, 77777);
    free(gov_map_del(m, MF_STR("consumer-77777")));
    ck_assert_ptr_null(gov_map_get(m, MF_STR("consumer-77777")));
    gov_map_free(m, free);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("gov");
    TCase *tc = tcase_create("gov");

    tcase_add_test(tc, gcra_burst_then_spacing);
    tcase_add_test(tc, gcra_tokens_and_oversize);
    tcase_add_test(tc, period_month_ends);
    tcase_add_test(tc, period_time_zones);
    tcase_add_test(tc, lease_expiry_and_release_once);
    tcase_add_test(tc, keys_and_credentials);
    tcase_add_test(tc, amounts_and_costs);
    tcase_add_test(tc, map_many);
    tcase_add_test(tc, hmac_sha256_vectors);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 1);
}
