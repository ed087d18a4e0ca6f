/* store-bench: the store alone, no server, no network (links libcore directly).
 *
 * 1. appends/s: the migration-day events, each parsed with fl_event_parse, committed durably
 *    (default sync: fdatasync + O_DSYNC meta write per commit) with G one-event appends per
 *    fl_store_commit call, for G in 1, 16, 64, 256. The events are interleaved round-robin over
 *    --writers flows-owning writers, as G step-mode clients would be gathered by the server's
 *    group commit. Each G gets a fresh store in a fresh temp directory.
 * 2. rebuild: fl_store_rebuild over the loaded store (events/s); then recovery: the store
 *    reopened as after an OS crash, which rebuilds LMDB from the journal (events/s).
 * 3. reads on one flow with about 1,000 events (R=10 runs of I=14 iterations, loaded after the
 *    main workload): state now, state as of a random seq of that flow, history, timeline of a
 *    run, p50/p99.
 * Every figure is the median over --reps runs (default 3). --json prints one JSON object.
 *
 * --pipeline commits in the store's two steps instead (store.h: fl_store_apply, then
 * fl_store_sync on a thread of its own), so that one group's flush overlaps the next group's
 * transaction; a group's latency then runs from its apply to the flush that made it durable,
 * and at most PIPE_DEPTH groups wait for a flush at once. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "benchutil.h"
#include "diag.h"
#include "err.h"
#include "event.h"
#include "hash.h"
#include "query.h"
#include "store.h"
#include "workload.h"

static const char usage[] =
    "usage: store-bench [--groups=1,16,64,256] [--reps=3] [--writers=256] [--max-events=N]\n"
    "                   [--reads=2000] [--dir=PARENT] [--nosync] [--pipeline] [--json]\n"
    "                   [workload options]\n"
    "  Appends into the store alone (fl_store_commit, durable by default), rebuild, and reads\n"
    "  of a flow with ~1,000 events. Medians of --reps runs.\n";

/* The whole workload, packed, unpacked into one zone and parsed, in commit order. */
struct stream {
    size_t n;
    char *buf; /* all packed events */
    size_t *off, *len;
    int *tenant;
    msgpack_zone zone;
    msgpack_object *obj;
    struct fl_event *ev;
    char (*tenants)[64];
    int ntenants;
};

struct opts {
    struct wl_params wl;
    int groups[8], ngroups;
    int reps, writers, json, nosync, reads, pipeline;
    uint64_t max_events;
    const char *dir;
};

/* Gather the events of p from `writers` writers, one event from each in turn (a writer whose
 * unit is exhausted fetches its next), so that consecutive events come from different flows. */
static int build_stream(struct stream *st, const struct wl_params *p, int writers,
                        uint64_t max_events)
{
    uint64_t total = wl_total_events(p);
    if (max_events && max_events < total)
        total = max_events;
    memset(st, 0, sizeof *st);
    struct wl_writer *it = calloc((size_t)writers, sizeof *it);
    struct wl_batch *b = calloc((size_t)writers, sizeof *b);
    size_t *pos = calloc((size_t)writers, sizeof *pos);
    int *done = calloc((size_t)writers, sizeof *done);
    size_t cap = 1 << 20, used = 0;
    st->buf = malloc(cap);
    st->off = calloc(total, sizeof *st->off);
    st->len = calloc(total, sizeof *st->len);
    st->tenant = calloc(total, sizeof *st->tenant);
    if (!it || !b || !pos || !done || !st->buf || !st->off || !st->len || !st->tenant)
        return -1;
    for (int w = 0; w < writers; w++) {
        wl_writer_init(&it[w], p, writers, w);
        wl_batch_init(&b[w]);
        done[w] = !wl_writer_next(&it[w], &b[w]);
    }
    int live = writers;
    while (st->n < total && live > 0) {
        for (int w = 0; w < writers && st->n < total; w++) {
            if (done[w])
                continue;
            if (pos[w] == b[w].n) {
                pos[w] = 0;
                if (!wl_writer_next(&it[w], &b[w])) {
                    done[w] = 1;
                    live--;
                    continue;
                }
            }
            size_t i = pos[w]++, l = b[w].len[i];
            while (used + l > cap) {
                cap *= 2;
                if (!(st->buf = realloc(st->buf, cap)))
                    return -1;
            }
            memcpy(st->buf + used, b[w].sb.data + b[w].off[i], l);
            st->off[st->n] = used;
            st->len[st->n] = l;
            st->tenant[st->n] = b[w].ev[i].tenant;
            used += l;
            st->n++;
        }
    }
    for (int w = 0; w < writers; w++)
        wl_batch_free(&b[w]);
    free(it);
    free(b);
    free(pos);
    free(done);
    st->ntenants = p->tenants;
    st->tenants = calloc((size_t)p->tenants, sizeof *st->tenants);
    for (int t = 0; t < p->tenants; t++)
        wl_tenant_name(p, t, st->tenants[t], sizeof st->tenants[t]);
    return 0;
}

