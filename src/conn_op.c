/* conn_op.c: what each request means: the op table (name, permission, allowed keys, handler),
 * argument checks with messages that say what to change, and the handlers. Reads are answered
 * at once from one snapshot each; appends are parsed here and handed to the commit queue. */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "diag.h"
#include "query.h"
#include "util.h"
#include "wire.h"

#ifndef FL_SERVER_VERSION
#define FL_SERVER_VERSION "0.1.0"
#endif

#define OP_LOG_BYTES (1024u * 1024) /* PROTOCOL.md 4: about 1 MiB of events per log reply */
#define OP_HISTORY_LIMIT 20

enum op_perm { PERM_ANY, PERM_READ, PERM_WRITE, PERM_ADMIN };

struct op_def {
    const char *name;
    enum op_perm perm;
    int tenant; /* 1: acts on a tenant's data, so an operator must have named one */
    const char *keys[6];
    int (*fn)(struct conn *c, struct conn_req *r, struct fl_error *err);
};

/* ---- arguments ---- */

/* The argument key, with nil counting as absent. */
static const msgpack_object *arg(const struct conn_req *r, const char *key)
{
    const msgpack_object *o = fl_wire_get(&r->msg, key);
    return o && o->type != MSGPACK_OBJECT_NIL ? o : NULL;
}

/* An optional unsigned integer; *present (may be NULL) says whether it was given. */
static int arg_u64(const struct conn_req *r, const char *key, uint64_t def, uint64_t *out,
                   int *present, struct fl_error *err)
{
    const msgpack_object *o = arg(r, key);

    if (present)
        *present = o != NULL;
    *out = def;
    if (!o)
        return 0;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fl_error_set(err, FL_EBAD_REQUEST, "\"%s\" must be a whole number >= 0", key);
    *out = o->via.u64;
    return 0;
}

/* A string argument of min..max bytes; absent gives len 0, or an error if required. */
static int arg_str_in(const struct conn_req *r, const char *key, size_t min, size_t max,
                      int required, struct fl_str *out, struct fl_error *err)
{
    const msgpack_object *o = arg(r, key);

    out->p = NULL;
    out->len = 0;
    if (!o)
        return required ? fl_error_set(err, FL_EBAD_REQUEST, "\"%s\" is required", key) : 0;
    if (o->type != MSGPACK_OBJECT_STR)
        return fl_error_set(err, FL_EBAD_REQUEST, "\"%s\" must be a string", key);
    if (o->via.str.size < min || o->via.str.size > max)
        return fl_error_set(err, FL_EBAD_REQUEST, "\"%s\" must be %zu..%zu bytes, got %u", key, min,
                            max, o->via.str.size);
    out->p = o->via.str.size ? o->via.str.ptr : "";
    out->len = o->via.str.size;
    return 0;
}

/* A string argument of 1..max bytes (names, ids). */
static int arg_str(const struct conn_req *r, const char *key, size_t max, int required,
                   struct fl_str *out, struct fl_error *err)
{
    return arg_str_in(r, key, 1, max, required, out, err);
}

/* The log filter shared by log, timeline and subscribe. */
static int arg_filter(const struct conn_req *r, struct conn *c, int with_limit,
                      struct fl_log_filter *f, struct fl_error *err)
{
    struct fl_str type;
    size_t cap = c->srv->cfg->max_frame / 4;
    int rc;

    memset(f, 0, sizeof *f);
    f->type = -1;
    f->max_bytes = cap < OP_LOG_BYTES ? cap : OP_LOG_BYTES;
    if ((rc = arg_u64(r, "from", 1, &f->from, NULL, err)) != 0 ||
        (with_limit && (rc = arg_u64(r, "limit", 0, &f->limit, NULL, err)) != 0) ||
        (rc = arg_str(r, "flow_id", FL_ID_MAX, 0, &f->flow_id, err)) != 0 ||
        (rc = arg_str(r, "run_id", FL_ID_MAX, 0, &f->run_id, err)) != 0 ||
        (rc = arg_str(r, "type", 64, 0, &type, err)) != 0)
        return rc;
    if (type.len) {
        f->type = fl_event_type_from_name(type.p, type.len);
        if (f->type < 0)
            return fl_error_set(err, FL_EBAD_REQUEST,
                                "\"type\": '%.*s' is not an event type (e.g. run_started, "
                                "run_status, flow_registered)",
                                (int)type.len, type.p);
    }
    return 0;
}

