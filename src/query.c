/* query.c: the read side: log and timelines, a flow's state now or as of a seq or time,
 * attempt history, and table rows by indexed column. Each read is one snapshot. */
#include "query.h"

#include <stdlib.h>
#include <string.h>

#include "project.h"
#include "record.h"
#include "store_int.h"
#include "wire.h"

#define LOG_DEFAULT_BYTES (1024 * 1024)
#define LOG_MAX_SCAN 100000
#define TABLE_DEFAULT_LIMIT 1000

static void pack_key(msgpack_packer *pk, const char *k)
{
    fl_wire_pack_cstr(pk, k);
}

/* Pack one log record as {"seq", "ts", "type", "event_id", "data"}. */
static void pack_event(msgpack_packer *pk, const struct fl_record *r)
{
    msgpack_pack_map(pk, 5);
    pack_key(pk, "seq");
    msgpack_pack_uint64(pk, r->seq);
    pack_key(pk, "ts");
    fl_wire_pack_ts(pk, r->ts);
    pack_key(pk, "type");
    fl_wire_pack_strn(pk, r->type.p, r->type.len);
    pack_key(pk, "event_id");
    if (r->event_id.p)
        fl_wire_pack_strn(pk, r->event_id.p, r->event_id.len);
    else
        msgpack_pack_nil(pk);
    pack_key(pk, "data");
    msgpack_pack_object(pk, *r->data);
}

static int mdb_err(int rc, struct fl_error *err)
{
    return fl_store_mdb_error(rc, "read", err);
}

/* ---- log ---- */

struct log_scan {
    MDB_dbi dbi;        /* tlog, or the flow space */
    uint8_t prefix[17]; /* keys are prefix || seq(8) */
    size_t plen;
    uint64_t run_no;    /* with a run filter: only stream entries of this run */
    int empty;          /* the filter names something that does not exist */
};

/* Walk the stream of flow_no. */
static void log_source_flow(struct fl_store *s, struct log_scan *ls, uint64_t flow_no)
{
    ls->dbi = s->db.dbi[FL_DB_FLOWS];
    fl_put_be64(ls->prefix, flow_no);
    ls->prefix[8] = FL_KEY_STREAM;
    ls->plen = 9;
}

/* Choose the narrowest stream for the filter: a run's, a flow's, or the tenant's. */
static int log_source(struct fl_store *s, MDB_txn *txn, uint64_t tenant_no,
                      const struct fl_log_filter *f, struct log_scan *ls, struct fl_error *err)
{
    uint64_t run_no = 0, flow_no = 0, rflow = 0;
    int rc;

    ls->empty = 0;
    ls->run_no = 0;
    ls->dbi = s->db.dbi[FL_DB_TLOG];
    fl_put_be64(ls->prefix, tenant_no);
    ls->plen = 8;
    if (f->flow_id.len) {
        rc = fl_names_flow(txn, &s->db, tenant_no, f->flow_id, &flow_no);
        if (rc == MDB_NOTFOUND)
            ls->empty = 1;
        else if (rc != 0)
            return mdb_err(rc, err);
        log_source_flow(s, ls, flow_no);
    }
    if (f->run_id.len && !ls->empty) {
        rc = fl_names_run(txn, &s->db, tenant_no, f->run_id, &run_no, &rflow);
        if (rc == MDB_NOTFOUND || (rc == 0 && f->flow_id.len && rflow != flow_no))
            ls->empty = 1;
        else if (rc != 0)
            return mdb_err(rc, err);
        log_source_flow(s, ls, rflow); /* a run's events are its flow's that carry its run_no */
        ls->run_no = run_no;
    }
    return 0;
}