/* Unpack every event into one zone and parse it as the server would. Returns seconds spent. */
static double parse_stream(struct stream *st)
{
    msgpack_zone_init(&st->zone, 1 << 20);
    st->obj = calloc(st->n, sizeof *st->obj);
    st->ev = calloc(st->n, sizeof *st->ev);
    if (!st->obj || !st->ev)
        return -1;
    struct fl_event_limits lim = {FL_DEFAULT_MAX_EVENT};
    uint64_t t0 = bu_now_ns();
    for (size_t i = 0; i < st->n; i++) {
        size_t off = 0;
        struct fl_error err;
        if (msgpack_unpack(st->buf + st->off[i], st->len[i], &off, &st->zone, &st->obj[i]) !=
            MSGPACK_UNPACK_SUCCESS) {
            fprintf(stderr, "store-bench: event %zu does not unpack\n", i);
            return -1;
        }
        fl_error_clear(&err);
        if (fl_event_parse(&st->obj[i], &lim, &st->ev[i], &err) != 0) {
            fprintf(stderr, "store-bench: event %zu rejected: %s\n", i, err.msg);
            return -1;
        }
    }
    return (double)(bu_now_ns() - t0) / 1e9;
}

static void free_stream(struct stream *st)
{
    for (size_t i = 0; st->ev && i < st->n; i++)
        fl_event_free(&st->ev[i]);
    free(st->ev);
    free(st->obj);
    if (st->obj)
        msgpack_zone_destroy(&st->zone);
    free(st->buf);
    free(st->off);
    free(st->len);
    free(st->tenant);
    free(st->tenants);
}

/* The flush side of --pipeline: groups applied and waiting (need: the durable head each waits
 * for; t0: when its apply began). */
#define PIPE_DEPTH 4
struct pipe {
    struct fl_store *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t need[PIPE_DEPTH], t0[PIPE_DEPTH];
    size_t head, n;
    int stop, failed;
    struct bu_lat *lat;
};

static void *pipe_flusher(void *arg)
{
    struct pipe *p = arg;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->n && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->n)
            break;
        pthread_mutex_unlock(&p->mu);
        struct fl_error err;
        uint64_t durable = 0;
        fl_error_clear(&err);
        int rc = fl_store_sync(p->s, &durable, &err);
        uint64_t now = bu_now_ns();
        pthread_mutex_lock(&p->mu);
        if (rc != 0) {
            fprintf(stderr, "store-bench: flush failed: %s\n", err.msg);
            p->failed = 1;
            p->n = 0;
        }
        while (p->n && p->need[p->head] <= durable) {
            if (p->lat)
                bu_lat_add(p->lat, now - p->t0[p->head]);
            p->head = (p->head + 1) % PIPE_DEPTH;
            p->n--;
        }
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Commit events [from, to) of st in groups of g one-event appends. Returns events committed;
 * counts rejected appends in *errors; commit latencies go to lat; first seq into *first_seq. */
