/*
 * OpenAI Responses inbound: POST /v1/responses to canonical chat requests
 * (instructions, input as a string or items: messages with input_text,
 * input_image and output_text parts, function_call and
 * function_call_output items; function tools and tool choice; custom
 * (freeform) and local_shell tools as function tools, their calls back
 * as custom_tool_call and local_shell_call items and those replayed;
 * max_output_tokens, reasoning effort, text formats), chat completions
 * back to Response objects (message, function_call and reasoning output
 * items, usage with cached and reasoning tokens), and canonical chunks to
 * the response.* stream events (created, in_progress, output_item and
 * content_part added and done, output_text and function_call_arguments
 * deltas and done, reasoning summary text, completed or incomplete, and
 * failed followed by error when a stream is cut). Errors take OpenAI's
 * shape. Answers are kept in the response store (respstore.c) with the
 * conversation that led to them, for previous_response_id, GET and
 * DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items and
 * item_reference input items (resolved from the store).
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <stdlib.h>
#include <time.h>

#include <manifold/json.h>

#include "proto/proto.h"

/* The function a local_shell tool becomes upstream. */
#define SHELL_TOOL "local_shell"

/* Item ids */

/* The id of an item the gateway names: its kind ("msg", "fc", "rs"), the
 * 48 hex digits of the response it belongs to (rid: resp_...) and its
 * index there, "msg_<hex>_0": an item_reference finds the stored
 * response from the id alone (item_owner). */
static void
item_id(char *buf, size_t cap, const char *kind, const char *rid, size_t n)
{
    snprintf(buf, cap, "%s_%.48s_%zu", kind,
             strncmp(rid, "resp_", 5) == 0 ? rid + 5 : rid, n);
}

/* An input item kept without an id gets "<kind>_<hex>_in<n>" (n its
 * index in the stored conversation). */
static void
input_item_id(char *buf, size_t cap, const char *type, const char *rid,
              size_t n)
{
    const char *kind = type == NULL || strcmp(type, "message") == 0   ? "msg"
                       : strcmp(type, "function_call") == 0           ? "fc"
                       : strcmp(type, "function_call_output") == 0    ? "fco"
                       : strcmp(type, "reasoning") == 0               ? "rs"
                       : strcmp(type, "custom_tool_call") == 0        ? "ctc"
                       : strcmp(type, "custom_tool_call_output") == 0 ? "ctco"
                       : strcmp(type, "local_shell_call") == 0        ? "lsh"
                       : strcmp(type, "local_shell_call_output") == 0 ? "lsho"
                                                                      : "item";

    snprintf(buf, cap, "%s_%.48s_in%zu", kind,
             strncmp(rid, "resp_", 5) == 0 ? rid + 5 : rid, n);
}

/* The response an item id made by item_id belongs to, in rid (resp_...);
 * 0 for another id. */
static int
item_owner(const char *id, char *rid, size_t cap)
{
    const char *us = strchr(id, '_');
    size_t i;

    if (us == NULL || cap < 54) {
        return 0;
    }
    for (i = 1; i <= 48; i++) {
        if (!isxdigit((unsigned char)us[i]) || isupper((unsigned char)us[i])) {
            return 0;
        }
    }
    if (us[49] != '_') {
        return 0;
    }
    snprintf(rid, cap, "resp_%.48s", us + 1);
    return 1;
}

/* Request */

/* A message item's content to canonical content: a string as it is,
 * parts (input_text, output_text, input_image) to text and image_url
 * parts; text alone becomes a string so that it reaches every provider.
 * NULL with *err for a part the gateway cannot carry. */
static json_t *
message_content(json_t *content, const char **err)
{
    json_t *parts, *p;
    mf_buf_t text = {0};
    size_t i;
    int only_text = 1;

    if (json_is_string(content)) {
        return json_incref(content);
    }
    if (!json_is_array(content)) {
        *err = "input: a message's content must be a string or a list of "
               "content parts";
        return NULL;
    }
    parts = json_array();
    json_array_foreach(content, i, p)
    {
        const char *type = json_string_value(json_object_get(p, "type"));
        json_t *t = json_object_get(p, "text");

        if (type != NULL &&
            (strcmp(type, "input_text") == 0 ||
             strcmp(type, "output_text") == 0 || strcmp(type, "text") == 0) &&
            json_is_string(t)) {
            json_t *part = mf_json_pack("{s:s,s:O}", "type", "text", "text", t);

            if (json_is_object(json_object_get(p, "cache_control"))) {
                json_object_set(part, "cache_control",
                                json_object_get(p, "cache_control"));
                only_text = 0;
            }
            json_array_append_new(parts, part);
            if (text.len > 0) {
                mf_buf_append(&text, "\n", 1);
            }
            mf_buf_append(&text, json_string_value(t), json_string_length(t));
        } else if (type != NULL && strcmp(type, "refusal") == 0) {
            continue; /* an earlier answer's refusal: nothing to resend */
        } else if (type != NULL && strcmp(type, "input_image") == 0 &&
                   json_is_string(json_object_get(p, "image_url"))) {
            json_t *img =
                mf_json_pack("{s:O}", "url", json_object_get(p, "image_url"));

            if (json_is_string(json_object_get(p, "detail"))) {
                json_object_set(img, "detail", json_object_get(p, "detail"));
            }
            json_array_append_new(parts,
                                  mf_json_pack("{s:s,s:o}", "type", "image_url",
                                               "image_url", img));
            only_text = 0;
        } else {
            *err = "input: content parts of type input_file, or images "
                   "given by file_id, are not supported by this gateway; "
                   "send input_text, or input_image with an image_url";
            json_decref(parts);
            mf_buf_free(&text);
            return NULL;
        }
    }
    if (only_text) {
        json_t *s = json_stringn(text.data ? text.data : "", text.len);

        json_decref(parts);
        mf_buf_free(&text);
        return s;
    }
    mf_buf_free(&text);
    return parts;
}

/* The assistant message function calls attach to: the last message when
 * it is an assistant's without tool results after it, else a new one. */
static json_t *
assistant_for_calls(json_t *msgs)
{
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1), *m;
    const char *role = json_string_value(json_object_get(last, "role"));

    if (role != NULL && strcmp(role, "assistant") == 0) {
        return last;
    }
    m = mf_json_pack("{s:s,s:n}", "role", "assistant", "content");
    json_array_append_new(msgs, m);
    return m;
}

/* The assistant message a reasoning item joins: the last message when it
 * is an assistant's holding nothing yet but reasoning, else a new one.
 * The reasoning then comes before the text or calls that follow it. */
static json_t *
assistant_for_reasoning(json_t *msgs)
{
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1), *m;
    const char *role = json_string_value(json_object_get(last, "role"));

    if (role != NULL && strcmp(role, "assistant") == 0 &&
        json_is_null(json_object_get(last, "content")) &&
        json_object_get(last, "tool_calls") == NULL) {
        return last;
    }
    m = mf_json_pack("{s:s,s:n}", "role", "assistant", "content");
    json_array_append_new(msgs, m);
    return m;
}

/* Whether m is an assistant message holding only reasoning items (a
 * message item that follows takes it over). */
static int
reasoning_only(json_t *m)
{
    const char *role = json_string_value(json_object_get(m, "role"));

    return role != NULL && strcmp(role, "assistant") == 0 &&
           json_is_null(json_object_get(m, "content")) &&
           json_object_get(m, "tool_calls") == NULL &&
           json_object_get(m, "reasoning_items") != NULL;
}

/* A custom_tool_call or local_shell_call input item (an earlier turn's
 * call of a custom or local_shell tool) as the canonical function call
 * the tool became (tools_of): a custom call's input as the argument
 * "input", a local shell call's exec action (less its type) as the
 * arguments. */
static int
tool_call_item(json_t *msgs, json_t *item, const char *type, const char **err)
{
    json_t *m, *calls, *args, *id = json_object_get(item, "call_id");
    const char *name;
    char *text;

    if (!json_is_string(id)) {
        id = json_object_get(item, "id");
    }
    if (strcmp(type, "custom_tool_call") == 0) {
        json_t *in = json_object_get(item, "input");

        name = json_string_value(json_object_get(item, "name"));
        if (!json_is_string(id) || name == NULL || !json_is_string(in)) {
            *err = "input: a custom_tool_call item needs call_id, name and "
                   "input";
            return MF_ERR;
        }
        args = mf_json_pack("{s:O}", "input", in);
    } else {
        json_t *action = json_object_get(item, "action");

        name = SHELL_TOOL;
        if (!json_is_string(id) ||
            !json_is_array(json_object_get(action, "command"))) {
            *err = "input: a local_shell_call item needs call_id and an exec "
                   "action with a command";
            return MF_ERR;
        }
        args = json_deep_copy(action);
        json_object_del(args, "type");
    }
    text = mf_json_dumps(args, JSON_COMPACT);
    json_decref(args);
    m = assistant_for_calls(msgs);
    calls = json_object_get(m, "tool_calls");
    if (calls == NULL) {
        calls = json_array();
        json_object_set_new(m, "tool_calls", calls);
    }
    json_array_append_new(calls,
                          mf_json_pack("{s:O,s:s,s:{s:s,s:s}}", "id", id,
                                       "type", "function", "function", "name",
                                       name, "arguments", text ? text : "{}"));
    free(text);
    return MF_OK;
}

