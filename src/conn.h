/* conn.h: one client connection. conn.c owns the socket side (frames in, replies out,
 * backpressure, the state machine, subscriptions' flow control); conn_op.c owns what each
 * request means (the op table, arguments, permissions, handlers).
 *
 * States:  HELLO --valid hello--> READY --EOF, fatal frame, timeout, shutdown--> CLOSING
 *          --drained--> freed
 * In HELLO only `hello` is served; anything else is answered `unauthenticated` and the
 * connection closes, as it does when no hello has come --hello-timeout seconds after connecting
 * (a deadline from the connect, not from the last byte: a client trickling a byte a second gets
 * no longer). In READY a connection that stays idle for --idle-timeout seconds is closed with
 * `unavailable`: idle means no whole request received, no reply bytes taken by the peer
 * (looked at once a second while some are in flight), no append waiting for its commit and no
 * subscription (subscribers are never idle); a client whose replies wait unread is idle too,
 * and is told so. In CLOSING no more requests are
 * served; once its pending appends have been answered and its output written, the connection
 * lingers: it sends FIN and discards input until the peer's EOF, because closing a socket with
 * unread input makes the kernel send RST and drop replies not yet delivered. Without an EOF it
 * goes CONN_LINGER_S after the last input if the peer has received every byte sent; if not
 * (the peer's next bytes would get RST and those replies be dropped), it looks again every
 * CONN_LINGER_LOOK_MS and goes once the peer has them, or after CONN_CLOSE_TIMEOUT_S in which
 * the peer took none of them. A Unix socket never resets: it goes after CONN_LINGER_S.
 *
 * Lifetime rule: only the top-level entry points (libevent callbacks, commit callbacks,
 * shutdown) may free a connection, through conn_maybe_free as their last action on it. */
#ifndef FL_CONN_H
#define FL_CONN_H

#include <event2/bufferevent.h>
#include <msgpack.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "auth.h"
#include "commit.h"
#include "server.h"
#include "sub.h"

enum conn_state { CONN_HELLO, CONN_READY, CONN_CLOSING };

/* Output flow control (--max-output, "the limit"). Reading stops while more than the limit
 * waits to be written and resumes when the output drains to a quarter of it (the socket
 * bufferevent ignores the high write watermark, so this is checked by hand; see
 * notes/dependencies.md 4.1). Pushes stop at half of it. A connection whose output passes the
 * hard cap, CONN_OUT_HARD_FACTOR times the limit (but never less than the limit plus one
 * largest frame, so one big reply cannot trip it), is closed: only a client that does not read
 * gets there, because reading stopped at the limit. */
#define CONN_OUT_HARD_FACTOR 4
#define CONN_HELLO_MAX_FRAME (64u * 1024) /* before authentication, frames stay small */
#define CONN_CLOSE_TIMEOUT_S 10
#define CONN_LINGER_S 2 /* after our FIN, how long to discard what the peer still sends */
#define CONN_LINGER_LOOK_MS 250 /* past that, how often to look whether the peer has our bytes */
#define CONN_MAX_SUBS 64

struct conn {
    struct server *srv;
    struct bufferevent *bev; /* writes, and reports write errors and EOF seen writing */
    struct event *rev;       /* the socket's input (conn.c conn_recv: not the bufferevent's) */
    struct evbuffer *in;     /* what was read and not yet taken as frames */
    int reading;             /* rev is added */
    enum conn_state state;
    uint64_t id;
    char peer[96];

    /* who: set by hello */
    char tenant[FL_TENANT_MAX + 1]; /* "" for an operator that named no tenant */
    size_t tenant_len;
    int is_operator;
    enum auth_role role;

    int paused;    /* reading stopped because output is above --max-output */
    int eof;       /* the peer finished sending */
    int blocked;   /* a subscription stopped on a full output and waits for it to drain */
    int tcp;       /* a TCP connection (else a Unix socket's) */
    int lingering; /* everything was written and FIN sent; discarding input until EOF */
    int64_t linger_ms;  /* when lingering began, or the peer last took bytes since (monotonic) */
    size_t linger_left; /* our bytes the peer had not received then (conn_unsent) */
    int in_job;    /* its verify or backup runs on the job thread; answered before the close */

