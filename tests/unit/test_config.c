/* Check suite for host/config/config.c and host/config/yamltree.c. */
#include "check_main.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config/config.h"
#include "config/yamltree.h"

START_TEST(interpolation)
{
    int unset = 0;
    char *s;

    setenv("MF_T_A", "alpha", 1);
    unsetenv("MF_T_B");
    s = mf_interpolate("x-${MF_T_A}-${MF_T_B:-dflt}", &unset);
    ck_assert_str_eq(s, "x-alpha-dflt");
    ck_assert_int_eq(unset, 0);
    free(s);
    /* an unset variable without a default empties the whole value */
    s = mf_interpolate("x-${MF_T_A}-${MF_T_B:-dflt}-${MF_T_B}", &unset);
    ck_assert_str_eq(s, "");
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

START_TEST(routes)
{
    const char *y =
        "providers:\n  - {name: a, base_url: 'http://h', keys: [k1, k2],\n"
        "     key_strategy: least_used, key_failures: 5,\n"
        "     probe: {path: /health, interval: 2s}}\n"
        "  - {name: b, base_url: 'http://h'}\n"
        "routes:\n"
        "  - model: gpt-*\n    strategy: lowest_latency\n"
        "    targets: [{provider: a, model: x, weight: 90},\n"
        "              {provider: b, weight: 10}]\n"
        "    fallback: [{provider: b, model: big}]\n"
        "    canary: [{header: x-canary, value: '1', target: 1}]\n"
        "    retry_on: [5xx, context_length]\n    retries: 2\n"
        "    attempt_timeout: 3s\n    ttft_timeout: 500ms\n"
        "    breaker: {failures: 4, cooldown: 20s}\n";
    const char *bad =
        "providers:\n  - {name: a, base_url: 'http://h'}\n"
        "routes:\n  - model: m\n    strategy: fastest\n"
        "    targets: [{provider: nope}]\n"
        "    canary: [{header: h, target: 3}]\n    retry_on: [sometimes]\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);
    mf_route_conf_t *r;

    ck_assert_msg(c != NULL, "%s", errors ? errors : "");
    ck_assert_int_eq(c->providers[0].key_strategy, MF_KEYS_LEAST_USED);
    ck_assert_int_eq(c->providers[0].key_failures, 5);
    ck_assert_str_eq(c->providers[0].probe_path, "/health");
    ck_assert(c->providers[0].probe_interval_ms == 2000);
    ck_assert_str_eq(c->providers[1].probe_path, "/models");
    ck_assert_uint_eq(c->nroutes, 1);
    r = &c->routes[0];
    ck_assert_int_eq(r->strategy, MF_BALANCE_LOWEST_LATENCY);
    ck_assert_uint_eq(r->ntargets, 2);
    ck_assert_uint_eq(r->targets[0].weight, 90);
    ck_assert_ptr_null(r->targets[1].model);
    ck_assert_str_eq(r->fallbacks[0].model, "big");
    ck_assert_uint_eq(r->rules[0].target, 1);
    ck_assert_uint_eq(r->retry_on, MF_RETRY_5XX | MF_RETRY_CONTEXT);
    ck_assert_int_eq(r->retries, 2);
    ck_assert(r->attempt_timeout_ms == 3000 && r->ttft_timeout_ms == 500);
    ck_assert_int_eq(r->breaker_failures, 4);
    mf_config_free(c);

    c = mf_config_parse("t.yaml", bad, strlen(bad), "/p", &errors);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "routes[0]: strategy 'fastest'"));
    ck_assert_ptr_nonnull(strstr(errors, "no provider named 'nope'"));
    ck_assert_ptr_nonnull(strstr(errors, "canary[0]: target 3"));
    ck_assert_ptr_nonnull(strstr(errors, "'sometimes' is not a failure kind"));
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

START_TEST(intake_keys)
{
    const char *y = "limits:\n  max_body: 1MiB\n  max_body_total: 8MiB\n"
                    "  max_conns: 100\ncors:\n  allow_origins: "
                    "[\"https://a.example\"]\nallowed_hosts: [gw.internal]\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);

    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->limits.max_body_total, 8 << 20);
    ck_assert_int_eq(c->limits.max_conns, 100);
    ck_assert_uint_eq(c->ncors_origins, 1);
    ck_assert_str_eq(c->cors_origins[0], "https://a.example");
    ck_assert_int_eq(c->has_allowed_hosts, 1);
    ck_assert_str_eq(c->allowed_hosts[0], "gw.internal");
    mf_config_free(c);

    /* the default budget follows a larger max_body */
    c = mf_config_parse("t.yaml", "limits: { max_body: 300MiB }\n", 29, "/p",
                        &errors);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->limits.max_body_total, (size_t)300 << 20);
    mf_config_free(c);

    y = "limits:\n  max_body: 2MiB\n  max_body_total: 1MiB\n  max_conns: "
        "0\ncors:\n  allow_origins: [app.example]\n  bogus: 1\n";
    c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:3: limits.max_body_total"));
    ck_assert_ptr_nonnull(strstr(errors, "limits.max_conns"));
    ck_assert_ptr_nonnull(strstr(errors, "'app.example' is not an origin"));
    ck_assert_ptr_nonnull(strstr(errors, "bogus"));
    free(errors);
}
END_TEST

