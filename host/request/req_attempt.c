/*
 * Upstream attempts: target and key selection, the provider's request,
 * the upstream call and its callbacks.
 */
#include <manifold/json.h>

#include "request/request-int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/upstream.h"
#include "pipeline/generation.h"
#include "proto/proto.h"
#include "routing/balancer.h"
#include "routing/keypool.h"

static void up_on_head(void *arg, const mf_http_head_t *head);
static void up_on_data(void *arg, const char *data, size_t len);
static void up_on_end(void *arg);
static void up_on_error(void *arg, mf_uperr_t kind, const char *msg);

#define MF_ERROR_BODY_MAX (1024 * 1024)

static void
build_upstream_head(mf_req_t *r, mf_buf_t *b, const mf_url_t *u)
{
    char num[24];
    size_t i, n, len, need;

    /* room for the head and the body taken once: no realloc and copy of
     * the head as it grows past the buffer's first sizes (the lines'
     * text and ": " "\r\n" per header, the port and length in 48) */
    need = 5 + strlen(u->path) + 17 + strlen(u->host) + 18 + 2 + 48 +
           r->att.up_body.len;
    for (i = 0; i < r->att.up_req_headers.n; i++) {
        need += r->att.up_req_headers.v[i].name.len +
                r->att.up_req_headers.v[i].value.len + 4;
    }
    if (b->cap < need) {
        char *p = realloc(b->data, need); /* else the appends grow it */

        if (p != NULL) {
            b->data = p;
            b->cap = need;
        }
    }
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
    for (len = r->att.up_body.len; n == sizeof(num) || len != 0; len /= 10) {
        num[--n] = (char)('0' + len % 10);
    }
    mf_buf_append(b, num + n, sizeof(num) - n);
    mf_buf_append(b, "\r\n", 2);
    for (i = 0; i < r->att.up_req_headers.n; i++) {
        mf_header_t *h = &r->att.up_req_headers.v[i];

        if (mf_str_caseeq(h->name, MF_STR("host")) ||
            mf_str_caseeq(h->name, MF_STR("content-length")) ||
            (h->value.data != r->att.tp_made &&
             !mf_http_header_ok(h->name, h->value))) {
            continue;
        }
        mf_buf_append(b, h->name.data, h->name.len);
        mf_buf_append(b, ": ", 2);
        mf_buf_append(b, h->value.data, h->value.len);
        mf_buf_append(b, "\r\n", 2);
    }
    mf_buf_append(b, "\r\n", 2);
}

const mf_outcome_t mf_outcome_ok = {.keyres = MF_KEYRES_OK, .what = "ok"};

/* Keeps what api->get_attempt tells of the attempt closing (at most
 * MF_ATTEMPT_RECS of them; a request tries a few). */
#define MF_ATTEMPT_RECS 64
static void
attempt_record(mf_req_t *r, const char *what)
{
    mf_attempt_rec_t *a;
    size_t n;

    if (r->nrecs == r->recs_cap) {
        size_t cap = r->recs_cap ? r->recs_cap * 2 : 4;
        mf_attempt_rec_t *v;

        if (cap > MF_ATTEMPT_RECS ||
            (v = mf_pool_alloc(r->pool, cap * sizeof(*v))) == NULL) {
            return;
        }
        if (r->nrecs > 0) {
            memcpy(v, r->recs, r->nrecs * sizeof(*v));
        }
        r->recs = v;
        r->recs_cap = cap;
    }
    a = &r->recs[r->nrecs++];
    a->provider = r->att.prov->conf->name;
    a->type = r->att.prov->conf->type;
    a->model = r->att.up_model;
    n = strlen(what);
    n = n < sizeof(a->outcome) ? n : sizeof(a->outcome) - 1;
    memcpy(a->outcome, what, n);
    a->outcome[n] = '\0';
    a->status = r->att.up_status;
    a->key_idx = r->att.key_idx;
    a->start = r->att.start;
    a->end = r->att.start <= 0   ? 0
             : r->att.end_ms > 0 ? r->att.end_ms
                                 : mf_now_ms();
    a->head = r->att.head_ms;
    memcpy(a->span_id, r->att.span_id, sizeof(a->span_id));
    a->server_host = r->att.server_host;
    a->server_port = r->att.server_port;
}

