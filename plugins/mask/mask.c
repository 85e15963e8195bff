/*
 * mask: finds personal data and secrets in every text the model is sent
 * and replaces them before the request leaves the gateway; puts the
 * values back in the answer, streams included.
 *
 * The canonical request (OpenAI chat, after the inbound adapter) is
 * walked whole: string contents, content-part arrays, system, tool and
 * assistant messages, tool-call arguments, an embeddings input. Built-in
 * detectors (mask_detect.c) and user rules (PCRE2 regexes, JIT-compiled;
 * keyword lists on one automaton) find values; each rule's action is
 *   placeholder  a typed placeholder ([EMAIL_1], the same for the same
 *                value within a request), restored in the answer;
 *   redact       a typed marker ([EMAIL_REDACTED]), nothing restored;
 *   hash         a keyed hash ([EMAIL:<16 hex of HMAC-SHA256>]) with the
 *                stage's secret: the same value, the same token, joinable
 *                across requests without the value;
 *   block        a 400 naming the rule, in the client's protocol.
 * API keys and secrets can be redacted, hashed or blocked, never kept
 * for restoring.
 *
 * Restoring a stream (mask_restore.c) works on each event's decoded text
 * per channel (a choice's content, reasoning, a tool call's arguments):
 * it holds back only a tail that may still become one of the request's
 * placeholders, and releases held text as an event of the same shape
 * (api->insert_response_chunk) before any event that is not text of
 * that channel (a tool call, a finish, usage, the end). A request
 * without placeholders is not touched.
 *
 * Metrics: manifold_mask_entities_total{type,action},
 * manifold_mask_blocked_total{rule}; no value is ever a label or logged.
 */
#include <manifold/plugin.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kwmatch.h"
#include "../common/mask_detect.h"
#include "mask_raw.h"
#include "mask_restore.h"

static const mf_host_api_t *api;

typedef enum { ACT_PLACEHOLDER = 0, ACT_REDACT, ACT_HASH, ACT_BLOCK } action_t;

static const char *const action_names[] = {"placeholder", "redact", "hash",
                                           "block"};

/* A rule: a built-in detector (the first MF_MASK__BUILTIN) or a user's. */
typedef struct {
    char *name; /* config name, the metric label and the 400's word */
    char *type; /* placeholder type: "EMAIL" */
    action_t action;
    pcre2_code *re; /* regex rule */
    int is_keywords;
    unsigned first; /* the first rule of the same type (one counter) */
    int series;     /* its entities' metric series; -1 until known */
} rule_t;

typedef struct {
    rule_t *rules;
    size_t nrules;
    unsigned kinds; /* enabled built-in detectors */
    mf_kw_t *kw;    /* every keyword rule's words; id = rule index */
    int has_kw;
    size_t nregex; /* user regex rules */
    char *secret;
    size_t secret_len;
    int restore;
    mf_metric_t *m_entities;
    mf_metric_t *m_blocked;
} mask_t;

/* Memory for a request's placeholders and values: chunks that never
 * move (entries point into them), wiped and freed at the end. */
struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
};

/* A restoring channel of a stream: one text field of one choice. */
typedef struct {
    int choice;
    int kind; /* 0 content, 1 reasoning_content, 2 + k: tool call k */
    mf_mask_buf_t held;
} chan_t;

typedef struct {
    mf_mask_entry_t *e; /* placeholders given (restorable values) */
    const char **etype; /* the type of each */
    size_t n, cap;
    unsigned *counter; /* per rule type: placeholders given */
    mf_mask_matches_t m;
    mf_mask_buf_t out;
    /* the replacements of the texts masked: the span of the text (or of
     * the body's bytes) and the replacing bytes in rbuf */
    struct rep {
        size_t start, len, roff, rlen;
    } * rep;
    size_t nrep, caprep;
    mf_mask_buf_t rbuf;
    struct chunk *chunks; /* the placeholders and their values */
    chan_t *ch;
    size_t nch;
    json_t *top; /* the stream's chunk fields (id, model, ...) */
    const char *blocked;
    unsigned masked; /* values replaced in the request */
} mreq_t;

/* ---- config ---- */

static void
mask_fini(void *state)
{
    mask_t *st = state;
    size_t i;

    if (st == NULL) {
        return;
    }
    for (i = 0; i < st->nrules; i++) {
        free(st->rules[i].name);
        free(st->rules[i].type);
        pcre2_code_free(st->rules[i].re);
    }
    free(st->rules);
    mf_kw_free(st->kw);
    if (st->secret != NULL) {
        memset(st->secret, 0, st->secret_len);
        free(st->secret);
    }
    free(st);
}

static int
parse_action(const char *where, const json_t *v, action_t *out)
{
    size_t i;
    const char *s = json_string_value(v);

    for (i = 0; s != NULL && i < 4; i++) {
        if (strcmp(s, action_names[i]) == 0) {
            *out = (action_t)i;
            return 0;
        }
    }
    api->log(MF_LOG_ERROR,
             "mask: %s: the action is one of placeholder, redact, hash, "
             "block",
             where);
    return -1;
}

static int
builtin_index(const char *name)
{
    int k;

    for (k = 0; k < MF_MASK__BUILTIN; k++) {
        if (strcmp(name, mf_mask_kind_names[k]) == 0) {
            return k;
        }
    }
    return -1;
}

static char *
upper_dup(const char *s)
{
    char *d = strdup(s), *p;

    for (p = d; p && *p; p++) {
        if (*p >= 'a' && *p <= 'z') {
            *p = (char)(*p - 32);
        } else if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
            *p = '_';
        }
    }
    return d;
}

static int
valid_name(const char *s)
{
    const char *p;

    if (s == NULL || *s == '\0' || strlen(s) > 40) {
        return 0;
    }
    for (p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) {
            return 0;
        }
    }
    return 1;
}

