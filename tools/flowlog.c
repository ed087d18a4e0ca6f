/* flowlog: the command-line client of flowlogd (CONTRACT.md section 6), one small function per
 * command over libflowlog. JSON in (events on stdin), JSON or aligned tables out. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flowlog.h"
#include "json.h"
#include "util.h"

/* Exit codes (also in `flowlog --help`). */
enum {
    EX_OK = 0,      /* done */
    EX_SERVER = 1,  /* the server refused a request (or verify found problems) */
    EX_USAGE = 2,   /* bad command line or bad input; nothing, or not everything, was sent */
    EX_CONNECT = 3, /* could not connect, authenticate, or the connection broke */
};

#define DEFAULT_SERVER "127.0.0.1:7464"
#define APPEND_WINDOW 256 /* appends in flight on one connection without --batch */
#define CELL_MAX 48       /* widest table cell for people; longer ones end in "..." */

struct ctx {
    const char *server, *token, *tenant, *data;
    int json;
    char *token_buf; /* a token read from DIR/admin.token */
    flc_client *c;
};

struct cmd {
    const char *name;
    int (*run)(struct ctx *x, int argc, char **argv);
    const char *usage;
    const char *help;
};

static const struct cmd *find_cmd(const char *name);

/* ---- errors and output ---- */

/* Print one compact JSON line to stdout and flush it (streams are read as they come). */
static void put_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    } else {
        fputs("{\"error\":{\"code\":\"nomem\",\"message\":\"out of memory\",\"index\":null}}\n",
              stdout);
    }
    fflush(stdout);
}

/* The error object of CONTRACT.md section 6 (plus "version" with conflicts). */
static json_t *error_json(const char *code, const char *msg, int64_t index, int64_t version)
{
    json_t *e = json_pack("{s:s,s:s,s:o,s:o}", "code", code, "message", msg, "index",
                          index >= 0 ? json_integer(index) : json_null(), "version",
                          version >= 0 ? json_integer(version) : json_null());
    return json_pack("{s:o}", "error", e);
}

/* Report a failure (JSON on stdout with --json, else a line on stderr); returns exit. */
static int report(struct ctx *x, int exit_code, const char *code, const char *msg, int64_t index,
                  int64_t version)
{
    if (x->json) {
        json_t *j = error_json(code, msg, index, version);
        put_json(j);
        json_decref(j);
    } else {
        fprintf(stderr, "flowlog: %s: %s", code, msg);
        if (index >= 0)
            fprintf(stderr, " (event %" PRId64 ")", index);
        if (version >= 0)
            fprintf(stderr, " (the flow is at version %" PRId64 ")", version);
        fputc('\n', stderr);
    }
    return exit_code;
}

/* A usage or input error found here; returns EX_USAGE. */
__attribute__((format(printf, 2, 3))) static int usage_err(struct ctx *x, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return report(x, EX_USAGE, "usage", msg, -1, -1);
}

/* The exit code for a library error code. */
static int exit_for(int code)
{
    switch (code) {
    case FLC_ECONNECTION:
    case FLC_EPROTOCOL:
    case FLC_ETIMEOUT:
    case FLC_EUNAUTHENTICATED:
        return EX_CONNECT;
    case FLC_EUSAGE:
        return EX_USAGE;
    default:
        return EX_SERVER;
    }
}

/* Report the handle's error; returns the matching exit code. */
static int client_err(struct ctx *x)
{
    return report(x, exit_for(flc_errcode(x->c)), flc_errname(x->c), flc_errmsg(x->c),
                  flc_errindex(x->c), flc_errversion(x->c));
}

/* Convert a result to JSON, reporting a failure as a protocol error. */
static json_t *to_json(struct ctx *x, const msgpack_object *o, enum fjson_time tf)
{
    char err[FJSON_ERR_MAX];
    json_t *j = fjson_from_msgpack(o, tf, err);

    if (!j)
        report(x, EX_CONNECT, "protocol", err, -1, -1);
    return j;
}

/* ---- tables for people ---- */

