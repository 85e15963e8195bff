/*
 * The host API given to plugins (mf_host_api_t). Every function checks the
 * stage it is called in against one table of stage permissions, which
 * the Lua binding consults too.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <manifold/json.h>

#include "request/request.h"
#include "svc/svc.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"
#include "api/api.h"
#include "pipeline/request-t.h"
#include "core/metrics.h"
#include "core/shdict.h"
#include "pipeline/endpoint.h"
#include "proto/proto.h"
#include "routing/balancer.h"
#include "routing/keypool.h"

#define ANY_REQ                                                                \
    (MF_HOOK(MF_STAGE_REQUEST) | MF_HOOK(MF_STAGE_ROUTE) |                     \
     MF_HOOK(MF_STAGE_UPSTREAM_REQUEST) |                                      \
     MF_HOOK(MF_STAGE_UPSTREAM_RESPONSE) |                                     \
     MF_HOOK(MF_STAGE_RESPONSE_HEADERS) | MF_HOOK(MF_STAGE_RESPONSE_BODY) |    \
     MF_HOOK(MF_STAGE_LOG) | MF_HOOK(MF_STAGE_DONE) |                          \
     MF_HOOK(MF_STAGE_PROVIDER) | MF_HOOK(MF_STAGE_ENDPOINT))
#define CAN_RESPOND                                                            \
    (MF_HOOK(MF_STAGE_REQUEST) | MF_HOOK(MF_STAGE_ROUTE) |                     \
     MF_HOOK(MF_STAGE_UPSTREAM_REQUEST) |                                      \
     MF_HOOK(MF_STAGE_UPSTREAM_RESPONSE) |                                     \
     MF_HOOK(MF_STAGE_RESPONSE_HEADERS) | MF_HOOK(MF_STAGE_ENDPOINT))

/* The stages each host call may be made in: the one place that says so,
 * for C plugins (the functions below) and Lua stages (the mf binding)
 * alike. */
static const struct {
    const char *name;
    unsigned stages;
} perms[MF_CALL__COUNT] = {
    [MF_CALL_READ] = {"reading the request", ANY_REQ},
    [MF_CALL_SET_REQUEST_HEADER] = {"set_header (request)",
                                    MF_HOOK(MF_STAGE_REQUEST) |
                                        MF_HOOK(MF_STAGE_ROUTE)},
    [MF_CALL_SET_QUERY] = {"set_query", MF_HOOK(MF_STAGE_REQUEST) |
                                            MF_HOOK(MF_STAGE_ROUTE) |
                                            MF_HOOK(MF_STAGE_ENDPOINT)},
    [MF_CALL_SET_UPSTREAM_HEADER] = {"set_header (upstream request)",
                                     MF_HOOK(MF_STAGE_UPSTREAM_REQUEST) |
                                         MF_HOOK(MF_STAGE_PROVIDER)},
    [MF_CALL_SET_RESPONSE_HEADER] = {"set_header (response)", ANY_REQ},
    [MF_CALL_SET_BODY] = {"changing the request body",
                          MF_HOOK(MF_STAGE_REQUEST) | MF_HOOK(MF_STAGE_ROUTE) |
                              MF_HOOK(MF_STAGE_UPSTREAM_REQUEST) |
                              MF_HOOK(MF_STAGE_PROVIDER)},
    [MF_CALL_SET_MODEL] = {"set_model",
                           MF_HOOK(MF_STAGE_REQUEST) | MF_HOOK(MF_STAGE_ROUTE)},
    [MF_CALL_SET_TARGETS] = {"changing the targets", MF_HOOK(MF_STAGE_ROUTE)},
    [MF_CALL_SET_CONSUMER] = {"set_consumer", MF_HOOK(MF_STAGE_REQUEST)},
    [MF_CALL_RESPOND] = {"answering the request", CAN_RESPOND},
    [MF_CALL_PAUSE] = {"an async call (pausing the stage)", CAN_RESPOND},
    [MF_CALL_PROVIDER] = {"a provider's call", MF_HOOK(MF_STAGE_PROVIDER)},
    [MF_CALL_SET_USAGE] = {"set_usage", MF_HOOK(MF_STAGE_PROVIDER) |
                                            MF_HOOK(MF_STAGE_REQUEST) |
                                            MF_HOOK(MF_STAGE_ROUTE) |
                                            MF_HOOK(MF_STAGE_RESPONSE_BODY) |
                                            MF_HOOK(MF_STAGE_LOG)},
    [MF_CALL_SET_RESPONSE_CHUNK] = {"replacing the response body",
                                    MF_HOOK(MF_STAGE_RESPONSE_BODY)},
    [MF_CALL_INSERT_CHUNK] = {"inserting a stream event",
                              MF_HOOK(MF_STAGE_RESPONSE_BODY)},
    [MF_CALL_STOP_RESPONSE] = {"stopping the response",
                               MF_HOOK(MF_STAGE_RESPONSE_BODY)},
    [MF_CALL_STAGE_ANSWER] = {"a stage's own answer (emit_event, "
                              "respond_completion, record_answer)",
                              MF_HOOK(MF_STAGE_REQUEST) |
                                  MF_HOOK(MF_STAGE_ROUTE)},
    [MF_CALL_GET_ANSWER] = {"get_answer",
                            MF_HOOK(MF_STAGE_LOG) | MF_HOOK(MF_STAGE_DONE)},
    [MF_CALL_SET_CACHED] = {"set_cached", ANY_REQ & ~MF_HOOK(MF_STAGE_DONE) &
                                              ~MF_HOOK(MF_STAGE_PROVIDER)},
};

int
mf_api_allowed(const mf_req_t *r, mf_call_t call)
{
    return r != NULL && call < MF_CALL__COUNT &&
           (MF_HOOK(r->cur_stage) & perms[call].stages) != 0 &&
           (!r->finished || r->cur_stage == MF_STAGE_LOG ||
            r->cur_stage == MF_STAGE_DONE);
}

static const char *
stage_name(mf_stage_t s)
{
    return s == MF_STAGE_PROVIDER ? "a provider callback"
           : s < MF_STAGE__COUNT && mf_stage_fn_names[s] != NULL
               ? mf_stage_fn_names[s]
               : "?";
}

