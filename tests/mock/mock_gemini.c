/*
 * mf-mock: Gemini's wire format, from Google's documented examples.
 *
 *  - POST /v1beta/models/M:generateContent and
 *    :streamGenerateContent?alt=sse (key in x-goog-api-key; a key with
 *    "invalid" is refused as API_KEY_INVALID);
 *  - POST /v1/projects/P/locations/L/publishers/google/models/M:... (Vertex
 *    AI; needs "Authorization: Bearer ya29.mock-N" from /token);
 *  - POST /token: Google's OAuth token endpoint for a service account's
 *    JWT (checks grant_type and the claims; ?ttl=S sets expires_in);
 *  - :batchEmbedContents, :embedContent and Vertex :predict embeddings.
 *
 * The request is checked the way Gemini checks it (roles, non-empty parts,
 * one functionResponse per functionCall, no JSON Schema keywords Gemini's
 * Schema lacks); the answer: a functionCall (with a thoughtSignature) when
 * tools are declared and the last turn is not a functionResponse, else an
 * echo; thoughts when thinkingConfig.includeThoughts; candidateCount
 * candidates. Directives: status, retry_after, chunks, chunk_delay, cut,
 * cutfirst, stall, garbage, reply, safety (prompt blocked), safety_answer
 * (answer blocked).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

static int token_count;

int
gemini_path(const char *uri)
{
    return strstr(uri, ":generateContent") != NULL ||
           strstr(uri, ":streamGenerateContent") != NULL ||
           strstr(uri, ":batchEmbedContents") != NULL ||
           strstr(uri, ":embedContent") != NULL ||
           strstr(uri, ":countTokens") != NULL ||
           strstr(uri, ":predict") != NULL || strncmp(uri, "/token", 6) == 0;
}

void
gemini_directives(json_t *body, directives_t *d)
{
    json_t *contents = json_object_get(body, "contents"), *p;
    json_t *last = json_array_get(contents, json_array_size(contents) - 1);
    size_t i;

    json_array_foreach(json_object_get(last, "parts"), i, p)
    {
        parse_directives(json_string_value(json_object_get(p, "text")), d);
    }
    json_array_foreach(json_object_get(body, "instances"), i, p)
    {
        parse_directives(json_string_value(json_object_get(p, "content")), d);
    }
}

static const char *
google_status(int code)
{
    switch (code) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 503:
        return "UNAVAILABLE";
    default:
        return "INTERNAL";
    }
}

static void
google_error(struct evhttp_request *req, int code, const char *msg,
             json_t *details)
{
    send_json(req, code,
              json_pack("{s:{s:i,s:s,s:s,s:o}}", "error", "code", code,
                        "message", msg, "status", google_status(code),
                        "details", details ? details : json_array()),
              0);
}

/* The model between "models/" and ":" in the path. */
static void
path_model(const char *uri, char *out, size_t cap)
{
    const char *m = strstr(uri, "models/"), *e;

    out[0] = '\0';
    if (m == NULL) {
        return;
    }
    m += 7;
    e = strchr(m, ':');
    snprintf(out, cap, "%.*s", (int)(e ? e - m : (long)strlen(m)), m);
}

