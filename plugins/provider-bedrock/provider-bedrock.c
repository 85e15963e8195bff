/*
 * provider-bedrock: Amazon Bedrock's Converse API behind the canonical
 * (OpenAI chat) form.
 *
 * Auth: a key "ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]" signs each
 * request with AWS Signature Version 4 (HMAC-SHA256 via OpenSSL; the path
 * is encoded twice in the canonical request, as AWS wants for every
 * service but S3); any other key is a Bedrock API key sent as a bearer
 * token. The region comes from `region:`, else the base URL's host
 * (bedrock-runtime.REGION.amazonaws.com), else us-east-1.
 *
 * Requests: POST /model/{modelId}/converse (or /converse-stream): system
 * messages to `system`, user and assistant turns merged to alternate,
 * images (data: URLs) to image blocks, tools to toolConfig (toolSpec with
 * inputSchema.json), tool_choice to auto/any/tool, tool calls and results
 * to toolUse/toolResult blocks, max_tokens/temperature/top_p/stop to
 * inferenceConfig, top_k, reasoning_effort (Claude's thinking; an
 * Anthropic client's thinking as it is) and a Claude model's
 * anthropic-beta flags to additionalModelRequestFields. Claude's signed
 * reasoning blocks travel as reasoning items (marked encrypted_content)
 * both ways. Responses back to chat completions; ConverseStream's AWS
 * event-stream messages (the host decodes the binary framing, see
 * stream_framing) to chunks: text, tool-call and reasoning deltas, stop
 * reasons, usage with cache reads; in-stream exceptions fail the attempt
 * (or end the stream) with the matching status.
 *
 * Embeddings: POST /model/{modelId}/invoke with Titan ({inputText}; one
 * input per request) or Cohere ({texts, input_type}) bodies.
 *
 * provider fields: region; options: { input_type: search_document }.
 */
#include <manifold/plugin.h>
#include <manifold/json.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/provider-util.h"

static const mf_host_api_t *api;

/* A base URL that stands for "the region's endpoint". */
#define GENERIC_HOST "https://bedrock-runtime.amazonaws.com"

typedef struct {
    char *name;
    char region[64];
    char input_type[64];
} bedrock_t;

/* Per request: a stream's translation state. */
typedef struct {
    char id[128];
    char model[256];
    json_int_t created;
    mf_usage_t usage;
    int tool_of_block[64]; /* content block -> tool call index, -1 */
    int ntools;
    int think_block; /* the reasoning block under way, -1 none */
    char *think;     /* its text so far (request memory) */
    size_t think_len, think_cap;
    char *signature; /* its signature (request memory), NULL none */
} bstream_t;

/* Claude's reasoning on Bedrock travels in the canonical form as
 * reasoning items (the Responses API's shape) whose encrypted_content is
 * this mark and the Converse reasoningContent object (its text and
 * signature, or its redactedContent): it goes back only to Bedrock. */
#define BR_MARK "manifold:bedrock:"

/* The reasoning item of a reasoningContent that can go back (one with a
 * signature, or redacted); NULL for another. New reference. */
static json_t *
reasoning_item_of(json_t *rc)
{
    json_t *rt = json_object_get(rc, "reasoningText"), *keep, *item;
    char *text;

    if (json_is_string(json_object_get(rt, "text")) &&
        json_is_string(json_object_get(rt, "signature"))) {
        keep = mf_json_pack("{s:{s:O,s:O}}", "reasoningText", "text",
                            json_object_get(rt, "text"), "signature",
                            json_object_get(rt, "signature"));
    } else if (json_is_string(json_object_get(rc, "redactedContent"))) {
        keep = mf_json_pack("{s:O}", "redactedContent",
                            json_object_get(rc, "redactedContent"));
    } else {
        return NULL;
    }
    text = mf_json_dumps(keep, JSON_COMPACT);
    item = mf_json_pack("{s:s,s:[],s:s+}", "type", "reasoning", "summary",
                        "encrypted_content", BR_MARK, text ? text : "{}");
    if (json_is_string(json_object_get(rt, "text"))) {
        json_array_append_new(json_object_get(item, "summary"),
                              mf_json_pack("{s:s,s:O}", "type", "summary_text",
                                           "text",
                                           json_object_get(rt, "text")));
    }
    free(text);
    json_decref(keep);
    return item;
}

/* The reasoningContent block a reasoning item made by reasoning_item_of
 * carries, for an assistant turn; NULL for another item. */
static json_t *
reasoning_block(json_t *item)
{
    const char *ec =
        json_string_value(json_object_get(item, "encrypted_content"));
    json_t *rc, *rt, *out = NULL;

    if (ec == NULL || strncmp(ec, BR_MARK, sizeof(BR_MARK) - 1) != 0) {
        return NULL;
    }
    rc = mf_json_loadb(ec + sizeof(BR_MARK) - 1,
                       strlen(ec) - (sizeof(BR_MARK) - 1), 0, NULL);
    rt = json_object_get(rc, "reasoningText");
    if (json_is_string(json_object_get(rt, "text")) &&
        json_is_string(json_object_get(rt, "signature"))) {
        out = mf_json_pack("{s:{s:{s:O,s:O}}}", "reasoningContent",
                           "reasoningText", "text", json_object_get(rt, "text"),
                           "signature", json_object_get(rt, "signature"));
    } else if (json_is_string(json_object_get(rc, "redactedContent"))) {
        out = mf_json_pack("{s:{s:O}}", "reasoningContent", "redactedContent",
                           json_object_get(rc, "redactedContent"));
    }
    json_decref(rc);
    return out;
}

static int
bedrock_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    json_t *conf = json_loads(config_json, 0, NULL);
    json_t *opt = json_object_get(conf, "options");
    bedrock_t *b = calloc(1, sizeof(*b));
    const char *name = json_string_value(json_object_get(conf, "name"));
    const char *region = json_string_value(json_object_get(conf, "region"));
    const char *base = json_string_value(json_object_get(conf, "base_url"));
    const char *it = json_string_value(json_object_get(opt, "input_type"));
    const char *h;

    api = host;
    if (b == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    b->name = strdup(name ? name : "bedrock");
    if (region == NULL) {
        region = json_string_value(json_object_get(opt, "region"));
    }
    if (region != NULL && *region) {
        snprintf(b->region, sizeof(b->region), "%s", region);
    } else if (base && (h = strstr(base, "bedrock-runtime.")) != NULL) {
        const char *r = h + strlen("bedrock-runtime."), *dot = strchr(r, '.');

        snprintf(b->region, sizeof(b->region), "%.*s",
                 (int)(dot ? dot - r : (long)strlen(r)), r);
    } else {
        snprintf(b->region, sizeof(b->region), "us-east-1");
    }
    snprintf(b->input_type, sizeof(b->input_type), "%s",
             it ? it : "search_document");
    json_decref(conf);
    *state = b;
    return MF_OK;
}