static int
parse_user_rule(mask_t *st, size_t idx, const json_t *r)
{
    rule_t *rule = &st->rules[MF_MASK__BUILTIN + idx];
    const char *key, *name = json_string_value(json_object_get(r, "name"));
    const json_t *v, *re = json_object_get(r, "regex"),
                     *kws = json_object_get(r, "keywords");
    char where[96];

    snprintf(where, sizeof(where), "rules[%zu]", idx);
    if (!json_is_object(r) || !valid_name(name)) {
        api->log(MF_LOG_ERROR,
                 "mask: %s: each rule needs a name (letters, digits, '_', "
                 "'-'; 40 at most)",
                 where);
        return -1;
    }
    json_object_foreach((json_t *)r, key, v)
    {
        if (strcmp(key, "name") && strcmp(key, "regex") &&
            strcmp(key, "keywords") && strcmp(key, "action") &&
            strcmp(key, "type") && strcmp(key, "case_insensitive")) {
            api->log(MF_LOG_ERROR,
                     "mask: %s: unknown key '%s' (name, regex, keywords, "
                     "action, type, case_insensitive)",
                     where, key);
            return -1;
        }
    }
    if (builtin_index(name) >= 0) {
        api->log(MF_LOG_ERROR,
                 "mask: %s: '%s' is a built-in detector's name; choose "
                 "another",
                 where, name);
        return -1;
    }
    rule->name = strdup(name);
    v = json_object_get(r, "type");
    if (v != NULL && !valid_name(json_string_value(v))) {
        api->log(MF_LOG_ERROR, "mask: %s: type is a word (letters, digits)",
                 where);
        return -1;
    }
    rule->type = upper_dup(v ? json_string_value(v) : name);
    rule->action = ACT_PLACEHOLDER;
    if ((v = json_object_get(r, "action")) != NULL &&
        parse_action(where, v, &rule->action) != 0) {
        return -1;
    }
    if ((re != NULL) == (kws != NULL)) {
        api->log(MF_LOG_ERROR, "mask: %s: a rule has a regex or keywords",
                 where);
        return -1;
    }
    if (re != NULL) {
        int err;
        PCRE2_SIZE off;
        uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK;

        if (!json_is_string(re) || json_string_length(re) == 0) {
            api->log(MF_LOG_ERROR, "mask: %s: regex is a non-empty string",
                     where);
            return -1;
        }
        opts &= ~(uint32_t)PCRE2_NO_UTF_CHECK;
        if (json_is_true(json_object_get(r, "case_insensitive"))) {
            opts |= PCRE2_CASELESS;
        }
        rule->re =
            pcre2_compile((PCRE2_SPTR)json_string_value(re),
                          json_string_length(re), opts, &err, &off, NULL);
        if (rule->re == NULL) {
            PCRE2_UCHAR msg[160];

            pcre2_get_error_message(err, msg, sizeof(msg));
            api->log(MF_LOG_ERROR, "mask: %s: regex: %s at offset %zu", where,
                     (char *)msg, (size_t)off);
            return -1;
        }
        /* JIT when the platform has it; the interpreter otherwise */
        (void)pcre2_jit_compile(rule->re, PCRE2_JIT_COMPLETE);
        st->nregex++;
        return 0;
    }
    if (!json_is_array(kws) || json_array_size(kws) == 0) {
        api->log(MF_LOG_ERROR, "mask: %s: keywords is a list of words", where);
        return -1;
    }
    {
        size_t i;
        const json_t *w;
        int nocase = json_is_true(json_object_get(r, "case_insensitive"));

        if (st->kw == NULL) {
            st->kw = mf_kw_new(nocase);
        }
        json_array_foreach(kws, i, w)
        {
            if (!json_is_string(w) ||
                mf_kw_add(st->kw, json_string_value(w), json_string_length(w),
                          (unsigned)(MF_MASK__BUILTIN + idx)) != 0) {
                api->log(MF_LOG_ERROR,
                         "mask: %s: keywords[%zu]: a word of 1 to 255 bytes",
                         where, i);
                return -1;
            }
        }
        rule->is_keywords = 1;
        st->has_kw = 1;
    }
    return 0;
}

