/*
 * The one main() of every Check suite: runs the suite, exit status from
 * the failures.
 */
#ifndef MF_CHECK_MAIN_H
#define MF_CHECK_MAIN_H

#include <check.h>
#include <stdlib.h>

static inline int
mf_check_run(Suite *s, int nofork)
{
    SRunner *sr = srunner_create(s);
    int failed;

    if (nofork) {
        srunner_set_fork_status(sr, CK_NOFORK);
    }
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