static void
bedrock_fini(void *state)
{
    bedrock_t *b = state;

    free(b->name);
    free(b);
}

/* SigV4 */

static void
sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;

    EVP_Digest(data, n, md, &len, EVP_sha256(), NULL);
    pu_hex(md, 32, out);
}

static void
hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned int len = 32;

    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg),
         out, &len);
}

/* The day's signing key of a secret (four HMACs), cached per thread: it
 * changes once a day, and every request of a key would derive it again. */
static void
signing_key(const bedrock_t *b, const char *secret, const char *date,
            unsigned char k[32])
{
    static __thread struct {
        unsigned char secret_md[32];
        char date[9];
        char region[64];
        unsigned char key[32];
        int set;
    } cache;
    unsigned char smd[32], kd[32], kr[32], ks[32];
    unsigned int len = 0;
    char kinit[300];

    EVP_Digest(secret, strlen(secret), smd, &len, EVP_sha256(), NULL);
    if (cache.set && memcmp(cache.secret_md, smd, 32) == 0 &&
        strcmp(cache.date, date) == 0 && strcmp(cache.region, b->region) == 0) {
        memcpy(k, cache.key, 32);
        return;
    }
    snprintf(kinit, sizeof(kinit), "AWS4%s", secret);
    hmac(kinit, strlen(kinit), date, kd);
    hmac(kd, 32, b->region, kr);
    hmac(kr, 32, "bedrock", ks);
    hmac(ks, 32, "aws4_request", k);
    OPENSSL_cleanse(kinit, sizeof(kinit));
    memcpy(cache.secret_md, smd, 32);
    snprintf(cache.date, sizeof(cache.date), "%s", date);
    snprintf(cache.region, sizeof(cache.region), "%s", b->region);
    memcpy(cache.key, k, 32);
    cache.set = 1;
}

/* Percent-encodes s (n bytes) as SigV4 does: all but A-Za-z0-9-_.~, and
 * '/' too unless keep_slash. */
static void
uri_encode(const char *s, size_t n, int keep_slash, char *out, size_t cap)
{
    static const char hexd[] = "0123456789ABCDEF";
    size_t i, o = 0;

    for (i = 0; i < n && o + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
            c == '~' || (keep_slash && c == '/')) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hexd[c >> 4];
            out[o++] = hexd[c & 15];
        }
    }
    out[o] = '\0';
}

/* host[:port] and path of url as the host's request line writes them. */
static int
split_url(const char *url, char *host, size_t hcap, const char **path)
{
    int tls = strncmp(url, "https://", 8) == 0;
    const char *h = url + (tls ? 8 : 7), *slash = strchr(h, '/');
    const char *colon;
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);

    if (hl >= hcap) {
        return MF_ERR;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    colon = strrchr(host, ':');
    if (colon != NULL && strchr(host, ']') == NULL &&
        atoi(colon + 1) == (tls ? 443 : 80)) {
        host[colon - host] = '\0'; /* the default port is not written */
    }
    *path = slash ? slash : "/";
    return MF_OK;
}

/* Signs the request (url, body) with the key "AKID:SECRET[:TOKEN]". */
static int
sign(mf_req_t *r, bedrock_t *b, const char *url, const char *body, mf_str_t key)
{
    char akid[256], secret[256], token[4096] = "", host[512];
    char amzdate[20], date[9], canon_uri[4096], payload[65], creq_hash[65];
    char scope[160], signed_headers[96], *creq, *sts, sig[65], auth[1024];
    const char *path, *c1, *c2;
    unsigned char k[32], ksig[32];
    time_t now = time(NULL);
    struct tm tm;
    size_t n;

    c1 = memchr(key.data, ':', key.len);
    c2 = c1 ? memchr(c1 + 1, ':', key.len - (size_t)(c1 + 1 - key.data)) : NULL;
    if (c1 == NULL || (size_t)(c1 - key.data) >= sizeof(akid)) {
        return MF_ERR;
    }
    snprintf(akid, sizeof(akid), "%.*s", (int)(c1 - key.data), key.data);
    n = c2 ? (size_t)(c2 - c1 - 1) : key.len - (size_t)(c1 + 1 - key.data);
    if (n >= sizeof(secret)) {
        return MF_ERR;
    }
    snprintf(secret, sizeof(secret), "%.*s", (int)n, c1 + 1);
    if (c2 != NULL) {
        snprintf(token, sizeof(token), "%.*s",
                 (int)(key.len - (size_t)(c2 + 1 - key.data)), c2 + 1);
    }
    if (split_url(url, host, sizeof(host), &path) != MF_OK) {
        return MF_ERR;
    }
    gmtime_r(&now, &tm);
    strftime(amzdate, sizeof(amzdate), "%Y%m%dT%H%M%SZ", &tm);
    memcpy(date, amzdate, 8);
    date[8] = '\0';
    uri_encode(path, strcspn(path, "?"), 1, canon_uri, sizeof(canon_uri));
    sha256_hex(body, strlen(body), payload);
    snprintf(scope, sizeof(scope), "%s/%s/bedrock/aws4_request", date,
             b->region);
    snprintf(signed_headers, sizeof(signed_headers),
             "content-type;host;x-amz-date%s",
             token[0] ? ";x-amz-security-token" : "");
    creq = malloc(strlen(canon_uri) + strlen(host) + strlen(token) + 512);
    if (creq == NULL) {
        return MF_ERR;
    }
    sprintf(creq,
            "POST\n%s\n\ncontent-type:application/json\nhost:%s\n"
            "x-amz-date:%s\n%s%s%s\n%s\n%s",
            canon_uri, host, amzdate, token[0] ? "x-amz-security-token:" : "",
            token, token[0] ? "\n" : "", signed_headers, payload);
    sha256_hex(creq, strlen(creq), creq_hash);
    free(creq);
    sts = malloc(strlen(scope) + 128);
    if (sts == NULL) {
        return MF_ERR;
    }
    sprintf(sts, "AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope, creq_hash);
    signing_key(b, secret, date, k);
    hmac(k, 32, sts, ksig);
    free(sts);
    pu_hex(ksig, 32, sig);
    snprintf(auth, sizeof(auth),
             "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
             "Signature=%s",
             akid, scope, signed_headers, sig);
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("x-amz-date"),
                    (mf_str_t){amzdate, strlen(amzdate)});
    if (token[0]) {
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS,
                        MF_STR("x-amz-security-token"),
                        (mf_str_t){token, strlen(token)});
    }
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("authorization"),
                    (mf_str_t){auth, strlen(auth)});
    return MF_OK;
}

