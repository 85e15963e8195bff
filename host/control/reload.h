/*
 * Reloads: reads the config again into a new generation that shares the
 * stages which did not change, and makes it current; on any error the
 * current generation keeps serving and the error is kept for the admin
 * socket. Runs on the main thread (SIGHUP, file watcher, admin socket).
 */
#ifndef MF_RELOAD_H
#define MF_RELOAD_H

#include "pipeline/generation-t.h"

typedef struct mf_reloader_s {
    const char *config_path;
    const char *plugin_dir; /* the built-in one, searched last */
    const char *first_dirs; /* -p (':'-separated), searched first, or NULL */
    const char *listen;     /* --listen, or NULL */
    int workers;            /* --workers, or 0 */
    int nworkers;           /* fixed once serving (0 before) */
    char *admin_socket;     /* as bound at start */
    /* the last attempt, for the admin socket */
    unsigned attempts;
    unsigned failures;
    double last_at;
    int last_ok;
    char last_trigger[32];
    char last_error[4096];
    /* files the last config named (stage files), watched even when they
     * failed to load so that fixing them reloads */
    char **named;
    size_t nnamed;
    /* called with on = 1 before a reload builds its generation (the main
     * thread is then busy, up to the stages' init_timeout) and on = 0
     * after, on the main thread; NULL for none (the admin socket answers
     * from a helper thread meanwhile) */
    void (*busy)(void *arg, int on, const char *trigger);
    void *busy_arg;
} mf_reloader_t;

/*
 * Loads the config and builds a generation from it, sharing unchanged
 * stages of the current one; `force` is NULL, "*" or a stage name to load
 * afresh. NULL with the errors (file:line: key: sentence) in err.
 */
mf_gen_t *mf_reload_build(mf_reloader_t *rl, const char *force, char *err,
                          size_t errcap);
/*
 * Builds and makes current. Returns the new generation id, or 0 with the
 * error logged and kept in rl->last_error (and err when not NULL).
 */
unsigned mf_reload(mf_reloader_t *rl, const char *trigger, const char *force,
                   char *err, size_t errcap);
void mf_reloader_free(mf_reloader_t *rl);

#endif
