/* store.c: the LMDB environment, its databases, the journal that makes commits durable, group
 * commit, recovery at open, map growth, rebuild.
 *
 * Durability. A commit is durable once its records are flushed in the journal (journal.h: one
 * sequential write per commit, durable when it returns). The LMDB environment, holding the log
 * and the projections in one transaction as before, is opened with MDB_NOSYNC and flushed only
 * at a clean close: flushing its B-tree pages on every commit cost 13 KB written per event
 * (bench/RESULTS.md). Records go to the journal before the LMDB commit, so LMDB never holds a
 * record the journal lacks. Two kinds of stop are then safe:
 *  - a process crash (kill -9): the page cache keeps everything LMDB wrote, so the environment
 *    is intact as of its last commit; records the journal has beyond it (the process died
 *    between the flush and the LMDB commit) are applied at the next open;
 *  - an OS crash or power loss, which can leave the unflushed LMDB file damaged: DIR/running
 *    names the boot the store was opened in; found at open from another boot, the LMDB file is
 *    set aside (data.mdb.suspect) and everything is rebuilt from the journal.
 * A clean close flushes LMDB and removes DIR/running.
 * A pipelined commit (fl_store_apply, then fl_store_sync) writes the journal through the page
 * cache before the LMDB commit and flushes it later: a process crash keeps both (the page cache
 * again), an OS crash is the case above, and until the flush nothing of the group is read or
 * acknowledged ("Views" below).
 * LMDB runs with MDB_WRITEMAP: its pages are written in place in a shared map of data.mdb, which
 * survives a process crash like the page cache does. Two costs, both handled here: the map
 * must have disk blocks behind it (back_file, grow_map), and there are no nested transactions
 * (append_one: a batch that fails after writing makes its group be redone without it). */
#include "store_int.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "diag.h"
#include "prefault.h"
#include "project.h"
#include "record.h"

#define STORE_FORMAT "flowlog-store-4"
#define OLD_FORMAT "flowlog-store-3" /* read, and upgraded at open (load_meta) */
#define DEFAULT_MAP (1ull << 20) /* backed by disk blocks (back_file): start small, grow */
#define MAP_STEP_MAX (1ull << 30)
#define MAP_STEP_MIN (64ull << 10)
/* A growth adds at least this much: each one remaps data.mdb, and every page then faults in
 * again. Doubling from 1 MiB cost a young store 6 remaps by 64 MiB; the store alone at 64
 * events per commit from empty ran 10-15% faster with this floor (bench/RESULTS.md set L). */
#define MAP_STEP_FLOOR (64ull << 20)
#define DEFAULT_MAX_MAP (1ull << 40)
#define REBUILD_CHUNK 20000
#define RUNNING_FILE "running"

/* The head of the log as a commit or a recovery advances it. */
struct group_state {
    uint64_t seq;
    int64_t ts;
    uint8_t chain[FL_CHAIN_LEN];
    uint64_t head_off; /* journal offset of the head record's frame */
};

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

int fl_store_key_cmp(const MDB_val *a, const MDB_val *b)
{
    const uint8_t *p = a->mv_data, *q = b->mv_data;
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    int c;

    /* Keys are mostly big-endian numbers (seq, tenant, flow and run numbers) and short: eight
     * bytes a step settles them without a call to memcmp. */
    while (n >= 8) {
        uint64_t x = fl_get_be64(p), y = fl_get_be64(q);
        if (x != y)
            return x < y ? -1 : 1;
        p += 8, q += 8, n -= 8;
    }
    if (n && (c = memcmp(p, q, n)) != 0)
        return c;
    return a->mv_size < b->mv_size ? -1 : a->mv_size > b->mv_size;
}

