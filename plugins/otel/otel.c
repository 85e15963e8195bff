/*
 * otel: traces of LLM requests, exported as OTLP/HTTP (protobuf or JSON)
 * by a background thread.
 *
 * Each request that came for the LLM API gives a server span (joined to
 * the client's W3C traceparent when it sent one: same trace, the client's
 * span as parent) and, under it, one client span per upstream attempt,
 * named and attributed by the OpenTelemetry GenAI semantic conventions
 * ("chat gpt-4o", gen_ai.provider.name, gen_ai.request.model,
 * gen_ai.usage.input_tokens, ...). The attempt's span is the parent named
 * by the traceparent header sent upstream.
 *
 * A worker only formats its spans into one string and queues it (a
 * bounded queue under a mutex; when full the spans are dropped and
 * counted); the exporter thread sends batches of up to `batch` spans at
 * least every `flush_ms`, retrying a failed export (a connection error,
 * 429, 502, 503, 504) with backoff up to `retries` times. fini gives it
 * `close_ms` to send what is left.
 *
 * config: { endpoint: URL, protocol: http/protobuf | http/json,
 *           headers: {NAME: VALUE}, service_name: S,
 *           batch: 512, queue: 8192, flush_ms: 1000, timeout_ms: 10000,
 *           retries: 3, close_ms: 3000, propagate: true,
 *           capture_content: false, capture_max_bytes: 16384,
 *           detail: standard | full }
 * detail standard (the default) gives the attributes the HTTP and GenAI
 * conventions require or recommend; full adds the gateway's own
 * (manifold.request_id, .attempts, .stream, .provider, timings, the
 * usage again on the server span, ...).
 * Unset ones come from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the whole URL)
 * or OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces), ..._HEADERS
 * ("k=v,k2=v2", values percent-decoded), ..._TIMEOUT, OTEL_SERVICE_NAME;
 * by default http://localhost:4318/v1/traces; the protocol from
 * OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, by default http/protobuf (the
 * OTel default; grpc is refused). Header values are never logged.
 */
#include <errno.h>
#include <manifold/plugin.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "../common/mask_detect.h"

static const mf_host_api_t *api;

static const mf_str_t L_DROPPED = MF_STR("dropped");
static const mf_str_t L_EXPORTED = MF_STR("exported");
static const mf_str_t L_FAILED = MF_STR("failed");
static const mf_str_t L_OK = MF_STR("ok");
static const mf_str_t L_RETRIED = MF_STR("retried");

/* A growing text buffer. */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} jb_t;

/* A request's spans as the worker left them: what they are made of (a
 * record, below), encoded by the exporter thread. */
typedef struct span_s span_t;

typedef struct {
    /* where */
    char *url;
    int tls;
    char *host;
    char *port;
    char *path;
    char *hostport; /* the Host header */
    char **headers; /* "Name: value" lines */
    size_t nheaders;
    char *resource;    /* the resource's JSON (attributes) */
    char *resource_pb; /* and its protobuf (Resource) */
    size_t resource_pb_len;
    SSL_CTX *ssl;
    /* how */
    size_t batch;
    size_t queue_cap;
    long flush_ms;
    long timeout_ms;
    long close_ms;
    int retries;
    int propagate;
    int protobuf; /* http/protobuf, else http/json */
    int capture;  /* prompts and answers in the spans */
    size_t capture_max;
    int full;  /* detail: full, else standard (the conventions' set) */
    int gzip;  /* compression: gzip (Content-Encoding: gzip) */
    int abi18; /* the host has ABI 1.8: set_traceparent, skip_hooks */
    char *ca, *ccert, *ckey; /* TLS: CA file, client certificate and key */
    int tls_conf;            /* those came from the config (not the env) */
    /* the queue (under lock) */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int cur_fd; /* the export's socket, -1 none (under lock): fini cuts it */
    span_t *head, *tail;
    size_t queued; /* spans in the queue */
    span_t *spare; /* record blocks (REC_BYTES) the exporter handed back */
    size_t nspare;
    uint64_t dropped;
    int stop;
    pthread_t thread;
    int started;
    mf_metric_t *m_spans;   /* manifold_otel_spans_total{outcome} */
    mf_metric_t *m_exports; /* manifold_otel_exports_total{outcome} */
} otel_t;

/* JSON building */

/* jb_room's slow path: the buffer grown */
static int
jb_grow(jb_t *b, size_t n)
{
    if (b->failed) {
        return 0;
    }
    {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;

        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        if ((p = realloc(b->p, cap)) == NULL) {
            b->failed = 1;
            return 0;
        }
        b->p = p;
        b->cap = cap;
    }
    return 1;
}

/* room for n more bytes (and a '\0'); 0 when it cannot be had. Inlined:
 * the common case, room there, is a compare. */
static inline int
jb_room(jb_t *b, size_t n)
{
    return b->len + n + 1 <= b->cap && !b->failed ? 1 : jb_grow(b, n);
}

static void
jb_put(jb_t *b, const char *s, size_t n)
{
    if (!jb_room(b, n)) {
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
jb_cstr(jb_t *b, const char *s)
{
    jb_put(b, s, strlen(s));
}

/* A JSON string of s (control characters escaped; bytes >= 0x80 are
 * passed as they are: the host keeps labels and names valid UTF-8). */
static void
jb_str(jb_t *b, mf_str_t s)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, from = 0;

    jb_put(b, "\"", 1);
    for (i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.data[i];
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        jb_put(b, s.data + from, i - from);
        from = i + 1;
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            jb_put(b, esc, 2);
        } else {
            jb_put(b, esc, 6);
        }
    }
    jb_put(b, s.data + from, s.len - from);
    jb_put(b, "\"", 1);
}

static mf_str_t
cstr(const char *s)
{
    return (mf_str_t){s, strlen(s)};
}

static int hexval(char c);

/* OTLP protobuf (opentelemetry/proto/trace/v1/trace.proto), made on the
 * exporter thread: the same spans as the JSON. Protobuf is written by pointer
 * into room taken beforehand (jb_room): no call per field, lengths computed
 * before the bytes. */
static inline char *
pb_wvarint(char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (char)v;
    return p;
}

static inline char *
pb_wfixed64(char *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 8); /* little-endian, as protobuf's fixed64 */
    return p + 8;
#else
    int k;

    for (k = 0; k < 8; k++) {
        *p++ = (char)(v >> (8 * k));
    }
    return p;
#endif
}

/* a length-delimited field (tag < 128) */
static inline char *
pb_wbytes(char *p, unsigned tag, const void *data, size_t n)
{
    *p++ = (char)tag;
    p = pb_wvarint(p, n);
    if (n > 0) {
        memcpy(p, data, n);
    }
    return p + n;
}

static inline size_t
pb_varint_len(uint64_t v)
{
    size_t n = 1;

    while (v > 0x7f) {
        v >>= 7;
        n++;
    }
    return n;
}

/* a hex digit's value, 0x10 for other bytes (hex_init) */
static unsigned char HEXV[256];
static pthread_once_t hex_once = PTHREAD_ONCE_INIT;

static void
hex_init(void)
{
    int c;

    for (c = 0; c < 256; c++) {
        HEXV[c] = c >= '0' && c <= '9'   ? (unsigned char)(c - '0')
                  : c >= 'a' && c <= 'f' ? (unsigned char)(c - 'a' + 10)
                  : c >= 'A' && c <= 'F' ? (unsigned char)(c - 'A' + 10)
                                         : 0x10;
    }
}

/* hex digits -> bytes (an id) as field tag; p unchanged when not hex */
static char *
pb_whex(char *p, unsigned tag, mf_str_t hex)
{
    size_t k, n = hex.len / 2;
    const unsigned char *h = (const unsigned char *)hex.data;
    char *q = p + 2;
    unsigned bad = 0;

    if (hex.len % 2 != 0 || n > 16) {
        return p;
    }
    for (k = 0; k < n; k++, h += 2) {
        unsigned hi = HEXV[h[0]], lo = HEXV[h[1]];

        bad |= hi | lo;
        q[k] = (char)(hi << 4 | lo);
    }
    if (bad & 0x10) {
        return p;
    }
    p[0] = (char)tag;
    p[1] = (char)n;
    return q + n;
}

/* A request's spans are written by the exporter straight in the
 * export's encoding: JSON span objects joined by ',', or protobuf Span
 * messages each as field 2 of ScopeSpans, appended to out. */
typedef struct {
    jb_t out;       /* the batch so far */
    size_t span_at; /* protobuf: where the span being written begins */
    int pb;         /* protobuf, else JSON */
    int n;          /* JSON: attributes written in this span (commas) */
    size_t base;    /* JSON: where the spans begin in out (commas) */
    unsigned attr;  /* protobuf: the attributes' field (9 Span, 1 Resource) */
    /* protobuf: ids decoded in this record (the trace id and the server
     * span's id come again in the client spans), by their hex's address */
    const char *memo_hex[2];
    char memo_bin[2][18]; /* tag, length, bytes */
    size_t memo_len[2];
} enc_t;

/* an id as field tag, decoded once a record (pb_whex) */
static char *
pb_id(enc_t *e, char *p, unsigned tag, mf_str_t hex)
{
    char *q;
    int k;

    for (k = 0; k < 2; k++) {
        if (e->memo_hex[k] == hex.data && e->memo_len[k] == hex.len / 2 + 2) {
            memcpy(p, e->memo_bin[k], e->memo_len[k]);
            *p = (char)tag;
            return p + e->memo_len[k];
        }
    }
    q = pb_whex(p, tag, hex);
    for (k = 0; k < 2; k++) {
        if (e->memo_hex[k] == NULL && q > p) {
            e->memo_hex[k] = hex.data;
            e->memo_len[k] = (size_t)(q - p);
            memcpy(e->memo_bin[k], p, e->memo_len[k]);
            break;
        }
    }
    return q;
}

/* Keys are literals: their lengths are known when compiled. */
#define attr_str(e, k, v) attr_str_n((e), k "", sizeof(k) - 1, (v))
#define attr_int(e, k, v) attr_int_n((e), k "", sizeof(k) - 1, (v))
#define attr_double(e, k, v) attr_double_n((e), k "", sizeof(k) - 1, (v))
#define attr_bool(e, k, v) attr_bool_n((e), k "", sizeof(k) - 1, (v))

/* JSON: {"key":K,"value":{"stringValue":V}}, int64 values as decimal
 * strings (the protobuf JSON mapping of int64); protobuf: KeyValue
 * {key 1, AnyValue value 2 {string 1, bool 2, int64 3, double 4}}. */
static void
attr_key(enc_t *e, const char *key, size_t klen)
{
    if (e->n++) {
        jb_put(&e->out, ",{\"key\":\"", 9);
    } else {
        jb_put(&e->out, "{\"key\":\"", 8);
    }
    jb_put(&e->out, key, klen);
    jb_put(&e->out, "\",\"value\":{", 11);
}

