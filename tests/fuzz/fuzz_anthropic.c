/* libFuzzer driver for the Anthropic inbound translation: bytes as a
 * Messages request, as a canonical completion and as a canonical stream
 * chunk (what a client and an upstream can send). */
#include <stdint.h>
#include <stdlib.h>

#include "proto/proto_anthropic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    mf_usage_t usage = {10, 5, 15, 2, -1, 0};
    mf_anthropic_stream_t s;
    mf_buf_t out = {0};
    const char *err = NULL;

    if (j != NULL) {
        json_t *c = mf_anthropic_request(j, &err);
        json_t *m = mf_anthropic_response(j, &usage);

        json_decref(c);
        json_decref(m);
        json_decref(j);
    }
    mf_anthropic_stream_init(&s, MF_STR("m"));
    mf_anthropic_stream_event(&s, (mf_str_t){(const char *)data, size}, 0,
                              &usage, &out);
    mf_anthropic_stream_event(&s, (mf_str_t){(const char *)data, size}, 0,
                              &usage, &out);
    mf_anthropic_stream_event(&s, MF_STR("[DONE]"), 1, &usage, &out);
    mf_buf_free(&out);
    return 0;
}
