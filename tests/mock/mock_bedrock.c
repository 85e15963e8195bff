/*
 * mf-mock: Amazon Bedrock's wire format, from AWS's documented examples.
 *
 *  - POST /model/{modelId}/converse and /converse-stream (the stream in
 *    AWS event-stream framing: prelude, headers, payload, CRC-32s;
 *    messageStart, contentBlockStart/Delta/Stop, messageStop, metadata);
 *  - POST /model/{modelId}/invoke: Titan ({inputText}) and Cohere
 *    ({texts}) embeddings;
 *  - auth: Signature Version 4 checked against the secret
 *    "mock/secret/KEYID" for access key KEYID (region and service
 *    "bedrock" from the credential scope), or "Bearer ABSK..." API keys;
 *    AWS's 403 InvalidSignatureException otherwise.
 *
 * The request is checked as Converse checks it (first turn user, roles
 * alternate, no blank text, toolResult ids known, toolConfig present when
 * tool blocks are used, inferenceConfig names). Directives: status,
 * retry_after, chunks, chunk_delay, cut, cutfirst, stall, garbage (a frame
 * with a bad CRC), reply, safety (guardrail_intervened), exception=N (a
 * throttlingException after N - 1 text deltas: exception=1 right after
 * messageStart). With thinking in additionalModelRequestFields, a
 * reasoningContent block first, signed with a hash of its text (a
 * signature delta in the stream); a reasoning block whose signature it
 * did not make, and a toolResult turn whose assistant turn does not
 * start with its reasoning, are a ValidationException.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mock.h"

int
bedrock_path(const char *uri)
{
    return strncmp(uri, "/model/", 7) == 0 &&
           (strstr(uri, "/converse") != NULL ||
            strstr(uri, "/invoke") != NULL ||
            strstr(uri, "/count-tokens") != NULL);
}

void
bedrock_directives(json_t *body, directives_t *d)
{
    json_t *msgs = json_object_get(body, "messages"), *b;
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    size_t i;

    json_array_foreach(json_object_get(last, "content"), i, b)
    {
        parse_directives(json_string_value(json_object_get(b, "text")), d);
    }
    parse_directives(json_string_value(json_object_get(body, "inputText")), d);
    json_array_foreach(json_object_get(body, "texts"), i, b)
    {
        parse_directives(json_string_value(b), d);
    }
}

static void
aws_error(struct evhttp_request *req, int status, const char *type,
          const char *msg)
{
    char et[256];

    snprintf(et, sizeof(et),
             "%s:http://internal.amazon.com/coral/"
             "com.amazon.bedrock/",
             type);
    evhttp_add_header(evhttp_request_get_output_headers(req),
                      "x-amzn-ErrorType", et);
    send_json(req, status, json_pack("{s:s}", "message", msg), 0);
}

/* SigV4, checked from what arrived */

static void
hexs(const unsigned char *in, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", in[i]);
    }
}

static void
sha_hex(const char *data, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len;

    EVP_Digest(data, n, md, &len, EVP_sha256(), NULL);
    hexs(md, 32, out);
}

static void
mac(const unsigned char *key, size_t klen, const char *msg, unsigned char *out)
{
    unsigned int len = 32;

    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg),
         out, &len);
}

/* The path as AWS canonicalizes it: every byte but unreserved and '/'
 * percent-encoded (so an encoded ':' becomes %253A). */
static void
canonical_path(const char *uri, char *out, size_t cap)
{
    size_t o = 0;

    for (; *uri && *uri != '?' && o + 4 < cap; uri++) {
        unsigned char c = (unsigned char)*uri;

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c >= '0' && c <= '9') || strchr("-_.~/", c)) {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", c);
        }
    }
    out[o] = '\0';
}

