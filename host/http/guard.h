/*
 * The browser guard: refuses requests a web page makes on a visitor's
 * behalf (an Origin not allowed by cors.allow_origins, Sec-Fetch-Site
 * cross-site) and Host names a loopback listener does not serve (DNS
 * rebinding), and writes the CORS headers for allowed origins.
 */
#ifndef MF_GUARD_H
#define MF_GUARD_H

#include "config/config.h"
#include "http/http.h"

/* Is the listen address a loopback one (127.0.0.0/8, ::1, localhost)? */
int mf_guard_loopback_listener(const char *listen_host);

/* Checks where a request head comes from. MF_OK to serve it; MF_ERR with
 * *code (a short word for the error's code) and msg (a sentence) for a
 * 403. `loopback` tells whether the listener is a loopback one. */
int mf_guard_check(const mf_config_t *c, int loopback, const mf_http_head_t *h,
                   const char **code, char *msg, size_t cap);

/* For a request from an allowed origin, adds the CORS headers to `out`
 * (allocated in pool). Returns 1 when the request is a CORS preflight to
 * answer 204 with them, else 0. */
int mf_guard_cors(const mf_config_t *c, const mf_http_head_t *h,
                  mf_pool_t *pool, mf_hlist_t *out);

#endif
