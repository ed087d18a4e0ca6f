/* slow-clients: hostile and slow clients against one flowlogd, while a well-behaved writer's
 * append latency and the server's memory are measured (run by slow-clients.sh).
 *
 * usage: slow-clients HOST PORT TOKEN SERVER_PID HELLO_TIMEOUT_S IDLE_TIMEOUT_S [GARBAGE_CONNS]
 *
 * The server must run with --hello-timeout HELLO_TIMEOUT_S and --idle-timeout IDLE_TIMEOUT_S
 * and room for GARBAGE_CONNS (default 1000) + 40 connections. During one phase of about
 * 2 * IDLE_TIMEOUT_S + 2 seconds, at the same time:
 *   garbage     GARBAGE_CONNS connections, all open at once: each connects, waits 0.2-1.2 s, sends
 *               a random hostile frame, expects an error frame (nil id) and the close, and
 *               connects again;
 *   slowloris   SLOWLORIS connections sending a hello frame one byte a second (closed by the
 *               hello timeout, then connecting again), and one that said hello and trickles its
 *               next frame a byte a second (closed by the idle timeout);
 *   never-reader  a client that pipelines appends and never reads: the server must stop reading
 *               it and close it for not reading; it then reads what came, ending in the error;
 *   idle        a client that says hello and nothing more (closed by the idle timeout), and a
 *               subscriber whose filter matches nothing (never idle: still served at the end);
 *   writer      the measured client: paced step-mode appends (send one, wait for its ack) through
 *               libflowlog, first alone (baseline), then during the phase.
 * A sampler reads the server's VmRSS (/proc/PID/status) and its connection count every 100 ms.
 *
 * Bounds, on a noisy 2-core VM (FLOWLOG_SANITIZERS=yes relaxes them to the figures in brackets:
 * ASan runs everything 2-3x slower and keeps freed memory in a quarantine, which slow-clients.sh
 * caps at 16 MiB): writer p99 under load < 200 ms (400 ms); server RSS growth during the phase
 * < 64 MiB (128 MiB). The latency bound tells a loop that never waits on a slow client (p99
 * 2-16 ms here) from one that does (a wait lasts up to the hello or idle timeout, seconds); it
 * is loose because the test shares two cores with the rest of make check (50 ms was missed at
 * a load average of 10). Prints unnumbered TAP ("ok - ...", "not ok - ...") and "# ..." figures. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "flowlog.h"
#include "testreq.h"

#define WRITER_N 500
#define SLOWLORIS 20
#define SPARE_FDS 64
#define LAT_BOUND_MS 200.0
#define LAT_BOUND_SAN_MS 400.0
#define RSS_BOUND_KB (64 * 1024)
#define RSS_BOUND_SAN_KB (128 * 1024)

struct ctx {
    struct sockaddr_in addr;
    char server[64];
    const char *token, *optoken; /* optoken: an operator's, for the server-wide stats */
    int pid, hello_s, idle_s, ngarbage, sanitizers, failures;
    atomic_int stop;       /* ends the phase for every hostile thread */
    atomic_int nr_stuck;   /* the never-reader's sends no longer get through */
    atomic_llong rss_peak; /* KiB */
    atomic_llong conns_peak;
    atomic_llong closed_not_reading;
};

/* ---- helpers ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void tap(struct ctx *x, int good, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void tap(struct ctx *x, int good, const char *fmt, ...)
{
    va_list ap;

    printf("%sok - ", good ? "" : "not ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (!good)
        x->failures++;
}

/* One "Name: N kB" line of the server's /proc/PID/status in KiB, or -1. */
static long long proc_kb(int pid, const char *name)
{
    char path[64], line[256];
    size_t nl = strlen(name);
    long long kb = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, nl) == 0 && line[nl] == ':') {
            kb = atoll(line + nl + 1);
            break;
        }
    fclose(f);
    return kb;
}

/* The server's resident memory (VmRSS) in KiB, or -1. */
static long long rss_kb(int pid)
{
    return proc_kb(pid, "VmRSS");
}

