/* query.h: reads of the record, each packed as one msgpack object (the "result" of a reply).
 * Every read runs in one LMDB read snapshot taken when it starts and released before it
 * returns, so a read never sees half an append and never pins pages across loop passes.
 * Timestamps are packed as msgpack timestamp extensions (type -1). */
#ifndef FL_QUERY_H
#define FL_QUERY_H

#include <msgpack.h>
#include <stdint.h>

#include "err.h"
#include "event.h"
#include "store.h"

struct fl_log_filter {
    uint64_t from;        /* first seq to consider (0 and 1 both mean the start) */
    uint64_t limit;       /* most events to return; 0: no limit other than max_bytes */
    int type;             /* enum fl_event_type, or -1 for any */
    struct fl_str flow_id; /* len 0: any */
    struct fl_str run_id;  /* len 0: any */
    size_t max_bytes;     /* stop adding events once the packed events exceed this; 0: 1 MiB */
};

/* Events of tenant matching f, in seq order. Packs {"events": [event...], "next": seq,
 * "head": seq} where next is the seq to continue from and head the log's head at the read.
 * An event is {"seq", "ts", "type", "event_id" (or nil), "data"}. If f names a flow or run
 * that does not exist, the result is empty (not an error): the log has no events for it.
 * *count (may be NULL) receives the number of events packed. */
int fl_query_log(struct fl_store *s, struct fl_str tenant, const struct fl_log_filter *f,
                 msgpack_packer *pk, uint64_t *count, struct fl_error *err);

/* One flow's rows in all seven tables and its attempt history, now (as_of_seq 0, !has_time),
 * as of a seq, or as of a time (the state after the last event with ts <= as_of_time). Packs
 * the state map of CONTRACT.md section 4. FL_ENOT_FOUND if the flow does not exist at that
 * point. */
int fl_query_state(struct fl_store *s, struct fl_str tenant, struct fl_str flow_id,
                   uint64_t as_of_seq, int has_time, int64_t as_of_time, msgpack_packer *pk,
                   struct fl_error *err);

/* A flow's attempts, newest first: {"flow_id", "history": [attempt...], "count": n}. */
int fl_query_history(struct fl_store *s, struct fl_str tenant, struct fl_str flow_id,
                     uint64_t limit, msgpack_packer *pk, struct fl_error *err);

/* Rows of one table for the tenant, optionally where an indexed column equals a value.
 * Rows come in storage order (flows by registration, runs by start, a run's child rows by
 * iteration then key). Paged: at most limit rows (0: 1000) after the opaque cursor `after`
 * (len 0: from the start). Packs {"table", "rows": [row...], "next": cursor-bin or nil}. One answer
 * holds at most 1000 rows (a larger limit is lowered) and about 1 MiB. */
int fl_query_table(struct fl_store *s, struct fl_str tenant, struct fl_str table,
                   struct fl_str where_col, struct fl_str where_val, struct fl_str after,
                   uint64_t limit, msgpack_packer *pk, struct fl_error *err);

#endif
