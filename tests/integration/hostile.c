/* hostile: raw bytes at flowlogd, one fresh connection per case, while a well-behaved
 * libflowlog client keeps appending on its own connection.
 *
 * usage: hostile HOST PORT TOKEN
 * Each case expects a clear error reply (the code named) and/or the connection closed, never a
 * crash or a hang; after each case the good client must still get its append acknowledged.
 * Prints unnumbered TAP lines ("ok - ...", "not ok - ...") and "# ..." notes. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "flowlog.h"
#include "testreq.h"

#define WAIT_MS 5000

struct ctx {
    struct sockaddr_in addr;
    const char *token;
    flc_client *good;
    char server[64];
    int failures, good_seq;
};

/* What a case expects back. */
enum expect {
    EXPECT_ERROR_CLOSE, /* an error reply with this code, then the connection closed */
    EXPECT_CLOSE,       /* the connection closed (an error reply first is fine) */
    EXPECT_ERROR_OPEN,  /* an error reply with this code; the connection stays usable */
};

/* Print one unnumbered TAP line. */
static void tap(struct ctx *x, int good, const char *what)
{
    printf("%sok - %s\n", good ? "" : "not ", what);
    fflush(stdout);
    if (!good)
        x->failures++;
}

/* A new raw connection, or -1. */
static int dial(struct ctx *x)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd >= 0 && connect(fd, (struct sockaddr *)&x->addr, sizeof x->addr) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Write all of buf; 0, or -1 (the peer may already have closed: that is allowed). */
static int put(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Send a frame: a 4-byte big-endian length, then payload. */
static int put_frame(int fd, const void *payload, uint32_t len)
{
    uint32_t be = htonl(len);
    return put(fd, &be, 4) == 0 ? put(fd, payload, len) : -1;
}

/* Read exactly n bytes within WAIT_MS. 1 done, 0 EOF/reset, -1 timeout. */
static int get(int fd, void *buf, size_t n)
{
    char *p = buf;

    while (n > 0) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int rc = poll(&pf, 1, WAIT_MS);
        if (rc == 0)
            return -1;
        if (rc < 0 && errno == EINTR)
            continue;
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        p += r;
        n -= (size_t)r;
    }
    return 1;
}

/* Read one reply frame and its error code (into code, "" if ok). 1, 0 on EOF, -1 timeout. */
static int get_reply(int fd, char code[64])
{
    uint8_t hdr[4];
    uint32_t len;
    char *buf;
    int rc;

    code[0] = '\0';
    if ((rc = get(fd, hdr, 4)) != 1)
        return rc;
    len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (len == 0 || len > (1u << 24) || !(buf = malloc(len)))
        return 0;
    if ((rc = get(fd, buf, len)) == 1) {
        msgpack_unpacked u;
        size_t off = 0;
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, buf, len, &off) == MSGPACK_UNPACK_SUCCESS) {
            const msgpack_object *c = flc_get(flc_get(&u.data, "error"), "code");
            if (c && c->type == MSGPACK_OBJECT_STR)
                snprintf(code, 64, "%.*s", (int)c->via.str.size, c->via.str.ptr);
        }
        msgpack_unpacked_destroy(&u);
    }
    free(buf);
    return rc;
}

/* True if the server closes fd within WAIT_MS (EOF or reset), reading and dropping replies. */
static int closes(int fd)
{
    char code[64];
    int rc;

    while ((rc = get_reply(fd, code)) == 1)
        ;
    return rc == 0;
}