const char *
mf_api_refusal(const mf_req_t *r, mf_call_t call, char *buf, size_t cap)
{
    size_t used;
    int i, n = 0;

    if (r == NULL || call >= MF_CALL__COUNT) {
        snprintf(buf, cap, "not allowed outside a stage function");
        return buf;
    }
    if ((MF_HOOK(r->cur_stage) & perms[call].stages) != 0) {
        snprintf(buf, cap, "%s is not allowed once the request is finished",
                 perms[call].name);
        return buf;
    }
    used = (size_t)snprintf(buf, cap, "%s is not allowed in %s; only in",
                            perms[call].name, stage_name(r->cur_stage));
    for (i = 0; i < MF_STAGE__COUNT && used < cap; i++) {
        if (perms[call].stages & MF_HOOK(i)) {
            used += (size_t)snprintf(buf + used, cap - used, "%s %s",
                                     n++ ? "," : "", stage_name(i));
        }
    }
    return buf;
}

static int
in_call(mf_req_t *r, mf_call_t call)
{
    return mf_api_allowed(r, call);
}

/* ABI 1.6 (guard): the request whose body stage's timer is firing, and
 * that stage (index + 1): its callback may hold the output
 * (api->hold_response) as the stage could in on_response_body. */
static __thread const mf_req_t *fire_req;
static __thread int fire_stage1;

/* ABI 1.6: a body stage holding a stream's output (api->hold_response),
 * called from its async callback, outside the pipeline. */
static int
held_callback(const mf_req_t *r)
{
    return r != NULL && r->body_hold && !r->in_body && !r->finished &&
           r->stream;
}

/* ABI 1.6: a callback of a body stage's async call while a stream is
 * going out (no stage pauses then): it may stop the answer. */
static int
body_callback(const mf_req_t *r)
{
    return r != NULL && r->stream && !r->in_body && !r->finished &&
           r->phase == MF_PHASE_BODY;
}

/* ABI 1.6: a callback of a stage's async call (one made without pausing,
 * in on_request) while the request waits on its upstream: it may stop
 * the answer, which cancels the upstream call. */
static int
upstream_callback(const mf_req_t *r)
{
    return r != NULL && r->phase == MF_PHASE_UPSTREAM && r->att.call != NULL &&
           !r->in_step && !r->in_body && !r->finished && !r->head_sent;
}

/* A stage that may pause, or a provider's authorize step. */
static int
can_pause(mf_req_t *r)
{
    return in_call(r, MF_CALL_PAUSE) ||
           (in_call(r, MF_CALL_PROVIDER) && r->phase == MF_PHASE_AUTHORIZE);
}

/* http_call and model_call: where a stage may pause, and (ABI 1.6) in
 * on_response_body of a stream and the callbacks of such calls, whose
 * answers a body stage acts on through hold_response and stop_response
 * (the stage does not pause: the stream goes on or is held). */
static int
can_call(mf_req_t *r)
{
    return can_pause(r) || held_callback(r) || body_callback(r) ||
           (r != NULL && r->stream && in_call(r, MF_CALL_INSERT_CHUNK));
}

static void
api_log(mf_log_level_t level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    mf_logv(level, "plugin", fmt, ap);
    va_end(ap);
}

static void *
api_palloc(mf_req_t *r, size_t size)
{
    return r ? mf_pool_alloc(r->pool, size) : NULL;
}

/* n lowercase hex digits; *nonzero when one is not '0'. */
static int
is_hex(const char *s, size_t n, int *nonzero)
{
    size_t i;

    *nonzero = 0;
    for (i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
        *nonzero |= s[i] != '0';
    }
    return 1;
}

/* Whether tp is a W3C traceparent this host can join: version (not
 * ff; 00 is exactly 55 bytes, a later one may add "-..."), a trace id
 * and a parent id not all zeros, flags. */
static int
traceparent_ok(mf_str_t tp)
{
    int nz, tnz, pnz;

    return tp.len >= 55 && is_hex(tp.data, 2, &nz) &&
           !(tp.data[0] == 'f' && tp.data[1] == 'f') &&
           (nz ? tp.len == 55 || tp.data[55] == '-' : tp.len == 55) &&
           tp.data[2] == '-' && tp.data[35] == '-' && tp.data[52] == '-' &&
           is_hex(tp.data + 3, 32, &tnz) && tnz &&
           is_hex(tp.data + 36, 16, &pnz) && pnz &&
           is_hex(tp.data + 53, 2, &nz);
}

/* The request's trace context, made on first use: joined to the
 * client's W3C traceparent when it sent a valid one, else a new trace;
 * the request's own span id is new. */
static void
req_trace(mf_req_t *r)
{
    mf_str_t tp;

    if (r->trace_made) {
        return;
    }
    r->trace_made = 1;
    r->trace_sampled = 1;
    r->parent_span_id[0] = '\0';
    if (mf_hlist_get(&r->req_headers, MF_STR("traceparent"), &tp) == MF_OK &&
        traceparent_ok(tp)) {
        char f = tp.data[54];

        memcpy(r->trace_id, tp.data + 3, 32);
        r->trace_id[32] = '\0';
        memcpy(r->parent_span_id, tp.data + 36, 16);
        r->parent_span_id[16] = '\0';
        r->trace_sampled = ((f >= 'a' ? f - 'a' + 10 : f - '0') & 1) != 0;
    } else {
        mf_rand_hex(r->trace_id, 16);
    }
    mf_rand_hex(r->span_id, 8);
}