    struct event *timer; /* the hello deadline, then the idle check */
    int64_t active_ms;   /* monotonic time of the last activity (see States above) */
    size_t unsent_seen;  /* reply bytes the peer had not received at the last idle check */
    int64_t unsent_ms;   /* when that was (monotonic) */

    struct commit_list pending; /* appends waiting for their commit, in arrival order */
    size_t npending;
    struct sub_list subs;
    size_t nsubs;

    msgpack_sbuffer sb; /* reply scratch; empty between replies */
    msgpack_packer pk;

    TAILQ_ENTRY(conn) link;     /* server->conns */
    TAILQ_ENTRY(conn) sub_link; /* server->sub_conns, while nsubs > 0 */
};

/* A decoded request; the handler may take frame (setting it to NULL). msg lives in the
 * server's zone, which is cleared once the frame has been served: whatever outlives the
 * handler may borrow from frame (msgpack-c's strings point into it), never from msg. */
struct conn_req {
    uint64_t id;
    const char *op;
    size_t op_len;
    msgpack_object msg;
    uint8_t *frame;
    size_t len;
};

/* ---- conn.c: used by server.c ---- */
/* Take over an accepted socket. Returns 0 or a negative fl_err (fd is then closed). */
int conn_new(struct server *srv, evutil_socket_t fd, const struct sockaddr *sa, int salen);
/* Free now, whatever is pending (server teardown). */
void conn_free(struct conn *c);
/* Shutdown, in two steps around the last commit: serve the requests already received; then,
 * once the commit has answered them and fed the subscriptions, end each subscription and the
 * connection with `unavailable` (the subscription's says where to resume) and close once
 * everything is written. */
void conn_shutdown_serve(struct conn *c);
void conn_shutdown_close(struct conn *c);
/* Commit callbacks (commit.h): answer one append; continue every subscription. */
void conn_append_done(struct commit_item *it, void *arg);
void conn_after_commit(void *arg);
/* job.h's done callback: answer the verify or backup of owner (a conn). */
void conn_job_done(void *owner, uint64_t req_id, const char *what, int rc,
                   const struct fl_error *err, const char *body, size_t len, int64_t us,
                   void *arg);

/* ---- conn.c: used by conn_op.c ---- */
/* Start a reply frame in c->sb; returns the offset for conn_reply_end/abort. */
size_t conn_reply_begin(struct conn *c);
/* Close the frame begun at off and queue it. A reply over --max-frame becomes a too_large
 * error for id. */
void conn_reply_end(struct conn *c, size_t off, uint64_t id);
/* The same, with advice for the too_large error that fits the request (what else to ask). */
void conn_reply_end_advise(struct conn *c, size_t off, uint64_t id, const char *advice);
/* Forget a partly packed reply (a read failed half-way). */
void conn_reply_abort(struct conn *c, size_t off);
/* Queue an error reply; id < 0 sends nil. */
void conn_reply_error(struct conn *c, int64_t id, const struct fl_error *e);
/* Answer with an error, then close the connection: framing or identity can't be trusted. */
void conn_fail(struct conn *c, int64_t id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Hello succeeded: serve requests from now on. */
void conn_ready(struct conn *c);
/* Register s on c (c->subs) and push what the log already holds. */
void conn_sub_add(struct conn *c, struct sub *s);
/* The subscription with this id on c, or NULL. */
struct sub *conn_sub_find(struct conn *c, uint64_t id);
/* Drop one subscription. */
void conn_sub_remove(struct conn *c, struct sub *s);
/* Track an append handed to the commit queue, so it can be detached if c goes first. */
void conn_pending_add(struct conn *c, struct commit_item *it);

/* ---- conn_op.c ---- */
/* Serve one decoded request map. Never frees c. */
void conn_op_dispatch(struct conn *c, struct conn_req *r);
/* The reply to an append once committed (or failed). */
void conn_op_append_reply(struct conn *c, const struct commit_item *it);

#endif
