/*
 * The request path. A request read by the server runs the phases of
 * DESIGN.md: on_request, default routing by model, on_route, then per
 * attempt on_upstream_request, the provider's build_request and the
 * upstream call; the response passes on_upstream_response and
 * on_response_headers, then its body (whole, or each SSE event) passes
 * on_response_body; on_log and on_done close it. Retries move to the next
 * target only before the first byte reached the client.
 */
#include "request/request.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "routing/balancer.h"
#include "http/guard.h"
#include "routing/keypool.h"
#include "proto/proto_anthropic.h"
#include "http/server.h"
#include "http/upstream.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"
#include "request/jscan.h"

#define MF_ERROR_BODY_MAX (1024 * 1024)
#define MF_STREAM_HIGH_WATER (256 * 1024)

static void req_step(mf_req_t *r);
static void req_finish(mf_req_t *r);
static void req_free(mf_req_t *r);
static void attempt_start(mf_req_t *r);
static int attempt_prepare(mf_req_t *r);
static int attempt_first(mf_req_t *r);
static void respond_no_target(mf_req_t *r);
static mf_action_t run_authorize(mf_req_t *r);
static void attempt_fail(mf_req_t *r, const mf_error_t *err, int status);

/* Stops or restarts reading the upstream (stage pause, backpressure). */
static void
call_pause(mf_req_t *r, int paused)
{
    if (r->call == NULL || r->call_paused == paused) {
        return;
    }
    r->call_paused = paused;
    mf_upcall_pause(r->call, paused);
}

/* Sending to the client */

static struct evbuffer *
out(mf_req_t *r)
{
    return bufferevent_get_output(mf_conn_bev(r->conn));
}

static int
is_hop_header(mf_str_t n)
{
    return mf_str_caseeq(n, MF_STR("content-length")) ||
           mf_str_caseeq(n, MF_STR("transfer-encoding")) ||
           mf_str_caseeq(n, MF_STR("connection")) ||
           mf_str_caseeq(n, MF_STR("content-type"));
}

/* Writes one header line; a header that would split the head (a stage's
 * or the client's value with CR or LF) is dropped and logged instead. */
/* A head gathered on the stack and added to the output in few pieces:
 * a printf or an evbuffer_add per piece costs more than the head. */
typedef struct {
    struct evbuffer *o;
    size_t len;
    char b[1024];
} head_buf_t;

static void
hb_put(head_buf_t *h, const char *p, size_t n)
{
    if (h->len + n > sizeof(h->b)) {
        evbuffer_add(h->o, h->b, h->len);
        h->len = 0;
        if (n > sizeof(h->b)) {
            evbuffer_add(h->o, p, n);
            return;
        }
    }
    memcpy(h->b + h->len, p, n);
    h->len += n;
}

static void
hb_str(head_buf_t *h, const char *s)
{
    hb_put(h, s, strlen(s));
}

/* The decimal digits of v (v >= 0). */
static void
hb_num(head_buf_t *h, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    hb_put(h, tmp + i, sizeof(tmp) - i);
}

static void
send_header(mf_req_t *r, head_buf_t *h, mf_str_t name, mf_str_t value)
{
    if (!mf_http_header_ok(name, value)) {
        mf_log_warn("request %.*s: header '%.*s' not sent: its value holds "
                    "CR, LF or NUL",
                    (int)r->id.len, r->id.data,
                    (int)(name.len > 64 ? 64 : name.len), name.data);
        return;
    }
    hb_put(h, name.data, name.len);
    hb_put(h, ": ", 2);
    hb_put(h, value.data, value.len);
    hb_put(h, "\r\n", 2);
}

/* Writes the status line and headers; len < 0 = chunked body. */
static void
send_head(mf_req_t *r, int status, const char *ctype, int64_t len)
{
    head_buf_t h;
    size_t i;

    r->status = status;
    r->head_sent = 1;
    if (r->conn == NULL) {
        return;
    }
    h.o = out(r);
    h.len = 0;
    hb_put(&h, "HTTP/1.1 ", 9);
    hb_num(&h, (uint64_t)status);
    hb_put(&h, " ", 1);
    hb_str(&h, mf_http_reason(status));
    hb_put(&h, "\r\nDate: ", 8);
    hb_str(&h, mf_http_date());
    hb_put(&h, "\r\nContent-Type: ", 16);
    hb_str(&h, ctype);
    hb_put(&h, "\r\n", 2);
    if (len >= 0) {
        hb_put(&h, "Content-Length: ", 16);
        hb_num(&h, (uint64_t)len);
        hb_put(&h, "\r\n", 2);
    } else if (r->http10) {
        /* HTTP/1.0 has no chunked coding: the body ends with the
         * connection (RFC 9112 6.3) */
        r->close_after = 1;
    } else {
        hb_put(&h, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (!mf_conn_keep_alive(r->conn)) {
        r->close_after = 1;
    }
    if (r->close_after) {
        hb_put(&h, "Connection: close\r\n", 19);
    } else if (r->http10) {
        /* a 1.0 client keeps the connection only when told so */
        hb_put(&h, "Connection: keep-alive\r\n", 24);
    }
    hb_put(&h, "x-request-id: ", 14);
    hb_put(&h, r->id.data, r->id.len);
    hb_put(&h, "\r\n", 2);
    if (r->attempts > 0 && r->prov != NULL) {
        send_header(r, &h, MF_STR("x-manifold-provider"),
                    mf_str_from(r->prov->conf->name));
        send_header(r, &h, MF_STR("x-manifold-model"), r->up_model);
        hb_put(&h, "x-manifold-attempts: ", 21);
        hb_num(&h, (uint64_t)(r->attempts > 0 ? r->attempts : 0));
        hb_put(&h, "\r\n", 2);
    }
    for (i = 0; i < r->resp_headers.n; i++) {
        mf_header_t *hd = &r->resp_headers.v[i];

        if (is_hop_header(hd->name)) {
            continue;
        }
        send_header(r, &h, hd->name, hd->value);
    }
    hb_put(&h, "\r\n", 2);
    evbuffer_add(h.o, h.b, h.len);
}

static void
mark_first_byte(mf_req_t *r)
{
    if (r->first_byte_ms == 0) {
        r->first_byte_ms = mf_now_ms();
    }
}

static void
send_chunk(mf_req_t *r, const char *data, size_t len)
{
    if (len == 0 || r->conn == NULL) {
        return;
    }
    mark_first_byte(r);
    if (r->http10) {
        evbuffer_add(out(r), data, len); /* identity: no framing */
        r->bytes_out += len;
        return;
    }
    evbuffer_add_printf(out(r), "%zx\r\n", len);
    evbuffer_add(out(r), data, len);
    evbuffer_add(out(r), "\r\n", 2);
    r->bytes_out += len;
}

int
mf_req_respond(mf_req_t *r, int status, const char *content_type, mf_str_t body)
{
    if (r->head_sent || r->finished) {
        return MF_ERR;
    }
    send_head(r, status, content_type ? content_type : "application/json",
              (int64_t)body.len);
    if (r->conn != NULL && body.len > 0) {
        evbuffer_add(out(r), body.data, body.len);
    }
    mark_first_byte(r);
    r->bytes_out += body.len;
    r->phase = MF_PHASE_FINISHED;
    return MF_OK;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    size_t len, i;
    unsigned cp;

    if (s[0] < 0x80) {
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
        return 0;
    }
    return len;
}

/* message as valid UTF-8 (a sentence cut inside a character, a path's raw
 * bytes): each invalid byte becomes U+FFFD. Pool memory, or message. */
static const char *
utf8_clean(mf_req_t *r, const char *message)
{
    const unsigned char *m = (const unsigned char *)message;
    size_t n = strlen(message), i = 0, k;
    mf_buf_t b = {0};
    const char *clean;

    while (i < n && (k = utf8_seq(m + i, n - i)) > 0) {
        i += k;
    }
    if (i == n) {
        return message;
    }
    mf_buf_append(&b, message, i);
    while (i < n) {
        k = utf8_seq(m + i, n - i);
        if (k == 0) {
            mf_buf_append(&b, "\xef\xbf\xbd", 3);
            k = 1;
        } else {
            mf_buf_append(&b, message + i, k);
        }
        i += k;
    }
    clean = b.data ? mf_pool_strndup(r->pool, b.data, b.len) : NULL;
    mf_buf_free(&b);
    return clean ? clean : "the error message could not be encoded";
}

static char *
error_json(mf_req_t *r, const char *type, const char *code, const char *param,
           const char *message)
{
    json_t *j;
    char *text;

    if (r->proto == MF_PROTO_ANTHROPIC) {
        j = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                      type, "message", message);
    } else {
        j = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", message,
                      "type", type, "code",
                      code ? json_string(code) : json_null(), "param",
                      param ? json_string(param) : json_null());
    }
    if (j == NULL) {
        return mf_xstrdup("{\"error\":{\"message\":\"error\"}}");
    }
    text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

/* An error naming the request field it is about (OpenAI's `param`). */
static int
respond_error_param(mf_req_t *r, int status, const char *type, const char *code,
                    const char *param, const char *message)
{
    char *text;
    int rc;

    if (r->head_sent || r->finished) {
        return MF_ERR;
    }
    message = utf8_clean(r, message);
    text = error_json(r, type, code, param, message);
    r->error = mf_pool_str(r->pool, mf_str_from(message));
    rc = mf_req_respond(r, status, "application/json", mf_str_from(text));
    free(text);
    return rc;
}

int
mf_req_respond_error(mf_req_t *r, int status, const char *type,
                     const char *code, const char *message)
{
    return respond_error_param(r, status, type, code, NULL, message);
}

/* An error event in the middle of a stream, then the stream ends. */
static void
send_stream_error(mf_req_t *r, const char *code, const char *message)
{
    char *text, *ev;
    size_t n;

    message = utf8_clean(r, message);
    r->error = mf_pool_str(r->pool, mf_str_from(message));
    if (r->conn == NULL) {
        return;
    }
    text = error_json(r, "upstream_error", code, NULL, message);
    n = strlen(text) + 32;
    ev = mf_xmalloc(n);
    if (r->proto == MF_PROTO_ANTHROPIC) {
        snprintf(ev, n, "event: error\ndata: %s\n\n", text);
    } else {
        snprintf(ev, n, "data: %s\n\n", text);
    }
    send_chunk(r, ev, strlen(ev));
    free(ev);
    free(text);
}

static void
finish_stream(mf_req_t *r)
{
    if (r->conn != NULL && !r->http10) {
        evbuffer_add(out(r), "0\r\n\r\n", 5);
    }
}

/* Endpoints without stages */

static void
respond_json(mf_req_t *r, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);

    mf_req_respond(r, status, "application/json", mf_str_from(text));
    free(text);
    json_decref(j);
}

static void
handle_models(mf_req_t *r)
{
    json_t *data = json_array(), *seen = json_object();
    mf_gen_t *g = r->gen;
    size_t i, j;

    for (i = 0; i < g->nproviders; i++) {
        mf_provider_conf_t *pc = g->providers[i].conf;

        for (j = 0; j < pc->nmodels + pc->nmap; j++) {
            const char *m = j < pc->nmodels
                                ? pc->models[j]
                                : pc->model_map[j - pc->nmodels].from;

            if (strpbrk(m, "*?") != NULL || json_object_get(seen, m)) {
                continue;
            }
            json_object_set_new(seen, m, json_true());
            json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s}", "id", m,
                                                  "object", "model", "created",
                                                  (json_int_t)0, "owned_by",
                                                  pc->name));
        }
    }
    json_decref(seen);
    respond_json(r, 200,
                 json_pack("{s:s,s:o}", "object", "list", "data", data));
}