/* NULL when the signature holds, else why not. */
static const char *
check_sigv4(struct evhttp_request *req, const char *uri, const char *auth,
            const char *body, size_t blen)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    char akid[128], scope[256], signed_h[512], sig[80], date[9];
    char region[64], service[64], path[4096], creq[16384], hash[65];
    char sts[1024], kinit[300], mine[65];
    unsigned char k1[32], k2[32], k3[32], k4[32], k5[32];
    const char *amzdate = evhttp_find_header(h, "x-amz-date");
    char *save = NULL, *name, list[512];
    size_t o;
    struct tm tm;
    time_t when;

    if (sscanf(auth,
               "AWS4-HMAC-SHA256 Credential=%127[^/]/%255[^,], "
               "SignedHeaders=%511[^,], Signature=%79s",
               akid, scope, signed_h, sig) != 4) {
        return "Authorization header requires 'Credential', "
               "'SignedHeaders' and 'Signature'.";
    }
    if (amzdate == NULL || strlen(amzdate) != 16) {
        return "Missing x-amz-date.";
    }
    memset(&tm, 0, sizeof(tm));
    if (sscanf(amzdate, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon,
               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6) {
        return "Bad x-amz-date.";
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    when = timegm(&tm);
    if (when < time(NULL) - 900 || when > time(NULL) + 900) {
        return "Signature expired.";
    }
    if (sscanf(scope, "%8[0-9]/%63[^/]/%63[^/]/aws4_request", date, region,
               service) != 3 ||
        strncmp(date, amzdate, 8) != 0 || strcmp(service, "bedrock") != 0) {
        return "Credential should be scoped to a valid region and the "
               "bedrock service.";
    }
    canonical_path(uri, path, sizeof(path));
    o = (size_t)snprintf(creq, sizeof(creq), "POST\n%s\n\n", path);
    snprintf(list, sizeof(list), "%s", signed_h);
    for (name = strtok_r(list, ";", &save); name && o < sizeof(creq);
         name = strtok_r(NULL, ";", &save)) {
        const char *v = evhttp_find_header(h, name);

        if (v == NULL) {
            return "A signed header is missing.";
        }
        o += (size_t)snprintf(creq + o, sizeof(creq) - o, "%s:%s\n", name, v);
    }
    sha_hex(body, blen, hash);
    snprintf(creq + o, sizeof(creq) - o, "\n%s\n%s", signed_h, hash);
    sha_hex(creq, strlen(creq), hash);
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope,
             hash);
    snprintf(kinit, sizeof(kinit), "AWS4mock/secret/%s", akid);
    mac((unsigned char *)kinit, strlen(kinit), date, k1);
    mac(k1, 32, region, k2);
    mac(k2, 32, service, k3);
    mac(k3, 32, "aws4_request", k4);
    mac(k4, 32, sts, k5);
    hexs(k5, 32, mine);
    if (strcmp(mine, sig) != 0) {
        return "The request signature we calculated does not match the "
               "signature you provided. Check your AWS Secret Access Key "
               "and signing method.";
    }
    return NULL;
}

/* Event-stream encoding */

static uint32_t
crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    size_t i;
    int k;

    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) {
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
        }
    }
    return ~c;
}

static void
put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static size_t
put_header(unsigned char *p, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);

    p[0] = (unsigned char)nl;
    memcpy(p + 1, name, nl);
    p[1 + nl] = 7; /* string */
    p[2 + nl] = (unsigned char)(vl >> 8);
    p[3 + nl] = (unsigned char)vl;
    memcpy(p + 4 + nl, value, vl);
    return 4 + nl + vl;
}

/* One message; kind "event" or "exception". bad_crc spoils the trailer. */
static void
add_message(frames_t *f, const char *kind, const char *type, json_t *payload,
            int bad_crc)
{
    char *text = json_dumps(payload, JSON_COMPACT);
    size_t tl = strlen(text), hl = 0, total;
    unsigned char *m = malloc(tl + 512), hdr[400];

    hl += put_header(
        hdr + hl,
        strcmp(kind, "event") == 0 ? ":event-type" : ":exception-type", type);
    hl += put_header(hdr + hl, ":content-type", "application/json");
    hl += put_header(hdr + hl, ":message-type", kind);
    total = 12 + hl + tl + 4;
    put32(m, (uint32_t)total);
    put32(m + 4, (uint32_t)hl);
    put32(m + 8, crc32_of(m, 8));
    memcpy(m + 12, hdr, hl);
    memcpy(m + 12 + hl, text, tl);
    put32(m + total - 4, crc32_of(m, total - 4) ^ (bad_crc ? 1u : 0u));
    frames_add(f, m, total);
    free(m);
    free(text);
    json_decref(payload);
}

/* Converse */

/* The signature the mock gives a reasoning block: its text's hash, so
 * that a block changed on its way back is refused. */
static void
reasoning_signature(const char *text, char *buf, size_t cap)
{
    unsigned long h = 5381;

    while (*text) {
        h = h * 33 + (unsigned char)*text++;
    }
    snprintf(buf, cap, "bsig_mock_%08lx", h & 0xffffffffUL);
}

