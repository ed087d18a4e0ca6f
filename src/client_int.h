/* client_int.h: libflowlog's insides, shared by client.c (the handle, frames, I/O, the call
 * cycle, connecting) and client_ops.c (the operations). Not installed. */
#ifndef FL_CLIENT_INT_H
#define FL_CLIENT_INT_H

#include <stdint.h>

#include "err.h"
#include "flowlog.h"
#include "util.h"
#include "wire.h"

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

/* Where the handle's one subscription stands. */
enum sub_state {
    SUB_NONE,
    SUB_OPENING, /* subscribe sent, its reply not yet in: pushes may already come */
    SUB_OPEN,
    SUB_LOST, /* its connection closed: flc_sub_next says so until subscribe or unsubscribe */
};

struct flc_client {
    int fd;
    int dead; /* the connection is closed: calls repeat dead_err, or reconnect (RECONNECTING in */
    struct fl_error dead_err; /* flowlog.h), once the replies already received are handed out */
    int peer_closed; /* the server closed it (end of stream, reset, "unavailable" with id nil),
                        not for anything in our request */
    int timeout_ms;
    size_t max_frame;
    uint64_t next_id;
    struct fl_error err;

    char *server, *token, *want_tenant; /* flc_connect's arguments, for connecting again */
    int reconnect;   /* automatic reconnect (flc_set_reconnect) */
    int helloed;     /* a handshake succeeded once: only then does the handle reconnect itself */
    int reconnected; /* this call has connected again already: at most once per call */
    int64_t heard_ms; /* when bytes last came from the server (monotonic): conn_probe reads the
                         socket before a request only after CLIENT_PROBE_QUIET_MS without any */

    char *tenant, *role, *server_name;
    char **retired; /* hello strings replaced by a reconnect: handed out before, so kept */
    size_t nretired;

    struct fl_buf rbuf; /* bytes received, from rpos on not yet framed */
    size_t rpos;
    msgpack_sbuffer wbuf; /* the request being built */
    msgpack_packer pk;

    struct frame *cur;
    struct fqueue replies, pushes;

    uint64_t *pending; /* ids sent with *_send, reply not yet handed out */
    size_t npending, cap_pending;
    uint64_t *lost; /* ids sent with *_send on a connection that closed before their replies */
    size_t nlost, lost_next, cap_lost; /* came: flc_reply_next reports lost[lost_next..nlost) */

    enum sub_state sub;
    uint64_t sub_id;
    char sub_why[FL_ERR_MSG_MAX]; /* SUB_LOST: why its connection closed */
};

/* What a wait is waiting for. */
enum want { WANT_ID, WANT_PENDING, WANT_PUSH };

/* Start a call: release the previous result; a dead handle repeats its error unless it may
 * reconnect (the call's request then goes on a new connection). */
int client_call_begin(flc_client *c);
/* Send the request built in wbuf and wait for its reply; a lost reply makes it sent again on a
 * new connection only if that is harmless (RECONNECTING in flowlog.h). */
const msgpack_object *client_call_finish(flc_client *c, uint64_t id);
/* Free every frame of q. */
void client_fq_clear(struct fqueue *q);
/* Free one frame (NULL is fine). */
void client_frame_free(struct frame *f);
/* The decoded map of a frame. */
const msgpack_object *client_frame_obj(const struct frame *f);
/* Pack "key": "value". */
void client_pack_kv_str(flc_client *c, const char *key, const char *val);
/* Pack "key": unsigned. */
void client_pack_kv_u64(flc_client *c, const char *key, uint64_t val);
/* Remember that id was sent with *_send. */
int client_pending_add(flc_client *c, uint64_t id);
/* Forget a pending id (its reply was handed out). */
void client_pending_remove(flc_client *c, uint64_t id);
/* client_reply_take for callers that only need the result. */
const msgpack_object *client_reply_result(flc_client *c, struct frame *f);
/* Hand out a reply frame: *res is its result (owned by c->cur), or NULL with the server's
 * error on the handle. Returns 0, or a fatal code for a malformed reply. */
int client_reply_take(flc_client *c, struct frame *f, const msgpack_object **res);
/* Start building request {"id", "op", ...} with nargs further keys; returns its id. */
uint64_t client_req_begin(flc_client *c, const char *op, uint32_t nargs);
/* Finish the frame and send it, on a new connection if the old one turns out closed before all
 * of it was written (RECONNECTING in flowlog.h). */
int client_req_send(flc_client *c);
/* Wait for what kind/id names, taking queued frames first. 0 with *out, or a code. */
int client_wait_for(flc_client *c, enum want kind, uint64_t id, int timeout_ms,
                    struct frame **out);
/* Set the handle's error; returns code so callers can `return client_seterr(...)`. */
int client_seterr(flc_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A connection-level failure: set the error and mark the handle dead. */
int client_fatal(flc_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
