/*
 * `manifold init`: writes a config from the provider catalogue.
 */
#ifndef MF_INIT_H
#define MF_INIT_H

/* argv[0] is "init". Returns an exit status, or -1 when *out_path was
 * written and is to be validated (manifold -t) by the caller. */
int mf_init_main(int argc, char **argv, const char **out_path);

#endif
