/* wire.c: frames of proto/PROTOCOL.md, a pre-decoder check against hostile msgpack, and reply
 * packing helpers. No I/O. */
#include "wire.h"

#include <msgpack/timestamp.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

uint32_t fl_wire_frame_len(const uint8_t hdr[FL_FRAME_HDR])
{
    return fl_get_be32(hdr);
}

/* Read an n-byte big-endian unsigned integer at p. */
static uint64_t be_n(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Classify the item at p[0..left): its header size, the payload bytes it carries, and for
 * containers the number of child objects. Returns 0, or -1 if the header is truncated or the
 * byte is not valid msgpack. */
static int item_info(const uint8_t *p, size_t left, size_t *hdr, uint64_t *payload,
                     uint64_t *children)
{
    uint8_t b = p[0];
    int n = 0;

    *hdr = 1;
    *payload = 0;
    *children = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;
    if (b >= 0x80 && b <= 0x8f) {
        *children = 2u * (b & 0x0f);
        return 0;
    }
    if (b >= 0x90 && b <= 0x9f) {
        *children = b & 0x0f;
        return 0;
    }
    if (b >= 0xa0 && b <= 0xbf) {
        *payload = b & 0x1f;
        return 0;
    }
    switch (b) {
    case 0xcc: case 0xd0: *payload = 1; return 0;
    case 0xcd: case 0xd1: *payload = 2; return 0;
    case 0xca: case 0xce: case 0xd2: *payload = 4; return 0;
    case 0xcb: case 0xcf: case 0xd3: *payload = 8; return 0;
    case 0xd4: *payload = 2; return 0;
    case 0xd5: *payload = 3; return 0;
    case 0xd6: *payload = 5; return 0;
    case 0xd7: *payload = 9; return 0;
    case 0xd8: *payload = 17; return 0;
    case 0xc4: case 0xd9: n = 1; break;
    case 0xc5: case 0xda: n = 2; break;
    case 0xc6: case 0xdb: n = 4; break;
    case 0xc7: n = 1; break;
    case 0xc8: n = 2; break;
    case 0xc9: n = 4; break;
    case 0xdc: n = 2; break;
    case 0xdd: n = 4; break;
    case 0xde: n = 2; break;
    case 0xdf: n = 4; break;
    default: return -1; /* 0xc1 is never used */
    }
    if (left < 1 + (size_t)n)
        return -1;
    *hdr = 1 + (size_t)n;
    uint64_t v = be_n(p + 1, n);
    if (b >= 0xdc && b <= 0xdd)
        *children = v;
    else if (b >= 0xde)
        *children = 2 * v;
    else if (b >= 0xc7 && b <= 0xc9)
        *payload = v + 1; /* the ext type byte */
    else
        *payload = v;
    return 0;
}

int fl_wire_check(const void *buf, size_t len, struct fl_error *err)
{
    const uint8_t *p = buf;
    uint64_t left[FL_WIRE_MAX_DEPTH + 1];
    uint64_t total = 0;
    size_t pos = 0;
    int depth = 0;

    if (len == 0)
        return fl_error_set(err, FL_EBAD_REQUEST, "empty frame");
    left[0] = 1;
    while (depth >= 0) {
        size_t hdr;
        uint64_t payload, children;

        if (left[depth] == 0) {
            depth--;
            continue;
        }
        left[depth]--;
        if (pos >= len)
            return fl_error_set(err, FL_EBAD_REQUEST, "truncated msgpack at byte %zu", pos);
        if (item_info(p + pos, len - pos, &hdr, &payload, &children) != 0)
            return fl_error_set(err, FL_EBAD_REQUEST, "invalid msgpack at byte %zu", pos);
        pos += hdr;
        if (payload > len - pos)
            return fl_error_set(err, FL_EBAD_REQUEST,
                                "msgpack item at byte %zu declares %llu bytes, only %zu remain",
                                pos - hdr, (unsigned long long)payload, len - pos);
        pos += (size_t)payload;
        if (children == 0)
            continue;
        /* Each child needs at least one byte: a larger count is a lie that would make
         * msgpack-c allocate count * 24 bytes up front. */
        if (children > len - pos)
            return fl_error_set(err, FL_EBAD_REQUEST,
                                "msgpack container at byte %zu declares %llu elements, only %zu "
                                "bytes remain",
                                pos - hdr, (unsigned long long)children, len - pos);
        total += children;
        if (total > len)
            return fl_error_set(err, FL_EBAD_REQUEST, "too many msgpack elements");
        if (depth + 1 > FL_WIRE_MAX_DEPTH)
            return fl_error_set(err, FL_EBAD_REQUEST, "msgpack nesting deeper than %d",
                                FL_WIRE_MAX_DEPTH);
        left[++depth] = children;
    }
    if (pos != len)
        return fl_error_set(err, FL_EBAD_REQUEST, "%zu trailing bytes after the msgpack object",
                            len - pos);
    return 0;
}

int fl_wire_decode(const void *buf, size_t len, msgpack_unpacked *out, struct fl_error *err)
{
    size_t off = 0;
    int rc;

    msgpack_unpacked_init(out);
    if ((rc = fl_wire_check(buf, len, err)) != 0)
        return rc;
    if (msgpack_unpack_next(out, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
        return fl_error_set(err, FL_EBAD_REQUEST, "malformed msgpack frame");
    return 0;
}

/* msgpack_unpack (msgpack-c marks it obsolete, but it is the one entry point that takes the
 * caller's zone) runs the same decoder as msgpack_unpack_next, which instead frees the result's
 * zone and makes a new one, an 8 KiB malloc and free per frame. */
int fl_wire_decode_in(const void *buf, size_t len, msgpack_zone *zone, msgpack_object *out,
                      struct fl_error *err)
{
    size_t off = 0;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = fl_wire_check(buf, len, err)) != 0)
        return rc;
    if (msgpack_unpack(buf, len, &off, zone, out) != MSGPACK_UNPACK_SUCCESS || off != len)
        return fl_error_set(err, FL_EBAD_REQUEST, "malformed msgpack frame");
    return 0;
}

const msgpack_object *fl_wire_get(const msgpack_object *map, const char *key)
{
    size_t klen = strlen(key);

    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        /* An empty str may carry a NULL ptr (msgpack-c), which memcmp must not see. */
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            (klen == 0 || memcmp(k->via.str.ptr, key, klen) == 0))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

size_t fl_wire_frame_begin(msgpack_sbuffer *sb)
{
    size_t off = sb->size;
    msgpack_sbuffer_write(sb, "\0\0\0\0", FL_FRAME_HDR);
    return off;
}

int fl_wire_frame_end(msgpack_sbuffer *sb, size_t off, size_t max_frame)
{
    size_t n;

    if (!sb->data || sb->size < off + FL_FRAME_HDR)
        return FL_EINTERNAL;
    n = sb->size - off - FL_FRAME_HDR;
    if (n > max_frame || n > UINT32_MAX)
        return FL_ETOO_LARGE;
    fl_put_be32((uint8_t *)sb->data + off, (uint32_t)n);
    return 0;
}

void fl_wire_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

void fl_wire_pack_cstr(msgpack_packer *pk, const char *s)
{
    fl_wire_pack_strn(pk, s, strlen(s));
}

char *fl_wire_reserve(msgpack_sbuffer *sb, size_t n)
{
    size_t cap = sb->alloc ? sb->alloc : MSGPACK_SBUFFER_INIT_SIZE;
    char *p;

    if (sb->alloc - sb->size >= n)
        return sb->data + sb->size;
    if (n > SIZE_MAX / 2 - sb->size)
        return NULL;
    while (cap < sb->size + n)
        cap *= 2; /* as msgpack_sbuffer_write grows it */
    if (!(p = realloc(sb->data, cap)))
        return NULL;
    sb->data = p;
    sb->alloc = cap;
    return sb->data + sb->size;
}

/* The encodings of msgpack_pack_timestamp (pack_template.h): 32-bit seconds alone, 34-bit
 * seconds with nanoseconds, else nanoseconds and 64-bit seconds. */
size_t fl_wire_put_ts(uint8_t *p, int64_t us)
{
    int64_t sec = us / 1000000, rem = us % 1000000;
    uint64_t nsec, d64;

    if (rem < 0) {
        rem += 1000000;
        sec -= 1;
    }
    nsec = (uint64_t)rem * 1000;
    if (sec >> 34 != 0) { /* ext8 of 12 bytes, type -1 */
        p[0] = 0xc7;
        p[1] = 12;
        p[2] = 0xff;
        fl_put_be32(p + 3, (uint32_t)nsec);
        fl_put_be64(p + 7, (uint64_t)sec);
        return 15;
    }
    d64 = nsec << 34 | (uint64_t)sec;
    p[1] = 0xff;
    if ((d64 >> 32) == 0) { /* fixext4 */
        p[0] = 0xd6;
        fl_put_be32(p + 2, (uint32_t)d64);
        return 6;
    }
    p[0] = 0xd7; /* fixext8 */
    fl_put_be64(p + 2, d64);
    return 10;
}

/* Hand bytes packed in place to the packer's writer. Its failure is the sbuffer's out of
 * memory, which the msgpack_pack_* calls around it meet too: replies do not check each. */
static void pack_raw(msgpack_packer *pk, const uint8_t *p, size_t n)
{
    (void)pk->callback(pk->data, (const char *)p, n);
}

void fl_wire_pack_ts(msgpack_packer *pk, int64_t us)
{
    uint8_t b[FL_WIRE_TS_MAX];

    pack_raw(pk, b, fl_wire_put_ts(b, us));
}

int fl_wire_read_ts(const msgpack_object *o, int64_t *us)
{
    msgpack_timestamp t;
    char tmp[64];

    if (o->type == MSGPACK_OBJECT_EXT) {
        /* Any 64-bit seconds fit a 12-byte timestamp; refuse those microseconds cannot hold. */
        if (!msgpack_object_to_timestamp(o, &t) || t.tv_nsec >= 1000000000u ||
            t.tv_sec > INT64_MAX / 1000000 - 1 || t.tv_sec < INT64_MIN / 1000000 + 1)
            return -1;
        *us = t.tv_sec * 1000000 + t.tv_nsec / 1000;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) {
        *us = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *us = o->via.i64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_STR && o->via.str.size < sizeof tmp) {
        if (o->via.str.size) /* an empty str may have a NULL ptr */
            memcpy(tmp, o->via.str.ptr, o->via.str.size);
        tmp[o->via.str.size] = '\0';
        return fl_time_parse(tmp, us);
    }
    return -1;
}

size_t fl_wire_put_ok_head(uint8_t *p, uint64_t id)
{
    static const uint8_t id_key[] = {0x83, 0xa2, 'i', 'd'};
    static const uint8_t ok_result[] = {0xa2, 'o', 'k', 0xc3, 0xa6, 'r', 'e', 's', 'u', 'l', 't'};
    size_t n = sizeof id_key;

    memcpy(p, id_key, sizeof id_key);
    n += fl_mp_put_uint(p + n, id);
    memcpy(p + n, ok_result, sizeof ok_result);
    return n + sizeof ok_result;
}

void fl_wire_pack_ok_head(msgpack_packer *pk, uint64_t id)
{
    uint8_t b[FL_WIRE_OK_HEAD_MAX];

    pack_raw(pk, b, fl_wire_put_ok_head(b, id));
}

void fl_wire_pack_error(msgpack_packer *pk, int64_t id, const struct fl_error *e)
{
    msgpack_pack_map(pk, 3);
    fl_wire_pack_cstr(pk, "id");
    if (id < 0)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_uint64(pk, (uint64_t)id);
    fl_wire_pack_cstr(pk, "ok");
    msgpack_pack_false(pk);
    fl_wire_pack_cstr(pk, "error");
    msgpack_pack_map(pk, 4);
    fl_wire_pack_cstr(pk, "code");
    fl_wire_pack_cstr(pk, fl_err_name(e->code));
    fl_wire_pack_cstr(pk, "message");
    if (e->msg[0]) {
        /* A message may quote what the client sent (an unknown op, a flow_id), unchecked, or be
         * cut inside a character: a msgpack str must be UTF-8, or strict clients cannot read
         * the error at all. */
        char m[sizeof e->msg];
        size_t n = strnlen(e->msg, sizeof e->msg);
        memcpy(m, e->msg, n);
        fl_utf8_scrub(m, n);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, m, n);
    } else {
        fl_wire_pack_cstr(pk, fl_err_name(e->code));
    }
    fl_wire_pack_cstr(pk, "index");
    if (e->index >= 0)
        msgpack_pack_int64(pk, e->index);
    else
        msgpack_pack_nil(pk);
    fl_wire_pack_cstr(pk, "version");
    if (e->code == FL_ECONFLICT && e->version >= 0)
        msgpack_pack_int64(pk, e->version);
    else
        msgpack_pack_nil(pk);
}
