/* flowlog.h: libflowlog, the client library of the flowlog event-log server.
 *
 * One opaque handle, flc_client, holds one connection (TCP or Unix socket), speaks the wire
 * protocol of PROTOCOL.md (length-prefixed msgpack frames) and keeps the last error. Modelled on
 * hiredis: connect, check the handle's error, call, read the result, free.
 *
 *     flc_client *c = flc_connect("127.0.0.1:7464", token, NULL);
 *     if (c == NULL || flc_errcode(c) != 0) {
 *         fprintf(stderr, "%s\n", c ? flc_errmsg(c) : "out of memory");
 *         flc_free(c);
 *         return 1;
 *     }
 *     const msgpack_object *st = flc_state(c, "abc-123");
 *     if (st == NULL)
 *         fprintf(stderr, "%s: %s\n", flc_errname(c), flc_errmsg(c));
 *     flc_free(c);
 *
 * OWNERSHIP. Every result is a msgpack_object tree BORROWED from the handle: it stays valid until
 * the next call that takes the handle (any flc_* function with the handle as first argument,
 * except the error accessors flc_err*, flc_fd, flc_pending, flc_tenant, flc_role and
 * flc_server_name), and until flc_free. Copy what you need to keep (msgpack_object_print,
 * msgpack_pack_object into your own buffer, or your own structures).
 *
 * ERRORS. A call that fails returns NULL (or a negative code) and leaves the error on the handle:
 * flc_errcode() is one of the FLC_E* codes below (the server's codes keep the numbers and names
 * of the contract), flc_errname() its stable name, flc_errmsg() a message for people,
 * flc_errindex() the failing event's position in an append (or -1) and flc_errversion() a flow's
 * actual version with FLC_ECONFLICT (or -1). A call that succeeds clears the error. After a
 * connection-level failure (FLC_ECONNECTION, FLC_EPROTOCOL, an error the server sends with
 * "id": nil) the connection is closed; the next call that sends a request connects again
 * (RECONNECTING). With automatic reconnect off, or on a handle whose flc_connect failed, every
 * further call fails the same way until flc_reconnect succeeds.
 *
 * RECONNECTING. The server closes connections idle for its --idle-timeout (with "unavailable",
 * "id": nil), and all of them when it restarts. A handle recovers by itself, at most once per
 * call, for calls that send a request (not flc_reply_next, flc_sub_next, flc_unsubscribe):
 *   - A connection already closed (an earlier call failed on it), or found closed when the call
 *     is about to write its request (after 250 ms without anything from the server it first
 *     reads, without waiting, what has arrived: the idle close, an end of stream), is replaced: connect again to the same server with the same
 *     token and tenant, say hello, then send. Nothing of the request reached the old connection,
 *     so this is safe for every request.
 *   - The server closes (end of stream, a reset, "unavailable" with "id": nil) while the request
 *     is being written: the server acts on whole frames only, so this one was not acted on; it
 *     is sent on a new connection.
 *   - The server closes after all of the request was written, before its reply came: it may have
 *     been applied. It is sent again on a new connection only if a second copy changes nothing:
 *     reads (ping, log, timeline, state*, history, table, verify, stats, subscribe) and appends
 *     in which every event has an event_id (the server answers a repeat as a duplicate, with the
 *     original seq). Any other append, and backup, fail with FLC_ECONNECTION and a message that
 *     the outcome is unknown (look with a read, or give every event an event_id).
 * A close the server makes because of the request (too_large, bad_request, ...) is reported,
 * never retried. If connecting again fails, the call fails (FLC_ECONNECTION, or the server's
 * refusal of the hello), naming the close and the failure; the next call tries again. A server
 * that now puts the token in another tenant is refused (FLC_ECONNECTION).
 * What the old connection carried ends with it. Replies that arrived before the close are still
 * handed out; each *_send request whose reply did not arrive is never sent again: flc_reply_next
 * returns it with result NULL and FLC_ECONNECTION (outcome unknown), after the replies that did
 * arrive. A subscription is never renewed behind the caller's back: flc_sub_next reports the
 * close, then FLC_ECONNECTION until flc_subscribe (from = the last batch's next: nothing is
 * missed or repeated) or flc_unsubscribe (which then just forgets it and returns 0).
 * flc_set_reconnect(c, 0) turns all this off; flc_reconnect replaces the connection on demand.
 *
 * THREADS. A handle belongs to one thread at a time. Handles are independent; the library has
 * no global state.
 *
 * Symbols: everything public starts with flc_ (FLC_ for macros). Nothing else is exported. */
#ifndef FLOWLOG_H
#define FLOWLOG_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLC_PROTOCOL_VERSION 1
#define FLC_DEFAULT_PORT 7464

