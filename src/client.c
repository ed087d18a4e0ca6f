/* client.c: libflowlog, the client side of proto/PROTOCOL.md (see flowlog.h for the API).
 *
 * Shape: a socket, a read buffer of raw bytes, and three places a decoded frame can be:
 *   - c->cur: the frame whose result the caller is looking at (freed at the next call);
 *   - c->replies: replies to pipelined requests (flc_*_send) not yet handed out;
 *   - c->pushes: subscription pushes not yet handed out.
 * Every wait reads frames and routes each one to where it belongs, so synchronous calls,
 * pipelined requests and a subscription can share one connection.
 *
 * The socket is non-blocking. While sending, we also read: a server that stops reading our
 * requests because its replies to us are piling up would otherwise deadlock with a client that
 * pipelines faster than it collects. */
#include "flowlog.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "client_int.h"

#define CONNECT_TIMEOUT_MS 10000
#define DEFAULT_MAX_FRAME ((size_t)64 * 1024 * 1024)
#define READ_CHUNK (64 * 1024)

static const char empty[] = "";

/* ---- errors ---- */

/* Set the handle's error from a format: the one place both kinds of failure go through. */
static void client_vseterr(flc_client *c, int code, const char *fmt, va_list ap)
{
    fl_error_vset(&c->err, code, fmt, ap);
    c->err.index = -1;
    c->err.version = -1;
}

/* Set the handle's error; returns code so callers can `return client_seterr(...)`. */
int client_seterr(flc_client *c, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    client_vseterr(c, code, fmt, ap);
    va_end(ap);
    return code;
}

/* The handle's current error closes the connection: later calls repeat it, or reconnect. An open
 * subscription ends with it, and is never renewed behind the caller's back: flc_sub_next says
 * so (RECONNECTING in flowlog.h). */
static int mark_dead(flc_client *c)
{
    c->dead = 1;
    c->dead_err = c->err;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->sub == SUB_OPEN) {
        c->sub = SUB_LOST;
        memcpy(c->sub_why, c->err.msg, sizeof c->sub_why);
    }
    return c->err.code;
}

/* A connection-level failure: set the error and mark the handle dead. */
int client_fatal(flc_client *c, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    client_vseterr(c, code, fmt, ap);
    va_end(ap);
    c->peer_closed = 0;
    return mark_dead(c);
}

/* The server closed the connection (end of stream, a reset): a failure the request in hand did
 * not cause, so one a new connection may cure. */
