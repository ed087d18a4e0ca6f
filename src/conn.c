/* conn.c: one client connection: frames in, replies and pushes out, flow control, lifetime. */
#include "conn.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "diag.h"
#include "wire.h"

/* Replies at least this big are handed to the socket buffer without a copy. */
#define CONN_ZERO_COPY_MIN (64u * 1024)
/* A subscription stops pushing once this much output is queued; pushes never fill the output
 * to CONN_OUT_HIGH by themselves, so a subscriber's own requests keep being read. */
#define CONN_SUB_FILL (1024u * 1024)
#define CONN_PUSH_BYTES (256u * 1024)

static void conn_process_input(struct conn *c);
static void conn_set_closing(struct conn *c);

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

/* Stop reading while the peer does not take its replies (a socket bufferevent would not). */
static void conn_check_output(struct conn *c)
{
    if (!c->paused && conn_out_len(c) > CONN_OUT_HIGH) {
        c->paused = 1;
        bufferevent_disable(c->bev, EV_READ);
        fl_debug("conn %llu: output above %u bytes: reading paused", (unsigned long long)c->id,
                 CONN_OUT_HIGH);
    }
}

/* Free callback for replies handed over without a copy. */
static void conn_free_chunk(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

/* Move the finished frame in c->sb to the socket's output buffer. */
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
        rc = evbuffer_add(out, c->sb.data, n);
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

void conn_reply_end(struct conn *c, size_t off, uint64_t id)
{
    struct fl_error e;

    if (fl_wire_frame_end(&c->sb, off, c->srv->cfg->max_frame) != 0) {
        conn_reply_abort(c, off);
        fl_error_clear(&e);
        fl_error_set(&e, FL_ETOO_LARGE,
                     "the reply is larger than the %llu-byte frame limit; ask for less "
                     "(a smaller limit, or page with from/after)",
                     (unsigned long long)c->srv->cfg->max_frame);
        conn_reply_error(c, (int64_t)id, &e);
        return;
    }
    conn_flush_sb(c);
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

/* Ask libevent to call back only once n bytes are buffered (a header, then a whole frame). */
static void conn_want(struct conn *c, size_t n)
{
    bufferevent_setwatermark(c->bev, EV_READ, n, 0);
}

/* Decode one frame and serve it. Takes buf. */
static void conn_handle_frame(struct conn *c, uint8_t *buf, size_t len)
{
    struct conn_req r;
    struct fl_error err;
    const msgpack_object *o;

    memset(&r, 0, sizeof r);
    fl_error_clear(&err);
    msgpack_unpacked_init(&r.msg);
    r.frame = buf;
    r.len = len;
    if (fl_wire_decode(buf, len, &r.msg, &err) != 0) {
        conn_fail(c, -1, err.code ? err.code : FL_EBAD_REQUEST, "malformed frame: %s", err.msg);
        goto out;
    }
    if (r.msg.data.type != MSGPACK_OBJECT_MAP) {
        conn_fail(c, -1, FL_EBAD_REQUEST, "a frame must hold one msgpack map (a request)");
        goto out;
    }
    o = fl_wire_get(&r.msg.data, "id");
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
    o = fl_wire_get(&r.msg.data, "op");
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
    msgpack_unpacked_destroy(&r.msg);
    free(r.frame);
}

/* Take one whole frame from the input if there is one: 1 served, 0 need more, -1 closing. */
static int conn_next_frame(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t avail = evbuffer_get_length(in), max = c->srv->cfg->max_frame;
    uint8_t hdr[FL_FRAME_HDR], *buf;
    uint32_t len;

    if (avail < FL_FRAME_HDR) {
        conn_want(c, FL_FRAME_HDR);
        return 0;
    }
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
    if (avail - FL_FRAME_HDR < len) {
        conn_want(c, FL_FRAME_HDR + (size_t)len);
        return 0;
    }
    buf = malloc(len);
    if (!buf) {
        conn_fail(c, -1, FL_EUNAVAILABLE, "server out of memory; retry later");
        return -1;
    }
    evbuffer_drain(in, FL_FRAME_HDR);
    if (evbuffer_remove(in, buf, len) != (int)len) {
        free(buf);
        conn_fail(c, -1, FL_EINTERNAL, "cannot read a frame body");
        return -1;
    }
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
        bufferevent_enable(c->bev, EV_READ);
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
        rc = sub_pump(s, c->srv->store, tenant, &c->sb, out, CONN_SUB_FILL, push, max_frame, &err);
        if (rc == SUB_BLOCKED) {
            /* Fairness: the next drain starts with the subscriptions that waited. */
            TAILQ_REMOVE(&c->subs, s, link);
            TAILQ_INSERT_TAIL(&c->subs, s, link);
            c->blocked = 1;
            c->srv->sub_pauses++;
            break;
        }
        if (rc < 0) {
            fl_warn("conn %llu: subscription %llu ended: %s", (unsigned long long)c->id,
                    (unsigned long long)s->id, err.msg);
            conn_reply_error(c, (int64_t)s->id, &err);
            conn_sub_remove(c, s);
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
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evutil_socket_t fd = bufferevent_getfd(c->bev);

    c->lingering = 1;
    if (c->eof || fd < 0 || shutdown(fd, SHUT_WR) != 0) {
        conn_free(c);
        return;
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    if (bufferevent_enable(c->bev, EV_READ) != 0)
        conn_free(c);
}

/* Close c if it is closing and owes nothing more: no append waiting, nothing left to write. */
static void conn_maybe_free(struct conn *c)
{
    if (c->state == CONN_CLOSING && !c->lingering && c->npending == 0 && conn_out_len(c) == 0)
        conn_linger(c);
}

/* Enter CLOSING: read nothing more, end subscriptions, flush, then go. */
static void conn_set_closing(struct conn *c)
{
    struct timeval tv = {CONN_CLOSE_TIMEOUT_S, 0};
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct sub *s;

    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    evbuffer_drain(in, evbuffer_get_length(in));
    while ((s = TAILQ_FIRST(&c->subs)) != NULL)
        conn_sub_remove(c, s);
    /* Call back when the output is empty, and give up on a peer that stops reading. */
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(c->bev, NULL, &tv);
}

/* libevent: input reached the read low watermark. */
static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (c->lingering) {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    conn_process_input(c);
    conn_maybe_free(c);
}

/* libevent: output drained to the write low watermark. Requests waiting on backpressure go
 * first, then subscriptions continue. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (c->state != CONN_CLOSING) {
        if (c->paused && conn_out_len(c) <= CONN_OUT_LOW)
            conn_resume(c);
        if (c->blocked && c->state != CONN_CLOSING)
            conn_pump_subs(c);
    }
    conn_maybe_free(c);
}

/* libevent: EOF, error or timeout on the socket. */
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
        if (what & BEV_EVENT_WRITING) {
            fl_info("conn %llu (%s): peer stopped reading while closing; dropping it",
                    (unsigned long long)c->id, c->peer);
            conn_free(c);
            return;
        }
        conn_fail(c, -1, FL_EUNAUTHENTICATED, "no hello within %d seconds", CONN_HELLO_TIMEOUT_S);
    }
    conn_maybe_free(c);
}

int conn_new(struct server *srv, evutil_socket_t fd, const struct sockaddr *sa, int salen)
{
    struct timeval hello_tv = {CONN_HELLO_TIMEOUT_S, 0};
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
    c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return FL_EINTERNAL;
    }
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    conn_want(c, FL_FRAME_HDR);
    bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUT_LOW, 0);
    bufferevent_set_timeouts(c->bev, &hello_tv, NULL);
    TAILQ_INSERT_TAIL(&srv->conns, c, link);
    srv->nconns++;
    srv->conns_total++;
    if (bufferevent_enable(c->bev, EV_READ) != 0) {
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
    while ((s = TAILQ_FIRST(&c->subs)) != NULL)
        conn_sub_remove(c, s);
    TAILQ_REMOVE(&srv->conns, c, link);
    srv->nconns--;
    fl_debug("conn %llu (%s): closed", (unsigned long long)c->id, c->peer);
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
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    size_t cap = 2 * (size_t)c->srv->cfg->max_frame + CONN_OUT_HIGH;

    if (fd < 0 || c->eof)
        return;
    while (evbuffer_get_length(in) < cap) {
        int n = evbuffer_read(in, fd, 64 * 1024);
        if (n == 0)
            c->eof = 1;
        if (n <= 0) /* 0: EOF; < 0: EAGAIN (nothing more now) or an error */
            break;
    }
}

void conn_shutdown(struct conn *c)
{
    if (c->state != CONN_CLOSING) {
        bufferevent_disable(c->bev, EV_READ);
        conn_drain_socket(c);
        conn_process_input(c); /* in shutdown it serves every whole frame, paused or not */
        conn_set_closing(c);
    }
    conn_maybe_free(c);
}

void conn_ready(struct conn *c)
{
    c->state = CONN_READY;
    bufferevent_set_timeouts(c->bev, NULL, NULL);
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
    it->conn = NULL;
    conn_op_append_reply(c, it);
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
