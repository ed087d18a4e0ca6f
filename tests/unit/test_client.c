/* test_client.c: libflowlog against a scripted fake server on a Unix socket: the handshake,
 * replies out of order, pushes interleaved with replies, frames split into single bytes,
 * timeouts and late replies, every way a server can break the connection, and reconnecting
 * after the server closed it (RECONNECTING in flowlog.h). */
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "flowlog.h"

/* A fake server: a child process that accepts one connection and runs a script. */
struct fake {
    pid_t pid;
    int tcp; /* listen on 127.0.0.1 instead of a Unix socket (set before starting) */
    char addr[128];
};

typedef void (*script_fn)(int fd);

/* Read one request frame (its content is not needed: ids are predictable). 0 or -1 on EOF. */
static int read_frame(int fd)
{
    uint8_t hdr[4], buf[4096];
    size_t len, got = 0;

    for (size_t n = 0; n < 4;) {
        ssize_t r = read(fd, hdr + n, 4 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
    }
    len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    while (got < len) {
        ssize_t r = read(fd, buf, len - got < sizeof buf ? len - got : sizeof buf);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Write raw bytes; the child exits on failure. */
static void put(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n)
        _exit(3);
}

/* Send sb's bytes as one frame, in one write: a client that sees it readable has all of it. */
static void send_sb(int fd, const msgpack_sbuffer *sb)
{
    uint8_t *buf = malloc(4 + sb->size);

    if (!buf)
        _exit(3);
    buf[0] = (uint8_t)(sb->size >> 24), buf[1] = (uint8_t)(sb->size >> 16);
    buf[2] = (uint8_t)(sb->size >> 8), buf[3] = (uint8_t)sb->size;
    memcpy(buf + 4, sb->data, sb->size);
    put(fd, buf, 4 + sb->size);
    free(buf);
}

/* Pack a string. */
static void s(msgpack_packer *pk, const char *v)
{
    msgpack_pack_str_with_body(pk, v, strlen(v));
}

/* Start a reply {"id": id (or nil if < 0), "ok": ok, <then the caller packs one more key>}. */
static void head(msgpack_packer *pk, int64_t id, int ok, int nkeys)
{
    msgpack_pack_map(pk, (size_t)nkeys);
    s(pk, "id");
    if (id < 0)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_uint64(pk, (uint64_t)id);
    s(pk, "ok");
    if (ok)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* Send {"id": id, "ok": true, "result": {}}. */
static void send_ok(int fd, uint64_t id)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    head(&pk, (int64_t)id, 1, 3);
    s(&pk, "result");
    msgpack_pack_map(&pk, 0);
    send_sb(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* Pack an error reply (id < 0: nil) into sb. */
static void pack_err(msgpack_sbuffer *sb, int64_t id, const char *code, int64_t index,
                     int64_t version)
{
    msgpack_packer pk;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    head(&pk, id, 0, 3);
    s(&pk, "error");
    msgpack_pack_map(&pk, 4);
    s(&pk, "code"), s(&pk, code);
    s(&pk, "message"), s(&pk, "scripted failure");
    s(&pk, "index");
    index >= 0 ? msgpack_pack_int64(&pk, index) : msgpack_pack_nil(&pk);
    s(&pk, "version");
    version >= 0 ? msgpack_pack_int64(&pk, version) : msgpack_pack_nil(&pk);
}

/* Send an error reply (id < 0: nil). */
static void send_err(int fd, int64_t id, const char *code, int64_t index, int64_t version)
{
    msgpack_sbuffer sb;

    msgpack_sbuffer_init(&sb);
    pack_err(&sb, id, code, index, version);
    send_sb(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* Send the hello reply; slow: one byte per write, so the client must reassemble; with_idle:
 * flowlogd's idle close in the same write (the client reads both at once). */
static void send_hello_ex(int fd, int slow, int with_idle)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&sb, "\0\0\0\0", 4);
    head(&pk, 0, 1, 3);
    s(&pk, "result");
    msgpack_pack_map(&pk, 4);
    s(&pk, "server"), s(&pk, "fake 1");
    s(&pk, "version"), msgpack_pack_uint64(&pk, 1);
    s(&pk, "tenant"), s(&pk, "acme:eng");
    s(&pk, "role"), s(&pk, "writer");
    size_t n = sb.size - 4;
    sb.data[0] = (char)(n >> 24), sb.data[1] = (char)(n >> 16);
    sb.data[2] = (char)(n >> 8), sb.data[3] = (char)n;
    if (with_idle) {
        size_t at = sb.size;
        msgpack_sbuffer_write(&sb, "\0\0\0\0", 4);
        pack_err(&sb, -1, "unavailable", -1, -1);
        n = sb.size - at - 4;
        sb.data[at] = (char)(n >> 24), sb.data[at + 1] = (char)(n >> 16);
        sb.data[at + 2] = (char)(n >> 8), sb.data[at + 3] = (char)n;
    }
    for (size_t i = 0; slow && i < sb.size; i++) {
        put(fd, sb.data + i, 1);
        usleep(200); /* make the kernel deliver the bytes in separate reads */
    }
    if (!slow)
        put(fd, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void send_hello(int fd, int slow)
{
    send_hello_ex(fd, slow, 0);
}

/* Send a push for subscription sub with one event of seq. */
static void send_push(int fd, uint64_t sub, uint64_t seq)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    s(&pk, "id"), msgpack_pack_uint64(&pk, sub);
    s(&pk, "push"), s(&pk, "events");
    s(&pk, "result"), msgpack_pack_map(&pk, 3);
    s(&pk, "events"), msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1);
    s(&pk, "seq"), msgpack_pack_uint64(&pk, seq);
    s(&pk, "next"), msgpack_pack_uint64(&pk, seq + 1);
    s(&pk, "head"), msgpack_pack_uint64(&pk, seq);
    send_sb(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* Hellos answered by this fake server (in the child). */
static int hellos;

/* Read the hello and accept it. */
static void hello(int fd)
{
    if (read_frame(fd) != 0)
        _exit(2);
    send_hello(fd, 0);
    hellos++;
}

/* Read one request frame and tell its id and op. 0, or -1 on EOF or a frame that is not one. */
static int read_req(int fd, uint64_t *id, char *op, size_t opsz)
{
    uint8_t hdr[4], *buf;
    size_t len, got = 0;
    msgpack_unpacked u;
    int rc = -1;

    for (size_t n = 0; n < 4;) {
        ssize_t r = read(fd, hdr + n, 4 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
    }
    len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    if (!(buf = malloc(len ? len : 1)))
        return -1;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0) {
            free(buf);
            return -1;
        }
        got += (size_t)r;
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)buf, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object_map *m = &u.data.via.map;
        *id = 0;
        op[0] = '\0';
        for (uint32_t i = 0; i < m->size; i++) {
            const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
            if (k->type != MSGPACK_OBJECT_STR)
                continue;
            if (k->via.str.size == 2 && !memcmp(k->via.str.ptr, "id", 2) &&
                v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                *id = v->via.u64;
            if (k->via.str.size == 2 && !memcmp(k->via.str.ptr, "op", 2) &&
                v->type == MSGPACK_OBJECT_STR && v->via.str.size < opsz) {
                memcpy(op, v->via.str.ptr, v->via.str.size);
                op[v->via.str.size] = '\0';
            }
        }
        rc = 0;
    }
    msgpack_unpacked_destroy(&u);
    free(buf);
    return rc;
}

/* Bind a listening socket at a fresh path (or a port: f->tcp); its address goes to f->addr. */
static int fake_listen(struct fake *f)
{
    static int n;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int lfd = socket(f->tcp ? AF_INET : AF_UNIX, SOCK_STREAM, 0);

    assert_true(lfd >= 0);
    if (f->tcp) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof sin;
        assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0);
        assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
        assert_int_equal(listen(lfd, 1), 0);
        snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", ntohs(sin.sin_port));
        return lfd;
    }
    snprintf(sun.sun_path, sizeof sun.sun_path, "/tmp/flc-test-%d-%d.sock", (int)getpid(), n++);
    unlink(sun.sun_path);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof sun), 0);
    assert_int_equal(listen(lfd, 1), 0);
    snprintf(f->addr, sizeof f->addr, "unix:%s", sun.sun_path);
    return lfd;
}

/* Start the fake server running script; returns its address in f->addr. */
static void fake_start(struct fake *f, script_fn script)
{
    int lfd = fake_listen(f);

    f->pid = fork();
    assert_true(f->pid >= 0);
    if (f->pid == 0) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(1);
        script(fd);
        close(fd);
        _exit(0);
    }
    close(lfd);
}

