/* wire.h: the frame codec of proto/PROTOCOL.md. No I/O: bytes in, msgpack objects out, and
 * helpers to pack replies. Shared by flowlogd, libflowlog and the tools.
 *
 * Hostile input is rejected before msgpack-c allocates anything: msgpack-c trusts declared
 * array/map counts (a 5-byte header can make it malloc gigabytes), so fl_wire_check walks the
 * raw bytes first and refuses counts larger than the bytes left, deep nesting and trailing bytes. */
#ifndef FL_WIRE_H
#define FL_WIRE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define FL_WIRE_VERSION 1
#define FL_FRAME_HDR 4
#define FL_DEFAULT_MAX_FRAME (4u * 1024 * 1024)
#define FL_WIRE_MAX_DEPTH 16
#define FL_DEFAULT_MAX_BATCH 1000

/* Read the 4-byte big-endian length at hdr. */
uint32_t fl_wire_frame_len(const uint8_t hdr[FL_FRAME_HDR]);

/* Walk buf[0..len) as msgpack without allocating: exactly one object, no trailing bytes, depth
 * <= FL_WIRE_MAX_DEPTH, every declared count <= the bytes left, total elements <= len.
 * Returns 0 or FL_EBAD_REQUEST with a message. */
int fl_wire_check(const void *buf, size_t len, struct fl_error *err);

/* fl_wire_check, then decode into *out (msgpack_unpacked_init'ed by this call; the caller calls
 * msgpack_unpacked_destroy). Strings in the result point into buf. */
int fl_wire_decode(const void *buf, size_t len, msgpack_unpacked *out, struct fl_error *err);

/* fl_wire_decode into zone, which the caller owns and clears (msgpack_zone_clear) once it is
 * done with *out: no allocation per frame once the zone is big enough. */
int fl_wire_decode_in(const void *buf, size_t len, msgpack_zone *zone, msgpack_object *out,
                      struct fl_error *err);

/* The value of key in a msgpack map, or NULL (also NULL if map is not a map). */
const msgpack_object *fl_wire_get(const msgpack_object *map, const char *key);

/* Start a frame in sb: appends a 4-byte placeholder; returns its offset for fl_wire_frame_end. */
size_t fl_wire_frame_begin(msgpack_sbuffer *sb);
/* Fill in the length of the frame begun at off. Returns 0, or FL_ETOO_LARGE if the payload
 * exceeds max_frame (the caller then replaces the frame with an error). */
int fl_wire_frame_end(msgpack_sbuffer *sb, size_t off, size_t max_frame);

/* Pack a NUL-terminated string. */
void fl_wire_pack_cstr(msgpack_packer *pk, const char *s);
/* Pack a string of len bytes. */
void fl_wire_pack_strn(msgpack_packer *pk, const char *s, size_t len);
/* Pack microseconds since the epoch as a msgpack timestamp extension (type -1). */
void fl_wire_pack_ts(msgpack_packer *pk, int64_t us);

/* Packing in place, for the hot replies: msgpack_pack_* make a call through the packer and a
 * bounds check per item. fl_wire_reserve makes room for n more bytes at the end of sb (grown
 * as msgpack_sbuffer_write grows it) and returns where they start, or NULL if out of memory;
 * the caller writes at most n bytes there and adds what it wrote to sb->size. fl_wire_put_*
 * write at p the bytes fl_wire_pack_* would and return their count. */
#define FL_WIRE_TS_MAX 15      /* timestamp 96 */
#define FL_WIRE_OK_HEAD_MAX 24 /* map, "id", uint64, "ok", true, "result" */
char *fl_wire_reserve(msgpack_sbuffer *sb, size_t n);
size_t fl_wire_put_ts(uint8_t *p, int64_t us);
size_t fl_wire_put_ok_head(uint8_t *p, uint64_t id);
/* Read a timestamp ext, an integer (microseconds) or an RFC 3339 string; 0 or -1. */
int fl_wire_read_ts(const msgpack_object *o, int64_t *us);
/* Pack a whole error reply map {"id", "ok": false, "error": {...}}; id < 0 packs nil. */
void fl_wire_pack_error(msgpack_packer *pk, int64_t id, const struct fl_error *e);
/* Pack the head of a success reply: {"id": id, "ok": true, "result": — the caller packs the
 * result object next. */
void fl_wire_pack_ok_head(msgpack_packer *pk, uint64_t id);

#endif
