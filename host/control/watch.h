/*
 * File watcher (inotify): watches the directories of a set of files (so
 * that editors that save by rename are seen) and, after a burst of changes
 * has been quiet for the debounce time, calls back once.
 */
#ifndef MF_WATCH_H
#define MF_WATCH_H

#include <event2/event.h>

#include "core/core.h"

typedef struct mf_watch_s mf_watch_t;

/* NULL with a logged reason when inotify is not available. */
mf_watch_t *mf_watch_new(struct event_base *base, double debounce_ms,
                         void (*fire)(void *arg), void *arg);
/* Replaces the watched set: these files, plus every provider-*.so in
 * the plugin directories that exist. Paths are copied. */
void mf_watch_set(mf_watch_t *w, const char *const *files, size_t n,
                  const char *const *plugin_dirs, size_t ndirs);
/* Files watched now (for the admin socket). */
size_t mf_watch_count(const mf_watch_t *w);
void mf_watch_free(mf_watch_t *w);

#endif