static int
mask_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    static const char *const ent_labels[] = {"type", "action", NULL};
    static const char *const blk_labels[] = {"rule", NULL};
    mask_t *st;
    json_t *cfg = json_loads(config_json, 0, NULL), *v;
    const char *key;
    action_t dflt = ACT_PLACEHOLDER;
    size_t i, nuser;
    int k, need_secret = 0;

    api = host;
    if (!json_is_object(cfg)) {
        api->log(MF_LOG_ERROR, "mask: the config is a mapping");
        json_decref(cfg);
        return MF_ERR;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        json_decref(cfg);
        return MF_ERR;
    }
    json_object_foreach(cfg, key, v)
    {
        if (strcmp(key, "detectors") && strcmp(key, "action") &&
            strcmp(key, "actions") && strcmp(key, "secret") &&
            strcmp(key, "rules") && strcmp(key, "restore")) {
            api->log(MF_LOG_ERROR,
                     "mask: unknown key '%s' (detectors, action, actions, "
                     "secret, rules, restore)",
                     key);
            goto fail;
        }
    }
    v = json_object_get(cfg, "rules");
    if (v != NULL && !json_is_array(v)) {
        api->log(MF_LOG_ERROR, "mask: rules is a list");
        goto fail;
    }
    nuser = json_array_size(v);
    st->nrules = MF_MASK__BUILTIN + nuser;
    st->rules = calloc(st->nrules, sizeof(*st->rules));
    if (st->rules == NULL) {
        goto fail;
    }
    if ((v = json_object_get(cfg, "action")) != NULL &&
        parse_action("action", v, &dflt) != 0) {
        goto fail;
    }
    v = json_object_get(cfg, "detectors");
    if (v == NULL) {
        st->kinds = (1u << MF_MASK__BUILTIN) - 1;
    } else if (!json_is_array(v)) {
        api->log(MF_LOG_ERROR, "mask: detectors is a list of names");
        goto fail;
    } else {
        const json_t *d;

        json_array_foreach(v, i, d)
        {
            k = json_is_string(d) ? builtin_index(json_string_value(d)) : -1;
            if (k < 0) {
                api->log(MF_LOG_ERROR,
                         "mask: detectors[%zu]: not a detector (email, "
                         "phone, cn_id, ssn, card, ip, api_key, secret)",
                         i);
                goto fail;
            }
            st->kinds |= 1u << k;
        }
    }
    for (k = 0; k < MF_MASK__BUILTIN; k++) {
        rule_t *r = &st->rules[k];

        r->name = strdup(mf_mask_kind_names[k]);
        r->type = strdup(mf_mask_kind_types[k]);
        /* secrets are never kept for restoring: redacted by default */
        r->action = (k == MF_MASK_API_KEY || k == MF_MASK_SECRET) &&
                            dflt == ACT_PLACEHOLDER
                        ? ACT_REDACT
                        : dflt;
    }
    v = json_object_get(cfg, "actions");
    if (v != NULL) {
        const char *dk;
        json_t *dv;

        if (!json_is_object(v)) {
            api->log(MF_LOG_ERROR, "mask: actions maps a detector to an "
                                   "action");
            goto fail;
        }
        json_object_foreach(v, dk, dv)
        {
            char where[64];

            k = builtin_index(dk);
            snprintf(where, sizeof(where), "actions.%.40s", dk);
            if (k < 0) {
                api->log(MF_LOG_ERROR, "mask: %s: not a detector", where);
                goto fail;
            }
            if (parse_action(where, dv, &st->rules[k].action) != 0) {
                goto fail;
            }
        }
    }
    for (k = MF_MASK_API_KEY; k <= MF_MASK_SECRET; k++) {
        if (st->rules[k].action == ACT_PLACEHOLDER) {
            api->log(MF_LOG_ERROR,
                     "mask: actions.%s: a secret is never kept for "
                     "restoring; use redact, hash or block",
                     mf_mask_kind_names[k]);
            goto fail;
        }
    }
    json_array_foreach(json_object_get(cfg, "rules"), i, v)
    {
        if (parse_user_rule(st, i, v) != 0) {
            goto fail;
        }
    }
    if (st->kw != NULL) {
        mf_kw_build(st->kw);
    }
    for (i = 0; i < st->nrules; i++) {
        size_t f;

        for (f = 0; strcmp(st->rules[f].type, st->rules[i].type) != 0; f++) {
        }
        st->rules[i].first = (unsigned)f;
        st->rules[i].series = -1;
    }
    v = json_object_get(cfg, "restore");
    if (v != NULL && !json_is_boolean(v)) {
        api->log(MF_LOG_ERROR, "mask: restore is true or false");
        goto fail;
    }
    st->restore = v == NULL || json_is_true(v);
    for (i = 0; i < st->nrules; i++) {
        need_secret |= st->rules[i].action == ACT_HASH &&
                       (i >= MF_MASK__BUILTIN || (st->kinds & (1u << i)));
    }
    v = json_object_get(cfg, "secret");
    if (v != NULL && (!json_is_string(v) || json_string_length(v) < 16)) {
        api->log(MF_LOG_ERROR,
                 "mask: secret is a string of 16 bytes or more (set it "
                 "from the environment: secret: ${MASK_SECRET})");
        goto fail;
    }
    if (need_secret && v == NULL) {
        api->log(MF_LOG_ERROR,
                 "mask: the hash action needs a secret (a keyed hash; a "
                 "bare digest of a phone number is easily reversed)");
        goto fail;
    }
    if (v != NULL) {
        st->secret_len = json_string_length(v);
        st->secret = malloc(st->secret_len);
        memcpy(st->secret, json_string_value(v), st->secret_len);
    }
    {
        mf_metric_def_t d = {.size = sizeof(d),
                             .type = MF_METRIC_COUNTER,
                             .name = "manifold_mask_entities_total",
                             .help = "Values the mask stage replaced, by "
                                     "type and action",
                             .labels = ent_labels};
        mf_metric_def_t b = {.size = sizeof(b),
                             .type = MF_METRIC_COUNTER,
                             .name = "manifold_mask_blocked_total",
                             .help = "Requests the mask stage refused, by "
                                     "rule",
                             .labels = blk_labels};

        st->m_entities = api->metric_declare(&d);
        st->m_blocked = api->metric_declare(&b);
        if (st->m_entities == NULL || st->m_blocked == NULL) {
            goto fail;
        }
    }
    json_decref(cfg);
    *state = st;
    return MF_OK;
fail:
    json_decref(cfg);
    mask_fini(st);
    return MF_ERR;
}

/* ---- masking the request ---- */

static mreq_t *
mreq_get(mask_t *st, void **ctx)
{
    mreq_t *q = *ctx;

    if (q == NULL) {
        /* one block: the request's state and its counters */
        q = calloc(1, sizeof(*q) + st->nrules * sizeof(*q->counter));
        if (q == NULL) {
            abort();
        }
        q->counter = (unsigned *)(void *)(q + 1);
        *ctx = q;
    }
    return q;
}

static int
kw_hit(void *arg, size_t end, size_t len, unsigned id)
{
    mf_mask_matches_add(arg, end - len, len, id);
    return 0;
}

/* The placeholder of a value: the one given before, else a new one. The
 * counter is per type (rules may share one). */
static const mf_mask_entry_t *
placeholder(mask_t *st, mreq_t *q, unsigned rule, const char *v, size_t n)
{
    unsigned first = st->rules[rule].first, count;
    const char *type = st->rules[first].type; /* one pointer per type */
    size_t i;
    char num[12];
    size_t tl = strlen(type), nl = 0;
    mf_mask_entry_t *e;

    for (i = 0; i < q->n; i++) {
        if (q->etype[i] == type && q->e[i].vlen == n &&
            memcmp(q->e[i].val, v, n) == 0) {
            return &q->e[i];
        }
    }
    count = ++q->counter[first];
    do { /* "[TYPE_N]", the digits backwards first */
        num[nl++] = (char)('0' + count % 10);
        count /= 10;
    } while (count > 0);
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 8;
        q->e = realloc(q->e, q->cap * sizeof(*q->e));
        q->etype = realloc(q->etype, q->cap * sizeof(*q->etype));
        if (q->e == NULL || q->etype == NULL) {
            abort();
        }
    }
    q->etype[q->n] = type;
    e = &q->e[q->n++];
    /* one piece: the placeholder, its NUL, the value */
    e->phlen = tl + nl + 3;
    if (q->chunks == NULL ||
        q->chunks->cap - q->chunks->used < e->phlen + 1 + n) {
        size_t cap = e->phlen + 1 + n > 480 ? e->phlen + 1 + n : 480;
        struct chunk *c = malloc(sizeof(*c) + cap);

        if (c == NULL) {
            abort();
        }
        *c = (struct chunk){q->chunks, 0, cap};
        q->chunks = c;
    }
    e->ph = q->chunks->data + q->chunks->used;
    q->chunks->used += e->phlen + 1 + n;
    e->ph[0] = '[';
    memcpy(e->ph + 1, type, tl);
    e->ph[1 + tl] = '_';
    for (i = 0; i < nl; i++) {
        e->ph[2 + tl + i] = num[nl - 1 - i];
    }
    e->ph[e->phlen - 1] = ']';
    e->ph[e->phlen] = '\0';
    e->val = e->ph + e->phlen + 1;
    memcpy(e->val, v, n);
    e->vlen = n;
    return e;
}

