/*
 * A failed attempt: its outcome (key and target health), scrubbing the
 * upstream's error, and retry on another key or target, or the answer.
 */
#include "request/request-int.h"

#include <math.h>
#include <stdio.h>
#include <strings.h>

#include "routing/keypool.h"

#define MF_RETRY_DEFAULT                                                       \
    (MF_RETRY_5XX | MF_RETRY_429 | MF_RETRY_TIMEOUT | MF_RETRY_CONNECT |       \
     MF_RETRY_AUTH)

/*
 * After a failed attempt (already closed): tries again when nothing was
 * sent to the client, the route retries this kind of failure and its
 * budget allows: another key of the same target for a key's failure
 * (401/403, 429), else the next target, else another key of the last
 * one. Returns 1 when the request went on.
 */
static int
attempt_retry(mf_req_t *r, const mf_outcome_t *o)
{
    unsigned on = r->route ? r->route->retry_on : MF_RETRY_DEFAULT;
    int budget = r->route ? r->route->retries : -1;
    size_t cur = r->target_idx;

    if (r->head_sent || r->conn == NULL || o->kind == 0 || !(on & o->kind) ||
        (budget >= 0 && r->attempts >= 1 + budget)) {
        return 0;
    }
    if (!((o->kind & (MF_RETRY_AUTH | MF_RETRY_429)) &&
          mf_req_attempt_select(r, cur, cur + 1, 0)) &&
        !mf_req_attempt_select(r, cur + 1, r->ntargets, 0) &&
        !mf_req_attempt_select(r, cur, cur + 1, 0) &&
        !mf_req_attempt_select(r, cur + 1, r->ntargets, 1)) {
        return 0;
    }
    if (mf_req_attempt_prepare(r) != MF_OK) {
        return 1;
    }
    mf_req_step(r);
    return 1;
}

/*
 * How long the upstream asked to wait, in ms of whole seconds (0 = it did
 * not say): its Retry-After header (mf_http_retry_after: seconds or an
 * HTTP date; nan, inf or garbage count as absent), else the provider's
 * hint from the body (err->retry_after), at most limits.max_retry_after.
 * A 429 rests its key this long and the client is told the same.
 */
static double
retry_after_ms(mf_req_t *r, const mf_error_t *err)
{
    double cap = r->gen->config->limits.max_retry_after_ms / 1000, secs;
    mf_str_t ra;

    if (mf_hlist_get(&r->att.up_resp_headers, MF_STR("retry-after"), &ra) ==
            MF_OK &&
        mf_http_retry_after(ra, mf_wall_time(), cap, &secs) == MF_OK) {
        /* the header's word */
    } else if (err != NULL && err->retry_after > 0) {
        secs = fmin(err->retry_after, cap);
    } else {
        return 0;
    }
    return fmax(1, ceil(secs)) * 1000;
}

/* The outcome of an upstream answer with a status. */
static void
outcome_status(mf_req_t *r, int st, mf_outcome_t *o, const mf_error_t *err)
{
    const char *code = err && err->code ? err->code : "";

    memset(o, 0, sizeof(*o));
    snprintf(o->what, sizeof(o->what), "%d", st);
    if (st == 401 || st == 403) {
        o->kind = MF_RETRY_AUTH;
        o->keyres = MF_KEYRES_AUTH;
    } else if (st == 429) {
        o->kind = MF_RETRY_429;
        o->keyres = MF_KEYRES_RATE;
        o->retry_after_ms = retry_after_ms(r, err);
    } else if (st >= 500) {
        o->kind = MF_RETRY_5XX;
        o->keyres = MF_KEYRES_FAIL;
        o->breaker_fail = 1;
    } else if (strstr(code, "context_length") != NULL) {
        o->kind = MF_RETRY_CONTEXT;
        o->keyres = MF_KEYRES_NEUTRAL;
    } else if (strstr(code, "content_filter") != NULL ||
               strstr(code, "content_policy") != NULL) {
        o->kind = MF_RETRY_FILTER;
        o->keyres = MF_KEYRES_NEUTRAL;
    } else {
        o->kind = MF_RETRY_4XX;
        o->keyres = MF_KEYRES_NEUTRAL;
    }
}

