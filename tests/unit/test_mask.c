/*
 * The safety stages' engines: every built-in detector's positives and
 * near misses, overlap resolution, the placeholder restorer over every
 * split of a text, and the keyword automaton (carried state, depth).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "../../plugins/common/kwmatch.h"
#include "../../plugins/common/mask_detect.h"
#include "../../plugins/mask/mask_restore.h"

/* The values `kind` finds in s, joined by '|'. */
static const char *
found(const char *s, int kind)
{
    static char out[1024];
    mf_mask_matches_t m = {0};
    size_t i, w = 0;

    mf_mask_detect(s, strlen(s), 1u << kind, &m);
    mf_mask_matches_resolve(&m);
    out[0] = '\0';
    for (i = 0; i < m.n; i++) {
        w += (size_t)snprintf(out + w, sizeof(out) - w, "%s%.*s", i ? "|" : "",
                              (int)m.v[i].len, s + m.v[i].start);
    }
    mf_mask_matches_free(&m);
    return out;
}

START_TEST(email)
{
    ck_assert_str_eq(found("to a.b+c@mail.example.co.uk, ok", MF_MASK_EMAIL),
                     "a.b+c@mail.example.co.uk");
    ck_assert_str_eq(found("x@y.io and z@w.com.", MF_MASK_EMAIL),
                     "x@y.io|z@w.com");
    ck_assert_str_eq(
        found("me@localhost @home a@b.c a@.com a@b..com", MF_MASK_EMAIL), "");
    ck_assert_str_eq(found("邮箱：张@例子.中国 li@example.cn。", MF_MASK_EMAIL),
                     "li@example.cn");
}
END_TEST

START_TEST(phone)
{
    ck_assert_str_eq(found("call +1 415-555-0100 now", MF_MASK_PHONE),
                     "+1 415-555-0100");
    ck_assert_str_eq(found("+44 20 7946 0958,+8613812345678", MF_MASK_PHONE),
                     "+44 20 7946 0958|+8613812345678");
    ck_assert_str_eq(found("手机13812345678，或 139-1234-5678", MF_MASK_PHONE),
                     "13812345678|139-1234-5678");
    /* too short, too long, not a mobile prefix, inside a longer number */
    ck_assert_str_eq(found("+1 234, +1234567890123456, 12812345678, "
                           "1381234567890, a13812345678",
                           MF_MASK_PHONE),
                     "");
}
END_TEST

START_TEST(cn_id)
{
    ck_assert(mf_mask_cn_id_valid("11010519491231002X"));
    ck_assert(!mf_mask_cn_id_valid("110105194912310021"));
    ck_assert_str_eq(found("身份证11010519491231002X。", MF_MASK_CN_ID),
                     "11010519491231002X");
    ck_assert_str_eq(found("id 11010519491231002x ok", MF_MASK_CN_ID),
                     "11010519491231002x");
    /* bad check digit, bad month, a longer number */
    ck_assert_str_eq(found("110105194912310021 110105194913310028 "
                           "1110105194912310021",
                           MF_MASK_CN_ID),
                     "");
}
END_TEST

START_TEST(ssn)
{
    ck_assert_str_eq(found("ssn 123-45-6789.", MF_MASK_SSN), "123-45-6789");
    ck_assert_str_eq(found("000-12-3456 666-12-3456 912-12-3456 123-00-4567 "
                           "123-45-0000 1123-45-6789 123-45-67890 123456789",
                           MF_MASK_SSN),
                     "");
}
END_TEST

START_TEST(card)
{
    ck_assert(mf_mask_luhn("4111111111111111", 16));
    ck_assert(!mf_mask_luhn("4111111111111112", 16));
    ck_assert_str_eq(
        found("card 4111 1111 1111 1111 and 5500-0000-0000-0004", MF_MASK_CARD),
        "4111 1111 1111 1111|5500-0000-0000-0004");
    ck_assert_str_eq(
        found("amex 378282246310005, x6011111111111117", MF_MASK_CARD),
        "378282246310005");
    /* a 16-digit number that fails Luhn is not a card; 12 digits is not
     * one; 20 digits is not one */
    ck_assert_str_eq(found("4111111111111112 411111111111 "
                           "41111111111111111113",
                           MF_MASK_CARD),
                     "");
}
END_TEST

