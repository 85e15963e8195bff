/*
 * Relaying the upstream's answer: stream events (SSE or AWS event-stream)
 * through the body stages to the client with backpressure, a whole
 * non-stream completion, and usage when the upstream did not report it.
 */
#include <manifold/json.h>

#include "request/request-int.h"

#include <event2/buffer.h>
#include <stdlib.h>

#include "http/server.h"
#include "http/upstream.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"
#include "proto/proto.h"

#define MF_STREAM_HIGH_WATER (256 * 1024)

/* Bytes of text in a message's content: a string, or the "text" of its
 * parts. */
static uint64_t
content_text_len(const json_t *content)
{
    const json_t *part;
    uint64_t n = 0;
    size_t i;

    if (json_is_string(content)) {
        return json_string_length(content);
    }
    json_array_foreach(content, i, part)
    {
        n += json_string_length(json_object_get(part, "text"));
    }
    return n;
}

/* Bytes of text the prompt carries, without the JSON around it: message
 * contents, tool call arguments, an embeddings input. */
static uint64_t
prompt_text_len(const json_t *body)
{
    const json_t *m, *tc, *in = json_object_get(body, "input");
    uint64_t n = 0;
    size_t i, j;

    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        n += content_text_len(json_object_get(m, "content"));
        json_array_foreach(json_object_get(m, "tool_calls"), j, tc)
        {
            n += json_string_length(
                json_object_get(json_object_get(tc, "function"), "arguments"));
        }
    }
    if (json_is_string(in)) {
        n += json_string_length(in);
    }
    json_array_foreach(in, i, m)
    {
        n += json_string_length(m);
    }
    return n;
}

/*
 * Estimates usage the upstream did not report as final: none at all, or
 * a stream that did not reach the provider's last usage report (cut,
 * timed out, client gone; an Anthropic message_start carries only a
 * placeholder). Only when a request reached an upstream: with none
 * (every attempt failed to connect), tokens stay unknown. The prompt is
 * the provider's count when it gave one, else about 4 bytes of prompt
 * text a token; the completion is about 4 bytes of delivered answer text
 * a token. Marked estimated.
 */
void
mf_req_estimate_usage(mf_req_t *r)
{
    int known = r->have_usage && r->usage.prompt_tokens >= 0;

    if (!r->reached || (r->have_usage && (!r->stream || r->att.usage_final))) {
        return;
    }
    if (!known) {
        r->usage.prompt_tokens = (int64_t)((prompt_text_len(r->json) + 3) / 4);
        r->usage.cached_tokens = -1;
    } else if (!r->have_usage) {
        r->usage.cached_tokens = -1;
    }
    r->usage.completion_tokens = (int64_t)((r->att.delivered_text + 3) / 4);
    r->usage.total_tokens = r->usage.prompt_tokens + r->usage.completion_tokens;
    r->usage.reasoning_tokens = -1;
    r->usage.estimated = 1;
    r->have_usage = 1;
}

/*
 * Bytes of answer text in an OpenAI chat chunk: the string values of
 * "content", "reasoning_content" and "arguments", found without parsing
 * (an escape counts once). Used to estimate a cut stream's completion.
 */
static uint64_t
chunk_text_len(mf_str_t d)
{
    static const char *const keys[] = {"content\":", "arguments\":"};
    const char *end = d.data + d.len;
    uint64_t n = 0;
    size_t k;

    for (k = 0; k < 2; k++) {
        const char *p = d.data;
        size_t kl = strlen(keys[k]);

        while (p < end && (p = memmem(p, (size_t)(end - p), keys[k], kl))) {
            p += kl;
            while (p < end && *p == ' ') {
                p++;
            }
            if (p == end || *p != '"') {
                continue;
            }
            for (p++; p < end && *p != '"'; p++, n++) {
                if (*p == '\\' && p + 1 < end) {
                    p++;
                }
            }
        }
    }
    return n;
}

/* Keeps a canonical stream event for the answer record, when a stage
 * asked for it (api->record_answer). */