/* Request: canonical -> Converse */

static const char *
image_format(mf_str_t mt)
{
    static const char *const f[] = {"png", "jpeg", "gif", "webp", NULL};
    size_t i;

    for (i = 0; f[i]; i++) {
        size_t n = strlen(f[i]);

        if (mt.len == 6 + n && memcmp(mt.data, "image/", 6) == 0 &&
            memcmp(mt.data + 6, f[i], n) == 0) {
            return f[i];
        }
    }
    if (mt.len == 9 && memcmp(mt.data, "image/jpg", 9) == 0) {
        return "jpeg";
    }
    return NULL;
}

/* Converse's prompt-cache breakpoint, the block after what it caches
 * (a canonical part's or tool's cache_control, Anthropic's breakpoint). */
static json_t *
cache_point(void)
{
    return mf_json_pack("{s:{s:s}}", "cachePoint", "type", "default");
}

/* The documents named so far in the request this worker thread is
 * building: Converse refuses two documents of one name in a request. */
static _Thread_local unsigned doc_seq;

/* An Anthropic document part (provider-util.h) as a Converse document
 * block: a PDF's bytes as they are (base64 in JSON), a text document's
 * as a txt document. The name is the title's letters, digits, single
 * spaces, hyphens, parentheses and brackets (the characters Converse
 * allows), numbered so that it is unique; NULL for another source. */
static json_t *
document_block(json_t *part)
{
    json_t *src = json_object_get(part, "source"), *out = NULL;
    const char *data = json_string_value(json_object_get(src, "data"));
    const char *title = json_string_value(json_object_get(part, "title"));
    unsigned kind = pu_document_kind(part);
    char name[96], *b64;
    size_t n = 0;

    for (; title != NULL && *title != '\0' && n < 64; title++) {
        unsigned char c = (unsigned char)*title;

        if (isalnum(c) || strchr("-()[]", c) != NULL) {
            name[n++] = (char)c;
        } else if (n > 0 && name[n - 1] != ' ') {
            name[n++] = ' '; /* spaces, dots and the rest: one space */
        }
    }
    while (n > 0 && name[n - 1] == ' ') {
        n--;
    }
    snprintf(name + n, sizeof(name) - n, "%s%u", n > 0 ? " " : "Document ",
             ++doc_seq);
    if (kind == PU_DOC_PDF) {
        out = mf_json_pack("{s:{s:s,s:s,s:{s:s}}}", "document", "format", "pdf",
                           "name", name, "source", "bytes", data);
    } else if (kind == PU_DOC_TEXT &&
               (b64 = pu_base64(data, strlen(data))) != NULL) {
        out = mf_json_pack("{s:{s:s,s:s,s:{s:s}}}", "document", "format", "txt",
                           "name", name, "source", "bytes", b64);
        free(b64);
    }
    return out;
}

/* Whether the request holds a document Converse cannot take: a source
 * other than a base64 PDF or text, or a message with a document and no
 * text (Converse wants text beside a document); then a 400 that says
 * so, and 1. */
static int
document_refused(mf_req_t *r, const bedrock_t *b, json_t *body)
{
    json_t *m, *p;
    size_t i, j;
    const char *src;

    if (pu_document_refused(body, PU_DOC_PDF | PU_DOC_TEXT, &src)) {
        pu_error(api, r, 400, "invalid_request_error", "unsupported_document",
                 "provider '%s' (Bedrock) cannot take a document block with "
                 "a '%s' source: Converse takes a base64 PDF or a text "
                 "document",
                 b->name, src);
        return 1;
    }
    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        int docs = 0, text = 0;

        json_array_foreach(json_object_get(m, "content"), j, p)
        {
            const char *type = json_string_value(json_object_get(p, "type"));

            docs += type != NULL && strcmp(type, "document") == 0;
            text += type != NULL && strcmp(type, "text") == 0 &&
                    json_string_length(json_object_get(p, "text")) > 0;
        }
        if (docs > 0 && text == 0) {
            pu_error(api, r, 400, "invalid_request_error",
                     "unsupported_document",
                     "provider '%s' (Bedrock): messages[%zu] has a document "
                     "block and no text; Converse takes a document only "
                     "beside a text block in the same message",
                     b->name, i);
            return 1;
        }
    }
    return 0;
}

/* Content (a string or parts) to Converse blocks; *bad names an image
 * Converse cannot take. A part with cache_control is followed by a
 * cachePoint block when cache is set, else *cached is set (a tool
 * result's content takes none: the point goes after the result). */
static json_t *
blocks_cached(json_t *content, const char **bad, int cache, int *cached)
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
        json_t *t = json_object_get(part, "text");

        if (type && strcmp(type, "text") == 0 && json_string_length(t) > 0) {
            json_array_append_new(out, mf_json_pack("{s:O}", "text", t));
        } else if (type && strcmp(type, "document") == 0) {
            json_t *d = document_block(part);

            if (d == NULL) {
                continue;
            }
            json_array_append_new(out, d);
        } else if (type && strcmp(type, "image_url") == 0) {
            const char *url = json_string_value(
                json_object_get(json_object_get(part, "image_url"), "url"));
            mf_str_t mt, data;
            const char *fmt;

            if (pu_data_url(url, &mt, &data) != MF_OK ||
                (fmt = image_format(mt)) == NULL) {
                *bad = url ? url : "";
                continue;
            }
            json_array_append_new(
                out, mf_json_pack("{s:{s:s,s:{s:s%}}}", "image", "format", fmt,
                                  "source", "bytes", data.data, data.len));
        } else {
            continue;
        }
        if (json_is_object(json_object_get(part, "cache_control"))) {
            if (cache) {
                json_array_append_new(out, cache_point());
            } else if (cached != NULL) {
                *cached = 1;
            }
        }
    }
    return out;
}

static json_t *
blocks_of(json_t *content, const char **bad)
{
    return blocks_cached(content, bad, 1, NULL);
}

static json_t *
tool_use_blocks(json_t *calls)
{
    json_t *out = json_array(), *c;
    size_t i;

    json_array_foreach(calls, i, c)
    {
        json_t *fn = json_object_get(c, "function");

        json_array_append_new(
            out, mf_json_pack("{s:{s:O,s:O,s:o}}", "toolUse", "toolUseId",
                              json_object_get(c, "id"), "name",
                              json_object_get(fn, "name"), "input",
                              pu_tool_args(c)));
    }
    return out;
}

