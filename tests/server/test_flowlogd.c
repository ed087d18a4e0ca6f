/* test_flowlogd.c: the real server, driven at the frame level (what the CLI cannot do): the
 * handshake, hostile frames, unknown keys, roles and tenants, pipelining and group commit,
 * batch limits, subscriptions (live, filtered, slow, unsubscribed), a client vanishing with
 * appends in flight, the connection limit, the idle timeout, and SIGTERM.
 *
 * Requests are written as JSON and converted to msgpack; replies are converted back to JSON
 * (timestamps become integers) for assertions. The server binary is $top_builddir/flowlogd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#define TOK_READER "reader-token-aaaaaaaaaaaaaaaa"
#define TOK_WRITER "writer-token-bbbbbbbbbbbbbbbb"
#define TOK_ADMIN "admin-token-cccccccccccccccccc"
#define TOK_OTHER "other-writer-dddddddddddddddd"
#define TOK_OPER "operator-token-eeeeeeeeeeeeeee"
#define TENANT "acme:eng-2026"
#define RECV_MS 10000

struct srv {
    pid_t pid;
    char *dir;
    char data[512], tokens[512], portf[512];
    int port;
};

static struct srv S; /* the shared server of most tests */
static struct srv T; /* a test's own server, stopped by teardown_own even if the test fails */
static int PORT;     /* where session() connects */

/* ---- the server process ---- */

static void srv_write_tokens(struct srv *s)
{
    FILE *f = fopen(s->tokens, "w");

    assert_non_null(f);
    fprintf(f,
            "# test tokens\n%s %s reader\n%s %s writer\n%s %s admin\n%s other writer\n%s * admin\n",
            TOK_READER, TENANT, TOK_WRITER, TENANT, TOK_ADMIN, TENANT, TOK_OTHER, TOK_OPER);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(s->tokens, 0600), 0);
}

/* Start flowlogd (fresh unless s->dir is set) and wait for its port file. */
static void srv_start(struct srv *s, const char *extra)
{
    const char *top = getenv("top_builddir");
    char bin[600];
    FILE *f;

    if (!s->dir) {
        s->dir = tu_tmpdir();
        snprintf(s->data, sizeof s->data, "%s/data", s->dir);
        snprintf(s->tokens, sizeof s->tokens, "%s/tokens", s->dir);
        snprintf(s->portf, sizeof s->portf, "%s/port", s->dir);
        srv_write_tokens(s);
    }
    snprintf(bin, sizeof bin, "%s/flowlogd", top ? top : ".");
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        const char *argv[16] = {bin,      "--data",      s->data,    "--listen", "127.0.0.1:0",
                                "--sync", "none",        "--tokens", s->tokens,  "--port-file",
                                s->portf, "--log-level", "warn"};
        int n = 13;
        if (extra)
            argv[n++] = extra;
        argv[n] = NULL;
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    /* Up to 30 s, as tests/integration/lib.sh waits: a loaded machine can take seconds. */
    for (int i = 0; i < 3000; i++) {
        int st;
        if ((f = fopen(s->portf, "r")) != NULL) {
            assert_int_equal(fscanf(f, "%d", &s->port), 1);
            fclose(f);
            return;
        }
        if (waitpid(s->pid, &st, WNOHANG) == s->pid)
            fail_msg("flowlogd exited at start (status %d); is %s built?", st, bin);
        usleep(10000);
    }
    fail_msg("flowlogd wrote no port file");
}