/* One input item appended to the canonical messages; MF_ERR with *err. */
static int
input_item(json_t *msgs, json_t *item, const char **err)
{
    const char *type = json_string_value(json_object_get(item, "type"));
    const char *role = json_string_value(json_object_get(item, "role"));

    if (type == NULL || strcmp(type, "message") == 0) {
        json_t *content, *last;

        if (role == NULL ||
            (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
             strcmp(role, "system") != 0 && strcmp(role, "developer") != 0)) {
            *err = "input: each message item needs a role of user, "
                   "assistant, system or developer";
            return MF_ERR;
        }
        content = message_content(json_object_get(item, "content"), err);
        if (content == NULL) {
            return MF_ERR;
        }
        last = json_array_get(msgs, json_array_size(msgs) - 1);
        if (strcmp(role, "assistant") == 0 && reasoning_only(last)) {
            /* the answer its reasoning item came before */
            json_object_set_new(last, "content", content);
            return MF_OK;
        }
        json_array_append_new(
            msgs, mf_json_pack("{s:s,s:o}", "role", role, "content", content));
        return MF_OK;
    }
    if (strcmp(type, "custom_tool_call") == 0 ||
        strcmp(type, "local_shell_call") == 0) {
        return tool_call_item(msgs, item, type, err);
    }
    if (strcmp(type, "custom_tool_call_output") == 0 ||
        strcmp(type, "local_shell_call_output") == 0) {
        /* a local_shell_call_output may name its call by id */
        json_t *o = json_deep_copy(item);
        int rc;

        if (!json_is_string(json_object_get(o, "call_id")) &&
            json_is_string(json_object_get(o, "id"))) {
            json_object_set(o, "call_id", json_object_get(o, "id"));
        }
        json_object_set_new(o, "type", json_string("function_call_output"));
        rc = input_item(msgs, o, err);
        json_decref(o);
        return rc;
    }
    if (strcmp(type, "function_call") == 0) {
        json_t *m, *calls, *id = json_object_get(item, "call_id");
        json_t *name = json_object_get(item, "name");
        json_t *args = json_object_get(item, "arguments");

        if (!json_is_string(id) || !json_is_string(name)) {
            *err = "input: a function_call item needs call_id and name";
            return MF_ERR;
        }
        m = assistant_for_calls(msgs);
        calls = json_object_get(m, "tool_calls");
        if (calls == NULL) {
            calls = json_array();
            json_object_set_new(m, "tool_calls", calls);
        }
        json_array_append_new(
            calls, mf_json_pack(
                       "{s:O,s:s,s:{s:O,s:s}}", "id", id, "type", "function",
                       "function", "name", name, "arguments",
                       json_is_string(args) ? json_string_value(args) : "{}"));
        return MF_OK;
    }
    if (strcmp(type, "function_call_output") == 0) {
        json_t *id = json_object_get(item, "call_id");
        json_t *out = json_object_get(item, "output"), *content;

        if (!json_is_string(id)) {
            *err = "input: a function_call_output item needs call_id";
            return MF_ERR;
        }
        content =
            json_is_string(out) ? json_incref(out) : message_content(out, err);
        if (content == NULL) {
            return MF_ERR;
        }
        json_array_append_new(msgs, mf_json_pack("{s:s,s:O,s:o}", "role",
                                                 "tool", "tool_call_id", id,
                                                 "content", content));
        return MF_OK;
    }
    if (strcmp(type, "reasoning") == 0) {
        /* an earlier answer's reasoning, kept as it came (its
         * encrypted_content is what lets the provider that made it go on
         * from it) on the assistant message it belongs to */
        json_t *m, *list;

        if (!json_is_array(json_object_get(item, "summary"))) {
            *err = "input: a reasoning item needs a summary (a list of "
                   "summary_text parts, possibly empty)";
            return MF_ERR;
        }
        m = assistant_for_reasoning(msgs);
        list = json_object_get(m, "reasoning_items");
        if (list == NULL) {
            list = json_array();
            json_object_set_new(m, "reasoning_items", list);
        }
        json_array_append_new(list, json_deep_copy(item));
        return MF_OK;
    }
    *err = "input: this item type is not supported by this gateway; send "
           "message, function_call, function_call_output, reasoning, "
           "custom_tool_call, custom_tool_call_output, local_shell_call and "
           "local_shell_call_output items";
    return MF_ERR;
}

/* Built-in tools only OpenAI's own service runs, refused by name. */
#define BUILTIN(t)                                                             \
    {                                                                          \
        t, "tools: " t " is a built-in tool that runs only on OpenAI's own "   \
           "Responses API; this gateway serves function, custom and "          \
           "local_shell tools"                                                 \
    }
static const struct {
    const char *type, *err;
} builtin_tools[] = {
    BUILTIN("web_search"),
    BUILTIN("web_search_preview"),
    BUILTIN("file_search"),
    BUILTIN("computer_use_preview"),
    BUILTIN("computer_use"),
    BUILTIN("code_interpreter"),
    BUILTIN("image_generation"),
    BUILTIN("mcp"),
    {NULL, NULL},
};
#undef BUILTIN

/* A custom (freeform) tool as a function tool taking its text as the one
 * string parameter "input"; its format (a grammar) goes into the
 * description for the model to follow (no provider but OpenAI enforces
 * it). */
static json_t *
custom_function(json_t *t)
{
    json_t *f = json_object_get(t, "format"), *fn;
    const char *desc = json_string_value(json_object_get(t, "description"));
    const char *syntax = json_string_value(json_object_get(f, "syntax"));
    const char *def = json_string_value(json_object_get(f, "definition"));
    mf_buf_t d = {0};

    mf_buf_printf(&d,
                  "%s%sThe whole input goes in the string parameter "
                  "\"input\", as free text.",
                  desc ? desc : "", desc && desc[0] ? "\n\n" : "");
    if (def != NULL) {
        mf_buf_printf(&d, " It must follow this %s grammar:\n",
                      syntax ? syntax : "");
        mf_buf_append(&d, def, strlen(def));
    }
    fn = mf_json_pack("{s:O,s:s%,s:{s:s,s:{s:{s:s}},s:[s]}}", "name",
                      json_object_get(t, "name"), "description",
                      d.data ? d.data : "", d.len, "parameters", "type",
                      "object", "properties", "input", "type", "string",
                      "required", "input");
    mf_buf_free(&d);
    return fn;
}

/* local_shell as a function tool whose arguments are the exec action. */
static json_t *
shell_function(void)
{
    return mf_json_pack(
        "{s:s,s:s,s:{s:s,s:{s:{s:s,s:{s:s}},s:{s:s},s:{s:s}},s:[s]}}", "name",
        SHELL_TOOL, "description",
        "Runs a command on the user's machine and returns its output. "
        "command is the argument list (the program first, e.g. "
        "[\"bash\", \"-lc\", \"ls -la\"]); working_directory and timeout_ms "
        "are optional.",
        "parameters", "type", "object", "properties", "command", "type",
        "array", "items", "type", "string", "working_directory", "type",
        "string", "timeout_ms", "type", "integer", "required", "command");
}

/* Tools to canonical function tools: function tools as they are, custom
 * and local_shell ones as functions (their names noted in kinds, name to
 * "custom" or "local_shell", so that the answer's calls go back to the
 * client as custom_tool_call and local_shell_call items); NULL with *err
 * for another kind. */
static json_t *
tools_of(json_t *tools, json_t *kinds, const char **err)
{
    json_t *out = json_array(), *t;
    size_t i, k;

    json_array_foreach(tools, i, t)
    {
        const char *type = json_string_value(json_object_get(t, "type"));
        json_t *fn;

        if (type != NULL && strcmp(type, "local_shell") == 0) {
            json_object_set_new(kinds, SHELL_TOOL, json_string("local_shell"));
            json_array_append_new(out,
                                  mf_json_pack("{s:s,s:o}", "type", "function",
                                               "function", shell_function()));
            continue;
        }
        if (type != NULL && strcmp(type, "custom") == 0 &&
            json_is_string(json_object_get(t, "name"))) {
            json_object_set_new(kinds,
                                json_string_value(json_object_get(t, "name")),
                                json_string("custom"));
            json_array_append_new(out,
                                  mf_json_pack("{s:s,s:o}", "type", "function",
                                               "function", custom_function(t)));
            continue;
        }
        if (type == NULL || strcmp(type, "function") != 0 ||
            !json_is_string(json_object_get(t, "name"))) {
            *err = "tools: each tool needs a type (function, custom or "
                   "local_shell) and a function or custom tool a name";
            for (k = 0; type != NULL && builtin_tools[k].type != NULL; k++) {
                if (strcmp(type, builtin_tools[k].type) == 0) {
                    *err = builtin_tools[k].err;
                }
            }
            json_decref(out);
            return NULL;
        }
        fn = mf_json_pack("{s:O}", "name", json_object_get(t, "name"));
        if (json_is_string(json_object_get(t, "description"))) {
            json_object_set(fn, "description",
                            json_object_get(t, "description"));
        }
        json_object_set_new(fn, "parameters",
                            json_is_object(json_object_get(t, "parameters"))
                                ? json_incref(json_object_get(t, "parameters"))
                                : mf_json_pack("{s:s}", "type", "object"));
        if (json_is_boolean(json_object_get(t, "strict"))) {
            json_object_set(fn, "strict", json_object_get(t, "strict"));
        }
        json_array_append_new(
            out, mf_json_pack("{s:s,s:o}", "type", "function", "function", fn));
    }
    return out;
}

