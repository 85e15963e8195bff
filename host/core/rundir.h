/*
 * The private runtime directory: where the admin socket and the copies of
 * reloaded plugins live, owned by this user and closed to everyone else.
 */
#ifndef MF_RUNDIR_H
#define MF_RUNDIR_H

#include <stddef.h>

/* Writes the runtime directory's path to out: $MANIFOLD_RUNTIME_DIR, else
 * $XDG_RUNTIME_DIR/manifold, else /run/manifold for root, else
 * ${TMPDIR:-/tmp}/manifold-<uid>. Creates nothing. MF_ERR when it does not
 * fit. */
int mf_rundir_path(char *out, size_t cap);

/* The runtime directory, created 0700 on first use and checked every time:
 * a real directory (no symlink), owned by this user, with no rights for
 * group or others. NULL with a sentence in err (what is wrong, what to
 * do). The string is static. */
const char *mf_rundir_get(char *err, size_t errcap);

/* Resolves an admin socket setting: a name without '/' lives in the
 * runtime directory, anything else is taken as is. MF_ERR with err. */
int mf_rundir_socket_path(const char *setting, char *out, size_t cap,
                          int create, char *err, size_t errcap);

#endif
