/* Check suite for plugins/common/price.c: which entry prices a model
 * (exact name first, then the longest glob), each token kind at its own
 * price, tiers by prompt size, the per-request fee, rounding up to a
 * micro-USD, and the record of a request (priced, unpriced, no usage). */
#include "check_main.h"
#include <stddef.h>
#include <string.h>

#include "plugins/common/price.h"

static json_t *
prices(void)
{
    return json_loads(
        "{\"gpt-4o\": {\"input\": 2.5, \"output\": 10, \"cache_read\": 1.25},"
        " \"gpt-*\": {\"input\": 1, \"output\": 2},"
        " \"gpt-4o-*\": {\"input\": 0.15, \"output\": 0.6},"
        " \"o3\": {\"input\": 2, \"output\": 8, \"reasoning\": 20, "
        "\"request\": 0.001},"
        " \"gemini-2.5-pro\": {\"input\": 1.25, \"output\": 10, \"tiers\": "
        "[{\"above\": 200000, \"input\": 2.5, \"output\": 15}]},"
        " \"claude-*\": {\"input\": 3, \"output\": 15, \"cache_read\": 0.3, "
        "\"cache_write\": 3.75}}",
        0, NULL);
}

START_TEST(lookup_exact_then_longest_glob)
{
    json_t *p = prices();
    price_t x;

    ck_assert_ptr_nonnull(price_find(p, MF_STR("gpt-4o"), &x));
    ck_assert(x.input == 2.5);
    /* "gpt-4o-*" is longer than "gpt-*" */
    ck_assert_ptr_nonnull(price_find(p, MF_STR("gpt-4o-mini"), &x));
    ck_assert(x.input == 0.15);
    ck_assert_ptr_nonnull(price_find(p, MF_STR("gpt-3.5"), &x));
    ck_assert(x.input == 1);
    ck_assert_ptr_null(price_find(p, MF_STR("llama-3"), &x));
    ck_assert_ptr_null(price_find(p, MF_STR(""), &x));
    ck_assert_ptr_null(price_find(NULL, MF_STR("gpt-4o"), &x));
    ck_assert(price_glob("a*b*c", MF_STR("aXXbYYc")));
    ck_assert(!price_glob("a*b*c", MF_STR("aXXbYY")));
    ck_assert(price_glob("*", MF_STR("")));
    json_decref(p);
}
END_TEST

START_TEST(kinds_tiers_fees)
{
    json_t *p = prices();
    price_t x;

    /* 1000 prompt (100 cached) + 500 out at gpt-4o:
     * 900 * 2.5 + 100 * 1.25 + 500 * 10 = 7375 micro-USD */
    price_find(p, MF_STR("gpt-4o"), &x);
    ck_assert_int_eq(price_cost(&x, 1000, 100, 0, 500, 0), 7375);
    /* claude: 1000 prompt = 600 plain + 100 read + 300 written */
    price_find(p, MF_STR("claude-3-5-sonnet"), &x);
    ck_assert_int_eq(price_cost(&x, 1000, 100, 300, 0, 0), 600 * 3 + 30 + 1125);
    /* o3: reasoning at its own price, plus 0.001 USD a request */
    price_find(p, MF_STR("o3"), &x);
    ck_assert_int_eq(price_cost(&x, 100, 0, 0, 50, 40),
                     200 + 10 * 8 + 40 * 20 + 1000);
    ck_assert_int_eq(price_cost(&x, 0, 0, 0, 0, 0), 1000);
    /* gemini: the tier's prices from 200,001 prompt tokens on */
    price_find(p, MF_STR("gemini-2.5-pro"), &x);
    ck_assert_int_eq(x.ntiers, 1);
    ck_assert_int_eq(price_cost(&x, 200000, 0, 0, 1000, 0), 250000 + 10000);
    ck_assert_int_eq(price_cost(&x, 200001, 0, 0, 1000, 0),
                     (int64_t)(200001 * 2.5 + 0.5) + 15000);
    /* rounded up; unknown counts are 0; a breakdown past the prompt is
     * ignored */
    price_find(p, MF_STR("gpt-4o-mini"), &x);
    ck_assert_int_eq(price_cost(&x, 1, 0, 0, 0, 0), 1);
    ck_assert_int_eq(price_cost(&x, -1, -1, -1, -1, -1), 0);
    price_find(p, MF_STR("gpt-4o"), &x);
    ck_assert_int_eq(price_cost(&x, 10, 20, 0, 0, 0), 25);
    json_decref(p);
}
END_TEST

START_TEST(a_request_record)
{
    json_t *p = prices();
    mf_req_info_t i;
    int64_t cost;

    memset(&i, 0, sizeof(i));
    i.size = sizeof(i);
    i.cache_write_tokens = -1;
    i.usage = (mf_usage_t){-1, -1, -1, -1, -1, 0};
    i.model = MF_STR("gpt-4o");
    ck_assert_int_eq(price_request(p, &i, &cost), -1); /* no usage */
    i.usage = (mf_usage_t){1000, 500, 1500, 100, 0, 0};
    ck_assert_int_eq(price_request(p, &i, &cost), 1);
    ck_assert_int_eq(cost, 7375);
    /* an alias the client asked for: priced by the upstream model */
    i.model = MF_STR("fast");
    i.upstream_model = MF_STR("gpt-4o");
    ck_assert_int_eq(price_request(p, &i, &cost), 1);
    ck_assert_int_eq(cost, 7375);
    i.model = MF_STR("llama-3");
    i.upstream_model = MF_STR("llama-3");
    ck_assert_int_eq(price_request(p, &i, &cost), 0);
    ck_assert_int_eq(cost, 0);
    json_decref(p);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("price");
    TCase *tc = tcase_create("price");

    tcase_add_test(tc, lookup_exact_then_longest_glob);
    tcase_add_test(tc, kinds_tiers_fees);
    tcase_add_test(tc, a_request_record);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 1);
}