/* A JSON value as a table cell: strings bare, null as "-", the rest as compact JSON. */
static char *cell_text(const json_t *v)
{
    if (!v || json_is_null(v))
        return strdup("-");
    if (json_is_string(v)) {
        char *t = strndup(json_string_value(v), json_string_length(v));
        for (char *p = t; p && *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' '; /* a newline would break the table's rows */
        return t;
    }
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Display width of a UTF-8 string (code points; good enough for a terminal table). */
static size_t text_width(const char *s)
{
    size_t w = 0;

    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/* Print s padded to width; cells wider than CELL_MAX are cut with a visible "...". */
static void put_cell(const char *s, size_t width, int last)
{
    size_t w = text_width(s);

    if (w > CELL_MAX) {
        const char *p = s;
        for (size_t k = 0; *p && k < CELL_MAX - 3; k++)
            for (p++; ((unsigned char)*p & 0xC0) == 0x80; p++)
                ;
        fwrite(s, 1, (size_t)(p - s), stdout);
        fputs("...", stdout);
        w = CELL_MAX;
    } else {
        fputs(s, stdout);
    }
    if (!last)
        for (size_t i = w; i < width + 2; i++)
            fputc(' ', stdout);
}

/* Width of a column for people: its header and its cells, at most CELL_MAX. */
static size_t col_width(const char *name, json_t *rows, const char *key)
{
    size_t w = strlen(name), i;
    json_t *row;

    json_array_foreach(rows, i, row) {
        char *t = cell_text(json_object_get(row, key));
        size_t tw = t ? text_width(t) : 0;
        if (tw > w)
            w = tw;
        free(t);
    }
    return w > CELL_MAX ? CELL_MAX : w;
}

/* Print rows (JSON objects) as an aligned table of the given columns (NULL: the first row's). */
static void put_table(json_t *rows, const char *const *cols, size_t ncols, const char *indent)
{
    const char *keys[64];
    size_t widths[64], n = 0, i;
    json_t *row;

    if (json_array_size(rows) == 0) {
        printf("%s(no rows)\n", indent);
        return;
    }
    if (cols) {
        for (; n < ncols && n < 64; n++)
            keys[n] = cols[n];
    } else {
        const char *k;
        json_t *v;
        json_object_foreach(json_array_get(rows, 0), k, v) {
            if (n < 64)
                keys[n++] = k;
        }
    }
    fputs(indent, stdout);
    for (i = 0; i < n; i++) {
        widths[i] = col_width(keys[i], rows, keys[i]);
        put_cell(keys[i], widths[i], i + 1 == n);
    }
    fputc('\n', stdout);
    json_array_foreach(rows, i, row) {
        fputs(indent, stdout);
        for (size_t c = 0; c < n; c++) {
            char *t = cell_text(json_object_get(row, keys[c]));
            put_cell(t ? t : "?", widths[c], c + 1 == n);
            free(t);
        }
        fputc('\n', stdout);
    }
}

/* Print an object as "key: value" lines, keys aligned. */
static void put_fields(json_t *obj, const char *indent)
{
    const char *k;
    json_t *v;
    size_t w = 0;

    json_object_foreach(obj, k, v) {
        if (strlen(k) > w)
            w = strlen(k);
    }
    json_object_foreach(obj, k, v) {
        char *t = cell_text(v);
        printf("%s%-*s  %s\n", indent, (int)w, k, t ? t : "?");
        free(t);
    }
}

/* ---- connecting ---- */

/* The first word of the first non-comment line of DIR/admin.token. */
static int read_token_file(struct ctx *x)
{
    char path[4096], line[1024];
    FILE *f;

    if ((size_t)snprintf(path, sizeof path, "%s/admin.token", x->data) >= sizeof path)
        return usage_err(x, "--data path too long");
    if (!(f = fopen(path, "r"))) {
        char msg[4200];
        snprintf(msg, sizeof msg, "cannot read the token file %s: %s", path, strerror(errno));
        return report(x, EX_CONNECT, "unauthenticated", msg, -1, -1);
    }
    while (fgets(line, sizeof line, f)) {
        char *w = line + strspn(line, " \t\r\n");
        size_t n = strcspn(w, " \t\r\n");
        if (n == 0 || w[0] == '#')
            continue;
        w[n] = '\0';
        x->token_buf = strdup(w);
        break;
    }
    fclose(f);
    if (!x->token_buf)
        return usage_err(x, "no token in %s", path);
    x->token = x->token_buf;
    return EX_OK;
}

/* Connect and say hello; returns an exit code (EX_OK when connected). */
static int connect_ctx(struct ctx *x)
{
    int rc;

    if (!x->server)
        x->server = getenv("FLOWLOG_SERVER");
    if (!x->server || !*x->server)
        x->server = DEFAULT_SERVER;
    if (!x->token)
        x->token = getenv("FLOWLOG_TOKEN");
    if ((!x->token || !*x->token) && x->data) {
        x->token = NULL;
        if ((rc = read_token_file(x)) != EX_OK)
            return rc;
    }
    if (!x->token || !*x->token)
        return usage_err(x, "no token: use --token, FLOWLOG_TOKEN or --data DIR");
    if (!(x->c = flc_connect(x->server, x->token, x->tenant)))
        return report(x, EX_CONNECT, "nomem", "out of memory", -1, -1);
    if (flc_errcode(x->c) != 0)
        return client_err(x);
    return EX_OK;
}

/* ---- options ---- */

enum {
    OPT_SERVER = 256, OPT_TOKEN, OPT_TENANT, OPT_DATA, OPT_JSON, OPT_HELP,
    OPT_BATCH, OPT_FROM, OPT_LIMIT, OPT_TYPE, OPT_FLOW, OPT_RUN, OPT_FOLLOW,
    OPT_ASOF_SEQ, OPT_ASOF_TIME, OPT_WHERE, OPT_TO_SEQ, OPT_REASON, OPT_EVENT_ID,
};

static const struct option global_opts[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"tenant", required_argument, NULL, OPT_TENANT},
    {"data", required_argument, NULL, OPT_DATA},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
};
#define NGLOBAL (sizeof global_opts / sizeof global_opts[0])

/* Apply a global option; 1 if ch was one, 0 if not. */
static int global_opt(struct ctx *x, int ch, const char *arg)
{
    switch (ch) {
    case OPT_SERVER: x->server = arg; return 1;
    case OPT_TOKEN: x->token = arg; return 1;
    case OPT_TENANT: x->tenant = arg; return 1;
    case OPT_DATA: x->data = arg; return 1;
    case OPT_JSON: x->json = 1; return 1;
    default: return 0;
    }
}

/* A command's options followed by the global ones (globals may come after the command). */
static struct option *merge_opts(const struct option *own, size_t n, struct option *out)
{
    if (n)
        memcpy(out, own, n * sizeof *own);
    memcpy(out + n, global_opts, sizeof global_opts);
    memset(out + n + NGLOBAL, 0, sizeof *out);
    return out;
}

/* Parse a decimal unsigned integer, all of s. */
static int parse_u64(const char *s, uint64_t *out)
{
    char *end;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* Print one command's help. */
static int cmd_help_text(const struct cmd *cm)
{
    printf("usage: flowlog [GLOBAL OPTIONS] %s\n\n%s\n", cm->usage, cm->help);
    printf("\nGlobal options (before or after the command): --server ADDR, --token T, "
           "--tenant T, --data DIR, --json.\n");
    return EX_OK;
}

/* getopt over a command's options (own and global, anywhere on the line); calls own_opt for
 * the command's own. Returns EX_OK, a usage error, or -1 after printing help (exit 0). The
 * positional arguments end up in argv[1..*nargs], in order. */
static int parse_cmd(struct ctx *x, const struct cmd *cm, int argc, char **argv,
                     const struct option *own, size_t nown,
                     int (*own_opt)(void *st, int ch, const char *arg), void *st, int *nargs)
{
    struct option all[32];
    int ch, npos = 1;

    merge_opts(own, nown, all);
    optind = 0; /* GNU getopt: re-initialise for a new argv; options may follow arguments */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "-", all, NULL)) != -1) {
        if (ch == 1) {
            argv[npos++] = (char *)optarg; /* a positional argument, kept in order */
            continue;
        }
        if (ch == OPT_HELP) {
            cmd_help_text(cm);
            return -1;
        }
        if (ch == '?' || ch == ':')
            return usage_err(x, "%s: bad option '%s' (see flowlog %s --help)", cm->name,
                             argv[optind - 1], cm->name);
        if (global_opt(x, ch, optarg))
            continue;
        if (own_opt(st, ch, optarg) != 0)
            return usage_err(x, "%s: bad value '%s' for %s", cm->name, optarg ? optarg : "",
                             argv[optind - 1]);
    }
    for (int i = optind; i < argc; i++) /* after "--" */
        argv[npos++] = argv[i];
    argv[npos] = NULL;
    *nargs = npos - 1;
    return EX_OK;
}

/* Options that commands without options of their own accept. */
static int no_opt(void *st, int ch, const char *arg)
{
    return -1;
}

/* ---- events ---- */