int fl_store_open_dbs(MDB_txn *txn, struct fl_dbs *dbs, int create)
{
    for (int i = 0; i < FL_DB_COUNT; i++) {
        int rc = mdb_dbi_open(txn, fl_db_names[i], create ? MDB_CREATE : 0, &dbs->dbi[i]);
        if (rc == 0)
            rc = mdb_set_compare(txn, dbs->dbi[i], fl_store_key_cmp);
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

/* The rebuild mark (meta "rebuild_pending"): set in the commit that drops the projections or
 * upgrades the format, cleared with the rebuild's last chunk; found at open, it restarts the
 * rebuild. */
static int set_pending(struct fl_store *s, MDB_txn *txn, int on)
{
    MDB_val k = {15, "rebuild_pending"}, v = {1, "1"};
    int rc = on ? mdb_put(txn, s->db.dbi[FL_DB_META], &k, &v, 0)
                : mdb_del(txn, s->db.dbi[FL_DB_META], &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int rebuild_pending(struct fl_store *s, MDB_txn *txn)
{
    MDB_val k = {15, "rebuild_pending"}, v;
    return mdb_get(txn, s->db.dbi[FL_DB_META], &k, &v) == 0;
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
    } else if (v.mv_size == strlen(OLD_FORMAT) && memcmp(v.mv_data, OLD_FORMAT, v.mv_size) == 0) {
        /* The log and the journal are the same in both formats; only the projections differ
         * (row versions as keys of their own before): stamp the new format and have them
         * rebuilt from the log (fl_store_open), as after a rebuild a crash interrupted. */
        v.mv_data = STORE_FORMAT;
        v.mv_size = strlen(STORE_FORMAT);
        if ((rc = mdb_put(txn, s->db.dbi[FL_DB_META], &k, &v, 0)) != 0 ||
            (rc = set_pending(s, txn, 1)) != 0)
            return fl_store_mdb_error(rc, "upgrade the format stamp", err);
        fl_warn("data directory %s holds store format \"%s\": its projections are rebuilt "
                "from the log in format \"%s\"",
                s->dir, OLD_FORMAT, STORE_FORMAT);
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

/* ---- durability: the journal position, the running mark, recovery ---- */

/* meta "journal" = end(8) head_frame(8): where the journal ends after the last committed
 * record, and where that record's frame starts (to check, at open, that the journal has it). */
static int put_journal_pos(struct fl_store *s, MDB_txn *txn, uint64_t end, uint64_t head_off)
{
    uint8_t b[16];
    MDB_val k = {7, "journal"}, v = {16, b};

    fl_put_be64(b, end);
    fl_put_be64(b + 8, head_off);
    return mdb_put(txn, s->db.dbi[FL_DB_META], &k, &v, 0);
}

uint64_t fl_store_log_head(MDB_txn *txn, const struct fl_dbs *db)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t head = 0;

    if (mdb_cursor_open(txn, db->dbi[FL_DB_LOG], &c) != 0)
        return 0;
    if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
        head = fl_get_be64(k.mv_data);
    mdb_cursor_close(c);
    return head;
}

int fl_store_journal_pos(MDB_txn *txn, const struct fl_dbs *db, uint64_t *end,
                         uint64_t *head_off)
{
    MDB_val k = {7, "journal"}, v;
    int rc = mdb_get(txn, db->dbi[FL_DB_META], &k, &v);

    if (rc == 0 && v.mv_size == 16) {
        *end = fl_get_be64(v.mv_data);
        *head_off = fl_get_be64((const uint8_t *)v.mv_data + 8);
    } else if (rc == 0) {
        rc = MDB_CORRUPTED;
    }
    return rc;
}

/* This boot's id ("" where the kernel does not tell: every unclean stop then counts as an OS
 * crash, which costs a rebuild from the journal and never trusts a damaged file). */
static void boot_id(char out[64])
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    out[0] = '\0';
    if (f) {
        if (!fgets(out, 64, f))
            out[0] = '\0';
        fclose(f);
    }
    out[strcspn(out, "\n")] = '\0';
}

/* 1 if the LMDB file can be used as it is: a clean close (no DIR/running), or an unclean stop
 * in this very boot (a process crash: the page cache kept its writes). */
static int lmdb_trusted(const char *dir, const char *boot)
{
    char path[4200], was[64] = "";
    FILE *f;

    snprintf(path, sizeof path, "%s/" RUNNING_FILE, dir);
    if (!(f = fopen(path, "r")))
        return errno == ENOENT;
    if (!fgets(was, sizeof was, f))
        was[0] = '\0';
    fclose(f);
    was[strcspn(was, "\n")] = '\0';
    return boot[0] && strcmp(was, boot) == 0;
}

/* Write DIR/running (this boot's id) and make it durable before LMDB writes anything unflushed:
 * without it on disk, an OS crash could leave a damaged file that the next open trusts. */
static int mark_running(struct fl_store *s, const char *boot, struct fl_error *err)
{
    char path[4200], tmp[4200];
    int fd, rc = 0;

    snprintf(path, sizeof path, "%s/" RUNNING_FILE, s->dir);
    snprintf(tmp, sizeof tmp, "%s/" RUNNING_FILE ".tmp", s->dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return fl_store_mdb_error(errno, "cannot write " RUNNING_FILE, err);
    if (write(fd, boot, strlen(boot)) != (ssize_t)strlen(boot) || write(fd, "\n", 1) != 1 ||
        (!s->nosync && fsync(fd) != 0))
        rc = errno ? errno : EIO;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = errno;
    if (rc == 0 && !s->nosync)
        rc = fl_fsync_dir(s->dir);
    return rc ? fl_store_mdb_error(rc, "cannot write " RUNNING_FILE, err) : 0;
}

static void mark_clean(struct fl_store *s)
{
    char path[4200];

    snprintf(path, sizeof path, "%s/" RUNNING_FILE, s->dir);
    if (unlink(path) == 0)
        fl_fsync_dir(s->dir);
}

/* Set the LMDB file of an OS crash aside (replacing an older one): the journal rebuilds it. */
static int set_lmdb_aside(struct fl_store *s, struct fl_error *err)
{
    char path[4200], aside[4200];

    snprintf(path, sizeof path, "%s/data.mdb", s->dir);
    snprintf(aside, sizeof aside, "%s/data.mdb.suspect", s->dir);
    if (rename(path, aside) != 0 && errno != ENOENT)
        return fl_store_mdb_error(errno, "cannot set the unflushed data.mdb aside", err);
    return 0;
}

static int replay_decoded(struct fl_store *s, struct fl_ptx *dst, uint64_t seq,
                          const struct fl_record *r, struct fl_error *err);

static void pf_note(struct fl_store *s);

/* Recovery applies the journal's frames after the LMDB head in chunks of one transaction. */
struct recovery {
    struct fl_store *s;
    struct fl_ptx x;
    MDB_txn *txn;
    struct group_state g;       /* the head as of the frames applied so far */
    uint64_t next;              /* after the last applied frame (g.head_off: its offset) */
    uint64_t done_next, done_head_off; /* the same as of the last committed chunk */
    uint64_t in_txn, applied;
    int bad;                    /* the scan stopped at a frame that is not the next record */
    char why[160];
    struct fl_error *err;
};

enum { RECOVER_MDB = 1, RECOVER_BAD, RECOVER_FAIL };

static int recovery_commit(struct recovery *r)
{
    int rc;

    if (!r->txn)
        return 0;
    rc = put_journal_pos(r->s, r->txn, r->next, r->g.head_off);
    rc = rc ? rc : r->x.mdb_rc;
    if (rc != 0) {
        mdb_txn_abort(r->txn);
    } else {
        rc = mdb_txn_commit(r->txn);
    }
    r->txn = NULL;
    if (rc != 0) {
        fl_project_forget(&r->x);
        r->x.mdb_rc = rc;
        return RECOVER_MDB;
    }
    fl_project_keep(&r->x, &r->s->names); /* committed: its names hold from now on */
    pf_note(r->s);
    r->done_next = r->next;
    r->done_head_off = r->g.head_off;
    r->s->events += r->in_txn;
    r->applied += r->in_txn;
    r->in_txn = 0;
    r->s->head = r->g.seq;
    r->s->last_ts = r->g.ts;
    memcpy(r->s->head_chain, r->g.chain, FL_CHAIN_LEN);
    return 0;
}

/* The frame's record must be the next one: seq, chain and ts follow the head. */
static int recovery_check(struct recovery *r, const struct fl_record *d,
                          uint8_t chain[FL_CHAIN_LEN])
{
    fl_hash_chain(r->g.chain, d->body, d->body_len, chain);
    if (d->seq != r->g.seq + 1)
        snprintf(r->why, sizeof r->why, "holds seq %llu where seq %llu was due",
                 (unsigned long long)d->seq, (unsigned long long)r->g.seq + 1);
    else if (memcmp(chain, d->chain, FL_CHAIN_LEN) != 0)
        snprintf(r->why, sizeof r->why, "does not continue the hash chain");
    else if (d->ts < r->g.ts)
        snprintf(r->why, sizeof r->why, "goes back in time");
    else
        return 0;
    return -1;
}

static int recovery_frame(void *arg, uint64_t off, const uint8_t *rec, size_t len)
{
    struct recovery *r = arg;
    struct fl_record d;
    msgpack_unpacked up;
    uint8_t chain[FL_CHAIN_LEN], kb[8];
    MDB_val k = {8, kb}, v = {len, (void *)rec};
    int rc;

    if (!r->txn) {
        if ((rc = mdb_txn_begin(r->s->env, NULL, 0, &r->txn)) != 0) {
            r->x.mdb_rc = rc;
            return RECOVER_MDB;
        }
        fl_project_begin(&r->x, r->txn);
        r->x.mdb_rc = 0;
        r->x.names = r->s->names;
        r->x.replay = 1;
    }
    if (fl_record_decode(rec, len, &d, &up, NULL) != 0) {
        snprintf(r->why, sizeof r->why, "fails its checksum");
        rc = RECOVER_BAD;
    } else if (recovery_check(r, &d, chain) != 0) {
        rc = RECOVER_BAD;
    } else {
        fl_put_be64(kb, d.seq);
        if ((rc = mdb_put(r->txn, r->s->db.dbi[FL_DB_LOG], &k, &v, MDB_APPEND)) != 0)
            r->x.mdb_rc = rc;
        else
            rc = replay_decoded(r->s, &r->x, d.seq, &d, r->err);
        fl_arena_reset(r->x.arena);
        if (rc != 0)
            rc = r->x.mdb_rc ? RECOVER_MDB : RECOVER_FAIL;
        else
            r->g.ts = d.ts;
    }
    msgpack_unpacked_destroy(&up);
    if (rc != 0) {
        r->bad = rc == RECOVER_BAD;
        return rc;
    }
    r->g.seq++;
    memcpy(r->g.chain, chain, FL_CHAIN_LEN);
    r->g.head_off = off;
    r->next = off + 4 + len;
    if (++r->in_txn >= REBUILD_CHUNK)
        return recovery_commit(r);
    return 0;
}

static int grow_map(struct fl_store *s, struct fl_error *err);
static int store_sync(struct fl_store *s, uint64_t *durable, struct fl_error *err);
static void view_drop(struct fl_view *v);
static void view_drop_all(struct fl_view **list);

/* Apply the journal's records beyond the LMDB head, then cut whatever follows them (a flush
 * that a crash cut short: never acknowledged). */
static int recover(struct fl_store *s, uint64_t from, uint64_t head_off, struct fl_error *err)
{
    struct recovery r = {.s = s, .err = err, .done_next = from, .done_head_off = head_off};
    uint64_t end, saved;
    int damaged, rc;

    /* The LMDB file may have been set aside to be rebuilt from the journal: no name known
     * before holds until a chunk of this recovery commits it again. */
    fl_project_names_drop(&s->names);
    r.x.db = &s->db;
    if (!(r.x.arena = fl_arena_new()))
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    for (;;) {
        r.g.seq = s->head;
        r.g.ts = s->last_ts;
        memcpy(r.g.chain, s->head_chain, FL_CHAIN_LEN);
        r.in_txn = 0;
        r.next = r.done_next;
        r.g.head_off = r.done_head_off;
        rc = fl_journal_scan(s->journal, r.next, recovery_frame, &r, &end, &damaged, err);
        if (rc == 0 || rc == RECOVER_BAD)
            rc = recovery_commit(&r);
        if (rc == RECOVER_MDB && r.x.mdb_rc == MDB_MAP_FULL) {
            if (r.txn)
                mdb_txn_abort(r.txn);
            r.txn = NULL;
            fl_project_forget(&r.x);
            if ((rc = grow_map(s, err)) != 0)
                goto out;
            continue; /* redo the chunk that did not fit */
        }
        break;
    }
    if (r.txn)
        mdb_txn_abort(r.txn);
    if (rc == RECOVER_MDB) {
        rc = fl_store_write_error(s, r.x.mdb_rc, "recover from the journal", err);
        goto out;
    }
    if (rc == RECOVER_FAIL) {
        rc = fl_error_set(err, FL_EINTERNAL, "recovering from the journal: %s",
                          err ? err->msg : "a record does not apply");
        goto out;
    }
    if (rc < 0)
        goto out;
    if ((rc = fl_journal_cut(s->journal, r.next, &saved, err)) != 0)
        goto out;
    if (r.applied)
        fl_info("applied %llu events from the journal (seq %llu to %llu)",
                (unsigned long long)r.applied, (unsigned long long)(s->head - r.applied + 1),
                (unsigned long long)s->head);
    if (saved)
        fl_warn("the journal ended in %llu bytes that are not a whole record following seq %llu "
                "(%s%s): a flush cut short, never acknowledged; saved in %s/journal.cut-%llu-* "
                "and cut",
                (unsigned long long)saved, (unsigned long long)s->head,
                r.bad ? "the next frame " : "a torn frame", r.bad ? r.why : "", s->dir,
                (unsigned long long)r.next);
    s->recovered += r.applied;
    rc = 0;
out:
    fl_project_forget(&r.x);
    fl_buf_free(&r.x.ent);
    fl_buf_free(&r.x.v);
    fl_arena_free(r.x.arena);
    return rc;
}

/* With a trusted LMDB file, the journal must hold the head record where LMDB says it is: a
 * journal that was truncated, replaced or lost would otherwise go unnoticed. */
static int check_journal_head(struct fl_store *s, MDB_txn *txn, uint64_t head_off,
                              struct fl_error *err)
{
    struct fl_buf b = {0};
    MDB_val v;
    int rc;

    if (s->head == 0)
        return 0;
    if ((rc = fl_store_get_record(txn, &s->db, s->head, &v)) != 0)
        return fl_store_mdb_error(rc, "read the log head", err);
    rc = fl_journal_read(s->journal, head_off, &b, err);
    if (rc == 0 && (b.len != v.mv_size || memcmp(b.p, v.mv_data, b.len) != 0))
        rc = FL_EINTERNAL;
    fl_buf_free(&b);
    if (rc != 0)
        return fl_error_set(err, FL_EINTERNAL,
                            "%s/journal does not hold seq %llu, the last event of the store, "
                            "at offset %llu: the journal was truncated, replaced or damaged; "
                            "restore the data directory from a backup",
                            s->dir, (unsigned long long)s->head, (unsigned long long)head_off);
    return 0;
}

/* Give data.mdb disk blocks for its first size bytes. Under MDB_WRITEMAP LMDB writes pages
 * through a shared mapping of the file: on a full disk, the first touch of a page with no block
 * behind it kills the process with SIGBUS. So the map is never larger than what posix_fallocate
 * has backed, and a full disk shows as a failed growth of the map (an error message) instead.
 * Returns 0 or an errno. */
static int back_file(struct fl_store *s, size_t size)
{
    int fd, rc;

    if (mdb_env_get_fd(s->env, &fd) != 0)
        return EBADF;
    rc = posix_fallocate(fd, 0, (off_t)size);
    return rc == EOPNOTSUPP || rc == EINVAL ? 0 : rc; /* a file system without it: as before */
}

static int disk_full(const struct fl_store *s, int rc, const char *then, struct fl_error *err)
{
    return fl_error_set(err, FL_EUNAVAILABLE,
                        "the disk holding data directory %s is full (%s); free space and %s",
                        s->dir, strerror(rc), then);
}

/* Back the map LMDB opened with (at least the store's used pages). On a full disk an existing
 * store keeps a map of its used pages only: reads work, and appends fail with unavailable
 * until space is freed (each commit tries to grow the map again). */
static int back_opened_map(struct fl_store *s, struct fl_error *err)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc;

    if ((rc = mdb_env_info(s->env, &info)) != 0 || (rc = mdb_env_stat(s->env, &st)) != 0)
        return fl_store_mdb_error(rc, "read the LMDB environment's size", err);
    s->map_size = info.me_mapsize;
    rc = back_file(s, s->map_size);
    if (rc == 0)
        return 0;
    if ((rc != ENOSPC && rc != EDQUOT) || info.me_last_pgno < 2)
        return rc == ENOSPC || rc == EDQUOT ? disk_full(s, rc, "start again", err)
                                            : fl_error_set(err, FL_EUNAVAILABLE,
                                                           "cannot reserve %s/data.mdb: %s",
                                                           s->dir, strerror(rc));
    size_t used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
    if ((rc = mdb_env_set_mapsize(s->env, used)) != 0)
        return fl_store_mdb_error(rc, "shrink the LMDB map to its used pages", err);
    s->map_size = used;
    fl_warn("the disk holding data directory %s is full: appends will fail until space is "
            "freed",
            s->dir);
    return 0;
}

/* Where data.mdb is mapped in this process: LMDB does not say (mdb_env_info's me_mapaddr is
 * only set for a fixed map), so look for the mapping of the file's inode. NULL if not found. */
static void *map_address(struct fl_store *s)
{
    struct stat st;
    char line[512];
    void *addr = NULL;
    int fd;
    FILE *f;

    if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0 ||
        !(f = fopen("/proc/self/maps", "r")))
        return NULL;
    while (!addr && fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off, ino;
        unsigned maj, mnr;
        if (sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &lo, &hi, &off, &maj, &mnr, &ino) == 6 &&
            ino == (unsigned long)st.st_ino && off == 0 && makedev(maj, mnr) == st.st_dev &&
            hi - lo >= s->map_size)
            addr = (void *)lo;
    }
    fclose(f);
    return addr;
}

static int pgno_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* Hand LMDB's free pages to the prefault thread: LMDB writes them next, and after a remap or a
 * rebuild's drop none of them is mapped. The free list is database 0, which a read-only
 * transaction may walk (as mdb_stat -f does): each record is a page list, its count first.
 * At most PF_LIST_MAX pages; a record of another shape ends the walk (nothing depends on it). */
#define PF_LIST_MAX (1u << 20)
static void pf_queue_free(struct fl_store *s)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    uint64_t *pg = NULL;
    size_t n = 0, cap = 0;

    if (!s->pf || mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return;
    if (mdb_cursor_open(txn, 0, &c) == 0) {
        for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && n < PF_LIST_MAX;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            const size_t *ids = v.mv_data;
            if (v.mv_size < sizeof *ids || v.mv_size != (ids[0] + 1) * sizeof *ids)
                break;
            for (size_t i = 1; i <= ids[0] && n < PF_LIST_MAX; i++) {
                if (n == cap) {
                    size_t ncap = cap ? 2 * cap : 1024;
                    uint64_t *np = realloc(pg, ncap * sizeof *pg);
                    if (!np)
                        goto out;
                    pg = np;
                    cap = ncap;
                }
                pg[n++] = ids[i];
            }
        }
    }
out:
    if (c)
        mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (!n) {
        free(pg);
        return;
    }
    qsort(pg, n, sizeof *pg, pgno_cmp); /* LMDB takes its free pages lowest first */
    fl_prefault_list(s->pf, pg, n);
}

