/* server.c: start-up (store, tokens, listeners, signals), the loop, and a clean shutdown. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "diag.h"
#include "util.h"
#include "wire.h"

#define SERVER_BACKLOG 511
#define SERVER_STOP_GRACE_S 10
#define SERVER_ACCEPT_RETRY_MS 500
#define SERVER_SPARE_FDS 32 /* descriptors besides connections: store, listeners, epoll, ... */

/* Answer a connection we cannot take with one error frame, without blocking, then close it. */
static void server_refuse(evutil_socket_t fd, int code, const char *msg)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct fl_error e;
    size_t off;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fl_error_clear(&e);
    fl_error_set(&e, code, "%s", msg);
    off = fl_wire_frame_begin(&sb);
    fl_wire_pack_error(&pk, -1, &e);
    if (fl_wire_frame_end(&sb, off, SIZE_MAX) == 0 &&
        send(fd, sb.data, sb.size, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        fl_debug("refused connection: %s", strerror(errno));
    msgpack_sbuffer_destroy(&sb);
    evutil_closesocket(fd);
}

/* A new client: hand it to conn, unless we are at the connection limit or shutting down. */
static void server_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg)
{
    struct server *srv = arg;

    (void)l;
    if (srv->stopping) {
        server_refuse(fd, FL_EUNAVAILABLE, "the server is shutting down; retry shortly");
        return;
    }
    if (srv->nconns >= srv->cfg->max_connections) {
        srv->conns_refused++;
        fl_warn("refusing a connection: at --max-connections (%llu)",
                (unsigned long long)srv->cfg->max_connections);
        server_refuse(fd, FL_EUNAVAILABLE,
                      "the server is at its connection limit (--max-connections); retry later");
        return;
    }
    if (conn_new(srv, fd, sa, salen) != 0)
        fl_errorf("cannot set up a connection (out of memory?)");
}

/* Re-enable accepting after a pause caused by running out of descriptors. */
static void server_accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    if (srv->stopping)
        return;
    if (srv->tcp)
        evconnlistener_enable(srv->tcp);
    if (srv->local)
        evconnlistener_enable(srv->local);
}

/* accept() failed. Out of descriptors would make the listener spin: pause it briefly. */
static void server_accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct server *srv = arg;
    struct timeval tv = {0, SERVER_ACCEPT_RETRY_MS * 1000};
    int e = EVUTIL_SOCKET_ERROR();

    fl_warn("accept failed: %s%s", evutil_socket_error_to_string(e),
            e == EMFILE || e == ENFILE ? " (raise the open-files limit, ulimit -n)" : "");
    evconnlistener_disable(l);
    if (event_add(srv->accept_retry, &tv) != 0)
        fl_errorf("cannot schedule accepting again");
}

/* Start listening on cfg->listen; records the bound port. */
static int server_listen_tcp(struct server *srv)
{
    struct addrinfo hints, *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    char host[256], port[8];
    uint16_t p;
    int rc;

    if (config_split_listen(srv->cfg->listen, host, sizeof host, &p) != 0) {
        fl_errorf("--listen %s: expected HOST:PORT", srv->cfg->listen);
        return FL_EBAD_REQUEST;
    }
    snprintf(port, sizeof port, "%u", p);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) != 0) {
        fl_errorf("--listen %s: %s", srv->cfg->listen, gai_strerror(rc));
        return FL_EBAD_REQUEST;
    }
    srv->tcp =
        evconnlistener_new_bind(srv->base, server_accept_cb, srv,
                                LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                SERVER_BACKLOG, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (!srv->tcp) {
        fl_errorf("cannot listen on %s: %s", srv->cfg->listen, strerror(errno));
        return FL_EUNAVAILABLE;
    }
    evconnlistener_set_error_cb(srv->tcp, server_accept_error_cb);
    if (getsockname(evconnlistener_get_fd(srv->tcp), (struct sockaddr *)&ss, &sslen) != 0) {
        fl_errorf("getsockname: %s", strerror(errno));
        return FL_EINTERNAL;
    }
    srv->tcp_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    fl_info("listening on %s (port %u)", srv->cfg->listen, srv->tcp_port);
    return 0;
}

