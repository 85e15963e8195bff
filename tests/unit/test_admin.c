/* Check suite for host/control/admin.c: request parsing (split at every byte,
 * bounds) and routing (commands, captured stage names, 404, 405). */
#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>

#include "control/admin.h"

START_TEST(parse_split_everywhere)
{
    static const char req[] = "POST /stages/tag/reload HTTP/1.1\r\n"
                              "Host: x\r\nContent-Length: 4\r\n\r\n{}\r\n";
    size_t len = strlen(req), cut;

    for (cut = 0; cut < len; cut++) {
        mf_admin_req_t q;
        const char *err = NULL;

        ck_assert_int_eq(mf_admin_parse(req, cut, &q, &err), 0);
    }
    {
        mf_admin_req_t q;
        const char *err = NULL;

        ck_assert_int_eq(mf_admin_parse(req, len, &q, &err), 1);
        ck_assert(mf_str_eq_cstr(q.method, "POST"));
        ck_assert(mf_str_eq_cstr(q.path, "/stages/tag/reload"));
        ck_assert_uint_eq(q.body.len, 4);
    }
}
END_TEST

START_TEST(parse_refuses)
{
    mf_admin_req_t q;
    const char *err = NULL;
    char *big = malloc(20000);

    ck_assert_int_eq(mf_admin_parse("BAD\r\n\r\n", 7, &q, &err), -1);
    ck_assert_ptr_nonnull(err);
    err = NULL;
    ck_assert_int_eq(
        mf_admin_parse(
            "POST /reload HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", 50, &q,
            &err),
        -1);
    ck_assert_ptr_nonnull(strstr(err, "64 KiB"));
    memset(big, 'a', 20000);
    ck_assert_int_eq(mf_admin_parse(big, 20000, &q, &err), -1);
    err = NULL;
    ck_assert_int_eq(
        mf_admin_parse("POST /reload HTTP/1.1\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n",
                       56, &q, &err),
        -1);
    ck_assert_ptr_nonnull(strstr(err, "chunked"));
    free(big);
}
END_TEST

static int
route(const char *method, const char *path, json_t **out)
{
    mf_admin_ctx_t ctx;
    mf_admin_req_t q = {.method = mf_str_from(method),
                        .path = mf_str_from(path)};

    memset(&ctx, 0, sizeof(ctx));
    *out = NULL;
    return mf_admin_dispatch(&ctx, &q, out);
}

START_TEST(routes)
{
    json_t *out;

    /* no generation is current here: stage commands answer 404 */
    ck_assert_int_eq(route("POST", "/stages/nope/enable", &out), 404);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(
                                     json_object_get(out, "error"), "message")),
                                 "'nope'"));
    json_decref(out);
    ck_assert_int_eq(route("POST", "/stages/nope/reload", &out), 404);
    json_decref(out);
    ck_assert_int_eq(route("GET", "/stages", &out), 200);
    ck_assert_int_eq(json_array_size(json_object_get(out, "stages")), 0);
    json_decref(out);
    ck_assert_int_eq(route("GET", "/stages/", &out), 200);
    json_decref(out);
    ck_assert_int_eq(route("GET", "/generations", &out), 200);
    json_decref(out);
    ck_assert_int_eq(route("GET", "/reload", &out), 405);
    json_decref(out);
    ck_assert_int_eq(route("DELETE", "/stages/a/enable", &out), 405);
    json_decref(out);
    ck_assert_int_eq(route("POST", "/stages/a/b/enable", &out), 404);
    json_decref(out);
    ck_assert_int_eq(route("POST", "/stages//enable", &out), 404);
    json_decref(out);
    ck_assert_int_eq(route("GET", "/", &out), 404);
    json_decref(out);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("admin");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, parse_split_everywhere);
    tcase_add_test(tc, parse_refuses);
    tcase_add_test(tc, routes);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
