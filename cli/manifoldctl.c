/*
 * manifoldctl: the admin socket's command-line client. Sends one HTTP
 * request over the Unix socket and prints the answer as a table, or as
 * the raw JSON with --json. Exits 0 when the gateway answered 2xx.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli/intent.h"
#include "config/config.h"
#include "core/rundir.h"

#define DEFAULT_SOCKET "admin.sock" /* in the runtime directory */

static void
usage(FILE *f)
{
    fprintf(f, "usage: manifoldctl [-s SOCKET | -c CONFIG] [--json] COMMAND\n"
               "commands:\n"
               "  stages               stages of the current generation\n"
               "  reload [STAGE]       reload the config (all changed stages), "
               "or load STAGE afresh\n"
               "  enable STAGE         turn a stage on\n"
               "  disable STAGE        turn a stage off\n"
               "  stats                requests, in flight, generations, "
               "reloads, time per stage\n"
               "  generations          generations alive and their "
               "references\n"
               "  commands             commands the stages registered\n"
               "  intent test TEXT     how the intent router classifies TEXT "
               "(each classifier,\n"
               "                       its scores; needs `explain: true`; "
               "--model M, --url URL)\n"
               "  intent eval FILE     accuracy over labelled examples "
               "(INTENT<TAB>TEXT or\n"
               "                       {\"text\",\"intent\"} lines), "
               "suggested threshold and margin\n"
               "  WORD [WORD] ARGS     a command a stage registered (GET "
               "/commands lists them:\n"
               "                       consumers add NAME --group G, keys "
               "revoke ID, usage, ...);\n"
               "                       ARGS are words and --name value "
               "pairs\n"
               "options:\n"
               "  -s, --socket PATH    admin socket ($MANIFOLD_ADMIN_SOCKET, "
               "else admin.socket of -c, else " DEFAULT_SOCKET ";\n"
               "                       a name without '/' is in the runtime "
               "directory)\n"
               "  -c, --config FILE    read admin.socket from this config\n"
               "  -j, --json           print the JSON answer\n"
               "before a reload, check the new config and plugins in a "
               "separate process:\n"
               "  manifold -t -c CONFIG  (loads every plugin and script and "
               "runs its init)\n");
}

static int call(const char *sock, const char *method, const char *path,
                const char *send, json_t **out);

/* The arguments of a stage's command as JSON: positional words in
 * "args", --name value pairs (or --flag alone: true) by name. */
static json_t *
command_args(int argc, char **argv)
{
    json_t *j = json_object(), *pos = json_array();
    int i;

    for (i = 0; i < argc; i++) {
        const char *a = argv[i];

        if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            const char *eq = strchr(a + 2, '=');

            if (eq != NULL) {
                char name[128];

                snprintf(name, sizeof(name), "%.*s", (int)(eq - a - 2), a + 2);
                json_object_set_new(j, name, json_string(eq + 1));
            } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                json_object_set_new(j, a + 2, json_string(argv[++i]));
            } else {
                json_object_set_new(j, a + 2, json_true());
            }
        } else {
            json_array_append_new(pos, json_string(a));
        }
    }
    json_object_set_new(j, "args", pos);
    return j;
}

/* A command a stage registered: the longest run of leading words that
 * names one ("consumers add" -> consumers.add); fills path and the JSON
 * body. MF_ERR after printing why. */
static int
plugin_command(const char *sock, int argc, char **argv, char *path, size_t cap,
               char **send)
{
    json_t *j = NULL, *list, *c, *args;
    const char *best = NULL;
    size_t i, best_words = 0;
    int status;

    status = call(sock, "GET", "/commands", NULL, &j);
    if (status < 0) {
        return MF_ERR;
    }
    list = json_object_get(j, "commands");
    json_array_foreach(list, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        char joined[256] = "";
        size_t w, used = 0;

        for (w = 0; name != NULL && w < (size_t)argc && w < 3; w++) {
            used += (size_t)snprintf(joined + used, sizeof(joined) - used,
                                     "%s%s", w ? "." : "", argv[w]);
            if (used < sizeof(joined) && strcmp(joined, name) == 0 &&
                w + 1 > best_words) {
                best = name;
                best_words = w + 1;
            }
        }
    }
    if (best == NULL) {
        fprintf(stderr, "manifoldctl: no command '%s'%s\n", argv[0],
                json_array_size(list) > 0
                    ? "; `manifoldctl --json commands` lists what the "
                      "stages register"
                    : "");
        usage(stderr);
        json_decref(j);
        return MF_ERR;
    }
    snprintf(path, cap, "/commands/%s", best);
    args = command_args(argc - (int)best_words, argv + best_words);
    *send = json_dumps(args, JSON_COMPACT);
    json_decref(args);
    json_decref(j);
    return MF_OK;
}

