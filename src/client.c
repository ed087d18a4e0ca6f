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

#include "err.h"
#include "util.h"
#include "wire.h"

#define CONNECT_TIMEOUT_MS 10000
#define DEFAULT_MAX_FRAME ((size_t)64 * 1024 * 1024)
#define READ_CHUNK (64 * 1024)

/* One received frame: its bytes and their decoded tree (strings point into bytes). */
struct frame {
    struct frame *next;
    uint64_t id;
    int id_nil;  /* the server's "id": nil: a connection-level error */
    int is_push; /* has a "push" key */
    uint8_t *bytes;
    msgpack_unpacked u;
};

/* A FIFO of frames. */
struct fqueue {
    struct frame *head, *tail;
};

struct flc_client {
    int fd;
    int dead; /* after a connection-level failure every call repeats dead_err... */
    struct fl_error dead_err; /* ...once the replies already received are handed out */
    int timeout_ms;
    size_t max_frame;
    uint64_t next_id;
    struct fl_error err;

    char *tenant, *role, *server_name;

    struct fl_buf rbuf; /* bytes received, from rpos on not yet framed */
    size_t rpos;
    msgpack_sbuffer wbuf; /* the request being built */
    msgpack_packer pk;

    struct frame *cur;
    struct fqueue replies, pushes;

    uint64_t *pending; /* ids sent with *_send, reply not yet handed out */
    size_t npending, cap_pending;

    int subscribed;
    uint64_t sub_id;
};

/* What a wait is waiting for. */
enum want { WANT_ID, WANT_PENDING, WANT_PUSH };

static const char empty[] = "";

/* ---- errors ---- */

/* Set the handle's error; returns code so callers can `return seterr(...)`. */
__attribute__((format(printf, 3, 4))) static int seterr(flc_client *c, int code, const char *fmt,
                                                        ...)
{
    va_list ap;

    va_start(ap, fmt);
    fl_error_vset(&c->err, code, fmt, ap);
    va_end(ap);
    c->err.index = -1;
    c->err.version = -1;
    return code;
}

/* The handle's current error becomes final: close the socket; later calls repeat the error. */
static int mark_dead(flc_client *c)
{
    c->dead = 1;
    c->dead_err = c->err;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    return c->err.code;
}

/* A connection-level failure: set the error and mark the handle dead. */
__attribute__((format(printf, 3, 4))) static int fatal(flc_client *c, int code, const char *fmt,
                                                       ...)
{
    va_list ap;

    va_start(ap, fmt);
    fl_error_vset(&c->err, code, fmt, ap);
    va_end(ap);
    c->err.index = -1;
    c->err.version = -1;
    return mark_dead(c);
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
static void frame_free(struct frame *f)
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
static void fq_clear(struct fqueue *q)
{
    struct frame *f;

    while ((f = fq_pop(q)) != NULL)
        frame_free(f);
}

/* The decoded map of a frame. */
static const msgpack_object *frame_obj(const struct frame *f)
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
static int pending_add(flc_client *c, uint64_t id)
{
    if (c->npending == c->cap_pending) {
        size_t cap = c->cap_pending ? c->cap_pending * 2 : 64;
        uint64_t *p = realloc(c->pending, cap * sizeof *p);
        if (!p)
            return seterr(c, FLC_ENOMEM, "out of memory");
        c->pending = p;
        c->cap_pending = cap;
    }
    c->pending[c->npending++] = id;
    return 0;
}

/* Forget a pending id (its reply was handed out). */
static void pending_remove(flc_client *c, uint64_t id)
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

/* Read what the socket has (at most one chunk) into rbuf. 0, or a fatal code on EOF/error. */
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
        return fatal(c, FLC_ENOMEM, "out of memory buffering a reply");
    do
        n = recv(c->fd, c->rbuf.p + c->rbuf.len, READ_CHUNK, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n < 0)
        return fatal(c, FLC_ECONNECTION, "receive failed: %s", strerror(errno));
    if (n == 0)
        return fatal(c, FLC_ECONNECTION, "the server closed the connection");
    c->rbuf.len += (size_t)n;
    return 0;
}