/* Routing by model name */

/* Applies a provider's model_map (exact, or glob with '*' carried). */
static mf_str_t
map_model(mf_req_t *r, mf_provider_conf_t *pc, mf_str_t model)
{
    size_t i;

    for (i = 0; i < pc->nmap; i++) {
        const char *from = pc->model_map[i].from, *to = pc->model_map[i].to;
        size_t fl = strlen(from);

        if (mf_str_eq_cstr(model, from)) {
            return mf_str_from(to);
        }
        if (fl > 0 && from[fl - 1] == '*' &&
            strchr(from, '*') == from + fl - 1 && model.len >= fl - 1 &&
            memcmp(model.data, from, fl - 1) == 0) {
            const char *star = strchr(to, '*');
            mf_buf_t b = {0};
            mf_str_t outs;

            if (star == NULL) {
                return mf_str_from(to);
            }
            mf_buf_append(&b, to, (size_t)(star - to));
            mf_buf_append(&b, model.data + fl - 1, model.len - (fl - 1));
            mf_buf_append(&b, star + 1, strlen(star + 1));
            outs.data = b.data;
            outs.len = b.len;
            outs = mf_pool_str(r->pool, outs);
            mf_buf_free(&b);
            return outs;
        }
    }
    return model;
}

/* The rank of an exact name: above any glob's. */
#define MF_MATCH_EXACT INT_MAX

/* How well one pattern of `models` or `model_map` matches model:
 * MF_MATCH_EXACT for the same name, the length of its literal prefix (the
 * bytes before the first '*' or '?') for a matching glob, -1 for none. */
static int
pattern_rank(const char *pat, mf_str_t model)
{
    size_t lit = strcspn(pat, "*?");

    if (pat[lit] == '\0') {
        return mf_str_eq_cstr(model, pat) ? MF_MATCH_EXACT : -1;
    }
    return mf_glob_match(pat, model) ? (int)(lit < 65535 ? lit : 65535) : -1;
}

/* How well a provider serves model: its best pattern's rank, -1 when it
 * does not serve it. Across providers the highest rank wins (an exact
 * name anywhere beats every glob; among globs the longest literal
 * prefix); docs/ROUTING.md. */
static int
match_rank(const mf_provider_conf_t *pc, mf_str_t model)
{
    int best = -1, rank;
    size_t i;

    for (i = 0; i < pc->nmodels; i++) {
        rank = pattern_rank(pc->models[i], model);
        best = rank > best ? rank : best;
    }
    for (i = 0; i < pc->nmap; i++) {
        rank = pattern_rank(pc->model_map[i].from, model);
        best = rank > best ? rank : best;
    }
    return best;
}

/* The best rank any configured provider, enabled or not, has for model. */
static int
best_rank(const mf_config_t *c, mf_str_t model)
{
    int best = -1, rank;
    size_t i;

    for (i = 0; i < c->nproviders; i++) {
        rank = match_rank(&c->providers[i], model);
        best = rank > best ? rank : best;
    }
    return best;
}

int
mf_req_add_target(mf_req_t *r, mf_prov_t *p, mf_str_t model, unsigned weight)
{
    if (r->ntargets == r->targets_cap) {
        size_t cap = r->targets_cap ? r->targets_cap * 2 : 4;
        mf_rtarget_t *t = mf_pool_alloc(r->pool, cap * sizeof(*t));

        if (t == NULL) {
            return MF_ERR;
        }
        if (r->ntargets) {
            memcpy(t, r->targets, r->ntargets * sizeof(*t));
        }
        r->targets = t;
        r->targets_cap = cap;
    }
    r->targets[r->ntargets].prov = p;
    r->targets[r->ntargets].model = mf_pool_str(r->pool, model);
    r->targets[r->ntargets].weight = weight ? weight : 1;
    r->targets[r->ntargets].tgt = NULL;
    r->ntargets++;
    return MF_OK;
}

/* A route's target, in the order the balancer plans. */
static void
plan_add(void *arg, mf_prov_t *p, mf_str_t model, unsigned weight,
         mf_tgt_t *tgt)
{
    mf_req_t *r = arg;

    if (mf_req_add_target(r, p, model, weight) == MF_OK) {
        r->targets[r->ntargets - 1].tgt = tgt;
    }
}

/* Default targets: the route of the model, else the enabled providers
 * matching it best. */
static void
route_default(mf_req_t *r)
{
    mf_gen_t *g = r->gen;
    const mf_route_conf_t *rt = mf_balancer_route(g, r->model);
    size_t i;
    int best;

    r->ntargets = 0;
    r->route = NULL;
    if (rt != NULL) {
        mf_plan_t pl = {.gen = r->gen,
                        .headers = &r->req_headers,
                        .consumer = r->consumer,
                        .model = r->model,
                        .add = plan_add,
                        .arg = r};

        r->route = rt;
        mf_balancer_plan(&pl, rt);
        return;
    }
    /* no route: the providers that match the model best, in config
     * order; none when the best match is a disabled provider's */
    best = best_rank(g->config, r->model);
    for (i = 0; best >= 0 && i < g->nproviders; i++) {
        mf_prov_t *p = &g->providers[i];

        if (match_rank(p->conf, r->model) == best) {
            mf_req_add_target(r, p, map_model(r, p->conf, r->model), 1);
        }
    }
}

int
mf_req_set_model(mf_req_t *r, mf_str_t model)
{
    r->model = mf_pool_str(r->pool, model);
    route_default(r);
    return r->ntargets > 0 ? MF_OK : MF_ERR;
}

/* At most MF_MODEL_QUOTE bytes of a client's model are quoted back. */
#define MF_MODEL_QUOTE 64

/* 404 for a model no provider serves; 503 when the provider matching it
 * best is disabled for lack of a key. The client is told a bounded prefix
 * of the name and the models served, or the disabled provider's name;
 * hints meant for the operator (the config file) go to the log. */
static void
respond_unknown_model(mf_req_t *r)
{
    mf_gen_t *g = r->gen;
    mf_config_t *c = g->config;
    mf_buf_t b = {0};
    size_t i, j, listed = 0, quote = r->model.len;
    int best = best_rank(c, r->model);

    if (quote > MF_MODEL_QUOTE) {
        quote = MF_MODEL_QUOTE;
        while (quote > 0 && (r->model.data[quote] & 0xc0) == 0x80) {
            quote--; /* not inside a character */
        }
    }
    mf_buf_printf(&b,
                  "The model '%.*s%s' does not exist or is not served by "
                  "this gateway.",
                  (int)quote, r->model.data, quote < r->model.len ? "..." : "");
    for (i = 0; best >= 0 && i < c->nproviders; i++) {
        const mf_provider_conf_t *pc = &c->providers[i];

        if (pc->disabled && match_rank(pc, r->model) == best) {
            mf_log_warn("request %.*s: model '%.*s%s' is served by "
                        "provider '%s', disabled because its keys are "
                        "empty: set its key variable in %s and reload",
                        (int)r->id.len, r->id.data, (int)quote, r->model.data,
                        quote < r->model.len ? "..." : "", pc->name, c->path);
            mf_buf_reset(&b);
            mf_buf_printf(&b,
                          "The model '%.*s%s' is served by provider '%s', "
                          "which is disabled because no API key is "
                          "configured for it. Ask the gateway's operator to "
                          "set its key.",
                          (int)quote, r->model.data,
                          quote < r->model.len ? "..." : "", pc->name);
            mf_buf_append(&b, "", 1);
            mf_req_respond_error(r, 503, "upstream_error", "provider_disabled",
                                 b.data);
            mf_buf_free(&b);
            return;
        }
    }
    /* the names GET /v1/models lists; the patterns are the operator's */
    mf_buf_printf(&b, " Served:");
    for (i = 0; i < g->nproviders && listed < 40; i++) {
        mf_provider_conf_t *pc = g->providers[i].conf;

        for (j = 0; j < pc->nmodels && listed < 40; j++) {
            if (strpbrk(pc->models[j], "*?") == NULL) {
                mf_buf_printf(&b, "%s %s", listed ? "," : "", pc->models[j]);
                listed++;
            }
        }
    }
    if (listed == 0) {
        mf_buf_printf(&b, " no model by name (GET /v1/models)");
    }
    mf_buf_printf(&b, ". Use one of these, or ask the gateway's operator to "
                      "serve the model.");
    if (g->nproviders == 0) {
        mf_log_warn("request %.*s: model '%.*s%s' not served: no provider is "
                    "enabled in %s",
                    (int)r->id.len, r->id.data, (int)quote, r->model.data,
                    quote < r->model.len ? "..." : "", c->path);
    }
    mf_buf_append(&b, "", 1);
    mf_req_respond_error(r, 404, "invalid_request_error", "model_not_found",
                         b.data ? b.data : "The model is not served.");
    mf_buf_free(&b);
}

/* The body */

/* What one pass over a body's bytes found; see body_scan. */
typedef struct {
    size_t depth;    /* deepest nesting */
    size_t values;   /* JSON values, about: containers and separators */
    size_t messages; /* elements of the top-level "messages" array */
    mf_str_t key;    /* top-level key being read when a limit was passed */
} body_shape_t;

/*
 * Measures a body before it is parsed, in one pass over its bytes with no
 * allocation (a 16 MiB body costs some milliseconds): nesting depth, the
 * number of values and of top-level messages. Stops early once a limit
 * is passed, with `key` naming the top-level field it happened in. Does
 * not validate: the parser reports malformed JSON. Returns 1 when a limit
 * is passed.
 */
static int
body_scan(mf_str_t b, const mf_limits_t *lim, body_shape_t *sh)
{
    const char *p = b.data, *end = b.data + b.len, *str = NULL;
    mf_str_t last = MF_STR_NULL;
    size_t depth = 0, msgs_at = 0;
    int in_str = 0;

    memset(sh, 0, sizeof(*sh));
    for (; p < end; p++) {
        char ch = *p;

        if (in_str) {
            if (ch == '\\') {
                p++;
            } else if (ch == '"') {
                in_str = 0;
                if (depth == 1) {
                    last = (mf_str_t){str, (size_t)(p - str)};
                }
            }
            continue;
        }
        if (msgs_at != 0 && depth == msgs_at && sh->messages == 0 &&
            ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n' && ch != ']') {
            sh->messages = 1;
        }
        switch (ch) {
        case '"':
            in_str = 1;
            str = p + 1;
            break;
        case ':':
            if (depth == 1) {
                sh->key = last;
            }
            break;
        case '[':
        case '{':
            if (depth == 1 && ch == '[' &&
                mf_str_eq_cstr(sh->key, "messages")) {
                msgs_at = 2;
            }
            if (++depth > sh->depth) {
                sh->depth = depth;
            }
            sh->values++;
            break;
        case ']':
        case '}':
            if (depth > 0 && depth-- == msgs_at) {
                msgs_at = 0;
            }
            break;
        case ',':
            sh->values++;
            if (msgs_at != 0 && depth == msgs_at) {
                sh->messages++;
            }
            break;
        default:
            break;
        }
        if (sh->depth > lim->max_json_depth ||
            sh->values > lim->max_json_values ||
            sh->messages > lim->max_messages) {
            return 1;
        }
    }
    return 0;
}

/* Refuses a body whose shape passes limits.max_json_depth,
 * max_json_values or max_messages, before it costs a parse. */