/* A JSON event read back (log, timeline, pushes) in the contract's key order. */
static json_t *event_json(struct ctx *x, const msgpack_object *ev, enum fjson_time tf)
{
    static const char *const keys[] = {"seq", "ts", "type", "event_id", "data"};
    json_t *out = json_object();

    for (size_t i = 0; out && i < 5; i++) {
        const msgpack_object *v = flc_get(ev, keys[i]);
        json_t *j = v ? to_json(x, v, tf) : json_null();
        if (!j || json_object_set_new(out, keys[i], j) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* One event as a line for people: seq, time, type, subject, event id, data. */
static void put_event_human(json_t *ev)
{
    json_t *data = json_object_get(ev, "data");
    const char *subject = json_string_value(json_object_get(data, "run_id"));
    char *d = json_dumps(data, JSON_COMPACT);

    if (!subject)
        subject = json_string_value(json_object_get(data, "flow_id"));
    printf("%8" JSON_INTEGER_FORMAT "  %s  %-17s %-28s %s\n",
           json_integer_value(json_object_get(ev, "seq")),
           json_string_value(json_object_get(ev, "ts")) ? json_string_value(json_object_get(ev, "ts")) : "-",
           json_string_value(json_object_get(ev, "type")) ? json_string_value(json_object_get(ev, "type")) : "?",
           subject ? subject : "-", d ? d : "{}");
    free(d);
}

/* Print the events array of a page or a push; counts them in *n, stops at limit (0: none). */
static int put_events(struct ctx *x, const msgpack_object *page, uint64_t *n, uint64_t limit)
{
    const msgpack_object *evs = flc_get(page, "events");

    if (!evs || evs->type != MSGPACK_OBJECT_ARRAY)
        return report(x, EX_CONNECT, "protocol", "a page without \"events\"", -1, -1);
    for (uint32_t i = 0; i < evs->via.array.size && (!limit || *n < limit); i++) {
        json_t *j = event_json(x, &evs->via.array.ptr[i],
                               x->json ? FJSON_TIME_RFC3339 : FJSON_TIME_HUMAN);
        if (!j)
            return EX_CONNECT;
        if (x->json)
            put_json(j);
        else
            put_event_human(j);
        json_decref(j);
        (*n)++;
    }
    fflush(stdout);
    return EX_OK;
}

/* An unsigned field of a result, or fail. */
static int get_u64(const msgpack_object *m, const char *key, uint64_t *v)
{
    const msgpack_object *o = flc_get(m, key);

    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *v = o->via.u64;
    return 0;
}

/* Read pages of log or timeline until the head (or limit) is reached. */
static int page_events(struct ctx *x, struct flc_query *q, int timeline)
{
    uint64_t n = 0, limit = q->limit, next, head;
    int rc;

    for (;;) {
        q->limit = limit ? limit - n : 0;
        const msgpack_object *page = timeline ? flc_timeline(x->c, q) : flc_log(x->c, q);
        if (!page)
            return client_err(x);
        if ((rc = put_events(x, page, &n, limit)) != EX_OK)
            return rc;
        if (get_u64(page, "next", &next) || get_u64(page, "head", &head))
            return report(x, EX_CONNECT, "protocol", "a page without next/head", -1, -1);
        if (next > head || (limit && n >= limit))
            return EX_OK;
        if (next <= q->from)
            return report(x, EX_CONNECT, "protocol", "the server's page did not advance", -1, -1);
        q->from = next;
    }
}

/* ---- append ---- */

/* A line reader over fd 0 that never blocks when a complete line is already buffered. */
struct lines {
    char *buf;
    size_t len, cap, start;
    int eof;
    uint64_t lineno; /* lines returned so far */
};

/* Read more of stdin (blocking). 0, or -1 on a read error. */
static int lines_fill(struct lines *l)
{
    if (l->start > 0) {
        memmove(l->buf, l->buf + l->start, l->len - l->start);
        l->len -= l->start;
        l->start = 0;
    }
    if (l->cap - l->len < 65536) {
        size_t cap = l->cap ? l->cap * 2 : 131072;
        char *p = realloc(l->buf, cap);
        if (!p)
            return -1;
        l->buf = p;
        l->cap = cap;
    }
    ssize_t n;
    do
        n = read(0, l->buf + l->len, l->cap - l->len - 1); /* room for lines_next's NUL */
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    if (n == 0)
        l->eof = 1;
    l->len += (size_t)n;
    return 0;
}

/* True if lines_next would return a line now. */
static int lines_ready(const struct lines *l)
{
    if (!l->buf)
        return 0;
    return memchr(l->buf + l->start, '\n', l->len - l->start) != NULL ||
           (l->eof && l->len > l->start);
}

/* The next complete line (or the unterminated last one at EOF): 1, or 0 if none yet. */
static int lines_next(struct lines *l, char **line, size_t *len)
{
    char *s, *nl;

    if (!l->buf || !lines_ready(l))
        return 0;
    s = l->buf + l->start;
    nl = memchr(s, '\n', l->len - l->start);
    *line = s;
    *len = nl ? (size_t)(nl - s) : l->len - l->start;
    l->start += *len + (nl != NULL);
    (*line)[*len] = '\0'; /* over the '\n', or within cap (fill keeps room) */
    l->lineno++;
    return 1;
}

/* True if a line holds only white space. */
static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* Pack one JSON line as an event into sb (cleared first). 0, or -1 with a message. */
static int pack_line(const char *line, size_t len, msgpack_sbuffer *sb, char *err, size_t errsz)
{
    json_error_t je;
    msgpack_packer pk;
    char e[FJSON_ERR_MAX];
    json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    int rc = 0;

    if (!j) {
        snprintf(err, errsz, "invalid JSON: %s (column %d)", je.text, je.column);
        return -1;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errsz, "an event must be a JSON object");
        return -1;
    }
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (fjson_to_msgpack(j, &pk, e) != 0) {
        snprintf(err, errsz, "%s", e);
        rc = -1;
    }
    json_decref(j);
    return rc;
}

/* One acknowledgement {"seq","ts","duplicate"} as a line. */
static int put_ack(struct ctx *x, const msgpack_object *ack)
{
    json_t *j = to_json(x, ack, x->json ? FJSON_TIME_RFC3339 : FJSON_TIME_HUMAN);

    if (!j)
        return EX_CONNECT;
    if (x->json) {
        json_t *o = json_pack("{s:O,s:O,s:O}", "seq", json_object_get(j, "seq"), "ts",
                              json_object_get(j, "ts"), "duplicate",
                              json_object_get(j, "duplicate"));
        put_json(o ? o : j);
        json_decref(o);
    } else {
        printf("seq %" JSON_INTEGER_FORMAT "  %s%s\n",
               json_integer_value(json_object_get(j, "seq")),
               json_string_value(json_object_get(j, "ts")) ? json_string_value(json_object_get(j, "ts")) : "",
               json_is_true(json_object_get(j, "duplicate")) ? "  (duplicate: already appended)"
                                                               : "");
        fflush(stdout);
    }
    json_decref(j);
    return EX_OK;
}

/* Print every acknowledgement of an append result. */
static int put_acks(struct ctx *x, const msgpack_object *res)
{
    const msgpack_object *r = flc_get(res, "results");
    int rc;

    if (!r || r->type != MSGPACK_OBJECT_ARRAY)
        return report(x, EX_CONNECT, "protocol", "an append result without \"results\"", -1,
                      -1);
    for (uint32_t i = 0; i < r->via.array.size; i++)
        if ((rc = put_ack(x, &r->via.array.ptr[i])) != EX_OK)
            return rc;
    return EX_OK;
}

/* append --batch: every line of stdin in one atomic append. */
static int append_batch(struct ctx *x)
{
    struct lines l = {0};
    msgpack_sbuffer one;
    struct fl_buf all = {0};
    size_t *offs = NULL, n = 0, cap = 0;
    struct flc_event *evs = NULL;
    char *line, err[512];
    size_t len;
    int rc = EX_OK;

    msgpack_sbuffer_init(&one);
    while (rc == EX_OK && !l.eof) {
        if (lines_fill(&l) != 0) {
            rc = usage_err(x, "reading stdin: %s", strerror(errno));
            break;
        }
        while (rc == EX_OK && lines_next(&l, &line, &len)) {
            if (blank(line, len))
                continue;
            if (pack_line(line, len, &one, err, sizeof err) != 0) {
                rc = report(x, EX_USAGE, "bad_request", err, (int64_t)n, -1);
                break;
            }
            if (n == cap) {
                size_t *p = realloc(offs, (cap = cap ? 2 * cap : 64) * sizeof *p);
                if (!p) {
                    rc = report(x, EX_SERVER, "nomem", "out of memory", -1, -1);
                    break;
                }
                offs = p;
            }
            offs[n++] = all.len;
            if (fl_buf_add(&all, one.data, one.size) != 0)
                rc = report(x, EX_SERVER, "nomem", "out of memory", -1, -1);
        }
    }
    if (rc == EX_OK && n == 0)
        rc = usage_err(x, "no events on stdin");
    if (rc == EX_OK && !(evs = calloc(n, sizeof *evs)))
        rc = report(x, EX_SERVER, "nomem", "out of memory", -1, -1);
    for (size_t i = 0; rc == EX_OK && i < n; i++) {
        evs[i].msgpack = all.p + offs[i];
        evs[i].len = (i + 1 < n ? offs[i + 1] : all.len) - offs[i];
    }
    if (rc == EX_OK) {
        const msgpack_object *res = flc_append(x->c, evs, n);
        rc = res ? put_acks(x, res) : client_err(x);
    }
    free(evs);
    free(offs);
    fl_buf_free(&all);
    free(l.buf);
    msgpack_sbuffer_destroy(&one);
    return rc;
}

/* One line's place in the pipelined append window. */
struct slot {
    uint64_t id;   /* request id while in flight */
    int done;      /* its output is ready */
    int exit_code; /* EX_OK or the failure's exit code */
    json_t *out;   /* the acknowledgement or the error object */
};

/* The pipelined append's state: lines [printed, sent) are in the ring. */
struct pipe {
    struct slot ring[APPEND_WINDOW];
    uint64_t sent, printed;
    int rc; /* the first failure's exit code */
};

/* Record line k's outcome: an acknowledgement (res) or the handle's error. */
static void slot_finish(struct ctx *x, struct slot *s, uint64_t k, const msgpack_object *res)
{
    char err[FJSON_ERR_MAX];

    s->done = 1;
    s->exit_code = EX_OK;
    if (res) {
        const msgpack_object *r = flc_get(res, "results");
        if (r && r->type == MSGPACK_OBJECT_ARRAY && r->via.array.size == 1)
            s->out = fjson_from_msgpack(&r->via.array.ptr[0], FJSON_TIME_RFC3339, err);
        if (!s->out) {
            s->exit_code = EX_CONNECT;
            s->out = error_json("protocol", "malformed append result", (int64_t)k, -1);
        }
        return;
    }
    s->exit_code = exit_for(flc_errcode(x->c));
    s->out = error_json(flc_errname(x->c), flc_errmsg(x->c), (int64_t)k, flc_errversion(x->c));
}

/* Print finished lines in input order. */
static void pipe_flush(struct ctx *x, struct pipe *p)
{
    while (p->printed < p->sent && p->ring[p->printed % APPEND_WINDOW].done) {
        struct slot *s = &p->ring[p->printed % APPEND_WINDOW];
        json_t *e = json_object_get(s->out, "error");
        if (x->json && e) {
            put_json(s->out);
        } else if (x->json) {
            json_t *o = json_pack("{s:O,s:O,s:O}", "seq", json_object_get(s->out, "seq"), "ts",
                                  json_object_get(s->out, "ts"), "duplicate",
                                  json_object_get(s->out, "duplicate"));
            put_json(o ? o : s->out);
            json_decref(o);
        } else if (e) {
            fprintf(stderr, "flowlog: event %" PRIu64 ": %s: %s\n", p->printed,
                    json_string_value(json_object_get(e, "code")),
                    json_string_value(json_object_get(e, "message")));
        } else {
            const char *t = json_string_value(json_object_get(s->out, "ts"));
            printf("seq %" JSON_INTEGER_FORMAT "  %s%s\n",
                   json_integer_value(json_object_get(s->out, "seq")), t ? t : "-",
                   json_is_true(json_object_get(s->out, "duplicate"))
                       ? "  (duplicate: already appended)"
                       : "");
        }
        if (s->exit_code != EX_OK && p->rc == EX_OK)
            p->rc = s->exit_code;
        json_decref(s->out);
        memset(s, 0, sizeof *s);
        p->printed++;
    }
    fflush(stdout);
}

/* Match one reply to its line. */
static void pipe_reply(struct ctx *x, struct pipe *p, uint64_t id, const msgpack_object *res)
{
    for (uint64_t k = p->printed; k < p->sent; k++) {
        struct slot *s = &p->ring[k % APPEND_WINDOW];
        if (!s->done && s->id == id) {
            slot_finish(x, s, k, res);
            return;
        }
    }
}

/* Collect replies: wait up to timeout_ms for the first. 0, or an exit code on a broken link,
 * reported after every result already known (so output line k stays input line k). */
static int pipe_collect(struct ctx *x, struct pipe *p, int timeout_ms)
{
    uint64_t id;
    const msgpack_object *res;
    int rc;

    while ((rc = flc_reply_next(x->c, timeout_ms, &id, &res)) == 1) {
        pipe_reply(x, p, id, res);
        timeout_ms = 0;
    }
    if (rc >= 0)
        return EX_OK;
    pipe_flush(x, p);
    return client_err(x);
}

/* Send one line (or record why it could not be sent). */
static int pipe_send(struct ctx *x, struct pipe *p, char *line, size_t len, msgpack_sbuffer *sb)
{
    struct slot *s = &p->ring[p->sent % APPEND_WINDOW];
    char err[512];

    memset(s, 0, sizeof *s);
    if (pack_line(line, len, sb, err, sizeof err) != 0) {
        s->done = 1;
        s->exit_code = EX_USAGE;
        s->out = error_json("bad_request", err, (int64_t)p->sent, -1);
        p->sent++;
        return EX_OK;
    }
    struct flc_event ev = {sb->data, sb->size};
    s->id = flc_append_send(x->c, &ev, 1);
    p->sent++;
    if (s->id == 0) {
        if (flc_errcode(x->c) == FLC_EUSAGE || flc_errcode(x->c) == FLC_ETOO_LARGE) {
            slot_finish(x, s, p->sent - 1, NULL);
            return EX_OK;
        }
        p->sent--; /* this line was not sent: it gets no output line */
        return pipe_collect(x, p, 0); /* hand out what arrived before the failure, then report */
    }
    return EX_OK;
}

/* Wait until stdin or the socket (if replies are due) is readable; read stdin if it is. */
static int pipe_wait(struct ctx *x, struct pipe *p, struct lines *l)
{
    struct pollfd pf[2] = {{.fd = 0, .events = POLLIN}, {.fd = flc_fd(x->c), .events = POLLIN}};

    if (poll(pf, flc_pending(x->c) ? 2 : 1, -1) < 0 && errno != EINTR)
        return usage_err(x, "poll: %s", strerror(errno));
    if (pf[0].revents && lines_fill(l) != 0)
        return usage_err(x, "reading stdin: %s", strerror(errno));
    return EX_OK;
}

/* append without --batch: each line its own append, up to APPEND_WINDOW in flight; results
 * are printed in input order as soon as they are known, so this also works on a live pipe. */
static int append_pipelined(struct ctx *x)
{
    struct pipe *p = calloc(1, sizeof *p);
    struct lines l = {0};
    msgpack_sbuffer sb;
    char *line;
    size_t len;
    int rc = EX_OK;

    if (!p)
        return report(x, EX_SERVER, "nomem", "out of memory", -1, -1);
    msgpack_sbuffer_init(&sb);
    while (rc == EX_OK) {
        while (rc == EX_OK && p->sent - p->printed < APPEND_WINDOW && lines_next(&l, &line, &len))
            if (!blank(line, len))
                rc = pipe_send(x, p, line, len, &sb);
        if (rc != EX_OK || (rc = pipe_collect(x, p, 0)) != EX_OK)
            break;
        pipe_flush(x, p);
        int more = lines_ready(&l);
        if (l.eof && !more && p->printed == p->sent)
            break;
        if (p->sent - p->printed == APPEND_WINDOW || (l.eof && !more))
            rc = pipe_collect(x, p, -1);
        else if (!more)
            rc = pipe_wait(x, p, &l);
    }
    pipe_flush(x, p);
    if (rc == EX_OK)
        rc = p->rc;
    for (size_t i = 0; i < APPEND_WINDOW; i++)
        json_decref(p->ring[i].out);
    free(p);
    free(l.buf);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* Options of append. */
static int append_opt(void *st, int ch, const char *arg)
{
    if (ch != OPT_BATCH)
        return -1;
    *(int *)st = 1;
    return 0;
}

/* flowlog append [--batch] */
static int cmd_append(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"batch", no_argument, NULL, OPT_BATCH}};
    int batch = 0, nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("append"), argc, argv, own, 1, append_opt, &batch,
                        &nargs)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 0)
        return usage_err(x, "append takes no arguments (events come on stdin)");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    return batch ? append_batch(x) : append_pipelined(x);
}

