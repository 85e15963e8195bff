/*
 * Plugin loader. A .so is copied to a unique path before dlopen, because
 * dlopen returns the already-loaded handle for a path it has open; the copy
 * is unlinked at once (the mapping stays). The ABI version is checked
 * before anything else of the plugin runs.
 */
#include "plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_uint copy_seq;

static int
copy_file(const char *from, const char *to, char *err, size_t errcap)
{
    char buf[65536];
    int in = -1, out = -1, rc = MF_ERR;
    ssize_t n;

    in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        snprintf(err, errcap, "%s: cannot open: %s", from, strerror(errno));
        goto fail;
    }
    out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (out < 0) {
        snprintf(err, errcap, "%s: cannot create a copy at %s: %s", from, to,
                 strerror(errno));
        goto fail;
    }
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            snprintf(err, errcap, "%s: cannot copy: %s", from, strerror(errno));
            goto fail;
        }
    }
    if (n < 0) {
        snprintf(err, errcap, "%s: cannot read: %s", from, strerror(errno));
        goto fail;
    }
    rc = MF_OK;
fail:
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
    return rc;
}

mf_dso_t *
mf_plugin_load(const char *path, char *err, size_t errcap)
{
    char copy[4096];
    const char *tmp = getenv("TMPDIR");
    mf_plugin_entry_t entry;
    const mf_plugin_t *desc;
    void *handle;
    mf_dso_t *d;

    snprintf(copy, sizeof(copy), "%s/manifold-%d-%u.so",
             tmp && *tmp ? tmp : "/tmp", (int)getpid(),
             atomic_fetch_add(&copy_seq, 1));
    unlink(copy);
    if (copy_file(path, copy, err, errcap) != MF_OK) {
        unlink(copy);
        return NULL;
    }
    handle = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
    unlink(copy);
    if (handle == NULL) {
        snprintf(err, errcap, "%s: cannot load: %s", path, dlerror());
        return NULL;
    }
    *(void **)&entry = dlsym(handle, "mf_plugin_v1");
    if (entry == NULL) {
        snprintf(err, errcap,
                 "%s: not a Manifold plugin: it exports no "
                 "mf_plugin_v1 symbol",
                 path);
        dlclose(handle);
        return NULL;
    }
    desc = entry();
    if (desc == NULL) {
        snprintf(err, errcap, "%s: mf_plugin_v1() returned NULL", path);
        dlclose(handle);
        return NULL;
    }
    if (desc->abi_major != MF_ABI_MAJOR || desc->abi_minor > MF_ABI_MINOR) {
        snprintf(err, errcap,
                 "%s: plugin '%s' is built for ABI %u.%u, this "
                 "host speaks %u.%u; rebuild it against this SDK",
                 path, desc->name ? desc->name : "?", desc->abi_major,
                 desc->abi_minor, MF_ABI_MAJOR, MF_ABI_MINOR);
        dlclose(handle);
        return NULL;
    }
    if (desc->name == NULL || desc->init == NULL) {
        snprintf(err, errcap, "%s: descriptor lacks a name or init()", path);
        dlclose(handle);
        return NULL;
    }
    d = mf_xcalloc(1, sizeof(*d));
    d->handle = handle;
    d->desc = desc;
    d->path = mf_xstrdup(path);
    return d;
}

void
mf_plugin_unload(mf_dso_t *d)
{
    if (d == NULL) {
        return;
    }
    dlclose(d->handle);
    free(d->path);
    free(d);
}
