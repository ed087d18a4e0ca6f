/* benchutil.c: clocks, percentiles and the load harness, one event loop over every writer
 * connection (see benchutil.h). */
#include "benchutil.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

uint64_t bu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bu_lat_add(struct bu_lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint64_t *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            fprintf(stderr, "bench: out of memory\n");
            exit(2);
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = ns;
}

void bu_lat_merge(struct bu_lat *dst, const struct bu_lat *src)
{
    for (size_t i = 0; i < src->n; i++)
        bu_lat_add(dst, src->v[i]);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bu_lat_pct_ms(struct bu_lat *l, double pct)
{
    if (l->n == 0)
        return 0;
    qsort(l->v, l->n, sizeof *l->v, cmp_u64);
    /* nearest rank */
    size_t rank = (size_t)(pct / 100.0 * (double)l->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > l->n)
        rank = l->n;
    return (double)l->v[rank - 1] / 1e6;
}

void bu_lat_free(struct bu_lat *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

double bu_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_dbl);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const char *bu_mode_name(enum bu_mode m)
{
    return m == BU_STEP ? "step" : "batch";
}

void bu_opts_default(struct bu_opts *o)
{
    memset(o, 0, sizeof *o);
    wl_params_default(&o->wl);
    o->conns[0] = 1;
    o->conns[1] = 16;
    o->conns[2] = 64;
    o->nconns = 3;
    o->modes[0] = BU_STEP;
    o->modes[1] = BU_BATCH;
    o->nmodes = 2;
    o->reps = 3;
    o->max_seconds = 120;
}

static void usage_exit(const char *usage, const char *bad)
{
    if (bad)
        fprintf(stderr, "bad option: %s\n\n", bad);
    fprintf(stderr, "%s", usage);
    fprintf(stderr,
            "common options:\n"
            "  --conns=LIST       writer connections per run [1,16,64]\n"
            "  --modes=LIST       step and/or batch [step,batch]\n"
            "  --reps=N           runs per configuration; medians are printed [3]\n"
            "  --max-events=N     stop each run after about N events [whole workload]\n"
            "  --max-seconds=S    stop each run after S seconds [120]\n"
            "  --verify           check the final state after each run (when supported)\n"
            "  --json             JSON lines instead of a table\n"
            "  --quiet            no per-run lines on stderr\n%s",
            wl_params_usage());
    exit(bad ? 2 : 0);
}

void bu_parse_args(struct bu_opts *o, int argc, char **argv, const char *usage,
                   int (*extra)(const char *name, const char *val, void *ctx), void *ctx)
{
    for (int i = 1; i < argc; i++) {
        char *a = argv[i], name[64];
        const char *val = "";
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            usage_exit(usage, NULL);
        if (strncmp(a, "--", 2) != 0)
            usage_exit(usage, a);
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nl >= sizeof name)
            usage_exit(usage, a);
        memcpy(name, a + 2, nl);
        name[nl] = '\0';
        if (eq)
            val = eq + 1; /* options take "--name=value"; flags have no value */
        int r;
        if (strcmp(name, "json") == 0) {
            o->json = 1;
        } else if (strcmp(name, "verify") == 0) {
            o->verify = 1;
        } else if (strcmp(name, "quiet") == 0) {
            o->quiet = 1;
        } else if (strcmp(name, "conns") == 0) {
            o->nconns = 0;
            char buf[128];
            snprintf(buf, sizeof buf, "%s", val);
            for (char *s = strtok(buf, ","); s; s = strtok(NULL, ",")) {
                int c = atoi(s);
                if (c < 1 || c > 1024 || o->nconns == 8)
                    usage_exit(usage, a);
                o->conns[o->nconns++] = c;
            }
            if (!o->nconns)
                usage_exit(usage, a);
        } else if (strcmp(name, "modes") == 0) {
            o->nmodes = 0;
            if (strstr(val, "step"))
                o->modes[o->nmodes++] = BU_STEP;
            if (strstr(val, "batch"))
                o->modes[o->nmodes++] = BU_BATCH;
            if (!o->nmodes)
                usage_exit(usage, a);
        } else if (strcmp(name, "reps") == 0) {
            o->reps = atoi(val);
            if (o->reps < 1 || o->reps > 100)
                usage_exit(usage, a);
        } else if (strcmp(name, "max-events") == 0) {
            o->max_events = strtoull(val, NULL, 10);
        } else if (strcmp(name, "max-seconds") == 0) {
            o->max_seconds = atof(val);
            if (!(o->max_seconds > 0))
                usage_exit(usage, a);
        } else if ((r = wl_params_opt(&o->wl, name, val)) != 0) {
            if (r < 0)
                usage_exit(usage, a);
        } else if (extra && (r = extra(name, val, ctx)) != 0) {
            if (r < 0)
                usage_exit(usage, a);
        } else {
            usage_exit(usage, a);
        }
    }
    char msg[128];
    if (wl_params_check(&o->wl, msg, sizeof msg) != 0) {
        fprintf(stderr, "%s\n", msg);
        exit(2);
    }
}