/* A stage command's answer: its "text" when it gives one, else JSON. */
static void
print_plugin(json_t *j)
{
    const char *text = json_string_value(json_object_get(j, "text"));
    char *dump;

    if (text != NULL) {
        fputs(text, stdout);
        if (text[0] != '\0' && text[strlen(text) - 1] != '\n') {
            putchar('\n');
        }
        return;
    }
    dump = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("%s\n", dump ? dump : "null");
    free(dump);
}

/* Sends the request, returns the status and the parsed body (or NULL). */
static int
call(const char *sock, const char *method, const char *path, const char *send,
     json_t **out)
{
    struct sockaddr_un sun;
    char req[1024], *resp = NULL, *body;
    size_t slen = send ? strlen(send) : 0;
    size_t len = 0, cap = 0;
    ssize_t n;
    int fd, status = 0;

    *out = NULL;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(sock) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "manifoldctl: socket path too long: %s\n", sock);
        return -1;
    }
    memcpy(sun.sun_path, sock, strlen(sock));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        fprintf(stderr,
                "manifoldctl: cannot connect to %s: %s (is the gateway "
                "running with admin.socket set? use -s or -c)\n",
                sock, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    n = snprintf(req, sizeof(req),
                 "%s %s HTTP/1.1\r\nHost: manifold\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 method, path, slen);
    if (write(fd, req, (size_t)n) != n ||
        (slen > 0 && write(fd, send, slen) != (ssize_t)slen)) {
        fprintf(stderr, "manifoldctl: write: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *grown;

            cap = (len + 4096 + 1) * 2;
            grown = realloc(resp, cap);
            if (grown == NULL) {
                free(resp);
                close(fd);
                return -1;
            }
            resp = grown;
        }
        n = read(fd, resp + len, cap - len - 1);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    if (resp == NULL) {
        fprintf(stderr, "manifoldctl: no answer from %s\n", sock);
        return -1;
    }
    resp[len] = '\0';
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1 ||
        (body = strstr(resp, "\r\n\r\n")) == NULL) {
        fprintf(stderr, "manifoldctl: not an HTTP answer from %s\n", sock);
        free(resp);
        return -1;
    }
    *out = json_loads(body + 4, 0, NULL);
    free(resp);
    return status;
}

static const char *
str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s ? s : "";
}