static int
check_body_shape(mf_req_t *r)
{
    const mf_limits_t *lim = &r->gen->config->limits;
    body_shape_t sh;
    char msg[512], param[64];
    const char *what;
    size_t limit;

    if (!body_scan(r->body, lim, &sh)) {
        return MF_OK;
    }
    snprintf(param, sizeof(param), "%.*s",
             (int)(sh.key.len < 63 ? sh.key.len : 63),
             sh.key.data ? sh.key.data : "");
    if (sh.messages > lim->max_messages) {
        snprintf(msg, sizeof(msg),
                 "'messages' has more than %zu elements (limits.max_messages "
                 "of this gateway); send a shorter conversation.",
                 lim->max_messages);
        respond_error_param(r, 400, "invalid_request_error",
                            "array_above_max_length", "messages", msg);
        return MF_ERR;
    }
    if (sh.depth > lim->max_json_depth) {
        what = "nests deeper than";
        limit = lim->max_json_depth;
    } else {
        what = "holds more values than";
        limit = lim->max_json_values;
    }
    snprintf(msg, sizeof(msg),
             "The JSON body %s %zu (limits.max_json_%s of this gateway)%s%s%s.",
             what, limit, sh.depth > lim->max_json_depth ? "depth" : "values",
             param[0] ? " in '" : "", param, param[0] ? "'" : "");
    respond_error_param(r, 400, "invalid_request_error", "json_too_large",
                        param[0] ? param : NULL, msg);
    return MF_ERR;
}

/*
 * The fields the host needs from an OpenAI body, read from the one scan's
 * index (mf_jscan_body) without a JSON tree: model, messages, stream and
 * stream_options.include_usage, input. MF_ERR when the body is not one
 * the scan is sure of, or a field is not the plain good case: parse_body
 * then parses with jansson and answers what is wrong. On MF_OK the body
 * stays lazy: parsed only if a stage or a translator asks for the value.
 */
static int
scan_body(mf_req_t *r)
{
    const mf_limits_t *lim = &r->gen->config->limits;
    mf_jscan_t *js = mf_pool_alloc(r->pool, sizeof(*js));
    mf_str_t model, v;

    js->max_depth = lim->max_json_depth;
    js->max_values = lim->max_json_values;
    js->max_messages = lim->max_messages;
    if (mf_jscan_body(r->body, js) != MF_OK ||
        mf_jscan_plain_string(mf_jscan_get(js, MF_STR("model")), &model) !=
            MF_OK ||
        model.len == 0) {
        return MF_ERR;
    }
    if (r->endpoint == MF_ENDPOINT_CHAT) {
        if (!js->messages_ok) {
            return MF_ERR;
        }
        v = mf_jscan_get(js, MF_STR("stream"));
        if (v.data != NULL && !mf_str_eq_cstr(v, "true") &&
            !mf_str_eq_cstr(v, "false") && !mf_str_eq_cstr(v, "null")) {
            return MF_ERR;
        }
        r->stream = mf_str_eq_cstr(v, "true");
        v = mf_jscan_object_get(mf_jscan_get(js, MF_STR("stream_options")),
                                MF_STR("include_usage"));
        r->client_wants_usage = mf_str_eq_cstr(v, "true");
    } else if (r->endpoint == MF_ENDPOINT_EMBEDDINGS) {
        v = mf_jscan_get(js, MF_STR("input"));
        if (v.data == NULL || (*v.data != '"' && *v.data != '[')) {
            return MF_ERR;
        }
    }
    r->model = mf_pool_str(r->pool, model);
    r->model_asked = r->model;
    r->body_scan = js;
    r->body_lazy = 1;
    return MF_OK;
}

json_t *
mf_req_body_json(mf_req_t *r)
{
    if (r->json == NULL && r->body_lazy) {
        r->body_lazy = 0;
        r->json = json_loadb(r->body.data, r->body.len, JSON_ALLOW_NUL, NULL);
    }
    return r->json;
}

int
mf_req_body_field(mf_req_t *r, mf_str_t key, mf_str_t *value)
{
    json_t *v;
    char *text;

    if (r->json == NULL && r->body_lazy) {
        *value = mf_jscan_get(r->body_scan, key);
        return value->data != NULL ? MF_OK : MF_ERR;
    }
    v = json_object_getn(r->json, key.data, key.len);
    text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (text == NULL) {
        return MF_ERR;
    }
    *value = mf_pool_str(r->pool, mf_str_from(text));
    free(text);
    return MF_OK;
}

static int
parse_body(mf_req_t *r)
{
    json_error_t jerr;
    json_t *model, *v;
    char msg[512];

    if (r->body.len == 0) {
        mf_req_respond_error(r, 400, "invalid_request_error", NULL,
                             "The request has no body; send a JSON object.");
        return MF_ERR;
    }
    if (r->proto == MF_PROTO_OPENAI && scan_body(r) == MF_OK) {
        return MF_OK;
    }
    if (check_body_shape(r) != MF_OK) {
        return MF_ERR;
    }
    r->json = json_loadb(r->body.data, r->body.len, JSON_ALLOW_NUL, &jerr);
    if (r->json == NULL) {
        snprintf(msg, sizeof(msg),
                 "We could not parse the JSON body of your "
                 "request: %s (line %d, column %d).",
                 jerr.text, jerr.line, jerr.column);
        mf_req_respond_error(r, 400, "invalid_request_error", NULL, msg);
        return MF_ERR;
    }
    if (!json_is_object(r->json)) {
        mf_req_respond_error(r, 400, "invalid_request_error", NULL,
                             "The request body must be a JSON object.");
        return MF_ERR;
    }
    if (r->proto == MF_PROTO_ANTHROPIC &&
        json_is_string(json_object_get(r->json, "model"))) {
        const char *err = NULL;
        json_t *canon = mf_anthropic_request(r->json, &err);

        if (canon == NULL) {
            mf_req_respond_error(r, 400, "invalid_request_error", NULL, err);
            return MF_ERR;
        }
        json_decref(r->json);
        r->json = canon; /* served in the canonical form from here on */
        r->body_dirty = 1;
    }
    model = json_object_get(r->json, "model");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        mf_req_respond_error(r, 400, "invalid_request_error",
                             "missing_required_parameter",
                             "You must provide a model parameter (a "
                             "non-empty string).");
        return MF_ERR;
    }
    r->model = mf_pool_str(r->pool, (mf_str_t){json_string_value(model),
                                               json_string_length(model)});
    r->model_asked = r->model;
    if (r->endpoint == MF_ENDPOINT_CHAT) {
        v = json_object_get(r->json, "messages");
        if (!json_is_array(v) || json_array_size(v) == 0) {
            mf_req_respond_error(r, 400, "invalid_request_error",
                                 "missing_required_parameter",
                                 "'messages' is required: a non-empty array "
                                 "of {role, content} objects.");
            return MF_ERR;
        }
        {
            size_t i;
            json_t *m;

            json_array_foreach(v, i, m)
            {
                if (!json_is_object(m) ||
                    !json_is_string(json_object_get(m, "role"))) {
                    snprintf(msg, sizeof(msg),
                             "messages[%zu] must be an "
                             "object with a string 'role'.",
                             i);
                    mf_req_respond_error(r, 400, "invalid_request_error", NULL,
                                         msg);
                    return MF_ERR;
                }
            }
        }
        v = json_object_get(r->json, "stream");
        if (v != NULL && !json_is_boolean(v) && !json_is_null(v)) {
            mf_req_respond_error(r, 400, "invalid_request_error", NULL,
                                 "'stream' must be a boolean.");
            return MF_ERR;
        }
        r->stream = json_is_true(v);
        v = json_object_get(json_object_get(r->json, "stream_options"),
                            "include_usage");
        r->client_wants_usage = json_is_true(v);
    } else if (r->endpoint == MF_ENDPOINT_EMBEDDINGS) {
        v = json_object_get(r->json, "input");
        if (!json_is_string(v) && !json_is_array(v)) {
            mf_req_respond_error(r, 400, "invalid_request_error",
                                 "missing_required_parameter",
                                 "'input' is required: a string or an array "
                                 "of strings or token arrays.");
            return MF_ERR;
        }
    }
    return MF_OK;
}

mf_str_t
mf_req_last_user_text(mf_req_t *r)
{
    json_t *msgs = json_object_get(mf_req_body_json(r), "messages");
    size_t i = json_array_size(msgs);

    while (i-- > 0) {
        json_t *m = json_array_get(msgs, i), *c;
        const char *role = json_string_value(json_object_get(m, "role"));

        if (role == NULL || strcmp(role, "user") != 0) {
            continue;
        }
        c = json_object_get(m, "content");
        if (json_is_string(c)) {
            return (mf_str_t){json_string_value(c), json_string_length(c)};
        }
        if (json_is_array(c)) {
            mf_buf_t b = {0};
            json_t *part;
            size_t k;
            mf_str_t s;

            json_array_foreach(c, k, part)
            {
                json_t *t = json_object_get(part, "text");

                if (json_is_string(t)) {
                    if (b.len) {
                        mf_buf_append(&b, "\n", 1);
                    }
                    mf_buf_append(&b, json_string_value(t),
                                  json_string_length(t));
                }
            }
            s.data = b.data;
            s.len = b.len;
            s = mf_pool_str(r->pool, s);
            mf_buf_free(&b);
            return s;
        }
        return MF_STR("");
    }
    return MF_STR("");
}

/* Phase loop */

/* Acts on a stage result. Returns 1 to go on with the phase's end. */
static int
stage_result(mf_req_t *r, mf_action_t act)
{
    switch (act) {
    case MF_CONTINUE:
        return 1;
    case MF_PAUSE:
        r->paused = 1;
        return 0;
    case MF_RESPOND:
        if (!r->head_sent) {
            mf_req_respond_error(r, 500, "server_error", NULL,
                                 "a stage said it answered but did not");
        }
        req_finish(r);
        return 0;
    default:
        if (r->phase == MF_PHASE_AUTHORIZE && r->prov_err != NULL) {
            attempt_fail(r, r->prov_err, r->prov_err->status);
            return 0;
        }
        if (!r->head_sent) {
            mf_req_respond_error(r, 500, "server_error", NULL,
                                 "a gateway stage failed; see the gateway "
                                 "log");
        }
        req_finish(r);
        return 0;
    }
}

void
mf_req_resume(mf_req_t *r, mf_action_t action)
{
    if (!r->paused || r->finished) {
        return;
    }
    if (r->in_step) {
        r->resume_pending = 1;
        r->resume_action = action;
        return;
    }
    r->paused = 0;
    if (action == MF_CONTINUE) {
        r->stage_idx++;
        req_step(r);
    } else {
        stage_result(r, action);
    }
}

static void
start_stream_response(mf_req_t *r)
{
    const char *ctype = "text/event-stream; charset=utf-8";

    mf_hlist_set(r->pool, &r->resp_headers, MF_STR("cache-control"),
                 MF_STR("no-cache"));
    send_head(r, 200, ctype, -1);
}

static void flush_stream(mf_req_t *r);
static void complete_nonstream(mf_req_t *r);

