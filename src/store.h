/* store.h: the durable record. One LMDB environment in a data directory holding the append-only
 * log and, maintained in the same transactions, the projections (the seven tables, attempt
 * history, indexes, as-of versions), plus the journal (journal.h), the log's flushed copy that
 * makes each commit durable. No networking here: the server, the tools and the tests share this
 * API.
 *
 * Appends are built for group commit: the caller gathers many independent appends (from many
 * clients) and hands them to fl_store_commit in one call. They go into one LMDB write
 * transaction and one durable commit; each append gets its own outcome, and one append failing
 * never fails the others. Nothing is reported committed before the commit's records are
 * flushed to the journal (fdatasync), unless the store was opened with nosync (tests only);
 * the LMDB transaction is committed right after, unflushed, and recovered from the journal
 * after an unclean stop (store.c, "Durability").
 *
 * A commit can also be made in two steps, so that one group's flush overlaps the next group's
 * transaction: fl_store_apply, then fl_store_sync (see there). Reads see only durable commits.
 *
 * Every writing entry point takes the store's (recursive) lock; reads take none for longer than
 * a moment (they read a snapshot of the last durable commit): flowlogd commits on one thread,
 * flushes on another and serves reads on a third. */
#ifndef FL_STORE_H
#define FL_STORE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "event.h"

struct fl_store;

struct fl_store_opts {
    const char *dir;             /* data directory; created if missing */
    int nosync;                  /* 1: no fsync (tests and benchmarks only) */
    size_t map_size;             /* initial LMDB map size in bytes; 0: 1 MiB; grows on demand */
    size_t max_map_size;         /* growth stops here; 0: 1 TiB */
    struct fl_event_limits lim;  /* limits applied when replaying the log (none of size: its
                                    events passed the server's when they were appended) */
};

/* Open (creating if needed) the store in o->dir. Fails with a message if the directory holds
 * a store of an unknown format. */
int fl_store_open(struct fl_store **out, const struct fl_store_opts *o, struct fl_error *err);
/* Close the store; accepts NULL. No transaction may be open. */
void fl_store_close(struct fl_store *s);

/* The seq and ts given to one event of an append. */
struct fl_ack {
    uint64_t seq;
    int64_t ts;      /* microseconds since the epoch */
    int duplicate;   /* 1: the event_id was already committed; seq/ts are the original's */
};

/* One append: 1..n events of one tenant, all committed or none. */
struct fl_append {
    struct fl_str tenant;     /* borrowed */
    struct fl_event *events;  /* borrowed; form already checked by fl_event_parse */
    size_t n;
    struct fl_ack *acks;      /* caller-provided array of n; filled on success */
    struct fl_error err;      /* outcome: err.code == 0 means committed; else err.index names
                                 the first failing event */
    /* NULL, or the form error (bad_request, too_large) of the event after events[n - 1]: the
     * append is then checked and never committed. It fails with that error unless one of its
     * n events fails first, so that an append's error always names its first bad event. */
    const struct fl_error *then;
};

/* Commit apps[0..n) in one durable transaction, in order (each append sees the effects of those
 * before it). Returns 0 when the transaction committed: each append then carries its own
 * outcome. Returns a negative fl_err (FL_EUNAVAILABLE for a full disk or an I/O error,
 * FL_EINTERNAL otherwise) when nothing could be committed: then every append's err says so.
 * A full LMDB map is grown and the whole group redone transparently. */
int fl_store_commit(struct fl_store *s, struct fl_append **apps, size_t n, struct fl_error *err);

/* The first step of a pipelined commit: fl_store_commit without the flush. The group's
 * transaction is committed and its records written to the journal through the page cache (so
 * a crash of the process loses nothing; an OS crash may take them back). Each append's outcome
 * is set as by fl_store_commit, but nothing of the group may be acknowledged, and reads do not
 * see it, until fl_store_sync has returned a durable head >= *need (the group's last seq, or
 * the head before it: a group of duplicates waits for its originals). Call from one thread at
 * a time (as fl_store_commit); fl_store_sync may run meanwhile on another. */
