/*
 * GET /commands: the admin commands stages registered (ABI 1.4), with
 * their stage and usage line.
 * POST /commands/NAME: runs one with the request's JSON object as its
 * arguments, on the current generation, and answers with what it says.
 */
#include <stdlib.h>

#include "control/admin.h"
#include "pipeline/generation.h"

int
mf_admin_cmd_commands(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                      mf_str_t arg, json_t **out)
{
    mf_gen_t *g = mf_gen_acquire();
    json_t *list = json_array();
    size_t i, j;

    MF_UNUSED(ctx);
    MF_UNUSED(q);
    MF_UNUSED(arg);
    for (i = 0; g != NULL && i < g->nstages; i++) {
        mf_pstage_t *s = g->stages[i];

        for (j = 0; j < s->ncommands; j++) {
            json_array_append_new(list, json_pack("{s:s,s:s,s:s}", "name",
                                                  s->commands[j].name, "stage",
                                                  s->name, "usage",
                                                  s->commands[j].usage));
        }
    }
    mf_gen_release(g);
    *out = json_pack("{s:o}", "commands", list);
    return 200;
}

int
mf_admin_cmd_command_run(mf_admin_ctx_t *ctx, const mf_admin_req_t *q,
                         mf_str_t arg, json_t **out)
{
    mf_gen_t *g;
    const mf_command_t *cmd;
    json_t *args = NULL, *res = NULL;
    json_error_t jerr;
    int status;

    MF_UNUSED(ctx);
    if (q->body.len > 0) {
        args = json_loadb(q->body.data, q->body.len, 0, &jerr);
        if (!json_is_object(args)) {
            json_decref(args);
            *out = mf_admin_error("the body of POST /commands/%.*s must be a "
                                  "JSON object of arguments",
                                  (int)arg.len, arg.data);
            return 400;
        }
    } else {
        args = json_object();
    }
    g = mf_gen_acquire();
    cmd = mf_gen_find_command(g, arg);
    if (cmd == NULL) {
        mf_gen_release(g);
        json_decref(args);
        *out = mf_admin_error("no command '%.*s'; GET /commands lists what "
                              "the stages register",
                              (int)arg.len, arg.data);
        return 404;
    }
    status = cmd->fn(cmd->arg, args, &res);
    mf_gen_release(g);
    json_decref(args);
    if (status < 200 || status > 599) {
        json_decref(res);
        res = mf_admin_error("command '%.*s' answered status %d", (int)arg.len,
                             arg.data, status);
        status = 500;
    }
    *out = res != NULL ? res : json_object();
    return status;
}
