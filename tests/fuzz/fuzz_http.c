/* libFuzzer driver: request and response heads, chunked bodies, and
 * Retry-After values and header checks on the whole input. */
#include <stdlib.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
sink(void *arg, const char *d, size_t len)
{
    size_t *n = arg;

    (void)d;
    *n += len;
    return MF_OK;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mf_http_head_t h;
    const char *in = (const char *)data, *err;
    size_t end = mf_http_head_end(in, size), n = 0;
    mf_http_chunked_t c;

    if (end > 0) {
        if (mf_http_parse_request_head(in, end, &h, &err) == MF_OK) {
            mf_str_t v;

            mf_http_find_header(&h, "content-type", &v);
        }
        mf_http_parse_response_head(in, end, &h, &err);
    }
    memset(&c, 0, sizeof(c));
    mf_http_chunked_feed(&c, in + end, size - end, sink, &n);
    {
        mf_str_t all = {in, size};
        double secs = -1;

        if (mf_http_retry_after(all, 1.7e9, 300, &secs) == MF_OK &&
            !(secs >= 0 && secs <= 300)) {
            abort(); /* a delay outside [0, cap] */
        }
        mf_http_header_ok(MF_STR("x"), all);
        mf_http_header_ok(all, MF_STR("v"));
    }
    return 0;
}