static void
req_step(mf_req_t *r)
{
    mf_action_t act;

    r->in_step++;
    for (;;) {
        switch (r->phase) {
        case MF_PHASE_REQUEST:
            act = mf_pipeline_run(r, MF_STAGE_REQUEST);
            break;
        case MF_PHASE_ROUTE:
            act = mf_pipeline_run(r, MF_STAGE_ROUTE);
            break;
        case MF_PHASE_AUTHORIZE:
            act = run_authorize(r);
            break;
        case MF_PHASE_ATTEMPT:
            act = mf_pipeline_run(r, MF_STAGE_UPSTREAM_REQUEST);
            break;
        case MF_PHASE_UPSTREAM_RESPONSE:
            act = mf_pipeline_run(r, MF_STAGE_UPSTREAM_RESPONSE);
            break;
        case MF_PHASE_RESPONSE_HEADERS:
            act = mf_pipeline_run(r, MF_STAGE_RESPONSE_HEADERS);
            break;
        default:
            goto out;
        }
        if (act == MF_PAUSE && r->resume_pending) {
            /* resumed before the stage even returned */
            r->resume_pending = 0;
            act = r->resume_action;
            if (act == MF_CONTINUE) {
                r->stage_idx++;
                continue;
            }
        }
        if (!stage_result(r, act)) {
            if (act == MF_PAUSE) {
                call_pause(r, 1);
            }
            goto out;
        }
        r->stage_idx = 0;
        switch (r->phase) {
        case MF_PHASE_REQUEST:
            route_default(r);
            r->phase = MF_PHASE_ROUTE;
            break;
        case MF_PHASE_ROUTE:
            if (r->ntargets == 0) {
                respond_unknown_model(r);
                req_finish(r);
                goto out;
            }
            if (!attempt_first(r)) {
                respond_no_target(r);
                req_finish(r);
                goto out;
            }
            if (attempt_prepare(r) != MF_OK) {
                goto out;
            }
            break;
        case MF_PHASE_AUTHORIZE:
            r->phase = MF_PHASE_ATTEMPT;
            break;
        case MF_PHASE_ATTEMPT:
            r->phase = MF_PHASE_UPSTREAM;
            attempt_start(r);
            goto out;
        case MF_PHASE_UPSTREAM_RESPONSE:
            r->phase = MF_PHASE_RESPONSE_HEADERS;
            break;
        case MF_PHASE_RESPONSE_HEADERS:
            r->phase = MF_PHASE_BODY;
            if (r->sse_active) {
                /* the client's head goes with the first event */
                flush_stream(r);
                call_pause(r, 0);
            } else {
                complete_nonstream(r);
            }
            goto out;
        default:
            goto out;
        }
    }
out:
    if (--r->in_step == 0 && r->finished) {
        req_free(r);
    }
}

/* Attempts */

static void
build_upstream_head(mf_req_t *r, mf_buf_t *b, const mf_url_t *u)
{
    char num[24];
    size_t i, n, len;

    /* appended piece by piece: printf costs more than the head */
    mf_buf_append(b, "POST ", 5);
    mf_buf_append(b, u->path, strlen(u->path));
    mf_buf_append(b, " HTTP/1.1\r\nHost: ", 17);
    mf_buf_append(b, u->host, strlen(u->host));
    if ((u->tls && u->port != 443) || (!u->tls && u->port != 80)) {
        n = (size_t)snprintf(num, sizeof(num), ":%d", u->port);
        mf_buf_append(b, num, n);
    }
    mf_buf_append(b, "\r\nContent-Length: ", 18);
    n = sizeof(num);
    for (len = r->up_body.len; n == sizeof(num) || len != 0; len /= 10) {
        num[--n] = (char)('0' + len % 10);
    }
    mf_buf_append(b, num + n, sizeof(num) - n);
    mf_buf_append(b, "\r\n", 2);
    for (i = 0; i < r->up_req_headers.n; i++) {
        mf_header_t *h = &r->up_req_headers.v[i];

        if (mf_str_caseeq(h->name, MF_STR("host")) ||
            mf_str_caseeq(h->name, MF_STR("content-length")) ||
            !mf_http_header_ok(h->name, h->value)) {
            continue;
        }
        mf_buf_append(b, h->name.data, h->name.len);
        mf_buf_append(b, ": ", 2);
        mf_buf_append(b, h->value.data, h->value.len);
        mf_buf_append(b, "\r\n", 2);
    }
    mf_buf_append(b, "\r\n", 2);
}

/* Attempts: outcome, selection, retry */

typedef struct {
    unsigned kind; /* MF_RETRY_* bit of the failure; 0 = success */
    mf_keyres_t keyres;
    int breaker_fail;
    double retry_after_ms;
    char what[96];
} outcome_t;

static const outcome_t outcome_ok = {0, MF_KEYRES_OK, 0, 0, "ok"};

/* Ends the open attempt: key and target health, the tried list. */
static void
attempt_close(mf_req_t *r, const outcome_t *o, double ttft_ms)
{
    if (!r->attempt_open) {
        return;
    }
    r->attempt_open = 0;
    if (r->attempt_timer != NULL) {
        evtimer_del(r->attempt_timer);
    }
    mf_keypool_end(r->prov, r->key_idx, r->up_model, o->keyres,
                   o->retry_after_ms, o->what);
    if (r->att_tgt != NULL) {
        mf_balancer_end(r->att_tgt, r->route, o->kind == 0, o->breaker_fail,
                        ttft_ms);
    }
    mf_buf_printf(&r->tried, "%s%s/%.*s:%s", r->tried.len ? " " : "",
                  r->prov->conf->name, (int)r->up_model.len, r->up_model.data,
                  o->what);
}

/* Takes the first usable target from `from` to `to` (excluded): a key
 * that is not resting (or, as a last resort, a quarantined one) and a
 * breaker that lets it through. Opens the attempt's accounting. */
static int
attempt_select(mf_req_t *r, size_t from, size_t to, int last_resort)
{
    size_t i;

    for (i = from; i < to && i < r->ntargets; i++) {
        mf_rtarget_t *t = &r->targets[i];
        uint64_t tried = i == r->target_idx ? r->keys_tried : 0;
        double cool = 0;
        int k = -1;

        if (t->prov->nkeys > 0) {
            k = mf_keypool_pick(t->prov, t->model, tried, last_resort, &cool);
            if (k < 0) {
                if (cool > 0) {
                    r->skipped_rate++;
                    if (r->cool_ms == 0 || cool < r->cool_ms) {
                        r->cool_ms = cool;
                    }
                } else {
                    r->skipped_keys++;
                }
                continue;
            }
        } else if (tried != 0) {
            continue; /* a keyless target is tried once; no key to change */
        }
        if (t->tgt != NULL && !mf_balancer_allow(t->tgt, r->route)) {
            r->skipped_open++;
            continue;
        }
        if (i != r->target_idx) {
            r->keys_tried = 0;
        }
        r->target_idx = i;
        r->key_idx = k;
        if (k >= 0 && k < 64) {
            r->keys_tried |= (uint64_t)1 << k;
        } else if (k < 0) {
            r->keys_tried |= 1;
        }
        r->prov = t->prov;
        r->up_model = t->model;
        r->att_tgt = t->tgt;
        mf_keypool_begin(t->prov, k);
        if (t->tgt != NULL) {
            mf_balancer_begin(t->tgt);
        }
        r->attempt_open = 1;
        return 1;
    }
    return 0;
}

static int
attempt_first(mf_req_t *r)
{
    r->target_idx = 0;
    r->keys_tried = 0;
    if (attempt_select(r, 0, r->ntargets, 0)) {
        return 1;
    }
    /* the last-resort pass counts the skipped targets afresh */
    r->skipped_rate = r->skipped_open = r->skipped_keys = 0;
    r->cool_ms = 0;
    return attempt_select(r, 0, r->ntargets, 1);
}

/* No target could take the request at all. */
static void
respond_no_target(mf_req_t *r)
{
    char msg[512], num[32];

    if (r->skipped_rate > 0 && r->skipped_open == 0 && r->skipped_keys == 0) {
        double s = r->cool_ms / 1000;

        snprintf(num, sizeof(num), "%d",
                 (int)(s + 0.999) > 0 ? (int)(s + 0.999) : 1);
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("retry-after"),
                     mf_str_from(num));
        snprintf(msg, sizeof(msg),
                 "every key that serves model '%.*s' is rate limited; retry "
                 "after %s s",
                 (int)r->model.len, r->model.data, num);
        mf_req_respond_error(r, 429, "rate_limit_error", "rate_limited", msg);
        return;
    }
    snprintf(msg, sizeof(msg),
             "no healthy target for model '%.*s': %d with an open circuit "
             "breaker, %d with every key resting (see manifoldctl keys)",
             (int)r->model.len, r->model.data, r->skipped_open,
             r->skipped_keys + r->skipped_rate);
    mf_req_respond_error(r, 503, "upstream_error", "no_healthy_target", msg);
}

/* What the provider callbacks are told of the current attempt. */
static void
upstream_of(mf_req_t *r, const mf_rtarget_t *t, mf_upstream_t *u)
{
    memset(u, 0, sizeof(*u));
    u->provider = mf_str_from(t->prov->conf->name);
    u->type = mf_str_from(t->prov->conf->type);
    u->base_url = mf_str_from(t->prov->conf->base_url);
    u->model = t->model;
    u->key = r->up_key;
    u->endpoint = r->endpoint;
    u->stream = r->stream;
    u->want_usage = r->stream;
}

/* Prepares attempt target_idx (provider request) and runs its stages. */
static int
attempt_prepare(mf_req_t *r)
{
    mf_rtarget_t *t = &r->targets[r->target_idx];
    mf_upstream_t u;
    char msg[512];
    int rc;

    r->prov = t->prov;
    r->up_model = t->model;
    r->up_key = r->key_idx >= 0 ? mf_str_from(t->prov->key_str[r->key_idx])
                                : MF_STR("");
    r->up_url = MF_STR_NULL;
    r->up_body = MF_STR_NULL;
    r->up_req_headers.n = 0;
    r->up_resp_headers.n = 0;
    r->up_status = 0;
    r->prov_ctx = NULL;
    r->prov_err = NULL;
    r->passthrough = r->proto == MF_PROTO_OPENAI &&
                     strcmp(r->prov->ops->wire, "openai") == 0 &&
                     !(r->gen->hooks & MF_HOOK(MF_STAGE_RESPONSE_BODY));

    upstream_of(r, t, &u);
    r->cur_stage = MF_STAGE_PROVIDER;
    rc = r->prov->ops->build_request(r, r->prov->state, &u);
    if (rc != MF_OK && r->prov_err != NULL) {
        /* the provider refused the request itself (bad input for it) */
        mf_req_respond_error(r, r->prov_err->status, r->prov_err->type,
                             r->prov_err->code, r->prov_err->message);
        req_finish(r);
        return MF_ERR;
    }
    if (rc != MF_OK || r->up_url.len == 0 || r->prov_err != NULL) {
        snprintf(msg, sizeof(msg),
                 "provider '%s' (%s) could not build the "
                 "upstream request",
                 t->prov->conf->name, t->prov->dso->desc->name);
        mf_req_respond_error(r, 500, "server_error", NULL, msg);
        req_finish(r);
        return MF_ERR;
    }
    if (r->up_body.data == NULL) {
        if (r->body_dirty) {
            char *text = json_dumps(mf_req_body_json(r), JSON_COMPACT);
            mf_str_t s = mf_str_from(text);

            r->up_body = mf_pool_str(r->pool, s);
            free(text);
        } else {
            r->up_body = r->body;
        }
    }
    r->phase = r->prov->ops->authorize ? MF_PHASE_AUTHORIZE : MF_PHASE_ATTEMPT;
    r->stage_idx = 0;
    return MF_OK;
}

