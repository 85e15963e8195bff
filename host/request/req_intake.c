/*
 * Request intake: a request from the connection's head and body, the
 * gateway's own paths (health without stages; model lists, count_tokens
 * and stored Responses through on_request, MF_PHASE_LOCAL), refusals, and
 * the body's checks (shape scan, parse, model) before the phase loop
 * starts.
 */
#include <manifold/json.h>

#include "request/request-int.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "http/guard.h"
#include "http/server.h"
#include "pipeline/endpoint.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"
#include "routing/modellist.h"
#include "proto/proto.h"
#include "request/jscan.h"
#include "svc/svc.h"

static void
respond_json(mf_req_t *r, int status, json_t *j)
{
    char *text = mf_json_dumps(j, JSON_COMPACT);

    mf_req_respond(r, status, "application/json", mf_str_from(text));
    free(text);
    json_decref(j);
}

/* A model id from a path, percent-decoded into buf; 0 when it is empty,
 * too long or holds a NUL or a control byte. */
static int
model_id(mf_str_t id, char *buf, size_t cap)
{
    size_t i, n = 0;

    for (i = 0; i < id.len; i++) {
        unsigned char ch = (unsigned char)id.data[i];

        if (ch == '%' && i + 2 < id.len &&
            isxdigit((unsigned char)id.data[i + 1]) &&
            isxdigit((unsigned char)id.data[i + 2])) {
            char hex[3] = {id.data[i + 1], id.data[i + 2], '\0'};

            ch = (unsigned char)strtol(hex, NULL, 16);
            i += 2;
        }
        if (ch < 0x20 || ch == 0x7f || n + 1 >= cap) {
            return 0;
        }
        buf[n++] = (char)ch;
    }
    buf[n] = '\0';
    return n > 0;
}

/* Whether stage sc of the config lists its models: while it is enabled
 * (its config's enabled:, or the admin API's enable/disable since). Its
 * models: those of its `models:`, then those it declared in its init
 * (*declared, of its loaded instance). */
static int
stage_lists(mf_gen_t *g, const mf_stage_conf_t *sc, char ***declared,
            size_t *ndeclared)
{
    mf_pstage_t *s = mf_gen_find_stage(g, sc->name);

    *declared = s != NULL ? s->models : NULL;
    *ndeclared = s != NULL ? s->nmodels : 0;
    if (sc->nmodels == 0 && *ndeclared == 0) {
        return 0;
    }
    return s != NULL ? atomic_load(&s->enabled) : sc->enabled;
}

/* The j-th model stage sc lists (its config's, then its declared ones). */
static const char *
stage_model(const mf_stage_conf_t *sc, char **declared, size_t j)
{
    return j < sc->nmodels ? sc->models[j] : declared[j - sc->nmodels];
}

/* A model list: the exact names providers serve (models and model_map),
 * the routes' exact names and the models enabled stages declare (virtual
 * models), once each (globs are not listed), in the shape of the adapter
 * `shape`, as compact JSON (malloc'd, NULL on OOM). */
static char *
models_text(mf_gen_t *g, const mf_proto_t *shape)
{
    json_t *data = json_array(), *seen = json_object(), *list;
    char *text;
    size_t i, j;

    for (i = 0; i < g->nproviders; i++) {
        mf_provider_conf_t *pc = g->providers[i].conf;
        json_t *up = mf_modellist_get(pc), *v;

        for (j = 0; j < pc->nmodels + pc->nmap; j++) {
            const char *m = j < pc->nmodels
                                ? pc->models[j]
                                : pc->model_map[j - pc->nmodels].from;
            mf_proto_model_t e = {m, pc->name};

            if (strpbrk(m, "*?") != NULL || json_object_get(seen, m)) {
                continue;
            }
            json_object_set_new(seen, m, json_true());
            json_array_append_new(data, shape->model(&e));
        }
        /* upstream_models: what its globs serve of the upstream's list */
        json_array_foreach(up, j, v)
        {
            mf_proto_model_t e = {json_string_value(v), pc->name};

            if (pc->disabled || json_object_get(seen, e.id)) {
                continue;
            }
            json_object_set_new(seen, e.id, json_true());
            json_array_append_new(data, shape->model(&e));
        }
        json_decref(up);
    }
    for (i = 0; i < g->config->nroutes; i++) {
        const char *m = g->config->routes[i].model;
        mf_proto_model_t e = {m, "manifold"};

        if (strpbrk(m, "*?") != NULL || json_object_get(seen, m)) {
            continue;
        }
        json_object_set_new(seen, m, json_true());
        json_array_append_new(data, shape->model(&e));
    }
    for (i = 0; i < g->config->nstages; i++) {
        const mf_stage_conf_t *sc = &g->config->stages[i];
        char **declared;
        size_t nd;

        if (!stage_lists(g, sc, &declared, &nd)) {
            continue;
        }
        for (j = 0; j < sc->nmodels + nd; j++) {
            const char *m = stage_model(sc, declared, j);
            mf_proto_model_t e = {m, sc->name};

            if (json_object_get(seen, m)) {
                continue;
            }
            json_object_set_new(seen, m, json_true());
            json_array_append_new(data, shape->model(&e));
        }
    }
    json_decref(seen);
    list = shape->model_list(data);
    text = mf_json_dumps(list, JSON_COMPACT);
    json_decref(list);
    return text;
}

/* A model list's answer as written, shared by the requests that send it
 * (refs), and what it was written from: it stays true while the
 * generation, the upstream lists and the stages' enabled settings do. */
typedef struct {
    atomic_int refs;
    unsigned gen_id, lists, stages;
    size_t len;
    char text[];
} models_doc_t;

#define MODELS_SHAPES 8 /* adapters with a model list, at most */