int fl_store_apply(struct fl_store *s, struct fl_append **apps, size_t n, uint64_t *need,
                   struct fl_error *err);
/* The second step: flush the journal as far as groups were applied, then make them visible to
 * reads; *durable (may be NULL) gets the durable head. Returns 0, or FL_EUNAVAILABLE when the
 * flush failed: the store then refuses further commits until restarted (whether the pending
 * groups reached the disk is unknown; their appends must be answered with that error). */
int fl_store_sync(struct fl_store *s, uint64_t *durable, struct fl_error *err);

/* 1 while a verify or backup holds a snapshot of its own (a commit that must grow the map then
 * waits for it to end). */
int fl_store_pinned(struct fl_store *s);
/* The seq of the last durable event, the head that reads see (0 for an empty log). */
uint64_t fl_store_head(struct fl_store *s);
/* The data directory's path (borrowed). */
const char *fl_store_dir(const struct fl_store *s);

/* Drop every projection and rebuild it from the log, in chunks; returns the number of events
 * replayed in *events (may be NULL). For repair, flowlogd's rebuild op and the benchmarks. It
 * holds the store's lock and every read (as a map growth does) until it is done. */
int fl_store_rebuild(struct fl_store *s, uint64_t *events, struct fl_error *err);

/* Check every record's checksum, the hash chain and seq/ts order, then rebuild the projections
 * in a scratch environment and compare them with the live ones, all of it on a snapshot taken
 * at the start: commits go on meanwhile (a map growth waits for the verify to end), and the
 * report is of the snapshot. One verify at a time (a second waits). Packs a report map:
 * {"ok": bool, "scope": "store"|"tenant", "events": n, "head_seq": n, "head_hash": "hex",
 * "problems": [str...]}. With a tenant (len > 0) the whole store is checked all the same (the
 * chain runs through every tenant's records), but "events" counts that tenant's, and only the
 * problems at its own records are told: the others are counted in one line, as they may name
 * other tenants' ids; "ok" is about the whole store. Returns 0 if the check ran (whatever it
 * found), or a negative fl_err if it could not run. */
int fl_store_verify(struct fl_store *s, struct fl_str tenant, msgpack_packer *pk,
                    struct fl_error *err);

/* Write a consistent, compacted copy of the whole store (log and projections, as of one commit:
 * *head gets its seq) into the new directory dir, which must not exist yet; *bytes gets the
 * copy's size. The copy is an ordinary data directory: `flowlogd --data dir` serves it. Runs in
 * the caller's thread for as long as the copy takes (LMDB's mdb_env_copy2 with MDB_CP_COMPACT),
 * without the store's lock: commits go on (one that must grow the map waits), and the copy is
 * of a commit made at or after the call began. */
int fl_store_backup(struct fl_store *s, const char *dir, uint64_t *bytes, uint64_t *head,
                    struct fl_error *err);

/* Store-wide counters packed as a map. */
int fl_store_stats(struct fl_store *s, msgpack_packer *pk, struct fl_error *err);

/* ---- for tests only: tamper with the raw log to prove that verify notices ---- */
/* Replace record seq's stored bytes with bytes[0..len); len 0 deletes the record. */
int fl_store_debug_put_raw(struct fl_store *s, uint64_t seq, const void *bytes, size_t len);
/* Call fn(arg) inside each verify once it holds its snapshot, without the store's lock (to test
 * that commits go on meanwhile). NULL: none. */
void fl_store_debug_verify_hook(struct fl_store *s, void (*fn)(void *), void *arg);
/* Copy record seq's stored bytes into *out (caller frees). */
int fl_store_debug_get_raw(struct fl_store *s, uint64_t seq, void **out, size_t *len);

#endif
