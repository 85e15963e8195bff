/* Check suite for host/core/metrics.c: declaring, per-worker shards
 * summed, the series cap, label values kept safe, the text formats. */
#include "check_main.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"

static mf_metric_t *
declare(mf_metric_type_t type, const char *name, const char *const *labels,
        size_t max_series)
{
    static const double buckets[] = {0.1, 1, 10};
    mf_metric_def_t d = {.size = sizeof(d),
                         .type = type,
                         .name = name,
                         .help = "help\nwith a line break",
                         .labels = labels,
                         .buckets = buckets,
                         .nbuckets = 3,
                         .max_series = max_series};
    char err[256];

    return mf_metric_declare(&d, err, sizeof(err));
}

static const char *const one_label[] = {"model", NULL};

START_TEST(declare_rules)
{
    static const char *const le[] = {"le", NULL};
    mf_metric_t *a = declare(MF_METRIC_COUNTER, "t_a_total", one_label, 0);

    ck_assert_ptr_nonnull(a);
    /* the same definition again: the same metric */
    ck_assert_ptr_eq(declare(MF_METRIC_COUNTER, "t_a_total", one_label, 0), a);
    /* another type or labels under the name: refused */
    ck_assert_ptr_null(declare(MF_METRIC_COUNTER, "t_a_total", NULL, 0));
    ck_assert_ptr_null(declare(MF_METRIC_GAUGE, "t_a_total", one_label, 0));
    /* names */
    ck_assert_ptr_null(declare(MF_METRIC_COUNTER, "t_no_suffix", NULL, 0));
    ck_assert_ptr_null(declare(MF_METRIC_GAUGE, "t_g_total", NULL, 0));
    ck_assert_ptr_null(declare(MF_METRIC_GAUGE, "9bad", NULL, 0));
    ck_assert_ptr_null(declare(MF_METRIC_HISTOGRAM, "t_h", le, 0));
}
END_TEST

typedef struct {
    mf_metric_t *c;
    mf_metric_t *h;
    int shard;
} job_t;

static void *
hammer(void *arg)
{
    job_t *j = arg;
    mf_str_t v = MF_STR("gpt-4o");
    int i;

    mf_metrics_thread_shard(j->shard);
    for (i = 0; i < 100000; i++) {
        mf_metric_add(j->c, &v, 1, 1);
        mf_metric_observe(j->h, &v, 1, 0.5, MF_STR_NULL);
    }
    return NULL;
}