START_TEST(ip)
{
    ck_assert_str_eq(
        found("hosts 10.0.0.1, 255.255.255.255 and 8.8.8.8.", MF_MASK_IP),
        "10.0.0.1|255.255.255.255|8.8.8.8");
    ck_assert_str_eq(
        found("v6 2001:db8::1 and fe80::1ff:fe23:4567:890a ok", MF_MASK_IP),
        "2001:db8::1|fe80::1ff:fe23:4567:890a");
    ck_assert_str_eq(found("256.1.1.1 1.2.3 1.2.3.4.5 01.2.3.4 12:30:45 "
                           "a::b::c v1.2.3.4",
                           MF_MASK_IP),
                     "");
}
END_TEST

START_TEST(keys)
{
    ck_assert_str_eq(
        found("k sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t end", MF_MASK_API_KEY),
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t");
    ck_assert_str_eq(
        found("sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2", MF_MASK_API_KEY),
        "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2");
    ck_assert_str_eq(
        found("AKIAIOSFODNN7EXAMPLE ASIAXXXXXXXXXXXXXXXX1", MF_MASK_API_KEY),
        "AKIAIOSFODNN7EXAMPLE");
    ck_assert_str_eq(found("ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8 "
                           "github_pat_11ABCDEFG0123456789abcdefghij",
                           MF_MASK_API_KEY),
                     "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8|"
                     "github_pat_11ABCDEFG0123456789abcdefghij");
    ck_assert_str_eq(found("sk-short task-Ab3dEf6hIj9kLm2nOp5qRs8t "
                           "ghp_short",
                           MF_MASK_API_KEY),
                     "");
    ck_assert_str_eq(
        found("tok Zq8xW3vB9nM2kL7jH4gF6dS1aP0oI5uY end", MF_MASK_SECRET),
        "Zq8xW3vB9nM2kL7jH4gF6dS1aP0oI5uY");
    /* a git hash, a long word, a repeated pattern: not secrets */
    ck_assert_str_eq(found("0123456789abcdef0123456789abcdef01234567 "
                           "Pneumonoultramicroscopicsilicovolcanoconiosis "
                           "Ab1Ab1Ab1Ab1Ab1Ab1Ab1Ab1Ab1Ab1Ab1Ab1",
                           MF_MASK_SECRET),
                     "");
}
END_TEST

/* The one-pass scan works on 64-byte blocks: every kind of value is found
 * alone and whole wherever it sits, across a block's edge, at the text's
 * start and end (the short last block), after text with no separator. */
START_TEST(block_edges)
{
    static const struct {
        const char *v;
        unsigned kind;
    } vals[] = {
        {"jane.doe@example.com", MF_MASK_EMAIL},
        {"+1 415-555-0100", MF_MASK_PHONE},
        {"13812345678", MF_MASK_PHONE},
        {"11010519491231002X", MF_MASK_CN_ID},
        {"123-45-6789", MF_MASK_SSN},
        {"4111 1111 1111 1111", MF_MASK_CARD},
        {"192.168.10.1", MF_MASK_IP},
        {"fe80::1ff:fe23:4567:890a", MF_MASK_IP},
        {"sk-abcdefghijklmnopqrstuvwxyz012345", MF_MASK_API_KEY},
        {"AKIAIOSFODNN7EXAMPLE", MF_MASK_API_KEY},
        {"Zq8xT3vLm9Pw2Ks7Hd4Nf6Rb1Yc5Jg0A", MF_MASK_SECRET},
    };
    static const char *const pads[] = {
        "the order ", "\xe4\xb8\xad\xe6\x96\x87 ", "a,b;c|d ", "x\ny\tz "};
    char text[512];
    size_t i, off, p, tail;

    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        for (p = 0; p < 4; p++) {
            for (off = 0; off < 140; off++) {
                mf_mask_matches_t m = {0};
                size_t vl = strlen(vals[i].v), k;

                for (k = 0; k < off; k++) {
                    text[k] = pads[p][k % strlen(pads[p])];
                }
                if (off > 0) {
                    text[off - 1] = ' ';
                }
                memcpy(text + off, vals[i].v, vl);
                for (tail = 0; tail < 2; tail++) {
                    size_t n = off + vl + (tail ? 9 : 0);

                    memcpy(text + off + vl, " and more", tail ? 9 : 0);
                    m.n = 0;
                    mf_mask_detect(text, n, (1u << MF_MASK__BUILTIN) - 1, &m);
                    mf_mask_matches_resolve(&m);
                    ck_assert_msg(m.n == 1 && m.v[0].start == off &&
                                      m.v[0].len == vl &&
                                      m.v[0].rule == vals[i].kind,
                                  "%s at %zu (pad %zu, tail %zu): %zu found",
                                  vals[i].v, off, p, tail, m.n);
                }
                mf_mask_matches_free(&m);
            }
        }
    }
}
END_TEST