/* Walk the chosen stream from f->from, packing matching events into out. */
static int log_walk(struct fl_store *s, MDB_txn *txn, const struct log_scan *ls,
                    const struct fl_log_filter *f, msgpack_packer *out, uint64_t *count,
                    uint64_t *next, struct fl_error *err)
{
    size_t max_bytes = f->max_bytes ? f->max_bytes : LOG_DEFAULT_BYTES;
    msgpack_sbuffer *sb = out->data;
    uint8_t kb[17];
    MDB_val k = {ls->plen + 8, kb}, v;
    MDB_cursor *c;
    uint64_t scanned = 0;
    int rc;

    memcpy(kb, ls->prefix, ls->plen);
    fl_put_be64(kb + ls->plen, f->from ? f->from : 1);
    if ((rc = mdb_cursor_open(txn, ls->dbi, &c)) != 0)
        return mdb_err(rc, err);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != ls->plen + 8 || memcmp(k.mv_data, ls->prefix, ls->plen) != 0)
            break; /* past the stream: each of its keys is prefix || seq */
        uint64_t seq = fl_get_be64((const uint8_t *)k.mv_data + ls->plen);
        if (ls->run_no && (v.mv_size < 24 ||
                           fl_get_be64((const uint8_t *)v.mv_data + 16) != ls->run_no)) {
            *next = seq + 1;
            if (++scanned >= LOG_MAX_SCAN) {
                mdb_cursor_close(c);
                return 0;
            }
            continue;
        }
        MDB_val rv;
        struct fl_record r;
        msgpack_unpacked up;
        if ((rc = fl_store_get_record(txn, &s->db, seq, &rv)) != 0)
            break;
        if (fl_record_decode(rv.mv_data, rv.mv_size, &r, &up, err) != 0) {
            msgpack_unpacked_destroy(&up);
            mdb_cursor_close(c);
            return fl_error_set(err, FL_EINTERNAL, "record %llu is damaged (%s); run verify",
                                (unsigned long long)seq, err ? err->msg : "");
        }
        if (f->type < 0 || fl_event_type_from_name(r.type.p, r.type.len) == f->type) {
            pack_event(out, &r);
            (*count)++;
        }
        msgpack_unpacked_destroy(&up);
        *next = seq + 1;
        if ((f->limit && *count >= f->limit) || sb->size >= max_bytes ||
            ++scanned >= LOG_MAX_SCAN) {
            mdb_cursor_close(c);
            return 0;
        }
    }
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mdb_err(rc, err);
    *next = UINT64_MAX; /* index exhausted: the caller moves next to head + 1 */
    return 0;
}

int fl_query_log(struct fl_store *s, struct fl_str tenant, const struct fl_log_filter *f,
                 msgpack_packer *pk, uint64_t *count, struct fl_error *err)
{
    msgpack_sbuffer events;
    msgpack_packer epk;
    struct log_scan ls;
    MDB_txn *txn;
    uint64_t tenant_no, head, n = 0, next = f->from ? f->from : 1;
    int rc;

    if ((rc = fl_store_read_begin(s, &txn, err)) != 0)
        return rc;
    msgpack_sbuffer_init(&events);
    msgpack_packer_init(&epk, &events, msgpack_sbuffer_write);
    head = fl_store_log_head(txn, &s->db);
    rc = fl_names_tenant(txn, &s->db, tenant, &tenant_no);
    if (rc == MDB_NOTFOUND) {
        next = UINT64_MAX;
        rc = 0;
    } else if (rc != 0) {
        rc = mdb_err(rc, err);
    } else if ((rc = log_source(s, txn, tenant_no, f, &ls, err)) == 0) {
        if (ls.empty)
            next = UINT64_MAX;
        else
            rc = log_walk(s, txn, &ls, f, &epk, &n, &next, err);
    }
    fl_store_read_end(s, txn);
    if (rc == 0) {
        if (next == UINT64_MAX)
            next = (f->from > head + 1 ? f->from : head + 1);
        msgpack_pack_map(pk, 3);
        pack_key(pk, "events");
        msgpack_pack_array(pk, (size_t)n);
        if (events.size)
            msgpack_sbuffer_write(pk->data, events.data, events.size);
        pack_key(pk, "next");
        msgpack_pack_uint64(pk, next);
        pack_key(pk, "head");
        msgpack_pack_uint64(pk, head);
        if (count)
            *count = n;
    }
    msgpack_sbuffer_destroy(&events);
    return rc;
}

/* ---- state ---- */

struct row_vec {
    struct fl_row *v;
    size_t n, cap;
};

struct state {
    struct fl_arena *arena;
    struct row_vec t[FL_T_LAST + 1];
};

static int vec_push(struct row_vec *rv, const struct fl_row *r)
{
    if (rv->n == rv->cap) {
        size_t cap = rv->cap ? rv->cap * 2 : 16;
        struct fl_row *p = realloc(rv->v, cap * sizeof *p);
        if (!p)
            return -1;
        rv->v = p;
        rv->cap = cap;
    }
    rv->v[rv->n++] = *r;
    return 0;
}

static void state_free(struct state *st)
{
    for (int i = 0; i <= FL_T_LAST; i++)
        free(st->t[i].v);
    fl_arena_free(st->arena);
}

