/* test_client.c: libflowlog against a scripted fake server on a Unix socket: the handshake,
 * replies out of order, pushes interleaved with replies, frames split into single bytes,
 * timeouts and late replies, and every way a server can break the connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "flowlog.h"

/* A fake server: a child process that accepts one connection and runs a script. */
struct fake {
    pid_t pid;
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

/* Send sb's bytes as one frame. */
static void send_sb(int fd, const msgpack_sbuffer *sb)
{
    uint8_t hdr[4] = {(uint8_t)(sb->size >> 24), (uint8_t)(sb->size >> 16),
                      (uint8_t)(sb->size >> 8), (uint8_t)sb->size};
    put(fd, hdr, 4);
    put(fd, sb->data, sb->size);
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

/* Send an error reply (id < 0: nil). */
static void send_err(int fd, int64_t id, const char *code, int64_t index, int64_t version)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    head(&pk, id, 0, 3);
    s(&pk, "error");
    msgpack_pack_map(&pk, 4);
    s(&pk, "code"), s(&pk, code);
    s(&pk, "message"), s(&pk, "scripted failure");
    s(&pk, "index");
    index >= 0 ? msgpack_pack_int64(&pk, index) : msgpack_pack_nil(&pk);
    s(&pk, "version");
    version >= 0 ? msgpack_pack_int64(&pk, version) : msgpack_pack_nil(&pk);
    send_sb(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* Send the hello reply; slow: one byte per write, so the client must reassemble. */
static void send_hello(int fd, int slow)
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
    for (size_t i = 0; slow && i < sb.size; i++) {
        put(fd, sb.data + i, 1);
        usleep(200); /* make the kernel deliver the bytes in separate reads */
    }
    if (!slow)
        put(fd, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
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

/* Read the hello and accept it. */
static void hello(int fd)
{
    if (read_frame(fd) != 0)
        _exit(2);
    send_hello(fd, 0);
}

/* Start the fake server running script; returns its address in f->addr. */
static void fake_start(struct fake *f, script_fn script)
{
    static int n;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);

    assert_true(lfd >= 0);
    snprintf(sun.sun_path, sizeof sun.sun_path, "/tmp/flc-test-%d-%d.sock", (int)getpid(), n++);
    unlink(sun.sun_path);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof sun), 0);
    assert_int_equal(listen(lfd, 1), 0);
    snprintf(f->addr, sizeof f->addr, "unix:%s", sun.sun_path);
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

/* Wait for the fake server and remove its socket. */
static void fake_stop(struct fake *f)
{
    int st;

    waitpid(f->pid, &st, 0);
    unlink(f->addr + 5);
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
    struct fake f;
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
    struct fake f;
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
    struct fake f;
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
    struct fake f;
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
    struct fake f;
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
    struct fake f;

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
    struct fake f;

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
    struct fake f;
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
    struct fake f;
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
