/* libFuzzer driver: what a client sends as its key (the credential
 * headers and ?key=, split at data-chosen cuts), the generated-key
 * parser, and the admin arguments the governance commands read (amounts,
 * durations, periods, time zones). */
#include <stdlib.h>
#include <string.h>

#include "plugins/common/gov.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    size_t a = size ? data[0] % (size + 1) : 0;
    size_t b = size > 1 ? data[1] % (size + 1) : 0;
    mf_str_t parts[4], out, id, secret;
    char *text;
    int64_t v, s, e;
    int usd, has, off;
    gov_period_t p;

    if (a > b) {
        size_t t = a;

        a = b;
        b = t;
    }
    parts[0] = (mf_str_t){d, a};
    parts[1] = (mf_str_t){d + a, b - a};
    parts[2] = (mf_str_t){d + b, (size - b) / 2};
    parts[3] = (mf_str_t){d + b + (size - b) / 2, size - b - (size - b) / 2};
    if (gov_credential(parts[0], parts[1], parts[2], parts[3], &out) == MF_OK) {
        if (out.len == 0 || out.data < d || out.data + out.len > d + size) {
            abort(); /* a view into what was sent, never empty */
        }
        if (gov_key_parse(out, &id, &secret) == MF_OK &&
            (id.len != GOV_KEY_ID_LEN || secret.len != GOV_KEY_SECRET_LEN)) {
            abort();
        }
    }
    gov_key_parse((mf_str_t){d, size}, &id, &secret);
    text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    has = 0;
    if (gov_amount_parse(text, &v, &usd, &p, &has) == MF_OK && v < 0) {
        abort();
    }
    gov_duration_parse(text, &v);
    if (gov_tz_parse(text, &off) == MF_OK) {
        if (off < -14 * 3600 - 59 * 60 || off > 14 * 3600 + 59 * 60) {
            abort();
        }
        gov_period_bounds(GOV_MONTH, off, size * 1000003LL, &s, &e);
        if (!(s <= (int64_t)size * 1000003LL &&
              (int64_t)size * 1000003LL < e)) {
            abort();
        }
    }
    gov_period_parse(text, &p);
    free(text);
    return 0;
}
