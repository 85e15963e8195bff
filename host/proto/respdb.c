/*
 * The response store's file: write-behind. The memory store tells the
 * journal (on_change) the id of each entry that changed; the id is queued
 * (bounded) and the writer thread, woken by the first change of a
 * group, gathers changes for GROUP_MS, then takes the whole queue and
 * writes the current state of each id in one transaction (a group
 * commit): the entry as the memory store holds it, or its row deleted
 * when it is gone. The order of changes does not matter, only the state
 * at the time of writing. A queue past its bound, or a write that fails,
 * makes the next round rewrite the whole file from memory (resync), so a
 * deleted answer never comes back from the file.
 *
 * A row keeps the wall-clock expiry (Unix ms): the monotonic clock does
 * not survive a restart. The writer deletes expired rows once a minute.
 */
#include "proto/respdb.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "proto/respstore.h"

#define MAX_QUEUED 65536  /* ids waiting; past it: a resync */
#define SWEEP_MS 60000.0  /* expired rows deleted this often */
#define BACKOFF_MS 1000.0 /* after a failed write */
#define GROUP_MS 10.0     /* changes gathered into one transaction */

typedef struct qitem_s {
    struct qitem_s *next;
    char id[];
} qitem_t;

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS responses(id TEXT PRIMARY KEY NOT NULL, "
    "owner TEXT NOT NULL, value BLOB NOT NULL, expires_at REAL NOT NULL);";

static struct {
    pthread_mutex_t mu; /* the queue and the flags below */
    pthread_cond_t cond;
    qitem_t *head, **tail;
    size_t queued;
    int resync;   /* rewrite the whole file next round */
    int stopping; /* write what is left and stop */
    int started;  /* mf_respdb_open was called */
    size_t failed_rounds;
    pthread_t thread;
    sqlite3 *db; /* used by the writer only once it runs */
    char *path;
} w = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Unix ms now. */
static double
wall_ms(void)
{
    return mf_wall_time() * 1000.0;
}

/* The journal: runs on the thread that changed the store (a worker),
 * under the store's lock. */
static void
on_change(const char *id)
{
    size_t n = strlen(id);
    qitem_t *q = mf_xmalloc(sizeof(*q) + n + 1);
    int wake;

    memcpy(q->id, id, n + 1);
    q->next = NULL;
    pthread_mutex_lock(&w.mu);
    /* the writer is woken by the first change of a group only: it then
     * gathers the others for GROUP_MS */
    wake = w.head == NULL && !w.resync;
    if (w.resync || w.queued >= MAX_QUEUED) {
        w.resync = 1; /* the queue is freed by the writer */
        free(q);
    } else {
        *w.tail = q;
        w.tail = &q->next;
        w.queued++;
    }
    if (wake) {
        pthread_cond_signal(&w.cond);
    }
    pthread_mutex_unlock(&w.mu);
}

static void
free_items(qitem_t *q)
{
    while (q != NULL) {
        qitem_t *next = q->next;

        free(q);
        q = next;
    }
}

/* Writes id's current state with the two statements (upsert, delete). */
static int
write_id(sqlite3_stmt *put, sqlite3_stmt *del, const char *id)
{
    char *owner = NULL, *value;
    size_t len = 0;
    double expires = 0;
    sqlite3_stmt *st;
    int rc;

    value = mf_respstore_peek(id, &owner, &len, &expires);
    if (value != NULL) {
        st = put;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, value, (int)len, SQLITE_STATIC);
        sqlite3_bind_double(st, 4, wall_ms() + (expires - mf_now_ms()));
    } else {
        st = del;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    }
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    free(value);
    free(owner);
    return rc == SQLITE_DONE ? MF_OK : MF_ERR;
}

/* One transaction: the ids of batch, or (all) every entry the memory
 * store holds after deleting every row. */
