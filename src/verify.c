/* verify.c: prove the record intact: every checksum, the hash chain, seq and ts order, the
 * journal equal to the log, and projections equal to a rebuild from the log made in a scratch
 * environment. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diag.h"
#include "project.h"
#include "record.h"
#include "store_int.h"
#include "wire.h"

#define MAX_PROBLEMS 20
#define CHUNK 20000

struct report {
    char *problems[MAX_PROBLEMS];
    int n, more;
    uint64_t events, head_seq;
    uint8_t head_hash[FL_CHAIN_LEN];
    struct fl_str tenant;   /* len 0: the whole store's report */
    uint64_t tenant_events; /* the tenant's records among events */
    int hidden;             /* problems not told to the tenant */
};

/* What the store was when the verify's snapshot was taken (under the lock): the verify then
 * runs without it while commits go on. */
struct snap {
    uint64_t head;     /* the log's head in the snapshot */
    uint64_t jend;     /* the journal offset after the head's record */
    size_t map_size;   /* for the scratch environment */
};

/* Keep a problem for the report. A tenant's report (r->tenant set) names only the problems at
 * its own records (mine); the others are counted in r->hidden, as they may name other tenants'
 * ids. A store-wide report names every one. */
static void problem_of(struct report *r, int mine, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem_of(struct report *r, int mine, const char *fmt, ...)
{
    va_list ap;
    char buf[512];

    if (r->tenant.len && !mine) {
        r->hidden++;
        return;
    }
    if (r->n >= MAX_PROBLEMS) {
        r->more++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    r->problems[r->n] = strdup(buf);
    if (r->problems[r->n])
        r->n++;
}

static int same_tenant(const struct report *r, struct fl_str t)
{
    return r->tenant.len == t.len && memcmp(r->tenant.p, t.p, t.len) == 0;
}

/* Whether the record at seq is the report's tenant's (a store-wide report owns them all). */
static int seq_mine(struct report *r, struct fl_store *s, MDB_txn *txn, uint64_t seq)
{
    struct fl_record rec;
    struct fl_error e;
    msgpack_unpacked up;
    MDB_val v;
    int mine;

    if (!r->tenant.len)
        return 1;
    if (fl_store_get_record(txn, &s->db, seq, &v) != 0)
        return 0;
    mine = fl_record_decode(v.mv_data, v.mv_size, &rec, &up, &e) == 0 && same_tenant(r, rec.tenant);
    msgpack_unpacked_destroy(&up);
    return mine;
}

static void hex(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t i;
    for (i = 0; i < n && 2 * i + 2 < cap; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    out[2 * i] = '\0';
}

/* Walk the log: seq continuity, checksums, the chain, ts order. */
static int check_log(struct fl_store *s, MDB_txn *txn, const struct snap *sn, struct report *r,
                     struct fl_error *err)
{
    uint8_t prev[FL_CHAIN_LEN] = {0}, chain[FL_CHAIN_LEN];
    uint64_t expect = 1;
    int64_t last_ts = INT64_MIN;
    MDB_cursor *c;
    MDB_val k, v;
    int rc;

    if ((rc = mdb_cursor_open(txn, s->db.dbi[FL_DB_LOG], &c)) != 0)
        return fl_store_mdb_error(rc, "verify", err);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        struct fl_record rec;
        struct fl_error e;
        msgpack_unpacked up;
        uint64_t seq = k.mv_size == 8 ? fl_get_be64(k.mv_data) : 0;

        if (k.mv_size != 8) {
            problem_of(r, 0, "a log key of %zu bytes is not a seq", k.mv_size);
            continue;
        }
        if (seq != expect)
            problem_of(r, 0, "seq %llu..%llu missing: the log has a gap",
                       (unsigned long long)expect, (unsigned long long)seq - 1);
        expect = seq + 1;
        r->events++;
        r->head_seq = seq;
        fl_error_clear(&e);
        if (fl_record_decode(v.mv_data, v.mv_size, &rec, &up, &e) != 0) {
            problem_of(r, 0, "seq %llu: %s", (unsigned long long)seq, e.msg);
            if (v.mv_size >= FL_RECORD_TRAILER)
                memcpy(prev, (const uint8_t *)v.mv_data + v.mv_size - FL_RECORD_TRAILER,
                       FL_CHAIN_LEN);
            msgpack_unpacked_destroy(&up);
            continue;
        }
        int mine = !r->tenant.len || same_tenant(r, rec.tenant);
        if (r->tenant.len && mine)
            r->tenant_events++;
        if (rec.seq != seq)
            problem_of(r, mine, "seq %llu: the record says seq %llu (moved or swapped)",
                       (unsigned long long)seq, (unsigned long long)rec.seq);
        fl_hash_chain(prev, rec.body, rec.body_len, chain);
        if (memcmp(chain, rec.chain, FL_CHAIN_LEN) != 0)
            problem_of(r, mine,
                       "seq %llu: hash chain broken (a record was changed, removed or reordered)",
                       (unsigned long long)seq);
        if (rec.ts < last_ts)
            problem_of(r, mine, "seq %llu: ts goes back in time", (unsigned long long)seq);
        last_ts = rec.ts;
        memcpy(prev, rec.chain, FL_CHAIN_LEN);
        msgpack_unpacked_destroy(&up);
    }
    mdb_cursor_close(c);
    memcpy(r->head_hash, prev, FL_CHAIN_LEN);
    if (rc != MDB_NOTFOUND)
        return fl_store_mdb_error(rc, "verify", err);
    if (r->head_seq != sn->head)
        problem_of(r, 0, "the log ends at seq %llu but the store's head is %llu",
                   (unsigned long long)r->head_seq, (unsigned long long)sn->head);
    return 0;
}

/* The journal must hold the log record for record, byte for byte: it is what recovery trusts. */
struct journal_check {
    struct fl_store *s;
    MDB_txn *txn;
    struct report *r;
    uint64_t seq, jend;
};

#define JOURNAL_SNAP_END 0x7fff /* journal_frame: the snapshot's end is reached */

static int journal_frame(void *arg, uint64_t off, const uint8_t *rec, size_t len)
{
    struct journal_check *jc = arg;
    MDB_val v;

    if (off >= jc->jend)
        return JOURNAL_SNAP_END; /* written after the snapshot */
    uint64_t seq = ++jc->seq;
    int rc = fl_store_get_record(jc->txn, &jc->s->db, seq, &v);

    if (rc == MDB_NOTFOUND)
        problem_of(jc->r, 0, "seq %llu is in the journal (offset %llu) but not in the log",
                   (unsigned long long)seq, (unsigned long long)off);
    else if (rc != 0)
        return rc;
    else if (v.mv_size != len || memcmp(v.mv_data, rec, len) != 0)
        problem_of(jc->r, seq_mine(jc->r, jc->s, jc->txn, seq),
                   "seq %llu: the log's record differs from the journal's copy (offset %llu)",
                   (unsigned long long)seq, (unsigned long long)off);
    return 0;
}

/* The journal up to the snapshot's end; what follows it is being written meanwhile (a frame
 * there may be half written), so the scan stops there and looks no further. */
static int check_journal(struct fl_store *s, MDB_txn *txn, const struct snap *sn,
                         struct report *r, struct fl_error *err)
{
    struct journal_check jc = {s, txn, r, 0, sn->jend};
    uint64_t end;
    int damaged, rc = fl_journal_scan(s->journal, 0, journal_frame, &jc, &end, &damaged, err);

    if (rc == JOURNAL_SNAP_END)
        rc = damaged = 0;
    if (rc > 0)
        return fl_store_mdb_error(rc, "verify", err);
    if (rc < 0)
        return rc;
    if (damaged && end < sn->jend)
        problem_of(r, 0, "the journal is damaged at offset %llu, after seq %llu",
                   (unsigned long long)end, (unsigned long long)jc.seq);
    else if (end != sn->jend)
        problem_of(r, 0,
                   "the journal's records end at offset %llu, not at %llu where the store "
                   "wrote its last one",
                   (unsigned long long)end, (unsigned long long)sn->jend);
    if (jc.seq < sn->head)
        problem_of(r, 0, "the journal ends at seq %llu but the log at seq %llu",
                   (unsigned long long)jc.seq, (unsigned long long)sn->head);
    return 0;
}

static void remove_scratch(const char *dir)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

/* Compare one projection database of the live store with the scratch rebuild. */
static int compare_db(MDB_txn *live, MDB_dbi ldbi, MDB_txn *scratch, MDB_dbi sdbi,
                      const char *name, struct report *r)
{
    MDB_cursor *a = NULL, *b = NULL;
    MDB_val ka, va, kb, vb;
    int ra, rb, rc = 0;

    if ((rc = mdb_cursor_open(live, ldbi, &a)) != 0 || (rc = mdb_cursor_open(scratch, sdbi, &b)))
        goto out;
    ra = mdb_cursor_get(a, &ka, &va, MDB_FIRST);
    rb = mdb_cursor_get(b, &kb, &vb, MDB_FIRST);
    while (ra == 0 || rb == 0) {
        char khex[80];
        int same_key = ra == 0 && rb == 0 && ka.mv_size == kb.mv_size &&
                       memcmp(ka.mv_data, kb.mv_data, ka.mv_size) == 0;
        if (same_key && va.mv_size == vb.mv_size &&
            memcmp(va.mv_data, vb.mv_data, va.mv_size) == 0) {
            ra = mdb_cursor_get(a, &ka, &va, MDB_NEXT);
            rb = mdb_cursor_get(b, &kb, &vb, MDB_NEXT);
            continue;
        }
        const MDB_val *k = ra == 0 ? &ka : &kb;
        hex(k->mv_data, k->mv_size < 32 ? k->mv_size : 32, khex, sizeof khex);
        if (same_key)
            problem_of(r, 0, "projection %s differs from a rebuild at key %s: the values differ",
                       name, khex);
        else if (rb != 0 || (ra == 0 && ka.mv_size > 0 &&
                             (ka.mv_size < kb.mv_size ? memcmp(ka.mv_data, kb.mv_data, ka.mv_size) <= 0
                                                      : memcmp(ka.mv_data, kb.mv_data, kb.mv_size) < 0)))
            problem_of(r, 0, "projection %s has key %s, which a rebuild from the log does not",
                       name, khex);
        else
            problem_of(r, 0, "projection %s lacks key %s, which a rebuild from the log has", name,
                       khex);
        break; /* the first difference is what a person needs; the rest usually follows */
    }
out:
    if (a)
        mdb_cursor_close(a);
    if (b)
        mdb_cursor_close(b);
    return rc;
}

/* Rebuild the projections into a scratch environment and compare them with the live ones. */
static int check_projections(struct fl_store *s, MDB_txn *live, const struct snap *sn,
                             struct report *r, struct fl_error *err)
{
    char dir[4200];
    MDB_env *env = NULL;
    struct fl_dbs sdb;
    struct fl_ptx x = {0}; /* x.names stays NULL: the scratch store's names are its own, so
                              the live store's cache is neither asked nor filled (no
                              fl_project_keep here) */
    MDB_txn *txn = NULL;
    size_t map = sn->map_size;
    int rc;

    snprintf(dir, sizeof dir, "%s/verify.tmp", s->dir);
again:
    fl_project_forget(&x); /* a try in a larger map starts over */
    remove_scratch(dir);
    if (mkdir(dir, 0700) != 0) {
        rc = fl_error_set(err, FL_EUNAVAILABLE, "verify: cannot create %s: %s", dir,
                          strerror(errno));
        fl_buf_free(&x.ent);
        fl_buf_free(&x.v);
        fl_arena_free(x.arena); /* a retry in a larger map may have made them */
        return rc;
    }
    x.arena = x.arena ? x.arena : fl_arena_new();
    if (!x.arena)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_maxdbs(env, FL_DB_COUNT)) ||
        (rc = mdb_env_set_mapsize(env, map)) ||
        /* MDB_NOLOCK: the scratch env is this thread's alone. Its lock file would be mmap'ed
         * and written, which on a full disk kills the whole server with SIGBUS. */
        (rc = mdb_env_open(env, dir, MDB_NOSYNC | MDB_NOTLS | MDB_NOLOCK, 0600)) ||
        (rc = mdb_txn_begin(env, NULL, 0, &txn)) || (rc = fl_store_open_dbs(txn, &sdb, 1)))
        goto mdb;
    x.db = &sdb;
    for (uint64_t seq = 1; seq <= r->head_seq; seq += CHUNK) {
        uint64_t to = seq + CHUNK - 1 < r->head_seq ? seq + CHUNK - 1 : r->head_seq;
        struct fl_error re; /* the reason goes into the report, whatever err is */
        fl_project_begin(&x, txn);
        x.mdb_rc = 0;
        fl_error_clear(&re);
        if (fl_store_replay(s, live, &x, seq, to, NULL, &re) != 0) {
            if (x.mdb_rc) {
                rc = x.mdb_rc;
                goto mdb;
            }
            problem_of(r, 0, "rebuild from the log failed: %s", re.msg);
            goto done;
        }
        rc = mdb_txn_commit(txn);
        txn = NULL;
        fl_project_forget(&x); /* valid for one transaction only */
        if (rc != 0)
            goto mdb;
        if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
            goto mdb;
    }
    for (int i = FL_DB_FIRST_PROJ; i < FL_DB_COUNT; i++)
        if ((rc = compare_db(live, s->db.dbi[i], txn, sdb.dbi[i], fl_db_names[i], r)) != 0)
            goto mdb;
done:
    if (txn)
        mdb_txn_abort(txn);
    fl_project_forget(&x);
    mdb_env_close(env);
    remove_scratch(dir);
    fl_buf_free(&x.ent);
    fl_buf_free(&x.v);
    fl_arena_free(x.arena);
    return 0;
mdb:
    if (txn)
        mdb_txn_abort(txn);
    txn = NULL;
    if (env)
        mdb_env_close(env);
    env = NULL;
    fl_project_forget(&x);
    if (rc == MDB_MAP_FULL && map < s->max_map_size) {
        map *= 2;
        goto again;
    }
    remove_scratch(dir);
    fl_buf_free(&x.ent);
    fl_buf_free(&x.v);
    fl_arena_free(x.arena);
    return fl_store_write_error(s, rc, "verify rebuild", err);
}