/* Tell the prefault thread where the map is now (after it was opened or remapped), and hand it
 * the free pages, none of which the new map has mapped. */
static void pf_remapped(struct fl_store *s)
{
    MDB_envinfo info;
    void *addr;

    if (s->pf && mdb_env_info(s->env, &info) == 0 && (addr = map_address(s))) {
        fl_prefault_map(s->pf, addr, s->map_size, info.me_last_pgno);
        pf_queue_free(s);
    }
}

/* After a commit: the prefault thread keeps ahead of LMDB's last used page. */
static void pf_note(struct fl_store *s)
{
    MDB_envinfo info;

    if (s->pf && mdb_env_info(s->env, &info) == 0)
        fl_prefault_note(s->pf, info.me_last_pgno);
}

/* Start the prefault thread on the map just opened. The store works without it, only slower. */
static void pf_start(struct fl_store *s)
{
    MDB_stat st;
    int rc = mdb_env_stat(s->env, &st);

    if (rc == 0 && (rc = fl_prefault_start(&s->pf, st.ms_psize)) == 0)
        pf_remapped(s);
    else
        fl_warn("cannot start the thread that readies the store's new pages (%s): going on "
                "without it",
                rc > 0 ? strerror(rc) : mdb_strerror(rc));
}

/* Open the LMDB environment (never flushed until close: see "Durability" above). */
static int open_env(struct fl_store *s, struct fl_error *err)
{
    int rc, dead = 0;

    if ((rc = mdb_env_create(&s->env)) != 0 || (rc = mdb_env_set_maxdbs(s->env, FL_DB_COUNT)) ||
        (rc = mdb_env_set_mapsize(s->env, s->map_size)) != 0)
        return fl_store_mdb_error(rc, "create LMDB environment", err);
    /* MDB_NOTLS: the server's one thread keeps a reusable read handle beside the write txn.
     * MDB_WRITEMAP: pages are written in place in the map, not copied out with pwrite at each
     * commit (that copy was ~14% of the server's CPU at 64 step writers; bench/RESULTS.md). It
     * rules out nested transactions (see append_one) and needs a backed file (back_file). */
    rc = mdb_env_open(s->env, s->dir, MDB_NOTLS | MDB_NOSYNC | MDB_WRITEMAP, 0600);
    if (rc != 0) {
        rc = fl_store_mdb_error(rc, "open LMDB environment", err);
        if (err)
            snprintf(err->msg + strlen(err->msg), sizeof err->msg - strlen(err->msg),
                     " (data directory %s)", s->dir);
        return rc;
    }
    mdb_reader_check(s->env, &dead);
    if ((rc = back_opened_map(s, err)) != 0)
        return rc;
    pf_start(s);
    return 0;
}

/* Check the directory, open the journal and decide whether the LMDB file can be trusted. */
static int open_files(struct fl_store *s, struct fl_error *err)
{
    char path[4200], boot[64];
    struct stat st;
    int rc, created, trusted;

    if ((rc = make_dir(s->dir, err)) != 0)
        return rc;
    /* Refuse to start if the directory is not writable, rather than at the first append. */
    snprintf(path, sizeof path, "%s/.", s->dir);
    if (access(path, W_OK) != 0)
        return fl_error_set(err, FL_EUNAVAILABLE, "data directory %s is not writable: %s",
                            s->dir, strerror(errno));
    if ((rc = reserve_lock_file(s->dir, err)) != 0)
        return rc;
    boot_id(boot);
    trusted = lmdb_trusted(s->dir, boot);
    if ((rc = fl_journal_open(&s->journal, s->dir, s->nosync, &created, err)) != 0)
        return rc;
    snprintf(path, sizeof path, "%s/data.mdb", s->dir);
    if (created && stat(path, &st) == 0 && st.st_size > 0) {
        char jpath[4200];
        snprintf(jpath, sizeof jpath, "%s/journal", s->dir);
        unlink(jpath); /* we just made it: leave the directory as we found it */
        return fl_error_set(err, FL_EINTERNAL,
                            "data directory %s has data.mdb but no journal: it is not a store "
                            "of this flowlog (format %s), or its journal was deleted",
                            s->dir, STORE_FORMAT);
    }
    if (!trusted) {
        fl_warn("data directory %s was not closed cleanly before the machine restarted: "
                "its LMDB file may be incomplete; rebuilding it from the journal",
                s->dir);
        if ((rc = set_lmdb_aside(s, err)) != 0)
            return rc;
    }
    return mark_running(s, boot, err);
}