/* ---- the harness ---- */

/* One writer connection: its units of the workload, generated before the clock starts (the
 * generator's snprintf work is not the systems' and would sit in every step's chain), and the
 * append it has in flight. */
struct run_conn {
    void *conn;
    struct wl_batch **units;
    size_t nunits, next;
    struct wl_batch *b; /* units[next - 1], or NULL before the first */
    size_t i, to;    /* the slice of b in flight (or next to send): b->ev[i..to) */
    int busy;        /* an append was sent and its acknowledgement has not been read */
    int finished;    /* it sends nothing more */
    int exhausted;   /* ... because it sent all its units */
    int fd;          /* the descriptor registered with epoll, or -1 */
    uint64_t t0, end_ns;
    uint64_t events, appends, errors;
    char err[BU_ERR], first_error[BU_ERR];
};

struct run_loop {
    const struct bu_driver *d;
    const struct bu_opts *o;
    enum bu_mode mode;
    int ep;
    uint64_t budget, deadline_ns;
    int stop;
    struct bu_lat lat;
};

/* A failed append: count it, and forget the descriptor, since a driver may reconnect after a
 * failure and get the same descriptor number back, which closing took out of the epoll set. */
static void conn_error(struct run_loop *l, struct run_conn *c)
{
    if (!c->errors++)
        snprintf(c->first_error, sizeof c->first_error, "%s", c->err);
    if (c->fd >= 0)
        epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL); /* may be gone already: closed */
    c->fd = -1;
}

/* Watch the descriptor that will carry the acknowledgement of the append just sent: the one
 * watched already, unless the driver moved to another (a writer of several tenants) or
 * reconnected after a failure (conn_error). */
static int conn_watch(struct run_loop *l, struct run_conn *c, int idx)
{
    int fd = l->d->fd(c->conn);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};

    if (fd < 0)
        return -1;
    if (fd == c->fd)
        return 0;
    if (c->fd >= 0)
        epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -1;
    c->fd = fd;
    return 0;
}

/* Send c's next append (the next slice of its unit, or the first of its next unit), or mark
 * it finished. A send that fails counts as a failed append and the next one is tried, as a
 * writer that gets an error goes on. */
static void conn_next(struct run_loop *l, struct run_conn *c, int idx)
{
    while (!c->busy && !c->finished) {
        if (l->stop || c->errors > 1000) {
            if (c->errors > 1000)
                l->stop = 1; /* something is badly wrong: do not spin */
            c->finished = 1;
            break;
        }
        if (!c->b || c->i >= c->b->n) {
            if (c->next >= c->nunits) {
                c->exhausted = c->finished = 1;
                break;
            }
            c->b = c->units[c->next++];
            c->i = 0;
            if (l->o->max_events && l->budget >= l->o->max_events) {
                c->finished = 1;
                break;
            }
            l->budget += c->b->n;
        }
        c->to = l->mode == BU_STEP ? c->i + 1 : c->b->n;
        c->err[0] = '\0';
        c->t0 = bu_now_ns();
        if (l->d->send(c->conn, c->b, c->i, c->to, c->err) == 0) {
            if (conn_watch(l, c, idx) != 0) {
                /* the append is out and its reply would land on the next one: give up */
                fprintf(stderr, "bench: cannot watch connection %d: %s\n", idx, strerror(errno));
                exit(2);
            }
            c->busy = 1;
            break;
        }
        c->appends++;
        conn_error(l, c);
        c->i = c->to;
    }
    if (c->finished && !c->end_ns)
        c->end_ns = bu_now_ns();
}