static int store_verify(struct fl_store *s, struct fl_str tenant, MDB_txn *txn,
                        const struct snap *sn, msgpack_packer *pk, struct fl_error *err)
{
    struct report r = {.tenant = tenant};
    char hh[2 * FL_CHAIN_LEN + 1];
    int rc;

    rc = check_log(s, txn, sn, &r, err);
    if (rc == 0)
        rc = check_journal(s, txn, sn, &r, err);
    if (rc == 0)
        rc = check_projections(s, txn, sn, &r, err);
    if (rc == 0) {
        hex(r.head_hash, FL_CHAIN_LEN, hh, sizeof hh);
        msgpack_pack_map(pk, 6);
        fl_wire_pack_cstr(pk, "ok");
        if (r.n == 0 && r.hidden == 0)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        fl_wire_pack_cstr(pk, "scope");
        fl_wire_pack_cstr(pk, tenant.len ? "tenant" : "store");
        fl_wire_pack_cstr(pk, "events");
        msgpack_pack_uint64(pk, tenant.len ? r.tenant_events : r.events);
        fl_wire_pack_cstr(pk, "head_seq");
        msgpack_pack_uint64(pk, r.head_seq);
        fl_wire_pack_cstr(pk, "head_hash");
        fl_wire_pack_cstr(pk, hh);
        fl_wire_pack_cstr(pk, "problems");
        msgpack_pack_array(pk, (size_t)r.n + (r.more ? 1 : 0) + (r.hidden ? 1 : 0));
        for (int i = 0; i < r.n; i++)
            fl_wire_pack_cstr(pk, r.problems[i]);
        if (r.more) {
            char more[64];
            snprintf(more, sizeof more, "... and %d more problems", r.more);
            fl_wire_pack_cstr(pk, more);
        }
        if (r.hidden) {
            char more[200];
            snprintf(more, sizeof more,
                     "%d problem%s not named to a tenant (in records not known to be this "
                     "tenant's, the journal or the projections); an operator's verify names them",
                     r.hidden, r.hidden == 1 ? "" : "s");
            fl_wire_pack_cstr(pk, more);
        }
    }
    for (int i = 0; i < r.n; i++)
        free(r.problems[i]);
    return rc;
}

