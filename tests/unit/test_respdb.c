/* Check suite for host/proto/respdb.c: what the memory store holds when
 * the file is closed is what a new open reads back (owners, order, the
 * bounds keeping the newest, expiry on the wall clock), also after many
 * changes from several threads at once, and after a round that could
 * not be committed. */
#include "check_main.h"
#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/respdb.h"
#include "proto/respstore.h"

static char dir[] = "/tmp/mf-respdb-XXXXXX";
static char file[64];
static int nfile;

/* A fresh file name per test. */
static const char *
fresh(void)
{
    snprintf(file, sizeof(file), "%s/r%d.db", dir, nfile++);
    return file;
}

/* Empties the memory store; with no file open, the file keeps its rows. */
static void
forget(void)
{
    char **ids;
    size_t i, n = mf_respstore_ids(&ids);

    ck_assert_ptr_null(mf_respdb_path());
    for (i = 0; i < n; i++) {
        (void)mf_respstore_delete(ids[i], NULL);
        free(ids[i]);
    }
    free(ids);
    ck_assert_uint_eq(mf_respstore_count(), 0);
}

static void
open_ok(const char *path, size_t max_entries, size_t max_bytes)
{
    char err[512];

    ck_assert_msg(
        mf_respdb_open(path, max_entries, max_bytes, err, sizeof(err)) == MF_OK,
        "%s", err);
}

/* The value and owner held under id, or NULL. */
static int
holds(const char *id, const char *value, const char *owner)
{
    char *o = NULL, *v = mf_respstore_get(id, &o);
    int ok = v != NULL && strcmp(v, value) == 0 && strcmp(o, owner) == 0;

    free(v);
    free(o);
    return ok;
}

START_TEST(reopen_reads_back)
{
    const char *path = fresh();
    struct stat st;

    open_ok(path, 100, 1 << 20);
    mf_respstore_put("a", "alice", MF_STR("first"), 100, 1 << 20, 60000);
    mf_respstore_put("b", "bob", MF_STR("bobs"), 100, 1 << 20, 60000);
    mf_respstore_put("c", "", MF_STR("anyone's"), 100, 1 << 20, 60000);
    ck_assert_int_eq(mf_respstore_delete("b", "bob"), 1);
    /* replaced: now the newest */
    mf_respstore_put("a", "alice", MF_STR("second"), 100, 1 << 20, 60000);
    mf_respdb_close();
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    forget();
    open_ok(path, 100, 1 << 20);
    ck_assert(holds("a", "second", "alice"));
    ck_assert(holds("c", "anyone's", ""));
    ck_assert_ptr_null(mf_respstore_get("b", NULL));
    ck_assert_uint_eq(mf_respstore_count(), 2);
    mf_respdb_close();
    forget();
    /* one entry allowed: the newest ("a", replaced last) */
    open_ok(path, 1, 1 << 20);
    ck_assert(holds("a", "second", "alice"));
    ck_assert_uint_eq(mf_respstore_count(), 1);
    mf_respdb_close();
    forget();
    /* the other was deleted from the file when it was left out */
    open_ok(path, 100, 1 << 20);
    ck_assert_uint_eq(mf_respstore_count(), 1);
    mf_respdb_close();
    forget();
}
END_TEST

START_TEST(bytes_bound_and_expiry)
{
    const char *path = fresh();

    open_ok(path, 100, 1 << 20);
    mf_respstore_put("old", "", MF_STR("0123456789"), 100, 1 << 20, 60000);
    mf_respstore_put("new", "", MF_STR("abcdefghij"), 100, 1 << 20, 60000);
    mf_respstore_put("brief", "", MF_STR("x"), 100, 1 << 20, 50);
    mf_respdb_close();
    forget();
    usleep(100 * 1000); /* "brief" is past its expiry */
    open_ok(path, 100, 15);
    ck_assert(holds("new", "abcdefghij", ""));
    ck_assert_ptr_null(mf_respstore_get("old", NULL));
    ck_assert_ptr_null(mf_respstore_get("brief", NULL));
    mf_respdb_close();
    forget();
}
END_TEST

static void *
churn(void *arg)
{
    long t = (long)arg;
    char id[32], v[32];
    int i;

    for (i = 0; i < 20000; i++) {
        snprintf(id, sizeof(id), "t%ld-%d", t, i % 700);
        if (i % 3 == 2) {
            (void)mf_respstore_delete(id, NULL);
        } else {
            snprintf(v, sizeof(v), "v%d", i);
            (void)mf_respstore_put(id, t % 2 ? "alice" : "", mf_str_from(v),
                                   2000, 1 << 20, 60000);
        }
    }
    return NULL;
}