/* c's descriptor is readable: take its acknowledgement if it is whole, then send the next. */
static void conn_readable(struct run_loop *l, struct run_conn *c, int idx)
{
    c->err[0] = '\0';
    int rc = l->d->recv(c->conn, c->b, c->i, c->to, c->err);
    if (rc == 0)
        return;
    uint64_t t1 = bu_now_ns();
    c->busy = 0;
    c->appends++;
    if (t1 > l->deadline_ns)
        l->stop = 1;
    if (rc < 0) {
        conn_error(l, c);
    } else {
        c->events += c->to - c->i;
        bu_lat_add(&l->lat, t1 - c->t0);
    }
    c->i = c->to;
    c->end_ns = t1;
    conn_next(l, c, idx);
}

static void units_free(struct run_conn *c)
{
    for (size_t i = 0; i < c->nunits; i++) {
        wl_batch_free(c->units[i]);
        free(c->units[i]);
    }
    free(c->units);
    c->units = NULL;
    c->nunits = 0;
}

/* Generate writer w's units (all of them: a run that stops early at --max-events wastes a
 * little time before the clock, nothing in it). 0, or -1 without memory. */
static int units_make(struct run_conn *c, const struct bu_opts *o, int nconns, int w)
{
    struct wl_writer it;
    size_t cap = 0;

    wl_writer_init(&it, &o->wl, nconns, w);
    for (;;) {
        struct wl_batch *b = malloc(sizeof *b);
        if (!b)
            return -1;
        wl_batch_init(b);
        if (!wl_writer_next(&it, b)) {
            wl_batch_free(b);
            free(b);
            return 0;
        }
        if (c->nunits == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            struct wl_batch **u = realloc(c->units, ncap * sizeof *u);
            if (!u) {
                wl_batch_free(b);
                free(b);
                return -1;
            }
            c->units = u;
            cap = ncap;
        }
        c->units[c->nunits++] = b;
    }
}

/* Open the connections; NULL with r->first_error set if one fails. */
static struct run_conn *conns_open(const struct bu_driver *d, void *cfg, const struct bu_opts *o,
                                   int nconns, struct bu_result *r)
{
    struct run_conn *cs = calloc((size_t)nconns, sizeof *cs);
    if (!cs)
        return NULL;
    for (int w = 0; w < nconns; w++) {
        struct run_conn *c = &cs[w];
        int made;
        c->fd = -1;
        made = units_make(c, o, nconns, w) == 0;
        if (made)
            c->conn = d->connect(cfg, w, nconns, c->err);
        if (!made || !c->conn) {
            snprintf(r->first_error, sizeof r->first_error, "connect %d: %.200s", w,
                     made ? c->err : "out of memory");
            for (int j = 0; j <= w; j++) {
                if (cs[j].conn)
                    d->close(cs[j].conn);
                units_free(&cs[j]);
            }
            free(cs);
            r->errors = 1;
            return NULL;
        }
    }
    return cs;
}

int bu_run(const struct bu_driver *d, void *cfg, const struct bu_opts *o, int nconns,
           enum bu_mode mode, struct bu_result *r)
{
    struct run_loop l = {.d = d, .o = o, .mode = mode};
    struct run_conn *cs;