static int
api_get_info(mf_req_t *r, mf_req_info_t *info)
{
    mf_req_info_t tmp, *i;
    double now = mf_now_ms();
    size_t size;

    if (r == NULL || info == NULL || info->size == 0) {
        return MF_ERR;
    }
    /* written in place when the caller's struct is this one's size or
     * larger (the usual case: no copy), else into tmp, cut to its size */
    size = info->size;
    /* cppcheck-suppress uninitvar ; tmp is cleared just below */
    i = size >= sizeof(tmp) ? info : &tmp;
    memset(i, 0, sizeof(*i));
    i->size = size;
    i->id = r->id;
    i->method = r->method;
    i->path = r->path;
    i->client_addr = r->client_addr;
    i->consumer = r->consumer;
    i->model = r->model_asked;
    if (r->att.prov != NULL) {
        i->provider = mf_str_from(r->att.prov->conf->name);
        i->upstream_model = r->att.up_model;
    }
    i->error = r->error;
    i->endpoint = r->endpoint;
    i->stream = r->stream;
    i->status = r->status;
    i->upstream_status = r->att.up_status;
    i->attempts = r->attempts;
    i->usage = r->usage;
    i->start_time = r->start_wall;
    i->latency_ms = now - r->start_ms;
    i->ttft_ms = r->first_byte_ms > 0 ? r->first_byte_ms - r->start_ms : -1;
    i->upstream_ms = r->upstream_ms;
    i->bytes_in = r->bytes_in;
    i->bytes_out = r->bytes_out;
    i->bytes_undelivered = r->bytes_undelivered;
    i->cached = r->cached;
    i->call_depth = r->call_depth;
    i->generation = r->gen->id;
    i->tried.data = r->tried.data;
    i->tried.len = r->tried.len;
    i->listener = r->listener;
    i->first_content_ms =
        r->first_content_ms > 0              ? r->first_content_ms - r->start_ms
        : !r->stream && r->first_byte_ms > 0 ? r->first_byte_ms - r->start_ms
                                             : -1;
    i->attempt_ttfb_ms = r->att.start > 0 && r->att.head_ms > 0
                             ? r->att.head_ms - r->att.start
                             : -1;
    i->attempt_ms = r->att.start <= 0   ? -1
                    : r->att.end_ms > 0 ? r->att.end_ms - r->att.start
                                        : now - r->att.start;
    i->query = r->query;
    i->cache_write_tokens = r->cache_write_tokens;
    if (size > offsetof(mf_req_info_t, trace_id)) {
        req_trace(r);
        i->trace_id = (mf_str_t){r->trace_id, 32};
        i->span_id = (mf_str_t){r->span_id, 16};
        i->parent_span_id =
            (mf_str_t){r->parent_span_id, strlen(r->parent_span_id)};
        i->trace_sampled = r->trace_sampled;
    }
    /* the client port's paths only: the status listener's are a stage's */
    if (size > offsetof(mf_req_info_t, route) && r->epath == NULL &&
        r->listener == MF_LISTENER_CLIENT) {
        if (!r->route_known) { /* once: every stage's get_info asks */
            r->route_tmpl = mf_proto_route(r->proto, r->path);
            r->route_known = 1;
        }
        i->route = r->route_tmpl;
    }
    if (i != info) {
        memcpy(info, i, size);
    }
    return MF_OK;
}

static mf_hlist_t *
headers_of(mf_req_t *r, mf_headers_t which, int write)
{
    switch (which) {
    case MF_REQUEST_HEADERS:
        if (write && !in_call(r, MF_CALL_SET_REQUEST_HEADER)) {
            return NULL;
        }
        return &r->req_headers;
    case MF_RESPONSE_HEADERS:
        if (write &&
            (r->head_sent || !in_call(r, MF_CALL_SET_RESPONSE_HEADER))) {
            return NULL;
        }
        return &r->resp_headers;
    case MF_UPSTREAM_REQUEST_HEADERS:
        if (write && !in_call(r, MF_CALL_SET_UPSTREAM_HEADER)) {
            return NULL;
        }
        return &r->att.up_req_headers;
    case MF_UPSTREAM_RESPONSE_HEADERS:
        if (write) {
            return NULL;
        }
        return &r->att.up_resp_headers;
    default:
        return NULL;
    }
}

static int
api_get_header(mf_req_t *r, mf_headers_t which, mf_str_t name, mf_str_t *value)
{
    mf_hlist_t *h;

    if (!in_call(r, MF_CALL_READ) || (h = headers_of(r, which, 0)) == NULL) {
        return MF_ERR;
    }
    return mf_hlist_get(h, name, value);
}

static int
api_set_header(mf_req_t *r, mf_headers_t which, mf_str_t name, mf_str_t value)
{
    mf_hlist_t *h;

    if (!in_call(r, MF_CALL_READ) || (h = headers_of(r, which, 1)) == NULL) {
        return MF_ERR;
    }
    return mf_hlist_set(r->pool, h, name, value); /* refuses a split */
}

static json_t *
api_get_body_json(mf_req_t *r)
{
    return in_call(r, MF_CALL_READ) ? mf_req_body_json(r) : NULL;
}

static int
api_get_body_field(mf_req_t *r, mf_str_t key, mf_str_t *value)
{
    if (!in_call(r, MF_CALL_READ)) {
        return MF_ERR;
    }
    return mf_req_body_field(r, key, value);
}

static void
api_body_changed(mf_req_t *r)
{
    if (in_call(r, MF_CALL_SET_BODY)) {
        r->body_dirty = 1;
    }
}

static mf_str_t
api_get_model(mf_req_t *r)
{
    return in_call(r, MF_CALL_READ) ? r->model : MF_STR_NULL;
}

static int
api_set_model(mf_req_t *r, mf_str_t model)
{
    if (!in_call(r, MF_CALL_SET_MODEL) || model.len == 0) {
        return MF_ERR;
    }
    return mf_req_set_model(r, model);
}

static int
api_clear_targets(mf_req_t *r)
{
    if (!in_call(r, MF_CALL_SET_TARGETS)) {
        return MF_ERR;
    }
    r->ntargets = 0;
    return MF_OK;
}

static int
api_add_target(mf_req_t *r, const mf_target_t *t)
{
    mf_prov_t *p;

    if (!in_call(r, MF_CALL_SET_TARGETS) || t == NULL || t->model.len == 0) {
        return MF_ERR;
    }
    p = mf_gen_find_provider(r->gen, t->provider);
    if (p == NULL) {
        return MF_ERR;
    }
    return mf_req_add_target(r, p, t->model, t->weight);
}

static int
api_get_target(mf_req_t *r, unsigned i, mf_target_t *t)
{
    if (!in_call(r, MF_CALL_READ)) {
        return MF_ERR;
    }
    if (t == NULL) {
        return (int)r->ntargets;
    }
    if (i >= r->ntargets) {
        return MF_ERR;
    }
    t->provider = mf_str_from(r->targets[i].prov->conf->name);
    t->model = r->targets[i].model;
    t->weight = r->targets[i].weight;
    return (int)r->ntargets;
}

static int
api_set_consumer(mf_req_t *r, mf_str_t name)
{
    if (!in_call(r, MF_CALL_SET_CONSUMER)) {
        return MF_ERR;
    }
    r->consumer = mf_pool_str(r->pool, name);
    r->consumer_group = MF_STR_NULL; /* a name alone: no record */
    r->consumer_key_id = MF_STR_NULL;
    r->nconsumer_attrs = 0;
    return MF_OK;
}

