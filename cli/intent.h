/*
 * manifoldctl intent: the intent router's verdicts on a text, and an
 * evaluation over a labelled file.
 */
#ifndef MF_CLI_INTENT_H
#define MF_CLI_INTENT_H

/* argv[0] is "intent"; config is -c's file or NULL. The exit status. */
int mf_ctl_intent(int argc, char **argv, const char *config);

#endif