/* One more entity of the rule's type and action: its series looked up
 * once (workers may race to store the same number). */
static void
count_entity(mask_t *st, unsigned rule)
{
    rule_t *ru = &st->rules[rule];
    int series = __atomic_load_n(&ru->series, __ATOMIC_RELAXED);
    mf_str_t labels[2] = {
        {ru->type, strlen(ru->type)},
        {action_names[ru->action], strlen(action_names[ru->action])}};

    if (series < 0 && api->size >= offsetof(mf_host_api_t, metric_add_at) +
                                       sizeof(api->metric_add_at)) {
        series = api->metric_series(st->m_entities, labels, 2);
        __atomic_store_n(&ru->series, series, __ATOMIC_RELAXED);
    }
    if (series < 0 || api->metric_add_at(st->m_entities, series, 1) != MF_OK) {
        api->metric_add(st->m_entities, labels, 2, 1);
    }
}

static void
rep_add(mreq_t *q, size_t start, size_t len, const char *b, size_t n)
{
    if (q->nrep == q->caprep) {
        q->caprep = q->caprep ? q->caprep * 2 : 16;
        q->rep = realloc(q->rep, q->caprep * sizeof(*q->rep));
        if (q->rep == NULL) {
            abort();
        }
    }
    q->rep[q->nrep++] = (struct rep){start, len, q->rbuf.len, n};
    mf_mask_buf_add(&q->rbuf, b, n);
}

/*
 * Masks one text: appends a replacement (q->rep, its bytes in q->rbuf)
 * for each value found, in order. Returns how many, or -1 when a block
 * rule matched (q->blocked names it).
 */
static int
mask_text(mask_t *st, mreq_t *q, const char *s, size_t n)
{
    size_t i, r;
    pcre2_match_data *md = NULL;

    q->m.n = 0;
    mf_mask_detect(s, n, st->kinds, &q->m);
    if (st->has_kw) {
        mf_kw_feed(st->kw, 0, s, n, kw_hit, &q->m);
    }
    for (r = MF_MASK__BUILTIN; r < st->nrules; r++) {
        PCRE2_SIZE off = 0, *ov;
        pcre2_code *re = st->rules[r].re;

        if (re == NULL) {
            continue;
        }
        if (md == NULL) {
            md = pcre2_match_data_create(1, NULL);
        }
        while (off <= n &&
               pcre2_match(re, (PCRE2_SPTR)s, n, off, 0, md, NULL) >= 0) {
            ov = pcre2_get_ovector_pointer(md);
            if (ov[1] > ov[0]) {
                mf_mask_matches_add(&q->m, ov[0], ov[1] - ov[0], (unsigned)r);
                off = ov[1];
            } else {
                off = ov[0] + 1;
            }
        }
    }
    pcre2_match_data_free(md);
    if (q->m.n == 0) {
        return 0;
    }
    mf_mask_matches_resolve(&q->m);
    for (i = 0; i < q->m.n; i++) {
        const rule_t *rule = &st->rules[q->m.v[i].rule];

        if (rule->action == ACT_BLOCK) {
            mf_str_t label = {rule->name, strlen(rule->name)};

            api->metric_add(st->m_blocked, &label, 1, 1);
            q->blocked = rule->name;
            return -1;
        }
    }
    for (i = 0; i < q->m.n; i++) {
        const mf_mask_match_t *m = &q->m.v[i];
        const rule_t *rule = &st->rules[m->rule];
        char tok[96];

        count_entity(st, m->rule);
        q->masked++;
        if (rule->action == ACT_PLACEHOLDER) {
            const mf_mask_entry_t *e =
                placeholder(st, q, m->rule, s + m->start, m->len);

            rep_add(q, m->start, m->len, e->ph, e->phlen);
        } else if (rule->action == ACT_REDACT) {
            size_t tl = strlen(rule->type);

            tok[0] = '[';
            memcpy(tok + 1, rule->type, tl); /* a type is 40 bytes at most */
            memcpy(tok + 1 + tl, "_REDACTED]", 10);
            rep_add(q, m->start, m->len, tok, tl + 11);
        } else {
            unsigned char mac[EVP_MAX_MD_SIZE];
            unsigned maclen = 0, b;
            int w;

            HMAC(EVP_sha256(), st->secret, (int)st->secret_len,
                 (const unsigned char *)s + m->start, m->len, mac, &maclen);
            w = snprintf(tok, sizeof(tok), "[%s:", rule->type);
            for (b = 0; b < 8 && w > 0 && (size_t)w + 3 < sizeof(tok); b++) {
                w += snprintf(tok + w, sizeof(tok) - (size_t)w, "%02x", mac[b]);
            }
            tok[w] = ']';
            rep_add(q, m->start, m->len, tok, (size_t)w + 1);
        }
    }
    return (int)q->m.n;
}

/* The text s with the replacements [from, q->nrep) into q->out. */
static void
mask_apply(mreq_t *q, const char *s, size_t n, size_t from)
{
    size_t i, at = 0;

    q->out.len = 0;
    for (i = from; i < q->nrep; i++) {
        mf_mask_buf_add(&q->out, s + at, q->rep[i].start - at);
        mf_mask_buf_add(&q->out, q->rbuf.data + q->rep[i].roff, q->rep[i].rlen);
        at = q->rep[i].start + q->rep[i].len;
    }
    mf_mask_buf_add(&q->out, s + at, n - at);
}

