/*
 * Admin socket server: accepts on a 0600 Unix socket (main thread), reads
 * one bounded HTTP/1.1 request per connection (10 s, 64 KiB body), routes
 * it to an admin_cmd_*.c command and writes its JSON answer, then closes.
 */
#include "control/admin.h"
#include "http/http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define ADMIN_MAX_HEAD (16 * 1024)
#define ADMIN_MAX_BODY (64 * 1024)
#define ADMIN_TIMEOUT_S 10
/* a client of the helper that answers during a reload: the end of the
 * reload waits for the connection in hand, so it gets less */
#define ADMIN_BUSY_TIMEOUT_S 2

/* The helper that answers while the main thread is busy (a reload). */
typedef struct {
    pthread_t thread;
    int running;
    int wake[2]; /* a byte on wake[1] ends the helper */
    char trigger[32];
    double since;
} admin_busy_t;

struct mf_admin_s {
    struct evconnlistener *listener;
    char *path;
    mf_admin_ctx_t *ctx;
    admin_busy_t busy;
};

json_t *
mf_admin_error(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:{s:s}}", "error", "message", msg);
}

int
mf_admin_parse(const char *buf, size_t len, mf_admin_req_t *q, const char **err)
{
    mf_http_head_t *h;
    size_t hlen =
        mf_http_head_end(buf, len < ADMIN_MAX_HEAD ? len : ADMIN_MAX_HEAD);
    int rc = -1;

    if (hlen == 0) {
        if (len >= ADMIN_MAX_HEAD) {
            *err = "request head larger than 16 KiB";
            return -1;
        }
        return 0;
    }
    h = mf_xmalloc(sizeof(*h));
    if (mf_http_parse_request_head(buf, hlen, h, err) != MF_OK) {
        goto out;
    }
    if (h->chunked) {
        *err = "chunked admin requests are not supported; send "
               "Content-Length";
        goto out;
    }
    if (h->content_length > ADMIN_MAX_BODY) {
        *err = "admin request body larger than 64 KiB";
        goto out;
    }
    if (h->content_length > 0 && len - hlen < (size_t)h->content_length) {
        rc = 0;
        goto out;
    }
    q->method = h->method;
    q->path = h->path;
    q->body.data = buf + hlen;
    q->body.len = h->content_length > 0 ? (size_t)h->content_length : 0;
    rc = 1;
out:
    free(h);
    return rc;
}

/* Routes */

typedef struct {
    const char *method;
    const char *prefix; /* "/stages/" captures up to the next '/' */
    const char *suffix; /* after the captured segment, or NULL */
    mf_admin_cmd_fn fn;
    int segments; /* path segments the capture holds */
} route_t;

static const route_t routes[] = {
    {"GET", "/stages", NULL, mf_admin_cmd_stages, 1},
    {"POST", "/reload", NULL, mf_admin_cmd_reload, 1},
    {"POST", "/stages/", "/reload", mf_admin_cmd_reload, 1},
    {"POST", "/stages/", "/enable", mf_admin_cmd_enable, 1},
    {"POST", "/stages/", "/disable", mf_admin_cmd_disable, 1},
    {"GET", "/stats", NULL, mf_admin_cmd_stats, 1},
    {"GET", "/generations", NULL, mf_admin_cmd_generations, 1},
    {"GET", "/keys", NULL, mf_admin_cmd_keys, 1},
    {"POST", "/keys/", "/enable", mf_admin_cmd_key_enable, 2},
    {"POST", "/keys/", "/disable", mf_admin_cmd_key_disable, 2},
    {"GET", "/commands", NULL, mf_admin_cmd_commands, 1},
    {"POST", "/commands/", "", mf_admin_cmd_command_run, 1},
};

/* Whether path matches r; fills the captured segment. */
static int
route_match(const route_t *r, mf_str_t path, mf_str_t *arg)
{
    size_t pl = strlen(r->prefix), sl, i;
    int slashes;

    *arg = MF_STR_NULL;
    if (path.len > 1 && path.data[path.len - 1] == '/') {
        path.len--; /* "/stages/" is "/stages" */
    }
    if (r->suffix == NULL) {
        return path.len == pl && memcmp(path.data, r->prefix, pl) == 0;
    }
    sl = strlen(r->suffix);
    if (path.len <= pl + sl || memcmp(path.data, r->prefix, pl) != 0 ||
        memcmp(path.data + path.len - sl, r->suffix, sl) != 0) {
        return 0;
    }
    arg->data = path.data + pl;
    arg->len = path.len - pl - sl;
    for (i = 0, slashes = 0; i < arg->len; i++) {
        if (arg->data[i] == '/') {
            slashes++;
        }
    }
    return slashes + 1 == r->segments;
}

