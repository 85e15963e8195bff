/*
 * mf.files: the data files a stage reads while it loads (its top-level
 * code or M.init), such as a template pack: text, YAML (without ${VAR}
 * interpolation: a file must not reach the environment, where the keys
 * are) and directory listings. A relative path is taken from the config
 * file's directory; a sandboxed script reads only under that directory
 * or its own. Every file and directory read is watched: a change
 * reloads the stage, as a change of the script does.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/yamltree.h"
#include "lua/lua_common.h"

#define FILES_MAX_BYTES (4u << 20)

/* Whether real (a resolved path) is dir or under it. */
static int
under(const char *real, const char *dir)
{
    char rd[PATH_MAX];
    size_t n;

    if (realpath(dir, rd) == NULL) {
        return 0;
    }
    n = strlen(rd);
    return strncmp(real, rd, n) == 0 &&
           (real[n] == '\0' || real[n] == '/' || (n == 1 && rd[0] == '/'));
}

/* The resolved path of argument 1 into out; raises outside a load, and
 * for a sandboxed script's path outside its directories. */
static const char *
resolve(lua_State *L, const char *what, char *out)
{
    const char *p = luaL_checkstring(L, 1), *script, *cdir;
    char joined[PATH_MAX], sdir[PATH_MAX], *slash;
    int trusted = 0;

    cdir = mf_lua_loading(L, &trusted, &script);
    if (cdir == NULL) {
        luaL_error(L,
                   "%s: only while the stage loads (its top-level code or "
                   "M.init), not while it serves a request",
                   what);
    }
    if (p[0] == '/') {
        snprintf(joined, sizeof(joined), "%s", p);
    } else {
        snprintf(joined, sizeof(joined), "%s/%s", cdir, p);
    }
    if (realpath(joined, out) == NULL) {
        return NULL;
    }
    snprintf(sdir, sizeof(sdir), "%s", script);
    slash = strrchr(sdir, '/');
    if (slash != NULL) {
        *slash = '\0';
    } else {
        snprintf(sdir, sizeof(sdir), ".");
    }
    if (!trusted && !under(out, cdir) && !under(out, sdir)) {
        luaL_error(L,
                   "%s: %s is outside the config's directory and the "
                   "script's (trusted: true lifts this)",
                   what, p);
    }
    return out;
}

/* Reads path whole (at most FILES_MAX_BYTES); NULL with err. */
static char *
slurp(const char *path, size_t *len, char *err, size_t errcap)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n = 0, cap = 8192, got;

    if (f == NULL) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return NULL;
    }
    buf = malloc(cap);
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = cap >= FILES_MAX_BYTES ? NULL : realloc(buf, cap * 2);

            if (nb == NULL) {
                snprintf(err, errcap, "%s: larger than %u bytes", path,
                         FILES_MAX_BYTES);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL) {
        snprintf(err, errcap, "%s: out of memory", path);
        return NULL;
    }
    *len = n;
    return buf;
}

static int
l_files_read(lua_State *L)
{
    char real[PATH_MAX], err[PATH_MAX + 64], *text;
    size_t len;

    if (resolve(L, "mf.files.read", real) == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "mf.files.read: %s: %s", lua_tostring(L, 1),
                        strerror(errno));
        return 2;
    }
    text = slurp(real, &len, err, sizeof(err));
    if (text == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "mf.files.read: %s", err);
        return 2;
    }
    mf_lua_add_dep(L, real);
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

static int
l_files_yaml(lua_State *L)
{
    char real[PATH_MAX], err[PATH_MAX + 256], *text;
    size_t len;
    mf_node_t *root;
    json_t *j;

    if (resolve(L, "mf.files.yaml", real) == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "mf.files.yaml: %s: %s", lua_tostring(L, 1),
                        strerror(errno));
        return 2;
    }
    text = slurp(real, &len, err, sizeof(err));
    if (text == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "mf.files.yaml: %s", err);
        return 2;
    }
    mf_lua_add_dep(L, real);
    root = mf_yaml_parse_data(lua_tostring(L, 1), text, len, err, sizeof(err));
    free(text);
    if (root == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "mf.files.yaml: %s", err);
        return 2;
    }
    j = mf_node_to_json(root);
    mf_node_free(root);
    mf_lua_push_json(L, j, 0);
    json_decref(j);
    return 1;
}

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* mf.files.list(dir): the names in dir (no hidden ones), sorted. */
static int
l_files_list(lua_State *L)
{
    char real[PATH_MAX];
    DIR *d;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0, i;

    if (resolve(L, "mf.files.list", real) == NULL ||
        (d = opendir(real)) == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "mf.files.list: %s: %s", lua_tostring(L, 1),
                        strerror(errno));
        return 2;
    }
    while ((e = readdir(d)) != NULL && n < 4096) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            char **nn = realloc(names, (cap ? cap * 2 : 16) * sizeof(char *));

            if (nn == NULL) {
                break;
            }
            names = nn;
            cap = cap ? cap * 2 : 16;
        }
        names[n] = strdup(e->d_name);
        if (names[n] != NULL) {
            n++;
        }
    }
    closedir(d);
    mf_lua_add_dep(L, real);
    if (n > 0) {
        qsort(names, n, sizeof(char *), cmp_names);
    }
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (int)i + 1);
        free(names[i]);
    }
    free(names);
    return 1;
}

void
mf_lua_inject_files_api(lua_State *L)
{
    static const luaL_Reg fns[] = {{"read", l_files_read},
                                   {"yaml", l_files_yaml},
                                   {"list", l_files_list},
                                   {NULL, NULL}};

    mf_lua_register(L, "files", fns);
}
