/* fsync-rate: how fast this machine's disk makes a small write durable, the floor under every
 * durable append. N times: pwrite 4 KiB at a rotating offset of a preallocated file, fdatasync.
 * Prints flushes/s and p50/p99/max latency.
 *
 *   bench/fsync-rate [DIR [N]]      defaults: $TMPDIR or /tmp, 1000 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : getenv("TMPDIR");
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 1000;
    char path[4096];
    static char block[4096];
    if (!dir || !*dir)
        dir = "/tmp";
    if (n < 1 || n > 10000000) {
        fprintf(stderr, "usage: fsync-rate [DIR [N]]\n");
        return 2;
    }
    snprintf(path, sizeof path, "%s/fsync-rate.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "fsync-rate: %s: %s\n", path, strerror(errno));
        return 1;
    }
    unlink(path);
    /* preallocate and sync 1 MiB so the loop measures data flushes, not file growth */
    memset(block, 'x', sizeof block);
    for (int i = 0; i < 256; i++)
        if (pwrite(fd, block, sizeof block, (off_t)i * 4096) != (ssize_t)sizeof block)
            return perror("pwrite"), 1;
    fsync(fd);
    uint64_t *lat = calloc((size_t)n, sizeof *lat), t0 = now_ns();
    if (!lat)
        return 2;
    for (long i = 0; i < n; i++) {
        uint64_t a = now_ns();
        block[i % 4096] = (char)i;
        if (pwrite(fd, block, sizeof block, (off_t)(i % 256) * 4096) != (ssize_t)sizeof block)
            return perror("pwrite"), 1;
        if (fdatasync(fd) != 0)
            return perror("fdatasync"), 1;
        lat[i] = now_ns() - a;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("fsync-rate: %ld x (pwrite 4 KiB + fdatasync) in %s: %.0f/s, p50 %.3f ms, p99 %.3f ms, "
           "max %.3f ms\n",
           n, dir, (double)n / secs, (double)lat[n / 2] / 1e6,
           (double)lat[(size_t)((double)n * 0.99)] / 1e6, (double)lat[n - 1] / 1e6);
    close(fd);
    free(lat);
    return 0;
}
