/*
 * YAML to node trees (libyaml event API), with line numbers for error
 * messages and ${VAR} / ${VAR:-default} interpolation of scalars.
 */
#include "config/yamltree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <yaml.h>

char *
mf_interpolate(const char *s, int *unset)
{
    mf_buf_t out = {0};
    const char *p = s;
    char *result;

    while (*p) {
        const char *start = strstr(p, "${");
        const char *end, *def;
        char name[256];
        size_t nlen;
        const char *val;

        if (start == NULL) {
            mf_buf_append(&out, p, strlen(p));
            break;
        }
        end = strchr(start, '}');
        if (end == NULL) {
            mf_buf_append(&out, p, strlen(p));
            break;
        }
        mf_buf_append(&out, p, (size_t)(start - p));
        def = NULL;
        nlen = (size_t)(end - start - 2);
        {
            const char *sep = strstr(start + 2, ":-");

            if (sep != NULL && sep < end) {
                nlen = (size_t)(sep - start - 2);
                def = sep + 2;
            }
        }
        if (nlen >= sizeof(name)) {
            nlen = sizeof(name) - 1;
        }
        memcpy(name, start + 2, nlen);
        name[nlen] = '\0';
        val = getenv(name);
        if (val != NULL && *val != '\0') {
            mf_buf_append(&out, val, strlen(val));
        } else if (def != NULL) {
            mf_buf_append(&out, def, (size_t)(end - def));
        } else if (unset != NULL) {
            *unset = 1;
        }
        p = end + 1;
    }
    mf_buf_append(&out, "", 1);
    /* a value that needs an unset variable is empty as a whole: "${A}:${B}"
     * is "" when either is unset, so a key made of two parts disables its
     * provider rather than sending ":" */
    result = mf_xstrdup(unset != NULL && *unset ? "" : out.data);
    mf_buf_free(&out);
    return result;
}

void
mf_node_free(mf_node_t *n)
{
    while (n != NULL) {
        mf_node_t *next = n->next;

        mf_node_free(n->child);
        free(n->value);
        free(n->raw);
        free(n->key);
        free(n);
        n = next;
    }
}

static mf_node_t *
node_new(mf_node_type_t type, int line)
{
    mf_node_t *n = mf_xcalloc(1, sizeof(*n));

    n->type = type;
    n->line = line;
    return n;
}

typedef struct {
    yaml_parser_t parser;
    const char *file;
    char *err;
    size_t errcap;
    int depth;
    int raw; /* no ${VAR} interpolation (a data file, not the config) */
} yaml_ctx_t;

static mf_node_t *parse_node(yaml_ctx_t *y, yaml_event_t *ev);

static int
next_event(yaml_ctx_t *y, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&y->parser, ev)) {
        snprintf(y->err, y->errcap, "%s:%zu: %s%s%s", y->file,
                 y->parser.problem_mark.line + 1,
                 y->parser.problem ? y->parser.problem : "syntax error",
                 y->parser.context ? " " : "",
                 y->parser.context ? y->parser.context : "");
        return MF_ERR;
    }
    return MF_OK;
}

/* Reads children until the end event of a map or sequence. */
static int
parse_children(yaml_ctx_t *y, mf_node_t *parent)
{
    mf_node_t **tail = &parent->child;
    yaml_event_t ev;

    for (;;) {
        mf_node_t *key = NULL, *val;

        if (next_event(y, &ev) != MF_OK) {
            return MF_ERR;
        }
        if (ev.type == YAML_MAPPING_END_EVENT ||
            ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return MF_OK;
        }
        if (parent->type == MF_NODE_MAP) {
            key = parse_node(y, &ev);
            yaml_event_delete(&ev);
            if (key == NULL) {
                return MF_ERR;
            }
            if (key->type != MF_NODE_SCALAR) {
                snprintf(y->err, y->errcap,
                         "%s:%d: map keys must be plain "
                         "strings",
                         y->file, key->line);
                mf_node_free(key);
                return MF_ERR;
            }
            if (mf_node_get(parent, key->value) != NULL) {
                snprintf(y->err, y->errcap, "%s:%d: %s: duplicate key", y->file,
                         key->line, key->value);
                mf_node_free(key);
                return MF_ERR;
            }
            if (next_event(y, &ev) != MF_OK) {
                mf_node_free(key);
                return MF_ERR;
            }
        }
        val = parse_node(y, &ev);
        yaml_event_delete(&ev);
        if (val == NULL) {
            mf_node_free(key);
            return MF_ERR;
        }
        if (key != NULL) {
            val->key = key->value;
            key->value = NULL;
            mf_node_free(key);
        }
        *tail = val;
        tail = &val->next;
    }
}