static int peer_gone(flc_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int peer_gone(flc_client *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    client_vseterr(c, FLC_ECONNECTION, fmt, ap);
    va_end(ap);
    (void)mark_dead(c);
    c->peer_closed = 1;
    return c->err.code;
}

/* The local codes have their own names; the server's are the contract's (err.c). */
const char *flc_code_name(int code)
{
    switch (code) {
    case FLC_OK:
        return "ok";
    case FLC_ECONNECTION:
        return "connection";
    case FLC_EPROTOCOL:
        return "protocol";
    case FLC_EUSAGE:
        return "usage";
    case FLC_ETIMEOUT:
        return "timeout";
    case FLC_ENOMEM:
        return "nomem";
    default:
        return fl_err_name(code);
    }
}

/* The error accessors never fail and never change the handle (see ERRORS in flowlog.h). */
int flc_errcode(const flc_client *c)
{
    return c->err.code;
}

const char *flc_errname(const flc_client *c)
{
    return flc_code_name(c->err.code);
}

const char *flc_errmsg(const flc_client *c)
{
    return c->err.code ? c->err.msg : empty;
}

int64_t flc_errindex(const flc_client *c)
{
    return c->err.index;
}

int64_t flc_errversion(const flc_client *c)
{
    return c->err.version;
}

/* ---- frames and queues ---- */

/* Free one frame (NULL is fine). */
void client_frame_free(struct frame *f)
{
    if (!f)
        return;
    msgpack_unpacked_destroy(&f->u);
    free(f->bytes);
    free(f);
}

/* Append f to q. */
static void fq_push(struct fqueue *q, struct frame *f)
{
    f->next = NULL;
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
}

/* Take the oldest frame of q, or NULL. */
static struct frame *fq_pop(struct fqueue *q)
{
    struct frame *f = q->head;

    if (f) {
        q->head = f->next;
        if (!q->head)
            q->tail = NULL;
        f->next = NULL;
    }
    return f;
}

/* Free every frame of q. */
void client_fq_clear(struct fqueue *q)
{
    struct frame *f;

    while ((f = fq_pop(q)) != NULL)
        client_frame_free(f);
}

/* The decoded map of a frame. */
const msgpack_object *client_frame_obj(const struct frame *f)
{
    return &f->u.data;
}

/* Index of id among the pending ids, or -1. */
static ssize_t pending_find(const flc_client *c, uint64_t id)
{
    for (size_t i = 0; i < c->npending; i++)
        if (c->pending[i] == id)
            return (ssize_t)i;
    return -1;
}

/* Remember that id was sent with *_send. */
int client_pending_add(flc_client *c, uint64_t id)
{
    if (c->npending == c->cap_pending) {
        size_t cap = c->cap_pending ? c->cap_pending * 2 : 64;
        uint64_t *p = realloc(c->pending, cap * sizeof *p);
        if (!p)
            return client_seterr(c, FLC_ENOMEM, "out of memory");
        c->pending = p;
        c->cap_pending = cap;
    }
    c->pending[c->npending++] = id;
    return 0;
}

/* Forget a pending id (its reply was handed out). */
void client_pending_remove(flc_client *c, uint64_t id)
{
    ssize_t i = pending_find(c, id);

    if (i >= 0)
        c->pending[i] = c->pending[--c->npending];
}

/* ---- time ---- */

/* Monotonic milliseconds. */
static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline for timeout_ms (<0: the handle's timeout; 0 stays 0: "now"); -1 means never. */
static int64_t deadline_for(const flc_client *c, int timeout_ms)
{
    if (timeout_ms < 0)
        timeout_ms = c->timeout_ms > 0 ? c->timeout_ms : -1;
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Milliseconds left until deadline, for poll(): -1 for none, 0 when passed. */
static int ms_left(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > 1000000 ? 1000000 : (int)left;
}

/* ---- bytes in ---- */

/* Read what the socket has (at most one chunk) into rbuf. 1 if bytes came, 0 if none were
 * there, or a fatal code on EOF/error. */
static int recv_some(flc_client *c)
{
    ssize_t n;

    if (c->rpos == c->rbuf.len) {
        c->rpos = c->rbuf.len = 0;
    } else if (c->rpos > READ_CHUNK && c->rpos > c->rbuf.len / 2) {
        memmove(c->rbuf.p, c->rbuf.p + c->rpos, c->rbuf.len - c->rpos);
        c->rbuf.len -= c->rpos;
        c->rpos = 0;
    }
    if (fl_buf_reserve(&c->rbuf, READ_CHUNK) != 0)
        return client_fatal(c, FLC_ENOMEM, "out of memory buffering a reply");
    do
        n = recv(c->fd, c->rbuf.p + c->rbuf.len, READ_CHUNK, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n < 0 && errno == ECONNRESET)
        return peer_gone(c, "the server reset the connection");
    if (n < 0)
        return client_fatal(c, FLC_ECONNECTION, "receive failed: %s", strerror(errno));
    if (n == 0)
        return peer_gone(c, "the server closed the connection");
    c->rbuf.len += (size_t)n;
    c->heard_ms = now_ms();
    return 1;
}

/* Read the "id" and the kind of a decoded frame. */
static int frame_classify(flc_client *c, struct frame *f)
{
    const msgpack_object *o = client_frame_obj(f), *id;

    if (o->type != MSGPACK_OBJECT_MAP)
        return client_fatal(c, FLC_EPROTOCOL, "protocol error: a reply is not a map");
    id = fl_wire_get(o, "id");
    if (id && id->type == MSGPACK_OBJECT_NIL)
        f->id_nil = 1;
    else if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        f->id = id->via.u64;
    else
        return client_fatal(c, FLC_EPROTOCOL, "protocol error: a reply has no valid \"id\"");
    f->is_push = fl_wire_get(o, "push") != NULL;
    if (!f->is_push && !fl_wire_get(o, "ok"))
        return client_fatal(c, FLC_EPROTOCOL, "protocol error: a reply has no \"ok\"");
    return 0;
}

/* Take one complete frame out of rbuf if there is one: 1 with *out, 0 if incomplete, or a
 * fatal code. */
static int frame_take(flc_client *c, struct frame **out)
{
    size_t avail = c->rbuf.len - c->rpos;
    uint32_t len;
    struct frame *f;
    struct fl_error e;

    if (avail < FL_FRAME_HDR)
        return 0;
    len = fl_wire_frame_len(c->rbuf.p + c->rpos);
    if (len == 0 || len > c->max_frame)
        return client_fatal(c, FLC_EPROTOCOL, "protocol error: reply frame of %u bytes (limit %zu)",
                     len, c->max_frame);
    if (avail - FL_FRAME_HDR < len)
        return 0;
    f = calloc(1, sizeof *f);
    if (!f || !(f->bytes = malloc(len))) {
        free(f);
        return client_fatal(c, FLC_ENOMEM, "out of memory decoding a reply");
    }
    msgpack_unpacked_init(&f->u);
    memcpy(f->bytes, c->rbuf.p + c->rpos + FL_FRAME_HDR, len);
    c->rpos += FL_FRAME_HDR + len;
    fl_error_clear(&e);
    if (fl_wire_decode(f->bytes, len, &f->u, &e) != 0) {
        client_frame_free(f);
        return client_fatal(c, FLC_EPROTOCOL, "protocol error: undecodable reply: %s", e.msg);
    }
    if (frame_classify(c, f) != 0) {
        client_frame_free(f);
        return c->err.code;
    }
    *out = f;
    return 1;
}

/* Wait until deadline for one frame. 0 with *out, FLC_ETIMEOUT, or a fatal code. The socket is
 * read once before any wait: a reply is usually there already (the caller polled, or the server
 * was quick), and a poll() before every read doubled the system calls per reply. */
static int frame_read(flc_client *c, int64_t deadline, struct frame **out)
{
    int tried = 0;

    for (;;) {
        int rc = frame_take(c, out);
        if (rc != 0)
            return rc > 0 ? 0 : rc;
        if (c->dead) { /* nothing more will come: the bytes received were all there was */
            c->err = c->dead_err;
            return c->err.code;
        }
        if (!tried) {
            tried = 1;
            if ((rc = recv_some(c)) < 0)
                return rc;
            if (rc > 0)
                continue;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        rc = poll(&p, 1, ms_left(deadline));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return client_fatal(c, FLC_ECONNECTION, "poll failed: %s", strerror(errno));
        if (rc == 0)
            return client_seterr(c, FLC_ETIMEOUT, "no reply from the server in time");
        if ((rc = recv_some(c)) < 0)
            return rc;
    }
}

/* ---- bytes out ---- */

static int frame_route(flc_client *c, struct frame *f, enum want kind, uint64_t id);

/* The server closed while we were sending. It may have said why first (too_large for an
 * over-long frame, unauthenticated, ...): read what is left and report that, not the reset. */
static int send_failed(flc_client *c, int err)
{
    struct frame *f;
    ssize_t n;
    int rc;

    for (;;) {
        if (fl_buf_reserve(&c->rbuf, READ_CHUNK) != 0)
            break;
        n = recv(c->fd, c->rbuf.p + c->rbuf.len, READ_CHUNK, MSG_DONTWAIT);
        if (n <= 0)
            break;
        c->rbuf.len += (size_t)n;
    }
    while ((rc = frame_take(c, &f)) == 1)
        if ((rc = frame_route(c, f, WANT_PUSH, 0)) < 0)
            return rc; /* an "id": nil error: the server's reason */
    if (c->dead)
        return c->err.code;
    if (err == EPIPE || err == ECONNRESET)
        return peer_gone(c, "send failed: %s", strerror(err));
    return client_fatal(c, FLC_ECONNECTION, "send failed: %s", strerror(err));
}

/* Send all of buf, reading replies meanwhile so that neither side can block the other. The
 * socket is written first and waited on only when it is full: a poll() before every send was
 * one system call per request more. */
static int send_all(flc_client *c, const char *buf, size_t len)
{
    int64_t deadline = deadline_for(c, -1);
    int full = 0;

    if (c->fd < 0) /* never poll a closed socket: that would wait for ever */
        return client_fatal(c, FLC_ECONNECTION, "not connected");
    while (len > 0) {
        if (!full) {
            ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                full = 1;
                continue;
            }
            if (n < 0)
                return send_failed(c, errno);
            buf += n;
            len -= (size_t)n;
            continue;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLOUT | POLLIN};
        int rc = poll(&p, 1, ms_left(deadline));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return client_fatal(c, FLC_ECONNECTION, "poll failed: %s", strerror(errno));
        if (rc == 0)
            return client_fatal(c, FLC_ECONNECTION, "timed out sending a request");
        if (p.revents & POLLIN) {
            /* An end of stream while sending: the server may have said why just before
             * (too_large for an over-long frame): report that, not the close. */
            if ((rc = recv_some(c)) < 0)
                return send_failed(c, ECONNRESET);
        }
        if (p.revents & (POLLOUT | POLLERR | POLLHUP))
            full = 0;
    }
    return 0;
}

/* ---- requests ---- */

/* Start building request {"id", "op", ...} with nargs further keys; returns its id. */
uint64_t client_req_begin(flc_client *c, const char *op, uint32_t nargs)
{
    uint64_t id = c->next_id++;

    msgpack_sbuffer_clear(&c->wbuf);
    (void)fl_wire_frame_begin(&c->wbuf);
    msgpack_pack_map(&c->pk, 2 + nargs);
    fl_wire_pack_cstr(&c->pk, "id");
    msgpack_pack_uint64(&c->pk, id);
    fl_wire_pack_cstr(&c->pk, "op");
    fl_wire_pack_cstr(&c->pk, op);
    return id;
}

/* Pack "key": "value". */
void client_pack_kv_str(flc_client *c, const char *key, const char *val)
{
    fl_wire_pack_cstr(&c->pk, key);
    fl_wire_pack_cstr(&c->pk, val);
}

/* Pack "key": unsigned. */
void client_pack_kv_u64(flc_client *c, const char *key, uint64_t val)
{
    fl_wire_pack_cstr(&c->pk, key);
    msgpack_pack_uint64(&c->pk, val);
}

static int req_write(flc_client *c);

/* Finish the frame and send it. */
int client_req_send(flc_client *c)
{
    if (!c->wbuf.data)
        return client_seterr(c, FLC_ENOMEM, "out of memory building a request");
    if (fl_wire_frame_end(&c->wbuf, 0, c->max_frame) != 0)
        return client_seterr(c, FLC_ETOO_LARGE, "request of %zu bytes exceeds the frame limit %zu",
                      c->wbuf.size - FL_FRAME_HDR, c->max_frame);
    return req_write(c);
}

/* A str object's bytes: msgpack-c gives an empty str a NULL pointer at times. */
static const char *mp_str(const msgpack_object *o)
{
    return o->via.str.size ? o->via.str.ptr : "";
}

/* Fill the handle's error from a reply's "error" map. */
static int error_from_reply(flc_client *c, const msgpack_object *reply)
{
    const msgpack_object *e = fl_wire_get(reply, "error");
    const msgpack_object *code = fl_wire_get(e, "code"), *msg = fl_wire_get(e, "message");
    const msgpack_object *idx = fl_wire_get(e, "index"), *ver = fl_wire_get(e, "version");
    int rc;

    if (!code || code->type != MSGPACK_OBJECT_STR)
        return client_seterr(c, FLC_EPROTOCOL, "protocol error: an error reply without a code");
    rc = fl_err_from_name(code->via.str.ptr, code->via.str.size);
    if (msg && msg->type == MSGPACK_OBJECT_STR)
        client_seterr(c, rc, "%.*s", (int)msg->via.str.size, mp_str(msg));
    else
        client_seterr(c, rc, "%.*s", (int)code->via.str.size, mp_str(code));
    if (idx && idx->type == MSGPACK_OBJECT_POSITIVE_INTEGER && idx->via.u64 <= INT64_MAX)
        c->err.index = (int64_t)idx->via.u64;
    if (ver && ver->type == MSGPACK_OBJECT_POSITIVE_INTEGER && ver->via.u64 <= INT64_MAX)
        c->err.version = (int64_t)ver->via.u64;
    return rc;
}

/* Is this frame the answer to the wait (kind, id)? Otherwise queue or drop it. Returns 1 if it
 * is, 0 if it was routed elsewhere, or a fatal code (an "id": nil error from the server). */
static int frame_route(flc_client *c, struct frame *f, enum want kind, uint64_t id)
{
    if (f->id_nil) {
        int rc = error_from_reply(c, client_frame_obj(f));
        client_frame_free(f);
        (void)mark_dead(c);
        /* unavailable: idle, shutting down, overloaded; the others blame what we sent */
        c->peer_closed = rc == FLC_EUNAVAILABLE;
        return rc;
    }
    if (f->is_push) {
        if ((c->sub == SUB_OPENING || c->sub == SUB_OPEN) && f->id == c->sub_id)
            fq_push(&c->pushes, f);
        else
            client_frame_free(f); /* a push still in flight after unsubscribe */
        return 0;
    }
    if (kind == WANT_ID && f->id == id)
        return 1;
    if (pending_find(c, f->id) >= 0)
        fq_push(&c->replies, f);
    else if (c->sub == SUB_OPEN && f->id == c->sub_id)
        fq_push(&c->pushes, f); /* the subscription ended with an error */
    else
        client_frame_free(f); /* the late reply of a call that timed out */
    return 0;
}

/* Wait for what kind/id names, taking queued frames first. 0 with *out, or a code. */
int client_wait_for(flc_client *c, enum want kind, uint64_t id, int timeout_ms,
                    struct frame **out)
{
    int64_t deadline = deadline_for(c, timeout_ms);
    struct frame *f = NULL;

    for (;;) {
        int rc;

        if (kind == WANT_PENDING && (f = fq_pop(&c->replies)) != NULL)
            break;
        if (kind == WANT_PUSH && (f = fq_pop(&c->pushes)) != NULL)
            break;
        if ((rc = frame_read(c, deadline, &f)) != 0)
            return rc;
        if ((rc = frame_route(c, f, kind, id)) < 0)
            return rc;
        if (rc == 1)
            break;
    }
    *out = f;
    return 0;
}

/* ---- reconnecting (RECONNECTING in flowlog.h) ---- */

#define PROBE_CHUNKS 16
/* Below the shortest --idle-timeout (1 s): see conn_probe. */
#define CLIENT_PROBE_QUIET_MS 250

static int conn_again(flc_client *c, const char *why);

/* Has the server closed the connection since we last read (the idle close, a restart)? Route
 * the frames already buffered as a wait would (the idle close may have come in one read with
 * the previous reply), so that the server's reason is found before the end of stream behind
 * it; then, if always or if the server has been quiet for CLIENT_PROBE_QUIET_MS, read what has
 * arrived, without waiting. 0 if the connection is still open (a server still sending after a few
 * chunks is), else the code of the close.
 * Why only when quiet: that read was one system call more per request, and nearly always found
 * nothing. The idle close comes only after at least a second (--idle-timeout) without a request,
 * so it is still found before the write. A close in the last moments of a busy connection (a
 * restart) is found while writing or while waiting for the reply instead, where the rule of
 * RECONNECTING applies. */
static int conn_probe(flc_client *c, int always)
{
    struct frame *f;
    int rc;

    for (int i = 0; i < PROBE_CHUNKS; i++) {
        while ((rc = frame_take(c, &f)) == 1)
            if ((rc = frame_route(c, f, WANT_PUSH, 0)) < 0)
                return rc;
        if (rc < 0)
            return rc;
        if (i == 0 && !always && now_ms() - c->heard_ms < CLIENT_PROBE_QUIET_MS)
            return 0;
        if ((rc = recv_some(c)) <= 0)
            return rc;
    }
    return 0;
}

/* Is str object o equal to s? */
static int mp_is(const msgpack_object *o, const char *s)
{
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(mp_str(o), s, o->via.str.size) == 0;
}

/* Requests whose repetition changes nothing: the server only reads for them. */
static int op_is_read(const msgpack_object *op)
{
    static const char *const reads[] = {"ping",    "log",   "timeline", "subscribe", "state",
                                        "history", "table", "verify",   "stats"};

    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++)
        if (mp_is(op, reads[i]))
            return 1;
    return 0;
}

/* Why the request in wbuf must not go on a new connection: NULL if it may. Not written: none of
 * it reached the server, so any request may, except an unsubscribe (its subscription ended with
 * the old connection). Written, reply lost: only a read, or an append whose every event has an
 * event_id (a repeat is answered as a duplicate with the original seq). Read off the request
 * itself, so that every operation, present or future, gets the rule from this one place. */
static const char *resend_refusal(const flc_client *c, int written)
{
    msgpack_unpacked u;
    struct fl_error e;
    const msgpack_object *op, *evs;
    const char *no = NULL;

    fl_error_clear(&e);
    if (fl_wire_decode(c->wbuf.data + FL_FRAME_HDR, c->wbuf.size - FL_FRAME_HDR, &u, &e) != 0) {
        msgpack_unpacked_destroy(&u);
        return "it could not be read back (out of memory?)";
    }
    op = fl_wire_get(&u.data, "op");
    evs = fl_wire_get(&u.data, "events");
    if (mp_is(op, "unsubscribe"))
        no = "its subscription ended with the connection";
    else if (!written || op_is_read(op))
        no = NULL;
    else if (!mp_is(op, "append") || !evs || evs->type != MSGPACK_OBJECT_ARRAY)
        no = "it is not a read";
    else
        for (uint32_t i = 0; i < evs->via.array.size && !no; i++) {
            const msgpack_object *eid = fl_wire_get(&evs->via.array.ptr[i], "event_id");
            if (!eid || eid->type != MSGPACK_OBJECT_STR || eid->via.str.size == 0)
                no = "an event without an event_id would be appended twice";
        }
    msgpack_unpacked_destroy(&u);
    return no;
}

/* When the connection closed under the request in wbuf. */
enum stage {
    BEFORE,  /* before any of it was written: found closed, or closed by an earlier call */
    WRITING, /* while writing it: the server acts on whole frames only, so not on this one */
    WRITTEN, /* after all of it was written, before its reply came */
};

/* The connection closed under the request in wbuf: connect again and return 0 if the rule of
 * RECONNECTING in flowlog.h lets the request go on a new connection. Otherwise keep the error (a
 * lost reply not sent again says that the outcome is unknown) and return its code. */
static int reconnect_for(flc_client *c, enum stage at)
{
    struct fl_error why = c->err;
    const char *no;

    /* A close the server made because of our request (too_large, ...) would only repeat. */
    if (!c->reconnect || !c->helloed || (at != BEFORE && !c->peer_closed))
        return c->err.code;
    no = resend_refusal(c, at == WRITTEN);
    if (no && at == WRITTEN)
        return client_seterr(c, FLC_ECONNECTION,
                             "the connection closed before the reply came (%s): the request may "
                             "or may not have been applied; it was not sent again, as %s",
                             why.msg, no);
    if (no || c->reconnected)
        return c->err.code;
    c->reconnected = 1;
    return conn_again(c, why.msg);
}

/* Write the request in wbuf; if the connection is known closed, or found closed now or while
 * writing, write it to a new one (nothing of it reached the old one). */
static int req_write(flc_client *c)
{
    int rc;

    if (!c->dead)
        (void)conn_probe(c, 0);
    if (c->dead) {
        c->err = c->dead_err;
        if ((rc = reconnect_for(c, BEFORE)) != 0)
            return rc;
    }
    if ((rc = send_all(c, c->wbuf.data, c->wbuf.size)) == 0)
        return 0;
    if ((rc = reconnect_for(c, WRITING)) != 0)
        return rc;
    return send_all(c, c->wbuf.data, c->wbuf.size);
}

/* ---- the call cycle ---- */

/* Start a call: release the previous result; a dead handle repeats its error unless it may
 * reconnect (the call's request then goes on a new connection). */
int client_call_begin(flc_client *c)
{
    client_frame_free(c->cur);
    c->cur = NULL;
    c->reconnected = 0;
    if (c->dead && !(c->reconnect && c->helloed)) {
        c->err = c->dead_err;
        return c->err.code;
    }
    fl_error_clear(&c->err);
    return 0;
}

/* Hand out a reply frame: *res is its result (owned by c->cur), or NULL with the server's
 * error on the handle. Returns 0, or a fatal code for a malformed reply. */
int client_reply_take(flc_client *c, struct frame *f, const msgpack_object **res)
{
    const msgpack_object *ok = fl_wire_get(client_frame_obj(f), "ok");

    *res = NULL;
    if (ok->type != MSGPACK_OBJECT_BOOLEAN) {
        client_frame_free(f);
        return client_fatal(c, FLC_EPROTOCOL, "protocol error: \"ok\" is not a boolean");
    }
    if (!ok->via.boolean) {
        (void)error_from_reply(c, client_frame_obj(f));
        client_frame_free(f);
        return 0;
    }
    c->cur = f;
    if (!(*res = fl_wire_get(client_frame_obj(f), "result")))
        return client_fatal(c, FLC_EPROTOCOL, "protocol error: a success reply without \"result\"");
    return 0;
}

/* client_reply_take for callers that only need the result. */
const msgpack_object *client_reply_result(flc_client *c, struct frame *f)
{
    const msgpack_object *res;

    return client_reply_take(c, f, &res) == 0 ? res : NULL;
}

/* Send the request built in wbuf and wait for its reply; a lost reply makes it sent again on a
 * new connection only if that is harmless (reconnect_for says). */
const msgpack_object *client_call_finish(flc_client *c, uint64_t id)
{
    struct frame *f = NULL;
    int rc;

    if ((rc = client_req_send(c)) != 0)
        return NULL;
    rc = client_wait_for(c, WANT_ID, id, -1, &f);
    if (rc != 0 && c->dead && reconnect_for(c, WRITTEN) == 0 && (rc = req_write(c)) == 0)
        rc = client_wait_for(c, WANT_ID, id, -1, &f);
    return rc == 0 ? client_reply_result(c, f) : NULL;
}

/* ---- connecting ---- */

/* Split "host:port", "[v6]:port" or "host" into host and port. */
static int parse_hostport(flc_client *c, const char *s, char *host, size_t hostsz, char *port,
                          size_t portsz)
{
    const char *h = s, *colon;
    size_t hlen;

    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end)
            return client_seterr(c, FLC_EUSAGE, "bad server address '%s': missing ']'", s);
        h = s + 1;
        hlen = (size_t)(end - h);
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] != '\0' && !colon)
            return client_seterr(c, FLC_EUSAGE, "bad server address '%s'", s);
    } else {
        colon = strrchr(s, ':');
        if (colon && strchr(s, ':') != colon)
            colon = NULL; /* a bare IPv6 address */
        hlen = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (hlen == 0 || hlen >= hostsz)
        return client_seterr(c, FLC_EUSAGE, "bad server address '%s': bad host", s);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (!colon) {
        snprintf(port, portsz, "%d", FLC_DEFAULT_PORT);
        return 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535)
        return client_seterr(c, FLC_EUSAGE, "bad server address '%s': bad port", s);
    snprintf(port, portsz, "%ld", p);
    return 0;
}

