/*
 * POST /reload and POST /stages/NAME/reload: reads the config again into a
 * new generation (all stages, or that one, loaded afresh; the others are
 * shared while unchanged). A refused reload answers 422 with the error,
 * its file and line; the current generation keeps serving.
 */
#include <ctype.h>
#include <stdlib.h>

#include "control/admin.h"
#include "pipeline/generation.h"

/* Finds "FILE:LINE:" in an error message. */
static void
locate(const char *msg, json_t *err)
{
    const char *p;

    for (p = msg; (p = strchr(p, ':')) != NULL; p++) {
        const char *d = p + 1, *start = p;
        long line;

        if (!isdigit((unsigned char)*d)) {
            continue;
        }
        line = strtol(d, (char **)&d, 10);
        if (*d != ':') {
            continue;
        }
        while (start > msg && !isspace((unsigned char)start[-1]) &&
               start[-1] != '\'' && start[-1] != '"') {
            start--;
        }
        if (start == p) {
            continue;
        }
        json_object_set_new(err, "file",
                            json_stringn(start, (size_t)(p - start)));
        json_object_set_new(err, "line", json_integer(line));
        return;
    }
}

int
mf_admin_cmd_reload(mf_admin_ctx_t *ctx, const mf_admin_req_t *q, mf_str_t arg,
                    json_t **out)
{
    char name[256], err[4096];
    mf_gen_t *g;
    json_t *reloaded, *e;
    unsigned id;
    size_t i;

    MF_UNUSED(q);
    name[0] = '\0';
    if (arg.len > 0) {
        mf_gen_t *cur = mf_gen_acquire();
        int known;

        snprintf(name, sizeof(name), "%.*s", (int)arg.len, arg.data);
        known = mf_gen_find_stage(cur, name) != NULL;
        mf_gen_release(cur);
        if (!known) {
            *out = mf_admin_error("no stage named '%s' in the current "
                                  "generation; see GET /stages",
                                  name);
            return 404;
        }
    }
    id = mf_reload(ctx->rl, "admin", name[0] ? name : NULL, err, sizeof(err));
    if (ctx->after_reload != NULL) {
        ctx->after_reload(ctx->arg);
    }
    if (id == 0) {
        e = json_pack("{s:s}", "message", err);
        locate(err, e);
        *out = json_pack("{s:b,s:o}", "ok", 0, "error", e);
        return 422;
    }
    g = mf_gen_acquire();
    reloaded = json_array();
    for (i = 0; g != NULL && i < g->nstages; i++) {
        if (g->stages[i]->gen_id == id) {
            json_array_append_new(reloaded, json_string(g->stages[i]->name));
        }
    }
    *out = json_pack("{s:b,s:I,s:o}", "ok", 1, "generation", (json_int_t)id,
                     "stages_loaded", reloaded);
    mf_gen_release(g);
    return 200;
}
