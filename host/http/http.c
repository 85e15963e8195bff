/*
 * HTTP/1.1 heads and chunked bodies (RFC 9112): parsing of complete heads
 * and an incremental chunked decoder. Strict where smuggling hides
 * (duplicate or conflicting lengths), lenient on bare LF line ends.
 */
#include "http/http.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

size_t
mf_http_head_end(const char *buf, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (buf[i] != '\n') {
            continue;
        }
        if (i + 1 < len && buf[i + 1] == '\n') {
            return i + 2;
        }
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
            return i + 3;
        }
    }
    return 0;
}

static int
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9')) {
        return 1;
    }
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Reads one line [*pos, eol) without its line end; advances *pos. */
static int
next_line(const char *buf, size_t len, size_t *pos, mf_str_t *line)
{
    size_t start = *pos, i;

    for (i = start; i < len; i++) {
        if (buf[i] == '\n') {
            size_t end = i;

            if (end > start && buf[end - 1] == '\r') {
                end--;
            }
            line->data = buf + start;
            line->len = end - start;
            *pos = i + 1;
            return MF_OK;
        }
    }
    return MF_ERR;
}

static int
parse_uint(mf_str_t s, int64_t *out)
{
    int64_t v = 0;
    size_t i;

    if (s.len == 0 || s.len > 18) {
        return MF_ERR;
    }
    for (i = 0; i < s.len; i++) {
        if (s.data[i] < '0' || s.data[i] > '9') {
            return MF_ERR;
        }
        v = v * 10 + (s.data[i] - '0');
    }
    *out = v;
    return MF_OK;
}

static mf_str_t
trim(mf_str_t s)
{
    while (s.len > 0 && (s.data[0] == ' ' || s.data[0] == '\t')) {
        s.data++;
        s.len--;
    }
    while (s.len > 0 &&
           (s.data[s.len - 1] == ' ' || s.data[s.len - 1] == '\t')) {
        s.len--;
    }
    return s;
}

/* Does a comma-separated header value hold token (case-insensitive)? */
static int
has_token(mf_str_t value, const char *token)
{
    size_t tl = strlen(token), i = 0;

    while (i < value.len) {
        size_t j = i;
        mf_str_t item;

        while (j < value.len && value.data[j] != ',') {
            j++;
        }
        item.data = value.data + i;
        item.len = j - i;
        item = trim(item);
        if (item.len == tl && strncasecmp(item.data, token, tl) == 0) {
            return 1;
        }
        i = j + 1;
    }
    return 0;
}

/*
 * The transfer codings of a request, read from one Transfer-Encoding
 * value (several header lines are read in turn). The only framing served
 * is a single final "chunked": a coding after chunked is a malformed
 * message (400), any other coding is one the gateway does not implement
 * (501). *te_state gathers bits: 1 once chunked is read, 2 once
 * another coding is.
 */
static int
request_te(mf_str_t value, int *te_state, mf_http_head_t *h, const char **err)
{
    size_t i = 0;

    while (i <= value.len) {
        size_t j = i;
        mf_str_t item;

        while (j < value.len && value.data[j] != ',') {
            j++;
        }
        item = trim((mf_str_t){value.data + i, j - i});
        i = j + 1;
        if (item.len == 0) {
            continue; /* empty list elements are allowed (RFC 9110 5.6.1) */
        }
        if (*te_state & 1) {
            *err = "a transfer coding follows chunked in Transfer-Encoding";
            h->err_status = 400;
            return MF_ERR;
        }
        *te_state |= mf_str_caseeq(item, MF_STR("chunked")) ? 1 : 2;
    }
    return MF_OK;
}