/* Ends the open attempt: key and target health, the tried list. */
void
mf_req_attempt_close(mf_req_t *r, const mf_outcome_t *o, double ttft_ms)
{
    if (!r->att.open) {
        return;
    }
    r->att.open = 0;
    if (r->attempt_timer != NULL) {
        evtimer_del(r->attempt_timer);
    }
    mf_keypool_end(r->att.prov, r->att.key_idx, r->att.up_model, o->keyres,
                   o->retry_after_ms, o->what);
    if (r->att.tgt != NULL) {
        mf_balancer_end(r->att.tgt, r->route, o->kind == 0, o->breaker_fail,
                        ttft_ms);
    }
    mf_buf_printf(&r->tried, "%s%s/%.*s:%s", r->tried.len ? " " : "",
                  r->att.prov->conf->name, (int)r->att.up_model.len,
                  r->att.up_model.data, o->what);
    attempt_record(r, o->what);
}

/* Begins an attempt on target t with key k (-1 none): fresh attempt
 * state in one statement, the buffers it reuses emptied, key and target
 * counted (attempt_close is owed). The previous attempt is closed and its
 * upstream call is over. */
static void
attempt_begin(mf_req_t *r, const mf_rtarget_t *t, int k)
{
    mf_req_proto_stream_free(r);
    r->att = (mf_attempt_t){
        .prov = t->prov,
        .up_model = t->model,
        .key_idx = k,
        .tgt = t->tgt,
        .open = 1,
        .up_key = k >= 0 ? mf_str_from(t->prov->key_str[k]) : MF_STR(""),
        .passthrough = r->proto->canonical &&
                       strcmp(t->prov->ops->wire, "openai") == 0 &&
                       !(r->gen->hooks & MF_HOOK(MF_STAGE_RESPONSE_BODY)),
        .wire_canonical =
            r->proto->canonical && strcmp(t->prov->ops->wire, "openai") == 0,
        .wire_openai = strcmp(t->prov->ops->wire, "openai") == 0,
    };
    mf_rand_hex(r->att.span_id, 8);
    r->chunk_out.len = 0;
    if (r->rec_events.len > 0 && r->rec_watch != NULL) {
        r->rec_watch(r, r->rec_watch_arg, MF_STR_NULL, 1);
    }
    r->rec_events.len = 0; /* what a failed attempt held is not the answer */
    mf_buf_reset(&r->up_buf);
    mf_keypool_begin(t->prov, k);
    if (t->tgt != NULL) {
        mf_balancer_begin(t->tgt);
    }
}

/* Takes the first usable target from `from` to `to` (excluded): a key
 * that is not resting (or, as a last resort, a quarantined one) and a
 * breaker that lets it through. Opens the attempt's accounting. */
int
mf_req_attempt_select(mf_req_t *r, size_t from, size_t to, int last_resort)
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
        if (k >= 0 && k < 64) {
            r->keys_tried |= (uint64_t)1 << k;
        } else if (k < 0) {
            r->keys_tried |= 1;
        }
        attempt_begin(r, t, k);
        return 1;
    }
    return 0;
}

int
mf_req_attempt_first(mf_req_t *r)
{
    r->target_idx = 0;
    r->keys_tried = 0;
    if (mf_req_attempt_select(r, 0, r->ntargets, 0)) {
        return 1;
    }
    /* the last-resort pass counts the skipped targets afresh */
    r->skipped_rate = r->skipped_open = r->skipped_keys = 0;
    r->cool_ms = 0;
    return mf_req_attempt_select(r, 0, r->ntargets, 1);
}

