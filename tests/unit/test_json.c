/* Check suite for host/core/json.c: mf_json_dumps gives json_dumps's bytes
 * and mf_json_loadb json_loadb's values (same key order, same numbers,
 * same errors), over documents like the ones the translations read and
 * write (unicode, escapes, tools, images, stop sequences, numbers of every
 * shape), malformed ones, random values and random mutations. */
#include "check_main.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <manifold/json.h>

static const char *const docs[] = {
    "{}",
    "[]",
    " \t\r\n{ \"a\" : 1 , \"b\" : [ ] , \"c\" : { } } \n",
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":"
    "\"benchmark me please\"}]}",
    "{\"model\":\"claude-sonnet-4\",\"max_tokens\":100,\"stop_sequences\":["
    "\"\\n\\nHuman:\",\"END\",\"\"],\"temperature\":0.7,\"top_p\":1.0,"
    "\"top_k\":40}",
    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
    "\"text\":\"what is in this image?\"},{\"type\":\"image_url\","
    "\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo/+=\","
    "\"detail\":\"high\"}}]}]}",
    "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_"
    "weather\",\"description\":\"Weather \\\"now\\\"\",\"parameters\":{"
    "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
    "\"required\":[\"city\"]}}}],\"tool_choice\":\"auto\"}",
    "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":"
    "1,\\\"b\\\":\\\"x\\\\ny\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}],"
    "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_"
    "tokens\":15}}",
    "{\"t\":\"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 "
    "\xe2\x80\xa8\"}",
    "{\"u\":\"\\u00e9\\u65e5\\ud83d\\ude00\\u2028\\u0001\\u001f\\u007f\"}",
    "{\"e\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"}",
    "{\"ctl\":\"a\\u0000b\"}",
    "{\"k\\u00e9y\":1,\"k\\ny\":2,\"\":3}",
    "{\"dup\":1,\"x\":2,\"dup\":3}",
    "{\"n\":[0,-0,1,-1,123456789012345678,-123456789012345678,"
    "1234567890123456789,-9223372036854775808,9223372036854775807]}",
    "{\"r\":[0.0,-0.0,1.5,1e3,1E-3,2.5e+10,-1.25e-7,0.1,1e308,1e-400,"
    "3.141592653589793,100000000000000000000.0]}",
    "{\"l\":[true,false,null,[true],[[[]]],{\"a\":{\"b\":{\"c\":null}}}]}",
    "[1,\"two\",3.0,{\"four\":[5]}]",
    "{\"long\":\"" /* a string past the scratch's first size */
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "\\n\\u00e9aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "\"}",
    /* malformed: jansson's errors */
    "",
    "   ",
    "1",
    "\"s\"",
    "null",
    "{",
    "[1,]",
    "{\"a\":1,}",
    "{\"a\" 1}",
    "{a:1}",
    "[01]",
    "[1.]",
    "[.5]",
    "[1e]",
    "[-]",
    "[+1]",
    "[1e400]",
    "[99999999999999999999]",
    "[-99999999999999999999]",
    "[truex]",
    "[nul]",
    "[True]",
    "{\"a\":1} x",
    "{\"a\":1}{}",
    "[\"\\x\"]",
    "[\"\\u12\"]",
    "[\"\\ud83d\"]",
    "[\"\\ude00\"]",
    "[\"\\ud83d\\u0041\"]",
    "[\"tab\there\"]",
    "[\"\xc3\"]",
    "[\"\xc0\x80\"]",
    "[\"\xed\xa0\x80\"]",
    "[\"\xf5\x80\x80\x80\"]",
    "[\"\xe0\x80\xaf\"]",
    "[\xc3\xa9]",
    "{\"\\u0000\":1}",
    "[\"unterminated",
};

static char *
jdump(const json_t *v, size_t flags)
{
    return v != NULL ? json_dumps(v, flags) : NULL;
}

/* the two decoders agree on text (with flags), and both encoders on the
 * value */