/* Wait for the fake server and remove its socket. Its exit status, or -1. */
static int fake_stop(struct fake *f)
{
    int st;

    if (waitpid(f->pid, &st, 0) != f->pid)
        return -1;
    if (!f->tcp)
        unlink(f->addr + 5);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A fake server for reconnects: up to nconns connections one after the other (each awaited for
 * at most 5 s), script(fd, k) on the k-th. It exits with 10 + the hellos it answered, so that a
 * test can count connections; a script exits with 4 on a request it did not expect. */
typedef void (*script_k_fn)(int fd, int k);

static void fake_start_n(struct fake *f, script_k_fn script, int nconns)
{
    int lfd = fake_listen(f);

    f->pid = fork();
    assert_true(f->pid >= 0);
    if (f->pid == 0) {
        signal(SIGPIPE, SIG_IGN); /* a client gone early: put's exit 3, not a silent death */
        for (int k = 0; k < nconns; k++) {
            struct pollfd p = {.fd = lfd, .events = POLLIN};
            if (poll(&p, 1, 5000) != 1)
                break;
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0)
                _exit(1);
            script(fd, k);
            close(fd);
        }
        _exit(10 + hellos);
    }
    close(lfd);
}

/* The connections a reconnect fake server saw with a hello, once it is done. */
static int fake_hellos(struct fake *f)
{
    return fake_stop(f) - 10;
}

