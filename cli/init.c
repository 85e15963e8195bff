/*
 * `manifold init`: writes a config from the provider catalogue
 * (catalogue.c), asking which providers to enable and which key (variable)
 * each uses, or taking the same from --provider NAME --key-env VAR --key KEY
 * --base-url URL (--all: every provider). The file is then validated as
 * `manifold -t` would (the caller does). --print-providers and
 * --print-table render the catalogue for the default config and README.
 */
#include "cli/init.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/catalogue.h"
#include "config/config.h"
#include "core/core.h"

#define NCAT mf_catalogue_len
#define MAXSEL 64

typedef struct {
    const mf_catalogue_entry_t *e;
    char *key_env;  /* variable(s), or NULL */
    char *key;      /* a literal key, or NULL */
    char *base_url; /* literal, or NULL for ${URL_ENV:-default} */
} choice_t;

static void
print_catalogue(FILE *f)
{
    size_t i;

    fprintf(f, "  #  %-12s %-46s %s\n", "provider", "", "key variable");
    for (i = 0; i < NCAT; i++) {
        const mf_catalogue_entry_t *e = &mf_catalogue[i];

        fprintf(f, " %2zu  %-12s %-46s %s%s%s\n", i + 1, e->name, e->title,
                e->key_env ? e->key_env : "(none)",
                e->key_env_alt ? " or " : "",
                e->key_env_alt ? e->key_env_alt : "");
    }
}

/* A variable name list: NAME or NAME:NAME (upper case, digits, _). */
static int
is_var_list(const char *s)
{
    int start = 1;

    if (*s == '\0') {
        return 0;
    }
    for (; *s; s++) {
        if (*s == ':') {
            if (start) {
                return 0;
            }
            start = 1;
            continue;
        }
        if (!((*s >= 'A' && *s <= 'Z') || *s == '_' ||
              (!start && *s >= '0' && *s <= '9'))) {
            return 0;
        }
        start = 0;
    }
    return !start;
}

static int
write_config(const char *path, const choice_t *c, size_t n, int force)
{
    int literal = 0, fd;
    size_t i;
    FILE *f;

    for (i = 0; i < n; i++) {
        literal |= c[i].key != NULL;
    }
    fd = open(path, O_WRONLY | O_CREAT | (force ? O_TRUNC : O_EXCL),
              literal ? 0600 : 0644);
    if (fd < 0) {
        fprintf(stderr, "manifold init: %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (--force overwrites it)" : "");
        return MF_ERR;
    }
    f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return MF_ERR;
    }
    fprintf(f,
            "# Written by `manifold init`. Check it with `manifold -t -c %s`.\n"
            "# A provider whose key variable is unset stays disabled; each "
            "base URL\n# can be overridden with its _BASE_URL variable.\n"
            "listen: 127.0.0.1:8080\n"
            "workers: auto\n"
            "log_level: info\n\n"
            "admin:\n"
            "  socket: ${MANIFOLD_ADMIN_SOCKET:-admin.sock}\n\n"
            "reload:\n  watch: true\n  debounce: 200ms\n\n"
            "# Responses API answers (previous_response_id) kept across "
            "restarts in this\n# file, beside this config; none: in "
            "memory only (docs/PROTOCOLS.md)\n"
            "response_store:\n  db: responses.db\n\n"
            "providers:\n",
            path);
    for (i = 0; i < n; i++) {
        if (i > 0) {
            fputc('\n', f);
        }
        mf_catalogue_write_provider(f, c[i].e, c[i].key_env, c[i].key,
                                    c[i].base_url);
    }
    fprintf(f, "\nstages:\n"
               "  - name: accesslog\n"
               "    plugin: accesslog\n"
               "    config:\n"
               "      path: stdout\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "manifold init: %s: %s\n", path, strerror(errno));
        return MF_ERR;
    }
    return MF_OK;
}

/* One line from stdin without its newline; NULL at end of input. */
static char *
ask(const char *prompt, const char *dflt)
{
    char buf[4096];
    size_t n;

    fprintf(stderr, "%s%s%s%s: ", prompt, dflt ? " [" : "", dflt ? dflt : "",
            dflt ? "]" : "");
    fflush(stderr);
    if (fgets(buf, sizeof(buf), stdin) == NULL) {
        return NULL;
    }
    n = strcspn(buf, "\r\n");
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] == ' ') {
        buf[--n] = '\0';
    }
    return mf_xstrdup(n == 0 && dflt ? dflt : buf + strspn(buf, " "));
}

