/*
 * GET /stages: every stage of the current generation with its kind, file,
 * version, the generation that loaded it, whether it is enabled, requests
 * served, errors, time spent and its last error.
 */
#include "control/admin.h"
#include "pipeline/generation.h"
#include "pipeline/pipeline.h"

json_t *
mf_admin_stage_json(mf_pstage_t *s)
{
    json_t *hooks = json_array(), *j;
    char err[512];
    double err_at = mf_stage_get_error(s, err, sizeof(err));
    int i;

    for (i = 0; i < MF_STAGE__COUNT; i++) {
        if ((s->hooks & MF_HOOK(i)) && mf_stage_fn_names[i] != NULL) {
            json_array_append_new(hooks, json_string(mf_stage_fn_names[i]));
        }
    }
    j = json_pack("{s:s,s:s,s:s,s:s,s:I,s:b,s:o,s:I,s:I,s:f,s:f}", "name",
                  s->name, "kind", s->rt->name, "file", s->file, "version",
                  mf_stage_version(s), "generation", (json_int_t)s->gen_id,
                  "enabled", atomic_load(&s->enabled), "hooks", hooks,
                  "requests", (json_int_t)atomic_load(&s->stats.requests),
                  "errors", (json_int_t)atomic_load(&s->stats.errors),
                  "time_ms", (double)atomic_load(&s->stats.time_ns) / 1e6,
                  "loaded_at", s->loaded_at);
    json_object_set_new(j, "last_error",
                        err[0] ? json_string(err) : json_null());
    json_object_set_new(j, "last_error_at",
                        err[0] ? json_real(err_at) : json_null());
    json_object_set_new(j, "files_changed",
                        json_boolean(mf_stage_files_changed(s)));
    return j;
}

int
mf_admin_cmd_stages(mf_admin_ctx_t *ctx, const mf_admin_req_t *q, mf_str_t arg,
                    json_t **out)
{
    mf_gen_t *g = mf_gen_acquire();
    json_t *list = json_array();
    size_t i;

    MF_UNUSED(ctx);
    MF_UNUSED(q);
    MF_UNUSED(arg);
    for (i = 0; g != NULL && i < g->nstages; i++) {
        json_array_append_new(list, mf_admin_stage_json(g->stages[i]));
    }
    *out = json_pack("{s:I,s:o}", "generation", (json_int_t)(g ? g->id : 0),
                     "stages", list);
    mf_gen_release(g);
    return 200;
}
