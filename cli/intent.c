/*
 * manifoldctl intent test TEXT | intent eval FILE: asks the gateway's
 * intent router (lua/stages/intent-router.lua, with `explain: true`) how
 * it classifies a text: each classifier's verdict, the scores of the
 * embeddings classifier and the route taken; eval runs a labelled file
 * and reports the accuracy, each classifier's precision and coverage,
 * and the embeddings threshold and margin the examples support.
 */
#include "cli/intent.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "config/config.h"

typedef struct {
    char host[256];
    char port[16];
    const char *model;
    const char *key;
} target_t;

/* http://HOST:PORT (no path) into t; MF_ERR otherwise. */
static int
parse_url(const char *url, target_t *t)
{
    const char *p = url, *colon;

    if (strncmp(p, "http://", 7) != 0) {
        return MF_ERR;
    }
    p += 7;
    if (*p == '[') {
        const char *end = strchr(p, ']');

        if (end == NULL || end[1] != ':') {
            return MF_ERR;
        }
        snprintf(t->host, sizeof(t->host), "%.*s", (int)(end - p - 1), p + 1);
        snprintf(t->port, sizeof(t->port), "%.*s", (int)strcspn(end + 2, "/"),
                 end + 2);
        return MF_OK;
    }
    colon = strchr(p, ':');
    if (colon == NULL) {
        snprintf(t->host, sizeof(t->host), "%.*s", (int)strcspn(p, "/"), p);
        snprintf(t->port, sizeof(t->port), "80");
        return MF_OK;
    }
    snprintf(t->host, sizeof(t->host), "%.*s", (int)(colon - p), p);
    snprintf(t->port, sizeof(t->port), "%.*s", (int)strcspn(colon + 1, "/"),
             colon + 1);
    return MF_OK;
}

/* Decodes a chunked body in place; its length. */
static size_t
dechunk(char *b, size_t len)
{
    size_t in = 0, out = 0;

    while (in < len) {
        char *end;
        unsigned long n = strtoul(b + in, &end, 16);
        char *crlf = strstr(b + in, "\r\n");

        if (crlf == NULL || n == 0 || end == b + in) {
            break;
        }
        in = (size_t)(crlf - b) + 2;
        if (in + n > len) {
            n = len - in;
        }
        memmove(b + out, b + in, n);
        out += n;
        in += n + 2;
    }
    return out;
}

/* POSTs one explain request; the decoded answer, or NULL (said why). */
static json_t *
ask(const target_t *t, const char *text)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL, *a;
    json_t *req = json_pack("{s:s,s:[{s:s,s:s}]}", "model", t->model,
                            "messages", "role", "user", "content", text);
    char *body = json_dumps(req, JSON_COMPACT), *resp = NULL, *sep;
    size_t len = 0, cap = 0;
    int fd = -1, status = 0;
    json_t *j = NULL;
    char head[1024];
    struct timeval tv = {.tv_sec = 60};

    json_decref(req);
    if (getaddrinfo(t->host, t->port, &hints, &ai) != 0) {
        fprintf(stderr, "manifoldctl: cannot resolve %s\n", t->host);
        free(body);
        return NULL;
    }
    for (a = ai; a != NULL; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            break;
        }
        if (fd >= 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        fprintf(stderr, "manifoldctl: cannot connect to %s:%s\n", t->host,
                t->port);
        free(body);
        return NULL;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    snprintf(head, sizeof(head),
             "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%s\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n"
             "intent-explain: 1\r\nConnection: close\r\n%s%s%s\r\n",
             strchr(t->host, ':') ? "127.0.0.1" : t->host, t->port,
             strlen(body), t->key ? "Authorization: Bearer " : "",
             t->key ? t->key : "", t->key ? "\r\n" : "");
    if (write(fd, head, strlen(head)) < 0 ||
        write(fd, body, strlen(body)) < 0) {
        fprintf(stderr, "manifoldctl: cannot send to %s:%s\n", t->host,
                t->port);
        close(fd);
        free(body);
        return NULL;
    }
    free(body);
    for (;;) {
        ssize_t n;

        if (len + 4096 + 1 > cap) {
            char *nr = realloc(resp, cap = (cap ? cap * 2 : 16384));

            if (nr == NULL) {
                break;
            }
            resp = nr;
        }
        n = read(fd, resp + len, cap - len - 1);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    if (resp == NULL) {
        fprintf(stderr, "manifoldctl: no answer from %s:%s\n", t->host,
                t->port);
        return NULL;
    }
    resp[len] = '\0';
    sep = strstr(resp, "\r\n\r\n");
    if (sep == NULL || sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
        fprintf(stderr, "manifoldctl: not an HTTP answer from %s:%s\n", t->host,
                t->port);
        free(resp);
        return NULL;
    }
    *sep = '\0';
    sep += 4;
    len -= (size_t)(sep - resp);
    if (strcasestr(resp, "transfer-encoding: chunked") != NULL) {
        len = dechunk(sep, len);
    }
    j = json_loadb(sep, len, 0, NULL);
    if (status != 200 || !json_is_array(json_object_get(j, "classifiers"))) {
        json_t *e = json_object_get(j, "error");

        fprintf(stderr,
                "manifoldctl: the gateway did not explain (HTTP %d%s%s); "
                "is an intent router with `explain: true` routing model "
                "'%s'?\n",
                status, e ? ": " : "",
                e ? json_string_value(json_object_get(e, "message")) : "",
                t->model);
        json_decref(j);
        j = NULL;
    }
    free(resp);
    return j;
}

static const char *
jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s ? s : "-";
}

