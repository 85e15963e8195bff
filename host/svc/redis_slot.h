/*
 * Redis Cluster key routing: the hash slot of a key (CRC16/XMODEM of its
 * hash tag {...}, or of the whole key, mod 16384) and the keys of a
 * command, found by a small table.
 */
#ifndef MF_REDIS_SLOT_H
#define MF_REDIS_SLOT_H

#include "core/core.h"

#define MF_REDIS_SLOTS 16384

typedef enum {
    MF_RCMD_KEYED,     /* one slot: *slot */
    MF_RCMD_KEYLESS,   /* any node (PING, INFO, ...) */
    MF_RCMD_ALL,       /* every master (SCRIPT LOAD, FUNCTION LOAD, ...) */
    MF_RCMD_CROSSSLOT, /* keys in more than one slot */
    MF_RCMD_REFUSED    /* cannot be routed on a cluster (MULTI, SELECT, ...) */
} mf_rcmd_kind_t;

/* CRC16/XMODEM (polynomial 0x1021, initial 0) of buf. */
uint16_t mf_redis_crc16(const char *buf, size_t len);
/* The hash slot of key: of the text inside the first {...} when it is
 * not empty, else of the whole key. */
int mf_redis_key_slot(mf_str_t key);
/* What a command touches; for MF_RCMD_KEYED, *slot. For MGET, *split
 * is set when its keys span slots (the caller may send one MGET per
 * slot and join the replies) and the kind is MF_RCMD_CROSSSLOT. */
mf_rcmd_kind_t mf_redis_cmd_route(int argc, const mf_str_t *argv, int *slot,
                                  int *split);

#endif