    memset(r, 0, sizeof *r);
    if (!(cs = conns_open(d, cfg, o, nconns, r)))
        return -1;
    if ((l.ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        fprintf(stderr, "bench: epoll_create1: %s\n", strerror(errno));
        exit(2);
    }
    double cpu0 = d->server_cpu ? d->server_cpu(cfg) : -1;
    uint64_t start = bu_now_ns(), end = start;
    l.deadline_ns = start + (uint64_t)(o->max_seconds * 1e9);
    for (int w = 0; w < nconns; w++)
        conn_next(&l, &cs[w], w);
    for (;;) {
        int busy = 0;
        for (int w = 0; w < nconns && !busy; w++)
            busy = cs[w].busy;
        if (!busy)
            break;
        struct epoll_event evs[256];
        int n = epoll_wait(l.ep, evs, 256, 1000);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "bench: epoll_wait: %s\n", strerror(errno));
            exit(2);
        }
        for (int k = 0; k < n; k++) {
            int w = (int)evs[k].data.u32;
            if (w >= 0 && w < nconns && cs[w].busy)
                conn_readable(&l, &cs[w], w);
        }
    }
    int complete = 1;
    for (int w = 0; w < nconns; w++) {
        struct run_conn *c = &cs[w];
        r->events += c->events;
        r->appends += c->appends;
        r->errors += c->errors;
        if (c->errors && !r->first_error[0])
            snprintf(r->first_error, sizeof r->first_error, "%s", c->first_error);
        if (c->end_ns > end)
            end = c->end_ns;
        complete &= c->exhausted;
        d->close(c->conn);
        units_free(c);
    }
    close(l.ep);
    free(cs);
    double cpu1 = d->server_cpu && cpu0 >= 0 ? d->server_cpu(cfg) : -1;
    r->cpu_us = cpu1 >= 0 && r->events ? (cpu1 - cpu0) * 1e6 / (double)r->events : -1;
    r->seconds = (double)(end - start) / 1e9;
    r->ev_per_s = r->seconds > 0 ? (double)r->events / r->seconds : 0;
    r->p50 = bu_lat_pct_ms(&l.lat, 50);
    r->p99 = bu_lat_pct_ms(&l.lat, 99);
    r->p999 = bu_lat_pct_ms(&l.lat, 99.9);
    r->complete = complete;
    bu_lat_free(&l.lat);
    return 0;
}

double bu_proc_cpu_seconds(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut, st;
    long hz = sysconf(_SC_CLK_TCK);
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (pid <= 0 || hz <= 0 || !(f = fopen(path, "r")))
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold spaces) start after the last ')':
     * state(3) ... utime(14) stime(15). */
    if (!(p = strrchr(buf, ')')) ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)hz;
}