/* The provider's authorize step; runs once per attempt (stage_idx 0). */
static mf_action_t
run_authorize(mf_req_t *r)
{
    mf_upstream_t u;
    mf_rtarget_t *t = &r->targets[r->target_idx];

    if (r->stage_idx > 0) {
        return MF_CONTINUE; /* resumed */
    }
    upstream_of(r, t, &u);
    r->cur_stage = MF_STAGE_PROVIDER;
    return r->prov->ops->authorize(r, r->prov->state, &u);
}

static void up_on_head(void *arg, const mf_http_head_t *head);
static void up_on_data(void *arg, const char *data, size_t len);
static void up_on_end(void *arg);
static void up_on_error(void *arg, mf_uperr_t kind, const char *msg);

static const mf_upcall_cbs_t up_cbs = {
    .on_head = up_on_head,
    .on_data = up_on_data,
    .on_end = up_on_end,
    .on_error = up_on_error,
};

static int attempt_retry(mf_req_t *r, const outcome_t *o);
static void account_upstream_time(mf_req_t *r);
static void outcome_error(outcome_t *o, mf_uperr_t kind);

/* A stream's first event did not come within the route's ttft_timeout. */
static void
attempt_ttft_timeout(evutil_socket_t fd, short what, void *arg)
{
    mf_req_t *r = arg;
    outcome_t o;
    char text[256];

    MF_UNUSED(fd);
    MF_UNUSED(what);
    if (r->head_sent || r->finished || !r->attempt_open) {
        return;
    }
    if (r->call != NULL) {
        mf_upcall_cancel(r->call);
        r->call = NULL;
    }
    account_upstream_time(r);
    outcome_error(&o, MF_UPERR_TIMEOUT);
    snprintf(o.what, sizeof(o.what), "ttft_timeout");
    attempt_close(r, &o, -1);
    r->in_step++; /* keep r alive through the retry */
    if (!attempt_retry(r, &o)) {
        snprintf(text, sizeof(text),
                 "provider '%s' sent no first token within %.0f ms",
                 r->prov->conf->name, r->route->ttft_timeout_ms);
        mf_req_respond_error(r, 504, "upstream_error", "upstream_timeout",
                             text);
        req_finish(r);
    }
    if (--r->in_step == 0 && r->finished) {
        req_free(r);
    }
}

/* 1 when url has no byte that would change the request line: a space, a
 * control (CR, LF, NUL) or a byte past ASCII. A provider percent-encodes
 * what it puts into a path (pu_path_segment); this holds every plugin. */
static int
url_ok(mf_str_t url)
{
    size_t i;

    for (i = 0; i < url.len; i++) {
        unsigned char ch = (unsigned char)url.data[i];

        if (ch <= 0x20 || ch >= 0x7f) {
            return 0;
        }
    }
    return 1;
}

static void
attempt_start(mf_req_t *r)
{
    mf_limits_t *lim = &r->gen->config->limits;
    mf_provider_conf_t *pc = r->prov->conf;
    mf_upcall_opts_t opts;
    char path[4096], msg[512];
    mf_url_t url;
    mf_buf_t b = {0};

    if (!url_ok(r->up_url) || mf_url_parse(r->up_url.data, r->up_url.len, &url,
                                           path, sizeof(path)) != MF_OK) {
        snprintf(msg, sizeof(msg), "provider '%s' has an unusable URL",
                 pc->name);
        mf_req_respond_error(r, 502, "upstream_error", NULL, msg);
        req_finish(r);
        return;
    }
    build_upstream_head(r, &b, &url);
    mf_buf_append(&b, r->up_body.data, r->up_body.len);
    opts.connect_timeout_ms = pc->connect_timeout_ms > 0
                                  ? pc->connect_timeout_ms
                                  : lim->upstream_connect_timeout_ms;
    opts.first_byte_timeout_ms =
        pc->timeout_ms > 0 ? pc->timeout_ms : lim->upstream_timeout_ms;
    opts.idle_timeout_ms =
        r->stream ? lim->stream_idle_timeout_ms : opts.first_byte_timeout_ms;
    opts.tls_verify = pc->tls_verify;
    opts.max_header = lim->max_header;
    if (r->route != NULL && r->route->attempt_timeout_ms > 0) {
        opts.first_byte_timeout_ms = r->route->attempt_timeout_ms;
        if (!r->stream) {
            opts.idle_timeout_ms = r->route->attempt_timeout_ms;
        }
    }
    /* a whole answer is due within the timeout; a stream's deadline is
     * per complete event (on_sse_event), however the bytes trickle */
    opts.total_timeout_ms = r->stream ? 0 : opts.first_byte_timeout_ms;
    opts.idle_by_progress = r->stream;
    r->attempts++;
    r->up_start = mf_now_ms();
    r->att_start = r->up_start;
    r->sse_active = 0;
    r->saw_done = 0;
    r->done_sent = 0;
    r->held = 0;
    r->anth = NULL; /* pool memory: an Anthropic stream starts afresh */
    r->events_seen = 0;
    r->usage_final = 0;
    r->delivered_text = 0;
    r->chunk_out.len = 0;
    mf_buf_reset(&r->up_buf);
    r->call_paused = 0;
    if (r->stream && r->route != NULL && r->route->ttft_timeout_ms > 0) {
        double ms = r->route->ttft_timeout_ms;
        struct timeval tv = {(time_t)(ms / 1000),
                             (suseconds_t)(fmod(ms, 1000) * 1000)};

        if (r->attempt_timer == NULL) {
            r->attempt_timer =
                evtimer_new(r->worker->base, attempt_ttft_timeout, r);
        }
        evtimer_add(r->attempt_timer, &tv);
    }
    r->call =
        mf_upstream_call(r->worker, &url, &opts, b.data, b.len, &up_cbs, r);
    mf_buf_free(&b);
    mf_upcall_start(r->call);
}

#define MF_RETRY_DEFAULT                                                       \
    (MF_RETRY_5XX | MF_RETRY_429 | MF_RETRY_TIMEOUT | MF_RETRY_CONNECT |       \
     MF_RETRY_AUTH)

/*
 * After a failed attempt (already closed): tries again when nothing was
 * sent to the client, the route retries this kind of failure and its
 * budget allows: another key of the same target for a key's failure
 * (401/403, 429), else the next target, else another key of the last
 * one. Returns 1 when the request went on.
 */
static int
attempt_retry(mf_req_t *r, const outcome_t *o)
{
    unsigned on = r->route ? r->route->retry_on : MF_RETRY_DEFAULT;
    int budget = r->route ? r->route->retries : -1;
    size_t cur = r->target_idx;

    if (r->head_sent || r->conn == NULL || o->kind == 0 || !(on & o->kind) ||
        (budget >= 0 && r->attempts >= 1 + budget)) {
        return 0;
    }
    if (!((o->kind & (MF_RETRY_AUTH | MF_RETRY_429)) &&
          attempt_select(r, cur, cur + 1, 0)) &&
        !attempt_select(r, cur + 1, r->ntargets, 0) &&
        !attempt_select(r, cur, cur + 1, 0) &&
        !attempt_select(r, cur + 1, r->ntargets, 1)) {
        return 0;
    }
    if (attempt_prepare(r) != MF_OK) {
        return 1;
    }
    req_step(r);
    return 1;
}

/*
 * How long the upstream asked to wait, in ms of whole seconds (0 = it did
 * not say): its Retry-After header (mf_http_retry_after: seconds or an
 * HTTP date; nan, inf or garbage count as absent), else the provider's
 * hint from the body (err->retry_after), at most limits.max_retry_after.
 * A 429 rests its key this long and the client is told the same.
 */
static double
retry_after_ms(mf_req_t *r, const mf_error_t *err)
{
    double cap = r->gen->config->limits.max_retry_after_ms / 1000, secs;
    mf_str_t ra;

    if (mf_hlist_get(&r->up_resp_headers, MF_STR("retry-after"), &ra) ==
            MF_OK &&
        mf_http_retry_after(ra, mf_wall_time(), cap, &secs) == MF_OK) {
        /* the header's word */
    } else if (err != NULL && err->retry_after > 0) {
        secs = fmin(err->retry_after, cap);
    } else {
        return 0;
    }
    return fmax(1, ceil(secs)) * 1000;
}

/* The outcome of an upstream answer with a status. */
static void
outcome_status(mf_req_t *r, int st, outcome_t *o, const mf_error_t *err)
{
    const char *code = err && err->code ? err->code : "";

    memset(o, 0, sizeof(*o));
    snprintf(o->what, sizeof(o->what), "%d", st);
    if (st == 401 || st == 403) {
        o->kind = MF_RETRY_AUTH;
        o->keyres = MF_KEYRES_AUTH;
    } else if (st == 429) {
        o->kind = MF_RETRY_429;
        o->keyres = MF_KEYRES_RATE;
        o->retry_after_ms = retry_after_ms(r, err);
    } else if (st >= 500) {
        o->kind = MF_RETRY_5XX;
        o->keyres = MF_KEYRES_FAIL;
        o->breaker_fail = 1;
    } else if (strstr(code, "context_length") != NULL) {
        o->kind = MF_RETRY_CONTEXT;
        o->keyres = MF_KEYRES_NEUTRAL;
    } else if (strstr(code, "content_filter") != NULL ||
               strstr(code, "content_policy") != NULL) {
        o->kind = MF_RETRY_FILTER;
        o->keyres = MF_KEYRES_NEUTRAL;
    } else {
        o->kind = MF_RETRY_4XX;
        o->keyres = MF_KEYRES_NEUTRAL;
    }
}

static void
outcome_error(outcome_t *o, mf_uperr_t kind)
{
    memset(o, 0, sizeof(*o));
    o->keyres = MF_KEYRES_FAIL;
    o->breaker_fail = 1;
    switch (kind) {
    case MF_UPERR_TIMEOUT:
        o->kind = MF_RETRY_TIMEOUT;
        snprintf(o->what, sizeof(o->what), "timeout");
        break;
    case MF_UPERR_CONNECT:
        o->kind = MF_RETRY_CONNECT;
        snprintf(o->what, sizeof(o->what), "connect");
        break;
    default:
        o->kind = MF_RETRY_5XX;
        snprintf(o->what, sizeof(o->what), "cut");
        break;
    }
}

static void
account_upstream_time(mf_req_t *r)
{
    if (r->up_start > 0) {
        r->upstream_ms += mf_now_ms() - r->up_start;
        r->up_start = 0;
    }
}

/* Bytes of text in a message's content: a string, or the "text" of its
 * parts. */
static uint64_t
content_text_len(const json_t *content)
{
    const json_t *part;
    uint64_t n = 0;
    size_t i;

    if (json_is_string(content)) {
        return json_string_length(content);
    }
    json_array_foreach(content, i, part)
    {
        n += json_string_length(json_object_get(part, "text"));
    }
    return n;
}

/* Bytes of text the prompt carries, without the JSON around it: message
 * contents, tool call arguments, an embeddings input. */
static uint64_t
prompt_text_len(const json_t *body)
{
    const json_t *m, *tc, *in = json_object_get(body, "input");
    uint64_t n = 0;
    size_t i, j;

    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        n += content_text_len(json_object_get(m, "content"));
        json_array_foreach(json_object_get(m, "tool_calls"), j, tc)
        {
            n += json_string_length(
                json_object_get(json_object_get(tc, "function"), "arguments"));
        }
    }
    if (json_is_string(in)) {
        n += json_string_length(in);
    }
    json_array_foreach(in, i, m)
    {
        n += json_string_length(m);
    }
    return n;
}