/* ---- log, timeline ---- */

struct logopts {
    struct flc_query q;
    int follow;
};

/* Options of log and timeline. */
static int log_opt(void *st, int ch, const char *arg)
{
    struct logopts *o = st;

    switch (ch) {
    case OPT_FROM: return parse_u64(arg, &o->q.from) || o->q.from == 0 ? -1 : 0;
    case OPT_LIMIT: return parse_u64(arg, &o->q.limit) || o->q.limit == 0 ? -1 : 0;
    case OPT_TYPE: o->q.type = arg; return 0;
    case OPT_FLOW: o->q.flow_id = arg; return 0;
    case OPT_RUN: o->q.run_id = arg; return 0;
    case OPT_FOLLOW: o->follow = 1; return 0;
    default: return -1;
    }
}

static const struct option log_own[] = {
    {"from", required_argument, NULL, OPT_FROM}, {"limit", required_argument, NULL, OPT_LIMIT},
    {"type", required_argument, NULL, OPT_TYPE}, {"flow", required_argument, NULL, OPT_FLOW},
    {"run", required_argument, NULL, OPT_RUN},   {"follow", no_argument, NULL, OPT_FOLLOW},
};

/* log --follow: subscribe, then print pushes as they come (until --limit events). */
static int follow(struct ctx *x, struct logopts *o)
{
    uint64_t n = 0;
    int rc;

    if (flc_subscribe(x->c, &o->q) != 0)
        return client_err(x);
    for (;;) {
        const msgpack_object *push = flc_sub_next(x->c, -1);
        if (!push)
            return client_err(x);
        if ((rc = put_events(x, push, &n, o->q.limit)) != EX_OK)
            return rc;
        if (o->q.limit && n >= o->q.limit)
            return flc_unsubscribe(x->c) == 0 ? EX_OK : client_err(x);
    }
}

