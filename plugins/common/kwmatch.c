/*
 * The keyword automaton (kwmatch.h): a trie whose children are kept as
 * sibling lists, failure links and output links computed breadth first.
 */
#include "kwmatch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t child;   /* first child, 0 none (node 0 is the root) */
    uint32_t sibling; /* next child of the parent, 0 none */
    uint32_t fail;
    uint32_t out; /* the nearest node on the failure chain (or itself)
                     ending a keyword, 0 none */
    uint32_t id;  /* keyword id when this node ends one */
    uint16_t depth;
    uint8_t byte;
    uint8_t ends;
} node_t;

struct mf_kw_s {
    node_t *v;
    size_t n;
    size_t cap;
    int nocase;
    int built;
};

static unsigned char
fold(const mf_kw_t *kw, unsigned char c)
{
    return kw->nocase && c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static uint32_t
new_node(mf_kw_t *kw)
{
    if (kw->n == kw->cap) {
        size_t cap = kw->cap ? kw->cap * 2 : 64;
        node_t *v = realloc(kw->v, cap * sizeof(*v));

        if (v == NULL) {
            abort();
        }
        kw->v = v;
        kw->cap = cap;
    }
    memset(&kw->v[kw->n], 0, sizeof(node_t));
    return (uint32_t)kw->n++;
}

mf_kw_t *
mf_kw_new(int nocase)
{
    mf_kw_t *kw = calloc(1, sizeof(*kw));

    if (kw == NULL) {
        abort();
    }
    kw->nocase = nocase;
    new_node(kw);
    return kw;
}

void
mf_kw_free(mf_kw_t *kw)
{
    if (kw != NULL) {
        free(kw->v);
        free(kw);
    }
}

static uint32_t
child(const mf_kw_t *kw, uint32_t node, unsigned char c)
{
    uint32_t k;

    for (k = kw->v[node].child; k != 0; k = kw->v[k].sibling) {
        if (kw->v[k].byte == c) {
            return k;
        }
    }
    return 0;
}

int
mf_kw_add(mf_kw_t *kw, const char *s, size_t n, unsigned id)
{
    uint32_t node = 0, next;
    size_t i;

    if (n == 0 || n > 255 || kw->built) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = fold(kw, (unsigned char)s[i]);

        next = child(kw, node, c);
        if (next == 0) {
            next = new_node(kw);
            kw->v[next].byte = c;
            kw->v[next].depth = (uint16_t)(i + 1);
            kw->v[next].sibling = kw->v[node].child;
            kw->v[node].child = next;
        }
        node = next;
    }
    if (!kw->v[node].ends) {
        kw->v[node].ends = 1;
        kw->v[node].id = id;
    }
    return 0;
}

int
mf_kw_build(mf_kw_t *kw)
{
    uint32_t *queue = malloc(kw->n * sizeof(*queue));
    size_t head = 0, tail = 0;
    uint32_t k;

    if (queue == NULL) {
        abort();
    }
    for (k = kw->v[0].child; k != 0; k = kw->v[k].sibling) {
        kw->v[k].fail = 0;
        kw->v[k].out = kw->v[k].ends ? k : 0;
        queue[tail++] = k;
    }
    while (head < tail) {
        uint32_t u = queue[head++];

        for (k = kw->v[u].child; k != 0; k = kw->v[k].sibling) {
            uint32_t f = kw->v[u].fail, g;

            while ((g = child(kw, f, kw->v[k].byte)) == 0 && f != 0) {
                f = kw->v[f].fail;
            }
            kw->v[k].fail = g != k ? g : 0;
            kw->v[k].out = kw->v[k].ends ? k : kw->v[kw->v[k].fail].out;
            queue[tail++] = k;
        }
    }
    free(queue);
    kw->built = 1;
    return 0;
}

unsigned
mf_kw_feed(const mf_kw_t *kw, unsigned state, const char *s, size_t n,
           mf_kw_hit_fn hit, void *arg)
{
    uint32_t u = state;
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = fold(kw, (unsigned char)s[i]);
        uint32_t g, o;

        while ((g = child(kw, u, c)) == 0 && u != 0) {
            u = kw->v[u].fail;
        }
        u = g;
        for (o = kw->v[u].out; o != 0 && hit != NULL;
             o = kw->v[kw->v[o].fail].out) {
            if (hit(arg, i + 1, kw->v[o].depth, kw->v[o].id)) {
                return u;
            }
        }
    }
    return u;
}

size_t
mf_kw_depth(const mf_kw_t *kw, unsigned state)
{
    return state < kw->n ? kw->v[state].depth : 0;
}