/* Say hello with the good token on a raw connection; 0 if accepted. */
static int raw_hello(struct ctx *x, int fd)
{
    msgpack_sbuffer sb;
    char code[64];
    int rc;

    msgpack_sbuffer_init(&sb);
    testreq_pack(&sb, 0, "hello", x->token);
    rc = put_frame(fd, sb.data, (uint32_t)sb.size) == 0 && get_reply(fd, code) == 1 && !code[0]
             ? 0
             : -1;
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* The good client appends one event; true if it was acknowledged. */
static int good_append(struct ctx *x)
{
    msgpack_sbuffer sb;
    char id[32];

    snprintf(id, sizeof id, "good-%d", x->good_seq++);
    msgpack_sbuffer_init(&sb);
    testreq_pack_registration(&sb, id, "good.xml", NULL);
    struct flc_event ev = {sb.data, sb.size};
    const msgpack_object *res = flc_append(x->good, &ev, 1);
    if (!res)
        printf("# good client: %s: %s\n", flc_errname(x->good), flc_errmsg(x->good));
    msgpack_sbuffer_destroy(&sb);
    return res != NULL;
}

/* Run one case: connect, optionally hello, send raw bytes, judge the answer. */
static void run_case(struct ctx *x, const char *name, int hello, const void *bytes, size_t len,
                     enum expect ex, const char *code)
{
    char what[256], got[64] = "";
    int fd = dial(x), good = 0, rc;

    if (fd < 0 || (hello && raw_hello(x, fd) != 0)) {
        snprintf(what, sizeof what, "%s: could not set up the connection", name);
        tap(x, 0, what);
        if (fd >= 0)
            close(fd);
        return;
    }
    (void)put(fd, bytes, len);
    if (ex == EXPECT_CLOSE) {
        shutdown(fd, SHUT_WR);
        good = closes(fd);
        snprintf(what, sizeof what, "%s: the connection is closed", name);
    } else {
        rc = get_reply(fd, got);
        good = rc == 1 && strcmp(got, code) == 0;
        if (good && ex == EXPECT_ERROR_CLOSE)
            good = closes(fd);
        if (good && ex == EXPECT_ERROR_OPEN) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            testreq_pack(&sb, 77, "ping", NULL);
            good = put_frame(fd, sb.data, (uint32_t)sb.size) == 0 && get_reply(fd, got) == 1 &&
                   !got[0];
            msgpack_sbuffer_destroy(&sb);
        }
        snprintf(what, sizeof what, "%s: error %s%s", name, code,
                 ex == EXPECT_ERROR_CLOSE ? ", then closed" : ", connection still usable");
        if (!good)
            printf("# got reply code '%s' (rc %d)\n", got, rc);
    }
    close(fd);
    tap(x, good, what);
    snprintf(what, sizeof what, "... meanwhile another client's append is acknowledged");
    tap(x, good_append(x), what);
}

/* A frame: the length, then a payload of len bytes (from p). */
static size_t frame(uint8_t *out, const void *p, uint32_t len)
{
    uint32_t be = htonl(len);
    memcpy(out, &be, 4);
    memcpy(out + 4, p, len);
    return 4 + (size_t)len;
}

