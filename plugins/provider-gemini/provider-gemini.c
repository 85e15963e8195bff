/*
 * provider-gemini: Google's Gemini behind the canonical (OpenAI chat) form,
 * two types:
 *
 *  - gemini: the Generative Language API (generativelanguage.googleapis.
 *    com), key in x-goog-api-key;
 *  - vertex: Vertex AI (LOCATION-aiplatform.googleapis.com), a service
 *    account's key: a JWT signed RS256 with OpenSSL is exchanged at the
 *    account's token_uri for an access token, cached per account and
 *    refreshed five minutes before it expires (one request waits for it,
 *    the others keep the old token).
 *
 * Requests: system messages to systemInstruction, roles (assistant is
 * "model"), images (data: URLs inline, other URLs as fileData), tools as
 * functionDeclarations (schemas cut to what Gemini reads), tool_choice to
 * functionCallingConfig, tool calls and results (functionCall and
 * functionResponse parts; a thought signature rides in the tool call id),
 * generation settings, response_format to responseMimeType/Schema,
 * reasoning_effort to thinkingConfig. Responses and SSE streams
 * (?alt=sse) back to chat completions and chunks, usageMetadata to usage
 * (thoughts as reasoning tokens, cached content as cached tokens); a
 * prompt or an answer blocked by safety filters fails the attempt with a
 * 400 content_filter error naming the reason and category. Embeddings:
 * batchEmbedContents (gemini), :predict (vertex).
 *
 * Claude on Vertex AI: a vertex provider sends a model whose name starts
 * with "claude-" to Anthropic's publisher (publishers/anthropic/models/
 * MODEL:rawPredict, :streamRawPredict, count-tokens:rawPredict) in the
 * Anthropic Messages wire (plugins/common/anthropic-wire.c): the body
 * without `model`, with "anthropic_version": "vertex-2023-10-16", the
 * same access token; cache_control, top_k and anthropic-beta kept.
 *
 * provider fields: project, location (vertex), credentials (vertex: a
 * service-account JSON file or its text; `keys` may list several), options:
 * { api_version: v1beta, safety_settings: [...], default_max_tokens: 4096
 * (Claude on vertex) }.
 */
#include <manifold/plugin.h>
#include <manifold/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "../common/anthropic-wire.h"
#include "../common/provider-util.h"

#define MAX_CAND 8
#define TOKEN_MAX 4096
#define REFRESH_AHEAD 300.0 /* seconds before expiry a refresh starts */
#define WAIT_STEP_MS 20
#define WAIT_MAX 1500 /* steps of WAIT_STEP_MS: 30 s */
#define TOKEN_TIMEOUT_MS 5000
/* a refresh older than this is taken over: its request may have ended
 * (its call abandoned, no callback), and the call has timed out by now */
#define REFRESH_STALE 6.0
#define SIG_SEP "__ts__"

static const mf_host_api_t *api;

/* A Vertex service account and its cached access token. */
typedef struct {
    char *key; /* as configured: a path or the JSON text */
    char *email;
    char *token_uri;
    char *project;
    EVP_PKEY *pkey;
    char token[TOKEN_MAX];
    double expires; /* unix seconds */
    int refreshing;
    double refresh_started;
} account_t;

typedef struct {
    char *name;
    int vertex;
    char version[16];
    char *project;
    char *location;
    json_t *safety;
    aw_conf_t claude;     /* Claude on vertex: the Messages wire */
    account_t **accounts; /* stable pointers: requests hold them */
    size_t naccounts;
    pthread_mutex_t mu;
} gemini_t;

/* Per request: a stream's translation state, or a token wait. */
typedef struct {
    char id[160];
    char model[200];
    json_int_t created;
    mf_usage_t usage;
    int started[MAX_CAND];
    int ntools[MAX_CAND];
    int finished[MAX_CAND];
    int ncand;
    int nfinished;
    int emitted;
    int done;
} gstream_t;

typedef struct {
    gemini_t *g;
    account_t *acct;
    int waits;   /* polls for another request's refresh */
    int waiting; /* this request has paused */
} authwait_t;

static double
now_s(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static char *
dup_or(json_t *v, const char *dflt)
{
    const char *s = json_string_value(v);

    return strdup(s && *s ? s : dflt);
}

/* Service accounts */

static char *
read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (1 << 20) &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* Loads a service account from a path or JSON text; logs why not. */
static int
account_load(gemini_t *g, account_t *a, const char *key)
{
    const char *k = key;
    char *text = NULL;
    json_t *j;
    const char *type, *pem, *email;
    BIO *bio;

    while (*k == ' ' || *k == '\n' || *k == '\t') {
        k++;
    }
    if (*k != '{') {
        text = read_file(key);
        if (text == NULL) {
            /* a path is named; anything else may be a secret pasted in */
            api->log(MF_LOG_ERROR,
                     "provider '%s': cannot read the service-account file "
                     "'%s'",
                     g->name, strchr(key, '/') ? key : "(not a path)");
            return MF_ERR;
        }
    }
    j = json_loads(text ? text : k, 0, NULL);
    free(text);
    type = json_string_value(json_object_get(j, "type"));
    pem = json_string_value(json_object_get(j, "private_key"));
    email = json_string_value(json_object_get(j, "client_email"));
    if (!json_is_object(j) || pem == NULL || email == NULL ||
        (type && strcmp(type, "service_account") != 0)) {
        api->log(MF_LOG_ERROR,
                 "provider '%s': the credentials are not a service-account "
                 "key (JSON with type service_account, client_email and "
                 "private_key)",
                 g->name);
        json_decref(j);
        return MF_ERR;
    }
    bio = BIO_new_mem_buf(pem, -1);
    a->pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (a->pkey == NULL || EVP_PKEY_base_id(a->pkey) != EVP_PKEY_RSA) {
        api->log(MF_LOG_ERROR,
                 "provider '%s': the private_key of %s is not an RSA key in "
                 "PEM",
                 g->name, email);
        json_decref(j);
        return MF_ERR;
    }
    a->key = strdup(key);
    a->email = strdup(email);
    a->token_uri = dup_or(json_object_get(j, "token_uri"),
                          "https://oauth2.googleapis.com/token");
    a->project = dup_or(json_object_get(j, "project_id"), "");
    json_decref(j);
    return MF_OK;
}

/* The signed JWT assertion for a's token request, malloc'd. */
static char *
account_jwt(account_t *a)
{
    json_t *hdr = mf_json_pack("{s:s,s:s}", "alg", "RS256", "typ", "JWT");
    long iat = (long)time(NULL);
    json_t *claims = mf_json_pack(
        "{s:s,s:s,s:s,s:I,s:I}", "iss", a->email, "scope",
        "https://www.googleapis.com/auth/cloud-platform", "aud", a->token_uri,
        "iat", (json_int_t)iat, "exp", (json_int_t)(iat + 3600));
    char *h = mf_json_dumps(hdr, JSON_COMPACT),
         *c = mf_json_dumps(claims, JSON_COMPACT);
    char *hb = h ? pu_base64url(h, strlen(h)) : NULL;
    char *cb = c ? pu_base64url(c, strlen(c)) : NULL;
    char *input = NULL, *out = NULL, *sb = NULL;
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    if (hb && cb && md &&
        (input = malloc(strlen(hb) + strlen(cb) + 2)) != NULL) {
        sprintf(input, "%s.%s", hb, cb);
        if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, a->pkey) == 1 &&
            EVP_DigestSign(md, sig, &siglen, (unsigned char *)input,
                           strlen(input)) == 1 &&
            (sb = pu_base64url(sig, siglen)) != NULL &&
            (out = malloc(strlen(input) + strlen(sb) + 2)) != NULL) {
            sprintf(out, "%s.%s", input, sb);
        }
    }
    EVP_MD_CTX_free(md);
    json_decref(hdr);
    json_decref(claims);
    free(h);
    free(c);
    free(hb);
    free(cb);
    free(input);
    free(sb);
    return out;
}