static pthread_mutex_t models_lock = PTHREAD_MUTEX_INITIALIZER;
static models_doc_t *models_docs[MODELS_SHAPES]; /* by mf_protos[] index */

static void
models_doc_release(models_doc_t *d)
{
    if (d != NULL && atomic_fetch_sub(&d->refs, 1) == 1) {
        free(d);
    }
}

/* GET of a model list (models_text) in the shape of `shape`. The text
 * is written once and answered again until what it was written from
 * changes: a new generation, a changed upstream list (modellist.h), a
 * stage enabled or disabled. */
static void
handle_models(mf_req_t *r, const mf_proto_t *shape)
{
    unsigned lists = mf_modellist_version();
    unsigned stages = mf_stage_enabled_epoch();
    models_doc_t *d = NULL;
    size_t k = 0, len;
    char *text;

    while (mf_protos[k] != NULL && mf_protos[k] != shape) {
        k++;
    }
    if (k < MODELS_SHAPES && mf_protos[k] != NULL) {
        pthread_mutex_lock(&models_lock);
        d = models_docs[k];
        if (d != NULL && d->gen_id == r->gen->id && d->lists == lists &&
            d->stages == stages) {
            atomic_fetch_add(&d->refs, 1);
        } else {
            d = NULL;
        }
        pthread_mutex_unlock(&models_lock);
    }
    if (d != NULL) {
        mf_req_respond(r, 200, "application/json", (mf_str_t){d->text, d->len});
        models_doc_release(d);
        return;
    }
    text = models_text(r->gen, shape);
    if (text == NULL) {
        mf_req_respond_error(r, 503, "server_error", NULL,
                             "out of memory writing the model list");
        return;
    }
    len = strlen(text);
    mf_req_respond(r, 200, "application/json", (mf_str_t){text, len});
    if (k < MODELS_SHAPES && mf_protos[k] != NULL &&
        (d = malloc(sizeof(*d) + len + 1)) != NULL) {
        atomic_init(&d->refs, 1);
        d->gen_id = r->gen->id;
        d->lists = lists;
        d->stages = stages;
        d->len = len;
        memcpy(d->text, text, len + 1);
        pthread_mutex_lock(&models_lock);
        models_doc_release(models_docs[k]);
        models_docs[k] = d;
        pthread_mutex_unlock(&models_lock);
    }
    free(text);
}

/* GET of one model: the model when a route, an enabled stage (a model
 * it declares) or a provider serves it (an exact name or one of its
 * globs), else a 404 naming it. */
static void
handle_model(mf_req_t *r, const mf_proto_t *shape, mf_str_t id)
{
    mf_gen_t *g = r->gen;
    const char *owner = NULL;
    char name[256], msg[400];
    size_t i, j;

    if (model_id(id, name, sizeof(name))) {
        mf_str_t n = mf_str_from(name);

        for (i = 0; i < g->config->nroutes && owner == NULL; i++) {
            if (mf_glob_match(g->config->routes[i].model, n)) {
                owner = "manifold";
            }
        }
        for (i = 0; i < g->config->nstages && owner == NULL; i++) {
            const mf_stage_conf_t *sc = &g->config->stages[i];
            char **declared;
            size_t nd;

            if (!stage_lists(g, sc, &declared, &nd)) {
                continue;
            }
            for (j = 0; j < sc->nmodels + nd && owner == NULL; j++) {
                if (strcmp(stage_model(sc, declared, j), name) == 0) {
                    owner = sc->name;
                }
            }
        }
        for (i = 0; i < g->nproviders && owner == NULL; i++) {
            mf_provider_conf_t *pc = g->providers[i].conf;

            for (j = 0; j < pc->nmodels + pc->nmap && owner == NULL; j++) {
                const char *m = j < pc->nmodels
                                    ? pc->models[j]
                                    : pc->model_map[j - pc->nmodels].from;

                if (!pc->disabled && mf_glob_match(m, n)) {
                    owner = pc->name;
                }
            }
        }
    }
    if (owner == NULL) {
        snprintf(msg, sizeof(msg),
                 "The model '%.*s' does not exist or is not served by this "
                 "gateway.",
                 (int)(id.len > 200 ? 200 : id.len), id.data);
        mf_req_respond_error_param(r, 404, "invalid_request_error",
                                   "model_not_found", "model", msg);
        return;
    }
    {
        mf_proto_model_t e = {name, owner};

        respond_json(r, 200, shape->model(&e));
    }
}

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
        mf_req_respond_error_param(r, 400, "invalid_request_error",
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
    mf_req_respond_error_param(r, 400, "invalid_request_error",
                               "json_too_large", param[0] ? param : NULL, msg);
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
        r->json =
            mf_json_loadb(r->body.data, r->body.len, JSON_ALLOW_NUL, NULL);
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
    text = v ? mf_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (text == NULL) {
        return MF_ERR;
    }
    *value = mf_pool_str(r->pool, mf_str_from(text));
    free(text);
    return MF_OK;
}

int
mf_req_set_body_text(mf_req_t *r, mf_str_t text)
{
    const mf_limits_t *lim = &r->gen->config->limits;
    mf_jscan_t *js;
    mf_str_t copy;

    if (!r->proto->canonical || text.len == 0 || text.data == NULL) {
        return MF_ERR;
    }
    js = mf_pool_alloc(r->pool, sizeof(*js));
    copy = mf_pool_str(r->pool, text);
    if (js == NULL || copy.data == NULL) {
        return MF_ERR;
    }
    js->max_depth = lim->max_json_depth;
    js->max_values = lim->max_json_values;
    js->max_messages = lim->max_messages;
    if (mf_jscan_body(copy, js) != MF_OK) {
        return MF_ERR; /* not a JSON object within the limits */
    }
    if (r->body_own == NULL) {
        /* the client's bytes stay until the end: a stage may hold a
         * field it borrowed from them */
        r->body_own = (char *)r->body.data;
    }
    json_decref(r->json);
    r->json = NULL;
    r->body = copy;
    r->body_scan = js;
    r->body_lazy = 1;
    r->body_dirty = 0;
    return MF_OK;
}