static void
same_load(const char *text, size_t len, size_t flags)
{
    json_error_t e1, e2;
    json_t *a = mf_json_loadb(text, len, flags, &e1);
    json_t *b = json_loadb(text, len, flags, &e2);

    ck_assert_msg((a == NULL) == (b == NULL), "accepted by one: %.*s", (int)len,
                  text);
    if (b == NULL) {
        ck_assert_str_eq(e1.text, e2.text);
        ck_assert_int_eq(e1.position, e2.position);
        return;
    }
    ck_assert_msg(json_equal(a, b), "different values: %.*s", (int)len, text);
    /* the key order and the numbers' types: jansson's text of each */
    for (size_t f = 0; f < 4; f++) {
        size_t fl = (f & 1 ? JSON_COMPACT : 0) | (f & 2 ? JSON_ENCODE_ANY : 0);
        char *ta = jdump(a, fl), *tb = jdump(b, fl), *ma = mf_json_dumps(b, fl);

        ck_assert_msg((ta == NULL) == (tb == NULL), "dump of %.*s", (int)len,
                      text);
        ck_assert_msg((ma == NULL) == (tb == NULL), "dump of %.*s", (int)len,
                      text);
        if (tb != NULL) {
            ck_assert_str_eq(ta, tb);
            ck_assert_str_eq(ma, tb);
        }
        free(ta);
        free(tb);
        free(ma);
    }
    json_decref(a);
    json_decref(b);
}

START_TEST(documents)
{
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        const size_t flags[] = {0, JSON_ALLOW_NUL, JSON_DECODE_ANY,
                                JSON_DISABLE_EOF_CHECK, JSON_REJECT_DUPLICATES};
        for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
            same_load(docs[i], strlen(docs[i]), flags[f]);
        }
    }
    /* a NUL byte inside the buffer */
    same_load("[\"a\0b\"]", 7, 0);
    same_load("[1]\0", 4, 0);
}
END_TEST

START_TEST(known_bytes)
{
    json_t *v = json_object();
    char *t;

    json_object_set_new(v, "z", json_string("\xe2\x82\xac\n\x01\""));
    json_object_set_new(v, "a", json_integer(-42));
    json_object_set_new(v, "r", json_real(2.0));
    json_object_set_new(v, "l", json_pack("[bnf]", 1, 0.5));
    t = mf_json_dumps(v, JSON_COMPACT);
    ck_assert_str_eq(t, "{\"z\":\"\xe2\x82\xac\\n\\u0001\\\"\",\"a\":-42,"
                        "\"r\":2.0,\"l\":[true,null,0.5]}");
    free(t);
    t = mf_json_dumps(v, 0);
    ck_assert_str_eq(t, "{\"z\": \"\xe2\x82\xac\\n\\u0001\\\"\", \"a\": -42, "
                        "\"r\": 2.0, \"l\": [true, null, 0.5]}");
    free(t);
    /* flags it leaves to jansson */
    t = mf_json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT);
    ck_assert_str_eq(t, "{\"a\":-42,\"l\":[true,null,0.5],\"r\":2.0,"
                        "\"z\":\"\xe2\x82\xac\\n\\u0001\\\"\"}");
    free(t);
    /* a scalar needs JSON_ENCODE_ANY, as with json_dumps */
    ck_assert_ptr_null(mf_json_dumps(json_object_get(v, "a"), JSON_COMPACT));
    t = mf_json_dumps(json_object_get(v, "a"), JSON_ENCODE_ANY);
    ck_assert_str_eq(t, "-42");
    free(t);
    ck_assert_ptr_null(mf_json_dumps(NULL, JSON_COMPACT));
    json_decref(v);
}
END_TEST

/* mf_json_escape writes a string as the dumps write it, and refuses one
 * that is not valid UTF-8 */
START_TEST(escape)
{
    static const char *const cases[] = {
        "", "plain", "\xe2\x82\xac\n\x01\"\\/\t\r\b\f\x1f\x7f",
        "\xf0\x9f\x98\x80 smile", NULL};
    char dst[256];
    size_t i, n;

    for (i = 0; cases[i] != NULL; i++) {
        json_t *v = json_string(cases[i]);
        char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

        n = mf_json_escape(dst, cases[i], strlen(cases[i]));
        ck_assert_str_eq(dst, t);
        ck_assert_uint_eq(n, strlen(t));
        free(t);
        json_decref(v);
    }
    ck_assert_uint_eq(mf_json_escape(dst, "a\xff", 2), 0);
    ck_assert_uint_eq(mf_json_escape(dst, "\xed\xa0\x80", 3), 0);
}
END_TEST