/* ---- scripts and tests ---- */

/* The handshake's answers are kept on the handle, also when the reply arrives byte by byte. */
static void script_slow_hello(int fd)
{
    if (read_frame(fd) != 0)
        _exit(2);
    send_hello(fd, 1);
    if (read_frame(fd) == 0)
        send_ok(fd, 1);
}

static void test_hello_split_bytes(void **state)
{
    struct fake f = {0};
    fake_start(&f, script_slow_hello);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_non_null(c);
    assert_int_equal(flc_errcode(c), 0);
    assert_string_equal(flc_tenant(c), "acme:eng");
    assert_string_equal(flc_role(c), "writer");
    assert_string_equal(flc_server_name(c), "fake 1");
    assert_non_null(flc_ping(c));
    flc_free(c);
    fake_stop(&f);
}

static void script_refuse(int fd)
{
    if (read_frame(fd) == 0)
        send_err(fd, 0, "unauthenticated", -1, -1);
}

static void test_hello_refused(void **state)
{
    struct fake f = {0};
    fake_start(&f, script_refuse);
    flc_client *c = flc_connect(f.addr, "wrong", NULL);
    assert_int_equal(flc_errcode(c), FLC_EUNAUTHENTICATED);
    assert_string_equal(flc_errname(c), "unauthenticated");
    assert_null(flc_ping(c)); /* the handle stays dead */
    assert_int_equal(flc_errcode(c), FLC_EUNAUTHENTICATED);
    flc_free(c);
    fake_stop(&f);
}

static void test_connect_refused(void **state)
{
    flc_client *c = flc_connect("unix:/nonexistent/flc.sock", "t", NULL);
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION);
    flc_free(c);
    c = flc_connect("127.0.0.1:99999", "t", NULL);
    assert_int_equal(flc_errcode(c), FLC_EUSAGE);
    flc_free(c);
    c = flc_connect("[::1", "t", NULL);
    assert_int_equal(flc_errcode(c), FLC_EUSAGE);
    flc_free(c);
}

/* Three pipelined pings answered 3, 1, 2. */
static void script_out_of_order(int fd)
{
    hello(fd);
    for (int i = 0; i < 3; i++)
        if (read_frame(fd) != 0)
            _exit(2);
    send_ok(fd, 3);
    send_ok(fd, 1);
    send_ok(fd, 2);
}

static void test_out_of_order(void **state)
{
    struct fake f = {0};
    uint64_t ids[3], id;
    const msgpack_object *res;

    fake_start(&f, script_out_of_order);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_errcode(c), 0);
    for (int i = 0; i < 3; i++)
        ids[i] = flc_ping_send(c);
    assert_int_equal(ids[0], 1);
    assert_int_equal(flc_pending(c), 3);
    uint64_t want[3] = {3, 1, 2};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(flc_reply_next(c, -1, &id, &res), 1);
        assert_int_equal(id, want[i]);
        assert_non_null(res);
    }
    assert_int_equal(flc_pending(c), 0);
    assert_int_equal(flc_reply_next(c, 0, &id, &res), 0);
    flc_free(c);
    fake_stop(&f);
}

/* A pipelined append refused, a synchronous ping answered after it. */
static void script_sync_among_pipelined(int fd)
{
    hello(fd);
    if (read_frame(fd) != 0 || read_frame(fd) != 0)
        _exit(2);
    send_err(fd, 1, "conflict", 0, 7);
    send_ok(fd, 2);
}

static void test_sync_among_pipelined(void **state)
{
    struct fake f = {0};
    uint64_t id;
    const msgpack_object *res;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    fake_start(&f, script_sync_among_pipelined);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 0);
    struct flc_event ev = {sb.data, sb.size};
    assert_int_equal(flc_append_send(c, &ev, 1), 1);
    assert_non_null(flc_ping(c)); /* id 2: the reply to id 1 that came first is queued */
    assert_int_equal(flc_reply_next(c, -1, &id, &res), 1);
    assert_int_equal(id, 1);
    assert_null(res);
    assert_int_equal(flc_errcode(c), FLC_ECONFLICT);
    assert_int_equal(flc_errindex(c), 0);
    assert_int_equal(flc_errversion(c), 7);
    msgpack_sbuffer_destroy(&sb);
    flc_free(c);
    fake_stop(&f);
}