static double
num(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

static void
print_stages(json_t *j)
{
    json_t *list = json_object_get(j, "stages"), *s;
    size_t i;

    printf("generation %lld\n",
           (long long)json_integer_value(json_object_get(j, "generation")));
    printf("%-20s %-4s %-10s %4s %-8s %10s %7s %10s  %s\n", "NAME", "KIND",
           "VERSION", "GEN", "ENABLED", "REQUESTS", "ERRORS", "TIME(ms)",
           "FILE");
    json_array_foreach(list, i, s)
    {
        printf("%-20s %-4s %-10s %4lld %-8s %10lld %7lld %10.1f  %s%s\n",
               str(s, "name"), str(s, "kind"), str(s, "version"),
               (long long)num(s, "generation"),
               json_is_true(json_object_get(s, "enabled")) ? "yes" : "no",
               (long long)num(s, "requests"), (long long)num(s, "errors"),
               num(s, "time_ms"), str(s, "file"),
               json_is_true(json_object_get(s, "files_changed"))
                   ? " (changed on disk)"
                   : "");
        if (json_is_string(json_object_get(s, "last_error"))) {
            printf("    last error: %s\n", str(s, "last_error"));
        }
    }
}

static void
print_stats(json_t *j)
{
    json_t *r = json_object_get(j, "reloads"), *last, *s;
    size_t i;

    printf("uptime          %.0f s\n", num(j, "uptime_s"));
    printf("requests        %lld\n", (long long)num(j, "requests"));
    printf("in flight       %lld\n", (long long)num(j, "in_flight"));
    printf("workers         %lld\n", (long long)num(j, "workers"));
    printf("generation      %lld (%lld alive)\n",
           (long long)num(j, "generation"),
           (long long)num(j, "generations_alive"));
    printf("watched files   %lld\n", (long long)num(j, "watched_files"));
    printf("reloads         %lld (%lld refused)\n",
           (long long)num(r, "attempts"), (long long)num(r, "failures"));
    last = json_object_get(r, "last");
    if (last != NULL) {
        printf("last reload     %s by %s\n",
               json_is_true(json_object_get(last, "ok")) ? "ok" : "REFUSED",
               str(last, "trigger"));
        if (json_is_string(json_object_get(last, "error"))) {
            printf("  error: %s\n", str(last, "error"));
        }
    }
    printf("\n%-20s %10s %7s %10s\n", "STAGE", "REQUESTS", "ERRORS",
           "TIME(ms)");
    json_array_foreach(json_object_get(j, "stages"), i, s)
    {
        printf("%-20s %10lld %7lld %10.1f\n", str(s, "name"),
               (long long)num(s, "requests"), (long long)num(s, "errors"),
               num(s, "time_ms"));
    }
}

static void
print_generations(json_t *j)
{
    json_t *g, *s;
    size_t i, k;

    printf("%5s %-8s %5s  %s\n", "ID", "CURRENT", "REFS", "STAGES (loaded in)");
    json_array_foreach(json_object_get(j, "generations"), i, g)
    {
        printf("%5lld %-8s %5lld  ", (long long)num(g, "id"),
               json_is_true(json_object_get(g, "current")) ? "yes" : "",
               (long long)num(g, "refs"));
        json_array_foreach(json_object_get(g, "stages"), k, s)
        {
            printf("%s%s(%lld)", k ? " " : "", str(s, "name"),
                   (long long)num(s, "loaded_in"));
        }
        printf("\n");
    }
}

static void
print_reload(json_t *j)
{
    json_t *s;
    size_t i;

    printf("generation %lld serving; loaded afresh:",
           (long long)num(j, "generation"));
    json_array_foreach(json_object_get(j, "stages_loaded"), i, s)
    {
        printf(" %s", json_string_value(s));
    }
    printf("%s\n", json_array_size(json_object_get(j, "stages_loaded"))
                       ? ""
                       : " (none: nothing changed)");
}

static void
print_keys(json_t *j)
{
    json_t *k, *rest;
    size_t i, r;

    printf("%-16s %3s %-16s %-21s %9s %7s  %s\n", "PROVIDER", "#", "KEY",
           "STATE", "REQUESTS", "ERRORS", "WHY");
    json_array_foreach(json_object_get(j, "keys"), i, k)
    {
        printf("%-16s %3lld %-16s %-21s %9lld %7lld  %s", str(k, "provider"),
               (long long)num(k, "index"), str(k, "key"), str(k, "state"),
               (long long)num(k, "requests"), (long long)num(k, "errors"),
               str(k, "why"));
        printf("\n");
        /* a 429 rests a key for one model only */
        json_array_foreach(json_object_get(k, "rests"), r, rest)
        {
            printf("%-16s %3s   resting for model %s: %s (%.1f s left)\n", "",
                   "", str(rest, "model"), str(rest, "why"),
                   num(rest, "retry_in_ms") / 1000);
        }
    }
    if (json_array_size(json_object_get(j, "targets")) == 0) {
        return;
    }
    printf("\n%-16s %-24s %-10s %9s %9s %9s %10s\n", "PROVIDER", "MODEL",
           "BREAKER", "IN FLIGHT", "REQUESTS", "FAILURES", "TTFT(ms)");
    json_array_foreach(json_object_get(j, "targets"), i, k)
    {
        printf("%-16s %-24s %-10s %9lld %9lld %9lld %10.1f\n",
               str(k, "provider"), str(k, "model"), str(k, "breaker"),
               (long long)num(k, "in_flight"), (long long)num(k, "requests"),
               (long long)num(k, "failures"), num(k, "ttft_ms_avg"));
    }
}

static char *
socket_from_config(const char *path)
{
    char *errors = NULL, *sock = NULL;
    mf_config_t *c = mf_config_load(path, "plugins", &errors);

    if (c == NULL) {
        fprintf(stderr, "manifoldctl: %s", errors);
        free(errors);
        return NULL;
    }
    if (c->admin_socket != NULL) {
        sock = strdup(c->admin_socket);
    } else {
        fprintf(stderr, "manifoldctl: %s sets no admin.socket\n", path);
    }
    mf_config_free(c);
    return sock;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *cmd, *sock = getenv("MANIFOLD_ADMIN_SOCKET"), *method = "GET";
    const char *config_file = NULL;
    int sock_from_config = 0;
    char *owned = NULL, path[512], sockbuf[4096], *send = NULL;
    json_t *j;
    int c, as_json = 0, status, rc;

    while ((c = getopt_long(argc, argv, "+s:c:jh", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            sock = optarg;
            sock_from_config = 0;
            break;
        case 'c':
            config_file = optarg; /* its admin.socket is read below */
            sock_from_config = 1;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[optind], "intent") == 0) {
        return mf_ctl_intent(argc - optind, argv + optind, config_file);
    }
    if (sock_from_config) {
        owned = socket_from_config(config_file);
        if (owned == NULL) {
            return 2;
        }
        sock = owned;
    }
    if (sock == NULL || sock[0] == '\0') {
        sock = DEFAULT_SOCKET;
    }
    if (mf_rundir_socket_path(sock, sockbuf, sizeof(sockbuf), 0, path,
                              sizeof(path)) != MF_OK) {
        fprintf(stderr, "manifoldctl: %s\n", path);
        free(owned);
        return 2;
    }
    sock = sockbuf;
    cmd = argv[optind];
    if (strcmp(cmd, "keys") == 0 && optind + 3 < argc &&
        (strcmp(argv[optind + 1], "enable") == 0 ||
         strcmp(argv[optind + 1], "disable") == 0)) {
        const char *prov = argv[optind + 2], *idx = argv[optind + 3];

        if (strpbrk(prov, "/ ?#%\r\n") != NULL ||
            strspn(idx, "0123456789") != strlen(idx)) {
            fprintf(stderr, "manifoldctl: keys %s PROVIDER INDEX\n",
                    argv[optind + 1]);
            free(owned);
            return 2;
        }
        method = "POST";
        snprintf(path, sizeof(path), "/keys/%s/%s/%s", prov, idx,
                 argv[optind + 1]);
        cmd = "keyset";
    } else if (strcmp(cmd, "stages") == 0 || strcmp(cmd, "stats") == 0 ||
               strcmp(cmd, "generations") == 0 ||
               (strcmp(cmd, "commands") == 0 && optind + 1 >= argc) ||
               (strcmp(cmd, "keys") == 0 && optind + 1 >= argc)) {
        snprintf(path, sizeof(path), "/%s", cmd);
    } else if (strcmp(cmd, "reload") == 0 && optind + 1 >= argc) {
        method = "POST";
        snprintf(path, sizeof(path), "/reload");
    } else if ((strcmp(cmd, "reload") == 0 || strcmp(cmd, "enable") == 0 ||
                strcmp(cmd, "disable") == 0) &&
               optind + 1 < argc) {
        const char *name = argv[optind + 1];

        if (strpbrk(name, "/ ?#%\r\n") != NULL) {
            fprintf(stderr, "manifoldctl: bad stage name '%s'\n", name);
            free(owned);
            return 2;
        }
        method = "POST";
        snprintf(path, sizeof(path), "/stages/%s/%s", name, cmd);
    } else if (plugin_command(sock, argc - optind, argv + optind, path,
                              sizeof(path), &send) == MF_OK) {
        method = "POST";
        cmd = "plugin";
    } else {
        free(owned);
        return 2;
    }
    status = call(sock, method, path, send, &j);
    free(send);
    free(owned);
    if (status < 0) {
        return 1;
    }
    rc = status >= 200 && status < 300 ? 0 : 1;
    if (as_json) {
        char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;

        printf("%s\n", text ? text : "null");
        free(text);
    } else if (rc != 0) {
        json_t *e = json_object_get(j, "error");

        fprintf(stderr, "manifoldctl: %s (HTTP %d)\n",
                e ? str(e, "message") : "bad answer", status);
    } else if (strcmp(cmd, "stages") == 0) {
        print_stages(j);
    } else if (strcmp(cmd, "stats") == 0) {
        print_stats(j);
    } else if (strcmp(cmd, "generations") == 0) {
        print_generations(j);
    } else if (strcmp(cmd, "reload") == 0) {
        print_reload(j);
    } else if (strcmp(cmd, "keys") == 0) {
        print_keys(j);
    } else if (strcmp(cmd, "plugin") == 0) {
        print_plugin(j);
    } else if (strcmp(cmd, "commands") == 0) {
        size_t i;
        json_t *one;

        json_array_foreach(json_object_get(j, "commands"), i, one)
        {
            printf("%-20s %-12s %s\n", str(one, "name"), str(one, "stage"),
                   str(one, "usage"));
        }
    } else if (strcmp(cmd, "keyset") == 0) {
        printf("key %lld of provider %s %s\n", (long long)num(j, "index"),
               str(j, "provider"),
               json_is_true(json_object_get(j, "enabled")) ? "enabled"
                                                           : "disabled");
    } else {
        printf("stage %s %s\n", str(j, "name"),
               json_is_true(json_object_get(j, "enabled")) ? "enabled"
                                                           : "disabled");
    }
    json_decref(j);
    return rc;
}