static void
print_one(json_t *j)
{
    json_t *c, *sc, *route = json_object_get(j, "route");
    size_t i, k;
    char *r = json_is_string(route) ? NULL : json_dumps(route, JSON_COMPACT);

    printf("intent: %s (by %s) -> %s\n", jstr(j, "intent"), jstr(j, "by"),
           r ? r : jstr(j, "route"));
    free(r);
    json_array_foreach(json_object_get(j, "classifiers"), i, c)
    {
        printf("  %-11s %-12s %7.1f ms  %s\n", jstr(c, "classifier"),
               jstr(c, "intent"), json_number_value(json_object_get(c, "ms")),
               jstr(c, "why"));
        json_array_foreach(json_object_get(c, "scores"), k, sc)
        {
            printf("      %-16s %.3f\n", jstr(sc, "intent"),
                   json_number_value(json_object_get(sc, "score")));
        }
    }
}

typedef struct {
    double best, lead;
    int right; /* the best intent is the label */
} sample_t;

static int
cmp_best(const void *a, const void *b)
{
    double x = ((const sample_t *)a)->best, y = ((const sample_t *)b)->best;

    return x < y ? 1 : x > y ? -1 : 0;
}

/* One labelled example from a line: {"text", "intent"} or
 * "intent<TAB>text"; 0 for a blank or comment line. */
static int
parse_line(char *line, char **text, char **label, json_t **owned)
{
    char *tab;

    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0' || line[0] == '#') {
        return 0;
    }
    if (line[0] == '{') {
        *owned = json_loads(line, 0, NULL);
        *text = (char *)json_string_value(json_object_get(*owned, "text"));
        *label = (char *)json_string_value(json_object_get(*owned, "intent"));
        return *text && *label ? 1 : -1;
    }
    tab = strchr(line, '\t');
    if (tab == NULL) {
        return -1;
    }
    *tab = '\0';
    *label = line;
    *text = tab + 1;
    return 1;
}