static json_t *
tool_result_block(json_t *m, int *cached)
{
    json_t *content = json_object_get(m, "content"), *inner, *j;
    const char *bad = NULL;

    if (json_is_string(content)) {
        j = json_loads(json_string_value(content), 0, NULL);
        inner = json_is_object(j) ? mf_json_pack("[{s:o}]", "json", j)
                                  : mf_json_pack("[{s:O}]", "text", content);
        if (!json_is_object(j)) {
            json_decref(j);
        }
    } else {
        inner = blocks_cached(content, &bad, 0, cached);
    }
    if (json_is_object(json_object_get(m, "cache_control"))) {
        *cached = 1; /* the tool message's own breakpoint */
    }
    if (json_array_size(inner) == 0) {
        json_array_append_new(inner, mf_json_pack("{s:s}", "text", "(empty)"));
    }
    return mf_json_pack("{s:{s:O,s:o,s:s}}", "toolResult", "toolUseId",
                        json_object_get(m, "tool_call_id"), "content", inner,
                        "status", "success");
}

static json_t *
tool_config(json_t *in)
{
    json_t *tools = json_array(), *t, *tc = json_object_get(in, "tool_choice");
    json_t *out;
    size_t i;

    json_array_foreach(json_object_get(in, "tools"), i, t)
    {
        json_t *fn = json_object_get(t, "function");
        json_t *params = json_object_get(fn, "parameters");
        json_t *spec;

        if (!json_is_string(json_object_get(fn, "name"))) {
            continue;
        }
        spec = mf_json_pack("{s:O,s:{s:o}}", "name",
                            json_object_get(fn, "name"), "inputSchema", "json",
                            json_is_object(params)
                                ? json_incref(params)
                                : mf_json_pack("{s:s}", "type", "object"));
        if (json_is_string(json_object_get(fn, "description"))) {
            json_object_set(spec, "description",
                            json_object_get(fn, "description"));
        }
        json_array_append_new(tools, mf_json_pack("{s:o}", "toolSpec", spec));
        if (json_is_object(json_object_get(t, "cache_control"))) {
            json_array_append_new(tools, cache_point());
        }
    }
    if (json_array_size(tools) == 0) {
        json_decref(tools);
        return NULL;
    }
    out = mf_json_pack("{s:o}", "tools", tools);
    if (json_is_string(tc) && strcmp(json_string_value(tc), "required") == 0) {
        json_object_set_new(out, "toolChoice", mf_json_pack("{s:{}}", "any"));
    } else if (json_is_object(tc)) {
        json_object_set_new(
            out, "toolChoice",
            mf_json_pack(
                "{s:{s:O}}", "tool", "name",
                json_object_get(json_object_get(tc, "function"), "name")));
    } else if (json_is_string(tc) &&
               strcmp(json_string_value(tc), "auto") == 0) {
        json_object_set_new(out, "toolChoice", mf_json_pack("{s:{}}", "auto"));
    }
    /* "none": Converse has no such choice; the tools stay declared (the
     * history may use them) and the model decides */
    return out;
}

static json_t *
to_converse(json_t *in, const char **bad)
{
    static const pu_field_t fields[] = {{"temperature", "temperature", 0},
                                        {"top_p", "topP", 0},
                                        {NULL, NULL, 0}};
    json_t *out = json_object(), *msgs = json_array(), *system = json_array();
    json_t *m, *v, *ic = json_object(), *extra = json_object();
    const char *effort;
    size_t i;

    doc_seq = 0;
    json_array_foreach(json_object_get(in, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");

        if (role == NULL) {
            continue;
        }
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            json_t *blocks = blocks_of(content, bad);

            json_array_extend(system, blocks);
            json_decref(blocks);
        } else if (strcmp(role, "tool") == 0) {
            int cached = 0;
            json_t *blocks = mf_json_pack("[o]", tool_result_block(m, &cached));

            if (cached) {
                json_array_append_new(blocks, cache_point());
            }
            pu_push_turn(msgs, "user", "content", blocks);
        } else if (strcmp(role, "assistant") == 0) {
            json_t *blocks = json_array(), *ri, *rb;
            json_t *text = blocks_of(content, bad);
            json_t *calls = tool_use_blocks(json_object_get(m, "tool_calls"));
            size_t k;

            /* the turn's reasoning first, as Bedrock gave it: a tool loop
             * with thinking on needs it back before the toolUse */
            json_array_foreach(json_object_get(m, "reasoning_items"), k, ri)
            {
                if ((rb = reasoning_block(ri)) != NULL) {
                    json_array_append_new(blocks, rb);
                }
            }
            json_array_extend(blocks, text);
            json_array_extend(blocks, calls);
            json_decref(text);
            json_decref(calls);
            pu_push_turn(msgs, "assistant", "content", blocks);
        } else {
            pu_push_turn(msgs, "user", "content", blocks_of(content, bad));
        }
    }
    json_object_set_new(out, "messages", msgs);
    if (json_array_size(system) > 0) {
        json_object_set_new(out, "system", system);
    } else {
        json_decref(system);
    }
    if ((v = pu_max_tokens(in)) != NULL) {
        json_object_set(ic, "maxTokens", v);
    }
    pu_copy_fields(in, ic, fields);
    if ((v = pu_stop_list(in)) != NULL) {
        json_object_set_new(ic, "stopSequences", v);
    }
    if (json_is_integer(v = json_object_get(in, "top_k"))) {
        json_object_set(extra, "top_k", v);
    }
    if ((effort = json_string_value(json_object_get(in, "reasoning_effort"))) !=
        NULL) {
        json_int_t budget = strcmp(effort, "low") == 0    ? 1024
                            : strcmp(effort, "high") == 0 ? 16384
                                                          : 4096;
        json_int_t max = pu_opt_int(ic, "maxTokens", 0);

        json_object_set_new(extra, "thinking",
                            mf_json_pack("{s:s,s:I}", "type", "enabled",
                                         "budget_tokens", budget));
        if (max <= budget) {
            json_object_set_new(ic, "maxTokens",
                                json_integer(budget + (max ? max : 4096)));
        }
        json_object_del(ic, "temperature"); /* thinking refuses it */
        json_object_del(ic, "topP");
    } else if (json_is_object(json_object_get(in, "thinking"))) {
        /* Anthropic's own (from /v1/messages clients), as Claude on
         * Bedrock takes it */
        json_object_set(extra, "thinking", json_object_get(in, "thinking"));
        json_object_del(ic, "temperature");
        json_object_del(ic, "topP");
    }
    if (json_object_size(ic) > 0) {
        json_object_set_new(out, "inferenceConfig", ic);
    } else {
        json_decref(ic);
    }
    if (json_object_size(extra) > 0) {
        json_object_set_new(out, "additionalModelRequestFields", extra);
    } else {
        json_decref(extra);
    }
    if ((v = tool_config(in)) != NULL) {
        json_object_set_new(out, "toolConfig", v);
    }
    return out;
}

