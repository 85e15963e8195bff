/* Check suite for host/routing/keypool.c: picking, 401/429/failure
 * transitions, rests per key and model, last resort, rows that leave with
 * their last generation, masking. */
#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "routing/keypool.h"

static mf_provider_conf_t pc;
static mf_prov_t prov;

#define MA MF_STR("model-a")
#define MB MF_STR("model-b")

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

/* The models key k rests for, space-separated ("" when none). */
static const char *
rests_of(int k)
{
    static char buf[256];
    json_t *all = mf_keypool_json(), *e = json_array_get(all, (size_t)k), *r;
    size_t i;

    buf[0] = '\0';
    json_array_foreach(json_object_get(e, "rests"), i, r)
    {
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s",
                 i ? " " : "", json_string_value(json_object_get(r, "model")));
    }
    json_decref(all);
    return buf;
}

START_TEST(round_robin_and_transitions)
{
    double retry = 0;
    int seen[3] = {0, 0, 0}, i, k;

    for (i = 0; i < 6; i++) {
        k = mf_keypool_pick(&prov, MA, 0, 0, &retry);
        ck_assert_int_ge(k, 0);
        seen[k]++;
    }
    ck_assert(seen[0] == 2 && seen[1] == 2 && seen[2] == 2);

    mf_keypool_begin(&prov, 0);
    mf_keypool_end(&prov, 0, MA, MF_KEYRES_AUTH, 0, "401");
    ck_assert_str_eq(state_of(0), "disabled");
    mf_keypool_begin(&prov, 1);
    mf_keypool_end(&prov, 1, MA, MF_KEYRES_RATE, 100, "429");
    ck_assert_str_eq(state_of(1), "ok");
    ck_assert_str_eq(rests_of(1), "model-a");
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(mf_keypool_pick(&prov, MA, 0, 0, &retry), 2);
    }
    /* key 2 tried already: nothing left but a cooling key */
    ck_assert_int_eq(mf_keypool_pick(&prov, MA, 1u << 2, 0, &retry), -1);
    ck_assert(retry > 0 && retry <= 100);
    usleep(120000);
    ck_assert_int_eq(mf_keypool_pick(&prov, MA, 1u << 2, 0, &retry), 1);
    ck_assert_str_eq(rests_of(1), "");

    for (i = 0; i < 3; i++) {
        mf_keypool_begin(&prov, 2);
        mf_keypool_end(&prov, 2, MA, MF_KEYRES_FAIL, 0, "503");
    }
    ck_assert_str_eq(state_of(2), "quarantined");
    ck_assert_int_eq(mf_keypool_pick(&prov, MA, 1u << 1, 0, &retry), -1);
    ck_assert_int_eq(mf_keypool_pick(&prov, MA, 1u << 1, 1, &retry), 2);
}
END_TEST

START_TEST(success_resets_and_masking)
{
    json_t *all;
    char *text;
    int i;

    for (i = 0; i < 2; i++) {
        mf_keypool_begin(&prov, 0);
        mf_keypool_end(&prov, 0, MA, MF_KEYRES_FAIL, 0, "timeout");
    }
    mf_keypool_begin(&prov, 0);
    mf_keypool_end(&prov, 0, MA, MF_KEYRES_OK, 0, "ok");
    mf_keypool_begin(&prov, 0);
    mf_keypool_end(&prov, 0, MA, MF_KEYRES_FAIL, 0, "timeout");
    ck_assert_str_eq(state_of(0), "ok"); /* failures must be in a row */
    all = mf_keypool_json();
    text = json_dumps(all, 0);
    /* 12-byte keys: shown as a fixed mask, nothing of the key */
    ck_assert_ptr_null(strstr(text, "aaaa"));
    ck_assert_ptr_null(strstr(text, "1111"));
    ck_assert_ptr_nonnull(strstr(text, "\"***\""));
    free(text);
    json_decref(all);
}
END_TEST