/* Stop with SIGTERM; returns the exit status. */
static int srv_stop(struct srv *s)
{
    int st = -1;

    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void srv_destroy(struct srv *s)
{
    srv_stop(s);
    if (s->dir) {
        tu_rmdir(s->dir);
        free(s->dir);
        s->dir = NULL;
    }
}

/* ---- frames ---- */

/* Connect; rcvbuf > 0 shrinks the receive buffer first (so the server's replies back up). */
static int cli_connect_rcvbuf(int port, int rcvbuf)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    assert_true(fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int cli_connect(int port)
{
    return cli_connect_rcvbuf(port, 0);
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

/* Append a JSON text to out as one msgpack frame. */
static void vframe_json(msgpack_sbuffer *out, const char *fmt, va_list ap)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    json_error_t je;
    json_t *j;
    char *text;
    uint8_t hdr[4];

    assert_true(vasprintf(&text, fmt, ap) >= 0);
    j = json_loads(text, 0, &je);
    if (!j)
        fail_msg("bad test JSON (%s): %s", je.text, text);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    tu_pack_json(&pk, j);
    hdr[0] = (uint8_t)(sb.size >> 24);
    hdr[1] = (uint8_t)(sb.size >> 16);
    hdr[2] = (uint8_t)(sb.size >> 8);
    hdr[3] = (uint8_t)sb.size;
    assert_int_equal(msgpack_sbuffer_write(out, (const char *)hdr, 4), 0);
    assert_int_equal(msgpack_sbuffer_write(out, sb.data, sb.size), 0);
    msgpack_sbuffer_destroy(&sb);
    json_decref(j);
    free(text);
}

static void frame_json(msgpack_sbuffer *out, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vframe_json(out, fmt, ap);
    va_end(ap);
}

/* Send a JSON text as one msgpack frame. */
static void send_json(int fd, const char *fmt, ...)
{
    msgpack_sbuffer out;
    va_list ap;

    msgpack_sbuffer_init(&out);
    va_start(ap, fmt);
    vframe_json(&out, fmt, ap);
    va_end(ap);
    send_all(fd, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
}

/* Read exactly n bytes within ms; 1 ok, 0 EOF/reset, -1 timeout. */
static int recv_all(int fd, void *p, size_t n, int ms)
{
    char *c = p;

    while (n > 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int r = poll(&pfd, 1, ms);
        ssize_t got;
        if (r == 0)
            return -1;
        got = recv(fd, c, n, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return 0;
        c += got;
        n -= (size_t)got;
    }
    return 1;
}

/* The next frame as JSON, or NULL on EOF (a timeout fails the test). */
static json_t *recv_json_ms(int fd, int ms)
{
    uint8_t hdr[4];
    uint32_t len;
    char *buf;
    msgpack_unpacked u;
    size_t off = 0;
    json_t *j;
    int r = recv_all(fd, hdr, 4, ms);

    if (r < 0)
        fail_msg("no reply within %d ms", ms);
    if (r == 0)
        return NULL;
    len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    buf = malloc(len ? len : 1);
    assert_non_null(buf);
    assert_int_equal(recv_all(fd, buf, len, ms), 1);
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    j = tu_to_json(&u.data);
    msgpack_unpacked_destroy(&u);
    free(buf);
    return j;
}

static json_t *recv_json(int fd)
{
    return recv_json_ms(fd, RECV_MS);
}

/* The server closes this connection (after any frames, which are returned one by one). */
static void expect_eof(int fd)
{
    json_t *j = recv_json(fd);
    if (j) {
        char *t = json_dumps(j, 0);
        fail_msg("expected EOF, got %s", t);
    }
}

/* Receive one reply and check it is an error with this code (and id, -1 for nil). */
static json_t *expect_error(int fd, long long id, const char *code)
{
    json_t *j = recv_json(fd);
    char *t;

    assert_non_null(j);
    t = json_dumps(j, 0);
    if (json_is_true(json_object_get(j, "ok")) || !tu_str(j, "error/code") ||
        strcmp(tu_str(j, "error/code"), code) != 0)
        fail_msg("expected error %s, got %s", code, t);
    if (id < 0 ? !json_is_null(json_object_get(j, "id")) : tu_int(j, "id") != id)
        fail_msg("expected id %lld in %s", id, t);
    assert_true(strlen(tu_str(j, "error/message")) > 10); /* a message a person can act on */
    free(t);
    return j;
}

static json_t *expect_ok(int fd, long long id)
{
    json_t *j = recv_json(fd);
    char *t;

    assert_non_null(j);
    t = json_dumps(j, 0);
    if (!json_is_true(json_object_get(j, "ok")) || tu_int(j, "id") != id)
        fail_msg("expected ok for id %lld, got %s", id, t);
    free(t);
    return j;
}

/* Connect and say hello with token (and tenant, for operators). */
static int session_rcvbuf(const char *token, const char *tenant, int rcvbuf)
{
    int fd = cli_connect_rcvbuf(PORT, rcvbuf);

    if (tenant)
        send_json(fd,
                  "{\"id\":0,\"op\":\"hello\",\"version\":1,\"token\":\"%s\",\"tenant\":\"%s\"}",
                  token, tenant);
    else
        send_json(fd, "{\"id\":0,\"op\":\"hello\",\"version\":1,\"token\":\"%s\"}", token);
    json_decref(expect_ok(fd, 0));
    return fd;
}

static int session(const char *token, const char *tenant)
{
    return session_rcvbuf(token, tenant, 0);
}

#define REG(flow)                                                                                  \
    "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"" flow "\",\"flow_name\":\"n\","        \
    "\"priority\":\"P1\"}}"

/* Append one event (JSON) and return its seq. */
static long long append1(int fd, long long id, const char *ev)
{
    json_t *j;
    long long seq;

    send_json(fd, "{\"id\":%lld,\"op\":\"append\",\"events\":[%s]}", id, ev);
    j = expect_ok(fd, id);
    seq = tu_int(j, "result/results/0/seq");
    json_decref(j);
    return seq;
}

/* ---- fixture ---- */

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    srv_start(&S, NULL);
    PORT = S.port;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    srv_destroy(&T);
    srv_destroy(&S);
    return 0;
}

/* Stop a test's own server and point session() back at the shared one. */
static int teardown_own(void **state)
{
    (void)state;
    srv_destroy(&T);
    memset(&T, 0, sizeof T);
    PORT = S.port;
    return 0;
}

/* ---- tests ---- */

static void test_hello_required(void **state)
{
    int fd = cli_connect(S.port);

    (void)state;
    send_json(fd, "{\"id\":7,\"op\":\"log\"}");
    json_decref(expect_error(fd, 7, "unauthenticated"));
    expect_eof(fd);
    close(fd);

    fd = cli_connect(S.port);
    send_json(fd, "{\"id\":1,\"op\":\"hello\",\"version\":1,\"token\":\"nope\"}");
    json_decref(expect_error(fd, 1, "unauthenticated"));
    expect_eof(fd);
    close(fd);

    /* a wrong version is answered, the connection stays for a proper hello */
    fd = cli_connect(S.port);
    send_json(fd, "{\"id\":1,\"op\":\"hello\",\"version\":2,\"token\":\"%s\"}", TOK_READER);
    json_decref(expect_error(fd, 1, "bad_request"));
    send_json(fd, "{\"id\":2,\"op\":\"hello\",\"version\":1,\"token\":\"%s\",\"tenant\":\"x\"}",
              TOK_READER);
    json_decref(expect_error(fd, 2, "forbidden"));
    send_json(fd, "{\"id\":3,\"op\":\"hello\",\"version\":1,\"token\":\"%s\"}", TOK_READER);
    json_t *j = expect_ok(fd, 3);
    assert_string_equal(tu_str(j, "result/tenant"), TENANT);
    assert_string_equal(tu_str(j, "result/role"), "reader");
    json_decref(j);
    send_json(fd, "{\"id\":4,\"op\":\"hello\",\"version\":1,\"token\":\"%s\"}", TOK_READER);
    json_decref(expect_error(fd, 4, "bad_request"));
    send_json(fd, "{\"id\":5,\"op\":\"ping\"}");
    json_decref(expect_ok(fd, 5));
    close(fd);
}

/* Each hostile frame gets an error with a nil id and a close; the server and others go on. */
static void test_bad_frames(void **state)
{
    static const uint8_t zero[] = {0, 0, 0, 0};
    static const uint8_t huge[] = {0x7f, 0, 0, 0};
    static const uint8_t garbage[] = {0, 0, 0, 1, 0xc1};
    static const uint8_t not_map[] = {0, 0, 0, 1, 0x01};
    static const uint8_t bomb[] = {0, 0, 0, 5, 0xdd, 0x0f, 0xff, 0xff, 0xff}; /* array32 */
    static const uint8_t trailing[] = {0, 0, 0, 2, 0x80, 0x80};
    static const struct {
        const uint8_t *p;
        size_t n;
        const char *code;
    } cases[] = {
        {zero, sizeof zero, "bad_request"},       {huge, sizeof huge, "too_large"},
        {garbage, sizeof garbage, "bad_request"}, {not_map, sizeof not_map, "bad_request"},
        {bomb, sizeof bomb, "bad_request"},       {trailing, sizeof trailing, "bad_request"},
    };
    int other = session(TOK_READER, NULL);

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int authed = 0; authed < 2; authed++) {
            int fd = authed ? session(TOK_WRITER, NULL) : cli_connect(S.port);
            send_all(fd, cases[i].p, cases[i].n);
            json_decref(expect_error(fd, -1, cases[i].code));
            expect_eof(fd);
            close(fd);
        }
    }
    /* the error still arrives when the client has already sent much more (a close with
     * unread input would reset the connection and drop it) */
    {
        size_t n = 256 * 1024;
        char *junk = malloc(n);
        int fd = session(TOK_WRITER, NULL);
        memset(junk, 0x5a, n);
        send_all(fd, zero, sizeof zero);
        send_all(fd, junk, n);
        json_decref(expect_error(fd, -1, "bad_request"));
        expect_eof(fd);
        close(fd);
        free(junk);
    }
    send_json(other, "{\"id\":9,\"op\":\"ping\"}");
    json_decref(expect_ok(other, 9));
    close(other);
}

/* A client that reads slowly still gets every reply owed before a close, even when it sends
 * something after the server has said goodbye: the server lingers while its last replies wait
 * in its send queue for the peer, not a fixed 2 s. (A socket closed with replies still queued
 * answers the peer's next bytes with RST, and the kernel drops the replies.) */
static void test_slow_reader_after_close(void **state)
{
    enum { N = 60 };
    static const uint8_t zero[] = {0, 0, 0, 0}; /* a fatal frame: the server closes after it */
    static const uint8_t ping[] = {0, 0, 0, 1, 0x80};
    int w = session(TOK_WRITER, NULL), fd;
    long long first = 0, last = 0;
    json_t *j;

    (void)state;
    for (int i = 0; i < N; i++) {
        char ev[512];
        snprintf(ev, sizeof ev,
                 "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"slow-after-close-%d\","
                 "\"flow_name\":\"n\",\"description\":\"%0300d\"}}",
                 i, i);
        last = append1(w, i + 1, ev);
        if (!first)
            first = last;
    }
    close(w);
    fd = session_rcvbuf(TOK_READER, NULL, 4096);
    send_json(fd, "{\"id\":1,\"op\":\"log\",\"from\":%lld,\"limit\":%d}", first, N);
    send_all(fd, zero, sizeof zero);
    usleep(3500 * 1000); /* past the 2 s the server used to linger for */
    if (send(fd, ping, sizeof ping, MSG_NOSIGNAL) < 0)
        fail_msg("send after the close: %s", strerror(errno));
    usleep(100 * 1000);
    j = expect_ok(fd, 1);
    assert_int_equal(json_array_size(tu_get(j, "result/events")), N);
    assert_int_equal(tu_int(j, "result/next"), last + 1);
    json_decref(j);
    json_decref(expect_error(fd, -1, "bad_request"));
    expect_eof(fd);
    close(fd);
}

static void test_bad_requests(void **state)
{
    int fd = session(TOK_WRITER, NULL);
    json_t *j;

    (void)state;
    send_json(fd, "{\"op\":\"ping\"}");
    json_decref(expect_error(fd, -1, "bad_request"));
    send_json(fd, "{\"id\":-3,\"op\":\"ping\"}");
    json_decref(expect_error(fd, -1, "bad_request"));
    send_json(fd, "{\"id\":1,\"op\":\"frobnicate\"}");
    json_decref(expect_error(fd, 1, "bad_request"));
    send_json(fd, "{\"id\":2,\"op\":\"log\",\"form\":3}");
    j = expect_error(fd, 2, "bad_request");
    assert_non_null(strstr(tu_str(j, "error/message"), "\"form\""));
    json_decref(j);
    send_json(fd, "{\"id\":3,\"op\":\"log\",\"from\":\"x\"}");
    json_decref(expect_error(fd, 3, "bad_request"));
    send_json(fd, "{\"id\":4,\"op\":\"log\",\"type\":\"nope\"}");
    json_decref(expect_error(fd, 4, "bad_request"));
    send_json(fd, "{\"id\":5,\"op\":\"timeline\"}");
    json_decref(expect_error(fd, 5, "bad_request"));
    send_json(fd, "{\"id\":6,\"op\":\"state\"}");
    json_decref(expect_error(fd, 6, "bad_request"));
    send_json(fd, "{\"id\":7,\"op\":\"state\",\"flow_id\":\"missing-flow\"}");
    json_decref(expect_error(fd, 7, "not_found"));
    send_json(fd, "{\"id\":8,\"op\":\"unsubscribe\",\"sub\":12345}");
    json_decref(expect_error(fd, 8, "not_found"));
    /* the connection is still fine */
    send_json(fd, "{\"id\":9,\"op\":\"ping\"}");
    json_decref(expect_ok(fd, 9));
    close(fd);
}

static void test_batch_limits(void **state)
{
    int fd = session(TOK_WRITER, NULL);
    size_t cap = 1001 * 80 + 100, len;
    char *big = malloc(cap);
    json_t *j;

    (void)state;
    send_json(fd, "{\"id\":1,\"op\":\"append\",\"events\":[]}");
    json_decref(expect_error(fd, 1, "bad_request"));
    send_json(fd, "{\"id\":2,\"op\":\"append\",\"events\":{}}");
    json_decref(expect_error(fd, 2, "bad_request"));
    len = (size_t)snprintf(big, cap, "{\"id\":3,\"op\":\"append\",\"events\":[");
    for (int i = 0; i < 1001; i++)
        len += (size_t)snprintf(big + len, cap - len,
                                "%s{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"b-%d\","
                                "\"flow_name\":\"n\"}}",
                                i ? "," : "", i);
    snprintf(big + len, cap - len, "]}");
    send_json(fd, "%s", big);
    json_decref(expect_error(fd, 3, "too_large"));
    /* a bad event names its index, and nothing of the batch is committed */
    send_json(fd, "{\"id\":4,\"op\":\"append\",\"events\":[" REG("lim-1") ",{\"type\":\"x\","
                                                                          "\"data\":{}}]}");
    j = expect_error(fd, 4, "bad_request");
    assert_int_equal(tu_int(j, "error/index"), 1);
    json_decref(j);
    send_json(fd, "{\"id\":5,\"op\":\"state\",\"flow_id\":\"lim-1\"}");
    json_decref(expect_error(fd, 5, "not_found"));
    free(big);
    close(fd);
}

static void test_roles_and_tenants(void **state)
{
    int rd = session(TOK_READER, NULL), wr = session(TOK_WRITER, NULL);
    int ad = session(TOK_ADMIN, NULL), other = session(TOK_OTHER, NULL);
    int op = session(TOK_OPER, NULL), opt = session(TOK_OPER, TENANT);
    long long seq;
    json_t *j;

    (void)state;
    send_json(rd, "{\"id\":1,\"op\":\"append\",\"events\":[" REG("role-1") "]}");
    json_decref(expect_error(rd, 1, "forbidden"));
    seq = append1(wr, 2, REG("role-1"));
    assert_true(seq > 0);
    send_json(wr,
              "{\"id\":3,\"op\":\"append\",\"events\":[" REG(
                  "role-2") ",{\"type\":"
                            "\"flow_rollback\",\"data\":{\"flow_id\":\"role-1\",\"to_seq\":%lld,"
                            "\"reason\":\"r\"}}]}",
              seq);
    j = expect_error(wr, 3, "forbidden");
    assert_int_equal(tu_int(j, "error/index"), 1);
    json_decref(j);
    send_json(wr, "{\"id\":4,\"op\":\"verify\"}");
    json_decref(expect_error(wr, 4, "forbidden"));
    send_json(wr, "{\"id\":5,\"op\":\"stats\"}");
    json_decref(expect_error(wr, 5, "forbidden"));
    /* a tenant's admin: its own tenant's connections (rd, wr, ad and the operator acting for
     * it), none of the counters of all tenants together (CONTRACT.md 5) */
    send_json(ad, "{\"id\":6,\"op\":\"stats\"}");
    j = expect_ok(ad, 6);
    assert_string_equal(tu_str(j, "result/scope"), "tenant");
    assert_string_equal(tu_str(j, "result/tenant"), TENANT);
    assert_int_equal(tu_int(j, "result/connections"), 4);
    assert_true(tu_int(j, "result/head_seq") >= 1);
    assert_null(json_object_get(json_object_get(j, "result"), "store"));
    assert_null(json_object_get(json_object_get(j, "result"), "events_committed"));
    json_decref(j);
    /* and its verify is told about its own records: the other tenant's are not counted */
    append1(other, 61, REG("role-other"));
    send_json(ad, "{\"id\":62,\"op\":\"verify\"}");
    j = expect_ok(ad, 62);
    assert_true(json_is_true(tu_get(j, "result/ok")));
    assert_string_equal(tu_str(j, "result/scope"), "tenant");
    assert_int_equal(tu_int(j, "result/events"), tu_int(j, "result/head_seq") - 1);
    json_decref(j);
    /* the reader of the tenant sees the event; another tenant does not */
    send_json(rd, "{\"id\":7,\"op\":\"state\",\"flow_id\":\"role-1\"}");
    json_decref(expect_ok(rd, 7));
    send_json(other, "{\"id\":8,\"op\":\"state\",\"flow_id\":\"role-1\"}");
    json_decref(expect_error(other, 8, "not_found"));
    send_json(other, "{\"id\":9,\"op\":\"log\"}");
    j = expect_ok(other, 9);
    assert_int_equal(json_array_size(tu_get(j, "result/events")), 1); /* its own only */
    assert_string_equal(tu_str(j, "result/events/0/data/flow_id"), "role-other");
    json_decref(j);
    /* an operator without a tenant: ping, stats, verify only */
    send_json(op, "{\"id\":10,\"op\":\"log\"}");
    json_decref(expect_error(op, 10, "forbidden"));
    send_json(op, "{\"id\":11,\"op\":\"append\",\"events\":[" REG("role-3") "]}");
    json_decref(expect_error(op, 11, "forbidden"));
    send_json(op, "{\"id\":12,\"op\":\"stats\"}");
    j = expect_ok(op, 12);
    assert_string_equal(tu_str(j, "result/scope"), "store");
    assert_true(tu_int(j, "result/connections") >= 6);
    assert_non_null(tu_get(j, "result/store"));
    json_decref(j);
    send_json(op, "{\"id\":13,\"op\":\"verify\"}");
    j = expect_ok(op, 13);
    assert_true(json_is_true(tu_get(j, "result/ok")));
    assert_string_equal(tu_str(j, "result/scope"), "store");
    assert_int_equal(tu_int(j, "result/events"), tu_int(j, "result/head_seq"));
    json_decref(j);
    /* an operator naming the tenant acts for it */
    append1(opt, 14, REG("role-4"));
    send_json(rd, "{\"id\":15,\"op\":\"state\",\"flow_id\":\"role-4\"}");
    json_decref(expect_ok(rd, 15));
    close(rd);
    close(wr);
    close(ad);
    close(other);
    close(op);
    close(opt);
}

/* Many requests written before any reply is read: every one is answered once, by id, appends
 * in order with consecutive seqs, and they share commits. */
static void test_pipelining(void **state)
{
    enum { N = 200 };
    int fd = session(TOK_OPER, TENANT);
    long long first = 0, commits0, commits1;
    int seen[2 * N + 2] = {0};
    json_t *j;

    (void)state;
    send_json(fd, "{\"id\":1,\"op\":\"stats\"}");
    j = expect_ok(fd, 1);
    commits0 = tu_int(j, "result/commits");
    json_decref(j);
    /* One write of all the frames: sent one by one, each could reach a server that had
     * committed the one before, and a lone append then commits alone (commit.c, inline). */
    msgpack_sbuffer all;
    msgpack_sbuffer_init(&all);
    for (int i = 0; i < N; i++) {
        frame_json(&all,
                   "{\"id\":%d,\"op\":\"append\",\"events\":[{\"type\":\"flow_registered\","
                   "\"data\":{\"flow_id\":\"pipe-%d\",\"flow_name\":\"n\"}}]}",
                   2 + 2 * i, i);
        frame_json(&all, "{\"id\":%d,\"op\":\"ping\"}", 3 + 2 * i);
    }
    send_all(fd, all.data, all.size);
    msgpack_sbuffer_destroy(&all);
    for (int i = 0; i < 2 * N; i++) {
        long long id;
        j = recv_json(fd);
        assert_non_null(j);
        assert_true(json_is_true(json_object_get(j, "ok")));
        id = tu_int(j, "id");
        assert_true(id >= 2 && id < 2 + 2 * N);
        assert_int_equal(seen[id], 0);
        seen[id] = 1;
        if (id % 2 == 0) {
            long long seq = tu_int(j, "result/results/0/seq");
            if (id == 2)
                first = seq;
            else if (first)
                assert_int_equal(seq, first + (id - 2) / 2);
        }
        json_decref(j);
    }
    send_json(fd, "{\"id\":1000,\"op\":\"stats\"}");
    j = expect_ok(fd, 1000);
    commits1 = tu_int(j, "result/commits");
    print_message("# %d pipelined appends took %lld commits\n", N, commits1 - commits0);
    assert_true(commits1 - commits0 < N);
    json_decref(j);
    close(fd);
}

/* Concurrent writers on many connections share commits too. */
static void test_group_commit_across_connections(void **state)
{
    enum { C = 16, K = 20 };
    int fds[C], ad = session(TOK_OPER, TENANT);
    long long c0, c1, e0, e1;
    json_t *j;

    (void)state;
    for (int c = 0; c < C; c++)
        fds[c] = session(TOK_WRITER, NULL);
    send_json(ad, "{\"id\":1,\"op\":\"stats\"}");
    j = expect_ok(ad, 1);
    c0 = tu_int(j, "result/commits");
    e0 = tu_int(j, "result/events_committed");
    json_decref(j);
    /* Each connection's appends in one write, as in test_pipelining: one at a time, each could
     * be committed before the next arrived. */
    for (int c = 0; c < C; c++) {
        msgpack_sbuffer all;
        msgpack_sbuffer_init(&all);
        for (int k = 0; k < K; k++)
            frame_json(&all,
                       "{\"id\":%d,\"op\":\"append\",\"events\":[{\"type\":"
                       "\"flow_registered\",\"data\":{\"flow_id\":\"gc-%d-%d\","
                       "\"flow_name\":\"n\"}}]}",
                       k, c, k);
        send_all(fds[c], all.data, all.size);
        msgpack_sbuffer_destroy(&all);
    }
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++)
            json_decref(expect_ok(fds[c], k));
    send_json(ad, "{\"id\":2,\"op\":\"stats\"}");
    j = expect_ok(ad, 2);
    c1 = tu_int(j, "result/commits");
    e1 = tu_int(j, "result/events_committed");
    json_decref(j);
    assert_int_equal(e1 - e0, C * K);
    print_message("# %d appends from %d connections took %lld commits\n", C * K, C, c1 - c0);
    assert_true(c1 - c0 < C * K);
    for (int c = 0; c < C; c++)
        close(fds[c]);
    close(ad);
}