void
mf_req_outcome_error(mf_outcome_t *o, mf_uperr_t kind)
{
    memset(o, 0, sizeof(*o));
    o->keyres = MF_KEYRES_FAIL;
    o->breaker_fail = 1;
    switch (kind) {
    case MF_UPERR_TIMEOUT:
        o->kind = MF_RETRY_TIMEOUT;
        snprintf(o->what, sizeof(o->what), "timeout");
        break;
    case MF_UPERR_CONNECT:
        o->kind = MF_RETRY_CONNECT;
        snprintf(o->what, sizeof(o->what), "connect");
        break;
    default:
        o->kind = MF_RETRY_5XX;
        snprintf(o->what, sizeof(o->what), "cut");
        break;
    }
}

/* Masks the attempt's secrets in an upstream error message (a string,
 * edited in place): its key, the credentials the provider sent (a Vertex
 * token, an Azure api-key ...), its provider's keys and key-shaped text
 * (mf_keypool_scrub). Every upstream error passes here before the
 * client, the access log or a metric sees it. */
void
mf_req_scrub_error(mf_req_t *r, char *message)
{
    static const char *const creds[] = {"authorization", "x-api-key", "api-key",
                                        "x-goog-api-key", NULL};
    mf_str_t secrets[8];
    size_t n = 0, i;

    if (r->att.up_key.len > 0) {
        secrets[n++] = r->att.up_key;
    }
    for (i = 0; creds[i] != NULL; i++) {
        mf_str_t v;

        if (mf_hlist_get(&r->att.up_req_headers, mf_str_from(creds[i]), &v) !=
            MF_OK) {
            continue;
        }
        if (v.len > 7 && strncasecmp(v.data, "Bearer ", 7) == 0) {
            v.data += 7;
            v.len -= 7;
        }
        secrets[n++] = v;
    }
    mf_keypool_scrub(r->att.prov, secrets, n, message);
}

/*
 * The attempt failed as o says: closes it (key and target health), then
 * retries or falls back when attempt_retry allows, else answers
 * the client with o's status, type, code and message (a Retry-After of
 * o->retry_after seconds when set) and finishes the request. Every path
 * on which an attempt fails before the client saw a byte ends here.
 */
void
mf_req_attempt_failed(mf_req_t *r, const mf_outcome_t *o)
{
    char num[16];

    mf_req_attempt_close(r, o, -1);
    if (attempt_retry(r, o)) {
        return;
    }
    if (o->retry_after > 0) {
        /* the client waits as long as the key rests */
        snprintf(num, sizeof(num), "%d", o->retry_after);
        mf_hlist_set(r->pool, &r->resp_headers, MF_STR("retry-after"),
                     mf_str_from(num));
    }
    mf_req_respond_error(r, o->status, o->type ? o->type : "upstream_error",
                         o->code, o->message);
    mf_req_finish(r);
}

/* The attempt failed with the provider's err (an upstream error answer,
 * a failed stream, a refused authorize) under the upstream's status:
 * err, scrubbed of secrets, is the answer if it is not retried. */
void
mf_req_attempt_error(mf_req_t *r, const mf_error_t *up_err, int status)
{
    mf_error_t scrubbed = *up_err;
    const mf_error_t *err = &scrubbed;
    mf_outcome_t o;
    double ra_ms;

    mf_req_scrub_error(r, scrubbed.message);
    outcome_status(r, status, &o, err);
    if (status != r->att.up_status) {
        /* a 2xx the provider refused (safety block) or no upstream call */
        snprintf(o.what, sizeof(o.what), "%s", err->code ? err->code : "error");
    }
    ra_ms = o.retry_after_ms > 0 ? o.retry_after_ms : retry_after_ms(r, err);
    o.status = err->status;
    o.type = err->type;
    o.code = err->code;
    o.message = err->message;
    o.retry_after = (int)(ra_ms / 1000);
    mf_req_attempt_failed(r, &o);
}