static int
api_set_consumer_record(mf_req_t *r, const mf_consumer_t *c)
{
    size_t i, n;

    if (!in_call(r, MF_CALL_SET_CONSUMER) || c == NULL ||
        c->size < offsetof(mf_consumer_t, nattrs) + sizeof(size_t) ||
        c->name.len == 0 || (c->nattrs > 0 && c->attrs == NULL)) {
        return MF_ERR;
    }
    n = c->nattrs;
    r->consumer = mf_pool_str(r->pool, c->name);
    r->consumer_group = mf_pool_str(r->pool, c->group);
    r->consumer_key_id = mf_pool_str(r->pool, c->key_id);
    r->consumer_attrs =
        n ? mf_pool_alloc(r->pool, 2 * n * sizeof(mf_str_t)) : NULL;
    if (n > 0 && r->consumer_attrs == NULL) {
        r->nconsumer_attrs = 0;
        return MF_ERR;
    }
    for (i = 0; i < 2 * n; i++) {
        r->consumer_attrs[i] = mf_pool_str(r->pool, c->attrs[i]);
    }
    r->nconsumer_attrs = n;
    return MF_OK;
}

static int
api_get_consumer(mf_req_t *r, mf_consumer_t *c)
{
    mf_consumer_t v;

    if (!in_call(r, MF_CALL_READ) || c == NULL || c->size == 0 ||
        r->consumer.len == 0) {
        return MF_ERR;
    }
    memset(&v, 0, sizeof(v));
    v.size = c->size;
    v.name = r->consumer;
    v.group = r->consumer_group;
    v.key_id = r->consumer_key_id;
    v.attrs = r->consumer_attrs;
    v.nattrs = r->nconsumer_attrs;
    memcpy(c, &v, c->size < sizeof(v) ? c->size : sizeof(v));
    return MF_OK;
}

static int
api_get_consumer_attr(mf_req_t *r, mf_str_t name, mf_str_t *value)
{
    size_t i;

    if (!in_call(r, MF_CALL_READ) || value == NULL) {
        return MF_ERR;
    }
    for (i = 0; i < r->nconsumer_attrs; i++) {
        if (mf_str_eq(r->consumer_attrs[2 * i], name)) {
            *value = r->consumer_attrs[2 * i + 1];
            return MF_OK;
        }
    }
    return MF_ERR;
}

static const json_t *
api_config_section(const char *name)
{
    return mf_gen_loading_section(name);
}

static int
api_register_command(const char *name, const char *usage, mf_command_fn fn,
                     void *arg)
{
    return mf_gen_loading_command(name, usage, fn, arg);
}

static int
api_respond(mf_req_t *r, int status, const char *ctype, mf_str_t body)
{
    if (!in_call(r, MF_CALL_RESPOND) || status < 200 || status > 599) {
        return MF_ERR;
    }
    return mf_req_respond(r, status, ctype, body);
}

static int
api_respond_error(mf_req_t *r, int status, const char *type,
                  const char *message)
{
    if (!in_call(r, MF_CALL_RESPOND) || status < 400 || status > 599) {
        return MF_ERR;
    }
    return mf_req_respond_error(r, status,
                                type ? type : "invalid_request_error", NULL,
                                message ? message : "refused");
}

static int
api_respond_error_code(mf_req_t *r, int status, const char *type,
                       const char *code, const char *message)
{
    if (!in_call(r, MF_CALL_RESPOND) || status < 400 || status > 599) {
        return MF_ERR;
    }
    return mf_req_respond_error(r, status,
                                type ? type : "invalid_request_error", code,
                                message ? message : "refused");
}

static void
api_resume(mf_req_t *r, mf_action_t action)
{
    if (r != NULL) {
        mf_req_resume(r, action);
    }
}

static int
api_set_upstream_url(mf_req_t *r, mf_str_t url)
{
    if (!in_call(r, MF_CALL_PROVIDER)) {
        return MF_ERR;
    }
    r->att.up_url = mf_pool_str(r->pool, url);
    return MF_OK;
}

static int
api_set_upstream_wire(mf_req_t *r, mf_str_t wire)
{
    if (!in_call(r, MF_CALL_PROVIDER) || r->att.call != NULL ||
        r->att.start > 0) {
        return MF_ERR; /* build_request only: before the call */
    }
    if (!mf_str_eq_cstr(wire, r->att.prov->ops->wire)) {
        r->att.passthrough = 0;
        r->att.wire_canonical = 0;
        r->att.wire_openai = 0;
    }
    r->att.up_wire = mf_pool_str(r->pool, wire); /* headers it forwards */
    return MF_OK;
}

static int
api_set_upstream_body(mf_req_t *r, mf_str_t body)
{
    if (!in_call(r, MF_CALL_PROVIDER)) {
        return MF_ERR;
    }
    r->att.up_body = mf_pool_str(r->pool, body);
    return r->att.up_body.data ? MF_OK : MF_ERR;
}

static int
api_set_usage(mf_req_t *r, const mf_usage_t *u)
{
    if (!in_call(r, MF_CALL_SET_USAGE) || u == NULL) {
        return MF_ERR;
    }
    r->usage = *u;
    r->have_usage = 1;
    return MF_OK;
}

static int
api_set_cache_write_tokens(mf_req_t *r, int64_t tokens)
{
    if (!in_call(r, MF_CALL_SET_USAGE) || tokens < 0) {
        return MF_ERR;
    }
    r->cache_write_tokens = tokens;
    return MF_OK;
}

static void
attempt_fill(mf_attempt_info_t *o, const char *provider, const char *type,
             mf_str_t model, mf_str_t outcome, int status, int key_idx,
             double start, double end, double head, const char *span,
             double req_start)
{
    o->provider = mf_str_from(provider);
    o->provider_type = mf_str_from(type ? type : "");
    o->model = model;
    o->outcome = outcome;
    o->status = status;
    o->key_index = key_idx;
    o->start_ms = start > 0 ? start - req_start : -1;
    o->duration_ms = start > 0 && end >= start ? end - start : -1;
    o->ttfb_ms = start > 0 && head > 0 ? head - start : -1;
    o->span_id = (mf_str_t){span, strlen(span)};
}

/* the upstream's host and port (ABI 1.8), when the caller has room */
static void
attempt_server(mf_attempt_info_t *o, mf_str_t host, int port)
{
    if (o->size > offsetof(mf_attempt_info_t, server_port)) {
        o->server_address = host;
        o->server_port = port;
    }
}