/* text.format to response_format; NULL when there is none to send. */
static json_t *
format_of(json_t *text)
{
    json_t *f = json_object_get(text, "format");
    const char *type = json_string_value(json_object_get(f, "type"));
    json_t *js;

    if (type == NULL || strcmp(type, "text") == 0) {
        return NULL;
    }
    if (strcmp(type, "json_object") == 0) {
        return mf_json_pack("{s:s}", "type", "json_object");
    }
    if (strcmp(type, "json_schema") != 0) {
        return NULL;
    }
    js = json_is_string(json_object_get(f, "name"))
             ? mf_json_pack("{s:O}", "name", json_object_get(f, "name"))
             : mf_json_pack("{s:s}", "name", "response");
    if (json_is_object(json_object_get(f, "schema"))) {
        json_object_set(js, "schema", json_object_get(f, "schema"));
    }
    if (json_is_boolean(json_object_get(f, "strict"))) {
        json_object_set(js, "strict", json_object_get(f, "strict"));
    }
    if (json_is_string(json_object_get(f, "description"))) {
        json_object_set(js, "description", json_object_get(f, "description"));
    }
    return mf_json_pack("{s:s,s:o}", "type", "json_schema", "json_schema", js);
}

/* Whether the request's include asks for reasoning.encrypted_content:
 * reasoning items then carry it in the answer. */
static int
wants_encrypted(json_t *in)
{
    json_t *v;
    size_t i;

    json_array_foreach(json_object_get(in, "include"), i, v)
    {
        if (json_is_string(v) &&
            strcmp(json_string_value(v), "reasoning.encrypted_content") == 0) {
            return 1;
        }
    }
    return 0;
}

/* The settings that map one to one, and the rest of the request. */
static int
settings(json_t *in, json_t *out, json_t *kinds, const char **err)
{
    static const char *const same[] = {
        "temperature", "top_p", "parallel_tool_calls", "user", "stream", NULL};
    json_t *v, *tc;
    size_t i;

    for (i = 0; same[i] != NULL; i++) {
        if ((v = json_object_get(in, same[i])) != NULL && !json_is_null(v)) {
            json_object_set(out, same[i], v);
        }
    }
    if (json_is_integer(v = json_object_get(in, "max_output_tokens"))) {
        json_object_set(out, "max_tokens", v);
    }
    if (json_is_string(
            v = json_object_get(json_object_get(in, "reasoning"), "effort"))) {
        json_object_set(out, "reasoning_effort", v);
    }
    if (json_is_array(v = json_object_get(in, "include")) &&
        json_array_size(v) > 0) {
        json_object_set(out, "include", v); /* read by the Responses wire */
    }
    if (!wants_encrypted(in) && !json_is_false(json_object_get(in, "store")) &&
        json_is_string(
            json_object_get(json_object_get(in, "reasoning"), "effort"))) {
        /* a stored answer keeps its reasoning items' encrypted_content,
         * for the turn that continues it (previous_response_id); asked of
         * reasoning models only (others refuse it) */
        json_t *inc = json_is_array(v) ? json_copy(v) : json_array();

        json_array_append_new(inc, json_string("reasoning.encrypted_content"));
        json_object_set_new(out, "include", inc);
    }
    if ((v = format_of(json_object_get(in, "text"))) != NULL) {
        json_object_set_new(out, "response_format", v);
    }
    if (json_array_size(json_object_get(in, "tools")) > 0) {
        if ((v = tools_of(json_object_get(in, "tools"), kinds, err)) == NULL) {
            return MF_ERR;
        }
        json_object_set_new(out, "tools", v);
        tc = json_object_get(in, "tool_choice");
        if (json_is_string(tc)) {
            json_object_set(out, "tool_choice", tc);
        } else if (json_is_string(json_object_get(tc, "type")) &&
                   strcmp(json_string_value(json_object_get(tc, "type")),
                          "local_shell") == 0) {
            json_object_set_new(out, "tool_choice",
                                mf_json_pack("{s:s,s:{s:s}}", "type",
                                             "function", "function", "name",
                                             SHELL_TOOL));
        } else if (json_is_string(json_object_get(tc, "name"))) {
            json_object_set_new(out, "tool_choice",
                                mf_json_pack("{s:s,s:{s:O}}", "type",
                                             "function", "function", "name",
                                             json_object_get(tc, "name")));
        }
    }
    return MF_OK;
}

/* The stored answer previous_response_id names: its conversation's input
 * items and its output items, joined (a new reference), or NULL. */
static json_t *
previous_items(const mf_proto_call_t *call, const char *id)
{
    char *text = call->store_get ? call->store_get(call, id) : NULL;
    json_t *j = text ? json_loads(text, 0, NULL) : NULL, *items;

    free(text);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    items = json_deep_copy(json_object_get(j, "input"));
    if (!json_is_array(items)) {
        json_decref(items);
        items = json_array();
    }
    json_array_extend(
        items, json_object_get(json_object_get(j, "response"), "output"));
    json_decref(j);
    return items;
}

/* The item of a stored entry (its conversation or its output) whose id
 * is id, or NULL (borrowed from j). */
static json_t *
entry_item(json_t *j, const char *id)
{
    json_t *lists[2], *it;
    size_t i, k;

    lists[0] = json_object_get(j, "input");
    lists[1] = json_object_get(json_object_get(j, "response"), "output");
    for (k = 0; k < 2; k++) {
        json_array_foreach(lists[k], i, it)
        {
            const char *iid = json_string_value(json_object_get(it, "id"));

            if (iid != NULL && strcmp(iid, id) == 0) {
                return it;
            }
        }
    }
    return NULL;
}

/* Each item_reference among items replaced by the item it names: one of
 * the conversation so far (the previous response's items included), or
 * one of the stored response the id says it belongs to (the ids the
 * gateway gives name it). MF_ERR with *err for an id not stored. */
static int
resolve_references(const mf_proto_call_t *call, json_t *items, const char **err)
{
    json_t *it, *other, *found, *j;
    size_t i, k;
    char rid[64], *text;

    json_array_foreach(items, i, it)
    {
        const char *type = json_string_value(json_object_get(it, "type"));
        const char *id = json_string_value(json_object_get(it, "id"));

        if (type == NULL || strcmp(type, "item_reference") != 0) {
            continue;
        }
        if (id == NULL) {
            *err = "input: an item_reference needs the id of a stored item";
            return MF_ERR;
        }
        found = NULL;
        json_array_foreach(items, k, other)
        {
            const char *oid = json_string_value(json_object_get(other, "id"));
            const char *ot = json_string_value(json_object_get(other, "type"));

            if (k != i && oid != NULL && strcmp(oid, id) == 0 &&
                (ot == NULL || strcmp(ot, "item_reference") != 0)) {
                found = json_deep_copy(other);
                break;
            }
        }
        if (found == NULL && item_owner(id, rid, sizeof(rid)) &&
            call->store_get != NULL &&
            (text = call->store_get(call, rid)) != NULL) {
            j = json_loads(text, 0, NULL);
            free(text);
            found = json_deep_copy(entry_item(j, id));
            json_decref(j);
        }
        if (found == NULL) {
            *err = "input: an item_reference names an item not stored here "
                   "(unknown, expired, deleted, another's, or of a response "
                   "made with store: false); send the item itself";
            return MF_ERR;
        }
        json_array_set_new(items, i, found);
    }
    return MF_OK;
}

/* The request's settings a Response object says back. */
static const char *const echo_keys[] = {"instructions",
                                        "tools",
                                        "tool_choice",
                                        "temperature",
                                        "top_p",
                                        "metadata",
                                        "text",
                                        "parallel_tool_calls",
                                        "reasoning",
                                        "user",
                                        "store",
                                        "max_output_tokens",
                                        "truncation",
                                        "previous_response_id",
                                        NULL};

static json_t *
request_echo(json_t *in)
{
    json_t *echo = json_object(), *v;
    size_t i;

    for (i = 0; echo_keys[i] != NULL; i++) {
        v = json_object_get(in, echo_keys[i]);
        if (v != NULL && !json_is_null(v)) {
            json_object_set(echo, echo_keys[i], v);
        }
    }
    return echo;
}

const char mf_proto_prev_unknown[] =
    "previous_response_id: no response with this id is stored here "
    "(unknown, expired, deleted, made with store: false, or answered by "
    "another gateway process)";

static json_t *
responses_request(const mf_proto_call_t *call, json_t *in, const char **err)
{
    json_t *out, *msgs, *v, *item, *items, *kinds;
    const char *prev;
    size_t i;

    if (!json_is_string(json_object_get(in, "model"))) {
        return json_incref(in);
    }
    v = json_object_get(in, "input");
    if (!json_is_string(v) && json_array_size(v) == 0) {
        *err = "input: Field required (a string or a non-empty list of "
               "items)";
        return NULL;
    }
    /* the conversation as input items: the stored one first */
    prev = json_string_value(json_object_get(in, "previous_response_id"));
    items = prev ? previous_items(call, prev) : json_array();
    if (items == NULL) {
        *err = mf_proto_prev_unknown;
        return NULL;
    }
    if (json_is_string(v)) {
        json_array_append_new(
            items, mf_json_pack("{s:s,s:O}", "role", "user", "content", v));
    } else {
        json_array_extend(items, v);
        if (resolve_references(call, items, err) != MF_OK) {
            json_decref(items);
            return NULL;
        }
    }
    out = mf_json_pack("{s:O}", "model", json_object_get(in, "model"));
    msgs = json_array();
    json_object_set_new(out, "messages", msgs);
    if (json_is_string(json_object_get(in, "instructions"))) {
        json_array_append_new(
            msgs, mf_json_pack("{s:s,s:O}", "role", "system", "content",
                               json_object_get(in, "instructions")));
    }
    json_array_foreach(items, i, item)
    {
        if (input_item(msgs, item, err) != MF_OK) {
            json_decref(items);
            json_decref(out);
            return NULL;
        }
    }
    /* reasoning with no answer after it: no provider takes it alone */
    for (i = json_array_size(msgs); i-- > 0;) {
        if (reasoning_only(json_array_get(msgs, i))) {
            json_array_remove(msgs, i);
        }
    }
    kinds = json_object();
    if (settings(in, out, kinds, err) != MF_OK) {
        json_decref(kinds);
        json_decref(items);
        json_decref(out);
        return NULL;
    }
    if (call->memo != NULL) {
        /* the settings the answer says back, and (unless store: false)
         * the conversation to store with it */
        json_t *memo = mf_json_pack("{s:o,s:b}", "echo", request_echo(in),
                                    "enc", wants_encrypted(in));

        if (memo != NULL && !json_is_false(json_object_get(in, "store"))) {
            json_object_set(memo, "items", items);
        }
        if (memo != NULL && json_object_size(kinds) > 0) {
            /* the tools whose calls go back as custom_tool_call and
             * local_shell_call items */
            json_object_set(memo, "kinds", kinds);
        }
        json_decref(items);
        json_decref(*call->memo);
        *call->memo = memo;
    } else {
        json_decref(items);
    }
    json_decref(kinds);
    return out;
}