/* fl_ver_cb: keep each row's value as of the requested seq. */
static int keep_row(void *ctx, const uint8_t *g, size_t glen, const MDB_val *cur,
                    const MDB_val *at)
{
    struct state *st = ctx;
    struct fl_row r;
    int table = g[0];
    void *copy;

    (void)glen;
    (void)cur;
    if (at->mv_size == 0)
        return 0;
    if (table < FL_T_FLOWS || table > FL_T_LAST)
        return -2;
    if (!(copy = fl_arena_dup(st->arena, at->mv_data, at->mv_size)))
        return -1;
    if (fl_row_decode(table, copy, at->mv_size, &r) != 0)
        return -2;
    return vec_push(&st->t[table], &r) ? -1 : 0;
}

static int row_cmp(const void *a, const void *b)
{
    return fl_row_pk_cmp(a, b);
}

/* The last seq whose ts <= t (0 if none): ts never decreases along the log. */
static int seq_at_time(MDB_txn *txn, const struct fl_dbs *db, uint64_t head, int64_t t,
                       uint64_t *out, struct fl_error *err)
{
    uint64_t lo = 1, hi = head, best = 0;

    while (lo <= hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        MDB_val v;
        struct fl_record r;
        msgpack_unpacked up;
        int rc = fl_store_get_record(txn, db, mid, &v);
        if (rc != 0)
            return mdb_err(rc, err);
        rc = fl_record_decode(v.mv_data, v.mv_size, &r, &up, err);
        msgpack_unpacked_destroy(&up);
        if (rc != 0)
            return fl_error_set(err, FL_EINTERNAL, "record %llu is damaged; run verify",
                                (unsigned long long)mid);
        if (r.ts <= t) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    *out = best;
    return 0;
}

struct flow_point {
    uint64_t flow_no, seq, version;
    int64_t last_ts; /* the flow's last_update_ts at seq */
};

/* Resolve tenant, flow and the as-of point, then collect the flow's rows at that point. */
static int load_state(struct fl_store *s, MDB_txn *txn, struct fl_str tenant, struct fl_str flow_id,
                      uint64_t as_of_seq, int has_time, int64_t as_of_time, struct state *st,
                      struct flow_point *fp, struct fl_error *err)
{
    uint64_t tenant_no, reg_seq, head = fl_store_log_head(txn, &s->db);
    int rc;

    rc = fl_names_tenant(txn, &s->db, tenant, &tenant_no);
    if (rc == 0)
        rc = fl_names_flow(txn, &s->db, tenant_no, flow_id, &fp->flow_no);
    if (rc == MDB_NOTFOUND)
        return fl_error_set(err, FL_ENOT_FOUND, "flow \"%.*s\" is not registered",
                            (int)(flow_id.len > 256 ? 256 : flow_id.len), flow_id.p);
    if (rc != 0 || (rc = fl_names_flow_reg(txn, &s->db, fp->flow_no, &reg_seq)) != 0)
        return mdb_err(rc, err);
    if (has_time) {
        if ((rc = seq_at_time(txn, &s->db, head, as_of_time, &fp->seq, err)) != 0)
            return rc;
    } else if (as_of_seq > head) {
        return fl_error_set(err, FL_EBAD_REQUEST, "as_of_seq %llu is beyond the log's head %llu",
                            (unsigned long long)as_of_seq, (unsigned long long)head);
    } else {
        fp->seq = as_of_seq ? as_of_seq : head;
    }
    if (fp->seq < reg_seq)
        return fl_error_set(err, FL_ENOT_FOUND,
                            "flow \"%.*s\" did not exist at seq %llu (registered at seq %llu)",
                            (int)(flow_id.len > 256 ? 256 : flow_id.len), flow_id.p,
                            (unsigned long long)fp->seq, (unsigned long long)reg_seq);
    if ((rc = fl_flow_point(txn, &s->db, fp->flow_no, fp->seq, &fp->version, &fp->last_ts)))
        return mdb_err(rc, err);
    rc = fl_ver_scan(txn, &s->db, fp->flow_no, fp->seq, keep_row, st);
    if (rc == -1)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    if (rc == -2)
        return fl_error_set(err, FL_EINTERNAL, "a stored row version is damaged; run verify");
    if (rc != 0)
        return mdb_err(rc, err);
    for (int t = FL_T_FLOWS; t <= FL_T_LAST; t++)
        if (st->t[t].n > 1)
            qsort(st->t[t].v, st->t[t].n, sizeof(struct fl_row), row_cmp);
    for (size_t i = 0; i < st->t[FL_T_FLOWS].n; i++) {
        st->t[FL_T_FLOWS].v[i].c[FC_FLOW_LAST_UPDATE].t = FL_CELL_INT;
        st->t[FL_T_FLOWS].v[i].c[FC_FLOW_LAST_UPDATE].i = fp->last_ts;
    }
    return 0;
}

static void pack_cell(msgpack_packer *pk, const struct fl_cell *c, enum fl_col_type type)
{
    if (c->t == FL_CELL_NULL)
        msgpack_pack_nil(pk);
    else if (c->t == FL_CELL_STR)
        fl_wire_pack_strn(pk, c->s, c->len);
    else if (type == FL_CT_TS)
        fl_wire_pack_ts(pk, c->i);
    else
        msgpack_pack_int64(pk, c->i);
}

/* Pack a row as a map of its table's public columns. */
static void pack_row(msgpack_packer *pk, const struct fl_row *r)
{
    const struct fl_table_def *t = &fl_table_defs[r->table];

    msgpack_pack_map(pk, t->nvisible);
    for (size_t i = 0; i < t->nvisible; i++) {
        pack_key(pk, t->cols[i].name);
        pack_cell(pk, &r->c[i], t->cols[i].type);
    }
}

static int attempt_cmp(const void *pa, const void *pb)
{
    const struct fl_row *a = *(const struct fl_row *const *)pa;
    const struct fl_row *b = *(const struct fl_row *const *)pb;
    int64_t x = a->c[FC_RUN_ATTEMPT].i, y = b->c[FC_RUN_ATTEMPT].i;
    return x > y ? -1 : x < y;
}

static int str_cell_cmp(const void *pa, const void *pb)
{
    return fl_cell_cmp(*(const struct fl_cell *const *)pa, *(const struct fl_cell *const *)pb);
}

/* Pack one attempt (seed 001's history record) for run r. */
static int pack_attempt(msgpack_packer *pk, const struct state *st, const struct fl_row *r)
{
    const struct row_vec *pv = &st->t[FL_T_PATCHES];
    const struct fl_cell **arts = NULL;
    size_t iters = 0, na = 0, distinct = 0;

    for (size_t i = 0; i < st->t[FL_T_ITERATIONS].n; i++)
        iters += fl_cell_eq(&st->t[FL_T_ITERATIONS].v[i].c[0], &r->c[FC_RUN_ID]);
    if (pv->n && !(arts = malloc(pv->n * sizeof *arts)))
        return -1;
    for (size_t i = 0; i < pv->n; i++)
        if (fl_cell_eq(&pv->v[i].c[0], &r->c[FC_RUN_ID]))
            arts[na++] = &pv->v[i].c[FC_PA_ARTIFACT];
    if (na > 1)
        qsort(arts, na, sizeof *arts, str_cell_cmp);
    for (size_t i = 0; i < na; i++)
        if (i == 0 || str_cell_cmp(&arts[i], &arts[distinct - 1]) != 0)
            arts[distinct++] = arts[i];

    /* seed 001's history record, key by key; the run row holds every column it needs */
    static const struct {
        const char *key;
        int col; /* -1: computed below */
        enum fl_col_type type;
    } keys[] = {
        {"attempt_id", FC_RUN_ID, FL_CT_STR},
        {"attempt_number", FC_RUN_ATTEMPT, FL_CT_INT},
        {"flow_id", FC_RUN_FLOW, FL_CT_STR},
        {"job_id", FC_RUN_JOB_ID, FL_CT_STR},
        {"job_run_id", FC_RUN_JOB_RUN_ID, FL_CT_STR},
        {"status", FC_RUN_STATUS, FL_CT_STR},
        {"started_at", FC_RUN_START, FL_CT_TS},
        {"completed_at", FC_RUN_END, FL_CT_TS},
        {"duration_seconds", -1, FL_CT_INT},
        {"progress_percentage", FC_RUN_PROGRESS, FL_CT_INT},
        {"validation_percentage", FC_RUN_VALIDATION, FL_CT_INT},
        {"iterations", -1, FL_CT_INT},
        {"generated_notebooks", -1, FL_CT_STR},
        {"error_message", FC_RUN_ERROR_MSG, FL_CT_STR},
        {"status_message", FC_RUN_STATUS_MSG, FL_CT_STR},
        {"triggered_by", FC_RUN_TRIGGERED_BY, FL_CT_STR},
    };
    msgpack_pack_map(pk, sizeof keys / sizeof keys[0]);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        pack_key(pk, keys[k].key);
        if (keys[k].col >= 0) {
            pack_cell(pk, &r->c[keys[k].col], keys[k].type);
        } else if (keys[k].key[0] == 'd') { /* whole seconds, once the run has ended */
            if (r->c[FC_RUN_END].t == FL_CELL_INT && r->c[FC_RUN_START].t == FL_CELL_INT)
                msgpack_pack_int64(pk, (r->c[FC_RUN_END].i - r->c[FC_RUN_START].i) / 1000000);
            else
                msgpack_pack_nil(pk);
        } else if (keys[k].key[0] == 'i') {
            msgpack_pack_uint64(pk, iters);
        } else {
            msgpack_pack_array(pk, distinct);
            for (size_t i = 0; i < distinct; i++)
                pack_cell(pk, arts[i], FL_CT_STR);
        }
    }
    free(arts);
    return 0;
}