/* Many values in one text, each found. */
START_TEST(many_values)
{
    static char text[64 * 1024];
    size_t w = 0, i;
    mf_mask_matches_t m = {0};

    for (i = 0; i < 1000; i++) {
        w += (size_t)snprintf(text + w, sizeof(text) - w,
                              "user%zu@example.com, 4111-1111-1111-1111; ", i);
    }
    mf_mask_detect(text, w, (1u << MF_MASK__BUILTIN) - 1, &m);
    mf_mask_matches_resolve(&m);
    ck_assert_uint_eq(m.n, 2000);
    for (i = 0; i < m.n; i++) {
        ck_assert_uint_eq(m.v[i].rule, i % 2 ? MF_MASK_CARD : MF_MASK_EMAIL);
    }
    mf_mask_matches_free(&m);
}
END_TEST

START_TEST(resolve)
{
    mf_mask_matches_t m = {0};

    mf_mask_matches_add(&m, 10, 5, 3);
    mf_mask_matches_add(&m, 0, 4, 1);
    mf_mask_matches_add(&m, 2, 3, 0); /* overlaps the first */
    mf_mask_matches_add(&m, 10, 8, 4);
    mf_mask_matches_resolve(&m);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_uint_eq(m.v[0].start, 0);
    ck_assert_uint_eq(m.v[1].len, 8);
    mf_mask_matches_free(&m);
}
END_TEST

static char p1[] = "[EMAIL_1]", p2[] = "[EMAIL_10]", p3[] = "[PHONE_1]";
static char v1[] = "a@b.io", v2[] = "j@k.io", v3[] = "+1 415-555-0100";
static mf_mask_entry_t entries[] = {
    {p1, 9, v1, 6},
    {p2, 10, v2, 6},
    {p3, 9, v3, 15},
};

START_TEST(restore_splits)
{
    static const char *const texts[] = {
        "mail [EMAIL_1] or [EMAIL_10], call [PHONE_1]!",
        "[EMAIL_1][PHONE_1]",
        "no [EMAIL_2] [EMAIL_ [ [[EMAIL_1]] [PHONE",
        "",
        "[",
    };
    size_t t, a, b;

    for (t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
        const char *s = texts[t];
        size_t n = strlen(s);
        mf_mask_buf_t whole = {0}, held = {0};

        mf_mask_restore(entries, 3, &held, s, n, 1, &whole);
        ck_assert_uint_eq(held.len, 0);
        /* every split into three pieces gives the same text, and no piece
         * ends inside a placeholder */
        for (a = 0; a <= n; a++) {
            for (b = a; b <= n; b++) {
                mf_mask_buf_t out = {0};
                size_t before;

                held.len = 0;
                mf_mask_restore(entries, 3, &held, s, a, 0, &out);
                before = out.len;
                mf_mask_restore(entries, 3, &held, s + a, b - a, 0, &out);
                ck_assert(out.len >= before);
                mf_mask_restore(entries, 3, &held, s + b, n - b, 1, &out);
                ck_assert_uint_eq(out.len, whole.len);
                ck_assert(out.len == 0 ||
                          memcmp(out.data, whole.data, out.len) == 0);
                ck_assert_uint_eq(held.len, 0);
                mf_mask_buf_free(&out);
            }
        }
        mf_mask_buf_free(&whole);
        mf_mask_buf_free(&held);
    }
}
END_TEST