static void
record_event(mf_req_t *r, mf_str_t data)
{
    uint32_t n = (uint32_t)data.len;

    if (!r->record || data.len == 0 || data.len > UINT32_MAX ||
        mf_str_eq(data, MF_STR("[DONE]"))) {
        return;
    }
    if (mf_buf_try_append(&r->rec_events, &n, sizeof(n)) != MF_OK ||
        mf_buf_try_append(&r->rec_events, data.data, data.len) != MF_OK) {
        r->record = 0; /* too large to keep: no answer record */
        mf_buf_free(&r->rec_events);
    }
    if (r->rec_watch != NULL) {
        r->rec_watch(r, r->rec_watch_arg, data, 0);
    }
}

/* One canonical event to the client's protocol (the adapter's stream
 * state made at the first). The first event gets, when the upstream has
 * not given the prompt's count yet, the gateway's estimate (about 4
 * bytes of prompt text a token) as its prompt tokens: a protocol whose
 * stream opens with the count (Anthropic's message_start) says that
 * rather than 0. The request's own usage is not changed. */
static int
proto_event(mf_req_t *r, mf_str_t data, int last)
{
    mf_usage_t u = r->usage;

    if (r->att.proto_stream == NULL) {
        r->att.proto_stream = mf_pool_alloc(r->pool, r->proto->stream_size);
        if (r->att.proto_stream == NULL) {
            return MF_ERR;
        }
        mf_proto_call_t call = mf_req_proto_call(r);

        r->proto->stream_init(r->att.proto_stream, &call, r->model_asked);
        if (!last && !(r->have_usage && r->usage.prompt_tokens >= 0) &&
            r->json != NULL) {
            u.prompt_tokens = (int64_t)((prompt_text_len(r->json) + 3) / 4);
            u.cached_tokens = -1;
            u.estimated = 1;
        }
    }
    r->proto->stream_event(r->att.proto_stream, data, last, &u, &r->chunk_out);
    return MF_OK;
}

/* One event, as the body stages left it, to the client's protocol. */
static void
send_event(mf_req_t *r, mf_str_t data, int last)
{
    if (data.len == 0) {
        return; /* a stage dropped the event */
    }
    if (!last) {
        record_event(r, data);
    }
    r->att.delivered_text += chunk_text_len(data);
    if (r->proto->stream_event != NULL) {
        (void)proto_event(r, data, last);
        return;
    }
    mf_buf_append(&r->chunk_out, "data: ", 6);
    mf_buf_append(&r->chunk_out, data.data, data.len);
    mf_buf_append(&r->chunk_out, "\n\n", 2);
}

void
mf_req_emit_event(mf_req_t *r, mf_str_t data, int last)
{
    mf_stage_t was = r->cur_stage;
    size_t i;
    int rc;

    if (r->body_failed || r->body_stop) {
        return; /* nothing more goes out; the caller ends the stream */
    }
    if (last && r->end_held) {
        return; /* the end already waits for the holding stage */
    }
    if (last && r->body_hold) {
        /* the output is held: the end waits, for every stage */
        r->end_held = 1;
        r->end_from = 0;
        r->end_data = mf_pool_str(r->pool, data);
        return;
    }
    r->replaced = 0;
    rc = mf_pipeline_body(r, data, last);
    r->cur_stage = was;
    if (rc != MF_OK) {
        r->body_failed = 1; /* fail closed: this event is withheld */
        return;
    }
    if (r->replaced) {
        data = r->replace;
    }
    /* events the stages inserted ahead of this one */
    for (i = 0; i < r->nins_before; i++) {
        send_event(r, r->ins_before[i], 0);
    }
    r->nins_before = 0;
    if (r->body_stop) {
        return; /* a stage ended the answer here (mf_req_body_stopped) */
    }
    if (last && r->body_hold) {
        /* the stage that saw the end holds the output: the stages after
         * it get the end on release */
        r->end_held = 1;
        r->end_from = (size_t)r->body_hold;
        r->end_data = mf_pool_str(r->pool, data);
        return;
    }
    if (last) {
        r->att.done_sent = 1;
    }
    send_event(r, data, last);
}

int
mf_req_body_ended_by_stage(mf_req_t *r)
{
    if (r->body_failed) {
        mf_req_body_stage_failed(r);
        return 1;
    }
    if (r->body_stop) {
        mf_req_body_stopped(r);
        return 1;
    }
    return 0;
}

