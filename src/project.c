/* project.c: what each event does to the projections, and rollback. The order of checks is the
 * contract's (section 3): idempotency, expected_version, existence, transitions. Every check
 * reads; only when all have passed does anything get written, so a rejected event leaves no
 * trace and needs no undo. */
#include "project.h"

#include <stdlib.h>
#include <string.h>

/* LMDB's longest key (mdb_env_get_maxkeysize with the default build). A longer key would get
 * MDB_BAD_VALSIZE from LMDB itself, so refusing to build one changes nothing. */
#define KEY_MAX 511

/* kind(1) [no(8)] id: a names key, built on the stack. Returns its length, or 0 if too long. */
static size_t name_key(uint8_t kb[KEY_MAX], char kind, const uint64_t *no, struct fl_str id)
{
    size_t n = 1 + (no ? 8 : 0);

    if (id.len > KEY_MAX - n)
        return 0;
    kb[0] = (uint8_t)kind;
    if (no)
        fl_put_be64(kb + 1, *no);
    if (id.len)
        memcpy(kb + n, id.p, id.len);
    return n + id.len;
}

static int get_name(MDB_txn *txn, const struct fl_dbs *db, const uint8_t *kb, size_t n, MDB_val *v)
{
    MDB_val key = {n, (void *)kb};

    return n ? mdb_get(txn, db->dbi[FL_DB_NAMES], &key, v) : MDB_BAD_VALSIZE;
}

int fl_names_tenant(MDB_txn *txn, const struct fl_dbs *db, struct fl_str tenant, uint64_t *no)
{
    uint8_t kb[KEY_MAX];
    MDB_val v;
    int rc = get_name(txn, db, kb, name_key(kb, 'T', NULL, tenant), &v);

    if (rc == 0)
        *no = fl_get_be64(v.mv_data);
    return rc;
}

int fl_names_flow(MDB_txn *txn, const struct fl_dbs *db, uint64_t tenant_no, struct fl_str flow_id,
                  uint64_t *flow_no)
{
    uint8_t kb[KEY_MAX];
    MDB_val v;
    int rc = get_name(txn, db, kb, name_key(kb, 'F', &tenant_no, flow_id), &v);

    if (rc == 0)
        *flow_no = fl_get_be64(v.mv_data);
    return rc;
}

int fl_names_flow_reg(MDB_txn *txn, const struct fl_dbs *db, uint64_t flow_no, uint64_t *reg_seq)
{
    uint8_t kb[9];
    MDB_val k = {9, kb}, v;
    int rc;

    kb[0] = 'G';
    fl_put_be64(kb + 1, flow_no);
    rc = mdb_get(txn, db->dbi[FL_DB_NAMES], &k, &v);
    if (rc == 0)
        *reg_seq = fl_get_be64(v.mv_data);
    return rc;
}

/* The flow's version and ts right after seq upto, read through cursor c (which is left on the
 * stream's last entry at or before upto, or near it). */