/* Pack up to limit attempts, newest first. */
static int pack_attempts(msgpack_packer *pk, const struct state *st, uint64_t limit,
                         uint64_t *packed)
{
    const struct row_vec *runs = &st->t[FL_T_RUNS];
    const struct fl_row **order = NULL;
    size_t n = runs->n;
    int rc = 0;

    if (n && !(order = malloc(n * sizeof *order)))
        return -1;
    for (size_t i = 0; i < n; i++)
        order[i] = &runs->v[i];
    if (n > 1)
        qsort(order, n, sizeof *order, attempt_cmp);
    if (limit && n > limit)
        n = (size_t)limit;
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = pack_attempt(pk, st, order[i]);
    free(order);
    *packed = n;
    return rc;
}

int fl_query_state(struct fl_store *s, struct fl_str tenant, struct fl_str flow_id,
                   uint64_t as_of_seq, int has_time, int64_t as_of_time, msgpack_packer *pk,
                   struct fl_error *err)
{
    struct state st = {0};
    struct flow_point fp = {0};
    MDB_txn *txn;
    uint64_t n;
    int rc;

    if (!(st.arena = fl_arena_new()))
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    if ((rc = fl_store_read_begin(s, &txn, err)) != 0) {
        state_free(&st);
        return rc;
    }
    rc = load_state(s, txn, tenant, flow_id, as_of_seq, has_time, as_of_time, &st, &fp, err);
    if (rc == 0) {
        msgpack_pack_map(pk, 11);
        pack_key(pk, "flow_id");
        fl_wire_pack_strn(pk, flow_id.p, flow_id.len);
        pack_key(pk, "as_of_seq");
        msgpack_pack_uint64(pk, fp.seq);
        pack_key(pk, "version");
        msgpack_pack_uint64(pk, fp.version);
        for (int t = FL_T_FLOWS; t <= FL_T_LAST; t++) {
            pack_key(pk, fl_table_defs[t].name);
            msgpack_pack_array(pk, st.t[t].n);
            for (size_t i = 0; i < st.t[t].n; i++)
                pack_row(pk, &st.t[t].v[i]);
        }
        pack_key(pk, "attempt_history");
        if (pack_attempts(pk, &st, 0, &n) != 0)
            rc = fl_error_set(err, FL_EINTERNAL, "out of memory");
    }
    /* Rows borrow from the arena, not from LMDB, but end the snapshot only after packing. */
    fl_store_read_end(s, txn);
    state_free(&st);
    return rc;
}