static struct fl_str conn_tenant(const struct conn *c)
{
    struct fl_str t = {c->tenant, c->tenant_len};
    return t;
}

/* ---- handlers ---- */

/* The handshake: token → tenant and role. A wrong or missing token closes the connection. */
static int op_hello(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    const msgpack_object *v = arg(r, "version"), *tok = arg(r, "token"), *ten = arg(r, "tenant");
    const struct auth_entry *e;
    int is_operator;
    size_t off;

    if (c->state != CONN_HELLO)
        return fl_error_set(err, FL_EBAD_REQUEST, "this connection already said hello");
    if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 != FL_WIRE_VERSION)
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "\"version\" must be %d: this server speaks protocol version %d",
                            FL_WIRE_VERSION, FL_WIRE_VERSION);
    if (!tok || tok->type != MSGPACK_OBJECT_STR) {
        conn_fail(c, (int64_t)r->id, FL_EUNAUTHENTICATED, "hello needs \"token\": a string");
        return 0;
    }
    e = auth_lookup(&c->srv->auth, tok->via.str.ptr, tok->via.str.size);
    if (!e) {
        conn_fail(c, (int64_t)r->id, FL_EUNAUTHENTICATED,
                  "the token is not valid for this server; check --token or FLOWLOG_TOKEN");
        return 0;
    }
    is_operator = strcmp(e->tenant, AUTH_OPERATOR_TENANT) == 0;
    if (ten && !is_operator)
        return fl_error_set(err, FL_EFORBIDDEN,
                            "only operator tokens may name a tenant; this token acts for its own "
                            "tenant, so leave \"tenant\" out");
    if (ten && (ten->type != MSGPACK_OBJECT_STR ||
                !auth_tenant_valid(ten->via.str.ptr, ten->via.str.size)))
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "\"tenant\" must be 1..%d characters of A-Z a-z 0-9 . _ : -",
                            FL_TENANT_MAX);
    if (ten) {
        memcpy(c->tenant, ten->via.str.ptr, ten->via.str.size);
        c->tenant_len = ten->via.str.size;
    } else if (!is_operator) {
        c->tenant_len = strlen(e->tenant);
        memcpy(c->tenant, e->tenant, c->tenant_len);
    }
    c->tenant[c->tenant_len] = '\0';
    c->is_operator = is_operator;
    c->role = e->role;
    conn_ready(c);
    fl_debug("conn %llu (%s): hello: tenant %s, role %s%s", (unsigned long long)c->id, c->peer,
             c->tenant_len ? c->tenant : "(none)", auth_role_name(c->role),
             is_operator ? " (operator)" : "");
    off = conn_reply_begin(c);
    fl_wire_pack_ok_head(&c->pk, r->id);
    msgpack_pack_map(&c->pk, 4);
    fl_wire_pack_cstr(&c->pk, "server");
    fl_wire_pack_cstr(&c->pk, "flowlog " FL_SERVER_VERSION);
    fl_wire_pack_cstr(&c->pk, "version");
    msgpack_pack_int(&c->pk, FL_WIRE_VERSION);
    fl_wire_pack_cstr(&c->pk, "tenant");
    if (c->tenant_len)
        fl_wire_pack_strn(&c->pk, c->tenant, c->tenant_len);
    else
        msgpack_pack_nil(&c->pk);
    fl_wire_pack_cstr(&c->pk, "role");
    fl_wire_pack_cstr(&c->pk, auth_role_name(c->role));
    conn_reply_end(c, off, r->id);
    return 0;
}

/* Reply with an empty map. */
static int op_empty_reply(struct conn *c, uint64_t id)
{
    size_t off = conn_reply_begin(c);

    fl_wire_pack_ok_head(&c->pk, id);
    msgpack_pack_map(&c->pk, 0);
    conn_reply_end(c, off, id);
    return 0;
}

static int op_ping(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    (void)err;
    return op_empty_reply(c, r->id);
}

