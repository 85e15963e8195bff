/* Check suite for host/control/watch.c: a burst of writes gives one callback
 * after the debounce time; saves by rename are seen; unwatched files are
 * not; a file still open for writing holds the callback back until it is
 * closed or renamed over, for at most the write wait.
 *
 * Waits are for conditions (the callback ran), bounded far above any
 * expected time; "nothing happened" is checked over several debounce
 * times, which is where the behaviour before the write rule would have
 * called back.
 */
#include "check_main.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control/watch.h"

#define DEBOUNCE_MS 50
#define NEVER_MS 600000 /* a write wait that no test reaches */
#define LONG_MS 20000   /* bound of a wait for a condition */

typedef struct {
    struct event_base *base;
    int fired;
    int want;         /* stop the loop when fired reaches it */
    int closed;       /* the test closed its writer */
    int closed_first; /* closed was set when the first callback ran */
} seen_t;

static void
on_fire(void *arg)
{
    seen_t *s = arg;

    if (s->fired++ == 0) {
        s->closed_first = s->closed;
    }
    if (s->want > 0 && s->fired >= s->want) {
        event_base_loopbreak(s->base);
    }
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void
write_all(int fd, const char *text)
{
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

/* Runs the loop for ms, or until the callback ran `want` times in all. */
static void
run(seen_t *s, int want, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    s->want = want;
    if (want > 0 && s->fired >= want) {
        return;
    }
    event_base_loopexit(s->base, &tv);
    event_base_dispatch(s->base);
    s->want = 0;
}

/* Runs the loop until the callback has run n times in all. */
static void
wait_fired(seen_t *s, int n)
{
    run(s, n, LONG_MS);
    ck_assert_int_eq(s->fired, n);
}

/* Runs the loop for several debounce times: nothing may be called back. */
static void
quiet(seen_t *s, int n)
{
    run(s, 0, 6 * DEBOUNCE_MS);
    ck_assert_int_eq(s->fired, n);
}

typedef struct {
    char dir[64];
    char a[300];
} tmp_t;

static void
tmp_make(tmp_t *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/mf-watch-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    snprintf(t->a, sizeof(t->a), "%s/a.lua", t->dir);
    write_file(t->a, "return 1");
}

static void
tmp_remove(tmp_t *t)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(debounce_and_rename)
{
    char dir[] = "/tmp/mf-watch-XXXXXX", a[300], b[300], tmp[300], other[300];
    const char *files[2];
    seen_t s = {event_base_new(), 0, 0, 0, 0};
    mf_watch_t *w;
    int i;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(a, sizeof(a), "%s/a.lua", dir);
    snprintf(b, sizeof(b), "%s/b.so", dir);
    snprintf(tmp, sizeof(tmp), "%s/.a.lua.swp", dir);
    snprintf(other, sizeof(other), "%s/unrelated.txt", dir);
    write_file(a, "1");
    write_file(b, "1");
    files[0] = a;
    files[1] = b;
    w = mf_watch_new(s.base, DEBOUNCE_MS, NEVER_MS, on_fire, &s);
    ck_assert_ptr_nonnull(w);
    mf_watch_set(w, files, 2, NULL, 0);
    ck_assert_uint_eq(mf_watch_count(w), 2);

    for (i = 0; i < 20; i++) { /* a burst */
        write_file(a, "2");
        write_file(b, "2");
    }
    wait_fired(&s, 1);
    quiet(&s, 1);

    write_file(other, "x"); /* not watched */
    quiet(&s, 1);

    write_file(tmp, "3"); /* an editor's save: write aside, rename over */
    ck_assert_int_eq(rename(tmp, a), 0);
    wait_fired(&s, 2);
    ck_assert_uint_eq(mf_watch_writers(w), 0);

    mf_watch_free(w);
    event_base_free(s.base);
    unlink(a);
    unlink(b);
    unlink(other);
    rmdir(dir);
}
END_TEST

/* A writer opens the file, writes half, pauses longer than the debounce
 * time, writes the rest and closes: one callback, after the close. */
START_TEST(half_write_waits_for_close)
{
    tmp_t t;
    const char *files[1];
    seen_t s = {event_base_new(), 0, 0, 0, 0};
    mf_watch_t *w;
    int fd;

    tmp_make(&t);
    files[0] = t.a;
    w = mf_watch_new(s.base, DEBOUNCE_MS, NEVER_MS, on_fire, &s);
    mf_watch_set(w, files, 1, NULL, 0);

    fd = open(t.a, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    write_all(fd, "return {na");
    quiet(&s, 0);
    ck_assert_uint_eq(mf_watch_writers(w), 1);
    write_all(fd, "me = 1}");
    s.closed = 1;
    close(fd);
    wait_fired(&s, 1);
    ck_assert_int_eq(s.closed_first, 1);
    ck_assert_uint_eq(mf_watch_writers(w), 0);
    quiet(&s, 1); /* exactly one */

    mf_watch_free(w);
    event_base_free(s.base);
    tmp_remove(&t);
}
END_TEST

/* A provider plugin copied into a plugin directory as a new file: created,
 * half written, a pause, the rest; one callback after the close. */
START_TEST(new_plugin_waits_for_close)
{
    tmp_t t;
    char so[300];
    const char *dirs[1];
    seen_t s = {event_base_new(), 0, 0, 0, 0};
    mf_watch_t *w;
    int fd;

    tmp_make(&t);
    dirs[0] = t.dir;
    snprintf(so, sizeof(so), "%s/provider-x.so", t.dir);
    w = mf_watch_new(s.base, DEBOUNCE_MS, NEVER_MS, on_fire, &s);
    mf_watch_set(w, NULL, 0, dirs, 1);

    fd = open(so, O_WRONLY | O_CREAT | O_EXCL, 0644);
    ck_assert_int_ge(fd, 0);
    quiet(&s, 0); /* created, nothing written yet */
    write_all(fd, "\177ELF half");
    quiet(&s, 0);
    write_all(fd, " and the rest");
    s.closed = 1;
    close(fd);
    wait_fired(&s, 1);
    ck_assert_int_eq(s.closed_first, 1);
    quiet(&s, 1);

    /* a hard link or a symlink made in place is complete: no wait */
    snprintf(so, sizeof(so), "%s/provider-y.so", t.dir);
    ck_assert_int_eq(symlink(t.a, so), 0);
    wait_fired(&s, 2);
    ck_assert_uint_eq(mf_watch_writers(w), 0);

    mf_watch_free(w);
    event_base_free(s.base);
    tmp_remove(&t);
}
END_TEST

/* While a writer holds the file open, a complete file is renamed over it
 * (how careful deployers swap files): the callback does not wait for the
 * writer of the file that is no longer there. */
START_TEST(rename_into_place_ends_the_wait)
{
    tmp_t t;
    char tmp[300];
    const char *files[1];
    seen_t s = {event_base_new(), 0, 0, 0, 0};
    mf_watch_t *w;
    int fd;

    tmp_make(&t);
    files[0] = t.a;
    snprintf(tmp, sizeof(tmp), "%s/a.lua.new", t.dir);
    w = mf_watch_new(s.base, DEBOUNCE_MS, NEVER_MS, on_fire, &s);
    mf_watch_set(w, files, 1, NULL, 0);

    fd = open(t.a, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    write_all(fd, "return {");
    quiet(&s, 0);
    write_file(tmp, "return {name = 2}");
    ck_assert_int_eq(rename(tmp, t.a), 0);
    wait_fired(&s, 1);
    ck_assert_int_eq(s.closed_first, 0);
    close(fd);

    mf_watch_free(w);
    event_base_free(s.base);
    tmp_remove(&t);
}
END_TEST

/* A writer that keeps the file open holds the callback back for the
 * write wait only; its close later is a change like any other. */
START_TEST(write_wait_is_bounded)
{
    tmp_t t;
    const char *files[1];
    seen_t s = {event_base_new(), 0, 0, 0, 0};
    mf_watch_t *w;
    int fd;

    tmp_make(&t);
    files[0] = t.a;
    w = mf_watch_new(s.base, DEBOUNCE_MS, 400, on_fire, &s);
    mf_watch_set(w, files, 1, NULL, 0);

    fd = open(t.a, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    write_all(fd, "return {");
    wait_fired(&s, 1); /* with the file still open */
    ck_assert_int_eq(s.closed_first, 0);
    ck_assert_uint_eq(mf_watch_writers(w), 0);
    write_all(fd, "name = 3}");
    s.closed = 1;
    close(fd);
    wait_fired(&s, 2);

    mf_watch_free(w);
    event_base_free(s.base);
    tmp_remove(&t);
}
END_TEST

/* The watched set is replaced (as after a reload of another file) while a
 * writer holds a file that stays watched: it is still waited for. */
START_TEST(writer_survives_a_new_set)
{
    tmp_t t;
    char b[300];
    const char *files[2];
    seen_t s = {event_base_new(), 0, 0, 0, 0};
    mf_watch_t *w;
    int fd, i;

    tmp_make(&t);
    snprintf(b, sizeof(b), "%s/b.lua", t.dir);
    write_file(b, "return 1");
    files[0] = t.a;
    files[1] = b;
    w = mf_watch_new(s.base, DEBOUNCE_MS, NEVER_MS, on_fire, &s);
    mf_watch_set(w, files, 1, NULL, 0);

    fd = open(t.a, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    write_all(fd, "return {");
    quiet(&s, 0);
    mf_watch_set(w, files, 2, NULL, 0);
    ck_assert_uint_eq(mf_watch_count(w), 2);
    ck_assert_uint_eq(mf_watch_writers(w), 1);
    quiet(&s, 0);
    write_all(fd, "}");
    s.closed = 1;
    close(fd);
    wait_fired(&s, 1);
    ck_assert_int_eq(s.closed_first, 1);

    /* a file no longer watched is not waited for */
    fd = open(b, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    write_all(fd, "return {");
    for (i = 0; mf_watch_writers(w) == 0 && i < LONG_MS; i++) {
        event_base_loop(s.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        usleep(1000);
    }
    ck_assert_uint_eq(mf_watch_writers(w), 1);
    mf_watch_set(w, files, 1, NULL, 0);
    ck_assert_uint_eq(mf_watch_writers(w), 0);
    close(fd);

    mf_watch_free(w);
    event_base_free(s.base);
    tmp_remove(&t);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("watch");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, debounce_and_rename);
    tcase_add_test(tc, half_write_waits_for_close);
    tcase_add_test(tc, new_plugin_waits_for_close);
    tcase_add_test(tc, rename_into_place_ends_the_wait);
    tcase_add_test(tc, write_wait_is_bounded);
    tcase_add_test(tc, writer_survives_a_new_set);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
