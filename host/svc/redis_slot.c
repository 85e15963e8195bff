/*
 * Redis Cluster key routing (see redis_slot.h). The command table holds
 * the commands whose keys are not just argv[1]; any other command's key
 * is argv[1] (GET, SET, HSET, XADD, EXPIRE, ...).
 */
#include <stdlib.h>
#include <strings.h>

#include "svc/redis_slot.h"

uint16_t
mf_redis_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    size_t i;
    int b;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                                 : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

int
mf_redis_key_slot(mf_str_t key)
{
    const char *open = key.len ? memchr(key.data, '{', key.len) : NULL;

    if (open != NULL) {
        size_t at = (size_t)(open - key.data) + 1;
        const char *close = memchr(open + 1, '}', key.len - at);

        if (close != NULL && close > open + 1) {
            return mf_redis_crc16(open + 1, (size_t)(close - open - 1)) &
                   (MF_REDIS_SLOTS - 1);
        }
    }
    return mf_redis_crc16(key.data ? key.data : "", key.len) &
           (MF_REDIS_SLOTS - 1);
}

static int
is(mf_str_t a, const char *name)
{
    return a.len == strlen(name) && strncasecmp(a.data, name, a.len) == 0;
}

static int
is_any(mf_str_t a, const char *const *names)
{
    for (; *names != NULL; names++) {
        if (is(a, *names)) {
            return 1;
        }
    }
    return 0;
}

/* Commands of no key: any node answers. */
static const char *const keyless[] = {
    "PING",      "ECHO",     "INFO",      "TIME",    "DBSIZE",   "CLUSTER",
    "COMMAND",   "CONFIG",   "CLIENT",    "HELLO",   "AUTH",     "LASTSAVE",
    "RANDOMKEY", "KEYS",     "SCAN",      "MEMORY",  "LATENCY",  "SLOWLOG",
    "ROLE",      "READONLY", "READWRITE", "PUBLISH", "SPUBLISH", NULL};
/* Commands made on a connection's state, or of every node's keys, that
 * one shared connection per node cannot route. */
static const char *const refused[] = {
    "MULTI",      "EXEC",        "DISCARD",      "WATCH",
    "UNWATCH",    "SELECT",      "SUBSCRIBE",    "PSUBSCRIBE",
    "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
    "MONITOR",    "SWAPDB",      "MOVE",         "ASKING",
    "RESET",      "QUIT",        "FLUSHALL",     "FLUSHDB",
    NULL};
/* Every argument from argv[1] is a key. */
static const char *const allkeys[] = {
    "DEL",        "UNLINK",    "EXISTS",  "TOUCH",       "MGET",
    "SINTER",     "SUNION",    "SDIFF",   "SINTERSTORE", "SUNIONSTORE",
    "SDIFFSTORE", "PFCOUNT",   "PFMERGE", "RENAME",      "RENAMENX",
    "SMOVE",      "RPOPLPUSH", "LMOVE",   "COPY",        NULL};

/* Adds key k to the slot seen so far: 0 when it differs. */
static int
same_slot(mf_str_t k, int *slot)
{
    int s = mf_redis_key_slot(k);

    if (*slot < 0) {
        *slot = s;
    }
    return *slot == s;
}

mf_rcmd_kind_t
mf_redis_cmd_route(int argc, const mf_str_t *argv, int *slot, int *split)
{
    const mf_str_t *cmd = &argv[0];
    int i, from = 1, to = argc, step = 1, cross = 0;

    *slot = -1;
    *split = 0;
    if (argc < 1) {
        return MF_RCMD_REFUSED;
    }
    if (is_any(*cmd, refused)) {
        return MF_RCMD_REFUSED;
    }
    if (is(*cmd, "SCRIPT") || is(*cmd, "FUNCTION")) {
        /* LOAD, FLUSH, DELETE, RESTORE: every master; EXISTS, LIST, KILL,
         * STATS: any node */
        return argc > 1 && (is(argv[1], "LOAD") || is(argv[1], "FLUSH") ||
                            is(argv[1], "DELETE") || is(argv[1], "RESTORE"))
                   ? MF_RCMD_ALL
                   : MF_RCMD_KEYLESS;
    }
    if (is_any(*cmd, keyless)) {
        return MF_RCMD_KEYLESS;
    }
    if (is(*cmd, "EVAL") || is(*cmd, "EVALSHA") || is(*cmd, "EVAL_RO") ||
        is(*cmd, "EVALSHA_RO") || is(*cmd, "FCALL") || is(*cmd, "FCALL_RO")) {
        char n[16];
        long nk;

        if (argc < 3 || argv[2].len == 0 || argv[2].len >= sizeof(n)) {
            return MF_RCMD_KEYLESS; /* Redis refuses it */
        }
        memcpy(n, argv[2].data, argv[2].len);
        n[argv[2].len] = '\0';
        nk = strtol(n, NULL, 10);
        if (nk <= 0 || nk > argc - 3) {
            return MF_RCMD_KEYLESS; /* no key, or Redis refuses it */
        }
        from = 3;
        to = 3 + (int)nk;
    } else if (is(*cmd, "XREAD") || is(*cmd, "XREADGROUP")) {
        for (i = 1; i < argc && !is(argv[i], "STREAMS"); i++) {
        }
        if (i >= argc - 1) {
            return MF_RCMD_KEYLESS; /* Redis refuses it */
        }
        from = i + 1;
        to = from + (argc - from) / 2;
    } else if (is(*cmd, "MSET") || is(*cmd, "MSETNX")) {
        step = 2;
    } else if (is(*cmd, "BLPOP") || is(*cmd, "BRPOP") || is(*cmd, "BZPOPMIN") ||
               is(*cmd, "BZPOPMAX")) {
        to = argc - 1; /* the timeout last */
    } else if (!is_any(*cmd, allkeys)) {
        to = argc > 1 ? 2 : 1;
    }
    for (i = from; i < to; i += step) {
        if (!same_slot(argv[i], slot)) {
            cross = 1;
        }
    }
    if (cross) {
        *split = is(*cmd, "MGET");
        return MF_RCMD_CROSSSLOT;
    }
    return *slot < 0 ? MF_RCMD_KEYLESS : MF_RCMD_KEYED;
}