/* Pack and send a log read for f. */
static int op_reply_log(struct conn *c, uint64_t id, const struct fl_log_filter *f,
                        struct fl_error *err)
{
    size_t off = conn_reply_begin(c);
    int rc;

    fl_wire_pack_ok_head(&c->pk, id);
    if ((rc = fl_query_log(c->srv->store, conn_tenant(c), f, &c->pk, NULL, err)) != 0) {
        conn_reply_abort(c, off);
        return rc;
    }
    conn_reply_end(c, off, id);
    return 0;
}

static int op_log(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    struct fl_log_filter f;
    int rc;

    if ((rc = arg_filter(r, c, 1, &f, err)) != 0)
        return rc;
    return op_reply_log(c, r->id, &f, err);
}

/* All events of one run or one flow: a log read with exactly one of the two filters. */
static int op_timeline(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    struct fl_log_filter f;
    int rc;

    if ((rc = arg_filter(r, c, 1, &f, err)) != 0)
        return rc;
    if ((f.run_id.len > 0) == (f.flow_id.len > 0))
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "timeline needs exactly one of \"run_id\" "
                            "and \"flow_id\"");
    return op_reply_log(c, r->id, &f, err);
}

static int op_subscribe(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    struct fl_log_filter f;
    struct sub *s;
    size_t off;
    int rc;

    if ((rc = arg_filter(r, c, 0, &f, err)) != 0)
        return rc;
    if (conn_sub_find(c, r->id))
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "subscription %llu already exists on this connection; use a new id",
                            (unsigned long long)r->id);
    if (c->nsubs >= CONN_MAX_SUBS)
        return fl_error_set(err, FL_ETOO_LARGE,
                            "at most %d subscriptions per connection; unsubscribe one or open "
                            "another connection",
                            CONN_MAX_SUBS);
    if (!(s = sub_new(r->id, &f)))
        return fl_error_set(err, FL_EUNAVAILABLE, "server out of memory; retry later");
    off = conn_reply_begin(c);
    fl_wire_pack_ok_head(&c->pk, r->id);
    msgpack_pack_map(&c->pk, 1);
    fl_wire_pack_cstr(&c->pk, "sub");
    msgpack_pack_uint64(&c->pk, r->id);
    conn_reply_end(c, off, r->id);
    conn_sub_add(c, s); /* the first pushes follow the reply */
    return 0;
}

static int op_unsubscribe(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    uint64_t id;
    int present, rc;
    struct sub *s;

    if ((rc = arg_u64(r, "sub", 0, &id, &present, err)) != 0)
        return rc;
    if (!present)
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "\"sub\" is required: the subscribe "
                            "request's id");
    if (!(s = conn_sub_find(c, id)))
        return fl_error_set(err, FL_ENOT_FOUND, "no subscription %llu on this connection",
                            (unsigned long long)id);
    conn_sub_remove(c, s);
    return op_empty_reply(c, r->id);
}

static int op_state(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    const msgpack_object *t = arg(r, "as_of_time");
    struct fl_str flow;
    uint64_t seq;
    int64_t when = 0;
    int has_seq, rc;
    size_t off;

    if ((rc = arg_str(r, "flow_id", FL_ID_MAX, 1, &flow, err)) != 0 ||
        (rc = arg_u64(r, "as_of_seq", 0, &seq, &has_seq, err)) != 0)
        return rc;
    if (has_seq && t)
        return fl_error_set(err, FL_EBAD_REQUEST, "give \"as_of_seq\" or \"as_of_time\", not both");
    if (has_seq && seq == 0)
        return fl_error_set(err, FL_EBAD_REQUEST, "\"as_of_seq\" must be >= 1 (seqs start at 1)");
    if (t && fl_wire_read_ts(t, &when) != 0)
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "\"as_of_time\" must be a timestamp, microseconds since the epoch, "
                            "or an RFC 3339 time such as 2026-11-21T22:39:03.123456Z");
    off = conn_reply_begin(c);
    fl_wire_pack_ok_head(&c->pk, r->id);
    rc = fl_query_state(c->srv->store, conn_tenant(c), flow, seq, t != NULL, when, &c->pk, err);
    if (rc != 0) {
        conn_reply_abort(c, off);
        return rc;
    }
    /* A state is one answer and cannot be paged; its rows can be read in parts elsewhere. */
    conn_reply_end_advise(c, off, r->id,
                          "the flow's rows can be read a table at a time (table, where run_id) "
                          "and its events with timeline, or the server's operator can raise "
                          "--max-frame to read the state whole");
    return 0;
}

