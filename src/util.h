/* util.h: small shared helpers: a growable byte buffer, big-endian integers, UTF-8, time,
 * directory fsync. */
#ifndef FL_UTIL_H
#define FL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A growable byte buffer. Zero-initialise, append, free with fl_buf_free. */
struct fl_buf {
    uint8_t *p;
    size_t len, cap;
};

/* Returns 0, or -1 when memory is exhausted (the buffer is then unchanged). */
int fl_buf_reserve(struct fl_buf *b, size_t extra);
int fl_buf_add(struct fl_buf *b, const void *data, size_t len);
int fl_buf_add_u8(struct fl_buf *b, uint8_t v);
int fl_buf_add_be32(struct fl_buf *b, uint32_t v);
int fl_buf_add_be64(struct fl_buf *b, uint64_t v);
/* An order-preserving, prefix-free string key component: 0x00 becomes 0x00 0xFF, then 0x00 0x00. */
int fl_buf_add_keystr(struct fl_buf *b, const void *s, size_t len);
void fl_buf_free(struct fl_buf *b);

/* Big-endian integers in keys and records. One unaligned load or store and a byte swap: the
 * byte-at-a-time loops these were cost a key comparison ~40 instructions (fl_store_key_cmp). */
static inline uint64_t fl_be64(uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(v);
#else
    return v;
#endif
}
static inline uint32_t fl_be32(uint32_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap32(v);
#else
    return v;
#endif
}
static inline void fl_put_be64(uint8_t *p, uint64_t v)
{
    v = fl_be64(v);
    memcpy(p, &v, 8);
}
static inline uint64_t fl_get_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return fl_be64(v);
}
static inline void fl_put_be32(uint8_t *p, uint32_t v)
{
    v = fl_be32(v);
    memcpy(p, &v, 4);
}
static inline uint32_t fl_get_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return fl_be32(v);
}

/* The msgpack headers and integers the log's canonical encodings use, byte for byte as
 * msgpack-c 4.0 writes them (msgpack_pack_map/_array/_str/_uint64/_int64, pack_template.h):
 * the stored bytes and the payload hashes over them must not change. Writing in place into
 * a buffer sized first saves msgpack_sbuffer's allocation and copies. fl_mp_*_len give the
 * size, fl_mp_put_* write at p and return the size. */
static inline size_t fl_mp_hdr_len(size_t n, size_t fixmax)
{
    return n < fixmax ? 1 : n < 65536 ? 3 : 5;
}
static inline size_t fl_mp_put_hdr(uint8_t *p, size_t n, size_t fixmax, uint8_t fix, uint8_t c16)
{
    if (n < fixmax) {
        p[0] = (uint8_t)(fix | n);
        return 1;
    }
    if (n < 65536) {
        p[0] = c16;
        p[1] = (uint8_t)(n >> 8);
        p[2] = (uint8_t)n;
        return 3;
    }
    p[0] = (uint8_t)(c16 + 1);
    fl_put_be32(p + 1, (uint32_t)n);
    return 5;
}
static inline size_t fl_mp_map_len(size_t n)
{
    return fl_mp_hdr_len(n, 16);
}
static inline size_t fl_mp_put_map(uint8_t *p, size_t n)
{
    return fl_mp_put_hdr(p, n, 16, 0x80, 0xde);
}
static inline size_t fl_mp_put_array(uint8_t *p, size_t n)
{
    return fl_mp_put_hdr(p, n, 16, 0x90, 0xdc);
}
/* A string's header (str8 from 32 bytes, as msgpack-c since 1.0). */
static inline size_t fl_mp_str_len(size_t len)
{
    return len < 32 ? 1 : len < 256 ? 2 : len < 65536 ? 3 : 5;
}
static inline size_t fl_mp_put_str(uint8_t *p, size_t len)
{
    if (len < 32) {
        p[0] = (uint8_t)(0xa0 | len);
        return 1;
    }
    if (len < 256) {
        p[0] = 0xd9;
        p[1] = (uint8_t)len;
        return 2;
    }
    return fl_mp_put_hdr(p, len, 0, 0, 0xda);
}
static inline size_t fl_mp_uint_len(uint64_t v)
{
    return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v < (1ull << 32) ? 5 : 9;
}
static inline size_t fl_mp_put_uint(uint8_t *p, uint64_t v)
{
    size_t n = fl_mp_uint_len(v);

    if (n == 1) {
        p[0] = (uint8_t)v;
        return 1;
    }
    p[0] = n == 2 ? 0xcc : n == 3 ? 0xcd : n == 5 ? 0xce : 0xcf;
    for (size_t i = n - 1; i >= 1; i--, v >>= 8)
        p[i] = (uint8_t)v;
    return n;
}
/* Non-negative values as msgpack_pack_uint64 (msgpack-c's int64 packing does the same). */
static inline size_t fl_mp_int_len(int64_t v)
{
    if (v >= 0)
        return fl_mp_uint_len((uint64_t)v);
    return v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3 : v >= -2147483648LL ? 5 : 9;
}
static inline size_t fl_mp_put_int(uint8_t *p, int64_t v)
{
    size_t n = fl_mp_int_len(v);
    uint64_t u = (uint64_t)v;

    if (v >= 0)
        return fl_mp_put_uint(p, u);
    if (n == 1) {
        p[0] = (uint8_t)u;
        return 1;
    }
    p[0] = n == 2 ? 0xd0 : n == 3 ? 0xd1 : n == 5 ? 0xd2 : 0xd3;
    for (size_t i = n - 1; i >= 1; i--, u >>= 8)
        p[i] = (uint8_t)u;
    return n;
}

/* True if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool fl_utf8_valid(const char *s, size_t len);
/* Replace, in place, each byte of s[0..len) that does not begin a valid UTF-8 sequence with '?':
 * for text that quotes what a client sent (error messages) or was cut at a byte limit. */
void fl_utf8_scrub(char *s, size_t len);

/* fsync a directory, so that the names created or renamed in it last: 0 or an errno. */
int fl_fsync_dir(const char *dir);

/* Current wall-clock time in microseconds since the Unix epoch. */
int64_t fl_now_us(void);
/* Format microseconds since the epoch as RFC 3339 UTC with microseconds
 * ("2026-11-21T22:39:03.123456Z") into out (at least 32 bytes). */
void fl_time_format(int64_t us, char out[32]);
/* Parse an RFC 3339 time (Z or +hh:mm offset, optional fraction up to microseconds).
 * Returns 0 and sets *us, or -1. */
int fl_time_parse(const char *s, int64_t *us);

#endif