/* A TCP socket to the server, blocking or not; rcvbuf > 0 shrinks its receive buffer. */
static int dial(struct ctx *x, int nonblock, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);

    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (connect(fd, (struct sockaddr *)&x->addr, sizeof x->addr) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Write all of buf on a blocking socket; 0 or -1. */
static int put(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Append a 4-byte big-endian length and the payload to out (at most cap bytes); the size. */
static size_t frame(uint8_t *out, size_t cap, const void *payload, size_t len)
{
    if (len + 4 > cap)
        return 0;
    out[0] = (uint8_t)(len >> 24), out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8), out[3] = (uint8_t)len;
    memcpy(out + 4, payload, len);
    return len + 4;
}

/* The first frame in buf[0..n): its error code into code ("" if it is not an error) and
 * whether its id is nil. Returns the frame's size, or 0 if buf holds no whole valid frame. */
static size_t parse_reply(const uint8_t *buf, size_t n, char code[32], int *nil_id)
{
    msgpack_unpacked u;
    size_t len, off = 0;

    code[0] = '\0';
    *nil_id = 0;
    if (n < 4)
        return 0;
    len = (size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3];
    if (len == 0 || len > n - 4)
        return 0;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)buf + 4, len, &off) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *c = flc_get(flc_get(&u.data, "error"), "code");
        const msgpack_object *id = flc_get(&u.data, "id");
        if (c && c->type == MSGPACK_OBJECT_STR)
            snprintf(code, 32, "%.*s", (int)c->via.str.size, c->via.str.ptr);
        *nil_id = id && id->type == MSGPACK_OBJECT_NIL;
    }
    msgpack_unpacked_destroy(&u);
    return len + 4;
}

/* One flow_registered event for flow id into sb (cleared first), with event_id = the flow id
 * if eid is set. */
static void pack_event(msgpack_sbuffer *sb, const char *flow, int eid)
{
    testreq_pack_registration(sb, flow, "slow.xml", eid ? flow : NULL);
}

/* Read frames from a blocking socket until EOF or timeout_s; counts ok replies and keeps the
 * last frame's error code. Returns 1 on EOF (or reset) after them, 0 on timeout. */
static int read_to_eof(int fd, double timeout_s, long *oks, char last_code[32], int *last_nil)
{
    enum { CAP = 1 << 16 };
    uint8_t *buf = malloc(CAP); /* not static: several threads read at once */
    size_t have = 0, used;
    double end = now_s() + timeout_s;
    char code[32];
    int nil, rc = 0;

    *oks = 0;
    last_code[0] = '\0';
    *last_nil = 0;
    while (buf) {
        struct pollfd pf = {fd, POLLIN, 0};
        ssize_t r;
        int left = (int)((end - now_s()) * 1000);

        if (left <= 0 || poll(&pf, 1, left) <= 0)
            break;
        r = recv(fd, buf + have, CAP - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = 1;
            break;
        }
        have += (size_t)r;
        while ((used = parse_reply(buf, have, code, &nil)) > 0) {
            if (code[0] == '\0')
                (*oks)++;
            memcpy(last_code, code, 32);
            *last_nil = nil;
            memmove(buf, buf + used, have - used);
            have -= used;
        }
        if (have == CAP) /* a frame larger than the buffer: not expected here */
            break;
    }
    free(buf);
    return rc;
}

/* ---- garbage: many connections sending hostile frames ---- */

enum gstate { G_WAIT, G_CONNECTING, G_HOLD, G_SENT };

struct gslot {
    int fd;
    enum gstate st;
    double at; /* G_WAIT: when to connect; G_HOLD: when to send; G_SENT: give-up time */
    uint8_t in[512];
    size_t have;
};

struct gstats {
    long connects, sent, closed, bad_request, too_large, unauthenticated, unavailable, other,
        no_error, timeouts, connect_fail, concurrent_peak;
};

/* Random hostile bytes into out: an over-long length, an invalid msgpack payload, a frame that
 * is not a map, or random bytes with a random length. */
static size_t garbage_bytes(uint8_t *out, unsigned *seed)
{
    size_t n = 0, len;
    uint32_t l;

    switch (rand_r(seed) % 4) {
    case 0: /* a length over the 64 KiB allowed before hello */
        l = 65537u + (uint32_t)rand_r(seed) % 0x7fff0000u;
        out[n++] = (uint8_t)(l >> 24), out[n++] = (uint8_t)(l >> 16);
        out[n++] = (uint8_t)(l >> 8), out[n++] = (uint8_t)l;
        len = (size_t)rand_r(seed) % 100;
        break;
    case 1: /* 0xc1 is never valid msgpack */
        len = 1 + (size_t)rand_r(seed) % 200;
        out[n++] = 0, out[n++] = 0, out[n++] = 0, out[n++] = (uint8_t)len;
        out[n++] = 0xc1;
        len--;
        break;
    case 2: /* an array, not a map */
        memcpy(out, "\0\0\0\3\x92\x01\x02", 7);
        return 7;
    default: /* random bytes in a frame of their own length (or an all-random header) */
        len = 1 + (size_t)rand_r(seed) % 200;
        out[n++] = 0, out[n++] = 0, out[n++] = 0, out[n++] = (uint8_t)len;
        break;
    }
    for (size_t i = 0; i < len; i++)
        out[n++] = (uint8_t)rand_r(seed);
    return n;
}