/* flowlog log [--from SEQ] [--limit N] [--type T] [--flow F] [--run R] [--follow] */
static int cmd_log(struct ctx *x, int argc, char **argv)
{
    struct logopts o = {{0}, 0};
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("log"), argc, argv, log_own, 6, log_opt, &o, &nargs)) !=
        EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 0)
        return usage_err(x, "log takes no arguments");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    if (!x->json && !o.follow)
        printf("%8s  %-26s  %-17s %-28s %s\n", "SEQ", "TIME (UTC)", "TYPE", "RUN/FLOW", "DATA");
    return o.follow ? follow(x, &o) : page_events(x, &o.q, 0);
}

/* flowlog timeline (--run R | --flow F) [--from SEQ] [--limit N] */
static int cmd_timeline(struct ctx *x, int argc, char **argv)
{
    struct logopts o = {{0}, 0};
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("timeline"), argc, argv, log_own, 5, log_opt, &o,
                        &nargs)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 0 || o.q.type || !o.q.run_id == !o.q.flow_id)
        return usage_err(x, "timeline needs exactly one of --run R or --flow F");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    if (!x->json)
        printf("%8s  %-26s  %-17s %-28s %s\n", "SEQ", "TIME (UTC)", "TYPE", "RUN/FLOW", "DATA");
    return page_events(x, &o.q, 1);
}