static int
api_get_attempt(mf_req_t *r, size_t idx, mf_attempt_info_t *a)
{
    mf_attempt_info_t o;
    size_t n;

    if (r == NULL || a == NULL || a->size == 0 || !in_call(r, MF_CALL_READ)) {
        return MF_ERR;
    }
    memset(&o, 0, sizeof(o));
    o.size = a->size;
    if (idx < r->nrecs) {
        const mf_attempt_rec_t *x = &r->recs[idx];

        attempt_fill(&o, x->provider, x->type, x->model,
                     mf_str_from(x->outcome), x->status, x->key_idx, x->start,
                     x->end, x->head, x->span_id, r->start_ms);
        attempt_server(&o, x->server_host, x->server_port);
    } else if (idx == r->nrecs && r->att.open && r->att.prov != NULL) {
        attempt_fill(&o, r->att.prov->conf->name, r->att.prov->conf->type,
                     r->att.up_model, MF_STR(""), r->att.up_status,
                     r->att.key_idx, r->att.start,
                     r->att.end_ms > 0 ? r->att.end_ms : mf_now_ms(),
                     r->att.head_ms, r->att.span_id, r->start_ms);
        attempt_server(&o, r->att.server_host, r->att.server_port);
    } else {
        return MF_ERR;
    }
    n = a->size < sizeof(o) ? a->size : sizeof(o);
    memcpy(a, &o, n);
    return MF_OK;
}

/* Blocks that outlive reloads (api->keep_memory), for the process. */
typedef struct kept_s {
    struct kept_s *next;
    size_t size;
    char name[128];
    max_align_t data[];
} kept_t;

static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static kept_t *kept;

static void *
api_keep_memory(const char *name, size_t size)
{
    kept_t *k;

    if (name == NULL || name[0] == '\0' || strlen(name) >= sizeof(k->name) ||
        size == 0) {
        mf_log(MF_LOG_ERROR, "keep_memory: a name (under 128 bytes) and a "
                             "size are needed");
        return NULL;
    }
    pthread_mutex_lock(&kept_lock);
    for (k = kept; k != NULL && strcmp(k->name, name) != 0; k = k->next) {
    }
    if (k != NULL && k->size != size) {
        pthread_mutex_unlock(&kept_lock);
        mf_log(MF_LOG_ERROR,
               "keep_memory: '%s' is kept with %zu bytes, not %zu (a plugin "
               "of another version holds it)",
               name, k->size, size);
        return NULL;
    }
    if (k == NULL && (k = calloc(1, sizeof(*k) + size)) != NULL) {
        k->size = size;
        snprintf(k->name, sizeof(k->name), "%s", name);
        k->next = kept;
        kept = k;
    }
    pthread_mutex_unlock(&kept_lock);
    return k != NULL ? (void *)k->data : NULL;
}

static json_t *
api_upstream_health(void)
{
    return mf_json_pack("{s:o,s:o}", "keys", mf_keypool_json(), "targets",
                        mf_balancer_json());
}

static int
api_set_response_json(mf_req_t *r, json_t *resp)
{
    if (!in_call(r, MF_CALL_PROVIDER)) {
        json_decref(resp);
        return MF_ERR;
    }
    json_decref(r->resp_json);
    r->resp_json = resp;
    return MF_OK;
}

static int
api_emit_chunk(mf_req_t *r, json_t *chunk)
{
    json_t *choices;
    char *text;

    if (!in_call(r, MF_CALL_PROVIDER) || chunk == NULL) {
        json_decref(chunk);
        return MF_ERR;
    }
    choices = json_object_get(chunk, "choices");
    if (!r->client_wants_usage && json_is_array(choices) &&
        json_array_size(choices) == 0 &&
        json_is_object(json_object_get(chunk, "usage"))) {
        json_decref(chunk); /* asked upstream for the host's accounting */
        return MF_OK;
    }
    if (!r->client_wants_usage) {
        json_object_del(chunk, "usage"); /* "usage": null otherwise */
    }
    text = mf_json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    if (text == NULL) {
        return MF_ERR;
    }
    mf_req_emit_event(r, mf_str_from(text), 0);
    free(text);
    return MF_OK;
}

static int
api_set_response_chunk(mf_req_t *r, mf_str_t data)
{
    if (!in_call(r, MF_CALL_SET_RESPONSE_CHUNK)) {
        return MF_ERR;
    }
    r->replace = mf_pool_str(r->pool, data);
    r->replaced = 1;
    return MF_OK;
}

/* ABI 1.5: an event before the one a body stage was given; the stages
 * after it see it as an event of its own (pipeline.c). */
static int
api_insert_response_chunk(mf_req_t *r, mf_str_t data)
{
    mf_str_t *v;

    if (held_callback(r) && data.len > 0) {
        return mf_req_body_insert_held(r, data);
    }
    if (!in_call(r, MF_CALL_INSERT_CHUNK) || !r->stream || data.len == 0) {
        return MF_ERR;
    }
    if (r->nins_pending == r->ins_cap_pending) {
        size_t cap = r->ins_cap_pending ? r->ins_cap_pending * 2 : 4;

        v = mf_pool_alloc(r->pool, cap * sizeof(*v));
        if (v == NULL) {
            return MF_ERR;
        }
        if (r->nins_pending > 0) {
            memcpy(v, r->ins_pending, r->nins_pending * sizeof(*v));
        }
        r->ins_pending = v;
        r->ins_cap_pending = cap;
    }
    r->ins_pending[r->nins_pending++] = mf_pool_str(r->pool, data);
    return MF_OK;
}

/* ABI 1.5: the answer ends at this event (req_relay.c carries it out
 * once the body stages are done with it). */
static int
api_stop_response(mf_req_t *r, int status, const char *type, const char *code,
                  const char *message, mf_str_t final)
{
    int outside = held_callback(r) || body_callback(r) || upstream_callback(r);

    if ((!outside && !in_call(r, MF_CALL_STOP_RESPONSE)) || status < 400 ||
        status > 599 || r->body_stop) {
        return MF_ERR;
    }
    r->body_stop = 1;
    r->stop_status = status;
    r->stop_type =
        mf_pool_strndup(r->pool, type ? type : "invalid_request_error",
                        strlen(type ? type : "invalid_request_error"));
    r->stop_code = code ? mf_pool_strndup(r->pool, code, strlen(code)) : NULL;
    r->stop_message = mf_pool_str(
        r->pool, mf_str_from(message ? message : "the answer was stopped"));
    r->stop_final = mf_pool_str(r->pool, final);
    if (outside) {
        /* from the holding stage's callback: the answer ends now; the
         * events still held are never sent */
        r->body_hold = 0;
        r->end_held = 0;
        mf_req_body_stopped(r);
    }
    return MF_OK;
}

/* ABI 1.6: the canonical request body's new text. */
static int
api_set_body_text(mf_req_t *r, mf_str_t text)
{
    if (!in_call(r, MF_CALL_SET_MODEL)) {
        return MF_ERR; /* on_request, on_route: before any attempt */
    }
    return mf_req_set_body_text(r, text);
}