/* With thinking on, what Bedrock checks of Claude's turns: each
 * reasoningText's signature is one it made, and the assistant turn a
 * toolResult answers starts with its reasoning. NULL when all is well. */
static const char *
reasoning_problem(json_t *body, int on)
{
    json_t *msgs = json_object_get(body, "messages"), *m, *b;
    size_t i, k, n = json_array_size(msgs);

    json_array_foreach(msgs, i, m)
    {
        json_array_foreach(json_object_get(m, "content"), k, b)
        {
            json_t *rt = json_object_get(json_object_get(b, "reasoningContent"),
                                         "reasoningText");
            char sig[64];

            if (rt == NULL) {
                continue;
            }
            reasoning_signature(json_string_value(json_object_get(rt, "text"))
                                    ?: "",
                                sig, sizeof(sig));
            if (strcmp(json_string_value(json_object_get(rt, "signature"))
                           ?: "",
                       sig) != 0) {
                return "The signature of a reasoning block is not valid.";
            }
        }
    }
    if (on && n >= 2) {
        json_t *last = json_array_get(
            json_object_get(json_array_get(msgs, n - 1), "content"), 0);
        json_t *prev = json_array_get(
            json_object_get(json_array_get(msgs, n - 2), "content"), 0);

        if (json_object_get(last, "toolResult") != NULL &&
            json_object_get(prev, "reasoningContent") == NULL) {
            return "Expected `thinking` or `redacted_thinking`, but found "
                   "`tool_use`. When `thinking` is enabled, a final "
                   "`assistant` message must start with a thinking block.";
        }
    }
    return NULL;
}

static const char *
converse_problem(json_t *body)
{
    static const char *const ic_names[] = {"maxTokens", "temperature", "topP",
                                           "stopSequences", NULL};
    json_t *msgs = json_object_get(body, "messages"), *m, *b, *ic;
    json_t *ids = json_object();
    const char *prev = NULL, *k, *problem = NULL;
    int tool_blocks = 0;
    size_t i, j, n;

    if (json_array_size(msgs) == 0) {
        problem = "The messages field is required.";
    }
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));

        if (problem != NULL) {
            break;
        }
        if (role == NULL ||
            (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
            problem = "A message role must be user or assistant.";
        } else if (i == 0 && strcmp(role, "user") != 0) {
            problem = "A conversation must start with a user message. Try "
                      "again with a conversation that starts with a user "
                      "message.";
        } else if (prev && strcmp(prev, role) == 0) {
            problem = "A conversation must alternate between user and "
                      "assistant roles. Make sure the conversation alternates "
                      "between user and assistant roles and try again.";
        } else if (json_array_size(json_object_get(m, "content")) == 0) {
            problem = "The content field in the Message object is empty.";
        }
        prev = role;
        json_array_foreach(json_object_get(m, "content"), j, b)
        {
            json_t *t = json_object_get(b, "text");

            if (t != NULL &&
                (!json_is_string(t) || json_string_length(t) == 0)) {
                problem = "The text field in the ContentBlock object is "
                          "blank. Add text to the text field, and try again.";
            }
            if ((t = json_object_get(b, "toolUse")) != NULL) {
                tool_blocks = 1;
                json_object_set_new(
                    ids,
                    json_string_value(json_object_get(t, "toolUseId")) ?: "",
                    json_true());
            }
            if ((t = json_object_get(b, "toolResult")) != NULL) {
                tool_blocks = 1;
                if (json_object_get(
                        ids, json_string_value(json_object_get(t, "toolUseId"))
                                 ?: "") == NULL) {
                    problem = "A toolResult's toolUseId does not match a "
                              "toolUse block of the previous turn.";
                }
            }
        }
    }
    json_decref(ids);
    if (problem == NULL && tool_blocks &&
        json_object_get(body, "toolConfig") == NULL) {
        problem = "The toolConfig field must be defined when using toolUse "
                  "and toolResult content blocks.";
    }
    ic = json_object_get(body, "inferenceConfig");
    json_object_foreach(ic, k, b)
    {
        for (n = 0; ic_names[n] && strcmp(ic_names[n], k) != 0; n++) {
        }
        if (ic_names[n] == NULL && problem == NULL) {
            problem = "Malformed input request: extraneous key in "
                      "inferenceConfig.";
        }
    }
    return problem;
}

