/* flowlog-bench: the migration-day workload against flowlogd, through libflowlog.
 *
 * Two ways to run:
 *   --flowlogd=PATH   start a fresh flowlogd for every run (data in a new temp directory, port 0
 *                     and --port-file, --sync full, a generated operator token), stop it by its
 *                     pid with SIGTERM afterwards: every run starts empty, as PostgreSQL's and
 *                     Redis's do (their tables/streams are emptied between runs);
 *   --server=HOST:PORT --token=TOKEN   an already running server and an operator token (tenant
 *                     "*"); every run then uses its own seed, so its flows are new.
 The writers are driven by one event loop (benchutil.h), each with one append in flight; each
 * writer opens one connection per tenant it writes for (with the default 4 tenants and 16 or 64
 * writers, exactly one) and appends in step mode (one event, wait for its acknowledgement) or
 * batch mode (one unit as one atomic append), through libflowlog's pipelining calls
 * (flc_append_send, flc_reply_next). An acknowledgement means durable under --sync full.
 *
 * --verify reads every flow's state afterwards (version, status, counters, row counts per table,
 * attempt history) and runs the server's verify (checksums, chain, projections = rebuild). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "flowlog.h"
#include "workload.h"

static const char usage[] =
    "usage: flowlog-bench (--flowlogd=PATH [--sync=full] | --server=HOST:PORT --token=TOKEN)\n"
    "                     [--data-parent=DIR] [--keep] [options]\n"
    "  Runs the migration-day workload against flowlogd through libflowlog.\n"
    "  --flowlogd=PATH     start a fresh server per run (temp data dir, ephemeral port)\n"
    "  --sync=full|none    the spawned server's sync mode [full]; none is NOT durable\n"
    "  --server=ADDR       use a running server instead (env FLOWLOG_SERVER)\n"
    "  --token=TOKEN       operator token (tenant *) for --server (env FLOWLOG_TOKEN)\n"
    "  --data-parent=DIR   where the spawned servers' temp directories go [$TMPDIR or /tmp]\n"
    "  --keep              keep the spawned servers' directories (logs, data)\n"
    "  --reads=N           after the runs, N rounds of reads over the wire on the last run's\n"
    "                      data: state now, state as of a seq, timeline of a run, history [200];\n"
    "                      then one rebuild of the projections (the server's rebuild op)\n"
    "  --subscribers=N     then one more run (step mode, --sub-conns writers [16]) with N live\n"
    "                      subscribers: time from an append's ack to its delivery [0: skip]\n";

struct fb_cfg {
    const char *flowlogd, *server, *token, *sync, *data_parent;
    int keep;
    const struct wl_params *p;
    /* the spawned server */
    pid_t pid;
    char *dir;
    char addr[64];
    char optoken[65];
    /* subscription test: when acks is set, each acknowledged seq's time goes to acks[seq] */
    int subscribers, sub_conns, reads;
    _Atomic uint64_t *acks;
    uint64_t nacks;
};

struct fb_conn {
    struct fb_cfg *cfg;
    flc_client **c; /* per tenant, opened on first use */
    char tenant[40];
    int inflight; /* the tenant whose handle has the append in flight */
};

/* ---- the spawned server ---- */

/* The spawned server's CPU time; unknown for a server given with --server. */
static double fb_server_cpu(void *vcfg)
{
    const struct fb_cfg *cfg = vcfg;
    return cfg->pid > 0 ? bu_proc_cpu_seconds((int)cfg->pid) : -1;
}

static int stop_server(struct fb_cfg *cfg, char *err)
{
    int rc = 0;
    if (cfg->pid > 0) {
        int st = 0;
        kill(cfg->pid, SIGTERM);
        /* bounded: 30 s for a clean exit, then SIGKILL */
        for (int i = 0; i < 3000; i++) {
            pid_t w = waitpid(cfg->pid, &st, WNOHANG);
            if (w == cfg->pid)
                break;
            if (i == 2999) {
                kill(cfg->pid, SIGKILL);
                waitpid(cfg->pid, &st, 0);
                if (err)
                    snprintf(err, BU_ERR, "flowlogd did not stop within 30 s of SIGTERM");
                rc = -1;
            }
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (rc == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            if (err)
                snprintf(err, BU_ERR, "flowlogd exited with status %d (see %.200s/flowlogd.log)",
                         WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), cfg->dir);
            rc = -1;
        }
        cfg->pid = 0;
    }
    if (cfg->dir) {
        if (!cfg->keep)
            bu_rmtree(cfg->dir);
        else
            fprintf(stderr, "flowlog-bench: kept %s\n", cfg->dir);
        free(cfg->dir);
        cfg->dir = NULL;
    }
    return rc;
}