START_TEST(rest_is_capped_and_finite)
{
    json_t *all, *e;

    mf_keypool_set_max_rest(5000);
    mf_keypool_begin(&prov, 0);
    mf_keypool_end(&prov, 0, MA, MF_KEYRES_RATE, 1e12, "429");
    all = mf_keypool_json();
    e = json_array_get(json_object_get(json_array_get(all, 0), "rests"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "model")), "model-a");
    ck_assert(json_real_value(json_object_get(e, "retry_in_ms")) <= 5000);
    json_decref(all);
    mf_keypool_begin(&prov, 1);
    mf_keypool_end(&prov, 1, MA, MF_KEYRES_RATE, NAN, "429");
    all = mf_keypool_json();
    e = json_array_get(json_object_get(json_array_get(all, 1), "rests"), 0);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(e, "why")),
                                 "without Retry-After"));
    json_decref(all);
    mf_keypool_set_max_rest(300000);
}
END_TEST

START_TEST(rest_is_per_model)
{
    double retry = 0;
    int i, k, seen1 = 0;

    /* a 429 for model-a rests key 1 for model-a only */
    mf_keypool_begin(&prov, 1);
    mf_keypool_end(&prov, 1, MA, MF_KEYRES_RATE, 60000, "429");
    for (i = 0; i < 9; i++) {
        ck_assert_int_ne(mf_keypool_pick(&prov, MA, 0, 0, &retry), 1);
        k = mf_keypool_pick(&prov, MB, 0, 0, &retry);
        ck_assert_int_ge(k, 0);
        seen1 += k == 1;
    }
    ck_assert_int_gt(seen1, 0);
    /* every key resting for model-a: none for it, all for model-b */
    mf_keypool_end(&prov, 0, MA, MF_KEYRES_RATE, 60000, "429");
    mf_keypool_end(&prov, 2, MA, MF_KEYRES_RATE, 60000, "429");
    ck_assert_int_eq(mf_keypool_pick(&prov, MA, 0, 0, &retry), -1);
    ck_assert(retry > 1000);
    ck_assert_int_ge(mf_keypool_pick(&prov, MB, 0, 0, &retry), 0);
    ck_assert_str_eq(state_of(1), "ok");
    ck_assert_str_eq(rests_of(1), "model-a");
    /* a success for model-a ends its rest on that key */
    mf_keypool_end(&prov, 1, MA, MF_KEYRES_OK, 0, "ok");
    ck_assert_str_eq(rests_of(1), "");
    /* a 401 refuses the key for every model */
    mf_keypool_end(&prov, 1, MB, MF_KEYRES_AUTH, 0, "401");
    for (i = 0; i < 6; i++) {
        ck_assert_int_ne(mf_keypool_pick(&prov, MB, 0, 0, &retry), 1);
    }
    ck_assert_int_eq(mf_keypool_pick(&prov, MA, 0, 0, &retry), -1);
}
END_TEST

START_TEST(rows_leave_with_their_last_generation)
{
    static char *keys2[] = {NULL, NULL};
    mf_provider_conf_t pc2;
    mf_prov_t prov2;
    json_t *all;

    /* a second generation keeps keys 0 and 1 of the first */
    keys2[0] = pc.keys[0];
    keys2[1] = pc.keys[1];
    pc2 = pc;
    pc2.keys = keys2;
    pc2.nkeys = 2;
    memset(&prov2, 0, sizeof(prov2));
    prov2.conf = &pc2;
    mf_keypool_bind(&prov2);
    all = mf_keypool_json();
    ck_assert_int_eq(json_array_size(all), 3);
    json_decref(all);
    /* the first is freed: key 2's row goes, the others stay */
    mf_keypool_unbind(&prov);
    all = mf_keypool_json();
    ck_assert_int_eq(json_array_size(all), 2);
    json_decref(all);
    mf_keypool_unbind(&prov2);
    all = mf_keypool_json();
    ck_assert_int_eq(json_array_size(all), 0);
    json_decref(all);
    free(prov2.keys);
    free(prov2.key_str);
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
    tcase_add_test(tc, rest_is_per_model);
    tcase_add_test(tc, rows_leave_with_their_last_generation);
    tcase_add_test(tc, scrub_masks_keys);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