/* Adds the account of key (a path or JSON); the caller holds g->mu or
 * runs in init. NULL after logging why. */
static account_t *
add_account(gemini_t *g, const char *key)
{
    account_t **v, *a;

    v = realloc(g->accounts, (g->naccounts + 1) * sizeof(*v));
    if (v == NULL) {
        return NULL;
    }
    g->accounts = v;
    a = calloc(1, sizeof(*a));
    if (a == NULL || account_load(g, a, key) != MF_OK) {
        free(a);
        return NULL;
    }
    g->accounts[g->naccounts++] = a;
    return a;
}

/* The account of a key, loaded at its first use (keys reach a provider
 * per attempt, never in its config). */
static account_t *
account_for(gemini_t *g, mf_str_t key)
{
    account_t *a = NULL;
    char *k;
    size_t i;

    pthread_mutex_lock(&g->mu);
    for (i = 0; i < g->naccounts && a == NULL; i++) {
        if (key.len == 0 ||
            (key.len == strlen(g->accounts[i]->key) &&
             memcmp(key.data, g->accounts[i]->key, key.len) == 0)) {
            a = g->accounts[i];
        }
    }
    if (a == NULL && key.len > 0 && (k = strndup(key.data, key.len)) != NULL) {
        a = add_account(g, k);
        free(k);
    }
    pthread_mutex_unlock(&g->mu);
    return a;
}

/* Init */

static void gemini_fini(void *state);

static int
gemini_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    json_t *opt = json_object_get(conf, "options");
    gemini_t *g = calloc(1, sizeof(*g));
    const char *type = json_string_value(json_object_get(conf, "type"));
    const char *ver = json_string_value(json_object_get(opt, "api_version"));
    const char *cred;

    api = host;
    aw_init(host);
    if (g == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    pthread_mutex_init(&g->mu, NULL);
    g->name = dup_or(json_object_get(conf, "name"), "gemini");
    g->claude.name = g->name;
    g->claude.default_max_tokens = pu_opt_int(opt, "default_max_tokens", 4096);
    if (g->claude.default_max_tokens <= 0) {
        g->claude.default_max_tokens = 4096;
    }
    g->vertex = type && strcmp(type, "vertex") == 0;
    if (ver == NULL) {
        ver = json_string_value(json_object_get(conf, "api_version"));
    }
    snprintf(g->version, sizeof(g->version), "%s",
             ver ? ver : (g->vertex ? "v1" : "v1beta"));
    g->project =
        dup_or(json_object_get(conf, "project"),
               json_string_value(json_object_get(opt, "project")) ?: "");
    g->location = dup_or(json_object_get(conf, "location"),
                         json_string_value(json_object_get(opt, "location"))
                             ?: "us-central1");
    if (json_is_array(json_object_get(opt, "safety_settings"))) {
        g->safety = json_incref(json_object_get(opt, "safety_settings"));
    }
    cred = json_string_value(json_object_get(conf, "credentials"));
    if (g->vertex && cred != NULL && *cred != '\0' &&
        add_account(g, cred) == NULL) {
        goto fail; /* keys: are checked at their first use */
    }
    json_decref(conf);
    *state = g;
    return MF_OK;
fail:
    json_decref(conf);
    gemini_fini(g);
    return MF_ERR;
}

static void
gemini_fini(void *state)
{
    gemini_t *g = state;
    size_t i;

    for (i = 0; i < g->naccounts; i++) {
        account_t *a = g->accounts[i];

        free(a->key);
        free(a->email);
        free(a->token_uri);
        free(a->project);
        EVP_PKEY_free(a->pkey);
        free(a);
    }
    free(g->accounts);
    free(g->name);
    free(g->project);
    free(g->location);
    json_decref(g->safety);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* Request: canonical -> generateContent */

/* A JSON Schema cut to the OpenAPI subset Gemini's Schema reads. */
static json_t *
schema_of(json_t *in)
{
    static const char *const keep[] = {"type",
                                       "format",
                                       "description",
                                       "nullable",
                                       "enum",
                                       "maxItems",
                                       "minItems",
                                       "required",
                                       "minimum",
                                       "maximum",
                                       "title",
                                       "minLength",
                                       "maxLength",
                                       "pattern",
                                       "minProperties",
                                       "maxProperties",
                                       "propertyOrdering",
                                       NULL};
    json_t *out, *v, *t;
    const char *key;
    size_t i;

    if (!json_is_object(in)) {
        return mf_json_pack("{s:s}", "type", "object");
    }
    out = json_object();
    for (i = 0; keep[i]; i++) {
        if ((v = json_object_get(in, keep[i])) != NULL) {
            json_object_set(out, keep[i], v);
        }
    }
    t = json_object_get(in, "type");
    if (json_is_array(t)) { /* ["string", "null"] */
        json_t *first = NULL;

        json_array_foreach(t, i, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), "null")) {
                /* cppcheck reads json_array_foreach as one call, not a loop */
                /* cppcheck-suppress knownConditionTrueFalse */
                first = first ? first : v;
            } else {
                json_object_set_new(out, "nullable", json_true());
            }
        }
        json_object_set_new(out, "type",
                            first ? json_incref(first) : json_string("string"));
    }
    if (json_is_object(v = json_object_get(in, "properties"))) {
        json_t *props = json_object(), *p;

        json_object_foreach(v, key, p)
        {
            json_object_set_new(props, key, schema_of(p));
        }
        json_object_set_new(out, "properties", props);
    }
    if ((v = json_object_get(in, "items")) != NULL) {
        json_object_set_new(out, "items", schema_of(v));
    }
    if (json_is_array(v = json_object_get(in, "anyOf"))) {
        json_t *any = json_array(), *p;

        json_array_foreach(v, i, p)
        {
            json_array_append_new(any, schema_of(p));
        }
        json_object_set_new(out, "anyOf", any);
    }
    if (json_is_array(json_object_get(out, "enum")) &&
        json_object_get(out, "type") == NULL) {
        json_object_set_new(out, "type", json_string("string"));
    }
    return out;
}

static const char *
mime_of_url(const char *url)
{
    const char *dot = strrchr(url, '.');

    if (dot == NULL) {
        return "image/jpeg";
    }
    if (strncmp(dot, ".png", 4) == 0) {
        return "image/png";
    }
    if (strncmp(dot, ".webp", 5) == 0) {
        return "image/webp";
    }
    if (strncmp(dot, ".gif", 4) == 0) {
        return "image/gif";
    }
    if (strncmp(dot, ".pdf", 4) == 0) {
        return "application/pdf";
    }
    return "image/jpeg";
}

/* An Anthropic document part (provider-util.h) as inline data, which
 * Gemini documents for PDFs and plain text; NULL for another source
 * (refused before the request is built) or on OOM. */
static json_t *
document_part(json_t *part)
{
    json_t *src = json_object_get(part, "source"), *out = NULL;
    const char *data = json_string_value(json_object_get(src, "data"));
    char *b64;

    switch (pu_document_kind(part)) {
    case PU_DOC_PDF:
        out = mf_json_pack("{s:{s:s,s:s}}", "inlineData", "mimeType",
                           "application/pdf", "data", data);
        break;
    case PU_DOC_TEXT:
        if ((b64 = pu_base64(data, strlen(data))) != NULL) {
            out = mf_json_pack("{s:{s:s,s:s}}", "inlineData", "mimeType",
                               "text/plain", "data", b64);
            free(b64);
        }
        break;
    default:
        break;
    }
    return out;
}

/* A 400 naming a document Gemini has no form for (a URL or a file of
 * Anthropic's Files API); 1 when there is one. */
