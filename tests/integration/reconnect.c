/* reconnect: one libflowlog handle kept across the real flowlogd's idle closes, a restart and
 * a stop (RECONNECTING in flowlog.h).
 *
 * usage: reconnect SERVER TOKEN   (flowlogd runs with --idle-timeout 1; TOKEN is an admin's)
 * Pauses 2 s between calls, so that the server closes the connection as idle, and checks that
 * the next call still works, on a new connection (the server's connections_total and
 * closed_idle say so), appending nothing twice. For the restart and the stop it prints
 * "# restart", "# stop" or "# start" and waits for a line on stdin: the calling script does it,
 * then answers. Prints "ok - ..." / "not ok - ..." lines (unnumbered TAP; the calling script
 * numbers them) and "# ..." notes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flowlog.h"
#include "testreq.h"

static int failures;

/* Print one unnumbered TAP line. */
static void tap(int good, const char *what)
{
    printf("%sok - %s\n", good ? "" : "not ", what);
    fflush(stdout);
    if (!good)
        failures++;
}

/* Say what went wrong on the handle. */
static void why(flc_client *c)
{
    printf("# %s: %s\n", flc_errname(c), flc_errmsg(c));
}

/* Ask the calling script to do something to the server and wait until it is done. */
static int ask(const char *what)
{
    char line[64];

    printf("# %s\n", what);
    fflush(stdout);
    return fgets(line, sizeof line, stdin) ? 0 : -1;
}

/* A counter of the server's stats, or -1. */
static long long counter(flc_client *c, const char *key)
{
    const msgpack_object *o = flc_get(flc_stats(c), key);

    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)o->via.u64 : -1;
}

/* Append one registration of flow_id (event_id NULL: none). 1 if acknowledged. */
static int register_flow(flc_client *c, const char *flow_id, const char *event_id)
{
    msgpack_sbuffer sb;
    const msgpack_object *res;

    msgpack_sbuffer_init(&sb);
    testreq_pack_registration(&sb, flow_id, "reconnect.xml", event_id);
    struct flc_event ev = {sb.data, sb.size};
    res = flc_append(c, &ev, 1);
    if (!res)
        why(c);
    msgpack_sbuffer_destroy(&sb);
    return res != NULL;
}

/* Events of flow_id in the log, or -1. */
static long long flow_events(flc_client *c, const char *flow_id)
{
    struct flc_query q = {.flow_id = flow_id};
    const msgpack_object *evs = flc_get(flc_log(c, &q), "events");

    return evs && evs->type == MSGPACK_OBJECT_ARRAY ? (long long)evs->via.array.size : -1;
}

/* Pause past the idle timeout; then what the call made after it must show: a new connection
 * (connections_total one up), the old one closed as idle (closed_idle one up). */
struct idle {
    long long conns, idle;
};

static struct idle idle_pause(flc_client *c)
{
    struct idle before = {counter(c, "connections_total"), counter(c, "closed_idle")};

    sleep(3); /* the 1 s idle timeout, with 2 s for a loaded machine to act on it */
    return before;
}

static int reconnected(flc_client *c, struct idle before)
{
    long long conns = counter(c, "connections_total"), idle = counter(c, "closed_idle");

    if (conns == before.conns + 1 && idle == before.idle + 1)
        return 1;
    printf("# connections_total %lld -> %lld, closed_idle %lld -> %lld\n", before.conns, conns,
           before.idle, idle);
    return 0;
}

int main(int argc, char **argv)
{
    struct idle before;
    flc_client *c;

    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: reconnect SERVER TOKEN [TENANT]\n");
        return 2;
    }
    c = flc_connect(argv[1], argv[2], argc > 3 ? argv[3] : NULL);
    if (!c || flc_errcode(c) != 0) {
        printf("not ok - connect: %s\n", c ? flc_errmsg(c) : "out of memory");
        flc_free(c);
        return 1;
    }
    tap(register_flow(c, "r-1", NULL), "an append on the first connection");

    before = idle_pause(c);
    tap(register_flow(c, "r-2", NULL),
        "after the idle close, an append without event_id is acknowledged");
    tap(reconnected(c, before), "... on a new connection, the old one closed as idle");
    tap(flow_events(c, "r-2") == 1, "... and appended once");

    before = idle_pause(c);
    tap(flc_state(c, "r-1") != NULL, "after the idle close, a read works");
    tap(reconnected(c, before), "... on a new connection");

    before = idle_pause(c);
    tap(register_flow(c, "r-3", "r-3"), "after the idle close, an append with an event_id works");
    tap(reconnected(c, before), "... on a new connection");

    if (ask("restart") != 0)
        return 1;
    tap(register_flow(c, "r-4", "r-4"), "after a restart of the server, an append works");
    tap(flow_events(c, "r-4") == 1 && flow_events(c, "r-1") == 1, "... and the log is as it was");

    if (ask("stop") != 0)
        return 1;
    tap(flc_ping(c) == NULL && flc_errcode(c) == FLC_ECONNECTION &&
            strstr(flc_errmsg(c), "connecting again failed") != NULL,
        "server stopped: the call fails with connection, the close and the failed connect named");
    why(c);
    if (ask("start") != 0)
        return 1;
    tap(flc_ping(c) != NULL, "server back: the next call connects");

    flc_set_reconnect(c, 0);
    sleep(3); /* the 1 s idle timeout, with 2 s for a loaded machine to act on it */
    tap(flc_ping(c) == NULL && flc_errcode(c) == FLC_EUNAVAILABLE,
        "automatic reconnect off: the idle close is reported (unavailable)");
    why(c);
    tap(flc_reconnect(c) == 0 && flc_ping(c) != NULL, "... and flc_reconnect recovers");

    flc_free(c);
    return failures ? 1 : 0;
}