void
mf_req_stream_end(mf_req_t *r)
{
    if (mf_req_body_ended_by_stage(r)) {
        return;
    }
    mf_req_flush_stream(r);
    mf_req_finish_stream(r);
    mf_req_finish(r);
}

/* An event from the holding stage, outside the pipeline (its async
 * check's callback): through the stages after it, then out at once. */
int
mf_req_body_insert_held(mf_req_t *r, mf_str_t data)
{
    mf_stage_t was = r->cur_stage;
    size_t i;
    int rc;

    rc = mf_pipeline_body_from(r, (size_t)r->body_hold, data, 0);
    r->cur_stage = was;
    if (rc != MF_OK) {
        r->body_failed = 1;
        mf_req_body_stage_failed(r);
        return MF_ERR;
    }
    if (r->replaced) {
        data = r->replace;
    }
    for (i = 0; i < r->nins_before; i++) {
        send_event(r, r->ins_before[i], 0);
    }
    r->nins_before = 0;
    if (r->body_stop) {
        mf_req_body_stopped(r);
        return MF_ERR; /* the answer ended here */
    }
    send_event(r, data, 0);
    mf_req_flush_stream(r);
    return MF_OK;
}

void
mf_req_body_hold(mf_req_t *r, int idx1)
{
    r->body_hold = idx1;
    if (idx1) {
        mf_req_call_pause(r, 1);
    } else if (!r->end_held &&
               (r->conn == NULL ||
                evbuffer_get_length(mf_req_out(r)) <= MF_STREAM_HIGH_WATER)) {
        mf_req_call_pause(r, 0);
    }
}

/* The holding stage let go: the end that waited goes out (through the
 * stages after the one that saw it), reading resumes, or the stream ends
 * when the upstream already has. */
void
mf_req_body_release(mf_req_t *r)
{
    mf_stage_t was = r->cur_stage;
    size_t i;
    int rc;

    r->body_hold = 0;
    if (r->end_held && !r->body_failed && !r->body_stop) {
        mf_str_t data = r->end_data;

        r->end_held = 0;
        r->replaced = 0;
        rc = mf_pipeline_body_from(r, r->end_from, data, 1);
        r->cur_stage = was;
        if (rc != MF_OK) {
            r->body_failed = 1;
        } else {
            if (r->replaced) {
                data = r->replace;
            }
            for (i = 0; i < r->nins_before; i++) {
                send_event(r, r->ins_before[i], 0);
            }
            r->nins_before = 0;
            if (!r->body_stop && r->body_hold) {
                /* a later stage holds in its turn */
                r->end_held = 1;
                r->end_from = (size_t)r->body_hold;
                r->end_data = mf_pool_str(r->pool, data);
                mf_req_flush_stream(r);
                return;
            }
            if (!r->body_stop) {
                r->att.done_sent = 1;
                send_event(r, data, 1);
            }
        }
    }
    if (r->up_ended) {
        mf_req_stream_end(r);
        return;
    }
    if (mf_req_body_ended_by_stage(r)) {
        return;
    }
    mf_req_flush_stream(r);
    if (r->conn != NULL &&
        evbuffer_get_length(mf_req_out(r)) <= MF_STREAM_HIGH_WATER) {
        mf_req_call_pause(r, 0);
    }
}

void
mf_req_proto_stream_free(mf_req_t *r)
{
    if (r->att.proto_stream != NULL && r->proto->stream_free != NULL) {
        r->proto->stream_free(r->att.proto_stream);
    }
    r->att.proto_stream = NULL;
}

/* Whether an OpenAI chunk carries a usage object (as the openai provider
 * finds it, without parsing). */
static int
carries_usage(mf_str_t d)
{
    return memmem(d.data, d.len, "\"usage\":{", 9) != NULL ||
           memmem(d.data, d.len, "\"usage\": {", 10) != NULL;
}

/* Whether d reads as one JSON object: '{' first and '}' last (spaces
 * aside); the cheap check that finds an event cut short. */
static int
json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int
whole_object(mf_str_t d)
{
    const char *p = d.data, *e = d.data + d.len;

    while (p < e && json_space(*p)) {
        p++;
    }
    while (e > p && json_space(e[-1])) {
        e--;
    }
    /* cppcheck-suppress knownConditionTrueFalse ; not after the loops */
    return e - p >= 2 && *p == '{' && e[-1] == '}';
}