/* protobuf: a KeyValue's head written into the span, with room for the
 * AnyValue of any_len bytes the caller writes at the pointer returned
 * (then pb_end); NULL when there is no room */
static inline __attribute__((always_inline)) char *
pb_kv_head(enc_t *e, const char *key, size_t klen, size_t any_len)
{
    size_t kv_len =
        2 + pb_varint_len(klen) + klen + pb_varint_len(any_len) + any_len;
    char *p;

    if (!jb_room(&e->out, 11 + kv_len)) {
        return NULL;
    }
    p = e->out.p + e->out.len;
    *p++ = (char)(e->attr << 3 | 2);
    p = pb_wvarint(p, kv_len);
    p = pb_wbytes(p, 0x0a, key, klen);
    *p++ = 0x12;
    return pb_wvarint(p, any_len);
}

static inline void
pb_end(enc_t *e, const char *p)
{
    if (p != NULL) {
        e->out.len = (size_t)(p - e->out.p);
    }
}

/* The attribute writers are inlined where they are called: in protobuf,
 * the key's length is then known when compiled, its bytes copied without
 * a call; JSON goes through the json_attr_ functions. */
#define ATTR_INLINE static inline __attribute__((always_inline))

static void
json_attr_str(enc_t *e, const char *key, size_t klen, mf_str_t v)
{
    attr_key(e, key, klen);
    jb_put(&e->out, "\"stringValue\":", 14);
    jb_str(&e->out, v);
    jb_put(&e->out, "}}", 2);
}

ATTR_INLINE void
attr_str_n(enc_t *e, const char *key, size_t klen, mf_str_t v)
{
    if (v.len == 0) {
        return;
    }
    if (e->pb) {
        char *p = pb_kv_head(e, key, klen, 1 + pb_varint_len(v.len) + v.len);

        pb_end(e, p ? pb_wbytes(p, 0x0a, v.data, v.len) : NULL);
        return;
    }
    json_attr_str(e, key, klen, v);
}

static void
json_attr_int(enc_t *e, const char *key, size_t klen, int64_t v)
{
    char tmp[48];
    /* decimal, no printf */
    char *q = tmp + sizeof(tmp);
    uint64_t u = (uint64_t)v;

    attr_key(e, key, klen);
    jb_cstr(&e->out, "\"intValue\":\"");
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    jb_put(&e->out, q, (size_t)(tmp + sizeof(tmp) - q));
    jb_put(&e->out, "\"}}", 3);
}

ATTR_INLINE void
attr_int_n(enc_t *e, const char *key, size_t klen, int64_t v)
{
    if (v < 0) {
        return;
    }
    if (e->pb) {
        char *p = pb_kv_head(e, key, klen, 1 + pb_varint_len((uint64_t)v));

        if (p != NULL) {
            *p++ = 0x18;
            pb_end(e, pb_wvarint(p, (uint64_t)v));
        }
        return;
    }
    json_attr_int(e, key, klen, v);
}

static void
json_attr_double(enc_t *e, const char *key, size_t klen, double v)
{
    char tmp[64];

    attr_key(e, key, klen);
    snprintf(tmp, sizeof(tmp), "\"doubleValue\":%.17g}}", v);
    jb_cstr(&e->out, tmp);
}

ATTR_INLINE void
attr_double_n(enc_t *e, const char *key, size_t klen, double v)
{
    if (e->pb) {
        uint64_t bits;
        char *p = pb_kv_head(e, key, klen, 9);

        memcpy(&bits, &v, sizeof(bits));
        if (p != NULL) {
            *p++ = 0x21;
            pb_end(e, pb_wfixed64(p, bits));
        }
        return;
    }
    json_attr_double(e, key, klen, v);
}

static void
json_attr_bool(enc_t *e, const char *key, size_t klen, int v)
{
    attr_key(e, key, klen);
    jb_cstr(&e->out, v ? "\"boolValue\":true}}" : "\"boolValue\":false}}");
}

ATTR_INLINE void
attr_bool_n(enc_t *e, const char *key, size_t klen, int v)
{
    if (e->pb) {
        char *p = pb_kv_head(e, key, klen, 2);

        if (p != NULL) {
            *p++ = 0x10;
            *p++ = (char)(v != 0);
            pb_end(e, p);
        }
        return;
    }
    json_attr_bool(e, key, klen, v);
}

/* Span names and attributes */

/* gen_ai.provider.name of a provider type (the conventions' well-known
 * values; another type is named as it is). */
static mf_str_t
genai_provider(mf_str_t type)
{
    static const mf_str_t map[][2] = {
        {MF_STR("azure"), MF_STR("azure.ai.openai")},
        {MF_STR("gemini"), MF_STR("gcp.gemini")},
        {MF_STR("vertex"), MF_STR("gcp.vertex_ai")},
        {MF_STR("bedrock"), MF_STR("aws.bedrock")},
        {MF_STR("mistral"), MF_STR("mistral_ai")},
        {MF_STR("xai"), MF_STR("x_ai")},
        {MF_STR("openai-compatible"), MF_STR("openai")}};
    size_t i;

    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (type.len == map[i][0].len &&
            memcmp(type.data, map[i][0].data, type.len) == 0) {
            return map[i][1];
        }
    }
    return type;
}

static mf_str_t
operation_of(const mf_req_info_t *i)
{
    return i->endpoint == MF_ENDPOINT_EMBEDDINGS ? MF_STR("embeddings")
                                                 : MF_STR("chat");
}

/* What the client asked for: parameters the conventions name, read
 * once before the first attempt (the body is not read at on_log). */
typedef struct {
    char max_tokens[24];
    char temperature[32];
    char top_p[32];
} params_t;

/* A request's own: the parameters, and what was captured. */
typedef struct {
    params_t p;
    mf_str_t input;      /* gen_ai.input.messages */
    mf_str_t output;     /* gen_ai.output.messages */
    int cut;             /* a capture was cut to capture_max_bytes */
    const char *omitted; /* why the answer was not captured */
} rctx_t;

/* What a request's spans are made of, in one block: the request's info
 * and its attempts, their strings copied behind them. */
struct span_s {
    span_t *next;
    int recycled;  /* a REC_BYTES block: back to the spares once encoded */
    size_t nspans; /* the server span and one per attempt */
    mf_req_info_t i;
    params_t p;
    int has_p;
    mf_str_t input, output; /* captured, or empty */
    int cut;
    const char *omitted;
    int capture;
    size_t natt;
    mf_attempt_info_t *att; /* natt, in the block */
};

static rctx_t *
rctx_of(mf_req_t *r, void **ctx)
{
    if (*ctx == NULL && (*ctx = api->palloc(r, sizeof(rctx_t))) != NULL) {
        memset(*ctx, 0, sizeof(rctx_t));
    }
    return *ctx;
}

static void
copy_field(mf_req_t *r, mf_str_t key, char *out, size_t cap)
{
    mf_str_t v;

    out[0] = '\0';
    if (api->get_body_field(r, key, &v) == MF_OK && v.len > 0 && v.len < cap &&
        (v.data[0] == '-' || (v.data[0] >= '0' && v.data[0] <= '9'))) {
        memcpy(out, v.data, v.len);
        out[v.len] = '\0';
    }
}

static void
attr_params(enc_t *e, const params_t *p)
{
    if (p == NULL) {
        return;
    }
    if (p->max_tokens[0]) {
        attr_int(e, "gen_ai.request.max_tokens", atoll(p->max_tokens));
    }
    if (p->temperature[0]) {
        attr_double(e, "gen_ai.request.temperature", atof(p->temperature));
    }
    if (p->top_p[0]) {
        attr_double(e, "gen_ai.request.top_p", atof(p->top_p));
    }
}

/* the usage; whether it was estimated with full */
static void
attr_usage(enc_t *e, const mf_req_info_t *i, int full)
{
    attr_int(e, "gen_ai.usage.input_tokens", i->usage.prompt_tokens);
    attr_int(e, "gen_ai.usage.output_tokens", i->usage.completion_tokens);
    if (i->usage.cached_tokens > 0) {
        attr_int(e, "gen_ai.usage.cache_read.input_tokens",
                 i->usage.cached_tokens);
    }
    if (i->cache_write_tokens > 0) {
        attr_int(e, "gen_ai.usage.cache_creation.input_tokens",
                 i->cache_write_tokens);
    }
    if (i->usage.reasoning_tokens > 0) {
        attr_int(e, "gen_ai.usage.reasoning.output_tokens",
                 i->usage.reasoning_tokens);
    }
    if (full &&
        (i->usage.prompt_tokens >= 0 || i->usage.completion_tokens >= 0)) {
        attr_bool(e, "manifold.usage.estimated", i->usage.estimated);
    }
}

static void
span_open(enc_t *e, mf_str_t trace, mf_str_t span, mf_str_t parent,
          mf_str_t name, int kind, double start_s, double end_s)
{
    char tmp[160];
    jb_t *b = &e->out;

    e->n = 0;
    if (e->pb) {
        char *p;

        /* ScopeSpans.spans (field 2), written in place: its length in
         * the two bytes after the tag once the span is done (span_close;
         * moved for another length) */
        e->attr = 9;
        if (!jb_room(b, 3 + 80 + name.len)) {
            return;
        }
        p = b->p + b->len;
        *p = 0x12;
        p += 3;
        e->span_at = (size_t)(p - b->p);
        p = pb_id(e, p, 0x0a, trace);
        p = pb_id(e, p, 0x12, span);
        if (parent.len == 16) {
            p = pb_id(e, p, 0x22, parent);
        }
        p = pb_wbytes(p, 0x2a, name.data, name.len);
        *p++ = 0x30;
        p = pb_wvarint(p, (uint64_t)kind);
        *p++ = 0x39;
        p = pb_wfixed64(p, (uint64_t)(start_s * 1e9));
        *p++ = 0x41;
        p = pb_wfixed64(p, (uint64_t)(end_s * 1e9));
        b->len = (size_t)(p - b->p);
        return;
    }
    if (b->len > e->base) {
        jb_put(b, ",", 1);
    }
    jb_cstr(b, "{\"traceId\":\"");
    jb_put(b, trace.data, trace.len);
    jb_cstr(b, "\",\"spanId\":\"");
    jb_put(b, span.data, span.len);
    jb_cstr(b, "\"");
    if (parent.len == 16) {
        jb_cstr(b, ",\"parentSpanId\":\"");
        jb_put(b, parent.data, parent.len);
        jb_cstr(b, "\"");
    }
    jb_cstr(b, ",\"name\":");
    jb_str(b, name);
    /* fixed64 nanoseconds: decimal strings */
    snprintf(tmp, sizeof(tmp),
             ",\"kind\":%d,\"startTimeUnixNano\":\"%llu\","
             "\"endTimeUnixNano\":\"%llu\",\"attributes\":[",
             kind, (unsigned long long)(start_s * 1e9),
             (unsigned long long)(end_s * 1e9));
    jb_cstr(b, tmp);
}