START_TEST(reload_keys)
{
    const char *y = "reload: {debounce: 100ms, write_wait: 2s}\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);

    ck_assert_msg(c != NULL, "%s", errors ? errors : "");
    ck_assert_int_eq(c->watch, 1);
    ck_assert(c->watch_debounce_ms == 100);
    ck_assert(c->watch_write_wait_ms == 2000);
    mf_config_free(c);
    c = mf_config_parse("t.yaml", "workers: 1\n", 11, "/p", &errors);
    ck_assert_ptr_nonnull(c);
    ck_assert(c->watch_write_wait_ms == 5000); /* the default */
    mf_config_free(c);
    free(errors);
    errors = NULL;

    y = "reload:\n  write_wait: soon\n  write_wiat: 1s\n";
    c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:2: reload.write_wait"));
    ck_assert_ptr_nonnull(strstr(errors, "did you mean 'write_wait'?"));
    free(errors);
}
END_TEST

START_TEST(suggestions)
{
    static const char *const keys[] = {"providers", "routes", "stages",
                                       "plugin_dir", NULL};
    static const char *const types[] = {"openai", "anthropic", "gemini"};

    ck_assert_str_eq(mf_config_suggest("provders", keys, SIZE_MAX),
                     "providers");
    ck_assert_str_eq(mf_config_suggest("Stage", keys, SIZE_MAX), "stages");
    ck_assert_str_eq(mf_config_suggest("antropic", types, 3), "anthropic");
    ck_assert_str_eq(mf_config_suggest("gemni", types, 3), "gemini");
    ck_assert_ptr_null(mf_config_suggest("zzzzzz", keys, SIZE_MAX));
    ck_assert_ptr_null(mf_config_suggest("x", types, 3));
}
END_TEST

START_TEST(consumers_checked)
{
    const char *y = "consumers:\n"
                    "  - name: a\n"
                    "    budget: { usd: 5, period: year }\n"
                    "  - name: a\n"
                    "    limits: { rpm: 1.5, rpz: 3 }\n"
                    "  - { name: b, budget: { tokens: 10, usd: 1 }, "
                    "keys: [\"\"] }\n"
                    "prices:\n"
                    "  gpt-4o: { input: 2.5 }\n"
                    "stagse: []\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);

    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:3: consumers[0].budget: "
                                         "period 'year' must be day"));
    ck_assert_ptr_nonnull(
        strstr(errors, "t.yaml:4: consumers[1]: name 'a' is used twice"));
    ck_assert_ptr_nonnull(strstr(errors, "consumers[1].limits.rpm: '1.5' "
                                         "must be a whole number"));
    ck_assert_ptr_nonnull(strstr(errors, "unknown key 'rpz'"));
    ck_assert_ptr_nonnull(
        strstr(errors, "consumers[2].budget: needs one of usd or tokens"));
    ck_assert_ptr_nonnull(strstr(errors, "consumers[2].keys: key 0 is empty"));
    ck_assert_ptr_nonnull(
        strstr(errors, "t.yaml:8: prices.gpt-4o: needs input and output"));
    /* every error in one report */
    ck_assert_ptr_nonnull(strstr(errors, "did you mean 'stages'?"));
    free(errors);
}
END_TEST

START_TEST(redis_section_checked)
{
    const char *y = "redis: { host: 127.0.0.1, port: 6379, timout: 1s }\n";
    const char *cl = "redis: { cluster: [\"127.0.0.1:7000\", \"nohost\"], "
                     "db: 2 }\n";
    const char *cl_ok = "redis: { cluster: [\"127.0.0.1:7000\", "
                        "\"[::1]:7001\"], password: x, timeout: 300ms }\n";
    const char *cl_shape = "redis: { cluster: 127.0.0.1:7000 }\n";
    const char *ok = "redis: { host: 127.0.0.1, port: 6379, db: 1, "
                     "password: x, timeout: 200ms }\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);

    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "did you mean 'timeout'?"));
    free(errors);
    errors = NULL;
    c = mf_config_parse("t.yaml", cl, strlen(cl), "/p", &errors);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(
        errors, "redis.cluster: 'nohost' must be \"host:port\" (a seed node)"));
    ck_assert_ptr_nonnull(
        strstr(errors, "db: redis.db cannot be set with redis.cluster (a Redis "
                       "Cluster has only database 0)"));
    free(errors);
    errors = NULL;
    c = mf_config_parse("t.yaml", cl_shape, strlen(cl_shape), "/p", &errors);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(
        strstr(errors, "redis.cluster: must be a list of seed nodes"));
    free(errors);
    errors = NULL;
    c = mf_config_parse("t.yaml", cl_ok, strlen(cl_ok), "/p", &errors);
    ck_assert_ptr_nonnull(c);
    mf_config_free(c);
    free(errors);
    errors = NULL;
    c = mf_config_parse("t.yaml", ok, strlen(ok), "/p", &errors);
    ck_assert_ptr_nonnull(c);
    mf_config_free(c);
    free(errors);
}
END_TEST