/* ABI 1.7: edits of the canonical request body's text. */
static int
api_edit_body_text(mf_req_t *r, const mf_body_edit_t *edits, size_t n)
{
    if (!in_call(r, MF_CALL_SET_MODEL) || (edits == NULL && n > 0)) {
        return MF_ERR; /* on_request, on_route: before any attempt */
    }
    return mf_req_edit_body_text(r, edits, n);
}

/* ABI 1.6: a body stage holds a stream's output while its async check
 * runs (req_relay.c releases it). */
static int
api_hold_response(mf_req_t *r, int hold)
{
    if (hold) {
        if (r != NULL && r == fire_req && !r->in_body && !r->finished &&
            !r->body_stop && (!r->body_hold || r->body_hold == fire_stage1)) {
            /* from the body stage's timer: the upstream waits as in
             * on_response_body */
            mf_req_body_hold(r, fire_stage1);
            return MF_OK;
        }
        if (!in_call(r, MF_CALL_INSERT_CHUNK) || !r->stream || r->body_stop ||
            (r->body_hold && (size_t)r->body_hold != r->body_idx + 1)) {
            return MF_ERR;
        }
        mf_req_body_hold(r, (int)r->body_idx + 1);
        return MF_OK;
    }
    if (r == NULL || !r->body_hold) {
        return MF_OK;
    }
    if (r->in_body) {
        if ((size_t)r->body_hold != r->body_idx + 1) {
            return MF_ERR;
        }
        /* let go inside on_response_body: the host carries on as usual */
        mf_req_body_hold(r, 0);
        return MF_OK;
    }
    if (r->finished) {
        return MF_ERR;
    }
    mf_req_body_release(r);
    return MF_OK;
}

static int
api_shared_get(mf_str_t key, char *buf, size_t cap)
{
    return mf_shdict_get(key, buf, cap);
}

static int
api_shared_set(mf_str_t key, mf_str_t value, uint64_t ttl_ms)
{
    return mf_shdict_set(key, value, ttl_ms);
}

static int
api_shared_incr(mf_str_t key, int64_t delta, uint64_t ttl_ms, int64_t *result)
{
    return mf_shdict_incr(key, delta, ttl_ms, result);
}

static int
api_shared_delete(mf_str_t key)
{
    return mf_shdict_delete(key);
}

typedef struct {
    mf_req_t *r;
    mf_timer_cb cb;
    void *arg;
    int stage1; /* a stream's body stage (index + 1) set it, else 0 */
} timer_arg_t;

static void
timer_fire(evutil_socket_t fd, short what, void *arg)
{
    timer_arg_t *t = arg;

    MF_UNUSED(fd);
    MF_UNUSED(what);
    fire_req = t->stage1 ? t->r : NULL;
    fire_stage1 = t->stage1;
    t->cb(t->r, t->arg, NULL); /* r may be gone after it */
    fire_req = NULL;
    fire_stage1 = 0;
}

static int
api_timer(mf_req_t *r, uint64_t ms, mf_timer_cb cb, void *arg)
{
    timer_arg_t *t;
    struct timeval tv;
    int stage1 = 0;

    /* ABI 1.6: a stream's body stage (which does not pause), in
     * on_response_body, its held callbacks or its own timer's */
    if (r != NULL && r->stream && !r->finished) {
        if (in_call(r, MF_CALL_INSERT_CHUNK)) {
            stage1 = (int)r->body_idx + 1;
        } else if (held_callback(r)) {
            stage1 = r->body_hold;
        } else if (r == fire_req) {
            stage1 = fire_stage1;
        }
    }
    if ((stage1 == 0 && !can_pause(r)) || cb == NULL) {
        return MF_ERR;
    }
    t = mf_pool_alloc(r->pool, sizeof(*t));
    if (t == NULL) {
        return MF_ERR;
    }
    t->r = r;
    t->cb = cb;
    t->arg = arg;
    t->stage1 = stage1;
    if (r->timer != NULL) {
        event_free(r->timer);
    }
    r->timer = evtimer_new(r->worker->base, timer_fire, t);
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    evtimer_add(r->timer, &tv);
    return MF_OK;
}

static int
api_http_call(mf_req_t *r, const char *method, mf_str_t url,
              const mf_str_t *headers, size_t nheaders, mf_str_t body,
              uint64_t timeout_ms, mf_http_cb cb, void *arg)
{
    if (!can_call(r) || cb == NULL) {
        return MF_ERR;
    }
    return mf_svc_http_call(r, method, url, headers, nheaders, body, timeout_ms,
                            cb, arg);
}

static int
api_model_call(mf_req_t *r, const mf_model_call_t *call, mf_http_cb cb,
               void *arg)
{
    if (!can_call(r) || cb == NULL || call == NULL ||
        call->size < sizeof(mf_model_call_t) ||
        (call->kind != MF_MODEL_CHAT && call->kind != MF_MODEL_EMBEDDINGS)) {
        return MF_ERR;
    }
    return mf_svc_model_call(r, call, cb, arg);
}

static int
api_redis_command(mf_req_t *r, int argc, const mf_str_t *argv, mf_redis_cb cb,
                  void *arg)
{
    if (!can_pause(r) || cb == NULL || argv == NULL) {
        return MF_ERR;
    }
    return mf_svc_redis_command(r, argc, argv, cb, arg);
}

/* redis_post: the callback runs on the worker with the post it answers
 * as the thread's current one, so it may post again without a request. */
typedef struct {
    mf_redis_post_cb cb;
    void *arg;
    mf_worker_t *w;
    json_t *conf;
} post_t;

static __thread post_t *cur_post;

static void
post_done(void *arg, const mf_redis_reply_t *reply, const char *err)
{
    post_t *p = arg, *prev = cur_post;

    cur_post = p;
    if (p->cb != NULL) {
        p->cb(p->arg, reply, err);
    }
    cur_post = prev;
    json_decref(p->conf);
    free(p);
}

static int
api_redis_post(mf_req_t *r, int argc, const mf_str_t *argv, mf_redis_post_cb cb,
               void *arg)
{
    mf_worker_t *w;
    json_t *conf;
    post_t *p;

    if (r != NULL) {
        if (!in_call(r, MF_CALL_READ)) {
            return MF_ERR;
        }
        w = r->worker;
        conf = r->gen->config->redis;
    } else if (cur_post != NULL) {
        w = cur_post->w;
        conf = cur_post->conf;
    } else {
        return MF_ERR;
    }
    if (conf == NULL || argv == NULL || w == NULL) {
        return MF_ERR;
    }
    p = mf_xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->arg = arg;
    p->w = w;
    p->conf = json_incref(conf);
    if (mf_svc_redis_raw(w, conf, argc, argv, post_done, p) != MF_OK) {
        json_decref(p->conf);
        free(p);
        return MF_ERR;
    }
    return MF_OK;
}

