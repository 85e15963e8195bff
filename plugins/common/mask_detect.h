/*
 * Built-in detectors of the mask stage: e-mail addresses, phone numbers
 * (international with a '+', CN mobiles), CN resident IDs (ISO 7064
 * checksum), US SSNs, bank cards (Luhn), IPv4 and IPv6 addresses, API
 * keys and tokens (OpenAI, Anthropic, AWS, GitHub) and generic
 * high-entropy secrets. Each scans bytes by hand (no regex): the digit
 * detectors only the windows around digits, the key and secret detector
 * only tokens of 20 bytes or more (most words are skipped unread); values
 * are ASCII, any other byte bounds them.
 * The otel stage runs the key and secret detectors over what it captures.
 */
#ifndef MF_MASK_DETECT_H
#define MF_MASK_DETECT_H

#include <stddef.h>

typedef enum {
    MF_MASK_EMAIL = 0,
    MF_MASK_PHONE,
    MF_MASK_CN_ID,
    MF_MASK_SSN,
    MF_MASK_CARD,
    MF_MASK_IP,
    MF_MASK_API_KEY,
    MF_MASK_SECRET, /* generic high-entropy token */
    MF_MASK__BUILTIN
} mf_mask_kind_t;

/* A match: bytes [start, start + len) of the text, found by `rule` (a
 * built-in kind, or MF_MASK__BUILTIN + the index of a user rule). */
typedef struct {
    size_t start;
    size_t len;
    unsigned rule;
} mf_mask_match_t;

typedef struct {
    mf_mask_match_t *v;
    size_t n;
    size_t cap;
} mf_mask_matches_t;

/* The config name of a built-in kind ("email"), and its placeholder type
 * ("EMAIL"). */
extern const char *const mf_mask_kind_names[MF_MASK__BUILTIN];
extern const char *const mf_mask_kind_types[MF_MASK__BUILTIN];

/* Appends a match; aborts on OOM like the host's allocators. */
void mf_mask_matches_add(mf_mask_matches_t *m, size_t start, size_t len,
                         unsigned rule);
void mf_mask_matches_free(mf_mask_matches_t *m);

/* Runs the built-in detectors whose bit (1 << kind) is set in `kinds`
 * over s and appends their matches. */
void mf_mask_detect(const char *s, size_t n, unsigned kinds,
                    mf_mask_matches_t *out);

/* Sorts the matches by start and drops overlaps: of two that overlap,
 * the one starting first wins, then the longer. */
void mf_mask_matches_resolve(mf_mask_matches_t *m);

/* Checks used by the detectors, exposed for tests. */
int mf_mask_luhn(const char *digits, size_t n);
int mf_mask_cn_id_valid(const char *s); /* 18 bytes */

#endif