/* Wait for a non-blocking connect on fd; 0 or an errno value. */
static int connect_wait(int fd, int64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int rc, soerr = 0;
    socklen_t sl = sizeof soerr;

    while ((rc = poll(&p, 1, ms_left(deadline))) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        return errno;
    if (rc == 0)
        return ETIMEDOUT;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        return errno;
    return soerr;
}

/* Connect a non-blocking socket to one address; the fd, or -1 with *err set to errno. */
static int connect_addr(const struct sockaddr *sa, socklen_t len, int family, int64_t deadline,
                        int *err)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        *err = errno;
        return -1;
    }
    if (connect(fd, sa, len) == 0)
        return fd;
    *err = errno == EINPROGRESS ? connect_wait(fd, deadline) : errno;
    if (*err == 0)
        return fd;
    close(fd);
    return -1;
}

/* Connect to "unix:PATH". */
static int connect_unix(flc_client *c, const char *path, int64_t deadline)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int err = 0;

    if (strlen(path) == 0 || strlen(path) >= sizeof sun.sun_path)
        return client_seterr(c, FLC_EUSAGE, "bad unix socket path '%s' (1..%zu bytes)", path,
                      sizeof sun.sun_path - 1);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    c->fd = connect_addr((struct sockaddr *)&sun, sizeof sun, AF_UNIX, deadline, &err);
    if (c->fd < 0)
        return client_fatal(c, FLC_ECONNECTION, "cannot connect to unix:%s: %s", path, strerror(err));
    return 0;
}

