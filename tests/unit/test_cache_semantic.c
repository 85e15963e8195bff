/* Check suite for plugins/cache/semantic-index.c: the guard signature
 * (negations and numbers), matching by cosine within a partition, the
 * max_entries bound (LRU), removal, and the lookup time at 100,000
 * entries (printed, never asserted). */
#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugins/cache/semantic-index.h"

/* The mock upstream's "bow" embedding (tests/mock/mock.c): each word
 * adds 1 to the dimension its FNV-1a hash picks, 64 dimensions. */
static void
bow(const char *s, float v[64])
{
    memset(v, 0, 64 * sizeof(float));
    while (*s) {
        unsigned h = 2166136261u;
        int len = 0;

        while (*s && !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                       (*s >= '0' && *s <= '9'))) {
            s++;
        }
        while ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
               (*s >= '0' && *s <= '9')) {
            char c = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
            h = (h ^ (unsigned char)c) * 16777619u;
            len++;
            s++;
        }
        if (len > 0) {
            v[h % 64] += 1.0f;
        }
    }
}

static const uint8_t part_a[SI_PART_LEN] = {1};
static const uint8_t part_b[SI_PART_LEN] = {2};

static char *
sig(const char *s)
{
    return si_guard_sig(s, strlen(s));
}

static void
put(si_index_t *x, const uint8_t *part, const char *q, const char *key)
{
    float v[64];
    char *g = sig(q);

    bow(q, v);
    ck_assert_int_eq(si_put(x, part, v, 64, g, key), 0);
    free(g);
}

/* The key found for q (threshold th), or "" */
static const char *
find(si_index_t *x, const uint8_t *part, const char *q, double th, double *sim)
{
    static char key[SI_KEY_LEN + 1];
    float v[64];
    char *g = sig(q);
    int found;

    bow(q, v);
    found = si_find(x, part, v, 64, g, th, key, sim);
    free(g);
    return found ? key : "";
}

START_TEST(guard_signature)
{
    char *s;

    s = sig("Turn ON the light");
    ck_assert_str_eq(s, "on");
    free(s);
    s = sig("Please don't turn off the light, never");
    ck_assert_str_eq(s, "dont never off");
    free(s);
    s = sig("what is 12 times 1,000 and 2.50?");
    ck_assert_str_eq(s, "1000 12 2.5");
    free(s);
    s = sig("what is 2.5 times 12 and 1000?");
    ck_assert_str_eq(s, "1000 12 2.5");
    free(s);
    s = sig("the capital of France");
    ck_assert_str_eq(s, "");
    free(s);
    s = sig("it isn\xe2\x80\x99t -3 degrees");
    ck_assert_str_eq(s, "-3 isnt");
    free(s);
}
END_TEST

START_TEST(paraphrase_hits_negation_number_partition_miss)
{
    si_index_t *x = si_new(100);
    double sim = 0;

    put(x, part_a, "what is the capital city of france", "k1");
    put(x, part_a, "please turn on the kitchen light now", "k2");
    put(x, part_a, "what is 12 times 7 in my head", "k3");
    /* reordered words: the same bag */
    ck_assert_str_eq(
        find(x, part_a, "the capital city of france is what", 0.9, &sim), "k1");
    ck_assert(sim > 0.999);
    /* threshold 1: the same bag of words, whatever the float rounding */
    ck_assert_str_eq(
        find(x, part_a, "the capital city of france is what", 1.0, &sim), "k1");
    /* one filler word more: 7/sqrt(7*8) = 0.935 */
    ck_assert_str_eq(
        find(x, part_a, "what is the capital city of france today", 0.9, &sim),
        "k1");
    ck_assert(sim > 0.9 && sim < 0.999);
    /* a different question */
    ck_assert_str_eq(find(x, part_a, "how tall is the eiffel tower", 0.9, &sim),
                     "");
    /* near enough by cosine at a low threshold, refused by the guard */
    ck_assert_str_eq(
        find(x, part_a, "please turn off the kitchen light now", 0.5, &sim),
        "");
    ck_assert_str_eq(
        find(x, part_a, "please turn on the kitchen light now", 0.5, &sim),
        "k2");
    ck_assert_str_eq(
        find(x, part_a, "please turn the kitchen light now", 0.5, &sim), "");
    ck_assert_str_eq(
        find(x, part_a, "what is 12 times 8 in my head", 0.5, &sim), "");
    ck_assert_str_eq(
        find(x, part_a, "what is 12 times 7 in my head", 0.5, &sim), "k3");
    /* another partition never answers */
    ck_assert_str_eq(
        find(x, part_b, "what is the capital city of france", 0.5, &sim), "");
    si_free(x);
}
END_TEST

