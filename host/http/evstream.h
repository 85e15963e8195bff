/*
 * Incremental decoder of the AWS event-stream binary framing
 * (application/vnd.amazon.eventstream), as Bedrock's ConverseStream sends
 * it: each message is a prelude (total length, headers length, CRC32 of
 * the two), headers, a payload and a CRC32 of everything before it. Holds
 * at most one partial message, bounded; a message larger than the limit or
 * with a bad CRC is an error, never a growing buffer.
 *
 * Each message is reported as an mf_sse_event_t: `event` is its
 * ":event-type" (or ":exception-type", or ":error-code"), `id` its
 * ":message-type" ("event", "exception" or "error"), `data` its payload
 * (":error-message" for an error message) and `raw` the whole frame.
 */
#ifndef MF_EVSTREAM_H
#define MF_EVSTREAM_H

#include "http/sse.h"

typedef struct mf_evstream_s {
    mf_buf_t buf; /* bytes of the message being read */
} mf_evstream_t;

void mf_evstream_init(mf_evstream_t *p, size_t max_message);
void mf_evstream_free(mf_evstream_t *p);

/* Feeds bytes; calls cb once per complete message. MF_ERR when a message
 * is malformed, passes the limit, fails its CRC, or cb fails. */
int mf_evstream_feed(mf_evstream_t *p, const char *in, size_t len,
                     mf_sse_event_cb cb, void *arg);

/* Bytes of a partial message held (0 at a clean message boundary). */
size_t mf_evstream_pending(const mf_evstream_t *p);

/* CRC-32 (IEEE 802.3, as zlib's crc32), continuing from crc (0 at first). */
uint32_t mf_crc32(uint32_t crc, const void *data, size_t len);

#endif