/* status: 2 (ERROR) with a message, or unset */
static void
span_close(enc_t *e, int error, mf_str_t message)
{
    jb_t *b = &e->out;

    if (message.len > 256) {
        message.len = 256;
    }
    if (e->pb) {
        size_t n, vl;

        if (b->failed) {
            return;
        }
        if (error && jb_room(b, 24 + message.len)) {
            /* Status {message 2, code 3 = ERROR} */
            char *p = b->p + b->len;

            *p++ = 0x7a;
            p = pb_wvarint(p, 1 + pb_varint_len(message.len) + message.len + 2);
            p = pb_wbytes(p, 0x12, message.data, message.len);
            *p++ = 0x18;
            *p++ = 2;
            b->len = (size_t)(p - b->p);
        }
        /* the span's length into the room left before it: two bytes
         * (128 to 16383, the usual), else the span moved to fit */
        n = b->len - e->span_at;
        vl = pb_varint_len(n);
        if (vl != 2) {
            if (vl > 2 && !jb_room(b, vl - 2)) {
                return;
            }
            memmove(b->p + e->span_at + vl - 2, b->p + e->span_at, n);
            b->len = b->len + vl - 2;
        }
        pb_wvarint(b->p + e->span_at - 2, n);
        return;
    }
    jb_cstr(b, "]");
    if (error) {
        jb_cstr(b, ",\"status\":{\"code\":2");
        if (message.len > 0) {
            jb_cstr(b, ",\"message\":");
            jb_str(b, message);
        }
        jb_cstr(b, "}");
    }
    jb_cstr(b, "}");
}

/* The error.type of an answer: a fixed, small set. */
static const char *
error_type(int status)
{
    switch (status) {
    case 400:
        return "invalid_request";
    case 401:
        return "authentication";
    case 403:
        return "permission";
    case 404:
        return "not_found";
    case 429:
        return "rate_limit";
    case 499:
        return "client_closed";
    case 502:
        return "upstream";
    case 503:
        return "unavailable";
    case 504:
        return "timeout";
    default:
        return status >= 500 ? "internal" : "invalid_request";
    }
}

/* The queue */

/* Record blocks. A request's record fits REC_BYTES unless it has many
 * attempts or captured text: those blocks go round, taken by a worker,
 * handed back by the exporter thread in a batch (under the queue's lock),
 * instead of a malloc and a free on two threads per request. */
#define REC_BYTES 2048
#define REC_SPARES_MAX 1024 /* kept at most; more are freed */

static span_t *
rec_take(otel_t *o)
{
    span_t *s;

    pthread_mutex_lock(&o->lock);
    if ((s = o->spare) != NULL) {
        o->spare = s->next;
        o->nspare--;
    }
    pthread_mutex_unlock(&o->lock);
    if (s == NULL && (s = malloc(REC_BYTES)) == NULL) {
        return NULL;
    }
    s->recycled = 1;
    return s;
}

/* a list of records ended with: the recycled ones kept as spares (up to
 * REC_SPARES_MAX), under o->lock */
static void
rec_give_back_locked(otel_t *o, span_t *list)
{
    span_t *next;

    for (; list != NULL; list = next) {
        next = list->next;
        if (list->recycled && o->nspare < REC_SPARES_MAX && !o->stop) {
            list->next = o->spare;
            o->spare = list;
            o->nspare++;
        } else {
            free(list);
        }
    }
}

/* Queues s (when not NULL) and gives back a spare block the worker did
 * not use (when not NULL), under one lock. */
static void
enqueue(otel_t *o, span_t *s, span_t *unused)
{
    size_t nspans = s != NULL ? s->nspans : 0;

    pthread_mutex_lock(&o->lock);
    if (unused != NULL) {
        unused->next = NULL;
        rec_give_back_locked(o, unused);
    }
    if (s == NULL) {
        pthread_mutex_unlock(&o->lock);
        return;
    }
    s->next = NULL;
    if (o->queued + nspans > o->queue_cap) {
        o->dropped += nspans;
        rec_give_back_locked(o, s);
        pthread_mutex_unlock(&o->lock);
        api->metric_add(o->m_spans, &L_DROPPED, 1, (double)nspans);
        return;
    }
    if (o->tail) {
        o->tail->next = s;
    } else {
        o->head = s;
    }
    o->tail = s;
    o->queued += nspans;
    /* wake the exporter when a batch is full; else it flushes in time */
    if (o->queued >= o->batch && o->queued - nspans < o->batch) {
        pthread_cond_signal(&o->wake);
    }
    pthread_mutex_unlock(&o->lock);
}

/* Content capture (capture_content: off by default). The prompt is the
 * canonical request as it goes upstream (after any masking stage); a
 * whole answer is the upstream's, before a masking stage puts values
 * back; a stream's is what the client got, kept only when no value was
 * masked (x-manifold-masked) since it then holds the values put back.
 * Keys and secrets the mask detectors find are redacted in both, and
 * each is cut to capture_max_bytes. Shapes: the GenAI conventions'
 * gen_ai.input.messages and gen_ai.output.messages. */

/* a prefix of s of at most n bytes that ends on a character */
static size_t
utf8_cut(const char *s, size_t len, size_t n)
{
    if (n >= len) {
        return len;
    }
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
        n--;
    }
    return n;
}

/* s with the keys and secrets the mask detectors find redacted */
static json_t *
scrubbed(const char *s, size_t n)
{
    mf_mask_matches_t m = {0};
    jb_t b = {0};
    size_t k, at = 0;
    json_t *out;

    mf_mask_detect(s, n, (1u << MF_MASK_API_KEY) | (1u << MF_MASK_SECRET), &m);
    if (m.n == 0) {
        mf_mask_matches_free(&m);
        return json_stringn(s, n);
    }
    mf_mask_matches_resolve(&m);
    for (k = 0; k < m.n; k++) {
        jb_put(&b, s + at, m.v[k].start - at);
        jb_cstr(&b, m.v[k].rule == MF_MASK_API_KEY ? "[API_KEY_REDACTED]"
                                                   : "[SECRET_REDACTED]");
        at = m.v[k].start + m.v[k].len;
    }
    jb_put(&b, s + at, n - at);
    mf_mask_matches_free(&m);
    out = b.failed ? NULL : json_stringn(b.p ? b.p : "", b.len);
    free(b.p);
    return out;
}

static json_t *
text_part(const char *type, const char *field, json_t *text)
{
    json_t *p = json_pack("{s:s}", "type", type);

    if (json_is_string(text)) {
        json_object_set_new(
            p, field,
            scrubbed(json_string_value(text), json_string_length(text)));
    }
    return p;
}

/* An OpenAI content (a string or parts) as parts; a part that is not
 * text is named by its type, without its data. */
static void
content_parts(json_t *parts, json_t *content)
{
    size_t k;
    json_t *c;

    if (json_is_string(content)) {
        if (json_string_length(content) > 0) {
            json_array_append_new(parts, text_part("text", "content", content));
        }
        return;
    }
    json_array_foreach(content, k, c)
    {
        const char *t = json_string_value(json_object_get(c, "type"));

        if (t != NULL && strcmp(t, "text") == 0) {
            json_array_append_new(parts, text_part("text", "content",
                                                   json_object_get(c, "text")));
        } else if (t != NULL) {
            json_array_append_new(parts, json_pack("{s:s}", "type", t));
        }
    }
}

static void
tool_call_parts(json_t *parts, json_t *calls)
{
    size_t k;
    json_t *c;

    json_array_foreach(calls, k, c)
    {
        json_t *fn = json_object_get(c, "function");
        json_t *p = text_part("tool_call", "arguments",
                              json_object_get(fn, "arguments"));

        if (json_is_string(json_object_get(c, "id"))) {
            json_object_set(p, "id", json_object_get(c, "id"));
        }
        if (json_is_string(json_object_get(fn, "name"))) {
            json_object_set(p, "name", json_object_get(fn, "name"));
        }
        json_array_append_new(parts, p);
    }
}

/* a chat request's messages */
static json_t *
input_messages(json_t *body)
{
    json_t *out = json_array(), *m;
    size_t k;

    json_array_foreach(json_object_get(body, "messages"), k, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *parts = json_array();

        if (role == NULL) {
            json_decref(parts);
            continue;
        }
        if (strcmp(role, "tool") == 0) {
            json_t *p = json_pack("{s:s}", "type", "tool_call_response");
            json_t *c = json_object_get(m, "content");
            json_t *text = json_is_string(c) ? json_incref(c) : NULL;

            if (text == NULL && json_is_array(c)) {
                /* text parts joined */
                jb_t b = {0};
                size_t j;
                json_t *e;

                json_array_foreach(c, j, e)
                {
                    const char *t =
                        json_string_value(json_object_get(e, "text"));

                    jb_cstr(&b, t ? t : "");
                }
                text = b.failed ? NULL : json_stringn(b.p ? b.p : "", b.len);
                free(b.p);
            }
            if (json_is_string(json_object_get(m, "tool_call_id"))) {
                json_object_set(p, "id", json_object_get(m, "tool_call_id"));
            }
            if (text != NULL) {
                json_object_set_new(p, "response",
                                    scrubbed(json_string_value(text),
                                             json_string_length(text)));
                json_decref(text);
            }
            json_array_append_new(parts, p);
        } else {
            content_parts(parts, json_object_get(m, "content"));
            tool_call_parts(parts, json_object_get(m, "tool_calls"));
        }
        json_array_append_new(
            out, json_pack("{s:s,s:o}", "role", role, "parts", parts));
    }
    return out;
}

/* a chat.completion's choices */
static json_t *
output_of_completion(json_t *resp)
{
    json_t *out = json_array(), *c;
    size_t k;

    json_array_foreach(json_object_get(resp, "choices"), k, c)
    {
        json_t *msg = json_object_get(c, "message"), *parts = json_array();
        json_t *o;

        content_parts(parts, json_object_get(msg, "content"));
        tool_call_parts(parts, json_object_get(msg, "tool_calls"));
        o = json_pack("{s:s,s:o}", "role", "assistant", "parts", parts);
        if (json_is_string(json_object_get(c, "finish_reason"))) {
            json_object_set(o, "finish_reason",
                            json_object_get(c, "finish_reason"));
        }
        json_array_append_new(out, o);
    }
    return out;
}

#define CAPTURE_CHOICES 8