/* No target could take the request at all. */
void
mf_req_respond_no_target(mf_req_t *r)
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
    u->key = r->att.up_key;
    u->endpoint = r->count_mode ? MF_ENDPOINT_COUNT_TOKENS : r->endpoint;
    u->stream = r->stream;
    u->want_usage = r->stream;
}

/* The client headers whose names start with prefix (a forward_headers
 * entry "x-goog-*"), but never a credential, hop-by-hop or gateway one. */
static void
forward_prefix(mf_req_t *r, const char *prefix, size_t plen)
{
    char name[128];
    size_t k;

    for (k = 0; k < r->req_headers.n; k++) {
        const mf_header_t *h = &r->req_headers.v[k];

        if (h->name.len < plen || h->name.len >= sizeof(name) ||
            strncasecmp(h->name.data, prefix, plen) != 0) {
            continue;
        }
        memcpy(name, h->name.data, h->name.len);
        name[h->name.len] = '\0';
        if (!mf_config_header_never_forwarded(name)) {
            mf_hlist_set(r->pool, &r->att.up_req_headers, h->name, h->value);
        }
    }
}

/* The client headers a provider takes (its forward_headers, else the
 * attempt's wire's beta header: anthropic-beta to the Anthropic Messages
 * API, Claude on Vertex AI included, OpenAI-Beta to OpenAI's), copied onto
 * the upstream request. */
static void
forward_headers(mf_req_t *r)
{
    static const char *const anthropic[] = {"anthropic-beta"};
    static const char *const openai[] = {"openai-beta"};
    const mf_provider_conf_t *pc = r->att.prov->conf;
    const char *const *names = NULL;
    mf_str_t wire = r->att.up_wire.len > 0 ? r->att.up_wire
                    : r->att.prov->ops->wire != NULL
                        ? mf_str_from(r->att.prov->ops->wire)
                        : MF_STR("");
    size_t i, n = 0;
    mf_str_t v;

    if (pc->has_forward) {
        names = (const char *const *)pc->forward_headers;
        n = pc->nforward;
    } else if (mf_str_eq_cstr(wire, "anthropic")) {
        names = anthropic;
        n = 1;
    } else if (wire.len >= 6 && memcmp(wire.data, "openai", 6) == 0) {
        /* OpenAI's chat and Responses wires */
        names = openai;
        n = 1;
    }
    for (i = 0; i < n; i++) {
        size_t len = strlen(names[i]);

        if (len > 0 && names[i][len - 1] == '*') {
            forward_prefix(r, names[i], len - 1);
        } else if (mf_hlist_get(&r->req_headers, mf_str_from(names[i]), &v) ==
                   MF_OK) {
            mf_hlist_set(r->pool, &r->att.up_req_headers, mf_str_from(names[i]),
                         v);
        }
    }
}

/* Prepares the attempt begun on target_idx (the provider's request) and
 * sets the phase that runs its stages. */