static int
api_set_query(mf_req_t *r, mf_str_t query)
{
    if (!in_call(r, MF_CALL_SET_QUERY) ||
        (query.len > 0 && query.data == NULL)) {
        return MF_ERR;
    }
    r->query = query.len > 0 ? mf_pool_str(r->pool, query) : MF_STR_NULL;
    return MF_OK;
}

static json_t *
api_redis_call(int argc, const mf_str_t *argv, char *err, size_t errcap)
{
    json_t *conf = mf_gen_redis_conf(), *out;
    char none[8];

    if (err == NULL || errcap == 0) {
        err = none;
        errcap = sizeof(none);
    }
    out = mf_svc_redis_sync(conf, argc, argv, err, errcap);
    json_decref(conf);
    return out;
}

static void **
api_provider_ctx(mf_req_t *r)
{
    static __thread void *none; /* outside a provider: a slot of nothing */

    if (!in_call(r, MF_CALL_PROVIDER)) {
        none = NULL;
        return &none;
    }
    return &r->att.prov_ctx;
}

static const char *
pool_cstr(mf_req_t *r, const char *s)
{
    return s ? mf_pool_strndup(r->pool, s, strlen(s)) : NULL;
}

static int
api_set_error(mf_req_t *r, const mf_error_t *err)
{
    mf_error_t *e;

    if (!in_call(r, MF_CALL_PROVIDER) || err == NULL || err->status < 400 ||
        err->status > 599) {
        return MF_ERR;
    }
    e = mf_pool_alloc(r->pool, sizeof(*e));
    if (e == NULL) {
        return MF_ERR;
    }
    *e = *err;
    e->message[sizeof(e->message) - 1] = '\0';
    e->type = pool_cstr(r, err->type ? err->type : "upstream_error");
    e->code = pool_cstr(r, err->code);
    r->att.prov_err = e;
    return MF_OK;
}

/* ABI 1.4: endpoints and metrics */

static int
api_add_endpoint(const mf_endpoint_def_t *def)
{
    char err[512];

    if (def != NULL && def->size >= sizeof(*def) && def->handler == NULL) {
        mf_log_error("add_endpoint %s: a handler is needed",
                     def->path ? def->path : "");
        return MF_ERR;
    }
    if (mf_endpoints_collect_add(def, -1, err, sizeof(err)) != MF_OK) {
        mf_log_error("%s", err);
        return MF_ERR;
    }
    return MF_OK;
}

/* ABI 1.6: a virtual model a stage declares in its init */
static int
api_declare_model(const char *name)
{
    char err[300];

    if (mf_gen_loading_declare_model(name, err, sizeof(err)) != MF_OK) {
        mf_log_error("declare_model: %s", err);
        return MF_ERR;
    }
    return MF_OK;
}

/* ABI 1.8 (hook masks): hooks a stage instance leaves out, in its init */
static int
api_skip_hooks(unsigned hooks)
{
    char err[200];

    if (mf_gen_loading_skip_hooks(hooks, err, sizeof(err)) != MF_OK) {
        mf_log_error("skip_hooks: %s", err);
        return MF_ERR;
    }
    return MF_OK;
}

/* ABI 1.8: the upstream traceparent, "00-<trace>-<span>-<flags>", made
 * here from the request's trace and the open attempt's span id: hex
 * digits and dashes of known length, set without the check a stage's
 * value gets, and not checked when the head is written while the list
 * still holds this value (r->att.tp_made) */
static int
api_set_traceparent(mf_req_t *r)
{
    char *tp;

    if (r == NULL || r->cur_stage != MF_STAGE_UPSTREAM_REQUEST ||
        !in_call(r, MF_CALL_SET_UPSTREAM_HEADER) || !r->att.open ||
        (tp = mf_pool_alloc(r->pool, 55)) == NULL) {
        return MF_ERR;
    }
    req_trace(r);
    memcpy(tp, "00-", 3);
    memcpy(tp + 3, r->trace_id, 32);
    tp[35] = '-';
    memcpy(tp + 36, r->att.span_id, 16);
    memcpy(tp + 52, r->trace_sampled ? "-01" : "-00", 3);
    r->att.tp_made = tp;
    return mf_hlist_set_made(r->pool, &r->att.up_req_headers,
                             MF_STR("traceparent"), (mf_str_t){tp, 55});
}

/* ABI 1.5: stage-made answers and the answer record */

static int
api_emit_event(mf_req_t *r, mf_str_t data, int last)
{
    if (!in_call(r, MF_CALL_STAGE_ANSWER)) {
        return MF_ERR;
    }
    return mf_req_stage_event(r, data, last);
}

/* ABI 1.6 (cache): a stage's own stream ends with an error event. */
static int
api_emit_stream_error(mf_req_t *r, const char *code, const char *message)
{
    if (!in_call(r, MF_CALL_STAGE_ANSWER) || message == NULL) {
        return MF_ERR;
    }
    return mf_req_stage_stream_error(r, code, message);
}

static int
api_respond_completion(mf_req_t *r, mf_str_t completion)
{
    if (!in_call(r, MF_CALL_STAGE_ANSWER) || r->stage_stream != 0) {
        return MF_ERR;
    }
    return mf_req_respond_canonical(r, completion);
}

static int
api_record_answer(mf_req_t *r)
{
    if (!in_call(r, MF_CALL_STAGE_ANSWER)) {
        return MF_ERR;
    }
    r->record = 1;
    return MF_OK;
}

static json_t *
api_get_answer(mf_req_t *r)
{
    if (!in_call(r, MF_CALL_GET_ANSWER)) {
        return NULL;
    }
    return mf_req_answer(r);
}

static int
api_get_answer_event(mf_req_t *r, size_t i, mf_str_t *data)
{
    if (!in_call(r, MF_CALL_GET_ANSWER) || data == NULL) {
        return MF_ERR;
    }
    return mf_req_answer_event(r, i, data);
}

static int
api_watch_answer(mf_req_t *r, mf_answer_watch_fn cb, void *arg)
{
    if (!in_call(r, MF_CALL_STAGE_ANSWER) || !r->stream || cb == NULL) {
        return MF_ERR;
    }
    r->record = 1;
    r->rec_watch = cb;
    r->rec_watch_arg = arg;
    return MF_OK;
}

static int
api_set_cached(mf_req_t *r, int counted)
{
    if (!in_call(r, MF_CALL_SET_CACHED)) {
        return MF_ERR;
    }
    r->cached = counted ? 2 : 1;
    return MF_OK;
}