/* A leftover socket file from a server that died is removed; a live one is left alone. */
static int server_unix_clear(const char *path, const struct sockaddr_un *sun)
{
    struct stat st;
    int fd, live;

    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        fl_errorf("--unix %s: exists and is not a socket; choose another path", path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    live = connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0;
    close(fd);
    if (live) {
        fl_errorf("--unix %s: another server is listening there", path);
        return -1;
    }
    if (unlink(path) != 0) {
        fl_errorf("--unix %s: cannot remove the stale socket: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int server_listen_unix(struct server *srv)
{
    const char *path = srv->cfg->unix_path;
    struct sockaddr_un sun;

    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun.sun_path) {
        fl_errorf("--unix %s: the path is longer than %zu bytes", path, sizeof sun.sun_path - 1);
        return FL_EBAD_REQUEST;
    }
    memcpy(sun.sun_path, path, strlen(path));
    if (server_unix_clear(path, &sun) != 0)
        return FL_EUNAVAILABLE;
    srv->local = evconnlistener_new_bind(srv->base, server_accept_cb, srv,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                         SERVER_BACKLOG, (struct sockaddr *)&sun, sizeof sun);
    if (!srv->local) {
        fl_errorf("cannot listen on unix:%s: %s", path, strerror(errno));
        return FL_EUNAVAILABLE;
    }
    srv->unix_bound = 1;
    evconnlistener_set_error_cb(srv->local, server_accept_error_cb);
    fl_info("listening on unix:%s", path);
    return 0;
}

/* Tell tests which port --listen HOST:0 got. Written to a temporary name and renamed, so a
 * reader polling for the file never sees it half-written. */
static int server_write_port_file(struct server *srv)
{
    const char *path = srv->cfg->port_file;
    char tmp[4096];
    FILE *f;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return FL_EBAD_REQUEST;
    if (!(f = fopen(tmp, "w"))) {
        fl_errorf("--port-file %s: %s", tmp, strerror(errno));
        return FL_EUNAVAILABLE;
    }
    fprintf(f, "%u\n", srv->tcp_port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        fl_errorf("--port-file %s: %s", path, strerror(errno));
        unlink(tmp);
        return FL_EUNAVAILABLE;
    }
    srv->port_file_written = 1;
    return 0;
}

/* Stop accepting and close every connection once what it sent has been answered. */
static void server_stop(struct server *srv)
{
    struct timeval grace = {SERVER_STOP_GRACE_S, 0};
    struct conn *c, *next;

    srv->stopping = 1;
    if (srv->tcp)
        evconnlistener_disable(srv->tcp);
    if (srv->local)
        evconnlistener_disable(srv->local);
    event_del(srv->accept_retry);
    /* Serve the requests already received (their appends join the queue) ... */
    for (c = TAILQ_FIRST(&srv->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        conn_shutdown_serve(c);
    }
    /* ... commit them now and answer (subscribers get the events too) ... */
    commit_flush(&srv->commit);
    /* ... and say goodbye; each connection goes once its output is written. */
    for (c = TAILQ_FIRST(&srv->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        conn_shutdown_close(c);
    }
    if (srv->nconns == 0)
        event_base_loopexit(srv->base, NULL);
    else if (event_add(srv->stop_timer, &grace) != 0)
        event_base_loopexit(srv->base, NULL);
}

/* SIGTERM/SIGINT (run inside the loop, so real work is safe here). A second one exits now. */
static void server_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;

    (void)what;
    if (srv->stopping) {
        fl_warn("signal %d again: exiting without waiting for clients", (int)sig);
        event_base_loopbreak(srv->base);
        return;
    }
    fl_info("signal %d: no new connections; finishing what was received", (int)sig);
    server_stop(srv);
}

/* Clients that do not take their last replies do not hold the shutdown up forever. */
static void server_stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    fl_warn("%llu connection(s) still open after %d s: closing them",
            (unsigned long long)srv->nconns, SERVER_STOP_GRACE_S);
    event_base_loopexit(srv->base, NULL);
}

/* Make the events owned by the server itself. */
static int server_events(struct server *srv)
{
    srv->sig_term = evsignal_new(srv->base, SIGTERM, server_signal_cb, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, server_signal_cb, srv);
    srv->accept_retry = evtimer_new(srv->base, server_accept_retry_cb, srv);
    srv->stop_timer = evtimer_new(srv->base, server_stop_timer_cb, srv);
    if (!srv->sig_term || !srv->sig_int || !srv->accept_retry || !srv->stop_timer ||
        event_add(srv->sig_term, NULL) != 0 || event_add(srv->sig_int, NULL) != 0) {
        fl_errorf("cannot install signal handlers");
        return FL_EINTERNAL;
    }
    return 0;
}

/* Tokens: the file given, or DIR/admin.token (made on first start). */
static int server_tokens(struct server *srv)
{
    struct fl_error err;
    int created = 0, rc;

    fl_error_clear(&err);
    if (srv->cfg->tokens_file) {
        if ((rc = auth_load_file(&srv->auth, srv->cfg->tokens_file, &err)) != 0) {
            fl_errorf("--tokens: %s", err.msg);
            return rc;
        }
        fl_info("loaded %zu token(s) from %s", srv->auth.n, srv->cfg->tokens_file);
        return 0;
    }
    if ((rc = auth_load_admin_token(&srv->auth, srv->cfg->data_dir, &created, &err)) != 0) {
        fl_errorf("%s", err.msg);
        return rc;
    }
    fl_info("%s an admin token for tenant '%s' in %s/%s (mode 0600; use it with --token, or "
            "pass --data to the flowlog CLI)",
            created ? "created" : "using", AUTH_DEFAULT_TENANT, srv->cfg->data_dir,
            AUTH_ADMIN_TOKEN_FILE);
    return 0;
}

/* One server per data directory: the store caches its head in memory, so a second writer
 * process would corrupt the log. The lock dies with the process, so a crash leaves no stale
 * lock behind; the file is never unlinked (that would race with a starting server). */
static int server_lock_dir(struct server *srv)
{
    const char *dir = srv->cfg->data_dir;
    char path[4096], pid[32] = "";
    ssize_t n;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fl_errorf("cannot create the data directory %s: %s", dir, strerror(errno));
        return FL_EUNAVAILABLE;
    }
    if ((size_t)snprintf(path, sizeof path, "%s/flowlogd.lock", dir) >= sizeof path) {
        fl_errorf("--data %s: the path is too long", dir);
        return FL_EBAD_REQUEST;
    }
    srv->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (srv->lock_fd < 0) {
        fl_errorf("cannot open %s: %s", path, strerror(errno));
        return FL_EUNAVAILABLE;
    }
    if (flock(srv->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        n = errno == EWOULDBLOCK ? pread(srv->lock_fd, pid, sizeof pid - 1, 0) : -1;
        if (n > 0)
            pid[strcspn(pid, "\n")] = '\0';
        fl_errorf("another flowlogd%s%s%s is serving %s; stop it first (%s)", n > 0 ? " (pid " : "",
                  n > 0 ? pid : "", n > 0 ? ")" : "", dir, strerror(errno));
        return FL_EUNAVAILABLE;
    }
    n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(srv->lock_fd, 0) != 0 || pwrite(srv->lock_fd, pid, (size_t)n, 0) != n)
        fl_warn("cannot record the pid in %s: %s", path, strerror(errno));
    return 0;
}

/* Every connection is a descriptor: raise the soft open-files limit to fit --max-connections
 * if the hard limit allows, else say so now rather than fail accepts later. */
static void server_fd_limit(const struct config *cfg)
{
    rlim_t want = (rlim_t)cfg->max_connections + SERVER_SPARE_FDS, old;
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        rl.rlim_cur = old;
    if (rl.rlim_cur < want)
        fl_warn("the open-files limit is %llu, too low for --max-connections %llu: accepts "
                "fail (and wait) beyond about %llu connections; raise it (ulimit -n)",
                (unsigned long long)rl.rlim_cur, (unsigned long long)cfg->max_connections,
                (unsigned long long)(rl.rlim_cur > SERVER_SPARE_FDS ? rl.rlim_cur - SERVER_SPARE_FDS
                                                                    : 0));
    else
        fl_info("raised the open-files limit from %llu to %llu for --max-connections",
                (unsigned long long)old, (unsigned long long)rl.rlim_cur);
}

/* Open the store; --sync none is announced where nobody can miss it. */
static int server_open_store(struct server *srv)
{
    struct fl_store_opts o;
    struct fl_error err;
    int rc;

    memset(&o, 0, sizeof o);
    o.dir = srv->cfg->data_dir;
    o.nosync = !srv->cfg->sync;
    if (!srv->cfg->sync) {
        fl_warn("**************************************************************");
        fl_warn("* --sync none: appends are acknowledged WITHOUT fsync.       *");
        fl_warn("* A crash or power loss can lose acknowledged events.        *");
        fl_warn("* Use this for tests and benchmarks only.                    *");
        fl_warn("**************************************************************");
    }
    fl_error_clear(&err);
    if ((rc = fl_store_open(&srv->store, &o, &err)) != 0) {
        fl_errorf("cannot open the store in %s: %s", o.dir, err.msg);
        return rc;
    }
    fl_info("store %s open: head seq %llu", o.dir, (unsigned long long)fl_store_head(srv->store));
    return 0;
}

int server_start(struct server *srv, const struct config *cfg)
{
    int rc;

    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    srv->started_us = fl_now_us();
    srv->lock_fd = -1;
    TAILQ_INIT(&srv->conns);
    TAILQ_INIT(&srv->sub_conns);
    /* libevent writes with send/writev and does not block SIGPIPE: a peer that vanished
     * must be an error return, not the death of the server. */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR || fl_hash_init() != 0) {
        fl_errorf("cannot initialise (SIGPIPE, crypto)");
        return FL_EINTERNAL;
    }
    if (cfg->port_file)
        unlink(cfg->port_file); /* a stale port must not be mistaken for ours */
    /* A tokens file is checked before anything is created; the default admin token lives
     * in the data directory, so it comes after the store made that. */
    if ((cfg->tokens_file && (rc = server_tokens(srv)) != 0) || (rc = server_lock_dir(srv)) != 0 ||
        (rc = server_open_store(srv)) != 0 || (!cfg->tokens_file && (rc = server_tokens(srv)) != 0))
        return rc;
    server_fd_limit(cfg);
    if (!(srv->base = event_base_new())) {
        fl_errorf("cannot create the event base");
        return FL_EINTERNAL;
    }
    if (commit_init(&srv->commit, srv->base, srv->store, conn_append_done, conn_after_commit,
                    srv) != 0) {
        fl_errorf("cannot set up group commit");
        return FL_EINTERNAL;
    }
    srv->commit_ready = 1;
    if (job_init(&srv->job, srv->base, srv->store, conn_job_done, srv) != 0) {
        fl_errorf("cannot set up the verify and backup thread");
        return FL_EINTERNAL;
    }
    srv->job_ready = 1;
    if (!msgpack_zone_init(&srv->zone, MSGPACK_ZONE_CHUNK_SIZE)) {
        fl_errorf("cannot allocate the request decoder's memory");
        return FL_EINTERNAL;
    }
    srv->zone_ready = 1;
    if ((rc = server_events(srv)) != 0 || (cfg->listen && (rc = server_listen_tcp(srv)) != 0) ||
        (cfg->unix_path && (rc = server_listen_unix(srv)) != 0) ||
        (cfg->port_file && cfg->listen && (rc = server_write_port_file(srv)) != 0))
        return rc;
    fl_info("flowlogd ready (pid %ld, sync %s, max frame %llu, max batch %llu, max event %llu, "
            "max connections %llu, max output %llu, hello timeout %llu s, idle timeout %llu s)",
            (long)getpid(), cfg->sync ? "full" : "NONE", (unsigned long long)cfg->max_frame,
            (unsigned long long)cfg->max_batch, (unsigned long long)cfg->max_event,
            (unsigned long long)cfg->max_connections, (unsigned long long)cfg->max_output,
            (unsigned long long)cfg->hello_timeout, (unsigned long long)cfg->idle_timeout);
    return 0;
}

int server_run(struct server *srv)
{
    if (event_base_dispatch(srv->base) < 0) {
        fl_errorf("the event loop failed");
        return FL_EINTERNAL;
    }
    /* A loopbreak (second signal) can leave appends queued: they were never acknowledged. */
    fl_info("stopped: %llu events committed in %llu commits",
            (unsigned long long)srv->commit.stats.events,
            (unsigned long long)srv->commit.stats.commits);
    return 0;
}

/* Free an event if it exists. */
static void server_event_free(struct event *ev)
{
    if (ev)
        event_free(ev);
}

void server_free(struct server *srv)
{
    struct conn *c;

    while ((c = TAILQ_FIRST(&srv->conns)) != NULL)
        conn_free(c);
    if (srv->commit_ready)
        commit_free(&srv->commit);
    if (srv->job_ready)
        job_free(&srv->job);
    if (srv->zone_ready)
        msgpack_zone_destroy(&srv->zone);
    if (srv->tcp)
        evconnlistener_free(srv->tcp);
    if (srv->local)
        evconnlistener_free(srv->local);
    if (srv->unix_bound)
        unlink(srv->cfg->unix_path);
    if (srv->port_file_written)
        unlink(srv->cfg->port_file);
    server_event_free(srv->sig_term);
    server_event_free(srv->sig_int);
    server_event_free(srv->accept_retry);
    server_event_free(srv->stop_timer);
    fl_store_close(srv->store);
    if (srv->lock_fd >= 0)
        close(srv->lock_fd); /* after the store is closed: releases the directory */
    auth_free(&srv->auth);
    if (srv->base)
        event_base_free(srv->base);
    memset(srv, 0, sizeof *srv);
    srv->lock_fd = -1;
}