int
mf_req_on_sse_event(void *arg, const mf_sse_event_t *ev)
{
    mf_req_t *r = arg;
    size_t before;
    int flags, canon;

    if (ev->raw.len > 0 && ev->raw.data[0] != '\n' && ev->raw.data[0] != '\r') {
        /* a complete event or comment (not a stray blank line): the
         * stream is alive */
        mf_upcall_progress(r->att.call);
    }
    if (ev->data.len == 0 && ev->event.len == 0) {
        /* comment or keep-alive: passed through once the response began */
        if (r->att.passthrough && r->head_sent) {
            mf_buf_append(&r->chunk_out, ev->raw.data, ev->raw.len);
        }
        return MF_OK;
    }
    r->cur_stage = MF_STAGE_PROVIDER;
    before = r->chunk_out.len;
    /* an OpenAI-wire event to a translating adapter: it is a canonical
     * chunk as it came (the provider only reads its usage), given to the
     * stages and the adapter as text, parsed once there, unless it
     * carries a usage the client did not ask for (then the provider's
     * chunk, without it; "usage":null is no usage) */
    canon = r->att.wire_canonical ||
            (!r->att.passthrough && r->att.wire_openai &&
             (r->client_wants_usage || !carries_usage(ev->data)));
    flags =
        r->att.prov->ops->parse_stream_event(r, r->att.prov->state, ev, !canon);
    if (flags >= 0 && canon && !(flags & MF_EVENT_DONE) &&
        !whole_object(ev->data)) {
        /* the provider did not parse it: an object cut short is the
         * upstream's garbage, which ends the stream as a parse error
         * would (an adapter would drop it, a client's parser choke on
         * it, and the answer go on short) */
        flags = MF_ERR;
    }
    if (flags < 0 || r->att.prov_err != NULL || r->body_failed ||
        r->body_stop) {
        return MF_ERR; /* up_on_data tells which */
    }
    if (flags & (MF_EVENT_DONE | MF_EVENT_USAGE_ONLY)) {
        /* the provider's last usage report (or its end): usage is final */
        r->att.usage_final = 1;
    }
    if (!r->head_sent && r->chunk_out.len > before) {
        /* only a preamble so far: held, the attempt can still fail over */
        r->att.held =
            (flags & MF_EVENT_PREAMBLE) && (before == 0 || r->att.held);
    }
    if (flags & MF_EVENT_DONE) {
        r->att.saw_done = 1;
        r->att.held = 0; /* the answer is whole: what is held goes out */
    } else if (!(flags & MF_EVENT_USAGE_ONLY)) {
        r->att.events_seen++;
    }
    if (!r->att.passthrough && canon) {
        /* canonical bytes through the body stages, as they came; an
         * in-band error goes on to an OpenAI client only (a provider
         * that translates emits none) */
        if (flags & MF_EVENT_DONE) {
            if (!r->att.done_sent) {
                mf_req_emit_event(r, MF_STR("[DONE]"), 1);
            }
        } else if ((flags & MF_EVENT_ERROR) && !r->att.wire_canonical) {
            return MF_OK;
        } else if (!(flags & MF_EVENT_USAGE_ONLY) || r->client_wants_usage) {
            mf_req_emit_event(r, ev->data, 0);
        }
        return r->body_failed || r->body_stop ? MF_ERR : MF_OK;
    }
    if (!r->att.passthrough) {
        /* the provider emitted canonical chunks; the end is ours to say */
        if ((flags & MF_EVENT_DONE) && !r->att.done_sent) {
            mf_req_emit_event(r, MF_STR("[DONE]"), 1);
        }
        return r->body_failed || r->body_stop ? MF_ERR : MF_OK;
    }
    if (!(flags & MF_EVENT_DONE)) {
        record_event(r, ev->data); /* usage included, sent or not */
    }
    if ((flags & MF_EVENT_USAGE_ONLY) && !r->client_wants_usage) {
        return MF_OK;
    }
    r->att.delivered_text += chunk_text_len(ev->data);
    mf_buf_append(&r->chunk_out, ev->raw.data, ev->raw.len);
    return MF_OK;
}

