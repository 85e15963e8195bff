/* Check suite for host/proto/proto.c: the route template of a path
 * (mf_proto_route), low in cardinality: the variable part of a path (a
 * model, a stored Response's id) named, never copied. */
#include "check_main.h"
#include <string.h>

#include "proto/proto.h"

/* the template of path as asked of the adapter that serves it (found as
 * the host finds it), as a C string */
static const char *
route_of(const char *path)
{
    static char out[256];
    mf_str_t p = mf_str_from(path), t;
    mf_endpoint_t e;
    int local;
    const mf_proto_t *proto = mf_proto_find(p, &e, &local);

    t = mf_proto_route(proto, p);
    ck_assert_uint_lt(t.len, sizeof(out));
    if (t.len > 0) {
        memcpy(out, t.data, t.len);
    }
    out[t.len] = '\0';
    return out;
}

START_TEST(fixed_paths_are_their_own_route)
{
    ck_assert_str_eq(route_of("/v1/chat/completions"), "/v1/chat/completions");
    ck_assert_str_eq(route_of("/chat/completions"), "/chat/completions");
    ck_assert_str_eq(route_of("/v1/embeddings"), "/v1/embeddings");
    ck_assert_str_eq(route_of("/v1/messages"), "/v1/messages");
    ck_assert_str_eq(route_of("/v1/messages/count_tokens"),
                     "/v1/messages/count_tokens");
    ck_assert_str_eq(route_of("/v1/responses"), "/v1/responses");
    ck_assert_str_eq(route_of("/v1/models"), "/v1/models");
}
END_TEST

START_TEST(variable_parts_are_named)
{
    ck_assert_str_eq(route_of("/v1/responses/resp_0123456789abcdef"),
                     "/v1/responses/{response_id}");
    ck_assert_str_eq(route_of("/v1/responses/resp_01/input_items"),
                     "/v1/responses/{response_id}/input_items");
    ck_assert_str_eq(
        route_of("/v1beta/models/gemini-2.0-flash:generateContent"),
        "/v1beta/models/{model}:generateContent");
    ck_assert_str_eq(
        route_of("/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
        "/v1beta/models/{model}:streamGenerateContent");
    ck_assert_str_eq(route_of("/v1beta/models/text-embedding-004:embedContent"),
                     "/v1beta/models/{model}:embedContent");
    ck_assert_str_eq(route_of("/v1/models/gemini-2.0-flash:countTokens"),
                     "/v1/models/{model}:countTokens");
    ck_assert_str_eq(route_of("/v1beta/models/gemini-2.0-flash"),
                     "/v1beta/models/{model}");
    ck_assert_str_eq(route_of("/v1/models/gpt-4o"), "/v1/models/{model}");
}
END_TEST

START_TEST(unknown_paths_have_none)
{
    ck_assert_str_eq(route_of("/v2/chat/completions"), "");
    ck_assert_str_eq(route_of("/v1/messages/other"), "");
    ck_assert_str_eq(route_of("/v1/responses/"), "");
    ck_assert_str_eq(route_of("/v1/responses/x/other"), "");
    ck_assert_str_eq(route_of("/"), "");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("route");

    tcase_add_test(tc, fixed_paths_are_their_own_route);
    tcase_add_test(tc, variable_parts_are_named);
    tcase_add_test(tc, unknown_paths_have_none);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 1);
}
