/*
 * The semantic index (semantic-index.h): entries in a dense array per
 * partition (a lookup scans only its partition), a map of keys, and an
 * LRU list (the bound), under one read-write lock: lookups scan
 * together under the read lock (the LRU move of a hit takes the write
 * lock after the scan), puts and removes take the write lock.
 *
 * A large partition (more than SI_STAGE1 entries and entries x
 * dimensions above SI_EXACT_MACS) is searched in three
 * steps: each vector also has a sketch, its signs as bits (dim / 8
 * bytes), and a lookup computes the Hamming distance (XOR and popcount,
 * 64 dimensions a word) of the query's first SI_HEAD_WORDS words to
 * every entry's (a compact array: 16 bytes an entry, so the pass reads
 * little memory), keeps the SI_STAGE1 nearest, computes the whole
 * sketches' distance of those, keeps the SI_RERANK nearest and computes
 * the exact cosine of those only. The fraction of differing signs of
 * two vectors estimates their angle (angle / pi): a question at cosine
 * 0.95 differs in about 10% of its signs, an unrelated one in 30 to
 * 50%, so the near question is among the candidates unless more others
 * are nearer by their signs; the threshold and the guards apply to the
 * exact cosine, so the sketch can only cost a hit, never give a wrong
 * one.
 *
 * A vector of fewer than SI_SKETCH_MIN_DIM dimensions has too few signs
 * for that estimate (64 signs: a near question's distance spreads over
 * that of thousands of others), so its sketch is instead the signs of
 * its projections on SI_SKETCH_MIN_DIM fixed pseudo-random directions
 * (random-hyperplane hashing: the share of differing bits estimates the
 * angle / pi in the same way); the head is then the whole sketch, and
 * the exact cosine is computed for all SI_STAGE1 candidates (cheap at
 * these dimensions).
 */
#include "semantic-index.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gov.h"

#define SI_SKETCH_MIN_DIM 128
#define SI_EXACT_MACS (1u << 20) /* an exact scan up to n * dim of this */
#define SI_HEAD_WORDS 2          /* the first 128 signs */
#define SI_STAGE1 512
#define SI_RERANK 32
#define SI_PROJ_BITS (64 * SI_HEAD_WORDS) /* a short vector's sketch */

typedef struct si_bucket_s si_bucket_t;

typedef struct si_entry_s {
    struct si_entry_s *prev; /* LRU: towards the most recent */
    struct si_entry_s *next;
    si_bucket_t *bucket; /* its partition */
    size_t slot;         /* its index in the partition's array */
    char key[SI_KEY_LEN + 1];
    char *sig;
} si_entry_t;

/* The entries of one partition. */
struct si_bucket_s {
    char name[2 * SI_PART_LEN + 1]; /* the partition, hex */
    si_entry_t **v;
    float *vecs;    /* entry i's vector (unit length) at i * dim */
    uint64_t *bits; /* entry i's sketch (signs) at i * words */
    uint64_t *head; /* its first SI_HEAD_WORDS words, at i * SI_HEAD_WORDS */
    int dim;        /* the first entry's: one per partition */
    size_t words;   /* (dim + 63) / 64, SI_HEAD_WORDS below 128 dims */
    size_t n, cap;
};

struct si_index_s {
    pthread_rwlock_t lock;
    gov_map_t *parts; /* partition (hex) -> si_bucket_t */
    gov_map_t *keys;  /* key -> entry */
    size_t n;
    size_t max;
    si_entry_t *head; /* most recently used */
    si_entry_t *tail;
};

/* Words whose presence flips or qualifies a question's meaning. */
static const char *const polarity[] = {
    "not",     "no",       "never",   "none",     "nothing",  "nobody",
    "neither", "nor",      "without", "cannot",   "off",      "on",
    "dont",    "doesnt",   "didnt",   "isnt",     "arent",    "wasnt",
    "werent",  "cant",     "couldnt", "wont",     "wouldnt",  "shouldnt",
    "hasnt",   "havent",   "hadnt",   "mustnt",   "enable",   "disable",
    "enabled", "disabled", "yes",     "true",     "false",    "before",
    "after",   "above",    "below",   "more",     "less",     "min",
    "max",     "minimum",  "maximum", "increase", "decrease", "up",
    "down",    "open",     "close",   "start",    "stop",     NULL};