/* Sends what the events produced as one chunk; applies backpressure. */
void
mf_req_flush_stream(mf_req_t *r)
{
    if (!r->head_sent) {
        if (r->chunk_out.len == 0 || r->phase != MF_PHASE_BODY || r->att.held) {
            return; /* nothing to commit to yet: a failure can still retry */
        }
        mf_req_start_stream_response(r);
        mf_req_attempt_close(r, &mf_outcome_ok, mf_now_ms() - r->att.start);
    }
    if (r->chunk_out.len > 0) {
        mf_req_send_chunk(r, r->chunk_out.data, r->chunk_out.len);
        r->chunk_out.len = 0;
        if (r->first_content_ms == 0 && r->att.delivered_text > 0) {
            /* time to first token: the first event with answer text
             * left, not the first byte or a role-only chunk */
            r->first_content_ms = mf_now_ms();
        }
    }
    if (r->conn != NULL && r->att.call != NULL &&
        evbuffer_get_length(mf_req_out(r)) > MF_STREAM_HIGH_WATER) {
        mf_req_call_pause(r, 1);
        mf_conn_watch_drain(r->conn, MF_STREAM_HIGH_WATER / 4);
    }
}

void
mf_req_drained(mf_req_t *r)
{
    mf_conn_watch_drain(r->conn, 0);
    if (r->phase == MF_PHASE_BODY && !r->body_hold) {
        mf_req_call_pause(r, 0);
    }
}

/* The provider failed a 2xx stream (api->set_error): before anything
 * reached the client (the head goes with the first flush) the attempt
 * fails over; after, an error event ends the stream. */
void
mf_req_stream_failed(mf_req_t *r, const mf_error_t *err)
{
    char message[sizeof(err->message)];

    if (!r->head_sent) {
        /* chunks not flushed yet: the client saw nothing */
        r->att.sse_active = 0;
        mf_req_attempt_error(r, err, err->status);
        return;
    }
    mf_req_flush_stream(r);
    memcpy(message, err->message, sizeof(message));
    message[sizeof(message) - 1] = '\0';
    mf_req_scrub_error(r, message);
    mf_req_send_stream_error(r, err->code ? err->code : "upstream_error",
                             message);
    mf_req_finish_stream(r);
    mf_req_finish(r);
}

#define BODY_STAGE_FAILED                                                      \
    "a gateway stage failed on the response, which is withheld; see the "      \
    "gateway log"

/* An on_response_body stage failed: what it did not pass is never sent
 * (it may be a redaction). Before the head, a 500 and nothing of the
 * upstream's answer; after it, an error event ends the stream. */
void
mf_req_body_stage_failed(mf_req_t *r)
{
    if (r->att.call != NULL) {
        mf_upcall_cancel(r->att.call);
        r->att.call = NULL;
    }
    mf_req_account_upstream_time(r);
    if (!r->head_sent) {
        r->chunk_out.len = 0;
        mf_req_attempt_close(r, &mf_outcome_ok, mf_now_ms() - r->att.start);
        mf_req_respond_error(r, 500, "server_error", "stage_failed",
                             BODY_STAGE_FAILED);
        mf_req_finish(r);
        return;
    }
    mf_req_flush_stream(r);
    mf_req_send_stream_error(r, "stage_failed", BODY_STAGE_FAILED);
    mf_req_finish_stream(r);
    mf_req_finish(r);
}

/* A body stage stopped the answer (api->stop_response): the upstream is
 * read no further; before the head, the stage's error in the client's
 * protocol; after it, the stage's final chunk, the usage chunk when the
 * client asked for one, and the stream's end. Usage not reported by the
 * upstream is estimated from what was delivered (billed). */
