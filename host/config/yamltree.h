/*
 * YAML documents as node trees with line numbers, read with libyaml;
 * scalars interpolated with ${VAR} and ${VAR:-default}.
 */
#ifndef MF_YAMLTREE_H
#define MF_YAMLTREE_H

#include <jansson.h>

#include "core/core.h"

typedef enum { MF_NODE_SCALAR, MF_NODE_MAP, MF_NODE_SEQ } mf_node_type_t;

typedef struct mf_node_s mf_node_t;

struct mf_node_s {
    mf_node_type_t type;
    int line;
    int quoted;       /* scalar was quoted: never a number or bool */
    char *value;      /* scalar, after interpolation */
    char *key;        /* when a map value: its key */
    int unset_var;    /* interpolation met an unset variable, no default */
    char *raw;        /* with unset_var: the text before interpolation */
    mf_node_t *child; /* first child (map values carry key) */
    mf_node_t *next;
};

/* Parses text; NULL with a "file:line: message" sentence in err. Owned by
 * the caller (mf_node_free). */
mf_node_t *mf_yaml_parse(const char *file, const char *text, size_t len,
                         char *err, size_t errcap);
/* The same without ${VAR} interpolation: a data file a stage reads (its
 * text must not reach the environment, where the keys are). */
mf_node_t *mf_yaml_parse_data(const char *file, const char *text, size_t len,
                              char *err, size_t errcap);
mf_node_t *mf_yaml_load_file(const char *path, char *err, size_t errcap);
void mf_node_free(mf_node_t *n);

/* Map lookup by key; NULL when absent or n is not a map. */
mf_node_t *mf_node_get(const mf_node_t *n, const char *key);
/* A new JSON value with the same content (scalars typed unless quoted). */
json_t *mf_node_to_json(const mf_node_t *n);
/* Interpolates ${VAR} and ${VAR:-default}; sets *unset when a variable
 * without default is unset. Caller frees. */
char *mf_interpolate(const char *s, int *unset);

#endif
