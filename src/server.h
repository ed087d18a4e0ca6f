/* server.h: the one server context, passed explicitly everywhere (there are no other globals
 * except the diagnostics level): the event base, the store, the tokens, the listeners, the
 * group-commit queue and the connections. */
#ifndef FL_SERVER_H
#define FL_SERVER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <stdint.h>
#include <sys/queue.h>

#include "auth.h"
#include "commit.h"
#include "job.h"
#include "config.h"
#include "store.h"

struct conn;
TAILQ_HEAD(conn_list, conn);

struct server {
    const struct config *cfg;
    struct event_base *base;
    struct fl_store *store;
    struct auth auth;
    struct commit commit;
    int commit_ready; /* commit_init succeeded */
    struct job job;   /* verify and backup, on a thread of their own */
    int job_ready;
    /* The decoded objects of the request being served: the loop serves one frame at a time,
     * and nothing it hands on borrows from them (conn.h, conn_req), so one zone cleared after
     * each frame does for every connection. */
    msgpack_zone zone;
    int zone_ready;
    struct evconnlistener *tcp;
    struct evconnlistener *local; /* the Unix socket */
    int unix_bound;               /* we created cfg->unix_path: unlink it at exit */
    int port_file_written;
    int lock_fd;       /* flock'ed DIR/flowlogd.lock; -1 if none */
    uint16_t tcp_port; /* the bound port (useful with --listen HOST:0) */
    struct event *sig_term, *sig_int, *accept_retry, *stop_timer;
    struct conn_list conns;     /* every open connection */
    struct conn_list sub_conns; /* connections with at least one subscription */
    uint64_t nconns;
    uint64_t nsubs;
    uint64_t conns_total;
    uint64_t conns_refused;
    uint64_t sub_pauses;           /* times a subscription waited for its output to drain */
    uint64_t closed_hello_timeout; /* connections closed for sending no hello in time */
    uint64_t closed_idle;          /* ... for being idle (--idle-timeout) */
    uint64_t closed_not_reading;   /* ... for not reading their replies */
    uint64_t next_conn_id;
    int64_t started_us;
    int stopping;
};

/* Open the store and tokens, bind the listeners, install the signal handlers and write the port
 * file. Returns 0, or a negative fl_err after logging what went wrong; call server_free either
 * way. */
int server_start(struct server *srv, const struct config *cfg);
/* Run the event loop until shut down by SIGTERM/SIGINT. Returns 0 or a negative fl_err. */
int server_run(struct server *srv);
/* Close everything server_start opened; accepts a partly started server. */
void server_free(struct server *srv);

#endif
