/* libFuzzer driver for admin requests: bytes -> mf_admin_parse -> routing
 * -> the command, with no generation current, no workers and a config
 * path that does not exist (so a reload is refused, changing nothing). */
#include <stdint.h>
#include <stdlib.h>

#include "control/admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mf_reloader_t rl = {.config_path = "/nonexistent/manifold.yaml",
                               .plugin_dir = "/nonexistent"};
    static mf_server_t server;
    mf_admin_req_t q;
    mf_admin_ctx_t ctx;
    const char *err = NULL;
    json_t *out = NULL;

    memset(&ctx, 0, sizeof(ctx));
    ctx.rl = &rl;
    ctx.server = &server;
    mf_log_set_level(MF_LOG_ERROR);
    if (mf_admin_parse((const char *)data, size, &q, &err) == 1) {
        mf_admin_dispatch(&ctx, &q, &out);
        json_decref(out);
    }
    return 0;
}