static void
path_model(const char *uri, char *out, size_t cap)
{
    const char *m = uri + 7, *e = strchr(m, '/');

    snprintf(out, cap, "%.*s", (int)(e ? e - m : (long)strlen(m)), m);
}

static void
answer_invoke(struct evhttp_request *req, json_t *body, const char *model)
{
    char count[16];
    json_t *out;
    size_t i, dims;
    int tokens = 0;

    if (strstr(model, "titan") != NULL) {
        const char *t = json_string_value(json_object_get(body, "inputText"));
        json_t *v = json_array();

        if (t == NULL || json_object_size(body) > 3) {
            json_decref(v);
            aws_error(req, 400, "ValidationException",
                      "Malformed input request: #: required key [inputText] "
                      "not found");
            return;
        }
        dims = json_is_integer(json_object_get(body, "dimensions"))
                   ? (size_t)json_integer_value(
                         json_object_get(body, "dimensions"))
                   : 8;
        for (i = 0; i < dims; i++) {
            json_array_append_new(v, json_real(0.5 / (double)(i + 1)));
        }
        tokens = (int)strlen(t) / 4 + 1;
        out = json_pack("{s:o,s:i}", "embedding", v, "inputTextTokenCount",
                        tokens);
    } else {
        json_t *texts = json_object_get(body, "texts"), *all = json_array();

        if (json_array_size(texts) == 0 ||
            !json_is_string(json_object_get(body, "input_type"))) {
            json_decref(all);
            aws_error(req, 400, "ValidationException",
                      "Malformed input request: texts and input_type are "
                      "required");
            return;
        }
        for (i = 0; i < json_array_size(texts); i++) {
            json_t *v = json_array();
            size_t k;

            for (k = 0; k < 8; k++) {
                json_array_append_new(v, json_real((double)(i + 1) / (k + 2)));
            }
            json_array_append_new(all, v);
            tokens += (int)json_string_length(json_array_get(texts, i)) / 4 + 1;
        }
        out = json_pack("{s:o,s:s,s:s,s:O}", "embeddings", all, "id",
                        "emb-mock-1", "response_type", "embeddings_floats",
                        "texts", texts);
    }
    snprintf(count, sizeof(count), "%d", tokens);
    evhttp_add_header(evhttp_request_get_output_headers(req),
                      "X-Amzn-Bedrock-Input-Token-Count", count);
    send_json(req, 200, out, 0);
}

