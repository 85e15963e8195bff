/*
 * The Responses API as an upstream wire (responses-wire.h): chat requests
 * to POST /responses, Responses and their event streams back to chat.
 */
#include <manifold/json.h>

#include "responses-wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/provider-util.h"

void
rw_stream_init(rw_stream_t *s)
{
    size_t i;

    memset(s, 0, sizeof(*s));
    for (i = 0; i < sizeof(s->tool_of_item) / sizeof(s->tool_of_item[0]); i++) {
        s->tool_of_item[i] = -1;
    }
    snprintf(s->id, sizeof(s->id), "chatcmpl-responses");
    s->created = (json_int_t)time(NULL);
    pu_usage_init(&s->usage);
}

/* Request */

/* The text of a canonical content (a string, or its text parts joined);
 * a new reference. */
static json_t *
text_of(json_t *content)
{
    json_t *p;
    size_t i;
    char *t = NULL;
    size_t len = 0;
    json_t *out;

    if (json_is_string(content)) {
        return json_incref(content);
    }
    json_array_foreach(content, i, p)
    {
        const char *s = json_string_value(json_object_get(p, "text"));

        if (s != NULL) {
            pu_append(&t, &len, s);
        }
    }
    out = json_string(t ? t : "");
    free(t);
    return out;
}

/* An Anthropic document part (provider-util.h) as the Responses API
 * documents files: a PDF as input_file with file_data (a data: URL), a
 * URL as input_file with file_url, a text document as input_text; NULL
 * for another source (the provider refused the request before). */
static json_t *
document_input(json_t *p)
{
    json_t *src = json_object_get(p, "source");
    json_t *title = json_object_get(p, "title");
    const char *name =
        json_is_string(title) ? json_string_value(title) : "document.pdf";
    const char *data = json_string_value(json_object_get(src, "data"));
    json_t *out = NULL;
    size_t len;
    char *url;

    switch (pu_document_kind(p)) {
    case PU_DOC_PDF:
        len = strlen(data) + 32;
        if ((url = malloc(len)) == NULL) {
            return NULL;
        }
        snprintf(url, len, "data:application/pdf;base64,%s", data);
        out = mf_json_pack("{s:s,s:s,s:s}", "type", "input_file", "filename",
                           name, "file_data", url);
        free(url);
        break;
    case PU_DOC_URL:
        out = mf_json_pack("{s:s,s:O}", "type", "input_file", "file_url",
                           json_object_get(src, "url"));
        break;
    case PU_DOC_TEXT:
        out = mf_json_pack("{s:s,s:s}", "type", "input_text", "text", data);
        break;
    default:
        break;
    }
    return out;
}

/* A user, system or developer message's content: a string as it is,
 * parts as input_text and input_image parts. */
static json_t *
input_content(json_t *content)
{
    json_t *out, *p;
    size_t i;

    if (!json_is_array(content)) {
        return json_is_string(content) ? json_incref(content) : json_string("");
    }
    out = json_array();
    json_array_foreach(content, i, p)
    {
        const char *type = json_string_value(json_object_get(p, "type"));
        json_t *img = json_object_get(p, "image_url");

        if (type != NULL && strcmp(type, "text") == 0) {
            json_array_append_new(
                out, mf_json_pack("{s:s,s:O}", "type", "input_text", "text",
                                  json_object_get(p, "text")));
        } else if (type != NULL && strcmp(type, "image_url") == 0) {
            json_t *url =
                json_is_string(img) ? img : json_object_get(img, "url");
            json_t *part = mf_json_pack("{s:s,s:O}", "type", "input_image",
                                        "image_url", url ? url : json_null());

            if (json_is_string(json_object_get(img, "detail"))) {
                json_object_set(part, "detail", json_object_get(img, "detail"));
            }
            json_array_append_new(out, part);
        } else if (type != NULL && strcmp(type, "document") == 0) {
            json_t *d = document_input(p);

            if (d != NULL) {
                json_array_append_new(out, d);
            }
        }
    }
    return out;
}