static int
interactive(choice_t *c, size_t *n)
{
    char *list, *tok, *save = NULL;

    fprintf(stderr, "Providers Manifold can put behind its one API:\n");
    print_catalogue(stderr);
    list =
        ask("\nWhich to enable (numbers or names, comma separated)", "openai");
    if (list == NULL) {
        return MF_ERR;
    }
    for (tok = strtok_r(list, ", ", &save); tok && *n < MAXSEL;
         tok = strtok_r(NULL, ", ", &save)) {
        const mf_catalogue_entry_t *e = mf_catalogue_find(tok);
        int num = atoi(tok);

        if (e == NULL && num >= 1 && (size_t)num <= NCAT) {
            e = &mf_catalogue[num - 1];
        }
        if (e == NULL) {
            fprintf(stderr,
                    "manifold init: no provider '%s' in the "
                    "catalogue\n",
                    tok);
            free(list);
            return MF_ERR;
        }
        c[(*n)++].e = e;
    }
    free(list);
    for (size_t i = 0; i < *n; i++) {
        char prompt[256], *k, *u;

        if (c[i].e->key_env != NULL) {
            char dflt[256];

            snprintf(prompt, sizeof(prompt),
                     "Key for %s: a variable name, or the key itself",
                     c[i].e->name);
            snprintf(dflt, sizeof(dflt), "%s%s%s", c[i].e->key_env,
                     c[i].e->key_env_alt ? " or " : "",
                     c[i].e->key_env_alt ? c[i].e->key_env_alt : "");
            if ((k = ask(prompt, dflt)) == NULL) {
                return MF_ERR;
            }
            if (strcmp(k, dflt) == 0) {
                free(k); /* the catalogue's keys */
            } else if (is_var_list(k)) {
                c[i].key_env = k;
            } else {
                c[i].key = k;
                fprintf(stderr, "  (the key is written into the file, "
                                "created 0600)\n");
            }
        }
        snprintf(prompt, sizeof(prompt), "Base URL for %s", c[i].e->name);
        if ((u = ask(prompt, c[i].e->url)) == NULL) {
            return MF_ERR;
        }
        if (strcmp(u, c[i].e->url) == 0) {
            free(u); /* keep ${..._BASE_URL:-default} */
        } else {
            c[i].base_url = u;
        }
    }
    return MF_OK;
}

static void
init_usage(FILE *f)
{
    fprintf(f, "usage: manifold init [-o FILE] [--force] [--all] [--provider "
               "NAME [--key-env VAR | --key KEY] [--base-url URL]]...\n"
               "       manifold init --print-providers | --print-table\n"
               "  with no --provider (or --all: every provider) it asks, "
               "showing the catalogue:\n");
    print_catalogue(f);
}

int
mf_init_main(int argc, char **argv, const char **out_path)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},
        {"provider", required_argument, NULL, 'P'},
        {"key-env", required_argument, NULL, 'K'},
        {"key", required_argument, NULL, 'k'},
        {"base-url", required_argument, NULL, 'u'},
        {"all", no_argument, NULL, 'a'},
        {"print-providers", no_argument, NULL, 'Y'},
        {"print-table", no_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    choice_t c[MAXSEL];
    size_t n = 0, i;
    int opt, force = 0, rc;
    const char *path = "manifold.yaml";

    memset(c, 0, sizeof(c));
    optind = 1;
    while ((opt = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        switch (opt) {
        case 'o':
            path = optarg;
            break;
        case 'f':
            force = 1;
            break;
        case 'P':
            if (n == MAXSEL || (c[n].e = mf_catalogue_find(optarg)) == NULL) {
                fprintf(stderr,
                        "manifold init: no provider '%s' in the catalogue:\n",
                        optarg);
                print_catalogue(stderr);
                return 2;
            }
            n++;
            break;
        case 'K':
        case 'k':
        case 'u':
            if (n == 0) {
                fprintf(stderr,
                        "manifold init: --%s belongs after a "
                        "--provider\n",
                        opt == 'K'   ? "key-env"
                        : opt == 'k' ? "key"
                                     : "base-url");
                return 2;
            }
            if (opt == 'K' && !is_var_list(optarg)) {
                fprintf(stderr,
                        "manifold init: --key-env %s: a variable name "
                        "(A_B) or names joined by ':'\n",
                        optarg);
                return 2;
            }
            if (opt == 'u' && strncmp(optarg, "http://", 7) != 0 &&
                strncmp(optarg, "https://", 8) != 0) {
                fprintf(stderr,
                        "manifold init: --base-url %s: must start "
                        "with http:// or https://\n",
                        optarg);
                return 2;
            }
            *(opt == 'K'   ? &c[n - 1].key_env
              : opt == 'k' ? &c[n - 1].key
                           : &c[n - 1].base_url) = mf_xstrdup(optarg);
            break;
        case 'a':
            for (i = 0; i < NCAT && n < MAXSEL; i++) {
                c[n++].e = &mf_catalogue[i];
            }
            break;
        case 'Y':
            mf_catalogue_write_providers(stdout);
            return 0;
        case 'T':
            mf_catalogue_write_table(stdout);
            return 0;
        case 'h':
            init_usage(stdout);
            return 0;
        default:
            init_usage(stderr);
            return 2;
        }
    }
    if (n == 0 && interactive(c, &n) != MF_OK) {
        rc = 2;
        goto out;
    }
    rc = write_config(path, c, n, force) == MF_OK ? -1 : 1;
    if (rc == -1) {
        fprintf(stderr, "manifold init: wrote %s (%zu provider%s)\n", path, n,
                n == 1 ? "" : "s");
        *out_path = path;
    }
out:
    for (i = 0; i < n; i++) {
        free(c[i].key_env);
        free(c[i].key);
        free(c[i].base_url);
    }
    return rc;
}

void
mf_init_next_steps(const mf_config_t *c, const char *argv0)
{
    size_t i, j, nvars = 0;

    for (i = 0; i < c->nproviders; i++) {
        for (j = 0; j < c->providers[i].nkey_vars; j++) {
            if (nvars++ == 0) {
                printf("\nNext, export the keys of the providers to serve "
                       "(one is enough):\n");
            }
            printf("  export %s=...    # %s\n", c->providers[i].key_vars[j],
                   c->providers[i].name);
        }
    }
    printf("%s the gateway:\n  %s -c %s\n", nvars ? "Then start" : "\nStart",
           argv0, c->path);
}