/* The store's locks and conditions: 0, or -1 with none of them left behind. */
static int locks_init(struct fl_store *s)
{
    pthread_mutexattr_t ma;
    int made = 0;

    if (pthread_mutexattr_init(&ma) != 0)
        return -1;
    if (pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE) == 0 &&
        pthread_mutex_init(&s->mu, &ma) == 0)
        made = 1;
    pthread_mutexattr_destroy(&ma);
    if (made == 1 && pthread_cond_init(&s->unpinned, NULL) == 0)
        made = 2;
    if (made == 2 && pthread_mutex_init(&s->verify_mu, NULL) == 0)
        made = 3;
    if (made == 3 && pthread_mutex_init(&s->vmu, NULL) == 0)
        made = 4;
    if (made == 4 && pthread_cond_init(&s->vcv, NULL) == 0)
        return 0;
    if (made >= 4)
        pthread_mutex_destroy(&s->vmu);
    if (made >= 3)
        pthread_mutex_destroy(&s->verify_mu);
    if (made >= 2)
        pthread_cond_destroy(&s->unpinned);
    if (made >= 1)
        pthread_mutex_destroy(&s->mu);
    return -1;
}

int fl_store_open(struct fl_store **out, const struct fl_store_opts *o, struct fl_error *err)
{
    struct fl_store *s = calloc(1, sizeof *s);
    MDB_txn *txn = NULL;
    uint64_t jend = FL_JOURNAL_HEADER, head_off = 0;
    int rc, pending;

    *out = NULL;
    if (!s)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    if (locks_init(s) != 0) {
        free(s);
        return fl_error_set(err, FL_EINTERNAL, "cannot make the store's locks");
    }
    s->dir = strdup(o->dir);
    s->seed_secret = fl_hash_random64();
    s->nosync = o->nosync;
    s->map_size = o->map_size ? o->map_size : DEFAULT_MAP;
    s->max_map_size = o->max_map_size ? o->max_map_size : DEFAULT_MAX_MAP;
    s->lim = o->lim;
    if (!s->dir) {
        rc = fl_error_set(err, FL_EINTERNAL, "out of memory");
        goto fail;
    }
    if ((rc = open_files(s, err)) != 0 || (rc = open_env(s, err)) != 0)
        goto fail;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0 ||
        (rc = fl_store_open_dbs(txn, &s->db, 1)) != 0) {
        rc = fl_store_mdb_error(rc, "open databases", err);
        goto fail;
    }
    if ((rc = load_meta(s, txn, err)) != 0)
        goto fail;
    rc = fl_store_journal_pos(txn, &s->db, &jend, &head_off);
    if (rc == MDB_NOTFOUND && s->head == 0) {
        rc = 0;
    } else if (rc != 0) {
        rc = fl_error_set(err, FL_EINTERNAL,
                          "data directory %s: the store does not record its journal position "
                          "(%s); run verify, or restore from a backup",
                          s->dir, mdb_strerror(rc));
        goto fail;
    }
    if ((rc = check_journal_head(s, txn, head_off, err)) != 0)
        goto fail;
    pending = rebuild_pending(s, txn);
    if ((rc = mdb_txn_commit(txn)) != 0) {
        txn = NULL;
        rc = fl_store_mdb_error(rc, "initialise store", err);
        goto fail;
    }
    txn = NULL;
    /* Projections first, so that the journal's records beyond the head apply to whole ones. */
    if (pending) {
        fl_warn("the projections are marked for a rebuild (one a crash interrupted, or an "
                "upgraded format): rebuilding them from the log");
        if ((rc = fl_store_rebuild(s, NULL, err)) != 0)
            goto fail;
    }
    if ((rc = recover(s, jend, head_off, err)) != 0)
        goto fail;
    /* A crash between a flush's write and its fdatasync leaves records that recovery has just
     * applied but the disk may not hold: flush them before anything is served, or an OS crash
     * later could take back events that readers had seen. */
    if ((rc = fl_journal_sync(s->journal, err)) != 0)
        goto fail;
    s->durable = s->head;
    *out = s;
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
    if (s->env && s->journal)
        (void)store_sync(s, NULL, NULL); /* whatever fl_store_apply left in flight */
    if (s->rtxn)
        mdb_txn_abort(s->rtxn);
    view_drop(s->view);
    view_drop_all(&s->pending);
    view_drop_all(&s->retired);
    fl_prefault_stop(s->pf);
    s->pf = NULL;
    if (s->env) {
        /* Only a flushed LMDB file may be trusted without the journal after an OS crash. */
        if (!s->nosync && !s->broken[0] && mdb_env_sync(s->env, 1) == 0 && s->journal)
            mark_clean(s);
        mdb_env_close(s->env);
    }
    fl_journal_close(s->journal);
    fl_project_names_drop(&s->names);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->unpinned);
    pthread_mutex_destroy(&s->verify_mu);
    pthread_mutex_destroy(&s->vmu);
    pthread_cond_destroy(&s->vcv);
    free(s->dir);
    free(s);
}

uint64_t fl_store_head(struct fl_store *s)
{
    pthread_mutex_lock(&s->vmu);
    uint64_t head = s->durable;
    pthread_mutex_unlock(&s->vmu);
    return head;
}

const char *fl_store_dir(const struct fl_store *s)
{
    return s->dir;
}

/* ---- views ----
 *
 * Readers must never see what is not durable, and must see all that is (an acknowledged event
 * is readable at once). A one-step commit flushes before LMDB commits, so with nothing in flight
 * a fresh snapshot is exact. A pipelined group is applied (its LMDB transaction committed, its
 * records written to the journal) before it is durable, and the next group is applied while it
 * flushes. So right after each such LMDB commit the committing thread opens a read snapshot of
 * it (pending), and the flush that makes it durable publishes it as the view: while anything is
 * in flight, reads use that snapshot. Reads take vmu only for a moment, never mu: a read waits
 * for neither a transaction nor a flush.
 *
 * A view's transaction is used by one reading thread at a time (flowlogd reads on its loop;
 * verify and backup take snapshots of their own). LMDB's map can be resized only with no
 * transaction open in the process, and a rebuild must not be seen halfway, so both hold the
 * readers (view_hold) while they work. */

static void view_drop(struct fl_view *v)
{
    if (v && v->txn)
        mdb_txn_abort(v->txn);
    free(v);
}

/* The view is no longer the one to read (vmu held): it goes now, or when its last read ends. */
static void view_retire(struct fl_store *s)
{
    if (!s->view)
        return;
    if (s->view->refs > 0) {
        s->view->next = s->retired;
        s->retired = s->view;
    } else {
        view_drop(s->view);
    }
    s->view = NULL;
}

/* Drop a list of views none of which is being read. */
static void view_drop_all(struct fl_view **list)
{
    while (*list) {
        struct fl_view *v = *list;
        *list = v->next;
        view_drop(v);
    }
}

/* Make v the view (vmu held). A v without a snapshot leaves the old view in place: older than
 * the durable head, but durable and whole, until nothing is in flight and reads take fresh
 * snapshots again. */
static void view_set(struct fl_store *s, struct fl_view *v)
{
    if (!v->txn) {
        free(v);
        return;
    }
    view_retire(s);
    s->view = v;
}

/* Publish the pending snapshots up to seq head, now durable (vmu held). */
static void view_publish(struct fl_store *s, uint64_t head)
{
    struct fl_view *last = NULL;

    while (s->pending && s->pending->head <= head) {
        struct fl_view *p = s->pending;
        s->pending = p->next;
        p->next = NULL;
        view_drop(last);
        last = p;
    }
    if (last)
        view_set(s, last);
    if (head > s->durable)
        s->durable = head;
    pthread_cond_broadcast(&s->vcv);
}

/* Right after the LMDB commit of a group ending at seq head (mu and vmu held, so that no read
 * can open a snapshot between the two): v, allocated before the commit, takes a snapshot of
 * it and joins the pending ones. A snapshot that cannot be made leaves v without one
 * (view_set then keeps the previous view, stale). */
static void view_add_pending(struct fl_store *s, struct fl_view *v, uint64_t head)
{
    struct fl_view **tail;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &v->txn);

    if (rc != 0) {
        fl_warn("store: no read snapshot of the commit at seq %llu (%s): reads stay on the "
                "previous one until the commits catch up",
                (unsigned long long)head, mdb_strerror(rc));
        v->txn = NULL;
    }
    v->head = head;
    v->refs = 0;
    v->next = NULL;
    for (tail = &s->pending; *tail; tail = &(*tail)->next)
        ;
    *tail = v;
}

/* Before the first group goes in flight (mu and vmu held, nothing in flight, so LMDB's latest
 * commit is durable): a snapshot of it becomes the view. Without one (no memory, no reader
 * slot), reads wait for the group's flush. */
static void view_of_durable(struct fl_store *s)
{
    struct fl_view *v = calloc(1, sizeof *v);

    if (v && mdb_txn_begin(s->env, NULL, MDB_RDONLY, &v->txn) != 0) {
        free(v);
        v = NULL;
    }
    if (!v) {
        fl_warn("store: no read snapshot before a pipelined commit: reads wait for its flush");
        return;
    }
    v->head = s->durable;
    s->view = v;
}

/* Make every applied group durable and visible: flush the journal as far as it is written,
 * then publish the newest pending snapshot. *durable gets the durable head. Safe on a thread
 * of its own while another applies (it takes vmu, never mu, except to refuse commits after a
 * failed flush). */
