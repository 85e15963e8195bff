/*
 * Plugin loader. A .so is copied to a unique path before dlopen, because
 * dlopen returns the already-loaded handle for a path it has open, and
 * because the running code must not change when someone writes over the
 * file. The copy goes to the private runtime directory and is unlinked at
 * once (the mapping stays); where that directory cannot map code (mounted
 * noexec), the copy goes to an anonymous memory file instead. A copy
 * whose loadable segments reach past its end (a file caught while it was
 * being written) is refused before dlopen, which would map the missing
 * pages and die of SIGBUS on the first touch. The ABI version is checked
 * before anything else of the plugin runs.
 */
#include "pipeline/plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/rundir.h"
static const mf_host_api_t *host_api; /* given to every init() */

/* Plugins whose init() never returned: loaded for good, as their thread
 * still runs their code. */
static pthread_mutex_t pinned_lock = PTHREAD_MUTEX_INITIALIZER;
static mf_dso_t **pinned;
static size_t npinned;

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

#if __SIZEOF_POINTER__ == 8
#define MF_ELFCLASS ELFCLASS64
#else
#define MF_ELFCLASS ELFCLASS32
#endif

/* MF_OK unless fd, a copy of path, is a native ELF file cut short: its
 * program headers or a loadable segment reach past its end (err says so).
 * Anything else that is wrong with it is left to dlopen to report. */
static int
check_whole(int fd, const char *path, char *err, size_t errcap)
{
    struct stat st;
    ElfW(Ehdr) eh;
    ElfW(Phdr) ph;
    unsigned long long size, end = 0;
    size_t i;

    if (fstat(fd, &st) != 0 ||
        pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
        memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != MF_ELFCLASS || eh.e_phentsize != sizeof(ph)) {
        return MF_OK;
    }
    size = (unsigned long long)st.st_size;
    for (i = 0; i < eh.e_phnum; i++) {
        unsigned long long at = (unsigned long long)eh.e_phoff + i * sizeof(ph);

        if (size < sizeof(ph) || at > size - sizeof(ph) ||
            pread(fd, &ph, sizeof(ph), (off_t)at) != (ssize_t)sizeof(ph)) {
            end = at + sizeof(ph);
            break;
        }
        if (ph.p_type == PT_LOAD && ph.p_filesz > 0 &&
            (ph.p_filesz > size || ph.p_offset > size - ph.p_filesz)) {
            end = (unsigned long long)ph.p_offset + ph.p_filesz;
            break;
        }
    }
    if (end == 0) {
        return MF_OK;
    }
    snprintf(err, errcap,
             "%s: cut short: %llu bytes, but its contents reach byte %llu; "
             "is it still being written? (write a plugin aside and rename "
             "it into place)",
             path, size, end);
    return MF_ERR;
}

/* dlopens a copy of path in the runtime directory; NULL with err, and
 * *whole set to 0 when the file itself is cut short (no copy can load). */
static void *
open_file_copy(const char *path, int *whole, char *err, size_t errcap)
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
    out = open(copy, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (out < 0) {
        snprintf(err, errcap, "%s: cannot create a copy at %.1024s: %s", path,
                 copy, strerror(errno));
        return NULL;
    }
    if (copy_into(path, out, err, errcap) != MF_OK) {
        /* err says why */
    } else if (check_whole(out, path, err, errcap) != MF_OK) {
        *whole = 0;
    } else {
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
    if (copy_into(path, *fd, err, errcap) != MF_OK ||
        check_whole(*fd, path, err, errcap) != MF_OK) {
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
    int memfd = -1, whole = 1;

    handle = open_file_copy(path, &whole, first, sizeof(first));
    if (handle == NULL && !whole) {
        snprintf(err, errcap, "%s", first);
        return NULL;
    }
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

void
mf_plugin_set_api(const mf_host_api_t *api)
{
    host_api = api;
}

/* A plugin's init() on a helper thread, so that the main thread (admin
 * socket, signals, reloads) waits for it no longer than a deadline. The
 * last of the two threads to let go frees it. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    const mf_plugin_t *desc;
    char *config;
    void *state;
    int rc;
    int done;
    int refs;
} init_job_t;

static void
init_job_unref(init_job_t *j)
{
    int last;

    pthread_mutex_lock(&j->lock);
    last = --j->refs == 0;
    pthread_mutex_unlock(&j->lock);
    if (last) {
        pthread_mutex_destroy(&j->lock);
        pthread_cond_destroy(&j->cond);
        free(j->config);
        free(j);
    }
}

static void *
init_thread(void *arg)
{
    init_job_t *j = arg;
    void *state = NULL;
    int rc = j->desc->init(host_api, j->config, &state);

    pthread_mutex_lock(&j->lock);
    j->rc = rc;
    j->state = state;
    j->done = 1;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock);
    init_job_unref(j);
    return NULL;
}

int
mf_plugin_init_bounded(const mf_plugin_t *d, const char *config, void **state,
                       double timeout_ms, int *timed_out)
{
    init_job_t *j = mf_xcalloc(1, sizeof(*j));
    pthread_condattr_t ca;
    struct timespec until;
    pthread_t t;
    int rc = MF_ERR;

    *timed_out = 0;
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cond, &ca);
    pthread_condattr_destroy(&ca);
    j->desc = d;
    j->config = mf_xstrdup(config);
    j->refs = 2;
    if (pthread_create(&t, NULL, init_thread, j) != 0) {
        j->refs = 1;
        init_job_unref(j);
        return d->init(host_api, config, state); /* no thread: as before */
    }
    pthread_detach(t);
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(timeout_ms / 1000);
    until.tv_nsec +=
        (long)((timeout_ms - (double)(long)(timeout_ms / 1000) * 1000) * 1e6);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&j->lock);
    while (!j->done && !mf_stop_requested()) {
        /* in slices, to see a SIGTERM that arrives meanwhile */
        struct timespec slice;

        clock_gettime(CLOCK_MONOTONIC, &slice);
        slice.tv_nsec += 50 * 1000000L;
        if (slice.tv_nsec >= 1000000000L) {
            slice.tv_sec++;
            slice.tv_nsec -= 1000000000L;
        }
        if (slice.tv_sec > until.tv_sec ||
            (slice.tv_sec == until.tv_sec && slice.tv_nsec > until.tv_nsec)) {
            slice = until;
        }
        if (pthread_cond_timedwait(&j->cond, &j->lock, &slice) == ETIMEDOUT &&
            (slice.tv_sec == until.tv_sec && slice.tv_nsec == until.tv_nsec)) {
            break;
        }
    }
    if (j->done) {
        rc = j->rc;
        *state = j->state;
    } else {
        *timed_out = mf_stop_requested() ? 2 : 1;
    }
    pthread_mutex_unlock(&j->lock);
    init_job_unref(j);
    return rc;
}

void
mf_plugin_pin(mf_dso_t *d)
{
    pthread_mutex_lock(&pinned_lock);
    pinned = mf_xrealloc(pinned, (npinned + 1) * sizeof(*pinned));
    pinned[npinned++] = d;
    pthread_mutex_unlock(&pinned_lock);
}