static int op_history(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    struct fl_str flow;
    uint64_t limit;
    size_t off;
    int rc;

    if ((rc = arg_str(r, "flow_id", FL_ID_MAX, 1, &flow, err)) != 0 ||
        (rc = arg_u64(r, "limit", OP_HISTORY_LIMIT, &limit, NULL, err)) != 0)
        return rc;
    off = conn_reply_begin(c);
    fl_wire_pack_ok_head(&c->pk, r->id);
    if ((rc = fl_query_history(c->srv->store, conn_tenant(c), flow, limit, &c->pk, err)) != 0) {
        conn_reply_abort(c, off);
        return rc;
    }
    conn_reply_end(c, off, r->id);
    return 0;
}

/* The paging cursor: whatever a previous reply's "next" held (bin; a string is accepted). */
static int arg_cursor(const struct conn_req *r, struct fl_str *out, struct fl_error *err)
{
    const msgpack_object *o = arg(r, "after");

    out->p = NULL;
    out->len = 0;
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_BIN) {
        out->p = o->via.bin.ptr;
        out->len = o->via.bin.size;
    } else if (o->type == MSGPACK_OBJECT_STR) {
        out->p = o->via.str.ptr;
        out->len = o->via.str.size;
    } else {
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "\"after\" must be the \"next\" value of the previous table reply");
    }
    return 0;
}

static int op_table(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    struct fl_str table, col, val, after;
    uint64_t limit;
    size_t off;
    int rc;

    if ((rc = arg_str(r, "table", 64, 1, &table, err)) != 0 ||
        (rc = arg_str(r, "column", 64, 0, &col, err)) != 0 ||
        /* text columns may hold "" (CONTRACT.md 2), so a row can be found by it */
        (rc = arg_str_in(r, "value", 0, FL_TEXT_MAX, 0, &val, err)) != 0 ||
        (rc = arg_cursor(r, &after, err)) != 0 ||
        (rc = arg_u64(r, "limit", 0, &limit, NULL, err)) != 0)
        return rc;
    if ((col.len > 0) != (arg(r, "value") != NULL))
        return fl_error_set(err, FL_EBAD_REQUEST, "give \"column\" and \"value\" together");
    off = conn_reply_begin(c);
    fl_wire_pack_ok_head(&c->pk, r->id);
    rc = fl_query_table(c->srv->store, conn_tenant(c), table, col, val, after, limit, &c->pk, err);
    if (rc != 0) {
        conn_reply_abort(c, off);
        return rc;
    }
    conn_reply_end(c, off, r->id);
    return 0;
}

/* Store-wide check, on the job thread (job.h) from a snapshot of its own: the server goes on
 * serving and committing meanwhile; the answer comes when it is done (conn_job_done). One
 * at a time. Admin only: it reads every record. */
static int op_verify(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    /* CONTRACT.md 5: store-wide for an operator (whether or not it named a tenant); a tenant's
     * admin is told about its own records only. */
    struct fl_str scope = c->is_operator ? (struct fl_str){"", 0} : conn_tenant(c);
    int rc = job_verify(&c->srv->job, c, r->id, scope, err);

    if (rc == 0) {
        c->in_job = 1;
        fl_info("conn %llu: verify started", (unsigned long long)c->id);
    }
    return rc;
}

/* Every projection made again from the log (what verify compares them with), on the job
 * thread. Operators only: it rewrites every tenant's projections, and appends and reads wait
 * for it (README "rebuild"), so it is maintenance for the store's operator, not a tenant's. */
static int op_rebuild(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    if (!c->is_operator)
        return fl_error_set(err, FL_EFORBIDDEN,
                            "rebuild rewrites every tenant's projections and holds appends and "
                            "reads while it runs: it needs an operator token (tenant *)");
    int rc = job_rebuild(&c->srv->job, c, r->id, err);

    if (rc == 0) {
        c->in_job = 1;
        fl_info("conn %llu: rebuild started", (unsigned long long)c->id);
    }
    return rc;
}