/* a stream's chunks, put together into the choices they made */
static json_t *
output_of_chunks(json_t *chunks)
{
    struct {
        jb_t text;
        json_t *calls; /* [{id, function: {name, arguments}}] by index */
        json_t *finish;
        int seen;
    } ch[CAPTURE_CHOICES];
    json_t *out = json_array(), *chunk, *c;
    size_t k, j;
    int n;

    memset(ch, 0, sizeof(ch));
    json_array_foreach(chunks, k, chunk)
    {
        json_array_foreach(json_object_get(chunk, "choices"), j, c)
        {
            json_int_t idx = json_integer_value(json_object_get(c, "index"));
            json_t *d = json_object_get(c, "delta"), *tc;
            const char *t = json_string_value(json_object_get(d, "content"));
            size_t q;

            if (idx < 0 || idx >= CAPTURE_CHOICES) {
                continue;
            }
            ch[idx].seen = 1;
            if (t != NULL) {
                jb_put(&ch[idx].text, t,
                       json_string_length(json_object_get(d, "content")));
            }
            json_array_foreach(json_object_get(d, "tool_calls"), q, tc)
            {
                json_int_t ti =
                    json_integer_value(json_object_get(tc, "index"));
                json_t *fn = json_object_get(tc, "function"), *have, *hf;
                const char *args =
                    json_string_value(json_object_get(fn, "arguments"));

                if (ch[idx].calls == NULL) {
                    ch[idx].calls = json_array();
                }
                if (ti < 0 || ti > 64) {
                    continue;
                }
                while ((json_int_t)json_array_size(ch[idx].calls) <= ti) {
                    json_array_append_new(
                        ch[idx].calls,
                        json_pack("{s:{s:s}}", "function", "arguments", ""));
                }
                have = json_array_get(ch[idx].calls, (size_t)ti);
                hf = json_object_get(have, "function");
                if (json_is_string(json_object_get(tc, "id"))) {
                    json_object_set(have, "id", json_object_get(tc, "id"));
                }
                if (json_is_string(json_object_get(fn, "name"))) {
                    json_object_set(hf, "name", json_object_get(fn, "name"));
                }
                if (args != NULL) {
                    jb_t b = {0};
                    json_t *prev = json_object_get(hf, "arguments");

                    jb_put(&b, json_string_value(prev),
                           json_string_length(prev));
                    jb_put(
                        &b, args,
                        json_string_length(json_object_get(fn, "arguments")));
                    if (!b.failed) {
                        json_object_set_new(
                            hf, "arguments",
                            json_stringn(b.p ? b.p : "", b.len));
                    }
                    free(b.p);
                }
            }
            if (json_is_string(json_object_get(c, "finish_reason"))) {
                json_decref(ch[idx].finish);
                ch[idx].finish =
                    json_incref(json_object_get(c, "finish_reason"));
            }
        }
    }
    for (n = 0; n < CAPTURE_CHOICES; n++) {
        json_t *parts, *o, *text;

        if (!ch[n].seen) {
            continue;
        }
        parts = json_array();
        text = ch[n].text.failed
                   ? NULL
                   : json_stringn(ch[n].text.p ? ch[n].text.p : "",
                                  ch[n].text.len);
        content_parts(parts, text);
        json_decref(text);
        tool_call_parts(parts, ch[n].calls);
        o = json_pack("{s:s,s:o}", "role", "assistant", "parts", parts);
        if (ch[n].finish != NULL) {
            json_object_set_new(o, "finish_reason", ch[n].finish);
        }
        json_array_append_new(out, o);
        json_decref(ch[n].calls);
        free(ch[n].text.p);
    }
    return out;
}

/* Cuts the longest text of a message's parts by n bytes; 0 when none is
 * left to cut. */
static int
cut_longest(json_t *msg, size_t n)
{
    static const char *const fields[] = {"content", "arguments", "response"};
    json_t *part, *best = NULL;
    const char *best_field = NULL;
    size_t k, f, best_len = 0;

    json_array_foreach(json_object_get(msg, "parts"), k, part)
    {
        for (f = 0; f < 3; f++) {
            json_t *v = json_object_get(part, fields[f]);

            if (json_is_string(v) && json_string_length(v) > best_len) {
                best = part;
                best_field = fields[f];
                best_len = json_string_length(v);
            }
        }
    }
    if (best == NULL) {
        return 0;
    }
    {
        json_t *v = json_object_get(best, best_field);
        const char *s = json_string_value(v);
        size_t keep = utf8_cut(s, best_len, best_len > n ? best_len - n : 0);

        json_object_set_new(best, best_field, json_stringn(s, keep));
    }
    return 1;
}

/* The messages as JSON text of at most max bytes: whole messages from
 * the end (a prompt: its latest) or from the start (an answer), the one
 * that does not fit cut; *cut set when anything was left out. NULL when
 * nothing fits. */
static char *
fit_messages(json_t *msgs, size_t max, int from_end, int *cut)
{
    size_t n = json_array_size(msgs), k, total = 2, kept = 0;
    char **texts = calloc(n ? n : 1, sizeof(*texts));
    char *out = NULL;
    jb_t b = {0};

    if (texts == NULL) {
        return NULL;
    }
    for (k = 0; k < n; k++) {
        size_t i = from_end ? n - 1 - k : k;
        json_t *m = json_array_get(msgs, i);
        char *t = json_dumps(m, JSON_COMPACT);
        int tries = 0;

        while (t != NULL && total + strlen(t) + (kept ? 1 : 0) > max &&
               tries++ < 4) {
            size_t over = total + strlen(t) + (kept ? 1 : 0) - max;

            free(t);
            t = cut_longest(m, over) ? json_dumps(m, JSON_COMPACT) : NULL;
            *cut = 1;
        }
        if (t == NULL || total + strlen(t) + (kept ? 1 : 0) > max) {
            free(t);
            *cut = 1;
            break;
        }
        total += strlen(t) + (kept ? 1 : 0);
        texts[i] = t;
        kept++;
    }
    if (kept > 0) {
        int first = 1;

        jb_put(&b, "[", 1);
        for (k = 0; k < n; k++) {
            if (texts[k] != NULL) {
                if (!first) {
                    jb_put(&b, ",", 1);
                }
                jb_cstr(&b, texts[k]);
                first = 0;
            }
        }
        jb_put(&b, "]", 1);
        out = b.failed ? NULL : b.p;
        if (out == NULL) {
            free(b.p);
        }
    }
    for (k = 0; k < n; k++) {
        free(texts[k]);
    }
    free(texts);
    return out;
}

/* into request memory */
static mf_str_t
keep_text(mf_req_t *r, char *text)
{
    mf_str_t s = MF_STR_NULL;
    size_t n;
    char *p;

    if (text == NULL) {
        return s;
    }
    n = strlen(text);
    if ((p = api->palloc(r, n)) != NULL) {
        memcpy(p, text, n);
        s = (mf_str_t){p, n};
    }
    free(text);
    return s;
}

/* Stage callbacks */

static mf_action_t
otel_on_upstream_request(mf_req_t *r, void *state, void **ctx)
{
    otel_t *o = state;
    mf_req_info_t i = {.size = sizeof(i)};
    mf_attempt_info_t a = {.size = sizeof(a)};
    char tp[64];
    size_t k;
    int first = *ctx == NULL;
    rctx_t *x = rctx_of(r, ctx);

    if (first && x != NULL) {
        params_t *p = &x->p;

        copy_field(r, MF_STR("max_tokens"), p->max_tokens,
                   sizeof(p->max_tokens));
        if (p->max_tokens[0] == '\0') {
            copy_field(r, MF_STR("max_completion_tokens"), p->max_tokens,
                       sizeof(p->max_tokens));
        }
        copy_field(r, MF_STR("temperature"), p->temperature,
                   sizeof(p->temperature));
        copy_field(r, MF_STR("top_p"), p->top_p, sizeof(p->top_p));
    }
    if (first && x != NULL && o->capture) {
        /* the prompt as it goes upstream: after any masking stage (its
         * text, parsed here: the host's parsed body is left alone) */
        mf_str_t body;
        json_t *b, *msgs;

        api->get_info(r, &i);
        if (i.endpoint != MF_ENDPOINT_EMBEDDINGS &&
            api->get_body_text(r, &body) == MF_OK &&
            (b = json_loadb(body.data, body.len, 0, NULL)) != NULL) {
            if ((msgs = input_messages(b)) != NULL) {
                x->input = keep_text(
                    r, fit_messages(msgs, o->capture_max, 1, &x->cut));
                json_decref(msgs);
            }
            json_decref(b);
        }
    }
    if (!o->propagate) {
        return MF_CONTINUE;
    }
    if (o->abi18) {
        /* the host writes it: no get_info, get_attempt nor header check */
        api->set_traceparent(r);
        return MF_CONTINUE;
    }
    api->get_info(r, &i);
    /* the open attempt is the last one */
    for (k = 0; api->get_attempt(r, k, &a) == MF_OK; k++) {
        if (a.outcome.len == 0) {
            /* 00-TRACE-SPAN-FLAGS (no printf: this is every attempt's) */
            if (i.trace_id.len == 32 && a.span_id.len == 16) {
                memcpy(tp, "00-", 3);
                memcpy(tp + 3, i.trace_id.data, 32);
                tp[35] = '-';
                memcpy(tp + 36, a.span_id.data, 16);
                memcpy(tp + 52, i.trace_sampled ? "-01" : "-00", 3);
                api->set_header(r, MF_UPSTREAM_REQUEST_HEADERS,
                                MF_STR("traceparent"), (mf_str_t){tp, 55});
            }
            break;
        }
    }
    return MF_CONTINUE;
}

/* capture: a stream's answer is recorded for on_log */
static mf_action_t
otel_on_route(mf_req_t *r, void *state, void **ctx)
{
    otel_t *o = state;
    mf_req_info_t i = {.size = sizeof(i)};

    (void)ctx;
    if (o->capture) {
        api->get_info(r, &i);
        if (i.stream) {
            api->record_answer(r);
        }
    }
    return MF_CONTINUE;
}

/* capture: a whole answer as the upstream gave it, before a masking
 * stage puts values back (that is at on_response_body) */
static mf_action_t
otel_on_response_headers(mf_req_t *r, void *state, void **ctx)
{
    otel_t *o = state;
    mf_str_t text;
    json_t *resp, *msgs;
    rctx_t *x;

    if (!o->capture || api->get_response_text(r, &text) != MF_OK ||
        (x = rctx_of(r, ctx)) == NULL) {
        return MF_CONTINUE;
    }
    resp = json_loadb(text.data, text.len, 0, NULL);
    if (resp != NULL && (msgs = output_of_completion(resp)) != NULL) {
        x->output =
            keep_text(r, fit_messages(msgs, o->capture_max, 0, &x->cut));
        json_decref(msgs);
    }
    json_decref(resp);
    return MF_CONTINUE;
}

/* capture, at on_log: a stream's answer as the client got it, unless
 * values were masked in it (the client got them back) */
