/*
 * The table of inbound protocol adapters and the lookup of the one that
 * serves a path.
 */
#include "proto/proto.h"

#include <stdlib.h>

#include <manifold/json.h>

const mf_proto_t *const mf_protos[] = {
    &mf_proto_openai,
    &mf_proto_anthropic,
    &mf_proto_responses,
    &mf_proto_gemini,
    NULL,
};

int
mf_proto_has_prefix(mf_str_t s, const char *prefix)
{
    size_t n = strlen(prefix);

    return s.len >= n && memcmp(s.data, prefix, n) == 0;
}

mf_str_t
mf_proto_route(const mf_proto_t *p, mf_str_t path)
{
    mf_str_t t = MF_STR_NULL;
    size_t i;

    if (p != NULL && p->route != NULL) {
        t = p->route(path);
    }
    /* another adapter's (a model list answered in another's shape) */
    for (i = 0; t.len == 0 && mf_protos[i] != NULL; i++) {
        if (mf_protos[i] != p && mf_protos[i]->route != NULL) {
            t = mf_protos[i]->route(path);
        }
    }
    return t;
}

int
mf_proto_put_str(mf_buf_t *b, const char *s)
{
    size_t n = strlen(s), k;
    char small[512], *dst = 6 * n + 3 <= sizeof(small) ? small : NULL;

    if (dst == NULL && (dst = malloc(6 * n + 3)) == NULL) {
        return MF_ERR;
    }
    k = mf_json_escape(dst, s, n);
    if (k > 0) {
        mf_buf_append(b, dst, k);
    }
    if (dst != small) {
        free(dst);
    }
    return k > 0 ? MF_OK : MF_ERR;
}

const mf_proto_t *
mf_proto_find(mf_str_t path, mf_endpoint_t *endpoint, int *local)
{
    const mf_proto_t *owner = NULL;
    size_t i;

    *endpoint = MF_ENDPOINT_NONE;
    *local = 0;
    for (i = 0; mf_protos[i] != NULL; i++) {
        mf_proto_match_t m = mf_protos[i]->match(path, endpoint);

        if (m == MF_PROTO_SERVES || m == MF_PROTO_LOCAL) {
            *local = m == MF_PROTO_LOCAL;
            return mf_protos[i];
        }
        if (m == MF_PROTO_OWNS && owner == NULL) {
            owner = mf_protos[i];
        }
        *endpoint = MF_ENDPOINT_NONE;
    }
    return owner != NULL ? owner : mf_protos[0];
}