int
mf_req_body_text(mf_req_t *r, mf_str_t *text)
{
    char *t;

    if (r->json == NULL && r->body_lazy) {
        *text = r->body; /* the client's canonical bytes, untouched */
        return MF_OK;
    }
    t = r->json != NULL ? mf_json_dumps(r->json, JSON_COMPACT) : NULL;
    if (t == NULL) {
        return MF_ERR;
    }
    *text = mf_pool_str(r->pool, mf_str_from(t));
    free(t);
    return text->data != NULL ? MF_OK : MF_ERR;
}

/* Whether a chat body names a prompt template (a `template:` model or
 * a `prompt` object): a template stage supplies its messages, so they
 * may be absent or empty. */
static int
names_template(json_t *body)
{
    const char *m = json_string_value(json_object_get(body, "model"));

    return (m != NULL && strncmp(m, "template:", 9) == 0) ||
           json_is_object(json_object_get(body, "prompt"));
}

void
mf_req_respond_count_estimate(mf_req_t *r)
{
    mf_hlist_set(r->pool, &r->resp_headers,
                 MF_STR("x-manifold-tokens-estimated"), MF_STR("true"));
    mf_req_respond(r, 200, "application/json", r->count_estimate);
}

/* A token count the first target's provider counts itself (it has
 * parse_count): the request becomes a routed call whose upstream
 * endpoint is MF_ENDPOINT_COUNT_TOKENS (on_route does not run: the
 * model is the one asked); 1 when it goes on (r->phase set), 0 when the
 * estimate is the answer. */
static int
count_upstream(mf_req_t *r)
{
    const char *err = NULL;
    mf_proto_call_t call = mf_req_proto_call(r);
    json_t *canon, *m;

    if (r->proto->count_request == NULL) {
        return 0;
    }
    canon = r->proto->count_request(&call, r->json, &err);
    m = json_object_get(canon, "model");
    if (canon == NULL || !json_is_string(m) || json_string_length(m) == 0) {
        json_decref(canon);
        return 0; /* the estimate, which checked the same body */
    }
    r->model = mf_pool_str(
        r->pool, (mf_str_t){json_string_value(m), json_string_length(m)});
    r->model_asked = r->model;
    mf_req_route_default(r);
    if (r->ntargets == 0 || !mf_req_attempt_first(r)) {
        json_decref(canon);
        return 0;
    }
    json_decref(r->json);
    r->json = canon;
    r->body_dirty = 1;
    r->count_mode = 1;
    return mf_req_attempt_prepare(r) == MF_OK ? 1 : -1;
}

/* An endpoint the adapter answers itself (Anthropic's count_tokens,
 * Gemini's countTokens), once on_request ran (MF_PHASE_LOCAL): with its
 * own answer, or for a count whose provider counts tokens, with that
 * provider's count (count_upstream); 1 when the request goes upstream,
 * 0 when it is answered. */
static int
answer_local(mf_req_t *r)
{
    const char *err = NULL;
    int status = 200, estimated = 0, rc;
    mf_proto_call_t call = mf_req_proto_call(r);
    char *text = r->proto->local(&call, r->json, &status, &estimated, &err);

    if (text == NULL) {
        mf_req_respond_error(r, 400, "invalid_request_error", NULL,
                             err ? err : "The request could not be read.");
        return 0;
    }
    if (estimated) {
        r->count_estimate = mf_pool_str(r->pool, mf_str_from(text));
        free(text);
        rc = count_upstream(r);
        if (rc != 0) {
            return rc > 0;
        }
        mf_req_respond_count_estimate(r);
        return 0;
    }
    mf_req_respond(r, status, "application/json", mf_str_from(text));
    free(text);
    return 0;
}

/* What intake waits on (the response store's entry, read from Redis). */
enum { INTAKE_NONE = 0, INTAKE_BODY, INTAKE_RESOURCE };
#define INTAKE_WAITING 1 /* parse_body: the request waits; not answered */
#define INTAKE_LOCAL 2   /* parse_body: the gateway answers (MF_PHASE_LOCAL) */

/* What MF_PHASE_LOCAL answers once on_request ran (r->local_what). */
enum { LOCAL_NONE = 0, LOCAL_MODELS, LOCAL_ADAPTER, LOCAL_RESOURCE };

/* Starts MF_PHASE_LOCAL: stages see MF_ENDPOINT_LOCAL (no model call,
 * nothing to meter), then mf_req_local_end answers. */
static void
start_local(mf_req_t *r, int what)
{
    r->local_what = what;
    r->endpoint = MF_ENDPOINT_LOCAL;
    r->phase = MF_PHASE_LOCAL;
    mf_req_step(r);
}

static int canonical_body(mf_req_t *r);