int fl_query_history(struct fl_store *s, struct fl_str tenant, struct fl_str flow_id,
                     uint64_t limit, msgpack_packer *pk, struct fl_error *err)
{
    struct state st = {0};
    struct flow_point fp = {0};
    msgpack_sbuffer sb;
    msgpack_packer hp;
    MDB_txn *txn;
    uint64_t n = 0;
    int rc;

    if (!(st.arena = fl_arena_new()))
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    if ((rc = fl_store_read_begin(s, &txn, err)) != 0) {
        state_free(&st);
        return rc;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&hp, &sb, msgpack_sbuffer_write);
    rc = load_state(s, txn, tenant, flow_id, 0, 0, 0, &st, &fp, err);
    if (rc == 0 && pack_attempts(&hp, &st, limit ? limit : 20, &n) != 0)
        rc = fl_error_set(err, FL_EINTERNAL, "out of memory");
    if (rc == 0) {
        msgpack_pack_map(pk, 3);
        pack_key(pk, "flow_id");
        fl_wire_pack_strn(pk, flow_id.p, flow_id.len);
        pack_key(pk, "history");
        if (sb.size)
            msgpack_sbuffer_write(pk->data, sb.data, sb.size);
        pack_key(pk, "count");
        msgpack_pack_uint64(pk, n);
    }
    fl_store_read_end(s, txn);
    msgpack_sbuffer_destroy(&sb);
    state_free(&st);
    return rc;
}

/* ---- tables ---- */

