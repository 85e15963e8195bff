/*
 * api->edit_body_text (ABI 1.7): a stage's edits of string contents of
 * the canonical body's text, checked and applied by jscan.c
 * (mf_jscan_edit_size, mf_jscan_edit_apply): the body keeps its shape,
 * so its index is shifted instead of the text checked and indexed again
 * as set_body_text's is.
 */
#include "request/request-int.h"

#include "proto/proto.h"
#include "request/jscan.h"

int
mf_req_edit_body_text(mf_req_t *r, const mf_body_edit_t *ed, size_t n)
{
    mf_str_t b;
    mf_jscan_t *js;
    long len;
    char *nb;

    if (!r->proto->canonical) {
        return MF_ERR;
    }
    if (n == 0) {
        return MF_OK;
    }
    if (r->json != NULL || !r->body_lazy) {
        /* a parsed tree: its text is serialized now, and checked whole */
        if (mf_req_body_text(r, &b) != MF_OK ||
            (len = mf_jscan_edit_size(b, ed, n)) < 0 ||
            (nb = mf_pool_alloc(r->pool, (size_t)len + 1)) == NULL) {
            return MF_ERR;
        }
        mf_jscan_edit_apply(b, NULL, ed, n, nb, NULL);
        return mf_req_set_body_text(r, (mf_str_t){nb, (size_t)len});
    }
    b = r->body;
    if ((len = mf_jscan_edit_size(b, ed, n)) < 0 ||
        (nb = mf_pool_alloc(r->pool, (size_t)len + 1)) == NULL ||
        (js = mf_pool_alloc(r->pool, sizeof(*js))) == NULL) {
        return MF_ERR;
    }
    mf_jscan_edit_apply(b, r->body_scan, ed, n, nb, js);
    nb[len] = '\0';
    if (r->body_own == NULL) {
        /* the client's bytes stay until the end: a stage may hold a
         * field it borrowed from them */
        r->body_own = (char *)r->body.data;
    }
    r->body = (mf_str_t){nb, (size_t)len};
    r->body_scan = js;
    r->body_dirty = 0;
    return MF_OK;
}