/*
 * Estimates usage the upstream did not report as final: none at all, or
 * a stream that did not reach the provider's last usage report (cut,
 * timed out, client gone; an Anthropic message_start carries only a
 * placeholder). Only when a request reached an upstream: with none
 * (every attempt failed to connect), tokens stay unknown. The prompt is
 * the provider's count when it gave one, else about 4 bytes of prompt
 * text a token; the completion is about 4 bytes of delivered answer text
 * a token. Marked estimated.
 */
static void
estimate_usage(mf_req_t *r)
{
    int known = r->have_usage && r->usage.prompt_tokens >= 0;

    if (!r->reached || (r->have_usage && (!r->stream || r->usage_final))) {
        return;
    }
    if (!known) {
        r->usage.prompt_tokens = (int64_t)((prompt_text_len(r->json) + 3) / 4);
        r->usage.cached_tokens = -1;
    } else if (!r->have_usage) {
        r->usage.cached_tokens = -1;
    }
    r->usage.completion_tokens = (int64_t)((r->delivered_text + 3) / 4);
    r->usage.total_tokens = r->usage.prompt_tokens + r->usage.completion_tokens;
    r->usage.reasoning_tokens = -1;
    r->usage.estimated = 1;
    r->have_usage = 1;
}

/*
 * Bytes of answer text in an OpenAI chat chunk: the string values of
 * "content", "reasoning_content" and "arguments", found without parsing
 * (an escape counts once). Used to estimate a cut stream's completion.
 */
static uint64_t
chunk_text_len(mf_str_t d)
{
    static const char *const keys[] = {"content\":", "arguments\":"};
    const char *end = d.data + d.len;
    uint64_t n = 0;
    size_t k;

    for (k = 0; k < 2; k++) {
        const char *p = d.data;
        size_t kl = strlen(keys[k]);

        while (p < end && (p = memmem(p, (size_t)(end - p), keys[k], kl))) {
            p += kl;
            while (p < end && *p == ' ') {
                p++;
            }
            if (p == end || *p != '"') {
                continue;
            }
            for (p++; p < end && *p != '"'; p++, n++) {
                if (*p == '\\' && p + 1 < end) {
                    p++;
                }
            }
        }
    }
    return n;
}

static void
up_on_head(void *arg, const mf_http_head_t *head)
{
    mf_req_t *r = arg;
    size_t i;

    r->reached = 1;
    r->up_status = head->status;
    for (i = 0; i < head->nheaders; i++) {
        mf_hlist_set(r->pool, &r->up_resp_headers, head->headers[i].name,
                     head->headers[i].value);
    }
    if (head->status >= 200 && head->status < 300) {
        r->up_buf.limit = r->gen->config->limits.max_response;
    } else {
        r->up_buf.limit = MF_ERROR_BODY_MAX;
    }
    if (r->stream && head->status >= 200 && head->status < 300) {
        const char *fr = r->prov->ops->stream_framing;

        mf_sse_parser_free(&r->sse);
        mf_evstream_free(&r->evs);
        mf_sse_parser_init(&r->sse, r->gen->config->limits.max_sse_event);
        mf_evstream_free(&r->evs);
        mf_evstream_init(&r->evs, r->gen->config->limits.max_sse_event);
        r->evs_framing = fr != NULL && strcmp(fr, "aws-eventstream") == 0;
        r->sse_active = 1;
        r->phase = MF_PHASE_UPSTREAM_RESPONSE;
        r->stage_idx = 0;
        req_step(r);
    }
}

void
mf_req_emit_event(mf_req_t *r, mf_str_t data, int last)
{
    mf_stage_t was = r->cur_stage;
    int rc;

    if (r->body_failed) {
        return; /* nothing more goes out; the caller ends the stream */
    }
    r->replaced = 0;
    rc = mf_pipeline_body(r, data, last);
    r->cur_stage = was;
    if (rc != MF_OK) {
        r->body_failed = 1; /* fail closed: this event is withheld */
        return;
    }
    if (r->replaced) {
        data = r->replace;
    }
    if (last) {
        r->done_sent = 1;
    }
    if (data.len == 0) {
        return; /* a stage dropped the event */
    }
    r->delivered_text += chunk_text_len(data);
    if (r->proto == MF_PROTO_ANTHROPIC) {
        if (r->anth == NULL) {
            r->anth = mf_pool_alloc(r->pool, sizeof(*r->anth));
            if (r->anth == NULL) {
                return;
            }
            mf_anthropic_stream_init(r->anth, r->model_asked);
        }
        mf_anthropic_stream_event(r->anth, data, last, &r->usage,
                                  &r->chunk_out);
        return;
    }
    mf_buf_append(&r->chunk_out, "data: ", 6);
    mf_buf_append(&r->chunk_out, data.data, data.len);
    mf_buf_append(&r->chunk_out, "\n\n", 2);
}

static int
on_sse_event(void *arg, const mf_sse_event_t *ev)
{
    mf_req_t *r = arg;
    size_t before;
    int flags;

    if (ev->raw.len > 0 && ev->raw.data[0] != '\n' && ev->raw.data[0] != '\r') {
        /* a complete event or comment (not a stray blank line): the
         * stream is alive */
        mf_upcall_progress(r->call);
    }
    if (ev->data.len == 0 && ev->event.len == 0) {
        /* comment or keep-alive: passed through once the response began */
        if (r->passthrough && r->head_sent) {
            mf_buf_append(&r->chunk_out, ev->raw.data, ev->raw.len);
        }
        return MF_OK;
    }
    r->cur_stage = MF_STAGE_PROVIDER;
    before = r->chunk_out.len;
    flags = r->prov->ops->parse_stream_event(r, r->prov->state, ev,
                                             !r->passthrough);
    if (flags < 0 || r->prov_err != NULL || r->body_failed) {
        return MF_ERR; /* up_on_data tells which */
    }
    if (flags & (MF_EVENT_DONE | MF_EVENT_USAGE_ONLY)) {
        /* the provider's last usage report (or its end): usage is final */
        r->usage_final = 1;
    }
    if (!r->head_sent && r->chunk_out.len > before) {
        /* only a preamble so far: held, the attempt can still fail over */
        r->held = (flags & MF_EVENT_PREAMBLE) && (before == 0 || r->held);
    }
    if (flags & MF_EVENT_DONE) {
        r->saw_done = 1;
    } else if (!(flags & MF_EVENT_USAGE_ONLY)) {
        r->events_seen++;
    }
    if (!r->passthrough) {
        /* the provider emitted canonical chunks; the end is ours to say */
        if ((flags & MF_EVENT_DONE) && !r->done_sent) {
            mf_req_emit_event(r, MF_STR("[DONE]"), 1);
        }
        return r->body_failed ? MF_ERR : MF_OK;
    }
    if ((flags & MF_EVENT_USAGE_ONLY) && !r->client_wants_usage) {
        return MF_OK;
    }
    r->delivered_text += chunk_text_len(ev->data);
    return mf_buf_append(&r->chunk_out, ev->raw.data, ev->raw.len);
}

/* Sends what the events produced as one chunk; applies backpressure. */
static void
flush_stream(mf_req_t *r)
{
    if (!r->head_sent) {
        if (r->chunk_out.len == 0 || r->phase != MF_PHASE_BODY || r->held) {
            return; /* nothing to commit to yet: a failure can still retry */
        }
        start_stream_response(r);
        attempt_close(r, &outcome_ok, mf_now_ms() - r->att_start);
    }
    if (r->chunk_out.len > 0) {
        send_chunk(r, r->chunk_out.data, r->chunk_out.len);
        r->chunk_out.len = 0;
    }
    if (r->conn != NULL && r->call != NULL &&
        evbuffer_get_length(out(r)) > MF_STREAM_HIGH_WATER) {
        call_pause(r, 1);
        mf_conn_watch_drain(r->conn, MF_STREAM_HIGH_WATER / 4);
    }
}

void
mf_req_drained(mf_req_t *r)
{
    mf_conn_watch_drain(r->conn, 0);
    if (r->phase == MF_PHASE_BODY) {
        call_pause(r, 0);
    }
}

/* Masks the attempt's secrets in an upstream error message (a string,
 * edited in place): its key, the credentials the provider sent (a Vertex
 * token, an Azure api-key ...), its provider's keys and key-shaped text
 * (mf_keypool_scrub). Every upstream error passes here before the
 * client, the access log or a metric sees it. */
static void
scrub_error(mf_req_t *r, char *message)
{
    static const char *const creds[] = {"authorization", "x-api-key", "api-key",
                                        "x-goog-api-key", NULL};
    mf_str_t secrets[8];
    size_t n = 0, i;

    if (r->up_key.len > 0) {
        secrets[n++] = r->up_key;
    }
    for (i = 0; creds[i] != NULL; i++) {
        mf_str_t v;

        if (mf_hlist_get(&r->up_req_headers, mf_str_from(creds[i]), &v) !=
            MF_OK) {
            continue;
        }
        if (v.len > 7 && strncasecmp(v.data, "Bearer ", 7) == 0) {
            v.data += 7;
            v.len -= 7;
        }
        secrets[n++] = v;
    }
    mf_keypool_scrub(r->prov, secrets, n, message);
}

/* The provider failed a 2xx stream (api->set_error): before anything
 * reached the client (the head goes with the first flush) the attempt
 * fails over; after, an error event ends the stream. */
static void
stream_failed(mf_req_t *r, const mf_error_t *err)
{
    char message[sizeof(err->message)];

    if (!r->head_sent) {
        /* chunks not flushed yet: the client saw nothing */
        r->sse_active = 0;
        attempt_fail(r, err, err->status);
        return;
    }
    flush_stream(r);
    memcpy(message, err->message, sizeof(message));
    message[sizeof(message) - 1] = '\0';
    scrub_error(r, message);
    send_stream_error(r, err->code ? err->code : "upstream_error", message);
    finish_stream(r);
    req_finish(r);
}

#define BODY_STAGE_FAILED                                                      \
    "a gateway stage failed on the response, which is withheld; see the "      \
    "gateway log"

/* An on_response_body stage failed: what it did not pass is never sent
 * (it may be a redaction). Before the head, a 500 and nothing of the
 * upstream's answer; after it, an error event ends the stream. */
static void
body_stage_failed(mf_req_t *r)
{
    if (r->call != NULL) {
        mf_upcall_cancel(r->call);
        r->call = NULL;
    }
    account_upstream_time(r);
    if (!r->head_sent) {
        r->chunk_out.len = 0;
        attempt_close(r, &outcome_ok, mf_now_ms() - r->att_start);
        mf_req_respond_error(r, 500, "server_error", "stage_failed",
                             BODY_STAGE_FAILED);
        req_finish(r);
        return;
    }
    flush_stream(r);
    send_stream_error(r, "stage_failed", BODY_STAGE_FAILED);
    finish_stream(r);
    req_finish(r);
}

#define BAD_STREAM                                                             \
    "the upstream sent a stream event that could not be read (malformed or "   \
    "larger than limits.max_sse_event)"

