/* cmd_read.c: the reading commands of flowlog: log (and --follow), timeline, state, history,
 * table. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "util.h"

/* ---- events ---- */

/* A JSON event read back (log, timeline, pushes) in the contract's key order. */
static json_t *event_json(struct ctx *x, const msgpack_object *ev, enum fjson_time tf)
{
    static const char *const keys[] = {"seq", "ts", "type", "event_id", "data"};
    json_t *out = json_object();

    for (size_t i = 0; out && i < 5; i++) {
        const msgpack_object *v = flc_get(ev, keys[i]);
        json_t *j = v ? to_json(x, v, tf) : json_null();
        if (!j || json_object_set_new(out, keys[i], j) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* One event as a line for people: seq, time, type, subject, event id, data. */
static void put_event_human(json_t *ev)
{
    json_t *data = json_object_get(ev, "data");
    json_t *run = json_object_get(data, "run_id");
    char *subject = cli_text(json_is_string(run) ? run : json_object_get(data, "flow_id"));
    char *d = json_dumps(data, JSON_COMPACT);

    printf("%8" JSON_INTEGER_FORMAT "  %s  %-17s %-28s %s\n",
           json_integer_value(json_object_get(ev, "seq")),
           json_string_value(json_object_get(ev, "ts")) ? json_string_value(json_object_get(ev, "ts")) : "-",
           json_string_value(json_object_get(ev, "type")) ? json_string_value(json_object_get(ev, "type")) : "?",
           subject ? subject : "-", d ? d : "{}");
    free(subject);
    free(d);
}

/* Print the events array of a page or a push; counts them in *n, stops at limit (0: none). */
static int put_events(struct ctx *x, const msgpack_object *page, uint64_t *n, uint64_t limit)
{
    const msgpack_object *evs = flc_get(page, "events");

    if (!evs || evs->type != MSGPACK_OBJECT_ARRAY)
        return report(x, EX_CONNECT, "protocol", "a page without \"events\"", -1, -1);
    for (uint32_t i = 0; i < evs->via.array.size && (!limit || *n < limit); i++) {
        json_t *j = event_json(x, &evs->via.array.ptr[i],
                               x->json ? FJSON_TIME_RFC3339 : FJSON_TIME_HUMAN);
        if (!j)
            return EX_CONNECT;
        if (x->json)
            put_json(j);
        else
            put_event_human(j);
        json_decref(j);
        (*n)++;
    }
    fflush(stdout);
    return EX_OK;
}

/* An unsigned field of a result, or fail. */
static int get_u64(const msgpack_object *m, const char *key, uint64_t *v)
{
    const msgpack_object *o = flc_get(m, key);

    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *v = o->via.u64;
    return 0;
}

/* Read pages of log or timeline until the head (or limit) is reached. */
static int page_events(struct ctx *x, struct flc_query *q, int timeline)
{
    uint64_t n = 0, limit = q->limit, next, head;
    int rc;

    for (;;) {
        q->limit = limit ? limit - n : 0;
        const msgpack_object *page = timeline ? flc_timeline(x->c, q) : flc_log(x->c, q);
        if (!page)
            return client_err(x);
        if ((rc = put_events(x, page, &n, limit)) != EX_OK)
            return rc;
        if (get_u64(page, "next", &next) || get_u64(page, "head", &head))
            return report(x, EX_CONNECT, "protocol", "a page without next/head", -1, -1);
        if (next > head || (limit && n >= limit))
            return EX_OK;
        if (next <= q->from)
            return report(x, EX_CONNECT, "protocol", "the server's page did not advance", -1, -1);
        q->from = next;
    }
}

/* ---- log, timeline ---- */

struct logopts {
    struct flc_query q;
    int follow;
};

/* Options of log and timeline. */
static int log_opt(void *st, int ch, const char *arg)
{
    struct logopts *o = st;

    /* --from 0 is the start of the log, as 1 is; --limit 0 is no limit (the protocol's). */
    switch (ch) {
    case OPT_FROM:
        return parse_u64(arg, &o->q.from);
    case OPT_LIMIT:
        return parse_u64(arg, &o->q.limit);
    case OPT_TYPE: o->q.type = arg; return 0;
    case OPT_FLOW: o->q.flow_id = arg; return 0;
    case OPT_RUN: o->q.run_id = arg; return 0;
    case OPT_FOLLOW: o->follow = 1; return 0;
    default: return -1;
    }
}

static const struct option log_own[] = {
    {"from", required_argument, NULL, OPT_FROM}, {"limit", required_argument, NULL, OPT_LIMIT},
    {"type", required_argument, NULL, OPT_TYPE}, {"flow", required_argument, NULL, OPT_FLOW},
    {"run", required_argument, NULL, OPT_RUN},   {"follow", no_argument, NULL, OPT_FOLLOW},
};

/* log --follow: subscribe, then print pushes as they come (until --limit events). */
static int follow(struct ctx *x, struct logopts *o)
{
    uint64_t n = 0;
    int rc;

    if (flc_subscribe(x->c, &o->q) != 0)
        return client_err(x);
    for (;;) {
        const msgpack_object *push = flc_sub_next(x->c, -1);
        if (!push)
            return client_err(x);
        if ((rc = put_events(x, push, &n, o->q.limit)) != EX_OK)
            return rc;
        if (o->q.limit && n >= o->q.limit)
            return flc_unsubscribe(x->c) == 0 ? EX_OK : client_err(x);
    }
}

/* flowlog log [--from SEQ] [--limit N] [--type T] [--flow F] [--run R] [--follow] */
int cmd_log(struct ctx *x, int argc, char **argv)
{
    struct logopts o = {{0}, 0};
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("log"), argc, argv, log_own, 6, log_opt, &o, &nargs)) !=
        EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 0)
        return usage_err(x, "log takes no arguments");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    if (!x->json && !o.follow)
        printf("%8s  %-26s  %-17s %-28s %s\n", "SEQ", "TIME (UTC)", "TYPE", "RUN/FLOW", "DATA");
    return o.follow ? follow(x, &o) : page_events(x, &o.q, 0);
}