static int
document_refused(mf_req_t *r, const gemini_t *g, json_t *body)
{
    const char *src;

    if (!pu_document_refused(body, PU_DOC_PDF | PU_DOC_TEXT, &src)) {
        return 0;
    }
    pu_error(api, r, 400, "invalid_request_error", "unsupported_document",
             "provider '%s' cannot take a document block with a '%s' "
             "source: Gemini takes a base64 PDF or a text document; other "
             "documents need a model an Anthropic provider serves",
             g->name, src);
    return 1;
}

/* Message content (a string or parts) to Gemini parts. */
static json_t *
parts_of(json_t *content)
{
    json_t *out = json_array(), *part;
    size_t i;

    if (json_is_string(content)) {
        if (json_string_length(content) > 0) {
            json_array_append_new(out, mf_json_pack("{s:O}", "text", content));
        }
        return out;
    }
    json_array_foreach(content, i, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));

        if (type && strcmp(type, "text") == 0 &&
            json_is_string(json_object_get(part, "text"))) {
            json_array_append_new(
                out,
                mf_json_pack("{s:O}", "text", json_object_get(part, "text")));
        } else if (type && strcmp(type, "document") == 0) {
            json_t *d = document_part(part);

            if (d != NULL) {
                json_array_append_new(out, d);
            }
        } else if (type && strcmp(type, "image_url") == 0) {
            const char *url = json_string_value(
                json_object_get(json_object_get(part, "image_url"), "url"));
            mf_str_t mt, data;

            if (url == NULL) {
                continue;
            }
            if (pu_data_url(url, &mt, &data) == MF_OK) {
                json_array_append_new(
                    out,
                    mf_json_pack("{s:{s:s%,s:s%}}", "inlineData", "mimeType",
                                 mt.data, mt.len, "data", data.data, data.len));
            } else {
                json_array_append_new(
                    out, mf_json_pack("{s:{s:s,s:s}}", "fileData", "mimeType",
                                      mime_of_url(url), "fileUri", url));
            }
        }
    }
    return out;
}

/* The function name a tool_call_id was given in an earlier turn. */
static const char *
tool_name(json_t *messages, const char *id)
{
    json_t *m, *c;
    size_t i, j;

    if (id == NULL) {
        return NULL;
    }
    json_array_foreach(messages, i, m)
    {
        json_array_foreach(json_object_get(m, "tool_calls"), j, c)
        {
            const char *cid = json_string_value(json_object_get(c, "id"));

            if (cid && strcmp(cid, id) == 0) {
                return json_string_value(
                    json_object_get(json_object_get(c, "function"), "name"));
            }
        }
    }
    return NULL;
}

static json_t *
call_parts(json_t *calls)
{
    json_t *out = json_array(), *c;
    size_t i;

    json_array_foreach(calls, i, c)
    {
        json_t *fn = json_object_get(c, "function");
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *sig = id ? strstr(id, SIG_SEP) : NULL;
        json_t *a = pu_tool_args(c);
        json_t *p;

        p = mf_json_pack("{s:{s:O,s:o}}", "functionCall", "name",
                         json_object_get(fn, "name"), "args", a);
        if (sig != NULL) {
            json_object_set_new(p, "thoughtSignature",
                                json_string(sig + strlen(SIG_SEP)));
        }
        json_array_append_new(out, p);
    }
    return out;
}

/* A tool result's text as the object a functionResponse wants. */
static json_t *
tool_response(json_t *content)
{
    json_t *parts, *j;
    char *text = NULL;
    size_t len = 0, i;

    if (json_is_string(content)) {
        j = json_loads(json_string_value(content), 0, NULL);
        if (json_is_object(j)) {
            return j;
        }
        json_decref(j);
        return mf_json_pack("{s:O}", "content", content);
    }
    parts = content;
    json_array_foreach(parts, i, j)
    {
        const char *t = json_string_value(json_object_get(j, "text"));

        if (t != NULL) {
            pu_append(&text, &len, t);
        }
    }
    j = mf_json_pack("{s:s}", "content", text ? text : "");
    free(text);
    return j;
}

static json_t *
generation_config(json_t *in)
{
    static const pu_field_t fields[] = {
        {"temperature", "temperature", 0},
        {"top_p", "topP", 0},
        {"top_k", "topK", 1},
        {"presence_penalty", "presencePenalty", 0},
        {"frequency_penalty", "frequencyPenalty", 0},
        {"seed", "seed", 1},
        {NULL, NULL, 0}};
    json_t *gc = json_object(), *v, *rf;
    const char *effort;

    pu_copy_fields(in, gc, fields);
    if ((v = pu_max_tokens(in)) != NULL) {
        json_object_set(gc, "maxOutputTokens", v);
    }
    if ((v = pu_stop_list(in)) != NULL) {
        json_object_set_new(gc, "stopSequences", v);
    }
    if (json_is_integer(v = json_object_get(in, "n")) &&
        json_integer_value(v) > 1) {
        json_object_set(gc, "candidateCount", v);
    }
    rf = json_object_get(in, "response_format");
    v = json_object_get(rf, "type");
    if (json_is_string(v) &&
        (strcmp(json_string_value(v), "json_object") == 0 ||
         strcmp(json_string_value(v), "json_schema") == 0)) {
        json_t *schema =
            json_object_get(json_object_get(rf, "json_schema"), "schema");

        json_object_set_new(gc, "responseMimeType",
                            json_string("application/json"));
        if (json_is_object(schema)) {
            json_object_set_new(gc, "responseSchema", schema_of(schema));
        }
    }
    if ((effort = json_string_value(json_object_get(in, "reasoning_effort"))) !=
        NULL) {
        json_int_t budget = strcmp(effort, "none") == 0      ? 0
                            : strcmp(effort, "minimal") == 0 ? 0
                            : strcmp(effort, "low") == 0     ? 1024
                            : strcmp(effort, "high") == 0    ? 24576
                                                             : 8192;

        json_object_set_new(gc, "thinkingConfig",
                            mf_json_pack("{s:I,s:b}", "thinkingBudget", budget,
                                         "includeThoughts", budget > 0));
    }
    return gc;
}

static json_t *
tools_of(json_t *in)
{
    json_t *decls = json_array(), *t;
    size_t i;

    json_array_foreach(json_object_get(in, "tools"), i, t)
    {
        json_t *fn = json_object_get(t, "function");
        json_t *d;

        if (!json_is_string(json_object_get(fn, "name"))) {
            continue;
        }
        d = mf_json_pack("{s:O}", "name", json_object_get(fn, "name"));
        if (json_is_string(json_object_get(fn, "description"))) {
            json_object_set(d, "description",
                            json_object_get(fn, "description"));
        }
        if (json_is_object(json_object_get(fn, "parameters")) &&
            json_object_size(json_object_get(json_object_get(fn, "parameters"),
                                             "properties")) > 0) {
            json_object_set_new(d, "parameters",
                                schema_of(json_object_get(fn, "parameters")));
        }
        json_array_append_new(decls, d);
    }
    if (json_array_size(decls) == 0) {
        json_decref(decls);
        return NULL;
    }
    return mf_json_pack("[{s:o}]", "functionDeclarations", decls);
}

static json_t *
tool_config_of(json_t *tc)
{
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);

        return mf_json_pack("{s:{s:s}}", "functionCallingConfig", "mode",
                            strcmp(s, "required") == 0 ? "ANY"
                            : strcmp(s, "none") == 0   ? "NONE"
                                                       : "AUTO");
    }
    if (json_is_object(tc)) {
        return mf_json_pack(
            "{s:{s:s,s:[O]}}", "functionCallingConfig", "mode", "ANY",
            "allowedFunctionNames",
            json_object_get(json_object_get(tc, "function"), "name"));
    }
    return NULL;
}