/* Framing checks once every header line is read (RFC 9112 6.1, 6.3). */
static int
check_framing(mf_http_head_t *h, int have_cl, int have_te, int te_state,
              const char **err)
{
    if (!have_te) {
        return MF_OK;
    }
    if (h->status != 0) {
        /* a response: chunked wins over a length, and the connection is
         * not reused after a message framed two ways */
        if (have_cl) {
            h->content_length = -1;
            h->keep_alive = 0;
        }
        return MF_OK;
    }
    h->err_status = 400;
    if (have_cl) {
        *err = "both Content-Length and Transfer-Encoding are present";
        return MF_ERR;
    }
    if (h->minor == 0) {
        *err = "Transfer-Encoding is not defined in HTTP/1.0";
        return MF_ERR;
    }
    if (te_state == 0) {
        *err = "empty Transfer-Encoding";
        return MF_ERR;
    }
    if (te_state & 2) {
        *err = "unsupported Transfer-Encoding; only chunked is served";
        h->err_status = 501;
        return MF_ERR;
    }
    h->chunked = 1;
    return MF_OK;
}

static int
parse_headers(const char *buf, size_t len, size_t pos, mf_http_head_t *h,
              const char **err)
{
    mf_str_t line;
    int have_cl = 0, have_te = 0, te_state = 0, conn_close = 0, conn_keep = 0;

    h->nheaders = 0;
    h->content_length = -1;
    h->chunked = 0;
    h->expect_continue = 0;
    h->err_status = 400;
    while (next_line(buf, len, &pos, &line) == MF_OK) {
        mf_header_t *hd;
        size_t colon;

        if (line.len == 0) {
            h->keep_alive = h->minor >= 1 ? !conn_close : conn_keep;
            return check_framing(h, have_cl, have_te, te_state, err);
        }
        if (line.data[0] == ' ' || line.data[0] == '\t') {
            *err = "obsolete header line folding is not accepted";
            return MF_ERR;
        }
        for (colon = 0; colon < line.len && line.data[colon] != ':'; colon++) {
            if (!is_tchar((unsigned char)line.data[colon])) {
                *err = "invalid character in a header name";
                return MF_ERR;
            }
        }
        if (colon == 0 || colon == line.len) {
            *err = "malformed header line";
            return MF_ERR;
        }
        if (h->nheaders == MF_HTTP_MAX_HEADERS) {
            *err = "too many headers";
            return MF_ERR;
        }
        hd = &h->headers[h->nheaders++];
        hd->name.data = line.data;
        hd->name.len = colon;
        hd->value.data = line.data + colon + 1;
        hd->value.len = line.len - colon - 1;
        hd->value = trim(hd->value);

        if (mf_str_caseeq(hd->name, MF_STR("content-length"))) {
            int64_t v;

            if (parse_uint(hd->value, &v) != MF_OK) {
                *err = "invalid Content-Length";
                return MF_ERR;
            }
            if (have_cl && v != h->content_length) {
                *err = "conflicting Content-Length headers";
                return MF_ERR;
            }
            have_cl = 1;
            h->content_length = v;
        } else if (mf_str_caseeq(hd->name, MF_STR("transfer-encoding"))) {
            have_te = 1;
            if (h->status == 0) {
                if (request_te(hd->value, &te_state, h, err) != MF_OK) {
                    return MF_ERR;
                }
            } else if (!has_token(hd->value, "chunked")) {
                *err = "unsupported Transfer-Encoding";
                return MF_ERR;
            } else {
                h->chunked = 1;
            }
        } else if (mf_str_caseeq(hd->name, MF_STR("connection"))) {
            conn_close |= has_token(hd->value, "close");
            conn_keep |= has_token(hd->value, "keep-alive");
        } else if (mf_str_caseeq(hd->name, MF_STR("expect"))) {
            h->expect_continue = has_token(hd->value, "100-continue");
        }
    }
    *err = "incomplete header block";
    return MF_ERR;
}

static int
parse_version(mf_str_t v, int *minor)
{
    if (v.len != 8 || memcmp(v.data, "HTTP/1.", 7) != 0 ||
        (v.data[7] != '0' && v.data[7] != '1')) {
        return MF_ERR;
    }
    *minor = v.data[7] - '0';
    return MF_OK;
}