static int store_sync(struct fl_store *s, uint64_t *durable, struct fl_error *err)
{
    uint64_t target;
    int rc;

    pthread_mutex_lock(&s->vmu);
    target = s->durable;
    for (const struct fl_view *p = s->pending; p; p = p->next)
        target = p->head;
    int need = s->pending != NULL;
    pthread_mutex_unlock(&s->vmu);
    if (need && (rc = fl_journal_sync(s->journal, err)) != 0) {
        /* Whether the flushed pages reached the disk is unknown (and cannot be learnt by
         * retrying: a failed fdatasync may drop them). LMDB holds the groups already. */
        pthread_mutex_lock(&s->mu);
        snprintf(s->broken, sizeof s->broken,
                 "the journal could not be flushed (%.120s); restart flowlogd", err ? err->msg : "");
        pthread_mutex_unlock(&s->mu);
        fl_warn("%s", s->broken);
        if (err)
            fl_error_set(err, FL_EUNAVAILABLE,
                         "the journal could not be flushed, so this append may or may not have "
                         "been stored; after flowlogd restarts, retry it with the same event_id");
        return FL_EUNAVAILABLE;
    }
    pthread_mutex_lock(&s->vmu);
    view_publish(s, target);
    if (durable)
        *durable = s->durable;
    pthread_mutex_unlock(&s->vmu);
    return 0;
}

/* Stop the readers and drop every snapshot the store holds (mu held, nothing pending: the
 * caller has synced). Returns with vmu released and s->hold raised; view_release lowers it. */
static void view_hold(struct fl_store *s)
{
    pthread_mutex_lock(&s->vmu);
    s->hold++;
    while ((s->view && s->view->refs > 0) || s->retired || s->rtxn_busy || s->loose > 0)
        pthread_cond_wait(&s->vcv, &s->vmu);
    view_drop(s->view);
    s->view = NULL;
    if (s->rtxn)
        mdb_txn_abort(s->rtxn);
    s->rtxn = NULL;
    view_drop_all(&s->pending); /* none after a sync; kept safe */
    pthread_mutex_unlock(&s->vmu);
}

static void view_release(struct fl_store *s)
{
    pthread_mutex_lock(&s->vmu);
    s->hold--;
    pthread_cond_broadcast(&s->vcv);
    pthread_mutex_unlock(&s->vmu);
}

/* A fresh snapshot of LMDB's latest commit (vmu held, nothing in flight, so it is durable):
 * the reusable handle renewed, or a handle of its own for a read inside a read. */
static int fresh_txn(struct fl_store *s, MDB_txn **txn, struct fl_error *err)
{
    int rc;

    if (s->rtxn && !s->rtxn_busy) {
        if ((rc = mdb_txn_renew(s->rtxn)) == 0) {
            s->rtxn_busy = 1;
            *txn = s->rtxn;
            return 0;
        }
        mdb_txn_abort(s->rtxn);
        s->rtxn = NULL;
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {
        fl_prefault_pause(s->pf);
        mdb_env_set_mapsize(s->env, 0);
        pf_remapped(s);
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    }
    if (rc != 0)
        return fl_store_mdb_error(rc, "begin read", err);
    if (!s->rtxn) {
        s->rtxn = *txn;
        s->rtxn_busy = 1;
    } else {
        s->loose++;
    }
    return 0;
}

int fl_store_read_begin(struct fl_store *s, MDB_txn **txn, struct fl_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&s->vmu);
    for (;;) {
        while (s->hold > 0)
            pthread_cond_wait(&s->vcv, &s->vmu);
        if (!s->pending) {
            /* Nothing in flight: a one-step commit flushes before LMDB commits, so LMDB's
             * latest state is durable and a fresh snapshot is exact. A view is not needed. */
            view_retire(s);
            rc = fresh_txn(s, txn, err);
            break;
        }
        if (s->view) { /* durable and whole, perhaps older than the durable head */
            s->view->refs++;
            *txn = s->view->txn;
            break;
        }
        /* Everything since the last fresh read is in flight and none left a snapshot: wait for
         * a flush (at most a few milliseconds). */
        pthread_cond_wait(&s->vcv, &s->vmu);
    }
    pthread_mutex_unlock(&s->vmu);
    return rc;
}

void fl_store_read_end(struct fl_store *s, MDB_txn *txn)
{
    struct fl_view **p;

    if (!txn)
        return;
    pthread_mutex_lock(&s->vmu);
    if (txn == s->rtxn) {
        mdb_txn_reset(txn);
        s->rtxn_busy = 0;
    } else if (s->view && s->view->txn == txn) {
        s->view->refs--;
    } else {
        for (p = &s->retired; *p && (*p)->txn != txn; p = &(*p)->next)
            ;
        if (*p) {
            if (--(*p)->refs == 0) {
                struct fl_view *v = *p;
                *p = v->next;
                view_drop(v);
            }
        } else { /* a handle of its own (fresh_txn) */
            mdb_txn_abort(txn);
            s->loose--;
        }
    }
    if (s->hold > 0)
        pthread_cond_broadcast(&s->vcv);
    pthread_mutex_unlock(&s->vmu);
}

int fl_store_get_record(MDB_txn *txn, const struct fl_dbs *db, uint64_t seq, MDB_val *out)
{
    uint8_t kb[8];
    MDB_val k = {8, kb};

    fl_put_be64(kb, seq);
    return mdb_get(txn, db->dbi[FL_DB_LOG], &k, out);
}

/* ---- group commit ---- */

/* Grow the map for a retry: no transaction may be open in this process. The file gets its
 * blocks first (back_file); growth doubles, by at most MAP_STEP_MAX at a time, so the blocks
 * reserved ahead of use stay under both the used size and 1 GiB. Near a full disk it tries a
 * step of a sixteenth before giving up. */
static int grow_map(struct fl_store *s, struct fl_error *err)
{
    size_t step = s->map_size < MAP_STEP_MAX ? s->map_size : MAP_STEP_MAX;
    size_t next;
    int rc;

    if (step < MAP_STEP_FLOOR)
        step = MAP_STEP_FLOOR;
    if (s->map_size >= s->max_map_size)
        return fl_error_set(err, FL_EUNAVAILABLE,
                            "the store is full at its maximum size of %zu MiB",
                            s->max_map_size >> 20);
    for (;;) {
        next = s->map_size + step > s->max_map_size ? s->max_map_size : s->map_size + step;
        rc = back_file(s, next);
        if (rc == 0)
            break;
        if ((rc != ENOSPC && rc != EDQUOT) || step <= MAP_STEP_MIN)
            return rc == ENOSPC || rc == EDQUOT
                       ? disk_full(s, rc, "retry", err)
                       : fl_error_set(err, FL_EUNAVAILABLE, "cannot grow %s/data.mdb: %s", s->dir,
                                      strerror(rc));
        step = step / 16 > MAP_STEP_MIN ? step / 16 : MAP_STEP_MIN;
    }
    /* A verify's or backup's snapshot is open without the lock: wait for it to end. The lock
     * is held once here (by fl_store_commit or fl_store_rebuild), so the wait releases it. */
    if (s->pins > 0)
        fl_info("store map full during a verify or backup: commits wait for it to end");
    while (s->pins > 0)
        pthread_cond_wait(&s->unpinned, &s->mu);
    /* set_mapsize does not see open read handles: make what is in flight durable, so that
     * no snapshot of it is needed, and drop every view (readers wait meanwhile). */
    if ((rc = store_sync(s, NULL, err)) != 0)
        return rc;
    view_hold(s);
    fl_prefault_pause(s->pf);
    rc = mdb_env_set_mapsize(s->env, next);
    view_release(s);
    if (rc != 0)
        fl_fatal("cannot grow the LMDB map to %zu MiB: %s", next >> 20, mdb_strerror(rc));
    fl_info("store map grown from %zu to %zu KiB", s->map_size >> 10, next >> 10);
    s->map_size = next;
    pf_remapped(s);
    s->map_growths++;
    return 0;
}


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
    uint64_t frame_off = fl_journal_end(s->journal) + fl_journal_staged(s->journal);
    if ((rc = fl_journal_stage(s->journal, rec->p, rec->len, &a->err)) != 0)
        return rc;
    g->head_off = frame_off;
    g->seq++;
    memcpy(g->chain, chain, FL_CHAIN_LEN);
    a->acks[i].seq = g->seq;
    a->acks[i].ts = g->ts;
    a->acks[i].duplicate = 0;
    return 0;
}

/* A refusal the contract names: made by an event's checks, before that event writes. */
static int is_refusal(int code)
{
    return code == FL_EBAD_REQUEST || code == FL_ETOO_LARGE || code == FL_EIDEMPOTENCY_MISMATCH ||
           code == FL_ECONFLICT || code == FL_ENOT_FOUND || code == FL_EALREADY_EXISTS ||
           code == FL_EINVALID_TRANSITION;
}

/* Run one append inside txn. Returns 0 unless the transaction broke (then x->mdb_rc).
 * LMDB has no nested transactions under MDB_WRITEMAP (store.c: "Durability"), so an append
 * that fails after writing (a batch whose event k > 0 is refused, or an internal error after
 * an event wrote) cannot be undone in place: it sets x->tainted and the caller redoes the
 * group without it. A refusal of a batch's first event, or of a one-event append, wrote
 * nothing and costs no redo. */
static int append_one(struct fl_store *s, struct fl_ptx *x, struct fl_append *a,
                      struct group_state *g, struct fl_buf *rec)
{
    struct group_state saved = *g;
    size_t staged = fl_journal_staged(s->journal);
    int rc = 0;

