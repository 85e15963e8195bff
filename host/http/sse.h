/*
 * Incremental SSE parser: splits a byte stream into events, bounded. It
 * holds at most one partial event; an event larger than the limit is an
 * error, never a growing buffer.
 */
#ifndef MF_SSE_H
#define MF_SSE_H

#include "core/core.h"

typedef int (*mf_sse_event_cb)(void *arg, const mf_sse_event_t *ev);

typedef struct mf_sse_parser_s {
    mf_buf_t raw;   /* bytes of the event being read */
    mf_buf_t data;  /* joined data lines of the event */
    size_t scanned; /* bytes of raw already searched for a line end */
    size_t line_start;
    int seen_field; /* 1: a field (not only comments), 2: a data line */
    size_t event_off, event_len, id_off, id_len;
    int bom_checked;
} mf_sse_parser_t;

void mf_sse_parser_init(mf_sse_parser_t *p, size_t max_event);
void mf_sse_parser_free(mf_sse_parser_t *p);

/* Feeds bytes; calls cb once per complete event (events with no data and
 * no event name, such as comment-only keep-alives, are reported with an
 * empty data so pass-through keeps them). MF_ERR when an event passes the
 * limit or cb fails. */
int mf_sse_parser_feed(mf_sse_parser_t *p, const char *in, size_t len,
                       mf_sse_event_cb cb, void *arg);

/* Bytes of a partial event held (0 at a clean event boundary). */
size_t mf_sse_parser_pending(const mf_sse_parser_t *p);

#endif