void
mf_req_body_stopped(mf_req_t *r)
{
    if (r->att.call != NULL) {
        mf_upcall_cancel(r->att.call);
        r->att.call = NULL;
    }
    mf_req_account_upstream_time(r);
    if (!r->head_sent) {
        r->chunk_out.len = 0;
        mf_req_attempt_close(r, &mf_outcome_ok, mf_now_ms() - r->att.start);
        mf_req_respond_error(r, r->stop_status, r->stop_type, r->stop_code,
                             r->stop_message.data);
        mf_req_finish(r);
        return;
    }
    r->error = r->stop_message;
    send_event(r, r->stop_final, 0);
    mf_req_estimate_usage(r);
    if (r->client_wants_usage && r->stop_final.len > 0 && r->have_usage) {
        json_t *c =
            mf_json_loadb(r->stop_final.data, r->stop_final.len, 0, NULL);
        char *text;

        if (json_is_object(c)) {
            json_object_set_new(c, "choices", json_array());
            json_object_set_new(
                c, "usage",
                json_pack("{s:I,s:I,s:I}", "prompt_tokens",
                          (json_int_t)r->usage.prompt_tokens,
                          "completion_tokens",
                          (json_int_t)r->usage.completion_tokens,
                          "total_tokens", (json_int_t)r->usage.total_tokens));
            text = mf_json_dumps(c, JSON_COMPACT);
            if (text != NULL) {
                send_event(r, mf_str_from(text), 0);
                free(text);
            }
        }
        json_decref(c);
    }
    if (!r->att.done_sent) {
        r->att.done_sent = 1;
        send_event(r, MF_STR("[DONE]"), 1);
    }
    mf_req_flush_stream(r);
    mf_req_finish_stream(r);
    mf_req_finish(r);
}

/* A complete 2xx non-stream body: usage, stages, answer. */
void
mf_req_complete_nonstream(mf_req_t *r)
{
    mf_str_t body = {r->up_buf.data ? r->up_buf.data : "", r->up_buf.len};
    char *text = NULL;

    int body_stages = (r->gen->hooks & MF_HOOK(MF_STAGE_RESPONSE_BODY)) != 0;

    mf_req_attempt_close(r, &mf_outcome_ok, mf_now_ms() - r->att.start);
    /* the canonical answer as text, for the body stages or the client;
     * a translating adapter with no body stage takes the value directly */
    if (r->resp_json != NULL && (body_stages || r->proto->response == NULL)) {
        text = mf_json_dumps(r->resp_json, JSON_COMPACT);
        body = mf_str_from(text);
    }
    r->replaced = 0;
    if (mf_pipeline_body(r, body, 1) != MF_OK) {
        /* fail closed: not a byte of the unfiltered answer goes out */
        free(text);
        mf_req_respond_error(r, 500, "server_error", "stage_failed",
                             BODY_STAGE_FAILED);
        mf_req_finish(r);
        return;
    }
    if (r->body_stop) {
        free(text);
        mf_req_respond_error(r, r->stop_status, r->stop_type, r->stop_code,
                             r->stop_message.data);
        mf_req_finish(r);
        return;
    }
    if (r->replaced) {
        body = r->replace;
    }
    if (r->record && r->rec_json == NULL) {
        r->rec_json = text == NULL && r->resp_json != NULL && !r->replaced
                          ? json_incref(r->resp_json)
                          : mf_json_loadb(body.data, body.len, 0, NULL);
    }
    if (r->proto->response != NULL) {
        json_t *c = text == NULL && r->resp_json != NULL && !r->replaced
                        ? json_incref(r->resp_json)
                        : mf_json_loadb(body.data, body.len, 0, NULL);
        mf_proto_call_t call = mf_req_proto_call(r);
        char *written = NULL;
        json_t *m;
        char *mt;

        call.text = &written; /* an adapter that wrote its answer already */
        m = c ? r->proto->response(&call, c, &r->usage) : NULL;
        mt = m == NULL ? NULL
             : written ? written
                       : mf_json_dumps(m, JSON_COMPACT);
        if (m == NULL) {
            free(written);
        }

        json_decref(c);
        json_decref(m);
        if (mt == NULL) {
            mf_req_respond_error(r, 502, "api_error", NULL,
                                 "the upstream answer could not be "
                                 "translated to a message");
        } else {
            mf_req_respond(r, r->att.up_status, "application/json",
                           mf_str_from(mt));
        }
        free(mt);
        free(text);
        mf_req_finish(r);
        return;
    }
    mf_req_respond(r, r->att.up_status, "application/json", body);
    free(text);
    mf_req_finish(r);
}

/* Translates one canonical event for the client into chunk_out. */
static int
stage_translate(mf_req_t *r, mf_str_t data, int last)
{
    if (r->proto->stream_event != NULL) {
        return proto_event(r, data, last);
    }
    mf_buf_append(&r->chunk_out, "data: ", 6);
    mf_buf_append(&r->chunk_out, data.data, data.len);
    mf_buf_append(&r->chunk_out, "\n\n", 2);
    return MF_OK;
}

