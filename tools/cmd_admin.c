/* cmd_admin.c: flowlog rollback, verify, stats, backup, rebuild and ping. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* ---- rollback, verify, stats, ping ---- */

struct rbopts {
    uint64_t to_seq;
    int has_seq;
    const char *reason, *event_id;
};

/* Options of rollback. */
static int rollback_opt(void *st, int ch, const char *arg)
{
    struct rbopts *o = st;

    switch (ch) {
    case OPT_TO_SEQ: o->has_seq = 1; return parse_u64(arg, &o->to_seq);
    case OPT_REASON: o->reason = arg; return 0;
    case OPT_EVENT_ID: o->event_id = arg; return 0;
    default: return -1;
    }
}

/* flowlog rollback FLOW_ID --to-seq S --reason TEXT [--event-id ID] */
int cmd_rollback(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"to-seq", required_argument, NULL, OPT_TO_SEQ},
                                        {"reason", required_argument, NULL, OPT_REASON},
                                        {"event-id", required_argument, NULL, OPT_EVENT_ID}};
    struct rbopts o = {0, 0, NULL, NULL};
    const msgpack_object *res;
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("rollback"), argc, argv, own, 3, rollback_opt, &o,
                        &nargs)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 1 || !o.has_seq || !o.reason)
        return usage_err(x, "rollback needs FLOW_ID, --to-seq S and --reason TEXT");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    res = flc_rollback(x->c, argv[1], o.to_seq, o.reason, o.event_id);
    return res ? put_acks(x, res) : client_err(x);
}

/* A verify report for people. */
static void put_verify_human(json_t *v)
{
    json_t *problems = json_object_get(v, "problems");
    size_t i;
    json_t *p;

    const char *scope = json_string_value(json_object_get(v, "scope"));

    printf("verify: %s: %" JSON_INTEGER_FORMAT " %sevents, head seq %" JSON_INTEGER_FORMAT
           ", head hash %s\n",
           json_is_true(json_object_get(v, "ok")) ? "OK" : "PROBLEMS FOUND",
           json_integer_value(json_object_get(v, "events")),
           scope && strcmp(scope, "tenant") == 0 ? "of this tenant's " : "",
           json_integer_value(json_object_get(v, "head_seq")),
           json_string_value(json_object_get(v, "head_hash"))
               ? json_string_value(json_object_get(v, "head_hash"))
               : "-");
    json_array_foreach(problems, i, p) printf("  - %s\n", json_string_value(p));
}

/* flowlog verify: exits 1 when the server reports problems. */
int cmd_verify(struct ctx *x, int argc, char **argv)
{
    const msgpack_object *res, *ok;
    int rc;

    if ((rc = simple_cmd(x, "verify", argc, argv)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (!(res = flc_verify(x->c)))
        return client_err(x);
    if ((rc = put_result(x, res, put_verify_human)) != EX_OK)
        return rc;
    ok = flc_get(res, "ok");
    return ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean ? EX_OK : EX_SERVER;
}

/* stats for people: one counter a line. */
static void put_stats_human(json_t *s)
{
    put_fields(s, "");
}

/* A command without arguments: connect, make one call, print its answer (put for people). */
static int call_cmd(struct ctx *x, const char *name, int argc, char **argv,
                    const msgpack_object *(*call)(flc_client *), void (*put)(json_t *))
{
    const msgpack_object *res;
    int rc;

    if ((rc = simple_cmd(x, name, argc, argv)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    res = call(x->c);
    return res ? put_result(x, res, put) : client_err(x);
}

/* flowlog stats */
int cmd_stats(struct ctx *x, int argc, char **argv)
{
    return call_cmd(x, "stats", argc, argv, flc_stats, put_stats_human);
}

/* A rebuild for people. */
static void put_rebuild_human(json_t *b)
{
    json_int_t ev = json_integer_value(json_object_get(b, "events"));
    json_int_t us = json_integer_value(json_object_get(b, "micros"));

    printf("rebuild: %" JSON_INTEGER_FORMAT
           " events in %.3f s (%.0f events/s), head seq %" JSON_INTEGER_FORMAT "\n",
           ev, (double)us / 1e6, us > 0 ? (double)ev * 1e6 / (double)us : 0.0,
           json_integer_value(json_object_get(b, "head_seq")));
}

/* flowlog rebuild */
int cmd_rebuild(struct ctx *x, int argc, char **argv)
{
    return call_cmd(x, "rebuild", argc, argv, flc_rebuild, put_rebuild_human);
}

/* A backup for people. */
static void put_backup_human(json_t *b)
{
    printf("backup %s: seq 1..%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
           " bytes, on the server at %s\n",
           json_string_value(json_object_get(b, "name")),
           json_integer_value(json_object_get(b, "head_seq")),
           json_integer_value(json_object_get(b, "bytes")),
           json_string_value(json_object_get(b, "path")));
}

/* flowlog backup [NAME] */
int cmd_backup(struct ctx *x, int argc, char **argv)
{
    const msgpack_object *res;
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("backup"), argc, argv, NULL, 0, no_opt, NULL, &nargs)) !=
        EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs > 1)
        return usage_err(x, "backup takes at most one NAME");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    res = flc_backup(x->c, nargs == 1 ? argv[1] : NULL);
    return res ? put_result(x, res, put_backup_human) : client_err(x);
}

/* Monotonic microseconds, for ping's round trip. */
static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* flowlog ping: who the server says we are, and one round trip. */
int cmd_ping(struct ctx *x, int argc, char **argv)
{
    const char *tenant;
    int64_t t0;
    int rc;

    if ((rc = simple_cmd(x, "ping", argc, argv)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    t0 = mono_us();
    if (!flc_ping(x->c))
        return client_err(x);
    t0 = mono_us() - t0;
    tenant = flc_tenant(x->c);
    if (x->json) {
        /* An operator that named no tenant has none: null, as in the hello reply. */
        json_t *j = json_pack("{s:b,s:s,s:o,s:s,s:I}", "ok", 1, "server", flc_server_name(x->c),
                              "tenant", *tenant ? json_string(tenant) : json_null(), "role",
                              flc_role(x->c), "rtt_us", (json_int_t)t0);
        put_json(j);
        json_decref(j);
    } else {
        printf("pong from %s (tenant %s, role %s) in %.3f ms\n", flc_server_name(x->c),
               *tenant ? tenant : "none: an operator acting for no tenant", flc_role(x->c),
               (double)t0 / 1000.0);
    }
    return EX_OK;
}
