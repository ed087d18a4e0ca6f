/* store.c: the LMDB environment, its databases, group commit, map growth, rebuild. */
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "diag.h"
#include "project.h"
#include "record.h"

#define STORE_FORMAT "flowlog-store-2"
#define DEFAULT_MAP (256ull << 20)
#define DEFAULT_MAX_MAP (1ull << 40)
#define REBUILD_CHUNK 20000

const char *const fl_db_names[FL_DB_COUNT] = {
    "meta", "log", "tlog", "names", "idem", "flows", "idx",
};

/* ---- arena ---- */

struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    max_align_t data[];
};

struct fl_arena {
    struct arena_blk *head;
};

struct fl_arena *fl_arena_new(void)
{
    return calloc(1, sizeof(struct fl_arena));
}

void *fl_arena_alloc(struct fl_arena *a, size_t n)
{
    struct arena_blk *b = a->head;
    size_t need = (n + 15) & ~(size_t)15;

    if (!b || b->cap - b->used < need) {
        size_t cap = need > 65536 ? need : 65536;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += need;
    return p;
}

void *fl_arena_dup(struct fl_arena *a, const void *p, size_t n)
{
    void *q = fl_arena_alloc(a, n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

void fl_arena_reset(struct fl_arena *a)
{
    struct arena_blk *b, *next;

    if (!a)
        return;
    /* Keep the newest block for reuse; free the rest. */
    b = a->head;
    if (!b)
        return;
    for (struct arena_blk *o = b->next; o; o = next) {
        next = o->next;
        free(o);
    }
    b->next = NULL;
    b->used = 0;
}

void fl_arena_free(struct fl_arena *a)
{
    struct arena_blk *b, *next;

    if (!a)
        return;
    for (b = a->head; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

/* ---- errors ---- */

int fl_store_mdb_error(int rc, const char *what, struct fl_error *err)
{
    if (rc == ENOSPC || rc == EDQUOT)
        return fl_error_set(err, FL_EUNAVAILABLE,
                            "%s: the disk holding the data directory is full (%s); free space "
                            "and retry",
                            what, mdb_strerror(rc));
    if (rc == EIO || rc == EROFS || rc == EACCES || rc == EPERM)
        return fl_error_set(err, FL_EUNAVAILABLE, "%s: storage error: %s", what,
                            mdb_strerror(rc));
    if (rc == MDB_MAP_FULL)
        return fl_error_set(err, FL_EUNAVAILABLE,
                            "%s: the store reached its maximum size; raise the map limit", what);
    return fl_error_set(err, FL_EINTERNAL, "%s: %s", what, mdb_strerror(rc));
}

/* LMDB reports a page write cut short by a full disk as EIO (mdb_page_flush: "short write,
 * filesystem full?"); only a write that could not start at all gives ENOSPC. Name the full disk
 * when the data directory's file system is (nearly) out of space, so the operator knows what to
 * do; any other error is mapped as by fl_store_mdb_error. */
int fl_store_write_error(const struct fl_store *s, int rc, const char *what, struct fl_error *err)
{
    struct statvfs sv;
    unsigned long long avail;

    if (rc != EIO || statvfs(s->dir, &sv) != 0)
        return fl_store_mdb_error(rc, what, err);
    avail = (unsigned long long)sv.f_bavail * sv.f_frsize;
    if (avail >= (64ull << 20))
        return fl_store_mdb_error(rc, what, err);
    return fl_error_set(err, FL_EUNAVAILABLE,
                        "%s: the disk holding the data directory is full (a write was cut "
                        "short; %llu KiB free); free space and retry",
                        what, avail >> 10);
}

/* ---- environment ---- */

int fl_store_open_dbs(MDB_txn *txn, struct fl_dbs *dbs, int create)
{
    for (int i = 0; i < FL_DB_COUNT; i++) {
        int rc = mdb_dbi_open(txn, fl_db_names[i], create ? MDB_CREATE : 0, &dbs->dbi[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int make_dir(const char *dir, struct fl_error *err)
{
    struct stat st;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return fl_error_set(err, FL_EUNAVAILABLE, "cannot create data directory %s: %s", dir,
                            strerror(errno));
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return fl_error_set(err, FL_EUNAVAILABLE, "data directory %s is not a directory", dir);
    return 0;
}

/* Check the format stamp (writing it into a new store); load the cached head. */
static int load_meta(struct fl_store *s, MDB_txn *txn, struct fl_error *err)
{
    MDB_val k = {6, "format"}, v;
    MDB_cursor *c;
    int rc = mdb_get(txn, s->db.dbi[FL_DB_META], &k, &v);

    if (rc == MDB_NOTFOUND) {
        MDB_val probe, pv;
        MDB_cursor *lc;
        if ((rc = mdb_cursor_open(txn, s->db.dbi[FL_DB_LOG], &lc)) != 0)
            return fl_store_mdb_error(rc, "open log", err);
        rc = mdb_cursor_get(lc, &probe, &pv, MDB_FIRST);
        mdb_cursor_close(lc);
        if (rc == 0)
            return fl_error_set(err, FL_EINTERNAL,
                                "data directory %s holds a log without a format stamp; refusing "
                                "to guess its format",
                                s->dir);
        v.mv_data = STORE_FORMAT;
        v.mv_size = strlen(STORE_FORMAT);
        if ((rc = mdb_put(txn, s->db.dbi[FL_DB_META], &k, &v, 0)) != 0)
            return fl_store_mdb_error(rc, "write format stamp", err);
    } else if (rc != 0) {
        return fl_store_mdb_error(rc, "read format stamp", err);
    } else if (v.mv_size != strlen(STORE_FORMAT) || memcmp(v.mv_data, STORE_FORMAT, v.mv_size)) {
        return fl_error_set(err, FL_EINTERNAL,
                            "data directory %s holds store format \"%.*s\"; this flowlog reads "
                            "\"%s\" only",
                            s->dir, (int)(v.mv_size > 64 ? 64 : v.mv_size),
                            (const char *)v.mv_data, STORE_FORMAT);
    }
    if ((rc = mdb_cursor_open(txn, s->db.dbi[FL_DB_LOG], &c)) != 0)
        return fl_store_mdb_error(rc, "open log", err);
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return fl_store_mdb_error(rc, "read log head", err);
    struct fl_record r;
    msgpack_unpacked up;
    rc = fl_record_decode(v.mv_data, v.mv_size, &r, &up, err);
    if (rc == 0) {
        s->head = r.seq;
        s->last_ts = r.ts;
        memcpy(s->head_chain, r.chain, FL_CHAIN_LEN);
    }
    msgpack_unpacked_destroy(&up);
    if (rc != 0)
        return fl_error_set(err, FL_EINTERNAL, "the last log record is damaged (%s); run verify",
                            err ? err->msg : "");
    return 0;
}

/* LMDB writes its lock file through a shared mapping: on a full disk the first touch of a page
 * not yet backed by blocks kills the process with SIGBUS. Give the file its blocks first, so a
 * full disk is an error message instead. 64 KiB covers LMDB's lock file for its default
 * reader table (about 8 KiB); a larger existing file is left as it is. */
static int reserve_lock_file(const char *dir, struct fl_error *err)
{
    char path[4200];
    int fd, rc;

    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return fl_error_set(err, FL_EUNAVAILABLE, "cannot open %s: %s", path, strerror(errno));
    rc = posix_fallocate(fd, 0, 64 * 1024);
    close(fd);
    if (rc == ENOSPC || rc == EDQUOT)
        return fl_error_set(err, FL_EUNAVAILABLE,
                            "the disk holding data directory %s is full (%s); free space and "
                            "start again",
                            dir, strerror(rc));
    if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL)
        return fl_error_set(err, FL_EUNAVAILABLE, "cannot reserve %s: %s", path, strerror(rc));
    return 0;
}

static int rebuild_pending(struct fl_store *s, MDB_txn *txn)
{
    MDB_val k = {15, "rebuild_pending"}, v;
    return mdb_get(txn, s->db.dbi[FL_DB_META], &k, &v) == 0;
}

int fl_store_open(struct fl_store **out, const struct fl_store_opts *o, struct fl_error *err)
{
    struct fl_store *s = calloc(1, sizeof *s);
    MDB_txn *txn = NULL;
    int rc, dead = 0, pending;
    char path[4096];

    *out = NULL;
    if (!s)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    s->dir = strdup(o->dir);
    s->nosync = o->nosync;
    s->map_size = o->map_size ? o->map_size : DEFAULT_MAP;
    s->max_map_size = o->max_map_size ? o->max_map_size : DEFAULT_MAX_MAP;
    s->lim = o->lim;
    if (!s->dir) {
        rc = fl_error_set(err, FL_EINTERNAL, "out of memory");
        goto fail;
    }
    if ((rc = make_dir(o->dir, err)) != 0)
        goto fail;
    /* Refuse to start if the directory is not writable, rather than at the first append. */
    snprintf(path, sizeof path, "%s/.", o->dir);
    if (access(path, W_OK) != 0) {
        rc = fl_error_set(err, FL_EUNAVAILABLE, "data directory %s is not writable: %s", o->dir,
                          strerror(errno));
        goto fail;
    }
    if ((rc = reserve_lock_file(o->dir, err)) != 0)
        goto fail;
    if ((rc = mdb_env_create(&s->env)) != 0 || (rc = mdb_env_set_maxdbs(s->env, FL_DB_COUNT)) ||
        (rc = mdb_env_set_mapsize(s->env, s->map_size)) != 0) {
        rc = fl_store_mdb_error(rc, "create LMDB environment", err);
        goto fail;
    }
    /* MDB_NOTLS: the server's one thread keeps a reusable read handle beside the write txn. */
    rc = mdb_env_open(s->env, o->dir, MDB_NOTLS | (o->nosync ? MDB_NOSYNC : 0), 0600);
    if (rc != 0) {
        rc = fl_store_mdb_error(rc, "open LMDB environment", err);
        if (err)
            snprintf(err->msg + strlen(err->msg), sizeof err->msg - strlen(err->msg),
                     " (data directory %s)", o->dir);
        goto fail;
    }
    mdb_reader_check(s->env, &dead);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0 ||
        (rc = fl_store_open_dbs(txn, &s->db, 1)) != 0) {
        rc = fl_store_mdb_error(rc, "open databases", err);
        goto fail;
    }
    if ((rc = load_meta(s, txn, err)) != 0)
        goto fail;
    pending = rebuild_pending(s, txn);
    if ((rc = mdb_txn_commit(txn)) != 0) {
        txn = NULL;
        rc = fl_store_mdb_error(rc, "initialise store", err);
        goto fail;
    }
    txn = NULL;
    *out = s;
    if (pending) {
        fl_warn("an interrupted rebuild of the projections was found; rebuilding again");
        if ((rc = fl_store_rebuild(s, NULL, err)) != 0) {
            *out = NULL;
            goto fail;
        }
    }
    return 0;
fail:
    if (txn)
        mdb_txn_abort(txn);
    fl_store_close(s);
    return rc ? rc : FL_EINTERNAL;
}

void fl_store_close(struct fl_store *s)
{
    if (!s)
        return;
    if (s->rtxn)
        mdb_txn_abort(s->rtxn);
    if (s->env) {
        if (!s->nosync)
            mdb_env_sync(s->env, 1);
        mdb_env_close(s->env);
    }
    free(s->dir);
    free(s);
}

uint64_t fl_store_head(const struct fl_store *s)
{
    return s->head;
}

const char *fl_store_dir(const struct fl_store *s)
{
    return s->dir;
}

int fl_store_read_begin(struct fl_store *s, MDB_txn **txn, struct fl_error *err)
{
    int rc;

    if (s->rtxn && !s->rtxn_busy) {
        rc = mdb_txn_renew(s->rtxn);
        if (rc == 0) {
            s->rtxn_busy = 1;
            *txn = s->rtxn;
            return 0;
        }
        mdb_txn_abort(s->rtxn);
        s->rtxn = NULL;
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(s->env, 0);
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    }
    if (rc != 0)
        return fl_store_mdb_error(rc, "begin read", err);
    if (!s->rtxn) {
        s->rtxn = *txn;
        s->rtxn_busy = 1;
    }
    return 0;
}

void fl_store_read_end(struct fl_store *s, MDB_txn *txn)
{
    if (!txn)
        return;
    if (txn == s->rtxn) {
        mdb_txn_reset(txn);
        s->rtxn_busy = 0;
    } else {
        mdb_txn_abort(txn);
    }
}

int fl_store_get_record(MDB_txn *txn, const struct fl_dbs *db, uint64_t seq, MDB_val *out)
{
    uint8_t kb[8];
    MDB_val k = {8, kb};

    fl_put_be64(kb, seq);
    return mdb_get(txn, db->dbi[FL_DB_LOG], &k, out);
}

/* ---- group commit ---- */

/* Grow the map for a retry: no transaction may be open in this process. */
static int grow_map(struct fl_store *s, struct fl_error *err)
{
    size_t next = s->map_size * 2;
    int rc;

    if (s->map_size >= s->max_map_size)
        return fl_error_set(err, FL_EUNAVAILABLE,
                            "the store is full at its maximum size of %zu MiB",
                            s->max_map_size >> 20);
    if (next > s->max_map_size)
        next = s->max_map_size;
    if (s->rtxn) { /* set_mapsize does not see open read handles: drop ours */
        mdb_txn_abort(s->rtxn);
        s->rtxn = NULL;
        s->rtxn_busy = 0;
    }
    if ((rc = mdb_env_set_mapsize(s->env, next)) != 0)
        fl_fatal("cannot grow the LMDB map to %zu MiB: %s", next >> 20, mdb_strerror(rc));
    fl_info("store map grown from %zu to %zu KiB", s->map_size >> 10, next >> 10);
    s->map_size = next;
    s->map_growths++;
    return 0;
}

struct group_state {
    uint64_t seq;
    int64_t ts;
    uint8_t chain[FL_CHAIN_LEN];
};

/* Append one event (its projection, then its log record). Returns 0/1 as fl_project_apply,
 * or a negative fl_err; x->mdb_rc tells a broken transaction from a rejected event. */
static int append_event(struct fl_store *s, struct fl_ptx *x, struct fl_append *a, size_t i,
                        struct group_state *g, struct fl_buf *rec)
{
    const struct fl_event *ev = &a->events[i];
    uint8_t kb[8], chain[FL_CHAIN_LEN];
    MDB_val k = {8, kb}, v;
    int rc;

    rc = fl_project_apply(x, a->tenant, ev, g->seq + 1, g->ts, &a->acks[i], &a->err);
    if (rc != 0)
        return rc;
    if (fl_record_encode(rec, g->seq + 1, g->ts, a->tenant, ev, g->chain, chain) != 0)
        return fl_error_set(&a->err, FL_EINTERNAL, "out of memory encoding a record");
    fl_put_be64(kb, g->seq + 1);
    v.mv_size = rec->len;
    v.mv_data = rec->p;
    if ((rc = mdb_put(x->txn, s->db.dbi[FL_DB_LOG], &k, &v, MDB_APPEND)) != 0) {
        x->mdb_rc = rc;
        return fl_store_mdb_error(rc, "append to log", &a->err);
    }
    g->seq++;
    memcpy(g->chain, chain, FL_CHAIN_LEN);
    a->acks[i].seq = g->seq;
    a->acks[i].ts = g->ts;
    a->acks[i].duplicate = 0;
    return 0;
}

/* Run one append inside txn (in a nested txn when it has several events, so that a failing
 * event undoes the ones before it). Returns 0 unless the transaction broke (then x->mdb_rc). */
static int append_one(struct fl_store *s, struct fl_ptx *x, MDB_txn *txn, struct fl_append *a,
                      struct group_state *g, struct fl_buf *rec)
{
    struct group_state saved = *g;
    MDB_txn *child = NULL;
    int rc = 0;

    fl_error_clear(&a->err);
    if (a->n > 1) {
        if ((rc = mdb_txn_begin(s->env, txn, 0, &child)) != 0) {
            x->mdb_rc = rc;
            return fl_store_mdb_error(rc, "begin nested transaction", &a->err);
        }
        x->txn = child;
    }
    for (size_t i = 0; i < a->n; i++) {
        rc = append_event(s, x, a, i, g, rec);
        fl_arena_reset(x->arena);
        if (rc < 0) {
            a->err.index = (int64_t)i;
            break;
        }
    }
    x->txn = txn;
    if (rc < 0) {
        if (child)
            mdb_txn_abort(child);
        *g = saved;
        if (x->mdb_rc)
            return rc;
        s->failed_appends++;
        return 0;
    }
    if (child && (rc = mdb_txn_commit(child)) != 0) {
        x->mdb_rc = rc;
        *g = saved;
        return fl_store_mdb_error(rc, "commit nested transaction", &a->err);
    }
    s->appends++;
    for (size_t i = 0; i < a->n; i++)
        s->duplicates += a->acks[i].duplicate ? 1 : 0;
    return 0;
}

static void fail_all(struct fl_append **apps, size_t n, const struct fl_error *e)
{
    for (size_t i = 0; i < n; i++) {
        apps[i]->err = *e;
        apps[i]->err.index = -1;
    }
}

int fl_store_commit(struct fl_store *s, struct fl_append **apps, size_t n, struct fl_error *err)
{
    struct fl_buf rec = {0};
    struct fl_ptx x = {0};
    struct fl_error e;
    struct group_state g;
    MDB_txn *txn;
    int rc;

    fl_error_clear(&e);
    x.db = &s->db;
    x.arena = fl_arena_new();
    if (!x.arena) {
        fl_error_set(&e, FL_EINTERNAL, "out of memory");
        goto fail;
    }
    for (;;) {
        int64_t now = fl_now_us();
        g.seq = s->head;
        g.ts = now > s->last_ts ? now : s->last_ts; /* ts never goes back, even if the clock does */
        memcpy(g.chain, s->head_chain, FL_CHAIN_LEN);
        x.mdb_rc = 0;
        if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
            fl_store_mdb_error(rc, "begin write", &e);
            goto fail;
        }
        x.txn = txn;
        for (size_t i = 0; i < n && !x.mdb_rc; i++)
            append_one(s, &x, txn, apps[i], &g, &rec);
        if (x.mdb_rc) {
            mdb_txn_abort(txn);
            rc = x.mdb_rc;
        } else {
            rc = mdb_txn_commit(txn); /* durable here: fdatasync + O_DSYNC meta (default flags) */
        }
        if (rc == MDB_MAP_FULL) {
            if (grow_map(s, &e) != 0)
                goto fail;
            continue; /* redo the whole group: nothing of it was committed */
        }
        if (rc != 0) {
            fl_store_write_error(s, rc, "commit", &e);
            goto fail;
        }
        break;
    }
    if (g.seq > s->head) {
        s->events += g.seq - s->head;
        s->head = g.seq;
        s->last_ts = g.ts;
        memcpy(s->head_chain, g.chain, FL_CHAIN_LEN);
    }
    s->commits++;
    fl_buf_free(&rec);
    fl_buf_free(&x.k);
    fl_buf_free(&x.v);
    fl_arena_free(x.arena);
    return 0;
fail:
    /* The caller reports it (flowlogd logs each failed commit once). */
    fail_all(apps, n, &e);
    if (err)
        *err = e;
    fl_buf_free(&rec);
    fl_buf_free(&x.k);
    fl_buf_free(&x.v);
    fl_arena_free(x.arena);
    return e.code ? e.code : FL_EINTERNAL;
}

/* ---- replay and rebuild ---- */

int fl_store_replay(struct fl_store *s, MDB_txn *src, struct fl_ptx *dst, uint64_t from,
                    uint64_t to, uint64_t *done, struct fl_error *err)
{
    struct fl_event_limits lim = s->lim;
    int rc = 0;

    lim.trusted = 1;
    for (uint64_t seq = from; seq <= to; seq++) {
        MDB_val v;
        struct fl_record r;
        struct fl_event ev;
        struct fl_ack dup;
        msgpack_unpacked up;

        if ((rc = fl_store_get_record(src, &s->db, seq, &v)) != 0)
            return fl_error_set(err, FL_EINTERNAL, "seq %llu: record missing (%s)",
                                (unsigned long long)seq, mdb_strerror(rc));
        if ((rc = fl_record_decode(v.mv_data, v.mv_size, &r, &up, err)) != 0 ||
            (rc = fl_event_parse_parts(r.type.p, r.type.len, r.event_id.p, r.event_id.len,
                                       r.data, &lim, &ev, err)) != 0) {
            msgpack_unpacked_destroy(&up);
            return fl_error_set(err, FL_EINTERNAL, "seq %llu: %s", (unsigned long long)seq,
                                err ? err->msg : "undecodable record");
        }
        rc = fl_project_apply(dst, r.tenant, &ev, seq, r.ts, &dup, err);
        fl_arena_reset(dst->arena);
        fl_event_free(&ev);
        msgpack_unpacked_destroy(&up);
        if (rc != 0)
            return dst->mdb_rc ? rc
                               : fl_error_set(err, FL_EINTERNAL, "seq %llu does not replay: %s",
                                              (unsigned long long)seq, err ? err->msg : "");
        if (done)
            (*done)++;
    }
    return 0;
}

static int set_pending(struct fl_store *s, MDB_txn *txn, int on)
{
    MDB_val k = {15, "rebuild_pending"}, v = {1, "1"};
    int rc = on ? mdb_put(txn, s->db.dbi[FL_DB_META], &k, &v, 0)
                : mdb_del(txn, s->db.dbi[FL_DB_META], &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Replay [seq, to] into the live projections in one transaction, clearing the rebuild mark
 * with the last chunk. Returns 0, MDB_MAP_FULL (grow and redo) or another failure. */
static int rebuild_chunk(struct fl_store *s, struct fl_ptx *x, uint64_t seq, uint64_t to,
                         uint64_t *done, struct fl_error *err)
{
    MDB_txn *txn = NULL, *rtxn = NULL;
    int rc;

    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0 ||
        (rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &rtxn)) != 0)
        goto out;
    x->txn = txn;
    x->mdb_rc = 0;
    if (seq <= to && fl_store_replay(s, rtxn, x, seq, to, done, err) != 0) {
        rc = x->mdb_rc ? x->mdb_rc : -1;
        goto out;
    }
    if (to >= s->head && (rc = set_pending(s, txn, 0)) != 0)
        goto out;
    mdb_txn_abort(rtxn);
    rtxn = NULL;
    rc = mdb_txn_commit(txn);
    txn = NULL;
out:
    if (rtxn)
        mdb_txn_abort(rtxn);
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

int fl_store_rebuild(struct fl_store *s, uint64_t *events, struct fl_error *err)
{
    struct fl_ptx x = {0};
    MDB_txn *txn = NULL;
    uint64_t seq = 1, total = 0;
    int rc;

    x.db = &s->db;
    x.arena = fl_arena_new();
    if (!x.arena)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    /* Drop every projection and mark the rebuild in one commit: a crash midway is then seen at
     * the next open, which starts the rebuild again. */
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        goto mdb_fail;
    for (int i = FL_DB_FIRST_PROJ; i < FL_DB_COUNT && rc == 0; i++)
        rc = mdb_drop(txn, s->db.dbi[i], 0);
    if (rc != 0 || (rc = set_pending(s, txn, 1)) != 0) {
        mdb_txn_abort(txn);
        goto mdb_fail;
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        goto mdb_fail;
    do {
        uint64_t to = seq + REBUILD_CHUNK - 1 < s->head ? seq + REBUILD_CHUNK - 1 : s->head;
        uint64_t done = 0;
        rc = rebuild_chunk(s, &x, seq, to, &done, err);
        fl_arena_reset(x.arena);
        if (rc == MDB_MAP_FULL) {
            if ((rc = grow_map(s, err)) != 0)
                goto out;
            continue; /* redo this chunk */
        }
        if (rc == -1)
            goto out_err; /* err already says which seq does not replay */
        if (rc != 0)
            goto mdb_fail;
        total += done;
        seq = to + 1;
    } while (seq <= s->head);
    if (events)
        *events = total;
    rc = 0;
    goto out;
mdb_fail:
    rc = fl_store_mdb_error(rc, "rebuild", err);
    goto out;
out_err:
    rc = err && err->code ? err->code : FL_EINTERNAL;
out:
    fl_buf_free(&x.k);
    fl_buf_free(&x.v);
    fl_arena_free(x.arena);
    return rc;
}

/* ---- backup ---- */

int fl_store_backup(struct fl_store *s, const char *dir, uint64_t *bytes, uint64_t *head,
                    struct fl_error *err)
{
    char path[4200];
    struct stat st;
    int rc;

    if (mkdir(dir, 0700) != 0)
        return fl_error_set(err, errno == EEXIST ? FL_EALREADY_EXISTS : FL_EUNAVAILABLE,
                            "cannot create backup directory %s: %s", dir, strerror(errno));
    *head = s->head;
    /* The compacting copy runs in its own read snapshot and never takes the writer lock, so
     * it cannot deadlock with this thread (which holds no write transaction between commits). */
    rc = mdb_env_copy2(s->env, dir, MDB_CP_COMPACT);
    if (rc != 0) {
        snprintf(path, sizeof path, "%s/data.mdb", dir);
        unlink(path);
        rmdir(dir);
        return fl_store_write_error(s, rc, "backup", err);
    }
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    *bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

/* ---- stats and test hooks ---- */

int fl_store_stats(struct fl_store *s, msgpack_packer *pk, struct fl_error *err)
{
    MDB_envinfo info;
    MDB_stat st;

    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    msgpack_pack_map(pk, 11);
#define KV(name, val)                                                                          \
    do {                                                                                       \
        msgpack_pack_str(pk, strlen(name));                                                    \
        msgpack_pack_str_body(pk, name, strlen(name));                                         \
        msgpack_pack_uint64(pk, (uint64_t)(val));                                              \
    } while (0)
    KV("head_seq", s->head);
    KV("commits", s->commits);
    KV("appends", s->appends);
    KV("events_committed", s->events);
    KV("duplicates", s->duplicates);
    KV("failed_appends", s->failed_appends);
    KV("map_size", s->map_size);
    KV("map_growths", s->map_growths);
    KV("pages_used", info.me_last_pgno + 1);
    KV("page_size", st.ms_psize);
    KV("readers", info.me_numreaders);
#undef KV
    (void)err;
    return 0;
}

int fl_store_debug_put_raw(struct fl_store *s, uint64_t seq, const void *bytes, size_t len)
{
    uint8_t kb[8];
    MDB_val k = {8, kb}, v = {len, (void *)bytes};
    MDB_txn *txn;
    int rc;

    fl_put_be64(kb, seq);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        return rc;
    rc = len ? mdb_put(txn, s->db.dbi[FL_DB_LOG], &k, &v, 0)
             : mdb_del(txn, s->db.dbi[FL_DB_LOG], &k, NULL);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

int fl_store_debug_get_raw(struct fl_store *s, uint64_t seq, void **out, size_t *len)
{
    MDB_txn *txn;
    MDB_val v;
    int rc;

    if ((rc = fl_store_read_begin(s, &txn, NULL)) != 0)
        return rc;
    rc = fl_store_get_record(txn, &s->db, seq, &v);
    if (rc == 0) {
        *out = malloc(v.mv_size);
        if (*out) {
            memcpy(*out, v.mv_data, v.mv_size);
            *len = v.mv_size;
        } else {
            rc = ENOMEM;
        }
    }
    fl_store_read_end(s, txn);
    return rc;
}