/* Whatever the queue went through (grouped, or past its bound and
 * rewritten whole), the file ends as the memory store. */
START_TEST(many_writers_file_matches_memory)
{
    const char *path = fresh();
    pthread_t th[4];
    char **ids, **vals, **owners;
    size_t i, n;
    long t;

    open_ok(path, 2000, 1 << 20);
    for (t = 0; t < 4; t++) {
        pthread_create(&th[t], NULL, churn, (void *)t);
    }
    for (t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
    }
    n = mf_respstore_ids(&ids);
    ck_assert_uint_gt(n, 0);
    vals = calloc(n, sizeof(*vals));
    owners = calloc(n, sizeof(*owners));
    for (i = 0; i < n; i++) {
        vals[i] = mf_respstore_get(ids[i], &owners[i]);
    }
    mf_respdb_close();
    forget();
    open_ok(path, 2000, 1 << 20);
    ck_assert_uint_eq(mf_respstore_count(), n);
    for (i = 0; i < n; i++) {
        ck_assert_msg(holds(ids[i], vals[i], owners[i]), "%s", ids[i]);
        free(ids[i]);
        free(vals[i]);
        free(owners[i]);
    }
    free(ids);
    free(vals);
    free(owners);
    mf_respdb_close();
    forget();
}
END_TEST

/* Rows in the file (read by a connection of the test's own). */
static int
rows(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int n = -1;

    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM responses", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    return n;
}

/* A round that cannot commit (another connection holds the write lock)
 * is not lost: the next rewrites the file from memory, so the answer
 * deleted meanwhile does not come back. */
START_TEST(failed_round_rewrites_from_memory)
{
    const char *path = fresh();
    sqlite3 *other = NULL;
    int i;

    open_ok(path, 100, 1 << 20);
    mf_respstore_put("a", "", MF_STR("deleted while locked"), 100, 1 << 20,
                     60000);
    mf_respstore_put("b", "", MF_STR("kept"), 100, 1 << 20, 60000);
    ck_assert_int_eq(sqlite3_open(path, &other), SQLITE_OK);
    for (i = 0; rows(other) != 2; i++) {
        ck_assert_int_lt(i, 2000);
        usleep(10 * 1000);
    }
    ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(mf_respstore_delete("a", NULL), 1);
    mf_respstore_put("c", "", MF_STR("made while locked"), 100, 1 << 20, 60000);
    /* the writer waits out its busy timeout, then gives up the round */
    for (i = 0; mf_respdb_failed_rounds() == 0; i++) {
        ck_assert_int_lt(i, 3000);
        usleep(10 * 1000);
    }
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    mf_respdb_close();
    forget();
    open_ok(path, 100, 1 << 20);
    ck_assert_ptr_null(mf_respstore_get("a", NULL));
    ck_assert(holds("b", "kept", ""));
    ck_assert(holds("c", "made while locked", ""));
    ck_assert_uint_eq(mf_respstore_count(), 2);
    mf_respdb_close();
    forget();
}
END_TEST

START_TEST(check_and_refusals)
{
    char err[512], bad[128];

    snprintf(bad, sizeof(bad), "%s/no/such/folder/r.db", dir);
    ck_assert_int_eq(mf_respdb_check(bad, err, sizeof(err)), MF_ERR);
    ck_assert_ptr_nonnull(strstr(err, bad));
    ck_assert_int_eq(mf_respdb_open(bad, 10, 1000, err, sizeof(err)), MF_ERR);
    ck_assert_ptr_nonnull(strstr(err, bad));
    ck_assert_ptr_null(mf_respdb_path());
    ck_assert_int_eq(mf_respdb_check(fresh(), err, sizeof(err)), MF_OK);
    ck_assert_int_ne(access(file, F_OK), 0); /* nothing created */
}
END_TEST

/* The test's folder and the files in it (the stores, their -wal and
 * -shm files). */
static void
remove_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];

    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(dir);
}

int
main(void)
{
    Suite *s = suite_create("respdb");
    TCase *tc = tcase_create("core");
    int rc;

    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    tcase_add_test(tc, reopen_reads_back);
    tcase_add_test(tc, bytes_bound_and_expiry);
    tcase_add_test(tc, many_writers_file_matches_memory);
    tcase_add_test(tc, failed_round_rewrites_from_memory);
    tcase_add_test(tc, check_and_refusals);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    rc = mf_check_run(s, 1);
    remove_dir();
    return rc;
}