static uint64_t load(struct fl_store *s, struct stream *st, size_t from, size_t to, int g,
                     int pipelined, struct bu_lat *lat, uint64_t *errors, uint64_t *first_seq)
{
    struct fl_append *apps = calloc((size_t)g, sizeof *apps);
    struct fl_append **ptrs = calloc((size_t)g, sizeof *ptrs);
    struct fl_ack *acks = calloc((size_t)g, sizeof *acks);
    struct pipe p = {.s = s, .lat = lat};
    pthread_t flusher;
    uint64_t ok = 0;
    if (!apps || !ptrs || !acks)
        exit(2);
    if (pipelined && (pthread_mutex_init(&p.mu, NULL) != 0 || pthread_cond_init(&p.cv, NULL) != 0 ||
                      pthread_create(&flusher, NULL, pipe_flusher, &p) != 0))
        exit(2);
    for (size_t i = from; i < to;) {
        size_t n = 0;
        for (; n < (size_t)g && i < to; n++, i++) {
            struct fl_append *a = &apps[n];
            const char *tn = st->tenants[st->tenant[i]];
            a->tenant.p = tn;
            a->tenant.len = strlen(tn);
            a->events = &st->ev[i];
            a->n = 1;
            a->acks = &acks[n];
            fl_error_clear(&a->err);
            ptrs[n] = a;
        }
        struct fl_error err;
        fl_error_clear(&err);
        uint64_t t0 = bu_now_ns(), need = 0;
        int rc;
        if (pipelined) {
            pthread_mutex_lock(&p.mu);
            while (p.n == PIPE_DEPTH)
                pthread_cond_wait(&p.cv, &p.mu);
            pthread_mutex_unlock(&p.mu);
            t0 = bu_now_ns();
            if ((rc = fl_store_apply(s, ptrs, n, &need, &err)) == 0) {
                pthread_mutex_lock(&p.mu);
                size_t at = (p.head + p.n) % PIPE_DEPTH;
                p.need[at] = need;
                p.t0[at] = t0;
                p.n++;
                pthread_cond_signal(&p.cv);
                pthread_mutex_unlock(&p.mu);
            }
        } else {
            rc = fl_store_commit(s, ptrs, n, &err);
            if (lat)
                bu_lat_add(lat, bu_now_ns() - t0);
        }
        if (rc != 0) {
            fprintf(stderr, "store-bench: commit failed: %s\n", err.msg);
            *errors += n;
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            if (apps[k].err.code) {
                if (!*errors)
                    fprintf(stderr, "store-bench: append rejected: %s: %s\n",
                            fl_err_name(apps[k].err.code), apps[k].err.msg);
                (*errors)++;
            } else {
                ok++;
                if (first_seq && !*first_seq)
                    *first_seq = acks[k].seq;
            }
        }
    }
    if (pipelined) { /* every group durable before the clock stops */
        pthread_mutex_lock(&p.mu);
        p.stop = 1;
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.mu);
        pthread_join(flusher, NULL);
        pthread_cond_destroy(&p.cv);
        pthread_mutex_destroy(&p.mu);
        if (p.failed)
            *errors += 1;
    }
    free(apps);
    free(ptrs);
    free(acks);
    return ok;
}

struct reads {
    double now_p50, now_p99, asof_p50, asof_p99, hist_p50, hist_p99, tl_p50, tl_p99;
    uint64_t flow_events;
};