/* Judge a finished garbage connection by the first frame it got. */
static void garbage_judge(struct gstats *g, struct gslot *s)
{
    char code[32];
    int nil;

    g->closed++;
    if (parse_reply(s->in, s->have, code, &nil) == 0 || !code[0] || !nil)
        g->no_error++;
    else if (strcmp(code, "bad_request") == 0)
        g->bad_request++;
    else if (strcmp(code, "too_large") == 0)
        g->too_large++;
    else if (strcmp(code, "unauthenticated") == 0)
        g->unauthenticated++;
    else if (strcmp(code, "unavailable") == 0)
        g->unavailable++;
    else
        g->other++;
}

static void garbage_close(int ep, struct gslot *s, double now, unsigned *seed)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->fd = -1;
    s->st = G_WAIT;
    s->at = now + (double)(rand_r(seed) % 50) / 1000.0;
    s->have = 0;
}

/* The garbage thread: an epoll loop over ngarbage slots until stop. */
static void *garbage_main(void *arg)
{
    struct ctx *x = arg;
    struct gslot *slots = calloc((size_t)x->ngarbage, sizeof *slots);
    struct gstats *g = calloc(1, sizeof *g);
    struct epoll_event evs[256];
    unsigned seed = 20260611;
    double t0 = now_s();
    int ep = epoll_create1(EPOLL_CLOEXEC);

    for (int i = 0; i < x->ngarbage; i++) {
        slots[i].fd = -1;
        slots[i].st = G_WAIT;
        slots[i].at = t0 + i * 0.001; /* ramp up over a second: no SYN flood on the backlog */
    }
    while (!atomic_load(&x->stop)) {
        int n = epoll_wait(ep, evs, 256, 5);
        double now = now_s();
        long open = 0;

        for (int k = 0; k < n; k++) {
            struct gslot *s = &slots[evs[k].data.u32];
            if (s->st == G_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err != 0) {
                    g->connect_fail++;
                    garbage_close(ep, s, now, &seed);
                    continue;
                }
                struct epoll_event e = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &e);
                s->st = G_HOLD;
                s->at = now + 0.2 + (double)(rand_r(&seed) % 1000) / 1000.0;
                continue;
            }
            for (;;) { /* readable: take what came; EOF or a reset ends it */
                uint8_t tmp[512];
                ssize_t r = recv(s->fd, tmp, sizeof tmp, 0);
                if (r > 0) {
                    size_t room = sizeof s->in - s->have,
                           take = (size_t)r < room ? (size_t)r : room;
                    memcpy(s->in + s->have, tmp, take);
                    s->have += take;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                garbage_judge(g, s);
                garbage_close(ep, s, now, &seed);
                break;
            }
        }
        for (int i = 0; i < x->ngarbage; i++) {
            struct gslot *s = &slots[i];
            if (s->st == G_WAIT && now >= s->at) {
                s->fd = dial(x, 1, 0);
                if (s->fd < 0) {
                    g->connect_fail++;
                    s->at = now + 0.1;
                    continue;
                }
                struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &e);
                s->st = G_CONNECTING;
                g->connects++;
            } else if (s->st == G_HOLD && now >= s->at) {
                uint8_t bytes[512];
                size_t len = garbage_bytes(bytes, &seed);
                (void)send(s->fd, bytes, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                g->sent++;
                s->st = G_SENT;
                s->at = now + 5.0;
            } else if (s->st == G_SENT && now >= s->at) {
                g->timeouts++;
                garbage_close(ep, s, now, &seed);
            }
            if (s->st == G_HOLD || s->st == G_SENT)
                open++;
        }
        if (open > g->concurrent_peak)
            g->concurrent_peak = open;
    }
    for (int i = 0; i < x->ngarbage; i++)
        if (slots[i].fd >= 0)
            close(slots[i].fd);
    close(ep);
    free(slots);
    return g;
}

/* ---- slowloris: a byte a second ---- */

struct sstats {
    long closed, unauthenticated, other;
    double min_s, max_s;  /* connect to close, for those closed by the hello timeout */
    double after_hello_s; /* the authenticated trickler: hello to close */
    char after_hello_code[32];
    int after_hello_nil;
    double idle_s; /* the idle client: hello to close */
    char idle_code[32];
    int idle_nil;
};

