/* store_int.h: the storage layer's shared internals (store.c, project.c, query.c, verify.c).
 * Only these files see LMDB. Key layouts (all integers big-endian, so keys sort by number):
 *
 *   log    seq(8)                                  -> record (record.h)
 *   tlog   tenant_no(8) seq(8)                     -> ""        a tenant's events
 *   names  'T' tenant                              -> tenant_no(8)
 *          'F' tenant_no(8) flow_id                -> flow_no(8)
 *          'G' flow_no(8)                          -> seq of its flow_registered(8)
 *          'R' tenant_no(8) run_id                 -> run_no(8) flow_no(8)
 *          "\0next"                                -> the next number to give out(8)
 *   idem   tenant_no(8) event_id                   -> seq(8) ts(8) payload_hash(16)
 *   flows  flow_no(8) 'C' table(1) pk              -> row                current rows
 *          flow_no(8) 'S' seq(8)                   -> version(8) ts(8) run_no(8) image*
 *                                                     the stream: one entry per event
 *     image: pklen(2) table(1) pk rowlen(4) row    a row the event wrote (rowlen 0: deleted),
 *                                                     the versions behind as-of and rollback
 *   idx    tenant_no(8) table(1) col(1) xxh3(value)(8) flow_no(8) pk -> ""
 *   meta   "format"                                -> the store format stamp
 *          "journal"                               -> journal end(8) head frame offset(8)
 *          "rebuild_pending"                       -> "1" while a rebuild is unfinished
 *
 *   pk: flows (none); runs run_no(8); iterations and human requests run_no(8) iter(4);
 *   patches and scans run_no(8) iter(4) keystr(artifact_ref); exec run_no(8) iter(4) job_type(1).
 *
 * Everything a flow owns lives under its flow_no in one database, and an event's row versions
 * ride in its stream entry, so that the writes of one event to its flow land on one or two
 * B-tree pages, in one put per current row it changes and one for the entry: a durable commit's
 * cost is mostly the pages it dirties and the B-tree operations (measured: bench/RESULTS.md).
 * A run's events are the flow's stream entries that carry its run_no.
 * A flow row's last_update_ts and a flow's version are not stored in rows: they are the ts and
 * count of the flow's last stream entry at the point asked for, which is what the contract
 * defines them as. Indexes exist only where a column is not reachable through its flow
 * (flow_name, migration_status, job_run_id, run status, step).
 *
 * Every database but meta and log is a projection: derived from the log alone, dropped and
 * rebuilt by fl_store_rebuild, compared with a scratch rebuild by fl_store_verify. Numbers
 * (tenant_no, flow_no, run_no) are given out in log order, so a rebuild reproduces them. */
#ifndef FL_STORE_INT_H
#define FL_STORE_INT_H

#include <lmdb.h>
#include <pthread.h>

#include "err.h"
#include "hash.h"
#include "journal.h"
#include "store.h"
#include "util.h"

enum fl_db {
    FL_DB_META,
    FL_DB_LOG,
    FL_DB_TLOG, /* first projection database */
    FL_DB_NAMES,
    FL_DB_IDEM,
    FL_DB_FLOWS,
    FL_DB_IDX,
    FL_DB_COUNT
};

/* Kinds of keys under a flow_no in FL_DB_FLOWS. */
#define FL_KEY_CURRENT 'C'
#define FL_KEY_STREAM 'S'
#define FL_DB_FIRST_PROJ FL_DB_TLOG

extern const char *const fl_db_names[FL_DB_COUNT];

struct fl_dbs {
    MDB_dbi dbi[FL_DB_COUNT];
};

struct fl_pcache; /* project.c */

/* A read snapshot of the store right after one commit (store.c, "Views"). */
struct fl_view {
    MDB_txn *txn;   /* NULL: none could be made */
    uint64_t head;  /* the seq of its last event */
    int refs;       /* reads in progress on it */
    struct fl_view *next;
};