int
mf_req_attempt_prepare(mf_req_t *r)
{
    mf_rtarget_t *t = &r->targets[r->target_idx];
    mf_upstream_t u;
    char msg[512];
    int rc;

    upstream_of(r, t, &u);
    r->cur_stage = MF_STAGE_PROVIDER;
    rc = r->count_mode && r->att.prov->ops->parse_count == NULL
             ? MF_ERR
             : r->att.prov->ops->build_request(r, r->att.prov->state, &u);
    if (rc != MF_OK && r->count_mode && r->att.prov_err == NULL) {
        /* this provider (or model) has no counting endpoint */
        /* no verdict on key or target: no call went out */
        mf_outcome_t o = {.kind = 0x80000000u,
                          .keyres = MF_KEYRES_NEUTRAL,
                          .what = "estimated"};

        mf_req_attempt_close(r, &o, -1);
        mf_req_respond_count_estimate(r);
        mf_req_finish(r);
        return MF_ERR;
    }
    if (rc == MF_OK) {
        forward_headers(r);
    }
    if (rc != MF_OK && r->att.prov_err != NULL) {
        /* the provider refused the request itself (bad input for it) */
        mf_req_respond_error(r, r->att.prov_err->status, r->att.prov_err->type,
                             r->att.prov_err->code, r->att.prov_err->message);
        mf_req_finish(r);
        return MF_ERR;
    }
    if (rc != MF_OK || r->att.up_url.len == 0 || r->att.prov_err != NULL) {
        snprintf(msg, sizeof(msg),
                 "provider '%s' (%s) could not build the "
                 "upstream request",
                 t->prov->conf->name, t->prov->dso->desc->name);
        mf_req_respond_error(r, 500, "server_error", NULL, msg);
        mf_req_finish(r);
        return MF_ERR;
    }
    if (r->att.up_body.data == NULL) {
        if (r->body_dirty) {
            char *text = mf_json_dumps(mf_req_body_json(r), JSON_COMPACT);
            mf_str_t s = mf_str_from(text);

            r->att.up_body = mf_pool_str(r->pool, s);
            free(text);
        } else {
            r->att.up_body = r->body;
        }
    }
    r->phase =
        r->att.prov->ops->authorize ? MF_PHASE_AUTHORIZE : MF_PHASE_ATTEMPT;
    r->stage_idx = 0;
    return MF_OK;
}

/* The provider's authorize step (stage MF_STAGE_PROVIDER), the runner of
 * phase AUTHORIZE; runs once per attempt (stage_idx 0). */
mf_action_t
mf_req_run_authorize(mf_req_t *r, mf_stage_t stage)
{
    mf_upstream_t u;
    mf_rtarget_t *t = &r->targets[r->target_idx];

    if (r->stage_idx > 0) {
        return MF_CONTINUE; /* resumed */
    }
    upstream_of(r, t, &u);
    r->cur_stage = stage;
    return r->att.prov->ops->authorize(r, r->att.prov->state, &u);
}

static const mf_upcall_cbs_t up_cbs = {
    .on_head = up_on_head,
    .on_data = up_on_data,
    .on_end = up_on_end,
    .on_error = up_on_error,
};