int
mf_http_parse_request_head(const char *buf, size_t len, mf_http_head_t *h,
                           const char **err)
{
    size_t pos = 0, i, sp1, sp2;
    mf_str_t line, version;

    h->err_status = 400;
    h->status = 0;
    /* tolerate empty lines before the request line (RFC 9112 2.2) */
    while (pos < len && (buf[pos] == '\r' || buf[pos] == '\n')) {
        pos++;
    }
    if (next_line(buf, len, &pos, &line) != MF_OK) {
        *err = "incomplete request line";
        return MF_ERR;
    }
    for (sp1 = 0; sp1 < line.len && line.data[sp1] != ' '; sp1++) {
        if (!is_tchar((unsigned char)line.data[sp1])) {
            *err = "invalid request method";
            return MF_ERR;
        }
    }
    for (sp2 = sp1 + 1; sp2 < line.len && line.data[sp2] != ' '; sp2++) {
        unsigned char c = (unsigned char)line.data[sp2];

        if (c <= 0x20 || c == 0x7f) {
            *err = "invalid character in the request target";
            return MF_ERR;
        }
    }
    if (sp1 == 0 || sp1 >= line.len || sp2 >= line.len || sp2 == sp1 + 1) {
        *err = "malformed request line";
        return MF_ERR;
    }
    h->method.data = line.data;
    h->method.len = sp1;
    h->target.data = line.data + sp1 + 1;
    h->target.len = sp2 - sp1 - 1;
    h->path = h->target;
    for (i = 0; i < h->target.len; i++) {
        if (h->target.data[i] == '?') {
            h->path.len = i;
            break;
        }
    }
    version.data = line.data + sp2 + 1;
    version.len = line.len - sp2 - 1;
    if (parse_version(version, &h->minor) != MF_OK) {
        *err = "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 are served)";
        return MF_ERR;
    }
    h->status = 0;
    return parse_headers(buf, len, pos, h, err);
}

int
mf_http_parse_response_head(const char *buf, size_t len, mf_http_head_t *h,
                            const char **err)
{
    size_t pos = 0;
    mf_str_t line, version;
    int64_t status;

    if (next_line(buf, len, &pos, &line) != MF_OK || line.len < 12) {
        *err = "malformed status line";
        return MF_ERR;
    }
    version.data = line.data;
    version.len = 8;
    if (parse_version(version, &h->minor) != MF_OK || line.data[8] != ' ') {
        *err = "unsupported HTTP version in status line";
        return MF_ERR;
    }
    line.data += 9;
    line.len -= 9;
    if (line.len < 3 || (line.len > 3 && line.data[3] != ' ')) {
        *err = "malformed status code";
        return MF_ERR;
    }
    line.len = 3;
    if (parse_uint(line, &status) != MF_OK || status < 100) {
        *err = "malformed status code";
        return MF_ERR;
    }
    h->status = (int)status;
    h->method = MF_STR_NULL;
    h->target = MF_STR_NULL;
    h->path = MF_STR_NULL;
    return parse_headers(buf, len, pos, h, err);
}

int
mf_http_find_header(const mf_http_head_t *h, const char *name, mf_str_t *value)
{
    mf_str_t n = mf_str_from(name);
    size_t i;

    for (i = 0; i < h->nheaders; i++) {
        if (mf_str_caseeq(h->headers[i].name, n)) {
            *value = h->headers[i].value;
            return MF_OK;
        }
    }
    return MF_ERR;
}

enum {
    CH_SIZE = 0,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LF,
    CH_DONE
};

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

