/* client_ops.c: libflowlog's operations (see flowlog.h): each builds its request with the
 * call cycle of client.c, sends it and hands back the borrowed result. */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

/* ---- operations ---- */

/* The cheapest round trip: checks the connection and the token's session. */
const msgpack_object *flc_ping(flc_client *c)
{
    if (client_call_begin(c) != 0)
        return NULL;
    return client_call_finish(c, client_req_begin(c, "ping", 0));
}

/* Check the caller's events before anything is built: each must be one msgpack object, so
 * that a bad one cannot corrupt the framing of the request. */
static int check_events(flc_client *c, const struct flc_event *events, size_t n)
{
    struct fl_error e;

    if (!events || n == 0)
        return client_seterr(c, FLC_EUSAGE, "an append needs at least one event");
    if (n > UINT32_MAX)
        return client_seterr(c, FLC_EUSAGE, "too many events");
    for (size_t i = 0; i < n; i++) {
        fl_error_clear(&e);
        if (!events[i].msgpack || fl_wire_check(events[i].msgpack, events[i].len, &e) != 0) {
            client_seterr(c, FLC_EUSAGE, "event %zu is not one well-formed msgpack object: %s", i,
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

    if (client_call_begin(c) != 0 || check_events(c, events, n) != 0)
        return NULL;
    id = client_req_begin(c, "append", 1);
    pack_events(c, events, n);
    return client_call_finish(c, id);
}

const msgpack_object *flc_rollback(flc_client *c, const char *flow_id, uint64_t to_seq,
                                   const char *reason, const char *event_id)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct flc_event ev;
    const msgpack_object *res;

    if (!flow_id || !reason) {
        (void)client_call_begin(c);
        client_seterr(c, FLC_EUSAGE, "a rollback needs a flow_id and a reason");
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
        client_pack_kv_u64(c, "from", q->from);
    if (with_limit && q->limit)
        client_pack_kv_u64(c, "limit", q->limit);
    if (q->type)
        client_pack_kv_str(c, "type", q->type);
    if (q->flow_id)
        client_pack_kv_str(c, "flow_id", q->flow_id);
    if (q->run_id)
        client_pack_kv_str(c, "run_id", q->run_id);
}

/* log and timeline share their request shape. */
static const msgpack_object *query_call(flc_client *c, const char *op, const struct flc_query *q)
{
    static const struct flc_query none;
    uint64_t id;

    if (client_call_begin(c) != 0)
        return NULL;
    if (!q)
        q = &none;
    id = client_req_begin(c, op, query_nargs(q, 1));
    pack_query(c, q, 1);
    return client_call_finish(c, id);
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
        (void)client_call_begin(c);
        client_seterr(c, FLC_EUSAGE, "a timeline needs a run_id or a flow_id");
        return NULL;
    }
    return query_call(c, "timeline", q);
}

/* state with an optional as-of (kind 0: now, 1: seq, 2: time). */
static const msgpack_object *state_call(flc_client *c, const char *flow_id, int kind,
                                        uint64_t seq, int64_t us)
{
    uint64_t id;

    if (client_call_begin(c) != 0)
        return NULL;
    if (!flow_id) {
        client_seterr(c, FLC_EUSAGE, "state needs a flow_id");
        return NULL;
    }
    id = client_req_begin(c, "state", kind ? 2 : 1);
    client_pack_kv_str(c, "flow_id", flow_id);
    if (kind == 1)
        client_pack_kv_u64(c, "as_of_seq", seq);
    if (kind == 2) {
        fl_wire_pack_cstr(&c->pk, "as_of_time");
        fl_wire_pack_ts(&c->pk, us);
    }
    return client_call_finish(c, id);
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

    if (client_call_begin(c) != 0)
        return NULL;
    if (!flow_id) {
        client_seterr(c, FLC_EUSAGE, "history needs a flow_id");
        return NULL;
    }
    id = client_req_begin(c, "history", limit ? 2 : 1);
    client_pack_kv_str(c, "flow_id", flow_id);
    if (limit)
        client_pack_kv_u64(c, "limit", limit);
    return client_call_finish(c, id);
}

/* "after" is the previous page's opaque "next", sent back as bin. */
const msgpack_object *flc_table(flc_client *c, const struct flc_table_query *q)
{
    uint64_t id;

    if (client_call_begin(c) != 0)
        return NULL;
    if (!q || !q->table || (!q->column != !q->value)) {
        client_seterr(c, FLC_EUSAGE, "a table read needs a table, and a column together with a value");
        return NULL;
    }
    id = client_req_begin(c, "table", 1 + (q->column ? 2 : 0) + (q->after != NULL) + (q->limit != 0));
    client_pack_kv_str(c, "table", q->table);
    if (q->column) {
        client_pack_kv_str(c, "column", q->column);
        client_pack_kv_str(c, "value", q->value);
    }
    if (q->after) {
        fl_wire_pack_cstr(&c->pk, "after");
        msgpack_pack_bin(&c->pk, q->after_len);
        msgpack_pack_bin_body(&c->pk, q->after, q->after_len);
    }
    if (q->limit)
        client_pack_kv_u64(c, "limit", q->limit);
    return client_call_finish(c, id);
}

/* Can take a while on a big store: the handle's timeout applies. */
const msgpack_object *flc_verify(flc_client *c)
{
    if (client_call_begin(c) != 0)
        return NULL;
    return client_call_finish(c, client_req_begin(c, "verify", 0));
}

/* Answered when the rebuild is done: the handle's timeout applies. */
const msgpack_object *flc_rebuild(flc_client *c)
{
    if (client_call_begin(c) != 0)
        return NULL;
    return client_call_finish(c, client_req_begin(c, "rebuild", 0));
}

/* The copy is written on the server's host; name may be NULL (the server picks one). */
const msgpack_object *flc_backup(flc_client *c, const char *name)
{
    uint64_t id;

    if (client_call_begin(c) != 0)
        return NULL;
    id = client_req_begin(c, "backup", name ? 1 : 0);
    if (name) {
        fl_wire_pack_cstr(&c->pk, "name");
        fl_wire_pack_cstr(&c->pk, name);
    }
    return client_call_finish(c, id);
}

/* The counters are the server's; the library does not interpret them. */
const msgpack_object *flc_stats(flc_client *c)
{
    if (client_call_begin(c) != 0)
        return NULL;
    return client_call_finish(c, client_req_begin(c, "stats", 0));
}

/* ---- pipelining ---- */

/* Send the built request without waiting and remember its id as pending. */
static uint64_t send_pending(flc_client *c, uint64_t id)
{
    if (client_pending_add(c, id) != 0)
        return 0;
    if (client_req_send(c) != 0) {
        client_pending_remove(c, id);
        return 0;
    }
    return id;
}

/* The id is how the caller will recognise the reply in flc_reply_next. */
uint64_t flc_append_send(flc_client *c, const struct flc_event *events, size_t n)
{
    uint64_t id;

    if (client_call_begin(c) != 0 || check_events(c, events, n) != 0)
        return 0;
    id = client_req_begin(c, "append", 1);
    pack_events(c, events, n);
    return send_pending(c, id);
}

/* A pipelined ping: lets a pipelining caller measure or keep the connection alive. */
uint64_t flc_ping_send(flc_client *c)
{
    if (client_call_begin(c) != 0)
        return 0;
    return send_pending(c, client_req_begin(c, "ping", 0));
}

/* Replies already received but not yet handed out count as pending, as do requests whose
 * connection closed before their replies came (until flc_reply_next reported them). */
size_t flc_pending(const flc_client *c)
{
    return c->npending + (c->nlost - c->lost_next);
}

/* Arrival order, not sending order: the server answers reads at once, appends after commit. */
int flc_reply_next(flc_client *c, int timeout_ms, uint64_t *id, const msgpack_object **result)
{
    struct frame *f = NULL;
    int rc;

    *result = NULL;
    /* Not call_begin: a dead handle still hands out the replies it received before dying. */
    client_frame_free(c->cur);
    c->cur = NULL;
    if (c->dead)
        c->err = c->dead_err;
    else
        fl_error_clear(&c->err);
    /* Replies that did come first, then the requests whose replies never will (lost when the
     * handle connected again). */
    if (!c->replies.head && c->lost_next < c->nlost) {
        *id = c->lost[c->lost_next++];
        if (c->lost_next == c->nlost)
            c->lost_next = c->nlost = 0;
        client_seterr(c, FLC_ECONNECTION,
                      "no reply to request %llu: its connection closed before the reply came; "
                      "it may or may not have been applied, and was not sent again",
                      (unsigned long long)*id);
        return 1;
    }
    if (c->npending == 0)
        return c->dead ? c->err.code : 0;
    rc = client_wait_for(c, WANT_PENDING, 0, timeout_ms, &f);
    if (rc == FLC_ETIMEOUT) {
        fl_error_clear(&c->err);
        return 0;
    }
    if (rc != 0)
        return rc;
    *id = f->id;
    client_pending_remove(c, f->id);
    if ((rc = client_reply_take(c, f, result)) != 0)
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

    if ((rc = client_call_begin(c)) != 0)
        return rc;
    if (c->sub == SUB_OPEN)
        return client_seterr(c, FLC_EUSAGE, "this handle already has a subscription");
    if (!q)
        q = &none;
    id = client_req_begin(c, "subscribe", query_nargs(q, 0));
    pack_query(c, q, 0);
    /* Pushes may follow the reply at once: route them to the queue from now on. A lost
     * subscription is replaced. */
    client_fq_clear(&c->pushes);
    c->sub = SUB_OPENING;
    c->sub_id = id;
    if (!client_call_finish(c, id)) {
        c->sub = SUB_NONE;
        client_fq_clear(&c->pushes);
        return c->err.code;
    }
    c->sub = SUB_OPEN;
    return 0;
}

/* Pushes that arrived during other calls were queued; they come first, in order. */
const msgpack_object *flc_sub_next(flc_client *c, int timeout_ms)
{
    struct frame *f = NULL;
    const msgpack_object *res;

    if (client_call_begin(c) != 0)
        return NULL;
    /* Never renewed behind the caller's back: only the caller knows where it stands. */
    if (c->sub == SUB_LOST) {
        client_seterr(c, FLC_ECONNECTION,
                      "the subscription ended with its connection (%s); subscribe again with "
                      "from = the last batch's next",
                      c->sub_why);
        return NULL;
    }
    if (c->sub != SUB_OPEN) {
        client_seterr(c, FLC_EUSAGE, "no subscription on this handle");
        return NULL;
    }
    if (client_wait_for(c, WANT_PUSH, 0, timeout_ms, &f) != 0)
        return NULL;
    if (f->is_push) {
        c->cur = f;
        res = fl_wire_get(client_frame_obj(f), "result");
        if (!res)
            (void)client_fatal(c, FLC_EPROTOCOL, "protocol error: a push without \"result\"");
        return res;
    }
    /* A reply to the subscribe id after its acknowledgement: the subscription ended. */
    c->sub = SUB_NONE;
    res = client_reply_result(c, f);
    if (res)
        (void)client_seterr(c, FLC_EPROTOCOL, "protocol error: a second reply to the subscription");
    return NULL;
}

/* Queued pushes are dropped at once; late ones are dropped on arrival (frame_route). Never
 * reconnects: a subscription whose connection closed is over already. */
int flc_unsubscribe(flc_client *c)
{
    uint64_t id;
    int rc;

    if ((rc = client_call_begin(c)) != 0)
        return rc;
    if (c->sub == SUB_LOST) {
        c->sub = SUB_NONE;
        return 0;
    }
    if (c->sub != SUB_OPEN)
        return client_seterr(c, FLC_EUSAGE, "no subscription on this handle");
    id = client_req_begin(c, "unsubscribe", 1);
    client_pack_kv_u64(c, "sub", c->sub_id);
    c->sub = SUB_NONE;
    client_fq_clear(&c->pushes);
    if (!client_call_finish(c, id))
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