static int
eval_file(const target_t *t, const char *file)
{
    FILE *f = fopen(file, "r");
    char line[16384];
    int n = 0, right = 0, lineno = 0, ci;
    static const char *const names[] = {"rules", "embeddings", "llm"};
    int decided[3] = {0}, correct[3] = {0};
    sample_t *s = NULL;
    size_t ns = 0, i;
    double thr = -1, margin = 0;

    if (f == NULL) {
        fprintf(stderr, "manifoldctl: cannot open %s\n", file);
        return 2;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *text = NULL, *label = NULL;
        json_t *owned = NULL, *j, *c;
        int k = parse_line(line, &text, &label, &owned);

        lineno++;
        if (k <= 0) {
            if (k < 0) {
                fprintf(stderr,
                        "%s:%d: neither {\"text\",\"intent\"} nor "
                        "INTENT<TAB>TEXT\n",
                        file, lineno);
            }
            json_decref(owned);
            continue;
        }
        j = ask(t, text);
        if (j == NULL) {
            json_decref(owned);
            fclose(f);
            free(s);
            return 1;
        }
        n++;
        right += strcmp(jstr(j, "intent"), label) == 0;
        json_array_foreach(json_object_get(j, "classifiers"), i, c)
        {
            json_t *sc = json_object_get(c, "scores");

            for (ci = 0; ci < 3; ci++) {
                if (strcmp(jstr(c, "classifier"), names[ci]) == 0 &&
                    json_is_string(json_object_get(c, "intent"))) {
                    decided[ci]++;
                    correct[ci] += strcmp(jstr(c, "intent"), label) == 0;
                }
            }
            if (json_array_size(sc) > 0) {
                sample_t *ns2 = realloc(s, (ns + 1) * sizeof(*s));
                json_t *b0 = json_array_get(sc, 0), *b1 = json_array_get(sc, 1);
                double best = json_number_value(json_object_get(b0, "score"));

                if (ns2 != NULL) {
                    s = ns2;
                    s[ns].best = best;
                    s[ns].lead = b1 ? best - json_number_value(
                                                 json_object_get(b1, "score"))
                                    : 1;
                    s[ns].right = strcmp(jstr(b0, "intent"), label) == 0;
                    ns++;
                }
            }
        }
        if (strcmp(jstr(j, "intent"), label) != 0) {
            printf("miss: want %-12s got %-12s (by %s): %.60s\n", label,
                   jstr(j, "intent"), jstr(j, "by"), text);
        }
        json_decref(j);
        json_decref(owned);
    }
    fclose(f);
    if (n == 0) {
        fprintf(stderr, "manifoldctl: %s has no examples\n", file);
        free(s);
        return 2;
    }
    printf("accuracy: %d/%d (%.1f%%)\n", right, n, 100.0 * right / n);
    for (ci = 0; ci < 3; ci++) {
        if (decided[ci] > 0) {
            printf("  %-11s decided %d (%.0f%% of the examples), right %d "
                   "(precision %.1f%%)\n",
                   names[ci], decided[ci], 100.0 * decided[ci] / n, correct[ci],
                   100.0 * correct[ci] / decided[ci]);
        }
    }
    if (ns > 0) {
        int ok = 0, all = 0;

        /* the lowest threshold above which the nearest intent is right
         * at least 90% of the time; then the smallest margin that lifts
         * the precision above it to 95% */
        qsort(s, ns, sizeof(*s), cmp_best);
        for (i = 0; i < ns; i++) {
            all++;
            ok += s[i].right;
            if ((double)ok / all >= 0.9) {
                thr = s[i].best;
            }
        }
        if (thr >= 0) {
            double m;

            for (m = 0; m <= 0.5; m += 0.01) {
                int a = 0, r = 0;

                for (i = 0; i < ns; i++) {
                    if (s[i].best >= thr && s[i].lead >= m) {
                        a++;
                        r += s[i].right;
                    }
                }
                if (a > 0 && (double)r / a >= 0.95) {
                    margin = m;
                    break;
                }
                margin = m;
            }
            printf("embeddings: suggested threshold %.3f, margin %.2f "
                   "(nearest intent right >= 90%% above the threshold)\n",
                   thr, margin);
        } else {
            printf("embeddings: no threshold keeps the nearest intent right "
                   "90%% of the time; add examples\n");
        }
    }
    free(s);
    return right == n ? 0 : 1;
}

int
mf_ctl_intent(int argc, char **argv, const char *config)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"url", required_argument, NULL, 'u'},
        {NULL, 0, NULL, 0}};
    const char *url = getenv("MANIFOLD_URL");
    target_t t = {.model = "auto", .key = getenv("MANIFOLD_API_KEY")};
    char fromconf[320];
    int c;
    json_t *j;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+m:u:", opts, NULL)) != -1) {
        if (c == 'm') {
            t.model = optarg;
        } else if (c == 'u') {
            url = optarg;
        } else {
            return 2;
        }
    }
    if (optind + 2 != argc || (strcmp(argv[optind], "test") != 0 &&
                               strcmp(argv[optind], "eval") != 0)) {
        fprintf(stderr, "usage: manifoldctl [-c CONFIG] intent [--model M] "
                        "[--url http://HOST:PORT] test TEXT | eval FILE\n");
        return 2;
    }
    if (url == NULL && config != NULL) {
        char *errors = NULL;
        mf_config_t *cf = mf_config_load(config, "plugins", &errors);

        if (cf == NULL) {
            fprintf(stderr, "manifoldctl: %s", errors);
            free(errors);
            return 2;
        }
        snprintf(fromconf, sizeof(fromconf), "http://%s:%d",
                 strcmp(cf->listen_host, "0.0.0.0") == 0 ? "127.0.0.1"
                                                         : cf->listen_host,
                 cf->listen_port);
        mf_config_free(cf);
        url = fromconf;
    }
    if (url == NULL) {
        url = "http://127.0.0.1:8080";
    }
    if (parse_url(url, &t) != MF_OK) {
        fprintf(stderr, "manifoldctl: --url takes http://HOST:PORT\n");
        return 2;
    }
    if (strcmp(argv[optind], "eval") == 0) {
        return eval_file(&t, argv[optind + 1]);
    }
    j = ask(&t, argv[optind + 1]);
    if (j == NULL) {
        return 1;
    }
    print_one(j);
    json_decref(j);
    return 0;
}
