/*
 * POST /stages/NAME/enable and /disable: turns a stage on or off in the
 * running generation at once (requests in flight see it at their next
 * phase). A config reload that leaves the stage unchanged keeps the
 * setting; one that changes its `enabled:` applies the config's value.
 */
#include "control/admin.h"
#include "pipeline/generation.h"

static int
set_enabled(mf_str_t arg, int on, json_t **out)
{
    mf_gen_t *g = mf_gen_acquire();
    char name[256];
    mf_pstage_t *s;

    snprintf(name, sizeof(name), "%.*s", (int)arg.len, arg.data);
    s = mf_gen_find_stage(g, name);
    if (s == NULL) {
        mf_gen_release(g);
        *out = mf_admin_error("no stage named '%s' in the current "
                              "generation; see GET /stages",
                              name);
        return 404;
    }
    mf_stage_set_enabled(s, on);
    mf_log_info("admin: stage '%s' %s", name, on ? "enabled" : "disabled");
    *out = json_pack("{s:s,s:b}", "name", name, "enabled", on);
    mf_gen_release(g);
    return 200;
}

int
mf_admin_cmd_enable(mf_admin_ctx_t *ctx, const mf_admin_req_t *q, mf_str_t arg,
                    json_t **out)
{
    MF_UNUSED(ctx);
    MF_UNUSED(q);
    return set_enabled(arg, 1, out);
}

int
mf_admin_cmd_disable(mf_admin_ctx_t *ctx, const mf_admin_req_t *q, mf_str_t arg,
                     json_t **out)
{
    MF_UNUSED(ctx);
    MF_UNUSED(q);
    return set_enabled(arg, 0, out);
}
