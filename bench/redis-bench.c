/* redis-bench: the migration-day workload against Redis Streams, as a durable append-only log
 * and nothing more: one XADD per event to one stream (a total order, like flowlog's log), no
 * projections, no idempotency, no validation. With `appendonly yes` and `appendfsync always`
 * Redis writes and fsyncs the AOF before it replies (its beforeSleep flush groups the writes of
 * all clients served in one event-loop pass: group commit).
 *
 * Step mode: XADD, wait for the reply. Batch mode: MULTI, one XADD per event of the unit, EXEC,
 * pipelined in one write; acknowledged when EXEC's reply arrives (the transaction is one AOF
 * write and one fsync). One thread and one blocking hiredis connection per writer. */
#include <hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchutil.h"
#include "workload.h"

static const char usage[] =
    "usage: redis-bench [--host=127.0.0.1] [--port=6379] [--stream=events] [options]\n"
    "  Runs the migration-day workload against Redis Streams (XADD per event). The server\n"
    "  must run with appendonly yes and appendfsync always (checked; --allow-nondurable skips).\n";

struct rd_cfg {
    const char *host;
    int port;
    const char *stream;
    const struct wl_params *p;
    int allow_nondurable;
};

struct rd_conn {
    redisContext *c;
    const struct rd_cfg *cfg;
    char tenants[1000][40];
    size_t want, got; /* replies the append in flight gets, and those read so far */
    int bad;          /* one of them was not what it should be (why says which) */
    char why[BU_ERR];
};

