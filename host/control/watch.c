/*
 * File watcher: one inotify descriptor on the main loop; a watch per
 * directory holding a watched file; a debounce timer re-armed by every
 * matching event, so a burst (an editor's save, a cp over a .so) gives one
 * callback.
 */
#include "control/watch.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    int wd;
    char *dir;
} watch_dir_t;

typedef struct {
    size_t dir; /* index in dirs */
    char *name; /* basename; "provider-*.so" matches by prefix and suffix */
} watch_file_t;

struct mf_watch_s {
    int fd;
    struct event *ev;
    struct event *timer;
    double debounce_ms;
    void (*fire)(void *arg);
    void *arg;
    watch_dir_t *dirs;
    size_t ndirs;
    watch_file_t *files;
    size_t nfiles;
};

static void
clear(mf_watch_t *w)
{
    size_t i;

    for (i = 0; i < w->ndirs; i++) {
        inotify_rm_watch(w->fd, w->dirs[i].wd);
        free(w->dirs[i].dir);
    }
    for (i = 0; i < w->nfiles; i++) {
        free(w->files[i].name);
    }
    free(w->dirs);
    free(w->files);
    w->dirs = NULL;
    w->files = NULL;
    w->ndirs = w->nfiles = 0;
}

static size_t
dir_index(mf_watch_t *w, const char *dir)
{
    size_t i;
    int wd;

    for (i = 0; i < w->ndirs; i++) {
        if (strcmp(w->dirs[i].dir, dir) == 0) {
            return i;
        }
    }
    wd = inotify_add_watch(w->fd, dir,
                           IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE |
                               IN_DELETE | IN_ATTRIB | IN_MODIFY);
    if (wd < 0) {
        mf_log_warn("watch: cannot watch %s: %s", dir, strerror(errno));
        return (size_t)-1;
    }
    w->dirs = mf_xrealloc(w->dirs, (w->ndirs + 1) * sizeof(*w->dirs));
    w->dirs[w->ndirs].wd = wd;
    w->dirs[w->ndirs].dir = mf_xstrdup(dir);
    return w->ndirs++;
}

static void
add_file(mf_watch_t *w, const char *path, const char *name_override)
{
    char *a = mf_xstrdup(path), *b = mf_xstrdup(path);
    size_t d = dir_index(w, name_override ? path : dirname(a));

    if (d != (size_t)-1) {
        w->files = mf_xrealloc(w->files, (w->nfiles + 1) * sizeof(*w->files));
        w->files[w->nfiles].dir = d;
        w->files[w->nfiles].name =
            mf_xstrdup(name_override ? name_override : basename(b));
        w->nfiles++;
    }
    free(a);
    free(b);
}

void
mf_watch_set(mf_watch_t *w, const char *const *files, size_t n,
             const char *const *plugin_dirs, size_t ndirs)
{
    size_t i;
    struct stat st;

    clear(w);
    for (i = 0; i < n; i++) {
        if (files[i] != NULL && files[i][0] != '\0') {
            add_file(w, files[i], NULL);
        }
    }
    for (i = 0; i < ndirs; i++) {
        if (stat(plugin_dirs[i], &st) == 0) { /* the built-in may be absent */
            add_file(w, plugin_dirs[i], "provider-*.so");
        }
    }
}

size_t
mf_watch_count(const mf_watch_t *w)
{
    return w->nfiles;
}

static int
matches(const watch_file_t *f, const char *name)
{
    size_t n = strlen(name);

    if (strcmp(f->name, "provider-*.so") == 0) {
        return strncmp(name, "provider-", 9) == 0 && n > 12 &&
               strcmp(name + n - 3, ".so") == 0;
    }
    return strcmp(f->name, name) == 0;
}

static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_watch_t *w = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    int hit = 0;

    MF_UNUSED(what);
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        char *p = buf;

        while (p < buf + n) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            size_t i, j;

            p += sizeof(*e) + e->len;
            if (e->len == 0) {
                continue;
            }
            for (i = 0; i < w->ndirs && !hit; i++) {
                if (w->dirs[i].wd != e->wd) {
                    continue;
                }
                for (j = 0; j < w->nfiles; j++) {
                    if (w->files[j].dir == i &&
                        matches(&w->files[j], e->name)) {
                        mf_log_debug("watch: %s/%s changed", w->dirs[i].dir,
                                     e->name);
                        hit = 1;
                        break;
                    }
                }
            }
        }
    }
    if (hit) {
        struct timeval tv;

        tv.tv_sec = (time_t)(w->debounce_ms / 1000);
        tv.tv_usec =
            (suseconds_t)((w->debounce_ms - (double)tv.tv_sec * 1000) * 1000);
        evtimer_add(w->timer, &tv); /* re-armed by every event of a burst */
    }
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_watch_t *w = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    w->fire(w->arg);
}

mf_watch_t *
mf_watch_new(struct event_base *base, double debounce_ms,
             void (*fire)(void *arg), void *arg)
{
    mf_watch_t *w;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

    if (fd < 0) {
        mf_log_warn("watch: inotify unavailable (%s); reload with SIGHUP or "
                    "the admin socket",
                    strerror(errno));
        return NULL;
    }
    w = mf_xcalloc(1, sizeof(*w));
    w->fd = fd;
    w->debounce_ms = debounce_ms;
    w->fire = fire;
    w->arg = arg;
    w->ev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, w);
    w->timer = evtimer_new(base, timer_cb, w);
    event_add(w->ev, NULL);
    return w;
}

void
mf_watch_free(mf_watch_t *w)
{
    if (w == NULL) {
        return;
    }
    clear(w);
    event_free(w->ev);
    event_free(w->timer);
    close(w->fd);
    free(w);
}
