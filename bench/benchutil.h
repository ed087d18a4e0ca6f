/* benchutil.h: what every load generator of bench/ shares: clocks, latency percentiles, and the
 * harness that drives the writer connections through the workload in step or batch mode,
 * bounded in events and time, then prints one table (or JSON lines).
 *
 * The harness is one thread and one event loop (epoll) over every writer connection: each
 * connection has one append in flight; when its acknowledgement has been read the next is sent.
 * A thread per connection, as before, cost the load generator a thread wake-up and a context
 * switch per append on the same two cores the servers run on (bench/RESULTS.md, set J).
 * A peer plugs in as a struct bu_driver: connect, send an append, say which descriptor carries
 * its reply and take that reply, close, and reset (drop all state between runs so every run
 * starts from an empty store). */
#ifndef FL_BENCH_UTIL_H
#define FL_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "workload.h"

/* Monotonic clock in nanoseconds. */
uint64_t bu_now_ns(void);

/* A growable set of latency samples (nanoseconds). */
struct bu_lat {
    uint64_t *v;
    size_t n, cap;
};
void bu_lat_add(struct bu_lat *l, uint64_t ns);
void bu_lat_merge(struct bu_lat *dst, const struct bu_lat *src);
/* The pct-th percentile (0..100) in milliseconds; sorts the samples; 0 when empty. */
double bu_lat_pct_ms(struct bu_lat *l, double pct);
void bu_lat_free(struct bu_lat *l);
/* Median of n doubles (reorders v). */
double bu_median(double *v, size_t n);

enum bu_mode { BU_STEP, BU_BATCH };
const char *bu_mode_name(enum bu_mode m);

#define BU_ERR 256

struct bu_driver {
    const char *name;
    /* Open writer w's connection (of nwriters). Returns a handle, or NULL with err set. */
    void *(*connect)(void *cfg, int w, int nwriters, char *err);
    /* Send b->ev[from..to) as one atomic, durable append, without waiting for its
     * acknowledgement (a blocking write is fine: a unit fits in the socket's buffer). Returns
     * 0, or -1 with err set (the harness counts a failed append and carries on). */
    int (*send)(void *conn, const struct wl_batch *b, size_t from, size_t to, char *err);
    /* The descriptor on which the reply to the append just sent arrives (>= 0). */
    int (*fd)(void *conn);
    /* That descriptor is readable: read what has come without blocking. Returns 1 when the
     * acknowledgement of b->ev[from..to) is complete and good, 0 when it is not complete yet,
     * -1 with err set when the append failed (refused, or the connection broke). */
    int (*recv)(void *conn, const struct wl_batch *b, size_t from, size_t to, char *err);
    void (*close)(void *conn);
    /* Drop all state so the next run starts empty (may be NULL). Returns 0 or -1 with err. */
    int (*reset)(void *cfg, const struct wl_params *p, char *err);
    /* Check the state after a run (may be NULL): returns 0 or -1 with err. */
    int (*verify)(void *cfg, const struct wl_params *p, int nwriters, char *err);
    /* A note on the run just finished for the per-run line, e.g. the server's group-commit
     * counters (may be NULL). */
    void (*note)(void *cfg, const struct wl_params *p, char *out, size_t cap);
    /* The server's CPU time so far (user + system seconds, all its threads), or < 0 where the
     * driver cannot tell (may be NULL): a run's server CPU per event is the difference. */
    double (*server_cpu)(void *cfg);
};

struct bu_opts {
    struct wl_params wl;
    int conns[8];
    int nconns;
    int modes[2];
    int nmodes;
    int reps;            /* runs per configuration; medians are reported [3] */
    uint64_t max_events; /* stop a run after about this many events (0: whole workload) */
    double max_seconds;  /* stop a run after this long [120] */
    int json;            /* print JSON lines instead of the table */
    int verify;          /* run the driver's verify after each run */
    int quiet;
    int vary_seed; /* each run uses seed + run number (a server that cannot be reset) */
};

/* The result of one run (or the medians over reps). Latencies in milliseconds. */
struct bu_result {
    uint64_t events, appends, errors;
    double seconds, ev_per_s;
    double p50, p99, p999;
    double cpu_us; /* server CPU per event in microseconds; < 0: unknown */
    int complete; /* 1: the whole workload was sent (no cap hit) */
    char first_error[BU_ERR];
};

void bu_opts_default(struct bu_opts *o);
/* Parse the shared options (--conns=1,16,64 --modes=step,batch --reps --max-events
 * --max-seconds --json --verify --quiet and the workload's). Unknown options go to extra(name,
 * value, ctx) which returns 1 if it took it, 0 if unknown, -1 if the value is bad. Returns 0, or
 * exits with usage on error. `usage` is the program's own usage text. */
void bu_parse_args(struct bu_opts *o, int argc, char **argv, const char *usage,
                   int (*extra)(const char *name, const char *val, void *ctx), void *ctx);

/* One run: nconns writer connections, one mode. Returns 0 (errors are counted in r). */
int bu_run(const struct bu_driver *d, void *cfg, const struct bu_opts *o, int nconns,
           enum bu_mode mode, struct bu_result *r);

/* Every configuration of o, reps times each (reps interleaved so drift hits all configs alike),
 * reset before each run; prints per-run lines on stderr unless quiet and one median row per
 * configuration on stdout. Returns 0, or 1 if any run had errors. */
int bu_matrix(const struct bu_driver *d, void *cfg, struct bu_opts *o);

/* Print the result header / row (text table) or one JSON line. */
void bu_print_header(void);
void bu_print_row(const char *system, enum bu_mode mode, int conns, const struct bu_result *r,
                  int reps);
void bu_print_json(const char *system, enum bu_mode mode, int conns, const struct bu_result *r,
                   int reps, const struct wl_params *p);

/* CPU seconds (user + system) that process pid has used so far, from /proc; < 0 if unknown. */
double bu_proc_cpu_seconds(int pid);

/* Make a private temp directory under $TMPDIR (or /tmp); returns a malloc'd path or NULL. */
char *bu_mkdtemp(const char *tag);
/* rm -r path (best effort). */
void bu_rmtree(const char *path);

#endif