static int
parse_body(mf_req_t *r)
{
    json_error_t jerr;
    char msg[512];

    if (r->body.len == 0) {
        mf_req_respond_error(r, 400, "invalid_request_error", NULL,
                             "The request has no body; send a JSON object.");
        return MF_ERR;
    }
    if (r->proto->canonical && scan_body(r) == MF_OK) {
        return MF_OK;
    }
    if (check_body_shape(r) != MF_OK) {
        return MF_ERR;
    }
    r->json = mf_json_loadb(r->body.data, r->body.len, JSON_ALLOW_NUL, &jerr);
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
    if (r->proto_local) {
        json_t *m = json_object_get(r->json, "model");

        /* the model it names (Anthropic's), for the stages that check
         * who may use which model; none: a stage sees no model */
        if (json_is_string(m) && json_string_length(m) > 0) {
            r->model = mf_pool_str(r->pool, (mf_str_t){json_string_value(m),
                                                       json_string_length(m)});
            r->model_asked = r->model;
        }
        return INTAKE_LOCAL;
    }
    if (mf_req_store_fetch(r, r->json)) {
        r->intake_wait = INTAKE_BODY; /* mf_req_intake_resume goes on */
        return INTAKE_WAITING;
    }
    return canonical_body(r);
}

/* The parsed body to the canonical request (the adapter's `request`) and
 * its checks. */