/* A new response id: resp_ and 24 random bytes in hex (stored answers
 * are found by it, so it must not repeat). */
static void
response_id(char *buf, size_t cap)
{
    static const char hexd[] = "0123456789abcdef";
    unsigned char b[24];
    char hex[49];
    size_t i;

    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        double t = mf_wall_time() * 1e6;

        for (i = 0; i < sizeof(b); i++) {
            b[i] = (unsigned char)((uint64_t)t >> ((i % 8) * 8)) ^
                   (unsigned char)rand();
        }
    }
    for (i = 0; i < sizeof(b); i++) {
        hex[2 * i] = hexd[b[i] >> 4];
        hex[2 * i + 1] = hexd[b[i] & 15];
    }
    hex[48] = '\0';
    snprintf(buf, cap, "resp_%s", hex);
}

/* The encrypted_content of the reasoning items among items (an output
 * list) taken out: what a client that did not ask for it with include
 * gets, the stored answer keeping it. 1 when there was some. */
static int
strip_encrypted(json_t *items)
{
    json_t *it;
    size_t i;
    int n = 0;

    json_array_foreach(items, i, it)
    {
        n += json_object_del(it, "encrypted_content") == 0;
    }
    return n > 0;
}

/* Keeps a finished Response with the conversation that led to it (the
 * request's memo), under its id, when the config keeps any; its
 * reasoning items keep their encrypted_content, which is then taken out
 * of response (the client's) unless enc. */
static void
store_response(const mf_proto_call_t *call, json_t *input, json_t *response,
               int enc)
{
    const char *id = json_string_value(json_object_get(response, "id"));
    char *in, *out;

    if (call == NULL || call->store_put == NULL || input == NULL ||
        id == NULL) {
        if (!enc) {
            strip_encrypted(json_object_get(response, "output"));
        }
        return;
    }
    {
        /* every stored item has an id (input_items lists them by it, an
         * item_reference names them by it) */
        json_t *it;
        size_t i;
        char iid[128];

        json_array_foreach(input, i, it)
        {
            if (json_is_object(it) &&
                !json_is_string(json_object_get(it, "id"))) {
                input_item_id(iid, sizeof(iid),
                              json_string_value(json_object_get(it, "type")),
                              id, i);
                json_object_set_new(it, "id", json_string(iid));
            }
        }
    }
    /* {"input":...,"response":...} from the two texts: the Response's is
     * the client's answer too (call->text), written once */
    in = mf_json_dumps(input, JSON_COMPACT);
    out = mf_json_dumps(response, JSON_COMPACT);
    if (in != NULL && out != NULL) {
        mf_buf_t b = {0};

        mf_buf_append(&b, "{\"input\":", 9);
        mf_buf_append(&b, in, strlen(in));
        mf_buf_append(&b, ",\"response\":", 12);
        mf_buf_append(&b, out, strlen(out));
        mf_buf_append(&b, "}", 1);
        call->store_put(call, id, (mf_str_t){b.data, b.len});
        mf_buf_free(&b);
    }
    free(in);
    if (!enc && strip_encrypted(json_object_get(response, "output"))) {
        free(out); /* the stored text had it: the client's has not */
        out = mf_json_dumps(response, JSON_COMPACT);
    }
    if (out != NULL && call->text != NULL) {
        free(*call->text);
        *call->text = out;
    } else {
        free(out);
    }
}

/* Response */

static json_t *
usage_json(const mf_usage_t *u)
{
    int64_t in = u->prompt_tokens > 0 ? u->prompt_tokens : 0;
    int64_t out = u->completion_tokens > 0 ? u->completion_tokens : 0;

    return mf_json_pack(
        "{s:I,s:{s:I},s:I,s:{s:I},s:I}", "input_tokens", (json_int_t)in,
        "input_tokens_details", "cached_tokens",
        (json_int_t)(u->cached_tokens > 0 ? u->cached_tokens : 0),
        "output_tokens", (json_int_t)out, "output_tokens_details",
        "reasoning_tokens",
        (json_int_t)(u->reasoning_tokens > 0 ? u->reasoning_tokens : 0),
        "total_tokens", (json_int_t)(in + out));
}

/* The Response object around output items (taken); usage NULL while in
 * progress; finish the canonical finish reason. */
static json_t *
response_obj(const char *id, const char *model, json_int_t created,
             json_t *output, const mf_usage_t *usage, const char *finish,
             const char *status, json_t *echo)
{
    json_t *r, *incomplete = json_null(), *v;
    const char *k;

    if (finish != NULL && strcmp(finish, "length") == 0) {
        status = "incomplete";
        incomplete = mf_json_pack("{s:s}", "reason", "max_output_tokens");
    } else if (finish != NULL && strcmp(finish, "content_filter") == 0) {
        status = "incomplete";
        incomplete = mf_json_pack("{s:s}", "reason", "content_filter");
    }
    r = mf_json_pack(
        "{s:s,s:s,s:I,s:s,s:s,s:o,s:n,s:o,s:n,s:{},s:b,s:n,s:n,s:s,"
        "s:[],s:{s:{s:s}}}",
        "id", id, "object", "response", "created_at", created, "status", status,
        "model", model, "output", output, "error", "incomplete_details",
        incomplete, "instructions", "metadata", "parallel_tool_calls", 1,
        "temperature", "top_p", "tool_choice", "auto", "tools", "text",
        "format", "type", "text");
    json_object_set_new(r, "usage", usage ? usage_json(usage) : json_null());
    /* what the request set, said back as OpenAI's Response object does */
    json_object_foreach(echo, k, v)
    {
        json_object_set(r, k, v);
    }
    return r;
}

static json_t *
message_item(const char *id, const char *text, const char *status)
{
    return mf_json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:s,s:[]}]}", "type",
                        "message", "id", id, "status", status, "role",
                        "assistant", "content", "type", "output_text", "text",
                        text, "annotations");
}

static json_t *
call_item(const char *id, const char *call_id, const char *name,
          const char *args, const char *status)
{
    return mf_json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "function_call",
                        "id", id, "call_id", call_id, "name", name, "arguments",
                        args, "status", status);
}

/* What the tool a call names was in the request: "custom",
 * "local_shell", or NULL for a function tool (memo's kinds). */
static const char *
call_kind(json_t *memo, const char *name)
{
    return name ? json_string_value(
                      json_object_get(json_object_get(memo, "kinds"), name))
                : NULL;
}

/* The id kind of a call's output item. */
static const char *
call_id_kind(const char *kind)
{
    return kind == NULL ? "fc" : strcmp(kind, "custom") == 0 ? "ctc" : "lsh";
}

/* A call of a custom or local_shell tool as the client's item (kind as
 * call_kind says): a custom_tool_call with the text of the argument
 * "input" (the arguments as they came when the model gave no such
 * string), or a local_shell_call with the arguments as its exec action
 * (a command given as one string becomes a list of it). New reference. */
static json_t *
kind_item(const char *kind, const char *id, const char *call_id,
          const char *name, const char *args, const char *status)
{
    json_t *a = json_loads(args, 0, NULL), *item, *cmd, *v, *action;

    if (strcmp(kind, "custom") == 0) {
        json_t *in = json_object_get(a, "input");

        item = mf_json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type",
                            "custom_tool_call", "id", id, "call_id", call_id,
                            "name", name, "input",
                            json_is_string(in) ? json_string_value(in) : args,
                            "status", status);
        json_decref(a);
        return item;
    }
    cmd = json_object_get(a, "command");
    cmd = json_is_array(cmd)    ? json_incref(cmd)
          : json_is_string(cmd) ? mf_json_pack("[O]", cmd)
                                : json_array();
    action = mf_json_pack("{s:s,s:o,s:o,s:n,s:n,s:n}", "type", "exec",
                          "command", cmd, "env", json_object(), "timeout_ms",
                          "working_directory", "user");
    if (json_is_object(v = json_object_get(a, "env"))) {
        json_object_set(action, "env", v);
    }
    if (json_is_integer(v = json_object_get(a, "timeout_ms"))) {
        json_object_set(action, "timeout_ms", v);
    }
    if (json_is_string(v = json_object_get(a, "working_directory"))) {
        json_object_set(action, "working_directory", v);
    }
    if (json_is_string(v = json_object_get(a, "user"))) {
        json_object_set(action, "user", v);
    }
    item = mf_json_pack("{s:s,s:s,s:s,s:s,s:o}", "type", "local_shell_call",
                        "id", id, "call_id", call_id, "status", status,
                        "action", action);
    json_decref(a);
    return item;
}