static int
api_get_body_text(mf_req_t *r, mf_str_t *text)
{
    if (!in_call(r, MF_CALL_SET_BODY) || text == NULL) {
        return MF_ERR;
    }
    return mf_req_body_text(r, text);
}

static int
api_get_response_text(mf_req_t *r, mf_str_t *text)
{
    char *t;

    if (!in_call(r, MF_CALL_READ) || text == NULL || r->stream ||
        r->head_sent || r->att.prov == NULL ||
        (r->phase != MF_PHASE_UPSTREAM_RESPONSE &&
         r->phase != MF_PHASE_RESPONSE_HEADERS) ||
        r->att.up_status < 200 || r->att.up_status >= 300) {
        return MF_ERR;
    }
    if (r->resp_json == NULL) {
        text->data = r->up_buf.data ? r->up_buf.data : "";
        text->len = r->up_buf.len;
        return MF_OK;
    }
    t = mf_json_dumps(r->resp_json, JSON_COMPACT);
    if (t == NULL) {
        return MF_ERR;
    }
    *text = mf_pool_str(r->pool, mf_str_from(t));
    free(t);
    return MF_OK;
}

static int
api_get_body(mf_req_t *r, mf_str_t *body)
{
    if (!in_call(r, MF_CALL_READ) || body == NULL) {
        return MF_ERR;
    }
    body->data = r->body.data ? r->body.data : "";
    body->len = r->body.len;
    return MF_OK;
}

static mf_metric_t *
api_metric_declare(const mf_metric_def_t *def)
{
    char err[256];
    mf_metric_t *m = mf_metric_declare(def, err, sizeof(err));

    if (m == NULL) {
        mf_log_error("metric_declare: %s", err);
    }
    return m;
}

static int
api_metrics_render(mf_req_t *r, int format, mf_str_t *out)
{
    mf_buf_t b = {0};

    if (!in_call(r, MF_CALL_READ) || out == NULL ||
        (format != MF_METRICS_PROMETHEUS && format != MF_METRICS_OPENMETRICS)) {
        return MF_ERR;
    }
    mf_metrics_render(&b, format);
    *out = mf_pool_str(r->pool, (mf_str_t){b.data ? b.data : "", b.len});
    mf_buf_free(&b);
    return out->data != NULL ? MF_OK : MF_ERR;
}

const mf_host_api_t mf_api = {
    .size = sizeof(mf_host_api_t),
    .abi_major = MF_ABI_MAJOR,
    .abi_minor = MF_ABI_MINOR,
    .log = api_log,
    .palloc = api_palloc,
    .get_info = api_get_info,
    .get_header = api_get_header,
    .set_header = api_set_header,
    .get_body_json = api_get_body_json,
    .body_changed = api_body_changed,
    .get_model = api_get_model,
    .set_model = api_set_model,
    .clear_targets = api_clear_targets,
    .add_target = api_add_target,
    .get_target = api_get_target,
    .set_consumer = api_set_consumer,
    .respond = api_respond,
    .respond_error = api_respond_error,
    .resume = api_resume,
    .set_upstream_url = api_set_upstream_url,
    .set_upstream_body = api_set_upstream_body,
    .set_usage = api_set_usage,
    .set_response_json = api_set_response_json,
    .emit_chunk = api_emit_chunk,
    .set_response_chunk = api_set_response_chunk,
    .shared_get = api_shared_get,
    .shared_set = api_shared_set,
    .shared_incr = api_shared_incr,
    .shared_delete = api_shared_delete,
    .timer = api_timer,
    .http_call = api_http_call,
    .redis_command = api_redis_command,
    .provider_ctx = api_provider_ctx,
    .set_error = api_set_error,
    .get_body_field = api_get_body_field,
    /* ABI 1.4: consumers and plugin admin commands */
    .set_consumer_record = api_set_consumer_record,
    .get_consumer = api_get_consumer,
    .get_consumer_attr = api_get_consumer_attr,
    .config_section = api_config_section,
    .register_command = api_register_command,
    .respond_error_code = api_respond_error_code,
    /* ABI 1.4: endpoints and metrics */
    .add_endpoint = api_add_endpoint,
    .get_body = api_get_body,
    .metric_declare = api_metric_declare,
    .metric_add = mf_metric_add,
    .metric_set = mf_metric_set,
    .metric_observe = mf_metric_observe,
    .metrics_render = api_metrics_render,
    /* ABI 1.4: model calls from stages */
    .model_call = api_model_call,
    /* ABI 1.4: Redis beyond a paused stage, the query */
    .redis_post = api_redis_post,
    .redis_call = api_redis_call,
    .set_query = api_set_query,
    /* ABI 1.5: stream events from body stages */
    .insert_response_chunk = api_insert_response_chunk,
    .stop_response = api_stop_response,
    /* ABI 1.5: observability (usage detail, attempts, upstream health) */
    .set_cache_write_tokens = api_set_cache_write_tokens,
    .get_attempt = api_get_attempt,
    .upstream_health = api_upstream_health,
    .keep_memory = api_keep_memory,
    /* ABI 1.5: stage-made answers and the answer record */
    .emit_event = api_emit_event,
    .respond_completion = api_respond_completion,
    .record_answer = api_record_answer,
    .get_answer = api_get_answer,
    .get_answer_event = api_get_answer_event,
    .set_cached = api_set_cached,
    .watch_answer = api_watch_answer,
    .get_body_text = api_get_body_text,
    .get_response_text = api_get_response_text,
    /* ABI 1.5: model calls checked at load */
    .model_check = mf_gen_loading_model_check,
    /* ABI 1.6 (metric series): written by number */
    .metric_series = mf_metric_series,
    .metric_add_at = mf_metric_add_at,
    .metric_observe_at = mf_metric_observe_at,
    /* ABI 1.6 (protocols): an upstream wire per attempt; declared models */
    .set_upstream_wire = api_set_upstream_wire,
    .declare_model = api_declare_model,
    /* ABI 1.6 (guard): a body stage holds a stream's output; the mask
     * stage's raw body */
    .hold_response = api_hold_response,
    .set_body_text = api_set_body_text,
    /* ABI 1.6 (cache): a stage's own stream ends with an error event */
    .emit_stream_error = api_emit_stream_error,
    /* ABI 1.7 (body edits): a stage's edits of the body's text */
    .edit_body_text = api_edit_body_text,
    /* ABI 1.8 (hook masks): hooks an instance leaves out; the upstream
     * traceparent */
    .skip_hooks = api_skip_hooks,
    .set_traceparent = api_set_traceparent,
};