/* Error codes. -1..-11 are the server's codes (PROTOCOL.md section 5); the rest are local. */
enum flc_code {
    FLC_OK = 0,
    FLC_EBAD_REQUEST = -1,
    FLC_EUNAUTHENTICATED = -2,
    FLC_EFORBIDDEN = -3,
    FLC_ENOT_FOUND = -4,
    FLC_EALREADY_EXISTS = -5,
    FLC_EINVALID_TRANSITION = -6,
    FLC_ECONFLICT = -7,
    FLC_EIDEMPOTENCY_MISMATCH = -8,
    FLC_ETOO_LARGE = -9,
    FLC_EUNAVAILABLE = -10,
    FLC_EINTERNAL = -11,
    /* local: the library could not reach the server, or lost the connection ("connection") */
    FLC_ECONNECTION = -20,
    /* local: the server sent something that is not a valid reply ("protocol") */
    FLC_EPROTOCOL = -21,
    /* local: a call's arguments are invalid; nothing was sent ("usage") */
    FLC_EUSAGE = -22,
    /* local: a wait ran past the handle's timeout; the connection stays usable ("timeout") */
    FLC_ETIMEOUT = -23,
    /* local: memory exhausted ("nomem") */
    FLC_ENOMEM = -24,
};

typedef struct flc_client flc_client;

/* ---- connection ---- */

/* Connect to server ("HOST:PORT", "[V6ADDR]:PORT", "HOST" for the default port, or
 * "unix:PATH"), then say hello with token. tenant is NULL except for operator tokens (tenant
 * "*"), where it names the tenant to act for. Returns NULL only when memory is exhausted;
 * otherwise check flc_errcode(): the handle carries the connect or handshake error (a wrong token
 * gives FLC_EUNAUTHENTICATED). Waits at most 10 s for the connection and the handshake. */
flc_client *flc_connect(const char *server, const char *token, const char *tenant);
/* Close the connection and free everything, results included. Accepts NULL. */
void flc_free(flc_client *c);
/* Connect again now, to the same server with the same token and tenant (RECONNECTING): closes the
 * current connection if open, drops what it carried (unanswered *_send requests and an open
 * subscription are then reported as flc_reply_next and flc_sub_next say), and says hello.
 * Works whether or not automatic reconnect is on, also on a handle whose flc_connect failed to
 * reach the server. Returns 0, or a code with the error on the handle (which is then dead). */
int flc_reconnect(flc_client *c);
/* Automatic reconnect (RECONNECTING) on (on != 0, the default) or off. */
void flc_set_reconnect(flc_client *c, int on);
/* Give up any later wait for the server after ms milliseconds (FLC_ETIMEOUT; the request stays
 * outstanding and its reply is still matched later); 0 waits for ever (the default). */
void flc_set_timeout(flc_client *c, int ms);
/* Refuse reply frames larger than bytes (default 64 MiB) instead of buffering them. */
void flc_set_max_frame(flc_client *c, size_t bytes);
/* The socket, e.g. for poll(); never read or write it yourself. -1 if not connected. Each new
 * connection has a new socket: ask again after any call that may reconnect. */
int flc_fd(const flc_client *c);

/* What the handshake said: the tenant acted for, the role ("reader", "writer", "admin") and the
 * server's name ("flowlog 0.1.0"). Valid for the handle's lifetime (a reconnect may change the
 * role and the name returned later, never the strings returned before); "" before a
 * handshake. */
const char *flc_tenant(const flc_client *c);
const char *flc_role(const flc_client *c);
const char *flc_server_name(const flc_client *c);

/* ---- errors (see ERRORS above) ---- */

int flc_errcode(const flc_client *c);
/* Stable name of the handle's error code: "bad_request", ..., "connection", "protocol",
 * "usage", "timeout", "nomem"; "ok" when there is no error. */
const char *flc_errname(const flc_client *c);
const char *flc_errmsg(const flc_client *c);
int64_t flc_errindex(const flc_client *c);
int64_t flc_errversion(const flc_client *c);
/* Name of any code (as flc_errname). */
const char *flc_code_name(int code);

/* ---- building events ---- */

/* One event, already packed as one msgpack map {"type", "data", "event_id"?,
 * "expected_version"?} (see PROTOCOL.md section 4). The bytes are copied when sent. */
struct flc_event {
    const void *msgpack;
    size_t len;
};

/* ---- synchronous calls: send, wait for the reply, return the result ---- */

/* {} on success. */
const msgpack_object *flc_ping(flc_client *c);
/* Append n (1..1000) events atomically. Result: {"results": [{"seq","ts","duplicate"}...]}, one
 * per event in order. On failure nothing was appended and flc_errindex() names the event. */
const msgpack_object *flc_append(flc_client *c, const struct flc_event *events, size_t n);
/* Append one flow_rollback event {flow_id, to_seq, reason} (admin only); event_id may be NULL.
 * Result as flc_append. */
const msgpack_object *flc_rollback(flc_client *c, const char *flow_id, uint64_t to_seq,
                                   const char *reason, const char *event_id);

