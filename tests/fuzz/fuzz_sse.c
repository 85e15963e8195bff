/* libFuzzer driver: the SSE parser, fed in two pieces at a data-chosen cut. */
#include "http/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
on_event(void *arg, const mf_sse_event_t *ev)
{
    size_t *total = arg;

    *total += ev->raw.len + ev->data.len + ev->event.len + ev->id.len;
    return MF_OK;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_sse_parser_t p;
    size_t total = 0, cut = size ? data[0] % (size + 1) : 0;

    mf_sse_parser_init(&p, 4096);
    if (mf_sse_parser_feed(&p, (const char *)data, cut, on_event, &total) ==
        MF_OK) {
        mf_sse_parser_feed(&p, (const char *)data + cut, size - cut, on_event,
                           &total);
    }
    mf_sse_parser_free(&p);
    return 0;
}