    fl_error_clear(&a->err);
    x->append_seq = g->seq + 1;
    for (size_t i = 0; i < a->n; i++) {
        rc = append_event(s, x, a, i, g, rec);
        fl_arena_reset(x->arena);
        if (rc < 0) {
            a->err.index = (int64_t)i;
            break;
        }
    }
    if (rc >= 0 && a->then) {
        a->err = *a->then;
        rc = a->err.code ? a->err.code : FL_EINTERNAL;
    }
    if (rc >= 0)
        return 0;
    int wrote = g->seq != saved.seq || !is_refusal(a->err.code);
    /* The cache may hold what the failed append wrote, and the redo starts without it. A
     * refusal wrote nothing: what the cache holds is still the transaction's (the versions the
     * appends before it moved on among them: test_group_refusal_keeps_versions). */
    if (wrote)
        fl_project_forget(x);
    fl_journal_unstage(s->journal, staged);
    *g = saved;
    if (!x->mdb_rc && wrote)
        x->tainted = 1;
    return x->mdb_rc ? rc : 0;
}

/* Count the outcomes of a committed group (once, however often it was redone). */
static void count_outcomes(struct fl_store *s, struct fl_append **apps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (apps[i]->err.code) {
            s->failed_appends++;
            continue;
        }
        s->appends++;
        for (size_t k = 0; k < apps[i]->n; k++)
            s->duplicates += apps[i]->acks[k].duplicate ? 1 : 0;
    }
}

static void fail_all(struct fl_append **apps, size_t n, const struct fl_error *e)
{
    for (size_t i = 0; i < n; i++) {
        apps[i]->err = *e;
        apps[i]->err.index = -1;
    }
}

/* Commit the group's LMDB transaction with its records in the journal first: written through
 * the page cache (flush 0, pipelined: store_sync makes them durable later) or flushed (flush 1,
 * when nothing is in flight: one direct write, durable when it returns). Either way the journal
 * holds every record LMDB holds, should the process die. A group not durable at once leaves a
 * snapshot of its commit among the pending ones. Returns 0 or an MDB/errno code, or -1 with e set; on failure
 * nothing of the group counts (a journal write whose LMDB commit failed is taken back). */
static int commit_group(struct fl_store *s, MDB_txn *txn, const struct group_state *g,
                        int flush, struct fl_error *e)
{
    uint64_t before = fl_journal_end(s->journal);
    struct fl_view *v = NULL; /* the commit's snapshot, when it is not durable at once */
    int rc;

    if (fl_journal_staged(s->journal) == 0) /* all duplicates or refused: nothing changed */
        return mdb_txn_commit(txn);
    rc = put_journal_pos(s, txn, before + fl_journal_staged(s->journal), g->head_off);
    if (rc != 0) {
        mdb_txn_abort(txn);
        fl_journal_unstage(s->journal, 0);
        return rc;
    }
    pthread_mutex_lock(&s->vmu);
    int direct = flush && !s->pending;
    pthread_mutex_unlock(&s->vmu);
    if (!direct && !(v = calloc(1, sizeof *v))) {
        mdb_txn_abort(txn);
        fl_journal_unstage(s->journal, 0);
        fl_error_set(e, FL_EINTERNAL, "out of memory");
        return -1;
    }
    rc = direct ? fl_journal_flush(s->journal, e) : fl_journal_write(s->journal, e);
    if (rc != 0) {
        mdb_txn_abort(txn);
        free(v);
        return -1; /* e says why */
    }
    pthread_mutex_lock(&s->vmu);
    if (v && !s->pending && !s->view)
        view_of_durable(s); /* what reads see until this group is durable */
    if ((rc = mdb_txn_commit(txn)) == 0) {
        if (v) {
            view_add_pending(s, v, g->seq);
        } else {
            if (g->seq > s->durable)
                s->durable = g->seq; /* and so is everything before it: nothing was in flight */
            view_retire(s);          /* older than this commit: reads go fresh */
        }
    }
    pthread_mutex_unlock(&s->vmu);
    if (rc == 0) {
        pf_note(s);
    } else {
        struct fl_error ue;
        free(v);
        if (fl_journal_undo(s->journal, before, &ue) != 0) {
            /* The journal keeps records LMDB refused: the next open applies them. Until then
             * the two disagree, so nothing more may be committed. */
            snprintf(s->broken, sizeof s->broken,
                     "the store could not take back a journal write after a failed commit (%.120s); "
                     "restart flowlogd",
                     ue.msg);
            fl_warn("%s", s->broken);
        }
    }
    return rc;
}

static int store_commit(struct fl_store *s, struct fl_append **apps, size_t n, int flush,
                        struct fl_error *err)
{
    struct fl_buf rec = {0};
    struct fl_ptx x = {0};
    struct fl_error e;
    struct group_state g;
    MDB_txn *txn;
    uint8_t *excluded = NULL; /* appends left out of a redo; they keep their error */
    int rc;

    fl_error_clear(&e);
    if (s->broken[0]) {
        fl_error_set(&e, FL_EUNAVAILABLE, "%s", s->broken);
        goto fail;
    }
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
        g.head_off = 0;
        x.mdb_rc = 0;
        fl_project_forget(&x); /* a redo starts over: nothing of the aborted try holds */
        fl_journal_unstage(s->journal, 0);
        if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
            fl_store_mdb_error(rc, "begin write", &e);
            goto fail;
        }
        fl_project_begin(&x, txn);
        x.tainted = 0;
        x.names = s->names;
        s->seed_count++;
        x.seed = fl_hash64_seeded(&s->seed_count, sizeof s->seed_count, s->seed_secret) | 1;
        size_t i;
        for (i = 0; i < n && !x.mdb_rc && !x.tainted; i++)
            if (!excluded || !excluded[i])
                append_one(s, &x, apps[i], &g, &rec);
        if (x.tainted && !x.mdb_rc) {
            mdb_txn_abort(txn);
            if (!excluded && !(excluded = calloc(n, 1))) {
                fl_error_set(&e, FL_EINTERNAL, "out of memory");
                goto fail;
            }
            excluded[i - 1] = 1;
            continue; /* redo the group without the append that may have half-written */
        }
        if (x.mdb_rc) {
            mdb_txn_abort(txn);
            rc = x.mdb_rc;
        } else {
            rc = commit_group(s, txn, &g, flush, &e);
            if (rc == -1)
                goto fail;
        }
        if (rc == MDB_MAP_FULL && !s->broken[0]) {
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
    /* Committed (journal flushed, LMDB committed): what the group learned of names holds. */
    fl_project_keep(&x, &s->names);
    if (g.seq > s->head) {
        s->events += g.seq - s->head;
        s->head = g.seq;
        s->last_ts = g.ts;
        memcpy(s->head_chain, g.chain, FL_CHAIN_LEN);
    }
    s->commits++;
    count_outcomes(s, apps, n);
    free(excluded);
    fl_project_forget(&x);
    fl_buf_free(&rec);
    fl_buf_free(&x.ent);
    fl_buf_free(&x.v);
    fl_arena_free(x.arena);
    return 0;
fail:
    /* The caller reports it (flowlogd logs each failed commit once). */
    fl_journal_unstage(s->journal, 0);
    fail_all(apps, n, &e);
    free(excluded);
    if (err)
        *err = e;
    fl_project_forget(&x);
    fl_buf_free(&rec);
    fl_buf_free(&x.ent);
    fl_buf_free(&x.v);
    fl_arena_free(x.arena);
    return e.code ? e.code : FL_EINTERNAL;
}

int fl_store_commit(struct fl_store *s, struct fl_append **apps, size_t n, struct fl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = store_commit(s, apps, n, 1, err);
    pthread_mutex_unlock(&s->mu);
    /* Flushed already unless groups applied by fl_store_apply were in flight: then one flush
     * makes them and this group durable. */
    struct fl_error se;
    fl_error_clear(&se);
    if (rc == 0 && (rc = store_sync(s, NULL, &se)) != 0) {
        fail_all(apps, n, &se);
        if (err)
            *err = se;
    }
    return rc;
}

