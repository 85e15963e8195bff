/*
 * libFuzzer driver: the request body scanner, checked against jansson.
 * Whatever mf_jscan_body accepts, jansson must read as an object with the
 * same members (each indexed value parses to the member jansson holds),
 * the same "messages" verdict and the same answers from
 * mf_jscan_object_get; anything else aborts. Then edits of string
 * contents (api->edit_body_text's engine) at body-chosen places: when
 * accepted, the new text is an object jscan and jansson accept with the
 * same keys, and the shifted index is the one a new scan makes.
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

static void
check_edits(mf_str_t body, const mf_jscan_t *js, json_t *root)
{
    static const char *const texts[] = {"[EMAIL_1]", "", "a\"b\\c\n\x01",
                                        "\xe4\xb8\xad", "\xe4\xb8"};
    mf_body_edit_t ed[3];
    mf_jscan_t out,
        again = {.max_depth = 32, .max_values = 4096, .max_messages = 64};
    size_t k, n = 0, at = 0, h = body.len;
    long len;
    char *nb;
    json_t *r2;
    const char *key;
    json_t *v;

    for (k = 0; k < body.len; k++) {
        h = h * 31 + (unsigned char)body.data[k];
    }
    for (k = 0; k < 3 && at < body.len; k++) {
        size_t off = at + (h >> (8 * k)) % (body.len - at);
        size_t l = (h >> (8 * k + 4)) % 4;

        if (off + l > body.len) {
            l = body.len - off;
        }
        ed[n++] = (mf_body_edit_t){off, l, mf_str_from(texts[(h >> k) % 5])};
        at = off + l + 1;
    }
    len = mf_jscan_edit_size(body, ed, n);
    if (len < 0) {
        return;
    }
    nb = malloc((size_t)len + 1);
    mf_jscan_edit_apply(body, js, ed, n, nb, &out);
    check(mf_jscan_body((mf_str_t){nb, (size_t)len}, &again) == MF_OK,
          "an edit made a body the scan refuses");
    check(out.nmembers == again.nmembers, "edited member count");
    for (k = 0; k < out.nmembers; k++) {
        check(out.members[k].key.data == again.members[k].key.data &&
                  out.members[k].key.len == again.members[k].key.len &&
                  out.members[k].value.data == again.members[k].value.data &&
                  out.members[k].value.len == again.members[k].value.len,
              "shifted index");
    }
    r2 = json_loadb(nb, (size_t)len, JSON_ALLOW_NUL, NULL);
    check(json_is_object(r2) && json_object_size(r2) == json_object_size(root),
          "edited body's members");
    json_object_foreach(root, key, v)
    {
        check(json_object_get(r2, key) != NULL, "an edit changed a key");
    }
    json_decref(r2);
    free(nb);
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
    check_edits(body, &js, root);
    json_decref(root);
    return 0;
}
