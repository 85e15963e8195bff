/*
 * mf-mock: OpenAI's Responses API (POST /v1/responses), whole and as its
 * response.* event stream, checked as OpenAI checks it (model and input
 * required, no chat `messages`, function tools flat with their name at
 * the top, function_call_output items with a call_id). The answer is the
 * chat mock's: "Hello from mock. You said: <last user text>" as a message
 * item; a function_call item (call_mock_1, {"city":"mock"}) when tools are
 * given and no function_call_output came; a reasoning item first when
 * reasoning.effort is set; status incomplete (max_output_tokens) when
 * max_output_tokens is under 8. The directives of the last user text
 * apply (status, reply, chunk_delay, cut, ...).
 * Reasoning items are checked as OpenAI checks them with store: false: an
 * input reasoning item needs encrypted_content this mock made
 * ("enc_mock_..."; other content is "could not be verified") and an item
 * after it; with include ["reasoning.encrypted_content"] the answer's
 * reasoning item carries its encrypted_content (whole, and in the
 * stream's response.output_item.done).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mock.h"

static long responses_count;

int
responses_path(const char *uri)
{
    return strncmp(uri, "/_mock", 6) != 0 && strstr(uri, "/responses") != NULL;
}

/* Text of the last user input (a string input, or the last user message
 * item's text). */
static const char *
last_input_text(json_t *body, char *buf, size_t cap)
{
    json_t *in = json_object_get(body, "input");
    size_t i = json_array_size(in);

    buf[0] = '\0';
    if (json_is_string(in)) {
        snprintf(buf, cap, "%s", json_string_value(in));
        return buf;
    }
    while (i-- > 0) {
        json_t *m = json_array_get(in, i), *c, *part;
        const char *role = json_string_value(json_object_get(m, "role"));
        size_t k;

        if (role == NULL || strcmp(role, "user") != 0) {
            continue;
        }
        c = json_object_get(m, "content");
        if (json_is_string(c)) {
            snprintf(buf, cap, "%s", json_string_value(c));
        }
        json_array_foreach(c, k, part)
        {
            const char *t = json_string_value(json_object_get(part, "text"));

            if (t != NULL) {
                size_t l = strlen(buf);

                snprintf(buf + l, cap - l, "%s%s", l ? " " : "", t);
            }
        }
        break;
    }
    return buf;
}

void
responses_directives(json_t *body, directives_t *d)
{
    char text[1024];

    parse_directives(last_input_text(body, text, sizeof(text)), d);
}

static const char *
problem_of(json_t *body)
{
    json_t *in = json_object_get(body, "input"), *t, *it;
    size_t i;

    if (!json_is_string(json_object_get(body, "model"))) {
        return "Missing required parameter: 'model'.";
    }
    if (!json_is_string(in) && !json_is_array(in)) {
        return "Missing required parameter: 'input'.";
    }
    if (json_object_get(body, "messages") != NULL) {
        return "Unknown parameter: 'messages'.";
    }
    json_array_foreach(json_object_get(body, "tools"), i, t)
    {
        if (!json_is_string(json_object_get(t, "name"))) {
            return "Missing required parameter: 'tools[0].name'.";
        }
    }
    json_array_foreach(in, i, it)
    {
        const char *type = json_string_value(json_object_get(it, "type"));
        const char *ec =
            json_string_value(json_object_get(it, "encrypted_content"));

        if (type != NULL && strcmp(type, "function_call_output") == 0 &&
            !json_is_string(json_object_get(it, "call_id"))) {
            return "Missing required parameter: 'input[].call_id'.";
        }
        if (type == NULL || strcmp(type, "reasoning") != 0) {
            continue;
        }
        /* with store: false an item given by id is looked up among
         * stored ones, whatever it carries (as OpenAI answers it) */
        if ((ec == NULL || json_object_get(it, "id") != NULL) &&
            json_is_false(json_object_get(body, "store"))) {
            return "Item with id 'rs' not found. Items are not persisted when "
                   "`store` is set to false. Try again with `store` set to "
                   "true, or remove this item from your input.";
        }
        if (ec != NULL && strncmp(ec, "enc_mock_", 9) != 0) {
            return "The encrypted content for item rs could not be verified.";
        }
        if (i + 1 >= json_array_size(in)) {
            return "Item 'rs' of type 'reasoning' was provided without its "
                   "required following item.";
        }
    }
    return NULL;
}