/* Load the ~1,000-event flow, then time reads of it. */
/* Reopen the closed store in dir as after an OS crash; events recovered per second, or -1. */
static double recover_rate(const char *dir, const struct fl_store_opts *so)
{
    char path[4200];
    struct fl_store *s = NULL;
    struct fl_error err;
    FILE *f;

    snprintf(path, sizeof path, "%s/running", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fputs("store-bench-another-boot\n", f);
    fclose(f);
    fl_error_clear(&err);
    uint64_t t0 = bu_now_ns();
    if (fl_store_open(&s, so, &err) != 0) {
        fprintf(stderr, "store-bench: recovery: %s\n", err.msg);
        return -1;
    }
    double secs = (double)(bu_now_ns() - t0) / 1e9;
    double rate = (double)fl_store_head(s) / secs;
    fl_store_close(s);
    return rate;
}

static int bench_reads(struct fl_store *s, const struct opts *o, struct reads *out)
{
    struct wl_params bp;
    wl_params_default(&bp);
    bp.tenants = 1;
    bp.flows = 1;
    bp.runs = 10;
    bp.iters = 14;
    bp.patches = o->wl.patches;
    bp.findings = o->wl.findings;
    bp.seed = o->wl.seed;
    snprintf(bp.tenant_prefix, sizeof bp.tenant_prefix, "bigflow");
    struct stream st;
    if (build_stream(&st, &bp, 1, 0) != 0 || parse_stream(&st) < 0)
        return -1;
    uint64_t errors = 0, first = 0;
    uint64_t n = load(s, &st, 0, st.n, 64, 0, NULL, &errors, &first);
    uint64_t last = fl_store_head(s);
    out->flow_events = n;
    char flow_id[40], run_id[96];
    wl_flow_id(&bp, 0, flow_id, sizeof flow_id);
    snprintf(run_id, sizeof run_id, "%s_run_%d", flow_id, 5);
    struct fl_str tenant = {st.tenants[0], strlen(st.tenants[0])};
    struct fl_str fid = {flow_id, strlen(flow_id)};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    struct bu_lat lnow = {0}, lasof = {0}, lhist = {0}, ltl = {0};
    struct fl_error err;
    uint64_t rng = 0x12345678;
    int rc = 0;
    for (int q = 0; q < o->reads && rc == 0; q++) {
        uint64_t t0, t1;
        msgpack_sbuffer_clear(&sb);
        t0 = bu_now_ns();
        rc = fl_query_state(s, tenant, fid, 0, 0, 0, &pk, &err);
        t1 = bu_now_ns();
        bu_lat_add(&lnow, t1 - t0);
        if (rc)
            break;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t at = first + (rng >> 33) % (last - first + 1);
        msgpack_sbuffer_clear(&sb);
        t0 = bu_now_ns();
        rc = fl_query_state(s, tenant, fid, at, 0, 0, &pk, &err);
        t1 = bu_now_ns();
        bu_lat_add(&lasof, t1 - t0);
        if (rc)
            break;
        msgpack_sbuffer_clear(&sb);
        t0 = bu_now_ns();
        rc = fl_query_history(s, tenant, fid, 20, &pk, &err);
        t1 = bu_now_ns();
        bu_lat_add(&lhist, t1 - t0);
        if (rc)
            break;
        struct fl_log_filter f = {0};
        f.type = -1;
        f.run_id.p = run_id;
        f.run_id.len = strlen(run_id);
        msgpack_sbuffer_clear(&sb);
        t0 = bu_now_ns();
        rc = fl_query_log(s, tenant, &f, &pk, NULL, &err);
        t1 = bu_now_ns();
        bu_lat_add(&ltl, t1 - t0);
    }
    if (rc)
        fprintf(stderr, "store-bench: read failed: %s: %s\n", fl_err_name(rc), err.msg);
    out->now_p50 = bu_lat_pct_ms(&lnow, 50);
    out->now_p99 = bu_lat_pct_ms(&lnow, 99);
    out->asof_p50 = bu_lat_pct_ms(&lasof, 50);
    out->asof_p99 = bu_lat_pct_ms(&lasof, 99);
    out->hist_p50 = bu_lat_pct_ms(&lhist, 50);
    out->hist_p99 = bu_lat_pct_ms(&lhist, 99);
    out->tl_p50 = bu_lat_pct_ms(&ltl, 50);
    out->tl_p99 = bu_lat_pct_ms(&ltl, 99);
    bu_lat_free(&lnow);
    bu_lat_free(&lasof);
    bu_lat_free(&lhist);
    bu_lat_free(&ltl);
    msgpack_sbuffer_destroy(&sb);
    free_stream(&st);
    return rc || errors ? -1 : 0;
}

/* Bytes this process has passed to write(2)-like calls so far (/proc/self/io wchar): what each
 * commit writes, i.e. the write amplification. 0 if unavailable. */
static uint64_t io_wchar(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    uint64_t v = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "wchar: %" SCNu64, &v) == 1)
            break;
    fclose(f);
    return v;
}