/* A blocking hello on a fresh connection; the socket, or -1. *sent_at: when the hello was about to
 * be written, a moment the server's idle clock (started by its answer) cannot precede. */
static int hello_conn(struct ctx *x, double *sent_at)
{
    msgpack_sbuffer sb;
    uint8_t buf[512];
    char code[32];
    long oks = 0;
    int fd = dial(x, 0, 0), nil, ok = 0;
    size_t n;

    if (fd < 0)
        return -1;
    msgpack_sbuffer_init(&sb);
    testreq_pack(&sb, 0, "hello", x->token);
    n = frame(buf, sizeof buf, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    *sent_at = now_s();
    if (put(fd, buf, n) == 0) {
        size_t have = 0;
        while (have < sizeof buf) {
            struct pollfd pf = {fd, POLLIN, 0};
            ssize_t r;
            if (poll(&pf, 1, 5000) <= 0 || (r = recv(fd, buf + have, sizeof buf - have, 0)) <= 0)
                break;
            have += (size_t)r;
            if (parse_reply(buf, have, code, &nil) > 0) {
                ok = code[0] == '\0';
                break;
            }
        }
    }
    (void)oks;
    if (!ok) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The slowloris thread: SLOWLORIS unauthenticated tricklers (reconnecting when closed), one
 * authenticated one, and (watched here too) the idle client that sends nothing after hello. */
static void *slowloris_main(void *arg)
{
    static const uint8_t hello_hdr[] = {0, 0, 0, 0x24, 0x84, 0xa2, 'i', 'd', 0, 0xa2, 'o', 'p'};
    static const uint8_t ping[] = {0,    0,   0,   0x0c, 0x82, 0xa2, 'i', 'd', 0x01,
                                   0xa2, 'o', 'p', 0xa4, 'p',  'i',  'n', 'g'};
    struct ctx *x = arg;
    struct sstats *st = calloc(1, sizeof *st);
    int fds[SLOWLORIS + 2];
    size_t pos[SLOWLORIS + 2];
    double born[SLOWLORIS + 2], next_byte = now_s();
    /* Each closure is timed from a moment before the server could start its clock: the
     * authenticated ones from their hello's sending, the others from before their connect. (From
     * after the answers, as before, a loaded machine made 3 s look like 2.88: the idle client's
     * whole hello lay between the trickler's answer and the clock's start.) */
    double authed_at, idle_at;
    int authed = hello_conn(x, &authed_at), idle = hello_conn(x, &idle_at);

    st->min_s = 1e9;
    st->after_hello_s = st->idle_s = -1;
    for (int i = 0; i < SLOWLORIS; i++) {
        born[i] = now_s();
        fds[i] = dial(x, 0, 0);
        pos[i] = 0;
    }
    fds[SLOWLORIS] = authed;
    fds[SLOWLORIS + 1] = idle;
    pos[SLOWLORIS] = 0;
    while (!atomic_load(&x->stop)) {
        struct pollfd pf[SLOWLORIS + 2];
        double now = now_s();
        int wait = (int)((next_byte - now) * 1000);

        for (int i = 0; i < SLOWLORIS + 2; i++)
            pf[i] = (struct pollfd){fds[i], POLLIN, 0};
        if (poll(pf, SLOWLORIS + 2, wait < 0 ? 0 : wait > 100 ? 100 : wait) > 0) {
            for (int i = 0; i < SLOWLORIS + 2; i++) {
                long oks;
                char code[32];
                int nil;
                if (fds[i] < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                read_to_eof(fds[i], 2.0, &oks, code, &nil);
                close(fds[i]);
                now = now_s();
                if (i == SLOWLORIS + 1) {
                    st->idle_s = now - idle_at;
                    memcpy(st->idle_code, code, sizeof code);
                    st->idle_nil = nil;
                    fds[i] = -1;
                    continue;
                }
                if (i == SLOWLORIS) {
                    st->after_hello_s = now - authed_at;
                    memcpy(st->after_hello_code, code, sizeof code);
                    st->after_hello_nil = nil;
                    fds[i] = -1;
                    continue;
                }
                st->closed++;
                if (strcmp(code, "unauthenticated") == 0 && nil) {
                    st->unauthenticated++;
                    if (now - born[i] < st->min_s)
                        st->min_s = now - born[i];
                    if (now - born[i] > st->max_s)
                        st->max_s = now - born[i];
                } else {
                    st->other++;
                }
                born[i] = now_s();
                fds[i] = dial(x, 0, 0);
                pos[i] = 0;
            }
        }
        if (now_s() >= next_byte) { /* one byte each, a second apart */
            for (int i = 0; i < SLOWLORIS; i++)
                if (fds[i] >= 0 && pos[i] < sizeof hello_hdr)
                    (void)send(fds[i], hello_hdr + pos[i]++, 1, MSG_NOSIGNAL);
            if (fds[SLOWLORIS] >= 0 && pos[SLOWLORIS] < sizeof ping)
                (void)send(fds[SLOWLORIS], ping + pos[SLOWLORIS]++, 1, MSG_NOSIGNAL);
            next_byte += 1.0;
        }
    }
    for (int i = 0; i < SLOWLORIS + 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return st;
}

/* ---- the never-reader ---- */

struct nstats {
    long appends_sent, replies_ok;
    double stuck_after_s, closed_after_s; /* from its first append */
    char last_code[32];
    int last_nil, eof, hello_ok;
};

/* Pipelines appends without reading until the server stops taking them, waits until the
 * server reports it closed a connection for not reading, then reads everything. */
static void *never_reader_main(void *arg)
{
    struct ctx *x = arg;
    struct nstats *ns = calloc(1, sizeof *ns);
    msgpack_sbuffer ev, req;
    msgpack_packer pk;
    uint8_t buf[1024];
    double t0, last_progress;
    int fd;

    /* A small receive buffer, so its replies back up into the server quickly. */
    fd = dial(x, 0, 4096);
    msgpack_sbuffer_init(&ev);
    msgpack_sbuffer_init(&req);
    if (fd >= 0) {
        testreq_pack(&req, 0, "hello", x->token);
        size_t n = frame(buf, sizeof buf, req.data, req.size);
        char code[32];
        int nil;
        size_t have = 0;
        if (put(fd, buf, n) == 0)
            while (have < sizeof buf) {
                struct pollfd pf = {fd, POLLIN, 0};
                ssize_t r;
                if (poll(&pf, 1, 5000) <= 0 ||
                    (r = recv(fd, buf + have, sizeof buf - have, 0)) <= 0)
                    break;
                have += (size_t)r;
                if (parse_reply(buf, have, code, &nil) > 0) {
                    ns->hello_ok = code[0] == '\0';
                    break;
                }
            }
    }
    if (!ns->hello_ok)
        goto out;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    t0 = last_progress = now_s();
    while (!atomic_load(&x->stop)) {
        char flow[48];
        size_t n, off = 0;
        /* The same 100 events again and again: retries, answered as duplicates, so the log
         * does not grow and the server's RSS measures connections rather than the store's
         * mapped pages. */
        snprintf(flow, sizeof flow, "never-read-%ld", ns->appends_sent % 100);
        pack_event(&ev, flow, 1);
        msgpack_sbuffer_clear(&req);
        msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_uint64(&pk, (uint64_t)ns->appends_sent + 1);
        msgpack_pack_str_with_body(&pk, "op", 2);
        msgpack_pack_str_with_body(&pk, "append", 6);
        msgpack_pack_str_with_body(&pk, "events", 6);
        msgpack_pack_array(&pk, 1);
        msgpack_sbuffer_write(&req, ev.data, ev.size);
        n = frame(buf, sizeof buf, req.data, req.size);
        while (off < n && !atomic_load(&x->stop)) {
            ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                last_progress = now_s();
                continue;
            }
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                goto drain;
            if (now_s() - last_progress > 1.0 && !ns->stuck_after_s) {
                ns->stuck_after_s = now_s() - t0; /* the server stopped reading us */
                atomic_store(&x->nr_stuck, 1);
            }
            if (atomic_load(&x->closed_not_reading) > 0)
                goto drain;
            struct pollfd pf = {fd, POLLOUT, 0};
            poll(&pf, 1, 100);
        }
        ns->appends_sent++;
    }
drain:
    /* Wait until the server says it gave up on us (the sampler watches its stats), then read. */
    while (atomic_load(&x->closed_not_reading) == 0 && !atomic_load(&x->stop))
        sleep_s(0.05);
    ns->closed_after_s = now_s() - t0;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    ns->eof = read_to_eof(fd, 10.0, &ns->replies_ok, ns->last_code, &ns->last_nil);
out:
    if (fd >= 0)
        close(fd);
    msgpack_sbuffer_destroy(&ev);
    msgpack_sbuffer_destroy(&req);
    return ns;
}

/* ---- the sampler: RSS and the server's connection count ---- */

static long long stat_u(const msgpack_object *stats, const char *key)
{
    const msgpack_object *o = flc_get(stats, key);
    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)o->via.u64 : -1;
}

static void *sampler_main(void *arg)
{
    struct ctx *x = arg;
    flc_client *adm = flc_connect(x->server, x->optoken, NULL);

    while (!atomic_load(&x->stop)) {
        long long kb = rss_kb(x->pid);
        const msgpack_object *st = adm ? flc_stats(adm) : NULL;
        if (kb > atomic_load(&x->rss_peak))
            atomic_store(&x->rss_peak, kb);
        if (st) {
            long long c = stat_u(st, "connections");
            if (c > atomic_load(&x->conns_peak))
                atomic_store(&x->conns_peak, c);
            atomic_store(&x->closed_not_reading, stat_u(st, "closed_not_reading"));
        }
        sleep_s(0.1);
    }
    flc_free(adm);
    return NULL;
}

/* ---- the measured writer ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n paced step-mode appends (one every pace_s); latencies in ms into lat. Returns failures. */
static int writer_run(flc_client *w, const char *tag, int n, double pace_s, double *lat)
{
    msgpack_sbuffer sb;
    double start = now_s();
    int failed = 0;

    msgpack_sbuffer_init(&sb);
    for (int i = 0; i < n; i++) {
        char flow[48];
        double t;
        snprintf(flow, sizeof flow, "writer-%s-%d", tag, i);
        pack_event(&sb, flow, 0);
        struct flc_event e = {sb.data, sb.size};
        t = now_s();
        if (!flc_append(w, &e, 1)) {
            if (failed++ < 3)
                printf("# writer: append %d failed: %s: %s\n", i, flc_errname(w), flc_errmsg(w));
        }
        lat[i] = (now_s() - t) * 1000.0;
        t = start + (i + 1) * pace_s - now_s();
        if (t > 0)
            sleep_s(t);
    }
    msgpack_sbuffer_destroy(&sb);
    return failed;
}

static void percentiles(double *lat, int n, double *p50, double *p99, double *max)
{
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    *p50 = lat[n / 2];
    *p99 = lat[(n * 99) / 100];
    *max = lat[n - 1];
}

/* ---- main ---- */

/* Room for the garbage connections and the rest; fewer garbage connections if the hard
 * limit does not allow it (said in the output). */
static void fd_room(struct ctx *x)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)x->ngarbage + SPARE_FDS;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < want) {
        int n = rl.rlim_cur > SPARE_FDS + 100 ? (int)(rl.rlim_cur - SPARE_FDS) : 100;
        printf("# the open-files limit (%llu) cannot be raised to %llu: using %d garbage "
               "connections instead of %d\n",
               (unsigned long long)rl.rlim_cur, (unsigned long long)want, n, x->ngarbage);
        x->ngarbage = n;
    }
}