START_TEST(consumers_normalized)
{
    const char *y = "consumers:\n"
                    "  - name: team-a\n"
                    "    group: eng\n"
                    "    keys: [\"12345\", \"sha256:ab\"]\n"
                    "    models: \"gpt-4o*\"\n"
                    "    limits: { rpm: 600, concurrency: 2 }\n"
                    "    budget: { usd: 0.5, period: day, tz: \"+02:00\" }\n"
                    "groups:\n"
                    "  - { name: eng, budget: { tokens: 100 } }\n"
                    "prices:\n"
                    "  gpt-4o: { input: 2.5, output: 10 }\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);
    json_t *a, *g;

    ck_assert_ptr_nonnull(c);
    a = json_array_get(json_object_get(c->sections, "consumers"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(a, "group")), "eng");
    /* keys stay strings, whatever they look like */
    ck_assert_str_eq(
        json_string_value(json_array_get(json_object_get(a, "keys"), 0)),
        "12345");
    ck_assert_str_eq(
        json_string_value(json_array_get(json_object_get(a, "models"), 0)),
        "gpt-4o*");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(a, "budget"), "micro_usd")),
                     500000);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(a, "budget"), "tz")),
        "+02:00");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(a, "limits"), "concurrency")),
                     2);
    g = json_array_get(json_object_get(c->sections, "groups"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(g, "budget"), "period")),
                     "month");
    ck_assert(
        json_real_value(json_object_get(
            json_object_get(json_object_get(c->sections, "prices"), "gpt-4o"),
            "output")) == 10.0);
    mf_config_free(c);
}
END_TEST

START_TEST(prices_tiers_and_fees)
{
    const char *ok = "prices:\n"
                     "  \"gemini-*\":\n"
                     "    input: 1.25\n"
                     "    output: 10\n"
                     "    reasoning: 12\n"
                     "    request: 0.002\n"
                     "    tiers:\n"
                     "      - { above: 200000, input: 2.5, output: 15 }\n";
    const char *bad = "prices:\n"
                      "  m:\n"
                      "    input: 1\n"
                      "    output: 2\n"
                      "    tiers:\n"
                      "      - { above: 100, input: 2 }\n"
                      "      - { above: 50, output: 3 }\n"
                      "      - { input: 2, per: 1 }\n";
    char *errors = NULL;
    mf_config_t *c = mf_config_parse("t.yaml", ok, strlen(ok), "/p", &errors);
    json_t *g, *t;

    ck_assert_ptr_nonnull(c);
    g = json_object_get(json_object_get(c->sections, "prices"), "gemini-*");
    ck_assert(json_real_value(json_object_get(g, "request")) == 0.002);
    ck_assert(json_real_value(json_object_get(g, "reasoning")) == 12.0);
    t = json_array_get(json_object_get(g, "tiers"), 0);
    ck_assert(json_real_value(json_object_get(t, "above")) == 200000.0);
    ck_assert(json_real_value(json_object_get(t, "output")) == 15.0);
    mf_config_free(c);

    c = mf_config_parse("t.yaml", bad, strlen(bad), "/p", &errors);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "prices.m.tiers[1].above: tiers go "
                                         "up"));
    ck_assert_ptr_nonnull(
        strstr(errors, "prices.m.tiers[2]: needs above (prompt tokens)"));
    ck_assert_ptr_nonnull(strstr(errors, "unknown key 'per'"));
    free(errors);
}
END_TEST

