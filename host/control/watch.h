/*
 * File watcher (inotify): watches the directories of a set of files (so
 * that editors that save by rename are seen) and, after a burst of changes
 * has been quiet for the debounce time, calls back once. A watched file
 * that was written to and is not closed yet (a slow copy, a writer that
 * pauses) holds the callback back until it is closed or a rename puts
 * another file in its place, for at most write_wait from the burst's
 * first change; past that the callback runs anyway, with a warning.
 */
#ifndef MF_WATCH_H
#define MF_WATCH_H

#include <event2/event.h>

#include "core/core.h"

typedef struct mf_watch_s mf_watch_t;

/* NULL with a logged reason when inotify is not available. */
mf_watch_t *mf_watch_new(struct event_base *base, double debounce_ms,
                         double write_wait_ms, void (*fire)(void *arg),
                         void *arg);
/* Replaces the watched set: these files, plus every provider-*.so in
 * the plugin directories that exist. Paths are copied. A directory that
 * stays watched keeps its watch, and a file still open for writing is
 * still waited for. */
void mf_watch_set(mf_watch_t *w, const char *const *files, size_t n,
                  const char *const *plugin_dirs, size_t ndirs);
/* New times (a reload may change them); the next burst uses them. A
 * write_wait below the debounce time counts as the debounce time. */
void mf_watch_timing(mf_watch_t *w, double debounce_ms, double write_wait_ms);
/* Files watched now (for the admin socket). */
size_t mf_watch_count(const mf_watch_t *w);
/* Watched files written to and not closed yet (the reload waits for
 * them). */
size_t mf_watch_writers(const mf_watch_t *w);
void mf_watch_free(mf_watch_t *w);

#endif
