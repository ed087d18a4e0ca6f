/* project.h (with row.c): applying events to the projections (the seven tables, attempt history, indexes,
 * as-of versions, streams, idempotency keys), and the row and key helpers the read side shares.
 * Works inside a caller's LMDB write transaction; no networking, no commits. */
#ifndef FL_PROJECT_H
#define FL_PROJECT_H

#include "event.h"
#include "schema.h"
#include "store_int.h"

enum fl_cell_type { FL_CELL_NULL, FL_CELL_INT, FL_CELL_STR };

struct fl_cell {
    uint8_t t;
    int64_t i;
    const char *s;
    uint32_t len;
};

struct fl_row {
    int table;
    struct fl_cell c[FL_MAX_COLS];
    const void *raw; /* the encoded row it was decoded from, when loaded for an update */
    size_t raw_len;
};

/* Encode a row (all of its table's stored columns) into out (cleared first). */
int fl_row_encode(const struct fl_row *r, struct fl_buf *out);
/* Decode p[0..len) into r; strings borrow from p. Returns 0 or -1 if malformed. */
int fl_row_decode(int table, const void *p, size_t len, struct fl_row *r);

/* Apply ev as event seq (commit time ts) of tenant. Checks run in the contract's order
 * (idempotency, expected_version, existence, transitions); nothing is written unless all pass.
 * Returns 0 when applied (the caller then writes the log record), 1 when ev is a duplicate of
 * a committed event (*dup gets the original's seq and ts; nothing written), or a negative
 * fl_err with err filled. If x->mdb_rc is set afterwards, the transaction is unusable. */
int fl_project_apply(struct fl_ptx *x, struct fl_str tenant, const struct fl_event *ev,
                     uint64_t seq, int64_t ts, struct fl_ack *dup, struct fl_error *err);

/* x now works in txn, a write transaction just begun (its previous one, if any, has ended). */
void fl_project_begin(struct fl_ptx *x, MDB_txn *txn);

/* Drop x's lookup cache (store_int.h) and its memory. Call it when x's transaction ends (commit
 * or abort), and whenever changes made through x may be undone: after a failed append,
 * before redoing a group. A cache entry outliving the state it was read from would
 * give an event another event's numbers or version. */
void fl_project_forget(struct fl_ptx *x);

/* x's outermost transaction has just committed: add the names it looked up or created, and its
 * flows' versions, to the committed names' cache *names (made on first use, cleared when full),
 * then forget x's cache. Call it only after a successful mdb_txn_commit of the transaction that
 * x's cache describes, on the store that *names belongs to. */
void fl_project_keep(struct fl_ptx *x, struct fl_pcache **names);
/* Drop a committed names' cache (store_int.h: struct fl_store.names) and its memory. */
void fl_project_names_drop(struct fl_pcache **names);

/* ---- lookups shared with the read side (all read-only) ---- */
/* 0 and *no, or MDB_NOTFOUND, or another MDB code. */
int fl_names_tenant(MDB_txn *txn, const struct fl_dbs *db, struct fl_str tenant, uint64_t *no);
int fl_names_flow(MDB_txn *txn, const struct fl_dbs *db, uint64_t tenant_no, struct fl_str flow_id,
                  uint64_t *flow_no);
/* The seq of the flow's flow_registered. */
int fl_names_flow_reg(MDB_txn *txn, const struct fl_dbs *db, uint64_t flow_no, uint64_t *reg_seq);
/* The flow's version and last_update_ts right after seq upto (UINT64_MAX: now), from its
 * stream; 0 and 0 before its first event. */
int fl_flow_point(MDB_txn *txn, const struct fl_dbs *db, uint64_t flow_no, uint64_t upto,
                  uint64_t *version, int64_t *ts);
int fl_names_run(MDB_txn *txn, const struct fl_dbs *db, uint64_t tenant_no, struct fl_str run_id,
                 uint64_t *run_no, uint64_t *flow_no);

/* The longest pk: run_no(8) iter(4) and an id of FL_ID_MAX bytes as a key string, in which
 * every NUL takes two bytes. */
#define FL_PK_MAX (8 + 4 + 2 * FL_ID_MAX + 2)
/* Write the pk bytes of row r (whose table is r->table, of run run_no) into out; returns their
 * length, or -1 if a key column is longer than the schema allows. */
int fl_pk_build(uint8_t out[FL_PK_MAX], const struct fl_row *r, uint64_t run_no);

/* Walk the as-of versions of every row of flow flow_no, calling cb once per row with its
 * latest value (cur) and its value right after seq as_of (at); a value of size 0 means "no row".
 * Values are borrowed until the transaction changes. cb returns 0 to go on, else that value is
 * returned. Otherwise returns 0 or an MDB code. */
typedef int (*fl_ver_cb)(void *ctx, const uint8_t *group, size_t glen, const MDB_val *cur,
                         const MDB_val *at);
int fl_ver_scan(MDB_txn *txn, const struct fl_dbs *db, uint64_t flow_no, uint64_t as_of,
                fl_ver_cb cb, void *ctx);

/* Cells: equality, order (ints numerically, strings bytewise), setters, and a string test. */
int fl_cell_eq(const struct fl_cell *a, const struct fl_cell *b);
int fl_cell_cmp(const struct fl_cell *a, const struct fl_cell *b);
void fl_cell_set_str(struct fl_cell *c, struct fl_str s);
void fl_cell_set_cstr(struct fl_cell *c, const char *s);
void fl_cell_set_int(struct fl_cell *c, int64_t i);
int fl_cell_is(const struct fl_cell *c, const char *s);

/* Compare two rows of one table by primary key (ints numerically, strings bytewise). */
int fl_row_pk_cmp(const struct fl_row *a, const struct fl_row *b);

#endif
