/*
 * The host API given to plugins (mf_host_api_t).
 */
#ifndef MF_API_H
#define MF_API_H

#include <manifold/plugin.h>

/* The host API table given to plugins. */
extern const mf_host_api_t mf_api;

#endif