/* Filters of log, timeline and subscribe. Zero / NULL members are not sent. */
struct flc_query {
    uint64_t from;       /* first seq (server default 1) */
    uint64_t limit;      /* at most this many events (log, timeline; not subscribe) */
    const char *type;    /* log, subscribe: only this event type */
    const char *flow_id; /* only this flow's events (timeline: flow_id or run_id) */
    const char *run_id;  /* only this run's events */
};

/* One page of the log: {"events": [...], "next": SEQ, "head": SEQ}. Continue with from = next
 * while next <= head. */
const msgpack_object *flc_log(flc_client *c, const struct flc_query *q);
/* One page of a run's or a flow's events (q->run_id or q->flow_id); shape as flc_log. */
const msgpack_object *flc_timeline(flc_client *c, const struct flc_query *q);
/* A flow's rows in the seven tables and its attempt history, now (PROTOCOL.md section 6). */
const msgpack_object *flc_state(flc_client *c, const char *flow_id);
/* The same, right after event seq committed. */
const msgpack_object *flc_state_at_seq(flc_client *c, const char *flow_id, uint64_t seq);
/* The same, after the last event with ts <= us (microseconds since the epoch, UTC). */
const msgpack_object *flc_state_at_time(flc_client *c, const char *flow_id, int64_t us);
/* {"flow_id", "history": [attempts, newest first], "count"}; limit 0 = server default (20). */
const msgpack_object *flc_history(flc_client *c, const char *flow_id, uint32_t limit);

/* A table read. column and value go together (both NULL: every row of the tenant). */
struct flc_table_query {
    const char *table;  /* "migration_flows", ... */
    const char *column; /* an indexed column, or NULL */
    const char *value;
    const void *after; /* the previous page's "next" (bin), or NULL for the first page */
    size_t after_len;
    uint32_t limit; /* 0 = server default (1000) */
};
/* {"table", "rows": [...], "next": BIN|nil}. Continue with after = next until next is nil. */
const msgpack_object *flc_table(flc_client *c, const struct flc_table_query *q);
/* {"ok": bool, "events", "head_seq", "head_hash", "problems": [...]} (admin, operator). */
const msgpack_object *flc_verify(flc_client *c);
/* A consistent copy of the whole store into DATA/backups/NAME on the server's host (admin,
 * operator); name NULL: "backup-<time>". {"name", "path", "bytes", "head_seq"}. */
const msgpack_object *flc_backup(flc_client *c, const char *name);
/* Every projection made again from the log (operator only; appends and reads wait for it).
 * {"events", "head_seq", "micros"}: events replayed (seqs 1..head_seq: the two are equal) and
 * how long it took on the server. */
const msgpack_object *flc_rebuild(flc_client *c);
/* The server's counters (admin, operator). */
const msgpack_object *flc_stats(flc_client *c);

/* ---- pipelining: send many, then collect replies matched by id ---- */

/* Send an append without waiting. Returns its request id (> 0), or 0 with the error on the
 * handle. Replies come back through flc_reply_next, not necessarily in the order sent. */
uint64_t flc_append_send(flc_client *c, const struct flc_event *events, size_t n);
/* Send a ping without waiting; as flc_append_send. */
uint64_t flc_ping_send(flc_client *c);
/* Number of requests sent with *_send whose replies have not been returned yet. */
size_t flc_pending(const flc_client *c);
/* Wait up to timeout_ms (-1: the handle's timeout; 0: do not wait) for the next reply to a
 * request sent with *_send. Returns 1 with *id set: *result is the result, or NULL when the
 * server refused that request or the connection closed before its reply came (the error is then
 * on the handle; FLC_ECONNECTION for a lost reply, see RECONNECTING). Returns 0 when nothing
 * arrived in time (or nothing is pending), or a negative code on a connection failure (the
 * requests still pending are reported lost once a later call connects again). */
int flc_reply_next(flc_client *c, int timeout_ms, uint64_t *id, const msgpack_object **result);

/* ---- subscriptions ---- */

/* Subscribe (q->limit is ignored). One subscription per handle; other calls may be made while it
 * is open. It ends with its connection, and is not renewed by a reconnect (RECONNECTING).
 * Returns 0 or a negative code. */
int flc_subscribe(flc_client *c, const struct flc_query *q);
/* Wait up to timeout_ms (-1: the handle's timeout) for the next batch of pushed events:
 * {"events": [...], "next": SEQ, "head": SEQ}. NULL with FLC_ETIMEOUT when none came in time
 * (the subscription stays open), or NULL with another error. */
const msgpack_object *flc_sub_next(flc_client *c, int timeout_ms);
/* End the subscription; pushes still in flight are dropped. Returns 0 or a negative code. */
int flc_unsubscribe(flc_client *c);

/* ---- reading results ---- */

/* The value of key in map, or NULL (also when map is NULL or not a map). */
const msgpack_object *flc_get(const msgpack_object *map, const char *key);
/* A timestamp extension (type -1) as microseconds since the epoch; 0 or -1 if o is not one. */
int flc_ts_us(const msgpack_object *o, int64_t *us);

#ifdef __cplusplus
}
#endif

#endif