START_TEST(bound_lru_replace_remove)
{
    si_index_t *x = si_new(3);
    double sim;

    put(x, part_a, "alpha one", "k1");
    put(x, part_a, "beta two", "k2");
    put(x, part_a, "gamma three", "k3");
    /* a lookup makes k1 the most recent: k2 goes first */
    ck_assert_str_eq(find(x, part_a, "alpha one", 0.9, &sim), "k1");
    put(x, part_a, "delta four", "k4");
    ck_assert_uint_eq(si_count(x), 3);
    ck_assert_str_eq(find(x, part_a, "beta two", 0.9, &sim), "");
    ck_assert_str_eq(find(x, part_a, "alpha one", 0.9, &sim), "k1");
    ck_assert_str_eq(find(x, part_a, "gamma three", 0.9, &sim), "k3");
    /* the same key again replaces its entry */
    put(x, part_a, "epsilon five", "k3");
    ck_assert_uint_eq(si_count(x), 3);
    ck_assert_str_eq(find(x, part_a, "gamma three", 0.9, &sim), "");
    ck_assert_str_eq(find(x, part_a, "epsilon five", 0.9, &sim), "k3");
    ck_assert_int_eq(si_remove(x, "k3"), 1);
    ck_assert_int_eq(si_remove(x, "k3"), 0);
    ck_assert_uint_eq(si_count(x), 2);
    ck_assert_str_eq(find(x, part_a, "epsilon five", 0.9, &sim), "");
    /* a zero vector is refused, and another dimension in a partition */
    {
        float z[64] = {0}, w[8] = {1};
        ck_assert_int_eq(si_put(x, part_a, z, 64, "", "k9"), -1);
        ck_assert_int_eq(si_put(x, part_a, w, 8, "", "k9"), -1);
        ck_assert_int_eq(si_put(x, part_b, w, 8, "", "k9"), 0);
        ck_assert_uint_eq(si_count(x), 3);
    }
    si_free(x);
}
END_TEST