static void
capture_stream(otel_t *o, mf_req_t *r, rctx_t *x)
{
    mf_str_t v;
    json_t *chunks, *msgs;

    if (api->get_header(r, MF_RESPONSE_HEADERS, MF_STR("x-manifold-masked"),
                        &v) == MF_OK &&
        v.len > 0) {
        x->omitted = "masked";
        return;
    }
    if ((chunks = api->get_answer(r)) == NULL) {
        return;
    }
    if ((msgs = output_of_chunks(chunks)) != NULL) {
        x->output =
            keep_text(r, fit_messages(msgs, o->capture_max, 0, &x->cut));
        json_decref(msgs);
    }
    json_decref(chunks);
}

static void
attr_capture(enc_t *e, const rctx_t *x, int with_output)
{
    if (x == NULL) {
        return;
    }
    attr_str(e, "gen_ai.input.messages", x->input);
    if (with_output) {
        attr_str(e, "gen_ai.output.messages", x->output);
        if (x->omitted != NULL) {
            attr_str(e, "manifold.capture.output_omitted", cstr(x->omitted));
        }
    }
    if (x->cut) {
        attr_bool(e, "manifold.capture.truncated", 1);
    }
}

/* "a b" into out (cut to fit), as a view */
static mf_str_t
join_name(char *out, size_t cap, mf_str_t a, mf_str_t b)
{
    size_t n = a.len < cap - 1 ? a.len : cap - 1, m;

    if (n > 0) {
        memcpy(out, a.data, n);
    }
    if (n + 1 < cap) {
        out[n++] = ' ';
    }
    m = b.len < cap - n ? b.len : cap - n;
    if (m > 0) {
        memcpy(out + n, b.data, m);
    }
    return (mf_str_t){out, n + m};
}

/* s's bytes copied to *at, s pointed at them */
static void
put_str(char **at, mf_str_t *s)
{
    if (s->len == 0) {
        *s = MF_STR_NULL;
        return;
    }
    memcpy(*at, s->data, s->len);
    s->data = *at;
    *at += s->len;
}

/* The spans of a record, written by the exporter thread (its own e). */
static void
encode(const otel_t *o, const span_t *rec, enc_t *e)
{
    const mf_req_info_t *i = &rec->i;
    const params_t *p = rec->has_p ? &rec->p : NULL;
    const rctx_t cap = {.input = rec->input,
                        .output = rec->output,
                        .cut = rec->cut,
                        .omitted = rec->omitted};
    char name[300];
    size_t k;
    int n_ok = -1, n_last = (int)rec->natt - 1;
    double end = i->start_time + i->latency_ms / 1000;

    e->memo_hex[0] = e->memo_hex[1] = NULL; /* a new record */
    /* the server span: the gateway's answer to the client */
    span_open(e, i->trace_id, i->span_id, i->parent_span_id,
              join_name(name, sizeof(name), i->method, i->path), 2,
              i->start_time, end);
    attr_str(e, "http.request.method", i->method);
    attr_str(e, "http.route", i->path);
    attr_str(e, "url.path", i->path);
    attr_int(e, "http.response.status_code", i->status);
    attr_str(e, "gen_ai.operation.name", operation_of(i));
    attr_str(e, "gen_ai.request.model", i->model);
    attr_str(e, "manifold.consumer", i->consumer);
    if (o->full) {
        attr_params(e, p);
        attr_bool(e, "manifold.stream", i->stream);
        attr_str(e, "manifold.request_id", i->id);
        attr_int(e, "manifold.attempts", i->attempts);
        if (i->first_content_ms >= 0) {
            attr_double(e, "manifold.time_to_first_token_s",
                        i->first_content_ms / 1000);
        }
        attr_usage(e, i, 1);
    }
    if (i->status >= 400) {
        attr_str(e, "error.type", cstr(error_type(i->status)));
    }
    /* a server span is an error for 5xx only (the client's 4xx is its
     * own); a stream cut after its head is one too */
    span_close(e,
               i->status >= 500 ||
                   (i->stream && i->error.len > 0 && i->status < 400),
               i->error);

    /* the attempt that answered gets the usage */
    for (k = 0; k < rec->natt; k++) {
        const mf_attempt_info_t *a = &rec->att[k];

        if (a->outcome.len == 2 && memcmp(a->outcome.data, "ok", 2) == 0) {
            n_ok = (int)k;
        }
    }
    for (k = 0; k < rec->natt; k++) {
        const mf_attempt_info_t *a = &rec->att[k];
        int failed =
            !(a->outcome.len == 2 && memcmp(a->outcome.data, "ok", 2) == 0);
        double start = a->start_ms >= 0 ? i->start_time + a->start_ms / 1000
                                        : i->start_time;
        double stop =
            a->duration_ms >= 0 ? start + a->duration_ms / 1000 : start;

        span_open(e, i->trace_id, a->span_id, i->span_id,
                  join_name(name, sizeof(name), operation_of(i), a->model), 3,
                  start, stop);
        attr_str(e, "gen_ai.operation.name", operation_of(i));
        attr_str(e, "gen_ai.provider.name", genai_provider(a->provider_type));
        attr_str(e, "gen_ai.request.model", a->model);
        attr_params(e, p);
        if (o->full) {
            attr_str(e, "manifold.provider", a->provider);
            if (a->status > 0) {
                attr_int(e, "http.response.status_code", a->status);
            }
            if (a->ttfb_ms >= 0) {
                attr_double(e, "manifold.upstream.time_to_first_byte_s",
                            a->ttfb_ms / 1000);
            }
        }
        if ((int)k == n_ok) {
            attr_str(e, "gen_ai.response.model", i->upstream_model);
            attr_usage(e, i, o->full);
            if (i->stream && i->error.len > 0) {
                failed = 1; /* began, then cut */
            }
        }
        if (rec->capture &&
            ((int)k == n_ok || (n_ok < 0 && (int)k == n_last))) {
            attr_capture(e, &cap, (int)k == n_ok);
        }
        if (failed) {
            attr_str(e, "error.type", a->outcome);
        }
        span_close(e, failed, failed ? a->outcome : MF_STR_NULL);
    }
}

/* The worker takes what the spans are made of, copied into one block,
 * and queues it: the encoding is the exporter thread's. */
static void
otel_on_log(mf_req_t *r, void *state, void **ctx)
{
    otel_t *o = state;
    rctx_t *x = *ctx;
    size_t k, n = 0, room, bytes;
    span_t *s = rec_take(o), *big;
    mf_req_info_t *i;
    mf_attempt_info_t *att;
    char *at;

    if (s == NULL) {
        api->metric_add(o->m_spans, &L_DROPPED, 1, 1);
        return;
    }
    /* the info and the attempts straight into the block: no copy */
    i = &s->i;
    i->size = sizeof(*i);
    api->get_info(r, i);
    /* not scrapes, stage pages, health checks, nor what the gateway
     * answers itself (model lists, count_tokens): no model call */
    if (i->listener != MF_LISTENER_CLIENT || i->endpoint == MF_ENDPOINT_NONE ||
        i->endpoint == MF_ENDPOINT_LOCAL || !i->trace_sampled) {
        enqueue(o, NULL, s); /* back to the spares */
        return;
    }
    if (o->capture && x != NULL) {
        if (i->stream && (i->status < 400 || i->error.len > 0)) {
            capture_stream(o, r, x);
        } else if (i->status >= 400) {
            x->output = MF_STR_NULL; /* the client did not get it */
        }
    }
    /* the strings the spans use, and their size */
    i->client_addr = i->provider = i->tried = i->query = MF_STR_NULL;
    bytes = i->id.len + i->method.len + i->path.len + i->consumer.len +
            i->model.len + i->upstream_model.len + i->error.len +
            i->trace_id.len + i->span_id.len + i->parent_span_id.len;
    /* the attempts behind the record when they fit (a few), else in an
     * array of their own until the block's size is known */
    room = (REC_BYTES - sizeof(*s)) / sizeof(*att);
    att = (mf_attempt_info_t *)(s + 1);
    if ((size_t)i->attempts > room) {
        if ((att = malloc((size_t)i->attempts * sizeof(*att))) == NULL) {
            enqueue(o, NULL, s);
            api->metric_add(o->m_spans, &L_DROPPED, 1, 1);
            return;
        }
    }
    /* no more than were started: no call to learn there is no next */
    for (k = 0; k < (size_t)i->attempts; k++) {
        mf_attempt_info_t *a = &att[k];

        a->size = sizeof(*a);
        if (api->get_attempt(r, k, a) != MF_OK) {
            break;
        }
        bytes += a->provider.len + a->model.len + a->outcome.len +
                 a->span_id.len + a->provider_type.len;
        n++;
    }
    if (x != NULL && o->capture) {
        bytes += x->input.len + x->output.len;
    }
    if (att != (mf_attempt_info_t *)(s + 1) ||
        sizeof(*s) + n * sizeof(*att) + bytes > REC_BYTES) {
        /* a block of its own, as large as it needs */
        big = malloc(sizeof(*s) + n * sizeof(*att) + bytes);
        if (big == NULL) {
            if (att != (mf_attempt_info_t *)(s + 1)) {
                free(att);
            }
            enqueue(o, NULL, s);
            api->metric_add(o->m_spans, &L_DROPPED, 1, (double)(1 + n));
            return;
        }
        big->i = s->i;
        memcpy(big + 1, att, n * sizeof(*att));
        if (att != (mf_attempt_info_t *)(s + 1)) {
            free(att);
        }
        enqueue(o, NULL, s);
        s = big;
        s->recycled = 0;
        i = &s->i;
    }
    s->nspans = 1 + n;
    s->natt = n;
    s->att = (mf_attempt_info_t *)(s + 1);
    at = (char *)(s->att + n);
    put_str(&at, &i->id);
    put_str(&at, &i->method);
    put_str(&at, &i->path);
    put_str(&at, &i->consumer);
    put_str(&at, &i->model);
    put_str(&at, &i->upstream_model);
    put_str(&at, &i->error);
    put_str(&at, &i->trace_id);
    put_str(&at, &i->span_id);
    put_str(&at, &i->parent_span_id);
    for (k = 0; k < n; k++) {
        put_str(&at, &s->att[k].provider);
        put_str(&at, &s->att[k].model);
        put_str(&at, &s->att[k].outcome);
        put_str(&at, &s->att[k].span_id);
        put_str(&at, &s->att[k].provider_type);
    }
    s->has_p = x != NULL;
    s->capture = 0;
    s->input = s->output = MF_STR_NULL;
    s->cut = 0;
    s->omitted = NULL;
    if (x != NULL) {
        s->p = x->p;
        if (o->capture) {
            s->capture = 1;
            s->input = x->input;
            s->output = x->output;
            s->cut = x->cut;
            s->omitted = x->omitted;
            put_str(&at, &s->input);
            put_str(&at, &s->output);
        }
    }
    enqueue(o, s, NULL);
}

/* Export: a blocking HTTP/1.1 client on the exporter thread */

typedef struct {
    int fd;
    SSL *ssl;
} conn_t;