static int
is_titan(mf_str_t model)
{
    return model.len >= 13 && memmem(model.data, model.len, "amazon.titan", 12);
}

/* The InvokeModel body for an embeddings request, or NULL (err set). */
static json_t *
to_embed(mf_req_t *r, bedrock_t *b, json_t *in, const mf_upstream_t *u)
{
    json_t *inputs = pu_embedding_inputs(in), *out;
    json_t *dims = json_object_get(in, "dimensions");

    if (inputs == NULL) {
        pu_error(api, r, 400, "invalid_request_error", "invalid_input",
                 "provider '%s' embeds text: input must be a string or a "
                 "list of strings",
                 b->name);
        return NULL;
    }
    if (is_titan(u->model)) {
        if (json_array_size(inputs) != 1) {
            pu_error(api, r, 400, "invalid_request_error", "invalid_input",
                     "Titan embeddings take one input per request (got "
                     "%zu); send one string, or use a cohere.embed-* model "
                     "for batches",
                     json_array_size(inputs));
            json_decref(inputs);
            return NULL;
        }
        out = mf_json_pack("{s:O}", "inputText", json_array_get(inputs, 0));
        if (json_is_integer(dims)) {
            json_object_set(out, "dimensions", dims);
        }
        json_decref(inputs);
        return out;
    }
    out = mf_json_pack("{s:o,s:s,s:s}", "texts", inputs, "input_type",
                       json_string_value(json_object_get(in, "input_type"))
                           ?: b->input_type,
                       "truncate", "END");
    return out;
}

/* The client's anthropic-beta flags (a comma-separated header) to a
 * Claude model as Bedrock documents them for Converse: a list in
 * additionalModelRequestFields.anthropic_beta (Bedrock reads no beta
 * header). Other models are left alone: they refuse the field. */
static void
claude_betas(mf_req_t *r, const mf_upstream_t *u, json_t *msg)
{
    json_t *betas, *extra;
    mf_str_t v;
    size_t i = 0, j, a, b;

    if ((memmem(u->model.data, u->model.len, "anthropic.", 10) == NULL &&
         memmem(u->model.data, u->model.len, "claude", 6) == NULL) ||
        api->get_header(r, MF_REQUEST_HEADERS, MF_STR("anthropic-beta"), &v) !=
            MF_OK) {
        return;
    }
    betas = json_array();
    while (i < v.len) {
        for (j = i; j < v.len && v.data[j] != ','; j++) {
        }
        a = i;
        b = j;
        while (a < b && (v.data[a] == ' ' || v.data[a] == '\t')) {
            a++;
        }
        while (b > a && (v.data[b - 1] == ' ' || v.data[b - 1] == '\t')) {
            b--;
        }
        if (b > a) {
            json_array_append_new(betas, json_stringn(v.data + a, b - a));
        }
        i = j + 1;
    }
    if (json_array_size(betas) == 0) {
        json_decref(betas);
        return;
    }
    extra = json_object_get(msg, "additionalModelRequestFields");
    if (extra == NULL) {
        extra = json_object();
        json_object_set_new(msg, "additionalModelRequestFields", extra);
    }
    json_object_set_new(extra, "anthropic_beta", betas);
}

static int
bedrock_build_request(mf_req_t *r, void *state, const mf_upstream_t *u)
{
    bedrock_t *b = state;
    json_t *body = api->get_body_json(r), *msg;
    char url[4096], model[1024], base[1024], *text;
    const char *bad = NULL;
    int n, rc, embed = u->endpoint == MF_ENDPOINT_EMBEDDINGS;
    int count = u->endpoint == MF_ENDPOINT_COUNT_TOKENS;
    mf_str_t key = u->key;

    if (body == NULL || (u->endpoint != MF_ENDPOINT_CHAT && !embed && !count)) {
        return MF_ERR;
    }
    if (count &&
        (u->model.len < 10 || memcmp(u->model.data, "anthropic.", 10) != 0)) {
        /* CountTokens takes Claude's foundation-model ids only: the host
         * answers its estimate */
        return MF_ERR;
    }
    if (pu_model_segment(api, r, b->name, u->model.data, u->model.len, model,
                         sizeof(model)) < 0) {
        return MF_ERR;
    }
    if (u->base_url.len == sizeof(GENERIC_HOST) - 1 &&
        memcmp(u->base_url.data, GENERIC_HOST, u->base_url.len) == 0) {
        /* the generic endpoint: the region's own */
        snprintf(base, sizeof(base), "https://bedrock-runtime.%s.amazonaws.com",
                 b->region);
    } else {
        snprintf(base, sizeof(base), "%.*s", (int)u->base_url.len,
                 u->base_url.data);
    }
    n = snprintf(url, sizeof(url), "%s/model/%s/%s", base, model,
                 embed       ? "invoke"
                 : count     ? "count-tokens"
                 : u->stream ? "converse-stream"
                             : "converse");
    if (n < 0 || (size_t)n >= sizeof(url)) {
        return MF_ERR;
    }
    if (!embed && document_refused(r, b, body)) {
        return MF_ERR;
    }
    msg = embed ? to_embed(r, b, body, u) : to_converse(body, &bad);
    if (msg == NULL) {
        return MF_ERR; /* to_embed set the error */
    }
    if (!embed && !count) {
        claude_betas(r, u, msg);
    }
    if (count && bad == NULL) {
        /* CountTokens: the Converse request's messages and system */
        json_t *conv = json_object();

        json_object_set(conv, "messages", json_object_get(msg, "messages"));
        if (json_object_get(msg, "system") != NULL) {
            json_object_set(conv, "system", json_object_get(msg, "system"));
        }
        json_decref(msg);
        msg = mf_json_pack("{s:{s:o}}", "input", "converse", conv);
    }
    if (bad != NULL) {
        pu_error(api, r, 400, "invalid_request_error", "unsupported_image",
                 "provider '%s' (Bedrock) takes images as base64 data: URLs "
                 "of png, jpeg, gif or webp; got '%.60s%s'",
                 b->name, bad, strlen(bad) > 60 ? "..." : "");
        json_decref(msg);
        return MF_ERR;
    }
    text = mf_json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL) {
        return MF_ERR;
    }
    api->set_upstream_url(r, (mf_str_t){url, (size_t)n});
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("content-type"),
                    MF_STR("application/json"));
    api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("accept"),
                    u->stream && !embed
                        ? MF_STR("application/vnd.amazon.eventstream")
                        : MF_STR("application/json"));
    if (key.len > 0 && memchr(key.data, ':', key.len) != NULL) {
        if (sign(r, b, url, text, key) != MF_OK) {
            free(text);
            return MF_ERR;
        }
    } else if (key.len > 0) {
        char auth[4200];

        snprintf(auth, sizeof(auth), "Bearer %.*s", (int)key.len, key.data);
        api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS, MF_STR("authorization"),
                        (mf_str_t){auth, strlen(auth)});
    }
    rc = api->set_upstream_body(r, (mf_str_t){text, strlen(text)});
    free(text);
    return rc;
}