static json_t *
tools_of(json_t *tools)
{
    json_t *out = json_array(), *t;
    size_t i;

    json_array_foreach(tools, i, t)
    {
        json_t *fn = json_object_get(t, "function"), *o;
        static const char *const keys[] = {"description", "parameters",
                                           "strict", NULL};
        size_t k;

        if (!json_is_object(fn) ||
            !json_is_string(json_object_get(fn, "name"))) {
            continue;
        }
        o = mf_json_pack("{s:s,s:O}", "type", "function", "name",
                         json_object_get(fn, "name"));
        for (k = 0; keys[k] != NULL; k++) {
            if (json_object_get(fn, keys[k]) != NULL) {
                json_object_set(o, keys[k], json_object_get(fn, keys[k]));
            }
        }
        json_array_append_new(out, o);
    }
    return out;
}

/* The reasoning items of an assistant message that go back to the
 * Responses API, as the client sent them but for their id: those with
 * OpenAI's own encrypted_content. Without it an item cannot be read again (the
 * wire sends store: false), and content another provider made carries the
 * gateway's mark ("manifold:<provider>:"): both are left out. */
static void
reasoning_items(json_t *input, json_t *m)
{
    json_t *ri;
    size_t i;

    json_array_foreach(json_object_get(m, "reasoning_items"), i, ri)
    {
        const char *ec =
            json_string_value(json_object_get(ri, "encrypted_content"));

        if (ec != NULL && strncmp(ec, "manifold:", 9) != 0) {
            /* without its id: the wire sends store: false, and OpenAI
             * looks an item with an id up among stored ones (a 400, "Item
             * with id ... not found"); the encrypted content stands on its
             * own, and an id the gateway made was never OpenAI's */
            json_t *copy = json_copy(ri);

            json_object_del(copy, "id");
            json_array_append_new(input, copy);
        }
    }
}

