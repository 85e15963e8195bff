/*
 * The private runtime directory. A path another local user can predict and
 * create first (a socket or a .so in /tmp) lets that user serve a fake
 * admin socket or swap the code the gateway loads; a directory of our own,
 * 0700, checked before each use, closes both.
 */
#include "core/rundir.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"

static pthread_mutex_t rundir_lock = PTHREAD_MUTEX_INITIALIZER;
static char rundir[4096];

int
mf_rundir_path(char *out, size_t cap)
{
    const char *own = getenv("MANIFOLD_RUNTIME_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    const char *tmp = getenv("TMPDIR");
    int n;

    if (own != NULL && *own != '\0') {
        n = snprintf(out, cap, "%s", own);
    } else if (xdg != NULL && xdg[0] == '/') {
        n = snprintf(out, cap, "%s/manifold", xdg);
    } else if (geteuid() == 0) {
        n = snprintf(out, cap, "/run/manifold");
    } else {
        n = snprintf(out, cap, "%s/manifold-%u",
                     tmp != NULL && tmp[0] == '/' ? tmp : "/tmp",
                     (unsigned)geteuid());
    }
    return n > 0 && (size_t)n < cap ? MF_OK : MF_ERR;
}

/* Checks that path is a directory of ours that nobody else may enter. */
static int
check_private(const char *path, char *err, size_t errcap)
{
    struct stat st;

    if (lstat(path, &st) != 0) {
        snprintf(err, errcap, "runtime directory %s: %s", path,
                 strerror(errno));
        return MF_ERR;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errcap,
                 "runtime directory %s exists but is not a directory (a "
                 "symlink or a file someone else may have put there); remove "
                 "it or set MANIFOLD_RUNTIME_DIR to a private directory",
                 path);
        return MF_ERR;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errcap,
                 "runtime directory %s belongs to uid %u, not to this user "
                 "(uid %u); remove it or set MANIFOLD_RUNTIME_DIR to a "
                 "directory of your own",
                 path, (unsigned)st.st_uid, (unsigned)geteuid());
        return MF_ERR;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errcap,
                 "runtime directory %s has mode %03o; other users must have "
                 "no access: chmod 700 %s",
                 path, (unsigned)(st.st_mode & 0777), path);
        return MF_ERR;
    }
    return MF_OK;
}

const char *
mf_rundir_get(char *err, size_t errcap)
{
    char path[sizeof(rundir)];
    const char *out = NULL;

    pthread_mutex_lock(&rundir_lock);
    if (rundir[0] != '\0') {
        snprintf(path, sizeof(path), "%s", rundir);
    } else if (mf_rundir_path(path, sizeof(path)) != MF_OK) {
        snprintf(err, errcap,
                 "the runtime directory path is too long; set "
                 "MANIFOLD_RUNTIME_DIR to a shorter one");
        goto out;
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errcap,
                 "cannot create the runtime directory %s: %s; set "
                 "MANIFOLD_RUNTIME_DIR to a directory this user may create",
                 path, strerror(errno));
        goto out;
    }
    if (check_private(path, err, errcap) != MF_OK) {
        goto out;
    }
    memcpy(rundir, path, sizeof(rundir));
    out = rundir;
out:
    pthread_mutex_unlock(&rundir_lock);
    return out;
}

int
mf_rundir_socket_path(const char *setting, char *out, size_t cap, int create,
                      char *err, size_t errcap)
{
    char dir[sizeof(rundir)];
    const char *d = dir;
    int n;

    if (strchr(setting, '/') != NULL) {
        n = snprintf(out, cap, "%s", setting);
    } else {
        if (create) {
            d = mf_rundir_get(err, errcap);
            if (d == NULL) {
                return MF_ERR;
            }
        } else if (mf_rundir_path(dir, sizeof(dir)) != MF_OK) {
            snprintf(err, errcap, "the runtime directory path is too long");
            return MF_ERR;
        }
        n = snprintf(out, cap, "%s/%s", d, setting);
    }
    if (n <= 0 || (size_t)n >= cap) {
        snprintf(err, errcap, "admin socket path %s is too long", setting);
        return MF_ERR;
    }
    return MF_OK;
}