static void
up_on_data(void *arg, const char *data, size_t len)
{
    mf_req_t *r = arg;

    if (!r->sse_active) {
        if (mf_buf_append(&r->up_buf, data, len) != MF_OK) {
            mf_upcall_cancel(r->call);
            r->call = NULL;
            account_upstream_time(r);
            mf_req_respond_error(r, 502, "upstream_error", NULL,
                                 "the upstream response is larger than "
                                 "limits.max_response");
            req_finish(r);
        }
        return;
    }
    if ((r->evs_framing ? mf_evstream_feed(&r->evs, data, len, on_sse_event, r)
                        : mf_sse_parser_feed(&r->sse, data, len, on_sse_event,
                                             r)) != MF_OK) {
        if (r->body_failed) {
            body_stage_failed(r);
            return;
        }
        mf_upcall_cancel(r->call);
        r->call = NULL;
        account_upstream_time(r);
        if (r->prov_err != NULL) {
            stream_failed(r, r->prov_err);
            return;
        }
        if (!r->head_sent) {
            /* nothing reached the client: a failed attempt, as a bad body */
            outcome_t o;

            r->sse_active = 0;
            outcome_error(&o, MF_UPERR_PROTOCOL);
            snprintf(o.what, sizeof(o.what), "bad_stream");
            attempt_close(r, &o, -1);
            if (attempt_retry(r, &o)) {
                return;
            }
            mf_req_respond_error(r, 502, "upstream_error",
                                 "upstream_bad_stream", BAD_STREAM);
            req_finish(r);
            return;
        }
        flush_stream(r);
        send_stream_error(r, "upstream_bad_stream", BAD_STREAM);
        finish_stream(r);
        req_finish(r);
        return;
    }
    if (r->phase == MF_PHASE_BODY) {
        flush_stream(r);
    }
}

/* A complete 2xx non-stream body: usage, stages, answer. */
static void
complete_nonstream(mf_req_t *r)
{
    mf_str_t body = {r->up_buf.data ? r->up_buf.data : "", r->up_buf.len};
    char *text = NULL;

    int body_stages = (r->gen->hooks & MF_HOOK(MF_STAGE_RESPONSE_BODY)) != 0;

    attempt_close(r, &outcome_ok, mf_now_ms() - r->att_start);
    /* the canonical answer as text, for the body stages or the client;
     * an Anthropic client with no body stage takes the value directly */
    if (r->resp_json != NULL &&
        (body_stages || r->proto != MF_PROTO_ANTHROPIC)) {
        text = json_dumps(r->resp_json, JSON_COMPACT);
        body = mf_str_from(text);
    }
    r->replaced = 0;
    if (mf_pipeline_body(r, body, 1) != MF_OK) {
        /* fail closed: not a byte of the unfiltered answer goes out */
        free(text);
        mf_req_respond_error(r, 500, "server_error", "stage_failed",
                             BODY_STAGE_FAILED);
        req_finish(r);
        return;
    }
    if (r->replaced) {
        body = r->replace;
    }
    if (r->proto == MF_PROTO_ANTHROPIC) {
        json_t *c = text == NULL && r->resp_json != NULL && !r->replaced
                        ? json_incref(r->resp_json)
                        : json_loadb(body.data, body.len, 0, NULL);
        json_t *m = c ? mf_anthropic_response(c, &r->usage) : NULL;
        char *mt = m ? json_dumps(m, JSON_COMPACT) : NULL;

        json_decref(c);
        json_decref(m);
        if (mt == NULL) {
            mf_req_respond_error(r, 502, "api_error", NULL,
                                 "the upstream answer could not be "
                                 "translated to a message");
        } else {
            mf_req_respond(r, r->up_status, "application/json",
                           mf_str_from(mt));
        }
        free(mt);
        free(text);
        req_finish(r);
        return;
    }
    mf_req_respond(r, r->up_status, "application/json", body);
    free(text);
    req_finish(r);
}

/* The attempt failed with err: the next target when the route's
 * retry_on allows, else err to the client. */
static void
attempt_fail(mf_req_t *r, const mf_error_t *up_err, int status)
{
    mf_error_t scrubbed = *up_err;
    const mf_error_t *err = &scrubbed;
    outcome_t o;
    double ra_ms;
    char num[16];

    scrub_error(r, scrubbed.message);
    outcome_status(r, status, &o, err);
    if (status != r->up_status) {
        /* a 2xx the provider refused (safety block) or no upstream call */
        snprintf(o.what, sizeof(o.what), "%s", err->code ? err->code : "error");
    }
    attempt_close(r, &o, -1);
    if (attempt_retry(r, &o)) {
        return;
    }
    /* the client waits as long as the key rests */
    ra_ms = o.retry_after_ms > 0 ? o.retry_after_ms : retry_after_ms(r, err);
    if (ra_ms > 0) {
        snprintf(num, sizeof(num), "%.0f", ra_ms / 1000);
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("retry-after"),
                     mf_str_from(num));
    }
    mf_req_respond_error(r, err->status,
                         err->type ? err->type : "upstream_error", err->code,
                         err->message);
    req_finish(r);
}

static void
complete_error(mf_req_t *r)
{
    mf_error_t err;
    mf_str_t body = {r->up_buf.data ? r->up_buf.data : "", r->up_buf.len};

    memset(&err, 0, sizeof(err));
    r->cur_stage = MF_STAGE_PROVIDER;
    if (r->prov->ops->parse_error(r, r->prov->state, r->up_status, body,
                                  &err) != MF_OK ||
        err.status == 0) {
        err.status = 502;
        err.type = "upstream_error";
        snprintf(err.message, sizeof(err.message), "provider '%s' answered %d",
                 r->prov->conf->name, r->up_status);
    }
    attempt_fail(r, &err, r->up_status); /* the upstream's status counts */
}

static void
up_on_end(void *arg)
{
    mf_req_t *r = arg;

    r->call = NULL;
    account_upstream_time(r);
    if (r->sse_active) {
        if (!r->head_sent && (r->chunk_out.len == 0 || r->held) &&
            !r->saw_done) {
            /* ended before its first event: as good as refused */
            outcome_t o;

            outcome_error(&o, MF_UPERR_CLOSED);
            attempt_close(r, &o, -1);
            if (attempt_retry(r, &o)) {
                return;
            }
            mf_req_respond_error(r, 502, "upstream_error",
                                 "upstream_stream_cut",
                                 "the upstream ended the stream before its "
                                 "first event");
            req_finish(r);
            return;
        }
        r->phase = MF_PHASE_BODY; /* no stage is paused at the end */
        if ((r->evs_framing ? mf_evstream_pending(&r->evs)
                            : mf_sse_parser_pending(&r->sse)) > 0 &&
            !r->saw_done) {
            flush_stream(r);
            send_stream_error(r, "upstream_stream_cut",
                              "the upstream ended the stream in the middle "
                              "of an event");
        } else if (!r->passthrough && !r->done_sent) {
            mf_req_emit_event(r, MF_STR("[DONE]"), 1);
        }
        if (r->body_failed) {
            body_stage_failed(r);
            return;
        }
        flush_stream(r);
        finish_stream(r);
        req_finish(r);
        return;
    }
    if (r->up_status < 200 || r->up_status >= 300) {
        complete_error(r);
        return;
    }
    r->cur_stage = MF_STAGE_PROVIDER;
    if (r->prov->ops->parse_response(
            r, r->prov->state,
            (mf_str_t){r->up_buf.data ? r->up_buf.data : "", r->up_buf.len},
            !r->passthrough) != MF_OK) {
        outcome_t o;

        outcome_error(&o, MF_UPERR_PROTOCOL);
        snprintf(o.what, sizeof(o.what), "bad_body");
        attempt_close(r, &o, -1);
        if (attempt_retry(r, &o)) {
            return;
        }
        mf_req_respond_error(r, 502, "upstream_error", "upstream_bad_response",
                             "the upstream answered with a body that could "
                             "not be read");
        req_finish(r);
        return;
    }
    if (r->prov_err != NULL) {
        attempt_fail(r, r->prov_err, r->prov_err->status);
        return;
    }
    r->phase = MF_PHASE_UPSTREAM_RESPONSE;
    r->stage_idx = 0;
    req_step(r);
}

static void
up_on_error(void *arg, mf_uperr_t kind, const char *msg)
{
    mf_req_t *r = arg;
    char text[768];

    if (kind != MF_UPERR_CONNECT && mf_upcall_connected(r->call)) {
        r->reached = 1; /* the request went out: it may be billed */
    }
    r->call = NULL;
    account_upstream_time(r);
    mf_log_warn("request %.*s: provider '%s': %s", (int)r->id.len, r->id.data,
                r->prov->conf->name, msg);
    if (r->head_sent) {
        /* mid-stream: an error event, then the end */
        flush_stream(r);
        snprintf(text, sizeof(text),
                 "the upstream stream of provider '%s' "
                 "was cut: %s",
                 r->prov->conf->name, msg);
        send_stream_error(r,
                          kind == MF_UPERR_TIMEOUT ? "upstream_timeout"
                                                   : "upstream_stream_cut",
                          text);
        finish_stream(r);
        req_finish(r);
        return;
    }
    {
        outcome_t o;

        outcome_error(&o, kind);
        attempt_close(r, &o, -1);
        if (attempt_retry(r, &o)) {
            return;
        }
    }
    snprintf(text, sizeof(text), "provider '%s' %s: %s", r->prov->conf->name,
             kind == MF_UPERR_TIMEOUT ? "timed out" : "failed", msg);
    if (kind == MF_UPERR_TIMEOUT) {
        mf_req_respond_error(r, 504, "upstream_error", "upstream_timeout",
                             text);
    } else {
        mf_req_respond_error(r, 502, "upstream_error",
                             kind == MF_UPERR_CONNECT ? "upstream_unreachable"
                                                      : "upstream_error",
                             text);
    }
    req_finish(r);
}

/* Lifecycle */

static void
cancel_asyncs(mf_req_t *r)
{
    while (r->asyncs != NULL) {
        mf_async_t *a = r->asyncs;

        mf_req_async_remove(r, a);
        a->cancel(a);
    }
}

/* Frees a finished request, unless its answer is still leaving: then
 * mf_req_delivered or mf_req_client_gone frees it. */
static void
req_free(mf_req_t *r)
{
    mf_worker_t *w = r->worker;

    if (r->delivering) {
        return;
    }
    if (r->timer) {
        event_free(r->timer);
    }
    if (r->attempt_timer) {
        event_free(r->attempt_timer);
    }
    mf_buf_free(&r->tried);
    json_decref(r->json);
    json_decref(r->resp_json);
    mf_buf_free(&r->up_buf);
    mf_buf_free(&r->chunk_out);
    mf_sse_parser_free(&r->sse);
    mf_evstream_free(&r->evs);
    free((char *)r->body.data);
    mf_gen_release(r->gen);
    mf_pool_destroy(r->pool);
    atomic_fetch_sub(&w->in_flight, 1);
}

static void
req_finish(mf_req_t *r)
{
    mf_conn_t *c = r->conn;

    if (r->finished) {
        return;
    }
    r->finished = 1;
    r->phase = MF_PHASE_FINISHED;
    if (r->call != NULL) {
        if (mf_upcall_connected(r->call)) {
            r->reached = 1;
        }
        mf_upcall_cancel(r->call);
        r->call = NULL;
        account_upstream_time(r);
    }
    if (r->timer) {
        evtimer_del(r->timer);
    }
    if (r->attempt_open) {
        static const outcome_t gone = {0x80000000u, MF_KEYRES_NEUTRAL, 0, 0,
                                       "abandoned"};

        attempt_close(r, &gone, -1); /* no verdict on key or target */
    }
    cancel_asyncs(r);
    estimate_usage(r);
    if (c != NULL) {
        r->conn = NULL;
        if (mf_conn_req_done(c, !r->close_after)) {
            r->delivering = 1; /* logged once the answer has left */
            return;
        }
    }
    mf_pipeline_log_done(r);
    if (r->in_step == 0) {
        req_free(r);
    }
}