static int
canonical_body(mf_req_t *r)
{
    mf_proto_call_t call;
    json_t *model, *v;
    const char *err = NULL;
    char msg[512];

    if (r->proto->request != NULL) {
        json_t *canon;

        call = mf_req_proto_call(r);
        canon = r->proto->request(&call, r->json, &err);

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
        if ((v != NULL || !names_template(r->json)) &&
            (!json_is_array(v) ||
             (json_array_size(v) == 0 && !names_template(r->json)))) {
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
    if (mf_str_has_control(r->model)) {
        mf_req_respond_error(r, 400, "invalid_request_error", "invalid_model",
                             "The model name holds a control character "
                             "(such as a line break); send the model's "
                             "plain name.");
        return MF_ERR;
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

/* The one constructor of a request: the fields every request has, from
 * its head (NULL when none was read) and the generation it runs on. A
 * served request and one only logged (refused before its head was whole)
 * are built here alike, so the access log sees the same record. */
static mf_req_t *
req_alloc(mf_worker_t *w, mf_gen_t *g, const mf_http_head_t *head,
          const char *client_addr, double start_ms, size_t pool_size)
{
    static const mf_http_head_t none = {.content_length = -1};
    mf_pool_t *pool = mf_pool_create(pool_size);
    mf_req_t *r = mf_pool_alloc(pool, sizeof(*r));

    memset(r, 0, sizeof(*r));
    r->pool = pool;
    r->worker = w;
    r->gen = g;
    r->proto = mf_protos[0]; /* req_new sets the path's own */
    r->start_ms = start_ms;
    r->start_wall = mf_wall_time() - (mf_now_ms() - start_ms) / 1000;
    r->usage.prompt_tokens = r->usage.completion_tokens = -1;
    r->usage.total_tokens = r->usage.cached_tokens = -1;
    r->usage.reasoning_tokens = -1;
    r->cache_write_tokens = -1;
    r->att.key_idx = -1;
    atomic_fetch_add(&w->in_flight, 1);
    r->ctx = mf_pool_alloc(pool, (g->nstages + 1) * sizeof(void *));
    memset(r->ctx, 0, (g->nstages + 1) * sizeof(void *));
    r->id = make_id(r, head != NULL ? head : &none);
    if (head != NULL) {
        r->method = mf_pool_str(pool, head->method);
        r->http10 = head->minor == 0;
        r->path = loggable_path(pool, head->path);
        if (head->target.len > head->path.len + 1) {
            r->query = mf_pool_str(
                pool, (mf_str_t){head->target.data + head->path.len + 1,
                                 head->target.len - head->path.len - 1});
        }
    }
    r->client_addr = mf_pool_str(pool, mf_str_from(client_addr));
    return r;
}

/* A stage's model call (its x-manifold-call holds the process's secret,
 * svc_model.c): its depth, pinned provider and consumer are believed. */
static void
req_trust_call(mf_req_t *r, const mf_http_head_t *head)
{
    size_t i;

    for (i = 0; i < head->nheaders; i++) {
        mf_str_t n = head->headers[i].name, v = head->headers[i].value;

        if (mf_str_caseeq(n, MF_STR("x-manifold-call-depth"))) {
            r->call_depth = v.len == 1 && v.data[0] >= '1' && v.data[0] <= '9'
                                ? v.data[0] - '0'
                                : MF_MODEL_CALL_MAX_DEPTH;
        } else if (mf_str_caseeq(n, MF_STR("x-manifold-call-provider"))) {
            r->call_provider = mf_pool_str(r->pool, v);
        } else if (mf_str_caseeq(n, MF_STR("x-manifold-call-consumer"))) {
            r->consumer = mf_pool_str(r->pool, v);
        }
    }
    if (r->call_depth == 0) {
        r->call_depth = MF_MODEL_CALL_MAX_DEPTH;
    }
}

/* A request from its head and body (taken), tied to the connection, with
 * the CORS headers of an allowed origin; *preflight tells a preflight.
 * The client's x-manifold-* headers are dropped here, before any stage. */
static mf_req_t *
req_new(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
        const char *client_addr, char *body, size_t len, int *preflight)
{
    mf_req_t *r =
        req_alloc(w, mf_gen_acquire(), head, client_addr, mf_now_ms(), 8192);
    size_t i;
    int call = -1;

    r->conn = c;
    r->body.data = body;
    r->body.len = len;
    r->bytes_in = len;
    atomic_fetch_add(&w->requests, 1);
    for (i = 0; i < head->nheaders; i++) {
        mf_str_t name = head->headers[i].name;

        /* x-manifold-* carry identity and control (the group canary rules
         * read, ...): stages set them, a client never does */
        if (name.len >= 11 && strncasecmp(name.data, "x-manifold-", 11) == 0) {
            if (mf_str_caseeq(name, MF_STR("x-manifold-call")) &&
                mf_svc_model_trusted(head->headers[i].value)) {
                call = (int)i;
            }
            continue;
        }
        mf_hlist_set(r->pool, &r->req_headers, name, head->headers[i].value);
    }
    r->listener = mf_conn_listener(c);
    /* the adapter whose path it is answers, errors included */
    r->proto = mf_proto_find(r->path, &r->endpoint, &r->proto_local);
    if (call >= 0) {
        req_trust_call(r, head);
    }
    mf_conn_set_req(c, r);
    *preflight = mf_guard_cors(r->gen->config, head, r->pool, &r->resp_headers);
    return r;
}

/* A path the adapter answers itself (a stored Response): 1 when it did. */
static int
answer_resource(mf_req_t *r)
{
    mf_proto_call_t call = mf_req_proto_call(r);
    int status = 0;
    char *text = NULL;

    if (!r->proto->resource(&call, r->method, &status, &text)) {
        return 0;
    }
    if (status >= 400) {
        mf_req_respond_error(r, status, "invalid_request_error",
                             status == 404 ? "not_found" : NULL,
                             text ? text : "error");
    } else {
        mf_req_respond(r, status, "application/json",
                       mf_str_from(text ? text : "{}"));
    }
    free(text);
    return 1;
}

/* The 404 of a path no adapter serves, listing what the gateway serves
 * (each adapter's endpoints). */
static void
unknown_url(mf_req_t *r)
{
    mf_buf_t b = {0};
    size_t i;

    mf_buf_printf(&b, "Unknown request URL: %.*s %.*s. The gateway serves ",
                  (int)(r->method.len > 16 ? 16 : r->method.len),
                  r->method.data, (int)(r->path.len > 200 ? 200 : r->path.len),
                  r->path.data);
    for (i = 0; mf_protos[i] != NULL; i++) {
        if (mf_protos[i]->endpoints != NULL) {
            mf_buf_printf(&b, "%s, ", mf_protos[i]->endpoints);
        }
    }
    mf_buf_printf(&b, "and GET /healthz.");
    mf_buf_append(&b, "", 1);
    mf_req_respond_error(r, 404, "invalid_request_error", "unknown_url",
                         b.data);
    mf_buf_free(&b);
}

void
mf_req_refuse(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
              const char *client_addr, const mf_req_refusal_t *why)
{
    int preflight;
    mf_req_t *r = req_new(c, w, head, client_addr, NULL, 0, &preflight);

    if (why->retry_after != NULL) {
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("retry-after"),
                     mf_str_from(why->retry_after));
    }
    mf_req_respond_error(r, why->status, why->type, why->code, why->message);
    mf_req_finish(r);
}

/* The gateway's own paths (the endpoint table's built-in entries) */

/* An inbound adapter's path (r->proto, found by req_new): its method,
 * the body decoded and checked (the response-store entry it needs read
 * first when the store is Redis), then the phase loop. */
static void
serve_proto(mf_req_t *r, int arg)
{
    char msg[128];
    int rc;

    MF_UNUSED(arg);
    if (!mf_str_eq_cstr(r->method, r->proto->method)) {
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("allow"),
                     mf_str_from(r->proto->method));
        snprintf(msg, sizeof(msg), "Use %s for this endpoint.",
                 r->proto->method);
        mf_req_respond_error(r, 405, "invalid_request_error", NULL, msg);
        mf_req_finish(r);
        return;
    }
    if (mf_req_decode_body(r) != MF_OK) {
        mf_req_finish(r);
        return;
    }
    rc = parse_body(r);
    if (rc == INTAKE_WAITING) {
        return;
    }
    if (rc == INTAKE_LOCAL) {
        start_local(r, LOCAL_ADAPTER);
        return;
    }
    if (rc != MF_OK || check_model(r) != MF_OK) {
        mf_req_finish(r);
        return;
    }
    r->phase = MF_PHASE_REQUEST;
    mf_req_step(r);
}

void
mf_req_intake_resume(mf_req_t *r)
{
    int wait = r->intake_wait;

    r->intake_wait = INTAKE_NONE;
    if (wait == INTAKE_RESOURCE) {
        if (!answer_resource(r)) {
            unknown_url(r);
        }
        mf_req_finish(r);
        return;
    }
    if (canonical_body(r) != MF_OK || check_model(r) != MF_OK) {
        mf_req_finish(r);
        return;
    }
    r->phase = MF_PHASE_REQUEST;
    mf_req_step(r);
}

/* Whether an inbound adapter serves path (or answers it itself). */
static int
proto_claims(mf_str_t path)
{
    mf_endpoint_t endpoint;
    int local;

    mf_proto_find(path, &endpoint, &local);
    return endpoint != MF_ENDPOINT_NONE;
}

/* The adapter whose model list a path is: the request's own, or one
 * whose clients send a header this request has (anthropic-version on
 * /v1/models); *id set for one model. NULL when none. */
static const mf_proto_t *
models_shape(mf_req_t *r, mf_str_t *id)
{
    size_t i;

    for (i = 0; mf_protos[i] != NULL; i++) {
        mf_str_t hv;

        if (mf_protos[i]->models_header != NULL &&
            mf_protos[i]->models_path != NULL &&
            mf_hlist_get(&r->req_headers,
                         mf_str_from(mf_protos[i]->models_header),
                         &hv) == MF_OK &&
            mf_protos[i]->models_path(r->path, id)) {
            return mf_protos[i];
        }
    }
    if (r->proto->models_path != NULL && r->proto->models_path(r->path, id)) {
        return r->proto;
    }
    return NULL;
}

/* Whether an adapter lists models at path (/v1/models, /models,
 * /v1/models/{id}, /v1beta/models, ...). */
static int
models_claims(mf_str_t path)
{
    mf_str_t id;
    size_t i;

    for (i = 0; mf_protos[i] != NULL; i++) {
        if (mf_protos[i]->models_path != NULL &&
            mf_protos[i]->models_path(path, &id)) {
            return 1;
        }
    }
    return 0;
}

/* GET of a model list or one model, in the shape the caller expects
 * (errors included), answered after on_request (mf_req_local_end). */
static void
serve_models(mf_req_t *r, int arg)
{
    mf_str_t id = MF_STR_NULL;
    const mf_proto_t *shape = models_shape(r, &id);

    MF_UNUSED(arg);
    if (shape == NULL) {
        unknown_url(r);
        mf_req_finish(r);
        return;
    }
    r->proto = shape;
    start_local(r, LOCAL_MODELS);
}

/* The model list or the one model r->proto's path names. */
static void
answer_models(mf_req_t *r)
{
    mf_str_t id = MF_STR_NULL;

    if (!r->proto->models_path(r->path, &id)) {
        unknown_url(r);
    } else if (id.data != NULL) {
        handle_model(r, r->proto, id);
    } else {
        handle_models(r, r->proto);
    }
}

/* Whether an adapter answers path itself as a resource (GET and DELETE
 * /v1/responses/{id}). */
static int
resource_claims(mf_str_t path)
{
    mf_proto_call_t call = {.path = path};
    mf_str_t id;
    int del;
    size_t i;

    for (i = 0; mf_protos[i] != NULL; i++) {
        if (mf_protos[i]->resource != NULL && mf_protos[i]->store_key != NULL &&
            mf_protos[i]->store_key(&call, NULL, MF_STR("GET"), &id, &del)) {
            return 1;
        }
    }
    return 0;
}

/* A resource path (r->proto's, found by req_new): answered after
 * on_request (mf_req_local_end), which names the consumer whose entries
 * it may see. */
static void
serve_resource(mf_req_t *r, int arg)
{
    MF_UNUSED(arg);
    if (r->proto->resource == NULL) {
        unknown_url(r);
        mf_req_finish(r);
        return;
    }
    start_local(r, LOCAL_RESOURCE);
}

int
mf_req_local_end(mf_req_t *r)
{
    (void)mf_req_store_owner_ok(r); /* reads compare owners from here */
    switch (r->local_what) {
    case LOCAL_MODELS:
        answer_models(r);
        break;
    case LOCAL_ADAPTER:
        if (answer_local(r)) {
            return 1; /* counted upstream: the attempt's phase */
        }
        if (r->finished) {
            return 0;
        }
        break;
    case LOCAL_RESOURCE:
        /* read from the store (first from Redis when it is there) */
        if (mf_req_store_fetch(r, NULL)) {
            r->intake_wait = INTAKE_RESOURCE; /* mf_req_intake_resume */
            return 0;
        }
        if (!answer_resource(r)) {
            unknown_url(r);
        }
        break;
    default:
        unknown_url(r);
        break;
    }
    mf_req_finish(r);
    return 0;
}

void
mf_req_respond_prev_unknown(mf_req_t *r)
{
    /* the very answer of an unknown id (the Responses adapter's): whether
     * another consumer's id exists is not told */
    mf_req_respond_error(r, 400, "invalid_request_error", NULL,
                         mf_proto_prev_unknown);
}

static void
serve_health(mf_req_t *r, int arg)
{
    MF_UNUSED(arg);
    mf_req_respond(r, 200, "application/json", MF_STR("{\"status\":\"ok\"}"));
    mf_req_finish(r);
}

#define CLIENT(m, p, fn, a)                                                    \
    {                                                                          \
        .listener = MF_LISTENER_CLIENT, .method = (m), .path = (p),            \
        .builtin = (fn), .builtin_arg = (a)                                    \
    }

static const mf_epath_t builtin_paths[] = {
    /* every path an inbound adapter serves (proto/: chat completions,
     * messages, responses, embeddings, ...), any method: the adapter
     * says which one it takes */
    {.listener = MF_LISTENER_CLIENT,
     .path = "(the inbound adapters' paths)",
     .claims = proto_claims,
     .builtin = serve_proto},
    /* model lists, in the shape of the adapter whose path or header it
     * is: /v1/models, /models, /v1/models/{id}, /v1beta/models, ... */
    {.listener = MF_LISTENER_CLIENT,
     .method = "GET",
     .path = "(the model lists)",
     .claims = models_claims,
     .builtin = serve_models},
    /* a stored Response: GET and DELETE /v1/responses/{id} */
    {.listener = MF_LISTENER_CLIENT,
     .path = "(the adapters' resources)",
     .claims = resource_claims,
     .builtin = serve_resource},
    CLIENT("GET", "/healthz", serve_health, 0),
    {.listener = MF_LISTENER_STATUS,
     .method = "GET",
     .path = "/healthz",
     .builtin = serve_health},
};

void
mf_req_endpoints_init(void)
{
    mf_endpoints_set_builtins(builtin_paths, MF_NELEMS(builtin_paths));
}

/* got equals want, compared in constant time (want's length). */
static int
same_secret(mf_str_t got, const char *want)
{
    size_t i, n = strlen(want);
    unsigned char diff = got.len != n;

    for (i = 0; i < n; i++) {
        diff |= (unsigned char)(want[i] ^ (i < got.len ? got.data[i] : 0));
    }
    return diff == 0;
}

/* The status listener's cookie (a browser's, after /login): hex
 * HMAC-SHA256 of a fixed label under status.token, so the browser never
 * keeps the token itself; another token makes old cookies worthless. */
#define STATUS_COOKIE "mf_status"
static void
status_cookie(const char *token, char out[65])
{
    static const char label[] = "manifold status listener session";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned len = 0, i;

    HMAC(EVP_sha256(), token, (int)strlen(token), (const unsigned char *)label,
         sizeof(label) - 1, mac, &len);
    for (i = 0; i < len && i < 32; i++) {
        out[2 * i] = "0123456789abcdef"[mac[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[mac[i] & 15];
    }
    out[2 * i] = '\0';
}

/* The value of cookie name in the request's Cookie header(s). */
static int
cookie_get(mf_req_t *r, const char *name, mf_str_t *v)
{
    size_t k, nl = strlen(name);

    for (k = 0; k < r->req_headers.n; k++) {
        const mf_header_t *h = &r->req_headers.v[k];
        const char *p = h->value.data, *e = p + h->value.len;

        if (!mf_str_caseeq(h->name, MF_STR("cookie"))) {
            continue;
        }
        while (p < e) {
            const char *semi = memchr(p, ';', (size_t)(e - p));
            size_t len = (size_t)((semi ? semi : e) - p), sp = 0;

            while (sp < len && p[sp] == ' ') {
                sp++;
            }
            /* cppcheck-suppress knownConditionTrueFalse */
            if (len - sp > nl && memcmp(p + sp, name, nl) == 0 &&
                p[sp + nl] == '=') {
                *v = (mf_str_t){p + sp + nl + 1, len - sp - nl - 1};
                return MF_OK;
            }
            p = semi ? semi + 1 : e;
        }
    }
    return MF_ERR;
}

/* Whether the status listener's bearer token (status.token) came with
 * the request, or the cookie /login gives; compared in constant time. */
static int
status_authorized(mf_req_t *r)
{
    const char *want = r->gen->config->status_token;
    mf_str_t got;
    char cookie[65];

    if (want == NULL) {
        return 1;
    }
    if (mf_hlist_get(&r->req_headers, MF_STR("authorization"), &got) == MF_OK &&
        got.len >= 7 && strncasecmp(got.data, "Bearer ", 7) == 0) {
        got.data += 7;
        got.len -= 7;
        return same_secret(got, want);
    }
    if (cookie_get(r, STATUS_COOKIE, &got) == MF_OK) {
        status_cookie(want, cookie);
        return same_secret(got, cookie);
    }
    return 0;
}

/* s percent-decoded (and '+' a space) into out (cap bytes, NUL-ended);
 * MF_ERR when it does not fit or holds a NUL. */
static int
form_decode(mf_str_t s, char *out, size_t cap)
{
    size_t i, n = 0;

    for (i = 0; i < s.len; i++) {
        int c = (unsigned char)s.data[i];

        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < s.len &&
                   isxdigit((unsigned char)s.data[i + 1]) &&
                   isxdigit((unsigned char)s.data[i + 2])) {
            char hx[3] = {s.data[i + 1], s.data[i + 2], 0};

            c = (int)strtol(hx, NULL, 16);
            i += 2;
        }
        if (c == 0 || n + 1 >= cap) {
            return MF_ERR;
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return MF_OK;
}

/* The field name of an application/x-www-form-urlencoded text, decoded
 * into out; MF_ERR when absent or too long. */
static int
form_field(mf_str_t form, const char *name, char *out, size_t cap)
{
    const char *p = form.data, *e = form.data + form.len;
    size_t nl = strlen(name);

    while (p < e) {
        const char *amp = memchr(p, '&', (size_t)(e - p));
        const char *end = amp ? amp : e;

        if ((size_t)(end - p) >= nl + 1 && memcmp(p, name, nl) == 0 &&
            p[nl] == '=') {
            return form_decode(
                (mf_str_t){p + nl + 1, (size_t)(end - p) - nl - 1}, out, cap);
        }
        p = amp ? amp + 1 : e;
    }
    return MF_ERR;
}

/* A path to go back to after /login: one of this listener's ("/x"),
 * never another site's ("//x", "/\\x") nor one with odd bytes. */
static int
safe_next(const char *p)
{
    size_t i;

    if (p[0] != '/' || p[1] == '/' || p[1] == '\\') {
        return 0;
    }
    for (i = 0; p[i] != '\0'; i++) {
        if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] >= 127 ||
            p[i] == '"' || p[i] == '<' || p[i] == '>' || p[i] == '\\') {
            return 0;
        }
    }
    return i < 512;
}

/* GET /login on a status listener with a token: a form for it; POST
 * /login (token=...&next=...): the cookie and back to next. For the
 * pages a browser opens there (the dashboard), which cannot send an
 * Authorization header. */
static void
serve_login(mf_req_t *r)
{
    static const char head[] =
        "<!doctype html><meta charset=utf-8><title>Manifold status</title>"
        "<meta name=viewport content=\"width=device-width\">"
        "<style>body{font:15px system-ui,sans-serif;max-width:22em;margin:"
        "4em auto}input{font:inherit;width:100%;margin:.4em 0;padding:.3em}"
        "p.e{color:#b00}</style><h1>Manifold status</h1>";
    char next[512] = "/", token[512], cookie[65], page[2048], hdr[200];
    mf_str_t q = r->query;
    int bad = 0, n;

    if (mf_str_eq_cstr(r->method, "POST")) {
        q = r->body;
    }
    if (form_field(q, "next", next, sizeof(next)) != MF_OK ||
        !safe_next(next)) {
        snprintf(next, sizeof(next), "/");
    }
    if (mf_str_eq_cstr(r->method, "POST")) {
        if (form_field(r->body, "token", token, sizeof(token)) == MF_OK &&
            same_secret(mf_str_from(token), r->gen->config->status_token)) {
            status_cookie(r->gen->config->status_token, cookie);
            snprintf(hdr, sizeof(hdr),
                     STATUS_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; "
                                   "Max-Age=43200",
                     cookie);
            mf_hlist_set(r->pool, &r->resp_headers, MF_STR("set-cookie"),
                         mf_pool_str(r->pool, mf_str_from(hdr)));
            mf_hlist_set(r->pool, &r->resp_headers, MF_STR("location"),
                         mf_pool_str(r->pool, mf_str_from(next)));
            mf_req_respond(r, 303, "text/plain", MF_STR(""));
            return;
        }
        bad = 1;
        memset(token, 0, sizeof(token));
    } else if (!mf_str_eq_cstr(r->method, "GET")) {
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("allow"),
                     MF_STR("GET, POST"));
        mf_req_respond_error(r, 405, "invalid_request_error", NULL,
                             "Use GET or POST for /login.");
        return;
    }
    n = snprintf(page, sizeof(page),
                 "%s%s<form method=post action=/login>"
                 "<label>Status token <input type=password name=token "
                 "autofocus autocomplete=current-password></label>"
                 "<input type=hidden name=next value=\"%s\">"
                 "<input type=submit value=\"Sign in\"></form>",
                 head, bad ? "<p class=e>That is not the token.</p>" : "",
                 next);
    mf_hlist_set(r->pool, &r->resp_headers, MF_STR("cache-control"),
                 MF_STR("no-store"));
    mf_req_respond(r, bad ? 401 : 200, "text/html; charset=utf-8",
                   (mf_str_t){page, n > 0 && (size_t)n < sizeof(page)
                                        ? (size_t)n
                                        : strlen(page)});
}

/* No entry serves the path (404), or none for the method (405). */
static void
respond_unserved(mf_req_t *r, const char *allow)
{
    char msg[512];

    if (allow[0] != '\0') {
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("allow"),
                     mf_str_from(allow));
        snprintf(msg, sizeof(msg), "Use %s for %.*s.", allow,
                 (int)(r->path.len > 200 ? 200 : r->path.len), r->path.data);
        mf_req_respond_error(r, 405, "invalid_request_error", NULL, msg);
        return;
    }
    if (r->listener != MF_LISTENER_STATUS) {
        unknown_url(r);
        return;
    }
    snprintf(msg, sizeof(msg),
             "Unknown request URL: %.*s %.*s on the status listener.",
             (int)r->method.len, r->method.data,
             (int)(r->path.len > 200 ? 200 : r->path.len), r->path.data);
    mf_req_respond_error(r, 404, "invalid_request_error", "unknown_url", msg);
}

void
mf_req_handle(mf_conn_t *c, mf_worker_t *w, const mf_http_head_t *head,
              const char *client_addr, char *body, size_t len)
{
    int preflight;
    mf_req_t *r = req_new(c, w, head, client_addr, body, len, &preflight);
    const mf_epath_t *ep;
    char allow[128];

    if (preflight) {
        /* a CORS preflight from an allowed origin */
        mf_req_respond(r, 204, "text/plain", MF_STR_NULL);
        mf_req_finish(r);
        return;
    }
    if (r->listener == MF_LISTENER_STATUS &&
        r->gen->config->status_token != NULL &&
        mf_str_eq_cstr(r->path, "/login")) {
        serve_login(r);
        mf_req_finish(r);
        return;
    }
    if (r->listener == MF_LISTENER_STATUS && !status_authorized(r)) {
        mf_str_t accept;

        if (mf_str_eq_cstr(r->method, "GET") &&
            mf_hlist_get(&r->req_headers, MF_STR("accept"), &accept) == MF_OK &&
            memmem(accept.data, accept.len, "text/html", 9) != NULL) {
            /* a browser opening a page: the sign-in form, then back */
            char loc[600];

            snprintf(loc, sizeof(loc), "/login?next=%.*s",
                     (int)(r->path.len < 500 ? r->path.len : 0), r->path.data);
            if (!safe_next(loc + 12)) {
                snprintf(loc, sizeof(loc), "/login");
            }
            mf_hlist_set(r->pool, &r->resp_headers, MF_STR("location"),
                         mf_pool_str(r->pool, mf_str_from(loc)));
            mf_req_respond(r, 303, "text/plain", MF_STR(""));
            mf_req_finish(r);
            return;
        }
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("www-authenticate"),
                     MF_STR("Bearer realm=\"manifold status\""));
        mf_req_respond_error(r, 401, "authentication_error", "invalid_token",
                             "The status listener asks for its bearer token "
                             "(status.token): send Authorization: Bearer "
                             "<token>.");
        mf_req_finish(r);
        return;
    }
    ep = mf_endpoints_find(r->gen, (mf_listener_t)r->listener, r->method,
                           r->path, allow, sizeof(allow));
    if (ep != NULL && ep->stage != NULL && !atomic_load(&ep->stage->enabled)) {
        ep = NULL; /* a disabled stage serves none of its paths */
        allow[0] = '\0';
    }
    if (ep == NULL) {
        respond_unserved(r, allow);
        mf_req_finish(r);
        return;
    }
    if (ep->builtin != NULL) {
        ep->builtin(r, ep->builtin_arg);
        return;
    }
    r->epath = ep;
    r->phase = MF_PHASE_SERVE;
    mf_req_step(r);
}

void
mf_req_log_unserved(mf_worker_t *w, const mf_http_head_t *head,
                    const char *client_addr, int status, const char *why,
                    uint64_t bytes_in, double start_ms)
{
    mf_gen_t *g = mf_gen_acquire();
    mf_req_t *r;

    if (g == NULL) {
        return;
    }
    r = req_alloc(w, g, head, client_addr, start_ms, 2048);
    r->status = status;
    r->error = mf_pool_str(r->pool, mf_str_from(why));
    r->bytes_in = bytes_in;
    r->finished = 1;
    r->phase = MF_PHASE_FINISHED;
    mf_pipeline_log_done(r);
    mf_req_free(r);
}