START_TEST(shards_are_summed)
{
    job_t jobs[4];
    pthread_t t[4];
    mf_str_t v = MF_STR("gpt-4o");
    int i;

    for (i = 0; i < 4; i++) {
        jobs[i].c = declare(MF_METRIC_COUNTER, "t_sum_total", one_label, 0);
        jobs[i].h = declare(MF_METRIC_HISTOGRAM, "t_sum_seconds", one_label, 0);
        jobs[i].shard = i < 3 ? i : -1; /* the last: a thread of no worker */
        pthread_create(&t[i], NULL, hammer, &jobs[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    ck_assert_double_eq(mf_metric_value(jobs[0].c, &v, 1), 400000);
    ck_assert_double_eq(mf_metric_value(jobs[0].h, &v, 1), 400000);
    ck_assert_uint_eq(mf_metric_nseries(jobs[0].c), 1);
}
END_TEST

START_TEST(series_cap_and_values)
{
    mf_metric_t *m = declare(MF_METRIC_GAUGE, "t_cap", one_label, 3);
    mf_str_t v;
    char name[16];
    int i;

    for (i = 0; i < 10; i++) {
        int n = snprintf(name, sizeof(name), "m%d", i);

        v = (mf_str_t){name, (size_t)n};
        ck_assert_int_eq(mf_metric_add(m, &v, 1, 1), i < 3 ? MF_OK : MF_ERR);
    }
    ck_assert_uint_eq(mf_metric_nseries(m), 3);
    ck_assert_uint_eq(mf_metric_dropped(m), 7);
    /* a gauge set, then added to */
    v = MF_STR("m0");
    ck_assert_int_eq(mf_metric_set(m, &v, 1, 10), MF_OK);
    ck_assert_double_eq(mf_metric_value(m, &v, 1), 11);
    /* wrong count of values, wrong call for the type */
    ck_assert_int_eq(mf_metric_add(m, NULL, 0, 1), MF_ERR);
    ck_assert_int_eq(mf_metric_observe(m, &v, 1, 1, MF_STR_NULL), MF_ERR);
}
END_TEST

START_TEST(series_by_number)
{
    mf_metric_t *c = declare(MF_METRIC_COUNTER, "t_num_total", one_label, 2);
    mf_metric_t *h =
        declare(MF_METRIC_HISTOGRAM, "t_num_seconds", one_label, 0);
    mf_str_t a = MF_STR("a"), b = MF_STR("b"), x = MF_STR("x");
    int sa = mf_metric_series(c, &a, 1), sh;

    /* a number names the series the labels name */
    ck_assert_int_ge(sa, 0);
    ck_assert_int_eq(mf_metric_series(c, &a, 1), sa);
    ck_assert_int_eq(mf_metric_add_at(c, sa, 2), MF_OK);
    ck_assert_int_eq(mf_metric_add(c, &a, 1, 3), MF_OK);
    ck_assert_double_eq(mf_metric_value(c, &a, 1), 5);
    /* over the cap: no number, dropped and counted */
    ck_assert_int_ge(mf_metric_series(c, &b, 1), 0);
    ck_assert_int_eq(mf_metric_series(c, &x, 1), -1);
    ck_assert_uint_eq(mf_metric_dropped(c), 1);
    /* numbers not given, wrong types, wrong counts are refused */
    ck_assert_int_eq(mf_metric_add_at(c, 2, 1), MF_ERR);
    ck_assert_int_eq(mf_metric_add_at(c, -1, 1), MF_ERR);
    ck_assert_int_eq(mf_metric_add_at(c, sa, -1), MF_ERR);
    ck_assert_int_eq(mf_metric_observe_at(c, sa, 1, MF_STR_NULL), MF_ERR);
    ck_assert_int_eq(mf_metric_series(c, NULL, 0), -1);
    sh = mf_metric_series(h, &a, 1);
    ck_assert_int_eq(mf_metric_observe_at(h, sh, 0.5, MF_STR_NULL), MF_OK);
    ck_assert_int_eq(mf_metric_add_at(h, sh, 1), MF_ERR);
    ck_assert_double_eq(mf_metric_value(h, &a, 1), 1);
}
END_TEST

START_TEST(render_formats)
{
    mf_metric_t *c = declare(MF_METRIC_COUNTER, "t_r_total", one_label, 0);
    mf_metric_t *h = declare(MF_METRIC_HISTOGRAM, "t_r_seconds", NULL, 0);
    mf_str_t bad = {"a\"b\\c\nd\xff", 8};
    mf_buf_t b = {0};

    mf_metric_add(c, &bad, 1, 2);
    mf_metric_observe(h, NULL, 0, 0.5,
                      MF_STR("0af7651916cd43dd8448eb211c80319c"));
    mf_metric_observe(h, NULL, 0, 50, MF_STR("not-hex"));
    mf_metrics_render(&b, MF_METRICS_PROMETHEUS);
    mf_buf_append(&b, "", 1);
    ck_assert_ptr_nonnull(strstr(b.data, "# HELP t_r_total help with a line "
                                         "break\n# TYPE t_r_total counter\n"));
    /* quotes, backslashes and line breaks escaped; bad UTF-8 replaced */
    ck_assert_ptr_nonnull(
        strstr(b.data, "t_r_total{model=\"a\\\"b\\\\c?d?\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "t_r_seconds_bucket{le=\"0.1\"} 0\n"
                                         "t_r_seconds_bucket{le=\"1\"} 1\n"
                                         "t_r_seconds_bucket{le=\"10\"} 1\n"
                                         "t_r_seconds_bucket{le=\"+Inf\"} 2\n"
                                         "t_r_seconds_sum 50.5\n"
                                         "t_r_seconds_count 2\n"));
    ck_assert_ptr_null(strstr(b.data, "# EOF"));
    mf_buf_free(&b);
    mf_metrics_render(&b, MF_METRICS_OPENMETRICS);
    mf_buf_append(&b, "", 1);
    ck_assert_ptr_nonnull(strstr(b.data, "# TYPE t_r counter\n"));
    /* the latest exemplar's id is no hex id: none is written */
    ck_assert_ptr_null(strstr(b.data, "not-hex"));
    ck_assert_ptr_null(strstr(b.data, "# {trace_id"));
    mf_buf_free(&b);
    mf_metric_observe(h, NULL, 0, 0.5,
                      MF_STR("0af7651916cd43dd8448eb211c80319c"));
    mf_metrics_render(&b, MF_METRICS_OPENMETRICS);
    mf_buf_append(&b, "", 1);
    ck_assert_ptr_nonnull(
        strstr(b.data, "t_r_seconds_bucket{le=\"1.0\"} 2 # "
                       "{trace_id=\"0af7651916cd43dd8448eb211c80319c\"} 0.5 "));
    ck_assert_ptr_nonnull(
        strstr(b.data, "t_r_seconds_bucket{le=\"+Inf\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "\n# EOF\n"));
    mf_buf_free(&b);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    int rc;

    mf_metrics_init(100);
    tcase_add_test(tc, declare_rules);
    tcase_add_test(tc, shards_are_summed);
    tcase_add_test(tc, series_cap_and_values);
    tcase_add_test(tc, series_by_number);
    tcase_add_test(tc, render_formats);
    suite_add_tcase(s, tc);
    rc = mf_check_run(s, 1);
    mf_metrics_free();
    return rc;
}