/* Connect to HOST:PORT, trying each address the name resolves to. */
static int connect_tcp(flc_client *c, const char *server, int64_t deadline)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    int rc, err = 0, one = 1;

    if ((rc = parse_hostport(c, server, host, sizeof host, port, sizeof port)) != 0)
        return rc;
    if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
        return client_fatal(c, FLC_ECONNECTION, "cannot resolve '%s': %s", host, gai_strerror(rc));
    for (ai = res; ai && c->fd < 0; ai = ai->ai_next)
        c->fd = connect_addr(ai->ai_addr, ai->ai_addrlen, ai->ai_family, deadline, &err);
    freeaddrinfo(res);
    if (c->fd < 0)
        return client_fatal(c, FLC_ECONNECTION, "cannot connect to %s: %s", server, strerror(err));
    /* Requests are small and a reply is awaited: never let Nagle hold one back. */
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        return client_fatal(c, FLC_ECONNECTION, "setsockopt(TCP_NODELAY): %s", strerror(errno));
    return 0;
}

/* Copy a string field of the hello result. */
static char *hello_str(const msgpack_object *res, const char *key)
{
    const msgpack_object *o = fl_wire_get(res, key);

    if (!o || o->type != MSGPACK_OBJECT_STR)
        return strdup("");
    return strndup(mp_str(o), o->via.str.size);
}