/* A stream's first event did not come within the route's ttft_timeout. */
static void
attempt_ttft_timeout(evutil_socket_t fd, short what, void *arg)
{
    mf_req_t *r = arg;
    mf_outcome_t o;
    char text[256];

    MF_UNUSED(fd);
    MF_UNUSED(what);
    if (r->head_sent || r->finished || !r->att.open) {
        return;
    }
    if (r->att.call != NULL) {
        mf_upcall_cancel(r->att.call);
        r->att.call = NULL;
    }
    mf_req_account_upstream_time(r);
    mf_req_outcome_error(&o, MF_UPERR_TIMEOUT);
    snprintf(o.what, sizeof(o.what), "ttft_timeout");
    snprintf(text, sizeof(text),
             "provider '%s' sent no first token within %.0f ms",
             r->att.prov->conf->name, r->route->ttft_timeout_ms);
    o.status = 504;
    o.code = "upstream_timeout";
    o.message = text;
    r->in_step++; /* keep r alive through the retry */
    mf_req_attempt_failed(r, &o);
    if (--r->in_step == 0 && r->finished) {
        mf_req_free(r);
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

void
mf_req_attempt_start(mf_req_t *r)
{
    mf_limits_t *lim = &r->gen->config->limits;
    mf_provider_conf_t *pc = r->att.prov->conf;
    mf_upcall_opts_t opts;
    char path[4096], msg[512];
    mf_url_t url;
    mf_buf_t b = {0};

    if (!url_ok(r->att.up_url) ||
        mf_url_parse(r->att.up_url.data, r->att.up_url.len, &url, path,
                     sizeof(path)) != MF_OK) {
        snprintf(msg, sizeof(msg), "provider '%s' has an unusable URL",
                 pc->name);
        mf_req_respond_error(r, 502, "upstream_error", NULL, msg);
        mf_req_finish(r);
        return;
    }
    /* the host as a view into up_url (request memory, as the records
     * are): after the scheme, and its '[' for IPv6 */
    {
        size_t at = url.tls ? 8 : 7, hl = strlen(url.host);

        at += r->att.up_url.data[at] == '[';
        r->att.server_host = (mf_str_t){r->att.up_url.data + at, hl};
        r->att.server_port = url.port;
    }
    build_upstream_head(r, &b, &url);
    if (mf_buf_try_append(&b, r->att.up_body.data, r->att.up_body.len) !=
        MF_OK) {
        mf_buf_free(&b);
        mf_req_respond_error(r, 503, "server_error", NULL,
                             "out of memory copying the request body "
                             "upstream");
        mf_req_finish(r);
        return;
    }
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
     * per complete event (mf_req_on_sse_event), however the bytes trickle */
    opts.total_timeout_ms = r->stream ? 0 : opts.first_byte_timeout_ms;
    opts.idle_by_progress = r->stream;
    r->attempts++;
    r->att.up_start = mf_now_ms();
    r->att.start = r->att.up_start;
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
    r->att.call =
        mf_upstream_call(r->worker, &url, &opts, b.data, b.len, &up_cbs, r);
    mf_buf_free(&b);
    mf_upcall_start(r->att.call);
}

void
mf_req_account_upstream_time(mf_req_t *r)
{
    if (r->att.up_start > 0) {
        r->att.end_ms = mf_now_ms();
        r->upstream_ms += r->att.end_ms - r->att.up_start;
        r->att.up_start = 0;
    }
}

static void
up_on_head(void *arg, const mf_http_head_t *head)
{
    mf_req_t *r = arg;
    size_t i;

    r->reached = 1;
    r->att.up_status = head->status;
    r->att.head_ms = mf_now_ms();
    for (i = 0; i < head->nheaders; i++) {
        mf_hlist_set(r->pool, &r->att.up_resp_headers, head->headers[i].name,
                     head->headers[i].value);
    }
    if (head->status >= 200 && head->status < 300) {
        r->up_buf.limit = r->gen->config->limits.max_response;
    } else {
        r->up_buf.limit = MF_ERROR_BODY_MAX;
    }
    if (r->stream && head->status >= 200 && head->status < 300) {
        const char *fr = r->att.prov->ops->stream_framing;

        mf_sse_parser_free(&r->sse);
        mf_evstream_free(&r->evs);
        mf_sse_parser_init(&r->sse, r->gen->config->limits.max_sse_event);
        mf_evstream_free(&r->evs);
        mf_evstream_init(&r->evs, r->gen->config->limits.max_sse_event);
        r->att.evs_framing = fr != NULL && strcmp(fr, "aws-eventstream") == 0;
        r->att.sse_active = 1;
        r->phase = MF_PHASE_UPSTREAM_RESPONSE;
        r->stage_idx = 0;
        mf_req_step(r);
    }
}

#define BAD_STREAM                                                             \
    "the upstream sent a stream event that could not be read (malformed or "   \
    "larger than limits.max_sse_event)"

static void
up_on_data(void *arg, const char *data, size_t len)
{
    mf_req_t *r = arg;

    if (!r->att.sse_active) {
        if (mf_buf_try_append(&r->up_buf, data, len) != MF_OK) {
            mf_upcall_cancel(r->att.call);
            r->att.call = NULL;
            mf_req_account_upstream_time(r);
            mf_req_respond_error(r, 502, "upstream_error", NULL,
                                 "the upstream response is larger than "
                                 "limits.max_response");
            mf_req_finish(r);
        }
        return;
    }
    if ((r->att.evs_framing
             ? mf_evstream_feed(&r->evs, data, len, mf_req_on_sse_event, r)
             : mf_sse_parser_feed(&r->sse, data, len, mf_req_on_sse_event,
                                  r)) != MF_OK) {
        if (mf_req_body_ended_by_stage(r)) {
            return;
        }
        mf_upcall_cancel(r->att.call);
        r->att.call = NULL;
        mf_req_account_upstream_time(r);
        if (r->att.prov_err != NULL) {
            mf_req_stream_failed(r, r->att.prov_err);
            return;
        }
        if (!r->head_sent) {
            /* nothing reached the client: a failed attempt, as a bad body */
            mf_outcome_t o;

            r->att.sse_active = 0;
            mf_req_outcome_error(&o, MF_UPERR_PROTOCOL);
            snprintf(o.what, sizeof(o.what), "bad_stream");
            o.status = 502;
            o.code = "upstream_bad_stream";
            o.message = BAD_STREAM;
            mf_req_attempt_failed(r, &o);
            return;
        }
        mf_req_flush_stream(r);
        mf_req_send_stream_error(r, "upstream_bad_stream", BAD_STREAM);
        mf_req_finish_stream(r);
        mf_req_finish(r);
        return;
    }
    if (r->phase == MF_PHASE_BODY) {
        mf_req_flush_stream(r);
    }
}

static void
complete_error(mf_req_t *r)
{
    mf_error_t err;
    mf_str_t body = {r->up_buf.data ? r->up_buf.data : "", r->up_buf.len};

    memset(&err, 0, sizeof(err));
    r->cur_stage = MF_STAGE_PROVIDER;
    if (r->att.prov->ops->parse_error(r, r->att.prov->state, r->att.up_status,
                                      body, &err) != MF_OK ||
        err.status == 0) {
        err.status = 502;
        err.type = "upstream_error";
        snprintf(err.message, sizeof(err.message), "provider '%s' answered %d",
                 r->att.prov->conf->name, r->att.up_status);
    }
    mf_req_attempt_error(r, &err,
                         r->att.up_status); /* the upstream's status counts */
}

/* A token count's 2xx answer: the provider's count, in the client's
 * shape. */
static void
complete_count(mf_req_t *r)
{
    int64_t tokens = -1;
    char *text;

    if (r->att.prov->ops->parse_count(
            r, r->att.prov->state,
            (mf_str_t){r->up_buf.data ? r->up_buf.data : "", r->up_buf.len},
            &tokens) != MF_OK ||
        tokens < 0) {
        mf_outcome_t o;

        mf_req_outcome_error(&o, MF_UPERR_PROTOCOL);
        snprintf(o.what, sizeof(o.what), "bad_body");
        o.status = 502;
        o.code = "upstream_bad_response";
        o.message = "the upstream answered the token count with a body that "
                    "could not be read";
        mf_req_attempt_failed(r, &o);
        return;
    }
    mf_req_attempt_close(r, &mf_outcome_ok, mf_now_ms() - r->att.start);
    text = r->proto->count_answer(tokens);
    if (text == NULL) {
        mf_req_respond_error(r, 503, "server_error", NULL, "out of memory");
    } else {
        mf_req_respond(r, 200, "application/json", mf_str_from(text));
    }
    free(text);
    mf_req_finish(r);
}

static void
up_on_end(void *arg)
{
    mf_req_t *r = arg;

    r->att.call = NULL;
    mf_req_account_upstream_time(r);
    if (r->att.sse_active) {
        if (!r->head_sent && (r->chunk_out.len == 0 || r->att.held) &&
            !r->att.saw_done) {
            /* ended before its first event: as good as refused */
            mf_outcome_t o;

            mf_req_outcome_error(&o, MF_UPERR_CLOSED);
            o.status = 502;
            o.code = "upstream_stream_cut";
            o.message = "the upstream ended the stream before its first "
                        "event";
            mf_req_attempt_failed(r, &o);
            return;
        }
        r->phase = MF_PHASE_BODY; /* no stage is paused at the end */
        /* the stream is over: what was held (a preamble, events that made
         * no bytes since) is the answer now, head first */
        r->att.held = 0;
        if ((r->att.evs_framing ? mf_evstream_pending(&r->evs)
                                : mf_sse_parser_pending(&r->sse)) > 0 &&
            !r->att.saw_done) {
            mf_req_flush_stream(r);
            mf_req_send_stream_error(
                r, "upstream_stream_cut",
                "the upstream ended the stream in the middle "
                "of an event");
        } else if (!r->att.passthrough && !r->att.done_sent) {
            mf_req_emit_event(r, MF_STR("[DONE]"), 1);
        }
        if (r->body_hold && !r->body_failed && !r->body_stop) {
            /* a body stage holds the output: it ends the stream when it
             * lets go (mf_req_body_release) */
            r->up_ended = 1;
            mf_req_flush_stream(r);
            return;
        }
        mf_req_stream_end(r);
        return;
    }
    if (r->att.up_status < 200 || r->att.up_status >= 300) {
        complete_error(r);
        return;
    }
    r->cur_stage = MF_STAGE_PROVIDER;
    if (r->count_mode) {
        complete_count(r);
        return;
    }
    if (r->att.prov->ops->parse_response(
            r, r->att.prov->state,
            (mf_str_t){r->up_buf.data ? r->up_buf.data : "", r->up_buf.len},
            !r->att.wire_canonical) != MF_OK) {
        mf_outcome_t o;

        mf_req_outcome_error(&o, MF_UPERR_PROTOCOL);
        snprintf(o.what, sizeof(o.what), "bad_body");
        o.status = 502;
        o.code = "upstream_bad_response";
        o.message = "the upstream answered with a body that could not be "
                    "read";
        mf_req_attempt_failed(r, &o);
        return;
    }
    if (r->att.prov_err != NULL) {
        mf_req_attempt_error(r, r->att.prov_err, r->att.prov_err->status);
        return;
    }
    r->phase = MF_PHASE_UPSTREAM_RESPONSE;
    r->stage_idx = 0;
    mf_req_step(r);
}

static void
up_on_error(void *arg, mf_uperr_t kind, const char *msg)
{
    mf_req_t *r = arg;
    mf_outcome_t o;
    char text[768];

    if (kind != MF_UPERR_CONNECT && mf_upcall_connected(r->att.call)) {
        r->reached = 1; /* the request went out: it may be billed */
    }
    r->att.call = NULL;
    mf_req_account_upstream_time(r);
    mf_log_warn("request %.*s: provider '%s': %s", (int)r->id.len, r->id.data,
                r->att.prov->conf->name, msg);
    if (r->head_sent) {
        /* mid-stream: an error event, then the end */
        mf_req_flush_stream(r);
        snprintf(text, sizeof(text),
                 "the upstream stream of provider '%s' "
                 "was cut: %s",
                 r->att.prov->conf->name, msg);
        mf_req_send_stream_error(r,
                                 kind == MF_UPERR_TIMEOUT
                                     ? "upstream_timeout"
                                     : "upstream_stream_cut",
                                 text);
        mf_req_finish_stream(r);
        mf_req_finish(r);
        return;
    }
    mf_req_outcome_error(&o, kind);
    snprintf(text, sizeof(text), "provider '%s' %s: %s",
             r->att.prov->conf->name,
             kind == MF_UPERR_TIMEOUT ? "timed out" : "failed", msg);
    o.status = kind == MF_UPERR_TIMEOUT ? 504 : 502;
    o.code = kind == MF_UPERR_TIMEOUT   ? "upstream_timeout"
             : kind == MF_UPERR_CONNECT ? "upstream_unreachable"
                                        : "upstream_error";
    o.message = text;
    mf_req_attempt_failed(r, &o);
}
