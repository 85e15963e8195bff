/*
 * GET /keys: every provider key (masked) with its state, why, since when,
 * requests and errors, and every route target with its circuit breaker,
 * requests in flight and time to first token.
 * POST /keys/PROVIDER/INDEX/enable and /disable: an operator's override
 * (a key disabled by hand stays so until enabled by hand).
 */
#include <stdlib.h>

#include "control/admin.h"
#include "routing/balancer.h"
#include "routing/keypool.h"

int
mf_admin_cmd_keys(mf_admin_ctx_t *ctx, const mf_admin_req_t *q, mf_str_t arg,
                  json_t **out)
{
    MF_UNUSED(ctx);
    MF_UNUSED(q);
    MF_UNUSED(arg);
    *out = json_pack("{s:o,s:o}", "keys", mf_keypool_json(), "targets",
                     mf_balancer_json());
    return 200;
}

/* "PROVIDER/INDEX" -> name and index. */
static int
split(mf_str_t arg, char *name, size_t cap, size_t *index)
{
    const char *slash = memchr(arg.data, '/', arg.len);
    char num[32], *end;
    size_t nl, il;

    if (slash == NULL) {
        return MF_ERR;
    }
    nl = (size_t)(slash - arg.data);
    il = arg.len - nl - 1;
    if (nl == 0 || nl >= cap || il == 0 || il >= sizeof(num)) {
        return MF_ERR;
    }
    memcpy(name, arg.data, nl);
    name[nl] = '\0';
    memcpy(num, slash + 1, il);
    num[il] = '\0';
    *index = (size_t)strtoul(num, &end, 10);
    return *end == '\0' ? MF_OK : MF_ERR;
}

static int
set_key(mf_str_t arg, int enable, json_t **out)
{
    char name[128], err[256];
    size_t index;

    if (split(arg, name, sizeof(name), &index) != MF_OK) {
        *out = mf_admin_error("use /keys/PROVIDER/INDEX/%s (INDEX from GET "
                              "/keys)",
                              enable ? "enable" : "disable");
        return 400;
    }
    if (mf_keypool_set_manual(name, index, enable, err, sizeof(err)) != MF_OK) {
        *out = mf_admin_error("%s", err);
        return 404;
    }
    mf_log_info("admin: key %zu of provider '%s' %s", index, name,
                enable ? "enabled" : "disabled");
    *out = json_pack("{s:s,s:I,s:b}", "provider", name, "index",
                     (json_int_t)index, "enabled", enable);
    return 200;
}

int
mf_admin_cmd_key_enable(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                        mf_str_t arg, json_t **out)
{
    MF_UNUSED(ctx);
    MF_UNUSED(q);
    return set_key(arg, 1, out);
}

int
mf_admin_cmd_key_disable(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                         mf_str_t arg, json_t **out)
{
    MF_UNUSED(ctx);
    MF_UNUSED(q);
    return set_key(arg, 0, out);
}