static mf_node_t *
parse_node(yaml_ctx_t *y, yaml_event_t *ev)
{
    int line = (int)ev->start_mark.line + 1;
    mf_node_t *n;

    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n = node_new(MF_NODE_SCALAR, line);
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        n->value = y->raw ? mf_xstrdup((const char *)ev->data.scalar.value)
                          : mf_interpolate((const char *)ev->data.scalar.value,
                                           &n->unset_var);
        if (n->unset_var) {
            n->raw = mf_xstrdup((const char *)ev->data.scalar.value);
        }
        return n;
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT:
        if (++y->depth > 64) {
            snprintf(y->err, y->errcap, "%s:%d: nesting deeper than 64",
                     y->file, line);
            return NULL;
        }
        n = node_new(ev->type == YAML_MAPPING_START_EVENT ? MF_NODE_MAP
                                                          : MF_NODE_SEQ,
                     line);
        if (parse_children(y, n) != MF_OK) {
            mf_node_free(n);
            return NULL;
        }
        y->depth--;
        return n;
    case YAML_ALIAS_EVENT:
        snprintf(y->err, y->errcap,
                 "%s:%d: YAML aliases are not supported; "
                 "repeat the value",
                 y->file, line);
        return NULL;
    default:
        snprintf(y->err, y->errcap, "%s:%d: unexpected YAML event", y->file,
                 line);
        return NULL;
    }
}

static mf_node_t *
parse_text(const char *file, const char *text, size_t len, int raw, char *err,
           size_t errcap)
{
    yaml_ctx_t y = {.file = file, .err = err, .errcap = errcap, .raw = raw};
    yaml_event_t ev;
    mf_node_t *root = NULL;
    int done = 0;

    yaml_parser_initialize(&y.parser);
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    while (!done) {
        if (next_event(&y, &ev) != MF_OK) {
            goto fail;
        }
        switch (ev.type) {
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (root != NULL) {
                snprintf(err, errcap,
                         "%s:%zu: only one YAML document is "
                         "read",
                         file, ev.start_mark.line + 1);
                yaml_event_delete(&ev);
                goto fail;
            }
            break;
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        default:
            root = parse_node(&y, &ev);
            if (root == NULL) {
                yaml_event_delete(&ev);
                goto fail;
            }
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&y.parser);
    if (root == NULL) {
        root = node_new(MF_NODE_MAP, 1);
    }
    return root;

fail:
    yaml_parser_delete(&y.parser);
    mf_node_free(root);
    return NULL;
}

mf_node_t *
mf_yaml_parse(const char *file, const char *text, size_t len, char *err,
              size_t errcap)
{
    return parse_text(file, text, len, 0, err, errcap);
}

mf_node_t *
mf_yaml_parse_data(const char *file, const char *text, size_t len, char *err,
                   size_t errcap)
{
    return parse_text(file, text, len, 1, err, errcap);
}

mf_node_t *
mf_yaml_load_file(const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "rb");
    mf_buf_t b = {.limit = 16 * 1024 * 1024};
    char chunk[8192];
    size_t n;
    mf_node_t *root;

    if (f == NULL) {
        snprintf(err, errcap, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (mf_buf_try_append(&b, chunk, n) != MF_OK) {
            snprintf(err, errcap, "%s: larger than 16 MiB", path);
            fclose(f);
            mf_buf_free(&b);
            return NULL;
        }
    }
    fclose(f);
    root = mf_yaml_parse(path, b.data ? b.data : "", b.len, err, errcap);
    mf_buf_free(&b);
    return root;
}

mf_node_t *
mf_node_get(const mf_node_t *n, const char *key)
{
    const mf_node_t *c;

    if (n == NULL || n->type != MF_NODE_MAP) {
        return NULL;
    }
    for (c = n->child; c != NULL; c = c->next) {
        if (c->key != NULL && strcmp(c->key, key) == 0) {
            return (mf_node_t *)c;
        }
    }
    return NULL;
}

static json_t *
scalar_to_json(const mf_node_t *n)
{
    const char *v = n->value;
    char *end;

    if (n->quoted) {
        return json_string(v);
    }
    if (*v == '\0' || strcmp(v, "null") == 0 || strcmp(v, "~") == 0) {
        return *v == '\0' && n->unset_var ? json_string("") : json_null();
    }
    if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0) {
        return json_true();
    }
    if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0) {
        return json_false();
    }
    errno = 0;
    {
        long long i = strtoll(v, &end, 10);

        if (*end == '\0' && errno == 0) {
            return json_integer(i);
        }
    }
    {
        double d = strtod(v, &end);

        if (*end == '\0' && errno == 0) {
            return json_real(d);
        }
    }
    return json_string(v);
}

json_t *
mf_node_to_json(const mf_node_t *n)
{
    const mf_node_t *c;
    json_t *j;

    if (n == NULL) {
        return json_object();
    }
    switch (n->type) {
    case MF_NODE_SCALAR:
        j = scalar_to_json(n);
        return j ? j : json_string("");
    case MF_NODE_MAP:
        j = json_object();
        for (c = n->child; c != NULL; c = c->next) {
            json_object_set_new(j, c->key, mf_node_to_json(c));
        }
        return j;
    default:
        j = json_array();
        for (c = n->child; c != NULL; c = c->next) {
            json_array_append_new(j, mf_node_to_json(c));
        }
        return j;
    }
}