void bu_print_header(void)
{
    printf("%-10s %-5s %5s %9s %8s %10s %8s %8s %8s %6s %10s\n", "system", "mode", "conns",
           "events", "secs", "events/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "srv us/ev");
}

void bu_print_row(const char *system, enum bu_mode mode, int conns, const struct bu_result *r,
                  int reps)
{
    char cpu[32] = "-";
    if (r->cpu_us >= 0)
        snprintf(cpu, sizeof cpu, "%.1f", r->cpu_us);
    printf("%-10s %-5s %5d %9" PRIu64 " %8.2f %10.0f %8.3f %8.3f %8.3f %6" PRIu64 " %10s%s\n",
           system, bu_mode_name(mode), conns, r->events, r->seconds, r->ev_per_s, r->p50, r->p99,
           r->p999, r->errors, cpu, reps > 1 ? "" : " (1 run)");
    fflush(stdout);
}

void bu_print_json(const char *system, enum bu_mode mode, int conns, const struct bu_result *r,
                   int reps, const struct wl_params *p)
{
    char desc[160];
    wl_params_describe(p, desc, sizeof desc);
    char cpu[32] = "null";
    if (r->cpu_us >= 0)
        snprintf(cpu, sizeof cpu, "%.2f", r->cpu_us);
    printf("{\"system\":\"%s\",\"mode\":\"%s\",\"conns\":%d,\"reps\":%d,\"events\":%" PRIu64
           ",\"seconds\":%.3f,\"events_per_s\":%.1f,\"p50_ms\":%.4f,\"p99_ms\":%.4f,"
           "\"p999_ms\":%.4f,\"server_cpu_us_per_event\":%s,\"errors\":%" PRIu64
           ",\"complete\":%s,\"workload\":\"%s\"}\n",
           system, bu_mode_name(mode), conns, reps, r->events, r->seconds, r->ev_per_s, r->p50,
           r->p99, r->p999, cpu, r->errors, r->complete ? "true" : "false", desc);
    fflush(stdout);
}

int bu_matrix(const struct bu_driver *d, void *cfg, struct bu_opts *o)
{
    uint64_t base_seed = o->wl.seed, runno = 0;
    int ncfg = o->nmodes * o->nconns, bad = 0;
    struct bu_result *res = calloc((size_t)(ncfg * o->reps), sizeof *res);
    if (!res)
        return 1;
    char desc[160], err[BU_ERR];
    wl_params_describe(&o->wl, desc, sizeof desc);
    if (!o->quiet)
        fprintf(stderr, "%s: workload %s%s; cap %" PRIu64 " events / %.0f s per run\n", d->name,
                desc, "", o->max_events, o->max_seconds);
    for (int rep = 0; rep < o->reps; rep++)
        for (int m = 0; m < o->nmodes; m++)
            for (int c = 0; c < o->nconns; c++) {
                struct bu_result *r = &res[(m * o->nconns + c) * o->reps + rep];
                if (o->vary_seed)
                    o->wl.seed = base_seed + runno++;
                if (d->reset && d->reset(cfg, &o->wl, err) != 0) {
                    fprintf(stderr, "%s: reset failed: %s\n", d->name, err);
                    free(res);
                    return 1;
                }
                bu_run(d, cfg, o, o->conns[c], (enum bu_mode)o->modes[m], r);
                if (o->verify && d->verify && r->complete && !r->errors) {
                    if (d->verify(cfg, &o->wl, o->conns[c], err) != 0) {
                        fprintf(stderr, "%s: VERIFY FAILED (%s, %d conns): %s\n", d->name,
                                bu_mode_name((enum bu_mode)o->modes[m]), o->conns[c], err);
                        r->errors++;
                    } else if (!o->quiet) {
                        fprintf(stderr, "%s: verify ok\n", d->name);
                    }
                }
                if (r->errors) {
                    bad = 1;
                    fprintf(stderr, "%s: %" PRIu64 " errors; first: %s\n", d->name, r->errors,
                            r->first_error);
                }
                char note[BU_ERR] = "";
                if (d->note)
                    d->note(cfg, &o->wl, note, sizeof note);
                if (!o->quiet)
                    fprintf(stderr,
                            "  run %d/%d %-5s conns=%-3d %7" PRIu64 " events %7.2f s %9.0f ev/s "
                            "p50 %.3f p99 %.3f p99.9 %.3f ms%s%s%s\n",
                            rep + 1, o->reps, bu_mode_name((enum bu_mode)o->modes[m]), o->conns[c],
                            r->events, r->seconds, r->ev_per_s, r->p50, r->p99, r->p999,
                            r->complete ? "" : " (capped)", note[0] ? "; " : "", note);
            }
    o->wl.seed = base_seed;
    if (!o->json)
        bu_print_header();
    for (int m = 0; m < o->nmodes; m++)
        for (int c = 0; c < o->nconns; c++) {
            struct bu_result *rs = &res[(m * o->nconns + c) * o->reps], med;
            double v[6][100];
            int cpu_known = 1;
            memset(&med, 0, sizeof med);
            med.complete = 1;
            for (int k = 0; k < o->reps; k++) {
                v[0][k] = rs[k].ev_per_s;
                v[1][k] = rs[k].p50;
                v[2][k] = rs[k].p99;
                v[3][k] = rs[k].p999;
                v[4][k] = rs[k].seconds;
                v[5][k] = rs[k].cpu_us;
                cpu_known &= rs[k].cpu_us >= 0;
                med.errors += rs[k].errors;
                med.complete &= rs[k].complete;
                if (rs[k].events > med.events)
                    med.events = rs[k].events;
            }
            med.ev_per_s = bu_median(v[0], (size_t)o->reps);
            med.p50 = bu_median(v[1], (size_t)o->reps);
            med.p99 = bu_median(v[2], (size_t)o->reps);
            med.p999 = bu_median(v[3], (size_t)o->reps);
            med.seconds = bu_median(v[4], (size_t)o->reps);
            med.cpu_us = cpu_known ? bu_median(v[5], (size_t)o->reps) : -1;
            if (o->json)
                bu_print_json(d->name, (enum bu_mode)o->modes[m], o->conns[c], &med, o->reps,
                              &o->wl);
            else
                bu_print_row(d->name, (enum bu_mode)o->modes[m], o->conns[c], &med, o->reps);
        }
    free(res);
    return bad;
}

char *bu_mkdtemp(const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    char *path;
    if (!tmp || !*tmp)
        tmp = "/tmp";
    if (asprintf(&path, "%s/flowlog-%s.XXXXXX", tmp, tag) < 0)
        return NULL;
    if (!mkdtemp(path)) {
        free(path);
        return NULL;
    }
    return path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void bu_rmtree(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