/* Whether include asks for reasoning.encrypted_content. */
static int
wants_encrypted(json_t *body)
{
    json_t *v;
    size_t i;

    json_array_foreach(json_object_get(body, "include"), i, v)
    {
        if (json_is_string(v) &&
            strcmp(json_string_value(v), "reasoning.encrypted_content") == 0) {
            return 1;
        }
    }
    return 0;
}

/* Whether the input holds a function_call_output item. */
static int
has_output(json_t *body)
{
    json_t *it;
    size_t i;

    json_array_foreach(json_object_get(body, "input"), i, it)
    {
        const char *type = json_string_value(json_object_get(it, "type"));

        if (type != NULL && strcmp(type, "function_call_output") == 0) {
            return 1;
        }
    }
    return 0;
}

static void
add_event(frames_t *f, int *seq, const char *type, json_t *data)
{
    char *text;
    char *frame;
    size_t n;

    json_object_set_new(data, "type", json_string(type));
    json_object_set_new(data, "sequence_number", json_integer((*seq)++));
    text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    n = strlen(text) + strlen(type) + 32;
    frame = malloc(n);
    snprintf(frame, n, "event: %s\ndata: %s\n\n", type, text);
    frames_add(f, frame, strlen(frame));
    free(frame);
    free(text);
}