json_t *
rw_request(json_t *in, mf_str_t model, int stream)
{
    static const pu_field_t fields[] = {{"temperature", "temperature", 0},
                                        {"top_p", "top_p", 0},
                                        {NULL, NULL, 0}};
    json_t *out =
        mf_json_pack("{s:s%,s:b}", "model", model.data, model.len, "store", 0);
    json_t *input = json_array(), *m, *v, *tc;
    size_t i, k;

    json_array_foreach(json_object_get(in, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");

        if (role == NULL) {
            continue;
        }
        if (strcmp(role, "tool") == 0) {
            json_array_append_new(
                input,
                mf_json_pack("{s:s,s:O?,s:o}", "type", "function_call_output",
                             "call_id", json_object_get(m, "tool_call_id"),
                             "output", text_of(content)));
        } else if (strcmp(role, "assistant") == 0) {
            json_t *t = text_of(content);

            reasoning_items(input, m);
            if (json_string_length(t) > 0) {
                json_array_append_new(
                    input, mf_json_pack("{s:s,s:s,s:o}", "type", "message",
                                        "role", "assistant", "content", t));
            } else {
                json_decref(t);
            }
            json_array_foreach(json_object_get(m, "tool_calls"), k, tc)
            {
                json_t *fn = json_object_get(tc, "function");
                json_t *args = json_object_get(fn, "arguments");

                json_array_append_new(
                    input,
                    mf_json_pack("{s:s,s:O?,s:O?,s:s}", "type", "function_call",
                                 "call_id", json_object_get(tc, "id"), "name",
                                 json_object_get(fn, "name"), "arguments",
                                 json_is_string(args) ? json_string_value(args)
                                                      : "{}"));
            }
        } else {
            json_array_append_new(
                input, mf_json_pack("{s:s,s:s,s:o}", "type", "message", "role",
                                    role, "content", input_content(content)));
        }
    }
    json_object_set_new(out, "input", input);
    if ((v = pu_max_tokens(in)) != NULL) {
        json_object_set(out, "max_output_tokens", v);
    }
    pu_copy_fields(in, out, fields);
    if (json_is_boolean(v = json_object_get(in, "parallel_tool_calls"))) {
        json_object_set(out, "parallel_tool_calls", v);
    }
    if (json_is_string(v = json_object_get(in, "user"))) {
        json_object_set(out, "user", v);
    }
    if (json_is_array(v = json_object_get(in, "include"))) {
        json_object_set(out, "include", v); /* a Responses client's, as sent */
    }
    if (json_array_size(json_object_get(in, "tools")) > 0) {
        json_object_set_new(out, "tools",
                            tools_of(json_object_get(in, "tools")));
        v = json_object_get(in, "tool_choice");
        if (json_is_string(v)) {
            json_object_set(out, "tool_choice", v);
        } else if (json_is_object(v)) {
            json_object_set_new(
                out, "tool_choice",
                mf_json_pack(
                    "{s:s,s:O?}", "type", "function", "name",
                    json_object_get(json_object_get(v, "function"), "name")));
        }
    }
    if (json_is_string(v = json_object_get(in, "reasoning_effort"))) {
        json_object_set_new(
            out, "reasoning",
            mf_json_pack("{s:O,s:s}", "effort", v, "summary", "auto"));
    }
    v = json_object_get(in, "response_format");
    if (json_is_object(v)) {
        const char *type = json_string_value(json_object_get(v, "type"));
        json_t *js = json_object_get(v, "json_schema");

        if (type != NULL && strcmp(type, "json_schema") == 0) {
            json_t *name = json_object_get(js, "name");
            json_t *schema = json_object_get(js, "schema");
            json_t *f = mf_json_pack("{s:s}", "type", "json_schema");

            json_object_set_new(
                f, "name", name ? json_incref(name) : json_string("response"));
            json_object_set_new(f, "schema",
                                schema ? json_incref(schema) : json_object());

            if (json_is_boolean(json_object_get(js, "strict"))) {
                json_object_set(f, "strict", json_object_get(js, "strict"));
            }
            json_object_set_new(out, "text",
                                mf_json_pack("{s:o}", "format", f));
        } else if (type != NULL && strcmp(type, "json_object") == 0) {
            json_object_set_new(
                out, "text",
                mf_json_pack("{s:{s:s}}", "format", "type", "json_object"));
        }
    }
    if (stream) {
        json_object_set_new(out, "stream", json_true());
    }
    return out;
}

/* Response */

static int64_t
int_at(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static void
read_usage(json_t *u, mf_usage_t *out)
{
    pu_usage_init(out);
    if (!json_is_object(u)) {
        return;
    }
    out->prompt_tokens = int_at(u, "input_tokens");
    out->completion_tokens = int_at(u, "output_tokens");
    out->total_tokens = int_at(u, "total_tokens");
    if (out->total_tokens < 0 && out->prompt_tokens >= 0 &&
        out->completion_tokens >= 0) {
        out->total_tokens = out->prompt_tokens + out->completion_tokens;
    }
    out->cached_tokens =
        int_at(json_object_get(u, "input_tokens_details"), "cached_tokens");
    out->reasoning_tokens =
        int_at(json_object_get(u, "output_tokens_details"), "reasoning_tokens");
}

/* The chat finish reason of a Response's status. */
static const char *
finish_of(json_t *resp, int calls)
{
    const char *status = json_string_value(json_object_get(resp, "status"));
    const char *why = json_string_value(
        json_object_get(json_object_get(resp, "incomplete_details"), "reason"));

    if (status != NULL && strcmp(status, "incomplete") == 0) {
        return why != NULL && strcmp(why, "content_filter") == 0
                   ? "content_filter"
                   : "length";
    }
    return calls ? "tool_calls" : "stop";
}

json_t *
rw_completion(json_t *resp, mf_usage_t *usage)
{
    json_t *item, *part, *calls = json_array(), *msg, *out;
    json_t *reasoning = json_array();
    char *text = NULL, *think = NULL;
    size_t tl = 0, rl = 0, i, k;
    const char *id = json_string_value(json_object_get(resp, "id"));
    const char *model = json_string_value(json_object_get(resp, "model"));
    json_t *created = json_object_get(resp, "created_at");

    if (!json_is_array(json_object_get(resp, "output"))) {
        json_decref(calls);
        json_decref(reasoning);
        return NULL;
    }
    json_array_foreach(json_object_get(resp, "output"), i, item)
    {
        const char *type = json_string_value(json_object_get(item, "type"));

        if (type == NULL) {
            continue;
        }
        if (strcmp(type, "message") == 0) {
            json_array_foreach(json_object_get(item, "content"), k, part)
            {
                const char *s =
                    json_string_value(json_object_get(part, "text"));
                const char *refusal =
                    json_string_value(json_object_get(part, "refusal"));

                if (s != NULL) {
                    pu_append(&text, &tl, s);
                } else if (refusal != NULL) {
                    pu_append(&text, &tl, refusal);
                }
            }
        } else if (strcmp(type, "function_call") == 0) {
            json_t *args = json_object_get(item, "arguments");

            json_array_append_new(
                calls,
                mf_json_pack("{s:O?,s:s,s:{s:O?,s:s}}", "id",
                             json_object_get(item, "call_id"), "type",
                             "function", "function", "name",
                             json_object_get(item, "name"), "arguments",
                             json_is_string(args) ? json_string_value(args)
                                                  : "{}"));
        } else if (strcmp(type, "reasoning") == 0) {
            json_array_append(reasoning, item); /* as it came */
            json_array_foreach(json_object_get(item, "summary"), k, part)
            {
                const char *s =
                    json_string_value(json_object_get(part, "text"));

                if (s != NULL) {
                    pu_append(&think, &rl, s);
                }
            }
        }
    }
    msg = mf_json_pack("{s:s,s:o}", "role", "assistant", "content",
                       text ? json_string(text) : json_null());
    if (json_array_size(calls) > 0) {
        json_object_set(msg, "tool_calls", calls);
    }
    if (think != NULL) {
        json_object_set_new(msg, "reasoning_content", json_string(think));
    }
    if (json_array_size(reasoning) > 0) {
        json_object_set(msg, "reasoning_items", reasoning);
    }
    json_decref(reasoning);
    read_usage(json_object_get(resp, "usage"), usage);
    out = mf_json_pack(
        "{s:s+,s:s,s:I,s:s,s:[{s:i,s:o,s:s,s:n}],s:o}", "id", "chatcmpl-",
        id ? id : "responses", "object", "chat.completion", "created",
        json_is_integer(created) ? json_integer_value(created)
                                 : (json_int_t)time(NULL),
        "model", model ? model : "", "choices", "index", 0, "message", msg,
        "finish_reason", finish_of(resp, json_array_size(calls) > 0),
        "logprobs", "usage", pu_usage_json(usage));
    json_decref(calls);
    free(text);
    free(think);
    return out;
}

/* Stream */

static json_t *
chunk(rw_stream_t *s, json_t *delta, const char *finish)
{
    return pu_chunk(s->id, s->model, s->created, 0, delta, finish);
}

int
rw_event(rw_stream_t *s, mf_str_t data, json_t **out, int *usage_set)
{
    json_t *j, *c = NULL, *resp;
    const char *type;
    int flags = MF_EVENT_PASS;
    json_int_t idx;

    out[0] = out[1] = NULL;
    *usage_set = 0;
    if (data.len == 6 && memcmp(data.data, "[DONE]", 6) == 0) {
        return MF_EVENT_DONE;
    }
    j = mf_json_loadb(data.data, data.len, 0, NULL);
    type = json_string_value(json_object_get(j, "type"));
    if (!json_is_object(j) || type == NULL) {
        json_decref(j);
        return MF_ERR;
    }
    idx = int_at(j, "output_index");
    resp = json_object_get(j, "response");
    if (strcmp(type, "response.created") == 0) {
        const char *id = json_string_value(json_object_get(resp, "id"));
        const char *model = json_string_value(json_object_get(resp, "model"));
        json_t *created = json_object_get(resp, "created_at");

        if (id != NULL) {
            snprintf(s->id, sizeof(s->id), "chatcmpl-%s", id);
        }
        snprintf(s->model, sizeof(s->model), "%s", model ? model : "");
        if (json_is_integer(created)) {
            s->created = json_integer_value(created);
        }
        c = chunk(s,
                  mf_json_pack("{s:s,s:s}", "role", "assistant", "content", ""),
                  NULL);
        flags |= MF_EVENT_PREAMBLE;
    } else if (strcmp(type, "response.output_text.delta") == 0) {
        c = chunk(s,
                  mf_json_pack("{s:O}", "content", json_object_get(j, "delta")),
                  NULL);
    } else if (strcmp(type, "response.refusal.delta") == 0) {
        c = chunk(s,
                  mf_json_pack("{s:O}", "content", json_object_get(j, "delta")),
                  NULL);
    } else if (strcmp(type, "response.reasoning_summary_text.delta") == 0 ||
               strcmp(type, "response.reasoning_text.delta") == 0) {
        c = chunk(s,
                  mf_json_pack("{s:O}", "reasoning_content",
                               json_object_get(j, "delta")),
                  NULL);
    } else if (strcmp(type, "response.output_item.added") == 0) {
        json_t *item = json_object_get(j, "item");
        const char *it = json_string_value(json_object_get(item, "type"));

        if (it != NULL && strcmp(it, "function_call") == 0 && idx >= 0 &&
            idx < 64) {
            int ti = s->ntools++;

            s->tool_of_item[idx] = ti;
            c = chunk(s,
                      mf_json_pack(
                          "{s:[{s:i,s:O?,s:s,s:{s:O?,s:s}}]}", "tool_calls",
                          "index", ti, "id", json_object_get(item, "call_id"),
                          "type", "function", "function", "name",
                          json_object_get(item, "name"), "arguments", ""),
                      NULL);
        }
    } else if (strcmp(type, "response.output_item.done") == 0) {
        /* a reasoning item, whole: its encrypted_content (when include
         * asked for it) lets the next turn go on from it */
        json_t *item = json_object_get(j, "item");
        const char *it = json_string_value(json_object_get(item, "type"));

        if (it != NULL && strcmp(it, "reasoning") == 0) {
            c = chunk(s, mf_json_pack("{s:[O]}", "reasoning_items", item),
                      NULL);
        }
    } else if (strcmp(type, "response.function_call_arguments.delta") == 0 &&
               idx >= 0 && idx < 64 && s->tool_of_item[idx] >= 0) {
        c = chunk(s,
                  mf_json_pack("{s:[{s:i,s:{s:O}}]}", "tool_calls", "index",
                               s->tool_of_item[idx], "function", "arguments",
                               json_object_get(j, "delta")),
                  NULL);
    } else if (strcmp(type, "response.completed") == 0 ||
               strcmp(type, "response.incomplete") == 0) {
        read_usage(json_object_get(resp, "usage"), &s->usage);
        *usage_set = 1;
        if (!s->finished) {
            s->finished = 1;
            c = chunk(s, json_object(), finish_of(resp, s->ntools > 0));
        }
        /* the end: the usage chunk (the host drops it unless asked) */
        out[1] = pu_usage_chunk(s->id, s->model, s->created, &s->usage);
        flags |= MF_EVENT_DONE;
    } else if (strcmp(type, "response.failed") == 0 ||
               strcmp(type, "error") == 0) {
        json_t *e =
            strcmp(type, "error") == 0 ? j : json_object_get(resp, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));

        c = mf_json_pack("{s:{s:s,s:s,s:O?}}", "error", "message",
                         msg ? msg : "the upstream response failed", "type",
                         "upstream_error", "code", json_object_get(e, "code"));
        flags |= MF_EVENT_ERROR;
    }
    /* created/in_progress snapshots, content parts, the done events:
     * nothing new to send */
    json_decref(j);
    out[0] = c;
    return flags;
}