/* A table read walks one of three key ranges: the idx entries of a value, the current rows of
 * one flow (rows found through their flow or run), or the current rows of every flow of the
 * tenant. The opaque cursor is the last key returned, prefixed in the last case by the flow's
 * name key. */
struct table_scan {
    struct fl_store *s;
    MDB_txn *txn;
    int table, col, mode;
    struct fl_str value;
    uint64_t tenant_no;
    struct fl_buf prefix; /* of the range walked (idx or flow space) */
    msgpack_packer *rows;
    uint64_t n, limit;
    struct fl_buf next;
    int more;
};

enum { SCAN_INDEX, SCAN_FLOW, SCAN_TENANT };

/* One answer holds at most limit rows and about 1 MiB, so that it always fits a frame. */
static int table_full(const struct table_scan *ts)
{
    return ts->n >= ts->limit || ((msgpack_sbuffer *)ts->rows->data)->size >= LOG_DEFAULT_BYTES;
}

/* Pack a current row; flows rows get their last_update_ts from the stream. */
static int emit_row(struct table_scan *ts, uint64_t flow_no, const MDB_val *v)
{
    struct fl_row r;

    if (fl_row_decode(ts->table, v->mv_data, v->mv_size, &r) != 0)
        return -1;
    if (ts->table == FL_T_FLOWS) {
        uint64_t version;
        int64_t last;
        if (fl_flow_point(ts->txn, &ts->s->db, flow_no, UINT64_MAX, &version, &last) != 0)
            return -1;
        r.c[FC_FLOW_LAST_UPDATE].t = FL_CELL_INT;
        r.c[FC_FLOW_LAST_UPDATE].i = last;
    }
    pack_row(ts->rows, &r);
    ts->n++;
    return 0;
}

/* Walk the current rows under one flow's prefix, from after `after` (a key of that range). */
static int scan_flow_rows(struct table_scan *ts, const struct fl_buf *prefix, struct fl_str after,
                          const struct fl_buf *cursor_head)
{
    uint64_t flow_no = fl_get_be64(prefix->p);
    MDB_cursor *c;
    MDB_val k, v;
    int rc;

    if ((rc = mdb_cursor_open(ts->txn, ts->s->db.dbi[FL_DB_FLOWS], &c)) != 0)
        return rc;
    k.mv_size = after.len ? after.len : prefix->len;
    k.mv_data = after.len ? (void *)after.p : prefix->p;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && after.len && k.mv_size == after.len && !memcmp(k.mv_data, after.p, after.len))
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < prefix->len || memcmp(k.mv_data, prefix->p, prefix->len))
            break;
        if (table_full(ts)) {
            ts->more = 1;
            break;
        }
        if (emit_row(ts, flow_no, &v) != 0) {
            rc = -1;
            break;
        }
        ts->next.len = 0;
        if ((cursor_head && fl_buf_add(&ts->next, cursor_head->p, cursor_head->len)) ||
            fl_buf_add(&ts->next, k.mv_data, k.mv_size)) {
            rc = -1;
            break;
        }
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Walk the idx entries of (table, col, value); check each row's real value (hashes collide). */
static int scan_index(struct table_scan *ts, struct fl_str after)
{
    MDB_cursor *c;
    MDB_val k, v;
    struct fl_buf rk = {0};
    int rc;

    if ((rc = mdb_cursor_open(ts->txn, ts->s->db.dbi[FL_DB_IDX], &c)) != 0)
        return rc;
    k.mv_size = after.len ? after.len : ts->prefix.len;
    k.mv_data = after.len ? (void *)after.p : ts->prefix.p;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && after.len && k.mv_size == after.len && !memcmp(k.mv_data, after.p, after.len))
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const uint8_t *kp = k.mv_data;
        MDB_val key, row;
        struct fl_row r;
        if (k.mv_size < ts->prefix.len + 8 || memcmp(kp, ts->prefix.p, ts->prefix.len))
            break;
        if (table_full(ts)) {
            ts->more = 1;
            break;
        }
        uint64_t flow_no = fl_get_be64(kp + ts->prefix.len);
        rk.len = 0;
        if (fl_buf_add_be64(&rk, flow_no) || fl_buf_add_u8(&rk, FL_KEY_CURRENT) ||
            fl_buf_add_u8(&rk, (uint8_t)ts->table) ||
            fl_buf_add(&rk, kp + ts->prefix.len + 8, k.mv_size - ts->prefix.len - 8)) {
            rc = -1;
            break;
        }
        key.mv_size = rk.len;
        key.mv_data = rk.p;
        rc = mdb_get(ts->txn, ts->s->db.dbi[FL_DB_FLOWS], &key, &row);
        if (rc == MDB_NOTFOUND)
            continue;
        if (rc != 0 || fl_row_decode(ts->table, row.mv_data, row.mv_size, &r) != 0) {
            rc = rc ? rc : -1;
            break;
        }
        const struct fl_cell *cc = &r.c[ts->col];
        if (cc->t != FL_CELL_STR || cc->len != ts->value.len ||
            memcmp(cc->s, ts->value.p, cc->len))
            continue; /* a hash collision, not a match */
        if (emit_row(ts, flow_no, &row) != 0) {
            rc = -1;
            break;
        }
        ts->next.len = 0;
        if (fl_buf_add(&ts->next, k.mv_data, k.mv_size)) {
            rc = -1;
            break;
        }
    }
    mdb_cursor_close(c);
    fl_buf_free(&rk);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The flow-space prefix of a table's current rows under flow_no (and run_no, if not 0). */