/* A backup name: [A-Za-z0-9._-], not starting with a dot (no paths, no hidden names). */
static int backup_name_ok(struct fl_str n)
{
    if (n.len == 0 || n.p[0] == '.')
        return 0;
    for (size_t i = 0; i < n.len; i++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-", n.p[i]))
            return 0;
    return 1;
}

/* A consistent copy of the whole store into DATA/backups/NAME on the server's host. The copy
 * never leaves the server, so a tenant's admin may ask for one without seeing other tenants'
 * data. It runs on the job thread (job.h) and is answered when done. */
static int op_backup(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    char dir[4096], name[80];
    struct fl_str n;
    int rc;

    if ((rc = arg_str(r, "name", 64, 0, &n, err)) != 0)
        return rc;
    if (n.len && !backup_name_ok(n))
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "\"name\" may hold only letters, digits, '.', '_' and '-', and may "
                            "not start with '.'");
    if (n.len) {
        snprintf(name, sizeof name, "%.*s", (int)n.len, n.p);
    } else {
        char ts[32];
        fl_time_format(fl_now_us(), ts);
        snprintf(name, sizeof name, "backup-%s", ts);
        for (char *p = name; *p; p++)
            if (*p == ':')
                *p = '-';
    }
    snprintf(dir, sizeof dir, "%s/backups", c->srv->cfg->data_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return fl_error_set(err, FL_EUNAVAILABLE, "cannot create %s: %s", dir, strerror(errno));
    if ((size_t)snprintf(dir, sizeof dir, "%s/backups/%s", c->srv->cfg->data_dir, name) >=
        sizeof dir)
        return fl_error_set(err, FL_EBAD_REQUEST, "the backup path is too long");
    if ((rc = job_backup(&c->srv->job, c, r->id, name, dir, err)) != 0)
        return rc;
    c->in_job = 1;
    fl_info("conn %llu: backup %s started", (unsigned long long)c->id, name);
    return 0;
}

/* Pack "key": unsigned value. */
static void pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t v)
{
    fl_wire_pack_cstr(pk, key);
    msgpack_pack_uint64(pk, v);
}

/* What both kinds of stats end with: the head, the uptime and the sync mode (three keys). */
static void pack_stats_server(msgpack_packer *pk, const struct server *srv)
{
    pack_kv_u64(pk, "head_seq", fl_store_head(srv->store));
    pack_kv_u64(pk, "uptime_s", (uint64_t)((fl_now_us() - srv->started_us) / 1000000));
    fl_wire_pack_cstr(pk, "sync");
    fl_wire_pack_cstr(pk, srv->cfg->sync ? "full" : "none");
}

/* A tenant admin's stats: its own connections and subscriptions, and what every tenant sees
 * anyway (the head seq is in every acknowledgement). The counters of all tenants together
 * would tell one tenant how busy the others are: they are an operator's (CONTRACT.md 5). */
static int op_stats_tenant(struct conn *c, struct conn_req *r)
{
    const struct server *srv = c->srv;
    msgpack_packer *pk = &c->pk;
    uint64_t conns = 0, subs = 0;
    const struct conn *o;
    size_t off;

    TAILQ_FOREACH(o, &srv->conns, link)
    if (o->state == CONN_READY && o->tenant_len == c->tenant_len &&
        memcmp(o->tenant, c->tenant, c->tenant_len) == 0) {
        conns++;
        subs += o->nsubs;
    }
    off = conn_reply_begin(c);
    fl_wire_pack_ok_head(pk, r->id);
    msgpack_pack_map(pk, 7);
    fl_wire_pack_cstr(pk, "scope");
    fl_wire_pack_cstr(pk, "tenant");
    fl_wire_pack_cstr(pk, "tenant");
    fl_wire_pack_strn(pk, c->tenant, c->tenant_len);
    pack_kv_u64(pk, "connections", conns);
    pack_kv_u64(pk, "subscribers", subs);
    pack_stats_server(pk, srv);
    conn_reply_end(c, off, r->id);
    return 0;
}