/* a string that is not valid UTF-8 (json_stringn_nocheck): jansson's
 * answer (none), in a value and in a key */
START_TEST(invalid_utf8)
{
    json_t *v = json_object();

    json_object_set_new(v, "s", json_stringn_nocheck("a\xff", 2));
    ck_assert_ptr_null(json_dumps(v, JSON_COMPACT));
    ck_assert_ptr_null(mf_json_dumps(v, JSON_COMPACT));
    json_decref(v);
    v = json_object();
    json_object_set_new_nocheck(v, "k\xc3", json_true());
    char *a = json_dumps(v, JSON_COMPACT), *b = mf_json_dumps(v, JSON_COMPACT);
    ck_assert_int_eq(a == NULL, b == NULL);
    if (a != NULL) {
        ck_assert_str_eq(a, b);
    }
    free(a);
    free(b);
    json_decref(v);
}
END_TEST

/* both packs of one format and arguments: equal, same bytes, or both
 * refused */
static void
same_pack(json_t *a, json_t *b, const char *fmt)
{
    ck_assert_msg((a == NULL) == (b == NULL), "refused by one: %s", fmt);
    if (a != NULL) {
        char *ta = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
        char *tb = json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY);

        ck_assert_msg(json_equal(a, b), "different values: %s", fmt);
        ck_assert_str_eq(ta, tb);
        free(ta);
        free(tb);
    }
    json_decref(a);
    json_decref(b);
}

#define SAME_PACK(fmt, ...)                                                    \
    same_pack(mf_json_pack(fmt, __VA_ARGS__), json_pack(fmt, __VA_ARGS__), fmt)

START_TEST(pack)
{
    const char *null = NULL;
    json_t *o1, *o2;

    SAME_PACK("{s:s,s:s,s:I,s:s,s:n,s:b,s:{},s:[],s:{s:{s:s}}}", "id", "r1",
              "object", "response", "created_at", (json_int_t)1700000000,
              "status", "completed", "error", "ok", 1, "metadata", "tools",
              "text", "format", "type", "text");
    SAME_PACK("{s:i, s:f, s:b}", "a", -7, "b", 0.1, "c", 0);
    SAME_PACK("[s,i,I,f,n,b]", "x", 1, (json_int_t)-9223372036854775807LL,
              1e300, 1);
    SAME_PACK("s", "caf\xc3\xa9 \xf0\x9f\x98\x80");
    SAME_PACK("i", 42);
    SAME_PACK("{s:s#,s:s%}", "a", "abcdef", 3, "b", "a\0b", (size_t)3);
    SAME_PACK("{s%:s}", "key-cut", (size_t)3, "v");
    SAME_PACK("{s:s?,s:s?}", "a", null, "b", "set");
    SAME_PACK("{s:s,s:s}", "dup", "one", "dup", "two");
    SAME_PACK("[{s:[{s:s,s:s,s:[]}]}]", "content", "type", "output_text",
              "text", "line\n\"quoted\"", "annotations");
    /* refused: NULL strings, invalid UTF-8, NaN, bad formats (jansson's
     * verdict), and the ones handed to jansson as they are */
    SAME_PACK("{s:s}", "a", null);
    SAME_PACK("{s:s}", null, "v");
    SAME_PACK("{s:s}", "a", "bad\xff");
    SAME_PACK("{s:s}", "bad\xc3", "v");
    SAME_PACK("[f]", (double)NAN);
    SAME_PACK("{s:i", "a", 1);
    SAME_PACK("[i]x", 1);
    SAME_PACK("{s:s+}", "a", "b", "c");
    SAME_PACK("{s:s*}", "a", null);
    SAME_PACK("{s?:s}", "a", "b");
    SAME_PACK("[s?#]", "a", 1);

    /* 'O' references, 'o' takes; 'o?' and 'O?' give null for NULL */
    o1 = json_string("x");
    o2 = json_string("x");
    same_pack(mf_json_pack("{s:O,s:O?}", "a", o1, "b", (json_t *)NULL),
              json_pack("{s:O,s:O?}", "a", o2, "b", (json_t *)NULL), "O");
    ck_assert_int_eq(o1->refcount, 1);
    ck_assert_int_eq(o2->refcount, 1);
    json_decref(o1);
    json_decref(o2);
    o1 = json_array();
    o2 = json_array();
    json_incref(o1);
    json_incref(o2);
    same_pack(mf_json_pack("[o,o?]", o1, (json_t *)NULL),
              json_pack("[o,o?]", o2, (json_t *)NULL), "o");
    ck_assert_int_eq(o1->refcount, 1);
    ck_assert_int_eq(o2->refcount, 1);
    json_decref(o1);
    json_decref(o2);
    /* a refused pack with an 'o': jansson's handling of the value */
    o1 = json_array();
    o2 = json_array();
    json_incref(o1);
    json_incref(o2);
    same_pack(mf_json_pack("[o,s]", o1, null), json_pack("[o,s]", o2, null),
              "o refused");
    ck_assert_int_eq(o1->refcount, o2->refcount);
    json_decref(o1);
    json_decref(o2);
}
END_TEST