void
answer_bedrock(struct evhttp_request *req, const char *uri, json_t *body,
               const directives_t *d, const char *auth)
{
    struct evkeyvalq *out_h = evhttp_request_get_output_headers(req);
    int stream = strstr(uri, "/converse-stream") != NULL;
    json_t *msgs = json_object_get(body, "messages"), *b, *tool = NULL;
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    json_t *tools =
        json_object_get(json_object_get(body, "toolConfig"), "tools");
    json_t *result = NULL;
    const char *problem;
    char model[512], text[1024] = "", reply[1400], sig[64];
    int in_tokens, out_tokens, thinking;
    size_t i;

    if (auth == NULL || *auth == '\0') {
        aws_error(req, 403, "AccessDeniedException",
                  "Missing Authentication Token");
        return;
    }
    if (strncmp(auth, "Bearer ", 7) == 0) {
        if (strncmp(auth + 7, "ABSK", 4) != 0) {
            aws_error(req, 403, "UnrecognizedClientException",
                      "The security token included in the request is "
                      "invalid.");
            return;
        }
    } else {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t blen = evbuffer_get_length(in);
        char *bytes = malloc(blen + 1);

        evbuffer_copyout(in, bytes, blen);
        problem = check_sigv4(req, uri, auth, bytes, blen);
        free(bytes);
        if (problem != NULL) {
            aws_error(req, 403, "InvalidSignatureException", problem);
            return;
        }
    }
    evhttp_add_header(out_h, "x-amzn-RequestId",
                      "5e6f7a8b-0000-4000-8000-mockrequest1");
    if (d->status) {
        const char *type = d->status == 429   ? "ThrottlingException"
                           : d->status == 400 ? "ValidationException"
                           : d->status == 404 ? "ResourceNotFoundException"
                           : d->status == 403 ? "AccessDeniedException"
                           : d->status == 401 ? "UnrecognizedClientException"
                           : d->status == 503 ? "ServiceUnavailableException"
                                              : "InternalServerException";
        char msg[64];

        snprintf(msg, sizeof(msg), "mock error %d", d->status);
        aws_error(req, d->status, type, msg);
        return;
    }
    path_model(uri, model, sizeof(model));
    {
        char decoded[512];
        size_t o = 0;

        for (i = 0; model[i] && o + 1 < sizeof(decoded); i++) {
            if (model[i] == '%' && model[i + 1] && model[i + 2]) {
                char hx[3] = {model[i + 1], model[i + 2], 0};

                decoded[o++] = (char)strtol(hx, NULL, 16);
                i += 2;
            } else {
                decoded[o++] = model[i];
            }
        }
        decoded[o] = '\0';
        snprintf(model, sizeof(model), "%s", decoded);
    }
    if (strstr(uri, "/invoke") != NULL) {
        answer_invoke(req, body, model);
        return;
    }
    if ((problem = converse_problem(body)) != NULL) {
        aws_error(req, 400, "ValidationException", problem);
        return;
    }
    json_array_foreach(json_object_get(last, "content"), i, b)
    {
        const char *t = json_string_value(json_object_get(b, "text"));

        if (t != NULL) {
            snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s%s",
                     text[0] ? " " : "", t);
        }
        if (json_object_get(b, "toolResult") != NULL) {
            result = json_object_get(b, "toolResult");
        }
    }
    strip_directives(text);
    if (json_array_size(tools) > 0 && result == NULL) {
        json_t *spec = json_object_get(json_array_get(tools, 0), "toolSpec");
        json_t *tc =
            json_object_get(json_object_get(body, "toolConfig"), "toolChoice");
        const char *name = json_string_value(json_object_get(spec, "name"));
        const char *param = json_string_value(json_array_get(
            json_object_get(
                json_object_get(json_object_get(spec, "inputSchema"), "json"),
                "required"),
            0));

        if (json_object_get(tc, "tool") != NULL) {
            name = json_string_value(
                json_object_get(json_object_get(tc, "tool"), "name"));
        }
        tool = json_pack("{s:s,s:s,s:o}", "toolUseId", "tooluse_mock_1", "name",
                         name ? name : "tool", "input",
                         param ? json_pack("{s:s}", param, "mock")
                               : json_object());
    }
    if (d->reply[0]) {
        snprintf(reply, sizeof(reply), "%s", d->reply);
    } else if (d->safety) {
        snprintf(reply, sizeof(reply),
                 "Sorry, the model cannot answer this question.");
    } else if (result != NULL) {
        char *r = json_dumps(json_object_get(result, "content"), JSON_COMPACT);

        snprintf(reply, sizeof(reply), "Tool said: %s", r);
        free(r);
    } else {
        snprintf(reply, sizeof(reply), "Hello from mock. You said: %.200s",
                 text);
    }
    thinking =
        json_object_get(json_object_get(body, "additionalModelRequestFields"),
                        "thinking") != NULL;
    if ((problem = reasoning_problem(body, thinking)) != NULL) {
        aws_error(req, 400, "ValidationException", problem);
        return;
    }
    reasoning_signature("Thinking.", sig, sizeof(sig));
    {
        char *all = json_dumps(msgs, JSON_COMPACT);

        in_tokens = (int)strlen(all) / 4 + 1;
        free(all);
    }
    out_tokens = tool ? 3 : (int)strlen(reply) / 4 + 1;
    if (!stream) {
        json_t *content = json_array();

        if (thinking) {
            json_array_append_new(
                content, json_pack("{s:{s:{s:s,s:s}}}", "reasoningContent",
                                   "reasoningText", "text", "Thinking.",
                                   "signature", sig));
        }
        json_array_append_new(content, tool
                                           ? json_pack("{s:o}", "toolUse", tool)
                                           : json_pack("{s:s}", "text", reply));
        send_json(req, 200,
                  json_pack("{s:{s:{s:s,s:o}},s:s,s:{s:i,s:i,s:i,s:i,s:i},"
                            "s:{s:i}}",
                            "output", "message", "role", "assistant", "content",
                            content, "stopReason",
                            tool        ? "tool_use"
                            : d->safety ? "guardrail_intervened"
                                        : "end_turn",
                            "usage", "inputTokens", in_tokens, "outputTokens",
                            out_tokens, "totalTokens", in_tokens + out_tokens,
                            "cacheReadInputTokens", 4, "cacheWriteInputTokens",
                            0, "metrics", "latencyMs", 12),
                  0);
        return;
    }
    {
        frames_t *f = frames_new();
        int blk = 0;

        add_message(f, "event", "messageStart",
                    json_pack("{s:s,s:s}", "role", "assistant", "p", "abcd"),
                    0);
        if (d->garbage) {
            add_message(f, "event", "contentBlockDelta",
                        json_pack("{s:i,s:{s:s}}", "contentBlockIndex", 0,
                                  "delta", "text", "spoiled"),
                        1);
        }
        if (thinking) {
            add_message(f, "event", "contentBlockDelta",
                        json_pack("{s:i,s:{s:{s:s}}}", "contentBlockIndex", 0,
                                  "delta", "reasoningContent", "text",
                                  "Thinking."),
                        0);
            add_message(f, "event", "contentBlockDelta",
                        json_pack("{s:i,s:{s:{s:s}}}", "contentBlockIndex", 0,
                                  "delta", "reasoningContent", "signature",
                                  sig),
                        0);
            add_message(f, "event", "contentBlockStop",
                        json_pack("{s:i}", "contentBlockIndex", 0), 0);
            blk = 1;
        }
        if (tool) {
            char *args =
                json_dumps(json_object_get(tool, "input"), JSON_COMPACT);
            size_t half = strlen(args) / 2;
            char first[256];

            snprintf(first, sizeof(first), "%.*s", (int)half, args);
            add_message(f, "event", "contentBlockStart",
                        json_pack("{s:i,s:{s:{s:O,s:O}}}", "contentBlockIndex",
                                  blk, "start", "toolUse", "toolUseId",
                                  json_object_get(tool, "toolUseId"), "name",
                                  json_object_get(tool, "name")),
                        0);
            add_message(f, "event", "contentBlockDelta",
                        json_pack("{s:i,s:{s:{s:s}}}", "contentBlockIndex", blk,
                                  "delta", "toolUse", "input", first),
                        0);
            add_message(f, "event", "contentBlockDelta",
                        json_pack("{s:i,s:{s:{s:s}}}", "contentBlockIndex", blk,
                                  "delta", "toolUse", "input", args + half),
                        0);
            free(args);
        } else {
            char *save = NULL, *w;
            int k = 0, n = d->chunks > 0 ? d->chunks : 0;

            if (n > 0) {
                for (k = 0; k < n; k++) {
                    if (d->exception > 0 && k == d->exception - 1) {
                        break;
                    }
                    add_message(f, "event", "contentBlockDelta",
                                json_pack("{s:i,s:{s:s}}", "contentBlockIndex",
                                          blk, "delta", "text",
                                          k ? " tok" : "tok"),
                                0);
                }
                out_tokens = n;
            } else {
                for (w = strtok_r(reply, " ", &save); w;
                     w = strtok_r(NULL, " ", &save), k++) {
                    char piece[600];

                    if (d->exception > 0 && k == d->exception - 1) {
                        break;
                    }
                    snprintf(piece, sizeof(piece), "%s%s", k ? " " : "", w);
                    add_message(f, "event", "contentBlockDelta",
                                json_pack("{s:i,s:{s:s}}", "contentBlockIndex",
                                          blk, "delta", "text", piece),
                                0);
                }
            }
        }
        if (d->exception > 0) {
            add_message(f, "exception", "throttlingException",
                        json_pack("{s:s}", "message",
                                  "Too many requests, please wait before "
                                  "trying again."),
                        0);
            json_decref(tool);
            frames_send(req, f, d, "application/vnd.amazon.eventstream");
            return;
        }
        add_message(f, "event", "contentBlockStop",
                    json_pack("{s:i}", "contentBlockIndex", blk), 0);
        add_message(f, "event", "messageStop",
                    json_pack("{s:s}", "stopReason",
                              tool        ? "tool_use"
                              : d->safety ? "guardrail_intervened"
                                          : "end_turn"),
                    0);
        add_message(f, "event", "metadata",
                    json_pack("{s:{s:i,s:i,s:i,s:i},s:{s:i}}", "usage",
                              "inputTokens", in_tokens, "outputTokens",
                              out_tokens, "totalTokens", in_tokens + out_tokens,
                              "cacheReadInputTokens", 4, "metrics", "latencyMs",
                              12),
                    0);
        json_decref(tool);
        frames_send(req, f, d, "application/vnd.amazon.eventstream");
    }
}