/* Keep the hello's answer for key in *slot. flowlog.h promises these strings for the handle's
 * lifetime: after a reconnect an unchanged one stays, a changed one is retired, not freed. */
static int hello_keep(flc_client *c, char **slot, const msgpack_object *res, const char *key)
{
    char *s = hello_str(res, key), **r;

    if (!s)
        return -1;
    if (*slot && strcmp(*slot, s) == 0) {
        free(s);
        return 0;
    }
    if (*slot) {
        if (!(r = realloc(c->retired, (c->nretired + 1) * sizeof *r))) {
            free(s);
            return -1;
        }
        c->retired = r;
        c->retired[c->nretired++] = *slot;
    }
    *slot = s;
    return 0;
}

/* Pack the hello into sb (a frame). */
static void hello_pack(const flc_client *c, msgpack_sbuffer *sb)
{
    msgpack_packer pk;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    (void)fl_wire_frame_begin(sb);
    msgpack_pack_map(&pk, c->want_tenant ? 5 : 4);
    fl_wire_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 0);
    fl_wire_pack_cstr(&pk, "op");
    fl_wire_pack_cstr(&pk, "hello");
    fl_wire_pack_cstr(&pk, "version");
    msgpack_pack_uint64(&pk, FLC_PROTOCOL_VERSION);
    fl_wire_pack_cstr(&pk, "token");
    fl_wire_pack_cstr(&pk, c->token);
    if (c->want_tenant) {
        fl_wire_pack_cstr(&pk, "tenant");
        fl_wire_pack_cstr(&pk, c->want_tenant);
    }
}