static int
is_polarity(const char *w)
{
    int i;

    for (i = 0; polarity[i] != NULL; i++) {
        if (strcmp(polarity[i], w) == 0) {
            return 1;
        }
    }
    return 0;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Words: letters (lower-cased; an apostrophe inside a word is dropped,
 * so "don't" is "dont"). Numbers: digits with inner '.' or ','
 * separators, "1,000" and "1000" alike, "2.50" and "2.5" alike. */
char *
si_guard_sig(const char *text, size_t len)
{
    char **toks = NULL, *out, *p;
    size_t ntok = 0, cap = 0, i = 0, total = 1, k;

    while (i < len) {
        unsigned char c = (unsigned char)text[i];
        char buf[64];
        size_t b = 0;
        int num = 0;

        if (isalpha(c)) {
            while (i < len) {
                c = (unsigned char)text[i];
                if (isalpha(c)) {
                    if (b < sizeof(buf) - 1) {
                        buf[b++] = (char)tolower(c);
                    }
                } else if ((c == '\'' || c == 0xe2) && i + 1 < len) {
                    /* ' or the UTF-8 right single quote (E2 80 99) */
                    size_t skip = c == '\'' ? 1 : 3;
                    if (i + skip < len &&
                        (c == '\'' || ((unsigned char)text[i + 1] == 0x80 &&
                                       (unsigned char)text[i + 2] == 0x99)) &&
                        isalpha((unsigned char)text[i + skip])) {
                        i += skip;
                        continue;
                    }
                    break;
                } else {
                    break;
                }
                i++;
            }
            buf[b] = '\0';
            if (!is_polarity(buf)) {
                continue;
            }
        } else if (isdigit(c) || ((c == '-' || c == '.') && i + 1 < len &&
                                  isdigit((unsigned char)text[i + 1]))) {
            int dot = -1;

            num = 1;
            if (c == '-') {
                buf[b++] = '-';
                i++;
            }
            while (i < len && b < sizeof(buf) - 1) {
                c = (unsigned char)text[i];
                if (isdigit(c)) {
                    buf[b++] = (char)c;
                } else if ((c == '.' || c == ',') && i + 1 < len &&
                           isdigit((unsigned char)text[i + 1])) {
                    if (c == '.' && dot < 0) {
                        dot = (int)b;
                        buf[b++] = '.';
                    }
                } else {
                    break;
                }
                i++;
            }
            buf[b] = '\0';
            if (dot >= 0) { /* trailing zeros of the fraction */
                while (b > (size_t)dot + 1 && buf[b - 1] == '0') {
                    buf[--b] = '\0';
                }
                if (b == (size_t)dot + 1) {
                    buf[--b] = '\0';
                }
            }
            if (b == 0 || (b == 1 && buf[0] == '-')) {
                continue;
            }
        } else {
            i++;
            continue;
        }
        (void)num;
        if (ntok == cap) {
            char **n2;
            cap = cap ? cap * 2 : 8;
            n2 = realloc(toks, cap * sizeof(*toks));
            if (n2 == NULL) {
                goto oom;
            }
            toks = n2;
        }
        if ((toks[ntok] = strdup(buf)) == NULL) {
            goto oom;
        }
        total += strlen(buf) + 1;
        ntok++;
    }
    if (ntok > 1) {
        qsort(toks, ntok, sizeof(*toks), cmp_str);
    }
    out = malloc(total);
    if (out == NULL) {
        goto oom;
    }
    p = out;
    for (k = 0; k < ntok; k++) {
        size_t l = strlen(toks[k]);
        if (k > 0) {
            *p++ = ' ';
        }
        memcpy(p, toks[k], l);
        p += l;
        free(toks[k]);
    }
    *p = '\0';
    free(toks);
    return out;
oom:
    for (k = 0; k < ntok; k++) {
        free(toks[k]);
    }
    free(toks);
    return NULL;
}

/* The fixed directions of a short vector's sketch: SI_PROJ_BITS rows
 * of SI_SKETCH_MIN_DIM - 1 values (a vector of dim dimensions uses the
 * first dim of each row), each the sum of four uniforms from a
 * xorshift of a fixed seed (near normal, so the directions are near
 * uniform on the sphere). The same on every node and every run. */
static float proj[SI_PROJ_BITS][SI_SKETCH_MIN_DIM - 1];
static pthread_once_t proj_once = PTHREAD_ONCE_INIT;

static void
proj_init(void)
{
    uint64_t st = 0x9e3779b97f4a7c15ull;
    int j, d, k;

    for (j = 0; j < SI_PROJ_BITS; j++) {
        for (d = 0; d < SI_SKETCH_MIN_DIM - 1; d++) {
            float sum = 0;
            for (k = 0; k < 4; k++) {
                st ^= st << 13;
                st ^= st >> 7;
                st ^= st << 17;
                sum += (float)(st >> 40) / (float)(1 << 24) - 0.5f;
            }
            proj[j][d] = sum;
        }
    }
}

/* The words of a sketch of a vector of dim dimensions. */
static size_t
sketch_words(int dim)
{
    return dim < SI_SKETCH_MIN_DIM ? SI_HEAD_WORDS : ((size_t)dim + 63) / 64;
}

/* The sketch of v (dim floats) into words (zero-padded): its signs as
 * bits, or for a short vector the signs of its projections. */
static void
sketch(const float *v, int dim, uint64_t *words)
{
    int d, j;

    memset(words, 0, sketch_words(dim) * sizeof(*words));
    if (dim < SI_SKETCH_MIN_DIM) {
        pthread_once(&proj_once, proj_init);
        for (j = 0; j < SI_PROJ_BITS; j++) {
            float dot = 0;
            for (d = 0; d < dim; d++) {
                dot += proj[j][d] * v[d];
            }
            if (dot > 0) {
                words[j / 64] |= (uint64_t)1 << (j % 64);
            }
        }
        return;
    }
    for (d = 0; d < dim; d++) {
        if (v[d] > 0) {
            words[d / 64] |= (uint64_t)1 << (d % 64);
        }
    }
}

/* The Hamming distance of two sketches of words words. */
static unsigned
hamming(const uint64_t *a, const uint64_t *b, size_t words)
{
    unsigned h = 0;
    size_t w;

    for (w = 0; w < words; w++) {
        h += (unsigned)__builtin_popcountll(a[w] ^ b[w]);
    }
    return h;
}

/* The first pass: the distance of q's head (SI_HEAD_WORDS words) to
 * each of the n heads into dist, counted in hist (0 .. 64 *
 * SI_HEAD_WORDS). The POPCNT instruction where the CPU has it (chosen
 * at run time: the build targets the baseline), else a portable count. */
#define HEADS_BODY                                                             \
    size_t i, w;                                                               \
    for (i = 0; i < n; i++) {                                                  \
        unsigned d = 0;                                                        \
        for (w = 0; w < SI_HEAD_WORDS; w++) {                                  \
            d += (unsigned)__builtin_popcountll(heads[i * SI_HEAD_WORDS + w] ^ \
                                                q[w]);                         \
        }                                                                      \
        dist[i] = (uint8_t)d;                                                  \
        hist[d]++;                                                             \
    }

static void
heads_portable(const uint64_t *heads, size_t n, const uint64_t *q,
               uint8_t *dist, size_t *hist)
{
    HEADS_BODY
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("popcnt"))) static void
heads_popcnt(const uint64_t *heads, size_t n, const uint64_t *q, uint8_t *dist,
             size_t *hist)
{
    HEADS_BODY
}
#endif