static json_t *
to_gemini(gemini_t *g, json_t *in)
{
    json_t *out = json_object(), *contents = json_array();
    json_t *system = json_array(), *msgs = json_object_get(in, "messages");
    json_t *m, *v;
    size_t i;

    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");

        if (role == NULL) {
            continue;
        }
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            json_t *parts = parts_of(content);

            json_array_extend(system, parts);
            json_decref(parts);
        } else if (strcmp(role, "tool") == 0) {
            const char *name = tool_name(
                msgs, json_string_value(json_object_get(m, "tool_call_id")));

            pu_push_turn(contents, "user", "parts",
                         mf_json_pack("[{s:{s:s,s:o}}]", "functionResponse",
                                      "name", name ? name : "tool", "response",
                                      tool_response(content)));
        } else if (strcmp(role, "assistant") == 0) {
            json_t *parts = parts_of(content);
            json_t *calls = call_parts(json_object_get(m, "tool_calls"));

            json_array_extend(parts, calls);
            json_decref(calls);
            pu_push_turn(contents, "model", "parts", parts);
        } else {
            pu_push_turn(contents, "user", "parts", parts_of(content));
        }
    }
    json_object_set_new(out, "contents", contents);
    if (json_array_size(system) > 0) {
        json_object_set_new(out, "systemInstruction",
                            mf_json_pack("{s:o}", "parts", system));
    } else {
        json_decref(system);
    }
    if ((v = tools_of(in)) != NULL) {
        json_t *tc = tool_config_of(json_object_get(in, "tool_choice"));

        json_object_set_new(out, "tools", v);
        if (tc != NULL) {
            json_object_set_new(out, "toolConfig", tc);
        }
    }
    v = generation_config(in);
    if (json_object_size(v) > 0) {
        json_object_set_new(out, "generationConfig", v);
    } else {
        json_decref(v);
    }
    if (g->safety != NULL) {
        json_object_set(out, "safetySettings", g->safety);
    }
    return out;
}

/* The embeddings request: batchEmbedContents or Vertex :predict. */
static json_t *
to_embed(gemini_t *g, json_t *in, const mf_upstream_t *u)
{
    json_t *inputs = pu_embedding_inputs(in), *reqs = json_array(), *t;
    json_t *dims = json_object_get(in, "dimensions");
    size_t i;

    if (inputs == NULL) {
        json_decref(reqs);
        return NULL;
    }
    json_array_foreach(inputs, i, t)
    {
        json_t *one;

        if (g->vertex) {
            one = mf_json_pack("{s:O}", "content", t);
        } else {
            one = mf_json_pack("{s:s+%,s:{s:[{s:O}]}}", "model", "models/",
                               u->model.data, u->model.len, "content", "parts",
                               "text", t);
            if (json_is_integer(dims)) {
                json_object_set(one, "outputDimensionality", dims);
            }
        }
        json_array_append_new(reqs, one);
    }
    json_decref(inputs);
    if (g->vertex) {
        json_t *out = mf_json_pack("{s:o}", "instances", reqs);

        if (json_is_integer(dims)) {
            json_object_set_new(
                out, "parameters",
                mf_json_pack("{s:O}", "outputDimensionality", dims));
        }
        return out;
    }
    return mf_json_pack("{s:o}", "requests", reqs);
}

/* countTokens' body from a generateContent body (taken): Google AI takes
 * it whole as generateContentRequest (with the model), Vertex AI the
 * prompt's members at the top (contents, systemInstruction, tools,
 * generationConfig). */
static json_t *
count_body(const gemini_t *g, json_t *gen, const char *model)
{
    static const char *const keep[] = {"contents", "systemInstruction", "tools",
                                       "generationConfig", NULL};
    json_t *out;
    size_t i;

    if (!g->vertex) {
        json_object_set_new(gen, "model", json_sprintf("models/%s", model));
        return mf_json_pack("{s:o}", "generateContentRequest", gen);
    }
    out = json_object();
    for (i = 0; keep[i] != NULL; i++) {
        json_t *v = json_object_get(gen, keep[i]);

        if (v != NULL) {
            json_object_set(out, keep[i], v);
        }
    }
    json_decref(gen);
    return out;
}

/* Claude on Vertex AI: a model of Anthropic's publisher. */
static int
is_claude(const gemini_t *g, const char *model, size_t n)
{
    return g->vertex && n > 7 && memcmp(model, "claude-", 7) == 0;
}

/* The attempt's upstream model is Claude on Vertex AI (the answer is in
 * the Anthropic Messages wire). */
static int
claude_attempt(mf_req_t *r, const gemini_t *g)
{
    mf_req_info_t info = {.size = sizeof(info)};

    if (!g->vertex || api->get_info(r, &info) != MF_OK) {
        return 0;
    }
    return is_claude(g, info.upstream_model.data, info.upstream_model.len);
}

/* Claude on Vertex AI: the Messages body without `model` (the URL names
 * it) and with Vertex's anthropic_version to MODEL:rawPredict or
 * :streamRawPredict; count_tokens to count-tokens:rawPredict, which takes
 * the model in the body. `prefix` is .../locations/L/publishers. */
static int
claude_request(mf_req_t *r, gemini_t *g, const mf_upstream_t *u, json_t *body,
               const char *prefix, const char *model)
{
    int count = u->endpoint == MF_ENDPOINT_COUNT_TOKENS;
    char url[4096], *text;
    json_t *msg;
    int n, rc;

    if (u->endpoint != MF_ENDPOINT_CHAT && !count) {
        pu_error(api, r, 400, "invalid_request_error", "unsupported_endpoint",
                 "provider '%s': Claude on Vertex AI has no embeddings",
                 g->name);
        return MF_ERR; /* the host answers with err */
    }
    if (api->abi_minor >= 6 && api->set_upstream_wire != NULL) {
        api->set_upstream_wire(r, MF_STR("anthropic"));
    }
    n = count ? snprintf(url, sizeof(url),
                         "%s/anthropic/models/count-tokens:rawPredict", prefix)
              : snprintf(url, sizeof(url), "%s/anthropic/models/%s:%s", prefix,
                         model, u->stream ? "streamRawPredict" : "rawPredict");
    if (n < 0 || (size_t)n >= sizeof(url)) {
        return MF_ERR;
    }
    api->set_upstream_url(r, (mf_str_t){url, (size_t)n});
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("content-type"),
                    MF_STR("application/json"));
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("authorization"),
                    MF_STR(""));
    if (u->stream) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("accept"),
                        MF_STR("text/event-stream"));
    }
    msg = aw_request(&g->claude, body, u);
    if (msg == NULL) {
        return MF_ERR;
    }
    if (!count) {
        json_object_del(msg, "model");
        json_object_set_new(msg, "anthropic_version",
                            json_string("vertex-2023-10-16"));
    }
    text = mf_json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL) {
        return MF_ERR;
    }
    rc = api->set_upstream_body(r, (mf_str_t){text, strlen(text)});
    free(text);
    return rc;
}

