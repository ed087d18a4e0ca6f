/* record.h: the log record format (format version 1).
 *
 *   body     = msgpack [1, seq, ts, tenant, type, event_id | nil, data]
 *   chain    = BLAKE2b-256(previous record's chain || body); 32 zero bytes before seq 1
 *   checksum = xxh3-64(body || chain), canonical big-endian
 *   record   = body || chain (32 bytes) || checksum (8 bytes)
 *
 * The checksum catches accidental corruption cheaply; the chain makes any change, removal or
 * reordering of records visible even to someone who recomputed every checksum, as long as the
 * head hash is known (verify prints it). */
#ifndef FL_RECORD_H
#define FL_RECORD_H

#include <msgpack.h>
#include <stdint.h>

#include "err.h"
#include "event.h"
#include "hash.h"
#include "util.h"

#define FL_RECORD_FORMAT 1
#define FL_RECORD_TRAILER (FL_CHAIN_LEN + 8)

struct fl_record {
    uint64_t seq;
    int64_t ts;
    struct fl_str tenant, type, event_id; /* event_id.p NULL: none */
    const msgpack_object *data;          /* inside the caller's msgpack_unpacked */
    const uint8_t *chain;                /* FL_CHAIN_LEN bytes inside the buffer */
    const uint8_t *body;
    size_t body_len;
};

/* Append the record for one event to out (cleared first); chain_out receives its chain hash. */
int fl_record_encode(struct fl_buf *out, uint64_t seq, int64_t ts, struct fl_str tenant,
                     const struct fl_event *ev, const uint8_t prev[FL_CHAIN_LEN],
                     uint8_t chain_out[FL_CHAIN_LEN]);

/* Check the checksum and decode buf[0..len). On success r borrows from buf and from *up
 * (initialised here; the caller destroys it in every case). FL_EINTERNAL with a message on a
 * bad checksum or a malformed body. */
int fl_record_decode(const void *buf, size_t len, struct fl_record *r, msgpack_unpacked *up,
                     struct fl_error *err);

#endif