/* ---- state, history ---- */

struct stateopts {
    uint64_t seq;
    const char *time;
    int has_seq;
};

/* Options of state. */
static int state_opt(void *st, int ch, const char *arg)
{
    struct stateopts *o = st;

    if (ch == OPT_ASOF_SEQ) {
        o->has_seq = 1;
        return parse_u64(arg, &o->seq);
    }
    if (ch == OPT_ASOF_TIME) {
        o->time = arg;
        return 0;
    }
    return -1;
}

static const char *const state_tables[] = {
    "migration_runs",         "migration_iterations",   "migration_patches",
    "migration_sast_results", "migration_exec_results", "migration_human_requests",
};

/* A state for people: the flow's fields, then each table, then the attempts. */
static void put_state_human(json_t *st)
{
    static const char *const hist_cols[] = {"attempt_number", "attempt_id", "status",
                                            "started_at", "completed_at", "duration_seconds",
                                            "iterations", "generated_notebooks"};
    json_t *flows = json_object_get(st, "migration_flows");

    printf("flow %s  as of seq %" JSON_INTEGER_FORMAT "  version %" JSON_INTEGER_FORMAT "\n",
           json_string_value(json_object_get(st, "flow_id")),
           json_integer_value(json_object_get(st, "as_of_seq")),
           json_integer_value(json_object_get(st, "version")));
    printf("\nmigration_flows\n");
    if (json_array_size(flows) == 0)
        printf("  (no rows)\n");
    for (size_t i = 0; i < json_array_size(flows); i++)
        put_fields(json_array_get(flows, i), "  ");
    for (size_t i = 0; i < sizeof state_tables / sizeof state_tables[0]; i++) {
        printf("\n%s\n", state_tables[i]);
        put_table(json_object_get(st, state_tables[i]), NULL, 0, "  ");
    }
    printf("\nattempt_history\n");
    put_table(json_object_get(st, "attempt_history"), hist_cols, 8, "  ");
}

/* Print a JSON result: as one line with --json, else with put_human. */
static int put_result(struct ctx *x, const msgpack_object *res, void (*put_human)(json_t *))
{
    json_t *j = to_json(x, res, x->json ? FJSON_TIME_RFC3339 : FJSON_TIME_HUMAN);

    if (!j)
        return EX_CONNECT;
    if (x->json)
        put_json(j);
    else
        put_human(j);
    json_decref(j);
    return EX_OK;
}

/* flowlog state FLOW_ID [--as-of-seq S | --as-of-time T] */
static int cmd_state(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"as-of-seq", required_argument, NULL, OPT_ASOF_SEQ},
                                        {"as-of-time", required_argument, NULL, OPT_ASOF_TIME}};
    struct stateopts o = {0, NULL, 0};
    const msgpack_object *res;
    int64_t us = 0;
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("state"), argc, argv, own, 2, state_opt, &o, &nargs)) !=
        EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 1)
        return usage_err(x, "state needs one FLOW_ID");
    if (o.has_seq && o.time)
        return usage_err(x, "give --as-of-seq or --as-of-time, not both");
    if (o.time && fl_time_parse(o.time, &us) != 0)
        return usage_err(x, "--as-of-time '%s' is not an RFC 3339 time "
                            "(e.g. 2026-11-21T22:39:03.123456Z)", o.time);
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    if (o.has_seq)
        res = flc_state_at_seq(x->c, argv[1], o.seq);
    else if (o.time)
        res = flc_state_at_time(x->c, argv[1], us);
    else
        res = flc_state(x->c, argv[1]);
    return res ? put_result(x, res, put_state_human) : client_err(x);
}

/* Options of history. */
static int history_opt(void *st, int ch, const char *arg)
{
    uint64_t v;

    if (ch != OPT_LIMIT || parse_u64(arg, &v) != 0 || v == 0 || v > UINT32_MAX)
        return -1;
    *(uint32_t *)st = (uint32_t)v;
    return 0;
}

/* A history for people. */
static void put_history_human(json_t *h)
{
    static const char *const cols[] = {"attempt_number",   "attempt_id", "status",
                                       "started_at",       "completed_at",
                                       "duration_seconds", "iterations", "generated_notebooks",
                                       "error_message"};
    printf("flow %s: %" JSON_INTEGER_FORMAT " attempt(s)\n",
           json_string_value(json_object_get(h, "flow_id")),
           json_integer_value(json_object_get(h, "count")));
    put_table(json_object_get(h, "history"), cols, 9, "  ");
}

/* flowlog history FLOW_ID [--limit N] */
static int cmd_history(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"limit", required_argument, NULL, OPT_LIMIT}};
    uint32_t limit = 0;
    const msgpack_object *res;
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("history"), argc, argv, own, 1, history_opt, &limit,
                        &nargs)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 1)
        return usage_err(x, "history needs one FLOW_ID");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    res = flc_history(x->c, argv[1], limit);
    return res ? put_result(x, res, put_history_human) : client_err(x);
}

/* ---- table ---- */

struct tableopts {
    char *column, *value;
    uint64_t limit;
};

/* Options of table. */
static int table_opt(void *st, int ch, const char *arg)
{
    struct tableopts *o = st;
    const char *eq;

    if (ch == OPT_LIMIT)
        return parse_u64(arg, &o->limit) || o->limit == 0 ? -1 : 0;
    if (ch != OPT_WHERE || !(eq = strchr(arg, '=')) || eq == arg)
        return -1;
    free(o->column);
    o->column = strndup(arg, (size_t)(eq - arg));
    o->value = (char *)eq + 1;
    return o->column ? 0 : -1;
}

/* Print one page's rows; people get an aligned table per page. */
static int put_rows(struct ctx *x, const msgpack_object *rows, uint64_t *n, uint64_t limit)
{
    json_t *all = to_json(x, rows, x->json ? FJSON_TIME_RFC3339 : FJSON_TIME_HUMAN);
    size_t i;
    json_t *row;

    if (!all)
        return EX_CONNECT;
    while (limit && json_array_size(all) > limit - *n)
        json_array_remove(all, json_array_size(all) - 1);
    if (x->json) {
        json_array_foreach(all, i, row) put_json(row);
    } else {
        put_table(all, NULL, 0, "");
    }
    *n += json_array_size(all);
    json_decref(all);
    return EX_OK;
}