ssize_t
mf_http_chunked_feed(mf_http_chunked_t *c, const char *in, size_t len,
                     mf_http_data_cb cb, void *arg)
{
    size_t i = 0;

    while (i < len && c->state != CH_DONE) {
        char ch = in[i];

        switch (c->state) {
        case CH_SIZE: {
            int v = hexval(ch);

            if (v >= 0) {
                if (c->line_len >= 15) {
                    return -1; /* chunk size over 2^60 */
                }
                c->remaining = c->remaining * 16 + (uint64_t)v;
                c->line_len++;
            } else if (c->line_len == 0) {
                return -1;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = CH_EXT;
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else if (ch == '\n') {
                c->state = c->remaining ? CH_DATA : CH_TRAILER;
                c->line_len = 0;
            } else {
                return -1;
            }
            i++;
            break;
        }
        case CH_EXT:
            if (ch == '\n') {
                c->state = c->remaining ? CH_DATA : CH_TRAILER;
                c->line_len = 0;
            } else if (++c->line_len > 4096) {
                return -1;
            }
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n') {
                return -1;
            }
            c->state = c->remaining ? CH_DATA : CH_TRAILER;
            c->line_len = 0;
            i++;
            break;
        case CH_DATA: {
            size_t n = len - i;

            if (n > c->remaining) {
                n = (size_t)c->remaining;
            }
            if (cb(arg, in + i, n) != MF_OK) {
                return -1;
            }
            c->remaining -= n;
            i += n;
            if (c->remaining == 0) {
                c->state = CH_DATA_CR;
            }
            break;
        }
        case CH_DATA_CR:
            if (ch == '\r') {
                c->state = CH_DATA_LF;
            } else if (ch == '\n') {
                c->state = CH_SIZE;
            } else {
                return -1;
            }
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n') {
                return -1;
            }
            c->state = CH_SIZE;
            i++;
            break;
        case CH_TRAILER:
            /* a trailer line, or the empty line that ends the body; the
             * whole trailer section is bounded, not only each line */
            if (ch == '\n') {
                if (c->line_len == 0) {
                    c->state = CH_DONE;
                    c->done = 1;
                }
                c->line_len = 0;
            } else if (ch != '\r' || c->line_len > 0) {
                c->line_len++;
                if (++c->trailer_len > MF_HTTP_MAX_TRAILER) {
                    c->trailer_too_large = 1;
                    return -1;
                }
            }
            i++;
            break;
        default:
            return -1;
        }
    }
    return (ssize_t)i;
}

const char *
mf_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 400 ? "OK" : "Error";
    }
}

/* RFC 9110 tchar: visible ASCII but the separators
 * "(),/:;<=>?@[\]{} (one lookup per byte of a header name). */