static int
gemini_build_request(mf_req_t *r, void *state, const mf_upstream_t *u)
{
    gemini_t *g = state;
    json_t *body = api->get_body_json(r), *msg;
    char url[4096], model[1024], *text;
    const char *method;
    int n, rc, embed = u->endpoint == MF_ENDPOINT_EMBEDDINGS;
    int count = u->endpoint == MF_ENDPOINT_COUNT_TOKENS;

    if (body == NULL || (u->endpoint != MF_ENDPOINT_CHAT && !embed && !count)) {
        return MF_ERR;
    }
    method = embed       ? (g->vertex ? "predict" : "batchEmbedContents")
             : count     ? "countTokens"
             : u->stream ? "streamGenerateContent?alt=sse"
                         : "generateContent";
    if (pu_model_segment(api, r, g->name, u->model.data, u->model.len, model,
                         sizeof(model)) < 0) {
        return MF_ERR;
    }
    if (g->vertex) {
        account_t *a = account_for(g, u->key);
        char base[1024];
        const char *project =
            g->project[0] ? g->project : (a ? a->project : "");

        if (project[0] == '\0') {
            pu_error(api, r, 502, "upstream_error", "upstream_auth_failed",
                     "provider '%s': vertex needs project: (or a "
                     "service-account key with project_id)",
                     g->name);
            return MF_ERR;
        }
        if (pu_str_is(u->base_url, "https://aiplatform.googleapis.com") &&
            strcmp(g->location, "global") != 0) {
            /* the generic host: the location's own endpoint */
            snprintf(base, sizeof(base), "https://%s-aiplatform.googleapis.com",
                     g->location);
        } else {
            snprintf(base, sizeof(base), "%.*s", (int)u->base_url.len,
                     u->base_url.data);
        }
        if (is_claude(g, u->model.data, u->model.len)) {
            char prefix[2048];

            n = snprintf(prefix, sizeof(prefix),
                         "%s/%s/projects/%s/locations/%s/publishers", base,
                         g->version, project, g->location);
            if (n < 0 || (size_t)n >= sizeof(prefix)) {
                return MF_ERR;
            }
            return claude_request(r, g, u, body, prefix, model);
        }
        n = snprintf(url, sizeof(url),
                     "%s/%s/projects/%s/locations/%s/publishers/google/"
                     "models/%s:%s",
                     base, g->version, project, g->location, model, method);
    } else {
        int has_ver =
            u->base_url.len > 3 &&
            (memcmp(u->base_url.data + u->base_url.len - 3, "/v1", 3) == 0 ||
             (u->base_url.len > 7 &&
              memcmp(u->base_url.data + u->base_url.len - 7, "/v1beta", 7) ==
                  0));

        n = snprintf(url, sizeof(url), "%.*s%s%s/models/%s:%s",
                     (int)u->base_url.len, u->base_url.data, has_ver ? "" : "/",
                     has_ver ? "" : g->version, model, method);
    }
    if (n < 0 || (size_t)n >= sizeof(url)) {
        return MF_ERR;
    }
    if (!embed && document_refused(r, g, body)) {
        return MF_ERR;
    }
    api->set_upstream_url(r, (mf_str_t){url, (size_t)n});
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("content-type"),
                    MF_STR("application/json"));
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("authorization"),
                    MF_STR(""));
    if (!g->vertex && u->key.len > 0) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS,
                        MF_STR("x-goog-api-key"), u->key);
    }
    msg = embed ? to_embed(g, body, u) : to_gemini(g, body);
    if (count && msg != NULL) {
        msg = count_body(g, msg, model);
    }
    if (msg == NULL) {
        pu_error(api, r, 400, "invalid_request_error", "invalid_input",
                 "provider '%s' embeds text: input must be a string or a "
                 "list of strings",
                 g->name);
        return MF_ERR; /* the host answers with err */
    }
    text = mf_json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL) {
        return MF_ERR;
    }
    rc = api->set_upstream_body(r, (mf_str_t){text, strlen(text)});
    free(text);
    return rc;
}

/* Vertex: the access token */

static int token_step(mf_req_t *r, authwait_t *w);
static void token_resume(mf_req_t *r, int rc);

static void
token_wait_done(mf_req_t *r, void *arg, const char *err)
{
    (void)err;
    token_resume(r, token_step(r, arg));
}

/* Resumes a paused request from token_step's answer. */
static void
token_resume(mf_req_t *r, int rc)
{
    if (rc != 0) {
        api->resume(r, rc > 0 ? MF_CONTINUE : MF_FAIL);
    }
}

static void
auth_fail(mf_req_t *r, gemini_t *g, account_t *a, const char *why)
{
    pu_error(api, r, 502, "upstream_error", "upstream_auth_failed",
             "provider '%s': no Vertex AI access token for %s: %s", g->name,
             a->email, why);
}

static void
token_answer(mf_req_t *r, void *arg, const mf_http_result_t *res,
             const char *errtext)
{
    authwait_t *w = arg;
    account_t *a = w->acct;
    json_t *j = NULL;
    const char *tok;
    json_int_t ttl;
    char why[256];

    if (res != NULL) {
        j = mf_json_loadb(res->body.data, res->body.len, 0, NULL);
    }
    tok = json_string_value(json_object_get(j, "access_token"));
    ttl = pu_opt_int(j, "expires_in", 3600);
    pthread_mutex_lock(&w->g->mu);
    a->refreshing = 0;
    if (res != NULL && res->status == 200 && tok != NULL &&
        strlen(tok) < TOKEN_MAX) {
        snprintf(a->token, sizeof(a->token), "%s", tok);
        a->expires = now_s() + (double)ttl;
    }
    pthread_mutex_unlock(&w->g->mu);
    if (res == NULL || res->status != 200 || tok == NULL) {
        const char *e = json_string_value(json_object_get(j, "error"));

        snprintf(why, sizeof(why), "%s%s%s",
                 errtext ? errtext : "the token endpoint refused",
                 e ? ": " : "", e ? e : "");
        if (res != NULL && errtext == NULL) {
            snprintf(why, sizeof(why), "the token endpoint answered %d%s%s",
                     res->status, e ? ": " : "", e ? e : "");
        }
        auth_fail(r, w->g, a, why);
        json_decref(j);
        api->resume(r, MF_FAIL);
        return;
    }
    json_decref(j);
    token_resume(r, token_step(r, w));
}

/* Uses the cached token (1), waits for a refresh under way or starts one
 * (0: a callback goes on), or fails with the error set (-1). */
static int
token_step(mf_req_t *r, authwait_t *w)
{
    gemini_t *g = w->g;
    account_t *a = w->acct;
    double now = now_s();
    char bearer[TOKEN_MAX + 8];
    int have = 0, start = 0;

    pthread_mutex_lock(&g->mu);
    if (a->token[0] && a->expires - now > 30) {
        snprintf(bearer, sizeof(bearer), "Bearer %s", a->token);
        have = 1;
        if (a->expires - now < REFRESH_AHEAD && !w->waiting &&
            (!a->refreshing || now - a->refresh_started > REFRESH_STALE)) {
            start = 1; /* this request refreshes; the rest go on */
        }
    } else if (!a->refreshing || now - a->refresh_started > REFRESH_STALE) {
        start = 1;
    }
    if (start) {
        a->refreshing = 1;
        a->refresh_started = now;
    }
    pthread_mutex_unlock(&g->mu);
    if (have && !start) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("authorization"),
                        (mf_str_t){bearer, strlen(bearer)});
        return 1;
    }
    if (start) {
        char *jwt = account_jwt(a), *form;
        mf_str_t hdr[2] = {MF_STR("content-type"),
                           MF_STR("application/x-www-form-urlencoded")};

        if (jwt == NULL) {
            pthread_mutex_lock(&g->mu);
            a->refreshing = 0;
            pthread_mutex_unlock(&g->mu);
            auth_fail(r, g, a, "the JWT could not be signed");
            return -1;
        }
        form = malloc(strlen(jwt) + 96);
        sprintf(form,
                "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3A"
                "jwt-bearer&assertion=%s",
                jwt);
        free(jwt);
        w->waiting = 1;
        if (api->http_call(r, "POST",
                           (mf_str_t){a->token_uri, strlen(a->token_uri)}, hdr,
                           1, (mf_str_t){form, strlen(form)}, TOKEN_TIMEOUT_MS,
                           token_answer, w) != MF_OK) {
            pthread_mutex_lock(&g->mu);
            a->refreshing = 0;
            pthread_mutex_unlock(&g->mu);
            auth_fail(r, g, a, "the token request could not be sent");
            free(form);
            return -1;
        }
        free(form);
        return 0;
    }
    /* another request is refreshing: look again shortly */
    w->waiting = 1;
    if (++w->waits > WAIT_MAX ||
        api->timer(r, WAIT_STEP_MS, token_wait_done, w) != MF_OK) {
        auth_fail(r, g, a, "timed out waiting for the token refresh");
        return -1;
    }
    return 0;
}

