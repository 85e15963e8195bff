/* libFuzzer driver for admin requests: bytes -> mf_admin_parse -> routing
 * (with no generation current, so no command changes anything). */
#include <stdint.h>
#include <stdlib.h>

#include "admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_admin_req_t q;
    mf_admin_ctx_t ctx;
    const char *err = NULL;
    json_t *out = NULL;

    memset(&ctx, 0, sizeof(ctx));
    if (mf_admin_parse((const char *)data, size, &q, &err) == 1 &&
        !mf_str_eq_cstr(q.path, "/reload") &&
        !mf_str_eq_cstr(q.path, "/stats")) {
        mf_admin_dispatch(&ctx, &q, &out);
        json_decref(out);
    }
    return 0;
}