/* A subscription: catch-up, then live pushes in order, filtered, until unsubscribed. */
static void test_subscribe(void **state)
{
    int sub = session(TOK_READER, NULL), wr = session(TOK_WRITER, NULL);
    long long s1, s2, s3;
    json_t *j;

    (void)state;
    s1 = append1(wr, 1, REG("sub-1"));
    send_json(sub, "{\"id\":50,\"op\":\"subscribe\",\"from\":%lld,\"flow_id\":\"sub-1\"}", s1);
    j = expect_ok(sub, 50);
    assert_int_equal(tu_int(j, "result/sub"), 50);
    json_decref(j);
    j = recv_json(sub); /* catch-up push */
    assert_string_equal(tu_str(j, "push"), "events");
    assert_int_equal(tu_int(j, "id"), 50);
    assert_int_equal(tu_int(j, "result/events/0/seq"), s1);
    json_decref(j);
    append1(wr, 2, REG("sub-2")); /* filtered out */
    s2 = append1(wr, 3,
                 "{\"type\":\"flow_status\",\"data\":{\"flow_id\":\"sub-1\","
                 "\"migration_status\":\"RUNNING\"}}");
    j = recv_json(sub);
    assert_int_equal(tu_int(j, "id"), 50);
    assert_int_equal(json_array_size(tu_get(j, "result/events")), 1);
    assert_int_equal(tu_int(j, "result/events/0/seq"), s2);
    json_decref(j);
    /* requests on a subscribed connection still work */
    send_json(sub, "{\"id\":51,\"op\":\"subscribe\",\"from\":%lld,\"flow_id\":\"sub-1\"}", s1);
    json_decref(expect_ok(sub, 51));
    json_decref(recv_json(sub));
    send_json(sub, "{\"id\":51,\"op\":\"subscribe\"}");
    json_decref(expect_error(sub, 51, "bad_request")); /* id in use */
    send_json(sub, "{\"id\":52,\"op\":\"unsubscribe\",\"sub\":50}");
    json_decref(expect_ok(sub, 52));
    send_json(sub, "{\"id\":53,\"op\":\"unsubscribe\",\"sub\":51}");
    json_decref(expect_ok(sub, 53));
    s3 = append1(wr, 4,
                 "{\"type\":\"flow_status\",\"data\":{\"flow_id\":\"sub-1\","
                 "\"migration_status\":\"DONE\"}}");
    assert_true(s3 > s2);
    send_json(sub, "{\"id\":54,\"op\":\"ping\"}");
    json_decref(expect_ok(sub, 54)); /* no push came before the ping's reply */
    close(sub);
    close(wr);
}