static int op_stats(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    const struct server *srv = c->srv;
    const struct commit_stats *cs = &srv->commit.stats;
    msgpack_packer *pk = &c->pk;
    size_t off;
    int rc;

    if (!c->is_operator)
        return op_stats_tenant(c, r);
    off = conn_reply_begin(c);
    fl_wire_pack_ok_head(pk, r->id);
    msgpack_pack_map(pk, 21);
    fl_wire_pack_cstr(pk, "scope");
    fl_wire_pack_cstr(pk, "store");
    pack_kv_u64(pk, "connections", srv->nconns);
    pack_kv_u64(pk, "connections_total", srv->conns_total);
    pack_kv_u64(pk, "connections_refused", srv->conns_refused);
    pack_kv_u64(pk, "closed_hello_timeout", srv->closed_hello_timeout);
    pack_kv_u64(pk, "closed_idle", srv->closed_idle);
    pack_kv_u64(pk, "closed_not_reading", srv->closed_not_reading);
    pack_kv_u64(pk, "subscribers", srv->nsubs);
    pack_kv_u64(pk, "subscriber_pauses", srv->sub_pauses);
    pack_kv_u64(pk, "appends", cs->appends_ok);
    pack_kv_u64(pk, "appends_failed", cs->appends_failed);
    pack_kv_u64(pk, "events_committed", cs->events);
    pack_kv_u64(pk, "duplicates", cs->duplicates);
    pack_kv_u64(pk, "commits", cs->commits);
    pack_kv_u64(pk, "commit_failures", cs->commit_failures);
    fl_wire_pack_cstr(pk, "events_per_commit");
    msgpack_pack_double(pk, cs->commits ? (double)cs->events / (double)cs->commits : 0.0);
    fl_wire_pack_cstr(pk, "commit_ms_avg");
    msgpack_pack_double(pk,
                        cs->attempts ? (double)cs->commit_us / 1e3 / (double)cs->attempts : 0.0);
    pack_stats_server(pk, srv);
    fl_wire_pack_cstr(pk, "store");
    if ((rc = fl_store_stats(srv->store, pk, err)) != 0) {
        conn_reply_abort(c, off);
        return rc;
    }
    conn_reply_end(c, off, r->id);
    return 0;
}

/* Parse and check every event, then queue the append for this pass's commit. The item takes
 * the frame, from which the parsed events borrow their strings; they keep nothing of the
 * decoded objects, which the next frame's decoding reuses. */
static int op_append(struct conn *c, struct conn_req *r, struct fl_error *err)
{
    const msgpack_object *evs = arg(r, "events");
    struct fl_event_limits lim = {c->srv->cfg->max_event};
    uint64_t max = c->srv->cfg->max_batch;
    struct commit_item *it;
    size_t n;
    int rc;

    if (!evs || evs->type != MSGPACK_OBJECT_ARRAY)
        return fl_error_set(err, FL_EBAD_REQUEST, "\"events\" must be an array of 1..%llu events",
                            (unsigned long long)max);
    n = evs->via.array.size;
    if (n == 0)
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "\"events\" is empty: an append carries 1..%llu events",
                            (unsigned long long)max);
    if (n > max)
        return fl_error_set(err, FL_ETOO_LARGE,
                            "an append carries at most %llu events and this one has %zu; split it",
                            (unsigned long long)max, n);
    if (!(it = commit_item_new(&c->srv->commit, n)))
        return fl_error_set(err, FL_EUNAVAILABLE, "server out of memory; retry later");
    for (size_t i = 0; i < n; i++) {
        rc = fl_event_parse(&evs->via.array.ptr[i], &lim, &it->events[i], err);
        if (rc != 0 && i > 0 && (rc == FL_EBAD_REQUEST || rc == FL_ETOO_LARGE)) {
            /* The error names the first bad event: the ones before this are checked against
             * the state first (and never committed), so that a refusal among them wins. */
            err->index = (int64_t)i;
            it->form_err = *err;
            it->app.then = &it->form_err;
            fl_error_clear(err);
            break;
        }
        if (rc != 0) {
            err->index = (int64_t)i;
            goto fail;
        }
        it->app.n = i + 1;
        if (it->events[i].type == FL_EV_FLOW_ROLLBACK && c->role < AUTH_ADMIN) {
            rc = fl_error_set(err, FL_EFORBIDDEN,
                              "event %zu: flow_rollback needs an admin token; this token's role "
                              "is %s",
                              i, auth_role_name(c->role));
            err->index = (int64_t)i;
            goto fail;
        }
    }
    memcpy(it->tenant, c->tenant, c->tenant_len);
    it->app.tenant.len = c->tenant_len;
    it->req_id = r->id;
    it->frame = r->frame;
    r->frame = NULL;
    conn_pending_add(c, it);
    commit_enqueue(&c->srv->commit, it);
    return 0;