/* Read the "id" and the kind of a decoded frame. */
static int frame_classify(flc_client *c, struct frame *f)
{
    const msgpack_object *o = frame_obj(f), *id;

    if (o->type != MSGPACK_OBJECT_MAP)
        return fatal(c, FLC_EPROTOCOL, "protocol error: a reply is not a map");
    id = fl_wire_get(o, "id");
    if (id && id->type == MSGPACK_OBJECT_NIL)
        f->id_nil = 1;
    else if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        f->id = id->via.u64;
    else
        return fatal(c, FLC_EPROTOCOL, "protocol error: a reply has no valid \"id\"");
    f->is_push = fl_wire_get(o, "push") != NULL;
    if (!f->is_push && !fl_wire_get(o, "ok"))
        return fatal(c, FLC_EPROTOCOL, "protocol error: a reply has no \"ok\"");
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
        return fatal(c, FLC_EPROTOCOL, "protocol error: reply frame of %u bytes (limit %zu)",
                     len, c->max_frame);
    if (avail - FL_FRAME_HDR < len)
        return 0;
    f = calloc(1, sizeof *f);
    if (!f || !(f->bytes = malloc(len))) {
        free(f);
        return fatal(c, FLC_ENOMEM, "out of memory decoding a reply");
    }
    msgpack_unpacked_init(&f->u);
    memcpy(f->bytes, c->rbuf.p + c->rpos + FL_FRAME_HDR, len);
    c->rpos += FL_FRAME_HDR + len;
    fl_error_clear(&e);
    if (fl_wire_decode(f->bytes, len, &f->u, &e) != 0) {
        frame_free(f);
        return fatal(c, FLC_EPROTOCOL, "protocol error: undecodable reply: %s", e.msg);
    }
    if (frame_classify(c, f) != 0) {
        frame_free(f);
        return c->err.code;
    }
    *out = f;
    return 1;
}