int
mf_admin_dispatch(mf_admin_ctx_t *ctx, const mf_admin_req_t *q, json_t **out)
{
    size_t i;
    int path_known = 0;

    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        mf_str_t arg;

        if (!route_match(&routes[i], q->path, &arg)) {
            continue;
        }
        path_known = 1;
        if (mf_str_eq_cstr(q->method, routes[i].method)) {
            return routes[i].fn(ctx, q, arg, out);
        }
    }
    if (path_known) {
        *out = mf_admin_error("method %.*s not allowed on %.*s",
                              (int)q->method.len, q->method.data,
                              (int)q->path.len, q->path.data);
        return 405;
    }
    *out = mf_admin_error("no admin command at %.*s; see GET /stages, "
                          "/stats, /generations, /keys, /commands, POST "
                          "/reload, /stages/NAME/reload|enable|disable, "
                          "/keys/PROVIDER/INDEX/enable|disable, "
                          "/commands/NAME",
                          (int)q->path.len, q->path.data);
    return 404;
}

/* Connections */

static void
conn_close_cb(struct bufferevent *bev, void *arg)
{
    MF_UNUSED(arg);
    bufferevent_free(bev);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    MF_UNUSED(what);
    MF_UNUSED(arg);
    bufferevent_free(bev);
}

static void
respond(struct bufferevent *bev, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    struct evbuffer *o = bufferevent_get_output(bev);
    size_t n = text ? strlen(text) : 0;

    evbuffer_add_printf(o,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                        status, mf_http_reason(status), n + 1);
    evbuffer_add(o, text ? text : "", n);
    evbuffer_add(o, "\n", 1);
    free(text);
    json_decref(j);
    bufferevent_disable(bev, EV_READ);
    bufferevent_setcb(bev, NULL, conn_close_cb, conn_event_cb, NULL);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
    mf_admin_t *a = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    const char *err = NULL, *data;
    mf_admin_req_t q;
    json_t *out = NULL;
    int rc, status;

    if (len > ADMIN_MAX_HEAD + ADMIN_MAX_BODY) {
        respond(bev, 413, mf_admin_error("admin request too large"));
        return;
    }
    data = (const char *)evbuffer_pullup(in, -1);
    rc = mf_admin_parse(data, len, &q, &err);
    if (rc == 0) {
        return;
    }
    if (rc < 0) {
        respond(bev, 400, mf_admin_error("bad admin request: %s", err));
        return;
    }
    status = mf_admin_dispatch(a->ctx, &q, &out);
    respond(bev, status, out ? out : json_object());
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int socklen, void *arg)
{
    struct bufferevent *bev = bufferevent_socket_new(evconnlistener_get_base(l),
                                                     fd, BEV_OPT_CLOSE_ON_FREE);
    struct timeval tv = {ADMIN_TIMEOUT_S, 0};

    MF_UNUSED(sa);
    MF_UNUSED(socklen);
    bufferevent_setcb(bev, conn_read_cb, NULL, conn_event_cb, arg);
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* While the main thread is busy */

/* The answer of a helper: what reads only state shared across threads
 * (the current generation, counters) is served; a reload is refused with
 * 409; the rest waits for the main thread (503). */
static int
busy_dispatch(mf_admin_t *a, const mf_admin_req_t *q, json_t **out)
{
    const char *trigger = a->busy.trigger;
    double for_s = mf_now_ms() / 1000 - a->busy.since;
    mf_str_t p = q->path;
    size_t sl = strlen("/reload");
    int get = mf_str_eq_cstr(q->method, "GET");

    if (p.len > 1 && p.data[p.len - 1] == '/') {
        p.len--;
    }
    if (mf_str_eq_cstr(q->method, "POST") && p.len >= sl &&
        memcmp(p.data + p.len - sl, "/reload", sl) == 0) {
        *out = mf_admin_error("reload in progress (%s, for %.1f s): this "
                              "one is refused; retry once it ends (GET "
                              "/stats says when)",
                              trigger, for_s);
        return 409;
    }
    if (get && (mf_str_eq_cstr(p, "/stats") || mf_str_eq_cstr(p, "/stages"))) {
        int status = mf_admin_dispatch(a->ctx, q, out);

        if (status == 200 && mf_str_eq_cstr(p, "/stats")) {
            json_object_set_new(
                *out, "reload_in_progress",
                json_pack("{s:s,s:f}", "trigger", trigger, "for_s", for_s));
        }
        return status;
    }
    *out = mf_admin_error("reload in progress (%s, for %.1f s): %.*s %.*s is "
                          "served once it ends (at the latest after the "
                          "stages' init_timeout); retry then",
                          trigger, for_s, (int)q->method.len, q->method.data,
                          (int)(p.len > 200 ? 200 : p.len), p.data);
    return 503;
}

/* Reads one request from c (blocking, each read and write within
 * ADMIN_BUSY_TIMEOUT_S), answers it, and leaves c to the caller to close. */
static void
busy_serve(mf_admin_t *a, int c)
{
    struct timeval tv = {ADMIN_BUSY_TIMEOUT_S, 0};
    size_t cap = ADMIN_MAX_HEAD + ADMIN_MAX_BODY, len = 0, off;
    char *buf = mf_xmalloc(cap + 1), *text, head[256];
    const char *err = NULL;
    mf_admin_req_t q;
    json_t *out = NULL;
    int rc = 0, status, n;

    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    while (rc == 0 && len < cap) {
        ssize_t got = read(c, buf + len, cap - len);

        if (got <= 0) {
            free(buf);
            return; /* gone, or too slow */
        }
        len += (size_t)got;
        rc = mf_admin_parse(buf, len, &q, &err);
    }
    if (rc == 1) {
        status = busy_dispatch(a, &q, &out);
    } else {
        status = rc < 0 ? 400 : 413;
        out = mf_admin_error("bad admin request: %s",
                             err ? err : "admin request too large");
    }
    text = json_dumps(out ? out : json_null(), JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(out);
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 status, mf_http_reason(status), (text ? strlen(text) : 0) + 1);
    if (write(c, head, (size_t)n) == n && text != NULL) {
        for (off = 0; off < strlen(text);) {
            ssize_t w = write(c, text + off, strlen(text) - off);

            if (w <= 0) {
                break;
            }
            off += (size_t)w;
        }
        if (off == strlen(text) && write(c, "\n", 1) != 1) {
            mf_log_debug("admin: an answer was cut");
        }
    }
    free(text);
    free(buf);
}

static void *
busy_main(void *arg)
{
    mf_admin_t *a = arg;
    int fd = (int)evconnlistener_get_fd(a->listener);

    for (;;) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {a->busy.wake[0], POLLIN, 0}};
        int c;

        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (p[1].revents != 0) {
            break;
        }
        if ((p[0].revents & POLLIN) == 0) {
            continue;
        }
        c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) {
            busy_serve(a, c);
            close(c);
        }
    }
    return NULL;
}