/* Page through a table read, following "next". */
static int page_table(struct ctx *x, struct flc_table_query *q, uint64_t limit)
{
    uint64_t n = 0;
    void *after = NULL;
    int rc = EX_OK;

    for (;;) {
        const msgpack_object *res = flc_table(x->c, q), *rows, *next;
        if (!res) {
            rc = client_err(x);
            break;
        }
        rows = flc_get(res, "rows");
        next = flc_get(res, "next");
        if (!rows || rows->type != MSGPACK_OBJECT_ARRAY || !next) {
            rc = report(x, EX_CONNECT, "protocol", "a table page without rows/next", -1, -1);
            break;
        }
        if ((rc = put_rows(x, rows, &n, limit)) != EX_OK)
            break;
        if (next->type != MSGPACK_OBJECT_BIN || (limit && n >= limit))
            break;
        free(after);
        if (!(after = malloc(next->via.bin.size ? next->via.bin.size : 1))) {
            rc = report(x, EX_SERVER, "nomem", "out of memory", -1, -1);
            break;
        }
        if (next->via.bin.size)
            memcpy(after, next->via.bin.ptr, next->via.bin.size);
        q->after = after;
        q->after_len = next->via.bin.size;
    }
    free(after);
    return rc;
}

/* flowlog table NAME [--where COLUMN=VALUE] [--limit N] */
static int cmd_table(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"where", required_argument, NULL, OPT_WHERE},
                                        {"limit", required_argument, NULL, OPT_LIMIT}};
    struct tableopts o = {NULL, NULL, 0};
    struct flc_table_query q = {0};
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("table"), argc, argv, own, 2, table_opt, &o, &nargs)) !=
        EX_OK) {
        free(o.column);
        return rc < 0 ? EX_OK : rc;
    }
    if (nargs != 1)
        rc = usage_err(x, "table needs one NAME (e.g. migration_runs)");
    else if ((rc = connect_ctx(x)) == EX_OK) {
        q.table = argv[1];
        q.column = o.column;
        q.value = o.value;
        rc = page_table(x, &q, o.limit);
    }
    free(o.column);
    return rc;
}

/* ---- rollback, verify, stats, ping ---- */

struct rbopts {
    uint64_t to_seq;
    int has_seq;
    const char *reason, *event_id;
};

/* Options of rollback. */
static int rollback_opt(void *st, int ch, const char *arg)
{
    struct rbopts *o = st;

    switch (ch) {
    case OPT_TO_SEQ: o->has_seq = 1; return parse_u64(arg, &o->to_seq);
    case OPT_REASON: o->reason = arg; return 0;
    case OPT_EVENT_ID: o->event_id = arg; return 0;
    default: return -1;
    }
}

/* flowlog rollback FLOW_ID --to-seq S --reason TEXT [--event-id ID] */
static int cmd_rollback(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"to-seq", required_argument, NULL, OPT_TO_SEQ},
                                        {"reason", required_argument, NULL, OPT_REASON},
                                        {"event-id", required_argument, NULL, OPT_EVENT_ID}};
    struct rbopts o = {0, 0, NULL, NULL};
    const msgpack_object *res;
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("rollback"), argc, argv, own, 3, rollback_opt, &o,
                        &nargs)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 1 || !o.has_seq || !o.reason)
        return usage_err(x, "rollback needs FLOW_ID, --to-seq S and --reason TEXT");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    res = flc_rollback(x->c, argv[1], o.to_seq, o.reason, o.event_id);
    return res ? put_acks(x, res) : client_err(x);
}

/* A verify report for people. */
static void put_verify_human(json_t *v)
{
    json_t *problems = json_object_get(v, "problems");
    size_t i;
    json_t *p;

    printf("verify: %s: %" JSON_INTEGER_FORMAT " events, head seq %" JSON_INTEGER_FORMAT
           ", head hash %s\n",
           json_is_true(json_object_get(v, "ok")) ? "OK" : "PROBLEMS FOUND",
           json_integer_value(json_object_get(v, "events")),
           json_integer_value(json_object_get(v, "head_seq")),
           json_string_value(json_object_get(v, "head_hash"))
               ? json_string_value(json_object_get(v, "head_hash"))
               : "-");
    json_array_foreach(problems, i, p) printf("  - %s\n", json_string_value(p));
}

/* Parse a command that has no options and no arguments, then connect. */
static int simple_cmd(struct ctx *x, const char *name, int argc, char **argv)
{
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd(name), argc, argv, NULL, 0, no_opt, NULL, &nargs)) !=
        EX_OK)
        return rc;
    if (nargs != 0)
        return usage_err(x, "%s takes no arguments", name);
    return connect_ctx(x);
}