struct fl_store {
    /* Held by every entry point that writes or reads the store's own state (commits, rebuild,
     * stats; not reads of the data, which take vmu for a moment): flowlogd commits on a thread
     * of its own (commit.c) while its loop serves reads. Recursive, so an entry point may call
     * another. */
    pthread_mutex_t mu;
    MDB_env *env;
    struct fl_dbs db;
    struct fl_journal *journal; /* the durable copy of the log; LMDB itself is never flushed
                                   between open and close (store.c: "durability") */
    char *dir;
    int nosync;
    char broken[256]; /* set when the journal and LMDB may disagree: commits refused */
    size_t map_size, max_map_size;
    struct fl_event_limits lim;
    /* What readers see (store.c, "Views"): while commits are in flight (fl_store_apply), the
     * snapshot of the last durable commit, the snapshots of commits applied but not yet durable
     * (oldest first), and replaced views that a read still holds; otherwise fresh snapshots.
     * All guarded by vmu, never by mu, so that a read never waits for a commit; vcv is
     * signalled when a view is published or released, and when holds end. */
    pthread_mutex_t vmu;
    pthread_cond_t vcv;
    struct fl_view *view, *pending, *retired;
    MDB_txn *rtxn;      /* the reusable read handle, for reads while nothing is in flight:
                           renewed per read, reset after (never held) */
    int rtxn_busy;
    int loose;          /* reads on handles of their own (a read inside a read) */
    uint64_t durable;   /* the seq of the last durable event: what readers see */
    int hold;           /* > 0: readers wait (a map growth or a rebuild is closing every
                           snapshot) */
    /* The committed head, cached: only this process writes. Applied, not necessarily durable
     * (durable is what readers see). */
    uint64_t head;
    int64_t last_ts;
    uint8_t head_chain[FL_CHAIN_LEN];
    /* The committed names (tenant numbers, flow_no by flow_id, run_no and flow_no by run_id)
     * and flow versions, cached across transactions: once committed a name keeps its numbers
     * and is never deleted, and a version changes only by a commit of this process, which
     * updates it here. Filled only from transactions that committed (fl_project_keep),
     * dropped when names may change meaning (rebuild, recovery) and at close. Used by the one thread that writes (the server's), so it needs no lock. NULL when
     * empty. */
    struct fl_pcache *names;
    /* A verify or backup reads a snapshot of its own without the lock, for as long as it
     * takes, while commits go on. Its read handle pins the map: LMDB's map may not be resized
     * while any transaction of the process is open, so grow_map waits for pins to fall to 0
     * (unpinned is signalled with mu). verify_mu keeps verifies one at a time (one scratch
     * directory). */
    int pins;
    pthread_cond_t unpinned;
    pthread_mutex_t verify_mu;
    void (*verify_hook)(void *); /* tests only: called once a verify holds its snapshot */
    void *verify_hook_arg;
    /* Readies the pages past the end of the data before LMDB writes them (prefault.h); NULL if
     * it could not start. Paused around every remap of the map. */
    struct fl_prefault *pf;
    /* counters for stats */
    uint64_t commits, appends, events, duplicates, failed_appends, map_growths;
    /* A secret drawn at open; each commit's lookup cache is seeded with it hashed with a count
     * (clients choose the ids that are hashed, so the seeds must be unknown to them). */
    uint64_t seed_secret, seed_count;
    uint64_t recovered; /* events applied from the journal at open */
};