static void
heads(const uint64_t *h, size_t n, const uint64_t *q, uint8_t *dist,
      size_t *hist)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("popcnt")) {
        heads_popcnt(h, n, q, dist, hist);
        return;
    }
#endif
    heads_portable(h, n, q, dist, hist);
}

si_index_t *
si_new(size_t max_entries)
{
    si_index_t *x = calloc(1, sizeof(*x));

    if (x == NULL || max_entries == 0) {
        free(x);
        return NULL;
    }
    x->parts = gov_map_new();
    x->keys = gov_map_new();
    if (x->parts == NULL || x->keys == NULL) {
        if (x->parts != NULL) {
            gov_map_free(x->parts, NULL);
        }
        if (x->keys != NULL) {
            gov_map_free(x->keys, NULL);
        }
        free(x);
        return NULL;
    }
    x->max = max_entries;
    pthread_rwlock_init(&x->lock, NULL);
    return x;
}

static void
lru_unlink(si_index_t *x, si_entry_t *e)
{
    if (e->prev != NULL) {
        e->prev->next = e->next;
    } else {
        x->head = e->next;
    }
    if (e->next != NULL) {
        e->next->prev = e->prev;
    } else {
        x->tail = e->prev;
    }
    e->prev = e->next = NULL;
}

static void
lru_front(si_index_t *x, si_entry_t *e)
{
    e->prev = NULL;
    e->next = x->head;
    if (x->head != NULL) {
        x->head->prev = e;
    }
    x->head = e;
    if (x->tail == NULL) {
        x->tail = e;
    }
}

