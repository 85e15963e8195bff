/*
 * The browser guard. A gateway on 127.0.0.1 is reachable by every web page
 * the machine's browser opens: a "simple" cross-site POST (text/plain)
 * needs no preflight, and a page whose name is rebound to 127.0.0.1 reads
 * the answers. Browsers say where a request comes from (Origin,
 * Sec-Fetch-Site) and which name they resolved (Host); curl and the SDKs
 * send neither Origin nor Sec-Fetch-Site, so they are not affected.
 */
#include "http/guard.h"

#include <stdio.h>
#include <strings.h>

int
mf_guard_loopback_listener(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcasecmp(host, "localhost") == 0;
}

/* Is name (no port) an IP literal: dotted digits, or [v6]? Such a name
 * cannot be rebound, so it is always served. */
static int
is_ip_literal(mf_str_t name)
{
    size_t i;

    if (name.len >= 2 && name.data[0] == '[') {
        return name.data[name.len - 1] == ']';
    }
    for (i = 0; i < name.len; i++) {
        char ch = name.data[i];

        if (!(ch >= '0' && ch <= '9') && ch != '.') {
            return 0;
        }
    }
    return name.len > 0;
}

/* localhost and *.localhost resolve to loopback on their own (RFC 6761). */
static int
is_loopback_name(mf_str_t name)
{
    static const char suffix[] = ".localhost";
    size_t sl = sizeof(suffix) - 1;

    if (mf_str_caseeq(name, MF_STR("localhost"))) {
        return 1;
    }
    return name.len > sl &&
           strncasecmp(name.data + name.len - sl, suffix, sl) == 0;
}

/* An allowed_hosts entry: a name, *.suffix, or * for any. */
static int
host_matches(const char *pattern, mf_str_t name)
{
    size_t pl = strlen(pattern);

    if (strcmp(pattern, "*") == 0) {
        return 1;
    }
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.') {
        return name.len > pl - 1 && strncasecmp(name.data + name.len - (pl - 1),
                                                pattern + 1, pl - 1) == 0;
    }
    return mf_str_caseeq(name, (mf_str_t){pattern, pl});
}

/* The name of a Host value without its port. */
static mf_str_t
host_name(mf_str_t v)
{
    size_t i;

    if (v.len > 0 && v.data[0] == '[') {
        for (i = 0; i < v.len && v.data[i] != ']'; i++) {
        }
        v.len = i < v.len ? i + 1 : v.len;
        return v;
    }
    for (i = 0; i < v.len && v.data[i] != ':'; i++) {
    }
    v.len = i;
    return v;
}

static int
host_allowed(const mf_config_t *c, int loopback, mf_str_t host)
{
    mf_str_t name = host_name(host);
    size_t i;

    if (is_ip_literal(name) || is_loopback_name(name)) {
        return 1;
    }
    for (i = 0; i < c->nallowed_hosts; i++) {
        if (host_matches(c->allowed_hosts[i], name)) {
            return 1;
        }
    }
    /* without allowed_hosts, only a loopback listener is strict */
    return !loopback && !c->has_allowed_hosts;
}

/* An allow_origins entry for subdomains, "https:" + "//" + "*.domain"
 * (checked at load): origin has its scheme and a host of one or more
 * labels (letters, digits, '-') followed by ".domain[:port]". */
static int
origin_subdomain(const char *pat, mf_str_t origin)
{
    const char *star = strstr(pat, "://*.");
    size_t pre, suf, i;

    if (star == NULL) {
        return 0;
    }
    pre = (size_t)(star - pat) + 3; /* "https://" */
    suf = strlen(star + 4);         /* ".example.com" */
    if (origin.len <= pre + suf || strncasecmp(origin.data, pat, pre) != 0 ||
        strncasecmp(origin.data + origin.len - suf, star + 4, suf) != 0) {
        return 0;
    }
    for (i = pre; i < origin.len - suf; i++) {
        char ch = origin.data[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-' ||
              (ch == '.' && i > pre && origin.data[i - 1] != '.'))) {
            return 0;
        }
    }
    return origin.data[origin.len - suf - 1] != '.';
}

static int
origin_allowed(const mf_config_t *c, mf_str_t origin)
{
    size_t i;

    for (i = 0; i < c->ncors_origins; i++) {
        if (strcmp(c->cors_origins[i], "*") == 0 ||
            mf_str_caseeq(origin, mf_str_from(c->cors_origins[i])) ||
            origin_subdomain(c->cors_origins[i], origin)) {
            return 1;
        }
    }
    return 0;
}