static mf_action_t
gemini_authorize(mf_req_t *r, void *state, const mf_upstream_t *u)
{
    gemini_t *g = state;
    authwait_t *w;

    if (!g->vertex) {
        return MF_CONTINUE;
    }
    w = api->palloc(r, sizeof(*w));
    if (w == NULL) {
        return MF_FAIL;
    }
    memset(w, 0, sizeof(*w));
    w->g = g;
    w->acct = account_for(g, u->key);
    if (w->acct == NULL) {
        pu_error(api, r, 502, "upstream_error", "upstream_auth_failed",
                 "provider '%s': %s (see the gateway log)", g->name,
                 g->naccounts || u->key.len
                     ? "the service-account key could not be loaded"
                     : "vertex needs a service account: credentials: or "
                       "keys: (a key file path or its JSON)");
        return MF_FAIL;
    }
    switch (token_step(r, w)) {
    case 1:
        return MF_CONTINUE; /* the cached token was set */
    case 0:
        return MF_PAUSE; /* a callback resumes */
    default:
        return MF_FAIL;
    }
}

/* Response: generateContent -> canonical */

static void
read_usage(json_t *um, mf_usage_t *u)
{
    json_int_t thoughts;

    if (!json_is_object(um)) {
        return;
    }
    thoughts = pu_int_at(um, "thoughtsTokenCount");
    u->prompt_tokens = pu_int_at(um, "promptTokenCount");
    u->completion_tokens = pu_int_at(um, "candidatesTokenCount") + thoughts;
    u->total_tokens = json_is_integer(json_object_get(um, "totalTokenCount"))
                          ? pu_int_at(um, "totalTokenCount")
                          : u->prompt_tokens + u->completion_tokens;
    u->cached_tokens = pu_int_at(um, "cachedContentTokenCount");
    u->reasoning_tokens = thoughts;
    u->estimated = 0;
}