/* Response: Converse -> canonical */

static const char *
finish_reason(const char *stop)
{
    if (stop == NULL) {
        return "stop";
    }
    if (strcmp(stop, "max_tokens") == 0 ||
        strcmp(stop, "model_context_window_exceeded") == 0) {
        return "length";
    }
    if (strcmp(stop, "tool_use") == 0) {
        return "tool_calls";
    }
    if (strcmp(stop, "guardrail_intervened") == 0 ||
        strcmp(stop, "content_filtered") == 0) {
        return "content_filter";
    }
    return "stop"; /* end_turn, stop_sequence */
}

static void
read_usage(mf_req_t *r, json_t *in, mf_usage_t *u)
{
    json_int_t read, write;

    if (!json_is_object(in)) {
        return;
    }
    read = pu_int_at(in, "cacheReadInputTokens");
    write = pu_int_at(in, "cacheWriteInputTokens");
    u->prompt_tokens = pu_int_at(in, "inputTokens") + read + write;
    u->completion_tokens = pu_int_at(in, "outputTokens");
    u->total_tokens = u->prompt_tokens + u->completion_tokens;
    u->cached_tokens = read;
    u->estimated = 0;
    if (json_object_get(in, "cacheWriteInputTokens") != NULL &&
        api->abi_minor >= 5) {
        api->set_cache_write_tokens(r, write);
    }
}

static void
response_id(mf_req_t *r, char *out, size_t cap)
{
    mf_str_t rid;

    if (api->get_header(r, MF_UPSTREAM_RESPONSE_HEADERS,
                        MF_STR("x-amzn-requestid"), &rid) == MF_OK &&
        rid.len > 0 && rid.len < 100) {
        snprintf(out, cap, "chatcmpl-%.*s", (int)rid.len, rid.data);
    } else {
        snprintf(out, cap, "chatcmpl-bedrock-%lx", (unsigned long)time(NULL));
    }
}

static int
parse_embeddings(mf_req_t *r, json_t *in, const mf_req_info_t *info)
{
    json_t *vectors, *e, *body = api->get_body_json(r);
    const char *fmt =
        json_string_value(json_object_get(body, "encoding_format"));
    mf_usage_t u;
    mf_str_t hdr;
    char model[256];

    pu_usage_init(&u);
    if (json_is_array(json_object_get(in, "embedding"))) { /* Titan */
        vectors = mf_json_pack("[O]", json_object_get(in, "embedding"));
        u.prompt_tokens = pu_int_at(in, "inputTextTokenCount");
    } else {
        e = json_object_get(in, "embeddings");
        if (json_is_object(e)) { /* embedding_types: {"float": [...]} */
            e = json_object_get(e, "float");
        }
        if (!json_is_array(e)) {
            return MF_ERR;
        }
        vectors = json_incref(e);
        u.prompt_tokens = 0;
    }
    if (api->get_header(r, MF_UPSTREAM_RESPONSE_HEADERS,
                        MF_STR("x-amzn-bedrock-input-token-count"),
                        &hdr) == MF_OK &&
        hdr.len > 0 && hdr.len < 12) {
        char num[16];

        memcpy(num, hdr.data, hdr.len);
        num[hdr.len] = '\0';
        u.prompt_tokens = atoll(num);
    }
    u.completion_tokens = 0;
    u.total_tokens = u.prompt_tokens;
    api->set_usage(r, &u);
    snprintf(model, sizeof(model), "%.*s", (int)info->model.len,
             info->model.data);
    e = pu_embeddings_response(vectors, model,
                               fmt && strcmp(fmt, "base64") == 0, &u);
    json_decref(vectors);
    return api->set_response_json(r, e);
}

static int
bedrock_parse_response(mf_req_t *r, void *state, mf_str_t body, int canonical)
{
    json_t *in = mf_json_loadb(body.data, body.len, 0, NULL), *b, *msg, *calls;
    json_t *reasoning;
    mf_req_info_t info = {.size = sizeof(info)};
    mf_usage_t usage;
    char *text = NULL, *thinking = NULL, id[160];
    size_t i, tl = 0, kl = 0;
    json_t *out, *content;

    (void)state;
    (void)canonical;
    if (!json_is_object(in)) {
        json_decref(in);
        return MF_ERR;
    }
    api->get_info(r, &info);
    if (info.endpoint == MF_ENDPOINT_EMBEDDINGS) {
        int rc = parse_embeddings(r, in, &info);

        json_decref(in);
        return rc;
    }
    content = json_object_get(
        json_object_get(json_object_get(in, "output"), "message"), "content");
    if (!json_is_array(content)) {
        json_decref(in);
        return MF_ERR;
    }
    pu_usage_init(&usage);
    read_usage(r, json_object_get(in, "usage"), &usage);
    api->set_usage(r, &usage);
    calls = json_array();
    reasoning = json_array();
    json_array_foreach(content, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "text"));
        json_t *tu = json_object_get(b, "toolUse");
        json_t *rc = json_object_get(b, "reasoningContent"), *ri;

        if (rc != NULL && (ri = reasoning_item_of(rc)) != NULL) {
            json_array_append_new(reasoning, ri);
        }
        if (t != NULL) {
            pu_append(&text, &tl, t);
        } else if (tu != NULL) {
            char *args = mf_json_dumps(json_object_get(tu, "input"),
                                       JSON_COMPACT | JSON_ENCODE_ANY);

            json_array_append_new(
                calls, mf_json_pack("{s:O,s:s,s:{s:O,s:s}}", "id",
                                    json_object_get(tu, "toolUseId"), "type",
                                    "function", "function", "name",
                                    json_object_get(tu, "name"), "arguments",
                                    args ? args : "{}"));
            free(args);
        } else if ((t = json_string_value(json_object_get(
                        json_object_get(rc, "reasoningText"), "text"))) !=
                   NULL) {
            pu_append(&thinking, &kl, t);
        }
    }
    msg = mf_json_pack("{s:s,s:o,s:n}", "role", "assistant", "content",
                       text ? json_string(text) : json_null(), "refusal");
    if (thinking != NULL) {
        json_object_set_new(msg, "reasoning_content", json_string(thinking));
    }
    if (json_array_size(reasoning) > 0) {
        json_object_set(msg, "reasoning_items", reasoning);
    }
    json_decref(reasoning);
    if (json_array_size(calls) > 0) {
        json_object_set_new(msg, "tool_calls", calls);
    } else {
        json_decref(calls);
    }
    response_id(r, id, sizeof(id));
    out = mf_json_pack(
        "{s:s,s:s,s:I,s:s%,s:[{s:i,s:o,s:n,s:s}],s:o}", "id", id, "object",
        "chat.completion", "created", (json_int_t)time(NULL), "model",
        info.upstream_model.data, info.upstream_model.len, "choices", "index",
        0, "message", msg, "logprobs", "finish_reason",
        finish_reason(json_string_value(json_object_get(in, "stopReason"))),
        "usage", pu_usage_json(&usage));
    free(text);
    free(thinking);
    json_decref(in);
    return out ? api->set_response_json(r, out) : MF_ERR;
}