static int flow_prefix(struct fl_buf *p, uint64_t flow_no, int table, uint64_t run_no)
{
    p->len = 0;
    if (fl_buf_add_be64(p, flow_no) || fl_buf_add_u8(p, FL_KEY_CURRENT) ||
        fl_buf_add_u8(p, (uint8_t)table))
        return -1;
    return run_no ? fl_buf_add_be64(p, run_no) : 0;
}

/* Every flow of the tenant in name order, then its rows. Cursor: u16 name-key length, the
 * name key, then the row key. */
static int scan_tenant(struct table_scan *ts, struct fl_str after)
{
    struct fl_buf nk = {0}, head = {0}, prefix = {0};
    struct fl_str row_after = {NULL, 0};
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc;

    if (fl_buf_add_u8(&nk, 'F') || fl_buf_add_be64(&nk, ts->tenant_no)) {
        rc = -1;
        goto out;
    }
    if ((rc = mdb_cursor_open(ts->txn, ts->s->db.dbi[FL_DB_NAMES], &c)) != 0)
        goto out;
    if (after.len) {
        size_t nl = after.len >= 2 ? ((size_t)(uint8_t)after.p[0] << 8) | (uint8_t)after.p[1] : 0;
        if (after.len < 2 || nl + 2 > after.len || nl < nk.len || memcmp(after.p + 2, nk.p, nk.len)) {
            rc = -2;
            goto out;
        }
        k.mv_size = nl;
        k.mv_data = (void *)(after.p + 2);
        row_after.p = after.p + 2 + nl;
        row_after.len = after.len - 2 - nl;
    } else {
        k.mv_size = nk.len;
        k.mv_data = nk.p;
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < nk.len || memcmp(k.mv_data, nk.p, nk.len) || v.mv_size != 8)
            break;
        uint64_t flow_no = fl_get_be64(v.mv_data);
        head.len = 0;
        if (fl_buf_add_u8(&head, (uint8_t)(k.mv_size >> 8)) ||
            fl_buf_add_u8(&head, (uint8_t)k.mv_size) || fl_buf_add(&head, k.mv_data, k.mv_size) ||
            flow_prefix(&prefix, flow_no, ts->table, 0)) {
            rc = -1;
            break;
        }
        if (row_after.len &&
            (row_after.len < prefix.len || memcmp(row_after.p, prefix.p, prefix.len)))
            row_after.len = 0; /* not this flow's key: start the flow from its top */
        rc = scan_flow_rows(ts, &prefix, row_after, &head);
        row_after.len = 0;
        if (rc != 0 || ts->more)
            break;
    }
out:
    if (c)
        mdb_cursor_close(c);
    fl_buf_free(&nk);
    fl_buf_free(&head);
    fl_buf_free(&prefix);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Decide how to reach the rows asked for. 1: nothing matches (an unknown flow or run). */
static int table_plan(struct table_scan *ts, struct fl_error *err)
{
    uint64_t flow_no, run_no;
    int rc;

    if (ts->col < 0) {
        ts->mode = SCAN_TENANT;
        return 0;
    }
    if (fl_table_defs[ts->table].indexed[ts->col] == FL_IDX_SECONDARY) {
        ts->mode = SCAN_INDEX;
        if (fl_buf_add_be64(&ts->prefix, ts->tenant_no) ||
            fl_buf_add_u8(&ts->prefix, (uint8_t)ts->table) ||
            fl_buf_add_u8(&ts->prefix, (uint8_t)ts->col) ||
            fl_buf_add_be64(&ts->prefix, fl_hash64(ts->value.p, ts->value.len)))
            return fl_error_set(err, FL_EINTERNAL, "out of memory");
        return 0;
    }
    ts->mode = SCAN_FLOW;
    if (ts->table == FL_T_RUNS) {
        rc = fl_names_flow(ts->txn, &ts->s->db, ts->tenant_no, ts->value, &flow_no);
        run_no = 0;
    } else {
        rc = fl_names_run(ts->txn, &ts->s->db, ts->tenant_no, ts->value, &run_no, &flow_no);
    }
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0)
        return mdb_err(rc, err);
    if (flow_prefix(&ts->prefix, flow_no, ts->table, run_no) != 0)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    return 0;
}

