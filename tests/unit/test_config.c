/* Check suite for host/config.c and host/yamltree.c. */
#include "check_main.h"
#include <stdlib.h>

#include "config.h"
#include "yamltree.h"

START_TEST(interpolation)
{
    int unset = 0;
    char *s;

    setenv("MF_T_A", "alpha", 1);
    unsetenv("MF_T_B");
    s = mf_interpolate("x-${MF_T_A}-${MF_T_B:-dflt}-${MF_T_B}", &unset);
    ck_assert_str_eq(s, "x-alpha-dflt-");
    ck_assert_int_eq(unset, 1);
    free(s);
}
END_TEST

START_TEST(valid_config)
{
    const char *y = "listen: 127.0.0.1:9999\nworkers: 3\n"
                    "limits: {max_body: 2MiB, upstream_timeout: 1.5s}\n"
                    "providers:\n  - name: p\n    type: openai\n"
                    "    base_url: http://h:1/v1/\n    keys: [a, '']\n"
                    "    models: [m-*]\n    model_map: {x: y}\n"
                    "  - name: off\n    base_url: http://h\n"
                    "    keys: ['${MF_T_UNSET_XYZ}']\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);

    ck_assert_msg(c != NULL, "%s", errors ? errors : "");
    ck_assert_int_eq(c->listen_port, 9999);
    ck_assert_int_eq(c->workers, 3);
    ck_assert_uint_eq(c->limits.max_body, 2 * 1024 * 1024);
    ck_assert(c->limits.upstream_timeout_ms == 1500);
    ck_assert_str_eq(c->providers[0].base_url, "http://h:1/v1");
    ck_assert_uint_eq(c->providers[0].nkeys, 2);
    ck_assert_int_eq(c->providers[0].disabled, 0);
    ck_assert_int_eq(c->providers[1].disabled, 1);
    ck_assert_str_eq(c->providers[0].model_map[0].to, "y");
    mf_config_free(c);
}
END_TEST

START_TEST(errors_name_line_and_key)
{
    const char *y = "listen: nope:x\nproviders:\n  - name: a\n    base_url: "
                    "ftp://x\n    timeout: soon\nstages:\n  - name: s\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);

    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:1: listen:"));
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:4: providers[0]: base_url"));
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:5: providers[0]: 'soon'"));
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:7: stages[0]: needs exactly"));
    free(errors);
    c = mf_config_parse("t.yaml", "a: [", 4, "/p", &errors);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:2: did not find"));
    free(errors);
}
END_TEST

START_TEST(sizes_and_durations)
{
    size_t n;
    double ms;

    ck_assert_int_eq(mf_config_parse_size("64k", &n), MF_OK);
    ck_assert_uint_eq(n, 65536);
    ck_assert_int_eq(mf_config_parse_size("1x", &n), MF_ERR);
    ck_assert_int_eq(mf_config_parse_duration("250ms", &ms), MF_OK);
    ck_assert(ms == 250);
    ck_assert_int_eq(mf_config_parse_duration("2m", &ms), MF_OK);
    ck_assert(ms == 120000);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, interpolation);
    tcase_add_test(tc, valid_config);
    tcase_add_test(tc, errors_name_line_and_key);
    tcase_add_test(tc, sizes_and_durations);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