int main(int argc, char **argv)
{
    static double base[WRITER_N], load[WRITER_N];
    struct ctx x;
    pthread_t tg, ts, tn, tsamp;
    struct gstats *g;
    struct sstats *sl;
    struct nstats *nr;
    flc_client *w, *sub, *adm;
    const char *san = getenv("FLOWLOG_SANITIZERS");
    double b50, b99, bmax, l50, l99, lmax, phase_s, lat_bound;
    long long rss0, rss1, anon0, rss_bound, conns_end = -1;
    int fails;

    if (argc < 7) {
        fprintf(stderr, "usage: slow-clients HOST PORT TOKEN SERVER_PID HELLO_TIMEOUT_S "
                        "IDLE_TIMEOUT_S [GARBAGE_CONNS [OPERATOR_TOKEN]]\n");
        return 2;
    }
    memset(&x, 0, sizeof x);
    x.addr.sin_family = AF_INET;
    x.addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &x.addr.sin_addr) != 1)
        return 2;
    snprintf(x.server, sizeof x.server, "%s:%s", argv[1], argv[2]);
    x.token = argv[3];
    x.pid = atoi(argv[4]);
    x.hello_s = atoi(argv[5]);
    x.idle_s = atoi(argv[6]);
    x.ngarbage = argc > 7 ? atoi(argv[7]) : 1000;
    x.optoken = argc > 8 ? argv[8] : x.token;
    x.sanitizers = san && strcmp(san, "yes") == 0;
    lat_bound = x.sanitizers ? LAT_BOUND_SAN_MS : LAT_BOUND_MS;
    rss_bound = x.sanitizers ? RSS_BOUND_SAN_KB : RSS_BOUND_KB;
    fd_room(&x);
    phase_s = 2.0 * x.idle_s + 2.0;

    w = flc_connect(x.server, x.token, NULL);
    sub = flc_connect(x.server, x.token, NULL);
    if (!w || flc_errcode(w) || !sub || flc_errcode(sub)) {
        printf("not ok - the writer and the subscriber connect\n");
        return 1;
    }
    flc_set_timeout(w, 10000);
    /* Baseline: the writer alone, paced as under load. */
    fails = writer_run(w, "base", WRITER_N, 0.002, base);
    percentiles(base, WRITER_N, &b50, &b99, &bmax);
    printf("# baseline, writer alone: %d paced appends: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           WRITER_N, b50, b99, bmax);
    tap(&x, fails == 0, "baseline: %d step-mode appends acknowledged", WRITER_N);
    rss0 = rss_kb(x.pid);
    anon0 = proc_kb(x.pid, "RssAnon");
    atomic_store(&x.rss_peak, rss0);

    /* A subscription that matches nothing: its connection sends nothing after this. */
    struct flc_query q = {0};
    q.type = "flow_rollback";
    tap(&x, flc_subscribe(sub, &q) == 0, "an idle subscriber subscribes (type flow_rollback)");
    double idle_t0 = now_s();

    pthread_create(&tsamp, NULL, sampler_main, &x);
    pthread_create(&tg, NULL, garbage_main, &x);
    pthread_create(&ts, NULL, slowloris_main, &x);
    pthread_create(&tn, NULL, never_reader_main, &x);
    sleep_s(1.0); /* the garbage connections ramp up */

    /* The measured writer, paced to span the rest of the phase. */
    fails = writer_run(w, "load", WRITER_N, (phase_s - 1.0) / WRITER_N, load);
    /* The never-reader's verdict needs the server to read its appends until the replies back up
     * (the kernel's send buffer takes megabytes of them first: 86,000 appends), then
     * --idle-timeout without progress. Under ASan on a loaded machine the first part alone took
     * 8.7 s, and the phase ended before the closure. Keep the phase going until it comes (at most
     * 30 s more); the other clients go on as before meanwhile. */
    for (int i = 0; i < 300 && atomic_load(&x.closed_not_reading) <= 0; i++)
        sleep_s(0.1);
    atomic_store(&x.stop, 1);
    pthread_join(tg, (void **)&g);
    pthread_join(ts, (void **)&sl);
    pthread_join(tn, (void **)&nr);
    pthread_join(tsamp, NULL);

    percentiles(load, WRITER_N, &l50, &l99, &lmax);
    printf("# under load: %d paced appends over %.1f s: p50 %.2f ms, p99 %.2f ms, max %.2f ms "
           "(baseline p50 %.2f, p99 %.2f)\n",
           WRITER_N, phase_s - 1.0, l50, l99, lmax, b50, b99);
    tap(&x, fails == 0, "under load: all %d of the writer's appends acknowledged", WRITER_N);
    tap(&x, l99 < lat_bound, "under load: the writer's p99 append latency %.2f ms is under %.0f ms",
        l99, lat_bound);

    printf("# garbage: %d connections, at most %ld open at once (server's peak count %lld); "
           "%ld connects, %ld garbage frames sent, %ld closed by the server: bad_request %ld, "
           "too_large %ld, unauthenticated %ld, unavailable %ld, other %ld, no error frame %ld; "
           "%ld waited > 5 s; %ld connects failed\n",
           x.ngarbage, g->concurrent_peak, (long long)atomic_load(&x.conns_peak), g->connects,
           g->sent, g->closed, g->bad_request, g->too_large, g->unauthenticated, g->unavailable,
           g->other, g->no_error, g->timeouts, g->connect_fail);
    tap(&x, g->concurrent_peak >= x.ngarbage * 9 / 10,
        "garbage: %ld of %d connections were open at the same time", g->concurrent_peak,
        x.ngarbage);
    tap(&x,
        g->closed > x.ngarbage && g->no_error == 0 && g->other == 0 && g->timeouts == 0 &&
            g->connect_fail == 0 && g->unavailable == 0,
        "garbage: every one of %ld hostile connections got an error frame (nil id), then the close",
        g->closed);

    printf("# slowloris: %ld closed, by the hello timeout after %.2f..%.2f s (--hello-timeout "
           "%d); %ld otherwise\n",
           sl->closed, sl->min_s, sl->max_s, x.hello_s, sl->other);
    tap(&x,
        sl->unauthenticated >= SLOWLORIS && sl->other == 0 && sl->min_s >= x.hello_s - 0.1 &&
            sl->max_s < x.hello_s + 1.5,
        "slowloris: %ld connections sending a byte a second were closed by the %d s hello "
        "timeout (unauthenticated) after %.2f..%.2f s",
        sl->unauthenticated, x.hello_s, sl->min_s, sl->max_s);
    tap(&x,
        strcmp(sl->after_hello_code, "unavailable") == 0 && sl->after_hello_nil &&
            sl->after_hello_s >= x.idle_s - 0.1 && sl->after_hello_s < x.idle_s + 1.5,
        "slowloris after hello: trickling a frame is idle: closed with %s after %.2f s "
        "(--idle-timeout %d)",
        sl->after_hello_code[0] ? sl->after_hello_code : "no error", sl->after_hello_s, x.idle_s);

    printf("# never-reader: %ld appends pipelined; the server stopped reading it after %.2f s; "
           "closed for not reading after %.2f s; it then read %ld replies and '%s'\n",
           nr->appends_sent, nr->stuck_after_s, nr->closed_after_s, nr->replies_ok, nr->last_code);
    tap(&x, nr->hello_ok && nr->stuck_after_s > 0,
        "never-reader: the server stopped reading a client that does not read its replies");
    tap(&x,
        atomic_load(&x.closed_not_reading) == 1 && nr->eof &&
            strcmp(nr->last_code, "unavailable") == 0 && nr->last_nil && nr->replies_ok > 0,
        "never-reader: closed for not reading (closed_not_reading = %lld): %ld replies, then "
        "unavailable (nil id), then the close",
        (long long)atomic_load(&x.closed_not_reading), nr->replies_ok);

    tap(&x,
        strcmp(sl->idle_code, "unavailable") == 0 && sl->idle_nil && sl->idle_s >= x.idle_s - 0.1 &&
            sl->idle_s < x.idle_s + 1.5,
        "an idle client (hello, then nothing) is closed with %s (nil id) after %.2f s "
        "(--idle-timeout %d)",
        sl->idle_code[0] ? sl->idle_code : "no error", sl->idle_s, x.idle_s);
    tap(&x, flc_ping(sub) != NULL,
        "a subscriber that sent nothing for %.1f s (over --idle-timeout %d) is not idle: still "
        "served",
        now_s() - idle_t0, x.idle_s);

    /* Memory: the peak during the phase, and after every hostile client left. */
    adm = flc_connect(x.server, x.optoken, NULL);
    for (int i = 0; i < 100 && adm; i++) {
        /* the writer may have been closed as idle while the threads ended (over --idle-timeout
         * on a loaded machine): a ping connects it again, so that it is counted either way */
        (void)flc_ping(w);
        const msgpack_object *st = flc_stats(adm);
        conns_end = st ? stat_u(st, "connections") : -1;
        if (conns_end <= 3) /* the writer, the subscriber, this one */
            break;
        sleep_s(0.1);
    }
    rss1 = rss_kb(x.pid);
    printf("# server RSS: %lld KiB before, %lld KiB peak during the phase (+%lld), %lld KiB after "
           "(%lld connections left); of it anonymous (heap): %lld KiB before, %lld after, the "
           "rest is mapped files (LMDB)\n",
           rss0, (long long)atomic_load(&x.rss_peak), (long long)atomic_load(&x.rss_peak) - rss0,
           rss1, conns_end, anon0, proc_kb(x.pid, "RssAnon"));
    tap(&x, rss0 > 0 && atomic_load(&x.rss_peak) - rss0 < rss_bound,
        "server RSS grew by %lld KiB during the phase: under %lld KiB",
        (long long)atomic_load(&x.rss_peak) - rss0, rss_bound);
    tap(&x, conns_end == 3, "every hostile connection is gone afterwards (%lld left)", conns_end);
    if (adm) {
        const msgpack_object *st = flc_stats(adm);
        printf("# stats: closed_hello_timeout %lld, closed_idle %lld, closed_not_reading %lld, "
               "connections_total %lld, connections_refused %lld\n",
               stat_u(st, "closed_hello_timeout"), stat_u(st, "closed_idle"),
               stat_u(st, "closed_not_reading"), stat_u(st, "connections_total"),
               stat_u(st, "connections_refused"));
        tap(&x,
            stat_u(st, "closed_hello_timeout") >= sl->unauthenticated &&
                stat_u(st, "closed_idle") >= 2,
            "stats count the closures (hello timeouts, idle)");
        const msgpack_object *v = flc_get(flc_verify(adm), "ok");
        tap(&x, v && v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean,
            "verify passes afterwards");
    }
    flc_free(adm);
    flc_free(w);
    flc_free(sub);
    free(g);
    free(sl);
    free(nr);
    return x.failures ? 1 : 0;
}
