/*
 * GET /stats: requests served and in flight, workers, the current and the
 * live generations, reloads (attempts, failures, the last one and its
 * error), and time spent per stage.
 */
#include "control/admin.h"
#include "pipeline/generation.h"

static void
count_alive(mf_gen_t *g, void *arg)
{
    MF_UNUSED(g);
    (*(int *)arg)++;
}

int
mf_admin_cmd_stats(mf_admin_ctx_t *ctx, const mf_admin_req_t *q, mf_str_t arg,
                   json_t **out)
{
    mf_gen_t *g = mf_gen_acquire();
    mf_reloader_t *rl = ctx->rl;
    json_t *stages = json_array(), *reload;
    uint64_t requests = 0;
    int alive = 0, i;
    size_t k;

    MF_UNUSED(q);
    MF_UNUSED(arg);
    for (i = 0; i < ctx->server->nworkers; i++) {
        requests += atomic_load(&ctx->server->workers[i].requests);
    }
    mf_gen_foreach_alive(count_alive, &alive);
    for (k = 0; g != NULL && k < g->nstages; k++) {
        mf_pstage_t *s = g->stages[k];

        json_array_append_new(
            stages,
            json_pack("{s:s,s:I,s:I,s:f}", "name", s->name, "requests",
                      (json_int_t)atomic_load(&s->stats.requests), "errors",
                      (json_int_t)atomic_load(&s->stats.errors), "time_ms",
                      (double)atomic_load(&s->stats.time_ns) / 1e6));
    }
    reload = json_pack("{s:I,s:I}", "attempts", (json_int_t)rl->attempts,
                       "failures", (json_int_t)rl->failures);
    if (rl->attempts > 0) {
        json_object_set_new(
            reload, "last",
            json_pack("{s:f,s:s,s:b,s:o}", "at", rl->last_at, "trigger",
                      rl->last_trigger, "ok", rl->last_ok, "error",
                      rl->last_ok ? json_null() : json_string(rl->last_error)));
    }
    *out = json_pack("{s:f,s:I,s:i,s:i,s:I,s:i,s:o,s:o,s:I}", "uptime_s",
                     mf_wall_time() - ctx->started_at, "requests",
                     (json_int_t)requests, "in_flight",
                     mf_server_in_flight(ctx->server), "workers",
                     ctx->server->nworkers, "generation",
                     (json_int_t)(g ? g->id : 0), "generations_alive", alive,
                     "reloads", reload, "stages", stages, "watched_files",
                     (json_int_t)(ctx->watch ? mf_watch_count(ctx->watch) : 0));
    mf_gen_release(g);
    return 200;
}