/* Wait until deadline for one frame. 0 with *out, FLC_ETIMEOUT, or a fatal code. */
static int frame_read(flc_client *c, int64_t deadline, struct frame **out)
{
    for (;;) {
        int rc = frame_take(c, out);
        if (rc != 0)
            return rc > 0 ? 0 : rc;
        if (c->dead) { /* nothing more will come: the bytes received were all there was */
            c->err = c->dead_err;
            return c->err.code;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        rc = poll(&p, 1, ms_left(deadline));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return fatal(c, FLC_ECONNECTION, "poll failed: %s", strerror(errno));
        if (rc == 0)
            return seterr(c, FLC_ETIMEOUT, "no reply from the server in time");
        if ((rc = recv_some(c)) != 0)
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
    return fatal(c, FLC_ECONNECTION, "send failed: %s", strerror(err));
}

/* Send all of buf, reading replies meanwhile so that neither side can block the other. */
static int send_all(flc_client *c, const char *buf, size_t len)
{
    int64_t deadline = deadline_for(c, -1);

    if (c->fd < 0) /* never poll a closed socket: that would wait for ever */
        return fatal(c, FLC_ECONNECTION, "not connected");
    while (len > 0) {
        struct pollfd p = {.fd = c->fd, .events = POLLOUT | POLLIN};
        int rc = poll(&p, 1, ms_left(deadline));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return fatal(c, FLC_ECONNECTION, "poll failed: %s", strerror(errno));
        if (rc == 0)
            return fatal(c, FLC_ECONNECTION, "timed out sending a request");
        if (p.revents & POLLIN) {
            if ((rc = recv_some(c)) != 0)
                return rc;
        }
        if (!(p.revents & (POLLOUT | POLLERR | POLLHUP)))
            continue;
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n < 0)
            return send_failed(c, errno);
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- requests ---- */

/* Start building request {"id", "op", ...} with nargs further keys; returns its id. */
static uint64_t req_begin(flc_client *c, const char *op, uint32_t nargs)
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
static void pack_kv_str(flc_client *c, const char *key, const char *val)
{
    fl_wire_pack_cstr(&c->pk, key);
    fl_wire_pack_cstr(&c->pk, val);
}

/* Pack "key": unsigned. */
static void pack_kv_u64(flc_client *c, const char *key, uint64_t val)
{
    fl_wire_pack_cstr(&c->pk, key);
    msgpack_pack_uint64(&c->pk, val);
}

/* Finish the frame and send it. */
static int req_send(flc_client *c)
{
    if (!c->wbuf.data)
        return seterr(c, FLC_ENOMEM, "out of memory building a request");
    if (fl_wire_frame_end(&c->wbuf, 0, c->max_frame) != 0)
        return seterr(c, FLC_ETOO_LARGE, "request of %zu bytes exceeds the frame limit %zu",
                      c->wbuf.size - FL_FRAME_HDR, c->max_frame);
    return send_all(c, c->wbuf.data, c->wbuf.size);
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
        return seterr(c, FLC_EPROTOCOL, "protocol error: an error reply without a code");
    rc = fl_err_from_name(code->via.str.ptr, code->via.str.size);
    if (msg && msg->type == MSGPACK_OBJECT_STR)
        seterr(c, rc, "%.*s", (int)msg->via.str.size, mp_str(msg));
    else
        seterr(c, rc, "%.*s", (int)code->via.str.size, mp_str(code));
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
        (void)error_from_reply(c, frame_obj(f));
        frame_free(f);
        return mark_dead(c);
    }
    if (f->is_push) {
        if (c->subscribed && f->id == c->sub_id)
            fq_push(&c->pushes, f);
        else
            frame_free(f); /* a push still in flight after unsubscribe */
        return 0;
    }
    if (kind == WANT_ID && f->id == id)
        return 1;
    if (pending_find(c, f->id) >= 0)
        fq_push(&c->replies, f);
    else if (c->subscribed && f->id == c->sub_id)
        fq_push(&c->pushes, f); /* the subscription ended with an error */
    else
        frame_free(f); /* the late reply of a call that timed out */
    return 0;
}

/* Wait for what kind/id names, taking queued frames first. 0 with *out, or a code. */
static int wait_for(flc_client *c, enum want kind, uint64_t id, int timeout_ms,
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

/* ---- the call cycle ---- */

/* Start a call: release the previous result; a dead handle repeats its error. */
static int call_begin(flc_client *c)
{
    frame_free(c->cur);
    c->cur = NULL;
    if (c->dead) {
        c->err = c->dead_err;
        return c->err.code;
    }
    fl_error_clear(&c->err);
    return 0;
}

/* Hand out a reply frame: *res is its result (owned by c->cur), or NULL with the server's
 * error on the handle. Returns 0, or a fatal code for a malformed reply. */
static int reply_take(flc_client *c, struct frame *f, const msgpack_object **res)
{
    const msgpack_object *ok = fl_wire_get(frame_obj(f), "ok");

    *res = NULL;
    if (ok->type != MSGPACK_OBJECT_BOOLEAN) {
        frame_free(f);
        return fatal(c, FLC_EPROTOCOL, "protocol error: \"ok\" is not a boolean");
    }
    if (!ok->via.boolean) {
        (void)error_from_reply(c, frame_obj(f));
        frame_free(f);
        return 0;
    }
    c->cur = f;
    if (!(*res = fl_wire_get(frame_obj(f), "result")))
        return fatal(c, FLC_EPROTOCOL, "protocol error: a success reply without \"result\"");
    return 0;
}

/* reply_take for callers that only need the result. */
static const msgpack_object *reply_result(flc_client *c, struct frame *f)
{
    const msgpack_object *res;

    return reply_take(c, f, &res) == 0 ? res : NULL;
}

/* Send the request built in wbuf and wait for its reply. */
static const msgpack_object *call_finish(flc_client *c, uint64_t id)
{
    struct frame *f = NULL;

    if (req_send(c) != 0 || wait_for(c, WANT_ID, id, -1, &f) != 0)
        return NULL;
    return reply_result(c, f);
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
            return seterr(c, FLC_EUSAGE, "bad server address '%s': missing ']'", s);
        h = s + 1;
        hlen = (size_t)(end - h);
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] != '\0' && !colon)
            return seterr(c, FLC_EUSAGE, "bad server address '%s'", s);
    } else {
        colon = strrchr(s, ':');
        if (colon && strchr(s, ':') != colon)
            colon = NULL; /* a bare IPv6 address */
        hlen = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (hlen == 0 || hlen >= hostsz)
        return seterr(c, FLC_EUSAGE, "bad server address '%s': bad host", s);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (!colon) {
        snprintf(port, portsz, "%d", FLC_DEFAULT_PORT);
        return 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535)
        return seterr(c, FLC_EUSAGE, "bad server address '%s': bad port", s);
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
        return seterr(c, FLC_EUSAGE, "bad unix socket path '%s' (1..%zu bytes)", path,
                      sizeof sun.sun_path - 1);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    c->fd = connect_addr((struct sockaddr *)&sun, sizeof sun, AF_UNIX, deadline, &err);
    if (c->fd < 0)
        return fatal(c, FLC_ECONNECTION, "cannot connect to unix:%s: %s", path, strerror(err));
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
        return fatal(c, FLC_ECONNECTION, "cannot resolve '%s': %s", host, gai_strerror(rc));
    for (ai = res; ai && c->fd < 0; ai = ai->ai_next)
        c->fd = connect_addr(ai->ai_addr, ai->ai_addrlen, ai->ai_family, deadline, &err);
    freeaddrinfo(res);
    if (c->fd < 0)
        return fatal(c, FLC_ECONNECTION, "cannot connect to %s: %s", server, strerror(err));
    /* Requests are small and a reply is awaited: never let Nagle hold one back. */
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        return fatal(c, FLC_ECONNECTION, "setsockopt(TCP_NODELAY): %s", strerror(errno));
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

/* Say hello and keep what the server says about us. */
static int handshake(flc_client *c, const char *token, const char *tenant)
{
    const msgpack_object *res;
    int saved = c->timeout_ms;

    msgpack_sbuffer_clear(&c->wbuf);
    (void)fl_wire_frame_begin(&c->wbuf);
    msgpack_pack_map(&c->pk, tenant ? 5 : 4);
    pack_kv_u64(c, "id", 0);
    pack_kv_str(c, "op", "hello");
    pack_kv_u64(c, "version", FLC_PROTOCOL_VERSION);
    pack_kv_str(c, "token", token);
    if (tenant)
        pack_kv_str(c, "tenant", tenant);
    c->timeout_ms = CONNECT_TIMEOUT_MS;
    res = call_finish(c, 0);
    c->timeout_ms = saved;
    if (!res) {
        if (c->err.code == FLC_ETIMEOUT)
            return fatal(c, FLC_ECONNECTION, "no answer to the handshake in %d ms",
                         CONNECT_TIMEOUT_MS);
        return c->err.code;
    }
    free(c->tenant);
    free(c->role);
    free(c->server_name);
    c->tenant = hello_str(res, "tenant");
    c->role = hello_str(res, "role");
    c->server_name = hello_str(res, "server");
    if (!c->tenant || !c->role || !c->server_name)
        return fatal(c, FLC_ENOMEM, "out of memory");
    return 0;
}

/* hiredis-style: always a handle (NULL only without memory), the failure kept on it. */
flc_client *flc_connect(const char *server, const char *token, const char *tenant)
{
    flc_client *c = calloc(1, sizeof *c);
    int64_t deadline = now_ms() + CONNECT_TIMEOUT_MS;
    int rc;

    if (!c)
        return NULL;
    c->fd = -1;
    c->max_frame = DEFAULT_MAX_FRAME;
    c->next_id = 1;
    fl_error_clear(&c->err);
    msgpack_sbuffer_init(&c->wbuf);
    msgpack_packer_init(&c->pk, &c->wbuf, msgpack_sbuffer_write);
    if (!server || !token) {
        seterr(c, FLC_EUSAGE, "a server address and a token are needed");
        (void)mark_dead(c);
        return c;
    }
    if (strncmp(server, "unix:", 5) == 0)
        rc = connect_unix(c, server + 5, deadline);
    else
        rc = connect_tcp(c, server, deadline);
    if (rc == 0)
        rc = handshake(c, token, tenant);
    if (rc != 0 && !c->dead)
        (void)mark_dead(c); /* e.g. a usage error or a refused handshake: of no further use */
    return c;
}

/* Results are borrowed from the handle, so they go with it. */
void flc_free(flc_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    frame_free(c->cur);
    fq_clear(&c->replies);
    fq_clear(&c->pushes);
    fl_buf_free(&c->rbuf);
    msgpack_sbuffer_destroy(&c->wbuf);
    free(c->pending);
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

/* For callers that poll several sources (the CLI's pipelined append waits on stdin too). */
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

/* ---- operations ---- */

/* The cheapest round trip: checks the connection and the token's session. */
const msgpack_object *flc_ping(flc_client *c)
{
    if (call_begin(c) != 0)
        return NULL;
    return call_finish(c, req_begin(c, "ping", 0));
}

/* Check the caller's events before anything is built: each must be one msgpack object, so
 * that a bad one cannot corrupt the framing of the request. */
static int check_events(flc_client *c, const struct flc_event *events, size_t n)
{
    struct fl_error e;

    if (!events || n == 0)
        return seterr(c, FLC_EUSAGE, "an append needs at least one event");
    if (n > UINT32_MAX)
        return seterr(c, FLC_EUSAGE, "too many events");
    for (size_t i = 0; i < n; i++) {
        fl_error_clear(&e);
        if (!events[i].msgpack || fl_wire_check(events[i].msgpack, events[i].len, &e) != 0) {
            seterr(c, FLC_EUSAGE, "event %zu is not one well-formed msgpack object: %s", i,
                   events[i].msgpack ? e.msg : "NULL");
            c->err.index = (int64_t)i;
            return FLC_EUSAGE;
        }
    }
    return 0;
}

/* Pack {"events": [...]} (checked events) into the request. */
static void pack_events(flc_client *c, const struct flc_event *events, size_t n)
{
    fl_wire_pack_cstr(&c->pk, "events");
    msgpack_pack_array(&c->pk, n);
    for (size_t i = 0; i < n; i++)
        msgpack_sbuffer_write(&c->wbuf, events[i].msgpack, events[i].len);
}

/* One atomic append; the events are copied into the request as they are. */
const msgpack_object *flc_append(flc_client *c, const struct flc_event *events, size_t n)
{
    uint64_t id;

    if (call_begin(c) != 0 || check_events(c, events, n) != 0)
        return NULL;
    id = req_begin(c, "append", 1);
    pack_events(c, events, n);
    return call_finish(c, id);
}

const msgpack_object *flc_rollback(flc_client *c, const char *flow_id, uint64_t to_seq,
                                   const char *reason, const char *event_id)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct flc_event ev;
    const msgpack_object *res;

    if (!flow_id || !reason) {
        (void)call_begin(c);
        seterr(c, FLC_EUSAGE, "a rollback needs a flow_id and a reason");
        return NULL;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, event_id ? 3 : 2);
    fl_wire_pack_cstr(&pk, "type");
    fl_wire_pack_cstr(&pk, "flow_rollback");
    if (event_id) {
        fl_wire_pack_cstr(&pk, "event_id");
        fl_wire_pack_cstr(&pk, event_id);
    }
    fl_wire_pack_cstr(&pk, "data");
    msgpack_pack_map(&pk, 3);
    fl_wire_pack_cstr(&pk, "flow_id");
    fl_wire_pack_cstr(&pk, flow_id);
    fl_wire_pack_cstr(&pk, "to_seq");
    msgpack_pack_uint64(&pk, to_seq);
    fl_wire_pack_cstr(&pk, "reason");
    fl_wire_pack_cstr(&pk, reason);
    ev.msgpack = sb.data;
    ev.len = sb.size;
    res = flc_append(c, &ev, 1);
    msgpack_sbuffer_destroy(&sb);
    return res;
}

/* Number of filter keys q will send (limit only when with_limit). */
static uint32_t query_nargs(const struct flc_query *q, int with_limit)
{
    return (q->from != 0) + (with_limit && q->limit != 0) + (q->type != NULL) +
           (q->flow_id != NULL) + (q->run_id != NULL);
}

/* Pack the filter keys of q. */
static void pack_query(flc_client *c, const struct flc_query *q, int with_limit)
{
    if (q->from)
        pack_kv_u64(c, "from", q->from);
    if (with_limit && q->limit)
        pack_kv_u64(c, "limit", q->limit);
    if (q->type)
        pack_kv_str(c, "type", q->type);
    if (q->flow_id)
        pack_kv_str(c, "flow_id", q->flow_id);
    if (q->run_id)
        pack_kv_str(c, "run_id", q->run_id);
}

/* log and timeline share their request shape. */
static const msgpack_object *query_call(flc_client *c, const char *op, const struct flc_query *q)
{
    static const struct flc_query none;
    uint64_t id;

    if (call_begin(c) != 0)
        return NULL;
    if (!q)
        q = &none;
    id = req_begin(c, op, query_nargs(q, 1));
    pack_query(c, q, 1);
    return call_finish(c, id);
}

/* One page; the caller follows "next" (the CLI's page_events shows how). */
const msgpack_object *flc_log(flc_client *c, const struct flc_query *q)
{
    return query_call(c, "log", q);
}

/* Checked here so that a missing run/flow is a usage error, not a round trip. */
const msgpack_object *flc_timeline(flc_client *c, const struct flc_query *q)
{
    if (!q || (!q->run_id && !q->flow_id)) {
        (void)call_begin(c);
        seterr(c, FLC_EUSAGE, "a timeline needs a run_id or a flow_id");
        return NULL;
    }
    return query_call(c, "timeline", q);
}

/* state with an optional as-of (kind 0: now, 1: seq, 2: time). */
static const msgpack_object *state_call(flc_client *c, const char *flow_id, int kind,
                                        uint64_t seq, int64_t us)
{
    uint64_t id;

    if (call_begin(c) != 0)
        return NULL;
    if (!flow_id) {
        seterr(c, FLC_EUSAGE, "state needs a flow_id");
        return NULL;
    }
    id = req_begin(c, "state", kind ? 2 : 1);
    pack_kv_str(c, "flow_id", flow_id);
    if (kind == 1)
        pack_kv_u64(c, "as_of_seq", seq);
    if (kind == 2) {
        fl_wire_pack_cstr(&c->pk, "as_of_time");
        fl_wire_pack_ts(&c->pk, us);
    }
    return call_finish(c, id);
}

/* The three state reads share state_call. */
const msgpack_object *flc_state(flc_client *c, const char *flow_id)
{
    return state_call(c, flow_id, 0, 0, 0);
}

const msgpack_object *flc_state_at_seq(flc_client *c, const char *flow_id, uint64_t seq)
{
    return state_call(c, flow_id, 1, seq, 0);
}

const msgpack_object *flc_state_at_time(flc_client *c, const char *flow_id, int64_t us)
{
    return state_call(c, flow_id, 2, 0, us);
}

/* limit 0 leaves the default to the server. */
const msgpack_object *flc_history(flc_client *c, const char *flow_id, uint32_t limit)
{
    uint64_t id;

    if (call_begin(c) != 0)
        return NULL;
    if (!flow_id) {
        seterr(c, FLC_EUSAGE, "history needs a flow_id");
        return NULL;
    }
    id = req_begin(c, "history", limit ? 2 : 1);
    pack_kv_str(c, "flow_id", flow_id);
    if (limit)
        pack_kv_u64(c, "limit", limit);
    return call_finish(c, id);
}

/* "after" is the previous page's opaque "next", sent back as bin. */
const msgpack_object *flc_table(flc_client *c, const struct flc_table_query *q)
{
    uint64_t id;

    if (call_begin(c) != 0)
        return NULL;
    if (!q || !q->table || (!q->column != !q->value)) {
        seterr(c, FLC_EUSAGE, "a table read needs a table, and a column together with a value");
        return NULL;
    }
    id = req_begin(c, "table", 1 + (q->column ? 2 : 0) + (q->after != NULL) + (q->limit != 0));
    pack_kv_str(c, "table", q->table);
    if (q->column) {
        pack_kv_str(c, "column", q->column);
        pack_kv_str(c, "value", q->value);
    }
    if (q->after) {
        fl_wire_pack_cstr(&c->pk, "after");
        msgpack_pack_bin(&c->pk, q->after_len);
        msgpack_pack_bin_body(&c->pk, q->after, q->after_len);
    }
    if (q->limit)
        pack_kv_u64(c, "limit", q->limit);
    return call_finish(c, id);
}

/* Can take a while on a big store: the handle's timeout applies. */
const msgpack_object *flc_verify(flc_client *c)
{
    if (call_begin(c) != 0)
        return NULL;
    return call_finish(c, req_begin(c, "verify", 0));
}

/* The counters are the server's; the library does not interpret them. */
const msgpack_object *flc_stats(flc_client *c)
{
    if (call_begin(c) != 0)
        return NULL;
    return call_finish(c, req_begin(c, "stats", 0));
}

/* ---- pipelining ---- */

/* Send the built request without waiting and remember its id as pending. */
static uint64_t send_pending(flc_client *c, uint64_t id)
{
    if (pending_add(c, id) != 0)
        return 0;
    if (req_send(c) != 0) {
        pending_remove(c, id);
        return 0;
    }
    return id;
}

/* The id is how the caller will recognise the reply in flc_reply_next. */
uint64_t flc_append_send(flc_client *c, const struct flc_event *events, size_t n)
{
    uint64_t id;

    if (call_begin(c) != 0 || check_events(c, events, n) != 0)
        return 0;
    id = req_begin(c, "append", 1);
    pack_events(c, events, n);
    return send_pending(c, id);
}

/* A pipelined ping: lets a pipelining caller measure or keep the connection alive. */
uint64_t flc_ping_send(flc_client *c)
{
    if (call_begin(c) != 0)
        return 0;
    return send_pending(c, req_begin(c, "ping", 0));
}

/* Replies already received but not yet handed out count as pending. */
size_t flc_pending(const flc_client *c)
{
    return c->npending;
}

/* Arrival order, not sending order: the server answers reads at once, appends after commit. */
int flc_reply_next(flc_client *c, int timeout_ms, uint64_t *id, const msgpack_object **result)
{
    struct frame *f = NULL;
    int rc;

    *result = NULL;
    /* Not call_begin: a dead handle still hands out the replies it received before dying. */
    frame_free(c->cur);
    c->cur = NULL;
    if (c->dead)
        c->err = c->dead_err;
    else
        fl_error_clear(&c->err);
    if (c->npending == 0)
        return c->dead ? c->err.code : 0;
    rc = wait_for(c, WANT_PENDING, 0, timeout_ms, &f);
    if (rc == FLC_ETIMEOUT) {
        fl_error_clear(&c->err);
        return 0;
    }
    if (rc != 0)
        return rc;
    *id = f->id;
    pending_remove(c, f->id);
    if ((rc = reply_take(c, f, result)) != 0)
        return rc;
    return 1;
}

/* ---- subscriptions ---- */

/* One subscription per handle keeps the iterator simple; open more handles for more. */
int flc_subscribe(flc_client *c, const struct flc_query *q)
{
    static const struct flc_query none;
    uint64_t id;
    int rc;

    if ((rc = call_begin(c)) != 0)
        return rc;
    if (c->subscribed)
        return seterr(c, FLC_EUSAGE, "this handle already has a subscription");
    if (!q)
        q = &none;
    id = req_begin(c, "subscribe", query_nargs(q, 0));
    pack_query(c, q, 0);
    /* Pushes may follow the reply at once: route them to the queue from now on. */
    c->subscribed = 1;
    c->sub_id = id;
    if (!call_finish(c, id)) {
        c->subscribed = 0;
        fq_clear(&c->pushes);
        return c->err.code;
    }
    return 0;
}

/* Pushes that arrived during other calls were queued; they come first, in order. */
const msgpack_object *flc_sub_next(flc_client *c, int timeout_ms)
{
    struct frame *f = NULL;
    const msgpack_object *res;

    if (call_begin(c) != 0)
        return NULL;
    if (!c->subscribed) {
        seterr(c, FLC_EUSAGE, "no subscription on this handle");
        return NULL;
    }
    if (wait_for(c, WANT_PUSH, 0, timeout_ms, &f) != 0)
        return NULL;
    if (f->is_push) {
        c->cur = f;
        res = fl_wire_get(frame_obj(f), "result");
        if (!res)
            (void)fatal(c, FLC_EPROTOCOL, "protocol error: a push without \"result\"");
        return res;
    }
    /* A reply to the subscribe id after its acknowledgement: the subscription ended. */
    c->subscribed = 0;
    res = reply_result(c, f);
    if (res)
        (void)seterr(c, FLC_EPROTOCOL, "protocol error: a second reply to the subscription");
    return NULL;
}

/* Queued pushes are dropped at once; late ones are dropped on arrival (frame_route). */
int flc_unsubscribe(flc_client *c)
{
    uint64_t id;
    int rc;

    if ((rc = call_begin(c)) != 0)
        return rc;
    if (!c->subscribed)
        return seterr(c, FLC_EUSAGE, "no subscription on this handle");
    id = req_begin(c, "unsubscribe", 1);
    pack_kv_u64(c, "sub", c->sub_id);
    c->subscribed = 0;
    fq_clear(&c->pushes);
    if (!call_finish(c, id))
        return c->err.code;
    return 0;
}

/* ---- reading results ---- */

/* A linear scan: result maps are small. */
const msgpack_object *flc_get(const msgpack_object *map, const char *key)
{
    return key ? fl_wire_get(map, key) : NULL;
}

/* Only the timestamp extension: results never carry times as integers or strings. */
int flc_ts_us(const msgpack_object *o, int64_t *us)
{
    if (!o || o->type != MSGPACK_OBJECT_EXT || o->via.ext.type != -1)
        return -1;
    return fl_wire_read_ts(o, us);
}