/* Say hello and keep what the server says about us. The hello is built apart from wbuf, which
 * may hold the request a reconnect is made for. A reconnect must land in the same tenant: the
 * caller's appends would otherwise go elsewhere without a word. */
static int handshake(flc_client *c)
{
    msgpack_sbuffer sb;
    struct frame *f = NULL;
    const msgpack_object *res = NULL;
    char *tenant = NULL;
    int saved = c->timeout_ms, rc;

    msgpack_sbuffer_init(&sb);
    hello_pack(c, &sb);
    c->timeout_ms = CONNECT_TIMEOUT_MS;
    if (!sb.data || fl_wire_frame_end(&sb, 0, c->max_frame) != 0)
        rc = client_seterr(c, FLC_ENOMEM, "out of memory building the hello");
    else if ((rc = send_all(c, sb.data, sb.size)) == 0 &&
             (rc = client_wait_for(c, WANT_ID, 0, -1, &f)) == 0 &&
             (rc = client_reply_take(c, f, &res)) == 0 && !res)
        rc = c->err.code; /* refused: the server's reason is on the handle */
    c->timeout_ms = saved;
    if (sb.data)
        explicit_bzero(sb.data, sb.size); /* the token */
    msgpack_sbuffer_destroy(&sb);
    if (rc == FLC_ETIMEOUT)
        rc = client_fatal(c, FLC_ECONNECTION, "no answer to the handshake in %d ms",
                          CONNECT_TIMEOUT_MS);
    if (rc == 0 && c->tenant) {
        if (!(tenant = hello_str(res, "tenant")))
            rc = client_fatal(c, FLC_ENOMEM, "out of memory");
        else if (strcmp(tenant, c->tenant) != 0)
            rc = client_fatal(c, FLC_ECONNECTION,
                              "connected again, the server now puts this token in tenant \"%s\", "
                              "not \"%s\": not going on",
                              tenant, c->tenant);
        free(tenant);
    }
    if (rc == 0 && (hello_keep(c, &c->tenant, res, "tenant") != 0 ||
                    hello_keep(c, &c->role, res, "role") != 0 ||
                    hello_keep(c, &c->server_name, res, "server") != 0))
        rc = client_fatal(c, FLC_ENOMEM, "out of memory");
    client_frame_free(c->cur); /* the hello reply: not a result the caller asked for */
    c->cur = NULL;
    return rc;
}