/* A subscriber that reads nothing while much is written: the writer is not slowed, and later
 * the subscriber gets every event once, in order. */
static void test_slow_subscriber(void **state)
{
    enum { BATCHES = 40, PER = 50 };
    int sub = session(TOK_READER, NULL), wr = session(TOK_WRITER, NULL),
        rd = session(TOK_READER, NULL);
    size_t cap = PER * 2400 + 200, len;
    char *buf = malloc(cap), pad[2001];
    long long from, expect, got = 0;
    json_t *j;

    (void)state;
    memset(pad, 'x', 2000);
    pad[2000] = '\0';
    send_json(rd, "{\"id\":1,\"op\":\"log\",\"limit\":1}");
    j = expect_ok(rd, 1);
    from = tu_int(j, "result/head") + 1;
    json_decref(j);
    send_json(sub, "{\"id\":77,\"op\":\"subscribe\",\"from\":%lld,\"type\":\"flow_registered\"}",
              from);
    json_decref(expect_ok(sub, 77));
    for (int b = 0; b < BATCHES; b++) {
        len = (size_t)snprintf(buf, cap, "{\"id\":%d,\"op\":\"append\",\"events\":[", b);
        for (int i = 0; i < PER; i++)
            len += (size_t)snprintf(buf + len, cap - len,
                                    "%s{\"type\":\"flow_registered\",\"data\":{\"flow_id\":"
                                    "\"slow-%d-%d\",\"flow_name\":\"n\",\"description\":\"%s\"}}",
                                    i ? "," : "", b, i, pad);
        snprintf(buf + len, cap - len, "]}");
        send_json(wr, "%s", buf);
        json_decref(expect_ok(wr, b)); /* within RECV_MS although the subscriber reads nothing */
    }
    expect = from;
    while (got < BATCHES * PER) {
        j = recv_json(sub);
        assert_non_null(j);
        assert_int_equal(tu_int(j, "id"), 77);
        json_t *evs = tu_get(j, "result/events");
        for (size_t i = 0; i < json_array_size(evs); i++) {
            long long seq = json_integer_value(json_object_get(json_array_get(evs, i), "seq"));
            assert_int_equal(seq, expect);
            expect++;
            got++;
        }
        json_decref(j);
    }
    assert_int_equal(got, BATCHES * PER);
    close(sub);
    sub = session(TOK_OPER, NULL);
    send_json(sub, "{\"id\":1,\"op\":\"stats\"}");
    j = expect_ok(sub, 1);
    print_message("# subscriber paused %lld times\n", tu_int(j, "result/subscriber_pauses"));
    assert_true(tu_int(j, "result/subscriber_pauses") > 0); /* the slow path really ran */
    json_decref(j);
    free(buf);
    close(sub);
    close(wr);
    close(rd);
}