/* flowlog timeline (--run R | --flow F) [--from SEQ] [--limit N] */
int cmd_timeline(struct ctx *x, int argc, char **argv)
{
    struct logopts o = {{0}, 0};
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("timeline"), argc, argv, log_own, 5, log_opt, &o,
                        &nargs)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 0 || o.q.type || !o.q.run_id == !o.q.flow_id)
        return usage_err(x, "timeline needs exactly one of --run R or --flow F");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    if (!x->json)
        printf("%8s  %-26s  %-17s %-28s %s\n", "SEQ", "TIME (UTC)", "TYPE", "RUN/FLOW", "DATA");
    return page_events(x, &o.q, 1);
}

/* ---- state, history ---- */

struct stateopts {
    uint64_t seq;
    const char *time;
    int has_seq;
};

/* Options of state. */
static int state_opt(void *st, int ch, const char *arg)
{
    struct stateopts *o = st;

    if (ch == OPT_ASOF_SEQ) {
        o->has_seq = 1;
        return parse_u64(arg, &o->seq);
    }
    if (ch == OPT_ASOF_TIME) {
        o->time = arg;
        return 0;
    }
    return -1;
}

static const char *const state_tables[] = {
    "migration_runs",         "migration_iterations",   "migration_patches",
    "migration_sast_results", "migration_exec_results", "migration_human_requests",
};

/* A state for people: the flow's fields, then each table, then the attempts. */
static void put_state_human(json_t *st)
{
    static const char *const hist_cols[] = {"attempt_number", "attempt_id", "status",
                                            "started_at", "completed_at", "duration_seconds",
                                            "iterations", "generated_notebooks"};
    json_t *flows = json_object_get(st, "migration_flows");
    char *id = cli_text(json_object_get(st, "flow_id"));

    printf("flow %s  as of seq %" JSON_INTEGER_FORMAT "  version %" JSON_INTEGER_FORMAT "\n",
           id ? id : "?", json_integer_value(json_object_get(st, "as_of_seq")),
           json_integer_value(json_object_get(st, "version")));
    free(id);
    printf("\nmigration_flows\n");
    if (json_array_size(flows) == 0)
        printf("  (no rows)\n");
    for (size_t i = 0; i < json_array_size(flows); i++)
        put_fields(json_array_get(flows, i), "  ");
    for (size_t i = 0; i < sizeof state_tables / sizeof state_tables[0]; i++) {
        printf("\n%s\n", state_tables[i]);
        put_table(json_object_get(st, state_tables[i]), NULL, 0, "  ");
    }
    printf("\nattempt_history\n");
    put_table(json_object_get(st, "attempt_history"), hist_cols, 8, "  ");
}

/* flowlog state FLOW_ID [--as-of-seq S | --as-of-time T] */
int cmd_state(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"as-of-seq", required_argument, NULL, OPT_ASOF_SEQ},
                                        {"as-of-time", required_argument, NULL, OPT_ASOF_TIME}};
    struct stateopts o = {0, NULL, 0};
    const msgpack_object *res;
    int64_t us = 0;
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("state"), argc, argv, own, 2, state_opt, &o, &nargs)) !=
        EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 1)
        return usage_err(x, "state needs one FLOW_ID");
    if (o.has_seq && o.time)
        return usage_err(x, "give --as-of-seq or --as-of-time, not both");
    if (o.time && fl_time_parse(o.time, &us) != 0)
        return usage_err(x, "--as-of-time '%s' is not an RFC 3339 time "
                            "(e.g. 2026-11-21T22:39:03.123456Z)", o.time);
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    if (o.has_seq)
        res = flc_state_at_seq(x->c, argv[1], o.seq);
    else if (o.time)
        res = flc_state_at_time(x->c, argv[1], us);
    else
        res = flc_state(x->c, argv[1]);
    return res ? put_result(x, res, put_state_human) : client_err(x);
}

