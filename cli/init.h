/*
 * `manifold init`: writes a config from the provider catalogue.
 */
#ifndef MF_INIT_H
#define MF_INIT_H

/* argv[0] is "init". Returns an exit status, or -1 when *out_path was
 * written and is to be validated (manifold -t) by the caller. */
int mf_init_main(int argc, char **argv, const char **out_path);

struct mf_config_s;
/* After the written config validated: prints what to export (the key
 * variables of the providers still disabled) and how to start. */
void mf_init_next_steps(const struct mf_config_s *c, const char *argv0);

#endif