static const unsigned char token_char[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

int
mf_http_header_ok(mf_str_t name, mf_str_t value)
{
    size_t i;

    if (name.len == 0) {
        return 0;
    }
    for (i = 0; i < name.len; i++) {
        if (!token_char[(unsigned char)name.data[i]]) {
            return 0;
        }
    }
    /* a value cannot split the head: no CR, LF or NUL. Eight bytes at a
     * time first: none below 0x0e in them (the classic "has a byte less
     * than n" test, exact for n <= 128) passes them with a few
     * instructions; a word that has one is looked at byte by byte. */
    for (i = 0; i + 8 <= value.len; i += 8) {
        uint64_t w;

        memcpy(&w, value.data + i, 8);
        if (((w - 0x0e0e0e0e0e0e0e0eull) & ~w & 0x8080808080808080ull) != 0) {
            break;
        }
    }
    for (; i < value.len; i++) {
        unsigned char c = (unsigned char)value.data[i];

        if (c <= '\r' && (c == '\r' || c == '\n' || c == '\0')) {
            return 0;
        }
    }
    return 1;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* n digits at s as a number; -1 when one is not a digit. */
static int
digits(const char *s, size_t n)
{
    int v = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" as unix seconds; MF_ERR otherwise. */
static int
imf_fixdate(const char *s, size_t n, double *t)
{
    static const char days[] = "MonTueWedThuFriSatSun";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int d, y, h, mi, se, m;

    if (n != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
        s[16] != ' ' || s[19] != ':' || s[22] != ':' ||
        memcmp(s + 25, " GMT", 4) != 0) {
        return MF_ERR;
    }
    for (m = 0; m < 7 && memcmp(days + 3 * m, s, 3) != 0; m++) {
    }
    if (m == 7) {
        return MF_ERR;
    }
    for (m = 0; m < 12 && memcmp(months + 3 * m, s + 8, 3) != 0; m++) {
    }
    d = digits(s + 5, 2);
    y = digits(s + 12, 4);
    h = digits(s + 17, 2);
    mi = digits(s + 20, 2);
    se = digits(s + 23, 2);
    if (m == 12 || d < 1 || d > 31 || y < 0 || h < 0 || h > 23 || mi < 0 ||
        mi > 59 || se < 0 || se > 60) {
        return MF_ERR;
    }
    *t = (double)days_from_civil(y, m + 1, d) * 86400.0 + h * 3600.0 +
         mi * 60.0 + se;
    return MF_OK;
}

int
mf_http_retry_after(mf_str_t v, double now, double max_secs, double *secs)
{
    const char *s = v.data;
    size_t n = v.len, i = 0;
    double val = 0, scale = 1;

    while (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        n--;
    }
    if (n == 0) {
        return MF_ERR;
    }
    if (s[0] >= '0' && s[0] <= '9') {
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (val <= max_secs) { /* past the cap the value stops mattering */
                val = val * 10 + (s[i] - '0');
            }
        }
        if (i < n && s[i] == '.') {
            for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
                scale /= 10;
                val += (s[i] - '0') * scale;
            }
        }
        if (i != n) {
            return MF_ERR;
        }
    } else {
        double t;

        if (imf_fixdate(s, n, &t) != MF_OK) {
            return MF_ERR;
        }
        val = t > now ? t - now : 0;
    }
    *secs = val < max_secs ? val : max_secs;
    return MF_OK;
}

/* Header lists */

int
mf_hlist_get(const mf_hlist_t *h, mf_str_t name, mf_str_t *value)
{
    size_t i;

    for (i = 0; i < h->n; i++) {
        if (mf_str_caseeq(h->v[i].name, name)) {
            *value = h->v[i].value;
            return MF_OK;
        }
    }
    return MF_ERR;
}

/* name and value set in h, copied into pool when copy (inlined in
 * both callers: copy is then known when compiled) */
static inline __attribute__((always_inline)) int
hlist_put(mf_pool_t *pool, mf_hlist_t *h, mf_str_t name, mf_str_t value,
          int copy)
{
    size_t i;

    for (i = 0; i < h->n; i++) {
        if (mf_str_caseeq(h->v[i].name, name)) {
            if (value.len == 0) {
                h->v[i] = h->v[--h->n];
                return MF_OK;
            }
            h->v[i].value = copy ? mf_pool_str(pool, value) : value;
            return MF_OK;
        }
    }
    if (value.len == 0) {
        return MF_OK;
    }
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        mf_header_t *v = mf_pool_alloc(pool, cap * sizeof(*v));

        if (v == NULL) {
            return MF_ERR;
        }
        if (h->n) {
            memcpy(v, h->v, h->n * sizeof(*v));
        }
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n].name = copy ? mf_pool_str(pool, name) : name;
    h->v[h->n].value = copy ? mf_pool_str(pool, value) : value;
    h->n++;
    return MF_OK;
}

int
mf_hlist_set(mf_pool_t *pool, mf_hlist_t *h, mf_str_t name, mf_str_t value)
{
    if (!mf_http_header_ok(name, value)) {
        return MF_ERR;
    }
    return hlist_put(pool, h, name, value, 1);
}

int
mf_hlist_set_made(mf_pool_t *pool, mf_hlist_t *h, mf_str_t name, mf_str_t value)
{
    return hlist_put(pool, h, name, value, 0);
}

const char *
mf_http_date(void)
{
    static __thread char buf[32];
    static __thread time_t cached = -1;
    time_t now = time(NULL);
    struct tm tm;

    if (now != cached && gmtime_r(&now, &tm) != NULL) {
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    return buf;
}