/* Check the table and the filter column; fills ts->table and ts->col. */
static int table_args(struct table_scan *ts, struct fl_str table, struct fl_str where_col,
                      struct fl_error *err)
{
    ts->table = fl_table_from_name(table.p, table.len);
    if (ts->table < 0)
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "table: \"%.*s\" is not one of migration_flows, migration_runs, "
                            "migration_iterations, migration_patches, migration_sast_results, "
                            "migration_exec_results, migration_human_requests",
                            (int)(table.len > 64 ? 64 : table.len), table.p);
    ts->col = -1;
    if (!where_col.len)
        return 0;
    ts->col = fl_table_col(ts->table, where_col.p, where_col.len);
    if (ts->col < 0 || !fl_table_defs[ts->table].indexed[ts->col])
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "column: %.*s is not an indexed column of %s (see PROTOCOL.md for "
                            "the indexed columns of each table)",
                            (int)(where_col.len > 64 ? 64 : where_col.len), where_col.p,
                            fl_table_defs[ts->table].name);
    return 0;
}

/* Run the planned scan; translate its failures. */
static int table_run(struct table_scan *ts, struct fl_str after, struct fl_error *err)
{
    int rc;

    if (after.len && ts->mode != SCAN_TENANT &&
        (after.len < ts->prefix.len || memcmp(after.p, ts->prefix.p, ts->prefix.len)))
        return fl_error_set(err, FL_EBAD_REQUEST, "after: not a cursor of this table query");
    rc = ts->mode == SCAN_INDEX  ? scan_index(ts, after)
         : ts->mode == SCAN_FLOW ? scan_flow_rows(ts, &ts->prefix, after, NULL)
                                 : scan_tenant(ts, after);
    if (rc == -2)
        return fl_error_set(err, FL_EBAD_REQUEST, "after: not a cursor of this table query");
    if (rc == -1)
        return fl_error_set(err, FL_EINTERNAL, "a stored row is damaged or memory ran out");
    return rc ? mdb_err(rc, err) : 0;
}

int fl_query_table(struct fl_store *s, struct fl_str tenant, struct fl_str table,
                   struct fl_str where_col, struct fl_str where_val, struct fl_str after,
                   uint64_t limit, msgpack_packer *pk, struct fl_error *err)
{
    struct table_scan ts = {0};
    msgpack_sbuffer sb;
    msgpack_packer rp;
    int rc;

    if ((rc = table_args(&ts, table, where_col, err)) != 0)
        return rc;
    ts.s = s;
    ts.value = where_val;
    ts.limit = limit && limit < TABLE_DEFAULT_LIMIT ? limit : TABLE_DEFAULT_LIMIT;
    ts.rows = &rp;
    if ((rc = fl_store_read_begin(s, &ts.txn, err)) != 0)
        return rc;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&rp, &sb, msgpack_sbuffer_write);
    rc = fl_names_tenant(ts.txn, &s->db, tenant, &ts.tenant_no);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    else if (rc != 0)
        rc = mdb_err(rc, err);
    else if ((rc = table_plan(&ts, err)) == 1)
        rc = 0;
    else if (rc == 0)
        rc = table_run(&ts, after, err);
    fl_store_read_end(s, ts.txn);
    if (rc == 0) {
        msgpack_pack_map(pk, 3);
        pack_key(pk, "table");
        fl_wire_pack_cstr(pk, fl_table_defs[ts.table].name);
        pack_key(pk, "rows");
        msgpack_pack_array(pk, (size_t)ts.n);
        if (sb.size)
            msgpack_sbuffer_write(pk->data, sb.data, sb.size);
        pack_key(pk, "next");
        if (ts.more && ts.next.len) {
            msgpack_pack_bin(pk, ts.next.len);
            msgpack_pack_bin_body(pk, ts.next.p, ts.next.len);
        } else {
            msgpack_pack_nil(pk);
        }
    }
    msgpack_sbuffer_destroy(&sb);
    fl_buf_free(&ts.next);
    fl_buf_free(&ts.prefix);
    return rc;
}