static json_t *
reasoning_item(const char *id, const char *text)
{
    return mf_json_pack("{s:s,s:s,s:[{s:s,s:s}]}", "type", "reasoning", "id",
                        id, "summary", "type", "summary_text", "text", text);
}

/* The output item of one canonical reasoning item (ri, as the provider
 * gave it: its summary parts, its encrypted_content when enc, the client
 * having asked for it with include) under the gateway's id; text is the
 * summary when ri has none. New reference. */
static json_t *
reasoning_out(const char *id, json_t *ri, const char *text, int enc)
{
    json_t *summary = json_object_get(ri, "summary"), *item, *ec;

    if (json_is_array(summary)) {
        item = mf_json_pack("{s:s,s:s,s:O}", "type", "reasoning", "id", id,
                            "summary", summary);
    } else if (text != NULL && text[0] != '\0') {
        item = reasoning_item(id, text);
    } else {
        item = mf_json_pack("{s:s,s:s,s:[]}", "type", "reasoning", "id", id,
                            "summary");
    }
    if (enc && json_is_string(ec = json_object_get(ri, "encrypted_content"))) {
        json_object_set(item, "encrypted_content", ec);
    }
    return item;
}

static json_t *
responses_response(const mf_proto_call_t *pc, json_t *c,
                   const mf_usage_t *usage)
{
    json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    const char *model = json_string_value(json_object_get(c, "model"));
    const char *text = json_string_value(json_object_get(msg, "content"));
    const char *think =
        json_string_value(json_object_get(msg, "reasoning_content"));
    json_t *created = json_object_get(c, "created"), *out = json_array();
    json_t *call, *memo;
    char rid[160], mid[160];
    size_t i;

    memo = pc->memo != NULL ? *pc->memo : NULL;
    response_id(rid, sizeof(rid));
    if (json_array_size(json_object_get(msg, "reasoning_items")) > 0) {
        json_t *ri;

        json_array_foreach(json_object_get(msg, "reasoning_items"), i, ri)
        {
            item_id(mid, sizeof(mid), "rs", rid, json_array_size(out));
            json_array_append_new(
                out, reasoning_out(mid, ri, i == 0 ? think : NULL, 1));
        }
    } else if (think != NULL && think[0] != '\0') {
        item_id(mid, sizeof(mid), "rs", rid, json_array_size(out));
        json_array_append_new(out, reasoning_item(mid, think));
    }
    if (text != NULL && text[0] != '\0') {
        item_id(mid, sizeof(mid), "msg", rid, json_array_size(out));
        json_array_append_new(out, message_item(mid, text, "completed"));
    }
    json_array_foreach(json_object_get(msg, "tool_calls"), i, call)
    {
        json_t *fn = json_object_get(call, "function");
        const char *id = json_string_value(json_object_get(call, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        const char *args = json_string_value(json_object_get(fn, "arguments"));

        const char *kind = call_kind(memo, name);

        item_id(mid, sizeof(mid), call_id_kind(kind), rid,
                json_array_size(out));
        json_array_append_new(
            out, kind != NULL
                     ? kind_item(kind, mid, id ? id : "call", name,
                                 args ? args : "{}", "completed")
                     : call_item(mid, id ? id : "call", name ? name : "",
                                 args ? args : "{}", "completed"));
    }
    out = response_obj(
        rid, model ? model : "",
        json_is_integer(created) ? json_integer_value(created)
                                 : (json_int_t)time(NULL),
        out, usage, json_string_value(json_object_get(choice, "finish_reason")),
        "completed", json_object_get(memo, "echo"));
    store_response(pc, json_object_get(memo, "items"), out,
                   json_is_true(json_object_get(memo, "enc")));
    return out;
}

/* Stream */

enum { ITEM_NONE = 0, ITEM_MESSAGE, ITEM_CALL, ITEM_REASONING };

/* Canonical chunks to response.* events. The open item's text (or
 * arguments) is kept to say it whole in its done events; closed items
 * gather in `output` for response.completed. */
typedef struct {
    int started;
    int item;       /* ITEM_* of the open output item */
    int call;       /* canonical tool call index of the open call */
    json_int_t seq; /* sequence_number of the next event */
    json_int_t created;
    json_t *output; /* closed items */
    mf_buf_t text;  /* the open item's text or arguments */
    char item_id[160];
    char call_id[128];
    char call_name[128];
    char finish[32];
    json_t *memo; /* {echo, items: the conversation to store}, or NULL */
    mf_proto_call_t call_copy; /* its config, for the store */
    char id[160];              /* resp_... */
    char model[256];
    json_t *ri;   /* the provider's reasoning item the open one closes with */
    int no_parts; /* the open reasoning item has no summary part */
    const char *call_kind; /* the open call's (call_kind), in memo */
    size_t said; /* bytes of the open custom call's input said in deltas */
} responses_stream_t;

static void
responses_stream_init(void *state, const mf_proto_call_t *call, mf_str_t model)
{
    responses_stream_t *s = state;

    memset(s, 0, sizeof(*s));
    if (call != NULL && call->memo != NULL && *call->memo != NULL) {
        s->memo = json_incref(*call->memo);
        s->call_copy = *call;
        s->call_copy.memo = NULL;
        s->call_copy.text = NULL;
    }
    s->call = -1;
    s->created = (json_int_t)time(NULL);
    s->output = json_array();
    snprintf(s->model, sizeof(s->model), "%.*s", (int)model.len, model.data);
}

static void
responses_stream_free(void *state)
{
    responses_stream_t *s = state;

    json_decref(s->output);
    s->output = NULL;
    json_decref(s->memo);
    s->memo = NULL;
    json_decref(s->ri);
    s->ri = NULL;
    mf_buf_free(&s->text);
}

/* One event from the text of its data object (compact JSON; NULL: "{}"):
 * its "type" and "sequence_number" set after its own members, the bytes
 * the tree with both set would give. A data object with either member
 * of its own goes through emit. */
static void
emit_text(responses_stream_t *s, mf_buf_t *out, const char *type,
          const char *text)
{
    size_t n = text != NULL ? strlen(text) : 0;
    char num[24];

    MF_PROTO_PUT_LIT(out, "event: ");
    mf_buf_append(out, type, strlen(type));
    MF_PROTO_PUT_LIT(out, "\ndata: ");
    if (n < 2 || text[0] != '{' || text[n - 1] != '}') {
        MF_PROTO_PUT_LIT(out,
                         "{}\n\n"); /* as emit says an object it cannot write */
        s->seq++;
        return;
    }
    mf_buf_append(out, text, n - 1); /* without its '}' */
    if (n > 2) {
        MF_PROTO_PUT_LIT(out, ",");
    }
    MF_PROTO_PUT_LIT(out, "\"type\":\"");
    mf_buf_append(out, type, strlen(type));
    MF_PROTO_PUT_LIT(out, "\",\"sequence_number\":");
    mf_buf_append(
        out, num,
        (size_t)snprintf(num, sizeof(num), "%lld", (long long)s->seq++));
    MF_PROTO_PUT_LIT(out, "}\n\n");
}

/* One event: its type and sequence number set here. data is taken. */
static void
emit(responses_stream_t *s, mf_buf_t *out, const char *type, json_t *data)
{
    char *text;

    if (json_object_get(data, "type") == NULL &&
        json_object_get(data, "sequence_number") == NULL) {
        text = mf_json_dumps(data, JSON_COMPACT);
        if (text != NULL) {
            emit_text(s, out, type, text);
            free(text);
            json_decref(data);
            return;
        }
    }
    json_object_set_new(data, "type", json_string(type));
    json_object_set_new(data, "sequence_number", json_integer(s->seq++));
    text = mf_json_dumps(data, JSON_COMPACT);
    mf_buf_printf(out, "event: %s\ndata: %s\n\n", type, text ? text : "{}");
    free(text);
    json_decref(data);
}

/* An event {"response": <the Response's text>}, as emit writes it; a
 * NULL text (a Response that cannot be written) as emit writes one. */
static void
emit_response(responses_stream_t *s, mf_buf_t *out, const char *type,
              const char *rtext)
{
    mf_buf_t b = {0};

    if (rtext == NULL) {
        emit_text(s, out, type, NULL);
        return;
    }
    MF_PROTO_PUT_LIT(&b, "{\"response\":");
    mf_buf_append(&b, rtext, strlen(rtext));
    MF_PROTO_PUT_LIT(&b, "}");
    mf_buf_append(&b, "", 1);
    emit_text(s, out, type, b.data);
    mf_buf_free(&b);
}

/* The Response so far, as the client sees it (encrypted_content only
 * when it asked); store_response strips a whole one itself. */
static json_t *
snapshot(responses_stream_t *s, const mf_usage_t *usage, const char *status)
{
    return response_obj(s->id, s->model, s->created, json_deep_copy(s->output),
                        usage, s->finish[0] ? s->finish : NULL, status,
                        json_object_get(s->memo, "echo"));
}

static json_t *
shown_snapshot(responses_stream_t *s, const mf_usage_t *usage,
               const char *status)
{
    json_t *r = snapshot(s, usage, status);

    if (!json_is_true(json_object_get(s->memo, "enc"))) {
        strip_encrypted(json_object_get(r, "output"));
    }
    return r;
}

static void
start(responses_stream_t *s, mf_buf_t *out)
{
    json_t *r;
    char *text;

    if (s->started) {
        return;
    }
    s->started = 1;
    response_id(s->id, sizeof(s->id));
    /* the same Response in both events: written once */
    r = shown_snapshot(s, NULL, "in_progress");
    text = mf_json_dumps(r, JSON_COMPACT);
    json_decref(r);
    emit_response(s, out, "response.created", text);
    emit_response(s, out, "response.in_progress", text);
    free(text);
}

/* Whether the client asked for reasoning.encrypted_content. */
static int
enc(responses_stream_t *s)
{
    return json_is_true(json_object_get(s->memo, "enc"));
}

static json_int_t
open_index(responses_stream_t *s)
{
    return (json_int_t)json_array_size(s->output);
}

/* An event {"item_id","output_index",<part>:0,<field>} (no part when
 * NULL): a delta, or the text or arguments of a done event; as
 * emit writes its tree (an invalid string: as emit writes a data object
 * that cannot be built). */
static void
field_event(responses_stream_t *s, mf_buf_t *out, const char *type,
            const char *part, const char *field, const char *t)
{
    mf_buf_t b = {0};
    char num[24];
    int rc;

    MF_PROTO_PUT_LIT(&b, "{\"item_id\":");
    rc = mf_proto_put_str(&b, s->item_id);
    MF_PROTO_PUT_LIT(&b, ",\"output_index\":");
    mf_buf_append(
        &b, num,
        (size_t)snprintf(num, sizeof(num), "%lld", (long long)open_index(s)));
    if (part != NULL) {
        MF_PROTO_PUT_LIT(&b, ",\"");
        mf_buf_append(&b, part, strlen(part));
        MF_PROTO_PUT_LIT(&b, "\":0");
    }
    MF_PROTO_PUT_LIT(&b, ",\"");
    mf_buf_append(&b, field, strlen(field));
    MF_PROTO_PUT_LIT(&b, "\":");
    rc |= mf_proto_put_str(&b, t);
    MF_PROTO_PUT_LIT(&b, "}");
    mf_buf_append(&b, "", 1);
    emit_text(s, out, type, rc == MF_OK ? b.data : NULL);
    mf_buf_free(&b);
}

/* A message item's events as text: added (the item in progress, empty)
 * when added, else a content part {"item_id","output_index",
 * "content_index":0,"part":{"type":"output_text","text","annotations":[]}}
 * with text; the bytes emit writes of the same trees. */
static void
part_event(responses_stream_t *s, mf_buf_t *out, const char *type, int added,
           json_int_t idx, const char *text)
{
    mf_buf_t b = {0};
    char num[24];
    int rc = MF_OK;
    size_t n = (size_t)snprintf(num, sizeof(num), "%lld", (long long)idx);

    if (added) {
        MF_PROTO_PUT_LIT(&b, "{\"output_index\":");
        mf_buf_append(&b, num, n);
        MF_PROTO_PUT_LIT(&b, ",\"item\":{\"type\":\"message\",\"id\":");
        rc |= mf_proto_put_str(&b, s->item_id);
        MF_PROTO_PUT_LIT(&b, ",\"status\":\"in_progress\",\"role\":"
                             "\"assistant\",\"content\":[]}}");
    } else {
        MF_PROTO_PUT_LIT(&b, "{\"item_id\":");
        rc |= mf_proto_put_str(&b, s->item_id);
        MF_PROTO_PUT_LIT(&b, ",\"output_index\":");
        mf_buf_append(&b, num, n);
        MF_PROTO_PUT_LIT(&b, ",\"content_index\":0,\"part\":{\"type\":"
                             "\"output_text\",\"text\":");
        rc |= mf_proto_put_str(&b, text);
        MF_PROTO_PUT_LIT(&b, ",\"annotations\":[]}}");
    }
    mf_buf_append(&b, "", 1);
    emit_text(s, out, type, rc == MF_OK ? b.data : NULL);
    mf_buf_free(&b);
}

static void
delta_event(responses_stream_t *s, mf_buf_t *out, const char *type,
            const char *part, const char *t)
{
    field_event(s, out, type, part, "delta", t);
}

static void
close_item(responses_stream_t *s, mf_buf_t *out)
{
    json_int_t idx = open_index(s);
    json_t *item = NULL;
    char *text = mf_xstrdup("");

    if (s->item == ITEM_NONE) {
        free(text);
        return;
    }
    if (s->text.len > 0) {
        free(text);
        text = mf_xmalloc(s->text.len + 1);
        memcpy(text, s->text.data, s->text.len);
        text[s->text.len] = '\0';
    }
    if (s->item == ITEM_MESSAGE) {
        field_event(s, out, "response.output_text.done", "content_index",
                    "text", text);
        part_event(s, out, "response.content_part.done", 0, idx, text);
        item = message_item(s->item_id, text, "completed");
    } else if (s->item == ITEM_CALL && s->call_kind != NULL) {
        item = kind_item(s->call_kind, s->item_id, s->call_id, s->call_name,
                         text, "completed");
        if (strcmp(s->call_kind, "custom") == 0) {
            /* what the deltas did not say yet (all of it when the
             * arguments were not {"input": ...} as they came) */
            json_t *whole = json_object_get(item, "input");
            const char *in = json_string_value(whole);
            size_t n = json_string_length(whole);

            if (n > s->said && ((unsigned char)in[s->said] & 0xC0) != 0x80) {
                emit(s, out, "response.custom_tool_call_input.delta",
                     mf_json_pack("{s:s,s:I,s:s%}", "item_id", s->item_id,
                                  "output_index", idx, "delta", in + s->said,
                                  n - s->said));
            }
            emit(s, out, "response.custom_tool_call_input.done",
                 mf_json_pack("{s:s,s:I,s:s}", "item_id", s->item_id,
                              "output_index", idx, "input", in));
        }
    } else if (s->item == ITEM_CALL) {
        field_event(s, out, "response.function_call_arguments.done", NULL,
                    "arguments", text);
        item =
            call_item(s->item_id, s->call_id, s->call_name, text, "completed");
    } else {
        if (!s->no_parts) {
            field_event(s, out, "response.reasoning_summary_text.done",
                        "summary_index", "text", text);
            emit(s, out, "response.reasoning_summary_part.done",
                 mf_json_pack("{s:s,s:I,s:i,s:{s:s,s:s}}", "item_id",
                              s->item_id, "output_index", idx, "summary_index",
                              0, "part", "type", "summary_text", "text", text));
        }
        s->no_parts = 0;
        item = s->ri != NULL ? reasoning_out(s->item_id, s->ri, text, 1)
                             : reasoning_item(s->item_id, text);
        json_decref(s->ri);
        s->ri = NULL;
    }
    {
        /* the closed item keeps its encrypted_content (the stored answer
         * needs it); the client has it when it asked */
        int hide =
            !enc(s) && json_object_get(item, "encrypted_content") != NULL;
        json_t *shown = hide ? json_deep_copy(item) : item;
        char *itext;
        mf_buf_t b = {0};
        char num[24];

        if (hide) {
            json_object_del(shown, "encrypted_content");
        }
        itext = mf_json_dumps(shown, JSON_COMPACT);
        if (hide) {
            json_decref(shown);
        }
        MF_PROTO_PUT_LIT(&b, "{\"output_index\":");
        mf_buf_append(
            &b, num,
            (size_t)snprintf(num, sizeof(num), "%lld", (long long)idx));
        MF_PROTO_PUT_LIT(&b, ",\"item\":");
        if (itext != NULL) {
            mf_buf_append(&b, itext, strlen(itext));
        }
        MF_PROTO_PUT_LIT(&b, "}");
        mf_buf_append(&b, "", 1);
        emit_text(s, out, "response.output_item.done",
                  itext != NULL ? b.data : NULL);
        free(itext);
        mf_buf_free(&b);
    }
    json_array_append_new(s->output, item);
    free(text);
    s->item = ITEM_NONE;
    s->call = -1;
    s->text.len = 0;
    s->said = 0;
}

static void
open_item(responses_stream_t *s, int type, mf_buf_t *out)
{
    json_int_t idx;
    json_t *item;

    close_item(s, out);
    idx = open_index(s);
    s->item = type;
    if (type == ITEM_MESSAGE) {
        item_id(s->item_id, sizeof(s->item_id), "msg", s->id, (size_t)idx);
        /* the bytes emit writes of its trees, written straight */
        part_event(s, out, "response.output_item.added", 1, idx, "");
        part_event(s, out, "response.content_part.added", 0, idx, "");
        return;
    } else if (type == ITEM_CALL) {
        item_id(s->item_id, sizeof(s->item_id), call_id_kind(s->call_kind),
                s->id, (size_t)idx);
        /* a custom call's input, or a local shell call's command, is
         * said whole when the call closes; empty until then */
        item = s->call_kind != NULL
                   ? kind_item(s->call_kind, s->item_id, s->call_id,
                               s->call_name, "{\"input\":\"\"}", "in_progress")
                   : call_item(s->item_id, s->call_id, s->call_name, "",
                               "in_progress");
    } else {
        item_id(s->item_id, sizeof(s->item_id), "rs", s->id, (size_t)idx);
        item = mf_json_pack("{s:s,s:s,s:[]}", "type", "reasoning", "id",
                            s->item_id, "summary");
        if (s->ri != NULL && enc(s) &&
            json_is_string(json_object_get(s->ri, "encrypted_content"))) {
            json_object_set(item, "encrypted_content",
                            json_object_get(s->ri, "encrypted_content"));
        }
    }
    emit(s, out, "response.output_item.added",
         mf_json_pack("{s:I,s:o}", "output_index", idx, "item", item));
    if (type == ITEM_REASONING && !s->no_parts) {
        emit(s, out, "response.reasoning_summary_part.added",
             mf_json_pack("{s:s,s:I,s:i,s:{s:s,s:s}}", "item_id", s->item_id,
                          "output_index", idx, "summary_index", 0, "part",
                          "type", "summary_text", "text", ""));
    }
}

/* A text delta (text or reasoning) to the open item of its kind. */
static void
text_delta(responses_stream_t *s, int type, const char *t, mf_buf_t *out)
{
    if (s->item != type) {
        open_item(s, type, out);
    }
    mf_buf_append(&s->text, t, strlen(t));
    if (type == ITEM_MESSAGE) {
        delta_event(s, out, "response.output_text.delta", "content_index", t);
    } else {
        delta_event(s, out, "response.reasoning_summary_text.delta",
                    "summary_index", t);
    }
}

/* A provider's whole reasoning item (ri) from a chunk: it closes the
 * reasoning item its summary deltas opened, or is one of its own (added,
 * its summary text, done), as it has no deltas (a redacted block, a
 * summary the provider did not stream). */
static void
reasoning_done(responses_stream_t *s, json_t *ri, mf_buf_t *out)
{
    json_t *p;
    size_t i;

    if (s->item != ITEM_REASONING) {
        int text = 0;

        json_array_foreach(json_object_get(ri, "summary"), i, p)
        {
            const char *t = json_string_value(json_object_get(p, "text"));

            text |= t != NULL && t[0] != '\0';
        }
        json_decref(s->ri);
        s->ri = json_incref(ri);
        s->no_parts = !text; /* none to announce, as the API sends none */
        open_item(s, ITEM_REASONING, out);
        json_array_foreach(json_object_get(ri, "summary"), i, p)
        {
            const char *t = json_string_value(json_object_get(p, "text"));

            if (t != NULL && t[0] != '\0') {
                text_delta(s, ITEM_REASONING, t, out);
            }
        }
    } else {
        json_decref(s->ri);
        s->ri = json_incref(ri);
    }
    close_item(s, out);
}

/* The part of a custom call's input that the arguments so far (a JSON
 * prefix, {"input":"...) hold whole, decoded: the string value of
 * "input" up to its end or to the first escape not complete yet (a
 * lone high surrogate included). New reference, or NULL when there is
 * none yet. */
static json_t *
input_prefix(const char *a, size_t n)
{
    const char *k = a, *end = a + n, *v, *e;
    mf_buf_t lit = {0};
    json_t *j;

    for (;;) {
        k = memmem(k, (size_t)(end - k), "\"input\"", 7);
        if (k == NULL) {
            return NULL;
        }
        if (k == a || k[-1] != '\\') {
            break;
        }
        k += 7;
    }
    for (v = k + 7; v < end && isspace((unsigned char)*v); v++) {
    }
    if (v >= end || *v++ != ':') {
        return NULL;
    }
    while (v < end && isspace((unsigned char)*v)) {
        v++;
    }
    if (v >= end || *v++ != '"') {
        return NULL;
    }
    for (e = v; e < end && *e != '"';) {
        size_t need = 2;

        if (*e != '\\') {
            e++;
            continue;
        }
        if (e + 1 < end && e[1] == 'u') {
            need = 6;
            if (e + 5 < end && (e[2] == 'd' || e[2] == 'D') &&
                strchr("89abAB", e[3]) != NULL) {
                need = 12; /* a high surrogate and its low one */
            }
        }
        if ((size_t)(end - e) < need) {
            break;
        }
        e += need;
    }
    mf_buf_append(&lit, "\"", 1);
    mf_buf_append(&lit, v, (size_t)(e - v));
    mf_buf_append(&lit, "\"", 1);
    j = mf_json_loadb(lit.data, lit.len, JSON_DECODE_ANY, NULL);
    mf_buf_free(&lit);
    if (!json_is_string(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A custom call's input as far as the arguments hold it, the part not
 * said yet as a response.custom_tool_call_input.delta. */
static void
input_delta(responses_stream_t *s, mf_buf_t *out)
{
    json_t *p = input_prefix(s->text.data, s->text.len);

    if (p != NULL && json_string_length(p) > s->said) {
        json_t *d = json_stringn(json_string_value(p) + s->said,
                                 json_string_length(p) - s->said);

        if (d != NULL) {
            s->said = json_string_length(p);
            emit(s, out, "response.custom_tool_call_input.delta",
                 mf_json_pack("{s:s,s:I,s:o}", "item_id", s->item_id,
                              "output_index", open_index(s), "delta", d));
        }
    }
    json_decref(p);
}

static void
tool_delta(responses_stream_t *s, json_t *tc, mf_buf_t *out)
{
    json_int_t ti = json_integer_value(json_object_get(tc, "index"));
    json_t *fn = json_object_get(tc, "function");
    const char *id = json_string_value(json_object_get(tc, "id"));
    const char *name = json_string_value(json_object_get(fn, "name"));
    const char *args = json_string_value(json_object_get(fn, "arguments"));

    if (id != NULL && (s->item != ITEM_CALL || s->call != (int)ti)) {
        snprintf(s->call_id, sizeof(s->call_id), "%s", id);
        snprintf(s->call_name, sizeof(s->call_name), "%s", name ? name : "");
        close_item(s, out); /* the kind is the new call's */
        s->call_kind = call_kind(s->memo, s->call_name);
        open_item(s, ITEM_CALL, out);
        s->call = (int)ti;
    }
    if (args == NULL || args[0] == '\0' || s->item != ITEM_CALL ||
        s->call != (int)ti) {
        return;
    }
    mf_buf_append(&s->text, args, strlen(args));
    if (s->call_kind != NULL) {
        if (strcmp(s->call_kind, "custom") == 0) {
            input_delta(s, out);
        }
        return; /* a local shell call's action: said when it closes */
    }
    delta_event(s, out, "response.function_call_arguments.delta", NULL, args);
}

/* Stores the finished Response r (store_response); returns the client's
 * text of it as the store wrote it (malloc'd), or NULL when it wrote
 * none (nothing stored). */
static char *
store_stream_response(responses_stream_t *s, json_t *r)
{
    char *text = NULL;

    s->call_copy.text = &text;
    store_response(&s->call_copy, json_object_get(s->memo, "items"), r, enc(s));
    s->call_copy.text = NULL;
    return text;
}

static void
responses_stream_event(void *state, mf_str_t data, int last,
                       const mf_usage_t *usage, mf_buf_t *out)
{
    responses_stream_t *s = state;
    json_t *j, *choice, *d, *tc;
    const char *t, *fin;
    size_t i;

    if (last) {
        start(s, out);
        close_item(s, out);
        {
            json_t *r = snapshot(s, usage, "completed");
            int done = strcmp(json_string_value(json_object_get(r, "status")),
                              "completed") == 0;
            char *text = store_stream_response(s, r);

            if (text == NULL) {
                text = mf_json_dumps(r, JSON_COMPACT);
            }
            emit_response(s, out,
                          done ? "response.completed" : "response.incomplete",
                          text);
            free(text);
            json_decref(r);
        }
        return;
    }
    j = mf_json_loadb(data.data, data.len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    if (!s->started) {
        const char *model = json_string_value(json_object_get(j, "model"));

        if (model != NULL) {
            snprintf(s->model, sizeof(s->model), "%s", model);
        }
        start(s, out);
    }
    choice = json_array_get(json_object_get(j, "choices"), 0);
    d = json_object_get(choice, "delta");
    if ((t = json_string_value(json_object_get(d, "reasoning_content"))) &&
        t[0]) {
        text_delta(s, ITEM_REASONING, t, out);
    }
    json_array_foreach(json_object_get(d, "reasoning_items"), i, tc)
    {
        reasoning_done(s, tc, out);
    }
    if ((t = json_string_value(json_object_get(d, "content"))) && t[0]) {
        text_delta(s, ITEM_MESSAGE, t, out);
    }
    json_array_foreach(json_object_get(d, "tool_calls"), i, tc)
    {
        tool_delta(s, tc, out);
    }
    if ((fin = json_string_value(json_object_get(choice, "finish_reason")))) {
        snprintf(s->finish, sizeof(s->finish), "%s", fin);
    }
    json_decref(j);
}

/* Errors: OpenAI's shape; in a stream, response.failed (the Response
 * with its error) and then an error event. */

static void
responses_stream_error(void *state, const mf_proto_error_t *e, mf_buf_t *out)
{
    responses_stream_t *s = state;
    json_t *r;

    if (s == NULL || s->output == NULL) {
        mf_proto_openai.stream_error(NULL, e, out);
        return;
    }
    start(s, out);
    close_item(s, out); /* what was streamed is in the output */
    r = shown_snapshot(s, NULL, "failed");
    json_object_set_new(r, "error",
                        mf_json_pack("{s:s,s:s}", "code",
                                     e->code ? e->code : "server_error",
                                     "message", e->message));
    emit(s, out, "response.failed", mf_json_pack("{s:o}", "response", r));
    emit(s, out, "error",
         mf_json_pack("{s:s,s:s,s:n}", "code",
                      e->code ? e->code : "server_error", "message", e->message,
                      "param"));
}

static char *
responses_error_body(const mf_proto_error_t *e)
{
    return mf_proto_openai.error_body(e);
}

static mf_proto_match_t
responses_match(mf_str_t path, mf_endpoint_t *endpoint)
{
    if (mf_str_eq_cstr(path, "/v1/responses") ||
        mf_str_eq_cstr(path, "/responses")) {
        *endpoint = MF_ENDPOINT_CHAT;
        return MF_PROTO_SERVES;
    }
    if (mf_proto_has_prefix(path, "/v1/responses/")) {
        return MF_PROTO_OWNS;
    }
    return MF_PROTO_NO;
}

/* The id of a /v1/responses/{id} path, and whether it ends in
 * /input_items; 0 for another path of the space. */
static int
resource_id(mf_str_t path, mf_str_t *id, int *items)
{
    static const size_t pl = sizeof("/v1/responses/") - 1;
    static const char tail[] = "/input_items";
    const char *slash;

    if (!mf_proto_has_prefix(path, "/v1/responses/") || path.len == pl) {
        return 0;
    }
    *id = (mf_str_t){path.data + pl, path.len - pl};
    *items = 0;
    slash = memchr(id->data, '/', id->len);
    if (slash == NULL) {
        return 1;
    }
    if (!mf_str_eq_cstr((mf_str_t){slash, id->len - (size_t)(slash - id->data)},
                        tail) ||
        slash == id->data) {
        return 0;
    }
    id->len = (size_t)(slash - id->data);
    *items = 1;
    return 1;
}

/* The value of a query parameter (raw, not decoded) in buf; 0 when the
 * query has none. */
static int
query_param(mf_str_t q, const char *name, char *buf, size_t cap)
{
    size_t nl = strlen(name), i = 0, j;

    while (i < q.len) {
        for (j = i; j < q.len && q.data[j] != '&'; j++) {
        }
        if (j - i > nl && memcmp(q.data + i, name, nl) == 0 &&
            q.data[i + nl] == '=') {
            snprintf(buf, cap, "%.*s", (int)(j - i - nl - 1),
                     q.data + i + nl + 1);
            return 1;
        }
        i = j + 1;
    }
    return 0;
}

/* A stored input item as the API lists it: a message with its type and
 * status and its content as parts (input_text, or output_text for an
 * assistant's). New reference. */
static json_t *
listed_item(json_t *it)
{
    json_t *out = json_deep_copy(it), *c;
    const char *type = json_string_value(json_object_get(out, "type"));
    const char *role = json_string_value(json_object_get(out, "role"));

    if (type != NULL && strcmp(type, "message") != 0) {
        return out;
    }
    json_object_set_new(out, "type", json_string("message"));
    if (json_object_get(out, "status") == NULL) {
        json_object_set_new(out, "status", json_string("completed"));
    }
    c = json_object_get(out, "content");
    if (json_is_string(c)) {
        json_object_set_new(
            out, "content",
            mf_json_pack("[{s:s,s:O}]", "type",
                         role != NULL && strcmp(role, "assistant") == 0
                             ? "output_text"
                             : "input_text",
                         "text", c));
    }
    return out;
}

/* GET /v1/responses/{id}/input_items: the stored conversation's input
 * items, order (desc by default), after (an item id), limit (1 to 100,
 * 20 by default), as a list page; 0 with *err for a bad parameter. */
static char *
input_items_page(const mf_proto_call_t *call, json_t *input, const char **err)
{
    char buf[160], *text;
    long limit = 20;
    int desc = 1;
    size_t n = json_array_size(input), i, first = 0, k;
    json_t *data, *page;

    if (query_param(call->query, "limit", buf, sizeof(buf))) {
        char *end;

        limit = strtol(buf, &end, 10);
        if (end == buf || *end != '\0' || limit < 1 || limit > 100) {
            *err = "limit: must be an integer from 1 to 100";
            return NULL;
        }
    }
    if (query_param(call->query, "order", buf, sizeof(buf))) {
        if (strcmp(buf, "asc") != 0 && strcmp(buf, "desc") != 0) {
            *err = "order: must be asc or desc";
            return NULL;
        }
        desc = strcmp(buf, "desc") == 0;
    }
    if (query_param(call->query, "after", buf, sizeof(buf))) {
        for (k = 0; k < n; k++) {
            json_t *it = json_array_get(input, desc ? n - 1 - k : k);
            const char *iid = json_string_value(json_object_get(it, "id"));

            if (iid != NULL && strcmp(iid, buf) == 0) {
                break;
            }
        }
        if (k == n) {
            *err = "after: no input item of this response has this id";
            return NULL;
        }
        first = k + 1;
    }
    data = json_array();
    for (k = first; k < n && json_array_size(data) < (size_t)limit; k++) {
        i = desc ? n - 1 - k : k;
        json_array_append_new(data, listed_item(json_array_get(input, i)));
    }
    page = mf_json_pack(
        "{s:s,s:o,s:O,s:O,s:b}", "object", "list", "data", data, "first_id",
        json_object_get(json_array_get(data, 0), "id") ?: json_null(),
        "last_id",
        json_object_get(json_array_get(data, json_array_size(data) - 1), "id")
            ?: json_null(),
        "has_more", k < n);
    text = mf_json_dumps(page, JSON_COMPACT);
    json_decref(page);
    return text;
}

/* GET /v1/responses/{id}: the stored Response; DELETE: forgets it; GET
 * /v1/responses/{id}/input_items: its conversation's items. */
static int
responses_resource(const mf_proto_call_t *call, mf_str_t method, int *status,
                   char **body)
{
    mf_str_t idv;
    char id[160];
    char *text;
    const char *err = NULL;
    int items;
    json_t *j;

    if (!resource_id(call->path, &idv, &items)) {
        return 0; /* another path: not served */
    }
    snprintf(id, sizeof(id), "%.*s", (int)(idv.len > 150 ? 150 : idv.len),
             idv.data);
    if (items && !mf_str_eq_cstr(method, "GET")) {
        *status = 405;
        *body = mf_xstrdup("Use GET for a stored response's input items.");
        return 1;
    }
    if (!mf_str_eq_cstr(method, "GET") && !mf_str_eq_cstr(method, "DELETE")) {
        *status = 405;
        *body = mf_xstrdup("Use GET or DELETE for a stored response.");
        return 1;
    }
    if (call->store_get == NULL || call->store_delete == NULL) {
        return 0;
    }
    if (mf_str_eq_cstr(method, "DELETE")) {
        if (call->store_delete(call, id)) {
            j = mf_json_pack("{s:s,s:s,s:b}", "id", id, "object", "response",
                             "deleted", 1);
            *body = mf_json_dumps(j, JSON_COMPACT);
            json_decref(j);
            *status = 200;
            return 1;
        }
        text = NULL;
    } else {
        text = call->store_get(call, id);
    }
    j = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (!json_is_object(json_object_get(j, "response"))) {
        mf_buf_t m = {0};

        json_decref(j);
        mf_buf_printf(&m,
                      "No response with id '%s' is stored here (unknown, "
                      "expired, deleted, or made with store: false).",
                      id);
        mf_buf_append(&m, "", 1);
        *status = 404;
        *body = m.data;
        return 1;
    }
    if (items) {
        *body = input_items_page(call, json_object_get(j, "input"), &err);
        *status = *body != NULL ? 200 : 400;
        if (*body == NULL) {
            *body = mf_xstrdup(err ? err : "out of memory");
        }
    } else {
        json_t *resp = json_object_get(j, "response");

        /* encrypted_content when asked for, as the API's include */
        if (call->query.len < 27 ||
            memmem(call->query.data, call->query.len,
                   "reasoning.encrypted_content", 27) == NULL) {
            strip_encrypted(json_object_get(resp, "output"));
        }
        *body = mf_json_dumps(resp, JSON_COMPACT);
        *status = 200;
    }
    json_decref(j);
    return 1;
}

/* The stored entry a request reads: its previous_response_id, or the id
 * of GET and DELETE /v1/responses/{id}. */
static int
responses_store_key(const mf_proto_call_t *call, json_t *in, mf_str_t method,
                    mf_str_t *id, int *del)
{
    json_t *prev;
    int items;

    *del = 0;
    if (in != NULL) {
        prev = json_object_get(in, "previous_response_id");
        if (!json_is_string(prev)) {
            return 0;
        }
        *id = (mf_str_t){json_string_value(prev), json_string_length(prev)};
        return 1;
    }
    if (!resource_id(call->path, id, &items) ||
        (!mf_str_eq_cstr(method, "GET") &&
         (items || !mf_str_eq_cstr(method, "DELETE")))) {
        return 0;
    }
    *del = mf_str_eq_cstr(method, "DELETE");
    return 1;
}

static mf_str_t
responses_route(mf_str_t path)
{
    mf_endpoint_t e;
    mf_str_t id;
    int items;

    if (responses_match(path, &e) == MF_PROTO_SERVES) {
        return path; /* a fixed path */
    }
    if (resource_id(path, &id, &items)) {
        return items ? MF_STR("/v1/responses/{response_id}/input_items")
                     : MF_STR("/v1/responses/{response_id}");
    }
    return MF_STR_NULL;
}

const mf_proto_t mf_proto_responses = {
    .name = "responses",
    .method = "POST",
    .match = responses_match,
    .request = responses_request,
    .error_body = responses_error_body,
    .stream_error = responses_stream_error,
    .response = responses_response,
    .stream_size = sizeof(responses_stream_t),
    .stream_init = responses_stream_init,
    .stream_event = responses_stream_event,
    .stream_free = responses_stream_free,
    .resource = responses_resource,
    .store_key = responses_store_key,
    .route = responses_route,
    .endpoints = "POST /v1/responses, GET and DELETE /v1/responses/{id}, "
                 "GET /v1/responses/{id}/input_items",
};