/* subscribe (1) → reply, push; ping (2) → push, reply. */
static void script_pushes(int fd)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    hello(fd);
    if (read_frame(fd) != 0)
        _exit(2);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    head(&pk, 1, 1, 3);
    s(&pk, "result"), msgpack_pack_map(&pk, 1);
    s(&pk, "sub"), msgpack_pack_uint64(&pk, 1);
    send_sb(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
    send_push(fd, 1, 10);
    if (read_frame(fd) != 0)
        _exit(2);
    send_push(fd, 1, 11);
    send_ok(fd, 2);
    if (read_frame(fd) != 0) /* unsubscribe (3) */
        _exit(2);
    send_push(fd, 1, 12); /* in flight before the unsubscribe reply: dropped */
    send_ok(fd, 3);
}

/* The seq of the first event of a push result. */
static uint64_t push_seq(const msgpack_object *r)
{
    const msgpack_object *evs = flc_get(r, "events");
    assert_non_null(evs);
    return flc_get(&evs->via.array.ptr[0], "seq")->via.u64;
}

static void test_pushes_between_replies(void **state)
{
    struct fake f = {0};
    struct flc_query q = {.from = 10};
    const msgpack_object *r;

    fake_start(&f, script_pushes);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_subscribe(c, &q), 0);
    assert_non_null(r = flc_sub_next(c, -1));
    assert_int_equal(push_seq(r), 10);
    assert_non_null(flc_ping(c)); /* push 11 arrives first and is kept */
    assert_non_null(r = flc_sub_next(c, 1000));
    assert_int_equal(push_seq(r), 11);
    assert_int_equal(flc_unsubscribe(c), 0);
    assert_null(flc_sub_next(c, 0));
    assert_int_equal(flc_errcode(c), FLC_EUSAGE);
    flc_free(c);
    fake_stop(&f);
}

/* A ping left unanswered until the next one: the late reply is dropped. */
static void script_late(int fd)
{
    hello(fd);
    if (read_frame(fd) != 0 || read_frame(fd) != 0)
        _exit(2);
    send_ok(fd, 1);
    send_ok(fd, 2);
}

static void test_timeout_then_late_reply(void **state)
{
    struct fake f = {0};

    fake_start(&f, script_late);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    flc_set_timeout(c, 100);
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), FLC_ETIMEOUT);
    flc_set_timeout(c, 0);
    assert_non_null(flc_ping(c)); /* id 2; id 1's late reply is dropped */
    flc_free(c);
    fake_stop(&f);
}

/* Broken servers: each makes the next call fail and the handle dead. */
static void script_zero_frame(int fd)
{
    hello(fd);
    if (read_frame(fd) == 0)
        put(fd, "\0\0\0\0", 4);
}

static void script_close_mid_frame(int fd)
{
    hello(fd);
    if (read_frame(fd) == 0)
        put(fd, "\0\0\0\x64\x83\xa2id\x01", 9);
}

static void script_nil_id(int fd)
{
    hello(fd);
    if (read_frame(fd) == 0)
        send_err(fd, -1, "too_large", -1, -1);
}

static void script_garbage(int fd)
{
    hello(fd);
    if (read_frame(fd) == 0)
        put(fd, "\0\0\0\x03\xc1\xc1\xc1", 7);
}

static void script_not_a_reply(int fd)
{
    hello(fd);
    if (read_frame(fd) == 0)
        put(fd, "\0\0\0\x02\x92\x01", 6); /* an array */
}

/* Connect to a fake running script; one ping must fail with code; then stay failed (automatic
 * reconnect off: the fake is gone, the reconnect tests try that). */
static void broken(script_fn script, int code)
{
    struct fake f = {0};

    fake_start(&f, script);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_errcode(c), 0);
    flc_set_reconnect(c, 0);
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), code);
    assert_true(flc_fd(c) < 0);
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), code);
    flc_free(c);
    fake_stop(&f);
}

static void test_broken_servers(void **state)
{
    broken(script_zero_frame, FLC_EPROTOCOL);
    broken(script_close_mid_frame, FLC_ECONNECTION);
    broken(script_nil_id, FLC_ETOO_LARGE);
    broken(script_garbage, FLC_EPROTOCOL);
    broken(script_not_a_reply, FLC_EPROTOCOL);
}

