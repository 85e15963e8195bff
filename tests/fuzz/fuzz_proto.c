/* libFuzzer driver for the inbound protocol adapters (every entry of
 * mf_protos[]): bytes as a path, as a client's request, as a canonical
 * completion and as canonical stream chunks (what a client and an
 * upstream can send), token counts forwarded (count_request), a stored
 * response's input items, and an error rendered in each shape. */
#include <stdint.h>
#include <stdlib.h>

#include "proto/proto.h"
#include "proto/respstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A small in-memory response store, so that stored answers and
 * previous_response_id are driven too. */
static char *
store_get(const mf_proto_call_t *call, const char *id)
{
    (void)call;
    return mf_respstore_get(id, NULL);
}

static void
store_put(const mf_proto_call_t *call, const char *id, mf_str_t value)
{
    (void)call;
    (void)mf_respstore_put(id, NULL, value, 64, 1 << 20, 60000);
}

static int
store_delete(const mf_proto_call_t *call, const char *id)
{
    (void)call;
    return mf_respstore_delete(id, NULL);
}

static void
run(const mf_proto_t *p, json_t *j, mf_str_t bytes,
    const mf_proto_call_t *call0)
{
    json_t *memo = NULL;
    mf_proto_call_t callm = *call0;
    const mf_proto_call_t *call = &callm;
    mf_usage_t usage = {10, 5, 15, 2, -1, 0};
    mf_proto_error_t e = {502, "upstream_error", "x", NULL, "m"};
    mf_endpoint_t ep;
    mf_buf_t out = {0};
    const char *err = NULL;
    char *text;
    void *st;

    callm.memo = &memo; /* what `request` keeps, stored with the answer */
    (void)p->match(bytes, &ep);
    if (p->resource != NULL) {
        mf_proto_call_t rc = *call;
        int status;
        char *b = NULL;

        rc.path = bytes;
        if (p->resource(&rc, MF_STR("GET"), &status, &b)) {
            free(b);
        }
        b = NULL;
        if (p->resource(&rc, MF_STR("DELETE"), &status, &b)) {
            free(b);
        }
        /* a stored response's input items, the bytes as the query */
        rc.path = MF_STR("/v1/responses/resp_fuzz/input_items");
        rc.query = bytes;
        b = NULL;
        if (p->resource(&rc, MF_STR("GET"), &status, &b)) {
            free(b);
        }
    }
    if (p->stream_type != NULL) {
        (void)p->stream_type(call);
    }
    if (p->models_path != NULL) {
        mf_str_t id;
        mf_proto_model_t m = {"m", "o"};

        (void)p->models_path(bytes, &id);
        json_decref(p->model_list(json_pack("[o]", p->model(&m))));
    }
    if (j != NULL && p->request != NULL) {
        json_decref(p->request(call, j, &err));
    }
    if (j != NULL && p->response != NULL) {
        json_decref(p->response(call, j, &usage));
    }
    if (json_is_object(j) && p->local != NULL) {
        int status, estimated;

        free(p->local(call, j, &status, &estimated, &err));
    }
    if (json_is_object(j) && p->count_request != NULL) {
        json_decref(p->count_request(call, j, &err));
        free(p->count_answer((int64_t)bytes.len));
    }
    text = p->error_body(&e);
    free(text);
    p->stream_error(NULL, &e, &out);
    if (p->stream_event != NULL) {
        st = calloc(1, p->stream_size);
        p->stream_init(st, call, MF_STR("m"));
        p->stream_event(st, bytes, 0, &usage, &out);
        p->stream_event(st, bytes, 0, &usage, &out);
        p->stream_error(st, &e, &out);
        p->stream_event(st, MF_STR("[DONE]"), 1, &usage, &out);
        if (p->stream_free != NULL) {
            p->stream_free(st);
        }
        free(st);
    }
    mf_buf_free(&out);
    json_decref(memo);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_str_t bytes = {(const char *)data, size};
    json_t *j = json_loadb(bytes.data, size, 0, NULL);
    static const char *const paths[][2] = {
        {"/v1/chat/completions", ""},
        {"/v1beta/models/m:generateContent", ""},
        {"/v1beta/models/m:streamGenerateContent", ""},
        {"/v1beta/models/m:streamGenerateContent", "alt=sse"},
        {"/v1beta/models/m:embedContent", ""},
        {"/v1beta/models/m:batchEmbedContents", ""},
    };
    mf_proto_call_t calls[sizeof(paths) / sizeof(paths[0])];
    mf_endpoint_t ep;
    size_t i, k;
    int local;

    for (k = 0; k < sizeof(paths) / sizeof(paths[0]); k++) {
        calls[k] = (mf_proto_call_t){.path = mf_str_from(paths[k][0]),
                                     .query = mf_str_from(paths[k][1]),
                                     .store_get = store_get,
                                     .store_put = store_put,
                                     .store_delete = store_delete};
    }

    (void)mf_proto_find(bytes, &ep, &local);
    for (i = 0; mf_protos[i] != NULL; i++) {
        /* the request under each path that names a method (Gemini's
         * generate, stream with and without alt=sse, embed, batch) */
        for (k = 0; k < sizeof(calls) / sizeof(calls[0]); k++) {
            run(mf_protos[i], j, bytes, &calls[k]);
        }
    }
    json_decref(j);
    return 0;
}