static struct fb_cfg *g_cfg; /* for the atexit clean-up only */

static void cleanup_at_exit(void)
{
    if (g_cfg)
        stop_server(g_cfg, NULL);
}

static int start_server(struct fb_cfg *cfg, char *err)
{
    char path[4096], tokens[4096], portfile[4096], logf[4096];
    unsigned char rnd[16];
    if (cfg->data_parent)
        setenv("TMPDIR", cfg->data_parent, 1);
    if (!(cfg->dir = bu_mkdtemp("bench")))
        return snprintf(err, BU_ERR, "mkdtemp: %s", strerror(errno)), -1;
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return snprintf(err, BU_ERR, "getrandom failed"), -1;
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(cfg->optoken + 2 * i, 3, "%02x", rnd[i]);
    snprintf(tokens, sizeof tokens, "%s/tokens", cfg->dir);
    snprintf(path, sizeof path, "%s/data", cfg->dir);
    snprintf(portfile, sizeof portfile, "%s/port", cfg->dir);
    snprintf(logf, sizeof logf, "%s/flowlogd.log", cfg->dir);
    int fd = open(tokens, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return snprintf(err, BU_ERR, "%.200s: %s", tokens, strerror(errno)), -1;
    dprintf(fd, "# flowlog-bench: one operator token\n%s * admin\n", cfg->optoken);
    close(fd);

    pid_t pid = fork();
    if (pid < 0)
        return snprintf(err, BU_ERR, "fork: %s", strerror(errno)), -1;
    if (pid == 0) {
        int lf = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (lf >= 0) {
            dup2(lf, 1);
            dup2(lf, 2);
            close(lf);
        }
        execl(cfg->flowlogd, cfg->flowlogd, "--data", path, "--listen", "127.0.0.1:0",
              "--port-file", portfile, "--tokens", tokens, "--sync", cfg->sync, "--log-level",
              "warn", (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", cfg->flowlogd, strerror(errno));
        _exit(127);
    }
    cfg->pid = pid;
    /* wait for the port file (written atomically once listening); bounded: 20 s */
    for (int i = 0; i < 2000; i++) {
        FILE *f = fopen(portfile, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port > 0) {
            snprintf(cfg->addr, sizeof cfg->addr, "127.0.0.1:%d", port);
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            cfg->pid = 0;
            return snprintf(err, BU_ERR, "flowlogd exited at start (see %.200s)", logf), -1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return snprintf(err, BU_ERR, "flowlogd did not write %.200s within 20 s", portfile), -1;
}

static int fb_reset(void *vcfg, const struct wl_params *p, char *err)
{
    struct fb_cfg *cfg = vcfg;
    (void)p;
    if (!cfg->flowlogd)
        return 0; /* external server: the harness varies the seed instead */
    if (stop_server(cfg, err) != 0)
        return -1;
    return start_server(cfg, err);
}

/* ---- connections ---- */

static const char *server_addr(const struct fb_cfg *cfg)
{
    return cfg->flowlogd ? cfg->addr : cfg->server;
}

static const char *server_token(const struct fb_cfg *cfg)
{
    return cfg->flowlogd ? cfg->optoken : cfg->token;
}

static flc_client *open_tenant(struct fb_cfg *cfg, int t, char *err)
{
    char tenant[40];
    wl_tenant_name(cfg->p, t, tenant, sizeof tenant);
    flc_client *c = flc_connect(server_addr(cfg), server_token(cfg), tenant);
    if (!c || flc_errcode(c) != 0) {
        snprintf(err, BU_ERR, "connect %s as %s: %s: %s", server_addr(cfg), tenant,
                 c ? flc_errname(c) : "nomem", c ? flc_errmsg(c) : "out of memory");
        flc_free(c);
        return NULL;
    }
    return c;
}

static void *fb_connect(void *vcfg, int w, int nwriters, char *err)
{
    struct fb_cfg *cfg = vcfg;
    struct fb_conn *fc = calloc(1, sizeof *fc);
    if (!fc || !(fc->c = calloc((size_t)cfg->p->tenants, sizeof *fc->c))) {
        free(fc);
        return NULL;
    }
    fc->cfg = cfg;
    /* connect now to the tenant of the writer's first flow, so that the timed part does not
     * include the handshake (other tenants, when C < T, connect on first use) */
    for (int g = 0; g < cfg->p->tenants * cfg->p->flows; g++)
        if (wl_owner(cfg->p, nwriters, g) == w) {
            int t = g / cfg->p->flows;
            if (!(fc->c[t] = open_tenant(cfg, t, err))) {
                free(fc->c);
                free(fc);
                return NULL;
            }
            break;
        }
    return fc;
}

static void fb_close(void *vc)
{
    struct fb_conn *fc = vc;
    if (!fc)
        return;
    for (int t = 0; t < fc->cfg->p->tenants; t++)
        flc_free(fc->c[t]);
    free(fc->c);
    free(fc);
}

static int64_t obj_int(const msgpack_object *o);

/* A handle that failed at the connection level is dead: drop it, so that the next append
 * connects again. */
static void fb_drop_dead(struct fb_conn *fc, int t)
{
    flc_client *c = fc->c[t];
    if (c && (flc_errcode(c) == FLC_ECONNECTION || flc_errcode(c) == FLC_EPROTOCOL)) {
        flc_free(c);
        fc->c[t] = NULL;
    }
}

static int fb_send(void *vc, const struct wl_batch *b, size_t from, size_t to, char *err)
{
    struct fb_conn *fc = vc;
    struct flc_event ev[WL_BATCH_MAX];
    int t = b->ev[from].tenant;
    if (!fc->c[t] && !(fc->c[t] = open_tenant(fc->cfg, t, err)))
        return -1;
    flc_client *c = fc->c[t];
    for (size_t i = from; i < to; i++) {
        ev[i - from].msgpack = b->sb.data + b->off[i];
        ev[i - from].len = b->len[i];
    }
    fc->inflight = t;
    if (flc_append_send(c, ev, to - from) == 0) {
        snprintf(err, BU_ERR, "append %s: %s: %s", wl_type_name(b->ev[from].type),
                 flc_errname(c), flc_errmsg(c));
        fb_drop_dead(fc, t);
        return -1;
    }
    return 0;
}

static int fb_fd(void *vc)
{
    struct fb_conn *fc = vc;
    return fc->c[fc->inflight] ? flc_fd(fc->c[fc->inflight]) : -1;
}

static int fb_recv(void *vc, const struct wl_batch *b, size_t from, size_t to, char *err)
{
    struct fb_conn *fc = vc;
    int t = fc->inflight;
    flc_client *c = fc->c[t];
    const msgpack_object *res;
    uint64_t id;
    int rc = flc_reply_next(c, 0, &id, &res);

    if (rc == 0)
        return 0;
    if (rc < 0 || !res) {
        snprintf(err, BU_ERR, "append %s (index %" PRId64 "): %s: %s",
                 wl_type_name(b->ev[from].type), flc_errindex(c), flc_errname(c), flc_errmsg(c));
        fb_drop_dead(fc, t);
        return -1;
    }
    const msgpack_object *rs = flc_get(res, "results");
    if (!rs || rs->type != MSGPACK_OBJECT_ARRAY || rs->via.array.size != to - from)
        return snprintf(err, BU_ERR, "append: malformed results"), -1;
    uint64_t now = fc->cfg->acks ? bu_now_ns() : 0;
    for (uint32_t i = 0; i < rs->via.array.size; i++) {
        const msgpack_object *dup = flc_get(&rs->via.array.ptr[i], "duplicate");
        int64_t seq = obj_int(flc_get(&rs->via.array.ptr[i], "seq"));
        if (fc->cfg->acks && seq > 0 && (uint64_t)seq < fc->cfg->nacks)
            atomic_store(&fc->cfg->acks[seq], now);
        if (dup && dup->type == MSGPACK_OBJECT_BOOLEAN && dup->via.boolean)
            return snprintf(err, BU_ERR, "append: event %s was a duplicate (stale server?)",
                            b->ev[from + i].event_id),
                   -1;
    }
    return 1;
}

/* ---- verify ---- */

static int64_t obj_int(const msgpack_object *o)
{
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    return -1;
}

static int64_t arr_len(const msgpack_object *o)
{
    return o && o->type == MSGPACK_OBJECT_ARRAY ? (int64_t)o->via.array.size : -1;
}

static int obj_streq(const msgpack_object *o, const char *s)
{
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* Check one flow's state against what the workload must have left. */
static int verify_flow(flc_client *c, const struct wl_params *p, int g, char *err)
{
    char flow_id[40];
    wl_flow_id(p, g, flow_id, sizeof flow_id);
    const msgpack_object *st = flc_state(c, flow_id);
    if (!st)
        return snprintf(err, BU_ERR, "state %s: %s: %s", flow_id, flc_errname(c), flc_errmsg(c)),
               -1;
    int64_t version = 1, succ = 0, blocked = 0, R = p->runs, I = p->iters, P = p->patches;
    for (int r = 0; r < p->runs; r++) {
        version += wl_run_events(p, g, r);
        succ += !wl_run_blocked(p, g, r);
        blocked += wl_run_blocked(p, g, r);
    }
    const char *status = wl_run_blocked(p, g, p->runs - 1) ? "NEEDS_HUMAN" : "DONE";
    const msgpack_object *flows = flc_get(st, "migration_flows");
    const msgpack_object *f = arr_len(flows) == 1 ? &flows->via.array.ptr[0] : NULL;
    struct {
        const char *what;
        int64_t got, want;
    } checks[] = {
        {"version", obj_int(flc_get(st, "version")), version},
        {"migration_flows rows", arr_len(flows), 1},
        {"total_attempts", f ? obj_int(flc_get(f, "total_attempts")) : -1, R},
        {"successful_conversions", f ? obj_int(flc_get(f, "successful_conversions")) : -1, succ},
        {"migration_status", f && obj_streq(flc_get(f, "migration_status"), status), 1},
        {"migration_runs rows", arr_len(flc_get(st, "migration_runs")), R},
        {"migration_iterations rows", arr_len(flc_get(st, "migration_iterations")), R * I},
        {"migration_patches rows", arr_len(flc_get(st, "migration_patches")), R * I * P},
        {"migration_sast_results rows", arr_len(flc_get(st, "migration_sast_results")), R * I * P},
        {"migration_exec_results rows", arr_len(flc_get(st, "migration_exec_results")), R * I},
        {"migration_human_requests rows", arr_len(flc_get(st, "migration_human_requests")),
         blocked},
        {"attempt_history rows", arr_len(flc_get(st, "attempt_history")), R},
    };
    for (size_t i = 0; i < sizeof checks / sizeof *checks; i++)
        if (checks[i].got != checks[i].want)
            return snprintf(err, BU_ERR, "flow %s (#%d): %s is %" PRId64 ", want %" PRId64, flow_id,
                            g, checks[i].what, checks[i].got, checks[i].want),
                   -1;
    return 0;
}

static int fb_verify(void *vcfg, const struct wl_params *p, int nwriters, char *err)
{
    struct fb_cfg *cfg = vcfg;
    (void)nwriters;
    int rc = 0;
    for (int t = 0; t < p->tenants && rc == 0; t++) {
        flc_client *c = open_tenant(cfg, t, err);
        if (!c)
            return -1;
        for (int n = 0; n < p->flows && rc == 0; n++)
            rc = verify_flow(c, p, t * p->flows + n, err);
        if (rc == 0 && t == 0) {
            /* the server's own verify: checksums, hash chain, projections equal a rebuild */
            const msgpack_object *v = flc_verify(c);
            const msgpack_object *ok = v ? flc_get(v, "ok") : NULL;
            if (!ok || ok->type != MSGPACK_OBJECT_BOOLEAN || !ok->via.boolean) {
                snprintf(err, BU_ERR, "server verify: %s", v ? "not ok" : flc_errmsg(c));
                rc = -1;
            } else if (cfg->flowlogd &&
                       obj_int(flc_get(v, "events")) != (int64_t)wl_total_events(p)) {
                snprintf(err, BU_ERR, "server verify: %" PRId64 " events, want %" PRIu64,
                         obj_int(flc_get(v, "events")), wl_total_events(p));
                rc = -1;
            }
        }
        flc_free(c);
    }
    return rc;
}

/* ---- reads over the wire, after the load ---- */

static uint64_t rnd_next(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 33;
}

/* The server's rebuild of every projection from the log, on c (operator): events replayed
 * and events/s as the server timed it, or -1 with err. */
static int rebuild_rate(flc_client *c, uint64_t *events, double *rate, char *err)
{
    const msgpack_object *r = flc_rebuild(c);

    if (!r) {
        snprintf(err, BU_ERR, "rebuild: %s", flc_errmsg(c));
        return -1;
    }
    int64_t ev = obj_int(flc_get(r, "events")), us = obj_int(flc_get(r, "micros"));
    *events = ev > 0 ? (uint64_t)ev : 0;
    *rate = us > 0 ? (double)*events * 1e6 / (double)us : 0;
    return 0;
}

/* rounds x (state now, state as of a random seq of the flow, a run's timeline, history) on
 * random flows of the data left by the last run; one connection per tenant, one at a time.
 * Then one rebuild (not during the reads: it holds them). */
static int read_phase(struct fb_cfg *cfg, const struct wl_params *p, int rounds, int json)
{
    char err[BU_ERR], flow_id[40], run_id[96];
    flc_client **c = calloc((size_t)p->tenants, sizeof *c);
    struct bu_lat now = {0}, asof = {0}, tl = {0}, hist = {0};
    uint64_t x = 42, skipped = 0;
    int rc = 0;
    if (!c)
        return -1;
    for (int i = 0; i < rounds && rc == 0; i++) {
        int g = (int)(rnd_next(&x) % (uint64_t)(p->tenants * p->flows)), t = g / p->flows;
        if (!c[t] && !(c[t] = open_tenant(cfg, t, err))) {
            fprintf(stderr, "flowlog-bench: reads: %s\n", err);
            rc = -1;
            break;
        }
        wl_flow_id(p, g, flow_id, sizeof flow_id);
        snprintf(run_id, sizeof run_id, "%s_run_%d", flow_id,
                 1 + (int)(rnd_next(&x) % (uint64_t)p->runs));
        uint64_t t0 = bu_now_ns();
        const msgpack_object *st = flc_state(c[t], flow_id);
        uint64_t t1 = bu_now_ns();
        if (!st) {
            if (flc_errcode(c[t]) == FLC_ENOT_FOUND) { /* a capped run never wrote it */
                skipped++;
                continue;
            }
            fprintf(stderr, "flowlog-bench: state: %s\n", flc_errmsg(c[t]));
            rc = -1;
            break;
        }
        bu_lat_add(&now, t1 - t0);
        /* a seq of this flow, from its first timeline page (not timed) */
        struct flc_query q = {0};
        q.flow_id = flow_id;
        const msgpack_object *page = flc_timeline(c[t], &q);
        const msgpack_object *evs = page ? flc_get(page, "events") : NULL;
        if (evs && evs->type == MSGPACK_OBJECT_ARRAY && evs->via.array.size > 0) {
            uint32_t k = (uint32_t)(rnd_next(&x) % evs->via.array.size);
            int64_t seq = obj_int(flc_get(&evs->via.array.ptr[k], "seq"));
            t0 = bu_now_ns();
            st = flc_state_at_seq(c[t], flow_id, (uint64_t)seq);
            t1 = bu_now_ns();
            if (st)
                bu_lat_add(&asof, t1 - t0);
        }
        memset(&q, 0, sizeof q);
        q.run_id = run_id;
        t0 = bu_now_ns();
        page = flc_timeline(c[t], &q);
        t1 = bu_now_ns();
        if (page)
            bu_lat_add(&tl, t1 - t0);
        t0 = bu_now_ns();
        st = flc_history(c[t], flow_id, 0);
        t1 = bu_now_ns();
        if (st)
            bu_lat_add(&hist, t1 - t0);
    }
    uint64_t rb_events = 0;
    double rb_rate = 0;
    if (rc == 0 && ((!c[0] && !(c[0] = open_tenant(cfg, 0, err))) ||
                    rebuild_rate(c[0], &rb_events, &rb_rate, err) != 0)) {
        fprintf(stderr, "flowlog-bench: %s\n", err);
        rc = -1;
    }
    for (int t = 0; t < p->tenants; t++)
        flc_free(c[t]);
    free(c);
    size_t n = now.n;
    double v[8] = {bu_lat_pct_ms(&now, 50),  bu_lat_pct_ms(&now, 99), bu_lat_pct_ms(&asof, 50),
                   bu_lat_pct_ms(&asof, 99), bu_lat_pct_ms(&tl, 50),  bu_lat_pct_ms(&tl, 99),
                   bu_lat_pct_ms(&hist, 50), bu_lat_pct_ms(&hist, 99)};
    if (json)
        printf("{\"flowlog_reads\":{\"rounds\":%zu,\"skipped\":%" PRIu64
               ",\"state_now_p50_ms\":%.4f,"
               "\"state_now_p99_ms\":%.4f,\"state_asof_p50_ms\":%.4f,\"state_asof_p99_ms\":%.4f,"
               "\"timeline_run_p50_ms\":%.4f,\"timeline_run_p99_ms\":%.4f,"
               "\"history_p50_ms\":%.4f,\"history_p99_ms\":%.4f,"
               "\"rebuild_events\":%" PRIu64 ",\"rebuild_events_per_s\":%.1f}}\n",
               n, skipped, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], rb_events, rb_rate);
    else
        printf("reads over the wire after the load (%zu rounds, p50 / p99 ms): state now %.3f / "
               "%.3f, as of a seq %.3f / %.3f, run timeline %.3f / %.3f, history %.3f / %.3f\n"
               "rebuild (the server's, over the wire): %" PRIu64 " events, %.0f events/s\n",
               n, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], rb_events, rb_rate);
    fflush(stdout);
    bu_lat_free(&now);
    bu_lat_free(&asof);
    bu_lat_free(&tl);
    bu_lat_free(&hist);
    return rc;
}

/* ---- subscriptions: ack-to-delivery latency with live writers ---- */

struct sub_thread {
    struct fb_cfg *cfg;
    int tenant;
    pthread_t tid;
    uint64_t (*got)[2]; /* (seq, arrival ns) */
    size_t n, cap;
    atomic_int *stop, *ready;
    _Atomic uint64_t last_ns;
    int failed;
    char err[BU_ERR];
};

static void *sub_main(void *arg)
{
    struct sub_thread *st = arg;
    flc_client *c = open_tenant(st->cfg, st->tenant, st->err);
    struct flc_query q = {0};
    q.from = 1;
    if (!c || flc_subscribe(c, &q) != 0) {
        if (c)
            snprintf(st->err, BU_ERR, "subscribe: %s", flc_errmsg(c));
        st->failed = 1;
        atomic_fetch_add(st->ready, 1);
        flc_free(c);
        return NULL;
    }
    atomic_fetch_add(st->ready, 1);
    while (!atomic_load(st->stop)) {
        const msgpack_object *res = flc_sub_next(c, 50);
        uint64_t now = bu_now_ns();
        if (!res) {
            if (flc_errcode(c) == FLC_ETIMEOUT)
                continue;
            snprintf(st->err, BU_ERR, "sub_next: %s: %s", flc_errname(c), flc_errmsg(c));
            st->failed = 1;
            break;
        }
        const msgpack_object *evs = flc_get(res, "events");
        if (!evs || evs->type != MSGPACK_OBJECT_ARRAY)
            continue;
        for (uint32_t i = 0; i < evs->via.array.size; i++) {
            if (st->n == st->cap) {
                st->cap = st->cap ? st->cap * 2 : 8192;
                if (!(st->got = realloc(st->got, st->cap * sizeof *st->got)))
                    exit(2);
            }
            st->got[st->n][0] = (uint64_t)obj_int(flc_get(&evs->via.array.ptr[i], "seq"));
            st->got[st->n][1] = now;
            st->n++;
        }
        atomic_store(&st->last_ns, now);
    }
    flc_free(c);
    return NULL;
}

/* One more run on a fresh server: nsub subscribers (tenant i % T, from seq 1) listening while
 * conns step-mode writers append; then, per delivered event, arrival minus its writer's ack. */
static int sub_phase(const struct bu_driver *d, struct fb_cfg *cfg, struct bu_opts *o, int json)
{
    char err[BU_ERR];
    int nsub = cfg->subscribers, rc = 0;
    if (!cfg->flowlogd)
        o->wl.seed += 1000000; /* a running server: flows no earlier run wrote */
    if (d->reset(cfg, &o->wl, err) != 0) {
        fprintf(stderr, "flowlog-bench: %s\n", err);
        return -1;
    }
    cfg->nacks = wl_total_events(&o->wl) + 16;
    cfg->acks = calloc(cfg->nacks, sizeof *cfg->acks);
    struct sub_thread *st = calloc((size_t)nsub, sizeof *st);
    atomic_int stop, ready;
    atomic_init(&stop, 0);
    atomic_init(&ready, 0);
    if (!cfg->acks || !st)
        return -1;
    for (int i = 0; i < nsub; i++) {
        st[i].cfg = cfg;
        st[i].tenant = i % o->wl.tenants;
        st[i].stop = &stop;
        st[i].ready = &ready;
        atomic_init(&st[i].last_ns, 0);
        pthread_create(&st[i].tid, NULL, sub_main, &st[i]);
    }
    for (int i = 0; i < 2000 && atomic_load(&ready) < nsub; i++) { /* bounded: 20 s */
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    struct bu_result r;
    bu_run(d, cfg, o, cfg->sub_conns, BU_STEP, &r);
    /* let the last pushes arrive: until 500 ms pass without one (bounded: 10 s) */
    uint64_t end = bu_now_ns(), quiet = 500ull * 1000 * 1000;
    for (;;) {
        uint64_t now = bu_now_ns(), last = end;
        for (int i = 0; i < nsub; i++)
            if (atomic_load(&st[i].last_ns) > last)
                last = atomic_load(&st[i].last_ns);
        if (now - last > quiet || now - end > 10ull * 1000 * 1000 * 1000)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&stop, 1);
    struct bu_lat lat = {0};
    uint64_t delivered = 0, before_ack = 0, unmatched = 0, expected = 0;
    for (int i = 0; i < nsub; i++) {
        pthread_join(st[i].tid, NULL);
        if (st[i].failed) {
            fprintf(stderr, "flowlog-bench: subscriber %d: %s\n", i, st[i].err);
            rc = -1;
        }
        for (size_t k = 0; k < st[i].n; k++) {
            uint64_t seq = st[i].got[k][0], at = st[i].got[k][1];
            uint64_t ack = seq < cfg->nacks ? atomic_load(&cfg->acks[seq]) : 0;
            delivered++;
            if (!ack) {
                unmatched++; /* pushed before its writer had read the ack */
                bu_lat_add(&lat, 0);
            } else if (at < ack) {
                before_ack++;
                bu_lat_add(&lat, 0);
            } else {
                bu_lat_add(&lat, at - ack);
            }
        }
        free(st[i].got);
    }
    /* every subscriber should have seen each event of its tenant */
    for (int i = 0; i < nsub; i++)
        expected += r.events / (uint64_t)o->wl.tenants;
    double p50 = bu_lat_pct_ms(&lat, 50), p99 = bu_lat_pct_ms(&lat, 99),
           p999 = bu_lat_pct_ms(&lat, 99.9);
    if (json)
        printf("{\"flowlog_subscription\":{\"subscribers\":%d,\"writers\":%d,\"events\":%" PRIu64
               ",\"events_per_s\":%.1f,\"delivered\":%" PRIu64 ",\"delivered_before_ack\":%" PRIu64
               ",\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f}}\n",
               nsub, cfg->sub_conns, r.events, r.ev_per_s, delivered, before_ack + unmatched, p50,
               p99, p999);
    else
        printf("subscription: %d subscribers, %d step writers, %" PRIu64 " events at %.0f ev/s; "
               "%" PRIu64 " deliveries (about %" PRIu64 " expected), %" PRIu64 " before the writer "
               "saw its ack; ack -> delivery p50 %.3f p99 %.3f p99.9 %.3f ms\n",
               nsub, cfg->sub_conns, r.events, r.ev_per_s, delivered, expected,
               before_ack + unmatched, p50, p99, p999);
    fflush(stdout);
    bu_lat_free(&lat);
    free(st);
    free(cfg->acks);
    cfg->acks = NULL;
    return rc;
}

/* A number of any msgpack numeric type, or -1. */
static double obj_num(const msgpack_object *o)
{
    if (o && (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32))
        return o->via.f64;
    return o ? (double)obj_int(o) : -1;
}

/* The server's group-commit counters (stats, admin): events per commit and commit time. */
static void fb_note(void *vcfg, const struct wl_params *p, char *out, size_t cap)
{
    struct fb_cfg *cfg = vcfg;
    char err[BU_ERR];
    (void)p;
    flc_client *c = open_tenant(cfg, 0, err);
    const msgpack_object *st = c ? flc_stats(c) : NULL;
    if (st) {
        const msgpack_object *epc = flc_get(st, "events_per_commit");
        const msgpack_object *cms = flc_get(st, "commit_ms_avg");
        snprintf(out, cap, "server: %" PRId64 " commits, %.1f events/commit, %.3f ms/commit",
                 obj_int(flc_get(st, "commits")), obj_num(epc), obj_num(cms));
    }
    flc_free(c);
}

static int extra_opt(const char *name, const char *val, void *ctx)
{
    struct fb_cfg *cfg = ctx;
    if (strcmp(name, "flowlogd") == 0)
        return (cfg->flowlogd = val)[0] ? 1 : -1;
    if (strcmp(name, "server") == 0)
        return (cfg->server = val)[0] ? 1 : -1;
    if (strcmp(name, "token") == 0)
        return (cfg->token = val)[0] ? 1 : -1;
    if (strcmp(name, "sync") == 0)
        return strcmp(val, "full") == 0 || strcmp(val, "none") == 0 ? (cfg->sync = val, 1) : -1;
    if (strcmp(name, "data-parent") == 0)
        return (cfg->data_parent = val)[0] ? 1 : -1;
    if (strcmp(name, "keep") == 0)
        return cfg->keep = 1;
    if (strcmp(name, "subscribers") == 0)
        return (cfg->subscribers = atoi(val)) >= 0 && cfg->subscribers <= 256 ? 1 : -1;
    if (strcmp(name, "sub-conns") == 0)
        return (cfg->sub_conns = atoi(val)) >= 1 && cfg->sub_conns <= 1024 ? 1 : -1;
    if (strcmp(name, "reads") == 0)
        return (cfg->reads = atoi(val)) >= 0 ? 1 : -1;
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    exit(130); /* runs the atexit clean-up: the spawned server is stopped */
}

int main(int argc, char **argv)
{
    struct fb_cfg cfg;
    struct bu_opts o;
    char err[BU_ERR];
    memset(&cfg, 0, sizeof cfg);
    cfg.sync = "full";
    cfg.sub_conns = 16;
    cfg.reads = 200;
    cfg.server = getenv("FLOWLOG_SERVER");
    cfg.token = getenv("FLOWLOG_TOKEN");
    bu_opts_default(&o);
    bu_parse_args(&o, argc, argv, usage, extra_opt, &cfg);
    cfg.p = &o.wl;
    if (!cfg.flowlogd && (!cfg.server || !cfg.token)) {
        fprintf(stderr, "flowlog-bench: give --flowlogd=PATH, or --server and --token\n\n%s",
                usage);
        return 2;
    }
    if (!cfg.flowlogd) {
        /* a running server keeps what earlier invocations wrote: start from a seed of our own
         * (the time), and give every run its own, so that all flows and event ids are new */
        o.vary_seed = 1;
        o.wl.seed += (uint64_t)time(NULL) * 1000;
        if (!o.quiet)
            fprintf(stderr, "flowlog-bench: running server: seeds from %" PRIu64 "\n", o.wl.seed);
    }
    if (strcmp(cfg.sync, "full") != 0)
        fprintf(stderr, "flowlog-bench: WARNING: --sync=%s: appends are NOT durable\n", cfg.sync);
    signal(SIGPIPE, SIG_IGN);
    g_cfg = &cfg;
    atexit(cleanup_at_exit);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct bu_driver d = {strcmp(cfg.sync, "full") == 0 ? "flowlog" : "flowlog-nosync",
                          fb_connect,
                          fb_send,
                          fb_fd,
                          fb_recv,
                          fb_close,
                          fb_reset,
                          fb_verify,
                          fb_note,
                          fb_server_cpu};
    int rc = bu_matrix(&d, &cfg, &o);
    if (cfg.reads > 0 && read_phase(&cfg, &o.wl, cfg.reads, o.json) != 0)
        rc = 1;
    if (cfg.subscribers > 0 && sub_phase(&d, &cfg, &o, o.json) != 0)
        rc = 1;
    if (stop_server(&cfg, err) != 0) {
        fprintf(stderr, "flowlog-bench: %s\n", err);
        rc = 1;
    }
    g_cfg = NULL; /* cfg lives in this frame: the atexit hook must not see it after return */
    return rc;
}