static void
conn_close(otel_t *o, conn_t *c)
{
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        pthread_mutex_lock(&o->lock);
        o->cur_fd = -1;
        pthread_mutex_unlock(&o->lock);
        close(c->fd);
        c->fd = -1;
    }
}

static int
conn_open(otel_t *o, conn_t *c, char *err, size_t errcap)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    long ms;
    struct timeval tv;
    int rc;

    /* stopping: what is left gets close_ms at most */
    pthread_mutex_lock(&o->lock);
    ms = o->stop && o->close_ms < o->timeout_ms ? o->close_ms : o->timeout_ms;
    pthread_mutex_unlock(&o->lock);
    ms = ms > 0 ? ms : 1;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;

    c->fd = -1;
    c->ssl = NULL;
    if ((rc = getaddrinfo(o->host, o->port, &hints, &res)) != 0) {
        snprintf(err, errcap, "cannot resolve %s: %s", o->host,
                 gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                        ai->ai_protocol);

        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        pthread_mutex_lock(&o->lock);
        o->cur_fd = fd;
        pthread_mutex_unlock(&o->lock);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            c->fd = fd;
            break;
        }
        pthread_mutex_lock(&o->lock);
        o->cur_fd = -1;
        pthread_mutex_unlock(&o->lock);
        close(fd);
    }
    freeaddrinfo(res);
    if (c->fd < 0) {
        snprintf(err, errcap, "cannot connect to %s:%s: %s", o->host, o->port,
                 strerror(errno));
        return -1;
    }
    if (o->tls) {
        c->ssl = SSL_new(o->ssl);
        if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
            SSL_set_tlsext_host_name(c->ssl, o->host) != 1 ||
            SSL_set1_host(c->ssl, o->host) != 1 || SSL_connect(c->ssl) != 1) {
            snprintf(err, errcap, "TLS with %s failed: %s", o->host,
                     ERR_reason_error_string(ERR_get_error()) ?: "handshake");
            conn_close(o, c);
            return -1;
        }
    }
    return 0;
}

static int
conn_write(conn_t *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = c->ssl ? SSL_write(c->ssl, p, (int)n)
                           : send(c->fd, p, n, MSG_NOSIGNAL);

        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static ssize_t
conn_read(conn_t *c, char *p, size_t n)
{
    return c->ssl ? SSL_read(c->ssl, p, (int)n) : recv(c->fd, p, n, 0);
}

/* POSTs body; returns the status, or 0 (err set) when no answer came. */
static int
post(otel_t *o, const char *body, size_t len, char *err, size_t errcap)
{
    conn_t c;
    jb_t h = {0};
    char tmp[64], resp[1024];
    size_t k, got = 0;
    int status = 0;

    if (conn_open(o, &c, err, errcap) != 0) {
        return 0;
    }
    jb_cstr(&h, "POST ");
    jb_cstr(&h, o->path);
    jb_cstr(&h, " HTTP/1.1\r\nHost: ");
    jb_cstr(&h, o->hostport);
    jb_cstr(&h, o->protobuf ? "\r\nContent-Type: application/x-protobuf"
                            : "\r\nContent-Type: application/json");
    jb_cstr(&h, "\r\nUser-Agent: manifold-otel\r\nConnection: close\r\n");
    if (o->gzip) {
        jb_cstr(&h, "Content-Encoding: gzip\r\n");
    }
    for (k = 0; k < o->nheaders; k++) {
        jb_cstr(&h, o->headers[k]);
        jb_cstr(&h, "\r\n");
    }
    snprintf(tmp, sizeof(tmp), "Content-Length: %zu\r\n\r\n", len);
    jb_cstr(&h, tmp);
    if (h.failed || conn_write(&c, h.p, h.len) != 0 ||
        conn_write(&c, body, len) != 0) {
        snprintf(err, errcap, "sending to %s:%s failed", o->host, o->port);
        free(h.p);
        conn_close(o, &c);
        return 0;
    }
    free(h.p);
    /* the status line is all that matters; the rest is read and let go */
    while (got < sizeof(resp) - 1) {
        ssize_t n = conn_read(&c, resp + got, sizeof(resp) - 1 - got);

        if (n <= 0) {
            break;
        }
        got += (size_t)n;
        resp[got] = '\0';
        if (strstr(resp, "\r\n") != NULL) {
            break;
        }
    }
    resp[got] = '\0';
    if (got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0) {
        status = atoi(resp + 9);
    }
    if (status == 0) {
        snprintf(err, errcap, "no HTTP answer from %s:%s", o->host, o->port);
    } else {
        char drain[4096];

        while (conn_read(&c, drain, sizeof(drain)) > 0) {
        }
    }
    conn_close(o, &c);
    return status;
}

static int export_try(otel_t *o, const char *body, size_t len,
                      int last_try_only);

/* body gzip'd into *out (malloc'd); 0, or -1 when zlib fails. */
static int
gzip_body(const char *body, size_t len, unsigned char **out, size_t *outlen)
{
    z_stream z = {0};
    uLong cap;
    int rc;

    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        return -1;
    }
    cap = deflateBound(&z, (uLong)len) + 32;
    *out = malloc(cap);
    if (*out == NULL) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)(uintptr_t)body;
    z.avail_in = (uInt)len;
    z.next_out = *out;
    z.avail_out = (uInt)cap;
    rc = deflate(&z, Z_FINISH);
    *outlen = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* Sends one batch with retries; 1 sent, 0 given up. */
static int
export_batch(otel_t *o, const char *body, size_t len, int last_try_only)
{
    unsigned char *z = NULL;
    size_t zlen = 0;
    int sent;

    if (o->gzip) {
        if (gzip_body(body, len, &z, &zlen) != 0) {
            api->log(MF_LOG_ERROR, "otel: a batch could not be compressed; "
                                   "its spans are dropped");
            api->metric_add(o->m_exports, &L_FAILED, 1, 1);
            return 0;
        }
        body = (const char *)z;
        len = zlen;
    }
    sent = export_try(o, body, len, last_try_only);
    free(z);
    return sent;
}

/* export_batch's tries. */
static int
export_try(otel_t *o, const char *body, size_t len, int last_try_only)
{
    char err[256];
    int attempt, status = 0;
    long backoff = 200;

    for (attempt = 0; attempt <= o->retries; attempt++) {
        err[0] = '\0';
        status = post(o, body, len, err, sizeof(err));
        if (status >= 200 && status < 300) {
            api->metric_add(o->m_exports, &L_OK, 1, 1);
            return 1;
        }
        pthread_mutex_lock(&o->lock);
        last_try_only |= o->stop; /* stopping: no more tries */
        pthread_mutex_unlock(&o->lock);
        /* a 4xx but 429 will not pass by trying again */
        if (last_try_only || (status >= 400 && status < 500 && status != 429) ||
            (status >= 500 && status != 502 && status != 503 &&
             status != 504)) {
            break;
        }
        api->metric_add(o->m_exports, &L_RETRIED, 1, 1);
        {
            struct timespec ts = {backoff / 1000, (backoff % 1000) * 1000000};

            pthread_mutex_lock(&o->lock);
            if (!o->stop) {
                struct timespec now;

                clock_gettime(CLOCK_REALTIME, &now);
                now.tv_sec += ts.tv_sec;
                now.tv_nsec += ts.tv_nsec;
                if (now.tv_nsec >= 1000000000) {
                    now.tv_sec++;
                    now.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&o->wake, &o->lock, &now);
            }
            pthread_mutex_unlock(&o->lock);
        }
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    api->metric_add(o->m_exports, &L_FAILED, 1, 1);
    if (status != 0) {
        api->log(MF_LOG_WARN, "otel: export to %s answered %d; spans dropped",
                 o->url, status);
    } else {
        api->log(MF_LOG_WARN, "otel: export failed (%s); spans dropped", err);
    }
    return 0;
}

/* Takes a batch from the queue (under lock): requests' spans until
 * `batch` spans or more are taken. */
static span_t *
take(otel_t *o, size_t *nspans)
{
    span_t *first = o->head, *s = first, *last = NULL;
    size_t n = 0;

    while (s != NULL && n < o->batch) {
        n += s->nspans;
        last = s;
        s = s->next;
    }
    *nspans = n;
    if (last == NULL) {
        return NULL;
    }
    o->head = last->next;
    if (o->head == NULL) {
        o->tail = NULL;
    }
    last->next = NULL;
    o->queued -= n;
    return first;
}

/* The scope, InstrumentationScope {name 1, version 2}: the same in
 * every export */
static const char SCOPE_PB[] = "\x0a\x08manifold\x12\x05"
                               "1.0.0";

/* Encodes a batch into e's buffers (kept from batch to batch by the
 * exporter thread) and sends it. */
static void
send_spans(otel_t *o, enc_t *e, span_t *list, size_t count, int last_try_only)
{
    span_t *s;
    const char *body = NULL;
    size_t len = 0;
    jb_t *b = &e->out;

    b->len = 0;
    b->failed = 0;
    if (o->protobuf) {
        /* ExportTraceServiceRequest {ResourceSpans 1 {Resource 1,
         * ScopeSpans 2 {InstrumentationScope 1, the spans (field 2)}}}:
         * the spans are written after a gap, the heads (lengths known
         * then) into the gap's end: no copy of the spans */
        size_t gap = o->resource_pb_len + 64, sc = sizeof(SCOPE_PB) - 1;

        if (jb_room(b, gap)) {
            b->len = gap;
        }
        for (s = list; s != NULL; s = s->next) {
            encode(o, s, e);
        }
        if (!b->failed) {
            size_t spans = b->len - gap, ss = 2 + sc + spans;
            size_t rs = 1 + pb_varint_len(o->resource_pb_len) +
                        o->resource_pb_len + 1 + pb_varint_len(ss) + ss;
            char head[64], *h = head;
            size_t hl, rl = o->resource_pb_len;

            /* backwards from the spans: the scope, ScopeSpans' head,
             * the Resource (encoded once), ResourceSpans' head */
            *h++ = 0x0a;
            h = pb_wvarint(h, rs);
            *h++ = 0x0a;
            h = pb_wvarint(h, rl);
            hl = (size_t)(h - head);
            {
                char tail[16], *t = tail;
                size_t tl;
                char *at;

                *t++ = 0x12;
                t = pb_wvarint(t, ss);
                *t++ = 0x0a;
                *t++ = (char)sc;
                tl = (size_t)(t - tail);
                at = b->p + gap - sc;
                memcpy(at, SCOPE_PB, sc);
                at -= tl;
                memcpy(at, tail, tl);
                at -= rl;
                memcpy(at, o->resource_pb, rl);
                at -= hl;
                memcpy(at, head, hl);
                body = at;
                len = (size_t)(b->p + b->len - at);
            }
        }
    } else {
        jb_cstr(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":");
        jb_cstr(b, o->resource);
        jb_cstr(b, "},\"scopeSpans\":[{\"scope\":{\"name\":\"manifold\","
                   "\"version\":\"1.0.0\"},\"spans\":[");
        e->base = b->len;
        for (s = list; s != NULL; s = s->next) {
            encode(o, s, e);
        }
        jb_cstr(b, "]}]}]}");
        body = b->p;
        len = b->len;
    }
    if (!b->failed && body != NULL &&
        export_batch(o, body, len, last_try_only)) {
        api->metric_add(o->m_spans, &L_EXPORTED, 1, (double)count);
    } else {
        api->metric_add(o->m_spans, &L_FAILED, 1, (double)count);
    }
}

static void *
exporter_main(void *arg)
{
    otel_t *o = arg;
    struct timespec deadline;
    uint64_t reported = 0;
    enc_t e = {.pb = o->protobuf}; /* the batch's buffers, kept */

    pthread_mutex_lock(&o->lock);
    for (;;) {
        span_t *list;
        size_t n;

        if (o->dropped != reported) {
            uint64_t d = o->dropped - reported;

            reported = o->dropped;
            pthread_mutex_unlock(&o->lock);
            api->log(MF_LOG_WARN,
                     "otel: %llu spans dropped: the queue (%zu spans) was "
                     "full",
                     (unsigned long long)d, o->queue_cap);
            pthread_mutex_lock(&o->lock);
        }
        if (!o->stop && o->queued < o->batch) {
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec += o->flush_ms / 1000;
            deadline.tv_nsec += (o->flush_ms % 1000) * 1000000;
            if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&o->wake, &o->lock, &deadline);
        }
        if (o->stop) {
            break;
        }
        list = take(o, &n);
        if (list == NULL) {
            continue;
        }
        pthread_mutex_unlock(&o->lock);
        send_spans(o, &e, list, n, 0);
        pthread_mutex_lock(&o->lock);
        rec_give_back_locked(o, list); /* the workers' next records */
    }
    pthread_mutex_unlock(&o->lock);
    /* stopping: what is left, each batch tried once, within close_ms */
    {
        struct timespec t0, t;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            span_t *list, *next;
            size_t n;

            pthread_mutex_lock(&o->lock);
            list = take(o, &n);
            pthread_mutex_unlock(&o->lock);
            if (list == NULL) {
                break;
            }
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000 +
                    (t.tv_nsec - t0.tv_nsec) / 1000000 >
                o->close_ms) {
                api->metric_add(o->m_spans, &L_DROPPED, 1, (double)n);
                for (; list != NULL; list = next) {
                    next = list->next;
                    free(list);
                }
                continue;
            }
            send_spans(o, &e, list, n, 1);
            for (; list != NULL; list = next) {
                next = list->next;
                free(list);
            }
        }
    }
    free(e.out.p);
    return NULL;
}