fail:
    commit_item_free(&c->srv->commit, it);
    return rc;
}

/* Copy the n bytes at s to p; returns the end. */
static uint8_t *put_bytes(uint8_t *p, const uint8_t *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* One ack {"seq": uint64, "ts": timestamp, "duplicate": bool} at p; returns the end. */
static uint8_t *put_ack(uint8_t *p, const struct fl_ack *a)
{
    static const uint8_t seq[] = {0x83, 0xa3, 's', 'e', 'q'}, ts[] = {0xa2, 't', 's'};
    static const uint8_t dup[] = {0xa9, 'd', 'u', 'p', 'l', 'i', 'c', 'a', 't', 'e'};

    p = put_bytes(p, seq, sizeof seq);
    p += fl_mp_put_uint(p, a->seq);
    p = put_bytes(p, ts, sizeof ts);
    p += fl_wire_put_ts(p, a->ts);
    p = put_bytes(p, dup, sizeof dup);
    *p++ = a->duplicate ? 0xc3 : 0xc2;
    return p;
}

#define ACK_MAX (5 + 9 + 3 + FL_WIRE_TS_MAX + 10 + 1)

/* {"id", "ok": true, "result": {"results": [ack...]}}, packed in place: one append a step
 * writer's event, and through the packer its reply took 2,000 instructions (callgrind,
 * step/64). */
void conn_op_append_reply(struct conn *c, const struct commit_item *it)
{
    static const uint8_t results[] = {0x81, 0xa7, 'r', 'e', 's', 'u', 'l', 't', 's'};
    size_t off, n = it->app.n;
    uint8_t *p, *start;

    if (it->app.err.code != 0) {
        conn_reply_error(c, (int64_t)it->req_id, &it->app.err);
        return;
    }
    off = conn_reply_begin(c);
    start = n > SIZE_MAX / 2 / ACK_MAX ? NULL
            : (uint8_t *)fl_wire_reserve(&c->sb, FL_WIRE_OK_HEAD_MAX + sizeof results + 5 +
                                                     n * ACK_MAX);
    if (!start) {
        conn_reply_abort(c, off);
        conn_fail(c, (int64_t)it->req_id, FL_EINTERNAL,
                  "out of memory for the reply to an append that was committed");
        return;
    }
    p = start + fl_wire_put_ok_head(start, it->req_id);
    p = put_bytes(p, results, sizeof results);
    p += fl_mp_put_array(p, n);
    for (size_t i = 0; i < n; i++)
        p = put_ack(p, &it->acks[i]);
    c->sb.size += (size_t)(p - start);
    conn_reply_end(c, off, it->req_id);
}

/* ---- dispatch ---- */

static const struct op_def op_table_defs[] = {
    {"hello", PERM_ANY, 0, {"version", "token", "tenant"}, op_hello},
    {"ping", PERM_ANY, 0, {NULL}, op_ping},
    {"append", PERM_WRITE, 1, {"events"}, op_append},
    {"log", PERM_READ, 1, {"from", "limit", "type", "flow_id", "run_id"}, op_log},
    {"timeline", PERM_READ, 1, {"run_id", "flow_id", "from", "limit"}, op_timeline},
    {"subscribe", PERM_READ, 1, {"from", "type", "flow_id", "run_id"}, op_subscribe},
    {"unsubscribe", PERM_READ, 1, {"sub"}, op_unsubscribe},
    {"state", PERM_READ, 1, {"flow_id", "as_of_seq", "as_of_time"}, op_state},
    {"history", PERM_READ, 1, {"flow_id", "limit"}, op_history},
    {"table", PERM_READ, 1, {"table", "column", "value", "after", "limit"}, op_table},
    {"verify", PERM_ADMIN, 0, {NULL}, op_verify},
    {"stats", PERM_ADMIN, 0, {NULL}, op_stats},
    {"backup", PERM_ADMIN, 0, {"name"}, op_backup},
    {"rebuild", PERM_ADMIN, 0, {NULL}, op_rebuild},
};

#define OP_COUNT (sizeof op_table_defs / sizeof op_table_defs[0])

static const struct op_def *op_find(const char *name, size_t len)
{
    for (size_t i = 0; i < OP_COUNT; i++)
        if (strlen(op_table_defs[i].name) == len && memcmp(op_table_defs[i].name, name, len) == 0)
            return &op_table_defs[i];
    return NULL;
}

/* Keys not listed for an op are rejected, naming the key and what is allowed. */
static int op_check_keys(const struct op_def *d, const struct conn_req *r, struct fl_error *err)
{
    const msgpack_object_map *m = &r->msg.via.map;

    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        int ok = fl_mp_streq(k, "id") || fl_mp_streq(k, "op");
        char allowed[160] = "";

        for (size_t j = 0; !ok && j < 6 && d->keys[j]; j++)
            ok = fl_mp_streq(k, d->keys[j]);
        if (ok)
            continue;
        for (size_t j = 0; j < 6 && d->keys[j]; j++)
            snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s",
                     j ? ", " : "", d->keys[j]);
        if (k->type != MSGPACK_OBJECT_STR)
            return fl_error_set(err, FL_EBAD_REQUEST, "request keys must be strings");
        return fl_error_set(err, FL_EBAD_REQUEST, "unknown key \"%.*s\" for op %s (allowed: %s)",
                            (int)(k->via.str.size > 64 ? 64 : k->via.str.size), k->via.str.ptr,
                            d->name, allowed[0] ? allowed : "none");
    }
    return 0;
}