/* Two pipelined pings; the server answers one, then closes. */
static void script_answer_then_close(int fd)
{
    hello(fd);
    if (read_frame(fd) != 0 || read_frame(fd) != 0)
        _exit(2);
    send_ok(fd, 1);
}

static void test_replies_before_a_failure_are_kept(void **state)
{
    struct fake f = {0};
    uint64_t id;
    const msgpack_object *res;

    fake_start(&f, script_answer_then_close);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_ping_send(c), 1);
    assert_int_equal(flc_ping_send(c), 2);
    assert_int_equal(flc_reply_next(c, -1, &id, &res), 1);
    assert_int_equal(id, 1);
    assert_int_equal(flc_reply_next(c, -1, &id, &res), FLC_ECONNECTION);
    flc_free(c);
    fake_stop(&f);
}

static void test_usage_errors(void **state)
{
    struct fake f = {0};
    struct flc_event bad = {"\x82\xa1", 2}; /* a map header without its pairs */

    fake_start(&f, script_slow_hello);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_null(flc_append(c, &bad, 1));
    assert_int_equal(flc_errcode(c), FLC_EUSAGE);
    assert_int_equal(flc_errindex(c), 0);
    assert_null(flc_append(c, NULL, 0));
    assert_int_equal(flc_errcode(c), FLC_EUSAGE);
    assert_null(flc_timeline(c, &(struct flc_query){.from = 1}));
    assert_int_equal(flc_errcode(c), FLC_EUSAGE);
    assert_null(flc_table(c, &(struct flc_table_query){.table = "t", .column = "c"}));
    assert_int_equal(flc_errcode(c), FLC_EUSAGE);
    assert_non_null(flc_ping(c)); /* nothing was sent for those: the connection is fine */
    assert_string_equal(flc_errname(c), "ok");
    flc_free(c);
    fake_stop(&f);
    flc_free(NULL);
}

/* ---- reconnecting ---- */

/* Wait until the fake server has closed the handle's connection (what a long pause does), then
 * 300 ms more: past the quiet time after which the library looks for a close before writing
 * (conn_probe, 250 ms from its last read), as it is at every real idle close (--idle-timeout is
 * at least 1 s). Counted from here, after the handle's last read, not from the fake's: the fake
 * sleeps 300 ms after sending the hello reply, but on a loaded machine this process can read
 * that reply late enough for the next call to come within 250 ms of the read: not looking, it
 * wrote an append without event_ids into the closed connection, which may not be resent. */
static void wait_closed(flc_client *c)
{
    struct pollfd p = {.fd = flc_fd(c), .events = POLLRDHUP};

    assert_true(p.fd >= 0);
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_true(p.revents & (POLLRDHUP | POLLHUP));
    usleep(300 * 1000);
}

/* One packed event {"type", "data": {}, "event_id"?} into sb (cleared first). */
static struct flc_event event(msgpack_sbuffer *sb, const char *event_id)
{
    msgpack_packer pk;

    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, event_id ? 3 : 2);
    s(&pk, "type"), s(&pk, "flow_registered");
    s(&pk, "data"), msgpack_pack_map(&pk, 0);
    if (event_id)
        s(&pk, "event_id"), s(&pk, event_id);
    return (struct flc_event){sb->data, sb->size};
}

