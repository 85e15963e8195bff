/* libFuzzer driver: the AWS event-stream decoder, fed in two pieces at a
 * data-chosen cut, with a small message limit. */
#include "http/evstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
on_msg(void *arg, const mf_sse_event_t *ev)
{
    size_t *total = arg;

    *total += ev->raw.len + ev->data.len + ev->event.len + ev->id.len;
    return MF_OK;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_evstream_t p;
    size_t total = 0, cut = size ? data[0] % (size + 1) : 0;

    mf_evstream_init(&p, 2048);
    if (mf_evstream_feed(&p, (const char *)data, cut, on_msg, &total) ==
        MF_OK) {
        mf_evstream_feed(&p, (const char *)data + cut, size - cut, on_msg,
                         &total);
    }
    mf_evstream_free(&p);
    return 0;
}