int fl_store_apply(struct fl_store *s, struct fl_append **apps, size_t n, uint64_t *need,
                   struct fl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = store_commit(s, apps, n, 0, err);
    *need = s->head;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int fl_store_sync(struct fl_store *s, uint64_t *durable, struct fl_error *err)
{
    return store_sync(s, durable, err);
}

/* ---- replay and rebuild ---- */

/* Parse a decoded record's event (trusted: it passed every check when it was appended). */
static int replay_parse(struct fl_store *s, const struct fl_record *r, struct fl_event *ev,
                        struct fl_error *err)
{
    struct fl_event_limits lim = s->lim;

    lim.trusted = 1;
    if (fl_event_parse_parts(r->type.p, r->type.len, r->event_id.p, r->event_id.len, r->data,
                             &lim, ev, err) != 0)
        return fl_error_set(err, FL_EINTERNAL, "a record does not decode: %s",
                            err ? err->msg : "undecodable record");
    return 0;
}

static int replay_apply(struct fl_ptx *dst, uint64_t seq, const struct fl_record *r,
                        const struct fl_event *ev, struct fl_error *err)
{
    struct fl_ack dup;
    int rc = fl_project_apply(dst, r->tenant, ev, seq, r->ts, &dup, err);

    if (rc != 0 && !dst->mdb_rc)
        return fl_error_set(err, FL_EINTERNAL, "a record does not replay: %s",
                            err ? err->msg : "");
    return rc;
}

static int replay_decoded(struct fl_store *s, struct fl_ptx *dst, uint64_t seq,
                          const struct fl_record *r, struct fl_error *err)
{
    struct fl_event ev;
    int rc;

    if ((rc = replay_parse(s, r, &ev, err)) != 0)
        return rc;
    rc = replay_apply(dst, seq, r, &ev, err);
    fl_event_free(&ev);
    return rc;
}

/* The log's record seq through cursor c, which walks the log (MDB_NEXT stays on the leaf page);
 * a key other than the next seq is looked up by itself, so a gap is reported as before. */
static int replay_fetch(MDB_cursor *c, uint64_t seq, int first, MDB_val *v, struct fl_error *err)
{
    MDB_val k;
    uint8_t kb[8];
    int rc = first ? MDB_NOTFOUND : mdb_cursor_get(c, &k, v, MDB_NEXT);

    if (rc != 0 || k.mv_size != 8 || fl_get_be64(k.mv_data) != seq) {
        fl_put_be64(kb, seq);
        k.mv_size = 8;
        k.mv_data = kb;
        rc = mdb_cursor_get(c, &k, v, MDB_SET_KEY);
    }
    if (rc != 0)
        return fl_error_set(err, FL_EINTERNAL, "seq %llu: record missing (%s)",
                            (unsigned long long)seq, mdb_strerror(rc));
    return 0;
}

/* Decode a stored record; up must be destroyed by the caller either way. */
static int replay_decode(const MDB_val *v, struct fl_record *r, msgpack_unpacked *up,
                         struct fl_error *err)
{
    if (fl_record_decode(v->mv_data, v->mv_size, r, up, err) != 0)
        return fl_error_set(err, FL_EINTERNAL, "a record does not decode: %s",
                            err ? err->msg : "undecodable record");
    return 0;
}

static int replay_one(struct fl_store *s, MDB_cursor *c, struct fl_ptx *dst, uint64_t seq,
                      int first, struct fl_error *err)
{
    struct fl_record r;
    msgpack_unpacked up;
    MDB_val v;
    int rc;

    if ((rc = replay_fetch(c, seq, first, &v, err)) != 0)
        return rc;
    if ((rc = replay_decode(&v, &r, &up, err)) == 0)
        rc = replay_decoded(s, dst, seq, &r, err);
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* After the event at seq was replayed with result rc (either way): its memory goes, a failure
 * names the seq (once), a success is counted. Returns rc. */
static int replay_step_end(struct fl_ptx *dst, uint64_t seq, int rc, uint64_t *done,
                           struct fl_error *err)
{
    fl_arena_reset(dst->arena);
    if (rc != 0) {
        if (!dst->mdb_rc && err && strncmp(err->msg, "seq ", 4) != 0)
            fl_error_set(err, FL_EINTERNAL, "seq %llu: %s", (unsigned long long)seq, err->msg);
        return rc;
    }
    if (done)
        (*done)++;
    return 0;
}

/* ---- replay on two threads (rebuild) ----
 * Decoding and parsing a record is about a quarter of replaying it (callgrind: 8.3k of 31.5k
 * instructions per event); a second thread does it for the records ahead while the caller's
 * applies them in order, through a ring of RP_SLOTS. The records' bytes stay in the source
 * snapshot, which the producer alone reads; each slot's parse results are freed by the producer
 * when it reuses the slot, or at the end. */
#define RP_SLOTS 256

struct rp_slot {
    int rc;                 /* 0, or the failure the producer met at this seq (err) */
    struct fl_error err;
    struct fl_record r;
    msgpack_unpacked up;
    struct fl_event ev;
    int have_up, have_ev;
};

struct rp {
    struct fl_store *s;
    MDB_txn *src;
    uint64_t from, to;
    struct rp_slot *slot;
    /* The counts (from from) are read without the lock, so that a record costs no lock when
     * neither side sleeps; mu and cv only put a side to sleep and wake it (seq_cst, so that a
     * side about to sleep and the other's update cannot miss each other). */
    _Atomic uint64_t produced, consumed;
    _Atomic int stop, producer_waits, consumer_waits;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void rp_clear(struct rp_slot *sl)
{
    if (sl->have_ev)
        fl_event_free(&sl->ev);
    if (sl->have_up)
        msgpack_unpacked_destroy(&sl->up);
    sl->have_ev = sl->have_up = 0;
}

static void rp_prepare(struct rp *p, MDB_cursor *c, uint64_t seq, struct rp_slot *sl)
{
    MDB_val v;

    fl_error_clear(&sl->err);
    sl->rc = replay_fetch(c, seq, seq == p->from, &v, &sl->err);
    if (sl->rc != 0)
        return;
    sl->have_up = 1;
    if ((sl->rc = replay_decode(&v, &sl->r, &sl->up, &sl->err)) != 0)
        return;
    if ((sl->rc = replay_parse(p->s, &sl->r, &sl->ev, &sl->err)) == 0)
        sl->have_ev = 1;
}

static void rp_wake(struct rp *p, _Atomic int *waits)
{
    if (atomic_load(waits)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

static void *rp_producer(void *arg)
{
    struct rp *p = arg;
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(p->src, p->s->db.dbi[FL_DB_LOG], &c);
    uint64_t n = 0;

    for (uint64_t seq = p->from; seq <= p->to && !atomic_load(&p->stop); seq++, n++) {
        /* Full: sleep until half the ring is free, so that a wake-up is worth RP_SLOTS / 2
         * records, not one. */
        if (n - atomic_load(&p->consumed) == RP_SLOTS) {
            pthread_mutex_lock(&p->mu);
            atomic_store(&p->producer_waits, 1);
            while (!atomic_load(&p->stop) && n - atomic_load(&p->consumed) > RP_SLOTS / 2)
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_store(&p->producer_waits, 0);
            pthread_mutex_unlock(&p->mu);
            if (atomic_load(&p->stop))
                break;
        }
        struct rp_slot *sl = &p->slot[n % RP_SLOTS];
        rp_clear(sl);
        if (rc != 0) {
            fl_error_clear(&sl->err);
            sl->rc = fl_error_set(&sl->err, FL_EINTERNAL, "seq %llu: record missing (%s)",
                                  (unsigned long long)seq, mdb_strerror(rc));
        } else {
            rp_prepare(p, c, seq, sl);
        }
        atomic_store(&p->produced, n + 1);
        if (sl->rc != 0 || seq == p->to || n + 1 - atomic_load(&p->consumed) >= RP_SLOTS / 2)
            rp_wake(p, &p->consumer_waits);
        if (sl->rc != 0)
            break; /* the consumer reports it when it gets there */
    }
    if (c)
        mdb_cursor_close(c);
    return NULL;
}

/* Replay with a producer thread; 1 if the thread could not be started (replay alone then). */
static int replay_threaded(struct fl_store *s, MDB_txn *src, struct fl_ptx *dst, uint64_t from,
                           uint64_t to, uint64_t *done, struct fl_error *err, int *rcp)
{
    struct rp p = {.s = s, .src = src, .from = from, .to = to};
    pthread_t th;
    uint64_t n = 0;
    int rc = 0;

    atomic_init(&p.produced, 0);
    atomic_init(&p.consumed, 0);
    atomic_init(&p.stop, 0);
    atomic_init(&p.producer_waits, 0);
    atomic_init(&p.consumer_waits, 0);
    if (!(p.slot = calloc(RP_SLOTS, sizeof *p.slot)))
        return 1;
    if (pthread_mutex_init(&p.mu, NULL) != 0) {
        free(p.slot);
        return 1;
    }
    if (pthread_cond_init(&p.cv, NULL) != 0 || pthread_create(&th, NULL, rp_producer, &p) != 0) {
        pthread_cond_destroy(&p.cv);
        pthread_mutex_destroy(&p.mu);
        free(p.slot);
        return 1;
    }
    for (uint64_t seq = from; seq <= to; seq++, n++) {
        if (atomic_load(&p.produced) == n) {
            pthread_mutex_lock(&p.mu);
            atomic_store(&p.consumer_waits, 1);
            while (atomic_load(&p.produced) == n)
                pthread_cond_wait(&p.cv, &p.mu);
            atomic_store(&p.consumer_waits, 0);
            pthread_mutex_unlock(&p.mu);
        }
        struct rp_slot *sl = &p.slot[n % RP_SLOTS];
        if (sl->rc != 0) {
            rc = sl->rc;
            if (err)
                *err = sl->err;
        } else {
            rc = replay_apply(dst, seq, &sl->r, &sl->ev, err);
        }
        if ((rc = replay_step_end(dst, seq, rc, done, err)) != 0)
            break;
        atomic_store(&p.consumed, n + 1);
        if (atomic_load(&p.produced) - (n + 1) <= RP_SLOTS / 2)
            rp_wake(&p, &p.producer_waits);
    }
    atomic_store(&p.stop, 1);
    rp_wake(&p, &p.producer_waits);
    pthread_join(th, NULL);
    for (size_t i = 0; i < RP_SLOTS; i++)
        rp_clear(&p.slot[i]);
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
    free(p.slot);
    *rcp = rc;
    return 0;
}

/* Replay records [from, to] of src into dst on this thread alone (verify: it shares the
 * machine with the server's work) or, with threads, with a second one decoding ahead. */
static int replay(struct fl_store *s, MDB_txn *src, struct fl_ptx *dst, uint64_t from,
                  uint64_t to, uint64_t *done, int threads, struct fl_error *err)
{
    MDB_cursor *c = NULL;
    int rc = 0;

    if (from > to)
        return 0;
    if (threads && to - from >= RP_SLOTS && replay_threaded(s, src, dst, from, to, done, err, &rc) == 0)
        return rc;
    if ((rc = mdb_cursor_open(src, s->db.dbi[FL_DB_LOG], &c)) != 0)
        return fl_error_set(err, FL_EINTERNAL, "seq %llu: record missing (%s)",
                            (unsigned long long)from, mdb_strerror(rc));
    for (uint64_t seq = from; seq <= to; seq++) {
        rc = replay_one(s, c, dst, seq, seq == from, err);
        if ((rc = replay_step_end(dst, seq, rc, done, err)) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc;
}

int fl_store_replay(struct fl_store *s, MDB_txn *src, struct fl_ptx *dst, uint64_t from,
                    uint64_t to, uint64_t *done, struct fl_error *err)
{
    return replay(s, src, dst, from, to, done, 0, err);
}

/* Replay [seq, to] into the live projections in one transaction, clearing the rebuild mark
 * with the last chunk. Returns 0, MDB_MAP_FULL (grow and redo) or another failure. */
static int rebuild_chunk(struct fl_store *s, struct fl_ptx *x, uint64_t seq, uint64_t to,
                         uint64_t *done, struct fl_error *err)
{
    MDB_txn *txn = NULL, *rtxn = NULL;
    int rc;

    fl_project_forget(x);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0 ||
        (rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &rtxn)) != 0)
        goto out;
    fl_project_begin(x, txn);
    x->mdb_rc = 0;
    x->names = s->names;
    x->replay = 1;
    if (seq <= to && replay(s, rtxn, x, seq, to, done, 1, err) != 0) {
        rc = x->mdb_rc ? x->mdb_rc : -1;
        goto out;
    }
    if (to >= s->head && (rc = set_pending(s, txn, 0)) != 0)
        goto out;
    mdb_txn_abort(rtxn);
    rtxn = NULL;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc == 0) {
        fl_project_keep(x, &s->names);
        pf_note(s);
    }
out:
    fl_project_forget(x); /* its transaction ended, committed or not */
    if (rtxn)
        mdb_txn_abort(rtxn);
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

/* One more commit (the rebuild's mark, written again), so that the rebuild's first chunk can
 * reuse the pages the drop freed. LMDB reuses a page freed by transaction T only once every
 * reader's snapshot is newer than T, and the rebuild's log reader begins on the newest
 * snapshot: the drop's own, without this commit. Its first chunk then took every page new
 * from the end of the map, each first touch a page fault, instead of the dropped projections'
 * pages, still mapped (store-bench rebuild x1.11: bench/RESULTS.md set N). */
static int release_dropped(struct fl_store *s)
{
    MDB_txn *txn;
    int rc;

    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        return rc;
    if ((rc = set_pending(s, txn, 1)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/* Drop every projection and set the rebuild's mark, in one commit (then release_dropped's).
 * The commit writes the list of the pages it freed, which needs new pages of its own: in a map
 * no larger than the data (a store just reopened) that is MDB_MAP_FULL, and the caller grows
 * the map and comes back. */
static int drop_projections(struct fl_store *s)
{
    MDB_txn *txn;
    int rc;

    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        return rc;
    for (int i = FL_DB_FIRST_PROJ; i < FL_DB_COUNT && rc == 0; i++)
        rc = mdb_drop(txn, s->db.dbi[i], 0);
    if (rc != 0 || (rc = set_pending(s, txn, 1)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return rc;
    return release_dropped(s);
}

static int store_rebuild(struct fl_store *s, uint64_t *events, struct fl_error *err)
{
    struct fl_ptx x = {0};
    uint64_t seq = 1, total = 0;
    int rc;

    /* The names are dropped with the other projections and given out again as the log
     * replays: nothing cached before holds until a chunk of the rebuild commits it again. */
    fl_project_names_drop(&s->names);
    x.db = &s->db;
    x.arena = fl_arena_new();
    if (!x.arena)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    /* Drop every projection and mark the rebuild in one commit: a crash midway is then seen at
     * the next open, which starts the rebuild again. */
    while ((rc = drop_projections(s)) == MDB_MAP_FULL)
        if ((rc = grow_map(s, err)) != 0)
            goto out;
    if (rc != 0)
        goto mdb_fail;
    pf_queue_free(s); /* the dropped projections' pages: the chunks below write them first */
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
    fl_project_forget(&x);
    fl_buf_free(&x.ent);
    fl_buf_free(&x.v);
    fl_arena_free(x.arena);
    return rc;
}

int fl_store_rebuild(struct fl_store *s, uint64_t *events, struct fl_error *err)
{
    pthread_mutex_lock(&s->mu);
    /* Readers must not see the projections halfway: they wait for the rebuild. */
    int rc = store_sync(s, NULL, err);
    if (rc == 0) {
        view_hold(s);
        rc = store_rebuild(s, events, err);
        view_release(s);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- backup ---- */

/* The head and the journal position recorded in the LMDB copy just made: mdb_env_copy2 took
 * its own snapshot, at some commit after the backup began, and the journal must be copied up
 * to that very commit. */
static int copy_position(const char *dir, uint64_t *head, uint64_t *jend)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    struct fl_dbs db;
    uint64_t head_off;
    int rc;

    *jend = FL_JOURNAL_HEADER;
    if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_maxdbs(env, FL_DB_COUNT)) ||
        (rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600)) ||
        (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) ||
        (rc = fl_store_open_dbs(txn, &db, 0)))
        goto out;
    *head = fl_store_log_head(txn, &db);
    rc = fl_store_journal_pos(txn, &db, jend, &head_off);
    if (rc == MDB_NOTFOUND && *head == 0)
        rc = 0; /* an empty store records no journal position */
out:
    if (txn)
        mdb_txn_abort(txn);
    if (env)
        mdb_env_close(env);
    return rc;
}

/* Runs without the store's lock: the compacting copy reads a snapshot of its own (pinned like a
 * verify's, so that the map is not resized under it), and the journal is read only up to what
 * that snapshot recorded. Commits go on meanwhile. */
static int store_backup(struct fl_store *s, const char *dir, uint64_t *bytes, uint64_t *head,
                        struct fl_error *err)
{
    char path[4200];
    struct stat st;
    uint64_t jend;
    int rc;

    if (mkdir(dir, 0700) != 0)
        return fl_error_set(err, errno == EEXIST ? FL_EALREADY_EXISTS : FL_EUNAVAILABLE,
                            "cannot create backup directory %s: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    /* The copy never takes LMDB's writer lock, so it cannot deadlock with a commit. */
    rc = mdb_env_copy2(s->env, dir, MDB_CP_COMPACT);
    /* LMDB creates the copy 0666 less the umask; it holds every tenant's data, like the
     * store's own files (0600). */
    if (rc == 0 && chmod(path, 0600) != 0)
        rc = errno;
    if (rc == 0)
        rc = copy_position(dir, head, &jend);
    if (rc != 0) {
        unlink(path);
        rmdir(dir);
        return fl_store_write_error(s, rc, "backup", err);
    }
    /* The copy's snapshot may hold a commit still in flight (applied, its flush to come): make
     * it durable here too, or an OS crash could take back from the store what the backup keeps. */
    if ((rc = store_sync(s, NULL, err)) != 0) {
        unlink(path);
        rmdir(dir);
        return rc;
    }
    *bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* the copy was written without a flush */
    if (fd < 0 || fsync(fd) != 0)
        rc = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        unlink(path);
        rmdir(dir);
        return fl_store_write_error(s, rc, "backup", err);
    }
    snprintf(path, sizeof path, "%s/journal", dir);
    if ((rc = fl_journal_copy(s->journal, path, jend, err)) != 0) {
        unlink(path);
        snprintf(path, sizeof path, "%s/data.mdb", dir);
        unlink(path);
        rmdir(dir);
        return rc;
    }
    *bytes += stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    fl_fsync_dir(dir);
    return 0;
}

int fl_store_backup(struct fl_store *s, const char *dir, uint64_t *bytes, uint64_t *head,
                    struct fl_error *err)
{
    int rc;

    pthread_mutex_lock(&s->mu);
    s->pins++;
    pthread_mutex_unlock(&s->mu);
    rc = store_backup(s, dir, bytes, head, err);
    pthread_mutex_lock(&s->mu);
    if (--s->pins == 0)
        pthread_cond_broadcast(&s->unpinned);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- stats and test hooks ---- */

int fl_store_pinned(struct fl_store *s)
{
    pthread_mutex_lock(&s->mu);
    int pinned = s->pins > 0;
    pthread_mutex_unlock(&s->mu);
    return pinned;
}

void fl_store_debug_verify_hook(struct fl_store *s, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&s->mu);
    s->verify_hook = fn;
    s->verify_hook_arg = arg;
    pthread_mutex_unlock(&s->mu);
}

static int store_stats(struct fl_store *s, msgpack_packer *pk, struct fl_error *err)
{
    MDB_envinfo info;
    MDB_stat st;

    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    msgpack_pack_map(pk, 15);
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
    KV("journal_bytes", fl_journal_end(s->journal));
    KV("journal_flushes", fl_journal_flushes(s->journal));
    KV("recovered_events", s->recovered);
    KV("pages_prefaulted", fl_prefault_pages(s->pf));
#undef KV
    (void)err;
    return 0;
}

int fl_store_stats(struct fl_store *s, msgpack_packer *pk, struct fl_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = store_stats(s, pk, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int store_debug_put_raw(struct fl_store *s, uint64_t seq, const void *bytes, size_t len)
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

int fl_store_debug_put_raw(struct fl_store *s, uint64_t seq, const void *bytes, size_t len)
{
    pthread_mutex_lock(&s->mu);
    int rc = store_debug_put_raw(s, seq, bytes, len);
    pthread_mutex_unlock(&s->mu);
    return rc;
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
