/* Check suite for host/routing/keypool.c: picking, 401/429/failure transitions,
 * last resort, masking. */
#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "routing/keypool.h"

static mf_provider_conf_t pc;
static mf_prov_t prov;

static void
setup(void)
{
    static char k0[] = "sk-aaaa-1111", k1[] = "sk-bbbb-2222",
                k2[] = "sk-cccc-3333", name[] = "p",
                url[] = "http://127.0.0.1:1", path[] = "/models",
                header[] = "authorization";
    static char *keys[] = {k0, k1, k2};

    memset(&pc, 0, sizeof(pc));
    memset(&prov, 0, sizeof(prov));
    pc.name = name;
    pc.base_url = url;
    pc.keys = keys;
    pc.nkeys = 3;
    pc.key_failures = 3;
    pc.probe_path = path;
    pc.probe_header = header;
    pc.probe_interval_ms = 60000;
    pc.json = json_pack("{s:s}", "name", "p");
    prov.conf = &pc;
    mf_keypool_bind(&prov);
}

static void
teardown(void)
{
    free(prov.keys);
    free(prov.key_str);
    json_decref(pc.json);
    mf_keypool_free();
}

static const char *
state_of(int k)
{
    static char buf[64];
    json_t *all = mf_keypool_json(), *e = json_array_get(all, (size_t)k);

    snprintf(buf, sizeof(buf), "%s",
             json_string_value(json_object_get(e, "state")));
    json_decref(all);
    return buf;
}

START_TEST(round_robin_and_transitions)
{
    double retry = 0;
    int seen[3] = {0, 0, 0}, i, k;

    for (i = 0; i < 6; i++) {
        k = mf_keypool_pick(&prov, 0, 0, &retry);
        ck_assert_int_ge(k, 0);
        seen[k]++;
    }
    ck_assert(seen[0] == 2 && seen[1] == 2 && seen[2] == 2);

    mf_keypool_begin(&prov, 0);
    mf_keypool_end(&prov, 0, MF_KEYRES_AUTH, 0, "401");
    ck_assert_str_eq(state_of(0), "disabled");
    mf_keypool_begin(&prov, 1);
    mf_keypool_end(&prov, 1, MF_KEYRES_RATE, 100, "429");
    ck_assert_str_eq(state_of(1), "cooldown");
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(mf_keypool_pick(&prov, 0, 0, &retry), 2);
    }
    /* key 2 tried already: nothing left but a cooling key */
    ck_assert_int_eq(mf_keypool_pick(&prov, 1u << 2, 0, &retry), -1);
    ck_assert(retry > 0 && retry <= 100);
    usleep(120000);
    ck_assert_int_eq(mf_keypool_pick(&prov, 1u << 2, 0, &retry), 1);
    ck_assert_str_eq(state_of(1), "ok");

    for (i = 0; i < 3; i++) {
        mf_keypool_begin(&prov, 2);
        mf_keypool_end(&prov, 2, MF_KEYRES_FAIL, 0, "503");
    }
    ck_assert_str_eq(state_of(2), "quarantined");
    ck_assert_int_eq(mf_keypool_pick(&prov, 1u << 1, 0, &retry), -1);
    ck_assert_int_eq(mf_keypool_pick(&prov, 1u << 1, 1, &retry), 2);
}
END_TEST

START_TEST(success_resets_and_masking)
{
    json_t *all;
    char *text;
    int i;

    for (i = 0; i < 2; i++) {
        mf_keypool_begin(&prov, 0);
        mf_keypool_end(&prov, 0, MF_KEYRES_FAIL, 0, "timeout");
    }
    mf_keypool_begin(&prov, 0);
    mf_keypool_end(&prov, 0, MF_KEYRES_OK, 0, "ok");
    mf_keypool_begin(&prov, 0);
    mf_keypool_end(&prov, 0, MF_KEYRES_FAIL, 0, "timeout");
    ck_assert_str_eq(state_of(0), "ok"); /* failures must be in a row */
    all = mf_keypool_json();
    text = json_dumps(all, 0);
    ck_assert_ptr_null(strstr(text, "aaaa-1111"));
    ck_assert_ptr_nonnull(strstr(text, "1111"));
    free(text);
    json_decref(all);
}
END_TEST

START_TEST(rest_is_capped_and_finite)
{
    json_t *all, *e;

    mf_keypool_set_max_rest(5000);
    mf_keypool_begin(&prov, 0);
    mf_keypool_end(&prov, 0, MF_KEYRES_RATE, 1e12, "429");
    all = mf_keypool_json();
    e = json_array_get(all, 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")),
                     "cooldown");
    ck_assert(json_real_value(json_object_get(e, "retry_in_ms")) <= 5000);
    json_decref(all);
    mf_keypool_begin(&prov, 1);
    mf_keypool_end(&prov, 1, MF_KEYRES_RATE, NAN, "429");
    all = mf_keypool_json();
    e = json_array_get(all, 1);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(e, "why")),
                                 "without Retry-After"));
    json_decref(all);
    mf_keypool_set_max_rest(300000);
}
END_TEST

START_TEST(scrub_masks_keys)
{
    char msg[512];
    mf_str_t extra = MF_STR("ya29.vertex-token-abcdefgh");

    snprintf(msg, sizeof(msg),
             "bad key sk-bbbb-2222 and token ya29.vertex-token-abcdefgh, "
             "gsk_0123456789abcdefXYZ; a task-based sk-ok; cut sk-cccc-33");
    mf_keypool_scrub(&prov, &extra, 1, msg);
    ck_assert_ptr_null(strstr(msg, "bbbb"));
    ck_assert_ptr_null(strstr(msg, "vertex-token"));
    ck_assert_ptr_null(strstr(msg, "0123456789abcdef"));
    ck_assert_ptr_null(strstr(msg, "cccc"));
    ck_assert_ptr_nonnull(strstr(msg, "task-based sk-ok"));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("keypool");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, round_robin_and_transitions);
    tcase_add_test(tc, success_resets_and_masking);
    tcase_add_test(tc, rest_is_capped_and_finite);
    tcase_add_test(tc, scrub_masks_keys);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
