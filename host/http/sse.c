/*
 * Incremental SSE parser (WHATWG event stream): line ends CRLF, LF or CR;
 * "data:" lines joined with LF; "event:" and "id:" kept; comments skipped
 * but kept in the raw bytes. Holds one partial event, bounded.
 */
#include "http/sse.h"

void
mf_sse_parser_init(mf_sse_parser_t *p, size_t max_event)
{
    memset(p, 0, sizeof(*p));
    p->raw.limit = max_event;
    p->data.limit = max_event;
}

void
mf_sse_parser_free(mf_sse_parser_t *p)
{
    mf_buf_free(&p->raw);
    mf_buf_free(&p->data);
}

size_t
mf_sse_parser_pending(const mf_sse_parser_t *p)
{
    return p->raw.len;
}

static void
reset_event(mf_sse_parser_t *p)
{
    p->raw.len = 0;
    p->data.len = 0;
    p->scanned = 0;
    p->line_start = 0;
    p->seen_field = 0;
    p->event_off = p->event_len = p->id_off = p->id_len = 0;
}

/* Handles one line [start, start+len) of raw. */
static int
field_line(mf_sse_parser_t *p, size_t start, size_t len)
{
    const char *line = p->raw.data + start;
    size_t colon = 0, voff;

    if (line[0] == ':') {
        return MF_OK; /* comment */
    }
    while (colon < len && line[colon] != ':') {
        colon++;
    }
    voff = colon < len ? colon + 1 : len;
    if (voff < len && line[voff] == ' ') {
        voff++;
    }
    if (p->seen_field == 0) {
        p->seen_field = 1;
    }
    if (colon == 4 && memcmp(line, "data", 4) == 0) {
        if (p->data.len > 0 || p->seen_field > 1) {
            if (mf_buf_try_append(&p->data, "\n", 1) != MF_OK) {
                return MF_ERR;
            }
        }
        p->seen_field = 2;
        return mf_buf_try_append(&p->data, line + voff, len - voff);
    }
    if (colon == 5 && memcmp(line, "event", 5) == 0) {
        p->event_off = start + voff;
        p->event_len = len - voff;
    } else if (colon == 2 && memcmp(line, "id", 2) == 0) {
        p->id_off = start + voff;
        p->id_len = len - voff;
    }
    return MF_OK;
}

static int
dispatch(mf_sse_parser_t *p, size_t end, mf_sse_event_cb cb, void *arg)
{
    mf_sse_event_t ev;
    int rc;

    ev.raw.data = p->raw.data;
    ev.raw.len = end;
    ev.data.data = p->data.data ? p->data.data : "";
    ev.data.len = p->data.len;
    ev.event.data = p->raw.data + p->event_off;
    ev.event.len = p->event_len;
    ev.id.data = p->raw.data + p->id_off;
    ev.id.len = p->id_len;
    rc = cb(arg, &ev);
    return rc;
}

int
mf_sse_parser_feed(mf_sse_parser_t *p, const char *in, size_t len,
                   mf_sse_event_cb cb, void *arg)
{
    if (!p->bom_checked && len > 0) {
        /* a UTF-8 BOM may open the stream */
        if (len >= 3 && (unsigned char)in[0] == 0xef &&
            (unsigned char)in[1] == 0xbb && (unsigned char)in[2] == 0xbf) {
            in += 3;
            len -= 3;
        }
        p->bom_checked = 1;
    }
    if (mf_buf_try_append(&p->raw, in, len) != MF_OK) {
        return MF_ERR;
    }
    while (p->scanned < p->raw.len) {
        char c = p->raw.data[p->scanned];
        size_t line_len, next;

        if (c != '\n' && c != '\r') {
            p->scanned++;
            continue;
        }
        if (c == '\r') {
            if (p->scanned + 1 == p->raw.len) {
                break; /* CR at the end: wait to see whether LF follows */
            }
            next = p->scanned + (p->raw.data[p->scanned + 1] == '\n' ? 2 : 1);
        } else {
            next = p->scanned + 1;
        }
        line_len = p->scanned - p->line_start;
        if (line_len == 0) {
            /* blank line: the event ends here */
            size_t rest = p->raw.len - next;

            if (dispatch(p, next, cb, arg) != MF_OK) {
                return MF_ERR;
            }
            memmove(p->raw.data, p->raw.data + next, rest);
            reset_event(p);
            p->raw.len = rest;
            continue;
        }
        if (field_line(p, p->line_start, line_len) != MF_OK) {
            return MF_ERR;
        }
        p->scanned = next;
        p->line_start = next;
    }
    return MF_OK;
}