static unsigned long long seed = 88172645463325252ULL;

static unsigned
rnd(unsigned n)
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return (unsigned)(seed % n);
}

static json_t *
random_value(int depth)
{
    static const char *const words[] = {"a",
                                        "\"",
                                        "\\",
                                        "/",
                                        "\n",
                                        "\t",
                                        "\x01",
                                        "\x1f",
                                        "\x7f",
                                        " ",
                                        "\xc3\xa9",
                                        "\xe6\x97\xa5",
                                        "\xf0\x9f\x98\x80",
                                        "\xe2\x80\xa8",
                                        "text",
                                        "{\"x\":1}"};
    char buf[64];
    size_t n = 0;

    switch (rnd(depth > 4 ? 6 : 8)) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(rnd(2));
    case 2:
        return json_integer((json_int_t)((seed >> rnd(64)) >> 1) *
                            (rnd(2) ? 1 : -1));
    case 3:
        return json_real((double)(int)rnd(100000) / (double)(1 + rnd(1000)) *
                         (rnd(2) ? 1e-5 : 1e12));
    case 4:
    case 5:
        for (unsigned k = rnd(6); k > 0; k--) {
            const char *w = words[rnd(sizeof words / sizeof words[0])];
            if (n + strlen(w) < sizeof buf) {
                memcpy(buf + n, w, strlen(w));
                n += strlen(w);
            }
        }
        return json_stringn(buf, n);
    case 6: {
        json_t *a = json_array();
        for (unsigned k = rnd(5); k > 0; k--) {
            json_array_append_new(a, random_value(depth + 1));
        }
        return a;
    }
    default: {
        json_t *o = json_object();
        for (unsigned k = rnd(5); k > 0; k--) {
            snprintf(buf, sizeof buf, "%s%u",
                     words[rnd(sizeof words / sizeof words[0])], rnd(4));
            json_object_set_new(o, buf, random_value(depth + 1));
        }
        return o;
    }
    }
}

START_TEST(random_values_and_mutations)
{
    for (int i = 0; i < 3000; i++) {
        json_t *v = json_object();
        json_object_set_new(v, "v", random_value(0));
        char *text = json_dumps(v, i % 2 ? JSON_COMPACT : 0);
        size_t len = strlen(text);

        same_load(text, len, 0);
        same_load(text, len, JSON_ALLOW_NUL);
        /* a few bytes changed, cut or doubled */
        for (int m = 0; m < 4; m++) {
            char *t = malloc(len + 2);
            memcpy(t, text, len + 1);
            size_t at = rnd((unsigned)len);
            switch (rnd(4)) {
            case 0:
                t[at] = (char)rnd(256);
                same_load(t, len, 0);
                break;
            case 1:
                same_load(t, at, 0);
                break;
            case 2:
                memmove(t + at + 1, t + at, len - at + 1);
                same_load(t, len + 1, 0);
                break;
            default:
                t[at] = "{}[]\",:\\0-e.u"[rnd(13)];
                same_load(t, len, 0);
            }
            free(t);
        }
        free(text);
        json_decref(v);
    }
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, documents);
    tcase_add_test(tc, known_bytes);
    tcase_add_test(tc, invalid_utf8);
    tcase_add_test(tc, escape);
    tcase_add_test(tc, pack);
    tcase_add_test(tc, random_values_and_mutations);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 1);
}