/* du -s of dir in bytes (the LMDB data file's allocated size). */
static uint64_t dir_bytes(const char *dir)
{
    char path[4096];
    struct stat sbuf;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &sbuf) != 0)
        return 0;
    return (uint64_t)sbuf.st_blocks * 512;
}

static int extra_opt(const char *name, const char *val, void *ctx)
{
    struct opts *o = ctx;
    if (strcmp(name, "groups") == 0) {
        char buf[128];
        o->ngroups = 0;
        snprintf(buf, sizeof buf, "%s", val);
        for (char *s = strtok(buf, ","); s; s = strtok(NULL, ",")) {
            int g = atoi(s);
            if (g < 1 || g > 100000 || o->ngroups == 8)
                return -1;
            o->groups[o->ngroups++] = g;
        }
        return o->ngroups ? 1 : -1;
    }
    if (strcmp(name, "writers") == 0)
        return (o->writers = atoi(val)) >= 1 ? 1 : -1;
    if (strcmp(name, "reads") == 0)
        return (o->reads = atoi(val)) >= 1 ? 1 : -1;
    if (strcmp(name, "dir") == 0)
        return (o->dir = val)[0] ? 1 : -1;
    if (strcmp(name, "nosync") == 0)
        return o->nosync = 1;
    if (strcmp(name, "pipeline") == 0)
        return o->pipeline = 1;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    struct bu_opts bo;
    memset(&o, 0, sizeof o);
    o.groups[0] = 1;
    o.groups[1] = 16;
    o.groups[2] = 64;
    o.groups[3] = 256;
    o.ngroups = 4;
    o.writers = 256;
    o.reads = 2000;
    bu_opts_default(&bo);
    bu_parse_args(&bo, argc, argv, usage, extra_opt, &o);
    o.wl = bo.wl;
    o.reps = bo.reps;
    o.json = bo.json;
    o.max_events = bo.max_events;
    if (o.dir)
        setenv("TMPDIR", o.dir, 1);
    fl_diag_set_level(FL_DIAG_WARN);
    if (fl_hash_init() != 0) {
        fprintf(stderr, "store-bench: crypto init failed\n");
        return 2;
    }

    struct stream st;
    char desc[160];
    wl_params_describe(&o.wl, desc, sizeof desc);
    if (build_stream(&st, &o.wl, o.writers, o.max_events) != 0) {
        fprintf(stderr, "store-bench: out of memory\n");
        return 2;
    }
    double parse_s = parse_stream(&st);
    if (parse_s < 0)
        return 1;
    if (!bo.quiet)
        fprintf(stderr,
                "store-bench: workload %s; %zu events (%d writers interleaved); parse "
                "%.0f events/s; sync %s\n",
                desc, st.n, o.writers, (double)st.n / parse_s, o.nosync ? "NONE" : "full");

    int ng = o.ngroups, reps = o.reps, failed = 0;
    double(*rate)[100] = calloc((size_t)ng, sizeof *rate);
    double(*c50)[100] = calloc((size_t)ng, sizeof *c50);
    double(*c99)[100] = calloc((size_t)ng, sizeof *c99);
    double(*mb)[100] = calloc((size_t)ng, sizeof *mb);
    double(*wpe)[100] = calloc((size_t)ng, sizeof *wpe);
    double rebuild[100], recovery[100] = {0}, rd[8][100];
    if (!rate || !c50 || !c99 || !mb || !wpe)
        return 2;
    for (int rep = 0; rep < reps; rep++) {
        for (int gi = 0; gi < ng; gi++) {
            char *dir = bu_mkdtemp("store-bench");
            struct fl_store *s = NULL;
            struct fl_store_opts so;
            struct fl_error err;
            memset(&so, 0, sizeof so);
            so.dir = dir;
            so.nosync = o.nosync;
            so.lim.max_event = FL_DEFAULT_MAX_EVENT;
            fl_error_clear(&err);
            if (!dir || fl_store_open(&s, &so, &err) != 0) {
                fprintf(stderr, "store-bench: open: %s\n", err.msg);
                return 1;
            }
            struct bu_lat lat = {0};
            uint64_t errors = 0;
            uint64_t w0 = io_wchar(), t0 = bu_now_ns();
            uint64_t n = load(s, &st, 0, st.n, o.groups[gi], o.pipeline, &lat, &errors, NULL);
            double secs = (double)(bu_now_ns() - t0) / 1e9;
            wpe[gi][rep] = n ? (double)(io_wchar() - w0) / (double)n : 0;
            rate[gi][rep] = (double)n / secs;
            c50[gi][rep] = bu_lat_pct_ms(&lat, 50);
            c99[gi][rep] = bu_lat_pct_ms(&lat, 99);
            mb[gi][rep] = (double)dir_bytes(dir) / (1024.0 * 1024.0);
            bu_lat_free(&lat);
            if (errors)
                failed = 1;
            if (!bo.quiet)
                fprintf(stderr,
                        "  run %d/%d group %-4d %7" PRIu64 " events %6.2f s %9.0f ev/s commit "
                        "p50 %.3f p99 %.3f ms, %.1f MiB, %.0f B written/event%s\n",
                        rep + 1, reps, o.groups[gi], n, secs, rate[gi][rep], c50[gi][rep],
                        c99[gi][rep], mb[gi][rep], wpe[gi][rep], errors ? " ERRORS" : "");
            if (gi == ng - 1) {
                /* the loaded store: rebuild it, then the reads */
                uint64_t ev = 0;
                fl_error_clear(&err);
                t0 = bu_now_ns();
                if (fl_store_rebuild(s, &ev, &err) != 0) {
                    fprintf(stderr, "store-bench: rebuild: %s\n", err.msg);
                    failed = 1;
                }
                secs = (double)(bu_now_ns() - t0) / 1e9;
                rebuild[rep] = (double)ev / secs;
                struct reads r;
                memset(&r, 0, sizeof r);
                if (bench_reads(s, &o, &r) != 0)
                    failed = 1;
                rd[0][rep] = r.now_p50;
                rd[1][rep] = r.now_p99;
                rd[2][rep] = r.asof_p50;
                rd[3][rep] = r.asof_p99;
                rd[4][rep] = r.hist_p50;
                rd[5][rep] = r.hist_p99;
                rd[6][rep] = r.tl_p50;
                rd[7][rep] = r.tl_p99;
                if (!bo.quiet)
                    fprintf(stderr,
                            "  run %d/%d rebuild %" PRIu64
                            " events %.2f s %.0f ev/s; flow of %" PRIu64
                            " events: state p50 %.3f ms, as-of p50 %.3f p99 %.3f ms\n",
                            rep + 1, reps, ev, secs, rebuild[rep], r.flow_events, r.now_p50,
                            r.asof_p50, r.asof_p99);
            }
            fl_store_close(s);
            if (gi == ng - 1 && !o.nosync) {
                /* Recovery after an OS crash: the LMDB file set aside, everything rebuilt
                 * from the journal at open (store.c "Durability"), played by giving the
                 * store's running mark another boot's id. */
                double rs = recover_rate(dir, &so);
                if (rs < 0)
                    failed = 1;
                recovery[rep] = rs;
                if (!bo.quiet)
                    fprintf(stderr, "  run %d/%d recovery from the journal %.0f ev/s\n",
                            rep + 1, reps, rs);
            }
            bu_rmtree(dir);
            free(dir);
        }
    }
    const char *names[8] = {"state_now_p50_ms",    "state_now_p99_ms",   "state_asof_p50_ms",
                            "state_asof_p99_ms",   "history_p50_ms",     "history_p99_ms",
                            "timeline_run_p50_ms", "timeline_run_p99_ms"};
    double med[8];
    for (int k = 0; k < 8; k++)
        med[k] = bu_median(rd[k], (size_t)reps);
    double rb = bu_median(rebuild, (size_t)reps);
    double rec = bu_median(recovery, (size_t)reps);
    if (o.json) {
        printf("{\"system\":\"flowlog-store\",\"workload\":\"%s\",\"events\":%zu,\"reps\":%d,"
               "\"sync\":\"%s\",\"pipeline\":%s,\"appends\":[",
               desc, st.n, reps, o.nosync ? "none" : "full", o.pipeline ? "true" : "false");
        for (int gi = 0; gi < ng; gi++)
            printf("%s{\"group\":%d,\"events_per_s\":%.1f,\"commit_p50_ms\":%.4f,"
                   "\"commit_p99_ms\":%.4f,\"data_mib\":%.1f,\"written_bytes_per_event\":%.0f}",
                   gi ? "," : "", o.groups[gi], bu_median(rate[gi], (size_t)reps),
                   bu_median(c50[gi], (size_t)reps), bu_median(c99[gi], (size_t)reps),
                   bu_median(mb[gi], (size_t)reps), bu_median(wpe[gi], (size_t)reps));
        printf("],\"rebuild_events_per_s\":%.1f,\"recovery_events_per_s\":%.1f", rb, rec);
        for (int k = 0; k < 8; k++)
            printf(",\"%s\":%.4f", names[k], med[k]);
        printf(",\"parse_events_per_s\":%.1f}\n", (double)st.n / parse_s);
    } else {
        printf("flowlog store alone: %s, %zu events, sync %s%s, medians of %d runs\n", desc, st.n,
               o.nosync ? "NONE (not durable)" : "full",
               o.pipeline ? ", pipelined (fl_store_apply + fl_store_sync)" : "", reps);
        printf("%-14s %12s %14s %14s %10s %14s\n", "group commit", "events/s", "commit p50 ms",
               "commit p99 ms", "data MiB", "written B/ev");
        for (int gi = 0; gi < ng; gi++)
            printf("%-14d %12.0f %14.3f %14.3f %10.1f %14.0f\n", o.groups[gi],
                   bu_median(rate[gi], (size_t)reps), bu_median(c50[gi], (size_t)reps),
                   bu_median(c99[gi], (size_t)reps), bu_median(mb[gi], (size_t)reps),
                   bu_median(wpe[gi], (size_t)reps));
        printf("rebuild: %.0f events/s\n", rb);
        if (!o.nosync)
            printf("recovery from the journal after an OS crash: %.0f events/s\n", rec);
        printf("reads of one flow with ~1,000 events (p50 / p99 ms):\n");
        printf("  state now          %8.3f / %8.3f\n", med[0], med[1]);
        printf("  state as of seq    %8.3f / %8.3f\n", med[2], med[3]);
        printf("  history            %8.3f / %8.3f\n", med[4], med[5]);
        printf("  timeline of a run  %8.3f / %8.3f\n", med[6], med[7]);
        printf("parse (fl_event_parse): %.0f events/s\n", (double)st.n / parse_s);
    }
    free(rate);
    free(c50);
    free(c99);
    free(mb);
    free(wpe);
    free_stream(&st);
    return failed;
}
