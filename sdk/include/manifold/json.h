/*
 * Faster drop-ins for jansson's json_dumps, json_loadb and json_pack, with
 * the same results byte for byte.
 *
 * jansson spends most of a small document's cost on bookkeeping: its
 * encoder keeps a hash table of the containers it is inside (a pointer
 * printed with snprintf per container) and writes through a callback per
 * piece, its decoder reads byte by byte through a stream with a
 * per-character buffer. These two do one pass over the bytes instead and
 * build or read the same jansson values:
 *
 *  - mf_json_dumps(v, flags) returns what json_dumps(v, flags) returns
 *    (a malloc'd string, or NULL), for every value; flags other than
 *    JSON_COMPACT and JSON_ENCODE_ANY (indentation, sorted keys, ASCII
 *    only, escaped slashes, real precision, embedding) are handed to
 *    json_dumps itself, as are strings that are not valid UTF-8;
 *  - mf_json_loadb(buf, len, flags, error) returns a value equal to
 *    json_loadb's (same types, same object key order, same strings and
 *    numbers), for flags 0, JSON_ALLOW_NUL and JSON_DECODE_ANY; any other
 *    flag, and any input it does not accept, is handed to json_loadb, so
 *    that errors carry jansson's own messages.
 *
 *  - mf_json_escape writes one string as mf_json_dumps writes it, for
 *    a caller that writes the rest of a document itself.
 *
 *  - mf_json_pack(fmt, ...) returns what json_pack(fmt, ...) returns (the
 *    same value; 'o' arguments taken, 'O' ones referenced) for the format
 *    characters { } [ ] s s# s% s? n b i I f o O o? O?; a format with
 *    any other ('+', '*'), or whose arguments json_pack refuses (a NULL
 *    string, invalid UTF-8), is handed to json_vpack_ex with the
 *    arguments untouched, so that the result is jansson's.
 *
 * The host exports them; the plugins built with Manifold link their own
 * copy.
 */
#ifndef MF_JSON_H
#define MF_JSON_H

#include <stddef.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

char *mf_json_dumps(const json_t *json, size_t flags);
json_t *mf_json_loadb(const char *buf, size_t len, size_t flags,
                      json_error_t *error);
json_t *mf_json_pack(const char *fmt, ...);
/* The string str (len bytes) as a JSON string, quotes included, escaped
 * as mf_json_dumps escapes a string value, written to dst, which holds
 * at least 6 * len + 3 bytes; NUL-terminated. Returns its length, or 0
 * when str is not valid UTF-8 (dst then holds no string). */
size_t mf_json_escape(char *dst, const char *str, size_t len);

#ifdef __cplusplus
}
#endif

#endif