/* Send {"id": id, "ok": true, "result": {"sub": id}}. */
static void send_sub_ack(int fd, uint64_t id)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    head(&pk, (int64_t)id, 1, 3);
    s(&pk, "result"), msgpack_pack_map(&pk, 1);
    s(&pk, "sub"), msgpack_pack_uint64(&pk, id);
    send_sb(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* The op the second connection must see first (set before the fake starts). */
static const char *expect_op;

/* Read a request of op want and return its id; anything else: exit 4. */
static uint64_t read_op(int fd, const char *want)
{
    uint64_t id;
    char op[32];

    if (read_req(fd, &id, op, sizeof op) != 0 || strcmp(op, want) != 0)
        _exit(4);
    return id;
}

/* Read a request of op expect_op and answer it {}; anything else: exit 4. */
static void answer_expected(int fd)
{
    send_ok(fd, read_op(fd, expect_op));
}

/* flowlogd's idle close some time after the hello ("unavailable", "id": nil, then the close:
 * not in one read with the hello reply, as in life); the next connection gets one request of
 * expect_op. 300 ms: past the quiet time after which the library looks for a close before
 * writing (conn_probe), as every real idle close (--idle-timeout is at least 1 s) is. */
static void script_idle_then(int fd, int k)
{
    hello(fd);
    if (k == 0) {
        usleep(300 * 1000);
        send_err(fd, -1, "unavailable", -1, -1);
    } else {
        answer_expected(fd);
    }
}

/* A read after the idle close goes on a new connection: the caller sees nothing of it. */
static void test_idle_close_then_read(void **state)
{
    struct fake f = {0};

    expect_op = "log";
    fake_start_n(&f, script_idle_then, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_errcode(c), 0);
    wait_closed(c);
    assert_non_null(flc_log(c, NULL));
    assert_int_equal(flc_errcode(c), 0);
    assert_true(flc_fd(c) >= 0);
    flc_free(c);
    assert_int_equal(fake_hellos(&f), 2);
}

/* Found closed before it was written: even an append without event_ids goes on a new one. Over
 * TCP, where writing to a closed connection succeeds: the handle must look before it writes. */
static void test_idle_close_then_append_without_event_id(void **state)
{
    struct fake f = {.tcp = 1};
    msgpack_sbuffer sb;

    expect_op = "append";
    msgpack_sbuffer_init(&sb);
    fake_start_n(&f, script_idle_then, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    wait_closed(c);
    struct flc_event ev = event(&sb, NULL);
    assert_non_null(flc_append(c, &ev, 1));
    flc_free(c);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(fake_hellos(&f), 2);
}

/* Id of the request the first connection took (in the child). */
static uint64_t first_id;
/* script_lost_reply says why it closes, as flowlogd's idle close does ("unavailable", id nil). */
static int lost_says_why;

/* The first connection takes one request and closes without replying (a crash after reading
 * it, or with lost_says_why the idle close just as the request came); the second must get the
 * same request (same id) if expect_op says so, else its op. */
static void script_lost_reply(int fd, int k)
{
    uint64_t id;
    char op[32];

    hello(fd);
    if (read_req(fd, &id, op, sizeof op) != 0)
        _exit(4);
    if (k == 0) {
        first_id = id;
        if (lost_says_why)
            send_err(fd, -1, "unavailable", -1, -1);
        return;
    }
    if (strcmp(op, expect_op) != 0 || (strcmp(op, "ping") != 0 && id != first_id))
        _exit(4);
    send_ok(fd, id);
}

/* Written, reply lost: an append whose every event has an event_id is sent again. */
static void test_lost_reply_append_with_event_ids_resent(void **state)
{
    struct fake f = {0};
    msgpack_sbuffer sb1, sb2;

    expect_op = "append";
    msgpack_sbuffer_init(&sb1);
    msgpack_sbuffer_init(&sb2);
    fake_start_n(&f, script_lost_reply, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    struct flc_event evs[2] = {event(&sb1, "e-1"), event(&sb2, "e-2")};
    assert_non_null(flc_append(c, evs, 2));
    assert_int_equal(flc_errcode(c), 0);
    flc_free(c);
    msgpack_sbuffer_destroy(&sb1);
    msgpack_sbuffer_destroy(&sb2);
    assert_int_equal(fake_hellos(&f), 2);
}

/* Written, reply lost to the idle close: a read is sent again. */
static void test_lost_reply_read_resent(void **state)
{
    struct fake f = {0};

    expect_op = "state";
    lost_says_why = 1;
    fake_start_n(&f, script_lost_reply, 2);
    lost_says_why = 0;
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_non_null(flc_state(c, "f-1"));
    flc_free(c);
    assert_int_equal(fake_hellos(&f), 2);
}

/* Written, reply lost: an append with an event lacking an event_id is not sent again (the
 * second connection sees the next call's ping first); its outcome is reported unknown. */
static void test_lost_reply_append_without_event_id_not_resent(void **state)
{
    struct fake f = {0};
    msgpack_sbuffer sb1, sb2;

    expect_op = "ping";
    msgpack_sbuffer_init(&sb1);
    msgpack_sbuffer_init(&sb2);
    fake_start_n(&f, script_lost_reply, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    struct flc_event evs[2] = {event(&sb1, "e-1"), event(&sb2, NULL)};
    assert_null(flc_append(c, evs, 2));
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION);
    assert_non_null(strstr(flc_errmsg(c), "may or may not have been applied"));
    assert_non_null(strstr(flc_errmsg(c), "event_id"));
    assert_non_null(flc_ping(c)); /* the next call connects again */
    flc_free(c);
    msgpack_sbuffer_destroy(&sb1);
    msgpack_sbuffer_destroy(&sb2);
    assert_int_equal(fake_hellos(&f), 2);
}

/* First connection: subscribe acknowledged, two pipelined pings read, the first answered, then
 * the client leaves it; second: a ping answered. */
static void script_explicit(int fd, int k)
{
    hello(fd);
    if (k == 0) {
        send_sub_ack(fd, read_op(fd, "subscribe"));
        send_ok(fd, read_op(fd, "ping"));
        (void)read_op(fd, "ping");
        if (read_frame(fd) == 0) /* nothing more: the client went to a new connection */
            _exit(4);
        return;
    }
    send_ok(fd, read_op(fd, "ping"));
}

/* flc_reconnect on a live connection: what it carried is reported, not silently dropped. */
static void test_explicit_reconnect(void **state)
{
    struct fake f = {0};
    uint64_t id;
    const msgpack_object *res;

    fake_start_n(&f, script_explicit, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    const char *tenant = flc_tenant(c);
    assert_int_equal(flc_subscribe(c, NULL), 0);
    assert_int_equal(flc_ping_send(c), 2);
    struct pollfd p = {.fd = flc_fd(c), .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1); /* the reply to 2 has arrived, not been read */
    assert_int_equal(flc_ping_send(c), 3);
    assert_int_equal(flc_reconnect(c), 0);
    assert_int_equal(flc_errcode(c), 0);
    assert_ptr_equal(flc_tenant(c), tenant); /* the same strings stay valid */
    assert_int_equal(flc_pending(c), 2);
    assert_int_equal(flc_reply_next(c, 0, &id, &res), 1); /* kept: it did arrive */
    assert_int_equal(id, 2);
    assert_non_null(res);
    assert_int_equal(flc_reply_next(c, 0, &id, &res), 1);
    assert_int_equal(id, 3);
    assert_null(res);
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION);
    assert_non_null(strstr(flc_errmsg(c), "may or may not have been applied"));
    assert_int_equal(flc_pending(c), 0);
    assert_null(flc_sub_next(c, 0));
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION);
    assert_non_null(strstr(flc_errmsg(c), "subscribe again"));
    assert_non_null(flc_ping(c));
    assert_int_equal(flc_unsubscribe(c), 0); /* the lost subscription is forgotten */
    assert_null(flc_sub_next(c, 0));
    assert_int_equal(flc_errcode(c), FLC_EUSAGE);
    flc_free(c);
    assert_int_equal(fake_hellos(&f), 2);
}

/* Automatic reconnect off: the idle close is reported, and again, until flc_reconnect. */
static void test_reconnect_off(void **state)
{
    struct fake f = {0};

    expect_op = "ping";
    fake_start_n(&f, script_idle_then, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    flc_set_reconnect(c, 0);
    wait_closed(c);
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), FLC_EUNAVAILABLE);
    assert_true(flc_fd(c) < 0);
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), FLC_EUNAVAILABLE);
    assert_int_equal(flc_reconnect(c), 0);
    assert_non_null(flc_ping(c));
    flc_free(c);
    assert_int_equal(fake_hellos(&f), 2);
}