/* A write context for the projection code: one transaction and its databases. */
struct fl_ptx {
    MDB_txn *txn;        /* set by fl_project_begin only (it forgets the cursors below) */
    const struct fl_dbs *db;
    int mdb_rc;          /* first LMDB failure seen (the transaction is then unusable) */
    int replay;          /* the events come from the log or the journal (rebuild and
                            recovery; not verify, which replays by the append rules): each
                            passed every check when it was appended, so its event_id is
                            known to be new and is not looked up */
    int tainted;         /* an append failed after it wrote (store.c append_one): the group
                            is redone without it */
    uint64_t append_seq; /* the seq of the first event of the append being applied (0: not
                            known): an event_id used twice within one append is told apart
                            from one used by a committed event */
    struct fl_buf ent;   /* the stream entry of the event being applied, as it is built */
    struct fl_buf v;     /* scratch: a row's encoding */
    struct fl_arena *arena;
    /* What the projection code looked up or wrote in txn (tenant, flow and run numbers by
     * name, a flow's version), so that the next event of a tenant, flow or run skips those
     * B-tree searches. True of txn's current state only: fl_project_forget must drop it
     * whenever txn ends or any of its changes may be undone (a failed append, a redo).
     * NULL when empty. */
    struct fl_pcache *cache;
    uint64_t seed;       /* the cache's hash seed: 0 draws one from the system */
    /* The store's committed names (struct fl_store.names), asked before LMDB; read only here.
     * NULL for none, and always for a scratch store (verify), whose names are not the live
     * store's. */
    const struct fl_pcache *names;
    /* The projection's cursors in txn (rows, stream, idempotency keys), opened by the first
     * event that needs each and kept for the next ones: an open costs a malloc and a free.
     * LMDB closes a write transaction's cursors when it ends, so fl_project_begin drops these
     * pointers without closing them. */
    MDB_cursor *cur[3];
};

/* A simple region allocator: everything is freed at once by fl_arena_reset. */
struct fl_arena;
struct fl_arena *fl_arena_new(void);
void *fl_arena_alloc(struct fl_arena *a, size_t n);
void *fl_arena_dup(struct fl_arena *a, const void *p, size_t n);
void fl_arena_reset(struct fl_arena *a);
void fl_arena_free(struct fl_arena *a);

/* Translate an MDB/errno code into an fl_err with a message. */
int fl_store_mdb_error(int rc, const char *what, struct fl_error *err);
/* The same for a failed write to the store's disk: an EIO while that disk is (nearly) full is
 * reported as a full disk (LMDB turns a short write into EIO). */
int fl_store_write_error(const struct fl_store *s, int rc, const char *what, struct fl_error *err);

/* LMDB's own key order (bytewise, a shorter key first on a tie), compared faster: set on every
 * database by fl_store_open_dbs. The order is exactly the default one, so LMDB's tools
 * (mdb_stat, mdb_dump) and any reader without it see the same trees. */
int fl_store_key_cmp(const MDB_val *a, const MDB_val *b);
/* Open every database of dbs in txn (creating them if create), with fl_store_key_cmp. */
int fl_store_open_dbs(MDB_txn *txn, struct fl_dbs *dbs, int create);
/* The last seq in txn's log (0 for an empty one). */
uint64_t fl_store_log_head(MDB_txn *txn, const struct fl_dbs *db);
/* The journal offset after the last record and that record's frame offset, as txn recorded
 * them. MDB_NOTFOUND in a store without events; MDB_CORRUPTED if malformed. */
int fl_store_journal_pos(MDB_txn *txn, const struct fl_dbs *db, uint64_t *end,
                         uint64_t *head_off);

/* Begin and end a read snapshot on the store's reusable handle. */
int fl_store_read_begin(struct fl_store *s, MDB_txn **txn, struct fl_error *err);
void fl_store_read_end(struct fl_store *s, MDB_txn *txn);

/* Fetch log record seq within txn (borrowed until the txn ends). MDB_NOTFOUND if absent. */
int fl_store_get_record(MDB_txn *txn, const struct fl_dbs *db, uint64_t seq, MDB_val *out);

/* Replay records [from, to] of src (a read txn on the live store) through the projection code
 * into dst. Used by rebuild (dst = the live store) and verify (dst = a scratch store). */
int fl_store_replay(struct fl_store *s, MDB_txn *src, struct fl_ptx *dst, uint64_t from,
                    uint64_t to, uint64_t *done, struct fl_error *err);

#endif
