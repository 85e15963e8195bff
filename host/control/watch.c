/*
 * File watcher: one inotify descriptor on the main loop; a watch per
 * directory holding a watched file; a debounce timer re-armed by every
 * matching event, so a burst (an editor's save, a cp over a .so) gives one
 * callback. A watched file that was modified or created and not yet closed
 * holds the callback back until it is closed or replaced by a rename (a
 * reload must not read half a file), for at most write_wait from the
 * first event of the burst.
 */
#include "control/watch.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define MF_WATCH_MASK                                                          \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |    \
     IN_ATTRIB | IN_MODIFY)

typedef struct {
    int wd;
    char *dir;
    int keep; /* still needed, while mf_watch_set runs */
} watch_dir_t;

typedef struct {
    int wd;     /* of its directory */
    char *dir;  /* the directory's path, for messages and lstat */
    char *name; /* basename; "provider-*.so" matches by prefix and suffix */
} watch_file_t;

/* A watched name that was written to (or created) and not closed since:
 * a writer may still have it open. */
typedef struct {
    int wd;
    char *dir;
    char *name;
} watch_writer_t;

struct mf_watch_s {
    int fd;
    struct event *ev;
    struct event *timer;
    double debounce_ms;
    double write_wait_ms;
    void (*fire)(void *arg);
    void *arg;
    watch_dir_t *dirs;
    size_t ndirs;
    watch_file_t *files;
    size_t nfiles;
    watch_writer_t *writers;
    size_t nwriters;
    double burst_start; /* mf_now_ms() of the burst's first event; 0: none */
    int armed_for_cap;  /* the timer ends the wait, not the quiet time */
    int told_waiting;   /* the wait for a writer was logged in this burst */
};

static void
free_files(mf_watch_t *w)
{
    size_t i;

    for (i = 0; i < w->nfiles; i++) {
        free(w->files[i].dir);
        free(w->files[i].name);
    }
    free(w->files);
    w->files = NULL;
    w->nfiles = 0;
}

static void
drop_writer(mf_watch_t *w, size_t i)
{
    free(w->writers[i].dir);
    free(w->writers[i].name);
    w->writers[i] = w->writers[--w->nwriters];
}

static void
drop_writers(mf_watch_t *w)
{
    while (w->nwriters > 0) {
        drop_writer(w, w->nwriters - 1);
    }
}

static size_t
find_writer(const mf_watch_t *w, int wd, const char *name)
{
    size_t i;

    for (i = 0; i < w->nwriters; i++) {
        if (w->writers[i].wd == wd && strcmp(w->writers[i].name, name) == 0) {
            return i;
        }
    }
    return (size_t)-1;
}

static void
add_writer(mf_watch_t *w, int wd, const char *dir, const char *name)
{
    if (find_writer(w, wd, name) != (size_t)-1) {
        return;
    }
    w->writers =
        mf_xrealloc(w->writers, (w->nwriters + 1) * sizeof(*w->writers));
    w->writers[w->nwriters].wd = wd;
    w->writers[w->nwriters].dir = mf_xstrdup(dir);
    w->writers[w->nwriters].name = mf_xstrdup(name);
    w->nwriters++;
}

/* The watch descriptor of dir, adding a watch when it has none yet, and
 * marks it as still needed; -1 when it cannot be watched (logged). */
static int
dir_watch(mf_watch_t *w, const char *dir)
{
    size_t i;
    int wd;

    for (i = 0; i < w->ndirs; i++) {
        if (strcmp(w->dirs[i].dir, dir) == 0) {
            w->dirs[i].keep = 1;
            return w->dirs[i].wd;
        }
    }
    wd = inotify_add_watch(w->fd, dir, MF_WATCH_MASK);
    if (wd < 0) {
        mf_log_warn("watch: cannot watch %s: %s", dir, strerror(errno));
        return -1;
    }
    for (i = 0; i < w->ndirs; i++) { /* the same directory by another path */
        if (w->dirs[i].wd == wd) {
            w->dirs[i].keep = 1;
            return wd;
        }
    }
    w->dirs = mf_xrealloc(w->dirs, (w->ndirs + 1) * sizeof(*w->dirs));
    w->dirs[w->ndirs].wd = wd;
    w->dirs[w->ndirs].dir = mf_xstrdup(dir);
    w->dirs[w->ndirs].keep = 1;
    w->ndirs++;
    return wd;
}

