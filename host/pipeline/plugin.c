/*
 * Plugin loader. A .so is copied to a unique path before dlopen, because
 * dlopen returns the already-loaded handle for a path it has open, and
 * because the running code must not change when someone writes over the
 * file. The copy goes to the private runtime directory and is unlinked at
 * once (the mapping stays); where that directory cannot map code (mounted
 * noexec), the copy goes to an anonymous memory file instead. The ABI
 * version is checked before anything else of the plugin runs.
 */
#include "pipeline/plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/rundir.h"

static atomic_uint copy_seq;

/* Copies the file at from into the open descriptor out. */
static int
copy_into(const char *from, int out, char *err, size_t errcap)
{
    char buf[65536];
    int in, rc = MF_ERR;
    ssize_t n;

    in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        snprintf(err, errcap, "%s: cannot open: %s", from, strerror(errno));
        return MF_ERR;
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
    close(in);
    return rc;
}

/* dlopens a copy of path in the runtime directory; NULL with err. */
static void *
open_file_copy(const char *path, char *err, size_t errcap)
{
    char copy[4096];
    const char *dir = mf_rundir_get(err, errcap);
    const char *base = strrchr(path, '/');
    void *handle = NULL;
    int out;

    if (dir == NULL) {
        return NULL;
    }
    snprintf(copy, sizeof(copy), "%s/%d-%u-%.100s", dir, (int)getpid(),
             atomic_fetch_add(&copy_seq, 1), base ? base + 1 : path);
    unlink(copy);
    out = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (out < 0) {
        snprintf(err, errcap, "%s: cannot create a copy at %.1024s: %s", path,
                 copy, strerror(errno));
        return NULL;
    }
    if (copy_into(path, out, err, errcap) == MF_OK) {
        close(out);
        out = -1;
        handle = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
        if (handle == NULL) {
            snprintf(err, errcap, "%s: cannot load its copy in %s: %s", path,
                     dir, dlerror());
        }
    }
    if (out >= 0) {
        close(out);
    }
    unlink(copy);
    return handle;
}

/* dlopens a copy of path in a memory file kept open in *fd (its name,
 * /proc/self/fd/N, is unique while the fd is open); NULL with err. */
static void *
open_mem_copy(const char *path, int *fd, char *err, size_t errcap)
{
    char name[64];
    void *handle;

    *fd = memfd_create("manifold-plugin", MFD_CLOEXEC);
    if (*fd < 0) {
        snprintf(err, errcap, "%s: cannot create a memory file: %s", path,
                 strerror(errno));
        return NULL;
    }
    if (copy_into(path, *fd, err, errcap) != MF_OK) {
        close(*fd);
        *fd = -1;
        return NULL;
    }
    snprintf(name, sizeof(name), "/proc/self/fd/%d", *fd);
    handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(err, errcap, "%s: cannot load it from memory: %s", path,
                 dlerror());
        close(*fd);
        *fd = -1;
    }
    return handle;
}

mf_dso_t *
mf_plugin_load(const char *path, char *err, size_t errcap)
{
    char first[2048];
    mf_plugin_entry_t entry;
    const mf_plugin_t *desc;
    void *handle;
    mf_dso_t *d;
    int memfd = -1;

    handle = open_file_copy(path, first, sizeof(first));
    if (handle == NULL) {
        handle = open_mem_copy(path, &memfd, err, errcap);
        if (handle == NULL) {
            snprintf(err, errcap,
                     "%s; and from memory neither (check that the file is a "
                     "shared object built for this machine, or set "
                     "MANIFOLD_RUNTIME_DIR to a private directory on a "
                     "filesystem not mounted noexec)",
                     first);
            return NULL;
        }
        mf_log_debug("%s: loaded from memory (%s)", path, first);
    }
    *(void **)&entry = dlsym(handle, "mf_plugin_v1");
    if (entry == NULL) {
        snprintf(err, errcap,
                 "%s: not a Manifold plugin: it exports no "
                 "mf_plugin_v1 symbol",
                 path);
        dlclose(handle);
        if (memfd >= 0) {
            close(memfd);
        }
        return NULL;
    }
    desc = entry();
    if (desc == NULL) {
        snprintf(err, errcap, "%s: mf_plugin_v1() returned NULL", path);
        dlclose(handle);
        if (memfd >= 0) {
            close(memfd);
        }
        return NULL;
    }
    if (desc->abi_major != MF_ABI_MAJOR || desc->abi_minor > MF_ABI_MINOR) {
        snprintf(err, errcap,
                 "%s: plugin '%s' is built for ABI %u.%u, this "
                 "host speaks %u.%u; rebuild it against this SDK",
                 path, desc->name ? desc->name : "?", desc->abi_major,
                 desc->abi_minor, (unsigned)MF_ABI_MAJOR,
                 (unsigned)MF_ABI_MINOR);
        dlclose(handle);
        if (memfd >= 0) {
            close(memfd);
        }
        return NULL;
    }
    if (desc->name == NULL || desc->init == NULL) {
        snprintf(err, errcap, "%s: descriptor lacks a name or init()", path);
        dlclose(handle);
        if (memfd >= 0) {
            close(memfd);
        }
        return NULL;
    }
    d = mf_xcalloc(1, sizeof(*d));
    d->handle = handle;
    d->desc = desc;
    d->path = mf_xstrdup(path);
    d->memfd = memfd;
    return d;
}

void
mf_plugin_unload(mf_dso_t *d)
{
    if (d == NULL) {
        return;
    }
    dlclose(d->handle);
    if (d->memfd >= 0) {
        close(d->memfd); /* after dlclose: the name stays unique */
    }
    free(d->path);
    free(d);
}
