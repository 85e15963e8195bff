/*
 * The provider catalogue: the one list of the providers Manifold knows,
 * from which `manifold init` writes providers, and from which the providers
 * section of configs/manifold.yaml and README's provider table are
 * rendered (`manifold init --print-providers`, `--print-table`).
 */
#ifndef MF_CATALOGUE_H
#define MF_CATALOGUE_H

#include <stddef.h>
#include <stdio.h>

/* A provider. Key variables "A:B" make one key "${A}:${B}"; an entry
 * without key_env needs no key. The abouts are comments written after
 * their line (or NULL). */
typedef struct {
    const char *name;         /* provider name and its type */
    const char *title;        /* what it is (init's list, README) */
    const char *plugin;       /* the plugin serving the type */
    const char *about;        /* after `type:` */
    const char *key_env;      /* the key's variable(s), or NULL */
    const char *key_env_alt;  /* another key's variable(s), or NULL */
    const char *url_env;      /* base URL override variable */
    const char *url;          /* default base URL */
    const char *url_about;    /* after `base_url:` */
    const char *options;      /* more lines (YAML, indented 4), or NULL */
    const char *models;       /* names and patterns, space separated */
    const char *models_about; /* after `models:` */
    int prefixed;             /* NAME/<model> is sent up as <model> */
} mf_catalogue_entry_t;

extern const mf_catalogue_entry_t mf_catalogue[];
extern const size_t mf_catalogue_len;

/* The entry named name, or NULL. */
const mf_catalogue_entry_t *mf_catalogue_find(const char *name);

/* Writes e as an item of a YAML providers list. A non-NULL key (a literal
 * key), else key_env (variable names, "A:B"), replaces the catalogue's
 * keys; a non-NULL base_url replaces ${URL_ENV:-default}. */
void mf_catalogue_write_provider(FILE *f, const mf_catalogue_entry_t *e,
                                 const char *key_env, const char *key,
                                 const char *base_url);

/* Writes `providers:` and every entry with its catalogue defaults, one
 * blank line between entries: the section of configs/manifold.yaml. */
void mf_catalogue_write_providers(FILE *f);

/* Writes README's provider table (Markdown). */
void mf_catalogue_write_table(FILE *f);

#endif