static char *
b64url_decode(const char *in, size_t n)
{
    static const char alpha[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(n + 1);
    size_t i, o = 0;
    unsigned v = 0;
    int bits = 0;

    for (i = 0; i < n; i++) {
        const char *c = strchr(alpha, in[i]);

        if (c == NULL || in[i] == '\0') {
            free(out);
            return NULL;
        }
        v = (v << 6) | (unsigned)(c - alpha);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((v >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    return out;
}

/* POST /token: grant_type=...jwt-bearer&assertion=JWT */
static void
answer_token(struct evhttp_request *req, const char *uri, json_t *body,
             const directives_t *d)
{
    const char *form = json_string_value(body), *a, *dot1, *dot2;
    const char *ttl = strstr(uri, "ttl=");
    char *claims_text;
    json_t *claims;
    char tok[64];

    if (d->status) {
        send_json(req, d->status,
                  json_pack("{s:s,s:s}", "error", "internal_failure",
                            "error_description", "mock token failure"),
                  0);
        return;
    }
    if (form == NULL ||
        strstr(form, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%"
                     "3Ajwt-bearer") == NULL ||
        (a = strstr(form, "assertion=")) == NULL) {
        send_json(req, 400,
                  json_pack("{s:s,s:s}", "error", "unsupported_grant_type",
                            "error_description", "Invalid grant_type"),
                  0);
        return;
    }
    a += 10;
    dot1 = strchr(a, '.');
    dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    claims_text =
        dot2 ? b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1)) : NULL;
    claims = claims_text ? json_loads(claims_text, 0, NULL) : NULL;
    free(claims_text);
    if (claims == NULL || !json_is_string(json_object_get(claims, "iss")) ||
        json_string_value(json_object_get(claims, "scope")) == NULL ||
        strstr(json_string_value(json_object_get(claims, "scope")),
               "cloud-platform") == NULL ||
        json_integer_value(json_object_get(claims, "exp")) -
                json_integer_value(json_object_get(claims, "iat")) !=
            3600 ||
        strlen(dot2 + 1) < 300) {
        json_decref(claims);
        send_json(req, 400,
                  json_pack("{s:s,s:s}", "error", "invalid_grant",
                            "error_description", "Invalid JWT"),
                  0);
        return;
    }
    json_decref(claims);
    snprintf(tok, sizeof(tok), "ya29.mock-%d", ++token_count);
    send_json(req, 200,
              json_pack("{s:s,s:i,s:s}", "access_token", tok, "expires_in",
                        ttl ? atoi(ttl + 4) : 3599, "token_type", "Bearer"),
              0);
}

static int
count_tokens(json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    int n = text ? (int)strlen(text) / 4 : 1;

    free(text);
    return n > 0 ? n : 1;
}

static json_t *
vector(int dims, int seed)
{
    json_t *v = json_array();
    int i;

    for (i = 0; i < dims; i++) {
        json_array_append_new(v, json_real((double)(seed + 1) / (i + 2)));
    }
    return v;
}

static void
answer_embed(struct evhttp_request *req, const char *uri, json_t *body,
             const char *model)
{
    json_t *out = json_array(), *e;
    size_t i;

    if (strstr(uri, ":predict") != NULL) {
        json_t *params = json_object_get(body, "parameters");
        int dims =
            json_is_integer(json_object_get(params, "outputDimensionality"))
                ? (int)json_integer_value(
                      json_object_get(params, "outputDimensionality"))
                : 8;

        json_array_foreach(json_object_get(body, "instances"), i, e)
        {
            if (!json_is_string(json_object_get(e, "content"))) {
                json_decref(out);
                google_error(req, 400, "instances[].content is required", NULL);
                return;
            }
            json_array_append_new(
                out,
                json_pack("{s:{s:o,s:{s:i,s:b}}}", "embeddings", "values",
                          vector(dims, (int)i), "statistics", "token_count",
                          count_tokens(json_object_get(e, "content")),
                          "truncated", 0));
        }
        send_json(req, 200, json_pack("{s:o}", "predictions", out), 0);
        return;
    }
    json_array_foreach(json_object_get(body, "requests"), i, e)
    {
        const char *m = json_string_value(json_object_get(e, "model"));
        json_t *dim = json_object_get(e, "outputDimensionality");

        if (m == NULL || strncmp(m, "models/", 7) != 0 ||
            strcmp(m + 7, model) != 0 ||
            !json_is_string(json_object_get(
                json_array_get(
                    json_object_get(json_object_get(e, "content"), "parts"), 0),
                "text"))) {
            json_decref(out);
            google_error(req, 400,
                         "requests[].model must be the path's model and "
                         "content.parts[].text is required",
                         NULL);
            return;
        }
        json_array_append_new(
            out,
            json_pack(
                "{s:o}", "values",
                vector(json_is_integer(dim) ? (int)json_integer_value(dim) : 8,
                       (int)i)));
    }
    if (json_array_size(out) == 0) {
        json_decref(out);
        google_error(req, 400, "requests must not be empty", NULL);
        return;
    }
    send_json(req, 200, json_pack("{s:o}", "embeddings", out), 0);
}

/* Checks a schema the way Gemini's Schema proto reads it. */
static const char *
schema_problem(json_t *s)
{
    static const char *const bad[] = {
        "additionalProperties", "$schema", "$ref", "strict", "$defs", NULL};
    json_t *v;
    const char *k, *p;
    size_t i;

    for (i = 0; bad[i]; i++) {
        if (json_object_get(s, bad[i]) != NULL) {
            return bad[i];
        }
    }
    if (json_is_array(json_object_get(s, "type"))) {
        return "type (a list)";
    }
    json_object_foreach(json_object_get(s, "properties"), k, v)
    {
        if ((p = schema_problem(v)) != NULL) {
            return p;
        }
    }
    if ((v = json_object_get(s, "items")) != NULL &&
        (p = schema_problem(v)) != NULL) {
        return p;
    }
    return NULL;
}

/* The request problem Gemini would answer 400 for, or NULL. */
static const char *
request_problem(json_t *body, char *buf, size_t cap)
{
    json_t *contents = json_object_get(body, "contents"), *c, *p, *t;
    size_t i, j, calls = 0;

    if (json_array_size(contents) == 0) {
        return "contents is not specified";
    }
    json_array_foreach(contents, i, c)
    {
        const char *role = json_string_value(json_object_get(c, "role"));
        size_t responses = 0;

        if (role == NULL ||
            (strcmp(role, "user") != 0 && strcmp(role, "model") != 0)) {
            return "Please use a valid role: user, model.";
        }
        if (json_array_size(json_object_get(c, "parts")) == 0) {
            return "contents.parts must not be empty.";
        }
        json_array_foreach(json_object_get(c, "parts"), j, p)
        {
            if (json_object_get(p, "functionResponse") != NULL) {
                responses++;
            }
        }
        if (calls > 0 && responses != calls) {
            return "Please ensure that the number of function response parts "
                   "is equal to the number of function call parts of the "
                   "function call turn.";
        }
        calls = 0;
        json_array_foreach(json_object_get(c, "parts"), j, p)
        {
            if (json_object_get(p, "functionCall") != NULL) {
                calls++;
            }
        }
    }
    t = json_object_get(body, "systemInstruction");
    if (t != NULL && json_array_size(json_object_get(t, "parts")) == 0) {
        return "systemInstruction.parts must not be empty";
    }
    json_array_foreach(json_object_get(body, "tools"), i, t)
    {
        json_array_foreach(json_object_get(t, "functionDeclarations"), j, p)
        {
            const char *bad = schema_problem(json_object_get(p, "parameters"));

            if (bad != NULL) {
                snprintf(buf, cap,
                         "Invalid JSON payload received. Unknown name \"%s\" "
                         "at 'tools[0].function_declarations[%zu].parameters'"
                         ": Cannot find field.",
                         bad, j);
                return buf;
            }
        }
    }
    return NULL;
}

static const char *
first_function(json_t *body, const char **param)
{
    json_t *decl = json_array_get(
        json_object_get(json_array_get(json_object_get(body, "tools"), 0),
                        "functionDeclarations"),
        0);
    json_t *fcc = json_object_get(json_object_get(body, "toolConfig"),
                                  "functionCallingConfig");
    const char *mode = json_string_value(json_object_get(fcc, "mode"));
    json_t *allowed = json_object_get(fcc, "allowedFunctionNames");

    *param = json_string_value(json_array_get(
        json_object_get(json_object_get(decl, "parameters"), "required"), 0));
    if (mode && strcmp(mode, "NONE") == 0) {
        return NULL;
    }
    if (json_array_size(allowed) > 0) {
        return json_string_value(json_array_get(allowed, 0));
    }
    return json_string_value(json_object_get(decl, "name"));
}

static json_t *
usage(int prompt, int out, int thoughts)
{
    json_t *u =
        json_pack("{s:i,s:i,s:i,s:i}", "promptTokenCount", prompt,
                  "candidatesTokenCount", out, "totalTokenCount",
                  prompt + out + thoughts, "cachedContentTokenCount", 2);

    if (thoughts > 0) {
        json_object_set_new(u, "thoughtsTokenCount", json_integer(thoughts));
    }
    return u;
}

static void
add_event(frames_t *f, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    char *frame = malloc(strlen(text) + 16);

    sprintf(frame, "data: %s\r\n\r\n", text);
    frames_add(f, frame, strlen(frame));
    free(frame);
    free(text);
    json_decref(j);
}

void
answer_gemini(struct evhttp_request *req, const char *uri, json_t *body,
              const directives_t *d, const char *key)
{
    int vertex = strstr(uri, "/publishers/google/models/") != NULL;
    int stream = strstr(uri, ":streamGenerateContent") != NULL;
    json_t *contents = json_object_get(body, "contents");
    json_t *last = json_array_get(contents, json_array_size(contents) - 1);
    json_t *gc = json_object_get(body, "generationConfig"), *p, *fr = NULL;
    json_t *cands, *resp;
    const char *fn, *param, *problem;
    char model[256], text[1024], reply[1400], buf[512];
    int thoughts, n, prompt, i;
    size_t k;

    if (strncmp(uri, "/token", 6) == 0) {
        answer_token(req, uri, body, d);
        return;
    }
    if (vertex ? (key == NULL || strncmp(key, "Bearer ya29.mock-", 17) != 0)
               : (key == NULL || *key == '\0')) {
        google_error(req, vertex ? 401 : 403,
                     vertex ? "Request had invalid authentication "
                              "credentials. Expected OAuth 2 access token."
                            : "Method doesn't allow unregistered callers.",
                     NULL);
        return;
    }
    if (!vertex && strstr(key, "invalid") != NULL) {
        google_error(
            req, 400, "API key not valid. Please pass a valid API key.",
            json_pack("[{s:s,s:s,s:s}]", "@type",
                      "type.googleapis.com/google.rpc.ErrorInfo", "reason",
                      "API_KEY_INVALID", "domain", "googleapis.com"));
        return;
    }
    if (d->status) {
        json_t *details = NULL;

        if (d->status == 429) {
            snprintf(buf, sizeof(buf), "%ds",
                     d->retry_after > 0 ? d->retry_after : 7);
            details = json_pack("[{s:s,s:s}]", "@type",
                                "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay", buf);
        }
        snprintf(buf, sizeof(buf), "mock error %d", d->status);
        google_error(req, d->status, buf, details);
        return;
    }
    path_model(uri, model, sizeof(model));
    if (strstr(uri, "Embed") != NULL || strstr(uri, ":predict") != NULL) {
        answer_embed(req, uri, body, model);
        return;
    }
    if ((problem = request_problem(body, buf, sizeof(buf))) != NULL) {
        google_error(req, 400, problem, NULL);
        return;
    }
    if (d->garbage && !stream) {
        struct evbuffer *b = evbuffer_new();

        evbuffer_add_printf(b, "<html>502 upstream garbage</html>");
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    prompt = count_tokens(contents);
    if (d->safety) {
        resp = json_pack(
            "{s:{s:s,s:[{s:s,s:s,s:b}]},s:{s:i,s:i},s:s}", "promptFeedback",
            "blockReason", "SAFETY", "safetyRatings", "category",
            "HARM_CATEGORY_DANGEROUS_CONTENT", "probability", "HIGH", "blocked",
            1, "usageMetadata", "promptTokenCount", prompt, "totalTokenCount",
            prompt, "modelVersion", model);
        goto send;
    }
    if (d->safety_answer) {
        resp = json_pack(
            "{s:[{s:s,s:i,s:[{s:s,s:s,s:b}]}],s:o,s:s}", "candidates",
            "finishReason", "SAFETY", "index", 0, "safetyRatings", "category",
            "HARM_CATEGORY_HARASSMENT", "probability", "HIGH", "blocked", 1,
            "usageMetadata", usage(prompt, 0, 0), "modelVersion", model);
        goto send;
    }
    /* what the answer says */
    text[0] = '\0';
    json_array_foreach(json_object_get(last, "parts"), k, p)
    {
        const char *t = json_string_value(json_object_get(p, "text"));
        json_t *fresp = json_object_get(p, "functionResponse");

        if (t != NULL) {
            snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s%s",
                     text[0] ? " " : "", t);
        }
        if (fresp != NULL) {
            fr = fresp;
        }
    }
    strip_directives(text);
    fn = json_array_size(json_object_get(body, "tools")) > 0 && fr == NULL
             ? first_function(body, &param)
             : NULL;
    if (d->reply[0]) {
        snprintf(reply, sizeof(reply), "%s", d->reply);
    } else if (fr != NULL) {
        char *r = json_dumps(json_object_get(fr, "response"), JSON_COMPACT);

        snprintf(reply, sizeof(reply), "Tool %s said: %s",
                 json_string_value(json_object_get(fr, "name")), r);
        free(r);
    } else {
        snprintf(reply, sizeof(reply), "Hello from mock. You said: %.200s",
                 text);
    }
    thoughts = json_is_true(json_object_get(
        json_object_get(gc, "thinkingConfig"), "includeThoughts"));
    n = json_is_integer(json_object_get(gc, "candidateCount"))
            ? (int)json_integer_value(json_object_get(gc, "candidateCount"))
            : 1;
    if (stream) {
        frames_t *f = frames_new();
        char *save = NULL, *w;
        int sent = 0, words = 0;

        if (d->garbage) {
            frames_add(f, "data: {not json\r\n\r\n", 19);
        }
        if (fn != NULL) {
            add_event(
                f, json_pack("{s:[{s:{s:s,s:[{s:{s:s,s:o},s:s}]},s:s,s:i}],s:o,"
                             "s:s,s:s}",
                             "candidates", "content", "role", "model", "parts",
                             "functionCall", "name", fn, "args",
                             param ? json_pack("{s:s}", param, "mock")
                                   : json_object(),
                             "thoughtSignature", "c2lnLW1vY2s=", "finishReason",
                             "STOP", "index", 0, "usageMetadata",
                             usage(prompt, 3, 0), "modelVersion", model,
                             "responseId", "resp-mock-1"));
            frames_send(req, f, d, "text/event-stream");
            return;
        }
        if (thoughts) {
            add_event(f, json_pack("{s:[{s:{s:s,s:[{s:s,s:b}]},s:i}],s:o,s:s}",
                                   "candidates", "content", "role", "model",
                                   "parts", "text", "Thinking about it.",
                                   "thought", 1, "index", 0, "usageMetadata",
                                   usage(prompt, 0, 5), "modelVersion", model));
        }
        if (d->chunks > 0) {
            for (i = 0; i < d->chunks; i++) {
                add_event(f, json_pack("{s:[{s:{s:s,s:[{s:s}]},s:i}],s:o,s:s}",
                                       "candidates", "content", "role", "model",
                                       "parts", "text", i ? " tok" : "tok",
                                       "index", 0, "usageMetadata",
                                       usage(prompt, i + 1, 0), "modelVersion",
                                       model));
            }
            words = d->chunks;
        } else {
            for (w = strtok_r(reply, " ", &save); w;
                 w = strtok_r(NULL, " ", &save), words++) {
                char piece[600];

                snprintf(piece, sizeof(piece), "%s%s", sent++ ? " " : "", w);
                add_event(f,
                          json_pack("{s:[{s:{s:s,s:[{s:s}]},s:i}],s:o,s:s,"
                                    "s:s}",
                                    "candidates", "content", "role", "model",
                                    "parts", "text", piece, "index", 0,
                                    "usageMetadata",
                                    usage(prompt, words + 1, 0), "modelVersion",
                                    model, "responseId", "resp-mock-1"));
            }
        }
        add_event(f, json_pack("{s:[{s:{s:s,s:[{s:s}]},s:s,s:i}],s:o,s:s,s:s}",
                               "candidates", "content", "role", "model",
                               "parts", "text", "", "finishReason", "STOP",
                               "index", 0, "usageMetadata",
                               usage(prompt, words, thoughts ? 5 : 0),
                               "modelVersion", model, "responseId",
                               "resp-mock-1"));
        frames_send(req, f, d, "text/event-stream");
        return;
    }
    cands = json_array();
    for (i = 0; i < n; i++) {
        json_t *parts = json_array();

        if (thoughts) {
            json_array_append_new(parts, json_pack("{s:s,s:b}", "text",
                                                   "Thinking about it.",
                                                   "thought", 1));
        }
        if (fn != NULL) {
            json_array_append_new(
                parts, json_pack("{s:{s:s,s:o},s:s}", "functionCall", "name",
                                 fn, "args",
                                 param ? json_pack("{s:s}", param, "mock")
                                       : json_object(),
                                 "thoughtSignature", "c2lnLW1vY2s="));
        } else {
            json_array_append_new(parts, json_pack("{s:s}", "text", reply));
        }
        json_array_append_new(
            cands,
            json_pack("{s:{s:s,s:o},s:s,s:i}", "content", "role", "model",
                      "parts", parts, "finishReason",
                      json_is_integer(json_object_get(gc, "maxOutputTokens")) &&
                              json_integer_value(
                                  json_object_get(gc, "maxOutputTokens")) < 5
                          ? "MAX_TOKENS"
                          : "STOP",
                      "index", i));
    }
    resp =
        json_pack("{s:o,s:o,s:s,s:s}", "candidates", cands, "usageMetadata",
                  usage(prompt, (int)strlen(reply) / 4 + 1, thoughts ? 5 : 0),
                  "modelVersion", model, "responseId", "resp-mock-1");
send:
    if (stream) {
        frames_t *f = frames_new();

        add_event(f, resp);
        frames_send(req, f, d, "text/event-stream");
        return;
    }
    send_json(req, 200, resp, 0);
}
