/* cmd_append.c: flowlog append: events as JSON lines on stdin, one atomic batch or pipelined. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"

#define APPEND_WINDOW 256 /* appends in flight on one connection without --batch */

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
    json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
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
int put_acks(struct ctx *x, const msgpack_object *res)
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
            s->out = fjson_from_msgpack(&r->via.array.ptr[0],
                                        x->json ? FJSON_TIME_RFC3339 : FJSON_TIME_HUMAN, err);
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
int cmd_append(struct ctx *x, int argc, char **argv)
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
