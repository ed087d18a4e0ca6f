/* util.c: byte buffers, UTF-8 validation, RFC 3339 time, directory fsync. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int fl_buf_reserve(struct fl_buf *b, size_t extra)
{
    size_t need, cap;
    uint8_t *p;

    if (extra > SIZE_MAX - b->len)
        return -1;
    need = b->len + extra;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int fl_buf_add(struct fl_buf *b, const void *data, size_t len)
{
    if (fl_buf_reserve(b, len) != 0)
        return -1;
    if (len)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

int fl_buf_add_u8(struct fl_buf *b, uint8_t v)
{
    return fl_buf_add(b, &v, 1);
}

int fl_buf_add_be32(struct fl_buf *b, uint32_t v)
{
    uint8_t t[4];
    fl_put_be32(t, v);
    return fl_buf_add(b, t, 4);
}

int fl_buf_add_be64(struct fl_buf *b, uint64_t v)
{
    uint8_t t[8];
    fl_put_be64(t, v);
    return fl_buf_add(b, t, 8);
}

int fl_buf_add_keystr(struct fl_buf *b, const void *s, size_t len)
{
    const uint8_t *p = s;

    if (fl_buf_reserve(b, 2 * len + 2) != 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        b->p[b->len++] = p[i];
        if (p[i] == 0)
            b->p[b->len++] = 0xFF;
    }
    b->p[b->len++] = 0;
    b->p[b->len++] = 0;
    return 0;
}

void fl_buf_free(struct fl_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

bool fl_utf8_valid(const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;

    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp;

        if (c < 0x80) {
            /* ASCII, the usual case, 32 then eight bytes a step (400 ASCII bytes: ~500 ns
             * byte by byte, ~33 ns eight a step; bench/RESULTS.md, set J), then the tail
             * here rather than once around the outer loop per byte */
            uint64_t w[4];
            while (i + 32 <= len && (memcpy(w, s + i, 32),
                                     ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ull) == 0))
                i += 32;
            while (i + 8 <= len && (memcpy(w, s + i, 8), (w[0] & 0x8080808080808080ull) == 0))
                i += 8;
            while (i < len && s[i] < 0x80)
                i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len) /* truncated sequence */
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000))
            return false; /* overlong */
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

void fl_utf8_scrub(char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint8_t c = (uint8_t)s[i];
        size_t n = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;

        if (n && n <= len - i && fl_utf8_valid(s + i, n)) {
            i += n;
        } else {
            s[i++] = '?';
        }
    }
}

int fl_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
    if (fd < 0)
        return errno;
    if (fsync(fd) != 0)
        rc = errno;
    close(fd);
    return rc;
}

int64_t fl_now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

void fl_time_format(int64_t us, char out[32])
{
    time_t sec = (time_t)(us / 1000000);
    int64_t frac = us % 1000000;
    struct tm tm;

    if (frac < 0) {
        frac += 1000000;
        sec -= 1;
    }
    gmtime_r(&sec, &tm);
    /* Years outside 0..9999 cannot be written in RFC 3339: clamp (ts comes from our clock). */
    int year = tm.tm_year + 1900;
    year = year < 0 ? 0 : year > 9999 ? 9999 : year;
    snprintf(out, 32, "%04u-%02u-%02uT%02u:%02u:%02u.%06uZ", (unsigned)year,
             (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u,
             (unsigned)frac % 1000000u);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int parse_digits(const char **s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*s)[i] < '0' || (*s)[i] > '9')
            return -1;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *out = v;
    return 0;
}

/* RFC 3339 (its appendix C): February has 29 days in leap years of the Gregorian calendar. */
static int days_in_month(int y, int mo)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return days[mo - 1] + (mo == 2 && leap);
}

int fl_time_parse(const char *s, int64_t *us)
{
    int y, mo, d, h, mi, se, oh = 0, om = 0;
    int64_t frac = 0;
    int sign = 0;

    if (parse_digits(&s, 4, &y) || *s++ != '-' || parse_digits(&s, 2, &mo) || *s++ != '-' ||
        parse_digits(&s, 2, &d))
        return -1;
    if (*s != 'T' && *s != 't' && *s != ' ')
        return -1;
    s++;
    if (parse_digits(&s, 2, &h) || *s++ != ':' || parse_digits(&s, 2, &mi) || *s++ != ':' ||
        parse_digits(&s, 2, &se))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60)
        return -1;
    if (*s == '.') {
        int n = 0;
        s++;
        while (*s >= '0' && *s <= '9') {
            if (n < 6)
                frac = frac * 10 + (*s - '0');
            n++;
            s++;
        }
        if (n == 0 || n > 9)
            return -1;
        for (; n < 6; n++)
            frac *= 10;
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        sign = *s == '+' ? 1 : -1;
        s++;
        if (parse_digits(&s, 2, &oh) || *s++ != ':' || parse_digits(&s, 2, &om) || oh > 23 ||
            om > 59)
            return -1;
    } else {
        return -1;
    }
    if (*s != '\0')
        return -1;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    secs -= sign * (oh * 3600 + om * 60);
    *us = secs * 1000000 + frac;
    return 0;
}
