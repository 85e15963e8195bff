/*
 * GET /generations: every generation not yet freed, with its references
 * (requests still on it, plus one for the current), when it was built and
 * its stages. Old ones leave the list as their last request ends.
 */
#include "control/admin.h"
#include "pipeline/generation.h"

typedef struct {
    json_t *list;
    unsigned current;
} gens_t;

static void
add_gen(mf_gen_t *g, void *arg)
{
    gens_t *gs = arg;
    json_t *stages = json_array();
    size_t i;

    for (i = 0; i < g->nstages; i++) {
        json_array_append_new(
            stages, json_pack("{s:s,s:I}", "name", g->stages[i]->name,
                              "loaded_in", (json_int_t)g->stages[i]->gen_id));
    }
    json_array_append_new(
        gs->list,
        json_pack("{s:I,s:b,s:i,s:f,s:o}", "id", (json_int_t)g->id, "current",
                  g->id == gs->current, "refs", atomic_load(&g->refs),
                  "created_at", g->created_at, "stages", stages));
}

int
mf_admin_cmd_generations(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                         mf_str_t arg, json_t **out)
{
    mf_gen_t *g = mf_gen_acquire();
    gens_t gs = {json_array(), g ? g->id : 0};

    MF_UNUSED(ctx);
    MF_UNUSED(q);
    MF_UNUSED(arg);
    mf_gen_release(g);
    mf_gen_foreach_alive(add_gen, &gs);
    *out = json_pack("{s:I,s:o}", "current", (json_int_t)gs.current,
                     "generations", gs.list);
    return 200;
}