/* The hello reply and the idle close in one read: the close's reason is what is reported. */
static void script_idle_with_hello(int fd, int k)
{
    (void)k;
    if (read_frame(fd) != 0)
        _exit(2);
    send_hello_ex(fd, 0, 1);
    hellos++;
}

static void test_idle_close_with_hello_reply(void **state)
{
    struct fake f = {.tcp = 1};

    fake_start_n(&f, script_idle_with_hello, 1);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_errcode(c), 0);
    flc_set_reconnect(c, 0);
    wait_closed(c);
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), FLC_EUNAVAILABLE);
    flc_free(c);
    assert_int_equal(fake_hellos(&f), 1);
}

/* The server is gone: the call fails with the close and the failed connect in its message; the
 * next call tries again. */
static void test_reconnect_fails(void **state)
{
    struct fake f = {0};

    fake_start_n(&f, script_idle_then, 1);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    wait_closed(c);
    assert_int_equal(fake_hellos(&f), 1); /* gone, its socket too */
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION);
    assert_non_null(strstr(flc_errmsg(c), "scripted failure")); /* the idle close's message */
    assert_non_null(strstr(flc_errmsg(c), "connecting again failed: cannot connect"));
    assert_true(flc_fd(c) < 0);
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION);
    assert_non_null(strstr(flc_errmsg(c), "cannot connect"));
    assert_int_equal(flc_reconnect(c), FLC_ECONNECTION);
    assert_non_null(strstr(flc_errmsg(c), "cannot connect"));
    flc_free(c);
}

/* A subscription acknowledged, one push, then the close (a restart); the next connection takes
 * a subscribe. */
static void script_sub_close(int fd, int k)
{
    uint64_t id;

    hello(fd);
    id = read_op(fd, "subscribe");
    send_sub_ack(fd, id);
    if (k == 0)
        send_push(fd, id, 5);
}