/* Errors: status, exception names and messages */

/* Fills err for an exception name (ThrottlingException or
 * throttlingException) and message; status when the HTTP one is unknown. */
static void
map_exception(bedrock_t *b, const char *name, size_t nlen, int status,
              const char *msg, mf_error_t *err)
{
    char ex[96];

    snprintf(ex, sizeof(ex), "%.*s", (int)(nlen < 95 ? nlen : 95), name);
    if (ex[0] >= 'a' && ex[0] <= 'z') {
        ex[0] = (char)(ex[0] - 32);
    }
    if (status == 0) {
        status = strcmp(ex, "ThrottlingException") == 0           ? 429
                 : strcmp(ex, "ValidationException") == 0         ? 400
                 : strcmp(ex, "ServiceUnavailableException") == 0 ? 503
                 : strcmp(ex, "ModelTimeoutException") == 0       ? 408
                 : strcmp(ex, "AccessDeniedException") == 0       ? 403
                 : strcmp(ex, "ModelStreamErrorException") == 0   ? 424
                                                                  : 500;
    }
    err->status = status;
    err->type = "upstream_error";
    if (status == 401 || status == 403 ||
        strcmp(ex, "UnrecognizedClientException") == 0 ||
        strcmp(ex, "InvalidSignatureException") == 0 ||
        strcmp(ex, "ExpiredTokenException") == 0) {
        err->status = 502;
        err->code = "upstream_auth_failed";
        msg = "the provider refused the gateway's credentials";
    } else if (status == 429) {
        err->type = "rate_limit_error";
    } else if (status == 404) {
        err->type = "invalid_request_error";
        err->code = "model_not_found";
    } else if (status == 400 || status == 413 || status == 422) {
        err->type = "invalid_request_error";
        if (msg && (strstr(msg, "too long") || strstr(msg, "too many") ||
                    strstr(msg, "context"))) {
            err->code = "context_length_exceeded";
        }
    } else if (status == 408) {
        err->status = 504;
        err->code = "upstream_timeout";
    } else if (status == 503) {
        err->code = "upstream_overloaded";
    } else {
        err->status = 502;
    }
    snprintf(err->message, sizeof(err->message),
             "provider '%s' answered %d %s%s%s", b->name, status,
             ex[0] ? ex : "error", msg ? ": " : "", msg ? msg : "");
}

static int
bedrock_parse_error(mf_req_t *r, void *state, int status, mf_str_t body,
                    mf_error_t *err)
{
    bedrock_t *b = state;
    json_t *j = mf_json_loadb(body.data, body.len, 0, NULL);
    const char *msg = json_string_value(json_object_get(j, "message"));
    mf_str_t et = MF_STR("");

    if (msg == NULL) {
        msg = json_string_value(json_object_get(j, "Message"));
    }
    if (api->get_header(r, MF_UPSTREAM_RESPONSE_HEADERS,
                        MF_STR("x-amzn-errortype"), &et) == MF_OK) {
        const char *colon = memchr(et.data, ':', et.len);

        if (colon != NULL) {
            et.len = (size_t)(colon - et.data);
        }
    }
    map_exception(b, et.data ? et.data : "", et.len, status, msg, err);
    json_decref(j);
    return MF_OK;
}

/* Stream: ConverseStream events -> chunks */

/* The reasoning block's text grown by n bytes (request memory, doubled
 * as it grows); MF_ERR when out of memory. */
static int
think_append(mf_req_t *r, bstream_t *s, const char *t, size_t n)
{
    if (s->think_len + n + 1 > s->think_cap) {
        size_t cap = s->think_cap ? s->think_cap * 2 : 1024;
        char *p;

        while (cap < s->think_len + n + 1) {
            cap *= 2;
        }
        if ((p = api->palloc(r, cap)) == NULL) {
            return MF_ERR;
        }
        if (s->think_len > 0) {
            memcpy(p, s->think, s->think_len);
        }
        s->think = p;
        s->think_cap = cap;
    }
    memcpy(s->think + s->think_len, t, n);
    s->think_len += n;
    s->think[s->think_len] = '\0';
    return MF_OK;
}

/* The chunk of one whole reasoningContent as a reasoning item, or NULL. */
static json_t *
reasoning_chunk(bstream_t *s, json_t *rc)
{
    json_t *ri = reasoning_item_of(rc);

    return ri ? pu_chunk(s->id, s->model, s->created, 0,
                         mf_json_pack("{s:[o]}", "reasoning_items", ri), NULL)
              : NULL;
}

static bstream_t *
stream_state(mf_req_t *r)
{
    void **slot = api->provider_ctx(r);
    bstream_t *s = *slot;
    int i;

    if (s == NULL) {
        mf_req_info_t info = {.size = sizeof(info)};

        s = api->palloc(r, sizeof(*s));
        if (s == NULL) {
            return NULL;
        }
        memset(s, 0, sizeof(*s));
        pu_usage_init(&s->usage);
        s->created = (json_int_t)time(NULL);
        response_id(r, s->id, sizeof(s->id));
        api->get_info(r, &info);
        snprintf(s->model, sizeof(s->model), "%.*s",
                 (int)info.upstream_model.len, info.upstream_model.data);
        s->think_block = -1;
        for (i = 0; i < 64; i++) {
            s->tool_of_block[i] = -1;
        }
        *slot = s;
    }
    return s;
}