void
mf_req_delivered(mf_req_t *r)
{
    r->delivering = 0;
    mf_pipeline_log_done(r);
    if (r->in_step == 0) {
        req_free(r);
    }
}

void
mf_req_client_gone(mf_req_t *r, size_t undelivered, const char *why)
{
    r->conn = NULL;
    r->bytes_undelivered = undelivered;
    if (!r->head_sent) {
        r->status = 499;
    }
    if (r->error.len == 0 && undelivered > 0) {
        char msg[256];

        snprintf(msg, sizeof(msg),
                 "%s; %zu bytes of the answer were not delivered",
                 why ? why : "the client closed the connection", undelivered);
        r->error = mf_pool_str(r->pool, mf_str_from(msg));
    } else if (r->error.len == 0) {
        r->error = mf_str_from(why ? why : "the client closed the connection");
    }
    if (r->delivering) {
        mf_req_delivered(r);
        return;
    }
    req_finish(r);
}

static mf_str_t
make_id(mf_req_t *r, const mf_http_head_t *head)
{
    mf_str_t given;
    char buf[40];
    int n;

    if (mf_http_find_header(head, "x-request-id", &given) == MF_OK &&
        given.len > 0 && given.len <= 128) {
        size_t i;

        for (i = 0; i < given.len; i++) {
            char ch = given.data[i];

            if (ch < 0x21 || ch > 0x7e) {
                break;
            }
        }
        if (i == given.len) {
            return mf_pool_str(r->pool, given);
        }
    }
    n = snprintf(buf, sizeof(buf), "mf-%012llx%04x",
                 (unsigned long long)(mf_wall_time() * 1000) &
                     0xffffffffffffULL,
                 (unsigned)(r->worker->seq++ & 0xffff));
    return mf_pool_str(r->pool, (mf_str_t){buf, (size_t)n});
}

/* Refuses (400) a model name holding a control character (CR, LF, NUL,
 * ...): it would reach upstream URLs, headers and logs. MF_ERR when it
 * answered. */
static int
check_model(mf_req_t *r)
{
    size_t i;

    for (i = 0; i < r->model.len; i++) {
        unsigned char ch = (unsigned char)r->model.data[i];

        if (ch < 0x20 || ch == 0x7f) {
            mf_req_respond_error(r, 400, "invalid_request_error",
                                 "invalid_model",
                                 "The model name holds a control character "
                                 "(such as a line break); send the model's "
                                 "plain name.");
            return MF_ERR;
        }
    }
    return MF_OK;
}

/* The request path as logs show it: bytes outside printable ASCII (raw
 * invalid UTF-8, controls) percent-encoded, so that every log line stays
 * valid UTF-8; a path the gateway serves is left as it is. */
static mf_str_t
loggable_path(mf_pool_t *pool, mf_str_t path)
{
    static const char hexd[] = "0123456789ABCDEF";
    mf_buf_t b = {0};
    mf_str_t s;
    size_t i;

    for (i = 0; i < path.len; i++) {
        unsigned char ch = (unsigned char)path.data[i];

        if (ch <= 0x20 || ch >= 0x7f) {
            break;
        }
    }
    if (i == path.len) {
        return mf_pool_str(pool, path);
    }
    for (i = 0; i < path.len; i++) {
        unsigned char ch = (unsigned char)path.data[i];
        char esc[3] = {'%', hexd[ch >> 4], hexd[ch & 15]};

        if (ch <= 0x20 || ch >= 0x7f) {
            mf_buf_append(&b, esc, 3);
        } else {
            mf_buf_append(&b, (const char *)&path.data[i], 1);
        }
    }
    s.data = b.data;
    s.len = b.len;
    s = mf_pool_str(pool, s);
    mf_buf_free(&b);
    return s;
}

/* A request from its head and body (taken), tied to the connection, with
 * the CORS headers of an allowed origin; *preflight tells a preflight.
 * The client's x-manifold-* headers are dropped here, before any stage. */
static mf_req_t *
req_new(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
        const char *client_addr, char *body, size_t len, int *preflight)
{
    mf_pool_t *pool = mf_pool_create(8192);
    mf_req_t *r = mf_pool_alloc(pool, sizeof(*r));
    size_t i;

    memset(r, 0, sizeof(*r));
    r->pool = pool;
    r->worker = w;
    r->conn = c;
    r->start_ms = mf_now_ms();
    r->start_wall = mf_wall_time();
    r->gen = mf_gen_acquire();
    r->body.data = body;
    r->body.len = len;
    r->bytes_in = len;
    r->usage.prompt_tokens = r->usage.completion_tokens = -1;
    r->usage.total_tokens = r->usage.cached_tokens = -1;
    r->usage.reasoning_tokens = -1;
    r->key_idx = -1;
    atomic_fetch_add(&w->in_flight, 1);
    atomic_fetch_add(&w->requests, 1);
    r->ctx = mf_pool_alloc(pool, (r->gen->nstages + 1) * sizeof(void *));
    memset(r->ctx, 0, (r->gen->nstages + 1) * sizeof(void *));
    r->id = make_id(r, head);
    r->method = mf_pool_str(pool, head->method);
    r->http10 = head->minor == 0;
    r->path = loggable_path(pool, head->path);
    r->client_addr = mf_pool_str(pool, mf_str_from(client_addr));
    for (i = 0; i < head->nheaders; i++) {
        mf_str_t name = head->headers[i].name;

        /* x-manifold-* carry identity and control (the group canary rules
         * read, ...): stages set them, a client never does */
        if (name.len >= 11 && strncasecmp(name.data, "x-manifold-", 11) == 0) {
            continue;
        }
        mf_hlist_set(pool, &r->req_headers, name, head->headers[i].value);
    }
    mf_conn_set_req(c, r);
    *preflight = mf_guard_cors(r->gen->config, head, pool, &r->resp_headers);
    return r;
}

void
mf_req_refuse(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
              const char *client_addr, const mf_req_refusal_t *why)
{
    int preflight;
    mf_req_t *r = req_new(c, w, head, client_addr, NULL, 0, &preflight);

    if (mf_str_eq_cstr(r->path, "/v1/messages")) {
        r->proto = MF_PROTO_ANTHROPIC;
    }
    if (why->retry_after != NULL) {
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("retry-after"),
                     mf_str_from(why->retry_after));
    }
    mf_req_respond_error(r, why->status, why->type, why->code, why->message);
    req_finish(r);
}

void
mf_req_handle(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
              const char *client_addr, char *body, size_t len)
{
    int preflight;
    mf_req_t *r = req_new(c, w, head, client_addr, body, len, &preflight);

    if (preflight) {
        /* a CORS preflight from an allowed origin */
        mf_req_respond(r, 204, "text/plain", MF_STR_NULL);
        req_finish(r);
        return;
    }
    if (mf_str_eq_cstr(r->path, "/healthz")) {
        mf_req_respond(r, 200, "application/json",
                       MF_STR("{\"status\":\"ok\"}"));
        req_finish(r);
        return;
    }
    if (mf_str_eq_cstr(r->path, "/v1/models") ||
        mf_str_eq_cstr(r->path, "/models")) {
        if (!mf_str_eq_cstr(r->method, "GET")) {
            mf_hlist_set(r->pool, &r->resp_headers, MF_STR("allow"),
                         MF_STR("GET"));
            mf_req_respond_error(r, 405, "invalid_request_error", NULL,
                                 "Use GET for /v1/models.");
        } else {
            handle_models(r);
        }
        req_finish(r);
        return;
    }
    if (mf_str_eq_cstr(r->path, "/v1/chat/completions") ||
        mf_str_eq_cstr(r->path, "/chat/completions")) {
        r->endpoint = MF_ENDPOINT_CHAT;
    } else if (mf_str_eq_cstr(r->path, "/v1/messages")) {
        r->endpoint = MF_ENDPOINT_CHAT;
        r->proto = MF_PROTO_ANTHROPIC;
    } else if (mf_str_eq_cstr(r->path, "/v1/embeddings") ||
               mf_str_eq_cstr(r->path, "/embeddings")) {
        r->endpoint = MF_ENDPOINT_EMBEDDINGS;
    } else {
        char msg[512];

        snprintf(msg, sizeof(msg),
                 "Unknown request URL: %.*s %.*s. The "
                 "gateway serves POST /v1/chat/completions, POST "
                 "/v1/embeddings, GET /v1/models and GET /healthz.",
                 (int)r->method.len, r->method.data,
                 (int)(r->path.len > 200 ? 200 : r->path.len), r->path.data);
        mf_req_respond_error(r, 404, "invalid_request_error", "unknown_url",
                             msg);
        req_finish(r);
        return;
    }
    if (!mf_str_eq_cstr(r->method, "POST")) {
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("allow"),
                     MF_STR("POST"));
        mf_req_respond_error(r, 405, "invalid_request_error", NULL,
                             "Use POST for this endpoint.");
        req_finish(r);
        return;
    }
    if (parse_body(r) != MF_OK || check_model(r) != MF_OK) {
        req_finish(r);
        return;
    }
    r->phase = MF_PHASE_REQUEST;
    req_step(r);
}

void
mf_req_log_unserved(mf_worker_t *w, const mf_http_head_t *head,
                    const char *client_addr, int status, const char *why,
                    uint64_t bytes_in, double start_ms)
{
    static const mf_http_head_t none = {.content_length = -1};
    mf_gen_t *g = mf_gen_acquire();
    mf_pool_t *pool;
    mf_req_t *r;

    if (g == NULL) {
        return;
    }
    pool = mf_pool_create(2048);
    r = mf_pool_alloc(pool, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->pool = pool;
    r->worker = w;
    r->gen = g;
    r->start_ms = start_ms;
    r->start_wall = mf_wall_time() - (mf_now_ms() - start_ms) / 1000;
    r->usage.prompt_tokens = r->usage.completion_tokens = -1;
    r->usage.total_tokens = r->usage.cached_tokens = -1;
    r->usage.reasoning_tokens = -1;
    r->key_idx = -1;
    atomic_fetch_add(&w->in_flight, 1);
    r->ctx = mf_pool_alloc(pool, (g->nstages + 1) * sizeof(void *));
    memset(r->ctx, 0, (g->nstages + 1) * sizeof(void *));
    r->id = make_id(r, head != NULL ? head : &none);
    if (head != NULL) {
        r->method = mf_pool_str(pool, head->method);
        r->path = mf_pool_str(pool, head->path);
    }
    r->client_addr = mf_pool_str(pool, mf_str_from(client_addr));
    r->status = status;
    r->error = mf_pool_str(pool, mf_str_from(why));
    r->bytes_in = bytes_in;
    r->finished = 1;
    r->phase = MF_PHASE_FINISHED;
    mf_pipeline_log_done(r);
    req_free(r);
}

/* The client connection's view of the request layer */

/* A window on the current generation (mf_gen_enter): no lock and no
 * reference on a worker; the connection holds it for a few lines. */
static const mf_config_t *
conn_config_acquire(void **hold)
{
    mf_gen_t *g = mf_gen_enter();

    *hold = NULL;
    return g != NULL ? g->config : NULL;
}

static void
conn_config_release(void *hold)
{
    MF_UNUSED(hold);
    mf_gen_leave();
}

const mf_conn_handlers_t mf_req_conn_handlers = {
    .handle = mf_req_handle,
    .refuse = mf_req_refuse,
    .client_gone = mf_req_client_gone,
    .delivered = mf_req_delivered,
    .log_unserved = mf_req_log_unserved,
    .drained = mf_req_drained,
    .config_acquire = conn_config_acquire,
    .config_release = conn_config_release,
};
