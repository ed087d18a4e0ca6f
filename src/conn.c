/* conn.c: one client connection: frames in, replies and pushes out, flow control, lifetime. */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>

#include "diag.h"
#include "wire.h"

/* Replies at least this big are handed to the socket buffer without a copy. */
#define CONN_ZERO_COPY_MIN (64u * 1024)
#define CONN_PUSH_BYTES (256u * 1024)
/* While replies are in flight, the idle check looks this often whether the peer takes them. */
#define CONN_LOOK_MS 1000
/* Input is read CONN_READ_CHUNK bytes at a time (a request is usually far smaller; the
 * buffer's chain is freed when its frames are drained), and at most CONN_READ_MAX per turn of
 * the loop, so that one busy client cannot hold the loop (libevent's own reads took 4 KiB). */
#define CONN_READ_CHUNK (16u * 1024)
#define CONN_READ_MAX (64u * 1024)

static void conn_process_input(struct conn *c);
static void conn_set_closing(struct conn *c);
static void conn_reading(struct conn *c, int on);

/* Name the peer for diagnostics (never anything secret). */
static void conn_describe(struct conn *c, const struct sockaddr *sa, int salen)
{
    char host[INET6_ADDRSTRLEN] = "?";

    if (sa && sa->sa_family == AF_INET && salen >= (int)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(c->peer, sizeof c->peer, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa && sa->sa_family == AF_INET6 && salen >= (int)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(c->peer, sizeof c->peer, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(c->peer, sizeof c->peer, "unix socket");
    }
}

/* TCP_NODELAY: acks split across two commits would otherwise meet Nagle plus delayed ACK and
 * stall 40 ms (notes/dependencies.md 4.1). Keepalive notices peers that vanished. */
static void conn_tune_socket(evutil_socket_t fd, int family)
{
    int one = 1;

    if (family != AF_INET && family != AF_INET6)
        return;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        fl_warn("cannot set TCP_NODELAY: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0)
        fl_debug("cannot set SO_KEEPALIVE: %s",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static size_t conn_out_len(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

/* Reply bytes the peer has not received yet: our output buffer plus the kernel's send queue
 * (unsent and unacknowledged bytes, SIOCOUTQ). The output buffer alone says little: a loopback
 * socket's send buffer grows to megabytes, so a whole reply leaves it at once while the client
 * may take seconds to read it. */
static size_t conn_unsent(const struct conn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    int queued = 0;

    if (fd < 0 || ioctl(fd, TIOCOUTQ, &queued) != 0 || queued < 0)
        queued = 0;
    return conn_out_len(c) + (size_t)queued;
}

/* Milliseconds on a clock that never jumps, for the idle rule. */
static int64_t conn_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The output level at which reading resumes, and pushes' fill level: a quarter and half of
 * --max-output. Pushes never fill the output to the limit by themselves, so a subscriber's own
 * requests keep being read. */
static size_t conn_out_low(const struct conn *c)
{
    return (size_t)c->srv->cfg->max_output / 4;
}

static size_t conn_sub_fill(const struct conn *c)
{
    return (size_t)c->srv->cfg->max_output / 2;
}

/* The hard cap on queued output (conn.h): past it the peer is taken not to read at all. */
static size_t conn_out_hard(const struct conn *c)
{
    const struct config *cfg = c->srv->cfg;
    uint64_t cap = CONN_OUT_HARD_FACTOR * cfg->max_output;

    if (cap < cfg->max_output + cfg->max_frame)
        cap = cfg->max_output + cfg->max_frame;
    return (size_t)cap;
}

/* Stop reading while the peer does not take its replies (a socket bufferevent would not); give
 * up on a peer whose replies pile up past the hard cap anyway. Never closes in shutdown, which
 * serves everything received whatever the output. */
static void conn_check_output(struct conn *c)
{
    size_t len = conn_out_len(c);

    if (!c->paused && len > c->srv->cfg->max_output) {
        c->paused = 1;
        conn_reading(c, 0);
        fl_debug("conn %llu: output above %llu bytes: reading paused", (unsigned long long)c->id,
                 (unsigned long long)c->srv->cfg->max_output);
    }
    if (len > conn_out_hard(c) && c->state != CONN_CLOSING && !c->srv->stopping) {
        struct fl_error e;

        /* CLOSING first: queueing the error below comes back here. */
        conn_set_closing(c);
        c->srv->closed_not_reading++;
        fl_info("conn %llu (%s): closing: %zu bytes of replies not read (cap %zu)",
                (unsigned long long)c->id, c->peer, len, conn_out_hard(c));
        fl_error_clear(&e);
        fl_error_set(&e, FL_EUNAVAILABLE,
                     "closing: this connection does not read its replies (%zu bytes waiting, over "
                     "the %zu-byte cap, 4 x --max-output); read replies as they come",
                     len, conn_out_hard(c));
        conn_reply_error(c, -1, &e);
    }
}

/* Free callback for replies handed over without a copy. */
static void conn_free_chunk(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

/* Send a reply straight to the socket when nothing is queued before it: one added to the
 * bufferevent's output goes out only on the loop's next pass, after an epoll_ctl to watch for
 * writability and another to stop watching. Returns the bytes the socket took; the caller
 * queues the rest as before, so order holds and the queue's rules (pausing, the hard cap) see
 * it. Not while paused, blocked or closing: what those wait for is the write callback, which
 * fires only for the bufferevent's own writes. */
static size_t conn_send_now(struct conn *c, const char *p, size_t n)
{
    evutil_socket_t fd;
    ssize_t w;

    if (c->state == CONN_CLOSING || c->paused || c->blocked || conn_out_len(c) != 0 ||
        (fd = bufferevent_getfd(c->bev)) < 0)
        return 0;
    do
        w = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    return w > 0 ? (size_t)w : 0; /* an error is met again, and handled, by the bufferevent */
}

/* Move the finished frame in c->sb to the socket (conn_send_now) or its output buffer. */
static void conn_flush_sb(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t n = c->sb.size;
    int rc;

    if (n == 0)
        return;
    if (n >= CONN_ZERO_COPY_MIN) {
        char *p = msgpack_sbuffer_release(&c->sb);
        rc = evbuffer_add_reference(out, p, n, conn_free_chunk, NULL);
        if (rc != 0)
            free(p);
    } else {
        size_t sent = conn_send_now(c, c->sb.data, n);
        rc = sent < n ? evbuffer_add(out, c->sb.data + sent, n - sent) : 0;
        msgpack_sbuffer_clear(&c->sb);
    }
    if (rc != 0) {
        fl_errorf("conn %llu: out of memory queueing a reply: closing", (unsigned long long)c->id);
        conn_set_closing(c);
        return;
    }
    conn_check_output(c);
}

size_t conn_reply_begin(struct conn *c)
{
    return fl_wire_frame_begin(&c->sb);
}

void conn_reply_abort(struct conn *c, size_t off)
{
    c->sb.size = off;
    if (off == 0 && c->sb.alloc > CONN_ZERO_COPY_MIN) { /* don't keep a big buffer idle */
        msgpack_sbuffer_destroy(&c->sb);
        msgpack_sbuffer_init(&c->sb);
    }
}

void conn_reply_end_advise(struct conn *c, size_t off, uint64_t id, const char *advice)
{
    struct fl_error e;
    size_t size = c->sb.size - off;

    if (fl_wire_frame_end(&c->sb, off, c->srv->cfg->max_frame) != 0) {
        conn_reply_abort(c, off);
        fl_error_clear(&e);
        fl_error_set(&e, FL_ETOO_LARGE,
                     "the reply is %zu bytes, larger than the %llu-byte frame limit; %s", size,
                     (unsigned long long)c->srv->cfg->max_frame, advice);
        conn_reply_error(c, (int64_t)id, &e);
        return;
    }
    conn_flush_sb(c);
}

void conn_reply_end(struct conn *c, size_t off, uint64_t id)
{
    conn_reply_end_advise(c, off, id,
                          "ask for less (a smaller limit, or page with from/after), or have the "
                          "server's operator raise --max-frame");
}

void conn_reply_error(struct conn *c, int64_t id, const struct fl_error *e)
{
    size_t off = conn_reply_begin(c);

    fl_wire_pack_error(&c->pk, id, e);
    if (fl_wire_frame_end(&c->sb, off, SIZE_MAX) != 0) {
        conn_reply_abort(c, off);
        return;
    }
    conn_flush_sb(c);
}

void conn_fail(struct conn *c, int64_t id, int code, const char *fmt, ...)
{
    struct fl_error e;
    va_list ap;

    fl_error_clear(&e);
    va_start(ap, fmt);
    fl_error_vset(&e, code, fmt, ap);
    va_end(ap);
    fl_info("conn %llu (%s): closing after %s: %s", (unsigned long long)c->id, c->peer,
            fl_err_name(code), e.msg);
    conn_reply_error(c, id, &e);
    conn_set_closing(c);
}

/* Decode one frame and serve it. Takes buf. */
static void conn_handle_frame(struct conn *c, uint8_t *buf, size_t len)
{
    struct conn_req r;
    struct fl_error err;
    const msgpack_object *o;

    memset(&r, 0, sizeof r);
    fl_error_clear(&err);
    r.frame = buf;
    r.len = len;
    if (fl_wire_decode_in(buf, len, &c->srv->zone, &r.msg, &err) != 0) {
        conn_fail(c, -1, err.code ? err.code : FL_EBAD_REQUEST, "malformed frame: %s", err.msg);
        goto out;
    }
    if (r.msg.type != MSGPACK_OBJECT_MAP) {
        conn_fail(c, -1, FL_EBAD_REQUEST, "a frame must hold one msgpack map (a request)");
        goto out;
    }
    o = fl_wire_get(&r.msg, "id");
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > INT64_MAX) {
        fl_error_set(&err, FL_EBAD_REQUEST,
                     "every request needs \"id\": an unsigned integer below 2^63");
        if (c->state == CONN_HELLO)
            conn_fail(c, -1, FL_EUNAUTHENTICATED, "%s; the first must be hello", err.msg);
        else
            conn_reply_error(c, -1, &err);
        goto out;
    }
    r.id = o->via.u64;
    o = fl_wire_get(&r.msg, "op");
    if (!o || o->type != MSGPACK_OBJECT_STR) {
        fl_error_set(&err, FL_EBAD_REQUEST, "request %llu needs \"op\": a string such as \"log\"",
                     (unsigned long long)r.id);
        if (c->state == CONN_HELLO)
            conn_fail(c, (int64_t)r.id, FL_EUNAUTHENTICATED, "%s; the first must be hello",
                      err.msg);
        else
            conn_reply_error(c, (int64_t)r.id, &err);
        goto out;
    }
    r.op = o->via.str.ptr;
    r.op_len = o->via.str.size;
    conn_op_dispatch(c, &r);
out:
    msgpack_zone_clear(&c->srv->zone);
    free(r.frame);
}

/* Move the frame body after the header at the input's start to buf, then drop both. A frame
 * within the first chain (a small request, the usual case) is copied from there and drained
 * in one step: evbuffer_drain of the header and evbuffer_remove of the body were ~450
 * instructions a frame (callgrind, step/64). A pullup would copy a frame spread over chains
 * once more, so such a frame is removed as before. */
static int conn_take_frame(struct evbuffer *in, uint8_t *buf, uint32_t len)
{
    size_t all = FL_FRAME_HDR + (size_t)len;
    const unsigned char *p;

    if (evbuffer_get_contiguous_space(in) >= all && (p = evbuffer_pullup(in, (ev_ssize_t)all))) {
        memcpy(buf, p + FL_FRAME_HDR, len);
        return evbuffer_drain(in, all);
    }
    if (evbuffer_drain(in, FL_FRAME_HDR) != 0 || evbuffer_remove(in, buf, len) != (int)len)
        return -1;
    return 0;
}

/* Take one whole frame from the input if there is one: 1 served, 0 need more, -1 closing. */
static int conn_next_frame(struct conn *c)
{
    struct evbuffer *in = c->in;
    size_t avail = evbuffer_get_length(in), max = c->srv->cfg->max_frame;
    uint8_t hdr[FL_FRAME_HDR], *buf;
    uint32_t len;

    if (avail < FL_FRAME_HDR)
        return 0;
    if (evbuffer_copyout(in, hdr, FL_FRAME_HDR) != FL_FRAME_HDR) {
        conn_fail(c, -1, FL_EINTERNAL, "cannot read a frame header");
        return -1;
    }
    len = fl_wire_frame_len(hdr);
    if (c->state == CONN_HELLO && max > CONN_HELLO_MAX_FRAME)
        max = CONN_HELLO_MAX_FRAME;
    if (len == 0) {
        conn_fail(c, -1, FL_EBAD_REQUEST, "frame length 0: a frame carries one msgpack map");
        return -1;
    }
    if (len > max) {
        conn_fail(c, -1, FL_ETOO_LARGE, "frame of %u bytes is over the %zu-byte limit%s", len, max,
                  c->state == CONN_HELLO ? " before hello" : "");
        return -1;
    }
    if (avail - FL_FRAME_HDR < len)
        return 0;
    buf = malloc(len);
    if (!buf) {
        conn_fail(c, -1, FL_EUNAVAILABLE, "server out of memory; retry later");
        return -1;
    }
    if (conn_take_frame(in, buf, len) != 0) {
        free(buf);
        conn_fail(c, -1, FL_EINTERNAL, "cannot read a frame body");
        return -1;
    }
    c->active_ms = conn_now_ms(); /* a whole request: a trickled partial one does not count */
    conn_handle_frame(c, buf, len);
    return 1;
}

/* Serve every whole frame already received, unless output backpressure says wait. In
 * shutdown everything received is served regardless. */
static void conn_process_input(struct conn *c)
{
    while (c->state != CONN_CLOSING && (!c->paused || c->srv->stopping))
        if (conn_next_frame(c) <= 0)
            break;
    if (c->eof && c->state != CONN_CLOSING && (!c->paused || c->srv->stopping))
        conn_set_closing(c);
}

/* Output drained below the low mark: read again and serve what waited. */
static void conn_resume(struct conn *c)
{
    c->paused = 0;
    if (!c->eof && c->state != CONN_CLOSING)
        conn_reading(c, 1);
    fl_debug("conn %llu: output drained: reading resumed", (unsigned long long)c->id);
    conn_process_input(c);
}

/* Continue every subscription of c as far as its output allows. A subscription that fails is
 * answered with an error under its id and dropped; the connection carries on. */
static void conn_pump_subs(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct fl_str tenant = {c->tenant, c->tenant_len};
    size_t max_frame = c->srv->cfg->max_frame;
    size_t push = max_frame / 4 < CONN_PUSH_BYTES ? max_frame / 4 : CONN_PUSH_BYTES;
    struct sub *s, *next;
    struct fl_error err;
    int rc;

    c->blocked = 0;
    for (s = TAILQ_FIRST(&c->subs); s; s = next) {
        next = TAILQ_NEXT(s, link);
        fl_error_clear(&err);
        rc = sub_pump(s, c->srv->store, tenant, &c->sb, out, conn_sub_fill(c), push, max_frame,
                      &err);
        if (rc == SUB_BLOCKED) {
            /* Fairness: the next drain starts with the subscriptions that waited. */
            TAILQ_REMOVE(&c->subs, s, link);
            TAILQ_INSERT_TAIL(&c->subs, s, link);
            c->blocked = 1;
            c->srv->sub_pauses++;
            break;
        }
        if (rc < 0) {
            uint64_t id = s->id;

            fl_warn("conn %llu: subscription %llu ended: %s", (unsigned long long)c->id,
                    (unsigned long long)id, err.msg);
            conn_sub_remove(c, s);
            /* Queueing may close the connection (output hard cap), which ends every
             * subscription, next included. */
            conn_reply_error(c, (int64_t)id, &err);
            if (c->state == CONN_CLOSING)
                return;
        }
    }
    conn_check_output(c);
}

/* Everything owed was written: half-close and discard input until the peer's EOF, so that
 * the kernel delivers our last replies instead of resetting the connection (a close() with
 * unread input sends RST and drops unsent data). */
static void conn_linger(struct conn *c)
{
    struct timeval tv = {CONN_LINGER_S, 0};
    struct evbuffer *in = c->in;
    evutil_socket_t fd = bufferevent_getfd(c->bev);

    c->lingering = 1;
    c->linger_ms = conn_now_ms();
    c->linger_left = conn_unsent(c);
    if (c->eof || fd < 0 || shutdown(fd, SHUT_WR) != 0) {
        conn_free(c);
        return;
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    /* The read event's timeout, restarted by every read, ends the wait (conn_recv_cb). */
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    if (event_add(c->rev, &tv) != 0)
        conn_free(c);
    else
        c->reading = 1;
}

/* The linger's wait ran out with nothing read: go, unless the peer has still not received all
 * we sent. Closing then would make the kernel answer the peer's next bytes (a request sent
 * before it saw our goodbye) with RST and drop the replies still queued, so a client that
 * reads slowly would lose acknowledgements of committed appends. Wait on while it keeps
 * taking bytes, and give up on it after CONN_CLOSE_TIMEOUT_S in which it took none, as the
 * write timeout of CLOSING does. */
static void conn_linger_timeout(struct conn *c)
{
    struct timeval look = {0, CONN_LINGER_LOOK_MS * 1000};
    size_t left = c->tcp ? conn_unsent(c) : 0; /* a Unix socket never resets: what was sent
                                                   stays readable after the close */
    int64_t now = conn_now_ms();

    if (left < c->linger_left) {
        c->linger_left = left;
        c->linger_ms = now;
    }
    if (left == 0 || now - c->linger_ms >= (int64_t)CONN_CLOSE_TIMEOUT_S * 1000 ||
        event_add(c->rev, &look) != 0)
        conn_free(c);
}

/* Close c if it is closing and owes nothing more: no append waiting, nothing left to write. */
static void conn_maybe_free(struct conn *c)
{
    if (c->state == CONN_CLOSING && !c->lingering && c->npending == 0 && !c->in_job &&
        conn_out_len(c) == 0)
        conn_linger(c);
}

/* Enter CLOSING: read nothing more, end subscriptions, flush, then go. */
static void conn_set_closing(struct conn *c)
{
    struct timeval tv = {CONN_CLOSE_TIMEOUT_S, 0};
    struct evbuffer *in = c->in;
    struct sub *s;

    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    evtimer_del(c->timer); /* from now on only the write timeout below applies */
    conn_reading(c, 0);
    evbuffer_drain(in, evbuffer_get_length(in));
    while ((s = TAILQ_FIRST(&c->subs)) != NULL)
        conn_sub_remove(c, s);
    /* Call back when the output is empty, and give up on a peer that stops reading. */
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(c->bev, NULL, &tv);
}

/* Read once from the socket into the input buffer: the bytes read, 0 at EOF, -1 with errno
 * (EAGAIN: nothing there now). One readv, where libevent's evbuffer_read makes an ioctl
 * (FIONREAD) before each: a system call per request saved (bench/RESULTS.md set N). */
static ssize_t conn_recv(struct conn *c)
{
    struct evbuffer *in = c->in;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    struct evbuffer_iovec v[2];
    ssize_t n;
    int nv;

    if (fd < 0) {
        errno = EBADF;
        return -1;
    }
    if ((nv = evbuffer_reserve_space(in, CONN_READ_CHUNK, v, 2)) < 1) {
        errno = ENOMEM;
        return -1;
    }
    do
        n = readv(fd, v, nv); /* evbuffer_iovec is struct iovec here (event2/buffer.h) */
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        int saved = errno;
        evbuffer_commit_space(in, v, 0);
        errno = saved;
        return n;
    }
    size_t left = (size_t)n;
    for (int i = 0; i < nv; i++) {
        if (v[i].iov_len > left)
            v[i].iov_len = left;
        left -= v[i].iov_len;
    }
    if (evbuffer_commit_space(in, v, nv) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return n;
}

/* Start or stop watching the socket for input. */
static void conn_reading(struct conn *c, int on)
{
    if (on && !c->reading) {
        if (event_add(c->rev, NULL) == 0)
            c->reading = 1;
        else
            fl_warn("conn %llu: cannot watch its socket", (unsigned long long)c->id);
    } else if (!on && c->reading) {
        event_del(c->rev);
        c->reading = 0;
    }
}

/* libevent: the socket has input (or, lingering, the linger time ran out). */
static void conn_recv_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    ssize_t n;

    (void)fd;
    if (what & EV_TIMEOUT) { /* only a lingering connection has a timeout here */
        conn_linger_timeout(c);
        return;
    }
    /* Read again while a read filled its chunk: more is likely waiting. */
    size_t got = 0;
    while ((n = conn_recv(c)) > 0 && (got += (size_t)n) < CONN_READ_MAX &&
           n >= (ssize_t)CONN_READ_CHUNK)
        ;
    int again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK); /* nothing more now */
    if (again && got == 0)
        return;
    if (c->lingering) { /* discard what comes until the peer's EOF */
        evbuffer_drain(c->in, evbuffer_get_length(c->in));
        if (n <= 0 && !again)
            conn_free(c);
        return;
    }
    if (n < 0 && !again) {
        fl_debug("conn %llu (%s): %s", (unsigned long long)c->id, c->peer, strerror(errno));
        conn_free(c);
        return;
    }
    if (n == 0) {
        c->eof = 1;
        conn_reading(c, 0);
    }
    conn_process_input(c); /* after an EOF too: what came before it is still served */
    conn_maybe_free(c);
}

/* libevent: output drained to the write low watermark. Requests waiting on backpressure go
 * first, then subscriptions continue. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (c->state != CONN_CLOSING) {
        if (c->paused && conn_out_len(c) <= conn_out_low(c))
            conn_resume(c);
        if (c->blocked && c->state != CONN_CLOSING)
            conn_pump_subs(c);
    }
    conn_maybe_free(c);
}

/* libevent: the bufferevent met an error or an EOF writing, or its write timeout (set only in
 * CLOSING). Reading errors and EOF are conn_recv_cb's. */
static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (c->lingering) { /* EOF, error or the linger timeout: done */
        conn_free(c);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        fl_debug("conn %llu (%s): %s", (unsigned long long)c->id, c->peer,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        conn_free(c);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        c->eof = 1;
        conn_process_input(c); /* what was received before the EOF is still served */
    } else if (what & BEV_EVENT_TIMEOUT) {
        /* Only CLOSING sets a bufferevent timeout (writing); the others use c->timer. */
        fl_info("conn %llu (%s): peer stopped reading while closing; dropping it",
                (unsigned long long)c->id, c->peer);
        conn_free(c);
        return;
    }
    conn_maybe_free(c);
}

/* Schedule c->timer in ms milliseconds. */
static void conn_timer_arm(struct conn *c, int64_t ms)
{
    struct timeval tv;

    if (ms < 1)
        ms = 1;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    if (evtimer_add(c->timer, &tv) != 0)
        fl_warn("conn %llu: cannot schedule its timeout", (unsigned long long)c->id);
}

/* Close a READY connection idle for --idle-timeout (conn.h says what idle means). The peer
 * taking reply bytes shows only as a change in conn_unsent between two looks, and counts only if
 * the earlier look came after the last other activity (before it, the change may be that
 * activity's own replies). So while replies are in flight this looks at least every
 * CONN_LOOK_MS and counts a change as activity when it is seen (late: in the client's favour);
 * and it takes a connection with replies in flight for idle only if they did not move between
 * two looks at least CONN_LOOK_MS apart (timers fire a little early, so two looks can be a
 * millisecond apart). A peer that leaves replies unread is told so. */
static void conn_idle_check(struct conn *c)
{
    struct server *srv = c->srv;
    int64_t idle_ms = (int64_t)srv->cfg->idle_timeout * 1000, now = conn_now_ms(), next;
    size_t unsent = conn_unsent(c);
    int after = c->unsent_ms >= c->active_ms; /* the previous look came after the activity */
    int64_t since = now - c->unsent_ms;       /* and was this long ago */

    if (c->nsubs > 0 || c->npending > 0 || c->in_job || (after && unsent != c->unsent_seen))
        c->active_ms = now;
    if (now - c->active_ms < idle_ms) {
        c->unsent_seen = unsent;
        c->unsent_ms = now;
        next = c->active_ms + idle_ms - now;
        conn_timer_arm(c, unsent > 0 && next > CONN_LOOK_MS ? CONN_LOOK_MS : next);
        return;
    }
    if (unsent > 0 && (!after || since < CONN_LOOK_MS)) { /* no verdict yet: look again */
        c->unsent_seen = unsent;
        c->unsent_ms = now;
        conn_timer_arm(c, CONN_LOOK_MS);
        return;
    }
    if (unsent > 0) {
        srv->closed_not_reading++;
        conn_fail(c, -1, FL_EUNAVAILABLE,
                  "closing: this connection has not read its replies for %llu seconds "
                  "(%zu bytes waiting; --idle-timeout); read replies as they come",
                  (unsigned long long)srv->cfg->idle_timeout, unsent);
    } else {
        srv->closed_idle++;
        conn_fail(c, -1, FL_EUNAVAILABLE,
                  "closing an idle connection: no request for %llu seconds (--idle-timeout); "
                  "connect again when needed",
                  (unsigned long long)srv->cfg->idle_timeout);
    }
}

/* libevent: c->timer fired: the hello deadline passed, or time to check for idleness. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state == CONN_HELLO) {
        c->srv->closed_hello_timeout++;
        conn_fail(c, -1, FL_EUNAUTHENTICATED,
                  "no hello within %llu seconds of connecting (--hello-timeout)",
                  (unsigned long long)c->srv->cfg->hello_timeout);
    } else if (c->state == CONN_READY) {
        conn_idle_check(c);
    }
    conn_maybe_free(c);
}

int conn_new(struct server *srv, evutil_socket_t fd, const struct sockaddr *sa, int salen)
{
    struct conn *c = calloc(1, sizeof *c);

    if (!c) {
        evutil_closesocket(fd);
        return FL_EINTERNAL;
    }
    c->srv = srv;
    c->id = ++srv->next_conn_id;
    c->state = CONN_HELLO;
    TAILQ_INIT(&c->pending);
    TAILQ_INIT(&c->subs);
    msgpack_sbuffer_init(&c->sb);
    msgpack_packer_init(&c->pk, &c->sb, msgpack_sbuffer_write);
    conn_describe(c, sa, salen);
    conn_tune_socket(fd, sa ? sa->sa_family : AF_UNIX);
    c->tcp = sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6);
    c->active_ms = conn_now_ms();
    /* The bufferevent writes; reading is conn_recv's, on an event of its own (the bufferevent's
     * reading stays disabled, as it starts). */
    c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = c->bev ? evtimer_new(srv->base, conn_timer_cb, c) : NULL;
    c->rev = c->timer ? event_new(srv->base, fd, EV_READ | EV_PERSIST, conn_recv_cb, c) : NULL;
    c->in = c->rev ? evbuffer_new() : NULL;
    if (!c->bev || !c->timer || !c->rev || !c->in) {
        if (c->rev)
            event_free(c->rev);
        if (c->timer)
            event_free(c->timer);
        if (c->bev)
            bufferevent_free(c->bev); /* closes fd */
        else
            evutil_closesocket(fd);
        free(c);
        return FL_EINTERNAL;
    }
    bufferevent_setcb(c->bev, NULL, conn_write_cb, conn_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, conn_out_low(c), 0);
    TAILQ_INSERT_TAIL(&srv->conns, c, link);
    srv->nconns++;
    srv->conns_total++;
    conn_timer_arm(c, (int64_t)srv->cfg->hello_timeout * 1000);
    conn_reading(c, 1);
    if (!c->reading) {
        conn_free(c);
        return FL_EINTERNAL;
    }
    fl_debug("conn %llu: connected from %s", (unsigned long long)c->id, c->peer);
    return 0;
}

void conn_free(struct conn *c)
{
    struct server *srv;
    struct commit_item *it;
    struct sub *s;

    if (!c)
        return;
    srv = c->srv;
    /* Appends still queued are committed anyway (they were received); their answers go
     * nowhere. */
    while ((it = TAILQ_FIRST(&c->pending)) != NULL) {
        TAILQ_REMOVE(&c->pending, it, conn_link);
        it->conn = NULL;
    }
    c->npending = 0;
    if (c->in_job)
        job_forget(&srv->job, c);
    while ((s = TAILQ_FIRST(&c->subs)) != NULL)
        conn_sub_remove(c, s);
    TAILQ_REMOVE(&srv->conns, c, link);
    srv->nconns--;
    fl_debug("conn %llu (%s): closed", (unsigned long long)c->id, c->peer);
    event_free(c->timer);
    event_free(c->rev); /* before the bufferevent closes the socket */
    evbuffer_free(c->in);
    bufferevent_free(c->bev);
    msgpack_sbuffer_destroy(&c->sb);
    free(c);
    if (srv->stopping && srv->nconns == 0)
        event_base_loopexit(srv->base, NULL);
}

/* Shutdown: take in what the kernel already received for this socket, without waiting for
 * more, so that "finish what was received" includes requests not yet read by the loop. */
static void conn_drain_socket(struct conn *c)
{
    struct evbuffer *in = c->in;
    size_t cap = 2 * (size_t)c->srv->cfg->max_frame + (size_t)c->srv->cfg->max_output;

    if (c->eof)
        return;
    while (evbuffer_get_length(in) < cap) {
        ssize_t n = conn_recv(c);
        if (n == 0)
            c->eof = 1;
        if (n <= 0) /* 0: EOF; < 0: EAGAIN (nothing more now) or an error */
            break;
    }
}

void conn_shutdown_serve(struct conn *c)
{
    if (c->state != CONN_CLOSING) {
        conn_reading(c, 0);
        conn_drain_socket(c);
        conn_process_input(c); /* in shutdown it serves every whole frame, paused or not */
    }
    conn_maybe_free(c);
}

/* A subscriber learns that its stream ends here and where to pick it up again (a blocked one
 * may be behind the head); every client learns why its connection closes (PROTOCOL.md 9). A
 * connection waiting for a verify or backup gets that answer instead of the notice. */
void conn_shutdown_close(struct conn *c)
{
    struct fl_error err;
    struct sub *s;

    if (c->state == CONN_CLOSING) {
        conn_maybe_free(c);
        return;
    }
    while ((s = TAILQ_FIRST(&c->subs)) != NULL) {
        fl_error_clear(&err);
        fl_error_set(&err, FL_EUNAVAILABLE,
                     "the server is shutting down; subscribe again from seq %llu",
                     (unsigned long long)s->next);
        conn_reply_error(c, (int64_t)s->id, &err);
        if (c->state == CONN_CLOSING) /* the output's hard cap closed it */
            break;
        conn_sub_remove(c, s);
    }
    if (c->state != CONN_CLOSING && c->state != CONN_HELLO && !c->in_job) {
        fl_error_clear(&err);
        fl_error_set(&err, FL_EUNAVAILABLE, "the server is shutting down; connect again later");
        conn_reply_error(c, -1, &err);
    }
    if (c->state != CONN_CLOSING)
        conn_set_closing(c);
    conn_maybe_free(c);
}

void conn_ready(struct conn *c)
{
    c->state = CONN_READY;
    c->active_ms = conn_now_ms();
    if (c->srv->cfg->idle_timeout > 0)
        conn_timer_arm(c, (int64_t)c->srv->cfg->idle_timeout * 1000);
    else
        evtimer_del(c->timer);
}

void conn_pending_add(struct conn *c, struct commit_item *it)
{
    it->conn = c;
    TAILQ_INSERT_TAIL(&c->pending, it, conn_link);
    c->npending++;
}

void conn_append_done(struct commit_item *it, void *arg)
{
    struct conn *c = it->conn;

    (void)arg;
    if (!c)
        return;
    TAILQ_REMOVE(&c->pending, it, conn_link);
    c->npending--;
    c->active_ms = conn_now_ms(); /* the idle clock starts after the last answer */
    it->conn = NULL;
    conn_op_append_reply(c, it);
    conn_maybe_free(c);
}

void conn_job_done(void *owner, uint64_t req_id, const char *what, int rc,
                   const struct fl_error *err, const char *body, size_t len, int64_t us,
                   void *arg)
{
    struct conn *c = owner;
    size_t off;

    (void)arg;
    c->in_job = 0;
    c->active_ms = conn_now_ms();
    fl_info("conn %llu: %s took %.3f s", (unsigned long long)c->id, what, (double)us / 1e6);
    if (rc != 0) {
        conn_reply_error(c, (int64_t)req_id, err);
    } else {
        off = conn_reply_begin(c);
        fl_wire_pack_ok_head(&c->pk, req_id);
        msgpack_sbuffer_write(&c->sb, body, len); /* the answer's map, packed on the job thread */
        conn_reply_end(c, off, req_id);
    }
    conn_maybe_free(c);
}

void conn_after_commit(void *arg)
{
    struct server *srv = arg;
    struct conn *c, *next;

    for (c = TAILQ_FIRST(&srv->sub_conns); c; c = next) {
        next = TAILQ_NEXT(c, sub_link);
        if (c->state != CONN_CLOSING && !c->blocked)
            conn_pump_subs(c);
    }
}

struct sub *conn_sub_find(struct conn *c, uint64_t id)
{
    struct sub *s;

    TAILQ_FOREACH(s, &c->subs, link)
    if (s->id == id)
        return s;
    return NULL;
}

void conn_sub_add(struct conn *c, struct sub *s)
{
    TAILQ_INSERT_TAIL(&c->subs, s, link);
    if (c->nsubs++ == 0)
        TAILQ_INSERT_TAIL(&c->srv->sub_conns, c, sub_link);
    c->srv->nsubs++;
    if (!c->blocked)
        conn_pump_subs(c);
}

void conn_sub_remove(struct conn *c, struct sub *s)
{
    TAILQ_REMOVE(&c->subs, s, link);
    if (--c->nsubs == 0) {
        TAILQ_REMOVE(&c->srv->sub_conns, c, sub_link);
        c->blocked = 0;
    }
    c->srv->nsubs--;
    sub_free(s);
}