/* The cases on raw frames. */
static void framing_cases(struct ctx *x)
{
    static const uint8_t map4g[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t arr[] = {0x92, 0x01, 0x02};
    static const uint8_t trailing[] = {0x80, 0x00};
    uint8_t buf[512], deep[128], garbage[64];
    size_t n, d = 0;

    run_case(x, "truncated frame (100 bytes declared, 4 sent, then EOF)", 0,
             (uint8_t[]){0, 0, 0, 100, 0x81, 0xa2, 'i', 'd'}, 8, EXPECT_CLOSE, NULL);
    run_case(x, "frame length 4 GiB - 1", 0, (uint8_t[]){0xff, 0xff, 0xff, 0xff}, 4,
             EXPECT_ERROR_CLOSE, "too_large");
    run_case(x, "frame length max_frame + 1 (4 MiB + 1)", 0, (uint8_t[]){0, 0x40, 0, 1}, 4,
             EXPECT_ERROR_CLOSE, "too_large");
    run_case(x, "zero-length frame", 0, (uint8_t[]){0, 0, 0, 0}, 4, EXPECT_ERROR_CLOSE,
             "bad_request");
    n = frame(buf, map4g, sizeof map4g);
    run_case(x, "a map declaring 2^32-1 entries in 5 bytes", 0, buf, n, EXPECT_ERROR_CLOSE,
             "bad_request");
    deep[d++] = 0x81, deep[d++] = 0xa1, deep[d++] = 'a';
    for (int i = 0; i < 100; i++)
        deep[d++] = 0x91;
    deep[d++] = 0x80;
    n = frame(buf, deep, (uint32_t)d);
    run_case(x, "nesting 100 deep", 0, buf, n, EXPECT_ERROR_CLOSE, "bad_request");
    srand(42);
    garbage[0] = 0xc1; /* never valid msgpack */
    for (size_t i = 1; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)rand();
    n = frame(buf, garbage, sizeof garbage);
    run_case(x, "64 bytes of garbage", 0, buf, n, EXPECT_ERROR_CLOSE, "bad_request");
    n = frame(buf, arr, sizeof arr);
    run_case(x, "a payload that is an array, not a map", 0, buf, n, EXPECT_ERROR_CLOSE,
             "bad_request");
    n = frame(buf, trailing, sizeof trailing);
    run_case(x, "trailing bytes after the map", 0, buf, n, EXPECT_ERROR_CLOSE, "bad_request");
    run_case(x, "random bytes without framing", 0, garbage + 1, sizeof garbage - 1,
             EXPECT_CLOSE, NULL);
}

/* The cases on well-formed frames with bad content. */
static void request_cases(struct ctx *x)
{
    msgpack_sbuffer sb;
    uint8_t buf[512];
    size_t n;

    msgpack_sbuffer_init(&sb);
    testreq_pack(&sb, 1, "ping", NULL);
    n = frame(buf, sb.data, (uint32_t)sb.size);
    run_case(x, "a request before hello", 0, buf, n, EXPECT_ERROR_CLOSE, "unauthenticated");
    testreq_pack(&sb, 0, "hello", "not-the-token");
    n = frame(buf, sb.data, (uint32_t)sb.size);
    run_case(x, "hello with a wrong token", 0, buf, n, EXPECT_ERROR_CLOSE, "unauthenticated");
    testreq_pack(&sb, 1, "frobnicate", NULL);
    n = frame(buf, sb.data, (uint32_t)sb.size);
    run_case(x, "an unknown op after hello", 1, buf, n, EXPECT_ERROR_OPEN, "bad_request");
    testreq_pack(&sb, 1, "hello", x->token);
    n = frame(buf, sb.data, (uint32_t)sb.size);
    run_case(x, "a second hello", 1, buf, n, EXPECT_ERROR_OPEN, "bad_request");
    msgpack_sbuffer_destroy(&sb);
}

/* Many connections that vanish mid-frame, then the good client. */
static void churn_case(struct ctx *x)
{
    int all = 1;

    for (int i = 0; i < 200; i++) {
        int fd = dial(x);
        if (fd < 0) {
            all = 0;
            break;
        }
        (void)put(fd, "\0\0\0\x20\x81\xa2", 6); /* half a frame, then gone */
        close(fd);
    }
    tap(x, all, "200 connections dropped mid-frame are accepted and forgotten");
    tap(x, good_append(x), "... meanwhile another client's append is acknowledged");
}

/* Every hostile case, then verify with the good client. */
int main(int argc, char **argv)
{
    struct ctx x = {0};
    const msgpack_object *v;

    if (argc != 4) {
        fprintf(stderr, "usage: hostile HOST PORT TOKEN\n");
        return 2;
    }
    x.addr.sin_family = AF_INET;
    x.addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &x.addr.sin_addr) != 1)
        return 2;
    x.token = argv[3];
    snprintf(x.server, sizeof x.server, "%s:%s", argv[1], argv[2]);
    x.good = flc_connect(x.server, x.token, NULL);
    if (!x.good || flc_errcode(x.good) != 0) {
        printf("not ok - the good client connects: %s\n", x.good ? flc_errmsg(x.good) : "nomem");
        return 1;
    }
    framing_cases(&x);
    request_cases(&x);
    churn_case(&x);
    v = flc_verify(x.good);
    v = flc_get(v, "ok");
    tap(&x, v && v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean,
        "verify passes after the hostile input");
    flc_free(x.good);
    return x.failures ? 1 : 0;
}