/* PROTOCOL.md 4: reader < writer < admin; an operator without a tenant may only ping, verify,
 * ask for stats, back up and rebuild. */
static int op_check_perm(const struct conn *c, const struct op_def *d, struct fl_error *err)
{
    static const enum auth_role need[] = {AUTH_READER, AUTH_READER, AUTH_WRITER, AUTH_ADMIN};

    if (d->perm == PERM_ANY)
        return 0;
    if (d->tenant && c->tenant_len == 0)
        return fl_error_set(err, FL_EFORBIDDEN,
                            "this operator connection names no tenant: name one in hello "
                            "(\"tenant\"; the CLI's --tenant T) to use %s; without one only "
                            "ping, verify, stats, backup and rebuild are allowed",
                            d->name);
    if (c->role < need[d->perm])
        return fl_error_set(err, FL_EFORBIDDEN, "%s needs a%s %s token%s; this token's role is %s",
                            d->name, need[d->perm] == AUTH_ADMIN ? "n" : "",
                            auth_role_name(need[d->perm]),
                            d->fn == op_append ? " (an admin token for flow_rollback)" : "",
                            auth_role_name(c->role));
    return 0;
}

void conn_op_dispatch(struct conn *c, struct conn_req *r)
{
    const struct op_def *d = op_find(r->op, r->op_len);
    struct fl_error err;
    int rc;

    fl_error_clear(&err);
    if (c->state == CONN_HELLO && (!d || d->fn != op_hello)) {
        conn_fail(c, (int64_t)r->id, FL_EUNAUTHENTICATED,
                  "send hello with a token first: nothing else is served before it");
        return;
    }
    if (!d) {
        char ops[160] = "";
        for (size_t i = 0; i < OP_COUNT; i++)
            snprintf(ops + strlen(ops), sizeof ops - strlen(ops), "%s%s", i ? ", " : "",
                     op_table_defs[i].name);
        rc = fl_error_set(&err, FL_EBAD_REQUEST, "unknown op \"%.*s\" (ops: %s)",
                          (int)(r->op_len > 64 ? 64 : r->op_len), r->op, ops);
        goto fail;
    }
    if ((rc = op_check_keys(d, r, &err)) != 0 || (rc = op_check_perm(c, d, &err)) != 0 ||
        (rc = d->fn(c, r, &err)) != 0)
        goto fail;
    return;
fail:
    if (err.code == 0)
        fl_error_set(&err, rc, "%s failed", d ? d->name : "request");
    conn_reply_error(c, (int64_t)r->id, &err);
}