/* A subscriber is told its subscription ended, and is not resubscribed behind its back. */
static void test_subscription_not_renewed(void **state)
{
    struct fake f = {0};
    const msgpack_object *r;

    fake_start_n(&f, script_sub_close, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_subscribe(c, &(struct flc_query){.from = 5}), 0);
    assert_non_null(r = flc_sub_next(c, -1));
    assert_int_equal(push_seq(r), 5);
    assert_null(flc_sub_next(c, -1));
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION); /* the close itself */
    assert_null(flc_sub_next(c, -1));
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION);
    assert_non_null(strstr(flc_errmsg(c), "subscribe again"));
    assert_true(flc_fd(c) < 0); /* no new connection behind the caller's back */
    assert_int_equal(flc_subscribe(c, &(struct flc_query){.from = 6}), 0);
    assert_true(flc_fd(c) >= 0);
    flc_free(c);
    assert_int_equal(fake_hellos(&f), 2);
}

/* Two pipelined pings, one answered, then the close; the next connection answers a ping. */
static void script_answer_one_then_close(int fd, int k)
{
    hello(fd);
    if (k == 0) {
        if (read_frame(fd) != 0 || read_frame(fd) != 0)
            _exit(2);
        send_ok(fd, 1);
        return;
    }
    send_ok(fd, read_op(fd, "ping"));
}

/* A pipelined request whose reply the close took is reported lost once the handle reconnected. */
static void test_pipelined_lost_after_reconnect(void **state)
{
    struct fake f = {0};
    uint64_t id;
    const msgpack_object *res;

    fake_start_n(&f, script_answer_one_then_close, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_ping_send(c), 1);
    assert_int_equal(flc_ping_send(c), 2);
    assert_int_equal(flc_reply_next(c, -1, &id, &res), 1);
    assert_int_equal(id, 1);
    assert_int_equal(flc_reply_next(c, -1, &id, &res), FLC_ECONNECTION);
    assert_int_equal(flc_pending(c), 1);
    assert_non_null(flc_ping(c)); /* id 3, on a new connection */
    assert_int_equal(flc_pending(c), 1);
    assert_int_equal(flc_reply_next(c, 0, &id, &res), 1);
    assert_int_equal(id, 2);
    assert_null(res);
    assert_int_equal(flc_errcode(c), FLC_ECONNECTION);
    assert_int_equal(flc_pending(c), 0);
    assert_int_equal(flc_reply_next(c, 0, &id, &res), 0);
    flc_free(c);
    assert_int_equal(fake_hellos(&f), 2);
}

/* The first hello is refused (say, a token not yet in the server's tokens file); the second
 * connection is accepted and answers a ping. */
static void script_refuse_then_accept(int fd, int k)
{
    if (k == 0) {
        script_refuse(fd);
        return;
    }
    hello(fd);
    send_ok(fd, read_op(fd, "ping"));
}

/* A handle whose flc_connect failed never reconnects by itself (nothing says the failure is
 * over); flc_reconnect can. */
static void test_reconnect_after_failed_connect(void **state)
{
    struct fake f = {0};

    fake_start_n(&f, script_refuse_then_accept, 2);
    flc_client *c = flc_connect(f.addr, "tok", NULL);
    assert_int_equal(flc_errcode(c), FLC_EUNAUTHENTICATED);
    assert_null(flc_ping(c));
    assert_int_equal(flc_errcode(c), FLC_EUNAUTHENTICATED);
    assert_int_equal(flc_reconnect(c), 0);
    assert_string_equal(flc_tenant(c), "acme:eng");
    assert_non_null(flc_ping(c));
    flc_free(c);
    assert_int_equal(fake_hellos(&f), 1);
    c = flc_connect(NULL, "t", NULL);
    assert_int_equal(flc_reconnect(c), FLC_EUSAGE);
    flc_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_split_bytes),
        cmocka_unit_test(test_hello_refused),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_sync_among_pipelined),
        cmocka_unit_test(test_pushes_between_replies),
        cmocka_unit_test(test_timeout_then_late_reply),
        cmocka_unit_test(test_broken_servers),
        cmocka_unit_test(test_replies_before_a_failure_are_kept),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_idle_close_then_read),
        cmocka_unit_test(test_idle_close_then_append_without_event_id),
        cmocka_unit_test(test_lost_reply_append_with_event_ids_resent),
        cmocka_unit_test(test_lost_reply_read_resent),
        cmocka_unit_test(test_lost_reply_append_without_event_id_not_resent),
        cmocka_unit_test(test_explicit_reconnect),
        cmocka_unit_test(test_reconnect_off),
        cmocka_unit_test(test_idle_close_with_hello_reply),
        cmocka_unit_test(test_reconnect_fails),
        cmocka_unit_test(test_subscription_not_renewed),
        cmocka_unit_test(test_pipelined_lost_after_reconnect),
        cmocka_unit_test(test_reconnect_after_failed_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