START_TEST(restore_holds_only_prefixes)
{
    mf_mask_buf_t out = {0}, held = {0};

    mf_mask_restore(entries, 3, &held, "x [EMA", 6, 0, &out);
    ck_assert_uint_eq(out.len, 2);
    ck_assert_uint_eq(held.len, 4);
    mf_mask_restore(entries, 3, &held, "IL_1] y [Q", 10, 0, &out);
    ck_assert_uint_eq(held.len, 0); /* "[Q" begins no placeholder */
    ck_assert(out.len == 13 && memcmp(out.data, "x a@b.io y [Q", 13) == 0);
    mf_mask_buf_free(&out);
    mf_mask_buf_free(&held);
}
END_TEST

typedef struct {
    char hits[256];
    size_t n;
} hits_t;

static int
on_hit(void *arg, size_t end, size_t len, unsigned id)
{
    hits_t *h = arg;

    h->n += (size_t)snprintf(h->hits + h->n, sizeof(h->hits) - h->n,
                             "%u:%zu:%zu ", id, end, len);
    return 0;
}

START_TEST(keywords)
{
    mf_kw_t *kw = mf_kw_new(1);
    hits_t h = {{0}, 0};
    unsigned st;

    mf_kw_add(kw, "he", 2, 0);
    mf_kw_add(kw, "she", 3, 1);
    mf_kw_add(kw, "his", 3, 2);
    mf_kw_add(kw, "hers", 4, 3);
    mf_kw_build(kw);
    mf_kw_feed(kw, 0, "uSHErs", 6, on_hit, &h);
    ck_assert_str_eq(h.hits, "1:4:3 0:4:2 3:6:4 ");
    /* carried across pieces; the depth is the prefix in progress */
    h.n = 0;
    h.hits[0] = '\0';
    st = mf_kw_feed(kw, 0, "xxhe", 4, on_hit, &h);
    h.n = 0;
    h.hits[0] = '\0';
    ck_assert_uint_eq(mf_kw_depth(kw, st), 2);
    st = mf_kw_feed(kw, st, "r", 1, on_hit, &h);
    ck_assert_uint_eq(mf_kw_depth(kw, st), 3);
    st = mf_kw_feed(kw, st, "s!", 2, on_hit, &h);
    ck_assert_str_eq(h.hits, "3:1:4 ");
    ck_assert_uint_eq(mf_kw_depth(kw, st), 0);
    ck_assert_int_eq(mf_kw_add(kw, "", 0, 9), -1);
    mf_kw_free(kw);
}
END_TEST

static Suite *
mask_suite(void)
{
    Suite *s = suite_create("mask");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, email);
    tcase_add_test(tc, phone);
    tcase_add_test(tc, cn_id);
    tcase_add_test(tc, ssn);
    tcase_add_test(tc, card);
    tcase_add_test(tc, ip);
    tcase_add_test(tc, keys);
    tcase_add_test(tc, block_edges);
    tcase_add_test(tc, many_values);
    tcase_add_test(tc, resolve);
    tcase_add_test(tc, restore_splits);
    tcase_add_test(tc, restore_holds_only_prefixes);
    tcase_add_test(tc, keywords);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return mf_check_run(mask_suite(), 0);
}