/* Config */

static const char *
env2(const char *a, const char *b)
{
    const char *v = getenv(a);

    if (v == NULL || v[0] == '\0') {
        v = getenv(b);
    }
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static int
hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes and trims s into out. */
static void
decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t i, k = 0;

    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        n--;
    }
    for (i = 0; i < n && k + 1 < cap; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
            hexval(s[i + 2]) >= 0) {
            out[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
}

/* A header name and value a request may carry (no CR, LF; a token as
 * name). */
static int
header_ok(const char *name, const char *value)
{
    const char *p;

    if (name[0] == '\0') {
        return 0;
    }
    for (p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || strchr("-_.!#$%&'*+^`|~", *p))) {
            return 0;
        }
    }
    for (p = value; *p; p++) {
        if (*p == '\r' || *p == '\n' || *p == '\0') {
            return 0;
        }
    }
    return 1;
}

static int
add_header(otel_t *o, const char *name, const char *value)
{
    char **v;
    size_t n = strlen(name) + strlen(value) + 3;
    char *line;

    if (!header_ok(name, value)) {
        api->log(MF_LOG_ERROR, "otel: header '%s' is not a valid header", name);
        return MF_ERR;
    }
    if ((v = realloc(o->headers, (o->nheaders + 1) * sizeof(*v))) == NULL ||
        (line = malloc(n)) == NULL) {
        if (v != NULL) {
            o->headers = v;
        }
        return MF_ERR;
    }
    o->headers = v;
    snprintf(line, n, "%s: %s", name, value);
    o->headers[o->nheaders++] = line;
    return MF_OK;
}

/* "k=v,k2=v2" (the OTEL_EXPORTER_OTLP_HEADERS form) */
static int
env_headers(otel_t *o, const char *s)
{
    while (s != NULL && *s != '\0') {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        const char *eq = memchr(s, '=', n);
        char name[256], value[4096];

        if (eq == NULL) {
            api->log(MF_LOG_ERROR, "otel: OTEL_EXPORTER_OTLP_HEADERS is "
                                   "key=value pairs joined by ','");
            return MF_ERR;
        }
        decode(s, (size_t)(eq - s), name, sizeof(name));
        decode(eq + 1, n - (size_t)(eq - s) - 1, value, sizeof(value));
        if (add_header(o, name, value) != MF_OK) {
            return MF_ERR;
        }
        s = comma ? comma + 1 : NULL;
    }
    return MF_OK;
}

static int
parse_url(otel_t *o, const char *url)
{
    const char *p, *slash, *colon;
    size_t hl;

    if (strncmp(url, "http://", 7) == 0) {
        o->tls = 0;
        p = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        o->tls = 1;
        p = url + 8;
    } else {
        api->log(MF_LOG_ERROR,
                 "otel: endpoint '%s' is not an http:// or "
                 "https:// URL",
                 url);
        return MF_ERR;
    }
    slash = strchr(p, '/');
    hl = slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || memchr(p, '@', hl) != NULL) {
        api->log(MF_LOG_ERROR,
                 "otel: endpoint '%s' has no host (or has "
                 "credentials: put them in headers)",
                 url);
        return MF_ERR;
    }
    o->hostport = strndup(p, hl);
    colon = p[0] == '[' ? memchr(p, ']', hl) : p;
    colon = colon ? memchr(colon, ':', hl - (size_t)(colon - p)) : NULL;
    if (p[0] == '[') {
        const char *rb = memchr(p, ']', hl);

        o->host = rb ? strndup(p + 1, (size_t)(rb - p - 1)) : NULL;
    } else {
        o->host = strndup(p, colon ? (size_t)(colon - p) : hl);
    }
    o->port = colon ? strndup(colon + 1, hl - (size_t)(colon + 1 - p))
                    : strdup(o->tls ? "443" : "80");
    o->path = strdup(slash ? slash : "/");
    o->url = strdup(url);
    if (o->host == NULL || o->host[0] == '\0' || o->port == NULL ||
        atoi(o->port) <= 0 || atoi(o->port) > 65535 || o->path == NULL) {
        api->log(MF_LOG_ERROR, "otel: endpoint '%s' is not a usable URL", url);
        return MF_ERR;
    }
    return MF_OK;
}

static long
conf_num(json_t *conf, const char *key, long dflt, long min, long max, int *bad)
{
    json_t *v = json_object_get(conf, key);

    if (v == NULL) {
        return dflt;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min ||
        json_integer_value(v) > max) {
        api->log(MF_LOG_ERROR,
                 "otel: %s must be a whole number from %ld to %ld", key, min,
                 max);
        *bad = 1;
        return dflt;
    }
    return (long)json_integer_value(v);
}

static void otel_fini(void *state);

/* A setting of the config, else of the environment (the traces' own
 * variable, then the general one); NULL when none. */
static const char *
conf_or_env(json_t *conf, const char *key, const char *env_traces,
            const char *env_all, int *bad, int *from_conf)
{
    json_t *v = json_object_get(conf, key);

    if (v != NULL) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            api->log(MF_LOG_ERROR, "otel: %s must be a non-empty string", key);
            *bad = 1;
            return NULL;
        }
        *from_conf = 1;
        return json_string_value(v);
    }
    return env2(env_traces, env_all);
}

/* compression (gzip | none) and the TLS files (certificate: the CA to
 * trust, client_certificate and client_key for mutual TLS), from the
 * config or OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION, _CERTIFICATE,
 * _CLIENT_CERTIFICATE, _CLIENT_KEY; 1 when one is bad. */