static void
hex(const uint8_t part[SI_PART_LEN], char out[2 * SI_PART_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < SI_PART_LEN; i++) {
        out[2 * i] = digits[part[i] >> 4];
        out[2 * i + 1] = digits[part[i] & 15];
    }
    out[2 * SI_PART_LEN] = '\0';
}

/* Unlinks and frees e; the last entry of its partition takes its slot,
 * and an emptied partition goes. */
static void
drop(si_index_t *x, si_entry_t *e)
{
    si_bucket_t *b = e->bucket;
    size_t slot = e->slot;

    lru_unlink(x, e);
    gov_map_del(x->keys, (mf_str_t){e->key, strlen(e->key)});
    x->n--;
    b->n--;
    if (slot != b->n) {
        b->v[slot] = b->v[b->n];
        b->v[slot]->slot = slot;
        memcpy(b->vecs + slot * (size_t)b->dim, b->vecs + b->n * (size_t)b->dim,
               (size_t)b->dim * sizeof(float));
        memcpy(b->bits + slot * b->words, b->bits + b->n * b->words,
               b->words * sizeof(uint64_t));
        memcpy(b->head + slot * SI_HEAD_WORDS, b->head + b->n * SI_HEAD_WORDS,
               SI_HEAD_WORDS * sizeof(uint64_t));
    }
    if (b->n == 0) {
        gov_map_del(x->parts, (mf_str_t){b->name, 2 * SI_PART_LEN});
        free(b->v);
        free(b->vecs);
        free(b->bits);
        free(b->head);
        free(b);
    }
    free(e->sig);
    free(e);
}

void
si_free(si_index_t *x)
{
    if (x == NULL) {
        return;
    }
    while (x->tail != NULL) {
        drop(x, x->tail);
    }
    gov_map_free(x->parts, NULL);
    gov_map_free(x->keys, NULL);
    pthread_rwlock_destroy(&x->lock);
    free(x);
}

static si_entry_t *
by_key(si_index_t *x, const char *key)
{
    return gov_map_get(x->keys, (mf_str_t){key, strlen(key)});
}