/* A client that sends appends and vanishes: no crash, and what was received is committed. */
static void test_vanishing_client(void **state)
{
    int rd = session(TOK_READER, NULL);

    (void)state;
    for (int round = 0; round < 20; round++) {
        int fd = session(TOK_WRITER, NULL);
        struct linger lg = {1, 0};
        send_json(fd,
                  "{\"id\":1,\"op\":\"append\",\"events\":[{\"type\":\"flow_registered\","
                  "\"data\":{\"flow_id\":\"gone-%d\",\"flow_name\":\"n\"}}]}",
                  round);
        send_json(fd, "{\"id\":2,\"op\":\"subscribe\"}");
        if (round % 2) /* a reset instead of a FIN */
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    usleep(200000);
    send_json(rd, "{\"id\":1,\"op\":\"state\",\"flow_id\":\"gone-0\"}");
    json_decref(expect_ok(rd, 1)); /* a FIN after the frame: it was received, so committed */
    send_json(rd, "{\"id\":2,\"op\":\"ping\"}");
    json_decref(expect_ok(rd, 2));
    close(rd);
}

static void test_max_connections(void **state)
{
    int a, b, c;

    (void)state;
    srv_start(&T, "--max-connections=2");
    a = cli_connect(T.port);
    b = cli_connect(T.port);
    usleep(100000);
    c = cli_connect(T.port);
    json_decref(expect_error(c, -1, "unavailable"));
    expect_eof(c);
    close(a);
    close(b);
    close(c);
    assert_int_equal(srv_stop(&T), 0);
}

/* Read one frame slowly, chunk bytes every delay_us (a client on a slow link); as recv_json. */
static json_t *recv_json_slow(int fd, size_t chunk, useconds_t delay_us)
{
    uint8_t hdr[4];
    uint32_t len;
    char *buf;
    msgpack_unpacked u;
    size_t off = 0, got = 0;
    json_t *j;

    assert_int_equal(recv_all(fd, hdr, 4, RECV_MS), 1);
    len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    buf = malloc(len);
    assert_non_null(buf);
    while (got < len) {
        size_t n = len - got < chunk ? len - got : chunk;
        assert_int_equal(recv_all(fd, buf + got, n, RECV_MS), 1);
        got += n;
        usleep(delay_us);
    }
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    j = tu_to_json(&u.data);
    msgpack_unpacked_destroy(&u);
    free(buf);
    return j;
}

/* --idle-timeout: a connection that does nothing is closed with unavailable (nil id); one that
 * is taking a big reply slowly, for longer than the timeout, is not idle. */
static void test_idle_timeout(void **state)
{
    int wr, rd, idle;
    char *pad = malloc(2001);
    struct timespec t0, t1;
    double took;
    json_t *j;

    (void)state;
    /* The events are loaded by a server without the timeout, then it starts again with it: with
     * --idle-timeout 1 a loaded machine took over a second between the writer's hello and its
     * first append (building the request), and the writer was closed as idle. */
    srv_start(&T, NULL);
    PORT = T.port;
    memset(pad, 'x', 2000);
    pad[2000] = '\0';
    wr = session(TOK_WRITER, NULL);
    for (int b = 0; b < 10; b++) { /* about 1 MB of events */
        char *req = NULL;
        size_t cap = 50 * 2200 + 100, n;
        req = malloc(cap);
        n = (size_t)snprintf(req, cap, "{\"id\":%d,\"op\":\"append\",\"events\":[", b);
        for (int i = 0; i < 50; i++)
            n += (size_t)snprintf(req + n, cap - n,
                                  "%s{\"type\":\"flow_registered\",\"data\":{\"flow_id\":"
                                  "\"idle-%d-%d\",\"flow_name\":\"n\",\"description\":\"%s\"}}",
                                  i ? "," : "", b, i, pad);
        snprintf(req + n, cap - n, "]}");
        send_json(wr, "%s", req);
        json_decref(expect_ok(wr, b));
        free(req);
    }
    close(wr);
    assert_int_equal(srv_stop(&T), 0);
    srv_start(&T, "--idle-timeout=1"); /* the same data directory */
    PORT = T.port;
    idle = session(TOK_READER, NULL);
    rd = session_rcvbuf(TOK_READER, NULL, 4096);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* The ping goes with the log request, not after the slow read: its answer comes after the
     * log reply, so it shows the connection was still open when the read ended, without the
     * test's own decoding of 1 MB (which took over a second on a loaded machine, and the server
     * rightly closed the connection as idle once the reply was taken) racing the timeout. */
    send_json(rd, "{\"id\":1,\"op\":\"log\"}");
    send_json(rd, "{\"id\":2,\"op\":\"ping\"}");
    j = recv_json_slow(rd, 32 * 1024, 60000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("# a %zu-event log reply read slowly over %.2f s (--idle-timeout 1)\n",
                  json_array_size(tu_get(j, "result/events")), took);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_true(took > 1.5); /* longer than the idle timeout, or the test proves nothing */
    json_decref(j);
    json_decref(expect_ok(rd, 2)); /* still open: taking replies is activity */
    /* meanwhile the connection that did nothing was closed, saying why */
    j = expect_error(idle, -1, "unavailable");
    assert_non_null(strstr(tu_str(j, "error/message"), "idle"));
    json_decref(j);
    expect_eof(idle);
    close(idle);
    close(rd);
    free(pad);
    assert_int_equal(srv_stop(&T), 0);
}

/* SIGTERM: what was received is committed and answered, then exit 0; every acknowledged event
 * is there after a restart, and every committed one was acknowledged. The client reads slowly
 * (small receive buffer, so the answers wait in the server's send queue) and keeps sending after
 * the stop: a server that closed with unread input would reset the connection and the kernel
 * would drop the answers still queued. A live subscriber gets every event committed at the
 * stop, then the end of its subscription with the seq to resume from; both connections get
 * the "id": nil notice last. */
static void test_sigterm(void **state)
{
    enum { N = 300 };
    long long acked[N], pushed = 0, last = 0;
    int nacked = 0, fd, sub, ended = 0, notices = 0, early_late = 0;
    json_t *j;

    (void)state;
    srv_start(&T, NULL);
    PORT = T.port;
    sub = session(TOK_READER, NULL);
    send_json(sub, "{\"id\":7,\"op\":\"subscribe\"}");
    json_decref(expect_ok(sub, 7));
    fd = session_rcvbuf(TOK_WRITER, NULL, 4096);
    for (int i = 0; i < N; i++)
        send_json(fd,
                  "{\"id\":%d,\"op\":\"append\",\"events\":[{\"type\":\"flow_registered\","
                  "\"data\":{\"flow_id\":\"term-%d\",\"flow_name\":\"n\",\"description\":"
                  "\"%0200d\"}}]}",
                  i, i, 0);
    kill(T.pid, SIGTERM);
    usleep(300000);
    {
        static const uint8_t late[] = {0, 0, 0, 1, 0x80};
        for (int i = 0; i < 2000; i++) /* after the stop: the server must not answer with RST */
            if (send(fd, late, sizeof late, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                break;
    }
    while ((j = recv_json(fd)) != NULL) {
        assert_int_equal(notices, 0); /* the notice comes last */
        if (json_is_true(json_object_get(j, "ok"))) {
            acked[nacked++] = tu_int(j, "result/results/0/seq");
        } else if (json_is_null(json_object_get(j, "id")) &&
                   strcmp(tu_str(j, "error/code"), "bad_request") == 0) {
            /* a late frame the server received before it acted on the signal (a loaded machine
             * took over 300 ms to get to it): it serves every whole frame received by then, and
             * answers this one, as it should */
            early_late++;
        } else {
            assert_true(json_is_null(json_object_get(j, "id")));
            assert_string_equal(tu_str(j, "error/code"), "unavailable");
            assert_non_null(strstr(tu_str(j, "error/message"), "shutting down"));
            notices++;
        }
        json_decref(j);
    }
    close(fd);
    assert_int_equal(notices, 1);
    while ((j = recv_json(sub)) != NULL) {
        assert_int_equal(notices, 1);
        if (json_object_get(j, "push")) {
            json_t *evs = tu_get(j, "result/events");
            assert_int_equal(ended, 0);
            for (size_t i = 0; i < json_array_size(evs); i++) {
                long long seq = json_integer_value(json_object_get(json_array_get(evs, i), "seq"));
                assert_int_equal(seq, last + 1); /* in order, no gap, no duplicate */
                last = seq;
                pushed++;
            }
        } else if (json_is_null(json_object_get(j, "id"))) {
            assert_int_equal(ended, 1);
            assert_string_equal(tu_str(j, "error/code"), "unavailable");
            notices++;
        } else {
            char want[64];
            assert_int_equal(tu_int(j, "id"), 7);
            assert_string_equal(tu_str(j, "error/code"), "unavailable");
            snprintf(want, sizeof want, "subscribe again from seq %lld", last + 1);
            assert_non_null(strstr(tu_str(j, "error/message"), want));
            ended++;
        }
        json_decref(j);
    }
    close(sub);
    assert_int_equal(notices, 2);
    assert_int_equal(ended, 1);
    assert_int_equal(pushed, nacked); /* every committed event reached the subscriber */
    {
        int st;
        waitpid(T.pid, &st, 0);
        T.pid = 0;
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    print_message(
        "# %d of %d pipelined appends acknowledged before exit (%d late frames came before "
        "the stop and were answered)\n",
        nacked, N, early_late);
    srv_start(&T, NULL);
    PORT = T.port;
    fd = session(TOK_READER, NULL);
    /* nothing was committed without its acknowledgement reaching the client */
    send_json(fd, "{\"id\":%d,\"op\":\"log\",\"limit\":1}", N);
    j = expect_ok(fd, N);
    assert_int_equal(tu_int(j, "result/head"), nacked);
    json_decref(j);
    for (int i = 0; i < nacked; i++) {
        send_json(fd, "{\"id\":%d,\"op\":\"log\",\"from\":%lld,\"limit\":1}", i, acked[i]);
        j = expect_ok(fd, i);
        assert_int_equal(tu_int(j, "result/events/0/seq"), acked[i]);
        json_decref(j);
    }
    close(fd);
    assert_int_equal(srv_stop(&T), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_required),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_slow_reader_after_close),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_batch_limits),
        cmocka_unit_test(test_roles_and_tenants),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_group_commit_across_connections),
        cmocka_unit_test(test_subscribe),
        cmocka_unit_test(test_slow_subscriber),
        cmocka_unit_test(test_vanishing_client),
        cmocka_unit_test_teardown(test_max_connections, teardown_own),
        cmocka_unit_test_teardown(test_idle_timeout, teardown_own),
        cmocka_unit_test_teardown(test_sigterm, teardown_own),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