static int
bedrock_parse_stream_event(mf_req_t *r, void *state, const mf_sse_event_t *ev,
                           int canonical)
{
    bedrock_t *b = state;
    bstream_t *s = stream_state(r);
    json_t *j, *c = NULL;
    json_int_t idx;
    int flags = MF_EVENT_PASS;

    (void)canonical;
    if (s == NULL) {
        return MF_ERR;
    }
    j = mf_json_loadb(ev->data.data, ev->data.len, 0, NULL);
    if (ev->id.len > 0 &&
        (ev->id.len != 5 || memcmp(ev->id.data, "event", 5))) {
        /* exception or error message: fail the attempt or end the stream */
        mf_error_t err;

        memset(&err, 0, sizeof(err));
        map_exception(b, ev->event.data, ev->event.len, 0,
                      json_string_value(json_object_get(j, "message"))
                          ?: (json_is_object(j) ? NULL : "(no message)"),
                      &err);
        api->set_error(r, &err);
        json_decref(j);
        return MF_EVENT_ERROR;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return MF_ERR;
    }
    idx = pu_int_at(j, "contentBlockIndex");
    if (pu_str_is(ev->event, "messageStart")) {
        c = pu_chunk(
            s->id, s->model, s->created, 0,
            mf_json_pack("{s:s,s:s}", "role", "assistant", "content", ""),
            NULL);
        flags |= MF_EVENT_PREAMBLE;
    } else if (pu_str_is(ev->event, "contentBlockStart")) {
        json_t *tu = json_object_get(json_object_get(j, "start"), "toolUse");

        if (tu != NULL && idx >= 0 && idx < 64) {
            int ti = s->ntools++;

            s->tool_of_block[idx] = ti;
            c = pu_chunk(s->id, s->model, s->created, 0,
                         mf_json_pack("{s:[{s:i,s:O,s:s,s:{s:O,s:s}}]}",
                                      "tool_calls", "index", ti, "id",
                                      json_object_get(tu, "toolUseId"), "type",
                                      "function", "function", "name",
                                      json_object_get(tu, "name"), "arguments",
                                      ""),
                         NULL);
        }
    } else if (pu_str_is(ev->event, "contentBlockDelta")) {
        json_t *d = json_object_get(j, "delta"), *v;

        if (json_is_string(v = json_object_get(d, "text"))) {
            c = pu_chunk(s->id, s->model, s->created, 0,
                         mf_json_pack("{s:O}", "content", v), NULL);
        } else if (json_is_string(
                       v = json_object_get(
                           json_object_get(d, "reasoningContent"), "text"))) {
            if (s->think_block != (int)idx) {
                s->think_block = (int)idx; /* a new reasoning block */
                s->think_len = 0;
                s->signature = NULL;
            }
            if (think_append(r, s, json_string_value(v),
                             json_string_length(v)) != MF_OK) {
                json_decref(j);
                return MF_ERR;
            }
            c = pu_chunk(s->id, s->model, s->created, 0,
                         mf_json_pack("{s:O}", "reasoning_content", v), NULL);
        } else if (json_is_string(v = json_object_get(
                                      json_object_get(d, "reasoningContent"),
                                      "signature")) &&
                   s->think_block == (int)idx) {
            s->signature = api->palloc(r, json_string_length(v) + 1);
            if (s->signature != NULL) {
                memcpy(s->signature, json_string_value(v),
                       json_string_length(v) + 1);
            }
        } else if (json_is_string(
                       json_object_get(json_object_get(d, "reasoningContent"),
                                       "redactedContent"))) {
            c = reasoning_chunk(s, json_object_get(d, "reasoningContent"));
        } else if (json_is_string(
                       v = json_object_get(json_object_get(d, "toolUse"),
                                           "input")) &&
                   idx >= 0 && idx < 64 && s->tool_of_block[idx] >= 0) {
            c = pu_chunk(s->id, s->model, s->created, 0,
                         mf_json_pack("{s:[{s:i,s:{s:O}}]}", "tool_calls",
                                      "index", s->tool_of_block[idx],
                                      "function", "arguments", v),
                         NULL);
        }
    } else if (pu_str_is(ev->event, "contentBlockStop") &&
               s->think_block >= 0 && s->think_block == (int)idx) {
        /* the reasoning block whole, with its signature, for the turn
         * that goes on from it */
        if (s->signature != NULL) {
            json_t *rc = mf_json_pack("{s:{s:s,s:s}}", "reasoningText", "text",
                                      s->think ? s->think : "", "signature",
                                      s->signature);

            c = reasoning_chunk(s, rc);
            json_decref(rc);
        }
        s->think_block = -1;
    } else if (pu_str_is(ev->event, "messageStop")) {
        c = pu_chunk(
            s->id, s->model, s->created, 0, json_object(),
            finish_reason(json_string_value(json_object_get(j, "stopReason"))));
    } else if (pu_str_is(ev->event, "metadata")) {
        read_usage(r, json_object_get(j, "usage"), &s->usage);
        api->set_usage(r, &s->usage);
        c = pu_usage_chunk(s->id, s->model, s->created, &s->usage);
        flags |= MF_EVENT_USAGE_ONLY | MF_EVENT_DONE;
    }
    /* the stop of other blocks: nothing to send */
    if (c != NULL) {
        api->emit_chunk(r, c);
    }
    json_decref(j);
    return flags;
}

/* CountTokens' answer: {"inputTokens": N}. */
static int
bedrock_parse_count(mf_req_t *r, void *state, mf_str_t body, int64_t *tokens)
{
    json_t *in = mf_json_loadb(body.data, body.len, 0, NULL);
    json_t *n = json_object_get(in, "inputTokens");

    (void)r;
    (void)state;
    *tokens = json_is_integer(n) ? (int64_t)json_integer_value(n) : -1;
    json_decref(in);
    return *tokens >= 0 ? MF_OK : MF_ERR;
}

static const char *const bedrock_types[] = {"bedrock", NULL};

static const mf_provider_t bedrock_provider = {
    .wire = "bedrock",
    .types = bedrock_types,
    .build_request = bedrock_build_request,
    .parse_response = bedrock_parse_response,
    .parse_stream_event = bedrock_parse_stream_event,
    .parse_error = bedrock_parse_error,
    .stream_framing = "aws-eventstream",
    .parse_count = bedrock_parse_count,
};

static const mf_plugin_t bedrock_plugin = {
    MF_PLUGIN_ABI,        .name = "provider-bedrock",
    .version = "1.0.0",   .init = bedrock_init,
    .fini = bedrock_fini, .provider = &bedrock_provider,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &bedrock_plugin;
}