/* Connect to c->server and say hello: the way in of flc_connect and of every reconnect. 0, or
 * a code (the handle is then dead). */
static int conn_open(flc_client *c)
{
    int64_t deadline = now_ms() + CONNECT_TIMEOUT_MS;
    int rc;

    if (strncmp(c->server, "unix:", 5) == 0)
        rc = connect_unix(c, c->server + 5, deadline);
    else
        rc = connect_tcp(c, c->server, deadline);
    if (rc == 0)
        rc = handshake(c);
    if (rc != 0 && !c->dead)
        (void)mark_dead(c); /* e.g. a usage error or a refused handshake: of no further use */
    if (rc == 0)
        c->helloed = 1;
    return rc;
}

/* qsort order of request ids. */
static int id_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Is a reply to id queued? */
static int reply_queued(const flc_client *c, uint64_t id)
{
    for (const struct frame *f = c->replies.head; f; f = f->next)
        if (f->id == id)
            return 1;
    return 0;
}

/* The connection is going: the *_send requests it has not answered never will be. They move
 * from pending to lost, in sending order (ids grow), for flc_reply_next to report one by one;
 * those whose replies came stay pending, their replies queued. */
static int pending_lose(flc_client *c)
{
    size_t keep = 0, first;

    if (c->lost_next == c->nlost)
        c->lost_next = c->nlost = 0;
    if (c->nlost + c->npending > c->cap_lost) {
        size_t cap = c->nlost + c->npending;
        uint64_t *p = realloc(c->lost, cap * sizeof *p);
        if (!p)
            return client_seterr(c, FLC_ENOMEM, "out of memory");
        c->lost = p;
        c->cap_lost = cap;
    }
    first = c->nlost;
    for (size_t i = 0; i < c->npending; i++) {
        if (reply_queued(c, c->pending[i]))
            c->pending[keep++] = c->pending[i];
        else
            c->lost[c->nlost++] = c->pending[i];
    }
    c->npending = keep;
    if (c->nlost > first) /* c->lost may still be NULL: qsort must not see it */
        qsort(c->lost + first, c->nlost - first, sizeof *c->lost, id_cmp);
    return 0;
}