START_TEST(prices_from_a_litellm_file)
{
    char dir[] = "/tmp/mf-prices-XXXXXX", path[256], *errors = NULL;
    const char *y = "prices_file: litellm.json\n"
                    "prices:\n"
                    "  gpt-4o: { input: 2, output: 8 }\n";
    const char *bad = "prices_file: missing.json\n";
    mf_config_t *c;
    json_t *p, *e;
    FILE *f;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/litellm.json", dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"sample_spec\": {\"input_cost_per_token\": \"see docs\"},"
          " \"gpt-4o\": {\"input_cost_per_token\": 2.5e-06, "
          "\"output_cost_per_token\": 1e-05},"
          " \"claude-sonnet-4\": {\"input_cost_per_token\": 3e-06, "
          "\"output_cost_per_token\": 1.5e-05, "
          "\"cache_read_input_token_cost\": 3e-07, "
          "\"cache_creation_input_token_cost\": 3.75e-06, "
          "\"input_cost_per_token_above_200k_tokens\": 6e-06},"
          " \"dall-e-3\": {\"output_cost_per_image\": 0.04}}",
          f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/manifold.yaml", dir);
    c = mf_config_parse(path, y, strlen(y), "/p", &errors);
    ck_assert_ptr_nonnull(c);
    p = json_object_get(c->sections, "prices");
    /* the config's own entry wins over the file's */
    ck_assert(json_real_value(json_object_get(json_object_get(p, "gpt-4o"),
                                              "input")) == 2.0);
    e = json_object_get(p, "claude-sonnet-4");
    ck_assert(fabs(json_real_value(json_object_get(e, "input")) - 3) < 1e-9);
    ck_assert(fabs(json_real_value(json_object_get(e, "cache_write")) - 3.75) <
              1e-9);
    ck_assert(
        fabs(json_real_value(json_object_get(
                 json_array_get(json_object_get(e, "tiers"), 0), "input")) -
             6) < 1e-9);
    ck_assert_ptr_null(json_object_get(p, "dall-e-3"));
    ck_assert_ptr_null(json_object_get(p, "sample_spec"));
    mf_config_free(c);
    c = mf_config_parse(path, bad, strlen(bad), "/p", &errors);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(errors, "prices_file: cannot read"));
    free(errors);
    snprintf(path, sizeof(path), "%s/litellm.json", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(plugin_search_path)
{
    const char *y = "plugin_dir: [/tmp, /]\nreuse_port: true\n";
    char *errors = NULL;
    mf_config_t *c =
        mf_config_parse_dirs("t.yaml", y, strlen(y), "/a:/b", "/p", &errors);

    ck_assert_msg(errors == NULL, "%s", errors ? errors : "");
    ck_assert_uint_eq(c->nplugin_dirs, 5);
    ck_assert_str_eq(c->plugin_dirs[0], "/a"); /* the command line first */
    ck_assert_str_eq(c->plugin_dirs[1], "/b");
    ck_assert_str_eq(c->plugin_dirs[2], "/tmp");
    ck_assert_str_eq(c->plugin_dirs[3], "/");
    ck_assert_str_eq(c->plugin_dirs[4], "/p"); /* the built-in one last */
    ck_assert_int_eq(c->reuse_port, 1);
    mf_config_free(c);

    /* a single directory, which must exist */
    y = "plugin_dir: /nonexistent-mf\n";
    c = mf_config_parse_dirs("t.yaml", y, strlen(y), NULL, "/p", &errors);
    ck_assert_ptr_nonnull(c); /* returned with the errors */
    ck_assert_ptr_nonnull(strstr(errors, "/nonexistent-mf is not a directory"));
    ck_assert_uint_eq(c->nplugin_dirs, 2);
    free(errors);
    mf_config_free(c);
}
END_TEST

START_TEST(disabled_key_variables)
{
    const char *y = "providers:\n  - name: off\n    base_url: http://h\n"
                    "    keys: ['${MF_T_UNSET_1}:${MF_T_UNSET_2}']\n";
    char *errors = NULL;
    mf_config_t *c;

    unsetenv("MF_T_UNSET_1");
    unsetenv("MF_T_UNSET_2");
    c = mf_config_parse("t.yaml", y, strlen(y), "/p", &errors);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->providers[0].disabled, 1);
    ck_assert_uint_eq(c->providers[0].nkey_vars, 2);
    ck_assert_str_eq(c->providers[0].key_vars[0], "MF_T_UNSET_1");
    ck_assert_str_eq(c->providers[0].key_vars[1], "MF_T_UNSET_2");
    mf_config_free(c);
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
    tcase_add_test(tc, routes);
    tcase_add_test(tc, intake_keys);
    tcase_add_test(tc, reload_keys);
    tcase_add_test(tc, suggestions);
    tcase_add_test(tc, consumers_checked);
    tcase_add_test(tc, consumers_normalized);
    tcase_add_test(tc, redis_section_checked);
    tcase_add_test(tc, prices_tiers_and_fees);
    tcase_add_test(tc, prices_from_a_litellm_file);
    tcase_add_test(tc, plugin_search_path);
    tcase_add_test(tc, disabled_key_variables);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