static int
write_round(qitem_t *batch, int all)
{
    sqlite3_stmt *put = NULL, *del = NULL;
    char **ids = NULL;
    size_t i, n = 0;
    int ok;

    ok = sqlite3_exec(w.db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    ok = ok && sqlite3_prepare_v2(w.db,
                                  "INSERT OR REPLACE INTO responses(id, owner, "
                                  "value, expires_at) VALUES(?, ?, ?, ?)",
                                  -1, &put, NULL) == SQLITE_OK;
    ok = ok && sqlite3_prepare_v2(w.db, "DELETE FROM responses WHERE id = ?",
                                  -1, &del, NULL) == SQLITE_OK;
    if (ok && all) {
        ok = sqlite3_exec(w.db, "DELETE FROM responses", NULL, NULL, NULL) ==
             SQLITE_OK;
        n = mf_respstore_ids(&ids);
        for (i = 0; ok && i < n; i++) {
            ok = write_id(put, del, ids[i]) == MF_OK;
        }
    }
    for (; ok && !all && batch != NULL; batch = batch->next) {
        ok = write_id(put, del, batch->id) == MF_OK;
    }
    sqlite3_finalize(put);
    sqlite3_finalize(del);
    ok = ok && sqlite3_exec(w.db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) {
        mf_log_warn("response store: writing %s failed: %s; retried from "
                    "memory in %.0fs",
                    w.path, sqlite3_errmsg(w.db), BACKOFF_MS / 1000);
        sqlite3_exec(w.db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (ids != NULL) {
        for (i = 0; i < n; i++) {
            free(ids[i]);
        }
        free(ids);
    }
    return ok ? MF_OK : MF_ERR;
}

/* Deletes the rows past their expiry. */
static void
sweep(void)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(w.db, "DELETE FROM responses WHERE expires_at <= ?",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_double(st, 1, wall_ms());
        if (sqlite3_step(st) != SQLITE_DONE) {
            mf_log_warn("response store: %s: expired answers not deleted: %s",
                        w.path, sqlite3_errmsg(w.db));
        }
    }
    sqlite3_finalize(st);
}

/* Waits on the condition until at (monotonic ms); the caller holds mu. */
static void
wait_until(double at)
{
    struct timespec ts;
    double left = at - mf_now_ms();

    if (left <= 0) {
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(left / 1000);
    ts.tv_nsec += (long)((left - (double)(long)(left / 1000) * 1000) * 1e6);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&w.cond, &w.mu, &ts);
}

static void *
writer(void *arg)
{
    double next_sweep = mf_now_ms() + SWEEP_MS, retry_at = 0;
    qitem_t *batch;
    int all, stopping, failed = 0;

    (void)arg;
    pthread_mutex_lock(&w.mu);
    for (;;) {
        /* after a failure only the stop or the backoff's end wake it */
        while (!w.stopping && (failed ? mf_now_ms() < retry_at
                                      : w.head == NULL && !w.resync &&
                                            mf_now_ms() < next_sweep)) {
            wait_until(failed ? retry_at : next_sweep);
        }
        if (!failed && (w.head != NULL || w.resync)) {
            double until = mf_now_ms() + GROUP_MS;

            while (!w.stopping && mf_now_ms() < until) {
                wait_until(until);
            }
        }
        batch = w.head;
        all = w.resync;
        stopping = w.stopping;
        w.head = NULL;
        w.tail = &w.head;
        w.queued = 0;
        w.resync = 0;
        pthread_mutex_unlock(&w.mu);
        failed = (all || batch != NULL) && write_round(batch, all) != MF_OK;
        if (failed) {
            retry_at = mf_now_ms() + BACKOFF_MS;
        }
        free_items(batch);
        if (!failed && (stopping || mf_now_ms() >= next_sweep)) {
            sweep();
            next_sweep = mf_now_ms() + SWEEP_MS;
        }
        pthread_mutex_lock(&w.mu);
        if (failed) {
            w.resync = 1; /* the next round rewrites the file */
            w.failed_rounds++;
        }
        if (stopping) {
            /* nothing is queued after the stop (the journal is off): one
             * more round only when this one failed and must be retried */
            if (failed && w.stopping++ < 3) {
                continue;
            }
            break;
        }
    }
    if (failed) {
        mf_log_error("response store: %s could not be written at stop; the "
                     "answers of this run are not all in it",
                     w.path);
    }
    pthread_mutex_unlock(&w.mu);
    return NULL;
}

/* Opens path (0600 when created) with the schema; NULL and err. */
static sqlite3 *
db_open(const char *path, char *err, size_t errcap)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    struct stat st;
    int fd, rc;

    /* created here 0600 (SQLite gives its -wal and -shm files the same
     * mode), without changing the process's umask under other threads */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errcap, "response_store.db: cannot open %s: %s", path,
                 strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
        mf_log_warn("response store: %s can be read by other users (mode "
                    "%04o) and holds conversations; chmod 600 it",
                    path, (unsigned)(st.st_mode & 0777));
    }
    close(fd);
    rc = sqlite3_open(path, &db);
    if (rc != SQLITE_OK) {
        snprintf(err, errcap, "response_store.db: cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errcap, "response_store.db: cannot use %s: %s", path,
                 msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    return db;
}

typedef struct {
    char *id, *owner, *value;
    size_t len;
    double ttl_ms;
} row_t;

/* Reads back the rows not expired, newest first within the bounds, into
 * the memory store (oldest first, so that its order is kept), and
 * deletes the others. The number read back in *kept. */
static int
load(size_t max_entries, size_t max_bytes, size_t *kept, char *err,
     size_t errcap)
{
    sqlite3_stmt *st = NULL;
    row_t *rows = NULL;
    size_t n = 0, cap = 0, bytes = 0, i;
    sqlite3_int64 cutoff = 0;
    double now = wall_ms();
    int rc;

    if (sqlite3_prepare_v2(w.db,
                           "SELECT rowid, id, owner, value, expires_at FROM "
                           "responses WHERE expires_at > ? ORDER BY rowid "
                           "DESC",
                           -1, &st, NULL) != SQLITE_OK) {
        goto fail;
    }
    sqlite3_bind_double(st, 1, now);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        size_t len = (size_t)sqlite3_column_bytes(st, 3);
        const void *v = sqlite3_column_blob(st, 3);

        if (n >= max_entries || bytes + len > max_bytes) {
            cutoff = sqlite3_column_int64(st, 0);
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            rows = mf_xrealloc(rows, cap * sizeof(*rows));
        }
        rows[n].id = mf_xstrdup((const char *)sqlite3_column_text(st, 1));
        rows[n].owner = mf_xstrdup((const char *)sqlite3_column_text(st, 2));
        rows[n].value = mf_xstrndup(v ? v : "", len);
        rows[n].len = len;
        rows[n].ttl_ms = sqlite3_column_double(st, 4) - now;
        bytes += len;
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    for (i = n; i-- > 0;) {
        (void)mf_respstore_put(rows[i].id, rows[i].owner,
                               (mf_str_t){rows[i].value, rows[i].len},
                               max_entries, max_bytes, rows[i].ttl_ms);
        free(rows[i].id);
        free(rows[i].owner);
        free(rows[i].value);
    }
    free(rows);
    rows = NULL;
    *kept = n;
    if (sqlite3_prepare_v2(w.db,
                           "DELETE FROM responses WHERE rowid <= ? OR "
                           "expires_at <= ?",
                           -1, &st, NULL) != SQLITE_OK) {
        goto fail;
    }
    sqlite3_bind_int64(st, 1, cutoff);
    sqlite3_bind_double(st, 2, now);
    if (sqlite3_step(st) != SQLITE_DONE) {
        goto fail;
    }
    sqlite3_finalize(st);
    return MF_OK;
fail:
    snprintf(err, errcap, "response_store.db: cannot read %s: %s", w.path,
             sqlite3_errmsg(w.db));
    sqlite3_finalize(st);
    for (i = 0; rows != NULL && i < n; i++) {
        free(rows[i].id);
        free(rows[i].owner);
        free(rows[i].value);
    }
    free(rows);
    return MF_ERR;
}

int
mf_respdb_open(const char *path, size_t max_entries, size_t max_bytes,
               char *err, size_t errcap)
{
    pthread_condattr_t ca;
    size_t kept = 0;

    w.started = 1;
    if (path == NULL) {
        return MF_OK;
    }
    w.path = mf_xstrdup(path);
    w.db = db_open(path, err, errcap);
    if (w.db == NULL) {
        goto fail;
    }
    if (load(max_entries, max_bytes, &kept, err, errcap) != MF_OK) {
        goto fail;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cond, &ca);
    pthread_condattr_destroy(&ca);
    w.head = NULL;
    w.tail = &w.head;
    if (pthread_create(&w.thread, NULL, writer, NULL) != 0) {
        snprintf(err, errcap, "response_store.db: %s: no writer thread: %s",
                 path, strerror(errno));
        pthread_cond_destroy(&w.cond);
        goto fail;
    }
    mf_respstore_set_journal(on_change);
    mf_log_info("response store: %zu answers read back from %s", kept, path);
    return MF_OK;
fail:
    sqlite3_close(w.db);
    w.db = NULL;
    free(w.path);
    w.path = NULL;
    return MF_ERR;
}

void
mf_respdb_close(void)
{
    if (w.db == NULL) {
        return;
    }
    mf_respstore_set_journal(NULL);
    pthread_mutex_lock(&w.mu);
    w.stopping = 1;
    pthread_cond_signal(&w.cond);
    pthread_mutex_unlock(&w.mu);
    pthread_join(w.thread, NULL);
    pthread_cond_destroy(&w.cond);
    sqlite3_close(w.db);
    w.db = NULL;
    w.stopping = 0;
    w.started = 0;
    free(w.path);
    w.path = NULL;
}

int
mf_respdb_started(void)
{
    return w.started;
}

const char *
mf_respdb_path(void)
{
    return w.path;
}

int
mf_respdb_check(const char *path, char *err, size_t errcap)
{
    sqlite3 *db = NULL;
    char *tmp, *dir;
    int rc;

    if (access(path, F_OK) != 0) {
        tmp = mf_xstrdup(path);
        dir = dirname(tmp);
        rc = access(dir, W_OK | X_OK);
        if (rc != 0) {
            snprintf(err, errcap,
                     "response_store.db: cannot create %s: %s is not a "
                     "writable folder (%s)",
                     path, dir, strerror(errno));
        }
        free(tmp);
        return rc == 0 ? MF_OK : MF_ERR;
    }
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL,
                          NULL);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errcap, "response_store.db: cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : "out of memory");
    }
    sqlite3_close(db);
    return rc == SQLITE_OK ? MF_OK : MF_ERR;
}

size_t
mf_respdb_failed_rounds(void)
{
    size_t n;

    pthread_mutex_lock(&w.mu);
    n = w.failed_rounds;
    pthread_mutex_unlock(&w.mu);
    return n;
}
