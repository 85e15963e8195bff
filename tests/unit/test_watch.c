/* Check suite for host/control/watch.c: a burst of writes gives one callback
 * after the debounce time; saves by rename are seen; unwatched files are not.
 */
#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "control/watch.h"

typedef struct {
    struct event_base *base;
    int fired;
} seen_t;

static void
on_fire(void *arg)
{
    seen_t *s = arg;

    s->fired++;
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
run_for(struct event_base *base, int ms)
{
    struct timeval tv = {0, ms * 1000};

    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

START_TEST(debounce_and_rename)
{
    char dir[] = "/tmp/mf-watch-XXXXXX", a[300], b[300], tmp[300], other[300];
    const char *files[2];
    seen_t s = {event_base_new(), 0};
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
    w = mf_watch_new(s.base, 50, on_fire, &s);
    ck_assert_ptr_nonnull(w);
    mf_watch_set(w, files, 2, NULL, 0);
    ck_assert_uint_eq(mf_watch_count(w), 2);

    for (i = 0; i < 20; i++) { /* a burst */
        write_file(a, "2");
        write_file(b, "2");
    }
    run_for(s.base, 200);
    ck_assert_int_eq(s.fired, 1);

    write_file(other, "x"); /* not watched */
    run_for(s.base, 150);
    ck_assert_int_eq(s.fired, 1);

    write_file(tmp, "3"); /* an editor's save: write aside, rename over */
    ck_assert_int_eq(rename(tmp, a), 0);
    run_for(s.base, 150);
    ck_assert_int_eq(s.fired, 2);

    mf_watch_free(w);
    event_base_free(s.base);
    unlink(a);
    unlink(b);
    unlink(other);
    rmdir(dir);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("watch");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, debounce_and_rename);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
