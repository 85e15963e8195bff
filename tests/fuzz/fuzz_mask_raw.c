/*
 * libFuzzer driver: the mask stage's walk over a raw JSON body and the
 * escaping it rewrites texts with. For any bytes the walk either gives
 * up or gives spans that lie inside the body, in order, each between a
 * string's quotes; each text unescaped and escaped again is the contents
 * of one JSON string (the walk finds exactly it in {"input":"..."}) and
 * unescapes back to the same bytes; and when the body is JSON, the body
 * with every text so rewritten is JSON equal to it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../plugins/mask/mask_raw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* whether an escape in s[0, n) is a \u one */
static int
has_u_escape(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i + 1 < n; i++) {
        if (s[i] == '\\' && s[++i] == 'u') {
            return 1;
        }
    }
    return 0;
}

static void
check_escaped(const mf_mask_buf_t *dec, const mf_mask_buf_t *enc)
{
    mf_mask_buf_t doc = {0}, back = {0};
    mf_mask_raw_t r = {0};
    const char *e = enc->data ? enc->data : "";

    mf_mask_buf_add(&doc, "{\"input\":\"", 10);
    mf_mask_buf_add(&doc, e, enc->len);
    mf_mask_buf_add(&doc, "\"}", 2);
    if (mf_mask_raw_texts(doc.data, doc.len, &r) != 0 || r.n != 2 ||
        r.span[0] != 10 || r.span[1] != enc->len) {
        abort();
    }
    /* \u escapes (control bytes) are the parser's to undo */
    if (!has_u_escape(e, enc->len) &&
        (mf_mask_json_unescape(e, enc->len, &back) != 0 ||
         back.len != dec->len ||
         (back.len && memcmp(back.data, dec->data, back.len) != 0))) {
        abort();
    }
    free(r.span);
    mf_mask_buf_free(&doc);
    mf_mask_buf_free(&back);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    mf_mask_raw_t r = {0};
    mf_mask_buf_t dec = {0}, enc = {0}, body = {0};
    size_t i, last = 0;
    json_t *orig, *again;

    if (mf_mask_raw_texts(s, size, &r) != 0) {
        free(r.span);
        return 0;
    }
    if (r.n % 2 != 0) {
        abort();
    }
    for (i = 0; i < r.n; i += 2) {
        size_t at = r.span[i], len = r.span[i + 1];

        if (at < 1 || at < last || at + len >= size || s[at - 1] != '"' ||
            s[at + len] != '"') {
            abort();
        }
        mf_mask_buf_add(&body, s + last, at - last);
        last = at + len;
        if (mf_mask_json_unescape(s + at, len, &dec) != 0) {
            mf_mask_buf_add(&body, s + at, len); /* the parser's */
            continue;
        }
        enc.len = 0;
        mf_mask_json_escape_add(&enc, dec.data ? dec.data : "", dec.len);
        check_escaped(&dec, &enc);
        mf_mask_buf_add(&body, enc.data ? enc.data : "", enc.len);
    }
    mf_mask_buf_add(&body, s + last, size - last);

    orig = json_loadb(s, size, JSON_ALLOW_NUL, NULL);
    if (orig != NULL) {
        again = json_loadb(body.data, body.len, JSON_ALLOW_NUL, NULL);
        if (again == NULL || !json_equal(orig, again)) {
            abort();
        }
        json_decref(again);
        json_decref(orig);
    }
    free(r.span);
    mf_mask_buf_free(&dec);
    mf_mask_buf_free(&enc);
    mf_mask_buf_free(&body);
    return 0;
}