/* flowlog verify: exits 1 when the server reports problems. */
static int cmd_verify(struct ctx *x, int argc, char **argv)
{
    const msgpack_object *res, *ok;
    int rc;

    if ((rc = simple_cmd(x, "verify", argc, argv)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (!(res = flc_verify(x->c)))
        return client_err(x);
    if ((rc = put_result(x, res, put_verify_human)) != EX_OK)
        return rc;
    ok = flc_get(res, "ok");
    return ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean ? EX_OK : EX_SERVER;
}

/* stats for people: one counter a line. */
static void put_stats_human(json_t *s)
{
    put_fields(s, "");
}

/* flowlog stats */
static int cmd_stats(struct ctx *x, int argc, char **argv)
{
    const msgpack_object *res;
    int rc;

    if ((rc = simple_cmd(x, "stats", argc, argv)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    res = flc_stats(x->c);
    return res ? put_result(x, res, put_stats_human) : client_err(x);
}

/* Monotonic microseconds, for ping's round trip. */
static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* flowlog ping: who the server says we are, and one round trip. */
static int cmd_ping(struct ctx *x, int argc, char **argv)
{
    int64_t t0;
    int rc;

    if ((rc = simple_cmd(x, "ping", argc, argv)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    t0 = mono_us();
    if (!flc_ping(x->c))
        return client_err(x);
    t0 = mono_us() - t0;
    if (x->json) {
        json_t *j = json_pack("{s:b,s:s,s:s,s:s,s:I}", "ok", 1, "server",
                              flc_server_name(x->c), "tenant", flc_tenant(x->c), "role",
                              flc_role(x->c), "rtt_us", (json_int_t)t0);
        put_json(j);
        json_decref(j);
    } else {
        printf("pong from %s (tenant %s, role %s) in %.3f ms\n", flc_server_name(x->c),
               flc_tenant(x->c), flc_role(x->c), (double)t0 / 1000.0);
    }
    return EX_OK;
}

/* ---- help ---- */

static int cmd_help(struct ctx *x, int argc, char **argv);

static const struct cmd cmds[] = {
    {"append", cmd_append, "append [--batch]",
     "Append events read from stdin, one JSON object a line:\n"
     "  {\"type\": T, \"data\": {...}, \"event_id\": ID (optional), \"expected_version\": N "
     "(optional)}\n"
     "Prints one line per event: {\"seq\", \"ts\", \"duplicate\"} (duplicate: true when the "
     "event_id\nwas already appended; seq and ts are then the original's).\n"
     "Without --batch every line is its own append; up to 256 are in flight at once and the\n"
     "results are printed in input order. A failed line prints {\"error\": {...}} with \"index\""
     " =\nthe line's position (from 0, blank lines not counted); later lines are still sent.\n"
     "  --batch   send all lines as one atomic append (1..1000 events): all or nothing."},
    {"log", cmd_log, "log [--from SEQ] [--limit N] [--type T] [--flow F] [--run R] [--follow]",
     "Print events in seq order, one a line: {\"seq\", \"ts\", \"type\", \"event_id\", "
     "\"data\"}.\n"
     "  --from SEQ   start at this seq (default 1)\n"
     "  --limit N    stop after N events\n"
     "  --type T, --flow F, --run R   only events of this type / flow / run\n"
     "  --follow     then keep printing new events as they are committed (a subscription);\n"
     "               ends after --limit events, or never"},
    {"timeline", cmd_timeline, "timeline (--run R | --flow F) [--from SEQ] [--limit N]",
     "Print all events of one run or one flow in seq order (format as log)."},
    {"state", cmd_state, "state FLOW_ID [--as-of-seq S | --as-of-time RFC3339]",
     "Print a flow's rows in the seven tables and its attempt history.\n"
     "  --as-of-seq S    as they were right after event S committed\n"
     "  --as-of-time T   as they were after the last event with ts <= T "
     "(e.g. 2026-11-21T22:39:03Z)"},
    {"history", cmd_history, "history FLOW_ID [--limit N]",
     "Print a flow's attempts, newest first: {\"flow_id\", \"history\": [...], \"count\"}.\n"
     "  --limit N   at most N attempts (default 20)"},
    {"table", cmd_table, "table NAME [--where COLUMN=VALUE] [--limit N]",
     "Print a table's rows (one JSON object a line with --json), following pages.\n"
     "NAME: migration_flows, migration_runs, migration_iterations, migration_patches,\n"
     "migration_sast_results, migration_exec_results, migration_human_requests.\n"
     "  --where COLUMN=VALUE   only rows whose indexed COLUMN equals VALUE\n"
     "  --limit N              stop after N rows"},
    {"rollback", cmd_rollback, "rollback FLOW_ID --to-seq S --reason TEXT [--event-id ID]",
     "Append a flow_rollback event (admin): the flow's rows become what they were right\n"
     "after event S. The log keeps everything. Prints the event's {\"seq\", \"ts\", "
     "\"duplicate\"}."},
    {"verify", cmd_verify, "verify",
     "Check checksums, the hash chain and that the projections equal a rebuild from the log\n"
     "(admin or operator). Exits 1 when problems are found."},
    {"stats", cmd_stats, "stats", "Print the server's counters (admin or operator)."},
    {"ping", cmd_ping, "ping",
     "Connect, authenticate and time one round trip; prints server, tenant and role."},
    {"help", cmd_help, "help [COMMAND]", "Print help for flowlog or for one command."},
};
#define NCMDS (sizeof cmds / sizeof cmds[0])

/* The command called name, or NULL. */
static const struct cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < NCMDS; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

/* The overall help, with the exit codes. */
static void main_help(FILE *f)
{
    fprintf(f, "usage: flowlog [GLOBAL OPTIONS] COMMAND [ARGS]\n\nCommands:\n");
    for (size_t i = 0; i < NCMDS; i++)
        fprintf(f, "  %s\n", cmds[i].usage);
    fprintf(f,
            "\nGlobal options (before or after the command):\n"
            "  --server ADDR   HOST:PORT or unix:PATH (env FLOWLOG_SERVER; default %s)\n"
            "  --token T       the access token (env FLOWLOG_TOKEN)\n"
            "  --tenant T      the tenant to act for (operator tokens only)\n"
            "  --data DIR      read the token from DIR/admin.token when none is given\n"
            "  --json          print JSON: one object, or one per line for streams; a failure\n"
            "                  prints {\"error\": {\"code\", \"message\", \"index\", \"version\"}}\n"
            "  --help          this text; `flowlog COMMAND --help` for one command\n"
            "\nExit codes:\n"
            "  0  success\n"
            "  1  the server refused a request (bad_request, forbidden, not_found, conflict, ...),\n"
            "     or verify found problems\n"
            "  2  usage error: bad options or arguments, or unreadable input on stdin\n"
            "  3  cannot connect or authenticate, or the connection broke (codes connection,\n"
            "     protocol, timeout, unauthenticated)\n",
            DEFAULT_SERVER);
}

/* flowlog help [COMMAND] */
static int cmd_help(struct ctx *x, int argc, char **argv)
{
    const struct cmd *cm;

    if (argc < 2) {
        main_help(stdout);
        return EX_OK;
    }
    if (!(cm = find_cmd(argv[1])))
        return usage_err(x, "unknown command '%s'", argv[1]);
    return cmd_help_text(cm);
}

/* Parse the global options before the command; returns the command's index in argv. */
static int parse_globals(struct ctx *x, int argc, char **argv, int *help)
{
    struct option all[NGLOBAL + 1];
    int ch;

    merge_opts(NULL, 0, all);
    opterr = 0;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "+", all, NULL)) != -1) {
        if (ch == OPT_HELP)
            *help = 1;
        else if (!global_opt(x, ch, optarg))
            return -1;
    }
    return optind;
}

/* Global options, then the command, whose own parser also takes the global ones. */
int main(int argc, char **argv)
{
    struct ctx x = {0};
    const struct cmd *cm;
    int help = 0, i, rc;

    if ((i = parse_globals(&x, argc, argv, &help)) < 0) {
        rc = usage_err(&x, "bad option '%s' (see flowlog --help)", argv[optind - 1]);
        return rc;
    }
    if (i >= argc) {
        main_help(help ? stdout : stderr);
        return help ? EX_OK : EX_USAGE;
    }
    if (!(cm = find_cmd(argv[i])))
        return usage_err(&x, "unknown command '%s' (see flowlog --help)", argv[i]);
    if (help)
        return cmd_help_text(cm);
    rc = cm->run(&x, argc - i, argv + i);
    flc_free(x.c);
    free(x.token_buf);
    return rc;
}