static int stream_point(MDB_cursor *c, uint64_t flow_no, uint64_t upto, uint64_t *version,
                        int64_t *ts)
{
    uint8_t kb[17];
    MDB_val k = {17, kb}, v;
    int rc;

    *version = 0;
    *ts = 0;
    fl_put_be64(kb, flow_no);
    if (upto == UINT64_MAX) { /* the first key after the whole stream */
        kb[8] = FL_KEY_STREAM + 1;
        k.mv_size = 9;
    } else {
        kb[8] = FL_KEY_STREAM;
        fl_put_be64(kb + 9, upto + 1);
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    rc = rc == 0 ? mdb_cursor_get(c, &k, &v, MDB_PREV)
                 : rc == MDB_NOTFOUND ? mdb_cursor_get(c, &k, &v, MDB_LAST) : rc;
    if (rc == 0 && k.mv_size == 17 && fl_get_be64(k.mv_data) == flow_no &&
        ((const uint8_t *)k.mv_data)[8] == FL_KEY_STREAM && v.mv_size >= 24) {
        *version = fl_get_be64(v.mv_data);
        *ts = (int64_t)fl_get_be64((const uint8_t *)v.mv_data + 8);
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int fl_flow_point(MDB_txn *txn, const struct fl_dbs *db, uint64_t flow_no, uint64_t upto,
                  uint64_t *version, int64_t *ts)
{
    MDB_cursor *c;
    int rc;

    *version = 0;
    *ts = 0;
    if ((rc = mdb_cursor_open(txn, db->dbi[FL_DB_FLOWS], &c)) != 0)
        return rc;
    rc = stream_point(c, flow_no, upto, version, ts);
    mdb_cursor_close(c);
    return rc;
}

int fl_names_run(MDB_txn *txn, const struct fl_dbs *db, uint64_t tenant_no, struct fl_str run_id,
                 uint64_t *run_no, uint64_t *flow_no)
{
    uint8_t kb[KEY_MAX];
    MDB_val v;
    int rc = get_name(txn, db, kb, name_key(kb, 'R', &tenant_no, run_id), &v);

    if (rc == 0) {
        *run_no = fl_get_be64(v.mv_data);
        *flow_no = fl_get_be64((const uint8_t *)v.mv_data + 8);
    }
    return rc;
}

/* ---- the lookup caches: per transaction (struct fl_ptx.cache) and of committed names
 * (struct fl_ptx.names, kept by the store across transactions) ---- */

/* Key -> up to two numbers. Keys are names keys as stored (kind [no] id: a tenant's, flow's or
 * run's numbers) and 'V' flow_no (a flow's version, which names keys never start with).
 * Entries are kept in the order added, their keys' bytes in one buffer; an open-addressing
 * table of entry numbers finds them. Only the table is zeroed, so a transaction that caches
 * little costs little. */
struct pc_entry {
    uint64_t h;
    uint32_t off, len; /* the key's bytes in keys */
    uint64_t v[2];
};

struct fl_pcache {
    uint64_t seed;  /* random per cache: ids are chosen by clients, collisions must not be */
    uint32_t *slot; /* 0: empty, else 1 + an index into ent */
    size_t mask;
    struct pc_entry *ent;
    size_t n, cap;
    struct fl_buf keys;
};

/* More keys than this are not cached in a transaction (a bound on memory; one event adds at
 * most three). */
#define PC_MAX_KEYS (1u << 18)
#define PC_SLOTS 256 /* to start with: 1 KiB */
#define PC_VERSION 'V'
/* The committed names' cache is cleared when it would pass either bound (then about 26 MiB:
 * 8 MiB of entries, 2 MiB of table, 16 MiB of key bytes), so that it follows the names in use. */
#define NC_MAX_KEYS (1u << 18)
#define NC_MAX_BYTES (16u << 20)

static void pc_free(struct fl_pcache **cp)
{
    struct fl_pcache *c = *cp;

    if (!c)
        return;
    free(c->slot);
    free(c->ent);
    fl_buf_free(&c->keys);
    free(c);
    *cp = NULL;
}

void fl_project_begin(struct fl_ptx *x, MDB_txn *txn)
{
    x->txn = txn;
    memset(x->cur, 0, sizeof x->cur);
}

void fl_project_forget(struct fl_ptx *x)
{
    pc_free(&x->cache);
}

void fl_project_names_drop(struct fl_pcache **names)
{
    pc_free(names);
}

/* The slot of key k: holding its entry, or the empty slot where it would go. */
static uint32_t *pc_slot(const struct fl_pcache *c, uint64_t h, const uint8_t *k, size_t n)
{
    for (size_t i = h & c->mask;; i = (i + 1) & c->mask) {
        uint32_t *sl = &c->slot[i];
        const struct pc_entry *e = *sl ? &c->ent[*sl - 1] : NULL;
        if (!e || (e->h == h && e->len == n && memcmp(c->keys.p + e->off, k, n) == 0))
            return sl;
    }
}

/* 1 and v when key k[0..n) is in cache c (which may be NULL), else 0. */
static int pc_get(const struct fl_pcache *c, const uint8_t *k, size_t n, uint64_t v[2])
{
    const uint32_t *sl;

    if (!c || !n)
        return 0;
    sl = pc_slot(c, fl_hash64_seeded(k, n, c->seed), k, n);
    if (!*sl)
        return 0;
    v[0] = c->ent[*sl - 1].v[0];
    v[1] = c->ent[*sl - 1].v[1];
    return 1;
}

static int pc_grow(struct fl_pcache *c)
{
    size_t cap = 2 * (c->mask + 1);
    uint32_t *slot = calloc(cap, sizeof *slot);

    if (!slot)
        return -1;
    for (size_t e = 0; e < c->n; e++) {
        size_t j = c->ent[e].h & (cap - 1);
        while (slot[j])
            j = (j + 1) & (cap - 1);
        slot[j] = (uint32_t)e + 1;
    }
    free(c->slot);
    c->slot = slot;
    c->mask = cap - 1;
    return 0;
}

/* Cache k[0..n) -> v0, v1 in *cp (made on first use). A cached key's value is replaced in
 * place, before anything that can fail, so a cache never keeps an old value; a new key is left
 * out when memory runs short or the cache holds max keys. */
static void pc_put(struct fl_pcache **cp, size_t max, uint64_t seed, const uint8_t *k, size_t n,
                   uint64_t v0, uint64_t v1)
{
    struct fl_pcache *c = *cp;
    struct pc_entry *e;
    uint32_t *sl;
    uint64_t h;

    if (!n)
        return;
    if (!c) {
        if (!(c = calloc(1, sizeof *c)))
            return;
        if (!(c->slot = calloc(PC_SLOTS, sizeof *c->slot))) {
            free(c);
            return;
        }
        c->mask = PC_SLOTS - 1;
        /* The store's secret for this transaction (struct fl_ptx.seed), or the system's: a
         * system call per transaction was one per one-event commit. */
        c->seed = seed ? seed : fl_hash_random64();
        *cp = c;
    }
    h = fl_hash64_seeded(k, n, c->seed);
    sl = pc_slot(c, h, k, n);
    if (!*sl) {
        if (c->n >= max || c->keys.len > UINT32_MAX - n)
            return;
        if (c->n == c->cap) {
            size_t cap = c->cap ? 2 * c->cap : 64;
            struct pc_entry *ent = realloc(c->ent, cap * sizeof *ent);
            if (!ent)
                return;
            c->ent = ent;
            c->cap = cap;
        }
        if (2 * (c->n + 1) > c->mask + 1) {
            if (pc_grow(c) != 0)
                return;
            sl = pc_slot(c, h, k, n);
        }
        if (fl_buf_add(&c->keys, k, n) != 0)
            return;
        e = &c->ent[c->n];
        e->h = h;
        e->off = (uint32_t)(c->keys.len - n);
        e->len = (uint32_t)n;
        *sl = (uint32_t)++c->n;
    }
    e = &c->ent[*sl - 1];
    e->v[0] = v0;
    e->v[1] = v1;
}

/* Cache k[0..n) -> v0, v1 for x's transaction. */
static void tx_put(struct fl_ptx *x, const uint8_t *k, size_t n, uint64_t v0, uint64_t v1)
{
    pc_put(&x->cache, PC_MAX_KEYS, x->seed, k, n, v0, v1);
}

/* The transaction committed: what it learnt holds from now on, a flow's version included (only
 * this store's commits change it, and each one that does passes through here). */
void fl_project_keep(struct fl_ptx *x, struct fl_pcache **names)
{
    const struct fl_pcache *c = x->cache;

    for (size_t i = 0; c && i < c->n; i++) {
        const struct pc_entry *e = &c->ent[i];
        const uint8_t *k = c->keys.p + e->off;

        if (*names && ((*names)->n >= NC_MAX_KEYS || (*names)->keys.len + e->len > NC_MAX_BYTES))
            pc_free(names); /* full: start again with a new seed */
        pc_put(names, NC_MAX_KEYS, 0, k, e->len, e->v[0], e->v[1]);
    }
    fl_project_forget(x);
}

/* A names lookup in x's transaction through the caches: 0 and the value's first one or two
 * numbers (nv), MDB_NOTFOUND, or another MDB code. The committed names are asked first: a
 * name, once committed, keeps its numbers in every later transaction. */
static int cached_name(struct fl_ptx *x, const uint8_t *kb, size_t n, int nv, uint64_t v[2])
{
    MDB_val val;
    int rc;

    if (pc_get(x->names, kb, n, v) || pc_get(x->cache, kb, n, v))
        return 0;
    if ((rc = get_name(x->txn, x->db, kb, n, &val)) != 0)
        return rc;
    v[0] = fl_get_be64(val.mv_data);
    v[1] = nv > 1 ? fl_get_be64((const uint8_t *)val.mv_data + 8) : 0;
    tx_put(x, kb, n, v[0], v[1]);
    return 0;
}

static size_t version_key(uint8_t kb[9], uint64_t flow_no)
{
    kb[0] = PC_VERSION;
    fl_put_be64(kb + 1, flow_no);
    return 9;
}

/* ---- the apply context ---- */

struct apply {
    struct fl_ptx *x;
    struct fl_str tenant;
    const struct fl_event *ev;
    uint64_t seq;
    int64_t ts;
    struct fl_error *err;

    uint64_t tenant_no, flow_no, run_no, version;
    int have_tenant, have_flow, have_run;

    /* One event reads and writes a few keys close together: its flow's current rows, the end
     * of its flow's stream, one idempotency key. A cursor left on the right leaf page finds the
     * next key there without a search from the root (mdb_cursor_set), so each group gets its
     * own cursor, opened on first use; fl_project_apply keeps them in x for the next event. */
    MDB_cursor *rows, *stream, *idem;
    int plain; /* use mdb_put/mdb_del, no cursors (a rollback's many deletes and puts) */

    int flow_exists;
    struct fl_row flow_old, flow_new;
    int run_exists, run_changed;
    struct fl_row run_old, run_new;
    int child_exists, child_changed;
    struct fl_row child_old, child_new;
};

static const struct fl_val *ev_val(const struct apply *a, const char *name)
{
    return fl_event_get(a->ev, name);
}

/* Remember an LMDB failure: the transaction cannot be used any more. */
static int mdb_fail(struct apply *a, int rc, const char *what)
{
    if (!a->x->mdb_rc)
        a->x->mdb_rc = rc;
    return fl_store_mdb_error(rc, what, a->err);
}

static int oom(struct apply *a)
{
    return fl_error_set(a->err, FL_EINTERNAL, "out of memory");
}

/* Open *c on db unless it is open. Returns an MDB code. */
static int open_cursor(struct apply *a, MDB_cursor **c, int db)
{
    int rc;

    if (*c)
        return 0;
    if ((rc = mdb_cursor_open(a->x->txn, a->x->db->dbi[db], c)) != 0)
        *c = NULL;
    return rc;
}

static void close_cursors(struct apply *a)
{
    MDB_cursor **all[] = {&a->rows, &a->stream, &a->idem};

    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        if (*all[i])
            mdb_cursor_close(*all[i]);
        *all[i] = NULL;
    }
}

/* Get key's value from db, through cursor *c unless the apply is plain. Returns an MDB code. */
static int get_at(struct apply *a, MDB_cursor **c, int db, MDB_val *k, MDB_val *v)
{
    int rc;

    if (a->plain)
        return mdb_get(a->x->txn, a->x->db->dbi[db], k, v);
    if ((rc = open_cursor(a, c, db)) != 0)
        return rc;
    return mdb_cursor_get(*c, k, v, MDB_SET);
}

/* Put key -> val into db, through cursor *c unless the apply is plain. Returns an MDB code. */
static int put_at(struct apply *a, MDB_cursor **c, int db, MDB_val *k, MDB_val *v)
{
    int rc;

    if (a->plain)
        return mdb_put(a->x->txn, a->x->db->dbi[db], k, v, 0);
    if ((rc = open_cursor(a, c, db)) != 0)
        return rc;
    return mdb_cursor_put(*c, k, v, 0);
}

/* A primary key's bytes (see store_int.h), built on the stack. */
struct pk {
    uint8_t b[FL_PK_MAX];
    size_t n;
};

/* flow_no 'C' table pk: a current row's key. Returns its length, or 0 if longer than LMDB takes. */
static size_t cur_key(uint8_t kb[KEY_MAX], uint64_t flow_no, int table, const struct pk *pk)
{
    if (pk->n > KEY_MAX - 10)
        return 0;
    fl_put_be64(kb, flow_no);
    kb[8] = FL_KEY_CURRENT;
    kb[9] = (uint8_t)table;
    memcpy(kb + 10, pk->b, pk->n);
    return 10 + pk->n;
}

/* Load the current row (tenant_no, table, pk) into r; 1 if found, 0 if not, <0 on failure. */
static int load_row(struct apply *a, int table, const struct pk *pk, struct fl_row *r)
{
    uint8_t kb[KEY_MAX];
    MDB_val k = {cur_key(kb, a->flow_no, table, pk), kb}, v;
    void *copy;
    int rc;

    rc = k.mv_size ? get_at(a, &a->rows, FL_DB_FLOWS, &k, &v) : MDB_BAD_VALSIZE;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return mdb_fail(a, rc, "read row");
    /* LMDB's pointer is valid only until the next write: keep a copy for this event. */
    if (!(copy = fl_arena_dup(a->x->arena, v.mv_data, v.mv_size)))
        return oom(a);
    if (fl_row_decode(table, copy, v.mv_size, r) != 0)
        return fl_error_set(a->err, FL_EINTERNAL, "a stored %s row is damaged; run verify",
                            fl_table_defs[table].name);
    r->raw = copy;
    r->raw_len = v.mv_size;
    return 1;
}

/* The pk bytes of a row. */
static int row_pk(struct apply *a, const struct fl_row *r, struct pk *pk)
{
    int n = fl_pk_build(pk->b, r, a->run_no);

    if (n < 0)
        return fl_error_set(a->err, FL_EINTERNAL, "a %s key is longer than its schema allows",
                            fl_table_defs[r->table].name);
    pk->n = (size_t)n;
    return 0;
}

/* The longest index key: an artifact_ref at FL_ID_KEY_MAX in a patch's or a scan's pk. */
_Static_assert(26 + 8 + 4 + FL_ID_KEY_MAX + 2 <= KEY_MAX, "FL_ID_KEY_MAX fits no index key");

/* tenant_no table col xxh3(value) flow_no pk: an index key. Returns its length, or 0. */
static size_t idx_key(uint8_t kb[KEY_MAX], uint64_t tenant_no, int table, int col,
                      const struct fl_cell *c, uint64_t flow_no, const struct pk *pk)
{
    if (pk->n > KEY_MAX - 26)
        return 0;
    fl_put_be64(kb, tenant_no);
    kb[8] = (uint8_t)table;
    kb[9] = (uint8_t)col;
    fl_put_be64(kb + 10, fl_hash64(c->s, c->len));
    fl_put_be64(kb + 18, flow_no);
    memcpy(kb + 26, pk->b, pk->n);
    return 26 + pk->n;
}

/* Bring the secondary indexes of one row from old (may be NULL) to new (may be NULL). */
static int update_index(struct apply *a, int table, const struct fl_row *old,
                        const struct fl_row *neu, const struct pk *pk)
{
    const struct fl_table_def *t = &fl_table_defs[table];
    MDB_dbi dbi = a->x->db->dbi[FL_DB_IDX];
    MDB_val empty = {0, ""};
    uint8_t kb[KEY_MAX];
    int rc;

    for (size_t i = 0; i < t->ncols; i++) {
        if (t->indexed[i] != FL_IDX_SECONDARY)
            continue;
        const struct fl_cell *o = old && old->c[i].t == FL_CELL_STR ? &old->c[i] : NULL;
        const struct fl_cell *n = neu && neu->c[i].t == FL_CELL_STR ? &neu->c[i] : NULL;
        if (o && n && fl_cell_eq(o, n))
            continue;
        if (o) {
            MDB_val k = {idx_key(kb, a->tenant_no, table, (int)i, o, a->flow_no, pk), kb};
            rc = k.mv_size ? mdb_del(a->x->txn, dbi, &k, NULL) : MDB_BAD_VALSIZE;
            if (rc != 0 && rc != MDB_NOTFOUND)
                return mdb_fail(a, rc, "update index");
        }
        if (n) {
            MDB_val k = {idx_key(kb, a->tenant_no, table, (int)i, n, a->flow_no, pk), kb};
            rc = k.mv_size ? mdb_put(a->x->txn, dbi, &k, &empty, 0) : MDB_BAD_VALSIZE;
            if (rc != 0)
                return mdb_fail(a, rc, "update index");
        }
    }
    return 0;
}

/* Write a row's new value (or delete it when val is NULL): current row, indexes, and its
 * as-of version at this event's seq. old is the row's current value (NULL if none). */
static int write_row(struct apply *a, int table, const struct pk *pk, const struct fl_row *old,
                     const struct fl_row *neu, const MDB_val *val)
{
    uint8_t kb[KEY_MAX];
    MDB_val key = {cur_key(kb, a->flow_no, table, pk), kb};
    int rc;

    if (!key.mv_size)
        return mdb_fail(a, MDB_BAD_VALSIZE, "write row");
    /* Deletes come from rollbacks only, which run plain. */
    rc = val ? put_at(a, &a->rows, FL_DB_FLOWS, &key, (MDB_val *)val)
             : mdb_del(a->x->txn, a->x->db->dbi[FL_DB_FLOWS], &key, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mdb_fail(a, rc, "write row");
    /* This version goes into the event's stream entry (write_event puts it), as a row image
     * (store_int.h): one put for the event's entry and all of its versions. */
    struct fl_buf *e = &a->x->ent;
    size_t vlen = val ? val->mv_size : 0;
    uint8_t head[3] = {(uint8_t)(pk->n >> 8), (uint8_t)pk->n, (uint8_t)table};
    if (vlen > UINT32_MAX)
        return fl_error_set(a->err, FL_EINTERNAL, "a %s row is too large to keep",
                            fl_table_defs[table].name);
    if (fl_buf_add(e, head, 3) || fl_buf_add(e, pk->b, pk->n) ||
        fl_buf_add_be32(e, (uint32_t)vlen) || (vlen && fl_buf_add(e, val->mv_data, vlen)))
        return oom(a);
    return update_index(a, table, old, neu, pk);
}

/* Write row neu (replacing old, which may be NULL) for this event. */
static int put_row(struct apply *a, const struct fl_row *old, const struct fl_row *neu)
{
    struct pk pk;
    int rc;

    if ((rc = row_pk(a, neu, &pk)) != 0)
        return rc;
    if (fl_row_encode(neu, &a->x->v) != 0)
        return oom(a);
    /* An unchanged row needs no new version (a flow row under most run-level events). */
    if (old && old->raw && old->raw_len == a->x->v.len &&
        memcmp(old->raw, a->x->v.p, old->raw_len) == 0)
        return 0;
    MDB_val v = {a->x->v.len, a->x->v.p};
    return write_row(a, neu->table, &pk, old, neu, &v);
}

/* ---- numbering ---- */

static int next_number(struct apply *a, uint64_t *out)
{
    MDB_val k = {5, "\0next"}, v;
    uint8_t b[8];
    uint64_t n = 1;
    int rc = mdb_get(a->x->txn, a->x->db->dbi[FL_DB_NAMES], &k, &v);

    if (rc == 0)
        n = fl_get_be64(v.mv_data);
    else if (rc != MDB_NOTFOUND)
        return mdb_fail(a, rc, "read counter");
    fl_put_be64(b, n + 1);
    v.mv_size = 8;
    v.mv_data = b;
    if ((rc = mdb_put(a->x->txn, a->x->db->dbi[FL_DB_NAMES], &k, &v, 0)) != 0)
        return mdb_fail(a, rc, "write counter");
    *out = n;
    return 0;
}

static int put_name(struct apply *a, const uint8_t *kb, size_t n, const void *val, size_t len)
{
    MDB_val k = {n, (void *)kb}, v = {len, (void *)val};
    int rc = n ? mdb_put(a->x->txn, a->x->db->dbi[FL_DB_NAMES], &k, &v, 0) : MDB_BAD_VALSIZE;
    return rc ? mdb_fail(a, rc, "write name") : 0;
}

static int intern_tenant(struct apply *a)
{
    uint8_t kb[KEY_MAX], b[8];
    int rc;

    if (a->have_tenant)
        return 0;
    if ((rc = next_number(a, &a->tenant_no)) != 0)
        return rc;
    size_t n = name_key(kb, 'T', NULL, a->tenant);
    fl_put_be64(b, a->tenant_no);
    if ((rc = put_name(a, kb, n, b, 8)) == 0)
        tx_put(a->x, kb, n, a->tenant_no, 0);
    a->have_tenant = 1;
    return rc;
}

static int new_flow(struct apply *a)
{
    uint8_t kb[KEY_MAX], b[8];
    int rc;

    if ((rc = next_number(a, &a->flow_no)) != 0)
        return rc;
    size_t n = name_key(kb, 'F', &a->tenant_no, ev_val(a, "flow_id")->s);
    fl_put_be64(b, a->flow_no);
    if ((rc = put_name(a, kb, n, b, 8)) == 0) {
        tx_put(a->x, kb, n, a->flow_no, 0);
        kb[0] = 'G';
        fl_put_be64(kb + 1, a->flow_no);
        fl_put_be64(b, a->seq);
        rc = put_name(a, kb, 9, b, 8);
    }
    a->version = 0;
    a->have_flow = 1;
    return rc;
}

static int new_run(struct apply *a)
{
    uint8_t kb[KEY_MAX], b[16];
    int rc;

    if ((rc = next_number(a, &a->run_no)) != 0)
        return rc;
    size_t n = name_key(kb, 'R', &a->tenant_no, ev_val(a, "run_id")->s);
    fl_put_be64(b, a->run_no);
    fl_put_be64(b + 8, a->flow_no);
    if ((rc = put_name(a, kb, n, b, 16)) == 0)
        tx_put(a->x, kb, n, a->run_no, a->flow_no);
    a->have_run = 1;
    return rc;
}

/* Put key -> val into db (through *c when not NULL). (MDB_APPEND would rarely apply: a flow's
 * stream entry is the last key of its flow, not of the database.) */
static int put_stream(struct apply *a, MDB_cursor **c, int db, const uint8_t *key, size_t klen,
                      const void *val, size_t len)
{
    MDB_val k = {klen, (void *)key}, v = {len, (void *)(val ? val : "")};
    int rc = c ? put_at(a, c, db, &k, &v) : mdb_put(a->x->txn, a->x->db->dbi[db], &k, &v, 0);

    return rc ? mdb_fail(a, rc, "write stream index") : 0;
}

/* ---- checks (read-only) ---- */

static int load_flow(struct apply *a)
{
    struct pk pk = {.n = 0}; /* the flow row has no key bytes beyond its flow_no */
    int rc = load_row(a, FL_T_FLOWS, &pk, &a->flow_old);

    if (rc < 0)
        return rc;
    a->flow_exists = rc;
    a->flow_new = a->flow_old;
    return 0;
}

static int load_run(struct apply *a)
{
    struct pk pk = {.n = 8};
    int rc;

    fl_put_be64(pk.b, a->run_no);
    rc = load_row(a, FL_T_RUNS, &pk, &a->run_old);
    if (rc < 0)
        return rc;
    a->run_exists = rc;
    a->run_new = a->run_old;
    return 0;
}

/* tenant_no event_id: an idempotency key. Returns its length, or 0 if too long. */
static size_t idem_key(uint8_t kb[KEY_MAX], const struct apply *a)
{
    if (a->ev->event_id.len > KEY_MAX - 8)
        return 0;
    fl_put_be64(kb, a->tenant_no);
    memcpy(kb + 8, a->ev->event_id.p, a->ev->event_id.len);
    return 8 + a->ev->event_id.len;
}

/* Whether an event of this type may change its flow's row. The events that write a row of a
 * run's own (iteration steps, patches, scans, exec results, human requests and resolutions)
 * never do: their flow row is neither loaded nor encoded again to find it unchanged. */
static int writes_flow_row(enum fl_event_type t)
{
    return !fl_event_defs[t].run_level || t == FL_EV_RUN_STATUS;
}

/* Find the flow (and run) the event addresses, and the flow's version. */
static int resolve(struct apply *a)
{
    const struct fl_event_def *d = &fl_event_defs[a->ev->type];
    uint8_t kb[KEY_MAX];
    uint64_t v[2];
    int rc;

    if (!a->have_tenant)
        return 0;
    if (d->run_level) {
        rc = cached_name(a->x, kb, name_key(kb, 'R', &a->tenant_no, ev_val(a, "run_id")->s), 2,
                         v);
        if (rc == 0) {
            a->run_no = v[0];
            a->flow_no = v[1];
            a->have_run = a->have_flow = 1;
        }
    } else {
        rc = cached_name(a->x, kb, name_key(kb, 'F', &a->tenant_no, ev_val(a, "flow_id")->s), 1,
                         v);
        if (rc == 0) {
            a->flow_no = v[0];
            a->have_flow = 1;
        }
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mdb_fail(a, rc, "read names");
    if (a->have_flow) {
        int64_t last_ts;
        size_t n = version_key(kb, a->flow_no);
        /* This transaction's own first (it may have moved the version on), then the last
         * commit's. */
        if (pc_get(a->x->cache, kb, n, v) || pc_get(a->x->names, kb, n, v)) {
            a->version = v[0];
        } else {
            /* This leaves the stream cursor at the end of the flow, where the event's entry
             * goes. */
            if ((rc = open_cursor(a, &a->stream, FL_DB_FLOWS)) != 0 ||
                (rc = stream_point(a->stream, a->flow_no, UINT64_MAX, &a->version,
                                   &last_ts)) != 0)
                return mdb_fail(a, rc, "read flow version");
            tx_put(a->x, kb, n, a->version, 0);
        }
        if (writes_flow_row(a->ev->type) && (rc = load_flow(a)) != 0)
            return rc;
    }
    /* A run-level event other than run_status only checks its run's row (it exists and is not
     * terminal). A replayed one passed those checks when it was appended, so its run row is
     * not read again: a tenth of a rebuild's time (verify's scratch rebuild still checks). */
    if (a->have_run && a->x->replay && a->ev->type != FL_EV_RUN_STATUS)
        a->run_exists = 1;
    else if (a->have_run && (rc = load_run(a)) != 0)
        return rc;
    return 0;
}

static int check_idempotency(struct apply *a, struct fl_ack *dup)
{
    uint8_t kb[KEY_MAX];
    MDB_val k, v;
    int rc;

    if (!a->ev->event_id.p || !a->have_tenant || a->x->replay)
        return 0;
    k.mv_size = idem_key(kb, a);
    k.mv_data = kb;
    /* MDB_SET_RANGE, not MDB_SET: a miss then still leaves the cursor on the page where
     * write_event puts the key. */
    if (!k.mv_size)
        rc = MDB_BAD_VALSIZE;
    else if ((rc = open_cursor(a, &a->idem, FL_DB_IDEM)) == 0) {
        MDB_val want = k;
        rc = mdb_cursor_get(a->idem, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && (k.mv_size != want.mv_size || memcmp(k.mv_data, kb, k.mv_size) != 0))
            rc = MDB_NOTFOUND;
    }
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return mdb_fail(a, rc, "read idempotency key");
    if (v.mv_size != 32)
        return fl_error_set(a->err, FL_EINTERNAL, "damaged idempotency record; run verify");
    uint64_t was = fl_get_be64(v.mv_data);
    int idlen = (int)(a->ev->event_id.len > 128 ? 128 : a->ev->event_id.len);
    if (memcmp((const uint8_t *)v.mv_data + 16, a->ev->payload_hash, 16) != 0) {
        if (a->x->append_seq && was >= a->x->append_seq)
            /* its seq is this append's own, which is not committed: name the events instead */
            return fl_error_set(a->err, FL_EIDEMPOTENCY_MISMATCH,
                                "event_id \"%.*s\" is given twice in this append (at events "
                                "%llu and %llu) with a different type or data; use a new "
                                "event_id",
                                idlen, a->ev->event_id.p,
                                (unsigned long long)(was - a->x->append_seq),
                                (unsigned long long)(a->seq - a->x->append_seq));
        return fl_error_set(a->err, FL_EIDEMPOTENCY_MISMATCH,
                            "event_id \"%.*s\" was already used (seq %llu) for a different "
                            "type or data; use a new event_id",
                            idlen, a->ev->event_id.p, (unsigned long long)was);
    }
    dup->seq = was;
    dup->ts = (int64_t)fl_get_be64((const uint8_t *)v.mv_data + 8);
    dup->duplicate = 1;
    return 1;
}

static int not_found_flow(struct apply *a)
{
    struct fl_str f = ev_val(a, "flow_id")->s;
    return fl_error_set(a->err, FL_ENOT_FOUND, "flow \"%.*s\" is not registered",
                        (int)(f.len > 256 ? 256 : f.len), f.p);
}

static int not_found_run(struct apply *a)
{
    struct fl_str r = ev_val(a, "run_id")->s;
    return fl_error_set(a->err, FL_ENOT_FOUND,
                        "run \"%.*s\" does not exist (never started, or rolled back)",
                        (int)(r.len > 256 ? 256 : r.len), r.p);
}

static int run_terminal(const struct fl_row *run)
{
    const struct fl_cell *s = &run->c[FC_RUN_STATUS];
    return fl_cell_is(s, "SUCCESS") || fl_cell_is(s, "FAILED") || fl_cell_is(s, "CANCELLED");
}

static int run_rank(const struct fl_cell *s)
{
    if (fl_cell_is(s, "CREATING"))
        return 0;
    if (fl_cell_is(s, "QUEUED"))
        return 1;
    if (fl_cell_is(s, "RUNNING"))
        return 2;
    return 3;
}

/* Set column col of r from event field name when the event gives it. */
static void take(struct apply *a, struct fl_row *r, int col, const char *name)
{
    int fi = fl_event_field_index(a->ev->type, name);
    const struct fl_val *v = fi < 0 ? NULL : &a->ev->v[fi];

    if (!v || !v->set)
        return;
    if (fl_event_defs[a->ev->type].fields[fi].kind == FL_FK_INT)
        fl_cell_set_int(&r->c[col], v->i);
    else
        fl_cell_set_str(&r->c[col], v->s);
}

/* Load the child row of table t addressed by the event (run_id, iteration_num[, key]). */
static int load_child(struct apply *a, int table, int keycol, const char *keyfield)
{
    struct pk pk;
    int rc;

    memset(&a->child_new, 0, sizeof a->child_new);
    a->child_new.table = table;
    fl_cell_set_str(&a->child_new.c[0], ev_val(a, "run_id")->s);
    fl_cell_set_int(&a->child_new.c[1], ev_val(a, "iteration_num")->i);
    if (keycol >= 0)
        fl_cell_set_str(&a->child_new.c[keycol], ev_val(a, keyfield)->s);
    if ((rc = row_pk(a, &a->child_new, &pk)) == 0)
        rc = load_row(a, table, &pk, &a->child_old);
    if (rc < 0)
        return rc;
    a->child_exists = rc;
    if (rc)
        a->child_new = a->child_old;
    a->child_changed = 1;
    return 0;
}

static int check_flow_level(struct apply *a)
{
    const struct fl_event *ev = a->ev;
    struct fl_row *f = &a->flow_new;

    switch (ev->type) {
    case FL_EV_FLOW_REGISTERED:
        if (a->have_flow) {
            struct fl_str id = ev_val(a, "flow_id")->s;
            return fl_error_set(a->err, FL_EALREADY_EXISTS, "flow \"%.*s\" is already registered",
                                (int)(id.len > 256 ? 256 : id.len), id.p);
        }
        memset(f, 0, sizeof *f);
        f->table = FL_T_FLOWS;
        take(a, f, FC_FLOW_ID, "flow_id");
        take(a, f, FC_FLOW_NAME, "flow_name");
        fl_cell_set_cstr(&f->c[FC_FLOW_STATUS], "NOT_STARTED");
        take(a, f, FC_FLOW_SERVER, "server");
        take(a, f, FC_FLOW_XML, "nifi_xml_path");
        take(a, f, FC_FLOW_DESC, "description");
        take(a, f, FC_FLOW_PRIORITY, "priority");
        take(a, f, FC_FLOW_OWNER, "owner");
        fl_cell_set_int(&f->c[FC_FLOW_TOTAL], 0);
        fl_cell_set_int(&f->c[FC_FLOW_SUCCESS], 0);
        return 0;
    case FL_EV_FLOW_UPDATED:
        take(a, f, FC_FLOW_NAME, "flow_name");
        take(a, f, FC_FLOW_SERVER, "server");
        take(a, f, FC_FLOW_XML, "nifi_xml_path");
        take(a, f, FC_FLOW_DESC, "description");
        take(a, f, FC_FLOW_PRIORITY, "priority");
        take(a, f, FC_FLOW_OWNER, "owner");
        return 0;
    case FL_EV_FLOW_STATUS:
        take(a, f, FC_FLOW_STATUS, "migration_status");
        return 0;
    case FL_EV_FLOW_ROLLBACK: {
        int64_t to = ev_val(a, "to_seq")->i;
        uint64_t reg_seq;
        int rc = fl_names_flow_reg(a->x->txn, a->x->db, a->flow_no, &reg_seq);
        if (rc != 0)
            return mdb_fail(a, rc, "read flow version");
        if ((uint64_t)to < reg_seq || (uint64_t)to >= a->seq)
            return fl_error_set(a->err, FL_EBAD_REQUEST,
                                "data.to_seq: %lld is outside this flow's range: it must be at "
                                "least %llu (its flow_registered) and below %llu (this event)",
                                (long long)to, (unsigned long long)reg_seq,
                                (unsigned long long)a->seq);
        return 0;
    }
    default:
        return 0;
    }
}

static int check_run_started(struct apply *a)
{
    struct fl_row *r = &a->run_new, *f = &a->flow_new;
    uint8_t kb[KEY_MAX];
    uint64_t v[2];
    int rc;

    if (a->have_tenant) {
        rc = cached_name(a->x, kb, name_key(kb, 'R', &a->tenant_no, ev_val(a, "run_id")->s), 2,
                         v);
        if (rc == 0) {
            struct fl_str id = ev_val(a, "run_id")->s;
            return fl_error_set(a->err, FL_EALREADY_EXISTS,
                                "run_id \"%.*s\" was already used in this tenant (run ids are "
                                "never reused, even after a rollback)",
                                (int)(id.len > 256 ? 256 : id.len), id.p);
        }
        if (rc != MDB_NOTFOUND)
            return mdb_fail(a, rc, "read names");
    }
    memset(r, 0, sizeof *r);
    r->table = FL_T_RUNS;
    take(a, r, FC_RUN_ID, "run_id");
    take(a, r, FC_RUN_FLOW, "flow_id");
    take(a, r, FC_RUN_JOB_RUN_ID, "job_run_id");
    fl_cell_set_int(&r->c[FC_RUN_START], a->ts);
    fl_cell_set_cstr(&r->c[FC_RUN_STATUS], "RUNNING");
    take(a, r, FC_RUN_STATUS, "status");
    take(a, r, FC_RUN_JOB_ID, "job_id");
    take(a, r, FC_RUN_TRIGGERED_BY, "triggered_by");
    int64_t total = (f->c[FC_FLOW_TOTAL].t == FL_CELL_INT ? f->c[FC_FLOW_TOTAL].i : 0) + 1;
    fl_cell_set_int(&r->c[FC_RUN_ATTEMPT], total);
    a->run_changed = 1;
    fl_cell_set_str(&f->c[FC_FLOW_CURRENT_RUN], ev_val(a, "run_id")->s);
    fl_cell_set_str(&f->c[FC_FLOW_CURRENT_ATTEMPT], ev_val(a, "run_id")->s);
    fl_cell_set_cstr(&f->c[FC_FLOW_STATUS], "RUNNING");
    fl_cell_set_int(&f->c[FC_FLOW_TOTAL], total);
    if (f->c[FC_FLOW_FIRST_AT].t == FL_CELL_NULL)
        fl_cell_set_int(&f->c[FC_FLOW_FIRST_AT], a->ts);
    fl_cell_set_int(&f->c[FC_FLOW_LAST_AT], a->ts);
    return 0;
}

static int check_run_status(struct apply *a)
{
    struct fl_row *r = &a->run_new, *f = &a->flow_new;
    const struct fl_val *st = ev_val(a, "status");
    struct fl_cell next;

    fl_cell_set_str(&next, st->s);
    if (run_terminal(&a->run_old))
        return fl_error_set(a->err, FL_EINVALID_TRANSITION,
                            "run \"%.*s\" is already %.*s; a terminal status is final",
                            (int)r->c[FC_RUN_ID].len, r->c[FC_RUN_ID].s,
                            (int)r->c[FC_RUN_STATUS].len, r->c[FC_RUN_STATUS].s);
    if (run_rank(&next) < run_rank(&a->run_old.c[FC_RUN_STATUS]))
        return fl_error_set(a->err, FL_EINVALID_TRANSITION,
                            "run status moves forward only (CREATING < QUEUED < RUNNING < "
                            "terminal): %.*s cannot follow %.*s",
                            (int)st->s.len, st->s.p, (int)r->c[FC_RUN_STATUS].len,
                            r->c[FC_RUN_STATUS].s);
    take(a, r, FC_RUN_STATUS, "status");
    take(a, r, FC_RUN_JOB_ID, "job_id");
    take(a, r, FC_RUN_JOB_RUN_ID, "job_run_id");
    take(a, r, FC_RUN_STATUS_MSG, "status_message");
    take(a, r, FC_RUN_ERROR_MSG, "error_message");
    take(a, r, FC_RUN_PROGRESS, "progress_percentage");
    take(a, r, FC_RUN_VALIDATION, "validation_percentage");
    a->run_changed = 1;
    if (run_rank(&next) < 3)
        return 0;
    fl_cell_set_int(&r->c[FC_RUN_END], a->ts);
    if (fl_cell_is(&next, "SUCCESS"))
        fl_cell_set_int(&f->c[FC_FLOW_SUCCESS], f->c[FC_FLOW_SUCCESS].i + 1);
    if (fl_cell_eq(&f->c[FC_FLOW_CURRENT_RUN], &r->c[FC_RUN_ID])) {
        const struct fl_val *fs = ev_val(a, "flow_status");
        if (fs->set)
            fl_cell_set_str(&f->c[FC_FLOW_STATUS], fs->s);
        else
            fl_cell_set_cstr(&f->c[FC_FLOW_STATUS], fl_cell_is(&next, "SUCCESS")  ? "DONE"
                                             : fl_cell_is(&next, "FAILED") ? "FAILED"
                                                                        : "STOPPED");
    }
    return 0;
}

static int final_error(struct apply *a, const char *what, const struct fl_cell *status)
{
    return fl_error_set(a->err, FL_EINVALID_TRANSITION,
                        "%s for run \"%.*s\" iteration %lld is already %.*s, which is final", what,
                        (int)a->child_new.c[0].len, a->child_new.c[0].s,
                        (long long)a->child_new.c[1].i, (int)status->len, status->s);
}

static int scan_rank(const struct fl_cell *s)
{
    return fl_cell_is(s, "PENDING") ? 0 : fl_cell_is(s, "SCANNING") ? 1 : 2;
}

/* Checks and new child row of the run-level events that write one table row. */
static int check_child(struct apply *a)
{
    struct fl_row *c = &a->child_new;
    int rc;

    switch (a->ev->type) {
    case FL_EV_ITERATION_STEP:
        if ((rc = load_child(a, FL_T_ITERATIONS, -1, NULL)) != 0)
            return rc;
        if (a->child_exists && !fl_cell_is(&a->child_old.c[FC_IT_STATUS], "RUNNING"))
            return final_error(a, "the iteration", &a->child_old.c[FC_IT_STATUS]);
        take(a, c, FC_IT_STEP, "step");
        take(a, c, FC_IT_STATUS, "step_status");
        take(a, c, FC_IT_SUMMARY, "summary");
        take(a, c, FC_IT_ERROR, "error");
        fl_cell_set_int(&c->c[FC_IT_TS], a->ts);
        return 0;
    case FL_EV_PATCH:
        if ((rc = load_child(a, FL_T_PATCHES, FC_PA_ARTIFACT, "artifact_ref")) != 0)
            return rc;
        take(a, c, FC_PA_SUMMARY, "patch_summary");
        take(a, c, FC_PA_DIFF, "diff_ref");
        fl_cell_set_int(&c->c[FC_PA_TS], a->ts);
        return 0;
    case FL_EV_SCAN_VERDICT: {
        struct fl_cell next;
        if ((rc = load_child(a, FL_T_SAST, FC_SA_ARTIFACT, "artifact_ref")) != 0)
            return rc;
        fl_cell_set_str(&next, ev_val(a, "scan_status")->s);
        if (a->child_exists) {
            const struct fl_cell *cur = &a->child_old.c[FC_SA_STATUS];
            const struct fl_cell *art = &c->c[FC_SA_ARTIFACT];
            if (scan_rank(cur) == 2) {
                char what[FL_ID_MAX + 32]; /* its artifact_ref is part of the scan's key */
                snprintf(what, sizeof what, "the scan of \"%.*s\"", (int)art->len, art->s);
                return final_error(a, what, cur);
            }
            if (scan_rank(&next) < scan_rank(cur))
                return fl_error_set(a->err, FL_EINVALID_TRANSITION,
                                    "scan status moves forward only (PENDING < SCANNING < "
                                    "PASSED|BLOCKED): %.*s cannot follow %.*s for the scan of "
                                    "\"%.*s\" in run \"%.*s\" iteration %lld",
                                    (int)next.len, next.s, (int)cur->len, cur->s, (int)art->len,
                                    art->s, (int)c->c[0].len, c->c[0].s, (long long)c->c[1].i);
        }
        take(a, c, FC_SA_STATUS, "scan_status");
        take(a, c, FC_SA_FINDINGS, "findings_json");
        fl_cell_set_int(&c->c[FC_SA_TS], a->ts);
        return 0;
    }
    case FL_EV_EXEC_RESULT:
        if ((rc = load_child(a, FL_T_EXEC, FC_EX_JOB_TYPE, "job_type")) != 0)
            return rc;
        if (a->child_exists)
            return fl_error_set(a->err, FL_EINVALID_TRANSITION,
                                "an exec result for run \"%.*s\" iteration %lld job_type %.*s "
                                "was already recorded",
                                (int)c->c[0].len, c->c[0].s, (long long)c->c[1].i,
                                (int)c->c[FC_EX_JOB_TYPE].len, c->c[FC_EX_JOB_TYPE].s);
        take(a, c, FC_EX_STATUS, "status");
        take(a, c, FC_EX_RUNTIME, "runtime_s");
        take(a, c, FC_EX_ERROR, "error");
        take(a, c, FC_EX_LOGS, "logs_ref");
        fl_cell_set_int(&c->c[FC_EX_TS], a->ts);
        return 0;
    case FL_EV_HUMAN_REQUEST:
        if ((rc = load_child(a, FL_T_HUMAN, -1, NULL)) != 0)
            return rc;
        if (a->child_exists)
            return fl_error_set(a->err, FL_EINVALID_TRANSITION,
                                "a human request for run \"%.*s\" iteration %lld already exists",
                                (int)c->c[0].len, c->c[0].s, (long long)c->c[1].i);
        take(a, c, FC_HU_REASON, "reason");
        fl_cell_set_cstr(&c->c[FC_HU_STATUS], "PENDING");
        take(a, c, FC_HU_INSTRUCTIONS, "instructions");
        fl_cell_set_int(&c->c[FC_HU_TS], a->ts);
        return 0;
    case FL_EV_HUMAN_RESOLUTION:
        if ((rc = load_child(a, FL_T_HUMAN, -1, NULL)) != 0)
            return rc;
        /* Contract: only a PENDING request can be resolved; "anything else", including no
         * request at all, is an invalid transition (the run itself exists). */
        if (!a->child_exists)
            return fl_error_set(a->err, FL_EINVALID_TRANSITION,
                                "there is no human request for run \"%.*s\" iteration %lld to "
                                "resolve",
                                (int)c->c[0].len, c->c[0].s, (long long)c->c[1].i);
        if (!fl_cell_is(&a->child_old.c[FC_HU_STATUS], "PENDING"))
            return final_error(a, "the human request", &a->child_old.c[FC_HU_STATUS]);
        take(a, c, FC_HU_STATUS, "status");
        fl_cell_set_int(&c->c[FC_HU_TS], a->ts);
        return 0;
    default:
        return 0;
    }
}

/* Existence and transition checks; fills the new rows. */
static int check_state(struct apply *a)
{
    const struct fl_event_def *d = &fl_event_defs[a->ev->type];

    if (a->ev->type == FL_EV_FLOW_REGISTERED)
        return check_flow_level(a);
    if (!d->run_level) {
        if (!a->have_flow || !a->flow_exists)
            return not_found_flow(a);
        return a->ev->type == FL_EV_RUN_STARTED ? check_run_started(a) : check_flow_level(a);
    }
    if (!a->have_run || !a->run_exists)
        return not_found_run(a);
    if (a->ev->type == FL_EV_RUN_STATUS)
        return check_run_status(a);
    if (a->ev->type != FL_EV_HUMAN_RESOLUTION && !a->x->replay && run_terminal(&a->run_old))
        return fl_error_set(a->err, FL_EINVALID_TRANSITION,
                            "run \"%.*s\" is %.*s; only run_status and human_resolution may "
                            "follow a terminal status",
                            (int)a->run_old.c[FC_RUN_ID].len, a->run_old.c[FC_RUN_ID].s,
                            (int)a->run_old.c[FC_RUN_STATUS].len, a->run_old.c[FC_RUN_STATUS].s);
    return check_child(a);
}

/* ---- as-of versions and rollback ---- */

struct ver_change {
    struct ver_change *next;
    uint8_t *group; /* flow_no table pk */
    size_t glen;
    uint8_t *cur, *target; /* values (NULL: no row) */
    size_t cur_len, target_len;
};

struct change_ctx {
    struct apply *a;
    struct ver_change *list;
};

/* fl_ver_cb: remember a row whose value at to_seq differs from its current one. */
static int note_change(void *vctx, const uint8_t *g, size_t glen, const MDB_val *cur,
                       const MDB_val *at)
{
    struct change_ctx *cc = vctx;
    struct fl_arena *ar = cc->a->x->arena;
    struct ver_change *ch;

    if (cur->mv_size == at->mv_size &&
        (cur->mv_size == 0 || memcmp(cur->mv_data, at->mv_data, cur->mv_size) == 0))
        return 0;
    ch = fl_arena_alloc(ar, sizeof *ch);
    if (!ch)
        return -1;
    ch->group = fl_arena_dup(ar, g, glen);
    ch->cur = cur->mv_size ? fl_arena_dup(ar, cur->mv_data, cur->mv_size) : NULL;
    ch->target = at->mv_size ? fl_arena_dup(ar, at->mv_data, at->mv_size) : NULL;
    if (!ch->group || (cur->mv_size && !ch->cur) || (at->mv_size && !ch->target))
        return -1;
    ch->glen = glen;
    ch->cur_len = cur->mv_size;
    ch->target_len = at->mv_size;
    ch->next = cc->list;
    cc->list = ch;
    return 0;
}

/* Collect the rows whose value right after to_seq differs from their current value. */
static int collect_changes(struct apply *a, uint64_t to_seq, struct ver_change **out)
{
    struct change_ctx cc = {a, NULL};
    int rc = fl_ver_scan(a->x->txn, a->x->db, a->flow_no, to_seq, note_change, &cc);

    *out = cc.list;
    if (rc == -1)
        return oom(a);
    if (rc == -2)
        return fl_error_set(a->err, FL_EINTERNAL, "a stored row version is damaged; run verify");
    return rc ? mdb_fail(a, rc, "read versions") : 0;
}

/* Make every row of the flow what it was right after to_seq, as new versions at this seq. */
static int do_rollback(struct apply *a)
{
    struct ver_change *ch;
    int rc;

    if ((rc = collect_changes(a, (uint64_t)ev_val(a, "to_seq")->i, &ch)) != 0)
        return rc;
    /* Deletes rebalance pages under open cursors; keep a rollback on the plain calls, as it
     * was written and tested, at no cost that matters (rollbacks are rare). */
    close_cursors(a);
    a->plain = 1;
    for (; ch; ch = ch->next) {
        int table = ch->group[0];
        struct fl_row oldr, newr;
        struct pk pk;
        MDB_val v = {ch->target_len, ch->target};

        if (table < FL_T_FLOWS || table > FL_T_LAST || ch->glen - 1 > sizeof pk.b ||
            (ch->cur && fl_row_decode(table, ch->cur, ch->cur_len, &oldr) != 0) ||
            (ch->target && fl_row_decode(table, ch->target, ch->target_len, &newr) != 0))
            return fl_error_set(a->err, FL_EINTERNAL, "a stored row version is damaged; run verify");
        pk.n = ch->glen - 1;
        memcpy(pk.b, ch->group + 1, pk.n);
        rc = write_row(a, table, &pk, ch->cur ? &oldr : NULL, ch->target ? &newr : NULL,
                       ch->target ? &v : NULL);
        if (rc != 0)
            return rc;
    }
    a->plain = 0;
    /* The flow row itself is now its old self; reload it so that last_update_ts lands on it. */
    return load_flow(a);
}

/* ---- writes ---- */

static int write_event(struct apply *a)
{
    const struct fl_event_def *d = &fl_event_defs[a->ev->type];
    struct fl_buf *e = &a->x->ent;
    uint8_t entry_head[24] = {0};
    int rc;

    /* The stream entry: version, ts, run_no (filled in below), then the row images that
     * write_row adds. */
    e->len = 0;
    if (fl_buf_add(e, entry_head, sizeof entry_head))
        return oom(a);
    if ((rc = intern_tenant(a)) != 0)
        return rc;
    if (a->ev->type == FL_EV_FLOW_REGISTERED && (rc = new_flow(a)) != 0)
        return rc;
    if (a->ev->type == FL_EV_RUN_STARTED && (rc = new_run(a)) != 0)
        return rc;
    if (a->ev->type == FL_EV_FLOW_ROLLBACK && (rc = do_rollback(a)) != 0)
        return rc;
    if (a->ev->type == FL_EV_FLOW_ROLLBACK)
        a->flow_new = a->flow_old;
    if (a->child_changed &&
        (rc = put_row(a, a->child_exists ? &a->child_old : NULL, &a->child_new)) != 0)
        return rc;
    if (a->run_changed &&
        (rc = put_row(a, a->run_exists ? &a->run_old : NULL, &a->run_new)) != 0)
        return rc;
    if (writes_flow_row(a->ev->type) &&
        (rc = put_row(a, a->flow_exists ? &a->flow_old : NULL, &a->flow_new)) != 0)
        return rc;
    /* streams: the flow's (version and ts: its last_update_ts; the run; the rows written),
     * the tenant's */
    uint8_t key[17];
    a->version++;
    fl_put_be64(key, a->flow_no);
    key[8] = FL_KEY_STREAM;
    fl_put_be64(key + 9, a->seq);
    fl_put_be64(e->p, a->version);
    fl_put_be64(e->p + 8, (uint64_t)a->ts);
    fl_put_be64(e->p + 16, d->run_level || a->ev->type == FL_EV_RUN_STARTED ? a->run_no : 0);
    if ((rc = put_stream(a, &a->stream, FL_DB_FLOWS, key, 17, e->p, e->len)) != 0)
        return rc;
    tx_put(a->x, key, version_key(key, a->flow_no), a->version, 0);
    fl_put_be64(key, a->tenant_no);
    fl_put_be64(key + 8, a->seq);
    if ((rc = put_stream(a, NULL, FL_DB_TLOG, key, 16, NULL, 0)) != 0)
        return rc;
    if (a->ev->event_id.p) {
        uint8_t kb[KEY_MAX], ib[32];
        fl_put_be64(ib, a->seq);
        fl_put_be64(ib + 8, (uint64_t)a->ts);
        memcpy(ib + 16, a->ev->payload_hash, 16);
        MDB_val ik = {idem_key(kb, a), kb}, iv = {32, ib};
        rc = ik.mv_size ? put_at(a, &a->idem, FL_DB_IDEM, &ik, &iv) : MDB_BAD_VALSIZE;
        if (rc != 0)
            return mdb_fail(a, rc, "write idempotency key");
    }
    return 0;
}

static int apply(struct apply *a, struct fl_ack *dup)
{
    const struct fl_event *ev = a->ev;
    uint8_t kb[KEY_MAX];
    uint64_t v[2];
    int rc;

    rc = cached_name(a->x, kb, name_key(kb, 'T', NULL, a->tenant), 1, v);
    if (rc == 0) {
        a->tenant_no = v[0];
        a->have_tenant = 1;
    } else if (rc != MDB_NOTFOUND)
        return mdb_fail(a, rc, "read tenant");
    if ((rc = check_idempotency(a, dup)) != 0)
        return rc;
    if ((rc = resolve(a)) != 0)
        return rc;
    if (ev->has_expected_version && (uint64_t)ev->expected_version != a->version) {
        if (a->err)
            a->err->version = (int64_t)a->version;
        return fl_error_set(a->err, FL_ECONFLICT,
                            "expected_version is %lld but the flow's version is %llu; re-read "
                            "the flow and retry",
                            (long long)ev->expected_version, (unsigned long long)a->version);
    }
    if ((rc = check_state(a)) != 0)
        return rc;
    return write_event(a);
}

int fl_project_apply(struct fl_ptx *x, struct fl_str tenant, const struct fl_event *ev,
                     uint64_t seq, int64_t ts, struct fl_ack *dup, struct fl_error *err)
{
    struct apply a;
    int rc;

    memset(&a, 0, sizeof a);
    a.x = x;
    a.tenant = tenant;
    a.ev = ev;
    a.seq = seq;
    a.ts = ts;
    a.err = err;
    a.rows = x->cur[0];
    a.stream = x->cur[1];
    a.idem = x->cur[2];
    rc = apply(&a, dup);
    x->cur[0] = a.rows;
    x->cur[1] = a.stream;
    x->cur[2] = a.idem;
    return rc;
}
