/*
 * libFuzzer driver: mf_json_loadb and mf_json_dumps (host/core/json.c)
 * checked against jansson. For any input and each decoder flag both
 * decoders accept or refuse it (refusals with the same message), the
 * values are equal with the same key order, and both encoders write the
 * same bytes for the value; anything else aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <manifold/json.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "mf_json and jansson disagree: %s\n", what);
        abort();
    }
}

static int
same_text(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t flags[] = {0, JSON_ALLOW_NUL, JSON_DECODE_ANY};
    /* the input as one string: mf_json_escape writes what the dumps do */
    {
        json_t *str = json_stringn((const char *)data, size);
        char *esc = malloc(6 * size + 3);
        size_t n = esc ? mf_json_escape(esc, (const char *)data, size) : 0;

        if (esc != NULL) {
            char *t = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;

            check((t == NULL) == (n == 0), "escape: valid UTF-8");
            check(t == NULL || strcmp(t, esc) == 0, "escape: bytes");
            free(t);
        }
        free(esc);
        json_decref(str);
    }

    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        json_error_t e1, e2;
        json_t *a = mf_json_loadb((const char *)data, size, flags[f], &e1);
        json_t *b = json_loadb((const char *)data, size, flags[f], &e2);

        check((a == NULL) == (b == NULL), "accepted by one");
        if (b == NULL) {
            check(strcmp(e1.text, e2.text) == 0, "error text");
            continue;
        }
        check(json_equal(a, b), "values");
        for (size_t d = 0; d < 4; d++) {
            size_t fl =
                (d & 1 ? JSON_COMPACT : 0) | (d & 2 ? JSON_ENCODE_ANY : 0);
            char *ta = json_dumps(a, fl), *tb = json_dumps(b, fl),
                 *ma = mf_json_dumps(b, fl);

            check(same_text(ta, tb), "key order or number types");
            check(same_text(ma, tb), "encoded bytes");
            free(ta);
            free(tb);
            free(ma);
        }
        json_decref(a);
        json_decref(b);
    }
    return 0;
}