static redisContext *rd_open(const struct rd_cfg *cfg, char *err)
{
    redisContext *c = redisConnect(cfg->host, cfg->port);
    if (!c || c->err) {
        snprintf(err, BU_ERR, "connect %s:%d: %s", cfg->host, cfg->port,
                 c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    return c;
}

static void *rd_connect(void *vcfg, int w, int nwriters, char *err)
{
    struct rd_cfg *cfg = vcfg;
    (void)w;
    (void)nwriters;
    struct rd_conn *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    if (!(rc->c = rd_open(cfg, err))) {
        free(rc);
        return NULL;
    }
    rc->cfg = cfg;
    for (int t = 0; t < cfg->p->tenants && t < 1000; t++)
        wl_tenant_name(cfg->p, t, rc->tenants[t], sizeof rc->tenants[t]);
    return rc;
}

static void rd_close(void *vc)
{
    struct rd_conn *rc = vc;
    if (!rc)
        return;
    redisFree(rc->c);
    free(rc);
}

/* Queue XADD <stream> * t <tenant> type <type> id <event_id> e <packed event>. */
static int append_xadd(struct rd_conn *rc, const struct wl_batch *b, size_t i)
{
    const struct wl_event *e = &b->ev[i];
    const char *argv[11];
    size_t argl[11];
    int n = 0;
#define ARG(s, l) (argv[n] = (s), argl[n] = (l), n++)
    ARG("XADD", 4);
    ARG(rc->cfg->stream, strlen(rc->cfg->stream));
    ARG("*", 1);
    ARG("t", 1);
    ARG(rc->tenants[e->tenant], strlen(rc->tenants[e->tenant]));
    ARG("type", 4);
    ARG(wl_type_name(e->type), strlen(wl_type_name(e->type)));
    ARG("id", 2);
    ARG(e->event_id, strlen(e->event_id));
    ARG("e", 1);
    ARG(b->sb.data + b->off[i], b->len[i]);
#undef ARG
    return redisAppendCommandArgv(rc->c, n, argv, argl) == REDIS_OK ? 0 : -1;
}

/* Is reply k (of want) of an append of n events what it should be? A lone XADD answers with
 * the entry's id; MULTI with +OK, each queued XADD with +QUEUED, EXEC with the n ids. */
static int reply_ok(const redisReply *r, size_t k, size_t want, size_t n)
{
    if (want == 1)
        return r->type == REDIS_REPLY_STRING;
    if (k + 1 < want)
        return r->type == REDIS_REPLY_STATUS;
    return r->type == REDIS_REPLY_ARRAY && r->elements == n;
}

static int rd_send(void *vc, const struct wl_batch *b, size_t from, size_t to, char *err)
{
    struct rd_conn *rc = vc;
    int done = 0;

    rc->got = 0;
    rc->bad = 0;
    rc->want = to - from == 1 ? 1 : to - from + 2;
    if (to - from == 1) {
        if (append_xadd(rc, b, from) != 0)
            return snprintf(err, BU_ERR, "append: %s", rc->c->errstr), -1;
    } else {
        if (redisAppendCommand(rc->c, "MULTI") != REDIS_OK)
            return snprintf(err, BU_ERR, "append: %s", rc->c->errstr), -1;
        for (size_t i = from; i < to; i++)
            if (append_xadd(rc, b, i) != 0)
                return snprintf(err, BU_ERR, "append: %s", rc->c->errstr), -1;
        if (redisAppendCommand(rc->c, "EXEC") != REDIS_OK)
            return snprintf(err, BU_ERR, "append: %s", rc->c->errstr), -1;
    }
    while (!done) /* a blocking socket: each call writes what it can */
        if (redisBufferWrite(rc->c, &done) != REDIS_OK)
            return snprintf(err, BU_ERR, "send: %s", rc->c->errstr), -1;
    return 0;
}

static int rd_fd(void *vc)
{
    return ((struct rd_conn *)vc)->c->fd;
}

static int rd_recv(void *vc, const struct wl_batch *b, size_t from, size_t to, char *err)
{
    struct rd_conn *rc = vc;
    (void)b;

    if (redisBufferRead(rc->c) != REDIS_OK)
        return snprintf(err, BU_ERR, "connection: %s", rc->c->errstr), -1;
    while (rc->got < rc->want) {
        redisReply *r = NULL;
        if (redisGetReplyFromReader(rc->c, (void **)&r) != REDIS_OK)
            return snprintf(err, BU_ERR, "connection: %s", rc->c->errstr), -1;
        if (!r)
            return 0; /* the rest has not come yet */
        if (!reply_ok(r, rc->got, rc->want, to - from) && !rc->bad) {
            rc->bad = 1;
            snprintf(rc->why, sizeof rc->why, "unexpected reply (type %d): %s", r->type,
                     r->type == REDIS_REPLY_ERROR ? r->str : "");
        }
        rc->got++;
        freeReplyObject(r);
    }
    if (rc->bad)
        return snprintf(err, BU_ERR, "%s", rc->why), -1;
    return 1;
}

/* One command's reply, or NULL with err. */
static redisReply *cmd(redisContext *c, char *err, const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(c, fmt, arg);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, BU_ERR, "%s: %s", fmt, r ? r->str : c->errstr);
        if (r)
            freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* The server's own account of its CPU time (INFO cpu: used_cpu_sys + used_cpu_user, all its
 * threads), read over a connection of its own. */
static double rd_server_cpu(void *vcfg)
{
    char err[BU_ERR];
    redisContext *c = rd_open(vcfg, err);
    redisReply *r;
    double sys = -1, user = -1;

    if (!c)
        return -1;
    r = redisCommand(c, "INFO cpu");
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "used_cpu_sys:"), *q = strstr(r->str, "used_cpu_user:");
        if (p && q) {
            sys = strtod(p + strlen("used_cpu_sys:"), NULL);
            user = strtod(q + strlen("used_cpu_user:"), NULL);
        }
    }
    freeReplyObject(r);
    redisFree(c);
    return sys >= 0 && user >= 0 ? sys + user : -1;
}

