/* libFuzzer driver for the inbound protocol adapters (every entry of
 * mf_protos[]): bytes as a path, as a client's request, as a canonical
 * completion and as canonical stream chunks (what a client and an
 * upstream can send), and an error rendered in each shape. */
#include <stdint.h>
#include <stdlib.h>

#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
run(const mf_proto_t *p, json_t *j, mf_str_t bytes)
{
    mf_usage_t usage = {10, 5, 15, 2, -1, 0};
    mf_proto_error_t e = {502, "upstream_error", "x", NULL, "m"};
    mf_endpoint_t ep;
    mf_buf_t out = {0};
    const char *err = NULL;
    char *text;
    void *st;

    (void)p->match(bytes, &ep);
    if (j != NULL && p->request != NULL) {
        json_decref(p->request(j, &err));
    }
    if (j != NULL && p->response != NULL) {
        json_decref(p->response(j, &usage));
    }
    if (json_is_object(j) && p->local != NULL) {
        int status, estimated;

        free(p->local(bytes, j, &status, &estimated, &err));
    }
    text = p->error_body(&e);
    free(text);
    p->stream_error(NULL, &e, &out);
    if (p->stream_event != NULL) {
        st = calloc(1, p->stream_size);
        p->stream_init(st, MF_STR("m"));
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
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_str_t bytes = {(const char *)data, size};
    json_t *j = json_loadb(bytes.data, size, 0, NULL);
    mf_endpoint_t ep;
    size_t i;
    int local;

    (void)mf_proto_find(bytes, &ep, &local);
    for (i = 0; mf_protos[i] != NULL; i++) {
        run(mf_protos[i], j, bytes);
    }
    json_decref(j);
    return 0;
}