static double
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID,
                  &ts); /* CPU time: the machine may be shared */
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* 100,000 uniformly random entries of 64 dimensions, in one partition
 * (the worst case: a lookup reads the query's partition), then spread
 * over 1000 partitions. */
START_TEST(lookup_time_100k)
{
    const size_t n = 100000;
    si_index_t *x = si_new(n);
    unsigned seed = 42;
    float v[64];
    char key[32];
    double t0, sim, per;
    size_t i;
    int d, q, found = 0;

    for (i = 0; i < n; i++) {
        for (d = 0; d < 64; d++) {
            v[d] = (float)(rand_r(&seed) % 1000) / 1000.0f - 0.5f;
        }
        snprintf(key, sizeof(key), "k%zu", i);
        ck_assert_int_eq(si_put(x, part_a, v, 64, "", key), 0);
    }
    ck_assert_uint_eq(si_count(x), n);
    t0 = now_us();
    for (q = 0; q < 50; q++) {
        char out[SI_KEY_LEN + 1];
        for (d = 0; d < 64; d++) {
            v[d] = (float)(rand_r(&seed) % 1000) / 1000.0f - 0.5f;
        }
        found += si_find(x, part_a, v, 64, "", 0.95, out, &sim);
    }
    per = (now_us() - t0) / 50;
    printf("semantic index: lookup over %zu entries of 64 dims, one "
           "partition: %.0f us (%d of 50 random queries matched)\n",
           n, per, found);
    /* the same, the entries spread over 1000 partitions */
    si_free(x);
    x = si_new(n);
    for (i = 0; i < n; i++) {
        uint8_t p[SI_PART_LEN] = {0};
        p[0] = (uint8_t)(i % 1000 & 0xff);
        p[1] = (uint8_t)(i % 1000 >> 8);
        for (d = 0; d < 64; d++) {
            v[d] = (float)(rand_r(&seed) % 1000) / 1000.0f - 0.5f;
        }
        snprintf(key, sizeof(key), "k%zu", i);
        ck_assert_int_eq(si_put(x, p, v, 64, "", key), 0);
    }
    found = 0;
    t0 = now_us();
    for (q = 0; q < 50; q++) {
        char out[SI_KEY_LEN + 1];
        for (d = 0; d < 64; d++) {
            v[d] = (float)(rand_r(&seed) % 1000) / 1000.0f - 0.5f;
        }
        found += si_find(x, part_b, v, 64, "", 0.95, out, &sim);
    }
    per = (now_us() - t0) / 50;
    printf("semantic index: lookup over %zu entries of 64 dims, 1000 "
           "partitions: %.0f us (%d of 50 random queries matched)\n",
           n, per, found);
    si_free(x);
}
END_TEST

/* A normal-ish value from xorshift (the sum of four uniforms). */
static float
noise(uint64_t *st)
{
    float sum = 0;
    int i;

    for (i = 0; i < 4; i++) {
        *st ^= *st << 13;
        *st ^= *st >> 7;
        *st ^= *st << 17;
        sum += (float)(*st >> 40) / (float)(1 << 24) - 0.5f;
    }
    return sum;
}

/* 100,000 entries of dim dimensions in one partition, like real
 * embeddings: every vector shares a common part (unrelated questions at
 * a cosine of about 0.3). A lookup over them goes through the sketches
 * (the signs, or below 128 dimensions the signs of projections), then
 * the exact cosine of the nearest: near copies of stored questions
 * (cosine about 0.97) must all find their own entry; random questions
 * find none. The times are printed, never asserted. */
static void
lookup_dims_100k(int dim)
{
    const size_t n = 100000;
    si_index_t *x = si_new(n);
    uint64_t st = 88172645463325252ull;
    float *common = malloc((size_t)dim * sizeof(float));
    float *v = malloc((size_t)dim * sizeof(float));
    float *keep = malloc(50 * (size_t)dim * sizeof(float));
    char key[32], out[SI_KEY_LEN + 1];
    double t0, sim, near_us, far_us;
    size_t i;
    int d, q, found = 0;

    ck_assert_ptr_nonnull(common);
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_nonnull(keep);
    for (d = 0; d < dim; d++) {
        common[d] = noise(&st);
    }
    for (i = 0; i < n; i++) {
        for (d = 0; d < dim; d++) {
            v[d] = 0.65f * common[d] + noise(&st);
        }
        if (i % 2000 == 0) { /* 50 of them, spread over the index */
            memcpy(keep + (i / 2000) * (size_t)dim, v, (size_t)dim * 4);
        }
        snprintf(key, sizeof(key), "k%zu", i);
        ck_assert_int_eq(si_put(x, part_a, v, dim, "", key), 0);
    }
    ck_assert_uint_eq(si_count(x), n);
    /* near copies: each stored vector plus a little noise */
    t0 = now_us();
    for (q = 0; q < 50; q++) {
        for (d = 0; d < dim; d++) {
            v[d] = keep[(size_t)q * dim + d] + 0.25f * noise(&st);
        }
        ck_assert_int_eq(si_find(x, part_a, v, dim, "", 0.95, out, &sim), 1);
        snprintf(key, sizeof(key), "k%d", q * 2000);
        ck_assert_str_eq(out, key);
        ck_assert(sim >= 0.95 && sim < 0.999);
    }
    near_us = (now_us() - t0) / 50;
    t0 = now_us();
    for (q = 0; q < 50; q++) {
        for (d = 0; d < dim; d++) {
            v[d] = 0.65f * common[d] + noise(&st);
        }
        found += si_find(x, part_a, v, dim, "", 0.95, out, &sim);
    }
    far_us = (now_us() - t0) / 50;
    ck_assert_int_eq(found, 0);
    printf("semantic index: lookup over %zu entries of %d dims, one "
           "partition (sketch, then exact on the nearest): %.0f us for a "
           "near question (50 of 50 found), %.0f us for an unrelated one\n",
           n, dim, near_us, far_us);
    si_free(x);
    free(common);
    free(v);
    free(keep);
}

START_TEST(lookup_64_dims_100k)
{
    lookup_dims_100k(64);
}
END_TEST

START_TEST(lookup_256_dims_100k)
{
    lookup_dims_100k(256);
}
END_TEST

START_TEST(lookup_1536_dims_100k)
{
    lookup_dims_100k(1536);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("cache_semantic");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, guard_signature);
    tcase_add_test(tc, paraphrase_hits_negation_number_partition_miss);
    tcase_add_test(tc, bound_lru_replace_remove);
    tcase_add_test(tc, lookup_time_100k);
    tcase_add_test(tc, lookup_64_dims_100k);
    tcase_add_test(tc, lookup_256_dims_100k);
    tcase_add_test(tc, lookup_1536_dims_100k);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 1);
}