/* Options of history. */
static int history_opt(void *st, int ch, const char *arg)
{
    uint64_t v;

    /* As the protocol has it: 0 is the default (20). A flow has fewer attempts than a u32
     * counts, so a larger limit is all of them. */
    if (ch != OPT_LIMIT || parse_u64(arg, &v) != 0)
        return -1;
    *(uint32_t *)st = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    return 0;
}

/* A history for people. */
static void put_history_human(json_t *h)
{
    static const char *const cols[] = {"attempt_number",   "attempt_id", "status",
                                       "started_at",       "completed_at",
                                       "duration_seconds", "iterations", "generated_notebooks",
                                       "error_message"};
    char *id = cli_text(json_object_get(h, "flow_id"));

    printf("flow %s: %" JSON_INTEGER_FORMAT " attempt(s)\n", id ? id : "?",
           json_integer_value(json_object_get(h, "count")));
    free(id);
    put_table(json_object_get(h, "history"), cols, 9, "  ");
}

/* flowlog history FLOW_ID [--limit N] */
int cmd_history(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"limit", required_argument, NULL, OPT_LIMIT}};
    uint32_t limit = 0;
    const msgpack_object *res;
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("history"), argc, argv, own, 1, history_opt, &limit,
                        &nargs)) != EX_OK)
        return rc < 0 ? EX_OK : rc;
    if (nargs != 1)
        return usage_err(x, "history needs one FLOW_ID");
    if ((rc = connect_ctx(x)) != EX_OK)
        return rc;
    res = flc_history(x->c, argv[1], limit);
    return res ? put_result(x, res, put_history_human) : client_err(x);
}

/* ---- table ---- */

struct tableopts {
    char *column, *value;
    uint64_t limit;
};

/* Options of table. */
static int table_opt(void *st, int ch, const char *arg)
{
    struct tableopts *o = st;
    const char *eq;

    if (ch == OPT_LIMIT) /* 0: no limit */
        return parse_u64(arg, &o->limit);
    if (ch != OPT_WHERE || !(eq = strchr(arg, '=')) || eq == arg)
        return -1;
    free(o->column);
    o->column = strndup(arg, (size_t)(eq - arg));
    o->value = (char *)eq + 1;
    return o->column ? 0 : -1;
}

/* Print one page's rows; people get an aligned table per page. */
static int put_rows(struct ctx *x, const msgpack_object *rows, uint64_t *n, uint64_t limit)
{
    json_t *all = to_json(x, rows, x->json ? FJSON_TIME_RFC3339 : FJSON_TIME_HUMAN);
    size_t i;
    json_t *row;

    if (!all)
        return EX_CONNECT;
    while (limit && json_array_size(all) > limit - *n)
        json_array_remove(all, json_array_size(all) - 1);
    if (x->json) {
        json_array_foreach(all, i, row) put_json(row);
    } else {
        put_table(all, NULL, 0, "");
    }
    *n += json_array_size(all);
    json_decref(all);
    return EX_OK;
}

/* Page through a table read, following "next". */
static int page_table(struct ctx *x, struct flc_table_query *q, uint64_t limit)
{
    uint64_t n = 0;
    void *after = NULL;
    int rc = EX_OK;

    for (;;) {
        const msgpack_object *res = flc_table(x->c, q), *rows, *next;
        if (!res) {
            rc = client_err(x);
            break;
        }
        rows = flc_get(res, "rows");
        next = flc_get(res, "next");
        if (!rows || rows->type != MSGPACK_OBJECT_ARRAY || !next) {
            rc = report(x, EX_CONNECT, "protocol", "a table page without rows/next", -1, -1);
            break;
        }
        if ((rc = put_rows(x, rows, &n, limit)) != EX_OK)
            break;
        if (next->type != MSGPACK_OBJECT_BIN || (limit && n >= limit))
            break;
        free(after);
        if (!(after = malloc(next->via.bin.size ? next->via.bin.size : 1))) {
            rc = report(x, EX_SERVER, "nomem", "out of memory", -1, -1);
            break;
        }
        if (next->via.bin.size)
            memcpy(after, next->via.bin.ptr, next->via.bin.size);
        q->after = after;
        q->after_len = next->via.bin.size;
    }
    free(after);
    return rc;
}

/* flowlog table NAME [--where COLUMN=VALUE] [--limit N] */
int cmd_table(struct ctx *x, int argc, char **argv)
{
    static const struct option own[] = {{"where", required_argument, NULL, OPT_WHERE},
                                        {"limit", required_argument, NULL, OPT_LIMIT}};
    struct tableopts o = {NULL, NULL, 0};
    struct flc_table_query q = {0};
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd("table"), argc, argv, own, 2, table_opt, &o, &nargs)) !=
        EX_OK) {
        free(o.column);
        return rc < 0 ? EX_OK : rc;
    }
    if (nargs != 1)
        rc = usage_err(x, "table needs one NAME (e.g. migration_runs)");
    else if ((rc = connect_ctx(x)) == EX_OK) {
        q.table = argv[1];
        q.column = o.column;
        q.value = o.value;
        rc = page_table(x, &q, o.limit);
    }
    free(o.column);
    return rc;
}
