/*
 * libFuzzer driver: the request body scanner, checked against jansson.
 * Whatever mf_jscan_body accepts, jansson must read as an object with the
 * same members (each indexed value parses to the member jansson holds),
 * the same "messages" verdict and the same answers from
 * mf_jscan_object_get; anything else aborts.
 */
#include <stdio.h>
#include <stdlib.h>

#include "request/jscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "jscan and jansson disagree: %s\n", what);
        abort();
    }
}

/* jansson's verdict on "messages", as parse_body checks it. */
static int
messages_ok(json_t *root)
{
    json_t *v = json_object_get(root, "messages"), *m;
    size_t i;

    if (!json_is_array(v) || json_array_size(v) == 0) {
        return 0;
    }
    json_array_foreach(v, i, m)
    {
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
            return 0;
        }
    }
    return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_jscan_t js = {.max_depth = 32, .max_values = 4096, .max_messages = 64};
    mf_str_t body = {(const char *)data, size};
    json_t *root;
    size_t i;

    if (mf_jscan_body(body, &js) != MF_OK) {
        return 0;
    }
    root = json_loadb(body.data, body.len, JSON_ALLOW_NUL, NULL);
    check(json_is_object(root), "accepted what jansson refuses");
    check(json_object_size(root) == js.nmembers, "member count");
    check(messages_ok(root) == js.messages_ok, "messages");
    for (i = 0; i < js.nmembers; i++) {
        const mf_jmember_t *m = &js.members[i];
        char key[256];
        json_t *v, *want;
        mf_str_t sub, plain;

        snprintf(key, sizeof(key), "%.*s", (int)m->key.len, m->key.data);
        want = json_object_getn(root, m->key.data, m->key.len);
        v = json_loadb(m->value.data, m->value.len,
                       JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        check(v != NULL && json_equal(v, want), key);
        if (mf_jscan_plain_string(m->value, &plain) == MF_OK) {
            check(json_string_length(want) == plain.len &&
                      memcmp(json_string_value(want), plain.data, plain.len) ==
                          0,
                  "plain string");
        }
        if (json_is_object(want)) {
            /* each member of a nested object is found by object_get */
            const char *k;
            json_t *x;

            json_object_foreach(want, k, x)
            {
                json_t *got;

                sub = mf_jscan_object_get(m->value, mf_str_from(k));
                if (sub.data == NULL) {
                    continue; /* an escaped or embedded-NUL key */
                }
                got = json_loadb(sub.data, sub.len,
                                 JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
                check(got != NULL && json_equal(got, x), "object_get");
                json_decref(got);
            }
        }
        json_decref(v);
    }
    json_decref(root);
    return 0;
}