void
mf_admin_busy(void *admin, int on, const char *trigger)
{
    mf_admin_t *a = admin;
    sigset_t all, old;

    if (a == NULL) {
        return;
    }
    if (!on) {
        if (a->busy.running) {
            char b = 1;

            if (write(a->busy.wake[1], &b, 1) != 1) {
                mf_log_error("admin: cannot wake the helper: %s",
                             strerror(errno));
            }
            pthread_join(a->busy.thread, NULL);
            close(a->busy.wake[0]);
            close(a->busy.wake[1]);
            a->busy.running = 0;
        }
        return;
    }
    if (a->busy.running || pipe2(a->busy.wake, O_CLOEXEC) != 0) {
        return;
    }
    snprintf(a->busy.trigger, sizeof(a->busy.trigger), "%s", trigger);
    a->busy.since = mf_now_ms() / 1000;
    /* signals stay with the main thread */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    a->busy.running = pthread_create(&a->busy.thread, NULL, busy_main, a) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!a->busy.running) {
        close(a->busy.wake[0]);
        close(a->busy.wake[1]);
    }
}

/* Removes a stale socket file; refuses when a gateway answers on it. */
static int
clear_stale(const char *path, const struct sockaddr_un *sun)
{
    struct stat st;
    int fd, rc;

    if (lstat(path, &st) != 0) {
        return MF_OK;
    }
    if (st.st_uid != geteuid()) {
        mf_log_error("admin: %s belongs to uid %u, not to this user (uid "
                     "%u): another user may have put it there to catch admin "
                     "commands; remove it, or set admin.socket to a name "
                     "without '/' (it then lives in the private runtime "
                     "directory)",
                     path, (unsigned)st.st_uid, (unsigned)geteuid());
        return MF_ERR;
    }
    if (!S_ISSOCK(st.st_mode)) {
        mf_log_error("admin: %s exists and is not a socket; remove it or set "
                     "another admin.socket",
                     path);
        return MF_ERR;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
    close(fd);
    if (rc == 0) {
        mf_log_error("admin: another process serves %s; stop it or set "
                     "another admin.socket",
                     path);
        return MF_ERR;
    }
    unlink(path);
    return MF_OK;
}

mf_admin_t *
mf_admin_start(struct event_base *base, const char *path, mf_admin_ctx_t *ctx)
{
    struct sockaddr_un sun;
    mf_admin_t *a;
    mode_t old;
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        mf_log_error("admin: socket path %s is longer than %zu bytes", path,
                     sizeof(sun.sun_path) - 1);
        return NULL;
    }
    memcpy(sun.sun_path, path, strlen(path));
    if (clear_stale(path, &sun) != MF_OK) {
        return NULL;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    old = umask(0077); /* created 0600: no window with wider rights */
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        umask(old);
        mf_log_error("admin: cannot bind %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    umask(old);
    chmod(path, 0600);
    a = mf_xcalloc(1, sizeof(*a));
    a->path = mf_xstrdup(path);
    a->ctx = ctx;
    a->listener =
        evconnlistener_new(base, accept_cb, a, LEV_OPT_CLOSE_ON_FREE, 16, fd);
    if (a->listener == NULL) {
        mf_log_error("admin: cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        free(a->path);
        free(a);
        return NULL;
    }
    mf_log_info("admin socket %s (0600)", path);
    return a;
}

void
mf_admin_stop(mf_admin_t *a)
{
    if (a == NULL) {
        return;
    }
    mf_admin_busy(a, 0, NULL);
    evconnlistener_free(a->listener);
    unlink(a->path);
    free(a->path);
    free(a);
}