/* Take the snapshot under the lock: a private read handle (the rebuild below reads through
 * it), the head, and the journal's end as that snapshot recorded it. */
static int take_snapshot(struct fl_store *s, MDB_txn **txn, struct snap *sn, struct fl_error *err)
{
    uint64_t head_off;
    int rc;

    pthread_mutex_lock(&s->mu);
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn)) != 0) {
        pthread_mutex_unlock(&s->mu);
        return fl_store_mdb_error(rc, "verify", err);
    }
    sn->head = s->head;
    sn->map_size = s->map_size;
    /* None recorded (an empty store) or unreadable: the journal check then reports it. */
    if (fl_store_journal_pos(*txn, &s->db, &sn->jend, &head_off) != 0)
        sn->jend = FL_JOURNAL_HEADER;
    s->pins++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void drop_snapshot(struct fl_store *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_mutex_lock(&s->mu);
    if (--s->pins == 0)
        pthread_cond_broadcast(&s->unpinned);
    pthread_mutex_unlock(&s->mu);
}

int fl_store_verify(struct fl_store *s, struct fl_str tenant, msgpack_packer *pk,
                    struct fl_error *err)
{
    struct snap sn;
    MDB_txn *txn;
    int rc;

    pthread_mutex_lock(&s->verify_mu);
    if ((rc = take_snapshot(s, &txn, &sn, err)) == 0) {
        if (s->verify_hook)
            s->verify_hook(s->verify_hook_arg);
        rc = store_verify(s, tenant, txn, &sn, pk, err);
        drop_snapshot(s, txn);
    }
    pthread_mutex_unlock(&s->verify_mu);
    return rc;
}