/* Masks the JSON string in container (under key, or at idx of an
 * array); -1 when blocked. The masked text is a new string set in the
 * container, never the old one changed in place: an adapter may keep the
 * client's string elsewhere too (the Responses API stores the input as
 * the client sent it, for its own later turns and input_items). */
static int
mask_slot(mask_t *st, mreq_t *q, json_t *container, const char *key, size_t idx,
          int *changed)
{
    json_t *v = key != NULL ? json_object_get(container, key)
                            : json_array_get(container, idx);
    int rc;

    if (!json_is_string(v)) {
        return 0;
    }
    q->nrep = q->rbuf.len = 0;
    rc = mask_text(st, q, json_string_value(v), json_string_length(v));
    if (rc > 0) {
        json_t *m;

        mask_apply(q, json_string_value(v), json_string_length(v), 0);
        m = json_stringn(q->out.data ? q->out.data : "", q->out.len);
        if (m == NULL ||
            (key != NULL ? json_object_set_new(container, key, m)
                         : json_array_set_new(container, idx, m)) != 0) {
            return -1; /* fail closed */
        }
        *changed = 1;
    }
    return rc < 0 ? -1 : 0;
}

/* A message's content: a string, or parts with "text". */
static int
mask_content(mask_t *st, mreq_t *q, json_t *m, int *changed)
{
    json_t *content = json_object_get(m, "content"), *part;
    size_t i;

    if (json_is_string(content)) {
        return mask_slot(st, q, m, "content", 0, changed);
    }
    json_array_foreach(content, i, part)
    {
        if (mask_slot(st, q, part, "text", 0, changed) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Every text of the canonical request the model sees. */
static int
mask_body(mask_t *st, mreq_t *q, json_t *body, int *changed)
{
    json_t *m, *tc, *in = json_object_get(body, "input");
    size_t i, j;

    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        if (mask_content(st, q, m, changed) < 0) {
            return -1;
        }
        json_array_foreach(json_object_get(m, "tool_calls"), j, tc)
        {
            if (mask_slot(st, q, json_object_get(tc, "function"), "arguments",
                          0, changed) < 0) {
                return -1;
            }
        }
        if (mask_slot(st, q, json_object_get(m, "function_call"), "arguments",
                      0, changed) < 0) {
            return -1;
        }
    }
    if (json_is_string(in)) {
        return mask_slot(st, q, body, "input", 0, changed);
    }
    json_array_foreach(in, i, m)
    {
        if (mask_slot(st, q, in, NULL, i, changed) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A body in a client's own shape that goes upstream as it is: a token
 * count (Anthropic's count_tokens, Gemini's countTokens), which the
 * gateway answers itself or forwards to the provider's counting
 * endpoint. Every string is masked but the values of the keys that name
 * things rather than say them (model, role, type, ids, media types) and
 * inline binary data; -1 when blocked. */
static int
mask_tree(mask_t *st, mreq_t *q, json_t *v, int depth, int *changed)
{
    static const char *const names[] = {
        "model",     "role",        "type",
        "id",        "tool_use_id", "tool_call_id",
        "name",      "media_type",  "mime_type",
        "mimeType",  "data",        "anthropic_version",
        "signature", NULL};
    const char *k;
    json_t *e;
    size_t i;

    if (depth > 64) {
        return 0;
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, e)
        {
            if ((json_is_string(e)
                     ? mask_slot(st, q, v, NULL, i, changed)
                     : mask_tree(st, q, e, depth + 1, changed)) < 0) {
                return -1;
            }
        }
        return 0;
    }
    json_object_foreach(v, k, e)
    {
        if (!json_is_string(e)) {
            if (mask_tree(st, q, e, depth + 1, changed) < 0) {
                return -1;
            }
            continue;
        }
        for (i = 0; names[i] != NULL && strcmp(names[i], k) != 0; i++) {
        }
        /* setting an existing key keeps the object's iteration valid */
        if (names[i] == NULL && mask_slot(st, q, v, k, 0, changed) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Whether r is a request the gateway answers itself (a model list, a
 * stored Response, a token count): its body is the client's own. */
static int
is_local(mf_req_t *r)
{
    mf_req_info_t info = {.size = offsetof(mf_req_info_t, trace_id)};

    api->get_info(r, &info);
    return info.endpoint == MF_ENDPOINT_LOCAL;
}

/*
 * Whether a canonical body the host has not parsed may hold something to
 * mask: its JSON string escapes undone (\n, \", ...), the whole text
 * through the detectors and keywords. Every value the walk of the parsed
 * body would find is found here too (each string of it appears between
 * quotes, which bound every detector), so "no" lets the body go upstream
 * untouched and unparsed. A \u escape, or a regex rule (its match on
 * the raw text does not predict the decoded one), answers "maybe".
 */
static int
raw_may_match(mask_t *st, mreq_t *q, mf_str_t raw)
{
    size_t i, k = 0;
    char *d;
    int found;

    if (st->nregex > 0 || raw.len == 0) {
        return 1;
    }
    q->out.len = 0;
    mf_mask_buf_add(&q->out, raw.data, raw.len); /* room, and the copy */
    d = q->out.data;
    for (i = 0; i < raw.len; i++) {
        char c = raw.data[i];

        if (c == '\\' && i + 1 < raw.len) {
            switch (raw.data[++i]) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case '"':
            case '\\':
            case '/':
                c = raw.data[i];
                break;
            default:
                return 1; /* \u: the parser decides */
            }
        }
        d[k++] = c;
    }
    q->m.n = 0;
    mf_mask_detect(q->out.data ? q->out.data : "", k, st->kinds, &q->m);
    if (st->has_kw) {
        mf_kw_feed(st->kw, 0, q->out.data ? q->out.data : "", k, kw_hit, &q->m);
    }
    found = q->m.n > 0;
    q->m.n = 0;
    return found;
}

/* The replacements [first, q->nrep) of a text with escapes (none of them
 * \u: each is two bytes of t for one of the decoded text), from the
 * decoded text's positions to t's. */
static void
to_raw(const char *t, mreq_t *q, size_t first)
{
    size_t i = 0, d = 0, k;

    for (k = first; k < q->nrep; k++) {
        size_t end = q->rep[k].start + q->rep[k].len;

        for (; d < q->rep[k].start; d++) {
            i += t[i] == '\\' ? 2 : 1;
        }
        q->rep[k].start = i;
        for (; d < end; d++) {
            i += t[i] == '\\' ? 2 : 1;
        }
        q->rep[k].len = i - q->rep[k].start;
    }
}

/*
 * Masks the canonical body's texts in its bytes and sets the result as
 * the body. Returns 1 when done (changed or not), -1 when blocked, 0
 * when the body is left to the parsed path.
 */
static int
mask_raw(mf_req_t *r, mask_t *st, mreq_t *q, mf_str_t raw, int *changed)
{
    mf_mask_raw_t j = {0};
    mf_mask_buf_t body = {0}, dec = {0};
    uint64_t escs = 0;
    size_t i, last = 0;
    int rc = 1;

    if (mf_mask_raw_texts(raw.data, raw.len, &j) != 0) {
        free(j.span);
        return 0;
    }
    /* a \u escape in any text: the parser's, before anything is counted
     * (which texts have escapes is kept for the first 64) */
    for (i = 0; i < j.n; i += 2) {
        const char *t = raw.data + j.span[i];
        size_t k;
        int e = memchr(t, '\\', j.span[i + 1]) != NULL;

        if (i / 2 < 64 && e) {
            escs |= (uint64_t)1 << (i / 2);
        }
        if (!e) {
            continue;
        }
        for (k = 0; k + 1 < j.span[i + 1]; k++) {
            if (t[k] == '\\' && t[++k] == 'u') {
                free(j.span);
                return 0;
            }
        }
    }
    q->nrep = q->rbuf.len = 0;
    for (i = 0; i < j.n && rc == 1; i += 2) {
        const char *t = raw.data + j.span[i];
        size_t n = j.span[i + 1], first = q->nrep, k;
        int m, esc = i / 2 < 64 ? (escs >> (i / 2)) & 1
                                : memchr(t, '\\', n) != NULL;

        if (esc) {
            mf_mask_json_unescape(t, n, &dec);
            t = dec.data ? dec.data : "";
            n = dec.len;
        }
        m = mask_text(st, q, t, n);
        if (m < 0) {
            rc = -1;
        } else if (m > 0) {
            /* the replacements' spans in the body's bytes */
            if (esc) {
                to_raw(raw.data + j.span[i], q, first);
            }
            for (k = first; k < q->nrep; k++) {
                q->rep[k].start += j.span[i];
            }
            *changed = 1;
        }
    }
    if (rc == 1 && *changed &&
        api->size >= offsetof(mf_host_api_t, edit_body_text) +
                         sizeof(api->edit_body_text)) {
        /* the edits handed over: the host escapes them and shifts its
         * index of the body, without checking it all again */
        mf_body_edit_t few[16],
            *ed = q->nrep <= 16 ? few : malloc(q->nrep * sizeof(*ed));

        if (ed == NULL) {
            abort();
        }
        for (i = 0; i < q->nrep; i++) {
            ed[i] = (mf_body_edit_t){
                q->rep[i].start, q->rep[i].len,
                (mf_str_t){q->rbuf.data + q->rep[i].roff, q->rep[i].rlen}};
        }
        if (api->edit_body_text(r, ed, q->nrep) != MF_OK) {
            rc = -1; /* fail closed: the values must not go upstream */
            q->blocked = NULL;
        }
        if (ed != few) {
            free(ed);
        }
    } else if (rc == 1 && *changed) {
        for (i = 0; i < q->nrep; i++) {
            mf_mask_buf_add(&body, raw.data + last, q->rep[i].start - last);
            mf_mask_json_escape_add(&body, q->rbuf.data + q->rep[i].roff,
                                    q->rep[i].rlen);
            last = q->rep[i].start + q->rep[i].len;
        }
        mf_mask_buf_add(&body, raw.data + last, raw.len - last);
        if (api->set_body_text(r, (mf_str_t){body.data, body.len}) != MF_OK) {
            rc = -1; /* fail closed: the values must not go upstream */
            q->blocked = NULL;
        }
    }
    if (dec.data != NULL) {
        memset(dec.data, 0, dec.cap);
    }
    mf_mask_buf_free(&dec);
    mf_mask_buf_free(&body);
    free(j.span);
    return rc;
}

/* The OpenAI adapter's paths: the body is the canonical form, unparsed. */
static int
canonical_raw(mf_req_t *r)
{
    /* the fields before the trace context: no trace id is made for it */
    mf_req_info_t info = {.size = offsetof(mf_req_info_t, trace_id)};

    api->get_info(r, &info);
    return (info.path.len == 20 &&
            memcmp(info.path.data, "/v1/chat/completions", 20) == 0) ||
           (info.path.len == 14 &&
            memcmp(info.path.data, "/v1/embeddings", 14) == 0);
}

static mf_action_t
mask_on_request(mf_req_t *r, void *state, void **ctx)
{
    mask_t *st = state;
    json_t *body;
    mreq_t *q = mreq_get(st, ctx);
    mf_str_t raw;
    int changed = 0, rc = 0;
    char msg[160];

    if (canonical_raw(r)) {
        if (api->size >= offsetof(mf_host_api_t, set_body_text) +
                             sizeof(api->set_body_text) &&
            api->get_body_text(r, &raw) == MF_OK) {
            /* the texts found and masked in the body's bytes */
            rc = mask_raw(r, st, q, raw, &changed);
        } else if (api->get_body(r, &raw) == MF_OK &&
                   !raw_may_match(st, q, raw)) {
            return MF_CONTINUE; /* nothing to mask: the body is not parsed */
        }
    }
    if (rc == -1 && q->blocked == NULL) {
        api->log(MF_LOG_ERROR, "mask: the masked body could not be set; "
                               "the request is refused");
        return MF_FAIL;
    }
    if (rc == 0) {
        int local = !canonical_raw(r) && is_local(r);

        body = api->get_body_json(r);
        if (body == NULL) {
            return MF_CONTINUE;
        }
        rc = (local ? mask_tree(st, q, body, 0, &changed)
                    : mask_body(st, q, body, &changed)) < 0
                 ? -1
                 : 0;
        if (rc == 0 && changed) {
            api->body_changed(r);
        }
    }
    if (rc < 0) {
        snprintf(msg, sizeof(msg),
                 "the request was blocked by the mask rule '%s'", q->blocked);
        api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-manifold-blocked"),
                        (mf_str_t){q->blocked, strlen(q->blocked)});
        api->respond_error_code(r, 400, "invalid_request_error",
                                "content_blocked", msg);
        return MF_RESPOND;
    }
    if (changed) {
        char n[16];
        size_t w = sizeof(n);
        unsigned v = q->masked;

        /* how many, never which */
        do {
            n[--w] = (char)('0' + v % 10);
            v /= 10;
        } while (v > 0);
        api->set_header(r, MF_RESPONSE_HEADERS, MF_STR("x-manifold-masked"),
                        (mf_str_t){n + w, sizeof(n) - w});
    }
    return MF_CONTINUE;
}

/* ---- restoring the answer ---- */

/* Restores a whole JSON string in place. */
static void
restore_string(mreq_t *q, json_t *v)
{
    mf_mask_buf_t held = {0};

    if (!json_is_string(v)) {
        return;
    }
    q->out.len = 0;
    mf_mask_restore(q->e, q->n, &held, json_string_value(v),
                    json_string_length(v), 1, &q->out);
    json_string_setn(v, q->out.data ? q->out.data : "", q->out.len);
}

/* Whether a value reads the same inside a JSON string (no quote,
 * backslash or control character), at any depth of encoding. */
static int
json_plain(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] < 0x20) {
            return 0;
        }
    }
    return 1;
}

static void
restore_whole(mf_req_t *r, mreq_t *q, mf_str_t data)
{
    json_t *j, *c, *tc, *msg;
    size_t i, k;
    char *text;
    mf_mask_buf_t held = {0};

    for (i = 0; i < q->n && json_plain(q->e[i].val, q->e[i].vlen); i++) {
    }
    if (i == q->n) {
        /* every value is plain JSON string text: restored in the answer's
         * bytes, without parsing it (a placeholder is plain too) */
        q->out.len = 0;
        mf_mask_restore(q->e, q->n, &held, data.data, data.len, 1, &q->out);
        api->set_response_chunk(
            r, (mf_str_t){q->out.data ? q->out.data : "", q->out.len});
        return;
    }
    j = json_loadb(data.data, data.len, 0, NULL);
    if (j == NULL) {
        return;
    }
    json_array_foreach(json_object_get(j, "choices"), i, c)
    {
        msg = json_object_get(c, "message");
        restore_string(q, json_object_get(msg, "content"));
        restore_string(q, json_object_get(msg, "reasoning_content"));
        json_array_foreach(json_object_get(msg, "tool_calls"), k, tc)
        {
            restore_string(q, json_object_get(json_object_get(tc, "function"),
                                              "arguments"));
        }
    }
    text = json_dumps(j, JSON_COMPACT);
    if (text != NULL) {
        api->set_response_chunk(r, (mf_str_t){text, strlen(text)});
        free(text);
    }
    json_decref(j);
}

static chan_t *
chan_get(mreq_t *q, int choice, int kind)
{
    size_t i;

    for (i = 0; i < q->nch; i++) {
        if (q->ch[i].choice == choice && q->ch[i].kind == kind) {
            return &q->ch[i];
        }
    }
    q->ch = realloc(q->ch, (q->nch + 1) * sizeof(*q->ch));
    if (q->ch == NULL) {
        abort();
    }
    q->ch[q->nch] = (chan_t){.choice = choice, .kind = kind};
    return &q->ch[q->nch++];
}

/* Releases a channel's held text as an event of its own, ahead of the
 * current one. */
static void
chan_flush(mf_req_t *r, mreq_t *q, chan_t *ch)
{
    json_t *c, *delta;
    char *text;

    if (ch->held.len == 0) {
        return;
    }
    q->out.len = 0;
    mf_mask_restore(q->e, q->n, &ch->held, "", 0, 1, &q->out);
    c = q->top ? json_deep_copy(q->top) : json_object();
    delta = json_object();
    if (ch->kind < 2) {
        json_object_set_new(delta,
                            ch->kind == 0 ? "content" : "reasoning_content",
                            json_stringn(q->out.data, q->out.len));
    } else {
        json_object_set_new(delta, "tool_calls",
                            json_pack("[{s:i,s:{s:s%}}]", "index", ch->kind - 2,
                                      "function", "arguments", q->out.data,
                                      q->out.len));
    }
    json_object_set_new(c, "choices",
                        json_pack("[{s:i,s:o,s:n}]", "index", ch->choice,
                                  "delta", delta, "finish_reason"));
    text = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    if (text != NULL) {
        api->insert_response_chunk(r, (mf_str_t){text, strlen(text)});
        free(text);
    }
}

/* Whether a tool call delta only carries argument text. */
static int
tool_delta_is_text(const json_t *tc)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)tc, key, v)
    {
        if (strcmp(key, "index") == 0) {
            continue;
        }
        if (strcmp(key, "function") != 0) {
            return 0;
        }
        if (json_object_size(v) != 1 ||
            !json_is_string(json_object_get(v, "arguments"))) {
            return 0;
        }
    }
    return 1;
}