void
answer_responses(struct evhttp_request *req, json_t *body,
                 const directives_t *d)
{
    const char *problem = problem_of(body);
    char user[1024], text[1400], id[64], item[80];
    json_t *tools = json_object_get(body, "tools"), *output, *resp, *usage;
    json_t *mt = json_object_get(body, "max_output_tokens");
    int stream = json_is_true(json_object_get(body, "stream"));
    int call = json_array_size(tools) > 0 && !has_output(body);
    int reasoning = json_is_string(
        json_object_get(json_object_get(body, "reasoning"), "effort"));
    int incomplete = json_is_integer(mt) && json_integer_value(mt) < 8;
    char *in_text = json_dumps(json_object_get(body, "input"),
                               JSON_COMPACT | JSON_ENCODE_ANY);
    int in_tokens = in_text ? (int)strlen(in_text) / 4 : 1;
    int out_tokens;
    const char *name =
        json_string_value(json_object_get(json_array_get(tools, 0), "name"));

    free(in_text);
    if (problem != NULL) {
        send_json(req, 400,
                  json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message",
                            problem, "type", "invalid_request_error", "param",
                            "code"),
                  0);
        return;
    }
    responses_count++;
    snprintf(id, sizeof(id), "resp_mock_%ld", responses_count);
    if (d->reply[0]) {
        snprintf(text, sizeof(text), "%s", d->reply);
    } else {
        last_input_text(body, user, sizeof(user));
        strip_directives(user);
        snprintf(text, sizeof(text), "Hello from mock. You said: %.200s", user);
    }
    if (incomplete) {
        text[5] = '\0';
    }
    out_tokens = (int)strlen(text) / 4 + 1 + (reasoning ? 7 : 0);
    output = json_array();
    if (reasoning) {
        json_t *rs = json_pack("{s:s,s:s,s:[{s:s,s:s}]}", "type", "reasoning",
                               "id", "rs_mock_1", "summary", "type",
                               "summary_text", "text", "Thinking about it.");

        if (wants_encrypted(body)) {
            char enc[64];

            snprintf(enc, sizeof(enc), "enc_mock_%ld", responses_count);
            json_object_set_new(rs, "encrypted_content", json_string(enc));
        }
        json_array_append_new(output, rs);
    }
    if (call) {
        json_array_append_new(
            output,
            json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "function_call",
                      "id", "fc_mock_1", "call_id", "call_mock_1", "name",
                      name ? name : "tool", "arguments", "{\"city\":\"mock\"}",
                      "status", "completed"));
    } else {
        json_array_append_new(
            output,
            json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:s,s:[]}]}", "type", "message",
                      "id", "msg_mock_1", "status", "completed", "role",
                      "assistant", "content", "type", "output_text", "text",
                      text, "annotations"));
    }
    usage = json_pack("{s:i,s:{s:i},s:i,s:{s:i},s:i}", "input_tokens",
                      in_tokens > 0 ? in_tokens : 1, "input_tokens_details",
                      "cached_tokens", 0, "output_tokens", out_tokens,
                      "output_tokens_details", "reasoning_tokens",
                      reasoning ? 7 : 0, "total_tokens",
                      (in_tokens > 0 ? in_tokens : 1) + out_tokens);
    resp = json_pack(
        "{s:s,s:s,s:I,s:s,s:O,s:o,s:o,s:o}", "id", id, "object", "response",
        "created_at", (json_int_t)time(NULL), "status",
        incomplete ? "incomplete" : "completed", "model",
        json_object_get(body, "model"), "output", output, "incomplete_details",
        incomplete ? json_pack("{s:s}", "reason", "max_output_tokens")
                   : json_null(),
        "usage", usage);
    if (!stream) {
        send_json(req, 200, resp, 0);
        return;
    }
    {
        frames_t *f = frames_new();
        json_t *snap = json_deep_copy(resp), *it;
        int seq = 0;
        size_t i;

        json_object_set_new(snap, "status", json_string("in_progress"));
        json_object_set_new(snap, "output", json_array());
        json_object_set_new(snap, "usage", json_null());
        add_event(f, &seq, "response.created",
                  json_pack("{s:O}", "response", snap));
        add_event(f, &seq, "response.in_progress",
                  json_pack("{s:o}", "response", snap));
        json_array_foreach(json_object_get(resp, "output"), i, it)
        {
            const char *type = json_string_value(json_object_get(it, "type"));
            json_t *added = json_deep_copy(it);

            snprintf(item, sizeof(item), "%s",
                     json_string_value(json_object_get(it, "id")));
            if (strcmp(type, "message") == 0) {
                json_object_set_new(added, "content", json_array());
                json_object_set_new(added, "status",
                                    json_string("in_progress"));
            } else if (strcmp(type, "function_call") == 0) {
                json_object_set_new(added, "arguments", json_string(""));
                json_object_set_new(added, "status",
                                    json_string("in_progress"));
            } else {
                json_object_set_new(added, "summary", json_array());
                json_object_del(added, "encrypted_content"); /* at done */
            }
            add_event(
                f, &seq, "response.output_item.added",
                json_pack("{s:i,s:o}", "output_index", (int)i, "item", added));
            if (strcmp(type, "message") == 0) {
                const char *p = text;

                add_event(f, &seq, "response.content_part.added",
                          json_pack("{s:s,s:i,s:i,s:{s:s,s:s,s:[]}}", "item_id",
                                    item, "output_index", (int)i,
                                    "content_index", 0, "part", "type",
                                    "output_text", "text", "", "annotations"));
                while (*p) {
                    /* one word (and the space after it) an event */
                    const char *sp = strchr(p, ' ');
                    size_t n = sp ? (size_t)(sp - p) + 1 : strlen(p);

                    add_event(f, &seq, "response.output_text.delta",
                              json_pack("{s:s,s:i,s:i,s:s%}", "item_id", item,
                                        "output_index", (int)i, "content_index",
                                        0, "delta", p, n));
                    p += n;
                }
                add_event(f, &seq, "response.output_text.done",
                          json_pack("{s:s,s:i,s:i,s:s}", "item_id", item,
                                    "output_index", (int)i, "content_index", 0,
                                    "text", text));
                add_event(f, &seq, "response.content_part.done",
                          json_pack("{s:s,s:i,s:i,s:{s:s,s:s,s:[]}}", "item_id",
                                    item, "output_index", (int)i,
                                    "content_index", 0, "part", "type",
                                    "output_text", "text", text,
                                    "annotations"));
            } else if (strcmp(type, "function_call") == 0) {
                add_event(f, &seq, "response.function_call_arguments.delta",
                          json_pack("{s:s,s:i,s:s}", "item_id", item,
                                    "output_index", (int)i, "delta",
                                    "{\"city\":"));
                add_event(f, &seq, "response.function_call_arguments.delta",
                          json_pack("{s:s,s:i,s:s}", "item_id", item,
                                    "output_index", (int)i, "delta",
                                    "\"mock\"}"));
                add_event(f, &seq, "response.function_call_arguments.done",
                          json_pack("{s:s,s:i,s:s}", "item_id", item,
                                    "output_index", (int)i, "arguments",
                                    "{\"city\":\"mock\"}"));
            } else {
                add_event(f, &seq, "response.reasoning_summary_text.delta",
                          json_pack("{s:s,s:i,s:i,s:s}", "item_id", item,
                                    "output_index", (int)i, "summary_index", 0,
                                    "delta", "Thinking about it."));
            }
            add_event(
                f, &seq, "response.output_item.done",
                json_pack("{s:i,s:O}", "output_index", (int)i, "item", it));
        }
        add_event(f, &seq,
                  incomplete ? "response.incomplete" : "response.completed",
                  json_pack("{s:o}", "response", resp));
        frames_send(req, f, d, "text/event-stream");
    }
}