static void
add_file(mf_watch_t *w, const char *path, const char *name_override)
{
    char *a = mf_xstrdup(path), *b = mf_xstrdup(path);
    const char *dir = name_override ? path : dirname(a);
    int wd = dir_watch(w, dir);

    if (wd >= 0) {
        w->files = mf_xrealloc(w->files, (w->nfiles + 1) * sizeof(*w->files));
        w->files[w->nfiles].wd = wd;
        w->files[w->nfiles].dir = mf_xstrdup(dir);
        w->files[w->nfiles].name =
            mf_xstrdup(name_override ? name_override : basename(b));
        w->nfiles++;
    }
    free(a);
    free(b);
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

static const watch_file_t *
watched(const mf_watch_t *w, int wd, const char *name)
{
    size_t i;

    for (i = 0; i < w->nfiles; i++) {
        if (w->files[i].wd == wd && matches(&w->files[i], name)) {
            return &w->files[i];
        }
    }
    return NULL;
}

/* Directories no longer needed lose their watch; writers of names no
 * longer watched are forgotten. Watches that stay are not touched, so no
 * event is lost across a change of the set and a writer seen before it
 * is still waited for. */
static void
prune(mf_watch_t *w)
{
    size_t i = 0;

    while (i < w->ndirs) {
        if (w->dirs[i].keep) {
            i++;
            continue;
        }
        inotify_rm_watch(w->fd, w->dirs[i].wd);
        free(w->dirs[i].dir);
        w->dirs[i] = w->dirs[--w->ndirs];
    }
    i = 0;
    while (i < w->nwriters) {
        if (watched(w, w->writers[i].wd, w->writers[i].name) != NULL) {
            i++;
        } else {
            drop_writer(w, i);
        }
    }
}

void
mf_watch_set(mf_watch_t *w, const char *const *files, size_t n,
             const char *const *plugin_dirs, size_t ndirs)
{
    size_t i;
    struct stat st;

    free_files(w);
    for (i = 0; i < w->ndirs; i++) {
        w->dirs[i].keep = 0;
    }
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
    prune(w);
}

void
mf_watch_timing(mf_watch_t *w, double debounce_ms, double write_wait_ms)
{
    w->debounce_ms = debounce_ms;
    w->write_wait_ms = write_wait_ms;
}

size_t
mf_watch_count(const mf_watch_t *w)
{
    return w->nfiles;
}

size_t
mf_watch_writers(const mf_watch_t *w)
{
    return w->nwriters;
}

static void
arm_ms(mf_watch_t *w, double ms)
{
    struct timeval tv;

    if (ms < 0) {
        ms = 0;
    }
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms - (double)tv.tv_sec * 1000) * 1000);
    evtimer_add(w->timer, &tv);
}

/* The end of the wait that started with the burst: never before the
 * debounce time, so a short write_wait does not cut every burst short. */
static double
cap_at(const mf_watch_t *w)
{
    return w->burst_start + (w->write_wait_ms > w->debounce_ms
                                 ? w->write_wait_ms
                                 : w->debounce_ms);
}

/* A matching event: the quiet time starts again, up to the cap. */
static void
arm(mf_watch_t *w)
{
    double now = mf_now_ms(), due = now + w->debounce_ms, cap;

    if (w->burst_start == 0) {
        w->burst_start = now;
        w->told_waiting = 0;
    }
    cap = cap_at(w);
    w->armed_for_cap = cap <= due;
    arm_ms(w, (w->armed_for_cap ? cap : due) - now);
}

/* What an event on a watched name says about a writer holding it. */
static void
track_writer(mf_watch_t *w, const watch_file_t *f,
             const struct inotify_event *e)
{
    char path[4096];
    struct stat st;
    size_t i;

    if (e->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) {
        /* closed, or the name now holds another (complete) file, or none */
        i = find_writer(w, e->wd, e->name);
        if (i != (size_t)-1) {
            drop_writer(w, i);
        }
    } else if (e->mask & IN_MODIFY) {
        add_writer(w, e->wd, f->dir, e->name);
    } else if (e->mask & IN_CREATE) {
        /* a regular file with one link was made by open(O_CREAT): its
         * creator writes it next; a hard link or a symlink is complete */
        snprintf(path, sizeof(path), "%s/%s", f->dir, e->name);
        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1) {
            add_writer(w, e->wd, f->dir, e->name);
        }
    }
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
            const watch_file_t *f;

            p += sizeof(*e) + e->len;
            if (e->mask & IN_Q_OVERFLOW) {
                mf_log_warn("watch: the inotify queue overflowed; reloading "
                            "in case a watched file changed");
                hit = 1;
                continue;
            }
            if (e->len == 0 || (f = watched(w, e->wd, e->name)) == NULL) {
                continue;
            }
            mf_log_debug("watch: %s/%s changed (0x%x)", f->dir, e->name,
                         (unsigned)e->mask);
            track_writer(w, f, e);
            hit = 1;
        }
    }
    if (hit) {
        arm(w); /* re-armed by every event of a burst */
    }
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    mf_watch_t *w = arg;
    size_t i;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    if (!w->armed_for_cap && w->nwriters > 0) {
        /* quiet, but a file is still open for writing: its close (or a
         * rename over it) is an event that arms the quiet time again */
        if (!w->told_waiting) {
            mf_log_info("watch: %s/%s is open for writing; the reload waits "
                        "until it is closed (at most %.1f s)",
                        w->writers[0].dir, w->writers[0].name,
                        (cap_at(w) - w->burst_start) / 1000);
            w->told_waiting = 1;
        }
        w->armed_for_cap = 1;
        arm_ms(w, cap_at(w) - mf_now_ms());
        return;
    }
    if (w->armed_for_cap) {
        for (i = 0; i < w->nwriters; i++) {
            mf_log_warn("watch: %s/%s is still open for writing after %.1f "
                        "s; reloading anyway (reload.write_wait)",
                        w->writers[i].dir, w->writers[i].name,
                        (cap_at(w) - w->burst_start) / 1000);
        }
        if (w->nwriters == 0) {
            mf_log_warn("watch: watched files kept changing for %.1f s "
                        "without a quiet %.0f ms; reloading anyway "
                        "(reload.write_wait)",
                        (cap_at(w) - w->burst_start) / 1000, w->debounce_ms);
        }
        drop_writers(w); /* their next write waits again */
    }
    w->burst_start = 0;
    w->fire(w->arg);
}

mf_watch_t *
mf_watch_new(struct event_base *base, double debounce_ms, double write_wait_ms,
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
    mf_watch_timing(w, debounce_ms, write_wait_ms);
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
    size_t i;

    if (w == NULL) {
        return;
    }
    free_files(w);
    for (i = 0; i < w->ndirs; i++) {
        inotify_rm_watch(w->fd, w->dirs[i].wd);
        free(w->dirs[i].dir);
    }
    free(w->dirs);
    drop_writers(w);
    free(w->writers);
    event_free(w->ev);
    event_free(w->timer);
    close(w->fd);
    free(w);
}