int
si_put(si_index_t *x, const uint8_t part[SI_PART_LEN], const float *vec,
       int dim, const char *sig, const char *key)
{
    si_entry_t *e, *old;
    si_bucket_t *b;
    char name[2 * SI_PART_LEN + 1];
    double norm = 0;
    int i;

    if (dim <= 0 || strlen(key) > SI_KEY_LEN) {
        return -1;
    }
    for (i = 0; i < dim; i++) {
        norm += (double)vec[i] * vec[i];
    }
    if (!(norm > 0) || !isfinite(norm)) {
        return -1;
    }
    norm = sqrt(norm);
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->sig = strdup(sig)) == NULL) {
        free(e);
        return -1;
    }
    strcpy(e->key, key);
    hex(part, name);
    pthread_rwlock_wrlock(&x->lock);
    if ((old = by_key(x, key)) != NULL) {
        drop(x, old);
    }
    if (x->n == x->max) {
        drop(x, x->tail);
    }
    b = gov_map_get(x->parts, (mf_str_t){name, 2 * SI_PART_LEN});
    if (b != NULL && b->dim != dim) {
        goto fail; /* another embedding model's vectors */
    }
    if (b == NULL) {
        b = calloc(1, sizeof(*b));
        if (b == NULL) {
            goto fail;
        }
        memcpy(b->name, name, sizeof(name));
        b->dim = dim;
        b->words = sketch_words(dim);
        gov_map_put(x->parts, (mf_str_t){b->name, 2 * SI_PART_LEN}, b);
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 8;
        si_entry_t **v = realloc(b->v, cap * sizeof(*v));
        float *vecs = v == NULL
                          ? NULL
                          : realloc(b->vecs, cap * (size_t)dim * sizeof(float));
        uint64_t *bits =
            vecs == NULL ? NULL
                         : realloc(b->bits, cap * b->words * sizeof(uint64_t));
        uint64_t *head =
            bits == NULL
                ? NULL
                : realloc(b->head, cap * SI_HEAD_WORDS * sizeof(uint64_t));

        if (v != NULL) {
            b->v = v;
        }
        if (vecs != NULL) {
            b->vecs = vecs;
        }
        if (bits != NULL) {
            b->bits = bits;
        }
        if (head == NULL) {
            if (b->n == 0) {
                gov_map_del(x->parts, (mf_str_t){b->name, 2 * SI_PART_LEN});
                free(b->v);
                free(b->vecs);
                free(b->bits);
                free(b->head);
                free(b);
            }
            goto fail;
        }
        b->head = head;
        b->cap = cap;
    }
    for (i = 0; i < dim; i++) {
        b->vecs[b->n * (size_t)dim + (size_t)i] = (float)(vec[i] / norm);
    }
    sketch(b->vecs + b->n * (size_t)dim, dim, b->bits + b->n * b->words);
    memset(b->head + b->n * SI_HEAD_WORDS, 0, SI_HEAD_WORDS * sizeof(uint64_t));
    memcpy(b->head + b->n * SI_HEAD_WORDS, b->bits + b->n * b->words,
           (b->words < SI_HEAD_WORDS ? b->words : SI_HEAD_WORDS) *
               sizeof(uint64_t));
    gov_map_put(x->keys, (mf_str_t){e->key, strlen(e->key)}, e);
    e->bucket = b;
    e->slot = b->n;
    b->v[b->n++] = e;
    x->n++;
    lru_front(x, e);
    pthread_rwlock_unlock(&x->lock);
    return 0;
fail:
    pthread_rwlock_unlock(&x->lock);
    free(e->sig);
    free(e);
    return -1;
}