static int
is_safety_stop(const char *fr)
{
    static const char *const blocked[] = {
        "SAFETY", "RECITATION",   "BLOCKLIST", "PROHIBITED_CONTENT",
        "SPII",   "IMAGE_SAFETY", "LANGUAGE",  NULL};
    size_t i;

    for (i = 0; fr && blocked[i]; i++) {
        if (strcmp(fr, blocked[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static const char *
finish_reason(const char *fr, int tools)
{
    if (fr == NULL) {
        return NULL;
    }
    if (strcmp(fr, "MAX_TOKENS") == 0) {
        return "length";
    }
    if (is_safety_stop(fr)) {
        return "content_filter";
    }
    return tools ? "tool_calls" : "stop";
}

/* The harm categories a set of safety ratings blocked, for messages. */
static void
blocked_categories(json_t *ratings, char *out, size_t cap)
{
    json_t *r;
    size_t i, len = 0;

    out[0] = '\0';
    json_array_foreach(ratings, i, r)
    {
        const char *cat = json_string_value(json_object_get(r, "category"));
        const char *p = json_string_value(json_object_get(r, "probability"));

        if (cat &&
            (json_is_true(json_object_get(r, "blocked")) ||
             (p && (strcmp(p, "HIGH") == 0 || strcmp(p, "MEDIUM") == 0)))) {
            int n =
                snprintf(out + len, cap - len, "%s%s", len ? ", " : "", cat);

            if (n < 0 || (size_t)n >= cap - len) {
                break;
            }
            len += (size_t)n;
        }
    }
}

/* A safety block: fails the attempt with a 400 content_filter error.
 * what is "prompt" or "answer". */
static void
safety_error(mf_req_t *r, gemini_t *g, const char *what, const char *reason,
             json_t *ratings, json_t *message)
{
    char cats[256];
    const char *m = json_string_value(message);

    blocked_categories(ratings, cats, sizeof(cats));
    pu_error(api, r, 400, "invalid_request_error", "content_filter",
             "provider '%s' (Gemini) blocked the %s: %s%s%s%s%s%s", g->name,
             what, reason, cats[0] ? " (" : "", cats, cats[0] ? ")" : "",
             m ? ": " : "", m ? m : "");
}

static void
random_id(char *out, size_t cap, const char *prefix)
{
    static const char digits[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    unsigned long long v = (unsigned long long)now_s() * 1000003ULL ^
                           (unsigned long long)(uintptr_t)out ^
                           (unsigned long long)rand();
    char tail[17];
    int i;

    for (i = 0; i < 16; i++) {
        tail[i] = digits[v % 36];
        v = v / 36 ^ (v << 7) ^ (unsigned long long)rand();
    }
    tail[16] = '\0';
    snprintf(out, cap, "%s%s", prefix, tail);
}

/* A functionCall part to a canonical tool call (index set when >= 0). */
static json_t *
tool_call(json_t *part, int index)
{
    json_t *fc = json_object_get(part, "functionCall");
    const char *sig =
        json_string_value(json_object_get(part, "thoughtSignature"));
    const char *given = json_string_value(json_object_get(fc, "id"));
    json_t *argv = json_object_get(fc, "args");
    char *args = argv ? mf_json_dumps(argv, JSON_COMPACT | JSON_ENCODE_ANY)
                      : strdup("{}");
    char id[64];
    json_t *c;

    if (given != NULL) {
        snprintf(id, sizeof(id), "%s", given);
    } else {
        random_id(id, sizeof(id), "call_");
    }
    c = mf_json_pack("{s:s+,s:s,s:{s:O,s:s}}", "id", id, sig ? SIG_SEP : "",
                     "type", "function", "function", "name",
                     json_object_get(fc, "name"), "arguments",
                     args ? args : "{}");
    if (sig != NULL) {
        char *full = malloc(strlen(id) + strlen(SIG_SEP) + strlen(sig) + 1);

        if (full != NULL) {
            char *q;

            sprintf(full, "%s%s%s", id, SIG_SEP, sig);
            /* ids stay [A-Za-z0-9_-] (Anthropic clients check): base64url,
             * which proto3 JSON reads back as the same bytes */
            for (q = full + strlen(id) + strlen(SIG_SEP); *q; q++) {
                *q = *q == '+' ? '-' : *q == '/' ? '_' : *q;
                if (*q == '=') {
                    *q = '\0';
                    break;
                }
            }
            json_object_set_new(c, "id", json_string(full));
            free(full);
        }
    }
    if (index >= 0) {
        json_object_set_new(c, "index", json_integer(index));
    }
    free(args);
    return c;
}

/* A candidate's parts: text, thoughts, tool calls. */
static void
read_parts(json_t *cand, char **text, size_t *tl, char **thought, size_t *kl,
           json_t *calls, int *ncalls)
{
    json_t *p;
    size_t i;

    json_array_foreach(
        json_object_get(json_object_get(cand, "content"), "parts"), i, p)
    {
        const char *t = json_string_value(json_object_get(p, "text"));

        if (json_object_get(p, "functionCall") != NULL) {
            json_array_append_new(calls,
                                  tool_call(p, ncalls ? (*ncalls)++ : -1));
        } else if (t != NULL && json_is_true(json_object_get(p, "thought"))) {
            pu_append(thought, kl, t);
        } else if (t != NULL && *t != '\0') {
            pu_append(text, tl, t);
        }
    }
}

static int
parse_embeddings(mf_req_t *r, gemini_t *g, json_t *in)
{
    json_t *vectors = json_array(), *e, *body = api->get_body_json(r);
    mf_usage_t u;
    size_t i;
    const char *fmt =
        json_string_value(json_object_get(body, "encoding_format"));
    mf_str_t model = api->get_model(r);
    char name[256];
    json_t *out;

    pu_usage_init(&u);
    u.prompt_tokens = 0;
    if (g->vertex) {
        json_array_foreach(json_object_get(in, "predictions"), i, e)
        {
            json_t *emb = json_object_get(e, "embeddings");

            json_array_append(vectors, json_object_get(emb, "values"));
            u.prompt_tokens +=
                pu_int_at(json_object_get(emb, "statistics"), "token_count");
        }
    } else {
        json_t *inputs = pu_embedding_inputs(body), *t;

        json_array_foreach(json_object_get(in, "embeddings"), i, e)
        {
            json_array_append(vectors, json_object_get(e, "values"));
        }
        /* batchEmbedContents reports no usage: about 4 characters a token */
        json_array_foreach(inputs, i, t)
        {
            u.prompt_tokens += (int64_t)(json_string_length(t) + 3) / 4;
        }
        u.estimated = 1;
        json_decref(inputs);
    }
    if (json_array_size(vectors) == 0) {
        json_decref(vectors);
        return MF_ERR;
    }
    u.total_tokens = u.prompt_tokens;
    u.completion_tokens = 0;
    api->set_usage(r, &u);
    snprintf(name, sizeof(name), "%.*s", (int)model.len, model.data);
    out = pu_embeddings_response(vectors, name,
                                 fmt && strcmp(fmt, "base64") == 0, &u);
    json_decref(vectors);
    return api->set_response_json(r, out);
}

static int
google_parse_response(mf_req_t *r, void *state, mf_str_t body, int canonical)
{
    gemini_t *g = state;
    json_t *in = mf_json_loadb(body.data, body.len, 0, NULL), *cand, *choices;
    json_t *pf;
    mf_usage_t usage;
    mf_req_info_t info = {.size = sizeof(info)};
    const char *block, *rid, *ver;
    char id[200];
    size_t i;
    json_t *out;

    (void)canonical; /* never pass-through: the client speaks OpenAI */
    if (!json_is_object(in)) {
        json_decref(in);
        return MF_ERR;
    }
    api->get_info(r, &info);
    if (info.endpoint == MF_ENDPOINT_EMBEDDINGS) {
        int rc = parse_embeddings(r, g, in);

        json_decref(in);
        return rc;
    }
    pu_usage_init(&usage);
    read_usage(json_object_get(in, "usageMetadata"), &usage);
    api->set_usage(r, &usage);
    pf = json_object_get(in, "promptFeedback");
    if ((block = json_string_value(json_object_get(pf, "blockReason"))) !=
        NULL) {
        safety_error(r, g, "prompt", block,
                     json_object_get(pf, "safetyRatings"),
                     json_object_get(pf, "blockReasonMessage"));
        json_decref(in);
        return MF_OK;
    }
    choices = json_array();
    json_array_foreach(json_object_get(in, "candidates"), i, cand)
    {
        char *text = NULL, *thought = NULL;
        size_t tl = 0, kl = 0;
        json_t *calls = json_array(), *msg;
        const char *fr =
            json_string_value(json_object_get(cand, "finishReason"));

        read_parts(cand, &text, &tl, &thought, &kl, calls, NULL);
        if (is_safety_stop(fr) && text == NULL && json_array_size(calls) == 0) {
            safety_error(r, g, "answer", fr,
                         json_object_get(cand, "safetyRatings"),
                         json_object_get(cand, "finishMessage"));
            free(text);
            free(thought);
            json_decref(calls);
            json_decref(choices);
            json_decref(in);
            return MF_OK;
        }
        msg = mf_json_pack("{s:s,s:o,s:n}", "role", "assistant", "content",
                           text ? json_string(text) : json_null(), "refusal");
        if (thought != NULL) {
            json_object_set_new(msg, "reasoning_content", json_string(thought));
        }
        if (json_array_size(calls) > 0) {
            json_object_set(msg, "tool_calls", calls);
        }
        json_array_append_new(
            choices,
            mf_json_pack(
                "{s:I,s:o,s:n,s:s}", "index",
                json_is_integer(json_object_get(cand, "index"))
                    ? pu_int_at(cand, "index")
                    : (json_int_t)i,
                "message", msg, "logprobs", "finish_reason",
                finish_reason(fr ? fr : "STOP", json_array_size(calls) > 0)));
        json_decref(calls);
        free(text);
        free(thought);
    }
    if (json_array_size(choices) == 0) {
        pu_error(api, r, 502, "upstream_error", "upstream_bad_response",
                 "provider '%s' (Gemini) answered without a candidate",
                 g->name);
        json_decref(choices);
        json_decref(in);
        return MF_OK;
    }
    rid = json_string_value(json_object_get(in, "responseId"));
    ver = json_string_value(json_object_get(in, "modelVersion"));
    if (rid != NULL) {
        snprintf(id, sizeof(id), "chatcmpl-%s", rid);
    } else {
        random_id(id, sizeof(id), "chatcmpl-");
    }
    out = mf_json_pack("{s:s,s:s,s:I,s:s%,s:o,s:o}", "id", id, "object",
                       "chat.completion", "created", (json_int_t)time(NULL),
                       "model", ver ? ver : info.upstream_model.data,
                       ver ? strlen(ver) : info.upstream_model.len, "choices",
                       choices, "usage", pu_usage_json(&usage));
    json_decref(in);
    return out ? api->set_response_json(r, out) : MF_ERR;
}

/* Stream: SSE events (each a GenerateContentResponse) -> chunks */

static gstream_t *
stream_state(mf_req_t *r)
{
    void **slot = api->provider_ctx(r);
    gstream_t *s = *slot;

    if (s == NULL) {
        mf_req_info_t info = {.size = sizeof(info)};

        s = api->palloc(r, sizeof(*s));
        if (s == NULL) {
            return NULL;
        }
        memset(s, 0, sizeof(*s));
        pu_usage_init(&s->usage);
        s->created = (json_int_t)time(NULL);
        random_id(s->id, sizeof(s->id), "chatcmpl-");
        api->get_info(r, &info);
        snprintf(s->model, sizeof(s->model), "%.*s",
                 (int)info.upstream_model.len, info.upstream_model.data);
        *slot = s;
    }
    return s;
}

static int
google_parse_stream_event(mf_req_t *r, void *state, const mf_sse_event_t *ev,
                          int canonical)
{
    gemini_t *g = state;
    gstream_t *s = stream_state(r);
    json_t *j, *cand, *pf;
    const char *block;
    size_t i;
    int flags = MF_EVENT_PASS;

    (void)canonical;
    if (s == NULL) {
        return MF_ERR;
    }
    j = mf_json_loadb(ev->data.data, ev->data.len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return MF_ERR;
    }
    if (json_is_object(json_object_get(j, "error"))) {
        json_t *e = json_object_get(j, "error");

        api->emit_chunk(r, mf_json_pack("{s:{s:O,s:s,s:n}}", "error", "message",
                                        json_object_get(e, "message"), "type",
                                        "upstream_error", "code"));
        json_decref(j);
        return MF_EVENT_ERROR;
    }
    read_usage(json_object_get(j, "usageMetadata"), &s->usage);
    api->set_usage(r, &s->usage);
    if (s->done) {
        json_decref(j);
        return MF_EVENT_USAGE_ONLY;
    }
    if (json_is_string(json_object_get(j, "modelVersion"))) {
        snprintf(s->model, sizeof(s->model), "%s",
                 json_string_value(json_object_get(j, "modelVersion")));
    }
    if (json_is_string(json_object_get(j, "responseId"))) {
        snprintf(s->id, sizeof(s->id), "chatcmpl-%s",
                 json_string_value(json_object_get(j, "responseId")));
    }
    pf = json_object_get(j, "promptFeedback");
    if ((block = json_string_value(json_object_get(pf, "blockReason"))) !=
        NULL) {
        safety_error(r, g, "prompt", block,
                     json_object_get(pf, "safetyRatings"),
                     json_object_get(pf, "blockReasonMessage"));
        json_decref(j);
        return MF_EVENT_ERROR;
    }
    json_array_foreach(json_object_get(j, "candidates"), i, cand)
    {
        int idx = json_is_integer(json_object_get(cand, "index"))
                      ? (int)pu_int_at(cand, "index")
                      : (int)i;
        const char *fr =
            json_string_value(json_object_get(cand, "finishReason"));
        char *text = NULL, *thought = NULL;
        size_t tl = 0, kl = 0;
        json_t *calls = json_array(), *delta = json_object();

        if (idx < 0 || idx >= MAX_CAND) {
            json_decref(calls);
            json_decref(delta);
            continue;
        }
        if (idx + 1 > s->ncand) {
            s->ncand = idx + 1;
        }
        read_parts(cand, &text, &tl, &thought, &kl, calls, &s->ntools[idx]);
        if (is_safety_stop(fr) && !s->emitted && text == NULL &&
            json_array_size(calls) == 0) {
            safety_error(r, g, "answer", fr,
                         json_object_get(cand, "safetyRatings"),
                         json_object_get(cand, "finishMessage"));
            free(text);
            free(thought);
            json_decref(calls);
            json_decref(delta);
            json_decref(j);
            return MF_EVENT_ERROR;
        }
        if (!s->started[idx]) {
            s->started[idx] = 1;
            json_object_set_new(delta, "role", json_string("assistant"));
        }
        if (thought != NULL) {
            json_object_set_new(delta, "reasoning_content",
                                json_string(thought));
        }
        if (text != NULL) {
            json_object_set_new(delta, "content", json_string(text));
        } else if (json_object_get(delta, "role") != NULL) {
            json_object_set_new(delta, "content", json_string(""));
        }
        if (json_array_size(calls) > 0) {
            json_object_set(delta, "tool_calls", calls);
        }
        free(text);
        free(thought);
        json_decref(calls);
        if (json_object_size(delta) > 0) {
            api->emit_chunk(
                r, pu_chunk(s->id, s->model, s->created, idx, delta, NULL));
            s->emitted = 1;
        } else {
            json_decref(delta);
        }
        if (fr != NULL && !s->finished[idx]) {
            s->finished[idx] = 1;
            s->nfinished++;
            api->emit_chunk(r, pu_chunk(s->id, s->model, s->created, idx,
                                        json_object(),
                                        finish_reason(fr, s->ntools[idx] > 0)));
            s->emitted = 1;
        }
    }
    if (s->ncand > 0 && s->nfinished == s->ncand) {
        s->done = 1;
        api->emit_chunk(r,
                        pu_usage_chunk(s->id, s->model, s->created, &s->usage));
        flags |= MF_EVENT_DONE;
    }
    json_decref(j);
    return flags;
}

/* Errors: {"error": {"code", "message", "status", "details"}} */

static int
google_parse_error(mf_req_t *r, void *state, int status, mf_str_t body,
                   mf_error_t *err)
{
    gemini_t *g = state;
    json_t *j = mf_json_loadb(body.data, body.len, 0, NULL);
    json_t *e = json_object_get(j, "error"), *d;
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *st = json_string_value(json_object_get(e, "status"));
    int auth = 0;
    size_t i;

    if (json_is_array(j)) { /* streamGenerateContent without alt=sse */
        e = json_object_get(json_array_get(j, 0), "error");
        msg = json_string_value(json_object_get(e, "message"));
        st = json_string_value(json_object_get(e, "status"));
    }
    json_array_foreach(json_object_get(e, "details"), i, d)
    {
        const char *reason = json_string_value(json_object_get(d, "reason"));
        const char *delay = json_string_value(json_object_get(d, "retryDelay"));

        if (reason && (strcmp(reason, "API_KEY_INVALID") == 0 ||
                       strcmp(reason, "API_KEY_SERVICE_BLOCKED") == 0)) {
            auth = 1;
        }
        if (delay != NULL) {
            err->retry_after = atoi(delay) > 0 ? atoi(delay) : 1;
        }
    }
    err->status = status;
    err->type = "upstream_error";
    if (auth || status == 401 || status == 403) {
        err->status = 502; /* the gateway's key, not the client's */
        err->code = "upstream_auth_failed";
        msg = "the provider refused the gateway's credentials";
    } else if (status == 429) {
        err->type = "rate_limit_error";
    } else if (status == 404) {
        err->type = "invalid_request_error";
        err->code = "model_not_found";
    } else if (status == 400 || status == 413 || status == 422) {
        err->type = "invalid_request_error";
        if (msg && (strstr(msg, "input token count") ||
                    strstr(msg, "exceeds the maximum number of tokens") ||
                    strstr(msg, "context"))) {
            err->code = "context_length_exceeded";
        }
    } else if (status == 503 || (st && strcmp(st, "UNAVAILABLE") == 0)) {
        err->status = 503;
        err->code = "upstream_overloaded";
    } else {
        err->status = 502;
    }
    snprintf(err->message, sizeof(err->message),
             "provider '%s' answered %d%s%s%s%s", g->name, status,
             st ? " " : "", st ? st : "", msg ? ": " : "", msg ? msg : "");
    json_decref(j);
    (void)r;
    return MF_OK;
}

/* countTokens' answer: {"totalTokens": N, ...}. */
static int
google_parse_count(mf_req_t *r, void *state, mf_str_t body, int64_t *tokens)
{
    json_t *in = mf_json_loadb(body.data, body.len, 0, NULL);
    json_t *n = json_object_get(in, "totalTokens");

    (void)r;
    (void)state;
    *tokens = json_is_integer(n) ? (int64_t)json_integer_value(n) : -1;
    json_decref(in);
    return *tokens >= 0 ? MF_OK : MF_ERR;
}

/* Claude on vertex answers in the Anthropic Messages wire. */

static int
gemini_parse_response(mf_req_t *r, void *state, mf_str_t body, int canonical)
{
    return claude_attempt(r, state)
               ? aw_parse_response(r, state, body, canonical)
               : google_parse_response(r, state, body, canonical);
}

static int
gemini_parse_stream_event(mf_req_t *r, void *state, const mf_sse_event_t *ev,
                          int canonical)
{
    return claude_attempt(r, state)
               ? aw_parse_stream_event(r, state, ev, canonical)
               : google_parse_stream_event(r, state, ev, canonical);
}

/* Claude's own errors are Anthropic's ({"type":"error","error":{"type"}});
 * Vertex's (a token refused, a quota) are Google's. */
static int
gemini_parse_error(mf_req_t *r, void *state, int status, mf_str_t body,
                   mf_error_t *err)
{
    gemini_t *g = state;

    if (claude_attempt(r, g) && status != 401 && status != 403) {
        json_t *j = mf_json_loadb(body.data, body.len, 0, NULL);
        int anthropic = json_is_string(
            json_object_get(json_object_get(j, "error"), "type"));

        json_decref(j);
        if (anthropic) {
            return aw_parse_error(r, g->name, status, body, err);
        }
    }
    return google_parse_error(r, state, status, body, err);
}

static int
gemini_parse_count(mf_req_t *r, void *state, mf_str_t body, int64_t *tokens)
{
    return claude_attempt(r, state)
               ? aw_parse_count(r, state, body, tokens)
               : google_parse_count(r, state, body, tokens);
}

static const char *const gemini_types[] = {"gemini", "vertex", NULL};

static const mf_provider_t gemini_provider = {
    .wire = "gemini",
    .types = gemini_types,
    .build_request = gemini_build_request,
    .parse_response = gemini_parse_response,
    .parse_stream_event = gemini_parse_stream_event,
    .parse_error = gemini_parse_error,
    .authorize = gemini_authorize,
    .parse_count = gemini_parse_count,
};

static const mf_plugin_t gemini_plugin = {
    MF_PLUGIN_ABI,       .name = "provider-gemini",
    .version = "1.0.0",  .init = gemini_init,
    .fini = gemini_fini, .provider = &gemini_provider,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &gemini_plugin;
}
