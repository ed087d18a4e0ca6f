/* util.h: small shared helpers: a growable byte buffer, big-endian integers, UTF-8, time. */
#ifndef FL_UTIL_H
#define FL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

static inline void fl_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t fl_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
static inline void fl_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint32_t fl_get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* True if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool fl_utf8_valid(const char *s, size_t len);

/* Current wall-clock time in microseconds since the Unix epoch. */
int64_t fl_now_us(void);
/* Format microseconds since the epoch as RFC 3339 UTC with microseconds
 * ("2026-11-21T22:39:03.123456Z") into out (at least 32 bytes). */
void fl_time_format(int64_t us, char out[32]);
/* Parse an RFC 3339 time (Z or +hh:mm offset, optional fraction up to microseconds).
 * Returns 0 and sets *us, or -1. */
int fl_time_parse(const char *s, int64_t *us);

#endif