/* The cosine of unit vectors a and b. */
static float
cosine(const float *a, const float *b, int dim)
{
    float acc[4] = {0, 0, 0, 0};
    int d;

    /* four sums the compiler can keep in one vector register */
    for (d = 0; d + 4 <= dim; d += 4) {
        acc[0] += a[d] * b[d];
        acc[1] += a[d + 1] * b[d + 1];
        acc[2] += a[d + 2] * b[d + 2];
        acc[3] += a[d + 3] * b[d + 3];
    }
    for (; d < dim; d++) {
        acc[0] += a[d] * b[d];
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

typedef struct {
    unsigned d; /* the whole sketches' distance */
    size_t slot;
} cand_t;

static int
cand_cmp(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;

    return x->d < y->d ? -1 : x->d > y->d ? 1 : (x->slot > y->slot);
}

/* The slots of (at most) keep entries of b nearest to q by their
 * sketches, into out: the SI_STAGE1 nearest by the heads (a counting
 * select), then the nearest of those by the whole sketches. Their
 * count. */
static size_t
nearest_sketches(const si_bucket_t *b, const uint64_t *q, size_t *out,
                 size_t keep)
{
    uint8_t *dist = malloc(b->n);
    cand_t *c = malloc(SI_STAGE1 * sizeof(*c));
    size_t hist[64 * SI_HEAD_WORDS + 1] = {0};
    size_t i, sum = 0, n1 = 0, at_cut = 0, cut;

    if (dist == NULL || c == NULL) {
        free(dist);
        free(c);
        return 0;
    }
    heads(b->head, b->n, q, dist, hist);
    for (cut = 0; cut < 64 * SI_HEAD_WORDS; cut++) {
        if (sum + hist[cut] >= SI_STAGE1) {
            break;
        }
        sum += hist[cut];
    }
    /* every one nearer than cut, then those at cut up to SI_STAGE1 */
    for (i = 0; i < b->n && n1 < SI_STAGE1; i++) {
        if (dist[i] < cut || (dist[i] == cut && at_cut++ < SI_STAGE1 - sum)) {
            c[n1].slot = i;
            c[n1].d = hamming(b->bits + i * b->words, q, b->words);
            n1++;
        }
    }
    qsort(c, n1, sizeof(*c), cand_cmp);
    for (i = 0; i < n1 && i < keep; i++) {
        out[i] = c[i].slot;
    }
    free(dist);
    free(c);
    return i;
}

int
si_find(si_index_t *x, const uint8_t part[SI_PART_LEN], const float *vec,
        int dim, const char *sig, double threshold, char *key_out, double *sim)
{
    const si_entry_t *best = NULL;
    si_bucket_t *b;
    char name[2 * SI_PART_LEN + 1], found[SI_KEY_LEN + 1];
    double norm = 0, best_dot = -2;
    float *q;
    uint64_t *qbits = NULL;
    size_t i, n, *cand = NULL;
    int d;

    if (dim <= 0) {
        return 0;
    }
    for (d = 0; d < dim; d++) {
        norm += (double)vec[d] * vec[d];
    }
    if (!(norm > 0) || !isfinite(norm)) {
        return 0;
    }
    norm = sqrt(norm);
    q = malloc((size_t)dim * sizeof(float));
    if (q == NULL) {
        return 0;
    }
    for (d = 0; d < dim; d++) {
        q[d] = (float)(vec[d] / norm);
    }
    hex(part, name);
    pthread_rwlock_rdlock(&x->lock);
    b = gov_map_get(x->parts, (mf_str_t){name, 2 * SI_PART_LEN});
    if (b != NULL && b->dim != dim) {
        b = NULL;
    }
    n = b != NULL ? b->n : 0;
    if (n > SI_STAGE1 && n * (size_t)dim > SI_EXACT_MACS) {
        /* a short vector's exact cosine is cheap: all the candidates */
        size_t keep = dim < SI_SKETCH_MIN_DIM ? SI_STAGE1 : SI_RERANK;

        qbits = malloc(b->words * sizeof(*qbits));
        cand = malloc(keep * sizeof(*cand));
        if (qbits == NULL || cand == NULL) {
            n = 0;
        } else {
            sketch(q, dim, qbits);
            n = nearest_sketches(b, qbits, cand, keep);
        }
    }
    for (i = 0; i < n; i++) {
        size_t slot = cand != NULL ? cand[i] : i;
        const si_entry_t *e = b->v[slot];
        float c = cosine(b->vecs + slot * (size_t)dim, q, dim);

        /* (a float's rounding leaves the same vector's cosine a hair
         * below 1) */
        if (c >= threshold - 1e-6 && c > best_dot && strcmp(e->sig, sig) == 0) {
            best = e;
            best_dot = c;
        }
    }
    if (best != NULL) {
        strcpy(found, best->key);
    }
    pthread_rwlock_unlock(&x->lock);
    free(q);
    free(qbits);
    free(cand);
    if (best == NULL) {
        return 0;
    }
    /* the hit is the most recently used (when it is still there) */
    pthread_rwlock_wrlock(&x->lock);
    {
        si_entry_t *e = by_key(x, found);

        if (e != NULL) {
            lru_unlink(x, e);
            lru_front(x, e);
        }
    }
    pthread_rwlock_unlock(&x->lock);
    strcpy(key_out, found);
    *sim = best_dot > 1.0 ? 1.0 : best_dot;
    return 1;
}

int
si_remove(si_index_t *x, const char *key)
{
    si_entry_t *e;

    pthread_rwlock_wrlock(&x->lock);
    e = by_key(x, key);
    if (e != NULL) {
        drop(x, e);
    }
    pthread_rwlock_unlock(&x->lock);
    return e != NULL;
}

size_t
si_count(si_index_t *x)
{
    size_t n;

    pthread_rwlock_rdlock(&x->lock);
    n = x->n;
    pthread_rwlock_unlock(&x->lock);
    return n;
}