/* Whether an event carries text only (no role, finish, tool call start
 * or usage): only then may its tail be held back. */
static int
event_is_text(const json_t *j)
{
    const json_t *u = json_object_get(j, "usage"), *c, *tc;
    const char *key;
    json_t *v;
    size_t i, k;

    if (u != NULL && !json_is_null(u)) {
        return 0;
    }
    if (json_array_size(json_object_get(j, "choices")) == 0) {
        return 0;
    }
    json_array_foreach(json_object_get(j, "choices"), i, c)
    {
        const json_t *f = json_object_get(c, "finish_reason");

        if (f != NULL && !json_is_null(f)) {
            return 0;
        }
        json_object_foreach(json_object_get(c, "delta"), key, v)
        {
            if (strcmp(key, "tool_calls") == 0) {
                json_array_foreach(v, k, tc)
                {
                    if (!tool_delta_is_text(tc)) {
                        return 0;
                    }
                }
            } else if (strcmp(key, "content") != 0 &&
                       strcmp(key, "reasoning_content") != 0) {
                return 0;
            }
        }
    }
    return 1;
}

/* A text field of the event, restored through its channel. */
static void
restore_field(mreq_t *q, json_t *holder, const char *key, int choice, int kind,
              int text_only, int *empty)
{
    json_t *v = json_object_get(holder, key);
    chan_t *ch;

    if (!json_is_string(v)) {
        return;
    }
    ch = chan_get(q, choice, kind);
    q->out.len = 0;
    mf_mask_restore(q->e, q->n, &ch->held, json_string_value(v),
                    json_string_length(v), !text_only, &q->out);
    if (q->out.len > 0) {
        *empty = 0;
    }
    json_string_setn(v, q->out.data ? q->out.data : "", q->out.len);
}