static int rd_reset(void *vcfg, const struct wl_params *p, char *err)
{
    struct rd_cfg *cfg = vcfg;
    (void)p;
    redisContext *c = rd_open(cfg, err);
    if (!c)
        return -1;
    redisReply *r = cmd(c, err, "DEL %s", cfg->stream);
    if (r)
        freeReplyObject(r);
    /* rewrite the AOF so that every run starts with a small one */
    redisReply *r2 = r ? cmd(c, err, "BGREWRITEAOF", NULL) : NULL;
    if (r2)
        freeReplyObject(r2);
    /* wait for the rewrite to finish (bounded: 30 s) */
    for (int i = 0; r2 && i < 3000; i++) {
        redisReply *info = cmd(c, err, "INFO persistence", NULL);
        int busy = info && info->type == REDIS_REPLY_STRING &&
                   (strstr(info->str, "aof_rewrite_in_progress:1") ||
                    strstr(info->str, "aof_rewrite_scheduled:1"));
        if (info)
            freeReplyObject(info);
        if (!busy)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    redisFree(c);
    return r ? 0 : -1;
}

static int rd_verify(void *vcfg, const struct wl_params *p, int nwriters, char *err)
{
    struct rd_cfg *cfg = vcfg;
    (void)nwriters;
    redisContext *c = rd_open(cfg, err);
    if (!c)
        return -1;
    redisReply *r = cmd(c, err, "XLEN %s", cfg->stream);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_INTEGER) {
        if ((uint64_t)r->integer == wl_total_events(p))
            rc = 0;
        else
            snprintf(err, BU_ERR, "XLEN %lld, want %" PRIu64, r->integer, wl_total_events(p));
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

static int extra_opt(const char *name, const char *val, void *ctx)
{
    struct rd_cfg *cfg = ctx;
    if (strcmp(name, "host") == 0)
        return (cfg->host = val), 1;
    if (strcmp(name, "port") == 0)
        return (cfg->port = atoi(val)) > 0 ? 1 : -1;
    if (strcmp(name, "stream") == 0)
        return (cfg->stream = val)[0] ? 1 : -1;
    if (strcmp(name, "allow-nondurable") == 0)
        return (cfg->allow_nondurable = 1);
    return 0;
}

/* CONFIG GET name into out (empty if unknown). */
static void config_get(redisContext *c, const char *name, char *out, size_t cap)
{
    redisReply *r = redisCommand(c, "CONFIG GET %s", name);
    out[0] = '\0';
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        snprintf(out, cap, "%s", r->element[1]->str);
    if (r)
        freeReplyObject(r);
}

int main(int argc, char **argv)
{
    struct rd_cfg cfg = {"127.0.0.1", 6379, "events", NULL, 0};
    struct bu_opts o;
    char err[BU_ERR], aof[32], fsync[32], ver[64] = "";
    bu_opts_default(&o);
    bu_parse_args(&o, argc, argv, usage, extra_opt, &cfg);
    cfg.p = &o.wl;
    redisContext *c = rd_open(&cfg, err);
    if (!c) {
        fprintf(stderr, "redis-bench: %s\n", err);
        return 1;
    }
    config_get(c, "appendonly", aof, sizeof aof);
    config_get(c, "appendfsync", fsync, sizeof fsync);
    redisReply *r = redisCommand(c, "INFO server");
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *v = strstr(r->str, "redis_version:");
        if (v)
            sscanf(v + 14, "%63[^\r\n]", ver);
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    if (!o.quiet)
        fprintf(stderr, "redis-bench: redis %s; appendonly=%s appendfsync=%s\n", ver, aof, fsync);
    if ((strcmp(aof, "yes") != 0 || strcmp(fsync, "always") != 0) && !cfg.allow_nondurable) {
        fprintf(stderr, "redis-bench: refusing to run: the server is not durable per append "
                        "(needs appendonly yes, appendfsync always)\n");
        return 1;
    }
    struct bu_driver d = {"redis",  rd_connect, rd_send,  rd_fd,         rd_recv,
                          rd_close, rd_reset,   rd_verify, NULL,          rd_server_cpu};
    return bu_matrix(&d, &cfg, &o);
}