int
mf_req_stage_event(mf_req_t *r, mf_str_t data, int last)
{
    int rc = MF_OK;

    if (!r->stream || r->finished || r->stage_stream == 2 ||
        (r->head_sent && r->stage_stream == 0)) {
        return MF_ERR;
    }
    if (r->stage_stream == 0) {
        r->stage_stream = 1;
        r->chunk_out.len = 0;
        mf_req_start_stream_response(r);
    }
    if (data.len > 0) {
        rc = stage_translate(r, data, 0);
    }
    if (last && rc == MF_OK) {
        rc = stage_translate(r, MF_STR("[DONE]"), 1);
        r->stage_stream = 2;
    }
    if (r->chunk_out.len > 0) {
        mf_req_send_chunk(r, r->chunk_out.data, r->chunk_out.len);
        r->chunk_out.len = 0;
    }
    if (r->stage_stream == 2) {
        mf_req_finish_stream(r);
    }
    return rc;
}

/* A stage's own stream that cannot go on (the answer it relayed broke):
 * an error event in the client's protocol, as for a cut upstream stream,
 * then the end. */
int
mf_req_stage_stream_error(mf_req_t *r, const char *code, const char *message)
{
    if (!r->stream || r->finished || r->stage_stream != 1) {
        return MF_ERR;
    }
    mf_req_send_stream_error(r, code ? code : "upstream_stream_cut", message);
    r->stage_stream = 2;
    mf_req_finish_stream(r);
    return MF_OK;
}

int
mf_req_respond_canonical(mf_req_t *r, mf_str_t completion)
{
    mf_proto_call_t call;
    json_t *c, *m;
    char *text;
    int rc;

    if (r->head_sent || r->finished || completion.len == 0) {
        return MF_ERR;
    }
    if (r->proto->response == NULL) {
        /* the client's protocol is the canonical form: the text as is */
        return mf_req_respond(r, 200, "application/json", completion);
    }
    c = mf_json_loadb(completion.data, completion.len, 0, NULL);
    call = mf_req_proto_call(r);
    m = c != NULL ? r->proto->response(&call, c, &r->usage) : NULL;
    json_decref(c);
    text = m != NULL ? mf_json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    if (text == NULL) {
        return MF_ERR;
    }
    rc = mf_req_respond(r, 200, "application/json", mf_str_from(text));
    free(text);
    return rc;
}

json_t *
mf_req_answer(mf_req_t *r)
{
    json_t *a;
    size_t off = 0;

    if (!r->record) {
        return NULL;
    }
    if (!r->stream) {
        return json_incref(r->rec_json);
    }
    a = json_array();
    while (a != NULL && off + sizeof(uint32_t) <= r->rec_events.len) {
        uint32_t n;
        json_t *c;

        memcpy(&n, r->rec_events.data + off, sizeof(n));
        off += sizeof(n);
        if (n > r->rec_events.len - off) {
            break;
        }
        c = mf_json_loadb(r->rec_events.data + off, n, 0, NULL);
        off += n;
        if (c != NULL) {
            json_array_append_new(a, c);
        }
    }
    return a;
}

int
mf_req_answer_event(mf_req_t *r, size_t i, mf_str_t *data)
{
    size_t off = 0, at = 0;

    if (!r->record || !r->stream) {
        return MF_ERR;
    }
    if (i >= r->rec_at) {
        /* reading in order: go on from where the last call stopped */
        at = r->rec_at;
        off = r->rec_at_off;
    }
    i -= at;
    while (off + sizeof(uint32_t) <= r->rec_events.len) {
        uint32_t n;

        memcpy(&n, r->rec_events.data + off, sizeof(n));
        off += sizeof(n);
        if (n > r->rec_events.len - off) {
            return MF_ERR;
        }
        if (i-- == 0) {
            data->data = r->rec_events.data + off;
            data->len = n;
            r->rec_at = at;
            r->rec_at_off = off - sizeof(n);
            return MF_OK;
        }
        off += n;
        at++;
    }
    return MF_ERR;
}
