/* flowlog-bench: the migration-day workload against flowlogd, through libflowlog.
 *
 * Two ways to run:
 *   --flowlogd=PATH   start a fresh flowlogd for every run (data in a new temp directory, port 0
 *                     and --port-file, --sync full, a generated operator token), stop it by its
 *                     pid with SIGTERM afterwards: every run starts empty, as PostgreSQL's and
 *                     Redis's do (their tables/streams are emptied between runs);
 *   --server=HOST:PORT --token=TOKEN   an already running server and an operator token (tenant
 *                     "*"); every run then uses its own seed, so its flows are new.
 * One thread per writer; each writer opens one connection per tenant it writes for (with the
 * default 4 tenants and 16 or 64 writers, exactly one) and appends in step mode (one event, wait
 * for its acknowledgement) or batch mode (one unit as one atomic append). An acknowledgement
 * means durable under --sync full.
 *
 * --verify reads every flow's state afterwards (version, status, counters, row counts per table,
 * attempt history) and runs the server's verify (checksums, chain, projections = rebuild). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
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
    "  --keep              keep the spawned servers' directories (logs, data)\n";

struct fb_cfg {
    const char *flowlogd, *server, *token, *sync, *data_parent;
    int keep;
    const struct wl_params *p;
    /* the spawned server */
    pid_t pid;
    char *dir;
    char addr[64];
    char optoken[65];
};

struct fb_conn {
    struct fb_cfg *cfg;
    flc_client **c; /* per tenant, opened on first use */
    char tenant[40];
};

/* ---- the spawned server ---- */

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

static int fb_append(void *vc, const struct wl_batch *b, size_t from, size_t to, char *err)
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
    const msgpack_object *res = flc_append(c, ev, to - from);
    if (!res) {
        snprintf(err, BU_ERR, "append %s (index %" PRId64 "): %s: %s",
                 wl_type_name(b->ev[from].type), flc_errindex(c), flc_errname(c), flc_errmsg(c));
        if (flc_errcode(c) == FLC_ECONNECTION || flc_errcode(c) == FLC_EPROTOCOL) {
            flc_free(c); /* a dead handle: reconnect on the next append */
            fc->c[t] = NULL;
        }
        return -1;
    }
    const msgpack_object *rs = flc_get(res, "results");
    if (!rs || rs->type != MSGPACK_OBJECT_ARRAY || rs->via.array.size != to - from)
        return snprintf(err, BU_ERR, "append: malformed results"), -1;
    for (uint32_t i = 0; i < rs->via.array.size; i++) {
        const msgpack_object *dup = flc_get(&rs->via.array.ptr[i], "duplicate");
        if (dup && dup->type == MSGPACK_OBJECT_BOOLEAN && dup->via.boolean)
            return snprintf(err, BU_ERR, "append: event %s was a duplicate (stale server?)",
                            b->ev[from + i].event_id), -1;
    }
    return 0;
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
            return snprintf(err, BU_ERR, "flow %s (#%d): %s is %" PRId64 ", want %" PRId64,
                            flow_id, g, checks[i].what, checks[i].got, checks[i].want),
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
    if (!cfg.flowlogd)
        o.vary_seed = 1;
    if (strcmp(cfg.sync, "full") != 0)
        fprintf(stderr, "flowlog-bench: WARNING: --sync=%s: appends are NOT durable\n", cfg.sync);
    signal(SIGPIPE, SIG_IGN);
    g_cfg = &cfg;
    atexit(cleanup_at_exit);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct bu_driver d = {strcmp(cfg.sync, "full") == 0 ? "flowlog" : "flowlog-nosync",
                          fb_connect, fb_append, fb_close, fb_reset, fb_verify};
    int rc = bu_matrix(&d, &cfg, &o);
    if (stop_server(&cfg, err) != 0) {
        fprintf(stderr, "flowlog-bench: %s\n", err);
        rc = 1;
    }
    return rc;
}