/* Replace the connection by a new one to the same server, with the same token and tenant; why:
 * the close that calls for it (NULL: flc_reconnect). What the old one carried ends with it:
 * replies already received stay queued, *_send requests still unanswered become lost, an open
 * subscription is lost (RECONNECTING in flowlog.h). 0, or a code: the handle is then dead, why
 * and the failure in its message. */
static int conn_again(flc_client *c, const char *why)
{
    struct fl_error e;
    int rc;

    if (!c->dead) /* replies that did arrive are handed out, not reported lost */
        (void)conn_probe(c, 1);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->rpos = c->rbuf.len = 0; /* part of a frame of the old connection: nothing on the new one */
    client_fq_clear(&c->pushes);
    if (c->sub == SUB_OPEN) {
        c->sub = SUB_LOST;
        snprintf(c->sub_why, sizeof c->sub_why, "flc_reconnect replaced the connection");
    }
    if (pending_lose(c) != 0)
        return mark_dead(c);
    c->dead = 0;
    c->peer_closed = 0;
    fl_error_clear(&c->err);
    if ((rc = conn_open(c)) == 0)
        return 0;
    if (why) {
        e = c->err;
        client_seterr(c, e.code, "%s; connecting again failed: %s", why, e.msg);
        c->dead_err = c->err;
    }
    return rc;
}

/* hiredis-style: always a handle (NULL only without memory), the failure kept on it. */
flc_client *flc_connect(const char *server, const char *token, const char *tenant)
{
    flc_client *c = calloc(1, sizeof *c);

    if (!c)
        return NULL;
    c->fd = -1;
    c->max_frame = DEFAULT_MAX_FRAME;
    c->next_id = 1;
    c->reconnect = 1;
    fl_error_clear(&c->err);
    msgpack_sbuffer_init(&c->wbuf);
    msgpack_packer_init(&c->pk, &c->wbuf, msgpack_sbuffer_write);
    if (!server || !token) {
        client_seterr(c, FLC_EUSAGE, "a server address and a token are needed");
        (void)mark_dead(c);
        return c;
    }
    /* Kept for connecting again (flc_reconnect, automatic reconnect). */
    c->server = strdup(server);
    c->token = strdup(token);
    c->want_tenant = tenant ? strdup(tenant) : NULL;
    if (!c->server || !c->token || (tenant && !c->want_tenant)) {
        free(c->server);
        free(c->token);
        free(c->want_tenant);
        c->server = c->token = c->want_tenant = NULL;
        client_seterr(c, FLC_ENOMEM, "out of memory");
        (void)mark_dead(c);
        return c;
    }
    (void)conn_open(c);
    return c;
}

/* Explicit, so also on a handle whose connection is fine, or whose first connect failed. */
int flc_reconnect(flc_client *c)
{
    client_frame_free(c->cur);
    c->cur = NULL;
    fl_error_clear(&c->err);
    if (!c->server)
        return client_seterr(c, FLC_EUSAGE,
                             "this handle has no server to connect to (flc_connect failed first)");
    return conn_again(c, NULL);
}

void flc_set_reconnect(flc_client *c, int on)
{
    c->reconnect = on != 0;
}

/* Results are borrowed from the handle, so they go with it. */
void flc_free(flc_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    client_frame_free(c->cur);
    client_fq_clear(&c->replies);
    client_fq_clear(&c->pushes);
    fl_buf_free(&c->rbuf);
    msgpack_sbuffer_destroy(&c->wbuf);
    free(c->pending);
    free(c->lost);
    free(c->server);
    if (c->token)
        explicit_bzero(c->token, strlen(c->token));
    free(c->token);
    free(c->want_tenant);
    for (size_t i = 0; i < c->nretired; i++)
        free(c->retired[i]);
    free(c->retired);
    free(c->tenant);
    free(c->role);
    free(c->server_name);
    free(c);
}

/* Negative values mean "no timeout", as 0 does. */
void flc_set_timeout(flc_client *c, int ms)
{
    c->timeout_ms = ms > 0 ? ms : 0;
}

/* A frame length is a u32: larger limits mean nothing. */
void flc_set_max_frame(flc_client *c, size_t bytes)
{
    c->max_frame = bytes > UINT32_MAX ? UINT32_MAX : bytes;
}

/* For callers that poll several sources (the CLI's pipelined append waits on stdin too); a new
 * connection has a new socket, so callers ask again before each poll. */
int flc_fd(const flc_client *c)
{
    return c->fd;
}

/* The handshake's strings, never NULL. */
const char *flc_tenant(const flc_client *c)
{
    return c->tenant ? c->tenant : empty;
}

const char *flc_role(const flc_client *c)
{
    return c->role ? c->role : empty;
}

const char *flc_server_name(const flc_client *c)
{
    return c->server_name ? c->server_name : empty;
}