static int
tls_settings(otel_t *o, json_t *conf)
{
    int bad = 0, from_conf = 0, tls_conf = 0;
    const char *c = conf_or_env(
        conf, "compression", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_COMPRESSION", &bad, &from_conf);
    const char *ca, *cc, *ck;

    if (c != NULL && strcmp(c, "gzip") != 0 && strcmp(c, "none") != 0) {
        api->log(MF_LOG_ERROR, "otel: compression '%s' must be gzip or none",
                 c);
        bad = 1;
    }
    o->gzip = c != NULL && strcmp(c, "gzip") == 0;
    ca = conf_or_env(conf, "certificate",
                     "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                     "OTEL_EXPORTER_OTLP_CERTIFICATE", &bad, &tls_conf);
    cc = conf_or_env(conf, "client_certificate",
                     "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                     "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &bad, &tls_conf);
    ck = conf_or_env(conf, "client_key", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                     "OTEL_EXPORTER_OTLP_CLIENT_KEY", &bad, &tls_conf);
    if ((cc == NULL) != (ck == NULL)) {
        api->log(MF_LOG_ERROR, "otel: client_certificate and client_key go "
                               "together (mutual TLS needs both)");
        bad = 1;
    }
    o->ca = ca ? strdup(ca) : NULL;
    o->ccert = cc ? strdup(cc) : NULL;
    o->ckey = ck ? strdup(ck) : NULL;
    o->tls_conf = tls_conf;
    return bad;
}

static int
otel_init(const mf_host_api_t *host, const char *config_json, void **state)
{
    static const char *const keys[] = {"endpoint",
                                       "protocol",
                                       "headers",
                                       "service_name",
                                       "batch",
                                       "queue",
                                       "flush_ms",
                                       "timeout_ms",
                                       "retries",
                                       "close_ms",
                                       "propagate",
                                       "capture_content",
                                       "capture_max_bytes",
                                       "detail",
                                       "compression",
                                       "certificate",
                                       "client_certificate",
                                       "client_key",
                                       NULL};
    json_t *conf = json_loads(config_json, 0, NULL), *v;
    const char *key, *url, *proto, *svc;
    char full[2048];
    otel_t *o;
    int bad = 0;
    size_t k;

    api = host;
    pthread_once(&hex_once, hex_init);
    if (api->abi_minor < 5) {
        api->log(MF_LOG_ERROR, "otel: needs a host with ABI 1.5");
        json_decref(conf);
        return MF_ERR;
    }
    json_object_foreach(conf, key, v)
    {
        for (k = 0; keys[k] != NULL && strcmp(keys[k], key) != 0; k++) {
        }
        if (keys[k] == NULL) {
            api->log(MF_LOG_ERROR,
                     "otel: unknown config key '%s' (endpoint, protocol, "
                     "headers, service_name, batch, queue, flush_ms, "
                     "timeout_ms, retries, close_ms, propagate, "
                     "capture_content, capture_max_bytes, detail, "
                     "compression, certificate, client_certificate, "
                     "client_key)",
                     key);
            json_decref(conf);
            return MF_ERR;
        }
    }
    proto = json_string_value(json_object_get(conf, "protocol"));
    if (proto == NULL) {
        proto = env2("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                     "OTEL_EXPORTER_OTLP_PROTOCOL");
    }
    /* the OTel default */
    proto = proto != NULL ? proto : "http/protobuf";
    if (strcmp(proto, "http/json") != 0 &&
        strcmp(proto, "http/protobuf") != 0) {
        api->log(MF_LOG_ERROR,
                 "otel: the OTLP protocol '%s' is not spoken; http/protobuf "
                 "or http/json (protocol, or OTEL_EXPORTER_OTLP_PROTOCOL)",
                 proto);
        json_decref(conf);
        return MF_ERR;
    }
    if ((o = calloc(1, sizeof(*o))) == NULL) {
        json_decref(conf);
        return MF_ERR;
    }
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->wake, NULL);
    o->cur_fd = -1;
    o->protobuf = strcmp(proto, "http/protobuf") == 0;
    o->batch = (size_t)conf_num(conf, "batch", 512, 1, 100000, &bad);
    o->queue_cap = (size_t)conf_num(conf, "queue", 8192, 1, 10000000, &bad);
    o->flush_ms = conf_num(conf, "flush_ms", 1000, 10, 600000, &bad);
    o->close_ms = conf_num(conf, "close_ms", 3000, 0, 600000, &bad);
    o->retries = (int)conf_num(conf, "retries", 3, 0, 20, &bad);
    {
        const char *t = env2("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                             "OTEL_EXPORTER_OTLP_TIMEOUT");

        o->timeout_ms =
            conf_num(conf, "timeout_ms", t ? atol(t) : 10000, 1, 600000, &bad);
        if (o->timeout_ms <= 0) {
            o->timeout_ms = 10000;
        }
    }
    v = json_object_get(conf, "propagate");
    if (v != NULL && !json_is_boolean(v)) {
        api->log(MF_LOG_ERROR, "otel: propagate must be true or false");
        bad = 1;
    }
    o->propagate = v == NULL || json_is_true(v);
    /* off by default; the GenAI conventions' variable turns it on */
    v = json_object_get(conf, "capture_content");
    if (v != NULL && !json_is_boolean(v)) {
        api->log(MF_LOG_ERROR, "otel: capture_content must be true or false");
        bad = 1;
    }
    if (v != NULL) {
        o->capture = json_is_true(v);
    } else {
        const char *c =
            getenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT");

        o->capture = c != NULL && strcasecmp(c, "true") == 0;
    }
    o->capture_max =
        (size_t)conf_num(conf, "capture_max_bytes", 16384, 256, 1048576, &bad);
    v = json_object_get(conf, "detail");
    if (v != NULL &&
        (!json_is_string(v) || (strcmp(json_string_value(v), "standard") != 0 &&
                                strcmp(json_string_value(v), "full") != 0))) {
        api->log(MF_LOG_ERROR, "otel: detail must be standard or full");
        bad = 1;
    }
    o->full = v != NULL && json_is_string(v) &&
              strcmp(json_string_value(v), "full") == 0;
    bad |= tls_settings(o, conf);
    url = json_string_value(json_object_get(conf, "endpoint"));
    if (url == NULL) {
        url = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if (url == NULL || url[0] == '\0') {
            const char *base = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
            size_t n;

            base = base && base[0] ? base : "http://localhost:4318";
            n = strlen(base);
            snprintf(full, sizeof(full), "%.*s/v1/traces",
                     (int)(n > 0 && base[n - 1] == '/' ? n - 1 : n), base);
            url = full;
        }
    }
    if (bad || parse_url(o, url) != MF_OK) {
        json_decref(conf);
        otel_fini(o);
        return MF_ERR;
    }
    /* headers: the config's, else the environment's */
    v = json_object_get(conf, "headers");
    if (v != NULL) {
        const char *hk;
        json_t *hv;

        if (!json_is_object(v)) {
            api->log(MF_LOG_ERROR, "otel: headers must be a map of names to "
                                   "values");
            bad = 1;
        }
        json_object_foreach(v, hk, hv)
        {
            if (!json_is_string(hv) ||
                add_header(o, hk, json_string_value(hv)) != MF_OK) {
                api->log(MF_LOG_ERROR,
                         "otel: header '%s' needs a string "
                         "value",
                         hk);
                bad = 1;
            }
        }
    } else if (env_headers(o, env2("OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                                   "OTEL_EXPORTER_OTLP_HEADERS")) != MF_OK) {
        bad = 1;
    }
    svc = json_string_value(json_object_get(conf, "service_name"));
    if (svc == NULL) {
        svc = getenv("OTEL_SERVICE_NAME");
    }
    {
        /* the resource, in both encodings: a JSON list of attributes,
         * and Resource's protobuf (its attributes are field 1) */
        enc_t e[2] = {{.pb = 0}, {.pb = 1, .attr = 1}};
        int j;

        for (j = 0; j < 2; j++) {
            attr_str(&e[j], "service.name",
                     cstr(svc != NULL && svc[0] ? svc : "manifold"));
            attr_str(&e[j], "telemetry.sdk.name", MF_STR("manifold"));
            attr_str(&e[j], "telemetry.sdk.language", MF_STR("c"));
        }
        jb_put(&e[1].out, "", 0);
        o->resource_pb = e[1].out.p;
        o->resource_pb_len = e[1].out.len;
        {
            jb_t b = {0};

            jb_put(&b, "[", 1);
            jb_put(&b, e[0].out.p, e[0].out.len);
            jb_put(&b, "]", 1);
            o->resource = b.p;
            free(e[0].out.p);
        }
    }
    json_decref(conf);
    if (o->tls) {
        o->ssl = SSL_CTX_new(TLS_client_method());
        if (o->ssl == NULL ||
            (o->ca == NULL
                 ? SSL_CTX_set_default_verify_paths(o->ssl)
                 : SSL_CTX_load_verify_locations(o->ssl, o->ca, NULL)) != 1) {
            api->log(MF_LOG_ERROR,
                     "otel: cannot set up TLS%s%s (a PEM file of CA "
                     "certificates)",
                     o->ca ? ": no certificates read from " : "",
                     o->ca ? o->ca : "");
            bad = 1;
        } else if (o->ccert != NULL && o->ckey != NULL &&
                   (SSL_CTX_use_certificate_chain_file(o->ssl, o->ccert) != 1 ||
                    SSL_CTX_use_PrivateKey_file(o->ssl, o->ckey,
                                                SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(o->ssl) != 1)) {
            api->log(MF_LOG_ERROR,
                     "otel: the client certificate %s and key %s could not "
                     "be used (PEM files, the key matching the certificate)",
                     o->ccert, o->ckey);
            bad = 1;
        } else {
            SSL_CTX_set_verify(o->ssl, SSL_VERIFY_PEER, NULL);
        }
    } else if (o->ca != NULL || o->ccert != NULL) {
        if (o->tls_conf) {
            api->log(MF_LOG_ERROR,
                     "otel: certificate, client_certificate and client_key "
                     "apply to an https endpoint; %s is not one",
                     o->url);
            bad = 1;
        } else {
            api->log(MF_LOG_WARN,
                     "otel: OTEL_EXPORTER_OTLP_*CERTIFICATE is set but the "
                     "endpoint %s is not https: not used",
                     o->url);
        }
    }
    {
        static const char *const outcome[] = {"outcome", NULL};
        mf_metric_def_t d = {.size = sizeof(d),
                             .type = MF_METRIC_COUNTER,
                             .name = "manifold_otel_spans_total",
                             .help = "Spans by what became of them: "
                                     "exported, failed (the export gave up), "
                                     "dropped (the queue was full)",
                             .labels = outcome};

        o->m_spans = api->metric_declare(&d);
        d.name = "manifold_otel_exports_total";
        d.help = "OTLP export calls: ok, retried, failed";
        o->m_exports = api->metric_declare(&d);
        if (o->m_spans == NULL || o->m_exports == NULL) {
            bad = 1;
        }
    }
    if (bad || o->resource == NULL) {
        otel_fini(o);
        return MF_ERR;
    }
    o->abi18 = api->abi_minor >= 8 &&
               api->size >= offsetof(mf_host_api_t, set_traceparent) +
                                sizeof(api->set_traceparent);
    /* without capture, on_route and on_response_headers have nothing to
     * do: this instance is not called for them */
    if (o->abi18 && !o->capture &&
        api->skip_hooks(MF_HOOK_BIT(MF_STAGE_ROUTE) |
                        MF_HOOK_BIT(MF_STAGE_RESPONSE_HEADERS)) != MF_OK) {
        otel_fini(o);
        return MF_ERR;
    }
    if (pthread_create(&o->thread, NULL, exporter_main, o) != 0) {
        api->log(MF_LOG_ERROR, "otel: cannot start the exporter thread");
        otel_fini(o);
        return MF_ERR;
    }
    o->started = 1;
    *state = o;
    return MF_OK;
}

static void
otel_fini(void *state)
{
    otel_t *o = state;
    span_t *s, *next;
    size_t k;

    if (o->started) {
        pthread_mutex_lock(&o->lock);
        o->stop = 1;
        /* an export waiting on a slow collector is cut: the spans left
         * get close_ms */
        if (o->cur_fd >= 0) {
            shutdown(o->cur_fd, SHUT_RDWR);
        }
        pthread_cond_signal(&o->wake);
        pthread_mutex_unlock(&o->lock);
        pthread_join(o->thread, NULL);
    }
    for (s = o->head; s != NULL; s = next) {
        next = s->next;
        free(s);
    }
    for (s = o->spare; s != NULL; s = next) {
        next = s->next;
        free(s);
    }
    for (k = 0; k < o->nheaders; k++) {
        free(o->headers[k]);
    }
    free(o->headers);
    if (o->ssl != NULL) {
        SSL_CTX_free(o->ssl);
    }
    free(o->resource);
    free(o->resource_pb);
    free(o->ca);
    free(o->ccert);
    free(o->ckey);
    free(o->url);
    free(o->host);
    free(o->port);
    free(o->path);
    free(o->hostport);
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->wake);
    free(o);
}

static const mf_plugin_t otel = {
    MF_PLUGIN_ABI,
    .name = "otel",
    .version = "1.0.0",
    .init = otel_init,
    .fini = otel_fini,
    .on_route = otel_on_route,
    .on_upstream_request = otel_on_upstream_request,
    .on_response_headers = otel_on_response_headers,
    .on_log = otel_on_log,
};

MF_EXPORT const mf_plugin_t *
mf_plugin_v1(void)
{
    return &otel;
}
