/* workload.h: the "migration-day" benchmark workload (shared/workload.md), generated
 * deterministically so that flowlog, PostgreSQL and Redis are fed the very same events.
 *
 * The workload is cut into *units*: one unit is one iteration of one run of one flow (the
 * iteration's events, with the flow's flow_registered folded into its first unit, the run's
 * run_started into the run's first unit and its run_status into the run's last). In batch mode a
 * unit is one atomic append; in step mode its events are sent one at a time. Flows are owned by
 * writers (connections): each writer owns a disjoint set of flows and yields their units in
 * order, flow after flow. Same parameters and seed: same events, byte for byte, in any process. */
#ifndef FL_BENCH_WORKLOAD_H
#define FL_BENCH_WORKLOAD_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* Parameters (defaults of workload.md in brackets). */
struct wl_params {
    int tenants;            /* T [4] */
    int flows;              /* F, flows per tenant [250] */
    int runs;               /* R, runs per flow [2] */
    int iters;              /* I, iterations per run [3] */
    int patches;            /* P, patched artifacts (and scans) per iteration [2] */
    int findings;           /* findings_json size in bytes [400] */
    uint64_t seed;          /* varies the ids [1] */
    char tenant_prefix[32]; /* tenant t is "<prefix>-<t>" ["bench"] */
};

/* Event types of the workload (a subset of the contract's). */
enum wl_type {
    WL_FLOW_REGISTERED,
    WL_RUN_STARTED,
    WL_ITERATION_STEP,
    WL_PATCH,
    WL_SCAN_VERDICT,
    WL_EXEC_RESULT,
    WL_HUMAN_REQUEST,
    WL_RUN_STATUS,
    WL_NTYPES
};

/* The contract's name of a type ("run_started"). */
const char *wl_type_name(enum wl_type t);

#define WL_MAX_FIELDS 10

/* One field of an event's data. Strings point into the event's arena (or static text). */
struct wl_field {
    const char *name;
    int is_int;
    const char *s;
    size_t len;
    int64_t i;
};

struct wl_event {
    enum wl_type type;
    int tenant;          /* 0..T-1 */
    int flow;            /* global flow index 0..T*F-1 (= tenant * F + n) */
    int run;             /* 0..R-1, or -1 for flow_registered */
    int iter;            /* 1..I, or 0 for flow_registered/run_started */
    char event_id[48];   /* "w<seed>-f<n>-e<k>": unique in the tenant */
    const char *flow_id; /* into the arena */
    const char *run_id;  /* into the arena; NULL for flow_registered */
    int nfields;
    struct wl_field f[WL_MAX_FIELDS];
    /* private */
    char *arena;
    size_t arena_cap, arena_used;
};

/* One unit. Events are also packed, each as the msgpack map {"type", "event_id", "data"} of
 * CONTRACT.md: event i is sb.data[off[i] .. off[i] + len[i]). */
#define WL_BATCH_MAX 64
struct wl_batch {
    size_t n;
    struct wl_event ev[WL_BATCH_MAX];
    msgpack_sbuffer sb;
    size_t off[WL_BATCH_MAX], len[WL_BATCH_MAX];
    /* The canonical data map alone of event i: sb.data[doff[i] .. doff[i] + dlen[i]). */
    size_t doff[WL_BATCH_MAX], dlen[WL_BATCH_MAX];
};

/* A writer's cursor over the units of the flows it owns. */
struct wl_writer {
    const struct wl_params *p;
    int nwriters, w;
    int flow; /* current global flow index, or T*F when done */
    int run, iter;
    uint64_t units, events; /* yielded so far */
};

void wl_params_default(struct wl_params *p);
/* Check parameters; returns 0 or -1 with a message in msg. */
int wl_params_check(const struct wl_params *p, char *msg, size_t msgcap);
/* Parse one "--name=value" style option (name without dashes): tenants, flows, runs, iters,
 * patches, findings, seed, tenant-prefix. Returns 1 if it was a workload option, 0 if not,
 * -1 if the value is bad. */
int wl_params_opt(struct wl_params *p, const char *name, const char *val);
/* Usage text for the workload options. */
const char *wl_params_usage(void);
/* One line describing the parameters ("T=4 F=250 R=2 I=3 P=2 findings=400 seed=1"). */
void wl_params_describe(const struct wl_params *p, char *out, size_t cap);

/* Events and units of the whole workload. */
uint64_t wl_total_events(const struct wl_params *p);
uint64_t wl_total_units(const struct wl_params *p);
/* Events in one run (23 at defaults; one more for every 10th run). */
int wl_run_events(const struct wl_params *p, int flow, int run);
/* True if the run is one of the "every 10th run" ones: BLOCKED scan, human_request, FAILED. */
int wl_run_blocked(const struct wl_params *p, int flow, int run);

/* The tenant name of tenant t into out. */
void wl_tenant_name(const struct wl_params *p, int t, char *out, size_t cap);
/* The flow_id (a UUID) of global flow g into out (>= 37 bytes). */
void wl_flow_id(const struct wl_params *p, int g, char *out, size_t cap);

/* Which writer of nwriters owns global flow g. With nwriters a multiple of T each writer's flows
 * belong to one tenant (writer w serves tenant w % T); otherwise flows go round-robin. */
int wl_owner(const struct wl_params *p, int nwriters, int g);
/* The number of flows writer w owns. */
int wl_writer_flows(const struct wl_params *p, int nwriters, int w);

/* Start writer w of nwriters at its first unit. */
void wl_writer_init(struct wl_writer *it, const struct wl_params *p, int nwriters, int w);
/* Fill b with the writer's next unit; returns 1, or 0 when the writer is done. */
int wl_writer_next(struct wl_writer *it, struct wl_batch *b);

/* Generate the events of one unit (flow g, run r, iteration k) into b; used by
 * wl_writer_next and by tools that need a unit directly. */
void wl_unit(const struct wl_params *p, int g, int r, int k, struct wl_batch *b);

void wl_batch_init(struct wl_batch *b);
void wl_batch_free(struct wl_batch *b);

/* Find a data field by name, or NULL. */
const struct wl_field *wl_event_field(const struct wl_event *e, const char *name);

/* Append e as one JSON line in the CLI's format ({"type", "event_id", "data"}) to out;
 * returns the number of bytes written, or the number needed if cap is too small. */
size_t wl_event_json(const struct wl_event *e, char *out, size_t cap);

#endif