/* Whether the event has text for the channel. */
static int
event_has(const json_t *j, const chan_t *ch)
{
    const json_t *c, *tc;
    size_t i, k;

    json_array_foreach(json_object_get(j, "choices"), i, c)
    {
        const json_t *d = json_object_get(c, "delta");
        json_int_t idx = json_integer_value(json_object_get(c, "index"));

        if (idx != ch->choice) {
            continue;
        }
        if (ch->kind == 0) {
            return json_is_string(json_object_get(d, "content"));
        }
        if (ch->kind == 1) {
            return json_is_string(json_object_get(d, "reasoning_content"));
        }
        json_array_foreach(json_object_get(d, "tool_calls"), k, tc)
        {
            if (json_integer_value(json_object_get(tc, "index")) ==
                    ch->kind - 2 &&
                json_is_string(json_object_get(json_object_get(tc, "function"),
                                               "arguments"))) {
                return 1;
            }
        }
    }
    return 0;
}

static void
restore_event(mf_req_t *r, mreq_t *q, mf_str_t data, int last)
{
    json_t *j, *c, *tc;
    size_t i, k;
    int text_only, empty = 1;
    char *text;

    if (last) {
        /* the end: whatever is held goes out before it */
        for (i = 0; i < q->nch; i++) {
            chan_flush(r, q, &q->ch[i]);
        }
        return;
    }
    j = json_loadb(data.data, data.len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    if (q->top == NULL) {
        const char *key;
        json_t *v;

        q->top = json_object();
        json_object_foreach(j, key, v)
        {
            if (strcmp(key, "choices") != 0 && strcmp(key, "usage") != 0) {
                json_object_set(q->top, key, v);
            }
        }
    }
    text_only = event_is_text(j);
    /* held text of the channels this event does not continue goes first */
    for (i = 0; i < q->nch; i++) {
        if (q->ch[i].held.len > 0 && !event_has(j, &q->ch[i])) {
            chan_flush(r, q, &q->ch[i]);
        }
    }
    json_array_foreach(json_object_get(j, "choices"), i, c)
    {
        json_t *d = json_object_get(c, "delta");
        int choice = (int)json_integer_value(json_object_get(c, "index"));

        restore_field(q, d, "content", choice, 0, text_only, &empty);
        restore_field(q, d, "reasoning_content", choice, 1, text_only, &empty);
        json_array_foreach(json_object_get(d, "tool_calls"), k, tc)
        {
            int idx = (int)json_integer_value(json_object_get(tc, "index"));

            restore_field(q, json_object_get(tc, "function"), "arguments",
                          choice, 2 + idx, text_only, &empty);
        }
    }
    if (text_only && empty) {
        /* all of its text is held: nothing to send for it yet */
        api->set_response_chunk(r, MF_STR(""));
    } else {
        text = json_dumps(j, JSON_COMPACT);
        if (text != NULL) {
            api->set_response_chunk(r, (mf_str_t){text, strlen(text)});
            free(text);
        }
    }
    json_decref(j);
}

static mf_action_t
mask_on_response_body(mf_req_t *r, void *state, void **ctx, mf_str_t data,
                      int last)
{
    mask_t *st = state;
    mreq_t *q = *ctx;
    /* the fields before the trace context: no trace id is made for it */
    mf_req_info_t info = {.size = offsetof(mf_req_info_t, trace_id)};

    if (!st->restore || q == NULL || q->n == 0) {
        return MF_CONTINUE; /* no placeholder given: nothing to restore */
    }
    api->get_info(r, &info);
    if (!info.stream) {
        restore_whole(r, q, data);
    } else {
        restore_event(r, q, data, last);
    }
    return MF_CONTINUE;
}

static void
mask_on_done(mf_req_t *r, void *state, void **ctx)
{
    mreq_t *q = *ctx;
    size_t i;

    (void)r;
    (void)state;
    if (q == NULL) {
        return;
    }
    while (q->chunks != NULL) {
        struct chunk *c = q->chunks;

        q->chunks = c->next;
        memset(c->data, 0, c->used); /* the values */
        free(c);
    }
    for (i = 0; i < q->nch; i++) {
        mf_mask_buf_free(&q->ch[i].held);
    }
    free(q->ch);
    free(q->e);
    free(q->etype);
    mf_mask_matches_free(&q->m);
    mf_mask_buf_free(&q->out);
    if (q->rbuf.data != NULL) {
        memset(q->rbuf.data, 0, q->rbuf.cap); /* hashes, placeholders */
    }
    mf_mask_buf_free(&q->rbuf);
    free(q->rep);
    json_decref(q->top);
    free(q);
    *ctx = NULL;
}

static const mf_plugin_t mask_plugin = {
    MF_PLUGIN_ABI,
    .name = "mask",
    .version = "1.0.0",
    .init = mask_init,
    .fini = mask_fini,
    .on_request = mask_on_request,
    .on_response_body = mask_on_response_body,
    .on_done = mask_on_done,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &mask_plugin;
}