/* A page the gateway served posting back to it (the status listener's
 * sign-in form): the Origin is the request's own scheme and Host, and
 * that Host a name the gateway knows as its own (an IP literal, a
 * loopback name, one of allowed_hosts), never just any name: a page of a
 * name rebound to the gateway's address would pass otherwise. */
static int
same_origin(const mf_config_t *c, const mf_http_head_t *h, mf_str_t origin)
{
    mf_str_t host;
    size_t skip;

    if (mf_http_find_header(h, "host", &host) != MF_OK || host.len == 0 ||
        !host_allowed(c, 1, host)) {
        return 0;
    }
    skip = origin.len > 7 && strncasecmp(origin.data, "http://", 7) == 0    ? 7
           : origin.len > 8 && strncasecmp(origin.data, "https://", 8) == 0 ? 8
                                                                            : 0;
    return skip > 0 && origin.len - skip == host.len &&
           strncasecmp(origin.data + skip, host.data, host.len) == 0;
}

int
mf_guard_check(const mf_config_t *c, int loopback, const mf_http_head_t *h,
               const char **code, char *msg, size_t cap)
{
    mf_str_t v;

    if (mf_http_find_header(h, "host", &v) == MF_OK &&
        !host_allowed(c, loopback, v)) {
        *code = "host_not_allowed";
        snprintf(msg, cap,
                 "Host '%.*s' is not served here; add it to allowed_hosts "
                 "to serve it",
                 (int)(v.len > 200 ? 200 : v.len), v.data);
        return MF_ERR;
    }
    if (mf_http_find_header(h, "origin", &v) == MF_OK) {
        if (origin_allowed(c, v) || same_origin(c, h, v)) {
            return MF_OK;
        }
        *code = "origin_not_allowed";
        snprintf(msg, cap,
                 "requests from web pages at origin '%.*s' are refused; add "
                 "the origin to cors.allow_origins to serve it",
                 (int)(v.len > 200 ? 200 : v.len), v.data);
        return MF_ERR;
    }
    if (mf_http_find_header(h, "sec-fetch-site", &v) == MF_OK &&
        !mf_str_caseeq(v, MF_STR("same-origin")) &&
        !mf_str_caseeq(v, MF_STR("none"))) {
        *code = "cross_site_request";
        snprintf(msg, cap,
                 "cross-site requests from web pages are refused "
                 "(Sec-Fetch-Site: %.*s)",
                 (int)(v.len > 40 ? 40 : v.len), v.data);
        return MF_ERR;
    }
    return MF_OK;
}

int
mf_guard_cors(const mf_config_t *c, const mf_http_head_t *h, mf_pool_t *pool,
              mf_hlist_t *out)
{
    mf_str_t origin, method, hdrs;

    if (mf_http_find_header(h, "origin", &origin) != MF_OK ||
        !origin_allowed(c, origin)) {
        return 0;
    }
    mf_hlist_set(pool, out, MF_STR("access-control-allow-origin"), origin);
    mf_hlist_set(pool, out, MF_STR("vary"), MF_STR("Origin"));
    if (!mf_str_caseeq(h->method, MF_STR("OPTIONS")) ||
        mf_http_find_header(h, "access-control-request-method", &method) !=
            MF_OK) {
        mf_hlist_set(pool, out, MF_STR("access-control-expose-headers"),
                     MF_STR("x-request-id, x-manifold-provider, "
                            "x-manifold-model, x-manifold-attempts, "
                            "retry-after"));
        return 0;
    }
    /* the methods the gateway serves (DELETE: /v1/responses/{id}) */
    mf_hlist_set(pool, out, MF_STR("access-control-allow-methods"),
                 MF_STR("GET, POST, DELETE, OPTIONS"));
    if (c->cors_headers != NULL) {
        mf_hlist_set(pool, out, MF_STR("access-control-allow-headers"),
                     mf_str_from(c->cors_headers));
    } else if (mf_http_find_header(h, "access-control-request-headers",
                                   &hdrs) == MF_OK &&
               hdrs.len > 0) {
        mf_hlist_set(pool, out, MF_STR("access-control-allow-headers"), hdrs);
    }
    {
        char age[16];
        int n = snprintf(age, sizeof(age), "%u", c->cors_max_age);

        mf_hlist_set(pool, out, MF_STR("access-control-max-age"),
                     mf_pool_str(pool, (mf_str_t){age, (size_t)n}));
    }
    return 1;
}
